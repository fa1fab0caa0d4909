//! The fuzzers' corpus and reproducers, replayed on plain stable Rust (no libFuzzer): every
//! file of `fuzz/corpus/TARGET/` and `fuzz/reproducers/TARGET/` goes through the same
//! function of `fdpp_runtime::fuzz_targets` that `fuzz/run.sh` fuzzes, and must return
//! (no panic) within a time bound. A crash the fuzzer finds becomes a reproducer here.
//!
//! The seeds (`seed-*` in the corpus) are small real files written by `write_seeds` below
//! (`cargo test --test fuzz_corpus -- --ignored write_seeds`); they must be accepted all the
//! way, so that fuzzing starts from inputs that reach the deepest checks.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fdpp_runtime::fuzz_targets::{FILE_SEPARATOR, HF_FILES, TARGETS};
use fdpp_runtime::model::Model;
use fdpp_runtime::model::gguf::{GgmlType, GgufFile, GgufValue as V, GgufWriter};
use fdpp_runtime::tensor::DType;

/// What one input may take on two busy cores: a chat template that runs into the step
/// limit takes a few seconds; a hang or a quadratic blow-up takes longer.
const MAX_SECS_PER_INPUT: f64 = 20.0;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut v: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

#[test]
fn every_corpus_input_and_reproducer_returns_in_time() {
    let mut failures = vec![];
    let mut counts = vec![];
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let reproducers = files(&fuzz_dir().join("reproducers").join(name));
        counts.push(format!("{name}: {} + {} reproducers", corpus.len(), reproducers.len()));
        for path in corpus.iter().chain(&reproducers) {
            let bytes = std::fs::read(path).unwrap();
            let start = Instant::now();
            let returned = std::panic::catch_unwind(|| target(&bytes)).is_ok();
            let secs = start.elapsed().as_secs_f64();
            if !returned {
                failures.push(format!("{}: panicked", path.display()));
            }
            if secs > MAX_SECS_PER_INPUT {
                failures.push(format!("{}: took {secs:.1} s (limit {MAX_SECS_PER_INPUT} s)", path.display()));
            }
        }
    }
    fdpp_runtime::fuzz_targets::remove_scratch();
    eprintln!("replayed {}", counts.join(", "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_seeds_are_accepted_all_the_way() {
    for (name, target) in TARGETS {
        let seeds: Vec<PathBuf> = files(&fuzz_dir().join("corpus").join(name))
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seed-"))
            .collect();
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seed-* file");
        for path in seeds {
            assert!(target(&std::fs::read(&path).unwrap()), "{} is refused (or not planned or rendered)", path.display());
        }
    }
    fdpp_runtime::fuzz_targets::remove_scratch();
}

/// The seeds of the gguf and hf_folder targets load as models through the public loader too:
/// the targets read what `fdpp` reads.
#[test]
fn the_model_seeds_load_from_files() {
    let dir = common::temp_dir("fuzz-seeds");
    for path in files(&fuzz_dir().join("corpus/gguf")).into_iter().filter(|p| p.to_str().unwrap().contains("/seed-")) {
        let file = dir.join("model.gguf");
        std::fs::copy(&path, &file).unwrap();
        Model::load(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    for path in files(&fuzz_dir().join("corpus/hf_folder")).into_iter().filter(|p| p.to_str().unwrap().contains("/seed-")) {
        let folder = dir.join(path.file_name().unwrap());
        std::fs::create_dir_all(&folder).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut parts = split(&bytes, FILE_SEPARATOR).into_iter();
        for name in HF_FILES {
            if let Some(part) = parts.next().filter(|p| !p.is_empty()) {
                std::fs::write(folder.join(name), part).unwrap();
            }
        }
        Model::load(&folder).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = vec![];
    let mut rest = data;
    while let Some(at) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..at]);
        rest = &rest[at + sep.len()..];
    }
    parts.push(rest);
    parts
}

// ---- the seeds ----

#[test]
#[ignore = "a generator, not a check: writes fuzz/corpus/*/seed-* (run after changing what a reader accepts)"]
fn write_seeds() {
    let seeds = seeds();
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for old in files(&dir).into_iter().filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seed-")) {
            std::fs::remove_file(old).unwrap();
        }
    }
    for (target, name, bytes) in seeds {
        std::fs::write(fuzz_dir().join("corpus").join(target).join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// (target, name, bytes) of every seed.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = vec![];
    let llama = tiny_llama();
    out.push(("gguf", "llama-f32-bpe".into(), llama.clone()));
    out.push(("gguf", "qwen2-quantized-spm-yarn".into(), tiny_qwen2()));
    out.push(("gguf", "llama-rope-freqs-untied".into(), tiny_llama_rope_freqs()));

    // The HF folders: the tiny Llama converted by `fdpp convert`'s writer, once as one file
    // and once sharded with a separate template; and a Qwen2 config over f16/bf16 tensors.
    let dir = common::temp_dir("fuzz-write-seeds");
    let gguf = dir.join("tiny.gguf");
    std::fs::write(&gguf, &llama).unwrap();
    let model = Model::load(&gguf).unwrap();
    let hf = dir.join("hf");
    fdpp_runtime::model::hf::write(&model, &hf, &mut |_, _| {}).unwrap();
    let read = |name: &str| std::fs::read(hf.join(name)).unwrap();
    let mut files: Vec<(&str, Vec<u8>)> =
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]
            .into_iter()
            .map(|n| (n, read(n)))
            .collect();
    out.push(("hf_folder", "llama-converted".into(), hf_input(&files)));
    let names = model.weights.names();
    let tensor = |name: &String| {
        let t = model.weights.load(name, DType::F32).unwrap();
        (name.clone(), "F32", t.shape.clone(), t.as_le_bytes().to_vec())
    };
    let (layers, rest): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.starts_with("model.layers."));
    let shard1 = safetensors(&rest.iter().map(|n| tensor(n)).collect::<Vec<_>>());
    let shard2 = safetensors(&layers.iter().map(|n| tensor(n)).collect::<Vec<_>>());
    let weight_map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| {
            let shard =
                if n.starts_with("model.layers.") { "model-00002-of-00002.safetensors" } else { "model-00001-of-00002.safetensors" };
            (n.clone(), shard.into())
        })
        .collect();
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    files.retain(|(n, _)| *n != "model.safetensors" && *n != "tokenizer_config.json");
    files.extend([
        ("chat_template.jinja", SMOLLM2_TEMPLATE.as_bytes().to_vec()),
        ("model.safetensors.index.json", serde_json::to_vec_pretty(&index).unwrap()),
        ("model-00001-of-00002.safetensors", shard1),
        ("model-00002-of-00002.safetensors", shard2),
    ]);
    out.push(("hf_folder", "llama-sharded".into(), hf_input(&files)));
    let qwen2_config = qwen2_config();
    let tokenizer = read("tokenizer.json");
    out.push((
        "hf_folder",
        "qwen2-f16-bf16".into(),
        hf_input(&[("config.json", qwen2_config.clone()), ("model.safetensors", qwen2_safetensors()), ("tokenizer.json", tokenizer)]),
    ));

    // Configs: the converted one, the Qwen2 one, and those of the conformance fixtures
    // (transformers 4 and 5 styles, every RoPE scaling fdpp reads).
    out.push(("config", "llama-converted".into(), read("config.json")));
    out.push(("config", "qwen2-hand-written".into(), qwen2_config));
    let conformance = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance");
    for entry in std::fs::read_dir(&conformance).unwrap() {
        let path = entry.unwrap().path().join("config.json");
        let name = path.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with("-f32") {
            out.push(("config", name, std::fs::read(&path).unwrap()));
        }
    }

    // Tokenizers: each a text to encode, then a vocabulary-only GGUF.
    let text = "Hello world <|im_start|>hi\n  123 456 Été 日本";
    let with_text = |gguf: Vec<u8>| [&[text.len() as u8][..], text.as_bytes(), &gguf].concat();
    for pre in ["gpt2", "llama-bpe", "qwen2", "deepseek-llm", "falcon", "bloom"] {
        let mut w = GgufWriter::new();
        for (k, v) in bpe_vocab(pre) {
            w.meta(&k, v);
        }
        out.push(("tokenizer", format!("bpe-{pre}"), with_text(w.to_bytes())));
    }
    for (name, bytes) in [("spm", false), ("spm-byte-tokens", true)] {
        let mut w = GgufWriter::new();
        for (k, v) in spm_vocab(bytes) {
            w.meta(&k, v);
        }
        if bytes {
            w.meta("tokenizer.ggml.add_space_prefix", V::Bool(false))
                .meta("tokenizer.ggml.add_eos_token", V::Bool(true))
                .meta("tokenizer.ggml.padding_token_id", V::U32(0));
        }
        out.push(("tokenizer", name.into(), with_text(w.to_bytes())));
    }

    // Chat templates: with the fixed conversation, or a template, NUL, flags and messages.
    let conversation = |template: &str, flags: u8, messages: &[&str]| {
        let mut v = template.as_bytes().to_vec();
        v.extend([0, flags]);
        v.extend(messages.join("\0").bytes());
        v
    };
    out.push(("chat_template", "chatml".into(), common::CHAT_TEMPLATE.as_bytes().to_vec()));
    out.push(("chat_template", "smollm2".into(), conversation(SMOLLM2_TEMPLATE, 1, &["user", "Hi", "assistant", "Hello", "user", "Why?"])));
    out.push(("chat_template", "features".into(), conversation(FEATURES_TEMPLATE, 0, &["system", "Be brief.", "user", " a,b,c "])));
    for vocab in ["qwen2", "phi-3"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tokenizer/ggml-vocab-{vocab}.gguf"));
        if let Some(source) = GgufFile::open(&path).unwrap().get_str("tokenizer.chat_template").unwrap() {
            out.push(("chat_template", vocab.into(), source.as_bytes().to_vec()));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// SmolLM2-135M-Instruct's template, as its GGUF stores it.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// What real templates use: namespaces, macros, filters, slices, Python string methods,
/// raise_exception, strftime_now, loop variables.
const FEATURES_TEMPLATE: &str = r#"{%- set ns = namespace(system='', n=0) -%}
{%- macro turn(role, text) -%}<|im_start|>{{ role }}
{{ text | trim }}<|im_end|>
{% endmacro -%}
{%- if messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] -%}{%- set rest = messages[1:] -%}
{%- else -%}{%- set rest = messages -%}{%- endif -%}
{{ bos_token }}{{ turn('system', ns.system ~ ' Today is ' ~ strftime_now('%d %b %Y') ~ '.') }}
{%- for m in rest -%}
  {%- if m.role not in ['user', 'assistant'] -%}{{ raise_exception('unknown role ' ~ m.role) }}{%- endif -%}
  {%- set ns.n = ns.n + 1 -%}
  {{ turn(m.role, m.content.strip().replace(',', ', ').upper() if loop.last else m.content) }}
  {%- if loop.index is divisibleby 2 %}{{ m.content | length }}{{ m.content.split(',') | join('|') }}{% endif -%}
{%- endfor -%}
{{ ns.n }} {{ rest | map(attribute='role') | list | tojson }} {{ eos_token }}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"#;

/// One input of the hf_folder target: the files of `HF_FILES` given here, in its order.
fn hf_input(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> =
        HF_FILES.iter().map(|name| files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).unwrap_or_default()).collect();
    // Trailing absent files need no separators.
    let last = parts.iter().rposition(|p| !p.is_empty()).map_or(0, |i| i + 1);
    parts[..last].join(FILE_SEPARATOR)
}

