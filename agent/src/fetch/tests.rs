//! Tests of the fetcher against a small scripted HTTP server on 127.0.0.1.
use super::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted server: `handler(request, index of the request, stream)` writes
/// the answer; the connection is closed when it returns.
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Server {
    fn start(handler: impl Fn(&Req, usize, &mut TcpStream) + Send + Sync + 'static) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let log = log2.clone();
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut s) else {
                        return;
                    };
                    let idx = {
                        let mut l = log.lock().unwrap();
                        l.push(req.clone());
                        l.len() - 1
                    };
                    handler(&req, idx, &mut s);
                    let _ = s.flush();
                });
            }
        });
        Server { port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn read_request(s: &mut TcpStream) -> Option<Req> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Some(Req { path, headers })
}

/// Write a response head (with `Connection: close`) and `body`.
fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// A complete 200 (or a 200 whose body stops after `cut` bytes).
fn ok(s: &mut TcpStream, data: &[u8], cut: Option<usize>, etag: Option<&str>) {
    let mut h = vec![("Content-Length", data.len().to_string())];
    if let Some(e) = etag {
        h.push(("ETag", e.to_string()));
    }
    respond(s, "200 OK", &h, &data[..cut.unwrap_or(data.len())]);
}

/// A 206 for `Range: bytes=N-` of `data`.
fn partial(s: &mut TcpStream, data: &[u8], from: usize) {
    let h = [
        ("Content-Length", (data.len() - from).to_string()),
        (
            "Content-Range",
            format!("bytes {from}-{}/{}", data.len() - 1, data.len()),
        ),
    ];
    respond(s, "206 Partial Content", &h, &data[from..]);
}

