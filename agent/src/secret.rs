//! `nodectl secret fetch`: one of this host's secrets from bootd, sealed to
//! this node's key.
//!
//! `nodectl secret fetch NAME --dest PATH` loads the node's key (from its
//! key partition, or unsealed by its TPM: [`crate::identity`]), asks
//! `GET {grendel.address}/secrets/NAME` signed by that key (host from
//! `grendel.hostname=`, MAC from `BOOTIF=`), opens the answer (an age file
//! sealed to the key) and installs the bytes at PATH with the requested
//! owner, group and mode (a 0600 temporary file, chowned and chmodded
//! before a byte is written, renamed over PATH).
//!
//! The secret is never printed and is zeroed in memory after use.
//!
//! Retries: transport failures (no answer at all) and 5xx answers are
//! retried, [`ATTEMPTS`] times in all, each with a fresh nonce; an answer
//! below 500 (a 401, 403, 404, …) is final and shown as bootd gave it.
use crate::identity::{Answer, Place, Signer};
use anyhow::{bail, Context, Result};
use nodeboot_identity::NodeKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest sealed answer accepted: bootd serves secrets of at most 1 MiB,
/// which age seals with a few KiB more.
pub const MAX_SEALED: u64 = (1 << 20) + (64 << 10);
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
        /// The kernel command line naming the host, its MAC and bootd.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// Root whose etc/passwd and etc/group name the owner and group.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// An octal mode, `0400` or `400`, at most `07777`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?}: want an octal mode such as 0400")),
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

/// `GET path` signed, retrying transport failures and 5xx answers; the
/// final answer, with what earlier attempts got.
fn get_signed(s: &Signer<'_>, path: &str) -> Result<(Answer, Vec<String>)> {
    let url = format!("{}{path}", s.base);
    let mut wait = FIRST_WAIT;
    let mut earlier: Vec<String> = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let got = match s.send("GET", path, b"", "") {
            Ok(a) if a.status < 500 || attempt == ATTEMPTS => return Ok((a, earlier)),
            Ok(a) => a.reason(),
            Err(e) if retryable(&e) && attempt < ATTEMPTS => e.to_string(),
            Err(e) => {
                let mut what = format!("GET {url}");
                if !earlier.is_empty() {
                    what += &format!(" ({}; attempt {attempt})", earlier.join("; "));
                }
                return Err(anyhow::Error::new(e).context(what));
            }
        };
        tracing::info!("GET {url}: {got}; retrying in {} s", wait.as_secs());
        earlier.push(format!("attempt {attempt}: {got}"));
        std::thread::sleep(wait);
        wait *= 2;
    }
    unreachable!("the last attempt returns")
}

/// Fetch secret `name` with `key` and install it at `dest`; returns what
/// was done.
#[allow(clippy::too_many_arguments)]
pub fn fetch_with(
    key: &NodeKey,
    cmdline: &Path,
    name: &str,
    dest: &Path,
    mode: u32,
    owner: &str,
    group: Option<&str>,
    root: &Path,
) -> Result<String> {
    let ids = crate::nodetoml::Ids::read(root)?;
    let uid = ids.user(owner)?;
    let gid = ids.group(group.unwrap_or(owner))?;
    let s = Signer::from_cmdline(key, cmdline)?;
    let path = format!("/secrets/{}", encode(name));
    let url = format!("{}{path}", s.base);
    let (a, earlier) = get_signed(&s, &path)?;
    if a.status != 200 {
        let mut why = a.reason();
        if !earlier.is_empty() {
            why += &format!(" ({}; attempt {})", earlier.join("; "), earlier.len() + 1);
        }
        bail!("bootd refused secret {name:?} ({url}): {why}");
    }
    let plain = key.open(&a.body).map_err(|e| {
        anyhow::anyhow!(
            "the answer of {url} is not sealed to this node's key {}: {e}",
            key.public().fingerprint()
        )
    })?;
    crate::nodetoml::install_bytes(&plain, dest, uid, gid, mode).map(|shown| {
        format!(
            "secret {name}: {shown}, {} bytes (sealed to this node's key)",
            plain.len()
        )
    })
}

