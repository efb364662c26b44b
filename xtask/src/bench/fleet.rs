//! `bench fleet`: a rack reboots at once. One server and N nodes, each in
//! its own network namespace, their veths on one Linux bridge (in a
//! namespace of its own, so the host's network is never touched); links
//! shaped with `tc tbf` as in a rack: every node link at `--node-mbit` each
//! way, the server's uplink at `--server-mbit` (the bottleneck). N `nodectl
//! fetch` processes start at once, each writing the image into a tmpfs and
//! verifying its digest; per mode and N: p50/p99/max of the time from the
//! common start to each node's verified report, and the server's egress
//! bytes (tx of its veth).
//!
//! Modes: `plain` (bootd serves the image), `nginx` (the plain baseline),
//! `peer` (bootd serves the chunk index, the chunks and `GET /peers`; every
//! node serves the chunks it verified to the others).
//!
//! Everything made here (namespaces, hence their veths and the bridge; the
//! processes in them) is removed on drop, also on error.
//!
//! One kernel plays N + 1 hosts here, and its IPv4 neighbour (ARP) table is
//! one for all its namespaces: `gc_thresh3` (1024 by default, settable only
//! in the host's namespace) bounds the entries of all of them together.
//! With peers every node talks to dozens of others: at N = 100 the entries
//! pass 1024, and then a host that cannot add an entry for an ARP
//! request's sender does not answer it (`arp_process`): a node starting
//! late found no route to the server, every try. A real rack has a table
//! per host, so the lab raises the thresholds to (N + 1)² (every host
//! knowing every other) for its lifetime and puts the old ones back.
use super::{loadavg, which, write_random, Nginx, Scratch, NGINX};
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the image reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// bootd serves the whole image to every node.
    Plain,
    /// nginx serves the whole image to every node (the plain baseline).
    Nginx,
    /// Chunks from peers that verified them, bootd as the origin.
    Peer,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Nginx => "nginx",
            Mode::Peer => "peer",
        }
    }
}

/// What `bench fleet` was asked for.
pub struct Opts {
    pub nodes: Vec<usize>,
    pub modes: Vec<Mode>,
    pub image_mib: u64,
    pub node_mbit: u32,
    pub server_mbit: u32,
    pub json: bool,
    pub nodectl: Option<PathBuf>,
    pub bootd: Option<PathBuf>,
    /// Per-node deadline of one fetch.
    pub timeout: Duration,
}

/// One mode at one N.
#[derive(Debug, Clone)]
pub struct Run {
    pub mode: Mode,
    pub nodes: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub server_egress: u64,
    /// Sum over nodes of the bytes their peers gave them (peer mode).
    pub peer_bytes: u64,
}

/// The server's address on the rack's network; node `i` is [`node_ip`].
const SERVER_IP: &str = "10.77.0.1";
/// The host's IPv4 neighbour table settings (one table for every namespace).
const NEIGH: &str = "/proc/sys/net/ipv4/neigh/default";
const PORT: u16 = 8080;
const NAME: &str = "live.squashfs";

