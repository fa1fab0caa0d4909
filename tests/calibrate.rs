//! `fdpp calibrate` on SmolLM2-135M through the real binary: calibrates on the CPU (a few
//! short prompts, one held out) into a cache folder of the test's own, then checks that
//! `fdpp generate` finds the calibration and that the reference prompts' greedy tokens are
//! unchanged with it: on the CPU, and on wgpu (where split-KV runs with the calibrated phi)
//! when an adapter is present. Skipped without the cached model (a failure under
//! FDPP_REQUIRE_MODEL=1); the wgpu part is skipped without an adapter (FDPP_REQUIRE_GPU=1).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use fdpp_runtime::backend::BackendOptions;
use fdpp_runtime::testing::{Requirement, skip};
use serde_json::Value;

const PROMPTS: &str = "\
The quick brown fox jumps over the lazy dog while the farmer watches from the gate.
def add(a, b): return a + b  # a small function
Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.

Q: What is 12 times 12? A: 144. Q: What is 7 times 8? A:
";

/// The two reference prompts (tests/reference_smollm2.rs): chat?, text, greedy ids.
const RAW: (bool, &str, &[u64]) = (
    false,
    "The capital of France is",
    &[7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33, 40, 29, 32, 33, 29, 34, 34, 216, 33, 34, 42, 33],
);
const CHAT: (bool, &str, &[u64]) = (
    true,
    "What is the boiling point of water at sea level?",
    &[504, 16891, 1225, 282, 913, 418, 3426, 1106, 314, 4723, 216, 33, 32, 32, 5027, 20590, 30, 669, 314, 253, 4594, 1225, 28, 284],
);

