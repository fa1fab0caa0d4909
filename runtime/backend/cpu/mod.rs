//! The CPU backend: runs lowered steps in f32 with rayon. It is the reference every other
//! backend is compared with, so it favours plain, checkable arithmetic over tricks; it runs
//! the variant each launch names (its GEMV, flat GEMM and GEMM are different loops), so
//! its records say what it ran.

pub mod kernels;

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::tap::{self, Tap, Tapped};
use super::{BackendCaps, Capacity, Device, Executor, Pick, StepInput, StepOutput, StepTiming, Tokens};
use crate::error::{Error, Result};
use crate::lower::kernel::{Epilogue, Params, Variant};
use crate::lower::{Launch, LoweredStep, Lowering, Template};
use crate::model::WeightSource;
use crate::sampling::argmax;
use crate::tensor::DType;

pub struct CpuDevice {
    caps: BackendCaps,
}

impl CpuDevice {
    pub fn new() -> Self {
        CpuDevice { caps: BackendCaps { device: describe(), ..BackendCaps::cpu() } }
    }
}

impl Default for CpuDevice {
    fn default() -> Self {
        Self::new()
    }
}

fn describe() -> String {
    format!("cpu ({} threads, {})", rayon::current_num_threads(), kernels::simd_name())
}

fn unsupported(what: String) -> Error {
    Error::Backend { backend: "cpu".into(), op: "running a launch".into(), reason: format!("no CPU kernel for {what}") }
}

impl Device for CpuDevice {
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
        let g = &lowering.graph;
        let mut params = Vec::with_capacity(g.params.len());
        for p in 0..g.params.len() {
            params.push(g.load_param(p, weights, DType::F32)?.into_f32());
            progress(p + 1, g.params.len());
        }
        let c = &g.config;
        Ok(Box::new(CpuExecutor {
            buffers: vec![Vec::new(); lowering.memory.widths.len()],
            kv: (0..capacity.max_seqs).map(|_| (0..c.num_layers).map(|_| LayerKv::default()).collect()).collect(),
            rope: crate::lower::rope::table(c, capacity.max_context),
            params,
            lowering,
            picked: Vec::new(),
            slots: [None, None],
        }))
    }
}

/// K and V of one layer of one sequence, `[positions, kv_dim]` each.
#[derive(Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

pub struct CpuExecutor {
    lowering: Arc<Lowering>,
    params: Vec<Vec<f32>>,
    buffers: Vec<Vec<f32>>,
    /// `kv[seq][layer]`.
    kv: Vec<Vec<LayerKv>>,
    /// (cos, sin) per position and rotary pair.
    rope: Vec<f32>,
    /// The ids the last step picked (fed to a step with `Tokens::Picked`).
    picked: Vec<u32>,
    slots: [Option<StepOutput>; 2],
}

/// The step's data as one launch needs it.
struct StepData<'a> {
    tokens: &'a [u32],
    input: &'a StepInput<'a>,
}

