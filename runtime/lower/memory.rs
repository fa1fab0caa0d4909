//! The memory plan, computed on the fused graph: activations whose lifetimes do not overlap
//! share a buffer. Nodes joined by a fusion count as one step of the plan, so every tensor
//! such a group reads or writes is live for the whole group: the fused launch (which reads
//! the group's inputs and writes its outputs) and the unfused sequence (which also writes
//! the intermediates) never read and write one buffer at once, whichever runs. A tensor no
//! launch ever writes (a linear layer's output whose residual add is always fused) gets no
//! buffer.

use serde::{Deserialize, Serialize};

use super::fusion::Fusion;
use crate::graph::{Graph, NodeId, TensorDesc, TensorKind};

pub type BufferId = usize;

/// Activation buffers: every activation is `[rows, width]` with rows `m` or `out` (<= m),
/// so a buffer is sized `rows * width` for the step it is allocated for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Buffer of each tensor (`None` for the token input and tensors never stored).
    pub buffer_of: Vec<Option<BufferId>>,
    /// Row width (elements) of each buffer.
    pub widths: Vec<usize>,
}

impl MemoryPlan {
    /// Elements each buffer needs for a step of `m` tokens with `out` output rows: its
    /// largest tenant (out-row tensors such as the logits need `out` rows, not `m`).
    pub fn buffer_elements(&self, tensors: &[TensorDesc], m: usize, out: usize) -> Vec<usize> {
        let mut sizes = vec![0; self.widths.len()];
        for (t, desc) in tensors.iter().enumerate() {
            if let Some(b) = self.buffer_of[t] {
                sizes[b] = sizes[b].max(desc.rows(m, out) * desc.row_width());
            }
        }
        sizes
    }
}

/// Plans the buffers of `g` run in `order` with `fusions` applied.
pub fn plan(g: &Graph, order: &[NodeId], fusions: &[Fusion]) -> MemoryPlan {
    // Group of each node: fused nodes share their absorbing node's group, which sits at the
    // position of the group's first node (fusions join neighbours, so groups are runs).
    let mut group: Vec<usize> = vec![0; g.nodes.len()];
    let mut next_group = 0;
    let joined = |a: NodeId, b: NodeId| {
        fusions
            .iter()
            .any(|f| f.absorbed().is_some() && ((f.host() == a && f.absorbed() == Some(b)) || (f.host() == b && f.absorbed() == Some(a))))
    };
    for (p, &n) in order.iter().enumerate() {
        if p > 0 && joined(order[p - 1], n) {
            group[n] = group[order[p - 1]];
        } else {
            group[n] = next_group;
            next_group += 1;
        }
    }
    let never_stored =
        |t: usize| fusions.iter().any(|f| matches!(f, Fusion::ResidualEpilogue { linear, .. } if g.nodes[*linear].output == t));
    // Live range of each stored tensor, in groups: from its producer's to its last reader's.
    let mut first = vec![usize::MAX; g.tensors.len()];
    let mut last = vec![0usize; g.tensors.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        first[n.output] = group[i];
        last[n.output] = last[n.output].max(group[i]);
        for &t in &n.inputs {
            last[t] = last[t].max(group[i]);
        }
    }
    last[g.logits] = usize::MAX; // read back after the step
    let stored = |t: usize| g.tensors[t].kind != TensorKind::TokenInput && first[t] != usize::MAX && !never_stored(t);

    let mut by_group: Vec<Vec<usize>> = vec![vec![]; next_group];
    for t in (0..g.tensors.len()).filter(|&t| stored(t)) {
        by_group[first[t]].push(t);
    }
    let mut buffer_of = vec![None; g.tensors.len()];
    let mut widths: Vec<usize> = Vec::new();
    let mut free: Vec<BufferId> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    for (gi, born) in by_group.iter().enumerate() {
        // Everything born in this group is placed before anything read here is freed.
        for &t in born {
            let w = g.tensors[t].row_width();
            // Best fit: the narrowest free buffer that is wide enough, else widen the widest.
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, b)| widths[**b] >= w)
                .min_by_key(|(_, b)| widths[**b])
                .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| widths[**b]))
                .map(|(slot, _)| slot);
            let buf = match pick {
                Some(slot) => free.swap_remove(slot),
                None => {
                    widths.push(0);
                    widths.len() - 1
                }
            };
            widths[buf] = widths[buf].max(w);
            buffer_of[t] = Some(buf);
            live.push(t);
        }
        live.retain(|&t| {
            let dead = last[t] <= gi;
            if dead {
                free.push(buffer_of[t].expect("live tensors have buffers"));
            }
            !dead
        });
    }
    MemoryPlan { buffer_of, widths }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::llama;
    use crate::lower::caps::FusionSupport;
    use crate::lower::fusion;

    /// Recomputes liveness independently (per node, with every fused group widened to the
    /// whole group) and checks that no two overlapping tensors share a buffer.
    fn check(support: FusionSupport) {
        let g = llama::build(&crate::graph::tests::config());
        let order = g.topological_order().unwrap();
        let fusions = fusion::find(&g, &order, &support, &|_| true);
        let plan = plan(&g, &order, &fusions);
        let mut pos = vec![0; g.nodes.len()];
        for (p, &n) in order.iter().enumerate() {
            pos[n] = p;
        }
        // A fused pair spans both positions.
        let mut span_of_node: Vec<(usize, usize)> = (0..g.nodes.len()).map(|n| (pos[n], pos[n])).collect();
        loop {
            let mut changed = false;
            for f in &fusions {
                if let Some(a) = f.absorbed() {
                    let b = f.host();
                    let s = (span_of_node[a].0.min(span_of_node[b].0), span_of_node[a].1.max(span_of_node[b].1));
                    for n in [a, b] {
                        if span_of_node[n] != s {
                            span_of_node[n] = s;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut span = vec![(usize::MAX, 0usize); g.tensors.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            span[n.output].0 = span[n.output].0.min(span_of_node[i].0);
            span[n.output].1 = span[n.output].1.max(span_of_node[i].1);
            for &t in &n.inputs {
                span[t].1 = span[t].1.max(span_of_node[i].1);
            }
        }
        span[g.logits].1 = usize::MAX;
        for a in 0..g.tensors.len() {
            for b in a + 1..g.tensors.len() {
                let (Some(ba), Some(bb)) = (plan.buffer_of[a], plan.buffer_of[b]) else { continue };
                let overlap = span[a].0 <= span[b].1 && span[b].0 <= span[a].1;
                assert!(!(ba == bb && overlap), "{} and {} share buffer {ba}", g.tensors[a].name, g.tensors[b].name);
            }
            if let Some(buf) = plan.buffer_of[a] {
                assert!(plan.widths[buf] >= g.tensors[a].row_width());
            }
        }
        // Reuse happens: far fewer buffers than activations.
        assert!(plan.widths.len() <= 8, "{} buffers", plan.widths.len());
        // Outputs of always-fused residual layers are never stored; everything else is.
        for f in &fusions {
            if let Fusion::ResidualEpilogue { linear, .. } = f {
                assert_eq!(plan.buffer_of[g.nodes[*linear].output], None);
            }
        }
        assert!(plan.buffer_of[g.logits].is_some());
    }

    #[test]
    fn live_tensors_never_share_a_buffer_unfused() {
        check(FusionSupport::NONE);
    }

    #[test]
    fn live_tensors_never_share_a_buffer_with_every_fusion() {
        check(crate::lower::caps::BackendCaps::wgpu_builtin().fusions);
    }
}
