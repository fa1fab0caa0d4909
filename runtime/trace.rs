//! Typed plan and trace records: what each node of a step ran (kernel variant and its
//! parameters, or the launch that absorbed it), why, and how long it took. The lowering
//! writes them, the engine adds device times, the CLI prints them and `fdpp inspect --json`
//! / `generate --trace` save them; the viewer and `fdpp check` read these files. Nothing
//! here depends on a GPU API.

use serde::{Deserialize, Serialize};

use crate::dataflow::{Inflections, TableSource, TilingRange};
use crate::lower::caps::{BackendCaps, SplitKvLimits};
use crate::lower::fusion::{Fusion, Stage, When};
use crate::lower::kernel::{Params, PhiSource, Variant};
use crate::lower::memory::MemoryPlan;
use crate::model::ModelConfig;
use crate::tensor::DType;

/// Why a node runs the way it does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule")]
pub enum Reason {
    /// The backend has one kernel for this op.
    OnlyKernel,
    /// A linear layer's dataflow, from the table: A if M < M1, B if M1 <= M < M2, else C.
    Dataflow {
        n: usize,
        k: usize,
        m: usize,
        inflections: Inflections,
        /// The table lists this [N, K]; else its fallback applied.
        per_shape: bool,
        source: TableSource,
        /// The table gave A, but M is above the GEMV's rows: B runs.
        gemv_max_m: Option<usize>,
        /// The table gave C, but the backend runs its GEMM from this many rows on: B runs.
        #[serde(default)]
        gemm_min_m: Option<usize>,
        /// The GEMV splits K over two lane groups, as it does from this K on.
        split_k_from: Option<usize>,
        /// The implementation's own parameters (B's tiling, A's split-K) are the table's for
        /// this shape, not the backend's defaults.
        #[serde(default)]
        tuned_params: bool,
        /// B runs, and the table's entry names more than one tiling for this shape over M:
        /// the range of M the variant's tiling covers (files written before read as none).
        #[serde(default)]
        flat_range: Option<TilingRange>,
        /// B runs with the backend's default tiling for long K on few columns
        /// (`LinearKernels::flat_long_k`).
        #[serde(default)]
        long_k: bool,
        /// B's default tiling for many columns over a short K (`LinearKernels::flat_wide`).
        #[serde(default)]
        wide: bool,
        /// A gives each warp its own columns, as it does up to this K
        /// (`LinearKernels::gemv_per_warp_max_k`).
        #[serde(default)]
        per_warp_max_k: Option<usize>,
        /// B runs on the device's matrix units, tokens padded to their tile, as it does up to
        /// this K (`LinearKernels::flat_matrix`).
        #[serde(default)]
        matrix: Option<usize>,
    },
    /// A decode step (every token of its own sequence): split-KV with a unified max, this
    /// layer's `phi`, from `source` (files written before phi was recorded read as the default).
    SplitKv {
        sequences: usize,
        keys: usize,
        limits: SplitKvLimits,
        #[serde(default)]
        phi: f32,
        #[serde(default)]
        source: PhiSource,
        /// One chunk per (token, head), added up in its block (`SplitKvLimits::single`).
        #[serde(default)]
        single: bool,
        /// Those blocks narrow, two to an SM (`SplitKvLimits::single_narrow`).
        #[serde(default)]
        narrow: bool,
    },
    /// A decode step, but this layer's scores spread wider than any unified-max window covers
    /// (as calibrated): it runs the synchronised softmax, never the unified max.
    Synchronised { layer: usize, source: PhiSource },
    /// Tokens of one sequence attend to each other in this step (prefill).
    NotDecode { tokens: usize, sequences: usize },
    /// Prefill, and the backend's tensor-core attention is not compiled for this head size.
    FlashHeadDim { head_dim: usize, supported: Vec<usize> },
    /// Prefill of several sequences, and the backend's tensor-core attention takes one.
    FlashOneSequence { sequences: usize },
    /// More rows than the split-KV kernel takes.
    TooManyRows { rows: usize, max: usize },
    /// The backend has no split-KV kernel.
    NoSplitKv,
    /// Done inside another node's launch.
    Fused { into: String, stage: Stage, when: When },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::OnlyKernel => f.write_str("the backend's only kernel for this op"),
            Reason::Dataflow {
                n,
                k,
                m,
                inflections: inf,
                per_shape,
                source,
                gemv_max_m,
                gemm_min_m,
                split_k_from,
                tuned_params,
                flat_range,
                long_k,
                wide,
                per_warp_max_k,
                matrix,
            } => {
                let rule = if m < &inf.m1 {
                    format!("M={m} < M1={}", inf.m1)
                } else if m < &inf.m2 {
                    format!("M1={} <= M={m} < M2={}", inf.m1, inf.m2)
                } else {
                    format!("M={m} >= M2={}", inf.m2)
                };
                let which = if *per_shape { format!("[N={n}, K={k}]") } else { format!("fallback for [N={n}, K={k}]") };
                write!(f, "{rule} ({which}, {source})")?;
                if let Some(max) = gemv_max_m {
                    write!(f, "; the GEMV holds at most {max} rows, so the flat GEMM runs")?;
                }
                if let Some(min) = gemm_min_m {
                    write!(f, "; the backend runs its GEMM from {min} rows on, so the flat GEMM runs")?;
                }
                if let Some(from) = split_k_from {
                    write!(f, "; K={k} >= {from}: K split over two lane groups")?;
                }
                if let Some(max) = per_warp_max_k {
                    write!(f, "; K={k} <= {max}: a warp per column group, holding all its weights before the kernel before ends")?;
                }
                if *tuned_params {
                    write!(f, "; its parameters measured fastest for this shape")?;
                }
                if let Some(r) = flat_range {
                    let range = match r.until_m {
                        Some(until) => format!("{}..={}", r.from_m, until - 1),
                        None => format!(">= {}", r.from_m),
                    };
                    write!(f, "; B's tiling for M {range} on this shape (one of its {} over M)", r.tilings)?;
                }
                if *long_k {
                    write!(f, "; K={k} is long for N={n} columns: B's long-K tiling")?;
                }
                if *wide {
                    write!(f, "; N={n} columns over a short K={k}: B's wide tiling")?;
                }
                if let Some(max) = matrix {
                    write!(f, "; B on the matrix units: K={k} <= {max}, in whole 16-deep operands")?;
                }
                if (*long_k || *wide) && m < &inf.m1 {
                    write!(f, ", which reads faster than the GEMV from one row on")?;
                }
                Ok(())
            }
            Reason::SplitKv { sequences, keys, limits, phi, source, single, narrow } => {
                write!(f, "decode step ({sequences} sequence(s), up to {keys} keys): ")?;
                match (limits.single_max_keys.filter(|_| *single), limits.target_blocks) {
                    (Some(max), _) => write!(
                        f,
                        "at most {max} keys over at least {} (row, head) pairs: one chunk per pair, added up in its own block{}; ",
                        limits.single_min_rows_heads,
                        match limits.single_narrow_min_rows_heads.filter(|_| *narrow) {
                            Some(min) => format!(" (narrow blocks, two to an SM: at least {min} pairs, more than the device has SMs)"),
                            None => String::new(),
                        }
                    )?,
                    (None, Some(t)) => write!(
                        f,
                        "as many chunks as fill about {t} blocks (rows x heads x chunks) of the device, at most {} per row; ",
                        limits.max_chunks
                    )?,
                    (None, None) => {
                        write!(f, "chunks of at least {} keys, at most {} per row; ", limits.min_chunk_keys, limits.max_chunks)?
                    }
                }
                match source {
                    PhiSource::Default => write!(f, "phi {phi} ({source})"),
                    PhiSource::Calibrated { .. } => write!(f, "phi {phi} (this layer's; phi per layer, {source})"),
                }
            }
            Reason::Synchronised { layer, source } => write!(
                f,
                "decode step, but layer {layer}'s scores spread wider than any unified-max window covers ({source}): \
                 the synchronised softmax runs"
            ),
            Reason::NotDecode { tokens, sequences } => {
                write!(f, "{tokens} tokens of {sequences} sequence(s) attend to each other (prefill)")
            }
            Reason::FlashHeadDim { head_dim, supported } => {
                write!(f, "prefill; the tensor-core attention takes head sizes {supported:?}, not {head_dim}")
            }
            Reason::FlashOneSequence { sequences } => {
                write!(f, "prefill of {sequences} sequences; the tensor-core attention takes one sequence per step")
            }
            Reason::TooManyRows { rows, max } => write!(f, "{rows} rows: the split-KV kernel takes at most {max}"),
            Reason::NoSplitKv => f.write_str("the backend has no split-KV kernel"),
            Reason::Fused { into, stage, when } => {
                write!(f, "done in the {stage} of {into}")?;
                match when {
                    When::Always => Ok(()),
                    When::GemvSteps => f.write_str(" (on GEMV steps)"),
                    When::GemvAndFlatGemmSteps => f.write_str(" (on GEMV and flat GEMM steps)"),
                }
            }
        }
    }
}

