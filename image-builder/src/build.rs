//! `nodeimg build`: a source tree → `NAME.squashfs`, `NAME.squashfs.sha256`, `NAME.json`.
//!
//! All three are written under temporary names in the output directory and
//! renamed only once every one of them is complete: an error (a bad source,
//! a full disk) leaves nothing under the final names. Archive members are
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

/// The three output names.
fn outputs(out: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
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
    ))
}

pub fn build(a: &Args, sde: Option<u64>) -> Result<Manifest> {
    let t0 = Instant::now();
    let (img, sidecar, manifest) = outputs(&a.output)?;
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
        let (i, s, j) = outputs(Path::new("/x/live.squashfs")).unwrap();
        assert_eq!(i, Path::new("/x/live.squashfs"));
        assert_eq!(s, Path::new("/x/live.squashfs.sha256"));
        assert_eq!(j, Path::new("/x/live.json"));
        let (_, _, j) = outputs(Path::new("img")).unwrap();
        assert_eq!(j, Path::new("img.json"));
    }
}
