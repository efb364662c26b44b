//! Real loop device + squashfs + tmpfs + overlayfs, as the initramfs does it.
use nodeboot_agent::live::{mount_live, unmount_live, LiveOptions};
use std::path::Path;
use std::process::Command;

fn can_run() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP live_mount: needs root (loop devices, mounts)");
        return false;
    }
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        panic!("mksquashfs missing: apt-get install squashfs-tools");
    }
    true
}

fn mounted(p: &Path) -> bool {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
fn mounts_a_real_squashfs_under_a_tmpfs_overlay() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=test\n").unwrap();
    std::fs::write(tree.join("etc/hostname"), "image-default\n").unwrap();
    let img = d.path().join("live.squashfs");
    let st = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&img)
        .args(["-noappend", "-quiet", "-no-progress", "-comp", "zstd"])
        .status()
        .unwrap();
    assert!(st.success());
    let run = d.path().join("run");
    let sysroot = d.path().join("sysroot");
    let r = mount_live(&LiveOptions {
        image: img.clone(),
        run_dir: run.clone(),
        sysroot: sysroot.clone(),
        overlay_size_mib: Some(64),
        hostname: Some("cn1".into()),
    })
    .unwrap();
    let check = || -> Result<(), String> {
        let os =
            std::fs::read_to_string(sysroot.join("etc/os-release")).map_err(|e| e.to_string())?;
        if os != "ID=test\n" {
            return Err(format!("os-release: {os:?}"));
        }
        let h = std::fs::read_to_string(sysroot.join("etc/hostname")).map_err(|e| e.to_string())?;
        if h != "cn1\n" {
            return Err(format!("hostname: {h:?}"));
        }
        // Writes land in the tmpfs upper, the image is read-only.
        std::fs::write(sysroot.join("new-file"), "x").map_err(|e| e.to_string())?;
        if !r.upper.join("new-file").exists() {
            return Err("write did not land in the upper dir".into());
        }
        if std::fs::write(r.lower.join("x"), "y").is_ok() {
            return Err("lower is writable".into());
        }
        let n = r.loop_device.trim_start_matches("/dev/");
        let ro =
            std::fs::read_to_string(format!("/sys/block/{n}/ro")).map_err(|e| e.to_string())?;
        if ro.trim() != "1" {
            return Err(format!("{} is not read-only", r.loop_device));
        }
        Ok(())
    };
    let res = check();
    unmount_live(&r).unwrap();
    res.unwrap();
    assert!(!mounted(&sysroot) && !mounted(&r.lower));
    // Autoclear: the loop device was released with the last unmount.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = Command::new("losetup")
        .arg("-j")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "loop still attached"
    );
}

#[test]
fn garbage_image_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("live.squashfs");
    // Has the magic, but is no filesystem: the squashfs mount fails after the loop attach.
    let mut bytes = b"hsqs".to_vec();
    bytes.resize(1 << 20, 0xa5);
    std::fs::write(&img, bytes).unwrap();
    let sysroot = d.path().join("sysroot");
    let e = mount_live(&LiveOptions {
        image: img.clone(),
        run_dir: d.path().join("run"),
        sysroot: sysroot.clone(),
        overlay_size_mib: None,
        hostname: None,
    })
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("(squashfs) on") && msg.contains("rootfs.ro"),
        "{msg}"
    );
    assert!(!mounted(&d.path().join("run/nodeboot/rootfs.ro")) && !mounted(&sysroot));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = Command::new("losetup")
        .arg("-j")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "loop left attached"
    );
}
