//! Metadata blocks: 8 KiB of payload, each compressed on its own (kept raw
//! when that is not smaller) behind a 2-byte header.
use super::Zstd;

pub const METADATA_SIZE: usize = 8192;
/// Header bit: the block is stored uncompressed.
const RAW: u16 = 0x8000;

/// A position in a metadata stream: the start of the block (relative to the
/// table) and the offset in its uncompressed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaRef {
    pub block: u64,
    pub offset: u16,
}

impl MetaRef {
    /// The 48-bit reference squashfs stores (inode refs, xattr refs).
    pub fn packed(self) -> u64 {
        (self.block << 16) | self.offset as u64
    }
}

pub struct MetaWriter {
    /// Finished (compressed) blocks.
    pub out: Vec<u8>,
    cur: Vec<u8>,
    /// Where each finished block starts in `out`.
    pub block_starts: Vec<u64>,
}

impl MetaWriter {
    pub fn new() -> MetaWriter {
        MetaWriter {
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
            block_starts: Vec::new(),
        }
    }

    pub fn pos(&self) -> MetaRef {
        MetaRef {
            block: self.out.len() as u64,
            offset: self.cur.len() as u16,
        }
    }

    /// Uncompressed bytes written so far (block number × 8192 + offset).
    pub fn uncompressed_pos(&self) -> u64 {
        (self.block_starts.len() * METADATA_SIZE + self.cur.len()) as u64
    }

    /// Where the `k`-th block starts (or will start, for the current one).
    pub fn block_start(&self, k: usize) -> u64 {
        self.block_starts
            .get(k)
            .copied()
            .unwrap_or(self.out.len() as u64)
    }

    pub fn write(&mut self, z: &mut Zstd, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (METADATA_SIZE - self.cur.len()).min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.cur.len() == METADATA_SIZE {
                self.flush(z);
            }
        }
    }

    fn flush(&mut self, z: &mut Zstd) {
        if self.cur.is_empty() {
            return;
        }
        self.block_starts.push(self.out.len() as u64);
        match z.compress(&self.cur) {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(c);
            }
            None => {
                self.out
                    .extend_from_slice(&(self.cur.len() as u16 | RAW).to_le_bytes());
                self.out.extend_from_slice(&self.cur);
            }
        }
        self.cur.clear();
    }

    /// Flush the last partial block and return the bytes.
    pub fn finish(mut self, z: &mut Zstd) -> (Vec<u8>, Vec<u64>) {
        self.flush(z);
        (self.out, self.block_starts)
    }
}

/// A table of fixed-size entries (ids, fragments, xattr ids) as squashfs
/// stores it: the entries in metadata blocks, then the absolute location of
/// each block (u64). `at` is where the blocks will be written; returns the
/// bytes and the absolute location of the location list (what the
/// superblock points at).
pub fn indexed_table(z: &mut Zstd, entries: &[u8], at: u64) -> (Vec<u8>, u64) {
    let mut m = MetaWriter::new();
    m.write(z, entries);
    let (mut out, starts) = m.finish(z);
    let index_at = at + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&(at + s).to_le_bytes());
    }
    (out, index_at)
}
