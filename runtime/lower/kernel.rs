//! The typed vocabulary of a lowered step: which kernel variant a launch runs
//! ([`Variant`], chosen per step) and the static parameters of what it computes
//! ([`Params`], fixed per launch template, fused prologue and epilogue included).

use serde::{Deserialize, Serialize};

use super::caps::{FlatTiling, Tile};
use crate::dataflow::LinearImpl;

/// The unified max phi of the split-KV attention and the safe range of s - phi. Scores and
/// sums stay in f32, so any phi works while e^(s - phi) neither overflows nor underflows;
/// the default keeps |s - phi| < 60 (e^60 * 8192 keys ~ 1e30 < f32 max). A row whose
/// scores leave the range is recomputed with the synchronised softmax.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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

/// Where the lowering's phi came from, for the reason it records on split-KV steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum PhiSource {
    /// `UnifiedMax::default()` (or values a caller gave): no calibration was found or asked for.
    #[default]
    Default,
    /// `fdpp calibrate` chose phi per layer from the scores of `prompts` prompts on `date`.
    Calibrated { prompts: usize, date: String },
}

impl std::fmt::Display for PhiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PhiSource::Default => f.write_str("default, not calibrated: fdpp calibrate"),
            PhiSource::Calibrated { prompts, date } => write!(f, "calibrated on {prompts} prompts on {date}"),
        }
    }
}

/// Attention head counts and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeadDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadDims {
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Width of a fused QKV row.
    pub fn qkv_width(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }
}

/// The kernel variant a launch runs, with the parameters the lowering chose for this step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kernel")]
pub enum Variant {
    /// Rows of a table picked by token id.
    Gather,
    RmsNorm,
    /// A: one pass over the weights per token row, parallel over N. `per_warp`: each warp
    /// owns a group of columns and holds all of a short K in registers
    /// (`LinearKernels::gemv_per_warp_max_k`).
    Gemv {
        split_k: bool,
        #[serde(default)]
        per_warp: bool,
    },
    /// B: M padded to the tile's rows, N tiled across workgroups, K walked inside one.
    FlatGemm {
        tiling: FlatTiling,
    },
    /// C: conventional 2-D tiled GEMM.
    Gemm {
        tile: Tile,
    },
    Rope,
    /// Decode attention: the keys cut into `chunks` of `chunk_keys`, summed with one
    /// unified max (FlashDecoding++ technique 1).
    SplitKvAttention {
        chunks: usize,
        chunk_keys: usize,
        unified: UnifiedMax,
        /// One chunk per (token, head) in narrow blocks, two to an SM
        /// (`SplitKvLimits::single_narrow`).
        #[serde(default)]
        narrow: bool,
    },
    /// One workgroup per (token, head) with the synchronised online softmax.
    OnlineAttention,
    /// Tensor cores: `rows` query rows per block, keys in tiles of `keys`, online softmax
    /// (FlashAttention-2's loop).
    FlashAttention {
        rows: usize,
        keys: usize,
    },
    /// Scores, softmax, values: the CPU oracle's attention.
    TwoPassAttention,
    SwiGlu,
    Add,
    SelectRows,
}

impl Variant {
    /// A short name, e.g. `A:gemv`.
    pub fn label(&self) -> &'static str {
        match self {
            Variant::Gather => "gather",
            Variant::RmsNorm => "rms_norm",
            Variant::Gemv { .. } => "A:gemv",
            Variant::FlatGemm { .. } => "B:flat_gemm",
            Variant::Gemm { .. } => "C:gemm",
            Variant::Rope => "rope",
            Variant::SplitKvAttention { .. } => "split-KV unified max",
            Variant::OnlineAttention => "online softmax",
            Variant::FlashAttention { .. } => "flash (tensor cores)",
            Variant::TwoPassAttention => "two-pass softmax",
            Variant::SwiGlu => "swiglu",
            Variant::Add => "add",
            Variant::SelectRows => "select_rows",
        }
    }

    /// The dataflow (A/B/C) of a linear variant.
    pub fn dataflow(&self) -> Option<LinearImpl> {
        match self {
            Variant::Gemv { .. } => Some(LinearImpl::Gemv),
            Variant::FlatGemm { .. } => Some(LinearImpl::FlatGemm),
            Variant::Gemm { .. } => Some(LinearImpl::Gemm),
            _ => None,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())?;
        match self {
            Variant::Gemv { split_k: true, .. } => f.write_str(" (split K)"),
            Variant::Gemv { per_warp: true, .. } => f.write_str(" (a warp per column group)"),
            Variant::FlatGemm { tiling } => write!(f, " (tile {tiling})"),
            Variant::Gemm { tile } => write!(f, " (tile {tile})"),
            Variant::FlashAttention { rows, keys } => write!(f, " ({rows} rows x {keys}-key tiles)"),
            Variant::SplitKvAttention { chunks, chunk_keys, unified, narrow } => {
                let narrow = if *narrow { ", narrow blocks" } else { "" };
                write!(f, " ({chunks} x {chunk_keys} keys{narrow}, phi {}, range ({}, {}))", unified.phi, unified.lo, unified.hi)
            }
            _ => Ok(()),
        }
    }
}

