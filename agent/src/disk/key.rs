//! `nodectl install-key DEVICE KEYFILE`: write the deploy key into the key
//! partition as `key`, mode 0600, owner root, atomically, and check it.
//!
//! The key partition is ext4 (labelled `nodeboot-key`) rather than vfat:
//! ext4 stores the 0600 mode and root ownership the key needs (vfat has no
//! permissions: they would come from mount options on every mount), its
//! journal makes the rename atomic across a power cut, and every kernel
//! that boots a node mounts it without another module or tool.
//!
//! The key is never printed or logged: only its length.
use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::plan::{KEY_FS_LABEL, KEY_PART_NAME};
use super::probe::{self, System};
use super::{gpt, Tools};

/// The file name of the key on the key partition.
pub const KEY_NAME: &str = "key";
/// Larger files are refused: a deploy key is a few KiB.
pub const KEY_MAX_BYTES: u64 = 64 * 1024;

/// What install-key did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The key partition.
    pub partition: PathBuf,
    /// Path of the key inside that filesystem.
    pub file: String,
    pub bytes: u64,
    pub mode: String,
    pub owner: String,
    pub verified: bool,
}

/// Find the key partition: DEVICE itself when it is a partition named or
/// labelled nodeboot-key, or the partition named nodeboot-key of a disk.
pub fn find_key_partition(device: &Path, sys: &System, tools: &Tools) -> Result<PathBuf> {
    let dev = probe::resolve(device, sys).map_err(|e| anyhow!("{}: {e}", device.display()))?;
    let shown = dev.shown();
    match &dev.partition {
        None => {
            let facts = probe::read_facts(&dev.sysdir, dev.devnum, &sys.udev_data);
            let lbs = facts.logical_sector_size;
            let mut f =
                File::open(&dev.node).with_context(|| format!("opening {}", dev.node.display()))?;
            let table = gpt::read(&mut f, facts.size_bytes / lbs, lbs)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("reading the GPT of {shown}"))?
                .ok_or_else(|| {
                    anyhow!(
                        "{shown} has no GPT (nodectl format-disk --key-partition 64M makes one)"
                    )
                })?;
            let e = table
                .entries
                .iter()
                .find(|e| e.name == KEY_PART_NAME)
                .ok_or_else(|| {
                    anyhow!(
                        "{shown} has no partition named {KEY_PART_NAME} \
                         (nodectl format-disk --key-partition 64M makes one)"
                    )
                })?;
            let kparts = probe::read_partitions(&dev.sysdir, &sys.dev);
            let k = kparts
                .iter()
                .find(|k| {
                    k.number == e.number
                        && k.start_bytes == e.first_lba * lbs
                        && k.size_bytes == (e.last_lba + 1 - e.first_lba) * lbs
                })
                .ok_or_else(|| {
                    anyhow!(
                        "the kernel does not list partition {} ({KEY_PART_NAME}) of {shown}: \
                         run partx --add {}",
                        e.number,
                        dev.node.display()
                    )
                })?;
            Ok(k.node.clone())
        }
        Some((number, disk)) => {
            // Its GPT name (from the parent's table), or its fs label.
            let named = probe::sysdir_of_name(&sys.sys, disk)
                .and_then(|dir| {
                    let facts = probe::read_facts(&dir, (0, 0), &sys.udev_data);
                    let lbs = facts.logical_sector_size;
                    let mut f = File::open(sys.dev.join(disk)).ok()?;
                    gpt::read(&mut f, facts.size_bytes / lbs, lbs)
                        .ok()
                        .flatten()
                })
                .and_then(|t| t.entries.into_iter().find(|e| e.number == *number))
                .map(|e| e.name);
            let sigs = probe::signatures(&tools.wipefs, &dev.node)?;
            let labelled = sigs
                .iter()
                .any(|s| s.label.as_deref() == Some(KEY_FS_LABEL));
            if named.as_deref() != Some(KEY_PART_NAME) && !labelled {
                bail!(
                    "{shown} is not a nodeboot key partition: its GPT name is {:?} and no \
                     filesystem on it is labelled {KEY_FS_LABEL} (nodectl format-disk \
                     --key-partition 64M makes one)",
                    named.unwrap_or_default()
                );
            }
            Ok(dev.node.clone())
        }
    }
}

/// A mount on a private temporary directory, unmounted and removed on drop
/// (every path, errors included).
struct TempMount {
    dir: PathBuf,
    mounted: bool,
}

