//! Every kind of bad input gives a clear error that names the file / tensor / limit,
//! a non-zero exit status, and no panic. Each test writes its own small broken file and
//! runs the real `fdpp` binary on it.

mod common;

use std::path::Path;
use std::process::Command;

use common::Spec;
use fdpp_runtime::model::gguf::{GgmlType, GgufValue};

/// Bounds a refusal must stay within: it happens before anything is sized from the claim.
const MAX_CPU_SECS: f64 = 1.0;
const MAX_HEAP_MIB: u64 = 256;

/// Runs `fdpp ARGS` with its heap limited; checks exit status 1 (an allocation beyond the
/// limit would abort instead), an error line, no panic, and the CPU time; returns stderr.
fn refused(args: &[&str]) -> String {
    refused_with(Command::new(env!("CARGO_BIN_EXE_fdpp")).args(args))
}

fn refused_with(cmd: &mut Command) -> String {
    let m = common::run_bounded(cmd, MAX_HEAP_MIB);
    let stderr = &m.stderr;
    assert_eq!(m.status.code(), Some(1), "exit status {:?}; stderr:\n{stderr}", m.status);
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains("error: "), "no error line:\n{stderr}");
    assert!(m.cpu_secs < MAX_CPU_SECS, "{:.2} s of CPU time:\n{stderr}", m.cpu_secs);
    m.stderr
}

/// `fdpp generate` (CPU) and `fdpp inspect` both refuse `model`, naming `parts`.
fn both_refuse(model: &Path, parts: &[&str]) {
    let model = model.to_str().unwrap();
    let generate = refused(&["generate", "--backend", "cpu", "--temperature", "0", "--max-tokens", "2", "--model", model, "hi"]);
    assert_mentions(&generate, parts);
    let inspect = refused(&["inspect", "--backend", "cpu", "--offline", model]);
    assert_mentions(&inspect, parts);
}

/// The tiny model with metadata `key` set to `value` (added when absent).
fn tiny_with_meta(test: &str, key: &str, value: GgufValue) -> std::path::PathBuf {
    let (_, mut meta, tensors) = tiny_parts();
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => meta.push((key.into(), value)),
    }
    let path = common::temp_dir(test).join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    path
}

/// Runs `fdpp generate` on `model`; returns stderr after checking exit status and no panic.
fn generate_fails(model: &Path, prompt: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp"))
        .args(["generate", "--temperature", "0", "--max-tokens", "2", "--model"])
        .arg(model)
        .arg(prompt)
        .output()
        .expect("run fdpp");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success; stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "exit status {:?}; stderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains("error: "), "no error line:\n{stderr}");
    stderr
}

fn assert_mentions(stderr: &str, parts: &[&str]) {
    for p in parts {
        assert!(stderr.contains(p), "expected {p:?} in:\n{stderr}");
    }
}

type Tensors = Vec<(String, fdpp_runtime::tensor::HostTensor)>;

fn tiny_parts() -> (Spec, Vec<(String, GgufValue)>, Tensors) {
    let spec = Spec::default();
    let w = common::random_weights(&spec, 3);
    let meta = common::metadata(&spec);
    let tensors = common::gguf_tensors(&spec, &w);
    (spec, meta, tensors)
}

#[test]
fn missing_file() {
    let dir = common::temp_dir("missing");
    let path = dir.join("nope.gguf");
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["nope.gguf", "No such file"]);
}

#[test]
fn wrong_magic() {
    let dir = common::temp_dir("magic");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip, not a model at all").unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "not a GGUF file"]);
}

#[test]
fn truncated_header() {
    let (_, meta, tensors) = tiny_parts();
    let bytes = common::writer(&meta, &tensors).to_bytes();
    let dir = common::temp_dir("trunc-header");
    let path = dir.join("model.gguf");
    std::fs::write(&path, &bytes[..200]).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "truncated", "200 bytes"]);
}

#[test]
fn tensor_data_past_the_end() {
    let (_, meta, tensors) = tiny_parts();
    let bytes = common::writer(&meta, &tensors).to_bytes();
    let dir = common::temp_dir("trunc-data");
    let path = dir.join("model.gguf");
    // The last tensor's data ends the file: cutting a few bytes cuts only that tensor.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = generate_fails(&path, "hi");
    // The last tensor in the file is the one cut off.
    let last = &tensors.last().unwrap().0;
    assert_mentions(&err, &["model.gguf", "truncated", last.as_str()]);
}

