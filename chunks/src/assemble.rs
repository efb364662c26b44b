//! Assemble an image from its index and whatever holds its chunks.
//!
//! Sources are asked in order for each chunk: seeds (local images the node
//! already has, with their indexes), chunk sources (peers, anything that
//! implements [`ChunkSource`]), then the origin stores (mirrors, in order).
//! Every chunk is checked against its id (SHA-256) and size on receipt; a
//! source that sends a wrong one is dropped for the rest of the fetch, and
//! one that fails [`Options::max_errors`] times in a row is dropped as
//! unreachable. The image's SHA-256 is checked at the end against the
//! digest the caller pinned; on a mismatch the output is removed.
//!
//! Memory: each of [`Options::parallel`] workers holds one chunk (at most
//! the index's `chunk_size_max`, itself bounded by
//! [`crate::index::MAX_CHUNK_SIZE`]).
use crate::index::{Index, MAX_INDEX_BYTES};
use crate::store::{chunk_path, decompress_bounded, Store};
use crate::ChunkId;
use anyhow::{anyhow, bail, Context, Result};
use nodeboot_common::retry::{Policy, Retry, Verdict};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Anything that can hand out chunks by id: a peer, a cache, a store.
/// What it returns is checked by the assembler; it need not be trusted.
pub trait ChunkSource: Send + Sync {
    /// How reports and log lines name it (a URL, a path, a peer address).
    fn name(&self) -> String;
    /// Whether to ask it for `id` at all (a seed knows; a peer may).
    fn has(&self, _id: &ChunkId) -> bool {
        true
    }
    /// The chunk's uncompressed bytes (`size` of them, as the index says).
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>>;
    /// Bytes it received over the wire so far, when it knows (compressed).
    fn wire_bytes(&self) -> Option<u64> {
        None
    }
}

/// A local image and its index: chunks are read from the file at the
/// offsets its own index gives (and verified like any other source's).
pub struct Seed {
    path: PathBuf,
    file: std::fs::File,
    at: HashMap<ChunkId, (u64, u32)>,
}

impl Seed {
    pub fn new(image: &Path, index: &Index) -> Result<Seed> {
        let file = std::fs::File::open(image)
            .with_context(|| format!("opening seed {}", image.display()))?;
        let at = index
            .chunks
            .iter()
            .map(|c| (c.id, (c.offset, c.size)))
            .collect();
        Ok(Seed {
            path: image.to_path_buf(),
            file,
            at,
        })
    }

    /// A seed from an image and the index beside it ([`crate::index_path_for`]).
    pub fn beside(image: &Path) -> Result<Seed> {
        Seed::open(image, &crate::index_path_for(image))
    }

    /// A seed from an image file and its index file.
    pub fn open(image: &Path, index_file: &Path) -> Result<Seed> {
        let b = read_bounded(index_file)?;
        let ix =
            Index::parse(&b).with_context(|| format!("seed index {}", index_file.display()))?;
        Seed::new(image, &ix)
    }
}

fn read_bounded(p: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut b = Vec::new();
    f.take(MAX_INDEX_BYTES as u64 + 1)
        .read_to_end(&mut b)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(b)
}

impl ChunkSource for Seed {
    fn name(&self) -> String {
        format!("seed {}", self.path.display())
    }
    fn has(&self, id: &ChunkId) -> bool {
        self.at.contains_key(id)
    }
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        let &(off, len) = self.at.get(id).ok_or_else(|| anyhow!("not in this seed"))?;
        if len != size {
            bail!("seed's index gives {len} bytes, the image's {size}");
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, off)
            .with_context(|| format!("reading {} at {off}", self.path.display()))?;
        Ok(buf)
    }
}

/// A local chunk store as a source (a mirror on a shared filesystem, tests).
impl ChunkSource for Store {
    fn name(&self) -> String {
        format!("store {}", self.dir().display())
    }
    fn has(&self, id: &ChunkId) -> bool {
        self.contains(id)
    }
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        let p = self.path(id);
        let z = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        decompress_bounded(&z, id, size)
    }
}

