//! The live image cache on the node's disk: the images `nodectl initrd`
//! verified, kept on the partition `nodectl format-disk --cache-partition`
//! makes (GPT name and ext4 label `nodeboot-cache`), so that an unchanged
//! reboot downloads no image bytes.
//!
//! ```text
//! <cache>/images/<sha256>.squashfs     an image, named by its digest
//! <cache>/images/<sha256>.<anything>   companions of that image (e.g. a
//!                                      chunk index <sha256>.caidx): kept
//!                                      with it, evicted with it
//! <cache>/images/.tmp-<sha256>.*       a store under way (removed at open)
//! ```
//!
//! An image is stored only after its sha256 was verified against the digest
//! the boot pins (command line or sidecar), through a temporary file that is
//! fsynced and renamed, so a crash never leaves a partial image under a
//! final name. A name is only a claim: [`Cache::verify`] hashes the whole
//! file again before it is booted (a flipped byte anywhere is caught), and a
//! file that does not match its name is deleted.
//!
//! Eviction: at most `keep` images (the oldest by modification time go
//! first; a hit touches its image), and before a store the oldest others
//! go until the new image fits. Every failure here is one the caller turns
//! into "boot from the network", never a failed boot.
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// The cache's subdirectory for images.
pub const IMAGES: &str = "images";
/// An image's file name: `<sha256>` + this.
pub const IMAGE_SUFFIX: &str = ".squashfs";
/// Prefix of a store under way.
const TMP_PREFIX: &str = ".tmp-";
/// Room left free beside a stored image (ext4 metadata, the journal).
const SLACK: u64 = 4 << 20;
/// Read size while hashing.
const BUF: usize = 1 << 20;

/// Why the cache could not do what was asked; each is a reason to use the
/// network instead, never to fail the boot.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cached file does not hash to its name; it was deleted.
    #[error(
        "the cached image {} is corrupt: its sha256 is {actual}, its name says {expected}; {}",
        .path.display(),
        if *.deleted { "deleted it" } else { "could not delete it" }
    )]
    Corrupt {
        path: PathBuf,
        expected: String,
        actual: String,
        deleted: bool,
    },
    /// Not room enough even with every other image evicted.
    #[error(
        "the live image cache {} is full: the image needs {need} bytes, {free} are free \
         with every other image evicted (a bigger --cache-partition holds it)",
        .dir.display()
    )]
    Full { dir: PathBuf, need: u64, free: u64 },
    /// `digest` is not 64 lowercase hexadecimal digits.
    #[error("{0:?} is not a sha256 digest (64 lowercase hexadecimal digits)")]
    BadDigest(String),
    #[error("{what} {}: {error}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |error| CacheError::Io {
        what,
        path: path.to_path_buf(),
        error,
    }
}

/// One image the cache holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    pub digest: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// Last stored or booted (seconds since the epoch).
    pub used: u64,
    /// Files kept with it (`<digest>.<ext>` beside it).
    pub companions: Vec<PathBuf>,
}

/// What [`Cache::verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub path: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
}

/// What [`Cache::store`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stored {
    pub path: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    /// Digests evicted to make room or to keep at most `keep` images.
    pub evicted: Vec<String>,
}

