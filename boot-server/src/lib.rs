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
//! - [`status`]: node status reports, validated and kept in memory; `/nodes`.
//! - [`page`]: the HTML status page at `/`.
//! - [`inventory`]: hosts and images (TOML), reload, Grendel import, iPXE.
//! - [`template`]: the Go-template kernel command line (gtmpl).
//! - [`secrets`]: per-host secrets behind tokens minted into iPXE scripts.
//! - [`server`]: listener, connections, responses, access log.
//! - [`dhcp`]: DHCP answers for the inventory's hosts (boot file by client).
//! - [`tftp`]: the iPXE binaries over TFTP, read-only.
//! - [`netboot`]: the DHCP and TFTP sockets and threads beside HTTP.
pub mod dhcp;
pub mod files;
pub mod http;
pub mod inventory;
pub mod limits;
pub mod netboot;
pub mod page;
pub mod secrets;
pub mod server;
pub mod status;
pub mod template;
pub mod tftp;
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

#[cfg(test)]
mod tests {
    #[test]
    fn clean_escapes_what_could_forge_a_line() {
        assert_eq!(super::clean("/a b"), "/a b");
        assert_eq!(
            super::clean("x\nINFO secret munge.key sent\r\u{1b}[2K\u{2028}é"),
            "x\\nINFO secret munge.key sent\\r\\u{1b}[2K\\u{2028}é"
        );
    }
}
