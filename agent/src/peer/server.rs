//! A node's chunk server: the chunks of one image it holds verified, to
//! its peers (see [`super`] for the protocol).
//!
//! Every chunk is read from the image file at its index place and hashed
//! again before it is sent: a chunk not (yet) written, or damaged since,
//! is answered 404, never sent. Limits: [`Limits::connections`] at once
//! (a newcomer beyond gets a 503 and is closed), [`UPLOAD_SLOTS`] chunks
//! sent at once (a request beyond gets a 503 at once, the connection kept:
//! the asker turns to another holder instead of sharing a slow link with
//! many), [`Limits::rate`] bytes per second for all
//! uploads together (a token bucket), a request head within
//! [`HEAD_TIMEOUT`], an idle keep-alive connection closed after
//! [`IDLE_TIMEOUT`].
use super::{parse_request, Held, Route, MAX_HEAD};
use nodeboot_chunks::ChunkId;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request head must arrive whole within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// One write to a peer that stopped reading may block this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks sent at once, all connections together.
pub const UPLOAD_SLOTS: usize = 4;

/// What a chunk server allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Upload bytes per second, all connections together (0: unlimited).
    pub rate: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 128,
            rate: 50_000_000,
        }
    }
}

/// What the server did (for the fetch report and logs).
#[derive(Debug, Default)]
pub struct Stats {
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    pub not_found: AtomicU64,
    pub refused_connections: AtomicU64,
    /// Chunk requests answered 503 (every upload slot taken).
    pub busy: AtomicU64,
}