/// A safetensors file: (name, dtype, shape, little-endian data) per tensor.
fn safetensors(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        header.insert(name.clone(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()] }));
        offset += data.len();
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    for (.., data) in tensors {
        out.extend(data);
    }
    out
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn f32(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

/// Data of a `[rows, cols]` tensor in `ty`: random values, quantized blocks with a fixed
/// scale and random quants.
fn tensor_bytes(ty: GgmlType, shape: &[usize], rng: &mut Lcg) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let mut out = vec![];
    match ty {
        GgmlType::F32 => (0..n).for_each(|_| out.extend(rng.f32().to_le_bytes())),
        GgmlType::F16 => (0..n).for_each(|_| out.extend(half::f16::from_f32(rng.f32()).to_le_bytes())),
        GgmlType::BF16 => (0..n).for_each(|_| out.extend(half::bf16::from_f32(rng.f32()).to_le_bytes())),
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (_, block_bytes) = ty.block_layout().unwrap();
            for _ in 0..n / 32 {
                out.extend(scale);
                let header = if ty == GgmlType::Q4_1 { 4 } else { 2 };
                if header == 4 {
                    out.extend(half::f16::from_f32(-0.05).to_le_bytes());
                }
                (header..block_bytes as usize).for_each(|_| out.push(rng.next() as u8));
            }
        }
        other => panic!("no seed data for {other}"),
    }
    out
}

