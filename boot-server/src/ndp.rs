//! bootd's answer to IPv6 router solicitations on the `--dhcp` interface
//! (issue 17): a router advertisement that ends iPXE's IPv6 wait and
//! changes nothing else.
//!
//! iPXE configures a NIC with all its configurators at once (`ifconf`:
//! DHCPv4 and IPv6) and boots only when every one has finished. Its IPv6
//! configurator (`src/net/ndp.c`, `start_ipv6conf`) sends router
//! solicitations on a retry timer that starts at once and backs off from
//! 1/4 s, doubling, until the next wait would pass 10 s (`retry.c`): with no
//! router on the segment it gives up after 0.25 + 0.5 + 1 + 2 + 4 + 8 =
//! 15.75 s. The firmware's iPXE and the chainloaded one each wait that long
//! in the PXE boot. The first router advertisement that arrives while the
//! timer runs stops it (`ipv6conf_rx_router_advertisement`); when its M
//! and O flags are clear no DHCPv6 follows and IPv6 configuration is done.
//! No DHCP option or iPXE setting skips the IPv6 configurator: the
//! firmware's iPXE runs before anything bootd sends, and Debian's iPXE
//! builds have no embedded script.
//!
//! So bootd answers a router solicitation with a router advertisement that
//! makes no one use bootd as a router: router lifetime 0 (not a default
//! router), M = O = 0 (no DHCPv6), no prefix (no address, no on-link
//! route), current hop limit, reachable time and retransmission timer 0
//! (unspecified: the host keeps its own), no MTU and no DNS; only bootd's
//! link-layer address. It is sent only
//!
//! - to a solicitation that passes RFC 4861's checks (hop limit 255, code
//!   0, well-formed options; the kernel has checked the ICMPv6 checksum)
//!   from a link-local address, never `::`;
//! - whose source link-layer address option is a MAC of the inventory,
//!   as bootd's DHCP answers the inventory's MACs only;
//! - unicast to that link-local address: no other host on the segment
//!   receives it, so hosts that use a real router never see bootd's;
//! - within [`PER_MAC_PER_SECOND`] answers per MAC and
//!   [`PER_SECOND`] in all;
//! - when this host does not forward IPv6 on the interface (a router there
//!   sends its own advertisements, and one with lifetime 0 from the same
//!   address would withdraw it as the hosts' default router): read from
//!   `/proc/sys`, else, under the unit's `ProcSubset=pid`, from whether the
//!   interface is in the all-routers group ([`ipv6_on`]).
//!
//! `ipv6_ra = false` in bootd.toml (`--ipv6-ra false`) turns it off.
use crate::inventory::Live;
use anyhow::{Context, Result};
use socket2::{Domain, MaybeUninitSlice, MsgHdrMut, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// NDP option: source link-layer address.
const OPT_SOURCE_LL: u8 = 1;
/// A solicitation is 8 bytes and a few options; anything longer than the
/// IPv6 minimum MTU is not one.
pub const MAX_PACKET: usize = 1280;
/// Answers a second, all MACs.
pub const PER_SECOND: u32 = 100;
/// Answers a second to one MAC (iPXE solicits at 0, 0.25 and 0.75 s: a
/// lost answer is made up within its first second).
pub const PER_MAC_PER_SECOND: u32 = 3;
/// MACs remembered for the per-MAC limit (only the inventory's are
/// answered, so only a very large inventory reaches it).
const MACS_KEPT: usize = 65_536;
/// The IPv6 all-routers group, where solicitations are sent.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Why a packet is not a router solicitation bootd reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes: shorter than a router solicitation (8)")]
    Short(usize),
    #[error("{0} bytes: longer than {MAX_PACKET}")]
    Long(usize),
    #[error("ICMPv6 code {0} (want 0)")]
    Code(u8),
    #[error("option at byte {0}: length 0")]
    ZeroLength(usize),
    #[error("option at byte {at}: {len} bytes past the end ({left} left)")]
    Overrun { at: usize, len: usize, left: usize },
}

/// What bootd reads of a router solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// The first source link-layer address option of Ethernet length.
    pub mac: Option<[u8; 6]>,
}

