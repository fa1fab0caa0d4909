//! `fdpp bench`: prefill and decode throughput of one backend, on a model file or on
//! synthetic weights of a known model's exact shapes (`--shape`), so performance work
//! never waits on downloads. Times are medians over repeats after a warm-up.

use std::path::PathBuf;
use std::time::Instant;

use fdpp_runtime::backend::{self, Executor, StepInput, StepTiming};
use fdpp_runtime::engine::{Sampler, SamplingParams};
use fdpp_runtime::graph::{self, Plan};
use fdpp_runtime::model::{Model, ModelConfig};
use fdpp_runtime::tensor::HostTensor;
use fdpp_runtime::{Error, Result};
use rayon::prelude::*;

use crate::DeviceArgs;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shape {
    /// SmolLM2-135M: 30 layers, hidden 576, 9/3 heads, ffn 1536, vocab 49152.
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    /// Llama-2-7B with a 49152 vocabulary: 32 layers, hidden 4096, 32 heads, ffn 11008.
    #[value(name = "llama2-7b")]
    Llama2_7b,
    /// Llama-2-13B with a 49152 vocabulary: 40 layers, hidden 5120, 40 heads, ffn 13824.
    #[value(name = "llama2-13b")]
    Llama2_13b,
}

impl Shape {
    fn config(self) -> ModelConfig {
        let (h, f, l, heads, kv) = match self {
            Shape::Smollm2_135m => (576, 1536, 30, 9, 3),
            Shape::Llama2_7b => (4096, 11008, 32, 32, 32),
            Shape::Llama2_13b => (5120, 13824, 40, 40, 40),
        };
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 49152,
            hidden_size: h,
            intermediate_size: f,
            num_layers: l,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: h / heads,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_context: 8192,
            tie_word_embeddings: matches!(self, Shape::Smollm2_135m),
        }
    }
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCmd {
    #[command(subcommand)]
    sub: Option<BenchSub>,
    #[command(flatten)]
    run: BenchArgs,
}

#[derive(clap::Subcommand)]
enum BenchSub {
    /// Each linear implementation (A GEMV, B flat GEMM, C GEMM) over a grid of M on the
    /// model's four [N, K] shapes, beside the device's measured copy bandwidth (wgpu).
    Kernels(KernelArgs),
}

