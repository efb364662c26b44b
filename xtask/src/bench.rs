//! `cargo xtask bench …`: nodeboot's speed next to the tools it replaces.
//!
//! `bench fetch`: one incompressible file in a tmpfs, served by nginx
//! (sendfile) on 127.0.0.1; downloads into the same tmpfs with
//! `curl -o`, `curl | sha256sum` and `nodectl fetch --sha256`, interleaved
//! over several rounds; median throughput per tool and the ratios.
//!
//! `bench image`: `nodeimg build` against `mksquashfs -comp zstd` on the same
//! generated root tree (real binaries from this machine, generated text, large
//! random and semi-compressible files, duplicates, symlinks, hardlinks; cached
//! under `$NODEBOOT_CACHE`), read from the page cache, images written into a
//! tmpfs, interleaved over several rounds; median time and image size per tool
//! and the ratios, every image checked with unsquashfs.
//!
//! `bench serve` ([`serve`]): bootd against nginx, many concurrent clients
//! downloading the live image in Range chunks from a tmpfs on 127.0.0.1.
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod first_job;
mod serve;

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
    }
}

const NGINX: &str = "/usr/sbin/nginx";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The tools compared, as shown in the table.
const TOOLS: [&str; 3] = ["curl -o", "curl | sha256sum", "nodectl fetch"];

fn fetch(size_mib: u64, rounds: u32, min_ratio: Option<f64>, settle: Duration) -> Result<()> {
    for tool in ["curl", "sha256sum", "bash", NGINX] {
        which(tool, "bench fetch", "nginx-light, curl, coreutils")?;
    }
    let nodectl = crate::build::nodectl_static()?;
    let size = size_mib << 20;
    let dir = Scratch::new(2 * size + (64 << 20))?;
    let www = dir.path.join("www");
    std::fs::create_dir_all(&www)?;
    let file = www.join("live.squashfs");
    eprintln!(
        "xtask: bench fetch: writing {size_mib} MiB of random data to {}",
        file.display()
    );
    let digest = write_random(&file, size)?;
    let nginx = Nginx::start(&dir.path, &www)?;
    let url = format!("http://127.0.0.1:{}/live.squashfs", nginx.port);
    let out = dir.path.join("out");

    // One untimed round of every tool: server, binaries and memory warm
    // (the first runs after writing the 1 GiB file were erratic here).
    eprintln!("xtask: bench fetch: warm-up round (not timed)");
    for t in 0..TOOLS.len() {
        time_tool(t, &url, &out, &nodectl, &digest, size)?;
    }
    let mut secs: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        for k in 0..TOOLS.len() {
            // Rotate the order each round, and reverse it every other round,
            // so that no tool always runs right after the same other one.
            let k = if r % 2 == 1 { TOOLS.len() - 1 - k } else { k };
            let t = (k + r as usize) % TOOLS.len();
            std::thread::sleep(settle);
            let s = time_tool(t, &url, &out, &nodectl, &digest, size)?;
            eprintln!(
                "xtask: bench fetch: round {}/{rounds}: {:<17} {:>7.0} MB/s ({s:.2}s)",
                r + 1,
                TOOLS[t],
                size as f64 / 1e6 / s
            );
            secs[t].push(s);
        }
    }
    drop(nginx);

    let mbps: Vec<f64> = secs.iter().map(|v| size as f64 / 1e6 / median(v)).collect();
    println!(
        "\nbench fetch: {size_mib} MiB over http://127.0.0.1 (nginx sendfile, tmpfs), \
         {rounds} rounds, {}s pause before each run, median",
        settle.as_secs()
    );
    for (t, name) in TOOLS.iter().enumerate() {
        let best = secs[t].iter().cloned().fold(f64::INFINITY, f64::min);
        let worst = secs[t].iter().cloned().fold(0.0, f64::max);
        println!(
            "  {name:<17} {:>7.0} MB/s   (range {:.0}-{:.0})",
            mbps[t],
            size as f64 / 1e6 / worst,
            size as f64 / 1e6 / best
        );
    }
    let vs_curl = mbps[2] / mbps[0];
    let vs_pipe = mbps[2] / mbps[1];
    println!("  nodectl / curl -o          {vs_curl:.2}");
    println!("  nodectl / curl | sha256sum {vs_pipe:.2}");
    let report = serde_json::json!({
        "size_mib": size_mib,
        "rounds": rounds,
        "settle_secs": settle.as_secs(),
        "mbps": {
            "curl": mbps[0],
            "curl_sha256sum": mbps[1],
            "nodectl": mbps[2],
        },
        "seconds": {
            "curl": secs[0],
            "curl_sha256sum": secs[1],
            "nodectl": secs[2],
        },
        "ratio_nodectl_curl": vs_curl,
        "ratio_nodectl_curl_sha256sum": vs_pipe,
    });
    let json = crate::build::root().join("target/bench-fetch.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    if let Some(min) = min_ratio {
        if vs_curl < min {
            bail!("nodectl fetch is at {vs_curl:.2}× curl -o, below the required {min}×");
        }
    }
    Ok(())
}

