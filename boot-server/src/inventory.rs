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
use std::time::{Duration, SystemTime};
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
#[derive(Debug, Clone)]
pub struct Nic {
    /// Lowercase, colon-separated.
    pub mac: Option<String>,
    /// As written: an address, with or without `/prefix`.
    pub ip: Option<String>,
    pub bmc: bool,
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

/// What the cmdline template sees for one host and interface.
pub fn template_data(host: &Host, nic: &Nic, image: &Image, address: &str) -> Value {
    let liveimg = image
        .liveimg
        .as_deref()
        .map(|l| absolute(address, l))
        .unwrap_or_default();
    let img = object(vec![
        ("Name", image.name.clone().into()),
        ("KernelPath", image.kernel.clone().into()),
        (
            "LiveImage",
            image.liveimg.clone().unwrap_or_default().into(),
        ),
    ]);
    object(vec![
        (
            "host",
            object(vec![
                ("Name", host.name.clone().into()),
                (
                    "Tags",
                    Value::from(
                        host.tags
                            .iter()
                            .map(|t| Value::from(t.clone()))
                            .collect::<Vec<_>>(),
                    ),
                ),
                ("Provision", host.provision.into()),
                ("BootImage", host.image.clone().unwrap_or_default().into()),
            ]),
        ),
        (
            "nic",
            object(vec![
                ("MAC", nic.mac.clone().unwrap_or_default().into()),
                ("IP", nic.ip.clone().unwrap_or_default().into()),
                ("BMC", nic.bmc.into()),
            ]),
        ),
        ("image", img.clone()),
        // Grendel's own name for it.
        ("bootimage", img),
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
            if let Some(c) = &im.cmdline {
                template::check(c.get_ref())
                    .map_err(|e| err(c.span(), f("cmdline"), format!("bad template: {e}")))?;
            }
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
                    let data = template_data(&host, nic, image, "http://bootd.invalid");
                    if let Err(e) = template::render(&image.cmdline, &data) {
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
    let data = template_data(host, nic, image, base);
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
    stamp: std::sync::Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Live {
    /// Load `path` (an error here stops bootd) and start a thread that
    /// polls its mtime and size every second: a changed file that checks
    /// out replaces the inventory, one that does not is logged and the
    /// previous one kept.
    pub fn start(path: &Path) -> anyhow::Result<Arc<Live>> {
        let last = stamp(path);
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
        let l = live.clone();
        std::thread::Builder::new()
            .name("bootd-inventory".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = stamp(&l.path);
                if now != *l.stamp.lock().unwrap_or_else(|p| p.into_inner()) {
                    l.reload_logged();
                }
            })?;
        Ok(live)
    }

    /// Load the file again now (SIGHUP): `true` when it checked out and
    /// replaced the inventory; otherwise the error is logged and the
    /// previous inventory kept.
    pub fn reload_logged(&self) -> bool {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp(&self.path);
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

/// Grendel's `model.Host` as JSON (`boot_image`, `interfaces`,
/// `firmware`, …); fields bootd has no use for (`id`) are ignored.
#[derive(Debug, Deserialize)]
struct GrendelHost {
    name: String,
    #[serde(default)]
    provision: bool,
    #[serde(default)]
    boot_image: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    interfaces: Option<Vec<GrendelNic>>,
    #[serde(default)]
    firmware: String,
}

/// Grendel's `model.NetInterface` (`mac`, `ip`, `bmc`; `ifname`, `fqdn`,
/// `vlan`, `mtu` ignored).
#[derive(Debug, Deserialize)]
struct GrendelNic {
    #[serde(default)]
    mac: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    bmc: bool,
}

/// Grendel's `model.BootImage` (`kernel`, `initrd`, `liveimg`, `cmdline`;
/// `verify`, `provision_template(s)`, `user_data`, `butane` ignored).
#[derive(Debug, Deserialize)]
struct GrendelImage {
    name: String,
    kernel: String,
    #[serde(default)]
    initrd: Option<Vec<String>>,
    #[serde(default)]
    liveimg: String,
    #[serde(default)]
    cmdline: String,
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

/// Convert Grendel's hosts and images JSON (arrays, as `grendel host
/// export` / the API give them) into an inventory, checked. Returns the
/// TOML text and notes for the operator.
pub fn import_grendel(
    hosts_json: &str,
    images_json: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    use anyhow::Context;
    let hosts: Vec<GrendelHost> =
        serde_json::from_str(hosts_json).context("reading Grendel's hosts JSON")?;
    let images: Vec<GrendelImage> =
        serde_json::from_str(images_json).context("reading Grendel's images JSON")?;
    let mut notes = Vec::new();
    let out = OutInventory {
        image: images
            .into_iter()
            .map(|i| OutImage {
                kernel: served(&i.kernel, &mut notes),
                initrd: i
                    .initrd
                    .unwrap_or_default()
                    .iter()
                    .map(|p| served(p, &mut notes))
                    .collect(),
                liveimg: (!i.liveimg.is_empty()).then(|| served(&i.liveimg, &mut notes)),
                cmdline: i.cmdline,
                name: i.name,
            })
            .collect(),
        host: hosts
            .into_iter()
            .map(|h| OutHost {
                name: h.name,
                image: (!h.boot_image.is_empty()).then_some(h.boot_image),
                provision: h.provision,
                firmware: (!h.firmware.is_empty()).then_some(h.firmware),
                tags: h.tags.unwrap_or_default(),
                interfaces: h
                    .interfaces
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| OutNic {
                        mac: (!n.mac.is_empty()).then_some(n.mac),
                        ip: (!n.ip.is_empty()).then_some(n.ip),
                        bmc: n.bmc,
                    })
                    .collect(),
            })
            .collect(),
    };
    let text = toml::to_string(&out).context("writing the inventory")?;
    Inventory::parse(&text, "the converted inventory")
        .context("Grendel's data does not make a valid inventory")?;
    Ok((text, notes))
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
                "[[host]]\nname = \"cn1\"\n[[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\nvlan = 3\n",
                "inv.toml:5: unknown field `vlan`, expected one of `mac`, `ip`, `bmc`",
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
                "[[image]]\nname = \"a\"\nkernel = \"k\"\ncmdline = 'x={{ $.host.Name | upper }}'\n",
                "inv.toml:4: image[0].cmdline: bad template: function upper not defined",
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
