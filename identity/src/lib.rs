//! A node's identity: one secret seed of 32 bytes, from which two keys are
//! derived — an Ed25519 key that signs the node's requests to bootd, and an
//! age hybrid post-quantum identity (ML-KEM-768 + X25519, age's
//! `mlkem768x25519` recipient type) that opens the secrets bootd seals to
//! the node. bootd (the verifier and sealer) and nodectl (the signer and
//! opener) share this crate, so the formats below have one definition.
//!
//! Formats (all ASCII, one line):
//!
//! - **secret seed** (the node's key partition, mode 0600, or sealed in its
//!   TPM): `nodeboot-identity-v1 <64 hex digits>`;
//! - **public key** (bootd's state, `nodectl identity show`):
//!   `nodeboot-key-v1 <Ed25519 key, base64> <age1pq1… recipient> [comment]`;
//! - **fingerprint** (inventory pins, logs): `SHA256:` + unpadded base64 of
//!   the SHA-256 of the public key's first three words, space-separated;
//! - **signed request**: `Authorization: Nodeboot host=H,mac=M,time=T,nonce=N,sig=S`
//!   where `S` (base64url, no padding) is the Ed25519 signature of
//!   [`message`]: the method, the request target, the host, the MAC, the
//!   time (Unix seconds), a nonce bootd issued, and the SHA-256 of the body.
//!
//! Every parser here is bounded ([`MAX_PUBLIC`], [`MAX_HEADER`]) and
//! returns an error, never panics, on any input (fuzzed: `fuzz/`).
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::str::FromStr;
use zeroize::Zeroizing;

/// First word of a public key line.
pub const PUBLIC_TAG: &str = "nodeboot-key-v1";
/// First word of a secret seed file.
pub const SECRET_TAG: &str = "nodeboot-identity-v1";
/// The `Authorization` scheme of a signed request.
pub const SCHEME: &str = "Nodeboot";
/// Longest public key line accepted (the age recipient is ~1.9 KB).
pub const MAX_PUBLIC: usize = 4096;
/// Longest `Authorization` value accepted.
pub const MAX_HEADER: usize = 1024;
/// Longest secret seed file accepted.
pub const MAX_SECRET_FILE: usize = 256;
/// Longest nonce accepted, in characters.
pub const MAX_NONCE: usize = 128;
/// Longest host name (bootd's inventory rule).
pub const MAX_HOST: usize = 64;

/// Why a key, a header or a sealed secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a nodeboot public key ({0})")]
    BadPublicKey(&'static str),
    #[error("not a nodeboot identity file ({0})")]
    BadSecret(&'static str),
    #[error("bad Authorization: Nodeboot header ({0})")]
    BadHeader(String),
    #[error("the signature does not verify with the host's key")]
    BadSignature,
    #[error("sealing: {0}")]
    Seal(String),
    #[error("cannot open the sealed secret with this node's key: {0}")]
    Open(String),
    #[error("reading /dev/urandom: {0}")]
    Random(String),
}

fn derive(label: &str, master: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(SECRET_TAG.as_bytes());
    h.update(b" ");
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(master);
    Zeroizing::new(h.finalize().into())
}

/// A node's secret key: the seed and the two keys derived from it. Zeroed
/// on drop; never printed (no `Debug` of the seed).
pub struct NodeKey {
    seed: Zeroizing<[u8; 32]>,
    signing: SigningKey,
    age: age::pq::Identity,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public().fingerprint())
    }
}

