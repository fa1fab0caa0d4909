//! `fdpp tune`: measures where each linear implementation wins on this device for a model's
//! shapes, stores the device's profile in the cache, and prints what it chose and what
//! each static choice would have lost. The engine uses the profile on every later run.

use std::path::PathBuf;
use std::time::SystemTime;

use fdpp_runtime::backend::{self, BackendKind};
use fdpp_runtime::graph::{self, Op};
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::lower::{Lowering, LoweringOptions};
use fdpp_runtime::model::{Model, ModelConfig};
use fdpp_runtime::tune::profile::{self, DeviceProfile, Lookup};
use fdpp_runtime::tune::search::{Score, ShapeTimes};
use fdpp_runtime::tune::{self as tuner, TuneRequest};
use fdpp_runtime::{Error, Result};

use crate::shape::Shape;
use crate::{BackendArg, DeviceArgs};

#[derive(clap::Args)]
pub struct TuneArgs {
    /// Model file or folder whose linear shapes are tuned (only its config is read); the
    /// default model when neither this nor --shape is given.
    #[arg(long, conflicts_with = "shape")]
    model: Option<PathBuf>,
    /// A known model's shapes instead of a file.
    #[arg(long, value_enum)]
    shape: Option<Shape>,
    #[command(flatten)]
    device: DeviceArgs,
    /// A small M grid (1, 2, 4, 8, 16, 64) and no refinement: a quick look, e.g. on a
    /// software rasteriser.
    #[arg(long)]
    quick: bool,
    /// The M grid to measure (comma-separated; default 1-8, then steps of about a third to 512).
    #[arg(long, value_delimiter = ',', conflicts_with = "quick")]
    grid: Option<Vec<usize>>,
    /// Measure and print, but do not store the profile.
    #[arg(long)]
    dry_run: bool,
    /// Print the stored profile of this device (its table, scores and measured curves)
    /// without measuring.
    #[arg(long, conflicts_with_all = ["quick", "grid", "dry_run"])]
    show: bool,
    /// Also write the profile as JSON to this file (the viewer's chart reads it).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Decide a stored profile (a --json file or a cached one) again from its measurements
    /// with this fdpp's search, and print the new table and scores: no device, nothing stored.
    #[arg(long, value_name = "PROFILE", conflicts_with_all = ["quick", "grid", "dry_run", "show", "model", "shape"])]
    rescore: Option<PathBuf>,
}

/// Profiles written by `--json` are a few MB; anything far larger is not one.
const MAX_PROFILE_BYTES: u64 = 256 << 20;

/// `--rescore`: the profile at `path` decided again from its first pass, scored on its second.
fn rescore(path: &std::path::Path, json: Option<&std::path::Path>) -> Result<()> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > MAX_PROFILE_BYTES {
        return Err(Error::InvalidArgument(format!("{}: {len} bytes is too large for a profile", path.display())));
    }
    // A cached profile starts with its checksum line; a --json file is the JSON alone.
    let text = match fdpp_runtime::cache::read_checked(path) {
        fdpp_runtime::cache::Entry::Valid(text) => text,
        _ => std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
    };
    let old: DeviceProfile =
        serde_json::from_str(&text).map_err(|e| Error::InvalidArgument(format!("{}: not a profile ({e})", path.display())))?;
    let caps = match old.key.backend {
        BackendKind::Cuda => BackendCaps::cuda_builtin(old.key.weights),
        BackendKind::Hip => BackendCaps::hip_builtin(old.key.weights),
        kind => BackendCaps::builtin(kind).expect("every backend has a built-in profile"),
    };
    println!("as stored:");
    print_profile(&old, false);
    let new = tuner::rescore(&old, &caps)?;
    println!(
        "
decided again by this fdpp's search from the same measurements:"
    );
    print_profile(&new, false);
    if let Some(out) = json {
        std::fs::write(out, serde_json::to_string_pretty(&new).expect("profiles serialise")).map_err(|e| Error::io(out, e))?;
    }
    Ok(())
}

