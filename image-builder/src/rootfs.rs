//! `nodeimg rootfs debian`: the demo/test node root (debootstrap, cached).
//!
//! Two steps:
//! 1. the *base* tree: debootstrap (minbase + the package list), then the
//!    kernel and dracut installed with apt inside it; cached as
//!    `CACHE/rootfs-<key>` (the key hashes the suite, the package lists and
//!    [`FORMAT`]), built in `…​.tmp` and renamed when complete; the .debs are
//!    kept in `CACHE/debs` so a rebuild downloads nothing;
//! 2. the node root: a copy of the base with our packages installed
//!    (`--deb`: nodeboot-nodectl brings nodectl, the dracut module and the
//!    units), made stateless (no hostname, empty machine-id) and without
//!    build-time secrets.
use crate::chroot;
use anyhow::{bail, Context, Result};
use nodeboot_common::cmd;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Bump when the way the base tree is made changes (not its package lists,
/// which are part of the key anyway): old cached trees are then rebuilt.
pub const FORMAT: u32 = 1;

/// What debootstrap installs (`--include`) by default: the node's services
/// and the tools an operator expects on a node.
pub const DEFAULT_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "iproute2",
    "procps",
    "iputils-ping",
    "less",
    "ca-certificates",
    "zstd",
    "openssh-server",
    "munge",
    "sssd",
    "slurmd",
    "nfs-common",
    "xfsprogs",
    "btrfs-progs",
    "tpm2-tools", // nodectl's node key sealed in the TPM (issue 13)
    "ldap-utils", // ldapwhoami: nodectl checks sssd's directory with sssd's own libldap
    // /etc/ldap/ldap.conf (TLS_CACERT = the system bundle): without it
    // Debian's libldap (GnuTLS) trusts no CA, and sssd cannot use ldaps://.
    "libldap-common",
];

/// Installed with apt inside the tree after debootstrap (`--no-install-recommends`):
/// the kernel and dracut live in the image so that the initramfs is built
/// against exactly the modules the node boots.
pub const KERNEL_PACKAGES: &[&str] = &["linux-image-amd64", "dracut", "dracut-core"];

/// Services whose configuration and keys come from provisioning on the node
/// (munge.key, sssd.conf, slurm.conf, SSH host keys): disabled in the image,
/// started by the provisioning step once their files are there.
const PROVISIONED_SERVICES: &[&str] = &[
    "munge.service",
    "sssd.service",
    "slurmd.service",
    "ssh.service",
];

/// Build-time secrets the package scripts generated: every node gets its own
/// (or the site's) from provisioning, never the image's.
const SECRETS: &[&str] = &["etc/munge/munge.key"];

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Debian via debootstrap (minbase + packages), the kernel and dracut,
    /// our packages (--deb: nodeboot-nodectl); the base tree is cached. Needs root.
    Debian(Debian),
}

#[derive(clap::Args, Debug)]
pub struct Debian {
    /// The node root to make (a directory that must not exist yet, unless --force).
    #[arg(short, long, required_unless_present = "print_key")]
    pub output: Option<PathBuf>,
    /// Cache of the base trees and the downloaded .debs.
    /// [default: $NODEBOOT_CACHE, else /var/cache/nodeboot]
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Debian suite.
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// Packages debootstrap installs, comma-separated; replaces the default
    /// list: systemd, systemd-sysv, udev, kmod, dbus, iproute2, procps,
    /// iputils-ping, less, ca-certificates, zstd, openssh-server, munge, sssd,
    /// slurmd, nfs-common, xfsprogs, btrfs-progs, tpm2-tools, ldap-utils, libldap-common.
    /// The kernel and dracut (linux-image-amd64,
    /// dracut, dracut-core) are always installed, with apt in the tree.
    #[arg(long, value_delimiter = ',')]
    pub packages: Option<Vec<String>>,
    /// Packages added to the list (default or --packages), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub extra_packages: Vec<String>,
    /// Debian mirror URL. [default: the first one in this machine's /etc/apt sources]
    #[arg(long)]
    pub mirror: Option<String>,
    /// A .deb installed into the node root with dpkg -i (repeatable), e.g.
    /// the nodeboot-nodectl package: nodectl, the dracut module 90nodeboot
    /// that nodeimg initramfs then uses, the node's units (enabled). Its
    /// dependencies must be in the tree (the default list has them).
    #[arg(long = "deb", value_name = "FILE")]
    pub debs: Vec<PathBuf>,
    /// nodectl binary installed as /usr/bin/nodectl (mode 0755), after --deb.
    #[arg(long)]
    pub nodectl: Option<PathBuf>,
    /// Directory of systemd units: every *.service there is installed in
    /// /etc/systemd/system and enabled.
    #[arg(long)]
    pub units: Option<PathBuf>,
    /// Empty root's password (login without one, e.g. on a test VM's serial console).
    #[arg(long)]
    pub empty_root_password: bool,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the base tree's cache key (suite, package lists, format) and exit.
    #[arg(long)]
    pub print_key: bool,
}

