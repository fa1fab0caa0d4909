//! Kernel microbenchmarks on the wgpu backend: each linear implementation over a grid of M
//! on given [N, K] shapes, and the device's copy bandwidth (the ceiling), timed with GPU
//! timestamps. Weights rotate over copies larger than the last-level cache.

use serde::Serialize;

use super::*;
use crate::graph::llama;
use crate::model::ModelConfig;

#[derive(Clone, Debug, Serialize)]
pub struct LinearTiming {
    pub n: usize,
    pub k: usize,
    pub m: usize,
    pub implementation: LinearImpl,
    pub micros: f64,
    /// Weight + activation bytes moved per microsecond, in GB/s.
    pub gbytes_per_s: f64,
    pub tflops: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub device: String,
    /// Device-to-device copy, bytes read + written per second, GB/s.
    pub copy_gbytes_per_s: f64,
    pub linear: Vec<LinearTiming>,
}

/// Bytes of weight copies to rotate through, so that no run is served from cache.
const ROTATE_BYTES: usize = 256 << 20;
const REPS: usize = 20;

fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: 64,
        hidden_size: 64,
        intermediate_size: 64,
        num_layers: 1,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 64,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_context: 16,
        tie_word_embeddings: true,
    }
}

impl WgpuExecutor {
    /// Runs `encode` between two timestamps; returns the device time in microseconds.
    fn timed(&self, encode: impl FnOnce(&mut wgpu::CommandEncoder, wgpu::ComputePassTimestampWrites)) -> Result<f64> {
        let d = &self.ctx.device;
        let queries = d.create_query_set(&wgpu::QuerySetDescriptor { label: None, ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolve = d.create_buffer(&wgpu::BufferDescriptor { label: None, size: 16, usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC, mapped_at_creation: false });
        let staging = d.create_buffer(&wgpu::BufferDescriptor { label: None, size: 16, usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, mapped_at_creation: false });
        let mut enc = d.create_command_encoder(&Default::default());
        let writes = wgpu::ComputePassTimestampWrites { query_set: &queries, beginning_of_pass_write_index: Some(0), end_of_pass_write_index: Some(1) };
        encode(&mut enc, writes);
        enc.resolve_query_set(&queries, 0..2, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
        self.ctx.queue.submit([enc.finish()]);
        let bytes = self.read(&staging, 16)?;
        let t: &[u64] = bytemuck::cast_slice(&bytes);
        Ok(t[1].saturating_sub(t[0]) as f64 * self.ctx.queue.get_timestamp_period() as f64 / 1000.0)
    }
}

/// Measures every implementation on every shape and M (GEMV only up to its row limit).
pub fn run(shapes: &[(usize, usize)], ms: &[usize], adapter: Option<&str>, precision: WeightPrecision, progress: &mut dyn FnMut(usize, usize)) -> Result<KernelReport> {
    let c = tiny_config();
    let g = llama::build(&c);
    let plan = Plan::new(&g)?;
    let params = g.params.iter().map(|p| HostTensor::f32(p.shape.clone(), vec![0.0; p.numel()])).collect();
    let mut ex = WgpuExecutor::new(&g, &plan, params, ExecutorOptions::new(1, c.max_context), adapter, precision)?;
    if !ex.ctx.timestamps {
        return Err(Error::BackendUnavailable { backend: "wgpu".into(), reason: format!("{} has no TIMESTAMP_QUERY", ex.ctx.info.name) });
    }
    let max_m = *ms.iter().max().unwrap_or(&1);
    ex.ensure_capacity(max_m)?;
    let d = ex.ctx.device.clone();
    let elem = if ex.ctx.f16_weights { 2 } else { 4 };

    // Copy bandwidth: one large buffer to another, a few times.
    let size = ((ex.ctx.max_binding() as usize).min(1 << 30) / 4 * 4) as u64;
    let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let (a, b) = (
        d.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false }),
        d.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false }),
    );
    let mut copies = vec![];
    for _ in 0..5 {
        let t = ex.timed(|enc, writes| {
            // Timestamps sit on an empty pass before and after the copy.
            let w0 = wgpu::ComputePassTimestampWrites { query_set: writes.query_set, beginning_of_pass_write_index: Some(0), end_of_pass_write_index: None };
            drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(w0) }));
            enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
            let w1 = wgpu::ComputePassTimestampWrites { query_set: writes.query_set, beginning_of_pass_write_index: None, end_of_pass_write_index: Some(1) };
            drop(enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(w1) }));
        })?;
        copies.push(2.0 * size as f64 / t / 1e3);
    }
    copies.sort_by(f64::total_cmp);
    let copy_gbytes_per_s = copies[copies.len() / 2];

    let mut linear = Vec::new();
    let total = shapes.len() * ms.len();
    let mut done = 0;
    for &(n, k) in shapes {
        let copies = (ROTATE_BYTES / (n * k * elem)).clamp(1, 64);
        let mut rng = crate::engine::sampler::Rng::new(n as u64 * 31 + k as u64);
        let w: Vec<f32> = (0..n * k).map(|_| rng.next_f32() - 0.5).collect();
        let wbufs: Vec<wgpu::Buffer> = (0..copies).map(|_| ex.ctx.upload_weights("weights", &w)).collect();
        let x: Vec<f32> = (0..max_m.max(4) * k).map(|_| rng.next_f32() - 0.5).collect();
        let xb = d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::cast_slice(&x), usage: wgpu::BufferUsages::STORAGE });
        let yb = d.create_buffer(&wgpu::BufferDescriptor { label: None, size: (max_m * n * 4) as u64, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        let node = NodeUniform { n: n as u32, k: k as u32, ldy: n as u32, ..Default::default() };
        let ubuf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytemuck::bytes_of(&node), usage: wgpu::BufferUsages::UNIFORM });
        let groups: Vec<wgpu::BindGroup> =
            wbufs.iter().map(|wb| ex.bind_group(&ubuf, 0, Binds { x: Some(&xb), w: Some(wb), y: Some(&yb), ..Default::default() })).collect();
        for &m in ms {
            let step = StepUniform { m: m as u32, n_out: 0, max_m: ex.cap_m as u32, attn_chunks: 0 };
            ex.ctx.queue.write_buffer(&ex.step_uniform, 0, bytemuck::bytes_of(&step));
            let mut impls = vec![(LinearImpl::FlatGemm, "flat_gemm", [n.div_ceil(8), m.div_ceil(8)]), (LinearImpl::Gemm, "gemm", [n.div_ceil(64), m.div_ceil(64)])];
            if m <= GEMV_MAX_M {
                impls.insert(0, (LinearImpl::Gemv, "gemv", [n.div_ceil(8), 1]));
            }
            for (imp, kernel, [gx, gy]) in impls {
                let (gx, gy) = if gx > 65535 { (65535, gy * gx.div_ceil(65535)) } else { (gx, gy) };
                let t = ex.timed(|enc, writes| {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
                    pass.set_pipeline(&ex.pipelines[kernel]);
                    for r in 0..REPS {
                        pass.set_bind_group(0, &groups[r % groups.len()], &[]);
                        pass.dispatch_workgroups(gx as u32, gy as u32, 1);
                    }
                })? / REPS as f64;
                let moved = (n * k * elem + m * k * 4 + m * n * 4) as f64;
                linear.push(LinearTiming {
                    n,
                    k,
                    m,
                    implementation: imp,
                    micros: t,
                    gbytes_per_s: moved / t / 1e3,
                    tflops: 2.0 * (m * n * k) as f64 / t / 1e6,
                });
            }
            done += 1;
            progress(done, total);
        }
    }
    Ok(KernelReport { device: ex.describe(), copy_gbytes_per_s, linear })
}

