//! IPv4 + UDP framing for the DHCP client (RFC 791, RFC 768), built and
//! checked here, and the AF_PACKET socket the frames travel on.
//!
//! Why a packet socket: before the interface has an address a UDP socket
//! cannot be relied on (no source address, broadcast replies to an address
//! we do not have yet, rp_filter may drop them). dhclient and systemd-networkd
//! do the same. The socket is `SOCK_DGRAM`: the kernel adds and strips the
//! Ethernet header, we see IPv4 packets.
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub const IPPROTO_UDP: u8 = 17;
const ETH_P_IP: u16 = 0x0800;

/// Why a received frame was not a usable UDP datagram. Callers count these
/// (a DHCP timeout says how many replies were thrown away, and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated packet")]
    Truncated,
    #[error("not IPv4")]
    NotIpv4,
    #[error("bad IPv4 header length")]
    HeaderLength,
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("not UDP")]
    NotUdp,
    #[error("bad UDP length")]
    UdpLength,
    #[error("bad UDP checksum")]
    UdpChecksum,
}

/// A parsed UDP datagram, borrowing its payload from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// Add 16-bit big-endian words of `data` to a running one's-complement sum
/// (an odd trailing byte is padded with zero, RFC 1071).
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u32::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Fold the carries and complement: the Internet checksum of what was summed.
fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data` (0 when `data` already carries a valid one).
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// The UDP checksum of `udp` (header + payload, with its checksum field as
/// it is) under the IPv4 pseudo header.
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += u32::from(IPPROTO_UDP) + udp.len() as u32;
    fold(sum16(udp, acc))
}

/// An IPv4 packet carrying one UDP datagram, both checksums filled in.
/// TTL 64, TOS "low delay" as dhclient sends, no options, not fragmented.
pub fn build(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ident: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    assert!(total <= usize::from(u16::MAX), "UDP payload too large");
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5 words; TOS
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // flags, fragment offset
    p.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]); // TTL, protocol, checksum
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // 0 means "no checksum" in UDP over IPv4: a computed 0 is sent as 0xffff.
    let c = match udp_checksum(src, dst, &p[20..]) {
        0 => 0xffff,
        c => c,
    };
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

/// Parse an IPv4 packet holding a UDP datagram, checking lengths and the
/// header checksum, and the UDP checksum when `verify_udp` (it is not filled
/// in yet when the sender's NIC offloads it and the frame never left the
/// host, e.g. over a veth pair; the packet socket says so). Trailing bytes
/// past the IPv4 total length (Ethernet padding) are ignored.
pub fn parse(pkt: &[u8], verify_udp: bool) -> Result<Datagram<'_>, ParseError> {
    if pkt.len() < 20 {
        return Err(ParseError::Truncated);
    }
    if pkt[0] >> 4 != 4 {
        return Err(ParseError::NotIpv4);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl < 20 || total < ihl {
        return Err(ParseError::HeaderLength);
    }
    if pkt.len() < total {
        return Err(ParseError::Truncated);
    }
    if checksum(&pkt[..ihl]) != 0 {
        return Err(ParseError::IpChecksum);
    }
    // More-fragments flag or a non-zero offset.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
        return Err(ParseError::Fragment);
    }
    if pkt[9] != IPPROTO_UDP {
        return Err(ParseError::NotUdp);
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
    let udp = &pkt[ihl..total];
    if udp.len() < 8 {
        return Err(ParseError::UdpLength);
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return Err(ParseError::UdpLength);
    }
    let udp = &udp[..ulen];
    let sum = u16::from_be_bytes([udp[6], udp[7]]);
    if verify_udp && sum != 0 && udp_checksum(src, dst, udp) != 0 {
        return Err(ParseError::UdpChecksum);
    }
    Ok(Datagram {
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[8..],
    })
}

/// One frame as received: its length in the caller's buffer, and whether its
/// UDP checksum can be checked (see [`parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub verify_udp: bool,
}

/// A packet socket bound to one interface, receiving only IPv4/UDP to `port`.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

/// Classic BPF: accept IPv4 UDP datagrams, first fragment, to `port`
/// (the frame starts at the IPv4 header on a SOCK_DGRAM packet socket).
fn udp_port_filter(port: u16) -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(BPF_LD_B_ABS, 0, 0, 9),                 // A = protocol
        op(BPF_JEQ, 0, 6, u32::from(IPPROTO_UDP)), // UDP? else drop
        op(BPF_LD_H_ABS, 0, 0, 6),                 // A = flags, fragment offset
        op(BPF_JSET, 4, 0, 0x1fff),                // a later fragment: drop
        op(BPF_LDX_MSH, 0, 0, 0),                  // X = IPv4 header length
        op(BPF_LD_H_IND, 0, 0, 2),                 // A = UDP destination port
        op(BPF_JEQ, 0, 1, u32::from(port)),        // ours? else drop
        op(BPF_RET, 0, 0, u32::from(u16::MAX)),    // accept the whole frame
        op(BPF_RET, 0, 0, 0),                      // drop
    ]
}