impl Debian {
    /// The debootstrap `--include` list: (default or --packages) + --extra-packages,
    /// sorted and without duplicates.
    pub fn include(&self) -> Vec<String> {
        let mut v: Vec<String> = match &self.packages {
            Some(p) => p.clone(),
            None => DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect(),
        };
        v.extend(self.extra_packages.iter().cloned());
        v.retain(|p| !p.trim().is_empty());
        v.iter_mut().for_each(|p| *p = p.trim().to_string());
        v.sort();
        v.dedup();
        v
    }

    fn cache(&self) -> PathBuf {
        self.cache
            .clone()
            .or_else(|| std::env::var_os("NODEBOOT_CACHE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/cache/nodeboot"))
    }
}

/// The cache key of a base tree: the suite, both package lists and [`FORMAT`].
pub fn base_key(suite: &str, include: &[String], apt: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(format!("nodeimg rootfs debian format {FORMAT}\n"));
    h.update(format!("suite {suite}\n"));
    h.update(format!("include {}\n", include.join(",")));
    h.update(format!("apt {}\n", apt.join(",")));
    hex::encode(h.finalize())[..16].to_string()
}

pub fn run(w: &What) -> Result<()> {
    match w {
        What::Debian(d) => debian(d),
    }
}

fn debian(d: &Debian) -> Result<()> {
    let include = d.include();
    if include.is_empty() {
        bail!("--packages: the package list is empty");
    }
    let key = base_key(&d.suite, &include, KERNEL_PACKAGES);
    if d.print_key {
        println!("{key}");
        return Ok(());
    }
    let out = d.output.as_ref().context("--output is required")?;
    // Inputs first: a typo should not cost a debootstrap.
    if let Some(n) = &d.nodectl {
        check_executable(n)?;
    }
    for deb in &d.debs {
        check_deb(deb)?;
    }
    let units = match &d.units {
        Some(u) => service_units(u)?,
        None => Vec::new(),
    };
    if out.exists() && !d.force {
        bail!("output {} exists; remove it or pass --force", out.display());
    }
    let cache = std::path::absolute(d.cache())
        .with_context(|| format!("resolving {}", d.cache().display()))?;
    let mirror = match &d.mirror {
        Some(m) => m.clone(),
        None => apt_mirror(Path::new("/etc/apt"))?,
    };
    // The lock stays held while the base is copied: no other run replaces it meanwhile.
    let (base, _lock) = base_tree(&cache, &key, &d.suite, &include, &mirror)?;
    node_root(&base, out, d, &units)
}

/// The cache's lock, held by whoever builds or reads a base tree.
type CacheLock = nix::fcntl::Flock<std::fs::File>;

