//! Minimal rtnetlink (NETLINK_ROUTE) client: list links, set a link up, add an
//! IPv4 address and a default route. Synchronous, no runtime.
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
pub const IFF_UP: u32 = 1;
pub const IFF_LOOPBACK: u32 = 8;
pub const IFF_LOWER_UP: u32 = 0x10000;
const ARPHRD_ETHER: u16 = 1;

/// A network link as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub flags: u32,
    pub ether: bool,
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Iterate (type, payload) over rtattrs.
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a NETLINK_ROUTE socket");
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 1 })
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> Result<u32> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: a zeroed sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: msg and sa are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a netlink request");
        }
        Ok(self.seq)
    }

    /// Receive messages for `seq` until DONE or an ACK/error; calls `f` on each data message.
    fn recv(&mut self, seq: u32, mut f: impl FnMut(u16, &[u8])) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error()).context("reading a netlink reply");
            }
            let mut b = &buf[..n as usize];
            while b.len() >= 16 {
                let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
                if len < 16 || len > b.len() {
                    bail!("malformed netlink message");
                }
                let payload = &b[16..len];
                if mseq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR => {
                            let code = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                            if code == 0 {
                                return Ok(());
                            }
                            return Err(std::io::Error::from_raw_os_error(-code).into());
                        }
                        _ => f(kind, payload),
                    }
                }
                b = &b[align4(len).min(b.len())..];
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let body = [0u8; 16]; // ifinfomsg, AF_UNSPEC
        let seq = self.send(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
        let mut links = Vec::new();
        self.recv(seq, |kind, p| {
            if kind != RTM_NEWLINK || p.len() < 16 {
                return;
            }
            let ltype = u16::from_ne_bytes([p[2], p[3]]);
            let index = i32::from_ne_bytes(p[4..8].try_into().unwrap()) as u32;
            let flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
            let mut link = Link {
                index,
                name: String::new(),
                mac: None,
                flags,
                ether: ltype == ARPHRD_ETHER,
            };
            for (k, v) in attrs(&p[16..]) {
                match k {
                    IFLA_IFNAME => {
                        link.name =
                            String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(v))
                                .into_owned()
                    }
                    IFLA_ADDRESS if v.len() == 6 => link.mac = Some(v.try_into().unwrap()),
                    _ => {}
                }
            }
            links.push(link);
        })
        .context("listing network links (RTM_GETLINK)")?;
        Ok(links)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        body[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        body[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        let seq = self.send(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &body)?;
        self.recv(seq, |_, _| {})
    }

    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut body = vec![libc::AF_INET as u8, prefix, 0, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        push_attr(&mut body, IFA_LOCAL, &addr.octets());
        push_attr(&mut body, IFA_ADDRESS, &addr.octets());
        if prefix < 31 {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let brd = Ipv4Addr::from(u32::from(addr) | !mask);
            push_attr(&mut body, IFA_BROADCAST, &brd.octets());
        }
        let seq = self.send(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &body,
        )?;
        self.recv(seq, |_, _| {})
    }

    pub fn add_default_route(&mut self, index: u32, gw: Ipv4Addr) -> Result<()> {
        // rtmsg: family, dst_len, src_len, tos, table(main), protocol(boot), scope(universe), type(unicast), flags
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1];
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut body, RTA_GATEWAY, &gw.octets());
        push_attr(&mut body, RTA_OIF, &index.to_ne_bytes());
        let seq = self.send(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &body,
        )?;
        self.recv(seq, |_, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip() {
        let mut b = Vec::new();
        push_attr(&mut b, 3, b"eth0\0");
        push_attr(&mut b, 1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(b.len() % 4, 0);
        let a = attrs(&b);
        assert_eq!(
            a,
            vec![(3u16, &b"eth0\0"[..]), (1u16, &[1u8, 2, 3, 4, 5, 6][..])]
        );
    }

    #[test]
    fn lists_loopback() {
        let mut nl = Netlink::open().unwrap();
        let links = nl.links().unwrap();
        assert!(
            links
                .iter()
                .any(|l| l.name == "lo" && l.flags & IFF_LOOPBACK != 0),
            "{links:?}"
        );
    }
}
