//! The check on the CPU against itself (exact agreement, injected nodes and broken variants
//! found and named), its bad input, and the comparison points of backends that fuse
//! differently (the CPU's and wgpu's built-in lowerings, no device needed). The GPU
//! backends are checked against the CPU in `tests/check.rs`.

use super::*;
use crate::lower::caps::BackendCaps;
use crate::model::synthetic::SyntheticWeights;
use crate::trace::StepShape;

fn config() -> ModelConfig {
    crate::graph::tests::config()
}

const PROMPT: [u32; 6] = [3, 14, 15, 92, 65, 35];

fn check(opts: CheckOptions) -> Result<CheckReport> {
    let c = config();
    run("tiny synthetic", &c, &SyntheticWeights::new(&c), &PROMPT, &opts, &mut |_| {})
}

fn cpu_twice() -> CheckOptions {
    CheckOptions { backends: vec![BackendOptions::Cpu, BackendOptions::Cpu], steps: 2, ..Default::default() }
}

fn perturb(target: &str) -> Option<Perturbation> {
    Some(target.parse().unwrap())
}

#[test]
fn the_cpu_agrees_with_itself_exactly_at_every_point() {
    let r = check(cpu_twice()).unwrap();
    assert!(r.passed());
    let c = &r.comparisons[0];
    assert_eq!(c.steps.len(), 3);
    assert_eq!(c.steps.iter().map(|s| s.phase).collect::<Vec<_>>(), [Phase::Prefill, Phase::Decode, Phase::Decode]);
    // Every node that runs a launch is a point; residual adds are fused into the linear
    // layer before them on the CPU (3 layers x 2).
    let g = graph::llama::build(&config());
    assert_eq!(c.steps[0].points.len(), g.nodes.len() - 6);
    for p in c.steps.iter().flat_map(|s| &s.points) {
        let e = p.metrics.errors.unwrap();
        assert_eq!((e.max_abs, e.rel), (0.0, 0.0), "{}", p.node);
        assert!(e.cos_distance < 1e-12, "{}", p.node);
    }
    let residual = c.steps[0].points.iter().find(|p| p.tensor == "layers.1.attn.residual").unwrap();
    assert_eq!((residual.node.as_str(), residual.kind.as_str()), ("layers.1.attn.o", "add"));
    assert_eq!(residual.covers, ["layers.1.attn.o", "layers.1.attn.residual"]);
    assert_eq!(residual.checked[0].absorbs, ["layers.1.attn.residual"]);
    assert_eq!(c.steps[2].points.last().unwrap().kind, "logits");
    assert_eq!(c.reference_ids, c.checked_ids);
    assert_eq!(c.first_id_mismatch(), None);
    let groups: Vec<&str> = c.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(groups, ["embed", "layers.0", "layers.1", "layers.2", "head"]);
    // The decode steps fed the reference's greedy ids.
    assert_eq!(c.steps[1].tokens, [c.reference_ids[0]]);
    assert_eq!(c.steps[2].shape, StepShape { m: 1, out: 1, sequences: 1, max_keys: PROMPT.len() + 2 });
    // The report survives JSON (`--json`, the viewer).
    // (Floats may come back an ulp off: serde_json parses them fast, not exactly.)
    let back: CheckReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!((back.comparisons[0].steps.len(), &back.comparisons[0].groups[1].group), (3, &c.groups[1].group));
    assert_eq!(back.comparisons[0].steps[2].points[4].checked, c.steps[2].points[4].checked);
}

#[test]
fn an_injected_node_is_the_first_divergence_whatever_its_op() {
    for node in
        ["embed", "layers.0.attn_norm", "layers.0.attn.rope", "layers.1.attn.sdpa", "layers.2.ffn.swiglu", "layers.2.ffn.down", "lm_head"]
    {
        let r = check(CheckOptions { inject: perturb(node), ..cpu_twice() }).unwrap();
        let c = &r.comparisons[0];
        let d = c.first_divergence.as_ref().unwrap_or_else(|| panic!("{node}: no divergence found"));
        assert_eq!((d.node.as_str(), d.step), (node, 0), "{node}");
        let p = c.divergent_point().unwrap();
        // Moved by exactly the scale, relative to the largest value.
        let e = p.metrics.errors.unwrap();
        assert!((e.rel - DEFAULT_INJECT_SCALE as f64).abs() < 1e-5, "{node}: {e:?}");
        assert_eq!(d.checked.as_ref().unwrap().variant, d.reference.as_ref().unwrap().variant);
        assert!(!r.passed());
        assert_eq!(r.injected.as_deref(), Some(format!("{node}:0.5").as_str()));
    }
}

#[test]
fn a_broken_variant_is_named_by_node_and_variant() {
    // Six prompt tokens run the flat GEMM on the CPU (M1 = 2 <= 6 < M2 = 32); the head
    // (one output row) and the decode steps run the GEMV.
    for (variant, node, step) in
        [("B:flat_gemm", "layers.0.attn.qkv", 0), ("A:gemv", "lm_head", 0), ("two-pass softmax", "layers.0.attn.sdpa", 0)]
    {
        let r = check(CheckOptions { break_variant: perturb(variant), ..cpu_twice() }).unwrap();
        let d = r.comparisons[0].first_divergence.clone().unwrap();
        assert_eq!((d.node.as_str(), d.step), (node, step), "{variant}");
        assert_eq!(d.checked.unwrap().variant.label(), variant);
    }
}

