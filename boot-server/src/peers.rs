//! Which nodes serve which image's chunks (peer-assisted fetch, issue 16).
//!
//! `POST /peers` with `{"image": "<sha256>", "port": N}`: the client says it
//! serves the verified chunks of that image on port N of *its own address*
//! (the connection's source address: a claim cannot point the fleet at a
//! third party). `GET /peers?image=<sha256>` answers `{"peers":
//! ["ADDR:PORT", …]}`: at most [`ANSWER`] of the live claims for that image,
//! shuffled (every asker gets a different subset, so load spreads), never
//! the asker itself (`&port=P`: its claim on port P; without, every claim
//! of its address).
//!
//! Anyone may claim: that is acceptable only because a fetcher verifies
//! every chunk against the index whose digest the command line pins, and
//! drops a peer that serves a wrong one. What an anonymous client can hold
//! is bounded: [`PER_ADDRESS`] claims per source address, [`MAX_CLAIMS`] in
//! all (beyond: 429 / 503, a new claim is refused, the live ones stay), and
//! each lasts [`TTL`] unless renewed. A full table costs the fleet its
//! peers, never an image: the fetchers fall back to the origin.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Path of both endpoints.
pub const PATH: &str = "/peers";
/// Largest `POST /peers` body (413 above).
pub const MAX_BODY: usize = 1024;
/// Live claims per source address (a node serves one or two images).
pub const PER_ADDRESS: usize = 4;
/// Live claims in all.
pub const MAX_CLAIMS: usize = 16_384;
/// A claim lasts this long unless renewed (a serving node renews it every
/// third of it).
pub const TTL: Duration = Duration::from_secs(600);
/// Peers in one answer.
pub const ANSWER: usize = 32;

/// Why a claim or a query was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body: not JSON: {0}")]
    Json(String),
    #[error("body: not a JSON object")]
    NotObject,
    #[error("image: missing (the image's sha256, 64 hex digits)")]
    NoImage,
    #[error("image: {0:?} is not a sha256 (64 hex digits)")]
    Image(String),
    #[error("port: missing or not a number from 1 to 65535")]
    Port,
}

/// Why a valid claim was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{addr} already has {limit} live claims")]
    PerAddress { addr: IpAddr, limit: usize },
    #[error("the peer table is full ({MAX_CLAIMS} live claims)")]
    Full,
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::PerAddress { .. } => 429,
            Refused::Full => 503,
        }
    }
}

/// A lowercase 64-hex-digit sha256, or why not.
pub fn parse_image(s: &str) -> Result<String, Invalid> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(Invalid::Image(s.chars().take(40).collect()))
    }
}

/// A `POST /peers` body: (image, port).
pub fn parse_claim(body: &[u8]) -> Result<(String, u16), Invalid> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Invalid::Json(e.to_string()))?;
    let obj = v.as_object().ok_or(Invalid::NotObject)?;
    let image = match obj.get("image") {
        None | Some(serde_json::Value::Null) => return Err(Invalid::NoImage),
        Some(serde_json::Value::String(s)) => parse_image(s)?,
        Some(other) => return Err(Invalid::Image(other.to_string().chars().take(40).collect())),
    };
    let port = obj
        .get("port")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or(Invalid::Port)?;
    Ok((image, port))
}

/// The claims, shared by the connection threads.
#[derive(Debug)]
pub struct Peers {
    inner: Mutex<Inner>,
    max: usize,
    per_address: usize,
    ttl: Duration,
}

#[derive(Debug)]
struct Inner {
    /// (image, address, port) → expiry.
    claims: BTreeMap<(String, IpAddr, u16), Instant>,
    /// xorshift state of the shuffle.
    rng: u64,
}

impl Default for Peers {
    fn default() -> Peers {
        Peers::with_limits(MAX_CLAIMS, PER_ADDRESS, TTL)
    }
}

impl Peers {
    pub fn with_limits(max: usize, per_address: usize, ttl: Duration) -> Peers {
        // The shuffle only spreads load; it guards nothing.
        let mut seed = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut seed);
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Peers {
            inner: Mutex::new(Inner {
                claims: BTreeMap::new(),
                rng: (u64::from_le_bytes(seed) ^ t) | 1,
            }),
            max: max.max(1),
            per_address: per_address.max(1),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record (or renew) that `addr:port` serves `image`, until `now` + TTL.
    pub fn claim(&self, image: &str, addr: IpAddr, port: u16, now: Instant) -> Result<(), Refused> {
        let addr = addr.to_canonical();
        let mut g = self.lock();
        g.claims.retain(|_, exp| *exp > now);
        let key = (image.to_string(), addr, port);
        if let Some(exp) = g.claims.get_mut(&key) {
            *exp = now + self.ttl;
            return Ok(());
        }
        if g.claims.keys().filter(|(_, a, _)| *a == addr).count() >= self.per_address {
            return Err(Refused::PerAddress {
                addr,
                limit: self.per_address,
            });
        }
        if g.claims.len() >= self.max {
            return Err(Refused::Full);
        }
        g.claims.insert(key, now + self.ttl);
        Ok(())
    }

    /// Up to [`ANSWER`] live peers of `image`, shuffled, the asker left
    /// out: its claim on `port`, or all of its address's without one.
    pub fn list(
        &self,
        image: &str,
        asker: IpAddr,
        port: Option<u16>,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let asker = asker.to_canonical();
        let me = |a: &IpAddr, p: &u16| *a == asker && port.is_none_or(|q| q == *p);
        let mut g = self.lock();
        let lo = (image.to_string(), IpAddr::from([0u8; 4]), 0);
        let mut found: Vec<SocketAddr> = g
            .claims
            .range(lo..)
            .take_while(|((img, _, _), _)| img == image)
            .filter(|((_, a, p), exp)| **exp > now && !me(a, p))
            .map(|((_, a, p), _)| SocketAddr::new(*a, *p))
            .collect();
        // Fisher-Yates, as far as the answer goes.
        let n = found.len();
        for i in 0..n.min(ANSWER) {
            g.rng ^= g.rng << 13;
            g.rng ^= g.rng >> 7;
            g.rng ^= g.rng << 17;
            let j = i + (g.rng % (n - i) as u64) as usize;
            found.swap(i, j);
        }
        found.truncate(ANSWER);
        found
    }

    /// Live claims (all images).
    pub fn len(&self, now: Instant) -> usize {
        self.lock().claims.values().filter(|e| **e > now).count()
    }

    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }
}

