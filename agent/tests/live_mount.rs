//! Real loop device + squashfs + tmpfs + overlayfs, as the initramfs does it.
//! Needs root (skips otherwise) and mksquashfs (squashfs-tools).
use nodeboot_agent::live::{mount_live, unmount_live, LiveOptions, LiveReport};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: needs root (loop devices, mounts)");
        return false;
    }
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        panic!("mksquashfs missing: apt-get install squashfs-tools");
    }
    true
}

/// `mksquashfs tree img`, zstd when this mksquashfs has it.
fn squash(tree: &Path, img: &Path) {
    let run = |extra: &[&str]| {
        Command::new("mksquashfs")
            .arg(tree)
            .arg(img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["-comp", "zstd"]);
    if !out.status.success() {
        eprintln!("mksquashfs -comp zstd failed, using the default compression");
        let out = run(&[]);
        assert!(
            out.status.success(),
            "mksquashfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A small root: /etc/os-release, /etc/hostname, /usr/bin/tool; root mode 0751.
fn tree(d: &Path) -> PathBuf {
    let t = d.join("tree");
    std::fs::create_dir_all(t.join("etc")).unwrap();
    std::fs::create_dir_all(t.join("usr/bin")).unwrap();
    std::fs::write(t.join("etc/os-release"), "ID=test\n").unwrap();
    std::fs::write(t.join("etc/hostname"), "image-default\n").unwrap();
    std::fs::write(t.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o751)).unwrap();
    t
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    mi.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

/// `losetup -j img`: the loop devices backed by `img`.
fn loops_for(img: &Path) -> String {
    let out = Command::new("losetup").arg("-j").arg(img).output().unwrap();
    assert!(out.status.success(), "losetup -j failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Autoclear is done by the kernel at the last close: allow it a moment.
fn assert_loop_released(img: &Path) {
    for _ in 0..100 {
        if loops_for(img).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("loop device still attached to {img:?}: {}", loops_for(img));
}

/// Unmounts at drop, so a failed assertion leaves no mounts behind.
struct Mounted(Option<LiveReport>);

impl Mounted {
    fn report(&self) -> &LiveReport {
        self.0.as_ref().unwrap()
    }
    fn unmount(mut self) {
        unmount_live(&self.0.take().unwrap()).unwrap();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            let _ = unmount_live(&r);
        }
    }
}

fn options(d: &Path, img: &Path) -> LiveOptions {
    LiveOptions {
        image: img.to_path_buf(),
        run_dir: d.join("run"),
        sysroot: d.join("sysroot"),
        overlay_size_mib: None,
        hostname: None,
    }
}

#[test]
fn mounts_a_real_squashfs_under_a_tmpfs_overlay() {
    if !can_run("mounts_a_real_squashfs_under_a_tmpfs_overlay") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("live.squashfs");
    squash(&tree(d.path()), &img);
    let image_before = std::fs::read(&img).unwrap();
    let sysroot = d.path().join("sysroot");
    let m = Mounted(Some(
        mount_live(&LiveOptions {
            overlay_size_mib: Some(64),
            hostname: Some("cn1".into()),
            ..options(d.path(), &img)
        })
        .unwrap(),
    ));
    let r = m.report();
    let run = d.path().join("run/nodeboot");
    assert_eq!(r.lower, run.join("rootfs.ro"));
    assert_eq!(r.overlay, run.join("overlay"));
    assert_eq!(r.upper, run.join("overlay/upper"));
    assert_eq!(r.work, run.join("overlay/work"));
    assert_eq!(r.sysroot, sysroot);
    assert_eq!(r.image_bytes, image_before.len() as u64);
    assert_eq!(r.overlay_size_mib, Some(64));
    assert!(r.loop_device.starts_with("/dev/loop"), "{}", r.loop_device);
    assert_eq!(
        mounts_under(d.path()),
        [
            r.lower.to_str().unwrap(),
            r.overlay.to_str().unwrap(),
            sysroot.to_str().unwrap()
        ]
    );
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["loop_device"], r.loop_device.as_str());

    // The image's files, and the hostname given.
    let read = |p: &str| std::fs::read_to_string(sysroot.join(p)).unwrap();
    assert_eq!(read("etc/os-release"), "ID=test\n");
    assert_eq!(read("usr/bin/tool"), "#!/bin/sh\n");
    assert_eq!(read("etc/hostname"), "cn1\n");
    let hmode = std::fs::metadata(sysroot.join("etc/hostname"))
        .unwrap()
        .mode();
    assert_eq!(hmode & 0o7777, 0o644);
    // The root directory looks like the image's, not like the tmpfs.
    let root = std::fs::metadata(&sysroot).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o751);
    assert_eq!(root.uid(), 0);

    // Writes land in the tmpfs upper; the lower and the image do not change.
    std::fs::write(sysroot.join("new-file"), "x").unwrap();
    std::fs::write(sysroot.join("etc/os-release"), "ID=changed\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(r.upper.join("new-file")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(r.upper.join("etc/os-release")).unwrap(),
        "ID=changed\n"
    );
    assert!(!r.lower.join("new-file").exists());
    assert_eq!(
        std::fs::read_to_string(r.lower.join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.lower.join("etc/hostname")).unwrap(),
        "image-default\n"
    );
    let e = std::fs::write(r.lower.join("x"), "y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "lower: {e}");

    // The upper is a tmpfs of the size asked for.
    let st = nix::sys::statfs::statfs(&r.upper).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    let vfs = nix::sys::statvfs::statvfs(&r.upper).unwrap();
    assert_eq!(vfs.blocks() * vfs.fragment_size(), 64 << 20);

    // The loop device: read-only, autoclear, backed by the image.
    let n = r.loop_device.trim_start_matches("/dev/");
    let sys = |f: &str| {
        std::fs::read_to_string(format!("/sys/block/{n}/{f}"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(sys("ro"), "1", "{} is not read-only", r.loop_device);
    assert_eq!(sys("loop/autoclear"), "1");
    assert_eq!(sys("loop/backing_file"), img.to_str().unwrap());
    assert!(
        loops_for(&img).starts_with(&format!("{}:", r.loop_device)),
        "{}",
        loops_for(&img)
    );

    m.unmount();
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    // Autoclear: the loop device was released with the squashfs unmount.
    assert_loop_released(&img);
    assert_eq!(std::fs::read(&img).unwrap(), image_before, "image changed");
}

#[test]
fn not_a_squashfs_fails_and_leaves_nothing_behind() {
    if !can_run("not_a_squashfs_fails_and_leaves_nothing_behind") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("live.squashfs");
    // What a misconfigured web server sends instead of the image.
    std::fs::write(
        &img,
        "<html><body>404 Not Found</body></html>\n".repeat(100),
    )
    .unwrap();
    let e = mount_live(&LiveOptions {
        hostname: Some("cn1".into()),
        ..options(d.path(), &img)
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("error, as the operator reads it: {msg}");
    assert!(
        msg.contains(&format!("{} is not a squashfs image", img.display())),
        "{msg}"
    );
    assert!(msg.contains("it starts with \"<html><body>404 \""), "{msg}");
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    assert_eq!(loops_for(&img), "", "a loop device was attached");
    assert!(!d.path().join("run").exists() && !d.path().join("sysroot").exists());
}

#[test]
fn corrupt_squashfs_fails_at_the_mount_and_detaches_the_loop() {
    if !can_run("corrupt_squashfs_fails_at_the_mount_and_detaches_the_loop") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("live.squashfs");
    squash(&tree(d.path()), &img);
    // A sane-looking superblock whose inode table starts where the directory
    // table does: the kernel refuses it, after the loop device is attached.
    let mut b = std::fs::read(&img).unwrap();
    let dir_table: [u8; 8] = b[72..80].try_into().unwrap();
    b[64..72].copy_from_slice(&dir_table);
    std::fs::write(&img, &b).unwrap();

    let e = mount_live(&options(d.path(), &img)).unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("error, as the operator reads it: {msg}");
    let lower = d.path().join("run/nodeboot/rootfs.ro");
    assert!(
        msg.starts_with("mounting /dev/loop")
            && msg.contains(&format!(" (squashfs) on {}: ", lower.display())),
        "{msg}"
    );
    assert!(msg.contains("EINVAL") && msg.contains("see dmesg"), "{msg}");
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    assert_loop_released(&img);
}

#[test]
fn failure_after_the_mounts_unmounts_all_and_detaches_the_loop() {
    if !can_run("failure_after_the_mounts_unmounts_all_and_detaches_the_loop") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // An image whose /etc is an absolute symlink: writing the hostname
    // through it would write the host's /etc; refused after all three mounts.
    let t = d.path().join("tree");
    std::fs::create_dir_all(t.join("usr/etc")).unwrap();
    std::os::unix::fs::symlink("/nodeboot-test-nonexistent/etc", t.join("etc")).unwrap();
    let img = d.path().join("live.squashfs");
    squash(&t, &img);

    let e = mount_live(&LiveOptions {
        hostname: Some("cn1".into()),
        ..options(d.path(), &img)
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("error, as the operator reads it: {msg}");
    assert!(
        msg.contains(&format!(
            "{} is a symlink",
            d.path().join("sysroot/etc").display()
        )),
        "{msg}"
    );
    assert_eq!(mounts_under(d.path()), Vec::<String>::new());
    assert_loop_released(&img);

    // The clean state allows a retry (here without the hostname).
    let m = Mounted(Some(mount_live(&options(d.path(), &img)).unwrap()));
    assert!(d.path().join("sysroot/usr/etc").is_dir());
    m.unmount();
    assert_loop_released(&img);
}

#[test]
fn mounting_over_a_mounted_live_root_is_refused() {
    if !can_run("mounting_over_a_mounted_live_root_is_refused") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("live.squashfs");
    squash(&tree(d.path()), &img);
    let m = Mounted(Some(mount_live(&options(d.path(), &img)).unwrap()));
    let first = loops_for(&img);
    assert_eq!(first.lines().count(), 1, "{first}");

    let e = mount_live(&options(d.path(), &img)).unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("error, as the operator reads it: {msg}");
    assert!(
        msg.contains(&format!(
            "{} is already a mount point",
            m.report().lower.display()
        )),
        "{msg}"
    );
    assert_eq!(loops_for(&img), first, "no second loop device");
    assert_eq!(mounts_under(d.path()).len(), 3);
    assert_eq!(
        std::fs::read_to_string(d.path().join("sysroot/etc/os-release")).unwrap(),
        "ID=test\n"
    );
    m.unmount();
    assert_loop_released(&img);
}
