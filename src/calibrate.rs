//! `fdpp calibrate`: chooses the unified max phi of the split-KV attention per layer from the
//! scores sample prompts produce (`fdpp_runtime::calibrate`), prints a per-layer table with
//! the held-out fallback rate, and stores the calibration in the cache folder, where
//! `generate` (and `inspect`) find it for the same model.

use std::path::PathBuf;

use fdpp_runtime::calibrate::{self, CalibrateOptions, Calibration, DEFAULT_HELD, DEFAULT_PROMPTS, Progress, store};
use fdpp_runtime::lower::LoweringOptions;
use fdpp_runtime::model::{Model, hub};
use fdpp_runtime::{Error, Result};

use crate::{DeviceArgs, progress};

#[derive(clap::Args)]
pub struct CalibrateArgs {
    /// Model file (.gguf) or Hugging Face folder. Default: SmolLM2-135M-Instruct, fetched once into the cache.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sample prompts, one per line (blank lines skipped). Default: a built-in set of 20
    /// varied prompts (prose, questions, code, numbers, lists, French).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Prompts kept out of the choice of phi (the last N), on which the fallback rate is
    /// measured. Default: 4 of the built-in set, else a quarter of the file's prompts.
    #[arg(long)]
    held: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Also write the calibration (every layer's statistics) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    let (text, from) = match &args.prompts {
        Some(path) => (std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?, path.display().to_string()),
        None => (DEFAULT_PROMPTS.to_string(), "the built-in prompts".to_string()),
    };
    let lines = calibrate::prompt_lines(&text);
    if lines.is_empty() {
        return Err(Error::InvalidArgument(format!("{from}: no prompts (one per line; blank lines are skipped)")));
    }
    let held = args.held.unwrap_or(if args.prompts.is_some() { lines.len() / 4 } else { DEFAULT_HELD });
    let model = Model::load(crate::resolve_model(args.model.as_deref())?)?;
    eprintln!("fdpp: {}", model.describe());
    let mut prompts = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let ids = model.tokenizer.encode(line, true)?;
        if ids.is_empty() {
            return Err(Error::InvalidArgument(format!("{from}: prompt {} makes no tokens", i + 1)));
        }
        prompts.push(ids);
    }
    calibrate::check_prompts(&prompts, held, model.config.max_context).map_err(|e| match e {
        Error::PromptTooLong { tokens, limit, hint } => {
            Error::PromptTooLong { tokens, limit, hint: format!("{hint} of {from}; shorten it or leave it out") }
        }
        other => other,
    })?;
    let identity = store::model_identity(&model.config, model.weights.as_ref())?;
    let opts = CalibrateOptions { backend: args.device.backend()?, lowering: LoweringOptions::default(), held };
    let mut bar = progress::Bar::hidden();
    let mut running = progress::Bar::hidden();
    let description = model.describe();
    let cal = calibrate::run(&description, &identity, &model.config, model.weights.as_ref(), &prompts, &opts, &mut |p| match p {
        Progress::Loading { done, total } => bar.count(done, total, "loading weights"),
        Progress::Running { done, total } => {
            bar.finish();
            running.count(done, total, "running prompts")
        }
    })?;
    running.finish();
    print_table(&cal);
    let path = store::save(&hub::cache_dir()?, &cal)?;
    println!("calibration stored in {}", path.display());
    if let Some(json) = &args.json {
        let text = serde_json::to_string_pretty(&cal).map_err(|e| Error::InvalidArgument(format!("calibration: {e}")))?;
        std::fs::write(json, text).map_err(|e| Error::io(json, e))?;
        println!("calibration written to {}", json.display());
    }
    Ok(())
}

fn print_table(c: &Calibration) {
    println!(
        "calibrated on {} prompts ({} tokens), fallback measured on {} held prompts ({} tokens), on {}, {}",
        c.prompts, c.tokens, c.held_prompts, c.held_tokens, c.backend, c.date
    );
    println!("window: s - phi in (-{h}, {h}) (f32 sums stay finite and normal)", h = c.half_width);
    println!();
    println!(
        "{:>5} {:>8} {:>17} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>10}",
        "layer", "phi", "range of s", "max p1", "max p50", "max p99", "min s", "max s", "sync", "held fb"
    );
    for l in &c.layers {
        let s = &l.scores;
        let (phi, range) = if l.synchronised {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{}", l.unified.phi), format!("({}, {})", l.unified.phi + l.unified.lo, l.unified.phi + l.unified.hi))
        };
        let held = match l.held {
            Some(f) => format!("{:.3}%", 100.0 * f.rate()),
            None if l.synchronised => "-".into(),
            None => "n/a".into(),
        };
        println!(
            "{:>5} {:>8} {:>17} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>6} {:>10}",
            l.layer,
            phi,
            range,
            s.row_max.p1,
            s.row_max.p50,
            s.row_max.p99,
            s.min,
            s.max,
            if l.synchronised { "yes" } else { "no" },
            held
        );
    }
    println!();
    let synchronised = c.layers.iter().filter(|l| l.synchronised).count();
    if synchronised > 0 {
        println!("{synchronised} layer(s) synchronised: their scores spread wider than the window; decode runs the online softmax there");
    }
    match c.held_fallback {
        Some(f) => println!(
            "held fallback rate: {:.4}% ({} of {} (token, head) rows of the split-KV layers leave the range)",
            100.0 * f.rate(),
            f.flagged,
            f.rows
        ),
        None => println!("held fallback rate: not measured (no held prompts)"),
    }
    if let Some(f) = c.held_fallback_default {
        println!("(with the default phi 0 and range (-60, 60): {:.4}%, {} of {} rows of all layers)", 100.0 * f.rate(), f.flagged, f.rows);
    }
}
