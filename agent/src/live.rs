//! Live root: loop-mount the squashfs read-only, tmpfs upper, overlayfs at /sysroot.
use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The verified squashfs (e.g. /run/nodeboot/live.squashfs).
    pub image: PathBuf,
    /// The run directory (/run): lower and overlay live under `<run>/nodeboot/`.
    pub run_dir: PathBuf,
    /// Where the root goes (/sysroot).
    pub sysroot: PathBuf,
    /// Size of the tmpfs upper in MiB (`rd.live.overlay.size=`); None: tmpfs default.
    pub overlay_size_mib: Option<u64>,
    /// Written to `<sysroot>/etc/hostname`.
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub loop_device: String,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub sysroot: PathBuf,
    pub image_bytes: u64,
    pub hostname: Option<String>,
    pub seconds: f64,
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
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
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Is this a squashfs? (magic "hsqs", little endian)
pub fn is_squashfs(path: &Path) -> Result<bool> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"hsqs"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Attach `image` read-only (autoclear) to a free loop device; returns its
/// path and an open handle. Keep the handle until the device is mounted:
/// autoclear detaches the device at its last close.
pub fn attach_loop(image: &Path) -> Result<(PathBuf, File)> {
    let backing = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("opening /dev/loop-control (is the loop module loaded?)")?;
    let mut last = None;
    for _ in 0..10 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(std::io::Error::last_os_error())
                .context("LOOP_CTL_GET_FREE on /dev/loop-control");
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        if !dev.exists() {
            // udev may not have made the node yet.
            let devno = libc::makedev(7, n as u32);
            let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes())?;
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o660, devno) };
        }
        let lo = OpenOptions::new()
            .read(true)
            .open(&dev)
            .with_context(|| format!("opening {}", dev.display()))?;
        // SAFETY: all-zero is a valid LoopConfig.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let k = name.len().min(63);
        cfg.info.lo_file_name[..k].copy_from_slice(&name[..k]);
        // SAFETY: cfg is a properly laid out struct loop_config that outlives the call.
        let r = unsafe {
            libc::ioctl(
                lo.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &cfg as *const LoopConfig,
            )
        };
        if r == 0 {
            return Ok((dev, lo));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBUSY) {
            // Another process took it between GET_FREE and CONFIGURE: try the next.
            last = Some(e);
            continue;
        }
        return Err(e)
            .with_context(|| format!("attaching {} to {}", image.display(), dev.display()));
    }
    Err(last.unwrap()).with_context(|| {
        format!(
            "attaching {}: every free loop device was taken",
            image.display()
        )
    })
}

fn detach_loop(dev: &Path) {
    if let Ok(f) = File::open(dev) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _) };
    }
}

/// Validate a hostname: RFC 1123 labels, at most 64 bytes (the kernel's limit).
pub fn check_hostname(name: &str) -> Result<()> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 64 || !name.split('.').all(ok_label) {
        bail!("grendel.hostname={name:?} is not a valid hostname (letters, digits, '-', dot-separated labels, at most 64 characters)");
    }
    Ok(())
}