/// The distinct [N, K] of a model's linear layers, in graph order.
pub fn linear_shapes(config: &ModelConfig) -> Vec<(usize, usize)> {
    let mut out = vec![];
    for node in &graph::llama::build(config).nodes {
        if let Op::Linear { n, k, .. } = node.op
            && !out.contains(&(n, k))
        {
            out.push((n, k));
        }
    }
    out
}

pub fn run(args: TuneArgs) -> Result<()> {
    if let Some(path) = &args.rescore {
        return rescore(path, args.json.as_deref());
    }
    let opts = match args.device.backend {
        // `auto` may land on the CPU oracle, which has nothing to tune: take the GPU backend.
        BackendArg::Auto if backend::auto_kind() == BackendKind::Cpu => {
            DeviceArgs::options(BackendKind::Wgpu, args.device.adapter.as_deref(), args.device.weights, args.device.kv)?
        }
        _ => args.device.backend()?,
    };
    let mut bench = backend::open_linear_bench(&opts)?;
    let caps = bench.caps().clone();
    let dir = profile::dir()?;
    if args.show {
        return match profile::lookup(&dir, &caps) {
            Lookup::Found(p) => {
                print_profile(&p, true);
                Ok(())
            }
            Lookup::Missing(path) => Err(Error::InvalidArgument(format!("no profile for {} yet ({})", caps.device, path.display()))),
            Lookup::Corrupt(path, why) => Err(Error::InvalidArgument(format!("{}: {why}", path.display()))),
            Lookup::Stale(path, changed) => Err(Error::InvalidArgument(format!("{} is stale: {}", path.display(), changed.join(", ")))),
        };
    }
    let (config, what) = match args.shape {
        Some(s) => (s.config(), format!("{} shapes", s.name())),
        None => {
            let m = Model::load(crate::resolve_model(args.model.as_deref())?)?;
            (m.config.clone(), m.describe())
        }
    };
    let shapes = linear_shapes(&config);
    // Each variant is timed with the launches a step makes for the layer around it.
    let lowering = Lowering::new(graph::llama::build(&config), caps.clone(), &LoweringOptions::default())?;
    let grid = match (&args.grid, args.quick) {
        (Some(g), _) => g.clone(),
        (None, true) => tuner::QUICK_GRID.to_vec(),
        (None, false) => tuner::GRID.to_vec(),
    };
    eprintln!(
        "fdpp: tuning {} linear shapes of {what} on {} ({} weights); each variant timed with the launches a step makes for the layer (its fusions, or the norm / SwiGLU / RoPE launches it leaves)",
        shapes.len(),
        caps.device,
        caps.weight_dtype
    );
    let refine_rounds = if args.quick { 0 } else { tuner::REFINE_ROUNDS };
    let created = crate::bench::utc_date(SystemTime::now());
    let start = std::time::Instant::now();
    // Shape by shape, each stored as soon as it is measured: an interrupted run keeps them.
    let mut profile = match profile::lookup(&dir, &caps) {
        Lookup::Found(old) => Some(*old),
        _ => None,
    };
    let mut stored = None;
    for (i, &shape) in shapes.iter().enumerate() {
        eprintln!("fdpp: [N={}, K={}] ({}/{}, {:.0} s so far)", shape.0, shape.1, i + 1, shapes.len(), start.elapsed().as_secs_f64());
        let req = TuneRequest { shapes: &[shape], grid: &grid, refine_rounds, verify: true, lowering: Some(&lowering) };
        let mut bar = crate::progress::Bar::hidden();
        let fresh = tuner::tune(bench.as_mut(), &req, created.clone(), &mut |p| bar.count(p.done, p.total, "timing A, B, C"))?;
        bar.finish();
        let merged = match profile.take() {
            Some(old) => tuner::merge(fresh, old),
            None => fresh,
        };
        if !args.dry_run {
            stored = Some(profile::store(&dir, &merged)?);
        }
        profile = Some(merged);
    }
    eprintln!("fdpp: tuned in {:.0} s", start.elapsed().as_secs_f64());
    drop(bench);
    let profile = profile.expect("a model has linear layers");
    print_profile(&profile, false);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&profile).expect("profiles serialise");
        std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    }
    match stored {
        Some(path) => eprintln!("fdpp: profile stored in {} (used by generate, bench, check and inspect on this device)", path.display()),
        None => eprintln!("fdpp: --dry-run: the profile was not stored"),
    }
    Ok(())
}