/// Is `s` a sha256 as the cache names files: 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The sha256 of `bytes`, hex.
pub fn sha256_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 of the file at `path`, hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64), CacheError> {
    let mut f = File::open(path).map_err(io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io("reading", path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The live image cache in a directory (the mounted cache partition).
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    images: PathBuf,
    keep: usize,
}

impl Cache {
    /// Open the cache in `dir` (made if missing); leftovers of an
    /// interrupted store are removed. Keeps [`crate::cmdline::DEFAULT_CACHE_KEEP`]
    /// images unless [`Cache::keep`] says otherwise.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        let images = dir.join(IMAGES);
        std::fs::create_dir_all(&images).map_err(io("creating", &images))?;
        let c = Cache {
            dir: dir.to_path_buf(),
            images,
            keep: crate::cmdline::DEFAULT_CACHE_KEEP,
        };
        for e in std::fs::read_dir(&c.images).map_err(io("reading", &c.images))? {
            let e = e.map_err(io("reading", &c.images))?;
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = e.path();
                tracing::info!(
                    "cache: removing {} (a store that did not finish)",
                    p.display()
                );
                std::fs::remove_file(&p).map_err(io("removing", &p))?;
            }
        }
        Ok(c)
    }

    /// Keep at most `n` images (at least 1).
    pub fn keep(mut self, n: usize) -> Cache {
        self.keep = n.max(1);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the image `digest` is (or would be) kept.
    pub fn image_path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        if !is_digest(digest) {
            return Err(CacheError::BadDigest(digest.to_string()));
        }
        Ok(self.images.join(format!("{digest}{IMAGE_SUFFIX}")))
    }

    /// A companion file of the image `digest`: `<digest>.<ext>` beside it
    /// (e.g. `caidx`). Kept and evicted with the image.
    pub fn companion_path(&self, digest: &str, ext: &str) -> Result<PathBuf, CacheError> {
        if !is_digest(digest) {
            return Err(CacheError::BadDigest(digest.to_string()));
        }
        if ext.is_empty() || ext.contains(['/', '\0']) || format!(".{ext}") == IMAGE_SUFFIX {
            return Err(CacheError::BadDigest(format!("{digest}.{ext}")));
        }
        Ok(self.images.join(format!("{digest}.{ext}")))
    }

    /// The cached file of `digest` when there is one (a regular file, not
    /// a link); not verified: see [`Cache::verify`].
    pub fn lookup(&self, digest: &str) -> Option<PathBuf> {
        let p = self.image_path(digest).ok()?;
        std::fs::symlink_metadata(&p)
            .ok()
            .filter(|m| m.is_file())
            .map(|_| p)
    }

    /// Hash the cached image of `digest` whole; it must hash to its name.
    /// A mismatch deletes it (and its companions) and is
    /// [`CacheError::Corrupt`]. A match marks it as just used.
    pub fn verify(&self, digest: &str) -> Result<Verified, CacheError> {
        let t = Instant::now();
        let path = self.image_path(digest)?;
        let (actual, bytes) = sha256_file(&path)?;
        if actual != digest {
            let deleted = self.remove(digest).is_ok();
            return Err(CacheError::Corrupt {
                path,
                expected: digest.to_string(),
                actual,
                deleted,
            });
        }
        touch(&path);
        Ok(Verified {
            path,
            bytes,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Store `src`, whose sha256 the caller verified to be `digest`:
    /// evict what must go for it to fit, copy it to a temporary file,
    /// fsync, rename, fsync the directory; then keep at most `keep`
    /// images. Storing an image the cache has only marks it as used.
    pub fn store(&self, digest: &str, src: &Path) -> Result<Stored, CacheError> {
        let t = Instant::now();
        let dest = self.image_path(digest)?;
        let need = std::fs::metadata(src).map_err(io("reading", src))?.len();
        let mut evicted = Vec::new();
        if self.lookup(digest).is_some() {
            touch(&dest);
        } else {
            // Oldest first.
            let mut others: Vec<CachedImage> = self.images()?;
            others.reverse();
            // Evict nothing for an image that cannot fit anyway.
            let free = self.free()?;
            let could = free.saturating_add(others.iter().map(|o| o.bytes).sum());
            if could < need + SLACK {
                return Err(CacheError::Full {
                    dir: self.dir.clone(),
                    need,
                    free: could,
                });
            }
            let mut others = others.into_iter();
            loop {
                let free = self.free()?;
                if free >= need + SLACK {
                    break;
                }
                match others.next() {
                    Some(o) => {
                        tracing::info!(
                            "cache: evicting {} ({} bytes) to make room",
                            o.path.display(),
                            o.bytes
                        );
                        self.remove(&o.digest)?;
                        evicted.push(o.digest);
                    }
                    None => {
                        return Err(CacheError::Full {
                            dir: self.dir.clone(),
                            need,
                            free,
                        })
                    }
                }
            }
            let tmp = self
                .images
                .join(format!("{TMP_PREFIX}{digest}{IMAGE_SUFFIX}"));
            if let Err(e) = copy_synced(src, &tmp) {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    CacheError::Io { error, .. } if error.raw_os_error() == Some(libc::ENOSPC) => {
                        CacheError::Full {
                            dir: self.dir.clone(),
                            need,
                            free: self.free().unwrap_or(0),
                        }
                    }
                    e => e,
                });
            }
            if let Err(e) = std::fs::rename(&tmp, &dest) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io("renaming into", &dest)(e));
            }
            File::open(&self.images)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", &self.images))?;
        }
        // At most `keep` images, the newest ones (this one was just touched).
        for o in self.images()?.into_iter().skip(self.keep) {
            if o.digest != digest {
                tracing::info!(
                    "cache: evicting {} (keeping {} images)",
                    o.path.display(),
                    self.keep
                );
                self.remove(&o.digest)?;
                evicted.push(o.digest);
            }
        }
        Ok(Stored {
            path: dest,
            bytes: need,
            seconds: t.elapsed().as_secs_f64(),
            evicted,
        })
    }

    /// The images held, most recently used first. Each was verified when
    /// stored; [`Cache::verify`] checks one again.
    pub fn images(&self) -> Result<Vec<CachedImage>, CacheError> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.images).map_err(io("reading", &self.images))? {
            let e = e.map_err(io("reading", &self.images))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        let mut v = Vec::new();
        for n in &names {
            let Some(digest) = n.strip_suffix(IMAGE_SUFFIX).filter(|d| is_digest(d)) else {
                continue;
            };
            let path = self.images.join(n);
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            let used = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let mut companions: Vec<PathBuf> = names
                .iter()
                .filter(|c| *c != n && c.starts_with(&format!("{digest}.")))
                .map(|c| self.images.join(c))
                .collect();
            companions.sort();
            v.push(CachedImage {
                digest: digest.to_string(),
                path,
                bytes: m.len(),
                used,
                companions,
            });
        }
        v.sort_by(|a, b| b.used.cmp(&a.used).then(a.digest.cmp(&b.digest)));
        Ok(v)
    }

    /// Remove the image `digest` and its companions.
    pub fn remove(&self, digest: &str) -> Result<(), CacheError> {
        let prefix = format!("{digest}.");
        if !is_digest(digest) {
            return Err(CacheError::BadDigest(digest.to_string()));
        }
        for e in std::fs::read_dir(&self.images).map_err(io("reading", &self.images))? {
            let e = e.map_err(io("reading", &self.images))?;
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let p = e.path();
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io("removing", &p)(err)),
                }
            }
        }
        Ok(())
    }

    /// Bytes free for us on the cache's filesystem.
    fn free(&self) -> Result<u64, CacheError> {
        let s = nix::sys::statvfs::statvfs(&self.images).map_err(|e| CacheError::Io {
            what: "statvfs",
            path: self.images.clone(),
            error: e.into(),
        })?;
        Ok(s.blocks_available().saturating_mul(s.fragment_size()))
    }
}

