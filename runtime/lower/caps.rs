//! What a backend offers the lowering: its kernels (tiles, row limits, which fusions its
//! kernels implement), its memory limits and its dataflow table. Queried once when the
//! device is opened and handed to the lowering; each backend also has a built-in profile,
//! so a plan can be made and inspected on a machine without its device.

use serde::{Deserialize, Serialize};

use crate::dataflow::DataflowTable;
pub use crate::dataflow::{FlatTiling, Tile};
use crate::lower::kernel::Variant;
use crate::tensor::{DType, FileType};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
    Hip,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Hip => "hip",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The linear-layer kernels of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearKernels {
    /// Most token rows the GEMV kernel takes; a larger M the table gives to A runs B.
    pub gemv_max_m: usize,
    /// From this K on, the GEMV splits K over two lane groups per column pair (where the
    /// table does not say for the shape); `None`: the GEMV has no split-K form.
    pub gemv_split_k_min: Option<usize>,
    /// Up to this K (a multiple of 8), the GEMV gives each warp its own columns, its lanes
    /// holding all of K's weights in registers, loaded before the kernel before has finished;
    /// `None`: the GEMV has no such form.
    #[serde(default)]
    pub gemv_per_warp_max_k: Option<usize>,
    /// The flat GEMM's tilings (M padded to the tile's rows); the first where the table names
    /// none for the shape (and `flat_long_k` does not apply).
    pub flat_tilings: Vec<FlatTiling>,
    /// B's default tiling for shapes of long K and few columns, where the table names none.
    #[serde(default)]
    pub flat_long_k: Option<LongKTiling>,
    /// B's default tiling for shapes of many columns and short K (an LM head), where the
    /// table names none.
    #[serde(default)]
    pub flat_wide: Option<WideTiling>,
    /// B on matrix units, the default tiling for the shapes it applies to where the table
    /// names none (`flat_tilings` holds it too); `None`: the device has no such kernel.
    #[serde(default)]
    pub flat_matrix: Option<MatrixTiling>,
    /// The conventional GEMM's tile.
    pub gemm_tile: Tile,
    /// Fewest rows the GEMM runs on: below, B runs where the table gives C (a backend whose
    /// GEMM cannot serve small steps; every backend today takes 1).
    #[serde(default = "one")]
    pub gemm_min_m: usize,
}

impl LinearKernels {
    /// A for K, in its split-K form or not: a warp per column group where K is short enough.
    pub fn gemv(&self, k: usize, split_k: bool) -> Variant {
        Variant::Gemv { split_k, per_warp: !split_k && self.gemv_per_warp(k) }
    }

    /// Whether B's `tiling` is the backend's and runs on K (the matrix tiling takes only K
    /// in whole 16-deep operands).
    pub fn flat_takes(&self, tiling: FlatTiling, k: usize) -> bool {
        self.flat_tilings.contains(&tiling) && self.flat_matrix.is_none_or(|m| m.tiling != tiling || k.is_multiple_of(16))
    }

    /// Whether the GEMV gives each warp its own columns at K.
    pub fn gemv_per_warp(&self, k: usize) -> bool {
        self.gemv_per_warp_max_k.is_some_and(|max| k <= max && k.is_multiple_of(8))
    }
}

/// A flat-GEMM tiling for [N, K] with N >= `min_n` and K < `max_k`, from the first row on
/// where the table names none: there the GEMV's blocks of a few columns each walk too short
/// a K to keep their lanes busy, and each redoes the row's RMSNorm when it carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WideTiling {
    pub max_k: usize,
    pub min_n: usize,
    pub tiling: FlatTiling,
}

impl WideTiling {
    pub fn applies(&self, n: usize, k: usize) -> bool {
        k < self.max_k && n >= self.min_n
    }
}

/// B on the device's matrix units for [N, K] with K in whole 16-deep operands and at most
/// `max_k`: beyond, the CUDA-core tilings read the weights faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixTiling {
    pub max_k: usize,
    pub tiling: FlatTiling,
}

impl MatrixTiling {
    pub fn applies(&self, k: usize) -> bool {
        k.is_multiple_of(16) && k <= self.max_k
    }
}

/// A flat-GEMM tiling that splits K over more warps, the default for [N, K] with
/// K >= `min_k` and N <= `max_n`: there the first tiling, one block per column group, puts
/// too few warps on the GPU, and each warp still walks several slabs of K.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongKTiling {
    pub min_k: usize,
    pub max_n: usize,
    pub tiling: FlatTiling,
}

impl LongKTiling {
    pub fn applies(&self, n: usize, k: usize) -> bool {
        k >= self.min_k && n <= self.max_n
    }
}

