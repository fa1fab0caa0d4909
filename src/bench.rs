//! `fdpp bench`: prefill and decode throughput of one backend, on a model file or on
//! synthetic weights of a known model's exact shapes (`--shape`), so performance work
//! never waits on downloads. Times are medians over repeats after a warm-up.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use fdpp_runtime::backend::{BackendKind, Capacity, StepInput, StepTiming, microbench};
use fdpp_runtime::engine::{Driver, Sampler, SamplingParams};
use fdpp_runtime::graph;
use fdpp_runtime::model::synthetic::SyntheticWeights;
use fdpp_runtime::model::{Model, WeightSource};
use fdpp_runtime::tensor::FileType;
use fdpp_runtime::trace::NodeRecord;
use fdpp_runtime::{Error, Result};

use crate::DeviceArgs;
use crate::shape::Shape;

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
    /// model's four [N, K] shapes, and decode attention over context lengths, beside the
    /// device's measured read and copy bandwidth (wgpu).
    Kernels(KernelArgs),
}

#[derive(clap::Args)]
struct KernelArgs {
    #[arg(long, value_enum, default_value_t = Shape::Smollm2_135m)]
    shape: Shape,
    /// Tokens per step to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,6,8,12,16,24,32,48,64,96,128,256,512")]
    m: Vec<usize>,
    /// Context lengths (KV positions) of the decode attention, one sequence each; those
    /// beyond the shape's context or the device's largest binding are skipped.
    #[arg(long, value_delimiter = ',', default_value = "128,512,2048,8192")]
    ctx: Vec<usize>,
    /// The backend whose kernels are measured.
    #[arg(long, value_enum, default_value_t = KernelBackend::Wgpu)]
    backend: KernelBackend,
    /// GPU adapter (part of its name; wgpu).
    #[arg(long)]
    adapter: Option<String>,
    #[arg(long, value_enum, default_value_t = crate::PrecisionArg::Auto)]
    weights: crate::PrecisionArg,
    #[arg(long, value_enum, default_value_t = crate::PrecisionArg::Auto, help = crate::KV_HELP)]
    kv: crate::PrecisionArg,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also time the GEMV and the flat GEMM with the RMSNorm prologue and the SwiGLU epilogue
    /// beside their plain forms, at the M up to the GEMV's rows (cuda).
    #[arg(long)]
    fused: bool,
}

/// The file type of synthetic matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SyntheticType {
    F32,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
}

