//! `bench boot`: nodectl's initramfs against stock dracut `dmsquash-live` +
//! `livenet` (Debian's `dracut-network` / `dracut-live`), the way the
//! seeds' sites boot today.
//!
//! Both boot the same kernel and the same live image (nodeimg's squashfs,
//! the one `cargo xtask e2e boot` boots), served by the same bootd on
//! 127.0.0.1, under the same QEMU flags and with the same kernel command
//! line (the seed's, plus `ip=dhcp`); only the initramfs differs. The
//! livenet initramfs is made by this machine's dracut from the kernel
//! modules of the cached base tree the image was built from (its kernel is
//! checked to be the image's), cached as `CACHE/livenet-<key>` (the key
//! hashes dracut's arguments, the versions of the packages it copies from,
//! the kernel and the base tree).
//!
//! One change makes livenet boot at all on Debian 12: `-a network-legacy`.
//! Without it dracut 059 picks `systemd-networkd` as the network handler
//! (systemd-networkd exists on every Debian 12), which never runs dracut's
//! `online` initqueue hook that livenet's fetch hangs off: the boot waits
//! forever after `network.target`. A second dracut 059 bug costs nothing:
//! `sysroot.mount` (from dmsquash-live's generator) fails once because
//! nothing created `/run/overlayfs` yet, and dracut's mount hook then
//! mounts the same overlay itself.
//!
//! Milestones come from the serial console (each line timed by the
//! harness as it arrives, seconds since QEMU started), see [`milestones`].
use super::*;
use crate::e2e::{self, Artifacts, Bootd};
use serde_json::{json, Map, Value};

/// Bump when the way the livenet initramfs is made changes in a way its key
/// does not show.
const LIVENET_FORMAT: &str = "nodeboot bench livenet initramfs v1";

/// dracut's arguments for the livenet initramfs, after `--kver` and
/// `--kmoddir`: stock modules plus the live/network ones; zstd as ours.
pub const LIVENET_DRACUT_ARGS: &[&str] = &[
    "--no-hostonly",
    "--force",
    "-a",
    "network-legacy dmsquash-live livenet",
    "--compress",
    "zstd",
];

/// Debian packages whose files the livenet initramfs is made of (their
/// versions are part of its cache key).
const LIVENET_PACKAGES: &[&str] = &[
    "dracut-core",
    "dracut-network",
    "dracut-live",
    "systemd",
    "udev",
    "curl",
    "isc-dhcp-client",
];

/// The two initramfs compared, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Livenet,
    Nodectl,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Livenet => "livenet",
            Side::Nodectl => "nodectl",
        }
    }
}

/// The milestones, in boot order (the table's rows).
pub const MILESTONES: &[&str] = &[
    "kernel_start",
    "network_up",
    "fetched",
    "switch_root",
    "multi_user",
];

/// The milestone `line` (one console line, ANSI escapes removed) marks on
/// `side`, if any:
/// - `kernel_start`: the kernel's `Linux version` banner;
/// - `network_up`: nodectl's `network up` line; livenet prints nothing when
///   its lease is bound, but its fetch starts right then (the `online`
///   hook): curl's progress-meter header;
/// - `fetched`: nodectl's `fetched` line; livenet: curl's meter itself,
///   which reaches the console as one line when curl exits (its updates
///   are separated by `\r`);
/// - `switch_root`: systemd reaching `initrd-switch-root.target`;
/// - `multi_user`: systemd reaching `multi-user.target` in the booted
///   image; on nodectl's side also the `nodeboot-status` line that runs
///   after it (whichever comes first), in case systemd's status line is
///   held back while a unit owns the console.
pub fn milestone(side: Side, line: &str) -> Option<&'static str> {
    if line.contains("] Linux version ") || line.starts_with("Linux version ") {
        return Some("kernel_start");
    }
    if line.contains("Reached target initrd-switch-root.target") {
        return Some("switch_root");
    }
    if line.contains("Reached target multi-user.target") {
        return Some("multi_user");
    }
    match side {
        Side::Nodectl => {
            if line.contains("nodectl initrd: network up") {
                Some("network_up")
            } else if line.contains("nodectl initrd: fetched") {
                Some("fetched")
            } else if line.contains(e2e::STATUS_PREFIX)
                && line.contains("\"multi_user\":\"active\"")
            {
                Some("multi_user")
            } else {
                None
            }
        }
        Side::Livenet => {
            if !line.contains("dracut-initqueue[") {
                None
            } else if line.contains("% Total") && line.contains("% Received") {
                Some("network_up")
            } else if line.contains("--:--:--") && !line.contains("Dload") {
                Some("fetched")
            } else {
                None
            }
        }
    }
}

