//! The server: a std `TcpListener`, one thread per connection, HTTP/1.1
//! keep-alive. GET and HEAD of the files under the served trees with single
//! byte ranges, validators (ETag, Last-Modified) and zero-copy bodies (see
//! [`crate::transfer`]); `POST /status` from the nodes, `GET /nodes` (JSON)
//! and `GET /` (the status page) from [`crate::status`] and [`crate::page`].
//! Node identity ([`crate::identity`]): `GET /identity/nonce`, `POST
//! /identity/enroll`, signed secret fetches and status posts; the fleet's
//! data (`/nodes`, `/`) and `POST /admin/arm` need the admin token.
//! `GET /metrics` ([`crate::metrics`]) without a token.
//! One access-log line per request, plus one per node status.
use crate::files::{content_type, Artifact, Trees};
use crate::http::{
    body_length, http_date, if_range_matches, none_match, parse_range, read_request, write_head,
    BodyError, HeadError, RangeReq, Request,
};
use crate::identity::{Identities, Refused};
use crate::inventory::{grub_config, ipxe_script, Live};
use crate::limits::{Conns, Limits, Refusal, Timed};
use crate::secrets::Secrets;
use crate::status::{nodes_json, Nodes, Report, MAX_BODY};
use crate::tls::{Tls, Wire};
use crate::transfer::{copy_range, send_range};
use anyhow::{Context, Result};
use rustls::ServerConnection;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines about bad request heads: at most 20 a minute.
static BAD_HEADS: crate::Ration = crate::Ration::new(20);
/// Lines about refused status reports: at most 20 a minute.
static BAD_STATUS: crate::Ration = crate::Ration::new(20);
/// Refused peer claims: a line for the first few, then a count.
static BAD_PEERS: crate::Ration = crate::Ration::new(20);
/// Lines about refused signed requests and enrollments: at most 20 a minute.
static BAD_IDENTITY: crate::Ration = crate::Ration::new(20);
/// Lines about requests without the admin token: at most 20 a minute.
static BAD_ADMIN: crate::Ration = crate::Ration::new(20);
/// Lines about boot configs asked for unknown MACs (anyone can ask): 20 a minute.
static UNKNOWN_MACS: crate::Ration = crate::Ration::new(20);

/// A request line and its headers are read through this reader: a total
/// deadline over the socket (see [`crate::limits`]).
pub type Reader<'a> = BufReader<Timed<'a>>;
/// A refused status body up to this size is read and dropped before the
/// answer, so that closing the connection does not reset it under the
/// client (unread data makes the kernel send RST, which can discard the
/// response).
const MAX_DRAIN: u64 = 1 << 20;

/// What `bootd serve` serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Served at `/`.
    pub root: PathBuf,
    /// Served at `/repo/` (Grendel's repo directory: `postscript.sh`).
    pub repo: Option<PathBuf>,
    /// Bytes per second per transfer; `None`: unlimited, with sendfile.
    pub rate_limit: Option<u64>,
    /// The inventory file (hosts, images) behind `GET /boot/ipxe`.
    pub inventory: Option<PathBuf>,
    /// Base of the URLs in iPXE scripts (`http://10.0.0.1:8080`); default:
    /// `http://` + the request's Host header.
    pub public_url: Option<String>,
    /// Per-host secrets (`DIR/<host>/<name>`) behind tokens minted into the
    /// iPXE scripts; `None`: no tokens, `/secrets/` is 404.
    pub secrets: Option<PathBuf>,
    /// Lifetime of a token.
    pub token_ttl: Duration,
    /// DHCP and TFTP for the firmware, beside HTTP.
    pub netboot: crate::netboot::Options,
    /// Connections and deadlines.
    pub limits: Limits,
    /// Nodes kept in the status table.
    pub max_nodes: usize,
    /// bootd's lasting state: the nodes' enrolled keys (`DIR/keys/`), their
    /// status and boot history (`DIR/nodes.redb`).
    pub state: Option<PathBuf>,
    /// A file holding the admin token (`/nodes`, `/`, `POST /admin/arm`).
    pub admin_token: Option<PathBuf>,
    /// HTTPS beside HTTP.
    pub tls: Option<TlsOptions>,
    /// How long transfers in flight may take to finish when bootd stops.
    pub stop_timeout: Duration,
}

/// The HTTPS listener: its address and the PEM files of its certificate
/// chain and key (see [`crate::tls`]).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// `ADDR:PORT` (port 0: any free port).
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Write the port actually bound to this file.
    pub port_file: Option<PathBuf>,
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    /// The HTTPS listener and its certificate.
    tls: Option<(TcpListener, Arc<Tls>)>,
    state: Arc<State>,
}

/// Stops a running [`Server`]: no new connection, transfers in flight get
/// a bounded time to finish.
pub struct Stopper {
    /// Copies of the listening sockets (the same sockets, other descriptors).
    listeners: Vec<TcpListener>,
    state: Arc<State>,
}

struct State {
    conns: Arc<Conns>,
    /// Node lists being rendered.
    renders: std::sync::atomic::AtomicUsize,
    trees: Trees,
    rate_limit: Option<u64>,
    nodes: Nodes,
    /// Who serves which image's chunks (`/peers`).
    peers: crate::peers::Peers,
    inventory: Option<Arc<Live>>,
    public_url: Option<String>,
    secrets: Option<Arc<Secrets>>,
    ids: Identities,
    /// The admin token (re-read on reload).
    admin: std::sync::RwLock<Option<zeroize::Zeroizing<String>>>,
    admin_file: Option<PathBuf>,
    /// The secrets directory and the served trees it must stay out of,
    /// checked again on reload.
    secrets_check: Option<(PathBuf, Vec<(&'static str, PathBuf)>)>,
    tls: Option<Arc<Tls>>,
    /// bootd is stopping: the accept loops end.
    stopping: std::sync::atomic::AtomicBool,
}

/// Read the admin token: the file must not be readable by group or others
/// and hold at least 16 characters (one line).
pub fn read_admin_token(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    use std::os::unix::fs::PermissionsExt;
    let md =
        std::fs::metadata(path).with_context(|| format!("--admin-token {}", path.display()))?;
    if md.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "--admin-token {}: mode {:04o} lets other users read it; chmod 600 it",
            path.display(),
            md.permissions().mode() & 0o7777
        );
    }
    if md.len() > 4096 {
        anyhow::bail!("--admin-token {}: larger than 4 KiB", path.display());
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading --admin-token {}", path.display()))?,
    );
    let t = text.trim();
    if t.len() < 16 || t.contains(char::is_whitespace) || !t.is_ascii() {
        anyhow::bail!(
            "--admin-token {}: want one word of at least 16 ASCII characters \
             (e.g. head -c 32 /dev/urandom | base64 > {})",
            path.display(),
            path.display()
        );
    }
    Ok(zeroize::Zeroizing::new(t.to_string()))
}