impl CpuExecutor {
    fn run(&mut self, launch: &Launch, t: &Template, s: &StepData) -> Result<()> {
        let rows = launch.rows;
        let m = s.tokens.len();
        let mut y = std::mem::take(&mut self.buffers[t.io.y]);
        let Self { params, buffers, kv, rope, .. } = self;
        let buf = |b: Option<usize>| b.map(|b| &buffers[b][..]).unwrap_or(&[]);
        let (x, x2) = (buf(t.io.x), buf(t.io.x2));
        let weight = |p: Option<crate::lower::WeightChunk>| p.map(|w| &params[w.param][..]).unwrap_or(&[]);
        let w = weight(t.io.weight);
        match (t.params, launch.variant) {
            (Params::Embedding { hidden, first_row, rows: table_rows }, Variant::Gather) => {
                for (row, &tok) in y.chunks_exact_mut(hidden).zip(s.tokens) {
                    let r = tok as usize;
                    if (first_row..first_row + table_rows).contains(&r) {
                        row.copy_from_slice(&w[(r - first_row) * hidden..(r - first_row + 1) * hidden]);
                    }
                }
            }
            (Params::RmsNorm { width, eps }, Variant::RmsNorm) => kernels::rms_norm(&x[..rows * width], w, eps, &mut y[..rows * width]),
            (Params::Linear { n, k, n_offset, ldy, bias, prologue: None, epilogue }, v) => {
                // One chunk writes columns n_offset..n_offset + n of rows of `ldy`.
                if n_offset != 0 || ldy != n {
                    return Err(unsupported(format!("a weight in chunks ({n} of {ldy} columns)")));
                }
                let (x, ys) = (&x[..rows * k], &mut y[..rows * n]);
                match v {
                    Variant::Gemv { split_k: false, .. } => {
                        x.chunks_exact(k).zip(ys.chunks_exact_mut(n)).for_each(|(x, y)| kernels::gemv(x, w, y))
                    }
                    Variant::FlatGemm { tiling } => kernels::flat_gemm(x, rows, w, ys, tiling.tile),
                    Variant::Gemm { tile } => kernels::gemm(x, rows, w, ys, tile),
                    other => return Err(unsupported(format!("linear variant {other}"))),
                }
                if bias {
                    let b = &params[t.io.bias.expect("a biased layer names its bias")][..n];
                    ys.chunks_exact_mut(n).for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
                }
                match epilogue {
                    Epilogue::None => {}
                    Epilogue::Residual => ys.iter_mut().zip(&x2[..rows * n]).for_each(|(o, r)| *o += r),
                    other => return Err(unsupported(format!("the {other:?} epilogue"))),
                }
            }
            (Params::Rope { dims, kv_write }, Variant::Rope) => {
                let width = dims.qkv_width();
                let ys = &mut y[..m * width];
                ys.copy_from_slice(&x[..m * width]);
                let half = dims.head_dim / 2;
                for (row, &pos) in ys.chunks_exact_mut(width).zip(s.input.positions) {
                    let angles = &rope[pos * half * 2..(pos + 1) * half * 2];
                    kernels::rope_row(row, dims.heads, dims.head_dim, angles);
                    kernels::rope_row(&mut row[dims.q_dim()..], dims.kv_heads, dims.head_dim, angles);
                }
                if kv_write {
                    let layer = t.io.kv.expect("a KV-writing rope names its layer");
                    write_kv(kv, layer, dims.q_dim(), dims.kv_dim(), ys, s.input);
                }
            }
            (Params::Attention { dims, layer, scale, kv_write, .. }, Variant::TwoPassAttention) => {
                let width = dims.qkv_width();
                let (hd, q_dim, kv_dim) = (dims.head_dim, dims.q_dim(), dims.kv_dim());
                if kv_write {
                    // Every token's K and V first: a token may attend to earlier tokens of
                    // the same step (prefill).
                    write_kv(kv, layer, q_dim, kv_dim, &x[..m * width], s.input);
                }
                let group = dims.heads / dims.kv_heads;
                let kv = &*kv;
                let input = s.input;
                y[..m * q_dim].par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores, (idx, out)| {
                    let (i, h) = (idx / dims.heads, idx % dims.heads);
                    let cache = &kv[input.seqs[i]][layer];
                    let q = &x[i * width + h * hd..i * width + (h + 1) * hd];
                    let head = kernels::KvHead { keys: &cache.k, values: &cache.v, kv_dim, offset: (h / group) * hd };
                    kernels::attend(q, head, input.positions[i] + 1, scale, out, scores);
                });
            }
            (Params::SwiGlu { ffn }, Variant::SwiGlu) => kernels::silu_mul(&x[..rows * 2 * ffn], ffn, &mut y[..rows * ffn]),
            (Params::Add { width }, Variant::Add) => {
                y[..rows * width].iter_mut().zip(&x[..rows * width]).zip(&x2[..rows * width]).for_each(|((o, a), b)| *o = a + b)
            }
            (Params::SelectRows { width }, Variant::SelectRows) => {
                for (row, &r) in y.chunks_exact_mut(width).zip(s.input.out_rows) {
                    row.copy_from_slice(&x[r * width..(r + 1) * width]);
                }
            }
            (p, v) => return Err(unsupported(format!("{v} on {p:?}"))),
        }
        self.buffers[t.io.y] = y;
        Ok(())
    }

    /// Runs every launch of `step`, reading back (and perturbing) the tapped ones after they run.
    fn execute(
        &mut self,
        step: &LoweredStep,
        input: &StepInput,
        tokens: Tokens,
        pick: &Pick,
        taps: &[Tap],
    ) -> Result<(StepOutput, Tapped)> {
        let started = Instant::now();
        let (m, out) = (step.shape.m, step.shape.out);
        let l = Arc::clone(&self.lowering);
        let g = &l.graph;
        for (buf, need) in self.buffers.iter_mut().zip(l.memory.buffer_elements(&g.tensors, m, out)) {
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
        }
        let picked = std::mem::take(&mut self.picked);
        let tokens = match tokens {
            Tokens::Host => input.tokens,
            Tokens::Picked if picked.len() == m => &picked,
            Tokens::Picked => return Err(Error::InvalidArgument(format!("{m} tokens asked for, the last step picked {}", picked.len()))),
        };
        let data = StepData { tokens, input };
        let mut micros = Vec::with_capacity(step.launches.len());
        let mut tapped = Vec::with_capacity(taps.len());
        let mut taps = taps.iter().peekable();
        for (i, launch) in step.launches.iter().enumerate() {
            let t0 = Instant::now();
            let template = &l.templates[launch.template];
            self.run(launch, template, &data)?;
            micros.push(t0.elapsed().as_secs_f64() * 1e6);
            if let Some(t) = taps.next_if(|t| t.launch == i) {
                let y = &mut self.buffers[template.io.y];
                let len = y.len();
                let values = y.get_mut(..t.elements).ok_or_else(|| {
                    Error::InvalidArgument(format!("a tap of {} values but launch {i} writes a buffer of {len}", t.elements))
                })?;
                if let Some(scale) = t.perturb {
                    tap::perturb(values, scale);
                }
                tapped.push(values.to_vec());
            }
        }
        let vocab = g.config.vocab_size;
        let lb = l.memory.buffer_of[g.logits].expect("the logits are stored");
        let logits = &self.buffers[lb][..out * vocab];
        let (ids, logits) = match pick {
            Pick::Logits => (vec![], logits.to_vec()),
            Pick::Argmax => (logits.chunks_exact(vocab).map(argmax).collect(), vec![]),
            Pick::Sample { .. } => return Err(unsupported("sampling (the driver samples the logits on the host)".into())),
        };
        self.picked = ids.clone();
        let host = started.elapsed().as_secs_f64() * 1e6;
        let timing = StepTiming { host_micros: Some(host), device_micros: None };
        Ok((StepOutput { ids, logits, timing, launch_micros: Some(micros), fallback_rows: None }, tapped))
    }
}

