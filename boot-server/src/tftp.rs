//! bootd's TFTP server: one directory (the iPXE binaries, shim and GRUB),
//! read-only, over the `async-tftp` crate (RFC 1350 with the blksize,
//! timeout, tsize and windowsize options), driven by its own thread; with
//! an inventory, also the GRUB configs and the images' kernels and initrds
//! ([`crate::grub`]).
//!
//! The crate does the protocol; this module decides what may be read:
//! a request's path is taken relative to the root (leading `/` dropped),
//! `..` and absolute components are refused, and the file it names — after
//! symlinks — must be a regular file inside the root. Write requests are
//! refused. Each refusal, and each transfer's end, is one log line:
//! `tftp: sent undionly.kpxe to 10.0.0.5:2070: 70,000 bytes in 0.4 s`.
use anyhow::{Context, Result};
use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::io::{AssertAsync, AsyncRead};
use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

/// Why a read request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0:?} leaves the TFTP root")]
    Outside(String),
    #[error("{0:?}: no such file in the TFTP root")]
    NotFound(String),
    #[error("{0:?} is not a regular file")]
    NotFile(String),
}

impl From<&Refused> for packet::Error {
    fn from(r: &Refused) -> packet::Error {
        match r {
            Refused::Outside(_) => packet::Error::PermissionDenied,
            Refused::NotFound(_) | Refused::NotFile(_) => packet::Error::FileNotFound,
        }
    }
}

/// The file `requested` names under `root` (canonical), or why not.
pub fn resolve(root: &Path, requested: &Path) -> Result<PathBuf, Refused> {
    let shown = requested.display().to_string();
    let mut rel = PathBuf::new();
    for c in requested.components() {
        match c {
            // A leading `/`: clients write `/undionly.kpxe` as often as not.
            Component::RootDir if rel.as_os_str().is_empty() => {}
            Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            _ => return Err(Refused::Outside(shown)),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(Refused::NotFile(shown));
    }
    let full = root.join(&rel);
    let real = match full.canonicalize() {
        Ok(r) => r,
        Err(_) => return Err(Refused::NotFound(shown)),
    };
    if !real.starts_with(root) {
        return Err(Refused::Outside(shown));
    }
    if !real.is_file() {
        return Err(Refused::NotFile(shown));
    }
    Ok(real)
}

/// What one anonymous client can make the TFTP server hold or send.
///
/// A transfer the client never acknowledges ends after `retries + 1`
/// sends of its first packet, `timeout` apart: that is also the most a
/// request with a forged source address makes bootd send to someone else
/// (`(retries + 1) × (blksize + 4)` bytes, the client's `timeout` option
/// being ignored). `max_transfers` bounds the sockets and files held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Transfers in flight, all clients (each holds a socket and a file).
    pub max_transfers: usize,
    /// Transfers in flight per client address.
    pub per_client: usize,
    /// Resends of an unacknowledged block before the transfer is dropped.
    pub retries: u32,
    /// Seconds between resends (the client's `timeout` option is ignored).
    pub timeout: std::time::Duration,
    /// Largest `blksize` granted (an Ethernet frame's worth by default).
    pub max_block: u16,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_transfers: 64,
            per_client: 4,
            retries: 4,
            timeout: std::time::Duration::from_secs(2),
            max_block: 1468,
        }
    }
}

/// Transfers in flight: in total and per client address.
#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// Serves a directory read-only, within [`Limits`].
struct ReadOnlyDir {
    root: PathBuf,
    limits: Limits,
    /// The inventory: its hosts' addresses are not held to `max_transfers`
    /// (only to `per_client`), so strangers filling the cap do not stop a
    /// node's boot.
    inventory: Option<std::sync::Arc<crate::inventory::Live>>,
    /// GRUB's configs and the images' boot files.
    grub: Option<std::sync::Arc<crate::grub::Grub>>,
    flight: std::sync::Arc<std::sync::Mutex<InFlight>>,
}

/// A transfer's place among the [`InFlight`] ones, given back on drop.
struct Slot {
    flight: std::sync::Arc<std::sync::Mutex<InFlight>>,
    ip: std::net::IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        f.total = f.total.saturating_sub(1);
        if let Some(n) = f.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                f.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ReadOnlyDir {
    /// A slot for a transfer to `client`, or `None` when a limit is reached.
    fn take_slot(&self, client: &SocketAddr) -> Option<Slot> {
        let ip = client.ip();
        let known = self.inventory.as_ref().is_some_and(|l| l.get().has_ip(ip));
        let mut f = self.flight.lock().unwrap_or_else(|p| p.into_inner());
        let mine = f.per_ip.get(&ip).copied().unwrap_or(0);
        if (f.total >= self.limits.max_transfers && !known) || mine >= self.limits.per_client {
            return None;
        }
        f.total += 1;
        *f.per_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            flight: self.flight.clone(),
            ip,
        })
    }
}

