//! Shared helpers of the `nodeimg build` integration tests: generating source
//! trees that hold every entry kind, running the builder, mounting images,
//! walking and comparing trees.
//!
//! `NODEIMG_TEST_MKSQUASHFS=1` builds the images with
//! `mksquashfs SRC OUT -comp zstd -noappend -no-progress` instead of nodeimg
//! (a tar source is first extracted with GNU tar): it checks the comparison
//! code itself against a known-good writer. Checks of nodeimg-only outputs
//! (the `.sha256` sidecar, the `.json` manifest, error messages) are skipped
//! in that mode.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const BLOCK: usize = 131_072;

// ---------------------------------------------------------------- environment

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why a test that mounts images cannot run here, if it cannot.
pub fn mount_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not root (mounting a squashfs needs root)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("/dev/loop-control is absent (no loop devices)".into());
    }
    None
}

/// Prints a `SKIP:` line and returns true when the test cannot mount images.
pub fn skip_without_mount(test: &str) -> bool {
    match mount_unavailable() {
        Some(why) => {
            println!("SKIP: {test}: {why}");
            eprintln!("SKIP: {test}: {why}");
            true
        }
        None => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Nodeimg,
    Mksquashfs,
}

pub fn tool() -> Tool {
    match std::env::var("NODEIMG_TEST_MKSQUASHFS").as_deref() {
        Ok("1") => Tool::Mksquashfs,
        _ => Tool::Nodeimg,
    }
}

/// Prints a `SKIP:` line and returns true under NODEIMG_TEST_MKSQUASHFS=1
/// (for tests of nodeimg's own behaviour: messages, manifest, sidecar).
pub fn skip_under_mksquashfs(test: &str) -> bool {
    if tool() == Tool::Mksquashfs {
        println!("SKIP: {test}: tests nodeimg itself (NODEIMG_TEST_MKSQUASHFS=1)");
        true
    } else {
        false
    }
}

/// A temporary directory under the system temp dir.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nodeimg-t")
        .tempdir()
        .expect("creating a temporary directory")
}

// ---------------------------------------------------------------- building

/// Options of one build, in nodeimg's terms.
#[derive(Debug, Clone, Default)]
pub struct BuildOpts {
    pub level: Option<u32>,
    pub block_size: Option<u32>,
    pub exclude: Vec<String>,
    pub threads: Option<u32>,
    pub source_date_epoch: Option<u64>,
    /// Kill the builder and fail after this long (default [`BUILD_TIMEOUT`]).
    pub timeout: Option<std::time::Duration>,
}

/// Runs `nodeimg build SOURCE -o OUTPUT …` (or the mksquashfs stand-in) and
/// returns its output; SOURCE_DATE_EPOCH is only set when asked for.
pub fn build(source: &Path, output: &Path, o: &BuildOpts) -> Output {
    match tool() {
        Tool::Nodeimg => build_nodeimg(source, output, o),
        Tool::Mksquashfs => build_mksquashfs(source, output, o),
    }
}

/// Like [`build`], and panics with the builder's stderr unless it succeeded.
pub fn build_ok(source: &Path, output: &Path, o: &BuildOpts) -> Output {
    let start = std::time::Instant::now();
    let out = build(source, output, o);
    assert!(
        out.status.success(),
        "building {} from {} failed ({}):\n{}",
        output.display(),
        source.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "built {} with {:?} in {:.1} s",
        output.display(),
        tool(),
        start.elapsed().as_secs_f64()
    );
    out
}

fn build_nodeimg(source: &Path, output: &Path, o: &BuildOpts) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    c.arg("build").arg(source).arg("-o").arg(output);
    if let Some(l) = o.level {
        c.arg("--level").arg(l.to_string());
    }
    if let Some(b) = o.block_size {
        c.arg("--block-size").arg(b.to_string());
    }
    for e in &o.exclude {
        c.arg("--exclude").arg(e);
    }
    if let Some(t) = o.threads {
        c.arg("--threads").arg(t.to_string());
    }
    run_with_sde(c, o)
}

fn build_mksquashfs(source: &Path, output: &Path, o: &BuildOpts) -> Output {
    // mksquashfs 4.5 reads no tar: extract it first, as root with xattrs.
    let _extracted;
    let dir = if source.is_dir() || !source.exists() {
        source.to_path_buf()
    } else {
        let t = tempdir();
        let st = Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(source)
            .arg("-C")
            .arg(t.path())
            .status()
            .expect("running tar");
        assert!(st.success(), "tar -x {} failed", source.display());
        let p = t.path().to_path_buf();
        _extracted = t;
        p
    };
    let mut c = Command::new("mksquashfs");
    c.arg(&dir)
        .arg(output)
        .args(["-comp", "zstd", "-noappend", "-no-progress", "-quiet"]);
    if let Some(l) = o.level {
        c.arg("-Xcompression-level").arg(l.to_string());
    }
    if let Some(b) = o.block_size {
        c.arg("-b").arg(b.to_string());
    }
    if !o.exclude.is_empty() {
        c.arg("-wildcards");
        for e in &o.exclude {
            c.arg("-e").arg(e);
        }
    }
    if let Some(t) = o.threads {
        c.arg("-processors").arg(t.to_string());
    }
    run_with_sde(c, o)
}

