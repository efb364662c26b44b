//! bootd's DHCP responder (DHCPv4, RFC 2131 + the PXE options of RFC 4578):
//! it answers the inventory's hosts only, by MAC, and tells each firmware
//! what to boot.
//!
//! - **full** mode: bootd is the DHCP server of the boot network. DISCOVER
//!   gets an OFFER of the host's inventory address (`yiaddr`) with the
//!   `[dhcp]` settings (mask, router, DNS, domain, lease time) and the host
//!   name; a REQUEST for that address gets an ACK, for another one a NAK; a
//!   REQUEST naming another server is left alone. A PXE client's offer also
//!   carries the PXE options (below), so it is the PXE offer as well.
//! - **proxy** mode (PXE's proxyDHCP): another server gives the addresses;
//!   bootd answers PXE clients only, with an OFFER that carries no address
//!   (`yiaddr` 0.0.0.0) but `PXEClient` (option 60), its own identity and
//!   the boot file, on port 67.
//!
//! In both modes the PXE options of a reply to firmware or iPXE are option
//! 60 `PXEClient`, the client's option 97 echoed, and for BIOS and iPXE
//! clients option 43 with discovery control 8 (skip boot server discovery,
//! boot the file); EFI clients get no option 43 (some UEFI firmware drops
//! such offers) and go on to port 4011, where a REQUEST gets an ACK with
//! the boot file (PXE 2.1; iPXE asks there too after a proxy offer).
//!
//! The boot file, for a host with `provision = true`:
//!
//! | client | boot file |
//! |---|---|
//! | user class `iPXE` (option 77) | `http://SERVER/boot/ipxe?mac=…` (bootd's own script) |
//! | the host has `firmware = "…"` (Grendel's names) fitting its architecture | that iPXE build over TFTP (`ipxe-x86_64.efi` → `ipxe.efi`, `snponly-x86_64.efi` → `snponly.efi`, `undionly.kpxe`, `ipxe.pxe`, …); `shimx64.efi` (Secure Boot: shim → `grubx64.efi` → bootd's GRUB config, [`crate::grub`]) |
//! | architecture 0 (BIOS, option 93) | `[dhcp] bios_boot_file` over TFTP (`undionly.kpxe`) |
//! | architecture 7 or 9 (x86-64 UEFI) | `[dhcp] efi_boot_file` over TFTP (`snponly.efi`) |
//! | class `HTTPClient`, architecture 16 (x86-64 UEFI HTTP boot) | `http://SERVER/<[dhcp] http_boot_file>` (`snponly.efi` in `--root`), class `HTTPClient` echoed; no TFTP |
//! | another architecture, or no TFTP root | none (logged) |
//! | not a PXE client (no option 93 nor `PXEClient`) | none: the lease only (nodectl's own DHCP) |
//!
//! With `[dhcp] chain_ipxe = true`, an iPXE client is first given the TFTP
//! binary as if it were plain firmware, once per boot: a NIC ROM's own iPXE
//! (QEMU's, say) then runs bootd's iPXE build, whose own DHCP exchange
//! (another transaction id) gets the script URL. Hosts with `provision =
//! false` get their lease (full mode) but no boot file, so the firmware
//! goes on to the next boot device.
//!
//! Replies go out as broadcasts on the interface (the client has no
//! address yet), to the relay (`giaddr`) when there is one, and to the
//! client's address for a renewal or a port-4011 request.
use crate::inventory::{Host, Invalid, Inventory, Nic};
use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Encodable};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use toml::Spanned;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server port (proxyDHCP REQUESTs).
pub const PXE_PORT: u16 = 4011;

/// Lines about a host's firmware not fitting its client: 10 a minute.
static FIRMWARE_MISMATCH: crate::Ration = crate::Ration::new(10);

/// Who gives the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// bootd is the DHCP server: the inventory's addresses, static leases.
    Full,
    /// Another server gives the addresses; bootd only adds the PXE boot file.
    Proxy,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Proxy => "proxy",
        })
    }
}

/// The inventory's `[dhcp]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 51, seconds.
    pub lease_time: u32,
    /// Prefix length of host addresses written without `/prefix`.
    pub prefix: u8,
    /// Boot file (in the TFTP root) for BIOS PXE firmware.
    pub bios_boot_file: String,
    /// Boot file (in the TFTP root) for x86-64 UEFI firmware.
    pub efi_boot_file: String,
    /// Boot program (in `--root`, over HTTP) for x86-64 UEFI HTTP boot.
    pub http_boot_file: String,
    /// Give iPXE clients the TFTP binary first, once per boot.
    pub chain_ipxe: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 3600,
            prefix: 24,
            bios_boot_file: "undionly.kpxe".into(),
            efi_boot_file: "snponly.efi".into(),
            http_boot_file: "snponly.efi".into(),
            chain_ipxe: false,
        }
    }
}

/// `[dhcp]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    router: Option<Spanned<String>>,
    dns: Option<Vec<Spanned<String>>>,
    domain: Option<Spanned<String>>,
    lease_time: Option<Spanned<i64>>,
    prefix: Option<Spanned<i64>>,
    bios_boot_file: Option<Spanned<String>>,
    efi_boot_file: Option<Spanned<String>>,
    http_boot_file: Option<Spanned<String>>,
    chain_ipxe: Option<bool>,
}

/// Smallest and largest lease time accepted (1 minute, 1 year).
const LEASE_RANGE: (i64, i64) = (60, 365 * 24 * 3600);

