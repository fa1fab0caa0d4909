//! Graph builder for the Llama family: GQA, rotary theta, RMS eps, tied or separate lm_head.
//! Q, K, V are fused into one projection and gate/up into another, so a layer has the
//! four FlashDecoding++ linear shapes: QKV, O, gate-up, down.

use super::Graph;
use super::ir::*;
use crate::model::{ModelConfig, names};

struct Builder {
    tensors: Vec<TensorDesc>,
    params: Vec<ParamDesc>,
    nodes: Vec<Node>,
}

impl Builder {
    fn tensor(&mut self, name: String, shape: Vec<Dim>, kind: TensorKind) -> TensorId {
        self.tensors.push(TensorDesc { name, shape, kind });
        self.tensors.len() - 1
    }
    /// A parameter stacking `parts` (model tensor name, rows) along its first dimension.
    fn param(&mut self, name: &str, cols: Option<usize>, parts: Vec<(String, usize)>) -> ParamId {
        let rows = parts.iter().map(|p| p.1).sum();
        let shape = cols.map_or(vec![rows], |c| vec![rows, c]);
        let parts = parts.into_iter().map(|(tensor, rows)| ParamPart { tensor, rows }).collect();
        self.params.push(ParamDesc { name: name.into(), shape, parts });
        self.params.len() - 1
    }
    fn node(&mut self, name: String, op: Op, inputs: Vec<TensorId>, out_shape: Vec<Dim>) -> TensorId {
        let output = self.tensor(name.clone(), out_shape, TensorKind::Activation);
        self.nodes.push(Node { name, op, inputs, output });
        output
    }
    fn linear(&mut self, name: String, x: TensorId, w: ParamId, role: LinearRole, rows: Dim) -> TensorId {
        let (n, k) = (self.params[w].shape[0], self.params[w].shape[1]);
        self.node(name, Op::Linear { weight: w, n, k, role }, vec![x], vec![rows, Dim::Const(n)])
    }
}

pub fn build(c: &ModelConfig) -> Graph {
    let mut b = Builder { tensors: vec![], params: vec![], nodes: vec![] };
    let h = c.hidden_size;
    let m = Dim::M;
    let tokens = b.tensor("tokens".into(), vec![m], TensorKind::TokenInput);
    let embed = b.param("embed", Some(h), vec![(names::EMBED.into(), c.vocab_size)]);
    let mut x = b.node("embed".into(), Op::Embedding { table: embed }, vec![tokens], vec![m, Dim::Const(h)]);
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    for l in 0..c.num_layers {
        let p = |leaf: &str| names::layer(l, leaf);
        let f = c.intermediate_size;
        let attn_norm = b.param(&format!("layers.{l}.attn_norm"), None, vec![(p(names::ATTN_NORM), h)]);
        let qkv_parts = vec![(p(names::Q), c.q_dim()), (p(names::K), c.kv_dim()), (p(names::V), c.kv_dim())];
        let qkv_w = b.param(&format!("layers.{l}.qkv"), Some(h), qkv_parts);
        let o_w = b.param(&format!("layers.{l}.o"), Some(c.q_dim()), vec![(p(names::O), h)]);
        let ffn_norm = b.param(&format!("layers.{l}.ffn_norm"), None, vec![(p(names::FFN_NORM), h)]);
        let gate_up = b.param(&format!("layers.{l}.gate_up"), Some(h), vec![(p(names::GATE), f), (p(names::UP), f)]);
        let down = b.param(&format!("layers.{l}.down"), Some(f), vec![(p(names::DOWN), h)]);

        let hs = vec![m, Dim::Const(h)];
        let xn = b.node(format!("layers.{l}.attn_norm"), Op::RmsNorm { weight: attn_norm, eps: c.rms_norm_eps }, vec![x], hs.clone());
        let qkv = b.linear(format!("layers.{l}.attn.qkv"), xn, qkv_w, LinearRole::Qkv, m);
        let rope = Op::Rope { theta: c.rope_theta, head_dim: c.head_dim, num_heads: c.num_heads, num_kv_heads: c.num_kv_heads };
        let qkv = b.node(format!("layers.{l}.attn.rope"), rope, vec![qkv], vec![m, Dim::Const(c.qkv_dim())]);
        let attn = Op::Attention { layer: l, num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim, scale };
        let a = b.node(format!("layers.{l}.attn.sdpa"), attn, vec![qkv], vec![m, Dim::Const(c.q_dim())]);
        let o = b.linear(format!("layers.{l}.attn.o"), a, o_w, LinearRole::AttnOut, m);
        x = b.node(format!("layers.{l}.attn.residual"), Op::Add, vec![x, o], hs.clone());
        let xn = b.node(format!("layers.{l}.ffn_norm"), Op::RmsNorm { weight: ffn_norm, eps: c.rms_norm_eps }, vec![x], hs.clone());
        let gu = b.linear(format!("layers.{l}.ffn.gate_up"), xn, gate_up, LinearRole::FfnGateUp, m);
        let act = b.node(format!("layers.{l}.ffn.swiglu"), Op::SwiGlu { ffn: f }, vec![gu], vec![m, Dim::Const(f)]);
        let d = b.linear(format!("layers.{l}.ffn.down"), act, down, LinearRole::FfnDown, m);
        x = b.node(format!("layers.{l}.ffn.residual"), Op::Add, vec![x, d], hs);
    }
    let out = Dim::Out;
    let norm = b.param("final_norm", None, vec![(names::FINAL_NORM.into(), h)]);
    let last = b.node("select_rows".into(), Op::SelectRows, vec![x], vec![out, Dim::Const(h)]);
    let xn = b.node("final_norm".into(), Op::RmsNorm { weight: norm, eps: c.rms_norm_eps }, vec![last], vec![out, Dim::Const(h)]);
    // Tied embeddings share the parameter itself, so it is loaded and stored once.
    let head = if c.tie_word_embeddings { embed } else { b.param("lm_head", Some(h), vec![(names::LM_HEAD.into(), c.vocab_size)]) };
    let logits = b.linear("lm_head".into(), xn, head, LinearRole::LmHead, out);
    b.tensors[logits].kind = TensorKind::Output;
    Graph { config: c.clone(), tensors: b.tensors, params: b.params, nodes: b.nodes, tokens, logits }
}
