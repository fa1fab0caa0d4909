//! Backends execute a planned graph. The engine drives them one step at a time through
//! [`Executor`]; a step is a whole graph run over `m` tokens that may belong to several
//! sequences, so a GPU backend can record a step once and replay it.

pub mod cpu;
pub mod wgpu;

use serde::{Deserialize, Serialize};

use crate::engine::Sampler;
use crate::error::{Error, Result};
use crate::graph::{Graph, Plan};
use crate::tensor::HostTensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendKind {
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// One graph run. Token `i` belongs to sequence `seqs[i]` at position `positions[i]`;
/// it attends to that sequence's positions `0..=positions[i]`. Logits are produced for
/// the token rows listed in `out_rows`.
#[derive(Clone, Copy, Debug)]
pub struct StepInput<'a> {
    pub tokens: &'a [u32],
    pub positions: &'a [usize],
    pub seqs: &'a [usize],
    pub out_rows: &'a [usize],
}

impl StepInput<'_> {
    pub fn m(&self) -> usize {
        self.tokens.len()
    }
}

/// What one node did in the last step: the implementation it ran, why, and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub op: String,
    pub implementation: String,
    pub reason: String,
    /// Device time of the node, where the backend measures it.
    pub micros: Option<f64>,
}

/// Where the time of one step went, as far as the backend measures it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    /// Recording and submitting the step on the host (GPU backends).
    pub host_micros: Option<f64>,
    /// From the step's first kernel starting to its last finishing on the device.
    pub device_micros: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// Sequences that may be live at once.
    pub max_seqs: usize,
    /// Longest sequence (KV positions) the caches must hold.
    pub max_context: usize,
    /// GPU adapter to use (substring of its name); the preferred one when `None`.
    pub adapter: Option<String>,
    pub precision: wgpu::WeightPrecision,
    /// Largest weight chunk one GPU binding may hold, in bytes; larger tensors are split by
    /// rows. Default: the device's limit (e.g. 128 MiB on lavapipe).
    pub binding_limit: Option<u64>,
}

impl ExecutorOptions {
    pub fn new(max_seqs: usize, max_context: usize) -> Self {
        ExecutorOptions { max_seqs, max_context, adapter: None, precision: Default::default(), binding_limit: None }
    }
}

pub trait Executor: Send {
    /// Backend and device, e.g. `cpu (2 threads)`.
    fn describe(&self) -> String;
    /// Runs the graph over one step; returns `[out_rows, vocab]` logits.
    fn step(&mut self, input: &StepInput) -> Result<Vec<f32>>;
    /// Runs one step and returns the greedy token of each output row. GPU backends
    /// override this to sample on the device and read back only the ids.
    fn step_greedy(&mut self, input: &StepInput) -> Result<Vec<u32>> {
        let vocab = self.vocab_size();
        let logits = self.step(input)?;
        Ok(logits.chunks_exact(vocab).map(crate::engine::sampler::argmax).collect())
    }
    /// Decodes `steps` steps: step 0 takes `first` (one token per sequence, each its own
    /// output row); every later step feeds each sequence the id `sampler` drew from its
    /// logits the step before, one position further. `on_ids` sees each step's ids in
    /// order; when it returns false no further step starts. GPU backends sample on the
    /// device where they can, keep the ids there and record step t + 1 while step t runs,
    /// so one step past the stop may have run: its KV writes lie beyond the kept positions,
    /// which later steps overwrite before reading.
    fn decode(&mut self, first: &StepInput, steps: usize, sampler: &mut Sampler, on_ids: &mut dyn FnMut(&[u32]) -> bool) -> Result<()> {
        check_decode(first)?;
        decode_one_by_one(self, first, steps, sampler, on_ids)
    }
    /// Host and device time of the last step, or the mean over the steps of the last
    /// `decode`, where measured.
    fn last_step_timing(&self) -> StepTiming {
        StepTiming::default()
    }
    fn vocab_size(&self) -> usize;
    /// Measures every node's device time in the following steps (GPU backends; slower,
    /// since each node becomes its own pass). The CPU backend always times its nodes.
    fn set_profiling(&mut self, _on: bool) -> Result<()> {
        Ok(())
    }
    /// Forgets a sequence's KV cache so its slot can be reused.
    fn reset_sequence(&mut self, seq: usize);
    /// Per-node records of the last step, in execution order.
    fn last_step_records(&self) -> &[NodeRecord];
}

