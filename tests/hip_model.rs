//! Whole models on the HIP backend (AMD GPUs) against the CPU oracle: the tiny random Llama
//! (logits of prefill and decode, greedy tokens picked on the device and fed back, fused and
//! unfused lowerings) and SmolLM2-135M (the reference prompts' greedy tokens, f16 and f32
//! weights). Without an AMD GPU they skip with the reason printed, and fail under
//! FDPP_REQUIRE_HIP=1 (README: "AMD GPUs" gives the command for a machine that has one).
#![cfg(feature = "hip")]

mod common;

use fdpp_runtime::backend::{BackendOptions, HipOptions, WeightPrecision};
use fdpp_runtime::testing::{Requirement, skip};

fn hip(precision: WeightPrecision) -> BackendOptions {
    BackendOptions::Hip(HipOptions { ordinal: 0, precision, ..Default::default() })
}

#[test]
fn tiny_llama_on_hip_matches_cpu() {
    common::native::tiny_llama_matches_cpu("hip", hip);
}

#[test]
fn batched_greedy_decode_on_hip_matches_cpu() {
    common::native::batched_greedy_decode_matches_cpu("hip", hip(WeightPrecision::F32));
}

#[test]
fn smollm2_reference_prompts_on_hip_match_cpu() {
    if !fdpp_runtime::backend::has_hip_device() {
        skip(Requirement::Hip, "no AMD GPU the HIP backend runs on");
        return;
    }
    common::native::smollm2_matches_cpu(env!("CARGO_BIN_EXE_fdpp"), "hip");
}

/// CI's machines have ROCm's libraries (hipcc's packages) but no AMD GPU: `--backend hip`
/// says so and exits 1; elsewhere ROCm is missing and the message names its library.
#[test]
fn hip_without_an_amd_gpu_says_what_is_missing() {
    if fdpp_runtime::backend::has_hip_device() {
        eprintln!("skipped: this machine has an AMD GPU; the no-GPU path is tested where there is none");
        return;
    }
    let why = match fdpp_runtime::backend::hip::missing_library() {
        Some(why) => {
            assert!(why.contains("libamdhip64") || why.contains("libhiprtc"), "{why}");
            why
        }
        None => "AMD GPU".to_string(),
    };
    common::native::unavailable_backend_exits_cleanly(env!("CARGO_BIN_EXE_fdpp"), "hip", &why);
}