/// Mark `p` as just used (its mtime); best effort (a read-only cache still
/// serves).
fn touch(p: &Path) {
    let r = OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = r {
        tracing::debug!("cache: could not touch {}: {e}", p.display());
    }
}

/// Copy `src` to a new file `dst` (mode 0644) and fsync it.
fn copy_synced(src: &Path, dst: &Path) -> Result<(), CacheError> {
    let mut from = File::open(src).map_err(io("opening", src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(dst)
        .map_err(io("creating", dst))?;
    let mut buf = vec![0u8; BUF];
    loop {
        let k = from.read(&mut buf).map_err(io("reading", src))?;
        if k == 0 {
            break;
        }
        to.write_all(&buf[..k]).map_err(io("writing", dst))?;
    }
    to.sync_all().map_err(io("syncing", dst))
}

// ---------------------------------------------------------------------------
// The cache partition

/// Why the node's cache partition is not there to use.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(
        "no partition named {name} (the kernel lists none in {}; nodectl format-disk \
         --cache-partition makes one)",
        .sys_block.display()
    )]
    Missing { name: String, sys_block: PathBuf },
    #[error(
        "mounting the cache partition {} (ext4) on {}: {error} (a corrupt or foreign \
         filesystem? see dmesg; fsck.ext4 repairs it, nodectl format-disk --wipe \
         --cache-partition remakes it)",
        .device.display(), .dir.display()
    )]
    Mount {
        device: PathBuf,
        dir: PathBuf,
        error: nix::errno::Errno,
    },
    #[error("{what} {}: {error}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The partitions whose GPT name is `name`, from the kernel's uevents
