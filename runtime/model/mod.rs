//! Model files: GGUF and the Hugging Face layout, tokenizer and chat template.

pub mod config;
pub mod dequant;
pub mod gguf;
