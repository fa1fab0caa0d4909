//! How a typed launch becomes CUDA kernel launches: the `Args` struct every kernel takes by
//! value (`struct Args` in vendor_kernels/cuda/common.cuh), filled from a launch template's
//! parameters once, and the kernel and grid of each variant. Shared by the executor, the
//! kernel tests and `bench kernels`.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, sys};

use crate::error::{Error, Result};
use crate::lower::caps::{Tile, cuda};
use crate::lower::kernel::{Epilogue, Params, Prologue, Variant};
use crate::lower::{Launch, Template};

/// Matches `struct Args` in common.cuh: device pointers, then the launch's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Args {
    pub step: u64,
    pub x: u64,
    pub x2: u64,
    pub w: u64,
    pub y: u64,
    pub kc: u64,
    pub vc: u64,
    pub scratch: u64,
    pub flags: u64,
    pub bias: u64,
    pub rope: u64,
    pub norm: u64,
    pub rows_out: u32,
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
    pub _pad: u32,
    pub eps: f32,
    pub scale: f32,
    pub phi: f32,
    pub lo: f32,
    pub hi: f32,
    pub _pad_f: f32,
}

/// Words of the step header before the token arrays (`STEP_WORDS`).
pub const STEP_WORDS: usize = 8;

/// The step buffer's contents: header (m, n_out, max_m, chunks, keys per chunk) and the
/// tokens, positions, sequences and output rows, each `max_m` long.
pub fn step_words(m: usize, n_out: usize, max_m: usize, split: Option<(usize, usize)>) -> Vec<u32> {
    let (chunks, keys) = split.unwrap_or((0, 0));
    let mut w = vec![0u32; STEP_WORDS + 4 * max_m];
    w[..5].copy_from_slice(&[m as u32, n_out as u32, max_m as u32, chunks as u32, keys as u32]);
    w
}

impl Args {
    /// The parameters of a launch template (pointers are the executor's). `max_ctx` strides
    /// the KV caches; `flag_offset` is the first flag word of an attention layer.
    pub fn of(t: &Template, max_ctx: usize, flag_offset: impl Fn(usize) -> usize) -> Args {
        let base = Args { rows_out: t.out_rows as u32, max_ctx: max_ctx as u32, ..Default::default() };
        let u = |v: usize| v as u32;
        match t.params {
            Params::Embedding { hidden, first_row, rows } => Args { n: u(rows), k: u(hidden), n_offset: u(first_row), ..base },
            Params::RmsNorm { width, eps } => Args { k: u(width), eps, ..base },
            Params::Linear { n, k, n_offset, ldy, prologue, epilogue, .. } => {
                let mut a = Args { n: u(n), k: u(k), n_offset: u(n_offset), ldy: u(ldy), ..base };
                if let Some(Prologue::RmsNorm { eps }) = prologue {
                    a.eps = eps;
                }
                if let Epilogue::Rope { dims } = epilogue {
                    (a.heads, a.kv_heads, a.head_dim) = (u(dims.heads), u(dims.kv_heads), u(dims.head_dim));
                }
                a
            }
            Params::Rope { dims, kv_write } => Args {
                n: u(dims.qkv_width()),
                heads: u(dims.heads),
                kv_heads: u(dims.kv_heads),
                head_dim: u(dims.head_dim),
                mode: kv_write as u32,
                ..base
            },
            Params::Attention { dims, layer, scale, unified, .. } => Args {
                heads: u(dims.heads),
                kv_heads: u(dims.kv_heads),
                head_dim: u(dims.head_dim),
                flag_offset: u(flag_offset(layer)),
                scale,
                phi: unified.phi,
                lo: unified.lo,
                hi: unified.hi,
                ..base
            },
            Params::SwiGlu { ffn } => Args { n: u(ffn), ..base },
            Params::Add { width } | Params::SelectRows { width } => Args { n: u(width), ..base },
        }
    }
}

/// One kernel launch: which kernel, its grid and block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub kernel: &'static str,
    pub blocks: [u32; 3],
    pub threads: u32,
}

fn no_kernel(what: String) -> Error {
    Error::Backend { backend: "cuda".into(), op: "encoding a launch".into(), reason: format!("no CUDA kernel for {what}") }
}

fn check_tile(tile: Tile, have: Tile, what: &str) -> Result<()> {
    if tile == have { Ok(()) } else { Err(no_kernel(format!("a {what} with tile {tile} (the kernel's is {have})"))) }
}

