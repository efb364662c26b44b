//! Boot NIC bring-up: find the link whose MAC is BOOTIF, set it up
//! (rtnetlink), get an IPv4 address (DHCP or static `ip=`), add the default
//! route, write resolv.conf. Every wait is bounded by `NetConfig::timeout`.
pub mod dhcp;
pub mod netlink;

use crate::cmdline::{IpConfig, Mac};
use anyhow::{bail, Context, Result};
use netlink::{Link, Netlink, IFF_LOOPBACK, IFF_LOWER_UP};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub bootif: Option<Mac>,
    pub ip: Vec<IpConfig>,
    /// Bound for link discovery + carrier + address.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetReport {
    pub iface: String,
    pub mac: Mac,
    /// "dhcp" or "static"
    pub method: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    pub seconds: f64,
}

fn describe(links: &[Link]) -> String {
    links
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l.name,
                l.mac
                    .map(|m| Mac(m).to_string())
                    .unwrap_or_else(|| "-".into())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The link to configure: the one with the BOOTIF MAC, else the device named
/// by ip=, else the first non-loopback Ethernet link.
fn pick<'a>(links: &'a [Link], bootif: Option<Mac>, dev: Option<&str>) -> Option<&'a Link> {
    if let Some(mac) = bootif {
        return links.iter().find(|l| l.mac == Some(mac.0));
    }
    if let Some(d) = dev {
        return links.iter().find(|l| l.name == d);
    }
    links
        .iter()
        .find(|l| l.ether && l.flags & IFF_LOOPBACK == 0)
}

/// Bring the boot NIC up and configure it. `etc` is where resolv.conf is written.
pub fn bring_up(cfg: &NetConfig, etc: &Path) -> Result<NetReport> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.timeout;
    let ip = cfg
        .ip
        .last()
        .cloned()
        .unwrap_or(IpConfig::Dhcp { dev: None });
    let dev = match &ip {
        IpConfig::Off => bail!("ip=off on the kernel command line, but the live image must be fetched over the network"),
        IpConfig::Dhcp { dev } => dev.clone(),
        IpConfig::Static { dev, .. } => dev.clone(),
    };
    let want = match (cfg.bootif, &dev) {
        (Some(m), _) => format!("with MAC {m}"),
        (None, Some(d)) => format!("named {d}"),
        (None, None) => "of type Ethernet".to_string(),
    };
    let mut nl = Netlink::open()?;
    // NIC drivers load late in the initramfs: wait for the link.
    let link = loop {
        let links = nl.links()?;
        if let Some(l) = pick(&links, cfg.bootif, dev.as_deref()) {
            break l.clone();
        }
        if Instant::now() >= deadline {
            bail!(
                "no network link {want} appeared within {}s (links: {})",
                cfg.timeout.as_secs(),
                describe(&links)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mac = link.mac.map(Mac).unwrap_or(Mac([0; 6]));
    tracing::info!("net: boot link {} ({mac}), index {}", link.name, link.index);
    nl.set_up(link.index)
        .with_context(|| format!("setting {} up", link.name))?;
    loop {
        let l = nl.links()?.into_iter().find(|l| l.index == link.index);
        if l.as_ref().is_some_and(|l| l.flags & IFF_LOWER_UP != 0) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} ({mac}) has no carrier after {}s: is the cable/switch port up?",
                link.name,
                cfg.timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("net: {} is up with carrier", link.name);
    let (method, address, prefix, gateway, dns, server, lease_seconds) = match ip {
        IpConfig::Static {
            address,
            prefix,
            gateway,
            dns,
            ..
        } => ("static", address, prefix, gateway, dns, None, None),
        _ => {
            let l =
                dhcp::obtain(link.index, &link.name, mac.0, None, deadline).with_context(|| {
                    format!("DHCP on {} within {}s", link.name, cfg.timeout.as_secs())
                })?;
            (
                "dhcp",
                l.address,
                l.prefix,
                l.router,
                l.dns,
                Some(l.server),
                l.lease_seconds,
            )
        }
    };
    nl.add_address(link.index, address, prefix)
        .with_context(|| format!("adding {address}/{prefix} to {}", link.name))?;
    if let Some(gw) = gateway {
        nl.add_default_route(link.index, gw)
            .with_context(|| format!("adding the default route via {gw} on {}", link.name))?;
    }
    if !dns.is_empty() {
        let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        std::fs::create_dir_all(etc).with_context(|| format!("creating {}", etc.display()))?;
        let p = etc.join("resolv.conf");
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    tracing::info!(
        "net: {} {address}/{prefix} via {}",
        link.name,
        gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
    );
    Ok(NetReport {
        iface: link.name,
        mac,
        method: method.into(),
        address,
        prefix,
        gateway,
        dns,
        server,
        lease_seconds,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: u32, name: &str, mac: [u8; 6], lo: bool) -> Link {
        Link {
            index: i,
            name: name.into(),
            mac: Some(mac),
            flags: if lo { IFF_LOOPBACK } else { 0 },
            ether: !lo,
        }
    }

    #[test]
    fn picks_by_mac_then_name_then_first_ethernet() {
        let links = vec![
            link(1, "lo", [0; 6], true),
            link(2, "eth0", [2, 0, 0, 0, 0, 1], false),
            link(3, "eth1", [2, 0, 0, 0, 0, 2], false),
        ];
        assert_eq!(
            pick(&links, Some(Mac([2, 0, 0, 0, 0, 2])), None)
                .unwrap()
                .name,
            "eth1"
        );
        assert!(pick(&links, Some(Mac([2, 0, 0, 0, 0, 9])), None).is_none());
        assert_eq!(pick(&links, None, Some("eth1")).unwrap().name, "eth1");
        assert_eq!(pick(&links, None, None).unwrap().name, "eth0");
    }

    #[test]
    fn absent_mac_times_out_listing_links() {
        let cfg = NetConfig {
            bootif: Some(Mac([2, 0, 0, 0, 0, 0x99])),
            ip: vec![],
            timeout: Duration::from_millis(300),
        };
        let e = bring_up(&cfg, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "no network link with MAC 02:00:00:00:00:99 appeared within 0s (links: lo"
            ),
            "{e}"
        );
    }

    #[test]
    fn ip_off_is_refused() {
        let cfg = NetConfig {
            bootif: None,
            ip: vec![IpConfig::Off],
            timeout: Duration::from_secs(1),
        };
        let e = bring_up(&cfg, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ip=off"), "{e}");
    }
}
