//! Reproducibility and the outputs beside the image: the same tree, written
//! twice in different orders in different directories, gives the same bytes
//! under SOURCE_DATE_EPOCH; the `.sha256` sidecar and the `.json` manifest
//! describe the image; `--exclude` leaves out what it matches.
mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

const SDE: u64 = 1_700_000_000;

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at byte {i:#x}"),
        None => format!(
            "one is a prefix of the other ({} vs {} bytes)",
            a.len(),
            b.len()
        ),
    }
}

fn looks_like_rfc3339(s: &str) -> bool {
    // 2023-11-14T22:13:20Z, 2023-11-14T22:13:20.5+01:00, …
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains(['+', '-']))
}

fn check_sidecar(img: &Path) {
    let dir = img.parent().unwrap();
    let name = img.file_name().unwrap().to_str().unwrap();
    let sidecar = dir.join(format!("{name}.sha256"));
    let text = fs::read_to_string(&sidecar)
        .unwrap_or_else(|e| panic!("reading {}: {e}", sidecar.display()));
    let line = text.lines().next().unwrap_or("");
    let (hash, file) = line
        .split_once("  ")
        .or_else(|| line.split_once(" *"))
        .unwrap_or_else(|| panic!("{}: not the sha256sum format: {text:?}", sidecar.display()));
    assert_eq!(hash, sha256_hex(img), "the sidecar's digest");
    assert_eq!(
        file, name,
        "the sidecar names the image without its directory"
    );
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg(sidecar.file_name().unwrap())
        .current_dir(dir)
        .output()
        .expect("running sha256sum");
    assert!(
        out.status.success(),
        "sha256sum -c {} in {}: {}{}",
        sidecar.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest(img: &Path) -> serde_json::Value {
    let name = img.file_name().unwrap().to_str().unwrap();
    let json = img
        .parent()
        .unwrap()
        .join(format!("{}.json", name.strip_suffix(".squashfs").unwrap()));
    let text =
        fs::read_to_string(&json).unwrap_or_else(|e| panic!("reading {}: {e}", json.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{text}", json.display()))
}

fn check_manifest(img: &Path, source: &Path, level: u64, entries: usize) -> serde_json::Value {
    let m = manifest(img);
    let len = fs::metadata(img).unwrap().len();
    assert_eq!(
        m["sha256"].as_str(),
        Some(sha256_hex(img).as_str()),
        "sha256 in {m:#}"
    );
    assert_eq!(m["size"].as_u64(), Some(len), "size in {m:#}");
    assert_eq!(
        m["compressor"].as_str(),
        Some("zstd"),
        "compressor in {m:#}"
    );
    assert_eq!(m["level"].as_u64(), Some(level), "level in {m:#}");
    assert_eq!(
        m["block_size"].as_u64(),
        Some(131_072),
        "block_size in {m:#}"
    );
    assert_eq!(
        m["entries"].as_u64(),
        Some(entries as u64),
        "entries (paths, the root included) in {m:#}"
    );
    let kernels: Vec<&str> = m["kernels"]
        .as_array()
        .unwrap_or_else(|| panic!("kernels is not a list in {m:#}"))
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kernels, ["6.1.0-99-amd64"], "kernels in {m:#}");
    assert_eq!(
        m["nodectl_version"].as_str(),
        Some("9.8.7-test"),
        "nodectl_version (usr/bin/nodectl carries NODEBOOT_NODECTL_VERSION=9.8.7-test) in {m:#}"
    );
    let bt = m["build_time"].as_str().unwrap_or("");
    assert!(looks_like_rfc3339(bt), "build_time {bt:?} is not RFC 3339");
    let src = m["source"].as_str().unwrap_or("");
    assert!(
        src.ends_with(source.file_name().unwrap().to_str().unwrap()),
        "source {src:?} does not name {}",
        source.display()
    );
    m
}

#[test]
fn same_tree_twice_gives_same_bytes() {
    let privileged = is_root();
    if !privileged {
        println!("NOTE: not root: the tree has no device nodes, foreign owners or capabilities");
    }
    let mut spec = node_root_tree(privileged);
    // Newer than SOURCE_DATE_EPOCH: clamped to it.
    spec.file("etc/fresh", b"new\n".to_vec())
        .mtime(1_800_000_000);
    spec.file("etc/at-epoch", b"=\n".to_vec()).mtime(SDE as i64);
    spec.file("etc/after-epoch", b"+\n".to_vec())
        .mtime(SDE as i64 + 1);
    spec.root().mtime(1_800_000_001);

    let t = tempdir();
    let a = t.path().join("first");
    let b = t.path().join("second-copy");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    write_tree(&a, &spec, Order::AsListed);
    let order = match tool() {
        Tool::Nodeimg => Order::Reversed,
        Tool::Mksquashfs => {
            println!("NOTE: xattrs set in the same order (mksquashfs keeps listxattr order)");
            Order::ReversedKeepXattrs
        }
    };
    write_tree(&b, &spec, order);
    assert_source_has(&a, &spec);
    assert_source_has(&b, &spec);

    let (o1, o2) = (t.path().join("out1"), t.path().join("out2"));
    fs::create_dir(&o1).unwrap();
    fs::create_dir(&o2).unwrap();
    let (i1, i2) = (o1.join("node.squashfs"), o2.join("node.squashfs"));
    let opts = BuildOpts {
        level: Some(3),
        source_date_epoch: Some(SDE),
        ..Default::default()
    };
    build_ok(&a, &i1, &opts);
    // One compression thread instead of all cores: same bytes too.
    build_ok(
        &b,
        &i2,
        &BuildOpts {
            threads: Some(1),
            ..opts.clone()
        },
    );

    let (x, y) = (fs::read(&i1).unwrap(), fs::read(&i2).unwrap());
    assert!(
        x == y,
        "two builds of the same tree differ ({} vs {} bytes): {}",
        x.len(),
        y.len(),
        first_difference(&x, &y)
    );
    let sb = superblock(&i1);
    assert_eq!(
        sb.mkfs_time as u64, SDE,
        "superblock time under SOURCE_DATE_EPOCH"
    );
    assert_eq!(sb.compression, ZSTD, "compressor id (6 = zstd)");

    if tool() == Tool::Nodeimg {
        check_sidecar(&i1);
        check_sidecar(&i2);
        let m1 = check_manifest(&i1, &a, 3, count_paths(&spec));
        let m2 = check_manifest(&i2, &b, 3, count_paths(&spec));
        if let Some(n) = m1.get("inodes").and_then(|v| v.as_u64()) {
            assert_eq!(
                n, sb.inodes as u64,
                "inodes in the manifest vs the superblock"
            );
        }
        for k in ["sha256", "size", "entries", "kernels", "nodectl_version"] {
            assert_eq!(m1[k], m2[k], "{k} differs between the two manifests");
        }
    } else {
        println!("SKIP: sidecar and manifest checks (NODEIMG_TEST_MKSQUASHFS=1)");
    }

    // Mounted: everything as in the source, mtimes clamped.
    if skip_without_mount("same_tree_twice_gives_same_bytes (the mounted comparison)") {
        return;
    }
    let m = Mount::new(&i1, &t.path().join("mnt"));
    for (p, want) in [
        ("etc/fresh", SDE as i64),
        ("etc/at-epoch", SDE as i64),
        ("etc/after-epoch", SDE as i64),
        ("", SDE as i64),
    ] {
        assert_eq!(
            info(&m.dir.join(p)).mtime,
            want,
            "mtime of /{p} in the image"
        );
    }
    assert_same_trees(
        &a,
        &m.dir,
        Expect {
            clamp_mtime: Some(SDE as i64),
            ..Default::default()
        },
    );
}

#[test]
fn exclude_globs() {
    let spec = node_root_tree(false);
    let t = tempdir();
    let src = t.path().join("root");
    fs::create_dir(&src).unwrap();
    write_tree(&src, &spec, Order::AsListed);
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let img = out.join("small.squashfs");
    build_ok(
        &src,
        &img,
        &BuildOpts {
            level: Some(1),
            exclude: vec!["boot/*".into(), "lib/modules/*/kernel/sound".into()],
            ..Default::default()
        },
    );
    let listed = list_image(&img);
    let mut want: Vec<String> = spec
        .entries
        .iter()
        .map(|e| e.path.to_str().unwrap().to_string())
        .filter(|p| {
            !p.starts_with("boot/") && !p.starts_with("lib/modules/6.1.0-99-amd64/kernel/sound")
        })
        .collect();
    want.sort();
    assert!(want.iter().any(|p| p == "boot"), "boot itself stays");
    assert!(want
        .iter()
        .any(|p| p == "lib/modules/6.1.0-99-amd64/kernel/net/veth.ko"));
    assert_eq!(
        listed, want,
        "paths in the image built with --exclude 'boot/*' --exclude 'lib/modules/*/kernel/sound'"
    );
    if tool() == Tool::Nodeimg {
        let m = manifest(&img);
        assert_eq!(
            m["entries"].as_u64(),
            Some(want.len() as u64),
            "entries in {m:#}"
        );
    }
}
