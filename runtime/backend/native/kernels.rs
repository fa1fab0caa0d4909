//! How a typed launch becomes native kernel launches (CUDA or HIP, the same kernel files):
//! the `Args` struct every kernel takes by value (`struct Args` in
//! vendor_kernels/cuda/common.cuh), filled from a launch template's parameters once, and the
//! kernel and grid of each variant. Shared by the executor, the kernel tests and `bench
//! kernels`.

use crate::error::{Error, Result};
use crate::lower::caps::{FlatTiling, Tile, cuda};
use crate::lower::kernel::{Epilogue, LaunchScalars, Params, Prologue, Variant};
use crate::lower::{Launch, Template};

/// Matches `struct Args` in common.cuh: device pointers, then the launch's parameters (the
/// kernels check the layout: `sources::source` writes its size into their header).
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
    pub s: LaunchScalars,
}

/// Words of the step header before the token arrays (`STEP_WORDS`).
pub const STEP_WORDS: usize = 8;
/// The header word that says the tokens are the last step's picks (`Step::picked`).
pub const STEP_PICKED: usize = 5;

/// The step buffer's contents: header (m, n_out, max_m, chunks, keys per chunk, 0 for
/// `picked`) and the tokens, positions, sequences and output rows, each `max_m` long.
pub fn step_words(m: usize, n_out: usize, max_m: usize, split: Option<(usize, usize)>) -> Vec<u32> {
    let (chunks, keys) = split.unwrap_or((0, 0));
    let mut w = vec![0u32; STEP_WORDS + 4 * max_m];
    w[..5].copy_from_slice(&[m as u32, n_out as u32, max_m as u32, chunks as u32, keys as u32]);
    w
}

impl Args {
    /// The parameters of a launch template (pointers are the executor's).
    pub fn of(t: &Template, max_ctx: usize, flag_offset: impl Fn(usize) -> usize) -> Args {
        Args { s: LaunchScalars::of(t, max_ctx, flag_offset), ..Default::default() }
    }

    /// Only scalars: `n` and `mode` (the small kernels around cuBLAS and the benchmarks').
    pub fn scalars(n: usize, mode: u32) -> LaunchScalars {
        LaunchScalars { n: n as u32, mode, ..Default::default() }
    }
}

/// One kernel launch: which kernel, its grid and block size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    pub kernel: String,
    pub blocks: [u32; 3],
    pub threads: u32,
}

/// Most blocks a grid's y dimension takes.
const MAX_GRID_Y: usize = 65535;

fn no_kernel(what: String) -> Error {
    Error::Backend { backend: "native".into(), op: "encoding a launch".into(), reason: format!("no native kernel for {what}") }
}

fn check_tile<T: PartialEq + std::fmt::Display>(tile: T, have: T, what: &str) -> Result<()> {
    if tile == have { Ok(()) } else { Err(no_kernel(format!("a {what} with tile {tile} (the kernel's is {have})"))) }
}

/// The name part of a linear kernel's prologue / epilogue combination.
fn fusion_suffix(prologue: Option<Prologue>, epilogue: Epilogue, bias: bool) -> String {
    let e = match epilogue {
        Epilogue::None => "",
        Epilogue::Residual => "_res",
        Epilogue::SwiGlu => "_swiglu",
        Epilogue::Rope { .. } => "_rope",
    };
    let norm = if prologue.is_some() { "_norm" } else { "" };
    format!("{norm}{e}{}", if bias { "_bias" } else { "" })
}

/// The GEMV kernel of a prologue / epilogue combination over `rows` rows.
fn gemv_kernel(prologue: Option<Prologue>, epilogue: Epilogue, bias: bool, rows: usize) -> String {
    format!("gemv{}{}", fusion_suffix(prologue, epilogue, bias), if rows == 1 { "_r1" } else { "" })
}

/// The tensor-core flat GEMM kernel of a combination and tiling.
fn flat_gemm_kernel(prologue: Option<Prologue>, epilogue: Epilogue, bias: bool, t: FlatTiling) -> String {
    format!("flat_gemm{}_t{}x{}x{}", fusion_suffix(prologue, epilogue, bias), t.tile.m, t.tile.n, t.k_groups)
}