impl TempMount {
    fn new(parent: &Path, source: &Path, fstype: &str) -> Result<TempMount> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!("nodectl-key.{}", super::gpt::Guid::random()?);
        let dir = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making the temporary directory {}", dir.display()))?;
        let mut guard = TempMount {
            dir,
            mounted: false,
        };
        mount(
            Some(source),
            &guard.dir,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "mounting {} ({fstype}) on {}",
                source.display(),
                guard.dir.display()
            )
        })?;
        guard.mounted = true;
        Ok(guard)
    }

    /// Unmount now, reporting failure (drop only logs).
    fn finish(mut self) -> Result<()> {
        let r = self.unmount();
        let _ = std::fs::remove_dir(&self.dir);
        self.mounted = false;
        r
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..10 {
            match umount2(&self.dir, MntFlags::empty()) {
                Ok(()) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Still busy: detach it so nothing is left in the tree.
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        self.mounted = false;
        Err(anyhow!(
            "unmounting {}: {} (detached lazily)",
            self.dir.display(),
            last.map(|e| e.to_string()).unwrap_or_default()
        ))
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!("{e:#}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Read KEYFILE, refusing an empty or oversized one.
fn read_key(keyfile: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(keyfile).with_context(|| format!("opening {}", keyfile.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("reading {}", keyfile.display()))?;
    if !md.is_file() {
        bail!("{} is not a regular file", keyfile.display());
    }
    let mut key = Vec::new();
    (&mut f)
        .take(KEY_MAX_BYTES + 1)
        .read_to_end(&mut key)
        .with_context(|| format!("reading {}", keyfile.display()))?;
    if key.is_empty() {
        bail!("{} is empty", keyfile.display());
    }
    if key.len() as u64 > KEY_MAX_BYTES {
        bail!(
            "{} is larger than {} KiB: not a deploy key",
            keyfile.display(),
            KEY_MAX_BYTES / 1024
        );
    }
    Ok(key)
}

/// Write `key` as `<dir>/key`: a temporary file (0600, root), fsync,
/// rename, fsync of the directory; then read back and compare.
fn write_key(dir: &Path, key: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{KEY_NAME}.tmp"));
    let dst = dir.join(KEY_NAME);
    let _ = std::fs::remove_file(&tmp);
    let r = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        std::os::unix::fs::fchown(&f, Some(0), Some(0))
            .with_context(|| format!("chown root {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", tmp.display()))?;
        f.write_all(key)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r?;
    let md =
        std::fs::symlink_metadata(&dst).with_context(|| format!("reading {}", dst.display()))?;
    if !md.is_file() || md.mode() & 0o7777 != 0o600 || md.uid() != 0 || md.gid() != 0 {
        bail!(
            "{} has mode {:o}, owner {}:{} after writing, expected 0600 root:root",
            dst.display(),
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
    }
    let back = std::fs::read(&dst).with_context(|| format!("reading back {}", dst.display()))?;
    if back != key {
        bail!(
            "the key read back from {} differs from what was written ({} bytes read, {} written)",
            dst.display(),
            back.len(),
            key.len()
        );
    }
    Ok(())
}

/// Install KEYFILE on the key partition of DEVICE.
pub fn install_key(
    device: &Path,
    keyfile: &Path,
    sys: &System,
    tools: &Tools,
) -> Result<KeyReport> {
    let mut key = read_key(keyfile)?;
    let part = find_key_partition(device, sys, tools)?;
    let sigs = probe::signatures(&tools.wipefs, &part)?;
    if !sigs.iter().any(|s| s.kind == "ext4") {
        bail!(
            "{} has no ext4 filesystem (found: {}); nodectl format-disk --key-partition makes one",
            part.display(),
            if sigs.is_empty() {
                "nothing".to_string()
            } else {
                sigs.iter()
                    .map(|s| s.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    tracing::info!("mounting {} to write the key", part.display());
    let m = TempMount::new(&sys.tmp, &part, "ext4")?;
    // The filesystem's root: root-owned, closed to others (lost+found too).
    std::fs::set_permissions(&m.dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 the root of {}", part.display()))?;
    let r = write_key(&m.dir, &key);
    let bytes = key.len() as u64;
    key.iter_mut().for_each(|b| *b = 0);
    r.with_context(|| format!("installing the key on {}", part.display()))?;
    m.finish()?;
    Ok(KeyReport {
        partition: part,
        file: KEY_NAME.into(),
        bytes,
        mode: "0600".into(),
        owner: "root:root".into(),
        verified: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_key_atomic_mode_and_readback() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP write_key_atomic_mode_and_readback: needs root (chown)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        write_key(d.path(), b"secret-1").unwrap();
        write_key(d.path(), b"secret-two").unwrap();
        let p = d.path().join(KEY_NAME);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret-two");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!((md.uid(), md.gid()), (0, 0));
        // no temporary left behind
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_NAME]);
    }

    #[test]
    fn keyfile_checks() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert!(format!("{:#}", read_key(&empty).unwrap_err()).contains("is empty"));
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'k'; 70_000]).unwrap();
        assert!(format!("{:#}", read_key(&big).unwrap_err()).contains("not a deploy key"));
        assert!(format!("{:#}", read_key(d.path()).unwrap_err()).contains("not a regular file"));
        let ok = d.path().join("ok");
        std::fs::write(&ok, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        assert_eq!(read_key(&ok).unwrap().len(), 36);
    }
}