/// Checks a step against the executor's limits; shared by every backend.
pub fn validate_step(input: &StepInput, opts: &ExecutorOptions, vocab: usize) -> Result<()> {
    let m = input.m();
    if m == 0 {
        return Err(Error::InvalidArgument("a step needs at least one token".into()));
    }
    if input.positions.len() != m || input.seqs.len() != m {
        return Err(Error::InvalidArgument(format!(
            "step has {m} tokens but {} positions and {} sequence ids",
            input.positions.len(),
            input.seqs.len()
        )));
    }
    if let Some(&t) = input.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!("token id {t} is outside the vocabulary (size {vocab})")));
    }
    if let Some(&p) = input.positions.iter().find(|&&p| p >= opts.max_context) {
        return Err(Error::PromptTooLong { tokens: p + 1, limit: opts.max_context, hint: String::new() });
    }
    if let Some(&s) = input.seqs.iter().find(|&&s| s >= opts.max_seqs) {
        return Err(Error::InvalidArgument(format!("sequence {s} >= max_seqs {}", opts.max_seqs)));
    }
    if let Some(&r) = input.out_rows.iter().find(|&&r| r >= m) {
        return Err(Error::InvalidArgument(format!("output row {r} >= {m} tokens")));
    }
    Ok(())
}

/// What `decode` accepts: every token its own output row, of its own sequence.
pub fn check_decode(first: &StepInput) -> Result<()> {
    let m = first.m();
    let mut seqs = first.seqs.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    if !first.out_rows.iter().copied().eq(0..m) || seqs.len() != m {
        return Err(Error::InvalidArgument("decoding takes one token per sequence, each its own output row".into()));
    }
    Ok(())
}

/// `decode` as a plain loop of steps, sampling on the host unless greedy.
pub fn decode_one_by_one<E: Executor + ?Sized>(
    exec: &mut E,
    first: &StepInput,
    steps: usize,
    sampler: &mut Sampler,
    on_ids: &mut dyn FnMut(&[u32]) -> bool,
) -> Result<()> {
    let mut tokens = first.tokens.to_vec();
    let mut positions = first.positions.to_vec();
    let vocab = exec.vocab_size();
    for _ in 0..steps {
        let input = StepInput { tokens: &tokens, positions: &positions, ..*first };
        tokens = if sampler.params().is_greedy() {
            exec.step_greedy(&input)?
        } else {
            exec.step(&input)?.chunks_exact(vocab).map(|row| sampler.sample(row)).collect()
        };
        if !on_ids(&tokens) {
            break;
        }
        positions.iter_mut().for_each(|p| *p += 1);
    }
    Ok(())
}

/// Creates an executor for `graph` with its parameters (in `graph.params` order).
pub fn create(kind: BackendKind, graph: &Graph, plan: &Plan, params: Vec<HostTensor>, opts: ExecutorOptions) -> Result<Box<dyn Executor>> {
    match kind {
        BackendKind::Cpu => Ok(Box::new(cpu::CpuExecutor::new(graph, plan, params, opts)?)),
        BackendKind::Wgpu => {
            let (adapter, precision) = (opts.adapter.clone(), opts.precision);
            Ok(Box::new(wgpu::WgpuExecutor::new(graph, plan, params, opts, adapter.as_deref(), precision)?))
        }
        other => Err(Error::BackendUnavailable {
            backend: other.name().into(),
            reason: "not implemented yet in this version of fdpp; use --backend cpu or wgpu".into(),
        }),
    }
}