/// How long one build may take before it counts as hung.
pub const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn run_with_sde(mut c: Command, o: &BuildOpts) -> Output {
    match o.source_date_epoch {
        Some(t) => c.env("SOURCE_DATE_EPOCH", t.to_string()),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    run_with_timeout(c, o.timeout.unwrap_or(BUILD_TIMEOUT))
}

/// Runs a command to its end, or kills it after `limit` and panics with
/// what it wrote to stderr (a hung builder must fail the test, not hang it).
pub fn run_with_timeout(mut c: Command, limit: std::time::Duration) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", c.get_program()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the builder") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "{:?} did not finish in {} s (killed); its stderr:\n{}",
                c,
                limit.as_secs(),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// How a measured `nodeimg build` ended.
pub struct Run {
    pub ok: bool,
    pub signal: Option<i32>,
    pub stderr: String,
    pub max_rss_kib: i64,
    pub secs: f64,
}

/// Runs `nodeimg build SRC -o IMG --threads 2`, killed after `limit`, and
/// measures its max RSS (wait4).
// The child is reaped by wait4 (which std's Child cannot report rusage for).
#[allow(clippy::zombie_processes)]
pub fn build_measured(src: &Path, img: &Path, limit: std::time::Duration) -> Run {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .arg("build")
        .arg(src)
        .arg("-o")
        .arg(img)
        .args(["--threads", "2"])
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nodeimg");
    let mut err = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child; valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            let _ = child.kill();
            // SAFETY: as above, blocking.
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = std::process::ExitStatus::from_raw(status);
    Run {
        ok: st.success(),
        signal: st.signal(),
        stderr: String::from_utf8_lossy(&drain.join().unwrap()).into_owned(),
        max_rss_kib: ru.ru_maxrss,
        secs: start.elapsed().as_secs_f64(),
    }
}

/// Names of what is in `dir` (to check that a failed build left nothing).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- the superblock

/// The fields of a squashfs 4.0 superblock the tests look at.
#[derive(Debug)]
pub struct Superblock {
    pub inodes: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub compression: u16,
    pub block_log: u16,
    pub version: (u16, u16),
    pub bytes_used: u64,
}

pub fn superblock(image: &Path) -> Superblock {
    let mut b = [0u8; 96];
    File::open(image)
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .unwrap_or_else(|e| panic!("reading the superblock of {}: {e}", image.display()));
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(&b[0..4], b"hsqs", "{}: no squashfs magic", image.display());
    Superblock {
        inodes: u32_at(4),
        mkfs_time: u32_at(8),
        block_size: u32_at(12),
        compression: u16_at(20),
        block_log: u16_at(22),
        version: (u16_at(28), u16_at(30)),
        bytes_used: u64_at(40),
    }
}

/// squashfs compression id of zstd.
pub const ZSTD: u16 = 6;

// ---------------------------------------------------------------- mounting

