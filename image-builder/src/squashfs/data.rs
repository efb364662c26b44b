//! The data pass: file contents cut into blocks, compressed on all cores,
//! written in one deterministic order.
//!
//! One reader thread walks the files in tree order, skips duplicates (same
//! size and sha256 as an earlier file), turns all-zero blocks into holes
//! (SEEK_DATA first, so a sparse file's holes are never read) and packs
//! files smaller than a block into fragment blocks. Worker threads compress; the calling thread
//! puts the results back in sequence and writes them, so the output does
//! not depend on thread timing.
use super::{is_zero, Zstd, UNCOMPRESSED_BLOCK};
use crate::tree::{ContentReader, NodeId, Tree};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

/// Where a file's content went.
#[derive(Debug, Clone, Default)]
pub struct FileData {
    /// Absolute offset of the first block.
    pub start: u64,
    /// On-disk size of each full block (bit 24: stored raw; 0: a hole).
    pub sizes: Vec<u32>,
    /// Fragment index and offset of a file smaller than a block.
    pub frag: Option<(u32, u32)>,
    /// Bytes of holes.
    pub sparse: u64,
}

pub struct DataOut {
    /// Indexed like the `files` argument.
    pub files: Vec<FileData>,
    /// (start, on-disk size with bit 24 for raw) of each fragment block.
    pub fragments: Vec<(u64, u32)>,
    /// Files whose content was found earlier in the tree.
    pub duplicates: u64,
    /// Offset after the last data byte.
    pub end: u64,
}

enum Job {
    Block(u32, Vec<u8>),
    /// A run of blocks of zeros (count, bytes): each stored as size 0.
    Hole(u32, u64, u64),
    Frag(Vec<u8>),
}

enum Done {
    Block(u32, Vec<u8>, bool),
    Hole(u32, u64, u64),
    Frag(Vec<u8>, bool),
}

/// What only the reader knows.
struct ReaderOut {
    frags: Vec<Option<(u32, u32)>>,
    dup_of: Vec<Option<u32>>,
}

/// Write the contents of `files` (file nodes, in tree order) at `pos` of `out`.
pub fn write<W: Write>(
    tree: &Tree,
    files: &[NodeId],
    out: &mut W,
    pos: u64,
    o: &super::Options,
) -> Result<DataOut> {
    let (level, block_size, fragment_group) = (o.level, o.block_size, o.fragment_group);
    let threads = o.threads.max(1);
    let (job_tx, job_rx) = sync_channel::<(u64, Job)>(threads * 8);
    let (done_tx, done_rx) = sync_channel::<(u64, Result<Done>)>(threads * 8);
    let job_rx = Arc::new(Mutex::new(job_rx));
    std::thread::scope(|s| {
        let reader = s.spawn(move || read_files(tree, files, block_size, fragment_group, job_tx));
        for _ in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            s.spawn(move || compress(level, block_size, &rx, tx));
        }
        // Only the workers hold the channel ends now: when the writer stops
        // (a full disk), they stop, the job queue closes and the reader's
        // next send fails instead of blocking for ever.
        drop(job_rx);
        drop(done_tx);
        let written = write_in_order(files.len(), out, pos, done_rx);
        // On a write error the receiver is gone: workers and reader stop
        // at their next send.
        let read = reader.join().expect("reader thread panicked");
        let (mut files_out, fragments, end) = written?;
        let r = read?;
        let mut duplicates = 0;
        for (i, f) in files_out.iter_mut().enumerate() {
            f.frag = r.frags[i];
        }
        for (i, d) in r.dup_of.iter().enumerate() {
            if let Some(orig) = d {
                files_out[i] = files_out[*orig as usize].clone();
                duplicates += 1;
            }
        }
        Ok(DataOut {
            files: files_out,
            fragments,
            duplicates,
            end,
        })
    })
}

