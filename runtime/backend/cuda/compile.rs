//! Kernel sources to loaded modules: each family (vendor_kernels/cuda/*.cu) gets the
//! constants header and common.cuh, is compiled by NVRTC to PTX for the device's own
//! architecture, and is cached on disk. A cache entry is keyed by the SHA-256 of the full
//! source, the architecture, the driver version and fdpp's version, and holds the SHA-256
//! of its own PTX: an entry that does not match it (a torn write, a corrupt disk) is
//! compiled again and rewritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use sha2::{Digest, Sha256};

use super::kernels::Args;
use crate::cache::{Entry, hex, read_checked, write_checked};
use crate::error::{Error, Result};
use crate::lower::caps::cuda;

const COMMON: &str = include_str!("../../../vendor_kernels/cuda/common.cuh");

/// One kernel family: its file and the kernels it exports.
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
}

pub const FAMILIES: &[Family] = &[
    Family { name: "elementwise", source: include_str!("../../../vendor_kernels/cuda/elementwise.cu") },
    Family { name: "linear", source: include_str!("../../../vendor_kernels/cuda/linear.cu") },
    Family { name: "attention", source: include_str!("../../../vendor_kernels/cuda/attention.cu") },
];

/// The full source of one family: the shared constants, the size of the argument struct as
/// Rust lays it out (common.cuh checks its own against it), common.cuh, the family.
pub fn source(family: &Family, f16_weights: bool, f16_kv: bool) -> String {
    let abi = format!("#define ARGS_BYTES {}\n", std::mem::size_of::<Args>());
    format!("{}{abi}\n{COMMON}\n{}", cuda::header(f16_weights, f16_kv), family.source)
}

fn compile_error(family: &str, reason: String) -> Error {
    Error::Backend { backend: "cuda".into(), op: format!("compiling the {family} kernels"), reason }
}

/// SHA-256 of every family's full source for this storage type (the KV cache follows the
/// weights).
pub fn sources_hash(f16: bool) -> String {
    crate::cache::sha256_hex(&FAMILIES.iter().map(|f| source(f, f16, f16)).collect::<String>())
}

/// PTX of `src` for compute capability `arch` (e.g. (9, 0)), from the cache in `dir` when it
/// holds a valid entry, else compiled by NVRTC (and stored there when `dir` is given).
pub fn ptx(family: &str, src: &str, arch: (i32, i32), driver: i32, dir: Option<&Path>) -> Result<String> {
    let key = hex(&Sha256::new()
        .chain_update(src)
        .chain_update(format!("|compute_{}{}|driver {driver}|fdpp {}", arch.0, arch.1, env!("CARGO_PKG_VERSION")))
        .finalize());
    let path = dir.map(|d| d.join(format!("{family}-{key}.ptx")));
    if let Some(Entry::Valid(cached)) = path.as_deref().map(read_checked) {
        return Ok(cached);
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{}{}", arch.0, arch.1), "--std=c++17".into()],
        name: Some(format!("{family}.cu")),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => compile_error(family, log.to_string_lossy().into_owned()),
        other => compile_error(family, other.to_string()),
    })?;
    let text = ptx.to_src();
    if let Some(p) = &path {
        // The cache is an optimisation: a folder that cannot be written only costs the next
        // start its compilation.
        let _ = write_checked(p, &text);
    }
    Ok(text)
}

/// The folder of cached modules (`<fdpp cache>/cuda`), if the cache folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    crate::model::hub::cache_dir().ok().map(|d| d.join("cuda"))
}

/// Every family compiled (or taken from the cache) and loaded into `ctx`.
pub fn load_all(ctx: &Arc<CudaContext>, f16_weights: bool, f16_kv: bool, arch: (i32, i32), driver: i32) -> Result<Vec<Arc<CudaModule>>> {
    let dir = cache_dir();
    FAMILIES
        .iter()
        .map(|f| {
            let src = source(f, f16_weights, f16_kv);
            let text = ptx(f.name, &src, arch, driver, dir.as_deref())?;
            ctx.load_module(Ptx::from_src(text)).map_err(|e| Error::Backend {
                backend: "cuda".into(),
                op: format!("loading the {} kernels", f.name),
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: wherever libnvrtc loads, every family must compile for every
    /// storage type (on an sm_80 and an sm_90 target).
    #[test]
    fn every_family_compiles() {
        // SAFETY: only opens and drops the shared library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            crate::testing::skip(crate::testing::Requirement::Cuda, "NVRTC (libnvrtc.so) was not found");
            return;
        }
        for f in FAMILIES {
            for (f16_weights, f16_kv) in [(true, true), (false, false)] {
                for arch in [(8, 0), (9, 0)] {
                    let text = ptx(f.name, &source(f, f16_weights, f16_kv), arch, 0, None).unwrap_or_else(|e| panic!("{e}"));
                    for name in super::super::kernels::exports(f.name, f16_weights) {
                        assert!(text.contains(&format!(".entry {name}(")), "{}: no kernel {name} in the PTX", f.name);
                    }
                }
            }
        }
    }

    /// ROCm's hipcc needs no GPU either: where it is installed, every family compiles for an
    /// AMD CDNA (gfx90a) and RDNA3 (gfx1100) GPU for every storage type, the tensor-core
    /// kernels left out (`FDPP_TENSOR_CORES` 0) and every other kernel present. Debian's ROCm
    /// 5.2 has no device library for gfx1100, so that target is compiled to assembly without
    /// one (nothing is linked).
    #[test]
    fn every_family_compiles_with_hipcc() {
        use crate::testing::{Requirement, skip};
        use std::process::Command;
        if !Command::new("hipcc").arg("--version").output().is_ok_and(|o| o.status.success()) {
            skip(Requirement::Hipcc, "ROCm's hipcc was not found");
            return;
        }
        let dir = std::env::temp_dir().join(format!("fdpp-hipcc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in FAMILIES {
            for f16 in [true, false] {
                let src = dir.join(format!("{}-{f16}.hip", f.name));
                std::fs::write(&src, source(f, f16, f16)).unwrap();
                for (arch, libs) in [("gfx90a", None), ("gfx1100", Some("-nogpulib"))] {
                    let asm = dir.join(format!("{}-{f16}-{arch}.s", f.name));
                    let out = Command::new("hipcc")
                        .args(["-x", "hip", "-include", "hip/hip_runtime.h", "--cuda-device-only", "-S", "-O3"])
                        .arg(format!("--offload-arch={arch}"))
                        .args(libs)
                        .arg("-o")
                        .arg(&asm)
                        .arg(&src)
                        .output()
                        .unwrap();
                    let what = format!("{} (f16 {f16}) for {arch}", f.name);
                    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
                    let text = std::fs::read_to_string(&asm).unwrap();
                    // The SIMT kernels: those of an f32 build (f16 builds add the C-through-cuBLAS helpers).
                    for name in super::super::kernels::exports(f.name, false) {
                        assert!(text.contains(&format!("\n{name}:")), "{what}: no kernel {name}");
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_family_gets_the_shared_constants() {
        for f in FAMILIES {
            let src = source(f, true, true);
            assert!(src.starts_with("#define FDPP_W_F16 1\n#define FDPP_KV_F16 1\n"), "{}", f.name);
            assert!(src.contains("struct Args"), "{}", f.name);
        }
    }
}
