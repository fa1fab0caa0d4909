//! The typed plan and trace files, through the real binary: `fdpp inspect --json` writes a
//! plan whose linear nodes carry the variant the dataflow table gives for each M and whose
//! fused nodes name the launch that absorbed them; `fdpp generate --trace` on the CPU
//! records the variant the CPU ran.

mod common;

use std::process::Command;

use fdpp_runtime::dataflow::{DataflowTable, LinearImpl};
use fdpp_runtime::lower::kernel::Variant;
use fdpp_runtime::trace::{How, NodeRecord, PlanFile, TraceFile};

fn fdpp(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp")).args(args).output().unwrap();
    assert!(out.status.success(), "fdpp {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn variant(r: &NodeRecord) -> Variant {
    match &r.how {
        How::Launch { variant, .. } => *variant,
        How::Fused { into, .. } => panic!("{} is fused into {into}", r.node),
    }
}

/// The dataflow a table gives M, computed from its numbers here.
fn expected(table: &DataflowTable, m: usize) -> LinearImpl {
    let f = table.fallback;
    if m < f.m1 {
        LinearImpl::Gemv
    } else if m < f.m2 {
        LinearImpl::FlatGemm
    } else {
        LinearImpl::Gemm
    }
}

fn check_plan(plan: &PlanFile, ms: &[usize]) {
    assert_eq!(plan.steps.len(), ms.len());
    for (step, &m) in plan.steps.iter().zip(ms) {
        assert_eq!(step.shape.m, m);
        let want = expected(&plan.caps.table, m);
        let linear: Vec<&NodeRecord> = step.nodes.iter().filter(|r| r.op == "linear").collect();
        assert!(!linear.is_empty());
        for r in linear {
            assert_eq!(variant(r).dataflow(), Some(want), "{} at m={m}", r.node);
        }
        // On GEMV steps the norms before QKV and gate/up run inside them.
        for r in step.nodes.iter().filter(|r| r.op == "rms_norm" && r.node.starts_with("layers.")) {
            match (&r.how, want) {
                (How::Fused { into, .. }, LinearImpl::Gemv) => {
                    assert!(into.ends_with(".qkv") || into.ends_with(".gate_up"), "{} into {into}", r.node)
                }
                (How::Launch { variant: Variant::RmsNorm, .. }, LinearImpl::FlatGemm | LinearImpl::Gemm) => {}
                (how, _) => panic!("{} at m={m}: {how:?}", r.node),
            }
        }
        // Residual adds are in the epilogue of the layer before them, at every M.
        for r in step.nodes.iter().filter(|r| r.op == "add") {
            let How::Fused { into, .. } = &r.how else { panic!("{} runs on its own", r.node) };
            assert!(into.ends_with(".o") || into.ends_with(".down"), "{} into {into}", r.node);
        }
    }
}

#[test]
fn wgpu_plan_without_a_device_has_a_b_and_c() {
    let dir = common::temp_dir("plan-offline");
    let json = dir.join("plan.json");
    fdpp(&["inspect", "--backend", "wgpu", "--offline", "--shape", "smollm2-135m", "--m", "1,8,128", "--json", json.to_str().unwrap()]);
    let plan: PlanFile = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(plan.caps.backend.name(), "wgpu");
    check_plan(&plan, &[1, 8, 128]);
    // The built-in wgpu table: A at 1, B at 8, C at 128.
    let labels: Vec<&str> =
        plan.steps.iter().map(|s| variant(s.nodes.iter().find(|r| r.node == "layers.0.attn.o").unwrap()).label()).collect();
    assert_eq!(labels, ["A:gemv", "B:flat_gemm", "C:gemm"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wgpu_plan_of_a_model_file_uses_the_device_or_says_it_falls_back() {
    let dir = common::temp_dir("plan-device");
    let model = dir.join("tiny.gguf");
    common::write_tiny(&model, &common::Spec::default(), 3);
    let json = dir.join("plan.json");
    let out = fdpp(&["inspect", model.to_str().unwrap(), "--backend", "wgpu", "--m", "1,8,128", "--json", json.to_str().unwrap()]);
    let plan: PlanFile = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    check_plan(&plan, &[1, 8, 128]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if plan.caps.device.starts_with("built-in") {
        assert!(stderr.contains("planning with its built-in profile"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cpu_trace_records_the_variant_the_cpu_ran() {
    let dir = common::temp_dir("cpu-trace");
    let model = dir.join("tiny.gguf");
    common::write_tiny(&model, &common::Spec { context: 128, ..Default::default() }, 4);
    let trace = dir.join("trace.json");
    let (m, t) = (model.to_str().unwrap(), trace.to_str().unwrap());
    // A short prompt (B on the CPU), then decode steps of 1 (A); then a longer prompt (C).
    let mut seen = std::collections::HashSet::new();
    for prompt in ["the theme", &"the theme ".repeat(8)] {
        fdpp(&["generate", "--backend", "cpu", "--model", m, "--temperature", "0", "--max-tokens", "3", "--trace", t, prompt]);
        let file: TraceFile = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
        assert_eq!(file.caps.backend.name(), "cpu");
        assert_eq!(file.steps.len(), 2, "the prefill and a decode step");
        for step in &file.steps {
            let want = expected(&file.caps.table, step.shape.m);
            for r in step.nodes.iter().filter(|r| r.op == "linear") {
                let rows = r.output[0];
                assert_eq!(variant(r).dataflow(), Some(expected(&file.caps.table, rows)), "{} over {rows} rows", r.node);
                assert!(r.micros.is_some(), "the CPU times what it runs");
            }
            assert!(step.nodes.iter().any(|r| r.op == "linear" && variant(r).dataflow() == Some(want)));
            seen.insert(want);
        }
        assert_eq!(file.op_summary.len(), 2);
    }
    assert_eq!(seen.len(), 3, "the steps should have covered A, B and C: {seen:?}");
    let _ = std::fs::remove_dir_all(dir);
}
