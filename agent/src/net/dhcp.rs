//! DHCPv4 client over an AF_PACKET socket (like dhclient and systemd-networkd:
//! a UDP socket cannot be trusted before the interface has an address, and
//! rp_filter may drop the replies). The DHCP message itself is encoded and
//! decoded by `dhcproto`; the IPv4 and UDP headers are built here.
use anyhow::{bail, Context, Result};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_P_IP: u16 = 0x0800;

/// What the server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_seconds: Option<u32>,
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 + UDP headers around `payload`, from 0.0.0.0:68 to 255.255.255.255:67.
pub fn ip_udp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // v4, IHL 5; TOS low delay
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags/frag
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (later)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo header.
    let mut pseudo = 0u32;
    for w in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    pseudo += 17 + udp_len as u32;
    let mut uc = checksum(&p[20..], pseudo);
    if uc == 0 {
        uc = 0xffff;
    }
    p[26..28].copy_from_slice(&uc.to_be_bytes());
    p
}

/// The UDP payload of an IPv4 packet to `dport`, if that is what it is.
pub fn udp_payload(pkt: &[u8], dport: u16) -> Option<&[u8]> {
    if pkt.len() < 28 || pkt[0] >> 4 != 4 || pkt[9] != 17 {
        return None;
    }
    let ihl = ((pkt[0] & 0x0f) as usize) * 4;
    let total = (u16::from_be_bytes([pkt[2], pkt[3]]) as usize).min(pkt.len());
    if ihl < 20 || total < ihl + 8 {
        return None;
    }
    let udp = &pkt[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != dport {
        return None;
    }
    let ulen = (u16::from_be_bytes([udp[4], udp[5]]) as usize).clamp(8, udp.len());
    Some(&udp[8..ulen])
}

struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifindex: u32) -> Result<PacketSocket> {
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                (ETH_P_IP.to_be()) as i32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("opening an AF_PACKET socket (DHCP)");
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_IP.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: sa is a valid sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("binding the DHCP packet socket");
        }
        Ok(PacketSocket {
            fd,
            ifindex: ifindex as i32,
        })
    }

    fn send_broadcast(&self, pkt: &[u8]) -> Result<()> {
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_IP.to_be();
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: pkt and sa are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a DHCP packet");
        }
        Ok(())
    }

    /// Wait up to `timeout` for one packet.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e).context("waiting for a DHCP reply");
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: buf valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("reading a DHCP reply");
        }
        Ok(Some(n as usize))
    }
}

fn request_msg(mac: &[u8; 6], xid: u32, kind: MessageType, hostname: Option<&str>) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, mac);
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::AddressLeaseTime,
    ]));
    let mut cid = vec![1u8];
    cid.extend_from_slice(mac);
    o.insert(DhcpOption::ClientIdentifier(cid));
    if let Some(h) = hostname {
        o.insert(DhcpOption::Hostname(h.to_string()));
    }
    m
}

/// Pull the lease out of an OFFER/ACK.
pub fn lease_of(m: &Message) -> Option<Lease> {
    let o = m.opts();
    let server = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).leading_ones() as u8,
        _ => 24,
    };
    let router = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => vec![],
    };
    let lease_seconds = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
        _ => None,
    };
    let address = m.yiaddr();
    if address.is_unspecified() {
        return None;
    }
    Some(Lease {
        address,
        prefix,
        router,
        dns,
        server,
        lease_seconds,
    })
}

