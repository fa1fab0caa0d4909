//! Backends execute lowered steps; they decide nothing. A backend is opened first
//! ([`open`]: the device and its capabilities, which feed the lowering), then loaded with a
//! [`Lowering`] and the model's weights ([`Device::load`]: it allocates, converts and uploads
//! each weight in the type it stores, prepares every launch template once). The engine's
//! driver then submits steps and collects what they picked through the narrow
//! [`Executor`] interface, two steps in flight where the device picks the next ids itself.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "hip")]
pub mod hip;
pub mod microbench;
#[cfg(any(feature = "cuda", feature = "hip"))]
pub mod native;
pub mod tap;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::lower::caps::{BackendCaps, BackendKind};
use crate::lower::{LoweredStep, Lowering};
use crate::model::WeightSource;
use crate::sampling::SamplingParams;
pub use tap::{Tap, Tapped};

/// One graph run. Token `i` belongs to sequence `seqs[i]` at position `positions[i]`;
/// it attends to that sequence's positions `0..=positions[i]`. Logits are produced for
/// the token rows listed in `out_rows`.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [usize],
    pub seqs: &'a [usize],
    pub out_rows: &'a [usize],
}

impl StepInput<'_> {
    pub fn m(&self) -> usize {
        self.tokens.len()
    }
}

/// Where a step's token ids come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    /// `StepInput::tokens`.
    Host,
    /// The ids the previous step picked (`Pick::Argmax` / `Pick::Sample`), still on the
    /// device: one per output row, in order.
    Picked,
}

/// What a step hands back.
#[derive(Clone, Debug, PartialEq)]
pub enum Pick {
    /// The logits of every output row.
    Logits,
    /// The greedy id of every output row, picked on the device.
    Argmax,
    /// Top-k / top-p ids picked on the device with these uniform draws (one per row), as
    /// `Sampler::sample` would pick them.
    Sample { params: SamplingParams, draws: Vec<f32> },
}

/// Where the time of one step went, as far as the backend measures it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    /// Recording and submitting the step on the host.
    pub host_micros: Option<f64>,
    /// From the step's first kernel starting to its last finishing on the device.
    pub device_micros: Option<f64>,
}

/// What a finished step produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// Picked ids (empty for `Pick::Logits`).
    pub ids: Vec<u32>,
    /// `[out_rows, vocab]` logits (`Pick::Logits` only).
    pub logits: Vec<f32>,
    pub timing: StepTiming,
    /// Device time of each launch, when profiling.
    pub launch_micros: Option<Vec<f64>>,
    /// Attention rows recomputed because their scores left the unified-max range.
    pub fallback_rows: Option<u32>,
}

/// A loaded backend, driven one step at a time. Step `t` is submitted into one of two
/// slots (`t % 2`) and collected later, so a backend that runs asynchronously can record
/// step t + 1 while step t runs.
pub trait Executor: Send {
    /// Backend and device, e.g. `cpu (2 threads, avx2+fma)`.
    fn describe(&self) -> String;
    /// Records and starts `step` in `slot` (a synchronous backend runs it here).
    fn submit(&mut self, step: &LoweredStep, input: &StepInput, tokens: Tokens, pick: &Pick, slot: usize) -> Result<()>;
    /// Waits for the step in `slot` and returns what it produced.
    fn collect(&mut self, slot: usize) -> Result<StepOutput>;
    /// Times every launch of the following steps (slower on GPUs: each launch in its own pass).
    fn set_profiling(&mut self, on: bool) -> Result<()>;
    /// Forgets a sequence's KV cache so its slot can be reused.
    fn reset_sequence(&mut self, seq: usize);
    /// Runs `step` to the end with the tokens of `input` (as `submit` with `Tokens::Host`
    /// and `Pick::Logits`, then `collect`) and returns, besides its output, the values of
    /// every tap: the first `elements` of the buffer the tapped launch writes, read right
    /// after it ran and before any later launch, perturbed first where the tap asks (see
    /// `tap`). `fdpp check` compares backends node by node with it. A backend that cannot
    /// read single launches back keeps this default.
    fn run_tapped(&mut self, step: &LoweredStep, input: &StepInput, taps: &[Tap]) -> Result<(StepOutput, Tapped)> {
        let _ = (step, input, taps);
        Err(Error::NotSupported { backend: self.describe(), what: "reading back single launches (`fdpp check`)".into() })
    }
}

/// Sizes every backend allocates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Sequences that may be live at once.
    pub max_seqs: usize,
    /// Longest sequence (KV positions) the caches hold.
    pub max_context: usize,
}

/// How weights are stored on a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WeightPrecision {
    /// f16 when the device supports it, else f32.
    #[default]
    Auto,
    F32,
    F16,
    /// Block-quantized matrices (Q8_0, Q4_0, Q4_1) stay as the file stores them and the
    /// kernels dequantize as they read; every other tensor as `Auto`. wgpu only.
    Native,
}

/// How the K and V caches are stored on a GPU: the same choices as the weights but
/// `Native` (refused). Scores, softmax and sums are f32 either way. The CUDA backend
/// stores them as its weights (`Auto`; asking for the other type is an error).
pub type KvPrecision = WeightPrecision;

/// Options of the wgpu backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WgpuOptions {
    /// GPU adapter to use (substring of its name); the preferred one when `None`.
    pub adapter: Option<String>,
    pub precision: WeightPrecision,
    pub kv: KvPrecision,
    /// Largest weight chunk one binding may hold, in bytes (default: the device's limit).
    pub binding_limit: Option<u64>,
}

