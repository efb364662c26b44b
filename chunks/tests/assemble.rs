//! The assembler: seeds first, then peers, then origin mirrors in order;
//! a lying source dropped, a dead mirror failed over, and the errors an
//! operator reads when nothing works.
use anyhow::{bail, Result};
use nodeboot_chunks::assemble::{
    self, assemble, ChunkSource, HttpStore, Kind, Options, Seed, Sources,
};
use nodeboot_chunks::{ChunkId, Index, Params, Store};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

struct Img {
    _t: tempfile::TempDir,
    dir: PathBuf,
    data: Vec<u8>,
    ix: Index,
    sha: String,
    store: PathBuf,
}

/// An image (noise, some repeated zero runs), chunked into `dir/store`.
fn image(seed: u64) -> Img {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let mut data = noise(2_000_000, seed);
    data.extend(vec![0u8; 600_000]);
    data.extend(noise(1_000_000, seed + 1));
    data.extend(vec![0u8; 600_000]);
    std::fs::write(dir.join("v.squashfs"), &data).unwrap();
    let store = dir.join("store");
    let (ix, sha, _) = Store::new(&store)
        .add_file(&dir.join("v.squashfs"), Params::DEFAULT)
        .unwrap();
    std::fs::write(dir.join("v.caibx"), ix.to_bytes()).unwrap();
    Img {
        _t: t,
        dir,
        data,
        ix,
        sha,
        store,
    }
}

fn origin(p: &Path) -> Box<dyn ChunkSource> {
    Box::new(Store::new(p))
}

#[test]
fn from_the_origin_store_alone() {
    let im = image(1);
    let out = im.dir.join("out");
    let r = assemble(
        &im.ix,
        &im.sha,
        &out,
        Sources {
            origins: vec![origin(&im.store)],
            ..Default::default()
        },
        &Options::default(),
    )
    .unwrap();
    assert!(std::fs::read(&out).unwrap() == im.data);
    // The zero runs are one chunk fetched once.
    assert!(r.unique_chunks < r.chunks, "{r:?}");
    assert_eq!(r.totals(Kind::Origin).0, r.unique_chunks);
}

#[test]
fn a_seed_supplies_what_it_has() {
    let v1 = image(1);
    // v2: v1 with 5000 bytes inserted in the middle.
    let mut d2 = v1.data.clone();
    d2.splice(1_000_000..1_000_000, noise(5000, 99));
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("v2"), &d2).unwrap();
    let store2 = t.path().join("store2");
    let (ix2, sha2, _) = Store::new(&store2)
        .add_file(&t.path().join("v2"), Params::DEFAULT)
        .unwrap();
    let seed = Seed::open(&v1.dir.join("v.squashfs"), &v1.dir.join("v.caibx")).unwrap();
    let out = t.path().join("out");
    let r = assemble(
        &ix2,
        &sha2,
        &out,
        Sources {
            seeds: vec![seed],
            origins: vec![origin(&store2)],
            ..Default::default()
        },
        &Options::default(),
    )
    .unwrap();
    assert!(std::fs::read(&out).unwrap() == d2);
    let (sc, sb, _) = r.totals(Kind::Seed);
    let (oc, ob, _) = r.totals(Kind::Origin);
    assert!(oc <= 3, "origin gave {oc} chunks");
    assert!(
        ob < 300_000 && sb > 3_000_000,
        "seed {sc}/{sb}, origin {oc}/{ob}"
    );
}

/// A peer that answers every request with the wrong bytes.
struct Liar(AtomicU64);
impl ChunkSource for Liar {
    fn name(&self) -> String {
        "peer 10.0.0.66".into()
    }
    fn get(&self, _id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(vec![0x55; size as usize])
    }
}

struct Shared(Arc<Liar>);
impl ChunkSource for Shared {
    fn name(&self) -> String {
        self.0.name()
    }
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        self.0.get(id, size)
    }
}

