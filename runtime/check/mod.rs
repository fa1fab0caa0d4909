//! `fdpp check`: one model on several backends, the same token ids through each (a
//! prefill, then decode steps fed the first backend's greedy ids), every node's output read
//! back as it is produced and compared with the first backend's, so the report names the
//! first node where a backend disagrees and the kernel variant each backend ran there.
//!
//! Every backend runs the same lowered graph, so nodes line up one to one; where a backend
//! fuses a node into a neighbour's launch, the comparison point covers both (`points`).
//! Backends run one after another (one model in memory at a time); the first backend's
//! outputs are kept until every other backend has been compared with them.

pub mod metrics;
pub mod points;
pub mod report;
pub mod tolerance;

use std::str::FromStr;

use crate::backend::{self, BackendOptions, Capacity};
use crate::engine::Driver;
use crate::error::{Error, Result};
use crate::graph::{self, Graph, NodeId, TensorId};
use crate::lower::kernel::Variant;
use crate::lower::{LoweredStep, Lowering, LoweringOptions, NodeStep};
use crate::model::{ModelConfig, WeightSource};
use crate::sampling::argmax;
use crate::trace::{How, NodeRecord, Phase, StepShape};
use metrics::{LogitsComparison, Metrics};
use points::Captured;
use report::{BackendInfo, CheckReport, Comparison, Divergence, GroupSummary, KindSummary, PointReport, Ran, StepComparison};
use tolerance::{Precision, Tolerance, ToleranceProfile};

/// Top-k of the logits compared at every step.
pub const LOGITS_TOP_K: usize = 5;

/// The default scale of `--inject`: values move by half their largest magnitude, five
/// times the loosest tolerance.
pub const DEFAULT_INJECT_SCALE: f32 = 0.5;

/// A perturbation of the second backend (`NAME[:scale]`): of one node's output
/// (`--inject`), or of every launch of one kernel variant (`--break-variant`, a test hook
/// standing for a broken kernel). See `backend::tap::perturb`.
#[derive(Clone, Debug, PartialEq)]
pub struct Perturbation {
    /// A node name (`layers.7.ffn.down`) or a variant label (`B:flat_gemm`).
    pub target: String,
    pub scale: f32,
}

impl FromStr for Perturbation {
    type Err = Error;
    /// `NAME` or `NAME:SCALE` (variant labels hold a colon themselves: a suffix that is not
    /// a number belongs to the name).
    fn from_str(s: &str) -> Result<Self> {
        let (target, scale) = match s.rsplit_once(':') {
            Some((name, scale)) if scale.parse::<f32>().is_ok() => (name, scale.parse::<f32>().expect("checked")),
            _ => (s, DEFAULT_INJECT_SCALE),
        };
        if target.is_empty() {
            return Err(Error::InvalidArgument(format!("`{s}`: give a node name, e.g. layers.0.ffn.down or layers.0.ffn.down:0.5")));
        }
        if !scale.is_finite() || scale == 0.0 {
            return Err(Error::InvalidArgument(format!("`{s}`: the scale must be a finite number other than 0")));
        }
        Ok(Perturbation { target: target.to_string(), scale })
    }
}

impl std::fmt::Display for Perturbation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.target, self.scale)
    }
}

#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The backends, at least two; the first is the reference the others are compared with.
    pub backends: Vec<BackendOptions>,
    /// Decode steps after the prefill.
    pub steps: usize,
    pub profile: ToleranceProfile,
    /// The lowering every backend gets (`fuse: false` compares every node by itself).
    pub lowering: LoweringOptions,
    /// Perturb this node's output on the second backend, so the check has something to find.
    pub inject: Option<Perturbation>,
    /// Perturb every output of this kernel variant (its label, e.g. `B:flat_gemm`) on the
    /// second backend: a broken kernel, for testing that the check names it.
    #[doc(hidden)]
    pub break_variant: Option<Perturbation>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            backends: vec![],
            steps: 4,
            profile: ToleranceProfile::Default,
            lowering: LoweringOptions::default(),
            inject: None,
            break_variant: None,
        }
    }
}

/// What a check is doing, for progress display.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Loading the weights into backend `backend` (index into `CheckOptions::backends`).
    Loading { backend: usize, done: usize, total: usize },
    /// Running its steps.
    Running { backend: usize, done: usize, total: usize },
}

