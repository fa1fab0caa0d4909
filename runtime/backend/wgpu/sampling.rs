//! Top-k / top-p sampling on the device (shaders/sampling.wgsl): one workgroup per row of
//! logits picks the same token as `Sampler::sample` given the same uniform draw, so only
//! the ids (not `rows x vocab` logits) come back to the host.
//!
//! Independent of `WgpuExecutor`: it has its own bind group layout and needs only a
//! `GpuContext`. The draws come from the host's seeded `Rng`, one per row, so a seeded run
//! gives the same tokens on both backends (up to float rounding at the exact boundary
//! between two tokens' cumulative probabilities).

use bytemuck::{Pod, Zeroable};

use super::device::GpuContext;
use crate::error::{Error, Result};
use crate::lower::caps::wgsl;
use crate::sampling::SamplingParams;

pub const SOURCE: &str = include_str!("../../../shaders/sampling.wgsl");

/// The kernel with the shared constants (`MAX_K`) in front.
fn source() -> String {
    format!("{}{SOURCE}", wgsl::header())
}
const ENTRY: &str = "sample";

/// Matches `Params` in shaders/sampling.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default, Debug)]
struct Params {
    vocab: u32,
    rows: u32,
    top_k: u32,
    temperature: f32,
    top_p: f32,
    out_offset: u32,
    logits_row_stride: u32,
    _pad: u32,
}

pub struct GpuSampler {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    params: wgpu::Buffer,
    draws: wgpu::Buffer,
    vocab: usize,
    max_rows: usize,
}

fn backend_err(op: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "wgpu".into(), op: op.into(), reason: reason.to_string() }
}

fn entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }
}

impl GpuSampler {
    /// Largest `top_k` the kernel takes: its candidates live in workgroup memory.
    pub const MAX_TOP_K: usize = wgsl::SAMPLER_MAX_K;
    /// Ids break ties at the k-th logit as 24-bit digits.
    pub const MAX_VOCAB: usize = 1 << 24;
    /// Threads per workgroup; one workgroup samples one row.
    pub const WORKGROUP: u32 = 256;

