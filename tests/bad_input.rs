//! Every kind of bad input gives a clear error that names the file / tensor / limit,
//! a non-zero exit status, and no panic. Each test writes its own small broken file and
//! runs the real `fdpp` binary on it.

mod common;

use std::path::Path;
use std::process::Command;

use common::Spec;
use fdpp_runtime::model::gguf::{GgmlType, GgufValue};

/// Runs `fdpp generate` on `model`; returns stderr after checking exit status and no panic.
fn generate_fails(model: &Path, prompt: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp"))
        .args(["generate", "--temperature", "0", "--max-tokens", "2", "--model"])
        .arg(model)
        .arg(prompt)
        .output()
        .expect("run fdpp");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success; stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit status {:?}; stderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains("error: "), "no error line:\n{stderr}");
    stderr
}

fn assert_mentions(stderr: &str, parts: &[&str]) {
    for p in parts {
        assert!(stderr.contains(p), "expected {p:?} in:\n{stderr}");
    }
}

type Tensors = Vec<(String, fdpp_runtime::tensor::HostTensor)>;

fn tiny_parts() -> (Spec, Vec<(String, GgufValue)>, Tensors) {
    let spec = Spec::default();
    let w = common::random_weights(&spec, 3);
    let meta = common::metadata(&spec);
    let tensors = common::gguf_tensors(&spec, &w);
    (spec, meta, tensors)
}

#[test]
fn missing_file() {
    let dir = common::temp_dir("missing");
    let path = dir.join("nope.gguf");
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["nope.gguf", "No such file"]);
}

#[test]
fn wrong_magic() {
    let dir = common::temp_dir("magic");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip, not a model at all").unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "not a GGUF file"]);
}

#[test]
fn truncated_header() {
    let (_, meta, tensors) = tiny_parts();
    let bytes = common::writer(&meta, &tensors).to_bytes();
    let dir = common::temp_dir("trunc-header");
    let path = dir.join("model.gguf");
    std::fs::write(&path, &bytes[..200]).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "truncated", "200 bytes"]);
}

#[test]
fn tensor_data_past_the_end() {
    let (_, meta, tensors) = tiny_parts();
    let bytes = common::writer(&meta, &tensors).to_bytes();
    let dir = common::temp_dir("trunc-data");
    let path = dir.join("model.gguf");
    // The last tensor's data ends the file: cutting a few bytes cuts only that tensor.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = generate_fails(&path, "hi");
    // The last tensor in the file is the one cut off.
    let last = &tensors.last().unwrap().0;
    assert_mentions(&err, &["model.gguf", "truncated", last.as_str()]);
}

#[test]
fn unsupported_tensor_type() {
    let (_, meta, mut tensors) = tiny_parts();
    let i = tensors.iter().position(|(n, _)| n == "blk.0.ffn_down.weight").unwrap();
    let (name, t) = tensors.remove(i);
    let mut w = common::writer(&meta, &tensors);
    // Q5_0: 32 values in 22 bytes; the bytes' content does not matter.
    let blocks = t.numel() / 32;
    w.tensor_raw(&name, &t.shape, GgmlType::from_id(6), vec![0u8; blocks * 22]);
    let dir = common::temp_dir("qtype");
    let path = dir.join("model.gguf");
    w.write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "blk.0.ffn_down.weight", "Q5_0", "Q4_1"]);
}

#[test]
fn missing_tensor() {
    let (_, meta, mut tensors) = tiny_parts();
    tensors.retain(|(n, _)| n != "blk.1.attn_v.weight");
    let dir = common::temp_dir("missing-tensor");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "missing tensor", "blk.1.attn_v.weight"]);
}

#[test]
fn shape_mismatch_with_config() {
    let (spec, meta, mut tensors) = tiny_parts();
    let t = tensors.iter_mut().find(|(n, _)| n == "blk.0.attn_k.weight").unwrap();
    // K should have kv_heads * head_dim = 32 rows; give it 64.
    t.1 = fdpp_runtime::tensor::HostTensor::f32(vec![64, spec.hidden], vec![0.0; 64 * spec.hidden]);
    let dir = common::temp_dir("shape");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "blk.0.attn_k.weight", "[64, 64]", "[32, 64]"]);
}

#[test]
fn invalid_utf8_in_metadata() {
    let (_, mut meta, tensors) = tiny_parts();
    let marker = "@@@@MARKER@@@@";
    meta.iter_mut().find(|(k, _)| k == "general.name").unwrap().1 = GgufValue::String(marker.into());
    let mut bytes = common::writer(&meta, &tensors).to_bytes();
    let at = bytes.windows(marker.len()).position(|w| w == marker.as_bytes()).unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    let dir = common::temp_dir("utf8");
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "invalid UTF-8", "general.name"]);
}

#[test]
fn prompt_longer_than_context() {
    let dir = common::temp_dir("long-prompt");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    // One token per byte in the tiny vocabulary: 100 tokens > 64 positions.
    let err = generate_fails(&path, &"x".repeat(100));
    assert_mentions(&err, &["100 tokens", "holds 64 tokens"]);
}

#[test]
fn empty_prompt() {
    let dir = common::temp_dir("empty");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    let err = generate_fails(&path, "");
    assert_mentions(&err, &["prompt is empty"]);
}

#[test]
fn unsupported_architecture() {
    let (_, mut meta, tensors) = tiny_parts();
    meta.iter_mut().find(|(k, _)| k == "general.architecture").unwrap().1 = GgufValue::String("mamba".into());
    let dir = common::temp_dir("arch");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "mamba", "llama"]);
}

#[test]
fn backend_not_available_yet() {
    let dir = common::temp_dir("backend");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    let out =
        Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["generate", "--backend", "cuda", "--model"]).arg(&path).arg("hi").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_mentions(&stderr, &["cuda", "not available"]);
}