/// DISCOVER → OFFER → REQUEST → ACK on `ifindex`, within `deadline`.
pub fn obtain(
    ifindex: u32,
    ifname: &str,
    mac: [u8; 6],
    hostname: Option<&str>,
    deadline: Instant,
) -> Result<Lease> {
    let sock = PacketSocket::open(ifindex)?;
    let macs = crate::cmdline::Mac(mac);
    let mut buf = vec![0u8; 2048];
    let mut discovers = 0u32;
    let mut wait = Duration::from_secs(1);
    'restart: loop {
        let xid: u32 = rand_xid();
        // DISCOVER until an OFFER arrives.
        let offer = loop {
            if Instant::now() >= deadline {
                bail!("no DHCP offer on {ifname} ({macs}) after {discovers} DISCOVERs");
            }
            let m = request_msg(&mac, xid, MessageType::Discover, hostname);
            sock.send_broadcast(&ip_udp_packet(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                68,
                67,
                &m.to_vec()?,
            ))?;
            discovers += 1;
            let until = (Instant::now() + wait).min(deadline);
            wait = (wait * 2).min(Duration::from_secs(8));
            if let Some(o) = wait_reply(&sock, &mut buf, xid, until, &[MessageType::Offer])? {
                break o;
            }
        };
        let lease = lease_of(&offer).context("DHCP offer without an address")?;
        tracing::info!("net: DHCP offer of {} from {}", lease.address, lease.server);
        // REQUEST it (a few tries), then ACK or NAK.
        for _ in 0..4 {
            if Instant::now() >= deadline {
                break;
            }
            let mut m = request_msg(&mac, xid, MessageType::Request, hostname);
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(lease.address));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(lease.server));
            sock.send_broadcast(&ip_udp_packet(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                68,
                67,
                &m.to_vec()?,
            ))?;
            let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
            match wait_reply(
                &sock,
                &mut buf,
                xid,
                until,
                &[MessageType::Ack, MessageType::Nak],
            )? {
                Some(r) if r.opts().msg_type() == Some(MessageType::Ack) => {
                    return lease_of(&r).context("DHCP ACK without an address");
                }
                Some(_) => {
                    tracing::warn!(
                        "net: DHCP NAK from {} for {}; starting over",
                        lease.server,
                        lease.address
                    );
                    continue 'restart;
                }
                None => {}
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no DHCP ACK on {ifname} ({macs}) for {} from {}",
                lease.address,
                lease.server
            );
        }
    }
}

fn wait_reply(
    sock: &PacketSocket,
    buf: &mut [u8],
    xid: u32,
    until: Instant,
    want: &[MessageType],
) -> Result<Option<Message>> {
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(None);
        }
        let Some(n) = sock.recv(buf, until - now)? else {
            continue;
        };
        let Some(payload) = udp_payload(&buf[..n], 68) else {
            continue;
        };
        let Ok(m) = Message::from_bytes(payload) else {
            continue;
        };
        if m.xid() != xid || m.opcode() != Opcode::BootReply {
            continue;
        }
        if let Some(t) = m.opts().msg_type() {
            if want.contains(&t) {
                return Ok(Some(m));
            }
        }
    }
}

fn rand_xid() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_checksum_is_valid() {
        let p = ip_udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        // A correct header sums to zero (one's complement).
        assert_eq!(checksum(&p[..20], 0), 0);
        assert_eq!(&p[20..22], &68u16.to_be_bytes());
        assert_eq!(udp_payload(&p, 67), Some(&b"hello"[..]));
        assert_eq!(udp_payload(&p, 68), None);
    }

    #[test]
    fn known_checksum() {
        // Classic example header (RFC 1071 style): checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h, 0), 0xb861);
    }

    #[test]
    fn offer_round_trip() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut m = request_msg(&mac, 42, MessageType::Offer, None);
        m.set_opcode(Opcode::BootReply);
        m.set_yiaddr(Ipv4Addr::new(10, 0, 2, 15));
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        let pkt = ip_udp_packet(
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::BROADCAST,
            67,
            68,
            &m.to_vec().unwrap(),
        );
        let back = Message::from_bytes(udp_payload(&pkt, 68).unwrap()).unwrap();
        assert_eq!(back.xid(), 42);
        assert_eq!(
            lease_of(&back),
            Some(Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                server: Ipv4Addr::new(10, 0, 2, 2),
                lease_seconds: Some(86400),
            })
        );
    }
}
