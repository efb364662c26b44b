//! `bootd serve`'s options, from flags and from a TOML file
//! (`--config FILE`, `/etc/nodeboot/bootd.toml` under systemd).
//!
//! One struct, [`Options`], is both the flags (clap) and the file (serde):
//! every flag has a key of the same name with `_` for `-` (`--max-connections`
//! is `max_connections`). A flag given on the command line wins over the
//! file, the file over the defaults. The file is checked whole before bootd
//! starts: an unknown key, a value of the wrong type, a bad duration or an
//! out-of-range number is an error naming the file, line, column and key:
//!
//! ```text
//! /etc/nodeboot/bootd.toml:4:16: head_timeout: "10 s": unit must be s, m or h
//! ```
//!
//! Durations are a number of seconds (`10`) or a string with a unit
//! (`"10s"`, `"2m"`, `"1h"`).
use crate::dhcp::Mode;
use crate::secrets::parse_ttl;
use anyhow::{bail, Result};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the packaged unit reads its configuration.
pub const DEFAULT_FILE: &str = "/etc/nodeboot/bootd.toml";

/// The file is refused above this size (a configuration is a few KiB).
const MAX_FILE: u64 = 1 << 20;

fn ttl(s: &str) -> Result<Duration, String> {
    parse_ttl(s)
}

/// `bootd serve`'s options; `None`: not given (the default applies, see
/// [`Options::resolve`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Directory served at / (required, here or in the file).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Directory served at /repo/ (Grendel compatibility: /repo/postscript.sh).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Address to listen on for HTTP (port 0: any free port, see --port-file)
    /// [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Limit each transfer to this many bytes per second (tests).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(deserialize_with = "at_least_1")]
    pub rate_limit: Option<u64>,
    /// Write the HTTP port actually bound to this file (atomically).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Inventory (TOML: [[image]], [[host]]) behind GET /boot/ipxe?mac=…;
    /// reloaded when it changes and on SIGHUP (a bad new file is logged,
    /// the old kept).
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Base URL of the kernel, initrd and live image in iPXE scripts
    /// (default: http:// + the request's Host header; https:// over HTTPS).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Per-host secrets, DIR/<host>/<name> (mode 0700, outside --root and
    /// --repo; needs --inventory): each iPXE script gets a token
    /// (nodeboot.token=) that fetches GET /secrets/<name>?mac= once per
    /// name with Authorization: Bearer.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// bootd's lasting state (mode 0700): the nodes' enrolled keys
    /// (DIR/keys/HOST.pub), their status and boot history
    /// (DIR/nodes.redb). Without it, both are lost on restart.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// File holding the admin token (mode 0600, one word of 16+
    /// characters): GET /nodes, GET / and POST /admin/arm need it.
    #[arg(long)]
    pub admin_token: Option<PathBuf>,
    /// Lifetime of a token from its iPXE script: 900, 90s, 15m, 1h
    /// [default: 15m].
    #[arg(long, value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Option<Duration>,
    /// Answer DHCP on this interface (its name, or one of its IPv4
    /// addresses; needs --inventory): the inventory's MACs only, each told
    /// what to boot (see the inventory's [dhcp] table).
    #[arg(long, value_name = "IFACE|ADDR")]
    pub dhcp: Option<String>,
    /// full: bootd gives the inventory's addresses (static leases);
    /// proxy: another DHCP server does, bootd only adds the boot file
    /// (proxyDHCP, ports 67 and 4011). Needs --dhcp [default: proxy].
    #[arg(long, value_enum)]
    #[serde(deserialize_with = "dhcp_mode")]
    pub dhcp_mode: Option<Mode>,
    /// Answer IPv6 router solicitations from the inventory's MACs on the
    /// --dhcp interface with a router advertisement that makes no one use
    /// bootd as a router (lifetime 0, no prefix, no DHCPv6): iPXE then ends
    /// its IPv6 setup at once instead of waiting ~16 s for a router
    /// [default: true].
    #[arg(long, value_name = "BOOL")]
    pub ipv6_ra: Option<bool>,
    /// Serve this directory read-only over TFTP (the iPXE binaries:
    /// undionly.kpxe, snponly.efi, ipxe.efi).
    #[arg(long)]
    pub tftp_root: Option<PathBuf>,
    /// TFTP address (needs --tftp-root; default: port 69 of the --dhcp
    /// interface's address, else 0.0.0.0:69).
    #[arg(long)]
    pub tftp_listen: Option<SocketAddr>,
    /// Address to listen on for HTTPS (port 0: any free port); needs
    /// --tls-cert and --tls-key. Default: no HTTPS.
    #[arg(long, help_heading = "HTTPS")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the HTTPS listener (the server's first);
    /// reloaded when it changes and on SIGHUP.
    #[arg(long, help_heading = "HTTPS")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, help_heading = "HTTPS")]
    pub tls_key: Option<PathBuf>,
    /// Write the HTTPS port actually bound to this file (atomically).
    #[arg(long, help_heading = "HTTPS")]
    pub tls_port_file: Option<PathBuf>,
    /// On SIGTERM, responses in flight get this long to finish before
    /// bootd exits [default: 10s].
    #[arg(long, value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub stop_timeout: Option<Duration>,

    /// Open HTTP(S) connections, all clients; when all are taken, the one
    /// idle longest is closed for a newcomer [default: 2048].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    #[serde(deserialize_with = "connections")]
    pub max_connections: Option<u64>,
    /// Open HTTP(S) connections per client address (503 beyond) [default: 64].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    #[serde(deserialize_with = "connections")]
    pub max_connections_per_client: Option<u64>,
    /// A request head (and a TLS handshake) must arrive whole within this
    /// of its first byte [default: 10s].
    #[arg(long, help_heading = "Limits", value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub head_timeout: Option<Duration>,
    /// A request body (POST /status) must arrive whole within this
    /// [default: 10s].
    #[arg(long, help_heading = "Limits", value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Option<Duration>,
    /// An idle keep-alive connection is closed after this [default: 60s].
    #[arg(long, help_heading = "Limits", value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// One write to a client that stopped reading may block this long
    /// [default: 60s].
    #[arg(long, help_heading = "Limits", value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Option<Duration>,
    /// Nodes kept in the status table (without an inventory; with one,
    /// only its hosts are) [default: 10000].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    #[serde(deserialize_with = "connections")]
    pub max_nodes: Option<u64>,
    /// DHCP answers per MAC per second (0: no limit) [default: 5].
    #[arg(long, help_heading = "Limits")]
    pub dhcp_rate: Option<u32>,
    /// TFTP transfers in flight, all clients [default: 64].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    #[serde(deserialize_with = "transfers")]
    pub tftp_max_transfers: Option<u64>,
    /// TFTP transfers in flight per client address [default: 4].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u64).range(1..=65_536))]
    #[serde(deserialize_with = "transfers")]
    pub tftp_per_client: Option<u64>,
    /// TFTP resends of an unacknowledged block before the transfer ends
    /// [default: 4].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u32).range(0..=100))]
    #[serde(deserialize_with = "retries")]
    pub tftp_retries: Option<u32>,
    /// TFTP time between resends (the client's `timeout` option is
    /// ignored) [default: 2s].
    #[arg(long, help_heading = "Limits", value_parser = ttl)]
    #[serde(deserialize_with = "duration")]
    pub tftp_timeout: Option<Duration>,
    /// Largest TFTP block size granted (blksize option) [default: 1468].
    #[arg(long, help_heading = "Limits", value_parser = clap::value_parser!(u16).range(512..=65464))]
    #[serde(deserialize_with = "block")]
    pub tftp_max_block: Option<u16>,
}

