//! `nodectl fetch` as the operator runs it: exit codes, the stderr message,
//! and https against a real TLS server (`openssl s_server`) with an operator CA.
mod common;
use common::{free_port, nodectl_out as nodectl};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn part(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", p.display()))
}

fn assert_nothing_left(p: &Path) {
    assert!(!p.exists(), "{} exists", p.display());
    assert!(!part(p).exists(), "{} exists", part(p).display());
}

/// A plain HTTP server on 127.0.0.1 serving fixed files; 404 for the rest.
fn serve(files: Vec<(&'static str, Vec<u8>)>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body): (&str, &[u8]) = match files.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", b),
                None => ("404 Not Found", b"not here\n"),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn success_prints_the_report_and_uses_the_sidecar() {
    let d = data(2_000_000);
    let side = format!("{}  img\n", sha(&d)).into_bytes();
    let port = serve(vec![("/img", d.clone()), ("/img.sha256", side)]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let url = format!("http://127.0.0.1:{port}/img");
    let o = nodectl(&["fetch", &url, "-o", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(r["sha256"], sha(&d).as_str());
    assert_eq!(r["verified_by"], "sidecar");
    assert_eq!(r["bytes"], d.len() as u64);
    assert_eq!(r["url"], url.as_str());
    assert!(std::fs::read(&out).unwrap() == d);
    assert!(!part(&out).exists());
    // The closing line on the console names size, speed and digest.
    let last = o.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("done") && last.contains("MB/s") && last.contains(&sha(&d)),
        "{}",
        o.stderr
    );
}

#[test]
fn digest_mismatch_exits_3_and_leaves_nothing() {
    let d = data(300_000);
    let port = serve(vec![("/img", d.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let url = format!("http://127.0.0.1:{port}/img");
    let wrong = sha(b"not the image");
    let o = nodectl(&[
        "fetch",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--sha256",
        &wrong,
    ]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    let want = format!(
        "nodectl: error: {url}: sha256 mismatch: expected {wrong}, got {}",
        sha(&d)
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    assert_nothing_left(&out);
}

#[test]
fn not_found_exits_5_at_once() {
    let port = serve(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let url = format!("http://127.0.0.1:{port}/live.squashfs");
    let t = Instant::now();
    let o = nodectl(&["fetch", &url, "-o", out.to_str().unwrap(), "--no-sidecar"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("nodectl: error: {url}: HTTP 404 Not Found")),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("retry"), "{}", o.stderr);
    assert_nothing_left(&out);
}

#[test]
fn missing_sidecar_exits_5_and_says_what_to_do() {
    let port = serve(vec![("/img", data(1000))]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let url = format!("http://127.0.0.1:{port}/img");
    let o = nodectl(&["fetch", &url, "-o", out.to_str().unwrap()]);
    assert_eq!(o.code, 5, "{}", o.stderr);
    for want in [
        format!("nodectl: error: {url}.sha256: HTTP 404"),
        "--sha256".into(),
        "nodeboot.sha256=".into(),
    ] {
        assert!(o.stderr.contains(&want), "{want:?} not in {}", o.stderr);
    }
    assert_nothing_left(&out);
}

#[test]
fn unreachable_exits_4_after_the_deadline() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("img");
    let url = format!("http://127.0.0.1:{port}/live.squashfs");
    let t = Instant::now();
    let o = nodectl(&[
        "fetch",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--no-sidecar",
        "--timeout",
        "2",
    ]);
    let took = t.elapsed();
    assert_eq!(o.code, 4, "{}", o.stderr);
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(
        o.stderr.contains(&format!(
            "nodectl: error: {url}: gave up after 2s (deadline)"
        )),
        "{}",
        o.stderr
    );
    // One warn line per retry, with the reason and the next delay.
    let retries: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.contains("retry in"))
        .collect();
    assert!(retries.len() >= 2, "{}", o.stderr);
    assert!(
        retries[0].contains("refused") && retries[0].contains("retry in 0.5s"),
        "{}",
        o.stderr
    );
    assert_nothing_left(&out);
}

/// `openssl …` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Kills the TLS server when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_needs_the_operator_ca() {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIP https_needs_the_operator_ca: no openssl command on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // A site CA and a server certificate for 127.0.0.1 signed by it.
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        p,
        &[
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-subj",
                "/CN=nodeboot test CA",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        p,
        &[
            &["req", "-new"][..],
            &ec[..],
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p.join("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "srv.ext",
            "-out",
            "srv.pem",
        ],
    );
    let www = p.join("www");
    std::fs::create_dir(&www).unwrap();
    let d = data(3_000_000);
    std::fs::write(www.join("img"), &d).unwrap();

    let port = free_port();
    let mut child = Command::new("openssl")
        .args(["s_server", "-WWW", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(p.join("srv.pem"))
        .arg("-key")
        .arg(p.join("srv.key"))
        .current_dir(&www)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting openssl s_server");
    // s_server prints ACCEPT once it listens.
    let stdout = child.stdout.take().unwrap();
    let _srv = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if l.contains("ACCEPT") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("openssl s_server did not start");

    let url = format!("https://127.0.0.1:{port}/img");
    let out = p.join("out");
    let ca = p.join("ca.pem");
    let o = nodectl(&[
        "fetch",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--sha256",
        &sha(&d),
        "--ca-file",
        ca.to_str().unwrap(),
        "--timeout",
        "30",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(r["sha256"], sha(&d).as_str());
    assert_eq!(r["verified_by"], "cmdline");
    assert!(std::fs::read(&out).unwrap() == d);
    std::fs::remove_file(&out).unwrap();

    // Without the CA: refused at once, and the operator is told why.
    let t = Instant::now();
    let o = nodectl(&[
        "fetch",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--sha256",
        &sha(&d),
        "--timeout",
        "30",
    ]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "nodectl: error: {url}: TLS: invalid peer certificate: UnknownIssuer"
        )) && o.stderr.contains("--ca-file"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("retry"), "{}", o.stderr);
    assert_nothing_left(&out);

    // A CA file without a certificate is an error naming the file.
    let o = nodectl(&[
        "fetch",
        &url,
        "-o",
        out.to_str().unwrap(),
        "--no-sidecar",
        "--ca-file",
        p.join("ca.key").to_str().unwrap(),
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("ca.key: no PEM certificate"),
        "{}",
        o.stderr
    );
}
