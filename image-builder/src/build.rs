//! `nodeimg build`: a source tree → `NAME.squashfs`, `NAME.squashfs.sha256`,
//! `NAME.caibx` (its chunk index) and `NAME.json`, the chunks in a store
//! beside them (`store/`, shared by every image built there).
//!
//! The files are written under temporary names in the output directory and
//! renamed only once every one of them is complete: an error (a bad source,
//! a full disk) leaves nothing under the final names. Chunks go into the
//! store as they are cut, each file whole or not at all: a failed build may
//! leave chunks no index lists, which harm nothing. Archive members are
//! spooled into an unlinked file, which disappears with the process.
use crate::squashfs;
use crate::tree::{Kind, ReadOptions, Tree};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Reproducible: entries are sorted bytewise, contents are written in tree order
whatever the thread timing, and the superblock time is SOURCE_DATE_EPOCH when
set (mtimes newer than it are clamped to it), else the newest mtime in the
source: the same input gives the same bytes.

Kept: modes, uid/gid, mtimes (seconds), symlinks, hard links, device nodes,
fifos, sockets, sparse files (zero blocks become holes) and xattrs in the
user., trusted. and security. namespaces (security.capability among them;
others cannot be stored in squashfs and are reported). Files with the same
content are stored once.")]
pub struct Args {
    /// A root directory, or a tar / tar.zst archive of one.
    pub source: PathBuf,
    /// The image to write (NAME.squashfs); NAME.squashfs.sha256 and NAME.json go beside it.
    #[arg(short, long)]
    pub output: PathBuf,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Data block size in bytes (a power of two, 4 KiB to 1 MiB).
    #[arg(long, default_value_t = 131072)]
    pub block_size: u32,
    /// Leave out paths matching this glob, relative to the root (`boot/*`,
    /// `lib/modules/*/kernel/sound`); `*` does not cross `/`; a matched
    /// directory goes with its contents. Repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Compression threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The chunk store NAME.caibx refers to (default: `store` beside the
    /// image). Share one between image versions: chunks they have in common
    /// are stored once, and a node holding one version fetches only the
    /// chunks the next one adds.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Write no chunk index and no chunks (the image, its .sha256 and .json only).
    #[arg(long, conflicts_with = "store")]
    pub no_chunks: bool,
    /// Chunk sizes MIN:AVG:MAX in KiB (AVG a power of two).
    #[arg(long, default_value = "16:64:256", value_parser = parse_chunk_size)]
    pub chunk_size: nodeboot_chunks::Params,
    /// Tails per fragment block on average, ended where their content says
    /// (0: pack fragment blocks full, as mksquashfs does).
    #[arg(long, default_value_t = squashfs::FRAGMENT_GROUP, hide = true)]
    pub fragment_group: u32,
}

/// `MIN:AVG:MAX` in KiB.
pub fn parse_chunk_size(s: &str) -> std::result::Result<nodeboot_chunks::Params, String> {
    let v: Vec<u32> = s
        .split(':')
        .map(|x| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    let [min, avg, max] = v[..] else {
        return Err(format!("{s:?}: want MIN:AVG:MAX in KiB, e.g. 16:64:256"));
    };
    let kib = |x: u32| {
        x.checked_mul(1024)
            .ok_or_else(|| format!("{x} KiB is too large"))
    };
    let p = nodeboot_chunks::Params {
        min: kib(min)?,
        avg: kib(avg)?,
        max: kib(max)?,
    };
    p.check()?;
    Ok(p)
}

/// The chunk index part of `NAME.json`.
#[derive(Debug, Serialize)]
pub struct ChunkManifest {
    /// `NAME.caibx`, beside the image: a casync blob index.
    pub index: String,
    /// SHA-256 of the index file: what `nodeboot.index=URL` pins.
    pub index_sha256: String,
    /// The chunk store: relative to the image's directory when inside it.
    pub store: String,
    pub chunks: u64,
    pub unique_chunks: u64,
    /// Chunk sizes min, avg, max in bytes.
    pub chunk_size: [u32; 3],
    /// Compressed bytes of the image's distinct chunks in the store.
    pub stored_bytes: u64,
    /// Of these, the ones this build added to the store.
    pub new_bytes: u64,
}

/// `NAME.json`.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub image: String,
    pub sha256: String,
    pub size: u64,
    pub compressor: &'static str,
    pub level: i32,
    pub block_size: u32,
    /// Paths in the image, the root included.
    pub entries: u64,
    pub inodes: u32,
    pub duplicates: u64,
    /// The chunk index and store (absent with `--no-chunks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunked: Option<ChunkManifest>,
    /// Kernel versions found under lib/modules (or usr/lib/modules).
    pub kernels: Vec<String>,
    /// Version of the nodectl found at usr/bin/nodectl, if any.
    pub nodectl_version: Option<String>,
    pub source: String,
    pub source_date_epoch: Option<u64>,
    pub build_time: String,
    pub build_seconds: f64,
    pub nodeimg_version: &'static str,
}

