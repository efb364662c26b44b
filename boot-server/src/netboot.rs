//! `bootd serve --dhcp IFACE --dhcp-mode full|proxy --tftp-root DIR`: the
//! sockets and threads of the DHCP responder ([`crate::dhcp`]) and the TFTP
//! server ([`crate::tftp`]) beside the HTTP server.
//!
//! DHCP listens on UDP 67 and 4011 of every address, bound
//! to the interface with `SO_BINDTODEVICE` so that it only hears the boot
//! network, and answers from the interface's first IPv4 address. TFTP
//! listens on port 69 of that address (`--tftp-listen` to change it). On
//! the same interface bootd answers IPv6 router solicitations from the
//! inventory's MACs ([`crate::ndp`]; `--ipv6-ra false` turns it off).
use crate::dhcp::{self, Ignore, Mode, Port, Responder, Verdict};
use crate::inventory::Live;
use anyhow::{bail, Context, Result};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `bootd serve` was asked to run beside HTTP.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Interface name, or one of its IPv4 addresses.
    pub dhcp: Option<String>,
    pub mode: Option<Mode>,
    pub tftp_root: Option<PathBuf>,
    /// Default: port 69 of the DHCP interface's address, else 0.0.0.0:69.
    pub tftp_listen: Option<SocketAddr>,
    /// DHCP answers per MAC per second (0: no limit).
    pub dhcp_rate: u32,
    /// Answer IPv6 router solicitations on the DHCP interface
    /// ([`crate::ndp`]).
    pub ipv6_ra: bool,
    /// TFTP limits.
    pub tftp: crate::tftp::Limits,
}

/// The interface's name and first IPv4 address, from a name or an address.
pub fn interface(spec: &str) -> Result<(String, Ipv4Addr)> {
    let want_ip: Option<Ipv4Addr> = spec.parse().ok();
    let addrs = nix::ifaddrs::getifaddrs().context("listing the network interfaces")?;
    let mut names = Vec::new();
    for a in addrs {
        let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        if !names.contains(&a.interface_name) {
            names.push(a.interface_name.clone());
        }
        let hit = match want_ip {
            Some(w) => w == ip,
            None => a.interface_name == spec,
        };
        if hit {
            return Ok((a.interface_name, ip));
        }
    }
    match want_ip {
        Some(_) => bail!(
            "--dhcp {spec}: no interface has this IPv4 address (interfaces with one: {})",
            names.join(", ")
        ),
        None => bail!(
            "--dhcp {spec}: no such interface with an IPv4 address (interfaces with one: {})",
            names.join(", ")
        ),
    }
}

/// A UDP socket on `0.0.0.0:port` that only hears `iface`, allowed to broadcast.
fn bound_socket(iface: &str, port: u16) -> Result<UdpSocket> {
    let what = || format!("DHCP socket on {iface} port {port}");
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .with_context(what)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).with_context(what)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true).with_context(what)?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &iface.into())
        .with_context(|| format!("{}: SO_BINDTODEVICE (needs root)", what()))?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))
        .with_context(|| format!("{}: bind", what()))?;
    Ok(UdpSocket::from(fd))
}

