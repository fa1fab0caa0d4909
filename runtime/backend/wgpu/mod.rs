//! The portable GPU backend: lowered launches run as WGSL compute kernels through wgpu
//! (Vulkan, Metal, DX12; Mesa's lavapipe without a GPU). Weights are converted one at a time
//! to the device's type as they are uploaded; every launch template gets its uniform and
//! bind group once; a step records its launches into one command encoder and submits once;
//! the KV cache never leaves the GPU. When the device picks the next ids (argmax or
//! top-k/top-p), only they are read back, into one of two staging slots, so the driver can
//! submit step t + 1 before collecting step t.

pub mod device;
pub mod kernels;
pub mod microbench;
pub mod sampling;
pub mod shaders;
pub mod weights;

use std::sync::Arc;

pub use device::GpuContext;
use kernels::{Binds, Dispatch, Kernels, NodeUniform, Shared, StepUniform, TemplateInputs};
use sampling::GpuSampler;
use wgpu::util::DeviceExt;

use super::tap::{self, Tap, Tapped};
use super::{BackendCaps, Capacity, Device, Executor, Pick, StepInput, StepOutput, StepTiming, Tokens, WgpuOptions};
use crate::error::{Error, Result};
use crate::lower::caps::wgsl;
use crate::lower::{LoweredStep, Lowering, Template};
use crate::model::WeightSource;
use crate::tensor::DType;

fn oom(what: &str, bytes: u64) -> Error {
    Error::OutOfMemory { backend: "wgpu".into(), what: what.into(), bytes }
}

/// An opened adapter.
pub struct WgpuDevice {
    ctx: GpuContext,
    caps: BackendCaps,
}

impl WgpuDevice {
    pub fn open(opts: &WgpuOptions) -> Result<WgpuDevice> {
        let ctx = GpuContext::new(opts.adapter.as_deref(), opts.precision, opts.kv)?;
        let caps = ctx.caps(opts.binding_limit);
        Ok(WgpuDevice { ctx, caps })
    }
}

/// A weight in device memory: its chunks (the lowering's layout), and vectors (norm
/// weights) also in f32, as the GEMV norm prologue reads them.
struct DeviceParam {
    chunks: Vec<wgpu::Buffer>,
    vector_f32: Option<wgpu::Buffer>,
}

impl Device for WgpuDevice {
    fn caps(&self) -> &BackendCaps {
        &self.caps
    }

