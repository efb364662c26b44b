//! QEMU scenario `cache`: the node's live image cache (issue 16, item 1).
//!
//! A data disk is prepared on the host with `nodectl format-disk
//! --cache-partition` on a loop device, then the node boots three times
//! with it, each boot against a fresh bootd with its own log:
//! 1. cache miss: the image is fetched (bootd serves its bytes) and stored;
//! 2. same disk: a cache hit, bootd serves no image byte (the sidecar only);
//! 3. a byte of the cached image flipped on the host (the disk image
//!    mounted through a loop device): the console names the corrupt file,
//!    the image is fetched again (bytes served), and the node boots.
//!
//! Every boot must reach multi-user as cn1. The report has the bytes bootd
//! served per boot and the fetch time against the cache-hit time.
use crate::build;
use crate::e2e::{self, Bootd};
use crate::scenarios::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const UUID: &str = "3b8e2f51-7c4d-4a9e-b1f0-6d2c9e8a4b17";
/// The cache partition: twice the ~200 MB image.
const CACHE_SIZE: &str = "512M";
const DISK_BYTES: u64 = 640 << 20;
/// The console line of a corrupt cached image (agent/src/initrd.rs).
const CORRUPT: &str = "CACHE CORRUPT: the cached image /run/nodeboot/cache/images/";

/// The image bytes bootd's log says it served: the `bytes=` of every
/// `GET /live.squashfs` (not the `.sha256` sidecar), and how many such
/// requests.
pub fn image_bytes_served(log: &str) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for l in log.lines() {
        let Some(i) = l.find("GET /live.squashfs") else {
            continue;
        };
        let rest = &l[i + "GET /live.squashfs".len()..];
        if !(rest.is_empty() || rest.starts_with([' ', '?'])) {
            continue;
        }
        n += 1;
        if let Some(j) = l.find(" bytes=") {
            let digits: String = l[j + 7..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            total += digits.parse::<u64>().unwrap_or(0);
        }
    }
    (total, n)
}

/// A loop device on `img` (with its partitions, or on a byte range of it
/// with `range`), detached on drop.
struct Loop(String);

