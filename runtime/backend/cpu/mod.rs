//! The CPU backend: runs the graph in f32 with rayon. It is the reference every other
//! backend is compared with, so it favours plain, checkable arithmetic over tricks.

pub mod kernels;

use std::time::Instant;

use rayon::prelude::*;

use super::{Executor, ExecutorOptions, NodeRecord, StepInput, validate_step};
use crate::dataflow::{DataflowTable, LinearImpl};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Op, Plan, TensorKind};
use crate::tensor::HostTensor;

/// K and V of one layer of one sequence, `[positions, kv_dim]` each.
#[derive(Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

pub struct CpuExecutor {
    graph: Graph,
    plan: Plan,
    params: Vec<Vec<f32>>,
    buffers: Vec<Vec<f32>>,
    /// `kv[seq][layer]`.
    kv: Vec<Vec<LayerKv>>,
    inv_freq: Vec<f32>,
    table: DataflowTable,
    opts: ExecutorOptions,
    records: Vec<NodeRecord>,
    /// Rows each node's record was made for (choices are remade only when M changes).
    record_rows: Vec<usize>,
}

impl CpuExecutor {
    pub fn new(graph: &Graph, plan: &Plan, params: Vec<HostTensor>, opts: ExecutorOptions) -> Result<Self> {
        if params.len() != graph.params.len() {
            return Err(Error::InvalidArgument(format!(
                "cpu backend: {} parameters given, the graph has {}",
                params.len(),
                graph.params.len()
            )));
        }
        let c = &graph.config;
        let kv = (0..opts.max_seqs).map(|_| (0..c.num_layers).map(|_| LayerKv::default()).collect()).collect();
        Ok(CpuExecutor {
            graph: graph.clone(),
            plan: plan.clone(),
            params: params.into_iter().map(HostTensor::into_f32).collect(),
            buffers: vec![Vec::new(); plan.memory.widths.len()],
            kv,
            inv_freq: kernels::rope_inv_freq(c.rope_theta, c.head_dim),
            table: DataflowTable::cpu_default(),
            opts,
            records: Vec::new(),
            record_rows: Vec::new(),
        })
    }
}

impl Executor for CpuExecutor {
    fn describe(&self) -> String {
        format!("cpu ({} threads, {})", rayon::current_num_threads(), kernels::simd_name())
    }

    fn reset_sequence(&mut self, seq: usize) {
        if let Some(layers) = self.kv.get_mut(seq) {
            layers.iter_mut().for_each(|l| *l = LayerKv::default());
        }
    }

    fn last_step_records(&self) -> &[NodeRecord] {
        &self.records
    }

    fn vocab_size(&self) -> usize {
        self.graph.config.vocab_size
    }

