//! `nodectl net-up` end to end, as root: two network namespaces made by the
//! test (a "server" and a "client", unique names, removed on drop) joined by
//! a veth pair; dnsmasq serves DHCP in the server namespace, the built
//! nodectl runs in the client namespace through `ip netns exec`.
//!
//! Needs root and iproute2 (else the tests print why and pass without
//! running) and dnsmasq (Debian's `dnsmasq-base`; a missing one fails).
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The client's NIC: its name and MAC inside the client namespace.
const NIC: &str = "eth7";
const MAC: &str = "02:77:00:00:00:07";

fn run(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veth, packet sockets)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns` does not work here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
    }
}

macro_rules! require_netns {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIP {}: {why}", module_path!());
            return;
        }
    };
}

fn dnsmasq() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("dnsmasq");
        if p.is_file() {
            return p;
        }
    }
    panic!("dnsmasq not found: install Debian's dnsmasq-base (apt-get install -y dnsmasq-base)");
}

/// Two namespaces; the veth pair may be made later ([`Pair::link`]).
struct Pair {
    server: String,
    client: String,
    /// The /24 both ends use: 10.77.<net>.0/24, server at .1.
    net: u8,
    dnsmasq: Option<Child>,
    dir: tempfile::TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Pair {
    fn new(tag: &str, net: u8) -> Pair {
        let id = format!(
            "nbt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let p = Pair {
            server: format!("{id}-s"),
            client: format!("{id}-c"),
            net,
            dnsmasq: None,
            dir: tempfile::tempdir().unwrap(),
        };
        for n in [&p.server, &p.client] {
            run(&["ip", "netns", "add", n]);
        }
        run(&["ip", "-n", &p.client, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &p.server, "link", "set", "lo", "up"]);
        p
    }

    fn server_ip(&self) -> String {
        format!("10.77.{}.1", self.net)
    }

    /// The veth pair: `veth0` (server, 10.77.<net>.1/24, up if `peer_up`)
    /// and `eth7` (client, MAC 02:77:00:00:00:07, down).
    fn link(&self, peer_up: bool) {
        run(&[
            "ip",
            "-n",
            &self.server,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            NIC,
            "netns",
            &self.client,
        ]);
        run(&["ip", "-n", &self.client, "link", "set", NIC, "address", MAC]);
        let cidr = format!("{}/24", self.server_ip());
        run(&[
            "ip",
            "-n",
            &self.server,
            "addr",
            "add",
            &cidr,
            "dev",
            "veth0",
        ]);
        if peer_up {
            run(&["ip", "-n", &self.server, "link", "set", "veth0", "up"]);
        }
    }

    /// dnsmasq as the DHCP server on veth0: range .100–.150, router .1,
    /// DNS .53, lease 1h. Returns once it listens on port 67.
    fn serve_dhcp(&mut self) {
        let n = self.net;
        let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server])
            .arg(dnsmasq())
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0", // no DNS
                "--interface=veth0",
                "--bind-interfaces",
                "--log-dhcp",
            ])
            .arg(format!(
                "--dhcp-range=10.77.{n}.100,10.77.{n}.150,255.255.255.0,1h"
            ))
            .arg(format!("--dhcp-option=option:router,10.77.{n}.1"))
            .arg(format!("--dhcp-option=option:dns-server,10.77.{n}.53"))
            .arg("--dhcp-option=option:domain-name,cluster.test")
            .arg(format!(
                "--dhcp-leasefile={}",
                self.dir.path().join("leases").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("dnsmasq.pid").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dnsmasq through ip netns exec");
        // `ip netns exec` execs dnsmasq: the child is dnsmasq itself.
        self.dnsmasq = Some(child);
        let t = Instant::now();
        loop {
            let udp = text(&run(&[
                "ip",
                "netns",
                "exec",
                &self.server,
                "cat",
                "/proc/net/udp",
            ]));
            if udp.lines().any(|l| l.contains(":0043 ")) {
                return;
            }
            if let Some(st) = self.dnsmasq.as_mut().unwrap().try_wait().unwrap() {
                panic!("dnsmasq exited ({st}): {}", self.dnsmasq_log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "dnsmasq does not listen on port 67: {}",
                self.dnsmasq_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    fn nodectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.client,
            env!("CARGO_BIN_EXE_nodectl"),
            "net-up",
        ])
        .args(args)
        .env("NODECTL_LOG", "info")
        .stdin(Stdio::null());
        c
    }

    fn net_up(&self, args: &[&str]) -> Output {
        self.nodectl(args).output().unwrap()
    }

    fn ip_client(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.client];
        v.extend_from_slice(args);
        text(&run(&v))
    }

    /// Connect from the client namespace to a listener in the server
    /// namespace at `to`; returns the client address the server saw.
    fn tcp_from_client(&self, to: Ipv4Addr) -> Ipv4Addr {
        let listener = in_netns(&self.server, move || TcpListener::bind((to, 0)).unwrap());
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || listener.accept().unwrap().1);
        in_netns(&self.client, move || {
            let a = SocketAddr::from((to, port));
            TcpStream::connect_timeout(&a, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connecting to {a} from the client: {e}"));
        });
        match peer.join().unwrap() {
            SocketAddr::V4(a) => *a.ip(),
            a => panic!("{a}"),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(c) = &mut self.dnsmasq {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Run `f` on a thread that has joined network namespace `ns` (setns only
/// moves the calling thread; sockets keep the namespace they were made in).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: a valid namespace fd; affects only this thread.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nodectl net-up failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "nodectl net-up should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dhcp_from_dnsmasq_configures_address_route_and_dns() {
    require_netns!();
    let mut p = Pair::new("dhcp", 1);
    p.link(true);
    p.serve_dhcp();
    let etc = tempfile::tempdir().unwrap();
    let out = p.net_up(&[
        "--mac",
        MAC,
        "--timeout",
        "20",
        "--etc",
        etc.path().to_str().unwrap(),
    ]);
    let r = json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("{r}\n{stderr}\ndnsmasq:\n{}", p.dnsmasq_log());
    assert_eq!(r["iface"], NIC, "{ctx}");
    assert_eq!(r["mac"], MAC);
    assert_eq!(r["method"], "dhcp");
    let addr: Ipv4Addr = r["address"].as_str().unwrap().parse().unwrap();
    let o = addr.octets();
    assert!(
        o[..3] == [10, 77, 1] && (100..=150).contains(&o[3]),
        "address {addr} outside the range: {ctx}"
    );
    assert_eq!(r["prefix"], 24);
    assert_eq!(r["gateway"], "10.77.1.1");
    assert_eq!(r["server"], "10.77.1.1");
    assert_eq!(r["dns"], serde_json::json!(["10.77.1.53"]));
    assert_eq!(r["domain"], "cluster.test");
    assert_eq!(r["lease_seconds"], 3600);
    let total = r["seconds"].as_f64().unwrap();
    assert!(total > 0.0 && total < 20.0, "{ctx}");
    assert!(r["timings"]["address"].as_f64().unwrap() <= total);
    // One progress line per step on stderr.
    for step in [
        "net: found eth7 (02:77:00:00:00:07)",
        "net: eth7 set up",
        "net: eth7 has carrier",
        "net: DHCP offer of ",
        &format!("net: eth7 has {addr}/24 (dhcp)"),
        "net: default route via 10.77.1.1 on eth7",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    // The kernel state.
    let a = p.ip_client(&["-4", "addr", "show", "dev", NIC]);
    assert!(
        a.contains(&format!("inet {addr}/24 brd 10.77.1.255")),
        "{a}"
    );
    let rt = p.ip_client(&["-4", "route", "show", "default"]);
    assert!(
        rt.contains("default via 10.77.1.1 dev eth7 proto dhcp"),
        "{rt}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.path().join("resolv.conf")).unwrap(),
        "# written by nodectl net-up (DHCP from 10.77.1.1)\nsearch cluster.test\nnameserver 10.77.1.53\n"
    );
    // The server committed the lease to our MAC.
    let leases = std::fs::read_to_string(p.dir.path().join("leases")).unwrap();
    assert!(
        leases.contains(&format!("{MAC} {addr} ")),
        "{leases}\n{ctx}"
    );
    // And the address works: the server sees a connection from it.
    assert_eq!(p.tcp_from_client("10.77.1.1".parse().unwrap()), addr);
    // Beyond the subnet, through the default route: an address only the
    // server namespace has, on its loopback.
    run(&[
        "ip",
        "-n",
        &p.server,
        "addr",
        "add",
        "10.78.1.1/32",
        "dev",
        "lo",
    ]);
    assert_eq!(p.tcp_from_client("10.78.1.1".parse().unwrap()), addr);
}

#[test]
fn waits_for_a_link_that_appears_late() {
    require_netns!();
    let mut p = Pair::new("late", 2);
    let etc = tempfile::tempdir().unwrap();
    let child = p
        .nodectl(&[
            "--mac",
            MAC,
            "--timeout",
            "20",
            "--etc",
            etc.path().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The "driver" loads 1.5 s later.
    std::thread::sleep(Duration::from_millis(1500));
    p.link(true);
    p.serve_dhcp();
    let out = child.wait_with_output().unwrap();
    let r = json(&out);
    let found = r["timings"]["link_found"].as_f64().unwrap();
    assert!(found >= 1.4, "link found after {found}s: {r}");
    assert!(r["address"].as_str().unwrap().starts_with("10.77.2."));
}

#[test]
fn no_dhcp_server_fails_within_the_bound() {
    require_netns!();
    let p = Pair::new("nodhcp", 3);
    p.link(true);
    let t = Instant::now();
    let out = p.net_up(&["--mac", MAC, "--timeout", "5", "--etc", "/nonexistent"]);
    let took = t.elapsed();
    let e = failure(&out);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(8),
        "took {took:?}: {e}"
    );
    // DISCOVERs at 0, 1 and 3 s; the next would be at 7 s.
    assert!(
        e.contains(
            "nodectl: error: no DHCP offer on eth7 (02:77:00:00:00:07) within 5s after 3 DISCOVERs"
        ),
        "{e}"
    );
    assert!(!Path::new("/nonexistent/resolv.conf").exists());
}

#[test]
fn unknown_mac_lists_the_links() {
    require_netns!();
    let p = Pair::new("nomac", 4);
    p.link(true);
    let t = Instant::now();
    let out = p.net_up(&["--mac", "02:77:00:00:00:99", "--timeout", "2"]);
    let took = t.elapsed();
    let e = failure(&out);
    assert!(
        e.contains(
            "nodectl: error: no network link with MAC 02:77:00:00:00:99 appeared within 2s \
             (links: lo 00:00:00:00:00:00, eth7 02:77:00:00:00:07)"
        ),
        "{e}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn no_carrier_is_reported() {
    require_netns!();
    let p = Pair::new("nocarrier", 5);
    p.link(false); // the far end stays down: no carrier on eth7
    let out = p.net_up(&["--mac", MAC, "--timeout", "2"]);
    let e = failure(&out);
    assert!(
        e.contains(
            "nodectl: error: eth7 (02:77:00:00:00:07) has no carrier within 2s \
             (operstate down): is the cable plugged in and the switch port up?"
        ),
        "{e}"
    );
}

#[test]
fn static_ip_from_the_cmdline_form() {
    require_netns!();
    let p = Pair::new("static", 6);
    p.link(true);
    run(&[
        "ip",
        "-n",
        &p.server,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        "veth0",
    ]);
    let etc = tempfile::tempdir().unwrap();
    let out = p.net_up(&[
        "--ip",
        "10.99.0.5::10.99.0.1:24::eth7:none",
        "--timeout",
        "5",
        "--etc",
        etc.path().to_str().unwrap(),
    ]);
    let r = json(&out);
    assert_eq!(r["method"], "static");
    assert_eq!(r["iface"], NIC);
    assert_eq!(r["address"], "10.99.0.5");
    assert_eq!(r["prefix"], 24);
    assert_eq!(r["gateway"], "10.99.0.1");
    assert_eq!(r["server"], serde_json::Value::Null);
    let a = p.ip_client(&["-4", "addr", "show", "dev", NIC]);
    assert!(a.contains("inet 10.99.0.5/24 brd 10.99.0.255"), "{a}");
    // -d: iproute2 hides "proto boot" otherwise.
    let rt = p.ip_client(&["-4", "-d", "route", "show", "default"]);
    assert!(
        rt.contains("default via 10.99.0.1 dev eth7 proto boot"),
        "{rt}"
    );
    // No DNS given: resolv.conf is left alone.
    assert!(!etc.path().join("resolv.conf").exists());
    assert_eq!(
        p.tcp_from_client("10.99.0.1".parse().unwrap()),
        Ipv4Addr::new(10, 99, 0, 5)
    );
    // Running it again (a retried unit) is fine: address and route replaced.
    let again = p.net_up(&[
        "--ip",
        "10.99.0.5::10.99.0.1:24::eth7:none",
        "--timeout",
        "5",
    ]);
    assert_eq!(json(&again)["address"], "10.99.0.5");
}

#[test]
fn ip_off_is_refused_before_touching_links() {
    require_netns!();
    let p = Pair::new("off", 7);
    p.link(true);
    let out = p.net_up(&["--ip", "off", "--timeout", "2"]);
    let e = failure(&out);
    assert!(
        e.contains("nodectl: error: ip=off: the network is switched off"),
        "{e}"
    );
    let l = p.ip_client(&["link", "show", NIC]);
    assert!(!l.contains(",UP"), "eth7 was set up: {l}");
}
