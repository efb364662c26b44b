//! What a fresh Debian 12 machine needs, installed on demand (apt).
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages used by the build, the tests and the QEMU harness.
pub const PACKAGES: &[&str] = &[
    "debootstrap",     // the node's live root
    "squashfs-tools",  // mksquashfs, unsquashfs: tests, the reference of `bench image`
    "systemd",         // systemctl --root enables the image's units
    "qemu-system-x86", // the VM
    "shellcheck",      // scripts are linted
    "dnsmasq-base",    // DHCP server of the netns test
    "nginx-light",     // the reference server of `bench fetch`
    "curl",            // reference client, HTTP tests
    "openssl",         // https test server and certificates
    "iproute2",        // netns / veth tests
    "iputils-ping",    // reachability checks in the netns tests
    "file",            // checks nodectl is statically linked
    "strace",          // bootd test: bodies go out with sendfile
    "chromium",        // bootd test: headless screenshot of the node status page
    "openssh-server",  // repo tests: a real sshd serving the postscripts repo
    "git",             // repo tests: the bare repository the clone reads
    "zstd",
    "cpio",
    "xfsprogs",        // format-disk tests: mkfs.xfs
    "e2fsprogs",       // format-disk tests: mkfs.ext4 (data and key partitions)
    "btrfs-progs",     // format-disk tests: mkfs.btrfs
    "fdisk",           // sfdisk --json/--verify: the tests read nodectl's GPT with libfdisk
    "util-linux",      // wipefs, blkid, losetup, mkswap/swapon, unshare (format-disk and its tests)
    "dmsetup",         // format-disk tests: a device-mapper holder (faked if the kernel has no dm)
    "munge",           // slurm boot: the controller side's munged
    "slurmctld",       // slurm boot: the controller the node's slurmd joins (configless)
    "slurm-client",    // slurm boot: sinfo, srun -w cn1 hostname
    "nfs-common",      // provision tests: mount.nfs against an absent server
    "ipxe",            // bootd's TFTP root: undionly.kpxe, snponly.efi, ipxe.efi (QEMU boot pxe)
    "busybox",         // udhcpc: the real DHCP client of bootd's netboot tests
    "swtpm",           // a software TPM 2.0: nodectl's TPM-sealed key (tests, QEMU boot slurm-tpm)
    "tpm2-tools",      // nodectl's key sealed in the TPM: its tests drive swtpm with them
    "ovmf",            // UEFI firmware for QEMU (QEMU boot pxe-uefi)
    "slapd",           // slurm boots: the site's LDAP server (rfc2307bis, ldaps) sssd reads
    "ldap-utils",      // slurm boots: ldapadd/ldapsearch load and check that directory
    "nfs-ganesha",     // slurm boots: the site's NFS server, in user space (NFSv4.2)
    "nfs-ganesha-vfs", // its VFS backend
    "lintian",         // cargo xtask dist: the .debs are checked
    "man-db",          // agent's units test: systemd-analyze verify finds the units' man pages
    "groff-base",      // cargo xtask dist, clidocs tests: the man pages render without a warning
    "dracut-network",  // bench boot: stock dracut livenet, the reference initramfs
    "dracut-live",     // bench boot: dmsquash-live
    "casync",          // chunks tests: casync extract rebuilds an image from our .caibx and store
    "prometheus",      // promtool check metrics: bootd's /metrics (tests, QEMU boots pxe, pxe-uefi)
];

/// What `cargo xtask dist` needs of [`PACKAGES`].
pub const DIST_PACKAGES: &[&str] = &["lintian", "groff-base"];

/// The cargo-deb that `cargo xtask dist` runs (pinned: its metadata keys
/// and maintainer-script snippets are what lintian was checked against).
pub const CARGO_DEB_VERSION: &str = "3.8.0";
/// The mdBook of `cargo xtask docs` (pinned: the site's theme and the
/// heading ids the docs' link check assumes are this version's).
pub const MDBOOK_VERSION: &str = "0.4.52";
/// The cargo-generate-rpm of `cargo xtask dist --rpm` (pinned likewise).
pub const CARGO_GENERATE_RPM_VERSION: &str = "0.21.1";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// apt-get install whatever of [`PACKAGES`] is missing (needs root).
pub fn ensure() -> Result<()> {
    ensure_packages(PACKAGES)
}

/// apt-get install whatever of `packages` is missing (needs root).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    if !nix_is_root() {
        bail!(
            "missing Debian packages {} and not root: install them or run as root",
            missing.join(" ")
        );
    }
    crate::build::run(Command::new("apt-get").args(["update", "-q"]))?;
    crate::build::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// cargo-deb [`CARGO_DEB_VERSION`]: `$NODEBOOT_CARGO_DEB` if set, else
/// installed under the cache (see [`cargo_tool`]).
pub fn cargo_deb() -> Result<PathBuf> {
    cargo_tool("cargo-deb", CARGO_DEB_VERSION, "NODEBOOT_CARGO_DEB")
}

/// mdbook [`MDBOOK_VERSION`] (`cargo xtask docs`): `$NODEBOOT_MDBOOK` if
/// set, else installed under the cache.
pub fn mdbook() -> Result<PathBuf> {
    cargo_tool("mdbook", MDBOOK_VERSION, "NODEBOOT_MDBOOK")
}

/// cargo-generate-rpm [`CARGO_GENERATE_RPM_VERSION`] (`cargo xtask dist --rpm`):
/// `$NODEBOOT_CARGO_GENERATE_RPM` if set, else installed under the cache.
pub fn cargo_generate_rpm() -> Result<PathBuf> {
    cargo_tool(
        "cargo-generate-rpm",
        CARGO_GENERATE_RPM_VERSION,
        "NODEBOOT_CARGO_GENERATE_RPM",
    )
}

/// The cargo tool `name` at `version`: the binary `$env` names if set, else
/// `CACHE/tools/NAME-VERSION/bin/NAME`, installed there with `cargo install
/// --locked` when missing (once per version).
fn cargo_tool(name: &str, version: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let dir = crate::e2e::cache_dir()
        .join("tools")
        .join(format!("{name}-{version}"));
    let bin = dir.join("bin").join(name);
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("xtask: installing {name} {version} in {}", dir.display());
    crate::build::run(
        Command::new(env!("CARGO"))
            .args(["install", name, "--locked", "--version", version])
            .arg("--root")
            .arg(&dir),
    )?;
    if !bin.is_file() {
        bail!("cargo install {name}: no {}", bin.display());
    }
    Ok(bin)
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