/// Every backend this machine has, the CPU (the oracle) first: wgpu where an adapter
/// exists, CUDA where its driver loads on a device it runs on, HIP where ROCm lists an AMD GPU.
pub fn present_backends() -> Vec<BackendOptions> {
    let mut out = vec![BackendOptions::Cpu];
    #[cfg(feature = "wgpu")]
    if !backend::wgpu::device::adapters().is_empty() {
        out.push(BackendOptions::Wgpu(Default::default()));
    }
    if backend::has_cuda_device() {
        out.push(BackendOptions::Cuda(Default::default()));
    }
    if backend::has_hip_device() {
        out.push(BackendOptions::Hip(Default::default()));
    }
    out
}

/// One step of one backend, as the comparison needs it.
struct StepRun {
    step: std::sync::Arc<LoweredStep>,
    /// Per node (execution order), the tensor its launches completed.
    completed: Vec<Option<TensorId>>,
    captured: Captured,
    records: Vec<NodeRecord>,
    logits: Vec<f32>,
}

/// Runs `prompt` (token ids) and `opts.steps` decode steps of the model (`config` and
/// `weights`, described as `model`) on every backend of `opts` and compares each with the
/// first. A check that finds a divergence still returns its report (`CheckReport::passed`
/// says); errors are for checks that could not run.
pub fn run(
    model: &str,
    config: &ModelConfig,
    weights: &dyn WeightSource,
    prompt: &[u32],
    opts: &CheckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport> {
    if opts.backends.len() < 2 {
        return Err(Error::InvalidArgument("a check needs at least two backends (the first is the reference)".into()));
    }
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let positions = prompt.len() + opts.steps;
    if positions > config.max_context {
        return Err(Error::PromptTooLong { tokens: positions, limit: config.max_context, hint: "; check fewer steps".into() });
    }
    let graph = graph::llama::build(config);
    if let Some(p) = &opts.inject
        && !graph.nodes.iter().any(|n| n.name == p.target)
    {
        return Err(unknown_node(&graph, &p.target));
    }
    let capacity = Capacity { max_seqs: 1, max_context: positions };
    let mut backends = Vec::with_capacity(opts.backends.len());
    let mut reference: Vec<StepRun> = Vec::new();
    let mut reference_ids = Vec::new();
    let mut comparisons = Vec::new();
    for (bi, options) in opts.backends.iter().enumerate() {
        let mut driver = Driver::load(options, graph.clone(), &opts.lowering, weights, capacity, &mut |done, total| {
            progress(Progress::Loading { backend: bi, done, total })
        })?;
        let caps = driver.lowering().caps.clone();
        // Against the reference (the reference itself: against itself, unused).
        let precision = Precision::of(backends.first().map_or(&caps, |r: &BackendInfo| &r.caps), &caps);
        backends.push(BackendInfo { kind: options.kind().name().into(), device: driver.describe(), caps });
        let perturbing = bi == 1 && (opts.inject.is_some() || opts.break_variant.is_some());
        let mut perturbed = 0usize;
        let mut runs = Vec::with_capacity(opts.steps + 1);
        for t in 0..=opts.steps {
            progress(Progress::Running { backend: bi, done: t, total: opts.steps + 1 });
            // The prompt, then the reference's greedy ids one position at a time.
            let (tokens, first) = if t == 0 { (prompt.to_vec(), 0) } else { (vec![reference_ids[t - 1]], prompt.len() + t - 1) };
            let positions: Vec<usize> = (first..first + tokens.len()).collect();
            let seqs = vec![0; tokens.len()];
            let input = backend::StepInput { tokens: &tokens, positions: &positions, seqs: &seqs, out_rows: &[tokens.len() - 1] };
            let mut taps = |l: &Lowering, step: &LoweredStep| {
                if !perturbing {
                    return Ok(points::taps(l, step, &|_, _| None));
                }
                if t == 0 {
                    check_injection_runs(l, step, opts.inject.as_ref(), options)?;
                }
                let perturb = |n: NodeId, v: Variant| {
                    let node = opts.inject.as_ref().filter(|p| l.graph.nodes[n].name == p.target);
                    node.or(opts.break_variant.as_ref().filter(|p| v.label() == p.target)).map(|p| p.scale)
                };
                let taps = points::taps(l, step, &perturb);
                perturbed += taps.iter().filter(|t| t.perturb.is_some()).count();
                Ok(taps)
            };
            let (step, logits, tapped) = driver.step_tapped(&input, &mut taps)?;
            let l = driver.lowering();
            let run = StepRun {
                completed: points::completed(l, &step),
                captured: Captured::new(l, &step, tapped),
                records: l.records(&step, None),
                step,
                logits,
            };
            if bi == 0 {
                reference_ids.push(argmax(&run.logits));
                reference.push(run);
            } else {
                let phase = if t == 0 { Phase::Prefill } else { Phase::Decode };
                runs.push(compare_step(l, (&reference[t], &run), phase, (first, &tokens), opts.profile, precision));
            }
        }
        progress(Progress::Running { backend: bi, done: opts.steps + 1, total: opts.steps + 1 });
        if perturbing && perturbed == 0 {
            return Err(never_perturbed(opts, options));
        }
        if bi > 0 {
            comparisons.push(summarise(bi, precision, runs, &reference_ids));
        }
    }
    let injected = opts.inject.iter().chain(&opts.break_variant).map(|p| p.to_string()).next();
    Ok(CheckReport {
        model: model.to_string(),
        prompt: prompt.to_vec(),
        decode_steps: opts.steps,
        profile: opts.profile,
        fused: opts.lowering.fuse,
        injected,
        backends,
        comparisons,
    })
}

fn unknown_node(g: &Graph, name: &str) -> Error {
    // The names of layer 0 stand for every layer's.
    let names: Vec<String> = g
        .nodes
        .iter()
        .filter(|n| !n.name.starts_with("layers.") || n.name.starts_with("layers.0."))
        .map(|n| format!("`{}`", n.name.replacen("layers.0.", "layers.N.", 1)))
        .collect();
    Error::InvalidArgument(format!(
        "--inject: this model has no node `{name}`; its nodes are {} for N in 0..{} (`fdpp inspect` lists them)",
        names.join(", "),
        g.config.num_layers
    ))
}

/// An injected node must run its own launch on the perturbed backend in the first step
/// (the prefill): a node fused into another launch has no output of its own to perturb.
fn check_injection_runs(l: &Lowering, step: &LoweredStep, inject: Option<&Perturbation>, backend: &BackendOptions) -> Result<()> {
    let Some(p) = inject else { return Ok(()) };
    let Some(at) = l.order.iter().position(|&n| l.graph.nodes[n].name == p.target) else { return Ok(()) };
    match &step.nodes[at] {
        NodeStep::Fused { into, fusion } => Err(Error::InvalidArgument(format!(
            "--inject {}: on {} this node has no output of its own in the prefill: it runs in the {} of `{}`'s launch; \
             inject `{}`, or check with fusion off",
            p.target,
            backend.kind(),
            l.fusions[*fusion].stage(),
            l.graph.nodes[*into].name,
            l.graph.nodes[*into].name
        ))),
        NodeStep::Runs { .. } => Ok(()),
    }
}

fn never_perturbed(opts: &CheckOptions, backend: &BackendOptions) -> Error {
    let what = match (&opts.inject, &opts.break_variant) {
        (Some(p), _) => format!("--inject {}: the node never ran a launch of its own on {}", p.target, backend.kind()),
        (None, Some(p)) => format!("--break-variant {}: no launch of {} ran this variant in the checked steps", p.target, backend.kind()),
        (None, None) => unreachable!("a perturbation was asked for"),
    };
    Error::InvalidArgument(what)
}

/// The launches of `records` (nodes in execution order).
fn launches(records: &[NodeRecord]) -> Vec<Ran> {
    records
        .iter()
        .filter_map(|r| match &r.how {
            How::Launch { variant, absorbs, .. } => Some(Ran { node: r.node.clone(), variant: *variant, absorbs: absorbs.clone() }),
            How::Fused { .. } => None,
        })
        .collect()
}

/// The layer of a node named `layers.N.…`.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("layers.")?.split('.').next()?.parse().ok()
}

