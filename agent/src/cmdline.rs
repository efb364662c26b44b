//! Kernel command line: one parser, reading an injectable path.
//!
//! The rules are the kernel's own (`next_arg()` and `parse_args()` in
//! lib/cmdline.c and kernel/params.c; dracut's getarg runs the same code), so
//! nodectl reads every parameter exactly as the kernel and dracut do:
//! - parameters are separated by the kernel's `isspace()` bytes: space,
//!   `\t \n \v \f \r`, and 0xA0 (the kernel's ctype table is Latin-1);
//!   leading and repeated separators are skipped;
//! - a double quote *at the start of a parameter* opens a quote (`"k=a b"`,
//!   even `"a b=c d"`: key `a b`); every further `"` toggles quoting, and an
//!   unquoted separator ends the parameter. There is no escaping;
//! - the first `=` splits key and value (an `=` at the very start of the
//!   parameter does not count: `=x` is a key without value); `key` alone is
//!   a key without value, `key=` has the empty value;
//! - a value that starts with `"` loses that quote and, if the parameter ends
//!   with `"`, that one too; a parameter that started with `"` loses a
//!   trailing `"`. Any other quote stays: `a=b"c` is `b"c`, `k=""v"` is `"v`;
//! - a bare `--` ends the kernel's parameters: what follows goes to init and
//!   is not read here;
//! - a NUL byte ends the command line (the kernel's is a C string);
//! - a repeated key: the last one wins for [`Cmdline::value`] (a bare `key`
//!   after `key=v` means "no value", as in dracut); [`Cmdline::values`] gives all;
//! - bytes that are not UTF-8 are replaced (U+FFFD) after splitting, never
//!   an error: junk in an unrelated parameter must not stop a boot.
//!
//! [`Cmdline::parse_bytes`] (and [`Cmdline::parse`]) never fail and never
//! panic, whatever the input: they are the fuzz entry points of this module,
//! with [`BootParams::from_cmdline`] on their result.
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
    #[error("root=live:{url}: {reason}")]
    LiveUrl { url: String, reason: String },
    #[error("nodeboot.mirror={url}: {reason}")]
    Mirror { url: String, reason: String },
    #[error("{count} nodeboot.mirror= given: at most {max} are read", max = MAX_MIRRORS)]
    TooManyMirrors { count: usize },
    /// `nodeboot.index=` without the digests that make it safe to use.
    #[error("nodeboot.index={url}: also needs {missing}")]
    IndexPins { url: String, missing: &'static str },
}

/// Most `nodeboot.mirror=` parameters read; more is an error (every origin
/// may cost a retry round and a line per failure on the console).
pub const MAX_MIRRORS: usize = 8;

/// The places the live image can come from, in the order they are tried:
/// `root=live:URL` first, then every `nodeboot.mirror=URL` in command-line
/// order. One URL per parameter, so a URL needs no escaping: commas, `&`,
/// `%XX` and `=` in a query string (an object store's presigned URL) stay
/// as they are. Each is http:// or https:// with a host and no
/// whitespace; at most [`MAX_MIRRORS`] mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Origins(Vec<String>);

impl Origins {
    /// `primary` (from `root=live:`) then `mirrors`, each checked.
    pub fn new<'a>(
        primary: &str,
        mirrors: impl IntoIterator<Item = &'a str>,
    ) -> Result<Origins, CmdlineError> {
        if primary.is_empty() {
            return Err(CmdlineError::EmptyLiveUrl);
        }
        if !(primary.starts_with("http://") || primary.starts_with("https://")) {
            return Err(CmdlineError::LiveScheme {
                url: primary.to_string(),
            });
        }
        check_url(primary).map_err(|reason| CmdlineError::LiveUrl {
            url: primary.to_string(),
            reason: reason.to_string(),
        })?;
        let mut v = vec![primary.to_string()];
        for m in mirrors {
            check_url(m).map_err(|reason| CmdlineError::Mirror {
                url: m.to_string(),
                reason: reason.to_string(),
            })?;
            v.push(m.to_string());
        }
        if v.len() - 1 > MAX_MIRRORS {
            return Err(CmdlineError::TooManyMirrors { count: v.len() - 1 });
        }
        Ok(Origins(v))
    }

    /// `root=live:` and `nodeboot.mirror=` of `c`; `None` without `root=live:`
    /// (mirrors alone mean nothing).
    pub fn from_cmdline(c: &Cmdline) -> Result<Option<Origins>, CmdlineError> {
        let Some(primary) = c.value("root").and_then(|r| r.strip_prefix("live:")) else {
            return Ok(None);
        };
        Origins::new(primary, c.values("nodeboot.mirror")).map(Some)
    }

    /// The first: `root=live:`'s URL.
    pub fn primary(&self) -> &str {
        &self.0[0]
    }

    /// Every origin, in order (the primary first).
    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// How many (at least 1).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (there is always the primary); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why `u` cannot be an origin of the image, if it cannot.