fn strings<S: AsRef<str>>(v: &[S]) -> V {
    V::Array(v.iter().map(|s| V::String(s.as_ref().to_string())).collect())
}

/// A byte-level BPE vocabulary of 14 tokens (three control tokens) with `pre`.
fn bpe_vocab(pre: &str) -> Vec<(String, V)> {
    let tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "e", "l", "o", "Ġ", "w", "he", "ll", "llo", "Ġw", "hello"];
    let types: Vec<V> = tokens.iter().map(|t| V::I32(if t.starts_with("<|") { 3 } else { 1 })).collect();
    vec![
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.merges".into(), strings(&["h e", "l l", "ll o", "Ġ w", "he llo"])),
        ("tokenizer.ggml.token_type".into(), V::Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
    ]
}

/// A SentencePiece vocabulary (scores, an unknown token, control and user-defined tokens),
/// with the 256 byte tokens or only two.
fn spm_vocab(all_bytes: bool) -> Vec<(String, V)> {
    let mut tokens: Vec<String> =
        ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "▁", "h", "e", "l", "o", "▁h", "ll", "llo", "▁hello"]
            .map(String::from)
            .to_vec();
    let mut types = vec![2, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let bytes: Vec<u8> = if all_bytes { (0..=255).collect() } else { vec![b'\n', b'!'] };
    for b in bytes {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let scores: Vec<V> = (0..tokens.len()).map(|i| V::F32(-(i as f32))).collect();
    vec![
        ("tokenizer.ggml.model".into(), V::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), strings(&tokens)),
        ("tokenizer.ggml.scores".into(), V::Array(scores)),
        ("tokenizer.ggml.token_type".into(), V::Array(types.into_iter().map(V::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(2)),
    ]
}

/// A GGUF Llama-family model: `arch` with `[hidden, heads, kv_heads, ffn, layers]`, its
/// tokenizer metadata, and each GGUF tensor's type chosen by `ty`.
fn tiny_model(
    arch: &str,
    [hidden, heads, kv_heads, ffn, layers]: [usize; 5],
    meta: Vec<(String, V)>,
    ty: &dyn Fn(&str) -> GgmlType,
    untied: bool,
    biases: bool,
) -> GgufWriter {
    let vocab = match meta.iter().find(|(k, _)| k == "tokenizer.ggml.tokens") {
        Some((_, V::Array(t))) => t.len(),
        _ => panic!("no tokens"),
    };
    let head_dim = hidden / heads;
    let mut w = GgufWriter::new();
    let key = |k: &str| format!("{arch}.{k}");
    w.meta("general.architecture", V::String(arch.into()))
        .meta(&key("block_count"), V::U32(layers as u32))
        .meta(&key("context_length"), V::U32(64))
        .meta(&key("embedding_length"), V::U32(hidden as u32))
        .meta(&key("feed_forward_length"), V::U32(ffn as u32))
        .meta(&key("attention.head_count"), V::U32(heads as u32))
        .meta(&key("attention.head_count_kv"), V::U32(kv_heads as u32))
        .meta(&key("rope.freq_base"), V::F32(10000.0))
        .meta(&key("attention.layer_norm_rms_epsilon"), V::F32(1e-5));
    for (k, v) in meta {
        w.meta(&k, v);
    }
    let mut rng = Lcg(7);
    let mut tensor = |w: &mut GgufWriter, name: &str, shape: &[usize]| {
        let t = ty(name);
        w.tensor_raw(name, shape, t, tensor_bytes(t, shape, &mut rng));
    };
    tensor(&mut w, "token_embd.weight", &[vocab, hidden]);
    tensor(&mut w, "output_norm.weight", &[hidden]);
    if untied {
        tensor(&mut w, "output.weight", &[vocab, hidden]);
    }
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    for l in 0..layers {
        let n = |leaf: &str| format!("blk.{l}.{leaf}");
        tensor(&mut w, &n("attn_norm.weight"), &[hidden]);
        tensor(&mut w, &n("attn_q.weight"), &[q, hidden]);
        tensor(&mut w, &n("attn_k.weight"), &[kv, hidden]);
        tensor(&mut w, &n("attn_v.weight"), &[kv, hidden]);
        tensor(&mut w, &n("attn_output.weight"), &[hidden, q]);
        tensor(&mut w, &n("ffn_norm.weight"), &[hidden]);
        tensor(&mut w, &n("ffn_gate.weight"), &[ffn, hidden]);
        tensor(&mut w, &n("ffn_up.weight"), &[ffn, hidden]);
        tensor(&mut w, &n("ffn_down.weight"), &[hidden, ffn]);
        if biases {
            tensor(&mut w, &n("attn_q.bias"), &[q]);
            tensor(&mut w, &n("attn_k.bias"), &[kv]);
            tensor(&mut w, &n("attn_v.bias"), &[kv]);
        }
    }
    w
}

/// Llama, hidden 8, f32, byte-level BPE, ChatML template, tied embeddings.
fn tiny_llama() -> Vec<u8> {
    let mut meta = bpe_vocab("gpt2");
    meta.push(("tokenizer.chat_template".into(), V::String(common::CHAT_TEMPLATE.into())));
    tiny_model("llama", [8, 2, 1, 16, 1], meta, &|_| GgmlType::F32, false, false).to_bytes()
}

/// Qwen2, hidden 32, every quantized and half type fdpp reads, QKV biases, an untied output,
/// SentencePiece vocabulary, YaRN RoPE scaling and a sliding window.
fn tiny_qwen2() -> Vec<u8> {
    let mut meta = spm_vocab(false);
    meta.extend([
        ("qwen2.rope.scaling.type".to_string(), V::String("yarn".into())),
        ("qwen2.rope.scaling.factor".into(), V::F32(4.0)),
        ("qwen2.rope.scaling.original_context_length".into(), V::U32(32)),
        ("qwen2.attention.sliding_window".into(), V::U32(48)),
    ]);
    let ty = |name: &str| match name {
        "token_embd.weight" | "output.weight" => GgmlType::Q8_0,
        n if n.ends_with("attn_q.weight") || n.ends_with("ffn_up.weight") => GgmlType::Q4_0,
        n if n.ends_with("attn_k.weight") || n.ends_with("ffn_down.weight") => GgmlType::Q4_1,
        n if n.ends_with("attn_v.weight") => GgmlType::Q8_0,
        n if n.ends_with("attn_output.weight") => GgmlType::F16,
        n if n.ends_with("ffn_gate.weight") => GgmlType::BF16,
        _ => GgmlType::F32,
    };
    tiny_model("qwen2", [32, 2, 1, 32, 1], meta, &ty, true, true).to_bytes()
}

/// Llama with Llama 3.1's per-frequency RoPE factors (`rope_freqs.weight`), explicit head
/// sizes, a vocabulary size key, an untied f16 output and two layers.
fn tiny_llama_rope_freqs() -> Vec<u8> {
    let mut meta = bpe_vocab("llama-bpe");
    meta.extend([
        ("llama.vocab_size".to_string(), V::U32(14)),
        ("llama.attention.key_length".into(), V::U32(4)),
        ("llama.attention.value_length".into(), V::U32(4)),
        ("llama.rope.dimension_count".into(), V::U32(4)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(true)),
    ]);
    let ty = |name: &str| if name == "output.weight" { GgmlType::F16 } else { GgmlType::F32 };
    let mut w = tiny_model("llama", [8, 2, 2, 16, 2], meta, &ty, true, false);
    // head_dim / 2 = 2 factors.
    w.tensor_raw("rope_freqs.weight", &[2], GgmlType::F32, [1.0f32, 4.0].iter().flat_map(|f| f.to_le_bytes()).collect());
    w.to_bytes()
}

/// A Qwen2 config.json (transformers 4 style) for `qwen2_safetensors`'s tensors.
fn qwen2_config() -> Vec<u8> {
    let c = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 14, "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
        "rope_scaling": { "type": "linear", "factor": 2.0 }, "use_sliding_window": false, "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    });
    serde_json::to_vec_pretty(&c).unwrap()
}

/// The tensors of `qwen2_config` in f16 (projections) and bf16 (the rest), QKV biases too.
fn qwen2_safetensors() -> Vec<u8> {
    let mut rng = Lcg(11);
    let (h, kv, f, v) = (8, 4, 16, 14);
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("model.embed_tokens.weight", vec![v, h]),
        ("model.norm.weight", vec![h]),
        ("model.layers.0.input_layernorm.weight", vec![h]),
        ("model.layers.0.post_attention_layernorm.weight", vec![h]),
        ("model.layers.0.self_attn.q_proj.weight", vec![h, h]),
        ("model.layers.0.self_attn.k_proj.weight", vec![kv, h]),
        ("model.layers.0.self_attn.v_proj.weight", vec![kv, h]),
        ("model.layers.0.self_attn.o_proj.weight", vec![h, h]),
        ("model.layers.0.self_attn.q_proj.bias", vec![h]),
        ("model.layers.0.self_attn.k_proj.bias", vec![kv]),
        ("model.layers.0.self_attn.v_proj.bias", vec![kv]),
        ("model.layers.0.mlp.gate_proj.weight", vec![f, h]),
        ("model.layers.0.mlp.up_proj.weight", vec![f, h]),
        ("model.layers.0.mlp.down_proj.weight", vec![h, f]),
    ];
    let tensors: Vec<_> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let (dtype, ty) = if name.contains("proj.weight") { ("F16", GgmlType::F16) } else { ("BF16", GgmlType::BF16) };
            let data = tensor_bytes(ty, &shape, &mut rng);
            (name.to_string(), dtype, shape, data)
        })
        .collect();
    safetensors(&tensors)
}