impl Settings {
    /// Check `[dhcp]`; `err(span, field, reason)` makes the inventory's
    /// `FILE:LINE: FIELD: REASON` error.
    pub(crate) fn check(
        raw: Option<&RawSettings>,
        err: &dyn Fn(Range<usize>, String, String) -> Invalid,
    ) -> Result<Settings, Invalid> {
        let mut s = Settings::default();
        let Some(raw) = raw else {
            return Ok(s);
        };
        let ipv4 = |v: &Spanned<String>, field: String| {
            v.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                err(
                    v.span(),
                    field,
                    format!("bad IPv4 address {:?} (want 10.0.0.1)", v.get_ref()),
                )
            })
        };
        if let Some(r) = &raw.router {
            s.router = Some(ipv4(r, "dhcp.router".into())?);
        }
        for (i, d) in raw.dns.iter().flatten().enumerate() {
            s.dns.push(ipv4(d, format!("dhcp.dns[{i}]"))?);
        }
        if let Some(d) = &raw.domain {
            let v = d.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(err(
                    d.span(),
                    "dhcp.domain".into(),
                    format!("bad domain name {v:?} (want labels of [A-Za-z0-9-] joined by dots)"),
                ));
            }
            s.domain = Some(v.clone());
        }
        if let Some(t) = &raw.lease_time {
            let v = *t.get_ref();
            if !(LEASE_RANGE.0..=LEASE_RANGE.1).contains(&v) {
                return Err(err(
                    t.span(),
                    "dhcp.lease_time".into(),
                    format!(
                        "{v} seconds is out of range ({} to {})",
                        LEASE_RANGE.0, LEASE_RANGE.1
                    ),
                ));
            }
            s.lease_time = v as u32;
        }
        if let Some(p) = &raw.prefix {
            let v = *p.get_ref();
            if !(1..=30).contains(&v) {
                return Err(err(
                    p.span(),
                    "dhcp.prefix".into(),
                    format!("prefix length {v} is out of range (1 to 30)"),
                ));
            }
            s.prefix = v as u8;
        }
        for (raw_file, field, dest) in [
            (
                &raw.bios_boot_file,
                "dhcp.bios_boot_file",
                &mut s.bios_boot_file,
            ),
            (
                &raw.efi_boot_file,
                "dhcp.efi_boot_file",
                &mut s.efi_boot_file,
            ),
            (
                &raw.http_boot_file,
                "dhcp.http_boot_file",
                &mut s.http_boot_file,
            ),
        ] {
            if let Some(f) = raw_file {
                let v = f.get_ref();
                if let Err(why) = check_boot_file(v) {
                    return Err(err(
                        f.span(),
                        field.into(),
                        format!("bad boot file {v:?}: {why}"),
                    ));
                }
                *dest = v.clone();
            }
        }
        s.chain_ipxe = raw.chain_ipxe.unwrap_or(false);
        Ok(s)
    }
}

/// A boot file is a relative path inside the TFTP root that fits the
/// BOOTP `file` field.
fn check_boot_file(f: &str) -> Result<(), &'static str> {
    if f.is_empty() {
        return Err("empty");
    }
    if f.len() > 127 {
        return Err("longer than 127 bytes (the BOOTP file field)");
    }
    if f.starts_with('/') {
        return Err("absolute (want a path inside the TFTP root)");
    }
    if f.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
        return Err("empty, . or .. component");
    }
    if !f.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not printable ASCII without spaces");
    }
    Ok(())
}

/// What kind of client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// PXE firmware (option 93 or a `PXEClient` class), with its architecture.
    Firmware(Option<u16>),
    /// iPXE (user class `iPXE`), with its architecture.
    Ipxe(Option<u16>),
    /// UEFI HTTP boot (class `HTTPClient`), with its architecture.
    HttpBoot(Option<u16>),
    /// Any other DHCP client (nodectl in the initramfs, an OS).
    Plain,
}

/// The architecture of option 93, else the one in a `PXEClient:Arch:NNNNN` class.
fn arch_of(m: &Message) -> Option<u16> {
    if let Some(DhcpOption::ClientSystemArchitecture(a)) =
        m.opts().get(OptionCode::ClientSystemArchitecture)
    {
        return Some(a.0);
    }
    let class = class_of(m)?;
    let rest = class
        .strip_prefix("PXEClient:Arch:")
        .or_else(|| class.strip_prefix("HTTPClient:Arch:"))?;
    rest.get(..5)?.parse().ok()
}

fn class_of(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => Some(String::from_utf8_lossy(c).into_owned()),
        _ => None,
    }
}

/// Whether option 77 says `iPXE`: iPXE sends the bare string; RFC 3004
/// clients a list of length-prefixed classes.
fn is_ipxe(m: &Message) -> bool {
    let Some(DhcpOption::UserClass(uc)) = m.opts().get(OptionCode::UserClass) else {
        return false;
    };
    if uc.as_slice() == b"iPXE" {
        return true;
    }
    let mut rest = uc.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Classify a request.
pub fn client_of(m: &Message) -> Client {
    let arch = arch_of(m);
    if is_ipxe(m) {
        Client::Ipxe(arch)
    } else if class_of(m).is_some_and(|c| c.starts_with("HTTPClient")) {
        Client::HttpBoot(arch)
    } else if arch.is_some() || class_of(m).is_some_and(|c| c.starts_with("PXEClient")) {
        Client::Firmware(arch)
    } else {
        Client::Plain
    }
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A file of the TFTP root.
    Tftp(String),
    /// The iPXE script's URL.
    Http(String),
    /// The URL of a boot program for UEFI HTTP boot.
    Program(String),
}

impl std::fmt::Display for Boot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Boot::Tftp(p) => write!(f, "tftp {p}"),
            Boot::Http(u) => write!(f, "{u}"),
            Boot::Program(u) => write!(f, "http {u}"),
        }
    }
}

/// Where a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67: DHCP (and proxyDHCP offers).
    Dhcp,
    /// 4011: PXE boot server requests.
    Pxe,
}

/// The answer to one request.
#[derive(Debug)]
pub enum Verdict {
    /// Send `msg` to `to`; `summary` is the log line.
    Reply {
        msg: Box<Message>,
        to: SocketAddrV4,
        summary: String,
    },
    /// No answer; why (logged at debug, or at info for an unknown MAC).
    Ignore(Ignore),
}

/// Why a request gets no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignore {
    /// Not a BOOTREQUEST from an Ethernet client, or no message type.
    Malformed(String),
    /// The MAC is in no host's interfaces.
    UnknownMac(String),
    /// Nothing to say (another server's REQUEST, a plain client in proxy
    /// mode, a host without an IPv4 address, …).
    NotOurs(String),
}

/// Where a chained iPXE client is in its boot (see [`Settings::chain_ipxe`]).
#[derive(Debug, Clone, Copy)]
struct Chain {
    xid: u32,
    /// The exchange `xid` was given the binary (else the script).
    binary: bool,
    at: Instant,
}

/// A chain record older than this is a new boot.
const CHAIN_TTL: Duration = Duration::from_secs(600);

/// The protocol side of bootd's DHCP, without sockets (see [`crate::netboot`]).
#[derive(Debug)]
pub struct Responder {
    pub mode: Mode,
    /// Our address on the boot network: option 54, `siaddr`, TFTP server.
    pub server_ip: Ipv4Addr,
    /// Base of the iPXE script URL (`http://10.0.0.1:8080`).
    pub http_base: String,
    /// Whether bootd serves TFTP (else firmware gets no boot file).
    pub tftp: bool,
    chains: Mutex<HashMap<String, Chain>>,
}

