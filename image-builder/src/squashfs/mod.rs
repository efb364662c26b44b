//! A squashfs 4.0 writer: reproducible, zstd, blocks compressed on all cores.
//!
//! Layout, as the kernel reads it (`fs/squashfs/`) and mksquashfs writes it:
//! superblock (96 bytes) | data and fragment blocks | inode table |
//! directory table | fragment table | id table | xattr table; padded to 4 KiB.
//! Tables are 8 KiB metadata blocks (see [`meta`]), the fixed-size ones
//! followed by the list of their blocks' locations.
//!
//! Everything is derived from the sorted tree: data in tree order, inodes
//! numbered and written children-first (a directory's listing needs its
//! children's inode locations, its inode the listing's), ids and xattr sets
//! numbered in order of first use. No clock, no thread timing, no readdir
//! order reaches the bytes.
mod data;
mod meta;

use crate::tree::{Kind, NodeId, Tree};
use anyhow::{bail, Context, Result};
use meta::{indexed_table, MetaRef, MetaWriter};
use std::collections::HashMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};

const MAGIC: u32 = 0x7371_7368;
const ZSTD_ID: u16 = 6;
const INVALID: u64 = u64::MAX;
const NO_FRAGMENT: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;
/// Bit of a data block's on-disk size: stored uncompressed.
pub(crate) const UNCOMPRESSED_BLOCK: u32 = 1 << 24;
const FLAG_NO_XATTRS: u16 = 0x0200;
const FLAG_DUPLICATES: u16 = 0x0040;
const SUPERBLOCK_SIZE: u64 = 96;
const PAD: u64 = 4096;

// Inode types; the extended ones are basic + 7.
const DIR: u16 = 1;
const FILE: u16 = 2;
const SYMLINK: u16 = 3;
const BLKDEV: u16 = 4;
const CHRDEV: u16 = 5;
const FIFO: u16 = 6;
const SOCKET: u16 = 7;
const EXT: u16 = 7;

#[derive(Debug, Clone)]
pub struct Options {
    pub level: i32,
    pub block_size: u32,
    pub threads: usize,
    /// The superblock's modification time.
    pub mkfs_time: u32,
    /// Content-defined fragment blocks: a fragment block is closed after a
    /// file tail whose hash is 0 modulo this (as well as when full), so an
    /// added or changed small file changes the fragment block it lands in
    /// and not every later one (chunked updates, issue 16). 0: close only
    /// when full (mksquashfs's packing).
    pub fragment_group: u32,
}

/// What `nodeimg build` uses for [`Options::fragment_group`]: about 16 tails
/// per fragment block.
pub const FRAGMENT_GROUP: u32 = 16;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub inodes: u32,
    /// Names in the image, the root included (hard links count once each).
    pub entries: u64,
    pub fragments: u32,
    /// Files stored once for several identical contents.
    pub duplicates: u64,
    pub bytes_used: u64,
}

/// The squashfs type of an xattr name prefix, and the prefix length.
pub fn xattr_prefix(name: &[u8]) -> Option<(u16, usize)> {
    [(b"user." as &[u8], 0), (b"trusted.", 1), (b"security.", 2)]
        .iter()
        .find(|(p, _)| name.len() > p.len() && name.starts_with(p))
        .map(|(p, t)| (*t, p.len()))
}

