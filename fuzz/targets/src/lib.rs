//! The fuzz targets' bodies, one function per parser that reads bytes from
//! the network or a file. Each calls the library entry point the program
//! itself uses (no sockets, no files but the TFTP root's tempdir) and checks
//! cheap invariants with `assert!`: a panic here is a finding.
//!
//! `fuzz/fuzz_targets/<name>.rs` (nightly, libFuzzer) calls the function of
//! the same name; `tests/replay.rs` (stable, `cargo test`) runs every file of
//! `fuzz/corpus/<name>/` and `fuzz/artifacts/<name>/` through it. One copy of
//! each body, so what the suite replays is what was fuzzed.
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use nodeboot_agent::cmdline::{BootParams, Cmdline, Mac};
use nodeboot_agent::disk::gpt;
use nodeboot_agent::net::{dhcp as agent_dhcp, packet};
use nodeboot_agent::{native, nodetoml, provision, repo};
use nodeboot_boot_server::dhcp::{self, Mode, Port, Responder, Verdict};
use nodeboot_boot_server::http::{self, BodyError, RangeReq};
use nodeboot_boot_server::inventory::{self, Inventory};
use nodeboot_boot_server::{ndp, page, secrets, status, template, tftp};

/// The body of a target: any bytes, no result; a panic is a finding.
pub type Body = fn(&[u8]);

/// Every target: its name (the file under `fuzz/fuzz_targets/`, the
/// directories under `fuzz/corpus/` and `fuzz/artifacts/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("dhcp_server", dhcp_server),
    ("http_head", http_head),
    ("inventory", inventory),
    ("cmdline_template", cmdline_template),
    ("status_json", status_json),
    ("tftp_request", tftp_request),
    ("kernel_cmdline", kernel_cmdline),
    ("node_toml", node_toml),
    ("provision_toml", provision_toml),
    ("known_hosts", known_hosts),
    ("dhcp_client", dhcp_client),
    ("gpt", gpt),
    ("tar", tar),
    ("identity", identity),
    ("ldap", ldap),
    ("caibx", caibx),
    ("peer_request", peer_request),
    ("router_solicitation", router_solicitation),
];

/// The body of the target `name`.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// `data` cut at its first NUL bytes into at most `n` parts (the last
/// part keeps the rest), for targets with several inputs.
fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => break,
        }
    }
    parts.push(rest);
    while parts.len() < n {
        parts.push(&[]);
    }
    parts
}

// ---------------------------------------------------------------- bootd

/// The inventory the DHCP target answers from: two provisioned hosts (one
/// with an address), one not provisioned, and `[dhcp]` settings.
pub const DHCP_INVENTORY: &str = r#"
[dhcp]
router = "10.0.0.1"
dns = ["10.0.0.53"]
domain = "cluster.example"
lease_time = 600
prefix = 24

[[image]]
name = "live"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = 'root=live:{{ $.liveimg }} BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }} grendel.hostname={{ $.host.Name }}'

[[host]]
name = "cn1"
image = "live"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:56"
ip = "10.0.0.11/24"

[[host]]
name = "cn2"
image = "live"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:57"

[[host]]
name = "cn3"
image = "live"
provision = false
[[host.interfaces]]
mac = "52:54:00:12:34:58"
ip = "10.0.0.13"
"#;

/// The MACs of [`DHCP_INVENTORY`] (and one it does not know).
pub const DHCP_MACS: [[u8; 6]; 4] = [
    [0x52, 0x54, 0, 0x12, 0x34, 0x56],
    [0x52, 0x54, 0, 0x12, 0x34, 0x57],
    [0x52, 0x54, 0, 0x12, 0x34, 0x58],
    [0x52, 0x54, 0, 0x12, 0x34, 0x59],
];

fn dhcp_inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| Inventory::parse(DHCP_INVENTORY, "fuzz.toml").expect("DHCP_INVENTORY"))
}

