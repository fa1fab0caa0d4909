//! `fdpp calibrate`: choosing the unified max phi of the split-KV attention per layer from the
//! scores a model actually produces, and measuring how often held-out prompts would still
//! leave the chosen range (the fallback rate).
//!
//! Sample prompts (token ids) run through the model on any backend, one prefill each. Each
//! layer's attention input (Q and K after RoPE, the launch that completes the RoPE's output:
//! the RoPE itself, or the QKV GEMV it is fused into) is read back with
//! `Executor::run_tapped`, and the scores s = scale * q.k of every (query token, head,
//! causal key) are computed on the host. A prefill row attends to exactly the keys a decode
//! step at its position would, so these are the rows split-KV sees. Per layer and KV-head
//! group the statistics are kept; per layer phi and the safe range are chosen (`choice`);
//! the last `held` prompts are not used for the choice, only to count the rows the kernels
//! would flag under it. `store` keeps the result in the cache folder, keyed by the model.

pub mod choice;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendOptions, Capacity, StepInput, Tap};
use crate::engine::Driver;
use crate::error::{Error, Result};
use crate::graph::{self, Op};
use crate::lower::kernel::{HeadDims, PhiSource, UnifiedMax};
use crate::lower::{LoweredStep, Lowering, LoweringOptions, NodeStep};
use crate::model::{ModelConfig, WeightSource};
use choice::{Covers, Fallback, RowRange};

/// The built-in sample prompts, one a line: prose, questions, instructions, code, numbers,
/// lists and other languages, so the scores cover more than one kind of text. The last
/// [`DEFAULT_HELD`] are held out.
pub const DEFAULT_PROMPTS: &str = include_str!("prompts.txt");

/// Prompts of the built-in set kept for the fallback rate.
pub const DEFAULT_HELD: usize = 4;

/// The prompts of a prompts file: one per line, blank lines skipped.
pub fn prompt_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect()
}

/// The version of fdpp a calibration was made by.
pub const FDPP_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    pub backend: BackendOptions,
    /// The lowering the prompts run with (any: only the scores are read).
    pub lowering: LoweringOptions,
    /// The last `held` prompts are held out: not used to choose phi, only for the fallback rate.
    pub held: usize,
}

/// What a calibration is doing, for progress display.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    Loading { done: usize, total: usize },
    Running { done: usize, total: usize },
}

/// Three points of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p1: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Percentiles {
    fn of(sorted: &[f32]) -> Percentiles {
        if sorted.is_empty() {
            return Percentiles::default();
        }
        let q = |p| choice::quantile(sorted, p) as f64;
        Percentiles { p1: q(0.01), p50: q(0.5), p99: q(0.99) }
    }
}

/// The softmax inputs of a set of (token, head) rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    /// (token, head) rows.
    pub rows: usize,
    /// (token, head, key) scores.
    pub scores: usize,
    pub min: f64,
    pub max: f64,
    /// The distribution of each row's largest score.
    pub row_max: Percentiles,
    /// The distribution of each row's smallest score (the kernels flag a row on it too).
    pub row_min: Percentiles,
}

impl ScoreStats {
    pub fn of(rows: &[RowRange], scores: usize) -> ScoreStats {
        let mut mins: Vec<f32> = rows.iter().map(|r| r.min).collect();
        let mut maxs: Vec<f32> = rows.iter().map(|r| r.max).collect();
        mins.sort_by(f32::total_cmp);
        maxs.sort_by(f32::total_cmp);
        ScoreStats {
            rows: rows.len(),
            scores,
            min: mins.first().map_or(0.0, |&v| v as f64),
            max: maxs.last().map_or(0.0, |&v| v as f64),
            row_max: Percentiles::of(&maxs),
            row_min: Percentiles::of(&mins),
        }
    }
}

/// One layer's calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCalibration {
    pub layer: usize,
    /// Phi and the safe range of s - phi (the default where `synchronised`).
    pub unified: UnifiedMax,
    /// Its scores spread wider than any window covers: decode runs the synchronised softmax.
    pub synchronised: bool,
    pub covers: Covers,
    /// The observed score interval the window was centred on.
    pub interval: (f32, f32),
    /// The calibration prompts' scores.
    pub scores: ScoreStats,
    /// The same per KV-head group (the query heads sharing one KV head).
    pub groups: Vec<ScoreStats>,
    /// The held prompts' rows, and those the kernels would flag (`None` where synchronised:
    /// the unified max never runs).
    pub held: Option<Fallback>,
}

