//! Import of Llama-family GGUF files: config from metadata, tensors renamed to the
//! Hugging Face names, Q and K un-permuted from GGUF's rotary layout.

use std::path::Path;

use super::config::{Biases, MAX_HEADS, RopeScaling};
use super::gguf::{GgmlType, GgufFile};
use super::{ChatTemplate, Model, ModelConfig, ModelFormat, Tokenizer, WeightSource, names};
use crate::error::{Error, Result};
use crate::tensor::{DType, FileType, HostTensor, TensorData};

pub fn load(path: &Path) -> Result<Model> {
    from_file(GgufFile::open(path)?)
}

/// The model of an opened GGUF file (one read from memory too).
pub fn from_file(file: GgufFile) -> Result<Model> {
    let path = file.path.clone();
    let config = config_from_metadata(&file)?;
    let weights = GgufWeights::new(file, &config);
    let arch = &config.architecture;
    super::check_claims(&config, &weights, &|field| gguf_key(field).map_or(field.to_string(), |k| format!("{arch}.{k}")))?;
    let tokenizer = Tokenizer::from_gguf(&weights.file)?;
    let chat_template = ChatTemplate::from_gguf(&weights.file, &tokenizer)?;
    let mut config = config;
    config.notes.extend(super::chat::broken_note(chat_template.as_ref()));
    Ok(Model { path, format: ModelFormat::Gguf, config, weights: Box::new(weights), tokenizer, chat_template })
}

/// GGUF architectures fdpp runs (Mistral GGUFs are written as `llama`).
const GGUF_ARCHITECTURES: &str = "llama, qwen2";

pub fn config_from_metadata(f: &GgufFile) -> Result<ModelConfig> {
    let arch = f.require("general.architecture", f.get_str("general.architecture"))?.to_string();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(Error::UnsupportedModel {
            path: f.path.clone(),
            reason: format!("architecture `{arch}` (fdpp runs: {GGUF_ARCHITECTURES})"),
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| -> Result<usize> { Ok(f.require(&key(k), f.get_u64(&key(k)))? as usize) };
    let unsupported = |reason: String| Error::UnsupportedModel { path: f.path.clone(), reason };
    let mut notes = vec![];
    let hidden_size = req("embedding_length")?;
    let num_heads = req("attention.head_count")?;
    let num_kv_heads = f.get_u64(&key("attention.head_count_kv"))?.map_or(num_heads, |v| v as usize);
    let head_dim = match f.get_u64(&key("attention.key_length"))? {
        Some(v) => v as usize,
        // (A head count beyond the limit is reported as such by the validation.)
        None if (1..=MAX_HEADS).contains(&num_heads) && !hidden_size.is_multiple_of(num_heads) => {
            return Err(Error::Malformed {
                path: f.path.clone(),
                what: "model hyper-parameters".into(),
                reason: format!(
                    "`{}` ({hidden_size}) does not divide into `{}` ({num_heads}) heads and `{}` is absent",
                    key("embedding_length"),
                    key("attention.head_count"),
                    key("attention.key_length")
                ),
            });
        }
        None => hidden_size / num_heads.max(1),
    };
    if let Some(v) = f.get_u64(&key("attention.value_length"))?.filter(|&v| v != head_dim as u64) {
        return Err(unsupported(format!("`{}` = {v} differs from the key length {head_dim}", key("attention.value_length"))));
    }
    if let Some(d) = f.get_u64(&key("rope.dimension_count"))?.filter(|&d| d != head_dim as u64) {
        return Err(unsupported(format!(
            "`{}` = {d}: rotary embedding of part of a {head_dim}-wide head is not implemented",
            key("rope.dimension_count")
        )));
    }
    let vocab_size = match f.get_u64(&key("vocab_size"))? {
        Some(v) => v as usize,
        None => match f.tensor_info("token_embd.weight") {
            Some(t) => t.shape()[0],
            None => return Err(Error::MissingTensor { path: f.path.clone(), tensor: "token_embd.weight".into() }),
        },
    };
    let mut max_context = req("context_length")?;
    if let Some(w) = f.get_u64(&key("attention.sliding_window"))?.filter(|&w| w < max_context as u64) {
        max_context = w as usize;
        notes.push(format!(
            "sliding-window attention ({w} positions): the context is limited to the window, where attention sees every position"
        ));
    }
    let has = |name: &str| f.tensor_info(name).is_some();
    let biases = Biases { qkv: has("blk.0.attn_q.bias"), o: has("blk.0.attn_output.bias"), mlp: has("blk.0.ffn_down.bias") };
    let config = ModelConfig {
        architecture: arch.clone(),
        vocab_size,
        hidden_size,
        intermediate_size: req("feed_forward_length")?,
        num_layers: req("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_theta: f.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
        rms_norm_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32,
        max_context,
        tie_word_embeddings: f.tensor_info("output.weight").is_none(),
        rope_scaling: rope_scaling(f, &arch, max_context, head_dim)?,
        biases,
        notes,
    };
    let vocab_key = if f.get(&key("vocab_size")).is_some() { key("vocab_size") } else { "token_embd.weight's rows".into() };
    config.validate(&f.path, &|field| match gguf_key(field) {
        Some(k) => key(k),
        None if field == "vocab_size" => vocab_key.clone(),
        None => field.to_string(),
    })?;
    Ok(config)
}

/// The metadata key (after `ARCH.`) a [`ModelConfig`] field is read from.
fn gguf_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_layers" => "block_count",
        "num_heads" => "attention.head_count",
        "num_kv_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "rope_theta" => "rope.freq_base",
        "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
        "max_context" => "context_length",
        "RoPE scaling factor" => "rope.scaling.factor",
        _ => return None,
    })
}

