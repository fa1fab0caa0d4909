//! The files the viewer opens: what fdpp writes with `inspect --json` (a plan), `generate
//! --trace` (a trace), `bench --json` (speeds and, with `--profile`, node records) and
//! `bench kernels --json` (the A/B/C timings over M) and `check --json` (backends compared
//! node by node). The kind is recognised from the
//! fields, then the file is read as that typed value, so an error names what is wrong.

use std::path::Path;

use fdpp_runtime::backend::microbench::KernelReport;
use fdpp_runtime::check::report::CheckReport;
use fdpp_runtime::lower::caps::BackendCaps;
use fdpp_runtime::model::ModelConfig;
use fdpp_runtime::trace::{NodeRecord, PlanFile, StepShape, TraceFile};
use fdpp_runtime::tune::profile::DeviceProfile;
use serde::Deserialize;

/// Larger files are refused before they are read: no fdpp file of a real model comes near.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is {bytes} bytes; the viewer opens files of at most {max} bytes")]
    TooLarge { path: String, bytes: u64, max: u64 },
    #[error("{path} is not valid JSON: {reason}")]
    NotJson { path: String, reason: String },
    #[error("{path} is not an fdpp plan, trace, bench, kernels, check or profile file (it has none of their fields)")]
    UnknownKind { path: String },
    #[error("{path} looks like {kind} but does not read as one: {reason}")]
    Invalid { path: String, kind: &'static str, reason: String },
}

/// `fdpp bench --json`: rows of speeds, and with `--profile` one prefill and one decode
/// step's node records.
#[derive(Clone, Debug, Deserialize)]
pub struct BenchFile {
    pub model: String,
    pub backend: String,
    #[serde(default)]
    pub rows: Vec<serde_json::Value>,
    #[serde(default)]
    pub profile: Vec<BenchProfile>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BenchProfile {
    pub step: String,
    pub nodes: Vec<NodeRecord>,
}

/// What a file holds.
#[derive(Clone, Debug)]
pub enum Document {
    Plan(PlanFile),
    Trace(TraceFile),
    Bench(BenchFile),
    Kernels(KernelReport),
    Check(CheckReport),
    /// A device's tuned profile (`fdpp tune --json`, or the file in the cache).
    Profile(Box<DeviceProfile>),
}

/// One step to show: node records as they were planned or run.
#[derive(Clone, Debug, PartialEq)]
pub struct ShownStep {
    pub title: String,
    pub shape: Option<StepShape>,
    pub nodes: Vec<NodeRecord>,
    pub device_micros: Option<f64>,
    /// Attention rows recomputed with the synchronised softmax (traces).
    pub fallback_rows: Option<u32>,
}

impl ShownStep {
    pub fn planned(title: String, shape: StepShape, nodes: Vec<NodeRecord>) -> ShownStep {
        ShownStep { title, shape: Some(shape), nodes, device_micros: None, fallback_rows: None }
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.node == name)
    }

    /// Sum of the nodes' measured device times.
    pub fn node_micros(&self) -> Option<f64> {
        self.nodes.iter().filter_map(|n| n.micros).reduce(|a, b| a + b)
    }
}