/// Limits of a split-KV unified-max decode attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitKvLimits {
    /// Most chunks one (token, head) is cut into (adding the partials up walks them one by
    /// one).
    pub max_chunks: usize,
    /// Fewest keys per chunk (the kernel's key tile); chunk lengths are multiples of it.
    pub min_chunk_keys: usize,
    /// Most token rows one step may have (the flags and partials are sized for it).
    pub max_rows: usize,
    /// Blocks (rows x heads x chunks) that fill the device about once, where its size is
    /// known: the chunk count is chosen to reach it and no more. `None`: as many chunks
    /// as `max_chunks` allows.
    #[serde(default)]
    pub target_blocks: Option<usize>,
    /// Up to this many keys, and with at least `single_min_rows_heads` (token, head) pairs
    /// in the step, each pair is one chunk: the backend adds up and divides inside its block
    /// (no partials). With fewer pairs the few blocks' loads in flight bound the read, and
    /// more chunks are faster.
    #[serde(default)]
    pub single_max_keys: Option<usize>,
    #[serde(default)]
    pub single_min_rows_heads: usize,
    /// From this many (token, head) pairs, more than the device has SMs, a one-chunk step
    /// runs narrow blocks (half the warps), two to an SM, so every pair runs in one wave.
    /// `None`: never.
    #[serde(default)]
    pub single_narrow_min_rows_heads: Option<usize>,
}

impl SplitKvLimits {
    /// (chunks, keys per chunk) for `keys` keys of each of `rows_heads` (token, head)
    /// pairs. One chunk where `single` says so. With a target, fewer and longer chunks as rows and heads grow (a chunk
    /// shorter than needed only adds partials to write and add); else chunks of
    /// `min_chunk_keys` while at most `max_chunks` cover the keys, then powers of two.
    pub fn chunking(&self, keys: usize, rows_heads: usize) -> (usize, usize) {
        let keys = keys.max(1);
        if self.single(keys, rows_heads) {
            return (1, keys.next_multiple_of(self.min_chunk_keys));
        }
        let per_chunk = match self.target_blocks {
            Some(target) => {
                let chunks = target.div_ceil(rows_heads.max(1)).clamp(1, self.max_chunks);
                keys.div_ceil(chunks).next_multiple_of(self.min_chunk_keys)
            }
            None => keys.div_ceil(self.max_chunks).next_power_of_two().max(self.min_chunk_keys),
        };
        (keys.div_ceil(per_chunk), per_chunk)
    }

    /// Whether `keys` keys of `rows_heads` (token, head) pairs are one chunk each.
    pub fn single(&self, keys: usize, rows_heads: usize) -> bool {
        self.single_max_keys.is_some_and(|max| keys <= max) && rows_heads >= self.single_min_rows_heads
    }

    /// Whether a one-chunk step of `rows_heads` (token, head) pairs runs narrow blocks.
    pub fn single_narrow(&self, keys: usize, rows_heads: usize) -> bool {
        self.single(keys, rows_heads) && self.single_narrow_min_rows_heads.is_some_and(|min| rows_heads >= min)
    }
}

/// The attention kernel of steps that are not split-KV decode steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GeneralAttention {
    /// Tiles of keys with the synchronised online softmax.
    Online,
    /// All scores, then the softmax, then the values (the CPU oracle).
    TwoPass,
}

/// A tensor-core attention kernel for steps that are not split-KV decode steps (prefill).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlashLimits {
    /// Query rows per block.
    pub rows: usize,
    /// Keys per tile.
    pub keys: usize,
    /// The head sizes it is compiled for.
    pub head_dims: Vec<usize>,
    /// Its rows must all be of one sequence: it runs only on steps of one sequence.
    #[serde(default)]
    pub one_sequence: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionKernels {
    pub split_kv: Option<SplitKvLimits>,
    /// Where present, prefill runs it for the head sizes it takes, else `general`.
    pub flash: Option<FlashLimits>,
    pub general: GeneralAttention,
    pub max_head_dim: usize,
}

/// Which fusions the backend's kernels implement (the lowering applies only these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusionSupport {
    /// A residual add in any linear kernel's epilogue.
    pub residual_epilogue: bool,
    /// The attention's KV-cache write inside the RoPE before it.
    pub kv_write_in_rope: bool,
    /// An RMSNorm in the GEMV's prologue.
    pub gemv_norm_prologue: bool,
    /// SwiGLU in the gate/up GEMV's epilogue.
    pub gemv_swiglu_epilogue: bool,
    /// RoPE with the KV write in the QKV GEMV's epilogue.
    pub gemv_rope_epilogue: bool,
    /// The flat GEMM (B) has the GEMV's prologue and epilogues too, so steps that run B fuse
    /// like those that run A.
    #[serde(default)]
    pub flat_gemm_fusions: bool,
}

