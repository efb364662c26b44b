//! The real bootd binary (on port 0, with --port-file) against real curl.
mod common;
use common::Srv;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SIZE: usize = 100_000;

fn data() -> Vec<u8> {
    (0..SIZE as u32).map(|i| (i % 251) as u8).collect()
}

/// The served trees: www/{live.squashfs, sub/, escape -> ../secret},
/// repo/postscript.sh, and secret beside them.
struct Trees {
    dir: tempfile::TempDir,
}

impl Trees {
    fn new() -> Trees {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(www.join("live.squashfs"), data()).unwrap();
        std::fs::write(repo.join("postscript.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(dir.path().join("secret"), "TOPSECRET").unwrap();
        std::os::unix::fs::symlink("../secret", www.join("escape")).unwrap();
        Trees { dir }
    }
    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
}

impl Srv {
    /// `bootd serve --root www --repo repo --listen 127.0.0.1:PORT --port-file F EXTRA…`
    fn start(t: &Trees, port: u16, extra: &[&str]) -> Srv {
        Srv::start_opts(t, port, true, extra)
    }

    fn start_opts(t: &Trees, port: u16, repo: bool, extra: &[&str]) -> Srv {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pf = t.dir.path().join(format!("port.{n}"));
        let log = t.dir.path().join(format!("bootd.{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootd"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--root"])
            .arg(t.www());
        if repo {
            cmd.arg("--repo").arg(t.repo());
        }
        let child = cmd
            .arg("--port-file")
            .arg(&pf)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = common::wait_for_port(&pf);
        Srv { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

struct Resp {
    status: u16,
    /// The head, lower-cased.
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then_some(v.trim())
        })
    }
}

/// `curl -s -i --path-as-is ARGS URL`.
fn curl(srv: &Srv, path: &str, args: &[&str]) -> Resp {
    let out = Command::new("curl")
        .args(["-s", "-i", "--path-as-is", "--max-time", "20"])
        .args(args)
        .arg(srv.url(path))
        .output()
        .expect("running curl");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head for {path}: {out:?}", out = out.stderr));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Resp {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// `curl -s ARGS -o FILE URL`, returning `%{http_code}` and curl's status.
fn curl_to_file(url: &str, file: &Path, args: &[&str]) -> (String, bool) {
    let out = Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "-o"])
        .arg(file)
        .args(args)
        .arg(url)
        .output()
        .expect("running curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn get_and_head() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let r = curl(&s, "/live.squashfs", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data());
    assert_eq!(r.header("content-length"), Some("100000"), "{}", r.head);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.header("last-modified").unwrap().ends_with(" gmt"));
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with("\"186a0-"), "{etag}");

    let h = curl(&s, "/live.squashfs", &["-I"]);
    assert_eq!((h.status, h.body.len()), (200, 0));
    assert_eq!(h.header("content-length"), Some("100000"));
    assert_eq!(h.header("etag"), Some(etag));

    let r = curl(&s, "/repo/postscript.sh", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"#!/bin/sh\necho hi\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn ranges() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let d = data();
    let r = curl(&s, "/live.squashfs", &["-r", "1000-1999"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/100000"));
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.body, &d[1000..2000]);

    let r = curl(&s, "/live.squashfs", &["-H", "Range: bytes=99990-"]);
    assert_eq!((r.status, r.body.as_slice()), (206, &d[99990..]));
    let r = curl(&s, "/live.squashfs", &["-H", "Range: bytes=-10"]);
    assert_eq!(r.header("content-range"), Some("bytes 99990-99999/100000"));
    assert_eq!((r.status, r.body.as_slice()), (206, &d[99990..]));

    let r = curl(&s, "/live.squashfs", &["-H", "Range: bytes=100000-"]);
    assert_eq!((r.status, r.body.len()), (416, 0));
    assert_eq!(r.header("content-range"), Some("bytes */100000"));

    // Documented limit: several ranges get the whole file.
    let r = curl(&s, "/live.squashfs", &["-r", "0-9,20-29"]);
    assert_eq!((r.status, r.body.len()), (200, SIZE));
    // Range is for GET only.
    let r = curl(&s, "/live.squashfs", &["-I", "-r", "0-9"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
}

#[test]
fn resume_with_dash_c() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let out = t.dir.path().join("dl");
    std::fs::write(&out, &data()[..30_000]).unwrap();
    let (code, ok) = curl_to_file(&s.url("/live.squashfs"), &out, &["-C", "-"]);
    assert!(ok);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&out).unwrap(), data());
    assert!(
        s.log().contains("range=bytes=30000-"),
        "the access log shows the range:\n{}",
        s.log()
    );
}

#[test]
fn server_killed_mid_download_then_resumed() {
    let t = Trees::new();
    // 50 kB/s: the 100 kB file takes 2 s, curl gives up after 0.6 s.
    let slow = Srv::start(&t, 0, &["--rate-limit", "50000"]);
    let port = slow.port;
    let out = t.dir.path().join("dl");
    let (_, ok) = curl_to_file(&slow.url("/live.squashfs"), &out, &["--max-time", "0.6"]);
    assert!(!ok, "the slow download should have been cut");
    drop(slow);
    let part = std::fs::read(&out).unwrap();
    assert!(
        !part.is_empty() && part.len() < SIZE,
        "partial download: {} bytes",
        part.len()
    );
    assert_eq!(part, &data()[..part.len()]);
    // Same port again (SO_REUSEADDR), full speed.
    let s = Srv::start(&t, port, &[]);
    assert_eq!(s.port, port);
    let (code, ok) = curl_to_file(&s.url("/live.squashfs"), &out, &["-C", "-"]);
    assert!(ok);
    assert_eq!(code, "206");
    assert_eq!(std::fs::read(&out).unwrap(), data());
}

#[test]
fn conditionals() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let first = curl(&s, "/live.squashfs", &["-I"]);
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();

    let r = curl(
        &s,
        "/live.squashfs",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = curl(&s, "/live.squashfs", &["-H", "If-None-Match: \"x\", *"]);
    assert_eq!(r.status, 304);
    let r = curl(&s, "/live.squashfs", &["-H", "If-None-Match: \"other\""]);
    assert_eq!((r.status, r.body.len()), (200, SIZE));

    // If-Modified-Since: the exact Last-Modified (as curl -z sends it).
    // The date as sent (the helper lower-cases heads; the server compares
    // If-Modified-Since and If-Range dates exactly).
    let lm_sent = {
        let raw = Command::new("curl")
            .args(["-s", "-I"])
            .arg(s.url("/live.squashfs"))
            .output()
            .unwrap()
            .stdout;
        String::from_utf8_lossy(&raw)
            .lines()
            .find_map(|l| l.strip_prefix("Last-Modified: ").map(str::to_string))
            .unwrap()
    };
    assert_eq!(lm_sent.to_ascii_lowercase(), lm);
    let r = curl(
        &s,
        "/live.squashfs",
        &["-H", &format!("If-Modified-Since: {lm_sent}")],
    );
    assert_eq!(r.status, 304);

    // If-Range: the range only while the validator still matches.
    let r = curl(
        &s,
        "/live.squashfs",
        &["-r", "0-9", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = curl(
        &s,
        "/live.squashfs",
        &["-r", "0-9", "-H", &format!("If-Range: {lm_sent}")],
    );
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = curl(
        &s,
        "/live.squashfs",
        &["-r", "0-9", "-H", "If-Range: \"other\""],
    );
    assert_eq!((r.status, r.body.len()), (200, SIZE));
}

#[test]
fn traversal_and_missing_get_404() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    for bad in [
        "/../secret",
        "/sub/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E%2Fsecret",
        "/sub%2F..%2F..%2Fsecret",
        "/repo/../secret",
        "/repo/%2e%2e/secret",
        "/escape",
        "/%2Fetc%2Fpasswd",
        "//etc/passwd",
        "/live.squashfs%00.txt",
        "/.", // "/" itself is the node status page (tests/status.rs)
        "/sub",
        "/sub/",
        "/repo/",
        "/missing",
        "/repo/missing",
    ] {
        let r = curl(&s, bad, &[]);
        assert_eq!(r.status, 404, "{bad}");
        assert!(!String::from_utf8_lossy(&r.body).contains("TOPSECRET"));
    }
    let r = curl(&s, "/live.squashfs", &["-X", "POST"]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("get, head"));

    // Without --repo, /repo/ is not served at all.
    let s = Srv::start_opts(&t, 0, false, &[]);
    assert_eq!(curl(&s, "/repo/postscript.sh", &[]).status, 404);
}

#[test]
fn keep_alive_reuses_the_connection() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let out = Command::new("curl")
        .args([
            "-s",
            "-v",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
        ])
        .arg(s.url("/live.squashfs"))
        .arg(s.url("/missing"))
        .arg(s.url("/repo/postscript.sh"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("Re-using existing connection").count(),
        2,
        "{err}"
    );
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
}

#[test]
fn access_log_and_announce() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    curl(&s, "/live.squashfs", &["-r", "0-999"]);
    curl(&s, "/missing", &[]);
    curl(&s, "/live.squashfs", &["-I"]);
    // The log line is written after the response: give it a moment.
    let t0 = Instant::now();
    while s.log().lines().count() < 4 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        format!("bootd: listening on http://127.0.0.1:{}", s.port)
    );
    let line = |want: &[&str]| {
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && want.iter().all(|w| l.contains(w)))
    };
    assert!(
        line(&[
            "GET /live.squashfs",
            "status=206",
            "bytes=1000",
            "ms=",
            "range=bytes=0-999"
        ]),
        "{log}"
    );
    assert!(line(&["GET /missing", "status=404"]), "{log}");
    assert!(
        line(&["HEAD /live.squashfs", "status=200", "bytes=0"]),
        "{log}"
    );
    // No timestamps: lines start with the level.
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.trim_start().starts_with("INFO")),
        "{log}"
    );
}

