//! THE lowering: from the graph, the backend's capabilities and a step's shape to a typed
//! [`LoweredStep`]: launches with a kernel variant and its parameters, the buffers of a
//! memory plan computed on the fused graph, and a reason for every choice. Every decision
//! (dataflow A/B/C, GEMV split-K, split-KV chunking, fusion, weight chunking) is made here,
//! once, for every backend; backends only execute what they are given.
//!
//! Two levels: [`Lowering::new`] fixes what does not depend on the step (weight chunks,
//! fusions, the memory plan, launch [`Template`]s: each launch's parameters and buffers,
//! prepared once by a backend); [`Lowering::lower`] picks, per step, which templates run with
//! which [`Variant`].

pub mod caps;
pub mod fusion;
pub mod kernel;
pub mod memory;
pub mod rope;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use caps::{BackendCaps, GeneralAttention, LinearKernels};
use fusion::{Fusion, When};
use kernel::{Epilogue, HeadDims, Params, PhiSource, Prologue, UnifiedMax, Variant};
use memory::{BufferId, MemoryPlan};

use crate::dataflow::{DataflowTable, LinearImpl};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, NodeId, Op, ParamId};
use crate::tensor::FileType;
use crate::trace::{How, NodeRecord, Reason, StepShape};

/// A weight split by rows into chunks that each fit one binding of the backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightLayout {
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    pub chunks: Vec<Range<usize>>,
    /// A block-quantized type the weight stays in on the device (the kernels dequantize as
    /// they read it); `None`: the backend's float type, `caps.weight_dtype`.
    #[serde(default)]
    pub quantized: Option<FileType>,
}

impl WeightLayout {
    /// Bytes of one row on the device.
    pub fn row_bytes(&self, caps: &BackendCaps) -> u64 {
        match self.quantized {
            Some(q) => q.bytes(self.cols) as u64,
            None => (self.cols * caps.weight_dtype.size()) as u64,
        }
    }
}

/// One chunk of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightChunk {
    pub param: ParamId,
    pub chunk: usize,
}

/// The buffers a launch binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Io {
    /// The main input (`None`: the step's token ids).
    pub x: Option<BufferId>,
    /// The second input: the other operand of an add, the residual of a Residual epilogue.
    pub x2: Option<BufferId>,
    pub weight: Option<WeightChunk>,
    /// The RMSNorm weight of a norm prologue.
    pub norm_weight: Option<ParamId>,
    /// A linear layer's bias (the whole vector: a chunk adds from its `n_offset`).
    pub bias: Option<ParamId>,
    pub y: BufferId,
    /// The layer whose KV cache the launch reads or writes.
    pub kv: Option<usize>,
}

/// A launch as it is prepared once: what it computes and which buffers it binds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub node: NodeId,
    /// Its rows are the step's output rows (`out`), not all tokens (`m`).
    pub out_rows: bool,
    pub params: Params,
    pub io: Io,
}

pub type TemplateId = usize;

/// One launch of a step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub template: TemplateId,
    pub variant: Variant,
    /// Rows it computes this step (`m` or `out`).
    pub rows: usize,
}

/// How a node is done in one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NodeStep {
    /// Its launches, `launches` in [`LoweredStep::launches`].
    Runs { launches: Range<usize>, reason: Reason },
    /// Inside the launch of node `into`, by `fusion`.
    Fused { into: NodeId, fusion: usize },
}

/// Everything a backend needs to run one step, and why it runs that way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoweredStep {
    pub shape: StepShape,
    pub launches: Vec<Launch>,
    /// Per node, in execution order (`Lowering::order`).
    pub nodes: Vec<NodeStep>,
    /// The split-KV chunking of this step's decode attention: (chunks, keys per chunk).
    pub split_kv: Option<(usize, usize)>,
}

/// The static part of a node's lowering.
#[derive(Clone, Debug)]
enum Program {
    /// These launches every step (a table in chunks: one per chunk).
    Fixed(Vec<TemplateId>),
    /// Per weight chunk, launches for any variant; and, where the layer has prologue or
    /// epilogue fusions, the fused launch that replaces them (and the nodes it absorbs) on
    /// the steps whose variant has them (`When`).
    Linear {
        plain: Vec<TemplateId>,
        fused: Option<TemplateId>,
        n: usize,
        k: usize,
    },
    Attention {
        template: TemplateId,
    },
    /// Inside another node's launch on every step (`fusions[_]`).
    Absorbed(usize),
}