    fn load(
        self: Box<Self>,
        lowering: Arc<Lowering>,
        weights: &dyn WeightSource,
        capacity: Capacity,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Box<dyn Executor>> {
        let WgpuDevice { ctx, caps } = *self;
        let l = &lowering.caps;
        if l.backend != caps.backend
            || l.weight_dtype != caps.weight_dtype
            || l.native_weights != caps.native_weights
            || l.kv_dtype != caps.kv_dtype
            || l.subgroup_size != caps.subgroup_size
            || l.max_binding_bytes > caps.max_binding_bytes
        {
            return Err(Error::InvalidArgument(format!("the lowering was made for {}, not for this device ({})", l.device, caps.device)));
        }
        let g = &lowering.graph;
        let c = &g.config;
        let max_binding = ctx.max_binding();
        // Whole 16-byte words: the decode attention reads the caches in them. The prefill attention
        // on cooperative matrices reads whole tiles of cache rows: the last sequence's last
        // tile may reach MATRIX_ATTN_KEYS - 1 rows past its context, which stay in the buffer.
        let rows = capacity.max_seqs * capacity.max_context + wgsl::MATRIX_ATTN_KEYS;
        let kv_bytes = (rows * c.kv_dim() * caps.kv_dtype.size()).next_multiple_of(16) as u64;
        if kv_bytes > max_binding {
            let what = format!(
                "KV cache of one layer ({} sequences x {} positions; one binding holds {max_binding} bytes)",
                capacity.max_seqs, capacity.max_context
            );
            return Err(oom(&what, kv_bytes));
        }
        let in_use = |q: &crate::tensor::FileType| lowering.weights.iter().any(|w| w.quantized == Some(*q));
        let quantized: Vec<_> = shaders::QUANTIZED.into_iter().filter(in_use).collect();
        let kernels = Kernels::new(ctx, &quantized)?;
        let ctx = &kernels.ctx;
        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let dtype = ctx.weight_dtype();
        let mut params = Vec::with_capacity(g.params.len());
        for (p, layout) in g.params.iter().zip(&lowering.weights) {
            let id = params.len();
            // One tensor at a time, as it is stored on the device: no copy of the model is held.
            let (chunks, t) = match layout.quantized {
                Some(ty) => {
                    let bytes = g.load_param_raw(id, weights, ty)?;
                    let row_bytes = ty.bytes(layout.cols);
                    let chunk = |r: &std::ops::Range<usize>| {
                        let packed = weights::repack(ty, &bytes[r.start * row_bytes..r.end * row_bytes], r.len(), layout.cols);
                        ctx.upload_weights(&p.name, &packed, 4)
                    };
                    (layout.chunks.iter().map(chunk).collect(), None)
                }
                None => {
                    let t = g.load_param(id, weights, dtype)?;
                    let row_bytes = layout.cols * dtype.size();
                    let bytes = t.as_le_bytes();
                    let chunk = |r: &std::ops::Range<usize>| {
                        ctx.upload_weights(&p.name, &bytes[r.start * row_bytes..r.end * row_bytes], dtype.size())
                    };
                    (layout.chunks.iter().map(chunk).collect(), Some(t))
                }
            };
            let vector_f32 = t.filter(|_| p.shape.len() == 1).map(|t| {
                let v = t.convert(DType::F32);
                ctx.upload_weights(&p.name, v.as_le_bytes(), 4)
            });
            params.push(DeviceParam { chunks, vector_f32 });
            progress(id + 1, g.params.len());
        }
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: size.max(16), usage, mapped_at_creation: false })
        };
        let mut table = crate::lower::rope::table(c, capacity.max_context);
        table.resize(table.len().next_multiple_of(4), 0.0); // whole vec4s (x2)
        let rope_table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rope table"),
            contents: bytemuck::cast_slice(&table),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let kv = (0..c.num_layers)
            .map(|_| (buffer("k cache", kv_bytes, wgpu::BufferUsages::STORAGE), buffer("v cache", kv_bytes, wgpu::BufferUsages::STORAGE)))
            .collect();
        let max_out = capacity.max_seqs.max(1);
        // Split-KV steps hold one token per sequence.
        let split_rows = capacity.max_seqs.min(wgsl::SPLIT_MAX_M);
        let scratch_bytes = (split_rows * c.num_heads * wgsl::MAX_ATTN_CHUNKS * (c.head_dim + 1) * 4) as u64;
        let flag_words = 1 + max_out + c.num_layers * wgsl::SPLIT_MAX_M * c.num_heads;
        let shared = Shared::new(ctx, 0, scratch_bytes, flag_words);
        let readback = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let logits_staging = buffer("logits readback", (max_out * c.vocab_size * 4) as u64, readback);
        let ids_staging = [
            buffer("ids readback", ids_readback_bytes(max_out) + 16, readback),
            buffer("ids readback", ids_readback_bytes(max_out) + 16, readback),
        ];
        let step_queries = ctx.timestamps.then(|| {
            let q =
                device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("step time"), ty: wgpu::QueryType::Timestamp, count: 4 });
            let usage = wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC;
            (q, buffer("step time", 2 * wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT, usage))
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(oom(&format!("weights and caches ({e})"), 0));
        }
        Ok(Box::new(WgpuExecutor {
            kernels,
            lowering,
            capacity,
            params,
            rope_table,
            kv,
            shared,
            max_out,
            cap_m: 0,
            activations: vec![],
            groups: vec![],
            argmax_group: None,
            logits_staging,
            ids_staging,
            step_queries,
            sampler: None,
            slots: [SlotState::default(), SlotState::default()],
            picked: 0,
            profiler: None,
        }))
    }
}

