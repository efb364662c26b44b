//! `bench serve`: bootd against nginx serving the same file from a tmpfs on
//! 127.0.0.1 to many concurrent clients, each downloading the whole file in
//! `Range` chunks over one keep-alive connection (what a rack of nodes
//! fetching the live image looks like to the server). One client
//! implementation for both servers, servers alternated over several rounds;
//! aggregate throughput, requests per second, per-chunk latency and the
//! servers' CPU time, medians over rounds, and the ratio bootd/nginx.
use super::{loadavg, median, which, write_random, Nginx, Scratch, NGINX};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// What `bench serve` was asked for.
pub struct Opts {
    pub clients: usize,
    pub chunk_mib: u64,
    pub rounds: u32,
    /// Serve this file (copied into the tmpfs) instead of the cached live
    /// image or a generated one.
    pub file: Option<PathBuf>,
    /// Size of the generated file when there is no live image to serve.
    pub size_mib: u64,
    pub min_ratio: Option<f64>,
    pub bootd: Option<PathBuf>,
    pub nginx_workers: String,
    pub settle: Duration,
}

const SERVERS: [&str; 2] = ["bootd", "nginx"];
const NAME: &str = "live.squashfs";

/// The newest cached live image (`$NODEBOOT_CACHE/image-*/www/live.squashfs`).
fn cached_image() -> Option<PathBuf> {
    let cache = std::env::var_os("NODEBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nodeboot"));
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("image-") && !n.ends_with(".tmp")
        })
        .map(|e| e.path().join("www").join(NAME))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// `bootd` built in release mode for this bench (only bootd: the static
/// build of every binary is not needed here).
fn bootd_release() -> Result<PathBuf> {
    let root = crate::build::root();
    crate::build::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "nodeboot-boot-server",
    ]))?;
    Ok(root.join("target/release/bootd"))
}

/// bootd serving `www` on 127.0.0.1 (port 0), its log in `dir`.
struct Bootd {
    child: Child,
    port: u16,
}

impl Bootd {
    /// `clients` connect from 127.0.0.1 alone: bootd's per-address limit is
    /// raised to let every one in (nginx has no such limit by default).
    fn start(bin: &Path, dir: &Path, www: &Path, clients: usize) -> Result<Bootd> {
        let pf = dir.join("bootd.port");
        let log = dir.join("bootd.log");
        let child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(www)
            .arg("--port-file")
            .arg(&pf)
            .arg("--max-connections-per-client")
            .arg((clients * 2).max(64).to_string())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| log.display().to_string())?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut b = Bootd { child, port: 0 };
        let t = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(&pf)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                b.port = p;
                return Ok(b);
            }
            if let Some(st) = b.child.try_wait()? {
                let l = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("bootd exited ({st}) before listening: {l}");
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("bootd did not listen within 10s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bootd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of process `pid` and its direct children (nginx's
/// workers), from /proc.
fn tree_cpu(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields after the command name: state ppid … utime(14) stime(15).
    let stat = |p: &Path| -> Option<(u32, f64)> {
        let s = std::fs::read_to_string(p).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let t: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((ppid, t / hz))
    };
    let mut total = stat(Path::new(&format!("/proc/{pid}/stat"))).map_or(0.0, |s| s.1);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            if let Some((ppid, t)) = stat(&e.path().join("stat")) {
                if ppid == pid {
                    total += t;
                }
            }
        }
    }
    total
}

/// One timed run against one server.
#[derive(Debug, Clone)]
struct Run {
    seconds: f64,
    bytes: u64,
    requests: u64,
    /// Per-chunk latencies, seconds.
    latencies: Vec<f64>,
    server_cpu: f64,
}

impl Run {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// What a client checks in every response: the file's size and the first
/// bytes of each chunk.
struct Expect {
    size: u64,
    chunk: u64,
    /// First 8 bytes of each chunk.
    heads: Vec<[u8; 8]>,
}

impl Expect {
    fn new(file: &Path, chunk: u64) -> Result<Expect> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(file).with_context(|| file.display().to_string())?;
        let size = f.metadata()?.len();
        if size < 8 {
            bail!("{}: too small to serve in chunks", file.display());
        }
        let mut heads = Vec::new();
        let mut off = 0;
        while off < size {
            let mut h = [0u8; 8];
            let n = f.read_at(&mut h, off)?;
            if n < 8 && off + 8 <= size {
                bail!("{}: short read", file.display());
            }
            heads.push(h);
            off += chunk;
        }
        Ok(Expect { size, chunk, heads })
    }
}

