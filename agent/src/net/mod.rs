//! Boot NIC bring-up for the initramfs (`nodectl net-up`, `nodectl initrd`):
//! wait for the link whose MAC is BOOTIF (NIC drivers load late), set it up,
//! wait for carrier, get an IPv4 address (our DHCP client, or a static
//! `ip=`), add it and the default route, write resolv.conf. Every wait is
//! bounded by [`NetConfig::timeout`], counted from the start.
//!
//! - [`link`]: links, addresses, routes over rtnetlink;
//! - [`packet`]: IPv4/UDP framing and the AF_PACKET socket;
//! - [`dhcp`]: the DHCPv4 exchange.
pub mod dhcp;
pub mod link;
pub mod packet;

use crate::cmdline::{IpConfig, Mac};
use anyhow::{bail, Context, Result};
use link::{describe, Link, Rtnl};
use rtnetlink::packet_route::route::RouteProtocol;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often links are listed while waiting for one to appear or get carrier.
const POLL: Duration = Duration::from_millis(150);
/// Longest wait for udev to finish with a new link (renaming it) before we
/// set it up: an interface that is up can no longer be renamed.
const UDEV_WAIT: Duration = Duration::from_secs(10);
/// A "still waiting" line on the console this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// BOOTIF: the MAC of the NIC the node booted from.
    pub bootif: Option<Mac>,
    /// Every `ip=`, in order; empty means DHCP.
    pub ip: Vec<IpConfig>,
    /// Bound for link discovery + carrier + address.
    pub timeout: Duration,
}

/// Seconds from the start of [`bring_up`] to each step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetTimings {
    pub link_found: f64,
    pub carrier: f64,
    pub address: f64,
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
    /// DNS search domain (DHCP option 15).
    pub domain: Option<String>,
    /// The DHCP server that gave the lease.
    pub server: Option<Ipv4Addr>,
    pub lease_seconds: Option<u32>,
    /// Total time, seconds.
    pub seconds: f64,
    pub timings: NetTimings,
}

/// The address configuration to apply, resolved from the `ip=` list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

/// The `ip=` entries that configure something; an error if they all say off.
fn active(ip: &[IpConfig]) -> Result<Vec<&IpConfig>> {
    let on: Vec<&IpConfig> = ip.iter().filter(|c| **c != IpConfig::Off).collect();
    if !ip.is_empty() && on.is_empty() {
        bail!(
            "ip=off: the network is switched off on the kernel command line, \
             but it is needed to fetch the live image (remove ip=off or use ip=dhcp)"
        );
    }
    Ok(on)
}

fn dev_of(c: &IpConfig) -> Option<&str> {
    match c {
        IpConfig::Dhcp { dev } | IpConfig::Static { dev, .. } => dev.as_deref(),
        IpConfig::Off => None,
    }
}

/// The entry for link `name`: the first naming it, else the first naming no
/// device; DHCP when there are none.
fn method_for(on: &[&IpConfig], name: &str) -> Result<Method> {
    if on.is_empty() {
        return Ok(Method::Dhcp);
    }
    let c = on
        .iter()
        .find(|c| dev_of(c) == Some(name))
        .or_else(|| on.iter().find(|c| dev_of(c).is_none()));
    match c {
        Some(IpConfig::Static {
            address,
            prefix,
            gateway,
            dns,
            ..
        }) => Ok(Method::Static {
            address: *address,
            prefix: *prefix,
            gateway: *gateway,
            dns: dns.clone(),
        }),
        Some(_) => Ok(Method::Dhcp),
        None => {
            let devs: Vec<&str> = on.iter().filter_map(|c| dev_of(c)).collect();
            bail!(
                "ip= names only {}, but the boot link is {name}",
                devs.join(", ")
            )
        }
    }
}

/// What we wait for, in words for messages: `with MAC …`, `named …`.
fn wanted(bootif: Option<Mac>, dev: Option<&str>) -> String {
    match (bootif, dev) {
        (Some(m), _) => format!("network link with MAC {m}"),
        (None, Some(d)) => format!("network link named {d}"),
        (None, None) => "Ethernet network link".to_string(),
    }
}

