//! Bad input: every failure exits non-zero, names the offending path in its
//! message, and leaves nothing in the output directory (neither the final
//! NAME.squashfs / .sha256 / .json nor a temporary file).
mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Bad input must fail fast; a hang is a failure too.
fn opts() -> BuildOpts {
    BuildOpts {
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

/// A directory for the outputs and the image path in it.
fn out_dir(t: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let d = t.path().join("out");
    fs::create_dir(&d).unwrap();
    let img = d.join("node.squashfs");
    (d, img)
}

/// Asserts the build failed, its stderr holds every needle, and `dir` is empty.
fn assert_failed(what: &str, out: &Output, dir: &Path, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{what}: {}", stderr.trim_end());
    assert!(
        !out.status.success(),
        "{what}: the build succeeded; stderr:\n{stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "{what}: stderr does not contain {n:?}:\n{stderr}"
        );
    }
    let left = dir_names(dir);
    assert!(
        left.is_empty(),
        "{what}: the failed build left {left:?} in {}",
        dir.display()
    );
}

/// A tar member written header by header, so that names the `tar` crate
/// refuses (`../evil`, `/etc/x`) can be written raw.
enum Member<'a> {
    Dir(&'a [u8]),
    File(&'a [u8], &'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
}

fn tar_bytes(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        let (name, link, data, kind, mode): (&[u8], &[u8], &[u8], _, u32) = match m {
            Member::Dir(n) => (n, b"", b"", tar::EntryType::Directory, 0o755),
            Member::File(n, d) => (n, b"", d, tar::EntryType::Regular, 0o644),
            Member::Symlink(n, t) => (n, t, b"", tar::EntryType::Symlink, 0o777),
            Member::Hardlink(n, t) => (n, t, b"", tar::EntryType::Link, 0o644),
        };
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name);
            raw.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Some valid members first: the failure comes after work has been done.
fn valid_prefix(big: &[u8]) -> Vec<Member<'_>> {
    vec![
        Member::Dir(b"./"),
        Member::Dir(b"usr/"),
        Member::File(b"usr/big", big),
        Member::Dir(b"etc/"),
        Member::File(b"etc/hostname", b"cn1\n"),
    ]
}

fn write_tar(path: &Path, members: &[Member]) {
    let bytes = tar_bytes(members);
    if path.extension().is_some_and(|e| e == "zst") {
        fs::write(path, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    } else {
        fs::write(path, bytes).unwrap();
    }
}

/// Builds from a tar holding `valid_prefix` then `bad`, and checks the failure.
fn bad_tar(what: &str, archive_name: &str, bad: Vec<Member>, needles: &[&str]) {
    if skip_under_mksquashfs(what) {
        return;
    }
    let t = tempdir();
    let big = random_bytes(600_000);
    let mut members = valid_prefix(&big);
    members.extend(bad);
    let archive = t.path().join(archive_name);
    write_tar(&archive, &members);
    let (dir, img) = out_dir(&t);
    let out = build(&archive, &img, &opts());
    assert_failed(what, &out, &dir, needles);
}

#[test]
fn missing_source() {
    if skip_under_mksquashfs("missing_source") {
        return;
    }
    let t = tempdir();
    let src = t.path().join("no-such-root");
    let (dir, img) = out_dir(&t);
    let out = build(&src, &img, &opts());
    assert_failed(
        "missing source",
        &out,
        &dir,
        &[src.to_str().unwrap(), "No such file"],
    );
}

#[test]
fn source_is_neither_dir_nor_tar() {
    if skip_under_mksquashfs("source_is_neither_dir_nor_tar") {
        return;
    }
    let t = tempdir();
    let src = t.path().join("notes.txt");
    fs::write(&src, "this is not an archive\n".repeat(100)).unwrap();
    let (dir, img) = out_dir(&t);
    let out = build(&src, &img, &opts());
    assert_failed(
        "a text file as source",
        &out,
        &dir,
        &[src.to_str().unwrap()],
    );
}

#[test]
fn tar_entry_leaving_the_root() {
    for name in ["evil.tar", "evil.tar.zst"] {
        bad_tar(
            &format!("{name} with ../evil"),
            name,
            vec![Member::File(b"../evil", b"pwned\n")],
            &["../evil", "leaves the root"],
        );
    }
}

#[test]
fn tar_entry_leaving_the_root_deeper() {
    bad_tar(
        "usr/../../evil",
        "deeper.tar",
        vec![Member::File(b"usr/../../evil", b"pwned\n")],
        &["usr/../../evil", "leaves the root"],
    );
}

#[test]
fn tar_write_through_symlink() {
    bad_tar(
        "etc2 -> /etc then etc2/passwd",
        "through.tar.zst",
        vec![
            Member::Symlink(b"etc2", b"/etc"),
            Member::File(b"etc2/passwd", b"root::0:0::/:/bin/sh\n"),
        ],
        &["etc2/passwd", "through the symlink"],
    );
}

#[test]
fn tar_write_through_relative_symlink() {
    bad_tar(
        "up -> .. then up/escaped",
        "relative.tar",
        vec![
            Member::Symlink(b"up", b".."),
            Member::File(b"up/escaped", b"x\n"),
        ],
        &["up/escaped", "through the symlink"],
    );
}

#[test]
fn tar_absolute_member() {
    bad_tar(
        "absolute /etc/x",
        "absolute.tar",
        vec![Member::File(b"/etc/x", b"x\n")],
        &["/etc/x", "absolute"],
    );
}

#[test]
fn tar_hardlink_leaving_the_root() {
    bad_tar(
        "hardlink to ../x",
        "hardlink-up.tar",
        vec![Member::Hardlink(b"usr/link", b"../x")],
        &["usr/link", "../x"],
    );
}

#[test]
fn tar_hardlink_to_missing_member() {
    bad_tar(
        "hardlink to a member not in the archive",
        "hardlink-missing.tar",
        vec![Member::Hardlink(b"usr/link", b"usr/not-in-archive")],
        &["usr/link", "usr/not-in-archive"],
    );
}

#[test]
fn tar_hardlink_to_absolute_path() {
    bad_tar(
        "hardlink to /etc/shadow",
        "hardlink-abs.tar",
        vec![Member::Hardlink(b"usr/shadow", b"/etc/shadow")],
        &["usr/shadow", "/etc/shadow"],
    );
}

#[test]
fn full_disk() {
    if skip_under_mksquashfs("full_disk") || skip_without_mount("full_disk") {
        return;
    }
    let t = tempdir();
    let src = t.path().join("root");
    let mut spec = Spec::new();
    spec.dir("data");
    for i in 0..5 {
        spec.file(format!("data/random-{i}"), random_bytes(2 * MIB as usize));
    }
    fs::create_dir(&src).unwrap();
    write_tree(&src, &spec, Order::AsListed);
    let small = Tmpfs::new(&t.path().join("small"), "2m");
    let img = small.dir.join("node.squashfs");
    let out = build(&src, &img, &opts());
    assert_failed(
        "a 2 MiB output filesystem",
        &out,
        &small.dir,
        &[img.to_str().unwrap(), "No space left on device"],
    );
}

#[test]
fn output_directory_missing() {
    if skip_under_mksquashfs("output_directory_missing") {
        return;
    }
    let t = tempdir();
    let src = t.path().join("root");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let dir = t.path().join("no-such-dir");
    let img = dir.join("node.squashfs");
    let out = build(&src, &img, &opts());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build succeeded:\n{stderr}");
    assert!(
        stderr.contains(dir.to_str().unwrap()),
        "stderr does not name {}:\n{stderr}",
        dir.display()
    );
    assert!(!dir.exists(), "{} was created", dir.display());
}

/// A directory in the source the builder may not read. Root reads
/// everything, so the build runs as nobody (setpriv, util-linux) on a tree
/// with a 0700 directory owned by root; without root the test user is
/// already unprivileged.
#[test]
fn unreadable_source_directory() {
    use std::os::unix::fs::PermissionsExt;
    if skip_under_mksquashfs("unreadable_source_directory") {
        return;
    }
    let t = tempdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("root");
    let secret = src.join("etc/private");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("key"), "k").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let (dir, img) = out_dir(&t);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nodeimg"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_nodeimg"))
    };
    c.arg("build").arg(&src).arg("-o").arg(&img);
    let out = run_with_timeout(c, Duration::from_secs(60));
    assert_failed(
        "unreadable source directory",
        &out,
        &dir,
        &[secret.to_str().unwrap(), "Permission denied"],
    );
}
