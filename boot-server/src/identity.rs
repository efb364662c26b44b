//! Node identity: each host's public key, enrollment armed once, nonces,
//! and the check of signed requests (issue 13).
//!
//! A node holds a key (`nodeboot_identity::NodeKey`: on its key partition,
//! or sealed in its TPM). bootd knows each host's public key from its state
//! directory (`--state DIR`: `DIR/keys/<host>.pub`, written at enrollment)
//! and may pin it in the inventory (`key = "SHA256:…"`, the fingerprint
//! `nodectl identity show` prints). Everything a node does on its own
//! behalf — fetch a secret, post its status — is a request signed by that
//! key (`Authorization: Nodeboot host=,mac=,time=,nonce=,sig=`):
//!
//! - the host is in the inventory, the MAC is one of its interfaces;
//! - bootd has a key for the host (else 401: enroll first);
//! - the time is within [`SKEW`] of bootd's clock;
//! - the nonce is one bootd issued (`GET /identity/nonce`: an HMAC under a
//!   key bootd draws at start over its issue time and 16 random bytes;
//!   stateless, so anonymous clients cannot make bootd hold anything) and is
//!   at most [`NONCE_TTL`] old;
//! - the Ed25519 signature covers method, target, host, MAC, time, nonce and
//!   the SHA-256 of the body;
//! - the nonce was not used before (a verified request of an enrolled key,
//!   or an accepted enrollment, spends it; spent nonces are kept until they
//!   expire, by bootd's clock like their issue time, at most [`MAX_SPENT`]).
//!
//! A host pinned in the inventory (`key = "SHA256:…"`) is refused with any
//! other key, even one enrolled before the pin was written.
//!
//! Enrollment (`POST /identity/enroll`, body: the public key line, signed
//! by that key) is accepted when the key is the host's already (no change),
//! when its fingerprint is the inventory's pin, or when the host is armed:
//! by `bootd arm HOST` (admin API, for a limited time; may replace a key,
//! for a re-imaged disk) or by `enroll = true` in the inventory (only while
//! bootd knows no key for the host: trust on first use). Exactly one key is
//! accepted (decision, write and swap under one lock), then the host is
//! disarmed — also when the node presents the key bootd already has. Every
//! enrollment and refusal is logged with host, MAC and address.
use hmac::{Hmac, Mac};
use nodeboot_identity::{Auth, PublicKey};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

use crate::inventory::{Host, Inventory};

/// How far a request's time may be from bootd's clock.
pub const SKEW: Duration = Duration::from_secs(300);
/// How long a nonce is good for.
pub const NONCE_TTL: Duration = Duration::from_secs(120);
/// Spent nonces kept at most (each is a verified request of an enrolled
/// key, or an accepted enrollment).
pub const MAX_SPENT: usize = 100_000;
/// Default time a `bootd arm` lasts.
pub const DEFAULT_ARM: Duration = Duration::from_secs(30 * 60);
/// The nonce endpoint.
pub const NONCE_PATH: &str = "/identity/nonce";
/// The enrollment endpoint.
pub const ENROLL_PATH: &str = "/identity/enroll";
/// Largest enrollment body (a public key line).
pub const MAX_ENROLL_BODY: usize = nodeboot_identity::MAX_PUBLIC;

