//! What an anonymous client can hold of bootd's HTTP side, and how it is
//! taken back.
//!
//! - **Connections**: at most [`Limits::max_connections`] in all and
//!   [`Limits::per_client`] per client address. A connection past the
//!   per-address limit gets `503` and is closed. When all are taken, the
//!   connection that has waited longest for a request head (an idle
//!   keep-alive, or a client sending its head slowly) is closed to make
//!   room; a connection in the middle of a response is never closed for
//!   another, and when every one is busy the newcomer gets `503`.
//! - **Deadlines**: a request head must arrive whole within
//!   [`Limits::head_timeout`] of its first byte, a body within
//!   [`Limits::body_timeout`]; an idle keep-alive connection is closed after
//!   [`Limits::idle_timeout`]; one write may block [`Limits::write_timeout`].
//!   These are totals, not per-read timeouts: a client sending one byte
//!   every second does not keep a head open past its deadline.
//! - **Descriptors**: bootd raises its soft `RLIMIT_NOFILE` to the hard
//!   limit at start and, when that is still too low for the connections
//!   allowed (two descriptors each: the socket and a file), lowers
//!   `max_connections` with a warning.
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The HTTP limits (`bootd serve --max-connections …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections, all clients.
    pub max_connections: usize,
    /// Open connections per client address.
    pub per_client: usize,
    /// From a request's first byte to the end of its head.
    pub head_timeout: Duration,
    /// From the end of a head to the end of its body (`POST /status`).
    pub body_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long one write to a client may block.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 2048,
            per_client: 64,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Descriptors kept for everything but connections (listeners, TFTP,
/// inventory, logs).
const RESERVED_FDS: u64 = 64;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and return the
/// connections that fit in it (two descriptors each), at most `want`.
pub fn raise_nofile(want: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("reading RLIMIT_NOFILE: {e}");
            return want;
        }
    };
    let mut soft_now = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft_now = hard,
            Err(e) => tracing::warn!("raising RLIMIT_NOFILE from {soft} to {hard}: {e}"),
        }
    }
    let fit = usize::try_from(soft_now.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX);
    if fit < want {
        tracing::warn!(
            "open files limit {soft_now}: at most {fit} connections instead of {want} \
             (raise LimitNOFILE= or lower --max-connections)"
        );
        return fit.max(1);
    }
    want
}

/// Why a new connection is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client address holds `per_client` connections.
    PerClient,
    /// All connections are busy with responses.
    Full,
}

#[derive(Debug)]
struct Entry {
    fd: RawFd,
    ip: IpAddr,
    /// Waiting for a request head since then; `None` while responding.
    idle_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    map: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections closed to make room, and newcomers refused, since the
    /// last log line about them.
    shed: u64,
    refused: u64,
    logged: Option<Instant>,
    /// bootd is stopping: no connection waits for another request.
    draining: bool,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.map.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }
}

/// The open connections.
#[derive(Debug)]
pub struct Conns {
    limits: Limits,
    table: Mutex<Table>,
}

/// A connection's registration, removed on drop. The socket must outlive it
/// (it is declared after the stream, or dropped first): the table may shut
/// the descriptor down while the registration exists.
#[derive(Debug)]
pub struct Ticket {
    conns: std::sync::Arc<Conns>,
    id: u64,
}

impl Conns {
    pub fn new(limits: Limits) -> Conns {
        Conns {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections (for tests and the log).
    pub fn open(&self) -> usize {
        self.lock().map.len()
    }

    /// Register `stream` from `ip`, closing the longest-idle connection to
    /// make room when all are taken.
    pub fn admit(
        self: &std::sync::Arc<Self>,
        stream: &TcpStream,
        ip: IpAddr,
    ) -> Result<Ticket, Refusal> {
        let mut t = self.lock();
        let mine = t.per_ip.get(&ip).copied().unwrap_or(0);
        let refuse = |t: &mut Table, why: Refusal| {
            t.refused += 1;
            crate::metrics::global().http_refused(matches!(why, Refusal::PerClient));
            Self::log_pressure(t, &self.limits);
            Err(why)
        };
        if mine >= self.limits.per_client {
            return refuse(&mut t, Refusal::PerClient);
        }
        if t.map.len() >= self.limits.max_connections {
            let oldest = t
                .map
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|s| (s, *id)))
                .min();
            let Some((_, victim)) = oldest else {
                return refuse(&mut t, Refusal::Full);
            };
            if let Some(e) = t.remove(victim) {
                // The owner still holds the descriptor (it deregisters under
                // this lock before closing it), so this is its socket.
                let _ = nix::sys::socket::shutdown(e.fd, nix::sys::socket::Shutdown::Both);
            }
            t.shed += 1;
            Self::log_pressure(&mut t, &self.limits);
        }
        let id = t.next;
        t.next += 1;
        t.map.insert(
            id,
            Entry {
                fd: stream.as_raw_fd(),
                ip,
                idle_since: Some(Instant::now()),
            },
        );
        *t.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket {
            conns: self.clone(),
            id,
        })
    }

    /// bootd is stopping: close every connection waiting for a request
    /// head now, and each busy one when its response is done (see
    /// [`Ticket::set_idle`]).
    pub fn drain(&self) {
        let mut t = self.lock();
        t.draining = true;
        for e in t.map.values().filter(|e| e.idle_since.is_some()) {
            let _ = nix::sys::socket::shutdown(e.fd, nix::sys::socket::Shutdown::Both);
        }
    }

    /// One warning a minute at most while connections are shed or refused.
    fn log_pressure(t: &mut Table, limits: &Limits) {
        if t.logged
            .is_some_and(|l| l.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        tracing::warn!(
            "connections: {} open (limit {}, {} per client address): {} idle closed to make room, {} refused",
            t.map.len(),
            limits.max_connections,
            limits.per_client,
            t.shed,
            t.refused
        );
        t.shed = 0;
        t.refused = 0;
        t.logged = Some(Instant::now());
    }
}

impl Ticket {
    /// The connection waits for a request head (it may be closed for a
    /// newcomer) or is busy with one (it may not). `false`: bootd is
    /// stopping ([`Conns::drain`]), the connection is to be closed instead.
    pub fn set_idle(&self, idle: bool) -> bool {
        let mut t = self.conns.lock();
        if let Some(e) = t.map.get_mut(&self.id) {
            e.idle_since = idle.then(Instant::now);
        }
        !t.draining
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id);
    }
}

/// Reads from a socket under a total deadline: each read's timeout is what
/// is left of it, and a read past it fails with `TimedOut`. With
/// [`Timed::arm`], the first bytes read start a second, shorter deadline
/// (a request head's, counted from its first byte).
///
/// Over TLS ([`crate::tls::Wire`]) the deadline holds for every read of
/// the socket beneath, so a record trickled a byte at a time (or a
/// handshake that never ends) cannot outlive it either.
#[derive(Debug)]
pub struct Timed<'a> {
    wire: crate::tls::Wire<'a>,
    deadline: Instant,
    /// After the first bytes: the deadline becomes now + this.
    then: Option<Duration>,
}

impl<'a> Timed<'a> {
    pub fn new(stream: &'a TcpStream, within: Duration) -> Timed<'a> {
        Timed::over(crate::tls::Wire::plain(stream), within)
    }

    /// Reading the plaintext of `wire` (TLS or not).
    pub fn over(wire: crate::tls::Wire<'a>, within: Duration) -> Timed<'a> {
        Timed {
            wire,
            deadline: Instant::now() + within,
            then: None,
        }
    }

    /// Wait at most `idle` for the first byte, then at most `then` more for
    /// the rest.
    pub fn arm(&mut self, idle: Duration, then: Duration) {
        self.deadline = Instant::now() + idle;
        self.then = Some(then);
    }

    /// Everything must be read within `within` from now.
    pub fn within(&mut self, within: Duration) {
        self.deadline = Instant::now() + within;
        self.then = None;
    }

    /// One read of the socket, within what is left of the deadline.
    fn sock_read(
        &mut self,
        read: impl FnOnce(&mut &TcpStream) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        let mut sock = self.wire.sock;
        // A zero timeout means "none" to set_read_timeout: at least 1 ms.
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = match read(&mut sock) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
            }
            r => r?,
        };
        if n > 0 {
            if let Some(d) = self.then.take() {
                self.deadline = Instant::now() + d;
            }
        }
        Ok(n)
    }

    /// Complete a TLS handshake (nothing to do on plain TCP) within the
    /// deadline.
    pub fn handshake(&mut self) -> io::Result<()> {
        let Some(tls) = self.wire.tls else {
            return Ok(());
        };
        while tls.borrow().is_handshaking() {
            crate::tls::flush(&mut tls.borrow_mut(), self.wire.sock)?;
            if !tls.borrow().is_handshaking() {
                break;
            }
            let n = self.sock_read(|s| tls.borrow_mut().read_tls(s))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection inside the TLS handshake",
                ));
            }
            crate::tls::process(&mut tls.borrow_mut(), self.wire.sock)?;
        }
        crate::tls::flush(&mut tls.borrow_mut(), self.wire.sock)
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.wire.tls else {
            return self.sock_read(|s| s.read(buf));
        };
        loop {
            match tls.borrow_mut().reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            // Alerts, key updates and session tickets go out first.
            crate::tls::flush(&mut tls.borrow_mut(), self.wire.sock)?;
            self.sock_read(|s| tls.borrow_mut().read_tls(s))?;
            crate::tls::process(&mut tls.borrow_mut(), self.wire.sock)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn a_trickle_does_not_outlive_the_deadline() {
        let (mut c, s) = pair();
        let t0 = Instant::now();
        let h = std::thread::spawn(move || {
            for _ in 0..40 {
                if c.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut r = Timed::new(&s, Duration::from_secs(5));
        r.arm(Duration::from_secs(5), Duration::from_millis(400));
        let mut got = 0;
        let e = loop {
            let mut b = [0u8; 16];
            match r.read(&mut b) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(got >= 2, "{got}");
        let el = t0.elapsed();
        assert!(el < Duration::from_millis(1500), "{el:?}");
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn per_client_and_total_limits_shed_the_longest_idle() {
        let conns = std::sync::Arc::new(Conns::new(Limits {
            max_connections: 3,
            per_client: 2,
            ..Limits::default()
        }));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let c: IpAddr = "127.0.0.4".parse().unwrap();
        let (_c1, s1) = pair();
        let (_c2, s2) = pair();
        let (_c3, s3) = pair();
        let (_c4, s4) = pair();
        let (_c5, s5) = pair();
        let t1 = conns.admit(&s1, a).unwrap();
        let t2 = conns.admit(&s2, a).unwrap();
        assert_eq!(conns.admit(&s3, a).unwrap_err(), Refusal::PerClient);
        t2.set_idle(false);
        let t3 = conns.admit(&s3, b).unwrap();
        t3.set_idle(false);
        // Full: t1 is the only idle one, and goes.
        let t4 = conns.admit(&s4, c).unwrap();
        assert_eq!(conns.open(), 3);
        let mut buf = [0u8; 1];
        assert_eq!((&s1).read(&mut buf).unwrap(), 0, "shut down");
        t4.set_idle(false);
        // All busy: refused.
        assert_eq!(conns.admit(&s5, c).unwrap_err(), Refusal::Full);
        drop(t1); // already removed: a no-op
        drop(t2);
        assert_eq!(conns.open(), 2);
        let _t5 = conns.admit(&s5, c).unwrap();
    }
}
