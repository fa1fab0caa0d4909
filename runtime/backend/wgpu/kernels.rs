//! The compiled WGSL kernels and how a typed launch becomes dispatches: the pipelines (one
//! bind group layout for all, see shaders/common.wgsl), the per-node uniform built from a
//! launch template's parameters, and the grid of each variant. Shared by the executor, the
//! kernel tests and `bench kernels`.

use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};

use super::device::GpuContext;
use super::shaders::{self, Storage};
use crate::error::{Error, Result};
use crate::lower::caps::{FlatTiling, Tile, wgsl};
use crate::lower::kernel::{Epilogue, LaunchScalars, Params, Variant};
use crate::lower::{Launch, Template, WeightLayout};
use crate::tensor::FileType;

/// Matches `Step` in shaders/common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug)]
pub struct StepUniform {
    pub m: u32,
    pub n_out: u32,
    pub max_m: u32,
    pub attn_chunks: u32,
    pub attn_chunk_keys: u32,
    pub _pad: [u32; 3],
}

impl StepUniform {
    /// A step of `m` tokens (arrays `max_m` long) whose split-KV attention, if any, cuts the
    /// keys into `split = (chunks, keys per chunk)`.
    pub fn new(m: usize, n_out: usize, max_m: usize, split: Option<(usize, usize)>) -> Self {
        let (chunks, keys) = split.unwrap_or((0, 0));
        StepUniform {
            m: m as u32,
            n_out: n_out as u32,
            max_m: max_m as u32,
            attn_chunks: chunks as u32,
            attn_chunk_keys: keys as u32,
            _pad: [0; 3],
        }
    }
}

/// Matches `Node` in shaders/common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug)]
pub struct NodeUniform {
    pub rows: u32,
    pub n: u32,
    pub k: u32,
    pub n_offset: u32,
    pub ldy: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub flag_offset: u32,
    pub mode: u32,
    pub max_ctx: u32,
    pub eps: f32,
    pub scale: f32,
    pub phi: f32,
    pub lo: f32,
    pub hi: f32,
    pub _pad: [u32; 4],
}

impl NodeUniform {
    /// The uniform of a launch template. `max_ctx` strides the KV caches; `flag_offset`
    /// is the first flag word of an attention layer.
    pub fn of(t: &Template, max_ctx: usize, flag_offset: impl Fn(usize) -> usize) -> NodeUniform {
        let p = LaunchScalars::of(t, max_ctx, flag_offset);
        // The linear kernels take their prologue and epilogue as mode bits.
        let mode = match t.params {
            Params::Linear { prologue, epilogue, .. } => {
                let norm = if prologue.is_some() { wgsl::MODE_NORM } else { 0 };
                norm | match epilogue {
                    Epilogue::None => 0,
                    Epilogue::Residual => wgsl::MODE_RESIDUAL,
                    Epilogue::SwiGlu => wgsl::MODE_SWIGLU,
                    Epilogue::Rope { .. } => wgsl::MODE_ROPE,
                }
            }
            _ => p.mode,
        };
        NodeUniform {
            rows: p.rows_out,
            n: p.n,
            k: p.k,
            n_offset: p.n_offset,
            ldy: p.ldy,
            heads: p.heads,
            kv_heads: p.kv_heads,
            head_dim: p.head_dim,
            flag_offset: p.flag_offset,
            mode,
            max_ctx: p.max_ctx,
            eps: p.eps,
            scale: p.scale,
            phi: p.phi,
            lo: p.lo,
            hi: p.hi,
            _pad: [0; 4],
        }
    }
}

/// What a bind group binds; `None` slots get placeholders.
#[derive(Default, Clone, Copy)]
pub struct Binds<'a> {
    pub x: Option<&'a wgpu::Buffer>,
    pub x2: Option<&'a wgpu::Buffer>,
    pub w: Option<&'a wgpu::Buffer>,
    pub y: Option<&'a wgpu::Buffer>,
    pub kc: Option<&'a wgpu::Buffer>,
    pub vc: Option<&'a wgpu::Buffer>,
    /// Instead of the attention partials (the fused QKV GEMV's RoPE table).
    pub scratch: Option<&'a wgpu::Buffer>,
    /// A linear layer's bias (f32).
    pub bias: Option<&'a wgpu::Buffer>,
}

