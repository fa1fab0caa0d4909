//! The native NVIDIA backend: lowered launches run as CUDA kernels (vendor_kernels/cuda)
//! compiled at run time by NVRTC for the device's own architecture and launched through
//! cudarc's driver API, by the executor the native backends share (`native::executor`),
//! each step's launches captured once as a CUDA graph and replayed. The driver and NVRTC are
//! loaded when the backend is opened, so fdpp builds without a CUDA toolkit and reports which
//! library is missing where there is none.

pub mod blas;
pub mod compile;
pub mod microbench;

use std::ffi::c_void;
use std::sync::Arc;

use compile::Kernels;
use cudarc::driver::{CudaContext, CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError, PinnedHostSlice, sys};

use super::native::kernels::{Args, Grid};
use super::native::{self, Gpu};
use super::{BackendCaps, BackendKind, Capacity, CudaOptions, Device, Executor};
use crate::error::{Error, Result};
use crate::lower::caps::cuda;
use crate::lower::{Lowering, Template};
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
        let dtype = native::storage("cuda", opts.precision, opts.kv)?;
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
        let f16 = dtype == DType::F16;
        // `FDPP_CUDA_TENSOR_CORES=0` leaves the tensor-core kernels out: the kernel set of the
        // HIP backend on an NVIDIA GPU (`caps.cooperative_matrix` then says so).
        let tensor_cores = f16 && std::env::var("FDPP_CUDA_TENSOR_CORES").map_or(true, |v| v != "0");
        let simt = if f16 && !tensor_cores { ", no tensor cores" } else { "" };
        let mut caps = BackendCaps {
            device: format!("{name} (sm_{}{}, driver {}.{}{simt})", arch.0, arch.1, driver / 1000, driver % 1000 / 10),
            driver: format!("CUDA {}.{}", driver / 1000, driver % 1000 / 10),
            kernels: native::sources::sources_hash(f16, tensor_cores),
            ..BackendCaps::native_builtin(BackendKind::Cuda, dtype, tensor_cores)
        };
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| driver_error("querying the device", e))?;
        if let Some(limits) = &mut caps.attention.split_kv {
            limits.target_blocks = Some(sms.max(1) as usize * cuda::ATTN_BLOCKS_PER_SM);
            limits.single_min_rows_heads = sms as usize / 2;
            limits.single_narrow_min_rows_heads = Some(sms as usize + 1);
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
        let (f16, tensor_cores) = (caps.weight_dtype == DType::F16, caps.cooperative_matrix);
        let kernels = Kernels::load(&ctx, f16, tensor_cores, arch, driver)?;
        // cuBLAS's f16 conversion and epilogue kernels are built with the tensor-core ones.
        let use_blas = tensor_cores && blas::present() && std::env::var("FDPP_CUBLAS").map_or(true, |v| v != "0");
        let gpu = CudaGpu { ctx, stream, kernels, use_blas, blas: None };
        native::executor::load(gpu, &caps, lowering, weights, capacity, progress)
    }
}

/// An event that can be timed against another.
fn timing_event(ctx: &Arc<CudaContext>) -> Result<CudaEvent> {
    ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| driver_error("creating an event", e))
}

/// A step's launches captured as one CUDA graph.
pub struct StepGraph(CudaGraph);

// SAFETY: CUDA graphs may be used from any thread as long as calls on one graph are not
// concurrent; a StepGraph is only touched through `&mut` of the executor, one call at a time.
unsafe impl Send for StepGraph {}

/// The CUDA driver under the native executor: one context, one stream, the loaded kernels,
/// and cuBLAS for C where it loads (f16 weights), sized with the activations.
pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    use_blas: bool,
    blas: Option<blas::Blas>,
}

fn copy_error(e: DriverError) -> Error {
    driver_error("copying", e)
}

impl Gpu for CudaGpu {
    type Buffer = CudaSlice<u8>;
    type Pinned = PinnedHostSlice<u8>;
    type Event = CudaEvent;
    type Graph = StepGraph;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn free_bytes(&self) -> Result<u64> {
        Ok(self.ctx.mem_get_info().map_err(|e| driver_error("querying free memory", e))?.0 as u64)
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<CudaSlice<u8>> {
        self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| alloc_error(what, bytes, e))
    }

    fn upload(&self, data: &[u8], what: &str) -> Result<CudaSlice<u8>> {
        self.stream.clone_htod(data).map_err(|e| alloc_error(what, data.len(), e))
    }

    fn address(&self, b: &CudaSlice<u8>) -> u64 {
        ptr(b, &self.stream)
    }

    fn size(&self, b: &CudaSlice<u8>) -> usize {
        b.len()
    }