fn compress(
    level: i32,
    block_size: u32,
    rx: &Mutex<Receiver<(u64, Job)>>,
    tx: std::sync::mpsc::SyncSender<(u64, Result<Done>)>,
) {
    let mut z = match Zstd::new(level, block_size as usize) {
        Ok(z) => z,
        Err(e) => {
            let _ = tx.send((0, Err(e)));
            return;
        }
    };
    loop {
        let msg = rx.lock().expect("job queue poisoned").recv();
        let Ok((seq, job)) = msg else { return };
        let done = match job {
            Job::Hole(f, n, len) => Done::Hole(f, n, len),
            Job::Block(f, data) => match z.compress(&data) {
                Some(c) => Done::Block(f, c.to_vec(), false),
                None => Done::Block(f, data, true),
            },
            Job::Frag(data) => match z.compress(&data) {
                Some(c) => Done::Frag(c.to_vec(), false),
                None => Done::Frag(data, true),
            },
        };
        if tx.send((seq, Ok(done))).is_err() {
            return;
        }
    }
}

type Written = (Vec<FileData>, Vec<(u64, u32)>, u64);

fn write_in_order<W: Write>(
    nfiles: usize,
    out: &mut W,
    mut pos: u64,
    rx: Receiver<(u64, Result<Done>)>,
) -> Result<Written> {
    let mut files = vec![FileData::default(); nfiles];
    let mut started = vec![false; nfiles];
    let mut fragments = Vec::new();
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (seq, done) in rx {
        pending.insert(seq, done?);
        while let Some(d) = pending.remove(&next) {
            next += 1;
            match d {
                Done::Block(f, bytes, raw) => {
                    let fd = &mut files[f as usize];
                    if !started[f as usize] {
                        started[f as usize] = true;
                        fd.start = pos;
                    }
                    out.write_all(&bytes)?;
                    pos += bytes.len() as u64;
                    fd.sizes
                        .push(bytes.len() as u32 | if raw { UNCOMPRESSED_BLOCK } else { 0 });
                }
                Done::Hole(f, n, len) => {
                    let fd = &mut files[f as usize];
                    if !started[f as usize] {
                        started[f as usize] = true;
                        fd.start = pos;
                    }
                    fd.sizes.resize(fd.sizes.len() + n as usize, 0);
                    fd.sparse += len;
                }
                Done::Frag(bytes, raw) => {
                    fragments.push((
                        pos,
                        bytes.len() as u32 | if raw { UNCOMPRESSED_BLOCK } else { 0 },
                    ));
                    out.write_all(&bytes)?;
                    pos += bytes.len() as u64;
                }
            }
        }
    }
    Ok((files, fragments, pos))
}

/// Sends jobs in sequence; a closed channel means the writer stopped (its
/// error is the one reported), so the reader just ends.
struct Sender {
    tx: std::sync::mpsc::SyncSender<(u64, Job)>,
    seq: u64,
}

impl Sender {
    fn send(&mut self, j: Job) -> bool {
        let ok = self.tx.send((self.seq, j)).is_ok();
        self.seq += 1;
        ok
    }
}

