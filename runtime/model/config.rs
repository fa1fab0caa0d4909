//! The shape of a Llama-family model, whatever file it came from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

// What a model may claim, checked before anything is sized from it: well above every
// released Llama-family model (Llama 3.1 405B: 126 layers, hidden 16384, FFN 53248, 128
// heads; vocabularies up to 262144; head sizes up to 256; contexts up to 10M) and low
// enough that no product of them overflows 64 bits.
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HIDDEN: usize = 1 << 17;
pub const MAX_INTERMEDIATE: usize = 1 << 19;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_CONTEXT: usize = 1 << 24;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family as the file names it (`llama`; SmolLM2 is a Llama).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    /// Longest sequence the model was trained for (`max_position_embeddings`).
    pub max_context: usize,
    /// lm_head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// How the rotary frequencies are scaled for long contexts.
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// Which linear layers add a bias.
    #[serde(default)]
    pub biases: Biases,
    /// What the loader assumed or limited (a documented default taken for a missing field,
    /// a context capped to a sliding window), for the user and the trace.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Scaling of the rotary frequencies, as Hugging Face's `rope_parameters.rope_type` names it.
/// (`dynamic` NTK scaling equals the default frequencies up to `max_position_embeddings`,
/// which fdpp never exceeds, so it loads as `None`.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RopeScaling {
    #[default]
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear { factor: f32 },
    /// `llama3` (Llama 3.1 / 3.2): wavelengths longer than the original context / low_freq_factor
    /// divided by `factor`, shorter than it / high_freq_factor kept, a smooth blend between.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
    /// `yarn`: each frequency blended between interpolation (/ factor) and extrapolation by a
    /// linear ramp over the dimensions between the beta_fast and beta_slow rotation counts;
    /// cos and sin scaled by `attention_factor`.
    Yarn { factor: f32, original_max_position_embeddings: usize, beta_fast: f32, beta_slow: f32, truncate: bool, attention_factor: f32 },
    /// Per-frequency divisors, as llama.cpp stores Llama 3 scaling in GGUF (`rope_freqs.weight`).
    FreqFactors { factors: Vec<f32> },
}

/// Which linear layers add a bias (Qwen2: q, k, v; Llama's `attention_bias`: q, k, v and o;
/// `mlp_bias`: gate, up and down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Biases {
    pub qkv: bool,
    pub o: bool,
    pub mlp: bool,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// Rows of the fused QKV projection.
    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// Checks every size against fdpp's limits and the relations the graph relies on.
    /// `key` names a field the way the file does (`num_layers` is GGUF's
    /// `llama.block_count`), so the error points at what to fix in the file.
    pub fn validate(&self, path: &Path, key: &dyn Fn(&str) -> String) -> Result<()> {
        let malformed = |reason: String| Error::Malformed { path: path.to_path_buf(), what: "model hyper-parameters".into(), reason };
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, MAX_INTERMEDIATE),
            ("num_layers", self.num_layers, MAX_LAYERS),
            ("num_heads", self.num_heads, MAX_HEADS),
            ("num_kv_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            ("max_context", self.max_context, MAX_CONTEXT),
        ];
        for (name, v, limit) in sizes {
            if v == 0 {
                return Err(malformed(format!("`{}` is 0", key(name))));
            }
            if v > limit {
                return Err(Error::FileLimit {
                    path: path.to_path_buf(),
                    what: format!("`{}`", key(name)),
                    value: v as u64,
                    limit: limit as u64,
                });
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(malformed(format!(
                "`{}` ({}) is not a multiple of `{}` ({})",
                key("num_heads"),
                self.num_heads,
                key("num_kv_heads"),
                self.num_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(malformed(format!("`{}` ({}) is odd; rotary embedding needs pairs", key("head_dim"), self.head_dim)));
        }
        let positive = |name: &str, v: f32| {
            // Written so that NaN fails too.
            if v.is_finite() && v > 0.0 { Ok(()) } else { Err(malformed(format!("`{}` is {v}; it must be finite and above 0", key(name)))) }
        };
        positive("rope_theta", self.rope_theta)?;
        positive("rms_norm_eps", self.rms_norm_eps)?;
        let original_context = |o: usize| {
            if o == 0 || o > MAX_CONTEXT {
                return Err(malformed(format!("the RoPE scaling's original context length {o} is not within 1..={MAX_CONTEXT}")));
            }
            Ok(())
        };
        match &self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::FreqFactors { factors } => {
                if factors.len() != self.head_dim / 2 {
                    return Err(malformed(format!(
                        "{} RoPE frequency factors for head_dim {} (want {})",
                        factors.len(),
                        self.head_dim,
                        self.head_dim / 2
                    )));
                }
                if let Some(f) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                    return Err(malformed(format!("a RoPE frequency factor (rope_freqs.weight) is {f}; they must be finite and above 0")));
                }
            }
            RopeScaling::Linear { factor } => positive("RoPE scaling factor", *factor)?,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                positive("RoPE scaling factor", *factor)?;
                positive("RoPE low_freq_factor", *low_freq_factor)?;
                positive("RoPE high_freq_factor", *high_freq_factor)?;
                original_context(*original_max_position_embeddings)?;
            }
            RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, attention_factor, .. } => {
                positive("RoPE scaling factor", *factor)?;
                positive("RoPE attention factor", *attention_factor)?;
                if !(beta_fast.is_finite() && beta_slow.is_finite()) {
                    return Err(malformed(format!("YaRN beta_fast {beta_fast} / beta_slow {beta_slow} must be finite")));
                }
                original_context(*original_max_position_embeddings)?;
            }
        }
        Ok(())
    }

    /// Parameter count (embedding counted once when tied).
    pub fn num_params(&self) -> usize {
        let h = self.hidden_size;
        let layer = h * self.qkv_dim() + self.q_dim() * h + 3 * h * self.intermediate_size + 2 * h;
        let emb = self.vocab_size * h;
        emb + self.num_layers * layer + h + if self.tie_word_embeddings { 0 } else { emb }
    }
}