/// Work done before a linear layer's product, on its input.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Prologue {
    /// x / rms(x) * g: the RMSNorm before the layer (its weight is the launch's norm weight).
    RmsNorm { eps: f32 },
}

/// Work done on a linear layer's outputs before they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Epilogue {
    None,
    /// + the residual stream (the launch's second input): the residual add after the layer.
    Residual,
    /// silu(gate) * up of each column pair (gate j, up j): the SwiGLU after gate/up.
    SwiGlu,
    /// Rotary embedding of each Q and K pair, and the K and V rows appended to the KV cache:
    /// the RoPE (with its KV write) after the QKV projection.
    Rope {
        dims: HeadDims,
    },
}

/// What a launch computes, fixed for the launch template whatever variant runs it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Params {
    /// Table rows `first_row .. first_row + rows` (one chunk of the table) of width `hidden`.
    Embedding {
        hidden: usize,
        first_row: usize,
        rows: usize,
    },
    RmsNorm {
        width: usize,
        eps: f32,
    },
    /// Output columns `n_offset .. n_offset + n` (one weight chunk) of rows of stride `ldy`;
    /// `bias`: the layer's bias is added to the product, before the epilogue.
    Linear {
        n: usize,
        k: usize,
        n_offset: usize,
        ldy: usize,
        bias: bool,
        prologue: Option<Prologue>,
        epilogue: Epilogue,
    },
    /// `kv_write`: also appends the rotated K and the V to the KV cache.
    Rope {
        dims: HeadDims,
        kv_write: bool,
    },
    /// `kv_write`: appends K and V first (false when the RoPE before it does).
    Attention {
        dims: HeadDims,
        layer: usize,
        scale: f32,
        kv_write: bool,
        unified: UnifiedMax,
    },
    SwiGlu {
        ffn: usize,
    },
    Add {
        width: usize,
    },
    SelectRows {
        width: usize,
    },
}

/// The scalar parameters of a launch as GPU kernels read them, filled from its template once:
/// the wgpu backend's node uniform and the CUDA backend's kernel arguments are built from
/// it (each adds what only its kernels need). `mode` here is only the RoPE's KV write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LaunchScalars {
    /// 1: the launch's rows are the step's output rows (`n_out`), 0: all its tokens (`m`).
    pub rows_out: u32,
    pub n: u32,
    pub k: u32,
    pub n_offset: u32,
    pub ldy: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// First flag word of an attention layer.
    pub flag_offset: u32,
    pub mode: u32,
    /// KV positions per sequence (the caches' stride).
    pub max_ctx: u32,
    pub eps: f32,
    pub scale: f32,
    pub phi: f32,
    pub lo: f32,
    pub hi: f32,
}

impl LaunchScalars {
    /// The scalars of template `t`; `flag_offset(layer)` is an attention layer's first flag.
    pub fn of(t: &super::Template, max_ctx: usize, flag_offset: impl Fn(usize) -> usize) -> LaunchScalars {
        let base = LaunchScalars { rows_out: t.out_rows as u32, max_ctx: max_ctx as u32, ..Default::default() };
        let u = |v: usize| v as u32;
        let dims = |d: HeadDims| LaunchScalars { heads: u(d.heads), kv_heads: u(d.kv_heads), head_dim: u(d.head_dim), ..base };
        match t.params {
            Params::Embedding { hidden, first_row, rows } => LaunchScalars { n: u(rows), k: u(hidden), n_offset: u(first_row), ..base },
            Params::RmsNorm { width, eps } => LaunchScalars { k: u(width), eps, ..base },
            Params::Linear { n, k, n_offset, ldy, prologue, epilogue, .. } => {
                let with_dims = if let Epilogue::Rope { dims: d } = epilogue { dims(d) } else { base };
                let eps = prologue.map_or(0.0, |Prologue::RmsNorm { eps }| eps);
                LaunchScalars { n: u(n), k: u(k), n_offset: u(n_offset), ldy: u(ldy), eps, ..with_dims }
            }
            Params::Rope { dims: d, kv_write } => LaunchScalars { n: u(d.qkv_width()), mode: kv_write as u32, ..dims(d) },
            Params::Attention { dims: d, layer, scale, unified, .. } => {
                LaunchScalars { flag_offset: u(flag_offset(layer)), scale, phi: unified.phi, lo: unified.lo, hi: unified.hi, ..dims(d) }
            }
            Params::SwiGlu { ffn } => LaunchScalars { n: u(ffn), ..base },
            Params::Add { width } | Params::SelectRows { width } => LaunchScalars { n: u(width), ..base },
        }
    }
}
