//! `nodectl secret`: this host's secrets from bootd, with the boot's token.
//!
//! bootd (`--secrets`) puts `nodeboot.token=<64 hex>` on the kernel command
//! line of each host it boots. `nodectl secret fetch NAME --dest PATH`
//! reads it, `grendel.address=` and `BOOTIF=` from the command line, asks
//! `GET {grendel.address}/secrets/NAME?mac=MAC` with `Authorization: Bearer
//! TOKEN`, and installs the bytes at PATH with the requested owner, group and
//! mode (a 0600 temporary file, chowned and chmodded before a byte is
//! written, renamed over PATH). bootd answers each name once per token;
//! `nodectl secret done` closes the token (`DELETE /secrets?mac=`), so that
//! nothing else on the node can use it afterwards (`/proc/cmdline` is
//! readable by every user).
//!
//! The token and the secret are never printed; the secret is zeroed in
//! memory after use.
//!
//! Retries: bootd answers each name once per token, so a retry after bootd
//! answered would be refused for the retry itself ("already fetched") and
//! hide the real answer. An HTTP answer below 500 (a 401, 403, 404, …) is
//! final and shown as it is; only transport failures (no answer at all) and
//! 5xx answers are retried, [`ATTEMPTS`] times in all. When there were
//! several attempts the error shows bootd's first answer and what every
//! attempt got.
use crate::cmdline::{BootParams, Cmdline};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Largest secret accepted (bootd serves at most 1 MiB).
const MAX_SECRET: u64 = 1 << 20;
/// Bound of one request, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts when bootd cannot be reached or answers 5xx.
const ATTEMPTS: u32 = 3;
/// The first wait before a retry; it doubles.
const FIRST_WAIT: Duration = Duration::from_secs(1);

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Fetch one secret of this host from bootd and install it.
    Fetch {
        /// The secret's name (bootd's DIR/<host>/NAME): munge.key, deploy_key, …
        name: String,
        /// Where to install it.
        #[arg(long)]
        dest: PathBuf,
        /// Mode of the installed file (octal).
        #[arg(long, default_value = "0400", value_parser = parse_mode)]
        mode: u32,
        /// Owner: a user of the node's /etc/passwd, or a number.
        #[arg(long, default_value = "root")]
        owner: String,
        /// Group: a group of the node's /etc/group, or a number (default: --owner's name).
        #[arg(long)]
        group: Option<String>,
        /// The kernel command line to read the token, bootd's address and BOOTIF from.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// Root whose etc/passwd and etc/group name the owner and group.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Close the boot's token: bootd refuses any further secret with it.
    Done {
        /// The kernel command line to read the token, bootd's address and BOOTIF from.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
}

/// An octal mode, `0400` or `400`, at most `07777`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?}: want an octal mode such as 0400")),
    }
}

/// What the command line says about reaching bootd.
struct Boot {
    address: String,
    mac: String,
    token: Zeroizing<String>,
}

