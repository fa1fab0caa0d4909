//! The native AMD backend: the CUDA backend's kernel files (vendor_kernels/cuda, through the
//! portability header's `FDPP_HIP` side) compiled at run time by hiprtc for the device's own
//! architecture (`gfx90a`, `gfx1100`, ...), launched through the HIP runtime by the executor
//! the native backends share, each step's launches captured once as a HIP graph. The runtime
//! and hiprtc are loaded when the backend is opened (`sys`), so fdpp builds without ROCm.
//!
//! The tensor-core kernels (mma.sync, ldmatrix, cp.async) are CUDA's only: on AMD the
//! lowering sees no flat-GEMM tilings, no tensor-core GEMM and no flash attention in the
//! device's capabilities, and picks their SIMT forms (the GEMV, the tiled GEMM, split-KV and
//! online attention). MFMA / WMMA forms of them are future work.

pub mod compile;
pub mod sys;

use std::ffi::{CStr, c_void};
use std::sync::Arc;

use super::native::kernels::{Args, Grid};
use super::native::{self, Gpu};
use super::{BackendCaps, Capacity, Device, Executor, HipOptions};
use crate::error::{Error, Result};
use crate::lower::Lowering;
use crate::lower::caps::cuda;
use crate::model::WeightSource;
use crate::tensor::DType;

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "hip".into(), reason: reason.into() }
}

fn hip_error(rt: &sys::Runtime, op: &str, e: sys::HipError) -> Error {
    Error::Backend { backend: "hip".into(), op: op.into(), reason: sys::error_string(rt, e) }
}

/// `Ok` for `hipSuccess`, else the error of `op`.
fn check(rt: &sys::Runtime, op: &str, e: sys::HipError) -> Result<()> {
    if e == sys::SUCCESS { Ok(()) } else { Err(hip_error(rt, op, e)) }
}

/// Why the HIP backend cannot run on this machine, if it cannot: the runtime or hiprtc is
/// missing. Loading the libraries is all it does.
pub fn missing_library() -> Option<String> {
    sys::runtime().and(sys::rtc()).err()
}

/// The number of AMD GPUs the runtime lists, or why there is none.
fn device_count(rt: &sys::Runtime) -> std::result::Result<usize, String> {
    // SAFETY: hipInit takes flags 0; hipGetDeviceCount writes one int through a valid pointer.
    let init = unsafe { (rt.hipInit)(0) };
    if init != sys::SUCCESS {
        return Err(format!(
            "ROCm's HIP runtime loaded but found no usable AMD GPU (hipInit: {}): check that the amdgpu driver is loaded and /dev/kfd is readable, or use --backend wgpu or cpu",
            sys::error_string(rt, init)
        ));
    }
    let mut count = 0;
    // SAFETY: as above.
    let e = unsafe { (rt.hipGetDeviceCount)(&mut count) };
    if e != sys::SUCCESS || count <= 0 {
        return Err(format!("ROCm's HIP runtime lists no AMD GPU (hipGetDeviceCount: {})", sys::error_string(rt, e)));
    }
    Ok(count as usize)
}

/// Whether an AMD GPU the HIP backend can run on is present.
pub fn usable_device() -> bool {
    missing_library().is_none() && sys::runtime().is_ok_and(|rt| device_count(rt).is_ok())
}

/// What the runtime says of a device.
struct Properties {
    name: String,
    /// The compiler's target, with its features (e.g. `gfx90a:sramecc+:xnack-`).
    arch: String,
    multiprocessors: usize,
    warp_size: usize,
}