/// A chunk store over HTTP(S): `GET {base}/{4 hex}/{id}.cacnk`, on the
/// caller's agent (its TLS roots, timeouts and keep-alive pool), each
/// chunk retried with backoff on transient errors.
pub struct HttpStore {
    agent: ureq::Agent,
    base: String,
    retry: Policy,
    wire: AtomicU64,
}

impl HttpStore {
    /// `base`: the store's URL (`http://boot/images/store`), without the
    /// trailing slash or with it.
    pub fn new(agent: ureq::Agent, base: &str) -> HttpStore {
        HttpStore {
            agent,
            base: base.trim_end_matches('/').to_string(),
            retry: Policy::attempts(3, Duration::from_millis(200), Duration::from_secs(2)),
            wire: AtomicU64::new(0),
        }
    }

    /// Retry policy of each chunk (default: 3 attempts, 0.2 s then 0.4 s).
    pub fn with_retry(mut self, p: Policy) -> HttpStore {
        self.retry = p;
        self
    }

    pub fn url(&self, id: &ChunkId) -> String {
        format!("{}/{}", self.base, chunk_path(id))
    }

    fn once(&self, url: &str, limit: u64) -> std::result::Result<Vec<u8>, (Verdict, String)> {
        let r = self.agent.get(url).call();
        let mut resp = match r {
            Ok(r) if r.status().is_success() => r,
            // Either way an agent is configured (status codes as errors or
            // as responses).
            Ok(r) => return Err(status_failure(r.status().as_u16())),
            Err(ureq::Error::StatusCode(c)) => return Err(status_failure(c)),
            Err(e) => return Err((Verdict::Retry, e.to_string())),
        };
        let mut z = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(limit + 1)
            .read_to_end(&mut z)
            .map_err(|e| (Verdict::Retry, format!("reading the body: {e}")))?;
        self.wire.fetch_add(z.len() as u64, Ordering::Relaxed);
        if z.len() as u64 > limit {
            return Err((Verdict::Fatal, format!("body over {limit} bytes")));
        }
        Ok(z)
    }
}

/// 408, 429 and 5xx are worth retrying; other statuses are not.
fn status_failure(c: u16) -> (Verdict, String) {
    let v = if c == 408 || c == 429 || c >= 500 {
        Verdict::Retry
    } else {
        Verdict::Fatal
    };
    (v, format!("HTTP {c}"))
}

/// Most bytes a stored chunk of `size` may take (zstd's worst case on
/// incompressible data, with room).
fn stored_limit(size: u32) -> u64 {
    u64::from(size) + u64::from(size) / 64 + 4096
}

impl ChunkSource for HttpStore {
    fn name(&self) -> String {
        self.base.clone()
    }
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        let url = self.url(id);
        let limit = stored_limit(size);
        let z = Retry::new(self.retry)
            .run(
                &format!("GET {url}"),
                |_| self.once(&url, limit).map_err(|(v, m)| Verdict2(v, m)),
                |e| e.0,
            )
            .map_err(|f| anyhow!("GET {url}: {}", f.into_error().1))?;
        decompress_bounded(&z, id, size).with_context(|| format!("GET {url}"))
    }
    fn wire_bytes(&self) -> Option<u64> {
        Some(self.wire.load(Ordering::Relaxed))
    }
}

struct Verdict2(Verdict, String);
impl std::fmt::Display for Verdict2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

/// Where the chunks may come from, asked in this order.
#[derive(Default)]
pub struct Sources {
    pub seeds: Vec<Seed>,
    /// Peers and other chunk sources.
    pub peers: Vec<Box<dyn ChunkSource>>,
    /// Origin stores: mirrors in order of preference.
    pub origins: Vec<Box<dyn ChunkSource>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Seed,
    Peer,
    Origin,
}

/// Chooses the chunk a worker fetches next, and hears when one is written
/// (peer-assisted fetch: the rarest among the peers first; a chunk is
/// served to the peers once it is on disk).
pub trait Picker: Send + Sync {
    /// The place in `wanted` (never empty; the chunks not yet taken by a
    /// worker) of the chunk to fetch next. May wait a while for a better
    /// choice; an answer out of range is taken as the last.
    fn pick(&self, wanted: &[ChunkId]) -> usize;
    /// Chunk `id` is verified and written at every place of it.
    fn written(&self, _id: &ChunkId) {}
}