/// A duration: seconds (an integer) or a string with a unit.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration: seconds, or a string such as \"10s\", \"2m\", \"1h\"")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            match u64::try_from(v) {
                Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
                _ => Err(E::custom(format!("{v}: must be at least 1 second"))),
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_ttl(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V).map(Some)
}

/// An integer in `lo..=hi`.
fn ranged<'de, D: Deserializer<'de>>(d: D, lo: u64, hi: u64) -> Result<Option<u64>, D::Error> {
    let v = i64::deserialize(d)?;
    match u64::try_from(v) {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(serde::de::Error::custom(format!(
            "{v} is out of range: want {lo} to {hi}"
        ))),
    }
}

fn at_least_1<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    ranged(d, 1, i64::MAX as u64)
}

fn connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    ranged(d, 1, 1_000_000)
}

fn transfers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    ranged(d, 1, 65_536)
}

fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    ranged(d, 0, 100).map(|v| v.map(|n| n as u32))
}

fn block<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    ranged(d, 512, 65464).map(|v| v.map(|n| n as u16))
}

fn dhcp_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
    let s = String::deserialize(d)?;
    <Mode as clap::ValueEnum>::from_str(&s, false)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{s:?}: want \"full\" or \"proxy\"")))
}

/// A configuration file that does not check out: `FILE:LINE:COLUMN: KEY:
/// REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {}{reason}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct Invalid {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key at fault; `None` for TOML syntax errors.
    pub key: Option<String>,
    pub reason: String,
}