/// What a transfer reads: a file, or a config made for the request.
enum Source {
    File(File),
    Bytes(std::io::Cursor<Vec<u8>>),
}

impl std::io::Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Bytes(b) => b.read(buf),
        }
    }
}

/// A file being sent: counts what the protocol read, logs the end.
pub struct Transfer {
    file: AssertAsync<Source>,
    name: String,
    peer: SocketAddr,
    size: u64,
    sent: u64,
    eof: bool,
    start: Instant,
    _slot: Slot,
    /// `bootd_tftp_transfers_in_flight` while the transfer lives.
    _counted: crate::metrics::InFlight<'static>,
}

impl AsyncRead for Transfer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.file).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.sent += n as u64;
            if n == 0 && !buf.is_empty() {
                self.eof = true;
            }
        }
        r
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        let whole = self.eof && self.sent == self.size;
        crate::metrics::global().tftp_ended(whole, self.sent);
        if whole {
            tracing::info!(
                "tftp: sent {} to {}: {} bytes in {secs:.2} s",
                crate::clean(&self.name),
                self.peer,
                self.sent
            );
        } else if let Some(quiet) = STOPPED_LINES.take() {
            // PXE ROMs often ask for the size (tsize) and stop, then ask
            // again; requests never acknowledged (a flood, forged sources)
            // end here too, so these lines are rationed.
            let more = if quiet > 0 {
                format!(" ({quiet} more such lines left out in the last minute)")
            } else {
                String::new()
            };
            tracing::info!(
                "tftp: {} to {} stopped after {} of {} bytes ({secs:.2} s): the client ended it or stopped answering{more}",
                crate::clean(&self.name),
                self.peer,
                self.sent,
                self.size
            );
        }
    }
}

/// Lines about requests refused at the limits: one a minute, counting the
/// others.
static REFUSED_LINES: crate::Ration = crate::Ration::new(1);

/// Lines about transfers that did not finish: at most 20 a minute.
static STOPPED_LINES: crate::Ration = crate::Ration::new(20);

impl ReadOnlyDir {
    fn open(&self, real: &Path, client: &SocketAddr) -> Result<File, packet::Error> {
        File::open(real).map_err(|e| {
            crate::metrics::global().tftp_refused(crate::metrics::TftpRefused::Denied);
            let shown = real.display().to_string();
            tracing::warn!("tftp: {client}: cannot open {}: {e}", crate::clean(&shown));
            packet::Error::PermissionDenied
        })
    }

    /// A file of the root as the log names it: relative to the root.
    fn shown(&self, real: &Path) -> String {
        real.strip_prefix(&self.root)
            .unwrap_or(real)
            .display()
            .to_string()
    }
}