/// Bytes of the ids read-back before the two step timestamps (8-byte aligned).
fn ids_readback_bytes(max_out: usize) -> u64 {
    ((1 + max_out) * 4).next_multiple_of(8) as u64
}

/// Timestamp queries around every launch's compute pass.
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
}

/// What was submitted into a staging slot.
#[derive(Default)]
struct SlotState {
    index: Option<wgpu::SubmissionIndex>,
    n_out: usize,
    logits: bool,
    timed: bool,
    /// Launches timed one by one (profiling).
    profiled: Option<usize>,
    host_micros: f64,
}

/// The taps of a recorded step: values already on the host (perturbed ones), or where they
/// lie in the capture buffer once the step has run.
#[derive(Default)]
struct PendingTaps {
    capture: Option<wgpu::Buffer>,
    parts: Vec<TapPart>,
}

enum TapPart {
    Host(Vec<f32>),
    Captured { offset: usize, elements: usize },
}

impl PendingTaps {
    /// The values of every tap, in order (after the step has finished).
    fn read(self, ctx: &GpuContext) -> Result<Tapped> {
        let end = self.parts.iter().map(|p| if let TapPart::Captured { offset, elements } = p { offset + elements * 4 } else { 0 }).max();
        let bytes = match (&self.capture, end) {
            (Some(capture), Some(end)) if end > 0 => read_buffer(ctx, capture, end, None)?,
            _ => vec![],
        };
        let values = |p: TapPart| match p {
            TapPart::Host(v) => v,
            TapPart::Captured { offset, elements } => bytemuck::pod_collect_to_vec(&bytes[offset..offset + elements * 4]),
        };
        Ok(self.parts.into_iter().map(values).collect())
    }
}

pub struct WgpuExecutor {
    kernels: Kernels,
    lowering: Arc<Lowering>,
    capacity: Capacity,
    params: Vec<DeviceParam>,
    rope_table: wgpu::Buffer,
    kv: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    shared: Shared,
    max_out: usize,
    // Sized for `cap_m` tokens; rebuilt (with every bind group) when a step needs more.
    cap_m: usize,
    activations: Vec<wgpu::Buffer>,
    /// One per launch template.
    groups: Vec<wgpu::BindGroup>,
    argmax_group: Option<wgpu::BindGroup>,
    logits_staging: wgpu::Buffer,
    /// Read-back of [recomputed rows, ids..., pad, step start, step end]; two, so one step
    /// can be read while the next runs.
    ids_staging: [wgpu::Buffer; 2],
    /// Timestamps around a whole step (two per staging slot), when the device has them.
    step_queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// The device sampler and its bind group (logits -> flags), made at the first sampled
    /// step; dropped when the activations are reallocated.
    sampler: Option<(GpuSampler, wgpu::BindGroup)>,
    slots: [SlotState; 2],
    /// Ids the last submitted step picks (a `Tokens::Picked` step takes them).
    picked: usize,
    profiler: Option<Profiler>,
}

impl WgpuExecutor {
    fn flag_offset(&self, layer: usize) -> usize {
        1 + self.max_out + layer * wgsl::SPLIT_MAX_M * self.lowering.graph.config.num_heads
    }