/// A one-line description of a step's shape.
pub fn describe_shape(s: &StepShape) -> String {
    if s.is_decode() {
        format!("decode, {} sequence(s), up to {} keys", s.m, s.max_keys)
    } else {
        format!("prefill of {} tokens ({} sequence(s))", s.m, s.sequences)
    }
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Plan(_) => "plan",
            Document::Trace(_) => "trace",
            Document::Bench(_) => "bench results",
            Document::Kernels(_) => "kernel timings",
            Document::Check(_) => "check report",
            Document::Profile(_) => "tuned profile",
        }
    }

    /// The model, for the title.
    pub fn model(&self) -> String {
        match self {
            Document::Plan(p) => p.model.clone(),
            Document::Trace(t) => format!("{} on {}", t.model, t.backend),
            Document::Bench(b) => format!("{} on {}", b.model, b.backend),
            Document::Kernels(k) => k.device.clone(),
            Document::Check(c) => c.model.clone(),
            Document::Profile(p) => p.key.device.clone(),
        }
    }

    /// The steps whose nodes it records.
    pub fn steps(&self) -> Vec<ShownStep> {
        match self {
            Document::Plan(p) => p.steps.iter().map(|s| ShownStep::planned(describe_shape(&s.shape), s.shape, s.nodes.clone())).collect(),
            Document::Trace(t) => t
                .steps
                .iter()
                .map(|s| ShownStep {
                    title: format!("{:?} step: {}", s.phase, describe_shape(&s.shape)),
                    shape: Some(s.shape),
                    nodes: s.nodes.clone(),
                    device_micros: s.device_micros,
                    fallback_rows: s.fallback_rows,
                })
                .collect(),
            Document::Bench(b) => b
                .profile
                .iter()
                .map(|p| ShownStep { title: p.step.clone(), shape: None, nodes: p.nodes.clone(), device_micros: None, fallback_rows: None })
                .collect(),
            Document::Kernels(_) | Document::Check(_) | Document::Profile(_) => vec![],
        }
    }

    /// What the lowering needs to plan any other step: the model's configuration and the
    /// backend's capabilities (plans and traces written by this fdpp carry both).
    pub fn lowering_inputs(&self) -> Option<(ModelConfig, BackendCaps)> {
        match self {
            Document::Plan(p) => p.config.clone().map(|c| (c, p.caps.clone())),
            Document::Trace(t) => t.config.clone().map(|c| (c, t.caps.clone())),
            _ => None,
        }
    }
}

/// Reads `path` (at most [`MAX_FILE_BYTES`]).
pub fn open(path: &Path) -> Result<Document, OpenError> {
    let name = path.display().to_string();
    let read = |e: std::io::Error| OpenError::Read { path: name.clone(), reason: e.to_string() };
    let bytes = std::fs::metadata(path).map_err(read)?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(OpenError::TooLarge { path: name, bytes, max: MAX_FILE_BYTES });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&name, &text)
}

/// Recognises and reads a document; `name` is used in errors. A file from fdpp's cache (its
/// SHA-256 on the first line) is checked and read past that line.
pub fn parse(name: &str, text: &str) -> Result<Document, OpenError> {
    let text = match text.split_once('\n') {
        Some((sum, body)) if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) => {
            if fdpp_runtime::cache::sha256_hex(body) != sum {
                let reason = "its first line is a checksum its contents do not match (a torn or edited cache file)".into();
                return Err(OpenError::NotJson { path: name.into(), reason });
            }
            body
        }
        _ => text,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| OpenError::NotJson { path: name.into(), reason: e.to_string() })?;
    let has = |key: &str| value.get(key).is_some();
    fn typed<T: serde::de::DeserializeOwned>(name: &str, kind: &'static str, v: serde_json::Value) -> Result<T, OpenError> {
        serde_json::from_value(v).map_err(|e| OpenError::Invalid { path: name.into(), kind, reason: e.to_string() })
    }
    // The viewer plans other steps from a plan's or trace's model configuration: it is
    // checked against fdpp's limits as a model file's would be.
    let checked = |kind: &'static str, config: Option<&ModelConfig>| match config {
        Some(c) => c.validate(Path::new(name), &|key| format!("config.{key}")).map_err(|e| OpenError::Invalid {
            path: name.into(),
            kind,
            reason: e.to_string(),
        }),
        None => Ok(()),
    };
    if has("memory") && has("fusions") && has("steps") {
        const KIND: &str = "a plan (fdpp inspect --json)";
        let plan: PlanFile = typed(name, KIND, value)?;
        checked(KIND, plan.config.as_ref())?;
        Ok(Document::Plan(plan))
    } else if has("op_summary") && has("steps") {
        const KIND: &str = "a trace (fdpp generate --trace)";
        let trace: TraceFile = typed(name, KIND, value)?;
        checked(KIND, trace.config.as_ref())?;
        Ok(Document::Trace(trace))
    } else if has("linear") && has("attention") && has("read_gbytes_per_s") {
        Ok(Document::Kernels(typed(name, "kernel timings (fdpp bench kernels --json)", value)?))
    } else if has("key") && has("table") && has("summary") {
        Ok(Document::Profile(Box::new(typed(name, "a tuned profile (fdpp tune --json)", value)?)))
    } else if has("comparisons") && has("backends") {
        Ok(Document::Check(typed(name, "a check report (fdpp check --json)", value)?))
    } else if has("rows") && has("profile") {
        Ok(Document::Bench(typed(name, "bench results (fdpp bench --json)", value)?))
    } else {
        Err(OpenError::UnknownKind { path: name.into() })
    }
}
