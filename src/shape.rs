//! Known model shapes, for benchmarks and plans without a model file.

use fdpp_runtime::model::ModelConfig;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shape {
    /// SmolLM2-135M: 30 layers, hidden 576, 9/3 heads, ffn 1536, vocab 49152.
    #[value(name = "smollm2-135m")]
    Smollm2_135m,
    /// Llama-2-7B with a 49152 vocabulary: 32 layers, hidden 4096, 32 heads, ffn 11008.
    #[value(name = "llama2-7b")]
    Llama2_7b,
    /// Llama-2-13B with a 49152 vocabulary: 40 layers, hidden 5120, 40 heads, ffn 13824.
    #[value(name = "llama2-13b")]
    Llama2_13b,
}

impl Shape {
    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Smollm2_135m => "smollm2-135m",
            Shape::Llama2_7b => "llama2-7b",
            Shape::Llama2_13b => "llama2-13b",
        }
    }

    pub fn config(self) -> ModelConfig {
        let (h, f, l, heads, kv) = match self {
            Shape::Smollm2_135m => (576, 1536, 30, 9, 3),
            Shape::Llama2_7b => (4096, 11008, 32, 32, 32),
            Shape::Llama2_13b => (5120, 13824, 40, 40, 40),
        };
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 49152,
            hidden_size: h,
            intermediate_size: f,
            num_layers: l,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: h / heads,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_context: 8192,
            tie_word_embeddings: matches!(self, Shape::Smollm2_135m),
            rope_scaling: Default::default(),
            biases: Default::default(),
            notes: vec![],
        }
    }
}