impl SyntheticType {
    fn file_type(self) -> FileType {
        match self {
            SyntheticType::F32 => FileType::F32,
            SyntheticType::Q8_0 => FileType::Q8_0,
            SyntheticType::Q4_0 => FileType::Q4_0,
            SyntheticType::Q4_1 => FileType::Q4_1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KernelBackend {
    Wgpu,
    Cuda,
}

pub fn command(cmd: BenchCmd) -> Result<()> {
    match cmd.sub {
        Some(BenchSub::Kernels(k)) => kernels(k),
        None => run(cmd.run),
    }
}

/// The kernel report of the backend asked for.
#[cfg_attr(not(all(feature = "wgpu", feature = "cuda")), allow(unused_variables))]
fn kernel_report(args: &KernelArgs, sweep: &microbench::Sweep, progress: &mut dyn FnMut(usize, usize)) -> Result<microbench::KernelReport> {
    let kind = if args.backend == KernelBackend::Cuda { BackendKind::Cuda } else { BackendKind::Wgpu };
    match DeviceArgs::options(kind, args.adapter.as_deref(), args.weights, args.kv)? {
        #[cfg(feature = "wgpu")]
        fdpp_runtime::backend::BackendOptions::Wgpu(o) => fdpp_runtime::backend::wgpu::microbench::run(sweep, &o, progress),
        #[cfg(feature = "cuda")]
        fdpp_runtime::backend::BackendOptions::Cuda(o) => fdpp_runtime::backend::cuda::microbench::run(sweep, &o, progress),
        #[allow(unreachable_patterns)]
        _ => Err(fdpp_runtime::backend::unavailable(kind).expect("this build lacks the backend")),
    }
}

fn kernels(args: KernelArgs) -> Result<()> {
    use fdpp_runtime::dataflow::{DataflowTable, LinearImpl};
    let c = args.shape.config();
    let shapes = [
        (c.qkv_dim(), c.hidden_size),
        (c.hidden_size, c.q_dim()),
        (2 * c.intermediate_size, c.hidden_size),
        (c.hidden_size, c.intermediate_size),
    ];
    let names = ["qkv", "o", "gate_up", "down"];
    let attention =
        microbench::AttentionShape { heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: c.head_dim, max_context: c.max_context };
    let sweep = microbench::Sweep { shapes: &shapes, ms: &args.m, fused: args.fused, attention, ctxs: &args.ctx };
    let mut bar = crate::progress::Bar::hidden();
    let report = kernel_report(&args, &sweep, &mut |d, t| bar.count(d, t, "timing kernels"))?;
    bar.finish();
    println!("device: {}", report.device);
    let b = &report.bandwidth;
    println!("memory bandwidth, GB/s (1e9 bytes/s), {} buffers of {} MiB, median of passes:", b.buffers, b.buffer_bytes >> 20);
    println!("  read  (stream_read kernel)                   {:>9.1}  <- the read ceiling (GEMV, decode attention)", b.read_gbytes_per_s);
    println!("  copy  (stream_copy kernel, read + write)     {:>9.1}", b.copy_kernel_gbytes_per_s);
    println!("  copy  (copy_buffer_to_buffer, read + write)  {:>9.1}", b.copy_buffer_gbytes_per_s);
    println!("dispatch floor: {:.2} us per dependent dispatch (a chain of tiny kernels in one pass)", report.dispatch_floor_micros);
    let pct = |gbs: f64| 100.0 * gbs / report.read_gbytes_per_s;
    let inflections = microbench::inflections(&report);
    for (((n, k), name), (_, m1, m2)) in shapes.iter().zip(names).zip(&inflections) {
        println!("\n{name} [N={n}, K={k}]: us per call (GB/s, % of read ceiling); * = fastest");
        println!("{:>5} {:>26} {:>26} {:>26}", "M", "A gemv", "B flat_gemm", "C gemm");
        for &m in &args.m {
            let cell = |imp: LinearImpl| microbench::fastest(&report.linear, (*n, *k), m, imp);
            let best = [LinearImpl::Gemv, LinearImpl::FlatGemm, LinearImpl::Gemm]
                .into_iter()
                .filter_map(|i| cell(i).map(|t| (i, t.micros)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|b| b.0);
            let show = |imp: LinearImpl| match cell(imp) {
                Some(t) => format!(
                    "{:.1} ({:.1}, {:.0}%){}",
                    t.micros,
                    t.gbytes_per_s,
                    t.read_ceiling_pct,
                    if best == Some(imp) { "*" } else { " " }
                ),
                None => "-".into(),
            };
            println!("{m:>5} {:>26} {:>26} {:>26}", show(LinearImpl::Gemv), show(LinearImpl::FlatGemm), show(LinearImpl::Gemm));
        }
        // B's column is its fastest tiling: each tiling's time too, where there are several.
        for &m in &args.m {
            let mut tilings: Vec<(String, f64)> = report
                .linear
                .iter()
                .filter(|t| (t.n, t.k, t.m) == (*n, *k, m))
                .filter_map(|t| match t.variant {
                    Some(fdpp_runtime::lower::kernel::Variant::FlatGemm { tiling }) => Some((tiling.to_string(), t.micros)),
                    _ => None,
                })
                .collect();
            if tilings.len() > 1 {
                tilings.sort_by(|a, b| a.1.total_cmp(&b.1));
                let list: Vec<String> = tilings.iter().map(|(t, us)| format!("{t}: {us:.1}")).collect();
                println!("      B at M = {m}, us per tiling: {}", list.join("; "));
            }
        }
        let f = |v: &Option<usize>| v.map_or("not in grid".to_string(), |m| m.to_string());
        let (table, builtin) = match args.backend {
            KernelBackend::Wgpu => ("wgpu", DataflowTable::wgpu_default().fallback),
            KernelBackend::Cuda => ("cuda", DataflowTable::cuda_default().fallback),
        };
        println!("measured M1 = {}, M2 = {} (built-in {table} table: M1 = {}, M2 = {})", f(m1), f(m2), builtin.m1, builtin.m2);
    }
    if !report.fused.is_empty() {
        println!("\nfused forms: us per call (the fusion's cost over the plain kernel)");
        println!(
            "{:>16} {:>5} {:>34} {:>9} {:>16} {:>16} {:>16}",
            "[N, K]", "M", "variant", "plain", "+ norm", "+ swiglu", "+ norm + swiglu"
        );
        for f in &report.fused {
            let cost = |us: f64| format!("{us:.1} ({:+.0}%)", 100.0 * (us / f.plain - 1.0));
            println!(
                "{:>16} {:>5} {:>34} {:>9.1} {:>16} {:>16} {:>16}",
                format!("[{}, {}]", f.n, f.k),
                f.m,
                f.variant.to_string(),
                f.plain,
                cost(f.norm),
                cost(f.swiglu),
                cost(f.norm_swiglu)
            );
        }
    }
    println!(
        "\ndecode attention, one sequence, {} heads / {} KV heads x {}, K and V {}: us per call (GB/s of K + V read, % of read ceiling)",
        c.num_heads, c.num_kv_heads, c.head_dim, report.kv_dtype
    );
    println!("{:>6} {:>9} {:>13} {:>28} {:>12} {:>28}", "ctx", "K+V MiB", "chunks x keys", "split-KV, all passes", "split pass", "online");
    for t in &report.attention {
        let show = |us: f64, gbs: f64| format!("{us:.1} ({gbs:.1}, {:.0}%)", pct(gbs));
        println!(
            "{:>6} {:>9.2} {:>13} {:>28} {:>12.1} {:>28}{}",
            t.ctx,
            t.kv_bytes as f64 / (1u64 << 20) as f64,
            format!("{} x {}", t.chunks, t.chunk_keys),
            show(t.split_combine_micros, t.split_combine_gbytes_per_s),
            t.split_micros,
            show(t.online_micros, t.online_gbytes_per_s),
            if t.fallback_heads > 0 { format!("  ({} heads fell back to the online softmax)", t.fallback_heads) } else { String::new() }
        );
    }
    for t in report.attention.iter().filter(|t| !t.other_chunkings.is_empty()) {
        let list: Vec<String> = t.other_chunkings.iter().map(|(keys, us)| format!("{keys}: {us:.1}")).collect();
        println!("      at {}, split-KV us per chunk length in keys: {}", t.ctx, list.join("; "));
    }
    for (ctx, why) in &report.skipped_ctx {
        println!("{ctx:>6} skipped: {why}");
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
    /// How the synthetic matrices are stored (with --shape): a block-quantized type gives
    /// random blocks, for `--weights native`.
    #[arg(long, value_enum, default_value_t = SyntheticType::F32, requires = "shape")]
    shape_type: SyntheticType,
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
    /// Append one Markdown table row per measured row to this file (e.g.
    /// bench/results/h200.md), with the date, commit, command and device; the table header
    /// is written first when the file does not end in this table.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Reference number to write beside ours in the recorded rows, e.g. "llama.cpp CUDA 966 tok/s".
    #[arg(long, requires = "record")]
    anchor: Option<String>,
}

/// Prints device time per (op, implementation) and returns it as JSON.
fn print_profile(what: &str, records: &[NodeRecord]) -> serde_json::Value {
    write_profile(&mut std::io::stdout().lock(), what, records)
}

/// Writes device time per (op, implementation) as a short table (shared by `fdpp generate
/// --profile`, which writes it to stderr) and returns it as JSON.
pub(crate) fn write_profile(out: &mut dyn std::io::Write, what: &str, records: &[NodeRecord]) -> serde_json::Value {
    let kinds = fdpp_runtime::trace::op_summary(records);
    let total: f64 = kinds.iter().filter_map(|k| k.micros).sum();
    let mut text = format!("{what}: device time per node kind\n");
    for k in &kinds {
        let us = k.micros.map_or(format!("{:>11}", "-"), |us| format!("{us:>11.1}"));
        let share = k.micros.map_or(String::new(), |us| format!(" {:>5.1}%", 100.0 * us / total.max(1e-9)));
        text.push_str(&format!("  {:<12} {:<22} {:>4} nodes {us} us{share}\n", k.op, k.implementation, k.nodes));
    }
    if kinds.iter().all(|k| k.micros.is_none()) {
        text.push_str("  (no node was timed: this backend does not measure per-node times)\n");
    } else {
        text.push_str(&format!("  total {total:.1} us\n"));
    }
    let _ = out.write_all(text.as_bytes());
    serde_json::json!({"step": what, "total_micros": total, "kinds": kinds, "nodes": records})
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
fn measure(exec: &mut Driver, vocab: usize, b: usize, prompt: usize, depth: usize, steps: usize) -> Result<Measured> {
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
    Ok(Measured { prefill, decode, timing: exec.last_timing() })
}

/// The sequences and positions a run needs, each flag checked against fdpp's limits before
/// anything is sized from it.
fn capacity(batch: usize, ctx: usize, prompt: usize, gen_tokens: usize) -> Result<Capacity> {
    let positions = fdpp_runtime::model::config::MAX_CONTEXT;
    let limit = |flag: &str, value: usize, limit: usize, why: &str| {
        if value <= limit {
            return Ok(());
        }
        Err(Error::ArgumentLimit { flag: flag.into(), value: value as u64, limit: limit as u64, why: why.into() })
    };
    limit("--batch", batch, fdpp_runtime::engine::memory::MAX_SEQS, " (sequences decoded together)")?;
    limit("--ctx", ctx, positions, " (positions of a sequence)")?;
    limit("--prompt", prompt, positions, " (positions of a sequence)")?;
    limit("--gen", gen_tokens, positions, " (positions of a sequence)")?;
    // Each is within the limit, so the sum cannot overflow.
    let max_context = ctx.max(prompt) + gen_tokens + 1;
    limit("--ctx (or --prompt) plus --gen", max_context - 1, positions, " (positions of a sequence)")?;
    Ok(Capacity { max_seqs: batch, max_context })
}

fn run(args: BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.batch.contains(&0) {
        return Err(Error::InvalidArgument("--prompt and every --batch value must be at least 1".into()));
    }
    let max_batch = *args.batch.iter().max().unwrap_or(&1);
    let max_ctx = *args.ctx.iter().max().unwrap_or(&0);
    let capacity = capacity(max_batch, max_ctx, args.prompt_tokens, args.gen_tokens)?;
    let (config, weights, what): (_, Box<dyn WeightSource>, _) = match args.shape {
        Some(shape) => {
            let c = shape.config();
            let ty = args.shape_type.file_type();
            eprintln!("fdpp: synthetic {} weights ({:.1}M parameters, matrices {ty})", shape.name(), c.num_params() as f64 / 1e6);
            let w = SyntheticWeights::with_matrices(&c, ty);
            (c, Box::new(w), format!("synthetic {} ({ty})", shape.name()))
        }
        None => {
            let path = crate::resolve_model(args.model.as_deref())?;
            let model = Model::load(&path)?;
            (model.config.clone(), model.weights, path.display().to_string())
        }
    };
    let before = crate::host_memory();
    let mut bar = crate::progress::Bar::hidden();
    let g = graph::llama::build(&config);
    let backend = args.device.backend()?;
    let lowering = args.device.lowering_options();
    let mut exec = Driver::load(&backend, g, &lowering, weights.as_ref(), capacity, &mut |d, t| bar.count(d, t, "loading weights"))?;
    bar.finish();
    for note in exec.notes() {
        eprintln!("fdpp: note: {note}");
    }
    drop(weights);
    if let (Some(before), Some(after)) = (before, crate::host_memory()) {
        eprintln!(
            "fdpp: host memory resident {} MB before loading the weights, {} MB after (peak {} MB)",
            before.resident_kb / 1024,
            after.resident_kb / 1024,
            after.peak_kb / 1024
        );
    }
    let device = exec.describe();
    eprintln!("fdpp: {device}");
    eprintln!("fdpp: {}", crate::weights_summary(exec.lowering()));
    // Warm-up, inside the context the executor was sized for.
    measure(&mut exec, config.vocab_size, 1, args.prompt_tokens.min(16), 0, args.gen_tokens.min(4))?;
    let mut rows = Vec::new();
    let runs: Vec<(usize, usize)> = args.ctx.iter().flat_map(|&c| args.batch.iter().map(move |&b| (c, b))).collect();
    let mut bar = crate::progress::Bar::hidden();
    for (i, &(ctx, b)) in runs.iter().enumerate() {
        let (mut p, mut d, mut timings) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeats.max(1) {
            let r = measure(&mut exec, config.vocab_size, b, args.prompt_tokens, ctx, args.gen_tokens)?;
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
        let records = |d: &Driver| d.last_records().map(|(_, r)| r).unwrap_or_default();
        profile.push(print_profile(&format!("prefill of {} tokens", args.prompt_tokens), &records(&exec)));
        exec.step_greedy(&StepInput { tokens: &next, positions: &[args.prompt_tokens], seqs: &[0], out_rows: &[0] })?;
        profile.push(print_profile(&format!("decode at position {}", args.prompt_tokens), &records(&exec)));
        if max_batch > 1 {
            // The largest batch's step: every sequence one token past the prompt (their
            // caches hold what the timed runs left there).
            let b = max_batch;
            // Sequence i is row i and its own output row.
            let rows: Vec<usize> = (0..b).collect();
            let step = StepInput { tokens: &vec![next[0]; b], positions: &vec![args.prompt_tokens; b], seqs: &rows, out_rows: &rows };
            exec.step_greedy(&step)?;
            profile.push(print_profile(&format!("decode of {b} sequences at position {}", args.prompt_tokens), &records(&exec)));
        }
        exec.set_profiling(false)?;
    }
    if let Some(path) = args.json {
        let v = serde_json::json!({
            "model": what, "backend": device, "prompt": args.prompt_tokens, "gen": args.gen_tokens,
            "repeats": args.repeats, "rows": rows, "profile": profile,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("JSON")).map_err(|e| Error::io(&path, e))?;
    }
    record_rows(args.record.as_deref(), args.anchor.as_deref(), &what, &device, &rows)?;
    if let Some(m) = crate::host_memory() {
        eprintln!("fdpp: host memory peak {} MB", m.peak_kb / 1024);
    }
    Ok(())
}

// Recorded results (`--record`): one Markdown table row per measured row, so every
// performance change appends its numbers to bench/results/<device>.md.

/// The commit this binary was built from (see build.rs): short hash, `-dirty` when tracked
/// files differed from it, or "unknown".
const COMMIT: &str = env!("FDPP_COMMIT");

/// Header of the table `--record` appends to.
const RECORD_HEADER: &str = "| date (UTC) | commit | command | model | device | ctx | batch | prefill tok/s | decode tok/s (total) | decode tok/s per sequence | device us/step | anchor |";

/// Appends the rows of one `fdpp bench` run to the results table in `path` (nothing when
/// `path` is `None`).
fn record_rows(path: Option<&Path>, anchor: Option<&str>, model: &str, device: &str, rows: &[Row]) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let date = utc_date(SystemTime::now());
    let command = command_line(std::env::args());
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            markdown_row(&[
                date.clone(),
                COMMIT.to_string(),
                format!("`{command}`"),
                model.to_string(),
                device.to_string(),
                r.ctx.to_string(),
                r.batch.to_string(),
                format!("{:.1}", r.prefill_tok_s),
                format!("{:.1}", r.decode_tok_s_total),
                format!("{:.1}", r.decode_tok_s_per_seq),
                r.device_micros_per_step.map_or("-".into(), |us| format!("{us:.1}")),
                anchor.unwrap_or("").to_string(),
            ])
        })
        .collect();
    append_table(path, RECORD_HEADER, &lines)?;
    eprintln!("fdpp: appended {} row(s) to {}", lines.len(), path.display());
    Ok(())
}

/// The command as typed (program name without its folder), arguments with spaces or shell
/// characters in single quotes.
fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let mut args = args.into_iter();
    let program = args
        .next()
        .map(|p| Path::new(&p).file_name().map_or(p.clone(), |f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "fdpp".into());
    let quote = |a: String| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,/=:+@%".contains(c)) {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program).chain(args.map(quote)).collect::<Vec<_>>().join(" ")
}

/// "YYYY-MM-DD HH:MM" in UTC.
pub fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// (year, month, day) of a day number counted from 1970-01-01 (proleptic Gregorian; H.
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One table row; `|` in a cell is escaped, line breaks become spaces.
fn markdown_row(cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| c.replace(['\r', '\n'], " ").replace('|', r"\|")).collect();
    format!("| {} |", cells.join(" | "))
}

/// Whether the last table of `text` is the one headed by `header`: the header starts a
/// line and only table rows follow it.
fn ends_in_table(text: &str, header: &str) -> bool {
    let text = text.trim_end();
    let Some(at) = text.rfind(header) else { return false };
    (at == 0 || text[..at].ends_with('\n')) && text[at..].lines().all(|l| l.trim_start().starts_with('|'))
}

/// Appends `lines` to the table headed by `header` at the end of `path` (created if
/// missing); the header and its separator are written first when the file does not end
/// in that table.
fn append_table(path: &Path, header: &str, lines: &[String]) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut text = old.trim_end().to_string();
    if !ends_in_table(&old, header) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let columns = header.matches('|').count().saturating_sub(1);
        text.push_str(header);
        text.push_str(&format!("\n|{}\n", "---|".repeat(columns)));
    } else {
        text.push('\n');
    }
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        let at = |s: u64| utc_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00");
        assert_eq!(at(1_709_210_040 + 59), "2024-02-29 12:34");
        assert_eq!(at(946_684_740), "1999-12-31 23:59");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00");
    }

    #[test]
    fn command_lines_quote_what_the_shell_would_split() {
        let args = [
            "/x/target/release/fdpp",
            "bench",
            "--shape",
            "smollm2-135m",
            "--batch",
            "1,8",
            "--anchor",
            "llama.cpp CUDA 966 tok/s",
            "it's",
        ];
        assert_eq!(
            command_line(args.iter().map(|s| s.to_string())),
            r"fdpp bench --shape smollm2-135m --batch 1,8 --anchor 'llama.cpp CUDA 966 tok/s' 'it'\''s'"
        );
    }

    #[test]
    fn rows_escape_pipes_and_line_breaks() {
        assert_eq!(markdown_row(&["a|b".into(), "c\nd".into(), "".into()]), r"| a\|b | c d |  |");
    }

    #[test]
    fn recording_writes_the_header_once_and_appends_rows() {
        let dir = std::env::temp_dir().join(format!("fdpp-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.md");
        let _ = std::fs::remove_file(&path);
        let header = "| a | b |";
        append_table(&path, header, &["| 1 | 2 |".into()]).unwrap();
        append_table(&path, header, &["| 3 | 4 |".into(), "| 5 | 6 |".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n| 5 | 6 |\n");

        // A file with notes and an older table of other columns: a new table after them.
        std::fs::write(&path, "# H200\n\nNotes.\n\n| x |\n|---|\n| 9 |\n").unwrap();
        append_table(&path, header, &["| 1 | 2 |".into()]).unwrap();
        append_table(&path, header, &["| 3 | 4 |".into()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "# H200\n\nNotes.\n\n| x |\n|---|\n| 9 |\n\n| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n");

        // Prose written after our table: the next rows start a new table below it.
        std::fs::write(&path, format!("{text}\nA note on the run above.\n")).unwrap();
        append_table(&path, header, &["| 5 | 6 |".into()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(header).count(), 2);
        assert!(text.ends_with("A note on the run above.\n\n| a | b |\n|---|---|\n| 5 | 6 |\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_record_header_has_a_column_per_cell() {
        let columns = RECORD_HEADER.matches('|').count() - 1;
        let row = markdown_row(&vec![String::new(); 12]);
        assert_eq!(row.matches('|').count() - 1, columns);
    }
}