fn range_start(r: &Req) -> Option<usize> {
    r.header("range")?
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// Incompressible-looking test data (xorshift).
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn opts(expected: Option<&str>) -> FetchOptions {
    FetchOptions {
        expected_sha256: expected.map(str::to_string),
        sidecar: false,
        deadline: Duration::from_secs(30),
        progress_interval: Duration::from_millis(1),
        ..Default::default()
    }
}

fn assert_nothing_left(dest: &Path) {
    assert!(!dest.exists(), "{} exists", dest.display());
    assert!(
        !part_path(dest).exists(),
        "{} exists",
        part_path(dest).display()
    );
}

const LEN: usize = (3 << 20) + 123;
const CUT: usize = (1 << 20) + 5;

#[test]
fn resumes_with_range_after_the_server_drops_the_connection() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |r, _, s| match range_start(r) {
        None => ok(s, &d2, Some(CUT), Some("\"v1\"")),
        Some(from) if r.header("if-range") == Some("\"v1\"") => partial(s, &d2, from),
        Some(_) => respond(s, "400 Bad Request", &[], b""),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("live.squashfs");
    let rep = fetch(&srv.url("/live.squashfs"), &dest, &opts(Some(&sha(&d)))).unwrap();
    assert_eq!(rep.resumes, 1);
    assert_eq!(rep.restarts, 0);
    assert_eq!(rep.attempts, 2);
    assert_eq!(rep.bytes, LEN as u64);
    assert_eq!(rep.sha256, sha(&d));
    assert_eq!(rep.verified_by, "cmdline");
    assert!(std::fs::read(&dest).unwrap() == *d, "content differs");
    assert!(!part_path(&dest).exists());
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(
        reqs[1].header("range"),
        Some(format!("bytes={CUT}-").as_str())
    );
    assert_eq!(reqs[1].header("if-range"), Some("\"v1\""));
}

#[test]
fn restarts_from_zero_when_the_server_ignores_range() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |_, i, s| {
        ok(s, &d2, (i == 0).then_some(CUT), None);
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let rep = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap();
    assert_eq!(rep.restarts, 1);
    assert_eq!(rep.resumes, 0);
    assert_eq!(rep.sha256, sha(&d));
    assert!(std::fs::read(&dest).unwrap() == *d, "content differs");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(range_start(&reqs[1]), Some(CUT));
}

#[test]
fn restarts_when_content_range_does_not_start_where_asked() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |r, i, s| match (i, range_start(r)) {
        (0, _) => ok(s, &d2, Some(CUT), None),
        (_, Some(_)) => partial(s, &d2, 100),
        (_, None) => ok(s, &d2, None, None),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let rep = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap();
    assert_eq!(rep.restarts, 1);
    assert_eq!(rep.resumes, 0);
    assert_eq!(rep.attempts, 3);
    assert!(std::fs::read(&dest).unwrap() == *d, "content differs");
}

#[test]
fn resumes_after_a_stall() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |r, _, s| match range_start(r) {
        None => {
            ok(s, &d2, Some(CUT), None);
            let _ = s.flush();
            // Say nothing more for longer than the stall timeout.
            std::thread::sleep(Duration::from_secs(4));
        }
        Some(from) => partial(s, &d2, from),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let o = FetchOptions {
        stall_timeout: Duration::from_secs(1),
        ..opts(Some(&sha(&d)))
    };
    let t = Instant::now();
    let rep = fetch(&srv.url("/img"), &dest, &o).unwrap();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(rep.resumes, 1);
    assert_eq!(range_start(&srv.requests()[1]), Some(CUT));
    assert!(std::fs::read(&dest).unwrap() == *d, "content differs");
}

#[test]
fn retries_503_then_succeeds() {
    let d = Arc::new(data(100_000));
    let d2 = d.clone();
    let srv = Server::start(move |_, i, s| {
        if i < 2 {
            respond(
                s,
                "503 Service Unavailable",
                &[("Content-Length", "0".into())],
                b"",
            );
        } else {
            ok(s, &d2, None, None);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let t = Instant::now();
    let rep = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap();
    // Backoff: 0.5 s then 1 s.
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(rep.attempts, 3);
    assert_eq!(srv.requests().len(), 3);
    assert!(std::fs::read(&dest).unwrap() == *d);
}

#[test]
fn not_found_fails_at_once() {
    let srv = Server::start(|_, _, s| {
        respond(s, "404 Not Found", &[("Content-Length", "0".into())], b"")
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let url = srv.url("/img");
    let t = Instant::now();
    let e = fetch(&url, &dest, &opts(None)).unwrap_err();
    // Not retried: one request (checked below) and no backoff sleep.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(e, FetchError::Http { status: 404, .. }), "{e:?}");
    assert_eq!(e.exit_code(), 5);
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains("404"), "{msg}");
    assert_eq!(srv.requests().len(), 1);
    assert_nothing_left(&dest);
}

#[test]
fn digest_mismatch_names_both_digests_and_leaves_no_file() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |_, _, s| ok(s, &d2, None, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let url = srv.url("/img");
    let wrong = sha(b"something else");
    let e = fetch(&url, &dest, &opts(Some(&wrong.to_ascii_uppercase()))).unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 3);
    let msg = e.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&wrong), "{msg}");
    assert!(msg.contains(&sha(&d)), "{msg}");
    assert_nothing_left(&dest);
}

#[test]
fn a_file_larger_than_the_free_space_fails_before_downloading() {
    let srv = Server::start(|_, _, s| {
        respond(
            s,
            "200 OK",
            &[("Content-Length", "1000000000000000000".into())],
            &[0u8; 4096],
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let e = fetch(&srv.url("/img"), &dest, &opts(None)).unwrap_err();
    assert!(matches!(e, FetchError::Io { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("no room for the download in") && msg.contains("1000000000000 MB needed"),
        "{msg}"
    );
    assert_eq!(srv.requests().len(), 1, "retried");
    assert_nothing_left(&dest);
}

#[test]
fn an_invalid_expected_digest_is_refused_before_any_request() {
    let srv = Server::start(|_, _, s| respond(s, "500 Oops", &[], b""));
    let dir = tempfile::tempdir().unwrap();
    let e = fetch(&srv.url("/img"), &dir.path().join("x"), &opts(Some("abc"))).unwrap_err();
    assert!(e.to_string().contains("not 64 hexadecimal digits"), "{e}");
    assert!(srv.requests().is_empty());
}

/// Serves `/img` = `d` and `/img.sha256` = `sidecar` (404 when `None`).
fn sidecar_server(d: Arc<Vec<u8>>, sidecar: Option<String>) -> Server {
    Server::start(move |r, _, s| match (r.path.as_str(), &sidecar) {
        ("/img", _) => ok(s, &d, None, None),
        ("/img.sha256", Some(text)) => ok(s, text.as_bytes(), None, None),
        _ => respond(s, "404 Not Found", &[("Content-Length", "0".into())], b""),
    })
}

#[test]
fn sidecar_digest_is_used_when_none_is_given() {
    let d = Arc::new(data(500_000));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let o = FetchOptions {
        sidecar: true,
        ..opts(None)
    };
    // Right digest: verified by the sidecar.
    let srv = sidecar_server(d.clone(), Some(format!("{}  img\n", sha(&d))));
    let rep = fetch(&srv.url("/img"), &dest, &o).unwrap();
    assert_eq!(rep.verified_by, "sidecar");
    assert_eq!(rep.sha256, sha(&d));
    let paths: Vec<String> = srv.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/img.sha256", "/img"]);
    std::fs::remove_file(&dest).unwrap();
    // Wrong digest in the sidecar: the image is refused.
    let wrong = sha(b"other");
    let srv = sidecar_server(d.clone(), Some(format!("{wrong} *img\n")));
    let e = fetch(&srv.url("/img"), &dest, &o).unwrap_err();
    assert!(matches!(e, FetchError::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(&wrong), "{e}");
    assert_nothing_left(&dest);
}

#[test]
fn missing_sidecar_is_a_clear_error() {
    let d = Arc::new(data(1000));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let o = FetchOptions {
        sidecar: true,
        ..opts(None)
    };
    let srv = sidecar_server(d.clone(), None);
    let e = fetch(&srv.url("/img"), &dest, &o).unwrap_err();
    assert!(
        matches!(
            e,
            FetchError::Sidecar {
                status: Some(404),
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 5);
    let msg = e.to_string();
    for want in [
        srv.url("/img.sha256").as_str(),
        "404",
        "publish",
        "nodeboot.sha256=",
        "--sha256",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    // The image itself was not even requested.
    let paths: Vec<String> = srv.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/img.sha256"]);
    assert_nothing_left(&dest);

    // A sidecar that holds no digest.
    let srv = sidecar_server(d, Some("<html>oops</html>\n".into()));
    let e = fetch(&srv.url("/img"), &dest, &o).unwrap_err();
    assert!(
        matches!(e, FetchError::Sidecar { status: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("no sha256"), "{e}");
    assert_nothing_left(&dest);
}

#[test]
fn no_sidecar_and_no_digest_means_unverified() {
    let d = Arc::new(data(1000));
    let srv = sidecar_server(d.clone(), None);
    let dir = tempfile::tempdir().unwrap();
    let rep = fetch(&srv.url("/img"), &dir.path().join("img"), &opts(None)).unwrap();
    assert_eq!(rep.verified_by, "none");
    assert_eq!(rep.sha256, sha(&d));
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn redirects_are_followed() {
    let d = Arc::new(data(10_000));
    let d2 = d.clone();
    let srv = Server::start(move |r, _, s| match r.path.as_str() {
        "/old" => respond(
            s,
            "302 Found",
            &[("Location", "/img".into()), ("Content-Length", "0".into())],
            b"",
        ),
        _ => ok(s, &d2, None, None),
    });
    let dir = tempfile::tempdir().unwrap();
    let rep = fetch(
        &srv.url("/old"),
        &dir.path().join("img"),
        &opts(Some(&sha(&d))),
    )
    .unwrap();
    assert_eq!(rep.bytes, d.len() as u64);
    assert_eq!(srv.requests()[1].path, "/img");
}

#[test]
fn deadline_on_an_unreachable_port_names_the_url() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/live.squashfs");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let o = FetchOptions {
        deadline: Duration::from_secs(2),
        ..opts(None)
    };
    let t = Instant::now();
    let e = fetch(&url, &dest, &o).unwrap_err();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    match &e {
        FetchError::Deadline { attempts, .. } => assert!(*attempts >= 2, "{e:?}"),
        _ => panic!("{e:?}"),
    }
    assert_eq!(e.exit_code(), 4);
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains("gave up"), "{msg}");
    assert!(msg.to_ascii_lowercase().contains("refused"), "{msg}");
    assert_nothing_left(&dest);
}

#[test]
fn sidecar_parsing() {
    let h = "ab".repeat(32);
    let cases: &[(&str, Option<&str>)] = &[
        ("", None),
        ("\n\n", None),
        (&format!("{h}  live.squashfs\n"), Some(&h)),
        (&format!("{}  live.squashfs\n", h.to_uppercase()), Some(&h)),
        (&format!("{h} *live.squashfs"), Some(&h)),
        (&format!("{h}\n"), Some(&h)),
        (&format!("\n{h}\n"), Some(&h)),
        (&format!("SHA256 (live.squashfs) = {h}\n"), Some(&h)),
        ("abcd  live.squashfs", None),
        (&format!("{}x  f", &h[..63]), None),
        ("<html>", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_sidecar(text).as_deref(), *want, "{text:?}");
    }
}

#[test]
fn sidecar_url_goes_before_the_query() {
    assert_eq!(sidecar_url("http://h/a.img"), "http://h/a.img.sha256");
    assert_eq!(
        sidecar_url("http://h/a.img?tok=1"),
        "http://h/a.img.sha256?tok=1"
    );
}

#[test]
fn content_range_parsing() {
    assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, Some(10))));
    assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
    assert_eq!(parse_content_range("bytes */10"), None);
    assert_eq!(parse_content_range("items 5-9/10"), None);
}

#[test]
fn refuses_other_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let e = fetch("ftp://h/x", &dir.path().join("x"), &opts(None)).unwrap_err();
    assert!(e.to_string().contains("unsupported URL"), "{e}");
}

/// Issue 12: a symbolic link planted at `<dest>.part` redirected the
/// download (and its truncation) to wherever it pointed. Now it is refused
/// before any request, the link's target is untouched, the link is left for
/// the operator to see, and nothing is created where a dangling one points.
#[test]
fn a_symlink_at_the_part_path_is_refused_and_not_followed() {
    let d = Arc::new(data(1000));
    let d2 = d.clone();
    let srv = Server::start(move |_, _, s| ok(s, &d2, None, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let absent = dir.path().join("absent");
    for target in [&victim, &absent] {
        let part = part_path(&dest);
        let _ = std::fs::remove_file(&part);
        std::os::unix::fs::symlink(target, &part).unwrap();
        let e = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "refusing to write the download to {}: it is a symbolic link, which is not followed; remove it if it is yours",
                part.display()
            )
        );
        assert_eq!(e.exit_code(), 1);
        assert!(std::fs::symlink_metadata(&part).unwrap().is_symlink());
        assert!(!dest.exists());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!absent.exists(), "a dangling link was followed");
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());
}

/// A hard link at `<dest>.part` (to a file of ours elsewhere in the same
/// filesystem) would be truncated and overwritten: refused too.
#[test]
fn a_hard_link_at_the_part_path_is_refused() {
    let d = Arc::new(data(1000));
    let d2 = d.clone();
    let srv = Server::start(move |_, _, s| ok(s, &d2, None, None));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::hard_link(&victim, part_path(&dest)).unwrap();
    let e = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("it has 2 names (hard links); a part file has one"),
        "{e}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!dest.exists());
}

/// A leftover regular part file of ours (an interrupted earlier run) is
/// emptied and reused: the download still works and resumes still work.
#[test]
fn a_leftover_part_file_is_emptied_and_reused() {
    let d = Arc::new(data(LEN));
    let d2 = d.clone();
    let srv = Server::start(move |r, _, s| match range_start(r) {
        None => ok(s, &d2, Some(CUT), Some("\"v1\"")),
        Some(from) => partial(s, &d2, from),
    });
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    std::fs::write(part_path(&dest), vec![0x55u8; LEN + 4096]).unwrap();
    let rep = fetch(&srv.url("/img"), &dest, &opts(Some(&sha(&d)))).unwrap();
    assert_eq!(rep.resumes, 1);
    assert!(std::fs::read(&dest).unwrap() == *d, "content differs");
    assert!(!part_path(&dest).exists());
}

/// A directory or a FIFO there: a clear error, no hang.
#[test]
fn other_file_types_at_the_part_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let part = part_path(&dest);
    std::fs::create_dir(&part).unwrap();
    let e = sink::open_part(&part).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("creating {}: ", part.display())),
        "{e}"
    );
    std::fs::remove_dir(&part).unwrap();
    nix::unistd::mkfifo(&part, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Without a reader: the open fails at once (ENXIO) instead of blocking.
    assert!(sink::open_part(&part).is_err());
    // With one: opened, then refused for not being a regular file.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&part)
        .unwrap();
    let e = sink::open_part(&part).unwrap_err().to_string();
    assert!(e.contains("it is not a regular file"), "{e}");
    drop(reader);
}

// ---- Several origins (root=live: + nodeboot.mirror=) ----

/// A URL on 127.0.0.1 where nothing listens (a port that was free a moment ago).
fn down_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/live.squashfs")
}

/// A server answering every request (ranged or not) from `d`.
fn serving(d: Arc<Vec<u8>>) -> Server {
    Server::start(move |r, _, s| match range_start(r) {
        Some(from) => partial(s, &d, from),
        None => ok(s, &d, None, Some("\"v1\"")),
    })
}

#[test]
fn one_origin_down_one_serving_wrong_bytes_then_the_good_mirror() {
    let good = Arc::new(data(LEN));
    let mut bad = data(LEN);
    bad[LEN / 2] ^= 0xff; // same size, one byte off: only the digest can tell
    let down = down_url();
    let liar = serving(Arc::new(bad));
    let mirror = serving(good.clone());
    let origins = vec![
        down.clone(),
        liar.url("/live.squashfs"),
        mirror.url("/live.squashfs"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let rep = fetch_from(&origins, &dest, &opts(Some(&sha(&good)))).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), *good);
    assert_eq!(rep.url, origins[2]);
    assert_eq!(rep.failovers, 2, "{rep:?}");
    assert_eq!(rep.bytes, LEN as u64);
    // The down origin had its attempts in a row, then the liar one full
    // download; after its digest failed, the good mirror from byte 0.
    assert!(rep.attempts >= ORIGIN_ATTEMPTS + 2, "{rep:?}");
    assert_eq!(liar.requests().len(), 1);
    let m = mirror.requests();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].header("range"), None, "{:?}", m[0]);
    assert!(!part_path(&dest).exists());
}

#[test]
fn the_next_mirror_resumes_where_the_first_broke_off() {
    let d = Arc::new(data(LEN));
    let d1 = d.clone();
    // The first origin drops the connection after CUT bytes, then fails.
    let first = Server::start(move |_, i, s| {
        if i == 0 {
            ok(s, &d1, Some(CUT), Some("\"etag-of-the-first\""))
        } else {
            respond(
                s,
                "503 Service Unavailable",
                &[("Content-Length", "0".into())],
                b"",
            )
        }
    });
    let second = serving(d.clone());
    let origins = vec![first.url("/live.squashfs"), second.url("/live.squashfs")];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let rep = fetch_from(&origins, &dest, &opts(Some(&sha(&d)))).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), *d);
    assert_eq!(first.requests().len(), ORIGIN_ATTEMPTS as usize);
    let r = second.requests();
    assert_eq!(r.len(), 1, "{r:?}");
    // A Range from where the first stopped, without the first's validator.
    assert_eq!(range_start(&r[0]), Some(CUT), "{:?}", r[0]);
    assert_eq!(r[0].header("if-range"), None, "{:?}", r[0]);
    assert_eq!(
        (rep.failovers, rep.resumes, rep.restarts),
        (1, 1, 0),
        "{rep:?}"
    );
    assert_eq!(rep.url, origins[1]);
}