/// bootd's DHCP: `dhcp::decode` of a packet, then `Responder::answer` in
/// the mode, port and settings the first byte picks (bit 4: put one of
/// the inventory's MACs in `chaddr`, so that answers are reached), twice
/// (the iPXE chain state), and every reply encoded and decoded again.
pub fn dhcp_server(data: &[u8]) {
    let Some((&ctl, pkt)) = data.split_first() else {
        return;
    };
    let mut pkt = pkt.to_vec();
    if ctl & 0x10 != 0 && pkt.len() >= 34 {
        pkt[1] = 1; // htype Ethernet
        pkt[2] = 6; // hlen
        pkt[28..34].copy_from_slice(&DHCP_MACS[usize::from(ctl & 3)]);
    }
    let m = match dhcp::decode(&pkt) {
        Ok(m) => m,
        Err(_) => return,
    };
    // What decode promises: chaddr() is safe to call.
    assert!(m.chaddr().len() <= 16);
    if let Some(mac) = dhcp::client_mac(&m) {
        assert_eq!(mac.len(), 17, "{mac}");
    }
    let _ = dhcp::client_of(&m);
    let inv = dhcp_inventory();
    let mode = if ctl & 0x04 != 0 {
        Mode::Proxy
    } else {
        Mode::Full
    };
    let port = if ctl & 0x08 != 0 {
        Port::Pxe
    } else {
        Port::Dhcp
    };
    let mut settings = inv.dhcp.clone();
    settings.chain_ipxe = ctl & 0x20 != 0;
    let server = Ipv4Addr::new(10, 0, 0, 1);
    let r = Responder::new(mode, server, "http://10.0.0.1:8080", ctl & 0x40 == 0);
    let src = if ctl & 0x80 != 0 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 11), dhcp::CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT)
    };
    for _ in 0..2 {
        if let Verdict::Reply { msg, summary, .. } = r.answer(inv, &settings, &m, port, src) {
            assert!(!summary.is_empty());
            if let Ok(bytes) = dhcp::encode(&msg) {
                assert!(bytes.len() >= 300);
                assert!(
                    <dhcproto::v4::Message as dhcproto::Decodable>::from_bytes(&bytes).is_ok(),
                    "bootd's own reply does not decode: {summary}"
                );
            }
        }
    }
}

/// bootd's answer to IPv6 router solicitations: `ndp::parse` and
/// `ndp::judge` of an ICMPv6 message, from the source and with the hop
/// limit the first byte picks (bits 0-1: link-local, `::`, global,
/// multicast; bit 2: hop limit 255, else 64; bit 3: no hop limit; bits
/// 4-5 with bit 6: one of the inventory's MACs (or an unknown one) put in
/// a source link-layer option at the start), and `ndp::hop_limit` of the
/// same bytes as a control buffer. What is answered is a solicitation
/// from a link-local address, hop limit 255, with an inventory MAC.
pub fn router_solicitation(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let _ = ndp::hop_limit(rest);
    let mut pkt = rest.to_vec();
    if ctl & 0x40 != 0 && pkt.len() >= 16 {
        pkt[0] = ndp::ROUTER_SOLICITATION;
        pkt[8] = 1;
        pkt[9] = 1;
        pkt[10..16].copy_from_slice(&DHCP_MACS[usize::from((ctl >> 4) & 3)]);
    }
    let parsed = ndp::parse(&pkt);
    if let Ok(Some(rs)) = &parsed {
        assert_eq!(pkt[0], ndp::ROUTER_SOLICITATION);
        assert!((8..=ndp::MAX_PACKET).contains(&pkt.len()));
        if let Some(m) = rs.mac {
            assert!(pkt.windows(6).any(|w| w == m), "a MAC not in the packet");
        }
    }
    let src = match ctl & 3 {
        0 => std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456),
        1 => std::net::Ipv6Addr::UNSPECIFIED,
        2 => std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        _ => std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    };
    let hops = match (ctl & 0x08 != 0, ctl & 0x04 != 0) {
        (true, _) => None,
        (false, true) => Some(255),
        (false, false) => Some(64),
    };
    if let Ok(a) = ndp::judge(&pkt, src, hops, dhcp_inventory()) {
        assert!(matches!(parsed, Ok(Some(_))));
        assert_eq!(hops, Some(255));
        assert_eq!(ctl & 3, 0, "answered {src}");
        assert_eq!(a.to, src);
        assert!(dhcp_inventory().by_mac(&a.mac).is_some(), "{}", a.mac);
    }
}

