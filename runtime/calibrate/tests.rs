//! Calibration on its own: the choice of phi on synthetic score distributions, the kernels'
//! flag condition, the store (round trip, corrupt, stale), and a whole run on the CPU with
//! random weights.

use super::choice::{Covers, Fallback, MARGIN, RowRange, choose, flagged, half_width};
use super::store::{self, Lookup};
use super::*;
use crate::lower::kernel::{PhiSource, UnifiedMax};
use crate::model::synthetic::SyntheticWeights;

/// A small deterministic generator in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` rows whose minima lie in `min` and maxima in `max`.
fn rows(n: usize, min: (f32, f32), max: (f32, f32), seed: u64) -> Vec<RowRange> {
    let mut r = Lcg(seed);
    (0..n)
        .map(|_| {
            let lo = min.0 + (min.1 - min.0) * r.next();
            let hi = max.0 + (max.1 - max.0) * r.next();
            RowRange { min: lo.min(hi), max: hi.max(lo) }
        })
        .collect()
}

#[test]
fn the_window_is_as_wide_as_f32_sums_allow_for_the_context() {
    // ln(f32::MAX) = 88.72; 8192 keys: 9.01; |v| <= 65504: 11.09.
    assert_eq!(half_width(8192), 68.0);
    assert_eq!(half_width(131072), 65.0);
    // Few keys: the low side binds (ln(f32::MIN_POSITIVE) = -87.34).
    assert_eq!(half_width(1), 76.0);
    for keys in [1usize, 100, 8192, 131072] {
        let h = half_width(keys) as f64;
        // e^H * keys * 65504 stays finite in f32; e^-H / 65504 stays normal.
        assert!(h.exp() * keys as f64 * 65504.0 < f32::MAX as f64, "{keys}");
        assert!((-h).exp() / 65504.0 > f32::MIN_POSITIVE as f64, "{keys}");
        // Not needlessly narrow: one more nat breaks one of the two.
        let h = h + 1.0;
        assert!(h.exp() * keys as f64 * 65504.0 >= f32::MAX as f64 || (-h).exp() / 65504.0 <= f32::MIN_POSITIVE as f64, "{keys}");
    }
}

