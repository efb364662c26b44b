//! `bench update`: what a node holding image v1 fetches for v2, where v2 is
//! v1 plus one Debian package, against the whole of v2.
//!
//! The node root is a copy of the e2e one (`CACHE/rootfs-*`, never
//! modified): v2 is the copy as it is, v1 the copy without one installed
//! package (its files as listed by dpkg, its `status` stanza and its
//! `info/` files gone, directory mtimes kept), so v1 → v2 is exactly that
//! package's installation. Both are built with `nodeimg build` (one shared
//! store, the live image's excludes and level) and with mksquashfs; every
//! image is cut into content-defined chunks (for each chunk-size set asked)
//! and the bytes fetched are the stored (zstd) sizes of v2's chunks that v1
//! lacks.
use super::*;
use nodeboot_chunks::{ChunkId, Params, Store};
use std::collections::HashMap;

pub(super) struct UpdateOpts {
    pub(super) package: String,
    pub(super) level: u32,
    pub(super) chunk_sizes: Vec<Params>,
    pub(super) fragment_groups: Vec<u32>,
    pub(super) nodeimg: Option<PathBuf>,
    pub(super) json: bool,
}

/// A scratch directory on disk (the roots are too big for a tmpfs beside
/// the images), removed on drop.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The newest cached e2e node root.
fn cached_root() -> Result<PathBuf> {
    let cache = crate::e2e::cache_dir();
    let mut roots: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&cache)
        .with_context(|| format!("reading {}", cache.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("rootfs-") && !n.ends_with(".tmp") && e.path().join("usr").is_dir()
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    roots.sort();
    roots.pop().map(|(_, p)| p).with_context(|| {
        format!(
            "no node root under {}: `cargo xtask e2e boot` (or nodeimg rootfs debian) makes one",
            cache.display()
        )
    })
}

/// What removing `package` from `root` took out.
#[derive(Default)]
struct Removed {
    files: u64,
    bytes: u64,
}

/// Uninstall `package` from the root copy `root` the way dpkg would leave
/// it had it never been installed; `orig` is the untouched root, whose
/// directory mtimes are put back.
fn remove_package(root: &Path, orig: &Path, package: &str) -> Result<Removed> {
    let info = root.join("var/lib/dpkg/info");
    let list = [format!("{package}.list"), format!("{package}:amd64.list")]
        .into_iter()
        .map(|n| info.join(n))
        .find(|p| p.exists())
        .with_context(|| format!("{package} is not installed in {}", orig.display()))?;
    let mut r = Removed::default();
    let mut dirs = HashSet::new();
    for line in std::fs::read_to_string(&list)?.lines() {
        let rel = line.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let p = root.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            continue;
        }
        r.files += 1;
        r.bytes += m.len();
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        if let Some(d) = Path::new(rel).parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for e in std::fs::read_dir(&info)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("{package}.")) || n.starts_with(&format!("{package}:")) {
            std::fs::remove_file(e.path())?;
        }
    }
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status)?;
    let kept: Vec<&str> = text
        .split("\n\n")
        .filter(|st| !st.lines().any(|l| l == format!("Package: {package}")))
        .collect();
    std::fs::write(&status, kept.join("\n\n"))?;
    dirs.insert(PathBuf::from("var/lib/dpkg"));
    dirs.insert(PathBuf::from("var/lib/dpkg/info"));
    for d in dirs {
        let m = std::fs::metadata(orig.join(&d))?.modified()?;
        std::fs::File::open(root.join(&d))
            .and_then(|f| f.set_modified(m))
            .with_context(|| format!("setting the mtime of {}", root.join(&d).display()))?;
    }
    Ok(r)
}

/// Chunk `img` into `store`: the index's distinct ids with their stored sizes.
fn chunk(img: &Path, store: &Path, p: Params) -> Result<(HashMap<ChunkId, u64>, usize)> {
    let s = Store::new(store);
    let (ix, _, _) = s.add_file(img, p)?;
    let mut ids = HashMap::new();
    for c in &ix.chunks {
        if let std::collections::hash_map::Entry::Vacant(e) = ids.entry(c.id) {
            e.insert(s.stored_size(&c.id)?);
        }
    }
    Ok((ids, ix.to_bytes().len()))
}

/// One builder's v1 → v2 at one chunk-size set.
fn measure(v1: &Path, v2: &Path, store: &Path, p: Params) -> Result<serde_json::Value> {
    let (a, _) = chunk(v1, store, p)?;
    let (b, index_bytes) = chunk(v2, store, p)?;
    let full: u64 = b.values().sum();
    let (mut n, mut fetched) = (0u64, 0u64);
    for (id, z) in &b {
        if !a.contains_key(id) {
            n += 1;
            fetched += z;
        }
    }
    let image = std::fs::metadata(v2)?.len();
    Ok(serde_json::json!({
        "chunk_size_kib": [p.min >> 10, p.avg >> 10, p.max >> 10],
        "image_bytes": image,
        "chunks": b.len(),
        "index_bytes": index_bytes,
        "stored_bytes": full,
        "new_chunks": n,
        "fetched_bytes": fetched,
        "fetched_share": fetched as f64 / image as f64,
    }))
}