#[test]
fn unsupported_tensor_type() {
    let (_, meta, mut tensors) = tiny_parts();
    let i = tensors.iter().position(|(n, _)| n == "blk.0.ffn_down.weight").unwrap();
    let (name, t) = tensors.remove(i);
    let mut w = common::writer(&meta, &tensors);
    // Q5_0: 32 values in 22 bytes; the bytes' content does not matter.
    let blocks = t.numel() / 32;
    w.tensor_raw(&name, &t.shape, GgmlType::from_id(6), vec![0u8; blocks * 22]);
    let dir = common::temp_dir("qtype");
    let path = dir.join("model.gguf");
    w.write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "blk.0.ffn_down.weight", "Q5_0", "Q4_1"]);
}

#[test]
fn missing_tensor() {
    let (_, meta, mut tensors) = tiny_parts();
    tensors.retain(|(n, _)| n != "blk.1.attn_v.weight");
    let dir = common::temp_dir("missing-tensor");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "missing tensor", "blk.1.attn_v.weight"]);
}

#[test]
fn shape_mismatch_with_config() {
    let (spec, meta, mut tensors) = tiny_parts();
    let t = tensors.iter_mut().find(|(n, _)| n == "blk.0.attn_k.weight").unwrap();
    // K should have kv_heads * head_dim = 32 rows; give it 64.
    t.1 = fdpp_runtime::tensor::HostTensor::f32(vec![64, spec.hidden], vec![0.0; 64 * spec.hidden]);
    let dir = common::temp_dir("shape");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "blk.0.attn_k.weight", "[64, 64]", "[32, 64]"]);
}

#[test]
fn invalid_utf8_in_metadata() {
    let (_, mut meta, tensors) = tiny_parts();
    let marker = "@@@@MARKER@@@@";
    meta.iter_mut().find(|(k, _)| k == "general.name").unwrap().1 = GgufValue::String(marker.into());
    let mut bytes = common::writer(&meta, &tensors).to_bytes();
    let at = bytes.windows(marker.len()).position(|w| w == marker.as_bytes()).unwrap();
    bytes[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    let dir = common::temp_dir("utf8");
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "invalid UTF-8", "general.name"]);
}

#[test]
fn prompt_longer_than_context() {
    let dir = common::temp_dir("long-prompt");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    // One token per byte in the tiny vocabulary: 100 tokens > 64 positions.
    let err = generate_fails(&path, &"x".repeat(100));
    assert_mentions(&err, &["100 tokens", "holds 64 tokens"]);
}

#[test]
fn empty_prompt() {
    let dir = common::temp_dir("empty");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    let err = generate_fails(&path, "");
    assert_mentions(&err, &["prompt is empty"]);
}

#[test]
fn unsupported_architecture() {
    let (_, mut meta, tensors) = tiny_parts();
    meta.iter_mut().find(|(k, _)| k == "general.architecture").unwrap().1 = GgufValue::String("mamba".into());
    let dir = common::temp_dir("arch");
    let path = dir.join("model.gguf");
    common::writer(&meta, &tensors).write(&path).unwrap();
    let err = generate_fails(&path, "hi");
    assert_mentions(&err, &["model.gguf", "mamba", "llama"]);
}

#[test]
fn backend_not_available_yet() {
    let dir = common::temp_dir("backend");
    let path = dir.join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    let out =
        Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["generate", "--backend", "cuda", "--model"]).arg(&path).arg("hi").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_mentions(&stderr, &["cuda", "not available"]);
}

#[test]
fn claimed_sizes_beyond_the_limits_are_refused_before_allocating() {
    let cases: &[(&str, u64, &str)] = &[
        ("llama.block_count", 1_000_000_000, "1024"),
        ("llama.block_count", 1 << 63, "1024"),
        ("llama.embedding_length", 1 << 40, "131072"),
        ("llama.feed_forward_length", 1 << 40, "524288"),
        ("llama.vocab_size", 1 << 40, "1048576"),
        ("llama.attention.head_count", u64::MAX, "1024"),
        ("llama.attention.key_length", 1 << 40, "1024"),
        ("llama.context_length", 1 << 40, "16777216"),
    ];
    for (i, &(key, value, limit)) in cases.iter().enumerate() {
        let path = tiny_with_meta(&format!("limit-{i}"), key, GgufValue::U64(value));
        both_refuse(&path, &["model.gguf", &format!("`{key}` is {value}"), &format!("limit of {limit}")]);
    }
}