/// RoPE scaling as llama.cpp stores it: `rope.scaling.*` keys, or per-frequency factors in
/// the tensor `rope_freqs.weight` (Llama 3.1 / 3.2).
fn rope_scaling(f: &GgufFile, arch: &str, max_context: usize, head_dim: usize) -> Result<RopeScaling> {
    let key = |k: &str| format!("{arch}.rope.{k}");
    if let Some(info) = f.tensor_info("rope_freqs.weight") {
        // Read only when it has the one size it can have (its values are checked later).
        if info.numel() != head_dim as u64 / 2 {
            let found = info.shape();
            return Err(Error::ShapeMismatch { path: f.path.clone(), tensor: info.name.clone(), found, expected: vec![head_dim / 2] });
        }
        let factors = f.read_tensor(&info.name.clone(), DType::F32)?.into_f32();
        return Ok(RopeScaling::FreqFactors { factors });
    }
    let factor = match f.get_f64(&key("scaling.factor"))? {
        Some(x) => Some(x),
        None => f.get_f64(&key("scale_linear"))?,
    };
    let kind = f.get_str(&key("scaling.type"))?.unwrap_or(if factor.is_some() { "linear" } else { "none" });
    let original = f.get_u64(&key("scaling.original_context_length"))?.map_or(max_context, |v| v as usize);
    Ok(match (kind, factor) {
        ("none", _) | (_, None) => RopeScaling::None,
        (_, Some(x)) if x == 0.0 || x == 1.0 => RopeScaling::None,
        ("linear", Some(x)) => RopeScaling::Linear { factor: x as f32 },
        ("yarn", Some(x)) => {
            let attn = f.get_f64(&key("scaling.attn_factor"))?.unwrap_or(1.0);
            RopeScaling::Yarn {
                factor: x as f32,
                original_max_position_embeddings: original,
                beta_fast: f.get_f64(&key("scaling.yarn_beta_fast"))?.unwrap_or(32.0) as f32,
                beta_slow: f.get_f64(&key("scaling.yarn_beta_slow"))?.unwrap_or(1.0) as f32,
                truncate: true,
                attention_factor: (attn * if x > 1.0 { 0.1 * x.ln() + 1.0 } else { 1.0 }) as f32,
            }
        }
        (other, _) => {
            return Err(Error::UnsupportedModel {
                path: f.path.clone(),
                reason: format!(
                    "`{}` = `{other}` is not implemented (fdpp implements none, linear, yarn and rope_freqs.weight)",
                    key("scaling.type")
                ),
            });
        }
    })
}