/// 1-based line and column of byte `at` in `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The key of the `key = value` whose key or value is at `span`: the key
/// itself, or the text before `=` on the value's line.
fn key_at(text: &str, span: &std::ops::Range<usize>) -> Option<String> {
    let at = span.start.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) => k,
        // A table header ([limits]) or a bare key.
        None => text.get(span.clone()).unwrap_or(line),
    };
    let key = key.trim().trim_matches(|c| c == '[' || c == ']').trim();
    let key = key.trim_matches('"');
    (!key.is_empty() && key.len() <= 100).then(|| crate::clean(key).into_owned())
}

impl Options {
    /// Parse the file's text (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<Options, Invalid> {
        toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = position(text, span.start);
            let reason = e.message().trim().replace('\n', "; ");
            // A syntax error has no key; a value error is on `key = value`.
            let syntax = text.parse::<toml::Table>().is_err();
            let key = e.span().filter(|_| !syntax).and_then(|s| key_at(text, &s));
            Invalid {
                file: file.to_string(),
                line,
                column,
                key,
                reason,
            }
        })
    }

    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Options, Invalid> {
        let file = path.display().to_string();
        let unreadable = |reason: String| Invalid {
            file: file.clone(),
            line: 0,
            column: 0,
            key: None,
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| unreadable(format!("cannot read: {e}")))?
            .len();
        if len > MAX_FILE {
            return Err(unreadable("larger than 1 MiB".into()));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
        Options::parse(&text, &file)
    }

    /// `self` (the flags) over `file`: each option given as a flag wins.
    pub fn over(self, file: Options) -> Options {
        macro_rules! pick {
            ($($f:ident),* $(,)?) => {
                Options { $($f: self.$f.or(file.$f)),* }
            };
        }
        pick!(
            root,
            repo,
            listen,
            rate_limit,
            port_file,
            inventory,
            public_url,
            secrets,
            state,
            admin_token,
            token_ttl,
            dhcp,
            dhcp_mode,
            ipv6_ra,
            tftp_root,
            tftp_listen,
            tls_listen,
            tls_cert,
            tls_key,
            tls_port_file,
            stop_timeout,
            max_connections,
            max_connections_per_client,
            head_timeout,
            body_timeout,
            idle_timeout,
            write_timeout,
            max_nodes,
            dhcp_rate,
            tftp_max_transfers,
            tftp_per_client,
            tftp_retries,
            tftp_timeout,
            tftp_max_block,
        )
    }

    /// The server's configuration, defaults applied and the options that
    /// need another checked: (HTTP address, config, HTTP port file).
    pub fn resolve(self) -> Result<(String, crate::server::Config, Option<PathBuf>)> {
        let Some(root) = self.root else {
            bail!("no root: give --root DIR, or root = \"DIR\" in the --config file");
        };
        let needs = |what: bool, opt: &str, needed: &str| -> Result<()> {
            if what {
                let flag = |k: &str| format!("--{}", k.replace('_', "-"));
                bail!(
                    "{} needs {} (a flag, or the key {needed} of the --config file)",
                    flag(opt),
                    flag(needed)
                );
            }
            Ok(())
        };
        needs(
            self.secrets.is_some() && self.inventory.is_none(),
            "secrets",
            "inventory",
        )?;
        needs(
            self.dhcp.is_some() && self.inventory.is_none(),
            "dhcp",
            "inventory",
        )?;
        needs(
            self.dhcp_mode.is_some() && self.dhcp.is_none(),
            "dhcp_mode",
            "dhcp",
        )?;
        needs(
            self.ipv6_ra.is_some() && self.dhcp.is_none(),
            "ipv6_ra",
            "dhcp",
        )?;
        needs(
            self.tftp_listen.is_some() && self.tftp_root.is_none(),
            "tftp_listen",
            "tftp_root",
        )?;
        let tls = match (self.tls_listen, self.tls_cert, self.tls_key) {
            (Some(listen), Some(cert), Some(key)) => Some(crate::server::TlsOptions {
                listen,
                cert,
                key,
                port_file: self.tls_port_file,
            }),
            (None, None, None) => {
                needs(self.tls_port_file.is_some(), "tls_port_file", "tls_listen")?;
                None
            }
            (listen, cert, key) => bail!(
                "HTTPS needs tls_listen, tls_cert and tls_key together (missing: {})",
                [
                    ("tls_listen", listen.is_none()),
                    ("tls_cert", cert.is_none()),
                    ("tls_key", key.is_none())
                ]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
            ),
        };
        let http = crate::limits::Limits::default();
        let tftp = crate::tftp::Limits::default();
        let cfg = crate::server::Config {
            root,
            repo: self.repo,
            rate_limit: self.rate_limit,
            inventory: self.inventory,
            public_url: self.public_url,
            secrets: self.secrets,
            token_ttl: self.token_ttl.unwrap_or(Duration::from_secs(15 * 60)),
            netboot: crate::netboot::Options {
                dhcp: self.dhcp,
                mode: self.dhcp_mode,
                tftp_root: self.tftp_root,
                tftp_listen: self.tftp_listen,
                dhcp_rate: self.dhcp_rate.unwrap_or(5),
                ipv6_ra: self.ipv6_ra.unwrap_or(true),
                tftp: crate::tftp::Limits {
                    max_transfers: self
                        .tftp_max_transfers
                        .map_or(tftp.max_transfers, |n| n as usize),
                    per_client: self.tftp_per_client.map_or(tftp.per_client, |n| n as usize),
                    retries: self.tftp_retries.unwrap_or(tftp.retries),
                    timeout: self.tftp_timeout.unwrap_or(tftp.timeout),
                    max_block: self.tftp_max_block.unwrap_or(tftp.max_block),
                },
            },
            limits: crate::limits::Limits {
                max_connections: self
                    .max_connections
                    .map_or(http.max_connections, |n| n as usize),
                per_client: self
                    .max_connections_per_client
                    .map_or(http.per_client, |n| n as usize),
                head_timeout: self.head_timeout.unwrap_or(http.head_timeout),
                body_timeout: self.body_timeout.unwrap_or(http.body_timeout),
                idle_timeout: self.idle_timeout.unwrap_or(http.idle_timeout),
                write_timeout: self.write_timeout.unwrap_or(http.write_timeout),
            },
            max_nodes: self
                .max_nodes
                .map_or(crate::status::MAX_NODES, |n| n as usize),
            state: self.state,
            admin_token: self.admin_token,
            tls,
            stop_timeout: self.stop_timeout.unwrap_or(Duration::from_secs(10)),
        };
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        Ok((listen, cfg, self.port_file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Options::parse(text, "/etc/nodeboot/bootd.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        assert_eq!(
            err("root = \"/srv\"\nlisten = \"0.0.0.0:80\"\nmax_conections = 5\n"),
            "/etc/nodeboot/bootd.toml:3:1: max_conections: unknown field `max_conections`, \
             expected one of `root`, `repo`, `listen`, `rate_limit`, `port_file`, `inventory`, \
             `public_url`, `secrets`, `state`, `admin_token`, `token_ttl`, `dhcp`, `dhcp_mode`, \
             `ipv6_ra`, `tftp_root`, `tftp_listen`, `tls_listen`, `tls_cert`, `tls_key`, `tls_port_file`, \
             `stop_timeout`, `max_connections`, `max_connections_per_client`, `head_timeout`, \
             `body_timeout`, `idle_timeout`, `write_timeout`, `max_nodes`, `dhcp_rate`, \
             `tftp_max_transfers`, `tftp_per_client`, `tftp_retries`, `tftp_timeout`, \
             `tftp_max_block`"
        );
        assert_eq!(
            err("root = \"/srv\"\n\nmax_connections = \"many\"\n"),
            "/etc/nodeboot/bootd.toml:3:19: max_connections: invalid type: string \"many\", \
             expected i64"
        );
        assert_eq!(
            err("# bootd\nhead_timeout = \"10 s\"\n"),
            "/etc/nodeboot/bootd.toml:2:16: head_timeout: \"10 s\": unit must be s, m or h"
        );
        assert_eq!(
            err("idle_timeout = 0\n"),
            "/etc/nodeboot/bootd.toml:1:16: idle_timeout: 0: must be at least 1 second"
        );
        assert_eq!(
            err("tftp_max_block = 100\n"),
            "/etc/nodeboot/bootd.toml:1:18: tftp_max_block: 100 is out of range: want 512 to 65464"
        );
        assert_eq!(
            err("dhcp_mode = \"half\"\n"),
            "/etc/nodeboot/bootd.toml:1:13: dhcp_mode: \"half\": want \"full\" or \"proxy\""
        );
        assert_eq!(
            err("tftp_listen = \"0.0.0.0\"\n"),
            "/etc/nodeboot/bootd.toml:1:15: tftp_listen: invalid socket address syntax"
        );
        // A section bootd does not have.
        assert!(
            err("[limits]\nmax_connections = 5\n")
                .starts_with("/etc/nodeboot/bootd.toml:1:2: limits: unknown field `limits`"),
            "{}",
            err("[limits]\nmax_connections = 5\n")
        );
        // Syntax: no key to name.
        let e = err("root = \"/srv\nlisten = 1\n");
        assert!(e.starts_with("/etc/nodeboot/bootd.toml:1:"), "{e}");
    }

    #[test]
    fn durations_are_seconds_or_strings() {
        let o = Options::parse("head_timeout = 5\nidle_timeout = \"2m\"\n", "f").unwrap();
        assert_eq!(o.head_timeout, Some(Duration::from_secs(5)));
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file = Options::parse(
            "root = \"/srv/file\"\nlisten = \"0.0.0.0:80\"\nhead_timeout = \"5s\"\n",
            "f",
        )
        .unwrap();
        let flags = Options {
            listen: Some("127.0.0.1:0".into()),
            ..Options::default()
        };
        let (listen, cfg, port_file) = flags.over(file).resolve().unwrap();
        assert_eq!(listen, "127.0.0.1:0");
        assert_eq!(cfg.root, PathBuf::from("/srv/file"));
        assert_eq!(cfg.limits.head_timeout, Duration::from_secs(5));
        assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.stop_timeout, Duration::from_secs(10));
        assert_eq!(port_file, None);
        assert!(cfg.tls.is_none());
    }

    #[test]
    fn options_that_need_another_say_so() {
        let e = |o: Options| o.resolve().unwrap_err().to_string();
        let root = || Some(PathBuf::from("/srv"));
        assert_eq!(
            e(Options::default()),
            "no root: give --root DIR, or root = \"DIR\" in the --config file"
        );
        assert_eq!(
            e(Options {
                root: root(),
                secrets: Some("/s".into()),
                ..Options::default()
            }),
            "--secrets needs --inventory (a flag, or the key inventory of the --config file)"
        );
        assert_eq!(
            e(Options {
                root: root(),
                tls_listen: Some("0.0.0.0:443".into()),
                tls_cert: Some("/c".into()),
                ..Options::default()
            }),
            "HTTPS needs tls_listen, tls_cert and tls_key together (missing: tls_key)"
        );
    }

    /// The example shipped as /etc/nodeboot/bootd.toml.
    const EXAMPLE: &str = include_str!("../dist/bootd.toml");

    #[test]
    fn the_example_lists_every_option_with_its_default() {
        use clap::Args;
        let example = Options::parse(EXAMPLE, "bootd.toml").unwrap();
        assert_eq!(example.root, Some(PathBuf::from("/srv/nodeboot/www")));
        // Every flag has its key in the example.
        let cmd = Options::augment_args(clap::Command::new("serve"));
        let keys: Vec<&str> = EXAMPLE
            .lines()
            .filter_map(|l| l.trim_start_matches("# ").split_once(" = "))
            .map(|(k, _)| k)
            .collect();
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            assert!(keys.contains(&id), "{id} is not in dist/bootd.toml");
        }
        // Uncommented, the example checks out, and the values it shows for
        // the options that have a default are the defaults.
        let all: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(kv) if kv.split_once(" = ").is_some() => kv,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let all = Options::parse(&all, "bootd.toml").unwrap();
        let defaults = Options {
            root: all.root.clone(),
            listen: all.listen.clone(),
            token_ttl: all.token_ttl,
            stop_timeout: all.stop_timeout,
            max_connections: all.max_connections,
            max_connections_per_client: all.max_connections_per_client,
            head_timeout: all.head_timeout,
            body_timeout: all.body_timeout,
            idle_timeout: all.idle_timeout,
            write_timeout: all.write_timeout,
            max_nodes: all.max_nodes,
            dhcp_rate: all.dhcp_rate,
            tftp_max_transfers: all.tftp_max_transfers,
            tftp_per_client: all.tftp_per_client,
            tftp_retries: all.tftp_retries,
            tftp_timeout: all.tftp_timeout,
            tftp_max_block: all.tftp_max_block,
            ..Options::default()
        };
        let bare = Options {
            root: all.root.clone(),
            ..Options::default()
        };
        assert_eq!(
            format!("{:?}", defaults.resolve().unwrap()),
            format!("{:?}", bare.resolve().unwrap())
        );
        assert_eq!(all.dhcp_mode, Some(Mode::Proxy));
        assert_eq!(all.ipv6_ra, Some(true));
    }
}
