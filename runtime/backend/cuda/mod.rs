//! The native NVIDIA backend: lowered launches run as CUDA kernels (vendor_kernels/cuda)
//! compiled at run time by NVRTC for the device's own architecture and launched through
//! cudarc's driver API. The driver and NVRTC are loaded when the backend is opened, so fdpp
//! builds without a CUDA toolkit and reports which library is missing where there is none.
//!
//! Everything of a step that changes from token to token (token ids, positions, the split-KV
//! chunking) lives in one device buffer the kernels read, so the launches of a step are
//! captured once per step shape as a CUDA graph and replayed: a decode step costs one host
//! copy, one graph launch and one read-back. Only the picked ids are read back, into one of
//! two pinned slots, so the driver can submit step t + 1 before collecting step t.

pub mod blas;
pub mod compile;
pub mod kernels;
pub mod microbench;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError, PinnedHostSlice, sys};
use kernels::{Args, Grid, Kernels, STEP_WORDS, step_words};

use super::tap::{self, Tap, Tapped};
use super::{BackendCaps, Capacity, CudaOptions, Device, Executor, Pick, StepInput, StepOutput, StepTiming, Tokens, WeightPrecision};
use crate::error::{Error, Result};
use crate::lower::caps::cuda;
use crate::lower::kernel::{Params, Variant};
use crate::lower::{Launch, LoweredStep, Lowering, Template};
use crate::model::WeightSource;
use crate::tensor::DType;

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda".into(), reason: reason.into() }
}

fn driver_error(op: &str, e: DriverError) -> Error {
    Error::Backend { backend: "cuda".into(), op: op.into(), reason: e.to_string() }
}

fn alloc_error(what: &str, bytes: usize, e: DriverError) -> Error {
    if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        Error::OutOfMemory { backend: "cuda".into(), what: what.into(), bytes: bytes as u64 }
    } else {
        driver_error(&format!("allocating {what}"), e)
    }
}

/// Why the CUDA backend cannot run on this machine, if it cannot: the driver library or
/// NVRTC is missing. Loading a library is all it does.
pub fn missing_library() -> Option<String> {
    // SAFETY: both functions only try to open the shared library (dlopen) and drop it again;
    // no symbol of it is called.
    let (driver, nvrtc) = unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nvrtc::sys::is_culib_present()) };
    if !driver {
        return Some(
            "the NVIDIA driver library (libcuda.so) was not found: install the NVIDIA driver, or use --backend wgpu or cpu".into(),
        );
    }
    if !nvrtc {
        return Some(
            "NVRTC, CUDA's runtime compiler (libnvrtc.so), was not found: install the CUDA toolkit's nvrtc package (e.g. cuda-nvrtc-12-x), or use --backend wgpu or cpu".into(),
        );
    }
    None
}

/// Whether device 0 can run these kernels (the libraries load, compute capability >= 8.0),
/// asked without creating a context.
pub fn usable_device() -> bool {
    use cudarc::driver::result;
    if missing_library().is_some() || result::init().is_err() {
        return false;
    }
    let Ok(dev) = result::device::get(0) else { return false };
    // SAFETY: `dev` is a device handle the initialised driver returned.
    let major = unsafe { result::device::get_attribute(dev, sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) };
    major.is_ok_and(|m| m >= 8)
}

/// An opened CUDA device.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    caps: BackendCaps,
    arch: (i32, i32),
    driver: i32,
}