    fn write(&self, dst: &mut CudaSlice<u8>, offset: usize, data: &[u8]) -> Result<()> {
        self.stream.memcpy_htod(data, &mut dst.slice_mut(offset..offset + data.len())).map_err(copy_error)
    }

    fn read(&self, src: &CudaSlice<u8>, dst: &mut [u8]) -> Result<()> {
        self.stream.memcpy_dtoh(&src.slice(0..dst.len()), dst).map_err(copy_error)?;
        self.stream.synchronize().map_err(copy_error)
    }

    fn read_pinned(&self, src: &CudaSlice<u8>, bytes: usize, dst: &mut PinnedHostSlice<u8>) -> Result<()> {
        // Pinned copies are not tracked by cudarc here (event tracking is off): the caller
        // waits for an event recorded after this copy before it reads them.
        self.stream.memcpy_dtoh(&src.slice(0..bytes), dst).map_err(copy_error)
    }

    fn pinned(&self, bytes: usize, what: &str) -> Result<PinnedHostSlice<u8>> {
        // SAFETY: the memory is set below before anything reads it. DEVICEMAP: kernels reach
        // it at `pinned_address`; ordinary cached host memory otherwise.
        let mut p = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), sys::CU_MEMHOSTALLOC_DEVICEMAP) }
            .map_err(|e| alloc_error(what, bytes, e))?;
        p.as_mut_slice().map_err(|e| driver_error("clearing pinned memory", e))?.fill(0);
        Ok(p)
    }

    fn pinned_bytes<'a>(&self, p: &'a PinnedHostSlice<u8>) -> Result<&'a [u8]> {
        p.as_slice().map_err(|e| driver_error("reading pinned memory", e))
    }

    fn write_pinned(&self, p: &mut PinnedHostSlice<u8>, data: &[u8]) -> Result<()> {
        let dst = p.as_mut_slice().map_err(|e| driver_error("writing pinned memory", e))?;
        let n = data.len();
        if n > dst.len() {
            return Err(Error::InvalidArgument(format!("{n} bytes into {} of pinned memory", dst.len())));
        }
        dst[..n].copy_from_slice(data);
        Ok(())
    }

    fn pinned_address(&self, p: &PinnedHostSlice<u8>) -> Result<u64> {
        let mut address: sys::CUdeviceptr = 0;
        let host = p.as_ptr().map_err(|e| driver_error("mapping pinned memory", e))?;
        // SAFETY: `host` is the start of a live allocation made with CU_MEMHOSTALLOC_DEVICEMAP
        // in this context (bound to this thread by `as_ptr`'s event); one pointer is written.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut address, host as *mut c_void, 0) }
            .result()
            .map_err(|e| driver_error("mapping pinned memory", e))?;
        Ok(address)
    }

    fn event(&self) -> Result<CudaEvent> {
        timing_event(&self.ctx)
    }

    fn record(&self, e: &CudaEvent) -> Result<()> {
        e.record(&self.stream).map_err(|e| driver_error("recording an event", e))
    }

    fn wait(&self, e: &CudaEvent) -> Result<()> {
        e.synchronize().map_err(|e| driver_error("waiting for the step", e))
    }

    fn elapsed_micros(&self, start: &CudaEvent, end: &CudaEvent) -> Result<f64> {
        Ok(start.elapsed_ms(end).map_err(|e| driver_error("reading launch times", e))? as f64 * 1000.0)
    }

    fn begin_capture(&self) -> Result<()> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| driver_error("capturing a step", e))
    }

    fn end_capture(&self) -> Result<StepGraph> {
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(|e| driver_error("capturing a step", e))?;
        let graph = graph.ok_or_else(|| driver_error("capturing a step", DriverError(sys::cudaError_enum::CUDA_ERROR_UNKNOWN)))?;
        Ok(StepGraph(graph))
    }

    fn replay(&self, g: &StepGraph) -> Result<()> {
        g.0.launch().map_err(|e| driver_error("launching a step's graph", e))
    }

    unsafe fn launch(&self, g: &Grid, args: &Args) -> Result<()> {
        // SAFETY: the caller vouches for `args` as `launch` asks.
        unsafe { launch(&self.kernels, &self.stream, g, args) }
    }

    fn vendor_gemm(&self) -> Option<&'static str> {
        self.use_blas.then_some("cuBLAS")
    }

    fn size_vendor_gemm(&mut self, elements: usize) -> Result<()> {
        self.blas = Some(blas::Blas::new(&self.stream, elements)?);
        Ok(())
    }

    unsafe fn run_vendor_gemm(&self, t: &Template, args: &Args, rows: usize) -> Result<()> {
        let b = self.blas.as_ref().expect("sized with the activations");
        // SAFETY: as the caller vouches.
        unsafe { b.gemm(&self.kernels, &self.stream, t, args, rows) }
    }
}

#[cfg(test)]
mod tests;