impl Loop {
    fn new(img: &Path, range: Option<(u64, u64)>) -> Result<Loop> {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show"]);
        match range {
            Some((offset, size)) => cmd.args([
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
            ]),
            None => cmd.arg("--partscan"),
        };
        let o = cmd.arg(img).output().context("running losetup")?;
        if !o.status.success() {
            bail!(
                "losetup {}: {}",
                img.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(Loop(String::from_utf8(o.stdout)?.trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Byte offset and size of the partition named `name` in the disk image
/// `img`, from its GPT as libfdisk reads it (`sfdisk --json`): the host
/// kernel need not parse GPTs (this machine's does not).
fn partition_range(img: &Path, name: &str) -> Result<(u64, u64)> {
    let o = Command::new("sfdisk").arg("--json").arg(img).output()?;
    if !o.status.success() {
        bail!(
            "sfdisk --json {}: {}",
            img.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let t: Value = serde_json::from_slice(&o.stdout)?;
    let t = &t["partitiontable"];
    let ss = t["sectorsize"].as_u64().unwrap_or(512);
    let p = t["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .with_context(|| format!("{} has no partition named {name}", img.display()))?;
    match (p["start"].as_u64(), p["size"].as_u64()) {
        (Some(start), Some(size)) => Ok((start * ss, size * ss)),
        _ => bail!(
            "{}: partition {name} without start or size: {p}",
            img.display()
        ),
    }
}

/// The disk: a GPT with the cache partition (1, ext4 nodeboot-cache) and
/// an ext4 data partition (2), made by the nodectl under test.
fn make_disk(disk: &Path) -> Result<()> {
    let _ = std::fs::remove_file(disk);
    std::fs::File::create(disk)?.set_len(DISK_BYTES)?;
    let l = Loop::new(disk, None)?;
    build::run(
        Command::new(build::nodectl_static()?)
            .args(["format-disk", &l.0, "--fs", "ext4", "--uuid", UUID])
            .args(["--cache-partition", CACHE_SIZE]),
    )
}

/// Flip one byte in the middle of the cached image inside `disk`; returns
/// (the file as the node names it, the offset flipped).
fn flip_cached_byte(disk: &Path, digest: &str, mnt: &Path) -> Result<(String, u64)> {
    let l = Loop::new(disk, Some(partition_range(disk, "nodeboot-cache")?))?;
    let part = l.0.clone();
    std::fs::create_dir_all(mnt)?;
    build::run(Command::new("mount").args(["-t", "ext4", &part]).arg(mnt))?;
    let flip = || -> Result<(String, u64)> {
        let rel = format!("images/{digest}.squashfs");
        let f = mnt.join(&rel);
        let len = std::fs::metadata(&f)
            .with_context(|| format!("the cache on the disk has no {rel}"))?
            .len();
        let off = len / 2;
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&f)?;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, off)?;
        b[0] ^= 0x5a;
        file.write_all_at(&b, off)?;
        file.sync_all()?;
        Ok((format!("/run/nodeboot/cache/{rel}"), off))
    };
    let r = flip();
    let um = build::run(Command::new("umount").arg(mnt));
    let r = r?;
    um?;
    Ok(r)
}

struct Boot {
    status: Value,
    milestones: Value,
    seconds: f64,
    served: u64,
    requests: usize,
    corrupt_line: Option<String>,
}

/// One boot with the disk, against a fresh bootd logging to `dir/bootd.log`.
fn boot(ctx: &Ctx, dir: &Path, disk: &Path) -> Result<Boot> {
    std::fs::create_dir_all(dir)?;
    let log = dir.join("bootd.log");
    let _ = std::fs::remove_file(&log);
    let srv = Bootd::start(&ctx.bootd, &ctx.art.www, 0, None, &log)?;
    let cmdline = e2e::cmdline(srv.port, "");
    let mut corrupt_line = None;
    let mut judge = |s: &Value, line: &str| {
        if line.contains(CORRUPT) {
            corrupt_line = Some(line.to_string());
        }
        e2e::judge_ready(s, line)
    };
    let r = ctx.boot_full(
        &cmdline,
        dir,
        &mut judge,
        420,
        &[disk.to_path_buf()],
        &[],
        None,
    )?;
    drop(srv);
    let (served, requests) = image_bytes_served(&std::fs::read_to_string(&log)?);
    Ok(Boot {
        status: r.status.unwrap_or_default(),
        milestones: Value::Object(r.milestones),
        seconds: r.seconds,
        served,
        requests,
        corrupt_line,
    })
}

fn figures(b: &Boot) -> Value {
    let st = &b.status;
    json!({
        "image_bytes_served": b.served,
        "image_requests": b.requests,
        "cache": st["cache"],
        "fetch_seconds": st["fetch"]["seconds"],
        "fetch_bytes": st["fetch"]["bytes"],
        "initrd_seconds": st["initrd_seconds"],
        "boot_seconds": b.seconds,
        "milestones": b.milestones,
    })
}

/// Checks shared by the three boots: cn1 in multi-user (the judge), the
/// image the node reports is the one served, the cache's outcome.
fn check(ctx: &Ctx, n: u32, b: &Boot, outcome: &str) -> Result<()> {
    let st = &b.status;
    if st["fetch"]["sha256"] != ctx.art.sha256.as_str() {
        bail!(
            "boot {n}: the node reports image sha256 {} but the image is {}",
            st["fetch"]["sha256"],
            ctx.art.sha256
        );
    }
    if st["cache"]["outcome"] != outcome {
        bail!(
            "boot {n}: the cache's outcome is {} (message {}), expected {outcome}",
            st["cache"]["outcome"],
            st["cache"]["message"]
        );
    }
    Ok(())
}

pub fn run(ctx: &Ctx, dir: &Path) -> Result<Value> {
    let size = std::fs::metadata(ctx.art.www.join("live.squashfs"))?.len();
    let disk: PathBuf = dir.join("cache.raw");
    make_disk(&disk)?;

    // 1: empty cache: fetched whole, stored, booted from the copy in /run.
    let b1 = boot(ctx, &dir.join("boot1"), &disk)?;
    check(ctx, 1, &b1, "miss")?;
    if b1.status["cache"]["stored"] != true {
        bail!("boot 1: the image was not stored: {}", b1.status["cache"]);
    }
    if b1.served != size {
        bail!(
            "boot 1: bootd served {} image bytes, the image has {size}",
            b1.served
        );
    }

    // 2: same disk: a hit, no image byte served, booted from the cache file.
    let b2 = boot(ctx, &dir.join("boot2"), &disk)?;
    check(ctx, 2, &b2, "hit")?;
    if b2.served != 0 || b2.requests != 0 {
        bail!(
            "boot 2: bootd served {} image bytes in {} requests with the image in the cache",
            b2.served,
            b2.requests
        );
    }
    let cached = format!("/run/nodeboot/cache/images/{}.squashfs", ctx.art.sha256);
    if b2.status["cache"]["booted_from"] != cached.as_str() {
        bail!(
            "boot 2: booted from {}, not the cache file {cached}",
            b2.status["cache"]["booted_from"]
        );
    }
    if b2.status["fetch"]["bytes"] != 0 {
        bail!(
            "boot 2: the node says it fetched {} bytes",
            b2.status["fetch"]["bytes"]
        );
    }

    // 3: a flipped byte in the cached image: caught, named, refetched.
    let (file, offset) = flip_cached_byte(&disk, &ctx.art.sha256, &dir.join("mnt"))?;
    let b3 = boot(ctx, &dir.join("boot3"), &disk)?;
    check(ctx, 3, &b3, "corrupt")?;
    let Some(line) = b3.corrupt_line.clone() else {
        bail!("boot 3: no \"{CORRUPT}…\" line on the console");
    };
    if !line.contains(&file) {
        bail!("boot 3: the corrupt-cache message does not name {file}: {line}");
    }
    if b3.served != size {
        bail!(
            "boot 3: bootd served {} image bytes after the corrupt cache, the image has {size}",
            b3.served
        );
    }
    if b3.status["cache"]["stored"] != true {
        bail!(
            "boot 3: the refetched image was not stored again: {}",
            b3.status["cache"]
        );
    }
    let _ = std::fs::remove_file(&disk);
    let report = json!({
        "accel": ctx.accel,
        "image_bytes": size,
        "image_sha256": ctx.art.sha256,
        "load": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "flipped": { "file": file, "offset": offset, "message": line },
        "boots": [figures(&b1), figures(&b2), figures(&b3)],
        "miss_fetch_seconds": b1.status["fetch"]["seconds"],
        "hit_seconds": b2.status["fetch"]["seconds"],
        "hit_verify_seconds": b2.status["cache"]["verify_seconds"],
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_image_bytes_not_the_sidecar() {
        let log = " INFO GET /live.squashfs.sha256 status=200 bytes=90 ms=1\n\
                   INFO GET /live.squashfs status=200 bytes=1000 ms=5\n\
                   INFO GET /live.squashfs status=206 bytes=24 ms=5 range=bytes=1000-\n\
                   INFO GET /vmlinuz status=200 bytes=7\n";
        assert_eq!(image_bytes_served(log), (1024, 2));
        assert_eq!(
            image_bytes_served("INFO GET /live.squashfs.sha256 status=200 bytes=90\n"),
            (0, 0)
        );
    }
}
