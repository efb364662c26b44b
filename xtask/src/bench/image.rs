//! `bench image`: nodeimg build against mksquashfs on the generated tree.
use super::tree::{bench_tree, Tree};
use super::*;

// ---------------------------------------------------------------------------
// bench image

pub(super) struct ImageOpts {
    pub(super) size_mib: u64,
    pub(super) rounds: u32,
    pub(super) level: u32,
    pub(super) only: Option<ImageTool>,
    pub(super) nodeimg: Option<PathBuf>,
    pub(super) settle: Duration,
}

/// The builders, as shown in the table and keyed in the JSON.
pub(super) const IMAGE_TOOLS: [&str; 2] = ["nodeimg", "mksquashfs"];

/// One timed build.
pub(super) struct ImageRun {
    round: u32,
    /// 0: ran first in its round.
    position: usize,
    seconds: f64,
    /// user + system CPU of the builder (all its threads).
    cpu_seconds: f64,
    /// CPU the rest of the machine used meanwhile (busy time of /proc/stat
    /// minus the builder's), and the time the hypervisor stole.
    others_cpu_seconds: f64,
    steal_seconds: f64,
    bytes: u64,
    entries: usize,
}

impl ImageRun {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "round": self.round,
            "position": self.position,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "others_cpu_seconds": self.others_cpu_seconds,
            "steal_seconds": self.steal_seconds,
            "bytes": self.bytes,
            "entries": self.entries,
        })
    }
}

