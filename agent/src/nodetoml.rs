//! `node.toml`: a node's site setup, applied declaratively by `nodectl
//! apply` and by `nodectl provision` from the postscripts repository:
//! mounts (a local disk by UUID, NFS), the storage layout as symlinks,
//! configuration files with their owner, group and mode, CA certificates,
//! SSH host keys, and the services to start, in order.
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
//!
//! [[file]]                     # source: relative to the repository (node.toml's directory)
//! source = "files/munge/munge.key"
//! path = "/etc/munge/munge.key"
//! owner = "munge"              # name (looked up in the node's /etc/passwd) or number
//! group = "munge"
//! mode = "0400"                # set at creation: never readable by others, not even briefly
//!
//! [[ca]]                       # PEM certificates added to the trust store
//! source = "files/certs/private-ca.pem"
//!
//! [ssh]
//! host_keys = "files/ssh"      # ssh_host_*_key (0600) and .pub (0644) into /etc/ssh
//!
//! [services]                   # started in this order by nodectl-services.service
//! start = ["munge", "sssd", "slurmd"]
//! timeout = 60                 # seconds each may take to become active
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

use nodeboot_common::retry::{Policy, Retry, Verdict};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeToml {
    #[serde(default)]
    pub mount: Vec<Mount>,
    #[serde(default)]
    pub link: Vec<Link>,
    #[serde(default)]
    pub file: Vec<File>,
    #[serde(default)]
    pub ca: Vec<Ca>,
    pub ssh: Option<Ssh>,
    pub services: Option<Services>,
}

/// A file from the repository, installed with its owner, group and mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Relative to the repository (the directory of node.toml).
    pub source: PathBuf,
    pub path: PathBuf,
    #[serde(default = "default_owner")]
    pub owner: String,
    #[serde(default = "default_owner")]
    pub group: String,
    #[serde(default = "default_file_mode")]
    pub mode: String,
}

fn default_owner() -> String {
    "root".into()
}
fn default_file_mode() -> String {
    "0644".into()
}

/// A CA certificate (PEM) for the node's trust store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ca {
    pub source: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// A directory of the repository holding `ssh_host_*_key` and `.pub`.
    pub host_keys: PathBuf,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// Units started one after the other (`.service` may be left out).
    pub start: Vec<String>,
    /// Seconds each may take to become active.
    #[serde(default = "default_service_timeout")]
    pub timeout: u64,
}

fn default_service_timeout() -> u64 {
    60
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
    parse(&text, path)
}

/// Parse and check the text of a node.toml read from `path` (named in
/// errors). No I/O; never panics (the fuzz entry point, `node_toml`).
pub fn parse(text: &str, path: &Path) -> Result<NodeToml> {
    let n: NodeToml =
        toml::from_str(text).with_context(|| format!("{}: invalid node.toml", path.display()))?;
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
            parse_mode(m)
                .with_context(|| format!("target_mode {m:?}"))
                .with_context(|| what.clone())?;
        }
    }
    for (i, f) in n.file.iter().enumerate() {
        let what = format!("{}: file #{} ({})", path.display(), i + 1, f.path.display());
        if !f.path.is_absolute() {
            bail!("{what}: `path` must be an absolute path");
        }
        check_source(&f.source).with_context(|| what.clone())?;
        parse_mode(&f.mode)
            .with_context(|| format!("mode {:?}", f.mode))
            .with_context(|| what.clone())?;
        for (k, v) in [("owner", &f.owner), ("group", &f.group)] {
            if v.is_empty() || v.contains(':') || v.contains(char::is_whitespace) {
                bail!("{what}: {k} {v:?} is not a user or group name");
            }
        }
    }
    for (i, c) in n.ca.iter().enumerate() {
        check_source(&c.source).with_context(|| format!("{}: ca #{}", path.display(), i + 1))?;
    }
    if let Some(s) = &n.ssh {
        check_source(&s.host_keys).with_context(|| format!("{}: ssh.host_keys", path.display()))?;
    }
    if let Some(s) = &n.services {
        for u in &s.start {
            if u.is_empty()
                || u.starts_with('-')
                || u.starts_with("nodectl-")
                || u.contains('/')
                || u.contains(char::is_whitespace)
            {
                bail!(
                    "{}: services.start: {u:?} is not a unit name",
                    path.display()
                );
            }
        }
        if s.timeout == 0 {
            bail!(
                "{}: services.timeout must be at least 1 (seconds)",
                path.display()
            );
        }
    }
    Ok(n)
}

