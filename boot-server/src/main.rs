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
page. The status is kept in memory, and with --state in DIR/nodes.redb.
GET /metrics: counters in the Prometheus text format (no token).

GET /nodes and GET / need the admin token (--admin-token FILE; Authorization:
Bearer TOKEN, or Basic with the token as password in a browser).

Node identity: each node holds a key; bootd keeps the public keys in
--state DIR/keys/HOST.pub. A node enrolls its key (POST /identity/enroll)
once while armed (bootd arm HOST, or enroll = true in the inventory for its
first key, or a key = \"SHA256:…\" pin). With --secrets, GET /secrets/NAME
signed by the host's key answers DIR/HOST/NAME sealed to that key (age).
Status posts of a host with a key must be signed by it.

With --tls-listen, --tls-cert and --tls-key, the same is served over HTTPS
(rustls: TLS 1.3 and 1.2) beside HTTP.

Signals: SIGHUP reloads the inventory, the secrets directory's checks, the
admin token and the TLS certificate and key (a file that does not load is
logged and the previous one kept); SIGTERM or SIGINT stops accepting, lets
responses in flight finish within --stop-timeout, and exits 0. Under
systemd (Type=notify) bootd reports READY, RELOADING and STOPPING.")]
    Serve {
        /// Read the options from this TOML file (keys as the flags, with _
        /// for -; see bootd.toml); flags given here win over it. Without
        /// it no file is read (the packaged unit passes
        /// --config /etc/nodeboot/bootd.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        opts: nodeboot_boot_server::config::Options,
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

fn ttl(s: &str) -> Result<Duration, String> {
    nodeboot_boot_server::secrets::parse_ttl(s)
}

/// `bootd serve`: the flags over the `--config` file, then the server.
fn serve(
    config: Option<&std::path::Path>,
    flags: nodeboot_boot_server::config::Options,
) -> anyhow::Result<()> {
    let file = match config {
        Some(p) => nodeboot_boot_server::config::Options::load(p)?,
        None => Default::default(),
    };
    let (listen, cfg, port_file) = flags.over(file).resolve()?;
    nodeboot_boot_server::server::run(&listen, &cfg, port_file.as_deref())
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
    // `NAME generate-docs DIR`: man pages and completions (cargo xtask dist).
    nodeboot_clidocs::run_if_asked(<Cli as clap::CommandFactory>::command);
    nodeboot_common::log::init("BOOTD_LOG", nodeboot_common::log::Console::Off);
    let r = match Cli::parse().cmd {
        Cmd::Serve { config, opts } => serve(config.as_deref(), opts),
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