#[derive(clap::Args)]
struct KernelArgs {
    #[arg(long, value_enum, default_value_t = Shape::Smollm2_135m)]
    shape: Shape,
    /// Tokens per step to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,6,8,12,16,24,32,48,64,96,128,256,512")]
    m: Vec<usize>,
    /// GPU adapter (part of its name).
    #[arg(long)]
    adapter: Option<String>,
    #[arg(long, value_enum, default_value_t = crate::WeightsArg::Auto)]
    weights: crate::WeightsArg,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn command(cmd: BenchCmd) -> Result<()> {
    match cmd.sub {
        Some(BenchSub::Kernels(k)) => kernels(k),
        None => run(cmd.run),
    }
}

fn kernels(args: KernelArgs) -> Result<()> {
    use fdpp_runtime::backend::wgpu::microbench;
    use fdpp_runtime::dataflow::LinearImpl;
    let c = args.shape.config();
    let shapes = [(c.qkv_dim(), c.hidden_size), (c.hidden_size, c.q_dim()), (2 * c.intermediate_size, c.hidden_size), (c.hidden_size, c.intermediate_size)];
    let names = ["qkv", "o", "gate_up", "down"];
    let mut bar = crate::progress::Bar::hidden();
    let precision = crate::DeviceArgs::precision(args.weights);
    let report = microbench::run(&shapes, &args.m, args.adapter.as_deref(), precision, &mut |d, t| bar.count(d, t, "timing kernels"))?;
    bar.finish();
    println!("device: {}", report.device);
    println!("copy bandwidth (read + write): {:.0} GB/s", report.copy_gbytes_per_s);
    let inflections = microbench::inflections(&report);
    for (((n, k), name), (_, m1, m2)) in shapes.iter().zip(names).zip(&inflections) {
        println!("\n{name} [N={n}, K={k}]: us per call (GB/s); * = fastest");
        println!("{:>5} {:>20} {:>20} {:>20}", "M", "A gemv", "B flat_gemm", "C gemm");
        for &m in &args.m {
            let cell = |imp: LinearImpl| report.linear.iter().find(|t| (t.n, t.k, t.m, t.implementation) == (*n, *k, m, imp));
            let best = [LinearImpl::Gemv, LinearImpl::FlatGemm, LinearImpl::Gemm]
                .into_iter()
                .filter_map(|i| cell(i).map(|t| (i, t.micros)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|b| b.0);
            let show = |imp: LinearImpl| match cell(imp) {
                Some(t) => format!("{:.1} ({:.1}){}", t.micros, t.gbytes_per_s, if best == Some(imp) { "*" } else { " " }),
                None => "-".into(),
            };
            println!("{m:>5} {:>20} {:>20} {:>20}", show(LinearImpl::Gemv), show(LinearImpl::FlatGemm), show(LinearImpl::Gemm));
        }
        let f = |v: &Option<usize>| v.map_or("not in grid".to_string(), |m| m.to_string());
        println!("measured M1 = {}, M2 = {} (built-in wgpu table: M1 = 4, M2 = 64)", f(m1), f(m2));
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report).expect("JSON");
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model file or folder; the default model when neither this nor --shape is given.
    #[arg(long, conflicts_with = "shape")]
    model: Option<PathBuf>,
    /// Synthetic weights with this model's shapes instead of a model file.
    #[arg(long, value_enum)]
    shape: Option<Shape>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Prompt length of the prefill measurement (per sequence).
    #[arg(long = "prompt", alias = "prompt-tokens", default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt (per sequence).
    #[arg(long = "gen", alias = "gen-tokens", default_value_t = 64)]
    gen_tokens: usize,
    /// KV depth before decode is timed (comma-separated list): the sequence is filled to
    /// this many positions first (untimed) when it is longer than the prompt, as llama-bench does.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    ctx: Vec<usize>,
    /// Sequences decoded together (comma-separated list: one measurement each).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Measured repetitions (the median and the spread are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// After the measurement, time every node of one decode step (GPU timestamps) and
    /// print where the time goes, per op and implementation.
    #[arg(long)]
    profile: bool,
}

/// Random weights of the graph's parameters: uniform in +-0.05, norm weights 1.
fn synthetic_params(g: &graph::Graph) -> Vec<HostTensor> {
    g.params
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            if p.shape.len() == 1 {
                return HostTensor::f32(p.shape.clone(), vec![1.0; p.numel()]);
            }
            let mut rng = fdpp_runtime::engine::sampler::Rng::new(i as u64 + 1);
            HostTensor::f32(p.shape.clone(), (0..p.numel()).map(|_| (rng.next_f32() - 0.5) * 0.1).collect())
        })
        .collect()
}

