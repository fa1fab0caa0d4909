//! The driver of one loaded backend: checks each step, lowers it (once per step shape),
//! submits it and collects what it picked. Decoding is pipelined wherever the device picks
//! the next ids itself: step t + 1 is submitted, fed the ids step t picks on the device,
//! before step t is collected, so the host records a step while the device runs the one
//! before. Every backend gets this for free through the narrow `Executor` interface.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{self, BackendOptions, Capacity, Executor, Pick, StepInput, StepOutput, StepTiming, Tap, Tapped, Tokens};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::lower::{LoweredStep, Lowering, LoweringOptions, TableChoice};
use crate::model::WeightSource;
use crate::sampling::{Sampler, SamplingParams};
use crate::trace::{NodeRecord, StepShape};

type StepKey = (usize, usize, usize, Option<(usize, usize)>);

/// The last collected step: what ran, and what the backend measured.
struct LastStep {
    step: Arc<LoweredStep>,
    launch_micros: Option<Vec<f64>>,
    fallback_rows: Option<u32>,
}

pub struct Driver {
    lowering: Arc<Lowering>,
    exec: Box<dyn Executor>,
    capacity: Capacity,
    steps: HashMap<StepKey, Arc<LoweredStep>>,
    profiling: bool,
    last: Option<LastStep>,
    timing: StepTiming,
    notes: Vec<String>,
}

/// Decoding takes one token per sequence, each its own output row.
fn check_decode(first: &StepInput) -> Result<()> {
    let m = first.m();
    let mut seqs = first.seqs.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    if !first.out_rows.iter().copied().eq(0..m) || seqs.len() != m {
        return Err(Error::InvalidArgument("decoding takes one token per sequence, each its own output row".into()));
    }
    Ok(())
}

impl Driver {
    /// Checks `weights` against `graph`, opens the backend, lowers the graph for it and
    /// loads the weights (`progress(done, total)` per weight).
    pub fn load(
        backend: &BackendOptions,
        graph: Graph,
        lowering: &LoweringOptions,
        weights: &dyn WeightSource,
        capacity: Capacity,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Driver> {
        if capacity.max_context == 0 || capacity.max_seqs == 0 {
            return Err(Error::InvalidArgument("context length and sequence count must be at least 1".into()));
        }
        // Backends size buffers (the RoPE table among them) from the capacity: bound it first.
        let max_context = crate::model::config::MAX_CONTEXT;
        if capacity.max_context > max_context || capacity.max_seqs > super::memory::MAX_SEQS {
            return Err(Error::InvalidArgument(format!(
                "a context of {} positions for {} sequences is beyond fdpp's limits ({max_context} positions, {} sequences)",
                capacity.max_context,
                capacity.max_seqs,
                super::memory::MAX_SEQS
            )));
        }
        let file_types = graph.check_weights(weights)?;
        let device = backend::open(backend)?;
        super::memory::check_load(&graph, device.caps(), capacity)?;
        let (table, notes) = match &lowering.table {
            TableChoice::DeviceProfile => {
                let (table, note) = crate::tune::profile::tuned_table(device.caps());
                (table.map_or(TableChoice::BuiltIn, TableChoice::Given), note.into_iter().collect())
            }
            given => (given.clone(), vec![]),
        };
        let opts = LoweringOptions { table, file_types, ..lowering.clone() };
        let lowering = Arc::new(Lowering::new(graph, device.caps().clone(), &opts)?);
        let exec = device.load(Arc::clone(&lowering), weights, capacity, progress)?;
        Ok(Driver { lowering, exec, capacity, steps: HashMap::new(), profiling: false, last: None, timing: StepTiming::default(), notes })
    }

    /// What the user should know about how this driver was set up (e.g. no tuned profile
    /// for the device: the built-in table decides), one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn lowering(&self) -> &Lowering {
        &self.lowering
    }

