//! Where two backends' runs of a step can be compared. A node whose work is fused into
//! another node's launch has no output of its own (its value exists only inside that
//! launch), and backends fuse differently (wgpu and CUDA fold the RMSNorm, SwiGLU and RoPE
//! into the GEMV at decode; the CPU does not). So each backend's step is tapped after the
//! last launch of every node that runs one, which completes one tensor: the node's own
//! output, or that of the last node fused into its epilogue. A **comparison point** is a
//! tensor both backends complete; it covers the nodes since the previous point, and is
//! named after the first of them that runs its own launch on both backends (the launch
//! whose output is compared, e.g. `layers.3.ffn.down` for its output plus the residual add
//! fused into it).

use std::ops::Range;

use crate::backend::Tap;
use crate::graph::{NodeId, TensorId};
use crate::lower::fusion::Stage;
use crate::lower::kernel::Variant;
use crate::lower::{LoweredStep, Lowering, NodeStep};

/// Per node (in execution order), the tensor its launches complete in `step`, if it runs any.
pub fn completed(l: &Lowering, step: &LoweredStep) -> Vec<Option<TensorId>> {
    let g = &l.graph;
    let mut at = vec![0; g.nodes.len()];
    for (p, &n) in l.order.iter().enumerate() {
        at[n] = p;
    }
    let mut out: Vec<Option<TensorId>> =
        l.order.iter().zip(&step.nodes).map(|(&n, s)| matches!(s, NodeStep::Runs { .. }).then_some(g.nodes[n].output)).collect();
    // Epilogues follow their host in the order: the last one's tensor is what is stored.
    for (&n, s) in l.order.iter().zip(&step.nodes) {
        if let NodeStep::Fused { into, fusion } = s
            && l.fusions[*fusion].stage() == Stage::Epilogue
        {
            out[at[*into]] = Some(g.nodes[n].output);
        }
    }
    out
}

/// The taps of `step`: the last launch of every node that runs one, reading the tensor it
/// completes; `perturb(node, variant)` gives the scale where that node's output is to be
/// perturbed.
pub fn taps(l: &Lowering, step: &LoweredStep, perturb: &dyn Fn(NodeId, Variant) -> Option<f32>) -> Vec<Tap> {
    let (m, out) = (step.shape.m, step.shape.out);
    let done = completed(l, step);
    let mut taps = Vec::new();
    for ((&n, s), t) in l.order.iter().zip(&step.nodes).zip(done) {
        if let (NodeStep::Runs { launches, .. }, Some(t)) = (s, t) {
            let last = launches.end - 1;
            let tensor = &l.graph.tensors[t];
            let perturb = perturb(n, step.launches[last].variant);
            taps.push(Tap { launch: last, elements: tensor.rows(m, out) * tensor.row_width(), perturb });
        }
    }
    taps
}

/// What one backend's step produced: per tensor, the values of the launch that completed it.
pub struct Captured {
    pub tensors: Vec<Option<Vec<f32>>>,
}

impl Captured {
    /// Files the values of `taps(l, step, ..)` under the tensors they complete.
    pub fn new(l: &Lowering, step: &LoweredStep, tapped: Vec<Vec<f32>>) -> Captured {
        let mut tensors = vec![None; l.graph.tensors.len()];
        for (t, values) in completed(l, step).into_iter().flatten().zip(tapped) {
            tensors[t] = Some(values);
        }
        Captured { tensors }
    }

    /// The values of a tensor a point compares.
    pub fn values(&self, t: TensorId) -> &[f32] {
        self.tensors[t].as_deref().expect("a point's tensor was completed on both backends")
    }
}

/// One comparison point of a step.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The nodes it covers (positions in the execution order).
    pub nodes: Range<usize>,
    /// The position of the node it is named after.
    pub named: usize,
    /// The tensor compared (the output of the last node it covers).
    pub tensor: TensorId,
}

/// The comparison points of one step run on two backends (`a` and `b`: the lowered steps).
pub fn points(l: &Lowering, a: &LoweredStep, b: &LoweredStep, a_done: &[Option<TensorId>], b_done: &[Option<TensorId>]) -> Vec<Point> {
    let g = &l.graph;
    let completed_by = |done: &[Option<TensorId>], t: TensorId| done.contains(&Some(t));
    let runs = |s: &LoweredStep, p: usize| matches!(s.nodes[p], NodeStep::Runs { .. });
    let mut points = Vec::new();
    let mut start = 0;
    for (p, &n) in l.order.iter().enumerate() {
        let t = g.nodes[n].output;
        if completed_by(a_done, t) && completed_by(b_done, t) {
            let named = (start..=p).find(|&q| runs(a, q) && runs(b, q)).unwrap_or(p);
            points.push(Point { nodes: start..p + 1, named, tensor: t });
            start = p + 1;
        }
    }
    points
}