impl Server {
    /// Check the trees and bind `listen` (`127.0.0.1:0` picks a free port).
    pub fn bind(listen: &str, cfg: &Config) -> Result<Server> {
        let trees = Trees::new(&cfg.root, cfg.repo.as_deref())?;
        let inventory = match &cfg.inventory {
            Some(p) => Some(Live::start(p)?),
            None => None,
        };
        let mut served = vec![("--root", cfg.root.clone())];
        served.extend(cfg.repo.clone().map(|r| ("--repo", r)));
        let secrets = match &cfg.secrets {
            Some(dir) => Some(Arc::new(Secrets::new(
                dir,
                cfg.token_ttl,
                &borrowed(&served),
            )?)),
            None => None,
        };
        let ids = Identities::new(cfg.state.as_deref())?;
        if cfg.state.is_none() && cfg.inventory.is_some() {
            tracing::warn!(
                "no --state: enrolled node keys live in memory and are forgotten at restart \
                 (hosts with enroll = true can then enroll a new key)"
            );
        }
        let admin = cfg
            .admin_token
            .as_deref()
            .map(read_admin_token)
            .transpose()?;
        let tls = match &cfg.tls {
            Some(t) => Some(Tls::load(&t.cert, &t.key)?),
            None => None,
        };
        let listener =
            TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        let tls_listener = match (&cfg.tls, &tls) {
            (Some(o), Some(t)) => Some((
                TcpListener::bind(&o.listen)
                    .with_context(|| format!("listening on {} (tls_listen)", o.listen))?,
                t.clone(),
            )),
            _ => None,
        };
        crate::metrics::global().start(SystemTime::now());
        Ok(Server {
            listener,
            tls: tls_listener,
            state: Arc::new(State {
                conns: Arc::new(Conns::new(cfg.limits)),
                renders: Default::default(),
                trees,
                rate_limit: cfg.rate_limit,
                nodes: Nodes::open(cfg.state.as_deref(), cfg.max_nodes)?,
                peers: crate::peers::Peers::default(),
                inventory,
                public_url: cfg.public_url.clone(),
                secrets,
                ids,
                admin: std::sync::RwLock::new(admin),
                admin_file: cfg.admin_token.clone(),
                secrets_check: cfg.secrets.clone().map(|d| (d, served)),
                tls,
                stopping: Default::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// The HTTPS listener's address, if any.
    pub fn tls_addr(&self) -> Result<Option<SocketAddr>> {
        self.tls
            .as_ref()
            .map(|(l, _)| l.local_addr().context("reading the bound HTTPS address"))
            .transpose()
    }

    /// What stops this server once it runs.
    pub fn stopper(&self) -> Result<Stopper> {
        let mut listeners = vec![self.listener.try_clone()?];
        if let Some((l, _)) = &self.tls {
            listeners.push(l.try_clone()?);
        }
        Ok(Stopper {
            listeners,
            state: self.state.clone(),
        })
    }

    /// Accept connections until stopped ([`Stopper::stop`]), one thread
    /// each, within the limits of [`crate::limits`]; HTTPS on a thread of
    /// its own.
    pub fn run(self) -> Result<()> {
        if let Some((l, tls)) = self.tls {
            let state = self.state.clone();
            std::thread::Builder::new()
                .name("bootd-https".into())
                .spawn(move || accept_loop(&l, Some(&tls), &state))
                .context("starting the HTTPS accept thread")?;
        }
        accept_loop(&self.listener, None, &self.state);
        Ok(())
    }
}

impl Stopper {
    /// Stop accepting, close the connections waiting for a request, and
    /// wait at most `grace` for the responses in flight; the number of
    /// connections still open at the end (0: all finished).
    pub fn stop(&self, grace: Duration) -> usize {
        use std::sync::atomic::Ordering;
        self.state.stopping.store(true, Ordering::SeqCst);
        for l in &self.listeners {
            // Wakes the accept loop blocked on it (Linux: EINVAL).
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(l),
                nix::sys::socket::Shutdown::Both,
            );
        }
        self.state.conns.drain();
        let t = Instant::now();
        loop {
            let open = self.state.conns.open();
            if open == 0 || t.elapsed() >= grace {
                return open;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reload what bootd reads from files: the inventory, the secrets
    /// directory's checks, the admin token and the TLS certificate. A file
    /// that does not load is logged and the previous one kept. `true` when
    /// everything loaded.
    pub fn reload(&self) -> bool {
        let st = &self.state;
        let mut ok = true;
        if let Some(live) = &st.inventory {
            ok &= live.reload_logged();
        }
        if let Some((dir, served)) = &st.secrets_check {
            if let Err(e) = Secrets::new(dir, Duration::from_secs(1), &borrowed(served)) {
                tracing::error!("secrets directory: {e:#}");
                ok = false;
            }
        }
        if let Some(f) = &st.admin_file {
            match read_admin_token(f) {
                Ok(t) => *st.admin.write().unwrap_or_else(|p| p.into_inner()) = Some(t),
                Err(e) => {
                    tracing::error!("admin token not reloaded, keeping the previous one: {e:#}");
                    ok = false;
                }
            }
        }
        if let Some(tls) = &st.tls {
            ok &= tls.reload_logged();
        }
        ok
    }
}

/// `[(name, path)]` as the borrowed pairs [`Secrets::new`] takes.
fn borrowed<'a>(v: &'a [(&'static str, PathBuf)]) -> Vec<(&'static str, &'a Path)> {
    v.iter().map(|(n, p)| (*n, p.as_path())).collect()
}

/// Accept connections on `listener` (HTTPS with `tls`) until bootd stops.
fn accept_loop(listener: &TcpListener, tls: Option<&Arc<Tls>>, state: &Arc<State>) {
    use std::sync::atomic::Ordering;
    loop {
        let conn = listener.accept();
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match conn {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: do not spin.
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let ticket = match state.conns.admit(&stream, peer.ip()) {
            Ok(t) => t,
            Err(why) => {
                // A TLS client cannot read a plain 503: it is closed.
                if tls.is_none() {
                    refuse(stream, why);
                }
                continue;
            }
        };
        let session = match tls.map(|t| ServerConnection::new(t.config())).transpose() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{peer}: cannot start a TLS session: {e}");
                continue;
            }
        };
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("bootd-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                let session = session.map(std::cell::RefCell::new);
                let wire = Wire {
                    sock: &stream,
                    tls: session.as_ref(),
                };
                // A panic (none is known: the parsers are fuzzed) ends
                // this connection only; the ticket is given back.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    connection(wire, peer, &ticket, &state)
                }));
                if r.is_err() {
                    tracing::error!("{peer}: the connection panicked: closed");
                }
                drop(ticket);
                drop(session);
                drop(stream);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a connection thread: {e}");
        }
    }
}

/// Stack of a connection thread (the default 2 MiB is address space the
/// connections do not use).
const CONN_STACK: usize = 512 * 1024;

/// Answer a connection that is not taken with 503 and close it, without
/// waiting on the client.
fn refuse(stream: TcpStream, why: Refusal) {
    let reason = match why {
        Refusal::PerClient => "too many connections from your address",
        Refusal::Full => "bootd is busy",
    };
    let body = format!("503 Service Unavailable: {reason}, try again\n");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: bootd\r\nRetry-After: 1\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write(head.as_bytes());
}

/// `bootd serve`: bind, write the port to `port_file` (for harnesses that
/// start bootd on port 0), announce the address on stderr, serve; tell
/// systemd (`$NOTIFY_SOCKET`, see [`crate::notify`]) READY once listening.
///
/// Signals: SIGHUP reloads what bootd reads from files ([`Stopper::reload`],
/// RELOADING then READY); SIGTERM and SIGINT stop it (STOPPING): no new
/// connection, the idle ones closed, responses in flight get
/// `cfg.stop_timeout` to finish, then bootd exits 0.
pub fn run(listen: &str, cfg: &Config, port_file: Option<&Path>) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Before any thread starts, so that every thread inherits the mask and
    // only this one takes the signals (sigwait).
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals
        .thread_block()
        .context("blocking SIGHUP, SIGTERM and SIGINT")?;
    let mut cfg = cfg.clone();
    cfg.limits.max_connections = crate::limits::raise_nofile(cfg.limits.max_connections);
    let cfg = &cfg;
    let server = Server::bind(listen, cfg)?;
    let addr = server.local_addr()?;
    let tls_addr = server.tls_addr()?;
    let inventory = server.state.inventory.clone();
    crate::netboot::start(
        &cfg.netboot,
        inventory,
        addr,
        cfg.public_url.as_deref(),
        &cfg.root,
        server.state.secrets.clone(),
    )?;
    if let Some(tls) = &server.state.tls {
        tls.watch()?;
    }
    // HTTPS's first: a harness that waits for the HTTP port finds both.
    if let (Some(a), Some(p)) = (
        tls_addr,
        cfg.tls.as_ref().and_then(|t| t.port_file.as_ref()),
    ) {
        write_port_file(p, a.port())?;
    }
    if let Some(p) = port_file {
        write_port_file(p, addr.port())?;
    }
    let stopper = server.stopper()?;
    std::thread::Builder::new()
        .name("bootd-http".into())
        .spawn(move || server.run())
        .context("starting the HTTP accept thread")?;
    eprintln!("bootd: listening on http://{addr}");
    let https = tls_addr
        .map(|a| format!(" and https://{a}"))
        .unwrap_or_default();
    if let Some(a) = tls_addr {
        eprintln!("bootd: listening on https://{a}");
    }
    crate::notify::send(&format!("READY=1\nSTATUS=serving http://{addr}{https}"));
    loop {
        let sig = signals.wait().context("waiting for signals")?;
        match sig {
            Signal::SIGHUP => {
                crate::notify::send(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
                    crate::notify::monotonic_usec()
                ));
                tracing::info!("SIGHUP: reloading");
                let all = stopper.reload();
                let status = if all {
                    "reloaded"
                } else {
                    "reload incomplete: previous files kept (see the log)"
                };
                crate::notify::send(&format!("READY=1\nSTATUS={status}"));
            }
            _ => {
                crate::notify::send("STOPPING=1\nSTATUS=stopping: finishing transfers");
                let grace = cfg.stop_timeout;
                tracing::info!(
                    "{sig}: stopping; transfers in flight get {} s to finish",
                    grace.as_secs_f64()
                );
                let left = stopper.stop(grace);
                if left > 0 {
                    tracing::warn!(
                        "stopped with {left} connections still open after {} s",
                        grace.as_secs_f64()
                    );
                } else {
                    tracing::info!("stopped");
                }
                return Ok(());
            }
        }
    }
}

/// Write `port` to `path` atomically (temporary file + rename), so a reader
/// polling the file never sees a partial number.
pub fn write_port_file(path: &Path, port: u16) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, port.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing the port file {}", path.display()))
}

/// What happened to one request, for the access log.
struct Outcome {
    status: u16,
    /// Body bytes sent.
    bytes: u64,
    /// The transfer (or the head) failed: the connection is dropped.
    error: Option<std::io::Error>,
}

impl Outcome {
    fn done(status: u16, bytes: u64, r: std::io::Result<()>) -> Outcome {
        Outcome {
            status,
            bytes,
            error: r.err(),
        }
    }
}

fn connection(wire: Wire<'_>, peer: SocketAddr, ticket: &crate::limits::Ticket, state: &State) {
    let limits = *state.conns.limits();
    let _ = wire.sock.set_nodelay(true);
    let _ = wire.sock.set_write_timeout(Some(limits.write_timeout));
    // A TLS handshake must end within the head timeout.
    let mut reader = BufReader::new(Timed::over(wire, limits.head_timeout));
    if let Err(e) = reader.get_mut().handshake() {
        if let Some(left_out) = BAD_HEADS.take() {
            tracing::info!(
                "TLS handshake with {peer} failed: {e}{}",
                crate::left_out(left_out)
            );
        }
        return;
    }
    let mut out = wire;
    serve(&mut reader, &mut out, peer, ticket, state);
    wire.close();
}

/// The requests of one connection, until it closes.
fn serve(
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    peer: SocketAddr,
    ticket: &crate::limits::Ticket,
    state: &State,
) {
    let limits = *state.conns.limits();
    loop {
        // Waiting for a head: closable for a newcomer; the first byte starts
        // the head's own deadline. Not when bootd is stopping.
        if !ticket.set_idle(reader.buffer().is_empty()) {
            return;
        }
        reader
            .get_mut()
            .arm(limits.idle_timeout, limits.head_timeout);
        let req = match read_request(reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(HeadError::Io(e)) => {
                tracing::debug!("{peer}: {e}");
                return;
            }
            Err(e) => {
                let status = if matches!(e, HeadError::TooLarge) {
                    431
                } else {
                    400
                };
                let t = Instant::now();
                let o = error_page(out, status, false, Conn::CLOSE);
                crate::metrics::global().http(None, "", o.status, o.bytes);
                // A client that hangs up inside its head, or sends garbage,
                // is common on a hostile network: rationed lines.
                if let Some(left_out) = BAD_HEADS.take() {
                    tracing::info!(
                        status = o.status,
                        bytes = o.bytes,
                        ms = t.elapsed().as_millis() as u64,
                        error = %e,
                        "bad request head from {peer}{}",
                        crate::left_out(left_out)
                    );
                }
                return;
            }
        };
        let _ = ticket.set_idle(false);
        let t = Instant::now();
        // Only `POST /status` reads its body: other requests with one end
        // their connection.
        let mut conn = Conn {
            keep: req.keep_alive() && !req.has_body(),
            http10: req.minor_version == 0,
        };
        reader.get_mut().within(limits.body_timeout);
        let o = respond(&req, reader, out, state, &mut conn, peer);
        crate::metrics::global().http(req.path(), &req.method, o.status, o.bytes);
        tracing::info!(
            status = o.status,
            bytes = o.bytes,
            ms = t.elapsed().as_millis() as u64,
            range = req
                .header("range")
                .map(crate::clean)
                .map(tracing::field::display),
            error = o.error.as_ref().map(tracing::field::display),
            tls = out.is_tls().then_some(true),
            "{} {}",
            req.method,
            crate::clean(&crate::secrets::redact(&req.target)),
        );
        if !conn.keep || o.error.is_some() {
            return;
        }
    }
}

/// Whether the connection stays open after a response.
#[derive(Debug, Clone, Copy)]
struct Conn {
    keep: bool,
    /// An HTTP/1.0 client, which keeps the connection only when told.
    http10: bool,
}

impl Conn {
    const CLOSE: Conn = Conn {
        keep: false,
        http10: false,
    };