#[test]
fn claimed_layers_without_their_tensors_are_refused() {
    let path = tiny_with_meta("layers", "llama.block_count", GgufValue::U32(1000));
    both_refuse(&path, &["model.gguf", "`llama.block_count` is 1000 but the file holds tensors of 2 layers"]);
    // Sizes within the limits that the tensors contradict.
    let path = tiny_with_meta("vocab", "llama.vocab_size", GgufValue::U32(500_000));
    both_refuse(&path, &["token_embd.weight", "[500000, 64]"]);
    let path = tiny_with_meta("ffn", "llama.feed_forward_length", GgufValue::U32(100_000));
    both_refuse(&path, &["blk.0.ffn_gate.weight", "[100000, 64]"]);
}

#[test]
fn non_finite_or_non_positive_epsilon_and_rope_base_are_refused() {
    for (i, key) in ["llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"].into_iter().enumerate() {
        for (j, v) in [f32::INFINITY, f32::NAN, 0.0, -1.0].into_iter().enumerate() {
            let path = tiny_with_meta(&format!("float-{i}-{j}"), key, GgufValue::F32(v));
            let stderr = generate_fails(&path, "hi");
            assert_mentions(&stderr, &["model.gguf", &format!("`{key}` is {v}"), "finite and above 0"]);
        }
    }
    let path = tiny_with_meta("float-type", "llama.rope.freq_base", GgufValue::String("x".into()));
    assert_mentions(&generate_fails(&path, "hi"), &["`llama.rope.freq_base`", "expected a number"]);
}

#[test]
fn tensor_offsets_sizes_and_names_are_checked() {
    let (spec, meta, tensors) = tiny_parts();
    let write = |test: &str, edit: &dyn Fn(&mut fdpp_runtime::model::gguf::GgufWriter)| {
        let mut w = common::writer(&meta, &tensors);
        edit(&mut w);
        let path = common::temp_dir(test).join("model.gguf");
        w.write(&path).unwrap();
        path
    };
    // Added last, so the data offsets of the others stay where they were.
    let wrap = write("wrap", &|w| {
        w.tensor_claim("rope_freqs.weight", &[8], GgmlType::F32, u64::MAX - 31);
    });
    both_refuse(&wrap, &["rope_freqs.weight", "truncated"]);
    let rows = write("rows", &|w| {
        w.tensor_claim("blk.9.attn_norm.weight", &[spec.hidden as u64, 1 << 56], GgmlType::F32, 0);
    });
    both_refuse(&rows, &["blk.9.attn_norm.weight", "more than 2^64 bytes"]);
    let overlap = write("overlap", &|w| {
        w.tensor_claim("blk.9.attn_norm.weight", &[spec.hidden as u64], GgmlType::F32, 0);
    });
    both_refuse(&overlap, &["blk.9.attn_norm.weight", "overlaps"]);
    let (name, t) = tensors.last().unwrap().clone();
    let twice = write("twice", &|w| {
        w.tensor(&name, &t);
    });
    both_refuse(&twice, &[&format!("tensor `{name}`"), "appears twice"]);
    let key_twice = write("key-twice", &|w| {
        w.meta_duplicate("llama.block_count", GgufValue::U32(2));
    });
    both_refuse(&key_twice, &["metadata `llama.block_count`", "appears twice"]);
}

/// The tiny model with metadata array `key` of `len` u8 zeros, written without holding it.
fn tiny_with_u8_array(test: &str, key: &str, len: usize) -> std::path::PathBuf {
    let (_, mut meta, tensors) = tiny_parts();
    meta.retain(|(k, _)| k != key);
    meta.push((key.into(), GgufValue::Array(vec![GgufValue::U8(0)])));
    let bytes = common::writer(&meta, &tensors).to_bytes();
    let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len() + 4 + 4;
    // A multiple of the alignment: every offset after it stays aligned.
    let extra = len - 1;
    assert_eq!(extra % 32, 0);
    let path = common::temp_dir(test).join("model.gguf");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    use std::io::Write;
    f.write_all(&bytes[..at]).unwrap();
    f.write_all(&(len as u64).to_le_bytes()).unwrap();
    f.write_all(&bytes[at + 8..at + 9]).unwrap();
    for _ in 0..extra >> 20 {
        f.write_all(&[0u8; 1 << 20]).unwrap();
    }
    f.write_all(&vec![0u8; extra % (1 << 20)]).unwrap();
    f.write_all(&bytes[at + 9..]).unwrap();
    f.flush().unwrap();
    path
}

