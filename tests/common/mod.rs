//! Tiny Llama models written by the tests themselves (GGUF, f32), with their weights kept
//! in Hugging Face orientation for the independent reference implementation.
#![allow(dead_code)]

pub mod native;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fdpp_runtime::model::gguf::{GgufValue as V, GgufWriter};
use fdpp_runtime::tensor::HostTensor;

#[derive(Clone, Debug)]
pub struct Spec {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub context: usize,
    pub rope_theta: f32,
    pub eps: f32,
    pub tied: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { layers: 2, hidden: 64, heads: 4, kv_heads: 2, ffn: 96, context: 64, rope_theta: 10000.0, eps: 1e-5, tied: true }
    }
}

impl Spec {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// GPT-2's reversible byte -> printable character map (byte-level BPE vocabularies use it).
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(cs) {
        map[*b as usize] = char::from_u32(c).unwrap();
    }
    map
}

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// 256 byte tokens, two merges, three control tokens.
pub fn vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let mut types = vec![1; 256];
    let g = byte_chars()[b' ' as usize];
    tokens.push(format!("{g}t"));
    tokens.push("he".into());
    types.extend([1, 1]);
    for s in SPECIALS {
        tokens.push(s.into());
        types.push(3);
    }
    (tokens, vec![format!("{g} t"), "h e".into()], types)
}

pub fn vocab_size() -> usize {
    vocab().0.len()
}

pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