/// Start what `opts` asks for. `http` is the HTTP server's bound address,
/// `public_url` the iPXE scripts' base when set; `www` (bootd's `--root`)
/// and `secrets` serve GRUB's configs and boot files over TFTP.
pub fn start(
    opts: &Options,
    inventory: Option<Arc<Live>>,
    http: SocketAddr,
    public_url: Option<&str>,
    www: &std::path::Path,
    secrets: Option<Arc<crate::secrets::Secrets>>,
) -> Result<()> {
    let iface = match &opts.dhcp {
        Some(spec) => Some(interface(spec)?),
        None => None,
    };
    // The base of the URLs nodes are told (iPXE script URL, command lines).
    let http_base = match public_url {
        Some(u) => Some(u.to_string()),
        None => {
            let host = match (&iface, http.ip().is_unspecified()) {
                (Some((_, ip)), true) => Some(IpAddr::V4(*ip)),
                (None, true) => None,
                (_, false) => Some(http.ip()),
            };
            host.map(|h| format!("http://{}", SocketAddr::new(h, http.port())))
        }
    };
    let tftp = match &opts.tftp_root {
        Some(root) => {
            let listen = opts.tftp_listen.unwrap_or_else(|| match &iface {
                Some((_, ip)) => SocketAddr::new(IpAddr::V4(*ip), 69),
                None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 69),
            });
            let grub = match (&inventory, &http_base) {
                (Some(inv), Some(base)) => Some(Arc::new(crate::grub::Grub {
                    inventory: inv.clone(),
                    www: www
                        .canonicalize()
                        .with_context(|| format!("--root {}", www.display()))?,
                    base: base.trim_end_matches('/').to_string(),
                    secrets,
                })),
                (Some(_), None) => {
                    tracing::warn!(
                        "tftp: no GRUB configs: bootd listens on {http}, which says no \
                         address nodes can reach; give --public-url"
                    );
                    None
                }
                (None, _) => None,
            };
            Some(crate::tftp::start(
                root,
                listen,
                &opts.tftp,
                inventory.clone(),
                grub,
            )?)
        }
        None => None,
    };
    let Some((name, ip)) = iface else {
        return Ok(());
    };
    let Some(inventory) = inventory else {
        bail!("--dhcp needs --inventory: bootd answers the inventory's MACs only");
    };
    let mode = opts.mode.unwrap_or(Mode::Proxy);
    if let Some(t) = tftp {
        if t.port() != 69 {
            tracing::warn!(
                "tftp: port {} is not 69: firmware asks port 69 of {ip}",
                t.port()
            );
        }
    }
    let http_base = http_base.unwrap_or_else(|| format!("http://{ip}:{}", http.port()));
    if public_url.is_none() && http.ip().is_loopback() {
        tracing::warn!(
            "dhcp: bootd's HTTP listens on {http}, which nodes cannot reach: \
             use --listen {ip}:{} or --public-url",
            http.port()
        );
    }
    let per_mac = opts.dhcp_rate;
    let responder = Arc::new(Responder::new(mode, ip, &http_base, tftp.is_some()));
    // 4011 in both modes: firmware that gets `PXEClient` without option 43
    // (UEFI) asks there for its boot file.
    for (number, port) in [(dhcp::SERVER_PORT, Port::Dhcp), (dhcp::PXE_PORT, Port::Pxe)] {
        let sock = bound_socket(&name, number)?;
        let (r, inv) = (responder.clone(), inventory.clone());
        std::thread::Builder::new()
            .name(format!("bootd-dhcp-{number}"))
            .spawn(move || serve(&sock, &r, &inv, port, per_mac))
            .context("starting the DHCP thread")?;
    }
    tracing::info!(
        "dhcp: {mode} mode on {name} ({ip}), iPXE scripts at {}",
        responder.script_url("MAC")
    );
    if opts.ipv6_ra {
        crate::ndp::start(&name, inventory);
    }
    Ok(())
}

/// How often the flood summary is logged, and how long an unknown MAC's
/// first line stands for it.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Distinct unknown MACs logged each [`SUMMARY_EVERY`]; the rest are counted.
const UNKNOWN_LOGGED: usize = 32;

/// What one DHCP thread remembers against floods, in O(1) per packet:
/// answers per MAC in the current second, and which unknown MACs it already
/// logged this minute. Both tables are bounded.
#[derive(Debug)]
pub struct Flood {
    /// Answers per MAC per second (0: no limit).
    per_mac: u32,
    answers: HashMap<String, (Instant, u32)>,
    unknown: std::collections::HashSet<String>,
    unknown_packets: u64,
    limited: u64,
    undecodable: u64,
    since: Instant,
}

/// The most MACs remembered for the rate limit (the inventory's are the
/// only ones answered, so this is only reached by a very large inventory).
const ANSWERS_KEPT: usize = 65_536;

impl Flood {
    pub fn new(per_mac: u32, now: Instant) -> Flood {
        Flood {
            per_mac,
            answers: HashMap::new(),
            unknown: Default::default(),
            unknown_packets: 0,
            limited: 0,
            undecodable: 0,
            since: now,
        }
    }

    /// Whether an answer to `mac` may go out at `now`.
    pub fn allow_answer(&mut self, mac: &str, now: Instant) -> bool {
        if self.per_mac == 0 {
            return true;
        }
        if self.answers.len() >= ANSWERS_KEPT && !self.answers.contains_key(mac) {
            self.answers
                .retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(1));
        }
        let e = self.answers.entry(mac.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        if e.1 >= self.per_mac {
            self.limited += 1;
            return false;
        }
        e.1 += 1;
        true
    }