fn read_files(
    tree: &Tree,
    files: &[NodeId],
    block_size: u32,
    fragment_group: u32,
    tx: std::sync::mpsc::SyncSender<(u64, Job)>,
) -> Result<ReaderOut> {
    let bs = block_size as u64;
    let mut tx = Sender { tx, seq: 0 };
    let mut frags = vec![None; files.len()];
    let mut dup_of = vec![None; files.len()];
    // Only files whose size another file shares can be duplicates.
    let mut size_count: HashMap<u64, u32> = HashMap::new();
    for &id in files {
        *size_count.entry(file_size(tree, id)).or_default() += 1;
    }
    let mut seen: HashMap<(u64, [u8; 32]), u32> = HashMap::new();
    let mut frag = Vec::with_capacity(block_size as usize);
    let mut frag_index = 0u32;
    let mut buf = vec![0u8; block_size as usize];
    for (i, &id) in files.iter().enumerate() {
        let size = file_size(tree, id);
        if size == 0 {
            continue;
        }
        let r = tree.content_reader(id)?;
        // Files of a block or more keep their tail as a last, shorter block
        // (as mksquashfs does by default: reading it needs no fragment);
        // smaller files are packed into fragments.
        let tail = if size >= bs { 0 } else { size as usize };
        let nblocks = if size >= bs { size.div_ceil(bs) } else { 0 };
        if size_count[&size] > 1 {
            let key = (size, content_hash(&r, size, bs, &mut buf)?);
            if let Some(&orig) = seen.get(&key) {
                dup_of[i] = Some(orig);
                continue;
            }
            seen.insert(key, i as u32);
        }
        // Holes (SEEK_DATA) are never read: a run of them is one job, so
        // a sparse file costs time in its data, not in its size.
        let mut data_at = 0u64;
        let mut b = 0;
        while b < nblocks {
            let off = b * bs;
            let len = bs.min(size - off) as usize;
            if off >= data_at {
                data_at = r.next_data(off);
            }
            let job = if data_at >= off + len as u64 {
                // Whole blocks before the next data (or the end).
                let n = ((data_at.min(size) - off) / bs).max(1).min(nblocks - b);
                let bytes = (off + n * bs).min(size) - off;
                b += n;
                Job::Hole(i as u32, n, bytes)
            } else {
                r.read_at(off, &mut buf[..len])?;
                b += 1;
                if is_zero(&buf[..len]) {
                    Job::Hole(i as u32, 1, len as u64)
                } else {
                    Job::Block(i as u32, buf[..len].to_vec())
                }
            };
            if !tx.send(job) {
                return Ok(ReaderOut { frags, dup_of });
            }
        }
        if tail > 0 {
            if frag.len() + tail > block_size as usize {
                if !tx.send(Job::Frag(std::mem::take(&mut frag))) {
                    return Ok(ReaderOut { frags, dup_of });
                }
                frag_index += 1;
            }
            frags[i] = Some((frag_index, frag.len() as u32));
            let at = frag.len();
            frag.resize(at + tail, 0);
            r.read_at(0, &mut frag[at..])
                .with_context(|| format!("reading {}", r.what))?;
            // A content-defined end: where the blocks end depends on the
            // tails alone, so an added tail shifts the tails of its own
            // block only.
            if fragment_group > 0 && fnv1a(&frag[at..]).is_multiple_of(u64::from(fragment_group)) {
                if !tx.send(Job::Frag(std::mem::take(&mut frag))) {
                    return Ok(ReaderOut { frags, dup_of });
                }
                frag_index += 1;
            }
        }
    }
    if !frag.is_empty() {
        tx.send(Job::Frag(frag));
    }
    Ok(ReaderOut { frags, dup_of })
}

/// FNV-1a, 64 bits: fixed forever (it decides where fragment blocks end,
/// so it is part of what makes the image reproducible).
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h = (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A digest of a file's content, block by block: an all-zero block (a hole,
/// never read, or zeros read) counts as one marker byte, any other as a
/// marker and its bytes. Equal contents give equal digests however their
/// holes lie, and a sparse file is hashed in time proportional to its data.
fn content_hash(r: &ContentReader, size: u64, bs: u64, buf: &mut [u8]) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut data_at = 0u64;
    let mut off = 0u64;
    while off < size {
        let len = bs.min(size - off);
        if off >= data_at {
            data_at = r.next_data(off);
        }
        if data_at >= off + len {
            h.update([0u8]);
        } else {
            let b = &mut buf[..len as usize];
            r.read_at(off, b)?;
            if is_zero(b) {
                h.update([0u8]);
            } else {
                h.update([1u8]);
                h.update(&*b);
            }
        }
        off += len;
    }
    Ok(h.finalize().into())
}

fn file_size(tree: &Tree, id: NodeId) -> u64 {
    match tree.nodes[id].kind {
        crate::tree::Kind::File { size, .. } => size,
        _ => 0,
    }
}