/// `aa:bb:cc:dd:ee:ff` of an Ethernet `chaddr`. `hlen` is checked before
/// `chaddr()` is called: dhcproto slices `chaddr[..hlen]` unchecked, and a
/// packet may say any `hlen` up to 255.
pub fn client_mac(m: &Message) -> Option<String> {
    if m.htype() != HType::Eth || !(6..=16).contains(&m.hlen()) {
        return None;
    }
    let c = m.chaddr();
    Some(
        c[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn mask_of(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The host's IPv4 address and prefix (the inventory's `/prefix`, else
/// `[dhcp] prefix`).
pub fn host_ipv4(nic: &Nic, default_prefix: u8) -> Option<(Ipv4Addr, u8)> {
    let ip = nic.ip.as_deref()?;
    let (a, p) = match ip.split_once('/') {
        Some((a, p)) => (a, p.parse().ok()?),
        None => (ip, default_prefix),
    };
    Some((a.parse().ok()?, p))
}

fn message_type(m: &Message) -> Option<MessageType> {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

impl Responder {
    pub fn new(mode: Mode, server_ip: Ipv4Addr, http_base: &str, tftp: bool) -> Responder {
        Responder {
            mode,
            server_ip,
            http_base: http_base.trim_end_matches('/').to_string(),
            tftp,
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// The iPXE script URL for `mac`.
    pub fn script_url(&self, mac: &str) -> String {
        format!("{}{}?mac={mac}", self.http_base, crate::server::IPXE_PATH)
    }

    /// The TFTP file for firmware of architecture `arch`, or why none: the
    /// host's inventory `firmware` when it runs on that architecture, else
    /// the `[dhcp]` file for the architecture.
    fn firmware_file(&self, s: &Settings, host: &Host, arch: Option<u16>) -> Result<Boot, String> {
        if !self.tftp {
            return Err("bootd serves no TFTP (--tftp-root)".into());
        }
        if let Some(fw) = host.firmware {
            if fw.arches.contains(&arch.unwrap_or(0)) {
                return Ok(Boot::Tftp(fw.file.to_string()));
            }
            if FIRMWARE_MISMATCH.take().is_some() {
                tracing::warn!(
                    "dhcp: {}'s inventory firmware {} does not run on its client \
                     architecture {}: giving the architecture's file",
                    host.name,
                    fw.name,
                    arch.unwrap_or(0)
                );
            }
        }
        match arch.map(Architecture) {
            Some(Architecture::X86_Bios) | None => Ok(Boot::Tftp(s.bios_boot_file.clone())),
            Some(Architecture::X64 | Architecture::BC) => Ok(Boot::Tftp(s.efi_boot_file.clone())),
            Some(a) => Err(format!(
                "client architecture {} has no iPXE binary here (0 BIOS, 7 and 9 x86-64 UEFI)",
                a.0
            )),
        }
    }

    /// What `client` (MAC `mac`, transaction `xid`) boots.
    fn boot_for(
        &self,
        s: &Settings,
        host: &Host,
        client: Client,
        mac: &str,
        xid: u32,
    ) -> Result<Option<Boot>, String> {
        if !host.provision {
            return Ok(None);
        }
        match client {
            Client::Plain => Ok(None),
            Client::Firmware(arch) => {
                let f = self.firmware_file(s, host, arch)?;
                if s.chain_ipxe {
                    // The firmware got the binary: the iPXE exchange that
                    // follows (another transaction) is the chained iPXE.
                    self.record_binary(mac, xid);
                }
                Ok(Some(f))
            }
            // x86-64 UEFI HTTP boot (architecture 16): the boot program
            // over HTTP from bootd's root; no TFTP at all.
            Client::HttpBoot(Some(16)) => Ok(Some(Boot::Program(format!(
                "{}/{}",
                self.http_base, s.http_boot_file
            )))),
            Client::HttpBoot(arch) => Err(format!(
                "HTTP boot client architecture {} has no boot program here (16: x86-64 UEFI)",
                arch.map_or("none".to_string(), |a| a.to_string())
            )),
            Client::Ipxe(arch) => {
                if s.chain_ipxe && self.tftp && self.chain_binary(mac, xid) {
                    self.firmware_file(s, host, arch).map(Some)
                } else {
                    Ok(Some(Boot::Http(self.script_url(mac))))
                }
            }
        }
    }

    /// Note that exchange `xid` of `mac` (firmware's) was given the binary.
    fn record_binary(&self, mac: &str, xid: u32) {
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        chains.insert(
            mac.to_string(),
            Chain {
                xid,
                binary: true,
                at: Instant::now(),
            },
        );
    }

    /// Whether this iPXE exchange gets the binary (the first exchange of a
    /// boot, and its retransmissions) rather than the script.
    fn chain_binary(&self, mac: &str, xid: u32) -> bool {
        let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        chains.retain(|_, c| now.duration_since(c.at) < CHAIN_TTL);
        let binary = match chains.get(mac) {
            None => true,
            Some(c) if c.xid == xid => c.binary,
            // A new exchange after the binary: the chained iPXE.
            Some(c) if c.binary => false,
            // A new exchange after the script: a new boot.
            Some(_) => true,
        };
        chains.insert(
            mac.to_string(),
            Chain {
                xid,
                binary,
                at: now,
            },
        );
        binary
    }

    /// The answer to `req`, which came from `src` to `port`.
    pub fn answer(
        &self,
        inv: &Inventory,
        s: &Settings,
        req: &Message,
        port: Port,
        src: SocketAddrV4,
    ) -> Verdict {
        let ignore = |i| Verdict::Ignore(i);
        if req.opcode() != Opcode::BootRequest {
            return ignore(Ignore::Malformed("not a BOOTREQUEST".into()));
        }
        // Before anything reads `chaddr` (see `mac_of`); `decode` already
        // refuses such packets, this covers messages built otherwise.
        if req.hlen() > 16 {
            return ignore(Ignore::Malformed(format!("hlen {} > 16", req.hlen())));
        }
        let Some(mac) = client_mac(req) else {
            return ignore(Ignore::Malformed("not an Ethernet client".into()));
        };
        let Some(kind) = message_type(req) else {
            return ignore(Ignore::Malformed(format!("{mac}: no message type (BOOTP)")));
        };
        let Some((host, nic)) = inv.by_mac(&mac) else {
            return ignore(Ignore::UnknownMac(mac));
        };
        let client = client_of(req);
        let boot = match self.boot_for(s, host, client, &mac, req.xid()) {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!("dhcp: {mac} ({}): no boot file: {why}", host.name);
                None
            }
        };
        let not_ours = |why: String| ignore(Ignore::NotOurs(format!("{mac}: {why}")));
        match (self.mode, port, kind) {
            (Mode::Full, Port::Dhcp, MessageType::Discover) => {
                let Some((ip, prefix)) = host_ipv4(nic, s.prefix) else {
                    return not_ours(format!(
                        "host {} has no IPv4 address for this interface in the inventory",
                        host.name
                    ));
                };
                let mut m = self.reply(req, MessageType::Offer);
                m.set_yiaddr(ip);
                self.lease_options(&mut m, s, host, prefix);
                self.boot_options(&mut m, req, boot.as_ref(), client, port);
                let to = self.destination(req, false);
                let summary = format!("OFFER {ip} to {mac} ({}){}", host.name, boot_note(&boot));
                Verdict::Reply {
                    msg: Box::new(m),
                    to,
                    summary,
                }
            }
            (Mode::Full, Port::Dhcp, MessageType::Request) => {
                let Some((ip, prefix)) = host_ipv4(nic, s.prefix) else {
                    return not_ours(format!(
                        "host {} has no IPv4 address for this interface in the inventory",
                        host.name
                    ));
                };
                let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
                    Some(DhcpOption::ServerIdentifier(id)) => Some(*id),
                    _ => None,
                };
                if let Some(id) = server_id.filter(|id| *id != self.server_ip) {
                    return not_ours(format!("REQUEST for server {id}"));
                }
                let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(a)) => *a,
                    _ => req.ciaddr(),
                };
                if requested != ip {
                    let mut m = self.reply(req, MessageType::Nak);
                    m.opts_mut().insert(DhcpOption::Message(format!(
                        "{mac} is {ip} in the inventory, not {requested}"
                    )));
                    // A NAK is always broadcast (or sent to the relay).
                    let to = self.destination(req, false);
                    let summary = format!(
                        "NAK to {mac} ({}): asked for {requested}, the inventory says {ip}",
                        host.name
                    );
                    return Verdict::Reply {
                        msg: Box::new(m),
                        to,
                        summary,
                    };
                }
                let mut m = self.reply(req, MessageType::Ack);
                m.set_yiaddr(ip);
                m.set_ciaddr(req.ciaddr());
                self.lease_options(&mut m, s, host, prefix);
                self.boot_options(&mut m, req, boot.as_ref(), client, port);
                let to = self.destination(req, true);
                let summary = format!("ACK {ip} to {mac} ({}){}", host.name, boot_note(&boot));
                Verdict::Reply {
                    msg: Box::new(m),
                    to,
                    summary,
                }
            }
            (Mode::Proxy, Port::Dhcp, MessageType::Discover) | (_, Port::Pxe, _) => {
                if client == Client::Plain {
                    return not_ours("not a PXE client: left to the DHCP server".into());
                }
                if port == Port::Pxe && kind != MessageType::Request {
                    return not_ours(format!("{kind:?} on the PXE port"));
                }
                let Some(boot) = boot else {
                    return not_ours(format!(
                        "nothing to boot for host {} (provision = {})",
                        host.name, host.provision
                    ));
                };
                let (kind, to) = if port == Port::Pxe {
                    let to = if src.ip().is_unspecified() {
                        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
                    } else {
                        src
                    };
                    (MessageType::Ack, to)
                } else {
                    (MessageType::Offer, self.destination(req, false))
                };
                let mut m = self.reply(req, kind);
                m.set_ciaddr(req.ciaddr());
                self.boot_options(&mut m, req, Some(&boot), client, port);
                let what = if kind == MessageType::Ack {
                    "PXE ACK"
                } else {
                    "proxy OFFER"
                };
                let summary = format!("{what} to {mac} ({}): boot {boot}", host.name);
                Verdict::Reply {
                    msg: Box::new(m),
                    to,
                    summary,
                }
            }
            (Mode::Proxy, Port::Dhcp, other) => {
                not_ours(format!("{other:?} in proxy mode: for the DHCP server"))
            }
            (Mode::Full, Port::Dhcp, MessageType::Decline) => {
                tracing::warn!(
                    "dhcp: {mac} ({}) declined its address: another machine uses it?",
                    host.name
                );
                not_ours("DECLINE".into())
            }
            (Mode::Full, Port::Dhcp, other) => not_ours(format!("{other:?} needs no answer")),
        }
    }

    /// A BOOTREPLY to `req` of type `kind`, with our identity.
    fn reply(&self, req: &Message, kind: MessageType) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(req.xid(), z, z, z, req.giaddr(), req.chaddr());
        m.set_opcode(Opcode::BootReply);
        m.set_htype(req.htype());
        m.set_flags(req.flags());
        m.set_siaddr(self.server_ip);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(self.server_ip));
        m
    }

    fn lease_options(&self, m: &mut Message, s: &Settings, host: &Host, prefix: u8) {
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(mask_of(prefix)));
        if let Some(r) = s.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        o.insert(DhcpOption::Hostname(host.name.clone()));
        o.insert(DhcpOption::AddressLeaseTime(s.lease_time));
        o.insert(DhcpOption::Renewal(s.lease_time / 2));
        o.insert(DhcpOption::Rebinding(s.lease_time / 8 * 7));
    }

    /// The boot file (BOOTP `file` and option 67) and the TFTP server
    /// (`siaddr`, option 66). A PXE client (firmware or iPXE) given a file
    /// also gets what PXE asks of a boot server's reply: option 60
    /// `PXEClient`, its machine identifier (option 97) echoed, and, BIOS and
    /// iPXE clients on port 67, option 43 with discovery control 8 (boot the
    /// file, no boot server discovery). With `PXEClient` a full-mode offer
    /// is also the PXE offer: iPXE stops waiting for a ProxyDHCP one (11 s).
    fn boot_options(
        &self,
        m: &mut Message,
        req: &Message,
        boot: Option<&Boot>,
        client: Client,
        port: Port,
    ) {
        let Some(boot) = boot else {
            return;
        };
        let file = match boot {
            Boot::Tftp(f) => {
                m.opts_mut().insert(DhcpOption::TFTPServerName(
                    self.server_ip.to_string().into_bytes(),
                ));
                f
            }
            Boot::Http(u) | Boot::Program(u) => u,
        };
        m.set_fname_str(file);
        let o = m.opts_mut();
        o.insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
        if client == Client::Plain {
            return;
        }
        if let Client::HttpBoot(_) = client {
            // The UEFI spec (24.7): an offer to an HTTP boot client carries
            // class HTTPClient, or the client ignores it.
            o.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
            return;
        }
        o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        if let Some(DhcpOption::ClientMachineIdentifier(id)) =
            req.opts().get(OptionCode::ClientMachineIdentifier)
        {
            o.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
        }
        let bypass = matches!(
            client,
            Client::Ipxe(_) | Client::Firmware(Some(0)) | Client::Firmware(None)
        );
        if port == Port::Dhcp && bypass {
            o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
        }
    }

    /// Where a reply goes: the relay, the client's own address (a renewing
    /// client's ACK), or a broadcast on the link.
    fn destination(&self, req: &Message, ack: bool) -> SocketAddrV4 {
        if !req.giaddr().is_unspecified() {
            return SocketAddrV4::new(req.giaddr(), SERVER_PORT);
        }
        if ack && !req.ciaddr().is_unspecified() && !req.flags().broadcast() {
            return SocketAddrV4::new(req.ciaddr(), CLIENT_PORT);
        }
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }
}

