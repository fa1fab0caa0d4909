//! Kernel microbenchmarks on the wgpu backend, timed with GPU timestamps: the device's
//! memory bandwidth (the ceilings: a read-only kernel, a copy kernel and the driver's buffer
//! copy), each linear implementation over a grid of M on given [N, K] shapes, and decode
//! attention (split-KV + combine, and the online kernel) over context lengths.
//!
//! Every number is the median of several passes, each pass timing many back-to-back
//! dispatches between two timestamps. On a hardware GPU, weights and KV caches rotate over
//! copies totalling more than any last-level cache, as in a real decode step where the
//! whole model streams through between two reads of one weight; a software rasteriser
//! (lavapipe) gets just enough work to print sensible numbers quickly.

use wgpu::util::DeviceExt;

use super::kernels::{self, Binds, Dispatch, Kernels, NodeUniform, Shared, StepUniform, TemplateInputs};
use super::shaders::Storage;
use super::{GpuContext, read_buffer};
use crate::backend::WgpuOptions;
pub use crate::backend::microbench::*;
use crate::error::{Error, Result};
use crate::lower::caps::{BackendCaps, wgsl};
use crate::lower::kernel::{UnifiedMax, Variant};
use crate::lower::{Launch, Template};

/// Largest bandwidth buffer (the read of one is then ~0.25 ms on a 4 TB/s device).
const BANDWIDTH_MAX_BYTES: u64 = 1 << 30;
/// The bandwidth buffers together exceed this (no cache holds them).
const BANDWIDTH_MIN_TOTAL: u64 = 256 << 20;
const BW_WG: usize = 256;
const MAX_GROUPS: usize = 65535;

/// The kernels, and the shared buffers of steps of up to `MAX_M` tokens.
struct Bench {
    kernels: Kernels,
    shared: Shared,
}

/// Rows the benchmark's step data holds.
const MAX_M: usize = 512;
/// The attention flags start after the recomputed-rows word.
const FLAG_OFFSET: usize = 1;

fn storage_buffer(d: &wgpu::Device, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("microbench"),
        size: bytes.max(16),
        usage: wgpu::BufferUsages::STORAGE | usage,
        mapped_at_creation: false,
    })
}

impl Bench {
    /// The kernels on the adapter `opts` names, with partials and flags for one row of `a`.
    fn new(opts: &WgpuOptions, a: AttentionShape) -> Result<Bench> {
        let kernels = Kernels::new(GpuContext::new(opts.adapter.as_deref(), opts.precision, opts.kv)?, &[])?;
        let scratch = (a.heads * wgsl::MAX_ATTN_CHUNKS * (a.head_dim + 1) * 4) as u64;
        let shared = Shared::new(&kernels.ctx, MAX_M, scratch, FLAG_OFFSET + a.heads);
        Ok(Bench { kernels, shared })
    }

    fn ctx(&self) -> &GpuContext {
        &self.kernels.ctx
    }

    /// Runs `encode` between two timestamps; returns the device time in microseconds.
    fn timed(&self, encode: impl FnOnce(&mut wgpu::CommandEncoder, wgpu::ComputePassTimestampWrites)) -> Result<f64> {
        let d = &self.ctx().device;
        let queries = d.create_query_set(&wgpu::QuerySetDescriptor { label: None, ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolve = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = d.create_command_encoder(&Default::default());
        let writes = wgpu::ComputePassTimestampWrites {
            query_set: &queries,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        };
        encode(&mut enc, writes);
        enc.resolve_query_set(&queries, 0..2, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
        self.ctx().queue.submit([enc.finish()]);
        let bytes = read_buffer(self.ctx(), &staging, 16, None)?;
        let t: &[u64] = bytemuck::cast_slice(&bytes);
        Ok(t[1].saturating_sub(t[0]) as f64 * self.ctx().queue.get_timestamp_period() as f64 / 1000.0)
    }

    /// `dispatches` back to back in one compute pass.
    fn encode_pass(
        &self,
        enc: &mut wgpu::CommandEncoder,
        timestamp_writes: Option<wgpu::ComputePassTimestampWrites>,
        dispatches: &[Dispatch],
    ) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("microbench"), timestamp_writes });
        self.kernels.encode(&mut pass, dispatches);
    }