/// The link to configure: the one with the BOOTIF MAC, else the device named
/// by ip=, else the first non-loopback Ethernet link.
fn pick<'a>(links: &'a [Link], bootif: Option<Mac>, dev: Option<&str>) -> Option<&'a Link> {
    if let Some(mac) = bootif {
        // The current address first (a bond may have taken another link's
        // MAC), then the permanent one.
        return links
            .iter()
            .find(|l| l.mac == Some(mac) && !l.loopback)
            .or_else(|| links.iter().find(|l| l.perm_mac == Some(mac)));
    }
    if let Some(d) = dev {
        return links.iter().find(|l| l.name == d);
    }
    links.iter().find(|l| l.ether && !l.loopback)
}

fn in_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// udev only handles the links of the initial network namespace.
fn udev_handles_links() -> bool {
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/run/udev/control").exists() {
        return false;
    }
    match (
        std::fs::metadata("/proc/self/ns/net"),
        std::fs::metadata("/proc/1/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Wait until udev has processed link `index` (its database entry exists),
/// so that its final name is set before we bring it up. Soft: gives up at
/// `until` with a warning.
fn wait_for_udev(index: u32, name: &str, until: Instant) {
    if !udev_handles_links() {
        return;
    }
    let db = format!("/run/udev/data/n{index}");
    while !Path::new(&db).exists() {
        if Instant::now() >= until {
            tracing::warn!("net: udev has not processed {name} yet; going on without it");
            return;
        }
        std::thread::sleep(POLL);
    }
}

fn secs(d: Duration) -> u64 {
    // "within 0s" would read oddly for a sub-second test bound.
    d.as_secs().max(u64::from(!d.is_zero()))
}

/// Bring the boot NIC up and configure it. `etc` is where resolv.conf is written.
pub fn bring_up(cfg: &NetConfig, etc: &Path) -> Result<NetReport> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.timeout;
    let bound = secs(cfg.timeout);
    let on = active(&cfg.ip)?;
    let dev = if cfg.bootif.is_none() {
        on.iter().find_map(|c| dev_of(c)).map(str::to_string)
    } else {
        None
    };
    let want = wanted(cfg.bootif, dev.as_deref());
    let nl = Rtnl::open()?;
    let mut timings = NetTimings::default();

    // 1. The link: NIC drivers load late in the initramfs.
    let mut next_note = t0 + PROGRESS_EVERY;
    let link = loop {
        let links = nl.links()?;
        if let Some(l) = pick(&links, cfg.bootif, dev.as_deref()) {
            break l.clone();
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "no {want} appeared within {bound}s (links: {})",
                describe(&links)
            );
        }
        if now >= next_note {
            tracing::info!(
                "net: still waiting for a {want} (links: {})",
                describe(&links)
            );
            next_note = now + PROGRESS_EVERY;
        }
        std::thread::sleep(POLL.min(deadline - now));
    };
    timings.link_found = t0.elapsed().as_secs_f64();
    let mac = link.mac.unwrap_or(Mac([0; 6]));
    tracing::info!(
        "net: found {} ({mac}), index {}, after {:.1}s",
        link.name,
        link.index,
        timings.link_found
    );
    let method = method_for(&on, &link.name)?;
    if method == Method::Dhcp && !link.ether {
        bail!(
            "{} ({mac}) is not an Ethernet link: DHCP here speaks Ethernet only; use a static ip=",
            link.name
        );
    }
    wait_for_udev(
        link.index,
        &link.name,
        deadline.min(Instant::now() + UDEV_WAIT),
    );
    // udev may have renamed it.
    let name = nl
        .link(link.index)?
        .with_context(|| format!("{} ({mac}) disappeared", link.name))?
        .name;
    let what = format!("{name} ({mac})");

    // 2. Up, and carrier.
    nl.set_up(link.index)
        .with_context(|| format!("setting {what} up"))?;
    tracing::info!("net: {name} set up");
    let mut next_note = Instant::now() + PROGRESS_EVERY;
    loop {
        let l = nl
            .link(link.index)?
            .with_context(|| format!("{what} disappeared"))?;
        if l.carrier {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "{what} has no carrier within {bound}s (operstate {}): is the cable plugged in and the switch port up?",
                if l.operstate.is_empty() { "unknown" } else { &l.operstate }
            );
        }
        if now >= next_note {
            tracing::info!("net: still waiting for carrier on {what}");
            next_note = now + PROGRESS_EVERY;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
    timings.carrier = t0.elapsed().as_secs_f64();
    tracing::info!("net: {name} has carrier after {:.1}s", timings.carrier);

    // 3. The address.
    let (method_name, address, prefix, gateway, dns, domain, server, lease_seconds) = match method {
        Method::Static {
            address,
            prefix,
            gateway,
            dns,
        } => ("static", address, prefix, gateway, dns, None, None, None),
        Method::Dhcp => {
            let l = dhcp::obtain(
                link.index,
                &dhcp::Params {
                    ifname: &name,
                    mac,
                    hostname: None,
                    bound: Duration::from_secs(bound),
                    deadline,
                },
            )?;
            (
                "dhcp",
                l.address,
                l.prefix,
                l.router,
                l.dns,
                l.domain,
                Some(l.server),
                l.lease_seconds,
            )
        }
    };
    nl.add_address(link.index, address, prefix)
        .with_context(|| format!("adding {address}/{prefix} to {what}"))?;
    timings.address = t0.elapsed().as_secs_f64();
    tracing::info!(
        "net: {name} has {address}/{prefix} ({method_name}) after {:.1}s",
        timings.address
    );
    if let Some(gw) = gateway {
        let proto = if method_name == "dhcp" {
            RouteProtocol::Dhcp
        } else {
            RouteProtocol::Boot
        };
        let onlink = !in_subnet(gw, address, prefix);
        nl.replace_default_route(link.index, gw, proto, onlink)
            .with_context(|| format!("adding the default route via {gw} on {what}"))?;
        tracing::info!(
            "net: default route via {gw} on {name}{}",
            if onlink { " (onlink)" } else { "" }
        );
    }
    if !dns.is_empty() {
        let origin = match server {
            Some(s) => format!("DHCP from {s}"),
            None => "ip=".to_string(),
        };
        write_resolv_conf(etc, &dns, domain.as_deref(), &origin)?;
        tracing::info!(
            "net: {} written ({})",
            etc.join("resolv.conf").display(),
            dns.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(NetReport {
        iface: name,
        mac,
        method: method_name.into(),
        address,
        prefix,
        gateway,
        dns,
        domain,
        server,
        lease_seconds,
        seconds: t0.elapsed().as_secs_f64(),
        timings,
    })
}

/// The text of resolv.conf.
fn resolv_conf(dns: &[Ipv4Addr], domain: Option<&str>, origin: &str) -> String {
    let mut s = format!("# written by nodectl net-up ({origin})\n");
    if let Some(d) = domain {
        s.push_str(&format!("search {d}\n"));
    }
    for d in dns {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

/// Replace `<etc>/resolv.conf` atomically (a symlink there is replaced, not followed).
fn write_resolv_conf(
    etc: &Path,
    dns: &[Ipv4Addr],
    domain: Option<&str>,
    origin: &str,
) -> Result<()> {
    std::fs::create_dir_all(etc).with_context(|| format!("creating {}", etc.display()))?;
    let path = etc.join("resolv.conf");
    let tmp = etc.join(".resolv.conf.nodectl");
    std::fs::write(&tmp, resolv_conf(dns, domain, origin))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: u32, name: &str, mac: [u8; 6], lo: bool) -> Link {
        Link {
            index: i,
            name: name.into(),
            mac: Some(Mac(mac)),
            perm_mac: None,
            ether: !lo,
            loopback: lo,
            up: false,
            carrier: false,
            operstate: String::new(),
        }
    }

    #[test]
    fn picks_by_mac_then_name_then_first_ethernet() {
        let mut links = vec![
            link(1, "lo", [0; 6], true),
            link(2, "eth0", [2, 0, 0, 0, 0, 1], false),
            link(3, "eth1", [2, 0, 0, 0, 0, 2], false),
        ];
        let m2 = Mac([2, 0, 0, 0, 0, 2]);
        assert_eq!(pick(&links, Some(m2), None).unwrap().name, "eth1");
        assert!(pick(&links, Some(Mac([2, 0, 0, 0, 0, 9])), None).is_none());
        // BOOTIF wins over ip='s device.
        assert_eq!(pick(&links, Some(m2), Some("eth0")).unwrap().name, "eth1");
        assert_eq!(pick(&links, None, Some("eth1")).unwrap().name, "eth1");
        assert!(pick(&links, None, Some("ens3")).is_none());
        assert_eq!(pick(&links, None, None).unwrap().name, "eth0");
        // The permanent address counts when the current one was changed.
        links[2].mac = Some(Mac([2, 0, 0, 0, 0, 0x42]));
        links[2].perm_mac = Some(m2);
        assert_eq!(pick(&links, Some(m2), None).unwrap().name, "eth1");
        // Only loopback: nothing.
        assert!(pick(&links[..1], None, None).is_none());
    }

    #[test]
    fn ip_entries_resolve_per_link() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let st = IpConfig::Static {
            address: a("10.99.0.5"),
            prefix: 24,
            gateway: Some(a("10.99.0.1")),
            hostname: None,
            dev: Some("eth1".into()),
            dns: vec![],
        };
        let any_dhcp = IpConfig::Dhcp { dev: None };
        assert_eq!(method_for(&[], "eth0").unwrap(), Method::Dhcp);
        assert!(matches!(
            method_for(&[&st, &any_dhcp], "eth1").unwrap(),
            Method::Static { prefix: 24, .. }
        ));
        assert_eq!(method_for(&[&st, &any_dhcp], "eth0").unwrap(), Method::Dhcp);
        let e = method_for(&[&st], "eth0").unwrap_err().to_string();
        assert_eq!(e, "ip= names only eth1, but the boot link is eth0");
        // off alone is an error; off next to a real entry is ignored.
        let e = active(&[IpConfig::Off]).unwrap_err().to_string();
        assert!(e.starts_with("ip=off: the network is switched off"), "{e}");
        assert_eq!(active(&[IpConfig::Off, any_dhcp.clone()]).unwrap().len(), 1);
        assert!(active(&[]).unwrap().is_empty());
    }

    #[test]
    fn messages_name_what_is_awaited() {
        let m = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(
            wanted(Some(m), Some("eth0")),
            "network link with MAC 52:54:00:12:34:56"
        );
        assert_eq!(wanted(None, Some("eth0")), "network link named eth0");
        assert_eq!(wanted(None, None), "Ethernet network link");
        assert_eq!(secs(Duration::from_millis(300)), 1);
        assert_eq!(secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn subnets() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(in_subnet(a("10.0.2.2"), a("10.0.2.15"), 24));
        assert!(!in_subnet(a("10.0.3.2"), a("10.0.2.15"), 24));
        assert!(in_subnet(a("1.2.3.4"), a("10.0.2.15"), 0));
        assert!(!in_subnet(a("10.0.2.2"), a("10.0.2.15"), 32));
    }

    #[test]
    fn resolv_conf_text_and_atomic_replace() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            resolv_conf(&[a("10.0.2.3"), a("9.9.9.9")], Some("cluster"), "DHCP from 10.0.2.2"),
            "# written by nodectl net-up (DHCP from 10.0.2.2)\nsearch cluster\nnameserver 10.0.2.3\nnameserver 9.9.9.9\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        // A dangling symlink (as to systemd-resolved's stub) is replaced.
        std::os::unix::fs::symlink("/nonexistent/stub-resolv.conf", etc.join("resolv.conf"))
            .unwrap();
        write_resolv_conf(&etc, &[a("10.0.2.3")], None, "ip=").unwrap();
        let p = etc.join("resolv.conf");
        assert!(!p.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# written by nodectl net-up (ip=)\nnameserver 10.0.2.3\n"
        );
        assert_eq!(
            std::fs::read_dir(&etc).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn absent_mac_times_out_listing_links() {
        let cfg = NetConfig {
            bootif: Some(Mac([2, 0, 0, 0, 0, 0x99])),
            ip: vec![],
            timeout: Duration::from_millis(400),
        };
        let t = Instant::now();
        let e = bring_up(&cfg, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(
            e.starts_with(
                "no network link with MAC 02:00:00:00:00:99 appeared within 1s (links: lo 00:00:00:00:00:00"
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
