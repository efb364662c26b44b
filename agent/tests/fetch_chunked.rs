//! `nodectl fetch --index`: the image assembled from chunks (a seed's and
//! a store's over HTTP), and the messages an operator reads when the index
//! is not the pinned one, when the only store sends a wrong chunk, when
//! the store is unreachable, and when the deadline passes.
mod common;
use common::{nodectl_out as nodectl, Out};
use nodeboot_chunks::{Params, Store};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Files of `root` over HTTP/1.1 keep-alive on 127.0.0.1; 404 otherwise.
fn serve(root: PathBuf) -> String {
    serve_slow(root, std::time::Duration::ZERO)
}

/// [`serve`], each chunk (`/store/…`) answered after `delay`.
fn serve_slow(root: PathBuf, delay: std::time::Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut w = c;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let path = line
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/');
                    if path.starts_with("store/") {
                        std::thread::sleep(delay);
                    }
                    let ok = match std::fs::read(root.join(path)) {
                        Ok(b) => {
                            write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .and_then(|_| w.write_all(&b))
                        }
                        Err(_) => write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                    };
                    if ok.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

struct Site {
    _t: tempfile::TempDir,
    www: PathBuf,
    v1: Vec<u8>,
    v2: Vec<u8>,
    index_sha: String,
    image_sha: String,
}

/// www/{v2.caibx, store/}: v2 is v1 with 10 kB inserted; v1 and its index
/// in seed/.
fn site() -> Site {
    let t = tempfile::tempdir().unwrap();
    let www = t.path().join("www");
    let seed = t.path().join("seed");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&seed).unwrap();
    let v1 = noise(4_000_000, 1);
    let mut v2 = v1.clone();
    v2.splice(2_000_000..2_000_000, noise(10_000, 2));
    std::fs::write(seed.join("v1.squashfs"), &v1).unwrap();
    let (ix1, _, _) = Store::new(t.path().join("seedstore"))
        .add_file(&seed.join("v1.squashfs"), Params::DEFAULT)
        .unwrap();
    std::fs::write(seed.join("v1.caibx"), ix1.to_bytes()).unwrap();
    std::fs::write(t.path().join("v2.squashfs"), &v2).unwrap();
    let (ix2, image_sha, _) = Store::new(www.join("store"))
        .add_file(&t.path().join("v2.squashfs"), Params::DEFAULT)
        .unwrap();
    let b = ix2.to_bytes();
    std::fs::write(www.join("v2.caibx"), &b).unwrap();
    Site {
        _t: t,
        index_sha: nodeboot_chunks::sha256_hex(&b),
        image_sha,
        www,
        v1,
        v2,
    }
}

fn out(s: &Site) -> PathBuf {
    s.www.parent().unwrap().join("out.squashfs")
}

fn seed(s: &Site) -> String {
    s.www
        .parent()
        .unwrap()
        .join("seed/v1.squashfs")
        .display()
        .to_string()
}

fn fetch(s: &Site, url: &str, index_sha: &str, extra: &[&str]) -> Out {
    let o = out(s);
    let mut a = vec![
        "fetch",
        "-o",
        o.to_str().unwrap(),
        "--sha256",
        &s.image_sha,
        "--index",
        url,
        "--index-sha256",
        index_sha,
    ];
    a.extend_from_slice(extra);
    nodectl(&a)
}

fn assert_nothing_left(p: &Path) {
    assert!(!p.exists(), "{} exists", p.display());
    let part = PathBuf::from(format!("{}.part", p.display()));
    assert!(!part.exists(), "{} exists", part.display());
}