impl CudaDevice {
    pub fn open(opts: &CudaOptions) -> Result<CudaDevice> {
        let stored = |p: WeightPrecision| if p == WeightPrecision::F32 { DType::F32 } else { DType::F16 };
        let dtype = stored(opts.precision);
        // The kernels are built and tested with `FDPP_KV_F16` equal to `FDPP_W_F16` only
        // (the tensor-core attention reads f16 K and V beside f16 weights).
        let kv = if opts.kv == WeightPrecision::Auto { dtype } else { stored(opts.kv) };
        if kv != dtype {
            return Err(Error::NotSupported {
                backend: "cuda".into(),
                what: format!("an {kv} KV cache with {dtype} weights (its KV cache has the weights' type; ask for {kv} weights)"),
            });
        }
        if let Some(why) = missing_library() {
            return Err(unavailable(why));
        }
        let count = CudaContext::device_count().map_err(|e| unavailable(format!("the driver lists no device ({e})")))?;
        if opts.ordinal >= count as usize {
            return Err(unavailable(format!("device {} asked for, the driver lists {count}", opts.ordinal)));
        }
        let ctx = CudaContext::new(opts.ordinal).map_err(|e| unavailable(format!("creating a context on device {}: {e}", opts.ordinal)))?;
        // SAFETY: every buffer of this backend is used on the one stream below only, so
        // cudarc's cross-stream event tracking has nothing to order.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(|e| driver_error("querying the device", e))?;
        let arch = ctx.compute_capability().map_err(|e| driver_error("querying the device", e))?;
        if arch.0 < 8 {
            return Err(unavailable(format!(
                "{name} has compute capability {}.{}; fdpp's CUDA kernels need 8.0 (Ampere) or newer (use --backend wgpu)",
                arch.0, arch.1
            )));
        }
        let mut driver = 0;
        // SAFETY: writes one int through a valid pointer.
        unsafe { sys::cuDriverGetVersion(&mut driver) }.result().map_err(|e| driver_error("querying the driver version", e))?;
        let stream = ctx.new_stream().map_err(|e| driver_error("creating a stream", e))?;
        let mut caps = BackendCaps {
            device: format!("{name} (sm_{}{}, driver {}.{})", arch.0, arch.1, driver / 1000, driver % 1000 / 10),
            driver: format!("CUDA {}.{}", driver / 1000, driver % 1000 / 10),
            kernels: compile::sources_hash(dtype == DType::F16),
            ..BackendCaps::cuda_builtin(dtype)
        };
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| driver_error("querying the device", e))?;
        if let Some(limits) = &mut caps.attention.split_kv {
            limits.target_blocks = Some(sms.max(1) as usize * cuda::ATTN_BLOCKS_PER_SM);
            limits.single_min_rows_heads = sms as usize / 2;
        }
        // For experiments: the longest context decoded as one chunk per (token, head) (0: none).
        if let Some(max) = std::env::var("FDPP_CUDA_SINGLE_MAX_KEYS").ok().and_then(|v| v.parse::<usize>().ok())
            && let Some(limits) = &mut caps.attention.split_kv
        {
            limits.single_max_keys = (max > 0).then_some(max);
        }
        // For experiments: the flat GEMM without its prologue / epilogue fusions.
        if std::env::var("FDPP_CUDA_FLAT_FUSIONS").is_ok_and(|v| v == "0") {
            caps.fusions.flat_gemm_fusions = false;
        }
        Ok(CudaDevice { ctx, stream, caps, arch, driver })
    }
}

/// Launches `g` with `args` on `stream`.
///
/// # Safety
/// Every pointer in `args` must be null or a live device allocation (kept alive until the
/// launch has run) at least as large as the kernel `g.kernel` reads or writes through it
/// for the grid `g` and the step in `args.step`, as `kernels::grids` sizes them.
pub unsafe fn launch(kernels: &Kernels, stream: &CudaStream, g: &Grid, args: &Args) -> Result<()> {
    let mut a = *args;
    let mut params = [&mut a as *mut Args as *mut c_void];
    let [x, y, z] = g.blocks;
    let mut pdl = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        value: sys::CUlaunchAttributeValue { programmaticStreamSerializationAllowed: 1 },
    };
    let config = sys::CUlaunchConfig {
        gridDimX: x,
        gridDimY: y,
        gridDimZ: z,
        blockDimX: g.threads,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: stream.cu_stream(),
        attrs: &mut pdl,
        numAttrs: kernels.pdl as u32,
    };
    // SAFETY: the kernel takes one `Args` (the same layout, common.cuh), which the driver
    // copies at this call; `config` and its attribute live across the call; the caller
    // vouches for the memory behind the pointers. Every kernel waits (`pdl_wait`) before it
    // touches memory an earlier kernel writes, as programmatic launch requires.
    unsafe { sys::cuLaunchKernelEx(&config, kernels.function(&g.kernel), params.as_mut_ptr(), std::ptr::null_mut()) }
        .result()
        .map_err(|e| driver_error(&format!("launching {}", g.kernel), e))
}

