//! `config.json` of the Hugging Face layout, as transformers 4 and 5 write it, for the
//! Llama-family architectures fdpp runs (`llama`, `qwen2`, `mistral`).
//!
//! Every field is accounted for: read (and checked), known not to change the arithmetic of
//! inference (training, generation defaults, bookkeeping), or an error naming it. A
//! missing field takes transformers' documented default for the architecture, and a note
//! says so. RoPE settings come from `rope_parameters` (transformers 5) or `rope_theta` /
//! `rope_scaling` (transformers 4).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value, json};

use super::ModelConfig;
use super::config::{Biases, MAX_HEADS, RopeScaling};
use crate::error::{Error, Result};

/// Architectures whose arithmetic fdpp implements.
pub const ARCHITECTURES: &str = "llama, qwen2, mistral";

/// transformers' defaults for a missing field, per architecture (transformers 5.17's
/// configuration classes).
struct Defaults {
    vocab_size: u64,
    hidden_size: u64,
    intermediate_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    max_position_embeddings: u64,
    sliding_window: Option<u64>,
}

fn defaults(model_type: &str) -> Option<Defaults> {
    Some(match model_type {
        "llama" => Defaults {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 2048,
            sliding_window: None,
        },
        "qwen2" => Defaults {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 32768,
            sliding_window: Some(4096),
        },
        "mistral" => Defaults {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 4096 * 32,
            sliding_window: Some(4096),
        },
        _ => return None,
    })
}

/// Fields that do not change what a forward pass computes: training settings, generation
/// defaults (fdpp takes sampling settings from the command line), bookkeeping, token ids
/// (the tokenizer files are read for those).
const INERT: &[&str] = &[
    "_name_or_path",
    "_model_name_or_path",
    "unk_token_id",
    "architectures",
    "transformers_version",
    "transformers.js_config",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "use_cache",
    "attention_dropout",
    "pretraining_tp",
    "is_llama_config",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "pruned_heads",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "cross_attention_hidden_size",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "problem_type",
    "id2label",
    "label2id",
    "finetuning_task",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// Reads one config, remembering which fields it used.
struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
    used: BTreeSet<String>,
    notes: Vec<String>,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: String) -> Error {
        Error::Malformed { path: self.path.to_path_buf(), what: "config".into(), reason }
    }

    fn unsupported(&self, reason: String) -> Error {
        Error::UnsupportedModel { path: self.path.to_path_buf(), reason }
    }

    /// The field's value; `None` when absent or null.
    fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_string());
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn uint(&mut self, key: &str, default: Option<u64>) -> Result<u64> {
        match self.get(key) {
            Some(v) => v.as_u64().ok_or_else(|| self.err(format!("`{key}` is {v}, not a non-negative integer"))),
            None => {
                let d = default.ok_or_else(|| self.err(format!("`{key}` is missing")))?;
                self.notes.push(format!("config.json has no `{key}`: transformers' default {d} taken"));
                Ok(d)
            }
        }
    }

    fn float(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            Some(v) => v.as_f64().ok_or_else(|| self.err(format!("`{key}` is {v}, not a number"))),
            None => {
                self.notes.push(format!("config.json has no `{key}`: transformers' default {default} taken"));
                Ok(default)
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            Some(v) => v.as_bool().ok_or_else(|| self.err(format!("`{key}` is {v}, not true or false"))),
            None => Ok(default),
        }
    }

    /// A field that must be absent or have the one value fdpp implements.
    fn must_be(&mut self, key: &str, allowed: &[Value], why: &str) -> Result<()> {
        match self.get(key) {
            Some(v) if !allowed.contains(v) => Err(self.unsupported(format!("`{key}` = {v}: {why}"))),
            _ => Ok(()),
        }
    }
}

pub fn read(path: &Path) -> Result<ModelConfig> {
    from_json(path, &super::read_small(path)?)
}

/// The config of `config.json`'s bytes; `path` only names the file in errors.
pub fn from_json(path: &Path, text: &[u8]) -> Result<ModelConfig> {
    let v: Value = serde_json::from_slice(text).map_err(|e| Error::Malformed {
        path: path.to_path_buf(),
        what: "JSON".into(),
        reason: e.to_string(),
    })?;
    let Some(obj) = v.as_object() else {
        return Err(Error::Malformed { path: path.to_path_buf(), what: "config".into(), reason: "not a JSON object".into() });
    };
    parse(path, obj)
}

