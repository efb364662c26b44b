//! A DHCPv4 client for the initramfs (RFC 2131): DISCOVER → OFFER →
//! REQUEST → ACK, broadcast, on a packet socket (see [`super::packet`]).
//! The DHCP message itself is encoded and decoded by `dhcproto`.
//!
//! Retransmission: 1, 2, 4, 8, 8, … seconds, for DISCOVERs and REQUESTs
//! alike, everything bounded by one deadline. A NAK, or four REQUESTs
//! without an answer, start over with a new transaction id. No renewal: the
//! lease is handed over to the booted system's network manager.
//!
//! Received packets are hostile input (anything on the segment can answer
//! a broadcast DISCOVER, with our xid if it sniffs it). [`judge`] looks at
//! one received packet without I/O and never panics, whatever its bytes;
//! the receive loop runs exactly that, and it is the fuzz entry point. It
//! never calls dhcproto's `Message::chaddr()` (which slices by the packet's
//! `hlen` unchecked), reads the fixed header fields it matches on from the
//! raw bytes, and hands dhcproto only the options the client reads.
use super::packet::{self, PacketSocket, Received};
use crate::cmdline::Mac;
use anyhow::{bail, Context, Result};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
/// Retransmission backoff: first wait and cap.
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(8);
/// REQUESTs sent for one offer before going back to DISCOVER.
const MAX_REQUESTS: u32 = 4;

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub server: Ipv4Addr,
    pub lease_seconds: Option<u32>,
}

/// Send and receive IPv4 packets on the boot link; a trait so that the
/// exchange can be tested against a scripted server.
pub trait Transport {
    fn send(&mut self, pkt: &[u8]) -> Result<()>;
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<Received>>;
}

impl Transport for PacketSocket {
    fn send(&mut self, pkt: &[u8]) -> Result<()> {
        self.send_broadcast(pkt)
    }
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<Received>> {
        PacketSocket::recv(self, buf, timeout)
    }
}

/// Who we are and how long we may take.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    pub ifname: &'a str,
    pub mac: Mac,
    /// Sent as option 12 when known.
    pub hostname: Option<&'a str>,
    /// The whole bound, for messages ("within 60s").
    pub bound: Duration,
    pub deadline: Instant,
}

/// Run the exchange on `ifindex` over a packet socket.
pub fn obtain(ifindex: u32, p: &Params) -> Result<Lease> {
    let mut sock = PacketSocket::open(ifindex, CLIENT_PORT)
        .with_context(|| format!("opening the DHCP socket on {}", p.ifname))?;
    Client::new(p).run(&mut sock)
}

fn prefix_of_mask(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    (m.leading_ones() + m.trailing_zeros() == 32).then_some(m.leading_ones() as u8)
}

/// The classful prefix, for a server that sends no subnet mask (as dhclient does).
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// The lease in an OFFER or ACK; `src` is the IPv4 source of the reply,
/// the server's identity when it did not send option 54.
pub fn lease_of(m: &Message, src: Ipv4Addr) -> Result<Lease> {
    let o = m.opts();
    let address = m.yiaddr();
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        bail!("no usable address in the reply (yiaddr {address})");
    }
    let server = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => src,
    };
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_of_mask(*mask)
            .with_context(|| format!("subnet mask {mask} from {server} is not contiguous"))?,
        _ => classful_prefix(address),
    };
    let router = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().copied().find(|r| !r.is_unspecified()),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => {
            d.iter().copied().filter(|d| !d.is_unspecified()).collect()
        }
        _ => vec![],
    };
    let domain = match o.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => {
            let d = d.trim_end_matches('\0').trim();
            (!d.is_empty() && d.bytes().all(|b| b.is_ascii_graphic())).then(|| d.to_string())
        }
        _ => None,
    };
    let lease_seconds = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
        _ => None,
    };
    Ok(Lease {
        address,
        prefix,
        router,
        dns,
        domain,
        server,
        lease_seconds,
    })
}