/// A read-only squashfs loop mount, unmounted when dropped (also on panic).
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(image: &Path, dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(image)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t squashfs -o loop,ro {} {} failed: {}",
            image.display(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..10 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("nodeimg-test")
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mounting a tmpfs on {} failed", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

// ---------------------------------------------------------------- tree specs

/// File content.
#[derive(Debug, Clone)]
pub enum Data {
    Bytes(Vec<u8>),
    /// A file of `len` bytes that is a hole except for these extents.
    Sparse {
        len: u64,
        extents: Vec<(u64, Vec<u8>)>,
    },
}

#[derive(Debug, Clone)]
pub enum Kind {
    Dir,
    File(Data),
    Symlink(OsString),
    /// Another name of the inode of that (earlier) path.
    Hardlink(PathBuf),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
    Socket,
}

/// One entry of a generated tree. The root is the entry whose path is empty.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Builds a list of entries with distinct mtimes.
pub struct Spec {
    pub entries: Vec<Entry>,
    next_mtime: i64,
}

impl Default for Spec {
    fn default() -> Self {
        Self::new()
    }
}

impl Spec {
    pub fn new() -> Spec {
        let mut s = Spec {
            entries: Vec::new(),
            next_mtime: 1_000_000_000,
        };
        s.add("", Kind::Dir, 0o755);
        s
    }

    fn mtime(&mut self) -> i64 {
        self.next_mtime += 3_607;
        self.next_mtime
    }

    /// Adds an entry owned by 0:0 with the next mtime; returns it for tweaks.
    pub fn add(&mut self, path: impl AsRef<OsStr>, kind: Kind, perm: u32) -> &mut Entry {
        let mtime = self.mtime();
        self.entries.push(Entry {
            path: PathBuf::from(path.as_ref()),
            kind,
            perm,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        });
        self.entries.last_mut().unwrap()
    }

    pub fn dir(&mut self, path: impl AsRef<OsStr>) -> &mut Entry {
        self.add(path, Kind::Dir, 0o755)
    }

    pub fn file(&mut self, path: impl AsRef<OsStr>, data: impl Into<Vec<u8>>) -> &mut Entry {
        self.add(path, Kind::File(Data::Bytes(data.into())), 0o644)
    }

    pub fn symlink(&mut self, path: impl AsRef<OsStr>, target: impl AsRef<OsStr>) -> &mut Entry {
        let t = target.as_ref().to_os_string();
        self.add(path, Kind::Symlink(t), 0o777)
    }

    pub fn hardlink(&mut self, path: impl AsRef<OsStr>, target: impl AsRef<OsStr>) {
        let t = PathBuf::from(target.as_ref());
        self.add(path, Kind::Hardlink(t), 0);
    }

    pub fn root(&mut self) -> &mut Entry {
        &mut self.entries[0]
    }
}

impl Entry {
    pub fn owner(&mut self, uid: u32, gid: u32) -> &mut Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn perm(&mut self, perm: u32) -> &mut Entry {
        self.perm = perm;
        self
    }
    pub fn mtime(&mut self, t: i64) -> &mut Entry {
        self.mtime = t;
        self
    }
    pub fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Entry {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }
}

/// A `security.capability` value (VFS_CAP_REVISION_2, effective) with
/// these permitted capabilities, as `setcap …+ep` writes it.
pub fn cap_blob(permitted: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // magic_etc
    v.extend_from_slice(&permitted.to_le_bytes()); // permitted[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted[1]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[1]
    v
}

/// `setcap cap_net_raw+ep` (CAP_NET_RAW is 13).
pub fn cap_net_raw_ep() -> Vec<u8> {
    cap_blob(1 << 13)
}

/// `setcap cap_dac_override,cap_fowner+ep` (bits 1 and 3): the first
/// byte of the permitted set is 0x0a, a newline.
pub fn cap_dac_override_fowner_ep() -> Vec<u8> {
    cap_blob((1 << 1) | (1 << 3))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("reading /dev/urandom");
    v
}

/// About `n` bytes of compressible text.
pub fn text_bytes(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 100);
    let mut i = 0u64;
    while v.len() < n {
        let line = format!(
            "{i:08} node{:04} slurmd[{}]: job {} step {} finished, exit code {}\n",
            i % 4096,
            1000 + i % 97,
            i * 7 % 10007,
            i % 5,
            i % 3
        );
        v.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// The root-relative path of exactly `len` bytes: `long/` then components of
/// 199 bytes, the last one a file name.
pub fn long_path(len: usize) -> (Vec<PathBuf>, PathBuf) {
    let mut dirs = vec![PathBuf::from("long")];
    let mut p = String::from("long");
    let mut i = 0;
    loop {
        let remaining = len - p.len() - 1; // after the next '/'
        if remaining <= 255 {
            let name = format!("{:0>width$}", "file", width = remaining);
            p.push('/');
            p.push_str(&name);
            break;
        }
        let comp = format!("{i:03}{}", "d".repeat(196));
        p.push('/');
        p.push_str(&comp);
        dirs.push(PathBuf::from(&p));
        i += 1;
    }
    assert_eq!(p.len(), len);
    (dirs, PathBuf::from(p))
}

/// What the full tree holds.
#[derive(Debug, Clone, Copy)]
pub struct TreeOpts {
    /// A unix socket (tar archives cannot hold one).
    pub socket: bool,
    /// The 1 GiB sparse file and several MB of data.
    pub big: bool,
    /// Entries only root can make: device nodes, foreign owners,
    /// `security.`/`trusted.` xattrs.
    pub privileged: bool,
}

/// A tree that holds every entry kind nodeimg must preserve.
pub fn full_tree(o: TreeOpts) -> Spec {
    let mut s = Spec::new();
    s.root().perm(0o755);

    // Regular files of boundary sizes, random (incompressible) content.
    s.dir("data");
    let sizes: &[(&str, usize)] = &[
        ("empty", 0),
        ("one", 1),
        ("page-1", 4095),
        ("page", 4096),
        ("block-1", BLOCK - 1),
        ("block", BLOCK),
        ("block+1", BLOCK + 1),
        ("two-blocks+7", 2 * BLOCK + 7),
    ];
    for (name, n) in sizes {
        s.file(format!("data/{name}"), random_bytes(*n));
    }
    // Two files of equal content (a writer may share their blocks).
    let same = random_bytes(BLOCK + 100);
    s.file("data/dup-a", same.clone());
    s.file("data/dup-b", same);
    // A zero block between data blocks, written out (not a hole).
    let mut z = random_bytes(3 * BLOCK);
    z[BLOCK..2 * BLOCK].fill(0);
    s.file("data/zero-block-inside", z);
    s.file("data/all-zeros", vec![0u8; 2 * BLOCK + 5]);
    if o.big {
        s.file("data/random-3m", random_bytes(3 * MIB as usize));
        s.file("data/text-4m.log", text_bytes(4 * MIB as usize + 17));
        // 1 GiB, a hole except for data in the middle and at the end.
        s.add(
            "data/sparse-1g",
            Kind::File(Data::Sparse {
                len: GIB,
                extents: vec![
                    (GIB / 2 + 12_345, random_bytes(10_000)),
                    (GIB - 100, random_bytes(100)),
                ],
            }),
            0o644,
        );
    } else {
        s.file("data/random-300k", random_bytes(300_000));
        s.file("data/text-500k.log", text_bytes(500_000));
        s.add(
            "data/sparse-8m",
            Kind::File(Data::Sparse {
                len: 8 * MIB,
                extents: vec![
                    (3 * MIB + 1, random_bytes(5000)),
                    (8 * MIB - 10, vec![7; 10]),
                ],
            }),
            0o644,
        );
    }

    // Hard links: a pair and a triple (one name in another directory).
    s.dir("links");
    s.file("links/pair-a", b"pair\n".to_vec())
        .owner(1234, 5678)
        .perm(0o640);
    s.hardlink("links/pair-b", "links/pair-a");
    s.file("links/triple-1", random_bytes(BLOCK + 3))
        .perm(0o755);
    s.hardlink("links/triple-2", "links/triple-1");
    s.hardlink("data/triple-3", "links/triple-1");

    // Symlinks: relative, absolute, dangling, to a directory, a long target.
    s.dir("sym");
    s.symlink("sym/relative", "../data/one");
    s.symlink("sym/absolute", "/etc/passwd");
    s.symlink("sym/dangling", "does/not/exist");
    s.symlink("sym/to-dir", "../links");
    s.symlink("sym/long-target", "t/".repeat(1500));
    s.symlink("sym/dotdot-escape", "../../../../../../etc/shadow");

    // Special files.
    s.dir("dev");
    s.add("dev/fifo", Kind::Fifo, 0o620);
    if o.privileged {
        s.add("dev/null", Kind::Char(1, 3), 0o666);
        s.add("dev/sda1", Kind::Block(8, 1), 0o660).owner(0, 6);
        s.add("dev/big-numbers", Kind::Char(259, 300_000), 0o600);
    }
    if o.socket {
        s.add("dev/socket", Kind::Socket, 0o755);
    }

    // Modes and owners.
    s.dir("modes");
    s.file("modes/setuid", b"#!/bin/sh\n".to_vec()).perm(0o4755);
    s.file("modes/setgid", b"#!/bin/sh\n".to_vec()).perm(0o2711);
    s.file("modes/none", b"secret\n".to_vec()).perm(0o000);
    s.file("modes/readonly", b"ro\n".to_vec()).perm(0o444);
    s.add("modes/sticky-dir", Kind::Dir, 0o1777);
    s.add("modes/closed-dir", Kind::Dir, 0o000);
    s.file("modes/closed-dir/inside", b"x".to_vec());
    s.add("modes/setgid-dir", Kind::Dir, 0o2775);
    if o.privileged {
        s.file("modes/owned-1234", b"a".to_vec()).owner(1234, 5678);
        s.file("modes/owned-nobody", b"b".to_vec())
            .owner(65534, 65534);
        s.file("modes/owned-big", b"c".to_vec())
            .owner(2_000_000, 2_000_001);
        s.add("modes/owned-dir", Kind::Dir, 0o750).owner(1234, 5678);
        s.symlink("modes/owned-symlink", "owned-1234")
            .owner(65534, 1234);
    }

    // Extended attributes.
    s.dir("xattr").xattr("user.dir-note", b"on a directory");
    if o.privileged {
        s.file("xattr/ping", b"\x7fELF not really".to_vec())
            .perm(0o755)
            .xattr("security.capability", &cap_net_raw_ep())
            .xattr("user.origin", b"iputils");
        s.file("xattr/admin-tool", b"\x7fELF admin".to_vec())
            .perm(0o750)
            .xattr("security.capability", &cap_dac_override_fowner_ep());
        s.file("xattr/trusted", b"t".to_vec())
            .xattr("trusted.overlay.opaque", b"y");
        // Same capability on a second file (a writer may share the xattr set).
        s.file("xattr/ping6", b"\x7fELF also not".to_vec())
            .perm(0o755)
            .xattr("security.capability", &cap_net_raw_ep())
            .xattr("user.origin", b"iputils");
    }
    {
        let e = s.file("xattr/many", b"many".to_vec());
        for i in 0..12 {
            e.xattr(&format!("user.k{i:02}"), format!("value {i}").as_bytes());
        }
        e.xattr("user.empty", b"");
        e.xattr("user.binary", &[0, 1, 2, 255, 254, 0]);
    }
    s.file("xattr/big-value", b"b".to_vec())
        .xattr("user.big", &random_bytes(3000));

    // Names: non-UTF-8, spaces, newline, names whose byte order matters.
    s.dir("names");
    s.file(OsStr::from_bytes(b"names/caf\xe9"), b"latin-1\n".to_vec());
    s.file("names/with space", b"s".to_vec());
    s.file("names/new\nline", b"n".to_vec());
    s.file("names/ünïcödé", b"u".to_vec());
    for n in ["B", "a", "a-", "a.", "a0", "aa", "a~", "Z"] {
        s.file(format!("names/{n}"), n.as_bytes().to_vec());
    }
    s.file(format!("names/{}", "n".repeat(255)), b"255".to_vec());

    // A path of 4,000 bytes.
    let (dirs, file) = long_path(4000);
    for d in dirs {
        s.dir(d);
    }
    s.file(file, b"deep\n".to_vec());

    // An empty directory and one with 3,000 entries.
    s.dir("empty-dir");
    s.dir("many");
    for i in 0..3000 {
        let name = format!("many/entry-{i:05}-{}", "m".repeat(i % 40));
        if i % 500 == 7 {
            s.symlink(name, format!("entry-{:05}-", i + 1));
        } else if i % 3 == 0 {
            s.file(name, Vec::new());
        } else {
            s.file(name, format!("{i}\n").into_bytes());
        }
    }
    s
}

/// A small tree shaped like a node root: kernels, boot, etc.
pub fn node_root_tree(privileged: bool) -> Spec {
    let mut s = Spec::new();
    for d in [
        "boot",
        "boot/grub",
        "etc",
        "lib",
        "lib/modules",
        "lib/modules/6.1.0-99-amd64",
        "lib/modules/6.1.0-99-amd64/kernel",
        "lib/modules/6.1.0-99-amd64/kernel/sound",
        "lib/modules/6.1.0-99-amd64/kernel/sound/core",
        "lib/modules/6.1.0-99-amd64/kernel/net",
        "usr",
        "usr/bin",
        "var",
        "var/empty",
    ] {
        s.dir(d);
    }
    s.file("boot/vmlinuz-6.1.0-99-amd64", random_bytes(200_000));
    s.file("boot/grub/grub.cfg", b"set timeout=0\n".to_vec());
    s.file("etc/hostname", b"cn1\n".to_vec());
    s.file("etc/os-release", text_bytes(2000));
    s.symlink("etc/mtab", "/proc/self/mounts");
    s.file("lib/modules/6.1.0-99-amd64/modules.dep", text_bytes(30_000));
    s.file(
        "lib/modules/6.1.0-99-amd64/kernel/sound/core/snd.ko",
        random_bytes(70_000),
    );
    s.file(
        "lib/modules/6.1.0-99-amd64/kernel/net/veth.ko",
        random_bytes(40_000),
    );
    s.file("usr/bin/tool", random_bytes(300_000)).perm(0o755);
    s.hardlink("usr/bin/tool-alias", "usr/bin/tool");
    s.symlink("usr/bin/sh", "dash");
    // nodeimg reads nodectl's version after this marker (see the agent's main.rs).
    let mut nodectl = random_bytes(50_000);
    nodectl.extend_from_slice(b"\0NODEBOOT_NODECTL_VERSION=9.8.7-test\0");
    nodectl.extend_from_slice(&random_bytes(20_000));
    s.file("usr/bin/nodectl", nodectl).perm(0o755);
    s.add("var/fifo", Kind::Fifo, 0o600);
    s.file("var/log.txt", text_bytes(400_000));
    s.file("usr/bin/xa", b"x".to_vec())
        .xattr("user.b", b"2")
        .xattr("user.a", b"1")
        .xattr("user.c", b"3");
    if privileged {
        s.file("usr/bin/ping", b"\x7fELF".to_vec())
            .perm(0o4755)
            .xattr("security.capability", &cap_net_raw_ep());
        s.add("etc/null", Kind::Char(1, 3), 0o666);
        s.file("etc/munge.key", random_bytes(1024))
            .perm(0o400)
            .owner(105, 107);
    }
    s
}

/// Order in which [`write_tree`] creates entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    AsListed,
    /// Directories shallowest first, everything else in reverse, xattrs in
    /// reverse: different inode numbers and directory layouts on disk.
    Reversed,
    /// Like `Reversed` but xattrs set in the listed order (mksquashfs 4.5
    /// stores them in listxattr order, so it is not reproducible otherwise).
    ReversedKeepXattrs,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with a NUL byte")
}

fn check(rc: libc::c_int, what: &str, p: &Path) {
    if rc != 0 {
        panic!(
            "{what} {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// Creates the entries of `spec` under `root` (which must exist), then sets
/// owners, modes, xattrs and mtimes.
pub fn write_tree(root: &Path, spec: &Spec, order: Order) {
    let entries = &spec.entries;
    let mut dirs: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Dir))
        .collect();
    dirs.sort_by_key(|e| e.path.components().count());
    let mut others: Vec<&Entry> = entries
        .iter()
        .filter(|e| !matches!(e.kind, Kind::Dir | Kind::Hardlink(_)))
        .collect();
    let mut links: Vec<&Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Hardlink(_)))
        .collect();
    let reversed = order != Order::AsListed;
    if reversed {
        // Same depth order but reversed within a depth.
        dirs.reverse();
        dirs.sort_by_key(|e| e.path.components().count());
        others.reverse();
        links.reverse();
    }
    for d in &dirs {
        if !d.path.as_os_str().is_empty() {
            fs::create_dir(root.join(&d.path))
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", d.path.display()));
        }
    }
    for e in &others {
        let p = root.join(&e.path);
        let c = cstr(&p);
        match &e.kind {
            Kind::File(Data::Bytes(b)) => {
                fs::write(&p, b).unwrap_or_else(|err| panic!("writing {}: {err}", p.display()))
            }
            Kind::File(Data::Sparse { len, extents }) => {
                let f = File::create(&p).unwrap();
                f.set_len(*len).unwrap();
                let mut ex = extents.clone();
                if reversed {
                    ex.reverse();
                }
                for (off, b) in &ex {
                    f.write_all_at(b, *off).unwrap();
                }
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &p)
                .unwrap_or_else(|err| panic!("symlink {}: {err}", p.display())),
            Kind::Fifo => {
                // SAFETY: c is a valid NUL-terminated path.
                check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, "mkfifo", &p)
            }
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                let t = if matches!(e.kind, Kind::Char(..)) {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let dev = libc::makedev(*ma, *mi);
                // SAFETY: c is a valid NUL-terminated path.
                check(
                    unsafe { libc::mknod(c.as_ptr(), t | 0o600, dev) },
                    "mknod",
                    &p,
                )
            }
            Kind::Socket => {
                let l = std::os::unix::net::UnixListener::bind(&p)
                    .unwrap_or_else(|err| panic!("binding {}: {err}", p.display()));
                drop(l);
            }
            Kind::Dir | Kind::Hardlink(_) => unreachable!(),
        }
    }
    for e in &links {
        let Kind::Hardlink(t) = &e.kind else {
            unreachable!()
        };
        fs::hard_link(root.join(t), root.join(&e.path))
            .unwrap_or_else(|err| panic!("link {}: {err}", e.path.display()));
    }
    // Metadata, deepest first so nothing changes a directory's mtime after it is set.
    let mut meta: Vec<&Entry> = entries
        .iter()
        .filter(|e| !matches!(e.kind, Kind::Hardlink(_)))
        .collect();
    if reversed {
        meta.reverse();
    }
    meta.sort_by_key(|e| std::cmp::Reverse(e.path.components().count()));
    for e in meta {
        let p = root.join(&e.path);
        let c = cstr(&p);
        if is_root() {
            std::os::unix::fs::lchown(&p, Some(e.uid), Some(e.gid))
                .unwrap_or_else(|err| panic!("lchown {}: {err}", p.display()));
        }
        if !matches!(e.kind, Kind::Symlink(_)) {
            // After chown, which clears setuid/setgid.
            // SAFETY: c is a valid NUL-terminated path.
            check(unsafe { libc::chmod(c.as_ptr(), e.perm) }, "chmod", &p);
        }
        let mut xs: Vec<&(String, Vec<u8>)> = e.xattrs.iter().collect();
        if order == Order::Reversed {
            xs.reverse();
        }
        // After chown, which drops security.capability.
        for (name, value) in xs {
            let n = CString::new(name.as_str()).unwrap();
            // SAFETY: valid path and name, value pointer and length of one slice.
            let rc = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            check(rc, &format!("setxattr {name}"), &p);
        }
        let ts = libc::timespec {
            tv_sec: e.mtime as libc::time_t,
            tv_nsec: 0,
        };
        let times = [ts, ts];
        // SAFETY: valid path, two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        check(rc, "utimensat", &p);
    }
}

