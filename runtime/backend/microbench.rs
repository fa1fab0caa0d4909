//! What `fdpp bench kernels` measures on any GPU backend, and how hard: the report types
//! (linear timings per implementation and M, decode attention per context length, the
//! device's bandwidth ceilings), how operands are rotated past the last-level cache, and the
//! inflection points read off a report. The wgpu and CUDA backends each fill a report with
//! their own kernels (`wgpu::microbench`, `cuda::microbench`).

use serde::{Deserialize, Serialize};

use crate::dataflow::LinearImpl;
use crate::error::{Error, Result};
use crate::lower::caps::{BackendCaps, LinearKernels};
use crate::lower::kernel::{Epilogue, Params, Variant};
use crate::lower::{Io, Template};
use crate::tensor::DType;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinearTiming {
    pub n: usize,
    pub k: usize,
    pub m: usize,
    pub implementation: LinearImpl,
    /// The variant timed, with its parameters (B's tiling, A's split-K); reports written
    /// before there were several per implementation lack it.
    #[serde(default)]
    pub variant: Option<Variant>,
    pub micros: f64,
    /// Weight + activation bytes moved per microsecond, in GB/s.
    pub gbytes_per_s: f64,
    /// `gbytes_per_s` as a percentage of the measured read bandwidth (these kernels are
    /// read-bound: the weights dominate what they move).
    pub read_ceiling_pct: f64,
    pub tflops: f64,
}

impl LinearTiming {
    /// `variant` over m rows of [n, k] (`weight_bytes` per weight, f32 activations) that
    /// took `micros`, against the device's read ceiling in GB/s.
    pub fn new(n: usize, k: usize, m: usize, variant: Variant, micros: f64, weight_bytes: usize, read_ceiling: f64) -> Self {
        let moved = (n * k * weight_bytes + m * k * 4 + m * n * 4) as f64;
        let gbytes_per_s = moved / micros / 1e3;
        LinearTiming {
            n,
            k,
            m,
            implementation: variant.dataflow().expect("a linear variant"),
            variant: Some(variant),
            micros,
            gbytes_per_s,
            read_ceiling_pct: 100.0 * gbytes_per_s / read_ceiling,
            tflops: 2.0 * (m * n * k) as f64 / micros / 1e6,
        }
    }
}

/// The device's memory bandwidth, measured on large buffers (GB/s = 1e9 bytes per second).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Size of each buffer streamed, and how many the passes rotate over.
    pub buffer_bytes: u64,
    pub buffers: usize,
    /// `stream_read` (shaders/bandwidth.wgsl): bytes read per second.
    pub read_gbytes_per_s: f64,
    /// `stream_copy`: bytes read + written per second by shader invocations.
    pub copy_kernel_gbytes_per_s: f64,
    /// The driver's `copy_buffer_to_buffer`: bytes read + written per second.
    pub copy_buffer_gbytes_per_s: f64,
}

/// Decode attention of one sequence (one query token) over `ctx` cached positions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttentionTiming {
    pub ctx: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Bytes of K and V read (the cache is f32), each KV head once.
    pub kv_bytes: usize,
    /// Split-KV workgroups per head, and keys per workgroup.
    pub chunks: usize,
    pub chunk_keys: usize,
    /// `attn_split` alone, and followed by `attn_combine` (what a decode step runs; CUDA's
    /// split adds its partials up itself, so there both are the one kernel).
    pub split_micros: f64,
    pub split_combine_micros: f64,
    /// `attn_online`: the synchronised online softmax, one workgroup per head.
    pub online_micros: f64,
    /// `kv_bytes` per second of split + combine and of online, GB/s.
    pub split_combine_gbytes_per_s: f64,
    pub online_gbytes_per_s: f64,
    /// Heads whose scores left the unified-max safe range (recomputed by the fallback
    /// inside the timed combine); 0 with the default phi on these random inputs.
    pub fallback_heads: usize,
    /// Split + combine at other chunk lengths (keys per chunk, microseconds), where the
    /// backend times them: the evidence for the lowering's chunking rule.
    #[serde(default)]
    pub other_chunkings: Vec<(usize, f64)>,
}