/// The marker nodectl carries (see the agent's main.rs) before its version.
pub const NODECTL_VERSION_MARKER: &[u8] = b"NODEBOOT_NODECTL_VERSION=";

pub fn run(a: &Args) -> Result<()> {
    let sde = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v}: not a number of seconds"))?,
        ),
        _ => None,
    };
    let m = build(a, sde)?;
    println!("{}", serde_json::to_string_pretty(&m)?);
    Ok(())
}

/// The output names: image, sidecar, manifest, index.
fn outputs(out: &Path) -> Result<(PathBuf, PathBuf, PathBuf, PathBuf)> {
    let name = out
        .file_name()
        .with_context(|| format!("output {}: not a file name", out.display()))?
        .to_string_lossy()
        .into_owned();
    let stem = name.strip_suffix(".squashfs").unwrap_or(&name);
    let dir = out.parent().unwrap_or(Path::new("."));
    Ok((
        out.to_path_buf(),
        dir.join(format!("{name}.sha256")),
        dir.join(format!("{stem}.json")),
        dir.join(format!("{stem}.caibx")),
    ))
}

pub fn build(a: &Args, sde: Option<u64>) -> Result<Manifest> {
    let t0 = Instant::now();
    let (img, sidecar, manifest, index) = outputs(&a.output)?;
    let dir = match img.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "output {}: the directory {} does not exist",
            img.display(),
            dir.display()
        );
    }
    let opts = ReadOptions::new(&a.exclude, sde)?;
    let md =
        std::fs::metadata(&a.source).with_context(|| format!("source {}", a.source.display()))?;
    let tree = if md.is_dir() {
        Tree::from_dir(&a.source, &opts)?
    } else if md.is_file() {
        Tree::from_tar(&a.source, &dir, &opts)?
    } else {
        bail!(
            "source {} is neither a directory nor a tar / tar.zst archive",
            a.source.display()
        );
    };
    tracing::info!(
        "read {} entries from {} in {:.1}s",
        tree.nodes.len(),
        a.source.display(),
        t0.elapsed().as_secs_f64()
    );
    let mkfs_time = match sde {
        Some(s) => s.min(u32::MAX as u64) as u32,
        None => tree.nodes.iter().map(|n| n.meta.mtime).max().unwrap_or(0),
    };
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let tmp = |final_name: &Path| -> Result<tempfile::NamedTempFile> {
        let base = final_name
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tempfile::Builder::new()
            .prefix(&format!(".{base}."))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))
    };
    let mut img_tmp = tmp(&img)?;
    let stats = squashfs::write(
        &tree,
        img_tmp.as_file_mut(),
        &squashfs::Options {
            level: a.level,
            block_size: a.block_size,
            threads,
            mkfs_time,
            fragment_group: a.fragment_group,
        },
    )
    .and_then(|s| {
        img_tmp.as_file().sync_all()?;
        Ok(s)
    })
    .with_context(|| {
        format!(
            "writing the image {} (temporary file {})",
            img.display(),
            img_tmp.path().display()
        )
    })?;
    let (sha256, size) = hash_file(img_tmp.path())?;
    let img_name = img
        .file_name()
        .expect("checked")
        .to_string_lossy()
        .into_owned();
    let mut chunked = None;
    let mut index_tmp = None;
    if !a.no_chunks {
        let t = Instant::now();
        let store_dir = a.store.clone().unwrap_or_else(|| dir.join("store"));
        let store = nodeboot_chunks::Store::new(&store_dir);
        let (ix, sha, st) = store
            .add_file(img_tmp.path(), a.chunk_size)
            .with_context(|| format!("chunking the image into {}", store_dir.display()))?;
        if sha != sha256 {
            bail!("the image changed while it was chunked ({sha} then {sha256})");
        }
        let bytes = ix.to_bytes();
        let mut it = tmp(&index)?;
        it.write_all(&bytes)
            .with_context(|| format!("writing {}", index.display()))?;
        let store_name = match store_dir.strip_prefix(&dir) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => store_dir.display().to_string(),
        };
        chunked = Some(ChunkManifest {
            index: index
                .file_name()
                .expect("an index name")
                .to_string_lossy()
                .into_owned(),
            index_sha256: nodeboot_chunks::sha256_hex(&bytes),
            store: store_name,
            chunks: st.chunks,
            unique_chunks: ix
                .chunks
                .iter()
                .map(|c| c.id)
                .collect::<std::collections::HashSet<_>>()
                .len() as u64,
            chunk_size: [a.chunk_size.min, a.chunk_size.avg, a.chunk_size.max],
            stored_bytes: st.stored_bytes,
            new_bytes: st.new_bytes,
        });
        index_tmp = Some(it);
        tracing::info!(
            "{} chunks ({} new, {} bytes) into {} in {:.1}s",
            st.chunks,
            st.new_chunks,
            st.new_bytes,
            store_dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let mut side_tmp = tmp(&sidecar)?;
    writeln!(side_tmp, "{sha256}  {img_name}")
        .with_context(|| format!("writing {}", sidecar.display()))?;
    let m = Manifest {
        image: img_name,
        sha256,
        size,
        compressor: "zstd",
        level: a.level,
        block_size: a.block_size,
        entries: stats.entries,
        inodes: stats.inodes,
        duplicates: stats.duplicates,
        chunked,
        kernels: kernels(&tree),
        nodectl_version: nodectl_version(&tree)?,
        source: a.source.display().to_string(),
        source_date_epoch: sde,
        build_time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        build_seconds: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        nodeimg_version: env!("CARGO_PKG_VERSION"),
    };
    let mut man_tmp = tmp(&manifest)?;
    serde_json::to_writer_pretty(&mut man_tmp, &m)
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(man_tmp.write_all(b"\n")?))
        .with_context(|| format!("writing {}", manifest.display()))?;
    // Everything is complete: now the final names.
    img_tmp
        .persist(&img)
        .with_context(|| format!("renaming to {}", img.display()))?;
    if let Some(it) = index_tmp {
        it.persist(&index)
            .with_context(|| format!("renaming to {}", index.display()))?;
    }
    side_tmp
        .persist(&sidecar)
        .with_context(|| format!("renaming to {}", sidecar.display()))?;
    man_tmp
        .persist(&manifest)
        .with_context(|| format!("renaming to {}", manifest.display()))?;
    tracing::info!(
        "{}: {} bytes, {} entries, {} duplicates, {:.1}s",
        img.display(),
        m.size,
        m.entries,
        m.duplicates,
        t0.elapsed().as_secs_f64()
    );
    Ok(m)
}