fn boot_note(b: &Option<Boot>) -> String {
    match b {
        Some(b) => format!(", boot {b}"),
        None => String::new(),
    }
}

/// Encode a reply, padded to BOOTP's 300 bytes (older PXE ROMs drop
/// shorter ones).
pub fn encode(m: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    let mut v = m.to_vec()?;
    if v.len() < 300 {
        v.resize(300, 0);
    }
    Ok(v)
}

/// Why a packet is not a DHCP message bootd reads.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Dhcp(#[from] dhcproto::error::DecodeError),
    /// `chaddr` has 16 bytes: dhcproto would slice past them (and panic)
    /// when asked for the address of a packet that claims more.
    #[error("hardware address length {0} is more than chaddr's 16 bytes")]
    Hlen(u8),
    #[error("{0} bytes: larger than a DHCP packet bootd reads ({MAX_PACKET})")]
    TooLarge(usize),
}

/// Largest packet decoded (a jumbo frame's DHCP would fit; a client sends
/// ~300 to 600 bytes).
pub const MAX_PACKET: usize = 4096;

/// Decode a request: any bytes give a message or an error, never a panic
/// (fuzzed: `cargo xtask fuzz dhcp_server`), and a message's `chaddr()` is
/// safe to call. Only the options bootd reads ([`READ_OPTIONS`]) are kept.
pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
    if b.len() > MAX_PACKET {
        return Err(DecodeError::TooLarge(b.len()));
    }
    // hlen is the third byte: refused before dhcproto keeps it.
    if let Some(&hlen) = b.get(2) {
        if hlen > 16 {
            return Err(DecodeError::Hlen(hlen));
        }
    }
    let b = keep_read_options(b);
    Ok(Message::decode(&mut dhcproto::Decoder::new(&b))?)
}