/// Makes a tar.zst of `root` with GNU tar, the way an operator would:
/// pax format with xattrs (all namespaces), sparse files (GNU tar writes
/// them as PAX sparse 1.0: `--xattrs` forces the pax format even with
/// `--format=gnu`), numeric owners.
///
/// `NODEIMG_TEST_TAR_NO_SPARSE=1` leaves out `--sparse` (holes stored as
/// zeros), to debug the rest of the archive path on its own.
pub fn make_tar_zst(root: &Path, out: &Path) {
    let out_tar = out.with_extension(""); // x.tar.zst → x.tar
    let mut c = Command::new("tar");
    c.args(["--xattrs", "--xattrs-include=*"]);
    if std::env::var("NODEIMG_TEST_TAR_NO_SPARSE").as_deref() != Ok("1") {
        c.arg("--sparse");
    }
    let st = c
        .args(["--numeric-owner", "--format=posix", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&out_tar)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(st.success(), "tar -c {} failed", root.display());
    let st = Command::new("zstd")
        .args(["-q", "-f", "--rm", "-T0", "-3"])
        .arg(&out_tar)
        .arg("-o")
        .arg(out)
        .status()
        .expect("running zstd");
    assert!(st.success(), "zstd {} failed", out_tar.display());
}

// ---------------------------------------------------------------- walking

#[derive(Debug, Clone)]
pub struct Info {
    /// st_mode: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub rdev: u64,
    pub nlink: u64,
    pub ino: u64,
    pub dev: u64,
    pub target: Option<OsString>,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
}

impl Info {
    pub fn ftype(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
}

pub fn type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "char device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "?",
    }
}