    /// Median over `repeats` passes of the device time of `dispatches` in one pass, in
    /// microseconds (the whole pass, not per dispatch).
    fn time_pass(&self, repeats: usize, dispatches: &[Dispatch]) -> Result<f64> {
        let times = (0..repeats.max(1))
            .map(|_| self.timed(|enc, writes| self.encode_pass(enc, Some(writes), dispatches)))
            .collect::<Result<Vec<f64>>>()?;
        Ok(median(times))
    }

    fn node_uniform(&self, node: &NodeUniform) -> wgpu::Buffer {
        self.ctx().device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::bytes_of(node),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    fn set_step(&self, step: StepUniform, data: &[u32]) {
        self.ctx().queue.write_buffer(&self.shared.step_uniform, 0, bytemuck::bytes_of(&step));
        if !data.is_empty() {
            self.ctx().queue.write_buffer(&self.shared.step_data, 0, bytemuck::cast_slice(data));
        }
    }

    fn bind_group(&self, ubuf: &wgpu::Buffer, b: Binds) -> wgpu::BindGroup {
        self.kernels.bind_group(&self.shared, ubuf, 0, b)
    }

    /// Per-dispatch device time of `DISPATCH_CHAIN` one-workgroup `add`s in one pass, each
    /// reading what the one before wrote (so a barrier separates every two).
    fn dispatch_floor(&self, repeats: usize) -> Result<f64> {
        const DISPATCH_CHAIN: usize = 256;
        let (a, b) = (self.small_buffer(64), self.small_buffer(64));
        let ubuf = self.node_uniform(&NodeUniform { n: 64, ..Default::default() });
        let forth = self.bind_group(&ubuf, Binds { x: Some(&a), x2: Some(&a), y: Some(&b), ..Default::default() });
        let back = self.bind_group(&ubuf, Binds { x: Some(&b), x2: Some(&b), y: Some(&a), ..Default::default() });
        self.set_step(StepUniform::new(1, 0, MAX_M, None), &[]);
        let chain: Vec<Dispatch> =
            (0..DISPATCH_CHAIN).map(|i| Dispatch::new("add", if i % 2 == 0 { &forth } else { &back }, [1, 1, 1])).collect();
        Ok(self.time_pass(repeats, &chain)? / DISPATCH_CHAIN as f64)
    }

    fn small_buffer(&self, floats: usize) -> wgpu::Buffer {
        storage_buffer(&self.ctx().device, (floats * 4) as u64, wgpu::BufferUsages::empty())
    }

    /// Read, kernel copy and driver copy bandwidth over buffers of up to 1 GiB (within the
    /// binding limit), rotated so they add up to at least 256 MiB.
    fn bandwidth(&self, effort: &Effort, progress: &mut dyn FnMut()) -> Result<Bandwidth> {
        let d = &self.ctx().device;
        let mib = 1u64 << 20;
        let size = (self.ctx().max_binding().min(BANDWIDTH_MAX_BYTES) / mib * mib).max(mib);
        let count = BANDWIDTH_MIN_TOTAL.div_ceil(size).max(2) as usize;
        let bufs: Vec<wgpu::Buffer> =
            (0..count).map(|_| storage_buffer(d, size, wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST)).collect();
        let vec4s = (size / 16) as usize;
        let ops = effort.bandwidth_ops;
        let ubuf = self.node_uniform(&NodeUniform { n: vec4s as u32, ..Default::default() });

        // Read: one sum per workgroup into a small buffer; sixteen vec4s per thread (four
        // rounds of four loads in flight) where the buffer is large enough.
        let read_groups = (vec4s / (BW_WG * 16)).clamp(1, MAX_GROUPS);
        let sums = storage_buffer(d, (read_groups * 4) as u64, wgpu::BufferUsages::empty());
        let read_binds: Vec<wgpu::BindGroup> =
            bufs.iter().map(|b| self.bind_group(&ubuf, Binds { x: Some(b), y: Some(&sums), ..Default::default() })).collect();
        let cmds: Vec<Dispatch> =
            (0..ops).map(|i| Dispatch::new("stream_read", &read_binds[i % count], [read_groups as u32, 1, 1])).collect();
        let read = (ops as u64 * size) as f64 / self.time_pass(effort.repeats, &cmds)? / 1e3;
        progress();

        // Copy by shader invocations: buffer i into buffer i + 1.
        let copy_groups = (vec4s / BW_WG).clamp(1, MAX_GROUPS);
        let copy_binds: Vec<wgpu::BindGroup> = (0..count)
            .map(|i| self.bind_group(&ubuf, Binds { x: Some(&bufs[i]), y: Some(&bufs[(i + 1) % count]), ..Default::default() }))
            .collect();
        let cmds: Vec<Dispatch> =
            (0..ops).map(|i| Dispatch::new("stream_copy", &copy_binds[i % count], [copy_groups as u32, 1, 1])).collect();
        let copy_kernel = (2 * ops as u64 * size) as f64 / self.time_pass(effort.repeats, &cmds)? / 1e3;
        progress();

        // The driver's copy: every copy of one encoder between the timestamps of two empty
        // passes (copies cannot sit inside a compute pass).
        let times = (0..effort.repeats.max(1))
            .map(|_| {
                self.timed(|enc, writes| {
                    let begin = wgpu::ComputePassTimestampWrites {
                        query_set: writes.query_set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: None,
                    };
                    drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(begin) }));
                    for i in 0..ops {
                        enc.copy_buffer_to_buffer(&bufs[i % count], 0, &bufs[(i + 1) % count], 0, size);
                    }
                    let end = wgpu::ComputePassTimestampWrites {
                        query_set: writes.query_set,
                        beginning_of_pass_write_index: None,
                        end_of_pass_write_index: Some(1),
                    };
                    drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(end) }));
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        let copy_buffer = (2 * ops as u64 * size) as f64 / median(times) / 1e3;
        progress();
        Ok(Bandwidth {
            buffer_bytes: size,
            buffers: count,
            read_gbytes_per_s: read,
            copy_kernel_gbytes_per_s: copy_kernel,
            copy_buffer_gbytes_per_s: copy_buffer,
        })
    }

    /// Decode attention of one sequence at each context length: split + combine (and the
    /// split alone), and the online kernel, over K and V caches of exactly `ctx` positions.
    fn attention_sweep(
        &self,
        effort: &Effort,
        a: AttentionShape,
        ctxs: &[usize],
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<AttentionTiming>> {
        let (heads, kvh, hd) = (a.heads, a.kv_heads, a.head_dim);
        let (kv_dim, width) = (kvh * hd, (heads + 2 * kvh) * hd);
        // The executor (one sequence) holds the partials of one row of split-KV chunks.
        let d = &self.ctx().device;
        let mut rng = crate::sampling::Rng::new(7);
        let mut random = |n: usize| -> Vec<f32> { (0..n.next_multiple_of(4)).map(|_| rng.next_f32() * 2.0 - 1.0).collect() };
        let upload = |contents: &[u8]| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents, usage: wgpu::BufferUsages::STORAGE })
        };
        let kv_dtype = self.ctx().kv_dtype();
        let in_kv_type = |v: Vec<f32>| crate::tensor::HostTensor::f32(vec![v.len()], v).convert(kv_dtype);
        let qb = upload(bytemuck::cast_slice(&random(width)));
        let yb = storage_buffer(d, (heads * hd * 4) as u64, wgpu::BufferUsages::empty());
        let um = UnifiedMax::default();
        let mut out = Vec::new();
        for &ctx in ctxs {
            let cache_bytes = ctx * kv_dim * kv_dtype.size();
            let copies = effort.copies(2 * cache_bytes);
            // Whole 16-byte words, as the decode attention reads them.
            let elems = (ctx * kv_dim).next_multiple_of(8);
            let (k, v) = (in_kv_type(random(elems)), in_kv_type(random(elems)));
            let caches: Vec<(wgpu::Buffer, wgpu::Buffer)> =
                (0..copies).map(|_| (upload(k.as_le_bytes()), upload(v.as_le_bytes()))).collect();
            drop((k, v));
            let ubuf = self.node_uniform(&NodeUniform {
                heads: heads as u32,
                kv_heads: kvh as u32,
                head_dim: hd as u32,
                max_ctx: ctx as u32,
                flag_offset: FLAG_OFFSET as u32,
                scale: 1.0 / (hd as f32).sqrt(),
                phi: um.phi,
                lo: um.lo,
                hi: um.hi,
                ..Default::default()
            });
            let groups: Vec<wgpu::BindGroup> = caches
                .iter()
                .map(|(kb, vb)| {
                    self.bind_group(&ubuf, Binds { x: Some(&qb), y: Some(&yb), kc: Some(kb), vc: Some(vb), ..Default::default() })
                })
                .collect();
            // One token of sequence 0 at position ctx - 1: it attends to all ctx positions,
            // cut into chunks as a decode step cuts them.
            let limits = BackendCaps::wgpu_builtin().attention.split_kv.expect("the WGSL kernels split KV");
            let (chunks, chunk_keys) = limits.chunking(ctx, heads);
            let step = StepUniform::new(1, 0, MAX_M, Some((chunks, chunk_keys)));
            let mut data = vec![0u32; 4 * MAX_M];
            data[MAX_M] = (ctx - 1) as u32;
            self.set_step(step, &data);
            let mut enc = d.create_command_encoder(&Default::default());
            enc.clear_buffer(&self.shared.flags, 0, None);
            self.ctx().queue.submit([enc.finish()]);

            let reps = effort.dispatches(copies);
            // `n` chunks per head; the step uniform says how many keys each holds.
            let split = |r: usize, n: usize| Dispatch::new("attn_split", &groups[r % copies], [n as u32, heads as u32, 1]);
            let combine = |r: usize| Dispatch::new("attn_combine", &groups[r % copies], [heads as u32, 1, 1]);
            let split_combine = |n: usize| -> Vec<Dispatch> { (0..reps).flat_map(|r| [split(r, n), combine(r)]).collect() };
            let online = |r: usize| Dispatch::new("attn_online", &groups[r % copies], [heads as u32, 1, 1]);
            let split_only: Vec<Dispatch> = (0..reps).map(|r| split(r, chunks)).collect();
            let both = split_combine(chunks);
            let online_only: Vec<Dispatch> = (0..reps).map(online).collect();
            let t_split = self.time_pass(effort.repeats, &split_only)? / reps as f64;
            let t_both = self.time_pass(effort.repeats, &both)? / reps as f64;
            let t_online = self.time_pass(effort.repeats, &online_only)? / reps as f64;
            let fallback_heads = self.read_words(&self.shared.flags, FLAG_OFFSET, heads)?.iter().filter(|&&f| f != 0).count();
            // Split + combine at every other chunk length the kernels take (powers of two
            // times the key tile, within the partials' chunk count).
            let mut other_chunkings = vec![];
            for keys in (0..).map(|s| limits.min_chunk_keys << s).take_while(|&k| k < 2 * ctx) {
                let n = ctx.div_ceil(keys);
                if keys == chunk_keys || n > limits.max_chunks {
                    continue;
                }
                self.set_step(StepUniform::new(1, 0, MAX_M, Some((n, keys))), &data);
                other_chunkings.push((keys, self.time_pass(effort.repeats, &split_combine(n))? / reps as f64));
            }
            let kv_bytes = 2 * cache_bytes;
            let mut timing = AttentionTiming::new(&a, ctx, kv_bytes, (chunks, chunk_keys), [t_split, t_both, t_online], fallback_heads);
            timing.other_chunkings = other_chunkings;
            out.push(timing);
            progress();
        }
        Ok(out)
    }

    /// `len` u32 words of `buffer` (COPY_SRC) from word `first`.
    fn read_words(&self, buffer: &wgpu::Buffer, first: usize, len: usize) -> Result<Vec<u32>> {
        let bytes = (len * 4).next_multiple_of(4) as u64;
        let staging = self.ctx().device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.ctx().device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, (first * 4) as u64, &staging, 0, bytes);
        self.ctx().queue.submit([enc.finish()]);
        Ok(read_buffer(self.ctx(), &staging, len * 4, None)?
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
            .collect())
    }
}