const BPF_LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const BPF_LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const BPF_LD_H_IND: u16 = 0x48; // BPF_LD | BPF_H | BPF_IND
const BPF_LDX_MSH: u16 = 0xb1; // BPF_LDX | BPF_B | BPF_MSH: X = 4*([k]&0xf)
const BPF_JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET: u16 = 0x06; // BPF_RET | BPF_K

fn os_err(what: &str) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(what.to_string())
}

impl PacketSocket {
    /// Open, filter to UDP `port`, bind to `ifindex`, ask for checksum status.
    pub fn open(ifindex: u32, port: u16) -> Result<PacketSocket> {
        let proto = i32::from(ETH_P_IP.to_be());
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if fd < 0 {
            return Err(os_err("opening an AF_PACKET socket (needs CAP_NET_RAW)"));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = PacketSocket {
            fd,
            ifindex: i32::try_from(ifindex).context("interface index out of range")?,
        };
        let filter = udp_port_filter(port);
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        sock.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
            .context("attaching the DHCP socket filter")?;
        let one: libc::c_int = 1;
        sock.setsockopt(libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)
            .context("setting PACKET_AUXDATA")?;
        let sa = sock.addr(None);
        // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err("binding the packet socket to the interface"));
        }
        // Frames of any interface may have queued between socket() and bind().
        let mut scratch = [0u8; 64];
        // SAFETY: `scratch` is valid for its length; MSG_DONTWAIT never blocks.
        while unsafe {
            libc::recv(
                sock.fd.as_raw_fd(),
                scratch.as_mut_ptr().cast(),
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        } >= 0
        {}
        Ok(sock)
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, v: &T) -> Result<()> {
        // SAFETY: `v` points to a live T of the size passed.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (v as *const T).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(os_err("setsockopt"));
        }
        Ok(())
    }