pub(super) fn update(o: &UpdateOpts) -> Result<()> {
    which("mksquashfs", "bench update", "squashfs-tools")?;
    let nodeimg = match &o.nodeimg {
        Some(p) => std::fs::canonicalize(p).with_context(|| format!("nodeimg {}", p.display()))?,
        None => crate::build::nodeimg()?,
    };
    let orig = cached_root()?;
    let load_start = loadavg();
    let tmp =
        Dir(std::env::temp_dir().join(format!("nodeboot-bench-update-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let (r1, r2, out) = (tmp.0.join("v1"), tmp.0.join("v2"), tmp.0.join("out"));
    std::fs::create_dir_all(&out)?;
    let t = Instant::now();
    for (from, to) in [(&orig, &r2), (&r2, &r1)] {
        crate::build::run(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(from)
                .arg(to),
        )?;
    }
    let removed = remove_package(&r1, &orig, &o.package)?;
    eprintln!(
        "xtask: bench update: roots copied from {} in {:.0}s; v2 = v1 + {} ({} files, {} bytes)",
        orig.display(),
        t.elapsed().as_secs_f64(),
        o.package,
        removed.files,
        removed.bytes
    );

    let level = o.level.to_string();
    let mut builds = Vec::new();
    for &g in &o.fragment_groups {
        let name = format!("nodeimg-fragment-group-{g}");
        let mut times = Vec::new();
        for v in ["v1", "v2"] {
            let mut c = Command::new(&nodeimg);
            c.arg("build")
                .arg(tmp.0.join(v))
                .arg("-o")
                .arg(out.join(format!("{name}-{v}.squashfs")))
                .args(["--level", &level, "--no-chunks"])
                .args(["--fragment-group", &g.to_string()])
                .env("NODEIMG_LOG", "warn")
                .stdout(Stdio::null());
            for e in crate::e2e::LIVE_EXCLUDES {
                c.args(["--exclude", e]);
            }
            let t = Instant::now();
            crate::build::run(&mut c)?;
            times.push(t.elapsed().as_secs_f64());
        }
        builds.push((name, times));
    }
    let mut times = Vec::new();
    for v in ["v1", "v2"] {
        let mut c = Command::new("mksquashfs");
        c.arg(tmp.0.join(v))
            .arg(out.join(format!("mksquashfs-{v}.squashfs")))
            .args(["-comp", "zstd", "-Xcompression-level", &level])
            .args(["-noappend", "-no-progress", "-quiet", "-wildcards"]);
        for e in crate::e2e::LIVE_EXCLUDES {
            c.args(["-e", e]);
        }
        let t = Instant::now();
        crate::build::run(c.stdout(Stdio::null()))?;
        times.push(t.elapsed().as_secs_f64());
    }
    builds.push(("mksquashfs".to_string(), times));
    std::fs::remove_dir_all(&r1)?;
    std::fs::remove_dir_all(&r2)?;

    let mut rows = Vec::new();
    for (name, times) in &builds {
        for (k, &p) in o.chunk_sizes.iter().enumerate() {
            let store = out.join(format!("store-{name}-{k}"));
            let v1 = out.join(format!("{name}-v1.squashfs"));
            let v2 = out.join(format!("{name}-v2.squashfs"));
            let mut row = measure(&v1, &v2, &store, p)?;
            row["builder"] = serde_json::json!(name);
            row["build_seconds"] = serde_json::json!(times);
            std::fs::remove_dir_all(&store)?;
            rows.push(row);
        }
    }
    let report = serde_json::json!({
        "root": orig,
        "package": o.package,
        "package_files": removed.files,
        "package_bytes": removed.bytes,
        "level": o.level,
        "excludes": crate::e2e::LIVE_EXCLUDES,
        "goal_share": 0.10,
        "runs": rows,
        "machine": {
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    });
    let json = crate::build::root().join("target/bench-update.json");
    std::fs::create_dir_all(json.parent().expect("target/"))?;
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    if o.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "bench update: v1 → v2 = v1 + {} ({} files, {:.1} MB unpacked), level {}",
        o.package,
        removed.files,
        removed.bytes as f64 / 1e6,
        o.level
    );
    println!(
        "  {:<28} {:>12} {:>12} {:>9} {:>11} {:>12} {:>8}",
        "builder", "chunks KiB", "image MB", "chunks", "index KB", "fetched MB", "share"
    );
    for r in &rows {
        let k = &r["chunk_size_kib"];
        println!(
            "  {:<28} {:>12} {:>12.1} {:>9} {:>11.1} {:>12.2} {:>7.1}%",
            r["builder"].as_str().unwrap_or(""),
            format!("{}/{}/{}", k[0], k[1], k[2]),
            r["image_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            r["chunks"],
            r["index_bytes"].as_f64().unwrap_or(0.0) / 1e3,
            r["fetched_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            r["fetched_share"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    println!(
        "  machine: load average {} before, {} after",
        load_start,
        loadavg()
    );
    println!("  (written to {})", json.display());
    Ok(())
}