    /// Whether this unknown MAC gets its own log line.
    pub fn log_unknown(&mut self, mac: &str) -> bool {
        self.unknown_packets += 1;
        if self.unknown.len() >= UNKNOWN_LOGGED || self.unknown.contains(mac) {
            return false;
        }
        self.unknown.insert(mac.to_string());
        true
    }

    /// A packet that did not decode.
    pub fn undecodable(&mut self) {
        self.undecodable += 1;
    }

    /// Once a minute: the summary line of what was dropped, if anything,
    /// and a new window.
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.since) < SUMMARY_EVERY {
            return None;
        }
        let dropped = self.unknown_packets + self.limited + self.undecodable;
        let line = (dropped > 0).then(|| {
            format!(
                "in the last {} s: {} packets from {}{} unknown MACs ignored, {} answers held back by the limit of {}/s per MAC, {} undecodable packets",
                now.duration_since(self.since).as_secs(),
                self.unknown_packets,
                self.unknown.len(),
                if self.unknown.len() >= UNKNOWN_LOGGED { "+" } else { "" },
                self.limited,
                self.per_mac,
                self.undecodable
            )
        });
        self.unknown.clear();
        self.unknown_packets = 0;
        self.limited = 0;
        self.undecodable = 0;
        self.since = now;
        line
    }
}

fn serve(sock: &UdpSocket, r: &Responder, live: &Live, port: Port, per_mac: u32) {
    // One byte more than decoded: a longer datagram is seen as too long.
    let mut buf = vec![0u8; dhcp::MAX_PACKET + 1];
    let mut flood = Flood::new(per_mac, Instant::now());
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("dhcp: receiving: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let now = Instant::now();
        if let Some(line) = flood.summary(now) {
            tracing::warn!("dhcp: {line}");
        }
        let SocketAddr::V4(from) = from else {
            continue;
        };
        // One packet: a panic in it (none is known: the decoder is fuzzed)
        // costs that packet, not the thread.
        let packet = &buf[..n];
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(sock, r, live, port, &mut flood, packet, from, now)
        }));
        if handled.is_err() {
            tracing::error!("dhcp: a packet from {from} made bootd panic: dropped");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    sock: &UdpSocket,
    r: &Responder,
    live: &Live,
    port: Port,
    flood: &mut Flood,
    packet: &[u8],
    from: std::net::SocketAddrV4,
    now: Instant,
) {
    use crate::metrics::Dhcp;
    let metrics = crate::metrics::global();
    metrics.dhcp_received();
    let req = match dhcp::decode(packet) {
        Ok(m) => m,
        Err(e) => {
            metrics.dhcp(Dhcp::Undecodable);
            flood.undecodable();
            tracing::debug!("dhcp: undecodable packet from {from}: {e}");
            return;
        }
    };
    let inv = live.get();
    match r.answer(&inv, &inv.dhcp, &req, port, from) {
        Verdict::Reply { msg, to, summary } => {
            let mac = crate::dhcp::client_mac(&req).unwrap_or_default();
            if !flood.allow_answer(&mac, now) {
                metrics.dhcp(Dhcp::RateLimited);
                tracing::debug!("dhcp: {summary}: held back (answers per MAC per second)");
                return;
            }
            let sent = dhcp::encode(&msg)
                .map_err(|e| anyhow::anyhow!("encoding: {e}"))
                .and_then(|b| sock.send_to(&b, to).map_err(Into::into));
            match sent {
                Ok(_) => {
                    metrics.dhcp(Dhcp::Answered);
                    tracing::info!("dhcp: {summary}")
                }
                Err(e) => {
                    metrics.dhcp(Dhcp::SendFailed);
                    tracing::warn!("dhcp: {summary}: not sent to {to}: {e:#}")
                }
            }
        }
        Verdict::Ignore(Ignore::UnknownMac(mac)) => {
            metrics.dhcp(Dhcp::Ignored);
            if flood.log_unknown(&mac) {
                tracing::info!("dhcp: ignoring {mac}: unknown MAC, in no host's interfaces");
            }
        }
        Verdict::Ignore(why) => {
            metrics.dhcp(Dhcp::Ignored);
            tracing::debug!("dhcp: ignoring {why:?}")
        }
    }
}