/// A weight in device memory: its chunks (the lowering's layout), and vectors (norm
/// weights, biases) also in f32, as the kernels' prologues and epilogues read them.
struct DeviceParam {
    chunks: Vec<CudaSlice<u8>>,
    vector_f32: Option<CudaSlice<f32>>,
}

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    // Event tracking is off: no event is recorded, the guard does nothing.
    s.device_ptr(stream).0
}

impl Device for CudaDevice {
    fn caps(&self) -> &BackendCaps {
        &self.caps
    }

    fn load(
        self: Box<Self>,
        lowering: Arc<Lowering>,
        weights: &dyn WeightSource,
        capacity: Capacity,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Executor>> {
        let CudaDevice { ctx, stream, caps, arch, driver } = *self;
        let l = &lowering.caps;
        if l.backend != caps.backend || l.weight_dtype != caps.weight_dtype || l.linear != caps.linear || l.attention != caps.attention {
            return Err(Error::InvalidArgument(format!("the lowering was made for {}, not for this device ({})", l.device, caps.device)));
        }
        let f16 = caps.weight_dtype == DType::F16;
        let kernels = Kernels::new(compile::load_all(&ctx, f16, f16, arch, driver)?, f16, arch)?;
        let g = &lowering.graph;
        let c = &g.config;
        let kv_elem = if f16 { 2 } else { 4 };
        let kv_bytes = capacity.max_seqs * capacity.max_context * c.kv_dim() * kv_elem;
        let (free, _) = ctx.mem_get_info().map_err(|e| driver_error("querying free memory", e))?;
        let need = crate::engine::memory::device_bytes(g, &caps, capacity);
        if need > free as u64 {
            let what = format!(
                "weights ({} bytes) and KV caches ({} layers x {} sequences x {} positions); the device has {free} bytes free",
                crate::engine::memory::device_weight_bytes(g, &caps),
                c.num_layers,
                capacity.max_seqs,
                capacity.max_context
            );
            return Err(Error::OutOfMemory { backend: "cuda".into(), what, bytes: need });
        }
        let mut params = Vec::with_capacity(g.params.len());
        for (p, layout) in g.params.iter().zip(&lowering.weights) {
            let id = params.len();
            // One tensor at a time, in the device's type: no copy of the model is held.
            let t = g.load_param(id, weights, caps.weight_dtype)?;
            let row_bytes = layout.cols * caps.weight_dtype.size();
            let bytes = t.as_le_bytes();
            let chunks = layout
                .chunks
                .iter()
                .map(|r| {
                    let part = &bytes[r.start * row_bytes..r.end * row_bytes];
                    stream.clone_htod(part).map_err(|e| alloc_error(&p.name, part.len(), e))
                })
                .collect::<Result<Vec<_>>>()?;
            let vector_f32 = match p.shape.len() {
                1 => Some(stream.clone_htod(&t.clone().into_f32()).map_err(|e| alloc_error(&p.name, p.numel() * 4, e))?),
                _ => None,
            };
            params.push(DeviceParam { chunks, vector_f32 });
            progress(id + 1, g.params.len());
        }
        let zeros = |what: &str, n: usize| stream.alloc_zeros::<u8>(n.max(16)).map_err(|e| alloc_error(what, n, e));
        let kv = (0..c.num_layers)
            .map(|_| Ok((zeros("the K cache", kv_bytes)?, zeros("the V cache", kv_bytes)?)))
            .collect::<Result<Vec<_>>>()?;
        let table = crate::lower::rope::table(c, capacity.max_context);
        let rope = stream.clone_htod(&table).map_err(|e| alloc_error("the RoPE table", table.len() * 4, e))?;
        let max_out = capacity.max_seqs.max(1);
        // Split-KV steps hold one token per sequence.
        let split_rows = capacity.max_seqs.min(cuda::SPLIT_MAX_M);
        let scratch_len = split_rows * c.num_heads * cuda::MAX_ATTN_CHUNKS * (c.head_dim + 1);
        let scratch = stream.alloc_zeros::<f32>(scratch_len.max(4)).map_err(|e| alloc_error("attention partials", scratch_len * 4, e))?;
        let flag_words = argmax_offset(max_out, c.num_heads, c.num_layers) + ARGMAX_WORDS * max_out;
        let flags = stream.alloc_zeros::<u32>(flag_words).map_err(|e| alloc_error("flags", flag_words * 4, e))?;
        let pinned = |n: usize| {
            // SAFETY: the memory is only read after a copy into it has finished (`collect`
            // waits for the step's event first); flags 0: ordinary cached host memory.
            unsafe { ctx.alloc_pinned_with_flags::<u32>(n, 0) }.map_err(|e| alloc_error("pinned read-back memory", n * 4, e))
        };
        let ids_host = [pinned(1 + max_out)?, pinned(1 + max_out)?];
        // SAFETY: as above.
        let logits_host = unsafe { ctx.alloc_pinned_with_flags::<f32>(max_out * c.vocab_size, 0) }
            .map_err(|e| alloc_error("pinned logits read-back", max_out * c.vocab_size * 4, e))?;
        let slot_events = [SlotEvents::new(&ctx)?, SlotEvents::new(&ctx)?];
        Ok(Box::new(CudaExecutor {
            kernels,
            ctx: ctx.clone(),
            stream,
            lowering,
            capacity,
            f16,
            params,
            rope,
            kv,
            scratch,
            flags,
            max_out,
            cap_m: 0,
            step_buf: None,
            activations: vec![],
            args: vec![],
            argmax: Args::default(),
            ids_host,
            logits_host,
            slot_events,
            slots: [SlotState::default(), SlotState::default()],
            taps: None,
            tapped: vec![],
            picked: 0,
            profile: None,
            graphs: HashMap::new(),
            use_graphs: std::env::var("FDPP_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            blas: None,
            use_blas: f16 && blas::present() && std::env::var("FDPP_CUBLAS").map_or(true, |v| v != "0"),
        }))
    }
}

/// An event that can be timed against another.
fn timing_event(ctx: &Arc<CudaContext>) -> Result<CudaEvent> {
    ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| driver_error("creating an event", e))
}

/// Events of one read-back slot: around the step's kernels (timed), and after its
/// read-back copies (what `collect` waits for).
struct SlotEvents {
    start: CudaEvent,
    end: CudaEvent,
    copied: CudaEvent,
}

impl SlotEvents {
    fn new(ctx: &Arc<CudaContext>) -> Result<SlotEvents> {
        Ok(SlotEvents { start: timing_event(ctx)?, end: timing_event(ctx)?, copied: timing_event(ctx)? })
    }
}

/// What was submitted into a read-back slot.
#[derive(Default)]
struct SlotState {
    submitted: bool,
    n_out: usize,
    logits: bool,
    profiled: Option<usize>,
    host_micros: f64,
}

/// The shape a graph was captured for: tokens, output rows, sequences, split-KV chunk
/// blocks.
type GraphKey = (usize, usize, usize, Option<usize>);

/// A step's launches captured as one CUDA graph.
struct StepGraph(CudaGraph);

// SAFETY: CUDA graphs may be used from any thread as long as calls on one graph are not
// concurrent; a StepGraph is only touched through `&mut CudaExecutor`, one call at a time.
unsafe impl Send for StepGraph {}

pub struct CudaExecutor {
    kernels: Kernels,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    lowering: Arc<Lowering>,
    capacity: Capacity,
    f16: bool,
    params: Vec<DeviceParam>,
    rope: CudaSlice<f32>,
    kv: Vec<(CudaSlice<u8>, CudaSlice<u8>)>,
    scratch: CudaSlice<f32>,
    /// [recomputed rows, picked ids..., attention flags...].
    flags: CudaSlice<u32>,
    max_out: usize,
    /// Activations and the step buffer are sized for `cap_m` tokens; rebuilt (with every
    /// launch's arguments, and the graphs dropped) when a step needs more.
    cap_m: usize,
    step_buf: Option<CudaSlice<u32>>,
    activations: Vec<CudaSlice<f32>>,
    /// One per launch template.
    args: Vec<Args>,
    argmax: Args,
    ids_host: [PinnedHostSlice<u32>; 2],
    logits_host: PinnedHostSlice<f32>,
    slot_events: [SlotEvents; 2],
    slots: [SlotState; 2],
    picked: usize,
    /// Events around each launch of a profiled step.
    profile: Option<Vec<(CudaEvent, CudaEvent)>>,
    graphs: HashMap<GraphKey, StepGraph>,
    use_graphs: bool,
    /// cuBLAS for C where it loads (f16 weights), sized with the activations.
    blas: Option<blas::Blas>,
    use_blas: bool,
    /// Launches of the step being recorded to read back (`run_tapped`), and what they wrote.
    taps: Option<Vec<Tap>>,
    tapped: Tapped,
}

/// Graphs kept at once (one per step shape seen; a long run sees few).
const MAX_GRAPHS: usize = 64;

/// Blocks per output row of `argmax` (a 49152-entry row: 768 logits per block), and the flag
/// words each row's 64-bit slot and block count take.
const ARGMAX_BLOCKS: u32 = 64;
const ARGMAX_WORDS: usize = 4;

/// The first word of layer `layer`'s attention flags (`heads` per row): past the count of
/// recomputed rows and the picked ids.
fn attention_flags(max_out: usize, heads: usize, layer: usize) -> usize {
    1 + max_out + layer * cuda::SPLIT_MAX_M * heads
}

/// The first flag word of `argmax`'s slots: past every layer's attention flags, 8-byte aligned.
fn argmax_offset(max_out: usize, heads: usize, layers: usize) -> usize {
    attention_flags(max_out, heads, layers).next_multiple_of(2)
}

impl CudaExecutor {
    fn flag_offset(&self, layer: usize) -> usize {
        attention_flags(self.max_out, self.lowering.graph.config.num_heads, layer)
    }

