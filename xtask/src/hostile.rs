//! The QEMU boot `hostile` (issue 12, item 4): cn1 boots from the network
//! as in `pxe` (QEMU's iPXE ROM → bootd's DHCP → TFTP → iPXE script →
//! kernel, initrd, live image → multi-user) while the same network carries
//! an attack on bootd:
//!
//! - 2,000 slow HTTP connections from 40 addresses, each sending a request
//!   head a byte at a time; the attacker reconnects whatever bootd closes;
//! - 1,000 TFTP read requests never acknowledged (from 10 addresses), sent
//!   again every 20 s;
//! - 10,000 DISCOVERs from random MACs, then DHCP packets of every `hlen`,
//!   truncated, and with overlong options, about 1,000 packets a second
//!   for the whole boot.
//!
//! The boot network is a bridge `br0` (bootd's address) in one network
//! namespace: QEMU's tap and one end of a veth pair are its ports; the
//! attacker (`xtask hostile-load`, run with `ip netns exec`) is in a second
//! namespace on the other end of the veth. Nothing leaves the namespaces.
//! The scenario passes when cn1 reaches multi-user and bootd is still up;
//! it reports bootd's peak RSS and descriptors and what the attacker got.
use crate::e2e;
use crate::pxe::{self, ip, SERVER};
use crate::scenarios::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BRIDGE: &str = "br0";
/// The attacker's addresses: 10.99.0.100 to 10.99.0.139.
const ATTACKERS: u8 = 40;
const FIRST_ATTACKER: u8 = 100;

/// The boot network's namespace (bridge, tap, veth end) and the attacker's;
/// both deleted on drop.
struct Nets {
    node: String,
    attacker: String,
}

impl Nets {
    fn create() -> Result<Nets> {
        let pid = std::process::id();
        let nets = Nets {
            node: format!("nbhost-{pid}"),
            attacker: format!("nbatk-{pid}"),
        };
        for n in [&nets.node, &nets.attacker] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        let (n, a) = (nets.node.as_str(), nets.attacker.as_str());
        ip(&["-n", n, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", n, "tuntap", "add", pxe::TAP, "mode", "tap"])?;
        ip(&["-n", n, "link", "set", pxe::TAP, "master", BRIDGE])?;
        ip(&[
            "-n", n, "link", "add", "atk0", "type", "veth", "peer", "name", "atk1", "netns", a,
        ])?;
        ip(&["-n", n, "link", "set", "atk0", "master", BRIDGE])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{SERVER}/24"),
            "dev",
            BRIDGE,
        ])?;
        for l in [BRIDGE, pxe::TAP, "atk0"] {
            ip(&["-n", n, "link", "set", l, "up"])?;
        }
        for i in 0..ATTACKERS {
            let addr = format!("10.99.0.{}/24", FIRST_ATTACKER + i);
            ip(&["-n", a, "addr", "add", &addr, "dev", "atk1"])?;
        }
        ip(&["-n", a, "link", "set", "atk1", "up"])?;
        // Limited broadcast (255.255.255.255) needs a route: the veth is
        // the namespace's only link.
        ip(&["-n", a, "route", "add", "default", "dev", "atk1"])?;
        Ok(nets)
    }
}

impl Drop for Nets {
    fn drop(&mut self) {
        for n in [&self.node, &self.attacker] {
            if let Err(e) = ip(&["netns", "del", n]) {
                eprintln!("xtask: hostile: {e:#}");
            }
        }
    }
}

/// Kills and reaps the attacker on drop.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// bootd's resident set (kB) and open descriptors now.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