fn hash_file(p: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn kernels(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["lib/modules", "usr/lib/modules"] {
        if let Some(id) = tree.lookup(dir) {
            if let Kind::Dir(ch) = &tree.nodes[id].kind {
                for &c in ch {
                    if matches!(tree.nodes[c].kind, Kind::Dir(_)) {
                        out.push(String::from_utf8_lossy(&tree.nodes[c].name).into_owned());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The version nodectl carries after [`NODECTL_VERSION_MARKER`].
fn nodectl_version(tree: &Tree) -> Result<Option<String>> {
    let Some(id) = tree.lookup("usr/bin/nodectl") else {
        return Ok(None);
    };
    let Kind::File { size, .. } = tree.nodes[id].kind else {
        return Ok(None);
    };
    let r = tree.content_reader(id)?;
    let mut buf = vec![0u8; size.min(64 << 20) as usize];
    r.read_at(0, &mut buf)?;
    let m = NODECTL_VERSION_MARKER;
    Ok(buf.windows(m.len()).position(|w| w == m).map(|at| {
        let v = &buf[at + m.len()..];
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len()).min(64);
        String::from_utf8_lossy(&v[..end]).into_owned()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let (i, s, j, x) = outputs(Path::new("/x/live.squashfs")).unwrap();
        assert_eq!(i, Path::new("/x/live.squashfs"));
        assert_eq!(s, Path::new("/x/live.squashfs.sha256"));
        assert_eq!(j, Path::new("/x/live.json"));
        assert_eq!(x, Path::new("/x/live.caibx"));
        let (_, _, j, _) = outputs(Path::new("img")).unwrap();
        assert_eq!(j, Path::new("img.json"));
    }

    #[test]
    fn chunk_size_argument() {
        let p = parse_chunk_size("16:64:256").unwrap();
        assert_eq!((p.min, p.avg, p.max), (16 << 10, 64 << 10, 256 << 10));
        assert!(parse_chunk_size("16:64")
            .unwrap_err()
            .contains("want MIN:AVG:MAX"));
        assert!(parse_chunk_size("16:60:256")
            .unwrap_err()
            .contains("power of two"));
        assert!(parse_chunk_size("1:x:2").unwrap_err().contains("\"x\""));
    }
}
