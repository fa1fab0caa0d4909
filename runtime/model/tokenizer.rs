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
const LLAMA3_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SUPPORTED_PRE: &str = "gpt2 (gpt-2), default, smollm, llama-bpe (llama3)";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
    pad: Option<(u32, String)>,
    add_bos: bool,
    add_eos: bool,
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
            arr.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(|| Error::Malformed {
                path: g.path.clone(),
                what: format!("metadata `{key}`"),
                reason: "expected an array of strings".into(),
            })
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match g.get_array("tokenizer.ggml.token_type")? {
            Some(a) => a
                .iter()
                .map(|v| match v {
                    GgufValue::I32(x) => *x as i64,
                    other => other.as_u64().map_or(1, |x| x as i64),
                })
                .collect(),
            None => vec![1; tokens.len()],
        };
        let id = |key: &str| -> Result<Option<u32>> { Ok(g.get_u64(key)?.map(|v| v as u32).filter(|&v| (v as usize) < tokens.len())) };

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
                return Err(Error::Tokenizer(format!("{path}: pre-tokenizer `{other}` is not supported (supported: {SUPPORTED_PRE})")));
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
        let pad = named(id("tokenizer.ggml.padding_token_id")?);
        // As llama.cpp does for BPE vocabularies: BOS/EOS only where the file asks for them.
        let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let mut t = Tokenizer { inner, bos, eos, pad, add_bos, add_eos, stop_ids: vec![] };
        t.set_post_processor()?;
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
            serde_json::from_slice(&text).map(Some).map_err(|e| Error::Malformed { path: p, what: "JSON".into(), reason: e.to_string() })
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
        let pad = token(&config["pad_token"]).or_else(|| by_id(&generation["pad_token_id"]));
        // tokenizer.json's own post-processor adds BOS/EOS; these only describe it.
        let add_bos = config["add_bos_token"].as_bool().unwrap_or(false);
        let add_eos = config["add_eos_token"].as_bool().unwrap_or(false);
        let extra: Vec<u32> = match &generation["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Value::Array(a) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
            _ => vec![],
        };
        let mut t = Tokenizer { inner, bos, eos, pad, add_bos, add_eos, stop_ids: vec![] };
        t.stop_ids = t.find_stop_ids(&extra);
        Ok(t)
    }

    /// `add_bos` / `add_eos` models get BOS / EOS from a post-processor, as Hugging Face
    /// tokenizers do, so the behaviour survives `write_hf`.
    fn set_post_processor(&mut self) -> Result<()> {
        let bos = self.bos.clone().filter(|_| self.add_bos);
        let eos = self.eos.clone().filter(|_| self.add_eos);
        if bos.is_none() && eos.is_none() {
            return Ok(());
        }
        let before = bos.as_ref().map(|b| format!("{} ", b.1)).unwrap_or_default();
        let after = eos.as_ref().map(|e| format!(" {}", e.1)).unwrap_or_default();
        let specials: Vec<(String, u32)> = bos.iter().chain(eos.iter()).map(|(id, s)| (s.clone(), *id)).collect();
        let processor = TemplateProcessing::builder()
            .try_single(format!("{before}$A{after}"))
            .and_then(|b| b.try_pair(format!("{before}$A{after} {before}$B:1{after}")))
            .map_err(|e| tok_err("BOS/EOS template", e))?
            .special_tokens(specials)
            .build()
            .map_err(|e| tok_err("BOS/EOS template", e))?;
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
    /// The padding token (GGUF `tokenizer.ggml.padding_token_id`, HF `pad_token`), if any.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad.as_ref().map(|p| p.0)
    }
    /// Ids that end generation: EOS and the end-of-turn tokens the vocabulary has.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }
    /// Whether `encode(text, true)` puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether `encode(text, true)` puts EOS at the end.
    pub fn add_eos(&self) -> bool {
        self.add_eos
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
            "pad_token": self.pad.as_ref().map(|p| p.1.as_str()),
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
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
    use std::path::PathBuf;

    use super::*;
    use crate::model::ChatMessage;
    use crate::model::gguf::GgufWriter;

    fn data(name: &str) -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/tokenizer/")).join(name)
    }

    /// A fresh, empty folder under the system temp folder, unique to this call.
    pub(crate) fn tmp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fdpp-tok-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// llama.cpp's vectors: in `.inp` every case is followed by a line `__ggml_vocab_test__`
    /// (so a case is the text between "\n__ggml_vocab_test__\n" separators, leading and
    /// trailing newlines included); `.out` has one line of ids per case.
    fn check_vectors(vocab: &str) {
        let g = GgufFile::open(data(&format!("ggml-vocab-{vocab}.gguf"))).unwrap();
        let t = Tokenizer::from_gguf(&g).unwrap();
        let inp = std::fs::read_to_string(data(&format!("ggml-vocab-{vocab}.gguf.inp"))).unwrap();
        let out = std::fs::read_to_string(data(&format!("ggml-vocab-{vocab}.gguf.out"))).unwrap();
        let sep = "\n__ggml_vocab_test__\n";
        let body = inp.strip_suffix(sep).expect("the .inp file ends with a separator line");
        let cases: Vec<&str> = body.split(sep).collect();
        let expected: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()).collect();
        assert_eq!(cases.len(), expected.len(), "{vocab}: .inp and .out disagree on the number of cases");
        assert!(cases.len() > 40, "{vocab}: only {} cases", cases.len());
        let mut failures = vec![];
        for (case, want) in cases.iter().zip(&expected) {
            let got = t.encode(case, false).unwrap();
            if &got != want {
                failures.push(format!("{case:?}: got {got:?}, want {want:?}"));
            }
            let back = t.decode(&got, false).unwrap();
            if back != *case {
                failures.push(format!("{case:?}: decodes back as {back:?}"));
            }
        }
        eprintln!("{vocab}: {} of {} cases encode as llama.cpp does and decode back", cases.len() - failures.len(), cases.len());
        assert!(failures.is_empty(), "{vocab}: {} of {} checks fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
    }

    #[test]
    fn gpt2_vectors_from_llama_cpp() {
        check_vectors("gpt-2");
    }

    #[test]
    fn llama3_vectors_from_llama_cpp() {
        check_vectors("llama-bpe");
    }

    fn smollm2_path() -> Option<PathBuf> {
        let path = crate::model::hub::cached_default_model();
        if path.is_none() {
            crate::testing::skip(crate::testing::Requirement::Model, "SmolLM2-135M-Instruct.Q4_1.gguf is not in the fdpp cache ($FDPP_CACHE)");
        }
        path
    }

    const SMOL_TEXT: &str = "The capital of France is";
    const SMOL_TEXT_IDS: [u32; 5] = [504, 3575, 282, 4649, 314];
    const SMOL_QUESTION: &str = "What is the boiling point of water at sea level?";
    /// Hugging Face transformers: apply_chat_template(add_generation_prompt=True), then ids.
    const SMOL_CHAT_IDS: [u32; 41] = [
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198,
        1780, 314, 260, 16891, 1225, 282, 913, 418, 3426, 1106, 47, 2, 198, 1, 520, 9531, 198,
    ];

    #[test]
    fn smollm2_matches_hf_transformers_and_round_trips_through_hf_files() {
        let Some(path) = smollm2_path() else { return };
        let g = GgufFile::open(&path).unwrap();
        let t = Tokenizer::from_gguf(&g).unwrap();
        let chat = ChatTemplate::from_gguf(&g, &t).unwrap().expect("SmolLM2's GGUF has a chat template");
        let messages = [ChatMessage { role: "user".into(), content: SMOL_QUESTION.into() }];
        let prompt = chat.render(&messages, true).unwrap();
        assert_eq!(
            prompt,
            format!(
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                 <|im_start|>user\n{SMOL_QUESTION}<|im_end|>\n<|im_start|>assistant\n"
            )
        );

        let check = |t: &Tokenizer, what: &str| {
            assert_eq!(t.encode(SMOL_TEXT, false).unwrap(), SMOL_TEXT_IDS, "{what}: plain text");
            // add_bos_token is false in this file: no BOS even when special tokens are asked for.
            assert_eq!(t.encode(SMOL_TEXT, true).unwrap(), SMOL_TEXT_IDS, "{what}: plain text, special tokens on");
            assert_eq!(t.encode(&prompt, false).unwrap(), SMOL_CHAT_IDS, "{what}: chat prompt");
            assert_eq!(t.decode(&SMOL_CHAT_IDS, false).unwrap(), prompt, "{what}: decode");
            assert_eq!(t.decode(&SMOL_CHAT_IDS, true).unwrap(), prompt.replace("<|im_start|>", "").replace("<|im_end|>", ""));
            // smollm pre-tokenizer: digits one by one.
            let digits = t.encode("2024", false).unwrap();
            assert_eq!(digits.len(), 4, "{what}: {digits:?}");
            assert_eq!(t.decode(&digits, false).unwrap(), "2024");
            assert_eq!(t.bos_id(), Some(1), "{what}");
            assert_eq!(t.eos_id(), Some(2), "{what}");
            assert_eq!(t.bos_token(), Some("<|im_start|>"), "{what}");
            assert_eq!(t.eos_token(), Some("<|im_end|>"), "{what}");
            assert_eq!(t.pad_id(), Some(2), "{what}");
            assert!(!t.add_bos(), "{what}");
            assert!(t.stop_ids().contains(&2), "{what}: {:?}", t.stop_ids());
            // <|endoftext|> (0) is a control token too and ends text.
            assert_eq!(t.stop_ids(), [0, 2], "{what}");
            assert_eq!(t.vocab_size(), 49152, "{what}");
            assert_eq!(t.id_to_token(2).as_deref(), Some("<|im_end|>"), "{what}");
        };
        check(&t, "from GGUF");

        let dir = tmp_dir("smollm2");
        t.write_hf(&dir, Some(&chat)).unwrap();
        let t2 = Tokenizer::from_hf_dir(&dir).unwrap();
        check(&t2, "from the written tokenizer.json");
        let chat2 = ChatTemplate::from_hf_dir(&dir, &t2).unwrap().expect("the template was written");
        assert_eq!(chat2.source(), chat.source());
        assert_eq!(chat2.render(&messages, true).unwrap(), prompt);
        let config: Value = serde_json::from_slice(&std::fs::read(dir.join("generation_config.json")).unwrap()).unwrap();
        assert_eq!(config["eos_token_id"], json!([0, 2]));
        std::fs::remove_dir_all(&dir).ok();
    }

    fn strs(v: &[&str]) -> GgufValue {
        GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect())
    }

    /// A tiny byte-level vocabulary: <s> </s> a b ab <|im_end|> <user> Ġ Ġab
    fn tiny_gguf(dir: &Path, edit: impl FnOnce(&mut GgufWriter)) -> PathBuf {
        let mut w = GgufWriter::new();
        w.meta("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
            .meta("tokenizer.ggml.pre", GgufValue::String("gpt2".into()))
            .meta("tokenizer.ggml.tokens", strs(&["<s>", "</s>", "a", "b", "ab", "<|im_end|>", "<user>", "Ġ", "Ġab"]))
            .meta("tokenizer.ggml.merges", strs(&["a b", "Ġ ab"]))
            .meta("tokenizer.ggml.token_type", GgufValue::Array([3, 3, 1, 1, 1, 3, 4, 1, 1].map(GgufValue::I32).to_vec()))
            .meta("tokenizer.ggml.bos_token_id", GgufValue::U32(0))
            .meta("tokenizer.ggml.eos_token_id", GgufValue::U32(1));
        edit(&mut w);
        let p = dir.join("tiny.gguf");
        w.write(&p).unwrap();
        p
    }

    #[test]
    fn control_and_user_tokens_bos_eos_and_hf_round_trip() {
        let dir = tmp_dir("tiny");
        let p = tiny_gguf(&dir, |w| {
            w.meta("tokenizer.ggml.padding_token_id", GgufValue::U32(6))
                .meta("tokenizer.ggml.add_bos_token", GgufValue::Bool(true))
                .meta("tokenizer.ggml.add_eos_token", GgufValue::Bool(true));
        });
        let t = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        let check = |t: &Tokenizer, what: &str| {
            assert_eq!(t.encode("ab", false).unwrap(), [4], "{what}");
            assert_eq!(t.encode("ab", true).unwrap(), [0, 4, 1], "{what}");
            assert_eq!(t.encode("ab ab", false).unwrap(), [4, 8], "{what}");
            // Control and user-defined tokens are matched whole inside text.
            assert_eq!(t.encode("a<|im_end|>b<user>", false).unwrap(), [2, 5, 3, 6], "{what}");
            assert_eq!(t.encode("<s>ab", false).unwrap(), [0, 4], "{what}");
            assert_eq!(t.decode(&[0, 4, 8, 1], false).unwrap(), "<s>ab ab</s>", "{what}");
            assert_eq!(t.decode(&[0, 4, 5, 6, 1], true).unwrap(), "ab<user>", "{what}");
            assert_eq!(t.stop_ids(), [1, 5], "{what}");
            assert_eq!((t.bos_id(), t.eos_id()), (Some(0), Some(1)), "{what}");
            assert_eq!((t.bos_token(), t.eos_token()), (Some("<s>"), Some("</s>")), "{what}");
            assert_eq!(t.pad_id(), Some(6), "{what}");
            assert!(t.add_bos() && t.add_eos(), "{what}");
            assert_eq!(t.vocab_size(), 9, "{what}");
        };
        check(&t, "from GGUF");
        let hf = dir.join("hf");
        std::fs::create_dir_all(&hf).unwrap();
        t.write_hf(&hf, None).unwrap();
        check(&Tokenizer::from_hf_dir(&hf).unwrap(), "from tokenizer.json");
        assert!(ChatTemplate::from_hf_dir(&hf, &t).unwrap().is_none());

        // Without add_bos/add_eos keys nothing is added.
        let p = tiny_gguf(&dir, |_| {});
        let t = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
        assert_eq!(t.encode("ab", true).unwrap(), [4]);
        assert!(!t.add_bos() && !t.add_eos());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unsupported_gguf_tokenizers_are_named() {
        let dir = tmp_dir("unsupported");
        let p = tiny_gguf(&dir, |w| {
            w.meta("tokenizer.ggml.model", GgufValue::String("llama".into()));
        });
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("`llama`") && e.contains("tiny.gguf") && e.contains("gpt2"), "{e}");

        let p = tiny_gguf(&dir, |w| {
            w.meta("tokenizer.ggml.pre", GgufValue::String("qwen2".into()));
        });
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("`qwen2`") && e.contains("tiny.gguf") && e.contains("llama-bpe") && e.contains("smollm"), "{e}");

        let p = tiny_gguf(&dir, |w| {
            w.meta("tokenizer.ggml.merges", strs(&["ab"]));
        });
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("tokenizer.ggml.merges") && e.contains("tiny.gguf"), "{e}");

        let mut w = GgufWriter::new();
        w.meta("general.architecture", GgufValue::String("llama".into()));
        let p = dir.join("none.gguf");
        w.write(&p).unwrap();
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("tokenizer.ggml.model") && e.contains("none.gguf"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn hf_dir_errors_name_the_file() {
        let dir = tmp_dir("hf-errors");
        let e = Tokenizer::from_hf_dir(&dir).err().unwrap();
        assert!(matches!(&e, Error::Io { path, .. } if path.ends_with("tokenizer.json")), "{e}");
        std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
        let e = Tokenizer::from_hf_dir(&dir).err().unwrap();
        assert!(matches!(&e, Error::Tokenizer(m) if m.contains("tokenizer.json")), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn hf_configs_give_bos_eos_and_stop_ids() {
        let dir = tmp_dir("hf-configs");
        let t = Tokenizer::from_gguf(&GgufFile::open(tiny_gguf(&dir, |_| {})).unwrap()).unwrap();
        let hf = dir.join("hf");
        std::fs::create_dir_all(&hf).unwrap();
        t.write_hf(&hf, None).unwrap();

        // Tokens as {"content": ...} objects; eos_token_id as a list.
        std::fs::write(
            hf.join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<s>"}, "eos_token": {"content": "</s>", "special": true}}"#,
        )
        .unwrap();
        std::fs::write(hf.join("generation_config.json"), r#"{"bos_token_id": 0, "eos_token_id": [1, 6]}"#).unwrap();
        let t = Tokenizer::from_hf_dir(&hf).unwrap();
        assert_eq!((t.bos_id(), t.eos_id()), (Some(0), Some(1)));
        assert_eq!(t.stop_ids(), [1, 5, 6]);

        // Only generation_config.json, eos_token_id an integer.
        std::fs::remove_file(hf.join("tokenizer_config.json")).unwrap();
        std::fs::write(hf.join("generation_config.json"), r#"{"eos_token_id": 5}"#).unwrap();
        let t = Tokenizer::from_hf_dir(&hf).unwrap();
        assert_eq!((t.bos_id(), t.eos_id(), t.eos_token()), (None, Some(5), Some("<|im_end|>")));
        assert_eq!(t.stop_ids(), [5]);

        // Neither: no BOS/EOS, only the end-of-turn control tokens stop.
        std::fs::remove_file(hf.join("generation_config.json")).unwrap();
        let t = Tokenizer::from_hf_dir(&hf).unwrap();
        assert_eq!((t.bos_id(), t.eos_id()), (None, None));
        assert_eq!(t.stop_ids(), [5]);
        assert_eq!(t.encode("ab ab", false).unwrap(), [4, 8]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