/// The buffers of one linear shape: weight copies to rotate over; activations of `MAX_M`
/// rows as wide as the widest input or output of the launches around the product (x, the
/// residual x2, y); an RMSNorm weight, a bias, a RoPE table and one KV slot per row.
struct ShapeBuffers {
    n: usize,
    k: usize,
    weights: Vec<wgpu::Buffer>,
    x: wgpu::Buffer,
    x2: wgpu::Buffer,
    y: wgpu::Buffer,
    norm: wgpu::Buffer,
    bias: wgpu::Buffer,
    rope: wgpu::Buffer,
    kc: wgpu::Buffer,
    vc: wgpu::Buffer,
}

/// The linear kernels of one adapter, timed shape by shape (`LinearBench`).
pub struct WgpuLinear {
    bench: Bench,
    effort: Effort,
    caps: BackendCaps,
    shape: Option<ShapeBuffers>,
}

impl WgpuLinear {
    /// Opens the adapter as the wgpu backend does (its capabilities, and so the tuner's
    /// profile key, are the backend's).
    pub fn open(opts: &WgpuOptions) -> Result<WgpuLinear> {
        let a = AttentionShape { heads: 1, kv_heads: 1, head_dim: 4, max_context: 1 };
        WgpuLinear::new(Bench::new(opts, a)?)
    }

