//! Whole models on the wgpu backend (lavapipe in CI) against the CPU oracle: the tiny
//! random Llama (logits, greedy and sampled tokens) and SmolLM2-135M (the reference
//! prompts' greedy tokens). Without an adapter or the cached model they skip with the
//! reason printed, and fail under FDPP_REQUIRE_GPU=1 / FDPP_REQUIRE_MODEL=1.
#![cfg(feature = "wgpu")]

mod common;

use fdpp_runtime::backend::{BackendOptions, WeightPrecision, WgpuOptions};
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::model::Model;
use fdpp_runtime::sampling::argmax;
use fdpp_runtime::testing::{Requirement, skip};

fn engine(path: &std::path::Path, backend: BackendOptions) -> Option<Engine> {
    let opts = EngineOptions { backend, ..Default::default() };
    Engine::load(Model::load(path).unwrap(), &opts, &mut |_, _| {}).map_err(fdpp_runtime::testing::skip_unavailable).ok()
}

fn wgpu(precision: WeightPrecision) -> BackendOptions {
    BackendOptions::Wgpu(WgpuOptions { precision, ..Default::default() })
}

#[test]
fn tiny_llama_on_wgpu_matches_cpu() {
    let dir = common::temp_dir("wgpu-tiny");
    let path = dir.join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 128, ..Default::default() }, 5);
    for (precision, tol) in [(WeightPrecision::F32, 1e-5), (WeightPrecision::Auto, 2e-2)] {
        let mut cpu = engine(&path, BackendOptions::Cpu).expect("the CPU backend is always there");
        let Some(mut gpu) = engine(&path, wgpu(precision)) else { return };
        // A prefill long enough for the tiled GEMM, then greedy decode steps.
        let prompt: Vec<u32> = (0..70).map(|i| (i * 31 % 250) as u32).collect();
        let (a, b) = (gpu.forward(&prompt, 0).unwrap(), cpu.forward(&prompt, 0).unwrap());
        let err = common::rel_err(&a, &b, "prefill logits");
        assert!(err < tol, "{precision:?} prefill: relative error {err}");
        let first = argmax(&b);
        let mut next = first;
        for pos in prompt.len()..prompt.len() + 5 {
            let (a, b) = (gpu.forward(&[next], pos).unwrap(), cpu.forward(&[next], pos).unwrap());
            let err = common::rel_err(&a, &b, "decode logits");
            assert!(err < tol, "{precision:?} decode at {pos}: relative error {err}");
            next = argmax(&b);
        }
        // Greedy decoding: the device picks and feeds its own ids back (pipelined steps).
        let greedy = SamplingParams::default();
        let (g, c) = (gpu.decode_ids(first, prompt.len(), 8, &greedy).unwrap(), cpu.decode_ids(first, prompt.len(), 8, &greedy).unwrap());
        assert_eq!(g, c, "{precision:?}: greedy tokens after the prompt");
        // Top-k / top-p sampling on the device draws the host sampler's numbers, in order.
        if precision == WeightPrecision::F32 {
            let sampled = SamplingParams { temperature: 4.0, top_k: 40, top_p: 0.95, seed: 7 };
            let (g, c) =
                (gpu.decode_ids(first, prompt.len(), 8, &sampled).unwrap(), cpu.decode_ids(first, prompt.len(), 8, &sampled).unwrap());
            assert_eq!(g, c, "sampled tokens after the prompt");
            assert_ne!(c, cpu.decode_ids(first, prompt.len(), 8, &greedy).unwrap(), "sampling should leave the greedy path");
        }
    }
}

#[test]
fn smollm2_reference_prompts_on_wgpu_match_cpu() {
    if fdpp_runtime::backend::wgpu::device::adapters().is_empty() {
        skip(Requirement::Gpu, "no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
        return;
    }
    let Some(model) = common::smollm2() else { return };
    for chat in [false, true] {
        let prompt = if chat { "What is the boiling point of water at sea level?" } else { "The capital of France is" };
        let run = |backend: &str| common::generate_json(env!("CARGO_BIN_EXE_fdpp"), &model, backend, "f32", chat, prompt);
        let (gpu, cpu) = (run("wgpu"), run("cpu"));
        assert_eq!(gpu["prompt_ids"], cpu["prompt_ids"]);
        assert_eq!(gpu["ids"], cpu["ids"], "greedy tokens differ for {prompt:?}");
        let logits = |v: &serde_json::Value| -> Vec<f32> {
            v["first_top5"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap() as f32).collect()
        };
        assert_eq!(common::top5_ids(&gpu), common::top5_ids(&cpu));
        let err = common::rel_err(&logits(&gpu), &logits(&cpu), "top-5 logits");
        assert!(err <= 1e-4, "top-5 logits {:?} vs {:?}", logits(&gpu), logits(&cpu));
    }
}