/// Build (or reuse) `CACHE/rootfs-<key>`; returns its path and the cache's lock.
fn base_tree(
    cache: &Path,
    key: &str,
    suite: &str,
    include: &[String],
    mirror: &str,
) -> Result<(PathBuf, CacheLock)> {
    std::fs::create_dir_all(cache.join("debs"))
        .with_context(|| format!("making {}", cache.join("debs").display()))?;
    // One builder at a time per cache.
    let lockf = std::fs::File::create(cache.join("rootfs.lock"))
        .with_context(|| format!("creating {}", cache.join("rootfs.lock").display()))?;
    use nix::fcntl::{Flock, FlockArg};
    let lock = match Flock::lock(lockf, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!("waiting for another nodeimg using {}", cache.display());
            Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e)
        }
        Err((_, e)) => Err(e),
    }
    .with_context(|| format!("locking {}", cache.join("rootfs.lock").display()))?;

    let root = cache.join(format!("rootfs-{key}"));
    if root.is_dir() {
        tracing::info!("base tree {} (cached)", root.display());
        return Ok((root, lock));
    }
    let tmp = cache.join(format!("rootfs-{key}.tmp"));
    chroot::remove_tree(&tmp)?;
    let t = std::time::Instant::now();
    tracing::info!(
        "debootstrap {suite} into {} (mirror {mirror}, {} packages)",
        tmp.display(),
        include.len()
    );
    let mut argv: Vec<OsString> = vec![
        "debootstrap".into(),
        "--variant=minbase".into(),
        format!("--include={}", include.join(",")).into(),
    ];
    argv.push(format!("--cache-dir={}", cache.join("debs").display()).into());
    argv.extend([suite.into(), tmp.clone().into(), mirror.into()]);
    cmd::run_streaming(&argv)?;
    tracing::info!("debootstrap done in {:.0}s", t.elapsed().as_secs_f64());

    apt_install(&tmp, &cache.join("debs"), KERNEL_PACKAGES)?;
    // The image builder runs dracut itself (nodeimg initramfs); an initrd
    // made by Debian's kernel hook would only be dead weight.
    remove_glob(&tmp.join("boot"), "initrd.img-")?;

    std::fs::rename(&tmp, &root)
        .with_context(|| format!("renaming {} to {}", tmp.display(), root.display()))?;
    tracing::info!(
        "base tree {} built in {:.0}s",
        root.display(),
        t.elapsed().as_secs_f64()
    );
    // Other keys are stale: the cache keeps one tree.
    for e in std::fs::read_dir(cache).with_context(|| format!("listing {}", cache.display()))? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("rootfs-") && p.is_dir() && p != root {
            tracing::info!("removing stale {}", p.display());
            chroot::remove_tree(&p)?;
        }
    }
    Ok((root, lock))
}

/// `apt-get install --no-install-recommends pkgs` inside `root`, reusing and
/// refilling the .deb cache `debs`; services are kept from starting
/// (policy-rc.d) and the kernel hook makes no initrd (INITRD=No).
fn apt_install(root: &Path, debs: &Path, pkgs: &[&str]) -> Result<()> {
    let archives = root.join("var/cache/apt/archives");
    std::fs::create_dir_all(&archives).with_context(|| format!("making {}", archives.display()))?;
    let copied = link_debs(debs, &archives)?;
    tracing::info!(
        "apt-get install {} ({copied} .debs from the cache)",
        pkgs.join(" ")
    );
    let policy = NoServices::new(root)?;
    {
        let _mounts = chroot::Mounts::new(root)?;
        let mut argv: Vec<&str> = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "INITRD=No",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ];
        argv.extend(pkgs);
        chroot::run_in(root, &argv)?;
        let n = link_debs(&archives, debs)?;
        tracing::info!("{n} new .debs kept in {}", debs.display());
        chroot::run_in(root, &["apt-get", "clean"])?;
    }
    policy.remove()
}

/// `usr/sbin/policy-rc.d` refusing every start while packages are installed
/// in a tree; [`NoServices::remove`] takes it away (so does drop, on errors).
struct NoServices(PathBuf);

impl NoServices {
    fn new(root: &Path) -> Result<NoServices> {
        let policy = root.join("usr/sbin/policy-rc.d");
        std::fs::write(
            &policy,
            "#!/bin/sh\n# nodeimg: no service starts while the image is built.\nexit 101\n",
        )
        .with_context(|| format!("writing {}", policy.display()))?;
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", policy.display()))?;
        Ok(NoServices(policy))
    }

    fn remove(self) -> Result<()> {
        let r =
            std::fs::remove_file(&self.0).with_context(|| format!("removing {}", self.0.display()));
        std::mem::forget(self);
        r
    }
}