/// Checks of one request head the way the server uses it.
fn check_request(req: &http::Request) {
    let _ = req.keep_alive();
    let has_body = req.has_body();
    match http::body_length(req, status::MAX_BODY) {
        Ok(n) => {
            assert!(n <= status::MAX_BODY);
            if n > 0 {
                assert!(has_body, "a body of {n} bytes that has_body() misses");
            }
        }
        Err(BodyError::NoLength) => {}
        Err(e) => {
            assert!(matches!(e.status(), 400 | 411 | 413));
            if !has_body {
                // No body and no length: only a refusal of the length itself.
                assert!(matches!(
                    e,
                    BodyError::BadLength(_) | BodyError::TooLarge { .. }
                ));
            }
        }
    }
    if !has_body {
        assert!(matches!(
            http::body_length(req, status::MAX_BODY),
            Ok(0) | Err(BodyError::NoLength)
        ));
    }
    if let Some(p) = req.path() {
        assert!(p.starts_with('/'));
        assert!(!p.contains(['?', '#']));
        if let Some(d) = http::percent_decode(p) {
            assert!(!d.contains(&0), "a decoded path with a NUL");
        }
    }
    for size in [0, 1, 512, 1 << 30, u64::MAX] {
        check_range(req.header("range"), size);
    }
    if let Some(v) = req.header("if-none-match") {
        let _ = http::none_match(v, "\"1-2\"");
    }
    if let Some(v) = req.header("if-range") {
        let _ = http::if_range_matches(v, "\"1-2\"", "Thu, 01 Jan 1970 00:00:00 GMT");
    }
    if let Some(t) = secrets::bearer(req.header("authorization")) {
        assert!(!t.is_empty());
    }
    let _ = secrets::redact(&req.target);
    let _ = nodeboot_boot_server::clean(&req.target);
}

fn check_range(h: Option<&str>, size: u64) {
    match http::parse_range(h, size) {
        RangeReq::Partial(a, b) => {
            assert!(a <= b && b < size, "range {a}-{b} of {size} bytes ({h:?})");
        }
        RangeReq::Full | RangeReq::Unsatisfiable => {}
    }
}

/// bootd's HTTP heads: `http::read_request` over the bytes (pipelined
/// requests, up to 8), each checked as the server uses it; the whole input
/// also as a `Range` value and as a path to percent-decode.
pub fn http_head(data: &[u8]) {
    let mut r = data;
    for _ in 0..8 {
        match http::read_request(&mut r) {
            Ok(Some(req)) => check_request(&req),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(data);
    for size in [0, 1, 100, 1 << 40, u64::MAX] {
        check_range(Some(&text), size);
    }
    if let Some(d) = http::percent_decode(&text) {
        assert!(!d.contains(&0));
    }
}

/// The inventory TOML: `Inventory::parse`; for a good one, every MAC is
/// found again and gets an iPXE script (the cmdline template rendered for
/// it). The same text as Grendel's JSON (`import_grendel_files`): a good
/// import parses as an inventory.
pub fn inventory(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(inv) = Inventory::parse(text, "fuzz.toml") {
        for host in &inv.hosts {
            for nic in &host.interfaces {
                let _ = dhcp::host_ipv4(nic, inv.dhcp.prefix);
                let Some(mac) = &nic.mac else {
                    continue;
                };
                let (h, _) = inv.by_mac(mac).expect("a MAC of the inventory is found");
                assert_eq!(h.name, host.name);
                match inventory::ipxe_script(&inv, mac, "http://10.0.0.1:8080", "nodeboot.token=t")
                {
                    Some(Ok(s)) => assert!(s.starts_with("#!ipxe\n")),
                    Some(Err(_)) => {}
                    None => panic!("no script for {mac}, a MAC of the inventory"),
                }
            }
        }
    }
    // Grendel's JSON (hosts, images, or both): a good import is a good
    // inventory.
    if let Ok((toml, _)) = inventory::import_grendel_files(&[("fuzz.json", text)]) {
        assert!(Inventory::parse(&toml, "imported.toml").is_ok());
    }
}

fn template_data() -> &'static gtmpl::Value {
    static DATA: OnceLock<gtmpl::Value> = OnceLock::new();
    DATA.get_or_init(|| {
        let host = inventory::Host {
            name: "cn1".into(),
            image: Some("live".into()),
            provision: true,
            tags: vec!["compute".into(), "gpu".into()],
            interfaces: vec![],
            key: None,
            enroll: false,
            firmware: None,
        };
        let nic = inventory::Nic {
            mac: Some("52:54:00:12:34:56".into()),
            ip: Some("10.0.0.11/24".into()),
            fqdn: Some("cn1.cluster.example".into()),
            ..Default::default()
        };
        let image = inventory::Image {
            name: "live".into(),
            kernel: "vmlinuz".into(),
            initrd: vec!["initrd.img".into()],
            liveimg: Some("live.squashfs".into()),
            cmdline: String::new(),
            postscript: None,
        };
        inventory::template_data(
            &Default::default(),
            &host,
            &nic,
            &image,
            "http://10.0.0.1:8080",
            "t0k3n",
        )
    })
}

/// The kernel command line template (Go text/template through gtmpl):
/// `template::check`, then `template::render` with a host's data.
pub fn cmdline_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if template::check(text).is_ok() {
        let _ = template::render(text, template_data());
    }
}