fn check_url(u: &str) -> Result<(), &'static str> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or("only http:// and https:// URLs are supported")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || host.ends_with('@') {
        return Err("the URL has no host");
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL holds a space or a control character");
    }
    Ok(())
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

    /// Parse a command line given as text (see the module doc for the rules).
    pub fn parse(s: &str) -> Self {
        Self::parse_bytes(s.as_bytes())
    }

    /// Parse a command line as the kernel stores it: bytes, in no particular
    /// encoding. Never fails, never panics.
    pub fn parse_bytes(b: &[u8]) -> Self {
        // The kernel's command line is a C string.
        let mut rest = match b.iter().position(|&c| c == 0) {
            Some(n) => &b[..n],
            None => b,
        };
        let mut params = Vec::new();
        rest = skip_spaces(rest);
        while !rest.is_empty() {
            let (param, value, next) = next_arg(rest);
            rest = next;
            if value.is_none() && param == b"--" {
                break; // the rest is init's
            }
            let text = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
            params.push((text(param), value.map(text)));
        }
        Cmdline { params }
    }

    /// Every parameter in order: the key and, after an `=`, the value.
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
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

/// The kernel's `isspace()` (lib/ctype.c): `\t \n \v \f \r`, space and
/// 0xA0 (Latin-1 no-break space).
fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| is_space(c)).count();
    &s[n..]
}

