//! `node.toml`: a node's site setup, applied declaratively by `nodectl
//! apply` (and, with issue 6's native path, by `nodectl provision` from the
//! postscripts repository). This first part holds the storage: mounts (a
//! local disk by UUID, NFS) and the storage layout as symlinks.
//!
//! ```toml
//! [[mount]]
//! what = "UUID=0b5a5a6e-…"     # or LABEL=…, PARTLABEL=…, a device path, server:/export
//! where = "/mnt/disk"
//! type = "xfs"
//! options = "defaults,noatime" # default "defaults"
//! wait = 30                    # seconds for the device (or the server) to answer
//!
//! [[link]]
//! path = "/opt/cache/disk/tmp"
//! target = "/mnt/disk/tmp"
//! target_mode = "1777"         # create the target directory with this mode
//! ```
//!
//! Applying is idempotent (a mount already in place, a link already right
//! are left alone) and explicit: a device that does not appear, a mount that
//! keeps failing, a path in the way of a link each stop it with a message
//! naming them — no `mount -a || true`.
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeToml {
    #[serde(default)]
    pub mount: Vec<Mount>,
    #[serde(default)]
    pub link: Vec<Link>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub what: String,
    #[serde(rename = "where")]
    pub at: PathBuf,
    #[serde(rename = "type")]
    pub fstype: String,
    #[serde(default = "default_options")]
    pub options: String,
    #[serde(default = "default_wait")]
    pub wait: u64,
}

fn default_options() -> String {
    "defaults".into()
}
fn default_wait() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub path: PathBuf,
    pub target: PathBuf,
    /// Octal mode of the target directory, created when missing.
    pub target_mode: Option<String>,
}

/// Parse and check a node.toml; errors name the file and the entry.
pub fn load(path: &Path) -> Result<NodeToml> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let n: NodeToml =
        toml::from_str(&text).with_context(|| format!("{}: invalid node.toml", path.display()))?;
    for (i, m) in n.mount.iter().enumerate() {
        let what = format!("{}: mount #{} ({})", path.display(), i + 1, m.at.display());
        if !m.at.is_absolute() {
            bail!("{what}: `where` must be an absolute path");
        }
        if m.what.is_empty() || m.fstype.is_empty() {
            bail!("{what}: `what` and `type` must not be empty");
        }
    }
    for (i, l) in n.link.iter().enumerate() {
        let what = format!("{}: link #{} ({})", path.display(), i + 1, l.path.display());
        if !l.path.is_absolute() || !l.target.is_absolute() {
            bail!("{what}: `path` and `target` must be absolute paths");
        }
        if let Some(m) = &l.target_mode {
            parse_mode(m).with_context(|| what.clone())?;
        }
    }
    Ok(n)
}

fn parse_mode(m: &str) -> Result<u32> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|v| *v <= 0o7777)
        .with_context(|| {
            format!("target_mode {m:?}: not an octal mode such as \"0755\" or \"1777\"")
        })
}

/// `root` joined with an absolute path (tests apply under a tempdir).
fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The device `what` names, for sources that are devices.
fn device(what: &str) -> Option<PathBuf> {
    for (prefix, dir) in [
        ("UUID=", "/dev/disk/by-uuid/"),
        ("LABEL=", "/dev/disk/by-label/"),
        ("PARTLABEL=", "/dev/disk/by-partlabel/"),
        ("PARTUUID=", "/dev/disk/by-partuuid/"),
    ] {
        if let Some(v) = what.strip_prefix(prefix) {
            return Some(PathBuf::from(format!("{dir}{v}")));
        }
    }
    what.starts_with("/dev/").then(|| PathBuf::from(what))
}

/// Is `at` a mount point in `mountinfo` (proc(5) format)?
fn mounted(mountinfo: &Path, at: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(mountinfo)
        .with_context(|| format!("reading {}", mountinfo.display()))?;
    Ok(crate::disk::probe::parse_mountinfo(&text)
        .iter()
        .any(|e| e.mountpoint == at))
}

