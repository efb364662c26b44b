use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::TcpListener;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "bootd", version, about = "nodeboot boot server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve boot artifacts over HTTP (GET/HEAD, Range, ETag).
    Serve {
        /// Directory served at /.
        #[arg(long)]
        root: PathBuf,
        /// Directory served at /repo/ (Grendel compatibility: /repo/postscript.sh).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Write the port actually bound to this file.
        #[arg(long)]
        port_file: Option<PathBuf>,
        /// Limit each transfer to this many bytes per second (tests).
        #[arg(long)]
        rate_limit: Option<u64>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .without_time()
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            root,
            repo,
            listen,
            port_file,
            rate_limit,
        } => {
            if !root.is_dir() {
                anyhow::bail!("--root {}: not a directory", root.display());
            }
            let l = TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
            let port = l.local_addr()?.port();
            if let Some(p) = port_file {
                std::fs::write(&p, port.to_string())
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            eprintln!("bootd: listening on http://{}", l.local_addr()?);
            nodeboot_boot_server::server::serve(
                l,
                nodeboot_boot_server::server::Config {
                    root,
                    repo,
                    rate_limit,
                },
            )
        }
    }
}