/// How a node runs in a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum How {
    /// Its own launch(es) (one per weight chunk), and the nodes fused into them.
    Launch { variant: Variant, params: Params, launches: usize, absorbs: Vec<String> },
    /// No launch: `into`'s launch does the work.
    Fused { into: String, stage: Stage },
}

/// What one node did in one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where it sits in the model, e.g. `layers.3.attn.qkv`.
    pub node: String,
    pub op: String,
    /// Input and output shapes in this step.
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
    /// The weight's type on the backend and its bytes (nodes with a weight).
    pub dtype: Option<DType>,
    pub weight_bytes: usize,
    pub how: How,
    pub reason: Reason,
    /// Device time of the node's launches (when the backend measured them).
    pub micros: Option<f64>,
}

impl NodeRecord {
    /// The variant label, or `fused`.
    pub fn implementation(&self) -> &'static str {
        match &self.how {
            How::Launch { variant, .. } => variant.label(),
            How::Fused { .. } => "fused",
        }
    }
}

/// What a step looked like to the lowering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepShape {
    /// Tokens in the step.
    pub m: usize,
    /// Rows whose logits are wanted.
    pub out: usize,
    /// Distinct sequences the tokens belong to.
    pub sequences: usize,
    /// Keys the longest row attends to (its position + 1).
    pub max_keys: usize,
}

