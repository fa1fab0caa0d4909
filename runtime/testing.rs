//! Support for tests that need what a machine may lack (a GPU adapter, the cached default
//! model): they print why they cannot run, and fail instead where the environment says
//! they must run (`FDPP_REQUIRE_GPU=1`, `FDPP_REQUIRE_MODEL=1`, as CI sets them;
//! `FDPP_REQUIRE_CUDA=1` / `FDPP_REQUIRE_HIP=1` where an NVIDIA / AMD GPU must be used,
//! `FDPP_REQUIRE_ROCM=1` where ROCm's compilers must be installed,
//! `FDPP_REQUIRE_COOPERATIVE_MATRIX=1` where the wgpu adapter must have cooperative matrices).

/// What a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    Gpu,
    /// An NVIDIA GPU the CUDA backend runs on (separate from `Gpu`: CI's software Vulkan
    /// driver satisfies that one).
    Cuda,
    Model,
    /// An AMD GPU the HIP backend runs on.
    Hip,
    /// ROCm's compilers (`hipcc`, hiprtc) for the compile checks of the kernels for AMD GPUs
    /// (no GPU needed).
    Rocm,
    /// A wgpu adapter with the cooperative matrices the WGSL GEMM uses (separate from `Gpu`:
    /// CI's software Vulkan driver has none).
    CooperativeMatrix,
}

impl Requirement {
    fn variable(self) -> &'static str {
        match self {
            Requirement::Gpu => "FDPP_REQUIRE_GPU",
            Requirement::Cuda => "FDPP_REQUIRE_CUDA",
            Requirement::Model => "FDPP_REQUIRE_MODEL",
            Requirement::Hip => "FDPP_REQUIRE_HIP",
            Requirement::Rocm => "FDPP_REQUIRE_ROCM",
            Requirement::CooperativeMatrix => "FDPP_REQUIRE_COOPERATIVE_MATRIX",
        }
    }

    /// Whether the environment says tests needing this must run.
    pub fn required(self) -> bool {
        std::env::var(self.variable()).is_ok_and(|v| v == "1")
    }
}

/// Reports that a test cannot run here because `why`: prints it, or panics when the
/// requirement is marked required.
pub fn skip(req: Requirement, why: &str) {
    if req.required() {
        panic!("{} is set but this test cannot run: {why}", req.variable());
    }
    eprintln!("skipped: {why} (set {}=1 to make this a failure)", req.variable());
}

/// Skips for `Error::BackendUnavailable`, passes any other error on as a panic.
pub fn skip_unavailable(e: crate::Error) {
    match e {
        crate::Error::BackendUnavailable { ref backend, .. } => {
            let req = match backend.as_str() {
                "cuda" => Requirement::Cuda,
                "hip" => Requirement::Hip,
                _ => Requirement::Gpu,
            };
            skip(req, &e.to_string())
        }
        other => panic!("{other}"),
    }
}