fn pct(s: &Score) -> String {
    let runnable = s.within_5pct_of_runnable.map_or("-".into(), |n| n.to_string());
    format!(
        "{:>5.1}% mean, {:>6.1}% worst (M={:<3}), {:>3}/{:<3} within 5% ({runnable:>3} of what may run)",
        s.mean_loss_pct, s.worst_loss_pct, s.worst_m, s.within_5pct, s.points
    )
}

/// The table, the scores and (with `curves`) every measured time of a profile.
pub fn print_profile(p: &DeviceProfile, curves: bool) {
    println!(
        "profile: {} {} weights, {} (driver {}, fdpp {}), measured {}",
        p.key.backend, p.key.weights, p.key.device, p.key.driver, p.key.fdpp, p.created
    );
    print_table(&p.table);
    let (mut points, mut within, mut within_runnable) = (0, 0, Some(0));
    for s in &p.summary {
        println!("\n[N={}, K={}]: loss against the fastest variant measured at each M", s.n, s.k);
        println!("  {:<34} {}", "tuned", pct(&s.tuned));
        for (name, score) in &s.statics {
            println!("  {name:<34} {}", pct(score));
        }
        points += s.tuned.points;
        within += s.tuned.within_5pct;
        within_runnable = within_runnable.zip(s.tuned.within_5pct_of_runnable).map(|(a, b)| a + b);
    }
    if points > 0 {
        let share = |n: usize| 100.0 * n as f64 / points as f64;
        println!("\ntuned choice within 5% of the fastest at {within} of {points} points ({:.1}%)", share(within));
        match within_runnable {
            Some(n) => {
                println!("tuned choice within 5% of the fastest variant the lowering may run at {n} of {points} points ({:.1}%)", share(n))
            }
            None => println!("(this profile predates the count against the variants the lowering may run)"),
        }
    }
    if curves {
        let timings = if p.verification.is_empty() { &p.linear } else { &p.verification };
        for s in &p.table.shapes {
            let times = ShapeTimes::new(timings, s.n, s.k);
            println!("\n[N={}, K={}] us per call, every variant measured (* fastest)", s.n, s.k);
            for &m in &times.ms {
                let fastest = times.fastest(m).map(|(v, _)| v);
                let cells: Vec<String> = timings
                    .iter()
                    .filter(|t| (t.n, t.k, t.m) == (s.n, s.k, m))
                    .filter_map(|t| t.variant.map(|v| format!("{v}: {:.1}{}", t.micros, if Some(v) == fastest { "*" } else { "" })))
                    .collect();
                println!("  M={m:<4} {}", cells.join(" | "));
            }
        }
    }
}

/// A dataflow table's thresholds and parameters, shape by shape.
pub fn print_table(t: &fdpp_runtime::dataflow::DataflowTable) {
    println!("dataflow table ({}): shapes not listed use M1 = {}, M2 = {}", t.source, t.fallback.m1, t.fallback.m2);
    for s in &t.shapes {
        let mut tiling = s.flat.map_or("default".into(), |f| f.to_string());
        for later in &s.flat_later {
            tiling += &format!(" then {} from M={}", later.tiling, later.from_m);
        }
        let split = s.gemv_split_k_from.map_or("default".into(), |from| format!("from M={from}"));
        println!(
            "  [N={:>6}, K={:>6}]  A below M1 = {:<4} C from M2 = {:<4} B tile {tiling:<16} GEMV split-K {split}",
            s.n, s.k, s.inflections.m1, s.inflections.m2
        );
    }
}