/// Run tool `t` once, check its result, delete its output; seconds taken.
fn time_tool(
    t: usize,
    url: &str,
    out: &Path,
    nodectl: &Path,
    digest: &str,
    size: u64,
) -> Result<f64> {
    let _ = std::fs::remove_file(out);
    let mut cmd = match t {
        0 => {
            let mut c = Command::new("curl");
            c.args(["-s", "-f", "-o"]).arg(out).arg(url);
            c
        }
        // The pipeline as an operator types it; the URL is $0, not spliced in.
        1 => {
            let mut c = Command::new("bash");
            c.args([
                "-o",
                "pipefail",
                "-c",
                r#"curl -s -f "$0" | sha256sum"#,
                url,
            ]);
            c
        }
        _ => {
            let mut c = Command::new(nodectl);
            c.args(["fetch", url, "-o"])
                .arg(out)
                .args(["--sha256", digest])
                .env("NODECTL_LOG", "warn");
            c
        }
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    let start = Instant::now();
    let o = cmd
        .output()
        .with_context(|| format!("running {}", TOOLS[t]))?;
    let secs = start.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("{} failed: {}", TOOLS[t], o.status);
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    match t {
        1 if !stdout.starts_with(digest) => {
            bail!("curl | sha256sum printed {stdout:?}, expected {digest}")
        }
        0 | 2 => {
            let got = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            if got != size {
                bail!("{} wrote {got} bytes, expected {size}", TOOLS[t]);
            }
        }
        _ => {}
    }
    let _ = std::fs::remove_file(out);
    Ok(secs)
}

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
        listen 127.0.0.1:{port};
        root {};
    }}
}}
",
            www.display()
        );
        let conf_file = conf_dir.join("nginx.conf");
        std::fs::write(&conf_file, conf)?;
        let child = Command::new(NGINX)
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
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = n.child.try_wait()? {
                let log = std::fs::read_to_string(conf_dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({st}) before listening on 127.0.0.1:{port}: {log}");
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not listen on 127.0.0.1:{port} within 10s");
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

// ---------------------------------------------------------------------------
// bench image

struct ImageOpts {
    size_mib: u64,
    rounds: u32,
    level: u32,
    only: Option<ImageTool>,
    nodeimg: Option<PathBuf>,
    settle: Duration,
}

/// The builders, as shown in the table and keyed in the JSON.
const IMAGE_TOOLS: [&str; 2] = ["nodeimg", "mksquashfs"];

/// One timed build.
struct ImageRun {
    round: u32,
    /// 0: ran first in its round.
    position: usize,
    seconds: f64,
    /// user + system CPU of the builder (all its threads).
    cpu_seconds: f64,
    /// CPU the rest of the machine used meanwhile (busy time of /proc/stat
    /// minus the builder's), and the time the hypervisor stole.
    others_cpu_seconds: f64,
    steal_seconds: f64,
    bytes: u64,
    entries: usize,
}

impl ImageRun {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "round": self.round,
            "position": self.position,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "others_cpu_seconds": self.others_cpu_seconds,
            "steal_seconds": self.steal_seconds,
            "bytes": self.bytes,
            "entries": self.entries,
        })
    }
}

