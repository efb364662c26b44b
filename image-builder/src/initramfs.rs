//! `nodeimg initramfs`: dracut --no-hostonly with 90nodeboot and the static nodectl.
//!
//! dracut runs inside the node's root (a chroot), so the initramfs carries
//! exactly the kernel modules and systemd of the image it boots. Everything
//! that can be wrong is checked first, with errors naming the path: the
//! module, the binary (present, executable, static), the kernel's modules and
//! dracut itself.
use crate::chroot;
use anyhow::{bail, Context, Result};
use nodeboot_common::cmd;
use std::ffi::OsString;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// dracut modules left out: networking is nodectl's, and the live/network
/// root types of dracut are replaced by 90nodeboot. Also what a live boot
/// never does in the initramfs, whose hooks ran at every boot (under TCG,
/// 1 vCPU, about a third of the time from the kernel to nodectl's start):
/// - `btrfs`: its `rd.driver.pre=btrfs` loaded btrfs before udev, and with
///   it raid6, whose algorithm benchmark runs at load;
/// - `dm`, `crypt`: device-mapper loaded before udev, LUKS parsing; a
///   live root is no volume to assemble, and the key and cache partitions
///   are plain ext4;
/// - `virtiofs`: a pre-mount hook (root on virtiofs) that ran while
///   nodectl fetched;
/// - `modsign`: a pre-trigger hook loading extra module-signing keys from
///   /lib/modules/keys (Debian's kernel checks its modules with its
///   built-in key);
/// - `overlay-root`, `usrmount`: dracut's own root overlay and a separate
///   /usr (nodectl makes the overlay; the image is one file system);
/// - `resume` (a stateless node has nothing to resume), `nvdimm`,
///   `lunmask` (roots on NVDIMM namespaces, masked SAN LUNs).
const OMIT: &str = "network network-legacy systemd-networkd network-manager dmsquash-live livenet \
     nfs iscsi plymouth btrfs dm crypt virtiofs modsign overlay-root usrmount resume nvdimm lunmask";

/// The only filesystems the initramfs mounts (dracut `--filesystems`): the
/// live image (squashfs on a loop device), its overlay, and the ext4 of the
/// key and cache partitions. Without the list, `--no-hostonly` put every
/// filesystem module of the kernel in (33 MB unpacked: ocfs2, gfs2, ceph,
/// smb, f2fs, …), all unpacked by the kernel at every boot. The booted
/// image has its own modules for the node's disks (xfs, NFS, …).
const FILESYSTEMS: &str = "squashfs overlay ext4";

/// Where dracut looks for modules, relative to the root.
const MODULES_D: &str = "usr/lib/dracut/modules.d";
/// Where the module is installed in the root (the name makes `--add nodeboot`).
const MODULE_NAME: &str = "90nodeboot";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kernel version: a directory under ROOT/lib/modules (e.g. 6.1.0-37-amd64).
    #[arg(long)]
    pub kver: String,
    /// Where to write the initramfs (written under a temporary name, renamed at the end).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The root tree holding the kernel modules and dracut (dracut runs chrooted in it).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The 90nodeboot dracut module directory (with module-setup.sh); copied
    /// into ROOT/usr/lib/dracut/modules.d/90nodeboot unless it is that directory.
    /// [default: ROOT/usr/lib/dracut/modules.d/90nodeboot]
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// The static nodectl to put in the initramfs. [default: ROOT/usr/bin/nodectl]
    #[arg(long)]
    pub nodectl: Option<PathBuf>,
    /// dracut's compressor (zstd, gzip, xz, lz4, …).
    #[arg(long, default_value = "zstd")]
    pub compress: String,
}

/// What the checks found: the paths to use.
#[derive(Debug)]
pub struct Plan {
    pub root: PathBuf,
    pub module: PathBuf,
    pub nodectl: PathBuf,
}

/// Check every input before anything runs; the errors name the path and
/// say what was expected.
pub fn check(a: &Args) -> Result<Plan> {
    let root = a.root.clone();
    if !root.is_dir() {
        bail!("root {}: not a directory", root.display());
    }
    let module = a
        .module
        .clone()
        .unwrap_or_else(|| root.join(MODULES_D).join(MODULE_NAME));
    check_module(&module)?;
    let nodectl = a
        .nodectl
        .clone()
        .unwrap_or_else(|| root.join("usr/bin/nodectl"));
    check_nodectl(&nodectl)?;
    check_kver(&root, &a.kver)?;
    check_dracut(&root)?;
    Ok(Plan {
        root,
        module,
        nodectl,
    })
}