/// Fetch secret `name` with the node's key from `place`.
#[allow(clippy::too_many_arguments)]
pub fn fetch(
    place: &Place,
    cmdline: &Path,
    name: &str,
    dest: &Path,
    mode: u32,
    owner: &str,
    group: Option<&str>,
    root: &Path,
) -> Result<String> {
    // Check the owner before touching the key partition: a typo costs nothing.
    let ids = crate::nodetoml::Ids::read(root)?;
    ids.user(owner)?;
    ids.group(group.unwrap_or(owner))?;
    let l = crate::identity::load(place).context("loading this node's key")?;
    fetch_with(&l.key, cmdline, name, dest, mode, owner, group, root)
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
            let place = Place::from_cmdline(&cmdline);
            let done = fetch(
                &place,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const NONCE: &str = "bm9uY2Utbm9uY2Utbm9uY2Utbm9uY2Utbm9uY2Utbm9uY2Utbm9uY2U";

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        v
    }

    /// A server answering every GET /identity/nonce with NONCE and the
    /// other requests from `script` in turn (`None`: close without an
    /// answer; past the script: 404). Returns the port, the count of
    /// non-nonce requests and their heads (request line + headers).
    fn server(script: Vec<Option<Vec<u8>>>) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (count.clone(), heads.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                if head.starts_with("GET /identity/nonce ") {
                    (&s).write_all(&answer("200 OK", NONCE.as_bytes())).unwrap();
                    continue;
                }
                h.lock().unwrap().push(head);
                let n = c.fetch_add(1, Ordering::SeqCst);
                match script.get(n) {
                    Some(Some(a)) => (&s).write_all(a).unwrap(),
                    Some(None) => {}
                    None => (&s).write_all(&answer("404 Not Found", b"")).unwrap(),
                }
                let _ = (&s).read(&mut [0u8; 1]);
            }
        });
        (port, count, heads)
    }

    /// A cmdline file and a root whose etc/passwd and etc/group map
    /// "munge" to this process's uid and gid.
    fn setup(port: u16) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
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
        std::fs::write(
            &cmdline,
            format!(
                "BOOTIF=01-52-54-00-12-34-56 grendel.hostname=cn1 grendel.address=http://127.0.0.1:{port}/\n"
            ),
        )
        .unwrap();
        (d, cmdline)
    }

    fn key(n: u8) -> NodeKey {
        NodeKey::from_seed(&[n; 32])
    }

    #[test]
    fn fetches_signed_opens_and_installs() {
        let k = key(1);
        let sealed = k.public().seal(b"MUNGEKEY").unwrap();
        let (port, count, heads) = server(vec![Some(answer("200 OK", &sealed))]);
        let (d, cmdline) = setup(port);
        let dest = d.path().join("etc/munge/munge.key");
        let out = fetch_with(
            &k,
            &cmdline,
            "munge.key",
            &dest,
            0o400,
            "munge",
            None,
            d.path(),
        )
        .unwrap();
        assert!(out.starts_with("secret munge.key: "), "{out}");
        assert!(!out.contains("MUNGEKEY"), "{out}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"MUNGEKEY");
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o400);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // The request was signed by cn1's key for this very target.
        let head = heads.lock().unwrap()[0].clone();
        assert!(
            head.starts_with("GET /secrets/munge.key HTTP/1.1\r\n"),
            "{head}"
        );
        let auth = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("authorization: ")
                    .or_else(|| l.strip_prefix("Authorization: "))
            })
            .expect("an Authorization header");
        let a = nodeboot_identity::Auth::parse(auth).unwrap();
        assert_eq!(
            (a.host.as_str(), a.mac.as_str(), a.nonce.as_str()),
            ("cn1", "52:54:00:12:34:56", NONCE)
        );
        a.verify(&k.public(), "GET", "/secrets/munge.key", b"")
            .unwrap();
    }

    #[test]
    fn an_answer_sealed_to_another_key_installs_nothing() {
        let sealed = key(2).public().seal(b"MUNGEKEY").unwrap();
        for body in [sealed, b"MUNGEKEY".to_vec()] {
            let (port, _, _) = server(vec![Some(answer("200 OK", &body))]);
            let (d, cmdline) = setup(port);
            let dest = d.path().join("k");
            let e = fetch_with(
                &key(1),
                &cmdline,
                "k",
                &dest,
                0o400,
                "munge",
                None,
                d.path(),
            )
            .unwrap_err();
            let m = format!("{e:#}");
            assert!(
                m.starts_with(&format!("the answer of http://127.0.0.1:{port}/secrets/k is not sealed to this node's key SHA256:")),
                "{m}"
            );
            assert!(!dest.exists());
        }
    }

    /// An answer of bootd below 500 is final: one request, shown as it is.
    #[test]
    fn a_4xx_answer_is_not_retried() {
        for status in [
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
        ] {
            let body = format!("{status}: the first answer\n");
            let (port, count, _) = server(vec![Some(answer(status, body.as_bytes()))]);
            let (d, cmdline) = setup(port);
            let dest = d.path().join("k");
            let e = fetch_with(
                &key(1),
                &cmdline,
                "k",
                &dest,
                0o400,
                "munge",
                None,
                d.path(),
            )
            .unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                format!("bootd refused secret \"k\" (http://127.0.0.1:{port}/secrets/k): {status}: the first answer")
            );
            assert_eq!(count.load(Ordering::SeqCst), 1, "{status}: retried");
            assert!(!dest.exists());
        }
    }

    /// A 5xx, or no answer, is retried with a fresh signature.
    #[test]
    fn a_503_and_no_answer_are_retried() {
        let sealed = key(1).public().seal(b"K").unwrap();
        let (port, count, _) = server(vec![
            Some(answer(
                "503 Service Unavailable",
                b"503 Service Unavailable: busy\n",
            )),
            None,
            Some(answer("200 OK", &sealed)),
        ]);
        let (d, cmdline) = setup(port);
        let dest = d.path().join("k");
        fetch_with(
            &key(1),
            &cmdline,
            "k",
            &dest,
            0o400,
            "munge",
            None,
            d.path(),
        )
        .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"K");
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn refusals_before_any_request() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (d, cmdline) = setup(port);
        let dest = d.path().join("k");
        let e = fetch_with(
            &key(1),
            &cmdline,
            "k",
            &dest,
            0o400,
            "mnuge",
            None,
            d.path(),
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "no user \"mnuge\" on this node (/etc/passwd)"
        );
        std::fs::write(
            &cmdline,
            format!("grendel.address=http://127.0.0.1:{port}/ BOOTIF=01-52-54-00-12-34-56\n"),
        )
        .unwrap();
        let e = fetch_with(
            &key(1),
            &cmdline,
            "k",
            &dest,
            0o400,
            "munge",
            None,
            d.path(),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").starts_with("no grendel.hostname= in "),
            "{e:#}"
        );
        assert!(l.accept().is_err());
        assert!(!dest.exists());
        assert_eq!(parse_mode("0400"), Ok(0o400));
        assert!(parse_mode("0999").is_err());
        assert_eq!(encode("a b/.."), "a%20b%2F..");
    }
}
