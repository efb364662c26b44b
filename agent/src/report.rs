//! Phase reports to the boot server: `POST {grendel.address}/status` with
//! `{"hostname", "mac", "phase", "message", "image"}` (bootd keeps them for
//! `GET /nodes` and its page). Best effort: one try with a short timeout, a
//! failure is logged and never stops the boot (a Grendel server answers 404).
//!
//! With the node's key ([`Reporter::with_key`]), each report is signed by
//! it (`Authorization: Nodeboot …`, over a nonce from bootd): bootd takes
//! the status of a host that has a key from that key only. Without a key,
//! a `nodeboot.token=` of the command line (bootd `--secrets`) is sent as
//! `Authorization: Bearer`, which binds the reports of a host bootd has no
//! key for to its latest boot. The token is never logged.
use crate::cmdline::{BootParams, Mac};
use std::time::Duration;

/// Bound of one report, connection included.
const TIMEOUT: Duration = Duration::from_secs(3);

pub struct Reporter {
    url: Option<String>,
    hostname: String,
    mac: Option<Mac>,
    image: Option<String>,
    /// `Bearer <nodeboot.token>`, when the command line has one.
    auth: Option<zeroize::Zeroizing<String>>,
    /// The node's key, which signs each report.
    key: Option<std::sync::Arc<nodeboot_identity::NodeKey>>,
    /// Where to load the key from at the first report, when not given.
    lazy: Option<crate::identity::Place>,
    loaded: std::sync::OnceLock<Option<std::sync::Arc<nodeboot_identity::NodeKey>>>,
    agent: ureq::Agent,
}

