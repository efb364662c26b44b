//! Debian's casync reads what we write: `casync extract` rebuilds the image
//! byte for byte from our `.caibx` and chunk store; and we read what casync
//! writes (`casync make --digest=sha256`).
use nodeboot_chunks::{Index, Params, Store};
use std::path::Path;
use std::process::Command;

fn casync(args: &[&str], dir: &Path) -> String {
    let out = Command::new("casync")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("casync runs (apt-get install casync; cargo xtask deps)");
    assert!(
        out.status.success(),
        "casync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file that looks like an image: compressible runs, noise, zeros.
fn image(n: usize) -> Vec<u8> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        match s % 3 {
            0 => v.extend(std::iter::repeat_n(
                (s >> 8) as u8,
                (s >> 16) as usize % 3000,
            )),
            1 => v.extend((0..(s >> 20) as usize % 5000).map(|i| (s >> (i % 56)) as u8 ^ i as u8)),
            _ => v.extend(std::iter::repeat_n(0u8, (s >> 24) as usize % 70_000)),
        }
    }
    v.truncate(n);
    v
}

#[test]
fn casync_extract_rebuilds_our_image() {
    let t = tempfile::tempdir().unwrap();
    let data = image(5_000_000);
    std::fs::write(t.path().join("img.squashfs"), &data).unwrap();
    let store = Store::new(t.path().join("store"));
    let (ix, sha, _) = store
        .add_file(&t.path().join("img.squashfs"), Params::DEFAULT)
        .unwrap();
    assert!(ix.chunks.len() > 20, "{} chunks", ix.chunks.len());
    std::fs::write(t.path().join("img.caibx"), ix.to_bytes()).unwrap();
    casync(
        &["extract", "--store=store", "img.caibx", "out.img"],
        t.path(),
    );
    let out = std::fs::read(t.path().join("out.img")).unwrap();
    assert_eq!(out.len(), data.len());
    assert!(out == data, "casync's output differs from the image");
    assert_eq!(nodeboot_chunks::sha256_hex(&out), sha);
    // casync's digest of the blob through our index and store is its
    // digest of the image itself.
    let via_index = casync(&["digest", "--store=store", "img.caibx"], t.path());
    let direct = casync(&["digest", "img.squashfs"], t.path());
    assert_eq!(via_index, direct);
    assert_eq!(direct.trim().len(), 64);
}

#[test]
fn we_read_what_casync_makes() {
    let t = tempfile::tempdir().unwrap();
    let data = image(3_000_000);
    std::fs::write(t.path().join("blob"), &data).unwrap();
    casync(
        &[
            "make",
            "--digest=sha256",
            "--compression=zstd",
            "--store=store",
            "blob.caibx",
            "blob",
        ],
        t.path(),
    );
    let ix = Index::parse(&std::fs::read(t.path().join("blob.caibx")).unwrap()).unwrap();
    assert_eq!(ix.total_size(), data.len() as u64);
    // Our writer gives casync's bytes back.
    assert_eq!(
        ix.to_bytes(),
        std::fs::read(t.path().join("blob.caibx")).unwrap()
    );
    let store = Store::new(t.path().join("store"));
    let mut back = Vec::new();
    for c in &ix.chunks {
        back.extend(store.get(&c.id, c.size).unwrap());
    }
    assert!(back == data);
}
