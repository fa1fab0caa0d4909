//! A tiny random Llama, written as GGUF by this test, run through the graph and the CPU
//! backend, against a straightforward f64 implementation written here from the Llama
//! equations (separate Q/K/V, split-halves rotary, GQA, SwiGLU).

mod common;

use common::{Spec, Weights};
use fdpp_runtime::engine::{Engine, EngineOptions};
use fdpp_runtime::model::Model;

struct Reference<'a> {
    s: &'a Spec,
    w: &'a Weights,
    /// Per layer: cached K and V rows (f64) of the positions seen so far.
    k: Vec<Vec<Vec<f64>>>,
    v: Vec<Vec<Vec<f64>>>,
}

fn matvec(w: &(Vec<usize>, Vec<f32>), x: &[f64]) -> Vec<f64> {
    let (rows, cols) = (w.0[0], w.0[1]);
    (0..rows).map(|r| (0..cols).map(|c| w.1[r * cols + c] as f64 * x[c]).sum()).collect()
}

fn rms_norm(x: &[f64], g: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(g).map(|(v, g)| v * inv * *g as f64).collect()
}

fn rope(v: &mut [f64], heads: usize, hd: usize, pos: usize, theta: f64) {
    for h in 0..heads {
        for i in 0..hd / 2 {
            let angle = pos as f64 / theta.powf(2.0 * i as f64 / hd as f64);
            let (a, b) = (v[h * hd + i], v[h * hd + i + hd / 2]);
            v[h * hd + i] = a * angle.cos() - b * angle.sin();
            v[h * hd + i + hd / 2] = b * angle.cos() + a * angle.sin();
        }
    }
}

impl<'a> Reference<'a> {
    fn new(s: &'a Spec, w: &'a Weights) -> Self {
        Reference { s, w, k: vec![vec![]; s.layers], v: vec![vec![]; s.layers] }
    }

    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        &self.w[name]
    }

    /// Logits after feeding `token` at the next position.
    fn step(&mut self, token: u32) -> Vec<f64> {
        let s = self.s;
        let (h, hd) = (s.hidden, s.head_dim());
        let eps = s.eps as f64;
        let emb = self.get("model.embed_tokens.weight");
        let mut x: Vec<f64> = emb.1[token as usize * h..(token as usize + 1) * h].iter().map(|&v| v as f64).collect();
        for l in 0..s.layers {
            let p = |leaf: &str| format!("model.layers.{l}.{leaf}");
            let pos = self.k[l].len();
            let xn = rms_norm(&x, &self.get(&p("input_layernorm.weight")).1, eps);
            let mut q = matvec(self.get(&p("self_attn.q_proj.weight")), &xn);
            let mut k = matvec(self.get(&p("self_attn.k_proj.weight")), &xn);
            let v = matvec(self.get(&p("self_attn.v_proj.weight")), &xn);
            rope(&mut q, s.heads, hd, pos, s.rope_theta as f64);
            rope(&mut k, s.kv_heads, hd, pos, s.rope_theta as f64);
            self.k[l].push(k);
            self.v[l].push(v);
            let mut attn = vec![0.0; s.heads * hd];
            for head in 0..s.heads {
                let kvh = head / (s.heads / s.kv_heads);
                let qh = &q[head * hd..(head + 1) * hd];
                let scores: Vec<f64> = self.k[l]
                    .iter()
                    .map(|kr| qh.iter().zip(&kr[kvh * hd..(kvh + 1) * hd]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, vr) in self.v[l].iter().enumerate() {
                    for d in 0..hd {
                        attn[head * hd + d] += e[j] / z * vr[kvh * hd + d];
                    }
                }
            }
            let o = matvec(self.get(&p("self_attn.o_proj.weight")), &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rms_norm(&x, &self.get(&p("post_attention_layernorm.weight")).1, eps);
            let g = matvec(self.get(&p("mlp.gate_proj.weight")), &xn);
            let u = matvec(self.get(&p("mlp.up_proj.weight")), &xn);
            let act: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let d = matvec(self.get(&p("mlp.down_proj.weight")), &act);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        let xn = rms_norm(&x, &self.get("model.norm.weight").1, eps);
        let head = if s.tied { "model.embed_tokens.weight" } else { "lm_head.weight" };
        matvec(self.get(head), &xn)
    }
}

/// Prefill of a prompt, then decode steps (each checks the KV cache of earlier steps).
fn check(spec: Spec, seed: u64, test: &str, prompt: &[u32], decode: &[u32]) {
    let dir = common::temp_dir(test);
    let path = dir.join("tiny.gguf");
    let weights = common::write_tiny(&path, &spec, seed);
    let model = Model::load(&path).unwrap();
    let mut engine = Engine::load(model, &EngineOptions::default(), &mut |_, _| {}).unwrap();
    let mut reference = Reference::new(&spec, &weights);

    let mut want = vec![];
    for &t in prompt {
        want = reference.step(t);
    }
    let got = engine.forward(prompt, 0).unwrap();
    let err = common::rel_err(&got, &want, "prefill logits");
    assert!(err < 1e-5, "prefill: relative error {err:e}");

    for (pos, &t) in (prompt.len()..).zip(decode) {
        let want = reference.step(t);
        let got = engine.forward(&[t], pos).unwrap();
        let err = common::rel_err(&got, &want, "decode logits");
        assert!(err < 1e-5, "decode at position {pos}: relative error {err:e}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tiny_llama_matches_f64_reference_tied() {
    check(Spec::default(), 1, "tied", &[5, 77, 130, 3, 200, 258, 42], &[9, 250, 17]);
}

#[test]
fn tiny_llama_matches_f64_reference_separate_head_mha_long_prompt() {
    // No GQA (heads == kv heads), separate lm_head, and a prompt long enough for the GEMM path.
    let spec = Spec { kv_heads: 4, tied: false, layers: 3, rope_theta: 500000.0, ..Spec::default() };
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 % 261) as u32).collect();
    check(spec, 7, "long", &prompt, &[1]);
}
