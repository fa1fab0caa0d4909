//! The tuner's per-device profile: the dataflow table it measured, the measurements behind
//! it and how each way of choosing scored, as JSON in the cache folder. A profile belongs to
//! one backend, device, weight type, driver, fdpp version and kernel source: when any of
//! them changes it is stale, and the lowering falls back to the backend's built-in table
//! with a one-line note, as it does for a missing or corrupt file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::search::Score;
use crate::backend::microbench::LinearTiming;
use crate::cache::{Entry, read_checked, sha256_hex, write_checked};
use crate::dataflow::DataflowTable;
use crate::error::{Error, Result};
use crate::lower::caps::{BackendCaps, BackendKind};
use crate::tensor::DType;

/// What a profile is valid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileKey {
    pub backend: BackendKind,
    pub device: String,
    pub weights: DType,
    pub driver: String,
    pub fdpp: String,
    /// SHA-256 of the kernel sources (`BackendCaps::kernels`).
    pub kernels: String,
    /// What each variant's time covers (`TIMED`); profiles from before it was recorded
    /// timed bare products.
    #[serde(default = "bare_products")]
    pub timed: String,
}

/// What the tuner times for each variant: the launches a step makes for the layer.
pub const TIMED: &str = "each layer's step launches (fusions, or the launches a variant leaves unfused)";

fn bare_products() -> String {
    "bare products".into()
}

impl ProfileKey {
    pub fn of(caps: &BackendCaps) -> ProfileKey {
        ProfileKey {
            backend: caps.backend,
            device: caps.device.clone(),
            weights: caps.weight_dtype,
            driver: caps.driver.clone(),
            fdpp: env!("CARGO_PKG_VERSION").into(),
            kernels: caps.kernels.clone(),
            timed: TIMED.into(),
        }
    }

    /// The profile's file in `dir`: one per backend, weight type and device, so a profile
    /// left by another driver or fdpp is found, reported stale and replaced.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let slug: String = self.device.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let slug: String = slug.split('-').filter(|s| !s.is_empty()).take(6).collect::<Vec<_>>().join("-");
        let id = &sha256_hex(&self.device)[..12];
        dir.join(format!("{}-{}-{slug}-{id}.json", self.backend, self.weights))
    }

    /// What differs from `other`, in words (empty when nothing does).
    fn differences(&self, now: &ProfileKey) -> Vec<String> {
        let mut out = vec![];
        let mut cmp = |what: &str, was: &str, is: &str| {
            if was != is {
                out.push(format!("{what} {was} -> {is}"));
            }
        };
        cmp("device", &self.device, &now.device);
        cmp("driver", &self.driver, &now.driver);
        cmp("fdpp", &self.fdpp, &now.fdpp);
        cmp("kernel sources", &self.kernels[..self.kernels.len().min(12)], &now.kernels[..now.kernels.len().min(12)]);
        cmp("timing", &self.timed, &now.timed);
        if self.backend != now.backend || self.weights != now.weights {
            out.push(format!("{} {} -> {} {}", self.backend, self.weights, now.backend, now.weights));
        }
        out
    }
}

/// How each way of choosing scored on one shape, against the fastest variant measured at
/// each M (the verification pass when there was one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeSummary {
    pub n: usize,
    pub k: usize,
    pub tuned: Score,
    /// Single static choices and the backend's built-in table, by name.
    pub statics: Vec<(String, Score)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceProfile {
    pub key: ProfileKey,
    /// UTC time of the tuning run.
    pub created: String,
    pub table: DataflowTable,
    /// Every timing the table was chosen from, and the verification pass's.
    pub linear: Vec<LinearTiming>,
    #[serde(default)]
    pub verification: Vec<LinearTiming>,
    pub summary: Vec<ShapeSummary>,
}

/// The folder of profiles (`<fdpp cache>/profiles`).
pub fn dir() -> Result<PathBuf> {
    Ok(crate::model::hub::cache_dir()?.join("profiles"))
}

pub fn store(dir: &Path, profile: &DeviceProfile) -> Result<PathBuf> {
    let path = profile.key.path(dir);
    let text = serde_json::to_string_pretty(profile).map_err(|e| Error::InvalidArgument(format!("profile to JSON: {e}")))?;
    write_checked(&path, &text).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// What the cache holds for a device.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<DeviceProfile>),
    Missing(PathBuf),
    /// Unreadable, not matching its checksum, or not a profile.
    Corrupt(PathBuf, String),
    /// Measured for something else: what changed.
    Stale(PathBuf, Vec<String>),
}

/// The valid profile in `dir` for the device `caps` describe, or why there is none.
pub fn lookup(dir: &Path, caps: &BackendCaps) -> Lookup {
    let key = ProfileKey::of(caps);
    let path = key.path(dir);
    let text = match read_checked(&path) {
        Entry::Missing => return Lookup::Missing(path),
        Entry::Corrupt => return Lookup::Corrupt(path, "its checksum does not match (a torn or edited file)".into()),
        Entry::Valid(text) => text,
    };
    match serde_json::from_str::<DeviceProfile>(&text) {
        Err(e) => Lookup::Corrupt(path, format!("not a profile ({e})")),
        Ok(p) if p.key != key => {
            let changed = p.key.differences(&key);
            Lookup::Stale(path, changed)
        }
        Ok(p) => Lookup::Found(Box::new(p)),
    }
}

