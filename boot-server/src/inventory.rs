//! The inventory: hosts and boot images in TOML, checked with errors that
//! name the file, line and field; reloaded when the file changes; and
//! `bootd import-grendel` from Grendel's JSON.
//!
//! ```toml
//! [[image]]
//! name = "squareos-9.2"
//! kernel = "vmlinuz"          # relative to the served root, or a URL
//! initrd = ["initrd.img"]
//! liveimg = "live.squashfs"
//! cmdline = 'root=live:{{ $.liveimg }} BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }}'
//! [[host]]
//! name = "cn1"
//! image = "squareos-9.2"
//! provision = true
//! [[host.interfaces]]
//! mac = "52:54:00:12:34:56"
//! ip = "10.0.2.15/24"
//! ```
use crate::status::normalise_mac;
use crate::template::{self, object};
use gtmpl::Value;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use toml::Spanned;

/// Why an inventory was refused: `FILE:LINE: FIELD: REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {}{reason}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct Invalid {
    pub file: String,
    pub line: usize,
    /// `host[0].interfaces[1].mac`; `None` for TOML syntax errors.
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    image: Vec<RawImage>,
    #[serde(default)]
    host: Vec<RawHost>,
    dhcp: Option<crate::dhcp::RawSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: Spanned<String>,
    kernel: Spanned<String>,
    #[serde(default)]
    initrd: Vec<Spanned<String>>,
    liveimg: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    postscript: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    image: Option<Spanned<String>>,
    #[serde(default)]
    provision: bool,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    interfaces: Vec<RawNic>,
    /// The fingerprint of the node's identity key (`SHA256:…`).
    key: Option<Spanned<String>>,
    /// Accept the host's first key without `bootd arm`.
    #[serde(default)]
    enroll: bool,
    /// The boot program its firmware gets (Grendel's names, shimx64.efi).
    firmware: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNic {
    mac: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    #[serde(default)]
    bmc: bool,
    fqdn: Option<String>,
    ifname: Option<String>,
    vlan: Option<String>,
    mtu: Option<u16>,
}

/// A boot image.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub kernel: String,
    pub initrd: Vec<String>,
    pub liveimg: Option<String>,
    /// The Go template of the kernel command line.
    pub cmdline: String,
    pub postscript: Option<String>,
}

/// A network interface.
#[derive(Debug, Clone, Default)]
pub struct Nic {
    /// Lowercase, colon-separated.
    pub mac: Option<String>,
    /// As written: an address, with or without `/prefix`.
    pub ip: Option<String>,
    pub bmc: bool,
    /// Grendel's `fqdn`, `ifname`, `vlan` and `mtu`, for the cmdline
    /// template (`$.nic.FQDN`, `$.nic.Name`, `$.nic.VLAN`, `$.nic.MTU`).
    pub fqdn: Option<String>,
    pub ifname: Option<String>,
    pub vlan: Option<String>,
    pub mtu: Option<u16>,
}

/// A host.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub image: Option<String>,
    pub provision: bool,
    pub tags: Vec<String>,
    pub interfaces: Vec<Nic>,
    /// The fingerprint its identity key must have (`SHA256:…`), if pinned.
    pub key: Option<String>,
    /// Its first key is accepted without `bootd arm` (trust on first use).
    pub enroll: bool,
    /// The iPXE build its firmware gets over TFTP, instead of the one for
    /// its architecture (`[dhcp]`'s `bios_boot_file` / `efi_boot_file`).
    pub firmware: Option<Firmware>,
}

/// A boot program by Grendel's name (`model.Firmware`: the iPXE builds)
/// or nodeboot's (`shimx64.efi`), the file bootd's TFTP root holds for it
/// (Debian's package names where it has one), and the client
/// architectures (DHCP option 93) it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    pub name: &'static str,
    pub file: &'static str,
    pub arches: &'static [u16],
}

/// Grendel's firmware names.
pub const FIRMWARE: &[Firmware] = &[
    Firmware {
        name: "ipxe.pxe",
        file: "ipxe.pxe",
        arches: &[0],
    },
    Firmware {
        name: "undionly.kpxe",
        file: "undionly.kpxe",
        arches: &[0],
    },
    Firmware {
        name: "ipxe-i386.efi",
        file: "ipxe-i386.efi",
        arches: &[6],
    },
    Firmware {
        name: "ipxe-x86_64.efi",
        file: "ipxe.efi",
        arches: &[7, 9],
    },
    Firmware {
        name: "snponly-x86_64.efi",
        file: "snponly.efi",
        arches: &[7, 9],
    },
    Firmware {
        name: "snponly-arm64.efi",
        file: "snponly-arm64.efi",
        arches: &[11],
    },
    // Secure Boot (not one of Grendel's): Debian's signed shim
    // (shim-signed: shimx64.efi.signed), which fetches grubx64.efi (the
    // signed GRUB netboot image, grub-efi-amd64-signed:
    // grubnetx64.efi.signed) from the same TFTP directory; GRUB reads
    // bootd's grub/grub.cfg (see `crate::grub`).
    Firmware {
        name: "shimx64.efi",
        file: "shimx64.efi",
        arches: &[7, 9],
    },
];

impl Firmware {
    pub fn by_name(name: &str) -> Option<Firmware> {
        FIRMWARE.iter().copied().find(|f| f.name == name)
    }
}

/// A checked inventory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub images: Vec<Image>,
    pub hosts: Vec<Host>,
    /// MAC → (host index, interface index).
    by_mac: HashMap<String, (usize, usize)>,
    /// `[dhcp]`: what bootd's DHCP responder hands out.
    pub dhcp: crate::dhcp::Settings,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn valid_ip(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(addr) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= max) && !p.starts_with('+'))
}

/// Go's `netip.Prefix` of an interface's address as Grendel prints it
/// (`10.0.2.15/24`; an address written without `/prefix` gets the
/// inventory's `[dhcp]` prefix), or `None`.
fn prefix(nic: &Nic, default_prefix: u8) -> Option<(std::net::IpAddr, u8)> {
    let ip = nic.ip.as_deref()?;
    let (a, p) = match ip.split_once('/') {
        Some((a, p)) => (a, p.parse().ok()?),
        None => (ip, default_prefix),
    };
    Some((a.parse().ok()?, p))
}

