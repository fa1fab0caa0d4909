//! STUB (being written): chat template rendering with minijinja.
use std::path::Path;
use crate::error::Result;
use super::gguf::GgufFile;
use super::Tokenizer;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    source: String,
}

impl ChatTemplate {
    pub fn new(source: String, tokenizer: &Tokenizer) -> Result<Self> { todo!() }
    pub fn from_gguf(g: &GgufFile, tokenizer: &Tokenizer) -> Result<Option<Self>> { todo!() }
    pub fn from_hf_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Option<Self>> { todo!() }
    pub fn source(&self) -> &str { &self.source }
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> { todo!() }
}