/// A model's calibration, as `fdpp calibrate` stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub fdpp_version: String,
    /// `store::model_identity` of the model it was made for.
    pub model_identity: String,
    /// The model, as described when it was loaded.
    pub model: String,
    /// The backend the prompts ran on.
    pub backend: String,
    /// UTC, YYYY-MM-DD.
    pub date: String,
    /// Prompts (and their tokens) phi was chosen from.
    pub prompts: usize,
    pub tokens: usize,
    /// Held-out prompts (and their tokens) the fallback rate was measured on.
    pub held_prompts: usize,
    pub held_tokens: usize,
    /// H of the window (-H, H) around phi (`choice::half_width`).
    pub half_width: f32,
    pub layers: Vec<LayerCalibration>,
    /// Held rows of the layers that use the unified max, and those flagged (`None`: no prompts held).
    pub held_fallback: Option<Fallback>,
    /// The same rows of every layer under the default phi 0 and range (-60, 60), for comparison.
    #[serde(default)]
    pub held_fallback_default: Option<Fallback>,
}

impl Calibration {
    pub fn source(&self) -> PhiSource {
        PhiSource::Calibrated { prompts: self.prompts, date: self.date.clone() }
    }

    /// `base` with this calibration's phi, ranges and synchronised layers.
    pub fn lowering(&self, base: &LoweringOptions) -> LoweringOptions {
        LoweringOptions {
            unified_max: self.layers.iter().map(|l| l.unified).collect(),
            synchronised: self.layers.iter().map(|l| l.synchronised).collect(),
            phi_source: self.source(),
            ..base.clone()
        }
    }
}

/// One attention layer as the taps see it.
#[derive(Clone, Copy, Debug)]
struct AttentionInput {
    layer: usize,
    dims: HeadDims,
    scale: f32,
}

/// The taps of a step: per attention node, the last launch of the node that completes its
/// input (Q, K, V after RoPE), whole.
fn attention_taps(l: &Lowering, step: &LoweredStep, found: &mut Vec<AttentionInput>) -> Result<Vec<Tap>> {
    let done = crate::check::points::completed(l, step);
    let m = step.shape.m;
    found.clear();
    let mut taps = Vec::new();
    for &n in &l.order {
        let node = &l.graph.nodes[n];
        let Op::Attention { layer, num_heads, num_kv_heads, head_dim, scale } = node.op else { continue };
        let qkv = node.inputs[0];
        let launches = done.iter().zip(&step.nodes).find_map(|(t, s)| match s {
            NodeStep::Runs { launches, .. } if *t == Some(qkv) => Some(launches.clone()),
            _ => None,
        });
        let Some(launches) = launches else {
            return Err(Error::InvalidArgument(format!("calibrate: no launch of this lowering completes layer {layer}'s attention input")));
        };
        taps.push(Tap { launch: launches.end - 1, elements: m * l.graph.tensors[qkv].row_width(), perturb: None });
        found.push(AttentionInput { layer, dims: HeadDims { heads: num_heads, kv_heads: num_kv_heads, head_dim }, scale });
    }
    Ok(taps)
}

/// The (KV-head group, row range) of every (token, head) row of one prompt's `m` tokens,
/// from its `[m, q | k | v]` rows, and the number of scores.
/// An error is what the backend got wrong (the reason, for `Error::Backend`).
fn score_rows(qkv: &[f32], m: usize, a: AttentionInput) -> Result<(Vec<(usize, RowRange)>, usize), String> {
    let d = a.dims;
    let (hd, width, group) = (d.head_dim, d.qkv_width(), d.heads / d.kv_heads.max(1));
    if qkv.len() < m * width {
        return Err(format!("layer {}: read back {} values of the attention input, expected {}", a.layer, qkv.len(), m * width));
    }
    let mut rows = Vec::with_capacity(m * d.heads);
    let mut scores = 0;
    for i in 0..m {
        for h in 0..d.heads {
            let kvh = h / group.max(1);
            let q = &qkv[i * width + h * hd..][..hd];
            let mut r = RowRange { min: f32::INFINITY, max: f32::NEG_INFINITY };
            for j in 0..=i {
                let k = &qkv[j * width + d.q_dim() + kvh * hd..][..hd];
                let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                // As the kernels do it: the dot product, then times the scale, in f32.
                let s = dot as f32 * a.scale;
                if !s.is_finite() {
                    return Err(format!("layer {}: a non-finite attention score (token {i}, head {h}, key {j})", a.layer));
                }
                r.min = r.min.min(s);
                r.max = r.max.max(s);
            }
            scores += i + 1;
            rows.push((kvh, r));
        }
    }
    Ok((rows, scores))
}

/// The rows a layer produced over a set of prompts, per KV-head group.
#[derive(Clone, Debug, Default)]
struct LayerRows {
    groups: Vec<Vec<RowRange>>,
    scores: Vec<usize>,
}

impl LayerRows {
    fn add(&mut self, rows: Vec<(usize, RowRange)>, kv_heads: usize, scores: usize) {
        self.groups.resize(kv_heads, vec![]);
        self.scores.resize(kv_heads, 0);
        for (g, r) in rows {
            self.groups[g].push(r);
        }
        // Every group has the same number of heads: an even share of the scores.
        for s in &mut self.scores {
            *s += scores / kv_heads.max(1);
        }
    }