/// The milestones of a console log as the harness writes it (`SECONDS |
/// line` per line, `#` comments): the first time each one shows.
pub fn milestones(side: Side, console: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for l in console.lines() {
        let Some((t, line)) = l.split_once(" | ") else {
            continue;
        };
        let Ok(t) = t.trim().parse::<f64>() else {
            continue;
        };
        if let Some(name) = milestone(side, line) {
            m.entry(name).or_insert_with(|| json!(t));
        }
    }
    m
}

pub struct Opts {
    pub rounds: u32,
    pub json: bool,
    /// Echo the consoles.
    pub echo: bool,
}

pub fn run(o: &Opts) -> Result<()> {
    which(
        "dracut",
        "bench boot",
        "dracut-core, dracut-network, dracut-live",
    )?;
    which("qemu-system-x86_64", "bench boot", "qemu-system-x86")?;
    let bootd_bin = crate::build::bootd()?;
    let art = e2e::artifacts()?;
    let livenet = livenet_initrd(&art)?;
    let accel = e2e::accel(&art.vmlinuz);
    let dir = e2e::e2e_dir().join("bench-boot");
    std::fs::create_dir_all(&dir)?;
    let srv = Bootd::start(&bootd_bin, &art.www, 0, None, &dir.join("bootd.log"))?;
    let cmdline = e2e::cmdline(srv.port, "ip=dhcp");
    let sizes = [
        std::fs::metadata(&livenet)?.len(),
        std::fs::metadata(&art.initrd)?.len(),
    ];
    let image_bytes = std::fs::metadata(art.www.join("live.squashfs"))?.len();
    eprintln!(
        "xtask: bench boot: accel {accel}, {} rounds; initramfs livenet {} bytes ({}), nodectl {} bytes ({}); image {image_bytes} bytes",
        o.rounds,
        sizes[0],
        livenet.display(),
        sizes[1],
        art.initrd.display()
    );
    let sides = [Side::Livenet, Side::Nodectl];
    let mut runs: [Vec<Map<String, Value>>; 2] = Default::default();
    let mut loads = Vec::new();
    for r in 0..o.rounds {
        // a b, b a, a b, …: neither side always boots first.
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = sides[i];
            let initrd = if side == Side::Livenet {
                livenet.clone()
            } else {
                art.initrd.clone()
            };
            let a = Artifacts {
                initrd,
                ..art.clone()
            };
            let load = loadavg();
            let rdir = dir.join(format!("{}-{}", side.name(), r + 1));
            let m = boot_once(&a, &accel, &cmdline, &rdir, o.echo, side)?;
            eprintln!(
                "xtask: bench boot: round {}/{}: {:<8} multi-user at {:.1}s (load {load})",
                r + 1,
                o.rounds,
                side.name(),
                m["multi_user"].as_f64().unwrap_or(f64::NAN)
            );
            loads.push(load);
            runs[i].push(m);
        }
    }
    drop(srv);

    let summary = |i: usize| -> Value {
        let mut s = Map::new();
        for name in MILESTONES {
            let v: Vec<f64> = runs[i].iter().filter_map(|m| m[*name].as_f64()).collect();
            if v.is_empty() {
                continue;
            }
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = v.iter().cloned().fold(0.0, f64::max);
            s.insert(format!("{name}_s"), json!(round3(median(&v))));
            s.insert(format!("{name}_min_s"), json!(round3(min)));
            s.insert(format!("{name}_max_s"), json!(round3(max)));
        }
        s.insert("initramfs_bytes".into(), json!(sizes[i]));
        s.insert("runs".into(), json!(runs[i]));
        Value::Object(s)
    };
    let (lv, nd) = (summary(0), summary(1));
    let ratio = nd["multi_user_s"].as_f64().unwrap_or(f64::NAN)
        / lv["multi_user_s"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "rounds": o.rounds,
        "accel": accel,
        "machine": machine(),
        "load": loads,
        "image_bytes": image_bytes,
        "cmdline": cmdline,
        "livenet_dracut_args": LIVENET_DRACUT_ARGS,
        "livenet": lv,
        "nodectl": nd,
        "ratio_multi_user": round3(ratio),
    });
    let out = crate::build::root().join("target/bench-boot.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    if o.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "\nbench boot: {} rounds (interleaved), accel {accel}, {}; seconds since QEMU start, median [min-max]",
        o.rounds,
        machine()
    );
    println!("  {:<14} {:>24} {:>24}", "milestone", "livenet", "nodectl");
    for name in MILESTONES {
        let cell = |v: &Value| match (
            v[format!("{name}_s")].as_f64(),
            v[format!("{name}_min_s")].as_f64(),
            v[format!("{name}_max_s")].as_f64(),
        ) {
            (Some(m), Some(a), Some(b)) => format!("{m:.1} [{a:.1}-{b:.1}]"),
            _ => "-".to_string(),
        };
        println!("  {name:<14} {:>24} {:>24}", cell(&lv), cell(&nd));
    }
    println!(
        "  {:<14} {:>24} {:>24}",
        "initramfs MB",
        format!("{:.1}", sizes[0] as f64 / 1e6),
        format!("{:.1}", sizes[1] as f64 / 1e6)
    );
    println!("  nodectl / livenet to multi-user: {ratio:.2} (goal <= 0.70)");
    println!("  load averages during the boots: {}", loads.join("; "));
    println!("  (written to {})", out.display());
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU model and count, for the table's caption.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{n} x {cpu}")
}

