//! How the firmware booted the node: BIOS or UEFI, and, under UEFI, the
//! Secure Boot state from its variable `SecureBoot` (efivarfs: 4 bytes of
//! attributes, then the value: 1 enabled, 0 disabled). Recorded in
//! `boot.json`, sent with the `booted` report and shown on the
//! `nodeboot-status` line.
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The `SecureBoot` variable of the EFI global variable GUID
/// (`EFI_GLOBAL_VARIABLE`, 8BE4DF61-93CA-11D2-AA0D-00E098032B8C).
const SECURE_BOOT_VAR: &str = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareReport {
    /// `bios` or `uefi`.
    pub kind: String,
    /// Under UEFI: whether Secure Boot is enforced; `None` when the
    /// variable cannot be read (no efivarfs) or under BIOS.
    pub secure_boot: Option<bool>,
}

impl FirmwareReport {
    /// For a report's message: `uefi, secure boot on`.
    pub fn summary(&self) -> String {
        match (self.kind.as_str(), self.secure_boot) {
            ("uefi", Some(true)) => "uefi, secure boot on".into(),
            ("uefi", Some(false)) => "uefi, secure boot off".into(),
            ("uefi", None) => "uefi, secure boot unknown".into(),
            (k, _) => k.to_string(),
        }
    }
}

/// Mount efivarfs (read-only) on `sys/firmware/efi/efivars` when the
/// firmware is UEFI and nothing is mounted there yet (the initramfs may
/// start nodectl before systemd mounted it). Best effort.
pub fn mount_efivars(sys: &Path) {
    let vars = sys.join("firmware/efi/efivars");
    let empty = std::fs::read_dir(&vars).is_ok_and(|mut d| d.next().is_none());
    if !empty {
        return;
    }
    use nix::mount::{mount, MsFlags};
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(
        Some("efivarfs"),
        &vars,
        Some("efivarfs"),
        flags,
        None::<&str>,
    ) {
        tracing::debug!("mounting efivarfs on {}: {e}", vars.display());
    }
}

/// Read the firmware facts under `sys` (`/sys`).
pub fn read(sys: &Path) -> FirmwareReport {
    let efi = sys.join("firmware/efi");
    if !efi.is_dir() {
        return FirmwareReport {
            kind: "bios".into(),
            secure_boot: None,
        };
    }
    let vars = efi.join("efivars");
    // No variable at all: efivarfs is not mounted, nothing is known.
    let populated = std::fs::read_dir(&vars).is_ok_and(|mut d| d.next().is_some());
    let secure_boot = if !populated {
        None
    } else {
        let mut v = Vec::new();
        match std::fs::File::open(vars.join(SECURE_BOOT_VAR)) {
            // Firmware without Secure Boot support has no such variable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
            Ok(f) => f
                .take(64)
                .read_to_end(&mut v)
                .ok()
                .and_then(|_| v.get(4).copied())
                .map(|b| b == 1),
        }
    };
    FirmwareReport {
        kind: "uefi".into(),
        secure_boot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_uefi_and_secure_boot() {
        let d = tempfile::tempdir().unwrap();
        let r = read(d.path());
        assert_eq!((r.kind.as_str(), r.secure_boot), ("bios", None));
        assert_eq!(r.summary(), "bios");
        let vars = d.path().join("firmware/efi/efivars");
        std::fs::create_dir_all(&vars).unwrap();
        assert_eq!(read(d.path()).summary(), "uefi, secure boot unknown");
        // Variables, but no SecureBoot: firmware without Secure Boot.
        std::fs::write(
            vars.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
            [6, 0, 0, 0, 1, 0],
        )
        .unwrap();
        assert_eq!(read(d.path()).summary(), "uefi, secure boot off");
        // The name efivarfs gives it (as listed on an OVMF node).
        let sb = vars.join("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(sb, vars.join(SECURE_BOOT_VAR));
        std::fs::write(&sb, [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(read(d.path()).secure_boot, Some(true));
        assert_eq!(read(d.path()).summary(), "uefi, secure boot on");
        std::fs::write(vars.join(SECURE_BOOT_VAR), [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(read(d.path()).summary(), "uefi, secure boot off");
        // A short variable: unknown, not a guess.
        std::fs::write(vars.join(SECURE_BOOT_VAR), [6, 0]).unwrap();
        assert_eq!(read(d.path()).secure_boot, None);
    }
}
