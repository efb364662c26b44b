//! `nodectl format-disk` and `install-key` on loop devices with the real
//! mkfs tools (xfsprogs, e2fsprogs, btrfs-progs; `cargo xtask` installs
//! them). Each test has its own sparse 512 MiB file on its own loop device
//! (`losetup --partscan`), detached by a guard. Needs root and
//! /dev/loop-control; prints `SKIP: …` otherwise.
mod common;
use common::{nodectl, ok, run, Loop, MIB, NODECTL};
use nodeboot_agent::disk::{format_disk, FormatError, FormatRequest, Fs, Refusal, System, Tools};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const U1: &str = "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11";
const U2: &str = "5d0c4a87-2b1e-4f3d-8c6a-9e7f1b2d3c4e";

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: {test}: needs root (loop devices, mkfs, mount)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!(
            "SKIP: {test}: no /dev/loop-control (no loop driver in this kernel or container)"
        );
        return false;
    }
    for (tool, pkg) in [
        ("mkfs.xfs", "xfsprogs"),
        ("mkfs.ext4", "e2fsprogs"),
        ("mkfs.btrfs", "btrfs-progs"),
        ("sfdisk", "fdisk"),
        ("wipefs", "util-linux"),
    ] {
        if Command::new(tool).arg("-V").output().is_err() {
            panic!("{tool} missing: apt-get install {pkg} (cargo xtask test installs it)");
        }
    }
    true
}

