//! QEMU scenario `peers`: the initramfs fetches its chunks from peers
//! (issue 16, `nodeboot.peers=1`).
//!
//! Everything runs in one network namespace that has `10.0.2.2` on its
//! loopback: QEMU's user-net there maps the guest's `10.0.2.2` to that
//! loopback, and a claim made *from* `10.0.2.2` is one bootd hands out as
//! `10.0.2.2:PORT`, which the guest reaches. In it:
//! - bootd, serving the image's index and chunk store;
//! - an honest peer: `nodectl serve-chunks` on the verified image, port
//!   [`HONEST_PORT`], claiming the image with bootd;
//! - a lying peer (here, a thread): its `have` map claims every chunk, and
//!   every chunk it sends is wrong, port [`LIAR_PORT`], claimed too.
//!
//! The node boots chunked with `nodeboot.peers=1`. Asserted from its
//! `boot.json` (the status line), its console and bootd's log: chunks came
//! from the honest peer, the liar was dropped with a message naming it,
//! bootd served only the chunks the swarm took from the origin (before
//! the peers were known), the image's digest verified, multi-user reached.
//! While it fetched, the initramfs served its verified chunks: its `have`
//! map, read through a port forward, grew; once booted,
//! `nodectl-serve-chunks.service` serves the whole image on the same port.
use crate::e2e::{self, Artifacts};
use crate::scenarios::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HONEST_PORT: u16 = 7071;
pub const LIAR_PORT: u16 = 7072;
/// The namespace's port forwarded to the node's chunk server (7070).
const FWD_PORT: u16 = 17070;

/// A network namespace with `10.0.2.2/32` on its loopback; deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Result<Netns> {
        let name = format!("nbpeers-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        crate::pxe::ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        crate::pxe::ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        crate::pxe::ip(&["-n", &ns.0, "addr", "add", "10.0.2.2/32", "dev", "lo"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = crate::pxe::ip(&["netns", "del", &self.0]) {
            eprintln!("xtask: peers: {e:#}");
        }
    }
}

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Move the calling thread into namespace `ns` (its sockets are made there).
fn enter(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening /run/netns/{ns}"))?;
    // SAFETY: setns on a valid descriptor; it changes this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One plain HTTP/1.1 request (Connection: close): (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the answer's head")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, buf[end + 4..].to_vec()))
}