/// Counts of replies thrown away, by reason, for the timeout message.
#[derive(Debug, Default)]
struct Ignored(BTreeMap<&'static str, u32>);

impl Ignored {
    fn add(&mut self, why: &'static str) {
        tracing::debug!("net: DHCP: ignoring a packet: {why}");
        *self.0.entry(why).or_default() += 1;
    }

    /// ` (ignored 3 packets: 2 bad UDP checksum, 1 for another client)` or ``.
    fn suffix(&self) -> String {
        let n: u32 = self.0.values().sum();
        if n == 0 {
            return String::new();
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!(" (ignored {n} packets: {})", parts.join(", "))
    }
}

struct Client<'a> {
    p: &'a Params<'a>,
    start: Instant,
    discovers: u32,
    requests: u32,
    naks: u32,
    /// The last offer: (address, server), for the error message.
    offered: Option<(Ipv4Addr, Ipv4Addr)>,
    ignored: Ignored,
    buf: Vec<u8>,
}

/// What the receive loop may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Offer,
    /// An ACK or NAK from this server (the one whose offer we requested).
    AckFrom(Ipv4Addr),
}

/// A reply the client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    /// The server and its message (option 56), if any.
    Nak(Ipv4Addr, Option<String>),
}

/// What the client makes of one received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not DHCP to a client port: not counted (the socket filter keeps these out).
    Skip,
    /// Thrown away, and why (counted for the timeout message).
    Ignore(&'static str),
    Reply(Reply),
}

/// Offsets in a BOOTP/DHCP message (RFC 2131 §2).
const OP: usize = 0;
const HTYPE: usize = 1;
const HLEN: usize = 2;
const XID: std::ops::Range<usize> = 4..8;
const CHADDR: std::ops::Range<usize> = 28..44;
/// The fixed part (236 bytes) and the magic cookie.
const FIXED: usize = 236;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREPLY: u8 = 2;
/// ARP hardware type Ethernet, and its address length.
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;
/// The options the client reads in a reply: mask, router, DNS, domain,
/// lease time, message type, server id, message. The others are dropped
/// before dhcproto decodes the message: less decoder exposed to the wire
/// (some of dhcproto's option decoders assert on lengths).
const READ_OPTIONS: [u8; 8] = [1, 3, 6, 15, 51, 53, 54, 56];

/// Is this BOOTP message addressed to Ethernet address `mac`? Read from
/// the raw bytes: htype 1, hlen 6 and the first 6 bytes of chaddr; any
/// other htype/hlen (up to 255 in a forged packet) is not ours.
pub fn chaddr_is(payload: &[u8], mac: Mac) -> bool {
    payload.len() >= CHADDR.end
        && payload[HTYPE] == HTYPE_ETHERNET
        && payload[HLEN] == HLEN_ETHERNET
        && payload[CHADDR.start..CHADDR.start + 6] == mac.0
}

/// The message with only [`READ_OPTIONS`] left in its options field, for
/// dhcproto to decode. `None`: shorter than the fixed part and the cookie,
/// or no DHCP cookie. Option walking stops at the end option, or at an
/// option that runs past the packet (as dhcproto's own decoder does).
fn keep_read_options(payload: &[u8]) -> Option<Vec<u8>> {
    let head = payload.get(..FIXED + COOKIE.len())?;
    if head[FIXED..] != COOKIE {
        return None;
    }
    let mut out = head.to_vec();
    let mut i = head.len();
    while let Some(&code) = payload.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let Some(&len) = payload.get(i + 1) else {
                    break;
                };
                let end = i + 2 + usize::from(len);
                let Some(opt) = payload.get(i..end) else {
                    break;
                };
                if READ_OPTIONS.contains(&code) {
                    out.extend_from_slice(opt);
                }
                i = end;
            }
        }
    }
    out.push(255);
    Some(out)
}

