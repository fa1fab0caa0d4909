//! Fusion as a pass of its own: which nodes of the graph may run inside a neighbour's
//! launch, found by looking at the graph alone (single consumers, adjacency in the order),
//! the fusions the backend's kernels implement and how the weights are chunked.

use serde::{Deserialize, Serialize};

use super::caps::FusionSupport;
use super::kernel::Variant;
use crate::graph::{Graph, NodeId, Op};

/// Where in the absorbing launch a fused node's work happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    Prologue,
    Epilogue,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Prologue => "prologue",
            Stage::Epilogue => "epilogue",
        })
    }
}

/// On which steps a fusion applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// Every step, whatever variant the absorbing node runs.
    Always,
    /// Steps where the absorbing linear layer runs the GEMV (A); on other steps the
    /// absorbed node runs its own launch.
    GemvSteps,
    /// Steps where it runs the GEMV (A) or the flat GEMM (B), whose kernels have the same
    /// prologue and epilogues; on GEMM (C) steps the absorbed node runs its own launch.
    GemvAndFlatGemmSteps,
}

impl When {
    /// Whether the fusion applies on a step where its host runs `variant`.
    pub fn applies(self, variant: &Variant) -> bool {
        match self {
            When::Always => true,
            When::GemvSteps => matches!(variant, Variant::Gemv { .. }),
            When::GemvAndFlatGemmSteps => matches!(variant, Variant::Gemv { .. } | Variant::FlatGemm { .. }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fusion")]
pub enum Fusion {
    /// The residual add after a linear layer, in the layer's epilogue (every variant): the
    /// layer's own output is never stored.
    ResidualEpilogue { linear: NodeId, add: NodeId },
    /// The attention's KV-cache write, done by the RoPE before it.
    KvWriteInRope { rope: NodeId, attention: NodeId },
    /// The RMSNorm before a linear layer, in the GEMV's prologue.
    NormPrologue { norm: NodeId, linear: NodeId },
    /// The SwiGLU after gate/up, in the GEMV's epilogue.
    SwiGluEpilogue { linear: NodeId, swiglu: NodeId },
    /// The RoPE (which writes the KV cache) after QKV, in the GEMV's epilogue.
    RopeEpilogue { linear: NodeId, rope: NodeId },
}

impl Fusion {
    /// The node whose launch does the work.
    pub fn host(&self) -> NodeId {
        match *self {
            Fusion::ResidualEpilogue { linear, .. }
            | Fusion::NormPrologue { linear, .. }
            | Fusion::SwiGluEpilogue { linear, .. }
            | Fusion::RopeEpilogue { linear, .. } => linear,
            Fusion::KvWriteInRope { rope, .. } => rope,
        }
    }

    /// The node that runs no launch of its own when the fusion applies (`None`: only part of
    /// a node's work moves, as the attention's KV write).
    pub fn absorbed(&self) -> Option<NodeId> {
        match *self {
            Fusion::ResidualEpilogue { add, .. } => Some(add),
            Fusion::NormPrologue { norm, .. } => Some(norm),
            Fusion::SwiGluEpilogue { swiglu, .. } => Some(swiglu),
            Fusion::RopeEpilogue { rope, .. } => Some(rope),
            Fusion::KvWriteInRope { .. } => None,
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            Fusion::NormPrologue { .. } => Stage::Prologue,
            _ => Stage::Epilogue,
        }
    }

    /// On which steps it applies, with the backend's kernels.
    pub fn when(&self, support: &FusionSupport) -> When {
        match self {
            Fusion::ResidualEpilogue { .. } | Fusion::KvWriteInRope { .. } => When::Always,
            _ if support.flat_gemm_fusions => When::GemvAndFlatGemmSteps,
            _ => When::GemvSteps,
        }
    }
}

/// The fusions of `g` (nodes in `order`) that `support` allows. `single_chunk(node)` says
/// whether a linear node's weight fits one binding, which the GEMV fusions need.
pub fn find(g: &Graph, order: &[NodeId], support: &FusionSupport, single_chunk: &dyn Fn(NodeId) -> bool) -> Vec<Fusion> {
    let consumers = g.consumers();
    let mut pos = vec![0; g.nodes.len()];
    for (p, &n) in order.iter().enumerate() {
        pos[n] = p;
    }
    // Only the very next node is fused: then no other launch runs between the two, and the
    // memory plan keeps every buffer of both apart for the pair.
    let next = |a: NodeId, b: NodeId| pos[b] == pos[a] + 1;
    let only_consumer = |n: NodeId| match consumers[g.nodes[n].output][..] {
        [u] if next(n, u) => Some(u),
        _ => None,
    };
    let mut out = Vec::new();
    for &i in order {
        match g.nodes[i].op {
            Op::Linear { .. } if support.residual_epilogue => {
                if let Some(u) = only_consumer(i).filter(|&u| matches!(g.nodes[u].op, Op::Add)) {
                    out.push(Fusion::ResidualEpilogue { linear: i, add: u });
                }
            }
            Op::Rope { .. } if support.kv_write_in_rope => {
                if let Some(u) = only_consumer(i).filter(|&u| matches!(g.nodes[u].op, Op::Attention { .. })) {
                    out.push(Fusion::KvWriteInRope { rope: i, attention: u });
                }
            }
            _ => {}
        }
    }
    let residual = |i: NodeId| out.iter().any(|f| matches!(f, Fusion::ResidualEpilogue { linear, .. } if *linear == i));
    let writes_kv = |r: NodeId| out.iter().any(|f| matches!(f, Fusion::KvWriteInRope { rope, .. } if *rope == r));
    let mut gemv = Vec::new();
    for &i in order {
        let node = &g.nodes[i];
        // One weight binding, and the second input free (the residual would take it).
        let Op::Linear { n, .. } = node.op else { continue };
        if residual(i) || !single_chunk(i) {
            continue;
        }
        let input = node.inputs[0];
        if support.gemv_norm_prologue
            && let Some(p) = g.nodes.iter().position(|p| p.output == input)
            && matches!(g.nodes[p].op, Op::RmsNorm { .. })
            && consumers[input].len() == 1
            && next(p, i)
        {
            gemv.push(Fusion::NormPrologue { norm: p, linear: i });
        }
        match only_consumer(i).map(|u| (u, &g.nodes[u].op)) {
            Some((u, Op::SwiGlu { ffn })) if support.gemv_swiglu_epilogue && 2 * ffn == n => {
                gemv.push(Fusion::SwiGluEpilogue { linear: i, swiglu: u });
            }
            Some((u, Op::Rope { head_dim, num_heads, num_kv_heads, .. }))
                if support.gemv_rope_epilogue && writes_kv(u) && (num_heads + 2 * num_kv_heads) * head_dim == n =>
            {
                gemv.push(Fusion::RopeEpilogue { linear: i, rope: u });
            }
            _ => {}
        }
    }
    out.extend(gemv);
    out
}
