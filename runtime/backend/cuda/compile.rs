//! Kernel sources to loaded modules: each family (`native::sources`) is compiled by NVRTC to
//! PTX for the device's own architecture, cached on disk (`sources::cached_compile`, keyed by
//! source, architecture, driver and fdpp version) and loaded; `Kernels` holds every exported
//! function by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, sys};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::backend::native::kernels::exports;
use crate::backend::native::sources::{FAMILIES, cached_compile, source};
use crate::error::{Error, Result};

fn compile_error(family: &str, reason: String) -> Error {
    Error::Backend { backend: "cuda".into(), op: format!("compiling the {family} kernels"), reason }
}

/// PTX of `src` for compute capability `arch` (e.g. (9, 0)), from the cache in `dir` when it
/// holds a valid entry, else compiled by NVRTC (and stored there when `dir` is given).
pub fn ptx(family: &str, src: &str, arch: (i32, i32), driver: i32, dir: Option<&Path>) -> Result<String> {
    let target = format!("compute_{}{}|driver {driver}", arch.0, arch.1);
    let code = cached_compile(family, src, &target, "ptx", dir, || {
        let opts = CompileOptions {
            options: vec![format!("--gpu-architecture=compute_{}{}", arch.0, arch.1), "--std=c++17".into()],
            name: Some(format!("{family}.cu")),
            ..Default::default()
        };
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => compile_error(family, log.to_string_lossy().into_owned()),
            other => compile_error(family, other.to_string()),
        })?;
        Ok(ptx.to_src().into_bytes())
    })?;
    String::from_utf8(code).map_err(|_| compile_error(family, "NVRTC's PTX is not text".into()))
}

/// The folder of cached modules (`<fdpp cache>/cuda`), if the cache folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    crate::model::hub::cache_dir().ok().map(|d| d.join("cuda"))
}

/// Every kernel of the loaded modules, by name.
pub struct Kernels {
    _modules: Vec<Arc<CudaModule>>,
    functions: HashMap<String, CudaFunction>,
    /// Launch with programmatic dependent launch (compute capability 9.0 on; FDPP_CUDA_PDL=0
    /// turns it off): see `pdl_begin` in common.cuh.
    pub pdl: bool,
}

impl Kernels {
    /// Every family compiled for `arch` (or taken from the cache) and loaded into `ctx`, with
    /// the tensor-core kernels where `tensor_cores` (f16 weights only).
    pub fn load(ctx: &Arc<CudaContext>, f16: bool, tensor_cores: bool, arch: (i32, i32), driver: i32) -> Result<Kernels> {
        let dir = cache_dir();
        let mut modules = vec![];
        let mut functions = HashMap::new();
        for family in FAMILIES {
            let text = ptx(family.name, &source(family, f16, f16, tensor_cores), arch, driver, dir.as_deref())?;
            let loading =
                |what: String, e: cudarc::driver::DriverError| Error::Backend { backend: "cuda".into(), op: what, reason: e.to_string() };
            let module = ctx.load_module(Ptx::from_src(text)).map_err(|e| loading(format!("loading the {} kernels", family.name), e))?;
            for name in exports(family.name, tensor_cores) {
                let f =
                    module.load_function(&name).map_err(|e| loading(format!("loading kernel {name} of the {} kernels", family.name), e))?;
                functions.insert(name, f);
            }
            modules.push(module);
        }
        let pdl = arch.0 >= 9 && std::env::var("FDPP_CUDA_PDL").map_or(true, |v| v != "0");
        Ok(Kernels { _modules: modules, functions, pdl })
    }