/// Appends each token's K and V (from its QKV row of `rows`) to its sequence's cache.
fn write_kv(kv: &mut [Vec<LayerKv>], layer: usize, q_dim: usize, kv_dim: usize, rows: &[f32], input: &StepInput) {
    let width = q_dim + 2 * kv_dim;
    for (i, row) in rows.chunks_exact(width).enumerate() {
        let (seq, pos) = (input.seqs[i], input.positions[i]);
        let cache = &mut kv[seq][layer];
        let need = (pos + 1) * kv_dim;
        if cache.k.len() < need {
            cache.k.resize(need, 0.0);
            cache.v.resize(need, 0.0);
        }
        cache.k[pos * kv_dim..need].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
        cache.v[pos * kv_dim..need].copy_from_slice(&row[q_dim + kv_dim..]);
    }
}

impl Executor for CpuExecutor {
    fn describe(&self) -> String {
        describe()
    }

    fn submit(&mut self, step: &LoweredStep, input: &StepInput, tokens: Tokens, pick: &Pick, slot: usize) -> Result<()> {
        let (out, _) = self.execute(step, input, tokens, pick, &[])?;
        self.slots[slot] = Some(out);
        Ok(())
    }

    fn collect(&mut self, slot: usize) -> Result<StepOutput> {
        self.slots[slot].take().ok_or_else(|| Error::InvalidArgument(format!("no step was submitted in slot {slot}")))
    }

    fn set_profiling(&mut self, _on: bool) -> Result<()> {
        // Every launch is timed anyway.
        Ok(())
    }

    fn reset_sequence(&mut self, seq: usize) {
        if let Some(layers) = self.kv.get_mut(seq) {
            layers.iter_mut().for_each(|l| *l = LayerKv::default());
        }
    }

    fn run_tapped(&mut self, step: &LoweredStep, input: &StepInput, taps: &[Tap]) -> Result<(StepOutput, Tapped)> {
        tap::validate(step, taps)?;
        self.execute(step, input, Tokens::Host, &Pick::Logits, taps)
    }
}