#[test]
fn a_lying_peer_is_dropped_after_its_first_lie() {
    let im = image(2);
    let liar = Arc::new(Liar(AtomicU64::new(0)));
    let r = assemble(
        &im.ix,
        &im.sha,
        &im.dir.join("out"),
        Sources {
            peers: vec![Box::new(Shared(liar.clone()))],
            origins: vec![origin(&im.store)],
            ..Default::default()
        },
        &Options {
            parallel: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(liar.0.load(Ordering::SeqCst), 1, "asked again after lying");
    let peer = &r.sources[0];
    assert_eq!(peer.kind, Kind::Peer);
    assert_eq!((peer.chunks, peer.bad_chunks), (0, 1));
    assert!(peer
        .dropped
        .as_deref()
        .unwrap()
        .starts_with("sent a wrong chunk for"));
    assert!(std::fs::read(im.dir.join("out")).unwrap() == im.data);
}

/// A source as slow as a congested link: each chunk after a pause.
struct Slow(Box<dyn ChunkSource>, std::time::Duration);
impl ChunkSource for Slow {
    fn name(&self) -> String {
        format!("slow {}", self.0.name())
    }
    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        std::thread::sleep(self.1);
        self.0.get(id, size)
    }
}

/// Past the deadline no chunk is asked for: the error says how far it got,
/// and the partial output is removed.
#[test]
fn the_deadline_stops_the_assembly() {
    let im = image(11);
    let out = im.dir.join("out");
    let t = std::time::Instant::now();
    let e = assemble(
        &im.ix,
        &im.sha,
        &out,
        Sources {
            origins: vec![Box::new(Slow(
                origin(&im.store),
                std::time::Duration::from_millis(100),
            ))],
            ..Default::default()
        },
        &Options {
            parallel: 1,
            deadline: Some(t + std::time::Duration::from_millis(350)),
            ..Default::default()
        },
    )
    .unwrap_err();
    let d = e
        .downcast_ref::<assemble::DeadlineReached>()
        .unwrap_or_else(|| panic!("not a deadline: {e:#}"));
    let unique = im
        .ix
        .chunks
        .iter()
        .map(|c| c.id)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert!((1..=4).contains(&d.done), "{d:?}");
    assert_eq!(d.total, unique);
    assert!(
        e.to_string().starts_with(&format!(
            "deadline reached after 0s with {} of {unique} chunks assembled",
            d.done
        )),
        "{e}"
    );
    assert!(!out.exists(), "the partial image is removed");
}

#[test]
fn wrong_image_digest_removes_the_output() {
    let im = image(3);
    let out = im.dir.join("out");
    let e = assemble(
        &im.ix,
        &"0".repeat(64),
        &out,
        Sources {
            origins: vec![origin(&im.store)],
            ..Default::default()
        },
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("has sha256 {}, but 0000", im.sha)),
        "{e:#}"
    );
    assert!(!out.exists());
}

#[test]
fn a_chunk_no_source_has() {
    let im = image(4);
    let c = im.ix.chunks[2];
    std::fs::remove_file(Store::new(&im.store).path(&c.id)).unwrap();
    let e = assemble(
        &im.ix,
        &im.sha,
        &im.dir.join("out"),
        Sources {
            origins: vec![origin(&im.store)],
            ..Default::default()
        },
        &Options {
            parallel: 1,
            ..Default::default()
        },
    )
    .unwrap_err();
    let m = format!("{e:#}");
    assert_eq!(
        m,
        format!("chunk {} ({} bytes): no source has it", c.id, c.size)
    );
}

#[test]
fn index_digest_is_checked_before_parsing() {
    let im = image(5);
    let b = im.ix.to_bytes();
    let good = nodeboot_chunks::sha256_hex(&b);
    assert_eq!(assemble::index_checked(&b, &good).unwrap(), im.ix);
    let e = assemble::index_checked(&b, &"ab".repeat(32)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "sha256 mismatch: it hashes to {good}, the command line pins {}",
            "ab".repeat(32)
        )
    );
}