impl FusionSupport {
    pub const NONE: FusionSupport = FusionSupport {
        residual_epilogue: false,
        kv_write_in_rope: false,
        gemv_norm_prologue: false,
        gemv_swiglu_epilogue: false,
        gemv_rope_epilogue: false,
        flat_gemm_fusions: false,
    };
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendCaps {
    pub backend: BackendKind,
    /// The device as its driver names it, or which built-in profile this is.
    pub device: String,
    /// The driver's version, where the backend reports one.
    #[serde(default)]
    pub driver: String,
    /// SHA-256 of the kernel sources as this device compiles them (the tuner's profiles are
    /// only valid for the kernels they measured); empty for built-in profiles.
    #[serde(default)]
    pub kernels: String,
    /// How weights are stored on the device.
    pub weight_dtype: DType,
    /// Block-quantized file types whose matrices the kernels read as stored, dequantizing
    /// as they load (empty: every weight is widened to `weight_dtype`).
    #[serde(default)]
    pub native_weights: Vec<FileType>,
    /// How the KV cache is stored (files written before this field existed: f32).
    #[serde(default = "f32_kv")]
    pub kv_dtype: DType,
    /// Largest buffer one kernel argument may cover: larger weights are split by rows.
    pub max_binding_bytes: u64,
    /// The device is emulated on the host's CPU (a software rasteriser such as lavapipe):
    /// what it allocates is host memory, which a load's estimate is checked against.
    #[serde(default)]
    pub host_emulated: bool,
    /// Lanes of a subgroup where subgroup operations are used.
    pub subgroup_size: Option<u32>,
    /// Tensor-core / cooperative-matrix instructions available to the kernels.
    pub cooperative_matrix: bool,
    pub linear: LinearKernels,
    pub attention: AttentionKernels,
    pub fusions: FusionSupport,
    /// The device picks greedy ids itself and can feed them to the next step.
    pub device_argmax: bool,
    /// Largest top-k the device samples itself; `None`: sampling reads the logits back.
    pub device_top_k: Option<usize>,
    pub table: DataflowTable,
}

/// Facts of the WGSL kernels (shaders/*.wgsl) that the lowering and the wgpu launcher
/// need. The shader loader writes each into every kernel's header, so they are written
/// only here.
pub mod wgsl {
    /// Token rows the GEMV kernel holds (`GEMV_MAX_M`).
    pub const GEMV_MAX_M: usize = 8;
    /// Column pairs per GEMV workgroup (`GV_GROUPS`): 8 columns, or 4 SwiGLU / RoPE pairs.
    pub const GV_GROUPS: usize = 4;
    /// From this K on, `gemv_split_k`. On an H200, Llama-2-7B's down projection (K = 11008)
    /// gained 9% with it and every K = 4096 shape lost 4-11% (`fdpp bench kernels`).
    pub const GEMV_SPLIT_K_MIN: usize = 8192;
    /// The flat GEMM's rows per workgroup (`FB_M`), and its tilings: (`FB_GROUPS` lane groups
    /// of `FB_CPL` columns side by side, `FB_KGROUPS` lane groups splitting K), at most
    /// `FB_MAX_LANE_GROUPS` lane groups in all; pipeline constants of one kernel. The first
    /// is the default: 16 columns with K over 2 lane groups. `fdpp tune` on an H200 chose it
    /// for Llama-2-7B's O, gate/up and down and SmolLM2's QKV, O and gate/up, where the
    /// 32-column tile leaves N = 4096 or 576 with few workgroups; its table took the 7B
    /// batch-8 step from 521 to 624 tok/s and SmolLM2's from 2208 to 3147, same call
    /// (bench/results/h200.md, 2026-11-30, session 4).
    pub const FB_M: usize = 8;
    pub const FB_CPL: usize = 8;
    pub const FB_MAX_LANE_GROUPS: usize = 8;
    pub const FLAT_TILINGS: [(usize, usize); 7] = [(2, 2), (4, 1), (2, 1), (1, 1), (1, 4), (2, 4), (1, 8)];