/// A token bucket of `rate` bytes per second, one second deep.
struct Bucket {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Wait until `n` bytes may be sent.
    fn take(&self, n: usize) {
        if self.rate == 0 {
            return;
        }
        let wait = {
            let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let rate = self.rate as f64;
            g.0 = (g.0 + now.duration_since(g.1).as_secs_f64() * rate).min(rate);
            g.1 = now;
            g.0 -= n as f64;
            if g.0 < 0.0 {
                Duration::from_secs_f64(-g.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A running chunk server; stopped (listener closed) on drop.
pub struct ChunkServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub stats: Arc<Stats>,
}

struct Shared {
    image: String,
    file: std::fs::File,
    held: Arc<Held>,
    bucket: Bucket,
    stats: Arc<Stats>,
    open: AtomicUsize,
    uploads: AtomicUsize,
    limits: Limits,
}

impl ChunkServer {
    /// Serve `image` (its sha256) from `file`, the chunks `held` says are
    /// verified, on `listener`.
    pub fn start(
        listener: TcpListener,
        image: &str,
        file: std::fs::File,
        held: Arc<Held>,
        limits: Limits,
    ) -> std::io::Result<ChunkServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            image: image.to_string(),
            file,
            held,
            bucket: Bucket::new(limits.rate),
            stats: stats.clone(),
            open: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
            limits,
        });
        let st = stop.clone();
        std::thread::Builder::new()
            .name("chunk-server".into())
            .spawn(move || accept(listener, shared, st))?;
        Ok(ChunkServer { addr, stop, stats })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ChunkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// The answer beyond the connection limit.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn accept(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = conn else {
            // EMFILE and the like: let the system breathe.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if shared.open.fetch_add(1, Ordering::AcqRel) >= shared.limits.connections {
            shared.open.fetch_sub(1, Ordering::AcqRel);
            shared
                .stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            // A short answer (the peer counts a miss, not a failure), then closed.
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(BUSY);
            continue;
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("chunk-conn".into())
            .stack_size(128 << 10)
            .spawn(move || {
                let peer = stream.peer_addr().ok();
                if let Err(e) = connection(stream, &sh) {
                    tracing::debug!("chunk server: {peer:?}: {e}");
                }
                sh.open.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            shared.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn respond(
    s: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

/// The chunk `id` read from the image and verified, or `None`.
fn verified_chunk(sh: &Shared, id: &ChunkId) -> Option<Vec<u8>> {
    if !sh.held.has(id) {
        return None;
    }
    let (off, size) = sh.held.place(id)?;
    let mut buf = vec![0u8; size as usize];
    sh.file.read_exact_at(&mut buf, off).ok()?;
    (ChunkId::of(&buf) == *id).then_some(buf)
}

/// One of [`UPLOAD_SLOTS`], given back on drop.
struct Slot<'a>(&'a Shared);

impl Slot<'_> {
    /// Take a slot (to be wrapped in a [`Slot`]); `false` when all are taken.
    fn take(sh: &Shared) -> bool {
        if sh.uploads.fetch_add(1, Ordering::AcqRel) >= UPLOAD_SLOTS {
            sh.uploads.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

fn connection(mut s: TcpStream, sh: &Shared) -> std::io::Result<()> {
    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = s.set_nodelay(true);
    let peer_ip = s.peer_addr().ok().map(|a| a.ip());
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        // The next request head: IDLE_TIMEOUT for its first byte, then
        // HEAD_TIMEOUT for the whole of it.
        let mut started: Option<Instant> = None;
        let (req, used) = loop {
            match parse_request(&buf[..filled]) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    let body = format!("400 Bad Request: {e}\n");
                    return respond(
                        &mut s,
                        "400 Bad Request",
                        "text/plain",
                        body.as_bytes(),
                        true,
                    );
                }
            }
            let left = match started {
                None => IDLE_TIMEOUT,
                Some(t) => HEAD_TIMEOUT.saturating_sub(t.elapsed()),
            };
            if left.is_zero() {
                return Ok(());
            }
            s.set_read_timeout(Some(left))?;
            let n = s.read(&mut buf[filled..])?;
            if n == 0 {
                return Ok(());
            }
            started.get_or_insert_with(Instant::now);
            filled += n;
        };
        buf.copy_within(used..filled, 0);
        filled -= used;
        let close = req.close;
        // An asker that serves this image says what it holds: news for
        // this node's own fetch.
        if let (Some(ip), Some(h), Some(Route::Have { image } | Route::Chunk { image, .. })) =
            (peer_ip, req.from, &req.route)
        {
            if *image == sh.image {
                sh.held.hear(SocketAddr::new(ip, h.port), h.have);
            }
        }
        if req.method != "GET" {
            respond(
                &mut s,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
                close,
            )?;
        } else {
            match req.route {
                Some(Route::Have { image }) if image == sh.image => {
                    let map = sh.held.bitmap();
                    respond(&mut s, "200 OK", "application/octet-stream", &map, close)?;
                }
                Some(Route::Chunk { image, id }) if image == sh.image => {
                    // A held chunk takes an upload slot (given back when
                    // this arm ends), or is answered 503.
                    let held = sh.held.has(&id);
                    let slot = (held && Slot::take(sh)).then(|| Slot(sh));
                    if held && slot.is_none() {
                        sh.stats.busy.fetch_add(1, Ordering::Relaxed);
                        respond(
                            &mut s,
                            "503 Service Unavailable",
                            "text/plain",
                            b"upload slots taken\n",
                            close,
                        )?;
                    } else {
                        match verified_chunk(sh, &id) {
                            Some(data) => {
                                // What else is held, for the asker's map
                                // (small images only: the header stays short).
                                let map = sh.held.bitmap();
                                let have = if map.len() <= super::MAX_HAVE_HEADER {
                                    format!("{}: {}\r\n", super::HAVE_HEADER, hex::encode(map))
                                } else {
                                    String::new()
                                };
                                let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{have}{}\r\n",
                                data.len(),
                                if close { "Connection: close\r\n" } else { "" }
                            );
                                s.write_all(head.as_bytes())?;
                                for part in data.chunks(16 << 10) {
                                    sh.bucket.take(part.len());
                                    s.write_all(part)?;
                                }
                                sh.stats.chunks.fetch_add(1, Ordering::Relaxed);
                                sh.stats
                                    .bytes
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            None => {
                                sh.stats.not_found.fetch_add(1, Ordering::Relaxed);
                                respond(
                                    &mut s,
                                    "404 Not Found",
                                    "text/plain",
                                    b"not held\n",
                                    close,
                                )?;
                            }
                        }
                    }
                }
                _ => respond(&mut s, "404 Not Found", "text/plain", b"not here\n", close)?,
            }
        }
        if close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeboot_chunks::{Chunk, Index};

    /// `data` cut into 1000-byte chunks.
    fn chunks_of(data: &[u8]) -> Vec<Chunk> {
        data.chunks(1000)
            .enumerate()
            .map(|(i, c)| Chunk {
                offset: i as u64 * 1000,
                size: c.len() as u32,
                id: ChunkId::of(c),
            })
            .collect()
    }

    fn serve(data: &[u8], rate: u64) -> (tempfile::TempDir, ChunkServer, Arc<Held>, Vec<Chunk>) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("img");
        std::fs::write(&f, data).unwrap();
        let chunks = chunks_of(data);
        let ix = Index::new(1, 1000, 1000, chunks.clone());
        let held = Arc::new(Held::new(&ix));
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let file = std::fs::File::open(&f).unwrap();
        let s = ChunkServer::start(
            l,
            IMG,
            file,
            held.clone(),
            Limits {
                connections: 2,
                rate,
            },
        )
        .unwrap();
        (d, s, held, chunks)
    }

    const IMG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..end]).to_string();
        (head, all[end + 4..].to_vec())
    }

    #[test]
    fn serves_only_what_it_verified() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (d, s, held, chunks) = serve(&data, 0);
        let a = s.local_addr();
        let p = super::super::chunk_path(IMG, &chunks[1].id);
        let (h, _) = get(a, &p);
        assert!(h.starts_with("HTTP/1.1 404"), "{h}");
        held.set(&chunks[1].id);
        let (h, body) = get(a, &p);
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(body, &data[1000..2000]);
        let (_, map) = get(a, &super::super::have_path(IMG));
        assert_eq!(map, vec![0b10]);
        // Damaged on disk since: not sent.
        let mut bad = data.clone();
        bad[1500] ^= 1;
        std::fs::write(d.path().join("img"), &bad).unwrap();
        let (h, _) = get(a, &p);
        assert!(h.starts_with("HTTP/1.1 404"), "{h}");
        // Another image: 404.
        let other = p.replace(IMG, &"f".repeat(64));
        assert!(get(a, &other).0.starts_with("HTTP/1.1 404"));
        // A bad head: 400 with the reason.
        let mut c = TcpStream::connect(a).unwrap();
        c.write_all(b"GET /x HTTP/9\r\n\r\n").unwrap();
        let mut t = String::new();
        c.read_to_string(&mut t).unwrap();
        assert!(t.contains("unsupported HTTP version"), "{t}");
    }

