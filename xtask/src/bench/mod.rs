//! `cargo xtask bench …`: nodeboot's speed next to the tools it replaces.
//!
//! One module per bench; this one holds the CLI and what several share
//! (the tmpfs scratch, nginx, medians, CPU accounting).
//!
//! `bench fetch` ([`fetch`]): one incompressible file in a tmpfs, served by nginx
//! (sendfile) on 127.0.0.1; downloads into the same tmpfs with
//! `curl -o`, `curl | sha256sum` and `nodectl fetch --sha256`, interleaved
//! over several rounds; median throughput per tool and the ratios.
//!
//! `bench image` ([`image`], its tree from [`tree`]): `nodeimg build` against `mksquashfs -comp zstd` on the same
//! generated root tree (real binaries from this machine, generated text, large
//! random and semi-compressible files, duplicates, symlinks, hardlinks; cached
//! under `$NODEBOOT_CACHE`), read from the page cache, images written into a
//! tmpfs, interleaved over several rounds; median time and image size per tool
//! and the ratios, every image checked with unsquashfs.
//!
//! `bench serve` ([`serve`]): bootd against nginx, many concurrent clients
//! downloading the live image in Range chunks from a tmpfs on 127.0.0.1.
//!
//! `bench boot` ([`boot`]): the same kernel and live image booted under QEMU
//! by stock dracut livenet and by nodectl's initramfs, interleaved; the
//! console's milestones, medians and the ratio to multi-user.
//! `bench update` ([`update`]): image v1 → v2 where v2 adds one Debian
//! package to the e2e node root; the chunk bytes a node holding v1 fetches
//! for v2, against the whole image, for nodeimg's layout and mksquashfs's.
//!
//! `bench fleet` ([`fleet`]): N nodes in network namespaces on a shaped
//! bridge fetch one image at once: plain bootd, nginx, peer-assisted.
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod boot;
mod fetch;
mod first_job;
mod fleet;
mod image;
mod serve;
mod tree;
mod update;

use fetch::fetch;
use image::{image, ImageOpts};

