//! Conformance with Hugging Face transformers: tiny models of each architecture and RoPE
//! variant fdpp runs, written by transformers itself (`tests/data/conformance/`, made by
//! `make_fixtures.py` there) in both config styles, f32 and bf16, one sharded, and as GGUF.
//! fdpp's logits (prefill and every greedy step) must match transformers' own within 1e-4
//! relative, and its greedy ids exactly, on the CPU and on wgpu (lavapipe in CI).

mod common;

use std::path::{Path, PathBuf};

use fdpp_runtime::backend::BackendOptions;
use fdpp_runtime::engine::{Engine, EngineOptions, SamplingParams};
use fdpp_runtime::model::Model;

#[derive(serde::Deserialize)]
struct Reference {
    prompt_ids: Vec<u32>,
    prefill_logits: Vec<f32>,
    greedy_ids: Vec<u32>,
    /// One per greedy step; the first is the prefill's.
    step_logits: Vec<Vec<f32>>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")
}

/// Every fixture folder, and every GGUF with the folder whose reference it shares.
fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let mut out = vec![];
    for e in std::fs::read_dir(root()).unwrap() {
        let p = e.unwrap().path();
        if p.join("reference.json").is_file() {
            out.push((p.clone(), p.join("reference.json")));
        } else if p.extension().is_some_and(|x| x == "gguf") {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            out.push((p.clone(), root().join(format!("{stem}-v5-f32")).join("reference.json")));
        }
    }
    out.sort();
    assert!(out.len() >= 20, "the conformance fixtures are missing: {} found in {}", out.len(), root().display());
    out
}

fn check(model: &Path, reference: &Path, backend: BackendOptions, what: &str) -> bool {
    let r: Reference = serde_json::from_slice(&std::fs::read(reference).unwrap()).unwrap();
    let opts = EngineOptions { backend, ..Default::default() };
    let mut e = match Engine::load(Model::load(model).unwrap_or_else(|e| panic!("{what}: {e}")), &opts, &mut |_, _| {}) {
        Ok(e) => e,
        Err(err) => {
            fdpp_runtime::testing::skip_unavailable(err);
            return false;
        }
    };
    let n = r.prompt_ids.len();
    let logits = e.forward(&r.prompt_ids, 0).unwrap();
    let err = common::rel_err(&logits, &r.prefill_logits, what);
    assert!(err <= 1e-4, "{what}: prefill logits relative error {err:e}");
    // Every greedy step's logits, fed transformers' own ids.
    let mut worst = err;
    for (i, want) in r.step_logits.iter().enumerate().skip(1) {
        let got = e.forward(&[r.greedy_ids[i - 1]], n + i - 1).unwrap();
        let err = common::rel_err(&got, want, what);
        assert!(err <= 1e-4, "{what}: logits of greedy step {i}: relative error {err:e}");
        worst = worst.max(err);
    }
    // And fdpp's own greedy decoding (pipelined on the GPU) picks transformers' ids.
    e.forward(&r.prompt_ids, 0).unwrap();
    let ids = e.decode_ids(r.greedy_ids[0], n, r.greedy_ids.len() - 1, &SamplingParams::default()).unwrap();
    assert_eq!(ids, r.greedy_ids[1..], "{what}: greedy ids");
    eprintln!("{what}: logits within {worst:.1e} of transformers', greedy ids equal");
    true
}

#[test]
fn transformers_fixtures_on_the_cpu() {
    for (model, reference) in fixtures() {
        check(&model, &reference, BackendOptions::Cpu, &format!("{} on cpu", model.display()));
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn transformers_fixtures_on_wgpu() {
    use fdpp_runtime::backend::{WeightPrecision, WgpuOptions};
    let wgpu = BackendOptions::Wgpu(WgpuOptions { precision: WeightPrecision::F32, kv: WeightPrecision::F32, ..Default::default() });
    for (model, reference) in fixtures() {
        if !check(&model, &reference, wgpu.clone(), &format!("{} on wgpu", model.display())) {
            return;
        }
    }
}

#[test]
fn every_kind_of_fixture_is_there() {
    let names: Vec<String> = fixtures().iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for arch in ["llama-tied", "llama-untied", "llama3-rope", "qwen2", "llama-head-dim"] {
        for style in ["v4", "v5"] {
            for dtype in ["f32", "bf16"] {
                let want = format!("{arch}-{style}-{dtype}");
                assert!(names.contains(&want), "{want} missing from {names:?}");
            }
        }
    }
    assert!(names.iter().any(|n| n.ends_with(".gguf")));
    // One is sharded, with an index.
    assert!(root().join("llama-untied-v5-f32/model.safetensors.index.json").is_file());
}