fn properties(rt: &sys::Runtime, ordinal: usize) -> Result<Properties> {
    let mut raw = vec![0u8; sys::props::BYTES];
    // SAFETY: the buffer is larger than any layout of hipDeviceProp_t this symbol fills.
    check(rt, "querying the device", unsafe { (rt.hipGetDeviceProperties)(raw.as_mut_ptr().cast::<c_void>(), ordinal as i32) })?;
    let text = |at: usize| {
        let field = &raw[at..at + sys::props::NAME_LEN];
        CStr::from_bytes_until_nul(field).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    };
    let int = |at: usize| i32::from_ne_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let p = Properties {
        name: text(sys::props::NAME),
        arch: text(sys::props::GCN_ARCH_NAME),
        multiprocessors: int(sys::props::MULTIPROCESSOR_COUNT).max(1) as usize,
        warp_size: int(sys::props::WARP_SIZE) as usize,
    };
    if !p.arch.starts_with("gfx") || !matches!(p.warp_size, 32 | 64) {
        return Err(unavailable(format!(
            "the HIP runtime's device properties are not laid out as fdpp reads them (architecture {:?}, wavefront {}): this ROCm is not supported",
            p.arch, p.warp_size
        )));
    }
    Ok(p)
}

/// An opened AMD GPU.
pub struct HipDevice {
    rt: &'static sys::Runtime,
    caps: BackendCaps,
    arch: String,
    runtime_version: i32,
}

impl HipDevice {
    pub fn open(opts: &HipOptions) -> Result<HipDevice> {
        let dtype = native::storage("hip", opts.precision, opts.kv)?;
        if let Some(why) = missing_library() {
            return Err(unavailable(why));
        }
        let rt = sys::runtime().map_err(unavailable)?;
        let count = device_count(rt).map_err(unavailable)?;
        if opts.ordinal >= count {
            return Err(unavailable(format!("device {} asked for, the HIP runtime lists {count}", opts.ordinal)));
        }
        // SAFETY: an ordinal the runtime listed.
        check(rt, "selecting the device", unsafe { (rt.hipSetDevice)(opts.ordinal as i32) })?;
        let p = properties(rt, opts.ordinal)?;
        let mut runtime_version = 0;
        // SAFETY: writes one int through a valid pointer.
        check(rt, "querying the runtime version", unsafe { (rt.hipRuntimeGetVersion)(&mut runtime_version) })?;
        let arch = p.arch.split(':').next().unwrap_or_default().to_string();
        let mut caps = BackendCaps {
            device: format!("{} ({arch}, wavefront {}, HIP {})", p.name, p.warp_size, version(runtime_version)),
            driver: format!("HIP {}", version(runtime_version)),
            kernels: native::sources::sources_hash(dtype == DType::F16, false),
            ..BackendCaps::hip_builtin(dtype)
        };
        if let Some(limits) = &mut caps.attention.split_kv {
            limits.target_blocks = Some(p.multiprocessors * cuda::ATTN_BLOCKS_PER_SM);
            limits.single_min_rows_heads = p.multiprocessors / 2;
        }
        Ok(HipDevice { rt, caps, arch: p.arch, runtime_version })
    }
}

/// HIP's version number (major * 10^7 + minor * 10^5 + patch) as major.minor.
fn version(v: i32) -> String {
    format!("{}.{}", v / 10_000_000, v / 100_000 % 100)
}

impl Device for HipDevice {
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
        let rt = self.rt;
        let f16 = self.caps.weight_dtype == DType::F16;
        let kernels = compile::Kernels::load(rt, f16, &self.arch, self.runtime_version)?;
        let mut stream = std::ptr::null_mut();
        // SAFETY: writes one stream handle through a valid pointer.
        check(rt, "creating a stream", unsafe { (rt.hipStreamCreateWithFlags)(&mut stream, sys::STREAM_NON_BLOCKING) })?;
        let gpu = HipGpu { rt, stream, kernels };
        // No tensor-core kernels on AMD (common.cuh: FDPP_TENSOR_CORES 0; the caps say so).
        native::executor::load(gpu, &self.caps, lowering, weights, capacity, progress)
    }
}

/// Device memory, freed when dropped.
pub struct HipBuffer {
    rt: &'static sys::Runtime,
    ptr: sys::DevicePtr,
    bytes: usize,
}