impl Drop for NoServices {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `dpkg -i` the `debs` inside `root` (copied to its /tmp for the run, no
/// service started); their dependencies must already be in the tree.
fn install_debs(root: &Path, debs: &[PathBuf]) -> Result<()> {
    if debs.is_empty() {
        return Ok(());
    }
    let dir = root.join("tmp/nodeimg-debs");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let mut argv: Vec<OsString> = vec![
        "env".into(),
        "DEBIAN_FRONTEND=noninteractive".into(),
        "dpkg".into(),
        "-i".into(),
    ];
    for deb in debs {
        let name = deb
            .file_name()
            .with_context(|| format!("{}: no file name", deb.display()))?;
        std::fs::copy(deb, dir.join(name))
            .with_context(|| format!("copying {} into {}", deb.display(), dir.display()))?;
        argv.push(Path::new("/tmp/nodeimg-debs").join(name).into());
    }
    let policy = NoServices::new(root)?;
    {
        let _mounts = chroot::Mounts::new(root)?;
        chroot::run_in(root, &argv).with_context(|| {
            format!(
                "installing {} in {}",
                debs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                root.display()
            )
        })?;
    }
    policy.remove()?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    tracing::info!("installed {} package(s) with dpkg", debs.len());
    Ok(())
}

/// Hard-link (or copy) the `*.deb` of `from` missing in `to`; returns how many.
fn link_debs(from: &Path, to: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "deb") || !p.is_file() {
            continue;
        }
        let dst = to.join(p.file_name().unwrap_or_default());
        if dst.exists() {
            continue;
        }
        if std::fs::hard_link(&p, &dst).is_err() {
            std::fs::copy(&p, &dst)
                .with_context(|| format!("copying {} to {}", p.display(), dst.display()))?;
        }
        n += 1;
    }
    Ok(n)
}

/// Remove the files of `dir` whose name starts with `prefix`.
fn remove_glob(dir: &Path, prefix: &str) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// The first Debian mirror of this machine's apt configuration (deb822
/// `URIs:` in sources.list.d/*.sources, else a `deb` line of sources.list).
pub fn apt_mirror(etc_apt: &Path) -> Result<String> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    sources.sort();
    // debian.sources first: that is where Debian's installer puts the mirror.
    sources.sort_by_key(|p| p.file_name().is_none_or(|n| n != "debian.sources"));
    for p in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
    {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        for l in text.lines() {
            if let Some(rest) = l.trim().strip_prefix("URIs:") {
                if let Some(u) = rest.split_whitespace().next() {
                    return Ok(u.to_string());
                }
            }
        }
    }
    let list = etc_apt.join("sources.list");
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("deb") {
            continue;
        }
        // Skip an options block `[arch=… signed-by=…]`.
        let mut u = w.next();
        if u.is_some_and(|s| s.starts_with('[')) {
            u = w.find(|s| s.ends_with(']')).and_then(|_| w.next());
        }
        if let Some(u) = u {
            return Ok(u.to_string());
        }
    }
    bail!(
        "no Debian mirror in {} (sources.list.d/*.sources or sources.list); pass --mirror",
        etc_apt.display()
    )
}

fn check_deb(p: &Path) -> Result<()> {
    use std::io::Read;
    let mut magic = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(8).read_to_end(&mut magic))
        .with_context(|| format!("--deb {}", p.display()))?;
    if magic != b"!<arch>\n" {
        bail!(
            "--deb {}: not a Debian package (no ar archive)",
            p.display()
        );
    }
    Ok(())
}

fn check_executable(p: &Path) -> Result<()> {
    let md = std::fs::metadata(p).with_context(|| format!("nodectl {}", p.display()))?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        bail!("nodectl {}: not an executable file", p.display());
    }
    Ok(())
}