    /// `FLAT_TILINGS` as the lowering's tilings.
    pub fn flat_tilings() -> Vec<super::FlatTiling> {
        FLAT_TILINGS
            .iter()
            .map(|&(groups, k_groups)| super::FlatTiling { tile: super::Tile { m: FB_M, n: groups * FB_CPL }, k_groups })
            .collect()
    }
    /// The tiled GEMM's square tile (`GM`).
    pub const GM: usize = 64;
    /// The GEMM on cooperative matrices (`gemm_matrix.wgsl`, where the adapter has them):
    /// tokens x columns per workgroup (`MX_M`, `MX_N`) and K per staged step (`MX_K`).
    pub const MATRIX_TILE_M: usize = 64;
    pub const MATRIX_TILE_N: usize = 128;
    pub const MATRIX_K: usize = 32;
    /// B on cooperative matrices (`flat_matrix.wgsl`, where the adapter has them and the
    /// weights are f16): token rows per workgroup (M padded to them), columns per workgroup,
    /// subgroups splitting K; the longest K it is the default for. On an H200 at batch 8 it
    /// took SmolLM2-135M's step (K = 576 and 1536) from 2082 to 2782 tok/s and
    /// Llama-2-7B's (K = 4096 and 11008) from 486 to 373.
    pub const FLAT_MATRIX_ROWS: usize = 16;
    pub const FLAT_MATRIX_N: usize = 32;
    pub const FLAT_MATRIX_SPLIT: usize = 8;
    pub const FLAT_MATRIX_MAX_K: usize = 2048;

    /// `flat_matrix` as the lowering's tiling.
    pub fn flat_matrix() -> super::FlatTiling {
        super::FlatTiling { tile: super::Tile { m: FLAT_MATRIX_ROWS, n: FLAT_MATRIX_N }, k_groups: FLAT_MATRIX_SPLIT }
    }

    /// Where `flat_matrix` is the default.
    pub fn matrix_tiling() -> super::MatrixTiling {
        super::MatrixTiling { max_k: FLAT_MATRIX_MAX_K, tiling: flat_matrix() }
    }
    /// The prefill attention on cooperative matrices (`attention_matrix.wgsl`, where the
    /// adapter has them and the KV cache is f16): query rows per workgroup, keys per tile,
    /// and the longest head (`MX_MAX_HD`; any multiple of 16 up to it).
    pub const MATRIX_ATTN_ROWS: usize = 16;
    pub const MATRIX_ATTN_KEYS: usize = 16;
    pub const MATRIX_ATTN_MAX_HD: usize = 128;

    /// The matrix attention as the lowering sees it.
    pub fn matrix_attention() -> super::FlashLimits {
        super::FlashLimits {
            rows: MATRIX_ATTN_ROWS,
            keys: MATRIX_ATTN_KEYS,
            head_dims: (16..=MATRIX_ATTN_MAX_HD).step_by(16).collect(),
            one_sequence: true,
        }
    }
    /// The shortest chunk of `attn_split`: one round of its lane groups at head size 128
    /// (four groups of 16 lanes, four keys each).
    pub const SPLIT_TILE: usize = 16;
    /// Chunks per (token, head) of the split-KV attention (the partials are sized for it).
    pub const MAX_ATTN_CHUNKS: usize = 64;
    /// Split-KV workgroups a decode step aims at (`SplitKvLimits::target_blocks`): fewer,
    /// longer chunks as rows grow. wgpu does not say how many compute units an adapter has;
    /// this suits a large GPU and costs a small one little (longer chunks, fewer partials).
    /// On an H200 after a 512-token prompt (bench/results/h200.md, session 16, call 2),
    /// against chunks of 16 keys at every batch: SmolLM2 batch 8 3061 -> 2711 us per step,
    /// Llama-2-7B batch 8 13303 -> 12409; batch 1 at 512 keys unchanged (the same chunks);
    /// 7B batch 1 at 4096 keys 6085 -> 6170 (32 chunks of 128 instead of 64 of 64; in
    /// call 3 2048 workgroups, the 64 chunks, lost to it: 6492 against 6143).
    pub const ATTN_TARGET_BLOCKS: usize = 1024;
    /// Most rows of a split-KV step (flags per layer are sized for it).
    pub const SPLIT_MAX_M: usize = 64;
    /// Longest head the attention kernels hold (`MAX_HD`).
    pub const MAX_HEAD_DIM: usize = 256;
    /// `node.mode` bits of the linear kernels: which prologue and epilogue run.
    pub const MODE_RESIDUAL: u32 = 1;
    pub const MODE_NORM: u32 = 2;
    pub const MODE_SWIGLU: u32 = 4;
    pub const MODE_ROPE: u32 = 8;
    /// Top-k the device sampler takes (`MAX_K` in sampling.wgsl).
    pub const SAMPLER_MAX_K: usize = 256;