fn image(o: &ImageOpts) -> Result<()> {
    for tool in ["mksquashfs", "unsquashfs"] {
        which(tool, "bench image", "squashfs-tools")?;
    }
    let tools: Vec<usize> = match o.only {
        None => vec![0, 1],
        Some(ImageTool::Nodeimg) => vec![0],
        Some(ImageTool::Mksquashfs) => vec![1],
    };
    let nodeimg = match (&o.nodeimg, tools.contains(&0)) {
        (_, false) => None,
        (Some(p), true) => Some(
            std::fs::canonicalize(p).with_context(|| format!("nodeimg binary {}", p.display()))?,
        ),
        (None, true) => Some(nodeimg_release()?),
    };
    let tree = bench_tree(o.size_mib)?;
    let scratch = Scratch::new(tree.bytes + (256 << 20))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = loadavg();

    // Untimed: every file of the tree into the page cache.
    let t = Instant::now();
    let (nfiles, nbytes) = read_tree(&tree.root)?;
    eprintln!(
        "xtask: bench image: warm-up read of {nfiles} files, {:.0} MB in {:.1}s",
        nbytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let mut runs: [Vec<ImageRun>; 2] = Default::default();
    let mut listing_diffs: Vec<serde_json::Value> = Vec::new();
    for r in 0..o.rounds {
        let mut listings: [Option<Vec<String>>; 2] = Default::default();
        for k in 0..tools.len() {
            // Alternate which builder goes first.
            let t = tools[(k + r as usize) % tools.len()];
            std::thread::sleep(o.settle);
            let (mut run, listing) = build_image(t, o, nodeimg.as_deref(), &tree, &scratch.path)?;
            run.round = r + 1;
            run.position = k;
            eprintln!(
                "xtask: bench image: round {}/{}: {:<10} {:>7.2}s  cpu {:>6.1}s  others {:>5.1}s  {:>11} bytes  {} entries",
                r + 1,
                o.rounds,
                IMAGE_TOOLS[t],
                run.seconds,
                run.cpu_seconds,
                run.others_cpu_seconds,
                run.bytes,
                run.entries
            );
            runs[t].push(run);
            listings[t] = Some(listing);
        }
        if let [Some(a), Some(b)] = &listings {
            let (only_a, only_b) = listing_diff(a, b);
            if !only_a.is_empty() || !only_b.is_empty() {
                eprintln!(
                    "xtask: bench image: WARNING round {}: the listings differ ({} entries only in nodeimg's image, {} only in mksquashfs's), e.g.:",
                    r + 1,
                    only_a.len(),
                    only_b.len()
                );
                for l in only_a.iter().take(5) {
                    eprintln!("  nodeimg:    {l}");
                }
                for l in only_b.iter().take(5) {
                    eprintln!("  mksquashfs: {l}");
                }
            }
            listing_diffs.push(serde_json::json!({
                "round": r + 1,
                "only_nodeimg": only_a.len(),
                "only_mksquashfs": only_b.len(),
                "examples_nodeimg": only_a.iter().take(20).collect::<Vec<_>>(),
                "examples_mksquashfs": only_b.iter().take(20).collect::<Vec<_>>(),
            }));
        }
    }
    let load_end = loadavg();
    drop(scratch);

    let med = |t: usize, f: &dyn Fn(&ImageRun) -> f64| -> f64 {
        median(&runs[t].iter().map(f).collect::<Vec<_>>())
    };
    println!(
        "\nbench image: {} MiB generated tree ({} entries, {:.0} MB, {}), zstd level {}, \
         128 KiB blocks, {} round(s), {cores} cores, images in a tmpfs, median",
        o.size_mib,
        tree.entries,
        tree.bytes as f64 / 1e6,
        tree.root.display(),
        o.level,
        o.rounds
    );
    println!(
        "  {:<11} {:>8} {:>8} {:>14} {:>9}",
        "", "seconds", "cpu-s", "image bytes", "image MB"
    );
    let mut tools_json = serde_json::Map::new();
    for &t in &tools {
        let secs = med(t, &|r| r.seconds);
        let cpu = med(t, &|r| r.cpu_seconds);
        let bytes = med(t, &|r| r.bytes as f64);
        println!(
            "  {:<11} {secs:>8.2} {cpu:>8.1} {bytes:>14.0} {:>9.2}",
            IMAGE_TOOLS[t],
            bytes / 1e6
        );
        tools_json.insert(
            IMAGE_TOOLS[t].to_string(),
            serde_json::json!({
                "median_seconds": secs,
                "median_cpu_seconds": cpu,
                "median_bytes": bytes,
                "runs": runs[t].iter().map(ImageRun::json).collect::<Vec<_>>(),
            }),
        );
    }
    let ratios = (tools.len() == 2).then(|| {
        (
            med(0, &|r| r.seconds) / med(1, &|r| r.seconds),
            med(0, &|r| r.bytes as f64) / med(1, &|r| r.bytes as f64),
        )
    });
    if let Some((rt, rs)) = ratios {
        let met = if rt <= 1.0 && rs <= 1.0 {
            "met"
        } else {
            "NOT met"
        };
        println!("  nodeimg / mksquashfs: time {rt:.3}, size {rs:.4}   (goal: both <= 1.0: {met})");
    }
    println!("  per round:");
    for r in 1..=o.rounds {
        for &t in &tools {
            for run in runs[t].iter().filter(|x| x.round == r) {
                println!(
                    "    {r}.{} {:<11} {:>7.2}s  cpu {:>6.1}s  {:>11} bytes   others {:>5.1} cpu-s{}",
                    run.position + 1,
                    IMAGE_TOOLS[t],
                    run.seconds,
                    run.cpu_seconds,
                    run.bytes,
                    run.others_cpu_seconds,
                    if run.steal_seconds > 0.05 {
                        format!(", steal {:.1}s", run.steal_seconds)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    let all: Vec<&ImageRun> = runs.iter().flatten().collect();
    let wall: f64 = all.iter().map(|r| r.seconds).sum();
    let others: f64 = all.iter().map(|r| r.others_cpu_seconds).sum();
    let others_share = others / (wall * cores as f64).max(1e-9);
    println!(
        "  machine: load average {} before, {} after; other processes used {:.0}% of the {cores} cores during the timed runs",
        load_start.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_end.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        others_share * 100.0
    );
    if listing_diffs
        .iter()
        .any(|d| d["only_nodeimg"] != 0 || d["only_mksquashfs"] != 0)
    {
        println!(
            "  WARNING: nodeimg's listing (unsquashfs -lln) differs from mksquashfs's, see above"
        );
    }

    let report = serde_json::json!({
        "tree": {
            "path": tree.root,
            "size_mib": o.size_mib,
            "entries": tree.entries,
            "bytes": tree.bytes,
            "generator": tree.stats,
        },
        "level": o.level,
        "block_size": 131072,
        "rounds": o.rounds,
        "settle_secs": o.settle.as_secs(),
        "cores": cores,
        "nodeimg": nodeimg,
        "commands": {
            "nodeimg": "nodeimg build SRC -o OUT.squashfs --level L",
            "mksquashfs": "mksquashfs SRC OUT -comp zstd -Xcompression-level L -noappend -no-progress -quiet",
        },
        "tools": tools_json,
        "ratio_time": ratios.map(|r| r.0),
        "ratio_size": ratios.map(|r| r.1),
        "goal_met": ratios.map(|(t, s)| t <= 1.0 && s <= 1.0),
        "listing_differences": listing_diffs,
        "machine": {
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "others_cpu_share": others_share,
        },
    });
    let json = crate::build::root().join("target/bench-image.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    Ok(())
}

/// `target/release/nodeimg`, built.
fn nodeimg_release() -> Result<PathBuf> {
    let root = crate::build::root();
    crate::build::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "nodeboot-image-builder",
    ]))?;
    Ok(root.join("target/release/nodeimg"))
}

/// Build the tree's image with tool `t` into `scratch/out-<tool>/`, time it,
/// check the image with unsquashfs, delete it. Returns the run and the
/// normalised listing.
fn build_image(
    t: usize,
    o: &ImageOpts,
    nodeimg: Option<&Path>,
    tree: &Tree,
    scratch: &Path,
) -> Result<(ImageRun, Vec<String>)> {
    let out = scratch.join(format!("out-{}", IMAGE_TOOLS[t]));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let img = out.join("live.squashfs");
    let level = o.level.to_string();
    let mut cmd = match (t, nodeimg) {
        (0, Some(bin)) => {
            let mut c = Command::new(bin);
            c.arg("build")
                .arg(&tree.root)
                .arg("-o")
                .arg(&img)
                .args(["--level", &level])
                .env("NODEIMG_LOG", "warn");
            c
        }
        (0, None) => bail!("no nodeimg binary"),
        _ => {
            let mut c = Command::new("mksquashfs");
            c.arg(&tree.root)
                .arg(&img)
                .args(["-comp", "zstd", "-Xcompression-level", &level])
                .args(["-noappend", "-no-progress", "-quiet"]);
            c
        }
    };
    cmd.stdin(Stdio::null());
    let shown = format!("{cmd:?}");
    let cpu0 = children_cpu();
    let (busy0, steal0) = machine_cpu()?;
    let start = Instant::now();
    let res = cmd.output().with_context(|| format!("running {shown}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let (busy1, steal1) = machine_cpu()?;
    let cpu_seconds = children_cpu() - cpu0;
    if !res.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            res.status,
            tail(&res.stderr, 2000)
        );
    }
    if !res.stderr.is_empty() {
        eprintln!(
            "xtask: bench image: {} said: {}",
            IMAGE_TOOLS[t],
            tail(&res.stderr, 2000)
        );
    }
    let bytes = std::fs::metadata(&img)
        .with_context(|| format!("{} wrote no {}", IMAGE_TOOLS[t], img.display()))?
        .len();

    // The image is a valid zstd squashfs with every entry of the tree.
    let sb = unsquashfs(&["-s"], &img)?;
    if !sb.contains("Compression zstd") {
        bail!(
            "{} (by {}) is not zstd-compressed: unsquashfs -s says {sb}",
            img.display(),
            IMAGE_TOOLS[t]
        );
    }
    let listing = parse_listing(&unsquashfs(&["-lln"], &img)?);
    if listing.len() != tree.entries {
        bail!(
            "{} (by {}) lists {} entries (unsquashfs -lln), the tree at {} has {}",
            img.display(),
            IMAGE_TOOLS[t],
            listing.len(),
            tree.root.display(),
            tree.entries
        );
    }
    std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    let run = ImageRun {
        round: 0,
        position: 0,
        seconds,
        cpu_seconds,
        others_cpu_seconds: (busy1 - busy0 - cpu_seconds).max(0.0),
        steal_seconds: steal1 - steal0,
        bytes,
        entries: listing.len(),
    };
    Ok((run, listing))
}

/// stdout of `unsquashfs ARGS IMG`; an error unless it exits 0.
fn unsquashfs(args: &[&str], img: &Path) -> Result<String> {
    let o = Command::new("unsquashfs")
        .args(args)
        .arg(img)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running unsquashfs {}", args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "unsquashfs {} {} failed ({}): {}",
            args.join(" "),
            img.display(),
            o.status,
            tail(&o.stderr, 2000)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The entries of `unsquashfs -lln`, one normalised line each (directory
/// sizes dropped: they are the writer's own directory-table sizes), sorted.
fn parse_listing(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let i = l.find(" squashfs-root")?;
            let mut f: Vec<&str> = l[..i].split_whitespace().collect();
            if f.first()?.starts_with('d') && f.len() >= 3 {
                f[2] = "-";
            }
            Some(format!("{} {}", f.join(" "), &l[i + 1..]))
        })
        .collect();
    v.sort();
    v
}

/// Lines only in `a`, lines only in `b` (both sorted).
fn listing_diff<'a>(a: &'a [String], b: &'a [String]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.as_str());
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y.as_str());
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x.as_str());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.as_str());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
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

// ---------------------------------------------------------------------------
// The generated tree of `bench image`
//
// A root filesystem's mix, deterministic for a given machine (fixed seed;
// the binaries are copies of this machine's, picked in a seeded order), built
// once per generator version and size under `$NODEBOOT_CACHE/bench-tree-v<V>-<N>M/`:
// `root/` is the tree, `stats.json` what went into it. Shares of the size:
// ~45 % binaries and libraries, ~30 % text (prose, config, source, tables;
// 100 B–20 KB files in nested package dirs, identical copyright files), ~20 %
// large files (half random bytes, half records with random fields), ~5 %
// duplicates of other files under new names; plus merged-/usr symlinks, the
// libraries' own symlinks, generated ones, hardlinks, a few non-root owners.

/// Bump whenever the generator writes something different: the cache key.
const TREE_VERSION: u32 = 1;
const TREE_SEED: u64 = 0x6e6f_6465_626f_6f74;
/// Where the binaries come from (regular files up to 16 MiB).
const BIN_DIRS: [&str; 4] = [
    "/usr/bin",
    "/usr/sbin",
    "/usr/libexec",
    "/usr/lib/x86_64-linux-gnu",
];
const BIN_MAX: u64 = 16 << 20;

struct Tree {
    root: PathBuf,
    /// Entries as unsquashfs lists them (the root included).
    entries: usize,
    /// Bytes of regular-file content (hardlinks once).
    bytes: u64,
    stats: serde_json::Value,
}

/// The cached tree of `size_mib`, generated first when missing.
fn bench_tree(size_mib: u64) -> Result<Tree> {
    let cache = crate::e2e::cache_dir();
    let name = format!("bench-tree-v{TREE_VERSION}-{size_mib}M");
    let dir = cache.join(&name);
    let stats_file = dir.join("stats.json");
    if !stats_file.exists() {
        std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        // Leftovers of interrupted generations (their process is gone).
        for e in
            std::fs::read_dir(&cache).with_context(|| format!("reading {}", cache.display()))?
        {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n.strip_prefix(&format!("{name}.tmp.")) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = cache.join(format!("{name}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!(
            "xtask: bench image: generating a {size_mib} MiB tree in {} (once)",
            tmp.display()
        );
        let t = Instant::now();
        let stats = generate_tree(&tmp.join("root"), size_mib << 20)?;
        std::fs::write(
            tmp.join("stats.json"),
            serde_json::to_string_pretty(&stats)? + "\n",
        )
        .with_context(|| format!("writing {}", tmp.join("stats.json").display()))?;
        if dir.exists() {
            // An incomplete one (no stats.json): ours replaces it.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Another run finished the same tree first: use it.
            let _ = std::fs::remove_dir_all(&tmp);
            if !stats_file.exists() {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()));
            }
        }
        eprintln!(
            "xtask: bench image: tree generated in {:.0}s",
            t.elapsed().as_secs_f64()
        );
    }
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&stats_file)
            .with_context(|| format!("reading {}", stats_file.display()))?,
    )
    .with_context(|| format!("parsing {}", stats_file.display()))?;
    let entries = stats["entries"].as_u64().unwrap_or(0) as usize;
    let bytes = stats["bytes"].as_u64().unwrap_or(0);
    if entries == 0 {
        bail!("{}: no entry count", stats_file.display());
    }
    Ok(Tree {
        root: dir.join("root"),
        entries,
        bytes,
        stats,
    })
}