/// How one Hugging Face tensor is read from the file.
struct Mapping {
    hf: String,
    gguf: String,
    /// Rows are in GGUF's interleaved rotary order for this many heads.
    unpermute_heads: Option<usize>,
}

pub struct GgufWeights {
    file: GgufFile,
    map: Vec<Mapping>,
}

/// Tensors outside the layers: (GGUF name, Hugging Face name).
const TOP_LEVEL: [(&str, &str); 3] =
    [("token_embd.weight", names::EMBED), ("output_norm.weight", names::FINAL_NORM), ("output.weight", names::LM_HEAD)];

/// Tensors of each layer `blk.N.*`: (GGUF leaf, Hugging Face leaf, 'q' / 'k' where the rows
/// are stored permuted for GGUF's rotary layout).
const LAYER: [(&str, &str, Option<char>); 16] = [
    ("attn_norm.weight", names::ATTN_NORM, None),
    ("attn_q.weight", names::Q, Some('q')),
    ("attn_k.weight", names::K, Some('k')),
    ("attn_v.weight", names::V, None),
    ("attn_output.weight", names::O, None),
    ("ffn_norm.weight", names::FFN_NORM, None),
    ("ffn_gate.weight", names::GATE, None),
    ("ffn_up.weight", names::UP, None),
    ("ffn_down.weight", names::DOWN, None),
    ("attn_q.bias", names::Q_BIAS, Some('q')),
    ("attn_k.bias", names::K_BIAS, Some('k')),
    ("attn_v.bias", names::V_BIAS, None),
    ("attn_output.bias", names::O_BIAS, None),
    ("ffn_gate.bias", names::GATE_BIAS, None),
    ("ffn_up.bias", names::UP_BIAS, None),
    ("ffn_down.bias", names::DOWN_BIAS, None),
];

/// GGUF name -> (HF name, whether Q/K un-permuting applies: 'q' / 'k').
fn hf_name(gguf: &str) -> Option<(String, Option<char>)> {
    if let Some(&(_, hf)) = TOP_LEVEL.iter().find(|(g, _)| *g == gguf) {
        return Some((hf.to_string(), None));
    }
    let (layer, leaf) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let &(_, hf_leaf, perm) = LAYER.iter().find(|(g, _, _)| *g == leaf)?;
    Some((names::layer(layer, hf_leaf), perm))
}

impl GgufWeights {
    pub fn new(file: GgufFile, config: &ModelConfig) -> Self {
        let map = file
            .tensors
            .iter()
            .filter_map(|t| {
                let (hf, perm) = hf_name(&t.name)?;
                // llama.cpp permutes Q and K only for its `llama` architecture's rotary layout.
                let unpermute_heads =
                    perm.filter(|_| config.architecture == "llama").map(|p| if p == 'q' { config.num_heads } else { config.num_kv_heads });
                Some(Mapping { hf, gguf: t.name.clone(), unpermute_heads })
            })
            .collect();
        GgufWeights { file, map }
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    fn mapping(&self, name: &str) -> Result<&Mapping> {
        self.map
            .iter()
            .find(|m| m.hf == name)
            .ok_or_else(|| Error::MissingTensor { path: self.file.path.clone(), tensor: self.display_name(name) })
    }

    fn info(&self, name: &str) -> Result<&super::gguf::GgufTensorInfo> {
        let m = self.mapping(name)?;
        self.file.tensor_info(&m.gguf).ok_or_else(|| Error::MissingTensor { path: self.file.path.clone(), tensor: self.display_name(name) })
    }
}

/// Inverse of llama.cpp's convert-time permutation: within each head, GGUF row `2i + j`
/// holds Hugging Face row `j * (head_dim / 2) + i` (rotary pairs interleaved vs. split halves).
pub fn unpermute_rows(t: HostTensor, heads: usize) -> HostTensor {
    let rows = t.shape[0];
    let cols: usize = t.shape[1..].iter().product();
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(unpermute(v, rows, cols, heads)),
        TensorData::F16(v) => TensorData::F16(unpermute(v, rows, cols, heads)),
        TensorData::BF16(v) => TensorData::BF16(unpermute(v, rows, cols, heads)),
    };
    HostTensor { shape: t.shape, data }
}