/// One step of a backend against the same step of the reference: `tokens` at positions
/// from `first`.
fn compare_step(
    l: &Lowering,
    (r, c): (&StepRun, &StepRun),
    phase: Phase,
    (first, tokens): (usize, &[u32]),
    profile: ToleranceProfile,
    precision: Precision,
) -> StepComparison {
    let g = &l.graph;
    let points = points::points(l, &r.step, &c.step, &r.completed, &c.completed)
        .into_iter()
        .map(|p| {
            let last = l.order[p.nodes.end - 1];
            let kind = if p.tensor == g.logits { "logits" } else { g.nodes[last].op.kind_name() };
            let tolerance = Tolerance::of(profile, precision, kind);
            let metrics = Metrics::of(c.captured.values(p.tensor), r.captured.values(p.tensor));
            let node = g.nodes[l.order[p.named]].name.clone();
            PointReport {
                layer: layer_of(&node),
                node,
                covers: p.nodes.clone().map(|q| g.nodes[l.order[q]].name.clone()).collect(),
                tensor: g.tensors[p.tensor].name.clone(),
                kind: kind.to_string(),
                reference: launches(&r.records[p.nodes.clone()]),
                checked: launches(&c.records[p.nodes.clone()]),
                within: metrics.within(&tolerance),
                metrics,
                tolerance,
            }
        })
        .collect();
    let logits_tolerance = Tolerance::of(profile, precision, "logits");
    StepComparison {
        phase,
        // Not the lowered step's: decode steps of one size share one lowered step.
        shape: StepShape { m: tokens.len(), out: 1, sequences: 1, max_keys: first + tokens.len() },
        tokens: tokens.to_vec(),
        points,
        logits: LogitsComparison::of(&c.logits, &r.logits, LOGITS_TOP_K, &logits_tolerance),
    }
}