/// A mount on a tempdir, unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(dev: &str, opts: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["mount"];
        argv.extend(opts);
        argv.extend([dev, dir.path().to_str().unwrap()]);
        ok(&argv);
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// xfs with UUID U1 and a 16 MiB key partition: the layout several tests start from.
fn format_with_key_partition(l: &Loop) {
    let o = nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        "xfs",
        "--uuid",
        U1,
        "--key-partition",
        "16M",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `blkid -p -o export DEV` as a map (empty when nothing is found).
fn blkid(dev: &str) -> BTreeMap<String, String> {
    let o = run(&["blkid", "-p", "-o", "export", dev]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `sfdisk --json DEV`: the partition table as libfdisk reads it.
fn sfdisk(dev: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["sfdisk", "--json", dev])).unwrap()
}

fn assert_fs(dev: &str, fs: &str, uuid: &str, label: Option<&str>, partname: &str) {
    let b = blkid(dev);
    assert_eq!(b.get("TYPE").map(String::as_str), Some(fs), "{dev}: {b:?}");
    assert_eq!(
        b.get("UUID").map(String::as_str),
        Some(uuid),
        "{dev}: {b:?}"
    );
    assert_eq!(b.get("LABEL").map(String::as_str), label, "{dev}: {b:?}");
    assert_eq!(
        b.get("PART_ENTRY_NAME").map(String::as_str),
        Some(partname),
        "{dev}: {b:?}"
    );
}

/// Each filesystem its own UUID: the tests run in parallel, and mkfs.btrfs
/// refuses a UUID that blkid finds on another device ("non-unique UUID").
fn formats(fs: &str, label: &str) {
    let uuid = match fs {
        "btrfs" => "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0b22",
        "ext4" => "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0c33",
        _ => U1,
    };
    let l = Loop::new();
    let o = nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        fs,
        "--uuid",
        uuid,
        "--label",
        label,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The facts and the plan come first, the result last.
    assert!(out.contains(&format!("disk:    {}", l.dev)), "{out}");
    assert!(out.contains("size:    536870912 bytes (512 MiB"), "{out}");
    assert!(out.contains("now:     blank"), "{out}");
    assert!(
        out.contains(&format!("formatted: {} {fs} UUID {uuid}", l.part(1))),
        "{out}"
    );
    assert_fs(&l.part(1), fs, uuid, Some(label), "nodeboot-data");
    let pt = sfdisk(&l.dev);
    assert_eq!(
        pt["partitiontable"]["partitions"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn formats_xfs() {
    if can_run("formats_xfs") {
        formats("xfs", "scratch");
    }
}

#[test]
fn formats_ext4() {
    if can_run("formats_ext4") {
        formats("ext4", "sixteen-chars-ok");
    }
}

#[test]
fn formats_btrfs() {
    if can_run("formats_btrfs") {
        formats("btrfs", "a-btrfs-label");
    }
}

#[test]
fn key_partition_layout_and_dry_run_json() {
    if !can_run("key_partition_layout_and_dry_run_json") {
        return;
    }
    let l = Loop::new();
    let args = [
        "format-disk",
        &l.dev,
        "--fs",
        "xfs",
        "--uuid",
        U1,
        "--key-partition",
        "64M",
    ];
    // --dry-run --json: the plan on stdout as JSON, nothing written.
    let before = l.digest();
    let mut dry = args.to_vec();
    dry.extend(["--dry-run", "--json"]);
    let o = nodectl(&dry);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["result"], "dry-run");
    assert_eq!(j["size_bytes"], 512 * MIB);
    assert_eq!(j["plan"][0]["name"], "nodeboot-key");
    assert_eq!(j["plan"][1]["uuid"], U1);
    assert!(
        stderr(&o).contains("plan:"),
        "the text goes to stderr with --json"
    );
    assert_eq!(l.digest(), before, "--dry-run wrote to the disk");

    let o = nodectl(&args);
    assert!(o.status.success());
    let pt = sfdisk(&l.dev);
    let pt = &pt["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    let p = pt["partitions"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["name"], "nodeboot-key");
    assert_eq!(p[1]["name"], "nodeboot-data");
    let (s0, n0) = (
        p[0]["start"].as_u64().unwrap(),
        p[0]["size"].as_u64().unwrap(),
    );
    let (s1, n1) = (
        p[1]["start"].as_u64().unwrap(),
        p[1]["size"].as_u64().unwrap(),
    );
    assert_eq!((s0 * 512, n0 * 512), (MIB, 64 * MIB));
    assert_eq!(s1, s0 + n0, "data follows the key partition");
    for (s, n) in [(s0, n0), (s1, n1)] {
        assert_eq!(s * 512 % MIB, 0, "start not 1 MiB-aligned");
        assert_eq!((s + n) * 512 % MIB, 0, "end not 1 MiB-aligned");
    }
    // the data partition takes the rest: less than 1 MiB + the backup GPT left
    assert_eq!((s1 + n1) * 512, 511 * MIB);
    assert_fs(
        &l.part(1),
        "ext4",
        &blkid(&l.part(1))["UUID"],
        Some("nodeboot-key"),
        "nodeboot-key",
    );
    assert_fs(&l.part(2), "xfs", U1, None, "nodeboot-data");
    let v = run(&["sfdisk", "--verify", &l.dev]);
    assert!(String::from_utf8_lossy(&v.stdout).contains("No errors detected"));
}

#[test]
fn idempotent_second_run_writes_nothing() {
    if !can_run("idempotent_second_run_writes_nothing") {
        return;
    }
    let l = Loop::new();
    let args = [
        "format-disk",
        &l.dev,
        "--fs",
        "ext4",
        "--uuid",
        U1,
        "--label",
        "data",
        "--key-partition",
        "16M",
    ];
    assert!(nodectl(&args).status.success());
    let (digest, b1, b2) = (l.digest(), blkid(&l.part(1)), blkid(&l.part(2)));
    let o = nodectl(&args);
    assert!(o.status.success());
    assert!(stdout(&o).contains("already formatted"), "{}", stdout(&o));
    assert_eq!(l.digest(), digest, "the second run changed the disk");
    assert_eq!((blkid(&l.part(1)), blkid(&l.part(2))), (b1, b2));
    // Also while the data partition is mounted (a node re-running its
    // provisioning): still "already formatted", nothing touched.
    {
        let _m = Mounted::new(&l.part(2), &["-o", "ro"]);
        let o = nodectl(&args);
        assert!(o.status.success());
        assert!(stdout(&o).contains("already formatted"));
    }
    assert_eq!(l.digest(), digest);
    // A different label is a different request: refused without --wipe.
    let mut other = args.to_vec();
    other[7] = "other";
    let o = nodectl(&other);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o)
            .contains("not the requested layout (partition 2 has label \"data\", not \"other\")"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn refuses_what_is_not_a_whole_block_device() {
    // A regular file (no root needed: nothing is opened for writing).
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("disk.img");
    std::fs::write(&f, "not a disk").unwrap();
    let o = nodectl(&[
        "format-disk",
        f.to_str().unwrap(),
        "--fs",
        "xfs",
        "--uuid",
        U1,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(&format!(
            "refusing to format {}: it is not a block device (it is a regular file)",
            f.display()
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"not a disk");
    let o = nodectl(&[
        "format-disk",
        "/nonexistent/disk",
        "--fs",
        "xfs",
        "--uuid",
        U1,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("refusing to format /nonexistent/disk: it does not exist"));

    if !can_run("refuses_what_is_not_a_whole_block_device (partition)") {
        return;
    }
    let l = Loop::new();
    assert!(
        nodectl(&["format-disk", &l.dev, "--fs", "ext4", "--uuid", U1])
            .status
            .success()
    );
    let o = nodectl(&[
        "format-disk",
        &l.part(1),
        "--fs",
        "ext4",
        "--uuid",
        U2,
        "--wipe",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let name = l.dev.trim_start_matches("/dev/");
    assert!(
        stderr(&o).contains(&format!(
            "refusing to format {}: it is partition 1 of /dev/{name}; format-disk takes a whole disk",
            l.part(1)
        )),
        "{}",
        stderr(&o)
    );
    assert_fs(&l.part(1), "ext4", U1, None, "nodeboot-data");
}

#[test]
fn refuses_mounted_partition() {
    if !can_run("refuses_mounted_partition") {
        return;
    }
    let l = Loop::new();
    assert!(
        nodectl(&["format-disk", &l.dev, "--fs", "ext4", "--uuid", U1])
            .status
            .success()
    );
    let m = Mounted::new(&l.part(1), &[]);
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U2, "--wipe"]);
    assert_eq!(o.status.code(), Some(3));
    let want = format!(
        "refusing to format {}: {} is mounted at {}; unmount it first",
        l.dev,
        l.part(1),
        m.dir.path().display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    drop(m);
    assert_fs(&l.part(1), "ext4", U1, None, "nodeboot-data");
}

#[test]
fn refuses_swap() {
    if !can_run("refuses_swap") {
        return;
    }
    let l = Loop::new();
    format_with_key_partition(&l);
    ok(&["mkswap", &l.part(1)]);
    let on = run(&["swapon", &l.part(1)]);
    if !on.status.success() {
        eprintln!(
            "SKIP: refuses_swap: swapon failed here ({}); the /proc/swaps parser has unit tests",
            String::from_utf8_lossy(&on.stderr).trim()
        );
        return;
    }
    struct Off(String);
    impl Drop for Off {
        fn drop(&mut self) {
            let _ = Command::new("swapoff").arg(&self.0).output();
        }
    }
    let _off = Off(l.part(1));
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U2, "--wipe"]);
    assert_eq!(o.status.code(), Some(3));
    let want = format!(
        "refusing to format {}: {} is in use as swap; swapoff it first",
        l.dev,
        l.part(1)
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_fs(&l.part(2), "xfs", U1, None, "nodeboot-data");
}

#[test]
fn refuses_held_partition() {
    if !can_run("refuses_held_partition") {
        return;
    }
    let l = Loop::new();
    assert!(
        nodectl(&["format-disk", &l.dev, "--fs", "ext4", "--uuid", U1])
            .status
            .success()
    );
    let sectors = ok(&["blockdev", "--getsz", &l.part(1)]);
    let dm = format!("nodeboot-test-{}", l.dev.trim_start_matches("/dev/"));
    let table = format!("0 {} linear {} 0", sectors.trim(), l.part(1));
    let created = run(&["dmsetup", "create", &dm, "--table", &table]);
    let o = if created.status.success() {
        struct Remove(String);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = Command::new("dmsetup").args(["remove", &self.0]).output();
            }
        }
        let _rm = Remove(dm.clone());
        let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U2, "--wipe"]);
        assert!(
            stderr(&o).contains(&format!("(device-mapper {dm})")),
            "{}",
            stderr(&o)
        );
        o
    } else {
        // No device-mapper in this kernel (dmsetup: "Command failed"). The
        // kernel's holders/ directory is then faked in a private mount
        // namespace: a tmpfs over the partition's holders/ with a dm-9 entry,
        // which is exactly what nodectl reads.
        eprintln!(
            "note: refuses_held_partition: dmsetup create failed ({}): \
             simulating a device-mapper holder in a private mount namespace",
            String::from_utf8_lossy(&created.stderr).trim()
        );
        let holders = format!(
            "/sys/block/{}/{}/holders",
            l.dev.trim_start_matches("/dev/"),
            l.part(1).trim_start_matches("/dev/")
        );
        let script = format!(
            "mount -t tmpfs nodeboot-test {holders} && ln -s ../../dm-9 {holders}/dm-9 && \
             exec {NODECTL} format-disk {} --fs xfs --uuid {U2} --wipe",
            l.dev
        );
        let o = run(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]);
        eprintln!("{}", stderr(&o));
        o
    };
    assert_eq!(o.status.code(), Some(3));
    let want = format!("refusing to format {}: {} is held by dm-", l.dev, l.part(1));
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(stderr(&o).contains("remove that first (dmsetup remove, mdadm --stop, vgchange -an)"));
    assert_fs(&l.part(1), "ext4", U1, None, "nodeboot-data");
}

#[test]
fn refuses_existing_signatures_without_wipe() {
    if !can_run("refuses_existing_signatures_without_wipe") {
        return;
    }
    let l = Loop::new();
    // The seed's way: a filesystem on the whole disk.
    ok(&["mkfs.ext4", "-q", "-F", "-U", U2, "-L", "oldkey", &l.dev]);
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U1]);
    assert_eq!(o.status.code(), Some(3));
    let want = format!(
        "refusing to format {}: it is not blank: ext4 UUID {U2} label \"oldkey\" on the whole disk; \
         add --wipe to erase it",
        l.dev
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert_eq!(blkid(&l.dev)["UUID"], U2, "refused, yet the disk changed");
    // A partition table made by another tool.
    let o = Command::new("sh")
        .args([
            "-c",
            &format!(
                "printf 'label: gpt\\n,100M\\n' | sfdisk -q --wipe always {}",
                l.dev
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U1]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("it is not blank: a gpt partition table with 1 partition"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("add --wipe to erase it"));
    // With --wipe it goes through.
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U1, "--wipe"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fs(&l.part(1), "xfs", U1, None, "nodeboot-data");
    assert!(
        !blkid(&l.dev).contains_key("UUID"),
        "old whole-disk ext4 still there"
    );
}

/// The MAJ:MIN of a kernel device (sysfs).
fn devnum(dev: &str) -> String {
    let name = dev.trim_start_matches("/dev/");
    let p = std::fs::canonicalize(format!("/sys/class/block/{name}")).unwrap();
    std::fs::read_to_string(p.join("dev"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn refuses_root_cache_and_boot_disks_even_with_wipe() {
    if !can_run("refuses_root_cache_and_boot_disks_even_with_wipe") {
        return;
    }
    let l = Loop::new();
    assert!(
        nodectl(&["format-disk", &l.dev, "--fs", "ext4", "--uuid", U1])
            .status
            .success()
    );
    let digest = l.digest();
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("1 0 {} / / rw - ext4 {} rw\n", devnum(&l.part(1)), l.part(1)),
            format!("it holds the running root (/ is mounted from {}); refused even with --wipe", l.part(1)),
        ),
        (
            format!(
                "1 0 254:0 / / rw - ext4 /dev/vda rw\n\
                 2 1 0:30 / /run rw - tmpfs tmpfs rw\n\
                 3 2 {} / /run/nodeboot rw - ext4 {} rw\n",
                devnum(&l.dev),
                l.dev
            ),
            format!("it holds the live image cache (/run/nodeboot is mounted from {}); refused even with --wipe", l.dev),
        ),
        (
            format!("7 1 {} / /boot/efi rw - vfat {} rw\n", devnum(&l.part(1)), l.part(1)),
            format!("it holds the boot medium (/boot/efi is mounted from {}); refused even with --wipe", l.part(1)),
        ),
    ];
    for (i, (mountinfo, want)) in cases.iter().enumerate() {
        let mi = d.path().join(format!("mountinfo{i}"));
        std::fs::write(&mi, mountinfo).unwrap();
        let sys = System {
            mountinfo: mi,
            ..System::default()
        };
        let req = FormatRequest {
            device: l.dev.clone().into(),
            fs: Fs::Xfs,
            uuid: U2.parse().unwrap(),
            label: None,
            key_partition: None,
            cache_partition: None,
            wipe: true,
            dry_run: false,
        };
        let e = format_disk(&req, &sys, &Tools::default(), &mut |_| {}).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        let FormatError::Refused { device, reasons } = &e else {
            panic!("{e:#}")
        };
        assert_eq!(device, &l.dev);
        assert!(
            matches!(reasons[0], Refusal::Protected { .. }),
            "{reasons:?}"
        );
        let msg = e.to_string();
        eprintln!("nodectl: error: {msg}");
        assert!(
            msg.starts_with(&format!("refusing to format {}: ", l.dev)),
            "{msg}"
        );
        assert!(msg.contains(want.as_str()), "{msg}");
    }
    assert_eq!(l.digest(), digest);
}

#[test]
fn mkfs_failure_leaves_an_empty_gpt() {
    if !can_run("mkfs_failure_leaves_an_empty_gpt") {
        return;
    }
    let l = Loop::new();
    // The worst case: mkfs writes the whole filesystem, UUID included,
    // then fails.
    let d = tempfile::tempdir().unwrap();
    let fake = d.path().join("mkfs.xfs");
    std::fs::write(
        &fake,
        "#!/bin/sh\nmkfs.xfs \"$@\" >/dev/null || exit 9\necho 'mkfs.xfs: simulated failure' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tools = Tools {
        mkfs_xfs: fake.into_os_string(),
        ..Tools::default()
    };
    let req = FormatRequest {
        device: l.dev.clone().into(),
        fs: Fs::Xfs,
        uuid: U1.parse().unwrap(),
        label: Some("half".into()),
        key_partition: Some(16 * MIB),
        cache_partition: None,
        wipe: false,
        dry_run: false,
    };
    let mut planned = Vec::new();
    let e = format_disk(&req, &System::default(), &tools, &mut |r| {
        planned = r.plan.iter().map(|p| p.part.start_bytes).collect();
    })
    .unwrap_err();
    let msg = e.to_string();
    eprintln!("nodectl: error: {msg}");
    assert_eq!(e.exit_code(), 4);
    assert!(
        msg.contains(&format!(
            "formatting {} failed; its partition table was reset to an empty GPT \
             (no filesystem left under UUID {U1})",
            l.dev
        )),
        "{msg}"
    );
    assert!(msg.contains("mkfs.xfs: simulated failure"), "{msg}");
    // An empty GPT, as libfdisk sees it.
    let pt = sfdisk(&l.dev);
    assert_eq!(pt["partitiontable"]["label"], "gpt");
    assert!(pt["partitiontable"]["partitions"]
        .as_array()
        .is_none_or(|p| p.is_empty()));
    // No filesystem anywhere it was made: not in the kernel's partitions
    // (gone), not at the partitions' old offsets.
    assert!(!Path::new(&l.part(1)).exists() && !Path::new(&l.part(2)).exists());
    assert_eq!(planned.len(), 2);
    for off in planned {
        let o = run(&["blkid", "-p", "-O", &off.to_string(), &l.dev]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "something at offset {off}: {}",
            stdout(&o)
        );
    }
    let sigs = ok(&["wipefs", "--no-act", "--json", &l.dev]);
    assert!(!sigs.contains(U1), "{sigs}");
    // And the disk is usable: the same request with the real mkfs works.
    let e = format_disk(&req, &System::default(), &Tools::default(), &mut |_| {});
    assert!(e.is_err(), "an empty GPT is not blank: needs --wipe");
    let req = FormatRequest { wipe: true, ..req };
    format_disk(&req, &System::default(), &Tools::default(), &mut |_| {}).unwrap();
    assert_fs(&l.part(2), "xfs", U1, Some("half"), "nodeboot-data");
}

#[test]
fn install_key_writes_0600_and_reads_back() {
    if !can_run("install_key_writes_0600_and_reads_back") {
        return;
    }
    let l = Loop::new();
    format_with_key_partition(&l);
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("deploy_key");
    let secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nnodeboot-test-secret-material\n-----END OPENSSH PRIVATE KEY-----\n";
    std::fs::write(&key, secret).unwrap();
    let runs_before = leftovers();
    // The whole disk: its nodeboot-key partition is found.
    let o = nodectl(&["install-key", &l.dev, key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        !all.contains("nodeboot-test-secret-material"),
        "the key was printed"
    );
    assert!(
        stdout(&o).contains(&format!(
            "installed the key on {} as key ({} bytes, mode 0600, owner root:root), read back and compared",
            l.part(1),
            secret.len()
        )),
        "{}",
        stdout(&o)
    );
    // Again, on the partition itself, with another key: replaced.
    std::fs::write(&key, "second key\n").unwrap();
    let o = nodectl(&["install-key", &l.part(1), key.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["bytes"], 11);
    {
        let m = Mounted::new(&l.part(1), &["-o", "ro"]);
        let p = m.dir.path().join("key");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second key\n");
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!((md.uid(), md.gid()), (0, 0));
        let root = std::fs::metadata(m.dir.path()).unwrap();
        assert_eq!(root.mode() & 0o777, 0o700);
        let names: Vec<String> = std::fs::read_dir(m.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lost+found")
            .collect();
        assert_eq!(names, ["key"], "a temporary file was left");
    }
    // Unmounted and removed on every path, failures included.
    assert_eq!(leftovers(), runs_before);
    let o = nodectl(&["install-key", &l.part(2), key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "{} is not a nodeboot key partition: its GPT name is \"nodeboot-data\"",
            l.part(2)
        )),
        "{}",
        stderr(&o)
    );
    std::fs::write(&key, "").unwrap();
    let o = nodectl(&["install-key", &l.dev, key.to_str().unwrap()]);
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));
    assert_eq!(leftovers(), runs_before);
}

/// `nodectl identity init` makes the node key on the key partition (in
/// clear, 0600, beside the deploy key) once; `show` reads it back; a TPM
/// asked for where there is none is an error that writes nothing.
#[test]
fn identity_init_on_the_key_partition() {
    if !can_run("identity_init_on_the_key_partition") {
        return;
    }
    let l = Loop::new();
    format_with_key_partition(&l);
    let o = nodectl(&["identity", "init", &l.dev, "--tpm", "off"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let made = stdout(&o);
    let prefix = "made node key SHA256:";
    assert!(made.starts_with(prefix), "{made}");
    let fp = made.split_whitespace().nth(3).unwrap().to_string();
    assert!(
        made.trim_end()
            .ends_with(&format!("(in clear on the key partition) on {}", l.part(1))),
        "{made}"
    );
    let o = nodectl(&["identity", "show", &l.part(1)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = stdout(&o);
    let mut lines = shown.lines();
    assert!(
        lines.next().unwrap().starts_with("nodeboot-key-v1 "),
        "{shown}"
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("{fp} (in clear on the key partition)")
    );
    let o = nodectl(&["identity", "init", &l.dev]);
    assert!(
        stdout(&o).starts_with(&format!("kept the node key {fp} ")),
        "{}",
        stdout(&o)
    );
    {
        let m = Mounted::new(&l.part(1), &["-o", "ro"]);
        let md = std::fs::metadata(m.dir.path().join("identity")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!((md.uid(), md.gid()), (0, 0));
        let text = std::fs::read_to_string(m.dir.path().join("identity.pub")).unwrap();
        assert_eq!(text.trim_end(), shown.lines().next().unwrap());
    }
    // Nothing mounted or left under /run afterwards.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&l.part(1)), "{mounts}");
    // A TPM asked for, none there (this machine has no /dev/tpmrm0).
    if !Path::new("/dev/tpmrm0").exists() {
        let l2 = Loop::new();
        format_with_key_partition(&l2);
        let o = nodectl(&["identity", "init", &l2.dev, "--tpm", "on"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("no TPM: /dev/tpmrm0 does not exist"),
            "{}",
            stderr(&o)
        );
        let o = nodectl(&["identity", "show", &l2.dev]);
        assert!(
            stderr(&o).contains(&format!(
                "no node key on {} (nodectl identity init makes one)",
                l2.part(1)
            )),
            "{}",
            stderr(&o)
        );
    }
}

/// install-key's temporary directories and mounts under /run.
fn leftovers() -> (usize, usize) {
    let dirs = std::fs::read_dir("/run")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("nodectl-key.")
        })
        .count();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/run/nodectl-key."))
        .count();
    (dirs, mounts)
}

#[test]
fn bad_command_lines_exit_2() {
    for (args, want) in [
        (
            vec!["--fs", "xfs", "--uuid", "0b1f6a5e3c1d4b6e9a7c2f7e8d9c0a11"],
            "is not a UUID: expected 8-4-4-4-12 hexadecimal digits",
        ),
        (
            vec![
                "--fs",
                "xfs",
                "--uuid",
                "00000000-0000-0000-0000-000000000000",
            ],
            "is the nil UUID",
        ),
        (
            vec!["--fs", "xfs", "--uuid", U1, "--label", "thirteen-char"],
            "is 13 bytes long: an xfs label holds at most 12",
        ),
        (
            vec!["--fs", "ext4", "--uuid", U1, "--key-partition", "2G"],
            "out of bounds: the key partition takes 8 MiB to 1 GiB",
        ),
        (
            vec!["--fs", "ext4", "--uuid", U1, "--key-partition", "64MB"],
            "units are binary here",
        ),
        (vec!["--fs", "zfs", "--uuid", U1], "invalid value 'zfs'"),
    ] {
        let mut argv = vec!["format-disk", "/dev/null"];
        argv.extend(args);
        let o = nodectl(&argv);
        assert_eq!(o.status.code(), Some(2), "{argv:?}");
        assert!(stderr(&o).contains(want), "{argv:?}: {}", stderr(&o));
    }
    let o = nodectl(&["format-disk", "--help"]);
    let help = stdout(&o);
    for s in [
        "Exit status:",
        "already formatted",
        "--dry-run",
        "even with --wipe",
        "install-key",
    ] {
        assert!(help.contains(s), "--help lacks {s:?}");
    }
}

#[test]
fn too_small_disk_is_refused() {
    if !can_run("too_small_disk_is_refused") {
        return;
    }
    let l = Loop::sized(200 * MIB);
    let o = nodectl(&["format-disk", &l.dev, "--fs", "xfs", "--uuid", U1]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("it is too small: 200 MiB leaves a data partition of 198 MiB, and mkfs.xfs needs at least 300 MiB"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("size:    209715200 bytes"),
        "the facts come first"
    );
}

#[test]
fn refuses_a_uuid_another_device_has() {
    if !can_run("refuses_a_uuid_another_device_has") {
        return;
    }
    let (l, other) = (Loop::new(), Loop::sized(64 * MIB));
    // What udev would have made for a filesystem with U1 on the other disk.
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&other.dev, d.path().join(U1)).unwrap();
    let sys = System {
        by_uuid: d.path().to_path_buf(),
        ..System::default()
    };
    let req = FormatRequest {
        device: l.dev.clone().into(),
        fs: Fs::Ext4,
        uuid: U1.parse().unwrap(),
        label: None,
        key_partition: None,
        cache_partition: None,
        wipe: false,
        dry_run: false,
    };
    let e = format_disk(&req, &sys, &Tools::default(), &mut |_| {}).unwrap_err();
    let msg = e.to_string();
    eprintln!("nodectl: error: {msg}");
    assert_eq!(e.exit_code(), 3);
    assert!(
        msg.contains(&format!(
            "refusing to format {}: UUID {U1} already names the filesystem on {}, another device; \
             pick another (uuidgen)",
            l.dev, other.dev
        )),
        "{msg}"
    );
    assert!(blkid(&l.dev).is_empty(), "refused, yet written");
    // The link pointing at this disk's own partition is no obstacle.
    format_disk(&req, &System::default(), &Tools::default(), &mut |_| {}).unwrap();
    std::fs::remove_file(d.path().join(U1)).unwrap();
    std::os::unix::fs::symlink(l.part(1), d.path().join(U1)).unwrap();
    let r = format_disk(&req, &sys, &Tools::default(), &mut |_| {}).unwrap();
    assert_eq!(r.result.as_deref(), Some("already-formatted"));
}
