//! Calibrations in the cache folder: `$FDPP_CACHE/calibration/<model identity>.json`, each a
//! checksummed file (`cache::write_checked`). A missing file means the default phi; a file
//! that is corrupt, unreadable, made by an incompatible fdpp or for another model also means
//! the default phi, with a one-line note saying why, never an error: a calibration only
//! moves where the unified max's window sits, so running without one is always correct.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Calibration, FDPP_VERSION};
use crate::cache::{Entry, hex, read_checked, write_checked};
use crate::error::{Error, Result};
use crate::lower::LoweringOptions;
use crate::lower::kernel::{PhiSource, UnifiedMax};
use crate::model::{ModelConfig, WeightSource};
use crate::tensor::DType;

/// What identifies a model to its calibration, cheaply: the SHA-256 of its configuration
/// (without the loader's notes), every tensor's name, shape and file type, and the values
/// of its vectors (norm weights, biases: a few KB that differ between two fine-tunes of one
/// architecture). No matrix is read.
pub fn model_identity(config: &ModelConfig, weights: &dyn WeightSource) -> Result<String> {
    let mut h = Sha256::new();
    let config = ModelConfig { notes: vec![], ..config.clone() };
    h.update(serde_json::to_string(&config).map_err(|e| Error::InvalidArgument(format!("model config: {e}")))?.as_bytes());
    for name in weights.names() {
        let shape = weights.shape(&name).unwrap_or_default();
        let file_type = weights.file_type(&name)?;
        h.update(format!("\n{name} {shape:?} {file_type:?}").as_bytes());
        if shape.len() == 1 {
            h.update(weights.load(&name, DType::F32)?.as_le_bytes());
        }
    }
    Ok(hex(&h.finalize()))
}

/// Where the calibration of the model `identity` lives under the cache folder `cache`.
pub fn path(cache: &Path, identity: &str) -> PathBuf {
    cache.join("calibration").join(format!("{identity}.json"))
}

/// Writes `c` for its model; returns the file.
pub fn save(cache: &Path, c: &Calibration) -> Result<PathBuf> {
    let path = path(cache, &c.model_identity);
    let text = serde_json::to_string_pretty(c).map_err(|e| Error::InvalidArgument(format!("calibration: {e}")))?;
    write_checked(&path, &text).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Whether calibrations of fdpp `made_by` hold for this fdpp: the same major version (for
/// 0.y, the same y, as semver reads it).
pub fn compatible(made_by: &str) -> bool {
    let key = |v: &str| {
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or_default().to_string();
        if major == "0" { format!("0.{}", parts.next().unwrap_or_default()) } else { major }
    };
    key(made_by) == key(FDPP_VERSION)
}

/// What looking up a model's calibration found.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Found(Box<Calibration>),
    Missing,
    /// There is a file, but it cannot be used: why, in one line.
    Unusable(String),
}

/// The calibration of model `identity` with `layers` layers in the cache folder `cache`.
pub fn lookup(cache: &Path, identity: &str, layers: usize) -> Lookup {
    let path = path(cache, identity);
    let shown = path.display();
    let text = match read_checked(&path) {
        Entry::Missing => return Lookup::Missing,
        Entry::Corrupt => return Lookup::Unusable(format!("{shown} is corrupt (its checksum does not match)")),
        Entry::Valid(text) => text,
    };
    let c: Calibration = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => return Lookup::Unusable(format!("{shown} cannot be read ({e})")),
    };
    if !compatible(&c.fdpp_version) {
        return Lookup::Unusable(format!("{shown} was made by fdpp {}, this is fdpp {FDPP_VERSION}", c.fdpp_version));
    }
    if c.model_identity != identity || c.layers.len() != layers {
        return Lookup::Unusable(format!("{shown} was made for another model ({})", c.model));
    }
    Lookup::Found(Box::new(c))
}

/// Whether `opts` still asks for the default phi (a caller's own phi is kept).
fn default_phi(opts: &LoweringOptions) -> bool {
    opts.phi_source == PhiSource::Default && opts.unified_max == [UnifiedMax::default()] && opts.synchronised.iter().all(|s| !s)
}

/// `opts` with the stored calibration of the model, where there is one and `opts` asks for
/// the default phi, and a one-line note when there is none to use (missing, corrupt, stale)
/// or the cache cannot be looked in. Never an error: without a calibration the default phi runs.
pub fn apply(config: &ModelConfig, weights: &dyn WeightSource, opts: &LoweringOptions) -> (LoweringOptions, Option<String>) {
    if !default_phi(opts) {
        return (opts.clone(), None);
    }
    let cache = match crate::model::hub::cache_dir() {
        Ok(c) => c,
        Err(e) => return with_default(opts, format!("no calibration looked up ({e})")),
    };
    let identity = match model_identity(config, weights) {
        Ok(i) => i,
        Err(e) => return with_default(opts, format!("no calibration looked up (the model's identity: {e})")),
    };
    apply_from(&cache, &identity, config.num_layers, opts)
}

/// `apply` with the cache folder and the model's identity given.
pub fn apply_from(cache: &Path, identity: &str, layers: usize, opts: &LoweringOptions) -> (LoweringOptions, Option<String>) {
    if !default_phi(opts) {
        return (opts.clone(), None);
    }
    match lookup(cache, identity, layers) {
        Lookup::Found(c) => (c.lowering(opts), None),
        Lookup::Missing => with_default(opts, "this model has no calibration".into()),
        Lookup::Unusable(why) => with_default(opts, format!("calibration not used: {why}")),
    }
}

fn with_default(opts: &LoweringOptions, why: String) -> (LoweringOptions, Option<String>) {
    (opts.clone(), Some(format!("{why}; split-KV attention uses the default phi 0 (run `fdpp calibrate`)")))
}