// SAFETY: a device allocation may be used and freed from any thread.
unsafe impl Send for HipBuffer {}

impl Drop for HipBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by hipMalloc and freed once; hipFree waits for the device's work.
        unsafe { (self.rt.hipFree)(self.ptr) };
    }
}

/// Page-locked host memory, freed when dropped.
pub struct HipPinned {
    rt: &'static sys::Runtime,
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: host memory, owned by this value alone.
unsafe impl Send for HipPinned {}

impl Drop for HipPinned {
    fn drop(&mut self) {
        // SAFETY: allocated by hipHostMalloc and freed once.
        unsafe { (self.rt.hipHostFree)(self.ptr.cast()) };
    }
}

pub struct HipEvent {
    rt: &'static sys::Runtime,
    raw: sys::Event,
}

// SAFETY: HIP events may be recorded and waited for from any thread.
unsafe impl Send for HipEvent {}

impl Drop for HipEvent {
    fn drop(&mut self) {
        // SAFETY: created by hipEventCreate and destroyed once.
        unsafe { (self.rt.hipEventDestroy)(self.raw) };
    }
}

/// A step's launches captured as one HIP graph, instantiated.
pub struct HipGraph {
    rt: &'static sys::Runtime,
    graph: sys::Graph,
    exec: sys::GraphExec,
}

// SAFETY: as CUDA's: a graph may be launched from any thread, one call at a time (the
// executor holds it behind `&mut`).
unsafe impl Send for HipGraph {}

impl Drop for HipGraph {
    fn drop(&mut self) {
        // SAFETY: both were created by the capture and are destroyed once.
        unsafe {
            (self.rt.hipGraphExecDestroy)(self.exec);
            (self.rt.hipGraphDestroy)(self.graph);
        }
    }
}

/// The HIP runtime under the native executor: one device, one stream, the loaded kernels.
pub struct HipGpu {
    rt: &'static sys::Runtime,
    stream: sys::Stream,
    kernels: compile::Kernels,
}

// SAFETY: the stream and modules are only used through `&self` / `&mut self` of the
// executor, one call at a time; HIP handles may move between threads.
unsafe impl Send for HipGpu {}

impl Drop for HipGpu {
    fn drop(&mut self) {
        // SAFETY: the stream was created by this value; its work is waited for first.
        unsafe {
            (self.rt.hipStreamSynchronize)(self.stream);
            (self.rt.hipStreamDestroy)(self.stream);
        }
    }
}

impl HipGpu {
    fn check(&self, op: &str, e: sys::HipError) -> Result<()> {
        check(self.rt, op, e)
    }

    /// `Ok` where an allocation of `bytes` for `what` succeeded; running out of memory is
    /// `Error::OutOfMemory`.
    fn allocated(&self, e: sys::HipError, what: &str, bytes: usize) -> Result<()> {
        if e == sys::ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory { backend: "hip".into(), what: what.into(), bytes: bytes as u64 });
        }
        self.check(&format!("allocating {what}"), e)
    }

    /// `bytes` of device memory, not yet written (`alloc` zeroes them, `upload` fills them).
    fn malloc(&self, bytes: usize, what: &str) -> Result<HipBuffer> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one pointer through a valid pointer.
        self.allocated(unsafe { (self.rt.hipMalloc)(&mut ptr, bytes.max(1)) }, what, bytes)?;
        Ok(HipBuffer { rt: self.rt, ptr, bytes })
    }

    fn range(b: &HipBuffer, offset: usize, bytes: usize) -> Result<sys::DevicePtr> {
        if offset.checked_add(bytes).is_none_or(|end| end > b.bytes) {
            return Err(Error::InvalidArgument(format!("{bytes} bytes from {offset} of a {}-byte device buffer", b.bytes)));
        }
        Ok(b.ptr.wrapping_byte_add(offset))
    }
}

impl Gpu for HipGpu {
    type Buffer = HipBuffer;
    type Pinned = HipPinned;
    type Event = HipEvent;
    type Graph = HipGraph;

