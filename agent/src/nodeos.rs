//! What the booted node's tree is, found rather than assumed: the name of a
//! service's unit (`ssh.service` on Debian, `sshd.service` on EL), the
//! trust store's layout (Debian's `update-ca-certificates` or EL's
//! `update-ca-trust`), the commands present. Everything is read under a
//! root given as a parameter ("/" on a node), so a Debian-shaped and an
//! EL-shaped tree can be tested in a tempdir.
//!
//! The family is decided, in order, by the trust tool the tree has
//! (`update-ca-certificates` / `update-ca-trust` in its `sbin`/`bin`
//! directories), then by `/etc/os-release` (`ID`, `ID_LIKE`: debian,
//! ubuntu / rhel, fedora, centos, rocky, almalinux), else unknown
//! (treated as Debian-shaped for paths, which is what the images nodeimg
//! builds are).
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the tree keeps its executables (searched in this order).
const BIN_DIRS: &[&str] = &[
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "usr/local/sbin",
    "usr/local/bin",
];

/// Where systemd looks for unit files (the node's own, then the vendor's).
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Services known under two names across distributions: (Debian, EL).
const SERVICE_ALIASES: &[(&str, &str)] = &[("ssh", "sshd")];

/// Largest os-release read (the real ones are under 1 KiB).
const OS_RELEASE_MAX: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Debian, Ubuntu: update-ca-certificates, /etc/ssl/certs.
    Debian,
    /// RHEL, Rocky, Alma, Fedora: update-ca-trust, /etc/pki/ca-trust.
    RedHat,
    Unknown,
}

/// The node's tree, as far as nodectl needs to know it.
#[derive(Debug, Clone)]
pub struct NodeOs {
    root: PathBuf,
    /// `ID` of os-release ("" when absent).
    pub id: String,
    /// `ID_LIKE` of os-release, split.
    pub id_like: Vec<String>,
    pub family: Family,
}

/// The trust store of the node, in paths on the node (absolute, not under
/// the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    /// Where the site's CA files are kept for the distribution's own full
    /// refresh (which then keeps them).
    pub anchors: PathBuf,
    /// The file name a CA gets in `anchors`, from its stem.
    pub anchor_prefix: &'static str,
    /// The PEM bundle curl, GnuTLS and libldap (`TLS_CACERT`) read.
    pub bundle: PathBuf,
    /// The hashed directory OpenSSL's `CApath` reads (`HASH.N` links).
    pub hashed: Option<PathBuf>,
    /// The distribution's full refresh, named in messages.
    pub refresh: &'static str,
}

impl NodeOs {
    /// Look at the tree under `root`.
    pub fn detect(root: &Path) -> NodeOs {
        let (id, id_like) = os_release(root);
        let mut os = NodeOs {
            root: root.to_path_buf(),
            id,
            id_like,
            family: Family::Unknown,
        };
        os.family = if os.command("update-ca-certificates").is_some() {
            Family::Debian
        } else if os.command("update-ca-trust").is_some() {
            Family::RedHat
        } else {
            let like = |names: &[&str]| {
                std::iter::once(&os.id)
                    .chain(&os.id_like)
                    .any(|i| names.contains(&i.as_str()))
            };
            if like(&["debian", "ubuntu"]) {
                Family::Debian
            } else if like(&["rhel", "fedora", "centos", "rocky", "almalinux"]) {
                Family::RedHat
            } else {
                Family::Unknown
            }
        };
        os
    }

