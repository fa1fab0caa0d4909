//! STUB (being written): byte-level BPE tokenizer shared by GGUF and HF models.
use std::path::Path;
use crate::error::Result;
use super::gguf::GgufFile;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> { todo!() }
    pub fn from_hf_dir(dir: &Path) -> Result<Self> { todo!() }
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> { todo!() }
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> { todo!() }
    pub fn vocab_size(&self) -> usize { todo!() }
    pub fn id_to_token(&self, id: u32) -> Option<String> { todo!() }
    pub fn bos_id(&self) -> Option<u32> { todo!() }
    pub fn eos_id(&self) -> Option<u32> { todo!() }
    pub fn bos_token(&self) -> Option<&str> { todo!() }
    pub fn eos_token(&self) -> Option<&str> { todo!() }
    pub fn stop_ids(&self) -> &[u32] { todo!() }
    pub fn inner(&self) -> &tokenizers::Tokenizer { &self.inner }
    pub fn write_hf(&self, dir: &Path, chat_template: Option<&super::ChatTemplate>) -> Result<()> { todo!() }
}
