//! A casync chunk store on disk: `<dir>/<first 4 hex of the id>/<id>.cacnk`,
//! each file the chunk zstd-compressed. One store can hold the chunks of
//! many images (v1 and v2 share what did not change).
use crate::chunker::{Chunker, Params};
use crate::index::{Chunk, Index};
use crate::ChunkId;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// zstd level of stored chunks (image blocks are compressed already; a
/// higher level buys little and costs the build time).
pub const LEVEL: i32 = 3;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The path of a chunk inside a store, `/`-separated: `abcd/abcd….cacnk`
/// (also the URL path below an HTTP store).
pub fn chunk_path(id: &ChunkId) -> String {
    let h = id.to_hex();
    format!("{}/{h}.cacnk", &h[..4])
}

/// A chunk as stored: zstd-compressed.
pub fn compress(data: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(data, LEVEL).context("zstd-compressing a chunk")
}

/// The stored form `z` of the chunk `id` of `size` bytes, decompressed:
/// at most `size` bytes are ever allocated. Not verified (the assembler
/// checks every source's chunks itself).
pub fn decompress_bounded(z: &[u8], id: &ChunkId, size: u32) -> Result<Vec<u8>> {
    if z.len() < 4 || z[..4] != ZSTD_MAGIC {
        bail!("chunk {id}: not zstd-compressed (a .cacnk file starts with the zstd magic)");
    }
    zstd::bulk::decompress(z, size as usize)
        .with_context(|| format!("chunk {id}: zstd data damaged or larger than {size} bytes"))
}

/// [`decompress_bounded`], then checked: `size` bytes whose SHA-256 is `id`.
pub fn decompress_verified(z: &[u8], id: &ChunkId, size: u32) -> Result<Vec<u8>> {
    let data = decompress_bounded(z, id, size)?;
    if data.len() != size as usize {
        bail!("chunk {id}: {} bytes, the index says {size}", data.len());
    }
    let got = ChunkId::of(&data);
    if got != *id {
        bail!("chunk {id}: content hashes to {got}");
    }
    Ok(data)
}

/// What [`Store::add_file`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddStats {
    pub chunks: u64,
    /// Chunks the store did not hold before.
    pub new_chunks: u64,
    /// Their compressed bytes.
    pub new_bytes: u64,
    /// Compressed bytes of all the image's distinct chunks.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where chunk `id` lives.
    pub fn path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(chunk_path(id))
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.path(id).is_file()
    }

    /// Compressed size of chunk `id` in the store.
    pub fn stored_size(&self, id: &ChunkId) -> Result<u64> {
        let p = self.path(id);
        Ok(std::fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len())
    }

    /// Store `data` under its id (unless already there). Returns whether it
    /// was new and its compressed size. The file appears whole or not at
    /// all (written beside, then renamed).
    pub fn insert(&self, data: &[u8]) -> Result<(ChunkId, bool, u64)> {
        let id = ChunkId::of(data);
        let p = self.path(&id);
        if let Ok(m) = std::fs::metadata(&p) {
            return Ok((id, false, m.len()));
        }
        let z = compress(data)?;
        let sub = p.parent().expect("a chunk path has a parent");
        std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
        let mut t = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(sub)
            .with_context(|| format!("creating a file in {}", sub.display()))?;
        t.write_all(&z)
            .with_context(|| format!("writing {}", t.path().display()))?;
        // 0644 like any published file (tempfile makes 0600).
        std::fs::set_permissions(
            t.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .with_context(|| format!("chmod {}", t.path().display()))?;
        t.persist(&p)
            .with_context(|| format!("renaming to {}", p.display()))?;
        Ok((id, true, z.len() as u64))
    }

    /// Read chunk `id` (of `size` bytes), decompressed and verified.
    pub fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        let p = self.path(id);
        let z = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        decompress_verified(&z, id, size).with_context(|| format!("in {}", p.display()))
    }

    /// Cut the file at `image` into chunks, store them, and return its
    /// index (and the image's SHA-256, hex, computed on the way).
    pub fn add_file(&self, image: &Path, p: Params) -> Result<(Index, String, AddStats)> {
        p.check().map_err(anyhow::Error::msg)?;
        let f =
            std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
        let chunker = Chunker::new(p);
        let mut chunks = Vec::new();
        let mut stats = AddStats::default();
        let mut seen = std::collections::HashSet::new();
        let mut sha = Sha256::new();
        let mut offset = 0u64;
        let mut err = None;
        chunker
            .for_each(std::io::BufReader::with_capacity(1 << 20, f), |data| {
                sha.update(data);
                match self.insert(data) {
                    Ok((id, new, zlen)) => {
                        stats.chunks += 1;
                        if new {
                            stats.new_chunks += 1;
                            stats.new_bytes += zlen;
                        }
                        if seen.insert(id) {
                            stats.stored_bytes += zlen;
                        }
                        chunks.push(Chunk {
                            offset,
                            size: data.len() as u32,
                            id,
                        });
                        offset += data.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        err = Some(e);
                        Err(std::io::Error::other("storing a chunk"))
                    }
                }
            })
            .map_err(|e| match err.take() {
                Some(inner) => inner,
                None => anyhow::Error::new(e),
            })
            .with_context(|| format!("chunking {} into {}", image.display(), self.dir.display()))?;
        let ix = Index::new(p.min.into(), p.avg.into(), p.max.into(), chunks);
        Ok((ix, hex::encode(sha.finalize()), stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_insert_get() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let (id, new, _) = s.insert(b"hello chunk").unwrap();
        assert!(new);
        let rel = chunk_path(&id);
        assert_eq!(&rel[..5], &format!("{}/", &id.to_hex()[..4]));
        assert!(rel.ends_with(".cacnk"));
        assert!(t.path().join(&rel).is_file());
        assert!(!s.insert(b"hello chunk").unwrap().1);
        assert_eq!(s.get(&id, 11).unwrap(), b"hello chunk");
        // Asked for the wrong size: refused without a bigger allocation.
        assert!(format!("{:#}", s.get(&id, 5).unwrap_err()).contains("larger than 5 bytes"));
    }

    #[test]
    fn a_lying_chunk_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let (id, _, _) = s.insert(b"good bytes").unwrap();
        std::fs::write(s.path(&id), compress(b"evil bytes").unwrap()).unwrap();
        let e = format!("{:#}", s.get(&id, 10).unwrap_err());
        assert!(e.contains("content hashes to"), "{e}");
        std::fs::write(s.path(&id), b"plain").unwrap();
        let e = format!("{:#}", s.get(&id, 10).unwrap_err());
        assert!(e.contains("not zstd-compressed"), "{e}");
    }

    #[test]
    fn add_file_indexes_the_whole_file() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("img");
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&img, &data).unwrap();
        let s = Store::new(t.path().join("store"));
        let (ix, sha, st) = s.add_file(&img, Params::DEFAULT).unwrap();
        assert_eq!(ix.total_size(), data.len() as u64);
        assert_eq!(sha, crate::sha256_hex(&data));
        assert_eq!(st.chunks, ix.chunks.len() as u64);
        let mut back = Vec::new();
        for c in &ix.chunks {
            back.extend(s.get(&c.id, c.size).unwrap());
        }
        assert_eq!(back, data);
        // A second time: nothing new.
        let (_, _, st2) = s.add_file(&img, Params::DEFAULT).unwrap();
        assert_eq!(st2.new_chunks, 0);
    }
}
