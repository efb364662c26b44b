//! bootd's DHCP responder and TFTP server end to end, as root: two network
//! namespaces made by each test (a "server" and a "client", unique names,
//! removed on drop) joined by a veth pair; the real bootd runs in the server
//! namespace (`ip netns exec`), answering on its veth end. Clients: busybox
//! `udhcpc` (a real DHCP client), DHCP packets built with dhcproto and sent
//! from a socket opened inside the client namespace, and `curl tftp://`.
//! No packet leaves the namespaces.
//!
//! Needs root and iproute2 (else the tests print why and pass without
//! running), busybox and curl (missing ones fail).
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::Decodable;
use nodeboot_boot_server::dhcp;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const CN1: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const CN1_MAC: &str = "52:54:00:12:34:56";

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

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { nix::libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veth, ports 67 and 69)".into());
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

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces and a veth pair: `srv0` (server, 10.98.<net>.1/24) and
/// `cli0` (client, MAC `mac`, no address), both up.
struct Net {
    server: String,
    client: String,
    net: u8,
    dir: tempfile::TempDir,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Net {
    fn new(tag: &str, net: u8, mac: &str) -> Net {
        let id = format!(
            "nbd-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let n = Net {
            server: format!("{id}-s"),
            client: format!("{id}-c"),
            net,
            dir: tempfile::tempdir().unwrap(),
        };
        for ns in [&n.server, &n.client] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "-n", &n.server, "link", "add", "srv0", "type", "veth", "peer", "name", "cli0",
            "netns", &n.client,
        ]);
        run(&["ip", "-n", &n.client, "link", "set", "cli0", "address", mac]);
        let cidr = format!("{}/24", n.server_ip());
        run(&["ip", "-n", &n.server, "addr", "add", &cidr, "dev", "srv0"]);
        run(&["ip", "-n", &n.server, "link", "set", "srv0", "up"]);
        run(&["ip", "-n", &n.client, "link", "set", "cli0", "up"]);
        n
    }

    fn server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.net, 1)
    }

    fn host_ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 98, self.net, last)
    }

    /// An inventory: cn1 (provision, .50), cn2 (provision = false, .51),
    /// plus `dhcp` as the [dhcp] table.
    fn inventory(&self, dhcp: &str) -> PathBuf {
        let p = self.dir.path().join("inventory.toml");
        let text = format!(
            "[dhcp]\nrouter = \"{router}\"\ndns = [\"{router}\"]\ndomain = \"cluster.test\"\nlease_time = 600\n{dhcp}\n\n\
             [[image]]\nname = \"img\"\nkernel = \"vmlinuz\"\ninitrd = [\"initrd.img\"]\ncmdline = \"console=ttyS0\"\n\n\
             [[host]]\nname = \"cn1\"\nimage = \"img\"\nprovision = true\n\
             [[host.interfaces]]\nmac = \"{CN1_MAC}\"\nip = \"{cn1}/24\"\n\n\
             [[host]]\nname = \"cn2\"\nimage = \"img\"\nprovision = false\n\
             [[host.interfaces]]\nmac = \"52:54:00:12:34:57\"\nip = \"{cn2}\"\n",
            router = self.server_ip(),
            cn1 = self.host_ip(50),
            cn2 = self.host_ip(51),
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A TFTP root holding `undionly.kpxe` (300 KB of a pattern: 600
    /// blocks of 512 bytes), a symlink out of it, and a file beside it.
    fn tftp_root(&self) -> (PathBuf, Vec<u8>) {
        let root = self.dir.path().join("tftp");
        std::fs::create_dir_all(&root).unwrap();
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(root.join("undionly.kpxe"), &data).unwrap();
        std::fs::write(root.join("snponly.efi"), b"efi").unwrap();
        std::fs::write(self.dir.path().join("secret"), b"not for tftp").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        (root, data)
    }

    /// bootd in the server namespace: HTTP on the server address, `args` more.
    fn bootd(&self, args: &[&str]) -> Bootd {
        let www = self.dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        let pf = self.dir.path().join("port");
        let _ = std::fs::remove_file(&pf);
        let log = self.dir.path().join("bootd.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, env!("CARGO_BIN_EXE_bootd")])
            .args(["serve", "--listen", &format!("{}:0", self.server_ip())])
            .arg("--root")
            .arg(&www)
            .arg("--port-file")
            .arg(&pf)
            .args(args)
            .env("BOOTD_LOG", "debug")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut b = Bootd {
            child,
            log,
            port: 0,
        };
        let t0 = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(&pf)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                b.port = p;
                return b;
            }
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("bootd exited ({st}): {}", b.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "bootd did not start: {}",
                b.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// bootd in full DHCP mode on `srv0` with the inventory of
    /// [`Net::inventory`] (no `[dhcp]` extras), and `extra` arguments.
    fn full_mode(&self, extra: &[&str]) -> Bootd {
        let inv = self.inventory("");
        let mut args = vec![
            "--inventory",
            inv.to_str().unwrap(),
            "--dhcp",
            "srv0",
            "--dhcp-mode",
            "full",
        ];
        args.extend_from_slice(extra);
        self.bootd(&args)
    }

    /// Run `f` on a thread inside the client namespace (sockets it opens
    /// stay there).
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.client)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// A UDP socket on the client's `cli0`, port `port`, broadcasting.
    fn client_socket(&self, port: u16) -> UdpSocket {
        self.in_client(move || {
            use nix::sys::socket::{self, sockopt};
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            socket::setsockopt(&s, sockopt::BindToDevice, &"cli0".into()).unwrap();
            s.set_broadcast(true).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
    }

    /// busybox udhcpc on `cli0` with `extra` options: the environment its
    /// script saw on `bound`, or None when it got no lease.
    fn udhcpc(&self, extra: &[&str]) -> Option<String> {
        let env = self.dir.path().join("udhcpc.env");
        let _ = std::fs::remove_file(&env);
        let script = self.dir.path().join("udhcpc.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
                env.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let o = Command::new("ip")
            .args(["netns", "exec", &self.client, "busybox", "udhcpc"])
            .args(["-i", "cli0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s"])
            .arg(&script)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("busybox not found: install Debian's busybox (apt-get install -y busybox)");
        let text = std::fs::read_to_string(&env).ok();
        assert_eq!(
            o.status.success(),
            text.is_some(),
            "udhcpc: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    }

    /// curl in the client namespace; its exit code and output.
    fn curl(&self, args: &[&str]) -> (i32, Vec<u8>, String) {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "curl",
                "-sS",
                "--max-time",
                "20",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("curl not found");
        (
            o.status.code().unwrap_or(-1),
            o.stdout,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

struct Bootd {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Bootd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bootd {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait up to 5 s for `what` in the log.
    fn wait_log(&self, what: &str) -> String {
        self.wait_log_within(what, Duration::from_secs(5))
    }

    /// Wait up to `limit` for `what` in the log.
    fn wait_log_within(&self, what: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let l = self.log_text();
            if l.contains(what) {
                return l;
            }
            assert!(t0.elapsed() < limit, "{what:?} not in bootd's log:\n{l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `KEY=value` of udhcpc's environment.
fn env_var<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Send `m` to `to` from `sock`, return the first reply with its xid
/// within `wait` (None if there is none).
fn exchange(sock: &UdpSocket, m: &Message, to: SocketAddr, wait: Duration) -> Option<Message> {
    sock.send_to(&dhcp::encode(m).unwrap(), to).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < wait {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(r) = Message::from_bytes(&buf[..n]) {
            if r.xid() == m.xid() && r.opcode() == dhcproto::v4::Opcode::BootReply {
                return Some(r);
            }
        }
    }
    None
}

fn broadcast() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::BROADCAST, 67))
}

fn file(m: &Message) -> String {
    String::from_utf8_lossy(m.fname().unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn full_mode_gives_udhcpc_the_inventory_lease() {
    require_netns!();
    let net = Net::new("full", 1, CN1_MAC);
    let srv = net.full_mode(&[]);
    let env = net.udhcpc(&[]).expect("no lease for cn1");
    assert_eq!(env_var(&env, "ip"), Some("10.98.1.50"), "{env}");
    assert_eq!(env_var(&env, "subnet"), Some("255.255.255.0"), "{env}");
    assert_eq!(env_var(&env, "router"), Some("10.98.1.1"), "{env}");
    assert_eq!(env_var(&env, "dns"), Some("10.98.1.1"), "{env}");
    assert_eq!(env_var(&env, "domain"), Some("cluster.test"), "{env}");
    assert_eq!(env_var(&env, "lease"), Some("600"), "{env}");
    assert_eq!(env_var(&env, "serverid"), Some("10.98.1.1"), "{env}");
    assert_eq!(env_var(&env, "hostname"), Some("cn1"), "{env}");
    // A plain client boots nothing.
    assert_eq!(env_var(&env, "boot_file"), None, "{env}");
    let log = srv.wait_log("dhcp: ACK 10.98.1.50 to 52:54:00:12:34:56 (cn1)");
    assert!(
        log.contains("dhcp: OFFER 10.98.1.50 to 52:54:00:12:34:56 (cn1)"),
        "{log}"
    );
}

#[test]
fn full_mode_boot_file_by_architecture_and_user_class() {
    require_netns!();
    let net = Net::new("arch", 2, CN1_MAC);
    let inv = net.inventory("");
    let (root, _) = net.tftp_root();
    let srv = net.bootd(&[
        "--inventory",
        inv.to_str().unwrap(),
        "--dhcp",
        "10.98.2.1",
        "--dhcp-mode",
        "full",
        "--tftp-root",
        root.to_str().unwrap(),
    ]);
    // udhcpc as BIOS PXE firmware (option 93 = 0), then as iPXE (77 = "iPXE").
    let env = net.udhcpc(&["-x", "0x5d:0000"]).expect("no lease");
    assert_eq!(env_var(&env, "boot_file"), Some("undionly.kpxe"), "{env}");
    assert_eq!(env_var(&env, "siaddr"), Some("10.98.2.1"), "{env}");
    assert_eq!(env_var(&env, "ip"), Some("10.98.2.50"), "{env}");
    let env = net.udhcpc(&["-x", "0x5d:0007"]).expect("no lease");
    assert_eq!(env_var(&env, "boot_file"), Some("snponly.efi"), "{env}");
    let env = net
        .udhcpc(&["-x", "0x5d:0000", "-x", "0x4d:69505845"])
        .expect("no lease");
    let url = format!("http://10.98.2.1:{}/boot/ipxe?mac={CN1_MAC}", srv.port);
    assert_eq!(env_var(&env, "boot_file"), Some(url.as_str()), "{env}");
    // The URL is bootd's own, and serves the host's script (once the
    // client takes its address, which the test's udhcpc script does not).
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.2.50/24",
        "dev",
        "cli0",
    ]);
    let (code, body, err) = net.curl(&[&url]);
    assert_eq!(code, 0, "{err}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("#!ipxe\n# cn1 (52:54:00:12:34:56)"),
        "{body}"
    );
    // The same with packets of our own: architecture 9 (EFI BC).
    let sock = net.client_socket(68);
    let d = dhcp::request(MessageType::Discover, 0x1234, CN1, Some(9), None);
    let r = exchange(&sock, &d, broadcast(), Duration::from_secs(3)).expect("no OFFER");
    assert_eq!(file(&r), "snponly.efi");
    assert_eq!(r.yiaddr(), net.host_ip(50));
    assert_eq!(
        r.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    srv.wait_log("boot tftp snponly.efi");
    // UEFI firmware then asks the PXE port (full mode answers it too).
    let mut q = dhcp::request(MessageType::Request, 0x1235, CN1, Some(7), None);
    q.set_ciaddr(net.host_ip(50));
    q.set_flags(dhcproto::v4::Flags::default());
    let to = SocketAddr::from((net.server_ip(), 4011));
    let r = exchange(&sock, &q, to, Duration::from_secs(3)).expect("no ACK from port 4011");
    assert_eq!(file(&r), "snponly.efi");
    srv.wait_log("dhcp: PXE ACK to 52:54:00:12:34:56 (cn1): boot tftp snponly.efi");
}

#[test]
fn unknown_mac_is_ignored_and_logged() {
    require_netns!();
    let net = Net::new("unknown", 3, "02:00:00:00:00:99");
    let srv = net.full_mode(&[]);
    assert_eq!(net.udhcpc(&["-x", "0x5d:0000"]), None);
    let sock = net.client_socket(68);
    let d = dhcp::request(
        MessageType::Discover,
        7,
        [2, 0, 0, 0, 0, 0x99],
        Some(0),
        None,
    );
    assert!(exchange(&sock, &d, broadcast(), Duration::from_secs(2)).is_none());
    let log = srv.wait_log("dhcp: ignoring 02:00:00:00:00:99: unknown MAC");
    // Logged once a minute, not once a packet (udhcpc sent 3, we sent 1).
    assert_eq!(log.matches("unknown MAC").count(), 1, "{log}");
    assert!(!log.contains("OFFER"), "{log}");
}

#[test]
fn proxy_mode_offers_boot_files_without_addresses() {
    require_netns!();
    let net = Net::new("proxy", 4, CN1_MAC);
    let inv = net.inventory("");
    let (root, _) = net.tftp_root();
    let srv = net.bootd(&[
        "--inventory",
        inv.to_str().unwrap(),
        "--dhcp",
        "srv0",
        "--dhcp-mode",
        "proxy",
        "--tftp-root",
        root.to_str().unwrap(),
    ]);
    let sock = net.client_socket(68);
    let d = dhcp::request(MessageType::Discover, 0x51, CN1, Some(0), None);
    let r = exchange(&sock, &d, broadcast(), Duration::from_secs(3)).expect("no proxy OFFER");
    let opts = r.opts();
    assert_eq!(
        opts.get(OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Offer))
    );
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.siaddr(), net.server_ip());
    assert_eq!(
        opts.get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(opts.get(OptionCode::SubnetMask), None);
    assert_eq!(opts.get(OptionCode::AddressLeaseTime), None);
    assert_eq!(file(&r), "undionly.kpxe");
    // udhcpc (a plain client) gets nothing from a proxy.
    assert_eq!(net.udhcpc(&[]), None);
    // An EFI client with an address (from the site's DHCP server) asks port 4011.
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.4.77/24",
        "dev",
        "cli0",
    ]);
    let mut q = dhcp::request(MessageType::Request, 0x52, CN1, Some(7), None);
    q.set_ciaddr(Ipv4Addr::new(10, 98, 4, 77));
    q.set_flags(dhcproto::v4::Flags::default());
    let to = SocketAddr::from((net.server_ip(), 4011));
    let r = exchange(&sock, &q, to, Duration::from_secs(3)).expect("no ACK from port 4011");
    assert_eq!(
        r.opts().get(OptionCode::MessageType),
        Some(&DhcpOption::MessageType(MessageType::Ack))
    );
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(&r), "snponly.efi");
    let log = srv.wait_log("dhcp: PXE ACK to 52:54:00:12:34:56 (cn1): boot tftp snponly.efi");
    assert!(
        log.contains("dhcp: proxy OFFER to 52:54:00:12:34:56 (cn1): boot tftp undionly.kpxe"),
        "{log}"
    );
}

#[test]
fn tftp_serves_the_root_read_only() {
    require_netns!();
    let net = Net::new("tftp", 5, CN1_MAC);
    let (root, data) = net.tftp_root();
    let srv = net.bootd(&["--tftp-root", root.to_str().unwrap()]);
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.5.2/24",
        "dev",
        "cli0",
    ]);
    let base = "tftp://10.98.5.1";
    // Whole file, at the default 512-byte blocks and at 1428 (blksize).
    for extra in [&[][..], &["--tftp-blksize", "1428"][..]] {
        let mut args = vec![format!("{base}/undionly.kpxe")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body, err) = net.curl(&args);
        assert_eq!(code, 0, "{err}");
        assert!(
            body == data,
            "got {} bytes, want {}",
            body.len(),
            data.len()
        );
    }
    srv.wait_log("tftp: sent undionly.kpxe to 10.98.5.2:");
    // Traversal, a symlink out of the root, a missing file: refused, nothing sent.
    for (path, why) in [
        ("/../secret", "\"../secret\" leaves the TFTP root"),
        ("/escape", "\"escape\" leaves the TFTP root"),
        ("/nothere", "\"nothere\": no such file in the TFTP root"),
    ] {
        let (code, body, _) = net.curl(&["--path-as-is", &format!("{base}{path}")]);
        assert_ne!(code, 0, "{path} was served");
        assert!(body.is_empty(), "{path}: got {body:?}");
        srv.wait_log(why);
    }
    // Uploads are refused.
    let up = net.dir.path().join("up");
    std::fs::write(&up, b"x").unwrap();
    let (code, _, _) = net.curl(&["-T", up.to_str().unwrap(), &format!("{base}/new")]);
    assert_ne!(code, 0);
    assert!(!root.join("new").exists());
    srv.wait_log("tftp: refused a write of new");
}

#[test]
fn bad_netboot_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    let serve = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} started");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    std::fs::write(&inv, "\n[dhcp]\nrouter = \"10.0.0\"\n").unwrap();
    let e = serve(&["--inventory", inv.to_str().unwrap()]);
    assert!(
        e.contains("inv.toml:3: dhcp.router: bad IPv4 address \"10.0.0\""),
        "{e}"
    );
    std::fs::write(&inv, "").unwrap();
    let inv = inv.to_str().unwrap();
    let e = serve(&["--inventory", inv, "--dhcp", "nosuch0"]);
    assert!(
        e.contains("--dhcp nosuch0: no such interface with an IPv4 address"),
        "{e}"
    );
    let e = serve(&["--inventory", inv, "--dhcp", "192.0.2.1"]);
    assert!(
        e.contains("--dhcp 192.0.2.1: no interface has this IPv4 address"),
        "{e}"
    );
    let e = serve(&["--dhcp", "lo"]);
    assert!(e.contains("--inventory"), "{e}");
    let e = serve(&["--inventory", inv, "--dhcp", "lo", "--dhcp-mode", "half"]);
    assert!(e.contains("invalid value 'half'"), "{e}");
    let missing = Path::new("/nonexistent/tftp");
    let e = serve(&["--tftp-root", missing.to_str().unwrap()]);
    assert!(e.contains("TFTP root /nonexistent/tftp"), "{e}");
}

/// Issue 12's packet of death: a BOOTREQUEST with `hlen` 255 made dhcproto
/// slice `chaddr[..255]` and bootd abort. Every `hlen`, truncations and
/// options that overrun the packet: bootd stays up and still answers.
#[test]
fn no_dhcp_packet_kills_bootd() {
    require_netns!();
    let net = Net::new("hlen", 6, CN1_MAC);
    let mut srv = net.full_mode(&[]);
    let sock = net.client_socket(68);
    let good = dhcp::encode(&dhcp::request(
        MessageType::Discover,
        0x1234,
        CN1,
        Some(0),
        None,
    ))
    .unwrap();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    for hlen in 0..=255u8 {
        let mut p = good.clone();
        p[2] = hlen;
        packets.push(p);
    }
    for n in [0, 1, 2, 3, 27, 28, 43, 44, 235, 236, 239, 240, 241, 243] {
        let mut p = good[..n.min(good.len())].to_vec();
        if p.len() > 2 {
            p[2] = 255;
        }
        packets.push(p);
    }
    // Options: a length past the end, an option without its length, a
    // packet full of one option, and one larger than any DHCP packet.
    let head = &good[..240];
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
        packets.push([head, &tail[..]].concat());
    }
    for p in &packets {
        sock.send_to(p, broadcast()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "bootd died: {}",
        srv.log_text()
    );
    let d = dhcp::request(MessageType::Discover, 0x4321, CN1, Some(0), None);
    let offer = exchange(&sock, &d, broadcast(), Duration::from_secs(3)).expect("no offer");
    assert_eq!(offer.yiaddr(), net.host_ip(50));
    let log = srv.log_text();
    assert!(!log.contains("panic"), "{log}");
}

/// 10,000 DISCOVERs from random MACs: a handful of log lines and a summary,
/// not one line per MAC; cn1 is still answered; and one MAC's answers are
/// limited per second.
#[test]
fn a_dhcp_flood_is_quiet_and_rate_limited() {
    require_netns!();
    let net = Net::new("flood", 7, CN1_MAC);
    let srv = net.full_mode(&["--dhcp-rate", "3"]);
    let sock = net.client_socket(68);
    let mut x: u32 = 0x9e37_79b9;
    for i in 0..10_000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = x.to_be_bytes();
        let mac = [0x02, b[0], b[1], b[2], b[3], (i & 0xff) as u8];
        let d = dhcp::request(MessageType::Discover, i, mac, Some(0), None);
        sock.send_to(&dhcp::encode(&d).unwrap(), broadcast())
            .unwrap();
        if i % 500 == 499 {
            // Let the server's socket drain a little (a flood on a real
            // link is paced by the link too).
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let d = dhcp::request(MessageType::Discover, 0x5555, CN1, Some(0), None);
    let t0 = Instant::now();
    let mut offer = None;
    while offer.is_none() && t0.elapsed() < Duration::from_secs(10) {
        offer = exchange(&sock, &d, broadcast(), Duration::from_millis(500));
    }
    assert!(offer.is_some(), "cn1 got no offer after the flood");
    std::thread::sleep(Duration::from_millis(1100));
    // A burst from one MAC: 3 answers a second.
    for xid in 100..130u32 {
        let d = dhcp::request(MessageType::Discover, xid, CN1, Some(0), None);
        sock.send_to(&dhcp::encode(&d).unwrap(), broadcast())
            .unwrap();
    }
    let mut answered = std::collections::HashSet::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < Duration::from_millis(800) {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(r) = Message::from_bytes(&buf[..n]) {
                if (100..130).contains(&r.xid()) {
                    answered.insert(r.xid());
                }
            }
        }
    }
    assert_eq!(answered.len(), 3, "{answered:?}");
    let log = srv.log_text();
    let lines = log.matches("unknown MAC").count();
    assert!(lines <= 32, "{lines} lines about unknown MACs");
    // bootd's counters saw it all, each packet once (GET /metrics, from
    // the server's namespace: the client has no address).
    let url = format!("http://{}:{}/metrics", net.server_ip(), srv.port);
    let o = run(&["ip", "netns", "exec", &net.server, "curl", "-sS", &url]);
    let m = String::from_utf8(o.stdout).unwrap();
    let at = |series: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{m}"))
    };
    let received = at("bootd_dhcp_packets_received_total");
    let outcome = |o: &str| at(&format!("bootd_dhcp_packets_total{{outcome=\"{o}\"}}"));
    assert!(received > 1000, "{received} packets received");
    assert!(outcome("ignored") > 1000, "the unknown MACs: {m}");
    assert!(outcome("rate_limited") >= 20, "the burst: {m}");
    assert!(outcome("answered") >= 4, "{m}");
    let sum: u64 = [
        "answered",
        "ignored",
        "rate_limited",
        "undecodable",
        "send_failed",
    ]
    .iter()
    .map(|o| outcome(o))
    .sum();
    assert_eq!(sum, received, "each packet counted once: {m}");
}

/// A TFTP read request is sent to the client's address: never acknowledged
/// (a forged source), it gets `retries + 1` copies of the first block and
/// no more; transfers in flight are capped in all and per address (the
/// rest get an ERROR packet), and the descriptors they hold go with them.
#[test]
fn tftp_transfers_are_bounded() {
    require_netns!();
    let net = Net::new("tftpcap", 8, CN1_MAC);
    let (root, data) = net.tftp_root();
    let srv = net.bootd(&[
        "--tftp-root",
        root.to_str().unwrap(),
        "--tftp-max-transfers",
        "8",
        "--tftp-per-client",
        "4",
        "--tftp-retries",
        "2",
        "--tftp-timeout",
        "1s",
    ]);
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.8.2/24",
        "dev",
        "cli0",
    ]);
    let pid = srv.child.id();
    let fds = move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let rrq = |name: &[u8], opts: &[&[u8]]| {
        let mut p = vec![0, 1];
        p.extend_from_slice(name);
        p.extend_from_slice(b"\0octet\0");
        for o in opts {
            p.extend_from_slice(o);
            p.push(0);
        }
        p
    };
    // 30 requests from 30 ports, never acknowledged; one asks for a 255 s
    // timeout and the largest block size.
    let (tallies, during) = net.in_client({
        let plain = rrq(b"undionly.kpxe", &[]);
        let greedy = rrq(
            b"undionly.kpxe",
            &[
                b"timeout",
                b"255",
                b"blksize",
                b"65464",
                b"windowsize",
                b"64",
            ],
        );
        move || {
            let socks: Vec<UdpSocket> = (0..30)
                .map(|_| {
                    let s = UdpSocket::bind("10.98.8.2:0").unwrap();
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect();
            for (i, s) in socks.iter().enumerate() {
                let p = if i == 0 { &greedy } else { &plain };
                s.send_to(p, "10.98.8.1:69").unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
            let during = fds();
            // What each socket got in 6 s: (data packets, bytes, errors).
            let mut tallies = vec![(0usize, 0usize, 0usize); socks.len()];
            let t0 = Instant::now();
            let mut buf = [0u8; 70_000];
            while t0.elapsed() < Duration::from_secs(6) {
                for (i, s) in socks.iter().enumerate() {
                    while let Ok((n, _)) = s.recv_from(&mut buf) {
                        match buf[1] {
                            3 | 6 => {
                                tallies[i].0 += 1;
                                tallies[i].1 += n;
                            }
                            5 => tallies[i].2 += 1,
                            _ => {}
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (tallies, during)
        }
    });
    let served: Vec<_> = tallies.iter().filter(|t| t.0 > 0).collect();
    let refused = tallies.iter().filter(|t| t.0 == 0 && t.2 > 0).count();
    assert_eq!(served.len(), 4, "{tallies:?}");
    assert_eq!(refused, 26, "{tallies:?}");
    // retries + 1 = 3 sends of the first packet (a 512-byte block, or the
    // OACK of the greedy one), nothing more.
    for t in &served {
        assert!(t.0 <= 3, "{tallies:?}");
        assert!(t.1 <= 3 * 516, "{tallies:?}");
    }
    assert!(
        during <= before + 2 * 4 + 2,
        "{before} -> {during} descriptors"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(fds() <= before + 1, "{before} -> {} descriptors", fds());
    let log = srv.wait_log("tftp: refused 10.98.8.2:");
    assert!(log.contains("4 per client"), "{log}");
    // The server still serves, and a name with a newline forges no line.
    let (code, body, err) = net.curl(&["tftp://10.98.8.1/undionly.kpxe"]);
    assert_eq!(code, 0, "{err}");
    assert!(body == data);
    let forged = rrq(b"x\nINFO secret munge.key sent", &[]);
    net.in_client(move || {
        let s = UdpSocket::bind("10.98.8.2:0").unwrap();
        s.send_to(&forged, "10.98.8.1:69").unwrap();
    });
    let log = srv.wait_log("x\\nINFO secret munge.key sent");
    for l in log.lines() {
        assert!(!l.trim_start().starts_with("INFO secret"), "forged: {l}");
    }
}

#[test]
fn grub_configs_per_mac_over_tftp_and_http() {
    require_netns!();
    let net = Net::new("grub", 9, CN1_MAC);
    let (root, _) = net.tftp_root();
    let inv = net.inventory("");
    let www = net.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("vmlinuz"), b"a kernel").unwrap();
    std::fs::write(www.join("initrd.img"), b"an initrd").unwrap();
    std::fs::write(www.join("other.txt"), b"not a boot file").unwrap();
    let srv = net.bootd(&[
        "--inventory",
        inv.to_str().unwrap(),
        "--tftp-root",
        root.to_str().unwrap(),
    ]);
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.98.9.2/24",
        "dev",
        "cli0",
    ]);
    let base = "tftp://10.98.9.1";
    let get = |path: &str| -> (i32, String) {
        let (code, body, err) = net.curl(&[&format!("{base}/{path}")]);
        (code, format!("{}{err}", String::from_utf8_lossy(&body)))
    };
    // The stub every GRUB reads first sends it to its own MAC's config.
    let (code, stub) = get("grub/grub.cfg");
    assert_eq!(code, 0, "{stub}");
    assert!(
        stub.contains("configfile \"${prefix}/grub.cfg-${net_default_mac}\""),
        "{stub}"
    );
    // cn1, by both names GRUB asks: its kernel and initrd from TFTP, its
    // image's command line.
    let url = format!("http://10.98.9.1:{}", srv.port);
    for path in [
        "grub/grub.cfg-52:54:00:12:34:56",
        "grub/grub.cfg-01-52-54-00-12-34-56",
    ] {
        let (code, cfg) = get(path);
        assert_eq!(code, 0, "{path}: {cfg}");
        assert!(
            cfg.contains("if linux '/vmlinuz' 'console=ttyS0'"),
            "{path}: {cfg}"
        );
        assert!(
            cfg.contains("if initrd '/initrd.img' ; then"),
            "{path}: {cfg}"
        );
    }
    srv.wait_log("tftp: GRUB config for cn1 (52:54:00:12:34:56) to 10.98.9.2:");
    // cn2 boots from its disk; an unknown MAC goes back to the firmware.
    let (code, cfg) = get("grub/grub.cfg-52:54:00:12:34:57");
    assert_eq!(code, 0, "{cfg}");
    assert!(
        cfg.contains("provision = false") && cfg.contains("\nexit\n"),
        "{cfg}"
    );
    assert!(!cfg.contains("linux"), "{cfg}");
    let (code, cfg) = get("grub/grub.cfg-02:00:00:00:00:99");
    assert_eq!(code, 0, "{cfg}");
    assert!(
        cfg.contains("no host has MAC 02:00:00:00:00:99 in bootd's inventory")
            && cfg.contains("\nexit\n"),
        "{cfg}"
    );
    srv.wait_log("tftp: GRUB config for unknown MAC \"02:00:00:00:00:99\" to 10.98.9.2:");
    // The images' kernel and initrd come from bootd's root; nothing else of it does.
    assert_eq!(get("vmlinuz"), (0, "a kernel".into()));
    assert_eq!(get("initrd.img"), (0, "an initrd".into()));
    let (code, body) = get("other.txt");
    assert_ne!(code, 0, "other.txt was served over TFTP: {body}");
    assert!(!body.contains("not a boot file"), "{body}");
    // The same config over HTTP.
    let (code, body, err) = net.curl(&[&format!("{url}/boot/grub?mac=52:54:00:12:34:56")]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("if linux '/vmlinuz'"), "{body}");
    let (code, body, err) = net.curl(&[
        "-w",
        "%{http_code}",
        &format!("{url}/boot/grub?mac=02:00:00:00:00:99"),
    ]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("\nexit\n") && body.ends_with("200"), "{body}");
}

/// `Icmp6InRouterAdvertisements` of the client namespace's kernel.
fn advertisements_received(net: &Net) -> u64 {
    let o = run(&["ip", "netns", "exec", &net.client, "cat", "/proc/net/snmp6"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InRouterAdvertisements"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Icmp6InRouterAdvertisements in /proc/net/snmp6")
}

/// The client's link down and up again: its kernel solicits a router
/// once its link-local address has passed DAD (then every 4 s).
fn solicit(net: &Net) {
    run(&["ip", "-n", &net.client, "link", "set", "cli0", "down"]);
    run(&["ip", "-n", &net.client, "link", "set", "cli0", "up"]);
}

/// Issue 17: a real kernel's router solicitation from cn1's MAC gets
/// bootd's advertisement (counted by the client's kernel), which gives it
/// no default route and no address; an unknown MAC's gets none, and
/// `--ipv6-ra false` sends none.
#[test]
fn router_solicitations_from_inventory_macs_get_a_lifetime_0_advertisement() {
    require_netns!();
    let net = Net::new("ra", 10, CN1_MAC);
    let srv = net.full_mode(&[]);
    srv.wait_log("ndp: answering router solicitations");
    assert_eq!(advertisements_received(&net), 0);
    solicit(&net);
    let log = srv.wait_log_within("ndp: router advertisement", Duration::from_secs(20));
    assert!(
        log.contains("ndp: router advertisement (lifetime 0, no prefix) to fe80::5054:ff:fe12:3456 (52:54:00:12:34:56, cn1)"),
        "{log}"
    );
    let t0 = Instant::now();
    while advertisements_received(&net) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the client's kernel got none"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Lifetime 0, no prefix: no default route, no global address.
    let route = run(&["ip", "-n", &net.client, "-6", "route", "show", "default"]);
    assert!(
        route.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&route.stdout)
    );
    let addrs = run(&[
        "ip",
        "-n",
        &net.client,
        "-6",
        "addr",
        "show",
        "scope",
        "global",
    ]);
    assert!(
        addrs.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&addrs.stdout)
    );
    drop(srv);

    // An unknown MAC: ignored (debug line), nothing sent.
    let other = Net::new("ra-unknown", 11, "02:00:00:00:00:99");
    let srv = other.full_mode(&[]);
    srv.wait_log("ndp: answering router solicitations");
    solicit(&other);
    let log = srv.wait_log_within(
        "ndp: ignoring a router solicitation",
        Duration::from_secs(20),
    );
    assert!(log.contains("UnknownMac(\"02:00:00:00:00:99\")"), "{log}");
    assert!(!log.contains("ndp: router advertisement"), "{log}");
    assert_eq!(advertisements_received(&other), 0);
    drop(srv);

    // This host routes IPv6 on the interface: its own advertisements
    // stand, bootd sends none.
    let router = Net::new("ra-router", 13, CN1_MAC);
    run(&[
        "ip",
        "netns",
        "exec",
        &router.server,
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.srv0.forwarding=1",
    ]);
    let srv = router.full_mode(&[]);
    let log = srv.wait_log("ndp: this host forwards IPv6 on srv0");
    assert!(!log.contains("ndp: answering"), "{log}");
    drop(srv);

    // Turned off.
    let off = Net::new("ra-off", 12, CN1_MAC);
    let srv = off.full_mode(&["--ipv6-ra", "false"]);
    srv.wait_log("dhcp: full mode");
    solicit(&off);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(advertisements_received(&off), 0);
    assert!(!srv.log_text().contains("ndp:"), "{}", srv.log_text());
}
