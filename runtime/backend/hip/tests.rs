//! The HIP backend without an AMD GPU: the kernels compile for AMD targets (ahead of time
//! with hipcc, at run time with hiprtc, the backend's own path), and opening it where no GPU
//! or no ROCm is present gives an error naming what is missing. Whole models on an AMD GPU
//! against the CPU oracle are in tests/hip_model.rs.

use super::*;
use crate::backend::native::kernels::exports;
use crate::backend::native::sources::{FAMILIES, source};
use crate::testing::{Requirement, skip};

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
        skip(Requirement::Rocm, "ROCm's hipcc was not found");
        return;
    }
    let dir = std::env::temp_dir().join(format!("fdpp-hipcc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in FAMILIES {
        for f16 in [true, false] {
            let src = dir.join(format!("{}-{f16}.hip", f.name));
            std::fs::write(&src, source(f, f16, f16, false)).unwrap();
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
                // No tensor-core kernels on AMD (and no C-through-cuBLAS helpers).
                for name in exports(f.name, false) {
                    assert!(text.contains(&format!("\n{name}:")), "{what}: no kernel {name}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// hiprtc compiles every family for AMD targets at run time without a GPU, to code objects
/// holding every kernel the executor launches there. ROCm 5.2's hiprtc knows gfx90a (CDNA2,
/// 64-lane wavefronts) and gfx1030 (RDNA2, 32 lanes); its gfx1100 support needs a newer ROCm
/// (hipcc covers that target above).
#[test]
fn every_family_compiles_with_hiprtc() {
    let rtc = match sys::rtc() {
        Ok(rtc) => rtc,
        Err(why) => return skip(Requirement::Rocm, &why),
    };
    for arch in ["gfx90a", "gfx1030"] {
        for f16 in [true, false] {
            for f in FAMILIES {
                let what = format!("{} (f16 {f16}) for {arch}", f.name);
                let code = compile::code_object(rtc, f.name, &source(f, f16, f16, false), arch).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(code.starts_with(b"\x7fELF") || code.starts_with(b"__CLANG_OFFLOAD_BUNDLE__"), "{what}: not a code object");
                for name in exports(f.name, false) {
                    let symbol = format!("{name}\0");
                    assert!(code.windows(symbol.len()).any(|w| w == symbol.as_bytes()), "{what}: no kernel {name}");
                }
            }
        }
    }
}

/// A compile error comes back with hiprtc's log, naming the family.
#[test]
fn a_kernel_that_does_not_compile_reports_the_log() {
    let rtc = match sys::rtc() {
        Ok(rtc) => rtc,
        Err(why) => return skip(Requirement::Rocm, &why),
    };
    let err = compile::code_object(rtc, "broken", "extern \"C\" __global__ void k() { undeclared_thing(); }", "gfx90a").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("broken") && text.contains("undeclared_thing"), "{text}");
}

/// Without an AMD GPU (CI has ROCm's libraries from hipcc's packages but no GPU), or without
/// ROCm, opening the backend is a clear `BackendUnavailable`, not a panic; `auto` skips HIP.
#[test]
fn opening_without_an_amd_gpu_names_what_is_missing() {
    if usable_device() {
        eprintln!("skipped: this machine has an AMD GPU; the no-GPU path is tested where there is none");
        return;
    }
    let err = HipDevice::open(&HipOptions::default()).err().expect("no AMD GPU here");
    let crate::Error::BackendUnavailable { backend, reason } = &err else { panic!("{err}") };
    assert_eq!(backend, "hip");
    match missing_library() {
        Some(why) => assert_eq!(reason, &why),
        None => assert!(reason.contains("no usable AMD GPU") || reason.contains("lists no AMD GPU"), "{reason}"),
    }
    assert!(!crate::backend::has_hip_device());
    assert_ne!(crate::backend::auto_kind(), crate::backend::BackendKind::Hip);
}

/// An f32 KV cache beside f16 weights is refused before any library is touched.
#[test]
fn a_kv_cache_type_unlike_the_weights_is_refused() {
    use crate::backend::WeightPrecision;
    let opts = HipOptions { precision: WeightPrecision::F16, kv: WeightPrecision::F32, ..Default::default() };
    let err = HipDevice::open(&opts).err().expect("refused");
    assert!(matches!(err, crate::Error::NotSupported { .. }), "{err}");
}

/// Every launch the lowering makes for the HIP profile (decode and prefill, small and large
/// M, short and long contexts, f16 and f32) maps to kernels the HIP build has (no tensor-core
/// kernel), and the GEMV takes every M it holds.
#[test]
fn the_hip_lowering_asks_only_for_kernels_the_hip_build_has() {
    use crate::backend::BackendCaps;
    use crate::lower::kernel::Variant;
    use crate::lower::{Lowering, LoweringOptions};
    use crate::tensor::DType;
    use crate::trace::StepShape;
    let have: Vec<String> = FAMILIES.iter().flat_map(|f| exports(f.name, false)).collect();
    for dtype in [DType::F16, DType::F32] {
        let caps = BackendCaps::hip_builtin(dtype);
        let l = Lowering::new(crate::graph::llama::build(&crate::lower::tests::config()), caps, &LoweringOptions::default()).unwrap();
        for (m, out, sequences, max_keys) in
            [(1, 1, 1, 20), (1, 1, 1, 3000), (8, 8, 8, 700), (9, 9, 9, 100), (64, 1, 1, 64), (300, 1, 1, 900)]
        {
            let step = l.lower(&StepShape { m, out, sequences, max_keys });
            for launch in &step.launches {
                if let Variant::Gemv { .. } | Variant::FlatGemm { .. } | Variant::Gemm { .. } = launch.variant {
                    assert_eq!(matches!(launch.variant, Variant::Gemv { .. }), launch.rows <= 8, "{dtype} m {m}: {}", launch.variant);
                }
                let chunks = step.split_kv.map_or(0, |(c, _)| c.next_power_of_two());
                let grids = crate::backend::native::kernels::grids(launch, &l.templates[launch.template], m, false, chunks)
                    .unwrap_or_else(|e| panic!("{dtype} m {m}: {}: {e}", launch.variant));
                for g in grids {
                    assert!(have.contains(&g.kernel), "{dtype} m {m}: {} runs {}, which HIP does not build", launch.variant, g.kernel);
                }
            }
        }
    }
}
