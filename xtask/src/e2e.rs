//! The QEMU harness: build the node's artifacts, serve them with bootd on
//! 127.0.0.1, boot a VM with the seed's kernel command line, watch its serial
//! console for milestones, and write `target/e2e/report.json`.
use crate::build;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MAC: &str = "52:54:00:12:34:56";
/// The marker of the line `nodectl status` prints on the booted node
/// (`nodeboot_agent::status::PREFIX`; xtask does not link the agent).
pub const STATUS_PREFIX: &str = "nodeboot-status ";
pub const HOSTNAME: &str = "cn1";

/// Where the harness keeps its work: `target/e2e/`.
pub fn e2e_dir() -> PathBuf {
    build::root().join("target/e2e")
}

/// Costly artifacts shared across checkouts (debootstrap tree, .debs, built images).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NODEBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nodeboot"))
}

#[derive(Clone)]
pub struct Artifacts {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub www: PathBuf,
    pub sha256: String,
}

/// What the live image leaves out: the kernel and initramfs (served apart),
/// apt's caches, documentation, and drivers a compute node does not use.
/// `nodeimg build --exclude` globs: relative to the root, `*` stays within
/// one path component, a matched directory goes with its contents. The
/// modules are under `usr/lib` (Debian 12 is merged-/usr: `lib` is a link
/// to it, which the globs do not follow); with `lib/modules/…` nothing was
/// left out, the image carried 137 MB of GPU, sound, media and wireless
/// drivers, and udev loaded bochs-drm and its helpers while the node
/// provisioned.
pub const LIVE_EXCLUDES: &[&str] = &[
    "boot/*",
    "var/cache/apt/*",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/lib/modules/*/kernel/drivers/gpu",
    "usr/lib/modules/*/kernel/sound",
    "usr/lib/modules/*/kernel/drivers/media",
    "usr/lib/modules/*/kernel/drivers/net/wireless",
];

/// Packages the test image adds to nodeimg's default list: what the
/// Grendel path's postscript runs (`e2e slurm-grendel`: git clone over
/// ssh, rsync; openssh-client comes with openssh-server). The native path
/// needs neither (nodectl clones with libgit2).
pub const EXTRA_PACKAGES: &[&str] = &["git", "rsync"];

/// zstd level of the live image.
pub const LIVE_LEVEL: u32 = 15;

/// Bump when the way [`artifacts`] makes the image changes in a way its
/// hashed inputs do not show.
const IMAGE_FORMAT: &str = "nodeboot e2e image v2 (chunk index and store)";

/// Hash the files of `paths` (directories recursively, sorted), each named
/// relative to `base` so the key does not depend on where the checkout is.
fn hash_files(h: &mut Sha256, base: &Path, paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        let name = p.strip_prefix(base).unwrap_or(p);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            h.update(format!("dir {}\n", name.display()));
            hash_files(h, base, &entries)?;
        } else {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            h.update(format!("file {} {}\n", name.display(), data.len()));
            h.update(data);
        }
    }
    Ok(())
}

/// Order kernel versions as `sort -V` does for them: digit runs numerically.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut v = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                v.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        v
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest kernel version under `root/lib/modules`.
pub fn newest_kernel(root: &Path) -> Result<String> {
    let dir = root.join("lib/modules");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort_by(|a, b| version_cmp(a, b));
    v.pop()
        .with_context(|| format!("no kernel under {}", dir.display()))
}

/// Mount points below `dir` (from /proc/self/mountinfo): a tree is never
/// removed while something (a chroot's /dev) is mounted in it.
fn mounted_below(dir: &Path) -> Result<Vec<String>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = dir.to_string_lossy().into_owned();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&dir))
        .map(String::from)
        .collect())
}