impl NodeKey {
    /// A new key from 32 bytes of /dev/urandom.
    pub fn generate() -> Result<NodeKey, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed[..]))
            .map_err(|e| Error::Random(e.to_string()))?;
        Ok(NodeKey::from_seed(&seed))
    }

    /// The key of a seed.
    pub fn from_seed(seed: &[u8; 32]) -> NodeKey {
        let ed = derive("ed25519", seed);
        let signing = SigningKey::from_bytes(&ed);
        let pq = derive("mlkem768x25519", seed);
        let hrp = bech32::Hrp::parse_unchecked("AGE-SECRET-KEY-PQ-");
        let text = Zeroizing::new(age_core::primitives::bech32_encode(hrp, &pq[..]).to_uppercase());
        // A 32-byte X-Wing seed always makes a valid identity.
        let age = age::pq::Identity::from_str(&text).expect("32-byte seed");
        NodeKey {
            seed: Zeroizing::new(*seed),
            signing,
            age,
        }
    }

    /// The 32-byte seed (a TPM seals [`NodeKey::to_file`] of it).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The identity file: `nodeboot-identity-v1 <hex>\n`.
    pub fn to_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{SECRET_TAG} {}\n", hex::encode(&self.seed[..])))
    }

    /// Parse an identity file (as written, or unsealed from a TPM).
    pub fn from_file(bytes: &[u8]) -> Result<NodeKey, Error> {
        if bytes.len() > MAX_SECRET_FILE {
            return Err(Error::BadSecret("longer than 256 bytes"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Error::BadSecret("not text"))?;
        let mut words = text.split_ascii_whitespace();
        if words.next() != Some(SECRET_TAG) {
            return Err(Error::BadSecret("does not start with nodeboot-identity-v1"));
        }
        let h = words.next().ok_or(Error::BadSecret("no seed"))?;
        if words.next().is_some() {
            return Err(Error::BadSecret("more than two words"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(h, &mut seed[..])
            .map_err(|_| Error::BadSecret("the seed is not 64 hex digits"))?;
        Ok(NodeKey::from_seed(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            ed: self.signing.verifying_key(),
            age: self.age.to_public(),
        }
    }

    /// The signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// Open a secret sealed to this key by [`PublicKey::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        age::decrypt(&self.age, sealed)
            .map(Zeroizing::new)
            .map_err(|e| Error::Open(e.to_string()))
    }

    /// The `Authorization` value of a request: see [`message`].
    #[allow(clippy::too_many_arguments)]
    pub fn authorize(
        &self,
        method: &str,
        target: &str,
        host: &str,
        mac: &str,
        time: u64,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let sig = self.sign(&message(method, target, host, mac, time, nonce, body));
        Auth {
            host: host.to_string(),
            mac: mac.to_string(),
            time,
            nonce: nonce.to_string(),
            sig,
        }
        .to_header()
    }
}

/// A node's public key: what bootd keeps per host.
#[derive(Clone)]
pub struct PublicKey {
    ed: VerifyingKey,
    age: age::pq::Recipient,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}
impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl std::fmt::Display for PublicKey {
    /// `nodeboot-key-v1 <ed25519 base64> <age1pq1…>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PUBLIC_TAG} {} {}",
            STANDARD.encode(self.ed.as_bytes()),
            self.age
        )
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    /// A public key line; a fourth word (a comment) is allowed and dropped.
    fn from_str(s: &str) -> Result<PublicKey, Error> {
        if s.len() > MAX_PUBLIC {
            return Err(Error::BadPublicKey("longer than 4096 bytes"));
        }
        let mut w = s.split_ascii_whitespace();
        if w.next() != Some(PUBLIC_TAG) {
            return Err(Error::BadPublicKey("does not start with nodeboot-key-v1"));
        }
        let ed = w.next().ok_or(Error::BadPublicKey("no Ed25519 key"))?;
        let mut edb = [0u8; 32];
        match STANDARD.decode_slice(ed, &mut edb) {
            Ok(32) => {}
            _ => {
                return Err(Error::BadPublicKey(
                    "the Ed25519 key is not 32 bytes of base64",
                ))
            }
        }
        let ed = VerifyingKey::from_bytes(&edb)
            .map_err(|_| Error::BadPublicKey("the Ed25519 key is not a curve point"))?;
        if ed.is_weak() {
            return Err(Error::BadPublicKey("the Ed25519 key is a weak key"));
        }
        let r = w.next().ok_or(Error::BadPublicKey("no age recipient"))?;
        if !r.starts_with("age1pq1") {
            return Err(Error::BadPublicKey("the recipient is not an age1pq1… key"));
        }
        let age = age::pq::Recipient::from_str(r)
            .map_err(|_| Error::BadPublicKey("the age recipient does not parse"))?;
        if w.nth(1).is_some() {
            return Err(Error::BadPublicKey("more than four words"));
        }
        Ok(PublicKey { ed, age })
    }
}

impl PublicKey {
    /// `SHA256:<base64>` of the key (without comment).
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(self.to_string().as_bytes()))
        )
    }

    /// Check `sig` over `msg` (strict Ed25519: no malleable signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), Error> {
        let s = ed25519_dalek::Signature::from_bytes(sig);
        self.ed
            .verify_strict(msg, &s)
            .map_err(|_| Error::BadSignature)
    }

    /// `bytes` encrypted to this key (an age file, binary).
    pub fn seal(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        age::encrypt(&self.age, bytes).map_err(|e| Error::Seal(e.to_string()))
    }
}

