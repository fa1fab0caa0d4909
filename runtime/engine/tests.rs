//! Whole lowered steps through the driver on each backend: what the records say ran is
//! what ran, and fused or chunked lowerings give the unfused lowering's logits.

use crate::backend::{BackendOptions, Capacity, StepInput};
use crate::compare::rel_error;
use crate::dataflow::{DataflowTable, Inflections, TableSource};
use crate::engine::Driver;
use crate::graph::llama;
use crate::lower::{LoweringOptions, TableChoice};
#[cfg(feature = "wgpu")]
use crate::model::ModelConfig;
use crate::model::synthetic::SyntheticWeights;
use crate::trace::How;

/// Whatever variant the lowering picks, the CPU runs that variant's loop and its
/// records say so; all three give the same logits.
#[test]
fn each_variant_runs_its_own_kernel_and_records_what_it_ran() {
    let c = crate::graph::tests::config();
    let weights = SyntheticWeights::new(&c);
    let table =
        |m1, m2| DataflowTable { source: TableSource::Tuned { device: "test".into() }, fallback: Inflections { m1, m2 }, shapes: vec![] };
    let mut results = vec![];
    for (name, m1, m2) in [("A:gemv", 100, 200), ("B:flat_gemm", 1, 200), ("C:gemm", 1, 1)] {
        let opts = LoweringOptions { table: TableChoice::Given(table(m1, m2)), ..Default::default() };
        let capacity = Capacity { max_seqs: 1, max_context: 64 };
        let mut d = Driver::load(&BackendOptions::Cpu, llama::build(&c), &opts, &weights, capacity, &mut |_, _| {}).unwrap();
        let tokens: Vec<u32> = (0..7).map(|i| i * 13 % 100).collect();
        let positions: Vec<usize> = (0..7).collect();
        let logits = d.step(&StepInput { tokens: &tokens, positions: &positions, seqs: &[0; 7], out_rows: &[6] }).unwrap();
        let (_, records) = d.last_records().unwrap();
        for r in records.iter().filter(|r| r.op == "linear") {
            let How::Launch { variant, .. } = &r.how else { panic!("{} fused", r.node) };
            assert_eq!(variant.label(), name, "{}", r.node);
            assert!(r.micros.is_some(), "the CPU times every launch");
        }
        results.push(logits);
    }
    for other in &results[1..] {
        let err = rel_error(other, &results[0], "logits of another variant");
        assert!(err < 1e-5, "relative error {err:e}");
    }
}

/// A driver on the wgpu backend over random weights (f32 weights and KV cache, so lowerings compare to 1e-5).
#[cfg(feature = "wgpu")]
fn driver(c: &ModelConfig, fuse: bool, binding_limit: Option<u64>) -> Option<Driver> {
    use crate::backend::{WeightPrecision, WgpuOptions};
    let g = llama::build(c);
    let weights = SyntheticWeights::new(c);
    let backend = BackendOptions::Wgpu(WgpuOptions {
        precision: WeightPrecision::F32,
        kv: WeightPrecision::F32,
        binding_limit,
        ..Default::default()
    });
    let opts = LoweringOptions { fuse, ..Default::default() };
    let capacity = Capacity { max_seqs: 1, max_context: c.max_context };
    Driver::load(&backend, g, &opts, &weights, capacity, &mut |_, _| {}).map_err(crate::testing::skip_unavailable).ok()
}

#[cfg(feature = "wgpu")]
#[test]
fn fused_and_chunked_lowering_matches_the_plain_one() {
    let c = ModelConfig { num_layers: 2, vocab_size: 300, max_context: 512, ..crate::graph::tests::config() };
    // The reference runs unfused, with every weight in one binding. One fused driver has
    // every weight in one binding too (all fusions apply); the other has weights split into
    // 4 KiB chunks (as lavapipe's 128 MiB binding limit splits large ones), where the GEMV
    // norm and SwiGLU fusions give way for the chunked weights.
    let (Some(mut fused), Some(mut chunked), Some(mut plain)) =
        (driver(&c, true, None), driver(&c, true, Some(4096)), driver(&c, false, None))
    else {
        return;
    };
    assert!(chunked.lowering().weights.iter().any(|w| w.chunks.len() > 1));
    assert!(plain.lowering().weights.iter().all(|w| w.chunks.len() == 1) && plain.lowering().fusions.is_empty());
    let prompt: Vec<u32> = (0..10).map(|i| i * 29 % 300).collect();
    let positions: Vec<usize> = (0..10).collect();
    let seqs = vec![0; 10];
    let mut steps = vec![(prompt.clone(), positions.clone(), seqs.clone(), vec![9usize])];
    for p in 10..13 {
        steps.push((vec![p as u32], vec![p], vec![0], vec![0]));
    }
    for (tokens, positions, seqs, out_rows) in &steps {
        let input = StepInput { tokens, positions, seqs, out_rows };
        let want = plain.step(&input).unwrap();
        for (what, d) in [("fused", &mut fused), ("fused + chunked", &mut chunked)] {
            let err = rel_error(&d.step(&input).unwrap(), &want, what);
            assert!(err <= 1e-5, "{what} vs plain at m={}: relative error {err:e}", tokens.len());
        }
    }
    // The fusions took effect on the last (decode, GEMV) step: residual adds, every
    // RMSNorm, SwiGLU and RoPE ran inside the linear launch named; with chunked weights the
    // norms still ran on their own.
    let records = |d: &Driver| d.last_records().expect("a step ran").1;
    let folded = |d: &Driver, op: &str| records(d).iter().filter(|r| r.op == op).all(|r| matches!(r.how, How::Fused { .. }));
    for op in ["add", "rms_norm", "swiglu", "rope"] {
        assert!(folded(&fused, op), "{op} not fused: {:?}", records(&fused));
    }
    for r in records(&fused).iter().filter(|r| r.op == "rms_norm" && r.node != "final_norm") {
        let How::Fused { into, .. } = &r.how else { unreachable!() };
        assert!(into.ends_with(".qkv") || into.ends_with(".gate_up"), "{} fused into {into}", r.node);
    }
    assert!(folded(&chunked, "add") && !folded(&chunked, "rms_norm"));
    assert!(records(&plain).iter().all(|r| matches!(r.how, How::Launch { .. })));
}
