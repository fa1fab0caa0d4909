//! `fdpp check`: one model on several backends, compared node by node with the first
//! (`fdpp_runtime::check`). Prints a per-layer and per-kind report and the first node beyond
//! tolerance with the variant each backend ran there, writes the typed report with
//! `--json`, and exits with status 1 when a backend disagrees.

use std::path::PathBuf;

use fdpp_runtime::backend::{BackendKind, BackendOptions};
use fdpp_runtime::check::report::{CheckReport, Comparison, PointReport};
use fdpp_runtime::check::tolerance::ToleranceProfile;
use fdpp_runtime::check::{self, CheckOptions, Perturbation, Progress};
use fdpp_runtime::lower::{LoweringOptions, TableChoice};
use fdpp_runtime::model::synthetic::SyntheticWeights;
use fdpp_runtime::model::{Model, ModelConfig, WeightSource};
use fdpp_runtime::trace::Phase;
use fdpp_runtime::{Error, Result};

use crate::shape::Shape;
use crate::{DeviceArgs, PrecisionArg, progress};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Model file or folder; the default model when neither this nor --shape is given.
    #[arg(long, conflicts_with = "shape")]
    model: Option<PathBuf>,
    /// Synthetic weights with this model's shapes instead of a model file (the prompt's
    /// bytes are the token ids).
    #[arg(long, value_enum)]
    shape: Option<Shape>,
    /// Backends to run, comma-separated (cpu, wgpu, cuda, hip); the first is the reference the
    /// others are compared with.
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
    backends: Vec<String>,
    /// GPU adapter of the wgpu backend (part of its name).
    #[arg(long)]
    adapter: Option<String>,
    /// Weight storage on GPU backends.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    weights: PrecisionArg,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto, help = crate::KV_HELP)]
    kv: PrecisionArg,
    /// The prompt (the prefill step).
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    /// Decode steps after the prefill, each fed the reference's greedy id.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Tolerances: `default` (measured errors with room for other devices) or `strict`.
    #[arg(long, default_value = "default")]
    tol_profile: String,
    /// Lower without fusion: every node runs its own launch and is compared by itself
    /// (the fused kernels are then not checked).
    #[arg(long)]
    no_fusion: bool,
    /// Testing switch: perturb this node's output on the second backend (NODE[:SCALE];
    /// every value moves by SCALE, default 0.5, times the output's largest magnitude), so
    /// the check has a divergence to find and name.
    #[arg(long, value_name = "NODE[:SCALE]")]
    inject: Option<String>,
    /// Test hook: perturb every output of this kernel variant (e.g. B:flat_gemm) on the
    /// second backend, as a broken kernel would.
    #[arg(long, hide = true, value_name = "VARIANT[:SCALE]")]
    break_variant: Option<String>,
    /// Write the typed report (every point of every step) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The backend a `--backends` entry names.
fn backend(name: &str, args: &CheckArgs) -> Result<BackendOptions> {
    let kind = [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda, BackendKind::Hip]
        .into_iter()
        .find(|k| k.name() == name.trim())
        .ok_or_else(|| Error::InvalidArgument(format!("--backends: unknown backend `{name}` (known: cpu, wgpu, cuda, hip)")))?;
    // The CPU reference keeps f32 whatever the GPU backends it checks store.
    let (weights, kv) = if kind == BackendKind::Cpu { (PrecisionArg::Auto, PrecisionArg::Auto) } else { (args.weights, args.kv) };
    DeviceArgs::options(kind, args.adapter.as_deref(), weights, kv)
}

/// What is checked: a model and the prompt's token ids.
struct Subject {
    config: ModelConfig,
    weights: Box<dyn WeightSource>,
    description: String,
    prompt: Vec<u32>,
}

fn subject(args: &CheckArgs) -> Result<Subject> {
    if args.prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    match args.shape {
        Some(shape) => {
            let c = shape.config();
            let weights = Box::new(SyntheticWeights::new(&c));
            Ok(Subject {
                description: format!("synthetic {}", shape.name()),
                prompt: args.prompt.bytes().map(u32::from).collect(),
                config: c,
                weights,
            })
        }
        None => {
            let model = Model::load(crate::resolve_model(args.model.as_deref())?)?;
            let ids = model.tokenizer.encode(&args.prompt, true)?;
            if ids.is_empty() {
                return Err(Error::EmptyPrompt);
            }
            Ok(Subject { description: model.describe(), config: model.config, weights: model.weights, prompt: ids })
        }
    }
}

