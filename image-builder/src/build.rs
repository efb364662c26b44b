//! `nodeimg build`: a source tree → `NAME.squashfs`, `NAME.squashfs.sha256`, `NAME.json`.
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// A root directory, or a tar / tar.zst / tar.gz archive of one.
    pub source: PathBuf,
    /// The image to write (NAME.squashfs); NAME.squashfs.sha256 and NAME.json go beside it.
    #[arg(short, long)]
    pub output: PathBuf,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Data block size in bytes (a power of two, 4 KiB to 1 MiB).
    #[arg(long, default_value_t = 131072)]
    pub block_size: u32,
    /// Leave out paths matching this glob, relative to the root (`boot/*`,
    /// `lib/modules/*/kernel/sound`); a matched directory goes with its contents. Repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Compression threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(_a: &Args) -> Result<()> {
    bail!("nodeimg build: not yet")
}