/// Judge one received IPv4 packet for transaction `xid` of the client with
/// Ethernet address `mac`, waiting for `want`. No I/O; never panics,
/// whatever `pkt` holds (this is what the receive loop runs, and the
/// fuzz entry point of the DHCP client).
pub fn judge(pkt: &[u8], verify_udp: bool, xid: u32, mac: Mac, want: Want) -> Verdict {
    let d = match packet::parse(pkt, verify_udp) {
        Ok(d) => d,
        Err(packet::ParseError::UdpChecksum) => return Verdict::Ignore("bad UDP checksum"),
        Err(packet::ParseError::IpChecksum) => return Verdict::Ignore("bad IPv4 checksum"),
        Err(_) => return Verdict::Ignore("malformed"),
    };
    if d.dport != CLIENT_PORT {
        return Verdict::Skip;
    }
    let (src, payload) = (d.src, d.payload);
    if payload.len() < FIXED {
        return Verdict::Ignore("undecodable DHCP");
    }
    if payload[OP] != BOOTREPLY || payload[XID] != xid.to_be_bytes() || !chaddr_is(payload, mac) {
        return Verdict::Ignore("for another transaction");
    }
    let Some(m) = keep_read_options(payload).and_then(|p| Message::from_bytes(&p).ok()) else {
        return Verdict::Ignore("undecodable DHCP");
    };
    let kind = m.opts().msg_type();
    let server = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => src,
    };
    match (want, kind) {
        (Want::Offer, Some(MessageType::Offer)) => match lease_of(&m, src) {
            Ok(l) => Verdict::Reply(Reply::Offer(l)),
            Err(e) => {
                tracing::warn!("net: unusable DHCP offer from {server}: {e:#}");
                Verdict::Ignore("unusable offer")
            }
        },
        (Want::AckFrom(s), Some(MessageType::Ack)) if s == server => match lease_of(&m, src) {
            Ok(l) => Verdict::Reply(Reply::Ack(l)),
            Err(e) => {
                tracing::warn!("net: unusable DHCP ACK from {server}: {e:#}");
                Verdict::Ignore("unusable ACK")
            }
        },
        (Want::AckFrom(s), Some(MessageType::Nak)) if s == server => {
            let why = match m.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(t)) => Some(t.clone()),
                _ => None,
            };
            Verdict::Reply(Reply::Nak(server, why))
        }
        (Want::AckFrom(_), Some(MessageType::Ack | MessageType::Nak)) => {
            Verdict::Ignore("from another server")
        }
        // dnsmasq, e.g., answers retransmitted DISCOVERs late.
        (Want::AckFrom(_), Some(MessageType::Offer)) => Verdict::Ignore("late OFFER"),
        _ => Verdict::Ignore("unexpected message type"),
    }
}

