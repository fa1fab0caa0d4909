//! `fdpp tune` end to end on the wgpu backend (lavapipe in CI): a tiny model's shapes are
//! tuned into a profile in a fresh cache folder; later processes lower with it (it survives
//! the restart), and a corrupt profile gives a note and the built-in table, not a failure.
//! Without an adapter the test skips with the reason printed (a failure under
//! FDPP_REQUIRE_GPU=1).
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use fdpp_runtime::backend::{BackendOptions, WgpuOptions};

const BIN: &str = env!("CARGO_BIN_EXE_fdpp");

fn fdpp(cache: &Path, args: &[&str]) -> Output {
    Command::new(BIN).env("FDPP_CACHE", cache).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_tuned_profile_is_stored_reused_and_survives_corruption() {
    if let Err(e) = fdpp_runtime::backend::open(&BackendOptions::Wgpu(WgpuOptions::default())) {
        fdpp_runtime::testing::skip_unavailable(e);
        return;
    }
    let dir = common::temp_dir("tune");
    let cache = dir.join("cache");
    let model = dir.join("tiny.gguf");
    common::write_tiny(&model, &common::Spec::default(), 3);
    let m = model.to_str().unwrap();

    // No profile yet: the plan says so and uses the built-in table.
    let before = fdpp(&cache, &["inspect", m, "--backend", "wgpu", "--weights", "f32", "--m", "2"]);
    assert!(before.status.success(), "{}", text(&before));
    assert!(text(&before).contains("no tuned profile for this device"), "{}", text(&before));
    assert!(text(&before).contains("wgpu defaults"), "{}", text(&before));

    let tuned = fdpp(&cache, &["tune", "--model", m, "--backend", "wgpu", "--weights", "f32", "--grid", "1,2,3,8,16"]);
    let out = text(&tuned);
    assert!(tuned.status.success(), "{out}");
    // The tiny model's linear shapes: QKV, O, gate/up, down, and the tied LM head.
    for shape in ["[N=   128, K=    64]", "[N=    64, K=    64]", "[N=   192, K=    64]", "[N=    64, K=    96]"] {
        assert!(out.contains(shape), "{shape} missing from\n{out}");
    }
    assert!(out.contains("within 5% of the fastest"), "{out}");
    let profiles: Vec<_> = std::fs::read_dir(cache.join("profiles")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert!(profiles[0].file_name().unwrap().to_string_lossy().starts_with("wgpu-f32-"));

    // A new process finds it: every linear layer's reason names the tuned table.
    let after = fdpp(&cache, &["inspect", m, "--backend", "wgpu", "--weights", "f32", "--m", "2"]);
    let plan = text(&after);
    assert!(after.status.success(), "{plan}");
    assert!(!plan.contains("no tuned profile"), "{plan}");
    assert!(plan.contains("dataflow table (tuned on"), "{plan}");
    let linear_rows: Vec<&str> = plan.lines().filter(|l| l.contains(" linear ")).collect();
    assert!(!linear_rows.is_empty() && linear_rows.iter().all(|l| l.contains("tuned on")), "{plan}");
    let shown = fdpp(&cache, &["tune", "--show", "--backend", "wgpu", "--weights", "f32"]);
    assert!(shown.status.success() && text(&shown).contains("every variant measured"), "{}", text(&shown));

    // The tuned table decides, and greedy tokens stay the CPU's.
    let cpu = common::generate_json(BIN, &model, "cpu", ("f32", "f32"), false, "tune me");
    let generated = Command::new(BIN)
        .env("FDPP_CACHE", &cache)
        .args(["generate", "--backend", "wgpu", "--weights", "f32", "--temperature", "0", "--max-tokens", "24", "--json", "--model", m])
        .arg("tune me")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", text(&generated));
    let gpu: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert!(!cpu["ids"].as_array().unwrap().is_empty());
    assert_eq!(gpu["ids"], cpu["ids"], "greedy tokens with the tuned table");

    // One flipped byte: a note, the built-in table, success.
    let mut bytes = std::fs::read(&profiles[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&profiles[0], bytes).unwrap();
    let corrupt = fdpp(&cache, &["inspect", m, "--backend", "wgpu", "--weights", "f32", "--m", "2"]);
    let plan = text(&corrupt);
    assert!(corrupt.status.success(), "{plan}");
    assert!(plan.contains("ignoring the profile") && plan.contains("checksum"), "{plan}");
    assert!(plan.contains("wgpu defaults") && !plan.contains("tuned on"), "{plan}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_cpu_oracle_is_not_tuned() {
    let dir = common::temp_dir("tune-cpu");
    let o = fdpp(&dir, &["tune", "--backend", "cpu", "--shape", "smollm2-135m", "--quick"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("reference oracle"), "{}", text(&o));
    std::fs::remove_dir_all(dir).unwrap();
}
