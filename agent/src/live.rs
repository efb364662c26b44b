//! Live root: loop-attach the squashfs read-only, mount it as the lower layer,
//! a tmpfs for the upper layer, and overlayfs at `/sysroot`.
//!
//! ```text
//! <run>/nodeboot/live.squashfs ─▶ /dev/loopN (ro, autoclear)
//!   ─▶ <run>/nodeboot/rootfs.ro      squashfs, ro          (lower)
//!      <run>/nodeboot/overlay        tmpfs, mode=0755      (upper/, work/)
//!   ─▶ <sysroot>                     overlay
//! ```
//!
//! The loop device is attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches
//! it when its last user goes away, i.e. when the squashfs is unmounted, so
//! [`unmount_live`] (or a failed [`mount_live`], which rolls back) leaves no
//! device behind.
use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What [`mount_live`] needs; every path is a parameter (tests use a tempdir).
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The verified squashfs (e.g. /run/nodeboot/live.squashfs).
    pub image: PathBuf,
    /// The run directory (/run): lower and overlay live under `<run>/nodeboot/`.
    pub run_dir: PathBuf,
    /// Where the root goes (/sysroot).
    pub sysroot: PathBuf,
    /// Size of the tmpfs upper in MiB (`rd.live.overlay.size=`); None: the
    /// tmpfs default (half of RAM).
    pub overlay_size_mib: Option<u64>,
    /// Written to `<sysroot>/etc/hostname` (`grendel.hostname=`).
    pub hostname: Option<String>,
}

/// What [`mount_live`] did; part of `/run/nodeboot/boot.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub image: PathBuf,
    /// e.g. `/dev/loop0`.
    pub loop_device: String,
    /// The squashfs mount (lower layer).
    pub lower: PathBuf,
    /// The tmpfs holding `upper` and `work`.
    pub overlay: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub sysroot: PathBuf,
    /// Size of the image file.
    pub image_bytes: u64,
    /// Squashfs compression (gzip, xz, zstd, …).
    pub compression: String,
    /// The tmpfs size asked for; None: tmpfs default.
    pub overlay_size_mib: Option<u64>,
    pub hostname: Option<String>,
    pub seconds: f64,
}

// ---------------------------------------------------------------------------
// Squashfs superblock

/// Why an image file cannot be a squashfs root; callers may downcast to it
/// (e.g. to discard the download and fetch again).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{} is not a squashfs image ({found}; a squashfs starts with the magic \"hsqs\")", .path.display())]
    NotSquashfs { path: PathBuf, found: String },
    #[error("{} is a squashfs {major}.{minor} image; the kernel mounts squashfs 4.0 only", .path.display())]
    Version {
        path: PathBuf,
        major: u16,
        minor: u16,
    },
    #[error("{} is truncated: its squashfs superblock says {bytes_used} bytes, the file has {file_bytes}", .path.display())]
    Truncated {
        path: PathBuf,
        bytes_used: u64,
        file_bytes: u64,
    },
}

/// The fields of a squashfs 4.0 superblock that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SquashfsInfo {
    pub file_bytes: u64,
    pub bytes_used: u64,
    pub inodes: u32,
    pub block_size: u32,
    pub compression: String,
}

const SUPERBLOCK_LEN: usize = 96;
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

fn compression_name(id: u16) -> String {
    match id {
        1 => "gzip".into(),
        2 => "lzma".into(),
        3 => "lzo".into(),
        4 => "xz".into(),
        5 => "lz4".into(),
        6 => "zstd".into(),
        n => format!("unknown (id {n})"),
    }
}