pub fn run(ctx: &Ctx, dir: &Path) -> Result<Value> {
    pxe::layout(ctx, dir)?;
    let inv = pxe::inventory(dir, true, None)?;
    let nets = Nets::create()?;
    let mut srv = pxe::Server::start(&ctx.bootd, &nets.node, BRIDGE, dir, &inv, &[])?;
    let pid = srv.child.id();
    let (rss0, fds0) = usage(pid).context("reading bootd's /proc")?;
    let stats = dir.join("load.json");
    let _ = std::fs::remove_file(&stats);
    let me = std::env::current_exe().context("the xtask binary")?;
    let load = Command::new("ip")
        .args(["netns", "exec", &nets.attacker])
        .arg(&me)
        .args(["hostile-load", "--server", SERVER, "--http-port"])
        .arg(srv.port.to_string())
        .arg("--stats")
        .arg(&stats)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("load.log"))?)
        .spawn()
        .context("starting the attacker")?;
    let load = Load(load);
    // Let the attack build up before the node asks for anything.
    std::thread::sleep(Duration::from_secs(5));
    let (peak_rss, peak_fds) = (
        Arc::new(AtomicU64::new(rss0)),
        Arc::new(AtomicU64::new(fds0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (r, f, stop) = (peak_rss.clone(), peak_fds.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, fds)) = usage(pid) {
                    r.fetch_max(rss, Ordering::Relaxed);
                    f.fetch_max(fds, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let watch = e2e::Watch {
        judge: &mut e2e::judge_ready,
        timeout: ctx.timeout(900),
        disks: &[],
        hostfwd: &[],
        tpm: None,
    };
    let boot = e2e::boot_pxe(
        &ctx.accel,
        &nets.node,
        pxe::TAP,
        dir,
        ctx.echo,
        watch,
        e2e::Firmware::Bios,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let alive = srv.child.try_wait()?.is_none();
    drop(load);
    let attack: Value = std::fs::read(&stats)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    if !alive {
        bail!(
            "bootd died under the attack; see {}",
            dir.join("bootd.log").display()
        );
    }
    let r = boot?;
    let st = r.status.clone().unwrap_or_default();
    if st["fetch"]["sha256"] != ctx.art.sha256.as_str() {
        bail!(
            "the node reports image sha256 {} but the image is {}",
            st["fetch"]["sha256"],
            ctx.art.sha256
        );
    }
    // The attack ran: bootd saw it (its limits said so in its log) and the
    // attacker really held connections and sent the packets.
    let held = attack["http"]["peak_open"].as_u64().unwrap_or(0);
    let dhcp = attack["dhcp"]["sent"].as_u64().unwrap_or(0);
    let tftp = attack["tftp"]["sent"].as_u64().unwrap_or(0);
    if held < 1000 || dhcp < 10_000 || tftp < 1000 {
        bail!("the attack did not run as planned: {attack}");
    }
    let t0 = Instant::now();
    let node_ready = srv.when(t0, |l| l.contains("node cn1 ready")).is_some();
    // The attack cannot flood the log: unknown MACs, refusals and
    // abandoned transfers are rationed per minute.
    let log_lines = std::fs::read_to_string(dir.join("bootd.log"))
        .map(|l| l.lines().count())
        .unwrap_or(0);
    let minutes = (r.seconds / 60.0).ceil().max(1.0) as usize;
    if log_lines > 300 + 150 * minutes {
        bail!(
            "bootd wrote {log_lines} log lines in {:.0} s of attack; see {}",
            r.seconds,
            dir.join("bootd.log").display()
        );
    }
    let report = json!({
        "accel": ctx.accel,
        "seconds": r.seconds,
        "milestones": r.milestones,
        "node_reported_ready_to_bootd": node_ready,
        "bootd_log_lines": log_lines,
        "bootd": {
            "alive": alive,
            "rss_kb_before": rss0,
            "peak_rss_kb": peak_rss.load(Ordering::Relaxed),
            "fds_before": fds0,
            "peak_fds": peak_fds.load(Ordering::Relaxed),
        },
        "attack": attack,
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

/// What the attacker did, written to `--stats` when it stops.
#[derive(Default)]
struct Tally {
    http_opened: AtomicU64,
    http_open: AtomicU64,
    http_peak: AtomicU64,
    http_closed_by_server: AtomicU64,
    http_503: AtomicU64,
    http_connect_failed: AtomicU64,
    tftp_sent: AtomicU64,
    tftp_data: AtomicU64,
    tftp_errors: AtomicU64,
    dhcp_sent: AtomicU64,
}

/// `xtask hostile-load`: the attacker (run inside its network namespace).
pub fn load(server: Ipv4Addr, http_port: u16, stats: &Path) -> Result<()> {
    // 3,000 sockets and more: the soft descriptor limit up to the hard one.
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            bail!("getrlimit NOFILE: {}", std::io::Error::last_os_error());
        }
        l.rlim_cur = l.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
            bail!("setrlimit NOFILE: {}", std::io::Error::last_os_error());
        }
        if l.rlim_cur < 4000 {
            bail!("open files limit {}: the attack needs 4000", l.rlim_cur);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT/SIGTERM end the load: a flag polled by the workers.
        STOP.get_or_init(|| stop);
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::signal(libc::SIGINT, h);
            libc::signal(libc::SIGTERM, h);
        }
    }
    let tally = Arc::new(Tally::default());
    let src = |i: u8| Ipv4Addr::new(10, 99, 0, FIRST_ATTACKER + i % ATTACKERS);
    let mut workers = Vec::new();
    {
        let (t, stop) = (tally.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            slow_http(server, http_port, &src, &t, &stop)
        }));
    }
    {
        let (t, stop) = (tally.clone(), stop.clone());
        workers.push(std::thread::spawn(move || tftp(server, &src, &t, &stop)));
    }
    {
        let (t, stop) = (tally.clone(), stop.clone());
        workers.push(std::thread::spawn(move || dhcp(&t, &stop)));
    }
    let write = |t: &Tally| {
        let v = json!({
            "http": {
                "connections_wanted": 2000,
                "opened": t.http_opened.load(Ordering::Relaxed),
                "peak_open": t.http_peak.load(Ordering::Relaxed),
                "closed_by_bootd": t.http_closed_by_server.load(Ordering::Relaxed),
                "answered_503": t.http_503.load(Ordering::Relaxed),
                "connect_failed": t.http_connect_failed.load(Ordering::Relaxed),
            },
            "tftp": {
                "sent": t.tftp_sent.load(Ordering::Relaxed),
                "data_packets_received": t.tftp_data.load(Ordering::Relaxed),
                "errors_received": t.tftp_errors.load(Ordering::Relaxed),
            },
            "dhcp": { "sent": t.dhcp_sent.load(Ordering::Relaxed) },
        });
        let _ = std::fs::write(stats, v.to_string());
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        write(&tally);
    }
    for w in workers {
        let _ = w.join();
    }
    write(&tally);
    Ok(())
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some(s) = STOP.get() {
        s.store(true, Ordering::Relaxed);
    }
}

/// A TCP connection from `src` to `to`, or None.
fn connect_from(src: Ipv4Addr, to: SocketAddrV4) -> Option<TcpStream> {
    // SAFETY: plain socket syscalls; the descriptor is owned by the stream
    // on success and closed on failure.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let sin = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let from = sin(SocketAddrV4::new(src, 0));
        let dest = sin(to);
        let ok = libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) == 0
            && libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), len) == 0;
        if !ok {
            libc::close(fd);
            return None;
        }
        Some(<TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd))
    }
}

