//! Lowering any step on the spot: the viewer's M and context controls re-run the same
//! lowering the engine runs (`Lowering::lower`), so what it shows is what a backend with
//! these capabilities would execute.

use fdpp_runtime::graph;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::lower::{Lowering, LoweringOptions};
use fdpp_runtime::model::ModelConfig;
use fdpp_runtime::trace::StepShape;

use crate::document::{ShownStep, describe_shape};

/// Which kind of step the controls describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// M sequences, one new token each.
    Decode,
    /// M tokens of one sequence.
    Prefill,
}

impl StepKind {
    /// The step of `m` tokens with `ctx` keys cached before it.
    pub fn shape(self, m: usize, ctx: usize) -> StepShape {
        let m = m.max(1);
        match self {
            StepKind::Decode => StepShape { m, out: m, sequences: m, max_keys: ctx.max(1) },
            StepKind::Prefill => StepShape { m, out: 1, sequences: 1, max_keys: ctx + m },
        }
    }
}

pub struct LivePlan {
    pub lowering: Lowering,
}

impl LivePlan {
    pub fn new(config: ModelConfig, caps: BackendCaps) -> fdpp_runtime::error::Result<LivePlan> {
        Ok(LivePlan { lowering: Lowering::new(graph::llama::build(&config), caps, &LoweringOptions::default())? })
    }

    pub fn caps(&self) -> &BackendCaps {
        &self.lowering.caps
    }

    pub fn step(&self, kind: StepKind, m: usize, ctx: usize) -> ShownStep {
        let shape = kind.shape(m, ctx);
        let step = self.lowering.lower(&shape);
        let title = format!("{} ({} launches, lowered here)", describe_shape(&shape), step.launches.len());
        ShownStep::planned(title, shape, self.lowering.records(&step, None))
    }

    /// The longest context the model allows.
    pub fn max_context(&self) -> usize {
        self.lowering.graph.config.max_context
    }
}
