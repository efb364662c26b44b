//! GRUB's network boot, the Secure Boot chain: UEFI PXE firmware gets
//! `shimx64.efi` (Debian's, signed by Microsoft's UEFI CA) over TFTP;
//! shim fetches `grubx64.efi` (Debian's signed GRUB netboot image) from
//! the same TFTP directory; that GRUB, whose prefix is `/grub` on the TFTP
//! server, reads `grub/grub.cfg`, then the kernel and initrd over TFTP
//! (Debian's signed netboot GRUB has no `http` module), verifying the
//! kernel through shim.
//!
//! bootd's TFTP serves, besides the files of its root:
//!
//! | path | what |
//! |---|---|
//! | `grub/grub.cfg` | [`STUB`]: loads `grub/grub.cfg-$net_default_mac` |
//! | `grub/grub.cfg-52:54:00:12:34:56` (also `grub.cfg-01-52-54-00-12-34-56`, the name GRUB 2.12 asks by itself) | the host's config, rendered from the inventory as its iPXE script is ([`crate::inventory::grub_config`]); for an unknown MAC a config that hands back to the firmware (`exit`), and a log line |
//! | the `kernel` and `initrd` of an inventory image (`vmlinuz`, `initrd.img`) | that file of bootd's `--root` (only those: the rest of the root is not on TFTP) |
//!
//! A file of the TFTP root with one of these names wins (a site's own
//! `grub/grub.cfg`). `GET /boot/grub?mac=` over HTTP answers the same
//! config, for a GRUB loaded over HTTP and for operators.
use crate::inventory::{grub_config, grub_exit, is_boot_file, Live};
use crate::secrets::Secrets;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The config every GRUB reads first: the host's own, by MAC.
pub const STUB: &str = "\
# nodeboot: bootd's GRUB config. Each node's own is grub.cfg-<its MAC>,
# rendered by bootd from the inventory.
configfile \"${prefix}/grub.cfg-${net_default_mac}\"
";

/// What a TFTP path names among bootd's GRUB files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Made for the request (a config).
    Bytes(Vec<u8>),
    /// A kernel or initrd of bootd's `--root`.
    File(PathBuf),
}

/// The MAC of a per-node config path (`grub/grub.cfg-52:54:00:12:34:56`,
/// `grub/grub.cfg-01-52-54-00-12-34-56`), as written; `None` when `path`
/// is not one.
pub fn config_mac(path: &str) -> Option<&str> {
    let rest = path
        .trim_start_matches('/')
        .strip_prefix("grub/grub.cfg-")?;
    // pxelinux's ARP type prefix, which GRUB 2.12's own search writes.
    Some(match rest.strip_prefix("01-") {
        Some(m) if m.len() == 17 => m,
        _ => rest,
    })
}

/// Lines about configs for unknown MACs: 10 a minute.
static UNKNOWN_LINES: crate::Ration = crate::Ration::new(10);

/// bootd's GRUB files over TFTP.
pub struct Grub {
    pub inventory: Arc<Live>,
    /// bootd's `--root`, canonical.
    pub www: PathBuf,
    /// Base of the URLs in command lines (`http://10.0.0.1:8080`).
    pub base: String,
    pub secrets: Option<Arc<Secrets>>,
}

impl Grub {
    /// What `requested` names for `client`, if it is one of bootd's GRUB
    /// files.
    pub fn lookup(&self, requested: &Path, client: SocketAddr) -> Option<Served> {
        let path = requested.to_str()?;
        let rel = path.trim_start_matches('/');
        if rel == "grub/grub.cfg" {
            return Some(Served::Bytes(STUB.as_bytes().to_vec()));
        }
        let inv = self.inventory.get();
        if let Some(mac) = config_mac(rel) {
            return Some(Served::Bytes(self.config(&inv, mac, client).into_bytes()));
        }
        if is_boot_file(&inv, rel) {
            return crate::tftp::resolve(&self.www, Path::new(rel))
                .ok()
                .map(Served::File);
        }
        None
    }

    /// The config for `mac`, with a fresh token when the host has secrets.
    fn config(&self, inv: &crate::inventory::Inventory, mac: &str, client: SocketAddr) -> String {
        let shown = crate::clean(mac);
        let extra = match self.secrets.as_ref().map(|s| s.token_word(inv, mac, true)) {
            None => String::new(),
            Some(Ok(word)) => word,
            Some(Err((host, e))) => {
                tracing::error!("tftp: GRUB config for {host}: {e:#}");
                return grub_exit(
                    &format!("bootd could not make {host}'s config: {e:#}"),
                    true,
                );
            }
        };
        match grub_config(inv, mac, &self.base, &extra) {
            None => {
                if let Some(quiet) = UNKNOWN_LINES.take() {
                    tracing::warn!(
                        "tftp: GRUB config for unknown MAC {shown:?} to {client}: \
                         no host has it in the inventory, so GRUB goes back to the firmware{}",
                        crate::left_out(quiet)
                    );
                }
                grub_exit(
                    &format!("no host has MAC {shown} in bootd's inventory"),
                    true,
                )
            }
            Some(Err(e)) => {
                tracing::error!("tftp: GRUB config for MAC {shown}: {e}");
                grub_exit(&format!("bootd cannot boot {shown}: {e}"), true)
            }
            Some(Ok(c)) => {
                if let Some((host, _)) = inv.by_mac(mac) {
                    tracing::info!("tftp: GRUB config for {} ({shown}) to {client}", host.name);
                }
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_name_a_mac() {
        for (path, want) in [
            ("grub/grub.cfg-52:54:00:12:34:56", Some("52:54:00:12:34:56")),
            (
                "/grub/grub.cfg-01-52-54-00-12-34-56",
                Some("52-54-00-12-34-56"),
            ),
            // Not the ARP-type form: kept as written (and unknown to the inventory).
            ("grub/grub.cfg-01-52", Some("01-52")),
            ("grub/grub.cfg", None),
            ("grub/x86_64-efi/grub.cfg", None),
            ("vmlinuz", None),
        ] {
            assert_eq!(config_mac(path), want, "{path}");
        }
    }
}