#[test]
fn assembled_from_a_seed_and_the_store() {
    let s = site();
    let base = serve(s.www.clone());
    let o = fetch(
        &s,
        &format!("{base}/v2.caibx"),
        &s.index_sha,
        &["--seed", &seed(&s)],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert!(std::fs::read(out(&s)).unwrap() == s.v2);
    assert_ne!(s.v1, s.v2);
    assert_eq!(r["stores"][0], format!("{base}/store").as_str());
    let fetched = r["fetched_chunks"].as_u64().unwrap();
    assert!((1..=3).contains(&fetched), "{r}");
    assert!(r["seed_chunks"].as_u64().unwrap() > 40, "{r}");
    assert!(r["fetched_bytes"].as_u64().unwrap() < 600_000, "{r}");
}

#[test]
fn an_index_that_is_not_the_pinned_one_exits_3() {
    let s = site();
    let base = serve(s.www.clone());
    let url = format!("{base}/v2.caibx");
    let wrong = "ab".repeat(32);
    let o = fetch(&s, &url, &wrong, &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    let want = format!(
        "nodectl: error: {url}: sha256 mismatch: expected {wrong}, got {}",
        s.index_sha
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    assert_nothing_left(&out(&s));
}

#[test]
fn a_wrong_chunk_from_the_only_store() {
    let s = site();
    // Replace one chunk file by another chunk's bytes.
    let ix =
        nodeboot_chunks::Index::parse(&std::fs::read(s.www.join("v2.caibx")).unwrap()).unwrap();
    let st = Store::new(s.www.join("store"));
    let (a, b) = (ix.chunks[1], ix.chunks[2]);
    std::fs::copy(st.path(&b.id), st.path(&a.id)).unwrap();
    let base = serve(s.www.clone());
    let o = fetch(
        &s,
        &format!("{base}/v2.caibx"),
        &s.index_sha,
        &["--parallel", "1"],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("nodectl: error:"))
        .unwrap_or("");
    assert!(
        line.contains(&format!(
            "no source gave it: {base}/store: sent a wrong chunk for {}",
            a.id
        )),
        "{line}"
    );
    assert!(
        o.stderr.contains(&format!("dropping {base}/store")),
        "{}",
        o.stderr
    );
    assert_nothing_left(&out(&s));
}

#[test]
fn an_unreachable_store() {
    let s = site();
    let base = serve(s.www.clone());
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/store", l.local_addr().unwrap())
    };
    let o = fetch(
        &s,
        &format!("{base}/v2.caibx"),
        &s.index_sha,
        &["--store", &dead],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("nodectl: error:"))
        .unwrap_or("");
    assert!(line.contains("assembling the image from"), "{line}");
    assert!(
        line.contains(&format!("{dead}: GET {dead}/"))
            || line.contains("no source has it (dropped: "),
        "{line}"
    );
    assert_nothing_left(&out(&s));
}

/// A store too slow for the deadline (`--timeout`, in the initramfs
/// `nodeboot.fetch.timeout=`): exit 4, the message says how far it got.
#[test]
fn the_deadline_bounds_a_chunked_fetch() {
    let s = site();
    let base = serve_slow(s.www.clone(), std::time::Duration::from_millis(700));
    let url = format!("{base}/v2.caibx");
    let t = std::time::Instant::now();
    let o = fetch(&s, &url, &s.index_sha, &["--timeout", "2"]);
    let took = t.elapsed();
    assert_eq!(o.code, 4, "{}", o.stderr);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("nodectl: error:"))
        .unwrap_or("");
    let want = format!(
        "nodectl: error: {url}: the fetch deadline of 2s (nodeboot.fetch.timeout=, nodectl fetch --timeout) passed with "
    );
    assert!(line.starts_with(&want), "{line}");
    let total = nodeboot_chunks::Index::parse(&std::fs::read(s.www.join("v2.caibx")).unwrap())
        .unwrap()
        .chunks
        .len();
    let rest = &line[want.len()..];
    let done: usize = rest.split(' ').next().unwrap().parse().unwrap();
    assert!(done < total, "{line}");
    assert!(
        rest.contains(" chunks assembled; the chunk stores and peers are too slow or unreachable"),
        "{line}"
    );
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    assert_nothing_left(&out(&s));
}