/// The tuned table for the device `caps` describe, where the cache holds a valid profile,
/// and a one-line note when it does not (the lowering then uses the built-in table).
pub fn tuned_table(caps: &BackendCaps) -> (Option<DataflowTable>, Option<String>) {
    if caps.backend == BackendKind::Cpu {
        return (None, None); // the oracle's table is not tuned
    }
    let builtin = format!("the built-in {} dataflow table", caps.backend);
    let dir = match dir() {
        Ok(d) => d,
        Err(e) => return (None, Some(format!("no tuned profile ({e}); {builtin}"))),
    };
    match lookup(&dir, caps) {
        Lookup::Found(p) => (Some(p.table), None),
        Lookup::Missing(_) => (None, Some(format!("no tuned profile for this device; {builtin} (`fdpp tune` measures one)"))),
        Lookup::Corrupt(path, why) => (None, Some(format!("ignoring the profile {}: {why}; {builtin}", path.display()))),
        Lookup::Stale(path, changed) => {
            (None, Some(format!("the profile {} is stale ({}); {builtin} (`fdpp tune` again)", path.display(), changed.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::{Inflections, ShapeTuning, TableSource};

    fn caps() -> BackendCaps {
        BackendCaps {
            device: "Test GPU 9000 (Vulkan, DiscreteGpu)".into(),
            driver: "test 1.2".into(),
            kernels: "ab".repeat(32),
            ..BackendCaps::wgpu_builtin()
        }
    }

    fn profile(caps: &BackendCaps) -> DeviceProfile {
        let mut table = DataflowTable::wgpu_default();
        table.source = TableSource::Tuned { device: caps.device.clone() };
        table
            .shapes
            .push(ShapeTuning { flat: Some(caps.linear.flat_tilings[2]), ..ShapeTuning::new(576, 576, Inflections { m1: 3, m2: 40 }) });
        DeviceProfile {
            key: ProfileKey::of(caps),
            created: "2026-11-30".into(),
            table,
            linear: vec![],
            verification: vec![],
            summary: vec![],
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fdpp-profile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_stored_profile_is_found_again_for_its_device() {
        let dir = temp_dir("found");
        let c = caps();
        assert!(matches!(lookup(&dir, &c), Lookup::Missing(_)));
        let path = store(&dir, &profile(&c)).unwrap();
        assert!(path.starts_with(&dir) && path.to_string_lossy().contains("wgpu-f16-test-gpu-9000"));
        match lookup(&dir, &c) {
            Lookup::Found(p) => assert_eq!(p.table, profile(&c).table),
            other => panic!("{other:?}"),
        }
        // Another device: its own file, not found.
        let other = BackendCaps { device: "Other GPU".into(), ..caps() };
        assert!(matches!(lookup(&dir, &other), Lookup::Missing(_)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_driver_fdpp_or_kernel_change_makes_it_stale() {
        let dir = temp_dir("stale");
        let c = caps();
        store(&dir, &profile(&c)).unwrap();
        let newer_driver = BackendCaps { driver: "test 1.3".into(), ..caps() };
        match lookup(&dir, &newer_driver) {
            Lookup::Stale(_, changed) => assert_eq!(changed, vec!["driver test 1.2 -> test 1.3".to_string()]),
            other => panic!("{other:?}"),
        }
        let new_kernels = BackendCaps { kernels: "cd".repeat(32), ..caps() };
        assert!(matches!(lookup(&dir, &new_kernels), Lookup::Stale(_, ref c) if c[0].starts_with("kernel sources")));
        // An older fdpp wrote it.
        let mut old = profile(&c);
        old.key.fdpp = "0.0.1".into();
        store(&dir, &old).unwrap();
        assert!(matches!(lookup(&dir, &c), Lookup::Stale(_, ref c) if c[0].starts_with("fdpp 0.0.1")));
        // A profile from before the tuner timed each layer's launches: its key has no `timed`.
        let mut value = serde_json::to_value(profile(&c)).unwrap();
        value["key"].as_object_mut().unwrap().remove("timed");
        write_checked(&ProfileKey::of(&c).path(&dir), &serde_json::to_string(&value).unwrap()).unwrap();
        assert!(matches!(lookup(&dir, &c), Lookup::Stale(_, ref c) if c[0].starts_with("timing bare products")), "{:?}", lookup(&dir, &c));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_profile_is_reported_not_used() {
        let dir = temp_dir("corrupt");
        let c = caps();
        let path = store(&dir, &profile(&c)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"m1\": 3", "\"m1\": 4")).unwrap();
        assert!(matches!(lookup(&dir, &c), Lookup::Corrupt(_, ref why) if why.contains("checksum")));
        // Valid checksum, not a profile.
        write_checked(&path, "{\"table\": 1}").unwrap();
        assert!(matches!(lookup(&dir, &c), Lookup::Corrupt(_, ref why) if why.contains("not a profile")));
        std::fs::write(&path, [0xff, 0x00, 0x10]).unwrap();
        assert!(matches!(lookup(&dir, &c), Lookup::Corrupt(..)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