    fn under(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// `name` as the node runs it (`/usr/sbin/update-ca-trust`), when one of
    /// the tree's executable directories has it.
    pub fn command(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        BIN_DIRS.iter().find_map(|d| {
            let p = self.root.join(d).join(name);
            let md = std::fs::metadata(&p).ok()?;
            (md.is_file() && md.permissions().mode() & 0o111 != 0)
                .then(|| Path::new("/").join(d).join(name))
        })
    }

    /// Is there a unit file `unit` (e.g. `sshd.service`) in the tree?
    pub fn has_unit(&self, unit: &str) -> bool {
        !unit.contains('/')
            && UNIT_DIRS
                .iter()
                .any(|d| std::fs::symlink_metadata(self.root.join(d).join(unit)).is_ok())
    }

    /// The unit to start for node.toml's `name` (`ssh`, `sshd.service`,
    /// `munge`): `.service` added when there is no suffix, and a service
    /// known under another name on this node's distribution (`ssh` ↔
    /// `sshd`) is found under the name its unit file has. A name whose
    /// unit is found nowhere is kept (systemctl then says so).
    pub fn service_unit(&self, name: &str) -> String {
        let unit = if name.contains('.') {
            name.to_string()
        } else {
            format!("{name}.service")
        };
        if self.has_unit(&unit) {
            return unit;
        }
        let Some(base) = unit.strip_suffix(".service") else {
            return unit;
        };
        for (a, b) in SERVICE_ALIASES {
            let other = match base {
                x if x == *a => b,
                x if x == *b => a,
                _ => continue,
            };
            let alt = format!("{other}.service");
            if self.has_unit(&alt) {
                tracing::info!("{unit} is {alt} on this node");
                return alt;
            }
        }
        unit
    }

    /// The trust store's layout for this family.
    pub fn trust(&self) -> TrustStore {
        match self.family {
            Family::RedHat => {
                let hashed = "/etc/pki/ca-trust/extracted/pem/directory-hash";
                TrustStore {
                    anchors: "/etc/pki/ca-trust/source/anchors".into(),
                    anchor_prefix: "nodeboot-",
                    bundle: "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem".into(),
                    // Only EL 9 and later extract one.
                    hashed: self.under(hashed).is_dir().then(|| hashed.into()),
                    refresh: "update-ca-trust",
                }
            }
            Family::Debian | Family::Unknown => TrustStore {
                anchors: "/usr/local/share/ca-certificates/nodeboot".into(),
                anchor_prefix: "",
                bundle: "/etc/ssl/certs/ca-certificates.crt".into(),
                hashed: Some("/etc/ssl/certs".into()),
                refresh: "update-ca-certificates",
            },
        }
    }
}

/// `ID` and `ID_LIKE` of `root/etc/os-release` (else
/// `root/usr/lib/os-release`); empty when neither is readable.
fn os_release(root: &Path) -> (String, Vec<String>) {
    let mut text = String::new();
    for p in ["etc/os-release", "usr/lib/os-release"] {
        if let Ok(f) = std::fs::File::open(root.join(p)) {
            if f.take(OS_RELEASE_MAX).read_to_string(&mut text).is_ok() {
                break;
            }
            text.clear();
        }
    }
    let value = |key: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
            .unwrap_or_default()
    };
    let id = value("ID");
    let like = value("ID_LIKE")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    (id, like)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn touch(root: &Path, rel: &str, mode: u32) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A Debian 12-shaped tree: ssh.service (and its sshd alias only once
    /// enabled), update-ca-certificates, /etc/ssl/certs.
    pub(crate) fn debian_tree(root: &Path) {
        touch(root, "usr/lib/os-release", 0o644);
        std::fs::write(
            root.join("usr/lib/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        touch(root, "usr/sbin/update-ca-certificates", 0o755);
        touch(root, "lib/systemd/system/ssh.service", 0o644);
        touch(root, "lib/systemd/system/munge.service", 0o644);
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
    }

    /// A Rocky 9-shaped tree: sshd.service, update-ca-trust, the extracted
    /// bundle and directory-hash.
    pub(crate) fn el_tree(root: &Path) {
        touch(root, "etc/os-release", 0o644);
        std::fs::write(
            root.join("etc/os-release"),
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n",
        )
        .unwrap();
        touch(root, "usr/bin/update-ca-trust", 0o755);
        touch(root, "usr/lib/systemd/system/sshd.service", 0o644);
        touch(root, "usr/lib/systemd/system/munge.service", 0o644);
        std::fs::create_dir_all(root.join("etc/pki/ca-trust/extracted/pem/directory-hash"))
            .unwrap();
        std::fs::create_dir_all(root.join("etc/pki/ca-trust/source/anchors")).unwrap();
    }

    #[test]
    fn debian_shaped_tree() {
        let d = tempfile::tempdir().unwrap();
        debian_tree(d.path());
        let os = NodeOs::detect(d.path());
        assert_eq!((os.family, os.id.as_str()), (Family::Debian, "debian"));
        assert_eq!(os.service_unit("ssh"), "ssh.service");
        assert_eq!(os.service_unit("sshd"), "ssh.service");
        assert_eq!(os.service_unit("sshd.service"), "ssh.service");
        assert_eq!(os.service_unit("munge"), "munge.service");
        // Not in the tree: kept as given, for systemctl to refuse.
        assert_eq!(os.service_unit("slurmd"), "slurmd.service");
        assert_eq!(os.service_unit("ssh.socket"), "ssh.socket");
        let t = os.trust();
        assert_eq!(t.bundle, Path::new("/etc/ssl/certs/ca-certificates.crt"));
        assert_eq!(t.hashed.as_deref(), Some(Path::new("/etc/ssl/certs")));
        assert_eq!(t.refresh, "update-ca-certificates");
        assert_eq!(
            os.command("update-ca-certificates").as_deref(),
            Some(Path::new("/usr/sbin/update-ca-certificates"))
        );
        assert_eq!(os.command("update-ca-trust"), None);
    }

    #[test]
    fn el_shaped_tree() {
        let d = tempfile::tempdir().unwrap();
        el_tree(d.path());
        let os = NodeOs::detect(d.path());
        assert_eq!((os.family, os.id.as_str()), (Family::RedHat, "rocky"));
        assert_eq!(os.id_like, ["rhel", "centos", "fedora"]);
        assert_eq!(os.service_unit("ssh"), "sshd.service");
        assert_eq!(os.service_unit("sshd"), "sshd.service");
        assert_eq!(os.service_unit("ssh.service"), "sshd.service");
        let t = os.trust();
        assert_eq!(
            t.bundle,
            Path::new("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
        );
        assert_eq!(
            t.hashed.as_deref(),
            Some(Path::new("/etc/pki/ca-trust/extracted/pem/directory-hash"))
        );
        assert_eq!(t.anchors, Path::new("/etc/pki/ca-trust/source/anchors"));
        assert_eq!(t.refresh, "update-ca-trust");
        // EL 8: no directory-hash extracted.
        std::fs::remove_dir(
            d.path()
                .join("etc/pki/ca-trust/extracted/pem/directory-hash"),
        )
        .unwrap();
        assert_eq!(NodeOs::detect(d.path()).trust().hashed, None);
    }

    #[test]
    fn family_from_os_release_when_no_tool_is_found() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "ID=almalinux\nID_LIKE='rhel centos fedora'\n",
        )
        .unwrap();
        assert_eq!(NodeOs::detect(d.path()).family, Family::RedHat);
        std::fs::write(
            d.path().join("etc/os-release"),
            "ID=ubuntu\nID_LIKE=debian\n",
        )
        .unwrap();
        assert_eq!(NodeOs::detect(d.path()).family, Family::Debian);
        // A tool that is not executable does not count; nothing at all: unknown.
        std::fs::remove_file(d.path().join("etc/os-release")).unwrap();
        touch(d.path(), "usr/bin/update-ca-trust", 0o644);
        let os = NodeOs::detect(d.path());
        assert_eq!((os.family, os.id.as_str()), (Family::Unknown, ""));
        assert_eq!(os.service_unit("ssh"), "ssh.service");
    }
}