    pub fn describe(&self) -> String {
        self.exec.describe()
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Checks a step against the model and the capacity, and lowers it.
    fn lowered(&mut self, input: &StepInput) -> Result<Arc<LoweredStep>> {
        let m = input.m();
        let vocab = self.lowering.graph.config.vocab_size;
        let cap = self.capacity;
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
        if let Some(&p) = input.positions.iter().find(|&&p| p >= cap.max_context) {
            return Err(Error::PromptTooLong { tokens: p + 1, limit: cap.max_context, hint: String::new() });
        }
        if let Some(&s) = input.seqs.iter().find(|&&s| s >= cap.max_seqs) {
            return Err(Error::InvalidArgument(format!("sequence {s} >= max_seqs {}", cap.max_seqs)));
        }
        if input.out_rows.is_empty() || input.out_rows.len() > cap.max_seqs.max(1) {
            return Err(Error::InvalidArgument(format!("{} output rows: 1..={} allowed", input.out_rows.len(), cap.max_seqs)));
        }
        if let Some(&r) = input.out_rows.iter().find(|&&r| r >= m) {
            return Err(Error::InvalidArgument(format!("output row {r} >= {m} tokens")));
        }
        let mut seqs = input.seqs.to_vec();
        seqs.sort_unstable();
        seqs.dedup();
        let max_keys = input.positions.iter().max().expect("m > 0") + 1;
        let shape = StepShape { m, out: input.out_rows.len(), sequences: seqs.len(), max_keys };
        let key = self.lowering.step_key(&shape);
        let lowering = &self.lowering;
        Ok(Arc::clone(self.steps.entry(key).or_insert_with(|| Arc::new(lowering.lower(&shape)))))
    }

    /// Runs one step to the end.
    fn run(&mut self, input: &StepInput, pick: Pick) -> Result<StepOutput> {
        let step = self.lowered(input)?;
        self.exec.submit(&step, input, Tokens::Host, &pick, 0)?;
        let out = self.exec.collect(0)?;
        self.finish(step, &out);
        self.timing = out.timing;
        Ok(out)
    }

    fn finish(&mut self, step: Arc<LoweredStep>, out: &StepOutput) {
        self.last = Some(LastStep { step, launch_micros: out.launch_micros.clone(), fallback_rows: out.fallback_rows });
    }

    /// Runs one step with the tokens of `input` and returns its lowering, its `[out_rows,
    /// vocab]` logits and the values of the launches `taps` picks from the lowered step
    /// (`Executor::run_tapped`; `fdpp check`).
    pub fn step_tapped(
        &mut self,
        input: &StepInput,
        taps: &mut dyn FnMut(&Lowering, &LoweredStep) -> Result<Vec<Tap>>,
    ) -> Result<(Arc<LoweredStep>, Vec<f32>, Tapped)> {
        let step = self.lowered(input)?;
        let (out, tapped) = self.exec.run_tapped(&step, input, &taps(&self.lowering, &step)?)?;
        self.finish(Arc::clone(&step), &out);
        self.timing = out.timing;
        Ok((step, out.logits, tapped))
    }

    /// Runs the graph over one step; returns `[out_rows, vocab]` logits.
    pub fn step(&mut self, input: &StepInput) -> Result<Vec<f32>> {
        Ok(self.run(input, Pick::Logits)?.logits)
    }

    /// Runs one step and returns the greedy token of each output row (picked on the device
    /// where the backend can).
    pub fn step_greedy(&mut self, input: &StepInput) -> Result<Vec<u32>> {
        if self.lowering.caps.device_argmax {
            return Ok(self.run(input, Pick::Argmax)?.ids);
        }
        let vocab = self.lowering.graph.config.vocab_size;
        Ok(self.step(input)?.chunks_exact(vocab).map(crate::sampling::argmax).collect())
    }

    /// Whether the device picks with these parameters itself.
    fn picks_on_device(&self, p: &SamplingParams) -> bool {
        let caps = &self.lowering.caps;
        if p.is_greedy() {
            caps.device_argmax
        } else {
            caps.device_top_k.is_some_and(|max| (1..=max).contains(&p.top_k) && p.temperature > 0.0)
        }
    }

    /// Decodes `steps` steps: step 0 takes `first` (one token per sequence, each its own
    /// output row); every later step feeds each sequence the id `sampler` drew from its
    /// logits the step before, one position further. `on_ids` sees each step's ids in
    /// order; when it returns false no further step starts. Where the device picks the ids,
    /// step t + 1 is submitted before step t is collected, so one step past the stop may
    /// have run: its KV writes lie beyond the kept positions, which later steps overwrite
    /// before reading.
    pub fn decode(&mut self, first: &StepInput, steps: usize, sampler: &mut Sampler, on_ids: &mut dyn FnMut(&[u32]) -> bool) -> Result<()> {
        check_decode(first)?;
        let last_pos = first.positions.iter().max().copied().unwrap_or(0) + steps.saturating_sub(1);
        if steps > 0 && last_pos >= self.capacity.max_context {
            return Err(Error::PromptTooLong {
                tokens: last_pos + 1,
                limit: self.capacity.max_context,
                hint: "; decode fewer tokens".into(),
            });
        }
        let params = sampler.params().clone();
        // Per-launch timing reads every step back before the next: nothing to overlap.
        if self.profiling || !self.picks_on_device(&params) {
            return self.decode_on_host(first, steps, sampler, on_ids);
        }
        let m = first.m();
        let mut positions = first.positions.to_vec();
        let mut in_flight: Option<(usize, Arc<LoweredStep>)> = None;
        let (mut host, mut submitted, mut device, mut timed) = (0.0, 0usize, 0.0, 0usize);
        // One more round than steps: the last only collects the last step.
        for t in 0..=steps {
            let now = if t < steps {
                let slot = t % 2;
                let pick = if params.is_greedy() {
                    Pick::Argmax
                } else {
                    Pick::Sample { params: params.clone(), draws: (0..m).map(|_| sampler.draw()).collect() }
                };
                let input = StepInput { positions: &positions, ..*first };
                let step = self.lowered(&input)?;
                let tokens = if t == 0 { Tokens::Host } else { Tokens::Picked };
                self.exec.submit(&step, &input, tokens, &pick, slot)?;
                submitted += 1;
                positions.iter_mut().for_each(|p| *p += 1);
                Some((slot, step))
            } else {
                None
            };
            // Step t is queued behind t - 1: collect t - 1 while the device runs t.
            if let Some((slot, step)) = std::mem::replace(&mut in_flight, now) {
                let out = self.exec.collect(slot)?;
                host += out.timing.host_micros.unwrap_or(0.0);
                if let Some(d) = out.timing.device_micros {
                    device += d;
                    timed += 1;
                }
                self.finish(step, &out);
                if !on_ids(&out.ids) {
                    break;
                }
            }
        }
        let n = submitted.max(1) as f64;
        self.timing = StepTiming { host_micros: Some(host / n), device_micros: (timed > 0).then(|| device / timed as f64) };
        Ok(())
    }

    /// `decode` one step at a time, sampling on the host unless the device picks greedy ids.
    fn decode_on_host(
        &mut self,
        first: &StepInput,
        steps: usize,
        sampler: &mut Sampler,
        on_ids: &mut dyn FnMut(&[u32]) -> bool,
    ) -> Result<()> {
        let mut tokens = first.tokens.to_vec();
        let mut positions = first.positions.to_vec();
        let vocab = self.lowering.graph.config.vocab_size;
        for _ in 0..steps {
            let input = StepInput { tokens: &tokens, positions: &positions, ..*first };
            tokens = if sampler.params().is_greedy() {
                self.step_greedy(&input)?
            } else {
                self.step(&input)?.chunks_exact(vocab).map(|row| sampler.sample(row)).collect()
            };
            if !on_ids(&tokens) {
                break;
            }
            positions.iter_mut().for_each(|p| *p += 1);
        }
        Ok(())
    }

    /// Host and device time of the last step, or the mean over the steps of the last
    /// pipelined `decode`, where measured.
    pub fn last_timing(&self) -> StepTiming {
        self.timing
    }

    /// The shape of the last collected step and what each node did in it (with device
    /// times when profiling, or always on the CPU).
    pub fn last_records(&self) -> Option<(StepShape, Vec<NodeRecord>)> {
        let last = self.last.as_ref()?;
        Some((last.step.shape, self.lowering.records(&last.step, last.launch_micros.as_deref())))
    }

    /// Attention rows the last step recomputed (unified-max fallback), where counted.
    pub fn last_fallback_rows(&self) -> Option<u32> {
        self.last.as_ref().and_then(|l| l.fallback_rows)
    }

    /// Times every launch of the following steps on the device (GPU backends; slower).
    pub fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.exec.set_profiling(on)?;
        self.profiling = on;
        Ok(())
    }

    pub fn reset_sequence(&mut self, seq: usize) {
        self.exec.reset_sequence(seq);
    }
}