/// splitmix64: small, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Log-uniform in lo..=hi: as many files of 100 B–1 KB as of 1–10 KB.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64 + 1.0).ln());
        ((l + self.unit() * (h - l)).exp() as u64).clamp(lo, hi)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
}

const COMMON_WORDS: [&str; 40] = [
    "the", "of", "and", "to", "a", "in", "is", "for", "on", "that", "with", "be", "as", "by", "it",
    "or", "are", "this", "from", "not", "file", "if", "when", "default", "value", "set", "use",
    "can", "will", "system", "see", "data", "user", "all", "new", "name", "option", "error",
    "path", "which",
];
const SYLLABLES: [&str; 40] = [
    "ka", "ro", "mi", "sen", "tal", "or", "ve", "lin", "dus", "pra", "che", "ni", "bo", "ex",
    "qui", "ter", "al", "ung", "sto", "fe", "ri", "mon", "za", "ple", "gu", "ad", "is", "tor",
    "ne", "wa", "con", "fig", "dev", "net", "pol", "ser", "an", "ti", "lo", "mar",
];
const KEYWORDS_PY: [&str; 8] = [
    "if", "for", "return", "elif", "while", "with", "raise", "yield",
];
const KEYWORDS_C: [&str; 8] = [
    "if", "for", "return", "while", "switch", "static", "const", "unsigned",
];

/// A Zipf-distributed vocabulary: common English words first, then
/// pseudo-words.
struct Words(Vec<String>);

