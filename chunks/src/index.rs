//! casync's blob index (`.caibx`), written and read here (no casync code).
//!
//! All integers little-endian:
//! ```text
//! header  size=48  type=INDEX  feature_flags  chunk_size_min  _avg  _max
//! table   size=u64::MAX  type=TABLE
//!         n × { end offset of the chunk in the blob (u64), chunk id [32] }
//! tail    0  0  index_offset=48  table_size=16+40n+40  marker=TABLE_TAIL
//! ```
//! Chunk ids are SHA-256 of the uncompressed chunk (the feature flag
//! `SHA512_256` would select SHA-512/256; we refuse it). The parser is
//! bounded ([`MAX_INDEX_BYTES`], [`MAX_CHUNKS`], [`MAX_CHUNK_SIZE`]), checks
//! every field (offsets strictly increasing, each chunk no larger than the
//! index's maximum, the tail consistent), never panics, and what it accepts
//! it writes back byte for byte.
use crate::ChunkId;
use thiserror::Error;

const INDEX: u64 = 0x9682_4d9c_7b12_9ff9;
const TABLE: u64 = 0xe75b_9e11_2f17_417d;
const TABLE_TAIL_MARKER: u64 = 0x4b4f_050e_5549_ecd1;
/// Feature flag: chunk ids are SHA-512/256 instead of SHA-256.
pub const FLAG_SHA512_256: u64 = 0x2000_0000_0000_0000;
/// The flags casync writes into a blob index of its own (exclude nodump,
/// exclude submounts: meaningless for a blob, kept for the same bytes).
pub const BLOB_FLAGS: u64 = 0x9000_0000_0000_0000;

const HEADER: usize = 48;
const TABLE_HEADER: usize = 16;
const ITEM: usize = 40;
const TAIL: usize = 40;
/// The smallest index: header, table header and tail, no chunk.
pub const MIN_INDEX_BYTES: usize = HEADER + TABLE_HEADER + TAIL;
/// Most chunks an index may list (at 64 KiB on average, a 64 GiB image).
pub const MAX_CHUNKS: usize = 1 << 20;
/// Largest index accepted: [`MAX_CHUNKS`] items (40 MiB).
pub const MAX_INDEX_BYTES: usize = MIN_INDEX_BYTES + MAX_CHUNKS * ITEM;
/// Largest chunk (and `chunk_size_max`) accepted: a fetch holds a few
/// chunks in memory at once.
pub const MAX_CHUNK_SIZE: u64 = 4 << 20;

/// One chunk of the blob: where it starts, its size, its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub size: u32,
    pub id: ChunkId,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }
}

/// A parsed blob index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub flags: u64,
    pub min: u64,
    pub avg: u64,
    pub max: u64,
    pub chunks: Vec<Chunk>,
}