fn parse(path: &Path, obj: &Map<String, Value>) -> Result<ModelConfig> {
    let mut r = Reader { path, obj, used: BTreeSet::new(), notes: vec![] };
    let model_type = r.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(d) = defaults(&model_type) else {
        return Err(r.unsupported(format!("model_type `{model_type}` (fdpp runs: {ARCHITECTURES})")));
    };
    if r.obj.contains_key("quantization_config") {
        return Err(r.unsupported("`quantization_config`: quantized checkpoints are not supported; use f32, f16 or bf16 weights".into()));
    }
    let hidden_size = r.uint("hidden_size", Some(d.hidden_size))? as usize;
    let num_heads = r.uint("num_attention_heads", Some(d.num_attention_heads))? as usize;
    let num_kv_heads = match r.get("num_key_value_heads") {
        Some(v) => v.as_u64().ok_or_else(|| r.err(format!("`num_key_value_heads` is {v}")))? as usize,
        None => num_heads,
    };
    let head_dim = match r.get("head_dim") {
        Some(v) => v.as_u64().ok_or_else(|| r.err(format!("`head_dim` is {v}")))? as usize,
        // (A head count beyond the limit is reported as such by the validation.)
        None if (1..=MAX_HEADS).contains(&num_heads) && !hidden_size.is_multiple_of(num_heads) => {
            return Err(r.err(format!(
                "`hidden_size` ({hidden_size}) does not divide into `num_attention_heads` ({num_heads}) heads and `head_dim` is absent"
            )));
        }
        None => hidden_size / num_heads.max(1),
    };
    let max_position = r.uint("max_position_embeddings", Some(d.max_position_embeddings))? as usize;
    r.must_be("hidden_act", &[json!("silu")], "fdpp implements SwiGLU with SiLU")?;
    r.must_be("rope_interleaved", &[json!(false)], "fdpp implements the split-halves rotary layout")?;
    let biases = match model_type.as_str() {
        "llama" => {
            let attention = r.boolean("attention_bias", false)?;
            Biases { qkv: attention, o: attention, mlp: r.boolean("mlp_bias", false)? }
        }
        // Qwen2's q, k and v projections always have a bias, its others never.
        "qwen2" => Biases { qkv: true, o: false, mlp: false },
        _ => Biases::default(),
    };
    let (rope_theta, rope_scaling) = rope(&mut r, max_position)?;
    let window = sliding_window(&mut r, &model_type, d.sliding_window)?;
    let mut max_context = max_position;
    if let Some(w) = window.filter(|&w| (w as usize) < max_position) {
        max_context = w as usize;
        r.notes.push(format!(
            "sliding-window attention ({w} positions): the context is limited to the window, where attention sees every position, as fdpp computes it"
        ));
    }
    let config = ModelConfig {
        architecture: model_type.clone(),
        vocab_size: r.uint("vocab_size", Some(d.vocab_size))? as usize,
        hidden_size,
        intermediate_size: r.uint("intermediate_size", Some(d.intermediate_size))? as usize,
        num_layers: r.uint("num_hidden_layers", Some(d.num_hidden_layers))? as usize,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_theta,
        rms_norm_eps: r.float("rms_norm_eps", 1e-6)? as f32,
        max_context,
        tie_word_embeddings: r.boolean("tie_word_embeddings", false)?,
        rope_scaling,
        biases,
        notes: vec![],
    };
    let unknown: Vec<&String> = obj.keys().filter(|k| !r.used.contains(*k) && !INERT.contains(&k.as_str())).collect();
    if let Some(k) = unknown.first() {
        return Err(r.unsupported(format!(
            "field `{k}` = {} is not understood by fdpp and may change the model's arithmetic (fields fdpp reads are listed in the README)",
            obj[*k]
        )));
    }
    config.validate(path, &|field| key(field).to_string())?;
    Ok(ModelConfig { notes: r.notes, ..config })
}

