//! Peer-assisted fetch with real processes: an origin serving the chunk
//! store and index, an honest peer (`nodectl serve-chunks`), a lying peer
//! that claims every chunk and serves wrong bytes, and `nodectl fetch
//! --index … --peer …`. The node gets the right image, the liar is dropped
//! (the fetch report says so), and the honest peer and the origin gave
//! the rest.
use nodeboot_chunks::{Params, Store};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// The request line's path, after reading the head.
fn read_path(s: &mut TcpStream) -> Option<String> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
    }
    Some(line.split_whitespace().nth(1)?.to_string())
}

fn answer(s: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// Serve files under `root` over HTTP on 127.0.0.1 (one request per
/// connection); returns the port and the count of chunk requests.
fn origin(root: PathBuf) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let chunks = Arc::new(AtomicU64::new(0));
    let c = chunks.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let Some(path) = read_path(&mut s) else {
                continue;
            };
            if path.ends_with(".cacnk") {
                c.fetch_add(1, Ordering::Relaxed);
            }
            match std::fs::read(root.join(path.trim_start_matches('/'))) {
                Ok(b) if !path.contains("..") => answer(&mut s, "200 OK", &b),
                _ => answer(&mut s, "404 Not Found", b""),
            }
        }
    });
    (port, chunks)
}

