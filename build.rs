//! Records what `flowtwin --version` names besides the crate version: the git revision the
//! binary was built from and the DPDK it was built against (the DPDK it *runs* on is asked at
//! run time, `flowtwin_ffi::dpdk_version`).
//!
//! - `FLOWTWIN_GIT_REV`: the environment's value if set (scripts/package sets it, so a package
//!   names exactly the tree it was built from), else `git describe --always --dirty`, else
//!   "unknown" (a source tree outside git).
//! - `FLOWTWIN_BUILD_DPDK`: `pkg-config --modversion libdpdk`, else "unknown".
//!
//! The script reruns when HEAD, the branch it points at or the index change, not on every
//! edit of the tree: a build from uncommitted, unstaged edits may name the revision without
//! "-dirty" until the next `git add`/commit. Packages are always exact (see above).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLOWTWIN_GIT_REV");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let rev = match std::env::var("FLOWTWIN_GIT_REV") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            watch_git();
            run("git", &["describe", "--always", "--dirty"]).unwrap_or_else(|| "unknown".into())
        }
    };
    let dpdk = run("pkg-config", &["--modversion", "libdpdk"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLOWTWIN_GIT_REV={rev}");
    println!("cargo:rustc-env=FLOWTWIN_BUILD_DPDK={dpdk}");
}

/// One line of a command's stdout, if it ran and succeeded.
fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Rerun when the revision can have changed: HEAD, the ref it names, packed refs, the index.
/// Only existing files are named (cargo reruns a script on every build for a missing one).
fn watch_git() {
    let Some(git_dir) = run("git", &["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else { return };
    let common = run("git", &["rev-parse", "--git-common-dir"]).map(PathBuf::from).unwrap_or_else(|| git_dir.clone());
    let common = if common.is_absolute() { common } else { std::env::current_dir().unwrap_or_default().join(common) };
    let mut watch = vec![git_dir.join("HEAD"), git_dir.join("index"), common.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            watch.push(common.join(r));
        }
    }
    for p in watch.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
