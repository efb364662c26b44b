//! HTTPS: bootd's certificate chain and key (PEM files) in a rustls server
//! config with rustls' defaults (TLS 1.3 and 1.2, its cipher suites, no
//! client certificates), reloaded on SIGHUP and when either file changes
//! (a pair that does not load is logged and the previous one kept, as the
//! inventory's reload does); and [`Wire`], one connection's byte stream,
//! plain TCP or TLS over it.
//!
//! Each connection is served by its thread with blocking sockets, as plain
//! HTTP is: [`crate::limits::Timed`] reads the plaintext under the same
//! deadlines (the handshake within the head timeout), and writes block at
//! most the write timeout. Bodies go through rustls in chunks (sendfile
//! cannot encrypt).
use crate::reload::{Reloadable, Stamp};
use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::cell::RefCell;
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A certificate or key file larger than this is refused (a chain is a few
/// KiB).
const MAX_PEM: u64 = 1 << 20;

/// One connection's byte stream: the socket, and its TLS session if any.
#[derive(Debug, Clone, Copy)]
pub struct Wire<'a> {
    pub sock: &'a TcpStream,
    pub tls: Option<&'a RefCell<ServerConnection>>,
}

impl<'a> Wire<'a> {
    pub fn plain(sock: &'a TcpStream) -> Wire<'a> {
        Wire { sock, tls: None }
    }

    /// Whether the client talks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Send TLS's close_notify (nothing on plain TCP), best effort.
    pub fn close(&self) {
        if let Some(tls) = self.tls {
            let mut c = tls.borrow_mut();
            c.send_close_notify();
            let _ = flush(&mut c, self.sock);
        }
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls else {
            return (&mut &*self.sock).write(buf);
        };
        let mut c = tls.borrow_mut();
        // Room first: rustls buffers a bounded amount of plaintext.
        flush(&mut c, self.sock)?;
        let n = c.writer().write(buf)?;
        flush(&mut c, self.sock)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls {
            Some(tls) => flush(&mut tls.borrow_mut(), self.sock),
            None => Ok(()),
        }
    }
}

/// Write out what the session has for the socket (the socket's send
/// timeout bounds each write).
pub fn flush(c: &mut ServerConnection, mut sock: &TcpStream) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Process the records read; on a TLS error, send the alert rustls queued
/// and fail with `InvalidData` naming it.
pub fn process(c: &mut ServerConnection, sock: &TcpStream) -> io::Result<()> {
    match c.process_new_packets() {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = flush(c, sock);
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS: {e}"),
            ))
        }
    }
}

/// The certificate chain and key files, and the server config made of them.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' mtimes and sizes when last loaded (or tried).
    stamp: Mutex<Stamp>,
}

impl Reloadable for Tls {
    fn paths(&self) -> Vec<&Path> {
        vec![&self.cert, &self.key]
    }

    fn last(&self) -> &Mutex<Stamp> {
        &self.stamp
    }

    fn reload_logged(&self) -> bool {
        Tls::reload_logged(self)
    }
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{what} {}", path.display()))?
        .len();
    if len > MAX_PEM {
        bail!("{what} {}: larger than 1 MiB", path.display());
    }
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// A rustls server config from PEM files: `cert`, the certificate chain
/// (the server's first), and `key`, its private key (PKCS#8, PKCS#1 or
/// SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let c = cert.display();
    let certs = CertificateDer::pem_slice_iter(&read_pem("tls_cert", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls_cert {c}: not a PEM certificate chain"))?;
    if certs.is_empty() {
        bail!("tls_cert {c}: no CERTIFICATE in it");
    }
    let k = key.display();
    let key_der = PrivateKeyDer::from_pem_slice(&read_pem("tls_key", key)?)
        .with_context(|| format!("tls_key {k}: no PEM private key in it"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls' default protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| format!("tls_cert {c} with tls_key {k}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Tls {
    /// Load the pair (an error here stops bootd).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>> {
        let before = crate::reload::stamp(&[cert, key]);
        let cfg = server_config(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(cfg)),
            stamp: Mutex::new(before),
        }))
    }

    /// The config new connections use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Load the files again: on success the new pair serves new
    /// connections; on failure the previous one stays, and the error says
    /// why.
    pub fn reload(&self) -> Result<()> {
        crate::reload::mark(self);
        let cfg = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
        Ok(())
    }

    /// [`Tls::reload`] with a log line either way.
    pub fn reload_logged(&self) -> bool {
        match self.reload() {
            Ok(()) => {
                tracing::info!(
                    "TLS certificate {} and key {} reloaded",
                    self.cert.display(),
                    self.key.display()
                );
                true
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, keeping the previous one: {e:#}");
                false
            }
        }
    }

    /// A thread that polls the files every second and reloads them when
    /// they change. A certificate and key replaced one after the other may
    /// fail once in between (logged); the second change loads the pair.
    pub fn watch(self: &Arc<Self>) -> Result<()> {
        crate::reload::watch(self, "bootd-tls").context("starting the TLS reload thread")
    }
}