/// `POST /status` bodies: `status::Report::parse`; a good report is
/// recorded and listed (`/nodes` JSON, the HTML page). Also nodectl's own
/// `status.json` (`provision::Status`).
pub fn status_json(data: &[u8]) {
    let _ = serde_json::from_slice::<provision::Status>(data);
    let Ok(r) = status::Report::parse(data) else {
        return;
    };
    assert!(!r.hostname.is_empty() && r.hostname.len() <= status::MAX_HOSTNAME);
    assert!(r
        .hostname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if let Some(m) = &r.mac {
        assert_eq!(status::normalise_mac(m).as_deref(), Some(m.as_str()));
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let nodes = status::Nodes::with_capacity(4);
    nodes.record(r, now);
    let p = nodes.page(0, 10);
    let json = status::nodes_json(&p, now);
    assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "/nodes is not JSON: {json}"
    );
    let html = page::render(&p, now);
    assert!(!html.contains("<script"), "a report made markup: {html}");
}

/// A TFTP root: files, a subdirectory, symlinks inside and out.
fn tftp_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("nodeboot-fuzz-tftp")
            .tempdir()
            .expect("tempdir");
        let root = d.keep();
        let root = root.canonicalize().expect("canonical root");
        std::fs::write(root.join("undionly.kpxe"), b"bios").unwrap();
        std::fs::create_dir(root.join("efi")).unwrap();
        std::fs::write(root.join("efi/snponly.efi"), b"efi").unwrap();
        let link = std::os::unix::fs::symlink;
        link("undionly.kpxe", root.join("inside")).unwrap();
        link("/etc/passwd", root.join("outside")).unwrap();
        link("..", root.join("up")).unwrap();
        link("loop", root.join("loop")).unwrap();
        root
    })
}

/// TFTP read requests: the file name as async-tftp hands it to bootd (an
/// RRQ's first NUL-terminated UTF-8 field; a bare name also works), then
/// `tftp::resolve` in a TFTP root. What it resolves is a file in the root.
pub fn tftp_request(data: &[u8]) {
    let name = match data {
        [0, 1 | 2, rest @ ..] => rest,
        _ => data,
    };
    let name = split(name, 2)[0];
    let Ok(name) = std::str::from_utf8(name) else {
        return; // async-tftp refuses the packet
    };
    let root = tftp_root();
    if let Ok(p) = tftp::resolve(root, Path::new(name)) {
        assert!(p.starts_with(root), "{name:?} resolved to {}", p.display());
        assert!(p.is_file());
    }
}

// ---------------------------------------------------------------- nodectl

