//! Round trip: a generated tree holding every entry kind → `nodeimg build` →
//! mounted read-only → every entry compared with the source (type, mode,
//! owner, mtime, size, rdev, symlink target, xattrs, content, hard links).
mod common;

use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Inodes of a tree: directories plus distinct non-directory inodes.
fn inode_count(root: &Path) -> usize {
    walk(root)
        .values()
        .map(|i| (i.dev, i.ino))
        .collect::<BTreeSet<_>>()
        .len()
}

fn check_superblock(image: &Path, src: &Path, block_size: u32) {
    let sb = superblock(image);
    assert_eq!(sb.version, (4, 0), "squashfs version");
    assert_eq!(sb.compression, ZSTD, "compressor id (6 = zstd)");
    assert_eq!(sb.block_size, block_size, "block size");
    assert_eq!(1u32 << sb.block_log, sb.block_size, "block_log");
    let len = fs::metadata(image).unwrap().len();
    assert!(
        sb.bytes_used <= len,
        "bytes_used {} > file size {len}",
        sb.bytes_used
    );
    assert_eq!(
        sb.inodes as usize,
        inode_count(src),
        "superblock inode count vs the source's inodes"
    );
}

/// A source directory in `t` holding `full_tree(opts)`.
fn source(t: &tempfile::TempDir, opts: TreeOpts) -> std::path::PathBuf {
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let spec = full_tree(opts);
    write_tree(&src, &spec, Order::AsListed);
    assert_source_has(&src, &spec);
    src
}

/// Build `input` with `o`, check the superblock against `src`, mount the
/// image and compare it with `src`.
fn build_and_compare(t: &tempfile::TempDir, input: &Path, src: &Path, name: &str, o: &BuildOpts) {
    let img = t.path().join(format!("{name}.squashfs"));
    build_ok(input, &img, o);
    check_superblock(&img, src, o.block_size.unwrap_or(131_072));
    let m = Mount::new(&img, &t.path().join(format!("mnt-{name}")));
    assert_same_trees(src, &m.dir, Expect::default());
}

#[test]
fn directory_round_trip() {
    if skip_without_mount("directory_round_trip") {
        return;
    }
    let t = tempdir();
    let src = source(
        &t,
        TreeOpts {
            socket: true,
            big: true,
            privileged: true,
        },
    );
    build_and_compare(&t, &src, &src, "root", &BuildOpts::default());
}

#[test]
fn tar_zst_round_trip() {
    if skip_without_mount("tar_zst_round_trip") {
        return;
    }
    let t = tempdir();
    // A tar cannot hold a socket.
    let src = source(
        &t,
        TreeOpts {
            socket: false,
            big: true,
            privileged: true,
        },
    );
    let archive = t.path().join("root.tar.zst");
    make_tar_zst(&src, &archive);
    build_and_compare(&t, &archive, &src, "root", &BuildOpts::default());
}

/// The smallest and the largest block sizes: other block counts, fragments
/// and holes for the same files.
#[test]
fn block_sizes_round_trip() {
    if skip_without_mount("block_sizes_round_trip") {
        return;
    }
    let t = tempdir();
    let src = source(
        &t,
        TreeOpts {
            socket: true,
            big: false,
            privileged: true,
        },
    );
    for bs in [4096u32, 1 << 20] {
        let o = BuildOpts {
            block_size: Some(bs),
            level: Some(1),
            ..Default::default()
        };
        build_and_compare(&t, &src, &src, &format!("bs-{bs}"), &o);
    }
}

/// The comparison itself finds what it must: an image made by mksquashfs
/// with `-all-root -no-xattrs` from a source changed afterwards.
#[test]
fn comparison_catches_differences() {
    if skip_without_mount("comparison_catches_differences") {
        return;
    }
    let t = tempdir();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut spec = Spec::new();
    spec.file("owned", b"o".to_vec())
        .owner(1234, 5678)
        .xattr("user.note", b"kept?");
    spec.file("content", random_bytes(300_000));
    spec.file("linked", b"l".to_vec());
    spec.hardlink("linked-2", "linked");
    spec.file("unchanged", b"u".to_vec());
    write_tree(&src, &spec, Order::AsListed);
    let img = t.path().join("x.squashfs");
    let st = std::process::Command::new("mksquashfs")
        .arg(&src)
        .arg(&img)
        .args(["-comp", "zstd", "-noappend", "-no-progress", "-quiet"])
        .args(["-all-root", "-no-xattrs"])
        .status()
        .expect("running mksquashfs");
    assert!(st.success());
    // Change the source after the build: one byte of content (mtime kept),
    // and split the hard link pair.
    let c = src.join("content");
    let mtime = info(&c).mtime;
    std::os::unix::fs::FileExt::write_all_at(
        &fs::File::options().write(true).open(&c).unwrap(),
        b"!",
        200_001,
    )
    .unwrap();
    std::process::Command::new("touch")
        .arg("-d")
        .arg(format!("@{mtime}"))
        .arg(&c)
        .status()
        .unwrap();
    fs::remove_file(src.join("linked-2")).unwrap();
    fs::write(src.join("linked-2"), b"l").unwrap();

    let m = Mount::new(&img, &t.path().join("mnt"));
    let bad = compare_trees(&src, &m.dir, Expect::default());
    let text = bad.join("\n");
    for want in [
        "\"owned\": owner 1234:5678 vs 0:0",
        "xattrs [\"user.note(5 bytes)\"] vs []",
        "\"content\": content differs at byte 200001",
        "\"linked\": nlink 1 vs 2; hard links [\"linked\"] vs [\"linked\", \"linked-2\"]",
        "\"linked-2\": mtime",
    ] {
        assert!(text.contains(want), "{want:?} not reported in:\n{text}");
    }
    assert!(!text.contains("unchanged"), "a false difference:\n{text}");
}