impl StepShape {
    /// Every token is its own sequence's next token.
    pub fn is_decode(&self) -> bool {
        self.sequences == self.m
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Prefill,
    Decode,
}

/// One executed step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepTrace {
    pub phase: Phase,
    pub shape: StepShape,
    pub wall_micros: f64,
    /// First kernel start to last kernel end, where the backend measures it.
    pub device_micros: Option<f64>,
    /// Attention rows recomputed because their scores left the unified-max range.
    pub fallback_rows: Option<u32>,
    pub nodes: Vec<NodeRecord>,
}

impl StepTrace {
    /// Where this step's device time went, per op kind (see [`op_summary`]).
    pub fn op_summary(&self) -> Vec<OpTime> {
        op_summary(&self.nodes)
    }

    /// Sum of the nodes' device times, when any was timed.
    pub fn node_micros(&self) -> Option<f64> {
        self.nodes.iter().filter_map(|n| n.micros).reduce(|a, b| a + b)
    }
}

/// What `fdpp generate --trace` writes: the run's steps as they executed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceFile {
    pub model: String,
    /// What the loader assumed or limited about the model (defaults taken, context caps).
    #[serde(default)]
    pub notes: Vec<String>,
    pub backend: String,
    pub caps: BackendCaps,
    /// The model's configuration: with `caps`, enough to lower any other step (the viewer).
    #[serde(default)]
    pub config: Option<ModelConfig>,
    /// The last prefill step and the last decode step after it.
    pub steps: Vec<StepTrace>,
    /// One list per entry of `steps`: device time per (op, implementation).
    pub op_summary: Vec<Vec<OpTime>>,
}

impl TraceFile {
    pub fn new(model: String, config: ModelConfig, backend: String, caps: BackendCaps, steps: Vec<StepTrace>) -> Self {
        let op_summary = steps.iter().map(|s| s.op_summary()).collect();
        TraceFile { model, notes: config.notes.clone(), backend, caps, config: Some(config), steps, op_summary }
    }
}

/// One planned step of `fdpp inspect`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedStep {
    pub shape: StepShape,
    pub nodes: Vec<NodeRecord>,
}

/// What `fdpp inspect --json` writes: a backend's plan of a model, without running it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub model: String,
    /// What the loader assumed or limited about the model.
    #[serde(default)]
    pub notes: Vec<String>,
    pub caps: BackendCaps,
    /// The model's configuration: with `caps`, enough to lower any other step (the viewer).
    #[serde(default)]
    pub config: Option<ModelConfig>,
    pub fusions: Vec<Fusion>,
    pub memory: MemoryPlan,
    pub steps: Vec<PlannedStep>,
}

/// Device time of one kind of node in a step: every node with this op and implementation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpTime {
    pub op: String,
    pub implementation: String,
    pub nodes: usize,
    /// Sum of the nodes' times; `None` when the backend timed none of them (profiling off).
    pub micros: Option<f64>,
}

