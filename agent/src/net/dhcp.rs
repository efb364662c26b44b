//! A DHCPv4 client for the initramfs (RFC 2131): DISCOVER → OFFER →
//! REQUEST → ACK, broadcast, on a packet socket (see [`super::packet`]).
//! The DHCP message itself is encoded and decoded by `dhcproto`.
//!
//! Retransmission: 1, 2, 4, 8, 8, … seconds, for DISCOVERs and REQUESTs
//! alike, everything bounded by one deadline. A NAK, or four REQUESTs
//! without an answer, start over with a new transaction id. No renewal: the
//! lease is handed over to the booted system's network manager.
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
enum Want {
    Offer,
    AckFrom(Ipv4Addr),
}

enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak(Ipv4Addr, Option<String>),
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
                match self.wait(t, xid, &Want::AckFrom(offer.server), until)? {
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
            if let Some(Reply::Offer(l)) = self.wait(t, xid, &Want::Offer, until)? {
                return Ok(l);
            }
        }
    }

    /// Receive until `until` for a reply of transaction `xid` we want.
    fn wait(
        &mut self,
        t: &mut dyn Transport,
        xid: u32,
        want: &Want,
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
            let d = match packet::parse(&self.buf[..len.min(self.buf.len())], verify_udp) {
                Ok(d) => d,
                Err(packet::ParseError::UdpChecksum) => {
                    self.ignored.add("bad UDP checksum");
                    continue;
                }
                Err(packet::ParseError::IpChecksum) => {
                    self.ignored.add("bad IPv4 checksum");
                    continue;
                }
                Err(_) => {
                    self.ignored.add("malformed");
                    continue;
                }
            };
            if d.dport != CLIENT_PORT {
                continue; // not DHCP to a client (the socket filter keeps these out)
            }
            let (src, payload) = (d.src, d.payload);
            let Ok(m) = Message::from_bytes(payload) else {
                self.ignored.add("undecodable DHCP");
                continue;
            };
            if m.opcode() != Opcode::BootReply
                || m.xid() != xid
                || m.chaddr().get(..6) != Some(&self.p.mac.0[..])
            {
                self.ignored.add("for another transaction");
                continue;
            }
            let kind = m.opts().msg_type();
            let server = match m.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => src,
            };
            match (want, kind) {
                (Want::Offer, Some(MessageType::Offer)) => match lease_of(&m, src) {
                    Ok(l) => return Ok(Some(Reply::Offer(l))),
                    Err(e) => {
                        tracing::warn!("net: unusable DHCP offer from {server}: {e:#}");
                        self.ignored.add("unusable offer");
                    }
                },
                (Want::AckFrom(s), Some(MessageType::Ack)) if *s == server => {
                    match lease_of(&m, src) {
                        Ok(l) => return Ok(Some(Reply::Ack(l))),
                        Err(e) => {
                            tracing::warn!("net: unusable DHCP ACK from {server}: {e:#}");
                            self.ignored.add("unusable ACK");
                        }
                    }
                }
                (Want::AckFrom(s), Some(MessageType::Nak)) if *s == server => {
                    let why = match m.opts().get(OptionCode::Message) {
                        Some(DhcpOption::Message(t)) => Some(t.clone()),
                        _ => None,
                    };
                    return Ok(Some(Reply::Nak(server, why)));
                }
                (Want::AckFrom(_), Some(MessageType::Ack | MessageType::Nak)) => {
                    self.ignored.add("from another server");
                }
                (Want::AckFrom(_), Some(MessageType::Offer)) => {
                    // dnsmasq, e.g., answers retransmitted DISCOVERs late.
                    self.ignored.add("late OFFER");
                }
                _ => self.ignored.add("unexpected message type"),
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
        assert_eq!(&m.chaddr()[..6], &MAC.0);
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
            }
        }

        fn reply(&self, req: &Message, kind: MessageType, chaddr: &[u8]) -> Vec<u8> {
            let z = Ipv4Addr::UNSPECIFIED;
            let yi = if kind == MessageType::Nak {
                z
            } else {
                Ipv4Addr::new(10, 77, 9, 120)
            };
            let mut m = Message::new_with_id(req.xid(), z, yi, z, z, chaddr);
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
            packet::build(
                SERVER,
                Ipv4Addr::BROADCAST,
                SERVER_PORT,
                CLIENT_PORT,
                1,
                &m.to_vec().unwrap(),
            )
        }
    }

    impl Transport for FakeServer {
        fn send(&mut self, pkt: &[u8]) -> Result<()> {
            let d = packet::parse(pkt, true).expect("the client sends valid IPv4/UDP");
            assert_eq!((d.sport, d.dport), (68, 67));
            assert_eq!((d.src, d.dst), (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
            let m = Message::from_bytes(d.payload).unwrap();
            assert!(m.flags().broadcast(), "broadcast flag set");
            assert_eq!(&m.chaddr()[..6], &MAC.0);
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