    /// (Re)allocates activations for `m` tokens and fills every template's arguments.
    fn ensure_capacity(&mut self, m: usize) -> Result<()> {
        if m <= self.cap_m {
            return Ok(());
        }
        let cap = m.next_multiple_of(64);
        let l = Arc::clone(&self.lowering);
        self.graphs.clear();
        self.activations.clear();
        for e in l.memory.buffer_elements(&l.graph.tensors, cap, self.max_out) {
            let n = e.next_multiple_of(8).max(8);
            self.activations
                .push(self.stream.alloc_zeros::<f32>(n).map_err(|err| alloc_error(&format!("activations for {cap} tokens"), n * 4, err))?);
        }
        if self.use_blas {
            let max_k = l.graph.params.iter().filter(|p| p.shape.len() == 2).map(|p| p.shape[1]).max().unwrap_or(1);
            self.blas = Some(blas::Blas::new(&self.stream, cap * max_k)?);
        }
        let words = STEP_WORDS + 4 * cap;
        self.step_buf = Some(self.stream.alloc_zeros::<u32>(words).map_err(|e| alloc_error("the step buffer", words * 4, e))?);
        self.cap_m = cap;
        let max_ctx = self.capacity.max_context;
        self.args = l.templates.iter().map(|t| self.bind(t, Args::of(t, max_ctx, |layer| self.flag_offset(layer)))).collect();
        let logits = &self.activations[l.memory.buffer_of[l.graph.logits].expect("the logits are stored")];
        let c = &l.graph.config;
        let flag_offset = argmax_offset(self.max_out, c.num_heads, c.num_layers) as u32;
        self.argmax = Args {
            step: self.step_ptr(),
            x: ptr(logits, &self.stream),
            flags: ptr(&self.flags, &self.stream),
            s: crate::lower::kernel::LaunchScalars { flag_offset, ..Args::scalars(c.vocab_size, 0) },
            ..Default::default()
        };
        Ok(())
    }