    fn new(bench: Bench) -> Result<WgpuLinear> {
        if !bench.ctx().timestamps {
            let reason = format!("{} has no TIMESTAMP_QUERY", bench.ctx().info.name);
            return Err(Error::BackendUnavailable { backend: "wgpu".into(), reason });
        }
        let effort = if bench.ctx().info.device_type == wgpu::DeviceType::Cpu { SOFTWARE } else { HARDWARE };
        let caps = bench.ctx().caps(None);
        Ok(WgpuLinear { bench, effort, caps, shape: None })
    }

    fn shape(&mut self, n: usize, k: usize) -> &ShapeBuffers {
        if self.shape.as_ref().is_none_or(|s| (s.n, s.k) != (n, k)) {
            self.shape = None; // the last shape's copies go before this one's are made
            let b = &self.bench;
            let d = &b.ctx().device;
            let copies = self.effort.copies(n * k * b.ctx().weight_dtype().size());
            let mut rng = crate::sampling::Rng::new(n as u64 * 31 + k as u64);
            let w: Vec<f32> = (0..n * k).map(|_| rng.next_f32() - 0.5).collect();
            let weights = (0..copies).map(|_| b.ctx().upload_f32_weights("weights", &w)).collect();
            let width = n.max(k);
            let upload = |v: &[f32]| {
                let contents: &[u8] = bytemuck::cast_slice(v);
                d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents, usage: wgpu::BufferUsages::STORAGE })
            };
            let x: Vec<f32> = (0..(MAX_M * width).next_multiple_of(4)).map(|_| rng.next_f32() - 0.5).collect();
            // Every row is at position 0 of sequence 0: one (cos, sin) per pair, one KV slot.
            let rope = upload(&[1.0, 0.0].repeat(wgsl::MAX_HEAD_DIM / 2));
            let zeros = |len: usize| storage_buffer(d, (len * 4) as u64, wgpu::BufferUsages::empty());
            self.shape = Some(ShapeBuffers {
                n,
                k,
                weights,
                x2: upload(&x),
                x: upload(&x),
                y: zeros(MAX_M * width),
                norm: upload(&vec![1.0; k.next_multiple_of(4)]),
                bias: zeros(n),
                rope,
                kc: zeros(n),
                vc: zeros(n),
            });
        }
        self.shape.as_ref().expect("just made")
    }
}

