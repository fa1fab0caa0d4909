//! What the native backends (CUDA on NVIDIA, HIP on AMD) share: the kernel files of
//! vendor_kernels/cuda (one portability header, common.cuh), how a lowered launch becomes
//! kernel launches (`kernels`), and the executor (`executor`), written once against the
//! narrow [`Gpu`] interface each vendor's driver implements (ggml's backend interface:
//! memory, copies on one stream, events, graph capture, launches).

pub mod executor;
pub mod kernels;
pub mod sources;

use kernels::{Args, Grid};

use crate::backend::{KvPrecision, WeightPrecision};
use crate::error::{Error, Result};
use crate::lower::Template;
use crate::tensor::DType;

/// The type a native backend stores weights and the KV cache in: f16 unless f32 is asked
/// for. The kernels are built and tested with the KV cache in the weights' type only (the
/// tensor-core attention reads f16 K and V beside f16 weights).
pub fn storage(backend: &str, weights: WeightPrecision, kv: KvPrecision) -> Result<DType> {
    if weights == WeightPrecision::Native || kv == WeightPrecision::Native {
        let what = "quantized weights as stored (--weights native; its kernels read f16 or f32: use --weights auto)".into();
        return Err(Error::NotSupported { backend: backend.into(), what });
    }
    let stored = |p: WeightPrecision| if p == WeightPrecision::F32 { DType::F32 } else { DType::F16 };
    let dtype = stored(weights);
    let kv = if kv == WeightPrecision::Auto { dtype } else { stored(kv) };
    if kv != dtype {
        return Err(Error::NotSupported {
            backend: backend.into(),
            what: format!("an {kv} KV cache with {dtype} weights (its KV cache has the weights' type; ask for {kv} weights)"),
        });
    }
    Ok(dtype)
}

/// One device and one stream of a vendor's driver. Every call is ordered on that stream;
/// copies and launches return once queued.
pub trait Gpu: Send + 'static {
    /// A device allocation, freed when dropped.
    type Buffer: Send;
    /// Page-locked host memory, mapped into the device's address space: copies land in it,
    /// and kernels read and write it directly (at its `pinned_address`).
    type Pinned: Send;
    type Event: Send;
    /// A captured sequence of launches, replayed as one.
    type Graph: Send;

    /// The backend's name in messages ("cuda", "hip").
    fn name(&self) -> &'static str;
    fn free_bytes(&self) -> Result<u64>;
    /// `bytes` zeroed bytes on the device; `what` names them in an out-of-memory error.
    fn alloc(&self, bytes: usize, what: &str) -> Result<Self::Buffer>;
    /// A device copy of `data`.
    fn upload(&self, data: &[u8], what: &str) -> Result<Self::Buffer>;
    /// The device address of `b`, as the kernels take it.
    fn address(&self, b: &Self::Buffer) -> u64;
    fn size(&self, b: &Self::Buffer) -> usize;
    /// Copies `data` into `dst` from byte `offset`; returns once `data` may be reused.
    fn write(&self, dst: &mut Self::Buffer, offset: usize, data: &[u8]) -> Result<()>;
    /// Copies `dst.len()` bytes of `src` from byte 0 into `dst`, and waits for them.
    fn read(&self, src: &Self::Buffer, dst: &mut [u8]) -> Result<()>;
    /// Queues a copy of the first `bytes` of `src` into `dst` (read them only after an event
    /// recorded after it has been waited for).
    fn read_pinned(&self, src: &Self::Buffer, bytes: usize, dst: &mut Self::Pinned) -> Result<()>;
    fn pinned(&self, bytes: usize, what: &str) -> Result<Self::Pinned>;
    /// The contents of `p`; valid once the copies and kernels writing it have been waited for.
    fn pinned_bytes<'a>(&self, p: &'a Self::Pinned) -> Result<&'a [u8]>;
    /// Writes `data` at the start of `p` (the caller has waited for the work reading it).
    fn write_pinned(&self, p: &mut Self::Pinned, data: &[u8]) -> Result<()>;
    /// The address kernels reach `p` at.
    fn pinned_address(&self, p: &Self::Pinned) -> Result<u64>;
    fn event(&self) -> Result<Self::Event>;
    fn record(&self, e: &Self::Event) -> Result<()>;
    /// Blocks until the work queued before `e` was recorded has run.
    fn wait(&self, e: &Self::Event) -> Result<()>;
    fn elapsed_micros(&self, start: &Self::Event, end: &Self::Event) -> Result<f64>;
    /// From here to `end_capture`, launches are recorded instead of run.
    fn begin_capture(&self) -> Result<()>;
    fn end_capture(&self) -> Result<Self::Graph>;
    fn replay(&self, g: &Self::Graph) -> Result<()>;
    /// Queues kernel `g.kernel` over grid `g` with `args`.
    ///
    /// # Safety
    /// Every pointer in `args` must be null or a live device allocation (kept alive until the
    /// launch has run) at least as large as the kernel reads or writes through it for the grid
    /// `g` and the step in `args.step`, as `kernels::grids` sizes them.
    unsafe fn launch(&self, g: &Grid, args: &Args) -> Result<()>;
    /// The library C (`Variant::Gemm`) runs through, where it does (cuBLAS).
    fn vendor_gemm(&self) -> Option<&'static str> {
        None
    }
    /// Makes room for `elements` activations of a vendor GEMM.
    fn size_vendor_gemm(&mut self, elements: usize) -> Result<()> {
        let _ = elements;
        Ok(())
    }
    /// Runs the product of template `t` over `rows` rows through the vendor library.
    ///
    /// # Safety
    /// As `launch`; `rows` times the template's K fits what `size_vendor_gemm` made room for.
    unsafe fn run_vendor_gemm(&self, t: &Template, args: &Args, rows: usize) -> Result<()> {
        let _ = (t, args, rows);
        Err(Error::NotSupported { backend: self.name().into(), what: "a vendor GEMM library".into() })
    }
}
