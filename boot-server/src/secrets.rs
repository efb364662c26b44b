//! Per-host secrets, sealed to each node's key, and the boot tokens.
//!
//! `bootd serve --secrets DIR` keeps each host's secrets as files
//! `DIR/<host>/<name>` (`secrets/cn1/munge.key`). A node asks for one with
//! a request signed by its identity key ([`crate::identity`]):
//!
//! ```text
//! GET /secrets/<name>
//! Authorization: Nodeboot host=cn1,mac=…,time=…,nonce=…,sig=…
//! ```
//!
//! and gets the file encrypted to its public key (an age file, recipient
//! type `mlkem768x25519`): the wire and bootd's answers carry ciphertext
//! only, and a captured answer opens with cn1's key alone. The name is one
//! file name (`[A-Za-z0-9._-]`, not starting with `.`, at most 128 bytes)
//! after percent-decoding (`/`, `..`, `%2e%2e`, NUL: 404 before anything
//! else), and must resolve (symlinks followed) to a regular file inside
//! `DIR/<host>/`, else 404. A secret's bytes are never logged.
//!
//! Boot tokens: when bootd renders the iPXE script of a `provision = true`
//! host it mints a token (32 random bytes, 64 hex digits) bound to that
//! host and MAC and puts it on the kernel command line (`nodeboot.token=`).
//! Anyone can GET a script, so a token is no credential: it releases no
//! secret. It only binds the status reports of a host that has no identity
//! key yet to its latest boot (a host with a key must sign its reports).
//! Tokens live in memory as their sha256; one host has one live token (a
//! new script supersedes the previous one); logs show 8 hex digits of the
//! sha256, never the token.
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// URL prefix of the secrets (`GET /secrets/munge.key`).
pub const PREFIX: &str = "/secrets/";
/// Default lifetime of a token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Largest secret file served.
pub const MAX_SECRET: u64 = 1 << 20;
/// Longest secret name, in bytes.
const MAX_NAME: usize = 128;

/// Why a secret request or a token is refused. The client gets
/// [`status`](Self::status) and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("bad secret name: one file name of [A-Za-z0-9._-], not starting with '.'")]
    BadName,
    #[error("no token: send Authorization: Bearer <nodeboot.token from the kernel command line>")]
    NoToken,
    #[error("unknown token (bootd restarted, or never minted it): reboot the node for a new one")]
    Unknown,
    #[error("token superseded by a newer iPXE script for {0}")]
    Superseded(String),
    #[error("token was minted for another MAC")]
    WrongMac,
    #[error("token was minted for another host")]
    WrongHost,
    #[error("no secret {name:?} for {host}")]
    Missing { host: String, name: String },
}

impl Denied {
    pub fn status(&self) -> u16 {
        match self {
            Denied::BadName | Denied::Missing { .. } => 404,
            Denied::NoToken => 401,
            _ => 403,
        }
    }
}

/// What one token grants.
#[derive(Debug)]
struct Grant {
    host: String,
    mac: String,
    expires: Instant,
    /// Why the token no longer binds anything, if it does not.
    ended: Option<Denied>,
}

/// The secrets directory and the live tokens.
#[derive(Debug)]
pub struct Secrets {
    dir: PathBuf,
    ttl: Duration,
    /// sha256(token) → grant.
    grants: Mutex<HashMap<[u8; 32], Grant>>,
}

/// A secret read for a node.
pub struct Secret {
    pub name: String,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The id logs use for a token: 8 hex digits of its sha256.
pub fn token_id(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..4])
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parse `900`, `900s`, `15m`, `2h` (at least one second).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: want a number of seconds, or 15m, 2h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    match n.checked_mul(mult) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?}: must be at least 1s")),
    }
}

/// Whether `name` (decoded) is a single, plain file name.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name[0] != b'.'
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, tok) = header?.trim().split_once(' ')?;
    let tok = tok.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !tok.is_empty()).then_some(tok)
}

/// A request target with the value of any `token=` query parameter
/// replaced, for logs.
pub fn redact(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    if !query
        .split('&')
        .any(|kv| kv.split('=').next() == Some("token"))
    {
        return target.into();
    }
    let q: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_string(),
            _ => kv.to_string(),
        })
        .collect();
    format!("{path}?{}", q.join("&")).into()
}