impl LinearBench for WgpuLinear {
    fn caps(&self) -> &BackendCaps {
        &self.caps
    }

    fn max_m(&self) -> usize {
        MAX_M
    }

    fn effort(&self) -> Effort {
        self.effort
    }

    fn set_effort(&mut self, effort: Effort) {
        self.effort = effort;
        self.shape = None;
    }

    fn time_launches(&mut self, launches: &[(Template, Variant)], m: usize) -> Result<f64> {
        let (n, k) = timed_shape(launches, m, MAX_M, wgsl::MAX_HEAD_DIM)?;
        let effort = self.effort;
        let copies = self.shape(n, k).weights.len();
        let (b, shape) = (&self.bench, self.shape.as_ref().expect("made above"));
        // Each of the template's inputs in the buffer of its role.
        let binds = |t: &Template, w| {
            let inputs = TemplateInputs {
                x: t.io.x.map(|_| &shape.x),
                x2: t.io.x2.map(|_| &shape.x2),
                w: Some(w),
                y: &shape.y,
                kv: t.io.kv.map(|_| (&shape.kc, &shape.vc)),
                norm: t.io.norm_weight.map(|_| &shape.norm),
                bias: t.io.bias.map(|_| &shape.bias),
                rope_table: &shape.rope,
            };
            Binds::for_template(t, inputs)
        };
        let groups: Vec<Vec<wgpu::BindGroup>> = launches
            .iter()
            .map(|(t, _)| {
                let ubuf = b.node_uniform(&NodeUniform::of(t, 1, |_| FLAG_OFFSET));
                shape.weights.iter().map(|w| b.bind_group(&ubuf, binds(t, w))).collect()
            })
            .collect();
        let reps = effort.dispatches(copies);
        let mut cmds: Vec<Dispatch> = vec![];
        for r in 0..reps {
            for ((t, variant), groups) in launches.iter().zip(&groups) {
                kernels::dispatches(
                    &Launch { template: 0, variant: *variant, rows: m },
                    t,
                    Storage::Float,
                    &groups[r % copies],
                    m,
                    &mut cmds,
                )?;
            }
        }
        self.bench.set_step(StepUniform::new(m, m, MAX_M, None), &[]);
        // One repetition first. A pass that long (a software rasteriser on an LM head's
        // product: a second or more per variant and M) is timed once: the tuner's rounds
        // repeat what is close, and repeating the rest cost lavapipe tens of minutes.
        let single = self.bench.time_pass(1, &cmds[..cmds.len() / reps])?;
        if single >= LONG_PASS_MICROS {
            return Ok(single);
        }
        Ok(self.bench.time_pass(effort.repeats, &cmds)? / reps as f64)
    }
}

