//! Kernel command line: one parser, reading an injectable path.
//!
//! Rules (documented limits):
//! - parameters are separated by ASCII whitespace;
//! - double quotes group spaces: `key="a b"` and `"key=a b"` both give `a b`
//!   (the quotes are removed; there is no escaping inside quotes, as in the kernel);
//! - the first `=` splits key and value; `key` alone is a key without value;
//! - a repeated key: the last one wins for [`Cmdline::value`]; [`Cmdline::values`] gives all;
//! - bytes that are not UTF-8 are replaced (U+FFFD), never an error: junk in an
//!   unrelated parameter must not stop a boot.
//!
//! [`BootParams`] reads the keys nodeboot understands, Grendel's and dracut's
//! (`root=live:`, `BOOTIF=`, `grendel.*`, `rd.live.overlay.*`, `rd.neednet`,
//! `ip=`) and our own `nodeboot.*`.
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors a caller may match on; each names the parameter and the bad value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("reading kernel command line {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("BOOTIF={value}: expected 01-aa-bb-cc-dd-ee-ff (hardware type 01, then the MAC)")]
    Bootif { value: String },
    #[error("root=live: has no URL")]
    EmptyLiveUrl,
    #[error("root=live:{url}: only http:// and https:// URLs are supported")]
    LiveScheme { url: String },
    #[error("nodeboot.sha256={value}: expected 64 hexadecimal digits")]
    Sha256 { value: String },
    #[error("{key}={value}: expected {expected}")]
    Value {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("ip={value}: {reason}")]
    Ip { value: String, reason: String },
}

/// The raw parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Read and parse a command line file (normally `/proc/cmdline`).
    pub fn from_path(path: &Path) -> Result<Self, CmdlineError> {
        let bytes = std::fs::read(path).map_err(|e| CmdlineError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    pub fn parse(s: &str) -> Self {
        let mut params = Vec::new();
        let mut cur = String::new();
        let mut in_quotes = false;
        let mut started = false;
        for c in s.chars() {
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    started = true;
                }
                c if c.is_ascii_whitespace() && !in_quotes => {
                    if started {
                        params.push(split(&cur));
                        cur.clear();
                        started = false;
                    }
                }
                c => {
                    cur.push(c);
                    started = true;
                }
            }
        }
        if started {
            params.push(split(&cur));
        }
        Cmdline { params }
    }

    /// Is the key present at all (with or without a value)?
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// The last value of `key`. `Some("")` for `key=`; `None` for an absent key
    /// or a key given without `=`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of `key`, in order (e.g. several `ip=` or `console=`).
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(k, _)| k == key)
            .filter_map(|(_, v)| v.as_deref())
    }

    /// A boolean in dracut's style: a bare key is true; `1/yes/true/on` true,
    /// `0/no/false/off` false; absent is `None`. The last occurrence wins.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, CmdlineError> {
        let Some((_, v)) = self.params.iter().rev().find(|(k, _)| k == key) else {
            return Ok(None);
        };
        match v.as_deref() {
            None | Some("") | Some("1") | Some("yes") | Some("true") | Some("on") => Ok(Some(true)),
            Some("0") | Some("no") | Some("false") | Some("off") => Ok(Some(false)),
            Some(other) => Err(CmdlineError::Value {
                key: key.to_string(),
                value: other.to_string(),
                expected: "1 or 0 (yes/no, true/false, on/off)",
            }),
        }
    }

    /// A whole number of seconds > 0 (`default` when absent).
    pub fn seconds(&self, key: &str, default: u64) -> Result<Duration, CmdlineError> {
        match self.value(key) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| CmdlineError::Value {
                    key: key.to_string(),
                    value: v.to_string(),
                    expected: "a whole number of seconds > 0",
                }),
        }
    }
}

fn split(param: &str) -> (String, Option<String>) {
    match param.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (param.to_string(), None),
    }
}

/// A MAC address (6 bytes), printed as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Mac {
    type Err = ();
    /// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, ()> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(());
            }
            mac[i] = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        Ok(Mac(mac))
    }
}

/// PXELINUX/Grendel `BOOTIF=01-aa-bb-cc-dd-ee-ff`: ARP hardware type 01
/// (Ethernet), then the MAC of the interface the node booted from.
pub fn parse_bootif(value: &str) -> Result<Mac, CmdlineError> {
    let err = || CmdlineError::Bootif {
        value: value.to_string(),
    };
    let rest = value.strip_prefix("01-").ok_or_else(err)?;
    rest.parse().map_err(|_| err())
}