fn remove_tree(dir: &Path) -> Result<()> {
    let Ok(md) = std::fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if !md.is_dir() {
        return std::fs::remove_file(dir).with_context(|| format!("removing {}", dir.display()));
    }
    let m = mounted_below(dir)?;
    if !m.is_empty() {
        bail!(
            "not removing {}: mounted below it: {}",
            dir.display(),
            m.join(", ")
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// An exclusive lock on `path` (flock), held until the file is dropped.
pub fn lock(path: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(f)
}

/// Build (or reuse) the kernel, initramfs and live image, all made by
/// nodeimg: `rootfs debian --deb nodeboot-nodectl_….deb` (base tree cached by
/// nodeimg; the package brings nodectl, the dracut module and the units, as
/// on a site), `initramfs` (from the module the package installed), `build`.
/// The result is cached as `CACHE/image-<key>`, the key hashing every input
/// (nodectl, nodeimg, dracut-module/, systemd/, the package's metadata, the
/// base tree's key), and hard-linked into `target/e2e/image`.
pub fn artifacts() -> Result<Artifacts> {
    let src = build::root();
    let nodectl = build::nodectl_static()?;
    let nodeimg = build::nodeimg()?;
    let deb = crate::dist::debs(&[&crate::dist::NODECTL], &crate::dist::default_out())?
        .pop()
        .context("no nodeboot-nodectl package")?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("making {}", cache.display()))?;

    let out = Command::new(&nodeimg)
        .args(["rootfs", "debian", "--print-key", "--extra-packages"])
        .arg(EXTRA_PACKAGES.join(","))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} rootfs debian --print-key", nodeimg.display()))?;
    if !out.status.success() {
        bail!("nodeimg rootfs debian --print-key failed ({})", out.status);
    }
    let rootfs_key = String::from_utf8(out.stdout)?.trim().to_string();
    let mut h = Sha256::new();
    h.update(format!(
        "{IMAGE_FORMAT}\nrootfs {rootfs_key}\nlevel {LIVE_LEVEL}\nexclude {}\n",
        LIVE_EXCLUDES.join(" ")
    ));
    hash_files(
        &mut h,
        &src,
        &[
            src.join("dracut-module"),
            src.join("systemd"),
            src.join("agent/Cargo.toml"),
            src.join("agent/dist"),
        ],
    )?;
    let bins = nodectl.parent().unwrap_or(&src).to_path_buf();
    hash_files(&mut h, &bins, &[nodectl.clone(), nodeimg.clone()])?;
    let key = hex::encode(h.finalize())[..16].to_string();

    let image = {
        let _lock = lock(&cache.join("image.lock"))?;
        let image = cache.join(format!("image-{key}"));
        if image.join("www/live.squashfs.sha256").exists() {
            eprintln!("xtask: image up to date ({})", image.display());
        } else {
            let tmp = cache.join(format!("image-{key}.tmp"));
            remove_tree(&tmp)?;
            let t = Instant::now();
            build_image(&nodeimg, &deb, &cache, &tmp)?;
            std::fs::rename(&tmp, &image)
                .with_context(|| format!("renaming {} to {}", tmp.display(), image.display()))?;
            eprintln!(
                "xtask: image {} built in {:.0}s",
                image.display(),
                t.elapsed().as_secs_f64()
            );
        }
        // Keep only this image.
        for e in std::fs::read_dir(&cache)? {
            let p = e?.path();
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            if n.starts_with("image-") && p != image {
                remove_tree(&p)?;
            }
        }
        image
    };

    // target/e2e/image: links to the cached files (a copy across filesystems).
    let dir = e2e_dir().join("image");
    remove_tree(&dir)?;
    std::fs::create_dir_all(dir.join("www"))?;
    let mut files = vec![PathBuf::from("vmlinuz"), PathBuf::from("initrd.img")];
    // www/: the image, its sidecar, manifest and chunk index, and the chunk
    // store (www/store/<4 hex>/<id>.cacnk).
    let mut dirs = vec![PathBuf::from("www")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(image.join(&d))? {
            let e = e?;
            let rel = d.join(e.file_name());
            if e.file_type()?.is_dir() {
                std::fs::create_dir_all(dir.join(&rel))?;
                dirs.push(rel);
            } else {
                files.push(rel);
            }
        }
    }
    for f in &files {
        let (from, to) = (image.join(f), dir.join(f));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::write(dir.join("inputs.sha256"), &key)?;
    let side = std::fs::read_to_string(dir.join("www/live.squashfs.sha256"))?;
    let sha256 = side
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Artifacts {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        www: dir.join("www"),
        sha256,
    })
}

/// Make `out/{vmlinuz,initrd.img,www/live.squashfs{,.sha256},www/live.json}`
/// with nodeimg and the package `deb` (nodeboot-nodectl); the node root is
/// built in `out/root` and removed at the end.
fn build_image(nodeimg: &Path, deb: &Path, cache: &Path, out: &Path) -> Result<()> {
    let root = out.join("root");
    let www = out.join("www");
    std::fs::create_dir_all(&www).with_context(|| format!("making {}", www.display()))?;
    let t = Instant::now();
    build::run(
        Command::new(nodeimg)
            .args(["rootfs", "debian", "-o"])
            .arg(&root)
            .arg("--cache")
            .arg(cache)
            .arg("--deb")
            .arg(deb)
            .arg("--extra-packages")
            .arg(EXTRA_PACKAGES.join(","))
            .arg("--empty-root-password"),
    )?;
    eprintln!("xtask: node root in {:.0}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let kver = newest_kernel(&root)?;
    build::run(
        Command::new(nodeimg)
            .args(["initramfs", "--root"])
            .arg(&root)
            // nodectl and 90nodeboot: the package's, in the root.
            .args(["--kver", &kver])
            .arg("-o")
            .arg(out.join("initrd.img")),
    )?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{kver}"));
    std::fs::copy(&vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("copying {}", vmlinuz.display()))?;
    eprintln!(
        "xtask: kernel {kver} and initramfs in {:.0}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let image = www.join("live.squashfs");
    let mut cmd = Command::new(nodeimg);
    cmd.arg("build")
        .arg(&root)
        .arg("-o")
        .arg(&image)
        .args(["--level", &LIVE_LEVEL.to_string()]);
    for e in LIVE_EXCLUDES {
        // A glob that matches nothing leaves out nothing, silently.
        if !glob_matches(&root, e) {
            bail!(
                "the live image's exclude {e:?} matches nothing in {}",
                root.display()
            );
        }
        cmd.args(["--exclude", e]);
    }
    build::run(&mut cmd)?;
    eprintln!(
        "xtask: live image in {:.0}s: {} bytes; initramfs {} bytes",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&image)?.len(),
        std::fs::metadata(out.join("initrd.img"))?.len()
    );
    remove_tree(&root)
}

/// Whether `pattern` (nodeimg's `--exclude`: `/`-separated, `*` within one
/// component) names something under `root`, without following links.
fn glob_matches(root: &Path, pattern: &str) -> bool {
    fn one(name: &str, pat: &str) -> bool {
        match pat.split_once('*') {
            None => name == pat,
            Some((pre, rest)) => {
                let Some(tail) = name.strip_prefix(pre) else {
                    return false;
                };
                (0..=tail.len())
                    .filter(|&i| tail.is_char_boundary(i))
                    .any(|i| one(&tail[i..], rest))
            }
        }
    }
    let mut dirs = vec![root.to_path_buf()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for d in &dirs {
            let Ok(md) = std::fs::symlink_metadata(d) else {
                continue;
            };
            if !md.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if one(&e.file_name().to_string_lossy(), comp) {
                    next.push(e.path());
                }
            }
        }
        dirs = next;
    }
    !dirs.is_empty()
}

/// `initrd` with `files` (path inside the initramfs, bytes) added, written
/// to `out`: a second, uncompressed cpio archive (newc) appended at a
/// 4-byte boundary, which the kernel unpacks over the first. The parent
/// directories must exist in `initrd` already.
pub fn initrd_with(initrd: &Path, files: &[(&str, &[u8])], out: &Path) -> Result<PathBuf> {
    let mut img = std::fs::read(initrd).with_context(|| format!("reading {}", initrd.display()))?;
    let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
    pad(&mut img);
    let entry = |v: &mut Vec<u8>, ino: usize, name: &str, mode: u32, data: &[u8]| {
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let fields = [
            ino as u32,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        v.extend_from_slice(b"070701");
        for f in fields {
            v.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        pad(v);
        v.extend_from_slice(data);
        pad(v);
    };
    for (i, (name, data)) in files.iter().enumerate() {
        entry(
            &mut img,
            900_000 + i,
            name.trim_start_matches('/'),
            0o100644,
            data,
        );
    }
    entry(&mut img, 0, "TRAILER!!!", 0, &[]);
    std::fs::write(out, img).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// A fresh random admin token in `path` (mode 0600).
pub fn write_admin_token(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", hex::encode(raw))?;
    Ok(())
}

/// A running bootd serving `www` on 127.0.0.1, with an admin token (the
/// fleet's data, `bootd arm`).
pub struct Bootd {
    child: Child,
    pub port: u16,
    /// The file holding the admin token (`--admin-token`).
    pub admin_token: PathBuf,
}

impl Bootd {
    pub fn start(
        bin: &Path,
        www: &Path,
        port: u16,
        rate_limit: Option<u64>,
        log: &Path,
    ) -> Result<Bootd> {
        Bootd::spawn(bin, www, None, port, rate_limit, log)
    }

    /// Serving `repo` at /repo/ too (Grendel's postscript).
    pub fn start_with_repo(bin: &Path, www: &Path, repo: &Path, log: &Path) -> Result<Bootd> {
        Bootd::spawn(bin, www, Some(repo), 0, None, log)
    }

    /// With more `bootd serve` arguments (`--inventory`, `--secrets`, …).
    pub fn start_with_args(bin: &Path, www: &Path, args: &[String], log: &Path) -> Result<Bootd> {
        Bootd::spawn_args(bin, www, None, 0, None, log, args)
    }

    fn spawn(
        bin: &Path,
        www: &Path,
        repo: Option<&Path>,
        port: u16,
        rate_limit: Option<u64>,
        log: &Path,
    ) -> Result<Bootd> {
        Bootd::spawn_args(bin, www, repo, port, rate_limit, log, &[])
    }

    fn spawn_args(
        bin: &Path,
        www: &Path,
        repo: Option<&Path>,
        port: u16,
        rate_limit: Option<u64>,
        log: &Path,
        extra: &[String],
    ) -> Result<Bootd> {
        let port_file = log.with_extension("port");
        let _ = std::fs::remove_file(&port_file);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--root"])
            .arg(www)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        if let Some(r) = rate_limit {
            cmd.args(["--rate-limit", &r.to_string()]);
        }
        if let Some(r) = repo {
            cmd.arg("--repo").arg(r);
        }
        let admin_token = log.with_extension("admin-token");
        write_admin_token(&admin_token)?;
        cmd.arg("--admin-token").arg(&admin_token);
        cmd.args(extra);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let t = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                if let Ok(p) = s.trim().parse() {
                    return Ok(Bootd {
                        child,
                        port: p,
                        admin_token,
                    });
                }
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("bootd did not start within 10s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin token.
    pub fn admin(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.admin_token)?
            .trim()
            .to_string())
    }

    /// `GET path` as the admin (curl): the body.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Authorization: Bearer {}", self.admin()?),
            ])
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()?;
        if !out.status.success() {
            bail!("GET {path} from bootd as the admin failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bootd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// KVM when /dev/kvm really runs a guest, TCG otherwise; NODEBOOT_ACCEL=kvm|tcg overrides.
/// The probe boots the kernel without a root: a working accelerator reaches the
/// "no root" panic and QEMU exits (-no-reboot) within the bound.
pub fn accel(vmlinuz: &Path) -> String {
    if let Ok(a) = std::env::var("NODEBOOT_ACCEL") {
        return a;
    }
    if !Path::new("/dev/kvm").exists() {
        return "tcg".into();
    }
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return "tcg".into();
    };
    let t = Instant::now();
    let ok = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if ok && out.contains("Kernel panic") {
        "kvm".into()
    } else {
        eprintln!("xtask: KVM probe did not reach the kernel panic within 20s; using TCG");
        "tcg".into()
    }
}

/// The kernel command line, in the seed's shape.
pub fn cmdline(port: u16, extra: &str) -> String {
    let bootif = MAC.replace(':', "-");
    format!(
        "console=ttyS0 root=live:http://10.0.2.2:{port}/live.squashfs BOOTIF=01-{bootif} \
         grendel.hostname={HOSTNAME} grendel.address=http://10.0.2.2:{port} \
         rd.live.overlay.readonly=1 rd.live.overlay.overlayfs=1 rd.neednet=1 {extra}"
    )
    .trim()
    .to_string()
}

/// Remove ANSI escape sequences (systemd colours its status lines).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Milestones: (name, text on the console that marks it).
pub const MILESTONES: &[(&str, &str)] = &[
    ("kernel_start", "Linux version"),
    ("nodectl_start", "nodectl initrd: starting"),
    ("network_up", "nodectl initrd: network up"),
    ("fetch_done", "nodectl initrd: fetched"),
    ("live_root_ready", "nodectl initrd: live root ready"),
    ("switch_root", "Reached target initrd-switch-root.target"),
    (
        "booted_systemd",
        "Welcome to Debian GNU/Linux 12 (bookworm)!",
    ),
    // After switch-root systemd stops printing status lines once the serial
    // getty runs; nodeboot-status.service (After=multi-user.target) reports
    // the target's state itself.
    ("multi_user", "\"multi_user\":\"active\""),
    ("login_prompt", "cn1 login:"),
];

/// What a boot watches for.
pub struct Watch<'a> {
    /// The boot is done (passed) when this returns Some(Ok) / failed with Some(Err).
    pub judge: &'a mut dyn FnMut(&Value, &str) -> Option<Result<()>>,
    pub timeout: Duration,
    /// Raw disk images attached as virtio disks (serial nodeboot-<file stem>).
    pub disks: &'a [PathBuf],
    /// QEMU user-net port forwards (`tcp:10.0.2.15:6818-:6818`): the host
    /// reaching the node's daemons (slurmd, sshd).
    pub hostfwd: &'a [String],
    /// The control socket of a running swtpm: the VM gets a TPM 2.0 (TIS).
    pub tpm: Option<&'a Path>,
}

pub struct BootResult {
    pub milestones: Map<String, Value>,
    pub status: Option<Value>,
    pub console: PathBuf,
    pub seconds: f64,
}

/// Boot the VM, tee its console to `dir/console.log` (each line prefixed by
/// seconds since QEMU start) and to stdout when `echo`, and stop when the
/// judge decides or the timeout passes.
pub fn boot(
    a: &Artifacts,
    accel: &str,
    cmdline: &str,
    dir: &Path,
    echo: bool,
    watch: Watch,
) -> Result<BootResult> {
    boot_in(None, a, accel, cmdline, dir, echo, watch)
}

/// [`boot`], with QEMU (and its user-net: `10.0.2.2` is that namespace's
/// loopback) in network namespace `netns` when given.
pub fn boot_in(
    netns: Option<&str>,
    a: &Artifacts,
    accel: &str,
    cmdline: &str,
    dir: &Path,
    echo: bool,
    watch: Watch,
) -> Result<BootResult> {
    let cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
            c
        }
        None => Command::new("qemu-system-x86_64"),
    };
    let mut qemu = qemu(cmd, accel, watch.disks);
    if let Some(sock) = watch.tpm {
        qemu.arg("-chardev")
            .arg(format!("socket,id=chrtpm,path={}", sock.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
            .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    }
    qemu.arg("-kernel")
        .arg(&a.vmlinuz)
        .arg("-initrd")
        .arg(&a.initrd)
        .args(["-append", cmdline])
        .args([
            "-netdev",
            &std::iter::once("user,id=n0".to_string())
                .chain(watch.hostfwd.iter().map(|f| format!("hostfwd={f}")))
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")]);
    run_vm(
        qemu,
        &format!("accel={accel} cmdline: {cmdline}"),
        dir,
        echo,
        watch,
    )
}

/// The firmware of a network boot.
pub enum Firmware<'a> {
    /// SeaBIOS; the NIC's own iPXE ROM does the PXE boot.
    Bios,
    /// OVMF (Debian's `ovmf`: `OVMF_CODE_4M.fd`) with its variables in
    /// `vars` (a copy of `OVMF_VARS_4M.fd`); the NIC has no option ROM, so
    /// the firmware's own UEFI PXE does the boot; with `http_only` the
    /// firmware's PXE is switched off (fw_cfg), so UEFI HTTP boot does it.
    /// With `secure`, the Secure Boot build (`OVMF_CODE_4M.secboot.fd`,
    /// SMM on the q35 machine) and `vars` a copy of
    /// `OVMF_VARS_4M.ms.fd` (Microsoft's keys enrolled, Secure Boot on).
    Uefi {
        vars: &'a Path,
        http_only: bool,
        secure: bool,
    },
}

/// Debian's OVMF build.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Debian's OVMF with Secure Boot: the code needs SMM (its variables are
/// writable only from SMM), the variables have Microsoft's keys enrolled.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// [`boot`] from the network: no `-kernel`; the firmware boots (`-boot n`)
/// on the existing tap device `tap` of network namespace `netns`, where
/// QEMU runs (`ip netns exec`).
pub fn boot_pxe(
    accel: &str,
    netns: &str,
    tap: &str,
    dir: &Path,
    echo: bool,
    watch: Watch,
    firmware: Firmware,
) -> Result<BootResult> {
    let mut ip = Command::new("ip");
    ip.args(["netns", "exec", netns, "qemu-system-x86_64"]);
    let mut qemu = qemu(ip, accel, watch.disks);
    qemu.args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ]);
    let what = match firmware {
        Firmware::Bios => {
            qemu.args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
                .args(["-boot", "n"]);
            "BIOS PXE"
        }
        Firmware::Uefi {
            vars,
            http_only,
            secure,
        } => {
            if http_only {
                for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                    qemu.arg("-fw_cfg")
                        .arg(format!("name=opt/org.tianocore/{knob},string=n"));
                }
            }
            let code = if secure {
                // Only SMM may write the variables: the OS cannot turn
                // Secure Boot off behind the firmware's back.
                qemu.args(["-machine", "q35,smm=on"])
                    .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                OVMF_CODE_SECBOOT
            } else {
                qemu.args(["-machine", "q35"]);
                OVMF_CODE
            };
            qemu.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ))
                // No option ROM: OVMF's own virtio-net driver and PXE.
                .args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={MAC},romfile=,bootindex=1"),
                ]);
            match (http_only, secure) {
                (true, _) => "UEFI HTTP (OVMF)",
                (false, true) => "UEFI PXE with Secure Boot (OVMF secboot, Microsoft's keys)",
                (false, false) => "UEFI PXE (OVMF)",
            }
        }
    };
    let header = format!("accel={accel} {what} boot from {tap} in network namespace {netns}");
    run_vm(qemu, &header, dir, echo, watch)
}

