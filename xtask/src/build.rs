//! Building the binaries: nodectl, bootd and nodeimg as static (crt-static
//! glibc) executables.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run a command (argv), inheriting stdio; error names the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !st.success() {
        bail!("{shown} failed: {st}");
    }
    Ok(())
}

/// Build the release binaries statically linked (glibc crt-static, non-PIE):
/// nodectl for the initramfs, bootd and nodeimg beside it, in one build with
/// shared dependencies. `--target` keeps the flags away from build scripts and
/// proc-macros, which must stay dynamic.
fn release_static() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static -C relocation-model=static",
        )
        .args(["build", "--release", "--target", TARGET])
        .args(["-p", "nodeboot-agent", "-p", "nodeboot-boot-server"])
        .args(["-p", "nodeboot-image-builder"]))?;
    Ok(target_dir().join(TARGET).join("release"))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

/// The static `nodectl`.
pub fn nodectl_static() -> Result<PathBuf> {
    Ok(release_static()?.join("nodectl"))
}

/// `bootd` (release, built with nodectl).
pub fn bootd() -> Result<PathBuf> {
    Ok(release_static()?.join("bootd"))
}

/// `nodeimg` (release, built with nodectl).
pub fn nodeimg() -> Result<PathBuf> {
    Ok(release_static()?.join("nodeimg"))
}
