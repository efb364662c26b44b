//! systemd's readiness protocol (`sd_notify(3)`): one datagram of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET` (a path, or
//! `@name` for an abstract socket). Without the variable nothing is sent,
//! so bootd runs the same outside systemd.
use std::os::unix::net::UnixDatagram;

/// Send `state` (`READY=1`, `RELOADING=1\nMONOTONIC_USEC=…`, `STOPPING=1`,
/// `STATUS=…`); a failure is logged, never fatal.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&path, state) {
        tracing::warn!(
            "cannot notify systemd at NOTIFY_SOCKET={}: {e}",
            path.to_string_lossy()
        );
    }
}

/// Send `state` to the socket `path` (`@name`: abstract).
pub fn send_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)?
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds (`MONOTONIC_USEC=` of a reload).
pub fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        send_to(p.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("bootd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(monotonic_usec() > 0);
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let e = send_to(std::ffi::OsStr::new("/nonexistent/notify"), "READY=1").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