pub(super) fn image(o: &ImageOpts) -> Result<()> {
    for tool in ["mksquashfs", "unsquashfs"] {
        which(tool, "bench image", "squashfs-tools")?;
    }
    let tools: Vec<usize> = match o.only {
        None => vec![0, 1],
        Some(ImageTool::Nodeimg) => vec![0],
        Some(ImageTool::Mksquashfs) => vec![1],
    };
    let nodeimg = match (&o.nodeimg, tools.contains(&0)) {
        (_, false) => None,
        (Some(p), true) => Some(
            std::fs::canonicalize(p).with_context(|| format!("nodeimg binary {}", p.display()))?,
        ),
        (None, true) => Some(nodeimg_release()?),
    };
    let tree = bench_tree(o.size_mib)?;
    let scratch = Scratch::new(tree.bytes + (256 << 20))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = loadavg();

    // Untimed: every file of the tree into the page cache.
    let t = Instant::now();
    let (nfiles, nbytes) = read_tree(&tree.root)?;
    eprintln!(
        "xtask: bench image: warm-up read of {nfiles} files, {:.0} MB in {:.1}s",
        nbytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let mut runs: [Vec<ImageRun>; 2] = Default::default();
    let mut listing_diffs: Vec<serde_json::Value> = Vec::new();
    for r in 0..o.rounds {
        let mut listings: [Option<Vec<String>>; 2] = Default::default();
        for k in 0..tools.len() {
            // Alternate which builder goes first.
            let t = tools[(k + r as usize) % tools.len()];
            std::thread::sleep(o.settle);
            let (mut run, listing) = build_image(t, o, nodeimg.as_deref(), &tree, &scratch.path)?;
            run.round = r + 1;
            run.position = k;
            eprintln!(
                "xtask: bench image: round {}/{}: {:<10} {:>7.2}s  cpu {:>6.1}s  others {:>5.1}s  {:>11} bytes  {} entries",
                r + 1,
                o.rounds,
                IMAGE_TOOLS[t],
                run.seconds,
                run.cpu_seconds,
                run.others_cpu_seconds,
                run.bytes,
                run.entries
            );
            runs[t].push(run);
            listings[t] = Some(listing);
        }
        if let [Some(a), Some(b)] = &listings {
            let (only_a, only_b) = listing_diff(a, b);
            if !only_a.is_empty() || !only_b.is_empty() {
                eprintln!(
                    "xtask: bench image: WARNING round {}: the listings differ ({} entries only in nodeimg's image, {} only in mksquashfs's), e.g.:",
                    r + 1,
                    only_a.len(),
                    only_b.len()
                );
                for l in only_a.iter().take(5) {
                    eprintln!("  nodeimg:    {l}");
                }
                for l in only_b.iter().take(5) {
                    eprintln!("  mksquashfs: {l}");
                }
            }
            listing_diffs.push(serde_json::json!({
                "round": r + 1,
                "only_nodeimg": only_a.len(),
                "only_mksquashfs": only_b.len(),
                "examples_nodeimg": only_a.iter().take(20).collect::<Vec<_>>(),
                "examples_mksquashfs": only_b.iter().take(20).collect::<Vec<_>>(),
            }));
        }
    }
    let load_end = loadavg();
    drop(scratch);

    let med = |t: usize, f: &dyn Fn(&ImageRun) -> f64| -> f64 {
        median(&runs[t].iter().map(f).collect::<Vec<_>>())
    };
    println!(
        "\nbench image: {} MiB generated tree ({} entries, {:.0} MB, {}), zstd level {}, \
         128 KiB blocks, {} round(s), {cores} cores, images in a tmpfs, median",
        o.size_mib,
        tree.entries,
        tree.bytes as f64 / 1e6,
        tree.root.display(),
        o.level,
        o.rounds
    );
    println!(
        "  {:<11} {:>8} {:>8} {:>14} {:>9}",
        "", "seconds", "cpu-s", "image bytes", "image MB"
    );
    let mut tools_json = serde_json::Map::new();
    for &t in &tools {
        let secs = med(t, &|r| r.seconds);
        let cpu = med(t, &|r| r.cpu_seconds);
        let bytes = med(t, &|r| r.bytes as f64);
        println!(
            "  {:<11} {secs:>8.2} {cpu:>8.1} {bytes:>14.0} {:>9.2}",
            IMAGE_TOOLS[t],
            bytes / 1e6
        );
        tools_json.insert(
            IMAGE_TOOLS[t].to_string(),
            serde_json::json!({
                "median_seconds": secs,
                "median_cpu_seconds": cpu,
                "median_bytes": bytes,
                "runs": runs[t].iter().map(ImageRun::json).collect::<Vec<_>>(),
            }),
        );
    }
    let ratios = (tools.len() == 2).then(|| {
        (
            med(0, &|r| r.seconds) / med(1, &|r| r.seconds),
            med(0, &|r| r.bytes as f64) / med(1, &|r| r.bytes as f64),
        )
    });
    if let Some((rt, rs)) = ratios {
        let met = if rt <= 1.0 && rs <= 1.0 {
            "met"
        } else {
            "NOT met"
        };
        println!("  nodeimg / mksquashfs: time {rt:.3}, size {rs:.4}   (goal: both <= 1.0: {met})");
    }
    println!("  per round:");
    for r in 1..=o.rounds {
        for &t in &tools {
            for run in runs[t].iter().filter(|x| x.round == r) {
                println!(
                    "    {r}.{} {:<11} {:>7.2}s  cpu {:>6.1}s  {:>11} bytes   others {:>5.1} cpu-s{}",
                    run.position + 1,
                    IMAGE_TOOLS[t],
                    run.seconds,
                    run.cpu_seconds,
                    run.bytes,
                    run.others_cpu_seconds,
                    if run.steal_seconds > 0.05 {
                        format!(", steal {:.1}s", run.steal_seconds)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    let all: Vec<&ImageRun> = runs.iter().flatten().collect();
    let wall: f64 = all.iter().map(|r| r.seconds).sum();
    let others: f64 = all.iter().map(|r| r.others_cpu_seconds).sum();
    let others_share = others / (wall * cores as f64).max(1e-9);
    println!(
        "  machine: load average {} before, {} after; other processes used {:.0}% of the {cores} cores during the timed runs",
        load_start.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_end.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        others_share * 100.0
    );
    if listing_diffs
        .iter()
        .any(|d| d["only_nodeimg"] != 0 || d["only_mksquashfs"] != 0)
    {
        println!(
            "  WARNING: nodeimg's listing (unsquashfs -lln) differs from mksquashfs's, see above"
        );
    }

    let report = serde_json::json!({
        "tree": {
            "path": tree.root,
            "size_mib": o.size_mib,
            "entries": tree.entries,
            "bytes": tree.bytes,
            "generator": tree.stats,
        },
        "level": o.level,
        "block_size": 131072,
        "rounds": o.rounds,
        "settle_secs": o.settle.as_secs(),
        "cores": cores,
        "nodeimg": nodeimg,
        "commands": {
            "nodeimg": "nodeimg build SRC -o OUT.squashfs --level L --no-chunks",
            "mksquashfs": "mksquashfs SRC OUT -comp zstd -Xcompression-level L -noappend -no-progress -quiet",
        },
        "tools": tools_json,
        "ratio_time": ratios.map(|r| r.0),
        "ratio_size": ratios.map(|r| r.1),
        "goal_met": ratios.map(|(t, s)| t <= 1.0 && s <= 1.0),
        "listing_differences": listing_diffs,
        "machine": {
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "others_cpu_share": others_share,
        },
    });
    let json = crate::build::root().join("target/bench-image.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    Ok(())
}

/// `target/release/nodeimg`, built.
pub(super) fn nodeimg_release() -> Result<PathBuf> {
    let root = crate::build::root();
    crate::build::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "nodeboot-image-builder",
    ]))?;
    Ok(root.join("target/release/nodeimg"))
}

/// Build the tree's image with tool `t` into `scratch/out-<tool>/`, time it,
/// check the image with unsquashfs, delete it. Returns the run and the
/// normalised listing.
pub(super) fn build_image(
    t: usize,
    o: &ImageOpts,
    nodeimg: Option<&Path>,
    tree: &Tree,
    scratch: &Path,
) -> Result<(ImageRun, Vec<String>)> {
    let out = scratch.join(format!("out-{}", IMAGE_TOOLS[t]));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let img = out.join("live.squashfs");
    let level = o.level.to_string();
    let mut cmd = match (t, nodeimg) {
        (0, Some(bin)) => {
            let mut c = Command::new(bin);
            c.arg("build")
                .arg(&tree.root)
                .arg("-o")
                .arg(&img)
                .args(["--level", &level])
                // The squashfs alone, as mksquashfs writes it (chunking
                // is bench update's).
                .arg("--no-chunks")
                .env("NODEIMG_LOG", "warn");
            c
        }
        (0, None) => bail!("no nodeimg binary"),
        _ => {
            let mut c = Command::new("mksquashfs");
            c.arg(&tree.root)
                .arg(&img)
                .args(["-comp", "zstd", "-Xcompression-level", &level])
                .args(["-noappend", "-no-progress", "-quiet"]);
            c
        }
    };
    cmd.stdin(Stdio::null());
    let shown = format!("{cmd:?}");
    let cpu0 = children_cpu();
    let (busy0, steal0) = machine_cpu()?;
    let start = Instant::now();
    let res = cmd.output().with_context(|| format!("running {shown}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let (busy1, steal1) = machine_cpu()?;
    let cpu_seconds = children_cpu() - cpu0;
    if !res.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            res.status,
            tail(&res.stderr, 2000)
        );
    }
    if !res.stderr.is_empty() {
        eprintln!(
            "xtask: bench image: {} said: {}",
            IMAGE_TOOLS[t],
            tail(&res.stderr, 2000)
        );
    }
    let bytes = std::fs::metadata(&img)
        .with_context(|| format!("{} wrote no {}", IMAGE_TOOLS[t], img.display()))?
        .len();

    // The image is a valid zstd squashfs with every entry of the tree.
    let sb = unsquashfs(&["-s"], &img)?;
    if !sb.contains("Compression zstd") {
        bail!(
            "{} (by {}) is not zstd-compressed: unsquashfs -s says {sb}",
            img.display(),
            IMAGE_TOOLS[t]
        );
    }
    let listing = parse_listing(&unsquashfs(&["-lln"], &img)?);
    if listing.len() != tree.entries {
        bail!(
            "{} (by {}) lists {} entries (unsquashfs -lln), the tree at {} has {}",
            img.display(),
            IMAGE_TOOLS[t],
            listing.len(),
            tree.root.display(),
            tree.entries
        );
    }
    std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    let run = ImageRun {
        round: 0,
        position: 0,
        seconds,
        cpu_seconds,
        others_cpu_seconds: (busy1 - busy0 - cpu_seconds).max(0.0),
        steal_seconds: steal1 - steal0,
        bytes,
        entries: listing.len(),
    };
    Ok((run, listing))
}

/// stdout of `unsquashfs ARGS IMG`; an error unless it exits 0.
pub(super) fn unsquashfs(args: &[&str], img: &Path) -> Result<String> {
    let o = Command::new("unsquashfs")
        .args(args)
        .arg(img)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running unsquashfs {}", args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "unsquashfs {} {} failed ({}): {}",
            args.join(" "),
            img.display(),
            o.status,
            tail(&o.stderr, 2000)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The entries of `unsquashfs -lln`, one normalised line each (directory
/// sizes dropped: they are the writer's own directory-table sizes), sorted.
pub(super) fn parse_listing(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let i = l.find(" squashfs-root")?;
            let mut f: Vec<&str> = l[..i].split_whitespace().collect();
            if f.first()?.starts_with('d') && f.len() >= 3 {
                f[2] = "-";
            }
            Some(format!("{} {}", f.join(" "), &l[i + 1..]))
        })
        .collect();
    v.sort();
    v
}

/// Lines only in `a`, lines only in `b` (both sorted).
pub(super) fn listing_diff<'a>(a: &'a [String], b: &'a [String]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.as_str());
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y.as_str());
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x.as_str());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.as_str());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
}