/// Parse an ICMPv6 message (no IPv6 header, as a raw socket reads it):
/// `Ok(None)` when it is another ICMPv6 type, which is not bootd's
/// business; a router solicitation with its options checked (RFC 4861
/// 6.1.1: every option's length above 0 and inside the packet). Reads
/// each byte at most once; never panics.
pub fn parse(b: &[u8]) -> Result<Option<Solicitation>, Malformed> {
    let Some(&kind) = b.first() else {
        return Err(Malformed::Short(0));
    };
    if kind != ROUTER_SOLICITATION {
        return Ok(None);
    }
    if b.len() < 8 {
        return Err(Malformed::Short(b.len()));
    }
    if b.len() > MAX_PACKET {
        return Err(Malformed::Long(b.len()));
    }
    if b[1] != 0 {
        return Err(Malformed::Code(b[1]));
    }
    // Bytes 2..4: the checksum (checked by the kernel); 4..8: reserved.
    let mut mac = None;
    let mut at = 8;
    while at < b.len() {
        let left = b.len() - at;
        if left < 2 {
            return Err(Malformed::Overrun { at, len: 8, left });
        }
        let len = usize::from(b[at + 1]) * 8;
        if len == 0 {
            return Err(Malformed::ZeroLength(at));
        }
        if len > left {
            return Err(Malformed::Overrun { at, len, left });
        }
        if b[at] == OPT_SOURCE_LL && len == 8 && mac.is_none() {
            let mut m = [0u8; 6];
            m.copy_from_slice(&b[at + 2..at + 8]);
            mac = Some(m);
        }
        at += len;
    }
    Ok(Some(Solicitation { mac }))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `a` is link-local unicast (fe80::/10).
fn link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Why a packet gets no advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignore {
    /// Not a router solicitation (another ICMPv6 message): not counted.
    Other,
    Malformed(Malformed),
    /// IPv6 hop limit not 255 (or not known): not from this link.
    HopLimit(Option<u8>),
    /// The source is not link-local (`::` included).
    Source(Ipv6Addr),
    /// No source link-layer address option.
    NoMac,
    /// A MAC in no host's interfaces.
    UnknownMac(String),
}

/// The answer to one solicitation: to whom, and whose MAC it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub to: Ipv6Addr,
    pub mac: String,
    pub host: String,
}

/// Whether the ICMPv6 message `b` from `src`, that arrived with IPv6 hop
/// limit `hops`, gets an advertisement, given the inventory `inv`.
pub fn judge(
    b: &[u8],
    src: Ipv6Addr,
    hops: Option<u8>,
    inv: &crate::inventory::Inventory,
) -> Result<Answer, Ignore> {
    let rs = match parse(b) {
        Ok(Some(rs)) => rs,
        Ok(None) => return Err(Ignore::Other),
        Err(e) => return Err(Ignore::Malformed(e)),
    };
    if hops != Some(255) {
        return Err(Ignore::HopLimit(hops));
    }
    if !link_local(&src) {
        return Err(Ignore::Source(src));
    }
    let mac = mac_string(&rs.mac.ok_or(Ignore::NoMac)?);
    let Some((host, _)) = inv.by_mac(&mac) else {
        return Err(Ignore::UnknownMac(mac));
    };
    Ok(Answer {
        to: src,
        host: host.name.clone(),
        mac,
    })
}