/// One boot to multi-user; its milestones.
fn boot_once(
    a: &Artifacts,
    accel: &str,
    cmdline: &str,
    dir: &Path,
    echo: bool,
    side: Side,
) -> Result<Map<String, Value>> {
    let mut judge = |_: &Value, line: &str| -> Option<Result<()>> {
        if milestone(side, line) == Some("multi_user") {
            Some(Ok(()))
        } else if line.contains("LIVE BOOT FAILED")
            || line.contains("Entering emergency mode")
            || line.contains("dracut Warning: Could not boot")
        {
            Some(Err(anyhow::anyhow!("the node failed: {line}")))
        } else {
            None
        }
    };
    let watch = e2e::Watch {
        judge: &mut judge,
        timeout: Duration::from_secs(if accel == "kvm" { 240 } else { 600 }),
        disks: &[],
        hostfwd: &[],
        tpm: None,
    };
    let r = e2e::boot(a, accel, cmdline, dir, echo, watch)
        .with_context(|| format!("{} boot", side.name()))?;
    let console = std::fs::read_to_string(&r.console)
        .with_context(|| format!("reading {}", r.console.display()))?;
    let m = milestones(side, &console);
    for name in MILESTONES {
        if !m.contains_key(*name) {
            bail!(
                "{} boot: milestone {name} not on the console ({})",
                side.name(),
                r.console.display()
            );
        }
    }
    Ok(m)
}