impl AttentionTiming {
    /// One context length of shape `a`: `kv_bytes` of K and V read, the chunking, and the
    /// times of split alone, split + combine and online, in microseconds.
    pub fn new(
        a: &AttentionShape,
        ctx: usize,
        kv_bytes: usize,
        (chunks, chunk_keys): (usize, usize),
        [split, both, online]: [f64; 3],
        fallback_heads: usize,
    ) -> Self {
        AttentionTiming {
            ctx,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            kv_bytes,
            chunks,
            chunk_keys,
            split_micros: split,
            split_combine_micros: both,
            online_micros: online,
            split_combine_gbytes_per_s: kv_bytes as f64 / both / 1e3,
            online_gbytes_per_s: kv_bytes as f64 / online / 1e3,
            fallback_heads,
            other_chunkings: vec![],
        }
    }
}

/// A linear kernel with prologue / epilogue fusions, and its plain form, timed together.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FusedTiming {
    pub n: usize,
    pub k: usize,
    pub m: usize,
    pub variant: Variant,
    /// Microseconds of the plain kernel, with the RMSNorm prologue, with the SwiGLU
    /// epilogue, with both.
    pub plain: f64,
    pub norm: f64,
    pub swiglu: f64,
    pub norm_swiglu: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelReport {
    pub device: String,
    /// The copy ceiling: the better of the copy kernel and the driver copy, bytes read +
    /// written per second, GB/s.
    pub copy_gbytes_per_s: f64,
    /// The read ceiling (`stream_read`), GB/s.
    pub read_gbytes_per_s: f64,
    pub bandwidth: Bandwidth,
    /// Device time per dispatch of a chain of tiny dependent dispatches in one pass: what
    /// every node of a decode step costs before it does any work.
    pub dispatch_floor_micros: f64,
    pub linear: Vec<LinearTiming>,
    /// `Sweep::fused`'s timings (empty when not asked for, or where the backend has none).
    #[serde(default)]
    pub fused: Vec<FusedTiming>,
    pub attention: Vec<AttentionTiming>,
    /// Context lengths asked for but not measured, with the reason.
    pub skipped_ctx: Vec<(usize, String)>,
    /// How the measured KV cache stores K and V.
    pub kv_dtype: DType,
}

/// Attention dimensions of the model measured.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Longest context the model is run at: longer ones are skipped.
    pub max_context: usize,
}

/// What to measure.
pub struct Sweep<'a> {
    /// Linear [N, K] shapes, each over every M in `ms`.
    pub shapes: &'a [(usize, usize)],
    pub ms: &'a [usize],
    /// Also time the fused forms (RMSNorm prologue, SwiGLU epilogue) of A and B beside their
    /// plain ones, where the backend's kernels have them.
    pub fused: bool,
    pub attention: AttentionShape,
    /// Context lengths of the decode attention.
    pub ctxs: &'a [usize],
}

/// How hard to measure.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// Bytes an operand's copies should add up to (beyond a 60 MB L2), at most `max_copies`.
    pub rotate_bytes: usize,
    pub max_copies: usize,
    /// Dispatches per timed pass, at least (and at least one per copy).
    pub min_dispatches: usize,
    /// Timed passes; the median is reported.
    pub repeats: usize,
    /// Bandwidth operations per timed pass.
    pub bandwidth_ops: usize,
}

pub const HARDWARE: Effort = Effort { rotate_bytes: 256 << 20, max_copies: 512, min_dispatches: 20, repeats: 5, bandwidth_ops: 8 };
pub const SOFTWARE: Effort = Effort { rotate_bytes: 0, max_copies: 1, min_dispatches: 3, repeats: 3, bandwidth_ops: 2 };

impl Effort {
    /// The tuner's: it times hundreds of (variant, M) pairs per shape, several rounds each,
    /// so it rotates over copies of twice an H200's L2 (still past any cache) and takes
    /// three repeats.
    pub fn lighter(self) -> Effort {
        Effort {
            rotate_bytes: self.rotate_bytes.min(128 << 20),
            max_copies: self.max_copies.min(256),
            min_dispatches: self.min_dispatches.min(10),
            repeats: self.repeats.min(3),
            ..self
        }
    }