/// The router advertisement bootd sends (ICMPv6, checksum left 0: the
/// kernel fills it in on a raw ICMPv6 socket): router lifetime 0, M = O =
/// 0, all timers unspecified, and bootd's link-layer address when known.
pub fn advertisement(own_mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut ra = vec![0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    // [1] code 0, [2..4] checksum, [4] current hop limit 0 (unspecified),
    // [5] flags: M = O = 0, [6..8] router lifetime 0, [8..12] reachable
    // time 0, [12..16] retransmission timer 0.
    if let Some(m) = own_mac {
        ra.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        ra.extend_from_slice(&m);
    }
    ra
}

/// Answers per MAC per second and in all per second, in O(1) a packet;
/// the table is bounded.
#[derive(Debug)]
pub struct Limiter {
    second: (Instant, u32),
    per_mac: HashMap<String, (Instant, u32)>,
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            second: (now, 0),
            per_mac: HashMap::new(),
        }
    }

    /// Whether an answer to `mac` may go out at `now` (and count it).
    pub fn allow(&mut self, mac: &str, now: Instant) -> bool {
        let sec = Duration::from_secs(1);
        if now.duration_since(self.second.0) >= sec {
            self.second = (now, 0);
        }
        if self.second.1 >= PER_SECOND {
            return false;
        }
        if self.per_mac.len() >= MACS_KEPT && !self.per_mac.contains_key(mac) {
            self.per_mac
                .retain(|_, (t, _)| now.duration_since(*t) < sec);
            if self.per_mac.len() >= MACS_KEPT {
                return false;
            }
        }
        let e = self.per_mac.entry(mac.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= sec {
            *e = (now, 0);
        }
        if e.1 >= PER_MAC_PER_SECOND {
            return false;
        }
        e.1 += 1;
        self.second.1 += 1;
        true
    }
}

/// What this host does with IPv6 on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6 {
    /// No IPv6 on the interface.
    Off,
    /// A host there: IPv6 on, not forwarded.
    Host,
    /// A router there: it forwards IPv6 (and sends advertisements of its own).
    Router,
    /// Neither `/proc/sys` nor `/proc/self/net` could be read.
    Unknown,
}

/// What this host does with IPv6 on `iface`, from `proc` (`/proc`):
/// `sys/net/ipv6/conf/IFACE/forwarding`, else (under systemd's
/// `ProcSubset=pid`, which hides `/proc/sys`) whether the interface is in
/// the all-routers group (`ff02::2`, joined by the kernel when it forwards
/// there) in `self/net/igmp6`. Call it before joining that group oneself.
pub fn ipv6_on(proc: &Path, iface: &str) -> Ipv6 {
    let conf = proc.join("sys/net/ipv6/conf");
    if conf.is_dir() {
        return match std::fs::read_to_string(conf.join(iface).join("forwarding")) {
            Ok(v) if v.trim() == "0" => Ipv6::Host,
            Ok(_) => Ipv6::Router,
            Err(_) => Ipv6::Off,
        };
    }
    let Ok(groups) = std::fs::read_to_string(proc.join("self/net/igmp6")) else {
        return Ipv6::Unknown;
    };
    let mut on = false;
    for l in groups.lines() {
        let mut f = l.split_whitespace();
        if f.nth(1) != Some(iface) {
            continue;
        }
        on = true;
        if f.next() == Some("ff020000000000000000000000000002") {
            return Ipv6::Router;
        }
    }
    if on {
        Ipv6::Host
    } else {
        Ipv6::Off
    }
}

/// The MAC of `iface`, if it has one.
fn own_mac(iface: &str) -> Option<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name != iface {
            continue;
        }
        if let Some(l) = a.address.as_ref().and_then(|s| s.as_link_addr()) {
            if let Some(m) = l.addr() {
                if m != [0; 6] {
                    return Some(m);
                }
            }
        }
    }
    None
}

/// The IPv6 hop limit in a control buffer filled by `recvmsg` with
/// `IPV6_RECVHOPLIMIT` on: Linux's `cmsghdr` (a `size_t` length, then
/// level and type as `int`), each message aligned to `size_t`. Bounded by
/// the buffer; never panics.
pub fn hop_limit(control: &[u8]) -> Option<u8> {
    const W: usize = std::mem::size_of::<usize>();
    let head = W + 8;
    let align = |n: usize| n.checked_add(W - 1).map(|n| n & !(W - 1));
    let mut at = 0usize;
    while control.len().saturating_sub(at) >= head {
        let mut len = [0u8; W];
        len.copy_from_slice(&control[at..at + W]);
        let len = usize::from_ne_bytes(len);
        let word = |i: usize| {
            let mut v = [0u8; 4];
            v.copy_from_slice(&control[at + W + i..at + W + i + 4]);
            i32::from_ne_bytes(v)
        };
        let (level, kind) = (word(0), word(4));
        if len < head || len > control.len() - at {
            return None;
        }
        if level == nix::libc::IPPROTO_IPV6 && kind == nix::libc::IPV6_HOPLIMIT && len >= head + 4 {
            let v = i32::from_ne_bytes(control[at + head..at + head + 4].try_into().ok()?);
            return u8::try_from(v).ok();
        }
        at = at.checked_add(align(len)?)?;
    }
    None
}

