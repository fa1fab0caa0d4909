//! fdpp-runtime: model files -> static graph -> per-node dataflow plan -> backend -> engine.
//! Data flows one way; nothing here knows about the CLI or the viewer, which both read
//! the engine's trace type.

pub mod backend;
pub mod dataflow;
pub mod engine;
pub mod error;
pub mod graph;
pub mod model;
pub mod tensor;

pub use error::{Error, Result};
