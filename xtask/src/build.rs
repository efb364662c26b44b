//! Building the binaries: nodectl as one static (crt-static glibc) executable.
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

/// Build `nodectl` statically linked (glibc crt-static). `--target` keeps the
/// flag away from build scripts and proc-macros, which must stay dynamic.
pub fn nodectl_static() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static -C relocation-model=static",
        )
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            "nodeboot-agent",
            "--bin",
            "nodectl",
        ]))?;
    Ok(root().join("target").join(TARGET).join("release/nodectl"))
}

/// Build `bootd` (release, dynamic).
pub fn bootd() -> Result<PathBuf> {
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "nodeboot-boot-server",
        "--bin",
        "bootd",
    ]))?;
    Ok(root().join("target/release/bootd"))
}