pub fn metadata(s: &Spec) -> Vec<(String, V)> {
    let (tokens, merges, types) = vocab();
    let eos = tokens.iter().position(|t| t == "<|im_end|>").unwrap() as u32;
    let strs = |v: Vec<String>| V::Array(v.into_iter().map(V::String).collect());
    vec![
        ("general.architecture".into(), V::String("llama".into())),
        ("general.name".into(), V::String("tiny test llama".into())),
        ("llama.block_count".into(), V::U32(s.layers as u32)),
        ("llama.context_length".into(), V::U32(s.context as u32)),
        ("llama.embedding_length".into(), V::U32(s.hidden as u32)),
        ("llama.feed_forward_length".into(), V::U32(s.ffn as u32)),
        ("llama.attention.head_count".into(), V::U32(s.heads as u32)),
        ("llama.attention.head_count_kv".into(), V::U32(s.kv_heads as u32)),
        ("llama.rope.freq_base".into(), V::F32(s.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon".into(), V::F32(s.eps)),
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), strs(tokens)),
        ("tokenizer.ggml.merges".into(), strs(merges)),
        ("tokenizer.ggml.token_type".into(), V::Array(types.into_iter().map(V::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(eos - 2)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(eos)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
        ("tokenizer.chat_template".into(), V::String(CHAT_TEMPLATE.into())),
    ]
}

/// Weights in Hugging Face orientation (`[out, in]`), by HF name.
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

pub fn random_weights(s: &Spec, seed: u64) -> Weights {
    let mut rng = Lcg(seed);
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut Lcg| {
        let n = shape.iter().product();
        w.insert(name, (shape, (0..n).map(|_| offset + scale * rng.next()).collect()));
    };
    let (h, hd) = (s.hidden, s.head_dim());
    let v = vocab_size();
    put("model.embed_tokens.weight".into(), vec![v, h], 1.0, 0.0, &mut rng);
    for l in 0..s.layers {
        let p = |x: &str| format!("model.layers.{l}.{x}");
        put(p("input_layernorm.weight"), vec![h], 0.2, 1.0, &mut rng);
        put(p("self_attn.q_proj.weight"), vec![s.heads * hd, h], 0.25, 0.0, &mut rng);
        put(p("self_attn.k_proj.weight"), vec![s.kv_heads * hd, h], 0.25, 0.0, &mut rng);
        put(p("self_attn.v_proj.weight"), vec![s.kv_heads * hd, h], 0.25, 0.0, &mut rng);
        put(p("self_attn.o_proj.weight"), vec![h, s.heads * hd], 0.15, 0.0, &mut rng);
        put(p("post_attention_layernorm.weight"), vec![h], 0.2, 1.0, &mut rng);
        put(p("mlp.gate_proj.weight"), vec![s.ffn, h], 0.25, 0.0, &mut rng);
        put(p("mlp.up_proj.weight"), vec![s.ffn, h], 0.25, 0.0, &mut rng);
        put(p("mlp.down_proj.weight"), vec![h, s.ffn], 0.15, 0.0, &mut rng);
    }
    put("model.norm.weight".into(), vec![h], 0.2, 1.0, &mut rng);
    if !s.tied {
        put("lm_head.weight".into(), vec![v, h], 0.5, 0.0, &mut rng);
    }
    w
}

/// llama.cpp's convert-time permutation of Q/K rows (HF split halves -> GGUF interleaved).
pub fn permute(rows: usize, cols: usize, heads: usize, data: &[f32]) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let src = h * hd + a * (hd / 2) + b;
                let dst = h * hd + b * 2 + a;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The model's tensors under GGUF names, Q/K permuted as llama.cpp stores them.
pub fn gguf_tensors(s: &Spec, w: &Weights) -> Vec<(String, HostTensor)> {
    let mut out = Vec::new();
    for (name, (shape, data)) in w {
        let gguf = match name.as_str() {
            "model.embed_tokens.weight" => "token_embd.weight".to_string(),
            "model.norm.weight" => "output_norm.weight".into(),
            "lm_head.weight" => "output.weight".into(),
            _ => {
                let rest = name.strip_prefix("model.layers.").unwrap();
                let (l, leaf) = rest.split_once('.').unwrap();
                let g = match leaf {
                    "input_layernorm.weight" => "attn_norm",
                    "self_attn.q_proj.weight" => "attn_q",
                    "self_attn.k_proj.weight" => "attn_k",
                    "self_attn.v_proj.weight" => "attn_v",
                    "self_attn.o_proj.weight" => "attn_output",
                    "post_attention_layernorm.weight" => "ffn_norm",
                    "mlp.gate_proj.weight" => "ffn_gate",
                    "mlp.up_proj.weight" => "ffn_up",
                    "mlp.down_proj.weight" => "ffn_down",
                    other => panic!("{other}"),
                };
                format!("blk.{l}.{g}.weight")
            }
        };
        let data = if name.ends_with("q_proj.weight") {
            permute(shape[0], shape[1], s.heads, data)
        } else if name.ends_with("k_proj.weight") {
            permute(shape[0], shape[1], s.kv_heads, data)
        } else {
            data.clone()
        };
        out.push((gguf, HostTensor::f32(shape.clone(), data)));
    }
    out
}

pub fn writer(meta: &[(String, V)], tensors: &[(String, HostTensor)]) -> GgufWriter {
    let mut g = GgufWriter::new();
    for (k, v) in meta {
        g.meta(k, v.clone());
    }
    for (n, t) in tensors {
        g.tensor(n, t);
    }
    g
}

/// Writes the default tiny model to `path`; returns its HF-oriented weights.
pub fn write_tiny(path: &Path, s: &Spec, seed: u64) -> Weights {
    let w = random_weights(s, seed);
    writer(&metadata(s), &gguf_tensors(s, &w)).write(path).unwrap();
    w
}

/// A fresh, empty folder under the system temp dir for one test.
pub fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdpp-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The default model if it is in the cache (`$FDPP_CACHE` or the user cache); else the
/// test is skipped with the reason printed (a failure under FDPP_REQUIRE_MODEL=1).
pub fn smollm2() -> Option<PathBuf> {
    let m = fdpp_runtime::model::hub::cached_default_model();
    if m.is_none() {
        let at = fdpp_runtime::model::hub::default_model_path().map(|p| p.display().to_string()).unwrap_or_default();
        let why = format!("SmolLM2-135M-Instruct is not in the cache ({at}); run `cargo run --release -- fetch`");
        fdpp_runtime::testing::skip(fdpp_runtime::testing::Requirement::Model, &why);
    }
    m
}

/// `fdpp generate --json` of `prompt` (as a chat message when `chat`): 24 greedy tokens of
/// `model` on `backend` with `weights` and `kv` (the KV cache's) storage.
pub fn generate_json(bin: &str, model: &Path, backend: &str, (weights, kv): (&str, &str), chat: bool, prompt: &str) -> serde_json::Value {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["generate", "--backend", backend, "--weights", weights, "--kv", kv, "--temperature", "0", "--max-tokens", "24", "--json"]);
    cmd.arg("--model");
    cmd.arg(model);
    if chat {
        cmd.arg("--chat");
    }
    let out = cmd.arg(prompt).output().unwrap();
    assert!(out.status.success(), "{backend}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The ids of the first step's top-5 logits in a `generate_json` result.
pub fn top5_ids(v: &serde_json::Value) -> Vec<u64> {
    v["first_top5"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect()
}

/// `max |got - want| / max |want|`; NaN, infinities and unequal lengths fail the test.
pub fn rel_err(got: &[f32], want: &[impl Copy + Into<f64>], what: &str) -> f64 {
    fdpp_runtime::compare::rel_error(got, want, what)
}

/// What a finished child process did and cost.
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// User + system CPU time: unlike wall time, not inflated by a busy machine.
    pub cpu_secs: f64,
}

/// Runs `cmd` to completion with its heap limited to `max_heap_mib` (RLIMIT_DATA: the
/// program's writable private memory; a larger allocation fails, and Rust aborts), and
/// measures its CPU time (`wait4`). (A child's peak RSS cannot be measured this way: Linux
/// counts the parent's memory at fork or exec as the child's.)
#[allow(clippy::zombie_processes)] // wait4 reaps it.
pub fn run_bounded(cmd: &mut std::process::Command, max_heap_mib: u64) -> Measured {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Stdio;
    let bytes = max_heap_mib << 20;
    // SAFETY: between fork and exec the closure only makes the setrlimit system call.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let mut stderr = Vec::new();
    let _ = err.read_to_end(&mut stderr);
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out_reader.join().unwrap(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime),
    }
}
