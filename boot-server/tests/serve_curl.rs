//! The real bootd binary against real curl.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Srv {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Srv {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&repo).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("live.squashfs"), &data).unwrap();
    std::fs::write(repo.join("postscript.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), www.join("escape")).unwrap();
    let pf = dir.path().join("port");
    let child = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&www)
        .arg("--repo")
        .arg(&repo)
        .arg("--port-file")
        .arg(&pf)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Srv {
        child,
        port: 0,
        _dir: dir,
    };
    let t = Instant::now();
    while srv.port == 0 {
        if let Some(p) = std::fs::read_to_string(&pf)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            srv.port = p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "bootd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    srv
}

/// (status, headers, body) of `curl -s -i ARGS URL`.
fn curl(srv: &Srv, path: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--path-as-is"])
        .args(args)
        .arg(format!("http://127.0.0.1:{}{path}", srv.port))
        .output()
        .expect("curl missing");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

#[test]
fn get_head_range_etag() {
    let s = start();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (st, h, body) = curl(&s, "/live.squashfs", &[]);
    assert_eq!(st, 200);
    assert!(
        h.contains("content-length: 100000") && h.contains("accept-ranges: bytes"),
        "{h}"
    );
    assert_eq!(body, data);
    let (st, h, body) = curl(&s, "/live.squashfs", &["-I"]);
    assert_eq!((st, body.len()), (200, 0));
    assert!(h.contains("content-length: 100000"));
    let etag = h.lines().find(|l| l.starts_with("etag:")).unwrap()[5..]
        .trim()
        .to_string();
    let (st, h, body) = curl(&s, "/live.squashfs", &["-r", "1000-1999"]);
    assert_eq!(st, 206);
    assert!(h.contains("content-range: bytes 1000-1999/100000"), "{h}");
    assert_eq!(body, &data[1000..2000]);
    let (st, _, body) = curl(&s, "/live.squashfs", &["-H", "Range: bytes=99990-"]);
    assert_eq!((st, body.as_slice()), (206, &data[99990..]));
    let (st, h, _) = curl(&s, "/live.squashfs", &["-H", "Range: bytes=100000-"]);
    assert_eq!(st, 416);
    assert!(h.contains("content-range: bytes */100000"));
    let (st, _, _) = curl(
        &s,
        "/live.squashfs",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(st, 304);
    // If-Range with another validator: the whole file.
    let (st, _, body) = curl(
        &s,
        "/live.squashfs",
        &["-r", "0-9", "-H", "If-Range: \"other\""],
    );
    assert_eq!((st, body.len()), (200, 100_000));
}

#[test]
fn repo_and_refusals() {
    let s = start();
    let (st, _, body) = curl(&s, "/repo/postscript.sh", &[]);
    assert_eq!((st, body.as_slice()), (200, &b"#!/bin/sh\necho hi\n"[..]));
    for bad in [
        "/../secret",
        "/%2e%2e/secret",
        "/repo/../secret",
        "/escape",
        "/missing",
        "/",
        "/repo/",
        "/%2Fetc%2Fpasswd",
        "//etc/passwd",
    ] {
        let (st, _, _) = curl(&s, bad, &[]);
        assert_eq!(st, 404, "{bad}");
    }
    let (st, _, _) = curl(&s, "/live.squashfs", &["-X", "POST"]);
    assert_eq!(st, 405);
}