/// The GEMV kernel of a prologue / epilogue combination.
fn gemv_kernel(prologue: Option<Prologue>, epilogue: Epilogue, bias: bool) -> &'static str {
    let norm = prologue.is_some();
    let names: [&'static str; 16] = [
        "gemv",
        "gemv_bias",
        "gemv_res",
        "gemv_res_bias",
        "gemv_swiglu",
        "gemv_swiglu_bias",
        "gemv_rope",
        "gemv_rope_bias",
        "gemv_norm",
        "gemv_norm_bias",
        "gemv_norm_res",
        "gemv_norm_res_bias",
        "gemv_norm_swiglu",
        "gemv_norm_swiglu_bias",
        "gemv_norm_rope",
        "gemv_norm_rope_bias",
    ];
    let e = match epilogue {
        Epilogue::None => 0,
        Epilogue::Residual => 1,
        Epilogue::SwiGlu => 2,
        Epilogue::Rope { .. } => 3,
    };
    names[(norm as usize) * 8 + e * 2 + bias as usize]
}

/// The name of a B/C kernel family member: `base`, `base_res`, `base_bias`, `base_res_bias`.
fn product_kernel(base: &'static str, residual: bool, bias: bool) -> &'static str {
    match (base, residual, bias) {
        ("flat_gemm_mma", false, false) => "flat_gemm_mma",
        ("flat_gemm_mma", true, false) => "flat_gemm_mma_res",
        ("flat_gemm_mma", false, true) => "flat_gemm_mma_bias",
        ("flat_gemm_mma", true, true) => "flat_gemm_mma_res_bias",
        ("gemm_mma", false, false) => "gemm_mma",
        ("gemm_mma", true, false) => "gemm_mma_res",
        ("gemm_mma", false, true) => "gemm_mma_bias",
        ("gemm_mma", true, true) => "gemm_mma_res_bias",
        (_, false, false) => "gemm_tiled",
        (_, true, false) => "gemm_tiled_res",
        (_, false, true) => "gemm_tiled_bias",
        (_, true, true) => "gemm_tiled_res_bias",
    }
}

/// The kernel launches of one launch of template `t` in a step of `m` tokens; the split-KV
/// attention launches `chunk_blocks` (>= the step's chunks) blocks per head.
pub fn grids(launch: &Launch, t: &Template, m: usize, f16_weights: bool, chunk_blocks: usize) -> Result<Vec<Grid>> {
    let rows = launch.rows;
    let u = |v: usize| v as u32;
    let eb = cuda::ELEM_BLOCK;
    let g = |kernel: &'static str, x: usize, y: usize, z: usize, threads: usize| Grid {
        kernel,
        blocks: [u(x), u(y), u(z)],
        threads: u(threads),
    };
    let att = cuda::ATT_WARPS * 32;
    Ok(match (t.params, launch.variant) {
        (Params::Embedding { hidden, .. }, Variant::Gather) => vec![g("embedding", hidden.div_ceil(eb), m, 1, eb)],
        (Params::RmsNorm { .. }, Variant::RmsNorm) => vec![g("rms_norm", 1, rows, 1, 256)],
        (Params::Linear { n, prologue, epilogue, bias, .. }, Variant::Gemv { split_k: false }) => {
            if rows > cuda::GEMV_MAX_M {
                return Err(no_kernel(format!("a GEMV over {rows} rows (at most {})", cuda::GEMV_MAX_M)));
            }
            let pairs = matches!(epilogue, Epilogue::SwiGlu | Epilogue::Rope { .. });
            let blocks = if pairs { (n / 2).div_ceil(cuda::GV_GROUPS) } else { n.div_ceil(2 * cuda::GV_GROUPS) };
            vec![g(gemv_kernel(prologue, epilogue, bias), blocks, 1, 1, cuda::GV_GROUPS * 32)]
        }
        (
            Params::Linear { n, bias, prologue: None, epilogue: e @ (Epilogue::None | Epilogue::Residual), .. },
            Variant::FlatGemm { tile },
        ) => {
            let residual = e == Epilogue::Residual;
            if f16_weights {
                check_tile(tile, Tile { m: cuda::FLAT_TILE_M, n: cuda::FLAT_TILE_N }, "flat GEMM")?;
                vec![g(product_kernel("flat_gemm_mma", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, cuda::FB_WARPS * 32)]
            } else {
                check_tile(tile, Tile { m: cuda::TILED_TILE, n: cuda::TILED_TILE }, "flat GEMM of f32 weights")?;
                vec![g(product_kernel("gemm_tiled", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, 256)]
            }
        }
        (Params::Linear { n, bias, prologue: None, epilogue: e @ (Epilogue::None | Epilogue::Residual), .. }, Variant::Gemm { tile }) => {
            let residual = e == Epilogue::Residual;
            if f16_weights {
                check_tile(tile, Tile { m: cuda::GEMM_TILE_M, n: cuda::GEMM_TILE_N }, "GEMM")?;
                vec![g(product_kernel("gemm_mma", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, 256)]
            } else {
                check_tile(tile, Tile { m: cuda::TILED_TILE, n: cuda::TILED_TILE }, "GEMM of f32 weights")?;
                vec![g(product_kernel("gemm_tiled", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, 256)]
            }
        }
        (Params::Rope { dims, .. }, Variant::Rope) => vec![g("rope", dims.qkv_width().div_ceil(eb), m, 1, eb)],
        (Params::Attention { dims, kv_write, .. }, v) => {
            let mut out = vec![];
            if kv_write {
                out.push(g("kv_write", dims.kv_dim().div_ceil(eb), m, 1, eb));
            }
            match v {
                Variant::SplitKvAttention { chunks, .. } => {
                    out.push(g("attn_split", chunk_blocks.max(chunks), dims.heads, m, att));
                    out.push(g("attn_combine", dims.heads, m, 1, att));
                }
                Variant::OnlineAttention => out.push(g("attn_online", dims.heads, m, 1, att)),
                other => return Err(no_kernel(format!("attention variant {other}"))),
            }
            out
        }
        (Params::SwiGlu { ffn }, Variant::SwiGlu) => vec![g("swiglu", ffn.div_ceil(eb), rows, 1, eb)],
        (Params::Add { width }, Variant::Add) => vec![g("add", width.div_ceil(eb), rows, 1, eb)],
        (Params::SelectRows { width }, Variant::SelectRows) => vec![g("select_rows", width.div_ceil(eb), rows, 1, eb)],
        (p, v) => return Err(no_kernel(format!("{v} on {p:?}"))),
    })
}

/// Every kernel of the loaded modules, by name.
pub struct Kernels {
    _modules: Vec<Arc<CudaModule>>,
    functions: HashMap<&'static str, CudaFunction>,
}

/// Every kernel a family exports (the names `grids` and the argmax use).
const EXPORTS: &[(&str, &[&str])] = &[
    ("elementwise", &["embedding", "rms_norm", "rope", "kv_write", "swiglu", "add", "select_rows", "argmax", "stream_read", "stream_copy"]),
    (
        "linear",
        &[
            "gemv",
            "gemv_bias",
            "gemv_res",
            "gemv_res_bias",
            "gemv_swiglu",
            "gemv_swiglu_bias",
            "gemv_rope",
            "gemv_rope_bias",
            "gemv_norm",
            "gemv_norm_bias",
            "gemv_norm_res",
            "gemv_norm_res_bias",
            "gemv_norm_swiglu",
            "gemv_norm_swiglu_bias",
            "gemv_norm_rope",
            "gemv_norm_rope_bias",
        ],
    ),
    ("attention", &["attn_split", "attn_combine", "attn_online"]),
];

const TENSOR_CORE: &[&str] = &[
    "flat_gemm_mma",
    "flat_gemm_mma_res",
    "flat_gemm_mma_bias",
    "flat_gemm_mma_res_bias",
    "gemm_mma",
    "gemm_mma_res",
    "gemm_mma_bias",
    "gemm_mma_res_bias",
];
const CUDA_CORE: &[&str] = &["gemm_tiled", "gemm_tiled_res", "gemm_tiled_bias", "gemm_tiled_res_bias"];

impl Kernels {
    /// The functions of `modules` (in `compile::FAMILIES` order).
    pub fn new(modules: Vec<Arc<CudaModule>>, f16_weights: bool) -> Result<Kernels> {
        let mut functions = HashMap::new();
        for (module, (family, names)) in modules.iter().zip(EXPORTS) {
            let products = if *family == "linear" { if f16_weights { TENSOR_CORE } else { CUDA_CORE } } else { &[] };
            for &name in names.iter().chain(products) {
                let f = module.load_function(name).map_err(|e| Error::Backend {
                    backend: "cuda".into(),
                    op: format!("loading kernel {name} of the {family} kernels"),
                    reason: e.to_string(),
                })?;
                functions.insert(name, f);
            }
        }
        Ok(Kernels { _modules: modules, functions })
    }

    pub fn function(&self, name: &str) -> sys::CUfunction {
        self.functions[name].cu_function()
    }
}