/// 2,000 connections (50 per address) sending a head a byte every 2 s;
/// whatever bootd closes is opened again.
fn slow_http(
    server: Ipv4Addr,
    port: u16,
    src: &dyn Fn(u8) -> Ipv4Addr,
    t: &Tally,
    stop: &AtomicBool,
) {
    const N: usize = 2000;
    let to = SocketAddrV4::new(server, port);
    let head = b"GET /live.squashfs HTTP/1.1\r\nHost: bootd\r\nX-Slow: ";
    let mut conns: Vec<Option<(TcpStream, usize)>> = (0..N).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        for (i, c) in conns.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if c.is_none() {
                match connect_from(src((i % ATTACKERS as usize) as u8), to) {
                    Some(s) => {
                        let _ = s.set_nonblocking(true);
                        t.http_opened.fetch_add(1, Ordering::Relaxed);
                        let open = t.http_open.fetch_add(1, Ordering::Relaxed) + 1;
                        t.http_peak.fetch_max(open, Ordering::Relaxed);
                        *c = Some((s, 0));
                    }
                    None => {
                        t.http_connect_failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            let Some((s, sent)) = c.as_mut() else {
                continue;
            };
            // Anything from bootd (a 503, or EOF) ends this connection.
            let mut buf = [0u8; 512];
            let gone = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    if buf[..n].starts_with(b"HTTP/1.1 503") {
                        t.http_503.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let b = if *sent < head.len() {
                head[*sent]
            } else {
                b'a'
            };
            let gone = gone || s.write(&[b]).is_err();
            if gone {
                t.http_closed_by_server.fetch_add(1, Ordering::Relaxed);
                t.http_open.fetch_sub(1, Ordering::Relaxed);
                *c = None;
            } else {
                *sent += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// 1,000 read requests (100 per address for 10 addresses, each from its
/// own port), never acknowledged, sent again every 20 s.
fn tftp(server: Ipv4Addr, src: &dyn Fn(u8) -> Ipv4Addr, t: &Tally, stop: &AtomicBool) {
    let mut rrq = vec![0u8, 1];
    rrq.extend_from_slice(b"undionly.kpxe\x00octet\x00blksize\x001468\x00");
    let to = SocketAddr::V4(SocketAddrV4::new(server, 69));
    let socks: Vec<UdpSocket> = (0..1000u32)
        .filter_map(|i| {
            let s = UdpSocket::bind(SocketAddrV4::new(src((i % 10) as u8), 0)).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
        .collect();
    let mut last: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if last.is_none_or(|l| l.elapsed() >= Duration::from_secs(20)) {
            for s in &socks {
                if s.send_to(&rrq, to).is_ok() {
                    t.tftp_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            last = Some(Instant::now());
        }
        for s in &socks {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                match buf.get(1) {
                    Some(3 | 6) if n > 0 => t.tftp_data.fetch_add(1, Ordering::Relaxed),
                    Some(5) => t.tftp_errors.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A DISCOVER from `mac`, as BIOS PXE firmware sends it.
fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1, 93, 2, 0, 0]);
    p.extend_from_slice(&[60, 9]);
    p.extend_from_slice(b"PXEClient");
    p.push(255);
    p.resize(300, 0);
    p
}

/// 10,000 DISCOVERs from random MACs, then malformed packets, about 1,000
/// packets a second until stopped.
fn dhcp(t: &Tally, stop: &AtomicBool) {
    let Ok(s) = UdpSocket::bind("0.0.0.0:68") else {
        eprintln!("hostile-load: cannot bind UDP 68");
        return;
    };
    let _ = s.set_broadcast(true);
    let to = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut malformed: Vec<Vec<u8>> = Vec::new();
    let base = discover(7, [2, 0, 0, 0, 0, 7]);
    for hlen in 0..=255u8 {
        let mut p = base.clone();
        p[2] = hlen;
        malformed.push(p);
    }
    for n in [0, 1, 2, 3, 28, 44, 100, 236, 239, 240, 241, 243] {
        let mut p = base[..n].to_vec();
        if p.len() > 2 {
            p[2] = 255;
        }
        malformed.push(p);
    }
    for tail in [
        vec![53, 1, 1, 43, 255, 1, 2, 3],
        vec![53, 1, 1, 12],
        [vec![53, 1, 1], vec![43, 255], vec![7; 255]].concat(),
        [
            vec![53, 1, 1],
            [vec![43u8, 200], vec![1; 200]].concat().repeat(20),
        ]
        .concat(),
        vec![0; 5000],
    ] {
        malformed.push([&base[..240], &tail[..]].concat());
    }
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let p = if i < 10_000 || !i.is_multiple_of(4) {
            let r = next().to_be_bytes();
            discover(r[6] as u32, [0x02, r[0], r[1], r[2], r[3], r[4]])
        } else {
            malformed[(i as usize / 4) % malformed.len()].clone()
        };
        if s.send_to(&p, to).is_ok() {
            t.dhcp_sent.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
        if i.is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