/// Where a launch template's inputs are, each resolved from its `Io` (`None` where the
/// template has none), and the RoPE angle table.
pub struct TemplateInputs<'a> {
    pub x: Option<&'a wgpu::Buffer>,
    pub x2: Option<&'a wgpu::Buffer>,
    pub w: Option<&'a wgpu::Buffer>,
    pub y: &'a wgpu::Buffer,
    pub kv: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// The RMSNorm weight of a norm prologue (f32).
    pub norm: Option<&'a wgpu::Buffer>,
    pub bias: Option<&'a wgpu::Buffer>,
    pub rope_table: &'a wgpu::Buffer,
}

impl<'a> Binds<'a> {
    /// The bindings of template `t` as its kernel reads them: the RoPE kernel reads the angle
    /// table as its second input, a norm prologue its weight, and a linear layer with the
    /// RoPE epilogue reads the table in place of the attention partials.
    pub fn for_template(t: &Template, i: TemplateInputs<'a>) -> Binds<'a> {
        let x2 = match t.params {
            Params::Rope { .. } => Some(i.rope_table),
            _ => i.x2.or(i.norm),
        };
        let rope_epilogue = matches!(t.params, Params::Linear { epilogue: Epilogue::Rope { .. }, .. });
        let (kc, vc) = i.kv.unzip();
        Binds { x: i.x, x2, w: i.w, y: Some(i.y), kc, vc, scratch: rope_epilogue.then_some(i.rope_table), bias: i.bias }
    }
}

/// The buffers every bind group of one executor (or test) shares.
pub struct Shared {
    pub step_uniform: wgpu::Buffer,
    /// `[tokens | positions | seqs | out_rows]`, each `max_m` long.
    pub step_data: wgpu::Buffer,
    /// Split-KV partial sums.
    pub scratch: wgpu::Buffer,
    /// `[recomputed rows, picked ids..., attention flags...]`.
    pub flags: wgpu::Buffer,
}

impl Shared {
    /// Buffers for steps of up to `max_m` tokens, `scratch_bytes` of partials and
    /// `flag_words` flags.
    pub fn new(ctx: &GpuContext, max_m: usize, scratch_bytes: u64, flag_words: usize) -> Shared {
        let d = &ctx.device;
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            d.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: size.max(16), usage, mapped_at_creation: false })
        };
        let copy = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        Shared {
            step_uniform: buffer(
                "step",
                std::mem::size_of::<StepUniform>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            step_data: Shared::step_data(ctx, max_m),
            scratch: buffer("attention partials", scratch_bytes, wgpu::BufferUsages::STORAGE),
            flags: buffer("flags", (flag_words * 4) as u64, wgpu::BufferUsages::STORAGE | copy),
        }
    }

    /// The step data of steps of up to `max_m` tokens.
    pub fn step_data(ctx: &GpuContext, max_m: usize) -> wgpu::Buffer {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step data"),
            size: (4 * max_m * 4).max(16) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }
}

/// One dispatch: the pipeline (entry point, compiled for a weight storage), bind group, grid.
#[derive(Clone, Copy)]
pub struct Dispatch<'a> {
    pub kernel: &'static str,
    pub storage: Storage,
    pub group: &'a wgpu::BindGroup,
    pub grid: [u32; 3],
}

impl<'a> Dispatch<'a> {
    /// A kernel that reads no weights, or float ones.
    pub fn new(kernel: &'static str, group: &'a wgpu::BindGroup, grid: [u32; 3]) -> Self {
        Dispatch { kernel, storage: Storage::Float, group, grid }
    }
}