    /// Copies of an operand of `bytes` to rotate over.
    pub fn copies(&self, bytes: usize) -> usize {
        self.rotate_bytes.div_ceil(bytes.max(1)).clamp(1, self.max_copies)
    }
    /// Dispatches per timed pass when rotating over `copies`: each copy at least once.
    pub fn dispatches(&self, copies: usize) -> usize {
        self.min_dispatches.max(copies)
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Why a context length cannot be measured here, if it cannot.
pub fn ctx_unmeasurable(ctx: usize, a: &AttentionShape, kv_elem_bytes: usize, max_binding: u64) -> Option<String> {
    let cache = (ctx * a.kv_heads * a.head_dim * kv_elem_bytes) as u64;
    if ctx == 0 {
        Some("no keys".into())
    } else if ctx > a.max_context {
        Some(format!("beyond the model's context ({})", a.max_context))
    } else if cache > max_binding {
        Some(format!("a K cache of {} MiB exceeds the device's largest binding ({} MiB)", cache >> 20, max_binding >> 20))
    } else {
        None
    }
}

/// Times one backend's linear kernels: what `bench kernels` reports and the tuner measures.
pub trait LinearBench {
    /// The device's capabilities as its backend reports them when opened (the tuner keys
    /// its profile by them).
    fn caps(&self) -> &BackendCaps;
    /// Microseconds per run of `launches` over `m` rows, each with its variant: a linear
    /// layer's product and the launches a step makes around it (`Lowering::linear_launches`),
    /// the weights rotated past the last-level cache; calls for one [N, K] in a row reuse its
    /// buffers.
    fn time_launches(&mut self, launches: &[(Template, Variant)], m: usize) -> Result<f64>;
    /// Microseconds per call of `variant` over `m` rows of a bare [n, k] product.
    fn time_linear(&mut self, n: usize, k: usize, m: usize, variant: Variant) -> Result<f64> {
        self.time_launches(&[(linear_template(n, k), variant)], m)
    }
    /// Most rows it times.
    fn max_m(&self) -> usize;
    /// How hard it measures; a new effort applies from the next shape on.
    fn effort(&self) -> Effort;
    fn set_effort(&mut self, effort: Effort);
}

/// The template of a plain linear layer of [n, k] (no bias, prologue or epilogue) reading
/// buffer 0 and writing buffer 0, as the benchmarks launch it.
pub fn linear_template(n: usize, k: usize) -> Template {
    let params = Params::Linear { n, k, n_offset: 0, ldy: n, bias: false, prologue: None, epilogue: Epilogue::None };
    Template {
        node: 0,
        out_rows: false,
        params,
        io: Io { x: Some(0), x2: None, weight: None, norm_weight: None, bias: None, y: 0, kv: None },
    }
}

/// [N, K] of the linear layer among `launches` (N: all its columns, of every weight chunk).
pub fn launched_shape(launches: &[(Template, Variant)]) -> Result<(usize, usize)> {
    launches
        .iter()
        .filter_map(|(t, _)| match t.params {
            Params::Linear { n, k, n_offset, .. } => Some((n_offset + n, k)),
            _ => None,
        })
        .reduce(|a, b| (a.0.max(b.0), a.1))
        .ok_or_else(|| Error::InvalidArgument("launches to time without a linear layer".into()))
}

/// [N, K] of `launches` (`launched_shape`), after refusing what a benchmark's buffers do not
/// hold: no rows or more than `max_m`, or heads longer than `max_head_dim` (its RoPE table).
pub fn timed_shape(launches: &[(Template, Variant)], m: usize, max_m: usize, max_head_dim: usize) -> Result<(usize, usize)> {
    if m == 0 || m > max_m {
        return Err(Error::InvalidArgument(format!("linear kernels are timed over 1..={max_m} rows, not {m}")));
    }
    let long_head = |t: &Template| matches!(t.params, Params::Rope { dims, .. } | Params::Linear { epilogue: Epilogue::Rope { dims }, .. } if dims.head_dim > max_head_dim);
    if launches.iter().any(|(t, _)| long_head(t)) {
        return Err(Error::InvalidArgument(format!("heads longer than {max_head_dim} are not timed")));
    }
    launched_shape(launches)
}

/// Every variant a backend's kernels run over `m` rows of K: A in each split-K form up to
/// its rows, B in each tiling, C.
pub fn linear_candidates(lin: &LinearKernels, k: usize, m: usize) -> Vec<Variant> {
    let mut out = vec![];
    if m <= lin.gemv_max_m {
        out.push(lin.gemv(k, false));
        if lin.gemv_split_k_min.is_some() {
            out.push(lin.gemv(k, true));
        }
    }
    out.extend(lin.flat_tilings.iter().filter(|&&t| lin.flat_takes(t, k)).map(|&tiling| Variant::FlatGemm { tiling }));
    out.push(Variant::Gemm { tile: lin.gemm_tile });
    out
}

/// Every candidate on every shape and M; `progress()` after each (shape, M).
pub fn linear_sweep(
    bench: &mut dyn LinearBench,
    shapes: &[(usize, usize)],
    ms: &[usize],
    read_ceiling: f64,
    progress: &mut dyn FnMut(),
) -> Result<Vec<LinearTiming>> {
    let lin = bench.caps().linear.clone();
    let elem = bench.caps().weight_dtype.size();
    let mut out = vec![];
    for &(n, k) in shapes {
        for &m in ms {
            for variant in linear_candidates(&lin, k, m) {
                let micros = bench.time_linear(n, k, m, variant)?;
                out.push(LinearTiming::new(n, k, m, variant, micros, elem, read_ceiling));
            }
            progress();
        }
    }
    Ok(out)
}

/// The fastest timing of `implementation` (over its variants) at [n, k] and m.
pub fn fastest(timings: &[LinearTiming], (n, k): (usize, usize), m: usize, implementation: LinearImpl) -> Option<&LinearTiming> {
    timings.iter().filter(|t| (t.n, t.k, t.m, t.implementation) == (n, k, m, implementation)).min_by(|a, b| a.micros.total_cmp(&b.micros))
}

/// A shape's [N, K], M1 and M2.
pub type Inflection = ((usize, usize), Option<usize>, Option<usize>);

/// M1 (first M where flat GEMM beats GEMV) and M2 (first M where GEMM beats flat GEMM) per
/// shape, read off a report; `None` where the crossing was not seen in the grid.
pub fn inflections(report: &KernelReport) -> Vec<Inflection> {
    let mut shapes: Vec<(usize, usize)> = report.linear.iter().map(|t| (t.n, t.k)).collect();
    shapes.dedup();
    shapes
        .into_iter()
        .map(|s| {
            let at = |m: usize, imp: LinearImpl| fastest(&report.linear, s, m, imp).map(|t| t.micros);
            let mut ms: Vec<usize> = report.linear.iter().filter(|t| (t.n, t.k) == s).map(|t| t.m).collect();
            ms.dedup();
            let m1 = ms.iter().copied().find(|&m| match (at(m, LinearImpl::FlatGemm), at(m, LinearImpl::Gemv)) {
                (Some(f), Some(g)) => f < g,
                (Some(_), None) => true,
                _ => false,
            });
            let m2 =
                ms.iter().copied().find(|&m| matches!((at(m, LinearImpl::Gemm), at(m, LinearImpl::FlatGemm)), (Some(c), Some(b)) if c < b));
            (s, m1, m2)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_covers_the_cache_and_touches_every_copy() {
        assert_eq!(HARDWARE.copies(1 << 30), 1);
        assert_eq!(HARDWARE.copies(100 << 20), 3);
        assert_eq!(HARDWARE.copies(1000), HARDWARE.max_copies);
        assert_eq!(HARDWARE.dispatches(3), HARDWARE.min_dispatches);
        assert_eq!(HARDWARE.dispatches(300), 300);
        assert_eq!(SOFTWARE.copies(1000), 1);
    }

    #[test]
    fn context_limits() {
        let a = AttentionShape { heads: 32, kv_heads: 32, head_dim: 128, max_context: 8192 };
        assert_eq!(ctx_unmeasurable(8192, &a, 4, 128 << 20), None);
        assert!(ctx_unmeasurable(8193, &a, 4, 1 << 40).unwrap().contains("context"));
        assert!(ctx_unmeasurable(4096, &a, 4, 32 << 20).unwrap().contains("binding"));
        assert!(ctx_unmeasurable(0, &a, 4, 1 << 40).is_some());
    }
}
