//! The tokenizer of a model as one `tokenizers::Tokenizer`, whether it came from a
//! `tokenizer.json` or from GGUF metadata (tokens + merges + pre-tokenizer name), so both
//! formats encode identically and `fdpp convert` can write the GGUF one out as JSON.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::ChatTemplate;
use super::gguf::{GgufFile, GgufValue};
use crate::error::{Error, Result};

/// Tokens that end an assistant turn in common chat formats, besides the model's EOS.
const END_OF_TURN: [&str; 6] = ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>"];

/// llama.cpp's pre-tokenizer regexes, by the name GGUF stores in `tokenizer.ggml.pre`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SUPPORTED_PRE: &str = "gpt2 (gpt-2), default, smollm, llama-bpe (llama3)";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    add_bos: bool,
    stop_ids: Vec<u32>,
}

fn tok_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.display();
        let model = g.require("tokenizer.ggml.model", g.get_str("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "{path}: tokenizer model `{model}` is not supported (fdpp reads byte-level BPE: `gpt2`)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = g.require(key, g.get_array(key))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::Malformed { path: g.path.clone(), what: format!("metadata `{key}`"), reason: "expected an array of strings".into() })
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match g.get_array("tokenizer.ggml.token_type")? {
            Some(a) => a.iter().map(|v| match v {
                GgufValue::I32(x) => *x as i64,
                other => other.as_u64().map_or(1, |x| x as i64),
            }).collect(),
            None => vec![1; tokens.len()],
        };
        let id = |key: &str| -> Result<Option<u32>> {
            Ok(g.get_u64(key)?.map(|v| v as u32).filter(|&v| (v as usize) < tokens.len()))
        };

        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| Error::Malformed {
                    path: g.path.clone(),
                    what: "metadata `tokenizer.ggml.merges`".into(),
                    reason: format!("merge {m:?} is not two tokens separated by a space"),
                })
            })
            .collect::<Result<_>>()?;
        let pre = g.get_str("tokenizer.ggml.pre")?.unwrap_or("default").to_string();
        // Llama 3 takes a whole pre-token from the vocabulary before applying merges.
        let ignore_merges = matches!(pre.as_str(), "llama-bpe" | "llama3");
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("{path}: building BPE"), e))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "gpt2" | "gpt-2" | "default" => byte_level.into(),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama-bpe" | "llama3" => {
                let split = Split::new(SplitPattern::Regex(LLAMA3_REGEX.into()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(|e| tok_err("llama3 pre-tokenizer regex", e))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "{path}: pre-tokenizer `{other}` is not supported (supported: {SUPPORTED_PRE})"
                )));
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Control tokens are matched whole in text (chat templates write them out).
        let typed = |want: i64| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(types.iter().chain(std::iter::repeat(&1)))
                .filter(|(_, t)| **t == want)
                .map(|(tok, _)| AddedToken::from(tok.clone(), want == 3))
                .collect()
        };
        inner.add_special_tokens(typed(3)).map_err(|e| tok_err(format!("{path}: control tokens"), e))?;
        inner.add_tokens(typed(4)).map_err(|e| tok_err(format!("{path}: user-defined tokens"), e))?;

        let named = |i: Option<u32>| i.map(|i| (i, tokens[i as usize].clone()));
        let bos = named(id("tokenizer.ggml.bos_token_id")?);
        let eos = named(id("tokenizer.ggml.eos_token_id")?);
        let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let mut t = Tokenizer { inner, bos, eos, add_bos, stop_ids: vec![] };
        t.set_bos_processor()?;
        t.stop_ids = t.find_stop_ids(&[]);
        Ok(t)
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| tok_err(file.display(), e))?;
        let read = |name: &str| -> Result<Option<Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let text = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            serde_json::from_slice(&text)
                .map(Some)
                .map_err(|e| Error::Malformed { path: p, what: "JSON".into(), reason: e.to_string() })
        };
        let config = read("tokenizer_config.json")?.unwrap_or(Value::Null);
        let generation = read("generation_config.json")?.unwrap_or(Value::Null);
        // A token is written either as a string or as {"content": "..."}.
        let token = |v: &Value| -> Option<(u32, String)> {
            let s = v.as_str().or_else(|| v["content"].as_str())?;
            Some((inner.token_to_id(s)?, s.to_string()))
        };
        let by_id = |v: &Value| -> Option<(u32, String)> {
            let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())? as u32;
            Some((id, inner.id_to_token(id)?))
        };
        let bos = token(&config["bos_token"]).or_else(|| by_id(&generation["bos_token_id"]));
        let eos = token(&config["eos_token"]).or_else(|| by_id(&generation["eos_token_id"]));
        let add_bos = config["add_bos_token"].as_bool().unwrap_or(false);
        let extra: Vec<u32> = match &generation["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Value::Array(a) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
            _ => vec![],
        };
        let mut t = Tokenizer { inner, bos, eos, add_bos, stop_ids: vec![] };
        t.stop_ids = t.find_stop_ids(&extra);
        Ok(t)
    }

    /// `add_bos` models get BOS from a post-processor, as Hugging Face tokenizers do, so the
    /// behaviour survives `write_hf`.
    fn set_bos_processor(&mut self) -> Result<()> {
        let (true, Some((id, bos))) = (self.add_bos, self.bos.clone()) else { return Ok(()) };
        let processor = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
            .map_err(|e| tok_err("BOS template", e))?
            .special_tokens(vec![(bos.clone(), id)])
            .build()
            .map_err(|e| tok_err("BOS template", e))?;
        self.inner.with_post_processor(Some(processor));
        Ok(())
    }

    fn find_stop_ids(&self, extra: &[u32]) -> Vec<u32> {
        let special: HashMap<String, bool> =
            self.inner.get_added_tokens_decoder().values().map(|t| (t.content.clone(), t.special)).collect();
        let mut ids: Vec<u32> = extra.to_vec();
        ids.extend(self.eos.as_ref().map(|e| e.0));
        for name in END_OF_TURN {
            if special.get(name) == Some(&true) {
                ids.extend(self.inner.token_to_id(name));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| tok_err("encoding", e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| tok_err("decoding", e))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.0)
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|e| e.0)
    }
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|b| b.1.as_str())
    }
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|e| e.1.as_str())
    }
    /// Ids that end generation: EOS and the end-of-turn tokens the vocabulary has.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and `generation_config.json`.
    pub fn write_hf(&self, dir: &Path, chat_template: Option<&ChatTemplate>) -> Result<()> {
        let file = dir.join("tokenizer.json");
        self.inner.save(&file, true).map_err(|e| tok_err(file.display(), e))?;
        let config = json!({
            "bos_token": self.bos_token(),
            "eos_token": self.eos_token(),
            "add_bos_token": self.add_bos,
            "clean_up_tokenization_spaces": false,
            "chat_template": chat_template.map(|c| c.source()),
        });
        let generation = json!({ "bos_token_id": self.bos_id(), "eos_token_id": self.stop_ids });
        for (name, value) in [("tokenizer_config.json", config), ("generation_config.json", generation)] {
            let p = dir.join(name);
            let text = serde_json::to_string_pretty(&value).expect("JSON values serialise");
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> std::path::PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/tokenizer/")).join(name)
    }

    /// llama.cpp's vectors: cases in `.inp` separated by `__ggml_vocab_test__` lines, one
    /// line of ids per case in `.out`.
    fn check_vectors(vocab: &str) {
        let g = GgufFile::open(data(&format!("ggml-vocab-{vocab}.gguf"))).unwrap();
        let t = Tokenizer::from_gguf(&g).unwrap();
        let inp = std::fs::read_to_string(data(&format!("ggml-vocab-{vocab}.gguf.inp"))).unwrap();
        let out = std::fs::read_to_string(data(&format!("ggml-vocab-{vocab}.gguf.out"))).unwrap();
        let cases: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
        let expected: Vec<Vec<u32>> =
            out.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
        let mut failures = vec![];
        let mut checked = 0;
        for (case, want) in cases.iter().zip(&expected) {
            let got = t.encode(case, false).unwrap();
            if &got != want {
                failures.push(format!("{case:?}: got {got:?}, want {want:?}"));
            } else if t.decode(&got, false).unwrap() != *case {
                failures.push(format!("{case:?}: does not decode back"));
            }
            checked += 1;
        }
        assert!(checked > 10 && checked + 1 >= cases.len(), "{checked} of {} cases", cases.len());
        assert!(failures.is_empty(), "{vocab}: {} of {checked} cases fail:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn gpt2_vectors_from_llama_cpp() {
        check_vectors("gpt-2");
    }

    #[test]
    fn llama3_vectors_from_llama_cpp() {
        check_vectors("llama-bpe");
    }
}
