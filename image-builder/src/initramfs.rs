//! `nodeimg initramfs`: dracut --no-hostonly with 90nodeboot and the static nodectl.
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kernel version (a directory under ROOT/lib/modules).
    #[arg(long)]
    pub kver: String,
    /// Where to write the initramfs.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(_a: &Args) -> Result<()> {
    bail!("nodeimg initramfs: not yet")
}
