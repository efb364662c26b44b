//! `cargo xtask bench …`: nodeboot's speed next to the tools it replaces.
//!
//! `bench fetch`: one incompressible file in a tmpfs, served by nginx
//! (sendfile) on 127.0.0.1; downloads into the same tmpfs with
//! `curl -o`, `curl | sha256sum` and `nodectl fetch --sha256`, interleaved
//! over several rounds; median throughput per tool and the ratios.
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

pub fn run(what: What) -> Result<()> {
    match what {
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
    }
}

const NGINX: &str = "/usr/sbin/nginx";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The tools compared, as shown in the table.
const TOOLS: [&str; 3] = ["curl -o", "curl | sha256sum", "nodectl fetch"];

fn fetch(size_mib: u64, rounds: u32, min_ratio: Option<f64>, settle: Duration) -> Result<()> {
    for tool in ["curl", "sha256sum", "bash", NGINX] {
        which(tool)?;
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

fn which(tool: &str) -> Result<()> {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
    };
    if !found {
        bail!("bench fetch needs {tool} (Debian packages nginx-light, curl, coreutils)");
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
            bail!("bench fetch needs a tmpfs with {} MiB free: /dev/shm is too small and mounting one needs root", need >> 20);
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
    fn start(dir: &Path, www: &Path) -> Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf_dir = dir.join("nginx");
        std::fs::create_dir_all(conf_dir.join("tmp"))?;
        let d = conf_dir.display();
        let conf = format!(
            "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
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