#[test]
fn a_huge_metadata_array_costs_no_memory() {
    // A 256 MiB u8 array nobody reads: before, every element took a 32-byte value (8 GiB).
    let path = tiny_with_u8_array("junk-array", "general.junk", (1 << 28) + 1);
    let m = common::run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["inspect", "--backend", "cpu", "--offline"]).arg(&path),
        MAX_HEAP_MIB,
    );
    assert!(m.status.success(), "{:?}: {}", m.status, m.stderr);
    assert!(m.cpu_secs < MAX_CPU_SECS, "{:.2} s", m.cpu_secs);
    std::fs::remove_file(&path).unwrap();
    // A vocabulary beyond the limit is refused by its length, before it is decoded.
    let path = tiny_with_u8_array("long-types", "tokenizer.ggml.token_type", (1 << 20) + 1);
    both_refuse(&path, &["`tokenizer.ggml.token_type`", "is 1048577, beyond fdpp's limit of 1048576"]);
}

#[test]
fn bench_flags_beyond_the_limits_name_the_flag() {
    let max = u64::MAX.to_string();
    let cases: &[(&str, &str, &str)] = &[
        ("--batch", "1000000000", "limit of 4096"),
        ("--ctx", "1000000000000", "limit of 16777216"),
        ("--prompt", "1000000000000", "limit of 16777216"),
        ("--gen", &max, "limit of 16777216"),
        ("--ctx", &max, "limit of 16777216"),
    ];
    for &(flag, value, limit) in cases {
        let stderr = refused(&["bench", "--shape", "smollm2-135m", "--backend", "cpu", flag, value]);
        assert_mentions(&stderr, &[&format!("{flag} {value} is beyond the {limit}")]);
    }
    // Each within its limit, their sum not.
    let stderr = refused(&["bench", "--shape", "smollm2-135m", "--backend", "cpu", "--ctx", "16777216", "--gen", "16777216"]);
    assert_mentions(&stderr, &["--ctx (or --prompt) plus --gen 33554432 is beyond the limit of 16777216"]);
}

#[test]
fn a_model_or_context_that_cannot_fit_in_host_memory_is_refused_with_the_numbers() {
    // As if the machine had 1 GiB free: 6.7 billion f32 weights (27 GB) cannot fit.
    let run = |args: &[&str]| refused_with(Command::new(env!("CARGO_BIN_EXE_fdpp")).env("FDPP_HOST_MEMORY_MIB", "1024").args(args));
    let stderr = run(&["bench", "--shape", "llama2-7b", "--backend", "cpu", "--batch", "1", "--prompt", "8", "--gen", "2"]);
    assert_mentions(&stderr, &["6878924800 parameters", "cpu backend", "needs about 26242 MiB", "but 1024 MiB are available"]);
    // A tiny model claiming 2^24 positions: its RoPE table alone (1 GiB) is refused, on any backend.
    let path = tiny_with_meta("long-context", "llama.context_length", GgufValue::U32(1 << 24));
    let stderr = run(&["generate", "--backend", "cpu", "--model", path.to_str().unwrap(), "hi"]);
    assert_mentions(&stderr, &["context of 16777216 positions", "needs about 1025 MiB", "but 1024 MiB are available"]);
}