/// Build (or reuse) the livenet initramfs: this machine's dracut with
/// [`LIVENET_DRACUT_ARGS`], the kernel modules of the cached base tree the
/// image was made from.
pub fn livenet_initrd(art: &Artifacts) -> Result<PathBuf> {
    let nodeimg = crate::build::nodeimg()?;
    let out = Command::new(&nodeimg)
        .args(["rootfs", "debian", "--print-key", "--extra-packages"])
        .arg(e2e::EXTRA_PACKAGES.join(","))
        .output()
        .with_context(|| format!("running {} rootfs debian --print-key", nodeimg.display()))?;
    if !out.status.success() {
        bail!("nodeimg rootfs debian --print-key failed ({})", out.status);
    }
    let rootfs_key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cache = e2e::cache_dir();
    let base = cache.join(format!("rootfs-{rootfs_key}"));
    let kver = e2e::newest_kernel(&base)?;
    let kernel = base.join(format!("boot/vmlinuz-{kver}"));
    let digest = |p: &Path| -> Result<String> {
        let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(hex::encode(Sha256::digest(&b)))
    };
    let kernel_sha = digest(&kernel)?;
    if kernel_sha != digest(&art.vmlinuz)? {
        bail!(
            "{} is not the image's kernel {}: the base tree changed since the image was built; \
             run `cargo xtask e2e boot` to rebuild the image first",
            kernel.display(),
            art.vmlinuz.display()
        );
    }
    let dracut = Command::new("dracut")
        .arg("--version")
        .output()
        .context("running dracut --version")?;
    let versions = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Version}\n"])
        .args(LIVENET_PACKAGES)
        .output()
        .context("running dpkg-query")?;
    let mut h = Sha256::new();
    h.update(format!(
        "{LIVENET_FORMAT}\nrootfs {rootfs_key}\nkver {kver}\nkernel {kernel_sha}\nargs {}\n",
        LIVENET_DRACUT_ARGS.join(" ")
    ));
    h.update(&dracut.stdout);
    h.update(&versions.stdout);
    let key = hex::encode(h.finalize())[..16].to_string();
    let dir = cache.join(format!("livenet-{key}"));
    let img = dir.join("initrd.img");
    let _lock = e2e::lock(&cache.join("livenet.lock"))?;
    if img.is_file() {
        eprintln!("xtask: livenet initramfs up to date ({})", img.display());
        return Ok(img);
    }
    let tmp = cache.join(format!("livenet-{key}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("making {}", tmp.display()))?;
    let t = Instant::now();
    let log = std::fs::File::create(tmp.join("dracut.log"))?;
    let st = Command::new("dracut")
        .args(["--kver", &kver, "--kmoddir"])
        .arg(base.join("lib/modules").join(&kver))
        .args(LIVENET_DRACUT_ARGS)
        .arg(tmp.join("initrd.img"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting dracut")?;
    if !st.success() {
        bail!(
            "dracut failed ({st}); see {}",
            tmp.join("dracut.log").display()
        );
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    eprintln!(
        "xtask: livenet initramfs {} made in {:.0}s",
        img.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of real consoles (`cargo xtask bench boot`, TCG), as the
    /// harness writes them.
    const LIVENET: &str = include_str!("../../tests/fixtures/bench-boot-livenet.log");
    const NODECTL: &str = include_str!("../../tests/fixtures/bench-boot-nodectl.log");

    /// Every milestone's time from `console`, in [`MILESTONES`] order.
    fn ordered(side: Side, console: &str) -> Vec<f64> {
        let m = milestones(side, console);
        MILESTONES
            .iter()
            .map(|n| {
                m.get(*n)
                    .and_then(Value::as_f64)
                    .unwrap_or_else(|| panic!("{n} missing: {m:?}"))
            })
            .collect()
    }

    #[test]
    fn livenet_console_gives_every_milestone_in_order() {
        let t = ordered(Side::Livenet, LIVENET);
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
        // The fetch is curl's, between its header and its meter line.
        assert!(t[2] > t[1], "{t:?}");
    }

    #[test]
    fn nodectl_console_gives_every_milestone_in_order() {
        let t = ordered(Side::Nodectl, NODECTL);
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    }

    #[test]
    fn one_side_does_not_read_the_others_lines() {
        // nodectl's lines mean nothing on livenet's side and back.
        assert_eq!(
            milestone(
                Side::Livenet,
                "[   12.1] nodectl-live[301]: nodectl initrd: network up on ens3"
            ),
            None
        );
        assert_eq!(
            milestone(
                Side::Nodectl,
                "[   39.117739] dracut-initqueue[649]:   % Total    % Received % Xferd  Average Speed"
            ),
            None
        );
        // The initramfs's own welcome and the first status line are not milestones.
        assert_eq!(
            milestone(
                Side::Livenet,
                "Welcome to Debian GNU/Linux 12 (bookworm) dracut-059-4 (Initramfs)!"
            ),
            None
        );
        assert_eq!(
            milestone(
                Side::Livenet,
                "[  OK  ] Stopped target initrd-switch-root.target - Switch Root."
            ),
            None
        );
    }
}
