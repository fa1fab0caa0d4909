//! Whole models on the wgpu backend (lavapipe in CI) against the CPU oracle: the tiny
//! random Llama (logits, greedy and sampled tokens) and SmolLM2-135M (the reference
//! prompts' greedy tokens). Without an adapter or the cached model they skip with the
//! reason printed, and fail under FDPP_REQUIRE_GPU=1 / FDPP_REQUIRE_MODEL=1.
#![cfg(feature = "wgpu")]

mod common;

use fdpp_runtime::backend::{BackendOptions, KvPrecision, WeightPrecision, WgpuOptions};
use fdpp_runtime::check::tolerance::{Precision, Tolerance, ToleranceProfile};
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::model::Model;
use fdpp_runtime::sampling::argmax;
use fdpp_runtime::testing::{Requirement, skip};

fn engine(path: &std::path::Path, backend: BackendOptions) -> Option<Engine> {
    let opts = EngineOptions { backend, ..Default::default() };
    Engine::load(Model::load(path).unwrap(), &opts, &mut |_, _| {}).map_err(fdpp_runtime::testing::skip_unavailable).ok()
}

fn wgpu(precision: WeightPrecision, kv: KvPrecision) -> BackendOptions {
    BackendOptions::Wgpu(WgpuOptions { precision, kv, ..Default::default() })
}

/// f32 to 1e-5; with f16 weights, an f16 KV cache (where the adapter has SHADER_F16;
/// lavapipe has) or both, within the check's f16 logits tolerance (2e-2), and the same
/// greedy tokens: the tiny model's top logits are further apart than f16 moves them.
#[test]
fn tiny_llama_on_wgpu_matches_cpu() {
    let dir = common::temp_dir("wgpu-tiny");
    let path = dir.join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 128, ..Default::default() }, 5);
    let f16_tol = Tolerance::of(ToleranceProfile::Default, Precision::F16Kv, "logits").rel;
    let cases = [
        (WeightPrecision::F32, KvPrecision::F32, 1e-5),
        (WeightPrecision::Auto, KvPrecision::F32, f16_tol),
        (WeightPrecision::F32, KvPrecision::Auto, f16_tol),
        (WeightPrecision::Auto, KvPrecision::Auto, f16_tol),
    ];
    for (precision, kv, tol) in cases {
        let mut cpu = engine(&path, BackendOptions::Cpu).expect("the CPU backend is always there");
        let Some(mut gpu) = engine(&path, wgpu(precision, kv)) else { return };
        let caps = &gpu.driver().lowering().caps;
        let precision = format!("{precision:?} weights ({}), {kv:?} KV ({})", caps.weight_dtype, caps.kv_dtype);
        eprintln!("{precision}: {}", gpu.backend_description());
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
        if tol < f16_tol {
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
        let run = |backend: &str, weights: &str| {
            common::generate_json(env!("CARGO_BIN_EXE_fdpp"), &model, backend, (weights, "f32"), chat, prompt)
        };
        let cpu = run("cpu", "f32");
        // f32 weights, and the file's Q4_1 layers and Q8_0 embedding read as stored: the
        // kernels dequantize to the values the CPU widens them to, so only the order of the
        // sums differs.
        for weights in ["f32", "native"] {
            let gpu = run("wgpu", weights);
            assert_eq!(gpu["prompt_ids"], cpu["prompt_ids"]);
            assert_eq!(gpu["ids"], cpu["ids"], "--weights {weights}: greedy tokens differ for {prompt:?}");
            let logits = |v: &serde_json::Value| -> Vec<f32> {
                v["first_top5"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap() as f32).collect()
            };
            assert_eq!(common::top5_ids(&gpu), common::top5_ids(&cpu), "--weights {weights}");
            let err = common::rel_err(&logits(&gpu), &logits(&cpu), "top-5 logits");
            assert!(err <= 1e-4, "--weights {weights}: top-5 logits {:?} vs {:?}", logits(&gpu), logits(&cpu));
        }
    }
}

/// `generate --kv f16` on the tiny model: wgpu's greedy tokens are the CPU's and its backend
/// line says the KV cache is f16; on an adapter without SHADER_F16 the refusal names it. The
/// CPU, the f32 reference, refuses `--kv f16` and `--weights f16` by name; `--kv native` is refused.
#[test]
fn generate_with_an_f16_kv_cache_gives_the_cpus_greedy_tokens() {
    let path = common::temp_dir("wgpu-kv16").join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { context: 128, ..Default::default() }, 5);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fdpp"))
            .args(["generate", "--temperature", "0", "--max-tokens", "24", "--json", "--model", path.to_str().unwrap()])
            .args(args)
            .arg("The capital of France is")
            .output()
            .unwrap()
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let refused = run(&["--backend", "cpu", "--kv", "f16"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("cpu does not support an f16 KV cache"), "{}", stderr(&refused));
    let refused = run(&["--backend", "cpu", "--weights", "f16"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("cpu does not support f16 weights: it is the f32 reference"), "{}", stderr(&refused));
    // Native storage is the weights' file type: a KV cache has none.
    let refused = run(&["--backend", "wgpu", "--kv", "native"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--kv native: the KV cache has no file type"), "{}", stderr(&refused));
    let has_f16 = match fdpp_runtime::backend::open(&wgpu(WeightPrecision::Auto, KvPrecision::Auto)) {
        Ok(device) => device.caps().kv_dtype == fdpp_runtime::tensor::DType::F16,
        Err(e) => {
            fdpp_runtime::testing::skip_unavailable(e);
            return;
        }
    };
    let gpu = run(&["--backend", "wgpu", "--kv", "f16"]);
    if !has_f16 {
        assert_eq!(gpu.status.code(), Some(1), "{}", stderr(&gpu));
        assert!(stderr(&gpu).contains("has no SHADER_F16, which f16 KV caches need"), "{}", stderr(&gpu));
        return;
    }
    assert!(gpu.status.success(), "{}", stderr(&gpu));
    assert!(stderr(&gpu).contains("KV f16"), "{}", stderr(&gpu));
    let cpu = run(&["--backend", "cpu"]);
    assert!(cpu.status.success(), "{}", stderr(&cpu));
    let ids = |o: &std::process::Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["ids"].clone();
    assert_eq!(ids(&gpu).as_array().map(Vec::len), Some(24));
    assert_eq!(ids(&gpu), ids(&cpu), "greedy tokens with an f16 KV cache");
}