/// Where the dataflow table comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TableChoice {
    /// The backend's built-in table (`BackendCaps::table`).
    BuiltIn,
    /// This table, e.g. a tuned profile's.
    Given(DataflowTable),
    /// The tuner's profile for the device the backend opens, where the cache holds a valid
    /// one. The engine's driver resolves it (the lowering reads no files): a lowering made
    /// without one uses the built-in table.
    DeviceProfile,
}

/// Options of a lowering that are not the backend's.
#[derive(Clone, Debug, PartialEq)]
pub struct LoweringOptions {
    /// Apply the fusions the backend supports (off: every node its own launch, the
    /// reference the fused lowering is tested against).
    pub fuse: bool,
    /// Phi and its safe range per layer (one value: every layer).
    pub unified_max: Vec<UnifiedMax>,
    /// Per layer: its scores spread wider than any unified-max window covers, so its decode
    /// steps run the synchronised softmax instead of split-KV (empty: no layer).
    pub synchronised: Vec<bool>,
    /// Where `unified_max` and `synchronised` came from (said in every split-KV reason).
    pub phi_source: PhiSource,
    /// Which dataflow table decides A/B/C.
    pub table: TableChoice,
    /// Each parameter's type in the model file (`Graph::check_weights`), for backends that
    /// read block-quantized weights as stored (`BackendCaps::native_weights`); empty: not
    /// known, every weight in the backend's float type.
    pub file_types: Vec<FileType>,
}

impl Default for LoweringOptions {
    fn default() -> Self {
        LoweringOptions {
            fuse: true,
            unified_max: vec![UnifiedMax::default()],
            synchronised: vec![],
            phi_source: PhiSource::Default,
            table: TableChoice::BuiltIn,
            file_types: vec![],
        }
    }
}

/// A graph lowered for one backend: the static decisions, and `lower` for each step.
#[derive(Clone, Debug)]
pub struct Lowering {
    pub graph: Graph,
    pub caps: BackendCaps,
    /// Nodes in execution order.
    pub order: Vec<NodeId>,
    /// Per parameter.
    pub weights: Vec<WeightLayout>,
    pub fusions: Vec<Fusion>,
    pub memory: MemoryPlan,
    pub templates: Vec<Template>,
    programs: Vec<Program>,
    /// Per layer (empty: none): decode attention runs the synchronised softmax.
    synchronised: Vec<bool>,
    phi_source: PhiSource,
}

impl Lowering {
    pub fn new(graph: Graph, mut caps: BackendCaps, opts: &LoweringOptions) -> Result<Lowering> {
        if let TableChoice::Given(t) = &opts.table {
            caps.table = t.clone();
        }
        let c = &graph.config;
        if c.head_dim > caps.attention.max_head_dim {
            let reason = format!("head_dim {} is larger than its attention kernels hold ({})", c.head_dim, caps.attention.max_head_dim);
            return Err(Error::Backend { backend: caps.backend.name().into(), op: "planning the model".into(), reason });
        }
        if opts.unified_max.is_empty() || (opts.unified_max.len() != 1 && opts.unified_max.len() != c.num_layers) {
            return Err(Error::InvalidArgument(format!("unified max: give one value or one per layer ({})", c.num_layers)));
        }
        if !opts.synchronised.is_empty() && opts.synchronised.len() != c.num_layers {
            return Err(Error::InvalidArgument(format!("synchronised layers: give one flag per layer ({}) or none", c.num_layers)));
        }
        let order = graph.topological_order()?;
        if !opts.file_types.is_empty() && opts.file_types.len() != graph.params.len() {
            return Err(Error::InvalidArgument(format!("file types: give one per parameter ({}) or none", graph.params.len())));
        }
        let weights = weight_layouts(&graph, &caps, &opts.file_types)?;
        let single_chunk = |n: NodeId| graph.nodes[n].op.param().is_some_and(|p| weights[p].chunks.len() == 1);
        let fusions = if opts.fuse { fusion::find(&graph, &order, &caps.fusions, &single_chunk) } else { vec![] };
        let memory = memory::plan(&graph, &order, &fusions);
        let (synchronised, phi_source) = (opts.synchronised.clone(), opts.phi_source.clone());
        let mut l =
            Lowering { graph, caps, order, weights, fusions, memory, templates: vec![], programs: vec![], synchronised, phi_source };
        l.programs = l.order.clone().into_iter().map(|n| l.program(n, &opts.unified_max)).collect();
        Ok(l)
    }

