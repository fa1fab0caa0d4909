//! Entry points for coverage-guided fuzzing of everything fdpp reads from a model file.
//!
//! Each target takes arbitrary bytes, reads them the way fdpp reads the file they stand for,
//! and goes on as far as the file lets it (planning the model, encoding text, rendering a
//! chat template). It must return for every input: an error is the right answer to a broken
//! or hostile file; a panic, an abort, a hang or an allocation beyond the fuzzer's memory
//! limit is a bug. Each returns whether the input was accepted all the way (the model
//! loaded and planned, the template rendered), which the corpus test asks of the seeds so
//! that fuzzing starts from inputs that reach the deepest code. `fuzz/` runs them under libFuzzer (`fuzz/run.sh`); `tests/fuzz_corpus.rs`
//! replays the committed corpus and reproducers through the same functions on plain stable
//! Rust, so a crash once found stays fixed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::graph;
use crate::lower::caps::BackendCaps;
use crate::lower::{Lowering, LoweringOptions};
use crate::model::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::model::{ChatMessage, ChatTemplate, Model, Tokenizer, gguf_llama, hf_config};
use crate::tensor::DType;

/// A fuzz target: whether the input was accepted all the way.
pub type Target = fn(&[u8]) -> bool;

/// Every target by name (the names of `fuzz/`'s binaries and corpus folders).
pub const TARGETS: [(&str, Target); 5] =
    [("gguf", gguf), ("hf_folder", hf_folder), ("config", config), ("tokenizer", tokenizer), ("chat_template", chat_template)];

/// Separates the files of a `hf_folder` input; 0xFF never occurs in JSON or a template (it
/// is not UTF-8), and a safetensors file holding these six bytes only splits differently.
pub const FILE_SEPARATOR: &[u8] = b"\xffFILE\xff";

/// The files of a `hf_folder` input, in order; an empty or missing part leaves the file out.
pub const HF_FILES: [&str; 9] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// Text the tokenizer targets encode besides the input's own: spaces, digits, newlines,
/// non-ASCII, bytes no small vocabulary holds, and the usual special tokens written out.
const SAMPLE_TEXT: &str = "Hello, world! 1234  \n\t<|im_start|>user\nÉté 日本 🦀<|im_end|><s></s>";

/// A GGUF file: the model loaded (config, tensor table, tokenizer, chat template), its
/// weights checked against the graph and the graph planned for the CPU, every tensor read,
/// then the tokenizer and the template used.
pub fn gguf(data: &[u8]) -> bool {
    let Some(file) = ok(GgufFile::from_bytes("fuzz.gguf", data.to_vec())) else { return false };
    ok(gguf_llama::from_file(file)).is_some_and(|model| use_model(&model))
}

/// A Hugging Face folder: the input is split at [`FILE_SEPARATOR`] into the files of
/// [`HF_FILES`], written into a scratch folder of this process, and loaded as `fdpp` loads
/// a model folder; what loads is used as in [`gguf`].
pub fn hf_folder(data: &[u8]) -> bool {
    let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch.get_or_insert_with(|| {
        let dir = std::env::temp_dir().join(format!("fdpp-fuzz-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        dir
    });
    let mut parts = split(data, FILE_SEPARATOR);
    for name in HF_FILES {
        let path = dir.join(name);
        match parts.next().filter(|p| !p.is_empty()) {
            Some(bytes) => std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display())),
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing {}: {e}", path.display()),
                _ => {}
            },
        }
    }
    ok(crate::model::hf::load(dir)).is_some_and(|model| use_model(&model))
}

/// A `config.json`: parsed and validated; a config that passes is planned (graph, lowering,
/// rotary frequencies) and must survive `fdpp convert`'s round trip through `to_json`.
pub fn config(data: &[u8]) -> bool {
    let path = Path::new("fuzz/config.json");
    let Some(config) = ok(hf_config::from_json(path, data)) else { return false };
    let _ = crate::lower::rope::frequencies(&config);
    let g = graph::llama::build(&config);
    let planned = ok(Lowering::new(g, BackendCaps::cpu(), &LoweringOptions::default())).is_some();
    if let Some(json) = hf_config::to_json(&config) {
        let text = serde_json::to_vec(&json).expect("JSON values serialise");
        let back = hf_config::from_json(path, &text).unwrap_or_else(|e| panic!("the written config does not load: {e}\n{json}"));
        let strip = |c: &crate::model::ModelConfig| crate::model::ModelConfig { notes: vec![], ..c.clone() };
        assert_eq!(strip(&back), strip(&config), "the config changes on its way through to_json");
    }
    planned
}

/// A tokenizer from GGUF metadata. The first byte is the length of a text to encode, which
/// follows it; the rest is the GGUF file. The tokenizer encodes and decodes that text and a
/// fixed sample, and decodes ids in and beyond its vocabulary.
pub fn tokenizer(data: &[u8]) -> bool {
    let (text, file) = match data.split_first() {
        Some((&n, rest)) if rest.len() >= n as usize => rest.split_at(n as usize),
        _ => return false,
    };
    let Some(file) = ok(GgufFile::from_bytes("fuzz-vocab.gguf", file.to_vec())) else { return false };
    ok(Tokenizer::from_gguf(&file)).is_some_and(|t| use_tokenizer(&t, &String::from_utf8_lossy(text)))
}