    fn step(&mut self, input: &StepInput) -> Result<Vec<f32>> {
        let c = self.graph.config.clone();
        validate_step(input, &self.opts, c.vocab_size)?;
        let (m, out_n) = (input.m(), input.out_rows.len());
        for (buf, need) in self.buffers.iter_mut().zip(self.plan.memory.buffer_elements(&self.graph.tensors, m, out_n)) {
            if buf.len() < need {
                buf.resize(need, 0.0);
            }
        }
        if self.records.len() != self.graph.nodes.len() {
            self.records = self
                .plan
                .order
                .iter()
                .map(|&i| NodeRecord {
                    node: self.graph.nodes[i].name.clone(),
                    op: self.graph.nodes[i].op.kind_name().into(),
                    implementation: String::new(),
                    reason: String::new(),
                    micros: None,
                })
                .collect();
            self.record_rows = vec![usize::MAX; self.records.len()];
        }
        let Self { graph, plan, params, buffers, kv, inv_freq, table, records, record_rows, .. } = self;
        for (step_index, &ni) in plan.order.iter().enumerate() {
            let start = Instant::now();
            let node = &graph.nodes[ni];
            let out_t = node.output;
            let out_rows = graph.tensors[out_t].shape[0].eval(m, 0, out_n);
            let out_w = crate::graph::plan::row_width(&graph.tensors[out_t].shape);
            let ob = plan.memory.buffer_of[out_t].expect("every node output has a buffer");
            let mut y = std::mem::take(&mut buffers[ob]);
            let ys = &mut y[..out_rows * out_w];
            let arg = |j: usize| -> &[f32] {
                let t = node.inputs[j];
                let b = plan.memory.buffer_of[t].expect("activation input");
                let w = crate::graph::plan::row_width(&graph.tensors[t].shape);
                &buffers[b][..graph.tensors[t].shape[0].eval(m, 0, out_n) * w]
            };
            let implementation;
            let mut reason = String::new();
            match &node.op {
                Op::Embedding { table } => {
                    let t = &params[*table];
                    for (row, &tok) in ys.chunks_exact_mut(out_w).zip(input.tokens) {
                        row.copy_from_slice(&t[tok as usize * out_w..(tok as usize + 1) * out_w]);
                    }
                    implementation = "gather";
                }
                Op::RmsNorm { weight, eps } => {
                    kernels::rms_norm(arg(0), &params[*weight], *eps, ys);
                    implementation = "rows";
                }
                Op::Linear { weight, n, k, .. } => {
                    let x = arg(0);
                    let w = &params[*weight];
                    let rows = out_rows;
                    let choice = table.choose(*n, *k, rows);
                    match choice.implementation {
                        LinearImpl::Gemv if rows == 1 => kernels::gemv(x, w, ys, *k),
                        LinearImpl::Gemv | LinearImpl::FlatGemm => kernels::flat_gemm(x, rows, w, ys, *k),
                        LinearImpl::Gemm => kernels::gemm(x, rows, w, ys, *k),
                    }
                    implementation = choice.implementation.label();
                    if record_rows[step_index] != rows {
                        reason = choice.reason;
                    }
                }
                Op::Rope { head_dim, num_heads, num_kv_heads, .. } => {
                    ys.copy_from_slice(arg(0));
                    let q_dim = num_heads * head_dim;
                    for (row, &pos) in ys.chunks_exact_mut(out_w).zip(input.positions) {
                        kernels::rope_row(row, *num_heads, *head_dim, inv_freq, pos);
                        kernels::rope_row(&mut row[q_dim..], *num_kv_heads, *head_dim, inv_freq, pos);
                    }
                    implementation = "rows";
                }
                Op::Attention { layer, num_heads, num_kv_heads, head_dim, scale } => {
                    let qkv = arg(0);
                    let (hd, q_dim, kv_dim) = (*head_dim, num_heads * head_dim, num_kv_heads * head_dim);
                    let qkv_w = q_dim + 2 * kv_dim;
                    // Append every token's K and V first: a token may attend to earlier
                    // tokens of the same step (prefill).
                    for i in 0..m {
                        let (seq, pos) = (input.seqs[i], input.positions[i]);
                        let cache = &mut kv[seq][*layer];
                        let need = (pos + 1) * kv_dim;
                        if cache.k.len() < need {
                            cache.k.resize(need, 0.0);
                            cache.v.resize(need, 0.0);
                        }
                        let row = &qkv[i * qkv_w..(i + 1) * qkv_w];
                        cache.k[pos * kv_dim..need].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                        cache.v[pos * kv_dim..need].copy_from_slice(&row[q_dim + kv_dim..]);
                    }
                    let group = num_heads / num_kv_heads;
                    let kv = &*kv;
                    ys.par_chunks_mut(hd).enumerate().for_each_init(Vec::new, |scores, (idx, out)| {
                        let (i, h) = (idx / num_heads, idx % num_heads);
                        let cache = &kv[input.seqs[i]][*layer];
                        let q = &qkv[i * qkv_w + h * hd..i * qkv_w + (h + 1) * hd];
                        let len = input.positions[i] + 1;
                        kernels::attend(q, &cache.k, &cache.v, kv_dim, (h / group) * hd, len, *scale, out, scores);
                    });
                    implementation = "two-pass softmax";
                }
                Op::SwiGlu { ffn } => {
                    kernels::silu_mul(arg(0), *ffn, ys);
                    implementation = "rows";
                }
                Op::Add => {
                    let (a, b) = (arg(0), arg(1));
                    for ((o, x), y) in ys.iter_mut().zip(a).zip(b) {
                        *o = x + y;
                    }
                    implementation = "rows";
                }
                Op::SelectRows => {
                    let x = arg(0);
                    for (row, &r) in ys.chunks_exact_mut(out_w).zip(input.out_rows) {
                        row.copy_from_slice(&x[r * out_w..(r + 1) * out_w]);
                    }
                    implementation = "gather";
                }
            }
            buffers[ob] = y;
            let rec = &mut records[step_index];
            rec.micros = Some(start.elapsed().as_secs_f64() * 1e6);
            if record_rows[step_index] != out_rows {
                rec.implementation = implementation.to_string();
                rec.reason = reason;
                record_rows[step_index] = out_rows;
            }
        }
        debug_assert_eq!(self.graph.tensors[self.graph.logits].kind, TensorKind::Output);
        debug_assert_eq!(self.graph.tensors[self.graph.logits].shape[0], Dim::Out);
        let lb = self.plan.memory.buffer_of[self.graph.logits].expect("logits buffer");
        Ok(self.buffers[lb][..out_n * c.vocab_size].to_vec())
    }
}