pub fn run(args: CheckArgs) -> Result<()> {
    let backends = args.backends.iter().map(|b| backend(b, &args)).collect::<Result<Vec<_>>>()?;
    let perturbation = |flag: &str, v: &Option<String>| {
        v.as_deref().map(|s| s.parse::<Perturbation>().map_err(|e| Error::InvalidArgument(format!("{flag} {e}")))).transpose()
    };
    let opts = CheckOptions {
        backends,
        steps: args.steps,
        profile: args.tol_profile.parse::<ToleranceProfile>()?,
        lowering: LoweringOptions { fuse: !args.no_fusion, table: TableChoice::DeviceProfile, ..Default::default() },
        inject: perturbation("--inject", &args.inject)?,
        break_variant: perturbation("--break-variant", &args.break_variant)?,
    };
    let Subject { config, weights, description: model, prompt } = subject(&args)?;
    eprintln!("fdpp: {model}");
    let names: Vec<&str> = args.backends.iter().map(|s| s.trim()).collect();
    let mut bar = progress::Bar::hidden();
    let mut phase = None;
    let report = check::run(&model, &config, weights.as_ref(), &prompt, &opts, &mut |p| {
        let (now, done, total, msg) = match p {
            Progress::Loading { backend, done, total } => ((backend, 0), done, total, "loading weights"),
            Progress::Running { backend, done, total } => ((backend, 1), done, total, "running steps"),
        };
        if phase != Some(now) {
            bar.finish();
            phase = Some(now);
            eprintln!("fdpp: {}: {msg}", names[now.0]);
        }
        bar.count(done, total, msg);
    });
    bar.finish();
    let report = report?;
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("check reports serialise");
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
        eprintln!("fdpp: report written to {}", path.display());
    }
    match report.comparisons.iter().find(|c| !c.passed()) {
        None => Ok(()),
        Some(c) => Err(failure(&report, c)),
    }
}

/// The error a failed comparison exits with.
fn failure(r: &CheckReport, c: &Comparison) -> Error {
    let (reference, backend) = (r.backends[c.reference].kind.clone(), r.backends[c.checked].kind.clone());
    let (node, step) = match (&c.first_divergence, c.first_logits_failure) {
        (Some(d), _) => (d.node.clone(), step_name(c, d.step)),
        (None, Some(s)) => ("the logits' top-k".into(), step_name(c, s)),
        (None, None) => unreachable!("only failed comparisons"),
    };
    Error::Divergence { reference, backend, node, step }
}

fn step_name(c: &Comparison, step: usize) -> String {
    let s = &c.steps[step];
    match s.phase {
        Phase::Prefill => format!("step {step}, the prefill of {} tokens", s.shape.m),
        Phase::Decode => format!("step {step}, decoding position {}", s.shape.max_keys - 1),
    }
}

fn sci(x: f64) -> String {
    format!("{x:.1e}")
}

fn print_report(r: &CheckReport) {
    let reference = &r.backends[0];
    println!("model:      {}", r.model);
    println!("reference:  {}", reference.device);
    println!(
        "steps:      a prefill of {} tokens, then {} decode steps; tolerances `{}`; {}",
        r.prompt.len(),
        r.decode_steps,
        format!("{:?}", r.profile).to_lowercase(),
        if r.fused { "fused lowering (as generation runs)" } else { "no fusion (every node its own launch)" }
    );
    if let Some(p) = &r.injected {
        println!("perturbed:  {p} on {} (testing switch)", r.backends[1].kind);
    }
    for c in &r.comparisons {
        print_comparison(r, c);
    }
}

