//! Whole models on a native backend (CUDA, HIP) against the CPU oracle, shared by
//! tests/cuda_model.rs and tests/hip_model.rs.

use std::path::Path;
use std::process::Command;

use fdpp_runtime::backend::{BackendOptions, Capacity, StepInput, WeightPrecision};
use fdpp_runtime::engine::{Driver, Engine, EngineOptions, SamplingParams};
use fdpp_runtime::lower::LoweringOptions;
use fdpp_runtime::model::Model;
use fdpp_runtime::sampling::{Sampler, argmax};

pub fn engine(path: &Path, backend: BackendOptions, fuse: bool) -> Option<Engine> {
    let opts = EngineOptions { backend, lowering: LoweringOptions { fuse, ..Default::default() }, ..Default::default() };
    Engine::load(Model::load(path).unwrap(), &opts, &mut |_, _| {}).map_err(fdpp_runtime::testing::skip_unavailable).ok()
}

/// The tiny random Llama on `backend` (given a weight precision) against the CPU: logits of
/// prefills that take each dataflow and of decode steps crossing split-KV chunk boundaries,
/// greedy ids picked on the device and fed back, sampled ids, fused and unfused lowerings.
/// Skips (with the reason) where the backend cannot open.
pub fn tiny_llama_matches_cpu(name: &str, backend: impl Fn(WeightPrecision) -> BackendOptions) {
    let dir = super::temp_dir(&format!("{name}-tiny"));
    let path = dir.join("tiny.gguf");
    super::write_tiny(&path, &super::Spec { context: 256, ..Default::default() }, 5);
    for (precision, tol) in [(WeightPrecision::F32, 1e-4), (WeightPrecision::F16, 2e-2)] {
        for fuse in [true, false] {
            let what = format!("{precision:?} weights, fused {fuse}");
            let mut cpu = engine(&path, BackendOptions::Cpu, true).expect("the CPU backend is always there");
            let Some(mut gpu) = engine(&path, backend(precision), fuse) else { return };
            // Prefills that take each dataflow (A up to 8 rows, B, C), then decode steps
            // whose split-KV attention crosses chunk boundaries.
            for (len, start) in [(3usize, 0usize), (20, 3), (70, 23)] {
                let prompt: Vec<u32> = (0..len).map(|i| ((i + start) * 31 % 250) as u32).collect();
                let (a, b) = (gpu.forward(&prompt, start).unwrap(), cpu.forward(&prompt, start).unwrap());
                let err = super::rel_err(&a, &b, "prefill logits");
                assert!(err < tol, "{what}: prefill of {len} at {start}: relative error {err}");
            }
            let first = argmax(&cpu.forward(&[7], 93).unwrap());
            gpu.forward(&[7], 93).unwrap();
            let mut next = first;
            for pos in 94..94 + 40 {
                let (a, b) = (gpu.forward(&[next], pos).unwrap(), cpu.forward(&[next], pos).unwrap());
                let err = super::rel_err(&a, &b, "decode logits");
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

/// Three sequences of the tiny random Llama decoded together on `backend`, the device
/// picking each step's greedy ids and feeding them back: the same ids as the CPU, step for
/// step (the prompts differ in length, so the sequences sit at different positions).
pub fn batched_greedy_decode_matches_cpu(name: &str, backend: BackendOptions) {
    let dir = super::temp_dir(&format!("{name}-batched"));
    let path = dir.join("tiny.gguf");
    // Untied: with the embeddings as the output matrix, a random model's greedy ids settle
    // on one token at once, and stale ids fed back would go unnoticed.
    super::write_tiny(&path, &super::Spec { context: 256, tied: false, ..Default::default() }, 5);
    let capacity = Capacity { max_seqs: 3, max_context: 128 };
    let load = |backend: &BackendOptions| {
        let model = Model::load(&path).unwrap();
        let graph = fdpp_runtime::graph::llama::build(&model.config);
        Driver::load(backend, graph, &LoweringOptions::default(), model.weights.as_ref(), capacity, &mut |_, _| {})
    };
    let Some(mut gpu) = load(&backend).map_err(fdpp_runtime::testing::skip_unavailable).ok() else { return };
    let mut cpu = load(&BackendOptions::Cpu).expect("the CPU backend is always there");
    let decode = |d: &mut Driver| {
        let mut first = vec![];
        for (s, len) in [5usize, 17, 40].into_iter().enumerate() {
            let prompt: Vec<u32> = (0..len).map(|i| ((i * 7 + s * 13) % 250) as u32).collect();
            let positions: Vec<usize> = (0..len).collect();
            let input = StepInput { tokens: &prompt, positions: &positions, seqs: &vec![s; len], out_rows: &[len - 1] };
            first.extend(d.step_greedy(&input).unwrap());
        }
        let mut ids = vec![];
        let input = StepInput { tokens: &first, positions: &[5, 17, 40], seqs: &[0, 1, 2], out_rows: &[0, 1, 2] };
        d.decode(&input, 12, &mut Sampler::new(SamplingParams::default()), &mut |step| {
            ids.push(step.to_vec());
            true
        })
        .unwrap();
        (first, ids)
    };
    let (want, got) = (decode(&mut cpu), decode(&mut gpu));
    for s in 0..3 {
        let first = want.1[0][s];
        assert!(want.1.iter().any(|step| step[s] != first), "the CPU's ids of sequence {s} never change: a weak test");
    }
    assert_eq!(got.1.len(), 12, "{name}: steps collected");
    assert_eq!(got, want, "{name}: the prompts' picks, then each decode step's ids");
}

/// SmolLM2-135M's reference prompts (plain and chat) through `fdpp generate` on `backend`
/// with f32 and with f16 weights, and on the CPU (the f32 reference, which refuses f16): the
/// same prompt ids, greedy tokens and first top-5.
pub fn smollm2_matches_cpu(bin: &str, backend: &str) {
    let Some(model) = super::smollm2() else { return };
    for chat in [false, true] {
        let prompt = if chat { "What is the boiling point of water at sea level?" } else { "The capital of France is" };
        let cpu = super::generate_json(bin, &model, "cpu", ("auto", "auto"), chat, prompt);
        for weights in ["f32", "f16"] {
            let gpu = super::generate_json(bin, &model, backend, (weights, "auto"), chat, prompt);
            assert_eq!(gpu["prompt_ids"], cpu["prompt_ids"]);
            assert_eq!(gpu["ids"], cpu["ids"], "{backend}, {weights} weights: greedy tokens differ for {prompt:?}");
            assert_eq!(super::top5_ids(&gpu), super::top5_ids(&cpu), "{backend}, {weights} weights: first top-5 for {prompt:?}");
        }
    }
}

/// `fdpp generate --backend <backend>` where the backend cannot run (`why`, as the library
/// says it): exit 1 with that reason, no panic; `--backend auto` still generates, elsewhere.
pub fn unavailable_backend_exits_cleanly(bin: &str, backend: &str, why: &str) {
    let dir = super::temp_dir(&format!("{backend}-missing"));
    let model = dir.join("tiny.gguf");
    super::write_tiny(&model, &super::Spec::default(), 3);
    let generate = |backend: &str| {
        let mut cmd = Command::new(bin);
        cmd.args(["generate", "--backend", backend, "--temperature", "0", "--max-tokens", "2", "--model"]).arg(&model).arg("hi");
        cmd.output().unwrap()
    };
    let out = generate(backend);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(why), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = generate("auto");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&format!("backend {backend}")));
}