/// `cmd` (qemu-system-x86_64, or a wrapper running it) with the VM every
/// boot shares: accelerator, memory, CPUs, serial console on stdout, disks.
fn qemu(mut cmd: Command, accel: &str, disks: &[PathBuf]) -> Command {
    let cpu = if accel == "kvm" { "host" } else { "max" };
    // Each disk gets the serial nodeboot-<file stem>: the node sees it as
    // /dev/disk/by-id/virtio-nodeboot-<stem>, the stable name operators use.
    for (i, d) in disks.iter().enumerate() {
        let stem = d.file_stem().unwrap_or_default().to_string_lossy();
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,id=d{i},format=raw,cache=unsafe",
                d.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=d{i},serial=nodeboot-{stem}"));
    }
    cmd.args(["-accel", accel, "-cpu", cpu, "-m", "2048"])
        // Two TCG vCPUs on this 2-core machine starved each other (RCU stalls).
        .args(["-smp", if accel == "kvm" { "2" } else { "1" }])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ]);
    cmd
}

/// Start `qemu`, watch its console (see [`boot`]).
fn run_vm(
    mut qemu: Command,
    header: &str,
    dir: &Path,
    echo: bool,
    watch: Watch,
) -> Result<BootResult> {
    std::fs::create_dir_all(dir)?;
    let console = dir.join("console.log");
    let mut log = std::fs::File::create(&console)?;
    writeln!(log, "# {header}")?;
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut milestones = Map::new();
    let mut status = None;
    let verdict: Result<()> = loop {
        let left = watch.timeout.checked_sub(t0.elapsed());
        let Some(left) = left else {
            break Err(anyhow::anyhow!(
                "timed out after {}s",
                watch.timeout.as_secs()
            ));
        };
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(raw) => {
                let t = t0.elapsed().as_secs_f64();
                let line = strip_ansi(raw.trim_end_matches('\n'));
                writeln!(log, "{t:9.3} | {line}")?;
                if echo {
                    println!("{t:7.2} | {line}");
                }
                for (name, pat) in MILESTONES {
                    if !milestones.contains_key(*name) && line.contains(pat) {
                        milestones.insert(name.to_string(), json!((t * 1000.0).round() / 1000.0));
                    }
                }
                if let Some(i) = line.find(STATUS_PREFIX) {
                    status = serde_json::from_str::<Value>(&line[i + STATUS_PREFIX.len()..]).ok();
                }
                let snapshot = json!({ "milestones": milestones, "status": status });
                if let Some(v) = (watch.judge)(&snapshot, &line) {
                    break v;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A quiet console: the judge may be waiting on something
                // else (a job on the node); ask it again with no new line.
                let snapshot = json!({ "milestones": milestones, "status": status });
                if let Some(v) = (watch.judge)(&snapshot, "") {
                    break v;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                break Err(anyhow::anyhow!("QEMU exited: {}", err.trim()));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let seconds = t0.elapsed().as_secs_f64();
    writeln!(log, "# verdict after {seconds:.1}s: {verdict:?}")?;
    verdict
        .with_context(|| format!("boot in {} (console: {})", dir.display(), console.display()))?;
    Ok(BootResult {
        milestones,
        status,
        console,
        seconds,
    })
}

/// The judge of a boot that must reach multi-user with hostname cn1: decided
/// by the `nodeboot-status` line the booted node prints.
pub fn judge_ready(s: &Value, line: &str) -> Option<Result<()>> {
    if line.contains("LIVE BOOT FAILED") {
        return Some(Err(anyhow::anyhow!("the node failed: {line}")));
    }
    let st = s.get("status").filter(|v| !v.is_null())?;
    Some(if st["multi_user"] != "active" {
        Err(anyhow::anyhow!(
            "multi-user.target is {} on the node",
            st["multi_user"]
        ))
    } else if st["hostname"] != HOSTNAME {
        Err(anyhow::anyhow!(
            "hostname is {} instead of {HOSTNAME}",
            st["hostname"]
        ))
    } else {
        Ok(())
    })
}

/// Milestones a successful boot must show (the login prompt may come later).
pub fn required_milestones() -> impl Iterator<Item = &'static str> {
    MILESTONES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "login_prompt")
}

pub fn write_json(path: &Path, v: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The report of a successful boot, as the issue asks.
pub fn report(r: &BootResult, accel: &str, a: &Artifacts, extra: Value) -> Value {
    let st = r.status.clone().unwrap_or(Value::Null);
    json!({
        "hostname": st["hostname"],
        "accel": accel,
        "milestones": r.milestones,
        "fetch": {
            "bytes": st["fetch"]["bytes"],
            "seconds": st["fetch"]["seconds"],
            "sha256": st["fetch"]["sha256"],
            "verified_by": st["fetch"]["verified_by"],
            "resumes": st["fetch"]["resumes"],
        },
        "image_sha256": a.sha256,
        "seconds": r.seconds,
        "extra": extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_what_is_there_and_not_through_links() {
        let d = std::env::temp_dir().join(format!("xtask-glob-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("usr/lib/modules/6.1.0-50-amd64/kernel/sound")).unwrap();
        std::fs::create_dir_all(d.join("boot")).unwrap();
        std::fs::write(d.join("boot/vmlinuz-6.1"), b"").unwrap();
        std::os::unix::fs::symlink("usr/lib", d.join("lib")).unwrap();
        let m = |p: &str| glob_matches(&d, p);
        let r = (
            m("usr/lib/modules/*/kernel/sound"),
            m("boot/*"),
            m("boot/vm*-6.1"),
            // Merged /usr: `lib` is a link, and the globs stop there.
            m("lib/modules/*/kernel/sound"),
            m("usr/lib/modules/*/kernel/drivers/gpu"),
            m("boot/x*"),
        );
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(r, (true, true, true, false, false, false));
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-37-amd64",
            "5.10.0-30-amd64",
            "6.1.0-10-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.10.0-30-amd64",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.1.0-37-amd64"
            ]
        );
    }

    #[test]
    fn files_appended_to_an_initrd_are_a_cpio_that_cpio_reads() {
        let dir = std::env::temp_dir().join(format!("xtask-initrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let first = dir.join("initrd.img");
        std::fs::write(&first, b"abcde").unwrap();
        let out = dir.join("out.img");
        initrd_with(&first, &[("/etc/ca.pem", b"PEM\n")], &out).unwrap();
        let img = std::fs::read(&out).unwrap();
        assert_eq!(&img[..8], b"abcde\0\0\0", "padded to 4 bytes");
        std::fs::write(dir.join("tail"), &img[8..]).unwrap();
        let o = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.join("x"))
            .stdin(std::fs::File::open(dir.join("tail")).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = std::fs::read(dir.join("x/etc/ca.pem")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, b"PEM\n");
    }
}
