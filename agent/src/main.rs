use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "nodectl", version, about = "nodeboot node agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fetch a file over http(s) with sha256 verification, resume and retries.
    ///
    /// Prints the report (JSON) on stdout; progress and retries go to stderr.
    #[command(after_help = "\
The file is written to FILE.part and renamed to FILE only once its sha256 is verified.

Exit status:
  0  downloaded and verified
  3  sha256 mismatch (nothing left at FILE)
  4  deadline reached: server unreachable or failing (retried until --timeout)
  5  HTTP error that is not retried (404, 403, ...), also for URL.sha256
  2  bad command line
  1  anything else (TLS certificate, bad arguments, local file errors, bad sidecar)")]
    Fetch {
        url: String,
        #[arg(short, long)]
        output: PathBuf,
        /// Expected sha256 (hex). Without it, URL.sha256 is fetched unless --no-sidecar.
        #[arg(long)]
        sha256: Option<String>,
        /// Do not look for URL.sha256 when --sha256 is absent (no verification).
        #[arg(long)]
        no_sidecar: bool,
        /// Extra CA roots (PEM) for https.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Overall deadline in seconds, retries included.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Print how this node booted (from /run/nodeboot/boot.json) as one JSON line.
    Status {
        #[arg(long, default_value = "/run/nodeboot/boot.json")]
        record: PathBuf,
    },
    /// After boot (run by nodectl-provision.service): the site's provisioning.
    ///
    /// Grendel compatibility: with nodeboot.postscript=1 on the kernel command
    /// line (or [postscript] enabled = true in /etc/nodeboot/provision.toml),
    /// fetch {grendel.address}/repo/postscript.sh with retries and run it as
    /// `sh postscript.sh HOSTNAME` under a timeout. Every phase goes to
    /// /run/nodeboot/status.json; exits 1 when a step failed.
    Provision,
    /// The initramfs step (run by nodectl-live.service): network, fetch, mount /sysroot.
    Initrd,
    /// Bring up the boot NIC (BOOTIF MAC) and configure it (DHCP or ip=); prints JSON.
    NetUp {
        /// MAC of the NIC (aa:bb:cc:dd:ee:ff); default: the first Ethernet link.
        #[arg(long)]
        mac: Option<String>,
        /// dracut-style ip= value (repeatable); default dhcp.
        #[arg(long)]
        ip: Vec<String>,
        /// Bound in seconds for link + address.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Directory where resolv.conf is written.
        #[arg(long, default_value = "/etc")]
        etc: PathBuf,
    },
}

/// Read by `nodeimg build` from the binary in an image, for its manifest
/// (`nodectl_version`); the marker is `nodeimg::build::NODECTL_VERSION_MARKER`.
#[used]
static VERSION_MARKER: [u8; MARKER_LEN] = marker();
const MARKER: &str = concat!("NODEBOOT_NODECTL_VERSION=", env!("CARGO_PKG_VERSION"), "\0");
const MARKER_LEN: usize = MARKER.len();
const fn marker() -> [u8; MARKER_LEN] {
    let mut out = [0u8; MARKER_LEN];
    let b = MARKER.as_bytes();
    let mut i = 0;
    while i < MARKER_LEN {
        out[i] = b[i];
        i += 1;
    }
    out
}

fn main() -> ExitCode {
    nodeboot_agent::log::init("NODECTL_LOG");
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nodectl: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Fetch {
            url,
            output,
            sha256,
            no_sidecar,
            ca_file,
            timeout,
        } => {
            let opts = nodeboot_agent::fetch::FetchOptions {
                expected_sha256: sha256,
                sidecar: !no_sidecar,
                ca_file,
                deadline: std::time::Duration::from_secs(timeout),
                ..Default::default()
            };
            match nodeboot_agent::fetch::fetch(&url, &output, &opts) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("nodectl: error: {e:#}");
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
        Cmd::Status { record } => {
            let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
            // `systemctl is-active` exits non-zero for any state but active.
            let mu = nodeboot_agent::cmd::run(&["systemctl", "is-active", "multi-user.target"])
                .map(|o| o.trim().to_string())
                .unwrap_or_else(|e| format!("not active ({e:#})"));
            let s = nodeboot_agent::status::status(
                &record,
                &host,
                &mu,
                std::path::Path::new("/proc/uptime"),
            )?;
            println!(
                "{}{}",
                nodeboot_agent::status::PREFIX,
                serde_json::to_string(&s)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Provision => {
            let host = nix::unistd::gethostname()?.to_string_lossy().into_owned();
            let st = nodeboot_agent::provision::run(&Default::default(), &host);
            if let Some(e) = &st.error {
                eprintln!("nodectl provision: FAILED: {e}");
                return Ok(ExitCode::from(1));
            }
            eprintln!("nodectl provision: {} ({:.1}s)", st.phase, st.seconds);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Initrd => {
            let paths = nodeboot_agent::initrd::Paths::default();
            if let Err(e) = nodeboot_agent::initrd::run(&paths) {
                eprintln!("{}", nodeboot_agent::initrd::failure_banner(&e));
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::NetUp {
            mac,
            ip,
            timeout,
            etc,
        } => {
            use anyhow::Context;
            use nodeboot_agent::cmdline::{parse_ip, Mac};
            let bootif = mac
                .map(|m| {
                    m.parse::<Mac>()
                        .map_err(|_| anyhow::anyhow!("--mac {m}: expected aa:bb:cc:dd:ee:ff"))
                })
                .transpose()?;
            let ip = ip
                .iter()
                .map(|v| parse_ip(v))
                .collect::<Result<Vec<_>, _>>()
                .context("--ip")?;
            let cfg = nodeboot_agent::net::NetConfig {
                bootif,
                ip,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let r = nodeboot_agent::net::bring_up(&cfg, &etc)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