    #[test]
    fn uploads_beyond_the_slots_are_answered_busy() {
        let data: Vec<u8> = (0..8000u32).map(|i| (i * 13 % 251) as u8).collect();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("img");
        std::fs::write(&f, &data).unwrap();
        let chunks = chunks_of(&data);
        let held = Arc::new(Held::new(&Index::new(1, 1000, 1000, chunks.clone())));
        held.set_all();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // 500 B/s: every upload holds its slot for seconds.
        let limits = Limits {
            connections: 16,
            rate: 500,
        };
        let s = ChunkServer::start(l, IMG, std::fs::File::open(&f).unwrap(), held, limits).unwrap();
        let slow: Vec<TcpStream> = chunks[..UPLOAD_SLOTS]
            .iter()
            .map(|c| {
                let mut t = TcpStream::connect(s.local_addr()).unwrap();
                let p = super::super::chunk_path(IMG, &c.id);
                write!(t, "GET {p} HTTP/1.1\r\n\r\n").unwrap();
                t
            })
            .collect();
        // The first of them waits a second for its tokens, the others longer.
        std::thread::sleep(Duration::from_millis(300));
        let p = super::super::chunk_path(IMG, &chunks[UPLOAD_SLOTS].id);
        let (h, _) = get(s.local_addr(), &p);
        assert!(h.starts_with("HTTP/1.1 503"), "{h}");
        assert_eq!(s.stats.busy.load(Ordering::Relaxed), 1);
        // The have map is still answered.
        let (h, _) = get(s.local_addr(), &super::super::have_path(IMG));
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        drop(slow);
    }

    #[test]
    fn askers_that_serve_are_heard() {
        let data = vec![5u8; 3000];
        let (_d, s, held, _) = serve(&data, 0);
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        let p = super::super::have_path(IMG);
        write!(
            c,
            "GET {p} HTTP/1.1\r\nx-nodeboot-have: 05\r\nx-nodeboot-port: 7070\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut t = Vec::new();
        c.read_to_end(&mut t).unwrap();
        assert_eq!(
            held.heard(),
            vec![("127.0.0.1:7070".parse().unwrap(), vec![5])]
        );
        // Of another image: not heard.
        let other = p.replace(IMG, &"f".repeat(64));
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        write!(
            c,
            "GET {other} HTTP/1.1\r\nx-nodeboot-have: 05\r\nx-nodeboot-port: 7070\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        c.read_to_end(&mut t).unwrap();
        assert_eq!(held.heard(), vec![]);
    }

    #[test]
    fn upload_is_rate_limited() {
        let data = vec![7u8; 5000];
        let (_d, s, held, chunks) = serve(&data, 2000);
        held.set_all();
        let t = Instant::now();
        for c in &chunks[..4] {
            let (h, _) = get(s.local_addr(), &super::super::chunk_path(IMG, &c.id));
            assert!(h.starts_with("HTTP/1.1 200"));
        }
        // 4000 bytes at 2000 B/s with a 2000-byte bucket: at least ~1 s.
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    }
}