/// Write `<sysroot>/etc/hostname` (mode 0644).
pub fn write_hostname(sysroot: &Path, name: &str) -> Result<()> {
    check_hostname(name)?;
    let etc = sysroot.join("etc");
    std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    let p = etc.join("hostname");
    // A symlink in the image must not redirect the write.
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, format!("{name}\n")).with_context(|| format!("writing {}", p.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", p.display()))
}

/// What has been done so far, undone in reverse on error.
#[derive(Default)]
struct Undo {
    mounts: Vec<PathBuf>,
    loop_dev: Option<PathBuf>,
}

impl Undo {
    fn rollback(&mut self) {
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = umount2(&m, MntFlags::empty()) {
                tracing::warn!("rollback: unmounting {}: {e}", m.display());
            }
        }
        if let Some(d) = self.loop_dev.take() {
            detach_loop(&d);
        }
    }
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Mount the live root: loop (ro) → squashfs lower → tmpfs → overlayfs at sysroot.
pub fn mount_live(o: &LiveOptions) -> Result<LiveReport> {
    let t = Instant::now();
    if let Some(h) = &o.hostname {
        check_hostname(h)?;
    }
    let image_bytes = std::fs::metadata(&o.image)
        .with_context(|| format!("reading {}", o.image.display()))?
        .len();
    if !is_squashfs(&o.image)? {
        bail!(
            "{} is not a squashfs image (no 'hsqs' magic)",
            o.image.display()
        );
    }
    let mut undo = Undo::default();
    let r = mount_steps(o, &mut undo, image_bytes, t);
    if r.is_err() {
        undo.rollback();
    }
    r
}

fn mount_steps(
    o: &LiveOptions,
    undo: &mut Undo,
    image_bytes: u64,
    t: Instant,
) -> Result<LiveReport> {
    let base = o.run_dir.join("nodeboot");
    let lower = base.join("rootfs.ro");
    let ovl = base.join("overlay");
    let upper = ovl.join("upper");
    let work = ovl.join("work");

    let (dev, handle) = attach_loop(&o.image)?;
    undo.loop_dev = Some(dev.clone());
    mkdir(&lower)?;
    mount(
        Some(&dev),
        &lower,
        Some("squashfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mounting {} (squashfs) on {}",
            dev.display(),
            lower.display()
        )
    })?;
    undo.mounts.push(lower.clone());
    // The mount holds the loop device now; autoclear frees it at unmount.
    drop(handle);
    undo.loop_dev = None;

    mkdir(&ovl)?;
    let size = o
        .overlay_size_mib
        .map(|m| format!("mode=0755,size={m}m"))
        .unwrap_or_else(|| "mode=0755".into());
    mount(
        Some("tmpfs"),
        &ovl,
        Some("tmpfs"),
        MsFlags::MS_NODEV,
        Some(size.as_str()),
    )
    .with_context(|| format!("mounting a tmpfs ({size}) on {}", ovl.display()))?;
    undo.mounts.push(ovl.clone());
    mkdir(&upper)?;
    mkdir(&work)?;

    mkdir(&o.sysroot)?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &o.sysroot,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .with_context(|| format!("mounting overlay ({opts}) on {}", o.sysroot.display()))?;
    undo.mounts.push(o.sysroot.clone());

    if let Some(h) = &o.hostname {
        write_hostname(&o.sysroot, h)?;
    }
    tracing::info!(
        "live: {} on {} (squashfs, ro), tmpfs upper, overlay at {}",
        o.image.display(),
        dev.display(),
        o.sysroot.display()
    );
    Ok(LiveReport {
        loop_device: dev.display().to_string(),
        lower,
        upper,
        work,
        sysroot: o.sysroot.clone(),
        image_bytes,
        hostname: o.hostname.clone(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Undo [`mount_live`] (tests, and a retry from the emergency shell).
pub fn unmount_live(r: &LiveReport) -> Result<()> {
    let ovl = r.upper.parent().unwrap_or(&r.upper).to_path_buf();
    for m in [&r.sysroot, &ovl, &r.lower] {
        umount2(m.as_path(), MntFlags::empty())
            .with_context(|| format!("unmounting {}", m.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["cn1", "node-01.cluster", "a", &"x".repeat(63)] {
            check_hostname(ok).unwrap();
        }
        for bad in [
            "",
            "-cn1",
            "cn1-",
            "cn_1",
            "cn 1",
            "a..b",
            "né",
            &"x".repeat(65),
        ] {
            let e = check_hostname(bad).unwrap_err().to_string();
            assert!(e.contains("is not a valid hostname"), "{bad}: {e}");
        }
    }

    #[test]
    fn hostname_file() {
        let d = tempfile::tempdir().unwrap();
        write_hostname(d.path(), "cn1").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/hostname")).unwrap(),
            "cn1\n"
        );
    }

    #[test]
    fn not_a_squashfs_is_refused_before_mounting() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("live.squashfs");
        std::fs::write(&img, b"<html>404</html>").unwrap();
        let e = mount_live(&LiveOptions {
            image: img.clone(),
            run_dir: d.path().join("run"),
            sysroot: d.path().join("sysroot"),
            overlay_size_mib: None,
            hostname: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("is not a squashfs image"), "{e}");
        assert!(!d.path().join("run").exists(), "nothing made");
    }
}
