//! What the Secure Boot boots need beyond the image: Debian's signed shim
//! and signed GRUB netboot image, and a kernel whose signature is removed
//! (`secureboot-unsigned`).
//!
//! The two loaders come from their Debian packages (`shim-signed`,
//! `grub-efi-amd64-signed`), downloaded once with `apt-get download` into
//! the cache and unpacked with `dpkg-deb`: they are never installed on
//! this machine (their maintainer scripts would install a bootloader).
use crate::build;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, file in the package, name in the TFTP root).
const LOADERS: &[(&str, &str, &str)] = &[
    // shim, signed by Microsoft's UEFI CA; it trusts Debian's key.
    (
        "shim-signed",
        "usr/lib/shim/shimx64.efi.signed",
        "shimx64.efi",
    ),
    // GRUB's netboot image (modules built in, prefix /grub on the TFTP
    // server), signed by Debian; shim loads it by the name grubx64.efi.
    (
        "grub-efi-amd64-signed",
        "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grubx64.efi",
    ),
];

/// The .deb of `pkg` in `dir`, if one was downloaded.
fn deb_in(dir: &Path, pkg: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{pkg}_");
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// `apt-get download pkg` into `dir`; after `apt-get update` when the
/// package lists do not know it yet.
fn download(dir: &Path, pkg: &str) -> Result<PathBuf> {
    let get = || {
        Command::new("apt-get")
            .current_dir(dir)
            .args(["download", "-qq", pkg])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !get() {
        build::run(Command::new("apt-get").args(["update", "-q"]))?;
        if !get() {
            bail!(
                "apt-get download {pkg} failed (Debian's {pkg} package, for the Secure Boot boots)"
            );
        }
    }
    deb_in(dir, pkg)?
        .with_context(|| format!("apt-get download {pkg} left no .deb in {}", dir.display()))
}

/// Copy `shimx64.efi` and `grubx64.efi` into `tftp`, from the cache
/// (`/var/cache/nodeboot/secureboot`), downloading the packages on first use.
pub fn loaders_into(tftp: &Path) -> Result<()> {
    let dir = crate::e2e::cache_dir().join("secureboot");
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    for (pkg, inside, name) in LOADERS {
        let have = dir.join(name);
        if !have.exists() {
            let deb = match deb_in(&dir, pkg)? {
                Some(d) => d,
                None => download(&dir, pkg)?,
            };
            let x = dir.join(format!("x-{pkg}"));
            let _ = std::fs::remove_dir_all(&x);
            build::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
            let from = x.join(inside);
            let part = dir.join(format!("{name}.part"));
            std::fs::copy(&from, &part)
                .with_context(|| format!("{} has no {inside}", deb.display()))?;
            std::fs::rename(&part, &have)?;
            let _ = std::fs::remove_dir_all(&x);
        }
        std::fs::copy(&have, tftp.join(name))
            .with_context(|| format!("copying {} to {}", have.display(), tftp.display()))?;
    }
    Ok(())
}

/// `pe` (a PE32+ image, Debian's signed kernel) without its Authenticode
/// signature: the certificate table (data directory 4, whose address is a
/// file offset) is dropped from the file and its directory entry zeroed.
/// What is left is the same kernel, unsigned.
pub fn strip_signature(pe: &[u8]) -> Result<Vec<u8>> {
    let u16_at = |o: usize| -> Result<usize> {
        let b = pe
            .get(o..o + 2)
            .context("a PE header past the end of the file")?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| -> Result<usize> {
        let b = pe
            .get(o..o + 4)
            .context("a PE header past the end of the file")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if pe.get(..2) != Some(b"MZ") {
        bail!("not a PE image (no MZ)");
    }
    let nt = u32_at(0x3c)?;
    if pe.get(nt..nt + 4) != Some(b"PE\0\0") {
        bail!("not a PE image (no PE signature at {nt:#x})");
    }
    let opt = nt + 24;
    if u16_at(opt)? != 0x20b {
        bail!("not a PE32+ image");
    }
    // PE32+: 112 bytes of fields, then the data directories (8 bytes each).
    let dir = opt + 112 + 4 * 8;
    let (at, size) = (u32_at(dir)?, u32_at(dir + 4)?);
    if size == 0 {
        bail!("the image has no signature");
    }
    if at.checked_add(size) != Some(pe.len()) {
        bail!(
            "the certificate table ({at:#x}+{size:#x}) does not end the file ({:#x})",
            pe.len()
        );
    }
    let mut out = pe[..at].to_vec();
    out[dir..dir + 8].fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE32+ header with a 16-byte certificate table at its end.
    fn signed() -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
        let dir = 0x98 + 144;
        pe[dir..dir + 4].copy_from_slice(&0x200u32.to_le_bytes());
        pe[dir + 4..dir + 8].copy_from_slice(&16u32.to_le_bytes());
        pe.extend_from_slice(&[0xaa; 16]);
        pe
    }

    #[test]
    fn the_signature_goes_and_the_rest_stays() {
        let pe = signed();
        let out = strip_signature(&pe).unwrap();
        assert_eq!(out.len(), 0x200);
        assert_eq!(&out[0x98 + 144..0x98 + 152], &[0; 8]);
        assert_eq!(&out[..0x98 + 144], &pe[..0x98 + 144]);
        // Twice: nothing left to strip.
        let e = strip_signature(&out).unwrap_err();
        assert_eq!(e.to_string(), "the image has no signature");
        let e = strip_signature(b"\x7fELF").unwrap_err();
        assert_eq!(e.to_string(), "not a PE image (no MZ)");
        let mut short = pe.clone();
        short.pop();
        let e = strip_signature(&short).unwrap_err();
        assert!(e.to_string().contains("does not end the file"), "{e}");
    }
}
