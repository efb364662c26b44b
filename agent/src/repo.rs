//! The native provision path, first pieces: the deploy key read from the
//! key partition, and the postscripts repository cloned over SSH with git2.
//!
//! - [`read_deploy_key`]: the key partition (`nodeboot.keydev=`, else
//!   `/dev/disk/by-partlabel/nodeboot-key`, else `/dev/disk/by-label/…`) is
//!   mounted read-only (`ro,nosuid,nodev,noexec`) on a fresh 0700 directory
//!   under /run, inside a private mount namespace of a short-lived thread;
//!   `key` is read into memory (zeroed on drop) and the partition unmounted
//!   at once, on every path. The key is never written anywhere nor logged.
//! - [`clone`]: git2 (vendored libgit2, libssh2, OpenSSL) with the key from
//!   memory; the server's host key must be in a pinned known_hosts file
//!   (unknown keys are refused, never accepted); bounded retries with
//!   backoff for network errors only; an optional ref pin.
//!
//! known_hosts: an admin's file as OpenSSH reads it (hashed names,
//! wildcards, negation, `[host]:port`, `@cert-authority` with host
//! certificates, `@revoked`; see [`crate::knownhosts`]). The key compared is
//! the one the server presents first to libssh2: a host certificate when
//! the server has one (libssh2 prefers them), else its ed25519 key for an
//! OpenSSH server with default keys, so the pinned file should hold that
//! type.
use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

use nodeboot_common::retry::{Failed, Policy, Retry};

use crate::cmdline::Cmdline;
use crate::disk::key::{find_key_partition, KEY_MAX_BYTES, KEY_NAME};
use crate::disk::{System, Tools};

/// GPT partition name and filesystem label of the key partition.
pub const KEY_LABEL: &str = "nodeboot-key";
/// Kernel command line key naming the key partition (a device path).
pub const KEYDEV_KEY: &str = "nodeboot.keydev";

/// A deploy key in memory, zeroed when dropped.
pub type DeployKey = Zeroizing<Vec<u8>>;