    /// Bytes of the weights on the device, each in the type it is stored in.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.iter().map(|w| (w.rows as u64).saturating_mul(w.row_bytes(&self.caps))).fold(0, u64::saturating_add)
    }

    fn buffer(&self, t: usize) -> BufferId {
        self.memory.buffer_of[t].expect("the memory plan stores every tensor a launch touches")
    }

    fn template(&mut self, node: NodeId, params: Params, io: Io) -> TemplateId {
        let out_rows = self.graph.tensors[self.graph.nodes[node].output].shape[0] == Dim::Out;
        self.templates.push(Template { node, out_rows, params, io });
        self.templates.len() - 1
    }

    fn fusion_of(&self, pred: impl Fn(&Fusion) -> bool) -> Option<(usize, Fusion)> {
        self.fusions.iter().copied().enumerate().find(|(_, f)| pred(f))
    }

    fn program(&mut self, ni: NodeId, unified: &[UnifiedMax]) -> Program {
        let node = self.graph.nodes[ni].clone();
        if let Some((i, _)) = self.fusion_of(|f| f.when(&self.caps.fusions) == When::Always && f.absorbed() == Some(ni)) {
            return Program::Absorbed(i);
        }
        let x = node.inputs.first().filter(|&&t| t != self.graph.tokens).map(|&t| self.buffer(t));
        let width = self.graph.tensors[node.output].row_width();
        let io = |y: BufferId| Io { x, x2: None, weight: None, norm_weight: None, bias: None, y, kv: None };
        match node.op {
            Op::Embedding { table } => {
                let chunks = self.weights[table].chunks.clone();
                let y = self.buffer(node.output);
                let templates = chunks
                    .iter()
                    .enumerate()
                    .map(|(chunk, r)| {
                        let params = Params::Embedding { hidden: width, first_row: r.start, rows: r.len() };
                        self.template(ni, params, Io { weight: Some(WeightChunk { param: table, chunk }), ..io(y) })
                    })
                    .collect();
                Program::Fixed(templates)
            }
            Op::RmsNorm { weight, eps } => {
                let t = self.template(
                    ni,
                    Params::RmsNorm { width, eps },
                    Io { weight: Some(WeightChunk { param: weight, chunk: 0 }), ..io(self.buffer(node.output)) },
                );
                Program::Fixed(vec![t])
            }
            Op::Linear { weight, bias, n, k, .. } => {
                let residual = self.fusion_of(|f| matches!(f, Fusion::ResidualEpilogue { linear, .. } if *linear == ni));
                let (y, x2, epilogue) = match residual {
                    Some((_, Fusion::ResidualEpilogue { add, .. })) => {
                        let a = &self.graph.nodes[add];
                        let other = if a.inputs[0] == node.output { a.inputs[1] } else { a.inputs[0] };
                        (self.buffer(a.output), Some(self.buffer(other)), Epilogue::Residual)
                    }
                    _ => (self.buffer(node.output), None, Epilogue::None),
                };
                let chunks = self.weights[weight].chunks.clone();
                let plain = chunks
                    .iter()
                    .enumerate()
                    .map(|(chunk, r)| {
                        let params =
                            Params::Linear { n: r.len(), k, n_offset: r.start, ldy: n, bias: bias.is_some(), prologue: None, epilogue };
                        self.template(ni, params, Io { x2, bias, weight: Some(WeightChunk { param: weight, chunk }), ..io(y) })
                    })
                    .collect();
                let fused = self.fused_linear(ni, (weight, bias), n, k);
                Program::Linear { plain, fused, n, k }
            }
            Op::Rope { head_dim, num_heads, num_kv_heads, .. } => {
                let dims = HeadDims { heads: num_heads, kv_heads: num_kv_heads, head_dim };
                let kv = self.kv_layer_written_by(ni);
                let t = self.template(ni, Params::Rope { dims, kv_write: kv.is_some() }, Io { kv, ..io(self.buffer(node.output)) });
                Program::Fixed(vec![t])
            }
            Op::Attention { layer, num_heads, num_kv_heads, head_dim, scale } => {
                let dims = HeadDims { heads: num_heads, kv_heads: num_kv_heads, head_dim };
                let kv_write = self.fusion_of(|f| matches!(f, Fusion::KvWriteInRope { attention, .. } if *attention == ni)).is_none();
                let unified = unified[if unified.len() == 1 { 0 } else { layer }];
                let params = Params::Attention { dims, layer, scale, kv_write, unified };
                let template = self.template(ni, params, Io { kv: Some(layer), ..io(self.buffer(node.output)) });
                Program::Attention { template }
            }
            Op::SwiGlu { ffn } => Program::Fixed(vec![self.template(ni, Params::SwiGlu { ffn }, io(self.buffer(node.output)))]),
            Op::Add => {
                let x2 = Some(self.buffer(node.inputs[1]));
                Program::Fixed(vec![self.template(ni, Params::Add { width }, Io { x2, ..io(self.buffer(node.output)) })])
            }
            Op::SelectRows => Program::Fixed(vec![self.template(ni, Params::SelectRows { width }, io(self.buffer(node.output)))]),
        }
    }

    /// The layer whose KV cache a RoPE node writes (the attention's write fused into it).
    fn kv_layer_written_by(&self, rope: NodeId) -> Option<usize> {
        self.fusions.iter().find_map(|f| match *f {
            Fusion::KvWriteInRope { rope: r, attention } if r == rope => match self.graph.nodes[attention].op {
                Op::Attention { layer, .. } => Some(layer),
                _ => None,
            },
            _ => None,
        })
    }

    /// The launch of this linear layer with its prologue / epilogue fusions, if it has any.
    fn fused_linear(&mut self, ni: NodeId, (weight, bias): (ParamId, Option<ParamId>), n: usize, k: usize) -> Option<TemplateId> {
        if !self.fusions.iter().any(|f| f.when(&self.caps.fusions) != When::Always && f.host() == ni) {
            return None;
        }
        let node = self.graph.nodes[ni].clone();
        let mut prologue = None;
        let mut epilogue = Epilogue::None;
        let mut x = self.buffer(node.inputs[0]);
        let mut y = self.buffer(node.output);
        let mut norm_weight = None;
        let mut kv = None;
        for f in self.fusions.clone() {
            match f {
                Fusion::NormPrologue { norm, linear } if linear == ni => {
                    let Op::RmsNorm { weight, eps } = self.graph.nodes[norm].op else { unreachable!("norm prologues start at an RMSNorm") };
                    prologue = Some(Prologue::RmsNorm { eps });
                    norm_weight = Some(weight);
                    x = self.buffer(self.graph.nodes[norm].inputs[0]);
                }
                Fusion::SwiGluEpilogue { linear, swiglu } if linear == ni => {
                    epilogue = Epilogue::SwiGlu;
                    y = self.buffer(self.graph.nodes[swiglu].output);
                }
                Fusion::RopeEpilogue { linear, rope } if linear == ni => {
                    let Op::Rope { head_dim, num_heads, num_kv_heads, .. } = self.graph.nodes[rope].op else {
                        unreachable!("rope epilogues end at a RoPE")
                    };
                    epilogue = Epilogue::Rope { dims: HeadDims { heads: num_heads, kv_heads: num_kv_heads, head_dim } };
                    y = self.buffer(self.graph.nodes[rope].output);
                    kv = self.kv_layer_written_by(rope);
                }
                _ => {}
            }
        }
        let ldy = if epilogue == Epilogue::SwiGlu { n / 2 } else { n };
        let params = Params::Linear { n, k, n_offset: 0, ldy, bias: bias.is_some(), prologue, epilogue };
        let io = Io { x: Some(x), x2: None, weight: Some(WeightChunk { param: weight, chunk: 0 }), norm_weight, bias, y, kv };
        Some(self.template(ni, params, io))
    }

    fn linear_variant(&self, n: usize, k: usize, rows: usize) -> (Variant, Reason) {
        linear_choice(&self.caps.table, &self.caps.linear, n, k, rows)
    }

    /// The attention variant of a layer in a step, and why.
    fn attention_variant(
        &self,
        shape: &StepShape,
        layer: usize,
        unified: UnifiedMax,
        head_dim: usize,
    ) -> (Variant, Reason, Option<(usize, usize)>) {
        let kernels = &self.caps.attention;
        let general = match kernels.general {
            GeneralAttention::Online => Variant::OnlineAttention,
            GeneralAttention::TwoPass => Variant::TwoPassAttention,
        };
        // A step that is not split-KV: the tensor-core kernel where it takes this head size.
        let not_split = |why: Reason| match &kernels.flash {
            Some(f) if f.one_sequence && shape.sequences > 1 => (general, Reason::FlashOneSequence { sequences: shape.sequences }, None),
            Some(f) if f.head_dims.contains(&head_dim) => (Variant::FlashAttention { rows: f.rows, keys: f.keys }, why, None),
            Some(f) => (general, Reason::FlashHeadDim { head_dim, supported: f.head_dims.clone() }, None),
            None => (general, why, None),
        };
        let Some(limits) = kernels.split_kv else { return not_split(Reason::NoSplitKv) };
        if !shape.is_decode() {
            return not_split(Reason::NotDecode { tokens: shape.m, sequences: shape.sequences });
        }
        if shape.m > limits.max_rows {
            return not_split(Reason::TooManyRows { rows: shape.m, max: limits.max_rows });
        }
        // A layer whose scores no fixed window covers would recompute most rows: the online
        // softmax (the general kernel; the tensor-core one is a prefill kernel) runs instead.
        if self.synchronised.get(layer).copied().unwrap_or(false) {
            return (general, Reason::Synchronised { layer, source: self.phi_source.clone() }, None);
        }
        let rows_heads = shape.m * self.graph.config.num_heads;
        let (chunks, chunk_keys) = limits.chunking(shape.max_keys, rows_heads);
        let narrow = limits.single_narrow(shape.max_keys, rows_heads);
        let variant = Variant::SplitKvAttention { chunks, chunk_keys, unified, narrow };
        let reason = Reason::SplitKv {
            sequences: shape.sequences,
            keys: chunks * chunk_keys,
            limits,
            phi: unified.phi,
            source: self.phi_source.clone(),
            single: limits.single(shape.max_keys, rows_heads),
            narrow,
        };
        (variant, reason, Some((chunks, chunk_keys)))
    }

    /// What the step depends on beyond its shape's identity: equal keys lower equally.
    pub fn step_key(&self, shape: &StepShape) -> (usize, usize, usize, Option<(usize, usize)>) {
        let split = self
            .caps
            .attention
            .split_kv
            .filter(|l| shape.is_decode() && shape.m <= l.max_rows)
            .map(|l| l.chunking(shape.max_keys, shape.m * self.graph.config.num_heads));
        (shape.m, shape.out, shape.sequences, split)
    }

    /// The launches of one step.
    pub fn lower(&self, shape: &StepShape) -> LoweredStep {
        let (m, out) = (shape.m, shape.out);
        let rows = |t: &Template| if t.out_rows { out } else { m };
        // Which linear layers run their fused launch this step (their absorbed nodes then
        // run no launch of their own).
        let support = &self.caps.fusions;
        let mut fused_here = vec![false; self.fusions.len()];
        for (pi, &ni) in self.order.iter().enumerate() {
            if let Program::Linear { fused: Some(_), n, k, .. } = &self.programs[pi] {
                let rows = self.graph.tensors[self.graph.nodes[ni].output].rows(m, out);
                let variant = self.linear_variant(*n, *k, rows).0;
                for (fi, f) in self.fusions.iter().enumerate() {
                    let when = f.when(support);
                    fused_here[fi] |= when != When::Always && when.applies(&variant) && f.host() == ni;
                }
            }
        }
        let mut launches = Vec::with_capacity(self.templates.len());
        let mut nodes = Vec::with_capacity(self.order.len());
        let mut split = None;
        for (pi, &ni) in self.order.iter().enumerate() {
            let folded = match &self.programs[pi] {
                Program::Absorbed(fi) => Some(*fi),
                _ => (0..self.fusions.len()).find(|&fi| fused_here[fi] && self.fusions[fi].absorbed() == Some(ni)),
            };
            let start = launches.len();
            let step = match (&self.programs[pi], folded) {
                (_, Some(fi)) => NodeStep::Fused { into: self.fusions[fi].host(), fusion: fi },
                (Program::Absorbed(_), None) => unreachable!("absorbed nodes are folded"),
                (Program::Fixed(ts), None) => {
                    for &t in ts {
                        let variant = fixed_variant(&self.templates[t].params);
                        launches.push(Launch { template: t, variant, rows: rows(&self.templates[t]) });
                    }
                    NodeStep::Runs { launches: start..launches.len(), reason: Reason::OnlyKernel }
                }
                (Program::Linear { plain, fused, n, k }, None) => {
                    let r = rows(&self.templates[plain[0]]);
                    let (variant, reason) = self.linear_variant(*n, *k, r);
                    let fused = fused.filter(|_| self.fusions.iter().enumerate().any(|(fi, f)| fused_here[fi] && f.host() == ni));
                    match fused {
                        Some(t) => launches.push(Launch { template: t, variant, rows: r }),
                        _ => launches.extend(plain.iter().map(|&t| Launch { template: t, variant, rows: r })),
                    }
                    NodeStep::Runs { launches: start..launches.len(), reason }
                }
                (Program::Attention { template }, None) => {
                    let Params::Attention { unified, dims, layer, .. } = self.templates[*template].params else {
                        unreachable!("attention template")
                    };
                    let (variant, reason, chunking) = self.attention_variant(shape, layer, unified, dims.head_dim);
                    split = split.or(chunking);
                    launches.push(Launch { template: *template, variant, rows: m });
                    NodeStep::Runs { launches: start..launches.len(), reason }
                }
            };
            nodes.push(step);
        }
        LoweredStep { shape: *shape, launches, nodes, split_kv: split }
    }

    /// The launches a step makes for the first linear layer of [n, k] (in order) when it
    /// runs `variant`, each with the variant it runs: its fused launch where the variant
    /// takes the layer's prologue / epilogue fusions, else its plain launches between those
    /// of the nodes it leaves unfused (the RMSNorm before; the SwiGLU or RoPE after). What
    /// the tuner times: a variant that fuses less pays for the launches it leaves.
    pub fn linear_launches(&self, n: usize, k: usize, variant: Variant) -> Option<Vec<(Template, Variant)>> {
        let (pi, ni) = self
            .order
            .iter()
            .copied()
            .enumerate()
            .find(|&(pi, _)| matches!(self.programs[pi], Program::Linear { n: pn, k: pk, .. } if (pn, pk) == (n, k)))?;
        let Program::Linear { plain, fused, .. } = &self.programs[pi] else { unreachable!("found as a linear program") };
        let support = &self.caps.fusions;
        let optional: Vec<&Fusion> = self.fusions.iter().filter(|f| f.host() == ni && f.when(support) != When::Always).collect();
        let with = |t: TemplateId, v: Variant| (self.templates[t].clone(), v);
        if let Some(t) = fused.filter(|_| optional.iter().all(|f| f.when(support).applies(&variant))) {
            return Some(vec![with(t, variant)]);
        }
        // The nodes this variant leaves unfused run their own launches, before or after.
        let own = |stage: fusion::Stage| -> Vec<(Template, Variant)> {
            let nodes = optional.iter().filter(|f| f.stage() == stage).filter_map(|f| f.absorbed());
            let programs = nodes.filter_map(|a| self.order.iter().position(|&o| o == a)).map(|p| &self.programs[p]);
            programs
                .flat_map(|p| match p {
                    Program::Fixed(ts) => ts.clone(),
                    _ => vec![],
                })
                .map(|t| with(t, fixed_variant(&self.templates[t].params)))
                .collect()
        };
        let mut out = own(fusion::Stage::Prologue);
        out.extend(plain.iter().map(|&t| with(t, variant)));
        out.extend(own(fusion::Stage::Epilogue));
        Some(out)
    }

    /// The typed record of every node of `step`; `launch_micros` (per launch) where the
    /// backend timed them.
    pub fn records(&self, step: &LoweredStep, launch_micros: Option<&[f64]>) -> Vec<NodeRecord> {
        let g = &self.graph;
        let (m, out) = (step.shape.m, step.shape.out);
        let mut absorbs: Vec<Vec<String>> = vec![vec![]; g.nodes.len()];
        for (&ni, s) in self.order.iter().zip(&step.nodes) {
            if let NodeStep::Fused { into, .. } = s {
                absorbs[*into].push(g.nodes[ni].name.clone());
            }
        }
        self.order
            .iter()
            .zip(&step.nodes)
            .map(|(&ni, s)| {
                let node = &g.nodes[ni];
                let param = node.op.param();
                let dtype = param.map(|_| self.caps.weight_dtype);
                let weight_bytes = param.map_or(0, |p| g.params[p].numel() * self.caps.weight_dtype.size());
                let (how, reason, micros) = match s {
                    NodeStep::Runs { launches, reason } => {
                        let first = &step.launches[launches.start];
                        let how = How::Launch {
                            variant: first.variant,
                            params: self.templates[first.template].params,
                            launches: launches.len(),
                            absorbs: std::mem::take(&mut absorbs[ni]),
                        };
                        let micros = launch_micros.map(|t| t[launches.clone()].iter().sum());
                        (how, reason.clone(), micros)
                    }
                    NodeStep::Fused { into, fusion } => {
                        let f = &self.fusions[*fusion];
                        let into = g.nodes[*into].name.clone();
                        let reason = Reason::Fused { into: into.clone(), stage: f.stage(), when: f.when(&self.caps.fusions) };
                        (How::Fused { into, stage: f.stage() }, reason, None)
                    }
                };
                NodeRecord {
                    node: node.name.clone(),
                    op: node.op.kind_name().into(),
                    inputs: node.inputs.iter().map(|&t| g.tensors[t].eval(m, out)).collect(),
                    output: g.tensors[node.output].eval(m, out),
                    dtype,
                    weight_bytes,
                    how,
                    reason,
                    micros,
                }
            })
            .collect()
    }
}