    /// The `Connection` header to send, if any.
    fn header(self) -> Option<(&'static str, String)> {
        match (self.keep, self.http10) {
            (false, _) => Some(("Connection", "close".into())),
            (true, true) => Some(("Connection", "keep-alive".into())),
            (true, false) => None,
        }
    }
}

/// A response with a small body held in memory.
fn small_response(
    out: &mut Wire<'_>,
    status: u16,
    content_type: &str,
    body: &str,
    head_only: bool,
    conn: Conn,
    extra: &[(&'static str, String)],
) -> Outcome {
    let body = body.as_bytes();
    bytes_response(out, status, content_type, body, head_only, conn, extra)
}

/// [`small_response`] with a body of bytes.
fn bytes_response(
    out: &mut Wire<'_>,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    conn: Conn,
    extra: &[(&'static str, String)],
) -> Outcome {
    let mut headers = vec![
        ("Content-Type", content_type.to_string()),
        ("Content-Length", body.len().to_string()),
    ];
    headers.extend(extra.iter().cloned());
    headers.extend(conn.header());
    let r = write_head(out, status, &headers).and_then(|()| {
        if head_only {
            Ok(())
        } else {
            out.write_all(body)
        }
    });
    Outcome::done(status, if head_only { 0 } else { body.len() as u64 }, r)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// An error response whose body is `reason`, one line saying what the
/// client should fix.
fn text_error(out: &mut Wire<'_>, status: u16, reason: &str, conn: Conn) -> Outcome {
    small_response(out, status, TEXT, &format!("{reason}\n"), false, conn, &[])
}

/// A short text/plain error response.
fn error_page(out: &mut Wire<'_>, status: u16, head_only: bool, conn: Conn) -> Outcome {
    let body = format!("{status} {}\n", crate::http::reason(status));
    let allow = if status == 405 {
        vec![("Allow", "GET, HEAD".to_string())]
    } else {
        vec![]
    };
    small_response(out, status, TEXT, &body, head_only, conn, &allow)
}

/// A 405 naming the one method `allow`ed (no body to a HEAD).
fn method_not_allowed(
    req: &Request,
    out: &mut Wire<'_>,
    allow: &str,
    body: &str,
    conn: Conn,
) -> Outcome {
    let head_only = req.method == "HEAD";
    let allow = [("Allow", allow.to_string())];
    small_response(out, 405, TEXT, body, head_only, conn, &allow)
}

/// Path of the node status endpoint (`POST`).
pub const STATUS_PATH: &str = "/status";
/// Path of the node list (`GET`, JSON).
pub const NODES_PATH: &str = "/nodes";

/// Read a request's body (Content-Length, at most `max` bytes); on a
/// refusal, the answer already sent.
fn read_body(
    req: &Request,
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    conn: &mut Conn,
    max: usize,
) -> Result<Vec<u8>, Outcome> {
    let expects_continue = req.minor_version >= 1
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let len = match body_length(req, max) {
        Ok(n) => n,
        Err(e) => {
            conn.keep = false;
            if let BodyError::TooLarge { len, .. } = e {
                if !expects_continue && len <= MAX_DRAIN {
                    let _ = std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink());
                }
            }
            if BAD_STATUS.take().is_some() {
                tracing::info!("{} {} refused: {e}", req.method, crate::clean(&req.target));
            }
            return Err(text_error(out, e.status(), &e.to_string(), *conn));
        }
    };
    if expects_continue {
        if let Err(e) = out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n") {
            return Err(Outcome::done(100, 0, Err(e)));
        }
    }
    let mut body = vec![0; len];
    if let Err(e) = reader.read_exact(&mut body) {
        // The client went away inside its body: nobody to answer.
        conn.keep = false;
        return Err(Outcome::done(400, 0, Err(e)));
    }
    conn.keep = req.keep_alive();
    Ok(body)
}

/// `POST /status`: read the JSON body (Content-Length, at most
/// [`MAX_BODY`]), check it, record it, answer 204.
fn post_status(
    req: &Request,
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    state: &State,
    conn: &mut Conn,
) -> Outcome {
    if req.method != "POST" {
        let body = "405 Method Not Allowed: POST a node status here\n";
        return method_not_allowed(req, out, "POST", body, *conn);
    }
    let body = match read_body(req, reader, out, conn, MAX_BODY) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match Report::parse(&body) {
        Err(e) => {
            if BAD_STATUS.take().is_some() {
                tracing::info!("status refused: {e}");
            }
            text_error(out, 400, &e.to_string(), *conn)
        }
        Ok(r) => {
            let auth = req.header("authorization");
            let signed = match status_allowed(state, &r, auth, &req.target, &body) {
                Ok(s) => s,
                Err((status, e)) => {
                    let id = crate::secrets::bearer(auth).map(crate::secrets::token_id);
                    if BAD_STATUS.take().is_some() {
                        tracing::warn!(
                            token = id.as_deref().map(tracing::field::display),
                            "status of {} refused: {e}",
                            r.hostname
                        );
                    }
                    let reason = crate::http::reason(status);
                    return text_error(out, status, &format!("{status} {reason}: {e}"), *conn);
                }
            };
            tracing::info!(
                mac = r.mac.as_deref().map(tracing::field::display),
                msg = r.message.as_deref().map(tracing::field::debug),
                image = r
                    .image
                    .as_deref()
                    .map(crate::clean)
                    .map(tracing::field::display),
                key = signed.as_deref().map(tracing::field::display),
                "node {} {}",
                r.hostname,
                r.phase,
            );
            state.nodes.record(r, SystemTime::now());
            let headers: Vec<_> = conn.header().into_iter().collect();
            Outcome::done(204, 0, write_head(out, 204, &headers))
        }
    }
}

/// `GET /peers?image=<sha256>`: who serves that image's chunks (JSON);
/// `POST /peers` `{"image","port"}`: the client serves them on that port
/// of its own address (see [`crate::peers`]).
fn peers(
    req: &Request,
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    state: &State,
    conn: &mut Conn,
    peer: SocketAddr,
) -> Outcome {
    use crate::peers::{answer_json, parse_claim, parse_image, MAX_BODY};
    let now = std::time::Instant::now();
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        if let Some(left_out) = BAD_PEERS.take() {
            tracing::info!(
                "{what} from {peer} refused: {e}{}",
                crate::left_out(left_out)
            );
        }
    };
    match req.method.as_str() {
        "GET" | "HEAD" => {
            let image = match query_param(req, "image").map(|i| parse_image(&i)) {
                Some(Ok(i)) => i,
                Some(Err(e)) => return text_error(out, 400, &e.to_string(), *conn),
                None => {
                    let e = "image: missing (GET /peers?image=<sha256>)";
                    return text_error(out, 400, e, *conn);
                }
            };
            let port = match query_param(req, "port").map(|p| p.parse::<u16>()) {
                None => None,
                Some(Ok(p)) if p != 0 => Some(p),
                Some(_) => {
                    let e = "port: not a number from 1 to 65535";
                    return text_error(out, 400, e, *conn);
                }
            };
            let list = state.peers.list(&image, peer.ip(), port, now);
            let extra = [("Cache-Control", "no-store".to_string())];
            let body = answer_json(&list);
            small_response(
                out,
                200,
                "application/json",
                &body,
                req.method == "HEAD",
                *conn,
                &extra,
            )
        }
        "POST" => {
            let body = match read_body(req, reader, out, conn, MAX_BODY) {
                Ok(b) => b,
                Err(o) => return o,
            };
            let (image, port) = match parse_claim(&body) {
                Ok(c) => c,
                Err(e) => {
                    refused("peer claim", &e);
                    return text_error(out, 400, &e.to_string(), *conn);
                }
            };
            match state.peers.claim(&image, peer.ip(), port, now) {
                Ok(()) => {
                    tracing::debug!("{peer}: serves chunks of {image} on port {port}");
                    let headers: Vec<_> = conn.header().into_iter().collect();
                    Outcome::done(204, 0, write_head(out, 204, &headers))
                }
                Err(e) => {
                    refused("peer claim", &e);
                    let status = e.status();
                    let reason = crate::http::reason(status);
                    text_error(out, status, &format!("{status} {reason}: {e}"), *conn)
                }
            }
        }
        _ => {
            let body = "405 Method Not Allowed: GET /peers?image=<sha256>, or POST a claim\n";
            method_not_allowed(req, out, "GET, HEAD, POST", body, *conn)
        }
    }
}

/// Node lists rendered at once (each is bounded by its page; this bounds
/// their sum).
const RENDERS: usize = 8;

/// Whether `r` may be recorded; `Some(fingerprint)` when it was signed.
///
/// A signed report (`Authorization: Nodeboot …`) must verify with the
/// host's key and name the host and MAC it was signed for. An unsigned
/// one: with an inventory, only its hosts report, each with one of its own
/// MACs, and never a host bootd has a key for (its reports must be signed);
/// with secrets as well, a host that boots with a token (`provision =
/// true`) must send it (`Authorization: Bearer`). Without an inventory
/// anyone may report (the table is bounded by `--max-nodes`).
fn status_allowed(
    state: &State,
    r: &Report,
    auth: Option<&str>,
    target: &str,
    body: &[u8],
) -> Result<Option<String>, (u16, String)> {
    let refused = |e: Refused| (e.status(), e.to_string());
    if auth.is_some_and(nodeboot_identity::Auth::is_ours) {
        let Some(live) = &state.inventory else {
            return Err((
                403,
                "bootd runs without --inventory: it knows no node's key".into(),
            ));
        };
        let v = state
            .ids
            .verify(auth, "POST", target, body, &live.get())
            .map_err(refused)?;
        if v.host != r.hostname {
            return Err(refused(Refused::OtherHost {
                asked: r.hostname.clone(),
                signed: v.host,
            }));
        }
        if r.mac.as_deref().is_some_and(|m| m != v.mac) {
            return Err((
                403,
                format!(
                    "the report names MAC {} but is signed for {}",
                    r.mac.as_deref().unwrap_or_default(),
                    v.mac
                ),
            ));
        }
        return Ok(Some(v.fingerprint));
    }
    let verify = |secrets: &Secrets| {
        secrets
            .verify_status(auth, &r.hostname, r.mac.as_deref())
            .map(|()| None)
            .map_err(|e| (e.status(), e.to_string()))
    };
    let Some(live) = &state.inventory else {
        return match (&state.secrets, auth) {
            (Some(secrets), Some(_)) => verify(secrets),
            _ => Ok(None),
        };
    };
    let inv = live.get();
    let Some(host) = inv.hosts.iter().find(|h| h.name == r.hostname) else {
        return Err((403, format!("no host {} in the inventory", r.hostname)));
    };
    if let Some(mac) = &r.mac {
        if !host
            .interfaces
            .iter()
            .any(|n| n.mac.as_deref() == Some(mac))
        {
            return Err((403, format!("{mac} is not an interface of {}", host.name)));
        }
    }
    if let Some(k) = state.ids.key(&host.name) {
        return Err((
            401,
            format!(
                "{} has an identity key ({}): its status must be signed by it",
                host.name,
                k.fingerprint()
            ),
        ));
    }
    match &state.secrets {
        Some(secrets) if host.provision || auth.is_some() => verify(secrets),
        _ => Ok(None),
    }
}

/// Whether the request carries the admin token (`Authorization: Bearer
/// TOKEN`, or Basic with TOKEN as the password, for a browser).
fn admin_check(state: &State, req: &Request) -> Result<(), (u16, &'static str)> {
    let admin = state.admin.read().unwrap_or_else(|p| p.into_inner());
    let Some(token) = admin.as_ref() else {
        return Err((
            403,
            "bootd runs without --admin-token: the fleet's data is not served to anyone",
        ));
    };
    let given: Option<zeroize::Zeroizing<String>> = req.header("authorization").and_then(|v| {
        if let Some(t) = crate::secrets::bearer(Some(v)) {
            return Some(zeroize::Zeroizing::new(t.to_string()));
        }
        let (scheme, b64) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        use base64::Engine;
        let raw = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?,
        );
        let text = std::str::from_utf8(&raw).ok()?;
        Some(zeroize::Zeroizing::new(text.split_once(':')?.1.to_string()))
    });
    match given {
        None => Err((401, "this needs bootd's admin token (Authorization: Bearer, or Basic with the token as password)")),
        Some(g) if ct_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err((403, "wrong admin token")),
    }
}

/// Constant-time equality (length aside).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to a request refused by [`admin_check`].
fn admin_refused(
    req: &Request,
    out: &mut Wire<'_>,
    conn: Conn,
    peer: SocketAddr,
    (status, why): (u16, &'static str),
) -> Outcome {
    if let Some(left_out) = BAD_ADMIN.take() {
        tracing::warn!(
            "{} {} from {peer} refused: {why}{}",
            req.method,
            crate::clean(&req.target),
            crate::left_out(left_out)
        );
    }
    let body = format!("{status} {}: {why}\n", crate::http::reason(status));
    let extra = if status == 401 {
        vec![(
            "WWW-Authenticate",
            "Basic realm=\"bootd\", charset=\"UTF-8\"".to_string(),
        )]
    } else {
        vec![]
    };
    small_response(out, status, TEXT, &body, req.method == "HEAD", conn, &extra)
}

/// A refused signed request or enrollment: a rationed log line naming the
/// host and MAC the header claims and the address, and the answer.
fn identity_refused(
    req: &Request,
    out: &mut Wire<'_>,
    conn: Conn,
    peer: SocketAddr,
    what: &str,
    e: Refused,
) -> Outcome {
    if let Some(left_out) = BAD_IDENTITY.take() {
        let claimed = req
            .header("authorization")
            .and_then(|v| nodeboot_identity::Auth::parse(v).ok())
            .map(|a| format!("host {}, mac {}", a.host, a.mac))
            .unwrap_or_else(|| "unsigned".into());
        tracing::warn!(
            "{what} refused ({claimed}, from {peer}): {e}{}",
            crate::left_out(left_out)
        );
    }
    let status = e.status();
    let body = format!("{status} {}: {e}\n", crate::http::reason(status));
    let extra = if status == 401 {
        vec![("WWW-Authenticate", nodeboot_identity::SCHEME.to_string())]
    } else {
        vec![]
    };
    small_response(out, status, TEXT, &body, false, conn, &extra)
}

/// `GET /identity/nonce`: a fresh nonce for one signed request.
fn nonce(req: &Request, out: &mut Wire<'_>, state: &State, conn: Conn) -> Outcome {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed(
            req,
            out,
            "GET",
            "405 Method Not Allowed: GET a nonce\n",
            conn,
        );
    }
    let n = match state.ids.nonce() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{e}");
            return text_error(out, 503, &format!("503 Service Unavailable: {e}"), conn);
        }
    };
    let extra = [("Cache-Control", "no-store".to_string())];
    small_response(out, 200, TEXT, &n, req.method == "HEAD", conn, &extra)
}

