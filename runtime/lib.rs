//! fdpp-runtime: model files -> static graph -> lowering (every decision, typed, for one
//! backend's capabilities) -> backend (executes lowered steps) -> engine (sessions, the
//! pipelined decode driver). Data flows one way; nothing here knows about the CLI or the
//! viewer, which read the typed records of `trace`.

pub mod backend;
pub mod cache;
pub mod calibrate;
pub mod check;
pub mod compare;
pub mod dataflow;
pub mod engine;
pub mod error;
/// Fuzz targets over every model-file reader (run by `fuzz/run.sh`, replayed by `tests/fuzz_corpus.rs`).
pub mod fuzz_targets;
pub mod graph;
pub mod lower;
pub mod model;
pub mod sampling;
pub mod tensor;
pub mod testing;
pub mod trace;
pub mod tune;

pub use error::{Error, Result};
