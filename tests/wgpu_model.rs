//! Whole models on the wgpu backend (lavapipe in CI) against the CPU oracle: the tiny
//! random Llama (logits) and SmolLM2-135M (the reference prompts' greedy tokens).
//! Skipped, with the reason printed, when no adapter or no cached model is available.

mod common;

use std::process::Command;

use fdpp_runtime::backend::BackendKind;
use fdpp_runtime::backend::wgpu::{WeightPrecision, device};
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::model::Model;

fn adapter_present() -> bool {
    let ok = !device::adapters().is_empty();
    if !ok {
        eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    ok
}

fn engine(path: &std::path::Path, backend: BackendKind, precision: WeightPrecision) -> Engine {
    let opts = EngineOptions { backend, precision, ..Default::default() };
    Engine::load(Model::load(path).unwrap(), &opts, &mut |_, _| {}).unwrap()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn tiny_llama_on_wgpu_matches_cpu() {
    if !adapter_present() {
        return;
    }
    let dir = common::temp_dir("wgpu-tiny");
    let path = dir.join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 128, ..Default::default() }, 5);
    for (precision, tol) in [(WeightPrecision::F32, 1e-5), (WeightPrecision::Auto, 2e-2)] {
        let mut cpu = engine(&path, BackendKind::Cpu, WeightPrecision::F32);
        let mut gpu = engine(&path, BackendKind::Wgpu, precision);
        // A prefill long enough for the tiled GEMM, then greedy decode steps.
        let prompt: Vec<u32> = (0..70).map(|i| (i * 31 % 250) as u32).collect();
        let (a, b) = (gpu.forward(&prompt, 0).unwrap(), cpu.forward(&prompt, 0).unwrap());
        let err = max_rel(&a, &b);
        assert!(err < tol, "{precision:?} prefill: relative error {err}");
        let first = fdpp_runtime::engine::sampler::argmax(&b);
        let mut next = first;
        for pos in prompt.len()..prompt.len() + 5 {
            let (a, b) = (gpu.forward(&[next], pos).unwrap(), cpu.forward(&[next], pos).unwrap());
            let err = max_rel(&a, &b);
            assert!(err < tol, "{precision:?} decode at {pos}: relative error {err}");
            next = fdpp_runtime::engine::sampler::argmax(&b);
        }
        // Greedy decoding: the device samples and feeds its own ids back (pipelined steps).
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
    if !adapter_present() {
        return;
    }
    let Some(model) = common::cached_smollm2() else {
        eprintln!("skipped: SmolLM2-135M-Instruct is not in the cache; run `cargo run --release -- fetch`");
        return;
    };
    for chat in [false, true] {
        let prompt = if chat { "What is the boiling point of water at sea level?" } else { "The capital of France is" };
        let run = |backend: &str| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_fdpp"));
            cmd.args([
                "generate",
                "--backend",
                backend,
                "--weights",
                "f32",
                "--temperature",
                "0",
                "--max-tokens",
                "24",
                "--json",
                "--model",
            ]);
            cmd.arg(&model);
            if chat {
                cmd.arg("--chat");
            }
            let out = cmd.arg(prompt).output().unwrap();
            assert!(out.status.success(), "{backend}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        let (gpu, cpu) = (run("wgpu"), run("cpu"));
        assert_eq!(gpu["prompt_ids"], cpu["prompt_ids"]);
        assert_eq!(gpu["ids"], cpu["ids"], "greedy tokens differ for {prompt:?}");
        for (g, c) in gpu["first_top5"].as_array().unwrap().iter().zip(cpu["first_top5"].as_array().unwrap()) {
            assert_eq!(g[0], c[0]);
            let (g, c) = (g[1].as_f64().unwrap(), c[1].as_f64().unwrap());
            assert!((g - c).abs() <= 1e-5 * c.abs().max(1.0) * 10.0, "top-5 logit {g} vs {c}");
        }
    }
}