pub fn xattrs(p: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let c = cstr(p);
    let mut names = vec![0u8; 65536];
    // SAFETY: valid path, buffer pointer and length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // A squashfs without an xattr table.
            return BTreeMap::new();
        }
        panic!("listxattr {}: {e}", p.display());
    }
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: valid path and name, buffer pointer and length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m < 0 {
            panic!(
                "getxattr {} {}: {}",
                p.display(),
                String::from_utf8_lossy(name),
                std::io::Error::last_os_error()
            );
        }
        v.truncate(m as usize);
        out.insert(OsString::from_vec(name.to_vec()), v);
    }
    out
}

pub fn info(p: &Path) -> Info {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let target = m
        .file_type()
        .is_symlink()
        .then(|| fs::read_link(p).unwrap().into_os_string());
    Info {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        size: m.size(),
        rdev: m.rdev(),
        nlink: m.nlink(),
        ino: m.ino(),
        dev: m.dev(),
        target,
        xattrs: xattrs(p),
    }
}

/// Every entry under `root` (itself as the empty path), never following symlinks.
pub fn walk(root: &Path) -> BTreeMap<PathBuf, Info> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let i = info(&abs);
        if i.ftype() == libc::S_IFDIR {
            for e in fs::read_dir(&abs).unwrap_or_else(|e| panic!("readdir {}: {e}", abs.display()))
            {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        out.insert(rel, i);
    }
    out
}

