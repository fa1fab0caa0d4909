//! The portable GPU backend: every graph node runs as a WGSL compute kernel through wgpu
//! (Vulkan, Metal, DX12; Mesa's lavapipe without a GPU). Pipelines and bind groups are made
//! once for the static graph; a step records every dispatch into one command encoder and
//! submits once; the KV cache never leaves the GPU. Decoding picks the next ids on the
//! device (argmax or top-k/top-p), feeds them to the next step there and reads back 4 bytes
//! per sequence one step behind, so step t + 1 is recorded while step t runs. On GEMV steps
//! the RMSNorms, SwiGLU, RoPE with the KV write and the residual adds run inside the linear
//! layers around them (6 dispatches per layer).

pub mod device;
pub mod microbench;
pub mod sampling;
pub mod shaders;

use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

pub use device::{GpuContext, WeightPrecision};
use sampling::GpuSampler;

use super::{Executor, ExecutorOptions, NodeRecord, StepInput, StepTiming, check_decode, decode_one_by_one, validate_step};
use crate::backend::cpu::kernels::rope_inv_freq;
use crate::dataflow::{DataflowTable, LinearImpl};
use crate::engine::Sampler;
use crate::error::{Error, Result};
use crate::graph::plan::row_width;
use crate::graph::{Dim, Graph, Op, Plan};
use crate::tensor::HostTensor;

/// Decode steps (every token of its own sequence) with at most this many tokens use the
/// split-KV unified-max attention; other steps use the online-softmax kernel.
const SPLIT_MAX_M: usize = 64;
/// The split-KV attention cuts the keys into at most this many chunks (one workgroup each).
const MAX_ATTN_CHUNKS: usize = 64;

/// (chunks, keys per chunk) of the split-KV attention over `keys` keys: chunks of 16 keys
/// up to 1024 keys, then longer chunks (powers of two), so the combine step, which walks the
/// chunks one after another, stays short.
fn split_kv(keys: usize) -> (usize, usize) {
    let per_chunk = keys.div_ceil(MAX_ATTN_CHUNKS).next_power_of_two().max(16);
    (keys.div_ceil(per_chunk), per_chunk)
}
/// Rows the GEMV kernel handles at once (`GEMV_MAX_M` in linear.wgsl).
const GEMV_MAX_M: usize = 8;
/// Output columns per GEMV workgroup (`GV_COLS`); half as many pairs with the SwiGLU or
/// RoPE epilogue.
const GV_COLS: usize = 8;
/// Output columns per flat-GEMM workgroup (`FB_COLS`); rows per workgroup (`FB_M`).
const FB_COLS: usize = 32;
const FB_M: usize = 8;
/// From this K on, GEMV splits K over two lane groups per column pair (`gemv_split_k`).
/// On an H200, Llama-2-7B's down projection (K = 11008) gained 9% and every K = 4096
/// shape lost 4-11% (`fdpp bench kernels`, bench/results/h200.md).
const GEMV_SPLIT_K_MIN: usize = 8192;

/// The GEMV entry point for rows of length `k`.
fn gemv_kernel(k: usize) -> &'static str {
    if k >= GEMV_SPLIT_K_MIN { "gemv_split_k" } else { "gemv" }
}
/// `node.mode` bits of the linear kernels (linear.wgsl).
const MODE_RESIDUAL: u32 = 1;
const MODE_NORM: u32 = 2;
const MODE_SWIGLU: u32 = 4;
const MODE_ROPE: u32 = 8;

/// The unified max phi and the safe range of s - phi. Scores and sums stay in f32, so any
/// phi works while e^(s - phi) neither overflows nor underflows: the default keeps
/// |s - phi| < 60 (e^60 * 8192 keys ~ 1e30 < f32 max). Per-layer calibration replaces it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnifiedMax {
    pub phi: f32,
    pub lo: f32,
    pub hi: f32,
}