/// The dataflow variant of a linear layer of [N, K] over `rows` rows, and why: the
/// implementation from the table's inflection points, its parameters from the table's
/// entry for the shape where it names them (and the backend has them), else the backend's.
/// B takes the entry's tiling for the range of M the rows fall in.
pub fn linear_choice(table: &DataflowTable, lin: &LinearKernels, n: usize, k: usize, rows: usize) -> (Variant, Reason) {
    let (inflections, per_shape) = table.inflections(n, k);
    let entry = table.shape(n, k);
    let mut imp = table.implementation(n, k, rows);
    let mut gemv_max_m = None;
    if imp == LinearImpl::Gemv && rows > lin.gemv_max_m {
        imp = LinearImpl::FlatGemm;
        gemv_max_m = Some(lin.gemv_max_m);
    }
    // Where the table does not list the shape, B's long-K and wide tilings also take the
    // GEMV's rows: they read faster from one row on (H200 at M = 1: Llama-2-7B's O 10.7
    // against the GEMV's 11.9 us, down 25.6 against 27.0; SmolLM2's LM head 18.1 against 42.5).
    let long_k_applies = lin.flat_long_k.is_some_and(|l| l.applies(n, k) && lin.flat_tilings.contains(&l.tiling));
    let wide_applies = lin.flat_wide.is_some_and(|w| w.applies(n, k) && lin.flat_tilings.contains(&w.tiling));
    if imp == LinearImpl::Gemv && !per_shape && (long_k_applies || wide_applies) {
        imp = LinearImpl::FlatGemm;
    }
    let mut gemm_min_m = None;
    if imp == LinearImpl::Gemm && rows < lin.gemm_min_m {
        imp = LinearImpl::FlatGemm;
        gemm_min_m = Some(lin.gemm_min_m);
    }
    let mut split_k_from = None;
    let mut tuned_params = false;
    let mut flat_range = None;
    let mut long_k = false;
    let mut wide = false;
    let mut matrix = None;
    let variant = match imp {
        LinearImpl::Gemv => match (entry.and_then(|e| e.gemv_split_k_from), lin.gemv_split_k_min) {
            (Some(from), Some(_)) => {
                tuned_params = true;
                lin.gemv(k, rows >= from)
            }
            (_, min) => {
                split_k_from = min.filter(|&min| k >= min);
                lin.gemv(k, split_k_from.is_some())
            }
        },
        LinearImpl::FlatGemm => {
            let tuned = entry.and_then(|e| e.flat_at(rows, |t| lin.flat_takes(t, k)));
            flat_range = tuned.map(|(_, range)| range).filter(|r| r.tilings > 1);
            let tuned = tuned.map(|(tiling, _)| tiling);
            tuned_params = tuned.is_some();
            let long_k_tiling = lin.flat_long_k.filter(|_| tuned.is_none() && long_k_applies).map(|l| l.tiling);
            let wide_tiling = lin.flat_wide.filter(|_| tuned.is_none() && long_k_tiling.is_none() && wide_applies).map(|w| w.tiling);
            long_k = long_k_tiling.is_some();
            wide = wide_tiling.is_some();
            let untuned = tuned.is_none() && long_k_tiling.is_none() && wide_tiling.is_none();
            let on_matrix = lin.flat_matrix.filter(|m| untuned && m.applies(k));
            matrix = on_matrix.map(|m| m.max_k);
            Variant::FlatGemm {
                tiling: tuned.or(long_k_tiling).or(wide_tiling).or(on_matrix.map(|m| m.tiling)).unwrap_or(lin.flat_tilings[0]),
            }
        }
        LinearImpl::Gemm => Variant::Gemm { tile: lin.gemm_tile },
    };
    let per_warp_max_k = lin.gemv_per_warp_max_k.filter(|_| matches!(variant, Variant::Gemv { per_warp: true, .. }));
    let source = table.source.clone();
    let reason = Reason::Dataflow {
        n,
        k,
        m: rows,
        inflections,
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
    };
    (variant, reason)
}

