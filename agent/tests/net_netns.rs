//! The boot-NIC bring-up against a real DHCP server (dnsmasq) across a veth
//! pair between two network namespaces made by the test.
use std::process::{Child, Command, Output, Stdio};

fn sh(args: &[&str]) -> Output {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP net_netns: needs root (network namespaces)");
        return false;
    }
    true
}

/// Two namespaces joined by a veth pair: `<n>s` (server side, 10.77.X.1) and `<n>c`.
struct Pair {
    server: String,
    client: String,
    dnsmasq: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn new(tag: &str, net: u8, with_dhcp: bool) -> Pair {
        let server = format!("nbt{tag}s");
        let client = format!("nbt{tag}c");
        for n in [&server, &client] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&["ip", "netns", "add", n]);
        }
        sh(&[
            "ip", "-n", &server, "link", "add", "veth0", "type", "veth", "peer", "name", "eth7",
            "netns", &client,
        ]);
        sh(&[
            "ip",
            "-n",
            &client,
            "link",
            "set",
            "eth7",
            "address",
            "02:77:00:00:00:07",
        ]);
        sh(&[
            "ip",
            "-n",
            &server,
            "addr",
            "add",
            &format!("10.77.{net}.1/24"),
            "dev",
            "veth0",
        ]);
        sh(&["ip", "-n", &server, "link", "set", "veth0", "up"]);
        sh(&["ip", "-n", &client, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let dnsmasq = with_dhcp.then(|| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &server,
                    "dnsmasq",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--port=0",
                ])
                .arg("--interface=veth0")
                .arg(format!(
                    "--dhcp-range=10.77.{net}.100,10.77.{net}.150,255.255.255.0,1h"
                ))
                .arg(format!("--dhcp-option=option:router,10.77.{net}.1"))
                .arg(format!("--dhcp-option=option:dns-server,10.77.{net}.53"))
                .arg(format!(
                    "--dhcp-leasefile={}",
                    dir.path().join("leases").display()
                ))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq missing: apt-get install dnsmasq-base")
        });
        Pair {
            server,
            client,
            dnsmasq,
            _dir: dir,
        }
    }

    fn nodectl(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                env!("CARGO_BIN_EXE_nodectl"),
                "net-up",
            ])
            .args(args)
            .output()
            .unwrap()
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

#[test]
fn dhcp_from_dnsmasq_configures_address_route_and_dns() {
    if !can_run() {
        return;
    }
    let p = Pair::new("d", 1, true);
    let etc = tempfile::tempdir().unwrap();
    let out = p.nodectl(&[
        "--mac",
        "02:77:00:00:00:07",
        "--timeout",
        "20",
        "--etc",
        etc.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nodectl net-up failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["iface"], "eth7");
    assert_eq!(r["method"], "dhcp");
    let addr = r["address"].as_str().unwrap();
    assert!(
        addr.starts_with("10.77.1.1") && addr.len() == 11,
        "address {addr} outside the range"
    );
    assert_eq!(r["prefix"], 24);
    assert_eq!(r["gateway"], "10.77.1.1");
    assert_eq!(r["server"], "10.77.1.1");
    let a =
        String::from_utf8_lossy(&sh(&["ip", "-n", &p.client, "-4", "addr", "show", "eth7"]).stdout)
            .into_owned();
    assert!(a.contains(&format!("{addr}/24")), "{a}");
    let rt = String::from_utf8_lossy(&sh(&["ip", "-n", &p.client, "route"]).stdout).into_owned();
    assert!(rt.contains("default via 10.77.1.1 dev eth7"), "{rt}");
    let rc = std::fs::read_to_string(etc.path().join("resolv.conf")).unwrap();
    assert_eq!(rc, "nameserver 10.77.1.53\n");
    // The server can reach the node at its new address.
    // dnsmasq probed the address before offering it: the neighbour entry may
    // need a fresh ARP round, hence several echo requests.
    sh(&[
        "ip", "netns", "exec", &p.server, "ping", "-c4", "-i0.5", "-W2", addr,
    ]);
}

#[test]
fn no_dhcp_server_fails_within_the_bound() {
    if !can_run() {
        return;
    }
    let p = Pair::new("n", 2, false);
    let t = std::time::Instant::now();
    let out = p.nodectl(&[
        "--mac",
        "02:77:00:00:00:07",
        "--timeout",
        "5",
        "--etc",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    assert!(t.elapsed().as_secs() < 15, "took {:?}", t.elapsed());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no DHCP offer on eth7 (02:77:00:00:00:07) after"),
        "{e}"
    );
}

#[test]
fn unknown_mac_lists_the_links() {
    if !can_run() {
        return;
    }
    let p = Pair::new("m", 3, false);
    let out = p.nodectl(&["--mac", "02:77:00:00:00:99", "--timeout", "1"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("no network link with MAC 02:77:00:00:00:99 appeared within 1s (links: lo 00:00:00:00:00:00, eth7 02:77:00:00:00:07)"),
        "{e}"
    );
}

#[test]
fn static_ip_from_the_cmdline_form() {
    if !can_run() {
        return;
    }
    let p = Pair::new("s", 4, false);
    let etc = tempfile::tempdir().unwrap();
    let out = p.nodectl(&[
        "--ip",
        "10.77.4.5::10.77.4.1:255.255.255.0:cn1:eth7:none:10.77.4.53",
        "--timeout",
        "5",
        "--etc",
        etc.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = String::from_utf8_lossy(&sh(&["ip", "-n", &p.client, "route"]).stdout).into_owned();
    assert!(rt.contains("default via 10.77.4.1 dev eth7"), "{rt}");
    sh(&[
        "ip",
        "netns",
        "exec",
        &p.server,
        "ping",
        "-c1",
        "-W2",
        "10.77.4.5",
    ]);
    assert_eq!(
        std::fs::read_to_string(etc.path().join("resolv.conf")).unwrap(),
        "nameserver 10.77.4.53\n"
    );
}