    fn all(&self) -> Vec<RowRange> {
        self.groups.concat()
    }
}

/// Checks the prompts against the model and the split into calibration and held prompts.
pub fn check_prompts(prompts: &[Vec<u32>], held: usize, max_context: usize) -> Result<()> {
    if prompts.is_empty() {
        return Err(Error::InvalidArgument("calibrate: no prompts".into()));
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::InvalidArgument(format!("calibrate: prompt {} has no tokens", i + 1)));
    }
    if held >= prompts.len() {
        return Err(Error::InvalidArgument(format!(
            "calibrate: {held} held prompt(s) of {}: keep at least one prompt to choose phi from (a smaller --held, or more prompts)",
            prompts.len()
        )));
    }
    if let Some((i, p)) = prompts.iter().enumerate().find(|(_, p)| p.len() > max_context) {
        return Err(Error::PromptTooLong { tokens: p.len(), limit: max_context, hint: format!(" (prompt {})", i + 1) });
    }
    Ok(())
}

/// Calibrates phi for the model (`config`, `weights`, described as `model`, identified as
/// `identity`) on `prompts` (token ids; the last `opts.held` held out).
pub fn run(
    model: &str,
    identity: &str,
    config: &ModelConfig,
    weights: &dyn WeightSource,
    prompts: &[Vec<u32>],
    opts: &CalibrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Calibration> {
    check_prompts(prompts, opts.held, config.max_context)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
    let capacity = Capacity { max_seqs: 1, max_context: longest };
    let graph = graph::llama::build(config);
    let mut driver = Driver::load(&opts.backend, graph, &opts.lowering, weights, capacity, &mut |done, total| {
        progress(Progress::Loading { done, total })
    })?;
    let first_held = prompts.len() - opts.held;
    let layers = config.num_layers;
    let mut calib = vec![LayerRows::default(); layers];
    let mut held = vec![Vec::<RowRange>::new(); layers];
    for (pi, prompt) in prompts.iter().enumerate() {
        progress(Progress::Running { done: pi, total: prompts.len() });
        driver.reset_sequence(0);
        let positions: Vec<usize> = (0..prompt.len()).collect();
        let seqs = vec![0; prompt.len()];
        let input = StepInput { tokens: prompt, positions: &positions, seqs: &seqs, out_rows: &[prompt.len() - 1] };
        let mut found = Vec::new();
        let (_, _, tapped) = driver.step_tapped(&input, &mut |l, step| attention_taps(l, step, &mut found))?;
        for (a, values) in found.iter().zip(&tapped) {
            let (rows, scores) = score_rows(values, prompt.len(), *a).map_err(|reason| Error::Backend {
                backend: opts.backend.kind().name().into(),
                op: "calibrating the unified max".into(),
                reason,
            })?;
            if pi < first_held {
                calib[a.layer].add(rows, a.dims.kv_heads, scores);
            } else {
                held[a.layer].extend(rows.into_iter().map(|(_, r)| r));
            }
        }
    }
    progress(Progress::Running { done: prompts.len(), total: prompts.len() });
    let out = calib
        .iter()
        .zip(&held)
        .enumerate()
        .map(|(layer, (rows, held))| {
            let all = rows.all();
            let c = choice::choose(&all, config.max_context);
            let groups = rows.groups.iter().zip(&rows.scores).map(|(g, &s)| ScoreStats::of(g, s)).collect();
            LayerCalibration {
                layer,
                unified: c.unified,
                synchronised: c.synchronised,
                covers: c.covers,
                interval: c.interval,
                scores: ScoreStats::of(&all, rows.scores.iter().sum()),
                groups,
                held: (!c.synchronised && opts.held > 0).then(|| Fallback::count(held, c.unified)),
            }
        })
        .collect::<Vec<_>>();
    let held_fallback = (opts.held > 0).then(|| out.iter().filter_map(|l| l.held).fold(Fallback::default(), |a, b| a + b));
    let held_fallback_default = (opts.held > 0)
        .then(|| held.iter().map(|rows| Fallback::count(rows, UnifiedMax::default())).fold(Fallback::default(), |a, b| a + b));
    Ok(Calibration {
        fdpp_version: FDPP_VERSION.into(),
        model_identity: identity.into(),
        model: model.into(),
        backend: driver.describe(),
        date: today(),
        prompts: first_held,
        tokens: prompts[..first_held].iter().map(Vec::len).sum(),
        held_prompts: opts.held,
        held_tokens: prompts[first_held..].iter().map(Vec::len).sum(),
        half_width: choice::half_width(config.max_context),
        layers: out,
        held_fallback,
        held_fallback_default,
    })
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests;