impl Boot {
    fn read(cmdline: &Path) -> Result<Boot> {
        let c = Cmdline::from_path(cmdline)
            .with_context(|| format!("reading {}", cmdline.display()))?;
        let p = BootParams::from_cmdline(&c)
            .with_context(|| format!("parsing {}", cmdline.display()))?;
        let token = c.value("nodeboot.token").filter(|t| !t.is_empty());
        let Some(token) = token else {
            bail!(
                "no nodeboot.token= on the kernel command line ({}): \
                 bootd adds it only when it runs with --secrets",
                cmdline.display()
            );
        };
        let address = p
            .grendel_address
            .filter(|a| !a.is_empty())
            .with_context(|| format!("no grendel.address= in {}", cmdline.display()))?;
        let mac = p
            .bootif
            .with_context(|| format!("no BOOTIF= in {}", cmdline.display()))?;
        Ok(Boot {
            address: address.trim_end_matches('/').to_string(),
            mac: mac.to_string(),
            token: Zeroizing::new(token.to_string()),
        })
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(TIMEOUT))
                .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
                .build(),
        )
    }

    /// Send `method` to `url` with the token; retry transport failures
    /// and 5xx answers (see the module doc), never another answer.
    fn call(&self, method: &str, url: &str) -> Result<Outcome> {
        let agent = Boot::agent();
        let auth = Zeroizing::new(format!("Bearer {}", self.token.as_str()));
        let mut wait = FIRST_WAIT;
        let mut earlier: Vec<String> = Vec::new();
        let mut first_answer: Option<String> = None;
        for attempt in 1..=ATTEMPTS {
            let sent = match method {
                "DELETE" => agent
                    .delete(url)
                    .header("Authorization", auth.as_str())
                    .call(),
                _ => agent.get(url).header("Authorization", auth.as_str()).call(),
            };
            let got = match sent {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let body = r
                        .body_mut()
                        .with_config()
                        .limit(MAX_SECRET)
                        .read_to_vec()
                        .with_context(|| format!("{method} {url}: reading the answer"))?;
                    let body = Zeroizing::new(body);
                    if status < 500 || attempt == ATTEMPTS {
                        return Ok(Outcome {
                            status,
                            body,
                            earlier,
                            first_answer,
                        });
                    }
                    let text = answer_text(status, &body);
                    first_answer.get_or_insert_with(|| text.clone());
                    text
                }
                Err(e) if retryable(&e) && attempt < ATTEMPTS => e.to_string(),
                Err(e) => {
                    let mut what = format!("{method} {url}");
                    if !earlier.is_empty() {
                        what += &format!(" ({}; attempt {attempt})", earlier.join("; "));
                    }
                    return Err(anyhow::Error::new(e).context(what));
                }
            };
            tracing::info!("{method} {url}: {got}; retrying in {} s", wait.as_secs());
            earlier.push(format!("attempt {attempt}: {got}"));
            std::thread::sleep(wait);
            wait *= 2;
        }
        unreachable!("the last attempt returns")
    }
}

/// A failure where bootd gave no answer (the request may not have reached
/// it): worth another attempt.
fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::Protocol(_)
    )
}

/// bootd's final answer to one request, and what came before it.
struct Outcome {
    status: u16,
    body: Zeroizing<Vec<u8>>,
    /// What the earlier attempts got (transport errors, 5xx answers).
    earlier: Vec<String>,
    /// bootd's first answer, when an earlier attempt had one (a 5xx).
    first_answer: Option<String>,
}

impl Outcome {
    /// Why this is a refusal: bootd's first answer, then, when there were
    /// several attempts, what each of them got (a later refusal may be
    /// caused by the retry itself: a name is answered once per token).
    fn refusal(&self) -> String {
        let last = answer_text(self.status, &self.body);
        if self.earlier.is_empty() {
            return last;
        }
        format!(
            "{} ({}; attempt {}: {last})",
            self.first_answer.as_deref().unwrap_or(&last),
            self.earlier.join("; "),
            self.earlier.len() + 1
        )
    }
}