/// One parameter off the front of `args` (which starts with no separator),
/// split as the kernel's `next_arg()` does: `(key, value, rest)`, `rest`
/// starting at the next parameter. Where the kernel writes NULs into the
/// string, this shortens the slices instead.
fn next_arg(args: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    let quoted = args.first() == Some(&b'"');
    let a = if quoted { &args[1..] } else { args };
    let mut in_quote = quoted;
    // The first '=' past index 0 (0 means "none", as in the kernel).
    let mut equals = 0;
    let mut i = 0;
    while i < a.len() {
        let c = a[i];
        if is_space(c) && !in_quote {
            break;
        }
        if equals == 0 && c == b'=' {
            equals = i;
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let rest = skip_spaces(a.get(i + 1..).unwrap_or_default());
    // `end`: where the text of the parameter stops; a trailing quote the
    // kernel removes moves it back by one, once.
    let mut end = i;
    let last_is_quote = i > 0 && a[i - 1] == b'"';
    let (key, value) = if equals == 0 {
        if quoted && last_is_quote {
            end = i - 1;
        }
        (&a[..end], None)
    } else {
        let mut start = equals + 1;
        if start < i && a[start] == b'"' {
            start += 1;
            if last_is_quote {
                end = i - 1;
            }
        } else if quoted && last_is_quote {
            end = i - 1;
        }
        // `k="` : the value's opening quote is also the trailing one.
        let value = a.get(start..end.max(start)).unwrap_or_default();
        (&a[..equals], Some(value))
    };
    (key, value, rest)
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
            // Two hex digits exactly: from_str_radix alone would take "+a".
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
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
    /// Where the image can come from, in order: `root=live:` then every
    /// `nodeboot.mirror=` (`None` exactly when `live_url` is).
    pub origins: Option<Origins>,
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
    /// `nodeboot.cache=`: use the live image cache partition when the node
    /// has one (default on; `0`/`off` leaves it alone).
    pub cache: bool,
    /// `nodeboot.cache.keep=`: images the cache keeps at most (1 to
    /// [`CACHE_KEEP_MAX`], default [`DEFAULT_CACHE_KEEP`]).
    pub cache_keep: usize,
    /// `nodeboot.index=URL`: the image's chunk index (casync `.caibx`); the
    /// image is then assembled from chunks instead of fetched whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_url: Option<String>,
    /// `nodeboot.index.sha256=`: pinned digest of the index file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    /// Every `nodeboot.store=URL`, in order: chunk stores (mirrors) tried
    /// in turn; none: `store/` beside the index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
    /// `nodeboot.peers=`: a chunked fetch also takes chunks from peers
    /// that bootd (`grendel.address`) names, and serves the chunks it
    /// verified while it fetches (default off).
    pub peers: bool,
    /// `nodeboot.peers.port=`: where the initramfs serves its verified
    /// chunks while it fetches (default [`DEFAULT_PEERS_PORT`], the booted
    /// `nodectl-serve-chunks.service`'s); `0`: fetch from peers, serve none.
    pub peers_port: u16,
}

/// A lowercase hex SHA-256, or `None` if `v` is not 64 hex digits.
fn hex64(v: &str) -> Option<String> {
    let v = v.trim().to_ascii_lowercase();
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
}

fn http_url(key: &str, v: &str) -> Result<String, CmdlineError> {
    if v.starts_with("http://") || v.starts_with("https://") {
        Ok(v.to_string())
    } else {
        Err(CmdlineError::Value {
            key: key.into(),
            value: v.into(),
            expected: "an http:// or https:// URL",
        })
    }
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
pub const DEFAULT_CACHE_KEEP: usize = 2;
pub const CACHE_KEEP_MAX: usize = 16;
/// The chunk server's port, in the initramfs and booted.
pub const DEFAULT_PEERS_PORT: u16 = 7070;

impl BootParams {
    pub fn from_cmdline(c: &Cmdline) -> Result<Self, CmdlineError> {
        let origins = Origins::from_cmdline(c)?;
        let live_url = origins.as_ref().map(|o| o.primary().to_string());
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
        let cache_keep = match c.value("nodeboot.cache.keep") {
            None => DEFAULT_CACHE_KEEP,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=CACHE_KEEP_MAX).contains(n))
                .ok_or_else(|| CmdlineError::Value {
                    key: "nodeboot.cache.keep".into(),
                    value: v.into(),
                    expected: "a number of images from 1 to 16",
                })?,
        };
        let nonempty = |k: &str| c.value(k).filter(|v| !v.is_empty()).map(str::to_string);
        let index_url = nonempty("nodeboot.index")
            .map(|v| http_url("nodeboot.index", &v))
            .transpose()?;
        let index_sha256 = match c.value("nodeboot.index.sha256") {
            None => None,
            Some(v) => Some(hex64(v).ok_or_else(|| CmdlineError::Value {
                key: "nodeboot.index.sha256".into(),
                value: v.into(),
                expected: "64 hexadecimal digits",
            })?),
        };
        let stores = c
            .values("nodeboot.store")
            .filter(|v| !v.is_empty())
            .map(|v| http_url("nodeboot.store", v))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(url) = &index_url {
            // Chunks are checked against the index, the index against its
            // pinned digest, the assembled image against the image's: all
            // three links of the chain must be on the command line.
            let missing = match (&index_sha256, &sha256) {
                (None, _) => {
                    Some("nodeboot.index.sha256= (the index's digest, index_sha256 in NAME.json)")
                }
                (_, None) => Some("nodeboot.sha256= (the image's digest)"),
                _ => None,
            };
            if let Some(missing) = missing {
                return Err(CmdlineError::IndexPins {
                    url: url.clone(),
                    missing,
                });
            }
        }
        let peers_port = match c.value("nodeboot.peers.port") {
            None => DEFAULT_PEERS_PORT,
            Some(v) => v.parse::<u16>().map_err(|_| CmdlineError::Value {
                key: "nodeboot.peers.port".into(),
                value: v.into(),
                expected: "a TCP port from 1 to 65535, or 0 to serve no chunks",
            })?,
        };
        Ok(BootParams {
            live_url,
            origins,
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
            cache: c.flag("nodeboot.cache")?.unwrap_or(true),
            cache_keep,
            index_url,
            index_sha256,
            stores,
            peers: c.flag("nodeboot.peers")?.unwrap_or(false),
            peers_port,
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
        assert!(p.cache, "the cache is used by default");
        assert_eq!(p.cache_keep, DEFAULT_CACHE_KEEP);
        let q =
            BootParams::from_cmdline(&Cmdline::parse("nodeboot.cache=off nodeboot.cache.keep=3"))
                .unwrap();
        assert!(!q.cache);
        assert_eq!(q.cache_keep, 3);
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

    /// Every parameter of `line`, as (key, value).
    fn all(line: &[u8]) -> Vec<(String, Option<String>)> {
        Cmdline::parse_bytes(line)
            .params()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    /// The kernel's next_arg()/parse_args() (lib/cmdline.c, kernel/params.c),
    /// case by case: what the kernel hands to its parameter handlers.
    #[test]
    fn kernel_next_arg_table() {
        type Row = (
            &'static [u8],
            &'static [(&'static str, Option<&'static str>)],
        );
        let rows: &[Row] = &[
            (b"", &[]),
            (b" \t\n ", &[]),
            (b"a=1 b", &[("a", Some("1")), ("b", None)]),
            (b"a= b", &[("a", Some("")), ("b", None)]),
            // A quote that does not start the parameter or the value stays,
            // and still toggles quoting.
            (b"a=b\"c", &[("a", Some("b\"c"))]),
            (b"a=b\"c d\" e", &[("a", Some("b\"c d\"")), ("e", None)]),
            (b"k=v\"", &[("k", Some("v\""))]),
            (b"x\"y=1 2\"", &[("x\"y", Some("1 2\""))]),
            // A quote opening the value: removed, with a trailing one.
            (b"k=\"a b\" z", &[("k", Some("a b")), ("z", None)]),
            (b"k=\"a\"b", &[("k", Some("a\"b"))]),
            (b"k=\"\"", &[("k", Some(""))]),
            (b"k=\"", &[("k", Some(""))]),
            // A quote opening the parameter, even before the key.
            (b"\"k=a b\" z=1", &[("k", Some("a b")), ("z", Some("1"))]),
            (b"\"a b=c d\"", &[("a b", Some("c d"))]),
            (b"\"k=\"v\"", &[("k", Some("v"))]),
            (b"\"quiet\"", &[("quiet", None)]),
            (b"\"", &[("", None)]),
            // The first '=' splits, but not one at the very start.
            (b"a==b", &[("a", Some("=b"))]),
            (b"=x", &[("=x", None)]),
            (b"=x=y", &[("=x", Some("y"))]),
            // Separators: the kernel's isspace(), 0xA0 included; NUL ends.
            (
                b"a=1\x0bb=2\x0cc=3\rd\xa0e",
                &[
                    ("a", Some("1")),
                    ("b", Some("2")),
                    ("c", Some("3")),
                    ("d", None),
                    ("e", None),
                ],
            ),
            (b"a=1\0b=2", &[("a", Some("1"))]),
            // `--` ends the kernel's parameters; `--=x` does not.
            (b"a=1 -- b=2 single", &[("a", Some("1"))]),
            (b"-- a=1", &[]),
            (b"a \"--\" b", &[("a", None)]),
            (b"a --=x b", &[("a", None), ("--", Some("x")), ("b", None)]),
        ];
        for (line, want) in rows {
            let want: Vec<(String, Option<String>)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect();
            assert_eq!(all(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// dracut's test/TEST-80-GETARG: its command line and what getarg finds.
    #[test]
    fn dracut_getarg_cases() {
        let line = "key1=0 key2=val key2=val2 key3=\"  val  3  \" \"  key 4  =\"val4 \"key  5=val  5\" \"key 6=\"\"val  6\" key7=\"foo\"bar\" baz=\"end \"  key8  =  val 8  \"\n\"key 9\"=\"val 9\"";
        let c = Cmdline::parse(line);
        let found: &[(&str, &str)] = &[
            ("key1", "0"),
            ("key2", "val2"), // the last wins
            ("key3", "  val  3  "),
            ("  key 4  ", "val4"),
            ("key  5", "val  5"),
            ("key 6", "\"val  6"),
            ("key7", "foo\"bar\" baz=\"end"),
            ("  key8  ", "  val 8  "),
            ("key 9\"", "val 9"),
        ];
        for (k, v) in found {
            assert_eq!(c.value(k), Some(*v), "{k:?}");
        }
        for k in ["key", "4", "5", "6", "key8", "9", "\"", "baz"] {
            assert!(!c.has(k), "{k:?} should not be found");
        }
        assert_eq!(c.values("key2").collect::<Vec<_>>(), ["val", "val2"]);
        // Its getargbool cases: the last occurrence decides; a bare key is true.
        let c = Cmdline::parse("rd.break=cmdlined rd.lvm=0 rd.auto rd.auto=1 rd.auto=0");
        assert_eq!(c.flag("rd.lvm"), Ok(Some(false)));
        assert_eq!(c.flag("rd.auto"), Ok(Some(false)));
        assert_eq!(c.value("rd.break"), Some("cmdlined"));
        let c = Cmdline::parse("rdbreak=cmdline rd.lvm rd.auto=0 rd.auto rd.retry=10");
        assert_eq!(c.flag("rd.auto"), Ok(Some(true)));
        assert_eq!(c.flag("rd.lvm"), Ok(Some(true)));
        assert_eq!(c.value("rd.retry"), Some("10"));
        let c = Cmdline::parse("ip=a ip=b ip=dhcp6");
        assert_eq!(c.values("ip").collect::<Vec<_>>(), ["a", "b", "dhcp6"]);
        // A bare key after key=value: the key has no value any more.
        let c = Cmdline::parse("bridge=val bridge");
        assert!(c.has("bridge"));
        assert_eq!(c.value("bridge"), None);
        assert_eq!(c.values("bridge").collect::<Vec<_>>(), ["val"]);
    }

    /// What follows `--` is init's: none of it reaches BootParams.
    #[test]
    fn parameters_after_double_dash_are_not_ours() {
        let c = Cmdline::parse(
            "root=live:http://10.0.2.2/a.squashfs -- root=live:http://evil/b.squashfs nodeboot.token=x",
        );
        assert!(!c.has("nodeboot.token"));
        let p = BootParams::from_cmdline(&c).unwrap();
        assert_eq!(p.live_url.as_deref(), Some("http://10.0.2.2/a.squashfs"));
    }

    /// Never a panic, whatever the bytes: every short string over an
    /// alphabet of the bytes the parser cares about, then pseudo-random ones.
    #[test]
    fn any_bytes_parse() {
        let alphabet = [b'a', b'=', b'"', b' ', b'-', 0xa0, 0, b'\n', 0xff];
        let n = alphabet.len();
        let mut line = Vec::new();
        for len in 0..=5u32 {
            for mut k in 0..n.pow(len) {
                line.clear();
                for _ in 0..len {
                    line.push(alphabet[k % n]);
                    k /= n;
                }
                let c = Cmdline::parse_bytes(&line);
                let _ = BootParams::from_cmdline(&c);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            line.clear();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push(alphabet[(x % n as u64) as usize]);
            }
            let _ = BootParams::from_cmdline(&Cmdline::parse_bytes(&line));
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
            "01-+a-bb-cc-dd-ee-ff",
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
            (
                "nodeboot.cache.keep=0",
                "nodeboot.cache.keep=0: expected a number of images from 1 to 16",
            ),
            (
                "nodeboot.cache.keep=17",
                "nodeboot.cache.keep=17: expected a number of images from 1 to 16",
            ),
            (
                "nodeboot.cache=maybe",
                "nodeboot.cache=maybe: expected 1 or 0",
            ),
            (
                "nodeboot.index=tftp://x/i.caibx",
                "nodeboot.index=tftp://x/i.caibx: expected an http:// or https:// URL",
            ),
            (
                "nodeboot.index.sha256=12",
                "nodeboot.index.sha256=12: expected 64 hexadecimal digits",
            ),
            (
                "nodeboot.store=/mnt/store",
                "nodeboot.store=/mnt/store: expected an http:// or https:// URL",
            ),
            ("nodeboot.peers=2", "nodeboot.peers=2: expected 1 or 0"),
            (
                "nodeboot.peers.port=70000",
                "nodeboot.peers.port=70000: expected a TCP port from 1 to 65535, or 0 to serve no chunks",
            ),
            (
                "nodeboot.index=http://b/live.caibx",
                "nodeboot.index=http://b/live.caibx: also needs nodeboot.index.sha256= (the index's digest",
            ),
            (
                "nodeboot.index=http://b/live.caibx nodeboot.index.sha256=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
                "nodeboot.index=http://b/live.caibx: also needs nodeboot.sha256= (the image's digest)",
            ),
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
        assert_eq!((p.index_url.clone(), p.stores.len()), (None, 0));
        assert_eq!((p.peers, p.peers_port), (false, DEFAULT_PEERS_PORT));
        let p = BootParams::from_cmdline(&Cmdline::parse(&format!(
            "root=live:http://b/live.squashfs nodeboot.sha256={digest} nodeboot.index=http://b/live.caibx nodeboot.index.sha256={} nodeboot.store=http://m1/store nodeboot.store=https://m2/s",
            "CD".repeat(32)
        )))
        .unwrap();
        assert_eq!(p.index_url.as_deref(), Some("http://b/live.caibx"));
        assert_eq!(p.index_sha256, Some("cd".repeat(32)));
        assert_eq!(p.stores, ["http://m1/store", "https://m2/s"]);
        let p = BootParams::from_cmdline(&Cmdline::parse(
            "root=live:http://b/x nodeboot.peers nodeboot.peers.port=0",
        ))
        .unwrap();
        assert_eq!((p.peers, p.peers_port), (true, 0));
    }

    #[test]
    fn mirrors_follow_root_live_in_command_line_order() {
        let p = BootParams::from_cmdline(&Cmdline::parse(
            "nodeboot.mirror=http://m1.example/live.squashfs root=live:http://10.0.2.2:8080/live.squashfs \
             nodeboot.mirror=https://m2.example:8443/img/live.squashfs quiet",
        ))
        .unwrap();
        let o = p.origins.unwrap();
        assert_eq!(o.primary(), "http://10.0.2.2:8080/live.squashfs");
        assert_eq!(
            o.urls(),
            [
                "http://10.0.2.2:8080/live.squashfs",
                "http://m1.example/live.squashfs",
                "https://m2.example:8443/img/live.squashfs"
            ]
        );
        assert_eq!(o.len(), 3);
        assert_eq!(p.live_url.as_deref(), Some(o.primary()));
        // Mirrors without root=live: are not a live boot.
        let p = BootParams::from_cmdline(&Cmdline::parse("nodeboot.mirror=http://m/x")).unwrap();
        assert_eq!((p.live_url, p.origins), (None, None));
    }

    #[test]
    fn a_long_presigned_url_survives_the_command_line_whole() {
        // An S3 presigned URL: `&`, `=`, `%2F` escapes, ~1 KB.
        let url = format!(
            "https://bucket.s3.eu-central-1.amazonaws.com/images/squareos-9.2.squashfs\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Feu-central-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20260101T000000Z&X-Amz-Expires=604800\
             &X-Amz-Security-Token={}\
             &X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            "IQoJb3JpZ2luX2VjE%2B%2F%3D".repeat(30),
            "ab".repeat(32)
        );
        assert!(url.len() > 900, "{}", url.len());
        let line = format!(
            "console=ttyS0 root=live:http://10.0.2.2/live.squashfs nodeboot.mirror={url} \
             nodeboot.sha256={} rd.neednet=1",
            "cd".repeat(32)
        );
        let p = BootParams::from_cmdline(&Cmdline::parse(&line)).unwrap();
        assert_eq!(p.origins.unwrap().urls()[1], url);
        // And as the primary.
        let p = BootParams::from_cmdline(&Cmdline::parse(&format!("root=live:{url}"))).unwrap();
        assert_eq!(p.live_url.as_deref(), Some(url.as_str()));
    }

    #[test]
    fn bad_origins_are_refused_with_the_parameter_named() {
        let rows: &[(&str, &str)] = &[
            (
                "root=live:http://a/x nodeboot.mirror=ftp://b/x",
                "nodeboot.mirror=ftp://b/x: only http:// and https:// URLs are supported",
            ),
            (
                "root=live:http://a/x nodeboot.mirror=",
                "nodeboot.mirror=: only http:// and https:// URLs are supported",
            ),
            (
                "root=live:http://a/x nodeboot.mirror=https:///x",
                "nodeboot.mirror=https:///x: the URL has no host",
            ),
            (
                "root=live:http:///live.squashfs",
                "root=live:http:///live.squashfs: the URL has no host",
            ),
            (
                "root=live:http://a/x \"nodeboot.mirror=http://b/a b\"",
                "nodeboot.mirror=http://b/a b: the URL holds a space or a control character",
            ),
        ];
        for (line, msg) in rows {
            let e = BootParams::from_cmdline(&Cmdline::parse(line))
                .unwrap_err()
                .to_string();
            assert_eq!(e, *msg, "{line}");
        }
        let many: String = (0..=MAX_MIRRORS)
            .map(|i| format!(" nodeboot.mirror=http://m{i}/x"))
            .collect();
        let e = BootParams::from_cmdline(&Cmdline::parse(&format!("root=live:http://a/x{many}")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "9 nodeboot.mirror= given: at most 8 are read");
    }
}