#[test]
fn a_row_is_flagged_exactly_when_the_kernels_flag_it() {
    let u = UnifiedMax { phi: 10.0, lo: -60.0, hi: 60.0 };
    // d = s - phi on the boundary is inside (the kernels test d < lo || d > hi).
    assert!(!flagged(RowRange { min: -50.0, max: 70.0 }, u));
    assert!(flagged(RowRange { min: -50.0, max: 70.01 }, u));
    assert!(flagged(RowRange { min: -50.01, max: 0.0 }, u));
    // Low scores flag a row too, not only a high max.
    assert!(flagged(RowRange { min: -80.0, max: 5.0 }, u));
    assert!(!flagged(RowRange { min: 5.0, max: 5.0 }, u));
    let all = [RowRange { min: 0.0, max: 1.0 }, RowRange { min: -60.0, max: 0.0 }, RowRange { min: 0.0, max: 71.0 }];
    assert_eq!(Fallback::count(&all, u), Fallback { rows: 3, flagged: 2 });
    assert!((Fallback::count(&all, u).rate() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(Fallback::default().rate(), 0.0);
}

#[test]
fn phi_sits_at_the_centre_of_the_observed_scores_and_covers_them_with_margin() {
    // Scores of a typical layer: row minima in [-12, -2], row maxima in [15, 31].
    let calib = rows(5000, (-12.0, -2.0), (15.0, 31.0), 1);
    let c = choose(&calib, 8192);
    assert!(!c.synchronised);
    assert_eq!(c.covers, Covers::AllRows);
    let h = half_width(8192);
    assert_eq!((c.unified.lo, c.unified.hi), (-h, h));
    let centre = 0.5 * (c.interval.0 + c.interval.1);
    assert!((c.unified.phi - centre).abs() <= 0.125, "{c:?}");
    assert!((c.unified.phi - 9.5).abs() < 0.6, "{c:?}");
    assert_eq!(Fallback::count(&calib, c.unified).flagged, 0);
    // Held rows from the same distribution: none flagged; rows far above: all flagged.
    assert_eq!(Fallback::count(&rows(2000, (-12.0, -2.0), (15.0, 31.0), 2), c.unified).flagged, 0);
    let far = rows(100, (10.0, 20.0), (c.unified.phi + h + 1.0, c.unified.phi + h + 5.0), 3);
    assert_eq!(Fallback::count(&far, c.unified).flagged, 100);
    // The default phi 0 would not have covered a layer whose scores sit high.
    let high = rows(1000, (40.0, 50.0), (70.0, 90.0), 4);
    assert!(Fallback::count(&high, UnifiedMax::default()).flagged > 900);
    let c = choose(&high, 8192);
    assert_eq!((c.covers, Fallback::count(&high, c.unified).flagged), (Covers::AllRows, 0));
    assert!(c.unified.phi > 60.0, "{c:?}");
}

#[test]
fn a_few_extreme_rows_fall_back_and_the_bulk_places_the_window() {
    let mut calib = rows(10_000, (-10.0, 0.0), (5.0, 25.0), 5);
    // Three rows far above the rest: covering them would leave no margin below.
    calib.extend([RowRange { min: 0.0, max: 200.0 }, RowRange { min: 0.0, max: 210.0 }, RowRange { min: 0.0, max: 220.0 }]);
    let c = choose(&calib, 8192);
    assert_eq!((c.covers, c.synchronised), (Covers::Bulk, false));
    assert_eq!(Fallback::count(&calib, c.unified).flagged, 3);
    // The bulk, [-10, 25], sits inside the window with the margin on both sides.
    assert!(c.unified.phi + c.unified.lo <= -10.0 - MARGIN && c.unified.phi + c.unified.hi >= 25.0 + MARGIN, "{c:?}");
}

#[test]
fn scores_spread_wider_than_any_window_mark_the_layer_synchronised() {
    // The OPT-6.7B case: the bulk of the rows spans more than 2H.
    let calib = rows(5000, (-120.0, -20.0), (20.0, 120.0), 6);
    let c = choose(&calib, 8192);
    assert!(c.synchronised, "{c:?}");
    assert_eq!(c.covers, Covers::Nothing);
    // Whatever phi, a window of 2H leaves many of these rows.
    let best = (-40..=40).map(|p| Fallback::count(&calib, UnifiedMax { phi: p as f32, lo: -68.0, hi: 68.0 }).rate()).fold(1.0, f64::min);
    assert!(best > 0.1, "{best}");
    // No rows (no prompts): the default.
    let c = choose(&[], 8192);
    assert_eq!((c.unified, c.synchronised), (UnifiedMax::default(), false));
}

#[test]
fn rows_hold_the_extremes_of_each_heads_causal_scores() {
    // Two tokens, two query heads sharing one KV head of size 2: rows are [q0 q1 | k | v].
    let a = AttentionInput { layer: 0, dims: HeadDims { heads: 2, kv_heads: 1, head_dim: 2 }, scale: 0.5 };
    #[rustfmt::skip]
    let qkv = [
        1.0, 0.0,  0.0, 2.0,  /* k */ 2.0, 4.0,  /* v */ 9.0, 9.0,
        -1.0, 1.0,  3.0, 0.0,  /* k */ -2.0, 6.0,  /* v */ 9.0, 9.0,
    ];
    let (got, scores) = score_rows(&qkv, 2, a).unwrap();
    assert_eq!(scores, 2 * (1 + 2));
    let r = |min, max| (0, RowRange { min, max });
    // Token 0 sees key 0: head 0: 0.5 * 2 = 1; head 1: 0.5 * 8 = 4.
    // Token 1 sees keys 0, 1: head 0: 0.5 * (-2 + 4) = 1, 0.5 * (2 + 6) = 4; head 1: 3, -3.
    assert_eq!(got, vec![r(1.0, 1.0), r(4.0, 4.0), r(1.0, 4.0), r(-3.0, 3.0)]);
    let mut bad = qkv;
    bad[4] = f32::INFINITY;
    assert!(score_rows(&bad, 2, a).unwrap_err().contains("non-finite"));
    assert!(score_rows(&qkv[..10], 2, a).is_err());
}

#[test]
fn dates_are_utc_days() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(19_723), "2024-01-01");
    assert_eq!(civil_date(20_513), "2026-03-01");
    assert_eq!(today().len(), 10);
}

/// Two layers of SmolLM2's attention shape, small elsewhere.
fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: 64,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_context: 64,
        tie_word_embeddings: true,
        rope_scaling: Default::default(),
        biases: Default::default(),
        notes: vec![],
    }
}