fn fdpp(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdpp")).env("FDPP_CACHE", cache).args(args).output().expect("run fdpp")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Greedy `max_tokens` of a reference prompt; the ids, stderr and the trace.
fn generate(
    cache: &Path,
    model: &str,
    backend: &str,
    (chat, prompt, _): (bool, &str, &[u64]),
    max_tokens: usize,
) -> (Vec<u64>, String, Value) {
    let trace = cache.join(format!("trace-{backend}-{chat}.json"));
    let max = max_tokens.to_string();
    let mut args = vec!["generate", "--backend", backend, "--weights", "f32", "--temperature", "0", "--max-tokens", &max, "--json"];
    args.extend(["--trace", trace.to_str().unwrap(), "--model", model]);
    if chat {
        args.push("--chat");
    }
    args.push(prompt);
    let out = fdpp(cache, &args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{backend}: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    (ids, stderr, serde_json::from_str(&std::fs::read_to_string(trace).unwrap()).unwrap())
}

/// The reasons of every decode attention node of a trace.
fn decode_attention_reasons(trace: &Value) -> Vec<Value> {
    let steps = trace["steps"].as_array().unwrap();
    let decode = steps.iter().find(|s| s["phase"] == "Decode").expect("a decode step");
    decode["nodes"].as_array().unwrap().iter().filter(|n| n["op"] == "attention").map(|n| n["reason"].clone()).collect()
}

#[test]
fn calibrating_smollm2_keeps_the_reference_tokens_and_reports_the_held_fallback_rate() {
    let Some(model) = common::smollm2() else { return };
    let model = model.to_str().unwrap();
    let cache = common::temp_dir("calibrate");
    let prompts = cache.join("prompts.txt");
    std::fs::write(&prompts, PROMPTS).unwrap();
    let json = cache.join("calibration.json");
    let args = ["calibrate", "--backend", "cpu", "--model", model, "--prompts", prompts.to_str().unwrap(), "--held", "1"];
    let out = fdpp(&cache, &[&args[..], &["--json", json.to_str().unwrap()]].concat());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("calibrated on 3 prompts") && stdout.contains("held fallback rate:"), "{stdout}");
    assert!(stdout.contains("calibration stored in"), "{stdout}");
    // The table: one row per layer.
    assert_eq!(stdout.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).count(), 30, "{stdout}");

    let cal: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((cal["prompts"].as_u64(), cal["held_prompts"].as_u64()), (Some(3), Some(1)));
    let layers = cal["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    let held = &cal["held_fallback"];
    let (rows, flagged) = (held["rows"].as_u64().unwrap(), held["flagged"].as_u64().unwrap());
    assert!(rows > 0 && flagged <= rows, "{held}");
    let rate = flagged as f64 / rows as f64;
    assert!((0.0..=1.0).contains(&rate));
    let stored = std::fs::read_dir(cache.join("calibration")).unwrap().count();
    assert_eq!(stored, 1);

    // The CPU has no split-KV kernel, but the engine still finds the calibration (no note)
    // and the greedy tokens are the reference's.
    for reference in [RAW, CHAT] {
        let (ids, stderr, _) = generate(&cache, model, "cpu", reference, 24);
        assert_eq!(ids, reference.2, "cpu, calibrated: {}", reference.1);
        assert!(!stderr.contains("calibration"), "{stderr}");
    }

    // On wgpu decode runs split-KV with each layer's calibrated phi.
    let wgpu = fdpp_runtime::check::present_backends().iter().any(|b| matches!(b, BackendOptions::Wgpu(_)));
    if !wgpu {
        skip(Requirement::Gpu, "no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    } else {
        // A few tokens: lavapipe is slow, and the first decode steps already run split-KV.
        let n = 6;
        for reference in [RAW, CHAT] {
            let (ids, _, trace) = generate(&cache, model, "wgpu", reference, n);
            assert_eq!(ids, reference.2[..n], "wgpu, calibrated: {}", reference.1);
            let reasons = decode_attention_reasons(&trace);
            assert_eq!(reasons.len(), 30);
            for (layer, reason) in reasons.iter().enumerate() {
                let want = &layers[layer];
                if want["synchronised"] == true {
                    assert_eq!(reason["rule"], "Synchronised", "layer {layer}: {reason}");
                } else {
                    assert_eq!(reason["rule"], "SplitKv", "layer {layer}: {reason}");
                    assert_eq!(reason["phi"], want["unified"]["phi"], "layer {layer}");
                    assert_eq!(reason["source"]["kind"], "Calibrated", "layer {layer}");
                }
            }
        }
    }

    // A corrupt calibration: a note, the default phi, the same tokens.
    let file = std::fs::read_dir(cache.join("calibration")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let (ids, stderr, _) = generate(&cache, model, "cpu", RAW, 4);
    assert_eq!(ids, RAW.2[..4]);
    assert!(stderr.contains("fdpp: note: calibration not used") && stderr.contains("corrupt"), "{stderr}");
}

#[test]
fn bad_prompt_files_are_clear_errors() {
    let Some(model) = common::smollm2() else { return };
    let model = model.to_str().unwrap();
    let cache = common::temp_dir("calibrate-bad");
    let run = |name: &str, content: &str, extra: &[&str]| {
        let path = cache.join(name);
        std::fs::write(&path, content).unwrap();
        let args = ["calibrate", "--backend", "cpu", "--model", model, "--prompts", path.to_str().unwrap()];
        let out = fdpp(&cache, &[&args[..], extra].concat());
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: expected a failure");
        assert!(stderr.contains("error:") && !stderr.contains("panicked"), "{name}: {stderr}");
        stderr
    };
    assert!(run("empty.txt", "\n  \n", &[]).contains("no prompts"));
    assert!(run("held.txt", "one prompt\nanother\n", &["--held", "2"]).contains("keep at least one prompt"));
    let long = "word ".repeat(9000);
    let e = run("long.txt", &format!("short\n{long}\n"), &["--held", "0"]);
    assert!(e.contains("context holds 8192 tokens") && e.contains("prompt 2"), "{e}");
    // Nothing was stored.
    assert!(!cache.join("calibration").exists());
}