/// A peer that claims every chunk and sends zeros of the right length.
fn liar(index: &nodeboot_chunks::Index) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let asked = Arc::new(AtomicU64::new(0));
    let a = asked.clone();
    let sizes: std::collections::HashMap<String, u32> = index
        .chunks
        .iter()
        .map(|c| (c.id.to_hex(), c.size))
        .collect();
    let n = index.chunks.len();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let Some(path) = read_path(&mut s) else {
                continue;
            };
            if path.ends_with("/have") {
                answer(&mut s, "200 OK", &vec![0xff; n.div_ceil(8)]);
            } else if let Some(size) = path.rsplit('/').next().and_then(|id| sizes.get(id)) {
                a.fetch_add(1, Ordering::Relaxed);
                answer(&mut s, "200 OK", &vec![0u8; *size as usize]);
            } else {
                answer(&mut s, "404 Not Found", b"");
            }
        }
    });
    (port, asked)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nodectl serve-chunks` on 127.0.0.1: the process and its address.
fn honest(image: &Path, index: &Path) -> (Killed, String) {
    let mut c = Killed(
        Command::new(env!("CARGO_BIN_EXE_nodectl"))
            .args([
                "serve-chunks",
                "--listen",
                "127.0.0.1:0",
                "--bootd",
                "http://127.0.0.1:9",
            ])
            .arg("--image")
            .arg(image)
            .arg("--index")
            .arg(index)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(c.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve-chunks exited");
        if let Some(rest) = line.split(" on ").nth(1) {
            let addr = rest.split([',', '\n']).next().unwrap().to_string();
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return (c, addr);
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    image: Vec<u8>,
    image_file: PathBuf,
    index_file: PathBuf,
    index: nodeboot_chunks::Index,
    sha: String,
    index_sha: String,
    out: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let image = data(700 << 10);
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let image_file = dir.path().join("live.squashfs");
    std::fs::write(&image_file, &image).unwrap();
    let p = Params {
        min: 4 << 10,
        avg: 16 << 10,
        max: 64 << 10,
    };
    let (index, _, _) = Store::new(www.join("store"))
        .add_file(&image_file, p)
        .unwrap();
    let bytes = index.to_bytes();
    let index_file = www.join("live.caibx");
    std::fs::write(&index_file, &bytes).unwrap();
    Setup {
        sha: nodeboot_chunks::sha256_hex(&image),
        index_sha: nodeboot_chunks::sha256_hex(&bytes),
        out: dir.path().join("out.squashfs"),
        _dir: dir,
        image,
        image_file,
        index_file,
        index,
    }
}

fn fetch(s: &Setup, origin: u16, peers: &[&str]) -> serde_json::Value {
    let base = format!("http://127.0.0.1:{origin}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodectl"));
    c.args([
        "fetch",
        &format!("{base}/live.squashfs"),
        "--sha256",
        &s.sha,
    ])
    .arg("-o")
    .arg(&s.out)
    .args([
        "--index",
        &format!("{base}/live.caibx"),
        "--index-sha256",
        &s.index_sha,
    ]);
    for p in peers {
        c.args(["--peer", p]);
    }
    let o = c.stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "nodectl fetch failed: {err}");
    assert_eq!(std::fs::read(&s.out).unwrap(), s.image, "wrong image");
    let mut line = String::new();
    BufReader::new(&o.stdout[..]).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["assembly"]["image_bytes"], s.image.len() as u64);
    // The operator reads why the liar went away.
    if !peers.is_empty() {
        assert!(err.contains("dropped for the rest of the fetch"), "{err}");
    }
    v
}

fn peer<'a>(v: &'a serde_json::Value, addr: &str) -> &'a serde_json::Value {
    v["peers"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == addr)
        .unwrap_or_else(|| panic!("{addr} not in the report: {v}"))
}

#[test]
fn a_lying_peer_is_dropped_and_the_honest_one_and_the_origin_serve_the_rest() {
    let s = setup();
    let n = s.index.chunks.len() as u64;
    assert!(n >= 20, "{n} chunks: too few to say anything");
    let (oport, origin_chunks) = origin(s.index_file.parent().unwrap().to_path_buf());
    let (lport, liar_asked) = liar(&s.index);
    let (_h, honest_addr) = honest(&s.image_file, &s.index_file);
    let liar_addr = format!("127.0.0.1:{lport}");
    let v = fetch(&s, oport, &[&liar_addr, &honest_addr]);
    let l = peer(&v, &liar_addr);
    assert_eq!(l["chunks"], 0, "{v}");
    assert!(
        l["dropped"]
            .as_str()
            .unwrap_or("")
            .contains("sent a wrong chunk"),
        "{v}"
    );
    // Dropped at its first wrong chunk: asked at most once per worker
    // that picked it at the same time (4 in flight).
    let asked = liar_asked.load(Ordering::Relaxed);
    assert!((1..=4).contains(&asked), "liar asked {asked} times");
    let h = peer(&v, &honest_addr);
    assert!(h["dropped"].is_null(), "{v}");
    let from_honest = h["chunks"].as_u64().unwrap();
    // The swarm's origin chunks, and any the assembler fetched past it.
    let from_origin =
        v["peers"]["origin_chunks"].as_u64().unwrap() + v["fetched_chunks"].as_u64().unwrap();
    assert!(from_honest > 0, "{v}");
    assert_eq!(from_honest + from_origin, n, "{v}");
    assert_eq!(origin_chunks.load(Ordering::Relaxed), from_origin);
}

#[test]
fn with_only_a_liar_the_origin_gives_everything() {
    let s = setup();
    let n = s.index.chunks.len() as u64;
    let (oport, origin_chunks) = origin(s.index_file.parent().unwrap().to_path_buf());
    let (lport, _) = liar(&s.index);
    let liar_addr = format!("127.0.0.1:{lport}");
    let v = fetch(&s, oport, &[&liar_addr]);
    assert!(peer(&v, &liar_addr)["dropped"].is_string(), "{v}");
    assert_eq!(v["peers"]["peer_chunks"], 0);
    assert_eq!(
        v["peers"]["origin_chunks"].as_u64().unwrap() + v["fetched_chunks"].as_u64().unwrap(),
        n
    );
    assert_eq!(origin_chunks.load(Ordering::Relaxed), n);
}

#[test]
fn serve_chunks_refuses_an_image_its_index_does_not_describe() {
    let s = setup();
    let mut bad = s.image.clone();
    bad[1000] ^= 1;
    std::fs::write(&s.image_file, &bad).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .args([
            "serve-chunks",
            "--listen",
            "127.0.0.1:0",
            "--bootd",
            "http://127.0.0.1:9",
        ])
        .arg("--image")
        .arg(&s.image_file)
        .arg("--index")
        .arg(&s.index_file)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the chunk does not match") && err.contains("nothing served"),
        "{err}"
    );
}
