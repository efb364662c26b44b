//! `cargo xtask bench …` (being written).
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum What {
    /// nodectl fetch vs curl -o vs curl | sha256sum, same file, same server, tmpfs.
    Fetch,
}

pub fn run(what: What) -> Result<()> {
    match what {
        What::Fetch => anyhow::bail!("bench fetch: not written yet"),
    }
}