/// `POST /identity/enroll`: the body is the node's public key, the request
/// signed by it (see [`crate::identity`]).
fn enroll(
    req: &Request,
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    state: &State,
    conn: &mut Conn,
    peer: SocketAddr,
) -> Outcome {
    if req.method != "POST" {
        return method_not_allowed(
            req,
            out,
            "POST",
            "405 Method Not Allowed: POST a public key\n",
            *conn,
        );
    }
    let body = match read_body(req, reader, out, conn, crate::identity::MAX_ENROLL_BODY) {
        Ok(b) => b,
        Err(o) => return o,
    };
    let Some(live) = &state.inventory else {
        return text_error(
            out,
            404,
            "404 Not Found: bootd runs without --inventory",
            *conn,
        );
    };
    match state
        .ids
        .enroll(req.header("authorization"), &req.target, &body, &live.get())
    {
        Ok((v, crate::identity::Enrolled::Same { fingerprint })) => {
            tracing::info!(
                "{} ({}, from {peer}) enrolled again with its key {fingerprint}: no change",
                v.host,
                v.mac
            );
            small_response(
                out,
                200,
                TEXT,
                &format!("{} already has key {fingerprint}\n", v.host),
                false,
                *conn,
                &[],
            )
        }
        Ok((
            v,
            crate::identity::Enrolled::New {
                fingerprint,
                replaced,
                how,
            },
        )) => {
            let replacing = replaced
                .map(|r| format!(", replacing {r}"))
                .unwrap_or_default();
            tracing::warn!(
                "{} ({}, from {peer}) enrolled key {fingerprint} ({how}){replacing}; disarmed",
                v.host,
                v.mac
            );
            small_response(
                out,
                200,
                TEXT,
                &format!("{} enrolled with key {fingerprint}\n", v.host),
                false,
                *conn,
                &[],
            )
        }
        Err(e) => identity_refused(req, out, *conn, peer, "enrollment", e),
    }
}