#[derive(Clone)]
pub struct Options {
    /// Chunks in flight at once.
    pub parallel: usize,
    /// Failures in a row after which a source is dropped as unreachable.
    pub max_errors: u32,
    /// Visit the chunks in a pseudo-random order from this seed instead
    /// of the image's: nodes fetching at once then want different chunks
    /// first, and their peers have them sooner (peer-assisted fetch).
    pub shuffle: Option<u64>,
    /// Let this choose the order instead (it sees what is left).
    pub picker: Option<std::sync::Arc<dyn Picker>>,
    /// Stop (with [`DeadlineReached`]) once this passes: no chunk is asked
    /// for after it (those in flight finish or fail first).
    pub deadline: Option<Instant>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("parallel", &self.parallel)
            .field("max_errors", &self.max_errors)
            .field("shuffle", &self.shuffle)
            .field("picker", &self.picker.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            parallel: 4,
            max_errors: 3,
            shuffle: None,
            picker: None,
            deadline: None,
        }
    }
}

/// The assembly ran out of time ([`Options::deadline`]); how far it got.
/// Callers may downcast to it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("deadline reached after {seconds:.0}s with {done} of {total} chunks assembled")]
pub struct DeadlineReached {
    pub seconds: f64,
    /// Distinct chunks written, and in the index.
    pub done: u64,
    pub total: u64,
}

/// What one source gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceReport {
    pub name: String,
    pub kind: Kind,
    /// Verified chunks it gave, and their uncompressed bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// Compressed bytes received, when the source counts them.
    pub wire_bytes: Option<u64>,
    /// Failed requests (not found, unreachable, …).
    pub errors: u64,
    /// Chunks that failed verification (the source lied or is damaged).
    pub bad_chunks: u64,
    /// Why it was dropped, if it was.
    pub dropped: Option<String>,
}

/// What [`assemble`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub image_bytes: u64,
    /// Chunks in the index, and distinct ones (each fetched once).
    pub chunks: u64,
    pub unique_chunks: u64,
    pub seconds: f64,
    pub sources: Vec<SourceReport>,
}

impl Report {
    /// Totals over the sources of one kind: (chunks, bytes, wire bytes).
    pub fn totals(&self, kind: Kind) -> (u64, u64, u64) {
        self.sources
            .iter()
            .filter(|s| s.kind == kind)
            .fold((0, 0, 0), |(c, b, w), s| {
                (c + s.chunks, b + s.bytes, w + s.wire_bytes.unwrap_or(0))
            })
    }
}

struct Slot {
    src: Box<dyn ChunkSource>,
    kind: Kind,
    st: Mutex<SourceReport>,
    in_a_row: AtomicU64,
    dropped: AtomicBool,
}

/// The assembled image is not the one pinned (every chunk matched the index:
/// the index describes another image). Callers may downcast to it.
#[derive(Debug, thiserror::Error)]
#[error("assembled image {} has sha256 {actual}, but {expected} is pinned: the index does not describe this image", path.display())]
pub struct ImageMismatch {
    pub path: PathBuf,
    pub actual: String,
    pub expected: String,
}

/// Build `out` from `index` (the caller checked the index's own digest),
/// chunk by chunk from `sources`, and check the result against
/// `image_sha256` (hex). On any error the output is removed.
pub fn assemble(
    index: &Index,
    image_sha256: &str,
    out: &Path,
    sources: Sources,
    opts: &Options,
) -> Result<Report> {
    let r = assemble_inner(index, image_sha256, out, sources, opts);
    if r.is_err() {
        let _ = std::fs::remove_file(out);
    }
    r
}