/// The variant of an op with one kernel.
fn fixed_variant(p: &Params) -> Variant {
    match p {
        Params::Embedding { .. } => Variant::Gather,
        Params::RmsNorm { .. } => Variant::RmsNorm,
        Params::Rope { .. } => Variant::Rope,
        Params::SwiGlu { .. } => Variant::SwiGlu,
        Params::Add { .. } => Variant::Add,
        Params::SelectRows { .. } => Variant::SelectRows,
        Params::Linear { .. } | Params::Attention { .. } => unreachable!("linear and attention layers choose their variant"),
    }
}

/// Every parameter split by rows so that each chunk fits one binding of `caps`, each in
/// the type it is stored in (`quantized_storage`).
fn weight_layouts(g: &Graph, caps: &BackendCaps, file_types: &[FileType]) -> Result<Vec<WeightLayout>> {
    g.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let rows = p.shape[0];
            let cols: usize = p.shape[1..].iter().product();
            let quantized = quantized_storage(p, file_types.get(i).copied(), caps);
            let layout = WeightLayout { rows, cols, chunks: vec![], quantized };
            let row_bytes = layout.row_bytes(caps);
            if row_bytes > caps.max_binding_bytes {
                let reason =
                    format!("a row of `{}` is {row_bytes} bytes, more than one binding holds ({} bytes)", p.name, caps.max_binding_bytes);
                return Err(Error::Backend { backend: caps.backend.name().into(), op: "planning the model".into(), reason });
            }
            // Vectors (norm weights) are one row of `rows` elements: never split.
            let per = if p.shape.len() == 1 { rows } else { ((caps.max_binding_bytes / row_bytes) as usize).max(1) };
            let chunks = (0..rows).step_by(per.max(1)).map(|r| r..(r + per).min(rows)).collect();
            Ok(WeightLayout { chunks, ..layout })
        })
        .collect()
}

/// The block-quantized type a parameter stays in on the device: its file's, for a matrix
/// (a linear layer's weight or the embedding table: every kernel that reads one
/// dequantizes) whose rows are whole blocks, where the backend reads that type
/// (`caps.native_weights`, which the user's `--weights` decides). Everything else is
/// widened to the backend's float type.
pub fn quantized_storage(p: &crate::graph::ParamDesc, file_type: Option<FileType>, caps: &BackendCaps) -> Option<FileType> {
    let ty = file_type.filter(|t| t.is_quantized() && caps.native_weights.contains(t))?;
    (p.shape.len() == 2 && p.shape[1].is_multiple_of(ty.block().0)).then_some(ty)
}

#[cfg(test)]
pub(crate) mod tests;