/// The `GET /peers` answer.
pub fn answer_json(peers: &[SocketAddr]) -> String {
    serde_json::json!({ "peers": peers.iter().map(ToString::to_string).collect::<Vec<_>>() })
        .to_string()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, i])
    }

    #[test]
    fn claims_parse_or_name_the_field() {
        let ok = format!(r#"{{"image":"{}","port":7001}}"#, IMG.to_uppercase());
        assert_eq!(parse_claim(ok.as_bytes()).unwrap(), (IMG.to_string(), 7001));
        let cases: [(&str, &str); 6] = [
            ("nope", "body: not JSON"),
            ("[1]", "body: not a JSON object"),
            (r#"{"port":1}"#, "image: missing"),
            (
                r#"{"image":"abc","port":1}"#,
                "image: \"abc\" is not a sha256",
            ),
            (
                &format!(r#"{{"image":"{IMG}","port":0}}"#),
                "port: missing or not a number",
            ),
            (
                &format!(r#"{{"image":"{IMG}","port":70000}}"#),
                "port: missing or not a number",
            ),
        ];
        for (body, want) in cases {
            let e = parse_claim(body.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }

    #[test]
    fn answers_are_bounded_shuffled_and_leave_the_asker_out() {
        let p = Peers::default();
        let now = Instant::now();
        for i in 1..=40 {
            p.claim(IMG, ip(i), 7001, now).unwrap();
        }
        p.claim(OTHER, ip(99), 7001, now).unwrap();
        let a = p.list(IMG, ip(1), None, now);
        assert_eq!(a.len(), ANSWER);
        assert!(a.iter().all(|s| s.ip() != ip(1) && s.ip() != ip(99)));
        let b = p.list(IMG, ip(1), None, now);
        assert_ne!(a, b, "two answers in the same order: not shuffled");
        assert_eq!(p.list(OTHER, ip(99), None, now), vec![]);
        assert_eq!(
            p.list(OTHER, ip(1), None, now),
            vec![SocketAddr::new(ip(99), 7001)]
        );
        // With its port, only the asker's own claim is left out (two
        // nodes behind one address, or tests on one loopback).
        p.claim(OTHER, ip(99), 7002, now).unwrap();
        assert_eq!(
            p.list(OTHER, ip(99), Some(7001), now),
            vec![SocketAddr::new(ip(99), 7002)]
        );
    }

    #[test]
    fn an_address_holds_a_bounded_number_of_claims_and_the_table_too() {
        let p = Peers::with_limits(6, 2, TTL);
        let now = Instant::now();
        p.claim(IMG, ip(1), 1, now).unwrap();
        p.claim(IMG, ip(1), 2, now).unwrap();
        // Renewing a claim is not a new one.
        p.claim(IMG, ip(1), 2, now).unwrap();
        let e = p.claim(IMG, ip(1), 3, now).unwrap_err();
        assert_eq!(e.to_string(), "10.0.0.1 already has 2 live claims");
        assert_eq!(e.status(), 429);
        for i in 2..=5 {
            p.claim(OTHER, ip(i), 1, now).unwrap();
        }
        let e = p.claim(OTHER, ip(6), 1, now).unwrap_err();
        assert_eq!(e, Refused::Full);
        assert_eq!(e.status(), 503);
        assert_eq!(p.len(now), 6);
        // IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(p.claim(IMG, mapped, 3, now).is_err());
    }

    #[test]
    fn claims_expire_unless_renewed() {
        let p = Peers::with_limits(10, 4, Duration::from_secs(10));
        let t0 = Instant::now();
        p.claim(IMG, ip(1), 1, t0).unwrap();
        p.claim(IMG, ip(2), 1, t0).unwrap();
        p.claim(IMG, ip(2), 1, t0 + Duration::from_secs(8)).unwrap();
        let later = t0 + Duration::from_secs(12);
        assert_eq!(
            p.list(IMG, ip(9), None, later),
            vec![SocketAddr::new(ip(2), 1)]
        );
        assert_eq!(p.len(later), 1);
    }
}