impl Default for UnifiedMax {
    fn default() -> Self {
        UnifiedMax { phi: 0.0, lo: -60.0, hi: 60.0 }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepUniform {
    m: u32,
    n_out: u32,
    max_m: u32,
    attn_chunks: u32,
    attn_chunk_keys: u32,
    _pad: [u32; 3],
}

impl StepUniform {
    /// A step of `m` tokens (arrays `max_m` long) whose longest row attends to `keys` keys.
    fn new(m: usize, n_out: usize, max_m: usize, keys: usize) -> Self {
        let (chunks, per_chunk) = split_kv(keys);
        StepUniform {
            m: m as u32,
            n_out: n_out as u32,
            max_m: max_m as u32,
            attn_chunks: chunks as u32,
            attn_chunk_keys: per_chunk as u32,
            _pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct NodeUniform {
    rows: u32,
    n: u32,
    k: u32,
    n_offset: u32,
    ldy: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    flag_offset: u32,
    mode: u32,
    max_ctx: u32,
    eps: f32,
    scale: f32,
    phi: f32,
    lo: f32,
    hi: f32,
    _pad: [u32; 4],
}

/// A weight in device memory, split by rows where one binding cannot hold it all.
struct DeviceParam {
    chunks: Vec<(wgpu::Buffer, usize, usize)>, // (buffer, first row, rows)
    /// Vectors (norm weights) also in f32, as the GEMV norm prologue reads them (x2).
    vector_f32: Option<wgpu::Buffer>,
}

/// What a bind group binds; `None` slots get placeholders.
#[derive(Default)]
struct Binds<'a> {
    x: Option<&'a wgpu::Buffer>,
    x2: Option<&'a wgpu::Buffer>,
    w: Option<&'a wgpu::Buffer>,
    y: Option<&'a wgpu::Buffer>,
    kc: Option<&'a wgpu::Buffer>,
    vc: Option<&'a wgpu::Buffer>,
    /// Instead of the attention partials (the fused QKV GEMV's RoPE table).
    scratch: Option<&'a wgpu::Buffer>,
}

/// The prepared work of one graph node.
enum Work {
    Embedding {
        groups: Vec<wgpu::BindGroup>,
        hidden: usize,
    },
    RmsNorm {
        group: wgpu::BindGroup,
        out_rows: bool,
    },
    /// `fused_add`: the residual add after it happens in its epilogue (every kernel).
    /// `gemv_fused`: the variant that also folds neighbours in, taken on GEMV steps.
    Linear {
        groups: Vec<(wgpu::BindGroup, usize)>,
        gemv_fused: Option<GemvFused>,
        n: usize,
        k: usize,
        out_rows: bool,
        fused_add: bool,
    },
    /// `writes_kv`: also appends K and V to the cache (the attention's KV write fused in).
    Rope {
        group: wgpu::BindGroup,
        width: usize,
        writes_kv: bool,
    },
    /// `kv_write` is `None` when the rope node before it writes the cache (fused). One bind
    /// group serves the split, combine and online kernels.
    Attention {
        kv_write: Option<wgpu::BindGroup>,
        group: wgpu::BindGroup,
        kv_dim: usize,
    },
    /// Folded into the node before it (a residual add done in a linear layer's epilogue).
    Fused {
        into: String,
    },
    Rows {
        kernel: &'static str,
        group: wgpu::BindGroup,
        width: usize,
        out_rows: bool,
    },
}

/// What a step's dispatches and records depend on besides the static graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepShape {
    m: usize,
    n_out: usize,
    sequences: usize,
    /// Split-KV decode attention (every token its own sequence), in `chunks` of `per_chunk` keys.
    split: bool,
    chunks: usize,
    per_chunk: usize,
}

impl StepShape {
    /// Rows of a node: the output rows or all tokens.
    fn rows(&self, out_rows: bool) -> usize {
        if out_rows { self.n_out } else { self.m }
    }
}

/// How a step's next ids are chosen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// On the host: the logits are read back.
    Logits,
    /// Greedy, on the device.
    Argmax,
    /// Top-k / top-p on the device (`GpuSampler`).
    Sample,
}

/// Bytes of the ids read-back before the two step timestamps (8-byte aligned).
fn ids_readback_bytes(max_out: usize) -> u64 {
    ((1 + max_out) * 4).next_multiple_of(8) as u64
}

/// A linear layer with its RMSNorm folded into the prologue and/or its SwiGLU or RoPE (with
/// the KV write) into the epilogue. GEMV only: on flat-GEMM and GEMM steps the unfused nodes
/// run instead.
struct GemvFused {
    group: wgpu::BindGroup,
    workgroups: usize,
    /// Plan-order indices of the nodes it replaces, and how.
    folds: Vec<(usize, &'static str)>,
}

/// A linear layer whose only consumer is a residual add: the add happens in its epilogue.
struct ResidualFusion {
    /// The other input of the add.
    residual: usize,
    /// The add's output tensor, which the linear layer writes instead.
    output: usize,
}

/// Which nodes the wgpu lowering fuses (keys are node ids).
#[derive(Default)]
struct Fusions {
    /// rope node -> layer whose KV cache it writes.
    rope_kv: HashMap<usize, usize>,
    /// linear node -> the add folded into it.
    residual: HashMap<usize, ResidualFusion>,
    /// add node -> the linear node that does it.
    fused_adds: HashMap<usize, usize>,
    /// linear node -> the RMSNorm node before it (GEMV prologue).
    norm: HashMap<usize, usize>,
    /// linear node -> the SwiGLU node after it (GEMV epilogue).
    swiglu: HashMap<usize, usize>,
    /// linear node -> the RoPE node after it, which writes the KV cache (GEMV epilogue).
    rope: HashMap<usize, usize>,
}

impl Fusions {
    fn find(g: &Graph, plan: &Plan, params: &[DeviceParam]) -> Self {
        let mut consumers: Vec<Vec<usize>> = vec![vec![]; g.tensors.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for &t in &n.inputs {
                consumers[t].push(i);
            }
        }
        let buffer = |t: usize| plan.memory.buffer_of[t];
        let mut f = Fusions::default();
        for (i, n) in g.nodes.iter().enumerate() {
            let users = &consumers[n.output];
            match &n.op {
                Op::Rope { .. } => {
                    if let [u] = users[..]
                        && let Op::Attention { layer, .. } = g.nodes[u].op
                    {
                        f.rope_kv.insert(i, layer);
                    }
                }
                Op::Linear { .. } => {
                    let [u] = users[..] else { continue };
                    if !matches!(g.nodes[u].op, Op::Add) {
                        continue;
                    }
                    let add = &g.nodes[u];
                    let residual = if add.inputs[0] == n.output { add.inputs[1] } else { add.inputs[0] };
                    // One dispatch may not read and write the same buffer.
                    let out = buffer(add.output);
                    if out != buffer(n.inputs[0]) && out != buffer(residual) {
                        f.residual.insert(i, ResidualFusion { residual, output: add.output });
                        f.fused_adds.insert(u, i);
                    }
                }
                _ => {}
            }
        }
        // The GEMV fusions need the weight in one binding, and x2 free (no residual add).
        let single = |w: usize| params[w].chunks.len() == 1;
        for (i, n) in g.nodes.iter().enumerate() {
            let Op::Linear { weight, n: cols, .. } = n.op else { continue };
            if f.residual.contains_key(&i) || !single(weight) {
                continue;
            }
            let producer = g.nodes.iter().position(|p| p.output == n.inputs[0]);
            let at = |id: usize| plan.order.iter().position(|&o| o == id);
            // Adjacent in the order, so nothing can reuse the norm's input buffer in between.
            let folds = |p: usize| {
                matches!(g.nodes[p].op, Op::RmsNorm { .. }) && consumers[n.inputs[0]].len() == 1 && at(p).map(|a| a + 1) == at(i)
            };
            if let Some(p) = producer.filter(|&p| folds(p) && buffer(g.nodes[p].inputs[0]) != buffer(n.output)) {
                f.norm.insert(i, p);
            }
            if let [u] = consumers[n.output][..] {
                let act = &g.nodes[u];
                let reads_x = buffer(act.output) == buffer(n.inputs[0])
                    || f.norm.get(&i).is_some_and(|&p| buffer(act.output) == buffer(g.nodes[p].inputs[0]));
                if matches!(act.op, Op::SwiGlu { ffn } if 2 * ffn == cols) && !reads_x {
                    f.swiglu.insert(i, u);
                }
                // Only a rope that also writes the KV cache: the attention then reads it all.
                if matches!(act.op, Op::Rope { .. }) && f.rope_kv.contains_key(&u) && !reads_x {
                    f.rope.insert(i, u);
                }
            }
        }
        f
    }
}

/// One dispatch of a step: kernel, bind group, grid, index of its node in plan order.
type Command<'a> = (&'static str, &'a wgpu::BindGroup, [u32; 3], usize);

/// Timestamp queries around every node's compute pass.
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
}

pub struct WgpuExecutor {
    ctx: GpuContext,
    graph: Graph,
    plan: Plan,
    opts: ExecutorOptions,
    table: DataflowTable,
    unified_max: UnifiedMax,
    layout: wgpu::BindGroupLayout,
    pipelines: HashMap<&'static str, wgpu::ComputePipeline>,
    params: Vec<DeviceParam>,
    rope_table: wgpu::Buffer,
    kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    scratch: wgpu::Buffer,
    flags: wgpu::Buffer,
    step_uniform: wgpu::Buffer,
    placeholders: [wgpu::Buffer; 6],
    max_out: usize,
    // Sized for `cap_m` tokens; rebuilt (with every bind group) when a step needs more.
    cap_m: usize,
    step_data: wgpu::Buffer,
    activations: Vec<wgpu::Buffer>,
    node_uniforms: Option<wgpu::Buffer>,
    work: Vec<Work>,
    argmax_group: Option<wgpu::BindGroup>,
    logits_staging: wgpu::Buffer,
    /// Read-back of [recomputed rows, ids..., pad, step start, step end]; two, so one step
    /// can be read while the next runs.
    ids_staging: [wgpu::Buffer; 2],
    /// Timestamps around a whole step (two per staging slot), when the device has them.
    step_queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    timing: StepTiming,
    /// The device sampler and its bind group (logits -> flags), made at the first
    /// non-greedy decode; dropped when the activations are reallocated.
    sampler: Option<(GpuSampler, wgpu::BindGroup)>,
    slot_timed: [bool; 2],
    /// The last step's shape; its node records are written out only when asked for.
    shape: Option<StepShape>,
    records: std::cell::OnceCell<Vec<NodeRecord>>,
    /// Per-node device times of the last step (when profiling) and rows it recomputed.
    node_micros: Vec<f64>,
    recomputed: Option<u32>,
    profiler: Option<Profiler>,
    /// Lower with fusions (KV write into rope, residual adds into linear epilogues, and on
    /// GEMV steps RMSNorm, SwiGLU and RoPE into the linear layers around them).
    fuse: bool,
}

fn storage(read_only: bool, binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }
}

fn oom(what: &str, bytes: u64) -> Error {
    Error::OutOfMemory { backend: "wgpu".into(), what: what.into(), bytes }
}

impl WgpuExecutor {
    pub fn new(
        graph: &Graph,
        plan: &Plan,
        params: Vec<HostTensor>,
        opts: ExecutorOptions,
        adapter: Option<&str>,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let ctx = GpuContext::new(adapter, precision)?;
        let device = &ctx.device;
        let c = &graph.config;

        // One layout for every kernel (see shaders/common.wgsl).
        let mut entries = vec![uniform(0), storage(true, 1), uniform(2)];
        entries.extend([storage(true, 3), storage(true, 4), storage(true, 5)]);
        entries.extend((6..=10).map(|b| storage(false, b)));
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("fdpp"), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("fdpp"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut pipelines = HashMap::new();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        for &(family, src, entry_points) in shaders::FAMILIES {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family),
                source: wgpu::ShaderSource::Wgsl(shaders::source(src, ctx.f16_weights, ctx.subgroups).into()),
            });
            for &entry in entry_points {
                let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                });
                pipelines.insert(entry, p);
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend { backend: "wgpu".into(), op: "compiling shaders".into(), reason: e.to_string() });
        }

        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let max_binding = ctx.max_binding();
        let weight_binding = opts.binding_limit.map_or(max_binding, |l| l.min(max_binding));
        let elem = if ctx.f16_weights { 2 } else { 4 };
        let mut device_params = Vec::with_capacity(params.len());
        for (p, t) in graph.params.iter().zip(params) {
            let cols: usize = p.shape[1..].iter().product();
            let values = t.into_f32();
            let rows_per = ((weight_binding as usize) / (cols * elem)).max(1);
            let mut chunks = Vec::new();
            let mut r0 = 0;
            while r0 < p.shape[0] {
                let rows = rows_per.min(p.shape[0] - r0);
                chunks.push((ctx.upload_weights(&p.name, &values[r0 * cols..(r0 + rows) * cols]), r0, rows));
                r0 += rows;
            }
            let vector_f32 = (p.shape.len() == 1).then(|| {
                let mut padded = values.clone();
                padded.resize(values.len().next_multiple_of(4), 0.0); // whole vec4s (x2)
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&p.name),
                    contents: bytemuck::cast_slice(&padded),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            });
            device_params.push(DeviceParam { chunks, vector_f32 });
        }

        // (cos, sin) per position and rotary pair, computed exactly as the CPU backend does.
        let half = c.head_dim / 2;
        let inv = rope_inv_freq(c.rope_theta, c.head_dim);
        let mut table = Vec::with_capacity(opts.max_context * half * 2 + 4);
        for pos in 0..opts.max_context {
            for f in &inv {
                let (s, co) = (pos as f32 * f).sin_cos();
                table.extend([co, s]);
            }
        }
        table.resize(table.len().next_multiple_of(4), 0.0); // whole vec4s (x2)
        let rope_table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rope table"),
            contents: bytemuck::cast_slice(&table),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let kv_bytes = (opts.max_seqs * opts.max_context * c.kv_dim() * 4) as u64;
        if kv_bytes > max_binding {
            return Err(oom(&format!("KV cache of one layer ({} sequences x {} positions)", opts.max_seqs, opts.max_context), kv_bytes));
        }
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: size.max(16), usage, mapped_at_creation: false })
        };
        let kv = (0..c.num_layers)
            .map(|_| (buffer("k cache", kv_bytes, wgpu::BufferUsages::STORAGE), buffer("v cache", kv_bytes, wgpu::BufferUsages::STORAGE)))
            .collect();
        // Split-KV steps hold one token per sequence.
        let split_rows = opts.max_seqs.min(SPLIT_MAX_M);
        let scratch_bytes = (split_rows * c.num_heads * MAX_ATTN_CHUNKS * (c.head_dim + 1) * 4) as u64;
        let scratch = buffer("attention partials", scratch_bytes, wgpu::BufferUsages::STORAGE);
        let max_out = opts.max_seqs.max(1);
        let flag_words = 1 + max_out + c.num_layers * SPLIT_MAX_M * c.num_heads;
        let flags = buffer(
            "flags",
            (flag_words * 4) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        );
        let step_uniform =
            buffer("step", std::mem::size_of::<StepUniform>() as u64, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
        let ph = |l| buffer(l, 16, wgpu::BufferUsages::STORAGE);
        let placeholders = [ph("x"), ph("x2"), ph("w"), ph("y"), ph("kc"), ph("vc")];
        let logits_staging =
            buffer("logits readback", (max_out * c.vocab_size * 4) as u64, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let readback = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let ids_staging = [
            buffer("ids readback", ids_readback_bytes(max_out) + 16, readback),
            buffer("ids readback", ids_readback_bytes(max_out) + 16, readback),
        ];
        let step_queries = ctx.timestamps.then(|| {
            let q =
                device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("step time"), ty: wgpu::QueryType::Timestamp, count: 4 });
            (
                q,
                buffer(
                    "step time",
                    2 * wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT,
                    wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                ),
            )
        });
        let step_data = buffer("step data", 16, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(oom(&format!("weights and caches ({e})"), 0));
        }
        let table = DataflowTable::wgpu_default();
        Ok(WgpuExecutor {
            ctx,
            graph: graph.clone(),
            plan: plan.clone(),
            opts,
            table,
            unified_max: UnifiedMax::default(),
            layout,
            pipelines,
            params: device_params,
            rope_table,
            kv,
            scratch,
            flags,
            step_uniform,
            placeholders,
            max_out,
            cap_m: 0,
            step_data,
            activations: vec![],
            node_uniforms: None,
            work: vec![],
            argmax_group: None,
            logits_staging,
            ids_staging,
            step_queries,
            timing: StepTiming::default(),
            sampler: None,
            slot_timed: [false; 2],
            shape: None,
            records: Default::default(),
            node_micros: vec![],
            recomputed: None,
            profiler: None,
            fuse: true,
        })
    }

    /// Turns the fusions off (to check them against the unfused sequence) or on.
    pub fn set_fusion(&mut self, on: bool) {
        self.fuse = on;
        self.cap_m = 0; // rebuild bind groups on the next step
    }

    pub fn set_unified_max(&mut self, u: UnifiedMax) {
        self.unified_max = u;
        self.cap_m = 0; // node uniforms carry phi: rebuild on the next step
    }

    fn flag_offset(&self, layer: usize) -> u32 {
        (1 + self.max_out + layer * SPLIT_MAX_M * self.graph.config.num_heads) as u32
    }

    /// (Re)allocates activations for `m` tokens and builds every bind group.
    fn ensure_capacity(&mut self, m: usize) -> Result<()> {
        if m <= self.cap_m {
            return Ok(());
        }
        let cap = m.next_multiple_of(64);
        let device = &self.ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        // Whole vec4s: the kernels see activations as array<vec4<f32>>.
        let sizes: Vec<usize> =
            self.plan.memory.buffer_elements(&self.graph.tensors, cap, self.max_out).iter().map(|e| e.next_multiple_of(4) * 4).collect();
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        self.activations = sizes
            .iter()
            .map(|&s| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation"),
                    size: s.max(16) as u64,
                    usage,
                    mapped_at_creation: false,
                })
            })
            .collect();
        self.step_data = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step data"),
            size: (4 * cap * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(oom(&format!("activations for {cap} tokens ({e})"), sizes.iter().sum::<usize>() as u64));
        }
        self.cap_m = cap;
        self.sampler = None;
        self.build_work();
        Ok(())
    }

    fn build_work(&mut self) {
        let g = &self.graph;
        let c = &g.config;
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as usize;
        let stride = std::mem::size_of::<NodeUniform>().next_multiple_of(align);
        // First collect every node uniform, then create bind groups at their offsets.
        let mut uniforms: Vec<NodeUniform> = Vec::new();
        let mut add = |u: NodeUniform| {
            uniforms.push(u);
            uniforms.len() - 1
        };
        let um = self.unified_max;
        let base = |rows_out: bool| NodeUniform { rows: rows_out as u32, max_ctx: self.opts.max_context as u32, ..Default::default() };
        enum Plan2 {
            Embedding(Vec<usize>),
            Single(usize),
            /// Uniforms of every weight chunk, and of the GEMV-fused variant.
            Linear(Vec<usize>, Option<usize>),
            Attention(usize),
        }
        let fusion = if self.fuse { Fusions::find(g, &self.plan, &self.params) } else { Fusions::default() };
        let mut plans = Vec::new();
        for &ni in &self.plan.order {
            let node = &g.nodes[ni];
            let out = &g.tensors[node.output];
            let out_rows = out.shape[0] == Dim::Out;
            let width = row_width(&out.shape) as u32;
            plans.push(match &node.op {
                Op::Embedding { table } => Plan2::Embedding(
                    self.params[*table]
                        .chunks
                        .iter()
                        .map(|&(_, r0, rows)| add(NodeUniform { n: rows as u32, k: width, n_offset: r0 as u32, ..base(false) }))
                        .collect(),
                ),
                Op::RmsNorm { eps, .. } => Plan2::Single(add(NodeUniform { k: width, eps: *eps, ..base(out_rows) })),
                Op::Linear { weight, n, k, .. } => {
                    let plain: Vec<usize> = self.params[*weight]
                        .chunks
                        .iter()
                        .map(|&(_, r0, rows)| {
                            let mode = if fusion.residual.contains_key(&ni) { MODE_RESIDUAL } else { 0 };
                            add(NodeUniform { n: rows as u32, k: *k as u32, n_offset: r0 as u32, ldy: *n as u32, mode, ..base(out_rows) })
                        })
                        .collect();
                    let norm = fusion.norm.get(&ni).map(|&p| match g.nodes[p].op {
                        Op::RmsNorm { eps, .. } => eps,
                        _ => unreachable!("norm fusions start at an RMSNorm"),
                    });
                    let swiglu = fusion.swiglu.contains_key(&ni);
                    let rope = fusion.rope.get(&ni).map(|&r| &g.nodes[r].op);
                    let fused = (norm.is_some() || swiglu || rope.is_some()).then(|| {
                        let bit = |on: bool, b: u32| if on { b } else { 0 };
                        let mode = bit(norm.is_some(), MODE_NORM) | bit(swiglu, MODE_SWIGLU) | bit(rope.is_some(), MODE_ROPE);
                        let ldy = if swiglu { *n / 2 } else { *n };
                        let u =
                            NodeUniform { n: *n as u32, k: *k as u32, ldy: ldy as u32, mode, eps: norm.unwrap_or(0.0), ..base(out_rows) };
                        add(match rope {
                            Some(Op::Rope { head_dim, num_heads, num_kv_heads, .. }) => {
                                NodeUniform { heads: *num_heads as u32, kv_heads: *num_kv_heads as u32, head_dim: *head_dim as u32, ..u }
                            }
                            _ => u,
                        })
                    });
                    Plan2::Linear(plain, fused)
                }
                Op::Rope { head_dim, num_heads, num_kv_heads, .. } => Plan2::Single(add(NodeUniform {
                    n: width,
                    heads: *num_heads as u32,
                    kv_heads: *num_kv_heads as u32,
                    head_dim: *head_dim as u32,
                    mode: fusion.rope_kv.contains_key(&ni) as u32,
                    ..base(false)
                })),
                Op::Attention { layer, num_heads, num_kv_heads, head_dim, scale } => {
                    let u = NodeUniform {
                        heads: *num_heads as u32,
                        kv_heads: *num_kv_heads as u32,
                        head_dim: *head_dim as u32,
                        flag_offset: self.flag_offset(*layer),
                        scale: *scale,
                        phi: um.phi,
                        lo: um.lo,
                        hi: um.hi,
                        ..base(false)
                    };
                    Plan2::Attention(add(u))
                }
                Op::SwiGlu { .. } | Op::Add | Op::SelectRows => Plan2::Single(add(NodeUniform { n: width, ..base(out_rows) })),
            });
        }
        let argmax_u = add(NodeUniform { n: c.vocab_size as u32, ..base(true) });
        let bytes: Vec<u8> = uniforms
            .iter()
            .flat_map(|u| {
                let mut b = bytemuck::bytes_of(u).to_vec();
                b.resize(stride, 0);
                b
            })
            .collect();
        let ubuf = self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("node uniforms"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let act = |t: usize| &self.activations[self.plan.memory.buffer_of[t].expect("activation")];
        let bind = |u: usize, b: Binds| self.bind_group(&ubuf, u * stride, b);
        // The K and V caches a rope node writes, when it writes them.
        let cache_of = |rope: usize| fusion.rope_kv.get(&rope).map(|&layer| (&self.kv[layer].0, &self.kv[layer].1)).unzip();
        let mut work = Vec::new();
        for (&ni, p) in self.plan.order.iter().zip(plans) {
            let node = &g.nodes[ni];
            // A linear layer with the residual add fused writes where the add would have.
            let y = Some(act(fusion.residual.get(&ni).map_or(node.output, |r| r.output)));
            let x = node.inputs.first().filter(|&&t| t != g.tokens).map(|&t| act(t));
            let out_rows = g.tensors[node.output].shape[0] == Dim::Out;
            let width = row_width(&g.tensors[node.output].shape);
            work.push(match (&node.op, p) {
                (Op::Embedding { table }, Plan2::Embedding(us)) => Work::Embedding {
                    groups: self.params[*table]
                        .chunks
                        .iter()
                        .zip(us)
                        .map(|((buf, _, _), u)| bind(u, Binds { w: Some(buf), y, ..Default::default() }))
                        .collect(),
                    hidden: width,
                },
                (Op::RmsNorm { weight, .. }, Plan2::Single(u)) => Work::RmsNorm {
                    group: bind(u, Binds { x, w: Some(&self.params[*weight].chunks[0].0), y, ..Default::default() }),
                    out_rows,
                },
                (Op::Linear { weight, n, k, .. }, Plan2::Linear(us, fused)) => Work::Linear {
                    gemv_fused: fused.map(|u| {
                        let norm = fusion.norm.get(&ni).map(|&p| (p, &g.nodes[p]));
                        let swiglu = fusion.swiglu.get(&ni).map(|&a| (a, &g.nodes[a]));
                        let rope = fusion.rope.get(&ni).map(|&r| (r, &g.nodes[r]));
                        let x = Some(act(norm.map_or(node.inputs[0], |(_, p)| p.inputs[0])));
                        let x2 = norm.map(|(_, p)| match p.op {
                            Op::RmsNorm { weight, .. } => self.params[weight].vector_f32.as_ref().expect("norm weights are vectors"),
                            _ => unreachable!(),
                        });
                        let y = Some(act(swiglu.or(rope).map_or(node.output, |(_, a)| a.output)));
                        let (kc, vc) = rope.map_or((None, None), |(r, _)| cache_of(r));
                        let position = |id: usize| self.plan.order.iter().position(|&o| o == id).expect("every node is in the order");
                        let mut folds = Vec::new();
                        folds.extend(norm.map(|(p, _)| (position(p), "prologue")));
                        folds.extend(swiglu.or(rope).map(|(a, _)| (position(a), "epilogue")));
                        // SwiGLU and RoPE: a lane group's two columns make one pair.
                        let pairs = swiglu.is_some() || rope.is_some();
                        let cols = if pairs { *n / 2 } else { *n };
                        let per_group = if pairs { GV_COLS / 2 } else { GV_COLS };
                        let scratch = rope.map(|_| &self.rope_table);
                        GemvFused {
                            group: bind(u, Binds { x, x2, w: Some(&self.params[*weight].chunks[0].0), y, kc, vc, scratch }),
                            workgroups: cols.div_ceil(per_group),
                            folds,
                        }
                    }),
                    groups: self.params[*weight]
                        .chunks
                        .iter()
                        .zip(us)
                        .map(|((buf, _, rows), u)| {
                            let x2 = fusion.residual.get(&ni).map(|r| act(r.residual));
                            (bind(u, Binds { x, x2, w: Some(buf), y, ..Default::default() }), *rows)
                        })
                        .collect(),
                    n: *n,
                    k: *k,
                    out_rows,
                    fused_add: fusion.residual.contains_key(&ni),
                },
                (Op::Rope { .. }, Plan2::Single(u)) => {
                    let (kc, vc) = cache_of(ni);
                    Work::Rope {
                        group: bind(u, Binds { x, x2: Some(&self.rope_table), y, kc, vc, ..Default::default() }),
                        width,
                        writes_kv: kc.is_some(),
                    }
                }
                (Op::Attention { layer, .. }, Plan2::Attention(u)) => {
                    let (kc, vc) = (&self.kv[*layer].0, &self.kv[*layer].1);
                    let b = || bind(u, Binds { x, y, kc: Some(kc), vc: Some(vc), ..Default::default() });
                    let kv_write = (!fusion.rope_kv.values().any(|l| l == layer)).then(b);
                    Work::Attention { kv_write, group: b(), kv_dim: c.kv_dim() }
                }
                (Op::Add, Plan2::Single(_)) if fusion.fused_adds.contains_key(&ni) => {
                    Work::Fused { into: g.nodes[fusion.fused_adds[&ni]].name.clone() }
                }
                (Op::Add, Plan2::Single(u)) => {
                    let x2 = Some(act(node.inputs[1]));
                    Work::Rows { kernel: "add", group: bind(u, Binds { x, x2, y, ..Default::default() }), width, out_rows }
                }
                (Op::SwiGlu { .. }, Plan2::Single(u)) => {
                    Work::Rows { kernel: "swiglu", group: bind(u, Binds { x, y, ..Default::default() }), width, out_rows }
                }
                (Op::SelectRows, Plan2::Single(u)) => {
                    Work::Rows { kernel: "select_rows", group: bind(u, Binds { x, y, ..Default::default() }), width, out_rows: true }
                }
                _ => unreachable!("plan and op kinds are built together"),
            });
        }
        self.argmax_group = Some(bind(argmax_u, Binds { x: Some(act(g.logits)), ..Default::default() }));
        self.work = work;
        self.node_uniforms = Some(ubuf);
    }

    fn bind_group(&self, ubuf: &wgpu::Buffer, offset: usize, b: Binds) -> wgpu::BindGroup {
        let p = &self.placeholders;
        let buffers = [
            b.x.unwrap_or(&p[0]),
            b.x2.unwrap_or(&p[1]),
            b.w.unwrap_or(&p[2]),
            b.y.unwrap_or(&p[3]),
            b.kc.unwrap_or(&p[4]),
            b.vc.unwrap_or(&p[5]),
            b.scratch.unwrap_or(&self.scratch),
            &self.flags,
        ];
        let mut entries = vec![
            wgpu::BindGroupEntry { binding: 0, resource: self.step_uniform.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: self.step_data.as_entire_binding() },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: ubuf,
                    offset: offset as u64,
                    size: std::num::NonZeroU64::new(std::mem::size_of::<NodeUniform>() as u64),
                }),
            },
        ];
        for (i, buf) in buffers.into_iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: 3 + i as u32, resource: buf.as_entire_binding() });
        }
        self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &self.layout, entries: &entries })
    }

    /// The dataflow table's choice, within what the GEMV kernel holds.
    fn linear_impl(&self, n: usize, k: usize, rows: usize) -> LinearImpl {
        match self.table.implementation(n, k, rows) {
            LinearImpl::Gemv if rows > GEMV_MAX_M => LinearImpl::FlatGemm,
            imp => imp,
        }
    }

    /// `linear_impl` with the reason.
    fn linear_choice(&self, n: usize, k: usize, rows: usize) -> crate::dataflow::Choice {
        let mut choice = self.table.choose(n, k, rows);
        if choice.implementation != self.linear_impl(n, k, rows) {
            choice.implementation = LinearImpl::FlatGemm;
            choice.reason.push_str(&format!("; GEMV holds at most {GEMV_MAX_M} rows"));
        }
        choice
    }

    /// Nodes folded into a fused GEMV on a step of this shape: plan-order index -> (the
    /// linear node doing it, where). GEMV steps take the fused variants.
    fn folded(&self, s: &StepShape) -> HashMap<usize, (usize, &'static str)> {
        let mut folded = HashMap::new();
        for (&ni, work) in self.plan.order.iter().zip(&self.work) {
            if let Work::Linear { gemv_fused: Some(f), n, k, out_rows, .. } = work
                && self.linear_impl(*n, *k, s.rows(*out_rows)) == LinearImpl::Gemv
            {
                folded.extend(f.folds.iter().map(|&(idx, place)| (idx, (ni, place))));
            }
        }
        folded
    }

    /// The dispatches of a step: kernel, bind group, grid, plan-order index of the node.
    fn dispatches(&self, s: &StepShape) -> Vec<Command<'_>> {
        let heads = self.graph.config.num_heads;
        let folded = self.folded(s);
        let mut cmds: Vec<Command> = Vec::with_capacity(self.work.len());
        for (idx, work) in self.work.iter().enumerate() {
            if folded.contains_key(&idx) {
                continue;
            }
            let mut dispatch = |kernel: &'static str, group, x: usize, y: usize, z: usize| {
                // Fold grids wider than the per-dimension limit into y (see flat_id).
                let (x, y) = if x > 65535 { (65535, y * x.div_ceil(65535)) } else { (x, y) };
                cmds.push((kernel, group, [x as u32, y as u32, z as u32], idx));
            };
            match work {
                Work::Embedding { groups, hidden } => groups.iter().for_each(|gr| dispatch("embedding", gr, hidden.div_ceil(64), s.m, 1)),
                Work::RmsNorm { group, out_rows } => dispatch("rms_norm", group, 1, s.rows(*out_rows), 1),
                Work::Linear { groups, gemv_fused, n, k, out_rows, .. } => {
                    let rows = s.rows(*out_rows);
                    match (self.linear_impl(*n, *k, rows), gemv_fused) {
                        (LinearImpl::Gemv, Some(f)) => dispatch(gemv_kernel(*k), &f.group, f.workgroups, 1, 1),
                        (imp, _) => {
                            for (gr, chunk_rows) in groups {
                                match imp {
                                    LinearImpl::Gemv => dispatch(gemv_kernel(*k), gr, chunk_rows.div_ceil(GV_COLS), 1, 1),
                                    LinearImpl::FlatGemm => dispatch("flat_gemm", gr, chunk_rows.div_ceil(FB_COLS), rows.div_ceil(FB_M), 1),
                                    LinearImpl::Gemm => dispatch("gemm", gr, chunk_rows.div_ceil(64), rows.div_ceil(64), 1),
                                }
                            }
                        }
                    }
                }
                Work::Rope { group, width, .. } => dispatch("rope", group, width.div_ceil(64), s.m, 1),
                Work::Fused { .. } => {}
                Work::Attention { kv_write, group, kv_dim } => {
                    if let Some(kw) = kv_write {
                        dispatch("kv_write", kw, kv_dim.div_ceil(64), s.m, 1);
                    }
                    if s.split {
                        dispatch("attn_split", group, s.chunks, heads, s.m);
                        dispatch("attn_combine", group, heads, s.m, 1);
                    } else {
                        dispatch("attn_online", group, heads, s.m, 1);
                    }
                }
                Work::Rows { kernel, group, width, out_rows } => dispatch(kernel, group, width.div_ceil(64), s.rows(*out_rows), 1),
            }
        }
        cmds
    }

    /// What each node ran in a step of this shape, and why (with the step's device times
    /// and recomputed rows where they were read back).
    fn describe_step(&self, s: &StepShape) -> Vec<NodeRecord> {
        let folded = self.folded(s);
        let um = self.unified_max;
        let mut records = Vec::with_capacity(self.work.len());
        for (idx, (&ni, work)) in self.plan.order.iter().zip(&self.work).enumerate() {
            let node = &self.graph.nodes[ni];
            let (implementation, reason) = match work {
                _ if folded.contains_key(&idx) => {
                    let (linear, place) = folded[&idx];
                    ("fused".to_string(), format!("done in the GEMV {place} of {}", self.graph.nodes[linear].name))
                }
                Work::Embedding { .. } => ("gather".to_string(), String::new()),
                Work::RmsNorm { .. } => ("workgroup per row".into(), String::new()),
                Work::Linear { gemv_fused, n, k, out_rows, fused_add, .. } => {
                    let mut choice = self.linear_choice(*n, *k, s.rows(*out_rows));
                    if let (LinearImpl::Gemv, Some(f)) = (choice.implementation, gemv_fused) {
                        for (idx, place) in &f.folds {
                            let what = self.graph.nodes[self.plan.order[*idx]].op.kind_name();
                            choice.reason.push_str(&format!("; {what} fused into the {place}"));
                        }
                    }
                    if choice.implementation == LinearImpl::Gemv && gemv_kernel(*k) == "gemv_split_k" {
                        choice.reason.push_str(&format!("; K = {k} split over two lane groups per column pair"));
                    }
                    if *fused_add {
                        choice.reason.push_str("; residual add fused into the epilogue");
                    }
                    (choice.implementation.label().to_string(), choice.reason)
                }
                Work::Rope { writes_kv, .. } => {
                    ("host angle table".into(), if *writes_kv { "KV cache write fused in".into() } else { String::new() })
                }
                Work::Fused { into } => ("fused".into(), format!("residual add done in the epilogue of {into}")),
                Work::Attention { .. } if s.split => {
                    let mut reason = format!(
                        "decode step ({} sequences), {} chunk(s) of {} keys; phi = {}, safe range ({}, {}); flagged rows recomputed",
                        s.m, s.chunks, s.per_chunk, um.phi, um.lo, um.hi
                    );
                    if let Some(n) = self.recomputed {
                        reason.push_str(&format!("; {n} row(s) recomputed this step (all layers)"));
                    }
                    ("split-KV unified max".into(), reason)
                }
                Work::Attention { .. } => ("online softmax".into(), format!("{} tokens of {} sequence(s): prefill", s.m, s.sequences)),
                Work::Rows { .. } => ("elementwise".into(), String::new()),
            };
            // A node that ran inside another has no time of its own (its pass was empty).
            let ran = !folded.contains_key(&idx) && !matches!(work, Work::Fused { .. });
            let micros = self.node_micros.get(idx).copied().filter(|_| ran);
            records.push(NodeRecord { node: node.name.clone(), op: node.op.kind_name().into(), implementation, reason, micros });
        }
        records
    }

    /// Records and submits one step. Unless `pick` is `Logits`, the device picks the next
    /// ids and only they are read back, into staging `slot`. With `feedback`, the step's
    /// tokens are the ids the previous step picked (still on the device), not `input.tokens`.
    fn run(&mut self, input: &StepInput, pick: Pick, slot: usize, feedback: bool) -> Result<wgpu::SubmissionIndex> {
        let started = std::time::Instant::now();
        let vocab = self.graph.config.vocab_size;
        validate_step(input, &self.opts, vocab)?;
        let (m, n_out) = (input.m(), input.out_rows.len());
        if n_out > self.max_out {
            return Err(Error::InvalidArgument(format!("{n_out} output rows but the wgpu backend was sized for {}", self.max_out)));
        }
        self.ensure_capacity(m)?;
        let max_pos = *input.positions.iter().max().expect("validated: m > 0");
        let mut distinct = input.seqs.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let split = distinct.len() == m && m <= SPLIT_MAX_M;
        let step = StepUniform::new(m, n_out, self.cap_m, max_pos + 1);
        let (chunks, per_chunk) = (step.attn_chunks as usize, step.attn_chunk_keys as usize);
        self.ctx.queue.write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(&step));
        let mut data = vec![0u32; 4 * self.cap_m];
        for i in 0..m {
            data[i] = input.tokens[i];
            data[self.cap_m + i] = input.positions[i] as u32;
            data[2 * self.cap_m + i] = input.seqs[i] as u32;
        }
        for (r, &row) in input.out_rows.iter().enumerate() {
            data[3 * self.cap_m + r] = row as u32;
        }
        self.ctx.queue.write_buffer(&self.step_data, 0, bytemuck::cast_slice(&data));

        let mut encoder = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        if feedback {
            encoder.copy_buffer_to_buffer(&self.flags, 4, &self.step_data, 0, (m * 4) as u64);
        }
        encoder.clear_buffer(&self.flags, 0, None);
        let shape = StepShape { m, n_out, sequences: distinct.len(), split, chunks, per_chunk };
        let cmds = self.dispatches(&shape);
        let encode = |pass: &mut wgpu::ComputePass, (kernel, group, [x, y, z], _): &Command| {
            pass.set_pipeline(&self.pipelines[kernel]);
            pass.set_bind_group(0, *group, &[]);
            pass.dispatch_workgroups(*x, *y, *z);
        };
        let argmax = self.argmax_group.as_ref().expect("built with the work");
        let pick_ids = |pass: &mut wgpu::ComputePass| match pick {
            Pick::Logits => {}
            Pick::Argmax => encode(pass, &("argmax", argmax, [1, n_out as u32, 1], usize::MAX)),
            Pick::Sample => {
                let (sampler, group) = self.sampler.as_ref().expect("decode prepared the sampler");
                sampler.encode(pass, group, n_out);
            }
        };
        match &self.profiler {
            None => {
                let timestamp_writes = self.step_queries.as_ref().map(|(q, _)| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(2 * slot as u32),
                    end_of_pass_write_index: Some(2 * slot as u32 + 1),
                });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("step"), timestamp_writes });
                cmds.iter().for_each(|cmd| encode(&mut pass, cmd));
                pick_ids(&mut pass);
            }
            Some(p) => {
                for idx in 0..self.work.len() {
                    let writes = wgpu::ComputePassTimestampWrites {
                        query_set: &p.queries,
                        beginning_of_pass_write_index: Some(2 * idx as u32),
                        end_of_pass_write_index: Some(2 * idx as u32 + 1),
                    };
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
                    cmds.iter().filter(|c| c.3 == idx).for_each(|cmd| encode(&mut pass, cmd));
                }
                pick_ids(&mut encoder.begin_compute_pass(&Default::default()));
                let n = 2 * self.work.len() as u32;
                encoder.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
                encoder.copy_buffer_to_buffer(&p.resolve, 0, &p.staging, 0, n as u64 * 8);
            }
        }
        if pick == Pick::Logits {
            let lb = &self.activations[self.plan.memory.buffer_of[self.graph.logits].expect("logits")];
            encoder.copy_buffer_to_buffer(lb, 0, &self.logits_staging, 0, (n_out * vocab * 4) as u64);
        }
        let staging = &self.ids_staging[slot];
        encoder.copy_buffer_to_buffer(&self.flags, 0, staging, 0, ((1 + n_out) * 4) as u64);
        let timed = self.profiler.is_none() && self.step_queries.is_some();
        if let (true, Some((q, resolve))) = (timed, &self.step_queries) {
            let at = slot as u64 * wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT;
            encoder.resolve_query_set(q, 2 * slot as u32..2 * slot as u32 + 2, resolve, at);
            encoder.copy_buffer_to_buffer(resolve, at, staging, ids_readback_bytes(self.max_out), 16);
        }
        let index = self.ctx.queue.submit([encoder.finish()]);
        self.shape = Some(shape);
        self.records = Default::default();
        self.node_micros.clear();
        self.recomputed = None;
        self.timing = StepTiming { host_micros: Some(started.elapsed().as_secs_f64() * 1e6), device_micros: None };
        self.slot_timed[slot] = timed;
        Ok(index)
    }

    /// Per-node device times of the last step, when profiling.
    fn read_profile(&mut self) -> Result<()> {
        let Some(p) = &self.profiler else { return Ok(()) };
        let n = 2 * self.work.len();
        let bytes = self.read(&p.staging, n * 8)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period = self.ctx.queue.get_timestamp_period() as f64;
        self.node_micros = (0..self.work.len()).map(|i| ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1000.0).collect();
        Ok(())
    }

    fn read(&self, buffer: &wgpu::Buffer, bytes: usize) -> Result<Vec<u8>> {
        self.read_after(buffer, bytes, None)
    }

    /// Reads `buffer` once the submission `after` has finished (every submission if `None`).
    fn read_after(&self, buffer: &wgpu::Buffer, bytes: usize, after: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
        let slice = buffer.slice(..bytes as u64);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.ctx.device.poll(wgpu::PollType::Wait { submission_index: after, timeout: None }).map_err(|e| Error::Backend {
            backend: "wgpu".into(),
            op: "waiting for the step".into(),
            reason: e.to_string(),
        })?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::Backend { backend: "wgpu".into(), op: "reading back".into(), reason: e.to_string() })?
            .to_vec();
        buffer.unmap();
        Ok(out)
    }

    /// The ids (and the step's device time) in staging `slot`, once submission `after` is done.
    fn read_ids(&mut self, slot: usize, n_out: usize, after: Option<wgpu::SubmissionIndex>) -> Result<Vec<u32>> {
        let at = ids_readback_bytes(self.max_out) as usize;
        let bytes = self.read_after(&self.ids_staging[slot], at + 16, after)?;
        let words: Vec<u32> = bytemuck::cast_slice(&bytes[..(1 + n_out) * 4]).to_vec();
        if self.slot_timed[slot] {
            let ticks: [u64; 2] = bytemuck::pod_read_unaligned(&bytes[at..at + 16]);
            let period = self.ctx.queue.get_timestamp_period() as f64;
            self.timing.device_micros = Some(ticks[1].saturating_sub(ticks[0]) as f64 * period / 1000.0);
        }
        self.recomputed = Some(words[0]);
        Ok(words[1..].to_vec())
    }
}