/// A repository path: relative, no `..` (nothing outside the repository).
fn check_source(p: &Path) -> Result<()> {
    use std::path::Component;
    if p.as_os_str().is_empty()
        || !p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(
            "source {}: must be a path inside the repository (relative, no `..`)",
            p.display()
        );
    }
    Ok(())
}

fn parse_mode(m: &str) -> Result<u32> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|v| *v <= 0o7777 && !m.is_empty())
        .context("not an octal mode such as \"0755\", \"0400\" or \"1777\"")
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

/// The NFSv4 server of a mount (`host:/path`, `[v6]:/path`) and its port
/// (`port=` of the options, else 2049); `None` for another type or NFSv2/3
/// (whose port comes from rpcbind).
pub fn nfs_endpoint(fstype: &str, what: &str, options: &str) -> Option<(String, u16)> {
    if !fstype.starts_with("nfs") {
        return None;
    }
    let mut port = 2049;
    for o in options.split(',') {
        match o.split_once('=') {
            Some(("vers" | "nfsvers", v)) if !v.starts_with('4') => return None,
            Some(("port", p)) => port = p.parse().ok().filter(|p| *p != 0)?,
            _ => {}
        }
    }
    let (host, _) = what.rsplit_once(":/")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// What a TCP connection to `host:port` meets, in words for an error.
fn probe_tcp(host: &str, port: u16, timeout: Duration) -> String {
    use std::net::ToSocketAddrs;
    let addrs = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return format!("the NFS server's name {host}: {e}"),
    };
    let mut last = format!("{host} has no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => {
                return format!(
                "the NFS server {a} takes TCP connections: check the export path and the options"
            )
            }
            Err(e) => last = format!("a TCP connection to the NFS server {a}: {e}"),
        }
    }
    last
}

