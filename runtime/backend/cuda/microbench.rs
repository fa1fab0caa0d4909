//! Kernel microbenchmarks on the CUDA backend, timed with CUDA events around replays of each
//! pass captured as a CUDA graph (as decode steps run): the device's memory
//! bandwidth (a read kernel, a copy kernel, the driver's copy), each linear implementation
//! over a grid of M on given [N, K] shapes, and decode attention (split-KV + combine, and
//! the online kernel) over context lengths. Every number is the median of several passes of
//! many back-to-back launches; weights and KV caches rotate over copies totalling more than
//! the L2 cache, as in a decode step where the whole model streams through between two
//! reads of one weight.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DriverError, sys};

use super::compile::Kernels;
use super::{CudaDevice, CudaOptions, driver_error, launch, ptr};
use crate::backend::BackendCaps;
pub use crate::backend::microbench::*;
use crate::backend::native::kernels::{Args, Grid, STEP_WORDS, grids, step_words};
use crate::error::{Error, Result};
use crate::lower::caps::cuda;
use crate::lower::kernel::{Epilogue, HeadDims, Params, Prologue, UnifiedMax, Variant};
use crate::lower::{Io, Launch, Template};
use crate::tensor::DType;

/// Rows the benchmark's step buffer holds.
const MAX_M: usize = 512;

struct Bench {
    stream: Arc<CudaStream>,
    kernels: Kernels,
    caps: BackendCaps,
    f16: bool,
    /// The tensor-core kernels are built (`BackendCaps::cooperative_matrix`).
    tensor_cores: bool,
    /// C runs through cuBLAS where the executor would run it so (FDPP_CUBLAS=0: the own kernel).
    blas: Option<super::blas::Blas>,
}

fn io() -> Io {
    linear_template(1, 1).io
}

impl Bench {
    /// The device, its kernels, and cuBLAS where the executor would use it (FDPP_CUBLAS=0:
    /// the own GEMM).
    fn open(opts: &CudaOptions) -> Result<Bench> {
        let dev = CudaDevice::open(opts)?;
        let f16 = dev.caps.weight_dtype == DType::F16;
        let kernels = Kernels::load(&dev.ctx, f16, dev.caps.cooperative_matrix, dev.arch, dev.driver)?;
        let use_blas = dev.caps.cooperative_matrix && super::blas::present() && std::env::var("FDPP_CUBLAS").map_or(true, |v| v != "0");
        let blas = if use_blas { Some(super::blas::Blas::new(&dev.stream, MAX_M * 4096)?) } else { None };
        Ok(Bench { stream: dev.stream.clone(), kernels, caps: dev.caps.clone(), f16, tensor_cores: dev.caps.cooperative_matrix, blas })
    }