/// The config.json key a [`ModelConfig`] field is read from.
pub fn key(field: &str) -> &str {
    match field {
        "num_layers" => "num_hidden_layers",
        "num_heads" => "num_attention_heads",
        "num_kv_heads" => "num_key_value_heads",
        "max_context" => "max_position_embeddings",
        other => other,
    }
}

/// The sliding window, if the architecture and its settings use one.
fn sliding_window(r: &mut Reader, model_type: &str, default: Option<u64>) -> Result<Option<u64>> {
    let window = |r: &mut Reader| -> Result<Option<u64>> {
        match r.get("sliding_window") {
            Some(v) => v.as_u64().map(Some).ok_or_else(|| r.err(format!("`sliding_window` is {v}"))),
            None if r.obj.contains_key("sliding_window") => Ok(None),
            None => Ok(default),
        }
    };
    Ok(match model_type {
        "mistral" => window(r)?,
        "qwen2" => {
            let used = r.boolean("use_sliding_window", false)?;
            r.get("max_window_layers");
            let sliding_layers = match r.get("layer_types") {
                Some(Value::Array(a)) => a.iter().any(|t| t.as_str() == Some("sliding_attention")),
                Some(v) => return Err(r.err(format!("`layer_types` is {v}"))),
                None => used,
            };
            let w = window(r)?;
            if used || sliding_layers { w } else { None }
        }
        _ => None,
    })
}

/// (theta, scaling) from `rope_parameters` (transformers 5) or `rope_theta` +
/// `rope_scaling` (transformers 4).
fn rope(r: &mut Reader, max_position: usize) -> Result<(f32, RopeScaling)> {
    let path = r.path;
    let malformed = |reason: String| Error::Malformed { path: path.to_path_buf(), what: "config".into(), reason };
    let unsupported = |reason: String| Error::UnsupportedModel { path: path.to_path_buf(), reason };
    let top_theta = r.get("rope_theta").map(|v| v.as_f64().ok_or_else(|| malformed(format!("`rope_theta` is {v}")))).transpose()?;
    // transformers reads a top-level original_max_position_embeddings first (Phi-3 style).
    let top_original = r
        .get("original_max_position_embeddings")
        .map(|v| v.as_u64().ok_or_else(|| malformed(format!("`original_max_position_embeddings` is {v}"))))
        .transpose()?;
    let (key, params) = match (r.get("rope_parameters"), r.get("rope_scaling")) {
        (Some(p), _) => ("rope_parameters", p),
        (None, Some(p)) => ("rope_scaling", p),
        (None, None) => ("rope_parameters", &Value::Null),
    };
    let empty = Map::new();
    let p = match params {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => return Err(malformed(format!("`{key}` is {other}, not an object"))),
    };
    const KNOWN: &[&str] = &[
        "rope_type",
        "type",
        "rope_theta",
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "attention_factor",
        "truncate",
        "partial_rotary_factor",
    ];
    if let Some(k) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(unsupported(format!("`{key}.{k}` is not understood by fdpp and may change the rotary embedding")));
    }
    let num = |name: &str| -> Result<Option<f64>> {
        match p.get(name).filter(|v| !v.is_null()) {
            Some(v) => v.as_f64().map(Some).ok_or_else(|| malformed(format!("`{key}.{name}` is {v}, not a number"))),
            None => Ok(None),
        }
    };
    let need = |name: &str| -> Result<f64> { num(name)?.ok_or_else(|| malformed(format!("`{key}.{name}` is missing"))) };
    let theta = match (num("rope_theta")?, top_theta) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            r.notes.push("config.json has no `rope_theta`: transformers' default 10000 taken".into());
            10_000.0
        }
    };
    if num("partial_rotary_factor")?.is_some_and(|f| f != 1.0) {
        return Err(unsupported(format!("`{key}.partial_rotary_factor` < 1 (rotary embedding of part of a head) is not implemented")));
    }
    let rope_type = match p.get("rope_type").or_else(|| p.get("type")).filter(|v| !v.is_null()) {
        None => "default",
        Some(v) => v.as_str().ok_or_else(|| malformed(format!("`{key}.rope_type` is {v}, not a string")))?,
    };
    let original = match top_original {
        Some(o) => o as usize,
        None => num("original_max_position_embeddings")?.map_or(max_position, |o| o as usize),
    };
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "dynamic" => {
            need("factor")?;
            r.notes.push(format!(
                "dynamic NTK RoPE scaling changes the frequencies only beyond max_position_embeddings ({max_position}), which fdpp does not exceed: the default frequencies apply"
            ));
            RopeScaling::None
        }
        "linear" => RopeScaling::Linear { factor: need("factor")? as f32 },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")? as f32,
            low_freq_factor: need("low_freq_factor")? as f32,
            high_freq_factor: need("high_freq_factor")? as f32,
            original_max_position_embeddings: original,
        },
        "yarn" => {
            // As transformers' `_compute_yarn_parameters`.
            let factor = num("factor")?.unwrap_or(max_position as f64 / original as f64);
            let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attention_factor = match (num("attention_factor")?, num("mscale")?, num("mscale_all_dim")?) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(a)) if m != 0.0 && a != 0.0 => get_mscale(factor, m) / get_mscale(factor, a),
                _ => get_mscale(factor, 1.0),
            };
            RopeScaling::Yarn {
                factor: factor as f32,
                original_max_position_embeddings: original,
                beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0) as f32,
                beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0) as f32,
                truncate: match p.get("truncate").filter(|v| !v.is_null()) {
                    None => true,
                    Some(v) => v.as_bool().ok_or_else(|| malformed(format!("`{key}.truncate` is {v}, not true or false")))?,
                },
                attention_factor: attention_factor as f32,
            }
        }
        other => {
            return Err(unsupported(format!(
                "`{key}.rope_type` = `{other}` is not implemented (fdpp implements default, linear, dynamic, llama3, yarn)"
            )));
        }
    };
    Ok((theta as f32, scaling))
}