/// The options bootd reads in a request: requested address, message type,
/// server identifier, class, user class, client architecture, machine
/// identifier. The others are dropped before dhcproto decodes the message:
/// some of its option decoders assert on lengths (a 1-byte option 152 or a
/// 0-byte option 81 panics a build with debug assertions; found by
/// `cargo xtask fuzz dhcp_server`).
pub const READ_OPTIONS: [u8; 7] = [50, 53, 54, 60, 77, 93, 97];

/// `b` with only [`READ_OPTIONS`] left in its options field (after the
/// 236-byte fixed part and the 4-byte cookie). Walking stops at the end
/// option, or at an option that runs past the packet, as dhcproto's own
/// decoder does.
fn keep_read_options(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const OPTIONS: usize = 240;
    let Some(head) = b.get(..OPTIONS) else {
        return std::borrow::Cow::Borrowed(b);
    };
    let mut out = head.to_vec();
    let mut i = OPTIONS;
    while let Some(&code) = b.get(i) {
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let Some(&len) = b.get(i + 1) else {
                    break;
                };
                let end = i + 2 + usize::from(len);
                let Some(opt) = b.get(i..end) else {
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
    std::borrow::Cow::Owned(out)
}

/// A DHCP request for tests and tools: `kind` from `mac`, with optional
/// architecture (option 93) and user class (option 77, iPXE's bare form).
pub fn request(
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    arch: Option<u16>,
    user_class: Option<&str>,
) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac);
    m.set_opcode(Opcode::BootRequest);
    m.set_htype(HType::Eth);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(a) = arch {
        m.opts_mut()
            .insert(DhcpOption::ClientSystemArchitecture(Architecture(a)));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{a:05}:UNDI:002001").into_bytes(),
        ));
    }
    if let Some(u) = user_class {
        m.opts_mut()
            .insert(DhcpOption::UserClass(u.as_bytes().to_vec()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
[dhcp]
router = "10.99.0.1"
dns = ["10.99.0.53"]
domain = "cluster.test"
lease_time = 600

[[image]]
name = "img"
kernel = "vmlinuz"
cmdline = "console=ttyS0"

[[host]]
name = "cn1"
image = "img"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:56"
ip = "10.99.0.50/24"

[[host]]
name = "cn2"
image = "img"
provision = false
[[host.interfaces]]
mac = "52:54:00:12:34:57"
ip = "10.99.0.51"

[[host]]
name = "cn3"
image = "img"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:58"
"#;

    const CN1: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const CN2: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x57];
    const CN3: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x58];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

    fn inv() -> Inventory {
        Inventory::parse(INV, "inv.toml").unwrap()
    }

    fn responder(mode: Mode) -> Responder {
        Responder::new(mode, SERVER, "http://10.99.0.1:8080/", true)
    }

    fn src() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)
    }

    fn reply(v: Verdict) -> (Message, SocketAddrV4, String) {
        match v {
            Verdict::Reply { msg, to, summary } => {
                // What goes on the wire decodes to the same message (with
                // all its options: `decode` keeps only those of requests).
                let wire = encode(&msg).unwrap();
                assert!(wire.len() >= 300);
                (Message::from_bytes(&wire).unwrap(), to, summary)
            }
            Verdict::Ignore(i) => panic!("ignored: {i:?}"),
        }
    }

    fn opt(m: &Message, c: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(c)
    }

    fn file(m: &Message) -> String {
        let f = String::from_utf8_lossy(m.fname().unwrap_or_default())
            .trim_end_matches('\0')
            .to_string();
        match opt(m, OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(b)) => assert_eq!(b, f.as_bytes()),
            other => assert!(f.is_empty(), "file {f:?} but option 67 {other:?}"),
        }
        f
    }

    fn answer(r: &Responder, m: &Message, port: Port) -> Verdict {
        let i = inv();
        let s = i.dhcp.clone();
        r.answer(&i, &s, m, port, src())
    }

    /// With `chain_ipxe`, plain UEFI firmware (not iPXE) gets snponly.efi,
    /// and the iPXE exchange that follows gets the script, not the binary
    /// again (a boot loop).
    #[test]
    fn chain_ipxe_after_real_firmware_gives_the_script() {
        let r = responder(Mode::Full);
        let text = INV.replacen("[dhcp]\n", "[dhcp]\nchain_ipxe = true\n", 1);
        let i = Inventory::parse(&text, "inv.toml").unwrap();
        let ask = |xid, uc| {
            let d = request(MessageType::Discover, xid, CN1, Some(7), uc);
            let (m, _, _) = reply(r.answer(&i, &i.dhcp, &d, Port::Dhcp, src()));
            file(&m)
        };
        assert_eq!(ask(10, None), "snponly.efi");
        assert_eq!(
            ask(11, Some("iPXE")),
            "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56"
        );
        // A NIC ROM's own iPXE (no firmware exchange before it) still gets
        // the binary first.
        let r2 = responder(Mode::Full);
        let d = request(MessageType::Discover, 20, CN1, Some(0), Some("iPXE"));
        let (m, _, _) = reply(r2.answer(&i, &i.dhcp, &d, Port::Dhcp, src()));
        assert_eq!(file(&m), "undionly.kpxe");
    }

    /// UEFI HTTP boot: the class `HTTPClient` gets the boot program's URL
    /// and its class echoed, no TFTP; then that iPXE gets the script.
    #[test]
    fn http_boot_clients_get_the_program_over_http() {
        let r = Responder::new(Mode::Full, SERVER, "http://10.99.0.1:8080/", false);
        let mut d = request(MessageType::Discover, 5, CN1, Some(16), None);
        d.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
        ));
        assert_eq!(client_of(&d), Client::HttpBoot(Some(16)));
        let (m, _, summary) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(file(&m), "http://10.99.0.1:8080/snponly.efi");
        assert_eq!(
            opt(&m, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
        assert_eq!(opt(&m, OptionCode::TFTPServerName), None);
        assert_eq!(opt(&m, OptionCode::VendorExtensions), None);
        assert!(
            summary.contains("boot http http://10.99.0.1:8080/snponly.efi"),
            "{summary}"
        );
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 99, 0, 50));
        // The class alone names the architecture too.
        let mut d = request(MessageType::Discover, 6, CN1, None, None);
        d.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
        ));
        assert_eq!(client_of(&d), Client::HttpBoot(Some(16)));
        // 32-bit UEFI HTTP boot: no program.
        let mut d = request(MessageType::Discover, 7, CN1, Some(15), None);
        d.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"HTTPClient:Arch:00015".to_vec(),
        ));
        let (m, _, _) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(file(&m), "");
        // The program's own DHCP (iPXE): the script.
        let d = request(MessageType::Discover, 8, CN1, Some(7), Some("iPXE"));
        let (m, _, _) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(
            file(&m),
            "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56"
        );
    }

    /// A host's inventory `firmware` (Grendel's names) wins for the
    /// architecture it runs on; for another architecture the `[dhcp]` file.
    #[test]
    fn the_hosts_firmware_wins_where_it_runs() {
        let r = responder(Mode::Full);
        for (fw, arch, want) in [
            ("ipxe-x86_64.efi", Some(7), "ipxe.efi"),
            ("ipxe-x86_64.efi", Some(9), "ipxe.efi"),
            ("ipxe-x86_64.efi", Some(0), "undionly.kpxe"),
            ("ipxe.pxe", Some(0), "ipxe.pxe"),
            ("ipxe.pxe", Some(7), "snponly.efi"),
            ("snponly-x86_64.efi", Some(7), "snponly.efi"),
        ] {
            let text = INV.replacen(
                "provision = true\n",
                &format!("provision = true\nfirmware = \"{fw}\"\n"),
                1,
            );
            let i = Inventory::parse(&text, "inv.toml").unwrap();
            let d = request(MessageType::Discover, 3, CN1, arch, None);
            let (m, _, _) = reply(r.answer(&i, &i.dhcp, &d, Port::Dhcp, src()));
            assert_eq!(file(&m), want, "{fw} on architecture {arch:?}");
        }
    }

    #[test]
    fn full_mode_offers_and_acks_the_inventory_address() {
        let r = responder(Mode::Full);
        let d = request(MessageType::Discover, 7, CN1, None, None);
        let (m, to, summary) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(
            opt(&m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Offer))
        );
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 7);
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 99, 0, 50));
        assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        assert_eq!(
            opt(&m, OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            opt(&m, OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(&m, OptionCode::Router),
            Some(&DhcpOption::Router(vec![SERVER]))
        );
        assert_eq!(
            opt(&m, OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 99, 0, 53
            )]))
        );
        assert_eq!(
            opt(&m, OptionCode::DomainName),
            Some(&DhcpOption::DomainName("cluster.test".into()))
        );
        assert_eq!(
            opt(&m, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(
            opt(&m, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("cn1".into()))
        );
        // A plain client (nodectl) gets no boot file, nor PXE options.
        assert_eq!(file(&m), "");
        assert_eq!(opt(&m, OptionCode::ClassIdentifier), None);
        assert!(
            summary.contains("OFFER 10.99.0.50 to 52:54:00:12:34:56 (cn1)"),
            "{summary}"
        );

        let mut q = request(MessageType::Request, 7, CN1, None, None);
        q.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        q.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 99, 0, 50)));
        let (m, _, summary) = reply(answer(&r, &q, Port::Dhcp));
        assert_eq!(
            opt(&m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Ack))
        );
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 99, 0, 50));
        assert!(summary.starts_with("ACK 10.99.0.50"), "{summary}");
    }

    #[test]
    fn full_mode_naks_another_address_and_leaves_other_servers_alone() {
        let r = responder(Mode::Full);
        let mut q = request(MessageType::Request, 8, CN1, None, None);
        q.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 99, 0, 99)));
        let (m, to, summary) = reply(answer(&r, &q, Port::Dhcp));
        assert_eq!(
            opt(&m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Nak))
        );
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(to.ip(), &Ipv4Addr::BROADCAST);
        assert!(
            summary.contains("asked for 10.99.0.99, the inventory says 10.99.0.50"),
            "{summary}"
        );

        q.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 99, 0, 2)));
        assert!(
            matches!(answer(&r, &q, Port::Dhcp), Verdict::Ignore(Ignore::NotOurs(w)) if w.contains("server 10.99.0.2"))
        );
    }

    #[test]
    fn unknown_mac_and_non_requests_are_ignored() {
        let r = responder(Mode::Full);
        let d = request(MessageType::Discover, 1, [2, 0, 0, 0, 0, 1], Some(0), None);
        assert!(
            matches!(answer(&r, &d, Port::Dhcp), Verdict::Ignore(Ignore::UnknownMac(m)) if m == "02:00:00:00:00:01")
        );
        let mut d = request(MessageType::Discover, 1, CN1, None, None);
        d.set_opcode(Opcode::BootReply);
        assert!(matches!(
            answer(&r, &d, Port::Dhcp),
            Verdict::Ignore(Ignore::Malformed(_))
        ));
        let mut d = request(MessageType::Discover, 1, CN1, None, None);
        d.opts_mut().remove(OptionCode::MessageType);
        assert!(matches!(
            answer(&r, &d, Port::Dhcp),
            Verdict::Ignore(Ignore::Malformed(_))
        ));
        // cn3 has no address: full mode cannot lease it.
        let d = request(MessageType::Discover, 1, CN3, None, None);
        assert!(
            matches!(answer(&r, &d, Port::Dhcp), Verdict::Ignore(Ignore::NotOurs(w)) if w.contains("no IPv4 address"))
        );
    }

    #[test]
    fn boot_file_by_architecture_and_user_class() {
        let r = responder(Mode::Full);
        for (arch, uc, want) in [
            (Some(0), None, "undionly.kpxe"),
            (Some(7), None, "snponly.efi"),
            (Some(9), None, "snponly.efi"),
            (
                Some(0),
                Some("iPXE"),
                "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56",
            ),
            (
                Some(7),
                Some("iPXE"),
                "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56",
            ),
            // RFC 3004 form.
            (
                Some(0),
                Some("\u{4}iPXE"),
                "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56",
            ),
            (Some(11), None, ""),
        ] {
            let d = request(MessageType::Discover, 3, CN1, arch, uc);
            let (m, _, _) = reply(answer(&r, &d, Port::Dhcp));
            assert_eq!(file(&m), want, "arch {arch:?} user class {uc:?}");
            assert_eq!(m.siaddr(), SERVER);
            let tftp = opt(&m, OptionCode::TFTPServerName);
            if want.ends_with(".kpxe") || want.ends_with(".efi") {
                assert_eq!(
                    tftp,
                    Some(&DhcpOption::TFTPServerName(b"10.99.0.1".to_vec()))
                );
            } else {
                assert_eq!(tftp, None);
            }
            // With a boot file, the offer is a PXE offer too; option 43
            // (boot the file) for BIOS and iPXE, not for UEFI firmware.
            let pxe = opt(&m, OptionCode::ClassIdentifier);
            let vendor = opt(&m, OptionCode::VendorExtensions);
            if want.is_empty() {
                assert_eq!((pxe, vendor), (None, None));
            } else {
                assert_eq!(
                    pxe,
                    Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
                );
                let bypass = arch == Some(0) || uc.is_some();
                assert_eq!(vendor.is_some(), bypass, "arch {arch:?} user class {uc:?}");
            }
        }
        // provision = false: the lease, no boot file.
        let d = request(MessageType::Discover, 3, CN2, Some(0), None);
        let (m, _, _) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 99, 0, 51));
        assert_eq!(file(&m), "");
        // Without a TFTP root, firmware gets nothing to boot but iPXE its script.
        let r = Responder::new(Mode::Full, SERVER, "http://s", false);
        let (m, _, _) = reply(answer(
            &r,
            &request(MessageType::Discover, 3, CN1, Some(0), None),
            Port::Dhcp,
        ));
        assert_eq!(file(&m), "");
        let (m, _, _) = reply(answer(
            &r,
            &request(MessageType::Discover, 3, CN1, Some(0), Some("iPXE")),
            Port::Dhcp,
        ));
        assert_eq!(file(&m), "http://s/boot/ipxe?mac=52:54:00:12:34:56");
    }

    #[test]
    fn proxy_mode_offers_no_address() {
        let r = responder(Mode::Proxy);
        let d = request(MessageType::Discover, 5, CN1, Some(0), None);
        let (m, to, summary) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(
            opt(&m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Offer))
        );
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        assert_eq!(
            opt(&m, OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&m, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        assert_eq!(opt(&m, OptionCode::SubnetMask), None);
        assert_eq!(opt(&m, OptionCode::AddressLeaseTime), None);
        assert_eq!(file(&m), "undionly.kpxe");
        assert!(summary.starts_with("proxy OFFER"), "{summary}");
        // EFI: no discovery-control bypass.
        let (m, _, _) = reply(answer(
            &r,
            &request(MessageType::Discover, 5, CN1, Some(7), None),
            Port::Dhcp,
        ));
        assert_eq!(opt(&m, OptionCode::VendorExtensions), None);
        assert_eq!(file(&m), "snponly.efi");
        // Plain clients and REQUESTs on 67 are the DHCP server's.
        assert!(matches!(
            answer(
                &r,
                &request(MessageType::Discover, 5, CN1, None, None),
                Port::Dhcp
            ),
            Verdict::Ignore(Ignore::NotOurs(_))
        ));
        assert!(matches!(
            answer(
                &r,
                &request(MessageType::Request, 5, CN1, Some(0), None),
                Port::Dhcp
            ),
            Verdict::Ignore(Ignore::NotOurs(_))
        ));
        // Port 4011: an ACK to the client's address, still no yiaddr.
        let mut q = request(MessageType::Request, 6, CN1, Some(7), None);
        q.set_ciaddr(Ipv4Addr::new(10, 99, 0, 77));
        q.opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 77), 4011);
        let i = inv();
        let (m, to, _) = reply(r.answer(&i, &i.dhcp, &q, Port::Pxe, from));
        assert_eq!(
            opt(&m, OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Ack))
        );
        assert_eq!(to, from);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 99, 0, 77));
        assert_eq!(
            opt(&m, OptionCode::ClientMachineIdentifier),
            Some(&DhcpOption::ClientMachineIdentifier(vec![0; 17]))
        );
        assert_eq!(file(&m), "snponly.efi");
        // provision = false: not booted.
        assert!(matches!(
            answer(
                &r,
                &request(MessageType::Discover, 5, CN2, Some(0), None),
                Port::Dhcp
            ),
            Verdict::Ignore(Ignore::NotOurs(_))
        ));
    }

    #[test]
    fn relayed_requests_are_answered_to_the_relay() {
        let r = responder(Mode::Full);
        let mut d = request(MessageType::Discover, 9, CN1, None, None);
        d.set_giaddr(Ipv4Addr::new(10, 99, 0, 254));
        let (m, to, _) = reply(answer(&r, &d, Port::Dhcp));
        assert_eq!(to, SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 254), 67));
        assert_eq!(m.giaddr(), Ipv4Addr::new(10, 99, 0, 254));
    }

    #[test]
    fn chain_ipxe_gives_the_binary_once_per_boot() {
        let text = INV.replace("lease_time = 600", "lease_time = 600\nchain_ipxe = true");
        let i = Inventory::parse(&text, "inv.toml").unwrap();
        let r = responder(Mode::Full);
        let ask = |xid| {
            let d = request(MessageType::Discover, xid, CN1, Some(0), Some("iPXE"));
            file(&reply(r.answer(&i, &i.dhcp, &d, Port::Dhcp, src())).0)
        };
        let url = "http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:12:34:56";
        // The ROM's iPXE: binary (and again for its retransmission).
        assert_eq!(ask(1), "undionly.kpxe");
        assert_eq!(ask(1), "undionly.kpxe");
        // The chained iPXE (a new exchange): the script.
        assert_eq!(ask(2), url);
        assert_eq!(ask(2), url);
        // The next boot starts over.
        assert_eq!(ask(3), "undionly.kpxe");
        assert_eq!(ask(4), url);
    }

    #[test]
    fn settings_are_checked_with_file_and_line() {
        let i = inv();
        assert_eq!(i.dhcp.lease_time, 600);
        assert_eq!(i.dhcp.bios_boot_file, "undionly.kpxe");
        assert_eq!(Inventory::parse("", "x").unwrap().dhcp, Settings::default());
        for (table, want) in [
            ("router = \"10.99.0\"", "inv.toml:3: dhcp.router: bad IPv4 address \"10.99.0\" (want 10.0.0.1)"),
            ("dns = [\"1.1.1.1\", \"::1\"]", "inv.toml:3: dhcp.dns[1]: bad IPv4 address \"::1\""),
            ("lease_time = 5", "inv.toml:3: dhcp.lease_time: 5 seconds is out of range (60 to 31536000)"),
            ("prefix = 33", "inv.toml:3: dhcp.prefix: prefix length 33 is out of range (1 to 30)"),
            ("domain = \"a..b\"", "inv.toml:3: dhcp.domain: bad domain name \"a..b\""),
            ("bios_boot_file = \"../etc/passwd\"", "inv.toml:3: dhcp.bios_boot_file: bad boot file \"../etc/passwd\": empty, . or .. component"),
            ("efi_boot_file = \"/srv/ipxe.efi\"", "inv.toml:3: dhcp.efi_boot_file: bad boot file \"/srv/ipxe.efi\": absolute"),
            ("next_server = \"10.0.0.1\"", "inv.toml:3: unknown field `next_server`"),
        ] {
            let text = format!("\n[dhcp]\n{table}\n");
            let e = Inventory::parse(&text, "inv.toml").unwrap_err().to_string();
            assert!(e.starts_with(want), "{table}: {e}");
        }
    }

    #[test]
    fn client_kinds() {
        assert_eq!(
            client_of(&request(MessageType::Discover, 1, CN1, None, None)),
            Client::Plain
        );
        assert_eq!(
            client_of(&request(MessageType::Discover, 1, CN1, Some(7), None)),
            Client::Firmware(Some(7))
        );
        assert_eq!(
            client_of(&request(
                MessageType::Discover,
                1,
                CN1,
                Some(0),
                Some("iPXE")
            )),
            Client::Ipxe(Some(0))
        );
        let mut m = request(MessageType::Discover, 1, CN1, None, None);
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00009:UNDI:003016".to_vec(),
        ));
        assert_eq!(client_of(&m), Client::Firmware(Some(9)));
        // Another user class, or a truncated RFC 3004 list, is not iPXE.
        assert_eq!(
            client_of(&request(
                MessageType::Discover,
                1,
                CN1,
                Some(0),
                Some("gPXE")
            )),
            Client::Firmware(Some(0))
        );
        assert_eq!(
            client_of(&request(
                MessageType::Discover,
                1,
                CN1,
                Some(0),
                Some("\u{9}iPXE")
            )),
            Client::Firmware(Some(0))
        );
    }

    /// fuzz/artifacts/dhcp_server/crash-8b9772…: options whose length
    /// dhcproto asserts on (152 with 1 byte, 81 with 0, 94 with 1) are
    /// dropped before it decodes them; the options bootd reads stay.
    #[test]
    fn options_bootd_does_not_read_never_reach_dhcproto() {
        let d = request(MessageType::Discover, 1, CN1, Some(7), Some("iPXE"));
        let mut wire = d.to_vec().unwrap();
        assert_eq!(wire.pop(), Some(255));
        wire.extend_from_slice(&[152, 1, 0, 81, 0, 94, 1, 1, 80, 2, 0, 0, 255]);
        let m = decode(&wire).expect("decodes");
        assert_eq!(message_type(&m), Some(MessageType::Discover));
        assert_eq!(client_of(&m), Client::Ipxe(Some(7)));
        assert_eq!(m.opts().iter().count(), 4);
        // An option running past the packet ends the options, as in dhcproto.
        let mut cut = d.to_vec().unwrap();
        cut.pop();
        cut.extend_from_slice(&[60, 200, b'P']);
        assert_eq!(
            message_type(&decode(&cut).unwrap()),
            Some(MessageType::Discover)
        );
        // Shorter than the fixed part: dhcproto's error, no panic.
        assert!(decode(&wire[..100]).is_err());
    }
}
