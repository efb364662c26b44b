//! Peer-assisted fetch (issue 16): nodes that hold verified chunks of an
//! image serve them to the nodes that need them; bootd tells each node who
//! claims to hold its image (`GET /peers?image=`, claims by `POST /peers`).
//!
//! The protocol, plain HTTP/1.1 between nodes (keep-alive):
//!
//! - `GET /v1/<image sha256>/have`: a bitmap, bit `i` (LSB first) set when
//!   the index's chunk `i` is held verified here (a hint: the chunk itself is
//!   verified again before it is sent, and by the fetcher on receipt);
//! - `GET /v1/<image sha256>/chunk/<chunk sha256>`: the chunk's bytes
//!   (uncompressed), with the `have` bitmap in [`HAVE_HEADER`], or 404
//!   (not held), or 503 (its upload slots are taken: ask another holder).
//!
//! A fetcher that serves too says so in its requests: its own bitmap in
//! [`HAVE_HEADER`] and its chunk server's port in [`PORT_HEADER`]. The
//! server passes them to its own fetch ([`Held::heard`]): every request
//! tells the asked what the asker holds, so news of a chunk spreads with
//! the chunks, without being polled for.
//!
//! No peer is trusted: the fetcher checks every chunk against the index
//! whose digest the command line pins, drops a peer that sent a wrong one
//! for the rest of the fetch, and falls back to the origin ([`swarm`]). A
//! node serves only an image it verified ([`server`]): while fetching, the
//! chunks it verified so far; booted, an image whose whole digest it
//! checked. Its upload is a token bucket, its connections are bounded, and
//! its request parser ([`parse_request`]) reads at most [`MAX_HEAD`] bytes.
pub mod server;
pub mod swarm;

use anyhow::{bail, Context, Result};
use nodeboot_chunks::assemble;
use nodeboot_chunks::{ChunkId, Index};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `nodectl serve-chunks`: serve a local image whose every chunk checks
/// against `index_file`; its claim is renewed with bootd while it runs.
/// Returns the server (serving until dropped), the image's sha256 and the
/// announce switch.
pub fn serve_image(
    image_file: &Path,
    index_file: &Path,
    listen: SocketAddr,
    bootd: Option<&str>,
    limits: server::Limits,
) -> Result<(server::ChunkServer, String, Arc<AtomicBool>)> {
    let b =
        std::fs::read(index_file).with_context(|| format!("reading {}", index_file.display()))?;
    let index = Index::parse(&b).with_context(|| format!("index {}", index_file.display()))?;
    let image = assemble::sha256_file(image_file)?;
    let f = std::fs::File::open(image_file)
        .with_context(|| format!("opening {}", image_file.display()))?;
    let len = f.metadata()?.len();
    if len != index.total_size() {
        bail!(
            "{} is {len} bytes, its index {} describes {}: not this image",
            image_file.display(),
            index_file.display(),
            index.total_size()
        );
    }
    for c in &index.chunks {
        let mut buf = vec![0u8; c.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, c.offset)
            .with_context(|| format!("reading {}", image_file.display()))?;
        if ChunkId::of(&buf) != c.id {
            bail!(
                "{} at {}: the chunk does not match {} (not this image, or damaged): nothing served",
                image_file.display(),
                c.offset,
                index_file.display()
            );
        }
    }
    let held = Arc::new(Held::new(&index));
    held.set_all();
    let l = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let s = server::ChunkServer::start(l, &image, f, held, limits)
        .context("starting the chunk server")?;
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(b) = bootd {
        swarm::announce(b, &image, s.local_addr().port(), stop.clone());
    }
    Ok((s, image, stop))
}

/// Largest request head a peer reads (request line and headers).
pub const MAX_HEAD: usize = 4096;
/// A chunk answer also carries the server's `have` bitmap, in hex, in this
/// header (when the bitmap is at most [`MAX_HAVE_HEADER`] bytes).
pub const HAVE_HEADER: &str = "x-nodeboot-have";
pub const MAX_HAVE_HEADER: usize = 4096;
/// The asker's chunk server port (with its bitmap in [`HAVE_HEADER`]).
pub const PORT_HEADER: &str = "x-nodeboot-port";
/// What a server keeps of its askers' maps until its fetch reads them.
pub const MAX_HEARD: usize = 256;

/// What an asker said of itself: its chunk server's port and its bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub port: u16,
    pub have: Vec<u8>,
}

/// The chunks of one image held verified here: the index's positions, by
/// chunk id (a chunk that repeats in the image is held at every place).
#[derive(Debug)]
pub struct Held {
    bits: Vec<AtomicBool>,
    at: HashMap<ChunkId, Vec<usize>>,
    /// (offset, size) of each chunk's first place.
    place: HashMap<ChunkId, (u64, u32)>,
    /// What askers said they hold, for this node's fetch (at most
    /// [`MAX_HEARD`]; newer news of an address replaces older).
    heard: std::sync::Mutex<Vec<(std::net::SocketAddr, Vec<u8>)>>,
}