#[test]
fn every_origin_failing_names_each_one_and_why() {
    let d = Arc::new(data(100_000));
    let gone = Server::start(|_, _, s| {
        respond(s, "404 Not Found", &[("Content-Length", "0".into())], b"")
    });
    let liar = serving(Arc::new(data(100_001)));
    let origins = vec![gone.url("/live.squashfs"), liar.url("/live.squashfs")];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let t = Instant::now();
    let e = fetch_from(&origins, &dest, &opts(Some(&sha(&d)))).unwrap_err();
    // Neither is worth retrying: no waiting for the deadline.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(e, FetchError::Origins { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 4);
    let msg = e.to_string();
    assert!(msg.starts_with("no origin gave the image in "), "{msg}");
    assert!(
        msg.contains(&format!(
            "origin 1/2 {}: {}: HTTP 404",
            origins[0], origins[0]
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("origin 2/2 {}: sha256 mismatch: got ", origins[1])),
        "{msg}"
    );
    assert_eq!(gone.requests().len(), 1);
    assert_eq!(liar.requests().len(), 1);
    assert_nothing_left(&dest);
}

#[test]
fn a_presigned_origin_is_not_asked_for_a_sidecar_the_next_origin_is() {
    let d = Arc::new(data(200_000));
    let (d1, d2) = (d.clone(), d.clone());
    let digest = sha(&d);
    // An object store: the presigned image URL works, any other path is
    // refused (its signature covers that path only).
    let store = Server::start(move |r, _, s| {
        if r.path.starts_with("/bucket/live.squashfs?") {
            ok(s, &d1, None, None)
        } else {
            respond(s, "403 Forbidden", &[("Content-Length", "0".into())], b"")
        }
    });
    let boot = Server::start(move |r, _, s| match r.path.as_str() {
        "/live.squashfs.sha256" => ok(
            s,
            format!("{digest}  live.squashfs\n").as_bytes(),
            None,
            None,
        ),
        _ => ok(s, &d2, None, None),
    });
    let presigned = store.url(
        "/bucket/live.squashfs?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
         &X-Amz-Signature=0123456789abcdef",
    );
    let origins = vec![presigned.clone(), boot.url("/live.squashfs")];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("img");
    let o = FetchOptions {
        sidecar: true,
        ..opts(None)
    };
    let rep = fetch_from(&origins, &dest, &o).unwrap();
    assert_eq!(rep.verified_by, "sidecar");
    assert_eq!(rep.url, presigned, "the image comes from the first origin");
    assert_eq!(std::fs::read(&dest).unwrap(), *d);
    let store_paths: Vec<String> = store.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(store_paths.len(), 1, "{store_paths:?}");
    assert!(!store_paths[0].contains(".sha256"), "{store_paths:?}");
    let boot_paths: Vec<String> = boot.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(boot_paths, ["/live.squashfs.sha256"]);

    // Only presigned origins and no pinned digest: refused, saying what to do.
    std::fs::remove_file(&dest).unwrap();
    let e = fetch(&presigned, &dest, &o).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("presigned URL"), "{msg}");
    assert!(msg.contains("nodeboot.sha256="), "{msg}");
    assert_nothing_left(&dest);
}

#[test]
fn presigned_urls_are_recognised_by_their_signature_parameter() {
    for (url, yes) in [
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=a%2Fb&X-Amz-Signature=ab",
            true,
        ),
        (
            "https://b.s3.amazonaws.com/k?AWSAccessKeyId=A&Expires=1&Signature=x%2By",
            true,
        ),
        (
            "https://storage.googleapis.com/b/k?X-Goog-Algorithm=a&X-Goog-Signature=00",
            true,
        ),
        (
            "https://acct.blob.core.windows.net/c/k?sv=2020-08-04&se=2026&sr=b&sp=r&sig=abc%3D",
            true,
        ),
        ("https://mirror.example/live.squashfs", false),
        ("https://mirror.example/live.squashfs?v=2", false),
        (
            "https://mirror.example/sig/live.squashfs#Signature=x",
            false,
        ),
    ] {
        assert_eq!(is_presigned(url), yes, "{url}");
    }
}