    fn step_ptr(&self) -> u64 {
        ptr(self.step_buf.as_ref().expect("allocated with the activations"), &self.stream)
    }

    /// `a` with the device pointers of template `t`.
    fn bind(&self, t: &Template, a: Args) -> Args {
        let s = &self.stream;
        let act = |b: usize| ptr(&self.activations[b], s);
        let vector = |p: usize| ptr(self.params[p].vector_f32.as_ref().expect("norm weights and biases are vectors"), s);
        let (kc, vc) = t.io.kv.map_or((0, 0), |layer| (ptr(&self.kv[layer].0, s), ptr(&self.kv[layer].1, s)));
        Args {
            step: self.step_ptr(),
            x: t.io.x.map_or(0, act),
            x2: t.io.x2.map_or(0, act),
            w: t.io.weight.map_or(0, |w| ptr(&self.params[w.param].chunks[w.chunk], s)),
            y: act(t.io.y),
            kc,
            vc,
            scratch: ptr(&self.scratch, s),
            flags: ptr(&self.flags, s),
            bias: t.io.bias.map_or(0, vector),
            rope: if matches!(t.params, Params::Rope { .. } | Params::Linear { .. }) { ptr(&self.rope, s) } else { 0 },
            norm: t.io.norm_weight.map_or(0, vector),
            ..a
        }
    }

