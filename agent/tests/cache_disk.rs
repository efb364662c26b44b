//! The live image cache partition on a loop device: `nodectl format-disk
//! --cache-partition` makes it (idempotent), `nodectl initrd`'s code finds
//! it by its GPT name in sysfs and mounts it, stores an image, catches a
//! flipped byte, and an unmountable one gives the operator a clear reason.
//! Needs root and /dev/loop-control; prints `SKIP: …` otherwise.
mod common;
use common::{nodectl, ok, run, Loop, MIB};
use nodeboot_agent::cache::{self, Cache, CacheError, PartitionError};
use sha2::Digest;
use std::path::Path;

const U: &str = "9d3c1b2a-5e4f-4a6b-8c7d-0e1f2a3b4c5d";

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP: {test}: needs root and loop devices");
        return false;
    }
    true
}

fn format(l: &Loop) -> std::process::Output {
    nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        "ext4",
        "--uuid",
        U,
        "--key-partition",
        "16M",
        "--cache-partition",
        "128M",
    ])
}

struct Umount<'a>(&'a Path);
impl Drop for Umount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).output();
    }
}

#[test]
fn cache_partition_made_found_mounted_and_used() {
    if !can_run("cache_partition_made_found_mounted_and_used") {
        return;
    }
    let l = Loop::new();
    let o = format(&l);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pt: serde_json::Value = serde_json::from_str(&ok(&["sfdisk", "--json", &l.dev])).unwrap();
    let names: Vec<&str> = pt["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nodeboot-key", "nodeboot-cache", "nodeboot-data"]);
    let p2 = &pt["partitiontable"]["partitions"][1];
    assert_eq!(p2["size"].as_u64().unwrap() * 512, 128 * MIB);
    let blkid = ok(&["blkid", "-p", "-o", "export", &l.part(2)]);
    assert!(blkid.contains("TYPE=ext4"), "{blkid}");
    assert!(blkid.contains("LABEL=nodeboot-cache"), "{blkid}");
    // The same request again: nothing written.
    let digest = l.digest();
    let o = format(&l);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("already formatted"));
    assert_eq!(l.digest(), digest);

    // Found by its GPT name in the kernel's uevents, as in the initramfs.
    let found = cache::find_partitions(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        "nodeboot-cache",
    );
    assert!(
        found.contains(&Path::new(&l.part(2)).to_path_buf()),
        "{found:?}"
    );

    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("cache");
    cache::mount_device(Path::new(&l.part(2)), &mnt).unwrap();
    let _u = Umount(&mnt);
    // Mounted already: left as it is.
    cache::mount_device(Path::new(&l.part(2)), &mnt).unwrap();
    let c = Cache::open(&mnt).unwrap();
    let body = vec![0x42u8; 3 << 20];
    let src = d.path().join("img");
    std::fs::write(&src, &body).unwrap();
    let dg = hex::encode(sha2::Sha256::digest(&body));
    let stored = c.store(&dg, &src).unwrap();
    assert_eq!(c.verify(&dg).unwrap().bytes, 3 << 20);
    // A flipped byte on the disk: caught, named, deleted.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&stored.path)
            .unwrap();
        f.write_all_at(&[0x43], 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let e = c.verify(&dg).unwrap_err();
    assert!(matches!(e, CacheError::Corrupt { .. }));
    assert!(
        e.to_string().starts_with(&format!(
            "the cached image {} is corrupt",
            stored.path.display()
        )),
        "{e}"
    );
    assert!(!stored.path.exists());
    // A store fits a 128 MiB partition only so far: 200 MiB does not.
    let big = d.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(200 * MIB)
        .unwrap();
    let e = c.store(&"0".repeat(64), &big).unwrap_err();
    assert!(
        e.to_string()
            .contains("is full: the image needs 209715200 bytes"),
        "{e}"
    );
}

/// A partition named nodeboot-cache whose filesystem is gone: the mount
/// fails with the device, the directory and what to do.
#[test]
fn an_unmountable_cache_partition_says_why() {
    if !can_run("an_unmountable_cache_partition_says_why") {
        return;
    }
    let l = Loop::new();
    let o = nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        "ext4",
        "--uuid",
        "1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d",
        "--cache-partition",
        "64M",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Garbage over the superblock.
    run(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={}", l.part(1)),
        "bs=1M",
        "count=2",
        "conv=fsync",
    ]);
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("cache");
    let e = cache::mount_device(Path::new(&l.part(1)), &mnt).unwrap_err();
    assert!(matches!(e, PartitionError::Mount { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "mounting the cache partition {} (ext4) on {}: ",
            l.part(1),
            mnt.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("a corrupt or foreign filesystem? see dmesg"),
        "{msg}"
    );
}