/// `POST /admin/arm?host=H&for=SECONDS`: arm a host for one enrollment.
fn arm(req: &Request, out: &mut Wire<'_>, state: &State, conn: Conn, peer: SocketAddr) -> Outcome {
    // Arming changes who a node is: the admin token as a Bearer header
    // only (a browser never adds that to a cross-site request, as it adds
    // Basic credentials), and from bootd's own host only (the token must
    // not cross the provisioning network in clear).
    if !peer.ip().is_loopback() {
        return admin_refused(
            req,
            out,
            conn,
            peer,
            (
                403,
                "bootd arm works from bootd's own host only (127.0.0.1, ::1)",
            ),
        );
    }
    if crate::secrets::bearer(req.header("authorization")).is_none() {
        return admin_refused(
            req,
            out,
            conn,
            peer,
            (
                401,
                "this needs bootd's admin token (Authorization: Bearer)",
            ),
        );
    }
    if let Err(e) = admin_check(state, req) {
        return admin_refused(req, out, conn, peer, e);
    }
    if req.method != "POST" {
        return method_not_allowed(
            req,
            out,
            "POST",
            "405 Method Not Allowed: POST here\n",
            conn,
        );
    }
    let Some(live) = &state.inventory else {
        return text_error(
            out,
            404,
            "404 Not Found: bootd runs without --inventory",
            conn,
        );
    };
    let Some(host) =
        query_param(req, "host").filter(|h| live.get().hosts.iter().any(|x| &x.name == h))
    else {
        return text_error(
            out,
            404,
            "404 Not Found: want ?host= a host of the inventory",
            conn,
        );
    };
    let secs = match query_param(req, "for").map(|f| crate::secrets::parse_ttl(&f)) {
        None => crate::identity::DEFAULT_ARM,
        Some(Ok(d)) if d <= Duration::from_secs(7 * 86400) => d,
        Some(_) => {
            return text_error(
                out,
                400,
                "400 Bad Request: for= wants 1s to 7 days (900, 30m, 2h)",
                conn,
            )
        }
    };
    state.ids.arm(&host, secs);
    tracing::warn!(
        "{host} armed for one enrollment for {} s (admin, from {peer})",
        secs.as_secs()
    );
    small_response(
        out,
        200,
        TEXT,
        &format!("{host} armed for one enrollment for {} s\n", secs.as_secs()),
        false,
        conn,
        &[],
    )
}