    fn launch(&self, g: &Grid, args: &Args) -> Result<()> {
        // SAFETY: the pointers of `args` are allocations this executor owns and keeps until
        // it is dropped (after the stream's work), sized by the memory plan for `cap_m` >=
        // the step's tokens and by `capacity` for the caches; the grid comes from
        // `kernels::grids` for this step, whose kernels stay inside those sizes.
        unsafe { launch(&self.kernels, &self.stream, g, args) }
    }

    /// The kernel launches of `step`, per lowered launch; split-KV grids for `chunk_blocks`.
    fn step_grids(&self, step: &LoweredStep, chunk_blocks: usize) -> Result<Vec<Vec<Grid>>> {
        let l = &self.lowering;
        step.launches
            .iter()
            .map(|launch| kernels::grids(launch, &l.templates[launch.template], step.shape.m, self.f16, chunk_blocks))
            .collect()
    }

    /// Whether `launch` runs through cuBLAS.
    fn on_blas(&self, launch: &Launch) -> bool {
        self.blas.is_some() && matches!(launch.variant, Variant::Gemm { .. })
    }

    fn run_launch(&self, launch: &Launch, grids: &[Grid]) -> Result<()> {
        let args = &self.args[launch.template];
        if let (true, Some(b)) = (self.on_blas(launch), &self.blas) {
            let t = &self.lowering.templates[launch.template];
            // SAFETY: as in `launch`; the f16 buffer was sized for `cap_m` rows of the
            // longest K when the activations were.
            return unsafe { b.gemm(&self.kernels, &self.stream, t, args, launch.rows) };
        }
        grids.iter().try_for_each(|g| self.launch(g, args))
    }

    fn run_launches(&self, step: &LoweredStep, grids: &[Vec<Grid>]) -> Result<()> {
        step.launches.iter().zip(grids).try_for_each(|(launch, gs)| self.run_launch(launch, gs))
    }

    /// Runs the step's launches one by one (no graph), reading back the output of each tapped
    /// launch right after it, perturbed and written back where the tap asks for it.
    fn record_tapped(&mut self, step: &LoweredStep, taps: &[Tap]) -> Result<()> {
        let grids = self.step_grids(step, 0)?;
        let copy = |e| driver_error("reading back a tapped launch", e);
        let mut pending = taps.iter().peekable();
        self.tapped.clear();
        for (i, (launch, gs)) in step.launches.iter().zip(&grids).enumerate() {
            self.run_launch(launch, gs)?;
            let Some(t) = pending.next_if(|t| t.launch == i) else { continue };
            let y = self.lowering.templates[launch.template].io.y;
            let buf = &mut self.activations[y];
            if t.elements > buf.len() {
                return Err(Error::InvalidArgument(format!("a tap of {} values but launch {i} writes {}", t.elements, buf.len())));
            }
            let mut values = vec![0.0f32; t.elements];
            self.stream.memcpy_dtoh(&buf.slice(0..t.elements), &mut values).map_err(copy)?;
            self.stream.synchronize().map_err(copy)?;
            if let Some(scale) = t.perturb {
                tap::perturb(&mut values, scale);
                self.stream.memcpy_htod(&values, &mut buf.slice_mut(0..t.elements)).map_err(copy)?;
            }
            self.tapped.push(values);
        }
        Ok(())
    }

