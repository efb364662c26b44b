//! Hostile archives (issue 12): small crafted tars that used to cost
//! hundreds of MB or hours. Each must end quickly, with bounded memory,
//! either in a correct image or refused with a message naming what is at
//! fault and nothing left in the output directory.
mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BLOCK: usize = 512;

/// A GNU-magic header with a valid checksum.
fn header(name: &[u8], ty: u8, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"13000000000\0");
    h[156] = ty;
    h[257..265].copy_from_slice(b"ustar  \0");
    seal(&mut h);
    h
}

fn seal(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn record(k: &str, v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 2;
    let mut len = body + 1;
    while len.to_string().len() + 1 + body != len {
        len += 1;
    }
    let mut r = format!("{len} {k}=").into_bytes();
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

fn member(out: &mut Vec<u8>, name: &[u8], ty: u8, data: &[u8]) {
    out.extend_from_slice(&header(name, ty, data.len() as u64));
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
}

/// An old GNU sparse ('S') member: `real` bytes, `map` extents whose data
/// (`stored` bytes of 'x') follows.
fn old_gnu_sparse(out: &mut Vec<u8>, name: &[u8], real: u64, map: &[(u64, u64)], stored: u64) {
    let mut h = header(name, b'S', stored);
    for (i, (off, len)) in map.iter().take(4).enumerate() {
        let e = 386 + i * 24;
        h[e..e + 12].copy_from_slice(&num12(*off));
        h[e + 12..e + 24].copy_from_slice(&num12(*len));
    }
    h[483..495].copy_from_slice(&num12(real));
    seal(&mut h);
    out.extend_from_slice(&h);
    out.resize(out.len() + (stored as usize).next_multiple_of(BLOCK), b'x');
}

/// A 12-byte number field: octal, or GNU base-256 when too large.
fn num12(v: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    if v < 8u64.pow(11) {
        f.copy_from_slice(format!("{v:011o}\0").as_bytes());
    } else {
        f[0] = 0x80;
        f[4..].copy_from_slice(&v.to_be_bytes());
    }
    f
}

fn finish(mut ar: Vec<u8>, t: &Path, name: &str) -> PathBuf {
    ar.extend_from_slice(&[0u8; 2 * BLOCK]);
    let p = t.join(name);
    fs::write(&p, ar).unwrap();
    p
}

/// Builds `archive`; the build must end within `secs` under 256 MiB.
fn run(archive: &Path, t: &Path, secs: u64) -> (Run, PathBuf, PathBuf) {
    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    let img = out.join("img.squashfs");
    let r = build_measured(archive, &img, Duration::from_secs(secs));
    eprintln!(
        "{}: {:.2} s, max RSS {} MiB, ok={}\n{}",
        archive.display(),
        r.secs,
        r.max_rss_kib / 1024,
        r.ok,
        r.stderr.trim_end()
    );
    assert!(r.signal.is_none(), "killed by a signal or the timeout");
    assert!(r.secs < secs as f64, "took {:.1} s", r.secs);
    assert!(
        r.max_rss_kib < 256 << 10,
        "max RSS {} MiB",
        r.max_rss_kib / 1024
    );
    (r, out, img)
}

fn refused(r: &Run, out: &Path, needles: &[&str]) {
    assert!(!r.ok, "built, should have been refused");
    for n in needles {
        assert!(r.stderr.contains(n), "{n:?} not in:\n{}", r.stderr);
    }
    assert!(dir_names(out).is_empty(), "left {:?}", dir_names(out));
}

/// Attack a: a global pax header whose ~1 MB of xattrs were copied into
/// every later entry (1.2 MB → 315 MB of memory, unbounded with more
/// entries). Global headers are not applied any more; one setting xattrs
/// is refused, naming it.
#[test]
fn global_pax_xattrs_are_not_multiplied() {
    if skip_under_mksquashfs("global_pax_xattrs_are_not_multiplied") {
        return;
    }
    let t = tempdir();
    let mut recs = Vec::new();
    for i in 0..60 {
        recs.extend(record(
            &format!("SCHILY.xattr.user.k{i}"),
            &vec![b'a' + (i % 26) as u8; 16000],
        ));
    }
    let mut ar = Vec::new();
    member(&mut ar, b"pax_global_header", b'g', &recs);
    for i in 0..400 {
        member(&mut ar, format!("f{i}").as_bytes(), b'0', b"x");
    }
    let archive = finish(ar, t.path(), "global.tar");
    let (r, out, _) = run(&archive, t.path(), 30);
    refused(
        &r,
        &out,
        &[
            "pax_global_header",
            "SCHILY.xattr.user.k0",
            "every later entry",
        ],
    );
}

/// Attack a, per entry: more xattrs, or more bytes of them, than Linux
/// allows one inode are refused naming the entry; so is a pax header over
/// 1 MiB.
#[test]
fn per_entry_metadata_is_bounded() {
    if skip_under_mksquashfs("per_entry_metadata_is_bounded") {
        return;
    }
    let t = tempdir();
    let mut recs = Vec::new();
    for i in 0..20 {
        recs.extend(record(
            &format!("SCHILY.xattr.user.k{i}"),
            &vec![b'v'; 4000],
        ));
    }
    let mut ar = Vec::new();
    member(&mut ar, b"etc/", b'5', b"");
    member(&mut ar, b"PaxHeaders/fat", b'x', &recs);
    member(&mut ar, b"etc/fat", b'0', b"x");
    let archive = finish(ar, t.path(), "fat.tar");
    let (r, out, _) = run(&archive, t.path(), 30);
    refused(&r, &out, &["entry \"etc/fat\"", "64 KiB"]);

    let t = tempdir();
    let mut ar = Vec::new();
    member(
        &mut ar,
        b"PaxHeaders/big",
        b'x',
        &record("comment", &vec![b'c'; 2 << 20]),
    );
    member(&mut ar, b"big", b'0', b"x");
    let archive = finish(ar, t.path(), "big.tar");
    let (r, out, _) = run(&archive, t.path(), 30);
    refused(&r, &out, &["PaxHeaders/big", "1 MiB"]);
}

/// Attack b: two old-GNU sparse "16 GiB files" of 512 bytes, whose holes
/// were read and hashed byte by byte (hours). Now seconds, and the image
/// holds two 16 GiB sparse files.
#[test]
fn sparse_sixteen_gib_twice_is_fast() {
    if skip_under_mksquashfs("sparse_sixteen_gib_twice_is_fast")
        || skip_without_mount("sparse_sixteen_gib_twice_is_fast")
    {
        return;
    }
    let t = tempdir();
    let real = 16u64 << 30;
    let mut ar = Vec::new();
    old_gnu_sparse(&mut ar, b"a", real, &[(real - 512, 512)], 512);
    old_gnu_sparse(&mut ar, b"b", real, &[(real - 512, 512)], 512);
    let archive = finish(ar, t.path(), "sparse.tar");
    let (r, _, img) = run(&archive, t.path(), 20);
    assert!(r.ok, "refused:\n{}", r.stderr);
    let m = Mount::new(&img, &t.path().join("mnt"));
    for n in ["a", "b"] {
        let p = m.dir.join(n);
        assert_eq!(fs::metadata(&p).unwrap().len(), real, "{n}");
        use std::os::unix::fs::FileExt;
        let mut tail = vec![0u8; 1024];
        fs::File::open(&p)
            .unwrap()
            .read_exact_at(&mut tail, real - 1024)
            .unwrap();
        assert!(tail[..512].iter().all(|&b| b == 0), "{n}: hole not zero");
        assert!(tail[512..].iter().all(|&b| b == b'x'), "{n}: data lost");
    }
}

/// Attack b: holes past the per-archive budget, and maps that lie (extents
/// overlapping, past the real size, or not adding up to the data stored),
/// are refused naming the entry, before anything is built.
#[test]
fn sparse_maps_are_validated() {
    if skip_under_mksquashfs("sparse_maps_are_validated") {
        return;
    }
    let real = 1u64 << 40; // 1 TiB of holes: past the 256 GiB budget
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "budget",
            {
                let mut ar = Vec::new();
                old_gnu_sparse(&mut ar, b"huge", real, &[(0, 512)], 512);
                ar
            },
            vec!["\"huge\"", "holes"],
        ),
        (
            "overlap",
            {
                let mut ar = Vec::new();
                old_gnu_sparse(&mut ar, b"lap", 4096, &[(0, 1024), (512, 512)], 1536);
                ar
            },
            vec!["\"lap\"", "overlaps"],
        ),
        (
            "past-end",
            {
                let mut ar = Vec::new();
                old_gnu_sparse(&mut ar, b"past", 1000, &[(900, 512)], 512);
                ar
            },
            vec!["\"past\"", "past the end"],
        ),
        (
            "sum",
            {
                let mut ar = Vec::new();
                old_gnu_sparse(&mut ar, b"sum", 1 << 20, &[(0, 512)], 4096);
                ar
            },
            vec!["\"sum\"", "the archive stores 4096"],
        ),
    ];
    for (name, ar, needles) in cases {
        let t = tempdir();
        let archive = finish(ar, t.path(), &format!("{name}.tar"));
        let (r, out, _) = run(&archive, t.path(), 20);
        refused(&r, &out, &needles);
    }
}
