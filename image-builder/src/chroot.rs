//! Running commands inside a root tree: proc, sys and dev mounted for the
//! duration, unmounted on every path (a guard).
//!
//! Mounts are made in a private mount namespace of this process when the
//! kernel allows it, so a crash leaves nothing mounted on the host; trees
//! are removed only after whatever is mounted below them is gone
//! ([`remove_tree`]), so a bind of `/dev` is never descended into.
use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nodeboot_common::cmd;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// proc, sysfs and a (recursive) bind of the host's `/dev` mounted in a root;
/// all of them are unmounted (lazily, which takes the submounts of the bind
/// along) when the guard is dropped, whatever happened.
#[derive(Debug)]
pub struct Mounts {
    mounted: Vec<PathBuf>,
}

impl Mounts {
    /// Mount `proc`, `sys` and `dev` in `root` (the directories are made if
    /// missing). Needs root.
    pub fn new(root: &Path) -> Result<Mounts> {
        private_namespace();
        let mut m = Mounts {
            mounted: Vec::new(),
        };
        let specs: [(&str, Option<&str>, Option<&str>, MsFlags); 3] = [
            ("proc", Some("proc"), Some("proc"), MsFlags::empty()),
            ("sys", Some("sysfs"), Some("sysfs"), MsFlags::empty()),
            // Recursive: /dev/pts and /dev/shm come along (apt wants a pty).
            (
                "dev",
                Some("/dev"),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
            ),
        ];
        for (dir, source, fstype, flags) in specs {
            let target = root.join(dir);
            std::fs::create_dir_all(&target)
                .with_context(|| format!("making {}", target.display()))?;
            mount(source, &target, fstype, flags, None::<&str>)
                .with_context(|| format!("mounting {dir} on {}", target.display()))?;
            tracing::debug!(target = %target.display(), "mounted");
            // Pushed right away: an error on the next mount still undoes this one.
            m.mounted.push(target);
        }
        Ok(m)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            if let Err(e) = umount2(target, MntFlags::MNT_DETACH) {
                tracing::warn!("unmounting {}: {e}", target.display());
            }
        }
    }
}

/// Move this process (the calling thread, in a multithreaded one: hence
/// `/proc/thread-self`) into a mount namespace of its own (propagation
/// private), once: what it mounts is invisible to the host and disappears with it, even
/// if it is killed. Best effort: on failure the mounts stay in the host's
/// namespace and only the guard removes them.
fn private_namespace() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            tracing::warn!(
                "no private mount namespace ({}); mounts are visible on the host until unmounted",
                std::io::Error::last_os_error()
            );
            return;
        }
        if let Err(e) = mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            tracing::warn!("making mounts private: {e}");
        }
    });
}

/// Run `argv` inside `root` (`chroot ROOT argv…`), output streamed.
pub fn run_in<S: AsRef<std::ffi::OsStr>>(root: &Path, argv: &[S]) -> Result<()> {
    let mut full: Vec<OsString> = vec!["chroot".into(), root.into()];
    full.extend(argv.iter().map(|a| a.as_ref().to_os_string()));
    cmd::run_streaming(&full)
}

/// Mount points at or below `dir`, deepest first, from a mountinfo text
/// (`/proc/thread-self/mountinfo`); `dir` must be absolute.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(OsString::from_vec(unescape_mountinfo(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort();
    found.dedup();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Remove the tree `dir` (if it exists) after lazily unmounting whatever is
/// mounted below it (a leftover of an interrupted run); refuses when
/// something stays mounted there.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let info = || {
        std::fs::read_to_string("/proc/thread-self/mountinfo")
            .context("reading /proc/thread-self/mountinfo")
    };
    for m in mounts_below(&info()?, &abs) {
        tracing::warn!("unmounting leftover mount {}", m.display());
        umount2(&m, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting leftover mount {}", m.display()))?;
    }
    let left = mounts_below(&info()?, &abs);
    if !left.is_empty() {
        bail!(
            "not removing {}: still mounted below it: {}",
            dir.display(),
            left.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /work/img/root/proc rw - proc proc rw
31 22 0:6 / /work/img/root/dev rw - devtmpfs udev rw
32 22 0:7 / /work/img/root/dev/pts rw - devpts devpts rw
33 22 0:8 / /work/img/root2/proc rw - proc proc rw
34 22 0:9 / /work/with\\040space/proc rw - proc proc rw
";

    #[test]
    fn mounts_below_deepest_first_and_exact_components() {
        let m = mounts_below(INFO, Path::new("/work/img/root"));
        assert_eq!(
            m,
            vec![
                PathBuf::from("/work/img/root/dev/pts"),
                PathBuf::from("/work/img/root/proc"),
                PathBuf::from("/work/img/root/dev"),
            ]
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let m = mounts_below(INFO, Path::new("/work/with space"));
        assert_eq!(m, vec![PathBuf::from("/work/with space/proc")]);
    }

    #[test]
    fn guard_mounts_and_unmounts() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let info = || std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        {
            let _m = Mounts::new(&root).unwrap();
            assert!(root.join("proc/self/status").exists());
            assert!(root.join("sys/kernel").is_dir());
            assert!(root.join("dev/null").exists());
            assert!(mounts_below(&info(), &root).len() >= 3);
        }
        assert_eq!(mounts_below(&info(), &root), Vec::<PathBuf>::new());
        remove_tree(&root).unwrap();
    }

    #[test]
    fn remove_tree_of_missing_dir_is_ok() {
        let t = tempfile::tempdir().unwrap();
        remove_tree(&t.path().join("absent")).unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), "x").unwrap();
        remove_tree(&t.path().join("a")).unwrap();
        assert!(!t.path().join("a").exists());
    }
}