/// `GET /nodes` (JSON) and `GET /` (the page), never cached, one page of
/// at most [`crate::status::MAX_PAGE`] nodes (`?offset=&limit=`).
fn node_list(req: &Request, path: &str, out: &mut Wire<'_>, state: &State, conn: Conn) -> Outcome {
    let number = |name: &str| query_param(req, name).and_then(|v| v.parse::<usize>().ok());
    let offset = number("offset").unwrap_or(0);
    let limit = number("limit")
        .unwrap_or(crate::status::PAGE)
        .clamp(1, crate::status::MAX_PAGE);
    let busy = state
        .renders
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
        >= RENDERS;
    let _done = Guard(&state.renders);
    if busy {
        let extra = [("Retry-After", "1".to_string())];
        let body = "503 Service Unavailable: too many node lists at once, try again\n";
        return small_response(out, 503, TEXT, body, false, conn, &extra);
    }
    let now = SystemTime::now();
    let page = state.nodes.page(offset, limit);
    let (ctype, body) = if path == NODES_PATH {
        ("application/json", nodes_json(&page, now))
    } else {
        ("text/html; charset=utf-8", crate::page::render(&page, now))
    };
    let head_only = req.method == "HEAD";
    let extra = [("Cache-Control", "no-store".to_string())];
    small_response(out, 200, ctype, &body, head_only, conn, &extra)
}

