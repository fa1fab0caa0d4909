//! The viewer driven headlessly (egui_kittest, through its accessibility tree: no display):
//! a plan of SmolLM2 is opened through the file field, a node found by search shows its
//! variant and reason, the M control re-lowers where the dataflow table's thresholds say,
//! and bad files give a message in the window.

use std::path::PathBuf;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use fdpp_runtime::dataflow::LinearImpl;
use fdpp_runtime::graph;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::lower::{Lowering, LoweringOptions};
use fdpp_runtime::model::ModelConfig;
use fdpp_runtime::trace::{How, PlanFile, PlannedStep, StepShape};
use fdpp_viewer::app::ViewerApp;

/// SmolLM2-135M's shapes.
fn smollm2() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        rope_theta: 100000.0,
        rms_norm_eps: 1e-5,
        max_context: 8192,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
        biases: Default::default(),
        notes: vec![],
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fdpp-viewer-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// What `fdpp inspect --shape smollm2-135m --backend wgpu --offline --m 1 --json` writes.
fn write_plan() -> (PathBuf, PlanFile) {
    let config = smollm2();
    let lowering = Lowering::new(graph::llama::build(&config), BackendCaps::wgpu_builtin(), &LoweringOptions::default()).unwrap();
    let shape = StepShape { m: 1, out: 1, sequences: 1, max_keys: 512 };
    let nodes = lowering.records(&lowering.lower(&shape), None);
    let plan = PlanFile {
        model: "smollm2-135m shapes".into(),
        notes: vec![],
        caps: lowering.caps.clone(),
        config: Some(config),
        fusions: lowering.fusions.clone(),
        memory: lowering.memory.clone(),
        steps: vec![PlannedStep { shape, nodes }],
    };
    let path = temp("plan.json");
    std::fs::write(&path, serde_json::to_string(&plan).unwrap()).unwrap();
    (path, plan)
}

fn harness() -> Harness<'static, ViewerApp> {
    Harness::builder().with_size(egui::vec2(1400.0, 900.0)).build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), ViewerApp::default())
}

fn open(h: &mut Harness<'static, ViewerApp>, path: &std::path::Path) {
    h.get_by_label("File:").focus();
    h.get_by_label("File:").type_text(&path.display().to_string());
    h.run();
    h.get_by_label("Open").click();
    h.run();
}

fn select(h: &mut Harness<'static, ViewerApp>, node: &str) {
    let search = h.get_by_label("Search nodes:");
    search.focus();
    search.type_text(node);
    h.run();
    h.get_by_label(node).click();
    h.run();
}

/// The inspector's line that starts with `prefix`.
fn line(h: &Harness<'static, ViewerApp>, prefix: &str) -> String {
    // Labels keep their text as the accessibility node's value.
    let n = h.get_by_label_contains(prefix);
    n.accesskit_node().value().unwrap_or_default()
}

#[test]
fn a_node_found_by_search_shows_its_variant_and_reason() {
    let (path, plan) = write_plan();
    let mut h = harness();
    open(&mut h, &path);
    assert_eq!(h.state().message.as_ref().map(|m| m.error), Some(false), "{:?}", h.state().message);
    for name in ["layers.3.attn.qkv", "layers.29.attn.sdpa", "layers.7.ffn_norm"] {
        h.get_by_label("Search nodes:").focus();
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.key_press(egui::Key::Backspace);
        h.run();
        select(&mut h, name);
        assert_eq!(h.state().selected.as_deref(), Some(name));
        let record = plan.steps[0].nodes.iter().find(|n| n.node == name).unwrap();
        let want = match &record.how {
            How::Launch { variant, .. } => format!("variant: {variant}"),
            How::Fused { into, stage } => format!("variant: fused into {into} ({stage})"),
        };
        assert_eq!(line(&h, "variant: "), want);
        assert_eq!(line(&h, "reason: "), format!("reason: {}", record.reason));
    }
}

#[test]
fn moving_m_changes_a_linear_variant_exactly_where_the_table_says() {
    let (path, plan) = write_plan();
    let mut h = harness();
    open(&mut h, &path);
    // From the recorded step to the one lowered here.
    h.get_by_label("step").click();
    h.run();
    h.get_by_label("lowered here for M and context").click();
    h.run();
    let (n, k) = (576, 1536); // layers.*.ffn.down
    let table = &plan.caps.table;
    let (inf, _) = table.inflections(n, k);
    let mut seen = vec![];
    for m in [1usize, 8, 128] {
        h.get_by_label("M").set_value_accesskit(m as f64);
        h.run();
        select(&mut h, "layers.11.ffn.down");
        // The table's rule: A below M1, B below M2, else C.
        let want = if m < inf.m1 {
            LinearImpl::Gemv
        } else if m < inf.m2 {
            LinearImpl::FlatGemm
        } else {
            LinearImpl::Gemm
        };
        // The GEMV holds at most gemv_max_m rows: past it A runs as B.
        let want = if want == LinearImpl::Gemv && m > plan.caps.linear.gemv_max_m { LinearImpl::FlatGemm } else { want };
        let got = line(&h, "variant: ");
        let label = match want {
            LinearImpl::Gemv => "A:gemv",
            LinearImpl::FlatGemm => "B:flat_gemm",
            LinearImpl::Gemm => "C:gemm",
        };
        assert!(got.starts_with(&format!("variant: {label}")), "M = {m} (M1 = {}, M2 = {}): {got}", inf.m1, inf.m2);
        assert!(line(&h, "thresholds: ").contains(&format!("M1 = {}, M2 = {}", inf.m1, inf.m2)));
        seen.push(label);
        h.get_by_label("Search nodes:").focus();
        h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        h.key_press(egui::Key::Backspace);
        h.run();
    }
    seen.dedup();
    assert!(seen.len() >= 2, "the three M values should cross at least one threshold: {seen:?}");
}

