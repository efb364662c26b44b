//! Links, addresses and routes over rtnetlink, behind a small synchronous
//! facade: a tokio current-thread runtime private to this module drives the
//! netlink connection, callers never see async.
use crate::cmdline::Mac;
use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage, State};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

/// A network link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Current hardware address (`IFLA_ADDRESS`), when it is 6 bytes.
    pub mac: Option<Mac>,
    /// Permanent hardware address (`IFLA_PERM_ADDRESS`, kernel ≥ 5.6), when known.
    pub perm_mac: Option<Mac>,
    pub ether: bool,
    pub loopback: bool,
    pub up: bool,
    /// Carrier: `IFF_LOWER_UP`, or operstate up.
    pub carrier: bool,
    /// `IFLA_OPERSTATE`, lower case (`up`, `down`, `lowerlayerdown`, …).
    pub operstate: String,
}

impl Link {
    /// Does this link answer to `mac` (current or permanent address)?
    pub fn has_mac(&self, mac: Mac) -> bool {
        self.mac == Some(mac) || self.perm_mac == Some(mac)
    }

    fn from_message(m: &LinkMessage) -> Link {
        let mac6 = |v: &[u8]| <[u8; 6]>::try_from(v).ok().map(Mac);
        let flags = m.header.flags;
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            perm_mac: None,
            ether: m.header.link_layer_type == LinkLayerType::Ether,
            loopback: flags.contains(LinkFlags::Loopback),
            up: flags.contains(LinkFlags::Up),
            carrier: flags.contains(LinkFlags::LowerUp),
            operstate: String::new(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(v) => link.mac = mac6(v),
                LinkAttribute::PermAddress(v) => link.perm_mac = mac6(v),
                LinkAttribute::OperState(s) => {
                    link.carrier |= *s == State::Up;
                    link.operstate = format!("{s:?}").to_ascii_lowercase();
                }
                _ => {}
            }
        }
        link
    }
}

/// `lo 00:00:00:00:00:00, eth1 52:54:00:aa:bb:cc` (`-` for no hardware address).
pub fn describe(links: &[Link]) -> String {
    if links.is_empty() {
        return "none".into();
    }
    links
        .iter()
        .map(|l| match l.mac {
            Some(m) => format!("{} {m}", l.name),
            None => format!("{} -", l.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An rtnetlink connection and the runtime that drives it.
pub struct Rtnl {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn nl_err(e: rtnetlink::Error) -> anyhow::Error {
    match e {
        // The errno, readable: "File exists (os error 17)".
        rtnetlink::Error::NetlinkError(m) => anyhow::Error::new(m.to_io()),
        e => anyhow::Error::new(e),
    }
}

impl Rtnl {
    pub fn open() -> Result<Rtnl> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the netlink runtime")?;
        // The socket registers with the runtime's reactor: create it inside.
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().context("opening a NETLINK_ROUTE socket")?
        };
        // Runs whenever the runtime is driven by `block_on` below.
        rt.spawn(conn);
        Ok(Rtnl { rt, handle })
    }

    /// Every link, in kernel (index) order.
    pub fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(nl_err)
            .context("listing network links (RTM_GETLINK)")?;
        let mut links: Vec<Link> = msgs.iter().map(Link::from_message).collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// One link by index; `None` if it went away.
    pub fn link(&self, index: u32) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.index == index))
    }

    /// `ip link set <index> up`
    pub fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .map_err(nl_err)
    }

    /// `ip addr replace <addr>/<prefix> dev <index>` (with its broadcast address).
    pub fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .replace();
        self.rt.block_on(req.execute()).map_err(nl_err)
    }

    /// `ip route replace default via <gw> dev <index> proto <proto> [onlink]`.
    /// `onlink` when the gateway is outside the interface's subnet.
    pub fn replace_default_route(
        &self,
        index: u32,
        gw: Ipv4Addr,
        proto: RouteProtocol,
        onlink: bool,
    ) -> Result<()> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gw)
            .protocol(proto);
        if onlink {
            b = b.onlink();
        }
        let req = self.handle.route().add(b.build()).replace();
        self.rt.block_on(req.execute()).map_err(nl_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_link_message() {
        let mut m = LinkMessage::default();
        m.header.index = 2;
        m.header.link_layer_type = LinkLayerType::Ether;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        m.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            LinkAttribute::PermAddress(vec![0x52, 0x54, 0, 0x12, 0x34, 0x57]),
            LinkAttribute::OperState(State::Up),
        ];
        let l = Link::from_message(&m);
        assert_eq!(l.name, "eth0");
        assert_eq!(l.mac, Some(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])));
        assert!(l.ether && l.up && l.carrier && !l.loopback);
        assert_eq!(l.operstate, "up");
        assert!(l.has_mac(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x57])));
        assert!(!l.has_mac(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x58])));
        // Up but no carrier yet.
        m.header.flags = LinkFlags::Up;
        m.attributes[3] = LinkAttribute::OperState(State::LowerLayerDown);
        let l = Link::from_message(&m);
        assert!(l.up && !l.carrier);
        assert_eq!(l.operstate, "lowerlayerdown");
        assert_eq!(
            describe(&[l]),
            "eth0 52:54:00:12:34:56",
            "links are listed with their MACs"
        );
    }

    #[test]
    fn lists_loopback_through_the_kernel() {
        // Needs no privilege: a dump of the links of this namespace.
        let nl = Rtnl::open().unwrap();
        let links = nl.links().unwrap();
        let lo = links.iter().find(|l| l.loopback).expect("a loopback link");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mac, Some(Mac([0; 6])));
        assert_eq!(nl.link(lo.index).unwrap().as_ref(), Some(lo));
    }
}
