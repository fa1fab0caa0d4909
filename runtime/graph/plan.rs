//! Planning a graph once: a topological order of the nodes and a memory plan in which
//! activations whose lifetimes do not overlap share a buffer.

use serde::{Deserialize, Serialize};

use super::{Dim, Graph, NodeId, TensorDesc, TensorKind};
use crate::error::{Error, Result};

/// Activation buffers: every activation is `[rows, width]` with rows `m` or `out` (<= m),
/// so a buffer is sized `max_m * width` at allocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Buffer index of each tensor (`None` for the token input).
    pub buffer_of: Vec<Option<usize>>,
    /// Row width (elements) of each buffer.
    pub widths: Vec<usize>,
}

impl MemoryPlan {
    /// f32 elements each buffer needs for a step of `m` tokens with `out` output rows: its
    /// largest tenant (out-row tensors such as the logits need `out` rows, not `m`).
    pub fn buffer_elements(&self, tensors: &[TensorDesc], m: usize, out: usize) -> Vec<usize> {
        let mut sizes = vec![0; self.widths.len()];
        for (t, desc) in tensors.iter().enumerate() {
            if let Some(b) = self.buffer_of[t] {
                sizes[b] = sizes[b].max(desc.shape[0].eval(m, 0, out) * row_width(&desc.shape));
            }
        }
        sizes
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub order: Vec<NodeId>,
    pub memory: MemoryPlan,
}

/// Row width of a `[rows, width]` activation.
pub fn row_width(shape: &[Dim]) -> usize {
    shape[1..].iter().map(|d| d.eval(1, 1, 1)).product()
}

impl Plan {
    pub fn new(g: &Graph) -> Result<Plan> {
        let order = topological_order(g)?;
        let memory = plan_memory(g, &order);
        Ok(Plan { order, memory })
    }
}

fn topological_order(g: &Graph) -> Result<Vec<NodeId>> {
    let mut producer = vec![None; g.tensors.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        producer[n.output] = Some(i);
    }
    let mut indegree = vec![0usize; g.nodes.len()];
    let mut users: Vec<Vec<NodeId>> = vec![vec![]; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &t in &n.inputs {
            match producer[t] {
                Some(p) => {
                    indegree[i] += 1;
                    users[p].push(i);
                }
                None if g.tensors[t].kind == TensorKind::TokenInput => {}
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "graph: node `{}` reads tensor `{}` that no node produces",
                        n.name, g.tensors[t].name
                    )));
                }
            }
        }
    }
    // Kahn's algorithm, lowest index first so the builder's order is kept when valid.
    let mut ready: std::collections::BTreeSet<NodeId> = (0..g.nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(g.nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != g.nodes.len() {
        return Err(Error::InvalidArgument("graph: the nodes form a cycle".into()));
    }
    Ok(order)
}

fn plan_memory(g: &Graph, order: &[NodeId]) -> MemoryPlan {
    let mut last_use = vec![0usize; g.tensors.len()];
    for (step, &i) in order.iter().enumerate() {
        for &t in &g.nodes[i].inputs {
            last_use[t] = step;
        }
    }
    // The output must survive the whole run.
    last_use[g.logits] = usize::MAX;
    let mut buffer_of = vec![None; g.tensors.len()];
    let mut widths: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // Buffers freed by node s become available to node s + 2, not s + 1: a backend may then
    // fuse a node into the one before it (e.g. a residual add into a linear layer's
    // epilogue) without the fused node writing a buffer it also reads.
    let mut cooling: Vec<usize> = Vec::new();
    let mut live: Vec<(usize, usize)> = Vec::new(); // (tensor, buffer)
    for (step, &i) in order.iter().enumerate() {
        let node = &g.nodes[i];
        let w = row_width(&g.tensors[node.output].shape);
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
        buffer_of[node.output] = Some(buf);
        live.push((node.output, buf));
        free.append(&mut cooling);
        live.retain(|&(t, b)| {
            let dead = last_use[t] <= step && t != node.output;
            if dead {
                cooling.push(b);
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
    use crate::model::ModelConfig;

    fn config() -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 100,
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_context: 128,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn live_tensors_never_share_a_buffer() {
        let g = llama::build(&config());
        let plan = Plan::new(&g).unwrap();
        // Recompute liveness independently and check no two overlapping tensors collide.
        let pos: Vec<usize> = {
            let mut p = vec![0; g.nodes.len()];
            for (s, &i) in plan.order.iter().enumerate() {
                p[i] = s;
            }
            p
        };
        let mut span = vec![(usize::MAX, 0usize); g.tensors.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            span[n.output].0 = pos[i];
            span[n.output].1 = span[n.output].1.max(pos[i]);
            for &t in &n.inputs {
                span[t].1 = span[t].1.max(pos[i]);
            }
        }
        span[g.logits].1 = usize::MAX;
        for a in 0..g.tensors.len() {
            for b in a + 1..g.tensors.len() {
                let (Some(ba), Some(bb)) = (plan.memory.buffer_of[a], plan.memory.buffer_of[b]) else { continue };
                let overlap = span[a].0 <= span[b].1 && span[b].0 <= span[a].1;
                assert!(!(ba == bb && overlap), "{} and {} share buffer {ba}", g.tensors[a].name, g.tensors[b].name);
            }
            if let Some(buf) = plan.memory.buffer_of[a] {
                assert!(plan.memory.widths[buf] >= row_width(&g.tensors[a].shape));
            }
        }
        // Reuse happens: far fewer buffers than activations.
        assert!(plan.memory.widths.len() <= 6, "{} buffers", plan.memory.widths.len());
    }

    #[test]
    fn order_respects_dependencies() {
        let g = llama::build(&config());
        let plan = Plan::new(&g).unwrap();
        let mut done = vec![false; g.tensors.len()];
        done[g.tokens] = true;
        for &i in &plan.order {
            assert!(g.nodes[i].inputs.iter().all(|&t| done[t]), "{}", g.nodes[i].name);
            done[g.nodes[i].output] = true;
        }
    }
}