/// The kernel command line: `Cmdline::parse_bytes`, `BootParams::from_cmdline`,
/// and what provisioning reads from it (`provision::plan`, `native::plan`).
pub fn kernel_cmdline(data: &[u8]) {
    let c = Cmdline::parse_bytes(data);
    for (k, v) in c.params() {
        if let Some(v) = v {
            assert!(c.has(k));
            let _ = v.len();
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let t = Cmdline::parse(s);
        assert!(t.params().eq(c.params()), "parse and parse_bytes differ");
    }
    if let Ok(p) = BootParams::from_cmdline(&c) {
        if let Some(d) = &p.sha256 {
            assert!(d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        if let Some(u) = &p.live_url {
            assert!(u.starts_with("http://") || u.starts_with("https://"));
        }
        let _ = serde_json::to_string(&p).expect("BootParams serialise");
    }
    let _ = repo::keydev_from_cmdline(&c);
    let _ = provision::plan(&c, &provision::Config::default(), "node");
    let paths = provision::Paths {
        known_hosts: "/nonexistent/nodeboot-fuzz/known_hosts".into(),
        ..Default::default()
    };
    let _ = native::plan(&c, &native::RepoConfig::default(), &paths);
}

/// `node.toml`: `nodetoml::parse`; what it accepts has absolute targets.
pub fn node_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = nodetoml::parse(text, Path::new("node.toml")) else {
        return;
    };
    assert!(n.mount.iter().all(|m| m.at.is_absolute()));
    assert!(n
        .link
        .iter()
        .all(|l| l.path.is_absolute() && l.target.is_absolute()));
    assert!(n.file.iter().all(|f| f.path.is_absolute()));
    if let Some(s) = &n.services {
        assert!(s.timeout > 0);
    }
}

/// `provision.toml`: `provision::parse_config`, then the plans made from
/// it with a command line that asks for both paths.
pub fn provision_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = provision::parse_config(text, Path::new("provision.toml")) else {
        return;
    };
    let c = Cmdline::parse("grendel.address=http://10.0.0.1:8080 grendel.hostname=cn1");
    let _ = provision::plan(&c, &cfg, "node");
    let paths = provision::Paths {
        known_hosts: "/nonexistent/nodeboot-fuzz/known_hosts".into(),
        ..Default::default()
    };
    let _ = native::plan(&c, &cfg.repo, &paths);
    let c = Cmdline::parse(
        "nodeboot.postscripts=ssh://git@10.0.0.1/postscripts nodeboot.postscripts.hostkey=SHA256:x",
    );
    let _ = native::plan(&c, &cfg.repo, &paths);
}

/// known_hosts: the file's text, an SSH URL and a key blob (split at NUL
/// bytes): `repo::ssh_target`, `repo::fingerprint`, `repo::check_known_hosts`.
pub fn known_hosts(data: &[u8]) {
    let parts = split(data, 3);
    let text = String::from_utf8_lossy(parts[0]);
    let url = String::from_utf8_lossy(parts[1]);
    let blob = parts[2];
    let fp = repo::fingerprint(blob);
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 43, "{fp}");
    let (host, port) = match repo::ssh_target(&url) {
        Ok((_, host, port)) => {
            assert!(!host.is_empty());
            (host, port)
        }
        Err(_) => ("10.0.0.1".to_string(), 22),
    };
    let _ = repo::check_known_hosts(&text, &host, port, blob);
}