    /// (Re)allocates activations for `m` tokens and builds every template's bind group.
    fn ensure_capacity(&mut self, m: usize) -> Result<()> {
        if m <= self.cap_m {
            return Ok(());
        }
        let cap = m.next_multiple_of(64);
        let l = Arc::clone(&self.lowering);
        let device = self.kernels.ctx.device.clone();
        let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        // Whole vec4s: the kernels see activations as array<vec4<f32>>.
        let sizes: Vec<usize> =
            l.memory.buffer_elements(&l.graph.tensors, cap, self.max_out).iter().map(|e| e.next_multiple_of(4) * 4).collect();
        // COPY_SRC and COPY_DST: taps read launches back and write perturbed values back.
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.activations = sizes
            .iter()
            .map(|&s| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("activation"),
                    size: s.max(16) as u64,
                    usage,
                    mapped_at_creation: false,
                })
            })
            .collect();
        // Only the step data grows: the flags keep the ids a pipelined step feeds the next.
        self.shared.step_data = Shared::step_data(&self.kernels.ctx, cap);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(oom(&format!("activations for {cap} tokens ({e})"), sizes.iter().sum::<usize>() as u64));
        }
        self.cap_m = cap;
        self.sampler = None;
        let max_ctx = self.capacity.max_context;
        let mut uniforms: Vec<NodeUniform> =
            l.templates.iter().map(|t| NodeUniform::of(t, max_ctx, |layer| self.flag_offset(layer))).collect();
        let vocab = l.graph.config.vocab_size;
        uniforms.push(NodeUniform { n: vocab as u32, rows: 1, ..Default::default() });
        let (ubuf, stride) = self.kernels.node_uniforms(&uniforms);
        self.groups = l
            .templates
            .iter()
            .enumerate()
            .map(|(i, t)| self.kernels.bind_group(&self.shared, &ubuf, i as u64 * stride, self.binds(t)))
            .collect();
        let logits = &self.activations[l.memory.buffer_of[l.graph.logits].expect("the logits are stored")];
        let argmax = Binds { x: Some(logits), ..Default::default() };
        self.argmax_group = Some(self.kernels.bind_group(&self.shared, &ubuf, l.templates.len() as u64 * stride, argmax));
        Ok(())
    }

    /// The buffers of a launch template.
    fn binds<'a>(&'a self, t: &Template) -> Binds<'a> {
        let act = |b: usize| &self.activations[b];
        let vector = |p: usize| self.params[p].vector_f32.as_ref().expect("norm weights and biases are vectors");
        let inputs = TemplateInputs {
            x: t.io.x.map(act),
            x2: t.io.x2.map(act),
            w: t.io.weight.map(|w| &self.params[w.param].chunks[w.chunk]),
            y: act(t.io.y),
            kv: t.io.kv.map(|layer| (&self.kv[layer].0, &self.kv[layer].1)),
            norm: t.io.norm_weight.map(vector),
            bias: t.io.bias.map(vector),
            rope_table: &self.rope_table,
        };
        Binds::for_template(t, inputs)
    }

    /// Records and submits `step` in `slot` (what `submit` does), reading back the launches
    /// `taps` name as it goes.
    fn record(
        &mut self,
        step: &LoweredStep,
        input: &StepInput,
        tokens: Tokens,
        pick: &Pick,
        slot: usize,
        taps: &[Tap],
    ) -> Result<PendingTaps> {
        let started = std::time::Instant::now();
        let (m, n_out) = (step.shape.m, step.shape.out);
        if n_out > self.max_out {
            return Err(Error::InvalidArgument(format!("{n_out} output rows but the wgpu backend was sized for {}", self.max_out)));
        }
        if tokens == Tokens::Picked && self.picked != m {
            return Err(Error::InvalidArgument(format!("{m} tokens asked for, the last step picked {}", self.picked)));
        }
        self.ensure_capacity(m)?;
        if let Pick::Sample { params, draws } = pick {
            if self.sampler.is_none() {
                let ctx = &self.kernels.ctx;
                let s = GpuSampler::new(ctx, self.lowering.graph.config.vocab_size, self.max_out)?;
                let logits = &self.activations[self.lowering.memory.buffer_of[self.lowering.graph.logits].expect("logits")];
                let group = s.bind(ctx, logits, &self.shared.flags);
                self.sampler = Some((s, group));
            }
            let (s, _) = self.sampler.as_ref().expect("made above");
            s.prepare(&self.kernels.ctx, params, draws, 1)?;
        }
        let ctx = &self.kernels.ctx;
        let queue = &ctx.queue;
        queue.write_buffer(&self.shared.step_uniform, 0, bytemuck::bytes_of(&StepUniform::new(m, n_out, self.cap_m, step.split_kv)));
        let mut data = vec![0u32; 4 * self.cap_m];
        for i in 0..m {
            data[i] = input.tokens.get(i).copied().unwrap_or(0);
            data[self.cap_m + i] = input.positions[i] as u32;
            data[2 * self.cap_m + i] = input.seqs[i] as u32;
        }
        for (r, &row) in input.out_rows.iter().enumerate() {
            data[3 * self.cap_m + r] = row as u32;
        }
        queue.write_buffer(&self.shared.step_data, 0, bytemuck::cast_slice(&data));

        let l = &self.lowering;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        if tokens == Tokens::Picked {
            encoder.copy_buffer_to_buffer(&self.shared.flags, 4, &self.shared.step_data, 0, (m * 4) as u64);
        }
        encoder.clear_buffer(&self.shared.flags, 0, None);
        // Dispatches of every launch, and where each launch's start.
        let mut cmds: Vec<Dispatch> = Vec::with_capacity(step.launches.len() + 8);
        let mut starts = Vec::with_capacity(step.launches.len() + 1);
        for launch in &step.launches {
            starts.push(cmds.len());
            let t = &l.templates[launch.template];
            kernels::dispatches(launch, t, kernels::storage_of(&l.weights, t), &self.groups[launch.template], m, &mut cmds)?;
        }
        starts.push(cmds.len());
        let argmax = self.argmax_group.as_ref().expect("built with the bind groups");
        let pick_ids = |pass: &mut wgpu::ComputePass| match pick {
            Pick::Logits => {}
            Pick::Argmax => self.kernels.encode(pass, &[Dispatch::new("argmax", argmax, [1, n_out as u32, 1])]),
            Pick::Sample { .. } => {
                let (sampler, group) = self.sampler.as_ref().expect("prepared above");
                sampler.encode(pass, group, n_out);
            }
        };
        let mut pending = PendingTaps::default();
        match &self.profiler {
            _ if !taps.is_empty() => {
                encoder = self.encode_tapped(encoder, &cmds, &starts, step, taps, &mut pending)?;
                pick_ids(&mut encoder.begin_compute_pass(&Default::default()));
            }
            None => {
                let timestamp_writes = self.step_queries.as_ref().map(|(q, _)| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(2 * slot as u32),
                    end_of_pass_write_index: Some(2 * slot as u32 + 1),
                });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("step"), timestamp_writes });
                self.kernels.encode(&mut pass, &cmds);
                pick_ids(&mut pass);
            }
            Some(p) => {
                for (i, w) in starts.windows(2).enumerate() {
                    let writes = wgpu::ComputePassTimestampWrites {
                        query_set: &p.queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    };
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
                    self.kernels.encode(&mut pass, &cmds[w[0]..w[1]]);
                }
                pick_ids(&mut encoder.begin_compute_pass(&Default::default()));
                let n = 2 * step.launches.len() as u32;
                encoder.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
                encoder.copy_buffer_to_buffer(&p.resolve, 0, &p.staging, 0, n as u64 * 8);
            }
        }
        if *pick == Pick::Logits {
            let lb = &self.activations[l.memory.buffer_of[l.graph.logits].expect("logits")];
            encoder.copy_buffer_to_buffer(lb, 0, &self.logits_staging, 0, (n_out * l.graph.config.vocab_size * 4) as u64);
        }
        let staging = &self.ids_staging[slot];
        encoder.copy_buffer_to_buffer(&self.shared.flags, 0, staging, 0, ((1 + n_out) * 4) as u64);
        // Tapped steps run in several passes: no step timestamps, no per-launch profile.
        let timed = taps.is_empty() && self.profiler.is_none() && self.step_queries.is_some();
        if let (true, Some((q, resolve))) = (timed, &self.step_queries) {
            let at = slot as u64 * wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT;
            encoder.resolve_query_set(q, 2 * slot as u32..2 * slot as u32 + 2, resolve, at);
            encoder.copy_buffer_to_buffer(resolve, at, staging, ids_readback_bytes(self.max_out), 16);
        }
        let index = queue.submit([encoder.finish()]);
        self.picked = if *pick == Pick::Logits { 0 } else { n_out };
        self.slots[slot] = SlotState {
            index: Some(index),
            n_out,
            logits: *pick == Pick::Logits,
            timed,
            profiled: self.profiler.as_ref().filter(|_| taps.is_empty()).map(|_| step.launches.len()),
            host_micros: started.elapsed().as_secs_f64() * 1e6,
        };
        Ok(pending)
    }

    /// Encodes the step's launches in one pass per tapped launch and those before it, each
    /// tapped launch's output copied into a capture buffer right after its pass. A perturbed
    /// tap is submitted at once and read back, and the perturbed values are written back
    /// before the launches after it are recorded (the write lands before the next submission).
    fn encode_tapped(
        &self,
        mut encoder: wgpu::CommandEncoder,
        cmds: &[Dispatch],
        starts: &[usize],
        step: &LoweredStep,
        taps: &[Tap],
        pending: &mut PendingTaps,
    ) -> Result<wgpu::CommandEncoder> {
        let ctx = &self.kernels.ctx;
        let readback = |label: &str, size: u64| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let copied: u64 = taps.iter().filter(|t| t.perturb.is_none()).map(|t| t.elements as u64 * 4).sum();
        if copied > ctx.limits.max_buffer_size {
            return Err(oom("the tapped launches' outputs (one buffer)", copied));
        }
        let capture = readback("tapped launches", copied);
        let (mut encoded, mut offset) = (0, 0u64);
        for tap in taps {
            let y = &self.activations[self.lowering.templates[step.launches[tap.launch].template].io.y];
            let bytes = tap.elements as u64 * 4;
            if bytes > y.size() {
                let reason = format!("a tap of {} values but launch {} writes a buffer of {}", tap.elements, tap.launch, y.size() / 4);
                return Err(Error::InvalidArgument(reason));
            }
            self.kernels.encode(&mut encoder.begin_compute_pass(&Default::default()), &cmds[starts[encoded]..starts[tap.launch + 1]]);
            encoded = tap.launch + 1;
            match tap.perturb {
                None => {
                    encoder.copy_buffer_to_buffer(y, 0, &capture, offset, bytes);
                    pending.parts.push(TapPart::Captured { offset: offset as usize, elements: tap.elements });
                    offset += bytes;
                }
                Some(scale) => {
                    let staging = readback("perturbed launch", bytes);
                    encoder.copy_buffer_to_buffer(y, 0, &staging, 0, bytes);
                    let index = ctx.queue.submit([encoder.finish()]);
                    let mut values: Vec<f32> = bytemuck::pod_collect_to_vec(&read_buffer(ctx, &staging, bytes as usize, Some(index))?);
                    tap::perturb(&mut values, scale);
                    ctx.queue.write_buffer(y, 0, bytemuck::cast_slice(&values));
                    pending.parts.push(TapPart::Host(values));
                    encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step after a tap") });
                }
            }
        }
        self.kernels.encode(&mut encoder.begin_compute_pass(&Default::default()), &cmds[starts[encoded]..]);
        pending.capture = Some(capture);
        Ok(encoder)
    }

    /// Per-launch device times of a profiled step.
    fn read_profile(&self, launches: usize) -> Result<Vec<f64>> {
        let Some(p) = &self.profiler else { return Ok(vec![]) };
        let bytes = self.read(&p.staging, launches * 16, None)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period = self.kernels.ctx.queue.get_timestamp_period() as f64;
        Ok((0..launches).map(|i| ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1000.0).collect())
    }

    /// Reads `bytes` of `buffer` once the submission `after` has finished (every
    /// submission if `None`).
    fn read(&self, buffer: &wgpu::Buffer, bytes: usize, after: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
        read_buffer(&self.kernels.ctx, buffer, bytes, after)
    }
}

