//! Telling the kernel: exclusive opens, the whole-disk lock udev honours,
//! `BLKRRPART` (re-read the partition table) and `BLKPG` (add or delete one
//! partition, what `partx` does).
//!
//! `BLKRRPART` alone is not enough everywhere: a kernel built without
//! `CONFIG_EFI_PARTITION` (some VM and container kernels) re-reads nothing
//! from a GPT. After the re-read we compare the kernel's partitions (sysfs)
//! with the table we wrote and add or delete the difference with `BLKPG`,
//! so the partition device nodes exist in every case.
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::probe::{self, DevNum, KernelPart};

mod ioctl {
    nix::ioctl_none!(blkrrpart, 0x12, 95);
    nix::ioctl_write_ptr_bad!(
        blkpg,
        nix::request_code_none!(0x12, 105),
        super::BlkpgIoctlArg
    );
}

/// `struct blkpg_ioctl_arg` (linux/blkpg.h).
#[repr(C)]
pub struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

/// Open the whole disk for writing, exclusively (`O_EXCL` on a block
/// device: fails while anything has it or a partition mounted or claimed).
pub fn open_exclusive(node: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(node)
        .with_context(|| {
            format!(
                "opening {} exclusively (is it or one of its partitions in use?)",
                node.display()
            )
        })
}

/// A BSD lock on the whole disk, held for the whole operation: udev (and
/// systemd tools) leave a locked disk alone, so nothing probes or
/// re-reads its partitions half-way (systemd's "block device locking").
pub struct DiskLock {
    _file: File,
}

/// Take the lock, waiting up to `wait` for another holder.
pub fn lock(node: &Path, wait: Duration) -> Result<DiskLock> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(node)
        .with_context(|| format!("opening {}", node.display()))?;
    let start = Instant::now();
    loop {
        // SAFETY: flock on an fd we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(DiskLock { _file: file });
        }
        let e = Errno::last();
        if e != Errno::EWOULDBLOCK || start.elapsed() >= wait {
            return Err(e).with_context(|| {
                format!(
                    "locking {} (another program holds its lock: a partitioning tool or udev?)",
                    node.display()
                )
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `BLKRRPART`, retried while the kernel says busy (udev probing a
/// partition holds it open for a moment).
pub fn reread(disk: &File, node: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        // SAFETY: BLKRRPART takes no argument; the fd is an open block device.
        match unsafe { ioctl::blkrrpart(disk.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            Err(Errno::EBUSY) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(Errno::EINVAL) => bail!(
                "the kernel keeps no partitions on {} (a loop device attached without --partscan?)",
                node.display()
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "re-reading the partition table of {} (BLKRRPART)",
                        node.display()
                    )
                })
            }
        }
    }
}

fn blkpg(disk: &File, op: libc::c_int, pno: u32, start: u64, length: u64) -> nix::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: arg points to a blkpg_partition that outlives the call.
    unsafe { ioctl::blkpg(disk.as_raw_fd(), &arg) }.map(drop)
}

/// A partition the kernel should know: number, start and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

/// Make the kernel's partitions of the disk equal `want`: `BLKRRPART`,
/// then `BLKPG` for whatever the re-read did not give, then wait for the
/// device nodes. Returns the kernel's partitions.
pub fn sync_partitions(
    disk: &File,
    node: &Path,
    sysdir: &Path,
    dev: &Path,
    want: &[Want],
) -> Result<Vec<KernelPart>> {
    reread(disk, node)?;
    let have = probe::read_partitions(sysdir, dev);
    let same = |k: &KernelPart, w: &Want| {
        k.number == w.number && k.start_bytes == w.start && k.size_bytes == w.size
    };
    let mut told = false;
    for k in &have {
        if !want.iter().any(|w| same(k, w)) {
            blkpg(disk, BLKPG_DEL_PARTITION, k.number, 0, 0).with_context(|| {
                format!(
                    "removing stale partition {} of {} (BLKPG)",
                    k.number,
                    node.display()
                )
            })?;
            told = true;
        }
    }
    for w in want {
        if !have.iter().any(|k| same(k, w)) {
            blkpg(disk, BLKPG_ADD_PARTITION, w.number, w.start, w.size).with_context(|| {
                format!(
                    "adding partition {} to {} (BLKPG)",
                    w.number,
                    node.display()
                )
            })?;
            told = true;
        }
    }
    if told {
        tracing::info!(
            "the kernel did not take the new table of {} from BLKRRPART (no GPT support built in?): \
             set its partitions with BLKPG",
            node.display()
        );
    }
    let parts = probe::read_partitions(sysdir, dev);
    for w in want {
        let Some(k) = parts.iter().find(|k| same(k, w)) else {
            bail!(
                "the kernel does not show partition {} of {} after re-reading its table",
                w.number,
                node.display()
            );
        };
        wait_node(&k.node, k.devnum, Duration::from_secs(5))?;
    }
    Ok(parts)
}

/// Wait until `node` is the block device `dn` (devtmpfs or udev makes it).
pub fn wait_node(node: &Path, dn: DevNum, wait: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if probe::block_devnum(node) == Some(dn) {
            return Ok(());
        }
        if start.elapsed() >= wait {
            bail!(
                "the device node {} ({}:{}) did not appear within {} s",
                node.display(),
                dn.0,
                dn.1,
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kernel's name for partition `n` of disk `disk` (sda → sda1,
/// nvme0n1 → nvme0n1p1, loop0 → loop0p1).
pub fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// `/dev/<partition_name>`.
pub fn partition_node(dev: &Path, disk: &str, n: u32) -> PathBuf {
    dev.join(partition_name(disk, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(partition_name("sda", 2), "sda2");
        assert_eq!(partition_name("nvme0n1", 1), "nvme0n1p1");
        assert_eq!(partition_name("loop7", 1), "loop7p1");
        assert_eq!(partition_name("vdb", 1), "vdb1");
    }

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }
}
