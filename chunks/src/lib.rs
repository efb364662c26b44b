//! Content-addressed images: an image is cut into content-defined chunks
//! ([`chunker`]), each stored once, zstd-compressed, under its SHA-256 in a
//! chunk store ([`store`]), and listed in order by a blob index ([`index`]).
//! The formats are casync's: a `.caibx` blob index and a `store/` of
//! `<4 hex>/<id>.cacnk` files, so Debian's `casync extract` reproduces an
//! image from what `nodeimg build` writes, and any tool of that family
//! (casync, desync) can serve or inspect it.
//!
//! A node assembles an image ([`assemble`]) from whatever holds its chunks:
//! local seeds (an image it already has and that image's index), chunk
//! sources (peers: the [`assemble::ChunkSource`] trait), then the origin
//! stores (mirrors, in order). Every chunk is checked against its id on
//! receipt, whoever sent it, and the whole image against the digest the
//! caller pinned, so no source needs to be trusted.
pub mod assemble;
pub mod chunker;
pub mod index;
pub mod store;

pub use chunker::Params;
pub use index::{Chunk, Index, IndexError};
pub use store::Store;

use sha2::{Digest, Sha256};
use std::fmt;

/// A chunk's id: the SHA-256 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(Sha256::digest(data).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        let mut id = [0u8; 32];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(ChunkId(id))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

/// Where the index of a local image lives: beside it, `NAME.caibx` for
/// `NAME.squashfs` (or `IMAGE.caibx` for any other name); what `nodeimg
/// build` writes and what a node's image cache keeps.
pub fn index_path_for(image: &std::path::Path) -> std::path::PathBuf {
    match image.extension() {
        Some(e) if e == "squashfs" => image.with_extension("caibx"),
        _ => {
            let mut s = image.as_os_str().to_owned();
            s.push(".caibx");
            s.into()
        }
    }
}

/// SHA-256 of `data` in hex: the form digests take on the command line and
/// in manifests (an index's digest is the SHA-256 of its file).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
