//! Whole models on the CUDA backend against the CPU oracle: the tiny random Llama (logits
//! of prefill and decode, greedy tokens picked on the device and fed back, fused and
//! unfused lowerings) and SmolLM2-135M (the reference prompts' greedy tokens, f16 and f32
//! weights). Without an NVIDIA driver they skip with the reason printed, and fail under
//! FDPP_REQUIRE_CUDA=1 (the lent H200 runs them).
#![cfg(feature = "cuda")]

mod common;

use common::native::engine;
use fdpp_runtime::backend::{BackendOptions, CudaOptions, WeightPrecision};
use fdpp_runtime::dataflow::{DataflowTable, Inflections};
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::lower::kernel::Variant;
use fdpp_runtime::lower::{LoweringOptions, TableChoice};
use fdpp_runtime::model::Model;
use fdpp_runtime::sampling::argmax;
use fdpp_runtime::testing::{Requirement, skip};

fn cuda(precision: WeightPrecision) -> BackendOptions {
    BackendOptions::Cuda(CudaOptions { ordinal: 0, precision, ..Default::default() })
}

#[test]
fn tiny_llama_on_cuda_matches_cpu() {
    common::native::tiny_llama_matches_cpu("cuda", cuda);
}

#[test]
fn batched_greedy_decode_on_cuda_matches_cpu() {
    common::native::batched_greedy_decode_matches_cpu("cuda", cuda(WeightPrecision::F32));
}

/// Decode steps whose every linear layer runs C (cuBLAS where it loads) are captured as
/// CUDA graphs with the cuBLAS calls inside, and replayed: the same logits and greedy ids as
/// the CPU.
#[test]
fn decode_steps_with_cublas_products_replay_from_their_graph() {
    let dir = common::temp_dir("cuda-cublas-graph");
    let path = dir.join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 256, ..Default::default() }, 6);
    let table = DataflowTable { fallback: Inflections { m1: 1, m2: 1 }, ..DataflowTable::cuda_default() };
    let lowering = LoweringOptions { table: TableChoice::Given(table), ..Default::default() };
    let opts = EngineOptions { backend: cuda(WeightPrecision::F16), lowering, ..Default::default() };
    let Some(mut gpu) =
        Engine::load(Model::load(&path).unwrap(), &opts, &mut |_, _| {}).map_err(fdpp_runtime::testing::skip_unavailable).ok()
    else {
        return;
    };
    if !fdpp_runtime::backend::cuda::blas::present() {
        eprintln!("note: libcublas is not here: C runs the own tensor-core GEMM in the graphs");
    }
    let mut cpu = engine(&path, BackendOptions::Cpu, true).expect("the CPU backend is always there");
    let prompt: Vec<u32> = (0..9).map(|i| (i * 17 % 250) as u32).collect();
    let (a, b) = (gpu.forward(&prompt, 0).unwrap(), cpu.forward(&prompt, 0).unwrap());
    assert!(common::rel_err(&a, &b, "prefill logits") < 2e-2);
    let mut next = argmax(&b);
    // The first decode step captures its graph, the others replay it.
    for pos in 9..9 + 6 {
        let (a, b) = (gpu.forward(&[next], pos).unwrap(), cpu.forward(&[next], pos).unwrap());
        let err = common::rel_err(&a, &b, "decode logits");
        assert!(err < 2e-2, "decode at {pos}: relative error {err}");
        next = argmax(&b);
    }
    let greedy = SamplingParams::default();
    assert_eq!(gpu.decode_ids(next, 15, 10, &greedy).unwrap(), cpu.decode_ids(next, 15, 10, &greedy).unwrap());
    let step = gpu.driver().lowering().lower(&fdpp_runtime::trace::StepShape { m: 1, out: 1, sequences: 1, max_keys: 16 });
    assert!(step.launches.iter().any(|l| matches!(l.variant, Variant::Gemm { .. })), "the table gives C at one row");
}

#[test]
fn smollm2_reference_prompts_on_cuda_match_cpu() {
    if let Some(why) = fdpp_runtime::backend::cuda::missing_library() {
        skip(Requirement::Cuda, &why);
        return;
    }
    common::native::smollm2_matches_cpu(env!("CARGO_BIN_EXE_fdpp"), "cuda");
}

#[test]
fn cuda_without_a_driver_names_the_missing_library() {
    let Some(why) = fdpp_runtime::backend::cuda::missing_library() else {
        eprintln!("skipped: this machine has the CUDA driver and NVRTC; the no-driver path is tested where they are missing");
        return;
    };
    assert!(why.contains(".so"), "{why}");
    assert!(!fdpp_runtime::backend::has_cuda_device());
    common::native::unavailable_backend_exits_cleanly(env!("CARGO_BIN_EXE_fdpp"), "cuda", &why);
}
