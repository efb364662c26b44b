//! What the bootd integration tests share.
use std::path::Path;
use std::time::{Duration, Instant};

/// The port bootd bound, once it has written `port_file` (`--port-file`);
/// fails the test when that takes more than 10 s.
pub fn wait_for_port(port_file: &Path) -> u16 {
    let t0 = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "bootd did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The admin token the tests give bootd (`--admin-token`).
#[allow(dead_code)]
pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// `dir/admin.token` holding [`ADMIN`] (mode 0600), for `--admin-token`.
#[allow(dead_code)]
pub fn admin_token_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("admin.token");
    std::fs::write(&p, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// One HTTP/1.1 request to 127.0.0.1:`port` on its own connection
/// (`Connection: close`): the status, the head and the body.
#[allow(dead_code)]
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    c.write_all(&raw).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, got[end + 4..].to_vec())
}

/// A `bootd serve --listen 127.0.0.1:0 --port-file DIR/port ARGS…` with
/// its stderr in `DIR/bootd.log`, killed on drop.
#[allow(dead_code)]
pub struct Bootd {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

#[allow(dead_code)]
impl Bootd {
    pub fn start(dir: &Path, args: &[&std::ffi::OsStr]) -> Bootd {
        let pf = dir.join("port");
        let _ = std::fs::remove_file(&pf);
        let log = dir.join("bootd.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&pf)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = wait_for_port(&pf);
        Bootd { child, port, log }
    }

    /// bootd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `want` (at most 10 s).
    pub fn log_with(&self, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log_text();
            if log.contains(want) || t0.elapsed() > Duration::from_secs(10) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bootd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one series (`name{labels}` exactly as rendered) in a
/// Prometheus text exposition.
#[allow(dead_code)]
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A running bootd, killed and reaped on drop, its stderr in `log` (each
/// test file starts it its own way: `impl Srv { fn start… }` beside it).
#[allow(dead_code)]
pub struct Srv {
    pub child: std::process::Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
