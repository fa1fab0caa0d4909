//! The executor of the native backends, over any vendor's [`Gpu`].
//!
//! Everything of a step that changes from token to token (token ids, positions, the split-KV
//! chunking) lives in one device buffer the kernels read, so the launches of a step are
//! captured once per step shape as a graph and replayed. A decode step is one graph launch
//! and nothing else on the stream: its first kernel (`step_begin`) reads the step's words
//! from pinned host memory the device maps, and its last (`argmax`) writes the picked ids
//! into such memory. Words and ids have two slots each, so the driver can submit step t + 1
//! before collecting step t; a graph is captured per slot. (The host copy, device copy,
//! memset and read-back copy queued around the graph before left the device idle about
//! 17 us per step on an H200; `step_begin` costs 5 of them back: SmolLM2's batch-1 decode
//! went from 1927.9 to 1976.0 tok/s, bench/results/h200.md, session 18.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::Gpu;
use super::kernels::{self, Args, Grid, STEP_PICKED, STEP_WORDS, step_words};
use crate::backend::tap::{self, Tap, Tapped};
use crate::backend::{BackendCaps, Capacity, Executor, Pick, StepInput, StepOutput, StepTiming, Tokens};
use crate::error::{Error, Result};
use crate::lower::caps::cuda;
use crate::lower::kernel::{LaunchScalars, Params, Variant};
use crate::lower::{Launch, LoweredStep, Lowering, Template};
use crate::model::WeightSource;

/// A weight in device memory: its chunks (the lowering's layout), and vectors (norm
/// weights, biases) also in f32, as the kernels' prologues and epilogues read them.
struct DeviceParam<B> {
    chunks: Vec<B>,
    vector_f32: Option<B>,
}

/// Events of one slot: around the step's kernels (timed), and after its read-back (what
/// `collect` waits for, and what the next step in the slot waits for before it rewrites the
/// slot's words).
struct SlotEvents<E> {
    start: E,
    end: E,
    copied: E,
}

/// What was submitted into a read-back slot.
#[derive(Default)]
struct SlotState {
    submitted: bool,
    n_out: usize,
    logits: bool,
    profiled: Option<usize>,
    host_micros: f64,
}

/// What a graph was captured for: tokens, output rows, sequences, split-KV chunk blocks,
/// the slot, and whether it picks the ids (`argmax`).
type GraphKey = (usize, usize, usize, Option<usize>, usize, bool);

/// Graphs kept at once (one per step shape seen; a long run sees few).
const MAX_GRAPHS: usize = 64;

/// Blocks per output row of `argmax` (a 49152-entry row: 768 logits per block), and the flag
/// words each row's 64-bit slot and block count take.
pub(crate) const ARGMAX_BLOCKS: u32 = 64;
pub(crate) const ARGMAX_WORDS: usize = 4;

/// The first word of layer `layer`'s attention flags (`heads` per row): past the count of
/// recomputed rows and the picked ids.
fn attention_flags(max_out: usize, heads: usize, layer: usize) -> usize {
    1 + max_out + layer * cuda::SPLIT_MAX_M * heads
}

/// The first flag word of `argmax`'s slots: past every layer's attention flags, 8-byte aligned.
pub(crate) fn argmax_offset(max_out: usize, heads: usize, layers: usize) -> usize {
    attention_flags(max_out, heads, layers).next_multiple_of(2)
}

pub struct NativeExecutor<G: Gpu> {
    lowering: Arc<Lowering>,
    capacity: Capacity,
    /// The kernels were built with their tensor-core forms (`kernels::grids`).
    tensor_cores: bool,
    params: Vec<DeviceParam<G::Buffer>>,
    rope: G::Buffer,
    kv: Vec<(G::Buffer, G::Buffer)>,
    scratch: G::Buffer,
    /// u32 words: [recomputed rows, picked ids..., attention flags..., argmax slots...].
    flags: G::Buffer,
    max_out: usize,
    /// Activations and the step buffer are sized for `cap_m` tokens; rebuilt (with every
    /// launch's arguments, and the graphs dropped) when a step needs more.
    cap_m: usize,
    step_buf: Option<G::Buffer>,
    /// f32 each.
    activations: Vec<G::Buffer>,
    /// One per launch template.
    args: Vec<Args>,
    /// `step_begin` and `argmax` of each slot (their host memory differs).
    begin: [Args; 2],
    argmax: [Args; 2],
    /// Per slot, the step's words as `step_begin` reads them (sized with the step buffer),
    /// and the picked ids (the count of recomputed rows first) as `argmax` writes them.
    words_host: Vec<G::Pinned>,
    ids_host: [G::Pinned; 2],
    logits_host: G::Pinned,
    slot_events: [SlotEvents<G::Event>; 2],
    slots: [SlotState; 2],
    picked: usize,
    /// Events around each launch of a profiled step.
    profile: Option<Vec<(G::Event, G::Event)>>,
    graphs: HashMap<GraphKey, G::Graph>,
    use_graphs: bool,
    /// Launches of the step being recorded to read back (`run_tapped`), and what they wrote.
    taps: Option<Vec<Tap>>,
    tapped: Tapped,
    /// Last, so that it is dropped last: graphs, events and memory go before the stream and
    /// the kernels' modules they were made with.
    gpu: G,
}