pub struct Kernels {
    pub ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    /// Per weight storage, the pipelines by name (families that read no weights: `Float`).
    pipelines: HashMap<Storage, HashMap<String, wgpu::ComputePipeline>>,
    placeholders: [wgpu::Buffer; 7],
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

/// The flat GEMM's pipelines, plain and with the bias, per tiling of `wgsl::FLAT_TILINGS`
/// (same order).
pub const FLAT_GEMM_KERNELS: [[&str; 2]; wgsl::FLAT_TILINGS.len()] = [
    ["flat_gemm_16_k2", "flat_gemm_16_k2_bias"],
    ["flat_gemm", "flat_gemm_bias"],
    ["flat_gemm_16", "flat_gemm_16_bias"],
    ["flat_gemm_8", "flat_gemm_8_bias"],
    ["flat_gemm_8_k4", "flat_gemm_8_k4_bias"],
    ["flat_gemm_16_k4", "flat_gemm_16_k4_bias"],
    ["flat_gemm_8_k8", "flat_gemm_8_k8_bias"],
];

/// The flat GEMM pipeline of `tiling`, if the kernel is compiled for it.
pub fn flat_gemm_kernel(tiling: FlatTiling, bias: bool) -> Option<&'static str> {
    let i = wgsl::flat_tilings().iter().position(|&t| t == tiling)?;
    Some(FLAT_GEMM_KERNELS[i][usize::from(bias)])
}

/// A grid whose x is within the per-dimension limit (kernels fold y back, see `flat_id`).
pub fn grid(x: usize, y: usize, z: usize) -> [u32; 3] {
    let (x, y) = if x > 65535 { (65535, y * x.div_ceil(65535)) } else { (x, y) };
    [x as u32, y as u32, z as u32]
}

/// Held while a device compiles cooperative-matrix kernels, so two devices of one process
/// never do it at once: on the H200 (NVIDIA 580.159.04) the tests, a device per thread,
/// crashed or hung when they did.
pub fn matrix_compile_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kernels {
    /// Compiles every kernel family for this device (weight and KV types and reduction chosen
    /// by its capabilities and the user), and those that read weights also for each
    /// block-quantized type of `quantized`.
    pub fn new(ctx: GpuContext, quantized: &[FileType]) -> Result<Kernels> {
        let device = &ctx.device;
        let mut entries = vec![uniform(0), storage(true, 1), uniform(2)];
        entries.extend([storage(true, 3), storage(true, 4), storage(true, 5)]);
        entries.extend((6..=10).map(|b| storage(false, b)));
        entries.push(storage(true, 11));
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("fdpp"), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("fdpp"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut pipelines: HashMap<Storage, HashMap<String, wgpu::ComputePipeline>> = HashMap::new();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        for (family, storage) in shaders::compilations(quantized, ctx.cooperative_matrix, ctx.f16_kv) {
            let _one_at_a_time = family.matrix.then(matrix_compile_lock);
            let source = shaders::source(family, storage, ctx.f16_weights, ctx.f16_kv, ctx.subgroup_size);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&format!("{}{}", family.name, storage.suffix())),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let pipelines = pipelines.entry(storage).or_default();
            for &entry in family.entries {
                // The flat GEMM: a pipeline per tiling, its pipeline constants set.
                let variants: Vec<(String, Vec<(&str, f64)>)> = if entry == "flat_gemm" {
                    let biased = usize::from(!family.suffix.is_empty());
                    wgsl::FLAT_TILINGS
                        .iter()
                        .zip(FLAT_GEMM_KERNELS)
                        .map(|(&(groups, k_groups), names)| {
                            (names[biased].to_string(), vec![("FB_GROUPS", groups as f64), ("FB_KGROUPS", k_groups as f64)])
                        })
                        .collect()
                } else {
                    vec![(format!("{entry}{}", family.suffix), vec![])]
                };
                for (key, constants) in variants {
                    let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&key),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
                        cache: None,
                    });
                    pipelines.insert(key, p);
                }
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend { backend: "wgpu".into(), op: "compiling shaders".into(), reason: e.to_string() });
        }
        let ph = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let placeholders = [ph("x"), ph("x2"), ph("w"), ph("y"), ph("kc"), ph("vc"), ph("bias")];
        Ok(Kernels { ctx, layout, pipelines, placeholders })
    }

    /// A bind group over `shared`, the node uniform at `offset` of `ubuf`, and `b`.
    pub fn bind_group(&self, shared: &Shared, ubuf: &wgpu::Buffer, offset: u64, b: Binds) -> wgpu::BindGroup {
        let p = &self.placeholders;
        let buffers = [
            b.x.unwrap_or(&p[0]),
            b.x2.unwrap_or(&p[1]),
            b.w.unwrap_or(&p[2]),
            b.y.unwrap_or(&p[3]),
            b.kc.unwrap_or(&p[4]),
            b.vc.unwrap_or(&p[5]),
            b.scratch.unwrap_or(&shared.scratch),
            &shared.flags,
            b.bias.unwrap_or(&p[6]),
        ];
        let mut entries = vec![
            wgpu::BindGroupEntry { binding: 0, resource: shared.step_uniform.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: shared.step_data.as_entire_binding() },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: ubuf,
                    offset,
                    size: std::num::NonZeroU64::new(std::mem::size_of::<NodeUniform>() as u64),
                }),
            },
        ];
        for (i, buf) in buffers.into_iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: 3 + i as u32, resource: buf.as_entire_binding() });
        }
        self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &self.layout, entries: &entries })
    }

    /// A uniform buffer holding `nodes`, each at a multiple of the device's alignment;
    /// returns it and that stride.
    pub fn node_uniforms(&self, nodes: &[NodeUniform]) -> (wgpu::Buffer, u64) {
        use wgpu::util::DeviceExt;
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as usize;
        let stride = std::mem::size_of::<NodeUniform>().next_multiple_of(align);
        let mut bytes = vec![0u8; stride * nodes.len().max(1)];
        for (i, n) in nodes.iter().enumerate() {
            bytes[i * stride..i * stride + std::mem::size_of::<NodeUniform>()].copy_from_slice(bytemuck::bytes_of(n));
        }
        let buffer = self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("node uniforms"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        (buffer, stride as u64)
    }

    /// Encodes `dispatches` into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass, dispatches: &[Dispatch]) {
        for d in dispatches {
            pass.set_pipeline(&self.pipelines[&d.storage][d.kernel]);
            pass.set_bind_group(0, d.group, &[]);
            let [x, y, z] = d.grid;
            pass.dispatch_workgroups(x, y, z);
        }
    }
}