#[test]
fn bad_checks_are_errors_that_name_what_is_wrong() {
    let err = |opts: CheckOptions| check(opts).unwrap_err().to_string();
    let e = err(CheckOptions { inject: perturb("layers.9.ffn.down"), ..cpu_twice() });
    assert!(e.contains("no node `layers.9.ffn.down`") && e.contains("0..3"), "{e}");
    let e = err(CheckOptions { inject: perturb("layers.0.ffn.residual"), ..cpu_twice() });
    assert!(e.contains("layers.0.ffn.residual") && e.contains("inject `layers.0.ffn.down`"), "{e}");
    let e = err(CheckOptions { break_variant: perturb("C:gemm"), ..cpu_twice() });
    assert!(e.contains("C:gemm") && e.contains("no launch of cpu ran this variant"), "{e}");
    let e = err(CheckOptions { backends: vec![BackendOptions::Cpu], ..cpu_twice() });
    assert!(e.contains("at least two backends"), "{e}");
    let e = err(CheckOptions { steps: 500, ..cpu_twice() });
    assert!(e.contains("506 tokens") && e.contains("check fewer steps"), "{e}");
    let c = config();
    let e = run("m", &c, &SyntheticWeights::new(&c), &[], &cpu_twice(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt));
    let e = run("m", &c, &SyntheticWeights::new(&c), &[1000], &cpu_twice(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("token id 1000"), "{e}");
}

#[test]
fn perturbations_parse_names_with_an_optional_scale() {
    let p = |s: &str| s.parse::<Perturbation>();
    assert_eq!(p("layers.7.ffn.down").unwrap(), Perturbation { target: "layers.7.ffn.down".into(), scale: DEFAULT_INJECT_SCALE });
    assert_eq!(p("layers.7.ffn.down:0.5").unwrap().scale, 0.5);
    assert_eq!(p("A:gemv").unwrap(), Perturbation { target: "A:gemv".into(), scale: DEFAULT_INJECT_SCALE });
    assert_eq!(p("A:gemv:2").unwrap(), Perturbation { target: "A:gemv".into(), scale: 2.0 });
    for bad in [":1", "x:0", "x:inf", ""] {
        assert!(p(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn points_cover_the_nodes_a_backend_fuses_into_a_neighbour() {
    let g = graph::llama::build(&config());
    let cpu = Lowering::new(g.clone(), BackendCaps::cpu(), &LoweringOptions::default()).unwrap();
    let gpu = Lowering::new(g, BackendCaps::wgpu_builtin(), &LoweringOptions::default()).unwrap();
    let decode = StepShape { m: 1, out: 1, sequences: 1, max_keys: 9 };
    let (a, b) = (cpu.lower(&decode), gpu.lower(&decode));
    let pts = points::points(&cpu, &a, &b, &points::completed(&cpu, &a), &points::completed(&gpu, &b));
    let name = |p: usize| cpu.graph.nodes[cpu.order[p]].name.as_str();
    let spans: Vec<(&str, Vec<&str>)> = pts.iter().map(|p| (name(p.named), p.nodes.clone().map(name).collect())).collect();
    // At decode wgpu runs the RMSNorm in the GEMV's prologue, SwiGLU and RoPE in its epilogue.
    assert!(spans.contains(&("layers.0.attn.qkv", vec!["layers.0.attn_norm", "layers.0.attn.qkv", "layers.0.attn.rope"])), "{spans:?}");
    assert!(spans.contains(&("layers.1.ffn.gate_up", vec!["layers.1.ffn_norm", "layers.1.ffn.gate_up", "layers.1.ffn.swiglu"])));
    assert!(spans.contains(&("layers.2.ffn.down", vec!["layers.2.ffn.down", "layers.2.ffn.residual"])));
    assert!(spans.contains(&("layers.2.attn.sdpa", vec!["layers.2.attn.sdpa"])));
    assert_eq!(spans.last().unwrap(), &("lm_head", vec!["final_norm", "lm_head"]));
    // Every node is covered once, in order.
    let covered: Vec<usize> = pts.iter().flat_map(|p| p.nodes.clone()).collect();
    assert_eq!(covered, (0..cpu.order.len()).collect::<Vec<_>>());
    // Without fusion every node is a point of its own.
    let opts = LoweringOptions { fuse: false, ..Default::default() };
    let (cpu, gpu) = (
        Lowering::new(cpu.graph.clone(), BackendCaps::cpu(), &opts).unwrap(),
        Lowering::new(cpu.graph.clone(), BackendCaps::wgpu_builtin(), &opts).unwrap(),
    );
    let (a, b) = (cpu.lower(&decode), gpu.lower(&decode));
    let pts = points::points(&cpu, &a, &b, &points::completed(&cpu, &a), &points::completed(&gpu, &b));
    assert_eq!(pts.len(), cpu.order.len());
    assert!(pts.iter().all(|p| p.nodes.len() == 1 && p.named == p.nodes.start));
}