fn assemble_inner(
    index: &Index,
    image_sha256: &str,
    out: &Path,
    sources: Sources,
    opts: &Options,
) -> Result<Report> {
    let start = Instant::now();
    let mut slots = Vec::new();
    let mut add = |src: Box<dyn ChunkSource>, kind| {
        slots.push(Slot {
            st: Mutex::new(SourceReport {
                name: src.name(),
                kind,
                chunks: 0,
                bytes: 0,
                wire_bytes: None,
                errors: 0,
                bad_chunks: 0,
                dropped: None,
            }),
            src,
            kind,
            in_a_row: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
        })
    };
    for s in sources.seeds {
        add(Box::new(s), Kind::Seed);
    }
    for s in sources.peers {
        add(s, Kind::Peer);
    }
    for s in sources.origins {
        add(s, Kind::Origin);
    }
    if slots.is_empty() {
        bail!("no chunk source: give an origin store URL");
    }

    // Each distinct chunk once, with every place it goes.
    let mut places: HashMap<ChunkId, usize> = HashMap::new();
    let mut unique: Vec<(ChunkId, u32, Vec<u64>)> = Vec::new();
    for c in &index.chunks {
        match places.get(&c.id) {
            Some(&k) => unique[k].2.push(c.offset),
            None => {
                places.insert(c.id, unique.len());
                unique.push((c.id, c.size, vec![c.offset]));
            }
        }
    }

    if let Some(mut x) = opts.shuffle {
        // Fisher-Yates over xorshift64 (a seed of 0 would stay 0).
        x |= 1;
        for i in (1..unique.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            unique.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }

    // Not through a symbolic link planted where the output goes.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.set_len(index.total_size())
        .with_context(|| format!("sizing {}", out.display()))?;

    let next = AtomicUsize::new(0);
    // With a picker: the chunks no worker took yet (places in `unique`).
    let wanted: Mutex<Vec<usize>> = Mutex::new((0..unique.len()).collect());
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = opts.parallel.clamp(1, 64).min(unique.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                        stop.store(true, Ordering::Relaxed);
                        first_err.lock().unwrap().get_or_insert(
                            DeadlineReached {
                                seconds: start.elapsed().as_secs_f64(),
                                done: done.load(Ordering::Relaxed),
                                total: unique.len() as u64,
                            }
                            .into(),
                        );
                        break;
                    }
                    let k = match &opts.picker {
                        None => next.fetch_add(1, Ordering::Relaxed),
                        Some(p) => {
                            let mut w = wanted.lock().unwrap_or_else(|e| e.into_inner());
                            if w.is_empty() {
                                break;
                            }
                            let ids: Vec<ChunkId> = w.iter().map(|&k| unique[k].0).collect();
                            let i = p.pick(&ids).min(w.len() - 1);
                            w.swap_remove(i)
                        }
                    };
                    let Some((id, size, offs)) = unique.get(k) else {
                        break;
                    };
                    let r = fetch_one(&slots, id, *size, opts).and_then(|data| {
                        for &o in offs {
                            file.write_all_at(&data, o)
                                .with_context(|| format!("writing {} at {o}", out.display()))?;
                        }
                        if let Some(p) = &opts.picker {
                            p.written(id);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    });
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        // A chunk cut short by the deadline (a source that
                        // gives up then) is the deadline's error.
                        let e = if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::debug!("chunk {id} at the deadline: {e:#}");
                            DeadlineReached {
                                seconds: start.elapsed().as_secs_f64(),
                                done: done.load(Ordering::Relaxed),
                                total: unique.len() as u64,
                            }
                            .into()
                        } else {
                            e
                        };
                        first_err.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap() {
        return Err(e);
    }
    drop(file);

    let got = sha256_file(out)?;
    if !got.eq_ignore_ascii_case(image_sha256) {
        return Err(ImageMismatch {
            path: out.to_path_buf(),
            actual: got,
            expected: image_sha256.to_string(),
        }
        .into());
    }
    let sources = slots
        .into_iter()
        .map(|s| {
            let mut r = s.st.into_inner().unwrap();
            r.wire_bytes = s.src.wire_bytes();
            r
        })
        .collect();
    Ok(Report {
        image_bytes: index.total_size(),
        chunks: index.chunks.len() as u64,
        unique_chunks: unique.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
        sources,
    })
}

/// The chunk from the first source that has it and gives the right bytes.
fn fetch_one(slots: &[Slot], id: &ChunkId, size: u32, opts: &Options) -> Result<Vec<u8>> {
    let mut tried = Vec::new();
    for s in slots {
        if s.dropped.load(Ordering::Relaxed) || !s.src.has(id) {
            continue;
        }
        match s.src.get(id, size) {
            Ok(data) => {
                if data.len() == size as usize && ChunkId::of(&data) == *id {
                    s.in_a_row.store(0, Ordering::Relaxed);
                    let mut st = s.st.lock().unwrap();
                    st.chunks += 1;
                    st.bytes += u64::from(size);
                    return Ok(data);
                }
                let why = format!(
                    "sent a wrong chunk for {id} ({} bytes hashing to {})",
                    data.len(),
                    ChunkId::of(&data)
                );
                tracing::warn!("dropping {}: it {why}", s.src.name());
                s.dropped.store(true, Ordering::Relaxed);
                let mut st = s.st.lock().unwrap();
                st.bad_chunks += 1;
                st.dropped.get_or_insert(why.clone());
                tried.push(format!("{}: {why}", s.src.name()));
            }
            Err(e) => {
                let n = s.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                let mut st = s.st.lock().unwrap();
                st.errors += 1;
                if n >= u64::from(opts.max_errors) && s.kind != Kind::Seed {
                    s.dropped.store(true, Ordering::Relaxed);
                    let why = format!("{n} failures in a row, the last: {e:#}");
                    tracing::warn!("dropping {}: {why}", s.src.name());
                    st.dropped.get_or_insert(why);
                }
                tracing::debug!("chunk {id} from {}: {e:#}", s.src.name());
                tried.push(format!("{}: {e:#}", s.src.name()));
            }
        }
    }
    if tried.is_empty() {
        let dropped: Vec<String> = slots
            .iter()
            .filter(|s| s.dropped.load(Ordering::Relaxed))
            .map(|s| s.src.name())
            .collect();
        if dropped.is_empty() {
            bail!("chunk {id} ({size} bytes): no source has it");
        }
        bail!(
            "chunk {id} ({size} bytes): no source has it (dropped: {})",
            dropped.join(", ")
        );
    }
    bail!(
        "chunk {id} ({size} bytes): no source gave it: {}",
        tried.join("; ")
    )
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Fetch an index over HTTP(S) (at most [`MAX_INDEX_BYTES`]), check its
/// SHA-256 against the pinned `sha256` (hex), and parse it.
pub fn fetch_index(agent: &ureq::Agent, url: &str, sha256: &str, retry: Policy) -> Result<Index> {
    let b = fetch_index_bytes(agent, url, retry)?;
    index_checked(&b, sha256).with_context(|| format!("index {url}"))
}

/// An index file's bytes over HTTP(S), at most [`MAX_INDEX_BYTES`] + 1 (so
/// that an oversized one is refused by the parser), with retries; neither
/// checked nor parsed.
pub fn fetch_index_bytes(agent: &ureq::Agent, url: &str, retry: Policy) -> Result<Vec<u8>> {
    Retry::new(retry)
        .run(
            &format!("GET {url}"),
            |_| -> std::result::Result<Vec<u8>, Verdict2> {
                let mut resp = match agent.get(url).call() {
                    Ok(r) if r.status().is_success() => r,
                    Ok(r) => {
                        let (v, m) = status_failure(r.status().as_u16());
                        return Err(Verdict2(v, m));
                    }
                    Err(ureq::Error::StatusCode(c)) => {
                        let (v, m) = status_failure(c);
                        return Err(Verdict2(v, m));
                    }
                    Err(e) => return Err(Verdict2(Verdict::Retry, e.to_string())),
                };
                let mut b = Vec::new();
                resp.body_mut()
                    .as_reader()
                    .take(MAX_INDEX_BYTES as u64 + 1)
                    .read_to_end(&mut b)
                    .map_err(|e| Verdict2(Verdict::Retry, format!("reading the body: {e}")))?;
                Ok(b)
            },
            |e| e.0,
        )
        .map_err(|f| anyhow!("fetching the index {url}: {}", f.into_error().1))
}

/// Check an index file's bytes against the pinned digest, then parse them.
pub fn index_checked(b: &[u8], sha256: &str) -> Result<Index> {
    if b.len() > MAX_INDEX_BYTES {
        bail!("over {MAX_INDEX_BYTES} bytes");
    }
    let got = crate::sha256_hex(b);
    if !got.eq_ignore_ascii_case(sha256) {
        bail!("sha256 mismatch: it hashes to {got}, the command line pins {sha256}");
    }
    Ok(Index::parse(b)?)
}