#[test]
fn bad_files_give_a_message_not_a_crash() {
    let corrupt = temp("corrupt.json");
    std::fs::write(&corrupt, "{\"steps\": [1, 2,").unwrap();
    let wrong_kind = temp("other.json");
    std::fs::write(&wrong_kind, "{\"hello\": 1}").unwrap();
    let bad_plan = temp("bad-plan.json");
    std::fs::write(&bad_plan, "{\"memory\": 1, \"fusions\": [], \"steps\": \"no\"}").unwrap();
    let missing = temp("missing.json");
    // A plan whose model claims a billion layers: refused before the viewer plans from it.
    let (_, mut plan) = write_plan();
    plan.config.as_mut().unwrap().num_layers = 1_000_000_000;
    let huge = temp("huge-plan.json");
    std::fs::write(&huge, serde_json::to_string(&plan).unwrap()).unwrap();
    for (path, says) in [
        (&corrupt, "is not valid JSON"),
        (&wrong_kind, "is not an fdpp plan, trace, bench, kernels, check or profile file"),
        (&bad_plan, "looks like a plan (fdpp inspect --json) but does not read as one"),
        (&missing, "cannot read"),
        (&huge, "`config.num_layers` is 1000000000, beyond fdpp's limit of 1024"),
    ] {
        let mut h = harness();
        open(&mut h, path);
        let m = h.state().message.clone().expect("a message");
        assert!(m.error && m.text.contains(says), "{}: {}", path.display(), m.text);
        // The message is on screen.
        h.get_by_label_contains(says);
    }
}

#[test]
fn a_check_report_shows_the_first_divergence_with_what_each_side_ran() {
    use fdpp_runtime::backend::BackendOptions;
    use fdpp_runtime::check::{self, CheckOptions};
    use fdpp_runtime::model::synthetic::SyntheticWeights;
    // A small Llama on the CPU against itself, one node perturbed on the second.
    let config = ModelConfig {
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        vocab_size: 256,
        ..smollm2()
    };
    let opts = CheckOptions {
        backends: vec![BackendOptions::Cpu, BackendOptions::Cpu],
        steps: 2,
        inject: Some("layers.1.ffn.down".parse().unwrap()),
        ..Default::default()
    };
    let report = check::run("tiny", &config, &SyntheticWeights::new(&config), &[3, 14, 15, 92], &opts, &mut |_| {}).unwrap();
    assert!(!report.passed());
    let path = temp("check.json");
    std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
    let mut h = harness();
    open(&mut h, &path);
    let m = h.state().message.clone().unwrap();
    assert!(!m.error && m.text.contains("a backend disagrees"), "{}", m.text);
    let line = line(&h, "first divergence: ");
    assert!(line.starts_with("first divergence: step 0, node layers.1.ffn.down"), "{line}");
}

#[test]
fn a_tuned_profile_from_the_cache_draws_its_curves_and_thresholds() {
    use fdpp_runtime::backend::microbench::LinearTiming;
    use fdpp_runtime::dataflow::{Inflections, ShapeTuning, TableSource, TilingFrom};
    use fdpp_runtime::lower::kernel::Variant;
    use fdpp_runtime::tune::profile::{DeviceProfile, ProfileKey};
    let caps = BackendCaps { device: "Test GPU".into(), ..BackendCaps::wgpu_builtin() };
    let lin = &caps.linear;
    let narrow = lin.flat_tilings[2];
    let mut table = caps.table.clone();
    table.source = TableSource::Tuned { device: caps.device.clone() };
    let wide = TilingFrom { from_m: 32, tiling: lin.flat_tilings[0] };
    table.shapes.push(ShapeTuning {
        flat: Some(narrow),
        flat_later: vec![wide],
        ..ShapeTuning::new(576, 576, Inflections { m1: 2, m2: 64 })
    });
    let mut linear = vec![];
    for m in [1, 2, 8, 64] {
        for (v, us) in [
            (Variant::Gemv { split_k: false, per_warp: false }, 3.0 * m as f64),
            (Variant::FlatGemm { tiling: narrow }, 5.0 + m as f64),
            (Variant::Gemm { tile: lin.gemm_tile }, 60.0),
        ] {
            if m <= lin.gemv_max_m || !matches!(v, Variant::Gemv { .. }) {
                linear.push(LinearTiming::new(576, 576, m, v, us, 2, 1000.0));
            }
        }
    }
    let profile =
        DeviceProfile { key: ProfileKey::of(&caps), created: "2026-11-30".into(), table, linear, verification: vec![], summary: vec![] };
    let path = temp("profile-cache.json");
    fdpp_runtime::cache::write_checked(&path, &serde_json::to_string(&profile).unwrap()).unwrap();
    let mut h = harness();
    open(&mut h, &path);
    let m = h.state().message.clone().unwrap();
    assert!(!m.error && m.text.contains("tuned profile of Test GPU"), "{}", m.text);
    h.get_by_label_contains("measured 2026-11-30): tuned choice within 5%");
    let title = line(&h, "[N=576, K=576]");
    assert!(
        title.contains("tuned on Test GPU")
            && title.contains("M1 = 2, M2 = 64")
            && title.contains(&format!("B tile {narrow} then {} from M = 32", wide.tiling)),
        "{title}"
    );

    // The same file with one byte changed: refused with the reason.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    let torn = temp("profile-torn.json");
    std::fs::write(&torn, bytes).unwrap();
    let mut h = harness();
    open(&mut h, &torn);
    let m = h.state().message.clone().unwrap();
    assert!(m.error && m.text.contains("checksum"), "{}", m.text);
}