/// `nodeboot.keydev=` from the kernel command line, when set and non-empty.
pub fn keydev_from_cmdline(c: &Cmdline) -> Option<PathBuf> {
    c.value(KEYDEV_KEY)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The device to read the key from: `keydev` when given, else the first of
/// `<dev>/disk/by-partlabel/nodeboot-key`, `<dev>/disk/by-label/nodeboot-key`
/// that exists.
pub fn locate_key_device(keydev: Option<&Path>, sys: &System) -> Result<PathBuf> {
    if let Some(d) = keydev {
        return Ok(d.to_path_buf());
    }
    let candidates = [
        sys.dev.join("disk/by-partlabel").join(KEY_LABEL),
        sys.dev.join("disk/by-label").join(KEY_LABEL),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .or_else(|| by_partname(sys, KEY_LABEL))
        .ok_or_else(|| {
            anyhow!(
                "no key partition: neither {} nor {} exists and {KEYDEV_KEY}= is not set \
                 (nodectl format-disk --key-partition and nodectl install-key make one)",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// The partition whose GPT name is `name`, from sysfs (`PARTNAME=` in
/// `/sys/class/block/*/uevent`): the initramfs may have no udev rules for
/// the `/dev/disk/by-partlabel` links.
fn by_partname(sys: &System, name: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(sys.sys.join("class/block"))
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let mut text = String::new();
            File::open(e.path().join("uevent"))
                .ok()?
                .take(4096)
                .read_to_string(&mut text)
                .ok()?;
            let has = text
                .lines()
                .any(|l| l.strip_prefix("PARTNAME=") == Some(name));
            let dev = text.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
            (has && !dev.contains('/') && !dev.starts_with('.')).then(|| sys.dev.join(dev))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Read the deploy key from the key partition (see the module doc).
/// `keydev`: `nodeboot.keydev=` or an operator's argument; the partition is
/// checked to be a nodeboot key partition (GPT name or label) first.
pub fn read_deploy_key(keydev: Option<&Path>, sys: &System, tools: &Tools) -> Result<DeployKey> {
    let (part, key) = with_key_partition(keydev, sys, tools, false, |dir, part| {
        read_key_file(&dir.join(KEY_NAME)).with_context(|| {
            format!(
                "reading the deploy key: no usable file {KEY_NAME} on {} \
                 (nodectl install-key {} KEYFILE writes it)",
                part.display(),
                part.display()
            )
        })
    })?;
    tracing::info!(partition = %part.display(), bytes = key.len(), "deploy key read, partition unmounted");
    Ok(key)
}

/// Run `f` with the key partition mounted (read-only unless `writable`;
/// always nosuid,nodev,noexec) on a fresh 0700 directory under `sys.tmp`,
/// in the private mount namespace of a thread of its own: the mount is
/// seen by nothing else on the node (but `f` and the programs it runs) and
/// is gone when `f` returns, on every path. Returns the partition and
/// what `f` returned.
pub fn with_key_partition<T: Send>(
    keydev: Option<&Path>,
    sys: &System,
    tools: &Tools,
    writable: bool,
    f: impl FnOnce(&Path, &Path) -> Result<T> + Send,
) -> Result<(PathBuf, T)> {
    let dev = locate_key_device(keydev, sys)?;
    let part = find_key_partition(&dev, sys, tools)?;
    tracing::info!(
        partition = %part.display(),
        "mounting the key partition ({})",
        if writable { "read-write" } else { "read-only" }
    );
    let parent = sys.tmp.clone();
    let p = part.clone();
    // A thread of its own: its private mount namespace (and the mount in it)
    // disappears with it, whatever happens in between.
    let r = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("nodectl-keyread".into())
            .spawn_scoped(s, move || in_private_ns(&parent, &p, writable, f))
            .context("starting the key-reading thread")?
            .join()
            .map_err(|_| anyhow!("the key-reading thread panicked"))?
    })?;
    Ok((part, r))
}

fn in_private_ns<T>(
    parent: &Path,
    part: &Path,
    writable: bool,
    f: impl FnOnce(&Path, &Path) -> Result<T>,
) -> Result<T> {
    // SAFETY: unshare has no memory-safety preconditions; CLONE_NEWNS
    // (with the implied CLONE_FS) only affects this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("unshare(CLONE_NEWNS) for the key mount");
    }
    // Nothing mounted here propagates back to the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the key-reading mount namespace")?;
    let m = RoMount::new(parent, part, writable)?;
    let r = f(&m.dir, part);
    let u = m.finish();
    let v = r?;
    u?;
    Ok(v)
}

/// `file` into zeroizing memory: a regular file (no symlink), 1..=64 KiB.
fn read_key_file(file: &Path) -> Result<DeployKey> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?;
    if !md.is_file() {
        bail!("{} is not a regular file", file.display());
    }
    if md.len() == 0 || md.len() > KEY_MAX_BYTES {
        bail!(
            "{} has {} bytes: not a deploy key (1 B to {} KiB)",
            file.display(),
            md.len(),
            KEY_MAX_BYTES / 1024
        );
    }
    // Capacity fixed up front: no reallocation leaves copies behind.
    let mut key = Zeroizing::new(Vec::with_capacity(KEY_MAX_BYTES as usize + 1));
    (&mut f)
        .take(KEY_MAX_BYTES + 1)
        .read_to_end(&mut key)
        .with_context(|| format!("reading {}", file.display()))?;
    if key.is_empty() || key.len() as u64 > KEY_MAX_BYTES {
        bail!("{} changed size while read", file.display());
    }
    Ok(key)
}

/// The key partition mounted read-only on a fresh 0700 directory; unmounted
/// and the directory removed on drop (every path, errors included).
struct RoMount {
    dir: PathBuf,
    mounted: bool,
}

impl RoMount {
    fn new(parent: &Path, part: &Path, writable: bool) -> Result<RoMount> {
        let mut rnd = [0u8; 8];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut rnd))
            .context("reading /dev/urandom")?;
        let dir = parent.join(format!("nodectl-keyread.{}", hex::encode(rnd)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making the private directory {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        let mut g = RoMount {
            dir,
            mounted: false,
        };
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if !writable {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(Some(part), &g.dir, Some("ext4"), flags, None::<&str>).with_context(|| {
            format!(
                "mounting {} (ext4, {},nosuid,nodev,noexec) on {}",
                part.display(),
                if writable { "rw" } else { "ro" },
                g.dir.display()
            )
        })?;
        g.mounted = true;
        Ok(g)
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        if let Err(e) = umount2(&self.dir, MntFlags::empty()) {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
            bail!("unmounting {}: {e} (detached lazily)", self.dir.display());
        }
        Ok(())
    }

    /// Unmount now, reporting a failure (drop only logs).
    fn finish(mut self) -> Result<()> {
        let r = self.unmount();
        let _ = std::fs::remove_dir(&self.dir);
        r
    }
}

impl Drop for RoMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            tracing::warn!("{e:#}");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

// ---------------------------------------------------------------- clone

/// Bounded retries with exponential backoff (network errors only), and the
/// bounds of each attempt.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// TCP connect bound of an attempt (a host that drops packets).
    pub connect_timeout: Duration,
    /// Bound of each blocking SSH read or write (a server that accepts and
    /// then says nothing).
    pub io_timeout: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// libgit2's socket timeouts are process-wide settings: set them under a
/// lock, and only when they change, so a clone in flight never sees a write
/// (nodectl runs one clone at a time; tests use one set of values).
fn set_timeouts(connect: Duration, io: Duration) -> Result<(), git2::Error> {
    static LAST: std::sync::Mutex<Option<(Duration, Duration)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if *last == Some((connect, io)) {
        return Ok(());
    }
    let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: libgit2 stores two ints; the lock above and the value check
    // keep this from racing with another set, and callers share one value.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(ms(io))?;
    }
    *last = Some((connect, io));
    Ok(())
}

/// Why a clone failed; callers match on it (status, retry policy).
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error(
        "{url}: host key of {host} is not in {pinned}: the server offered {key_type} \
         {fingerprint}{detail}; refused (pin it if it is right)"
    )]
    UnknownHostKey {
        url: String,
        host: String,
        key_type: String,
        fingerprint: String,
        /// What was pinned: the known_hosts file and/or the fingerprints.
        pinned: String,
        /// Why a host certificate the server presented was not accepted
        /// (" (…)"), else empty.
        detail: String,
    },
    #[error("{url}: host key of {host} ({key_type} {fingerprint}) is marked @revoked in {pinned}")]
    RevokedHostKey {
        url: String,
        host: String,
        key_type: String,
        fingerprint: String,
        pinned: String,
    },
    #[error(
        "{url}: the server refused the deploy key for user {user} (is its public half in \
         the server's authorized_keys?): {detail}"
    )]
    Auth {
        url: String,
        user: String,
        detail: String,
    },
    #[error("{url}: git server unreachable after {attempts} attempts in {elapsed:?}: {last}")]
    Network {
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    #[error("{url}: ref {pin:?} is neither a branch, a tag nor a commit of the repository")]
    RefNotFound { url: String, pin: String },
    #[error("{url}: {detail}")]
    Other { url: String, detail: String },
}

/// What was cloned.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cloned {
    pub url: String,
    pub dest: PathBuf,
    /// The commit checked out.
    pub commit: String,
    pub attempts: u32,
}