#[test]
fn raw_socket_edge_cases() {
    let t = Trees::new();
    let s = Srv::start(&t, 0, &[]);
    let exchange = |req: &[u8]| {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap(); // the server closes after these
        String::from_utf8_lossy(&got).into_owned()
    };
    let r = exchange(b"garbage\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // Two pipelined requests, the second closing the connection.
    let r = exchange(
        b"HEAD /repo/postscript.sh HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /repo/postscript.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    assert!(r.ends_with("echo hi\n"), "{r}");
    // HTTP/1.0 closes by default.
    let r = exchange(b"GET /repo/postscript.sh HTTP/1.0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.contains("Connection: close"),
        "{r}"
    );
    // A request with a body is answered, then the connection is closed.
    let r = exchange(b"PUT /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Connection: close"),
        "{r}"
    );
    // Absolute-form targets are served.
    let r = exchange(b"GET http://x/repo/postscript.sh HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    // An oversized head: 431.
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.resize(20_000, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let r = exchange(&big);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
}

#[test]
fn startup_errors_an_operator_reads() {
    let t = Trees::new();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let www = t.www();
    let www = www.to_str().unwrap();
    let e = run(&["--root", "/nonexistent/www", "--listen", "127.0.0.1:0"]);
    assert!(
        e.contains("bootd: error: --root /nonexistent/www: No such file or directory"),
        "{e}"
    );
    let e = run(&[
        "--root",
        www,
        "--repo",
        "/nonexistent",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(e.contains("bootd: error: --repo /nonexistent"), "{e}");
    let s = Srv::start(&t, 0, &[]);
    let busy = format!("127.0.0.1:{}", s.port);
    let e = run(&["--root", www, "--listen", &busy]);
    assert!(
        e.contains(&format!(
            "bootd: error: listening on {busy}: Address already in use"
        )),
        "{e}"
    );
    let e = run(&["--root", www, "--listen", "nonsense"]);
    assert!(e.contains("bootd: error: listening on nonsense"), "{e}");
}

/// Bodies go out with sendfile(2), not read/write (std's io::copy does not
/// use sendfile for File → TcpStream). Needs strace; skipped without it.
#[test]
fn bodies_use_sendfile() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace not installed: skipped");
        return;
    }
    let t = Trees::new();
    let dir = t.dir.path();
    let (pf, trace) = (dir.join("port.strace"), dir.join("trace"));
    let mut strace = Command::new("strace")
        .args(["-f", "-e", "trace=sendfile,read,pread64", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(t.www())
        .arg("--port-file")
        .arg(&pf)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&pf)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            break Some(p);
        }
        if strace.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(10) {
            break None; // e.g. ptrace not permitted here
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let fetched = port.map(|port| {
        Command::new("curl")
            .args(["-s", "-r", "100-"])
            .arg(format!("http://127.0.0.1:{port}/live.squashfs"))
            .output()
            .unwrap()
            .stdout
    });
    // Stop bootd itself (strace's child, which would outlive a killed
    // strace), then strace exits; kill strace only if no child is found.
    let children = children_of(strace.id());
    for pid in &children {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    if children.is_empty() {
        let _ = strace.kill();
    }
    let _ = strace.wait();
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    let Some(body) = fetched else {
        eprintln!("bootd did not start under strace: skipped");
        return;
    };
    assert_eq!(body, &data()[100..]);
    assert!(
        trace.contains("sendfile(") && trace.contains("[100] => [100000], 99900) = 99900"),
        "{trace}"
    );
    // The file's bytes were not read into user space.
    assert!(!trace.lines().any(|l| l.contains("= 8192")), "{trace}");
}

/// Pids whose parent is `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}