impl<'a> Client<'a> {
    fn new(p: &'a Params<'a>) -> Client<'a> {
        Client {
            p,
            start: Instant::now(),
            discovers: 0,
            requests: 0,
            naks: 0,
            offered: None,
            ignored: Ignored::default(),
            buf: vec![0u8; 4096],
        }
    }

    fn message(&self, xid: u32, kind: MessageType) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, z, z, z, &self.p.mac.0);
        m.set_opcode(Opcode::BootRequest);
        m.set_htype(HType::Eth);
        m.set_flags(Flags::default().set_broadcast());
        m.set_secs(self.start.elapsed().as_secs().min(u64::from(u16::MAX)) as u16);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        let mut cid = vec![1u8]; // hardware type Ethernet, then the MAC
        cid.extend_from_slice(&self.p.mac.0);
        o.insert(DhcpOption::ClientIdentifier(cid));
        o.insert(DhcpOption::MaxMessageSize(1500));
        o.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::DomainName,
            OptionCode::AddressLeaseTime,
            OptionCode::ServerIdentifier,
        ]));
        if let Some(h) = self.p.hostname {
            o.insert(DhcpOption::Hostname(h.to_string()));
        }
        m
    }

    fn send(&self, t: &mut dyn Transport, m: &Message) -> Result<()> {
        let payload = m.to_vec().context("encoding a DHCP message")?;
        let pkt = packet::build(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            m.xid() as u16,
            &payload,
        );
        t.send(&pkt)
            .with_context(|| format!("sending a DHCP message on {}", self.p.ifname))
    }

    fn run(mut self, t: &mut dyn Transport) -> Result<Lease> {
        'restart: loop {
            let xid = random_xid(self.p.mac);
            let offer = self.select(t, xid)?;
            tracing::info!(
                "net: DHCP offer of {}/{} from {}",
                offer.address,
                offer.prefix,
                offer.server
            );
            self.offered = Some((offer.address, offer.server));
            let mut wait = FIRST_WAIT;
            for _ in 0..MAX_REQUESTS {
                if Instant::now() >= self.p.deadline {
                    break;
                }
                let mut m = self.message(xid, MessageType::Request);
                m.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(offer.address));
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(offer.server));
                self.send(t, &m)?;
                self.requests += 1;
                let until = (Instant::now() + wait).min(self.p.deadline);
                wait = (wait * 2).min(MAX_WAIT);
                match self.wait(t, xid, Want::AckFrom(offer.server), until)? {
                    Some(Reply::Ack(mut ack)) => {
                        // Parameters the ACK left out are the offer's.
                        if ack.router.is_none() {
                            ack.router = offer.router;
                        }
                        if ack.dns.is_empty() {
                            ack.dns = offer.dns.clone();
                        }
                        if ack.domain.is_none() {
                            ack.domain = offer.domain.clone();
                        }
                        return Ok(ack);
                    }
                    Some(Reply::Nak(server, why)) => {
                        self.naks += 1;
                        tracing::warn!(
                            "net: DHCP NAK from {server} for {}{}: starting over",
                            offer.address,
                            why.map(|w| format!(" ({w})")).unwrap_or_default()
                        );
                        continue 'restart;
                    }
                    Some(Reply::Offer(_)) | None => {}
                }
            }
            if Instant::now() >= self.p.deadline {
                bail!(
                    "no DHCP ACK on {} ({}) within {}s: offered {} by {}, sent {} REQUESTs{}{}",
                    self.p.ifname,
                    self.p.mac,
                    self.p.bound.as_secs(),
                    offer.address,
                    offer.server,
                    self.requests,
                    self.nak_suffix(),
                    self.ignored.suffix()
                );
            }
            tracing::warn!(
                "net: no DHCP ACK from {} after {MAX_REQUESTS} REQUESTs: starting over",
                offer.server
            );
        }
    }

    fn nak_suffix(&self) -> String {
        match self.naks {
            0 => String::new(),
            n => format!(", {n} NAKs"),
        }
    }

    /// DISCOVER with backoff until an OFFER arrives.
    fn select(&mut self, t: &mut dyn Transport, xid: u32) -> Result<Lease> {
        let mut wait = FIRST_WAIT;
        loop {
            if Instant::now() >= self.p.deadline {
                let earlier = match self.offered {
                    Some((a, s)) => format!(" (earlier: {a} offered by {s}{})", self.nak_suffix()),
                    None => String::new(),
                };
                bail!(
                    "no DHCP offer on {} ({}) within {}s after {} DISCOVERs{earlier}{}",
                    self.p.ifname,
                    self.p.mac,
                    self.p.bound.as_secs(),
                    self.discovers,
                    self.ignored.suffix()
                );
            }
            let m = self.message(xid, MessageType::Discover);
            self.send(t, &m)?;
            self.discovers += 1;
            tracing::debug!(
                "net: DHCP DISCOVER #{} on {}",
                self.discovers,
                self.p.ifname
            );
            let until = (Instant::now() + wait).min(self.p.deadline);
            wait = (wait * 2).min(MAX_WAIT);
            if let Some(Reply::Offer(l)) = self.wait(t, xid, Want::Offer, until)? {
                return Ok(l);
            }
        }
    }

    /// Receive until `until` for a reply of transaction `xid` we want.
    fn wait(
        &mut self,
        t: &mut dyn Transport,
        xid: u32,
        want: Want,
        until: Instant,
    ) -> Result<Option<Reply>> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            let Some(Received { len, verify_udp }) = t
                .recv(&mut self.buf, until - now)
                .with_context(|| format!("receiving DHCP replies on {}", self.p.ifname))?
            else {
                continue;
            };
            let pkt = &self.buf[..len.min(self.buf.len())];
            match judge(pkt, verify_udp, xid, self.p.mac, want) {
                Verdict::Skip => {}
                Verdict::Ignore(why) => self.ignored.add(why),
                Verdict::Reply(r) => return Ok(Some(r)),
            }
        }
    }
}