fn calibrate_tiny(prompts: &[Vec<u32>], held: usize) -> Result<Calibration> {
    let c = tiny_config();
    let opts = CalibrateOptions { backend: BackendOptions::Cpu, lowering: LoweringOptions::default(), held };
    run("tiny", "id", &c, &SyntheticWeights::new(&c), prompts, &opts, &mut |_| {})
}

#[test]
fn a_run_on_the_cpu_covers_every_row_of_every_layer_and_measures_the_held_prompts() {
    let prompts: Vec<Vec<u32>> = vec![(0..20).collect(), (5..40).collect(), (1..9).map(|i| i * 7).collect(), (30..50).collect()];
    let cal = calibrate_tiny(&prompts, 1).unwrap();
    assert_eq!((cal.prompts, cal.tokens, cal.held_prompts, cal.held_tokens), (3, 20 + 35 + 8, 1, 20));
    assert_eq!(cal.layers.len(), 2);
    for l in &cal.layers {
        // Every (token, head) row of the calibration prompts, every causal score.
        assert_eq!(l.scores.rows, (20 + 35 + 8) * 4, "layer {}", l.layer);
        assert_eq!(l.scores.scores, (20 * 21 / 2 + 35 * 36 / 2 + 8 * 9 / 2) * 4);
        assert_eq!(l.groups.len(), 2);
        assert_eq!(l.groups.iter().map(|g| g.rows).sum::<usize>(), l.scores.rows);
        assert!(l.scores.min <= l.scores.row_max.p1 && l.scores.row_max.p1 <= l.scores.row_max.p50);
        assert!(l.scores.row_max.p50 <= l.scores.row_max.p99 && l.scores.row_max.p99 <= l.scores.max);
        assert!(!l.synchronised);
        assert_eq!(l.held.map(|h| h.rows), Some(20 * 4));
    }
    let f = cal.held_fallback.unwrap();
    assert_eq!(f.rows, 2 * 20 * 4);
    assert!((0.0..=1.0).contains(&f.rate()));
    assert_eq!(cal.held_fallback_default.map(|f| f.rows), Some(2 * 20 * 4));
    // Its lowering options: phi per layer, from this calibration.
    let opts = cal.lowering(&LoweringOptions::default());
    assert_eq!(opts.unified_max.len(), 2);
    assert_eq!(opts.synchronised, vec![false, false]);
    assert_eq!(opts.phi_source, PhiSource::Calibrated { prompts: 3, date: cal.date.clone() });
    // No held prompts: no rate.
    assert_eq!(calibrate_tiny(&prompts, 0).unwrap().held_fallback, None);
}

#[test]
fn bad_prompt_sets_are_errors_naming_the_problem() {
    let e = calibrate_tiny(&[], 0).unwrap_err().to_string();
    assert!(e.contains("no prompts"), "{e}");
    let e = calibrate_tiny(&[vec![1, 2], vec![]], 0).unwrap_err().to_string();
    assert!(e.contains("prompt 2 has no tokens"), "{e}");
    let e = calibrate_tiny(&[vec![1, 2], vec![3]], 2).unwrap_err().to_string();
    assert!(e.contains("keep at least one prompt"), "{e}");
    let e = calibrate_tiny(&[vec![1; 65]], 0).unwrap_err().to_string();
    assert!(e.contains("65 tokens") && e.contains("prompt 1"), "{e}");
}

fn sample(identity: &str) -> Calibration {
    let u = UnifiedMax { phi: 4.25, lo: -68.0, hi: 68.0 };
    let layer = |layer, synchronised| LayerCalibration {
        layer,
        unified: if synchronised { UnifiedMax::default() } else { u },
        synchronised,
        covers: if synchronised { Covers::Nothing } else { Covers::AllRows },
        interval: (-3.0, 11.5),
        scores: ScoreStats { rows: 90, scores: 900, min: -3.0, max: 11.5, ..Default::default() },
        groups: vec![ScoreStats::default(); 3],
        held: (!synchronised).then_some(Fallback { rows: 18, flagged: 1 }),
    };
    Calibration {
        fdpp_version: FDPP_VERSION.into(),
        model_identity: identity.into(),
        model: "test model".into(),
        backend: "cpu".into(),
        date: "2026-01-02".into(),
        prompts: 12,
        tokens: 300,
        held_prompts: 2,
        held_tokens: 40,
        half_width: 68.0,
        layers: vec![layer(0, false), layer(1, true)],
        held_fallback: Some(Fallback { rows: 18, flagged: 1 }),
        held_fallback_default: Some(Fallback { rows: 36, flagged: 3 }),
    }
}