#[derive(Subcommand)]
pub enum What {
    /// nodectl fetch vs curl -o vs curl | sha256sum, same file, same server, tmpfs.
    Fetch {
        /// Size of the served file in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Rounds; each round runs every tool once (order rotated).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Fail when nodectl is slower than this fraction of `curl -o` (e.g. 0.9).
        #[arg(long)]
        min_ratio: Option<f64>,
        /// Pause before each timed run, so that every run starts from the same
        /// memory state (a VM's balloon reclaims freed pages after ~2 s, and
        /// writing into reclaimed pages costs much more than into recycled ones).
        #[arg(long, default_value_t = 3)]
        settle_secs: u64,
    },
    /// nodeimg build vs mksquashfs (zstd), same generated root tree, images in a tmpfs.
    Image {
        /// Size of the generated tree in MiB (built once, cached under $NODEBOOT_CACHE).
        #[arg(long, default_value_t = 512)]
        size_mib: u64,
        /// Rounds; each round runs every tool once (order alternating).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// zstd compression level, for both tools.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=22))]
        level: u32,
        /// Run only this tool (no ratios): to time one side alone.
        #[arg(long, value_enum)]
        only: Option<ImageTool>,
        /// Use this nodeimg binary instead of building target/release/nodeimg.
        #[arg(long)]
        nodeimg: Option<PathBuf>,
        /// Pause before each timed run (same memory state for every run).
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
    },
    /// nodectl's initramfs vs stock dracut dmsquash-live + livenet: the same
    /// kernel and live image booted under QEMU, to multi-user, interleaved.
    Boot {
        /// Rounds; each round boots both (order alternating: a b, b a, …).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Print one JSON object (medians, spread, every run, the ratio) instead of the table.
        #[arg(long)]
        json: bool,
        /// Echo the serial consoles.
        #[arg(long)]
        echo: bool,
    },
    /// bootd vs nginx: concurrent clients downloading the live image in Range
    /// chunks over keep-alive, the same file from a tmpfs on 127.0.0.1.
    Serve {
        /// Concurrent clients, each downloading the whole file once.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Size of each Range request in MiB.
        #[arg(long, default_value_t = 4)]
        chunk_mib: u64,
        /// Rounds; each round runs both servers once (order alternating).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Serve this file (default: the newest cached live image, else
        /// --size-mib of random data).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Size of the generated file when no live image is cached.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Fail when bootd's throughput is below this fraction of nginx's.
        #[arg(long)]
        min_ratio: Option<f64>,
        /// Use this bootd binary instead of building target/release/bootd.
        #[arg(long)]
        bootd: Option<PathBuf>,
        /// nginx's worker_processes (a number, or auto: one per core).
        #[arg(long, default_value = "auto")]
        nginx_workers: String,
        /// Pause before each timed run.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
    },
    /// Time to the first Slurm job under QEMU: the Grendel path (the seed's
    /// shell postscript, `e2e slurm-grendel`) against the native one
    /// (`e2e slurm-user`), booted in turns; medians per milestone and the ratio.
    FirstJob {
        /// Rounds; each round boots both paths once (order alternating).
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Print one JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Chunked update: bytes a node holding image v1 fetches for v2 = v1 + one
    /// package, nodeimg's layout and mksquashfs's, against the full image.
    Update {
        /// The installed package v1 lacks and v2 has.
        #[arg(long, default_value = "ldap-utils")]
        package: String,
        /// zstd compression level of both builders.
        #[arg(long, default_value_t = crate::e2e::LIVE_LEVEL)]
        level: u32,
        /// Chunk-size sets MIN:AVG:MAX in KiB, comma-separated.
        #[arg(long, default_value = "16:64:256", value_delimiter = ',', value_parser = nodeimg_chunk_size)]
        chunk_sizes: Vec<nodeboot_chunks::Params>,
        /// nodeimg's --fragment-group values to build with (0: packed full, as mksquashfs).
        #[arg(long, default_value = "16", value_delimiter = ',')]
        fragment_groups: Vec<u32>,
        /// Use this nodeimg binary instead of building it.
        #[arg(long)]
        nodeimg: Option<PathBuf>,
        /// Print one JSON object (and nothing else) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// A rack reboots at once: N nodectl fetch in their own network
    /// namespaces on one bridge, links shaped with tc (node links and a
    /// server uplink that is the bottleneck); p50/p99/max fetch time and the
    /// server's egress, for plain bootd, nginx and peer-assisted fetch.
    Fleet {
        /// Node counts to run, e.g. 1,10,50,100.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
        nodes: Vec<usize>,
        /// Modes to run, in this order, at each N.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "plain,nginx,peer"
        )]
        modes: Vec<fleet::Mode>,
        /// Size of the image (random bytes) in MiB.
        #[arg(long, default_value_t = 8)]
        image_mib: u64,
        /// Rate of each node's link, each way, in Mbit/s.
        #[arg(long, default_value_t = 10)]
        node_mbit: u32,
        /// Rate of the server's uplink in Mbit/s.
        #[arg(long, default_value_t = 100)]
        server_mbit: u32,
        /// Print one JSON object on stdout (and nothing else there).
        #[arg(long)]
        json: bool,
        /// Use this nodectl binary instead of building the release one.
        #[arg(long)]
        nodectl: Option<PathBuf>,
        /// Use this bootd binary instead of building the release one.
        #[arg(long)]
        bootd: Option<PathBuf>,
        /// Deadline of each node's fetch, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// `MIN:AVG:MAX` in KiB.
fn nodeimg_chunk_size(s: &str) -> std::result::Result<nodeboot_chunks::Params, String> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    let [min, avg, max] = v[..] else {
        return Err(format!("{s:?}: want MIN:AVG:MAX in KiB"));
    };
    let p = nodeboot_chunks::Params {
        min: min << 10,
        avg: avg << 10,
        max: max << 10,
    };
    p.check()?;
    Ok(p)
}

/// The image builders `bench image` compares.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageTool {
    Nodeimg,
    Mksquashfs,
}