/// `None` when both files have the same bytes, else where they differ.
pub fn same_content(a: &Path, b: &Path) -> Option<String> {
    let open = |p: &Path| File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba, a);
        let nb = read_full(&mut fb, &mut bb, b);
        if ba[..na] != bb[..nb] {
            let i = ba[..na]
                .iter()
                .zip(&bb[..nb])
                .position(|(x, y)| x != y)
                .unwrap_or(na.min(nb));
            return Some(format!(
                "content differs at byte {} (read {} vs {} bytes of that chunk)",
                off + i as u64,
                na,
                nb
            ));
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8], p: &Path) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading {}: {e}", p.display()),
        }
    }
    n
}

fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        "/".into()
    } else {
        format!("{:?}", p)
    }
}

/// How the image's tree is expected to differ from the source's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// SOURCE_DATE_EPOCH: mtimes newer than it read back as it.
    pub clamp_mtime: Option<i64>,
    /// Compare the contents of regular files up to this size only (larger,
    /// sparse ones are compared by the caller some cheaper way).
    pub content_limit: Option<u64>,
}

/// Compares the source tree with the mounted image entry by entry; returns
/// every difference found (empty when they match).
pub fn compare_trees(src: &Path, img: &Path, x: Expect) -> Vec<String> {
    let a = walk(src);
    let b = walk(img);
    let mut bad = Vec::new();
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        bad.push(format!("{}: missing from the image", show(p)));
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        bad.push(format!("{}: in the image, not in the source", show(p)));
    }
    // Hard links: the paths sharing each path's inode, on each side.
    let groups = |t: &BTreeMap<PathBuf, Info>| {
        let mut g: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
        for (p, i) in t.iter().filter(|(_, i)| i.ftype() != libc::S_IFDIR) {
            g.entry((i.dev, i.ino)).or_default().push(p.clone());
        }
        g
    };
    let (ga, gb) = (groups(&a), groups(&b));
    for (p, ia) in &a {
        let Some(ib) = b.get(p) else { continue };
        let mut d = Vec::new();
        if ia.ftype() != ib.ftype() {
            d.push(format!(
                "type {} vs {}",
                type_name(ia.mode),
                type_name(ib.mode)
            ));
        }
        if ia.mode != ib.mode {
            d.push(format!("mode {:o} vs {:o}", ia.mode, ib.mode));
        }
        if (ia.uid, ia.gid) != (ib.uid, ib.gid) {
            d.push(format!(
                "owner {}:{} vs {}:{}",
                ia.uid, ia.gid, ib.uid, ib.gid
            ));
        }
        let want_mtime = match x.clamp_mtime {
            Some(c) => ia.mtime.min(c),
            None => ia.mtime,
        };
        if want_mtime != ib.mtime {
            d.push(format!("mtime {} (expected) vs {}", want_mtime, ib.mtime));
        }
        if ia.ftype() != libc::S_IFDIR && ia.size != ib.size {
            d.push(format!("size {} vs {}", ia.size, ib.size));
        }
        if ia.rdev != ib.rdev {
            d.push(format!(
                "rdev {}:{} vs {}:{}",
                libc::major(ia.rdev),
                libc::minor(ia.rdev),
                libc::major(ib.rdev),
                libc::minor(ib.rdev)
            ));
        }
        if ia.nlink != ib.nlink {
            d.push(format!("nlink {} vs {}", ia.nlink, ib.nlink));
        }
        if ia.target != ib.target {
            d.push(format!("symlink target {:?} vs {:?}", ia.target, ib.target));
        }
        if ia.xattrs != ib.xattrs {
            let names = |m: &BTreeMap<OsString, Vec<u8>>| -> Vec<String> {
                m.iter()
                    .map(|(k, v)| format!("{}({} bytes)", k.to_string_lossy(), v.len()))
                    .collect()
            };
            let differing: Vec<String> = ia
                .xattrs
                .iter()
                .filter(|(k, v)| ib.xattrs.get(*k).is_some_and(|w| w != *v))
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect();
            d.push(format!(
                "xattrs {:?} vs {:?}{}",
                names(&ia.xattrs),
                names(&ib.xattrs),
                if differing.is_empty() {
                    String::new()
                } else {
                    format!(" (values differ: {differing:?})")
                }
            ));
        }
        if ia.ftype() != libc::S_IFDIR && ia.ftype() == ib.ftype() {
            let la = &ga[&(ia.dev, ia.ino)];
            let lb = &gb[&(ib.dev, ib.ino)];
            if la != lb {
                d.push(format!("hard links {la:?} vs {lb:?}"));
            }
        }
        if ia.ftype() == libc::S_IFREG
            && ib.ftype() == libc::S_IFREG
            && x.content_limit.is_none_or(|l| ia.size <= l)
        {
            if let Some(why) = same_content(&src.join(p), &img.join(p)) {
                d.push(why);
            }
        }
        if !d.is_empty() {
            bad.push(format!("{}: {}", show(p), d.join("; ")));
        }
    }
    bad
}