/// A software rasteriser's memory is the host's: its weights and KV caches are counted
/// before loading (lavapipe in CI; without it the test skips, a failure under
/// FDPP_REQUIRE_GPU=1).
#[cfg(feature = "wgpu")]
#[test]
fn a_context_that_cannot_fit_on_a_software_adapter_is_refused_with_the_estimate() {
    use fdpp_runtime::backend::{BackendOptions, WgpuOptions};
    let lavapipe = WgpuOptions { adapter: Some("llvmpipe".into()), ..Default::default() };
    let kv_bytes = match fdpp_runtime::backend::open(&BackendOptions::Wgpu(lavapipe)) {
        Ok(device) => device.caps().kv_dtype.size() as u64,
        Err(e) => {
            fdpp_runtime::testing::skip_unavailable(e);
            return;
        }
    };
    let args = |model: &Path, kv: &str| -> Vec<String> {
        let m = model.to_str().unwrap();
        [
            "generate",
            "--backend",
            "wgpu",
            "--adapter",
            "llvmpipe",
            "--kv",
            kv,
            "--temperature",
            "0",
            "--max-tokens",
            "1",
            "--model",
            m,
            "hi",
        ]
        .map(String::from)
        .to_vec()
    };
    let fdpp = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fdpp"));
        c.env("FDPP_HOST_MEMORY_MIB", "4096");
        c
    };
    // 2^24 positions: the RoPE table (2^24 x 16 head dims x 4 bytes: 1024 MiB) and the KV
    // caches (2 layers x K and V x 2^24 x 32 x 4 bytes: 8192 MiB; 4096 in f16, what `auto`
    // gives where lavapipe has SHADER_F16), beside well under a MiB of weights.
    let long = tiny_with_meta("long-context-lavapipe", "llama.context_length", GgufValue::U32(1 << 24));
    for (kv, kv_mib) in [("f32", 8192), ("auto", 2048 * kv_bytes)] {
        let stderr = refused_with(fdpp().args(args(&long, kv)));
        assert_mentions(&stderr, &["emulated on the CPU", "context of 16777216 positions for 1 sequences", "but 4096 MiB are available"]);
        let needed: u64 = stderr.split("needs about ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
        assert!((1024 + kv_mib..1026 + kv_mib).contains(&needed), "--kv {kv}: {stderr}");
    }
    // The model's own 64 positions fit and run.
    let short = common::temp_dir("short-context-lavapipe").join("model.gguf");
    common::write_tiny(&short, &Spec::default(), 3);
    let out = fdpp().args(args(&short, "auto")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn broken_pipes_end_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    let path = common::temp_dir("pipe").join("model.gguf");
    common::write_tiny(&path, &Spec::default(), 3);
    // A cache holding the default model's file (by size): `fetch` prints its path.
    let cache = common::temp_dir("pipe-cache");
    let cached = cache.join(fdpp_runtime::model::hub::DEFAULT_MODEL_FILE);
    std::fs::File::create(&cached).unwrap().set_len(fdpp_runtime::model::hub::DEFAULT_MODEL_SIZE).unwrap();
    let fdpp = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fdpp"));
        c.env("FDPP_CACHE", &cache);
        c
    };
    let runs: [&[&str]; 2] = [&["inspect", "--backend", "cpu", "--offline", "--m", "1,8,64", path.to_str().unwrap()], &["fetch"]];
    for args in runs {
        // A pipe whose reader is gone before fdpp starts.
        let mut fds = [0; 2];
        // SAFETY: pipe fills both descriptors, each then owned exactly once.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(reader);
        let out = fdpp().args(args).stdout(std::process::Stdio::from(writer)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        // Ended by SIGPIPE, as `cat` or `head` would be (the shell's status 141).
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{args:?}: {:?} {stderr}", out.status);
    }
    // stdout holds only the path.
    let out = fdpp().arg("fetch").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", cached.display()));
}

#[test]
fn strings_from_the_file_are_printed_escaped() {
    let path = tiny_with_meta("escape", "general.architecture", GgufValue::String("ll\u{1b}]0;owned\u{7}\u{1b}[2Jama".into()));
    let stderr = generate_fails(&path, "hi");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\u{7}'), "raw control characters in:\n{stderr:?}");
    assert_mentions(&stderr, &["architecture `ll\\u{1b}]0;owned\\u{7}\\u{1b}[2Jama`"]);
}

/// A Hugging Face folder of the tiny model (`fdpp convert`).
fn tiny_hf_folder(test: &str) -> std::path::PathBuf {
    let dir = common::temp_dir(test);
    let gguf = dir.join("model.gguf");
    common::write_tiny(&gguf, &Spec::default(), 3);
    let hf = dir.join("hf");
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp")).arg("convert").arg(&gguf).arg(&hf).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    hf
}

/// Makes `model.safetensors` of `hf` a shard listed by an index whose entries are `entry`.
fn shard_with_index(hf: &Path, entry: &str) {
    std::fs::rename(hf.join("model.safetensors"), hf.join("model-00001-of-00001.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": {"model.embed_tokens.weight": entry}});
    std::fs::write(hf.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn hf_shard_paths_must_stay_inside_the_folder() {
    for (i, entry) in ["../../../other/model.safetensors", "/etc/passwd", "sub/../../x.safetensors"].into_iter().enumerate() {
        let hf = tiny_hf_folder(&format!("hf-escape-{i}"));
        shard_with_index(&hf, entry);
        let model = hf.to_str().unwrap();
        let stderr = refused(&["inspect", "--backend", "cpu", "--offline", model]);
        assert_mentions(
            &stderr,
            &["model.safetensors.index.json", "model.embed_tokens.weight", entry, "not a file name inside the model folder"],
        );
    }
    // A shard name inside the folder that is a symlink to a file outside it.
    let hf = tiny_hf_folder("hf-symlink");
    shard_with_index(&hf, "link.safetensors");
    let outside = hf.parent().unwrap().join("outside.safetensors");
    std::fs::rename(hf.join("model-00001-of-00001.safetensors"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, hf.join("link.safetensors")).unwrap();
    let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
    assert_mentions(&stderr, &["model.safetensors.index.json", "leads outside the model folder"]);
}

#[test]
fn hf_files_must_be_regular_and_json_small() {
    let fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    for (i, name) in ["config.json", "tokenizer.json", "model.safetensors", "chat_template.jinja"].into_iter().enumerate() {
        // A FIFO in its place (opening it would block forever) and a symlink to /dev/zero.
        let hf = tiny_hf_folder(&format!("hf-fifo-{i}"));
        let _ = std::fs::remove_file(hf.join(name));
        fifo(&hf.join(name));
        let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
        assert_mentions(&stderr, &[name, "not a regular file"]);
        std::fs::remove_file(hf.join(name)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", hf.join(name)).unwrap();
        let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
        assert_mentions(&stderr, &[name, "not a regular file"]);
    }
    // A GGUF path that is a FIFO.
    let dir = common::temp_dir("gguf-fifo");
    fifo(&dir.join("model.gguf"));
    assert_mentions(&refused(&["inspect", "--offline", dir.join("model.gguf").to_str().unwrap()]), &["not a regular file"]);
    // A config.json beyond the cap (sparse: no disk used) is refused before it is read.
    let hf = tiny_hf_folder("hf-big-json");
    std::fs::OpenOptions::new().append(true).open(hf.join("config.json")).unwrap().set_len(100 << 20).unwrap();
    let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
    assert_mentions(&stderr, &["config.json", "size in bytes is 104857600, beyond fdpp's limit of 67108864"]);
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let hf = tiny_hf_folder("hf-twice");
    std::fs::copy(hf.join("model.safetensors"), hf.join("b.safetensors")).unwrap();
    std::fs::rename(hf.join("model.safetensors"), hf.join("a.safetensors")).unwrap();
    let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": "a.safetensors", "model.norm.weight": "b.safetensors"}});
    std::fs::write(hf.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
    assert_mentions(&stderr, &["b.safetensors", "also in", "a.safetensors"]);
}

#[test]
fn hf_hub_cache_links_into_blobs_are_followed() {
    // models--x/snapshots/REV/shard -> ../../blobs/HASH, as huggingface_hub lays it out.
    let hf = tiny_hf_folder("hf-hub");
    let repo = hf.parent().unwrap().join("models--x");
    let (snapshot, blobs) = (repo.join("snapshots").join("0123"), repo.join("blobs"));
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::rename(&hf, &snapshot).unwrap_or_else(|_| {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::rename(&hf, &snapshot).unwrap()
    });
    shard_with_index(&snapshot, "model-00001-of-00001.safetensors");
    std::fs::rename(snapshot.join("model-00001-of-00001.safetensors"), blobs.join("abc")).unwrap();
    std::os::unix::fs::symlink("../../blobs/abc", snapshot.join("model-00001-of-00001.safetensors")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["inspect", "--backend", "cpu", "--offline"]).arg(&snapshot).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_broken_chat_template_fails_only_with_chat() {
    let path = tiny_with_meta("template", "tokenizer.chat_template", GgufValue::String("{% for m in messages %}".into()));
    let out = Command::new(env!("CARGO_BIN_EXE_fdpp"))
        .args(["generate", "--backend", "cpu", "--temperature", "0", "--max-tokens", "2", "--model"])
        .arg(&path)
        .arg("hi")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_mentions(&stderr, &["note: the chat template does not compile", "syntax error"]);
    let m = common::run_bounded(
        Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["generate", "--backend", "cpu", "--chat", "--model"]).arg(&path).arg("hi"),
        MAX_HEAP_MIB,
    );
    assert_eq!(m.status.code(), Some(1), "{}", m.stderr);
    assert_mentions(&m.stderr, &["error: chat template: syntax error"]);
    // A template that loops 10^10 times stops at the step limit instead of hanging, also with
    // a `{% do %}` in the loop (minijinja 3.1 keeps each one's value until the render ends).
    for (name, body) in [("hang", ""), ("hang-do", "{% do range(1) %}")] {
        let hang = format!("{{% for i in range(100000) %}}{{% for j in range(100000) %}}{body}{{% endfor %}}{{% endfor %}}");
        let path = tiny_with_meta(&format!("template-{name}"), "tokenizer.chat_template", GgufValue::String(hang));
        let m = common::run_bounded(
            Command::new(env!("CARGO_BIN_EXE_fdpp")).args(["generate", "--backend", "cpu", "--chat", "--model"]).arg(&path).arg("hi"),
            MAX_HEAP_MIB,
        );
        assert_eq!(m.status.code(), Some(1), "{}", m.stderr);
        let limit = fdpp_runtime::model::chat::MAX_TEMPLATE_FUEL;
        assert_mentions(&m.stderr, &[&format!("chat template: rendering took more than fdpp's limit of {limit} steps")]);
    }
}

/// The tokenizers crate panics (its `expect`s) on a tokenizer.json whose `decoder` does not
/// parse or whose `Precompiled` normalizer holds no charsmap (found by `fuzz/run.sh
/// hf_folder`): fdpp refuses the folder with an error naming the file instead.
#[test]
fn a_tokenizer_json_the_tokenizers_library_panics_on_is_refused() {
    let hf = tiny_hf_folder("hf-tokenizer-panic");
    let good = std::fs::read_to_string(hf.join("tokenizer.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["normalizer"] = serde_json::json!({ "type": "Precompiled", "precompiled_charsmap": 7 });
    // A syntax error inside `decoder` (the rest of the file parses).
    let at = good.find("\"decoder\"").unwrap();
    let bad_decoder = format!("{}\"decoder\": {{\"type\": ByteLevel}}{}", &good[..at], &good[good[at..].find('}').unwrap() + at + 1..]);
    for (case, text) in [("decoder", bad_decoder), ("normalizer", v.to_string())] {
        std::fs::write(hf.join("tokenizer.json"), text).unwrap();
        let stderr = refused(&["inspect", "--backend", "cpu", "--offline", hf.to_str().unwrap()]);
        assert_mentions(&stderr, &["tokenizer.json", "the tokenizers library failed on it"]);
        eprintln!("{case}: {stderr}");
    }
}

/// Found by `fuzz/run.sh chat_template`: minijinja 3.1 formats, compares and drops values
/// recursively, so a namespace stored in itself, or a value nested some 100,000 levels deep
/// through a namespace, overflowed the stack and aborted fdpp. fdpp checks every value a
/// template binds to a variable (`runtime/model/chat.rs`): both are refused, naming the limit,
/// as is a string doubled until it would fill the memory.
#[test]
fn chat_templates_building_cyclic_or_very_deep_values_are_refused() {
    let reproducer = |name: &str| {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/reproducers/chat_template").join(name)).unwrap()
    };
    for (name, template, limit) in [
        ("namespace-cycle", reproducer("namespace-cycle"), "a namespace attribute may not hold a namespace or a loop object (fdpp's limit"),
        ("namespace-deep-nesting", reproducer("namespace-deep-nesting"), "nested deeper than fdpp's limit of 64 levels"),
        ("doubling", format!("{{% set s = 'ab' %}}{}", "{% set s = s ~ s %}".repeat(60)), "exceed fdpp's limit of 16777216 bytes"),
    ] {
        let path = tiny_with_meta(&format!("template-{name}"), "tokenizer.chat_template", GgufValue::String(template));
        let stderr = refused_with(
            Command::new(env!("CARGO_BIN_EXE_fdpp"))
                .args(["generate", "--backend", "cpu", "--chat", "--max-tokens", "2", "--model"])
                .arg(&path)
                .arg("hi"),
        );
        assert_mentions(&stderr, &["error: chat template: invalid operation: ", limit, "(line 1 of the template)"]);
    }
}