fn node_ip(i: usize) -> String {
    format!("10.77.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// The rack: a bridge namespace, a server namespace, node namespaces.
/// Dropping it deletes them all (with their veths and the bridge).
pub struct Lab {
    prefix: String,
    /// Every namespace made, the bridge's first.
    made: Vec<String>,
    nodes: usize,
    /// The neighbour table thresholds found (gc_thresh2, gc_thresh3), when
    /// the lab raised them.
    neigh: Option<(String, String)>,
}

impl Lab {
    /// The bridge's namespace.
    fn br(&self) -> String {
        format!("{}br", self.prefix)
    }
    pub fn server(&self) -> String {
        format!("{}srv", self.prefix)
    }
    pub fn node(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// Build it: `nodes` node namespaces, links shaped as described in the
    /// module doc.
    pub fn new(nodes: usize, node_mbit: u32, server_mbit: u32) -> Result<Lab> {
        if !crate::deps::nix_is_root() {
            bail!("bench fleet makes network namespaces: run it as root");
        }
        which("ip", "bench fleet", "iproute2")?;
        which("tc", "bench fleet", "iproute2")?;
        let mut lab = Lab {
            prefix: format!("nbf{}-", std::process::id()),
            made: Vec::new(),
            nodes,
            neigh: None,
        };
        lab.room_for_neighbours()?;
        let br = lab.br();
        lab.netns_add(&br)?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let srv = lab.server();
        lab.attach(
            &srv,
            "vsrv",
            SERVER_IP,
            server_mbit,
            node_mbit.max(server_mbit),
        )?;
        for i in 0..nodes {
            let ns = lab.node(i);
            lab.attach(&ns, &format!("vn{i}"), &node_ip(i), node_mbit, node_mbit)?;
        }
        Ok(lab)
    }

    /// Raise the host's neighbour table thresholds to (N + 1)² entries
    /// (see the module doc); kept when already higher.
    fn room_for_neighbours(&mut self) -> Result<()> {
        let need = (self.nodes as u64 + 1).pow(2) + 1024;
        let read = |k: &str| -> Result<String> {
            let p = format!("{NEIGH}/{k}");
            Ok(std::fs::read_to_string(&p)
                .with_context(|| format!("reading {p}"))?
                .trim()
                .to_string())
        };
        let (t2, t3) = (read("gc_thresh2")?, read("gc_thresh3")?);
        if t3.parse::<u64>().unwrap_or(0) >= 2 * need {
            return Ok(());
        }
        self.neigh = Some((t2, t3));
        // gc_thresh3 first: the kernel wants gc_thresh2 <= gc_thresh3.
        for (k, v) in [("gc_thresh3", 2 * need), ("gc_thresh2", need)] {
            let p = format!("{NEIGH}/{k}");
            std::fs::write(&p, v.to_string()).with_context(|| format!("writing {v} to {p}"))?;
        }
        eprintln!(
            "xtask: bench fleet: neighbour table gc_thresh2/3 raised to {need}/{} for the run (one kernel plays {} hosts)",
            2 * need,
            self.nodes + 1
        );
        Ok(())
    }

    fn netns_add(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.made.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Namespace `ns` with `eth0` at `addr`, its peer `port` on the
    /// bridge; `up_mbit` shapes what leaves `ns`, `down_mbit` what the
    /// bridge sends into it.
    fn attach(
        &mut self,
        ns: &str,
        port: &str,
        addr: &str,
        up_mbit: u32,
        down_mbit: u32,
    ) -> Result<()> {
        self.netns_add(ns)?;
        let br = self.br();
        ip(&[
            "-n", &br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", &br, "link", "set", port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/16"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        tbf(ns, "eth0", up_mbit)?;
        tbf(&br, port, down_mbit)
    }

    /// Bytes sent by the server's `eth0` so far.
    pub fn server_tx(&self) -> Result<u64> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.server(),
                "-s",
                "-j",
                "link",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .context("running ip -s -j link show")?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("ip -s -j link show: not JSON")?;
        v[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .context("ip -s -j link show: no stats64.tx.bytes")
    }

    /// `argv` run inside namespace `ns` (`ip netns exec`).
    pub fn command(ns: &str, argv: &[&std::ffi::OsStr]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nodes first, the bridge last: each deletion takes its veths.
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if let Some((t2, t3)) = &self.neigh {
            for (k, v) in [("gc_thresh2", t2), ("gc_thresh3", t3)] {
                let _ = std::fs::write(format!("{NEIGH}/{k}"), v);
            }
        }
    }
}

/// `ip ARGS`, its stderr in the error.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A token bucket of `mbit` on what leaves `dev` in `ns`: a burst of 1 ms
/// at that rate (at least 16 KiB), 50 ms of queue.
fn tbf(ns: &str, dev: &str, mbit: u32) -> Result<()> {
    let burst = (u64::from(mbit) * 1_000_000 / 8 / 1000).max(16 << 10);
    let out = Command::new("tc")
        .args(["-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate"])
        .arg(format!("{mbit}mbit"))
        .arg("burst")
        .arg(burst.to_string())
        .args(["latency", "50ms"])
        .stdin(Stdio::null())
        .output()
        .context("running tc")?;
    if !out.status.success() {
        bail!(
            "tc -n {ns} qdisc add dev {dev} root tbf rate {mbit}mbit: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something listens on `addr:port` inside `ns`.
fn wait_listening(ns: &str, port: u16, what: &str, child: &mut Child, log: &Path) -> Result<()> {
    let t = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htln"])
            .arg(format!("sport = :{port}"))
            .output()
            .context("running ss")?;
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "{what} exited ({st}) before listening: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if t.elapsed() > Duration::from_secs(15) {
            bail!(
                "{what} did not listen on port {port} within 15s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The origin of one run, stopped on drop (held for that).
struct Origin {
    _bootd: Option<Proc>,
    _nginx: Option<Nginx>,
}

fn start_bootd(lab: &Lab, bootd: &Path, dir: &Path, www: &Path, nodes: usize) -> Result<Proc> {
    let log = dir.join("bootd.log");
    let mut child = Lab::command(
        &lab.server(),
        &[
            bootd.as_os_str(),
            "serve".as_ref(),
            "--listen".as_ref(),
            format!("{SERVER_IP}:{PORT}").as_ref(),
            "--root".as_ref(),
            www.as_os_str(),
            "--max-connections".as_ref(),
            (nodes * 4 + 64).to_string().as_ref(),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).with_context(|| log.display().to_string())?)
    .spawn()
    .with_context(|| format!("starting {}", bootd.display()))?;
    wait_listening(&lab.server(), PORT, "bootd", &mut child, &log)?;
    Ok(Proc(child))
}

/// p-th percentile (nearest rank) of `v` (sorted here).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// One mode with `n` nodes: a fresh lab, the origin, N fetches at once.
fn run_one(o: &Opts, bins: &Bins, image: &Image, mode: Mode, n: usize) -> Result<Run> {
    let lab = Lab::new(n, o.node_mbit, o.server_mbit)?;
    let out = image.dir.join(format!("{}-{n}", mode.as_str()));
    std::fs::create_dir_all(&out)?;
    let origin = match mode {
        Mode::Plain | Mode::Peer => Origin {
            _bootd: Some(start_bootd(&lab, &bins.bootd, &out, &image.www, n)?),
            _nginx: None,
        },
        Mode::Nginx => Origin {
            _bootd: None,
            _nginx: Some(Nginx::start_in(
                &out,
                &image.www,
                "auto",
                (n as u32 * 4).max(64),
                &format!("{SERVER_IP}:{PORT}"),
                Some(&lab.server()),
            )?),
        },
    };
    let url = format!("http://{SERVER_IP}:{PORT}/{NAME}");
    let tx0 = lab.server_tx()?;
    let (tx, rx) = mpsc::channel::<(usize, Result<(f64, serde_json::Value)>)>();
    let t0 = Instant::now();
    let mut procs = Vec::with_capacity(n);
    for i in 0..n {
        let dest = out.join(format!("node{i}.img"));
        let mut argv: Vec<std::ffi::OsString> = vec![
            bins.nodectl.clone().into(),
            "fetch".into(),
            url.clone().into(),
            "-o".into(),
            dest.into(),
            "--sha256".into(),
            image.sha256.clone().into(),
            "--timeout".into(),
            o.timeout.as_secs().to_string().into(),
        ];
        if mode == Mode::Peer {
            argv.extend(peer_args(image));
        }
        let argv: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        let log = out.join(format!("node{i}.log"));
        let mut child = Lab::command(&lab.node(i), &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting nodectl fetch")?;
        let stdout = child.stdout.take().context("nodectl's stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            // The report is nodectl's one stdout line; a peer keeps serving
            // after it (until killed), so the time is the line's, not the exit's.
            let mut line = String::new();
            let r = std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .context("reading nodectl's report")
                .and_then(|_| {
                    let t = t0.elapsed().as_secs_f64();
                    let v: serde_json::Value = serde_json::from_str(line.trim())
                        .with_context(|| format!("nodectl's report is not JSON: {line:?}"))?;
                    Ok((t, v))
                });
            let _ = tx.send((i, r));
        });
        procs.push(Proc(child));
    }
    drop(tx);
    let mut times = Vec::with_capacity(n);
    let mut peer_bytes = 0;
    // Peer mode: peers dropped, chunks past the swarm, origin chunks
    // through it, peers known (sums over nodes), a reason for a drop.
    let mut stats = (0usize, 0u64, 0u64, 0usize, None::<String>);
    for (i, r) in rx.iter() {
        let (t, v) = r.map_err(|e| {
            let log = std::fs::read_to_string(out.join(format!("node{i}.log"))).unwrap_or_default();
            e.context(format!("node {i}: {}", super::tail(log.as_bytes(), 600)))
        })?;
        // nodectl exits 0 only with the pinned digest verified; the report
        // says which image (plain) or how many bytes were assembled (chunked).
        let ok = match mode {
            Mode::Peer => v["assembly"]["image_bytes"].as_u64() == Some(image.bytes),
            _ => v["sha256"].as_str() == Some(image.sha256.as_str()),
        };
        if !ok {
            bail!("node {i}: not the image's report: {v}");
        }
        peer_bytes += v["peers"]["peer_bytes"].as_u64().unwrap_or(0);
        if mode == Mode::Peer {
            let dropped = v["peers"]["peers"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|p| !p["dropped"].is_null()).count());
            let known = v["peers"]["peers"].as_array().map_or(0, Vec::len);
            stats.0 += dropped;
            stats.1 += v["fetched_chunks"].as_u64().unwrap_or(0);
            stats.2 += v["peers"]["origin_chunks"].as_u64().unwrap_or(0);
            stats.3 += known;
            if dropped > 0 && stats.4.is_none() {
                stats.4 = v["peers"]["peers"].as_array().and_then(|a| {
                    a.iter()
                        .find_map(|p| p["dropped"].as_str().map(String::from))
                });
            }
        }
        times.push(t);
    }
    let server_egress = lab.server_tx()? - tx0;
    if mode == Mode::Peer {
        eprintln!(
            "xtask: bench fleet: peer N={n}: {:.1} peers known per node, {} dropped in all{}; origin chunks {} through the swarm, {} past it",
            stats.3 as f64 / n as f64,
            stats.0,
            stats.4.map(|w| format!(" (e.g. {w})")).unwrap_or_default(),
            stats.2,
            stats.1
        );
    }
    drop(procs);
    drop(origin);
    drop(lab);
    let _ = std::fs::remove_dir_all(&out);
    let max = times.iter().copied().fold(0.0, f64::max);
    Ok(Run {
        mode,
        nodes: n,
        p50: percentile(&mut times.clone(), 0.5),
        p99: percentile(&mut times, 0.99),
        max,
        server_egress,
        peer_bytes,
    })
}

/// Port of each node's chunk server (each node has its own namespace).
const PEER_PORT: u16 = 7070;

/// nodectl fetch's options of peer mode: chunks by the index, peers from
/// bootd, this node's chunks served to them until the run ends.
fn peer_args(image: &Image) -> Vec<std::ffi::OsString> {
    let base = format!("http://{SERVER_IP}:{PORT}");
    [
        "--index".to_string(),
        format!("{base}/{INDEX}"),
        "--index-sha256".into(),
        image.index_sha256.clone(),
        "--store".into(),
        format!("{base}/store"),
        "--peers".into(),
        base.clone(),
        "--serve-chunks".into(),
        format!("0.0.0.0:{PEER_PORT}"),
        "--linger".into(),
        "3600".into(),
    ]
    .into_iter()
    .map(Into::into)
    .collect()
}

const INDEX: &str = "live.caibx";

struct Bins {
    nodectl: PathBuf,
    bootd: PathBuf,
}

/// The image every node fetches, in a tmpfs served by both origins, with
/// its chunk index and store (peer mode).
struct Image {
    dir: PathBuf,
    www: PathBuf,
    sha256: String,
    index_sha256: String,
    bytes: u64,
}

/// nodectl and bootd in release mode (built unless given).
fn binaries(o: &Opts) -> Result<Bins> {
    let rel = crate::build::target_dir().join("release");
    if o.nodectl.is_none() || o.bootd.is_none() {
        crate::build::run(
            Command::new(env!("CARGO"))
                .current_dir(crate::build::root())
                .args([
                    "build",
                    "--release",
                    "-p",
                    "nodeboot-agent",
                    "-p",
                    "nodeboot-boot-server",
                ]),
        )?;
    }
    Ok(Bins {
        nodectl: o.nodectl.clone().unwrap_or_else(|| rel.join("nodectl")),
        bootd: o.bootd.clone().unwrap_or_else(|| rel.join("bootd")),
    })
}

/// The JSON document of `--json`.
pub fn to_json(image_bytes: u64, runs: &[Run]) -> serde_json::Value {
    serde_json::json!({
        "image_bytes": image_bytes,
        "runs": runs.iter().map(|r| serde_json::json!({
            "mode": r.mode.as_str(),
            "nodes": r.nodes,
            "p50_s": r.p50,
            "p99_s": r.p99,
            "max_s": r.max,
            "server_egress_bytes": r.server_egress,
        })).collect::<Vec<_>>(),
    })
}

pub fn run(o: &Opts) -> Result<()> {
    if o.modes.contains(&Mode::Nginx) {
        which(NGINX, "bench fleet", "nginx-light")?;
    }
    let max_n = o.nodes.iter().copied().max().unwrap_or(1);
    let bins = binaries(o)?;
    let bytes = o.image_mib << 20;
    // The served image, and every node's copy.
    let scratch = Scratch::new(bytes * (max_n as u64 + 2) + (64 << 20))?;
    let www = scratch.path.join("www");
    std::fs::create_dir_all(&www)?;
    let sha256 = write_random(&www.join(NAME), bytes)?;
    std::fs::write(
        www.join(format!("{NAME}.sha256")),
        format!("{sha256}  {NAME}\n"),
    )?;
    // The chunk index and store, as nodeimg build writes them beside the image.
    let (index, _, _) = nodeboot_chunks::Store::new(www.join("store"))
        .add_file(&www.join(NAME), nodeboot_chunks::Params::DEFAULT)
        .context("chunking the image")?;
    let ix = index.to_bytes();
    std::fs::write(www.join(INDEX), &ix)?;
    let image = Image {
        dir: scratch.path.clone(),
        www,
        sha256,
        index_sha256: nodeboot_chunks::sha256_hex(&ix),
        bytes,
    };
    let mut runs = Vec::new();
    for &n in &o.nodes {
        for &mode in &o.modes {
            eprintln!(
                "xtask: bench fleet: {} with {n} nodes (load {})",
                mode.as_str(),
                loadavg()
            );
            let r = run_one(o, &bins, &image, mode, n)
                .with_context(|| format!("bench fleet: {} with {n} nodes", mode.as_str()))?;
            eprintln!(
                "xtask: bench fleet: {:<5} N={n:<3} p50 {:6.2}s p99 {:6.2}s max {:6.2}s server egress {:.1}× image{}",
                mode.as_str(),
                r.p50,
                r.p99,
                r.max,
                r.server_egress as f64 / image.bytes as f64,
                if mode == Mode::Peer {
                    format!(", {:.1}× image from peers", r.peer_bytes as f64 / image.bytes as f64)
                } else {
                    String::new()
                }
            );
            runs.push(r);
        }
    }
    let doc = to_json(image.bytes, &runs);
    if o.json {
        println!("{doc}");
        return Ok(());
    }
    println!(
        "\nbench fleet: a {} MiB image (random bytes) to N nodes at once; node links {} Mbit/s, \
         server uplink {} Mbit/s (tc tbf), netns on one bridge; load {}",
        o.image_mib,
        o.node_mbit,
        o.server_mbit,
        loadavg()
    );
    println!(
        "  {:<6} {:>5} {:>8} {:>8} {:>8} {:>16}",
        "mode", "N", "p50 s", "p99 s", "max s", "server egress"
    );
    for r in &runs {
        println!(
            "  {:<6} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>14.1}×",
            r.mode.as_str(),
            r.nodes,
            r.p50,
            r.p99,
            r.max,
            r.server_egress as f64 / image.bytes as f64
        );
    }
    let json = crate::build::target_dir().join("bench-fleet.json");
    let _ = std::fs::create_dir_all(crate::build::target_dir());
    std::fs::write(&json, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [3.0], 0.99), 3.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn node_addresses_are_distinct_and_off_the_server() {
        let all: std::collections::HashSet<String> = (0..1000).map(node_ip).collect();
        assert_eq!(all.len(), 1000);
        assert!(!all.contains(SERVER_IP));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let runs = [Run {
            mode: Mode::Peer,
            nodes: 10,
            p50: 1.0,
            p99: 2.0,
            max: 2.5,
            server_egress: 42,
            peer_bytes: 7,
        }];
        let v = to_json(1 << 20, &runs);
        assert_eq!(v["image_bytes"], 1 << 20);
        let r = &v["runs"][0];
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "max_s",
                "mode",
                "nodes",
                "p50_s",
                "p99_s",
                "server_egress_bytes"
            ]
        );
        assert_eq!(r["mode"], "peer");
        assert_eq!(r["server_egress_bytes"], 42);
    }

    /// A real (small) lab: two nodes on the bridge reach the server, the
    /// namespaces are gone after drop. Needs root and iproute2.
    #[test]
    fn lab_builds_and_cleans_up() {
        if !crate::deps::nix_is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let lab = Lab::new(2, 10, 100).unwrap();
        let names: Vec<String> = lab.made.clone();
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.node(1),
                "ping",
                "-c1",
                "-W2",
                SERVER_IP,
            ])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stdout)
        );
        let q = Command::new("tc")
            .args(["-n", &lab.node(0), "qdisc", "show", "dev", "eth0"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&q.stdout).contains("rate 10Mbit"));
        assert!(lab.server_tx().unwrap() > 0);
        drop(lab);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        for n in names {
            assert!(!list.contains(&n), "{n} left behind");
        }
    }
}
