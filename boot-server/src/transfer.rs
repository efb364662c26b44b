//! Sending a byte range of a file to a socket.
//!
//! Unlimited transfers use `sendfile(2)`: the kernel moves page-cache pages
//! to the socket without a copy through user space. `std::io::copy` does not
//! do this for File → TcpStream: std's Linux specialization only uses
//! sendfile/splice when later changes to the source cannot show up in the
//! sink (`safe_kernel_copy`), which a socket's send buffer does not
//! guarantee, so it falls back to read/write of 8 KiB (seen with strace on
//! Rust 1.95). sendfile is therefore called directly.
//! The consequence std avoids is accepted here: an artifact rewritten *in
//! place* during a transfer can reach the client mixed; the node's sha256
//! check catches that, and artifacts should be replaced by rename (a new
//! inode; open transfers keep the old one).
//!
//! Over TLS, [`copy_range`] copies through user space in chunks.
//!
//! `--rate-limit` transfers read and write in chunks with sleeps in between
//! (tests that stop the server in the middle of a download).
use std::fs::File;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Largest count passed to one sendfile call (what Linux moves at most).
const SENDFILE_MAX: u64 = 0x7fff_f000;

/// The outcome of a transfer: bytes that reached the socket, and the error
/// that ended it early, if any (client gone, timeout, file shrank).
#[derive(Debug)]
pub struct Sent {
    pub bytes: u64,
    pub error: Option<io::Error>,
}

/// Send `len` bytes of `file` from `offset`, at most `rate` bytes per second
/// when given. The file's own offset is not used (positional reads).
pub fn send_range(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut &TcpStream,
    rate: Option<u64>,
) -> Sent {
    let mut sent = 0;
    let _in_flight = crate::metrics::global().http_transfer();
    let r = match rate {
        None => sendfile_all(file, offset, len, out, &mut sent),
        Some(rate) => throttled(file, offset, len, out, rate, &mut sent),
    };
    Sent {
        bytes: sent,
        error: r.err(),
    }
}

/// [`send_range`] through user space, to any writer (a TLS session, which
/// sendfile cannot encrypt): chunks of 64 KiB, or paced at `rate`.
pub fn copy_range(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut impl Write,
    rate: Option<u64>,
) -> Sent {
    let mut sent = 0;
    let r = match rate {
        None => copy_chunks(file, offset, len, out, &mut sent, 64 * 1024, |_| {}),
        Some(rate) => throttled(file, offset, len, out, rate, &mut sent),
    };
    Sent {
        bytes: sent,
        error: r.err(),
    }
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "file shrank during the transfer",
    )
}

fn sendfile_all(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut &TcpStream,
    sent: &mut u64,
) -> io::Result<()> {
    let mut off = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    while *sent < len {
        let count = (len - *sent).min(SENDFILE_MAX) as usize;
        match nix::sys::sendfile::sendfile(*out, file, Some(&mut off), count) {
            Ok(0) => return Err(shrank()),
            Ok(n) => *sent += n as u64,
            Err(nix::errno::Errno::EINTR) => {}
            // A file system without sendfile support: copy through user space.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) if *sent == 0 => {
                return copy_chunks(file, offset, len, out, sent, 64 * 1024, |_| {});
            }
            // SO_SNDTIMEO expired on the blocking socket.
            Err(nix::errno::Errno::EAGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn throttled(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut impl Write,
    rate: u64,
    sent: &mut u64,
) -> io::Result<()> {
    let rate = rate.max(1);
    // About 20 chunks a second, so the pace is smooth at low rates.
    let chunk = (rate / 20).clamp(1024, 1 << 20) as usize;
    let t = Instant::now();
    copy_chunks(file, offset, len, out, sent, chunk, |sent| {
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
    })
}

/// pread + write_all in chunks of `chunk` bytes, calling `pace` with the
/// running total after each chunk.
fn copy_chunks(
    file: &File,
    offset: u64,
    len: u64,
    out: &mut impl Write,
    sent: &mut u64,
    chunk: usize,
    mut pace: impl FnMut(u64),
) -> io::Result<()> {
    let mut buf = vec![0u8; chunk.min(len as usize).max(1)];
    while *sent < len {
        let want = (len - *sent).min(buf.len() as u64) as usize;
        let n = match file.read_at(&mut buf[..want], offset + *sent) {
            Ok(0) => return Err(shrank()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        *sent += n as u64;
        pace(*sent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// Run `send` against a loopback socket and return what the peer read.
    fn roundtrip(send: impl FnOnce(&mut &TcpStream) -> Sent + Send + 'static) -> (Sent, Vec<u8>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let s = TcpStream::connect(addr).unwrap();
            send(&mut &s)
        });
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        (h.join().unwrap(), got)
    }

    fn file(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(data).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn ranges_reach_the_socket() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (rate, off, len) in [
            (None, 0, 300_000),
            (None, 12_345, 100_000),
            (None, 299_999, 1),
            (Some(100_000_000), 7, 200_000),
        ] {
            let (_t, f) = file(&data);
            let (sent, got) = roundtrip(move |s| send_range(&f, off, len, s, rate));
            assert!(sent.error.is_none(), "{:?}", sent.error);
            assert_eq!(sent.bytes, len);
            assert_eq!(
                got,
                &data[off as usize..(off + len) as usize],
                "{rate:?} {off}"
            );
        }
    }

    #[test]
    fn a_short_file_is_an_error_with_the_count() {
        for rate in [None, Some(100_000_000)] {
            let (_t, f) = file(&[7u8; 1000]);
            let (sent, got) = roundtrip(move |s| send_range(&f, 0, 5000, s, rate));
            assert_eq!(sent.bytes, 1000);
            assert_eq!(got.len(), 1000);
            let e = sent.error.expect("an error");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{rate:?}");
        }
    }

    #[test]
    fn the_rate_limit_paces() {
        let (_t, f) = file(&[1u8; 200_000]);
        let t = Instant::now();
        let (sent, got) = roundtrip(move |s| send_range(&f, 0, 200_000, s, Some(400_000)));
        assert_eq!((sent.bytes, got.len()), (200_000, 200_000));
        let el = t.elapsed();
        assert!(el >= Duration::from_millis(400), "{el:?}");
    }
}