/// `config.json` for `c`, in transformers 5's style (`None` for per-frequency RoPE factors,
/// which it has no field for).
pub fn to_json(c: &ModelConfig) -> Option<Value> {
    let architecture = match c.architecture.as_str() {
        "qwen2" => "Qwen2ForCausalLM",
        "mistral" => "MistralForCausalLM",
        _ => "LlamaForCausalLM",
    };
    let mut rope = json!({ "rope_type": "default", "rope_theta": c.rope_theta });
    match &c.rope_scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => rope = json!({ "rope_type": "linear", "rope_theta": c.rope_theta, "factor": factor }),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            rope = json!({
                "rope_type": "llama3", "rope_theta": c.rope_theta, "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings,
            })
        }
        RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, truncate, attention_factor } => {
            rope = json!({
                "rope_type": "yarn", "rope_theta": c.rope_theta, "factor": factor, "original_max_position_embeddings": original_max_position_embeddings,
                "beta_fast": beta_fast, "beta_slow": beta_slow, "truncate": truncate, "attention_factor": attention_factor,
            })
        }
        RopeScaling::FreqFactors { .. } => return None,
    }
    let mut v = json!({
        "architectures": [architecture],
        "model_type": c.architecture,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rope_parameters": rope,
        "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_context,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "dtype": "float32",
    });
    match c.architecture.as_str() {
        "llama" => {
            v["attention_bias"] = json!(c.biases.qkv);
            v["mlp_bias"] = json!(c.biases.mlp);
        }
        // The context is already capped to any window (no window: Mistral's default is 4096).
        "mistral" => v["sliding_window"] = Value::Null,
        _ => {}
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(v: Value) -> Result<ModelConfig> {
        parse(Path::new("/x/config.json"), v.as_object().unwrap())
    }

    /// SmolLM2-135M-Instruct's config.json as published (transformers 4.42).
    fn smollm2_v4() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 1,
            "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
            "intermediate_size": 1536, "is_llama_config": true, "max_position_embeddings": 8192, "mlp_bias": false,
            "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
            "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": false, "rope_scaling": null,
            "rope_theta": 100000, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
            "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
            "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152
        })
    }

    #[test]
    fn transformers_4_and_5_styles_give_the_same_config() {
        let v4 = parse_json(smollm2_v4()).unwrap();
        assert_eq!((v4.rope_theta, v4.head_dim, v4.max_context, v4.tie_word_embeddings), (100000.0, 64, 8192, true));
        assert_eq!(v4.rope_scaling, RopeScaling::None);
        assert!(v4.notes.is_empty(), "{:?}", v4.notes);
        // transformers 5 moves rope_theta into rope_parameters and writes dtype.
        let mut v5 = smollm2_v4();
        let o = v5.as_object_mut().unwrap();
        o.remove("rope_theta");
        o.remove("rope_scaling");
        o.remove("torch_dtype");
        o.insert("rope_parameters".into(), json!({"rope_theta": 100000.0, "rope_type": "default"}));
        o.insert("dtype".into(), json!("float32"));
        o.insert("transformers_version".into(), json!("5.17.0"));
        assert_eq!(parse_json(v5).unwrap(), v4);
        // The bug this replaces: rope_parameters ignored, theta silently 10000.
        let written = to_json(&v4).unwrap();
        assert_eq!(written["rope_parameters"]["rope_theta"], json!(100000.0));
        assert_eq!(parse_json(written).unwrap().rope_theta, 100000.0);
    }

    #[test]
    fn unknown_fields_and_unsupported_values_are_errors_naming_them() {
        let with = |k: &str, v: Value| {
            let mut c = smollm2_v4();
            c.as_object_mut().unwrap().insert(k.into(), v);
            parse_json(c).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(with("qk_layernorm", json!(true)).contains("`qk_layernorm`"));
        assert!(with("hidden_act", json!("gelu")).contains("`hidden_act`"));
        assert!(with("rope_interleaved", json!(true)).contains("`rope_interleaved`"));
        assert!(with("rope_scaling", json!({"rope_type": "longrope", "factor": 2.0})).contains("longrope"));
        assert!(with("rope_scaling", json!({"rope_type": "linear", "factor": 2.0, "foo": 1})).contains("`rope_scaling.foo`"));
        assert!(with("rope_scaling", json!({"type": "linear"})).contains("`rope_scaling.factor` is missing"));
        assert!(with("quantization_config", json!({"bits": 4})).contains("quantization_config"));
        assert!(with("model_type", json!("gemma")).contains("`gemma`"));
        assert!(with("rope_parameters", json!({"rope_type": "default", "partial_rotary_factor": 0.5})).contains("partial_rotary_factor"));
        // Training and generation fields are fine.
        assert_eq!(with("temperature", json!(0.7)), "");
    }

    #[test]
    fn wrong_types_and_values_beyond_the_limits_name_their_key() {
        let with = |k: &str, v: Value| {
            let mut c = smollm2_v4();
            c.as_object_mut().unwrap().insert(k.into(), v);
            parse_json(c).err().map(|e| e.to_string()).unwrap_or_default()
        };
        // Before, these became transformers' defaults (2048, 10000, false) in silence.
        assert!(with("max_position_embeddings", json!(-5)).contains("`max_position_embeddings` is -5"));
        assert!(with("rope_theta", json!("x")).contains("`rope_theta` is \"x\""));
        assert!(with("tie_word_embeddings", json!("yes")).contains("`tie_word_embeddings` is \"yes\""));
        assert!(with("rope_scaling", json!({"rope_type": 5, "factor": 2.0})).contains("`rope_scaling.rope_type` is 5"));
        assert!(with("rope_scaling", json!({"rope_type": "yarn", "factor": 2.0, "truncate": "no"})).contains("`rope_scaling.truncate`"));
        assert!(with("num_attention_heads", json!(1e12)).contains("`num_attention_heads`"));
        let limits = [
            ("num_hidden_layers", 1_000_000_000u64, 1024u64),
            // (Nine heads: a multiple of 9, so the head size derives.)
            ("hidden_size", 9 << 37, 1 << 17),
            ("intermediate_size", 1_000_000_000_000, 1 << 19),
            ("head_dim", 1_000_000_000_000, 1024),
            ("num_key_value_heads", 1 << 40, 1024),
            ("vocab_size", u64::MAX, 1 << 20),
            ("max_position_embeddings", 1 << 40, 1 << 24),
        ];
        for (k, v, limit) in limits {
            let e = with(k, json!(v));
            assert!(e.contains(&format!("`{k}` is {v}, beyond fdpp's limit of {limit}")), "{k}: {e}");
        }
        for (k, v) in [("rms_norm_eps", json!(0.0)), ("rms_norm_eps", json!(-1e-5)), ("rope_theta", json!(0))] {
            let e = with(k, v);
            assert!(e.contains(&format!("`{k}`")) && e.contains("finite and above 0"), "{k}: {e}");
        }
        let e = with("rope_scaling", json!({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 0}));
        assert!(e.contains("original context length 0") || e.contains("finite and above 0"), "{e}");
    }

    #[test]
    fn missing_fields_take_transformers_defaults_and_say_so() {
        let c = parse_json(json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 96,
            "num_hidden_layers": 2, "vocab_size": 300}))
        .unwrap();
        assert_eq!((c.rms_norm_eps, c.rope_theta, c.max_context, c.num_kv_heads, c.head_dim), (1e-6, 10000.0, 2048, 4, 16));
        for field in ["rms_norm_eps", "rope_theta", "max_position_embeddings"] {
            assert!(c.notes.iter().any(|n| n.contains(field)), "{field}: {:?}", c.notes);
        }
    }

    #[test]
    fn rope_types_of_both_generations() {
        let with_rope = |key: &str, rope: Value| {
            let mut c = smollm2_v4();
            let o = c.as_object_mut().unwrap();
            o.remove("rope_scaling");
            o.insert(key.into(), rope);
            parse_json(c).unwrap()
        };
        let llama3 = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let want = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        assert_eq!(with_rope("rope_scaling", llama3.clone()).rope_scaling, want);
        let mut v5 = llama3;
        v5["rope_theta"] = json!(500000.0);
        let c = with_rope("rope_parameters", v5);
        assert_eq!((c.rope_scaling, c.rope_theta), (want, 500000.0));
        assert_eq!(with_rope("rope_scaling", json!({"type": "linear", "factor": 2.0})).rope_scaling, RopeScaling::Linear { factor: 2.0 });
        let dynamic = with_rope("rope_scaling", json!({"type": "dynamic", "factor": 2.0}));
        assert_eq!(dynamic.rope_scaling, RopeScaling::None);
        assert!(dynamic.notes.iter().any(|n| n.contains("dynamic")));
        // YaRN's attention factor from factor 4: 0.1 ln 4 + 1.
        let RopeScaling::Yarn { attention_factor, original_max_position_embeddings, beta_fast, .. } =
            with_rope("rope_scaling", json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048})).rope_scaling
        else {
            panic!()
        };
        assert!((attention_factor - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
        assert_eq!((original_max_position_embeddings, beta_fast), (2048, 32.0));
    }

    #[test]
    fn qwen2_has_qkv_biases_and_its_sliding_window_caps_the_context() {
        let base = json!({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 300, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 2});
        let c = parse_json(base.clone()).unwrap();
        assert_eq!(c.biases, Biases { qkv: true, o: false, mlp: false });
        assert_eq!(c.max_context, 32768);
        let mut sliding = base;
        sliding["use_sliding_window"] = json!(true);
        let c = parse_json(sliding).unwrap();
        assert_eq!(c.max_context, 4096);
        assert!(c.notes.iter().any(|n| n.contains("sliding-window")));
        // Mistral: the window caps the context; a null window leaves it; attention_bias is
        // not a Mistral field, so it is refused by name.
        let mistral = json!({"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 96, "num_hidden_layers": 2, "vocab_size": 300, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096});
        assert_eq!(parse_json(mistral.clone()).unwrap().max_context, 4096);
        let mut unwindowed = mistral.clone();
        unwindowed["sliding_window"] = Value::Null;
        assert_eq!(parse_json(unwindowed).unwrap().max_context, 32768);
        // Written back, the capped context stays what it was.
        assert_eq!(parse_json(to_json(&parse_json(mistral.clone()).unwrap()).unwrap()).unwrap().max_context, 4096);
        let mut biased = mistral;
        biased["attention_bias"] = json!(true);
        assert!(parse_json(biased).unwrap_err().to_string().contains("`attention_bias`"));
        // Llama's attention_bias puts a bias on q, k, v and o.
        let mut llama = smollm2_v4();
        llama["attention_bias"] = json!(true);
        assert_eq!(parse_json(llama).unwrap().biases, Biases { qkv: true, o: true, mlp: false });
    }
}