/// The `*.service` files of `dir`, sorted.
pub fn service_units(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("units directory {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "service") && p.is_file())
        .collect();
    v.sort();
    if v.is_empty() {
        tracing::warn!("no *.service in {}", dir.display());
    }
    Ok(v)
}

/// The node root `out`: a copy of `base`, customised; made as `out.tmp` and
/// renamed at the end.
fn node_root(base: &Path, out: &Path, d: &Debian, units: &[PathBuf]) -> Result<()> {
    let t = std::time::Instant::now();
    let name = out
        .file_name()
        .with_context(|| format!("output {}: no file name", out.display()))?;
    let tmp = out.with_file_name(format!("{}.tmp", name.to_string_lossy()));
    chroot::remove_tree(&tmp)?;
    if let Some(parent) = tmp.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
    }
    cmd::run(&[
        OsString::from("cp"),
        "-a".into(),
        "--reflink=auto".into(),
        "--no-target-directory".into(),
        base.into(),
        tmp.clone().into(),
    ])?;
    customise(&tmp, d, units).with_context(|| format!("customising {}", tmp.display()))?;
    if out.exists() {
        // --force (checked before the build).
        chroot::remove_tree(out)?;
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    tracing::info!(
        "node root {} ready in {:.0}s",
        out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn customise(root: &Path, d: &Debian, units: &[PathBuf]) -> Result<()> {
    install_debs(root, &d.debs)?;
    if let Some(n) = &d.nodectl {
        let dst = root.join("usr/bin/nodectl");
        std::fs::copy(n, &dst)
            .with_context(|| format!("copying {} to {}", n.display(), dst.display()))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dst.display()))?;
    }
    let sysdir = root.join("etc/systemd/system");
    let mut names: Vec<String> = Vec::new();
    for u in units {
        let name = u.file_name().unwrap_or_default();
        let dst = sysdir.join(name);
        std::fs::copy(u, &dst)
            .with_context(|| format!("copying {} to {}", u.display(), dst.display()))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {}", dst.display()))?;
        names.push(name.to_string_lossy().into_owned());
    }
    if !names.is_empty() {
        systemctl(root, "enable", &names)?;
        tracing::info!("enabled {}", names.join(" "));
    }

    // A stateless node: the hostname comes from grendel.hostname (nodectl
    // writes it into the overlay), the machine id is made at each boot.
    remove_if_exists(&root.join("etc/hostname"))?;
    std::fs::write(root.join("etc/machine-id"), "")
        .with_context(|| format!("emptying {}", root.join("etc/machine-id").display()))?;

    // Build-time secrets: the SSH host keys and munge.key the package
    // scripts generated would be shared by every node booting this image.
    // Each node gets them (and munge's key, sssd.conf, slurm.conf) from
    // provisioning, which then starts the services; until then they are
    // disabled, as they could not start without their config and keys.
    remove_glob(&root.join("etc/ssh"), "ssh_host_")?;
    for s in SECRETS {
        remove_if_exists(&root.join(s))?;
    }
    let present: Vec<String> = PROVISIONED_SERVICES
        .iter()
        .filter(|s| unit_exists(root, s))
        .map(|s| s.to_string())
        .collect();
    if !present.is_empty() {
        systemctl(root, "disable", &present)?;
        tracing::info!("disabled until provisioning: {}", present.join(" "));
    }

    // Debian's kernel hook may have made an initrd; nodeimg initramfs makes ours.
    remove_glob(&root.join("boot"), "initrd.img-")?;

    if d.empty_root_password {
        cmd::run(&[
            OsString::from("chroot"),
            root.into(),
            "passwd".into(),
            "--delete".into(),
            "root".into(),
        ])?;
        tracing::warn!("root has an empty password in {}", root.display());
    }
    Ok(())
}

fn systemctl(root: &Path, verb: &str, units: &[String]) -> Result<()> {
    let mut argv: Vec<OsString> = vec![
        "systemctl".into(),
        "--quiet".into(),
        "--root".into(),
        root.into(),
        verb.into(),
    ];
    argv.extend(units.iter().map(OsString::from));
    cmd::run(&argv).map(|_| ())
}

/// A unit file shipped by a package or the admin.
fn unit_exists(root: &Path, unit: &str) -> bool {
    [
        "usr/lib/systemd/system",
        "lib/systemd/system",
        "etc/systemd/system",
    ]
    .iter()
    .any(|d| root.join(d).join(unit).exists())
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(packages: Option<&str>, extra: &[&str]) -> Debian {
        Debian {
            output: None,
            cache: None,
            suite: "bookworm".into(),
            packages: packages.map(|p| p.split(',').map(String::from).collect()),
            extra_packages: extra.iter().map(|s| s.to_string()).collect(),
            mirror: None,
            debs: Vec::new(),
            nodectl: None,
            units: None,
            empty_root_password: false,
            force: false,
            print_key: true,
        }
    }

    #[test]
    fn help_lists_the_default_packages() {
        use clap::Args as _;
        let help = Debian::augment_args(clap::Command::new("debian"))
            .render_long_help()
            .to_string();
        let words: Vec<&str> = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        for p in DEFAULT_PACKAGES.iter().chain(KERNEL_PACKAGES) {
            assert!(words.contains(p), "{p} missing from --help");
        }
    }

    #[test]
    fn include_default_plus_extra_sorted() {
        let i = args(None, &["vim", "munge"]).include();
        assert!(i.contains(&"slurmd".to_string()) && i.contains(&"vim".to_string()));
        assert_eq!(i.iter().filter(|p| *p == "munge").count(), 1);
        assert!(i.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn packages_replace_the_default() {
        assert_eq!(
            args(Some("systemd, udev"), &["zstd"]).include(),
            vec!["systemd", "udev", "zstd"]
        );
    }

    #[test]
    fn key_depends_on_lists_not_order() {
        let a = base_key(
            "bookworm",
            &args(Some("a,b"), &[]).include(),
            KERNEL_PACKAGES,
        );
        let b = base_key(
            "bookworm",
            &args(Some("b,a"), &[]).include(),
            KERNEL_PACKAGES,
        );
        let c = base_key("trixie", &args(Some("a,b"), &[]).include(), KERNEL_PACKAGES);
        let d = base_key(
            "bookworm",
            &args(Some("a,b,c"), &[]).include(),
            KERNEL_PACKAGES,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn mirror_from_deb822() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("sources.list.d")).unwrap();
        std::fs::write(
            t.path().join("sources.list.d/debian.sources"),
            "Types: deb\n# http://old.example/debian\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security\n",
        )
        .unwrap();
        assert_eq!(
            apt_mirror(t.path()).unwrap(),
            "http://mirror.example/debian"
        );
    }

    #[test]
    fn mirror_from_sources_list() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("sources.list"),
            "# comment\ndeb-src http://src.example/debian bookworm main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            apt_mirror(t.path()).unwrap(),
            "http://mirror.example/debian"
        );
    }

    #[test]
    fn no_mirror_is_an_error_naming_the_dir() {
        let t = tempfile::tempdir().unwrap();
        let e = format!("{:#}", apt_mirror(t.path()).unwrap_err());
        assert!(e.contains(&t.path().display().to_string()), "{e}");
        assert!(e.contains("--mirror"), "{e}");
    }

    #[test]
    fn units_are_the_service_files() {
        let t = tempfile::tempdir().unwrap();
        for f in ["b.service", "a.service", "c.timer", "README"] {
            std::fs::write(t.path().join(f), "").unwrap();
        }
        let u = service_units(t.path()).unwrap();
        let names: Vec<_> = u
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.service", "b.service"]);
        let e = format!("{:#}", service_units(&t.path().join("nope")).unwrap_err());
        assert!(e.contains("units directory") && e.contains("nope"), "{e}");
    }

    #[test]
    fn a_deb_that_is_not_one_is_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let e = format!("{:#}", check_deb(&t.path().join("nope.deb")).unwrap_err());
        assert!(e.contains("--deb") && e.contains("nope.deb"), "{e}");
        let short = t.path().join("short.deb");
        std::fs::write(&short, "!<a").unwrap();
        let e = format!("{:#}", check_deb(&short).unwrap_err());
        assert!(e.contains("short.deb: not a Debian package"), "{e}");
        let text = t.path().join("nodectl.deb");
        std::fs::write(&text, "#!/bin/sh\necho hi\n").unwrap();
        let e = format!("{:#}", check_deb(&text).unwrap_err());
        assert!(e.contains("not a Debian package"), "{e}");
        let ar = t.path().join("ok.deb");
        std::fs::write(&ar, "!<arch>\ndebian-binary   ").unwrap();
        check_deb(&ar).unwrap();
    }

    #[test]
    fn node_customisation_on_a_tempdir() {
        // Everything but systemctl and passwd (no units, no empty password).
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "etc/ssh",
            "etc/munge",
            "etc/systemd/system",
            "usr/bin",
            "boot",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "etc/hostname",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
            "etc/ssh/sshd_config",
            "etc/munge/munge.key",
            "boot/initrd.img-6.1.0-37-amd64",
            "boot/vmlinuz-6.1.0-37-amd64",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        std::fs::write(r.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        let nodectl = t.path().join("nodectl-bin");
        std::fs::write(&nodectl, "bin").unwrap();
        let mut d = args(None, &[]);
        d.nodectl = Some(nodectl);
        customise(r, &d, &[]).unwrap();
        let mode = std::fs::metadata(r.join("usr/bin/nodectl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        assert!(!r.join("etc/hostname").exists());
        assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(r.join("etc/ssh/sshd_config").exists());
        assert!(!r.join("etc/munge/munge.key").exists());
        assert!(!r.join("boot/initrd.img-6.1.0-37-amd64").exists());
        assert!(r.join("boot/vmlinuz-6.1.0-37-amd64").exists());
    }
}
