//! Third-party conformance: every archive of `shared/testdata/tar` (from
//! Go's archive/tar, libarchive, squashfs-tools-ng, star and mgorny's
//! tar-test-inputs; see its README.md) through the real `nodeimg build`.
//!
//! Each archive either builds an image whose tree (names, types, sizes,
//! modes, owners, mtimes, link targets, hard links, xattrs, contents, sparse
//! ones included) equals what GNU tar extracts from it as root, or, where
//! nodeimg's documented behaviour differs, equals an expected tree written
//! out below with the reason; or it is refused with a message naming the
//! entry, leaving nothing in the output directory. No build may hang (a
//! timeout), crash (a signal) or reach 1 GiB of memory (max RSS from wait4).
mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT_RSS_KIB: i64 = 1 << 20;
const LIMIT_TIME: Duration = Duration::from_secs(60);
/// Files larger than this are compared sparsely (unsquashfs + SEEK_DATA).
const BIG: u64 = 64 << 20;

/// What nodeimg must do with one archive.
enum Want {
    /// Build a tree equal to GNU tar's extraction.
    Gnu,
    /// GNU tar's extraction after these edits (nodeimg differs on purpose).
    GnuThen(&'static [Fix]),
    /// GNU tar's extraction of another archive of the corpus (same tree,
    /// another spelling, which GNU tar does not read).
    SameAs(&'static str),
    /// A tree written out here (GNU tar fails on, or misreads, the archive).
    Tree(fn(&Path)),
    /// Refused; stderr holds every needle (the entry's name among them).
    Refused(&'static [&'static str]),
}

enum Fix {
    /// squashfs mtimes are unsigned 32-bit: nodeimg clamps (documented in
    /// `nodeimg build --help` and tree.rs), never wraps.
    Mtime(&'static str, i64),
}

/// The expectation of each archive that is not simply [`Want::Gnu`]; the
/// README of testdata/tar is quoted as "README".
fn want(name: &str) -> Want {
    use Want::*;
    match name {
        // README: "All 'error' cases in TestReader fail on the first Next()"
        // (Go); GNU tar fails too.
        "go/issue10968.tar" => Refused(&["at byte 0", "bad size"]),
        "go/issue11169.tar" => Refused(&["PaxHeaders.14463/aaa", "malformed pax record"]),
        "go/issue12435.tar" => Refused(&["at byte 0", "bad size"]),
        "go/neg-size.tar" => Refused(&["at byte 0", "bad size"]),
        "go/pax-bad-hdr-file.tar" => Refused(&["path/to/readme", "malformed pax record"]),
        // README: ErrFieldTooLong (Go); here past the 1 MiB pax limit.
        "go/pax-bad-hdr-large.tar.bz2" => Refused(&["PaxHeaders.0/XXXX", "1 MiB"]),
        // README: Go: ErrHeader, GNU tar 1.34 accepts (mtime 999). nodeimg
        // follows Go: a malformed pax mtime is refused.
        "go/pax-bad-mtime-file.tar" => Refused(&["\"foo\"", "bad pax mtime"]),
        // README: Go and BSD reject, GNU truncates the name at the NUL;
        // nodeimg rejects.
        "go/pax-nul-path.tar" => Refused(&["0123456789", "NUL"]),
        "go/pax-nul-xattrs.tar" => Refused(&["bad-null.txt", "malformed pax record"]),
        // README: header only, 16 GiB declared: an unexpected EOF.
        "go/writer-big.tar" => Refused(&["tmp/16gig.txt", "cut short"]),
        "go/writer-big-long.tar" => Refused(&["longname/longname", "16gig.txt", "cut short"]),
        "squashfs-tools-ng/file-size/12-digit.tar"
        | "squashfs-tools-ng/file-size/gnu.tar"
        | "squashfs-tools-ng/file-size/pax.tar" => Refused(&["big-file.bin", "cut short"]),
        // README: global headers are implementation-defined. GNU tar applies
        // them (and names file1 "global1", then fails on the empty path).
        // nodeimg, as Go's reader and bsdtar, does not apply them: file1..4
        // as their own headers say (Go's TestReader values).
        "go/pax-global-records.tar" => Tree(pax_global_records),
        // README: Go reads 5 entries; GNU tar 1.34 lists them but fails to
        // extract ("Unexpected EOF").
        "go/sparse-formats.tar" => Tree(sparse_formats),
        // README: libarchive reads it, GNU tar 1.34 rejects it; nodeimg
        // rejects it (a '#' comment is not a sparse map line).
        "libarchive/test_read_format_gtar_sparse_1_17_posix10_modified.tar" => {
            Refused(&["sparse", "bad sparse map"])
        }
        // The 1.0 map of `a` covers 4099 bytes, the archive stores 4100:
        // libarchive only skips the entry, GNU tar ignores the extra byte,
        // Go reports unreferenced data; nodeimg requires them equal.
        "libarchive/test_read_format_gtar_sparse_skip_entry.tar" => {
            Refused(&["reading a", "sparse map"])
        }
        // README: fatal in libarchive.
        "libarchive/test_read_format_tar_V_negative_size.tar" => Refused(&["bad size"]),
        // README: "must not crash; any result".
        "libarchive/test_read_format_tar_acl_oob_read.tar" => {
            Refused(&["PaxHeader/file", "malformed pax record"])
        }
        "libarchive/test_read_format_tar_invalid_pax_size.tar" => {
            Refused(&["PaxHeaders.14463/aaa", "malformed pax record"])
        }
        // README: a 'g' claiming ~4 GiB: refused before any allocation.
        "libarchive/test_read_format_tar_pax_g_large.tar" => {
            Refused(&["pax global header", "1 MiB"])
        }
        // README: libarchive reads an 8 MB unknown pax record; nodeimg's pax
        // headers are limited to 1 MiB (tar.rs, MAX_META_SIZE).
        "libarchive/test_read_format_tar_pax_large_attr.tar.zst" => {
            Refused(&["PaxHeader/foo", "1 MiB"])
        }
        // Solaris sparse files are not among the claimed formats; GNU tar
        // ignores the record and extracts the packed data as the file.
        "libarchive/test_read_format_tar_pax_sun_holesdata.tar" => {
            Refused(&["\"hole\"", "SUN.holesdata"])
        }
        // README: libarchive warns and falls back to the header's mtime;
        // Go rejects a malformed pax time, and so does nodeimg.
        "libarchive/test_read_format_tar_pax_timestamps.tar" => {
            Refused(&["\"empty\"", "bad pax mtime"])
        }
        // README: GNU tar 1.34 errors; a record must end in a newline.
        "libarchive/test_read_pax_empty_val_no_nl.tar" => {
            Refused(&["PaxHeader/empty", "malformed pax record"])
        }
        // README: star's sparse formats are not claimed: rejected cleanly.
        "mgorny-extra/sparse-files/star.tar" | "mgorny-extra/sparse-files/xstar.tar" => {
            Refused(&["input.bin", "not supported"])
        }
        // README: squashfs mtimes are u32: clamp or reject, never wrap.
        "squashfs-tools-ng/negative-mtime/gnu.tar" | "squashfs-tools-ng/negative-mtime/pax.tar" => {
            GnuThen(&[Fix::Mtime("input.txt", 0)])
        }
        "squashfs-tools-ng/large-mtime/12-digit.tar"
        | "squashfs-tools-ng/large-mtime/gnu.tar"
        | "squashfs-tools-ng/large-mtime/pax.tar" => {
            GnuThen(&[Fix::Mtime("input.txt", u32::MAX as i64)])
        }
        "libarchive/test_read_format_tar_pax_negative_time.tar" => {
            GnuThen(&[Fix::Mtime("empty", 0)])
        }
        // README says mtime 15155542402, but those are the field's octal
        // digits: 0o15155542402 = 1773585666 (2026), as GNU tar reads it.
        // README: "both spellings must yield the same xattrs"; GNU tar
        // ignores LIBARCHIVE.xattr.* records.
        "libarchive/test_pax_xattr_header_libarchive.tar" => {
            SameAs("libarchive/test_pax_xattr_header_schily.tar")
        }
        "squashfs-tools-ng/xattr/xattr-libarchive.tar" => {
            SameAs("squashfs-tools-ng/xattr/xattr-schily.tar")
        }
        // README: RHT.security.selinux (Red Hat's tar), which GNU tar
        // ignores: expected `security.selinux` without a NUL.
        "libarchive/test_read_pax_xattr_rht_security_selinux.tar" => Tree(rht_selinux),
        _ => Gnu,
    }
}

/// go/pax-global-records.tar without its global headers applied.
fn pax_global_records(dir: &Path) {
    for (name, mtime) in [
        ("file1", 0),
        ("file2", 0),
        ("file3", 0),
        ("file4", 1400000000),
    ] {
        let p = dir.join(name);
        fs::write(&p, b"").unwrap();
        set_meta(&p, 0, 0, 0, mtime);
    }
}

/// go/sparse-formats.tar (README: 200 B, crc32 5375e1d2; "end\n").
fn sparse_formats(dir: &Path) {
    let data = sparse_formats_content();
    assert_eq!(
        crc32(&data),
        0x5375e1d2,
        "the README's crc32 of the content"
    );
    for (name, mtime) in [
        ("sparse-gnu", 1392395740),
        ("sparse-posix-0.0", 1392342187),
        ("sparse-posix-0.1", 1392340456),
        ("sparse-posix-1.0", 1392337404),
    ] {
        let p = dir.join(name);
        fs::write(&p, &data).unwrap();
        set_meta(&p, 0o644, 1000, 1000, mtime);
    }
    let p = dir.join("end");
    fs::write(&p, b"end\n").unwrap();
    assert_eq!(crc32(b"end\n"), 0x8eb179ba);
    set_meta(&p, 0o644, 1000, 1000, 1392398319);
}

/// Go's sparse-formats content: "G" and "o" in turn at the odd offsets
/// 1..=187, "!" at 189, zeros elsewhere (its crc32 is the README's).
fn sparse_formats_content() -> Vec<u8> {
    let mut d = vec![0u8; 200];
    for i in (1..189).step_by(2) {
        d[i] = if (i / 2) % 2 == 0 { b'G' } else { b'o' };
    }
    d[189] = b'!';
    d
}

fn rht_selinux(dir: &Path) {
    // The rest of the entry as GNU tar extracts it.
    gnu_extract(
        &corpus().join("libarchive/test_read_pax_xattr_rht_security_selinux.tar"),
        dir,
    )
    .unwrap();
    set_xattr(
        &dir.join("test.txt"),
        "security.selinux",
        b"system_u:object_r:admin_home_t:s0",
    );
}

fn crc32(d: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in d {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_meta(p: &Path, perm: u32, uid: u32, gid: u32, mtime: i64) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(perm)).unwrap();
    set_mtime(p, mtime);
}

fn set_mtime(p: &Path, mtime: i64) {
    let t = [
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and times.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(p).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

fn set_xattr(p: &Path, name: &str, v: &[u8]) {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid path, name and value.
    let rc =
        unsafe { libc::lsetxattr(cpath(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(rc, 0, "setxattr {} {name}", p.display());
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/tar")
}

/// Every archive of the corpus, relative to it, sorted.
fn archives(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                if n.ends_with(".tar") || n.ends_with(".tar.zst") || n.ends_with(".tar.bz2") {
                    out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    out
}

/// GNU tar, as root: owners, modes, xattrs; umask 022 for the directories
/// it makes itself. The destination is made 0755 root:root, mtime 0 — how
/// nodeimg's root looks when the archive does not set it.
fn gnu_extract(archive: &Path, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).unwrap();
    set_meta(dir, 0o755, 0, 0, 0);
    let mut c = Command::new("sh");
    c.args(["-c", "umask 022 && exec tar \"$@\"", "sh"]).args([
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
    ]);
    if archive.to_string_lossy().ends_with(".zst") {
        // GNU tar does not recognise a zstd stream that starts with a
        // skippable frame (pzstd's): say it.
        c.arg("--zstd");
    }
    c.arg("-xpf").arg(archive).arg("-C").arg(dir);
    let out = run_with_timeout(c, LIMIT_TIME);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// Directories GNU tar made or touched itself carry the extraction time;
/// nodeimg gives a directory the archive does not list mtime 0.
fn zero_fresh_dir_mtimes(dir: &Path, since: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (rel, i) in walk(dir) {
        if i.ftype() == libc::S_IFDIR && i.mtime >= since && i.mtime <= now + 5 {
            set_mtime(&dir.join(rel), 0);
        }
    }
}

/// Data extents (SEEK_DATA/SEEK_HOLE) of a file.
fn extents(p: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(p).unwrap();
    let size = f.metadata().unwrap().len() as i64;
    let mut out = Vec::new();
    let mut off = 0i64;
    while off < size {
        // SAFETY: a valid fd.
        let d = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
        if d < 0 {
            break;
        }
        // SAFETY: a valid fd.
        let h = unsafe { libc::lseek(f.as_raw_fd(), d, libc::SEEK_HOLE) };
        out.push((d as u64, h as u64));
        off = h;
    }
    out
}

/// Same content, reading only where either file has data.
fn sparse_same(a: &Path, b: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    if la != lb {
        return Err(format!("size {la} vs {lb}"));
    }
    let mut ranges = extents(a);
    ranges.extend(extents(b));
    ranges.sort();
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (s, e) in ranges {
        let mut off = s;
        while off < e {
            let n = ((e - off) as usize).min(ba.len());
            fa.read_exact_at(&mut ba[..n], off).unwrap();
            fb.read_exact_at(&mut bb[..n], off).unwrap();
            if ba[..n] != bb[..n] {
                return Err(format!("content differs near byte {off}"));
            }
            off += n as u64;
        }
    }
    Ok(())
}

/// Copies one archive of the corpus into `dir` (a .bz2 decompressed: bzip2
/// is not a nodeimg input, README).
fn copy_in(name: &str, dir: &Path) -> PathBuf {
    let src = corpus().join(name);
    let base = name.replace('/', "__");
    if let Some(stem) = base.strip_suffix(".bz2") {
        let dst = dir.join(stem);
        let out = Command::new("bzip2")
            .arg("-dc")
            .arg(&src)
            .output()
            .expect("running bzip2 -dc (Debian's bzip2)");
        assert!(out.status.success(), "bzip2 -dc {}", src.display());
        fs::write(&dst, out.stdout).unwrap();
        dst
    } else {
        let dst = dir.join(base);
        fs::copy(&src, &dst).unwrap();
        dst
    }
}

/// One archive: a line of the report, or what went wrong.
fn check(name: &str, t: &Path, started: i64) -> Result<String, String> {
    let input = t.join("in");
    fs::create_dir_all(&input).unwrap();
    let archive = copy_in(name, &input);
    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    let img = out.join("img.squashfs");
    let r = build_measured(&archive, &img, LIMIT_TIME);
    let stats = format!("{:.2} s, max RSS {} MiB", r.secs, r.max_rss_kib / 1024);
    if let Some(sig) = r.signal {
        return Err(format!("killed by signal {sig} ({stats}):\n{}", r.stderr));
    }
    if r.secs >= LIMIT_TIME.as_secs_f64() {
        return Err(format!("did not finish in {LIMIT_TIME:?}:\n{}", r.stderr));
    }
    if r.max_rss_kib >= LIMIT_RSS_KIB {
        return Err(format!("max RSS {} MiB", r.max_rss_kib / 1024));
    }
    let last = r.stderr.lines().last().unwrap_or("").to_string();
    let want = want(name);
    if let Want::Refused(needles) = want {
        if r.ok {
            return Err(format!("built, but should be refused ({needles:?})"));
        }
        for n in needles {
            if !r.stderr.contains(n) {
                return Err(format!("refused without {n:?} in:\n{}", r.stderr));
            }
        }
        let left = dir_names(&out);
        if !left.is_empty() {
            return Err(format!("refused but left {left:?}"));
        }
        return Ok(format!("refused ({stats}): {last}"));
    }
    if !r.ok {
        return Err(format!("refused ({stats}):\n{}", r.stderr));
    }
    let expected = t.join("want");
    let how = match want {
        Want::Gnu | Want::GnuThen(_) => {
            gnu_extract(&archive, &expected).map_err(|e| format!("GNU tar failed: {e}"))?;
            zero_fresh_dir_mtimes(&expected, started);
            if let Want::GnuThen(fixes) = want {
                for f in fixes {
                    match f {
                        Fix::Mtime(p, t) => set_mtime(&expected.join(p), *t),
                    }
                }
                "as GNU tar, with documented differences"
            } else {
                "as GNU tar"
            }
        }
        Want::SameAs(other) => {
            let o = copy_in(other, &input);
            gnu_extract(&o, &expected).map_err(|e| format!("GNU tar failed: {e}"))?;
            zero_fresh_dir_mtimes(&expected, started);
            "as GNU tar's extraction of the other spelling"
        }
        Want::Tree(f) => {
            fs::create_dir_all(&expected).unwrap();
            set_meta(&expected, 0o755, 0, 0, 0);
            f(&expected);
            set_mtime(&expected, 0);
            "as the tree written out in the test"
        }
        Want::Refused(_) => unreachable!(),
    };
    let m = Mount::new(&img, &t.join("mnt"));
    let mut bad = compare_trees(
        &expected,
        &m.dir,
        Expect {
            content_limit: Some(BIG),
            ..Default::default()
        },
    );
    // Big (sparse) files: unsquashfs writes holes for sparse blocks.
    for (rel, i) in walk(&expected) {
        if i.ftype() != libc::S_IFREG || i.size <= BIG {
            continue;
        }
        let x = t.join("unsquashfs");
        let o = Command::new("unsquashfs")
            .args(["-no-progress", "-quiet", "-no-xattrs", "-d"])
            .arg(&x)
            .arg(&img)
            .arg(OsStr::from_bytes(rel.as_os_str().as_bytes()))
            .output()
            .unwrap();
        if !o.status.success() {
            bad.push(format!(
                "{}: unsquashfs failed: {}",
                rel.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
            continue;
        }
        if let Err(e) = sparse_same(&expected.join(&rel), &x.join(&rel)) {
            bad.push(format!("{}: {e}", rel.display()));
        }
        let _ = fs::remove_dir_all(&x);
    }
    drop(m);
    if !bad.is_empty() {
        return Err(format!(
            "differs from the expected tree (expected vs image):\n{}",
            bad.join("\n")
        ));
    }
    Ok(format!("built {how} ({stats})"))
}

#[test]
fn third_party_archives() {
    let root = corpus();
    if !root.join("README.md").exists() {
        println!(
            "SKIP: third_party_archives: {} is absent (the shared tar corpus)",
            root.display()
        );
        eprintln!("SKIP: third_party_archives: {} is absent", root.display());
        return;
    }
    if skip_under_mksquashfs("third_party_archives") || skip_without_mount("third_party_archives") {
        return;
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = Instant::now();
    let names = archives(&root);
    assert!(
        names.len() >= 120,
        "only {} archives found under {}",
        names.len(),
        root.display()
    );
    let mut failures = Vec::new();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for name in &names {
        let t = tempdir();
        match check(name, t.path(), started) {
            Ok(line) => {
                eprintln!("ok   {name}: {line}");
                let kind = line.split(" (").next().unwrap_or("").to_string();
                *counts.entry(kind).or_default() += 1;
            }
            Err(e) => {
                eprintln!("FAIL {name}: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    eprintln!(
        "{} archives in {:.1} s:",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    for (k, n) in &counts {
        eprintln!("  {n:3} {k}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} archives failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}

/// The table names only archives that exist (a renamed file must not turn
/// an expectation into a silent "as GNU tar").
#[test]
fn expectations_name_existing_archives() {
    let root = corpus();
    if !root.join("README.md").exists() {
        println!("SKIP: expectations_name_existing_archives: no corpus");
        return;
    }
    let names = archives(&root);
    let src = include_str!("tar_corpus.rs");
    for line in src.lines() {
        let l = line.trim_start().trim_start_matches("| ");
        if let Some(rest) = l.strip_prefix('"') {
            let n = rest.split('"').next().unwrap();
            if n.contains(".tar") && !n.contains(' ') {
                assert!(names.iter().any(|x| x == n), "{n} is not in the corpus");
            }
        }
    }
}
