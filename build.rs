//! Embeds the commit the binary is built from as `FDPP_COMMIT` (read by `fdpp bench
//! --record`): `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from
//! it, or "unknown" without git or a repository (the lent GPU machine has neither). An
//! `FDPP_COMMIT` set in the build's environment wins, so a copy built elsewhere can say
//! which commit it is.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rerun_if_changed(path: &Path) {
    // A missing path would rerun the script on every build.
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn from_git() -> Option<String> {
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    // Again when HEAD moves, something is staged or committed, or a source file changes.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index", "refs", "packed-refs"] {
            rerun_if_changed(&Path::new(&dir).join(f));
        }
    }
    for p in ["build.rs", "Cargo.toml", "src", "runtime", "shaders", "vendor_kernels", "tests"] {
        rerun_if_changed(Path::new(p));
    }
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Some(if dirty { format!("{head}-dirty") } else { head })
}

fn main() {
    println!("cargo:rerun-if-env-changed=FDPP_COMMIT");
    let commit = match std::env::var("FDPP_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => from_git().unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=FDPP_COMMIT={commit}");
}