impl Words {
    fn new(rng: &mut Rng) -> Words {
        let mut v: Vec<String> = COMMON_WORDS.iter().map(|w| w.to_string()).collect();
        let mut seen: HashSet<String> = v.iter().cloned().collect();
        while v.len() < 4000 {
            let n = 1 + rng.below(3) + rng.below(2) * rng.below(2);
            let w: String = (0..n).map(|_| *rng.pick(&SYLLABLES)).collect();
            if seen.insert(w.clone()) {
                v.push(w);
            }
        }
        Words(v)
    }
    /// Rank r with probability ∝ 1/(r+1).
    fn word(&self, rng: &mut Rng) -> &str {
        let n = self.0.len();
        let r = ((n as f64 + 1.0).powf(rng.unit()) - 1.0) as usize;
        &self.0[r.min(n - 1)]
    }
    /// A word that is not one of the common English ones (names).
    fn name(&self, rng: &mut Rng) -> &str {
        let n = self.0.len() as u64;
        &self.0[rng.range(COMMON_WORDS.len() as u64, n - 1) as usize]
    }
    /// An identifier of 1–3 words joined by `_`.
    fn ident(&self, rng: &mut Rng) -> String {
        let n = rng.range(1, 3);
        (0..n).map(|_| self.word(rng)).collect::<Vec<_>>().join("_")
    }
}

#[derive(Clone, Copy)]
enum TextKind {
    Prose,
    Config,
    Python,
    C,
    Table,
}