impl Executor for WgpuExecutor {
    fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn step(&mut self, input: &StepInput) -> Result<Vec<f32>> {
        self.run(input, Pick::Logits, 0, false)?;
        let n_out = input.out_rows.len();
        let vocab = self.graph.config.vocab_size;
        let bytes = self.read(&self.logits_staging, n_out * vocab * 4)?;
        self.read_ids(0, 0, None)?;
        self.read_profile()?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    fn step_greedy(&mut self, input: &StepInput) -> Result<Vec<u32>> {
        self.run(input, Pick::Argmax, 0, false)?;
        let ids = self.read_ids(0, input.out_rows.len(), None)?;
        self.read_profile()?;
        Ok(ids)
    }

    fn decode(&mut self, first: &StepInput, steps: usize, sampler: &mut Sampler, on_ids: &mut dyn FnMut(&[u32]) -> bool) -> Result<()> {
        check_decode(first)?;
        let pick = if sampler.params().is_greedy() { Pick::Argmax } else { Pick::Sample };
        // Per-node timing reads every step back before the next: no overlap to keep. Top-k
        // beyond what the device kernel holds samples on the host.
        if self.profiler.is_some() || (pick == Pick::Sample && !GpuSampler::supports(sampler.params())) {
            return decode_one_by_one(self, first, steps, sampler, on_ids);
        }
        self.ensure_capacity(first.m())?;
        if pick == Pick::Sample && self.sampler.is_none() {
            let s = GpuSampler::new(&self.ctx, self.graph.config.vocab_size, self.max_out)?;
            let logits = &self.activations[self.plan.memory.buffer_of[self.graph.logits].expect("logits")];
            let group = s.bind(&self.ctx, logits, &self.flags);
            self.sampler = Some((s, group));
        }
        let m = first.m();
        let mut positions = first.positions.to_vec();
        let mut in_flight: Option<(usize, wgpu::SubmissionIndex)> = None;
        let (mut host, mut submitted_steps, mut device, mut timed) = (0.0, 0usize, 0.0, 0usize);
        // One more round than steps: the last only reads the last step's ids.
        for t in 0..=steps {
            let submitted = if t < steps {
                let slot = t % 2;
                if pick == Pick::Sample {
                    let draws: Vec<f32> = (0..m).map(|_| sampler.draw()).collect();
                    let (s, _) = self.sampler.as_ref().expect("made above");
                    s.prepare(&self.ctx, sampler.params(), &draws, 1)?;
                }
                let index = self.run(&StepInput { positions: &positions, ..*first }, pick, slot, t > 0)?;
                host += self.timing.host_micros.unwrap_or(0.0);
                submitted_steps += 1;
                positions.iter_mut().for_each(|p| *p += 1);
                Some((slot, index))
            } else {
                None
            };
            // Step t is queued behind t - 1: read t - 1's ids while the device runs t.
            if let Some((prev, prev_index)) = std::mem::replace(&mut in_flight, submitted) {
                let ids = self.read_ids(prev, m, Some(prev_index))?;
                if let Some(d) = self.timing.device_micros.take() {
                    device += d;
                    timed += 1;
                }
                if !on_ids(&ids) {
                    break;
                }
            }
        }
        let n = submitted_steps.max(1) as f64;
        self.timing = StepTiming { host_micros: Some(host / n), device_micros: (timed > 0).then(|| device / timed as f64) };
        Ok(())
    }

    fn last_step_timing(&self) -> StepTiming {
        self.timing
    }

    fn set_profiling(&mut self, on: bool) -> Result<()> {
        if !on {
            self.profiler = None;
            return Ok(());
        }
        if !self.ctx.timestamps {
            return Err(Error::BackendUnavailable {
                backend: "wgpu".into(),
                reason: format!("{} has no TIMESTAMP_QUERY: per-node timing is not available", self.ctx.info.name),
            });
        }
        let nodes = self.graph.nodes.len();
        let d = &self.ctx.device;
        let queries = d.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("node times"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * nodes as u32,
        });
        let size = (2 * nodes * 8) as u64;
        let resolve = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.profiler = Some(Profiler { queries, resolve, staging });
        Ok(())
    }

    fn reset_sequence(&mut self, _seq: usize) {
        // Positions are overwritten before they are read: attention reads 0..=position,
        // all written by this sequence's own steps.
    }

    fn last_step_records(&self) -> &[NodeRecord] {
        self.records.get_or_init(|| self.shape.as_ref().map_or_else(Vec::new, |s| self.describe_step(s)))
    }

    fn vocab_size(&self) -> usize {
        self.graph.config.vocab_size
    }
}

#[cfg(test)]
mod tests;