/// Apply `n` under `root` ("/" on a node), sources read from `repo`;
/// returns what was done, one line each. Services are not started here
/// (see [`Services`]): `nodectl-services.service` does it after
/// `nodectl-provision.service`, which the services are ordered after.
pub fn apply(n: &NodeToml, repo: &Path, root: &Path, mountinfo: &Path) -> Result<Vec<String>> {
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
        let at_s = at.to_string_lossy();
        let mut argv = vec!["mount", "-t", &m.fstype, "-o", &m.options, &source, &at_s];
        if m.fstype.starts_with("nfs") {
            // mount.nfs retries by itself (an export that is missing, a
            // server that refuses) and says why only when it gives up,
            // after our bound: -v prints each attempt's reason as it comes.
            argv.insert(1, "-v");
        }
        // A server that is slow to answer gets retries until `wait` (the
        // shared loop: 0.5 s doubling to 5 s).
        let mut retry = Retry::since(
            Policy::deadline(wait, Duration::from_millis(500), Duration::from_secs(5)),
            start,
        );
        // The last attempt is cut at the bound: keep the reason an earlier
        // one gave, if the last one gives none.
        let mut earlier: Option<String> = None;
        let what = format!("mounting {} on {}", m.what, at.display());
        let r = retry.run(
            &what,
            |a| {
                // Each attempt bounded by what is left of `wait` (a server
                // that accepts and never answers must not hang the boot).
                let left = a.remaining.unwrap_or_default().max(Duration::from_secs(1));
                let r = crate::cmd::run_bounded(&argv, left).and_then(|(st, tail)| {
                    if st.success() {
                        Ok(())
                    } else {
                        bail!("{} failed ({st}): {}", argv.join(" "), tail.join(" | "))
                    }
                });
                if let Err(e) = &r {
                    let said = format!("{e:#}");
                    if !said.trim_end().ends_with("was killed:") {
                        earlier = Some(said);
                    }
                }
                r
            },
            |_| Verdict::Retry,
        );
        if let Err(f) = r {
            let e = f.into_error();
            let e = match earlier.take() {
                Some(before) if format!("{e:#}").trim_end().ends_with("was killed:") => {
                    anyhow::anyhow!("{e:#} (an earlier attempt: {before})")
                }
                _ => e,
            };
            // The kernel's NFS client may hold mount(2) past our bound
            // without a word: say what a plain TCP connection to the
            // server meets.
            let e = match nfs_endpoint(&m.fstype, &m.what, &m.options) {
                Some((host, port)) => e.context(probe_tcp(&host, port, Duration::from_secs(3))),
                None => e,
            };
            return Err(e).with_context(|| {
                format!(
                    "mounting {} on {} (gave up after {}s)",
                    m.what,
                    at.display(),
                    m.wait
                )
            });
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
    let ids = Ids::read(root)?;
    for f in &n.file {
        let what = || format!("installing {} as {}", f.source.display(), f.path.display());
        let uid = ids.user(&f.owner).with_context(what)?;
        let gid = ids.group(&f.group).with_context(what)?;
        let mode = parse_mode(&f.mode).with_context(what)?;
        let src = repo_file(repo, &f.source).with_context(what)?;
        done.push(install(&src, &under(root, &f.path), uid, gid, mode).with_context(what)?);
    }
    if !n.ca.is_empty() {
        // Found, not assumed: Debian's or EL's trust store (see crate::trust).
        let store = crate::nodeos::NodeOs::detect(root).trust();
        for c in &n.ca {
            let what = || format!("adding the CA certificate {}", c.source.display());
            let src = repo_file(repo, &c.source).with_context(what)?;
            let pem = std::fs::read(&src).with_context(what)?;
            done.extend(crate::trust::add(root, &store, &c.source, &pem).with_context(what)?);
        }
    }
    if let Some(s) = &n.ssh {
        let dir = repo_path(repo, &s.host_keys)?;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("ssh.host_keys: reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("ssh_host_") && (n.ends_with("_key") || n.ends_with("_key.pub"))
            })
            .collect();
        names.sort();
        if !names.iter().any(|n| n.ends_with("_key")) {
            bail!(
                "ssh.host_keys: {} holds no ssh_host_*_key file",
                dir.display()
            );
        }
        for name in names {
            let mode = if name.ends_with(".pub") { 0o644 } else { 0o600 };
            let src = repo_file(repo, &s.host_keys.join(&name))?;
            let dest = under(root, Path::new("/etc/ssh")).join(&name);
            done.push(
                install(&src, &dest, 0, 0, mode)
                    .with_context(|| format!("installing the SSH host key {name}"))?,
            );
        }
    }
    Ok(done)
}

/// `rel` inside `repo`, refusing anything that resolves outside it.
fn repo_path(repo: &Path, rel: &Path) -> Result<PathBuf> {
    check_source(rel)?;
    let base = repo
        .canonicalize()
        .with_context(|| format!("the repository {}", repo.display()))?;
    let p = base.join(rel);
    let real = p
        .canonicalize()
        .with_context(|| format!("{} (in the repository)", rel.display()))?;
    if !real.starts_with(&base) {
        bail!(
            "{} resolves to {}, outside the repository",
            rel.display(),
            real.display()
        );
    }
    Ok(real)
}

/// A regular file of the repository.
fn repo_file(repo: &Path, rel: &Path) -> Result<PathBuf> {
    let p = repo_path(repo, rel)?;
    if !p.is_file() {
        bail!("{} is not a regular file", rel.display());
    }
    Ok(p)
}

/// Users and groups of the node (`root/etc/passwd`, `root/etc/group`).
pub(crate) struct Ids {
    users: Vec<(String, u32)>,
    groups: Vec<(String, u32)>,
}

impl Ids {
    pub(crate) fn read(root: &Path) -> Result<Ids> {
        let table = |name: &str| -> Result<Vec<(String, u32)>> {
            let p = under(root, Path::new("/etc")).join(name);
            let text = match std::fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
            };
            Ok(text
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((name.to_string(), id))
                })
                .collect())
        };
        Ok(Ids {
            users: table("passwd")?,
            groups: table("group")?,
        })
    }
    fn find(t: &[(String, u32)], name: &str, kind: &str) -> Result<u32> {
        if let Ok(n) = name.parse() {
            return Ok(n);
        }
        t.iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .with_context(|| {
                format!(
                    "no {kind} {name:?} on this node (/etc/{})",
                    if kind == "user" { "passwd" } else { "group" }
                )
            })
    }
    pub(crate) fn user(&self, name: &str) -> Result<u32> {
        Self::find(&self.users, name, "user")
    }
    pub(crate) fn group(&self, name: &str) -> Result<u32> {
        Self::find(&self.groups, name, "group")
    }
}

