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
        /// The image (plain path); not needed with --index.
        #[arg(required_unless_present = "index")]
        url: Option<String>,
        /// Another origin of the same file, tried in order after URL when it
        /// fails (repeatable; as nodeboot.mirror= on the kernel command line).
        #[arg(long = "mirror", value_name = "URL")]
        mirrors: Vec<String>,
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
        /// Assemble the image from the chunks of this casync index (.caibx)
        /// instead of downloading it whole; needs --index-sha256 and --sha256.
        #[arg(long, requires_all = ["index_sha256", "sha256"])]
        index: Option<String>,
        /// Pinned sha256 of the index file (index_sha256 in NAME.json).
        #[arg(long)]
        index_sha256: Option<String>,
        /// Chunk store URL, repeatable: mirrors tried in order (default: store/ beside the index).
        #[arg(long, requires = "index")]
        store: Vec<String>,
        /// A local image whose chunks may be reused (its NAME.caibx beside it), repeatable.
        #[arg(long, requires = "index")]
        seed: Vec<PathBuf>,
        /// Chunks in flight at once.
        #[arg(long, default_value_t = 4, requires = "index")]
        parallel: usize,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Serve the chunks of a local image to peers (the booted node's
    /// nodectl-serve-chunks.service), its claim renewed with bootd.
    ///
    /// Every chunk of INDEX is checked against IMAGE first (nothing is
    /// served from an image that does not match); each chunk is hashed
    /// again before it is sent. Runs until stopped.
    ServeChunks {
        /// The verified image (the initramfs leaves it in /run/nodeboot).
        #[arg(long, default_value = "/run/nodeboot/live.squashfs")]
        image: PathBuf,
        /// Its chunk index (casync .caibx).
        #[arg(long, default_value = "/run/nodeboot/live.caibx")]
        index: PathBuf,
        /// Address and port to serve on.
        #[arg(long, default_value = "0.0.0.0:7070")]
        listen: std::net::SocketAddr,
        /// bootd's URL, told that this node serves the image (default:
        /// grendel.address of the kernel command line; none: no claim).
        #[arg(long)]
        bootd: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
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
    ///
    /// Native path: with nodeboot.postscripts=ssh://… (or [repo] url in
    /// provision.toml) read the deploy key from the key partition, clone the
    /// postscripts repository (host key pinned), apply its node.toml, run its
    /// post.sh; node.toml's services are then started by start-services.
    Provision,
    /// This host's secrets from bootd, sealed to the node's key:
    /// `secret fetch munge.key --dest /etc/munge/munge.key --owner munge`.
    Secret {
        #[command(subcommand)]
        what: nodeboot_agent::secret::Cmd,
    },
    /// This node's key (on its key partition, or sealed in its TPM): make it,
    /// show it, enroll it with bootd.
    Identity {
        #[command(subcommand)]
        what: nodeboot_agent::identity::Cmd,
    },
    /// Start node.toml's [services] in order, each within its timeout (run by
    /// nodectl-services.service after nodectl-provision.service); nothing is
    /// started when provisioning failed.
    StartServices,
    /// Apply a node.toml: mounts (by UUID, NFS, with a bounded wait) and the
    /// storage layout's symlinks. Idempotent; stops at the first entry that
    /// cannot be applied, naming it.
    Apply {
        /// The node.toml to apply.
        file: PathBuf,
        /// Apply under this directory instead of / (tests, images).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
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
    /// Partition and format a node's local disk: GPT, an optional key partition, one data
    /// filesystem created with the UUID (and label) you give. Safe and idempotent.
    ///
    /// Prints the disk's model, serial, size, what is on it now and the plan before
    /// writing anything; --dry-run stops there. Refuses, naming the device and the reason,
    /// rather than touch a disk in use or holding data.
    #[command(after_help = FORMAT_DISK_HELP)]
    FormatDisk {
        /// The whole disk; a stable name is safer: /dev/disk/by-id/nvme-…
        device: PathBuf,
        /// Filesystem of the data partition: xfs, ext4 or btrfs.
        #[arg(long, value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["xfs", "ext4", "btrfs"]),
            |s| s.parse::<nodeboot_agent::disk::Fs>().expect("one of the listed values")))]
        fs: nodeboot_agent::disk::Fs,
        /// UUID of the data filesystem (8-4-4-4-12 hex digits; `uuidgen` makes one);
        /// the node mounts /dev/disk/by-uuid/UUID.
        #[arg(long, value_parser = |s: &str| s.parse::<nodeboot_agent::disk::Uuid>())]
        uuid: nodeboot_agent::disk::Uuid,
        /// Label of the data filesystem (at most xfs 12, ext4 16, btrfs 255 bytes).
        #[arg(long)]
        label: Option<String>,
        /// Make a partition for the deploy key first (ext4, GPT name and label
        /// nodeboot-key) of SIZE, e.g. 64M (8M to 1G, whole MiB); the data partition
        /// takes the rest.
        #[arg(long, value_name = "SIZE", value_parser = nodeboot_agent::disk::plan::parse_key_size)]
        key_partition: Option<u64>,
        /// Make a partition for the live image cache (ext4, GPT name and label
        /// nodeboot-cache) of SIZE, e.g. 1G (at least 64M, whole MiB; give it twice
        /// the live image), after the key partition; `nodectl initrd` keeps the
        /// images it verified there and boots an unchanged image without downloading it.
        #[arg(long, value_name = "SIZE", value_parser = nodeboot_agent::disk::plan::parse_cache_size)]
        cache_partition: Option<u64>,
        /// Erase existing partition tables and filesystem signatures first. Never
        /// allowed on the disk of the running root, the live image cache or the boot medium.
        #[arg(long)]
        wipe: bool,
        /// Print the facts and the plan and run every check; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout (the text goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Write the deploy key on the key partition (made by format-disk --key-partition)
    /// as the file `key`, mode 0600, owner root; read it back and compare.
    #[command(after_help = INSTALL_KEY_HELP)]
    InstallKey {
        /// The key partition, or the whole disk (its partition named nodeboot-key is used).
        device: PathBuf,
        /// The private key to install (never printed).
        keyfile: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `nodectl fetch --index`'s peer-assisted mode.
#[derive(clap::Args)]
struct PeerArgs {
    /// bootd's URL: ask it which peers hold the image (GET /peers) and, with
    /// --serve-chunks, tell it this node serves what it verified (POST /peers).
    #[arg(long, value_name = "BOOTD_URL", requires = "index")]
    peers: Option<String>,
    /// A peer to ask for chunks (ADDR:PORT; repeatable), besides bootd's.
    #[arg(long = "peer", value_name = "ADDR:PORT", requires = "index")]
    peer: Vec<std::net::SocketAddr>,
    /// Serve the chunks verified so far to peers on this address while
    /// fetching (and for --linger seconds after the report).
    #[arg(long, value_name = "ADDR:PORT", requires = "index")]
    serve_chunks: Option<std::net::SocketAddr>,
    /// After the report, keep serving for this many seconds.
    #[arg(long, default_value_t = 0, requires = "serve_chunks")]
    linger: u64,
    #[command(flatten)]
    limits: LimitArgs,
}

impl PeerArgs {
    /// The swarm's options; `None` when no peer source was asked for.
    fn options(&self) -> Option<nodeboot_agent::fetch::chunked::PeerOptions> {
        (self.peers.is_some() || !self.peer.is_empty() || self.serve_chunks.is_some()).then(|| {
            nodeboot_agent::fetch::chunked::PeerOptions {
                bootd: self.peers.clone(),
                peers: self.peer.clone(),
                serve: self.serve_chunks,
                limits: self.limits.limits(),
            }
        })
    }
}

/// What a node's chunk server allows.
#[derive(clap::Args)]
struct LimitArgs {
    /// Upload rate to peers, bytes per second, all connections together (0: unlimited).
    #[arg(long, default_value_t = 50_000_000)]
    upload_rate: u64,
    /// Peer connections served at once.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_peer_connections: u64,
}

impl LimitArgs {
    fn limits(&self) -> nodeboot_agent::peer::server::Limits {
        nodeboot_agent::peer::server::Limits {
            connections: self.max_peer_connections as usize,
            rate: self.upload_rate,
        }
    }
}

const FORMAT_DISK_HELP: &str = "\
Examples:
  # look first: facts, what is on the disk, the plan, and whether it would be refused
  nodectl format-disk /dev/disk/by-id/nvme-EXAMPLE_SN123 --fs xfs \\
      --uuid 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11 --key-partition 64M --dry-run
  # a blank disk: partition 1 for the key (64 MiB), partition 2 xfs over the rest
  nodectl format-disk /dev/nvme0n1 --fs xfs --uuid 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11 \\
      --label scratch --key-partition 64M
  # also a 2 GiB live image cache (partition 2, nodeboot-cache); xfs is partition 3
  nodectl format-disk /dev/nvme0n1 --fs xfs --uuid 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11 \
      --key-partition 64M --cache-partition 2G
  # a disk used before: erase what is on it first
  nodectl format-disk /dev/sdb --fs ext4 --uuid 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11 --wipe
  # then the deploy key
  nodectl install-key /dev/nvme0n1 ./deploy_key

What it does: (with --wipe) erase the signatures in each old partition and on the disk;
write a GPT with 1 MiB-aligned partitions (nodeboot-key, nodeboot-cache, nodeboot-data); mkfs with the
UUID and label; re-read the partition table and wait for udev until
/dev/disk/by-uuid/UUID exists. Run again with the same options on a disk that has that
layout, filesystem, UUID (and label), it writes nothing and prints \"already formatted\".
If mkfs (or anything after the partition table) fails, the disk is reset to an empty
GPT: never a half-made filesystem under your UUID.

Refused, nothing written (the message names the device and the reason):
  not a block device, or a partition instead of a whole disk; read-only;
  a partition mounted, in use as swap, or held by device-mapper or md;
  a partition table or filesystem already there (unless --wipe);
  a --uuid that /dev/disk/by-uuid already gives to another device;
  the disk holding the running root, the live image cache (/run/nodeboot) or the
  boot medium (/boot, /efi) -- even with --wipe.

Exit status:
  0  formatted; already formatted; or --dry-run and nothing against it
  3  refused: nothing was written
  4  failed after the partition table was written: the disk was reset to an empty GPT
  2  bad command line (UUID, label length, --key-partition or --cache-partition size)
  1  anything else (reading the disk, wiping, /dev/disk/by-uuid/UUID not made by udev)

See also: man nodectl-format-disk";

const INSTALL_KEY_HELP: &str = "\
Example:
  nodectl install-key /dev/disk/by-id/nvme-EXAMPLE_SN123 ./deploy_key

DEVICE is mounted (ext4, nosuid,nodev,noexec) on a private directory under /run, the key
is written to a temporary file (0600, root:root), synced and renamed to `key`, read back
and compared, and the partition is unmounted on every path. The key is never printed.

Exit status:
  0  installed and read back
  1  not a key partition, no ext4 on it, empty or oversized KEYFILE, I/O error";

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
    // `NAME generate-docs DIR`: man pages and completions (cargo xtask dist).
    nodeboot_clidocs::run_if_asked(<Cli as clap::CommandFactory>::command);
    nodeboot_agent::log::init("NODECTL_LOG", nodeboot_agent::log::Console::Mirror);
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
            mirrors,
            output,
            sha256,
            no_sidecar,
            ca_file,
            timeout,
            index,
            index_sha256,
            store,
            seed,
            parallel,
            peer,
        } => {
            let opts = nodeboot_agent::fetch::FetchOptions {
                expected_sha256: sha256.clone(),
                sidecar: !no_sidecar,
                ca_file,
                deadline: std::time::Duration::from_secs(timeout),
                ..Default::default()
            };
            if let (Some(index_url), Some(index_sha256), Some(image_sha256)) =
                (index, index_sha256, sha256)
            {
                let o = nodeboot_agent::fetch::chunked::ChunkedOptions {
                    index_url,
                    index_sha256,
                    image_sha256,
                    stores: store,
                    seeds: seed,
                    parallel,
                    http: opts,
                    peers: peer.options(),
                };
                return match nodeboot_agent::fetch::chunked::fetch_chunked_serving(&output, &o) {
                    Ok((r, serving)) => {
                        println!("{}", serde_json::to_string(&r)?);
                        if serving.is_some() && peer.linger > 0 {
                            std::thread::sleep(std::time::Duration::from_secs(peer.linger));
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("nodectl: error: {e:#}");
                        Ok(ExitCode::from(e.exit_code()))
                    }
                };
            }
            let url = url.expect("clap: URL is required without --index");
            let origins: Vec<String> = std::iter::once(url).chain(mirrors).collect();
            match nodeboot_agent::fetch::fetch_from(&origins, &output, &opts) {
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
        Cmd::ServeChunks {
            image,
            index,
            listen,
            bootd,
            limits,
        } => {
            let bootd = bootd.or_else(|| {
                nodeboot_agent::cmdline::Cmdline::from_path(std::path::Path::new("/proc/cmdline"))
                    .ok()?
                    .value("grendel.address")
                    .map(str::to_string)
            });
            let (s, sha, _stop) = nodeboot_agent::peer::serve_image(
                &image,
                &index,
                listen,
                bootd.as_deref(),
                limits.limits(),
            )?;
            eprintln!(
                "nodectl serve-chunks: serving the chunks of {} (sha256 {sha}) on {}{}",
                image.display(),
                s.local_addr(),
                bootd
                    .map(|b| format!(", claimed with {b}"))
                    .unwrap_or_default()
            );
            loop {
                std::thread::park();
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
        Cmd::StartServices => {
            let st = nodeboot_agent::native::start_services(&Default::default(), "systemctl");
            if let Some(e) = &st.error {
                eprintln!("nodectl start-services: FAILED: {e}");
                return Ok(ExitCode::from(1));
            }
            eprintln!("nodectl start-services: {} ({:.1}s)", st.phase, st.seconds);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Secret { what } => nodeboot_agent::secret::run(what).map(|()| ExitCode::SUCCESS),
        Cmd::Identity { what } => nodeboot_agent::identity::run(what).map(|()| ExitCode::SUCCESS),
        Cmd::Apply { file, root } => {
            let n = nodeboot_agent::nodetoml::load(&file)?;
            // Sources ([[file]], [[ca]], [ssh]) are relative to node.toml's directory.
            let repo = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            for line in nodeboot_agent::nodetoml::apply(
                &n,
                &repo,
                &root,
                std::path::Path::new("/proc/self/mountinfo"),
            )? {
                println!("{line}");
            }
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
        Cmd::FormatDisk {
            device,
            fs,
            uuid,
            label,
            key_partition,
            cache_partition,
            wipe,
            dry_run,
            json,
        } => {
            if let Some(l) = &label {
                if let Err(e) = nodeboot_agent::disk::plan::check_label(fs, l) {
                    use clap::CommandFactory;
                    Cli::command()
                        .error(clap::error::ErrorKind::ValueValidation, e)
                        .exit();
                }
            }
            let req = nodeboot_agent::disk::FormatRequest {
                device,
                fs,
                uuid,
                label,
                key_partition,
                cache_partition,
                wipe,
                dry_run,
            };
            format_disk(&req, json)
        }
        Cmd::InstallKey {
            device,
            keyfile,
            json,
        } => {
            let r = nodeboot_agent::disk::key::install_key(
                &device,
                &keyfile,
                &Default::default(),
                &Default::default(),
            )?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "installed the key on {} as {} ({} bytes, mode {}, owner {}), read back and compared",
                    r.partition.display(),
                    r.file,
                    r.bytes,
                    r.mode,
                    r.owner
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `nodectl format-disk`: the text (stdout, or stderr with --json) before
/// anything is written, the result line or JSON at the end.
fn format_disk(req: &nodeboot_agent::disk::FormatRequest, json: bool) -> Result<ExitCode> {
    use nodeboot_agent::disk::{format_disk, Report};
    use std::io::Write;
    let mut shown: Option<Report> = None;
    let text = |s: &str| {
        if json {
            eprint!("{s}");
        } else {
            print!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    let r = format_disk(
        req,
        &Default::default(),
        &Default::default(),
        &mut |r: &Report| {
            text(&r.human());
            shown = Some(r.clone());
        },
    );
    match r {
        Ok(r) => {
            let data = r
                .plan
                .iter()
                .find(|p| p.part.role == nodeboot_agent::disk::plan::Role::Data);
            let what = data
                .map(|p| format!("{} {} UUID {}", p.device.display(), p.part.fs, req.uuid))
                .unwrap_or_default();
            let link = r
                .by_uuid
                .as_ref()
                .map(|l| format!(" ({})", l.display()))
                .unwrap_or_default();
            let line = match r.result.as_deref() {
                Some("already-formatted") => {
                    format!("already formatted: {what}{link}; nothing written\n")
                }
                Some("dry-run") => format!(
                    "dry run: nothing written; without --dry-run: {}write the GPT and make {what}\n",
                    if req.wipe { "wipe the signatures, " } else { "" }
                ),
                _ => format!("formatted: {what}{link} in {:.1} s\n", r.seconds),
            };
            text(&line);
            if json {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("nodectl: error: {e}");
            if json {
                let mut r = shown
                    .map(serde_json::to_value)
                    .transpose()?
                    .unwrap_or_else(|| serde_json::json!({ "device": req.device }));
                r["result"] = (if e.exit_code() == 3 {
                    "refused"
                } else {
                    "failed"
                })
                .into();
                r["error"] = e.to_string().into();
                println!("{r}");
            }
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