    /// Runs the step's launches: replayed from a graph captured for its shape, or recorded
    /// one by one (profiled: between events).
    fn record(&mut self, step: &LoweredStep) -> Result<()> {
        if let Some(taps) = self.taps.take() {
            return self.record_tapped(step, &taps);
        }
        if let Some(events) = &self.profile {
            let grids = self.step_grids(step, 0)?;
            for ((launch, gs), (start, end)) in step.launches.iter().zip(&grids).zip(events) {
                start.record(&self.stream).map_err(|e| driver_error("recording an event", e))?;
                self.run_launch(launch, gs)?;
                end.record(&self.stream).map_err(|e| driver_error("recording an event", e))?;
            }
            return Ok(());
        }
        // Chunk counts are rounded up to a power of two: one graph serves every step whose
        // chunking differs only there (the blocks past a step's chunks return at once; the
        // chunk length is read from the step's words).
        let bucket = step.split_kv.map(|(chunks, _)| chunks.next_power_of_two().min(cuda::MAX_ATTN_CHUNKS));
        // Prefill steps with cuBLAS products run once per request: no graph (capturing one
        // costs more than it saves). Decode steps capture cuBLAS with the rest.
        if !self.use_graphs || (!step.shape.is_decode() && step.launches.iter().any(|l| self.on_blas(l))) {
            let grids = self.step_grids(step, bucket.unwrap_or(0))?;
            return self.run_launches(step, &grids);
        }
        let key = (step.shape.m, step.shape.out, step.shape.sequences, bucket);
        if !self.graphs.contains_key(&key) {
            if self.graphs.len() >= MAX_GRAPHS {
                self.graphs.clear();
            }
            let grids = self.step_grids(step, bucket.unwrap_or(0))?;
            self.stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(|e| driver_error("capturing a step", e))?;
            let recorded = self.run_launches(step, &grids);
            let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(|e| driver_error("capturing a step", e));
            recorded?;
            let graph = graph?.ok_or_else(|| driver_error("capturing a step", DriverError(sys::cudaError_enum::CUDA_ERROR_UNKNOWN)))?;
            self.graphs.insert(key, StepGraph(graph));
        }
        self.graphs[&key].0.launch().map_err(|e| driver_error("launching a step's graph", e))
    }
}

impl Executor for CudaExecutor {
    fn describe(&self) -> String {
        format!("cuda: {}{}", self.lowering.caps.device, if self.use_blas { ", C through cuBLAS" } else { "" })
    }