/// M1 (first M where flat GEMM beats GEMV) and M2 (first M where GEMM beats flat GEMM) per
/// shape, read off a report; `None` where the crossing was not seen in the grid.
pub fn inflections(report: &KernelReport) -> Vec<((usize, usize), Option<usize>, Option<usize>)> {
    let mut shapes: Vec<(usize, usize)> = report.linear.iter().map(|t| (t.n, t.k)).collect();
    shapes.dedup();
    shapes
        .into_iter()
        .map(|s| {
            let at = |m: usize, imp: LinearImpl| {
                report.linear.iter().find(|t| (t.n, t.k) == s && t.m == m && t.implementation == imp).map(|t| t.micros)
            };
            let mut ms: Vec<usize> = report.linear.iter().filter(|t| (t.n, t.k) == s).map(|t| t.m).collect();
            ms.dedup();
            let m1 = ms.iter().copied().find(|&m| match (at(m, LinearImpl::FlatGemm), at(m, LinearImpl::Gemv)) {
                (Some(f), Some(g)) => f < g,
                (Some(_), None) => true,
                _ => false,
            });
            let m2 = ms.iter().copied().find(|&m| matches!((at(m, LinearImpl::Gemm), at(m, LinearImpl::FlatGemm)), (Some(c), Some(b)) if c < b));
            (s, m1, m2)
        })
        .collect()
}