impl Held {
    /// Nothing held yet.
    pub fn new(index: &Index) -> Held {
        let mut at: HashMap<ChunkId, Vec<usize>> = HashMap::new();
        let mut place = HashMap::new();
        for (i, c) in index.chunks.iter().enumerate() {
            at.entry(c.id).or_default().push(i);
            place.entry(c.id).or_insert((c.offset, c.size));
        }
        Held {
            bits: (0..index.chunks.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            at,
            place,
            heard: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Note that the peer at `addr` holds `have` (a bitmap of this index;
    /// another length is ignored).
    pub fn hear(&self, addr: std::net::SocketAddr, have: Vec<u8>) {
        if have.len() != self.bits.len().div_ceil(8) {
            return;
        }
        let mut h = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = h.iter_mut().find(|(a, _)| *a == addr) {
            e.1 = have;
        } else if h.len() < MAX_HEARD {
            h.push((addr, have));
        }
    }

    /// What was heard since the last call.
    pub fn heard(&self) -> Vec<(std::net::SocketAddr, Vec<u8>)> {
        std::mem::take(&mut *self.heard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Mark `id` held (every place of it).
    pub fn set(&self, id: &ChunkId) {
        for &i in self.at.get(id).map(Vec::as_slice).unwrap_or_default() {
            self.bits[i].store(true, Ordering::Relaxed);
        }
    }

    /// Mark everything held (the whole image verified).
    pub fn set_all(&self) {
        for b in &self.bits {
            b.store(true, Ordering::Relaxed);
        }
    }

    pub fn has(&self, id: &ChunkId) -> bool {
        self.at
            .get(id)
            .and_then(|v| v.first())
            .is_some_and(|&i| self.bits[i].load(Ordering::Relaxed))
    }

    /// Where the chunk is in the image: (offset, size).
    pub fn place(&self, id: &ChunkId) -> Option<(u64, u32)> {
        self.place.get(id).copied()
    }

    /// The first index position of `id`.
    pub fn position(&self, id: &ChunkId) -> Option<usize> {
        self.at.get(id).and_then(|v| v.first().copied())
    }

    /// Chunks in the index.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    /// The `have` bitmap (LSB first).
    pub fn bitmap(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.bits.len().div_ceil(8)];
        for (i, b) in self.bits.iter().enumerate() {
            if b.load(Ordering::Relaxed) {
                v[i / 8] |= 1 << (i % 8);
            }
        }
        v
    }
}

/// Whether bit `i` of a `have` bitmap is set.
pub fn bit(map: &[u8], i: usize) -> bool {
    map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// What a peer is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Have { image: String },
    Chunk { image: String, id: ChunkId },
}

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// `None`: a path this protocol does not serve (404).
    pub route: Option<Route>,
    /// The client asked to close after the answer (or spoke HTTP/1.0).
    pub close: bool,
    /// The asker serves too: its port and bitmap ([`PORT_HEADER`],
    /// [`HAVE_HEADER`]; both valid, else `None`: a hint, never an error).
    pub from: Option<Heard>,
}

/// Why a request head was refused (the connection is closed after a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("request head over {MAX_HEAD} bytes")]
    TooLong,
    #[error("request head is not ASCII text")]
    NotText,
    #[error("bad request line {0:?}")]
    Line(String),
    #[error("unsupported HTTP version {0:?}")]
    Version(String),
}

/// Parse the request head at the start of `buf`: `Ok(None)` when more bytes
/// are needed (and `buf` is under [`MAX_HEAD`]); else the request and the
/// length of its head. Never panics, reads nothing past [`MAX_HEAD`].
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, BadRequest> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Err(BadRequest::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&window[..end]).map_err(|_| BadRequest::NotText)?;
    if !head.is_ascii() {
        return Err(BadRequest::NotText);
    }
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let clip = |s: &str| s.chars().take(60).collect::<String>();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Line(clip(line)));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(BadRequest::Line(clip(line)));
    }
    let mut close = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v => return Err(BadRequest::Version(clip(v))),
    };
    let (mut port, mut have) = (None, None);
    for h in lines {
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case(PORT_HEADER) {
                port = v.parse::<u16>().ok().filter(|&p| p != 0);
            } else if k.eq_ignore_ascii_case(HAVE_HEADER) {
                // Within the head: at most MAX_HEAD / 2 bytes.
                have = hex::decode(v).ok().filter(|m| !m.is_empty());
            }
        }
    }
    Ok(Some((
        Request {
            method: method.to_string(),
            route: route(target),
            close,
            from: port.zip(have).map(|(port, have)| Heard { port, have }),
        },
        end + 4,
    )))
}

/// A lowercase 64-hex-digit digest, or `None`.
pub fn digest(s: &str) -> Option<String> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

