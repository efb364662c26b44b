//! The chunked path (issue 16): with `nodeboot.index=URL` (and its digest
//! pinned by `nodeboot.index.sha256=`) the image is assembled from the
//! chunks of a casync blob index: chunks the node already has (seeds: a
//! local image and its index) are read locally, the rest fetched from the
//! chunk stores (`nodeboot.store=`, mirrors in order; default `store/`
//! beside the index), a few at a time over keep-alive. Every chunk is
//! checked against its SHA-256 in the index, the index against its pinned
//! digest, the whole image against `nodeboot.sha256=`.
use super::{agent, part_path, FetchError, FetchOptions};
use nodeboot_chunks::assemble::{
    self, DeadlineReached, HttpStore, ImageMismatch, Report, Seed, Sources,
};
use nodeboot_common::retry::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ChunkedOptions {
    pub index_url: String,
    /// Pinned digest of the index file (hex).
    pub index_sha256: String,
    /// Pinned digest of the image (hex).
    pub image_sha256: String,
    /// Chunk store URLs in order; empty: `store` beside the index.
    pub stores: Vec<String>,
    /// Local images whose chunks may be reused (each with its `.caibx`
    /// beside it); one that cannot be read is skipped with a warning.
    pub seeds: Vec<PathBuf>,
    /// Chunks in flight.
    pub parallel: usize,
    /// TLS roots, stall timeout, and the deadline of the whole fetch (the
    /// plain fetch's options): no chunk is asked for after it, and the
    /// peers' waits end then.
    pub http: FetchOptions,
    /// Peer-assisted: chunks from peers first ([`crate::peer`]).
    pub peers: Option<PeerOptions>,
}

/// Where peers come from, and whether this node serves its chunks.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// bootd's base URL (`GET /peers`, and `POST /peers` when serving).
    pub bootd: Option<String>,
    /// Peers known from the start.
    pub peers: Vec<std::net::SocketAddr>,
    /// Serve the chunks verified so far on this address.
    pub serve: Option<std::net::SocketAddr>,
    pub limits: crate::peer::server::Limits,
}

