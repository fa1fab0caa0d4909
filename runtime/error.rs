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

thread_local! {
    /// How many calls of [`contain`] this thread is inside.
    static CONTAINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f`, a call into a library that parses what a model file holds and panics on some
/// malformed input (the tokenizers crate `expect`s parts of a tokenizer.json to be well
/// formed); such a panic becomes the error `error(message)` instead of ending fdpp.
pub fn contain<T>(f: impl FnOnce() -> T, error: impl FnOnce(String) -> Error) -> Result<T> {
    struct Inside;
    impl Drop for Inside {
        fn drop(&mut self) {
            CONTAINED.with(|c| c.set(c.get() - 1));
        }
    }
    CONTAINED.with(|c| c.set(c.get() + 1));
    let inside = Inside;
    // Unwind safety: what `f` leaves half-built is dropped with it; a tokenizer that panicked
    // while encoding may do so again, which is contained again.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(inside);
    result.map_err(|payload| {
        let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
            (Some(s), _) => s.to_string(),
            (None, Some(s)) => s.clone(),
            (None, None) => "(no message)".into(),
        };
        error(message)
    })
}

/// Whether a panic on this thread now is caught by [`contain`].
pub fn panic_is_contained() -> bool {
    CONTAINED.with(|c| c.get() > 0)
}

/// Makes the panic hook in place skip the panics [`contain`] catches: fdpp's CLI then prints
/// only the error they become, and a fuzzer's hook (which aborts at every panic, before
/// unwinding) lets them unwind into their error.
pub fn pass_contained_panics() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !panic_is_contained() {
            hook(info)
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_becomes_the_error_and_the_flag_is_cleared() {
        assert!(!panic_is_contained());
        let e = contain(|| -> u32 { panic!("bad {}", 7) }, Error::Tokenizer).unwrap_err();
        assert!(matches!(&e, Error::Tokenizer(m) if m == "bad 7"), "{e}");
        assert!(!panic_is_contained());
        let nested = contain(|| (panic_is_contained(), contain(panic_is_contained, Error::Tokenizer).unwrap()), Error::Tokenizer);
        assert_eq!(nested.unwrap(), (true, true));
        assert_eq!(contain(|| 5, Error::Tokenizer).unwrap(), 5);
    }
}
