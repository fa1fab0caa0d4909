//! The lowering on its own, with the backends' built-in profiles: no device, no weights.

use super::caps::{BackendCaps, SplitKvLimits, cuda, wgsl};
use super::*;
use crate::dataflow::{Inflections, ShapeTuning, TilingFrom, TilingRange};
use crate::graph::llama;
use crate::model::ModelConfig;
use crate::tensor::DType;
use crate::trace::NodeRecord;
use kernel::PhiSource;

/// SmolLM2-135M's shapes, two layers.
pub(crate) fn config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 2,
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

fn lowering(caps: BackendCaps) -> Lowering {
    Lowering::new(llama::build(&config()), caps, &LoweringOptions::default()).unwrap()
}

fn decode(m: usize, keys: usize) -> StepShape {
    StepShape { m, out: m, sequences: m, max_keys: keys }
}

fn prefill(m: usize) -> StepShape {
    StepShape { m, out: 1, sequences: 1, max_keys: m }
}

fn record<'a>(records: &'a [NodeRecord], name: &str) -> &'a NodeRecord {
    records.iter().find(|r| r.node == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn variant(r: &NodeRecord) -> Variant {
    match &r.how {
        How::Launch { variant, .. } => *variant,
        How::Fused { into, .. } => panic!("{} is fused into {into}", r.node),
    }
}

#[test]
fn linear_layers_take_a_at_one_token_b_at_eight_and_c_at_128_with_the_wgpu_table() {
    let l = lowering(BackendCaps::wgpu_builtin());
    for (m, want) in [(1, "A:gemv"), (8, "B:flat_gemm"), (128, "C:gemm")] {
        let step = l.lower(&decode(m, 100));
        let records = l.records(&step, None);
        for r in records.iter().filter(|r| r.op == "linear" && r.node != "lm_head") {
            assert_eq!(variant(r).label(), want, "{} at m={m}", r.node);
            let Reason::Dataflow { m: rm, inflections, per_shape: false, .. } = &r.reason else { panic!("{:?}", r.reason) };
            assert_eq!((*rm, *inflections), (m, Inflections { m1: 2, m2: 65 }));
        }
        // The lm_head runs over the output rows (one per sequence here).
        assert_eq!(variant(record(&records, "lm_head")).label(), want);
    }
    // The tiles are the WGSL kernels'.
    let step = l.lower(&decode(8, 100));
    assert_eq!(variant(record(&l.records(&step, None), "layers.0.ffn.down")), Variant::FlatGemm { tiling: wgsl::flat_tilings()[0] });
}

#[test]
fn nodes_fused_on_a_gemv_step_name_the_launch_that_absorbed_them() {
    let l = lowering(BackendCaps::wgpu_builtin());
    let records = l.records(&l.lower(&decode(1, 10)), None);
    let fused_into = |name: &str| match &record(&records, name).how {
        How::Fused { into, stage } => (into.clone(), *stage),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(fused_into("layers.0.attn_norm"), ("layers.0.attn.qkv".into(), fusion::Stage::Prologue));
    assert_eq!(fused_into("layers.0.attn.rope"), ("layers.0.attn.qkv".into(), fusion::Stage::Epilogue));
    assert_eq!(fused_into("layers.1.ffn.swiglu"), ("layers.1.ffn.gate_up".into(), fusion::Stage::Epilogue));
    assert_eq!(fused_into("layers.1.attn.residual"), ("layers.1.attn.o".into(), fusion::Stage::Epilogue));
    assert_eq!(fused_into("final_norm"), ("lm_head".into(), fusion::Stage::Prologue));
    // The absorbing launch lists them and carries the prologue and epilogue.
    let How::Launch { absorbs, params, .. } = &record(&records, "layers.0.attn.qkv").how else { panic!() };
    assert_eq!(absorbs, &["layers.0.attn_norm".to_string(), "layers.0.attn.rope".to_string()]);
    let Params::Linear { prologue: Some(kernel::Prologue::RmsNorm { .. }), epilogue: Epilogue::Rope { .. }, .. } = params else {
        panic!("{params:?}")
    };
    // Five launches per layer (qkv, attention, o, gate_up, down), plus the embedding,
    // select_rows and the lm_head.
    let step = l.lower(&decode(1, 10));
    assert_eq!(step.launches.len(), 5 * 2 + 3);

    // On a flat-GEMM step only the always-on fusions remain: the norms run their own launch.
    let records = l.records(&l.lower(&decode(8, 10)), None);
    assert_eq!(variant(record(&records, "layers.0.attn_norm")), Variant::RmsNorm);
    assert!(matches!(record(&records, "layers.0.ffn.residual").how, How::Fused { .. }));
}

#[test]
fn where_the_flat_gemm_has_the_gemv_fusions_b_steps_fuse_too_and_c_steps_do_not() {
    let l = lowering(BackendCaps::cuda_builtin(crate::tensor::DType::F16));
    let step = l.lower(&decode(8, 10));
    let records = l.records(&step, None);
    let qkv = record(&records, "layers.0.attn.qkv");
    assert_eq!(variant(qkv).label(), "B:flat_gemm");
    let How::Launch { absorbs, params, .. } = &qkv.how else { panic!() };
    assert_eq!(absorbs, &["layers.0.attn_norm".to_string(), "layers.0.attn.rope".to_string()]);
    assert!(matches!(params, Params::Linear { prologue: Some(_), epilogue: Epilogue::Rope { .. }, .. }), "{params:?}");
    assert!(matches!(record(&records, "layers.1.ffn.swiglu").how, How::Fused { .. }));
    assert_eq!(
        record(&records, "layers.0.attn_norm").reason.to_string(),
        "done in the prologue of layers.0.attn.qkv (on GEMV and flat GEMM steps)"
    );
    // As many launches as the GEMV step.
    assert_eq!(step.launches.len(), l.lower(&decode(1, 10)).launches.len());
    // A prefill step of C (GEMM) runs the norms, RoPE and SwiGLU on their own.
    let records = l.records(&l.lower(&prefill(512)), None);
    assert_eq!(variant(record(&records, "layers.0.attn.qkv")).label(), "C:gemm");
    assert_eq!(variant(record(&records, "layers.0.attn_norm")), Variant::RmsNorm);
    assert_eq!(variant(record(&records, "layers.1.ffn.swiglu")), Variant::SwiGlu);
}

#[test]
fn the_gemv_row_limit_and_split_k_are_decided_here_with_their_reason() {
    let mut caps = BackendCaps::wgpu_builtin();
    // A table that would give A up to 15 rows: the GEMV holds 8, so 9..15 run B.
    caps.table.shapes.push(ShapeTuning::new(576, 1536, Inflections { m1: 16, m2: 64 }));
    let l = lowering(caps);
    let r = l.records(&l.lower(&decode(9, 10)), None);
    let down = record(&r, "layers.0.ffn.down");
    assert!(matches!(variant(down), Variant::FlatGemm { .. }));
    let Reason::Dataflow { gemv_max_m: Some(8), per_shape: true, .. } = down.reason else { panic!("{:?}", down.reason) };
    assert!(down.reason.to_string().contains("at most 8 rows"), "{}", down.reason);

    // K = 11008 (Llama-2-7B's down projection) splits K on the GEMV; K = 4096 does not.
    let c = ModelConfig { hidden_size: 4096, intermediate_size: 11008, num_heads: 32, num_kv_heads: 32, head_dim: 128, ..config() };
    let l = Lowering::new(llama::build(&c), BackendCaps::wgpu_builtin(), &LoweringOptions::default()).unwrap();
    let r = l.records(&l.lower(&decode(1, 10)), None);
    assert_eq!(variant(record(&r, "layers.0.ffn.down")), Variant::Gemv { split_k: true, per_warp: false });
    assert_eq!(variant(record(&r, "layers.0.attn.o")), Variant::Gemv { split_k: false, per_warp: false });
}

#[test]
fn the_cuda_gemv_gives_each_warp_its_columns_where_its_lanes_hold_all_of_k() {
    // SmolLM2's K = 576 fits the lanes' registers; its down projection's K = 1536 and
    // Llama-2-7B's K = 4096 do not.
    let l = lowering(BackendCaps::cuda_builtin(DType::F16));
    let r = l.records(&l.lower(&decode(1, 10)), None);
    for name in ["layers.0.attn.qkv", "layers.0.attn.o", "layers.0.ffn.gate_up"] {
        let rec = record(&r, name);
        assert_eq!(variant(rec), Variant::Gemv { split_k: false, per_warp: true }, "{name}");
        assert!(rec.reason.to_string().contains(&format!("<= {}: a warp per column group", cuda::GW_WARP_MAX_K)), "{}", rec.reason);
    }
    assert_eq!(variant(record(&r, "layers.0.ffn.down")), Variant::Gemv { split_k: false, per_warp: false });
    let c = ModelConfig { hidden_size: 4096, intermediate_size: 11008, num_heads: 32, num_kv_heads: 32, head_dim: 128, ..config() };
    let l = Lowering::new(llama::build(&c), BackendCaps::cuda_builtin(DType::F16), &LoweringOptions::default()).unwrap();
    let r = l.records(&l.lower(&decode(1, 10)), None);
    let qkv = record(&r, "layers.0.attn.qkv");
    assert_eq!(variant(qkv), Variant::Gemv { split_k: false, per_warp: false });
    assert!(!qkv.reason.to_string().contains("warp per column group"), "{}", qkv.reason);
}

#[test]
fn b_runs_the_shapes_tiling_for_the_range_of_m_and_says_so() {
    let mut caps = BackendCaps::wgpu_builtin();
    let tilings = wgsl::flat_tilings();
    let later = vec![TilingFrom { from_m: 24, tiling: tilings[0] }, TilingFrom { from_m: 100, tiling: tilings[1] }];
    caps.table.shapes.push(ShapeTuning {
        flat: Some(tilings[2]),
        flat_later: later,
        ..ShapeTuning::new(576, 1536, Inflections { m1: 2, m2: 200 })
    });
    let l = lowering(caps);
    let down = |m| {
        let r = l.records(&l.lower(&decode(m, 10)), None);
        let down = record(&r, "layers.0.ffn.down");
        (variant(down), down.reason.clone())
    };
    for (m, tiling, range, text) in [
        (23, tilings[2], TilingRange { from_m: 1, until_m: Some(24), tilings: 3 }, "M 1..=23"),
        (24, tilings[0], TilingRange { from_m: 24, until_m: Some(100), tilings: 3 }, "M 24..=99"),
        (99, tilings[0], TilingRange { from_m: 24, until_m: Some(100), tilings: 3 }, "M 24..=99"),
        (199, tilings[1], TilingRange { from_m: 100, until_m: None, tilings: 3 }, "M >= 100"),
    ] {
        let (v, reason) = down(m);
        assert_eq!(v, Variant::FlatGemm { tiling }, "M={m}");
        let Reason::Dataflow { flat_range: Some(r), tuned_params: true, .. } = reason else { panic!("{reason:?}") };
        assert_eq!(r, range, "M={m}");
        assert!(reason.to_string().ends_with(&format!("B's tiling for {text} on this shape (one of its 3 over M)")), "{reason}");
    }
    // A and C name no tiling.
    let (a, reason) = down(1);
    assert!(matches!(a, Variant::Gemv { .. }) && matches!(reason, Reason::Dataflow { flat_range: None, .. }), "{reason:?}");
    let (c, reason) = down(200);
    assert!(matches!(c, Variant::Gemm { .. }) && !reason.to_string().contains("tiling"), "{reason}");
    // Other shapes keep the backend's tiling.
    let r = l.records(&l.lower(&decode(64, 10)), None);
    assert_eq!(variant(record(&r, "layers.0.attn.o")), Variant::FlatGemm { tiling: tilings[0] });
    assert!(matches!(record(&r, "layers.0.attn.o").reason, Reason::Dataflow { flat_range: None, tuned_params: false, .. }));
}

/// Where the wgpu device has matrix units and f16 weights, B runs on them by default where
/// K is whole 16-deep operands and not long, and says so; elsewhere the first SIMT tiling.
#[test]
fn b_runs_on_matrix_units_where_the_device_offers_them_and_k_fits() {
    let mut caps = BackendCaps::wgpu_builtin();
    caps.cooperative_matrix = true;
    caps.linear.flat_matrix = Some(wgsl::matrix_tiling());
    caps.linear.flat_tilings.push(wgsl::flat_matrix());
    let long = wgsl::FLAT_MATRIX_MAX_K + 16;
    for (inner, want) in [(1536, wgsl::flat_matrix()), (1544, wgsl::flat_tilings()[0]), (long, wgsl::flat_tilings()[0])] {
        let c = ModelConfig { intermediate_size: inner, ..config() };
        let l = Lowering::new(llama::build(&c), caps.clone(), &LoweringOptions::default()).unwrap();
        let records = l.records(&l.lower(&decode(8, 100)), None);
        let rec = record(&records, "layers.0.ffn.down");
        assert_eq!(variant(rec), Variant::FlatGemm { tiling: want }, "K = {inner}");
        let on_matrix = rec.reason.to_string().ends_with(&format!("B on the matrix units: K={inner} <= 2048, in whole 16-deep operands"));
        assert_eq!(on_matrix, want == wgsl::flat_matrix(), "K = {inner}: {}", rec.reason);
    }
    // Neither the tuner's candidates nor a table's entry give it a K it cannot take.
    let candidates = crate::backend::microbench::linear_candidates(&caps.linear, 1544, 8);
    assert!(!candidates.contains(&Variant::FlatGemm { tiling: wgsl::flat_matrix() }), "{candidates:?}");
    assert!(
        crate::backend::microbench::linear_candidates(&caps.linear, 1536, 8).contains(&Variant::FlatGemm { tiling: wgsl::flat_matrix() })
    );
    let mut named = caps.clone();
    named.table.shapes.push(ShapeTuning { flat: Some(wgsl::flat_matrix()), ..ShapeTuning::new(576, 1544, Inflections { m1: 2, m2: 65 }) });
    let c = ModelConfig { intermediate_size: 1544, ..config() };
    let l = Lowering::new(llama::build(&c), named, &LoweringOptions::default()).unwrap();
    assert_eq!(
        variant(record(&l.records(&l.lower(&decode(8, 100)), None), "layers.0.ffn.down")),
        Variant::FlatGemm { tiling: wgsl::flat_tilings()[0] }
    );
    // The built-in profile (no matrix units) keeps the SIMT tiling.
    let l = lowering(BackendCaps::wgpu_builtin());
    assert_eq!(
        variant(record(&l.records(&l.lower(&decode(8, 100)), None), "layers.0.attn.o")),
        Variant::FlatGemm { tiling: wgsl::flat_tilings()[0] }
    );
}

#[test]
fn untuned_b_splits_long_k_over_more_warps_on_few_columns_and_says_so() {
    use super::caps::cuda;
    // Llama-2-7B's shapes on the CUDA profile at M = 8: O [4096, 4096] and down
    // [4096, 11008] take the long-K tiling, QKV (N = 12288) and gate/up (22016) the first one.
    let c = ModelConfig { hidden_size: 4096, intermediate_size: 11008, num_heads: 32, num_kv_heads: 32, head_dim: 128, ..config() };
    let long_k = cuda::flat_long_k();
    let first = cuda::flat_tilings()[0];
    assert_ne!(long_k.tiling, first);
    let at = |m: usize, caps: BackendCaps, c: &ModelConfig, node: &str| {
        let l = Lowering::new(llama::build(c), caps, &LoweringOptions::default()).unwrap();
        let r = l.records(&l.lower(&decode(m, 10)), None);
        let rec = record(&r, node);
        (variant(rec), rec.reason.clone())
    };
    let tiling_of = |caps: BackendCaps, c: &ModelConfig, node: &str| at(8, caps, c, node);
    for (node, n) in [("layers.0.attn.o", 4096), ("layers.0.ffn.down", 4096)] {
        let (v, reason) = tiling_of(BackendCaps::cuda_builtin(DType::F16), &c, node);
        assert_eq!(v, Variant::FlatGemm { tiling: long_k.tiling }, "{node}");
        assert!(reason.to_string().ends_with(&format!("is long for N={n} columns: B's long-K tiling")), "{node}: {reason}");
        assert!(matches!(reason, Reason::Dataflow { long_k: true, .. }), "{node}: {reason:?}");
    }
    for node in ["layers.0.attn.qkv", "layers.0.ffn.gate_up"] {
        let (v, reason) = tiling_of(BackendCaps::cuda_builtin(DType::F16), &c, node);
        assert_eq!(v, Variant::FlatGemm { tiling: first }, "{node}");
        assert!(matches!(reason, Reason::Dataflow { long_k: false, .. }), "{node}: {reason:?}");
    }
    // At one row, below M1, the long-K tiling takes the GEMV's place and says why; the
    // wide shapes keep the GEMV.
    let (v, reason) = at(1, BackendCaps::cuda_builtin(DType::F16), &c, "layers.0.attn.o");
    assert_eq!(v, Variant::FlatGemm { tiling: long_k.tiling });
    assert!(reason.to_string().ends_with("B's long-K tiling, which reads faster than the GEMV from one row on"), "{reason}");
    assert!(matches!(at(1, BackendCaps::cuda_builtin(DType::F16), &c, "layers.0.attn.qkv").0, Variant::Gemv { .. }));
    // SmolLM2's LM head (49152 columns over K = 576): B's wide tiling from one row on, and
    // at B's rows; its other layers keep the GEMV at one row and the first tiling at eight.
    let wide = cuda::flat_wide();
    for m in [1, 8] {
        let (v, reason) = at(m, BackendCaps::cuda_builtin(DType::F16), &config(), "lm_head");
        assert_eq!(v, Variant::FlatGemm { tiling: wide.tiling }, "M={m}");
        assert!(reason.to_string().contains("N=49152 columns over a short K=576: B's wide tiling"), "{reason}");
        assert!(matches!(reason, Reason::Dataflow { wide: true, long_k: false, .. }), "{reason:?}");
    }
    assert!(matches!(at(1, BackendCaps::cuda_builtin(DType::F16), &config(), "layers.0.ffn.gate_up").0, Variant::Gemv { .. }));
    // The wgpu kernels have no such rule.
    assert!(matches!(at(1, BackendCaps::wgpu_builtin(), &config(), "lm_head").0, Variant::Gemv { .. }));
    // SmolLM2's short K keeps the first tiling.
    let (v, _) = tiling_of(BackendCaps::cuda_builtin(DType::F16), &config(), "layers.0.attn.o");
    assert_eq!(v, Variant::FlatGemm { tiling: first });
    // A tiling the table names for the shape wins over the rule.
    let mut caps = BackendCaps::cuda_builtin(DType::F16);
    caps.table.shapes.push(ShapeTuning { flat: Some(first), ..ShapeTuning::new(4096, 4096, Inflections { m1: 2, m2: 64 }) });
    let (v, reason) = tiling_of(caps.clone(), &c, "layers.0.attn.o");
    assert_eq!(v, Variant::FlatGemm { tiling: first });
    assert!(matches!(reason, Reason::Dataflow { long_k: false, tuned_params: true, .. }), "{reason:?}");
    // And its M1: the GEMV at one row.
    assert!(matches!(at(1, caps, &c, "layers.0.attn.o").0, Variant::Gemv { .. }));
}

#[test]
fn split_kv_chunks_cover_the_keys_in_at_most_64_chunks() {
    let limits = SplitKvLimits {
        max_chunks: 64,
        min_chunk_keys: 16,
        max_rows: 64,
        target_blocks: None,
        single_max_keys: None,
        single_min_rows_heads: 0,
        single_narrow_min_rows_heads: None,
    };
    for keys in [1, 15, 16, 17, 512, 1024, 1025, 4096, 8192, 8193, 100_000] {
        let (chunks, per_chunk) = limits.chunking(keys, 32);
        assert!(chunks <= 64 && per_chunk >= 16 && per_chunk.is_power_of_two(), "{keys}: {chunks} x {per_chunk}");
        assert!(chunks * per_chunk >= keys && (chunks - 1) * per_chunk < keys, "{keys}: {chunks} x {per_chunk}");
    }
}

#[test]
fn split_kv_with_a_device_size_cuts_fewer_longer_chunks_as_rows_and_heads_grow() {
    let limits = SplitKvLimits {
        max_chunks: 32,
        min_chunk_keys: 32,
        max_rows: 64,
        target_blocks: Some(528),
        single_max_keys: None,
        single_min_rows_heads: 0,
        single_narrow_min_rows_heads: None,
    };
    for keys in [1, 31, 32, 33, 512, 4096, 4097, 4160, 100_000] {
        for rows_heads in [1, 9, 32, 72, 256, 2048] {
            let (chunks, per_chunk) = limits.chunking(keys, rows_heads);
            let what = format!("{keys} keys, {rows_heads} rows x heads: {chunks} x {per_chunk}");
            assert!(chunks <= 32 && per_chunk % 32 == 0, "{what}");
            assert!(chunks * per_chunk >= keys && (chunks - 1) * per_chunk < keys, "{what}");
            // No more blocks than the target asks for, unless one chunk per row already passes it.
            assert!(chunks * rows_heads < 528 + rows_heads || chunks == 1, "{what}");
        }
    }
    // Llama-2-7B's 32 heads: one row at 4096 keys fills 528 blocks with 16 chunks of 256;
    // eight rows at 512 keys with 3 chunks of 192, not 16 of 32 (4096 blocks of one tile).
    assert_eq!(limits.chunking(4096, 32), (16, 256));
    assert_eq!(limits.chunking(4160, 32), (17, 256));
    assert_eq!(limits.chunking(512, 8 * 32), (3, 192));
    assert_eq!(limits.chunking(512, 64 * 32), (1, 512));
    // One chunk per (row, head) up to 768 keys over 66 pairs or more; the rule above elsewhere.
    let single = SplitKvLimits { single_max_keys: Some(768), single_min_rows_heads: 66, ..limits };
    assert_eq!(single.chunking(1, 72), (1, 32));
    assert_eq!(single.chunking(512, 72), (1, 512));
    assert_eq!(single.chunking(700, 8 * 32), (1, 704));
    assert_eq!(single.chunking(768, 66), (1, 768));
    for (keys, rows_heads) in [(512, 65), (512, 32), (769, 72), (4096, 256)] {
        assert!(!single.single(keys, rows_heads));
        assert_eq!(single.chunking(keys, rows_heads), limits.chunking(keys, rows_heads), "{keys} keys, {rows_heads} pairs");
    }
    // Narrow one-chunk blocks from more pairs than SMs, and only where the step is one chunk.
    let narrow = SplitKvLimits { single_narrow_min_rows_heads: Some(133), ..single };
    assert!(!single.single_narrow(512, 256));
    assert!(!narrow.single_narrow(512, 132) && narrow.single_narrow(512, 133) && narrow.single_narrow(768, 8 * 32));
    assert!(!narrow.single_narrow(769, 256));
}

#[test]
fn attention_splits_kv_on_decode_steps_only() {
    let l = lowering(BackendCaps::wgpu_builtin());
    let att = |shape: StepShape| {
        let step = l.lower(&shape);
        let r = l.records(&step, None);
        let a = record(&r, "layers.1.attn.sdpa").clone();
        (variant(&a), a.reason, step.split_kv)
    };
    // 4 rows x 9 heads = 36 pairs aim at 1024 workgroups: 29 chunks of 69 keys, rounded up
    // to the 16-key tile: 25 chunks of 80.
    let (v, reason, split) = att(decode(4, 2000));
    assert_eq!(split, Some((25, 80)));
    assert!(matches!(v, Variant::SplitKvAttention { chunks: 25, chunk_keys: 80, .. }), "{v:?}");
    assert!(matches!(reason, Reason::SplitKv { sequences: 4, single: false, .. }));
    // Short contexts too are cut (no one-chunk rule on wgpu): 29 chunks of 35 keys, rounded
    // up to the tile: 21 of 48.
    let (_, reason, split) = att(decode(4, 1000));
    assert_eq!(split, Some((21, 48)));
    assert!(matches!(reason, Reason::SplitKv { single: false, .. }));
    let (v, reason, split) = att(prefill(40));
    assert_eq!((v, split), (Variant::OnlineAttention, None));
    assert!(matches!(reason, Reason::NotDecode { tokens: 40, sequences: 1 }));
    let (v, reason, _) = att(decode(65, 10));
    assert_eq!(v, Variant::OnlineAttention);
    assert!(matches!(reason, Reason::TooManyRows { rows: 65, max: 64 }));
    // The CPU oracle has one attention kernel.
    let cpu = lowering(BackendCaps::cpu());
    let r = cpu.records(&cpu.lower(&decode(1, 10)), None);
    assert_eq!(variant(record(&r, "layers.0.attn.sdpa")), Variant::TwoPassAttention);
    assert_eq!(record(&r, "layers.0.attn.sdpa").reason, Reason::NoSplitKv);
}

#[test]
fn cuda_decodes_short_contexts_of_many_rows_as_one_chunk_per_row_and_head_and_says_so() {
    let l = lowering(BackendCaps::cuda_builtin(crate::tensor::DType::F16));
    let att = |shape: StepShape| {
        let r = l.records(&l.lower(&shape), None);
        let a = record(&r, "layers.1.attn.sdpa").clone();
        (variant(&a), a.reason)
    };
    // 8 rows x 9 heads = 72 pairs (>= 132 / 2) at 600 keys: one chunk each.
    let (v, reason) = att(decode(8, 600));
    assert!(matches!(v, Variant::SplitKvAttention { chunks: 1, chunk_keys: 608, .. }), "{v:?}");
    assert!(matches!(reason, Reason::SplitKv { single: true, .. }), "{reason:?}");
    assert!(reason.to_string().contains("at most 768 keys over at least 66 (row, head) pairs: one chunk per pair"), "{reason}");
    assert!(matches!(v, Variant::SplitKvAttention { narrow: false, .. }) && !reason.to_string().contains("narrow"), "{reason}");
    // 16 rows x 9 heads = 144 pairs, more than the 132 SMs: narrow blocks, two to an SM.
    let (v, reason) = att(decode(16, 600));
    assert!(matches!(v, Variant::SplitKvAttention { chunks: 1, narrow: true, .. }), "{v:?}");
    assert!(matches!(reason, Reason::SplitKv { single: true, narrow: true, .. }), "{reason:?}");
    assert!(reason.to_string().contains("narrow blocks, two to an SM: at least 133 pairs"), "{reason}");
    assert!(v.to_string().contains("narrow blocks"), "{v}");
    // One row (9 pairs), or more keys: chunks that fill the device, and the reason says that.
    for (rows, keys) in [(1, 600), (8, 800)] {
        let (v, reason) = att(decode(rows, keys));
        assert!(matches!(v, Variant::SplitKvAttention { chunks: 2.., .. }), "{rows} rows, {keys} keys: {v:?}");
        assert!(matches!(reason, Reason::SplitKv { single: false, .. }), "{reason:?}");
        assert!(reason.to_string().contains("as many chunks as fill about 528 blocks"), "{reason}");
    }
}

#[test]
fn prefill_attention_runs_on_tensor_cores_for_the_head_sizes_the_kernel_takes() {
    let sdpa = |caps: BackendCaps, head_dim: usize, shape: StepShape| {
        let mut c = config();
        c.head_dim = head_dim;
        let l = Lowering::new(llama::build(&c), caps, &LoweringOptions::default()).unwrap();
        let r = l.records(&l.lower(&shape), None);
        let a = record(&r, "layers.0.attn.sdpa").clone();
        (variant(&a), a.reason)
    };
    let cuda = BackendCaps::cuda_builtin(crate::tensor::DType::F16);
    let flash = cuda.attention.flash.clone().unwrap();
    let tiles = Variant::FlashAttention { rows: flash.rows, keys: flash.keys };
    for &hd in &flash.head_dims {
        assert_eq!(sdpa(cuda.clone(), hd, prefill(40)), (tiles, Reason::NotDecode { tokens: 40, sequences: 1 }));
        // Decode steps keep the split-KV kernel; steps of more rows than it takes use the tiles.
        assert!(matches!(sdpa(cuda.clone(), hd, decode(1, 100)).0, Variant::SplitKvAttention { .. }));
        assert_eq!(sdpa(cuda.clone(), hd, decode(65, 100)), (tiles, Reason::TooManyRows { rows: 65, max: 64 }));
    }
    let (v, reason) = sdpa(cuda.clone(), 80, prefill(40));
    assert_eq!(v, Variant::OnlineAttention);
    assert_eq!(reason, Reason::FlashHeadDim { head_dim: 80, supported: flash.head_dims.clone() });
    // f32 weights keep an f32 KV cache: no tensor-core attention.
    assert_eq!(sdpa(BackendCaps::cuda_builtin(crate::tensor::DType::F32), 64, prefill(40)).0, Variant::OnlineAttention);
    use crate::lower::caps::wgsl;
    // A kernel whose tiles hold one sequence (wgpu's on cooperative matrices) runs on
    // single-sequence steps only.
    let mut wgpu = BackendCaps::wgpu_builtin();
    wgpu.attention.flash = Some(wgsl::matrix_attention());
    let matrix = Variant::FlashAttention { rows: wgsl::MATRIX_ATTN_ROWS, keys: wgsl::MATRIX_ATTN_KEYS };
    assert_eq!(sdpa(wgpu.clone(), 64, prefill(40)).0, matrix);
    let two = StepShape { m: 40, out: 2, sequences: 2, max_keys: 20 };
    assert_eq!(sdpa(wgpu.clone(), 64, two), (Variant::OnlineAttention, Reason::FlashOneSequence { sequences: 2 }));
}

#[test]
fn the_cpu_profile_fuses_only_what_its_kernels_do() {
    let l = lowering(BackendCaps::cpu());
    assert!(l.fusions.iter().all(|f| f.when(&l.caps.fusions) == fusion::When::Always), "{:?}", l.fusions);
    let records = l.records(&l.lower(&decode(1, 10)), None);
    assert_eq!(variant(record(&records, "layers.0.attn_norm")), Variant::RmsNorm);
    assert!(matches!(record(&records, "layers.0.attn.residual").how, How::Fused { .. }));
    let Params::Rope { kv_write: true, .. } = l.templates.iter().find(|t| matches!(t.params, Params::Rope { .. })).unwrap().params else {
        panic!()
    };
}

#[test]
fn large_weights_are_chunked_by_the_binding_limit_and_lose_their_gemv_fusions() {
    let mut caps = BackendCaps::wgpu_builtin();
    caps.max_binding_bytes = 1 << 20;
    let l = lowering(caps);
    // The embedding (49152 x 576 x 2 bytes) in chunks of 910 rows; gate_up 3072 x 576 too.
    let embed = &l.weights[0];
    assert_eq!(embed.chunks.len(), 49152usize.div_ceil((1 << 20) / (576 * 2)));
    assert!(embed.chunks.iter().all(|c| c.len() * 576 * 2 <= 1 << 20));
    assert_eq!(embed.chunks.last().unwrap().end, 49152);
    let records = l.records(&l.lower(&decode(1, 10)), None);
    assert_eq!(variant(record(&records, "layers.0.ffn_norm")), Variant::RmsNorm);
    let How::Launch { launches, .. } = record(&records, "layers.0.ffn.gate_up").how else { panic!() };
    assert_eq!(launches, (3072 * 576 * 2usize).div_ceil(1 << 20));
    // A row larger than a binding cannot be planned.
    let mut caps = BackendCaps::wgpu_builtin();
    caps.max_binding_bytes = 1000;
    assert!(Lowering::new(llama::build(&config()), caps, &LoweringOptions::default()).is_err());
}

#[test]
fn no_launch_reads_the_buffer_it_writes() {
    for caps in [BackendCaps::wgpu_builtin(), BackendCaps::cpu()] {
        let l = lowering(caps);
        for t in &l.templates {
            assert_ne!(t.io.x, Some(t.io.y), "{}", l.graph.nodes[t.node].name);
            assert_ne!(t.io.x2, Some(t.io.y), "{}", l.graph.nodes[t.node].name);
        }
    }
}

#[test]
fn plans_serialise_for_the_viewer() {
    let l = lowering(BackendCaps::wgpu_builtin());
    let step = l.lower(&decode(1, 10));
    let records = l.records(&step, None);
    let text = serde_json::to_string(&records).unwrap();
    let back: Vec<NodeRecord> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, records);
    let caps: BackendCaps = serde_json::from_str(&serde_json::to_string(&l.caps).unwrap()).unwrap();
    assert_eq!(caps, l.caps);
}

#[test]
fn a_synchronised_layer_runs_the_online_softmax_and_the_others_split_kv_with_their_calibrated_phi() {
    let phi = UnifiedMax { phi: 5.25, lo: -68.0, hi: 68.0 };
    let source = PhiSource::Calibrated { prompts: 12, date: "2026-01-02".into() };
    let opts = LoweringOptions {
        unified_max: vec![phi, UnifiedMax::default()],
        synchronised: vec![false, true],
        phi_source: source.clone(),
        ..Default::default()
    };
    for caps in [BackendCaps::wgpu_builtin(), BackendCaps::cuda_builtin(crate::tensor::DType::F16)] {
        let l = Lowering::new(llama::build(&config()), caps, &opts).unwrap();
        let step = l.lower(&decode(1, 300));
        let r = l.records(&step, None);
        let split = record(&r, "layers.0.attn.sdpa");
        assert!(matches!(variant(split), Variant::SplitKvAttention { unified, .. } if unified == phi), "{:?}", split.how);
        assert!(matches!(&split.reason, Reason::SplitKv { phi: 5.25, source: s, .. } if *s == source), "{:?}", split.reason);
        let text = split.reason.to_string();
        assert!(text.contains("phi 5.25") && text.contains("calibrated on 12 prompts on 2026-01-02"), "{text}");
        // The synchronised layer: the general kernel (not the tensor-core one), and why.
        let sync = record(&r, "layers.1.attn.sdpa");
        assert_eq!(variant(sync), Variant::OnlineAttention);
        assert_eq!(sync.reason, Reason::Synchronised { layer: 1, source: source.clone() });
        assert!(sync.reason.to_string().contains("layer 1's scores spread wider"), "{}", sync.reason);
        // The step's chunking is the split-KV layer's.
        assert!(step.split_kv.is_some());
        // Prefill is not split-KV for either layer: unchanged.
        let r = l.records(&l.lower(&prefill(40)), None);
        assert!(matches!(record(&r, "layers.1.attn.sdpa").reason, Reason::NotDecode { .. } | Reason::FlashHeadDim { .. }));
    }
    // Without a calibration the reason says phi is the default.
    let l = lowering(BackendCaps::wgpu_builtin());
    let r = l.records(&l.lower(&decode(1, 300)), None);
    let text = record(&r, "layers.1.attn.sdpa").reason.to_string();
    assert!(text.ends_with("phi 0 (default, not calibrated: fdpp calibrate)"), "{text}");
    // A flag per layer or none.
    let bad = LoweringOptions { synchronised: vec![true], ..Default::default() };
    assert!(Lowering::new(llama::build(&config()), BackendCaps::wgpu_builtin(), &bad).is_err());
}

/// What the tuner times for a layer and variant is what a step that runs that variant
/// launches for the layer and the nodes its fusions would absorb: checked against `lower`
/// on steps where A, B and C run, with and without B's fusions.
#[test]
fn a_linear_layers_launches_per_variant_are_the_steps_own() {
    for caps in [BackendCaps::wgpu_builtin(), BackendCaps::cuda_builtin(DType::F16)] {
        let l = lowering(caps.clone());
        for shape in [decode(1, 100), decode(8, 100), prefill(300)] {
            let step = l.lower(&shape);
            for (pi, &ni) in l.order.iter().enumerate() {
                let Op::Linear { n, k, .. } = l.graph.nodes[ni].op else { continue };
                if l.order[..pi].iter().any(|&o| matches!(l.graph.nodes[o].op, Op::Linear { n: n2, k: k2, .. } if (n2, k2) == (n, k))) {
                    continue; // the first layer of each shape
                }
                let NodeStep::Runs { launches, .. } = &step.nodes[pi] else { panic!("linear layers run") };
                let variant = step.launches[launches.start].variant;
                // The layer's launches and those of the nodes its optional fusions name.
                let related: Vec<NodeId> = l
                    .fusions
                    .iter()
                    .filter(|f| f.host() == ni && f.when(&caps.fusions) != fusion::When::Always)
                    .filter_map(|f| f.absorbed())
                    .chain([ni])
                    .collect();
                let want: Vec<(Params, Variant)> = l
                    .order
                    .iter()
                    .zip(&step.nodes)
                    .filter(|(o, _)| related.contains(o))
                    .flat_map(|(_, s)| match s {
                        NodeStep::Runs { launches, .. } => step.launches[launches.clone()].to_vec(),
                        NodeStep::Fused { .. } => vec![],
                    })
                    .map(|launch| (l.templates[launch.template].params, launch.variant))
                    .collect();
                let got: Vec<(Params, Variant)> =
                    l.linear_launches(n, k, variant).unwrap().into_iter().map(|(t, v)| (t.params, v)).collect();
                assert_eq!(got, want, "{} [{n}, {k}] on {shape:?} with {variant}", caps.backend);
            }
        }
        // C never fuses the norm: gate/up's plain product then runs between an RMSNorm and a SwiGLU.
        let c = Variant::Gemm { tile: caps.linear.gemm_tile };
        let names: Vec<&str> = l.linear_launches(3072, 576, c).unwrap().iter().map(|(_, v)| v.label()).collect();
        assert_eq!(names, ["rms_norm", "C:gemm", "swiglu"], "{}", caps.backend);
        assert!(l.linear_launches(3072, 577, c).is_none());
    }
}