/// (`<sys_block>/<dev>/uevent` has `PARTNAME=` for GPT partitions): no
/// udev needed, which the initramfs may not have settled yet. A partition
/// without `PARTNAME=` (a kernel built without GPT parsing, whose
/// partitions were added with BLKPG) is taken when its ext4 label is
/// `name`. Device paths are `<dev>/<DEVNAME>`, sorted.
pub fn find_partitions(sys_block: &Path, dev: &Path, name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return v;
    };
    for e in rd.flatten() {
        // A uevent file is a few hundred bytes; read a bounded prefix.
        let mut text = String::new();
        let ok = File::open(e.path().join("uevent"))
            .and_then(|f| f.take(8192).read_to_string(&mut text))
            .is_ok();
        if !ok {
            continue;
        }
        let (mut devname, mut partname, mut partition) = (None, None, false);
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("DEVNAME=") {
                devname = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("PARTNAME=") {
                partname = Some(v.to_string());
            } else if l == "DEVTYPE=partition" {
                partition = true;
            }
        }
        let Some(node) = devname
            .filter(|d| !d.is_empty() && !d.contains(".."))
            .map(|d| dev.join(d))
        else {
            continue;
        };
        let found = match partname {
            Some(p) => p == name,
            None => partition && ext4_label(&node).as_deref() == Some(name),
        };
        if found {
            v.push(node);
        }
    }
    v.sort();
    v
}