/// Panics listing every difference (the first 200) when there are any.
pub fn assert_same_trees(src: &Path, img: &Path, x: Expect) {
    let bad = compare_trees(src, img, x);
    if !bad.is_empty() {
        let n = bad.len();
        let mut shown: Vec<String> = bad.into_iter().take(200).collect();
        if n > 200 {
            shown.push(format!("… and {} more", n - 200));
        }
        panic!(
            "{n} differences between the source {} and the image mounted on {}\n(source value vs image value)\n{}",
            src.display(),
            img.display(),
            shown.join("\n")
        );
    }
}

/// Checks the generated source holds what the spec asked for (so a
/// generator mistake cannot make a comparison vacuous).
pub fn assert_source_has(src: &Path, spec: &Spec) {
    let t = walk(src);
    let mut bad = Vec::new();
    for e in &spec.entries {
        let Some(i) = t.get(&e.path) else {
            bad.push(format!("{}: not created", show(&e.path)));
            continue;
        };
        let want_type = match &e.kind {
            Kind::Dir => libc::S_IFDIR,
            Kind::File(_) | Kind::Hardlink(_) => libc::S_IFREG,
            Kind::Symlink(_) => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Char(..) => libc::S_IFCHR,
            Kind::Block(..) => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        };
        if i.ftype() != want_type {
            bad.push(format!(
                "{}: {} not {}",
                show(&e.path),
                type_name(i.mode),
                type_name(want_type)
            ));
        }
        if matches!(e.kind, Kind::Hardlink(_)) {
            continue;
        }
        if !matches!(e.kind, Kind::Symlink(_)) && i.mode & 0o7777 != e.perm {
            bad.push(format!(
                "{}: perm {:o} not {:o}",
                show(&e.path),
                i.mode & 0o7777,
                e.perm
            ));
        }
        if i.mtime != e.mtime {
            bad.push(format!(
                "{}: mtime {} not {}",
                show(&e.path),
                i.mtime,
                e.mtime
            ));
        }
        for (k, v) in &e.xattrs {
            if i.xattrs.get(OsStr::new(k)) != Some(v) {
                bad.push(format!("{}: xattr {k} not set", show(&e.path)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the generated source is not as specified:\n{}",
        bad.join("\n")
    );
}

/// Number of paths in the tree, the root included.
pub fn count_paths(spec: &Spec) -> usize {
    spec.entries.len()
}

pub fn sha256_hex(p: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut f = File::open(p).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Paths listed by `unsquashfs -l` (no root needed), relative, the root as "".
pub fn list_image(image: &Path) -> Vec<String> {
    let out = Command::new("unsquashfs")
        .args(["-no-progress", "-d", "R", "-l"])
        .arg(image)
        .output()
        .expect("running unsquashfs");
    assert!(
        out.status.success(),
        "unsquashfs -l {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            if l == "R" {
                Some(String::new())
            } else {
                l.strip_prefix("R/").map(str::to_string)
            }
        })
        .collect();
    v.sort();
    v
}

/// Writes to a file, creating its parents.
pub fn write_file(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    let mut f = File::create(p).unwrap();
    f.write_all(data).unwrap();
}