/// Which backend to open, with its own options.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendOptions {
    Cpu,
    Wgpu(WgpuOptions),
    Cuda(CudaOptions),
    Hip(HipOptions),
}

/// Options of the CUDA backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CudaOptions {
    /// Device ordinal (among those CUDA_VISIBLE_DEVICES leaves).
    pub ordinal: usize,
    pub precision: WeightPrecision,
    pub kv: KvPrecision,
}

/// Options of the HIP backend (AMD GPUs): as CUDA's.
pub type HipOptions = CudaOptions;

impl BackendOptions {
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendOptions::Cpu => BackendKind::Cpu,
            BackendOptions::Wgpu(_) => BackendKind::Wgpu,
            BackendOptions::Cuda(_) => BackendKind::Cuda,
            BackendOptions::Hip(_) => BackendKind::Hip,
        }
    }
}

/// An opened device: its capabilities are known, nothing of a model is loaded yet.
pub trait Device {
    fn caps(&self) -> &BackendCaps;
    /// Allocates for `capacity`, uploads every weight of `lowering`'s graph (read one at a
    /// time from `weights`, in the type the device stores; call `Graph::check_weights`
    /// first), and prepares the launch templates. `progress(done, total)` per weight.
    fn load(
        self: Box<Self>,
        lowering: Arc<Lowering>,
        weights: &dyn WeightSource,
        capacity: Capacity,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Executor>>;
}

/// Whether this build has the backend, and the reason where it has not.
pub fn unavailable(kind: BackendKind) -> Option<Error> {
    let reason = match kind {
        BackendKind::Cpu => return None,
        BackendKind::Wgpu if cfg!(feature = "wgpu") => return None,
        BackendKind::Wgpu => "this fdpp was built without the `wgpu` feature".to_string(),
        BackendKind::Cuda if cfg!(feature = "cuda") => return None,
        BackendKind::Cuda => "this fdpp was built without the `cuda` feature".to_string(),
        BackendKind::Hip if cfg!(feature = "hip") => return None,
        BackendKind::Hip => "this fdpp was built without the `hip` feature".to_string(),
    };
    Some(Error::BackendUnavailable { backend: kind.name().into(), reason })
}

/// Opens the backend `opts` names.
pub fn open(opts: &BackendOptions) -> Result<Box<dyn Device>> {
    if let Some(e) = unavailable(opts.kind()) {
        return Err(e);
    }
    match opts {
        BackendOptions::Cpu => Ok(Box::new(cpu::CpuDevice::new())),
        #[cfg(feature = "wgpu")]
        BackendOptions::Wgpu(o) => Ok(Box::new(wgpu::WgpuDevice::open(o)?)),
        #[cfg(feature = "cuda")]
        BackendOptions::Cuda(o) => Ok(Box::new(cuda::CudaDevice::open(o)?)),
        #[cfg(feature = "hip")]
        BackendOptions::Hip(o) => Ok(Box::new(hip::HipDevice::open(o)?)),
        #[allow(unreachable_patterns)]
        _ => unreachable!("unavailable() refused it"),
    }
}

/// The linear kernels of the backend `opts` names, to time (`bench kernels`, the tuner).
pub fn open_linear_bench(opts: &BackendOptions) -> Result<Box<dyn microbench::LinearBench>> {
    if let Some(e) = unavailable(opts.kind()) {
        return Err(e);
    }
    match opts {
        BackendOptions::Cpu => Err(Error::NotSupported {
            backend: "cpu".into(),
            what: "timing or tuning kernels: the CPU backend is the reference oracle (use --backend wgpu or cuda)".into(),
        }),
        #[cfg(feature = "wgpu")]
        BackendOptions::Wgpu(o) => Ok(Box::new(wgpu::microbench::WgpuLinear::open(o)?)),
        #[cfg(feature = "cuda")]
        BackendOptions::Cuda(o) => Ok(Box::new(cuda::microbench::CudaLinear::open(o)?)),
        BackendOptions::Hip(_) => Err(Error::NotSupported {
            backend: "hip".into(),
            what: "timing or tuning single kernels (not written for HIP yet: `fdpp bench --backend hip` times whole steps)".into(),
        }),
        #[allow(unreachable_patterns)]
        _ => unreachable!("unavailable() refused it"),
    }
}

/// What `--backend auto` opens: CUDA where it works, else HIP where it works, else wgpu on a
/// hardware GPU, else the CPU.
pub fn auto_kind() -> BackendKind {
    if has_cuda_device() {
        BackendKind::Cuda
    } else if has_hip_device() {
        BackendKind::Hip
    } else if has_hardware_gpu() {
        BackendKind::Wgpu
    } else {
        BackendKind::Cpu
    }
}

/// Whether `--backend auto` should pick CUDA: this build has it, the driver and NVRTC load,
/// and device 0 has compute capability 8.0 or newer.
pub fn has_cuda_device() -> bool {
    #[cfg(feature = "cuda")]
    {
        cuda::usable_device()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Whether an AMD GPU the HIP backend runs on is present (ROCm's runtime loads and lists one).
pub fn has_hip_device() -> bool {
    #[cfg(feature = "hip")]
    {
        hip::usable_device()
    }
    #[cfg(not(feature = "hip"))]
    {
        false
    }
}

/// Whether `--backend auto` should pick a GPU: this build has wgpu and a hardware adapter exists.
pub fn has_hardware_gpu() -> bool {
    #[cfg(feature = "wgpu")]
    {
        wgpu::device::has_hardware_adapter()
    }
    #[cfg(not(feature = "wgpu"))]
    {
        false
    }
}