    fn name(&self) -> &'static str {
        "hip"
    }

    fn free_bytes(&self) -> Result<u64> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two sizes through valid pointers.
        self.check("querying free memory", unsafe { (self.rt.hipMemGetInfo)(&mut free, &mut total) })?;
        Ok(free as u64)
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<HipBuffer> {
        let b = self.malloc(bytes, what)?;
        // SAFETY: the whole of a live allocation.
        self.check("clearing device memory", unsafe { (self.rt.hipMemsetAsync)(b.ptr, 0, b.bytes, self.stream) })?;
        Ok(b)
    }

    fn upload(&self, data: &[u8], what: &str) -> Result<HipBuffer> {
        let mut b = self.malloc(data.len(), what)?;
        self.write(&mut b, 0, data)?;
        Ok(b)
    }

    fn address(&self, b: &HipBuffer) -> u64 {
        b.ptr as u64
    }

    fn size(&self, b: &HipBuffer) -> usize {
        b.bytes
    }

    fn write(&self, dst: &mut HipBuffer, offset: usize, data: &[u8]) -> Result<()> {
        let to = Self::range(dst, offset, data.len())?;
        // SAFETY: `to` spans data.len() bytes of a live allocation. From pageable memory the
        // runtime stages the copy before it returns, so `data` may be reused after it.
        self.check("copying to the device", unsafe { (self.rt.hipMemcpyHtoDAsync)(to, data.as_ptr().cast(), data.len(), self.stream) })
    }

    fn read(&self, src: &HipBuffer, dst: &mut [u8]) -> Result<()> {
        let from = Self::range(src, 0, dst.len())?;
        // SAFETY: `from` spans dst.len() bytes of a live allocation; the copy is waited for
        // before `dst` is released.
        self.check("copying from the device", unsafe {
            (self.rt.hipMemcpyDtoHAsync)(dst.as_mut_ptr().cast(), from, dst.len(), self.stream)
        })?;
        // SAFETY: a stream of this value.
        self.check("copying from the device", unsafe { (self.rt.hipStreamSynchronize)(self.stream) })
    }

    fn read_pinned(&self, src: &HipBuffer, bytes: usize, dst: &mut HipPinned) -> Result<()> {
        let from = Self::range(src, 0, bytes)?;
        if bytes > dst.bytes {
            return Err(Error::InvalidArgument(format!("{bytes} bytes into {} of pinned memory", dst.bytes)));
        }
        // SAFETY: both ranges lie in live allocations; the pinned memory outlives the copy
        // (the executor waits for the slot's event before it reuses or drops it).
        self.check("copying from the device", unsafe { (self.rt.hipMemcpyDtoHAsync)(dst.ptr.cast(), from, bytes, self.stream) })
    }

    fn pinned(&self, bytes: usize, what: &str) -> Result<HipPinned> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one pointer through a valid pointer; kernels reach the memory at
        // `pinned_address` (hipHostMallocMapped).
        self.allocated(unsafe { (self.rt.hipHostMalloc)(&mut ptr, bytes.max(1), sys::HOST_MALLOC_MAPPED) }, what, bytes)?;
        let p = HipPinned { rt: self.rt, ptr: ptr.cast(), bytes };
        // SAFETY: `bytes` bytes of host memory just allocated, not yet shared: zeroed so that
        // every byte `pinned_bytes` hands out is initialised.
        unsafe { std::ptr::write_bytes(p.ptr, 0, bytes) };
        Ok(p)
    }

    fn pinned_bytes<'a>(&self, p: &'a HipPinned) -> Result<&'a [u8]> {
        // SAFETY: `bytes` initialised bytes of host memory owned by `p` (zeroed when allocated,
        // since written only by copies); none in flight (the caller waited for them).
        Ok(unsafe { std::slice::from_raw_parts(p.ptr, p.bytes) })
    }

    fn write_pinned(&self, p: &mut HipPinned, data: &[u8]) -> Result<()> {
        if data.len() > p.bytes {
            return Err(Error::InvalidArgument(format!("{} bytes into {} of pinned memory", data.len(), p.bytes)));
        }
        // SAFETY: `data.len()` bytes fit the host memory `p` owns, which `&mut` holds alone
        // on the host; the caller has waited for the device's work reading it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.ptr, data.len()) };
        Ok(())
    }

    fn pinned_address(&self, p: &HipPinned) -> Result<u64> {
        let mut address: sys::DevicePtr = std::ptr::null_mut();
        // SAFETY: `p.ptr` is the start of a live hipHostMallocMapped allocation; one pointer
        // is written.
        self.check("mapping pinned memory", unsafe { (self.rt.hipHostGetDevicePointer)(&mut address, p.ptr.cast(), 0) })?;
        Ok(address as u64)
    }

    fn event(&self) -> Result<HipEvent> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one event handle through a valid pointer.
        self.check("creating an event", unsafe { (self.rt.hipEventCreate)(&mut raw) })?;
        Ok(HipEvent { rt: self.rt, raw })
    }

    fn record(&self, e: &HipEvent) -> Result<()> {
        // SAFETY: a live event and stream.
        self.check("recording an event", unsafe { (self.rt.hipEventRecord)(e.raw, self.stream) })
    }

    fn wait(&self, e: &HipEvent) -> Result<()> {
        // SAFETY: a live event.
        self.check("waiting for the step", unsafe { (self.rt.hipEventSynchronize)(e.raw) })
    }

    fn elapsed_micros(&self, start: &HipEvent, end: &HipEvent) -> Result<f64> {
        let mut ms = 0f32;
        // SAFETY: two live events; writes one float.
        self.check("reading launch times", unsafe { (self.rt.hipEventElapsedTime)(&mut ms, start.raw, end.raw) })?;
        Ok(ms as f64 * 1000.0)
    }

    fn begin_capture(&self) -> Result<()> {
        // SAFETY: a live stream.
        self.check("capturing a step", unsafe { (self.rt.hipStreamBeginCapture)(self.stream, sys::CAPTURE_THREAD_LOCAL) })
    }

    fn end_capture(&self) -> Result<HipGraph> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: a stream in capture; writes one graph handle.
        self.check("capturing a step", unsafe { (self.rt.hipStreamEndCapture)(self.stream, &mut graph) })?;
        let mut exec = std::ptr::null_mut();
        // SAFETY: a graph just captured; no error node or log buffer asked for.
        let e = unsafe { (self.rt.hipGraphInstantiate)(&mut exec, graph, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if e != sys::SUCCESS {
            // SAFETY: the graph is not used again.
            unsafe { (self.rt.hipGraphDestroy)(graph) };
            return Err(hip_error(self.rt, "instantiating a step's graph", e));
        }
        Ok(HipGraph { rt: self.rt, graph, exec })
    }

    fn replay(&self, g: &HipGraph) -> Result<()> {
        // SAFETY: an instantiated graph and a live stream.
        self.check("launching a step's graph", unsafe { (self.rt.hipGraphLaunch)(g.exec, self.stream) })
    }

    unsafe fn launch(&self, g: &Grid, args: &Args) -> Result<()> {
        let f = self.kernels.function(&g.kernel)?;
        let mut a = *args;
        let mut params = [&mut a as *mut Args as *mut c_void];
        let [x, y, z] = g.blocks;
        // SAFETY: every kernel takes one `Args` (the same layout, common.cuh checks its size),
        // which the runtime copies at this call; the caller vouches for the memory behind its
        // pointers.
        let e = unsafe {
            (self.rt.hipModuleLaunchKernel)(f, x, y, z, g.threads, 1, 1, 0, self.stream, params.as_mut_ptr(), std::ptr::null_mut())
        };
        self.check(&format!("launching {}", g.kernel), e)
    }
}

#[cfg(test)]
mod tests;