/// host and port of an SSH URL: `ssh://[user@]host[:port]/path` or
/// `[user@]host:path`. Also the user (default `git`).
pub fn ssh_target(url: &str) -> Result<(String, String, u16)> {
    let (userhost, port) = if let Some(rest) = url.strip_prefix("ssh://") {
        let auth = rest.split('/').next().unwrap_or("");
        let (uh, port) = match auth.rsplit_once(':') {
            Some((uh, p)) if !uh.ends_with(']') || auth.starts_with('[') => {
                let port: u16 = p.parse().map_err(|_| anyhow!("{url}: bad port {p:?}"))?;
                (uh, port)
            }
            _ => (auth, 22),
        };
        (uh.to_string(), port)
    } else if url.contains("://") {
        bail!("{url}: only ssh:// or user@host:path URLs are supported");
    } else {
        let (uh, _) = url
            .split_once(':')
            .ok_or_else(|| anyhow!("{url}: not an SSH URL (ssh://user@host/path)"))?;
        (uh.to_string(), 22)
    };
    let (user, host) = match userhost.rsplit_once('@') {
        Some((u, h)) => (u.to_string(), h.to_string()),
        None => ("git".to_string(), userhost),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        bail!("{url}: no host");
    }
    Ok((user, host, port))
}

/// Standard base64 (with padding): known_hosts and fingerprints.
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// OpenSSH's `SHA256:…` fingerprint of a key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        b64(&Sha256::digest(blob)).trim_end_matches('=')
    )
}

