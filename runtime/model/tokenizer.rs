//! The tokenizer of a model as one `tokenizers::Tokenizer`, whether it came from a
//! `tokenizer.json` or from GGUF metadata (tokens + merges + pre-tokenizer name), so both
//! formats encode identically and `fdpp convert` can write the GGUF one out as JSON.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::{NormalizerWrapper, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::ChatTemplate;
use super::config::MAX_VOCAB;
use super::gguf::{GgufFile, GgufValue};

/// The tokenizers crate (0.23) keeps each BPE's word cache in a thread-local map that
/// outlives the BPE: every tokenizer built leaks up to 10,000 cached words per thread that
/// encoded with it (the GGUF fuzz targets grew by about 1 KB per load). fdpp's BPE
/// tokenizers run without the cache; encoding 19k tokens takes some 20 ms either way.
const BPE_CACHE_WORDS: usize = 0;

/// Merges of a byte-level BPE vocabulary: real ones have about one to three per token.
const MAX_MERGES: u64 = 4 * MAX_VOCAB as u64;
use crate::error::{Error, Result, contain};

/// Tokens that end an assistant turn in common chat formats, besides the model's EOS.
const END_OF_TURN: [&str; 6] = ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>"];

/// llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp, copied by a script so that no
/// character of their classes is normalised on the way; non-ASCII as `\u{..}`), by the name
/// GGUF stores in `tokenizer.ggml.pre`. Each regex splits the pieces the one before it
/// left, keeping both the matches and the text between them.
const GPT2: &[&str] = &["'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"];
const LLAMA3: &[&str] = &[
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const QWEN2: &[&str] = &[
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
    "\\s+$",
    "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
    "\\p{N}+",
];
const DEEPSEEK_CODER: &[&str] =
    &["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+", "\\p{N}"];
const FALCON: &[&str] =
    &["[\\p{P}\\$\\+<=>\\^~\\|`]+", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", "[0-9][0-9][0-9]"];
const STARCODER: &[&str] = &["\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"];
const BLOOM: &[&str] = &[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+"];
const VIKING: &[&str] = &[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+", "\\p{N}"];
const DEFAULT: &[&str] = &[
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "\\p{N}+",
    "[0-9][0-9][0-9]",
];

/// How a byte-level BPE vocabulary splits text before merging, by `tokenizer.ggml.pre`.
struct PreTokenizer {
    regexes: &'static [&'static str],
    /// A whole pre-token found in the vocabulary is taken as is (Llama 3).
    ignore_merges: bool,
}

fn bpe_pre_tokenizer(name: &str) -> Option<PreTokenizer> {
    let (regexes, ignore_merges) = match name {
        "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" => (GPT2, false),
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral" => (LLAMA3, true),
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => (LLAMA3, false),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => (QWEN2, false),
        "deepseek-llm" => (DEEPSEEK_LLM, false),
        "deepseek-coder" => (DEEPSEEK_CODER, false),
        "falcon" => (FALCON, false),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => (STARCODER, false),
        "default" => (DEFAULT, false),
        "poro-chat" | "bloom" | "gpt3-finnish" => (BLOOM, false),
        "viking" => (VIKING, false),
        _ => return None,
    };
    Some(PreTokenizer { regexes, ignore_merges })
}

const SUPPORTED_PRE: &str = "gpt2, llama-bpe (llama3), qwen2, deepseek-llm, deepseek-coder, falcon, starcoder, smollm, refact, \
                             command-r, mpt, olmo, dbrx, stablelm2, default, bloom, viking";

/// The vocabulary a GGUF file stores.
struct GgufVocab {
    tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    types: Vec<i64>,
    scores: Vec<f32>,
    merges: Vec<(String, String)>,
}

impl GgufVocab {
    fn read(g: &GgufFile, with_merges: bool) -> Result<Self> {
        let malformed =
            |key: &str, reason: &str| Error::Malformed { path: g.path.clone(), what: format!("metadata `{key}`"), reason: reason.into() };
        // Each array is decoded straight into what the tokenizer keeps, after its length is
        // checked against the vocabulary limit.
        let array = |key: &str, limit: u64| g.get_array(key, limit);
        let strings = |key: &str, limit: u64| -> Result<Vec<String>> {
            g.require(key, array(key, limit))?
                .iter()
                .map(|v| match v? {
                    GgufValue::String(s) => Ok(s),
                    _ => Err(malformed(key, "expected an array of strings")),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens", MAX_VOCAB as u64)?;
        let types: Vec<i64> = match array("tokenizer.ggml.token_type", MAX_VOCAB as u64)? {
            Some(a) => a
                .iter()
                .map(|v| {
                    Ok(match v? {
                        GgufValue::I32(x) => x as i64,
                        other => other.as_u64().map_or(1, |x| x as i64),
                    })
                })
                .collect::<Result<_>>()?,
            None => vec![1; tokens.len()],
        };
        let scores: Vec<f32> = match array("tokenizer.ggml.scores", MAX_VOCAB as u64)? {
            Some(a) => a
                .iter()
                .map(|v| v?.as_f64().map(|x| x as f32).ok_or_else(|| malformed("tokenizer.ggml.scores", "expected numbers")))
                .collect::<Result<_>>()?,
            None => vec![0.0; tokens.len()],
        };
        if types.len() != tokens.len() || scores.len() != tokens.len() {
            return Err(malformed("tokenizer.ggml.token_type", "the token types and scores must be as many as the tokens"));
        }
        let merges = if with_merges {
            strings("tokenizer.ggml.merges", MAX_MERGES)?
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| malformed("tokenizer.ggml.merges", &format!("merge {m:?} is not two tokens separated by a space")))
                })
                .collect::<Result<_>>()?
        } else {
            vec![]
        };
        Ok(GgufVocab { tokens, types, scores, merges })
    }

    fn vocab(&self) -> Vocab {
        self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
    }
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`) with the pre-tokenizer llama.cpp names `pre`.
fn byte_level_bpe(v: &GgufVocab, pre: &str, path: &str) -> Result<tokenizers::Tokenizer> {
    let Some(p) = bpe_pre_tokenizer(pre) else {
        return Err(Error::Tokenizer(format!("{path}: pre-tokenizer `{pre}` is not supported (supported: {SUPPORTED_PRE})")));
    };
    let bpe = BPE::builder()
        .vocab_and_merges(v.vocab(), v.merges.clone())
        .ignore_merges(p.ignore_merges)
        .cache_capacity(BPE_CACHE_WORDS)
        .build()
        .map_err(|e| tok_err(format!("{path}: building BPE"), e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
    for r in p.regexes {
        let split = Split::new(SplitPattern::Regex((*r).into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(format!("{path}: pre-tokenizer `{pre}` regex"), e))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, true, false).into());
    inner.with_pre_tokenizer(Some(Sequence::new(steps)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`: Llama 2, Mistral, TinyLlama, Phi-3): the
/// text's spaces become `▁` and one `▁` goes in front; then the adjacent pair whose join
/// is the best-scoring token merges first, as llama.cpp and sentencepiece do; characters
/// no token holds become byte tokens (`<0x0A>`).
fn sentencepiece_bpe(v: &GgufVocab, add_space_prefix: bool, path: &str) -> Result<tokenizers::Tokenizer> {
    let vocab = v.vocab();
    // A merge for every way a token splits into two tokens, ranked by the joined token's
    // score (best first), then by the pieces' ids (as Hugging Face derives them).
    let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (tok, &score) in v.tokens.iter().zip(&v.scores) {
        for (i, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(i);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                merges.push((score, a, b, l.to_string(), r.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges: Vec<(String, String)> = merges.into_iter().map(|m| (m.3, m.4)).collect();
    let unk = v.types.iter().position(|&t| t == 2).map(|i| v.tokens[i].clone());
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true).cache_capacity(BPE_CACHE_WORDS);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| tok_err(format!("{path}: building the SentencePiece BPE"), e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    // Spaces become `▁`; with the prefix, every stretch of text gets one in front, also
    // after a special token (llama.cpp's `add_space_prefix`, sentencepiece's dummy prefix).
    let escape: NormalizerWrapper = Replace::new(" ", "▁").map_err(|e| tok_err("normalizer", e))?.into();
    let normalizer: NormalizerWrapper =
        if add_space_prefix { NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), escape]).into() } else { escape };
    inner.with_normalizer(Some(normalizer)).map_err(|e| tok_err("normalizer", e))?;
    let mut decoders: Vec<DecoderWrapper> =
        vec![Replace::new("▁", " ").map_err(|e| tok_err("decoder", e))?.into(), ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

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

/// The tokenizers crate panics on some malformed vocabularies and tokenizer.json files (its
/// `expect`s); such a panic becomes an error naming the file.
fn panicked(what: impl std::fmt::Display) -> impl FnOnce(String) -> Error {
    move |message| Error::Tokenizer(format!("{what}: the tokenizers library failed on it (it stopped at: {message})"))
}

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        contain(|| Self::build_from_gguf(g), panicked(g.path.display()))?
    }

    fn build_from_gguf(g: &GgufFile) -> Result<Self> {
        let path = g.path.display().to_string();
        let model = g.require("tokenizer.ggml.model", g.get_str("tokenizer.ggml.model"))?;
        let v = GgufVocab::read(g, model == "gpt2")?;
        let mut inner = match model {
            "gpt2" => byte_level_bpe(&v, g.get_str("tokenizer.ggml.pre")?.unwrap_or("default"), &path)?,
            "llama" => sentencepiece_bpe(&v, g.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true), &path)?,
            other => {
                return Err(Error::Tokenizer(format!(
                    "{path}: tokenizer model `{other}` is not supported (fdpp reads byte-level BPE `gpt2` and SentencePiece `llama`)"
                )));
            }
        };
        let tokens = &v.tokens;
        let types = &v.types;
        let id = |key: &str| -> Result<Option<u32>> { Ok(g.get_u64(key)?.filter(|&v| v < tokens.len() as u64).map(|v| v as u32)) };

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
        // As llama.cpp does: BOS where the file asks for it, and for SentencePiece
        // vocabularies unless the file says otherwise.
        let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama");
        let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let mut t = Tokenizer { inner, bos, eos, pad, add_bos, add_eos, stop_ids: vec![] };
        t.set_post_processor()?;
        t.stop_ids = t.find_stop_ids(&[]);
        Ok(t)
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        let bytes = super::read_small(&file)?;
        let mut inner =
            contain(|| tokenizers::Tokenizer::from_bytes(&bytes), panicked(file.display()))?.map_err(|e| tok_err(file.display(), e))?;
        if let ModelWrapper::BPE(bpe) = inner.get_model() {
            // Only the capacity can be changed here: the thread-local map keeps an empty
            // entry (some 50 bytes) per tokenizer instead of its words.
            let mut bpe = bpe.clone();
            bpe.resize_cache(BPE_CACHE_WORDS);
            inner.with_model(bpe);
        }
        let read = |name: &str| -> Result<Option<Value>> {
            let p = dir.join(name);
            if !p.exists() {
                return Ok(None);
            }
            let text = super::read_small(&p)?;
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
        let enc = contain(|| self.inner.encode(text, add_special_tokens), panicked("encoding"))?.map_err(|e| tok_err("encoding", e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        contain(|| self.inner.decode(ids, skip_special_tokens), panicked("decoding"))?.map_err(|e| tok_err("decoding", e))
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
        // Written as tokenizer.json and read back, the tokenizer encodes the same.
        let dir = tmp_dir(vocab);
        t.write_hf(&dir, None).unwrap();
        let hf = Tokenizer::from_hf_dir(&dir).unwrap();
        for (case, want) in cases.iter().zip(&expected) {
            let got = hf.encode(case, false).unwrap();
            if &got != want {
                failures.push(format!("{case:?} through tokenizer.json: got {got:?}, want {want:?}"));
            }
        }
        std::fs::remove_dir_all(&dir).ok();
        assert!(failures.is_empty(), "{vocab}: {} checks of {} cases fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
        eprintln!("{vocab}: all {} cases encode as llama.cpp does, decode back and survive tokenizer.json", cases.len());
    }

    #[test]
    fn every_pre_tokenizer_regex_compiles() {
        for name in SUPPORTED_PRE.split(", ").map(|n| n.split(' ').next().unwrap()) {
            let p = bpe_pre_tokenizer(name).unwrap_or_else(|| panic!("{name} is listed as supported"));
            for r in p.regexes {
                Split::new(SplitPattern::Regex(r.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .unwrap_or_else(|e| panic!("{name}: {r:?}: {e}"));
            }
        }
    }

    #[test]
    fn gpt2_vectors_from_llama_cpp() {
        check_vectors("gpt-2");
    }

    #[test]
    fn llama3_vectors_from_llama_cpp() {
        check_vectors("llama-bpe");
    }

    #[test]
    fn sentencepiece_vectors_from_llama_cpp() {
        check_vectors("llama-spm");
        check_vectors("phi-3");
    }

    #[test]
    fn qwen2_vectors_from_llama_cpp() {
        check_vectors("qwen2");
    }

    #[test]
    fn deepseek_vectors_from_llama_cpp() {
        check_vectors("deepseek-llm");
        check_vectors("deepseek-coder");
    }

    #[test]
    fn starcoder_and_falcon_vectors_from_llama_cpp() {
        check_vectors("starcoder");
        check_vectors("falcon");
    }

    fn smollm2_path() -> Option<PathBuf> {
        let path = crate::model::hub::cached_default_model();
        if path.is_none() {
            crate::testing::skip(
                crate::testing::Requirement::Model,
                "SmolLM2-135M-Instruct.Q4_1.gguf is not in the fdpp cache ($FDPP_CACHE)",
            );
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
            w.meta("tokenizer.ggml.model", GgufValue::String("t5".into()));
        });
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("`t5`") && e.contains("tiny.gguf") && e.contains("gpt2") && e.contains("llama"), "{e}");

        let p = tiny_gguf(&dir, |w| {
            w.meta("tokenizer.ggml.pre", GgufValue::String("gemma4".into()));
        });
        let e = Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).err().unwrap().to_string();
        assert!(e.contains("`gemma4`") && e.contains("tiny.gguf") && e.contains("llama-bpe") && e.contains("qwen2"), "{e}");

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
