use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bootd", version, about = "nodeboot boot server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve boot artifacts over HTTP/1.1 (GET/HEAD, Range, ETag) and the
    /// nodes' status.
    ///
    /// One access-log line per request goes to stderr (BOOTD_LOG=debug also
    /// says why a path got 404), and one per node status.
    #[command(after_help = "\
Paths are percent-decoded; `..` components, NUL bytes, directories and
anything resolving outside the served directory (symlinks included) get 404.
A Range header with several ranges gets the whole file (200).

Nodes POST their phase to /status as JSON ({\"hostname\", \"mac\", \"phase\",
\"message\", \"image\"}); GET /nodes lists them as JSON and GET / as an HTML
page. The status is kept in memory only.")]
    Serve {
        /// Directory served at /.
        #[arg(long)]
        root: PathBuf,
        /// Directory served at /repo/ (Grendel compatibility: /repo/postscript.sh).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Address to listen on (port 0: any free port, see --port-file).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Limit each transfer to this many bytes per second (tests).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        rate_limit: Option<u64>,
        /// Write the port actually bound to this file (atomically).
        #[arg(long)]
        port_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOOTD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let r = match Cli::parse().cmd {
        Cmd::Serve {
            root,
            repo,
            listen,
            rate_limit,
            port_file,
        } => nodeboot_boot_server::server::run(
            &listen,
            &nodeboot_boot_server::server::Config {
                root,
                repo,
                rate_limit,
            },
            port_file.as_deref(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