    fn alloc<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, n: usize, what: &str) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros::<T>(n.max(1)).map_err(|e| super::alloc_error(what, n * std::mem::size_of::<T>(), e))
    }

    /// Random values in the weight type, as bytes on the device.
    fn random_weights(&self, n: usize, seed: u64) -> Result<CudaSlice<u8>> {
        let mut rng = crate::sampling::Rng::new(seed);
        let v: Vec<f32> = (0..n).map(|_| rng.next_f32() - 0.5).collect();
        let t = crate::tensor::HostTensor::f32(vec![n], v).convert(if self.f16 { DType::F16 } else { DType::F32 });
        self.stream.clone_htod(t.as_le_bytes()).map_err(|e| super::alloc_error("benchmark weights", n * 4, e))
    }

    /// Median over `repeats` replays of the device time of `pass`, in microseconds. The pass
    /// is captured as one CUDA graph and replayed, as decode steps run: launched one by one
    /// from the host, kernels of a few microseconds would be timed at the host's launch rate.
    fn time(&self, repeats: usize, pass: &dyn Fn() -> Result<()>) -> Result<f64> {
        let ctx = self.stream.context();
        let ev = |e| driver_error("timing", e);
        let (a, b) = (super::timing_event(ctx)?, super::timing_event(ctx)?);
        let capture = |e| driver_error("capturing a benchmark pass", e);
        self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(capture)?;
        let recorded = pass();
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(capture);
        recorded?;
        let graph = graph?.ok_or_else(|| capture(DriverError(sys::cudaError_enum::CUDA_ERROR_UNKNOWN)))?;
        graph.launch().map_err(ev)?; // warm-up
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats.max(1) {
            a.record(&self.stream).map_err(ev)?;
            graph.launch().map_err(ev)?;
            b.record(&self.stream).map_err(ev)?;
            b.synchronize().map_err(ev)?;
            times.push(a.elapsed_ms(&b).map_err(ev)? as f64 * 1000.0);
        }
        Ok(median(times))
    }

    /// Launches `g` with `args`.
    ///
    /// # Safety
    /// As `super::launch`: the pointers in `args` are live allocations sized for `g`.
    unsafe fn go(&self, g: &Grid, args: &Args) -> Result<()> {
        // SAFETY: passed on from the caller.
        unsafe { launch(&self.kernels, &self.stream, g, args) }
    }

    fn bandwidth(&self, effort: &Effort) -> Result<Bandwidth> {
        let size: usize = 1 << 30;
        let count = 2;
        let bufs = (0..count).map(|_| self.alloc::<u8>(size, "bandwidth buffers")).collect::<Result<Vec<_>>>()?;
        let sink = self.alloc::<f32>(4, "bandwidth sink")?;
        let s = &self.stream;
        let words = size / 16;
        let grid = |kernel: &str| Grid { kernel: kernel.into(), blocks: [132 * 16, 1, 1], threads: 256 };
        let ops = effort.bandwidth_ops;
        let read_args: Vec<Args> =
            bufs.iter().map(|b| Args { x: ptr(b, s), y: ptr(&sink, s), s: Args::scalars(words, 0), ..Default::default() }).collect();
        // SAFETY: each buffer holds `words` 16-byte words; the sink one float.
        let t =
            self.time(effort.repeats, &|| (0..ops).try_for_each(|i| unsafe { self.go(&grid("stream_read"), &read_args[i % count]) }))?;
        let read = (ops * size) as f64 / t / 1e3;
        let copy_args: Vec<Args> = (0..count)
            .map(|i| Args { x: ptr(&bufs[i], s), y: ptr(&bufs[(i + 1) % count], s), s: Args::scalars(words, 0), ..Default::default() })
            .collect();
        // SAFETY: both buffers hold `words` words.
        let t =
            self.time(effort.repeats, &|| (0..ops).try_for_each(|i| unsafe { self.go(&grid("stream_copy"), &copy_args[i % count]) }))?;
        let copy_kernel = (2 * ops * size) as f64 / t / 1e3;
        let (p0, p1) = (ptr(&bufs[0], s), ptr(&bufs[1], s));
        let copies = || {
            (0..ops).try_for_each(|i| {
                let (src, dst) = if i % 2 == 0 { (p0, p1) } else { (p1, p0) };
                // SAFETY: both buffers hold `size` bytes and outlive the copies (the
                // timing waits for them).
                unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, size, s.cu_stream()) }.map_err(|e| driver_error("copying", e))
            })
        };
        let copy_buffer = (2 * ops * size) as f64 / self.time(effort.repeats, &copies)? / 1e3;
        Ok(Bandwidth {
            buffer_bytes: size as u64,
            buffers: count,
            read_gbytes_per_s: read,
            copy_kernel_gbytes_per_s: copy_kernel,
            copy_buffer_gbytes_per_s: copy_buffer,
        })
    }

    /// Per-launch device time of a chain of 256 one-block `add`s, each reading what the one
    /// before wrote, launched one by one on the stream.
    fn dispatch_floor(&self, step: &CudaSlice<u32>) -> Result<f64> {
        let (a, b) = (self.alloc::<f32>(64, "floor")?, self.alloc::<f32>(64, "floor")?);
        let s = &self.stream;
        let forth =
            Args { step: ptr(step, s), x: ptr(&a, s), x2: ptr(&a, s), y: ptr(&b, s), s: Args::scalars(64, 0), ..Default::default() };
        let back = Args { x: forth.y, x2: forth.y, y: forth.x, ..forth };
        let g = Grid { kernel: "add".into(), blocks: [1, 1, 1], threads: cuda::ELEM_BLOCK as u32 };
        // SAFETY: both buffers hold the 64 floats of one row; the step buffer says m = 1.
        let t = self.time(5, &|| (0..256).try_for_each(|i| unsafe { self.go(&g, if i % 2 == 0 { &forth } else { &back }) }))?;
        Ok(t / 256.0)
    }

    fn attention_sweep(
        &self,
        effort: &Effort,
        a: AttentionShape,
        ctxs: &[usize],
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<AttentionTiming>> {
        let s = &self.stream;
        let dims = HeadDims { heads: a.heads, kv_heads: a.kv_heads, head_dim: a.head_dim };
        let kv_elem = if self.f16 { 2 } else { 4 };
        let limits = self.caps.attention.split_kv.expect("the CUDA kernels split KV");
        let mut rng = crate::sampling::Rng::new(7);
        let q: Vec<f32> = (0..dims.qkv_width()).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let qb = s.clone_htod(&q).map_err(|e| driver_error("copying", e))?;
        let yb = self.alloc::<f32>(dims.q_dim(), "attention output")?;
        let scratch = self.alloc::<f32>(a.heads * limits.max_chunks * (a.head_dim + 1), "attention partials")?;
        let mut flags = self.alloc::<u32>(1 + a.heads, "flags")?;
        let mut out = vec![];
        for &ctx in ctxs {
            let cache_bytes = ctx * dims.kv_dim() * kv_elem;
            let copies = effort.copies(2 * cache_bytes);
            let caches = (0..copies)
                .map(|c| {
                    Ok((
                        self.random_weights(ctx * dims.kv_dim(), 100 + c as u64)?,
                        self.random_weights(ctx * dims.kv_dim(), 200 + c as u64)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let (chunks, chunk_keys) = limits.chunking(ctx, a.heads);
            // One token of sequence 0 at position ctx - 1: it attends to all ctx positions.
            let mut words = step_words(1, 1, MAX_M, Some((chunks, chunk_keys)));
            words[STEP_WORDS + MAX_M] = (ctx - 1) as u32;
            let step = s.clone_htod(&words).map_err(|e| driver_error("copying", e))?;
            let unified = UnifiedMax::default();
            let params = Params::Attention { dims, layer: 0, scale: 1.0 / (a.head_dim as f32).sqrt(), kv_write: false, unified };
            let t = Template { node: 0, out_rows: false, params, io: io() };
            let args: Vec<Args> = caches
                .iter()
                .map(|(k, v)| Args {
                    step: ptr(&step, s),
                    x: ptr(&qb, s),
                    y: ptr(&yb, s),
                    kc: ptr(k, s),
                    vc: ptr(v, s),
                    scratch: ptr(&scratch, s),
                    flags: ptr(&flags, s),
                    ..Args::of(&t, ctx, |_| 1)
                })
                .collect();
            let narrow = limits.single_narrow(ctx, a.heads);
            let split_v = Variant::SplitKvAttention { chunks, chunk_keys, unified, narrow };
            let split_grids = grids(&Launch { template: 0, variant: split_v, rows: 1 }, &t, 1, self.tensor_cores, 0)?;
            let online_grids = grids(&Launch { template: 0, variant: Variant::OnlineAttention, rows: 1 }, &t, 1, self.tensor_cores, 0)?;
            let reps = effort.dispatches(copies);
            // SAFETY: each cache holds ctx positions of one sequence; the partials one row of
            // `max_chunks` chunks per head; flags 1 + heads words.
            let run = |gs: &[Grid]| (0..reps).try_for_each(|r| gs.iter().try_for_each(|g| unsafe { self.go(g, &args[r % copies]) }));
            let t_split = self.time(effort.repeats, &|| run(&split_grids[..1]))? / reps as f64;
            let t_both = self.time(effort.repeats, &|| run(&split_grids))? / reps as f64;
            let t_online = self.time(effort.repeats, &|| run(&online_grids))? / reps as f64;
            // One more run from zeroed flags: the count of rows its fallback recomputed.
            s.memset_zeros(&mut flags).map_err(|e| driver_error("clearing flags", e))?;
            // SAFETY: as `run`.
            split_grids.iter().try_for_each(|g| unsafe { self.go(g, &args[0]) })?;
            let words = s.clone_dtoh(&flags).map_err(|e| driver_error("reading flags", e))?;
            let fallback_heads = words[0] as usize;
            out.push(AttentionTiming::new(&a, ctx, 2 * cache_bytes, (chunks, chunk_keys), [t_split, t_both, t_online], fallback_heads));
            progress();
        }
        Ok(out)
    }
}

/// The buffers of one linear shape: weight copies to rotate over; activations of `MAX_M`
/// rows as wide as the widest input or output of the launches around the product (x, the
/// residual x2, y); an RMSNorm weight, a bias, a RoPE table and one KV slot per row.
struct ShapeBuffers {
    n: usize,
    k: usize,
    weights: Vec<CudaSlice<u8>>,
    x: CudaSlice<f32>,
    x2: CudaSlice<f32>,
    y: CudaSlice<f32>,
    norm: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    rope: CudaSlice<f32>,
    kc: CudaSlice<u8>,
    vc: CudaSlice<u8>,
}

/// The linear kernels of one CUDA device, timed shape by shape (`LinearBench`); C runs
/// through cuBLAS where the executor would run it so.
pub struct CudaLinear {
    bench: Bench,
    effort: Effort,
    shape: Option<ShapeBuffers>,
}

impl CudaLinear {
    /// Opens the device as the CUDA backend does (its capabilities, and so the tuner's
    /// profile key, are the backend's).
    pub fn open(opts: &CudaOptions) -> Result<CudaLinear> {
        Ok(CudaLinear { bench: Bench::open(opts)?, effort: HARDWARE, shape: None })
    }

    fn shape(&mut self, n: usize, k: usize) -> Result<&ShapeBuffers> {
        if self.shape.as_ref().is_none_or(|s| (s.n, s.k) != (n, k)) {
            self.shape = None; // the last shape's copies go before this one's are made
            let b = &mut self.bench;
            if b.blas.as_ref().is_some_and(|blas| blas.capacity() < MAX_M * k) {
                b.blas = Some(super::blas::Blas::new(&b.stream, MAX_M * k)?);
            }
            let copies = self.effort.copies(n * k * b.caps.weight_dtype.size());
            let weights = (0..copies).map(|c| b.random_weights(n * k, c as u64 + 1)).collect::<Result<Vec<_>>>()?;
            let width = n.max(k);
            let mut rng = crate::sampling::Rng::new(3);
            let x: Vec<f32> = (0..MAX_M * width).map(|_| rng.next_f32() - 0.5).collect();
            let upload = |v: &[f32], what: &str| b.stream.clone_htod(v).map_err(|e| super::alloc_error(what, v.len() * 4, e));
            let (x2, x) = (upload(&x, "benchmark activations")?, upload(&x, "benchmark activations")?);
            let y = b.alloc::<f32>(MAX_M * width, "benchmark outputs")?;
            let norm = upload(&vec![1.0; k], "benchmark norm weights")?;
            let bias = b.alloc::<f32>(n, "benchmark biases")?;
            // Every row is at position 0 of sequence 0: one (cos, sin) per pair, one KV slot.
            let rope = upload(&[1.0, 0.0].repeat(cuda::MAX_HEAD_DIM / 2), "benchmark RoPE table")?;
            let (kc, vc) = (b.alloc::<u8>(n * 4, "benchmark KV cache")?, b.alloc::<u8>(n * 4, "benchmark KV cache")?);
            self.shape = Some(ShapeBuffers { n, k, weights, x, x2, y, norm, bias, rope, kc, vc });
        }
        Ok(self.shape.as_ref().expect("just made"))
    }
}

impl LinearBench for CudaLinear {
    fn caps(&self) -> &BackendCaps {
        &self.bench.caps
    }

    fn max_m(&self) -> usize {
        MAX_M
    }

    fn effort(&self) -> Effort {
        self.effort
    }

    fn set_effort(&mut self, effort: Effort) {
        self.effort = effort;
        self.shape = None;
    }

    fn time_launches(&mut self, launches: &[(Template, Variant)], m: usize) -> Result<f64> {
        let (n, k) = timed_shape(launches, m, MAX_M, cuda::MAX_HEAD_DIM)?;
        let effort = self.effort;
        self.shape(n, k)?;
        let (b, shape) = (&self.bench, self.shape.as_ref().expect("made above"));
        let s = &b.stream;
        let step = s.clone_htod(&step_words(m, m, MAX_M, None)).map_err(|e| driver_error("copying", e))?;
        let mut runs = vec![];
        for (t, variant) in launches {
            let g = grids(&Launch { template: 0, variant: *variant, rows: m }, t, m, b.tensor_cores, 0)?;
            let args: Vec<Args> = shape
                .weights
                .iter()
                .map(|w| Args {
                    step: ptr(&step, s),
                    x: ptr(&shape.x, s),
                    x2: ptr(&shape.x2, s),
                    w: ptr(w, s),
                    y: ptr(&shape.y, s),
                    kc: ptr(&shape.kc, s),
                    vc: ptr(&shape.vc, s),
                    bias: ptr(&shape.bias, s),
                    rope: ptr(&shape.rope, s),
                    norm: ptr(&shape.norm, s),
                    ..Args::of(t, 1, |_| 0)
                })
                .collect();
            let blas = b.blas.as_ref().filter(|_| matches!(variant, Variant::Gemm { .. }));
            runs.push((t, g, args, blas));
        }
        let copies = shape.weights.len();
        let reps = effort.dispatches(copies);
        // SAFETY: every activation buffer holds MAX_M >= m rows of max(n, k) >= any launch's
        // row width (a linear layer's n + n_offset and k, a norm's k, a SwiGLU's or RoPE's n);
        // each weight n x k; the KV caches one row of n >= kv_dim per sequence and position
        // 0 (max_ctx 1, every row in slot 0); the RoPE table position 0's pairs for heads up
        // to MAX_HEAD_DIM (checked above); the cuBLAS buffer MAX_M rows of k (grown above).
        let pass = || {
            (0..reps).try_for_each(|r| {
                runs.iter().try_for_each(|(t, g, args, blas)| match blas {
                    Some(blas) => unsafe { blas.gemm(&b.kernels, s, t, &args[r % copies], m) },
                    None => g.iter().try_for_each(|g| unsafe { b.go(g, &args[r % copies]) }),
                })
            })
        };
        Ok(b.time(effort.repeats, &pass)? / reps as f64)
    }
}

impl CudaLinear {
    /// A and every B tiling of 8 tokens over `m` rows of [n, k] (n even), plain and with the
    /// RMSNorm prologue, the SwiGLU epilogue and both.
    fn fused_sweep(&mut self, n: usize, k: usize, m: usize) -> Result<Vec<FusedTiming>> {
        let lin = self.bench.caps.linear.clone();
        let mut variants = vec![];
        if m <= lin.gemv_max_m {
            variants.push(lin.gemv(k, false));
        }
        if self.bench.caps.fusions.flat_gemm_fusions {
            variants.extend(lin.flat_tilings.iter().filter(|t| t.tile.m == 8).map(|&tiling| Variant::FlatGemm { tiling }));
        }
        let mut out = vec![];
        for variant in variants {
            let mut t = [0.0; 4];
            for (i, (norm, swiglu)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
                let mut template = linear_template(n, k);
                let (prologue, epilogue) =
                    (norm.then_some(Prologue::RmsNorm { eps: 1e-5 }), if swiglu { Epilogue::SwiGlu } else { Epilogue::None });
                template.params =
                    Params::Linear { n, k, n_offset: 0, ldy: if swiglu { n / 2 } else { n }, bias: false, prologue, epilogue };
                t[i] = self.time_launches(&[(template, variant)], m)?;
            }
            out.push(FusedTiming { n, k, m, variant, plain: t[0], norm: t[1], swiglu: t[2], norm_swiglu: t[3] });
        }
        Ok(out)
    }
}

/// Measures the bandwidth ceilings, then every linear shape and M, then decode attention
/// at every context length that fits; `progress(done, total)` after each measurement.
pub fn run(sweep: &Sweep, opts: &CudaOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<KernelReport> {
    let a = sweep.attention;
    if a.heads == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) || a.head_dim > cuda::MAX_HEAD_DIM {
        return Err(Error::InvalidArgument(format!(
            "attention shape {a:?}: heads must be a multiple of KV heads and head_dim at most {}",
            cuda::MAX_HEAD_DIM
        )));
    }
    if sweep.ms.iter().any(|&m| m > MAX_M) {
        return Err(Error::InvalidArgument(format!("bench kernels measures M up to {MAX_M}")));
    }
    let mut lin = CudaLinear::open(opts)?;
    let f16 = lin.bench.f16;
    let use_blas = lin.bench.blas.is_some();
    let kv_elem = if f16 { 2 } else { 4 };
    let (mut ctxs, mut skipped_ctx) = (vec![], vec![]);
    for &ctx in sweep.ctxs {
        match ctx_unmeasurable(ctx, &a, kv_elem, u64::MAX) {
            None => ctxs.push(ctx),
            Some(why) => skipped_ctx.push((ctx, why)),
        }
    }
    let total = 1 + sweep.shapes.len() * sweep.ms.len() + ctxs.len();
    let mut done = 0;
    let mut tick = || {
        done += 1;
        progress(done, total);
    };
    let effort = lin.effort;
    let bandwidth = lin.bench.bandwidth(&effort)?;
    tick();
    let step = lin.bench.stream.clone_htod(&step_words(1, 1, MAX_M, None)).map_err(|e| driver_error("copying", e))?;
    let dispatch_floor_micros = lin.bench.dispatch_floor(&step)?;
    let linear = linear_sweep(&mut lin, sweep.shapes, sweep.ms, bandwidth.read_gbytes_per_s, &mut tick)?;
    let mut fused = vec![];
    if sweep.fused {
        let gemv_max_m = lin.bench.caps.linear.gemv_max_m;
        for &(n, k) in sweep.shapes.iter().filter(|(n, _)| n % 2 == 0) {
            for &m in sweep.ms.iter().filter(|&&m| m <= gemv_max_m) {
                fused.extend(lin.fused_sweep(n, k, m)?);
            }
        }
    }
    lin.shape = None;
    let attention = lin.bench.attention_sweep(&effort, a, &ctxs, &mut tick)?;
    Ok(KernelReport {
        device: format!("cuda: {}{}", lin.bench.caps.device, if use_blas { ", C through cuBLAS" } else { "" }),
        copy_gbytes_per_s: bandwidth.copy_kernel_gbytes_per_s.max(bandwidth.copy_buffer_gbytes_per_s),
        read_gbytes_per_s: bandwidth.read_gbytes_per_s,
        bandwidth,
        dispatch_floor_micros,
        linear,
        fused,
        attention,
        skipped_ctx,
        kv_dtype: if f16 { DType::F16 } else { DType::F32 },
    })
}
