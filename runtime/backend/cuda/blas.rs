//! C, the GEMM of prefill-sized steps, through cuBLAS where the library is present (f16
//! weights): on an H200 it ran Llama-2-7B's prefill products several times faster than the
//! own tensor-core kernel (`gemm_mma`, which runs where cuBLAS is missing; bench/results has
//! both). cublasGemmEx takes f16 activations, so the rows are converted first, and the bias
//! and residual are added after it by a small kernel.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys as blas};
use cudarc::driver::{CudaSlice, CudaStream};

use super::compile::Kernels;
use super::{alloc_error, launch, ptr};
use crate::backend::native::kernels::{Args, Grid};
use crate::error::{Error, Result};
use crate::lower::Template;
use crate::lower::caps::cuda;
use crate::lower::kernel::{Epilogue, LaunchScalars, Params};

pub struct Blas {
    handle: CudaBlas,
    /// The activations of one product as f16.
    half_x: CudaSlice<u16>,
    /// cuBLAS's workspace, given to it up front so that it allocates nothing while a decode
    /// step is captured as a CUDA graph.
    _workspace: CudaSlice<u8>,
}

/// Bytes of cuBLAS workspace (NVIDIA's recommendation for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

fn blas_error(e: impl std::fmt::Debug) -> Error {
    Error::Backend { backend: "cuda".into(), op: "running a cuBLAS GEMM".into(), reason: format!("{e:?}") }
}

/// Whether libcublas loads here.
pub fn present() -> bool {
    // SAFETY: only opens and drops the shared library.
    unsafe { blas::is_culib_present() }
}

impl Blas {
    /// A handle on `stream` and room for `elements` f16 activations.
    pub fn new(stream: &Arc<CudaStream>, elements: usize) -> Result<Blas> {
        let handle = CudaBlas::new(stream.clone()).map_err(blas_error)?;
        let half_x = stream.alloc_zeros::<u16>(elements.max(8)).map_err(|e| alloc_error("f16 activations for cuBLAS", elements * 2, e))?;
        let workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES).map_err(|e| alloc_error("the cuBLAS workspace", WORKSPACE_BYTES, e))?;
        // SAFETY: the workspace is a live allocation of WORKSPACE_BYTES on the handle's
        // stream, kept (in `Blas`) as long as the handle.
        unsafe { blas::cublasSetWorkspace_v2(*handle.handle(), ptr(&workspace, stream) as *mut c_void, WORKSPACE_BYTES) }
            .result()
            .map_err(blas_error)?;
        Ok(Blas { handle, half_x, _workspace: workspace })
    }

    /// Elements of f16 activations it holds.
    pub fn capacity(&self) -> usize {
        self.half_x.len()
    }

    /// The product of template `t` over `rows` rows with the pointers of `args`, as the
    /// `gemm_*` kernels compute it.
    ///
    /// # Safety
    /// As `super::launch`: the pointers of `args` are live allocations sized for `rows` rows
    /// of template `t`, and `rows * k` is at most `capacity()`.
    pub unsafe fn gemm(&self, kernels: &Kernels, stream: &CudaStream, t: &Template, args: &Args, rows: usize) -> Result<()> {
        let Params::Linear { n, k, n_offset, ldy, bias, epilogue, .. } = t.params else { unreachable!("cuBLAS runs linear layers only") };
        let s = stream;
        let elems = rows * k;
        let eb = cuda::ELEM_BLOCK;
        let half = Args { x: args.x, y: ptr(&self.half_x, s), s: Args::scalars(elems, 0), ..Default::default() };
        // SAFETY: x holds rows x k floats (caller); half_x at least that many halves.
        unsafe {
            launch(kernels, s, &Grid { kernel: "to_f16".into(), blocks: [elems.div_ceil(eb) as u32, 1, 1], threads: eb as u32 }, &half)?
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Row-major y[rows, ldy] is column-major [ldy, rows]: its columns n_offset.. are
        // W (row-major [n, k], column-major [k, n], transposed) times x^T ([k, rows]).
        // SAFETY: w holds n x k halves, half_x rows x k, y rows x ldy floats from n_offset
        // on (caller); alpha and beta are host floats.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.handle.handle(),
                blas::cublasOperation_t::CUBLAS_OP_T,
                blas::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                rows as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                args.w as *const c_void,
                blas::cudaDataType::CUDA_R_16F,
                k as i32,
                ptr(&self.half_x, s) as *const c_void,
                blas::cudaDataType::CUDA_R_16F,
                k as i32,
                &beta as *const f32 as *const c_void,
                (args.y + 4 * n_offset as u64) as *mut c_void,
                blas::cudaDataType::CUDA_R_32F,
                ldy as i32,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas_error)?;
        let mode = (epilogue == Epilogue::Residual) as u32 | (bias as u32) << 1;
        if mode != 0 {
            let g = Grid { kernel: "linear_epilogue".into(), blocks: [n.div_ceil(eb) as u32, rows as u32, 1], threads: eb as u32 };
            // SAFETY: the caller's pointers, sized for this template and `rows` rows.
            unsafe { launch(kernels, s, &g, &Args { s: LaunchScalars { mode, ..args.s }, ..*args })? };
        }
        Ok(())
    }
}