/// Reads `bytes` of a MAP_READ `buffer` once the submission `after` has finished (every
/// submission if `None`).
/// A lost device (or an error that escaped every scope) is an error here, where every step
/// is read back.
pub fn read_buffer(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: usize, after: Option<wgpu::SubmissionIndex>) -> Result<Vec<u8>> {
    ctx.check("reading back")?;
    let slice = buffer.slice(..bytes as u64);
    let mapped = std::sync::Arc::new(std::sync::Mutex::new(None));
    let done = std::sync::Arc::clone(&mapped);
    slice.map_async(wgpu::MapMode::Read, move |r| *done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r));
    ctx.device.poll(wgpu::PollType::Wait { submission_index: after, timeout: None }).map_err(|e| Error::Backend {
        backend: "wgpu".into(),
        op: "waiting for the step".into(),
        reason: e.to_string(),
    })?;
    ctx.check("reading back")?;
    let mapped = mapped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    match mapped {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Error::Backend { backend: "wgpu".into(), op: "reading back".into(), reason: e.to_string() }),
        None => {
            return Err(Error::Backend { backend: "wgpu".into(), op: "reading back".into(), reason: "the buffer was never mapped".into() });
        }
    }
    let out = slice
        .get_mapped_range()
        .map_err(|e| Error::Backend { backend: "wgpu".into(), op: "reading back".into(), reason: e.to_string() })?
        .to_vec();
    buffer.unmap();
    Ok(out)
}