/// Download the whole file over one connection in Range chunks, starting at
/// chunk `first` and wrapping around; checks status, length and the chunk's
/// first bytes. Returns bytes, requests and per-chunk latencies.
fn client(port: u16, e: &Expect, first: usize, start: &Barrier) -> Result<(u64, u64, Vec<f64>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = vec![0u8; 256 << 10];
    let n = e.heads.len();
    let mut lat = Vec::with_capacity(n);
    let (mut bytes, mut reqs) = (0u64, 0u64);
    start.wait();
    for k in 0..n {
        let i = (first + k) % n;
        let a = i as u64 * e.chunk;
        let b = (a + e.chunk).min(e.size) - 1;
        let want = b - a + 1;
        let t = Instant::now();
        let req = format!(
            "GET /{NAME} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nRange: bytes={a}-{b}\r\n\r\n"
        );
        s.write_all(req.as_bytes())?;
        // The head, and whatever of the body came with it.
        let mut filled = 0;
        let head_end = loop {
            let r = s.read(&mut buf[filled..])?;
            if r == 0 {
                bail!("connection closed before the response head (chunk {i})");
            }
            filled += r;
            if let Some(p) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if filled == buf.len() {
                bail!("response head larger than {} bytes", buf.len());
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("response head")?;
        if !head.starts_with("HTTP/1.1 206 ") {
            bail!(
                "chunk {i}: want 206, got {:?}",
                head.lines().next().unwrap_or("")
            );
        }
        let len: u64 = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("no Content-Length")?;
        if len != want {
            bail!("chunk {i}: Content-Length {len}, want {want}");
        }
        let mut prefix = Vec::with_capacity(8);
        let mut have = (filled - head_end) as u64;
        if have > len {
            bail!("chunk {i}: more bytes than Content-Length");
        }
        prefix.extend_from_slice(&buf[head_end..head_end + (have as usize).min(8)]);
        while have < len {
            let room = (len - have).min(buf.len() as u64) as usize;
            let r = s.read(&mut buf[..room])?;
            if r == 0 {
                bail!("chunk {i}: connection closed after {have} of {len} bytes");
            }
            if prefix.len() < 8 {
                let take = (8 - prefix.len()).min(r);
                prefix.extend_from_slice(&buf[..take]);
            }
            have += r as u64;
        }
        let check = (len as usize).min(8);
        if prefix[..check] != e.heads[i][..check] {
            bail!("chunk {i}: wrong bytes at offset {a}");
        }
        lat.push(t.elapsed().as_secs_f64());
        bytes += len;
        reqs += 1;
    }
    Ok((bytes, reqs, lat))
}

/// All clients against `port` at once; wall time from their common start
/// to the last one done.
fn run_once(port: u16, pid: u32, e: &Arc<Expect>, clients: usize) -> Result<Run> {
    let start = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (e, start) = (e.clone(), start.clone());
            // Spread the clients over the file.
            let first = c * e.heads.len() / clients;
            std::thread::Builder::new()
                .name(format!("client-{c}"))
                .stack_size(256 << 10)
                .spawn(move || client(port, &e, first, &start))
        })
        .collect::<std::io::Result<_>>()?;
    let cpu0 = tree_cpu(pid);
    start.wait();
    let t = Instant::now();
    let mut run = Run {
        seconds: 0.0,
        bytes: 0,
        requests: 0,
        latencies: Vec::new(),
        server_cpu: 0.0,
    };
    let mut first_err = None;
    for h in handles {
        match h.join().map_err(|_| anyhow::anyhow!("a client panicked"))? {
            Ok((b, r, l)) => {
                run.bytes += b;
                run.requests += r;
                run.latencies.extend(l);
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    run.seconds = t.elapsed().as_secs_f64();
    run.server_cpu = tree_cpu(pid) - cpu0;
    if let Some(err) = first_err {
        return Err(err);
    }
    Ok(run)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

pub fn run(o: &Opts) -> Result<()> {
    which(NGINX, "bench serve", "nginx-light")?;
    let bootd = match &o.bootd {
        Some(b) => b.clone(),
        None => bootd_release()?,
    };
    let source = o.file.clone().or_else(cached_image);
    let need = match &source {
        Some(p) => std::fs::metadata(p)
            .with_context(|| p.display().to_string())?
            .len(),
        None => o.size_mib << 20,
    };
    let dir = Scratch::new(need + (64 << 20))?;
    let www = dir.path.join("www");
    std::fs::create_dir_all(&www)?;
    let file = www.join(NAME);
    let what = match &source {
        Some(p) => {
            eprintln!(
                "xtask: bench serve: copying {} into {}",
                p.display(),
                www.display()
            );
            std::fs::copy(p, &file).with_context(|| format!("copying {}", p.display()))?;
            p.display().to_string()
        }
        None => {
            eprintln!(
                "xtask: bench serve: no live image cached; writing {} MiB of random data",
                o.size_mib
            );
            write_random(&file, need)?;
            format!("{} MiB of random data", o.size_mib)
        }
    };
    let chunk = o.chunk_mib.max(1) << 20;
    let e = Arc::new(Expect::new(&file, chunk)?);
    let b = Bootd::start(&bootd, &dir.path, &www, o.clients)?;
    // nginx with room for every client; by default one worker per core.
    let workers = &o.nginx_workers;
    if workers != "auto" && workers.parse::<u32>().map_or(true, |w| w == 0) {
        bail!("--nginx-workers {workers:?}: want a number or auto");
    }
    let n = Nginx::start_with(&dir.path, &www, workers, 1024)?;
    let servers = [(b.port, b.child.id()), (n.port, n.child.id())];

    eprintln!("xtask: bench serve: warm-up run of each server (not timed)");
    for &(port, pid) in &servers {
        run_once(port, pid, &e, o.clients)?;
    }
    let mut runs: [Vec<Run>; 2] = Default::default();
    for r in 0..o.rounds {
        for k in 0..2 {
            // Alternate which server goes first.
            let s = (k + r as usize) % 2;
            std::thread::sleep(o.settle);
            let (port, pid) = servers[s];
            let run = run_once(port, pid, &e, o.clients)?;
            eprintln!(
                "xtask: bench serve: round {}/{}: {:<5} {:>7.0} MB/s {:>6.0} req/s, server CPU {:.1} s in {:.2} s (load {})",
                r + 1,
                o.rounds,
                SERVERS[s],
                run.mbps(),
                run.rps(),
                run.server_cpu,
                run.seconds,
                loadavg()
            );
            runs[s].push(run);
        }
    }
    drop(b);
    drop(n);

    let mbps: Vec<f64> = runs
        .iter()
        .map(|v| median(&v.iter().map(Run::mbps).collect::<Vec<_>>()))
        .collect();
    let rps: Vec<f64> = runs
        .iter()
        .map(|v| median(&v.iter().map(Run::rps).collect::<Vec<_>>()))
        .collect();
    let cpu: Vec<f64> = runs
        .iter()
        .map(|v| median(&v.iter().map(|r| r.server_cpu).collect::<Vec<_>>()))
        .collect();
    let lat: Vec<(f64, f64)> = runs
        .iter()
        .map(|v| {
            let mut all: Vec<f64> = v.iter().flat_map(|r| r.latencies.clone()).collect();
            (percentile(&mut all, 0.5), percentile(&mut all, 0.99))
        })
        .collect();
    let ratio = mbps[0] / mbps[1];
    println!(
        "\nbench serve: {} clients, each the whole {NAME} ({:.1} MB: {what}) in {} MiB Range \
         requests over one keep-alive connection; http://127.0.0.1, tmpfs; {} rounds, median",
        o.clients,
        e.size as f64 / 1e6,
        o.chunk_mib,
        o.rounds
    );
    println!(
        "  {:<7} {:>9} {:>9} {:>12} {:>12} {:>14}",
        "server", "MB/s", "req/s", "p50 ms/chunk", "p99 ms/chunk", "server CPU s"
    );
    for s in 0..2 {
        println!(
            "  {:<7} {:>9.0} {:>9.0} {:>12.1} {:>12.1} {:>14.2}",
            SERVERS[s],
            mbps[s],
            rps[s],
            lat[s].0 * 1e3,
            lat[s].1 * 1e3,
            cpu[s]
        );
    }
    println!("  bootd / nginx  {ratio:.2}");
    let json_runs = |v: &[Run]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|r| {
                serde_json::json!({
                    "seconds": r.seconds,
                    "bytes": r.bytes,
                    "requests": r.requests,
                    "mbps": r.mbps(),
                    "server_cpu_seconds": r.server_cpu,
                })
            })
            .collect()
    };
    let report = serde_json::json!({
        "clients": o.clients,
        "chunk_mib": o.chunk_mib,
        "file": what,
        "bytes": e.size,
        "rounds": o.rounds,
        "mbps": {"bootd": mbps[0], "nginx": mbps[1]},
        "requests_per_second": {"bootd": rps[0], "nginx": rps[1]},
        "p50_ms": {"bootd": lat[0].0 * 1e3, "nginx": lat[1].0 * 1e3},
        "p99_ms": {"bootd": lat[0].1 * 1e3, "nginx": lat[1].1 * 1e3},
        "server_cpu_seconds": {"bootd": cpu[0], "nginx": cpu[1]},
        "ratio_bootd_nginx": ratio,
        "runs": {"bootd": json_runs(&runs[0]), "nginx": json_runs(&runs[1])},
    });
    let json = crate::build::root().join("target/bench-serve.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    if let Some(min) = o.min_ratio {
        if ratio < min {
            bail!("bootd is at {ratio:.2}× nginx, below the required {min}×");
        }
    }
    Ok(())
}