/// Counts for the once-a-minute summary.
#[derive(Debug, Default)]
struct Counts {
    ignored: u64,
    limited: u64,
    malformed: u64,
}

/// Open the socket and start the thread that answers on `iface` (index
/// `ifindex`). Problems that only cost the faster boot (no IPv6 on the
/// interface, no `CAP_NET_RAW`, this host routes IPv6 there) are logged and
/// bootd goes on without the answers.
pub fn start(iface: &str, inventory: Arc<Live>) {
    match ipv6_on(Path::new("/proc"), iface) {
        Ipv6::Off => {
            tracing::info!(
                "ndp: {iface} has no IPv6: no router advertisements (iPXE gives up \
                 waiting for one after ~16 s)"
            );
            return;
        }
        Ipv6::Router => {
            tracing::warn!(
                "ndp: this host forwards IPv6 on {iface}: its own router advertisements \
                 stand, bootd sends none"
            );
            return;
        }
        Ipv6::Unknown => tracing::info!(
            "ndp: cannot tell whether this host forwards IPv6 on {iface} (neither \
             /proc/sys nor /proc/self/net readable): answering as a host"
        ),
        Ipv6::Host => {}
    }
    let sock = match open(iface) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "ndp: not answering router solicitations (iPXE waits ~16 s for one): {e:#}"
            );
            return;
        }
    };
    let ra = advertisement(own_mac(iface));
    let name = iface.to_string();
    let spawned = std::thread::Builder::new()
        .name("bootd-ndp".into())
        .spawn(move || serve(&sock, &name, &ra, &inventory));
    match spawned {
        Ok(_) => tracing::info!(
            "ndp: answering router solicitations from the inventory's MACs on {iface} \
             (router lifetime 0, no prefix)"
        ),
        Err(e) => tracing::warn!("ndp: starting the thread: {e}"),
    }
}

/// A raw ICMPv6 socket that hears `iface` only, in the all-routers group,
/// sending with hop limit 255 and told each packet's hop limit.
fn open(iface: &str) -> Result<(Socket, u32)> {
    let what = || format!("raw ICMPv6 socket on {iface}");
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .with_context(|| format!("{}: no interface index", what()))?;
    let s = Socket::new(Domain::IPV6, Type::RAW.cloexec(), Some(Protocol::ICMPV6))
        .with_context(|| format!("{} (needs CAP_NET_RAW)", what()))?;
    s.bind_device(Some(iface.as_bytes()))
        .with_context(|| format!("{}: SO_BINDTODEVICE", what()))?;
    s.join_multicast_v6(&ALL_ROUTERS, ifindex)
        .with_context(|| format!("{}: joining ff02::2", what()))?;
    s.set_unicast_hops_v6(255).with_context(what)?;
    s.set_multicast_hops_v6(255).with_context(what)?;
    s.set_recv_hoplimit_v6(true).with_context(what)?;
    Ok((s, ifindex))
}