impl Executor for WgpuExecutor {
    fn describe(&self) -> String {
        self.kernels.ctx.describe()
    }

    fn submit(&mut self, step: &LoweredStep, input: &StepInput, tokens: Tokens, pick: &Pick, slot: usize) -> Result<()> {
        self.record(step, input, tokens, pick, slot, &[]).map(drop)
    }

    fn collect(&mut self, slot: usize) -> Result<StepOutput> {
        let s = std::mem::take(&mut self.slots[slot]);
        let Some(index) = s.index else { return Err(Error::InvalidArgument(format!("no step was submitted in slot {slot}"))) };
        let at = ids_readback_bytes(self.max_out) as usize;
        let bytes = self.read(&self.ids_staging[slot], at + 16, Some(index))?;
        let words: &[u32] = bytemuck::cast_slice(&bytes[..(1 + s.n_out) * 4]);
        let mut timing = StepTiming { host_micros: Some(s.host_micros), device_micros: None };
        if s.timed {
            let ticks: [u64; 2] = bytemuck::pod_read_unaligned(&bytes[at..at + 16]);
            let period = self.kernels.ctx.queue.get_timestamp_period() as f64;
            timing.device_micros = Some(ticks[1].saturating_sub(ticks[0]) as f64 * period / 1000.0);
        }
        let logits = if s.logits {
            let n = s.n_out * self.lowering.graph.config.vocab_size;
            bytemuck::cast_slice(&self.read(&self.logits_staging, n * 4, None)?).to_vec()
        } else {
            vec![]
        };
        let launch_micros = s.profiled.map(|n| self.read_profile(n)).transpose()?;
        let ids = if s.logits { vec![] } else { words[1..].to_vec() };
        Ok(StepOutput { ids, logits, timing, launch_micros, fallback_rows: Some(words[0]) })
    }