/// Why a signed request or an enrollment is refused; the message names
/// what was refused and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this request must be signed by the node's key (Authorization: Nodeboot …)")]
    Unsigned,
    #[error("{0}")]
    BadHeader(String),
    #[error("host {0:?} is not in the inventory")]
    UnknownHost(String),
    #[error("MAC {mac} is not an interface of {host} in the inventory")]
    WrongMac { host: String, mac: String },
    #[error("bootd knows no key for {0}: the node must enroll first (while armed: bootd arm {0})")]
    NoKey(String),
    #[error(
        "the request's time is {0} s off bootd's clock (more than 300 s): check the node's clock"
    )]
    Skew(i64),
    #[error("the nonce was not issued by this bootd (or bootd restarted): ask GET /identity/nonce again")]
    BadNonce,
    #[error("the nonce expired {0} s ago: ask GET /identity/nonce again")]
    OldNonce(u64),
    #[error("the nonce was already used: a replayed request")]
    Replayed,
    #[error(
        "the signature does not verify with {host}'s key {fingerprint}: signed by another key, or for another request"
    )]
    BadSignature { host: String, fingerprint: String },
    #[error("{host}'s key {fingerprint} is not the one pinned in the inventory ({pin}): refused until an admin arms {host} for the pinned key")]
    PinMismatch {
        host: String,
        fingerprint: String,
        pin: String,
    },
    #[error("bootd cannot draw a nonce: {0}")]
    Random(String),
    #[error("the request is for {asked} but signed as {signed}")]
    OtherHost { asked: String, signed: String },
    #[error("the enrollment body is not a public key: {0}")]
    BadKey(String),
    #[error("{host} is not armed for enrollment (an admin runs: bootd arm {host}); key {fingerprint} refused")]
    NotArmed { host: String, fingerprint: String },
    #[error("{host} already has key {current}: key {fingerprint} refused (an admin runs bootd arm {host} to replace it)")]
    HasKey {
        host: String,
        current: String,
        fingerprint: String,
    },
    #[error("key {fingerprint} is not the key pinned for {host} in the inventory ({pin})")]
    NotPinned {
        host: String,
        fingerprint: String,
        pin: String,
    },
    #[error("too many requests in flight: try again in a minute")]
    Busy,
    #[error("writing {0}'s key to the state directory failed")]
    Store(String),
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::Unsigned | Refused::NoKey(_) => 401,
            Refused::BadHeader(_) | Refused::BadKey(_) => 400,
            Refused::Busy | Refused::Random(_) => 503,
            Refused::Store(_) => 500,
            _ => 403,
        }
    }
}

/// What a verified request proved.
#[derive(Debug, Clone)]
pub struct Verified {
    pub host: String,
    pub mac: String,
    pub fingerprint: String,
    /// The key the request verified with.
    pub key: PublicKey,
}

/// What an enrollment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    /// The key was new for the host; `replaced`: the one it had before.
    New {
        fingerprint: String,
        replaced: Option<String>,
        how: &'static str,
    },
    /// The host had this key already.
    Same { fingerprint: String },
}