/// `size` bytes of text of `kind`.
fn gen_text(kind: TextKind, size: usize, rng: &mut Rng, w: &Words) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(size + 1024);
    let mut col = 0usize;
    let push = |out: &mut Vec<u8>, col: &mut usize, word: &str| {
        if *col > 0 {
            if *col + 1 + word.len() > 72 {
                out.push(b'\n');
                *col = 0;
            } else {
                out.push(b' ');
                *col += 1;
            }
        }
        out.extend_from_slice(word.as_bytes());
        *col += word.len();
    };
    while out.len() < size {
        match kind {
            TextKind::Prose => {
                for _ in 0..rng.range(2, 8) {
                    let n = rng.range(4, 18);
                    for i in 0..n {
                        let mut word = w.word(rng).to_string();
                        if i == 0 {
                            word[..1].make_ascii_uppercase();
                        }
                        if i == n - 1 {
                            word.push('.');
                        } else if rng.chance(0.08) {
                            word.push(',');
                        }
                        push(&mut out, &mut col, &word);
                    }
                }
                out.extend_from_slice(b"\n\n");
                col = 0;
            }
            TextKind::Config => {
                if rng.chance(0.1) {
                    out.extend_from_slice(format!("\n[{}]\n", w.ident(rng)).as_bytes());
                }
                if rng.chance(0.3) {
                    out.extend_from_slice(b"#");
                    for _ in 0..rng.range(3, 12) {
                        out.push(b' ');
                        out.extend_from_slice(w.word(rng).as_bytes());
                    }
                    out.push(b'\n');
                }
                let key = w.ident(rng);
                let value = match rng.below(5) {
                    0 => rng.log_uniform(1, 100_000).to_string(),
                    1 => w.word(rng).to_string(),
                    2 => format!("/usr/lib/{}/{}", w.name(rng), w.word(rng)),
                    3 => rng.pick(&["yes", "no", "true", "false"]).to_string(),
                    _ => format!("\"{} {} {}\"", w.word(rng), w.word(rng), w.word(rng)),
                };
                let sep = if rng.chance(0.5) { " = " } else { "=" };
                out.extend_from_slice(format!("{key}{sep}{value}\n").as_bytes());
            }
            TextKind::Python => {
                let mut args = vec!["self".to_string()];
                args.extend((0..rng.range(0, 3)).map(|_| w.ident(rng)));
                out.extend_from_slice(
                    format!("\ndef {}({}):\n", w.ident(rng), args.join(", ")).as_bytes(),
                );
                if rng.chance(0.5) {
                    out.extend_from_slice(b"    \"\"\"");
                    for _ in 0..rng.range(4, 12) {
                        out.push(b' ');
                        out.extend_from_slice(w.word(rng).as_bytes());
                    }
                    out.extend_from_slice(b".\"\"\"\n");
                }
                for _ in 0..rng.range(2, 12) {
                    let indent = "    ".repeat(rng.range(1, 3) as usize);
                    let line = match rng.below(4) {
                        0 => format!(
                            "{} {} {}:",
                            rng.pick(&KEYWORDS_PY),
                            w.ident(rng),
                            rng.pick(&["in self.items()", "is None", "== 0", ""])
                        ),
                        1 => format!("# {} {} {}", w.word(rng), w.word(rng), w.word(rng)),
                        _ => format!(
                            "{} = self.{}({}, {})",
                            w.ident(rng),
                            w.ident(rng),
                            w.ident(rng),
                            rng.below(256)
                        ),
                    };
                    out.extend_from_slice(format!("{indent}{line}\n").as_bytes());
                }
            }
            TextKind::C => {
                out.extend_from_slice(
                    format!(
                        "\n/* {} {} {} */\nstatic int {}(struct {} *{}, {} {})\n{{\n",
                        w.word(rng),
                        w.word(rng),
                        w.word(rng),
                        w.ident(rng),
                        w.ident(rng),
                        w.word(rng),
                        rng.pick(&["int", "size_t", "const char *", "unsigned long"]),
                        w.word(rng)
                    )
                    .as_bytes(),
                );
                for _ in 0..rng.range(2, 12) {
                    let line = match rng.below(3) {
                        0 => format!(
                            "\t{} ({}->{} > {})\n\t\treturn -E{};",
                            rng.pick(&KEYWORDS_C),
                            w.word(rng),
                            w.ident(rng),
                            rng.below(4096),
                            rng.pick(&["INVAL", "NOMEM", "IO", "AGAIN"])
                        ),
                        _ => format!(
                            "\t{} = {}({}, 0x{:x});",
                            w.ident(rng),
                            w.ident(rng),
                            w.word(rng),
                            rng.below(1 << 16)
                        ),
                    };
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"\treturn 0;\n}\n");
            }
            TextKind::Table => {
                let line = if rng.chance(0.3) {
                    format!(
                        "\t{:04x}  {} {}\n",
                        rng.below(1 << 16),
                        w.name(rng),
                        w.word(rng)
                    )
                } else {
                    format!(
                        "{:04x}  {} {} {}\n",
                        rng.below(1 << 16),
                        w.name(rng),
                        w.word(rng),
                        w.name(rng)
                    )
                };
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.truncate(size);
    out
}

/// Byte counters of what the generator wrote, per share.
#[derive(Default)]
struct GenBytes {
    binaries: u64,
    text: u64,
    large_random: u64,
    large_records: u64,
    duplicates: u64,
}

struct Gen {
    root: PathBuf,
    words: Words,
    /// Regular files written (relative path, size): for duplicates and hardlinks.
    files: Vec<(PathBuf, u64)>,
    /// Relative paths of non-directories, and of directories.
    taken: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    bytes: GenBytes,
    symlinks: u64,
    hardlinks: u64,
    duplicates: u64,
}

impl Gen {
    /// Claim `rel` for a non-directory: false when it (or a directory of that
    /// name, or a non-directory on its way) exists already. Creates the parents.
    fn claim(&mut self, rel: &Path) -> Result<bool> {
        if self.taken.contains(rel) || self.dirs.contains(rel) {
            return Ok(false);
        }
        if rel.ancestors().skip(1).any(|a| self.taken.contains(a)) {
            return Ok(false);
        }
        for a in rel.ancestors().skip(1) {
            if !self.dirs.insert(a.to_path_buf()) {
                break;
            }
        }
        if let Some(parent) = rel.parent() {
            let d = self.root.join(parent);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.taken.insert(rel.to_path_buf());
        Ok(true)
    }

    fn write(&mut self, rel: &Path, data: &[u8], mode: u32) -> Result<bool> {
        use std::os::unix::fs::PermissionsExt;
        if !self.claim(rel)? {
            return Ok(false);
        }
        let p = self.root.join(rel);
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        if mode != 0o644 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", p.display()))?;
        }
        self.files.push((rel.to_path_buf(), data.len() as u64));
        Ok(true)
    }

    fn symlink(&mut self, target: &str, rel: &Path) -> Result<bool> {
        if !self.claim(rel)? {
            return Ok(false);
        }
        let p = self.root.join(rel);
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("symlink {} -> {target}", p.display()))?;
        self.symlinks += 1;
        Ok(true)
    }

    fn mkdir(&mut self, rel: &str, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
        for a in Path::new(rel).ancestors() {
            self.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    /// The skeleton of a merged-/usr Debian root.
    fn skeleton(&mut self) -> Result<()> {
        for d in [
            "boot",
            "dev",
            "home",
            "media",
            "mnt",
            "opt",
            "proc",
            "run",
            "srv",
            "sys",
            "usr/local/bin",
            "var/log",
            "var/lib",
            "var/cache",
        ] {
            self.mkdir(d, 0o755)?;
        }
        self.mkdir("root", 0o700)?;
        self.mkdir("tmp", 0o1777)?;
        self.mkdir("var/tmp", 0o1777)?;
        for (l, t) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("etc/mtab", "../proc/self/mounts"),
            ("var/run", "/run"),
            (
                "usr/lib64/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
        ] {
            self.symlink(t, Path::new(l))?;
        }
        Ok(())
    }

    /// Copies of this machine's binaries and libraries, in a seeded order,
    /// until `budget`; then their symlinks whose targets were copied.
    fn binaries(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let mut found: Vec<(PathBuf, u64)> = Vec::new();
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        for d in BIN_DIRS {
            if !Path::new(d).is_dir() {
                continue;
            }
            walk(Path::new(d), &mut |p, m| {
                if m.is_file() && m.len() > 0 && m.len() <= BIN_MAX {
                    found.push((p.to_path_buf(), m.len()));
                } else if m.file_type().is_symlink() {
                    if let Ok(t) = std::fs::read_link(p) {
                        links.push((p.to_path_buf(), t));
                    }
                }
                Ok(())
            })?;
        }
        found.sort();
        for i in (1..found.len()).rev() {
            found.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut chosen = Vec::new();
        let mut total = 0;
        for (p, len) in found {
            if total >= budget {
                break;
            }
            total += len;
            chosen.push(p);
        }
        if total < budget {
            eprintln!(
                "xtask: bench image: only {} MiB of binaries on this machine (wanted {} MiB)",
                total >> 20,
                budget >> 20
            );
        }
        chosen.sort();
        for src in chosen {
            let rel = src.strip_prefix("/").unwrap_or(&src).to_path_buf();
            if !self.claim(&rel)? {
                continue;
            }
            let dst = self.root.join(&rel);
            match std::fs::copy(&src, &dst) {
                Ok(n) => {
                    self.bytes.binaries += n;
                    self.files.push((rel, n));
                }
                // Removed meanwhile (an apt run): skip it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.taken.remove(&rel);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
                }
            }
        }
        // Relative symlinks (libfoo.so.1 -> libfoo.so.1.2.3, chains too)
        // whose target is in the tree.
        links.sort();
        for _ in 0..3 {
            for (p, t) in &links {
                let rel = p.strip_prefix("/").unwrap_or(p);
                if t.is_absolute() || self.taken.contains(rel) {
                    continue;
                }
                let target = normalize(&rel.parent().unwrap_or(Path::new("")).join(t));
                if self.taken.contains(&target) {
                    self.symlink(&t.to_string_lossy(), rel)?;
                }
            }
        }
        Ok(())
    }

    /// Packages' text files until `budget`.
    fn text(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let licenses: Vec<Vec<u8>> = (0..12)
            .map(|_| {
                let n = rng.log_uniform(1500, 18000) as usize;
                gen_text(TextKind::Prose, n, rng, &self.words)
            })
            .collect();
        let mut pkgs: HashSet<String> = HashSet::new();
        while self.bytes.text < budget {
            let mut pkg = self.words.name(rng).to_string();
            if rng.chance(0.3) {
                pkg = format!("lib{pkg}");
            }
            const SUFFIXES: [&str; 9] =
                ["", "", "", "-common", "-data", "-utils", "-dev", "2", "3"];
            let suffix = rng.pick::<&str>(&SUFFIXES);
            pkg.push_str(suffix);
            if !pkgs.insert(pkg.clone()) {
                continue;
            }
            let doc = PathBuf::from(format!("usr/share/doc/{pkg}"));
            let lic = rng.pick(&licenses).clone();
            if self.write(&doc.join("copyright"), &lic, 0o644)? {
                self.bytes.text += lic.len() as u64;
            }
            // A package ships into 1-3 places (plus its doc dir), with a
            // few subdirectories: ~7 files per directory, as in a real root.
            let mut places: Vec<u64> = (0..8).collect();
            for i in (1..places.len()).rev() {
                places.swap(i, rng.below(i as u64 + 1) as usize);
            }
            places.truncate(rng.range(1, 3) as usize);
            let subs: Vec<String> = (0..rng.range(1, 3))
                .map(|_| {
                    (0..rng.range(0, 2))
                        .map(|_| format!("{}/", self.words.name(rng)))
                        .collect()
                })
                .collect();
            let mut pkg_files: Vec<PathBuf> = Vec::new();
            for _ in 0..rng.log_uniform(2, 60) {
                let mut size = rng.log_uniform(100, 20_000) as usize;
                if rng.chance(0.02) {
                    size = 0;
                }
                let name = self.words.name(rng).to_string();
                let sub = rng.pick(&subs).clone();
                let place = if rng.chance(0.15) {
                    8
                } else {
                    *rng.pick(&places)
                };
                let (rel, kind, mode) = match place {
                    0 => (format!("etc/{pkg}/{name}.conf"), TextKind::Config, 0o644),
                    1 => (
                        format!(
                            "usr/lib/python3/dist-packages/{}/{sub}{name}.py",
                            pkg.replace('-', "_"),
                        ),
                        TextKind::Python,
                        0o644,
                    ),
                    2 => (
                        format!("usr/include/{pkg}/{sub}{name}.h"),
                        TextKind::C,
                        0o644,
                    ),
                    3 => {
                        let sect = rng.pick(&[1, 5, 8]);
                        (
                            format!("usr/share/man/man{sect}/{name}.{sect}"),
                            TextKind::Prose,
                            0o644,
                        )
                    }
                    4 => (
                        format!("usr/share/{pkg}/{sub}{name}.tab"),
                        TextKind::Table,
                        0o644,
                    ),
                    5 => (
                        format!("usr/share/{pkg}/scripts/{name}"),
                        TextKind::Python,
                        0o755,
                    ),
                    6 => (
                        format!(
                            "usr/share/{pkg}/{sub}{name}.{}",
                            rng.pick(&["xml", "json", "rules", "conf", "txt"])
                        ),
                        *rng.pick(&[TextKind::Config, TextKind::Prose, TextKind::Table]),
                        0o644,
                    ),
                    7 => (
                        format!("usr/lib/{pkg}/{sub}{name}.pl"),
                        TextKind::Python,
                        0o644,
                    ),
                    _ => (
                        format!("{}/{name}.txt", doc.display()),
                        TextKind::Prose,
                        0o644,
                    ),
                };
                let data = gen_text(kind, size, rng, &self.words);
                let rel = PathBuf::from(rel);
                if self.write(&rel, &data, mode)? {
                    self.bytes.text += data.len() as u64;
                    pkg_files.push(rel);
                }
            }
            // Symlinks as packages ship them: ~1 per package.
            for _ in 0..rng.below(3) {
                if pkg_files.is_empty() {
                    break;
                }
                let t = rng.pick(&pkg_files).clone();
                let name = self.words.name(rng).to_string();
                match rng.below(4) {
                    0 | 1 => self.symlink(
                        &format!("../../{}", t.display()),
                        Path::new(&format!("usr/bin/{name}")),
                    )?,
                    2 => self.symlink(
                        &format!("/{}", t.display()),
                        Path::new(&format!("etc/alternatives/{name}")),
                    )?,
                    _ => self.symlink(&pkg, Path::new(&format!("usr/share/doc/{name}")))?,
                };
            }
            if rng.chance(0.02) {
                let l = PathBuf::from(format!("etc/{pkg}.d/{}", self.words.name(rng)));
                self.symlink("/nonexistent/dangling", &l)?;
            }
        }
        Ok(())
    }

    /// A few large files until `budget`: half random bytes, half records
    /// with random fields (log lines, CSV, fixed-size binary records).
    fn large(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        const N: u64 = 6;
        let each = budget / N;
        let hosts: Vec<String> = (0..512).map(|i| format!("cn{i:03}")).collect();
        let procs: Vec<String> = (0..8).map(|_| self.words.name(rng).to_string()).collect();
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..N {
            let dir = format!(
                "{}/{}",
                rng.pick(&[
                    "usr/share",
                    "opt",
                    "var/lib",
                    "usr/lib/firmware",
                    "var/cache"
                ]),
                self.words.name(rng)
            );
            let random = i % 2 == 0;
            let rel = PathBuf::from(match i {
                1 => format!("var/log/{}.log", self.words.name(rng)),
                3 => format!("{dir}/{}.db", self.words.name(rng)),
                5 => format!("{dir}/{}.csv", self.words.name(rng)),
                _ => format!(
                    "{dir}/{}.{}",
                    self.words.name(rng),
                    rng.pick(&["pack", "bin", "img"])
                ),
            });
            if !self.claim(&rel)? {
                continue;
            }
            let p = self.root.join(&rel);
            let mut f = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
            );
            let mut left = each;
            let mut seq = 0u64;
            let mut t = 1_700_000_000u64;
            while left > 0 {
                let chunk: Vec<u8> = if random {
                    rng.fill(&mut buf);
                    buf.clone()
                } else {
                    let mut c = Vec::with_capacity(1 << 16);
                    while c.len() < 1 << 16 {
                        seq += 1;
                        t += rng.below(3);
                        match i {
                            1 => c.extend_from_slice(
                                format!(
                                    "{} {} {}[{}]: job {} step {} state={} rc={} cpu={}.{:03} mem={}K\n",
                                    t,
                                    rng.pick(&hosts),
                                    rng.pick(&procs),
                                    rng.range(100, 99_999),
                                    rng.range(1_000_000, 9_999_999),
                                    rng.below(8),
                                    rng.pick(&["COMPLETED", "RUNNING", "FAILED", "PENDING"]),
                                    rng.below(3),
                                    rng.below(5000),
                                    rng.below(1000),
                                    rng.log_uniform(1000, 64_000_000)
                                )
                                .as_bytes(),
                            ),
                            3 => {
                                c.extend_from_slice(b"NBREC\0\0\x01");
                                c.extend_from_slice(&seq.to_le_bytes());
                                for _ in 0..4 {
                                    c.extend_from_slice(&(rng.next() as u32).to_le_bytes());
                                }
                                let mut name = [0u8; 16];
                                let w = self.words.word(rng).as_bytes();
                                name[..w.len().min(16)].copy_from_slice(&w[..w.len().min(16)]);
                                c.extend_from_slice(&name);
                                for _ in 0..16 {
                                    c.push(rng.below(4) as u8);
                                }
                            }
                            _ => c.extend_from_slice(
                                format!(
                                    "{seq},{},{},{}.{:04},{:08x},{}\n",
                                    self.words.word(rng),
                                    rng.pick(&hosts),
                                    rng.below(1000),
                                    rng.below(10_000),
                                    rng.next() as u32,
                                    rng.log_uniform(1, 1 << 40)
                                )
                                .as_bytes(),
                            ),
                        }
                    }
                    c
                };
                let n = (left as usize).min(chunk.len());
                f.write_all(&chunk[..n])
                    .with_context(|| format!("writing {}", p.display()))?;
                left -= n as u64;
            }
            f.flush()
                .with_context(|| format!("writing {}", p.display()))?;
            if random {
                self.bytes.large_random += each;
            } else {
                self.bytes.large_records += each;
            }
            self.files.push((rel, each));
        }
        Ok(())
    }

    /// Copies of a few % of the files (binaries and text) under other names,
    /// until `budget`; then hardlinks to ~0.5 % of them.
    fn duplicates_and_links(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let candidates: Vec<(PathBuf, u64)> = self
            .files
            .iter()
            .filter(|(_, n)| *n <= 4 << 20)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let vendors: Vec<String> = (0..3).map(|_| self.words.name(rng).to_string()).collect();
        let max = (candidates.len() as u64 * 4 / 100).max(1);
        let mut tries = 0;
        while self.bytes.duplicates < budget && self.duplicates < max && tries < 10 * max {
            tries += 1;
            let (src, n) = rng.pick(&candidates).clone();
            let dst = if rng.chance(0.5) {
                let mut s = src.clone().into_os_string();
                s.push(rng.pick(&[".dpkg-old", ".orig", ".bak", ".1"]));
                PathBuf::from(s)
            } else {
                Path::new("opt").join(rng.pick(&vendors)).join(&src)
            };
            if !self.claim(&dst)? {
                continue;
            }
            let (s, d) = (self.root.join(&src), self.root.join(&dst));
            std::fs::copy(&s, &d)
                .with_context(|| format!("copying {} to {}", s.display(), d.display()))?;
            self.bytes.duplicates += n;
            self.duplicates += 1;
        }
        let links = candidates.len() / 200 + 1;
        for _ in 0..links {
            let (src, _) = rng.pick(&candidates).clone();
            let mut s = src.clone().into_os_string();
            s.push(format!("-{}.{}", rng.range(1, 9), rng.below(20)));
            let dst = PathBuf::from(s);
            if !self.claim(&dst)? {
                continue;
            }
            let (s, d) = (self.root.join(&src), self.root.join(&dst));
            std::fs::hard_link(&s, &d)
                .with_context(|| format!("hardlinking {} to {}", d.display(), s.display()))?;
            self.hardlinks += 1;
        }
        Ok(())
    }
}

/// `a/b/../c` → `a/c`, lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// FNV-1a then a splitmix round: a stable hash of a path.
fn path_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
    }
    Rng::new(h).next()
}

