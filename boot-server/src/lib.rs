//! bootd, the nodeboot boot server. For now the artifact server: kernel,
//! initramfs, the live image and its `.sha256` sidecar over HTTP/1.1 with
//! Range, HEAD and validators, plus Grendel's `/repo/` tree; and the nodes'
//! status (`POST /status`, `GET /nodes`, the page at `/`); the inventory and
//! the per-host iPXE script (`GET /boot/ipxe?mac=…`); per-host secrets behind
//! tokens minted into those scripts (`GET /secrets/<name>`); for the firmware,
//! a DHCP responder (full or proxyDHCP) and a read-only TFTP server.
//!
//! - [`http`]: request heads (httparse), ranges, validators, dates.
//! - [`files`]: URL path → file inside the served trees, refusals.
//! - [`transfer`]: file range → socket (sendfile, or paced for tests).
//! - [`status`]: node status reports, validated and kept (in memory, and in
//!   `STATE/nodes.redb` through [`store`] with `--state`); `/nodes`.
//! - [`metrics`]: counters for `GET /metrics` (Prometheus text format).
//! - [`page`]: the HTML status page at `/`.
//! - [`inventory`]: hosts and images (TOML), reload, Grendel import, iPXE.
//! - [`template`]: the Go-template kernel command line (gtmpl).
//! - [`secrets`]: per-host secrets behind tokens minted into iPXE scripts.
//! - [`server`]: listener, connections, responses, access log.
//! - [`dhcp`]: DHCP answers for the inventory's hosts (boot file by client).
//! - [`tftp`]: the iPXE binaries over TFTP, read-only.
//! - [`netboot`]: the DHCP and TFTP sockets and threads beside HTTP.
//! - [`ndp`]: router advertisements that end iPXE's IPv6 wait (lifetime 0).
//! - [`tls`]: HTTPS (rustls): the certificate, reloaded; one connection's stream.
//! - [`notify`]: systemd's readiness protocol (READY, RELOADING, STOPPING).
//! - [`config`]: `bootd serve --config FILE` (TOML), checked with FILE:LINE: KEY.
pub mod config;
pub mod dhcp;
pub mod files;
pub mod grub;
pub mod http;
pub mod identity;
pub mod inventory;
pub mod limits;
pub mod metrics;
pub mod ndp;
pub mod netboot;
pub mod notify;
pub mod page;
pub mod peers;
pub mod reload;
pub mod secrets;
pub mod server;
pub mod status;
pub mod store;
pub mod template;
pub mod tftp;
pub mod tls;
pub mod transfer;

/// `s` with control characters (newlines, escape sequences) and Unicode
/// line separators escaped, for a log line: text from the network cannot
/// start a line of its own or rewrite the terminal.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The end of a rationed line: how many lines [`Ration::take`] left out
/// before it (nothing when none).
pub fn left_out(n: u64) -> String {
    if n > 0 {
        format!(" ({n} more left out in the last minute)")
    } else {
        String::new()
    }
}

/// At most `per_minute` log lines a minute; the rest are counted.
#[derive(Debug)]
pub struct Ration {
    per_minute: u32,
    /// (minute started, lines in it, lines left out since the last line)
    state: std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>,
}

impl Ration {
    pub const fn new(per_minute: u32) -> Ration {
        Ration {
            per_minute,
            state: std::sync::Mutex::new(None),
        }
    }

    /// `Some(lines left out before this one)` when a line may be written.
    pub fn take(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let (start, n, skipped) = st.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= std::time::Duration::from_secs(60) {
            (*start, *n) = (now, 0);
        }
        if *n >= self.per_minute {
            *skipped += 1;
            return None;
        }
        *n += 1;
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ration_counts_what_it_leaves_out() {
        let r = Ration::new(2);
        assert_eq!(r.take(), Some(0));
        assert_eq!(r.take(), Some(0));
        assert_eq!(r.take(), None);
        assert_eq!(r.take(), None);
        // A new minute: the next line says two were left out.
        r.state.lock().unwrap().as_mut().unwrap().0 -= std::time::Duration::from_secs(61);
        assert_eq!(r.take(), Some(2));
        assert_eq!(r.take(), Some(0));
    }

    #[test]
    fn clean_escapes_what_could_forge_a_line() {
        assert_eq!(super::clean("/a b"), "/a b");
        assert_eq!(
            super::clean("x\nINFO secret munge.key sent\r\u{1b}[2K\u{2028}é"),
            "x\\nINFO secret munge.key sent\\r\\u{1b}[2K\\u{2028}é"
        );
    }
}