/// All bytes zero (fast enough to run on every block).
pub fn is_zero(b: &[u8]) -> bool {
    let (pre, mid, post) = unsafe {
        // SAFETY: u128 has no invalid bit patterns; align_to gives aligned middle.
        b.align_to::<u128>()
    };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

/// A zstd context with its output buffer.
pub struct Zstd {
    c: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

impl Zstd {
    pub fn new(level: i32, max: usize) -> Result<Zstd> {
        let mut c =
            zstd::bulk::Compressor::new(level).with_context(|| format!("zstd level {level}"))?;
        // Every block's size is in the inode or the block header: the frame
        // need not repeat it (the kernel and unsquashfs decode into a
        // buffer of the block size either way).
        c.include_contentsize(false)
            .context("zstd: content size flag")?;
        Ok(Zstd {
            c,
            buf: vec![0; max.max(meta::METADATA_SIZE)],
        })
    }

    /// The compressed bytes, or None when they would not be smaller.
    pub fn compress(&mut self, src: &[u8]) -> Option<&[u8]> {
        if src.len() < 2 {
            return None;
        }
        if self.buf.len() < src.len() {
            self.buf.resize(src.len(), 0);
        }
        let n = self
            .c
            .compress_to_buffer(src, &mut self.buf[..src.len() - 1])
            .ok()?;
        Some(&self.buf[..n])
    }
}

/// Counts the bytes that go through it.
struct Counting<W> {
    w: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Write `tree` as a squashfs image into `out` (from offset 0).
pub fn write(tree: &Tree, out: &mut std::fs::File, o: &Options) -> Result<Stats> {
    if !o.block_size.is_power_of_two() || !(4096..=1 << 20).contains(&o.block_size) {
        bail!(
            "block size {} is not a power of two between 4096 and 1048576",
            o.block_size
        );
    }
    let order = dfs(tree);
    let files: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| matches!(tree.nodes[id].kind, Kind::File { .. }))
        .collect();

    out.seek(SeekFrom::Start(0))?;
    let mut w = Counting {
        w: BufWriter::with_capacity(1 << 20, &mut *out),
        pos: 0,
    };
    w.write_all(&[0u8; SUPERBLOCK_SIZE as usize])?;
    let d = data::write(tree, &files, &mut w, SUPERBLOCK_SIZE, o)?;
    debug_assert_eq!(d.end, w.pos);
    let file_data: HashMap<NodeId, &data::FileData> =
        files.iter().copied().zip(d.files.iter()).collect();

    let mut z = Zstd::new(o.level, o.block_size as usize)?;
    let mut t = Tables::new(tree, &order)?;
    t.xattrs(tree, &order, &mut z);
    let root = t.write_dir(tree, 0, None, &file_data, &mut z)?;

    let inode_count = t.next_number - 1;
    let (inodes, _) = std::mem::replace(&mut t.inodes, MetaWriter::new()).finish(&mut z);
    let (dirs, _) = std::mem::replace(&mut t.dirs, MetaWriter::new()).finish(&mut z);
    let inode_table_start = w.pos;
    w.write_all(&inodes)?;
    let directory_table_start = w.pos;
    w.write_all(&dirs)?;

    let mut frag_entries = Vec::with_capacity(d.fragments.len() * 16);
    for (start, size) in &d.fragments {
        frag_entries.extend_from_slice(&start.to_le_bytes());
        frag_entries.extend_from_slice(&size.to_le_bytes());
        frag_entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let (frag_table, fragment_table_start) = indexed_table(&mut z, &frag_entries, w.pos);
    w.write_all(&frag_table)?;

    let id_entries: Vec<u8> = t.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    let (id_table, id_table_start) = indexed_table(&mut z, &id_entries, w.pos);
    w.write_all(&id_table)?;

    let mut flags = FLAG_DUPLICATES;
    let xattr_id_table_start = if t.xattr_ids.is_empty() {
        flags |= FLAG_NO_XATTRS;
        INVALID
    } else {
        let (kv, _) = std::mem::replace(&mut t.xattr_kv, MetaWriter::new()).finish(&mut z);
        let kv_start = w.pos;
        w.write_all(&kv)?;
        let (ids, _) = indexed_table(&mut z, &t.xattr_ids, w.pos);
        // indexed_table puts the block list right after the blocks; the
        // xattr id table has a 16-byte header in between.
        let blocks_len = ids.len() - 8 * t.xattr_ids.len().div_ceil(meta::METADATA_SIZE);
        w.write_all(&ids[..blocks_len])?;
        let header_at = w.pos;
        w.write_all(&kv_start.to_le_bytes())?;
        w.write_all(&((t.xattr_ids.len() / 16) as u32).to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&ids[blocks_len..])?;
        header_at
    };
    let bytes_used = w.pos;
    let pad = (PAD - bytes_used % PAD) % PAD;
    w.write_all(&vec![0u8; pad as usize])?;
    w.flush()?;
    drop(w);

    let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE as usize);
    sb.extend_from_slice(&MAGIC.to_le_bytes());
    sb.extend_from_slice(&inode_count.to_le_bytes());
    sb.extend_from_slice(&o.mkfs_time.to_le_bytes());
    sb.extend_from_slice(&o.block_size.to_le_bytes());
    sb.extend_from_slice(&(d.fragments.len() as u32).to_le_bytes());
    sb.extend_from_slice(&ZSTD_ID.to_le_bytes());
    sb.extend_from_slice(&(o.block_size.trailing_zeros() as u16).to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&(t.ids.len() as u16).to_le_bytes());
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&root.packed().to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&xattr_id_table_start.to_le_bytes());
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&fragment_table_start.to_le_bytes());
    sb.extend_from_slice(&INVALID.to_le_bytes()); // no export table
    debug_assert_eq!(sb.len() as u64, SUPERBLOCK_SIZE);
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&sb)?;
    Ok(Stats {
        inodes: inode_count,
        entries: order.len() as u64,
        fragments: d.fragments.len() as u32,
        duplicates: d.duplicates,
        bytes_used,
    })
}

