//! bootd's TFTP server: one directory (the iPXE binaries), read-only, over
//! the `async-tftp` crate (RFC 1350 with the blksize, timeout, tsize and
//! windowsize options), driven by its own thread.
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

/// Serves a directory read-only.
struct ReadOnlyDir {
    root: PathBuf,
}

/// A file being sent: counts what the protocol read, logs the end.
pub struct Transfer {
    file: AssertAsync<File>,
    name: String,
    peer: SocketAddr,
    size: u64,
    sent: u64,
    eof: bool,
    start: Instant,
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
        if self.eof && self.sent == self.size {
            tracing::info!(
                "tftp: sent {} to {}: {} bytes in {secs:.2} s",
                self.name,
                self.peer,
                self.sent
            );
        } else {
            // PXE ROMs often ask for the size (tsize) and stop, then ask again.
            tracing::info!(
                "tftp: {} to {} stopped after {} of {} bytes ({secs:.2} s): the client ended it or stopped answering",
                self.name,
                self.peer,
                self.sent,
                self.size
            );
        }
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
        let real = match resolve(&self.root, path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("tftp: refused {client}: {e}");
                return Err((&e).into());
            }
        };
        let file = match File::open(&real) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("tftp: {client}: cannot open {}: {e}", real.display());
                return Err(packet::Error::PermissionDenied);
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let name = real
            .strip_prefix(&self.root)
            .unwrap_or(&real)
            .display()
            .to_string();
        tracing::debug!("tftp: {client} reads {name} ({size} bytes)");
        Ok((
            Transfer {
                file: AssertAsync::new(file),
                name,
                peer: *client,
                size,
                sent: 0,
                eof: false,
                start: Instant::now(),
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
        tracing::warn!(
            "tftp: refused a write of {} from {client}: read-only",
            path.display()
        );
        Err(packet::Error::PermissionDenied)
    }
}

/// Bind `listen` and serve `root` on a thread; returns the bound address.
pub fn start(root: &Path, listen: SocketAddr) -> Result<SocketAddr> {
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
        TftpServerBuilder::with_handler(ReadOnlyDir { root: real.clone() })
            .std_socket(sock)
            .context("TFTP: the socket")?
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
