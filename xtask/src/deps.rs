//! What a fresh Debian 12 machine needs, installed on demand (apt).
use anyhow::{bail, Result};
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
    "prometheus",      // promtool check metrics: bootd's /metrics (tests, QEMU boots pxe, pxe-uefi)
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// apt-get install whatever of [`PACKAGES`] is missing (needs root).
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
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

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