    /// Compiles the kernel for rows of `vocab` logits, up to `max_rows` rows per dispatch.
    pub fn new(ctx: &GpuContext, vocab: usize, max_rows: usize) -> Result<Self> {
        if vocab == 0 || vocab > Self::MAX_VOCAB {
            return Err(Error::InvalidArgument(format!("GPU sampling takes vocabularies of 1..={} tokens, got {vocab}", Self::MAX_VOCAB)));
        }
        if max_rows == 0 || max_rows > ctx.limits.max_compute_workgroups_per_dimension as usize {
            return Err(Error::InvalidArgument(format!(
                "GPU sampling takes 1..={} rows per dispatch, got {max_rows}",
                ctx.limits.max_compute_workgroups_per_dimension
            )));
        }
        let device = &ctx.device;
        let read_only = wgpu::BufferBindingType::Storage { read_only: true };
        let entries = [
            entry(0, wgpu::BufferBindingType::Uniform),
            entry(1, read_only),
            entry(2, read_only),
            entry(3, wgpu::BufferBindingType::Storage { read_only: false }),
        ];
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("sampling"), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("sampling"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("sampling"),
            source: wgpu::ShaderSource::Wgsl(source().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(ENTRY),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(ENTRY),
            compilation_options: Default::default(),
            cache: None,
        });
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sampling params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let draws = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sampling draws"),
            size: (max_rows * 4).max(16) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(backend_err("compiling shaders/sampling.wgsl", e));
        }
        Ok(GpuSampler { pipeline, layout, params, draws, vocab, max_rows })
    }

    /// Whether these parameters run on the device (top_k in 1..=MAX_TOP_K, temperature > 0);
    /// otherwise the caller samples on the host (greedy takes the argmax kernel; top_k 0 or
    /// above MAX_TOP_K needs the whole vocabulary sorted).
    pub fn supports(p: &SamplingParams) -> bool {
        (1..=Self::MAX_TOP_K).contains(&p.top_k) && p.temperature > 0.0 && p.temperature.is_finite() && p.top_p > 0.0 && p.top_p <= 1.0
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Binds the logits (`rows x vocab` f32, row r at element `r * vocab`; needs STORAGE)
    /// and the ids' destination (u32 words; needs STORAGE). Both are bound whole.
    pub fn bind(&self, ctx: &GpuContext, logits: &wgpu::Buffer, out: &wgpu::Buffer) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("sampling"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: self.params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: logits.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: self.draws.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: out.as_entire_binding() },
            ],
        })
    }

    /// Writes the parameters and one uniform draw in [0, 1) per row (`Rng::next_f32`, in
    /// row order) with `queue.write_buffer`: they take effect at the next submit, so one
    /// submit holds at most one sampling dispatch. Row r's id goes to word
    /// `out_offset + r` of `out`.
    pub fn prepare(&self, ctx: &GpuContext, p: &SamplingParams, draws: &[f32], out_offset: u32) -> Result<()> {
        if !Self::supports(p) {
            return Err(Error::InvalidArgument(format!("GPU sampling does not take {p:?}; sample on the host")));
        }
        if draws.is_empty() || draws.len() > self.max_rows {
            return Err(Error::InvalidArgument(format!("GPU sampling takes 1..={} rows, got {}", self.max_rows, draws.len())));
        }
        let params = Params {
            vocab: self.vocab as u32,
            rows: draws.len() as u32,
            top_k: p.top_k as u32,
            temperature: p.temperature,
            top_p: p.top_p,
            out_offset,
            logits_row_stride: self.vocab as u32,
            _pad: 0,
        };
        ctx.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        ctx.queue.write_buffer(&self.draws, 0, bytemuck::cast_slice(draws));
        Ok(())
    }

    /// Samples `rows` rows (as many as draws were prepared): `dispatch_workgroups(rows, 1, 1)`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass, group: &wgpu::BindGroup, rows: usize) {
        debug_assert!(rows <= self.max_rows);
        if rows == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(rows as u32, 1, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{KvPrecision, WeightPrecision};
    use crate::sampling::{Rng, Sampler, argmax, top_k};
    use wgpu::util::DeviceExt;

    /// The kernel parses and validates with no GPU, with the entry point and shape the
    /// launcher dispatches.
    #[test]
    fn sampling_shader_validates_with_naga() {
        let code = source();
        let module = naga::front::wgsl::parse_str(&code).unwrap_or_else(|e| panic!("sampling.wgsl: {}", e.emit_to_string(&code)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        v.validate(&module).unwrap_or_else(|e| panic!("sampling.wgsl: {}", e.emit_to_string(&code)));
        let ep = module.entry_points.iter().find(|p| p.name == ENTRY).expect("entry point `sample`");
        assert_eq!(ep.workgroup_size, [GpuSampler::WORKGROUP, 1, 1]);
    }

    #[test]
    fn sampling_supports_only_bounded_top_k_with_a_temperature() {
        let p = |temperature, top_k, top_p| SamplingParams { temperature, top_k, top_p, seed: 0 };
        assert!(GpuSampler::supports(&p(0.7, 40, 0.9)));
        assert!(GpuSampler::supports(&p(1.0, 1, 1.0)));
        assert!(GpuSampler::supports(&p(1.0, 256, 1.0)));
        assert!(!GpuSampler::supports(&p(0.0, 40, 0.9)));
        assert!(!GpuSampler::supports(&p(1.0, 0, 0.9)));
        assert!(!GpuSampler::supports(&p(1.0, 257, 0.9)));
        assert!(!GpuSampler::supports(&p(f32::INFINITY, 40, 0.9)));
    }

    fn context() -> Option<GpuContext> {
        GpuContext::new(None, WeightPrecision::Auto, KvPrecision::Auto).map_err(crate::testing::skip_unavailable).ok()
    }

    /// Ids written past a few leading words, as the executor's flags buffer holds them.
    const OUT_OFFSET: u32 = 3;

    fn run_gpu(ctx: &GpuContext, s: &GpuSampler, logits: &[f32], p: &SamplingParams, draws: &[f32]) -> Vec<u32> {
        let rows = draws.len();
        assert_eq!(logits.len(), rows * s.vocab());
        let d = &ctx.device;
        let lb = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(logits),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let words = OUT_OFFSET as usize + rows;
        let sentinel = vec![u32::MAX; words];
        let ob = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&sentinel),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (words * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        s.prepare(ctx, p, draws, OUT_OFFSET).unwrap();
        let group = s.bind(ctx, &lb, &ob);
        let mut enc = d.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            s.encode(&mut pass, &group, rows);
        }
        enc.copy_buffer_to_buffer(&ob, 0, &staging, 0, (words * 4) as u64);
        ctx.queue.submit([enc.finish()]);
        let got: Vec<u32> = bytemuck::cast_slice(&crate::backend::wgpu::read_buffer(ctx, &staging, words * 4, None).unwrap()).to_vec();
        assert!(got[..OUT_OFFSET as usize].iter().all(|&w| w == u32::MAX), "words before out_offset were written");
        got[OUT_OFFSET as usize..].to_vec()
    }

    /// `Sampler::sample`'s arithmetic after `top_k`, with the draw `u` given, the nucleus
    /// threshold moved by `dp` and the scaled draw by `dr`.
    fn reference(cands: &[(u32, f32)], t: f32, top_p: f32, u: f32, dp: f32, dr: f32) -> u32 {
        let max = cands[0].1;
        let mut probs: Vec<f32> = cands.iter().map(|&(_, l)| ((l - max) / t).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut keep = probs.len();
        let mut acc = 0.0f32;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= top_p + dp {
                keep = i + 1;
                break;
            }
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = u * total + dr;
        for (i, p) in probs[..keep].iter().enumerate() {
            r -= p;
            if r < 0.0 {
                return cands[i].0;
            }
        }
        cands[keep - 1].0
    }

    /// Within this of a nucleus or draw boundary the two sides may round differently.
    const EPS: f32 = 1e-5;

    /// Whether moving the nucleus threshold or the draw by EPS changes the token.
    fn ambiguous(cands: &[(u32, f32)], t: f32, top_p: f32, u: f32) -> bool {
        let id = reference(cands, t, top_p, u, 0.0, 0.0);
        [-EPS, 0.0, EPS].iter().any(|&dp| [-EPS, 0.0, EPS].iter().any(|&dr| reference(cands, t, top_p, u, dp, dr) != id))
    }

    /// Roughly normal logits, scaled per row so some rows are peaked and some flat.
    fn random_logits(rng: &mut Rng, rows: usize, vocab: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * vocab);
        for r in 0..rows {
            let scale = [0.5f32, 1.0, 2.0, 4.0][r % 4];
            out.extend((0..vocab).map(|_| ((0..4).map(|_| rng.next_f32()).sum::<f32>() - 2.0) * scale));
        }
        out
    }

    #[test]
    fn sampling_on_the_gpu_matches_the_cpu_sampler() {
        let Some(ctx) = context() else { return };
        eprintln!("adapter: {}", ctx.describe());
        let rows = 8;
        let mut rng = Rng::new(7);
        let (mut checked, mut skipped) = (0, 0);
        for vocab in [49152, 1000] {
            let s = GpuSampler::new(&ctx, vocab, rows).unwrap();
            for k in [1, 2, 40, 256] {
                for top_p in [1.0f32, 0.9, 0.5] {
                    for temperature in [0.7f32, 1.0] {
                        let logits = random_logits(&mut rng, rows, vocab);
                        let seeds: Vec<u64> = (0..rows).map(|_| rng.next_u64()).collect();
                        // Each row's Sampler takes exactly one draw for a non-greedy sample.
                        let draws: Vec<f32> = seeds.iter().map(|&seed| Rng::new(seed).next_f32()).collect();
                        let p = SamplingParams { temperature, top_k: k, top_p, seed: 0 };
                        let got = run_gpu(&ctx, &s, &logits, &p, &draws);
                        for (r, row) in logits.chunks(vocab).enumerate() {
                            let cpu = Sampler::new(SamplingParams { seed: seeds[r], ..p.clone() }).sample(row);
                            let cands = top_k(row, k);
                            assert_eq!(reference(&cands, temperature, top_p, draws[r], 0.0, 0.0), cpu, "the reference is the CPU sampler");
                            if ambiguous(&cands, temperature, top_p, draws[r]) {
                                skipped += 1;
                                continue;
                            }
                            checked += 1;
                            assert_eq!(
                                got[r], cpu,
                                "vocab {vocab} top_k {k} top_p {top_p} temperature {temperature} row {r} u {}",
                                draws[r]
                            );
                        }
                    }
                }
            }
        }
        eprintln!("{checked} draws equal to the CPU sampler's, {skipped} skipped within {EPS} of a boundary");
        assert!(skipped <= 5, "{skipped} draws skipped");
    }

    /// Ties at the k-th logit (and -inf masks) keep the smallest ids, whatever the thread
    /// timing: the full sort by (logit descending, id ascending) is the reference.
    #[test]
    fn sampling_on_the_gpu_breaks_ties_by_smallest_id() {
        // Tied candidates have equal probabilities; a top_p that is a multiple of 1/k would
        // put the nucleus boundary exactly on a cumulative sum.
        const TIE_TOP_P: f32 = 0.93;
        let Some(ctx) = context() else { return };
        let rows = 6;
        let mut rng = Rng::new(11);
        let (mut checked, mut skipped) = (0, 0);
        for vocab in [49152, 1000] {
            let s = GpuSampler::new(&ctx, vocab, rows).unwrap();
            for k in [2, 3, 40, 256] {
                let logits: Vec<f32> = (0..rows * vocab)
                    .map(|_| {
                        let x = rng.next_f32();
                        if x < 0.3 { f32::NEG_INFINITY } else { (x * 6.0).floor() * 0.5 }
                    })
                    .collect();
                let draws: Vec<f32> = (0..rows).map(|_| rng.next_f32()).collect();
                let p = SamplingParams { temperature: 1.0, top_k: k, top_p: TIE_TOP_P, seed: 0 };
                let got = run_gpu(&ctx, &s, &logits, &p, &draws);
                for (r, row) in logits.chunks(vocab).enumerate() {
                    let mut idx: Vec<u32> = (0..vocab as u32).collect();
                    idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
                    let cands: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, row[i as usize])).collect();
                    if ambiguous(&cands, 1.0, TIE_TOP_P, draws[r]) {
                        skipped += 1;
                        continue;
                    }
                    checked += 1;
                    assert_eq!(got[r], reference(&cands, 1.0, TIE_TOP_P, draws[r], 0.0, 0.0), "vocab {vocab} top_k {k} row {r}");
                }
            }
            // Fewer finite logits than k: the -inf ties fill the candidates and are never drawn.
            let mut logits = vec![f32::NEG_INFINITY; rows * vocab];
            for (r, row) in logits.chunks_mut(vocab).enumerate() {
                for j in (r..vocab).step_by(vocab / 7) {
                    row[j] = j as f32 * 1e-3;
                }
            }
            let draws: Vec<f32> = (0..rows).map(|_| rng.next_f32()).collect();
            let p = SamplingParams { temperature: 1.0, top_k: 40, top_p: 1.0, seed: 0 };
            let got = run_gpu(&ctx, &s, &logits, &p, &draws);
            for (r, row) in logits.chunks(vocab).enumerate() {
                assert!(row[got[r] as usize].is_finite(), "row {r} drew a masked token {}", got[r]);
            }
        }
        eprintln!("{checked} tie draws equal to the full-sort reference, {skipped} skipped within {EPS} of a boundary");
        assert!(skipped <= 5, "{skipped} draws skipped");
    }

    #[test]
    fn sampling_on_the_gpu_with_top_k_1_is_the_argmax() {
        let Some(ctx) = context() else { return };
        let rows = 16;
        let mut rng = Rng::new(3);
        for vocab in [49152, 1000, 7] {
            let s = GpuSampler::new(&ctx, vocab, rows).unwrap();
            let mut logits = random_logits(&mut rng, rows, vocab);
            // A repeated maximum: the first one wins, as in `argmax`.
            let row0 = &mut logits[..vocab];
            let m = argmax(row0) as usize;
            row0[vocab - 1] = row0[m];
            row0[0] = row0[m];
            let draws: Vec<f32> = (0..rows).map(|_| rng.next_f32()).collect();
            let p = SamplingParams { temperature: 0.7, top_k: 1, top_p: 0.5, seed: 0 };
            let got = run_gpu(&ctx, &s, &logits, &p, &draws);
            for (r, row) in logits.chunks(vocab).enumerate() {
                assert_eq!(got[r], argmax(row), "vocab {vocab} row {r}");
            }
            assert_eq!(got[0], 0);
        }
    }
}