/// The label of the ext4 (ext2/3) filesystem on `device`, if it has one:
/// `s_volume_name` of the superblock at byte 1024 (magic 0xEF53 at 56).
pub fn ext4_label(device: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = File::open(device).ok()?;
    let mut sb = [0u8; 136];
    f.read_exact_at(&mut sb, 1024).ok()?;
    if sb[56..58] != [0x53, 0xEF] {
        return None;
    }
    let raw = &sb[120..136];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    std::str::from_utf8(&raw[..end])
        .ok()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Where the node's cache is, in the initramfs and in the booted system
/// (the mount moves with /run at switch-root).
pub fn mount_dir(run: &Path) -> PathBuf {
    run.join("nodeboot/cache")
}

/// Find the cache partition (GPT name [`crate::disk::plan::CACHE_PART_NAME`])
/// and mount it (ext4, nosuid, nodev, noexec) on `dir`, unless something is
/// mounted there already. Returns the device.
pub fn mount_partition(
    sys_block: &Path,
    dev: &Path,
    dir: &Path,
) -> Result<PathBuf, PartitionError> {
    use crate::disk::plan::CACHE_PART_NAME;
    let found = find_partitions(sys_block, dev, CACHE_PART_NAME);
    let Some(device) = found.first().cloned() else {
        return Err(PartitionError::Missing {
            name: CACHE_PART_NAME.into(),
            sys_block: sys_block.to_path_buf(),
        });
    };
    if found.len() > 1 {
        tracing::warn!(
            "cache: {} partitions are named {CACHE_PART_NAME} ({}); using {}",
            found.len(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            device.display()
        );
    }
    mount_device(&device, dir)?;
    Ok(device)
}

/// Mount `device` (ext4, nosuid, nodev, noexec, noatime) on `dir` (made if
/// missing), unless something is mounted there already.
pub fn mount_device(device: &Path, dir: &Path) -> Result<(), PartitionError> {
    std::fs::create_dir_all(dir).map_err(|error| PartitionError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        error,
    })?;
    if is_mounted(dir) {
        tracing::info!("cache: {} is mounted already", dir.display());
        return Ok(());
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some(device),
        dir,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|error| PartitionError::Mount {
        device: device.to_path_buf(),
        dir: dir.to_path_buf(),
        error,
    })
}

fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|mi| {
            crate::disk::probe::parse_mountinfo(&mi)
                .iter()
                .any(|m| m.mountpoint == dir)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn image(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, String) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        (p, digest_of(bytes))
    }

    #[test]
    fn store_lookup_verify() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(&d.path().join("cache")).unwrap();
        let (src, dg) = image(d.path(), "a", &[7u8; 300_000]);
        assert_eq!(c.lookup(&dg), None);
        let s = c.store(&dg, &src).unwrap();
        assert_eq!(s.bytes, 300_000);
        assert_eq!(s.path, d.path().join(format!("cache/images/{dg}.squashfs")));
        assert_eq!(c.lookup(&dg), Some(s.path.clone()));
        assert_eq!(std::fs::read(&s.path).unwrap(), vec![7u8; 300_000]);
        let v = c.verify(&dg).unwrap();
        assert_eq!(v.bytes, 300_000);
        let imgs = c.images().unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].digest, dg);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(d.path().join("cache/images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A flipped byte anywhere (here: the last one) is caught; the file is
    /// deleted, with a message naming it and both digests.
    #[test]
    fn a_flipped_byte_is_caught_and_the_file_deleted() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let (src, dg) = image(d.path(), "a", &[1u8; 100_000]);
        let p = c.store(&dg, &src).unwrap().path;
        let companion = c.companion_path(&dg, "caidx").unwrap();
        std::fs::write(&companion, "index").unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b[99_999] ^= 0x01;
        std::fs::write(&p, &b).unwrap();
        let e = c.verify(&dg).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, CacheError::Corrupt { deleted: true, .. }),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!(
                "the cached image {} is corrupt: its sha256 is ",
                p.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("its name says {dg}; deleted it")),
            "{msg}"
        );
        assert_eq!(c.lookup(&dg), None);
        assert!(!companion.exists(), "the companion goes with the image");
        assert!(c.images().unwrap().is_empty());
    }

    #[test]
    fn keeps_at_most_n_newest_with_companions() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap().keep(2);
        let mut dgs = Vec::new();
        for i in 0..3u8 {
            let (src, dg) = image(d.path(), &format!("src{i}"), &[i; 1000]);
            let s = c.store(&dg, &src).unwrap();
            std::fs::write(c.companion_path(&dg, "caidx").unwrap(), [i]).unwrap();
            // Distinct mtimes, oldest first.
            let f = OpenOptions::new().write(true).open(&s.path).unwrap();
            f.set_modified(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + u64::from(i)),
            )
            .unwrap();
            dgs.push(dg);
        }
        // The third store evicted the first.
        let imgs = c.images().unwrap();
        let held: Vec<&str> = imgs.iter().map(|i| i.digest.as_str()).collect();
        assert_eq!(held, [dgs[2].as_str(), dgs[1].as_str()]);
        assert_eq!(
            imgs[0].companions,
            [c.companion_path(&dgs[2], "caidx").unwrap()]
        );
        assert!(!c.companion_path(&dgs[0], "caidx").unwrap().exists());
        // Storing an image it holds marks it as used, evicts nothing.
        let (src, _) = image(d.path(), "again", &[1u8; 1000]);
        let s = c.store(&dgs[1], &src).unwrap();
        assert!(s.evicted.is_empty());
        assert_eq!(c.images().unwrap()[0].digest, dgs[1]);
    }

    #[test]
    fn leftovers_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let imgs = d.path().join("images");
        std::fs::create_dir_all(&imgs).unwrap();
        std::fs::write(imgs.join(format!(".tmp-{}.squashfs", "a".repeat(64))), "x").unwrap();
        std::fs::write(imgs.join("notes.txt"), "x").unwrap();
        std::fs::write(imgs.join("ABC.squashfs"), "x").unwrap();
        let c = Cache::open(d.path()).unwrap();
        assert!(!imgs
            .join(format!(".tmp-{}.squashfs", "a".repeat(64)))
            .exists());
        assert!(
            c.images().unwrap().is_empty(),
            "only <sha256>.squashfs are images"
        );
        let e = c.image_path("../../etc/passwd").unwrap_err().to_string();
        assert!(e.contains("is not a sha256 digest"), "{e}");
        assert_eq!(c.lookup("../x"), None);
        // A link under an image's name is not an image.
        let dg = "b".repeat(64);
        std::os::unix::fs::symlink("/etc/passwd", imgs.join(format!("{dg}.squashfs"))).unwrap();
        assert_eq!(c.lookup(&dg), None);
        assert!(c.images().unwrap().is_empty());
    }

    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A real full filesystem (a 2 MiB tmpfs): the store fails with a
    /// message that names the cache, the need and the room, and leaves no
    /// partial file; what it held before is still there.
    #[test]
    fn a_full_cache_says_so_and_keeps_nothing_partial() {
        if !is_root() {
            eprintln!("SKIP: needs root (mounts a tmpfs)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=8m"),
        )
        .unwrap();
        struct Umount(PathBuf);
        impl Drop for Umount {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _u = Umount(dir.clone());
        let c = Cache::open(&dir).unwrap();
        let (small, ds) = image(d.path(), "small", &[3u8; 1 << 20]);
        c.store(&ds, &small).unwrap();
        let (big, db) = image(d.path(), "big", &vec![4u8; 12 << 20]);
        let e = c.store(&db, &big).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CacheError::Full { .. }), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "the live image cache {} is full: the image needs 12582912 bytes",
                dir.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("with every other image evicted"), "{msg}");
        let names: Vec<_> = std::fs::read_dir(dir.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
        assert_eq!(c.lookup(&db), None);
        assert!(
            c.lookup(&ds).is_some(),
            "nothing evicted for an image that cannot fit"
        );
    }

    #[test]
    fn partitions_are_found_by_their_gpt_name_in_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("class/block");
        for (n, ev) in [
            ("vda", "MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=9\n"),
            (
                "vda1",
                "MAJOR=253\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=nodeboot-key\n",
            ),
            (
                "vda2",
                "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=nodeboot-cache\n",
            ),
            ("loop0", "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n"),
            // No PARTNAME (a kernel without GPT parsing): found by its ext4 label.
            ("loop0p1", "MAJOR=259\nMINOR=0\nDEVNAME=loop0p1\nDEVTYPE=partition\nPARTN=1\n"),
            ("loop0p2", "MAJOR=259\nMINOR=1\nDEVNAME=loop0p2\nDEVTYPE=partition\nPARTN=2\n"),
        ] {
            std::fs::create_dir_all(sys.join(n)).unwrap();
            std::fs::write(sys.join(n).join("uevent"), ev).unwrap();
        }
        let dev = &d.path().join("dev");
        std::fs::create_dir_all(dev).unwrap();
        let ext4 = |label: &[u8]| {
            let mut b = vec![0u8; 4096];
            b[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
            b[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label);
            b
        };
        std::fs::write(dev.join("loop0p1"), ext4(b"nodeboot-cache")).unwrap();
        std::fs::write(dev.join("loop0p2"), ext4(b"scratch")).unwrap();
        assert_eq!(ext4_label(&dev.join("loop0p2")).as_deref(), Some("scratch"));
        assert_eq!(ext4_label(&dev.join("nothing")), None);
        std::fs::write(dev.join("vda1"), vec![0u8; 4096]).unwrap();
        assert_eq!(ext4_label(&dev.join("vda1")), None, "no ext4 magic");
        assert_eq!(
            find_partitions(&sys, dev, "nodeboot-cache"),
            [dev.join("loop0p1"), dev.join("vda2")]
        );
        assert!(find_partitions(&sys, dev, "nodeboot-nothing").is_empty());
        assert!(find_partitions(&d.path().join("none"), dev, "nodeboot-cache").is_empty());
        // Missing: the message an operator reads.
        let e = mount_partition(&d.path().join("none"), dev, &d.path().join("mnt")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no partition named nodeboot-cache (the kernel lists none in {}; nodectl \
                 format-disk --cache-partition makes one)",
                d.path().join("none").display()
            )
        );
    }
}