/// The keys, the armed hosts, the nonce key and the spent nonces.
pub struct Identities {
    state: Option<PathBuf>,
    keys: Mutex<HashMap<String, PublicKey>>,
    /// Host → armed until (by `bootd arm`).
    armed: Mutex<HashMap<String, Instant>>,
    nonce_key: Zeroizing<[u8; 32]>,
    /// Nonce → when it can be forgotten (Unix seconds, bootd's clock: the
    /// clock of the nonce's issue time).
    spent: Mutex<HashMap<String, u64>>,
    /// Held across an enrollment's decision, write and swap.
    enrolling: Mutex<()>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Identities {
    /// Keys from `state/keys/*.pub` (the directory is made, mode 0700).
    /// Without a state directory, enrolled keys live in memory only.
    pub fn new(state: Option<&Path>) -> anyhow::Result<Identities> {
        use anyhow::Context;
        let mut nonce_key = Zeroizing::new([0u8; 32]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut nonce_key[..]))
            .context("reading /dev/urandom for the nonce key")?;
        let mut keys = HashMap::new();
        if let Some(dir) = state {
            let kd = dir.join("keys");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&kd)
                .with_context(|| format!("--state {}: making {}", dir.display(), kd.display()))?;
            let md =
                std::fs::metadata(dir).with_context(|| format!("--state {}", dir.display()))?;
            if md.permissions().mode() & 0o022 != 0 {
                anyhow::bail!(
                    "--state {}: mode {:04o} lets other users replace the nodes' keys; chmod 700 it",
                    dir.display(),
                    md.permissions().mode() & 0o7777
                );
            }
            for e in std::fs::read_dir(&kd).with_context(|| format!("reading {}", kd.display()))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(host) = name.strip_suffix(".pub") else {
                    continue;
                };
                let mut text = String::new();
                std::fs::File::open(e.path())
                    .and_then(|f| {
                        f.take(nodeboot_identity::MAX_PUBLIC as u64 + 1)
                            .read_to_string(&mut text)
                    })
                    .with_context(|| format!("reading {}", e.path().display()))?;
                let k = PublicKey::from_str(text.trim())
                    .with_context(|| format!("{}", e.path().display()))?;
                keys.insert(host.to_string(), k);
            }
            tracing::info!("{} node keys from {}", keys.len(), kd.display());
        }
        Ok(Identities {
            state: state.map(Path::to_path_buf),
            keys: Mutex::new(keys),
            armed: Mutex::new(HashMap::new()),
            nonce_key,
            spent: Mutex::new(HashMap::new()),
            enrolling: Mutex::new(()),
        })
    }

    /// The key bootd knows for `host`.
    pub fn key(&self, host: &str) -> Option<PublicKey> {
        lock(&self.keys).get(host).cloned()
    }

    /// Whether bootd knows a key for `host`.
    pub fn has_key(&self, host: &str) -> bool {
        lock(&self.keys).contains_key(host)
    }

    /// Arm `host` for one enrollment during `for_`.
    pub fn arm(&self, host: &str, for_: Duration) {
        lock(&self.armed).insert(host.to_string(), Instant::now() + for_);
    }

    fn armed_by_admin(&self, host: &str) -> bool {
        let mut a = lock(&self.armed);
        let now = Instant::now();
        a.retain(|_, until| *until > now);
        a.contains_key(host)
    }

    fn disarm(&self, host: &str) -> bool {
        lock(&self.armed).remove(host).is_some()
    }

    fn mac_of(&self, key: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        m.update(b"nodeboot nonce v1");
        m
    }

    /// A fresh nonce: base64url(issue time ‖ 16 random bytes ‖ HMAC[..16]).
    pub fn nonce(&self) -> Result<String, Refused> {
        self.nonce_at(now_unix())
    }

    fn nonce_at(&self, issued: u64) -> Result<String, Refused> {
        let mut raw = [0u8; 40];
        raw[..8].copy_from_slice(&issued.to_be_bytes());
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw[8..24]))
            .map_err(|e| Refused::Random(e.to_string()))?;
        let mut m = self.mac_of(&self.nonce_key[..]);
        m.update(&raw[..24]);
        raw[24..].copy_from_slice(&m.finalize().into_bytes()[..16]);
        use base64::Engine;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// A nonce this bootd issued, still good: its issue time.
    fn check_nonce(&self, nonce: &str) -> Result<u64, Refused> {
        use base64::Engine;
        let mut raw = [0u8; 40];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(40) if nonce.len() == 54 => {}
            _ => return Err(Refused::BadNonce),
        }
        let mut m = self.mac_of(&self.nonce_key[..]);
        m.update(&raw[..24]);
        m.verify_truncated_left(&raw[24..])
            .map_err(|_| Refused::BadNonce)?;
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let age = now_unix().saturating_sub(issued);
        if age > NONCE_TTL.as_secs() {
            return Err(Refused::OldNonce(age - NONCE_TTL.as_secs()));
        }
        Ok(issued)
    }

    /// Spend `nonce`, issued at `issued` (after its request verified).
    fn spend(&self, nonce: &str, issued: u64) -> Result<(), Refused> {
        let mut s = lock(&self.spent);
        if s.len() >= MAX_SPENT / 2 {
            // Forgotten once check_nonce refuses them anyway (same clock).
            let now = now_unix();
            s.retain(|_, until| *until >= now);
        }
        if s.contains_key(nonce) {
            return Err(Refused::Replayed);
        }
        if s.len() >= MAX_SPENT {
            return Err(Refused::Busy);
        }
        s.insert(
            nonce.to_string(),
            issued.saturating_add(NONCE_TTL.as_secs() + 1),
        );
        Ok(())
    }

    /// The checks common to signed requests and enrollments, up to (not
    /// including) the signature: header, host, MAC, time, nonce.
    fn precheck<'a>(
        &self,
        auth: Option<&str>,
        inv: &'a Inventory,
    ) -> Result<(Auth, &'a Host, u64), Refused> {
        let value = auth.filter(|v| Auth::is_ours(v)).ok_or(Refused::Unsigned)?;
        let a = Auth::parse(value).map_err(|e| Refused::BadHeader(e.to_string()))?;
        let host = inv
            .hosts
            .iter()
            .find(|h| h.name == a.host)
            .ok_or_else(|| Refused::UnknownHost(a.host.clone()))?;
        if !host
            .interfaces
            .iter()
            .any(|n| n.mac.as_deref() == Some(a.mac.as_str()))
        {
            return Err(Refused::WrongMac {
                host: a.host.clone(),
                mac: a.mac.clone(),
            });
        }
        let skew = a.time as i128 - now_unix() as i128;
        if skew.unsigned_abs() > SKEW.as_secs() as u128 {
            return Err(Refused::Skew(
                skew.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            ));
        }
        let issued = self.check_nonce(&a.nonce)?;
        Ok((a, host, issued))
    }

    /// The key bootd holds for `host`, refused when the inventory pins
    /// another one.
    fn key_for(&self, host: &Host) -> Result<PublicKey, Refused> {
        let key = self
            .key(&host.name)
            .ok_or_else(|| Refused::NoKey(host.name.clone()))?;
        match &host.key {
            Some(pin) if *pin != key.fingerprint() => Err(Refused::PinMismatch {
                host: host.name.clone(),
                fingerprint: key.fingerprint(),
                pin: pin.clone(),
            }),
            _ => Ok(key),
        }
    }

    /// Check a signed request for `method target` with `body` (see the
    /// module doc).
    pub fn verify(
        &self,
        auth: Option<&str>,
        method: &str,
        target: &str,
        body: &[u8],
        inv: &Inventory,
    ) -> Result<Verified, Refused> {
        let (a, host, issued) = self.precheck(auth, inv)?;
        let key = self.key_for(host)?;
        a.verify(&key, method, target, body)
            .map_err(|_| Refused::BadSignature {
                host: host.name.clone(),
                fingerprint: key.fingerprint(),
            })?;
        self.spend(&a.nonce, issued)?;
        Ok(Verified {
            host: host.name.clone(),
            mac: a.mac,
            fingerprint: key.fingerprint(),
            key,
        })
    }

    /// `POST /identity/enroll`: `body` is the public key line, the request
    /// signed by that key. Returns the host, the MAC and what was done.
    pub fn enroll(
        &self,
        auth: Option<&str>,
        target: &str,
        body: &[u8],
        inv: &Inventory,
    ) -> Result<(Verified, Enrolled), Refused> {
        use crate::metrics::Enrollment;
        let r = self.enroll_counted(auth, target, body, inv);
        crate::metrics::global().enrollment(match &r {
            Ok((_, Enrolled::New { .. })) => Enrollment::Accepted,
            Ok((_, Enrolled::Same { .. })) => Enrollment::Same,
            Err(_) => Enrollment::Refused,
        });
        r
    }

    /// [`Identities::enroll`], before it is counted.
    fn enroll_counted(
        &self,
        auth: Option<&str>,
        target: &str,
        body: &[u8],
        inv: &Inventory,
    ) -> Result<(Verified, Enrolled), Refused> {
        let (a, host, issued) = self.precheck(auth, inv)?;
        let text = std::str::from_utf8(body).map_err(|_| Refused::BadKey("not text".into()))?;
        let key = PublicKey::from_str(text.trim()).map_err(|e| Refused::BadKey(e.to_string()))?;
        let fingerprint = key.fingerprint();
        // Proof of possession: the request is signed by the key it enrolls.
        a.verify(&key, "POST", target, body)
            .map_err(|_| Refused::BadSignature {
                host: host.name.clone(),
                fingerprint: fingerprint.clone(),
            })?;
        let v = Verified {
            host: host.name.clone(),
            mac: a.mac.clone(),
            fingerprint: fingerprint.clone(),
            key: key.clone(),
        };
        // One enrollment at a time: decide, write, swap.
        let _one = lock(&self.enrolling);
        if let Some(pin) = host.key.as_ref().filter(|p| **p != fingerprint) {
            return Err(Refused::NotPinned {
                host: host.name.clone(),
                fingerprint,
                pin: pin.clone(),
            });
        }
        let current = self.key(&host.name);
        if current.as_ref() == Some(&key) {
            // The node has the key bootd has: nothing to take, and nothing
            // may stay armed for someone else's key.
            self.spend(&a.nonce, issued)?;
            if self.disarm(&host.name) {
                tracing::warn!(
                    "{} presented its known key {fingerprint}: disarmed",
                    host.name
                );
            }
            return Ok((v, Enrolled::Same { fingerprint }));
        }
        let how = if host.key.is_some() {
            "pinned in the inventory"
        } else if self.armed_by_admin(&host.name) {
            "armed by bootd arm"
        } else if host.enroll && current.is_none() {
            "armed in the inventory (enroll = true, first key)"
        } else if let Some(c) = &current {
            return Err(Refused::HasKey {
                host: host.name.clone(),
                current: c.fingerprint(),
                fingerprint,
            });
        } else {
            return Err(Refused::NotArmed {
                host: host.name.clone(),
                fingerprint,
            });
        };
        // Spent only now: a refused enrollment costs bootd nothing.
        self.spend(&a.nonce, issued)?;
        self.store(&host.name, &key)?;
        self.disarm(&host.name);
        let replaced = lock(&self.keys)
            .insert(host.name.clone(), key)
            .map(|k| k.fingerprint());
        Ok((
            v,
            Enrolled::New {
                fingerprint,
                replaced,
                how,
            },
        ))
    }

    /// Write `state/keys/<host>.pub` atomically (when there is a state).
    fn store(&self, host: &str, key: &PublicKey) -> Result<(), Refused> {
        let Some(dir) = &self.state else {
            return Ok(());
        };
        let kd = dir.join("keys");
        let tmp = kd.join(format!(".{host}.pub.tmp"));
        let r = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc_o_nofollow())
                .open(&tmp)?;
            writeln!(f, "{key} {host}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, kd.join(format!("{host}.pub")))?;
            std::fs::File::open(&kd)?.sync_all()
        })();
        r.map_err(|e| {
            tracing::error!("writing {}: {e}", kd.join(format!("{host}.pub")).display());
            Refused::Store(host.to_string())
        })
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeboot_identity::NodeKey;

    const MAC: &str = "52:54:00:12:34:56";

    fn inv(extra: &str) -> Inventory {
        Inventory::parse(
            &format!(
                "[[host]]\nname = \"cn1\"\n{extra}\n[[host.interfaces]]\nmac = \"{MAC}\"\n\n\
                 [[host]]\nname = \"cn2\"\n[[host.interfaces]]\nmac = \"52:54:00:00:00:02\"\n"
            ),
            "t.toml",
        )
        .unwrap()
    }

    fn signed(
        ids: &Identities,
        k: &NodeKey,
        method: &str,
        target: &str,
        host: &str,
        mac: &str,
        body: &[u8],
    ) -> String {
        k.authorize(
            method,
            target,
            host,
            mac,
            now_unix(),
            &ids.nonce().unwrap(),
            body,
        )
    }

    fn enroll(
        ids: &Identities,
        k: &NodeKey,
        host: &str,
        inv: &Inventory,
    ) -> Result<Enrolled, Refused> {
        let body = k.public().to_string();
        let a = signed(ids, k, "POST", ENROLL_PATH, host, MAC, body.as_bytes());
        ids.enroll(Some(&a), ENROLL_PATH, body.as_bytes(), inv)
            .map(|(_, e)| e)
    }

    #[test]
    fn enrollment_is_armed_once() {
        let d = tempfile::tempdir().unwrap();
        let ids = Identities::new(Some(d.path())).unwrap();
        let inv = inv("");
        let (k1, k2) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        // Unarmed: refused, naming the host and the way out.
        let e = enroll(&ids, &k1, "cn1", &inv).unwrap_err();
        assert_eq!(e.status(), 403);
        assert!(
            e.to_string()
                .starts_with("cn1 is not armed for enrollment (an admin runs: bootd arm cn1)"),
            "{e}"
        );
        ids.arm("cn1", DEFAULT_ARM);
        assert!(matches!(
            enroll(&ids, &k1, "cn1", &inv).unwrap(),
            Enrolled::New { replaced: None, .. }
        ));
        // Disarmed: a second key is refused; the same key is no change.
        let e = enroll(&ids, &k2, "cn1", &inv).unwrap_err();
        assert!(
            e.to_string().starts_with("cn1 already has key SHA256:"),
            "{e}"
        );
        assert_eq!(
            enroll(&ids, &k1, "cn1", &inv).unwrap(),
            Enrolled::Same {
                fingerprint: k1.public().fingerprint()
            }
        );
        // Kept across a restart.
        let ids2 = Identities::new(Some(d.path())).unwrap();
        assert_eq!(ids2.key("cn1"), Some(k1.public()));
        // Armed again: the key is replaced (a re-imaged disk).
        ids2.arm("cn1", DEFAULT_ARM);
        match enroll(&ids2, &k2, "cn1", &inv).unwrap() {
            Enrolled::New { replaced, .. } => assert_eq!(replaced, Some(k1.public().fingerprint())),
            e => panic!("{e:?}"),
        }
        // An enrollment signed by a key other than the one it carries.
        let body = k1.public().to_string();
        let a = signed(&ids2, &k2, "POST", ENROLL_PATH, "cn1", MAC, body.as_bytes());
        let e = ids2
            .enroll(Some(&a), ENROLL_PATH, body.as_bytes(), &inv)
            .unwrap_err();
        assert!(matches!(e, Refused::BadSignature { .. }), "{e}");
    }

    #[test]
    fn inventory_arms_the_first_key_and_pins() {
        let ids = Identities::new(None).unwrap();
        let (k1, k2) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        let tofu = inv("enroll = true");
        enroll(&ids, &k1, "cn1", &tofu).unwrap();
        assert!(enroll(&ids, &k2, "cn1", &tofu)
            .unwrap_err()
            .to_string()
            .contains("already has key"));
        let ids = Identities::new(None).unwrap();
        let pinned = inv(&format!("key = \"{}\"", k1.public().fingerprint()));
        let e = enroll(&ids, &k2, "cn1", &pinned).unwrap_err();
        assert!(
            e.to_string().starts_with("key SHA256:")
                && e.to_string().contains("is not the key pinned for cn1"),
            "{e}"
        );
        enroll(&ids, &k1, "cn1", &pinned).unwrap();
    }

    #[test]
    fn signed_requests_are_checked() {
        let ids = Identities::new(None).unwrap();
        let inv = inv("enroll = true");
        let (k1, k2) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        let t = "/secrets/munge.key";
        let a = signed(&ids, &k1, "GET", t, "cn1", MAC, b"");
        assert_eq!(
            ids.verify(Some(&a), "GET", t, b"", &inv).unwrap_err(),
            Refused::NoKey("cn1".into())
        );
        enroll(&ids, &k1, "cn1", &inv).unwrap();
        let a = signed(&ids, &k1, "GET", t, "cn1", MAC, b"");
        let v = ids.verify(Some(&a), "GET", t, b"", &inv).unwrap();
        assert_eq!((v.host.as_str(), v.mac.as_str()), ("cn1", MAC));
        // Replayed.
        let e = ids.verify(Some(&a), "GET", t, b"", &inv).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the nonce was already used: a replayed request"
        );
        // Another key, another host's MAC, another host, no header, a bearer token.
        let e = ids
            .verify(
                Some(&signed(&ids, &k2, "GET", t, "cn1", MAC, b"")),
                "GET",
                t,
                b"",
                &inv,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the signature does not verify with cn1's key SHA256:"),
            "{e}"
        );
        let e = ids
            .verify(
                Some(&signed(
                    &ids,
                    &k1,
                    "GET",
                    t,
                    "cn1",
                    "52:54:00:00:00:02",
                    b"",
                )),
                "GET",
                t,
                b"",
                &inv,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAC 52:54:00:00:00:02 is not an interface of cn1 in the inventory"
        );
        let e = ids
            .verify(
                Some(&signed(&ids, &k1, "GET", t, "cn9", MAC, b"")),
                "GET",
                t,
                b"",
                &inv,
            )
            .unwrap_err();
        assert_eq!(e, Refused::UnknownHost("cn9".into()));
        assert_eq!(
            ids.verify(None, "GET", t, b"", &inv).unwrap_err(),
            Refused::Unsigned
        );
        assert_eq!(
            ids.verify(Some("Bearer abc"), "GET", t, b"", &inv)
                .unwrap_err(),
            Refused::Unsigned
        );
        // A nonce from another bootd, an old one, a time far off.
        let other = Identities::new(None).unwrap();
        let a = k1.authorize(
            "GET",
            t,
            "cn1",
            MAC,
            now_unix(),
            &other.nonce().unwrap(),
            b"",
        );
        assert_eq!(
            ids.verify(Some(&a), "GET", t, b"", &inv).unwrap_err(),
            Refused::BadNonce
        );
        let a = k1.authorize(
            "GET",
            t,
            "cn1",
            MAC,
            now_unix() - 1000,
            &ids.nonce().unwrap(),
            b"",
        );
        assert!(matches!(
            ids.verify(Some(&a), "GET", t, b"", &inv).unwrap_err(),
            Refused::Skew(-1000 | -1001)
        ));
        // The signature covers the target; a failed check spends nothing.
        let a = signed(&ids, &k1, "GET", t, "cn1", MAC, b"");
        assert!(matches!(
            ids.verify(Some(&a), "GET", "/secrets/deploy_key", b"", &inv)
                .unwrap_err(),
            Refused::BadSignature { .. }
        ));
        ids.verify(Some(&a), "GET", t, b"", &inv).unwrap();
        // A nonce past its two minutes.
        let old = ids.nonce_at(now_unix() - 200).unwrap();
        let a = k1.authorize("GET", t, "cn1", MAC, now_unix(), &old, b"");
        assert!(matches!(
            ids.verify(Some(&a), "GET", t, b"", &inv).unwrap_err(),
            Refused::OldNonce(79..=81)
        ));
    }

    /// Refused enrollments spend no nonce (anonymous clients cannot fill
    /// the cache); presenting the known key disarms; a pin written after an
    /// enrollment refuses the enrolled key.
    #[test]
    fn refusals_cost_nothing_and_pins_hold() {
        let ids = Identities::new(None).unwrap();
        let (k1, k2) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        let plain = inv("");
        for _ in 0..50 {
            assert!(matches!(
                enroll(&ids, &k2, "cn1", &plain).unwrap_err(),
                Refused::NotArmed { .. }
            ));
        }
        assert_eq!(lock(&ids.spent).len(), 0);
        ids.arm("cn1", DEFAULT_ARM);
        enroll(&ids, &k1, "cn1", &plain).unwrap();
        ids.arm("cn1", DEFAULT_ARM);
        assert!(matches!(
            enroll(&ids, &k1, "cn1", &plain).unwrap(),
            Enrolled::Same { .. }
        ));
        assert!(!ids.armed_by_admin("cn1"), "the known key disarms");
        assert!(matches!(
            enroll(&ids, &k2, "cn1", &plain).unwrap_err(),
            Refused::HasKey { .. }
        ));
        let pinned = inv(&format!("key = \"{}\"", k2.public().fingerprint()));
        let a = signed(&ids, &k1, "GET", "/x", "cn1", MAC, b"");
        let e = ids.verify(Some(&a), "GET", "/x", b"", &pinned).unwrap_err();
        assert!(
            e.to_string().starts_with("cn1's key SHA256:")
                && e.to_string()
                    .contains("is not the one pinned in the inventory"),
            "{e}"
        );
        assert!(matches!(
            enroll(&ids, &k1, "cn1", &pinned).unwrap_err(),
            Refused::NotPinned { .. }
        ));
        enroll(&ids, &k2, "cn1", &pinned).unwrap();
    }

    /// Enrollments at once while armed: exactly one key is taken, and the
    /// key on disk is the key in memory.
    #[test]
    fn concurrent_enrollments_take_one_key() {
        for _ in 0..5 {
            let d = tempfile::tempdir().unwrap();
            let ids = Identities::new(Some(d.path())).unwrap();
            let inv = inv("");
            ids.arm("cn1", DEFAULT_ARM);
            let keys: Vec<NodeKey> = (1..=8).map(|i| NodeKey::from_seed(&[i; 32])).collect();
            let results: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = keys
                    .iter()
                    .map(|k| s.spawn(|| enroll(&ids, k, "cn1", &inv).is_ok()))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
            let on_disk = Identities::new(Some(d.path())).unwrap().key("cn1");
            assert_eq!(on_disk, ids.key("cn1"));
        }
    }
}