    /// The constants as WGSL declarations.
    pub fn header() -> String {
        let u = |name: &str, v: usize| format!("const {name}: u32 = {v}u;\n");
        [
            u("GEMV_MAX_M", GEMV_MAX_M),
            u("GV_GROUPS", GV_GROUPS),
            u("FB_M", FB_M),
            u("FB_MAX_LANE_GROUPS", FB_MAX_LANE_GROUPS),
            u("GM", GM),
            u("MX_M", MATRIX_TILE_M),
            u("MX_N", MATRIX_TILE_N),
            u("MX_K", MATRIX_K),
            u("MX_MAX_HD", MATRIX_ATTN_MAX_HD),
            u("FM_ROWS", FLAT_MATRIX_ROWS),
            u("FM_N", FLAT_MATRIX_N),
            u("FM_SPLIT", FLAT_MATRIX_SPLIT),
            u("MAX_HD", MAX_HEAD_DIM),
            u("MODE_RESIDUAL", MODE_RESIDUAL as usize),
            u("MODE_NORM", MODE_NORM as usize),
            u("MODE_SWIGLU", MODE_SWIGLU as usize),
            u("MODE_ROPE", MODE_ROPE as usize),
            u("MAX_K", SAMPLER_MAX_K),
        ]
        .concat()
    }
}

/// Facts of the CUDA kernels (vendor_kernels/cuda/*.cu) that the lowering and the CUDA
/// launcher need, written into every kernel's header as `#define`s.
pub mod cuda {
    /// Token rows the GEMV kernels hold in registers (`GEMV_MAX_M`).
    pub const GEMV_MAX_M: usize = 8;
    /// Warps per GEMV block, splitting K (`GV_WARPS`).
    pub const GV_WARPS: usize = 8;
    /// Columns (SwiGLU / RoPE: half as many pairs) per GEMV block (`GV_COLS`). On an H200,
    /// 8 won 2.6% of SmolLM2's batch-1 step (K = 576) and lost 5.2% of Llama-2-7B's.
    pub const GV_COLS: usize = 4;
    /// The GEMV with a warp per GV_COLS columns (`_w` kernels): warps per block, and the
    /// 16-byte pieces per lane and column it loads before waiting for the kernel before
    /// (`GW_PRELOAD`); it runs where they hold all of K. On an H200 (bench/results/h200.md,
    /// session 10) SmolLM2's K = 576 products took its batch-1 step from 551 to 525 us; with
    /// K = 1536 half preloaded as well, 574; Llama-2-7B's K >= 4096 lost 3% (4129 -> 4250).
    pub const GW_WARPS: usize = 4;
    pub const GW_PRELOAD: usize = 3;
    pub const GW_WARP_MAX_K: usize = 32 * 8 * GW_PRELOAD;
    /// The tensor-core flat GEMM's tilings: (tokens, columns, warps splitting K) per block;
    /// tokens and columns multiples of mma's 8 and 16. The first is the default (but see
    /// `FLAT_LONG_K`). Wider column tiles read the activations fewer times; taller token tiles
    /// read each weight fragment once for up to 32 tokens; more warps put more loads in
    /// flight where there are few column groups.
    pub const FLAT_TILINGS: [(usize, usize, usize); 7] =
        [(8, 16, 8), (8, 16, 4), (8, 32, 4), (8, 32, 8), (16, 16, 8), (32, 16, 8), (8, 16, 16)];
    /// The untuned default from K = 4096 on N <= 8192 columns: 8 x 16 with K over 16 warps.
    /// On an H200 at M = 8 (bench/results/h200.md, session 6) it took Llama-2-7B's O from
    /// 15.1 to 11.1 us and down from 37.0 to 26.2 against 8 x 16 over 8 warps. Wider shapes
    /// have blocks enough: QKV's plain product gained (33.5 -> 30.1 us) but its RoPE + KV
    /// write epilogue, run by few threads after a 16-warp reduction, lost more (a batch-8
    /// step 5232 -> 5686 us with QKV on it too); gate/up lost 53.5 -> 54.8.
    pub const FLAT_LONG_K: (usize, usize, (usize, usize, usize)) = (4096, 8192, (8, 16, 16));
    /// The untuned default from N = 16384 on with K < 2048 (GV_WARPS x 32 lanes x 8 halves:
    /// shorter K leaves GEMV lanes idle), from one row: 8 x 32 over 4 warps. On an H200
    /// SmolLM2's LM head [49152, 576] with its RMSNorm at M = 1 took 42.5 us on the GEMV and
    /// 18.1 on this tiling (bench/results/h200.md, session 7, call E).
    pub const FLAT_WIDE: (usize, usize, (usize, usize, usize)) = (GV_WARPS * 32 * 8, 16384, (8, 32, 4));

    fn tiling((m, n, warps): (usize, usize, usize)) -> super::FlatTiling {
        super::FlatTiling { tile: super::Tile { m, n }, k_groups: warps }
    }

    /// `FLAT_TILINGS` as the lowering's tilings.
    pub fn flat_tilings() -> Vec<super::FlatTiling> {
        FLAT_TILINGS.into_iter().map(tiling).collect()
    }