pub fn run(what: What) -> Result<()> {
    match what {
        What::FirstJob { rounds, json } => first_job::run(rounds.max(1), json),
        What::Fetch {
            size_mib,
            rounds,
            min_ratio,
            settle_secs,
        } => fetch(
            size_mib,
            rounds.max(1),
            min_ratio,
            Duration::from_secs(settle_secs),
        ),
        What::Image {
            size_mib,
            rounds,
            level,
            only,
            nodeimg,
            settle_secs,
        } => image(&ImageOpts {
            size_mib: size_mib.max(16),
            rounds: rounds.max(1),
            level,
            only,
            nodeimg,
            settle: Duration::from_secs(settle_secs),
        }),
        What::Boot { rounds, json, echo } => boot::run(&boot::Opts {
            rounds: rounds.max(1),
            json,
            echo,
        }),
        What::Serve {
            clients,
            chunk_mib,
            rounds,
            file,
            size_mib,
            min_ratio,
            bootd,
            nginx_workers,
            settle_secs,
        } => serve::run(&serve::Opts {
            clients: clients.max(1),
            chunk_mib,
            rounds: rounds.max(1),
            file,
            size_mib: size_mib.max(1),
            min_ratio,
            bootd,
            nginx_workers,
            settle: Duration::from_secs(settle_secs),
        }),
        What::Update {
            package,
            level,
            chunk_sizes,
            fragment_groups,
            nodeimg,
            json,
        } => update::update(&update::UpdateOpts {
            package,
            level,
            chunk_sizes,
            fragment_groups,
            nodeimg,
            json,
        }),
        What::Fleet {
            nodes,
            modes,
            image_mib,
            node_mbit,
            server_mbit,
            json,
            nodectl,
            bootd,
            timeout,
        } => {
            if nodes.is_empty() || nodes.contains(&0) || nodes.iter().any(|&n| n > 1000) {
                bail!("--nodes {nodes:?}: want counts from 1 to 1000");
            }
            fleet::run(&fleet::Opts {
                nodes,
                modes,
                image_mib: image_mib.max(1),
                node_mbit: node_mbit.max(1),
                server_mbit: server_mbit.max(1),
                json,
                nodectl,
                bootd,
                timeout: Duration::from_secs(timeout.max(1)),
            })
        }
    }
}

const NGINX: &str = "/usr/sbin/nginx";
const TMPFS_MAGIC: i64 = 0x0102_1994;
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Fail unless `tool` is on PATH (or exists, for a path); `who` needs it,
/// `packages` provide it.
fn which(tool: &str, who: &str, packages: &str) -> Result<()> {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    };
    if !found {
        bail!("{who} needs {tool} (Debian packages {packages})");
    }
    Ok(())
}

