//! `cargo xtask …`: build, demo, test and bench nodeboot.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod build;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the static nodectl and the other binaries (release).
    Build,
    /// Benchmarks against the tools users would use instead.
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Build => {
            let p = build::nodectl_static()?;
            println!("{}", p.display());
            Ok(())
        }
        Cmd::Bench { what } => bench::run(what),
    }
}