pub use crate::knownhosts::HostKeyVerdict;

/// Check `blob` (the server's raw key or certificate) for `host`:`port`
/// against the text of a known_hosts file (see [`crate::knownhosts`]). No
/// I/O; never panics (the fuzz entry point, `known_hosts`).
pub fn check_known_hosts(text: &str, host: &str, port: u16, blob: &[u8]) -> HostKeyVerdict {
    crate::knownhosts::check(text, host, port, blob, unix_now()).verdict
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Largest known_hosts file read (an admin's with thousands of hosts is
/// well under this).
const KNOWN_HOSTS_MAX: u64 = 16 * 1024 * 1024;

/// Clone `url` into `dest` (created 0700; must be absent or empty) with the
/// deploy key `key` (an OpenSSH private key, in memory), checking the
/// server's host key against `known_hosts`. `ref_pin`: a branch, tag or
/// commit to check out (detached) instead of the remote's HEAD.
// CloneError is large (a refused host key names url, host, key, pins and
// why a certificate failed); it is returned once per clone, never in a loop.
#[allow(clippy::result_large_err)]
pub fn clone(
    url: &str,
    ref_pin: Option<&str>,
    key: &[u8],
    known_hosts: &Path,
    dest: &Path,
    retries: Retries,
) -> Result<Cloned, CloneError> {
    let pins = HostKeys {
        known_hosts: Some(known_hosts.to_path_buf()),
        fingerprints: Vec::new(),
    };
    clone_pinned(url, ref_pin, key, &pins, dest, retries)
}

/// The server keys a clone trusts: a known_hosts file and/or `SHA256:…`
/// fingerprints (as `ssh-keygen -lf` prints them; `nodeboot.postscripts.hostkey=`).
#[derive(Debug, Clone, Default)]
pub struct HostKeys {
    pub known_hosts: Option<PathBuf>,
    pub fingerprints: Vec<String>,
}

impl HostKeys {
    fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(k) = &self.known_hosts {
            v.push(k.display().to_string());
        }
        if !self.fingerprints.is_empty() {
            v.push(format!(
                "the pinned fingerprints {}",
                self.fingerprints.join(", ")
            ));
        }
        if v.is_empty() {
            "nothing pinned".into()
        } else {
            v.join(" or ")
        }
    }
}

/// [`clone`] with the host keys given as [`HostKeys`]; with nothing pinned
/// every server is refused.
// CloneError is large (a refused host key names url, host, key, pins and
// why a certificate failed); it is returned once per clone, never in a loop.
#[allow(clippy::result_large_err)]
pub fn clone_pinned(
    url: &str,
    ref_pin: Option<&str>,
    key: &[u8],
    pins: &HostKeys,
    dest: &Path,
    retries: Retries,
) -> Result<Cloned, CloneError> {
    let other = |detail: String| CloneError::Other {
        url: url.to_string(),
        detail,
    };
    let (user, host, port) = ssh_target(url).map_err(|e| other(format!("{e:#}")))?;
    let known = match &pins.known_hosts {
        Some(k) => {
            let mut text = String::new();
            File::open(k)
                .and_then(|f| f.take(KNOWN_HOSTS_MAX + 1).read_to_string(&mut text))
                .map_err(|e| {
                    other(format!(
                        "reading the pinned known_hosts {}: {e}",
                        k.display()
                    ))
                })?;
            if text.len() as u64 > KNOWN_HOSTS_MAX {
                return Err(other(format!(
                    "the pinned known_hosts {} is larger than {} MiB",
                    k.display(),
                    KNOWN_HOSTS_MAX >> 20
                )));
            }
            text
        }
        None => String::new(),
    };
    for f in &pins.fingerprints {
        if !f.starts_with("SHA256:") || f.len() != 50 {
            return Err(other(format!(
                "host key fingerprint {f:?}: not an OpenSSH SHA256 fingerprint \
                 (SHA256: and 43 base64 characters, as `ssh-keygen -lf` prints it)"
            )));
        }
    }
    let key = std::str::from_utf8(key)
        .map_err(|_| other("the deploy key is not text (an OpenSSH private key)".into()))?;
    set_timeouts(retries.connect_timeout, retries.io_timeout)
        .map_err(|e| other(format!("setting libgit2's timeouts: {}", e.message())))?;
    let attempts = retries.attempts.max(1);
    let mut retry = Retry::new(Policy::attempts(
        attempts,
        retries.first_delay,
        retries.max_delay,
    ));
    let what = format!("cloning {url}");
    let r = retry.run(
        &what,
        |a| {
            prepare_dest(dest).map_err(|e| Attempt::Fatal(Box::new(other(format!("{e:#}")))))?;
            tracing::info!(%url, attempt = a.number, attempts, "cloning the postscripts repository");
            let r = clone_once(url, &user, &host, port, key, &known, pins, dest).and_then(|repo| {
                checkout_pin(&repo, url, ref_pin).map_err(|e| Attempt::Fatal(Box::new(e)))
            });
            if r.is_err() {
                let _ = clear_dir(dest);
            }
            r
        },
        |e| matches!(e, Attempt::Network(_)).into(),
    );
    match r {
        Ok(commit) => {
            tracing::info!(%url, %commit, dest = %dest.display(), "cloned");
            Ok(Cloned {
                url: url.to_string(),
                dest: dest.to_path_buf(),
                commit,
                attempts: retry.attempts(),
            })
        }
        Err(Failed::Fatal(Attempt::Fatal(e))) => Err(*e),
        Err(
            Failed::Fatal(Attempt::Network(last))
            | Failed::GaveUp {
                last: Attempt::Network(last),
                ..
            },
        ) => Err(CloneError::Network {
            url: url.to_string(),
            attempts: retry.attempts(),
            elapsed: retry.elapsed(),
            last,
        }),
        Err(Failed::GaveUp {
            last: Attempt::Fatal(e),
            ..
        }) => Err(*e),
    }
}

/// A failed clone attempt: only network errors are retried.
enum Attempt {
    Fatal(Box<CloneError>),
    Network(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Fatal(e) => write!(f, "{e}"),
            Attempt::Network(m) => write!(f, "network: {m}"),
        }
    }
}