/// Apply `n` under `root` ("/" on a node); returns what was done, one line each.
pub fn apply(n: &NodeToml, root: &Path, mountinfo: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for m in &n.mount {
        let at = under(root, &m.at);
        if mounted(mountinfo, &at)? {
            done.push(format!("{} already mounted", at.display()));
            continue;
        }
        std::fs::create_dir_all(&at).with_context(|| format!("creating {}", at.display()))?;
        let wait = Duration::from_secs(m.wait);
        let start = Instant::now();
        let dev = device(&m.what);
        if let Some(d) = &dev {
            while !d.exists() {
                if start.elapsed() >= wait {
                    bail!(
                        "mounting {} on {}: the device {} did not appear within {}s",
                        m.what,
                        at.display(),
                        d.display(),
                        m.wait
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        let source = dev
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.what.clone());
        let argv = [
            "mount",
            "-t",
            &m.fstype,
            "-o",
            &m.options,
            &source,
            &at.to_string_lossy(),
        ];
        // A server that is slow to answer gets retries until `wait`.
        let mut delay = Duration::from_millis(500);
        loop {
            match crate::cmd::run(&argv) {
                Ok(_) => break,
                Err(e) if start.elapsed() + delay < wait => {
                    tracing::warn!("{e:#}; retrying in {:.1}s", delay.as_secs_f64());
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "mounting {} on {} (gave up after {}s)",
                            m.what,
                            at.display(),
                            m.wait
                        )
                    })
                }
            }
        }
        done.push(format!(
            "mounted {} ({}) on {}",
            m.what,
            m.fstype,
            at.display()
        ));
    }
    for l in &n.link {
        let path = under(root, &l.path);
        let target = under(root, &l.target);
        if let Some(mode) = &l.target_mode {
            if !target.exists() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(parse_mode(mode)?),
                )
                .with_context(|| format!("setting the mode of {}", target.display()))?;
                done.push(format!("created {} ({mode})", target.display()));
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() => {
                let cur = std::fs::read_link(&path)?;
                if cur == l.target {
                    done.push(format!(
                        "{} -> {} already",
                        path.display(),
                        l.target.display()
                    ));
                    continue;
                }
                // A link to somewhere else: ours to correct.
                std::fs::remove_file(&path)
                    .with_context(|| format!("replacing the symlink {}", path.display()))?;
            }
            Ok(md) => bail!(
                "link {} -> {}: {} is in the way ({}); move it away first",
                l.path.display(),
                l.target.display(),
                path.display(),
                if md.is_dir() {
                    "a directory"
                } else {
                    "not a symlink"
                }
            ),
            Err(_) => {}
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(&l.target, &path)
            .with_context(|| format!("linking {} -> {}", path.display(), l.target.display()))?;
        done.push(format!("{} -> {}", path.display(), l.target.display()));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("node.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        for (text, want) in [
            (
                "[[mount]]\nwhat='UUID=x'\nwhere='/m'\ntype='xfs'\nopts='x'\n",
                "unknown field `opts`",
            ),
            (
                "[[mount]]\nwhat='UUID=x'\nwhere='m'\ntype='xfs'\n",
                "mount #1 (m): `where` must be an absolute path",
            ),
            (
                "[[link]]\npath='/a'\ntarget='/b'\ntarget_mode='999'\n",
                "not an octal mode",
            ),
            ("[[lnk]]\npath='/a'\n", "unknown field `lnk`"),
        ] {
            let e = format!("{:#}", load(&write(d.path(), text)).unwrap_err());
            assert!(e.contains("node.toml") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn links_are_made_once_and_nothing_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let mi = d.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let n = load(&write(
            d.path(),
            "[[link]]\npath = '/opt/cache/disk/tmp'\ntarget = '/mnt/disk/tmp'\ntarget_mode = '1777'\n",
        ))
        .unwrap();
        let first = apply(&n, &root, &mi).unwrap();
        assert_eq!(first.len(), 2, "{first:?}");
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(root.join("mnt/disk/tmp")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            std::fs::read_link(root.join("opt/cache/disk/tmp")).unwrap(),
            Path::new("/mnt/disk/tmp")
        );
        let again = apply(&n, &root, &mi).unwrap();
        assert_eq!(
            again,
            vec![format!(
                "{} -> /mnt/disk/tmp already",
                root.join("opt/cache/disk/tmp").display()
            )]
        );
        // A real directory in the way is refused, not replaced.
        std::fs::remove_file(root.join("opt/cache/disk/tmp")).unwrap();
        std::fs::create_dir(root.join("opt/cache/disk/tmp")).unwrap();
        let e = format!("{:#}", apply(&n, &root, &mi).unwrap_err());
        assert!(e.contains("is in the way (a directory)"), "{e}");
    }

    #[test]
    fn a_missing_device_fails_within_its_wait() {
        let d = tempfile::tempdir().unwrap();
        let mi = d.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        let n = load(&write(
            d.path(),
            "[[mount]]\nwhat = 'UUID=6f1c9d3e-0000-4000-8000-000000000000'\nwhere = '/mnt/disk'\ntype = 'xfs'\nwait = 1\n",
        ))
        .unwrap();
        let t = Instant::now();
        let e = format!("{:#}", apply(&n, d.path(), &mi).unwrap_err());
        assert!(
            e.contains("the device /dev/disk/by-uuid/6f1c9d3e-0000-4000-8000-000000000000 did not appear within 1s"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn mounts_once() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: mounting needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let n = load(&write(
            d.path(),
            "[[mount]]\nwhat = 'nodeboot-test'\nwhere = '/mnt/t'\ntype = 'tmpfs'\noptions = 'size=1m'\n",
        ))
        .unwrap();
        let root = d.path().join("root");
        let mi = Path::new("/proc/self/mountinfo");
        let first = apply(&n, &root, mi).unwrap();
        let at = root.join("mnt/t");
        let again = apply(&n, &root, mi);
        let _ = std::process::Command::new("umount").arg(&at).status();
        assert!(
            first[0].starts_with("mounted nodeboot-test (tmpfs)"),
            "{first:?}"
        );
        assert_eq!(
            again.unwrap(),
            vec![format!("{} already mounted", at.display())]
        );
    }
}