/// Whether `fp` looks like a fingerprint (`SHA256:` + 43 base64 characters).
pub fn is_fingerprint(fp: &str) -> bool {
    fp.strip_prefix("SHA256:")
        .is_some_and(|b| b.len() == 43 && STANDARD_NO_PAD.decode(b).is_ok_and(|d| d.len() == 32))
}

/// The bytes a request's signature covers: one line per field.
pub fn message(
    method: &str,
    target: &str,
    host: &str,
    mac: &str,
    time: u64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "nodeboot-request-v1\n{method}\n{target}\n{host}\n{mac}\n{time}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// A parsed `Authorization: Nodeboot …` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub host: String,
    /// Lowercase, colon-separated.
    pub mac: String,
    pub time: u64,
    pub nonce: String,
    pub sig: [u8; 64],
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_mac(m: &str) -> bool {
    m.len() == 17
        && m.bytes().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                b == b':'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

fn valid_nonce(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NONCE
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Auth {
    /// Whether an `Authorization` value uses this scheme (then it must parse).
    pub fn is_ours(value: &str) -> bool {
        value
            .trim_start()
            .split_once(' ')
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case(SCHEME))
    }

    /// Parse an `Authorization` value.
    pub fn parse(value: &str) -> Result<Auth, Error> {
        let bad = |s: &str| Error::BadHeader(s.to_string());
        if value.len() > MAX_HEADER {
            return Err(bad("longer than 1024 bytes"));
        }
        let (scheme, params) = value
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("no parameters"))?;
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(bad("the scheme is not Nodeboot"));
        }
        let (mut host, mut mac, mut time, mut nonce, mut sig) = (None, None, None, None, None);
        for kv in params.split(',') {
            let (k, v) = kv
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("a parameter without '='"))?;
            let slot = match k {
                "host" => &mut host,
                "mac" => &mut mac,
                "time" => &mut time,
                "nonce" => &mut nonce,
                "sig" => &mut sig,
                _ => return Err(bad("an unknown parameter")),
            };
            if slot.replace(v).is_some() {
                return Err(bad("a parameter given twice"));
            }
        }
        let host = host.ok_or_else(|| bad("no host="))?;
        if !valid_host(host) {
            return Err(bad("host= is not 1 to 64 of [A-Za-z0-9.-]"));
        }
        let mac = mac.ok_or_else(|| bad("no mac="))?;
        if !valid_mac(mac) {
            return Err(bad("mac= is not aa:bb:cc:dd:ee:ff (lowercase)"));
        }
        let time = time.ok_or_else(|| bad("no time="))?;
        if time.is_empty() || time.len() > 20 || !time.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("time= is not Unix seconds"));
        }
        let time = time.parse().map_err(|_| bad("time= is not Unix seconds"))?;
        let nonce = nonce.ok_or_else(|| bad("no nonce="))?;
        if !valid_nonce(nonce) {
            return Err(bad("nonce= is not base64url"));
        }
        let sig = sig.ok_or_else(|| bad("no sig="))?;
        let mut s = [0u8; 64];
        match URL_SAFE_NO_PAD.decode_slice(sig, &mut s) {
            Ok(64) if sig.len() == 86 => {}
            _ => return Err(bad("sig= is not 64 bytes of base64url")),
        }
        Ok(Auth {
            host: host.to_string(),
            mac: mac.to_string(),
            time,
            nonce: nonce.to_string(),
            sig: s,
        })
    }

    pub fn to_header(&self) -> String {
        format!(
            "{SCHEME} host={},mac={},time={},nonce={},sig={}",
            self.host,
            self.mac,
            self.time,
            self.nonce,
            URL_SAFE_NO_PAD.encode(self.sig)
        )
    }

    /// Check the signature over a request with `key`.
    pub fn verify(
        &self,
        key: &PublicKey,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(), Error> {
        let m = message(
            method,
            target,
            &self.host,
            &self.mac,
            self.time,
            &self.nonce,
            body,
        );
        key.verify(&m, &self.sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> NodeKey {
        NodeKey::from_seed(&[n; 32])
    }

    #[test]
    fn keys_round_trip_and_are_deterministic() {
        let k = key(1);
        let p = k.public();
        let line = p.to_string();
        assert!(line.starts_with("nodeboot-key-v1 "), "{line}");
        assert!(line.len() < MAX_PUBLIC, "{}", line.len());
        assert_eq!(PublicKey::from_str(&line).unwrap(), p);
        assert_eq!(PublicKey::from_str(&format!("{line} cn1")).unwrap(), p);
        assert_eq!(key(1).public(), p);
        assert_ne!(key(2).public(), p);
        assert!(is_fingerprint(&p.fingerprint()), "{}", p.fingerprint());
        let f = k.to_file();
        assert!(f.starts_with("nodeboot-identity-v1 "));
        assert_eq!(NodeKey::from_file(f.as_bytes()).unwrap().public(), p);
        // 32 raw bytes (a damaged file) are not taken for a seed.
        assert!(NodeKey::from_file(&[1u8; 32]).is_err());
        // The seed never shows in Debug.
        assert!(!format!("{k:?}").contains(&hex::encode([1u8; 32])));
    }

    #[test]
    fn seal_opens_only_with_the_right_key() {
        let sealed = key(1).public().seal(b"MUNGEKEY").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"MUNGEKEY"));
        assert_eq!(&key(1).open(&sealed).unwrap()[..], b"MUNGEKEY");
        let e = key(2).open(&sealed).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot open the sealed secret"),
            "{e}"
        );
        assert!(key(1).open(b"garbage").is_err());
    }

    #[test]
    fn signed_requests_verify_and_bind_every_field() {
        let k = key(1);
        let h = k.authorize(
            "GET",
            "/secrets/munge.key",
            "cn1",
            "52:54:00:12:34:56",
            1_700_000_000,
            "bm9uY2U",
            b"",
        );
        assert!(Auth::is_ours(&h));
        let a = Auth::parse(&h).unwrap();
        assert_eq!(a.host, "cn1");
        assert_eq!(a.to_header(), h);
        a.verify(&k.public(), "GET", "/secrets/munge.key", b"")
            .unwrap();
        assert_eq!(
            a.verify(&k.public(), "GET", "/secrets/deploy_key", b""),
            Err(Error::BadSignature)
        );
        assert_eq!(
            a.verify(&k.public(), "POST", "/secrets/munge.key", b""),
            Err(Error::BadSignature)
        );
        assert_eq!(
            a.verify(&k.public(), "GET", "/secrets/munge.key", b"x"),
            Err(Error::BadSignature)
        );
        assert_eq!(
            a.verify(&key(2).public(), "GET", "/secrets/munge.key", b""),
            Err(Error::BadSignature)
        );
        for (from, to) in [
            ("host=cn1", "host=cn2"),
            ("time=1700000000", "time=1700000001"),
            ("nonce=bm9uY2U", "nonce=bm9uY2V"),
            (":56", ":57"),
        ] {
            let a = Auth::parse(&h.replace(from, to)).unwrap();
            assert_eq!(
                a.verify(&k.public(), "GET", "/secrets/munge.key", b""),
                Err(Error::BadSignature),
                "{from}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let good = key(1).public().to_string();
        for (s, want) in [
            ("", "does not start"),
            ("ssh-ed25519 AAAA", "does not start"),
            ("nodeboot-key-v1", "no Ed25519"),
            ("nodeboot-key-v1 AAAA age1pq1x", "not 32 bytes"),
            (&good.replace("age1pq1", "age1xx1"), "not an age1pq1"),
            (&format!("{} a b", good), "more than four"),
            (&"x".repeat(5000), "longer than"),
        ] {
            let e = PublicKey::from_str(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s:.40}: {e}");
        }
        let mut bad_recipient = good.clone();
        bad_recipient.pop();
        bad_recipient.push('q');
        assert!(PublicKey::from_str(&bad_recipient).is_err());
        for (h, want) in [
            ("Bearer x", "scheme"),
            ("Nodeboot", "no parameters"),
            ("Nodeboot host=cn1", "no mac="),
            ("Nodeboot host=cn1,host=cn1", "twice"),
            ("Nodeboot host=a b", "not 1 to 64"),
            ("Nodeboot host=cn1,mac=52:54:00:12:34:5G", "mac="),
            ("Nodeboot x=1", "unknown"),
            ("Nodeboot host=cn1,mac=52:54:00:12:34:56,time=-1", "time="),
            (
                "Nodeboot host=cn1,mac=52:54:00:12:34:56,time=1,nonce=a/b",
                "nonce=",
            ),
            (
                "Nodeboot host=cn1,mac=52:54:00:12:34:56,time=1,nonce=ab,sig=AAAA",
                "sig=",
            ),
        ] {
            let e = Auth::parse(h).unwrap_err().to_string();
            assert!(e.contains(want), "{h}: {e}");
        }
        assert!(Auth::parse(&format!("Nodeboot host={}", "a".repeat(2000))).is_err());
        for s in [
            &b"nodeboot-identity-v1"[..],
            b"nodeboot-identity-v1 zz",
            b"hello",
            &[0xff; 40],
        ] {
            assert!(NodeKey::from_file(s).is_err());
        }
    }
}
