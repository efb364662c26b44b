//! Boot NIC bring-up: find the link whose MAC is BOOTIF, set it up
//! (rtnetlink), get an IPv4 address (DHCP or static `ip=`). (Being written.)
use crate::cmdline::{IpConfig, Mac};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

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

/// Bring the boot NIC up and configure it. `etc` is where resolv.conf is written.
pub fn bring_up(cfg: &NetConfig, etc: &Path) -> anyhow::Result<NetReport> {
    let _ = (cfg, etc);
    anyhow::bail!("network bring-up not implemented yet")
}
