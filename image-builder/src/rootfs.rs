//! `nodeimg rootfs debian`: the demo/test node root (debootstrap, cached).
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Debian bookworm via debootstrap.
    Debian {
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn run(_w: &What) -> Result<()> {
    bail!("nodeimg rootfs: not yet")
}
