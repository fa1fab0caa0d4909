//! Acceptance cases for SmolLM2-135M-Instruct (Q4_1 GGUF), computed independently with
//! Hugging Face transformers in float32 from the same GGUF. Run through the real binary,
//! greedy, on the CPU. Skipped (with the reason printed) when the model is not cached.

mod common;

use std::process::Command;

use serde_json::Value;

fn run_greedy(model: &std::path::Path, chat: bool, prompt: &str) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fdpp"));
    cmd.args(["generate", "--backend", "cpu", "--temperature", "0", "--max-tokens", "24", "--json", "--model"]);
    cmd.arg(model);
    if chat {
        cmd.arg("--chat");
    }
    let out = cmd.arg(prompt).output().expect("run fdpp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fdpp failed:\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

fn check(out: &Value, prompt_ids: &[u64], greedy: &[u64], top5_ids: &[u64], top5_logits: &[f64]) {
    assert_eq!(ids(&out["prompt_ids"]), prompt_ids, "input ids");
    assert_eq!(ids(&out["ids"]), greedy, "greedy ids; text: {}", out["text"]);
    let top: Vec<(u64, f64)> =
        out["first_top5"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect();
    assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), top5_ids, "top-5 ids");
    for ((_, got), want) in top.iter().zip(top5_logits) {
        // The reference gives 3 decimals; f32 sums in another order differ in the 4th.
        assert!((got - want).abs() < 2e-3, "top-5 logits {top:?} vs {top5_logits:?}");
    }
}

fn model() -> Option<std::path::PathBuf> {
    common::smollm2()
}

#[test]
fn raw_prompt_capital_of_france() {
    let Some(model) = model() else { return };
    let out = run_greedy(&model, false, "The capital of France is");
    check(
        &out,
        &[504, 3575, 282, 4649, 314],
        &[7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33, 40, 29, 32, 33, 29, 34, 34, 216, 33, 34, 42, 33],
        &[7042, 260, 4528, 2250, 1315],
        &[17.371, 14.889, 13.245, 13.009, 12.952],
    );
    assert!(out["text"].as_str().unwrap().starts_with(" Paris.\n\nThe answer is: 2018-01-22"), "{}", out["text"]);
}

#[test]
fn chat_prompt_boiling_point() {
    let Some(model) = model() else { return };
    let out = run_greedy(&model, true, "What is the boiling point of water at sea level?");
    check(
        &out,
        &[
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198,
            1780, 314, 260, 16891, 1225, 282, 913, 418, 3426, 1106, 47, 2, 198, 1, 520, 9531, 198,
        ],
        &[504, 16891, 1225, 282, 913, 418, 3426, 1106, 314, 4723, 216, 33, 32, 32, 5027, 20590, 30, 669, 314, 253, 4594, 1225, 28, 284],
        &[504, 3473, 12615, 23641, 2068],
        &[32.167, 31.692, 29.318, 29.304, 29.132],
    );
    assert!(
        out["text"].as_str().unwrap().starts_with("The boiling point of water at sea level is approximately 100 degrees Celsius."),
        "{}",
        out["text"]
    );
}