fn print_comparison(r: &CheckReport, c: &Comparison) {
    let (rb, cb) = (&r.backends[c.reference], &r.backends[c.checked]);
    println!("\n{} ({}) against {}: {}", cb.kind, cb.device, rb.kind, c.precision.name());
    println!("\nper layer, over all steps:");
    println!("  {:<10} {:>6} {:>9} {:>10} {:>10} {:>7}", "group", "points", "max rel", "max 1-cos", "non-finite", "beyond");
    for g in &c.groups {
        println!(
            "  {:<10} {:>6} {:>9} {:>10} {:>10} {:>7}",
            g.group,
            g.points,
            sci(g.max_rel),
            sci(g.max_cos_distance),
            g.non_finite,
            g.beyond
        );
    }
    println!("\nper kind of compared tensor, over all steps:");
    println!("  {:<12} {:>6} {:>9} {:>9} {:>10} {:>10}", "kind", "points", "max rel", "tol rel", "max 1-cos", "tol 1-cos");
    for k in &c.kinds {
        println!(
            "  {:<12} {:>6} {:>9} {:>9} {:>10} {:>10}",
            k.kind,
            k.points,
            sci(k.max_rel),
            sci(k.tolerance.rel),
            sci(k.max_cos_distance),
            sci(k.tolerance.cos_distance)
        );
    }
    let ids = |v: &[u32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    println!("\ngreedy ids: {} [{}], {} [{}]", rb.kind, ids(&c.reference_ids), cb.kind, ids(&c.checked_ids));
    let overlaps: Vec<String> = c.steps.iter().map(|s| s.logits.overlap.to_string()).collect();
    println!("logits top-{} overlap per step: {}", check::LOGITS_TOP_K, overlaps.join(" "));
    if let Some(s) = c.first_id_mismatch() {
        let l = &c.steps[s].logits;
        let how = if l.within { "a near-tie within tolerance" } else { "beyond tolerance" };
        println!("  ids first differ at {}: reference margin {:.3e}, band {:.3e}: {how}", step_name(c, s), l.reference_margin, l.band);
    }
    match &c.first_divergence {
        None if c.passed() => println!("\nPASS: every point of every step is within tolerance"),
        None => println!("\nFAIL: the logits' top-k differ beyond a near-tie at {}", step_name(c, c.first_logits_failure.unwrap_or(0))),
        Some(d) => {
            let p = &c.steps[d.step].points[d.point];
            println!("\nFAIL: first divergence at `{}` ({}):", d.node, step_name(c, d.step));
            print_point(rb.kind.as_str(), cb.kind.as_str(), p);
            // The points of the step up to it, from the start of its layer.
            let points = &c.steps[d.step].points[..=d.point];
            let from = points.iter().rposition(|q| q.layer != p.layer).map_or(0, |i| i + 1).min(d.point);
            println!("\n  the step up to it:");
            for q in &points[from..] {
                let e = q.metrics.errors.map_or("non-finite".to_string(), |e| format!("rel {} 1-cos {}", sci(e.rel), sci(e.cos_distance)));
                let mark = if q.within { "  " } else { ">>" };
                println!("  {mark} {:<26} {:<12} {e}", q.node, q.kind);
            }
        }
    }
}

fn print_point(reference: &str, checked: &str, p: &PointReport) {
    let m = &p.metrics;
    match m.errors {
        Some(e) => println!(
            "  max abs {} at {}, rel {} (tolerance {}), 1-cos {} (tolerance {}), {} values",
            sci(e.max_abs),
            e.at,
            sci(e.rel),
            sci(p.tolerance.rel),
            sci(e.cos_distance),
            sci(p.tolerance.cos_distance),
            m.elements
        ),
        None => println!(
            "  non-finite values: {reference} {} NaN {} inf, {checked} {} NaN {} inf ({} values)",
            m.reference.nan, m.reference.inf, m.checked.nan, m.checked.inf, m.elements
        ),
    }
    println!("  compared: `{}` ({}), covering {}", p.tensor, p.kind, p.covers.join(", "));
    for (side, ran) in [(reference, &p.reference), (checked, &p.checked)] {
        let launches: Vec<String> = ran.iter().map(|r| format!("{} [{r}]", r.node)).collect();
        println!("  {side:<5} ran: {}", launches.join("; "));
    }
}