/// Every node in depth-first order, children sorted (the tree keeps them so).
fn dfs(tree: &Tree) -> Vec<NodeId> {
    let mut out = Vec::with_capacity(tree.nodes.len());
    let mut stack = vec![0];
    while let Some(id) = stack.pop() {
        out.push(id);
        if let Kind::Dir(ch) = &tree.nodes[id].kind {
            stack.extend(ch.iter().rev());
        }
    }
    out
}

/// The node holding the inode of `id` (itself, or a hard link's target).
fn canonical(tree: &Tree, id: NodeId) -> NodeId {
    match tree.nodes[id].kind {
        Kind::Link(t) => t,
        _ => id,
    }
}

fn basic_type(k: &Kind) -> u16 {
    match k {
        Kind::Dir(_) => DIR,
        Kind::File { .. } => FILE,
        Kind::Symlink(_) => SYMLINK,
        Kind::BlockDev(_) => BLKDEV,
        Kind::CharDev(_) => CHRDEV,
        Kind::Fifo => FIFO,
        Kind::Socket => SOCKET,
        Kind::Link(_) => unreachable!("links are resolved first"),
    }
}

/// The device number as squashfs (and the kernel's new_encode_dev) stores it.
fn encode_dev(rdev: u64) -> u32 {
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    (min & 0xff) | (maj << 8) | ((min & !0xff) << 12)
}

struct Tables {
    inodes: MetaWriter,
    dirs: MetaWriter,
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
    /// Per canonical node: its xattr set's index.
    xattr_of: HashMap<NodeId, u32>,
    xattr_kv: MetaWriter,
    /// Entries of the xattr id table (16 bytes each).
    xattr_ids: Vec<u8>,
    /// Per canonical node: inode number (assigned up front) and location once written.
    number: HashMap<NodeId, u32>,
    written: HashMap<NodeId, MetaRef>,
    /// Names per canonical node (link counts).
    names: HashMap<NodeId, u32>,
    next_number: u32,
}

