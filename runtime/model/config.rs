//! The shape of a Llama-family model, whatever file it came from.

use serde::{Deserialize, Serialize};

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

    /// Checks the relations the graph relies on; `Err` holds a sentence naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_context", self.max_context),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} is 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!("num_heads ({}) is not a multiple of num_kv_heads ({})", self.num_heads, self.num_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim ({}) is odd; rotary embedding needs pairs", self.head_dim));
        }
        match &self.rope_scaling {
            RopeScaling::FreqFactors { factors } if factors.len() != self.head_dim / 2 => {
                return Err(format!(
                    "{} RoPE frequency factors for head_dim {} (want {})",
                    factors.len(),
                    self.head_dim,
                    self.head_dim / 2
                ));
            }
            RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } | RopeScaling::Yarn { factor, .. }
                if factor.is_nan() || *factor <= 0.0 =>
            {
                return Err(format!("RoPE scaling factor {factor} must be > 0"));
            }
            _ => {}
        }
        // Written negated so that NaN is rejected too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(self.rope_theta > 0.0) || !(self.rms_norm_eps >= 0.0) {
            return Err(format!("rope_theta ({}) must be > 0 and rms_norm_eps ({}) >= 0", self.rope_theta, self.rms_norm_eps));
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