fn prepare_dest(dest: &Path) -> Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut it) => {
            if it.next().is_some() {
                bail!("{} is not empty", dest.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .with_context(|| format!("making {}", dest.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dest.display()))
}

/// Empty `dest` (keep the directory) after a failed attempt.
fn clear_dir(dest: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dest)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn clone_once(
    url: &str,
    user: &str,
    host: &str,
    port: u16,
    key: &str,
    known: &str,
    pins: &HostKeys,
    dest: &Path,
) -> Result<git2::Repository, Attempt> {
    use std::cell::RefCell;
    let rejected: RefCell<Option<CloneError>> = RefCell::new(None);
    let auth_tries = RefCell::new(0u32);
    let mut cb = git2::RemoteCallbacks::new();
    cb.certificate_check(|cert, _cb_host| {
        let Some(blob) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
            *rejected.borrow_mut() = Some(CloneError::Other {
                url: url.to_string(),
                detail: format!("{host} offered no SSH host key to check"),
            });
            return Err(git2::Error::from_str("no SSH host key to check"));
        };
        let checked = crate::knownhosts::check(known, host, port, blob, unix_now());
        let (key_type, fp) = (checked.key_type, checked.fingerprint);
        let detail = checked.note.map(|n| format!(" ({n})")).unwrap_or_default();
        let verdict = match checked.verdict {
            HostKeyVerdict::Unknown if pins.fingerprints.contains(&fp) => HostKeyVerdict::Known,
            v => v,
        };
        match verdict {
            HostKeyVerdict::Known => {
                tracing::debug!(%host, %fp, "host key matches the pinned known_hosts");
                Ok(git2::CertificateCheckStatus::CertificateOk)
            }
            v => {
                let shown = if port == 22 {
                    host.to_string()
                } else {
                    format!("[{host}]:{port}")
                };
                let (url, pinned) = (url.to_string(), pins.describe());
                *rejected.borrow_mut() = Some(if v == HostKeyVerdict::Revoked {
                    CloneError::RevokedHostKey {
                        url,
                        host: shown,
                        key_type,
                        fingerprint: fp,
                        pinned,
                    }
                } else {
                    CloneError::UnknownHostKey {
                        url,
                        host: shown,
                        key_type,
                        fingerprint: fp,
                        pinned,
                        detail,
                    }
                });
                Err(git2::Error::from_str("host key refused"))
            }
        }
    });
    cb.credentials(|_url, from_url, allowed| {
        let mut n = auth_tries.borrow_mut();
        *n += 1;
        if *n > 1 || !allowed.contains(git2::CredentialType::SSH_KEY) {
            // The first (only) key was refused: never loop on it.
            return Err(git2::Error::from_str(
                "authentication with the deploy key failed",
            ));
        }
        git2::Cred::ssh_key_from_memory(from_url.unwrap_or(user), None, key, None)
    });
    let mut fo = git2::FetchOptions::new();
    fo.remote_callbacks(cb);
    fo.download_tags(git2::AutotagOption::All);
    let r = git2::build::RepoBuilder::new()
        .fetch_options(fo)
        .clone(url, dest);
    match r {
        Ok(repo) => Ok(repo),
        Err(e) => {
            if let Some(c) = rejected.into_inner() {
                return Err(Attempt::Fatal(Box::new(c)));
            }
            let tries = auth_tries.into_inner();
            let msg = e.message().to_string();
            if tries > 1 || e.code() == git2::ErrorCode::Auth || msg.contains("authenticat") {
                return Err(Attempt::Fatal(Box::new(CloneError::Auth {
                    url: url.to_string(),
                    user: user.to_string(),
                    detail: msg,
                })));
            }
            match e.class() {
                git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssh => {
                    Err(Attempt::Network(msg))
                }
                _ => Err(Attempt::Fatal(Box::new(CloneError::Other {
                    url: url.to_string(),
                    detail: msg,
                }))),
            }
        }
    }
}

/// Check out `pin` (detached) when given; the commit id checked out.
// CloneError is large (a refused host key names url, host, key, pins and
// why a certificate failed); it is returned once per clone, never in a loop.
#[allow(clippy::result_large_err)]
fn checkout_pin(
    repo: &git2::Repository,
    url: &str,
    pin: Option<&str>,
) -> Result<String, CloneError> {
    let other = |e: git2::Error| CloneError::Other {
        url: url.to_string(),
        detail: e.message().to_string(),
    };
    let Some(pin) = pin else {
        let c = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(other)?;
        return Ok(c.id().to_string());
    };
    let candidates = [
        format!("refs/remotes/origin/{pin}"),
        format!("refs/tags/{pin}"),
        pin.to_string(),
    ];
    let commit = candidates
        .iter()
        .find_map(|spec| {
            repo.revparse_single(spec)
                .ok()
                .and_then(|o| o.peel_to_commit().ok())
        })
        .ok_or_else(|| CloneError::RefNotFound {
            url: url.to_string(),
            pin: pin.to_string(),
        })?;
    repo.checkout_tree(
        commit.as_object(),
        Some(git2::build::CheckoutBuilder::new().force()),
    )
    .map_err(other)?;
    repo.set_head_detached(commit.id()).map_err(other)?;
    Ok(commit.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls() {
        let t = |u: &str| ssh_target(u).unwrap();
        assert_eq!(
            t("ssh://git@10.0.0.1:2222/srv/post.git"),
            ("git".into(), "10.0.0.1".into(), 2222)
        );
        assert_eq!(
            t("ssh://deploy@git.example/post.git"),
            ("deploy".into(), "git.example".into(), 22)
        );
        assert_eq!(
            t("git@git.example:org/post.git"),
            ("git".into(), "git.example".into(), 22)
        );
        assert_eq!(
            t("ssh://[::1]:2200/x.git"),
            ("git".into(), "::1".into(), 2200)
        );
        assert!(ssh_target("https://git.example/x.git").is_err());
        assert!(ssh_target("ssh://git@h:notaport/x").is_err());
    }

    #[test]
    fn base64_and_fingerprint() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        // sha256("") in OpenSSH's notation
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn known_hosts_matching() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend(b"ssh-ed25519");
        blob.extend([0, 0, 0, 32]);
        blob.extend([7u8; 32]);
        let k = b64(&blob);
        let text = format!("# pinned\n[127.0.0.1]:2222,gitsrv ssh-ed25519 {k} comment\n");
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 2222, &blob),
            HostKeyVerdict::Known
        );
        // port 22 only matches the bare host name
        assert_eq!(
            check_known_hosts(&text, "127.0.0.1", 22, &blob),
            HostKeyVerdict::Unknown
        );
        assert_eq!(
            check_known_hosts(&text, "gitsrv", 22, &blob),
            HostKeyVerdict::Known
        );
        let mut other = blob.clone();
        *other.last_mut().unwrap() = 9;
        assert_eq!(
            check_known_hosts(&text, "gitsrv", 22, &other),
            HostKeyVerdict::Unknown
        );
        let revoked = format!("{text}@revoked gitsrv ssh-ed25519 {k}\n");
        assert_eq!(
            check_known_hosts(&revoked, "gitsrv", 22, &blob),
            HostKeyVerdict::Revoked
        );
        let hashed = format!("|1|abc=|def= ssh-ed25519 {k}\n");
        assert_eq!(
            check_known_hosts(&hashed, "gitsrv", 22, &blob),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn keydev_key() {
        let c = Cmdline::parse("quiet nodeboot.keydev=/dev/vdb2");
        assert_eq!(keydev_from_cmdline(&c), Some(PathBuf::from("/dev/vdb2")));
        assert_eq!(
            keydev_from_cmdline(&Cmdline::parse("nodeboot.keydev=")),
            None
        );
        assert_eq!(keydev_from_cmdline(&Cmdline::parse("quiet")), None);
    }

    #[test]
    fn locate_without_partition_names_both_links() {
        let d = tempfile::tempdir().unwrap();
        let sys = System {
            dev: d.path().into(),
            sys: d.path().join("sys"),
            ..System::default()
        };
        let e = format!("{:#}", locate_key_device(None, &sys).unwrap_err());
        assert!(e.contains("by-partlabel/nodeboot-key"), "{e}");
        assert!(e.contains("nodeboot.keydev"), "{e}");
        // No udev links (an initramfs): the GPT name from sysfs.
        for (dev, name) in [("vda1", "nodeboot-data"), ("vdb1", "nodeboot-key")] {
            let b = d.path().join("sys/class/block").join(dev);
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("uevent"), format!("MAJOR=254\nMINOR=1\nDEVNAME={dev}\nDEVTYPE=partition\nPARTN=1\nPARTNAME={name}\n")).unwrap();
        }
        assert_eq!(
            locate_key_device(None, &sys).unwrap(),
            d.path().join("vdb1")
        );
        std::fs::create_dir_all(d.path().join("disk/by-label")).unwrap();
        std::fs::write(d.path().join("disk/by-label/nodeboot-key"), "").unwrap();
        assert_eq!(
            locate_key_device(None, &sys).unwrap(),
            d.path().join("disk/by-label/nodeboot-key")
        );
    }

    #[test]
    fn key_file_limits() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("key");
        std::fs::write(&f, "").unwrap();
        assert!(format!("{:#}", read_key_file(&f).unwrap_err()).contains("not a deploy key"));
        std::fs::write(&f, "k".repeat(70_000)).unwrap();
        assert!(format!("{:#}", read_key_file(&f).unwrap_err()).contains("not a deploy key"));
        std::fs::write(&f, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        assert_eq!(read_key_file(&f).unwrap().len(), 36);
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(read_key_file(&l).is_err());
    }
}