/// Prints device time per (op, implementation) and returns it as JSON.
fn print_profile(what: &str, records: &[fdpp_runtime::backend::NodeRecord]) -> serde_json::Value {
    let mut by_kind: std::collections::BTreeMap<(String, String), (f64, usize)> = Default::default();
    for r in records {
        let e = by_kind.entry((r.op.clone(), r.implementation.clone())).or_default();
        e.0 += r.micros.unwrap_or(0.0);
        e.1 += 1;
    }
    let total: f64 = by_kind.values().map(|v| v.0).sum();
    println!("{what}: device time per node kind");
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    let mut rows = Vec::new();
    for ((op, imp), (us, n)) in &kinds {
        println!("  {op:<12} {imp:<22} {n:>4} nodes {us:>11.1} us {:>5.1}%", 100.0 * us / total.max(1e-9));
        rows.push(serde_json::json!({"op": op, "implementation": imp, "nodes": n, "micros": us}));
    }
    println!("  total {total:.1} us");
    serde_json::json!({"step": what, "total_micros": total, "kinds": rows})
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

#[derive(serde::Serialize)]
struct Row {
    /// KV depth at which decode was timed.
    ctx: usize,
    batch: usize,
    prefill_tok_s: f64,
    prefill_min: f64,
    prefill_max: f64,
    decode_tok_s_total: f64,
    decode_tok_s_per_seq: f64,
    decode_min: f64,
    decode_max: f64,
    /// Mean per decode step of the median run: recording and submitting on the host, and
    /// first kernel start to last kernel end on the device (GPU backends).
    host_micros_per_step: Option<f64>,
    device_micros_per_step: Option<f64>,
}

/// Token ids for the positions in `range`, spread over the vocabulary (content does not
/// change the work).
fn synthetic_ids(range: std::ops::Range<usize>, vocab: usize) -> Vec<u32> {
    range.map(|i| ((i as u64 * 7919 + 13) % vocab as u64) as u32).collect()
}

/// One measurement: prefill and decode tokens/s, and the decode steps' mean timing.
struct Measured {
    prefill: f64,
    decode: f64,
    timing: StepTiming,
}

/// Prefill every sequence (one step each), fill it to `depth` positions (untimed), then
/// decode `steps` greedy steps of all of them.
fn measure(exec: &mut dyn Executor, vocab: usize, b: usize, prompt: usize, depth: usize, steps: usize) -> Result<Measured> {
    let ids = synthetic_ids(0..prompt, vocab);
    let positions: Vec<usize> = (0..prompt).collect();
    let t = Instant::now();
    let mut next = Vec::with_capacity(b);
    for s in 0..b {
        exec.reset_sequence(s);
        let seqs = vec![s; prompt];
        next.extend(exec.step_greedy(&StepInput { tokens: &ids, positions: &positions, seqs: &seqs, out_rows: &[prompt - 1] })?);
    }
    let prefill = (b * prompt) as f64 / t.elapsed().as_secs_f64();
    let start = depth.max(prompt);
    if start > prompt {
        let fill = synthetic_ids(prompt..start, vocab);
        let positions: Vec<usize> = (prompt..start).collect();
        for (s, n) in next.iter_mut().enumerate() {
            let seqs = vec![s; fill.len()];
            *n = exec.step_greedy(&StepInput { tokens: &fill, positions: &positions, seqs: &seqs, out_rows: &[fill.len() - 1] })?[0];
        }
    }
    let seqs: Vec<usize> = (0..b).collect();
    let positions = vec![start; b];
    let first = StepInput { tokens: &next, positions: &positions, seqs: &seqs, out_rows: &seqs };
    let t = Instant::now();
    exec.decode(&first, steps, &mut Sampler::new(SamplingParams::default()), &mut |_| true)?;
    let decode = (b * steps) as f64 / t.elapsed().as_secs_f64();
    Ok(Measured { prefill, decode, timing: exec.last_step_timing() })
}

fn run(args: BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.batch.iter().any(|&b| b == 0) {
        return Err(Error::InvalidArgument("--prompt and every --batch value must be at least 1".into()));
    }
    let max_batch = *args.batch.iter().max().unwrap_or(&1);
    let max_ctx = *args.ctx.iter().max().unwrap_or(&0);
    let (config, params, what) = match args.shape {
        Some(shape) => {
            let c = shape.config();
            let g = graph::llama::build(&c);
            eprintln!("fdpp: synthetic {shape:?} weights ({:.1}M parameters)", c.num_params() as f64 / 1e6);
            let p = synthetic_params(&g);
            (c, p, format!("synthetic {shape:?}"))
        }
        None => {
            let path = crate::resolve_model(args.model.as_deref())?;
            let model = Model::load(&path)?;
            let g = graph::llama::build(&model.config);
            let mut bar = crate::progress::Bar::hidden();
            let p = g.load_params(model.weights.as_ref(), &mut |d, t| bar.count(d, t, "loading weights"))?;
            bar.finish();
            (model.config.clone(), p, path.display().to_string())
        }
    };
    let g = graph::llama::build(&config);
    let plan = Plan::new(&g)?;
    let opts = args.device.engine_options(None, max_batch);
    let exec_opts = backend::ExecutorOptions {
        adapter: opts.adapter.clone(),
        precision: opts.precision,
        ..backend::ExecutorOptions::new(max_batch, max_ctx.max(args.prompt_tokens) + args.gen_tokens + 1)
    };
    let mut exec = backend::create(opts.backend, &g, &plan, params, exec_opts)?;
    let device = exec.describe();
    eprintln!("fdpp: {device}");
    // Warm-up, inside the context the executor was sized for.
    measure(exec.as_mut(), config.vocab_size, 1, args.prompt_tokens.min(16), 0, args.gen_tokens.min(4))?;
    let mut rows = Vec::new();
    let runs: Vec<(usize, usize)> = args.ctx.iter().flat_map(|&c| args.batch.iter().map(move |&b| (c, b))).collect();
    let mut bar = crate::progress::Bar::hidden();
    for (i, &(ctx, b)) in runs.iter().enumerate() {
        let (mut p, mut d, mut timings) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeats.max(1) {
            let r = measure(exec.as_mut(), config.vocab_size, b, args.prompt_tokens, ctx, args.gen_tokens)?;
            p.push(r.prefill);
            d.push(r.decode);
            timings.push((r.decode, r.timing));
        }
        timings.sort_by(|a, b| a.0.total_cmp(&b.0));
        let timing = timings[timings.len() / 2].1;
        bar.count(i + 1, runs.len(), "measuring");
        let ((pm, plo, phi), (dm, dlo, dhi)) = (stats(&p), stats(&d));
        rows.push(Row {
            ctx: ctx.max(args.prompt_tokens),
            batch: b,
            prefill_tok_s: pm,
            prefill_min: plo,
            prefill_max: phi,
            decode_tok_s_total: dm,
            decode_tok_s_per_seq: dm / b as f64,
            decode_min: dlo,
            decode_max: dhi,
            host_micros_per_step: timing.host_micros,
            device_micros_per_step: timing.device_micros,
        });
    }
    println!("model:   {what}");
    println!("backend: {device}");
    println!("prompt {} tokens, gen {} tokens, median of {} (min..max)", args.prompt_tokens, args.gen_tokens, args.repeats.max(1));
    bar.finish();
    println!(
        "{:>6} {:>5} {:>26} {:>30} {:>14} {:>12} {:>12}",
        "ctx", "batch", "prefill tok/s", "decode tok/s (total)", "per sequence", "host us/step", "device us/step"
    );
    let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in &rows {
        println!(
            "{:>6} {:>5} {:>10.1} ({:>6.1}..{:>6.1}) {:>10.1} ({:>7.1}..{:>7.1}) {:>14.1} {:>12} {:>12}",
            r.ctx,
            r.batch,
            r.prefill_tok_s,
            r.prefill_min,
            r.prefill_max,
            r.decode_tok_s_total,
            r.decode_min,
            r.decode_max,
            r.decode_tok_s_per_seq,
            us(r.host_micros_per_step),
            us(r.device_micros_per_step)
        );
    }
    let mut profile = Vec::new();
    if args.profile {
        exec.set_profiling(true)?;
        // One prefill step, then one decode step, each timed node by node.
        let ids = synthetic_ids(0..args.prompt_tokens, config.vocab_size);
        let pos: Vec<usize> = (0..args.prompt_tokens).collect();
        exec.reset_sequence(0);
        let last = args.prompt_tokens - 1;
        let next = exec.step_greedy(&StepInput { tokens: &ids, positions: &pos, seqs: &vec![0; ids.len()], out_rows: &[last] })?;
        profile.push(print_profile(&format!("prefill of {} tokens", args.prompt_tokens), exec.last_step_records()));
        exec.step_greedy(&StepInput { tokens: &next, positions: &[args.prompt_tokens], seqs: &[0], out_rows: &[0] })?;
        profile.push(print_profile(&format!("decode at position {}", args.prompt_tokens), exec.last_step_records()));
        exec.set_profiling(false)?;
    }
    if let Some(path) = args.json {
        let v = serde_json::json!({
            "model": what, "backend": device, "prompt": args.prompt_tokens, "gen": args.gen_tokens,
            "repeats": args.repeats, "rows": rows, "profile": profile,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("JSON")).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
