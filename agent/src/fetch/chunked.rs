//! The chunked path (issue 16): with `nodeboot.index=URL` (and its digest
//! pinned by `nodeboot.index.sha256=`) the image is assembled from the
//! chunks of a casync blob index: chunks the node already has (seeds: a
//! local image and its index) are read locally, the rest fetched from the
//! chunk stores (`nodeboot.store=`, mirrors in order; default `store/`
//! beside the index), a few at a time over keep-alive. Every chunk is
//! checked against its SHA-256 in the index, the index against its pinned
//! digest, the whole image against `nodeboot.sha256=`.
use super::{agent, part_path, FetchError, FetchOptions};
use nodeboot_chunks::assemble::{self, HttpStore, ImageMismatch, Report, Seed, Sources};
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
    /// TLS roots, stall timeout (the plain fetch's options).
    pub http: FetchOptions,
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
    let start = Instant::now();
    let agent = agent(&o.http)?;
    let retry = Policy::attempts(5, Duration::from_millis(500), Duration::from_secs(5));
    let other = |e: anyhow::Error| FetchError::Other(format!("{e:#}"));
    let bytes = assemble::fetch_index_bytes(&agent, &o.index_url, retry).map_err(other)?;
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
    let opts = assemble::Options {
        parallel: o.parallel.max(1),
        ..Default::default()
    };
    let report = match assemble::assemble(&index, &o.image_sha256, &part, sources, &opts) {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.downcast_ref::<ImageMismatch>() {
                Some(m) => FetchError::DigestMismatch {
                    url: o.index_url.clone(),
                    expected: m.expected.clone(),
                    actual: m.actual.clone(),
                },
                None => {
                    FetchError::Other(format!("assembling the image from {}: {e:#}", o.index_url))
                }
            })
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
    let (fetched_chunks, _, fetched_bytes) = report.totals(assemble::Kind::Origin);
    let (seed_chunks, _, _) = report.totals(assemble::Kind::Seed);
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        "chunked fetch: {} bytes assembled in {seconds:.1}s: {fetched_chunks} chunks ({fetched_bytes} bytes) fetched, {seed_chunks} from seeds",
        report.image_bytes
    );
    Ok(ChunkedReport {
        index_url: o.index_url.clone(),
        index_bytes: bytes.len() as u64,
        stores,
        fetched_bytes,
        fetched_chunks,
        seed_chunks,
        seconds,
        assembly: report,
    })
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