/// Uploads the weights of `lowering` to `gpu`, allocates the KV caches and read-back memory
/// for `capacity`, and returns the executor. `caps` are the device's (the lowering must have
/// been made for them; `caps.cooperative_matrix`: `gpu` loaded the tensor-core kernels).
pub fn load<G: Gpu>(
    gpu: G,
    caps: &BackendCaps,
    lowering: Arc<Lowering>,
    weights: &dyn WeightSource,
    capacity: Capacity,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Box<dyn Executor>> {
    let l = &lowering.caps;
    if l.backend != caps.backend || l.weight_dtype != caps.weight_dtype || l.linear != caps.linear || l.attention != caps.attention {
        return Err(Error::InvalidArgument(format!("the lowering was made for {}, not for this device ({})", l.device, caps.device)));
    }
    let backend = gpu.name();
    let g = &lowering.graph;
    let c = &g.config;
    let kv_bytes = capacity.max_seqs * capacity.max_context * c.kv_dim() * caps.kv_dtype.size();
    let free = gpu.free_bytes()?;
    let need = crate::engine::memory::device_bytes(g, caps, capacity);
    if need > free {
        let what = format!(
            "weights ({} bytes) and KV caches ({} layers x {} sequences x {} positions); the device has {free} bytes free",
            crate::engine::memory::device_weight_bytes(g, caps),
            c.num_layers,
            capacity.max_seqs,
            capacity.max_context
        );
        return Err(Error::OutOfMemory { backend: backend.into(), what, bytes: need });
    }
    let mut params = Vec::with_capacity(g.params.len());
    for (p, layout) in g.params.iter().zip(&lowering.weights) {
        let id = params.len();
        // One tensor at a time, in the device's type: no copy of the model is held.
        let t = g.load_param(id, weights, caps.weight_dtype)?;
        let row_bytes = layout.cols * caps.weight_dtype.size();
        let bytes = t.as_le_bytes();
        let chunks =
            layout.chunks.iter().map(|r| gpu.upload(&bytes[r.start * row_bytes..r.end * row_bytes], &p.name)).collect::<Result<_>>()?;
        let vector_f32 = match p.shape.len() {
            1 => Some(gpu.upload(bytemuck::cast_slice(&t.clone().into_f32()), &p.name)?),
            _ => None,
        };
        params.push(DeviceParam { chunks, vector_f32 });
        progress(id + 1, g.params.len());
    }
    let kv = (0..c.num_layers)
        .map(|_| Ok((gpu.alloc(kv_bytes.max(16), "the K cache")?, gpu.alloc(kv_bytes.max(16), "the V cache")?)))
        .collect::<Result<Vec<_>>>()?;
    let rope = gpu.upload(bytemuck::cast_slice(&crate::lower::rope::table(c, capacity.max_context)), "the RoPE table")?;
    let max_out = capacity.max_seqs.max(1);
    // Split-KV steps hold one token per sequence.
    let split_rows = capacity.max_seqs.min(cuda::SPLIT_MAX_M);
    let scratch_len = split_rows * c.num_heads * cuda::MAX_ATTN_CHUNKS * (c.head_dim + 1);
    let scratch = gpu.alloc(4 * scratch_len.max(4), "attention partials")?;
    let flag_words = argmax_offset(max_out, c.num_heads, c.num_layers) + ARGMAX_WORDS * max_out;
    let flags = gpu.alloc(4 * flag_words, "flags")?;
    let ids_host = [gpu.pinned(4 * (1 + max_out), "pinned read-back memory")?, gpu.pinned(4 * (1 + max_out), "pinned read-back memory")?];
    let logits_host = gpu.pinned(4 * max_out * c.vocab_size, "pinned logits read-back")?;
    let slot = || Ok(SlotEvents { start: gpu.event()?, end: gpu.event()?, copied: gpu.event()? });
    let slot_events = [slot()?, slot()?];
    let use_graphs = std::env::var(format!("FDPP_{}_GRAPHS", backend.to_uppercase())).map_or(true, |v| v != "0");
    Ok(Box::new(NativeExecutor {
        gpu,
        lowering,
        capacity,
        tensor_cores: caps.cooperative_matrix,
        params,
        rope,
        kv,
        scratch,
        flags,
        max_out,
        cap_m: 0,
        step_buf: None,
        activations: vec![],
        args: vec![],
        begin: Default::default(),
        argmax: Default::default(),
        words_host: vec![],
        ids_host,
        logits_host,
        slot_events,
        slots: [SlotState::default(), SlotState::default()],
        picked: 0,
        profile: None,
        graphs: HashMap::new(),
        use_graphs,
        taps: None,
        tapped: vec![],
    }))
}

impl<G: Gpu> NativeExecutor<G> {
    fn flag_offset(&self, layer: usize) -> usize {
        attention_flags(self.max_out, self.lowering.graph.config.num_heads, layer)
    }

    /// (Re)allocates activations for `m` tokens and fills every template's arguments.
    fn ensure_capacity(&mut self, m: usize) -> Result<()> {
        if m <= self.cap_m {
            return Ok(());
        }
        let cap = m.next_multiple_of(64);
        let l = Arc::clone(&self.lowering);
        // Steps in flight read what is about to be freed.
        for e in &self.slot_events {
            self.gpu.wait(&e.copied)?;
        }
        self.graphs.clear();
        self.activations.clear();
        for e in l.memory.buffer_elements(&l.graph.tensors, cap, self.max_out) {
            let n = e.next_multiple_of(8).max(8);
            self.activations.push(self.gpu.alloc(4 * n, &format!("activations for {cap} tokens"))?);
        }
        if self.gpu.vendor_gemm().is_some() {
            let max_k = l.graph.params.iter().filter(|p| p.shape.len() == 2).map(|p| p.shape[1]).max().unwrap_or(1);
            self.gpu.size_vendor_gemm(cap * max_k)?;
        }
        let words = STEP_WORDS + 4 * cap;
        self.step_buf = Some(self.gpu.alloc(4 * words, "the step buffer")?);
        self.words_host = vec![];
        for _ in 0..2 {
            self.words_host.push(self.gpu.pinned(4 * words, "the step's words in host memory")?);
        }
        self.cap_m = cap;
        let max_ctx = self.capacity.max_context;
        self.args = l.templates.iter().map(|t| self.bind(t, Args::of(t, max_ctx, |layer| self.flag_offset(layer)))).collect();
        let logits = &self.activations[l.memory.buffer_of[l.graph.logits].expect("the logits are stored")];
        let c = &l.graph.config;
        let flag_offset = argmax_offset(self.max_out, c.num_heads, c.num_layers) as u32;
        let common = Args { step: self.step_ptr(), flags: self.gpu.address(&self.flags), ..Default::default() };
        // step_begin copies `words` words and zeroes every flag word.
        let begin = Args { s: LaunchScalars { k: words as u32, ..Args::scalars(self.gpu.size(&self.flags) / 4, 0) }, ..common };
        let argmax = Args { x: self.gpu.address(logits), s: LaunchScalars { flag_offset, ..Args::scalars(c.vocab_size, 0) }, ..common };
        for slot in 0..2 {
            self.begin[slot] = Args { x: self.gpu.pinned_address(&self.words_host[slot])?, ..begin };
            self.argmax[slot] = Args { y: self.gpu.pinned_address(&self.ids_host[slot])?, ..argmax };
        }
        Ok(())
    }

    fn step_ptr(&self) -> u64 {
        self.gpu.address(self.step_buf.as_ref().expect("allocated with the activations"))
    }

    /// `a` with the device pointers of template `t`.
    fn bind(&self, t: &Template, a: Args) -> Args {
        let at = |b: &G::Buffer| self.gpu.address(b);
        let act = |b: usize| at(&self.activations[b]);
        let vector = |p: usize| at(self.params[p].vector_f32.as_ref().expect("norm weights and biases are vectors"));
        let (kc, vc) = t.io.kv.map_or((0, 0), |layer| (at(&self.kv[layer].0), at(&self.kv[layer].1)));
        Args {
            step: self.step_ptr(),
            x: t.io.x.map_or(0, act),
            x2: t.io.x2.map_or(0, act),
            w: t.io.weight.map_or(0, |w| at(&self.params[w.param].chunks[w.chunk])),
            y: act(t.io.y),
            kc,
            vc,
            scratch: at(&self.scratch),
            flags: at(&self.flags),
            bias: t.io.bias.map_or(0, vector),
            rope: if matches!(t.params, Params::Rope { .. } | Params::Linear { .. }) { at(&self.rope) } else { 0 },
            norm: t.io.norm_weight.map_or(0, vector),
            ..a
        }
    }

    fn launch(&self, g: &Grid, args: &Args) -> Result<()> {
        // SAFETY: the pointers of `args` are allocations this executor owns and keeps until
        // it is dropped (after the stream's work), sized by the memory plan for `cap_m` >=
        // the step's tokens and by `capacity` for the caches; the grid comes from
        // `kernels::grids` for this step, whose kernels stay inside those sizes.
        unsafe { self.gpu.launch(g, args) }
    }

    /// The kernel launches of `step`, per lowered launch; split-KV grids for `chunk_blocks`.
    fn step_grids(&self, step: &LoweredStep, chunk_blocks: usize) -> Result<Vec<Vec<Grid>>> {
        let l = &self.lowering;
        step.launches
            .iter()
            .map(|launch| kernels::grids(launch, &l.templates[launch.template], step.shape.m, self.tensor_cores, chunk_blocks))
            .collect()
    }

    /// Whether `launch` runs through the vendor's GEMM library.
    fn on_vendor_gemm(&self, launch: &Launch) -> bool {
        self.gpu.vendor_gemm().is_some() && matches!(launch.variant, Variant::Gemm { .. })
    }

    fn run_launch(&self, launch: &Launch, grids: &[Grid]) -> Result<()> {
        let args = &self.args[launch.template];
        if self.on_vendor_gemm(launch) {
            let t = &self.lowering.templates[launch.template];
            // SAFETY: as in `launch`; `size_vendor_gemm` made room for `cap_m` rows of the
            // longest K when the activations were allocated.
            return unsafe { self.gpu.run_vendor_gemm(t, args, launch.rows) };
        }
        grids.iter().try_for_each(|g| self.launch(g, args))
    }

    fn run_launches(&self, step: &LoweredStep, grids: &[Vec<Grid>]) -> Result<()> {
        step.launches.iter().zip(grids).try_for_each(|(launch, gs)| self.run_launch(launch, gs))
    }

    /// `step_begin` of `slot`: the step's words into the step buffer, the flags zeroed.
    fn begin_step(&self, slot: usize) -> Result<()> {
        self.launch(&Grid { kernel: "step_begin".into(), blocks: [1, 1, 1], threads: 1024 }, &self.begin[slot])
    }

    /// `argmax` of `slot` over the step's `n_out` rows, where the step picks its ids.
    fn end_step(&self, slot: usize, argmax: bool, n_out: usize) -> Result<()> {
        if !argmax {
            return Ok(());
        }
        self.launch(&Grid { kernel: "argmax".into(), blocks: [ARGMAX_BLOCKS, n_out as u32, 1], threads: 256 }, &self.argmax[slot])
    }

    /// A whole step's kernels, in slot `slot`.
    fn run_step(&self, step: &LoweredStep, grids: &[Vec<Grid>], slot: usize, argmax: bool) -> Result<()> {
        self.begin_step(slot)?;
        self.run_launches(step, grids)?;
        self.end_step(slot, argmax, step.shape.out)
    }

    /// Runs the step's launches one by one (no graph), reading back the output of each tapped
    /// launch right after it, perturbed and written back where the tap asks for it.
    fn record_tapped(&mut self, step: &LoweredStep, taps: &[Tap]) -> Result<()> {
        let grids = self.step_grids(step, 0)?;
        let mut pending = taps.iter().peekable();
        self.tapped.clear();
        for (i, (launch, gs)) in step.launches.iter().zip(&grids).enumerate() {
            self.run_launch(launch, gs)?;
            let Some(t) = pending.next_if(|t| t.launch == i) else { continue };
            let y = self.lowering.templates[launch.template].io.y;
            let buf = &mut self.activations[y];
            let written = self.gpu.size(buf) / 4;
            if t.elements > written {
                return Err(Error::InvalidArgument(format!("a tap of {} values but launch {i} writes {written}", t.elements)));
            }
            let mut values = vec![0.0f32; t.elements];
            self.gpu.read(buf, bytemuck::cast_slice_mut(&mut values))?;
            if let Some(scale) = t.perturb {
                tap::perturb(&mut values, scale);
                self.gpu.write(buf, 0, bytemuck::cast_slice(&values))?;
            }
            self.tapped.push(values);
        }
        Ok(())
    }

    /// Runs the step's kernels in `slot` (`argmax`: with the pick): replayed from a graph
    /// captured for its shape, or recorded one by one (profiled: the launches between events).
    fn record(&mut self, step: &LoweredStep, slot: usize, argmax: bool) -> Result<()> {
        if let Some(taps) = self.taps.take() {
            self.begin_step(slot)?;
            self.record_tapped(step, &taps)?;
            return self.end_step(slot, argmax, step.shape.out);
        }
        if let Some(events) = &self.profile {
            let grids = self.step_grids(step, 0)?;
            self.begin_step(slot)?;
            for ((launch, gs), (start, end)) in step.launches.iter().zip(&grids).zip(events) {
                self.gpu.record(start)?;
                self.run_launch(launch, gs)?;
                self.gpu.record(end)?;
            }
            return self.end_step(slot, argmax, step.shape.out);
        }
        // Chunk counts are rounded up to a power of two: one graph serves every step whose
        // chunking differs only there (the blocks past a step's chunks return at once; the
        // chunk length is read from the step's words).
        let bucket = step.split_kv.map(|(chunks, _)| chunks.next_power_of_two().min(cuda::MAX_ATTN_CHUNKS));
        // Prefill steps with vendor GEMMs run once per request: no graph (capturing one
        // costs more than it saves). Decode steps capture the vendor GEMM with the rest.
        if !self.use_graphs || (!step.shape.is_decode() && step.launches.iter().any(|l| self.on_vendor_gemm(l))) {
            let grids = self.step_grids(step, bucket.unwrap_or(0))?;
            return self.run_step(step, &grids, slot, argmax);
        }
        let key = (step.shape.m, step.shape.out, step.shape.sequences, bucket, slot, argmax);
        if !self.graphs.contains_key(&key) {
            if self.graphs.len() >= MAX_GRAPHS {
                self.graphs.clear();
            }
            let grids = self.step_grids(step, bucket.unwrap_or(0))?;
            self.gpu.begin_capture()?;
            let recorded = self.run_step(step, &grids, slot, argmax);
            let graph = self.gpu.end_capture();
            recorded?;
            self.graphs.insert(key, graph?);
        }
        self.gpu.replay(&self.graphs[&key])
    }
}

impl<G: Gpu> Executor for NativeExecutor<G> {
    fn describe(&self) -> String {
        let gemm = self.gpu.vendor_gemm().map(|lib| format!(", C through {lib}")).unwrap_or_default();
        format!("{}: {}{gemm}", self.gpu.name(), self.lowering.caps.device)
    }

    fn submit(&mut self, step: &LoweredStep, input: &StepInput, tokens: Tokens, pick: &Pick, slot: usize) -> Result<()> {
        let started = Instant::now();
        let (m, n_out) = (step.shape.m, step.shape.out);
        let backend = self.gpu.name();
        if n_out > self.max_out {
            return Err(Error::InvalidArgument(format!("{n_out} output rows but the {backend} backend was sized for {}", self.max_out)));
        }
        if tokens == Tokens::Picked && self.picked != m {
            return Err(Error::InvalidArgument(format!("{m} tokens asked for, the last step picked {}", self.picked)));
        }
        if let Pick::Sample { .. } = pick {
            return Err(Error::InvalidArgument(format!("the {backend} backend does not sample on the device; ask for the logits")));
        }
        // The slot's last step has read its words and written its ids (collected or not).
        self.gpu.wait(&self.slot_events[slot].copied)?;
        self.ensure_capacity(m)?;
        let mut words = step_words(m, n_out, self.cap_m, step.split_kv);
        words[STEP_PICKED] = (tokens == Tokens::Picked) as u32;
        let cap = self.cap_m;
        for i in 0..m {
            words[STEP_WORDS + i] = input.tokens.get(i).copied().unwrap_or(0);
            words[STEP_WORDS + cap + i] = input.positions[i] as u32;
            words[STEP_WORDS + 2 * cap + i] = input.seqs[i] as u32;
        }
        for (r, &row) in input.out_rows.iter().enumerate() {
            words[STEP_WORDS + 3 * cap + r] = row as u32;
        }
        self.gpu.write_pinned(&mut self.words_host[slot], bytemuck::cast_slice(&words))?;
        self.gpu.record(&self.slot_events[slot].start)?;
        self.record(step, slot, *pick == Pick::Argmax)?;
        self.gpu.record(&self.slot_events[slot].end)?;
        if *pick == Pick::Logits {
            // No argmax wrote the ids slot: the count of recomputed rows is copied there.
            self.gpu.read_pinned(&self.flags, 4, &mut self.ids_host[slot])?;
            let l = &self.lowering;
            let logits = &self.activations[l.memory.buffer_of[l.graph.logits].expect("logits")];
            self.gpu.read_pinned(logits, 4 * n_out * l.graph.config.vocab_size, &mut self.logits_host)?;
        }
        // `collect` waits for this event before it reads the pinned copies.
        self.gpu.record(&self.slot_events[slot].copied)?;
        self.picked = if *pick == Pick::Logits { 0 } else { n_out };
        self.slots[slot] = SlotState {
            submitted: true,
            n_out,
            logits: *pick == Pick::Logits,
            profiled: self.profile.as_ref().map(|_| step.launches.len()),
            host_micros: started.elapsed().as_secs_f64() * 1e6,
        };
        Ok(())
    }

    fn collect(&mut self, slot: usize) -> Result<StepOutput> {
        let s = std::mem::take(&mut self.slots[slot]);
        if !s.submitted {
            return Err(Error::InvalidArgument(format!("no step was submitted in slot {slot}")));
        }
        let ev = &self.slot_events[slot];
        self.gpu.wait(&ev.copied)?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&self.gpu.pinned_bytes(&self.ids_host[slot])?[..4 * (1 + s.n_out)]);
        let device_micros = self.gpu.elapsed_micros(&ev.start, &ev.end).ok();
        let logits = if s.logits {
            let n = s.n_out * self.lowering.graph.config.vocab_size;
            bytemuck::pod_collect_to_vec(&self.gpu.pinned_bytes(&self.logits_host)?[..4 * n])
        } else {
            vec![]
        };
        let launch_micros = match (s.profiled, &self.profile) {
            (Some(n), Some(events)) => Some(events[..n].iter().map(|(a, b)| self.gpu.elapsed_micros(a, b)).collect::<Result<Vec<_>>>()?),
            _ => None,
        };
        let ids = if s.logits { vec![] } else { words[1..].to_vec() };
        let timing = StepTiming { host_micros: Some(s.host_micros), device_micros };
        Ok(StepOutput { ids, logits, timing, launch_micros, fallback_rows: Some(words[0]) })
    }

    fn set_profiling(&mut self, on: bool) -> Result<()> {
        self.profile = None;
        if on {
            let events =
                (0..self.lowering.templates.len()).map(|_| Ok((self.gpu.event()?, self.gpu.event()?))).collect::<Result<Vec<_>>>()?;
            self.profile = Some(events);
        }
        Ok(())
    }

    fn run_tapped(&mut self, step: &LoweredStep, input: &StepInput, taps: &[Tap]) -> Result<(StepOutput, Tapped)> {
        tap::validate(step, taps)?;
        self.taps = Some(taps.to_vec());
        let submitted = self.submit(step, input, Tokens::Host, &Pick::Logits, 0);
        self.taps = None;
        submitted?;
        let out = self.collect(0)?;
        Ok((out, std::mem::take(&mut self.tapped)))
    }

    fn reset_sequence(&mut self, _seq: usize) {
        // Positions are overwritten before they are read: attention reads 0..=position,
        // all written by this sequence's own steps.
    }
}
