//! The static graph IR: tensors with shapes symbolic in `m` (tokens this step), `ctx`
//! (KV length) and `out` (rows whose logits are wanted), parameters, and ops.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    Const(usize),
    /// Tokens in this step: the prompt length at prefill, the batch size at decode.
    M,
    /// KV length of a sequence (varies per sequence within one step).
    Ctx,
    /// Rows whose logits are wanted (one per sequence that samples this step).
    Out,
}

impl Dim {
    pub fn eval(self, m: usize, ctx: usize, out: usize) -> usize {
        match self {
            Dim::Const(c) => c,
            Dim::M => m,
            Dim::Ctx => ctx,
            Dim::Out => out,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Const(c) => write!(f, "{c}"),
            Dim::M => f.write_str("m"),
            Dim::Ctx => f.write_str("ctx"),
            Dim::Out => f.write_str("out"),
        }
    }
}

pub fn shape_string(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

pub type TensorId = usize;
pub type ParamId = usize;
pub type NodeId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TensorKind {
    /// Token ids of this step (u32), fed by the engine.
    TokenInput,
    /// Produced by one node, consumed by later ones; lives in a planned buffer.
    Activation,
    /// Logits returned to the engine.
    Output,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<Dim>,
    pub kind: TensorKind,
}

impl TensorDesc {
    /// Elements per row: activations are `[rows, width...]` with rows `m` or `out`.
    pub fn row_width(&self) -> usize {
        self.shape[1..].iter().map(|d| d.eval(1, 1, 1)).product()
    }

    /// Rows in a step of `m` tokens with `out` output rows.
    pub fn rows(&self, m: usize, out: usize) -> usize {
        self.shape[0].eval(m, 0, out)
    }

    /// The shape in a step of `m` tokens with `out` output rows.
    pub fn eval(&self, m: usize, out: usize) -> Vec<usize> {
        self.shape.iter().map(|d| d.eval(m, 0, out)).collect()
    }
}

/// A weight of the graph: one or more model tensors concatenated along rows
/// (the fused QKV and gate/up projections), row-major `[rows, cols]` or `[len]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamDesc {
    pub name: String,
    pub shape: Vec<usize>,
    /// Model tensors stacked along the first dimension, in this order.
    pub parts: Vec<ParamPart>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamPart {
    pub tensor: String,
    pub rows: usize,
}

impl ParamDesc {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a linear layer is for; the four FlashDecoding++ [N, K] shapes plus the lm_head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinearRole {
    Qkv,
    AttnOut,
    FfnGateUp,
    FfnDown,
    LmHead,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Rows of `table` picked by token id: [m] -> [m, hidden].
    Embedding { table: ParamId },
    /// x / sqrt(mean(x^2) + eps) * weight, per row.
    RmsNorm { weight: ParamId, eps: f32 },
    /// y = x W^T (+ b) with W `[n, k]` and b `[n]`: [rows, k] -> [rows, n].
    Linear { weight: ParamId, bias: Option<ParamId>, n: usize, k: usize, role: LinearRole },
    /// Rotary embedding (split-halves layout, as in Hugging Face Llama) applied to the Q and K
    /// parts of a fused QKV row, at each token's position.
    Rope { theta: f32, head_dim: usize, num_heads: usize, num_kv_heads: usize },
    /// Appends K and V of each token to its sequence's cache for `layer`, then causal
    /// attention of its Q over that sequence's keys 0..=position (GQA): [m, qkv] -> [m, q_dim].
    Attention { layer: usize, num_heads: usize, num_kv_heads: usize, head_dim: usize, scale: f32 },
    /// silu(gate) * up with gate and up side by side in one row: [m, 2f] -> [m, f].
    SwiGlu { ffn: usize },
    /// Elementwise sum of two inputs (residual).
    Add,
    /// The rows of the step's `out_rows` list: [m, hidden] -> [out, hidden].
    SelectRows,
}

impl Op {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Embedding { .. } => "embedding",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Linear { .. } => "linear",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::SwiGlu { .. } => "swiglu",
            Op::Add => "add",
            Op::SelectRows => "select_rows",
        }
    }

    pub fn param(&self) -> Option<ParamId> {
        match self {
            Op::Embedding { table } => Some(*table),
            Op::RmsNorm { weight, .. } | Op::Linear { weight, .. } => Some(*weight),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    /// Where it sits in the model, e.g. `layers.3.attn.qkv`.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
}
