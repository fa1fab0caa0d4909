//! What `fdpp check` found, as typed records (`--json` writes a [`CheckReport`]; the viewer's
//! compare view reads it): per step and comparison point the errors and the variants each
//! backend ran, the first point beyond tolerance, per-layer and per-op summaries, the
//! logits' top-k and the greedy ids.

use serde::{Deserialize, Serialize};

use super::metrics::{LogitsComparison, Metrics};
use super::tolerance::{Precision, Tolerance, ToleranceProfile};
use crate::lower::caps::BackendCaps;
use crate::lower::kernel::Variant;
use crate::trace::{Phase, StepShape};

/// A launch of one backend within a comparison point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ran {
    pub node: String,
    pub variant: Variant,
    /// Nodes fused into this launch.
    pub absorbs: Vec<String>,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.variant)?;
        if !self.absorbs.is_empty() {
            write!(f, " + {}", self.absorbs.join(" + "))?;
        }
        Ok(())
    }
}

/// One tensor both backends completed in a step, compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointReport {
    /// The node it is named after: the first it covers that runs a launch on both backends.
    pub node: String,
    /// The layer of that node (`None`: embedding or head).
    pub layer: Option<usize>,
    /// Every node it covers, in order (the nodes since the previous point).
    pub covers: Vec<String>,
    /// The compared tensor (the output of the last node covered).
    pub tensor: String,
    /// What the tensor is (an op's kind name, or `logits`): it picks the tolerance.
    pub kind: String,
    /// The launches each backend ran for the covered nodes.
    pub reference: Vec<Ran>,
    pub checked: Vec<Ran>,
    pub metrics: Metrics,
    pub tolerance: Tolerance,
    pub within: bool,
}

impl PointReport {
    /// The launch of `node` on one side (`None` where it is fused there).
    pub fn launch_of<'a>(ran: &'a [Ran], node: &str) -> Option<&'a Ran> {
        ran.iter().find(|r| r.node == node)
    }
}

/// One step run on both backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepComparison {
    pub phase: Phase,
    pub shape: StepShape,
    /// The token ids fed to both (the prompt, then the reference's greedy ids).
    pub tokens: Vec<u32>,
    pub points: Vec<PointReport>,
    pub logits: LogitsComparison,
}

/// The first comparison point beyond tolerance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// Index into `Comparison::steps`, and into that step's points.
    pub step: usize,
    pub point: usize,
    pub node: String,
    /// The launch of `node` on each backend.
    pub reference: Option<Ran>,
    pub checked: Option<Ran>,
}

/// The worst errors of one group of points (a layer, the embedding, the head).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// `embed`, `layers.N` or `head`.
    pub group: String,
    /// Points over all steps.
    pub points: usize,
    /// Largest relative error and cosine distance among points with finite values.
    pub max_rel: f64,
    pub max_cos_distance: f64,
    /// Points with NaN or infinities (on either side).
    pub non_finite: usize,
    /// Points beyond tolerance.
    pub beyond: usize,
}

/// The worst errors per kind of compared tensor, beside its tolerance: what
/// ARCHITECTURE.md's tolerance table is measured from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KindSummary {
    pub kind: String,
    pub points: usize,
    pub max_rel: f64,
    pub max_cos_distance: f64,
    pub tolerance: Tolerance,
}

/// One backend's run against the reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Indices into `CheckReport::backends`.
    pub reference: usize,
    pub checked: usize,
    pub precision: Precision,
    pub steps: Vec<StepComparison>,
    /// The greedy id each backend picks after each step (the reference's are fed on).
    pub reference_ids: Vec<u32>,
    pub checked_ids: Vec<u32>,
    pub first_divergence: Option<Divergence>,
    /// The first step whose logits' top-k differ beyond a near-tie.
    pub first_logits_failure: Option<usize>,
    pub groups: Vec<GroupSummary>,
    pub kinds: Vec<KindSummary>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.first_divergence.is_none() && self.first_logits_failure.is_none()
    }

    /// The first step whose greedy ids differ (excused where the logits are a near-tie).
    pub fn first_id_mismatch(&self) -> Option<usize> {
        self.reference_ids.iter().zip(&self.checked_ids).position(|(a, b)| a != b)
    }

    pub fn divergent_point(&self) -> Option<&PointReport> {
        self.first_divergence.as_ref().map(|d| &self.steps[d.step].points[d.point])
    }
}

/// A backend of the check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `cpu`, `wgpu`, `cuda`.
    pub kind: String,
    /// The device as the backend describes it.
    pub device: String,
    pub caps: BackendCaps,
}

/// What `fdpp check` writes with `--json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub model: String,
    pub prompt: Vec<u32>,
    pub decode_steps: usize,
    pub profile: ToleranceProfile,
    /// Whether the backends ran their fused lowering (off: every node its own launch).
    pub fused: bool,
    /// The perturbation applied on the second backend (testing the check), as given.
    pub injected: Option<String>,
    /// The first is the reference.
    pub backends: Vec<BackendInfo>,
    /// One per backend after the first.
    pub comparisons: Vec<Comparison>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(Comparison::passed)
    }
}