    /// `FLAT_LONG_K` for the lowering.
    pub fn flat_long_k() -> super::LongKTiling {
        let (min_k, max_n, t) = FLAT_LONG_K;
        super::LongKTiling { min_k, max_n, tiling: tiling(t) }
    }
    /// `FLAT_WIDE` for the lowering.
    pub fn flat_wide() -> super::WideTiling {
        let (max_k, min_n, t) = FLAT_WIDE;
        super::WideTiling { max_k, min_n, tiling: tiling(t) }
    }
    /// The tensor-core GEMM: 64 tokens x 128 columns per block (8 warps).
    pub const GEMM_TILE_M: usize = 64;
    pub const GEMM_TILE_N: usize = 128;
    /// The CUDA-core GEMM of f32 weights (B and C alike): 64 x 64 per block.
    pub const TILED_TILE: usize = 64;
    /// Threads per block of the elementwise kernels (`ELEM_BLOCK`) and of the row kernels.
    pub const ELEM_BLOCK: usize = 256;
    /// Warps per attention block (`ATT_WARPS`).
    pub const ATT_WARPS: usize = 4;
    /// Fewest keys per split-KV chunk, and most chunks per (token, head) (the partials are
    /// sized for it).
    pub const SPLIT_MIN_KEYS: usize = 32;
    pub const MAX_ATTN_CHUNKS: usize = 32;
    /// Split-KV blocks per SM a decode step aims at (`SplitKvLimits::target_blocks`). On an
    /// H200, Llama-2-7B's 32 heads at 4096 keys: 16 chunks (3.9 blocks per SM) took 25.4 us,
    /// 32 chunks 27.6; past 4096 keys 9 chunks (2.2 per SM) lost 8% of the step, 26 (6.3)
    /// lost 4%.
    pub const ATTN_BLOCKS_PER_SM: usize = 4;
    /// SMs of the GPU the built-in CUDA profile assumes (an H200); a device gives its own.
    pub const BUILTIN_SMS: usize = 132;
    /// Most rows of a split-KV step (flags per layer are sized for it).
    pub const SPLIT_MAX_M: usize = 64;
    /// Up to this many keys, with at least half as many (token, head) pairs as the device
    /// has SMs, a decode step's pair is one block of `SINGLE_WARPS` warps (`attn_single`):
    /// no partials (`SplitKvLimits::single`). On an H200 after a
    /// 512-token prompt (bench/results/h200.md, session 8): SmolLM2 batch 8 (72 pairs)
    /// 842 -> 779 us per step, Llama-2-7B batch 8 (256) 5145 -> 4991; at batch 1 (9 and 32
    /// pairs) it lost, 572 -> 581 and 4173 -> 4288; near 1000 keys batch 8 lost 0.8%.
    pub const SINGLE_MAX_KEYS: usize = 768;
    pub const SINGLE_WARPS: usize = 16;
    /// Warps of the narrow one-chunk block (`attn_single_narrow`), run where a step has more
    /// (token, head) pairs than the device has SMs (`SplitKvLimits::single_narrow`): a
    /// 16-warp block holds an SM alone, so those pairs took two waves. On an H200, Llama-2-7B
    /// batch 8 (256 pairs) after a 512-token prompt: 4868 -> 4719 us per step (session 17,
    /// call 1); SmolLM2 batch 8 (72 pairs) lost with it, 750 -> 816.
    pub const SINGLE_NARROW_WARPS: usize = 8;
    /// Longest head the attention kernels hold (`MAX_HEAD_DIM`).
    pub const MAX_HEAD_DIM: usize = 256;
    /// The tensor-core prefill attention (f16 KV cache): query rows per block (16 per warp),
    /// keys per tile, and the head sizes it is compiled for (`attn_flash_<size>`).
    pub const FLASH_ROWS: usize = ATT_WARPS * 16;
    pub const FLASH_KEYS: usize = 64;
    pub const FLASH_HEAD_DIMS: [usize; 2] = [64, 128];

    /// The constants as C `#define`s, and the storage types of weights and KV cache.
    pub fn header(f16_weights: bool, f16_kv: bool) -> String {
        let d = |name: &str, v: usize| format!("#define {name} {v}\n");
        [
            d("FDPP_W_F16", f16_weights as usize),
            d("FDPP_KV_F16", f16_kv as usize),
            d("GEMV_MAX_M", GEMV_MAX_M),
            d("GV_WARPS", GV_WARPS),
            d("GV_COLS", GV_COLS),
            d("GW_PRELOAD", GW_PRELOAD),
            d("ELEM_BLOCK", ELEM_BLOCK),
            d("ATT_WARPS", ATT_WARPS),
            d("SINGLE_WARPS", SINGLE_WARPS),
            d("SINGLE_NARROW_WARPS", SINGLE_NARROW_WARPS),
            d("MAX_HEAD_DIM", MAX_HEAD_DIM),
            d("FLASH_ROWS", FLASH_ROWS),
            d("FLASH_KEYS", FLASH_KEYS),
            format!(
                "#define FLAT_TILINGS(X) {}\n",
                FLAT_TILINGS.iter().map(|(m, n, w)| format!("X({m}, {n}, {w})")).collect::<Vec<_>>().join(" ")
            ),
        ]
        .concat()
    }
}

fn one() -> usize {
    1
}

fn f32_kv() -> DType {
    DType::F32
}

impl BackendCaps {
    /// The built-in profile of a backend, for planning without its device.
    pub fn builtin(kind: BackendKind) -> Option<BackendCaps> {
        match kind {
            BackendKind::Cpu => Some(BackendCaps::cpu()),
            BackendKind::Wgpu => Some(BackendCaps::wgpu_builtin()),
            BackendKind::Cuda => Some(BackendCaps::cuda_builtin(DType::F16)),
            BackendKind::Hip => Some(BackendCaps::hip_builtin(DType::F16)),
        }
    }

