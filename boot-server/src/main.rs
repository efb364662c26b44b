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

GET /nodes and GET / need the admin token (--admin-token FILE; Authorization:
Bearer TOKEN, or Basic with the token as password in a browser).

Node identity: each node holds a key; bootd keeps the public keys in
--state DIR/keys/HOST.pub. A node enrolls its key (POST /identity/enroll)
once while armed (bootd arm HOST, or enroll = true in the inventory for its
first key, or a key = \"SHA256:…\" pin). With --secrets, GET /secrets/NAME
signed by the host's key answers DIR/HOST/NAME sealed to that key (age).
Status posts of a host with a key must be signed by it.")]
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
        /// bootd's lasting state (mode 0700): the nodes' enrolled keys
        /// (DIR/keys/HOST.pub). Without it, enrolled keys are lost on restart.
        #[arg(long)]
        state: Option<PathBuf>,
        /// File holding the admin token (mode 0600, one word of 16+
        /// characters): GET /nodes, GET / and POST /admin/arm need it.
        #[arg(long)]
        admin_token: Option<PathBuf>,
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
    /// Arm a host of the running bootd for one enrollment of its key (a
    /// fresh node, or a disk re-imaged by nodectl format-disk).
    Arm {
        /// The host (a name of the inventory).
        host: String,
        /// How long the arming lasts: 900, 90s, 30m, 2h.
        #[arg(long = "for", default_value = "30m", value_parser = ttl)]
        for_: Duration,
        /// bootd's URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The file holding the admin token (as bootd serve --admin-token).
        #[arg(long)]
        admin_token: PathBuf,
    },
    /// Convert Grendel's hosts and images JSON into an inventory (TOML).
    ///
    /// Absolute paths on the Grendel server (/var/lib/grendel/vmlinuz)
    /// become their file name, to be copied into bootd's root; each is
    /// listed on stderr.
    ImportGrendel {
        /// Grendel's JSON files, in any order: hosts (model.Host) and boot
        /// images (model.BootImage, told by their `kernel`), each file an
        /// array or a single object (`import-grendel hosts.json images.json`).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
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

fn import_grendel(files: &[PathBuf], output: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let (text, notes) = nodeboot_boot_server::inventory::import_grendel_paths(files)?;
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

/// `bootd arm`: `POST /admin/arm?host=&for=` to the running bootd.
fn arm(host: &str, for_: Duration, url: &str, token_file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use std::io::{Read, Write};
    let token = nodeboot_boot_server::server::read_admin_token(token_file)?;
    let authority = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .with_context(|| format!("--url {url:?}: want http://HOST:PORT"))?;
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        bail!("bad host name {host:?}");
    }
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = std::net::TcpStream::connect(&addr)
        .with_context(|| format!("connecting to bootd at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = zeroize::Zeroizing::new(format!(
        "POST /admin/arm?host={host}&for={} HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        for_.as_secs(),
        token.as_str()
    ));
    s.write_all(req.as_bytes())
        .with_context(|| format!("sending to {addr}"))?;
    let mut answer = String::new();
    s.take(64 * 1024)
        .read_to_string(&mut answer)
        .with_context(|| format!("reading bootd's answer from {addr}"))?;
    let status = answer.split(' ').nth(1).unwrap_or("");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    if status != "200" {
        bail!("bootd at {addr} refused: {body}");
    }
    println!("{body}");
    Ok(())
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
            state,
            admin_token,
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
                state,
                admin_token,
            },
            port_file.as_deref(),
        ),
        Cmd::Arm {
            host,
            for_,
            url,
            admin_token,
        } => arm(&host, for_, &url, &admin_token),
        Cmd::ImportGrendel { files, output } => import_grendel(&files, output.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
