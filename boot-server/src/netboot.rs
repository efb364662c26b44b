//! `bootd serve --dhcp IFACE --dhcp-mode full|proxy --tftp-root DIR`: the
//! sockets and threads of the DHCP responder ([`crate::dhcp`]) and the TFTP
//! server ([`crate::tftp`]) beside the HTTP server.
//!
//! DHCP listens on UDP 67 and 4011 of every address, bound
//! to the interface with `SO_BINDTODEVICE` so that it only hears the boot
//! network, and answers from the interface's first IPv4 address. TFTP
//! listens on port 69 of that address (`--tftp-listen` to change it).
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
/// `public_url` the iPXE scripts' base when set.
pub fn start(
    opts: &Options,
    inventory: Option<Arc<Live>>,
    http: SocketAddr,
    public_url: Option<&str>,
) -> Result<()> {
    let iface = match &opts.dhcp {
        Some(spec) => Some(interface(spec)?),
        None => None,
    };
    let tftp = match &opts.tftp_root {
        Some(root) => {
            let listen = opts.tftp_listen.unwrap_or_else(|| match &iface {
                Some((_, ip)) => SocketAddr::new(IpAddr::V4(*ip), 69),
                None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 69),
            });
            Some(crate::tftp::start(root, listen)?)
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
    let http_base = match public_url {
        Some(u) => u.to_string(),
        None => {
            let host = if http.ip().is_unspecified() {
                IpAddr::V4(ip)
            } else {
                http.ip()
            };
            if host.is_loopback() {
                tracing::warn!(
                    "dhcp: bootd's HTTP listens on {http}, which nodes cannot reach: \
                     use --listen {ip}:{} or --public-url",
                    http.port()
                );
            }
            format!("http://{}", SocketAddr::new(host, http.port()))
        }
    };
    let responder = Arc::new(Responder::new(mode, ip, &http_base, tftp.is_some()));
    // 4011 in both modes: firmware that gets `PXEClient` without option 43
    // (UEFI) asks there for its boot file.
    for (number, port) in [(dhcp::SERVER_PORT, Port::Dhcp), (dhcp::PXE_PORT, Port::Pxe)] {
        let sock = bound_socket(&name, number)?;
        let (r, inv) = (responder.clone(), inventory.clone());
        std::thread::Builder::new()
            .name(format!("bootd-dhcp-{number}"))
            .spawn(move || serve(&sock, &r, &inv, port))
            .context("starting the DHCP thread")?;
    }
    tracing::info!(
        "dhcp: {mode} mode on {name} ({ip}), iPXE scripts at {}",
        responder.script_url("MAC")
    );
    Ok(())
}

/// Unknown MACs are logged at most this often each.
const UNKNOWN_EVERY: Duration = Duration::from_secs(60);

fn serve(sock: &UdpSocket, r: &Responder, live: &Live, port: Port) {
    let mut buf = vec![0u8; 2048];
    let mut unknown: HashMap<String, Instant> = HashMap::new();
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("dhcp: receiving: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let SocketAddr::V4(from) = from else {
            continue;
        };
        let req = match dhcp::decode(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("dhcp: undecodable packet from {from}: {e}");
                continue;
            }
        };
        let inv = live.get();
        match r.answer(&inv, &inv.dhcp, &req, port, from) {
            Verdict::Reply { msg, to, summary } => {
                let sent = dhcp::encode(&msg)
                    .map_err(|e| anyhow::anyhow!("encoding: {e}"))
                    .and_then(|b| sock.send_to(&b, to).map_err(Into::into));
                match sent {
                    Ok(_) => tracing::info!("dhcp: {summary}"),
                    Err(e) => tracing::warn!("dhcp: {summary}: not sent to {to}: {e:#}"),
                }
            }
            Verdict::Ignore(Ignore::UnknownMac(mac)) => {
                let now = Instant::now();
                unknown.retain(|_, t| now.duration_since(*t) < UNKNOWN_EVERY);
                if let std::collections::hash_map::Entry::Vacant(e) = unknown.entry(mac) {
                    tracing::info!(
                        "dhcp: ignoring {}: unknown MAC, in no host's interfaces",
                        e.key()
                    );
                    e.insert(now);
                }
            }
            Verdict::Ignore(why) => tracing::debug!("dhcp: ignoring {why:?}"),
        }
    }
}