/// A transaction id: random from the kernel, else time and MAC mixed.
fn random_xid(mac: Mac) -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: `b` is valid for 4 bytes; GRND_NONBLOCK never blocks early in boot.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let m = mac.0;
    t.subsec_nanos()
        ^ (t.as_secs() as u32).rotate_left(16)
        ^ u32::from_be_bytes([m[2], m[3], m[4], m[5]])
        ^ std::process::id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::packet::tests::captured_offer;
    use std::collections::VecDeque;

    const MAC: Mac = Mac([0x02, 0x77, 0, 0, 0, 0x07]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 9, 1);

    #[test]
    fn captured_dnsmasq_offer_decodes() {
        let p = captured_offer();
        let d = packet::parse(&p, true).unwrap();
        let m = Message::from_bytes(d.payload).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0xf5f9_48f0);
        assert!(chaddr_is(d.payload, MAC));
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            lease_of(&m, d.src).unwrap(),
            Lease {
                address: Ipv4Addr::new(10, 77, 9, 120),
                prefix: 24,
                router: Some(SERVER),
                dns: vec![Ipv4Addr::new(10, 77, 9, 53)],
                domain: None,
                server: SERVER,
                lease_seconds: Some(3600),
            }
        );
        // T1 and T2 are there too (options 58/59): 1800 s and 3150 s.
        assert_eq!(
            m.opts().get(OptionCode::Renewal),
            Some(&DhcpOption::Renewal(1800))
        );
        assert_eq!(
            m.opts().get(OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(3150))
        );
    }

    #[test]
    fn option_extraction_edge_cases() {
        let reply = |opts: Vec<DhcpOption>| {
            let z = Ipv4Addr::UNSPECIFIED;
            let mut m = Message::new_with_id(1, z, Ipv4Addr::new(172, 16, 3, 4), z, z, &MAC.0);
            m.set_opcode(Opcode::BootReply);
            for o in opts {
                m.opts_mut().insert(o);
            }
            m
        };
        // No mask: classful (B). No server id: the packet's source.
        let l = lease_of(&reply(vec![]), SERVER).unwrap();
        assert_eq!((l.prefix, l.server, l.router), (16, SERVER, None));
        assert!(l.dns.is_empty() && l.lease_seconds.is_none());
        let l = lease_of(
            &reply(vec![
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)),
                DhcpOption::Router(vec![Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(172, 16, 0, 1)]),
                DhcpOption::DomainNameServer(vec![
                    Ipv4Addr::new(172, 16, 0, 2),
                    Ipv4Addr::new(172, 16, 0, 3),
                ]),
                DhcpOption::DomainName("cluster.example\0".into()),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(172, 16, 0, 9)),
            ]),
            SERVER,
        )
        .unwrap();
        assert_eq!(l.prefix, 20);
        assert_eq!(l.router, Some(Ipv4Addr::new(172, 16, 0, 1)));
        assert_eq!(l.dns.len(), 2);
        assert_eq!(l.domain.as_deref(), Some("cluster.example"));
        assert_eq!(l.server, Ipv4Addr::new(172, 16, 0, 9));
        let e = lease_of(
            &reply(vec![DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0))]),
            SERVER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet mask 255.0.255.0 from 10.77.9.1 is not contiguous"
        );
        let mut m = reply(vec![]);
        m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert!(lease_of(&m, SERVER).is_err());
    }

    /// A change made to a DHCP payload.
    type Forge = Box<dyn Fn(&mut Vec<u8>)>;

    /// A scripted DHCP server: answers what the client sends, in memory.
    struct FakeServer {
        /// How to answer each REQUEST, in turn (true: ACK, false: NAK).
        acks: VecDeque<bool>,
        /// DISCOVERs to ignore before offering.
        silent_discovers: u32,
        sent: Vec<(MessageType, u32, u16)>,
        queue: VecDeque<Vec<u8>>,
        offer_to_another_first: bool,
        corrupt_first_offer: bool,
        /// Forged copies of the first offer (its DHCP payload changed by
        /// each function), queued before the real one.
        forged_first: Vec<Forge>,
    }

    impl FakeServer {
        fn new() -> FakeServer {
            FakeServer {
                acks: VecDeque::from([true]),
                silent_discovers: 0,
                sent: vec![],
                queue: VecDeque::new(),
                offer_to_another_first: false,
                corrupt_first_offer: false,
                forged_first: vec![],
            }
        }

        fn reply(&self, req: &Message, kind: MessageType, chaddr: &[u8]) -> Vec<u8> {
            wrap(&reply_payload(req.xid(), kind, chaddr))
        }
    }

    /// A reply from SERVER to the client port.
    fn wrap(payload: &[u8]) -> Vec<u8> {
        packet::build(
            SERVER,
            Ipv4Addr::BROADCAST,
            SERVER_PORT,
            CLIENT_PORT,
            1,
            payload,
        )
    }

    /// The DHCP message SERVER answers with.
    fn reply_payload(xid: u32, kind: MessageType, chaddr: &[u8]) -> Vec<u8> {
        {
            let z = Ipv4Addr::UNSPECIFIED;
            let yi = if kind == MessageType::Nak {
                z
            } else {
                Ipv4Addr::new(10, 77, 9, 120)
            };
            let mut m = Message::new_with_id(xid, z, yi, z, z, chaddr);
            m.set_opcode(Opcode::BootReply);
            let o = m.opts_mut();
            o.insert(DhcpOption::MessageType(kind));
            o.insert(DhcpOption::ServerIdentifier(SERVER));
            if kind != MessageType::Nak {
                o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
                o.insert(DhcpOption::Router(vec![SERVER]));
                o.insert(DhcpOption::AddressLeaseTime(600));
            }
            if kind == MessageType::Offer {
                o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                    10, 77, 9, 53,
                )]));
            }
            m.to_vec().unwrap()
        }
    }

    impl Transport for FakeServer {
        fn send(&mut self, pkt: &[u8]) -> Result<()> {
            let d = packet::parse(pkt, true).expect("the client sends valid IPv4/UDP");
            assert_eq!((d.sport, d.dport), (68, 67));
            assert_eq!((d.src, d.dst), (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
            let m = Message::from_bytes(d.payload).unwrap();
            assert!(m.flags().broadcast(), "broadcast flag set");
            assert!(chaddr_is(d.payload, MAC));
            let kind = m.opts().msg_type().unwrap();
            self.sent.push((kind, m.xid(), m.secs()));
            match kind {
                MessageType::Discover => {
                    if self.silent_discovers > 0 {
                        self.silent_discovers -= 1;
                        return Ok(());
                    }
                    if self.offer_to_another_first {
                        self.offer_to_another_first = false;
                        let other = self.reply(&m, MessageType::Offer, &[2, 0, 0, 0, 0, 1]);
                        self.queue.push_back(other);
                    }
                    for forge in std::mem::take(&mut self.forged_first) {
                        let mut p = reply_payload(m.xid(), MessageType::Offer, &MAC.0);
                        forge(&mut p);
                        self.queue.push_back(wrap(&p));
                    }
                    let offer = self.reply(&m, MessageType::Offer, &MAC.0);
                    if self.corrupt_first_offer {
                        self.corrupt_first_offer = false;
                        let mut bad = offer.clone();
                        let n = bad.len();
                        bad[n - 20] ^= 0xff; // inside the options
                        self.queue.push_back(bad);
                    }
                    self.queue.push_back(offer);
                }
                MessageType::Request => {
                    assert_eq!(
                        m.opts().get(OptionCode::RequestedIpAddress),
                        Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                            10, 77, 9, 120
                        )))
                    );
                    assert_eq!(
                        m.opts().get(OptionCode::ServerIdentifier),
                        Some(&DhcpOption::ServerIdentifier(SERVER))
                    );
                    let ack = self.acks.pop_front().unwrap_or(true);
                    let kind = if ack {
                        MessageType::Ack
                    } else {
                        MessageType::Nak
                    };
                    let r = self.reply(&m, kind, &MAC.0);
                    self.queue.push_back(r);
                }
                k => panic!("unexpected {k:?}"),
            }
            Ok(())
        }

        fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> Result<Option<Received>> {
            match self.queue.pop_front() {
                Some(p) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(Some(Received {
                        len: p.len(),
                        verify_udp: true,
                    }))
                }
                None => {
                    std::thread::sleep(timeout.min(Duration::from_millis(50)));
                    Ok(None)
                }
            }
        }
    }

    fn params(bound: Duration) -> Params<'static> {
        Params {
            ifname: "eth7",
            mac: MAC,
            hostname: Some("cn1"),
            bound,
            deadline: Instant::now() + bound,
        }
    }

    fn kinds(s: &FakeServer) -> Vec<MessageType> {
        s.sent.iter().map(|(k, _, _)| *k).collect()
    }

    #[test]
    fn discover_offer_request_ack() {
        let mut srv = FakeServer::new();
        srv.offer_to_another_first = true;
        srv.corrupt_first_offer = true;
        let p = params(Duration::from_secs(10));
        let l = Client::new(&p).run(&mut srv).unwrap();
        assert_eq!(l.address, Ipv4Addr::new(10, 77, 9, 120));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(SERVER));
        // The ACK had no DNS: the offer's is kept.
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 77, 9, 53)]);
        assert_eq!(l.lease_seconds, Some(600));
        assert_eq!(kinds(&srv), [MessageType::Discover, MessageType::Request]);
        assert_eq!(srv.sent[0].1, srv.sent[1].1, "one transaction id");
    }

    /// Issue 12: a forged BOOTREPLY with our xid and hlen 255 made
    /// dhcproto's `chaddr()` slice past its 16 bytes: a panic, i.e. nodectl
    /// aborted (release builds are panic=abort) and the node dropped to the
    /// emergency shell. Now it is one ignored packet, and the real offer
    /// after it is taken.
    #[test]
    fn a_forged_reply_with_hlen_255_is_ignored() {
        let mut srv = FakeServer::new();
        srv.forged_first = vec![
            Box::new(|p: &mut Vec<u8>| p[HLEN] = 255),
            Box::new(|p: &mut Vec<u8>| p[HLEN] = 17),
            Box::new(|p: &mut Vec<u8>| p[HTYPE] = 6),
            Box::new(|p: &mut Vec<u8>| p.truncate(FIXED + 2)),
        ];
        let p = params(Duration::from_secs(10));
        let l = Client::new(&p).run(&mut srv).unwrap();
        assert_eq!(l.address, Ipv4Addr::new(10, 77, 9, 120));
        assert_eq!(kinds(&srv), [MessageType::Discover, MessageType::Request]);

        let xid = 0x0102_0304;
        let mut forged = reply_payload(xid, MessageType::Offer, &MAC.0);
        forged[HLEN] = 255;
        assert_eq!(
            judge(&wrap(&forged), true, xid, MAC, Want::Offer),
            Verdict::Ignore("for another transaction")
        );
    }

    /// Every hlen with every htype that matters, our MAC in chaddr and our
    /// xid: only Ethernet (1/6) is ours, nothing panics.
    #[test]
    fn every_hlen_and_htype_is_judged_without_panic() {
        let xid = 0xdead_beef;
        let good = reply_payload(xid, MessageType::Offer, &MAC.0);
        for htype in [0u8, 1, 6, 32, 255] {
            for hlen in 0..=255u8 {
                let mut p = good.clone();
                p[HTYPE] = htype;
                p[HLEN] = hlen;
                let v = judge(&wrap(&p), true, xid, MAC, Want::Offer);
                if (htype, hlen) == (1, 6) {
                    assert!(matches!(v, Verdict::Reply(Reply::Offer(_))), "{v:?}");
                } else {
                    assert_eq!(
                        v,
                        Verdict::Ignore("for another transaction"),
                        "{htype}/{hlen}"
                    );
                }
            }
        }
    }

    /// Truncated packets and messages, options running past the end,
    /// a missing cookie, pseudo-random option bytes: all judged, no panic.
    #[test]
    fn truncated_and_garbled_replies_never_panic() {
        let xid = 0x5555_aaaa;
        let good = reply_payload(xid, MessageType::Offer, &MAC.0);
        let pkt = wrap(&good);
        // The IPv4 packet cut anywhere.
        for n in 0..pkt.len() {
            assert!(matches!(
                judge(&pkt[..n], true, xid, MAC, Want::Offer),
                Verdict::Ignore(_)
            ));
        }
        // The DHCP message cut anywhere (inside a valid UDP datagram).
        for n in 0..=good.len() {
            let v = judge(&wrap(&good[..n]), true, xid, MAC, Want::Offer);
            if n < FIXED + COOKIE.len() {
                assert!(matches!(v, Verdict::Ignore(_)), "{n}: {v:?}");
            }
        }
        // No DHCP cookie: BOOTP, not for us.
        let mut p = good.clone();
        p[FIXED] = 0;
        assert_eq!(
            judge(&wrap(&p), true, xid, MAC, Want::Offer),
            Verdict::Ignore("undecodable DHCP")
        );
        // Options of every code with every awkward length, then random bytes.
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let head = &good[..FIXED + COOKIE.len()];
        for code in 1..=254u8 {
            for len in [0u8, 1, 2, 3, 4, 5, 7, 8, 9, 255] {
                let mut p = head.to_vec();
                p.extend_from_slice(&[53, 1, 2, code, len]);
                p.extend((0..len).map(|_| next() as u8));
                p.push(255);
                let _ = judge(&wrap(&p), true, xid, MAC, Want::Offer);
                let _ = judge(&wrap(&p), true, xid, MAC, Want::AckFrom(SERVER));
            }
        }
        for _ in 0..3000 {
            let mut p = head.to_vec();
            let n = next() % 300;
            p.extend((0..n).map(|_| next() as u8));
            let _ = judge(&wrap(&p), true, xid, MAC, Want::Offer);
            let _ = judge(&wrap(&p), false, xid, MAC, Want::AckFrom(SERVER));
        }
    }

    #[test]
    fn only_the_options_read_reach_dhcproto() {
        let xid = 7;
        let good = reply_payload(xid, MessageType::Offer, &MAC.0);
        let kept = keep_read_options(&good).unwrap();
        let m = Message::from_bytes(&kept).unwrap();
        let codes: Vec<u8> = m.opts().iter().map(|(c, _)| u8::from(*c)).collect();
        assert_eq!(codes, [1, 3, 6, 51, 53, 54]);
        // An option running past the end stops the walk; what came before stays.
        let mut p = good[..FIXED + COOKIE.len()].to_vec();
        p.extend_from_slice(&[0, 0, 53, 1, 2, 81, 200, 1, 2]);
        let kept = keep_read_options(&p).unwrap();
        assert_eq!(&kept[FIXED + COOKIE.len()..], [53, 1, 2, 255]);
        assert_eq!(keep_read_options(&good[..FIXED + 3]), None);
    }

    #[test]
    fn nak_restarts_with_a_new_transaction() {
        let mut srv = FakeServer::new();
        srv.acks = VecDeque::from([false, true]);
        let p = params(Duration::from_secs(10));
        let l = Client::new(&p).run(&mut srv).unwrap();
        assert_eq!(l.address, Ipv4Addr::new(10, 77, 9, 120));
        assert_eq!(
            kinds(&srv),
            [
                MessageType::Discover,
                MessageType::Request,
                MessageType::Discover,
                MessageType::Request
            ]
        );
        assert_ne!(srv.sent[0].1, srv.sent[2].1, "a new xid after the NAK");
    }

    #[test]
    fn retransmits_with_backoff_then_times_out() {
        let mut srv = FakeServer::new();
        srv.silent_discovers = u32::MAX;
        let t = Instant::now();
        let p = params(Duration::from_millis(3500));
        let e = Client::new(&p).run(&mut srv).unwrap_err();
        let took = t.elapsed();
        // Sent at 0, 1, 3 s (waits 1, 2, then 4 cut short by the bound).
        assert_eq!(kinds(&srv), [MessageType::Discover; 3]);
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_millis(4500),
            "{took:?}"
        );
        assert_eq!(
            e.to_string(),
            "no DHCP offer on eth7 (02:77:00:00:00:07) within 3s after 3 DISCOVERs"
        );
        // `secs` counts up from the start of the exchange.
        assert_eq!(srv.sent[0].2, 0);
        assert_eq!(srv.sent[2].2, 3);
    }

    #[test]
    fn ignored_replies_are_counted_in_the_error() {
        let mut ign = Ignored::default();
        assert_eq!(ign.suffix(), "");
        ign.add("bad UDP checksum");
        ign.add("bad UDP checksum");
        ign.add("for another transaction");
        assert_eq!(
            ign.suffix(),
            " (ignored 3 packets: 2 bad UDP checksum, 1 for another transaction)"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of_mask(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful_prefix(Ipv4Addr::new(10, 0, 2, 15)), 8);
        assert_eq!(classful_prefix(Ipv4Addr::new(192, 168, 1, 2)), 24);
    }
}