/// A node serving the chunks it fetched; stops (and stops renewing its
/// claim) when dropped.
pub struct Serving {
    pub server: crate::peer::server::ChunkServer,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the chunked fetch did (in boot.json under `chunked`).
#[derive(Debug, Clone, Serialize)]
pub struct ChunkedReport {
    pub index_url: String,
    pub index_bytes: u64,
    pub stores: Vec<String>,
    /// Compressed chunk bytes received from the stores.
    pub fetched_bytes: u64,
    /// Chunks fetched from the stores, and read from seeds.
    pub fetched_chunks: u64,
    pub seed_chunks: u64,
    pub seconds: f64,
    pub assembly: Report,
    /// What the peers (and the origin through the swarm) gave, when peers
    /// were asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<crate::peer::swarm::SwarmReport>,
    /// Where this node served its chunks, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
}

/// `store` beside the index: `http://b/x/live.caibx` → `http://b/x/store`.
pub fn default_store(index_url: &str) -> String {
    let path = index_url.split(['?', '#']).next().unwrap_or(index_url);
    let after_scheme = path.find("://").map_or(0, |i| i + 3);
    match path[after_scheme..].rfind('/') {
        Some(i) => format!("{}/store", &path[..after_scheme + i]),
        None => format!("{path}/store"),
    }
}

/// Assemble the image at `dest` (written as `dest.part`, renamed once its
/// digest matched).
pub fn fetch_chunked(dest: &Path, o: &ChunkedOptions) -> Result<ChunkedReport, FetchError> {
    fetch_chunked_serving(dest, o).map(|(r, _)| r)
}

/// [`fetch_chunked`], and the chunk server when `o.peers` asked for one
/// (it serves the image at `dest` until dropped).
pub fn fetch_chunked_serving(
    dest: &Path,
    o: &ChunkedOptions,
) -> Result<(ChunkedReport, Option<Serving>), FetchError> {
    let start = Instant::now();
    let deadline = start + o.http.deadline;
    let agent = agent(&o.http)?;
    let retry = Policy::attempts(5, Duration::from_millis(500), Duration::from_secs(5));
    let other = |e: anyhow::Error| FetchError::Other(format!("{e:#}"));
    // The first request to the origin: retried (an unreachable host, a
    // refused connection: a rack powering on at once) until the deadline.
    let first = Policy::deadline(
        o.http.deadline,
        Duration::from_millis(500),
        Duration::from_secs(5),
    );
    let bytes = assemble::fetch_index_bytes(&agent, &o.index_url, first).map_err(other)?;
    let got = nodeboot_chunks::sha256_hex(&bytes);
    if !got.eq_ignore_ascii_case(&o.index_sha256) {
        return Err(FetchError::DigestMismatch {
            url: o.index_url.clone(),
            expected: o.index_sha256.clone(),
            actual: got,
        });
    }
    let index = nodeboot_chunks::Index::parse(&bytes)
        .map_err(|e| FetchError::Other(format!("{}: {e}", o.index_url)))?;
    let stores = if o.stores.is_empty() {
        vec![default_store(&o.index_url)]
    } else {
        o.stores.clone()
    };
    tracing::info!(
        "chunked fetch: {} chunks, {} bytes, from {}",
        index.chunks.len(),
        index.total_size(),
        stores.join(", ")
    );
    let mut sources = Sources::default();
    for s in &o.seeds {
        match Seed::beside(s) {
            Ok(seed) => sources.seeds.push(seed),
            Err(e) => tracing::warn!("seed {} skipped: {e:#}", s.display()),
        }
    }
    for s in &stores {
        sources
            .origins
            .push(Box::new(HttpStore::new(agent.clone(), s).with_retry(retry)));
    }
    let part = part_path(dest);
    let mut opts = assemble::Options {
        parallel: o.parallel.max(1),
        deadline: Some(deadline),
        ..Default::default()
    };
    let mut swarm = None;
    let mut serving = None;
    let held = std::sync::Arc::new(crate::peer::Held::new(&index));
    if let Some(p) = &o.peers {
        let image = o.image_sha256.to_ascii_lowercase();
        if let Some(addr) = p.serve {
            serving = Some(serve(&part, addr, &image, held.clone(), p).map_err(other)?);
        }
        let (sw, handle) = crate::peer::swarm::Swarm::new(crate::peer::swarm::Config {
            image,
            bootd: p.bootd.clone(),
            peers: p.peers.clone(),
            own_port: serving.as_ref().map(|s| s.server.local_addr().port()),
            origin: Box::new(HttpStore::new(agent.clone(), &stores[0]).with_retry(retry)),
            held: held.clone(),
        });
        // Peers first (the swarm takes from the origin what no peer has);
        // the stores stay behind it, as the fallback.
        sources.peers.push(Box::new(sw));
        // The swarm chooses the order: the rarest among the peers first,
        // a random one from the origin when no peer holds any.
        opts.picker = Some(handle.picker());
        swarm = Some(handle);
        opts.shuffle = Some(random_seed());
    }
    let result = std::thread::scope(|s| {
        // At the deadline the swarm stops waiting for peers (its pending
        // requests fail), so the workers see the deadline soon after.
        let (done, watch) = std::sync::mpsc::channel::<()>();
        if let Some(h) = &swarm {
            s.spawn(move || {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(left) {
                    h.finish();
                }
            });
        }
        let r = assemble::assemble(&index, &o.image_sha256, &part, sources, &opts);
        drop(done);
        r
    });
    let peers = swarm.map(|h| h.finish());
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(if let Some(m) = e.downcast_ref::<ImageMismatch>() {
                FetchError::DigestMismatch {
                    url: o.index_url.clone(),
                    expected: m.expected.clone(),
                    actual: m.actual.clone(),
                }
            } else if let Some(d) = e.downcast_ref::<DeadlineReached>() {
                FetchError::ChunkedDeadline {
                    url: o.index_url.clone(),
                    limit: o.http.deadline.as_secs_f64(),
                    done: d.done,
                    total: d.total,
                }
            } else {
                FetchError::Other(format!("assembling the image from {}: {e:#}", o.index_url))
            });
        }
    };
    std::fs::rename(&part, dest).map_err(|error| FetchError::Io {
        what: "renaming to",
        path: dest.to_path_buf(),
        error,
    })?;
    // The index, verified against its pinned digest, beside the image: what
    // the cache keeps with it (a seed for the next image) and what
    // `nodectl serve-chunks` serves peers from.
    let index_file = nodeboot_chunks::index_path_for(dest);
    std::fs::write(&index_file, &bytes).map_err(|error| FetchError::Io {
        what: "writing",
        path: index_file,
        error,
    })?;
    // The whole image is verified: every chunk of it may be served.
    held.set_all();
    let (fetched_chunks, _, fetched_bytes) = report.totals(assemble::Kind::Origin);
    let (seed_chunks, _, _) = report.totals(assemble::Kind::Seed);
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        "chunked fetch: {} bytes assembled in {seconds:.1}s: {fetched_chunks} chunks ({fetched_bytes} bytes) fetched, {seed_chunks} from seeds",
        report.image_bytes
    );
    Ok((
        ChunkedReport {
            index_url: o.index_url.clone(),
            index_bytes: bytes.len() as u64,
            stores,
            fetched_bytes,
            fetched_chunks,
            seed_chunks,
            seconds,
            assembly: report,
            peers,
            serving: serving.as_ref().map(|s| s.server.local_addr().to_string()),
        },
        serving,
    ))
}

/// Start the chunk server on `addr` for the image being assembled at
/// `part`: the file is made empty here and read through this descriptor,
/// which the assembler's truncating open and the final rename keep (same
/// inode); claim the image with bootd.
fn serve(
    part: &Path,
    addr: std::net::SocketAddr,
    image: &str,
    held: std::sync::Arc<crate::peer::Held>,
    p: &PeerOptions,
) -> anyhow::Result<Serving> {
    use anyhow::Context;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(part)
        .with_context(|| format!("creating {}", part.display()))?;
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    let server = crate::peer::server::ChunkServer::start(l, image, file, held, p.limits)
        .context("starting the chunk server")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(b) = &p.bootd {
        crate::peer::swarm::announce(b, image, server.local_addr().port(), stop.clone());
    }
    tracing::info!(
        "chunked fetch: serving verified chunks to peers on {}",
        server.local_addr()
    );
    Ok(Serving { server, stop })
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut seed);
    }
    u64::from_le_bytes(seed) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_beside_the_index() {
        for (i, s) in [
            ("http://b/x/live.caibx", "http://b/x/store"),
            ("http://b:8080/live.caibx", "http://b:8080/store"),
            (
                "https://s3/bkt/v2.caibx?X-Amz-Signature=ab/cd",
                "https://s3/bkt/store",
            ),
            ("http://b", "http://b/store"),
        ] {
            assert_eq!(default_store(i), s, "{i}");
        }
    }
}
