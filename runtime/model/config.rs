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
