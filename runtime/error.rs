//! One error type for the whole runtime, grouped by where the problem lies: model files,
//! tokenizer and template, limits of a request, backends, the cross-backend check,
//! fetching. Every variant carries the file / tensor / limit it is about, so the CLI can
//! print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- model files ----
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a {format} file ({reason})", path.display())]
    WrongFormat { path: PathBuf, format: &'static str, reason: String },
    #[error("{}: truncated: {what} needs bytes {start}..{end} but the file has {len} bytes", path.display())]
    Truncated { path: PathBuf, what: String, start: u64, end: u64, len: u64 },
    #[error("{}: malformed {what}: {reason}", path.display())]
    Malformed { path: PathBuf, what: String, reason: String },
    #[error("{}: invalid UTF-8 in {what}", path.display())]
    InvalidUtf8 { path: PathBuf, what: String },
    #[error("{}: tensor `{tensor}` has type {dtype}, which fdpp cannot load (supported: {supported})", path.display())]
    UnsupportedTensorType { path: PathBuf, tensor: String, dtype: String, supported: &'static str },
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{}: tensor `{tensor}` has shape {found:?} but the model config needs {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, tensor: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{}: unsupported model: {reason}", path.display())]
    UnsupportedModel { path: PathBuf, reason: String },
    /// A size or count the file claims that is beyond what fdpp accepts: refused before
    /// anything is sized from it.
    #[error("{}: {what} is {value}, beyond fdpp's limit of {limit}", path.display())]
    FileLimit { path: PathBuf, what: String, value: u64, limit: u64 },

    // ---- tokenizer and chat template ----
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),

    // ---- limits of a request ----
    #[error("the prompt is empty: give at least one character of text")]
    EmptyPrompt,
    #[error("the prompt is {tokens} tokens long but the context holds {limit} tokens{hint}")]
    PromptTooLong { tokens: usize, limit: usize, hint: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{flag} {value} is beyond the limit of {limit}{why}")]
    ArgumentLimit { flag: String, value: u64, limit: u64, why: String },
    /// The host memory a step would take, estimated before it is allocated.
    #[error("{what} needs about {needed_mib} MiB of host memory but {available_mib} MiB are available{hint}")]
    HostMemory { what: String, needed_mib: u64, available_mib: u64, hint: String },

    // ---- backends ----
    #[error("backend `{backend}` is not available: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("{backend}: out of memory allocating {what} ({bytes} bytes)")]
    OutOfMemory { backend: String, what: String, bytes: u64 },
    #[error("{backend}: {op}: {reason}")]
    Backend { backend: String, op: String, reason: String },
    #[error("{backend} does not support {what} (not implemented for this backend)")]
    NotSupported { backend: String, what: String },

    // ---- the cross-backend check ----
    #[error("check: {backend} disagrees with {reference}: first divergence at `{node}` ({step}); see the report")]
    Divergence { reference: String, backend: String, node: String, step: String },

    // ---- fetching the default model ----
    #[error("fetching {what}: {reason}")]
    Fetch { what: String, reason: String },
    #[error("{}: SHA-256 is {actual}, expected {expected}", path.display())]
    Checksum { path: PathBuf, expected: String, actual: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