/// Check the first bytes of `path` (`head`, at most 96 of them) for a usable
/// squashfs superblock; `file_bytes` is the file's length.
pub fn parse_superblock(
    path: &Path,
    head: &[u8],
    file_bytes: u64,
) -> Result<SquashfsInfo, ImageError> {
    let not = |found: String| ImageError::NotSquashfs {
        path: path.to_path_buf(),
        found,
    };
    if head.is_empty() {
        return Err(not("it is empty".into()));
    }
    if !head.starts_with(SQUASHFS_MAGIC) {
        let start = &head[..head.len().min(16)];
        return Err(not(format!("it starts with \"{}\"", start.escape_ascii())));
    }
    if head.len() < SUPERBLOCK_LEN {
        return Err(not(format!(
            "it has the magic but only {} bytes, less than a {SUPERBLOCK_LEN}-byte superblock",
            head.len()
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap());
    let (major, minor) = (u16_at(28), u16_at(30));
    if major != 4 {
        return Err(ImageError::Version {
            path: path.to_path_buf(),
            major,
            minor,
        });
    }
    let bytes_used = u64_at(40);
    if bytes_used > file_bytes {
        return Err(ImageError::Truncated {
            path: path.to_path_buf(),
            bytes_used,
            file_bytes,
        });
    }
    Ok(SquashfsInfo {
        file_bytes,
        bytes_used,
        inodes: u32_at(4),
        block_size: u32_at(12),
        compression: compression_name(u16_at(20)),
    })
}

/// Read and check the superblock of the image file at `path`.
pub fn read_superblock(path: &Path) -> Result<SquashfsInfo> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !md.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut head = Vec::with_capacity(SUPERBLOCK_LEN);
    (&mut f)
        .take(SUPERBLOCK_LEN as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_superblock(path, &head, md.len())?)
}

/// Is this a squashfs? (the magic "hsqs" and a sane superblock)
pub fn is_squashfs(path: &Path) -> Result<bool> {
    match read_superblock(path) {
        Ok(_) => Ok(true),
        Err(e) if e.downcast_ref::<ImageError>().is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// Loop devices (linux/loop.h)

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (kernel ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopInfo64 {
    fn new(flags: u32, image: &Path) -> Self {
        // SAFETY: the struct is plain integers and byte arrays: all-zero is valid.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.lo_flags = flags;
        // Informational only (losetup -l shows it); the kernel keeps 63 bytes.
        let name = image.as_os_str().as_encoded_bytes();
        let k = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..k].copy_from_slice(&name[..k]);
        info
    }
}

mod ioctl {
    use super::{LoopConfig, LoopInfo64};
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
}

/// How many times to take another free device when others win the race.
const ATTACH_TRIES: u32 = 16;

/// An attached loop device and an open handle on it.
///
/// The device is read-only with autoclear: the kernel detaches it at its last
/// close. Keep the handle until the device is mounted; dropping it after that
/// leaves the device to the mount (released at unmount), dropping it before
/// releases the device.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    number: u32,
    file: File,
}

impl LoopDevice {
    /// e.g. `/dev/loop0`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    /// Detach: `LOOP_CLR_FD` on our own handle (never on a path, which another
    /// process may own by now), then close it. The kernel finishes the detach
    /// at the last close, i.e. here unless the device is mounted.
    pub fn detach(self) -> Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is open.
        match unsafe { ioctl::loop_clr_fd(self.file.as_raw_fd()) } {
            // ENXIO: not bound any more (autoclear already did it).
            Ok(_) | Err(Errno::ENXIO) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("detaching {}", self.path.display())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// `LOOP_CONFIGURE`, falling back to the legacy pair on old kernels.
    Auto,
    /// `LOOP_SET_FD` + `LOOP_SET_STATUS64` only (tests the fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Legacy,
}

/// Attach `image` read-only, with autoclear, to a free loop device.
pub fn attach_loop(image: &Path) -> Result<LoopDevice> {
    attach_loop_with(image, Attach::Auto)
}

fn attach_loop_with(image: &Path, how: Attach) -> Result<LoopDevice> {
    // O_RDONLY: with LOOP_SET_FD this alone makes the device read-only.
    let backing = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (is the loop module loaded?)")?;
    let mut configure = how == Attach::Auto;
    let mut tries = 0;
    loop {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { ioctl::loop_ctl_get_free(ctl.as_raw_fd()) }
            .context("LOOP_CTL_GET_FREE on /dev/loop-control: no free loop device")?;
        let number = u32::try_from(n).context("LOOP_CTL_GET_FREE returned a negative number")?;
        let dev = PathBuf::from(format!("/dev/loop{number}"));
        ensure_loop_node(&dev, number)?;
        let lo = File::open(&dev).with_context(|| format!("opening {}", dev.display()))?;
        let r = if configure {
            loop_configure(&lo, &backing, image)
        } else {
            loop_set_fd(&lo, &backing, image)
        };
        match r {
            Ok(()) => {
                tracing::debug!(
                    "attached {} to {} (read-only, autoclear{})",
                    image.display(),
                    dev.display(),
                    if configure { "" } else { ", LOOP_SET_FD" }
                );
                return Ok(LoopDevice {
                    path: dev,
                    number,
                    file: lo,
                });
            }
            // Another process took the device between GET_FREE and our
            // ioctl: ask for the next free one.
            Err(Errno::EBUSY) if tries + 1 < ATTACH_TRIES => {
                tries += 1;
                tracing::debug!("{} was taken by another process, retrying", dev.display());
                std::thread::sleep(Duration::from_millis(5 * u64::from(tries)));
            }
            // Kernel < 5.8 has no LOOP_CONFIGURE (util-linux falls back the same way).
            Err(e @ (Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS)) if configure => {
                tracing::debug!(
                    "LOOP_CONFIGURE on {}: {e}; falling back to LOOP_SET_FD",
                    dev.display()
                );
                configure = false;
            }
            Err(e) => {
                let why = if e == Errno::EBUSY {
                    anyhow!("{e} (other processes took {ATTACH_TRIES} free devices in a row)")
                } else {
                    anyhow!(e)
                };
                return Err(why).with_context(|| {
                    format!("attaching {} to {}", image.display(), dev.display())
                });
            }
        }
    }
}

fn loop_configure(lo: &File, backing: &File, image: &Path) -> nix::Result<()> {
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64::new(LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR, image),
        reserved: [0; 8],
    };
    // SAFETY: cfg is a struct loop_config that outlives the call.
    unsafe { ioctl::loop_configure(lo.as_raw_fd(), &cfg) }.map(drop)
}

fn loop_set_fd(lo: &File, backing: &File, image: &Path) -> nix::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing fd, which is open.
    unsafe { ioctl::loop_set_fd(lo.as_raw_fd(), backing.as_raw_fd()) }?;
    // READ_ONLY is not settable here (it came from the O_RDONLY backing fd);
    // AUTOCLEAR is.
    let info = LoopInfo64::new(LO_FLAGS_AUTOCLEAR, image);
    // SAFETY: info is a struct loop_info64 that outlives the call.
    if let Err(e) = unsafe { ioctl::loop_set_status64(lo.as_raw_fd(), &info) } {
        // SAFETY: LOOP_CLR_FD takes no argument; the device is bound to our file.
        let _ = unsafe { ioctl::loop_clr_fd(lo.as_raw_fd()) };
        return Err(e);
    }
    Ok(())
}

/// Make `/dev/loopN` when udev (or devtmpfs) has not, with the numbers from
/// sysfs (minors are not N when `loop.max_part` is set).
fn ensure_loop_node(dev: &Path, n: u32) -> Result<()> {
    if dev.exists() {
        return Ok(());
    }
    let (major, minor) = std::fs::read_to_string(format!("/sys/block/loop{n}/dev"))
        .ok()
        .and_then(|s| {
            let (a, b) = s.trim().split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((7, u64::from(n)));
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    match mknod(
        dev,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(major, minor),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {
            tracing::debug!("created {} (block {major}:{minor})", dev.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "creating the device node {} (block {major}:{minor})",
                dev.display()
            )
        }),
    }
}

// ---------------------------------------------------------------------------
// Hostname

/// `name` is not usable as the node's hostname.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a valid hostname: {reason}")]
pub struct HostnameError {
    pub value: String,
    pub reason: String,
}

/// The kernel's limit (`__NEW_UTS_LEN`).
pub const HOSTNAME_MAX: usize = 64;

/// Validate a hostname: dot-separated RFC 1123 labels (letters, digits, '-',
/// not at either end, 1–63 characters), at most 64 characters in all.
pub fn check_hostname(name: &str) -> Result<(), HostnameError> {
    let fail = |reason: String| {
        Err(HostnameError {
            value: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty".into());
    }
    if name.len() > HOSTNAME_MAX {
        return fail(format!(
            "it has {} characters, the kernel allows at most {HOSTNAME_MAX}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return fail("it has an empty label (a leading, trailing or double '.')".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return fail(format!(
                "label {label:?} has {c:?} (allowed: letters, digits and '-')"
            ));
        }
        if label.len() > 63 {
            return fail(format!(
                "label {label:?} has {} characters, at most 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Write `<sysroot>/etc/hostname` (`name\n`, mode 0644), replacing what the
/// image has. The file is written beside it and renamed over it, so a
/// symlink in the image is replaced, never followed; a symlinked `etc` is
/// refused (it could point outside the sysroot).
pub fn write_hostname(sysroot: &Path, name: &str) -> Result<()> {
    check_hostname(name)?;
    let etc = sysroot.join("etc");
    match std::fs::symlink_metadata(&etc) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symlink: refusing to write the hostname through it",
            etc.display()
        ),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", etc.display()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&etc)
                .with_context(|| format!("creating {}", etc.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", etc.display())),
    }
    let path = etc.join("hostname");
    let tmp = etc.join(".hostname.nodeboot");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(format!("{name}\n").as_bytes())?;
        // Whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
    }
    tracing::debug!("wrote {}: {name}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// Mounts

/// The mount points in /proc/self/mountinfo (octal escapes decoded).
fn mount_points() -> Result<Vec<PathBuf>> {
    let mi =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(crate::disk::probe::parse_mountinfo(&mi)
        .into_iter()
        .map(|e| e.mountpoint)
        .collect())
}

/// Is `p` (absolute) a mount point? A path that does not exist is not.
fn is_mount_point(p: &Path) -> Result<bool> {
    let Ok(p) = p.canonicalize() else {
        return Ok(false);
    };
    Ok(mount_points()?.contains(&p))
}

/// `p` goes into overlayfs options, which split on ',' and ':'.
fn check_overlay_path(p: &Path) -> Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if let Some(c) = s.chars().find(|c| matches!(c, ',' | ':' | '\\' | '\n')) {
        bail!("{s} cannot be an overlayfs layer: it contains {c:?}");
    }
    Ok(s)
}

/// What has been done so far, undone in reverse on error.
#[derive(Default)]
struct Undo {
    mounts: Vec<PathBuf>,
    loop_dev: Option<LoopDevice>,
}

impl Undo {
    fn rollback(&mut self) {
        while let Some(m) = self.mounts.pop() {
            tracing::debug!("rollback: unmounting {}", m.display());
            if let Err(e) = umount2(&m, MntFlags::empty()) {
                tracing::warn!(
                    "rollback: unmounting {}: {e}; detaching it lazily",
                    m.display()
                );
                if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                    tracing::warn!("rollback: detaching {}: {e}", m.display());
                }
            }
        }
        if let Some(d) = self.loop_dev.take() {
            let p = d.path().to_path_buf();
            tracing::debug!("rollback: detaching {}", p.display());
            if let Err(e) = d.detach() {
                tracing::warn!("rollback: {e:#}");
            }
        }
    }
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// The errno of a failed squashfs mount, with what an operator can check.
fn squashfs_mount_error(e: Errno, compression: &str) -> anyhow::Error {
    match e {
        Errno::ENODEV => {
            anyhow!("{e} (the kernel has no squashfs: is the module in the initramfs?)")
        }
        Errno::EINVAL | Errno::EIO => anyhow!(
            "{e} (a corrupt image, or a kernel without {compression} squashfs support: see dmesg)"
        ),
        e => anyhow!(e),
    }
}

/// Mount the live root: loop (ro) → squashfs lower → tmpfs → overlayfs at
/// `sysroot`, then `etc/hostname`. On error, everything done so far is undone
/// (mounts in reverse, the loop device detached) and the error names the
/// step, device, file and mount point.
pub fn mount_live(o: &LiveOptions) -> Result<LiveReport> {
    let t = Instant::now();
    if let Some(h) = &o.hostname {
        check_hostname(h)?;
    }
    if o.overlay_size_mib == Some(0) {
        bail!("an overlay size of 0 MiB (the tmpfs would be unlimited): give a size > 0 or none");
    }
    let sb = read_superblock(&o.image)?;
    let run_dir = std::path::absolute(&o.run_dir)
        .with_context(|| format!("resolving {}", o.run_dir.display()))?;
    let sysroot = std::path::absolute(&o.sysroot)
        .with_context(|| format!("resolving {}", o.sysroot.display()))?;
    let l = Layout::new(&run_dir, sysroot);
    for p in [&l.lower, &l.upper, &l.work, &l.sysroot] {
        check_overlay_path(p)?;
    }
    for p in [&l.lower, &l.overlay, &l.sysroot] {
        if is_mount_point(p)? {
            bail!(
                "{} is already a mount point (left by an earlier attempt?): unmount it first",
                p.display()
            );
        }
    }

    let mut undo = Undo::default();
    let dev = match mount_steps(o, &sb, &l, &mut undo) {
        Ok(dev) => dev,
        Err(e) => {
            undo.rollback();
            return Err(e);
        }
    };
    let r = LiveReport {
        image: o.image.clone(),
        loop_device: dev.display().to_string(),
        lower: l.lower,
        overlay: l.overlay,
        upper: l.upper,
        work: l.work,
        sysroot: l.sysroot,
        image_bytes: sb.file_bytes,
        compression: sb.compression,
        overlay_size_mib: o.overlay_size_mib,
        hostname: o.hostname.clone(),
        seconds: t.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "live: {} on {} (squashfs {}, ro), tmpfs upper{}, overlay at {} in {:.2}s",
        r.image.display(),
        r.loop_device,
        r.compression,
        r.overlay_size_mib
            .map(|m| format!(" ({m} MiB)"))
            .unwrap_or_default(),
        r.sysroot.display(),
        r.seconds
    );
    Ok(r)
}

/// Where the layers go.
struct Layout {
    /// `<run>/nodeboot/rootfs.ro`: the squashfs.
    lower: PathBuf,
    /// `<run>/nodeboot/overlay`: the tmpfs with `upper/` and `work/`.
    overlay: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    sysroot: PathBuf,
}

impl Layout {
    fn new(run_dir: &Path, sysroot: PathBuf) -> Self {
        let base = run_dir.join("nodeboot");
        let overlay = base.join("overlay");
        Layout {
            lower: base.join("rootfs.ro"),
            upper: overlay.join("upper"),
            work: overlay.join("work"),
            overlay,
            sysroot,
        }
    }
}

/// The steps of [`mount_live`], each recorded in `undo`; returns the loop device.
fn mount_steps(o: &LiveOptions, sb: &SquashfsInfo, l: &Layout, undo: &mut Undo) -> Result<PathBuf> {
    let lo = attach_loop(&o.image)?;
    let dev = lo.path().to_path_buf();
    undo.loop_dev = Some(lo);

    mkdir(&l.lower)?;
    mount(
        Some(&dev),
        &l.lower,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| squashfs_mount_error(e, &sb.compression))
    .with_context(|| {
        format!(
            "mounting {} (squashfs) on {}",
            dev.display(),
            l.lower.display()
        )
    })?;
    undo.mounts.push(l.lower.clone());
    tracing::debug!(
        "mounted {} (squashfs) on {}",
        dev.display(),
        l.lower.display()
    );
    // The mount holds the device now; autoclear releases it at unmount.
    drop(undo.loop_dev.take());

    mkdir(&l.overlay)?;
    let opts = match o.overlay_size_mib {
        Some(m) => format!("mode=0755,size={m}m"),
        None => "mode=0755".into(),
    };
    mount(
        Some("tmpfs"),
        &l.overlay,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting a tmpfs ({opts}) on {}", l.overlay.display()))?;
    undo.mounts.push(l.overlay.clone());
    tracing::debug!("mounted a tmpfs ({opts}) on {}", l.overlay.display());
    // overlayfs gives the root directory the upper's owner and mode: copy
    // them from the image's root.
    let root =
        std::fs::metadata(&l.lower).with_context(|| format!("reading {}", l.lower.display()))?;
    for d in [&l.upper, &l.work] {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(d)
            .with_context(|| format!("creating {}", d.display()))?;
    }
    std::os::unix::fs::chown(&l.upper, Some(root.uid()), Some(root.gid()))
        .with_context(|| format!("changing the owner of {}", l.upper.display()))?;
    std::fs::set_permissions(
        &l.upper,
        std::fs::Permissions::from_mode(root.mode() & 0o7777),
    )
    .with_context(|| format!("setting the mode of {}", l.upper.display()))?;

    mkdir(&l.sysroot)?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.lower.display(),
        l.upper.display(),
        l.work.display()
    );
    mount(
        Some("overlay"),
        &l.sysroot,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting overlay ({opts}) on {}", l.sysroot.display()))?;
    undo.mounts.push(l.sysroot.clone());
    tracing::debug!("mounted overlay on {}", l.sysroot.display());

    if let Some(h) = &o.hostname {
        write_hostname(&l.sysroot, h)?;
    }
    Ok(dev)
}

/// Undo [`mount_live`]: unmount the overlay, the tmpfs and the squashfs (the
/// loop device goes with the last). Tries all three; returns the first error.
pub fn unmount_live(r: &LiveReport) -> Result<()> {
    let mut first = None;
    for m in [&r.sysroot, &r.overlay, &r.lower] {
        match umount2(m.as_path(), MntFlags::empty()) {
            Ok(()) => tracing::debug!("unmounted {}", m.display()),
            Err(e) => {
                let e = anyhow!(e).context(format!("unmounting {}", m.display()));
                tracing::warn!("{e:#}");
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        let long_label = "x".repeat(63);
        let max = format!("{}.{}", "a".repeat(31), "b".repeat(32));
        for ok in [
            "cn1",
            "CN-01",
            "node-01.cluster",
            "a",
            "1",
            "0cn.42",
            &long_label,
            &max,
        ] {
            check_hostname(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("-cn1", "starts or ends with '-'"),
            ("cn1-", "starts or ends with '-'"),
            ("a.-b", "label \"-b\" starts or ends"),
            ("cn_1", "label \"cn_1\" has '_'"),
            ("cn 1", "has ' '"),
            ("cn1\n", "has '\\n'"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("cn1.", "empty label"),
            ("né", "has 'é'"),
            ("x/y", "has '/'"),
            (&"x".repeat(64), "at most 63"),
            (
                &"x".repeat(65),
                "65 characters, the kernel allows at most 64",
            ),
            (&format!("{max}c"), "the kernel allows at most 64"),
        ];
        for (bad, why) in cases {
            let e = check_hostname(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{bad:?} is not a valid hostname: ")),
                "{bad:?}: {e}"
            );
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn hostname_file() {
        let d = tempfile::tempdir().unwrap();
        write_hostname(d.path(), "cn1").unwrap();
        let p = d.path().join("etc/hostname");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "cn1\n");
        assert_eq!(mode(&p), 0o644);
        assert_eq!(mode(&d.path().join("etc")), 0o755);
        // Replaces what is there, keeps nothing else behind.
        write_hostname(d.path(), "cn2.cluster").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "cn2.cluster\n");
        let names: Vec<_> = std::fs::read_dir(d.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hostname"]);
    }

    #[test]
    fn hostname_file_replaces_a_symlink_without_following_it() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "untouched\n").unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/hostname")).unwrap();
        write_hostname(&root, "cn1").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched\n");
        let p = root.join("etc/hostname");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "cn1\n");
    }

    #[test]
    fn hostname_file_refuses_a_symlinked_etc_and_bad_names() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(d.path().join("host-etc")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(d.path().join("host-etc"), root.join("etc")).unwrap();
        let e = format!("{:#}", write_hostname(&root, "cn1").unwrap_err());
        assert!(e.contains("etc is a symlink"), "{e}");
        assert!(!d.path().join("host-etc/hostname").exists());

        let e = format!("{:#}", write_hostname(d.path(), "cn_1").unwrap_err());
        assert!(e.contains("\"cn_1\" is not a valid hostname"), "{e}");
        assert!(!d.path().join("etc").exists(), "nothing written");
    }

    /// A squashfs 4.0 superblock: `bytes_used` bytes, zstd.
    fn superblock(bytes_used: u64) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_LEN];
        b[..4].copy_from_slice(b"hsqs");
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        b[12..16].copy_from_slice(&131072u32.to_le_bytes());
        b[20..22].copy_from_slice(&6u16.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[40..48].copy_from_slice(&bytes_used.to_le_bytes());
        b
    }

    #[test]
    fn superblock_checks() {
        let p = Path::new("/run/nodeboot/live.squashfs");
        let info = parse_superblock(p, &superblock(4096), 8192).unwrap();
        assert_eq!(
            info,
            SquashfsInfo {
                file_bytes: 8192,
                bytes_used: 4096,
                inodes: 7,
                block_size: 131072,
                compression: "zstd".into()
            }
        );

        let msg = |head: &[u8], len: u64| parse_superblock(p, head, len).unwrap_err().to_string();
        let e = msg(b"<html><body>404 Not Found", 25);
        assert_eq!(
            e,
            "/run/nodeboot/live.squashfs is not a squashfs image (it starts with \"<html><body>404 \"; \
             a squashfs starts with the magic \"hsqs\")"
        );
        let e = msg(b"", 0);
        assert!(e.contains("is not a squashfs image (it is empty"), "{e}");
        let e = msg(b"\x89PNG\r\n", 6);
        assert!(e.contains("starts with \"\\x89PNG\\r\\n\""), "{e}");
        // Big-endian squashfs (old mksquashfs on big-endian hosts).
        let e = msg(b"sqsh", 4);
        assert!(e.contains("is not a squashfs image"), "{e}");
        let e = msg(&superblock(4096)[..50], 50);
        assert!(e.contains("only 50 bytes"), "{e}");

        let e = msg(&superblock(8193), 8192);
        assert_eq!(
            e,
            "/run/nodeboot/live.squashfs is truncated: its squashfs superblock says 8193 bytes, \
             the file has 8192"
        );
        let mut v3 = superblock(4096);
        v3[28..30].copy_from_slice(&3u16.to_le_bytes());
        v3[30..32].copy_from_slice(&1u16.to_le_bytes());
        let e = msg(&v3, 8192);
        assert!(e.contains("is a squashfs 3.1 image"), "{e}");
    }

    #[test]
    fn superblock_from_files() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good");
        let mut b = superblock(200);
        b.resize(200, 0);
        std::fs::write(&good, &b).unwrap();
        assert_eq!(read_superblock(&good).unwrap().file_bytes, 200);
        assert!(is_squashfs(&good).unwrap());

        let html = d.path().join("html");
        std::fs::write(&html, "<html>404</html>").unwrap();
        assert!(!is_squashfs(&html).unwrap());
        let e = read_superblock(&html).unwrap_err();
        assert!(matches!(
            e.downcast_ref::<ImageError>(),
            Some(ImageError::NotSquashfs { .. })
        ));

        let e = format!(
            "{:#}",
            read_superblock(&d.path().join("missing")).unwrap_err()
        );
        assert!(e.starts_with("opening ") && e.contains("missing"), "{e}");
        let e = format!("{:#}", read_superblock(d.path()).unwrap_err());
        assert!(e.contains("is not a regular file"), "{e}");
    }

    #[test]
    fn overlay_paths() {
        check_overlay_path(Path::new("/run/nodeboot/rootfs.ro")).unwrap();
        for bad in ["/a,b", "/a:b", "/a\\b"] {
            let e = check_overlay_path(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("cannot be an overlayfs layer"), "{e}");
        }
    }

    #[test]
    fn bad_inputs_are_refused_before_anything_is_done() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("live.squashfs");
        std::fs::write(&img, b"<html>404</html>").unwrap();
        let opts = LiveOptions {
            image: img.clone(),
            run_dir: d.path().join("run"),
            sysroot: d.path().join("sysroot"),
            overlay_size_mib: None,
            hostname: None,
        };
        let e = format!("{:#}", mount_live(&opts).unwrap_err());
        assert!(e.contains("live.squashfs is not a squashfs image"), "{e}");

        let e = format!(
            "{:#}",
            mount_live(&LiveOptions {
                hostname: Some("cn_1".into()),
                ..opts.clone()
            })
            .unwrap_err()
        );
        assert!(e.contains("\"cn_1\" is not a valid hostname"), "{e}");

        let e = format!(
            "{:#}",
            mount_live(&LiveOptions {
                overlay_size_mib: Some(0),
                ..opts.clone()
            })
            .unwrap_err()
        );
        assert!(e.contains("overlay size of 0 MiB"), "{e}");

        let e = format!(
            "{:#}",
            mount_live(&LiveOptions {
                image: d.path().join("nope"),
                ..opts.clone()
            })
            .unwrap_err()
        );
        assert!(e.contains("opening ") && e.contains("nope"), "{e}");
        assert!(!d.path().join("run").exists(), "nothing made");
        assert!(!d.path().join("sysroot").exists(), "nothing made");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        eprintln!("SKIP: needs root (loop devices)");
        false
    }

    fn sysfs(n: u32, f: &str) -> Option<String> {
        std::fs::read_to_string(format!("/sys/block/loop{n}/{f}"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Attached: read-only, autoclear, backed by the file; released at the
    /// last close.
    fn attach_and_release(how: Attach) {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let lo = attach_loop_with(&img, how).unwrap();
        let n = lo.number();
        assert_eq!(lo.path(), Path::new(&format!("/dev/loop{n}")));
        assert_eq!(sysfs(n, "ro").as_deref(), Some("1"), "{how:?}: read-only");
        assert_eq!(sysfs(n, "loop/autoclear").as_deref(), Some("1"), "{how:?}");
        assert_eq!(
            sysfs(n, "loop/backing_file").as_deref(),
            Some(img.to_str().unwrap()),
            "{how:?}"
        );
        // Writes are refused by the device.
        let w = OpenOptions::new()
            .write(true)
            .open(lo.path())
            .and_then(|mut f| f.write_all(&[1u8; 4096]).and_then(|()| f.sync_all()));
        assert!(w.is_err(), "{how:?}: wrote to the read-only device");
        assert_eq!(std::fs::read(&img).unwrap(), vec![0u8; 1 << 20]);
        let released = || {
            (0..100).any(|_| {
                let gone = sysfs(n, "loop/backing_file").as_deref() != Some(img.to_str().unwrap());
                if !gone {
                    std::thread::sleep(Duration::from_millis(20));
                }
                gone
            })
        };
        if how == Attach::Auto {
            drop(lo);
        } else {
            lo.detach().unwrap();
        }
        assert!(released(), "{how:?}: loop{n} still attached to {img:?}");
    }

    #[test]
    fn loop_configure_attaches_read_only_with_autoclear() {
        if is_root() {
            attach_and_release(Attach::Auto);
        }
    }

    /// `/dev/loopN` missing (no udev yet): the node is made, block 7:N.
    #[test]
    fn missing_loop_node_is_created() {
        if !is_root() {
            return;
        }
        use std::os::unix::fs::FileTypeExt;
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("loop4000");
        ensure_loop_node(&dev, 4000).unwrap();
        let m = std::fs::symlink_metadata(&dev).unwrap();
        assert!(m.file_type().is_block_device());
        assert_eq!(m.rdev(), nix::sys::stat::makedev(7, 4000));
        // Already there: left alone.
        ensure_loop_node(&dev, 4000).unwrap();
        let e = format!(
            "{:#}",
            ensure_loop_node(&d.path().join("no/such/dir/loop1"), 1).unwrap_err()
        );
        assert!(
            e.contains("creating the device node") && e.contains("(block 7:"),
            "{e}"
        );
    }

    /// Threads attaching at once get the same free device from
    /// LOOP_CTL_GET_FREE; the losers of the race (EBUSY) take the next one.
    #[test]
    fn concurrent_attaches_get_distinct_devices() {
        if !is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let imgs: Vec<PathBuf> = (0..6)
            .map(|i| {
                let p = d.path().join(format!("img{i}"));
                std::fs::write(&p, vec![i as u8; 64 << 10]).unwrap();
                p
            })
            .collect();
        let barrier = std::sync::Barrier::new(imgs.len());
        let devs: Vec<LoopDevice> = std::thread::scope(|s| {
            let hs: Vec<_> = imgs
                .iter()
                .map(|img| {
                    let b = &barrier;
                    s.spawn(move || {
                        b.wait();
                        attach_loop(img).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut numbers: Vec<u32> = devs.iter().map(LoopDevice::number).collect();
        for (dev, img) in devs.iter().zip(&imgs) {
            assert_eq!(
                sysfs(dev.number(), "loop/backing_file").as_deref(),
                Some(img.to_str().unwrap())
            );
        }
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), imgs.len(), "a device was shared");
        for dev in devs {
            dev.detach().unwrap();
        }
    }

    #[test]
    fn loop_set_fd_fallback_attaches_read_only_with_autoclear() {
        if is_root() {
            attach_and_release(Attach::Legacy);
        }
    }
}