impl Handler for ReadOnlyDir {
    type Reader = Transfer;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Transfer, Option<u64>), packet::Error> {
        let Some(slot) = self.take_slot(client) else {
            crate::metrics::global().tftp_refused(crate::metrics::TftpRefused::Limit);
            if let Some(others) = REFUSED_LINES.take() {
                tracing::warn!(
                    "tftp: refused {client} and {others} other request(s): {} transfers in flight at most, {} per client",
                    self.limits.max_transfers,
                    self.limits.per_client
                );
            }
            return Err(packet::Error::Msg("too many transfers, try again".into()));
        };
        let (source, name) = match resolve(&self.root, path) {
            Ok(real) => match self.open(&real, client) {
                Ok(f) => (Source::File(f), self.shown(&real)),
                Err(e) => return Err(e),
            },
            Err(e) => match self
                .grub
                .as_ref()
                .filter(|_| matches!(e, Refused::NotFound(_)))
                .and_then(|g| g.lookup(path, *client))
            {
                Some(crate::grub::Served::Bytes(b)) => (
                    Source::Bytes(std::io::Cursor::new(b)),
                    path.to_string_lossy().trim_start_matches('/').to_string(),
                ),
                Some(crate::grub::Served::File(real)) => match self.open(&real, client) {
                    Ok(f) => (
                        Source::File(f),
                        path.to_string_lossy().trim_start_matches('/').to_string(),
                    ),
                    Err(e) => return Err(e),
                },
                None => {
                    crate::metrics::global().tftp_refused(match e {
                        Refused::NotFound(_) => crate::metrics::TftpRefused::NotFound,
                        Refused::Outside(_) | Refused::NotFile(_) => {
                            crate::metrics::TftpRefused::Denied
                        }
                    });
                    // GRUB probes its prefix for modules lists, fonts and
                    // locales it has built in: not worth a warning each.
                    let rel = path.to_string_lossy();
                    if self.grub.is_some() && rel.trim_start_matches('/').starts_with("grub/") {
                        tracing::debug!("tftp: refused {client}: {e}");
                    } else {
                        tracing::warn!("tftp: refused {client}: {e}");
                    }
                    return Err((&e).into());
                }
            },
        };
        let size = match &source {
            Source::File(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            Source::Bytes(b) => b.get_ref().len() as u64,
        };
        tracing::debug!(
            "tftp: {client} reads {} ({size} bytes)",
            crate::clean(&name)
        );
        Ok((
            Transfer {
                file: AssertAsync::new(source),
                name,
                peer: *client,
                size,
                sent: 0,
                eof: false,
                start: Instant::now(),
                _slot: slot,
                _counted: crate::metrics::global().tftp_started(),
            },
            Some(size),
        ))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<futures_lite::io::Sink, packet::Error> {
        let shown = path.display().to_string();
        crate::metrics::global().tftp_refused(crate::metrics::TftpRefused::Write);
        tracing::warn!(
            "tftp: refused a write of {} from {client}: read-only",
            crate::clean(&shown)
        );
        Err(packet::Error::PermissionDenied)
    }
}

/// Bind `listen` and serve `root` on a thread, within `limits` (the
/// `inventory`'s addresses beyond `max_transfers`); returns the bound
/// address.
pub fn start(
    root: &Path,
    listen: SocketAddr,
    limits: &Limits,
    inventory: Option<std::sync::Arc<crate::inventory::Live>>,
    grub: Option<std::sync::Arc<crate::grub::Grub>>,
) -> Result<SocketAddr> {
    let real = root
        .canonicalize()
        .with_context(|| format!("TFTP root {}", root.display()))?;
    if !real.is_dir() {
        anyhow::bail!("TFTP root {} is not a directory", root.display());
    }
    let sock = UdpSocket::bind(listen).with_context(|| format!("TFTP: binding {listen}"))?;
    let addr = sock
        .local_addr()
        .context("TFTP: reading the bound address")?;
    let server = async_io::block_on(
        TftpServerBuilder::with_handler(ReadOnlyDir {
            root: real.clone(),
            limits: *limits,
            inventory,
            grub,
            flight: Default::default(),
        })
        .std_socket(sock)
        .context("TFTP: the socket")?
        .max_send_retries(limits.retries)
        .timeout(limits.timeout)
        .ignore_client_timeout()
        .block_size_limit(limits.max_block)
        .window_size_limit(1)
        .build(),
    )
    .context("TFTP: starting the server")?;
    std::thread::Builder::new()
        .name("bootd-tftp".into())
        .spawn(move || {
            if let Err(e) = async_io::block_on(server.serve()) {
                tracing::error!("tftp: the server stopped: {e}");
            }
        })
        .context("TFTP: starting its thread")?;
    tracing::info!("tftp: serving {} read-only on {addr}", real.display());
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tftp");
        std::fs::create_dir_all(root.join("efi")).unwrap();
        std::fs::write(root.join("undionly.kpxe"), b"x").unwrap();
        std::fs::write(root.join("efi/snponly.efi"), b"y").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("undionly.kpxe", root.join("alias")).unwrap();
        let root = root.canonicalize().unwrap();
        let ok = |p: &str| resolve(&root, Path::new(p)).unwrap();
        assert_eq!(ok("undionly.kpxe"), root.join("undionly.kpxe"));
        assert_eq!(ok("/undionly.kpxe"), root.join("undionly.kpxe"));
        assert_eq!(ok("./efi/snponly.efi"), root.join("efi/snponly.efi"));
        assert_eq!(ok("alias"), root.join("undionly.kpxe"));
        let no = |p: &str| resolve(&root, Path::new(p)).unwrap_err();
        assert_eq!(no("../secret"), Refused::Outside("../secret".into()));
        assert_eq!(
            no("efi/../../secret"),
            Refused::Outside("efi/../../secret".into())
        );
        assert_eq!(no("escape"), Refused::Outside("escape".into()));
        assert_eq!(no("nothere"), Refused::NotFound("nothere".into()));
        assert_eq!(no("efi"), Refused::NotFile("efi".into()));
        assert_eq!(no("/"), Refused::NotFile("/".into()));
        assert_eq!(
            no("../secret").to_string(),
            "\"../secret\" leaves the TFTP root"
        );
    }
}
