use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "bootd", version, about = "nodeboot boot server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
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
page. The status is kept in memory only.

With --secrets, GET /secrets/NAME?mac=MAC and `Authorization: Bearer TOKEN`
(the nodeboot.token= of that host's iPXE script) answer DIR/HOST/NAME once per
name and token; DELETE /secrets?mac=MAC closes the token. Tokens live in
memory: restarting bootd invalidates them.")]
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
        /// Inventory (TOML: [[image]], [[host]]) behind GET /boot/ipxe?mac=…;
        /// reloaded when it changes (a bad new file is logged, the old kept).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Base URL of the kernel, initrd and live image in iPXE scripts
        /// (default: http:// + the request's Host header).
        #[arg(long)]
        public_url: Option<String>,
        /// Per-host secrets, DIR/<host>/<name> (mode 0700, outside --root and
        /// --repo): each iPXE script gets a token (nodeboot.token=) that fetches
        /// GET /secrets/<name>?mac= once per name with Authorization: Bearer.
        #[arg(long, requires = "inventory")]
        secrets: Option<PathBuf>,
        /// Lifetime of a token from its iPXE script: 900, 90s, 15m, 1h.
        #[arg(long, default_value = "15m", value_parser = nodeboot_boot_server::secrets::parse_ttl)]
        token_ttl: std::time::Duration,
        /// Answer DHCP on this interface (its name, or one of its IPv4
        /// addresses): the inventory's MACs only, each told what to boot
        /// (see the inventory's [dhcp] table).
        #[arg(long, value_name = "IFACE|ADDR", requires = "inventory")]
        dhcp: Option<String>,
        /// full: bootd gives the inventory's addresses (static leases);
        /// proxy: another DHCP server does, bootd only adds the boot file
        /// (proxyDHCP, ports 67 and 4011). Default: proxy.
        #[arg(long, value_enum, requires = "dhcp")]
        dhcp_mode: Option<nodeboot_boot_server::dhcp::Mode>,
        /// Serve this directory read-only over TFTP (the iPXE binaries:
        /// undionly.kpxe, snponly.efi, ipxe.efi).
        #[arg(long)]
        tftp_root: Option<PathBuf>,
        /// TFTP address (default: port 69 of the --dhcp interface's address,
        /// else 0.0.0.0:69).
        #[arg(long, requires = "tftp_root")]
        tftp_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Convert Grendel's hosts and images JSON into an inventory (TOML).
    ///
    /// Absolute paths on the Grendel server (/var/lib/grendel/vmlinuz)
    /// become their file name, to be copied into bootd's root; each is
    /// listed on stderr.
    ImportGrendel {
        /// Grendel's hosts: a JSON array of model.Host.
        hosts: PathBuf,
        /// Grendel's boot images: a JSON array of model.BootImage.
        images: PathBuf,
        /// Where to write the inventory (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// What one client may hold (see the README's "Limits"). Durations: 10,
/// 10s, 2m, 1h.
#[derive(clap::Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Open HTTP connections, all clients; when all are taken, the one
    /// idle longest is closed for a newcomer.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Open HTTP connections per client address (503 beyond).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_client: u64,
    /// A request head must arrive whole within this of its first byte.
    #[arg(long, default_value = "10s", value_parser = ttl)]
    head_timeout: Duration,
    /// A request body (POST /status) must arrive whole within this.
    #[arg(long, default_value = "10s", value_parser = ttl)]
    body_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    #[arg(long, default_value = "60s", value_parser = ttl)]
    idle_timeout: Duration,
    /// One write to a client that stopped reading may block this long.
    #[arg(long, default_value = "60s", value_parser = ttl)]
    write_timeout: Duration,
    /// Nodes kept in the status table (without an inventory; with one,
    /// only its hosts are).
    #[arg(long, default_value_t = nodeboot_boot_server::status::MAX_NODES as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_nodes: u64,
    /// DHCP answers per MAC per second (0: no limit).
    #[arg(long, default_value_t = 5)]
    dhcp_rate: u32,
    /// TFTP transfers in flight, all clients.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    tftp_max_transfers: u64,
    /// TFTP transfers in flight per client address.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    tftp_per_client: u64,
    /// TFTP resends of an unacknowledged block before the transfer ends.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=100))]
    tftp_retries: u32,
    /// TFTP time between resends (the client's `timeout` option is ignored).
    #[arg(long, default_value = "2s", value_parser = ttl)]
    tftp_timeout: Duration,
    /// Largest TFTP block size granted (blksize option).
    #[arg(long, default_value_t = 1468, value_parser = clap::value_parser!(u16).range(512..=65464))]
    tftp_max_block: u16,
}

fn ttl(s: &str) -> Result<Duration, String> {
    nodeboot_boot_server::secrets::parse_ttl(s)
}

impl LimitArgs {
    fn http(&self) -> nodeboot_boot_server::limits::Limits {
        nodeboot_boot_server::limits::Limits {
            max_connections: self.max_connections as usize,
            per_client: self.max_connections_per_client as usize,
            head_timeout: self.head_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
        }
    }

    fn tftp(&self) -> nodeboot_boot_server::tftp::Limits {
        nodeboot_boot_server::tftp::Limits {
            max_transfers: self.tftp_max_transfers as usize,
            per_client: self.tftp_per_client as usize,
            retries: self.tftp_retries,
            timeout: self.tftp_timeout,
            max_block: self.tftp_max_block,
        }
    }
}

fn import_grendel(
    hosts: &std::path::Path,
    images: &std::path::Path,
    output: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let (text, notes) =
        nodeboot_boot_server::inventory::import_grendel(&read(hosts)?, &read(images)?)?;
    for n in notes {
        eprintln!("bootd: {n}");
    }
    match output {
        Some(o) => std::fs::write(o, text).with_context(|| format!("writing {}", o.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
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
            inventory,
            public_url,
            secrets,
            token_ttl,
            dhcp,
            dhcp_mode,
            tftp_root,
            tftp_listen,
            limits,
        } => nodeboot_boot_server::server::run(
            &listen,
            &nodeboot_boot_server::server::Config {
                root,
                repo,
                rate_limit,
                inventory,
                public_url,
                secrets,
                token_ttl,
                netboot: nodeboot_boot_server::netboot::Options {
                    dhcp,
                    mode: dhcp_mode,
                    tftp_root,
                    tftp_listen,
                    dhcp_rate: limits.dhcp_rate,
                    tftp: limits.tftp(),
                },
                limits: limits.http(),
                max_nodes: limits.max_nodes as usize,
            },
            port_file.as_deref(),
        ),
        Cmd::ImportGrendel {
            hosts,
            images,
            output,
        } => import_grendel(&hosts, &images, output.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