/// The client side of nodectl's DHCP: `net::dhcp::judge` of a received
/// IPv4 packet. The first byte picks the checks (bit 0: the UDP checksum;
/// bit 1: waiting for an ACK rather than an OFFER) and, bit 2, whether the
/// rest is a DHCP payload to wrap (`net::packet::build`, to the client
/// port, with our transaction and MAC when bit 3) rather than a packet.
pub fn dhcp_client(data: &[u8]) {
    const XID: u32 = 0x1234_5678;
    const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    let server = Ipv4Addr::new(10, 0, 0, 1);
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let want = if ctl & 2 != 0 {
        agent_dhcp::Want::AckFrom(server)
    } else {
        agent_dhcp::Want::Offer
    };
    let pkt = if ctl & 4 != 0 && rest.len() <= 60_000 {
        let mut payload = rest.to_vec();
        if ctl & 8 != 0 && payload.len() >= 34 {
            payload[0] = 2;
            payload[1] = 1;
            payload[2] = 6;
            payload[4..8].copy_from_slice(&XID.to_be_bytes());
            payload[28..34].copy_from_slice(&MAC.0);
        }
        packet::build(server, Ipv4Addr::BROADCAST, 67, 68, 1, &payload)
    } else {
        rest.to_vec()
    };
    let _ = agent_dhcp::chaddr_is(&pkt, MAC);
    match agent_dhcp::judge(&pkt, ctl & 1 != 0, XID, MAC, want) {
        agent_dhcp::Verdict::Reply(agent_dhcp::Reply::Offer(l) | agent_dhcp::Reply::Ack(l)) => {
            let _ = format!("{l:?}");
        }
        agent_dhcp::Verdict::Reply(agent_dhcp::Reply::Nak(s, _)) => assert_eq!(s, server),
        _ => {}
    }
}

/// A disk of `len` bytes whose first bytes are `data`, zeros after: the
/// GPT reader over a large disk from a small input, without I/O.
struct SparseDisk<'a> {
    data: &'a [u8],
    len: u64,
    pos: u64,
}