/// `size` bytes of xorshift output (incompressible for any transport
/// compression); returns their sha256.
fn write_random(path: &Path, size: u64) -> Result<String> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut h = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// A scratch directory in a tmpfs: /dev/shm when it is one with room enough,
/// else a tmpfs mounted for the bench under /tmp (root). Removed (unmounted) on drop.
struct Scratch {
    path: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn new(need: u64) -> Result<Scratch> {
        let shm = Path::new("/dev/shm");
        if let Some(free) = tmpfs_free(shm) {
            if free > need {
                let path = shm.join(format!("nodeboot-bench-{}", std::process::id()));
                std::fs::create_dir_all(&path)?;
                return Ok(Scratch {
                    path,
                    mounted: false,
                });
            }
        }
        if !crate::deps::nix_is_root() {
            bail!("the bench needs a tmpfs with {} MiB free: /dev/shm is too small and mounting one needs root", need >> 20);
        }
        let path = std::env::temp_dir().join(format!("nodeboot-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        crate::build::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={}M,mode=0755", (need >> 20) + 64))
                .arg("nodeboot-bench")
                .arg(&path),
        )?;
        Ok(Scratch {
            path,
            mounted: true,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
            let _ = std::fs::remove_dir(&self.path);
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Free bytes of `p` if it is a tmpfs.
fn tmpfs_free(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct we own; c is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    (s.f_type as i64 == TMPFS_MAGIC).then(|| s.f_bavail as u64 * s.f_bsize as u64)
}

/// nginx with its own config, in the foreground; stopped (SIGTERM, then
/// SIGKILL) on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    /// One worker, 64 connections: `bench fetch`'s single client.
    fn start(dir: &Path, www: &Path) -> Result<Nginx> {
        Nginx::start_with(dir, www, "1", 64)
    }

    /// `workers`: `worker_processes` (a number or `auto`); `connections`:
    /// `worker_connections`.
    fn start_with(dir: &Path, www: &Path, workers: &str, connections: u32) -> Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Nginx::start_in(
            dir,
            www,
            workers,
            connections,
            &format!("127.0.0.1:{port}"),
            None,
        )
    }

    /// Listening on `listen` (`ADDR:PORT`), inside network namespace
    /// `netns` when given (`ip netns exec`).
    fn start_in(
        dir: &Path,
        www: &Path,
        workers: &str,
        connections: u32,
        listen: &str,
        netns: Option<&str>,
    ) -> Result<Nginx> {
        let port: u16 = listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .with_context(|| format!("nginx listen address {listen:?}: no port"))?;
        let conf_dir = dir.join("nginx");
        std::fs::create_dir_all(conf_dir.join("tmp"))?;
        let d = conf_dir.display();
        let conf = format!(
            "daemon off;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {listen};
        root {};
    }}
}}
",
            www.display()
        );
        let conf_file = conf_dir.join("nginx.conf");
        std::fs::write(&conf_file, conf)?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, NGINX]);
                c
            }
            None => Command::new(NGINX),
        };
        let child = cmd
            .arg("-p")
            .arg(&conf_dir)
            .arg("-e")
            .arg(conf_dir.join("error.log"))
            .arg("-c")
            .arg(&conf_file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {NGINX} -c {}", conf_file.display()))?;
        let mut n = Nginx { child, port };
        let t = Instant::now();
        let listening = || match netns {
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-Htln"])
                .arg(format!("sport = :{port}"))
                .output()
                .is_ok_and(|o| !o.stdout.is_empty()),
            None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !listening() {
            if let Some(st) = n.child.try_wait()? {
                let log = std::fs::read_to_string(conf_dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({st}) before listening on {listen}: {log}");
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not listen on {listen} within 10s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `max` bytes of a command's output, as text.
fn tail(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[b.len().saturating_sub(max)..]);
    s.trim().to_string()
}

/// User + system CPU seconds of all waited-for children so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The machine's busy CPU seconds (user, nice, system, irq, softirq) and
/// stolen seconds so far, from /proc/stat.
fn machine_cpu() -> Result<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let f: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 8 {
        bail!("/proc/stat: unexpected first line");
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(((f[0] + f[1] + f[2] + f[5] + f[6]) / hz, f[7] / hz))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Read every regular file under `root` (into the page cache); files, bytes.
fn read_tree(root: &Path) -> Result<(u64, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut files, mut bytes) = (0, 0);
    walk(root, &mut |p, m| {
        if m.is_file() {
            let mut f =
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            loop {
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", p.display()))?;
                if n == 0 {
                    break;
                }
                bytes += n as u64;
            }
            files += 1;
        }
        Ok(())
    })?;
    Ok((files, bytes))
}

/// Visit every entry under `dir` (not `dir` itself), sorted by name, depth
/// first, without following symlinks.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<()>) -> Result<()> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        names.push(
            e.with_context(|| format!("reading {}", dir.display()))?
                .path(),
        );
    }
    names.sort();
    for p in names {
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        f(&p, &m)?;
        if m.is_dir() {
            walk(&p, f)?;
        }
    }
    Ok(())
}