impl Reporter {
    /// Reports go to `grendel.address`; none without it.
    pub fn new(p: &BootParams, fallback_hostname: &str) -> Reporter {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
            .build();
        Reporter {
            url: p
                .grendel_address
                .as_deref()
                .filter(|a| !a.is_empty())
                .map(|a| format!("{}/status", a.trim_end_matches('/'))),
            hostname: p
                .hostname
                .clone()
                .unwrap_or_else(|| fallback_hostname.to_string()),
            mac: p.bootif,
            image: p.live_url.clone(),
            auth: None,
            key: None,
            lazy: None,
            loaded: std::sync::OnceLock::new(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Send `nodeboot.token=` of the command line at `cmdline` with each
    /// report (none when it has no token or cannot be read).
    pub fn with_token_from(mut self, cmdline: &std::path::Path) -> Reporter {
        self.auth = crate::cmdline::Cmdline::from_path(cmdline)
            .ok()
            .and_then(|c| c.value("nodeboot.token").map(str::to_string))
            .filter(|t| !t.is_empty())
            .map(|t| zeroize::Zeroizing::new(format!("Bearer {t}")));
        self
    }

    /// Sign each report with `key`.
    pub fn with_key(mut self, key: Option<std::sync::Arc<nodeboot_identity::NodeKey>>) -> Reporter {
        self.key = key;
        self
    }

    /// Load the key from `place` at the first report (the initramfs starts
    /// before udev has seen every disk; the first report comes after the
    /// network is up).
    pub fn with_key_from(mut self, place: crate::identity::Place) -> Reporter {
        self.lazy = Some(place);
        self
    }

    /// The `Authorization` of a report with `body`: signed when there is
    /// a key (a nonce is asked first), else the token, if any.
    fn authorization(&self, url: &str, body: &[u8]) -> Option<zeroize::Zeroizing<String>> {
        let key = self
            .key
            .clone()
            .or_else(crate::identity::remembered)
            .or_else(|| {
                let place = self.lazy.as_ref()?;
                self.loaded
                    .get_or_init(|| crate::identity::load_for_reports(place))
                    .clone()
            });
        let (Some(key), Some(mac)) = (key, self.mac) else {
            return self.auth.clone();
        };
        let base = url.strip_suffix("/status").unwrap_or(url);
        let nonce = match crate::identity::fetch_nonce(&self.agent, base) {
            Ok((200..=299, n)) => n,
            _ => {
                tracing::debug!("no nonce from {base}: the report goes unsigned");
                return self.auth.clone();
            }
        };
        let h = key.authorize(
            "POST",
            "/status",
            &self.hostname,
            &mac.to_string(),
            crate::identity::unix_now(),
            &nonce,
            body,
        );
        Some(zeroize::Zeroizing::new(h))
    }

    /// The JSON body of a report.
    pub fn body(&self, phase: &str, message: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "hostname": self.hostname,
            "mac": self.mac.map(|m| m.to_string()),
            "phase": phase,
            "message": message.map(|m| m.chars().take(4000).collect::<String>()),
            "image": self.image,
        })
    }

    /// Send a phase; returns whether the server took it (for the logs and tests).
    pub fn phase(&self, phase: &str, message: Option<&str>) -> bool {
        let Some(url) = &self.url else {
            return false;
        };
        let body = self.body(phase, message).to_string();
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        let auth = self.authorization(url, body.as_bytes());
        if let Some(a) = &auth {
            req = req.header("Authorization", a.as_str());
        }
        match req.send(body.as_bytes()) {
            Ok(r) if r.status().is_success() => {
                tracing::debug!("reported {phase} to {url}");
                true
            }
            Ok(mut r) => {
                let why = r
                    .body_mut()
                    .with_config()
                    .limit(1024)
                    .read_to_string()
                    .unwrap_or_default();
                let why = why
                    .lines()
                    .next()
                    .unwrap_or(r.status().as_str())
                    .to_string();
                if r.status().as_u16() == 404 {
                    tracing::debug!("{url} answered the {phase} report: {why}");
                } else {
                    tracing::info!("{url} refused the {phase} report: {why}");
                }
                false
            }
            Err(e) => {
                tracing::info!("could not report {phase} to {url}: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn params(cmdline: &str) -> BootParams {
        BootParams::from_cmdline(&crate::cmdline::Cmdline::parse(cmdline)).unwrap()
    }

    #[test]
    fn posts_the_phase_as_json() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body announced by Content-Length.
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap();
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8(req).unwrap()
        });
        let r = Reporter::new(
            &params(&format!(
                "root=live:http://x/live.squashfs BOOTIF=01-52-54-00-12-34-56 grendel.hostname=cn1 grendel.address=http://127.0.0.1:{port}/"
            )),
            "other",
        );
        let cmdline = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            cmdline.path(),
            format!("console=ttyS0 nodeboot.token={}\n", "ab".repeat(32)),
        )
        .unwrap();
        let r = r.with_token_from(cmdline.path());
        assert!(r.phase("fetching", Some("1 of 2")));
        let req = h.join().unwrap();
        assert!(req.starts_with("POST /status HTTP/1.1"), "{req}");
        let auth = format!("authorization: Bearer {}\r\n", "ab".repeat(32));
        assert!(
            req.to_ascii_lowercase()
                .contains(&auth.to_ascii_lowercase()),
            "{req}"
        );
        let body: serde_json::Value =
            serde_json::from_str(req.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["hostname"], "cn1");
        assert_eq!(body["mac"], "52:54:00:12:34:56");
        assert_eq!(body["phase"], "fetching");
        assert_eq!(body["message"], "1 of 2");
        assert_eq!(body["image"], "http://x/live.squashfs");
    }

    #[test]
    fn no_server_is_not_an_error() {
        // Nothing listens there: the report fails quickly and quietly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Reporter::new(
            &params(&format!("grendel.address=http://127.0.0.1:{port}")),
            "h",
        );
        let t = std::time::Instant::now();
        assert!(!r.phase("booted", None));
        assert!(t.elapsed() < Duration::from_secs(5));
        // Without grendel.address nothing is sent.
        assert!(!Reporter::new(&params(""), "h").phase("booted", None));
    }
}