/// A repetition this long is timed once (see `time_launches`); on an H200 the longest
/// product the tuner times takes well under a millisecond.
const LONG_PASS_MICROS: f64 = 20_000.0;

/// Measures the bandwidth ceilings, then every linear shape and M, then decode attention
/// at every context length that fits; `progress(done, total)` after each measurement.
pub fn run(sweep: &Sweep, opts: &WgpuOptions, progress: &mut dyn FnMut(usize, usize)) -> Result<KernelReport> {
    let a = sweep.attention;
    if a.heads == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) || a.head_dim > 256 || !a.head_dim.is_multiple_of(4) {
        return Err(Error::InvalidArgument(format!(
            "attention shape {a:?}: heads must be a multiple of KV heads and head_dim a multiple of 4 up to 256"
        )));
    }
    let mut lin = WgpuLinear::new(Bench::new(opts, a)?)?;
    let effort = lin.effort;
    if sweep.ms.iter().any(|&m| m > MAX_M) {
        return Err(Error::InvalidArgument(format!("bench kernels measures M up to {MAX_M}")));
    }
    let max_binding = lin.bench.ctx().max_binding();
    let (ctxs, skipped_ctx): (Vec<usize>, Vec<(usize, String)>) = {
        let mut ok = Vec::new();
        let mut skipped = Vec::new();
        for &ctx in sweep.ctxs {
            match ctx_unmeasurable(ctx, &a, lin.bench.ctx().kv_dtype().size(), max_binding) {
                None => ok.push(ctx),
                Some(why) => skipped.push((ctx, why)),
            }
        }
        (ok, skipped)
    };
    let total = 3 + sweep.shapes.len() * sweep.ms.len() + ctxs.len();
    let mut done = 0;
    let mut tick = || {
        done += 1;
        progress(done, total);
    };
    let bandwidth = lin.bench.bandwidth(&effort, &mut tick)?;
    let dispatch_floor_micros = lin.bench.dispatch_floor(5)?;
    let linear = linear_sweep(&mut lin, sweep.shapes, sweep.ms, bandwidth.read_gbytes_per_s, &mut tick)?;
    lin.shape = None;
    let attention = lin.bench.attention_sweep(&effort, a, &ctxs, &mut tick)?;
    Ok(KernelReport {
        device: lin.bench.ctx().describe(),
        copy_gbytes_per_s: bandwidth.copy_kernel_gbytes_per_s.max(bandwidth.copy_buffer_gbytes_per_s),
        read_gbytes_per_s: bandwidth.read_gbytes_per_s,
        bandwidth,
        dispatch_floor_micros,
        fused: vec![],
        linear,
        attention,
        skipped_ctx,
        kv_dtype: lin.bench.ctx().kv_dtype(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bandwidth probes touch every element exactly once (on whatever adapter exists).
    #[test]
    fn bandwidth_kernels_read_and_copy_every_element() {
        let a = AttentionShape { heads: 1, kv_heads: 1, head_dim: 64, max_context: 64 };
        let Some(ex) = Bench::new(&WgpuOptions { precision: crate::backend::WeightPrecision::F32, ..Default::default() }, a)
            .map_err(crate::testing::skip_unavailable)
            .ok()
        else {
            return;
        };
        let d = ex.ctx().device.clone();
        // Not a multiple of the workgroup or of the four-load unroll.
        let vec4s = 3 * BW_WG * 4 * 5 + 37;
        let values: Vec<f32> = (0..4 * vec4s).map(|i| (i % 7) as f32).collect();
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let xb = d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&values), usage });
        let ubuf = ex.node_uniform(&NodeUniform { n: vec4s as u32, ..Default::default() });
        for groups in [1usize, 3, 64] {
            let sums = storage_buffer(&d, (groups * 4) as u64, wgpu::BufferUsages::COPY_SRC);
            let copy = storage_buffer(&d, (vec4s * 16) as u64, wgpu::BufferUsages::COPY_SRC);
            let read = ex.bind_group(&ubuf, Binds { x: Some(&xb), y: Some(&sums), ..Default::default() });
            let cp = ex.bind_group(&ubuf, Binds { x: Some(&xb), y: Some(&copy), ..Default::default() });
            let mut enc = d.create_command_encoder(&Default::default());
            ex.encode_pass(
                &mut enc,
                None,
                &[Dispatch::new("stream_read", &read, [groups as u32, 1, 1]), Dispatch::new("stream_copy", &cp, [groups as u32, 1, 1])],
            );
            ex.ctx().queue.submit([enc.finish()]);
            let got: f64 = ex.read_words(&sums, 0, groups).unwrap().iter().map(|&w| f32::from_bits(w) as f64).sum();
            let want: f64 = values.iter().map(|&v| v as f64).sum();
            assert_eq!(got, want, "stream_read over {groups} workgroups");
            let copied: Vec<f32> = ex.read_words(&copy, 0, 4 * vec4s).unwrap().into_iter().map(f32::from_bits).collect();
            assert!(copied == values, "stream_copy over {groups} workgroups");
        }
    }
}