    fn set_profiling(&mut self, on: bool) -> Result<()> {
        if !on {
            self.profiler = None;
            return Ok(());
        }
        let ctx = &self.kernels.ctx;
        if !ctx.timestamps {
            return Err(Error::BackendUnavailable {
                backend: "wgpu".into(),
                reason: format!("{} has no TIMESTAMP_QUERY: per-launch timing is not available", ctx.info.name),
            });
        }
        // A step has at most one launch per template.
        let launches = self.lowering.templates.len();
        let d = &ctx.device;
        let queries = d.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("launch times"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * launches as u32,
        });
        let size = (2 * launches * 8) as u64;
        let resolve = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.profiler = Some(Profiler { queries, resolve, staging });
        Ok(())
    }

    fn reset_sequence(&mut self, _seq: usize) {
        // Positions are overwritten before they are read: attention reads 0..=position,
        // all written by this sequence's own steps.
    }

    fn run_tapped(&mut self, step: &LoweredStep, input: &StepInput, taps: &[Tap]) -> Result<(StepOutput, Tapped)> {
        tap::validate(step, taps)?;
        let pending = self.record(step, input, Tokens::Host, &Pick::Logits, 0, taps)?;
        let out = self.collect(0)?;
        Ok((out, pending.read(&self.kernels.ctx)?))
    }
}

#[cfg(test)]
mod tests;