fn route(target: &str) -> Option<Route> {
    let mut p = target.strip_prefix("/v1/")?.split('/');
    let image = digest(p.next()?)?;
    let r = match (p.next()?, p.next(), p.next()) {
        ("have", None, None) => Route::Have { image },
        ("chunk", Some(id), None) => Route::Chunk {
            image,
            id: ChunkId::from_hex(&digest(id)?)?,
        },
        _ => return None,
    };
    Some(r)
}

/// The path of `image`'s have map.
pub fn have_path(image: &str) -> String {
    format!("/v1/{image}/have")
}

/// The path of one chunk of `image`.
pub fn chunk_path(image: &str, id: &ChunkId) -> String {
    format!("/v1/{image}/chunk/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn requests_parse() {
        let id = ChunkId::of(b"x");
        let req = format!("GET /v1/{IMG}/chunk/{id} HTTP/1.1\r\nHost: a\r\n\r\nrest");
        let (r, n) = parse_request(req.as_bytes()).unwrap().unwrap();
        assert_eq!(n, req.len() - 4);
        assert_eq!(r.method, "GET");
        assert!(!r.close);
        assert_eq!(
            r.route,
            Some(Route::Chunk {
                image: IMG.into(),
                id
            })
        );
        let req = format!("GET /v1/{IMG}/have HTTP/1.0\r\n\r\n");
        let (r, _) = parse_request(req.as_bytes()).unwrap().unwrap();
        assert!(r.close);
        assert_eq!(r.route, Some(Route::Have { image: IMG.into() }));
        let req = "GET /v1/abc/have HTTP/1.1\r\nConnection: close\r\n\r\n";
        let (r, _) = parse_request(req.as_bytes()).unwrap().unwrap();
        assert_eq!(r.route, None);
        assert!(r.close);
        assert_eq!(r.from, None);
        // An asker that serves: its port and map; either alone or bad: none.
        let req = format!(
            "GET /v1/{IMG}/have HTTP/1.1\r\nX-Nodeboot-Have: 0aff\r\nx-nodeboot-port: 7070\r\n\r\n"
        );
        let (r, _) = parse_request(req.as_bytes()).unwrap().unwrap();
        assert_eq!(
            r.from,
            Some(Heard {
                port: 7070,
                have: vec![0x0a, 0xff]
            })
        );
        for bad in [
            "x-nodeboot-have: 0aff",
            "x-nodeboot-have: 0ag\r\nx-nodeboot-port: 7070",
            "x-nodeboot-have: 0aff\r\nx-nodeboot-port: 0",
            "x-nodeboot-have: 0aff\r\nx-nodeboot-port: 70000",
            "x-nodeboot-have: \r\nx-nodeboot-port: 7070",
        ] {
            let req = format!("GET /v1/{IMG}/have HTTP/1.1\r\n{bad}\r\n\r\n");
            let (r, _) = parse_request(req.as_bytes()).unwrap().unwrap();
            assert_eq!(r.from, None, "{bad}");
        }
    }

    #[test]
    fn bad_requests_are_named_and_bounded() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(
            parse_request(&vec![b'a'; MAX_HEAD + 10]),
            Err(BadRequest::TooLong)
        );
        let e = parse_request(b"GET /\r\n\r\n").unwrap_err();
        assert_eq!(e.to_string(), "bad request line \"GET /\"");
        let e = parse_request(b"GET / HTTP/2\r\n\r\n").unwrap_err();
        assert_eq!(e.to_string(), "unsupported HTTP version \"HTTP/2\"");
        assert_eq!(
            parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(BadRequest::NotText)
        );
    }

    #[test]
    fn bitmaps_follow_the_index() {
        let a = ChunkId::of(b"a");
        let b = ChunkId::of(b"b");
        let c = |offset, id| nodeboot_chunks::Chunk {
            offset,
            size: 1,
            id,
        };
        let ix = Index::new(1, 1, 1, vec![c(0, a), c(1, b), c(2, a)]);
        let h = Held::new(&ix);
        assert_eq!(h.bitmap(), vec![0]);
        h.set(&a);
        assert_eq!(h.bitmap(), vec![0b101]);
        assert!(h.has(&a) && !h.has(&b));
        assert!(bit(&h.bitmap(), 2) && !bit(&h.bitmap(), 1) && !bit(&[], 9));
        h.set_all();
        assert_eq!(h.bitmap(), vec![0b111]);
        // What askers said: one entry per address, the newest; a map of
        // another length ignored.
        let a1: std::net::SocketAddr = "10.0.0.1:7070".parse().unwrap();
        h.hear(a1, vec![1]);
        h.hear(a1, vec![3]);
        h.hear("10.0.0.2:7070".parse().unwrap(), vec![1, 2]);
        assert_eq!(h.heard(), vec![(a1, vec![3])]);
        assert_eq!(h.heard(), vec![]);
    }
}