fn temp(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fdpp-calibrate-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_stored_calibration_reads_back_and_sets_the_lowering() {
    let cache = temp("round-trip");
    let c = sample("abc");
    let path = store::save(&cache, &c).unwrap();
    assert_eq!(path, cache.join("calibration").join("abc.json"));
    assert_eq!(store::lookup(&cache, "abc", 2), Lookup::Found(Box::new(c.clone())));
    let (opts, note) = store::apply_from(&cache, "abc", 2, &LoweringOptions::default());
    assert_eq!(note, None);
    assert_eq!(opts.unified_max, vec![UnifiedMax { phi: 4.25, lo: -68.0, hi: 68.0 }, UnifiedMax::default()]);
    assert_eq!(opts.synchronised, vec![false, true]);
    assert_eq!(opts.phi_source, PhiSource::Calibrated { prompts: 12, date: "2026-01-02".into() });
    // A caller's own phi is kept.
    let own = LoweringOptions { unified_max: vec![UnifiedMax { phi: 1.0, lo: -5.0, hi: 5.0 }], ..Default::default() };
    assert_eq!(store::apply_from(&cache, "abc", 2, &own), (own.clone(), None));
    // Missing: the default and a note.
    let (opts, note) = store::apply_from(&cache, "other", 2, &LoweringOptions::default());
    assert_eq!(opts, LoweringOptions::default());
    assert!(note.unwrap().contains("no calibration"));
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn a_corrupt_calibration_gives_the_default_phi_and_a_note() {
    let cache = temp("corrupt");
    let path = store::save(&cache, &sample("abc")).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let (opts, note) = store::apply_from(&cache, "abc", 2, &LoweringOptions::default());
    assert_eq!(opts, LoweringOptions::default());
    let note = note.unwrap();
    assert!(note.contains("corrupt") && note.contains("phi 0") && !note.contains('\n'), "{note}");
    // Checksummed but not a calibration (another program's JSON): also a note.
    crate::cache::write_checked(&path, "{\"phi\": 3}").unwrap();
    let (opts, note) = store::apply_from(&cache, "abc", 2, &LoweringOptions::default());
    assert_eq!(opts, LoweringOptions::default());
    assert!(note.unwrap().contains("cannot be read"));
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn a_stale_calibration_gives_the_default_phi_and_a_note() {
    let cache = temp("stale");
    // Made by another major version of fdpp.
    let old = Calibration { fdpp_version: "7.0.0".into(), ..sample("abc") };
    store::save(&cache, &old).unwrap();
    let (opts, note) = store::apply_from(&cache, "abc", 2, &LoweringOptions::default());
    assert_eq!(opts, LoweringOptions::default());
    assert!(note.unwrap().contains("fdpp 7.0.0"));
    // Filed under this model's key but made for another model.
    let moved = sample("xyz");
    let text = serde_json::to_string(&moved).unwrap();
    crate::cache::write_checked(&store::path(&cache, "abc"), &text).unwrap();
    let (opts, note) = store::apply_from(&cache, "abc", 2, &LoweringOptions::default());
    assert_eq!(opts, LoweringOptions::default());
    assert!(note.unwrap().contains("another model"));
    // Patch versions (and, past 1.0, minor versions) stay compatible.
    assert!(store::compatible(FDPP_VERSION));
    assert!(!store::compatible("7.0.0"));
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn the_model_identity_changes_with_the_model_not_with_its_notes() {
    let c = tiny_config();
    let id = store::model_identity(&c, &SyntheticWeights::new(&c)).unwrap();
    assert_eq!(id.len(), 64);
    let noted = ModelConfig { notes: vec!["a default was taken".into()], ..c.clone() };
    assert_eq!(store::model_identity(&noted, &SyntheticWeights::new(&c)).unwrap(), id);
    let other = ModelConfig { rope_theta: 500000.0, ..c.clone() };
    assert_ne!(store::model_identity(&other, &SyntheticWeights::new(&other)).unwrap(), id);
    let deeper = ModelConfig { num_layers: 3, ..c };
    assert_ne!(store::model_identity(&deeper, &SyntheticWeights::new(&deeper)).unwrap(), id);
}