    /// The CPU oracle: f32 weights, plain kernels, only the fusions that cost it nothing.
    pub fn cpu() -> BackendCaps {
        BackendCaps {
            backend: BackendKind::Cpu,
            device: "cpu".into(),
            driver: String::new(),
            kernels: String::new(),
            weight_dtype: DType::F32,
            native_weights: vec![],
            kv_dtype: DType::F32,
            max_binding_bytes: u64::MAX,
            host_emulated: false,
            subgroup_size: None,
            cooperative_matrix: false,
            // GEMV walks rows one by one; the flat GEMM multiplies each weight row with 4
            // token rows while it sits in L1 (64 weight rows per task); the GEMM takes
            // blocks of 64 tokens x 64 weight rows.
            linear: LinearKernels {
                gemv_max_m: usize::MAX,
                gemv_split_k_min: None,
                gemv_per_warp_max_k: None,
                flat_tilings: vec![FlatTiling { tile: Tile { m: 4, n: 64 }, k_groups: 1 }],
                flat_long_k: None,
                flat_wide: None,
                flat_matrix: None,
                gemm_tile: Tile { m: 64, n: 64 },
                gemm_min_m: 1,
            },
            attention: AttentionKernels { split_kv: None, flash: None, general: GeneralAttention::TwoPass, max_head_dim: usize::MAX },
            fusions: FusionSupport { residual_epilogue: true, kv_write_in_rope: true, ..FusionSupport::NONE },
            device_argmax: true,
            device_top_k: None,
            table: DataflowTable::cpu_default(),
        }
    }

    /// The WGSL kernels on a discrete GPU with SHADER_F16 and 32-lane subgroups; the wgpu
    /// backend replaces the device facts with what its adapter reports.
    pub fn wgpu_builtin() -> BackendCaps {
        BackendCaps {
            backend: BackendKind::Wgpu,
            device: "built-in wgpu profile (no adapter queried)".into(),
            driver: String::new(),
            kernels: String::new(),
            weight_dtype: DType::F16,
            native_weights: vec![],
            // `--kv auto` on a device with SHADER_F16.
            kv_dtype: DType::F16,
            max_binding_bytes: 2 << 30,
            host_emulated: false,
            subgroup_size: Some(32),
            cooperative_matrix: false,
            linear: LinearKernels {
                gemv_max_m: wgsl::GEMV_MAX_M,
                gemv_split_k_min: Some(wgsl::GEMV_SPLIT_K_MIN),
                gemv_per_warp_max_k: None,
                flat_tilings: wgsl::flat_tilings(),
                flat_long_k: None,
                flat_wide: None,
                flat_matrix: None,
                gemm_tile: Tile { m: wgsl::GM, n: wgsl::GM },
                gemm_min_m: 1,
            },
            attention: AttentionKernels {
                split_kv: Some(SplitKvLimits {
                    max_chunks: wgsl::MAX_ATTN_CHUNKS,
                    min_chunk_keys: wgsl::SPLIT_TILE,
                    max_rows: wgsl::SPLIT_MAX_M,
                    target_blocks: Some(wgsl::ATTN_TARGET_BLOCKS),
                    // No one-chunk rule for short contexts, as CUDA has: a WGSL kernel of 256
                    // lanes per (token, head), a running max per lane group, tried on an H200
                    // (session 16, call 3), took Llama-2-7B's 32 heads at 512 keys 38.1 us
                    // against 18.6 for split + combine; the batch-1 steps lost (SmolLM2 1129 ->
                    // 1402 us, 7B 5022 -> 5644), 7B batch 8 gained 1.3%. It was removed.
                    single_max_keys: None,
                    single_min_rows_heads: 0,
                    single_narrow_min_rows_heads: None,
                }),
                flash: None,
                general: GeneralAttention::Online,
                max_head_dim: wgsl::MAX_HEAD_DIM,
            },
            fusions: FusionSupport {
                residual_epilogue: true,
                kv_write_in_rope: true,
                gemv_norm_prologue: true,
                gemv_swiglu_epilogue: true,
                gemv_rope_epilogue: true,
                flat_gemm_fusions: false,
            },
            device_argmax: true,
            device_top_k: Some(wgsl::SAMPLER_MAX_K),
            table: DataflowTable::wgpu_default(),
        }
    }

