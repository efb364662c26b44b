//! `bench fetch`: nodectl fetch against curl, one file from nginx into a tmpfs.
use super::*;

/// The tools compared, as shown in the table.
pub(super) const TOOLS: [&str; 3] = ["curl -o", "curl | sha256sum", "nodectl fetch"];

pub(super) fn fetch(
    size_mib: u64,
    rounds: u32,
    min_ratio: Option<f64>,
    settle: Duration,
) -> Result<()> {
    for tool in ["curl", "sha256sum", "bash", NGINX] {
        which(tool, "bench fetch", "nginx-light, curl, coreutils")?;
    }
    let nodectl = crate::build::nodectl_static()?;
    let size = size_mib << 20;
    let dir = Scratch::new(2 * size + (64 << 20))?;
    let www = dir.path.join("www");
    std::fs::create_dir_all(&www)?;
    let file = www.join("live.squashfs");
    eprintln!(
        "xtask: bench fetch: writing {size_mib} MiB of random data to {}",
        file.display()
    );
    let digest = write_random(&file, size)?;
    let nginx = Nginx::start(&dir.path, &www)?;
    let url = format!("http://127.0.0.1:{}/live.squashfs", nginx.port);
    let out = dir.path.join("out");

    // One untimed round of every tool: server, binaries and memory warm
    // (the first runs after writing the 1 GiB file were erratic here).
    eprintln!("xtask: bench fetch: warm-up round (not timed)");
    for t in 0..TOOLS.len() {
        time_tool(t, &url, &out, &nodectl, &digest, size)?;
    }
    let mut secs: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        for k in 0..TOOLS.len() {
            // Rotate the order each round, and reverse it every other round,
            // so that no tool always runs right after the same other one.
            let k = if r % 2 == 1 { TOOLS.len() - 1 - k } else { k };
            let t = (k + r as usize) % TOOLS.len();
            std::thread::sleep(settle);
            let s = time_tool(t, &url, &out, &nodectl, &digest, size)?;
            eprintln!(
                "xtask: bench fetch: round {}/{rounds}: {:<17} {:>7.0} MB/s ({s:.2}s)",
                r + 1,
                TOOLS[t],
                size as f64 / 1e6 / s
            );
            secs[t].push(s);
        }
    }
    drop(nginx);

    let mbps: Vec<f64> = secs.iter().map(|v| size as f64 / 1e6 / median(v)).collect();
    println!(
        "\nbench fetch: {size_mib} MiB over http://127.0.0.1 (nginx sendfile, tmpfs), \
         {rounds} rounds, {}s pause before each run, median",
        settle.as_secs()
    );
    for (t, name) in TOOLS.iter().enumerate() {
        let best = secs[t].iter().cloned().fold(f64::INFINITY, f64::min);
        let worst = secs[t].iter().cloned().fold(0.0, f64::max);
        println!(
            "  {name:<17} {:>7.0} MB/s   (range {:.0}-{:.0})",
            mbps[t],
            size as f64 / 1e6 / worst,
            size as f64 / 1e6 / best
        );
    }
    let vs_curl = mbps[2] / mbps[0];
    let vs_pipe = mbps[2] / mbps[1];
    println!("  nodectl / curl -o          {vs_curl:.2}");
    println!("  nodectl / curl | sha256sum {vs_pipe:.2}");
    let report = serde_json::json!({
        "size_mib": size_mib,
        "rounds": rounds,
        "settle_secs": settle.as_secs(),
        "mbps": {
            "curl": mbps[0],
            "curl_sha256sum": mbps[1],
            "nodectl": mbps[2],
        },
        "seconds": {
            "curl": secs[0],
            "curl_sha256sum": secs[1],
            "nodectl": secs[2],
        },
        "ratio_nodectl_curl": vs_curl,
        "ratio_nodectl_curl_sha256sum": vs_pipe,
    });
    let json = crate::build::root().join("target/bench-fetch.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("  (written to {})", json.display());
    if let Some(min) = min_ratio {
        if vs_curl < min {
            bail!("nodectl fetch is at {vs_curl:.2}× curl -o, below the required {min}×");
        }
    }
    Ok(())
}

/// Run tool `t` once, check its result, delete its output; seconds taken.
pub(super) fn time_tool(
    t: usize,
    url: &str,
    out: &Path,
    nodectl: &Path,
    digest: &str,
    size: u64,
) -> Result<f64> {
    let _ = std::fs::remove_file(out);
    let mut cmd = match t {
        0 => {
            let mut c = Command::new("curl");
            c.args(["-s", "-f", "-o"]).arg(out).arg(url);
            c
        }
        // The pipeline as an operator types it; the URL is $0, not spliced in.
        1 => {
            let mut c = Command::new("bash");
            c.args([
                "-o",
                "pipefail",
                "-c",
                r#"curl -s -f "$0" | sha256sum"#,
                url,
            ]);
            c
        }
        _ => {
            let mut c = Command::new(nodectl);
            c.args(["fetch", url, "-o"])
                .arg(out)
                .args(["--sha256", digest])
                .env("NODECTL_LOG", "warn");
            c
        }
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
    let start = Instant::now();
    let o = cmd
        .output()
        .with_context(|| format!("running {}", TOOLS[t]))?;
    let secs = start.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!("{} failed: {}", TOOLS[t], o.status);
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    match t {
        1 if !stdout.starts_with(digest) => {
            bail!("curl | sha256sum printed {stdout:?}, expected {digest}")
        }
        0 | 2 => {
            let got = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            if got != size {
                bail!("{} wrote {got} bytes, expected {size}", TOOLS[t]);
            }
        }
        _ => {}
    }
    let _ = std::fs::remove_file(out);
    Ok(secs)
}
