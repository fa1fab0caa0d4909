//! Model files: GGUF and the Hugging Face layout, tokenizer and chat template.
//!
//! Whatever the file format, a loaded [`Model`] names its tensors the Hugging Face way
//! (`model.layers.0.self_attn.q_proj.weight`, shape `[out, in]`) and reads them lazily
//! through a [`WeightSource`], so backends pull weights once, in the dtype they want.

pub mod chat;
pub mod config;
pub mod dequant;
pub mod gguf;
pub mod gguf_llama;
pub mod hf;
pub mod hf_config;
pub mod hub;
pub mod synthetic;
pub mod tokenizer;

use std::path::{Path, PathBuf};

pub use chat::{ChatMessage, ChatTemplate};
pub use config::ModelConfig;
pub use tokenizer::Tokenizer;

use crate::error::{Error, Result};
use crate::tensor::{DType, FileType, HostTensor};

/// Tensors of a model under their Hugging Face names. Files stay memory-mapped in their
/// own types; a tensor is read only when asked for, in the float type the caller stores.
pub trait WeightSource: Send + Sync {
    /// The file or folder the tensors come from (for error messages).
    fn path(&self) -> &Path;
    /// Every tensor name, sorted.
    fn names(&self) -> Vec<String>;
    /// Row-major shape (outermost first) without reading data; `None` if absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// How the tensor is stored; an absent tensor or a type fdpp cannot read is an error
    /// naming it.
    fn file_type(&self, name: &str) -> Result<FileType>;
    /// Reads one tensor, decoded into `dtype`. Absent names give `Error::MissingTensor`.
    fn load(&self, name: &str, dtype: DType) -> Result<HostTensor>;
    /// One tensor's bytes as the file stores them (block-quantized rows stay blocks), rows
    /// in the order `load` gives them. For backends that read a quantized type themselves.
    fn load_raw(&self, name: &str) -> Result<Vec<u8>> {
        Err(Error::NotSupported { backend: self.path().display().to_string(), what: format!("reading `{name}` as stored") })
    }
    /// How errors should name a tensor: the file's own name where it differs.
    fn display_name(&self, name: &str) -> String {
        name.to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ModelFormat {
    Gguf,
    HuggingFace,
}

pub struct Model {
    pub path: PathBuf,
    pub format: ModelFormat,
    pub config: ModelConfig,
    pub weights: Box<dyn WeightSource>,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
}

impl Model {
    /// Loads a `.gguf` file or a Hugging Face folder (config.json + safetensors + tokenizer.json).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() { hf::load(path) } else { gguf_llama::load(path) }
    }

    /// Only the tokenizer of a `.gguf` file (a vocabulary-only GGUF too) or a Hugging Face
    /// folder, without reading the model's config or weights.
    pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() { Tokenizer::from_hf_dir(path) } else { Tokenizer::from_gguf(&gguf::GgufFile::open(path)?) }
    }

    pub fn describe(&self) -> String {
        let c = &self.config;
        let text = format!(
            "{} ({:?}, {}): {} layers, hidden {}, {} heads / {} kv heads, head dim {}, ffn {}, vocab {}, {:.1}M params",
            self.path.display(),
            self.format,
            c.architecture,
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            c.intermediate_size,
            c.vocab_size,
            c.num_params() as f64 / 1e6
        );
        escape(&text, usize::MAX)
    }
}

/// The largest JSON or template file fdpp reads from a model folder (a tokenizer.json of
/// a 256k vocabulary is about 30 MB).
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Refuses anything but a regular file (after symlinks) before it is opened: a FIFO
/// would block the open, a device such as /dev/zero never ends.
pub(crate) fn regular_file(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a device, FIFO or socket)" };
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{kind}: fdpp reads only regular files")),
        ));
    }
    Ok(meta)
}

/// Reads a regular file of at most `MAX_JSON_BYTES`, checked before reading.
pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let len = regular_file(path)?.len();
    let too_big =
        |len: u64| Error::FileLimit { path: path.to_path_buf(), what: "its size in bytes".into(), value: len, limit: MAX_JSON_BYTES };
    if len > MAX_JSON_BYTES {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // Bounded again while reading: the file may grow after its size was read.
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Checks what a config claims against the tensors the file holds, before a graph or a
/// buffer is sized from it: the embedding, the first layer's projections, and as many
/// layers as claimed. `key` names a config field the way the file does.
fn check_claims(config: &ModelConfig, weights: &dyn WeightSource, key: &dyn Fn(&str) -> String) -> Result<()> {
    let path = weights.path();
    let expect = |name: &str, expected: Vec<usize>| match weights.shape(name) {
        None => Err(Error::MissingTensor { path: path.to_path_buf(), tensor: weights.display_name(name) }),
        Some(found) if found != expected => {
            Err(Error::ShapeMismatch { path: path.to_path_buf(), tensor: weights.display_name(name), found, expected })
        }
        Some(_) => Ok(()),
    };
    let h = config.hidden_size;
    expect(names::EMBED, vec![config.vocab_size, h])?;
    expect(&names::layer(0, names::Q), vec![config.q_dim(), h])?;
    expect(&names::layer(0, names::K), vec![config.kv_dim(), h])?;
    expect(&names::layer(0, names::GATE), vec![config.intermediate_size, h])?;
    let layers = weights
        .names()
        .iter()
        .filter_map(|n| n.strip_prefix("model.layers.")?.split_once('.')?.0.parse::<usize>().ok())
        .max()
        .map_or(0, |last| last + 1);
    if layers != config.num_layers {
        return Err(Error::Malformed {
            path: path.to_path_buf(),
            what: "model hyper-parameters".into(),
            reason: format!("`{}` is {} but the file holds tensors of {layers} layers", key("num_layers"), config.num_layers),
        });
    }
    Ok(())
}

/// The Hugging Face names of the tensors a Llama-family model needs, in graph order.
pub mod names {
    pub const EMBED: &str = "model.embed_tokens.weight";
    pub const FINAL_NORM: &str = "model.norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    pub fn layer(i: usize, leaf: &str) -> String {
        format!("model.layers.{i}.{leaf}")
    }
    pub const ATTN_NORM: &str = "input_layernorm.weight";
    pub const Q: &str = "self_attn.q_proj.weight";
    pub const K: &str = "self_attn.k_proj.weight";
    pub const V: &str = "self_attn.v_proj.weight";
    pub const O: &str = "self_attn.o_proj.weight";
    pub const FFN_NORM: &str = "post_attention_layernorm.weight";
    pub const GATE: &str = "mlp.gate_proj.weight";
    pub const UP: &str = "mlp.up_proj.weight";
    pub const DOWN: &str = "mlp.down_proj.weight";
    pub const Q_BIAS: &str = "self_attn.q_proj.bias";
    pub const K_BIAS: &str = "self_attn.k_proj.bias";
    pub const V_BIAS: &str = "self_attn.v_proj.bias";
    pub const O_BIAS: &str = "self_attn.o_proj.bias";
    pub const GATE_BIAS: &str = "mlp.gate_proj.bias";
    pub const UP_BIAS: &str = "mlp.up_proj.bias";
    pub const DOWN_BIAS: &str = "mlp.down_proj.bias";
}

/// A string from a model file made safe for a terminal or a one-line message: control
/// characters (escape sequences among them) are written escaped, and text beyond
/// `max_chars` is cut with an ellipsis.
pub fn escape(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