fn serve(sock: &(Socket, u32), iface: &str, ra: &[u8], live: &Live) {
    let (sock, ifindex) = (&sock.0, sock.1);
    // One byte more than read: a longer message is seen as too long.
    let mut buf = vec![MaybeUninit::<u8>::uninit(); MAX_PACKET + 1];
    let mut control = [MaybeUninit::<u8>::uninit(); 128];
    let mut limiter = Limiter::new(Instant::now());
    let mut counts = Counts::default();
    let mut since = Instant::now();
    let metrics = crate::metrics::global();
    loop {
        // Room for the sender, written by recvmsg (an IPv6 socket: sockaddr_in6).
        let mut from = SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        let (n, clen) = {
            let mut bufs = [MaybeUninitSlice::new(&mut buf)];
            let mut msg = MsgHdrMut::new()
                .with_addr(&mut from)
                .with_buffers(&mut bufs)
                .with_control(&mut control);
            match sock.recvmsg(&mut msg, 0) {
                Ok(n) => (n, msg.control_len()),
                Err(e) => {
                    tracing::warn!("ndp: receiving on {iface}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        };
        let now = Instant::now();
        if now.duration_since(since) >= Duration::from_secs(60) {
            if counts.ignored + counts.limited + counts.malformed > 0 {
                tracing::info!(
                    "ndp: in the last {} s: {} router solicitations ignored (not from \
                     an inventory MAC's link-local address), {} held back by the limits \
                     ({PER_MAC_PER_SECOND}/s per MAC, {PER_SECOND}/s in all), {} malformed",
                    now.duration_since(since).as_secs(),
                    counts.ignored,
                    counts.limited,
                    counts.malformed
                );
            }
            counts = Counts::default();
            since = now;
        }
        let Some(src) = from.as_socket_ipv6().map(|a| *a.ip()) else {
            continue;
        };
        // SAFETY: recvmsg initialised the first `n` bytes of `buf` (at most
        // its length) and the first `clen` of `control`.
        let packet: Vec<u8> = buf[..n.min(buf.len())]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let ctl: Vec<u8> = control[..clen.min(control.len())]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let inv = live.get();
            match judge(&packet, src, hop_limit(&ctl), &inv) {
                Ok(a) => {
                    if !limiter.allow(&a.mac, now) {
                        counts.limited += 1;
                        metrics.ndp(crate::metrics::Ndp::RateLimited);
                        return;
                    }
                    let to = SockAddr::from(SocketAddrV6::new(a.to, 0, 0, ifindex));
                    match sock.send_to(ra, &to) {
                        Ok(_) => {
                            metrics.ndp(crate::metrics::Ndp::Answered);
                            if let Some(left) = ANSWER_LINES.take() {
                                tracing::info!(
                                    "ndp: router advertisement (lifetime 0, no prefix) to {} \
                                     ({}, {}){}",
                                    a.to,
                                    a.mac,
                                    a.host,
                                    crate::left_out(left)
                                );
                            }
                        }
                        Err(e) => {
                            metrics.ndp(crate::metrics::Ndp::SendFailed);
                            tracing::debug!("ndp: advertisement to {} not sent: {e}", a.to);
                        }
                    }
                }
                Err(Ignore::Other) => {}
                Err(Ignore::Malformed(e)) => {
                    counts.malformed += 1;
                    metrics.ndp(crate::metrics::Ndp::Malformed);
                    tracing::debug!("ndp: malformed router solicitation from {src}: {e}");
                }
                Err(why) => {
                    counts.ignored += 1;
                    metrics.ndp(crate::metrics::Ndp::Ignored);
                    tracing::debug!("ndp: ignoring a router solicitation from {src}: {why:?}");
                }
            }
        }));
        if handled.is_err() {
            tracing::error!("ndp: a packet from {src} made bootd panic: dropped");
        }
    }
}

/// Lines about advertisements sent: 60 a minute.
static ANSWER_LINES: crate::Ration = crate::Ration::new(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SRC: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);

    /// A solicitation as iPXE sends it: 8 bytes and its MAC.
    fn rs(mac: [u8; 6]) -> Vec<u8> {
        let mut b = vec![
            ROUTER_SOLICITATION,
            0,
            0xab,
            0xcd,
            0,
            0,
            0,
            0,
            OPT_SOURCE_LL,
            1,
        ];
        b.extend_from_slice(&mac);
        b
    }

    fn inv() -> Inventory {
        Inventory::parse(
            r#"
[[image]]
name = "live"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = "root=live:x"

[[host]]
name = "cn1"
image = "live"
[[host.interfaces]]
mac = "52:54:00:12:34:56"
ip = "10.0.0.5/24"
"#,
            "inventory.toml",
        )
        .unwrap()
    }

    #[test]
    fn ipxes_solicitation_parses_with_its_mac() {
        assert_eq!(parse(&rs(MAC)), Ok(Some(Solicitation { mac: Some(MAC) })));
        // Without options (a host with no link-layer address to give).
        assert_eq!(parse(&rs(MAC)[..8]), Ok(Some(Solicitation { mac: None })));
        // An unknown option before the address is skipped; a second
        // address option does not replace the first.
        let mut b = rs(MAC)[..8].to_vec();
        b.extend_from_slice(&[200, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&rs(MAC)[8..]);
        b.extend_from_slice(&rs([2; 6])[8..]);
        assert_eq!(parse(&b), Ok(Some(Solicitation { mac: Some(MAC) })));
    }

    #[test]
    fn other_icmpv6_is_none_and_bad_solicitations_say_why() {
        assert_eq!(parse(&[135, 0, 0, 0]), Ok(None));
        assert_eq!(parse(&[]), Err(Malformed::Short(0)));
        assert_eq!(parse(&rs(MAC)[..7]), Err(Malformed::Short(7)));
        let mut long = rs(MAC);
        long.resize(MAX_PACKET + 1, 0);
        assert_eq!(parse(&long), Err(Malformed::Long(1281)));
        let mut code = rs(MAC);
        code[1] = 1;
        assert_eq!(parse(&code), Err(Malformed::Code(1)));
        let mut zero = rs(MAC);
        zero[9] = 0;
        assert_eq!(parse(&zero), Err(Malformed::ZeroLength(8)));
        let mut over = rs(MAC);
        over[9] = 2;
        assert_eq!(
            parse(&over),
            Err(Malformed::Overrun {
                at: 8,
                len: 16,
                left: 8
            })
        );
        let mut odd = rs(MAC);
        odd.push(1);
        assert_eq!(
            parse(&odd),
            Err(Malformed::Overrun {
                at: 16,
                len: 8,
                left: 1
            })
        );
        assert_eq!(
            Malformed::ZeroLength(8).to_string(),
            "option at byte 8: length 0"
        );
    }

    #[test]
    fn only_on_link_inventory_macs_from_link_local_addresses_are_answered() {
        let inv = inv();
        assert_eq!(
            judge(&rs(MAC), SRC, Some(255), &inv),
            Ok(Answer {
                to: SRC,
                mac: "52:54:00:12:34:56".into(),
                host: "cn1".into()
            })
        );
        assert_eq!(
            judge(&rs(MAC), SRC, Some(254), &inv),
            Err(Ignore::HopLimit(Some(254)))
        );
        assert_eq!(
            judge(&rs(MAC), SRC, None, &inv),
            Err(Ignore::HopLimit(None))
        );
        for src in [
            Ipv6Addr::UNSPECIFIED,
            "2001:db8::1".parse().unwrap(),
            "ff02::1".parse().unwrap(),
        ] {
            assert_eq!(
                judge(&rs(MAC), src, Some(255), &inv),
                Err(Ignore::Source(src))
            );
        }
        assert_eq!(
            judge(&rs(MAC)[..8], SRC, Some(255), &inv),
            Err(Ignore::NoMac)
        );
        assert_eq!(
            judge(&rs([2, 0, 0, 0, 0, 1]), SRC, Some(255), &inv),
            Err(Ignore::UnknownMac("02:00:00:00:00:01".into()))
        );
        assert_eq!(
            judge(&[136, 0, 0, 0], SRC, Some(255), &inv),
            Err(Ignore::Other)
        );
    }

    #[test]
    fn the_advertisement_makes_no_router_and_no_address() {
        let ra = advertisement(Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(ra.len(), 24);
        assert_eq!(ra[0], ROUTER_ADVERTISEMENT);
        assert_eq!(ra[1], 0, "code");
        assert_eq!(ra[4], 0, "current hop limit: unspecified");
        assert_eq!(ra[5], 0, "M and O flags clear: no DHCPv6");
        assert_eq!(
            &ra[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert_eq!(&ra[8..16], &[0; 8], "reachable time, retrans timer");
        // Its only option is bootd's own address: no prefix, MTU, DNS.
        assert_eq!(&ra[16..], &[1, 1, 2, 0, 0, 0, 0, 9]);
        assert_eq!(advertisement(None).len(), 16);
    }

    #[test]
    fn answers_are_limited_per_mac_and_in_all() {
        let t = Instant::now();
        let mut l = Limiter::new(t);
        for _ in 0..PER_MAC_PER_SECOND {
            assert!(l.allow("a", t));
        }
        assert!(!l.allow("a", t));
        assert!(l.allow("a", t + Duration::from_secs(1)));
        // In all: PER_SECOND answers a second whatever the MACs.
        let t2 = t + Duration::from_secs(5);
        let mut sent = 0;
        for i in 0..PER_SECOND * 2 {
            if l.allow(&format!("m{i}"), t2) {
                sent += 1;
            }
        }
        assert_eq!(sent, PER_SECOND);
        assert!(l.allow("late", t2 + Duration::from_secs(1)));
    }

    #[test]
    fn forwarding_is_read_from_proc_sys_else_from_the_router_group() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("sys/net/ipv6/conf");
        std::fs::create_dir_all(conf.join("eth1")).unwrap();
        std::fs::create_dir_all(conf.join("eth2")).unwrap();
        std::fs::write(conf.join("eth1/forwarding"), "0\n").unwrap();
        std::fs::write(conf.join("eth2/forwarding"), "1\n").unwrap();
        assert_eq!(ipv6_on(d.path(), "eth1"), Ipv6::Host);
        assert_eq!(ipv6_on(d.path(), "eth2"), Ipv6::Router);
        assert_eq!(ipv6_on(d.path(), "eth3"), Ipv6::Off);
        // ProcSubset=pid: no /proc/sys, but /proc/self/net.
        let d = tempfile::tempdir().unwrap();
        assert_eq!(ipv6_on(d.path(), "eth1"), Ipv6::Unknown);
        std::fs::create_dir_all(d.path().join("self/net")).unwrap();
        std::fs::write(
            d.path().join("self/net/igmp6"),
            "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
             3    eth1            ff020000000000000000000000000001     1 0000000C 0\n\
             3    eth1            ff0200000000000000000001ff123456     1 00000004 0\n\
             4    eth2            ff020000000000000000000000000001     1 0000000C 0\n\
             4    eth2            ff020000000000000000000000000002     1 0000000C 0\n",
        )
        .unwrap();
        assert_eq!(ipv6_on(d.path(), "eth1"), Ipv6::Host);
        assert_eq!(ipv6_on(d.path(), "eth2"), Ipv6::Router);
        assert_eq!(ipv6_on(d.path(), "eth3"), Ipv6::Off);
    }

    /// A control buffer as Linux writes it: one `cmsghdr` and its data.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        const W: usize = std::mem::size_of::<usize>();
        let len = W + 8 + data.len();
        let mut b = len.to_ne_bytes().to_vec();
        b.extend_from_slice(&level.to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(data);
        b.resize(len.div_ceil(W) * W, 0);
        b
    }

    #[test]
    fn the_hop_limit_is_read_from_the_control_messages() {
        use nix::libc::{IPPROTO_IPV6, IPV6_HOPLIMIT, IPV6_PKTINFO};
        let hl = cmsg(IPPROTO_IPV6, IPV6_HOPLIMIT, &255i32.to_ne_bytes());
        assert_eq!(hop_limit(&hl), Some(255));
        // After another message.
        let mut two = cmsg(IPPROTO_IPV6, IPV6_PKTINFO, &[0; 20]);
        two.extend(cmsg(IPPROTO_IPV6, IPV6_HOPLIMIT, &64i32.to_ne_bytes()));
        assert_eq!(hop_limit(&two), Some(64));
        assert_eq!(hop_limit(&[]), None);
        assert_eq!(hop_limit(&hl[..hl.len() - 8]), None, "truncated");
        let mut huge = hl.clone();
        huge[..std::mem::size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(hop_limit(&huge), None);
        let mut tiny = hl.clone();
        tiny[..std::mem::size_of::<usize>()].copy_from_slice(&1usize.to_ne_bytes());
        assert_eq!(hop_limit(&tiny), None);
    }
}
