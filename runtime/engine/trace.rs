//! The run trace: which implementation each node ran, why, and how long it took. The CLI
//! prints it and the viewer draws it; both read this type (serialised as JSON).

use serde::{Deserialize, Serialize};

use crate::backend::NodeRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Prefill,
    Decode,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepTrace {
    pub phase: Phase,
    /// Tokens in the step.
    pub m: usize,
    pub wall_micros: f64,
    pub nodes: Vec<NodeRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trace {
    pub model: String,
    pub backend: String,
    /// The last prefill step and the first decode step after it.
    pub steps: Vec<StepTrace>,
}