/// `GET /metrics`: the counters (no token: counts only, see
/// [`crate::metrics`]).
fn metrics(req: &Request, out: &mut Wire<'_>, state: &State, conn: Conn) -> Outcome {
    let now = crate::metrics::Now {
        connections: state.conns.open(),
        nodes: state.nodes.by_phase(),
    };
    let body = crate::metrics::global().render(&now);
    let ctype = "text/plain; version=0.0.4; charset=utf-8";
    let extra = [("Cache-Control", "no-store".to_string())];
    small_response(out, 200, ctype, &body, req.method == "HEAD", conn, &extra)
}

/// Gives back a counted slot on drop.
struct Guard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Path of the per-host iPXE script (`GET ?mac=…`).
pub const IPXE_PATH: &str = "/boot/ipxe";
/// Path of the per-host GRUB config (`GET ?mac=…`; over TFTP it is
/// `grub/grub.cfg-MAC`, see [`crate::grub`]).
pub const GRUB_PATH: &str = "/boot/grub";

/// What a boot config is written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loader {
    Ipxe,
    Grub,
}

/// The value of `name` in the request's query string, percent-decoded.
fn query_param(req: &Request, name: &str) -> Option<String> {
    let q = req.target.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or("");
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| {
            crate::http::percent_decode(v)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        })
    })
}

/// `GET /boot/ipxe?mac=…`: the host's iPXE script; `GET /boot/grub?mac=…`:
/// its GRUB config (an unknown MAC gets one that hands back to the
/// firmware).
fn boot_config(
    req: &Request,
    out: &mut Wire<'_>,
    state: &State,
    conn: Conn,
    loader: Loader,
) -> Outcome {
    let head_only = req.method == "HEAD";
    let Some(live) = &state.inventory else {
        return text_error(
            out,
            404,
            "404 Not Found: bootd runs without --inventory",
            conn,
        );
    };
    let Some(mac) = query_param(req, "mac").filter(|m| !m.is_empty()) else {
        return text_error(
            out,
            400,
            "400 Bad Request: want ?mac=aa:bb:cc:dd:ee:ff",
            conn,
        );
    };
    let base = match &state.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let scheme = if out.is_tls() { "https" } else { "http" };
            match req.header("host") {
                Some(h) if !h.is_empty() => format!("{scheme}://{h}"),
                _ => match out.sock.local_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => format!("{scheme}://localhost"),
                },
            }
        }
    };
    let inv = live.get();
    // A token for a host that boots from the network, when bootd has secrets.
    // HEAD mints nothing (it would supersede the node's token); its
    // placeholder keeps Content-Length equal to a GET's.
    let extra = match state
        .secrets
        .as_ref()
        .map(|s| s.token_word(&inv, &mac, !head_only))
    {
        None => String::new(),
        Some(Ok(word)) => word,
        Some(Err((host, e))) => {
            tracing::error!("{} for {host}: {e:#}", loader.what());
            let m = format!("500 Internal Server Error: {e:#}");
            return text_error(out, 500, &m, conn);
        }
    };
    let made = match loader {
        Loader::Ipxe => ipxe_script(&inv, &mac, &base, &extra),
        Loader::Grub => grub_config(&inv, &mac, &base, &extra),
    };
    let what = loader.what();
    match made {
        None => {
            if let Some(quiet) = UNKNOWN_MACS.take() {
                tracing::warn!(
                    "{what}: unknown MAC {:?}: no host has it in the inventory{}",
                    crate::clean(&mac),
                    crate::left_out(quiet)
                );
            }
            match loader {
                Loader::Ipxe => text_error(
                    out,
                    404,
                    &format!("404 Not Found: no host has MAC {mac}"),
                    conn,
                ),
                // GRUB fails on a 404 and stops at its prompt: a config
                // that hands back to the firmware instead.
                Loader::Grub => {
                    let why = format!(
                        "no host has MAC {} in bootd's inventory",
                        crate::clean(&mac)
                    );
                    let body = crate::inventory::grub_exit(&why, true);
                    let extra = [("Cache-Control", "no-store".to_string())];
                    small_response(out, 200, TEXT, &body, head_only, conn, &extra)
                }
            }
        }
        Some(Err(e)) => {
            tracing::error!("{what} for MAC {mac}: {e}");
            text_error(out, 500, &format!("500 Internal Server Error: {e}"), conn)
        }
        Some(Ok(script)) => {
            let extra = [("Cache-Control", "no-store".to_string())];
            small_response(out, 200, TEXT, &script, head_only, conn, &extra)
        }
    }
}