    pub fn function(&self, name: &str) -> sys::CUfunction {
        self.functions[name].cu_function()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::caps::cuda;

    /// NVRTC needs no GPU: wherever libnvrtc loads, every family must compile for every
    /// storage type (on an sm_80 and an sm_90 target), f16 also without the tensor-core
    /// kernels (the set HIP builds).
    #[test]
    fn every_family_compiles() {
        // SAFETY: only opens and drops the shared library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            crate::testing::skip(crate::testing::Requirement::Cuda, "NVRTC (libnvrtc.so) was not found");
            return;
        }
        for f in FAMILIES {
            for (f16, tensor_cores) in [(true, true), (true, false), (false, false)] {
                for arch in [(8, 0), (9, 0)] {
                    let text = ptx(f.name, &source(f, f16, f16, tensor_cores), arch, 0, None).unwrap_or_else(|e| panic!("{e}"));
                    for name in exports(f.name, tensor_cores) {
                        assert!(text.contains(&format!(".entry {name}(")), "{}: no kernel {name} in the PTX", f.name);
                    }
                    if !tensor_cores {
                        assert!(!text.contains("mma.sync"), "{}: a tensor-core kernel in the SIMT build", f.name);
                    }
                }
            }
        }
    }

    /// Per kernel of `src`, the registers a thread uses and the bytes it spills, as ptxas
    /// reports them when NVRTC compiles for the real sm_90 (`-Xptxas=-v`).
    fn ptxas_report(src: &str) -> HashMap<String, (u32, u32)> {
        use cudarc::nvrtc::result;
        let src = std::ffi::CString::new(src).expect("no NUL in a kernel source");
        let prog = result::create_program(&src, None).expect("an NVRTC program");
        let opts = ["--gpu-architecture=sm_90", "--std=c++17", "-Xptxas=-v"];
        // SAFETY: `prog` was created above and is destroyed only at the end of this block;
        // `src`, which it refers to, outlives it.
        let (compiled, log) = unsafe {
            let compiled = result::compile_program(prog, &opts);
            let log = result::get_program_log(prog).expect("NVRTC's log");
            result::destroy_program(prog).expect("destroying an NVRTC program");
            (compiled, log)
        };
        let log = String::from_utf8_lossy(&log.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect::<Vec<_>>()).into_owned();
        compiled.unwrap_or_else(|e| panic!("{e}: {log}"));
        let number_before = |line: &str, what: &str| -> Option<u32> {
            let head = &line[..line.find(what)?];
            head.rsplit(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty())?.parse().ok()
        };
        let mut out = HashMap::new();
        let mut current = None;
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                current = rest.split('\'').next().map(str::to_string);
            } else if let Some(name) = &current {
                let entry = out.entry(name.clone()).or_insert((0, 0));
                if let Some(spilled) = number_before(line, "bytes spill stores") {
                    entry.1 = spilled;
                }
                if let Some(regs) = number_before(line, "registers") {
                    entry.0 = regs;
                }
            }
        }
        out
    }

    /// The decode kernels' block sizes rest on what ptxas makes of them: none spills, and
    /// the narrow one-chunk attention block fits twice on an SM (65536 registers, allocated
    /// per warp in units of 256), which is why the lowering runs it on steps of more
    /// (token, head) pairs than SMs. NVRTC needs no GPU.
    #[test]
    fn decode_kernels_neither_spill_nor_outgrow_their_blocks_per_sm() {
        // SAFETY: only opens and drops the shared library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            crate::testing::skip(crate::testing::Requirement::Cuda, "NVRTC (libnvrtc.so) was not found");
            return;
        }
        let mut report = HashMap::new();
        for f in FAMILIES.iter().filter(|f| f.name != "elementwise") {
            report.extend(ptxas_report(&source(f, true, true, true)));
        }
        let decode = |name: &str| {
            name.starts_with("attn_split")
                || name.starts_with("attn_single")
                || (name.starts_with("gemv") && name.contains("_r1"))
                || name.starts_with("flat_gemm")
        };
        let checked: Vec<_> = report.iter().filter(|(name, _)| decode(name)).collect();
        assert!(checked.len() > 20, "ptxas reported too few decode kernels: {report:?}");
        for (name, &(regs, spilled)) in checked {
            assert!(regs > 0, "{name}: no register count in ptxas' report");
            assert_eq!(spilled, 0, "{name} spills {spilled} bytes ({regs} registers)");
        }
        let (regs, _) = report["attn_single_narrow"];
        let per_warp = (regs as usize * 32).next_multiple_of(256);
        assert!(2 * cuda::SINGLE_NARROW_WARPS * per_warp <= 65536, "attn_single_narrow: {regs} registers, not two blocks per SM");
    }
}