fn no_kernel(what: String) -> Error {
    Error::Backend { backend: "wgpu".into(), op: "encoding a launch".into(), reason: format!("no WGSL kernel for {what}") }
}

fn check_tile(tile: Tile, have: Tile, what: &str) -> Result<()> {
    if tile == have { Ok(()) } else { Err(no_kernel(format!("a {what} with tile {tile} (the kernel's is {have})"))) }
}

/// How the weight template `t` reads is stored (`Float` where it reads none). Only matrices
/// are ever quantized, and only the embedding and linear kernels read them, so every other
/// launch gets `Float`, the one storage its family is compiled for.
pub fn storage_of(weights: &[WeightLayout], t: &Template) -> Storage {
    match t.io.weight.and_then(|w| weights[w.param].quantized) {
        Some(q) => Storage::Quantized(q),
        None => Storage::Float,
    }
}

/// The dispatches of one launch of template `t` over `group`, whose weight is stored as
/// `storage` (`storage_of`); `m` is the step's tokens.
pub fn dispatches<'a>(
    launch: &Launch,
    t: &Template,
    storage: Storage,
    group: &'a wgpu::BindGroup,
    m: usize,
    out: &mut Vec<Dispatch<'a>>,
) -> Result<()> {
    let rows = launch.rows;
    let mut push = |kernel: &'static str, grid: [u32; 3]| out.push(Dispatch { kernel, storage, group, grid });
    match (t.params, launch.variant) {
        (Params::Embedding { hidden, .. }, Variant::Gather) => push("embedding", grid(hidden.div_ceil(64), m, 1)),
        (Params::RmsNorm { .. }, Variant::RmsNorm) => push("rms_norm", grid(1, rows, 1)),
        (Params::Linear { n, epilogue, bias, .. }, Variant::Gemv { split_k, per_warp: false }) => {
            if rows > wgsl::GEMV_MAX_M {
                return Err(no_kernel(format!("a GEMV over {rows} rows (at most {})", wgsl::GEMV_MAX_M)));
            }
            // SwiGLU and RoPE: a lane group's two columns make one pair.
            let pairs = matches!(epilogue, Epilogue::SwiGlu | Epilogue::Rope { .. });
            let groups = if pairs { (n / 2).div_ceil(wgsl::GV_GROUPS) } else { n.div_ceil(2 * wgsl::GV_GROUPS) };
            let kernel = match (split_k, bias) {
                (false, false) => "gemv",
                (true, false) => "gemv_split_k",
                (false, true) => "gemv_bias",
                (true, true) => "gemv_split_k_bias",
            };
            push(kernel, grid(groups, 1, 1));
        }
        (
            Params::Linear { n, k, bias, prologue: None, epilogue: Epilogue::None | Epilogue::Residual, .. },
            Variant::FlatGemm { tiling },
        ) => {
            // The caps offer the matrix tiling only where `flat_matrix` is compiled and the
            // weights are f16; the lowering gives it only K in whole 16-deep operands.
            let kernel = if tiling == wgsl::flat_matrix() {
                if storage != Storage::Float || k % 16 != 0 {
                    return Err(no_kernel(format!("B on cooperative matrices over {storage:?} weights with K = {k}")));
                }
                if bias { "flat_matrix_bias" } else { "flat_matrix" }
            } else {
                flat_gemm_kernel(tiling, bias).ok_or_else(|| no_kernel(format!("a flat GEMM with tiling {tiling}")))?
            };
            push(kernel, grid(n.div_ceil(tiling.tile.n), rows.div_ceil(tiling.tile.m), 1));
        }
        (Params::Linear { n, k, bias, prologue: None, epilogue: Epilogue::None | Epilogue::Residual, .. }, Variant::Gemm { tile }) => {
            // The caps give the cooperative-matrix tile only where those kernels are compiled;
            // f16 weights in rows of whole 16-deep operands are read as they lie.
            let matrix = tile == Tile { m: wgsl::MATRIX_TILE_M, n: wgsl::MATRIX_TILE_N };
            let direct = storage == Storage::Float && k % 16 == 0;
            let kernel = match (matrix, direct, bias) {
                (true, true, false) => "gemm_matrix_direct",
                (true, true, true) => "gemm_matrix_direct_bias",
                (true, false, false) => "gemm_matrix",
                (true, false, true) => "gemm_matrix_bias",
                (false, _, bias) => {
                    check_tile(tile, Tile { m: wgsl::GM, n: wgsl::GM }, "GEMM")?;
                    if bias { "gemm_bias" } else { "gemm" }
                }
            };
            push(kernel, grid(n.div_ceil(tile.n), rows.div_ceil(tile.m), 1));
        }
        (Params::Rope { dims, .. }, Variant::Rope) => push("rope", grid(dims.qkv_width().div_ceil(64), m, 1)),
        (Params::Attention { dims, kv_write, .. }, v) => {
            if kv_write {
                push("kv_write", grid(dims.kv_dim().div_ceil(64), m, 1));
            }
            match v {
                Variant::SplitKvAttention { chunks, .. } => {
                    push("attn_split", grid(chunks, dims.heads, m));
                    push("attn_combine", grid(dims.heads, m, 1));
                }
                Variant::OnlineAttention => push("attn_online", grid(dims.heads, m, 1)),
                // The caps offer it only where it is compiled (cooperative matrices, f16 cache).
                Variant::FlashAttention { rows, keys } => {
                    check_tile(
                        Tile { m: rows, n: keys },
                        Tile { m: wgsl::MATRIX_ATTN_ROWS, n: wgsl::MATRIX_ATTN_KEYS },
                        "matrix attention",
                    )?;
                    push("attn_matrix", grid(m.div_ceil(rows), dims.heads, 1));
                }
                other => return Err(no_kernel(format!("attention variant {other}"))),
            }
        }
        (Params::SwiGlu { ffn }, Variant::SwiGlu) => push("swiglu", grid(ffn.div_ceil(64), rows, 1)),
        (Params::Add { width }, Variant::Add) => push("add", grid(width.div_ceil(64), rows, 1)),
        (Params::SelectRows { width }, Variant::SelectRows) => push("select_rows", grid(width.div_ceil(64), rows, 1)),
        (p, v) => return Err(no_kernel(format!("{v} on {p:?}"))),
    }
    Ok(())
}