    fn addr(&self, dest: Option<[u8; 6]>) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_IP.to_be();
        sa.sll_ifindex = self.ifindex;
        if let Some(mac) = dest {
            sa.sll_halen = 6;
            sa.sll_addr[..6].copy_from_slice(&mac);
        }
        sa
    }

    /// Send an IPv4 packet to the Ethernet broadcast address.
    pub fn send_broadcast(&self, pkt: &[u8]) -> Result<()> {
        let sa = self.addr(Some([0xff; 6]));
        // SAFETY: `pkt` and `sa` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(os_err("sending on the packet socket"));
        }
        Ok(())
    }

    /// Wait up to `timeout` for one incoming frame. `Ok(None)`: nothing came.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<Received>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up so that a sub-millisecond remainder still waits.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(anyhow::Error::new(e).context("waiting on the packet socket"));
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: all-zero is valid for these plain-data structs.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        // u64 alignment for the control buffer, as CMSG_* expect.
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` refers to a live buffer of the stated size.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::Interrupted
            {
                return Ok(None);
            }
            return Err(anyhow::Error::new(e).context("reading from the packet socket"));
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        let mut verify_udp = true;
        // SAFETY: walking the control messages the kernel just wrote into `msg`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux: libc::tpacket_auxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    // Checksum left to an offload that never ran (local
                    // sender), or already validated by the NIC.
                    if aux.tp_status & (libc::TP_STATUS_CSUMNOTREADY | libc::TP_STATUS_CSUM_VALID)
                        != 0
                    {
                        verify_udp = false;
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some(Received {
            len: n as usize,
            verify_udp,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DHCPOFFER as dnsmasq 2.90 sent it (captured with AF_PACKET in a
    /// network namespace, checksum offload off): 10.77.9.1:67 →
    /// 255.255.255.255:68, yiaddr 10.77.9.120, xid 0xf5f948f0, chaddr
    /// 02:77:00:00:00:07, mask /24, router 10.77.9.1, DNS 10.77.9.53, lease 1h.
    pub(crate) fn captured_offer() -> Vec<u8> {
        let head = "45c00148df230000401186740a4d0901ffffffff00430044013417dc02010600\
                    f5f948f000008000000000000a4d09780a4d090100000000027700000007";
        let options = "6382536335010236040a4d0901330400000e103a04000007083b0400000c4e01\
                       04ffffff001c040a4d09ff06040a4d093503040a4d0901ff0000000000000000";
        let mut p = hex(head);
        p.resize(0x108, 0); // sname and file are empty
        p.extend_from_slice(&hex(options));
        p
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn captured_offer_checksums_and_fields() {
        let p = captured_offer();
        assert_eq!(p.len(), 328);
        // Checksums as dnsmasq's kernel computed them.
        assert_eq!(u16::from_be_bytes([p[10], p[11]]), 0x8674);
        assert_eq!(u16::from_be_bytes([p[26], p[27]]), 0x17dc);
        assert_eq!(checksum(&p[..20]), 0);
        let d = parse(&p, true).unwrap();
        assert_eq!(d.src, Ipv4Addr::new(10, 77, 9, 1));
        assert_eq!(d.dst, Ipv4Addr::BROADCAST);
        assert_eq!((d.sport, d.dport), (67, 68));
        assert_eq!(d.payload.len(), 300);
        assert_eq!(d.payload[0], 2); // BOOTREPLY
    }

    #[test]
    fn build_reproduces_the_captured_checksums() {
        let p = captured_offer();
        let d = parse(&p, true).unwrap();
        let mut again = build(d.src, d.dst, d.sport, d.dport, 0xdf23, d.payload);
        // Same header but TOS (0xc0 there) and the resulting checksum.
        assert_eq!(again[1], 0x10);
        again[1] = 0xc0;
        again[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&again[..20]);
        again[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(again, p);
    }

    #[test]
    fn build_parse_round_trip_and_odd_payload() {
        let src = Ipv4Addr::UNSPECIFIED;
        let dst = Ipv4Addr::BROADCAST;
        let p = build(src, dst, 68, 67, 7, b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(udp_checksum(src, dst, &p[20..]), 0);
        let d = parse(&p, true).unwrap();
        assert_eq!(
            d,
            Datagram {
                src,
                dst,
                sport: 68,
                dport: 67,
                payload: b"hello"
            }
        );
        // Ethernet padding after the IPv4 packet is ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 17]);
        assert_eq!(parse(&padded, true).unwrap().payload, b"hello");
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A classic header with a known checksum (0xb861).
        let h = hex("450000730000400040110000c0a80001c0a800c7");
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn corrupt_packets_are_refused() {
        let good = captured_offer();
        let flip = |i: usize| {
            let mut p = good.clone();
            p[i] ^= 0x01;
            p
        };
        assert_eq!(parse(&flip(15), true), Err(ParseError::IpChecksum));
        // A payload bit: caught by the UDP checksum, unless it is not ready.
        assert_eq!(parse(&flip(300), true), Err(ParseError::UdpChecksum));
        assert!(parse(&flip(300), false).is_ok());
        // A zero UDP checksum means "none".
        let mut p = flip(300);
        p[26..28].copy_from_slice(&[0, 0]);
        assert!(parse(&p, true).is_ok());
        assert_eq!(parse(&good[..100], true), Err(ParseError::Truncated));
        assert_eq!(parse(&good[..10], true), Err(ParseError::Truncated));
        let mut v6 = good.clone();
        v6[0] = 0x60;
        assert_eq!(parse(&v6, true), Err(ParseError::NotIpv4));
        let tcp = build(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 1, 2, 0, b"x");
        let mut tcp = tcp;
        tcp[9] = 6;
        tcp[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&tcp[..20]);
        tcp[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&tcp, true), Err(ParseError::NotUdp));
        let mut frag = good.clone();
        frag[6] = 0x20; // more fragments
        frag[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&frag, true), Err(ParseError::Fragment));
        let mut ulen = good.clone();
        ulen[24..26].copy_from_slice(&400u16.to_be_bytes());
        assert_eq!(parse(&ulen, true), Err(ParseError::UdpLength));
    }

    /// Run a classic BPF program of the opcodes [`udp_port_filter`] uses.
    fn run_bpf(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| u32::from(*pkt.get(i).unwrap_or(&0));
        let half = |i: usize| (byte(i) << 8) | byte(i + 1);
        loop {
            let ins = prog[pc];
            let k = ins.k as usize;
            pc += 1;
            match ins.code {
                BPF_LD_B_ABS => a = byte(k),
                BPF_LD_H_ABS => a = half(k),
                BPF_LD_H_IND => a = half(x as usize + k),
                BPF_LDX_MSH => x = 4 * (byte(k) & 0xf),
                BPF_JEQ | BPF_JSET => {
                    let hit = if ins.code == BPF_JEQ {
                        a == ins.k
                    } else {
                        a & ins.k != 0
                    };
                    pc += usize::from(if hit { ins.jt } else { ins.jf });
                }
                BPF_RET => return ins.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn filter_accepts_only_udp_to_the_port() {
        let f = udp_port_filter(68);
        let offer = captured_offer();
        assert_eq!(run_bpf(&f, &offer), 65535);
        let to_server = build(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, 1, b"x");
        assert_eq!(run_bpf(&f, &to_server), 0);
        let mut tcp = offer.clone();
        tcp[9] = 6;
        assert_eq!(run_bpf(&f, &tcp), 0);
        let mut frag = offer.clone();
        frag[7] = 0x10; // offset 16 * 8
        assert_eq!(run_bpf(&f, &frag), 0);
        // A header with options (IHL 6): the port is found after them.
        let mut opts = offer[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        opts.extend_from_slice(&offer[20..]);
        assert_eq!(run_bpf(&f, &opts), 65535);
        // Every jump stays inside the program.
        for (i, ins) in f.iter().enumerate() {
            assert!(i + usize::from(ins.jt.max(ins.jf)) < f.len(), "{i}");
        }
    }
}
