//! `fdpp convert` writes the Hugging Face layout; loading it gives the same logits as the
//! GGUF it came from (max abs diff < 1e-4).

mod common;

use std::path::Path;
use std::process::Command;

use fdpp_runtime::engine::{Engine, EngineOptions, Prompt};
use fdpp_runtime::model::{ChatMessage, Model, ModelFormat};

fn convert(src: &Path, dst: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp")).arg("convert").arg(src).arg(dst).output().unwrap();
    assert!(out.status.success(), "convert failed:\n{}", String::from_utf8_lossy(&out.stderr));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dst.join(f).is_file(), "{f} not written");
    }
}

/// Same prompt ids and logits (prefill and one decode step) from both folders.
fn same_logits(a: &Path, b: &Path, prompt: &str) {
    let load = |p: &Path| Engine::load(Model::load(p).unwrap(), &EngineOptions::default(), &mut |_, _| {}).unwrap();
    let (mut ea, mut eb) = (load(a), load(b));
    let raw = Prompt::Raw(prompt.into());
    let ids = ea.tokenize(&raw).unwrap();
    assert_eq!(ids, eb.tokenize(&raw).unwrap(), "prompt ids differ");
    let chat = Prompt::Chat(vec![ChatMessage { role: "user".into(), content: prompt.into() }]);
    assert_eq!(ea.tokenize(&chat).unwrap(), eb.tokenize(&chat).unwrap(), "chat ids differ");
    assert_eq!(ea.tokenizer.stop_ids(), eb.tokenizer.stop_ids());
    let (la, lb) = (ea.forward(&ids, 0).unwrap(), eb.forward(&ids, 0).unwrap());
    let (da, db) = (ea.forward(&[7], ids.len()).unwrap(), eb.forward(&[7], ids.len()).unwrap());
    let (a, b): (Vec<f32>, Vec<f32>) = (la.into_iter().chain(da).collect(), lb.into_iter().chain(db).collect());
    let diff = fdpp_runtime::compare::max_error(&a, &b).unwrap_or_else(|e| panic!("logits: {e}")).abs;
    assert!(diff < 1e-4, "max abs logit difference {diff}");
}

#[test]
fn tiny_model_round_trip() {
    let dir = common::temp_dir("convert-tiny");
    let gguf = dir.join("tiny.gguf");
    common::write_tiny(&gguf, &common::Spec { tied: false, ..Default::default() }, 11);
    let hf = dir.join("hf");
    convert(&gguf, &hf);
    assert_eq!(Model::load(&hf).unwrap().format, ModelFormat::HuggingFace);
    same_logits(&gguf, &hf, "the theme");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn smollm2_round_trip() {
    let Some(model) = common::smollm2() else { return };
    let dir = common::temp_dir("convert-smollm2");
    convert(&model, &dir);
    same_logits(&model, &dir, "The capital of France is");
    let _ = std::fs::remove_dir_all(dir);
}