    /// The CUDA kernels with weights in `weight_dtype` (f16: tensor-core B and C, f16 KV
    /// cache; f32: CUDA-core B and C, f32 KV cache) on a GPU of compute capability 8.0 or
    /// newer; the CUDA backend adds the device's name.
    pub fn cuda_builtin(weight_dtype: DType) -> BackendCaps {
        BackendCaps::native_builtin(BackendKind::Cuda, weight_dtype, weight_dtype == DType::F16)
    }

    /// AMD GPUs run the CUDA kernel files through HIP without their tensor-core forms
    /// (common.cuh: `FDPP_TENSOR_CORES` 0): the tiled GEMM serves B and C, attention has no
    /// flash form. A warp is 32 lanes there too (half a CDNA wavefront).
    pub fn hip_builtin(weight_dtype: DType) -> BackendCaps {
        BackendCaps {
            device: "built-in hip profile (no device queried)".into(),
            ..BackendCaps::native_builtin(BackendKind::Hip, weight_dtype, false)
        }
    }

    /// The kernels of vendor_kernels/cuda on `backend`, with or without their tensor-core forms.
    pub fn native_builtin(backend: BackendKind, weight_dtype: DType, tensor_cores: bool) -> BackendCaps {
        let tiled = Tile { m: cuda::TILED_TILE, n: cuda::TILED_TILE };
        BackendCaps {
            backend,
            device: "built-in cuda profile (no device queried)".into(),
            driver: String::new(),
            kernels: String::new(),
            weight_dtype,
            native_weights: vec![],
            // `FDPP_KV_F16` follows the weights.
            kv_dtype: weight_dtype,
            // Kernels index within a chunk with 32-bit element offsets.
            max_binding_bytes: 2 << 30,
            host_emulated: false,
            subgroup_size: Some(32),
            cooperative_matrix: tensor_cores,
            linear: LinearKernels {
                gemv_max_m: cuda::GEMV_MAX_M,
                gemv_split_k_min: None,
                gemv_per_warp_max_k: Some(cuda::GW_WARP_MAX_K),
                flat_tilings: if tensor_cores { cuda::flat_tilings() } else { vec![FlatTiling { tile: tiled, k_groups: 1 }] },
                flat_long_k: tensor_cores.then(cuda::flat_long_k),
                flat_wide: tensor_cores.then(cuda::flat_wide),
                flat_matrix: None,
                gemm_tile: if tensor_cores { Tile { m: cuda::GEMM_TILE_M, n: cuda::GEMM_TILE_N } } else { tiled },
                gemm_min_m: 1,
            },
            attention: AttentionKernels {
                split_kv: Some(SplitKvLimits {
                    max_chunks: cuda::MAX_ATTN_CHUNKS,
                    min_chunk_keys: cuda::SPLIT_MIN_KEYS,
                    max_rows: cuda::SPLIT_MAX_M,
                    target_blocks: Some(cuda::BUILTIN_SMS * cuda::ATTN_BLOCKS_PER_SM),
                    single_max_keys: Some(cuda::SINGLE_MAX_KEYS),
                    single_min_rows_heads: cuda::BUILTIN_SMS / 2,
                    // Measured on NVIDIA only (two 8-warp blocks to an SM); an AMD compute
                    // unit's limits differ, so HIP keeps the one wide form.
                    single_narrow_min_rows_heads: (backend == BackendKind::Cuda).then_some(cuda::BUILTIN_SMS + 1),
                }),
                flash: tensor_cores.then(|| FlashLimits {
                    rows: cuda::FLASH_ROWS,
                    keys: cuda::FLASH_KEYS,
                    head_dims: cuda::FLASH_HEAD_DIMS.to_vec(),
                    one_sequence: false,
                }),
                general: GeneralAttention::Online,
                max_head_dim: cuda::MAX_HEAD_DIM,
            },
            fusions: FusionSupport {
                residual_epilogue: true,
                kv_write_in_rope: true,
                gemv_norm_prologue: true,
                gemv_swiglu_epilogue: true,
                gemv_rope_epilogue: true,
                flat_gemm_fusions: tensor_cores,
            },
            device_argmax: true,
            device_top_k: None,
            table: if tensor_cores { DataflowTable::cuda_default() } else { DataflowTable::simt_default(backend.name()) },
        }
    }
}