/// A chat template and a conversation. The input up to the first NUL byte is the template's
/// source; after it, a flags byte (bit 0: add the generation prompt), then role and content
/// of each message, NUL-separated. Without a NUL the whole input is the template, rendered
/// over a fixed conversation. Rendering runs with fdpp's production limits.
pub fn chat_template(data: &[u8]) -> bool {
    let (source, rest) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let (add_generation_prompt, messages) = match rest {
        None => (true, sample_messages()),
        Some(rest) => {
            let (flags, rest) = rest.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
            let mut fields = split(rest, b"\0").map(String::from_utf8_lossy);
            let mut messages = vec![];
            while let Some(role) = fields.next() {
                let content = fields.next().unwrap_or_default();
                messages.push(ChatMessage { role: role.into_owned(), content: content.into_owned() });
            }
            (flags & 1 == 1, messages)
        }
    };
    let t = ChatTemplate::lenient(String::from_utf8_lossy(source).into_owned(), template_tokenizer());
    let Some(text) = ok(t.render(&messages, add_generation_prompt)) else { return false };
    assert!(text.len() <= crate::model::chat::MAX_TEMPLATE_OUTPUT, "{} bytes rendered past the limit", text.len());
    true
}

/// What fdpp does with a loaded model short of running it; whether it all succeeded.
fn use_model(model: &Model) -> bool {
    let _ = model.describe();
    let weights = model.weights.as_ref();
    let g = graph::llama::build(&model.config);
    let mut planned = false;
    if let Some(types) = ok(g.check_weights(weights)) {
        assert_eq!(types.len(), g.params.len());
        // As a backend reads them: each parameter's parts stacked.
        let read = (0..g.params.len()).all(|p| ok(g.load_param(p, weights, DType::F32)).is_some());
        let _ = crate::lower::rope::frequencies(&model.config);
        planned = ok(Lowering::new(g, BackendCaps::cpu(), &LoweringOptions::default())).is_some() && read;
    }
    for name in weights.names() {
        let _ = weights.shape(&name);
        let _ = ok(weights.file_type(&name));
        if let Some(t) = ok(weights.load(&name, DType::F16)) {
            assert_eq!(Some(t.shape.clone()), weights.shape(&name), "tensor `{name}` reads with another shape than it claims");
        }
    }
    let encoded = use_tokenizer(&model.tokenizer, "");
    let rendered = model.chat_template.as_ref().is_none_or(|t| ok(t.render(&sample_messages(), true)).is_some());
    planned && encoded && rendered
}

/// Encodes and decodes; whether the sample text went both ways.
fn use_tokenizer(t: &Tokenizer, text: &str) -> bool {
    let mut round_trip = true;
    for (text, special) in [(text, true), (SAMPLE_TEXT, true), (SAMPLE_TEXT, false)] {
        let ids = ok(t.encode(text, special));
        let decoded = ids.as_ref().and_then(|ids| {
            let _ = ok(t.decode(ids, true));
            ok(t.decode(ids, false))
        });
        round_trip &= decoded.is_some();
    }
    let n = t.vocab_size() as u32;
    let ids: Vec<u32> = (0..n.min(300)).chain([n, n.saturating_add(1), u32::MAX]).chain(t.stop_ids().iter().copied()).collect();
    let _ = ok(t.decode(&ids, false));
    for &id in &ids {
        let _ = t.id_to_token(id);
    }
    let _ = (t.bos_id(), t.eos_id(), t.pad_id(), t.bos_token(), t.eos_token());
    round_trip
}

fn sample_messages() -> Vec<ChatMessage> {
    let m = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
    vec![m("system", "Be brief."), m("user", "Hi <|im_end|>!"), m("assistant", "Hello."), m("user", "Why?")]
}

/// The result's value; an error is formatted (its message is built from the file's bytes
/// too) and dropped.
fn ok<T>(r: crate::Result<T>) -> Option<T> {
    r.map_err(|e| e.to_string()).ok()
}

fn split<'a>(data: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(sep.len()).position(|w| w == sep) {
            Some(at) => {
                rest = Some(&r[at + sep.len()..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The folder `hf_folder` writes its files into: one per process, under the system temp
/// folder (`fuzz/run.sh` points TMPDIR at a folder it removes afterwards), used by one call
/// at a time.
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Removes `hf_folder`'s scratch folder (a later call makes a new one).
pub fn remove_scratch() {
    if let Some(dir) = SCRATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A small byte-level BPE tokenizer whose BOS and EOS the chat templates see.
fn template_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let tokens = ["<|im_start|>", "<|im_end|>", "a", "b", "ab"];
        let strings = |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect());
        let mut w = GgufWriter::new();
        w.meta("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
            .meta("tokenizer.ggml.tokens", strings(&tokens))
            .meta("tokenizer.ggml.merges", strings(&["a b"]))
            .meta("tokenizer.ggml.token_type", GgufValue::Array([3, 3, 1, 1, 1].into_iter().map(GgufValue::I32).collect()))
            .meta("tokenizer.ggml.bos_token_id", GgufValue::U32(0))
            .meta("tokenizer.ggml.eos_token_id", GgufValue::U32(1));
        let file = GgufFile::from_bytes("chat-template-vocab.gguf", w.to_bytes()).expect("the template vocabulary parses");
        Tokenizer::from_gguf(&file).expect("the template vocabulary loads")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_empty_parts_and_the_tail() {
        let parts: Vec<&[u8]> = split(b"a--b----c", b"--").collect();
        assert_eq!(parts, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(split(b"", b"--").collect::<Vec<_>>(), [&b""[..]]);
    }

    #[test]
    fn the_template_tokenizer_names_bos_and_eos() {
        let t = template_tokenizer();
        assert_eq!((t.bos_token(), t.eos_token()), (Some("<|im_start|>"), Some("<|im_end|>")));
    }
}