impl Secrets {
    /// Check `dir` and open it. Refused: not a directory, readable or
    /// searchable by group or others (mode & 077), or overlapping one of
    /// the `served` trees (inside it, or containing it), whose files anyone
    /// may GET.
    pub fn new(dir: &Path, ttl: Duration, served: &[(&str, &Path)]) -> Result<Secrets> {
        let canon = dir
            .canonicalize()
            .with_context(|| format!("--secrets {}", dir.display()))?;
        let meta =
            std::fs::metadata(&canon).with_context(|| format!("--secrets {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("--secrets {}: not a directory", dir.display());
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            bail!(
                "--secrets {}: mode {mode:04o} lets other users read the hosts' secrets; \
                 chmod 700 {}",
                dir.display(),
                canon.display()
            );
        }
        for (opt, tree) in served {
            let t = tree
                .canonicalize()
                .with_context(|| format!("{opt} {}", tree.display()))?;
            if canon.starts_with(&t) || t.starts_with(&canon) {
                bail!(
                    "--secrets {} overlaps {opt} {} (both are {} and {}): \
                     the secrets must live outside every served tree",
                    dir.display(),
                    tree.display(),
                    canon.display(),
                    t.display()
                );
            }
        }
        Ok(Secrets {
            dir: canon,
            ttl,
            grants: Mutex::new(HashMap::new()),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Grant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new token for `host` booting from `mac` (normalised), valid for the
    /// TTL. The host's previous token, if any, is superseded.
    /// The `nodeboot.token=…` word of the boot config (iPXE script, GRUB
    /// config) for `mac`: a fresh token when its host boots from the network,
    /// nothing otherwise. Without `mint` (a HEAD) a placeholder of the same
    /// length, superseding no token. On error: the host's name and why.
    pub fn token_word(
        &self,
        inv: &crate::inventory::Inventory,
        mac: &str,
        mint: bool,
    ) -> std::result::Result<String, (String, anyhow::Error)> {
        let Some((host, nic)) = inv.by_mac(mac).filter(|(h, _)| h.provision) else {
            return Ok(String::new());
        };
        if !mint {
            return Ok(format!("nodeboot.token={}", "0".repeat(64)));
        }
        self.mint(&host.name, nic.mac.as_deref().unwrap_or_default())
            .map(|t| format!("nodeboot.token={t}"))
            .map_err(|e| (host.name.clone(), e))
    }

    pub fn mint(&self, host: &str, mac: &str) -> Result<String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw[..]))
            .context("reading /dev/urandom for a token")?;
        let token = hex::encode(&raw[..]);
        let now = Instant::now();
        let mut g = self.lock();
        // Keep at most the live token and one superseded one per host (for
        // the 403's message), and drop grants long expired.
        g.retain(|_, v| {
            let stale = now.saturating_duration_since(v.expires) > self.ttl;
            let old = v.host == host && v.ended.is_some();
            !(stale || old)
        });
        for v in g.values_mut().filter(|v| v.host == host) {
            v.ended.get_or_insert(Denied::Superseded(host.to_string()));
        }
        g.insert(
            digest(&token),
            Grant {
                host: host.to_string(),
                mac: mac.to_string(),
                expires: now + self.ttl,
                ended: None,
            },
        );
        drop(g);
        crate::metrics::global().token_minted();
        tracing::info!(
            "token {} minted for {host} ({mac}), valid {} s",
            token_id(&token),
            self.ttl.as_secs()
        );
        Ok(token)
    }

    /// `DIR/<host>/<rest>` (`rest` still percent-encoded), for a request
    /// already verified as `host`'s.
    pub fn fetch(&self, rest: &str, host: &str) -> Result<Secret, Denied> {
        let name = crate::http::percent_decode(rest)
            .filter(|n| valid_name(n))
            .and_then(|n| String::from_utf8(n).ok())
            .ok_or(Denied::BadName)?;
        let bytes = self.read(host, &name)?;
        Ok(Secret { name, bytes })
    }

    /// A status report carrying a token: the token must be one bootd
    /// minted and not superseded, for this hostname and (when given) MAC.
    /// Expiry and closing end the secrets, not the node's identity.
    pub fn verify_status(
        &self,
        auth: Option<&str>,
        hostname: &str,
        mac: Option<&str>,
    ) -> Result<(), Denied> {
        let token = bearer(auth).ok_or(Denied::NoToken)?;
        let g = self.lock();
        let grant = g.get(&digest(token)).ok_or(Denied::Unknown)?;
        if let Some(e @ Denied::Superseded(_)) = &grant.ended {
            return Err(e.clone());
        }
        if grant.host != hostname {
            return Err(Denied::WrongHost);
        }
        if mac.is_some_and(|m| m != grant.mac) {
            return Err(Denied::WrongMac);
        }
        Ok(())
    }

    /// Read `DIR/<host>/<name>`: the host directory must be a direct child
    /// of DIR and the file must resolve inside it and be regular.
    fn read(&self, host: &str, name: &str) -> Result<Zeroizing<Vec<u8>>, Denied> {
        let missing = || Denied::Missing {
            host: host.to_string(),
            name: name.to_string(),
        };
        if host.starts_with('.') || host.contains('/') {
            return Err(missing());
        }
        let host_dir = self.dir.join(host).canonicalize().map_err(|_| missing())?;
        if host_dir.parent() != Some(self.dir.as_path()) {
            tracing::warn!("secrets: {host}'s directory resolves outside the secrets directory");
            return Err(missing());
        }
        let path = crate::files::resolve(&host_dir, name.as_bytes()).map_err(|why| {
            tracing::debug!("secret {host}/{name}: {why}");
            missing()
        })?;
        let f = std::fs::File::open(&path).map_err(|_| missing())?;
        let meta = f.metadata().map_err(|_| missing())?;
        if !meta.is_file() {
            return Err(missing());
        }
        if meta.len() > MAX_SECRET {
            tracing::error!(
                "secret {}: {} bytes, larger than the {MAX_SECRET} served",
                path.display(),
                meta.len()
            );
            return Err(missing());
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        f.take(MAX_SECRET)
            .read_to_end(&mut bytes)
            .map_err(|_| missing())?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const MAC: &str = "52:54:00:12:34:56";

    struct Fx {
        d: tempfile::TempDir,
        s: Secrets,
    }

    /// secrets/cn1/{munge.key, deploy_key, in -> munge.key, out -> ../../outside,
    /// sub/x}, secrets/cn2/munge.key, outside; www served.
    fn fx(ttl: Duration) -> Fx {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("secrets");
        std::fs::create_dir_all(s.join("cn1/sub")).unwrap();
        std::fs::create_dir_all(s.join("cn2")).unwrap();
        std::fs::create_dir_all(d.path().join("www")).unwrap();
        std::fs::write(s.join("cn1/munge.key"), "MUNGE1").unwrap();
        std::fs::write(s.join("cn1/deploy_key"), "DEPLOY1").unwrap();
        std::fs::write(s.join("cn1/sub/x"), "X").unwrap();
        std::fs::write(s.join("cn2/munge.key"), "MUNGE2").unwrap();
        std::fs::write(d.path().join("outside"), "OUTSIDE").unwrap();
        symlink("munge.key", s.join("cn1/in")).unwrap();
        symlink("../../outside", s.join("cn1/out")).unwrap();
        symlink("../cn2/munge.key", s.join("cn1/other")).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
        let www = d.path().join("www");
        let s = Secrets::new(&s, ttl, &[("--root", &www)]).unwrap();
        Fx { d, s }
    }

    fn bearer_of(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn fetch_reads_inside_the_hosts_directory() {
        let f = fx(DEFAULT_TTL);
        let get = |name: &str| f.s.fetch(name, "cn1");
        assert_eq!(&get("munge.key").unwrap().bytes[..], b"MUNGE1");
        assert_eq!(&get("deploy_key").unwrap().bytes[..], b"DEPLOY1");
        assert_eq!(&f.s.fetch("munge.key", "cn2").unwrap().bytes[..], b"MUNGE2");
        // A symlink staying inside the host's directory is followed.
        assert_eq!(&get("in").unwrap().bytes[..], b"MUNGE1");
        for bad in [
            "..",
            "%2e%2e",
            "%2E%2E",
            "..%2fcn2%2fmunge.key",
            "%2e%2e%2fcn2%2fmunge.key",
            "../cn2/munge.key",
            "sub/x",
            "sub%2fx",
            "%2fetc%2fpasswd",
            "/etc/passwd",
            ".hidden",
            "munge.key%00",
            "a%zz",
            "",
            "a b",
        ] {
            assert_eq!(get(bad).err(), Some(Denied::BadName), "{bad}");
        }
        let missing = |n: &str| Denied::Missing {
            host: "cn1".into(),
            name: n.into(),
        };
        // Symlinks out of DIR/cn1/ (to the parent, to another host).
        assert_eq!(get("out").err(), Some(missing("out")));
        assert_eq!(get("other").err(), Some(missing("other")));
        assert_eq!(get("sub").err(), Some(missing("sub")));
        assert_eq!(get("nope").err().unwrap().status(), 404);
        assert!(f.s.fetch("munge.key", "../cn2").is_err());
    }

    #[test]
    fn supersession() {
        let f = fx(DEFAULT_TTL);
        let old = f.s.mint("cn1", MAC).unwrap();
        let new = f.s.mint("cn1", MAC).unwrap();
        assert_ne!(old, new);
        assert_eq!(
            f.s.verify_status(Some(&bearer_of(&old)), "cn1", Some(MAC)),
            Err(Denied::Superseded("cn1".into()))
        );
        assert_eq!(
            f.s.verify_status(Some(&bearer_of(&new)), "cn1", Some(MAC)),
            Ok(())
        );
        let statuses: Vec<u16> = [
            Denied::BadName,
            Denied::NoToken,
            Denied::Unknown,
            Denied::WrongMac,
        ]
        .iter()
        .map(Denied::status)
        .collect();
        assert_eq!(statuses, [404, 401, 403, 403]);
    }

    #[test]
    fn status_binding() {
        let f = fx(Duration::from_millis(100));
        let t = f.s.mint("cn1", MAC).unwrap();
        let a = bearer_of(&t);
        assert_eq!(f.s.verify_status(Some(&a), "cn1", Some(MAC)), Ok(()));
        assert_eq!(f.s.verify_status(Some(&a), "cn1", None), Ok(()));
        assert_eq!(
            f.s.verify_status(Some(&a), "cn2", None),
            Err(Denied::WrongHost)
        );
        assert_eq!(
            f.s.verify_status(Some(&a), "cn1", Some("52:54:00:12:34:57")),
            Err(Denied::WrongMac)
        );
        assert_eq!(
            f.s.verify_status(Some("Bearer nope"), "cn1", None),
            Err(Denied::Unknown)
        );
        // Expired still names the node.
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(f.s.verify_status(Some(&a), "cn1", Some(MAC)), Ok(()));
    }

    #[test]
    fn directory_refusals() {
        let f = fx(DEFAULT_TTL);
        let s = f.d.path().join("secrets");
        let www = f.d.path().join("www");
        // Group- or world-readable.
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = Secrets::new(&s, DEFAULT_TTL, &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("mode 0750 lets other users read"),
            "{e:#}"
        );
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Inside a served tree (through a symlink, too), or containing one.
        let inside = www.join("keys");
        std::fs::create_dir(&inside).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o700)).unwrap();
        symlink(&inside, f.d.path().join("link")).unwrap();
        for (dir, tree) in [
            (inside.clone(), www.clone()),
            (f.d.path().join("link"), www.clone()),
            (s.clone(), s.join("cn1")),
        ] {
            let e = Secrets::new(&dir, DEFAULT_TTL, &[("--repo", &tree)]).unwrap_err();
            let m = format!("{e:#}");
            assert!(m.contains("overlaps --repo"), "{m}");
            assert!(m.contains("outside every served tree"), "{m}");
        }
        let e = Secrets::new(&f.d.path().join("nope"), DEFAULT_TTL, &[]).unwrap_err();
        assert!(format!("{e:#}").starts_with("--secrets "), "{e:#}");
    }

    #[test]
    fn ttl_and_helpers() {
        assert_eq!(parse_ttl("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_ttl("0").unwrap_err().contains("at least 1s"));
        assert!(parse_ttl("5d").unwrap_err().contains("unit must be"));
        assert!(parse_ttl("m").unwrap_err().contains("want a number"));
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
        assert_eq!(
            redact("/secrets/k?mac=1&token=abc&x"),
            "/secrets/k?mac=1&token=REDACTED&x"
        );
        assert_eq!(redact("/secrets/k?mac=1"), "/secrets/k?mac=1");
        assert_eq!(token_id("abc").len(), 8);
    }
}