/// Write the tree under `root` (created); its stats.
fn generate_tree(root: &Path, size: u64) -> Result<serde_json::Value> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut rng = Rng::new(TREE_SEED);
    let words = Words::new(&mut rng);
    let mut g = Gen {
        root: root.to_path_buf(),
        words,
        files: Vec::new(),
        taken: HashSet::new(),
        dirs: HashSet::new(),
        bytes: GenBytes::default(),
        symlinks: 0,
        hardlinks: 0,
        duplicates: 0,
    };
    // One generator per share, so that changing one leaves the others alone.
    g.skeleton()?;
    g.binaries(&mut Rng::new(TREE_SEED ^ 1), size * 45 / 100)?;
    g.text(&mut Rng::new(TREE_SEED ^ 2), size * 30 / 100)?;
    g.large(&mut Rng::new(TREE_SEED ^ 3), size * 20 / 100)?;
    g.duplicates_and_links(&mut Rng::new(TREE_SEED ^ 4), size * 5 / 100)?;

    // Owners and mtimes from a hash of the path; count what is there.
    let owners: [(u32, u32); 4] = [(1000, 1000), (33, 33), (0, 8), (65534, 65534)];
    let (mut entries, mut dirs, mut regular, mut symlinks, mut bytes) =
        (1u64, 1u64, 0u64, 0u64, 0u64);
    let mut inodes: HashSet<u64> = HashSet::new();
    let set_time = |p: &Path, h: u64| -> Result<()> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        let t = libc::timespec {
            tv_sec: 1_672_531_200 + (h % (365 * 86_400)) as libc::time_t,
            tv_nsec: 0,
        };
        let ts = [t, t];
        // SAFETY: c is NUL-terminated, ts holds the two timespecs utimensat reads.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the mtime of {}", p.display()));
        }
        Ok(())
    };
    walk(root, &mut |p, m| {
        entries += 1;
        let rel = p.strip_prefix(root).unwrap_or(p);
        let h = path_hash(rel.as_os_str().as_bytes());
        if m.is_dir() {
            dirs += 1;
        } else if m.file_type().is_symlink() {
            symlinks += 1;
        } else if m.is_file() {
            regular += 1;
            if inodes.insert(m.ino()) {
                bytes += m.len();
            }
            // chown clears setuid/setgid: leave those files to root.
            if h % 100 < 2 && m.mode() & 0o6000 == 0 {
                let (u, gid) = owners[(h >> 8) as usize % owners.len()];
                std::os::unix::fs::lchown(p, Some(u), Some(gid))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
        }
        set_time(p, h)
    })?;
    for a in g.dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
        // Directory mtimes moved when their entries were made: set them again.
        set_time(&root.join(a), path_hash(a.as_os_str().as_bytes()))?;
    }
    set_time(root, 0)?;
    Ok(serde_json::json!({
        "version": TREE_VERSION,
        "seed": TREE_SEED,
        "size_bytes": size,
        "entries": entries,
        "bytes": bytes,
        "directories": dirs,
        "regular_files": regular,
        "symlinks": symlinks,
        "hardlinks": g.hardlinks,
        "duplicates": g.duplicates,
        "share_bytes": {
            "binaries": g.bytes.binaries,
            "text": g.bytes.text,
            "large_random": g.bytes.large_random,
            "large_records": g.bytes.large_records,
            "duplicates": g.bytes.duplicates,
        },
        "binaries_from": BIN_DIRS,
    }))
}