/// Every prologue / epilogue combination the GEMV and flat GEMM kernels are compiled for.
fn fusion_combinations() -> Vec<(Option<Prologue>, Epilogue, bool)> {
    let dims = crate::lower::kernel::HeadDims { heads: 1, kv_heads: 1, head_dim: 2 };
    let mut out = vec![];
    for prologue in [None, Some(Prologue::RmsNorm { eps: 0.0 })] {
        for epilogue in [Epilogue::None, Epilogue::Residual, Epilogue::SwiGlu, Epilogue::Rope { dims }] {
            for bias in [false, true] {
                out.push((prologue, epilogue, bias));
            }
        }
    }
    out
}

/// A B/C kernel: `base`, with `_res` (residual epilogue) and `_bias`.
fn product_kernel(base: &str, residual: bool, bias: bool) -> String {
    format!("{base}{}{}", if residual { "_res" } else { "" }, if bias { "_bias" } else { "" })
}

/// The kernel launches of one launch of template `t` in a step of `m` tokens; the split-KV
/// attention launches `chunk_blocks` (>= the step's chunks) blocks per head. `tensor_cores`:
/// the kernels were built with their tensor-core forms (CUDA with f16 weights).
pub fn grids(launch: &Launch, t: &Template, m: usize, tensor_cores: bool, chunk_blocks: usize) -> Result<Vec<Grid>> {
    let rows = launch.rows;
    let u = |v: usize| v as u32;
    let eb = cuda::ELEM_BLOCK;
    let g = |kernel: &str, x: usize, y: usize, z: usize, threads: usize| Grid {
        kernel: kernel.into(),
        blocks: [u(x), u(y), u(z)],
        threads: u(threads),
    };
    let att = cuda::ATT_WARPS * 32;
    Ok(match (t.params, launch.variant) {
        (Params::Embedding { hidden, .. }, Variant::Gather) => vec![g("embedding", hidden.div_ceil(eb), m, 1, eb)],
        (Params::RmsNorm { .. }, Variant::RmsNorm) => vec![g("rms_norm", 1, rows, 1, 256)],
        (Params::Linear { n, k, prologue, epilogue, bias, .. }, Variant::Gemv { split_k: false, per_warp }) => {
            if rows > cuda::GEMV_MAX_M {
                return Err(no_kernel(format!("a GEMV over {rows} rows (at most {})", cuda::GEMV_MAX_M)));
            }
            // A block (per_warp: a warp) owns GV_COLS columns: two SwiGLU / RoPE pairs, or four plain columns.
            let pairs = matches!(epilogue, Epilogue::SwiGlu | Epilogue::Rope { .. });
            let units = if pairs { (n / 2).div_ceil(cuda::GV_COLS / 2) } else { n.div_ceil(cuda::GV_COLS) };
            let kernel = gemv_kernel(prologue, epilogue, bias, rows);
            if !per_warp {
                vec![g(&kernel, units, 1, 1, cuda::GV_WARPS * 32)]
            } else if k.is_multiple_of(8) && k <= cuda::GW_WARP_MAX_K {
                vec![g(&(kernel + "_w"), units.div_ceil(cuda::GW_WARPS), 1, 1, cuda::GW_WARPS * 32)]
            } else {
                return Err(no_kernel(format!(
                    "a GEMV with a warp per column group over K={k} (multiples of 8 up to {})",
                    cuda::GW_WARP_MAX_K
                )));
            }
        }
        (Params::Linear { n, bias, prologue, epilogue, .. }, Variant::FlatGemm { tiling }) if tensor_cores => {
            if !cuda::flat_tilings().contains(&tiling) {
                return Err(no_kernel(format!("a flat GEMM with tiling {tiling}")));
            }
            // A block owns tile.n / 2 pairs: SwiGLU / RoPE pairs, or plain columns c, c + 8.
            let pairs = matches!(epilogue, Epilogue::SwiGlu | Epilogue::Rope { .. });
            let groups = if pairs { (n / 2).div_ceil(tiling.tile.n / 2) } else { n.div_ceil(tiling.tile.n) };
            if groups > MAX_GRID_Y {
                return Err(no_kernel(format!("a flat GEMM of {n} columns ({groups} column groups, at most {MAX_GRID_Y})")));
            }
            let kernel = flat_gemm_kernel(prologue, epilogue, bias, tiling);
            vec![g(&kernel, rows.div_ceil(tiling.tile.m), groups, 1, tiling.k_groups * 32)]
        }
        (
            Params::Linear { n, bias, prologue: None, epilogue: e @ (Epilogue::None | Epilogue::Residual), .. },
            Variant::FlatGemm { tiling },
        ) => {
            check_tile(
                tiling,
                FlatTiling { tile: Tile { m: cuda::TILED_TILE, n: cuda::TILED_TILE }, k_groups: 1 },
                "flat GEMM without tensor cores",
            )?;
            vec![g(
                &product_kernel("gemm_tiled", e == Epilogue::Residual, bias),
                n.div_ceil(tiling.tile.n),
                rows.div_ceil(tiling.tile.m),
                1,
                256,
            )]
        }
        (Params::Linear { n, bias, prologue: None, epilogue: e @ (Epilogue::None | Epilogue::Residual), .. }, Variant::Gemm { tile }) => {
            let residual = e == Epilogue::Residual;
            if tensor_cores {
                check_tile(tile, Tile { m: cuda::GEMM_TILE_M, n: cuda::GEMM_TILE_N }, "GEMM")?;
                vec![g(&product_kernel("gemm_mma", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, 256)]
            } else {
                check_tile(tile, Tile { m: cuda::TILED_TILE, n: cuda::TILED_TILE }, "GEMM without tensor cores")?;
                vec![g(&product_kernel("gemm_tiled", residual, bias), n.div_ceil(tile.n), rows.div_ceil(tile.m), 1, 256)]
            }
        }
        (Params::Rope { dims, .. }, Variant::Rope) => vec![g("rope", dims.qkv_width().div_ceil(eb), m, 1, eb)],
        (Params::Attention { dims, kv_write, .. }, v) => {
            let mut out = vec![];
            if kv_write {
                out.push(g("kv_write", dims.kv_dim().div_ceil(eb), m, 1, eb));
            }
            match v {
                // One chunk: its block adds up and divides (the lowering's short contexts).
                Variant::SplitKvAttention { chunks: 1, narrow: false, .. } => {
                    out.push(g("attn_single", 1, dims.heads, m, cuda::SINGLE_WARPS * 32));
                }
                Variant::SplitKvAttention { chunks: 1, narrow: true, .. } => {
                    out.push(g("attn_single_narrow", 1, dims.heads, m, cuda::SINGLE_NARROW_WARPS * 32));
                }
                Variant::SplitKvAttention { chunks, .. } => {
                    out.push(g("attn_split", chunk_blocks.max(chunks), dims.heads, m, att));
                }
                Variant::OnlineAttention => out.push(g("attn_online", dims.heads, m, 1, att)),
                Variant::FlashAttention { rows, keys } if tensor_cores && cuda::FLASH_HEAD_DIMS.contains(&dims.head_dim) => {
                    check_tile(Tile { m: rows, n: keys }, Tile { m: cuda::FLASH_ROWS, n: cuda::FLASH_KEYS }, "flash attention")?;
                    out.push(g(&format!("attn_flash_{}", dims.head_dim), m.div_ceil(rows), dims.heads, 1, att));
                }
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

/// Every kernel a family exports (the names `grids`, the argmax and the benchmarks use);
/// `tensor_cores` as for `grids`.
pub(crate) fn exports(family: &str, tensor_cores: bool) -> Vec<String> {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match family {
        "elementwise" => names(&[
            "embedding",
            "rms_norm",
            "rope",
            "kv_write",
            "swiglu",
            "add",
            "select_rows",
            "step_begin",
            "argmax",
            "stream_read",
            "stream_copy",
        ]),
        "linear" => {
            let mut out = vec![];
            for (prologue, epilogue, bias) in fusion_combinations() {
                for rows in [1, 2] {
                    let gemv = gemv_kernel(prologue, epilogue, bias, rows);
                    out.extend([format!("{gemv}_w"), gemv]);
                }
                if tensor_cores {
                    out.extend(cuda::flat_tilings().into_iter().map(|t| flat_gemm_kernel(prologue, epilogue, bias, t)));
                }
            }
            if tensor_cores {
                out.extend(["to_f16".to_string(), "linear_epilogue".to_string()]);
            }
            let bases: &[&str] = if tensor_cores { &["gemm_mma"] } else { &["gemm_tiled"] };
            for base in bases {
                for (residual, bias) in [(false, false), (true, false), (false, true), (true, true)] {
                    out.push(product_kernel(base, residual, bias));
                }
            }
            out
        }
        "attention" => {
            let mut out = names(&["attn_split", "attn_single", "attn_single_narrow", "attn_online"]);
            if tensor_cores {
                out.extend(cuda::FLASH_HEAD_DIMS.iter().map(|d| format!("attn_flash_{d}")));
            }
            out
        }
        other => unreachable!("no kernel family {other}"),
    }
}