/// Grendel's `model.NetInterface` with its methods that take no argument
/// (`AddrString`, `CIDR`, `NetmaskString`, `Gateway`, `DNS`, …; Gateway,
/// DNS and DomainSearch from the inventory's `[dhcp]`).
fn nic_data(nic: &Nic, dhcp: &crate::dhcp::Settings) -> Value {
    let p = prefix(nic, dhcp.prefix);
    let cidr = p.map(|(a, l)| format!("{a}/{l}")).unwrap_or_default();
    let netmask = match p {
        Some((_, l)) if l <= 32 => {
            std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0))
                .to_string()
        }
        _ => "<nil>".to_string(),
    };
    let fqdn = nic.fqdn.clone().unwrap_or_default();
    let short = fqdn.split('.').next().unwrap_or_default().to_string();
    let domain = match fqdn.split_once('.') {
        Some((_, d)) => d.to_string(),
        None => fqdn.clone(),
    };
    let dns: Vec<Value> = dhcp
        .dns
        .iter()
        .map(|d| Value::from(d.to_string()))
        .collect();
    let mtu = nic.mtu.unwrap_or(0);
    object(vec![
        ("ID", 0.into()),
        ("MAC", nic.mac.clone().unwrap_or_default().into()),
        ("Name", nic.ifname.clone().unwrap_or_default().into()),
        (
            "IP",
            if cidr.is_empty() {
                "invalid Prefix".to_string()
            } else {
                cidr.clone()
            }
            .into(),
        ),
        ("FQDN", fqdn.clone().into()),
        ("BMC", nic.bmc.into()),
        ("VLAN", nic.vlan.clone().unwrap_or_default().into()),
        ("MTU", mtu.into()),
        ("CIDR", cidr.into()),
        (
            "AddrString",
            p.map(|(a, _)| a.to_string()).unwrap_or_default().into(),
        ),
        ("NetmaskString", netmask.into()),
        (
            "Gateway",
            dhcp.router
                .map_or("invalid IP".to_string(), |r| r.to_string())
                .into(),
        ),
        ("DNS", Value::from(dns.clone())),
        ("DNSList", Value::from(dns)),
        (
            "DomainSearch",
            Value::from(
                dhcp.domain
                    .iter()
                    .map(|d| Value::from(d.clone()))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("InterfaceMTU", (if mtu == 0 { 1500 } else { mtu }).into()),
        ("HostName", fqdn.into()),
        ("ShortName", short.into()),
        ("Domain", domain.into()),
    ])
}

/// Grendel's `Endpoints`, its methods but `ProvisionURL NAME`. bootd
/// serves the kernel, initrds and live image under `base` (not
/// Grendel's `/boot/TOKEN/file/…`) and `/repo/`; the others keep
/// Grendel's shape, `base/boot/TOKEN/kickstart`, which bootd does not
/// serve ([`UNSERVED_ENDPOINTS`]).
fn endpoints(image: &Image, base: &str, token: &str) -> Value {
    let base = base.trim_end_matches('/');
    let grendel = |e: &str| format!("{base}/boot/{token}/{e}");
    let mut fields = vec![
        ("BaseURL", base.to_string()),
        ("RepoURL", format!("{base}/repo")),
        ("KernelURL", absolute(base, &image.kernel)),
        (
            "LiveImageURL",
            image
                .liveimg
                .as_deref()
                .map_or_else(|| grendel("file/liveimg"), |l| absolute(base, l)),
        ),
    ];
    for (name, e) in UNSERVED_ENDPOINTS {
        fields.push((name, grendel(e)));
    }
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    fields.push(("BootFileURL", format!("tftp://{host}/{token}")));
    let mut fields: Vec<(&str, Value)> = fields.into_iter().map(|(k, v)| (k, v.into())).collect();
    // `InitrdURL N` (a method with an argument): the list, which
    // `template` indexes.
    fields.push((
        "InitrdURL",
        Value::from(
            image
                .initrd
                .iter()
                .map(|i| Value::from(absolute(base, i)))
                .collect::<Vec<_>>(),
        ),
    ));
    object(fields)
}

/// Grendel's endpoints bootd does not serve, and their paths.
pub const UNSERVED_ENDPOINTS: &[(&str, &str)] = &[
    ("RootFSURL", "file/rootfs"),
    ("KickstartURL", "kickstart"),
    ("IpxeURL", "ipxe"),
    ("CompleteURL", "complete"),
    ("CloudInitURL", "cloud-init/"),
    ("UserDataURL", "cloud-init/user-data"),
    ("MetaDataURL", "cloud-init/meta-data"),
    ("VendorDataURL", "cloud-init/vendor-data"),
    ("IgnitionURL", "pxe-config.ign"),
    ("ProxmoxURL", "proxmox"),
];

/// What the cmdline template sees for one host and interface: Grendel's
/// data (`token`, `endpoints`, `bootimage`, `nic`, `host`, `rootpw`,
/// `adminSSHPubKeys`, upstream's `headers`) as a Go map, so a missing key
/// prints `<no value>`, and bootd's `image`, `liveimg` (the live image's
/// URL) and `address` (`base`).
pub fn template_data(
    dhcp: &crate::dhcp::Settings,
    host: &Host,
    nic: &Nic,
    image: &Image,
    address: &str,
    token: &str,
) -> Value {
    let liveimg = image
        .liveimg
        .as_deref()
        .map(|l| absolute(address, l))
        .unwrap_or_default();
    let strings =
        |v: &[String]| Value::from(v.iter().map(|t| Value::from(t.clone())).collect::<Vec<_>>());
    let img = object(vec![
        ("ID", 0.into()),
        ("UID", "".into()),
        ("Name", image.name.clone().into()),
        ("KernelPath", image.kernel.clone().into()),
        ("InitrdPaths", strings(&image.initrd)),
        (
            "LiveImage",
            image.liveimg.clone().unwrap_or_default().into(),
        ),
        ("CommandLine", image.cmdline.clone().into()),
        ("Verify", false.into()),
        ("ProvisionTemplates", template::map(vec![])),
    ]);
    template::map(vec![
        ("token", token.to_string().into()),
        ("endpoints", endpoints(image, address, token)),
        (
            "host",
            object(vec![
                ("ID", 0.into()),
                ("UID", "".into()),
                ("Name", host.name.clone().into()),
                (
                    "Interfaces",
                    Value::from(
                        host.interfaces
                            .iter()
                            .map(|n| nic_data(n, dhcp))
                            .collect::<Vec<_>>(),
                    ),
                ),
                ("Bonds", Value::from(Vec::<Value>::new())),
                ("Tags", strings(&host.tags)),
                ("Provision", host.provision.into()),
                (
                    "Firmware",
                    host.firmware.map(|f| f.name).unwrap_or_default().into(),
                ),
                ("BootImage", host.image.clone().unwrap_or_default().into()),
            ]),
        ),
        ("nic", nic_data(nic, dhcp)),
        ("bootimage", img.clone()),
        ("rootpw", "".into()),
        ("adminSSHPubKeys", Value::from(Vec::<Value>::new())),
        ("headers", template::map(vec![])),
        ("image", img),
        ("liveimg", liveimg.into()),
        ("address", address.to_string().into()),
    ])
}

/// `path` as a URL under `base` (kept as it is when it is already a URL).
pub fn absolute(base: &str, path: &str) -> String {
    if path.contains("://") {
        path.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }
}

impl Inventory {
    /// Parse and check `text` (read from `file`, named in errors).
    pub fn parse(text: &str, file: &str) -> Result<Inventory, Invalid> {
        let err = |span: std::ops::Range<usize>, field: String, reason: String| Invalid {
            file: file.to_string(),
            line: line_of(text, span.start),
            field: Some(field),
            reason,
        };
        let raw: RawInventory = toml::from_str(text).map_err(|e| Invalid {
            file: file.to_string(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            field: None,
            reason: e.message().trim().replace('\n', "; "),
        })?;
        let mut inv = Inventory {
            dhcp: crate::dhcp::Settings::check(raw.dhcp.as_ref(), &err)?,
            ..Inventory::default()
        };
        let mut image_names: HashMap<String, usize> = HashMap::new();
        let mut compiled = Vec::new();
        for (i, im) in raw.image.iter().enumerate() {
            let f = |n: &str| format!("image[{i}].{n}");
            if im.name.get_ref().is_empty() {
                return Err(err(im.name.span(), f("name"), "empty".into()));
            }
            if let Some(first) = image_names.insert(im.name.get_ref().clone(), i) {
                return Err(err(
                    im.name.span(),
                    f("name"),
                    format!(
                        "duplicate image name {:?} (also image[{first}])",
                        im.name.get_ref()
                    ),
                ));
            }
            if im.kernel.get_ref().is_empty() {
                return Err(err(im.kernel.span(), f("kernel"), "empty".into()));
            }
            let cmdline = im
                .cmdline
                .as_ref()
                .map(|c| c.get_ref().clone())
                .unwrap_or_default();
            // Parsed once here, rendered below for each host using it.
            compiled.push(template::compile(&cmdline).map_err(|e| {
                err(
                    im.cmdline.as_ref().map_or(im.name.span(), |c| c.span()),
                    f("cmdline"),
                    format!("bad template: {e}"),
                )
            })?);
            inv.images.push(Image {
                name: im.name.get_ref().clone(),
                kernel: im.kernel.get_ref().clone(),
                initrd: im.initrd.iter().map(|s| s.get_ref().clone()).collect(),
                liveimg: im.liveimg.as_ref().map(|s| s.get_ref().clone()),
                cmdline,
                postscript: im.postscript.as_ref().map(|s| s.get_ref().clone()),
            });
        }
        let mut host_names: HashMap<String, usize> = HashMap::new();
        for (h, rh) in raw.host.iter().enumerate() {
            let f = |n: &str| format!("host[{h}].{n}");
            let name = rh.name.get_ref();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(err(
                    rh.name.span(),
                    f("name"),
                    format!("bad host name {name:?} (1 to 64 of [A-Za-z0-9.-])"),
                ));
            }
            if let Some(first) = host_names.insert(name.clone(), h) {
                return Err(err(
                    rh.name.span(),
                    f("name"),
                    format!("duplicate host name {name:?} (also host[{first}])"),
                ));
            }
            let image_idx = match &rh.image {
                Some(im) => match image_names.get(im.get_ref()) {
                    Some(&i) => Some(i),
                    None => {
                        let mut known: Vec<_> = image_names.keys().map(String::as_str).collect();
                        known.sort();
                        return Err(err(
                            im.span(),
                            f("image"),
                            format!(
                                "unknown image {:?} (images: {})",
                                im.get_ref(),
                                known.join(", ")
                            ),
                        ));
                    }
                },
                None => None,
            };
            let mut nics = Vec::new();
            for (n, rn) in rh.interfaces.iter().enumerate() {
                let f = |x: &str| format!("host[{h}].interfaces[{n}].{x}");
                let mac = match &rn.mac {
                    Some(m) => {
                        let Some(norm) = normalise_mac(m.get_ref()) else {
                            return Err(err(
                                m.span(),
                                f("mac"),
                                format!("bad MAC {:?} (want aa:bb:cc:dd:ee:ff)", m.get_ref()),
                            ));
                        };
                        if let Some(&(oh, on)) = inv.by_mac.get(&norm) {
                            return Err(err(
                                m.span(),
                                f("mac"),
                                format!("duplicate MAC {norm} (also host[{oh}].interfaces[{on}])"),
                            ));
                        }
                        inv.by_mac.insert(norm.clone(), (h, n));
                        Some(norm)
                    }
                    None => None,
                };
                if let Some(ip) = &rn.ip {
                    if !valid_ip(ip.get_ref()) {
                        return Err(err(
                            ip.span(),
                            f("ip"),
                            format!("bad IP {:?} (want 10.0.0.1 or 10.0.0.1/24)", ip.get_ref()),
                        ));
                    }
                }
                nics.push(Nic {
                    mac,
                    ip: rn.ip.as_ref().map(|s| s.get_ref().clone()),
                    bmc: rn.bmc,
                    fqdn: rn.fqdn.clone(),
                    ifname: rn.ifname.clone(),
                    vlan: rn.vlan.clone(),
                    mtu: rn.mtu,
                });
            }
            if let Some(k) = &rh.key {
                if !nodeboot_identity::is_fingerprint(k.get_ref()) {
                    return Err(err(
                        k.span(),
                        f("key"),
                        format!(
                            "bad key fingerprint {:?} (want SHA256: and 43 base64 characters, \
                             as `nodectl identity show` prints)",
                            k.get_ref()
                        ),
                    ));
                }
            }
            let firmware = match rh.firmware.as_ref().filter(|f| !f.get_ref().is_empty()) {
                None => None,
                Some(fw) => Some(Firmware::by_name(fw.get_ref()).ok_or_else(|| {
                    err(
                        fw.span(),
                        f("firmware"),
                        format!(
                            "unknown firmware {:?} (Grendel's names, and shimx64.efi for Secure Boot: {})",
                            fw.get_ref(),
                            FIRMWARE
                                .iter()
                                .map(|x| x.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?),
            };
            let host = Host {
                name: name.clone(),
                image: rh.image.as_ref().map(|s| s.get_ref().clone()),
                provision: rh.provision,
                tags: rh.tags.clone(),
                interfaces: nics,
                key: rh.key.as_ref().map(|k| k.get_ref().clone()),
                enroll: rh.enroll,
                firmware,
            };
            // Render the command line now for each of the host's boot
            // interfaces, so a template that fails on this host's data
            // (`{{ $.host.Nope }}`) is refused here and not at boot.
            if let (Some(i), Some(raw_im)) = (image_idx, image_idx.map(|i| &raw.image[i])) {
                let image = &inv.images[i];
                for nic in host.interfaces.iter().filter(|n| n.mac.is_some() && !n.bmc) {
                    let data =
                        template_data(&inv.dhcp, &host, nic, image, "http://bootd.invalid", "");
                    if let Err(e) = compiled[i].render(&data) {
                        let span = raw_im
                            .cmdline
                            .as_ref()
                            .map_or(raw_im.name.span(), |c| c.span());
                        return Err(err(
                            span,
                            format!("image[{i}].cmdline"),
                            format!("cannot render for host {}: {e}", host.name),
                        ));
                    }
                }
            }
            inv.hosts.push(host);
        }
        Ok(inv)
    }

    /// Read and check a file.
    pub fn load(path: &Path) -> Result<Inventory, Invalid> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Invalid {
            file: file.clone(),
            line: 0,
            field: None,
            reason: format!("cannot read: {e}"),
        })?;
        Inventory::parse(&text, &file)
    }

    /// The host and interface with this MAC (any spelling).
    pub fn by_mac(&self, mac: &str) -> Option<(&Host, &Nic)> {
        let norm = normalise_mac(mac)?;
        let &(h, n) = self.by_mac.get(&norm)?;
        let host = &self.hosts[h];
        Some((host, &host.interfaces[n]))
    }

    /// Whether an interface of a host has this address.
    pub fn has_ip(&self, ip: std::net::IpAddr) -> bool {
        self.hosts.iter().flat_map(|h| &h.interfaces).any(|n| {
            n.ip.as_deref()
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                == Some(ip)
        })
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }
}

/// What the host with a MAC boots, as an iPXE script or a GRUB config
/// says it.
pub enum Entry<'a> {
    /// `provision = false`: no network boot, back to the firmware (which
    /// boots from the local disk).
    Local { host: &'a Host, mac: &'a str },
    /// The image, with its command line rendered.
    Boot {
        host: &'a Host,
        mac: &'a str,
        image: &'a Image,
        cmdline: String,
    },
}

/// The entry of `mac`, its command line rendered with URLs under `base`
/// (`http://host:port`); `extra` (`nodeboot.token=…`), when not empty,
/// ends the command line. `None` when no interface has that MAC.
pub fn entry<'a>(
    inv: &'a Inventory,
    mac: &str,
    base: &str,
    extra: &str,
) -> Option<Result<Entry<'a>, String>> {
    let (host, nic) = inv.by_mac(mac)?;
    let mac = nic.mac.as_deref().unwrap_or_default();
    if !host.provision {
        return Some(Ok(Entry::Local { host, mac }));
    }
    let Some(image) = host.image.as_deref().and_then(|n| inv.image(n)) else {
        return Some(Err(format!("host {} has no boot image", host.name)));
    };
    // `$.token`: the token of `nodeboot.token=…`, Grendel's boot token's
    // counterpart.
    let token = extra.strip_prefix("nodeboot.token=").unwrap_or_default();
    let data = template_data(&inv.dhcp, host, nic, image, base, token);
    let mut cmdline = match template::render(&image.cmdline, &data) {
        Ok(c) => c,
        Err(e) => return Some(Err(format!("image {} cmdline: {e}", image.name))),
    };
    if !extra.is_empty() {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(extra);
    }
    Some(Ok(Entry::Boot {
        host,
        mac,
        image,
        cmdline,
    }))
}

/// The iPXE script for `mac` (see [`entry`]).
pub fn ipxe_script(
    inv: &Inventory,
    mac: &str,
    base: &str,
    extra: &str,
) -> Option<Result<String, String>> {
    let (host, mac, image, mut cmdline) = match entry(inv, mac, base, extra)? {
        Err(e) => return Some(Err(e)),
        Ok(Entry::Local { host, mac }) => {
            return Some(Ok(format!(
                "#!ipxe\n# {} ({mac}): provision = false in the inventory, so no network boot:\n# exit hands back to the firmware, which boots from the local disk.\nexit\n",
                host.name
            )))
        }
        Ok(Entry::Boot {
            host,
            mac,
            image,
            cmdline,
        }) => (host, mac, image, cmdline),
    };
    let mut s = format!("#!ipxe\n# {} ({mac}), image {}\n", host.name, image.name);
    let kernel = absolute(base, &image.kernel);
    // Under UEFI, Linux's EFI stub loads its initrds by name from the
    // files iPXE downloaded: `initrd=NAME` for each, first (ignored under
    // BIOS).
    let names: Vec<String> = image
        .initrd
        .iter()
        .map(|i| format!("initrd={}", i.rsplit('/').next().unwrap_or(i)))
        .collect();
    if !names.is_empty() {
        cmdline = if cmdline.is_empty() {
            names.join(" ")
        } else {
            format!("{} {cmdline}", names.join(" "))
        };
    }
    if cmdline.is_empty() {
        s.push_str(&format!("kernel {kernel}\n"));
    } else {
        s.push_str(&format!("kernel {kernel} {cmdline}\n"));
    }
    for i in &image.initrd {
        s.push_str(&format!("initrd {}\n", absolute(base, i)));
    }
    s.push_str("boot\n");
    Some(Ok(s))
}

/// One word of a GRUB script, single-quoted: nothing inside is expanded
/// (`$`, `;`, `{`), and a `'` is written `'\''`.
pub fn grub_word(w: &str) -> String {
    format!("'{}'", w.replace('\'', "'\\''"))
}

/// A GRUB config that says `why` and hands back to the firmware (`exit`),
/// which tries its next boot entry.
pub fn grub_exit(why: &str, pause: bool) -> String {
    let why = why.replace(['\n', '\r'], " ");
    format!(
        "# nodeboot: {why}\necho {}\n{}exit\n",
        grub_word(&format!("nodeboot: {why}")),
        if pause { "sleep 5\n" } else { "" }
    )
}

/// The file of the TFTP root a GRUB config names for `path` (`vmlinuz` →
/// `/vmlinuz`), or why GRUB cannot read it.
fn grub_path(image: &Image, path: &str) -> Result<String, String> {
    if path.contains("://") {
        return Err(format!(
            "image {}: {path} is a URL, and Debian's signed GRUB reads files over TFTP only \
             (from bootd's --root): name a file of the root",
            image.name
        ));
    }
    Ok(format!("/{}", path.trim_start_matches('/')))
}

/// The GRUB config for `mac` (see [`entry`]): the kernel and initrds
/// from bootd over the device GRUB was loaded from (TFTP for GRUB's
/// netboot image, as shim fetched it), the command line as for iPXE.
/// When the kernel or an initrd is refused (under Secure Boot, a kernel
/// not signed by a key shim trusts: `error: bad shim signature`), the
/// config says so and hands back to the firmware after 10 s.
pub fn grub_config(
    inv: &Inventory,
    mac: &str,
    base: &str,
    extra: &str,
) -> Option<Result<String, String>> {
    let (host, mac, image, cmdline) = match entry(inv, mac, base, extra)? {
        Err(e) => return Some(Err(e)),
        Ok(Entry::Local { host, mac }) => {
            return Some(Ok(grub_exit(
                &format!(
                    "{} ({mac}): provision = false in the inventory, so no network boot: \
                     back to the firmware, which boots from the local disk",
                    host.name
                ),
                false,
            )))
        }
        Ok(Entry::Boot {
            host,
            mac,
            image,
            cmdline,
        }) => (host, mac, image, cmdline),
    };
    // GRUB's linux command writes \ ' and " of its arguments as \\ \' \",
    // which the kernel's command line parser does not undo.
    if let Some(c) = cmdline.chars().find(|c| matches!(c, '\\' | '\'' | '"')) {
        return Some(Err(format!(
            "image {} cmdline: GRUB would pass {c:?} to the kernel escaped; \
             a command line booted by GRUB cannot hold \\, ' or \"",
            image.name
        )));
    }
    let kernel = match grub_path(image, &image.kernel) {
        Ok(k) => k,
        Err(e) => return Some(Err(e)),
    };
    let mut initrds = Vec::new();
    for i in &image.initrd {
        match grub_path(image, i) {
            Ok(p) => initrds.push(grub_word(&p)),
            Err(e) => return Some(Err(e)),
        }
    }
    let args: Vec<String> = std::iter::once(kernel.as_str())
        .chain(cmdline.split_ascii_whitespace())
        .map(grub_word)
        .collect();
    let mut s = format!(
        "# nodeboot: {} ({mac}), image {}\necho {}\nif linux {} ; then\n",
        host.name,
        image.name,
        grub_word(&format!(
            "nodeboot: {} boots image {} ({kernel})",
            host.name, image.name
        )),
        args.join(" ")
    );
    if initrds.is_empty() {
        s.push_str("  boot\n");
    } else {
        s.push_str(&format!(
            "  if initrd {} ; then\n    boot\n  fi\n",
            initrds.join(" ")
        ));
    }
    s.push_str(&format!(
        "fi\necho {}\nsleep 10\nexit\n",
        grub_word(&format!(
            "nodeboot: {} could not boot image {} (the error is above): \
             back to the firmware in 10 s",
            host.name, image.name
        ))
    ));
    Some(Ok(s))
}

/// Whether `path` (as a TFTP client asks it, `/vmlinuz` or `vmlinuz`) is
/// the kernel or an initrd of an image: the files a GRUB config names.
pub fn is_boot_file(inv: &Inventory, path: &str) -> bool {
    let want = path.trim_start_matches('/');
    !want.is_empty()
        && inv.images.iter().any(|i| {
            std::iter::once(&i.kernel)
                .chain(&i.initrd)
                .any(|f| !f.contains("://") && f.trim_start_matches('/') == want)
        })
}

/// The current inventory, replaced whole when the file changes.
#[derive(Debug)]
pub struct Live {
    path: PathBuf,
    current: RwLock<Arc<Inventory>>,
    /// The file's mtime and size when last loaded (or tried).
    stamp: std::sync::Mutex<crate::reload::Stamp>,
}

impl crate::reload::Reloadable for Live {
    fn paths(&self) -> Vec<&Path> {
        vec![&self.path]
    }

    fn last(&self) -> &std::sync::Mutex<crate::reload::Stamp> {
        &self.stamp
    }

    fn reload_logged(&self) -> bool {
        Live::reload_logged(self)
    }
}

impl Live {
    /// Load `path` (an error here stops bootd) and start a thread that
    /// polls its mtime and size every second: a changed file that checks
    /// out replaces the inventory, one that does not is logged and the
    /// previous one kept.
    pub fn start(path: &Path) -> anyhow::Result<Arc<Live>> {
        let last = crate::reload::stamp(&[path]);
        let inv = Inventory::load(path)?;
        tracing::info!(
            "inventory {}: {} hosts, {} images",
            path.display(),
            inv.hosts.len(),
            inv.images.len()
        );
        let live = Arc::new(Live {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(inv)),
            stamp: std::sync::Mutex::new(last),
        });
        crate::reload::watch(&live, "bootd-inventory")?;
        Ok(live)
    }

    /// Load the file again now (SIGHUP): `true` when it checked out and
    /// replaced the inventory; otherwise the error is logged and the
    /// previous inventory kept.
    pub fn reload_logged(&self) -> bool {
        crate::reload::mark(self);
        match Inventory::load(&self.path) {
            Ok(inv) => {
                tracing::info!(
                    "inventory reloaded: {} hosts, {} images",
                    inv.hosts.len(),
                    inv.images.len()
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(inv);
                true
            }
            Err(e) => {
                tracing::error!("inventory not reloaded, keeping the previous one: {e}");
                false
            }
        }
    }

    pub fn get(&self) -> Arc<Inventory> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

// ---- Grendel import -------------------------------------------------------

/// Grendel's `model.Host` as JSON (`boot_image`, `interfaces`, `bonds`,
/// `firmware`, …); `id`/`uid`/`_id` are ignored, as are unknown fields
/// (as Go's encoding/json does). `null` is as absent.
#[derive(Debug, Deserialize)]
struct GrendelHost {
    name: Option<String>,
    #[serde(default)]
    provision: Option<bool>,
    #[serde(default)]
    boot_image: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    interfaces: Option<Vec<GrendelNic>>,
    #[serde(default)]
    bonds: Option<Vec<GrendelBond>>,
    #[serde(default)]
    firmware: Option<String>,
}

/// Grendel's `model.NetInterface`.
#[derive(Debug, Deserialize)]
struct GrendelNic {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    bmc: Option<bool>,
    #[serde(default)]
    fqdn: Option<String>,
    #[serde(default)]
    ifname: Option<String>,
    #[serde(default)]
    vlan: Option<String>,
    #[serde(default)]
    mtu: Option<u16>,
}

/// Grendel's `model.Bond`: an interface and its peers' MACs.
#[derive(Debug, Deserialize)]
struct GrendelBond {
    #[serde(default)]
    ifname: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    peers: Option<Vec<String>>,
}

/// Grendel's `model.BootImage` (upstream's and the fork's fields).
#[derive(Debug, Deserialize)]
struct GrendelImage {
    name: Option<String>,
    kernel: Option<String>,
    #[serde(default)]
    initrd: Option<Vec<String>>,
    #[serde(default)]
    liveimg: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
    #[serde(default)]
    verify: Option<bool>,
    #[serde(default)]
    provision_templates: Option<HashMap<String, String>>,
    #[serde(default)]
    provision_template: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    butane: Option<String>,
}

#[derive(Serialize)]
struct OutInventory {
    image: Vec<OutImage>,
    host: Vec<OutHost>,
}

#[derive(Serialize)]
struct OutImage {
    name: String,
    kernel: String,
    initrd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    liveimg: Option<String>,
    cmdline: String,
}

#[derive(Serialize)]
struct OutHost {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    provision: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware: Option<String>,
    tags: Vec<String>,
    interfaces: Vec<OutNic>,
}

#[derive(Serialize)]
struct OutNic {
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    bmc: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fqdn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u16>,
}

/// Grendel's paths are files on its server (`/var/lib/grendel/vmlinuz`):
/// bootd serves paths under its root, so an absolute path becomes its file
/// name (and is listed in `notes`: copy it into the root). URLs are kept.
fn served(path: &str, notes: &mut Vec<String>) -> String {
    if path.starts_with('/') && !path.contains("://") {
        let base = path.rsplit('/').next().unwrap_or(path).to_string();
        notes.push(format!("{path} → {base}: copy it into the served root"));
        base
    } else {
        path.to_string()
    }
}

/// `""` and absent alike.
fn given(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Grendel's placeholders before it templated the command line (commit
/// 63f2b22, 2022): since then Go passes them literally, and so does bootd.
const OLD_PLACEHOLDERS: &[(&str, &str)] = &[
    ("$mac", "{{ $.nic.MAC }}"),
    ("$liveimg", "{{ $.endpoints.LiveImageURL }}"),
    ("$kickstart", "{{ $.endpoints.KickstartURL }}"),
    ("$repo", "{{ $.endpoints.RepoURL }}"),
    ("$cloudinit", "{{ $.endpoints.CloudInitURL }}"),
];

/// Largest Grendel JSON file read (bytes).
pub const MAX_GRENDEL_JSON: usize = 64 << 20;

/// `FILE:LINE:COLUMN: REASON` of a JSON syntax error (serde_json's message
/// without its own " at line L column C").
fn json_error(file: &str, e: &serde_json::Error) -> anyhow::Error {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
    anyhow::anyhow!(
        "{file}:{}:{}: not valid JSON: {msg} (Grendel's encoding/json refuses it too)",
        e.line(),
        e.column()
    )
}

/// Convert Grendel's JSON files into an inventory, checked. Each file
/// (`(name, text)`, the name for messages) holds hosts (`model.Host`),
/// boot images (`model.BootImage`, told by their `kernel`) or both, as
/// an array or a single object, in any order. Returns the TOML text and
/// notes for the operator (what was changed or left out, and why).
pub fn import_grendel_files(files: &[(&str, &str)]) -> anyhow::Result<(String, Vec<String>)> {
    use anyhow::{bail, Context};
    let mut hosts: Vec<(String, usize, GrendelHost)> = Vec::new();
    let mut images: Vec<(String, usize, GrendelImage)> = Vec::new();
    for &(file, text) in files {
        if text.len() > MAX_GRENDEL_JSON {
            bail!("{file}: larger than {MAX_GRENDEL_JSON} bytes");
        }
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
        let items = match v {
            serde_json::Value::Array(a) => a,
            o @ serde_json::Value::Object(_) => vec![o],
            other => bail!(
                "{file}: want a JSON array of Grendel hosts or images (or one object), not {}",
                match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    _ => "a string",
                }
            ),
        };
        for (i, item) in items.into_iter().enumerate() {
            let is_image = item.get("kernel").is_some();
            let what = if is_image { "image" } else { "host" };
            let at = format!("{file}: [{i}] (a {what})");
            if !item.is_object() {
                bail!("{file}: [{i}]: want an object (a Grendel host or image)");
            }
            if is_image {
                let im: GrendelImage = serde_json::from_value(item).with_context(|| at.clone())?;
                images.push((file.to_string(), i, im));
            } else {
                let h: GrendelHost = serde_json::from_value(item).with_context(|| at.clone())?;
                hosts.push((file.to_string(), i, h));
            }
        }
    }
    let mut notes = Vec::new();
    let mut out = OutInventory {
        image: vec![],
        host: vec![],
    };
    for (file, i, im) in images {
        let name =
            given(im.name).with_context(|| format!("{file}: [{i}]: an image without a name"))?;
        let kernel =
            given(im.kernel).with_context(|| format!("{file}: image {name}: no kernel"))?;
        let cmdline = im.cmdline.unwrap_or_default();
        for (old, new) in OLD_PLACEHOLDERS {
            let found = cmdline.match_indices(old).any(|(at, _)| {
                !cmdline[at + old.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            });
            if found {
                notes.push(format!(
                    "image {name}: cmdline has {old}, an old Grendel placeholder that Grendel \
                     (since 2022) and bootd pass literally: write {new}"
                ));
            }
        }
        for (e, _) in UNSERVED_ENDPOINTS {
            if cmdline.contains(&format!(".{e}")) {
                notes.push(format!(
                    "image {name}: cmdline uses $.endpoints.{e}, which bootd does not serve \
                     (it renders Grendel's BASE/boot/TOKEN/… URL)"
                ));
            }
        }
        if im.verify == Some(true) {
            notes.push(format!(
                "image {name}: verify = true left out: bootd's iPXE scripts check no signatures \
                 (for signed boots: the docs' Secure Boot page, shim and GRUB)"
            ));
        }
        let templates = im.provision_templates.is_some_and(|t| !t.is_empty())
            || [im.provision_template, im.user_data, im.butane]
                .into_iter()
                .any(|t| given(t).is_some());
        if templates {
            notes.push(format!(
                "image {name}: provision templates (kickstart, cloud-init, butane) left out: \
                 bootd serves none"
            ));
        }
        out.image.push(OutImage {
            kernel: served(&kernel, &mut notes),
            initrd: im
                .initrd
                .unwrap_or_default()
                .iter()
                .map(|p| served(p, &mut notes))
                .collect(),
            liveimg: given(im.liveimg).map(|l| served(&l, &mut notes)),
            cmdline,
            name,
        });
    }
    for (file, i, h) in hosts {
        let name =
            given(h.name).with_context(|| format!("{file}: [{i}]: a host without a name"))?;
        let provision = h.provision.unwrap_or(false);
        let mut image = given(h.boot_image);
        if let Some(im) = &image {
            if !out.image.iter().any(|i| &i.name == im) {
                notes.push(format!(
                    "host {name}: boot_image {im:?} left out: no image of that name was imported \
                     (import its JSON too, or set image = in the inventory)"
                ));
                image = None;
            }
        }
        if provision && image.is_none() {
            notes.push(format!(
                "host {name}: provision = true without an image: it gets no boot config until it has one"
            ));
        }
        let mut interfaces = Vec::new();
        for (n, nic) in h.interfaces.unwrap_or_default().into_iter().enumerate() {
            let mac = match given(nic.mac) {
                Some(m) => Some(normalise_mac(&m).with_context(|| {
                    format!("{file}: host {name} interfaces[{n}].mac: bad MAC {m:?} (want aa:bb:cc:dd:ee:ff)")
                })?),
                None => None,
            };
            let ip = given(nic.ip);
            if let Some(ip) = &ip {
                if !valid_ip(ip) {
                    bail!(
                        "{file}: host {name} interfaces[{n}].ip: bad IP {ip:?} (want 10.0.0.1/24)"
                    );
                }
            }
            interfaces.push(OutNic {
                mac,
                ip,
                bmc: nic.bmc.unwrap_or(false),
                fqdn: given(nic.fqdn),
                ifname: given(nic.ifname),
                vlan: given(nic.vlan),
                mtu: nic.mtu.filter(|&m| m != 0),
            });
        }
        for b in h.bonds.unwrap_or_default() {
            notes.push(format!(
                "host {name}: bond {} ({}, peers {}) left out: the inventory has no bonds \
                 ($.host.Bonds is empty)",
                given(b.ifname).unwrap_or_else(|| "(no ifname)".into()),
                given(b.ip).unwrap_or_else(|| "no ip".into()),
                b.peers.unwrap_or_default().join(" ")
            ));
        }
        out.host.push(OutHost {
            name,
            image,
            provision,
            firmware: given(h.firmware),
            tags: h.tags.unwrap_or_default(),
            interfaces,
        });
    }
    let text = toml::to_string(&out).context("writing the inventory")?;
    Inventory::parse(&text, "the converted inventory")
        .context("Grendel's data does not make a valid inventory")?;
    Ok((text, notes))
}

/// [`import_grendel_files`] of files read (at most [`MAX_GRENDEL_JSON`]
/// bytes each), named by their path.
pub fn import_grendel_paths(paths: &[PathBuf]) -> anyhow::Result<(String, Vec<String>)> {
    use anyhow::Context;
    use std::io::Read;
    let mut texts = Vec::new();
    for p in paths {
        let mut text = String::new();
        std::fs::File::open(p)
            .and_then(|f| {
                f.take(MAX_GRENDEL_JSON as u64 + 1)
                    .read_to_string(&mut text)
            })
            .with_context(|| format!("reading {}", p.display()))?;
        texts.push((p.display().to_string(), text));
    }
    let named: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    import_grendel_files(&named)
}

/// [`import_grendel_files`] of a hosts file and an images file.
pub fn import_grendel(
    hosts_json: &str,
    images_json: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    import_grendel_files(&[("hosts JSON", hosts_json), ("images JSON", images_json)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[image]]
name = "squareos-9.2"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = 'console=ttyS0 root=live:{{ $.liveimg }} BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }} grendel.hostname={{ $.host.Name }} grendel.address={{ $.address }} rd.neednet=1'

[[host]]
name = "cn1"
image = "squareos-9.2"
provision = true
tags = ["compute"]
[[host.interfaces]]
mac = "52:54:00:12:34:56"
ip = "10.0.2.15/24"
bmc = false

[[host]]
name = "cn2"
image = "squareos-9.2"
[[host.interfaces]]
mac = "52:54:00:12:34:57"
"#;

    fn err(text: &str) -> String {
        Inventory::parse(text, "inv.toml").unwrap_err().to_string()
    }

    #[test]
    fn grub_config_for_a_known_mac() {
        let inv = Inventory::parse(GOOD, "inv.toml").unwrap();
        for mac in ["52:54:00:12:34:56", "52-54-00-12-34-56"] {
            let s = grub_config(&inv, mac, "http://10.0.2.2:8080", "nodeboot.token=ab")
                .unwrap()
                .unwrap();
            assert_eq!(
                s,
                "# nodeboot: cn1 (52:54:00:12:34:56), image squareos-9.2\n\
                 echo 'nodeboot: cn1 boots image squareos-9.2 (/vmlinuz)'\n\
                 if linux '/vmlinuz' 'console=ttyS0' 'root=live:http://10.0.2.2:8080/live.squashfs' \
                 'BOOTIF=01-52-54-00-12-34-56' 'grendel.hostname=cn1' 'grendel.address=http://10.0.2.2:8080' \
                 'rd.neednet=1' 'nodeboot.token=ab' ; then\n  \
                 if initrd '/initrd.img' ; then\n    boot\n  fi\nfi\n\
                 echo 'nodeboot: cn1 could not boot image squareos-9.2 (the error is above): back to the firmware in 10 s'\n\
                 sleep 10\nexit\n"
            );
        }
        // provision = false: straight back to the firmware (local disk).
        let s = grub_config(&inv, "52:54:00:12:34:57", "http://x", "")
            .unwrap()
            .unwrap();
        assert!(
            s.ends_with("\nexit\n") && s.contains("provision = false"),
            "{s}"
        );
        assert!(!s.contains("linux"), "{s}");
        assert!(grub_config(&inv, "52:54:00:00:00:00", "http://x", "").is_none());
        // What GRUB cannot do is said, not half done.
        let url = GOOD.replace("kernel = \"vmlinuz\"", "kernel = \"http://h/vmlinuz\"");
        let inv = Inventory::parse(&url, "inv.toml").unwrap();
        let e = grub_config(&inv, "52:54:00:12:34:56", "http://x", "")
            .unwrap()
            .unwrap_err();
        assert!(
            e.contains(
                "http://h/vmlinuz is a URL, and Debian's signed GRUB reads files over TFTP only"
            ),
            "{e}"
        );
        let quoted = GOOD.replace("rd.neednet=1'", "rd.neednet=1 x=\"a b\"'");
        let inv = Inventory::parse(&quoted, "inv.toml").unwrap();
        let e = grub_config(&inv, "52:54:00:12:34:56", "http://x", "")
            .unwrap()
            .unwrap_err();
        assert!(
            e.contains("GRUB would pass '\"' to the kernel escaped"),
            "{e}"
        );
    }

    #[test]
    fn grub_words_expand_nothing() {
        assert_eq!(grub_word("a$b;c"), "'a$b;c'");
        assert_eq!(grub_word("it's"), r"'it'\''s'");
        let s = grub_exit("no host has MAC x'; reboot; echo '", true);
        assert_eq!(
            s,
            "# nodeboot: no host has MAC x'; reboot; echo '\n\
             echo 'nodeboot: no host has MAC x'\\''; reboot; echo '\\'''\nsleep 5\nexit\n"
        );
        // Text from a request cannot start a line of its own in the config.
        assert_eq!(grub_exit("a\nreboot", false).lines().count(), 3);
    }

    #[test]
    fn boot_files_are_the_images_kernels_and_initrds() {
        let inv = Inventory::parse(GOOD, "inv.toml").unwrap();
        for f in ["vmlinuz", "/vmlinuz", "initrd.img", "/initrd.img"] {
            assert!(is_boot_file(&inv, f), "{f}");
        }
        for f in [
            "live.squashfs",
            "",
            "/",
            "secrets/cn1/munge.key",
            "../vmlinuz",
        ] {
            assert!(!is_boot_file(&inv, f), "{f}");
        }
    }

    #[test]
    fn script_for_a_known_mac() {
        let inv = Inventory::parse(GOOD, "inv.toml").unwrap();
        for mac in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            let s = ipxe_script(&inv, mac, "http://10.0.2.2:8080", "")
                .unwrap()
                .unwrap();
            assert_eq!(
                s,
                "#!ipxe\n# cn1 (52:54:00:12:34:56), image squareos-9.2\n\
                 kernel http://10.0.2.2:8080/vmlinuz initrd=initrd.img console=ttyS0 root=live:http://10.0.2.2:8080/live.squashfs \
                 BOOTIF=01-52-54-00-12-34-56 grendel.hostname=cn1 grendel.address=http://10.0.2.2:8080 rd.neednet=1\n\
                 initrd http://10.0.2.2:8080/initrd.img\nboot\n"
            );
        }
        let s = ipxe_script(&inv, "52:54:00:12:34:56", "http://x", "nodeboot.token=ab")
            .unwrap()
            .unwrap();
        assert!(s.contains(" rd.neednet=1 nodeboot.token=ab\n"), "{s}");
        let s = ipxe_script(&inv, "52:54:00:12:34:57", "http://x", "")
            .unwrap()
            .unwrap();
        assert!(
            s.ends_with("\nexit\n") && s.contains("provision = false"),
            "{s}"
        );
        assert!(ipxe_script(&inv, "52:54:00:00:00:00", "http://x", "").is_none());
        assert!(ipxe_script(&inv, "nonsense", "http://x", "").is_none());
    }

    #[test]
    fn refusals_name_line_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "[[image]]\nname = \"a\"\nkernel = \"k\"\nkernal = \"x\"\n",
                "inv.toml:4: unknown field `kernal`, expected one of `name`, `kernel`, `initrd`, `liveimg`, `cmdline`, `postscript`",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\nvlna = 3\n",
                "inv.toml:5: unknown field `vlna`, expected one of `mac`, `ip`, `bmc`, `fqdn`, `ifname`, `vlan`, `mtu`",
            ),
            ("[[image]]\nname = \"a\"\n", "inv.toml:1: missing field `kernel`"),
            ("[[host]]\nname = cn1\n", "inv.toml:2: invalid string; expected `\"`, `'`"),
            (
                "[[image]]\nname = \"a\"\nkernel = \"k\"\n[[image]]\nname = \"a\"\nkernel = \"k\"\n",
                "inv.toml:5: image[1].name: duplicate image name \"a\" (also image[0])",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host]]\nname = \"cn1\"\n",
                "inv.toml:4: host[1].name: duplicate host name \"cn1\" (also host[0])",
            ),
            (
                "[[host]]\nname = \"cn 1\"\n",
                "inv.toml:2: host[0].name: bad host name \"cn 1\" (1 to 64 of [A-Za-z0-9.-])",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\n[[host]]\nname = \"cn2\"\n[[host.interfaces]]\nmac = \"52-54-00-12-34-56\"\n",
                "inv.toml:8: host[1].interfaces[0].mac: duplicate MAC 52:54:00:12:34:56 (also host[0].interfaces[0])",
            ),
            (
                "[[host]]\nname = \"cn1\"\nimage = \"nope\"\n",
                "inv.toml:3: host[0].image: unknown image \"nope\" (images: )",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nmac = \"52:54:00:12:34\"\n",
                "inv.toml:4: host[0].interfaces[0].mac: bad MAC \"52:54:00:12:34\" (want aa:bb:cc:dd:ee:ff)",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nip = \"10.0.2.300/24\"\n",
                "inv.toml:4: host[0].interfaces[0].ip: bad IP \"10.0.2.300/24\" (want 10.0.0.1 or 10.0.0.1/24)",
            ),
            (
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nip = \"10.0.2.3/33\"\n",
                "inv.toml:4: host[0].interfaces[0].ip: bad IP \"10.0.2.3/33\" (want 10.0.0.1 or 10.0.0.1/24)",
            ),
            (
                "[[image]]\nname = \"a\"\nkernel = \"k\"\ncmdline = 'x={{ $.host.Name '\n",
                "inv.toml:4: image[0].cmdline: bad template: unclosed action: the `{{` at character 3 has no `}}`",
            ),
            (
                "[[image]]\nname = \"a\"\nkernel = \"k\"\ncmdline = 'x={{ $.host.Name | uper }}'\n",
                "inv.toml:4: image[0].cmdline: bad template: function uper not defined",
            ),
            (
                "[[image]]\nname = \"a\"\nkernel = \"k\"\ncmdline = 'x={{ $.host.Nmae }}'\n[[host]]\nname = \"cn1\"\nimage = \"a\"\n[[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\n",
                "inv.toml:4: image[0].cmdline: cannot render for host cn1: ",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.starts_with(want), "{text}\ngot:  {got}\nwant: {want}");
        }
    }

    #[test]
    fn ips() {
        for ip in [
            "10.0.0.1",
            "10.0.0.1/24",
            "10.0.0.1/32",
            "fd00::1/64",
            "::1",
        ] {
            assert!(valid_ip(ip), "{ip}");
        }
        for ip in [
            "10.0.0",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "10.0.0.1/33",
            "fd00::1/129",
            "x",
        ] {
            assert!(!valid_ip(ip), "{ip}");
        }
    }

    #[test]
    fn grendel_fixtures_import() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        let (text, notes) =
            import_grendel(&read("grendel-hosts.json"), &read("grendel-images.json")).unwrap();
        assert_eq!(text, read("grendel-inventory.toml"));
        assert_eq!(notes.len(), 2, "{notes:?}");
        let inv = Inventory::parse(&text, "x").unwrap();
        let s = ipxe_script(&inv, "AA:BB:CC:11:22:33", "http://grendel.example.com", "")
            .unwrap()
            .unwrap();
        assert!(
            s.contains(" BOOTIF=01-aa-bb-cc-11-22-33 grendel.hostname=cn1 "),
            "{s}"
        );
        // Grendel's firmware is kept: cn1 boots snponly.efi.
        let (cn1, _) = inv.by_mac("aa:bb:cc:11:22:33").unwrap();
        assert_eq!(cn1.firmware.map(|f| f.file), Some("snponly.efi"));
    }

    #[test]
    fn firmware_names_are_grendels() {
        let with = |fw: &str| {
            GOOD.replacen(
                "provision = true\n",
                &format!("provision = true\nfirmware = \"{fw}\"\n"),
                1,
            )
        };
        for (name, file) in [
            ("ipxe.pxe", "ipxe.pxe"),
            ("undionly.kpxe", "undionly.kpxe"),
            ("ipxe-x86_64.efi", "ipxe.efi"),
            ("snponly-x86_64.efi", "snponly.efi"),
        ] {
            let inv = Inventory::parse(&with(name), "inv.toml").unwrap();
            assert_eq!(inv.hosts[0].firmware.map(|f| f.file), Some(file), "{name}");
        }
        let inv = Inventory::parse(&with(""), "inv.toml").unwrap();
        assert_eq!(inv.hosts[0].firmware, None);
        let e = err(&with("grub.efi"));
        assert!(
            e.contains("host[0].firmware: unknown firmware \"grub.efi\" (Grendel's names, and shimx64.efi for Secure Boot: ipxe.pxe, undionly.kpxe, ipxe-i386.efi, ipxe-x86_64.efi, snponly-x86_64.efi, snponly-arm64.efi, shimx64.efi)"),
            "{e}"
        );
    }
}