fn check_module(dir: &Path) -> Result<()> {
    if !dir.join("module-setup.sh").is_file() {
        bail!(
            "dracut module {}: no module-setup.sh there (--module takes the 90nodeboot directory, \
             e.g. dracut-module/90nodeboot)",
            dir.display()
        );
    }
    Ok(())
}

fn check_nodectl(path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).map_err(|e| {
        anyhow::anyhow!(
            "nodectl {}: {e} (build it with `cargo xtask build`, or pass --nodectl)",
            path.display()
        )
    })?;
    if !md.is_file() {
        bail!("nodectl {}: not a regular file", path.display());
    }
    let mode = md.permissions().mode();
    if mode & 0o111 == 0 {
        bail!(
            "nodectl {}: not executable (mode {:04o})",
            path.display(),
            mode & 0o7777
        );
    }
    if let Some(interp) = elf_interpreter(path)? {
        bail!(
            "nodectl {}: dynamically linked (interpreter {interp}); the initramfs needs the static \
             build (`cargo xtask build`)",
            path.display()
        );
    }
    Ok(())
}

fn check_kver(root: &Path, kver: &str) -> Result<()> {
    let dir = root.join("lib/modules");
    if dir.join(kver).is_dir() {
        return Ok(());
    }
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    bail!(
        "kernel {kver}: no {} (found: {})",
        dir.join(kver).display(),
        if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        }
    )
}

fn check_dracut(root: &Path) -> Result<()> {
    const WHERE: [&str; 3] = ["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"];
    if WHERE.iter().any(|p| root.join(p).exists()) {
        return Ok(());
    }
    bail!(
        "dracut not found in {} (looked for {}); install dracut and dracut-core in that root",
        root.display(),
        WHERE.join(", ")
    )
}

/// The program interpreter (PT_INTERP) of an ELF executable: None for a
/// static binary. Errors name the file when it is not ELF.
pub fn elf_interpreter(path: &Path) -> Result<Option<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let not_elf = || anyhow::anyhow!("{}: not an ELF executable", path.display());
    let mut ident = [0u8; 64];
    f.read_exact_at(&mut ident, 0).map_err(|_| not_elf())?;
    if &ident[..4] != b"\x7fELF" {
        return Err(not_elf());
    }
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(not_elf()),
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(not_elf()),
    };
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }
    };
    let u32_at = |b: &[u8], o: usize| {
        let v: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let u64_at = |b: &[u8], o: usize| {
        let v: [u8; 8] = b[o..o + 8].try_into().unwrap();
        if le {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    };
    // e_phoff, e_phentsize, e_phnum
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(&ident, 32), u16_at(&ident, 54), u16_at(&ident, 56))
    } else {
        (
            u64::from(u32_at(&ident, 28)),
            u16_at(&ident, 42),
            u16_at(&ident, 44),
        )
    };
    let min = if is64 { 56 } else { 32 };
    if phnum > 0 && usize::from(phentsize) < min {
        return Err(not_elf());
    }
    let mut ph = vec![0u8; usize::from(phentsize)];
    for i in 0..u64::from(phnum) {
        f.read_exact_at(&mut ph, phoff + i * u64::from(phentsize))
            .with_context(|| format!("{}: truncated program headers", path.display()))?;
        const PT_INTERP: u32 = 3;
        if u32_at(&ph, 0) != PT_INTERP {
            continue;
        }
        let (off, size) = if is64 {
            (u64_at(&ph, 8), u64_at(&ph, 32))
        } else {
            (u64::from(u32_at(&ph, 4)), u64::from(u32_at(&ph, 16)))
        };
        let mut s = vec![0u8; size.min(4096) as usize];
        f.read_exact_at(&mut s, off)
            .with_context(|| format!("{}: truncated PT_INTERP", path.display()))?;
        let s = String::from_utf8_lossy(&s);
        return Ok(Some(s.trim_end_matches('\0').to_string()));
    }
    Ok(None)
}

/// A scratch directory inside the root, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("removing {}: {e}", self.0.display());
        }
    }
}

/// `path` seen from inside `root` (both canonical), if it lies there.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    path.strip_prefix(root).ok().map(|p| Path::new("/").join(p))
}

