//! `fdpp check`: every backend this machine has against the CPU oracle, node by node, on
//! the tiny random Llama and (when cached) SmolLM2-135M; injected nodes and broken kernel
//! variants found and named on either side; bad arguments refused by name. Without a GPU
//! adapter or the cached model the tests print why they skip, and fail under
//! FDPP_REQUIRE_GPU=1 / FDPP_REQUIRE_MODEL=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fdpp_runtime::backend::{BackendOptions, WeightPrecision};
use fdpp_runtime::check::report::CheckReport;
use fdpp_runtime::check::{self, CheckOptions, Perturbation};
use fdpp_runtime::model::Model;
use fdpp_runtime::testing::{Requirement, skip};

/// The tiny random Llama with eight layers (so `layers.7.ffn.down` exists).
fn tiny(test: &str) -> PathBuf {
    let path = common::temp_dir(test).join("tiny.gguf");
    common::write_tiny(&path, &common::Spec { layers: 8, context: 128, ..Default::default() }, 11);
    path
}

/// Twelve prompt tokens: the flat GEMM on both backends; the head and decode steps run the GEMV.
const PROMPT: [u32; 12] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33];

fn check_model(path: &Path, prompt: &[u32], opts: &CheckOptions) -> CheckReport {
    let m = Model::load(path).unwrap();
    check::run(&m.describe(), &m.config, m.weights.as_ref(), prompt, opts, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

/// Every backend this machine has besides the CPU, each with f32 and with its own weight
/// and KV cache precision (f16 where the device has it); `None` (skipped with the reason) when
/// there is none.
fn gpu_backends() -> Option<Vec<BackendOptions>> {
    let present: Vec<BackendOptions> = check::present_backends().into_iter().filter(|b| *b != BackendOptions::Cpu).collect();
    if present.is_empty() {
        skip(Requirement::Gpu, "no GPU backend here (install mesa-vulkan-drivers for lavapipe)");
        return None;
    }
    let with = |b: &BackendOptions, p: WeightPrecision| match b.clone() {
        BackendOptions::Wgpu(o) => BackendOptions::Wgpu(fdpp_runtime::backend::WgpuOptions { precision: p, kv: p, ..o }),
        BackendOptions::Cuda(o) => BackendOptions::Cuda(fdpp_runtime::backend::CudaOptions { precision: p, kv: p, ..o }),
        BackendOptions::Hip(o) => BackendOptions::Hip(fdpp_runtime::backend::HipOptions { precision: p, kv: p, ..o }),
        BackendOptions::Cpu => BackendOptions::Cpu,
    };
    Some(present.iter().flat_map(|b| [with(b, WeightPrecision::F32), with(b, WeightPrecision::Auto)]).collect())
}

fn wgpu_present() -> bool {
    let present = check::present_backends().iter().any(|b| matches!(b, BackendOptions::Wgpu(_)));
    if !present {
        skip(Requirement::Gpu, "no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    present
}

fn wgpu() -> BackendOptions {
    BackendOptions::Wgpu(Default::default())
}

/// Prints a comparison's per-layer and per-kind summary (shown with --nocapture, and when
/// a test fails).
fn print_summary(r: &CheckReport) {
    for c in &r.comparisons {
        println!("{} against {} ({:?}):", r.backends[c.checked].device, r.backends[c.reference].kind, c.precision);
        for g in &c.groups {
            println!(
                "  {:<10} {:>4} points  max rel {:.1e}  max 1-cos {:.1e}  beyond {}",
                g.group, g.points, g.max_rel, g.max_cos_distance, g.beyond
            );
        }
        for k in &c.kinds {
            println!(
                "  {:<12} max rel {:.2e} (tol {:.0e})  max 1-cos {:.2e} (tol {:.0e})",
                k.kind, k.max_rel, k.tolerance.rel, k.max_cos_distance, k.tolerance.cos_distance
            );
        }
    }
}

#[test]
fn every_backend_here_agrees_with_the_cpu_on_the_tiny_model() {
    let Some(backends) = gpu_backends() else { return };
    let path = tiny("check-tiny");
    // 40 tokens: the CPU's tiled GEMM (M >= 32) against wgpu's flat GEMM; decode steps run
    // the GEMV and (on GPUs) split-KV attention.
    let long: Vec<u32> = (0..40).map(|i| (i * 37 % 250) as u32).collect();
    for backend in backends {
        for prompt in [&PROMPT[..], &long] {
            let opts = CheckOptions { backends: vec![BackendOptions::Cpu, backend.clone()], steps: 4, ..Default::default() };
            let r = check_model(&path, prompt, &opts);
            print_summary(&r);
            let c = &r.comparisons[0];
            assert!(r.passed(), "{backend:?}, {} prompt tokens: first divergence {:?}", prompt.len(), c.first_divergence);
            assert_eq!(c.reference_ids, c.checked_ids, "{backend:?}: greedy ids");
            assert_eq!(c.groups.len(), 10, "embed, 8 layers, head");
            assert!(c.steps.iter().all(|s| s.logits.overlap == check::LOGITS_TOP_K));
        }
    }
}

/// Runs the `fdpp` binary.
fn fdpp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdpp")).args(args).output().expect("run fdpp")
}

#[test]
fn smollm2_agrees_with_the_cpu_on_wgpu_with_the_per_layer_report_printed() {
    if !wgpu_present() {
        return;
    }
    let Some(model) = common::smollm2() else { return };
    let dir = common::temp_dir("check-smollm2");
    for weights in ["f32", "f16"] {
        let json = dir.join(format!("{weights}.json"));
        let out = fdpp(&[
            "check",
            "--model",
            model.to_str().unwrap(),
            "--backends",
            "cpu,wgpu",
            "--weights",
            weights,
            "--kv",
            weights,
            "--steps",
            "2",
            "--json",
            json.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(out.status.success(), "{weights}: {}", String::from_utf8_lossy(&out.stderr));
        for part in ["per layer, over all steps", "layers.0 ", "layers.29", "head", "PASS"] {
            assert!(stdout.contains(part), "{weights}: {part:?} missing");
        }
        let r: CheckReport = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert!(r.passed() && r.comparisons[0].groups.len() == 32 && r.comparisons[0].steps.len() == 3);
    }
}

#[test]
fn injected_nodes_are_found_and_named_on_either_backend() {
    if !wgpu_present() {
        return;
    }
    let path = tiny("check-inject");
    // wgpu perturbed (second), then the CPU perturbed with wgpu as the reference.
    let cases = [
        (vec![BackendOptions::Cpu, wgpu()], ["layers.7.ffn.down", "layers.3.attn.sdpa", "layers.0.attn_norm", "lm_head"]),
        (vec![wgpu(), BackendOptions::Cpu], ["layers.7.ffn.down", "layers.5.ffn.swiglu", "layers.2.attn.rope", "embed"]),
    ];
    for (backends, nodes) in cases {
        for node in nodes {
            let opts = CheckOptions { backends: backends.clone(), steps: 1, inject: Some(node.parse().unwrap()), ..Default::default() };
            let r = check_model(&path, &PROMPT, &opts);
            let d = r.comparisons[0].first_divergence.clone().unwrap_or_else(|| panic!("{node} on {}: not found", r.backends[1].kind));
            assert_eq!((d.node.as_str(), d.step), (node, 0), "injected {node} on {}", r.backends[1].kind);
            assert!(d.checked.is_some() && d.reference.is_some(), "{node}: both ran it");
        }
    }
}

#[test]
fn the_command_names_the_injected_node_and_fails() {
    if !wgpu_present() {
        return;
    }
    let path = tiny("check-inject-cli");
    let out =
        fdpp(&["check", "--model", path.to_str().unwrap(), "--backends", "cpu,wgpu", "--steps", "1", "--inject", "layers.7.ffn.down"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("FAIL: first divergence at `layers.7.ffn.down` (step 0"), "{stdout}");
    assert!(stdout.contains(">> layers.7.ffn.down"), "{stdout}");
    assert!(stderr.contains("first divergence at `layers.7.ffn.down`") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_broken_kernel_variant_is_caught_and_named_by_node_and_variant() {
    if !wgpu_present() {
        return;
    }
    let path = tiny("check-broken");
    let cpu_first = vec![BackendOptions::Cpu, wgpu()];
    // (backends, broken variant, node it must be caught at, step, the reference's variant there)
    let cases = [
        (cpu_first.clone(), "B:flat_gemm", "layers.0.attn.qkv", 0, "B:flat_gemm"),
        (cpu_first.clone(), "A:gemv", "lm_head", 0, "A:gemv"),
        // Split-KV runs only on decode steps: the prefill agrees.
        (cpu_first, "split-KV unified max", "layers.0.attn.sdpa", 1, "two-pass softmax"),
        (vec![wgpu(), BackendOptions::Cpu], "two-pass softmax", "layers.0.attn.sdpa", 0, "online softmax"),
    ];
    for (backends, variant, node, step, reference) in cases {
        let opts = CheckOptions {
            backends,
            steps: 1,
            break_variant: Some(Perturbation { target: variant.into(), scale: 0.05 }),
            ..Default::default()
        };
        let r = check_model(&path, &PROMPT, &opts);
        let d = r.comparisons[0].first_divergence.clone().unwrap_or_else(|| panic!("{variant}: not caught"));
        assert_eq!((d.node.as_str(), d.step), (node, step), "{variant}");
        assert_eq!(d.checked.unwrap().variant.label(), variant);
        assert_eq!(d.reference.unwrap().variant.label(), reference);
    }
}

#[test]
fn bad_arguments_are_refused_by_name_without_a_panic() {
    let path = tiny("check-bad");
    let model = path.to_str().unwrap();
    for (args, parts) in [
        (vec!["--backends", "cpu,metal"], vec!["unknown backend `metal`", "cpu, wgpu, cuda"]),
        (vec!["--tol-profile", "loose"], vec!["unknown tolerance profile `loose`"]),
        (vec!["--inject", "layers.9.ffn.down"], vec!["no node `layers.9.ffn.down`"]),
        (vec!["--inject", "layers.1.ffn.down:x"], vec!["no node `layers.1.ffn.down:x`"]),
        (vec!["--inject", "layers.1.ffn.down:0"], vec!["--inject", "scale"]),
        (vec!["--backends", "cpu"], vec!["at least two backends"]),
        (vec!["--steps", "500"], vec!["context holds 128", "check fewer steps"]),
        (vec!["--prompt", ""], vec!["the prompt is empty"]),
    ] {
        let mut all = vec!["check", "--model", model];
        all.extend(&args);
        let out = fdpp(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        for p in parts {
            assert!(stderr.contains(p), "{args:?}: expected {p:?} in {stderr}");
        }
    }
}