/// A static file server on 127.0.0.1 (keep-alive), counting requests;
/// `corrupt`: every body is replaced by the zstd of other bytes.
fn serve(root: PathBuf, corrupt: bool) -> (String, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicU64::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (root, count) = (root.clone(), count.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut r = BufReader::new(c.try_clone()?);
                let mut w = c;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h)? == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    match std::fs::read(root.join(path.trim_start_matches('/'))) {
                        Ok(mut b) => {
                            if corrupt {
                                b = zstd::bulk::compress(&vec![1u8; 1000], 3)?;
                            }
                            write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())?;
                            w.write_all(&b)?;
                        }
                        Err(_) => write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?,
                    }
                    if line.is_empty() {
                        bail!("unreachable");
                    }
                }
            });
        }
    });
    (url, n)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(true)
        .build()
        .new_agent()
}

fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = format!("http://{}/store", l.local_addr().unwrap());
    drop(l);
    u
}

#[test]
fn http_mirrors_fail_over_and_a_corrupt_mirror_is_dropped() {
    let im = image(6);
    let (good, hits) = serve(im.dir.clone(), false);
    let (bad, _) = serve(im.dir.clone(), true);
    let dead = dead_url();
    let fast = nodeboot_common::retry::Policy::attempts(
        2,
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(10),
    );
    let r = assemble(
        &im.ix,
        &im.sha,
        &im.dir.join("out"),
        Sources {
            origins: vec![
                Box::new(HttpStore::new(agent(), &dead).with_retry(fast)),
                Box::new(HttpStore::new(agent(), &format!("{bad}/store"))),
                Box::new(HttpStore::new(agent(), &format!("{good}/store/"))),
            ],
            ..Default::default()
        },
        &Options::default(),
    )
    .unwrap();
    assert!(std::fs::read(im.dir.join("out")).unwrap() == im.data);
    let [d, b, g] = &r.sources[..] else {
        panic!("{r:?}")
    };
    assert!(
        d.dropped
            .as_deref()
            .unwrap()
            .starts_with("3 failures in a row"),
        "{d:?}"
    );
    assert!(
        b.dropped
            .as_deref()
            .unwrap()
            .starts_with("sent a wrong chunk"),
        "{b:?}"
    );
    assert_eq!(g.chunks, r.unique_chunks);
    assert!(g.wire_bytes.unwrap() > 0);
    assert!(hits.load(Ordering::SeqCst) >= r.unique_chunks);
    // fetch_index over HTTP, pinned.
    let b = std::fs::read(im.dir.join("v.caibx")).unwrap();
    let ix = assemble::fetch_index(
        &agent(),
        &format!("{good}/v.caibx"),
        &nodeboot_chunks::sha256_hex(&b),
        fast,
    )
    .unwrap();
    assert_eq!(ix, im.ix);
    let e = assemble::fetch_index(&agent(), &format!("{good}/nope.caibx"), "00", fast).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!("fetching the index {good}/nope.caibx: HTTP 404")
    );
}

#[test]
fn an_unreachable_origin() {
    let im = image(7);
    let dead = dead_url();
    let fast = nodeboot_common::retry::Policy::attempts(
        2,
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(10),
    );
    let e = assemble(
        &im.ix,
        &im.sha,
        &im.dir.join("out"),
        Sources {
            origins: vec![Box::new(HttpStore::new(agent(), &dead).with_retry(fast))],
            ..Default::default()
        },
        &Options {
            parallel: 1,
            ..Default::default()
        },
    )
    .unwrap_err();
    let m = format!("{e:#}");
    assert!(
        m.contains(&format!("no source gave it: {dead}: GET {dead}/")),
        "{m}"
    );
    assert!(m.contains("onnection"), "{m}");
}