impl Tables {
    fn new(tree: &Tree, order: &[NodeId]) -> Result<Tables> {
        let mut ids: Vec<u32> = Vec::new();
        let mut names: HashMap<NodeId, u32> = HashMap::new();
        for &id in order {
            let c = canonical(tree, id);
            *names.entry(c).or_default() += 1;
            let m = &tree.nodes[c].meta;
            ids.push(m.uid);
            ids.push(m.gid);
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > u16::MAX as usize {
            bail!(
                "{} distinct uids and gids: squashfs holds at most 65535",
                ids.len()
            );
        }
        let id_index = ids
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as u16))
            .collect();
        let mut t = Tables {
            inodes: MetaWriter::new(),
            dirs: MetaWriter::new(),
            ids,
            id_index,
            xattr_of: HashMap::new(),
            xattr_kv: MetaWriter::new(),
            xattr_ids: Vec::new(),
            number: HashMap::new(),
            written: HashMap::new(),
            names,
            next_number: 1,
        };
        t.assign_numbers(tree, 0);
        Ok(t)
    }

    /// Inode numbers in the order inodes are written: children first.
    fn assign_numbers(&mut self, tree: &Tree, dir: NodeId) {
        let Kind::Dir(ch) = &tree.nodes[dir].kind else {
            unreachable!()
        };
        for &c in ch {
            let c = canonical(tree, c);
            if matches!(tree.nodes[c].kind, Kind::Dir(_)) {
                self.assign_numbers(tree, c);
            } else if !self.number.contains_key(&c) {
                self.number.insert(c, self.next_number);
                self.next_number += 1;
            }
        }
        self.number.insert(dir, self.next_number);
        self.next_number += 1;
    }

    /// The xattr table: one key/value list per distinct set, in order of first use.
    fn xattrs(&mut self, tree: &Tree, order: &[NodeId], z: &mut Zstd) {
        let mut sets: HashMap<Vec<u8>, u32> = HashMap::new();
        for &id in order {
            let c = canonical(tree, id);
            let x = &tree.nodes[c].xattrs;
            if x.is_empty() || self.xattr_of.contains_key(&c) {
                continue;
            }
            let mut kv = Vec::new();
            for (name, value) in x {
                let (ty, plen) = xattr_prefix(name).expect("filtered when read");
                let short = &name[plen..];
                kv.extend_from_slice(&ty.to_le_bytes());
                kv.extend_from_slice(&(short.len() as u16).to_le_bytes());
                kv.extend_from_slice(short);
                kv.extend_from_slice(&(value.len() as u32).to_le_bytes());
                kv.extend_from_slice(value);
            }
            let next = sets.len() as u32;
            let idx = *sets.entry(kv.clone()).or_insert_with(|| {
                let at = self.xattr_kv.pos();
                self.xattr_kv.write(z, &kv);
                self.xattr_ids.extend_from_slice(&at.packed().to_le_bytes());
                self.xattr_ids
                    .extend_from_slice(&(x.len() as u32).to_le_bytes());
                self.xattr_ids
                    .extend_from_slice(&(kv.len() as u32).to_le_bytes());
                next
            });
            self.xattr_of.insert(c, idx);
        }
    }

    fn header(&self, tree: &Tree, c: NodeId, ty: u16) -> Vec<u8> {
        let m = &tree.nodes[c].meta;
        let mut h = Vec::with_capacity(64);
        h.extend_from_slice(&ty.to_le_bytes());
        h.extend_from_slice(&(m.perm & 0o7777).to_le_bytes());
        h.extend_from_slice(&self.id_index[&m.uid].to_le_bytes());
        h.extend_from_slice(&self.id_index[&m.gid].to_le_bytes());
        h.extend_from_slice(&m.mtime.to_le_bytes());
        h.extend_from_slice(&self.number[&c].to_le_bytes());
        h
    }

    /// Write a directory's subtree, its listing and its inode; returns the inode's location.
    fn write_dir(
        &mut self,
        tree: &Tree,
        dir: NodeId,
        parent: Option<u32>,
        files: &HashMap<NodeId, &data::FileData>,
        z: &mut Zstd,
    ) -> Result<MetaRef> {
        let Kind::Dir(ch) = &tree.nodes[dir].kind else {
            unreachable!()
        };
        let me = self.number[&dir];
        let mut entries = Vec::with_capacity(ch.len());
        let mut subdirs = 0u32;
        for &child in ch {
            let c = canonical(tree, child);
            let r = if matches!(tree.nodes[c].kind, Kind::Dir(_)) {
                subdirs += 1;
                self.write_dir(tree, c, Some(me), files, z)?
            } else if let Some(&r) = self.written.get(&c) {
                r
            } else {
                let r = self.write_leaf(tree, c, files, z)?;
                self.written.insert(c, r);
                r
            };
            entries.push((
                &tree.nodes[child].name,
                r,
                self.number[&c],
                basic_type(&tree.nodes[c].kind),
            ));
        }
        // The listing: runs of entries sharing an inode block and a base
        // number, at most 256 per header and one metadata block long.
        let listing_at = self.dirs.pos();
        let listing_abs = self.dirs.uncompressed_pos();
        let mut listing = Vec::new();
        // Header offsets in the listing, with the first name of their run.
        let mut headers: Vec<(usize, &[u8])> = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let (block, base) = (entries[i].1.block, entries[i].2);
            let mut j = i;
            let mut run = 12;
            while j < entries.len()
                && j - i < 256
                && entries[j].1.block == block
                && i16::try_from(entries[j].2 as i64 - base as i64).is_ok()
                && (j == i || run + 8 + entries[j].0.len() <= meta::METADATA_SIZE)
            {
                run += 8 + entries[j].0.len();
                j += 1;
            }
            headers.push((listing.len(), entries[i].0));
            listing.extend_from_slice(&((j - i - 1) as u32).to_le_bytes());
            listing.extend_from_slice(&(block as u32).to_le_bytes());
            listing.extend_from_slice(&base.to_le_bytes());
            for (name, r, num, ty) in &entries[i..j] {
                if name.is_empty() || name.len() > 256 {
                    bail!(
                        "{}: a name of {} bytes (squashfs: 1 to 256)",
                        tree.path_of(dir),
                        name.len()
                    );
                }
                listing.extend_from_slice(&r.offset.to_le_bytes());
                listing.extend_from_slice(&((*num as i64 - base as i64) as i16).to_le_bytes());
                listing.extend_from_slice(&ty.to_le_bytes());
                listing.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
                listing.extend_from_slice(name);
            }
            i = j;
        }
        self.dirs.write(z, &listing);
        // A listing over several metadata blocks gets an index: for the
        // first header starting in each further block, its offset, that
        // block's location and its first name, so that a lookup (and
        // readdir at an offset) starts near its target instead of
        // decompressing every block before it.
        let first_block = (listing_abs / meta::METADATA_SIZE as u64) as usize;
        let mut index = Vec::new();
        let mut index_count = 0u16;
        let mut last = first_block;
        for (off, name) in headers {
            let k = ((listing_abs + off as u64) / meta::METADATA_SIZE as u64) as usize;
            if k != last {
                last = k;
                index_count += 1;
                index.extend_from_slice(&(off as u32).to_le_bytes());
                index.extend_from_slice(&(self.dirs.block_start(k) as u32).to_le_bytes());
                index.extend_from_slice(&((name.len() - 1) as u32).to_le_bytes());
                index.extend_from_slice(name);
            }
        }

        let nlink = 2 + subdirs;
        let size = listing.len() as u64 + 3;
        let parent = parent.unwrap_or(self.next_number);
        let xattr = self.xattr_of.get(&dir).copied();
        let at = self.inodes.pos();
        let block = u32::try_from(listing_at.block).context("directory table over 4 GiB")?;
        let ino = if xattr.is_none() && index_count == 0 && size <= u16::MAX as u64 {
            let mut h = self.header(tree, dir, DIR);
            h.extend_from_slice(&block.to_le_bytes());
            h.extend_from_slice(&nlink.to_le_bytes());
            h.extend_from_slice(&(size as u16).to_le_bytes());
            h.extend_from_slice(&listing_at.offset.to_le_bytes());
            h.extend_from_slice(&parent.to_le_bytes());
            h
        } else {
            let mut h = self.header(tree, dir, DIR + EXT);
            h.extend_from_slice(&nlink.to_le_bytes());
            h.extend_from_slice(&(size as u32).to_le_bytes());
            h.extend_from_slice(&block.to_le_bytes());
            h.extend_from_slice(&parent.to_le_bytes());
            h.extend_from_slice(&index_count.to_le_bytes());
            h.extend_from_slice(&listing_at.offset.to_le_bytes());
            h.extend_from_slice(&xattr.unwrap_or(NO_XATTR).to_le_bytes());
            h.extend_from_slice(&index);
            h
        };
        self.inodes.write(z, &ino);
        Ok(at)
    }

    fn write_leaf(
        &mut self,
        tree: &Tree,
        c: NodeId,
        files: &HashMap<NodeId, &data::FileData>,
        z: &mut Zstd,
    ) -> Result<MetaRef> {
        let node = &tree.nodes[c];
        let nlink = self.names[&c];
        let xattr = self.xattr_of.get(&c).copied();
        let ext = xattr.is_some();
        let ty = basic_type(&node.kind);
        let at = self.inodes.pos();
        let ino = match &node.kind {
            Kind::File { size, .. } => {
                let f = files[&c];
                let (frag, frag_off) = f.frag.unwrap_or((NO_FRAGMENT, 0));
                let mut h;
                if !ext
                    && nlink == 1
                    && f.sparse == 0
                    && *size <= u32::MAX as u64
                    && f.start <= u32::MAX as u64
                {
                    h = self.header(tree, c, FILE);
                    h.extend_from_slice(&(f.start as u32).to_le_bytes());
                    h.extend_from_slice(&frag.to_le_bytes());
                    h.extend_from_slice(&frag_off.to_le_bytes());
                    h.extend_from_slice(&(*size as u32).to_le_bytes());
                } else {
                    h = self.header(tree, c, FILE + EXT);
                    h.extend_from_slice(&f.start.to_le_bytes());
                    h.extend_from_slice(&size.to_le_bytes());
                    h.extend_from_slice(&f.sparse.to_le_bytes());
                    h.extend_from_slice(&nlink.to_le_bytes());
                    h.extend_from_slice(&frag.to_le_bytes());
                    h.extend_from_slice(&frag_off.to_le_bytes());
                    h.extend_from_slice(&xattr.unwrap_or(NO_XATTR).to_le_bytes());
                }
                for s in &f.sizes {
                    h.extend_from_slice(&s.to_le_bytes());
                }
                h
            }
            Kind::Symlink(target) => {
                let mut h = self.header(tree, c, if ext { ty + EXT } else { ty });
                h.extend_from_slice(&nlink.to_le_bytes());
                h.extend_from_slice(&(target.len() as u32).to_le_bytes());
                h.extend_from_slice(target);
                if let Some(x) = xattr {
                    h.extend_from_slice(&x.to_le_bytes());
                }
                h
            }
            Kind::BlockDev(rdev) | Kind::CharDev(rdev) => {
                let mut h = self.header(tree, c, if ext { ty + EXT } else { ty });
                h.extend_from_slice(&nlink.to_le_bytes());
                h.extend_from_slice(&encode_dev(*rdev).to_le_bytes());
                if let Some(x) = xattr {
                    h.extend_from_slice(&x.to_le_bytes());
                }
                h
            }
            Kind::Fifo | Kind::Socket => {
                let mut h = self.header(tree, c, if ext { ty + EXT } else { ty });
                h.extend_from_slice(&nlink.to_le_bytes());
                if let Some(x) = xattr {
                    h.extend_from_slice(&x.to_le_bytes());
                }
                h
            }
            Kind::Dir(_) | Kind::Link(_) => unreachable!("not a leaf"),
        };
        self.inodes.write(z, &ino);
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 131072 + 3];
        assert!(is_zero(&b));
        assert!(is_zero(&b[1..]));
        b[131072 + 2] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&b[..131072]));
    }

    #[test]
    fn device_numbers_as_the_kernel_decodes_them() {
        // new_decode_dev: major = (d & 0xfff00) >> 8, minor = (d & 0xff) | ((d >> 12) & 0xfff00)
        for (maj, min) in [(1u32, 3u32), (8, 0), (259, 65536 + 7), (4095, 1048575)] {
            let d = encode_dev(libc::makedev(maj, min));
            assert_eq!((d & 0xfff00) >> 8, maj);
            assert_eq!((d & 0xff) | ((d >> 12) & 0xfff00), min);
        }
    }

    #[test]
    fn xattr_namespaces() {
        assert_eq!(xattr_prefix(b"security.capability"), Some((2, 9)));
        assert_eq!(xattr_prefix(b"user.x"), Some((0, 5)));
        assert_eq!(xattr_prefix(b"trusted.overlay.opaque"), Some((1, 8)));
        assert_eq!(xattr_prefix(b"system.posix_acl_access"), None);
        assert_eq!(xattr_prefix(b"user."), None);
    }

    #[test]
    fn incompressible_data_is_kept_raw() {
        let mut z = Zstd::new(15, 131072).unwrap();
        assert!(z.compress(&[7u8; 4096]).unwrap().len() < 100);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let rnd: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(z.compress(&rnd).is_none());
    }

    #[test]
    fn metadata_blocks_and_refs() {
        let mut z = Zstd::new(15, 8192).unwrap();
        let mut m = MetaWriter::new();
        m.write(&mut z, &[1u8; 8000]);
        let p = m.pos();
        assert_eq!((p.block, p.offset), (0, 8000));
        m.write(&mut z, &[2u8; 500]);
        let p2 = m.pos();
        assert_eq!(p2.offset, 308);
        assert!(
            p2.block > 0 && p2.block < 100,
            "first block compressed: {p2:?}"
        );
        assert_eq!(p2.packed(), (p2.block << 16) | 308);
        let (bytes, starts) = m.finish(&mut z);
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[1], p2.block);
        assert!(bytes.len() < 200);
    }
}