pub fn run(a: &Args) -> Result<()> {
    let plan = check(a)?;
    let root = plan
        .root
        .canonicalize()
        .with_context(|| format!("resolving {}", plan.root.display()))?;
    let chrooted = root != Path::new("/");

    // The module, where dracut looks for it.
    let module_dst = root.join(MODULES_D).join(MODULE_NAME);
    let module_src = plan
        .module
        .canonicalize()
        .with_context(|| format!("resolving {}", plan.module.display()))?;
    if module_dst.canonicalize().ok().as_deref() != Some(module_src.as_path()) {
        if module_dst.exists() {
            std::fs::remove_dir_all(&module_dst)
                .with_context(|| format!("removing the old {}", module_dst.display()))?;
        }
        std::fs::create_dir_all(root.join(MODULES_D))
            .with_context(|| format!("making {}", root.join(MODULES_D).display()))?;
        cmd::run(&[
            OsString::from("cp"),
            OsString::from("-a"),
            OsString::from("--no-target-directory"),
            module_src.clone().into(),
            module_dst.clone().into(),
        ])?;
        tracing::info!(
            "installed {} as {}",
            module_src.display(),
            module_dst.display()
        );
    }

    // A scratch directory inside the root: dracut's output, and nodectl when
    // it comes from outside the root.
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("making {}", tmp.display()))?;
    let scratch = Scratch(tmp.join(format!("nodeimg-initramfs.{}", std::process::id())));
    if scratch.0.exists() {
        std::fs::remove_dir_all(&scratch.0)
            .with_context(|| format!("removing {}", scratch.0.display()))?;
    }
    std::fs::create_dir(&scratch.0).with_context(|| format!("making {}", scratch.0.display()))?;
    let nodectl_abs = plan
        .nodectl
        .canonicalize()
        .with_context(|| format!("resolving {}", plan.nodectl.display()))?;
    let nodectl_in_root = match inside(&root, &nodectl_abs) {
        Some(p) => p,
        None => {
            let dst = scratch.0.join("nodectl");
            std::fs::copy(&nodectl_abs, &dst).with_context(|| {
                format!("copying {} to {}", nodectl_abs.display(), dst.display())
            })?;
            inside(&root, &dst).context("scratch directory outside the root")?
        }
    };
    let image = scratch.0.join("initrd.img");
    let image_in_root = inside(&root, &image).context("scratch directory outside the root")?;

    let mut argv: Vec<OsString> = vec![
        "env".into(),
        format!("NODECTL={}", nodectl_in_root.display()).into(),
        "dracut".into(),
        "--quiet".into(),
        "--force".into(),
        "--no-hostonly".into(),
        "--no-hostonly-cmdline".into(),
        "--no-early-microcode".into(),
        "--compress".into(),
        a.compress.clone().into(),
        "--add".into(),
        "nodeboot".into(),
        "--omit".into(),
        OMIT.into(),
        "--filesystems".into(),
        FILESYSTEMS.into(),
        "--kver".into(),
        a.kver.clone().into(),
    ];
    argv.push(image_in_root.into());
    tracing::info!(
        "dracut for kernel {} in {} (nodeboot module, {} compression)",
        a.kver,
        root.display(),
        a.compress
    );
    let t = std::time::Instant::now();
    if chrooted {
        let _mounts = chroot::Mounts::new(&root)?;
        chroot::run_in(&root, &argv)?;
    } else {
        cmd::run_streaming(&argv)?;
    }

    // Into place: a temporary name beside the output, then a rename.
    let out = &a.output;
    let name = out
        .file_name()
        .with_context(|| format!("output {}: no file name", out.display()))?;
    let part = out.with_file_name(format!(".{}.part", name.to_string_lossy()));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    }
    let placed = std::fs::copy(&image, &part)
        .with_context(|| format!("copying the initramfs to {}", part.display()))
        .and_then(|_| {
            std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("chmod {}", part.display()))
        })
        .and_then(|_| {
            std::fs::rename(&part, out)
                .with_context(|| format!("renaming {} to {}", part.display(), out.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        "wrote {} ({size} bytes, kernel {}) in {:.1}s",
        out.display(),
        a.kver,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A minimal ELF64 little-endian executable header with one program
    /// header: PT_INTERP (pointing at `interp`) or PT_LOAD.
    fn elf64(interp: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little endian
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        match interp {
            Some(s) => {
                let off = b.len() as u64;
                b[ph..ph + 4].copy_from_slice(&3u32.to_le_bytes());
                b[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
                b[ph + 32..ph + 40].copy_from_slice(&(s.len() as u64 + 1).to_le_bytes());
                b.extend_from_slice(s.as_bytes());
                b.push(0);
            }
            None => b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()),
        }
        b
    }

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A root that passes every check, and its Args.
    fn good(t: &Path) -> Args {
        let root = t.join("root");
        write(&root.join("usr/bin/dracut"), b"#!/bin/sh\n", 0o755);
        write(&root.join("usr/bin/nodectl"), &elf64(None), 0o755);
        std::fs::create_dir_all(root.join("lib/modules/6.1.0-37-amd64")).unwrap();
        let module = t.join("90nodeboot");
        write(&module.join("module-setup.sh"), b"#!/bin/bash\n", 0o755);
        Args {
            kver: "6.1.0-37-amd64".into(),
            output: t.join("initrd.img"),
            root,
            module: Some(module),
            nodectl: None,
            compress: "zstd".into(),
        }
    }

    fn err(a: &Args) -> String {
        format!("{:#}", check(a).unwrap_err())
    }

    #[test]
    fn all_good() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        let p = check(&a).unwrap();
        assert_eq!(p.nodectl, a.root.join("usr/bin/nodectl"));
        assert_eq!(p.module, t.path().join("90nodeboot"));
    }

    #[test]
    fn default_module_is_in_the_root() {
        let t = tempfile::tempdir().unwrap();
        let a = Args {
            module: None,
            ..good(t.path())
        };
        let e = err(&a);
        let want = a.root.join("usr/lib/dracut/modules.d/90nodeboot");
        assert!(
            e.contains(&format!(
                "dracut module {}: no module-setup.sh",
                want.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn module_without_setup_script() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        std::fs::remove_file(t.path().join("90nodeboot/module-setup.sh")).unwrap();
        let e = err(&a);
        assert!(e.contains("90nodeboot: no module-setup.sh there"), "{e}");
    }

    #[test]
    fn nodectl_missing() {
        let t = tempfile::tempdir().unwrap();
        let a = Args {
            nodectl: Some(t.path().join("nope/nodectl")),
            ..good(t.path())
        };
        let e = err(&a);
        assert!(e.contains("nope/nodectl: No such file"), "{e}");
        assert!(e.contains("cargo xtask build"), "{e}");
    }

    #[test]
    fn nodectl_not_executable() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        let p = a.root.join("usr/bin/nodectl");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = err(&a);
        assert!(
            e.contains(&format!(
                "nodectl {}: not executable (mode 0644)",
                p.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn nodectl_dynamic() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        let p = a.root.join("usr/bin/nodectl");
        write(&p, &elf64(Some("/lib64/ld-linux-x86-64.so.2")), 0o755);
        let e = err(&a);
        assert!(
            e.contains("dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)"),
            "{e}"
        );
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn nodectl_not_elf() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        let p = a.root.join("usr/bin/nodectl");
        write(&p, b"#!/bin/sh\necho hi\n", 0o755);
        let e = err(&a);
        assert!(
            e.contains(&format!("{}: not an ELF executable", p.display())),
            "{e}"
        );
    }

    #[test]
    fn host_binaries_are_dynamic() {
        // Debian's coreutils are dynamically linked: the check sees it.
        let i = elf_interpreter(Path::new("/bin/ls")).unwrap();
        assert!(i.is_some_and(|s| s.contains("ld-linux")));
    }

    #[test]
    fn kver_missing_lists_found() {
        let t = tempfile::tempdir().unwrap();
        let a = Args {
            kver: "6.1.0-99-amd64".into(),
            ..good(t.path())
        };
        std::fs::create_dir_all(a.root.join("lib/modules/6.1.0-38-amd64")).unwrap();
        let e = err(&a);
        let want = a.root.join("lib/modules/6.1.0-99-amd64");
        assert!(
            e.contains(&format!(
                "kernel 6.1.0-99-amd64: no {} (found: 6.1.0-37-amd64, 6.1.0-38-amd64)",
                want.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn kver_none_found() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        std::fs::remove_dir_all(a.root.join("lib/modules")).unwrap();
        let e = err(&a);
        assert!(e.contains("(found: none)"), "{e}");
    }

    #[test]
    fn dracut_missing() {
        let t = tempfile::tempdir().unwrap();
        let a = good(t.path());
        std::fs::remove_file(a.root.join("usr/bin/dracut")).unwrap();
        let e = err(&a);
        assert!(
            e.contains(&format!("dracut not found in {}", a.root.display())),
            "{e}"
        );
    }

    #[test]
    fn root_missing() {
        let t = tempfile::tempdir().unwrap();
        let a = Args {
            root: t.path().join("absent"),
            ..good(t.path())
        };
        let e = err(&a);
        assert!(e.contains("absent: not a directory"), "{e}");
    }

    #[test]
    fn inside_root() {
        let r = Path::new("/work/root");
        assert_eq!(
            inside(r, Path::new("/work/root/usr/bin/nodectl")),
            Some(PathBuf::from("/usr/bin/nodectl"))
        );
        assert_eq!(inside(r, Path::new("/work/rootx/nodectl")), None);
    }
}