/// The lying peer: in namespace `ns`, on `LIAR_PORT`, claims every one of
/// `chunks` chunks of `image` and sends 4 KiB of 0x55 for each; claims the
/// image with bootd at `bootd` (host:port). Counts the chunks it sent.
fn liar(ns: String, image: String, chunks: usize, bootd: String) -> Result<Arc<AtomicU64>> {
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let n = sent.clone();
    std::thread::spawn(move || {
        let l = enter(&ns).and_then(|()| {
            let l = TcpListener::bind(("0.0.0.0", LIAR_PORT))?;
            let (st, body) = http(
                &bootd,
                "POST",
                "/peers",
                &json!({ "image": image, "port": LIAR_PORT }).to_string(),
            )?;
            if st != 204 {
                bail!(
                    "bootd refused the liar's claim: HTTP {st} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(l)
        });
        let l = match l {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let have = vec![0xffu8; chunks.div_ceil(8)];
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let (have, n) = (have.clone(), n.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut w = s;
                loop {
                    let mut first = String::new();
                    if r.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or_default();
                    let body = if path.ends_with("/have") {
                        have.clone()
                    } else if path.contains("/chunk/") {
                        n.fetch_add(1, Ordering::Relaxed);
                        vec![0x55u8; 4096]
                    } else {
                        Vec::new()
                    };
                    let status = if body.is_empty() {
                        "404 Not Found"
                    } else {
                        "200 OK"
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if w.write_all(head.as_bytes()).is_err() || w.write_all(&body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .context("the lying peer did not start")??;
    Ok(sent)
}

/// The node's `have` map through the port forward, every second until
/// `stop`: (seconds since start, chunks set).
fn watch_node(ns: String, image: String, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<(f64, u32)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        if let Err(e) = enter(&ns) {
            eprintln!("xtask: peers: {e:#}");
            return;
        }
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let addr = format!("127.0.0.1:{FWD_PORT}");
            if let Ok((200, map)) = http(&addr, "GET", &format!("/v1/{image}/have"), "") {
                let set = map.iter().map(|b| b.count_ones()).sum();
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((t0.elapsed().as_secs_f64(), set));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    seen
}

pub fn run(ctx: &Ctx, dir: &Path) -> Result<Value> {
    let a: &Artifacts = &ctx.art;
    let manifest: Value = serde_json::from_slice(&std::fs::read(a.www.join("live.json"))?)?;
    let c = &manifest["chunked"];
    let (Some(index), Some(index_sha256)) = (c["index"].as_str(), c["index_sha256"].as_str())
    else {
        bail!("live.json has no chunk index: {manifest}");
    };
    let ix = nodeboot_chunks::Index::parse(&std::fs::read(a.www.join(index))?)
        .with_context(|| format!("parsing {index}"))?;
    let chunks = ix.chunks.len();
    let image = a.sha256.clone();

    let ns = Netns::create()?;
    let log = |n: &str| -> Result<(std::fs::File, std::fs::File)> {
        let f = std::fs::File::create(dir.join(n))?;
        Ok((f.try_clone()?, f))
    };
    let port_file = dir.join("bootd.port");
    let _ = std::fs::remove_file(&port_file);
    let (o, e) = log("bootd.log")?;
    let _bootd = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(&ctx.bootd)
            .args(["serve", "--listen", "0.0.0.0:0", "--root"])
            .arg(&a.www)
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e)
            .spawn()
            .context("starting bootd")?,
    );
    let t = Instant::now();
    let port: u16 = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!(
                "bootd did not start within 10s (see {})",
                dir.join("bootd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let bootd_url = format!("http://10.0.2.2:{port}");

    // The honest peer: the verified image, checked chunk by chunk first.
    let (o, e) = log("honest-peer.log")?;
    let _honest = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(crate::build::nodectl_static()?)
            .args(["serve-chunks", "--image"])
            .arg(a.www.join("live.squashfs"))
            .arg("--index")
            .arg(a.www.join(index))
            .args(["--listen", &format!("0.0.0.0:{HONEST_PORT}")])
            .args(["--bootd", &bootd_url])
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e)
            .spawn()
            .context("starting nodectl serve-chunks")?,
    );
    let lies = liar(
        ns.0.clone(),
        image.clone(),
        chunks,
        format!("10.0.2.2:{port}"),
    )?;

    // Both claims in bootd's table before the node boots.
    let want = [
        format!("10.0.2.2:{HONEST_PORT}"),
        format!("10.0.2.2:{LIAR_PORT}"),
    ];
    let t = Instant::now();
    let listed = loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0, "curl", "-sf"])
            // From 127.0.0.1: bootd leaves the asker's own address out.
            .arg(format!("http://127.0.0.1:{port}/peers?image={image}"))
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let got: Vec<String> = v["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if want.iter().all(|w| got.contains(w)) {
            break got;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "bootd lists {got:?}, not both peers {want:?} (see {})",
                dir.join("honest-peer.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("xtask: peers: bootd lists {listed:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = watch_node(ns.0.clone(), image.clone(), stop.clone());
    let cmdline = e2e::cmdline(
        port,
        &format!(
            "nodeboot.sha256={image} nodeboot.index=http://10.0.2.2:{port}/{index} \
             nodeboot.index.sha256={index_sha256} nodeboot.peers=1"
        ),
    );
    // Ready, and (for up to 150 s more) the booted chunk server's map full.
    let mut ready_at: Option<Instant> = None;
    let seen2 = seen.clone();
    let mut judge = |s: &Value, line: &str| -> Option<Result<()>> {
        if ready_at.is_none() {
            match e2e::judge_ready(s, line)? {
                Ok(()) => ready_at = Some(Instant::now()),
                Err(e) => return Some(Err(e)),
            }
        }
        let full = seen2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|&(_, n)| n as usize >= chunks);
        (full || ready_at.is_some_and(|t| t.elapsed() > Duration::from_secs(150))).then_some(Ok(()))
    };
    let hostfwd = [format!("tcp:127.0.0.1:{FWD_PORT}-:7070")];
    let watch = e2e::Watch {
        judge: &mut judge,
        timeout: ctx.timeout(480),
        disks: &[],
        hostfwd: &hostfwd,
        tpm: None,
    };
    let r = e2e::boot_in(Some(&ns.0), a, &ctx.accel, &cmdline, dir, ctx.echo, watch);
    stop.store(true, Ordering::Relaxed);
    let r = r?;
    let samples = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let st = crate::scenarios::chunked_status(&r, &image)?;
    let ch = &st["chunked"];
    // The status line has no per-peer detail: the console's summary line
    // (agent/src/initrd.rs, peers_summary) has it.
    let console = std::fs::read_to_string(&r.console)?;
    let Some(sum) = console.lines().find_map(|l| {
        l.split_once("nodectl initrd: peers gave ")
            .map(|(_, r)| r.to_string())
    }) else {
        bail!("the console has no peers summary ({})", r.console.display());
    };
    let num = |after: &str| -> u64 {
        sum.split_once(after)
            .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    };
    let honest_chunks: u64 = sum
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let peer_bytes = num(" chunks (");
    let swarm_origin = num("the origin through the swarm ");
    if honest_chunks == 0 || sum.contains(&format!("peer {} dropped", want[0])) {
        bail!("the honest peer gave no chunk or was dropped: {sum}");
    }
    if !sum.contains(&format!("peer {} dropped (sent a wrong chunk", want[1])) {
        bail!("the lying peer was not dropped for a wrong chunk: {sum}");
    }
    let msg = format!(
        "peer {} dropped for the rest of the fetch: it sent a wrong chunk",
        want[1]
    );
    if !console.contains(&msg) {
        bail!("the console has no {msg:?} ({})", r.console.display());
    }
    // bootd served what the swarm took from the origin (and the stores
    // behind it), no more, and never the whole image.
    let blog = std::fs::read_to_string(dir.join("bootd.log"))?;
    if blog.lines().any(|l| l.contains("GET /live.squashfs ")) {
        bail!("bootd's log shows the whole image fetched");
    }
    let served = blog.lines().filter(|l| l.contains("GET /store/")).count() as u64;
    let origin = swarm_origin + ch["fetched_chunks"].as_u64().unwrap_or(0);
    if served != origin {
        bail!("bootd served {served} chunks, the node reports {origin} from the origin");
    }
    if served >= honest_chunks {
        bail!("bootd served {served} chunks, the honest peer only {honest_chunks}");
    }
    // The initramfs served while it fetched; the booted node serves all.
    let partial = samples
        .iter()
        .find(|&&(_, n)| n > 0 && (n as usize) < chunks)
        .copied();
    let full = samples
        .iter()
        .find(|&&(_, n)| n as usize >= chunks)
        .copied();
    if partial.is_none() {
        bail!("the node's chunk server was never seen with part of the image: {samples:?}");
    }
    if full.is_none() {
        bail!("the booted node's chunk server never had the whole image: {samples:?}");
    }
    let report = json!({
        "seconds": r.seconds,
        "milestones": r.milestones,
        "image_bytes": manifest["size"],
        "chunks": chunks,
        "peers_listed": listed,
        "peers_summary": sum,
        "peer_chunks": honest_chunks,
        "peer_bytes": peer_bytes,
        "lying_peer_chunks_sent": lies.load(Ordering::Relaxed),
        "origin_chunks_via_swarm": swarm_origin,
        "store_chunks": ch["fetched_chunks"],
        "store_bytes": ch["fetched_bytes"],
        "bootd_chunk_requests": served,
        "fetch_seconds": st["fetch"]["seconds"],
        "node_have_first_partial": partial,
        "node_have_full": full,
        "serving": ch["serving"],
        "cmdline": cmdline,
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}