/// One `ip=` parameter, in dracut's syntax (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum IpConfig {
    /// `ip=dhcp`, `ip=on`, `ip=any`, `ip=<dev>:dhcp`.
    Dhcp { dev: Option<String> },
    /// `ip=<client>:[<peer>]:<gw>:<netmask>:<hostname>:<dev>:none[:<dns1>[:<dns2>]]`.
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        hostname: Option<String>,
        dev: Option<String>,
        dns: Vec<Ipv4Addr>,
    },
    /// `ip=off` / `ip=none`: do not configure a network.
    Off,
}

fn is_dhcp_word(s: &str) -> bool {
    matches!(s, "dhcp" | "on" | "any" | "single-dhcp" | "either6")
}

/// Parse one `ip=` value.
pub fn parse_ip(value: &str) -> Result<IpConfig, CmdlineError> {
    let err = |reason: &str| CmdlineError::Ip {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.contains('[') || matches!(value, "dhcp6" | "auto6" | "link6") {
        return Err(err(
            "IPv6 configuration is not supported yet; use ip=dhcp or a static IPv4 form",
        ));
    }
    if is_dhcp_word(value) {
        return Ok(IpConfig::Dhcp { dev: None });
    }
    if matches!(value, "off" | "none") {
        return Ok(IpConfig::Off);
    }
    let f: Vec<&str> = value.split(':').collect();
    // <dev>:dhcp[:mtu[:mac]]
    if f.len() >= 2 && f.len() <= 4 && is_dhcp_word(f[1]) {
        if f[0].is_empty() {
            return Err(err("empty interface name"));
        }
        return Ok(IpConfig::Dhcp {
            dev: Some(f[0].to_string()),
        });
    }
    if f.len() < 7 {
        return Err(err(
            "expected dhcp, <dev>:dhcp or <client>:<peer>:<gw>:<netmask>:<hostname>:<dev>:none",
        ));
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let ip = |s: &str, what: &str| -> Result<Ipv4Addr, CmdlineError> {
        s.parse()
            .map_err(|_| err(&format!("{what} {s:?} is not an IPv4 address")))
    };
    match f[6] {
        "none" | "off" | "" => {}
        w if is_dhcp_word(w) => return Ok(IpConfig::Dhcp { dev: opt(f[5]) }),
        w => return Err(err(&format!("autoconf method {w:?} is not supported"))),
    }
    let address = ip(f[0], "client address")?;
    let gateway = if f[2].is_empty() {
        None
    } else {
        Some(ip(f[2], "gateway")?)
    };
    let prefix = if f[3].is_empty() {
        24
    } else if let Ok(p) = f[3].parse::<u8>() {
        if p > 32 {
            return Err(err("prefix length above 32"));
        }
        p
    } else {
        let m = u32::from(ip(f[3], "netmask")?);
        if m.leading_ones() + m.trailing_zeros() != 32 {
            return Err(err(&format!("netmask {} is not contiguous", f[3])));
        }
        m.leading_ones() as u8
    };
    // ip=...:none:<dns1>:<dns2>; a field 7 that is an MTU (no dots) is skipped.
    let mut dns = Vec::new();
    for s in f.iter().skip(7) {
        if s.contains('.') {
            dns.push(ip(s, "DNS server")?);
        }
    }
    Ok(IpConfig::Static {
        address,
        prefix,
        gateway,
        hostname: opt(f[4]),
        dev: opt(f[5]),
        dns,
    })
}

/// What nodeboot reads from the command line, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootParams {
    /// `root=live:URL`: the squashfs to fetch. `None`: not a nodeboot live boot.
    pub live_url: Option<String>,
    /// `BOOTIF=01-…`: the MAC of the boot NIC.
    pub bootif: Option<Mac>,
    /// `grendel.hostname=`
    pub hostname: Option<String>,
    /// `grendel.address=`: the boot server (postscripts, secrets, status).
    pub grendel_address: Option<String>,
    /// `rd.live.overlay.readonly=`: the image stays read-only, writes go to the tmpfs upper.
    pub overlay_readonly: bool,
    /// `rd.live.overlay.overlayfs=`: nodeboot always uses overlayfs; recorded.
    pub overlay_overlayfs: bool,
    /// `rd.live.overlay.size=` in MiB: size of the tmpfs upper (default: half of RAM).
    pub overlay_size_mib: Option<u64>,
    /// `rd.neednet=`
    pub neednet: bool,
    /// Every `ip=`, in order.
    pub ip: Vec<IpConfig>,
    /// `nodeboot.sha256=`: pinned digest of the live image (lowercase hex).
    pub sha256: Option<String>,
    /// `nodeboot.ca=`: PEM file of extra CA roots for https (inside the initramfs).
    pub ca_file: Option<PathBuf>,
    /// `nodeboot.fetch.timeout=`: overall deadline for the image download (s).
    #[serde(with = "secs")]
    pub fetch_timeout: Duration,
    /// `nodeboot.net.timeout=`: bound for link + address (s).
    #[serde(with = "secs")]
    pub net_timeout: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

pub const DEFAULT_FETCH_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_NET_TIMEOUT_SECS: u64 = 60;

impl BootParams {
    pub fn from_cmdline(c: &Cmdline) -> Result<Self, CmdlineError> {
        let live_url = match c.value("root").and_then(|r| r.strip_prefix("live:")) {
            None => None,
            Some("") => return Err(CmdlineError::EmptyLiveUrl),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u.to_string()),
            Some(u) => return Err(CmdlineError::LiveScheme { url: u.to_string() }),
        };
        let bootif = c.value("BOOTIF").map(parse_bootif).transpose()?;
        let sha256 = match c.value("nodeboot.sha256") {
            None => None,
            Some(v) => {
                let v = v.trim().to_ascii_lowercase();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CmdlineError::Sha256 { value: v });
                }
                Some(v)
            }
        };
        let overlay_size_mib = match c.value("rd.live.overlay.size") {
            None => None,
            Some(v) => Some(v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                CmdlineError::Value {
                    key: "rd.live.overlay.size".into(),
                    value: v.into(),
                    expected: "a size in MiB > 0",
                }
            })?),
        };
        let ip = c
            .values("ip")
            .map(parse_ip)
            .collect::<Result<Vec<_>, _>>()?;
        let nonempty = |k: &str| c.value(k).filter(|v| !v.is_empty()).map(str::to_string);
        Ok(BootParams {
            live_url,
            bootif,
            hostname: nonempty("grendel.hostname"),
            grendel_address: nonempty("grendel.address")
                .map(|a| a.trim_end_matches('/').to_string()),
            overlay_readonly: c.flag("rd.live.overlay.readonly")?.unwrap_or(false),
            overlay_overlayfs: c.flag("rd.live.overlay.overlayfs")?.unwrap_or(false),
            overlay_size_mib,
            neednet: c.flag("rd.neednet")?.unwrap_or(false),
            ip,
            sha256,
            ca_file: nonempty("nodeboot.ca").map(PathBuf::from),
            fetch_timeout: c.seconds("nodeboot.fetch.timeout", DEFAULT_FETCH_TIMEOUT_SECS)?,
            net_timeout: c.seconds("nodeboot.net.timeout", DEFAULT_NET_TIMEOUT_SECS)?,
        })
    }

    /// Read `/proc/cmdline` (or a test file) and validate it.
    pub fn from_path(path: &Path) -> Result<Self, CmdlineError> {
        Self::from_cmdline(&Cmdline::from_path(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cmdline of ../shared/seeds/compute-plane-network-boot.txt, as
    /// Grendel renders it for host cn1 with MAC aa:bb:cc:11:22:33.
    const SEED: &str = "console=ttyS0 console=tty0 root=live:https://sos-ch-dk-2.exo.io/osimages/squareos-9.2/squareos-9.2.squashfs BOOTIF=01-aa-bb-cc-11-22-33 grendel.hostname=cn1 grendel.address=http://grendel.example.com rd.live.overlay.readonly=1 rd.live.overlay.overlayfs=1 rd.neednet=1\n";

    #[test]
    fn seed_cmdline_parses() {
        let p = BootParams::from_cmdline(&Cmdline::parse(SEED)).unwrap();
        assert_eq!(
            p.live_url.as_deref(),
            Some("https://sos-ch-dk-2.exo.io/osimages/squareos-9.2/squareos-9.2.squashfs")
        );
        assert_eq!(p.bootif, Some(Mac([0xaa, 0xbb, 0xcc, 0x11, 0x22, 0x33])));
        assert_eq!(p.hostname.as_deref(), Some("cn1"));
        assert_eq!(
            p.grendel_address.as_deref(),
            Some("http://grendel.example.com")
        );
        assert!(p.overlay_readonly && p.overlay_overlayfs && p.neednet);
        assert!(p.ip.is_empty());
        assert_eq!(p.sha256, None);
        assert_eq!(
            p.fetch_timeout,
            Duration::from_secs(DEFAULT_FETCH_TIMEOUT_SECS)
        );
    }

    #[test]
    fn raw_parsing_table() {
        type Row = (&'static str, &'static str, Option<&'static str>, bool);
        // (cmdline, key, expected last value, key present)
        let rows: &[Row] = &[
            ("a=1 b=2", "a", Some("1"), true),
            ("a=1 a=2 a=3", "a", Some("3"), true), // last wins
            ("quiet", "quiet", None, true),        // key without value
            ("x= y", "x", Some(""), true),         // empty value
            ("k=\"a b c\" z=1", "k", Some("a b c"), true), // quoted value
            ("\"k=a b\" z=1", "k", Some("a b"), true), // quoted whole param
            (
                "k=\"unterminated value",
                "k",
                Some("unterminated value"),
                true,
            ),
            ("  \t a=1 \n\n", "a", Some("1"), true), // extra whitespace
            ("a=b=c", "a", Some("b=c"), true),       // first '=' splits
            ("foo.bar=1 unknown_key", "absent", None, false), // unknown keys ignored
            ("junk=\u{fffd}\u{fffd}é a=ok", "a", Some("ok"), true), // non-ASCII junk
            ("", "a", None, false),
        ];
        for (line, key, val, present) in rows {
            let c = Cmdline::parse(line);
            assert_eq!(c.value(key), *val, "value of {key} in {line:?}");
            assert_eq!(c.has(key), *present, "presence of {key} in {line:?}");
        }
    }

    #[test]
    fn non_utf8_bytes_do_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cmdline");
        std::fs::write(&p, b"a=\xff\xfe\x80 root=live:http://10.0.2.2/x.squashfs\n").unwrap();
        let bp = BootParams::from_path(&p).unwrap();
        assert_eq!(bp.live_url.as_deref(), Some("http://10.0.2.2/x.squashfs"));
    }

    #[test]
    fn missing_file_names_path() {
        let e = BootParams::from_path(Path::new("/nonexistent/cmdline")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cmdline"), "{e}");
    }

    #[test]
    fn values_and_flags() {
        let c = Cmdline::parse("console=ttyS0 console=tty0 rd.neednet rd.x=0 rd.y=maybe");
        assert_eq!(c.values("console").collect::<Vec<_>>(), ["ttyS0", "tty0"]);
        assert_eq!(c.flag("rd.neednet"), Ok(Some(true)));
        assert_eq!(c.flag("rd.x"), Ok(Some(false)));
        assert_eq!(c.flag("rd.absent"), Ok(None));
        let e = c.flag("rd.y").unwrap_err().to_string();
        assert_eq!(
            e,
            "rd.y=maybe: expected 1 or 0 (yes/no, true/false, on/off)"
        );
    }

    #[test]
    fn bootif_table() {
        let ok: &[(&str, [u8; 6])] = &[
            ("01-aa-bb-cc-dd-ee-ff", [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            ("01-52-54-00-12-34-56", [0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            ("01-AA-BB-CC-DD-EE-FF", [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
        ];
        for (v, mac) in ok {
            assert_eq!(parse_bootif(v), Ok(Mac(*mac)), "{v}");
        }
        for bad in [
            "aa-bb-cc-dd-ee-ff",
            "01-aa-bb-cc-dd-ee",
            "01-aa-bb-cc-dd-ee-gg",
            "06-aa-bb-cc-dd-ee-ff",
            "",
            "01-aaa-bb-cc-dd-ee-f",
        ] {
            let e = parse_bootif(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("BOOTIF={bad}:")), "{e}");
        }
        assert_eq!(
            Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]).to_string(),
            "aa:bb:cc:dd:ee:ff"
        );
    }

    #[test]
    fn ip_table() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let rows: Vec<(&str, IpConfig)> = vec![
            ("dhcp", IpConfig::Dhcp { dev: None }),
            ("on", IpConfig::Dhcp { dev: None }),
            (
                "eth0:dhcp",
                IpConfig::Dhcp {
                    dev: Some("eth0".into()),
                },
            ),
            ("off", IpConfig::Off),
            (
                "10.0.2.15::10.0.2.2:255.255.255.0:cn1:eth0:none",
                IpConfig::Static {
                    address: a("10.0.2.15"),
                    prefix: 24,
                    gateway: Some(a("10.0.2.2")),
                    hostname: Some("cn1".into()),
                    dev: Some("eth0".into()),
                    dns: vec![],
                },
            ),
            (
                "192.168.0.51::192.168.0.1:16:::none:192.168.0.100:9.9.9.9",
                IpConfig::Static {
                    address: a("192.168.0.51"),
                    prefix: 16,
                    gateway: Some(a("192.168.0.1")),
                    hostname: None,
                    dev: None,
                    dns: vec![a("192.168.0.100"), a("9.9.9.9")],
                },
            ),
            (
                "::::cn1:ens3:dhcp",
                IpConfig::Dhcp {
                    dev: Some("ens3".into()),
                },
            ),
        ];
        for (v, want) in rows {
            assert_eq!(parse_ip(v), Ok(want), "ip={v}");
        }
        let bad: &[(&str, &str)] = &[
            (
                "10.0.2.300::10.0.2.2:24::eth0:none",
                "client address \"10.0.2.300\" is not an IPv4 address",
            ),
            (
                "10.0.2.15::10.0.2.2:255.0.255.0::eth0:none",
                "netmask 255.0.255.0 is not contiguous",
            ),
            (
                "10.0.2.15::10.0.2.2:33::eth0:none",
                "prefix length above 32",
            ),
            ("[fd00::1]::[fd00::2]:64::eth0:none", "IPv6"),
            (
                "10.0.2.15::10.0.2.2:24::eth0:ibft",
                "autoconf method \"ibft\"",
            ),
            ("bogus", "expected dhcp"),
        ];
        for (v, msg) in bad {
            let e = parse_ip(v).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("ip={v}: ")) && e.contains(msg),
                "{e}"
            );
        }
    }

    #[test]
    fn boot_params_errors_name_the_value() {
        let rows: &[(&str, &str)] = &[
            ("root=live:", "root=live: has no URL"),
            (
                "root=live:ftp://x/y",
                "root=live:ftp://x/y: only http:// and https:// URLs are supported",
            ),
            (
                "root=live:http://x/y nodeboot.sha256=abc",
                "nodeboot.sha256=abc: expected 64 hexadecimal digits",
            ),
            ("BOOTIF=zz", "BOOTIF=zz: expected 01-aa-bb-cc-dd-ee-ff"),
            (
                "nodeboot.fetch.timeout=soon",
                "nodeboot.fetch.timeout=soon: expected a whole number of seconds > 0",
            ),
            (
                "rd.live.overlay.size=big",
                "rd.live.overlay.size=big: expected a size in MiB > 0",
            ),
            ("rd.neednet=perhaps", "rd.neednet=perhaps: expected 1 or 0"),
        ];
        for (line, msg) in rows {
            let e = BootParams::from_cmdline(&Cmdline::parse(line))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(msg), "{line}: {e}");
        }
    }

    #[test]
    fn not_a_live_boot_and_pins() {
        let p = BootParams::from_cmdline(&Cmdline::parse("root=UUID=1234 ro quiet")).unwrap();
        assert_eq!(p.live_url, None);
        let digest = "AB".repeat(32);
        let p = BootParams::from_cmdline(&Cmdline::parse(&format!(
            "root=live:http://10.0.2.2:8080/img.squashfs nodeboot.sha256={digest} grendel.address=http://10.0.2.2:8080/ nodeboot.fetch.timeout=30 rd.live.overlay.size=512 ip=dhcp"
        )))
        .unwrap();
        assert_eq!(p.sha256, Some("ab".repeat(32)));
        assert_eq!(p.grendel_address.as_deref(), Some("http://10.0.2.2:8080"));
        assert_eq!(p.fetch_timeout, Duration::from_secs(30));
        assert_eq!(p.overlay_size_mib, Some(512));
        assert_eq!(p.ip, vec![IpConfig::Dhcp { dev: None }]);
    }
}