/// bootd's one-line reason from an error body.
fn reason(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// An answer in one line: bootd's reason, or the status when the body has none.
fn answer_text(status: u16, body: &[u8]) -> String {
    match reason(body) {
        r if r.trim().is_empty() => format!("HTTP {status}"),
        r => r,
    }
}

/// Fetch secret `name` and install it at `dest`; returns what was done.
pub fn fetch(
    cmdline: &Path,
    name: &str,
    dest: &Path,
    mode: u32,
    owner: &str,
    group: Option<&str>,
    root: &Path,
) -> Result<String> {
    // Check the owner before the request: a typo must not use the name up.
    let ids = crate::nodetoml::Ids::read(root)?;
    let uid = ids.user(owner)?;
    let gid = ids.group(group.unwrap_or(owner))?;
    let boot = Boot::read(cmdline)?;
    let url = format!("{}/secrets/{}?mac={}", boot.address, encode(name), boot.mac);
    let got = boot.call("GET", &url)?;
    if got.status != 200 {
        bail!("bootd refused secret {name:?} ({url}): {}", got.refusal());
    }
    crate::nodetoml::install_bytes(&got.body, dest, uid, gid, mode)
        .map(|shown| format!("secret {name}: {shown}, {} bytes", got.body.len()))
}

/// Close the boot's token.
pub fn done(cmdline: &Path) -> Result<()> {
    let boot = Boot::read(cmdline)?;
    let url = format!("{}/secrets?mac={}", boot.address, boot.mac);
    let got = boot.call("DELETE", &url)?;
    if got.status != 204 {
        bail!("bootd did not close the token ({url}): {}", got.refusal());
    }
    Ok(())
}

/// Percent-encode everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `nodectl secret …`.
pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Fetch {
            name,
            dest,
            mode,
            owner,
            group,
            cmdline,
            root,
        } => {
            let done = fetch(
                &cmdline,
                &name,
                &dest,
                mode,
                &owner,
                group.as_deref(),
                &root,
            )?;
            println!("{done}");
            Ok(())
        }
        Cmd::Done { cmdline } => {
            done(&cmdline)?;
            println!("token closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A one-connection server answering `answers` in turn; returns the
    /// port and the requests it saw (request line + headers, lower-cased).
    fn server(answers: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    head.push_str(&line.to_ascii_lowercase());
                }
                seen.push(head);
                (&s).write_all(a.as_bytes()).unwrap();
            }
            seen
        });
        (port, h)
    }

    fn answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A cmdline file and a root whose etc/passwd and etc/group map
    /// "munge" to this process's uid and gid.
    fn setup(port: u16, token: bool) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        // The temporary directory belongs to this process's uid and gid.
        let md = std::fs::metadata(d.path()).unwrap();
        let (uid, gid) = (md.uid(), md.gid());
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            format!("munge:x:{uid}:{gid}::/:/bin/false\n"),
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), format!("munge:x:{gid}:\n")).unwrap();
        let cmdline = d.path().join("cmdline");
        let tok = if token {
            format!(" nodeboot.token={TOKEN}")
        } else {
            String::new()
        };
        std::fs::write(
            &cmdline,
            format!("BOOTIF=01-52-54-00-12-34-56 grendel.address=http://127.0.0.1:{port}/{tok}\n"),
        )
        .unwrap();
        (d, cmdline)
    }

    #[test]
    fn fetches_installs_and_closes() {
        let (port, h) = server(vec![
            answer("200 OK", "MUNGEKEY"),
            answer(
                "403 Forbidden",
                "403 Forbidden: secret \"munge.key\" already fetched with this token (once per boot)\n",
            ),
            answer("204 No Content", ""),
        ]);
        let (d, cmdline) = setup(port, true);
        let dest = d.path().join("etc/munge/munge.key");
        let out = fetch(&cmdline, "munge.key", &dest, 0o400, "munge", None, d.path()).unwrap();
        assert!(out.starts_with("secret munge.key: "), "{out}");
        assert!(!out.contains("MUNGEKEY") && !out.contains(TOKEN), "{out}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"MUNGEKEY");
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o400);
        assert_eq!(md.uid(), std::fs::metadata(d.path()).unwrap().uid());
        // A replay: bootd's reason, naming the URL; the file is left alone.
        let e = fetch(&cmdline, "munge.key", &dest, 0o400, "munge", None, d.path()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "bootd refused secret \"munge.key\" (http://127.0.0.1:{port}/secrets/munge.key?mac=52:54:00:12:34:56): \
                 403 Forbidden: secret \"munge.key\" already fetched with this token (once per boot)"
            )
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"MUNGEKEY");
        done(&cmdline).unwrap();
        let seen = h.join().unwrap();
        assert!(
            seen[0].starts_with("get /secrets/munge.key?mac=52:54:00:12:34:56 http/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains(&format!("authorization: bearer {TOKEN}\r\n")),
            "{}",
            seen[0]
        );
        assert!(
            seen[2].starts_with("delete /secrets?mac=52:54:00:12:34:56 http/1.1\r\n"),
            "{}",
            seen[2]
        );
    }

    /// A server that counts requests and answers them from `script` in
    /// turn (`None`: read the request, close without answering); past the
    /// script it answers as bootd does to a name already used with the token.
    fn counting_server(script: Vec<Option<String>>) -> (u16, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                match script.get(n) {
                    Some(Some(a)) => (&s).write_all(a.as_bytes()).unwrap(),
                    Some(None) => {}
                    None => (&s)
                        .write_all(answer("403 Forbidden", REPLAYED).as_bytes())
                        .unwrap(),
                }
            }
        });
        (port, count)
    }

    const REPLAYED: &str =
        "403 Forbidden: secret \"k\" already fetched with this token (once per boot)\n";

    /// Issue 12: an answer of bootd (any 4xx) is final: one request, and the
    /// error is that answer, never the 403 a retry would get.
    #[test]
    fn a_4xx_answer_is_not_retried() {
        for status in [
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "410 Gone",
            "429 Too Many Requests",
        ] {
            let body = format!("{status}: the first answer\n");
            let (port, count) = counting_server(vec![Some(answer(status, &body))]);
            let (d, cmdline) = setup(port, true);
            let dest = d.path().join("k");
            let e = fetch(&cmdline, "k", &dest, 0o400, "munge", None, d.path()).unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                format!(
                    "bootd refused secret \"k\" (http://127.0.0.1:{port}/secrets/k?mac=52:54:00:12:34:56): \
                     {status}: the first answer"
                )
            );
            assert_eq!(count.load(Ordering::SeqCst), 1, "{status}: retried");
            assert!(!dest.exists());
        }
        // The same for closing the token.
        let (port, count) = counting_server(vec![Some(answer("401 Unauthorized", ""))]);
        let (_d, cmdline) = setup(port, true);
        let e = done(&cmdline).unwrap_err();
        assert!(format!("{e:#}").ends_with("): HTTP 401"), "{e:#}");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    /// A 5xx is retried (bootd did not serve the name), and may succeed.
    #[test]
    fn a_503_is_retried() {
        let (port, count) = counting_server(vec![
            Some(answer(
                "503 Service Unavailable",
                "503 Service Unavailable: busy\n",
            )),
            Some(answer("200 OK", "MUNGEKEY")),
        ]);
        let (d, cmdline) = setup(port, true);
        let dest = d.path().join("k");
        fetch(&cmdline, "k", &dest, 0o400, "munge", None, d.path()).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"MUNGEKEY");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    /// When a retry is refused, the error leads with bootd's first answer
    /// and lists every attempt: the refusal of the retry is not the cause.
    #[test]
    fn the_error_is_the_first_answer_with_every_attempt() {
        let (port, count) = counting_server(vec![Some(answer(
            "503 Service Unavailable",
            "503 Service Unavailable: busy\n",
        ))]);
        let (d, cmdline) = setup(port, true);
        let dest = d.path().join("k");
        let e = fetch(&cmdline, "k", &dest, 0o400, "munge", None, d.path()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "bootd refused secret \"k\" (http://127.0.0.1:{port}/secrets/k?mac=52:54:00:12:34:56): \
                 503 Service Unavailable: busy (attempt 1: 503 Service Unavailable: busy; \
                 attempt 2: {})",
                REPLAYED.trim_end()
            )
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);

        // No answer at all (the connection closed after the request): retried;
        // the refusal that follows says what the first attempt got.
        let (port, count) = counting_server(vec![None]);
        let (d, cmdline) = setup(port, true);
        let e = fetch(&cmdline, "k", &dest, 0o400, "munge", None, d.path()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!(
                "bootd refused secret \"k\" (http://127.0.0.1:{port}/secrets/k?mac=52:54:00:12:34:56): {}",
                REPLAYED.trim_end()
            )) && msg.contains(" (attempt 1: ")
                && msg.ends_with(&format!("; attempt 2: {})", REPLAYED.trim_end())),
            "{msg}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(!dest.exists());
    }

    #[test]
    fn refusals_before_any_request() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (d, cmdline) = setup(port, false);
        let dest = d.path().join("k");
        let e = fetch(&cmdline, "k", &dest, 0o400, "munge", None, d.path()).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("no nodeboot.token= on the kernel command line"),
            "{e:#}"
        );
        let (d, cmdline) = setup(port, true);
        let e = fetch(&cmdline, "k", &dest, 0o400, "mnuge", None, d.path()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "no user \"mnuge\" on this node (/etc/passwd)"
        );
        // Nothing reached the server, nothing was written.
        assert!(l.accept().is_err());
        assert!(!dest.exists());
        assert_eq!(parse_mode("0400"), Ok(0o400));
        assert!(parse_mode("0999").is_err());
        assert_eq!(encode("a b/.."), "a%20b%2F..");
    }

    #[test]
    fn a_missing_secret_is_bootds_reason_and_no_file() {
        let (port, h) = server(vec![answer(
            "404 Not Found",
            "404 Not Found: no secret \"x\" for cn1\n",
        )]);
        let (d, cmdline) = setup(port, true);
        let dest = d.path().join("x");
        let e = fetch(&cmdline, "x", &dest, 0o400, "munge", None, d.path()).unwrap_err();
        assert!(
            format!("{e:#}").ends_with(": 404 Not Found: no secret \"x\" for cn1"),
            "{e:#}"
        );
        assert!(!dest.exists());
        h.join().unwrap();
    }
}
