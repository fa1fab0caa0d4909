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
    fn linear(&mut self, name: String, x: TensorId, (weight, bias): (ParamId, Option<ParamId>), role: LinearRole, rows: Dim) -> TensorId {
        let (n, k) = (self.params[weight].shape[0], self.params[weight].shape[1]);
        self.node(name, Op::Linear { weight, bias, n, k, role }, vec![x], vec![rows, Dim::Const(n)])
    }
    /// A weight `[rows, cols]` stacking `parts` (leaf names under the layer, rows each), and
    /// its bias stacking the same parts' biases where the model has them.
    fn weight_and_bias(
        &mut self,
        name: &str,
        cols: usize,
        parts: &[(&str, &str, usize)],
        layer: usize,
        bias: bool,
    ) -> (ParamId, Option<ParamId>) {
        let p = |leaf: &str| names::layer(layer, leaf);
        let w = self.param(name, Some(cols), parts.iter().map(|(w, _, r)| (p(w), *r)).collect());
        let b = bias.then(|| self.param(&format!("{name}.bias"), None, parts.iter().map(|(_, b, r)| (p(b), *r)).collect()));
        (w, b)
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
        let bias = c.biases;
        let qkv_parts =
            [(names::Q, names::Q_BIAS, c.q_dim()), (names::K, names::K_BIAS, c.kv_dim()), (names::V, names::V_BIAS, c.kv_dim())];
        let qkv_w = b.weight_and_bias(&format!("layers.{l}.qkv"), h, &qkv_parts, l, bias.qkv);
        let o_w = b.weight_and_bias(&format!("layers.{l}.o"), c.q_dim(), &[(names::O, names::O_BIAS, h)], l, bias.o);
        let ffn_norm = b.param(&format!("layers.{l}.ffn_norm"), None, vec![(p(names::FFN_NORM), h)]);
        let gate_up = b.weight_and_bias(
            &format!("layers.{l}.gate_up"),
            h,
            &[(names::GATE, names::GATE_BIAS, f), (names::UP, names::UP_BIAS, f)],
            l,
            bias.mlp,
        );
        let down = b.weight_and_bias(&format!("layers.{l}.down"), f, &[(names::DOWN, names::DOWN_BIAS, h)], l, bias.mlp);

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
    let logits = b.linear("lm_head".into(), xn, (head, None), LinearRole::LmHead, out);
    b.tensors[logits].kind = TensorKind::Output;
    Graph { config: c.clone(), tensors: b.tensors, params: b.params, nodes: b.nodes, tokens, logits }
}