/// The comparison of backend `checked` over all steps: first divergence, summaries.
fn summarise(checked: usize, precision: Precision, steps: Vec<StepComparison>, reference_ids: &[u32]) -> Comparison {
    let first_divergence = steps.iter().enumerate().find_map(|(si, s)| {
        let pi = s.points.iter().position(|p| !p.within)?;
        let p = &s.points[pi];
        Some(Divergence {
            step: si,
            point: pi,
            node: p.node.clone(),
            reference: PointReport::launch_of(&p.reference, &p.node).cloned(),
            checked: PointReport::launch_of(&p.checked, &p.node).cloned(),
        })
    });
    let first_logits_failure = steps.iter().position(|s| !s.logits.within);
    let checked_ids = steps.iter().map(|s| s.logits.checked_top[0].0).collect();
    let groups = group_summaries(&steps);
    let kinds = kind_summaries(&steps);
    Comparison {
        reference: 0,
        checked,
        precision,
        steps,
        reference_ids: reference_ids.to_vec(),
        checked_ids,
        first_divergence,
        first_logits_failure,
        groups,
        kinds,
    }
}

/// Adds one point to a running maximum of finite errors.
fn worst(max_rel: &mut f64, max_cos: &mut f64, m: &Metrics) {
    if let Some(e) = m.errors {
        *max_rel = max_rel.max(e.rel);
        *max_cos = max_cos.max(e.cos_distance);
    }
}

/// Per layer (with the embedding before and the head after), over every step.
fn group_summaries(steps: &[StepComparison]) -> Vec<GroupSummary> {
    let mut groups: Vec<GroupSummary> = Vec::new();
    for s in steps {
        let mut seen_layer = false;
        for p in &s.points {
            let name = match p.layer {
                Some(l) => {
                    seen_layer = true;
                    format!("layers.{l}")
                }
                None if seen_layer => "head".into(),
                None => "embed".into(),
            };
            let i = groups.iter().position(|g| g.group == name).unwrap_or_else(|| {
                groups.push(GroupSummary { group: name, points: 0, max_rel: 0.0, max_cos_distance: 0.0, non_finite: 0, beyond: 0 });
                groups.len() - 1
            });
            let g = &mut groups[i];
            g.points += 1;
            worst(&mut g.max_rel, &mut g.max_cos_distance, &p.metrics);
            g.non_finite += usize::from(p.metrics.reference.any() || p.metrics.checked.any());
            g.beyond += usize::from(!p.within);
        }
    }
    groups
}

/// Per kind of compared tensor, over every step, in `tolerance::KINDS` order.
fn kind_summaries(steps: &[StepComparison]) -> Vec<KindSummary> {
    tolerance::KINDS
        .iter()
        .filter_map(|&kind| {
            let points: Vec<&PointReport> = steps.iter().flat_map(|s| &s.points).filter(|p| p.kind == kind).collect();
            let first = points.first()?;
            let (mut max_rel, mut max_cos_distance) = (0.0, 0.0);
            points.iter().for_each(|p| worst(&mut max_rel, &mut max_cos_distance, &p.metrics));
            Some(KindSummary { kind: kind.into(), points: points.len(), max_rel, max_cos_distance, tolerance: first.tolerance })
        })
        .collect()
}

#[cfg(test)]
mod tests;