impl Loader {
    fn what(self) -> &'static str {
        match self {
            Loader::Ipxe => "iPXE script",
            Loader::Grub => "GRUB config",
        }
    }
}

/// `GET /secrets/<name>`, signed by the host's key (see
/// [`crate::secrets`]): the secret sealed to that key. A secret's bytes
/// are never logged.
fn secret(
    req: &Request,
    path: &str,
    out: &mut Wire<'_>,
    state: &State,
    conn: Conn,
    peer: SocketAddr,
) -> Outcome {
    let (Some(secrets), Some(live)) = (&state.secrets, &state.inventory) else {
        return text_error(
            out,
            404,
            "404 Not Found: bootd runs without --secrets",
            conn,
        );
    };
    let Some(rest) = path
        .strip_prefix(crate::secrets::PREFIX)
        .filter(|_| req.method == "GET")
    else {
        let body = "405 Method Not Allowed: GET /secrets/NAME, signed by the node's key\n";
        return method_not_allowed(req, out, "GET", body, conn);
    };
    let what = format!("secret {:?}", crate::clean(rest));
    let v = match state.ids.verify(
        req.header("authorization"),
        "GET",
        &req.target,
        b"",
        &live.get(),
    ) {
        Ok(v) => v,
        Err(e) => return identity_refused(req, out, conn, peer, &what, e),
    };
    let s = match secrets.fetch(rest, &v.host) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{what} for {} ({}, from {peer}): {e}", v.host, v.mac);
            let status = e.status();
            let body = format!("{status} {}: {e}\n", crate::http::reason(status));
            return small_response(out, status, TEXT, &body, false, conn, &[]);
        }
    };
    // Sealed to the very key the request verified with.
    let sealed = match v.key.seal(&s.bytes) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("sealing {what} for {}: {e}", v.host);
            return text_error(out, 500, "500 Internal Server Error: sealing failed", conn);
        }
    };
    tracing::info!(
        "secret {} sent to {} ({}, from {peer}): {} bytes sealed to key {}",
        s.name,
        v.host,
        v.mac,
        s.bytes.len(),
        v.fingerprint
    );
    let no_store = ("Cache-Control", "no-store".to_string());
    bytes_response(
        out,
        200,
        "application/octet-stream",
        &sealed,
        false,
        conn,
        &[no_store],
    )
}

/// The strong validator of a file: `"<size>-<mtime in ns>"`, both in hex.
pub fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("\"{:x}-{:x}\"", meta.len(), mtime.as_nanos())
}

/// Path of the admin's arming (`POST ?host=&for=`).
pub const ARM_PATH: &str = "/admin/arm";

fn respond(
    req: &Request,
    reader: &mut Reader<'_>,
    out: &mut Wire<'_>,
    state: &State,
    conn: &mut Conn,
    peer: SocketAddr,
) -> Outcome {
    let head_only = req.method == "HEAD";
    let get = req.method == "GET" || head_only;
    match req.path() {
        Some(STATUS_PATH) => return post_status(req, reader, out, state, conn),
        Some(crate::peers::PATH) => return peers(req, reader, out, state, conn, peer),
        // Only the exact path `/`: everything else under it is a file.
        Some(p @ (NODES_PATH | "/")) if get => {
            if let Err(e) = admin_check(state, req) {
                return admin_refused(req, out, *conn, peer, e);
            }
            return node_list(req, p, out, state, *conn);
        }
        Some(crate::metrics::PATH) if get => return metrics(req, out, state, *conn),
        Some(IPXE_PATH) if get => return boot_config(req, out, state, *conn, Loader::Ipxe),
        Some(GRUB_PATH) if get => return boot_config(req, out, state, *conn, Loader::Grub),
        Some(crate::identity::NONCE_PATH) => return nonce(req, out, state, *conn),
        Some(crate::identity::ENROLL_PATH) => return enroll(req, reader, out, state, conn, peer),
        Some(ARM_PATH) => return arm(req, out, state, *conn, peer),
        Some(p) if p.starts_with(crate::secrets::PREFIX) || p == "/secrets" => {
            return secret(req, p, out, state, *conn, peer)
        }
        _ => {}
    }
    let connection = *conn;
    if !get {
        return error_page(out, 405, false, connection);
    }
    let Some(path) = req.path() else {
        return error_page(out, 400, head_only, connection);
    };
    let Artifact { path, file, meta } = match state.trees.open(path) {
        Ok(a) => a,
        Err(why) => {
            let target = crate::secrets::redact(&req.target);
            tracing::debug!("{} {target}: 404, {why}", req.method);
            return error_page(out, 404, head_only, connection);
        }
    };
    let size = meta.len();
    let tag = etag(&meta);
    let last_modified = meta.modified().map(http_date).unwrap_or_default();
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", tag.clone()),
        ("Last-Modified", last_modified.clone()),
        ("Content-Type", content_type(&path).to_string()),
    ];
    headers.extend(connection.header());

    // Conditionals (RFC 9110 §13.2.2): If-None-Match wins over
    // If-Modified-Since, which is compared exactly with the Last-Modified we
    // send (as nginx does by default).
    let not_modified = match req.header("if-none-match") {
        Some(inm) => none_match(inm, &tag),
        None => req
            .header("if-modified-since")
            .is_some_and(|ims| ims == last_modified),
    };
    if not_modified {
        return Outcome::done(304, 0, write_head(out, 304, &headers));
    }

    // Range applies to GET only, and only while If-Range still matches.
    let range = match req.header("range") {
        Some(r) if !head_only => {
            let current = req
                .header("if-range")
                .is_none_or(|ir| if_range_matches(ir, &tag, &last_modified));
            if current {
                parse_range(Some(r), size)
            } else {
                RangeReq::Full
            }
        }
        _ => RangeReq::Full,
    };
    let (status, start, len) = match range {
        RangeReq::Full => (200, 0, size),
        RangeReq::Partial(s, e) => {
            headers.push(("Content-Range", format!("bytes {s}-{e}/{size}")));
            (206, s, e - s + 1)
        }
        RangeReq::Unsatisfiable => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            headers.push(("Content-Length", "0".into()));
            return Outcome::done(416, 0, write_head(out, 416, &headers));
        }
    };
    headers.push(("Content-Length", len.to_string()));
    if let Err(e) = write_head(out, status, &headers) {
        return Outcome::done(status, 0, Err(e));
    }
    if head_only || len == 0 {
        return Outcome::done(status, 0, Ok(()));
    }
    let sent = match out.tls {
        None => send_range(&file, start, len, &mut out.sock, state.rate_limit),
        Some(_) => copy_range(&file, start, len, out, state.rate_limit),
    };
    Outcome {
        status,
        bytes: sent.bytes,
        error: sent.error,
    }
}