/// Nodes grouped by (op, implementation), the most expensive kind first (then by name).
pub fn op_summary(records: &[NodeRecord]) -> Vec<OpTime> {
    let mut kinds: std::collections::BTreeMap<(&str, &str), OpTime> = Default::default();
    for r in records {
        let e = kinds.entry((&r.op, r.implementation())).or_insert_with(|| OpTime {
            op: r.op.clone(),
            implementation: r.implementation().to_string(),
            nodes: 0,
            micros: None,
        });
        e.nodes += 1;
        if let Some(us) = r.micros {
            *e.micros.get_or_insert(0.0) += us;
        }
    }
    let mut out: Vec<OpTime> = kinds.into_values().collect();
    // Stable: equal times keep the (op, implementation) order.
    out.sort_by(|a, b| b.micros.unwrap_or(-1.0).total_cmp(&a.micros.unwrap_or(-1.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::kernel::Epilogue;

    fn rec(op: &str, variant: Option<Variant>, micros: Option<f64>) -> NodeRecord {
        let how = match variant {
            Some(variant) => How::Launch {
                variant,
                params: Params::Linear { n: 1, k: 1, n_offset: 0, ldy: 1, bias: false, prologue: None, epilogue: Epilogue::None },
                launches: 1,
                absorbs: vec![],
            },
            None => How::Fused { into: "x".into(), stage: Stage::Prologue },
        };
        NodeRecord {
            node: op.into(),
            op: op.into(),
            inputs: vec![],
            output: vec![],
            dtype: None,
            weight_bytes: 0,
            how,
            reason: Reason::OnlyKernel,
            micros,
        }
    }

    #[test]
    fn op_summary_groups_by_op_and_implementation_most_expensive_first() {
        let gemv = Some(Variant::Gemv { split_k: false, per_warp: false });
        let nodes = vec![
            rec("linear", gemv, Some(10.0)),
            rec("rms_norm", None, None),
            rec("linear", gemv, Some(20.0)),
            rec("attention", Some(Variant::OnlineAttention), Some(12.0)),
            rec("linear", Some(Variant::FlatGemm { tiling: crate::lower::caps::wgsl::flat_tilings()[0] }), Some(1.0)),
            rec("rms_norm", None, None),
        ];
        let step = StepTrace {
            phase: Phase::Decode,
            shape: StepShape { m: 1, out: 1, sequences: 1, max_keys: 5 },
            wall_micros: 100.0,
            device_micros: None,
            fallback_rows: None,
            nodes,
        };
        let s = step.op_summary();
        let got: Vec<(&str, &str, usize, Option<f64>)> =
            s.iter().map(|o| (o.op.as_str(), o.implementation.as_str(), o.nodes, o.micros)).collect();
        assert_eq!(
            got,
            vec![
                ("linear", "A:gemv", 2, Some(30.0)),
                ("attention", "online softmax", 1, Some(12.0)),
                ("linear", "B:flat_gemm", 1, Some(1.0)),
                ("rms_norm", "fused", 2, None),
            ]
        );
        assert_eq!(step.node_micros(), Some(43.0));
        // The summary serialises with untimed kinds as null, and the trace reads back.
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v[3]["micros"], serde_json::Value::Null);
        let back: StepTrace = serde_json::from_value(serde_json::to_value(&step).unwrap()).unwrap();
        assert_eq!(back.nodes, step.nodes);
    }

    #[test]
    fn reasons_read_as_sentences_with_their_thresholds() {
        let r = Reason::Dataflow {
            n: 960,
            k: 576,
            m: 12,
            inflections: Inflections { m1: 2, m2: 65 },
            per_shape: false,
            source: TableSource::Default { backend: "wgpu".into() },
            gemv_max_m: None,
            gemm_min_m: None,
            split_k_from: None,
            tuned_params: false,
            flat_range: None,
            long_k: false,
            wide: false,
            per_warp_max_k: None,
            matrix: None,
        };
        assert_eq!(r.to_string(), "M1=2 <= M=12 < M2=65 (fallback for [N=960, K=576], wgpu defaults)");
        // A shape with several B tilings over M says which range of M this one covers.
        let mut two = r.clone();
        let Reason::Dataflow { per_shape, tuned_params, flat_range, .. } = &mut two else { unreachable!() };
        (*per_shape, *tuned_params, *flat_range) = (true, true, Some(TilingRange { from_m: 1, until_m: Some(64), tilings: 2 }));
        assert_eq!(
            two.to_string(),
            "M1=2 <= M=12 < M2=65 ([N=960, K=576], wgpu defaults); its parameters measured fastest for this shape; \
             B's tiling for M 1..=63 on this shape (one of its 2 over M)"
        );
        let Reason::Dataflow { m, flat_range, .. } = &mut two else { unreachable!() };
        (*m, *flat_range) = (64, Some(TilingRange { from_m: 64, until_m: None, tilings: 2 }));
        assert!(two.to_string().ends_with("shape; B's tiling for M >= 64 on this shape (one of its 2 over M)"), "{two}");
        let f = Reason::Fused { into: "layers.0.attn.qkv".into(), stage: Stage::Prologue, when: When::GemvSteps };
        assert_eq!(f.to_string(), "done in the prologue of layers.0.attn.qkv (on GEMV steps)");
    }
}