    fn submit(&mut self, step: &LoweredStep, input: &StepInput, tokens: Tokens, pick: &Pick, slot: usize) -> Result<()> {
        let started = Instant::now();
        let (m, n_out) = (step.shape.m, step.shape.out);
        if n_out > self.max_out {
            return Err(Error::InvalidArgument(format!("{n_out} output rows but the cuda backend was sized for {}", self.max_out)));
        }
        if tokens == Tokens::Picked && self.picked != m {
            return Err(Error::InvalidArgument(format!("{m} tokens asked for, the last step picked {}", self.picked)));
        }
        if let Pick::Sample { .. } = pick {
            return Err(Error::InvalidArgument("the cuda backend does not sample on the device; ask for the logits".into()));
        }
        self.ensure_capacity(m)?;
        let mut words = step_words(m, n_out, self.cap_m, step.split_kv);
        let cap = self.cap_m;
        for i in 0..m {
            words[STEP_WORDS + i] = input.tokens.get(i).copied().unwrap_or(0);
            words[STEP_WORDS + cap + i] = input.positions[i] as u32;
            words[STEP_WORDS + 2 * cap + i] = input.seqs[i] as u32;
        }
        for (r, &row) in input.out_rows.iter().enumerate() {
            words[STEP_WORDS + 3 * cap + r] = row as u32;
        }
        let s = Arc::clone(&self.stream);
        let copy = |e| driver_error("copying the step's data", e);
        let step_buf = self.step_buf.as_mut().expect("allocated by ensure_capacity");
        s.memcpy_htod(&words, step_buf).map_err(copy)?;
        if tokens == Tokens::Picked {
            let mut dst = step_buf.slice_mut(STEP_WORDS..STEP_WORDS + m);
            s.memcpy_dtod(&self.flags.slice(1..1 + m), &mut dst).map_err(copy)?;
        }
        s.memset_zeros(&mut self.flags).map_err(copy)?;
        let record = |e: &CudaEvent| e.record(&s).map_err(|e| driver_error("recording an event", e));
        record(&self.slot_events[slot].start)?;
        self.record(step)?;
        let l = &self.lowering;
        if *pick == Pick::Argmax {
            let g = Grid { kernel: "argmax".into(), blocks: [ARGMAX_BLOCKS, n_out as u32, 1], threads: 256 };
            self.launch(&g, &self.argmax)?;
        }
        record(&self.slot_events[slot].end)?;
        s.memcpy_dtoh(&self.flags.slice(0..1 + n_out), &mut self.ids_host[slot]).map_err(copy)?;
        if *pick == Pick::Logits {
            let logits = &self.activations[l.memory.buffer_of[l.graph.logits].expect("logits")];
            let n = n_out * l.graph.config.vocab_size;
            s.memcpy_dtoh(&logits.slice(0..n), &mut self.logits_host).map_err(copy)?;
        }
        // Pinned copies are not tracked by cudarc here (event tracking is off): `collect`
        // waits for this event before it reads them.
        record(&self.slot_events[slot].copied)?;
        self.picked = if *pick == Pick::Logits { 0 } else { n_out };
        self.slots[slot] = SlotState {
            submitted: true,
            n_out,
            logits: *pick == Pick::Logits,
            profiled: self.profile.as_ref().map(|_| step.launches.len()),
            host_micros: started.elapsed().as_secs_f64() * 1e6,
        };
        Ok(())
    }

    fn collect(&mut self, slot: usize) -> Result<StepOutput> {
        let s = std::mem::take(&mut self.slots[slot]);
        if !s.submitted {
            return Err(Error::InvalidArgument(format!("no step was submitted in slot {slot}")));
        }
        let wait = |e| driver_error("waiting for the step", e);
        let ev = &self.slot_events[slot];
        ev.copied.synchronize().map_err(wait)?;
        let words = self.ids_host[slot].as_slice().map_err(wait)?[..1 + s.n_out].to_vec();
        let device_micros = ev.start.elapsed_ms(&ev.end).ok().map(|ms| ms as f64 * 1000.0);
        let logits = if s.logits {
            let n = s.n_out * self.lowering.graph.config.vocab_size;
            self.logits_host.as_slice().map_err(wait)?[..n].to_vec()
        } else {
            vec![]
        };
        let launch_micros = match (s.profiled, &self.profile) {
            (Some(n), Some(events)) => Some(
                events[..n]
                    .iter()
                    .map(|(a, b)| a.elapsed_ms(b).map(|ms| ms as f64 * 1000.0))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| driver_error("reading launch times", e))?,
            ),
            _ => None,
        };
        let ids = if s.logits { vec![] } else { words[1..].to_vec() };
        let timing = StepTiming { host_micros: Some(s.host_micros), device_micros };
        Ok(StepOutput { ids, logits, timing, launch_micros, fallback_rows: Some(words[0]) })
    }

    fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.profile = None;
        if on {
            let events = (0..self.lowering.templates.len())
                .map(|_| Ok((timing_event(&self.ctx)?, timing_event(&self.ctx)?)))
                .collect::<Result<Vec<_>>>()?;
            self.profile = Some(events);
        }
        Ok(())
    }

    fn run_tapped(&mut self, step: &LoweredStep, input: &StepInput, taps: &[Tap]) -> Result<(StepOutput, Tapped)> {
        tap::validate(step, taps)?;
        self.taps = Some(taps.to_vec());
        let submitted = self.submit(step, input, Tokens::Host, &Pick::Logits, 0);
        self.taps = None;
        submitted?;
        let out = self.collect(0)?;
        Ok((out, std::mem::take(&mut self.tapped)))
    }

    fn reset_sequence(&mut self, _seq: usize) {
        // Positions are overwritten before they are read: attention reads 0..=position,
        // all written by this sequence's own steps.
    }
}

#[cfg(test)]
mod tests;
