//! Whole models on the CUDA backend against the CPU oracle: the tiny random Llama (logits
//! of prefill and decode, greedy tokens picked on the device and fed back, fused and
//! unfused lowerings) and SmolLM2-135M (the reference prompts' greedy tokens, f16 and f32
//! weights). Without an NVIDIA driver they skip with the reason printed, and fail under
//! FDPP_REQUIRE_CUDA=1 (the lent H200 runs them).
#![cfg(feature = "cuda")]

mod common;

use std::process::Command;

use fdpp_runtime::backend::{BackendOptions, CudaOptions, WeightPrecision};
use fdpp_runtime::dataflow::{DataflowTable, Inflections};
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::lower::kernel::Variant;
use fdpp_runtime::lower::{LoweringOptions, TableChoice};
use fdpp_runtime::model::Model;
use fdpp_runtime::sampling::argmax;
use fdpp_runtime::testing::{Requirement, skip};

fn engine(path: &std::path::Path, backend: BackendOptions, fuse: bool) -> Option<Engine> {
    let opts = EngineOptions { backend, lowering: LoweringOptions { fuse, ..Default::default() }, ..Default::default() };
    Engine::load(Model::load(path).unwrap(), &opts, &mut |_, _| {}).map_err(fdpp_runtime::testing::skip_unavailable).ok()
}

fn cuda(precision: WeightPrecision) -> BackendOptions {
    BackendOptions::Cuda(CudaOptions { ordinal: 0, precision, ..Default::default() })
}

#[test]
fn tiny_llama_on_cuda_matches_cpu() {
    let dir = common::temp_dir("cuda-tiny");
    let path = dir.join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 256, ..Default::default() }, 5);
    for (precision, tol) in [(WeightPrecision::F32, 1e-4), (WeightPrecision::F16, 2e-2)] {
        for fuse in [true, false] {
            let what = format!("{precision:?} weights, fused {fuse}");
            let mut cpu = engine(&path, BackendOptions::Cpu, true).expect("the CPU backend is always there");
            let Some(mut gpu) = engine(&path, cuda(precision), fuse) else { return };
            // Prefills that take each dataflow (A up to 8 rows, B, C), then decode steps
            // whose split-KV attention crosses chunk boundaries.
            for (len, start) in [(3usize, 0usize), (20, 3), (70, 23)] {
                let prompt: Vec<u32> = (0..len).map(|i| ((i + start) * 31 % 250) as u32).collect();
                let (a, b) = (gpu.forward(&prompt, start).unwrap(), cpu.forward(&prompt, start).unwrap());
                let err = common::rel_err(&a, &b, "prefill logits");
                assert!(err < tol, "{what}: prefill of {len} at {start}: relative error {err}");
            }
            let first = argmax(&cpu.forward(&[7], 93).unwrap());
            gpu.forward(&[7], 93).unwrap();
            let mut next = first;
            for pos in 94..94 + 40 {
                let (a, b) = (gpu.forward(&[next], pos).unwrap(), cpu.forward(&[next], pos).unwrap());
                let err = common::rel_err(&a, &b, "decode logits");
                assert!(err < tol, "{what}: decode at {pos}: relative error {err}");
                next = argmax(&b);
            }
            // Greedy decoding: the device picks and feeds its own ids back (pipelined steps).
            let greedy = SamplingParams::default();
            let (g, c) = (gpu.decode_ids(first, 94, 12, &greedy).unwrap(), cpu.decode_ids(first, 94, 12, &greedy).unwrap());
            assert_eq!(g, c, "{what}: greedy tokens");
            // Sampling reads the logits back and draws on the host: the same tokens.
            let sampled = SamplingParams { temperature: 4.0, top_k: 40, top_p: 0.95, seed: 7 };
            let (g, c) = (gpu.decode_ids(first, 94, 8, &sampled).unwrap(), cpu.decode_ids(first, 94, 8, &sampled).unwrap());
            if precision == WeightPrecision::F32 {
                assert_eq!(g, c, "{what}: sampled tokens");
            }
        }
    }
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
    let Some(model) = common::smollm2() else { return };
    for weights in ["f32", "f16"] {
        for chat in [false, true] {
            let prompt = if chat { "What is the boiling point of water at sea level?" } else { "The capital of France is" };
            let run = |backend: &str| common::generate_json(env!("CARGO_BIN_EXE_fdpp"), &model, backend, (weights, "auto"), chat, prompt);
            let (gpu, cpu) = (run("cuda"), run("cpu"));
            assert_eq!(gpu["prompt_ids"], cpu["prompt_ids"]);
            assert_eq!(gpu["ids"], cpu["ids"], "{weights} weights: greedy tokens differ for {prompt:?}");
            assert_eq!(common::top5_ids(&gpu), common::top5_ids(&cpu), "{weights} weights: first top-5 for {prompt:?}");
        }
    }
}

#[test]
fn cuda_without_a_driver_names_the_missing_library() {
    let Some(why) = fdpp_runtime::backend::cuda::missing_library() else {
        eprintln!("skipped: this machine has the CUDA driver and NVRTC; the no-driver path is tested where they are missing");
        return;
    };
    let dir = common::temp_dir("cuda-missing");
    let model = dir.join("tiny.gguf");
    common::write_tiny(&model, &common::Spec::default(), 3);
    let generate = |backend: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fdpp"));
        cmd.args(["generate", "--backend", backend, "--temperature", "0", "--max-tokens", "2", "--model"]).arg(&model).arg("hi");
        cmd.output().unwrap()
    };
    let out = generate("cuda");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&why) && err.contains(".so"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // `auto` falls back to what exists.
    assert!(!fdpp_runtime::backend::has_cuda_device());
    let out = generate("auto");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("backend cuda"));
}