/// Why bytes are not an index we accept; the message names the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("index truncated: {0} bytes, a casync blob index has at least {MIN_INDEX_BYTES}")]
    Truncated(usize),
    #[error("index is {0} bytes, over the limit of {MAX_INDEX_BYTES} ({MAX_CHUNKS} chunks)")]
    TooLarge(usize),
    #[error(
        "not a casync index: bad magic {0:#018x} in the header (want size 48, type {INDEX:#018x})"
    )]
    BadMagic(u64),
    #[error("index table damaged: {0}")]
    BadTable(String),
    #[error("index length {0} is not header + table + 40-byte items + tail")]
    BadLength(usize),
    #[error("index uses SHA-512/256 chunk ids; nodeboot reads SHA-256 only (casync make --digest=sha256)")]
    Sha512,
    #[error("index chunk sizes min {min} avg {avg} max {max}: need 1 <= min <= avg <= max <= {MAX_CHUNK_SIZE}")]
    BadSizes { min: u64, avg: u64, max: u64 },
    #[error(
        "index chunk {n} ends at {end}, not after the previous end {prev}: offsets must increase"
    )]
    NotMonotonic { n: usize, end: u64, prev: u64 },
    #[error("index chunk {n} is {size} bytes, over the index's chunk_size_max {max}")]
    Oversize { n: usize, size: u64, max: u64 },
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Index {
    /// An index of `chunks` (in blob order, contiguous from 0).
    pub fn new(min: u64, avg: u64, max: u64, chunks: Vec<Chunk>) -> Index {
        Index {
            flags: BLOB_FLAGS,
            min,
            avg,
            max,
            chunks,
        }
    }

    /// The blob's size: the end of the last chunk.
    pub fn total_size(&self) -> u64 {
        self.chunks.last().map_or(0, Chunk::end)
    }

    /// Parse and check an index file's bytes.
    pub fn parse(b: &[u8]) -> Result<Index, IndexError> {
        if b.len() > MAX_INDEX_BYTES {
            return Err(IndexError::TooLarge(b.len()));
        }
        if b.len() < HEADER {
            return Err(IndexError::Truncated(b.len()));
        }
        if u64_at(b, 0) != HEADER as u64 || u64_at(b, 8) != INDEX {
            return Err(IndexError::BadMagic(u64_at(b, 8)));
        }
        if b.len() < MIN_INDEX_BYTES {
            return Err(IndexError::Truncated(b.len()));
        }
        let (flags, min, avg, max) = (u64_at(b, 16), u64_at(b, 24), u64_at(b, 32), u64_at(b, 40));
        if flags & FLAG_SHA512_256 != 0 {
            return Err(IndexError::Sha512);
        }
        if !(1 <= min && min <= avg && avg <= max && max <= MAX_CHUNK_SIZE) {
            return Err(IndexError::BadSizes { min, avg, max });
        }
        if u64_at(b, HEADER) != u64::MAX || u64_at(b, HEADER + 8) != TABLE {
            return Err(IndexError::BadTable(format!(
                "table header at byte {HEADER} is not size {:#x} type {TABLE:#018x}",
                u64::MAX
            )));
        }
        let items = b.len() - MIN_INDEX_BYTES;
        if !items.is_multiple_of(ITEM) {
            return Err(IndexError::BadLength(b.len()));
        }
        let n = items / ITEM;
        let tail = b.len() - TAIL;
        let want_table = (TABLE_HEADER + n * ITEM + TAIL) as u64;
        if u64_at(b, tail) != 0
            || u64_at(b, tail + 8) != 0
            || u64_at(b, tail + 16) != HEADER as u64
            || u64_at(b, tail + 24) != want_table
            || u64_at(b, tail + 32) != TABLE_TAIL_MARKER
        {
            return Err(IndexError::BadTable(format!(
                "tail is not 0, 0, offset {HEADER}, table size {want_table}, marker {TABLE_TAIL_MARKER:#018x}"
            )));
        }
        let mut chunks = Vec::with_capacity(n);
        let mut prev = 0u64;
        for i in 0..n {
            let at = HEADER + TABLE_HEADER + i * ITEM;
            let end = u64_at(b, at);
            if end <= prev {
                return Err(IndexError::NotMonotonic { n: i, end, prev });
            }
            let size = end - prev;
            if size > max {
                return Err(IndexError::Oversize { n: i, size, max });
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&b[at + 8..at + ITEM]);
            chunks.push(Chunk {
                offset: prev,
                // size <= max <= MAX_CHUNK_SIZE fits u32.
                size: size as u32,
                id: ChunkId(id),
            });
            prev = end;
        }
        Ok(Index {
            flags,
            min,
            avg,
            max,
            chunks,
        })
    }

    /// The index file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.chunks.len();
        let mut b = Vec::with_capacity(MIN_INDEX_BYTES + n * ITEM);
        for v in [
            HEADER as u64,
            INDEX,
            self.flags,
            self.min,
            self.avg,
            self.max,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&TABLE.to_le_bytes());
        for c in &self.chunks {
            b.extend_from_slice(&c.end().to_le_bytes());
            b.extend_from_slice(&c.id.0);
        }
        let table = (TABLE_HEADER + n * ITEM + TAIL) as u64;
        for v in [0, 0, HEADER as u64, table, TABLE_TAIL_MARKER] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        let mut chunks = Vec::new();
        let mut off = 0;
        for (i, size) in [100u32, 70_000, 5].into_iter().enumerate() {
            chunks.push(Chunk {
                offset: off,
                size,
                id: ChunkId([i as u8; 32]),
            });
            off += u64::from(size);
        }
        Index::new(16 << 10, 64 << 10, 256 << 10, chunks)
    }

    fn set_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn round_trip() {
        let ix = sample();
        let b = ix.to_bytes();
        assert_eq!(b.len(), MIN_INDEX_BYTES + 3 * ITEM);
        let back = Index::parse(&b).unwrap();
        assert_eq!(back, ix);
        assert_eq!(back.total_size(), 70_105);
        assert_eq!(back.chunks[1].offset, 100);
        assert_eq!(back.to_bytes(), b);
    }

    #[test]
    fn empty_index_is_an_empty_blob() {
        let ix = Index::new(1, 1, 1, vec![]);
        let back = Index::parse(&ix.to_bytes()).unwrap();
        assert_eq!(back.total_size(), 0);
    }

    #[test]
    fn errors_an_operator_reads() {
        let good = sample().to_bytes();
        let msg = |b: &[u8]| Index::parse(b).unwrap_err().to_string();

        assert_eq!(
            msg(&good[..50]),
            "index truncated: 50 bytes, a casync blob index has at least 104"
        );
        assert_eq!(
            msg(&good[..good.len() - 1]),
            format!(
                "index length {} is not header + table + 40-byte items + tail",
                good.len() - 1
            )
        );
        let mut b = good.clone();
        b[8] ^= 1;
        assert!(
            msg(&b).starts_with("not a casync index: bad magic"),
            "{}",
            msg(&b)
        );
        assert!(
            msg(b"<html>404</html> and some more text to reach 48 bytes...")
                .starts_with("not a casync index")
        );

        // The second chunk ends before the first.
        let mut b = good.clone();
        set_u64(&mut b, HEADER + TABLE_HEADER + ITEM, 50);
        assert_eq!(
            msg(&b),
            "index chunk 1 ends at 50, not after the previous end 100: offsets must increase"
        );
        // A zero-size chunk is not monotonic either.
        let mut b = good.clone();
        set_u64(&mut b, HEADER + TABLE_HEADER + ITEM, 100);
        assert!(msg(&b).contains("offsets must increase"));

        // Over the index's own maximum.
        let mut b = good.clone();
        set_u64(&mut b, 40, 65_536);
        set_u64(&mut b, 32, 65_536);
        assert_eq!(
            msg(&b),
            "index chunk 1 is 70000 bytes, over the index's chunk_size_max 65536"
        );
        // A maximum past what a fetch will hold.
        let mut b = good.clone();
        set_u64(&mut b, 40, 1 << 40);
        assert!(
            msg(&b).contains("max 1099511627776: need 1 <= min"),
            "{}",
            msg(&b)
        );

        let mut b = good.clone();
        set_u64(&mut b, 16, BLOB_FLAGS | FLAG_SHA512_256);
        assert!(msg(&b).contains("SHA-512/256"));

        let mut b = good.clone();
        let n = b.len();
        set_u64(&mut b, n - 16, 12345);
        assert!(
            msg(&b).starts_with("index table damaged: tail"),
            "{}",
            msg(&b)
        );

        let huge = vec![0u8; MAX_INDEX_BYTES + 1];
        assert!(msg(&huge).contains("over the limit"));
    }
}