/// Install `src` at `dest` owned `uid:gid` with `mode`: written to a
/// temporary file created 0600 (never readable by others), chowned and
/// chmodded before a byte is written, then renamed over `dest`. A file
/// already equal in content, owner and mode is left alone.
fn install(src: &Path, dest: &Path, uid: u32, gid: u32, mode: u32) -> Result<String> {
    let data = zeroize::Zeroizing::new(
        std::fs::read(src).with_context(|| format!("reading {}", src.display()))?,
    );
    install_bytes(&data, dest, uid, gid, mode)
}

/// [`install`] of bytes held in memory (a secret fetched from bootd).
pub(crate) fn install_bytes(
    data: &[u8],
    dest: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let show = format!("{} ({:o} {uid}:{gid})", dest.display(), mode);
    match std::fs::symlink_metadata(dest) {
        Ok(md)
            if md.is_file() && md.uid() == uid && md.gid() == gid && md.mode() & 0o7777 == mode =>
        {
            let cur = zeroize::Zeroizing::new(std::fs::read(dest).unwrap_or_default());
            if cur.as_slice() == data {
                return Ok(format!("{show} already"));
            }
        }
        Ok(md) if md.is_dir() => bail!("{} is in the way (a directory)", dest.display()),
        _ => {}
    }
    let parent = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{name}.nodeboot-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let r = (|| -> Result<()> {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .with_context(|| format!("chown {uid}:{gid} {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r?;
    Ok(show)
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
                "link #1 (/a): target_mode \"999\": not an octal mode",
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
        let first = apply(&n, d.path(), &root, &mi).unwrap();
        assert_eq!(first.len(), 2, "{first:?}");
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(root.join("mnt/disk/tmp")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            std::fs::read_link(root.join("opt/cache/disk/tmp")).unwrap(),
            Path::new("/mnt/disk/tmp")
        );
        let again = apply(&n, d.path(), &root, &mi).unwrap();
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
        let e = format!("{:#}", apply(&n, d.path(), &root, &mi).unwrap_err());
        assert!(e.contains("is in the way (a directory)"), "{e}");
    }

    #[test]
    fn the_reference_repository_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../postscripts/node.toml");
        let n = load(&p).unwrap();
        assert_eq!(
            n.services.unwrap().start,
            ["munge", "sssd", "slurmd", "ssh"]
        );
        let munge = n
            .file
            .iter()
            .find(|f| f.path == Path::new("/etc/munge/munge.key"))
            .unwrap();
        assert_eq!(
            (munge.owner.as_str(), munge.mode.as_str()),
            ("munge", "0400")
        );
        assert!(n
            .link
            .iter()
            .any(|l| l.path == Path::new("/opt/cache/shared")));
    }

    /// A repo and a node root with munge in its /etc/passwd.
    fn repo_and_root() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        let root = d.path().join("root");
        std::fs::create_dir_all(repo.join("files/munge")).unwrap();
        std::fs::create_dir_all(repo.join("files/ssh")).unwrap();
        std::fs::create_dir_all(repo.join("files/certs")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nmunge:x:101:106::/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nmunge:x:106:\n").unwrap();
        std::fs::write(repo.join("files/munge/munge.key"), [7u8; 1024]).unwrap();
        std::fs::write(repo.join("files/ssh/ssh_host_ed25519_key"), "PRIVATE\n").unwrap();
        std::fs::write(
            repo.join("files/ssh/ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAA\n",
        )
        .unwrap();
        std::fs::write(repo.join("files/ssh/README.md"), "not a key\n").unwrap();
        std::fs::write(
            repo.join("files/certs/site-ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        // An EL 8-shaped trust store (no hashed directory): openssl is not
        // asked for the hash of this non-certificate (crate::trust's tests
        // use real ones, on Debian- and EL 9-shaped trees).
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/update-ca-trust"), "").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                root.join("usr/sbin/update-ca-trust"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        let mi = d.path().join("mountinfo");
        std::fs::write(&mi, "").unwrap();
        (d, repo, root, mi)
    }

    #[test]
    fn files_get_owner_group_and_mode_once() {
        use std::os::unix::fs::MetadataExt;
        let (_d, repo, root, mi) = repo_and_root();
        let toml = "[[file]]\nsource = 'files/munge/munge.key'\npath = '/etc/munge/munge.key'\n\
                    owner = 'munge'\ngroup = 'munge'\nmode = '0400'\n\
                    [[ca]]\nsource = 'files/certs/site-ca.pem'\n\
                    [ssh]\nhost_keys = 'files/ssh'\n";
        std::fs::write(repo.join("node.toml"), toml).unwrap();
        let n = load(&repo.join("node.toml")).unwrap();
        let root_user = unsafe { libc::geteuid() } == 0;
        let r = apply(&n, &repo, &root, &mi);
        if !root_user {
            // chown to munge needs root: the error names the file.
            let e = format!("{:#}", r.unwrap_err());
            assert!(
                e.contains("munge.key") && e.contains("chown 101:106"),
                "{e}"
            );
            eprintln!("SKIP (rest): chown needs root");
            return;
        }
        let done = r.unwrap();
        let md = std::fs::metadata(root.join("etc/munge/munge.key")).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o400, 101, 106));
        assert_eq!(
            std::fs::read(root.join("etc/munge/munge.key")).unwrap(),
            [7u8; 1024]
        );
        let k = std::fs::metadata(root.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
        assert_eq!(k.mode() & 0o7777, 0o600);
        let p = std::fs::metadata(root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
        assert_eq!(p.mode() & 0o7777, 0o644);
        assert!(!root.join("etc/ssh/README.md").exists());
        assert!(root
            .join("etc/pki/ca-trust/source/anchors/nodeboot-site-ca.crt")
            .is_file());
        assert!(
            done.iter()
                .any(|l| l
                    .contains("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem: site-ca added")),
            "{done:?}"
        );
        // No temporary file left behind.
        let left: Vec<_> = std::fs::read_dir(root.join("etc/munge")).unwrap().collect();
        assert_eq!(left.len(), 1);
        // Again: nothing changes.
        let again = apply(&n, &repo, &root, &mi).unwrap();
        assert!(again.iter().all(|l| l.ends_with("already")), "{again:?}");
        // A mode changed by hand is put back.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("etc/munge/munge.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        apply(&n, &repo, &root, &mi).unwrap();
        let md = std::fs::metadata(root.join("etc/munge/munge.key")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o400);
    }

    #[test]
    fn users_are_the_nodes_own_on_debian_and_el() {
        // The same names, different ids: read from the node's tree, never assumed.
        for (passwd, group, munge, slurm) in [
            (
                "munge:x:101:106::/nonexistent:/usr/sbin/nologin\nslurm:x:64030:64030::/nonexistent:/usr/sbin/nologin\n",
                "munge:x:106:\nslurm:x:64030:\n",
                (101, 106),
                (64030, 64030),
            ),
            (
                "munge:x:991:989:Runs Uid 'N' Gid Emporium:/var/run/munge:/sbin/nologin\nslurm:x:990:988:SLURM resource manager:/etc/slurm:/sbin/nologin\n",
                "munge:x:989:\nslurm:x:988:\n",
                (991, 989),
                (990, 988),
            ),
        ] {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("etc")).unwrap();
            std::fs::write(d.path().join("etc/passwd"), format!("root:x:0:0::/root:/bin/sh\n{passwd}")).unwrap();
            std::fs::write(d.path().join("etc/group"), group).unwrap();
            let ids = Ids::read(d.path()).unwrap();
            assert_eq!((ids.user("munge").unwrap(), ids.group("munge").unwrap()), munge);
            assert_eq!((ids.user("slurm").unwrap(), ids.group("slurm").unwrap()), slurm);
            let e = format!("{:#}", ids.user("slurmd").unwrap_err());
            assert!(e.contains("no user \"slurmd\" on this node"), "{e}");
        }
    }

    #[test]
    fn bad_files_sections_are_named() {
        let (_d, repo, root, mi) = repo_and_root();
        for (text, want) in [
            (
                "[[file]]\nsource='files/munge/munge.key'\npath='/etc/munge/munge.key'\nmode='0999'\n",
                "file #1 (/etc/munge/munge.key): mode \"0999\": not an octal mode",
            ),
            (
                "[[file]]\nsource='../../etc/shadow'\npath='/etc/x'\n",
                "source ../../etc/shadow: must be a path inside the repository",
            ),
            (
                "[[file]]\nsource='files/munge/munge.key'\npath='/etc/x'\nowner='munge'\nmodes='0400'\n",
                "unknown field `modes`",
            ),
            ("[services]\nstart=['munge']\ntimeout=0\n", "services.timeout must be at least 1"),
            ("[services]\nstart=['../x']\n", "is not a unit name"),
            ("[services]\nstart=['--force']\n", "is not a unit name"),
            ("[services]\nstart=['nodectl-services']\n", "is not a unit name"),
        ] {
            std::fs::write(repo.join("node.toml"), text).unwrap();
            let e = format!("{:#}", load(&repo.join("node.toml")).unwrap_err());
            assert!(e.contains("node.toml") && e.contains(want), "{e}\nwanted: {want}");
        }
        // Errors found when applying: an unknown user, a file that is not
        // there, a symlink out of the repository, a CA that is not PEM, no
        // host keys. Nothing is installed by the failing entry.
        std::os::unix::fs::symlink("/etc/hostname", repo.join("files/escape")).unwrap();
        std::fs::write(repo.join("files/certs/bad.pem"), "not a cert").unwrap();
        std::fs::create_dir_all(repo.join("files/nokeys")).unwrap();
        for (text, want) in [
            (
                "[[file]]\nsource='files/munge/munge.key'\npath='/etc/munge/munge.key'\nowner='slurm'\n",
                "no user \"slurm\" on this node (/etc/passwd)",
            ),
            (
                "[[file]]\nsource='files/munge/absent.key'\npath='/etc/munge/munge.key'\n",
                "files/munge/absent.key (in the repository): No such file",
            ),
            (
                "[[file]]\nsource='files/escape'\npath='/etc/x'\n",
                "files/escape resolves to /etc/hostname, outside the repository",
            ),
            (
                "[[ca]]\nsource='files/certs/bad.pem'\n",
                "holds no PEM certificate",
            ),
            ("[ssh]\nhost_keys='files/nokeys'\n", "holds no ssh_host_*_key file"),
        ] {
            std::fs::write(repo.join("node.toml"), text).unwrap();
            let n = load(&repo.join("node.toml")).unwrap();
            let e = format!("{:#}", apply(&n, &repo, &root, &mi).unwrap_err());
            assert!(e.contains(want), "{e}\nwanted: {want}");
            assert!(!root.join("etc/munge/munge.key").exists());
            assert!(!root.join("etc/x").exists());
        }
    }

    #[test]
    fn nfs_endpoints_and_the_probe() {
        let e = |t, w, o| nfs_endpoint(t, w, o);
        assert_eq!(
            e("nfs", "10.0.2.2:/srv/cluster", "vers=4.2,hard"),
            Some(("10.0.2.2".into(), 2049))
        );
        assert_eq!(
            e("nfs4", "nfs.example.com:/x", "port=3049"),
            Some(("nfs.example.com".into(), 3049))
        );
        assert_eq!(
            e("nfs", "[fd00::1]:/x", "defaults"),
            Some(("fd00::1".into(), 2049))
        );
        assert_eq!(e("nfs", "10.0.2.2:/x", "vers=3"), None);
        assert_eq!(e("xfs", "UUID=abc", "defaults"), None);
        // Nothing listens on a port just freed: refused, named.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let said = probe_tcp("127.0.0.1", port, Duration::from_secs(1));
        assert!(
            said.starts_with(&format!(
                "a TCP connection to the NFS server 127.0.0.1:{port}: Connection refused"
            )),
            "{said}"
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            probe_tcp("127.0.0.1", port, Duration::from_secs(1)),
            format!("the NFS server 127.0.0.1:{port} takes TCP connections: check the export path and the options")
        );
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
        let e = format!("{:#}", apply(&n, d.path(), d.path(), &mi).unwrap_err());
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
        let first = apply(&n, d.path(), &root, mi).unwrap();
        let at = root.join("mnt/t");
        let again = apply(&n, d.path(), &root, mi);
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