/// `unpermute_rows` on `rows` rows of `cols` items each (values, or a quantized row's bytes).
fn unpermute<T: Copy>(v: &[T], rows: usize, cols: usize, heads: usize) -> Vec<T> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = v.to_vec();
    for r in 0..rows {
        let (h, within) = (r / head_dim, r % head_dim);
        let (i, j) = (within / 2, within % 2);
        let dst = h * head_dim + j * half + i;
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[r * cols..(r + 1) * cols]);
    }
    out
}

/// Whether a tensor of `shape` whose rows GGUF permuted splits into `heads` heads of rotary pairs.
fn splits_into_heads(shape: &[usize], heads: usize) -> bool {
    (1..=2).contains(&shape.len()) && heads > 0 && shape[0] > 0 && shape[0].is_multiple_of(heads) && (shape[0] / heads).is_multiple_of(2)
}

impl WeightSource for GgufWeights {
    fn path(&self) -> &Path {
        &self.file.path
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.iter().map(|m| m.hf.clone()).collect();
        v.sort();
        v
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let m = self.map.iter().find(|m| m.hf == name)?;
        Some(self.file.tensor_info(&m.gguf)?.shape())
    }
    fn file_type(&self, name: &str) -> Result<FileType> {
        let info = self.info(name)?;
        info.ggml_type.file_type().ok_or_else(|| Error::UnsupportedTensorType {
            path: self.file.path.clone(),
            tensor: info.name.clone(),
            dtype: info.ggml_type.to_string(),
            supported: GgmlType::SUPPORTED,
        })
    }
    fn load(&self, name: &str, dtype: DType) -> Result<HostTensor> {
        let m = self.mapping(name)?;
        let t = self.file.read_tensor(&m.gguf, dtype)?;
        match m.unpermute_heads {
            Some(heads) if splits_into_heads(&t.shape, heads) => Ok(unpermute_rows(t, heads)),
            // A shape that does not split into heads is reported by the graph's shape check.
            _ => Ok(t),
        }
    }
    fn load_raw(&self, name: &str) -> Result<Vec<u8>> {
        let m = self.mapping(name)?;
        let info = self.info(name)?;
        let bytes = self.file.tensor_bytes(info)?;
        let shape = info.shape();
        match m.unpermute_heads {
            // Rows are whole blocks, so rows move as they do decoded.
            Some(heads) if splits_into_heads(&shape, heads) => Ok(unpermute(bytes, shape[0], bytes.len() / shape[0], heads)),
            _ => Ok(bytes.to_vec()),
        }
    }
    fn display_name(&self, name: &str) -> String {
        format!("{} ({name})", gguf_name_hint(name))
    }
}

/// The GGUF name a Hugging Face name would come from, for error messages.
fn gguf_name_hint(hf: &str) -> String {
    if let Some(&(g, _)) = TOP_LEVEL.iter().find(|(_, h)| *h == hf) {
        return g.to_string();
    }
    if let Some((layer, leaf)) = hf.strip_prefix("model.layers.").and_then(|r| r.split_once('.'))
        && let Some((g, _, _)) = LAYER.iter().find(|(_, h, _)| *h == leaf)
    {
        return format!("blk.{layer}.{g}");
    }
    "?".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (heads, hd, cols) = (3, 8, 2);
        let rows = heads * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut permuted = vec![0.0; hf.len()];
        for h in 0..heads {
            for a in 0..2 {
                for b in 0..hd / 2 {
                    // source index (h, a, b) -> destination (h, b, a)
                    let src = h * hd + a * (hd / 2) + b;
                    let dst = h * hd + b * 2 + a;
                    for c in 0..cols {
                        permuted[dst * cols + c] = hf[src * cols + c];
                    }
                }
            }
        }
        let back = unpermute_rows(HostTensor::f32(vec![rows, cols], permuted), heads);
        assert_eq!(back.into_f32(), hf);
    }

    #[test]
    fn names_map_both_ways() {
        let (hf, perm) = hf_name("blk.12.attn_k.weight").unwrap();
        assert_eq!(hf, "model.layers.12.self_attn.k_proj.weight");
        assert_eq!(perm, Some('k'));
        assert_eq!(gguf_name_hint(&hf), "blk.12.attn_k.weight");
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}