impl std::io::Read for SparseDisk<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = usize::try_from(self.pos + i as u64)
                .ok()
                .and_then(|p| self.data.get(p))
                .copied()
                .unwrap_or(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for SparseDisk<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

/// The GPT reader: `gpt::read_image` of the bytes (512-byte sectors), and
/// `gpt::read` of a disk of the size and sector size in the first 5 bytes
/// (low 2 bits of byte 0: 512, 4096, 1024, 2048; bytes 1..5: sectors, LE)
/// that starts with the rest, zeros after.
pub fn gpt(data: &[u8]) {
    let _ = gpt::read_image(data, 512);
    if data.len() < 5 {
        return;
    }
    let lbs = [512u64, 4096, 1024, 2048][usize::from(data[0] & 3)];
    let sectors = u64::from(u32::from_le_bytes([data[1], data[2], data[3], data[4]]));
    let mut disk = SparseDisk {
        data: &data[5..],
        len: sectors * lbs,
        pos: 0,
    };
    if let Ok(Some(t)) = gpt::read(&mut disk, sectors, lbs) {
        assert!(t.first_usable <= t.last_usable && t.last_usable < sectors);
        for e in &t.entries {
            assert!(e.number >= 1);
        }
    }
}

/// nodeimg's archive input: `tree::scan_tar` (format detection, tar or
/// tar.zst, the tar reader with its limits, path checks, hard links, the
/// tree: `nodeimg build` without the writing), then `tar::Reader` over the
/// bytes, every member's data read (`read_data`): a regular file's chunks
/// lie inside its size. (Other members report size 0 yet `read_data` hands
/// over their stored bytes: fuzz/artifacts/tar/crash-74af80…, a typeflag
/// ' ' member with 11 bytes; nodeimg never reads them, so not asserted.)
pub fn tar(data: &[u8]) {
    if let Ok(s) = nodeimg::tree::scan_tar(data) {
        assert!(s.entries >= 1, "the root is an entry");
    }
    let mut r = nodeimg::tar::Reader::new(data);
    for _ in 0..256 {
        let m = match r.next_member() {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return,
        };
        let size = m.size;
        let file = m.ty == nodeimg::tar::Type::File;
        let res = r.read_data(&m, &mut |off, b| {
            assert!(
                !file || off.checked_add(b.len() as u64).is_some_and(|e| e <= size),
                "chunk {off}+{} past the size {size}",
                b.len()
            );
            Ok(())
        });
        if res.is_err() {
            return;
        }
    }
}

/// Node identity: an `Authorization: Nodeboot` value, a public key line, an
/// identity file, a sealed secret opened with a fixed key, and bootd's
/// check of a signed request and of an enrollment (nonce decoding, the
/// inventory lookups) over a fixed inventory. Parts cut at NUL bytes.
pub fn identity(data: &[u8]) {
    use nodeboot_identity::{Auth, NodeKey, PublicKey};
    use std::str::FromStr;
    static FIX: OnceLock<(
        NodeKey,
        Inventory,
        nodeboot_boot_server::identity::Identities,
    )> = OnceLock::new();
    let (key, inv, ids) = FIX.get_or_init(|| {
        let inv = Inventory::parse(
            "[[host]]\nname = \"cn1\"\nenroll = true\n[[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\n",
            "fuzz.toml",
        )
        .expect("fixed inventory");
        let ids = nodeboot_boot_server::identity::Identities::new(None).expect("identities");
        (NodeKey::from_seed(&[7; 32]), inv, ids)
    });
    let parts = split(data, 3);
    let text = String::from_utf8_lossy(parts[0]);
    let _ = Auth::parse(&text).map(|a| a.verify(&key.public(), "GET", "/x", b""));
    let _ = PublicKey::from_str(&text);
    let _ = NodeKey::from_file(parts[0]);
    let _ = key.open(parts.get(1).copied().unwrap_or_default());
    let body = parts.get(2).copied().unwrap_or_default();
    let _ = ids.verify(Some(&text), "GET", "/secrets/munge.key", body, inv);
    let _ = ids.enroll(Some(&text), "/identity/enroll", body, inv);
}

/// nodectl's LDAP check: the bind reply from the directory (`bind_result`,
/// `element_len`), and sssd.conf with a snippet (parts cut at NUL bytes).
pub fn ldap(data: &[u8]) {
    use nodeboot_agent::ldapcheck;
    if let Some(n) = ldapcheck::element_len(data) {
        assert!(n >= 2);
    }
    if let Some((_, diag)) = ldapcheck::bind_result(data) {
        assert!(diag.chars().count() <= 200);
    }
    let parts = split(data, 2);
    let texts: Vec<String> = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for d in ldapcheck::domains_in(&refs) {
        assert!(!d.name.is_empty());
        assert!(d.uris.iter().all(|u| !u.is_empty()));
    }
}

// ---------------------------------------------------------------- chunks

/// A casync blob index (`.caibx`), as nodectl reads one fetched from the
/// origin or a seed's beside a cached image: parsed within its limits, and
/// what is accepted writes back to the same bytes, its chunks contiguous
/// and each within the index's maximum.
pub fn caibx(data: &[u8]) {
    if let Ok(ix) = nodeboot_chunks::Index::parse(data) {
        assert_eq!(ix.to_bytes(), data);
        let mut end = 0u64;
        for c in &ix.chunks {
            assert_eq!(c.offset, end);
            assert!(c.size >= 1 && u64::from(c.size) <= ix.max);
            end = c.end();
        }
        assert_eq!(end, ix.total_size());
        assert!(ix.chunks.len() <= nodeboot_chunks::index::MAX_CHUNKS);
    }
}

/// A node's chunk server reading a peer's request head, and bootd reading a
/// peer claim (`POST /peers`): the two parsers of peer-assisted fetch.
pub fn peer_request(data: &[u8]) {
    use nodeboot_agent::peer::{parse_request, Route, MAX_HEAD};
    match parse_request(data) {
        Ok(Some((r, used))) => {
            assert!(used <= data.len() && used <= MAX_HEAD);
            assert!(r.method.bytes().all(|b| b.is_ascii_uppercase()));
            if let Some(Route::Have { image } | Route::Chunk { image, .. }) = &r.route {
                assert!(image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            if let Some(h) = &r.from {
                assert!(h.port != 0 && !h.have.is_empty() && h.have.len() <= MAX_HEAD / 2);
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(_) => {}
    }
    use nodeboot_boot_server::peers::{parse_claim, Peers};
    if let Ok((image, port)) = parse_claim(data) {
        assert!(port != 0 && image.len() == 64);
        let p = Peers::default();
        let now = std::time::Instant::now();
        let me = std::net::IpAddr::from([10, 0, 0, 1]);
        p.claim(&image, me, port, now)
            .expect("a first claim is recorded");
        let other = std::net::IpAddr::from([10, 0, 0, 2]);
        assert_eq!(p.list(&image, other, None, now).len(), 1);
        assert!(p.list(&image, me, Some(port), now).is_empty());
    }
}
