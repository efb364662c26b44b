//! `nodectl initrd`: the initramfs step, from the kernel command line to a
//! mounted /sysroot, and the record of it (`/run/nodeboot/boot.json`) that the
//! booted system reads.
use crate::cmdline::BootParams;
use crate::{fetch, live, net};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where things are; all parameters so the step runs in a tempdir in tests.
#[derive(Debug, Clone)]
pub struct Paths {
    pub cmdline: PathBuf,
    pub run: PathBuf,
    pub sysroot: PathBuf,
    pub etc: PathBuf,
    pub uptime: PathBuf,
    /// sysfs: the firmware's facts (`firmware/efi`).
    pub sys: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            cmdline: "/proc/cmdline".into(),
            run: "/run".into(),
            sysroot: "/sysroot".into(),
            etc: "/etc".into(),
            uptime: "/proc/uptime".into(),
            sys: "/sys".into(),
        }
    }
}

/// Seconds each step took, and the kernel uptime when nodectl started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub uptime_at_start: Option<f64>,
    pub net: f64,
    pub fetch: f64,
    pub mount: f64,
    pub total: f64,
}

/// `/run/nodeboot/boot.json`: what the initramfs did, for the booted phase.
#[derive(Debug, Clone, Serialize)]
pub struct BootRecord {
    pub nodectl_version: &'static str,
    pub params: BootParams,
    pub net: Option<net::NetReport>,
    pub fetch: Option<fetch::FetchReport>,
    /// The chunked fetch (`nodeboot.index=`), when it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunked: Option<fetch::chunked::ChunkedReport>,
    /// Why the chunked fetch failed, when the plain one took over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunked_error: Option<String>,
    pub live: Option<live::LiveReport>,
    pub timings: Timings,
    /// BIOS or UEFI, and Secure Boot.
    pub firmware: crate::firmware::FirmwareReport,
    /// The failure, as the operator saw it on the console; `None` on success.
    pub error: Option<String>,
}

/// The live image's place inside the run directory.
pub fn image_path(run: &Path) -> PathBuf {
    run.join("nodeboot/live.squashfs")
}

pub fn record_path(run: &Path) -> PathBuf {
    run.join("nodeboot/boot.json")
}

fn uptime(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn write_record(run: &Path, rec: &BootRecord) -> Result<()> {
    let path = record_path(run);
    std::fs::create_dir_all(path.parent().unwrap())
        .with_context(|| format!("creating {}", path.parent().unwrap().display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Run the initramfs step. `Ok(None)`: not a live boot, nothing done.
pub fn run(paths: &Paths) -> Result<Option<BootRecord>> {
    let t0 = Instant::now();
    let params =
        BootParams::from_path(&paths.cmdline).context("reading the kernel command line")?;
    let Some(url) = params.live_url.clone() else {
        tracing::info!("nodectl initrd: no root=live: on the kernel command line, nothing to do");
        return Ok(None);
    };
    tracing::info!(
        "nodectl initrd: starting live boot of {url} (nodectl {})",
        env!("CARGO_PKG_VERSION")
    );
    let mut rec = BootRecord {
        nodectl_version: env!("CARGO_PKG_VERSION"),
        params: params.clone(),
        net: None,
        fetch: None,
        chunked: None,
        chunked_error: None,
        live: None,
        firmware: {
            crate::firmware::mount_efivars(&paths.sys);
            crate::firmware::read(&paths.sys)
        },
        timings: Timings {
            uptime_at_start: uptime(&paths.uptime),
            ..Default::default()
        },
        error: None,
    };
    tracing::info!("nodectl initrd: firmware {}", rec.firmware.summary());
    // Reports are signed by the node's key when its key partition holds
    // one (a TPM-sealed key is unsealed with the tpm2-tools the dracut
    // module puts in the initramfs when the image has them; without, the
    // reports go unsigned, and bootd refuses them for a host with a key).
    let reporter = crate::report::Reporter::new(&params, "")
        .with_token_from(&paths.cmdline)
        .with_key_from(crate::identity::Place::from_cmdline(&paths.cmdline));
    let result = steps(paths, &params, &url, &mut rec, t0, &reporter);
    rec.timings.total = t0.elapsed().as_secs_f64();
    match &result {
        Err(e) => {
            rec.error = Some(format!("{e:#}"));
            reporter.phase("failed", rec.error.as_deref());
        }
        Ok(()) => {
            let msg = format!(
                "live root mounted, switching root ({})",
                rec.firmware.summary()
            );
            reporter.phase("booted", Some(&msg));
        }
    }
    // The record is written on failure too: the emergency shell and a later
    // status report read it. A failure to write it must not hide the real error.
    if let Err(we) = write_record(&paths.run, &rec) {
        tracing::warn!("could not write the boot record: {we:#}");
    }
    result?;
    tracing::info!(
        "nodectl initrd: live root ready at {} in {:.1}s (net {:.1}s, fetch {:.1}s, mount {:.1}s)",
        paths.sysroot.display(),
        rec.timings.total,
        rec.timings.net,
        rec.timings.fetch,
        rec.timings.mount
    );
    Ok(Some(rec))
}

fn steps(
    paths: &Paths,
    p: &BootParams,
    url: &str,
    rec: &mut BootRecord,
    t0: Instant,
    reporter: &crate::report::Reporter,
) -> Result<()> {
    // A bad name must stop the boot before minutes of download, naming the key.
    if let Some(h) = &p.hostname {
        live::check_hostname(h).context("grendel.hostname on the kernel command line")?;
    }
    let t = Instant::now();
    let n = net::bring_up(
        &net::NetConfig {
            bootif: p.bootif,
            ip: p.ip.clone(),
            timeout: p.net_timeout,
        },
        &paths.etc,
    )
    .context("bringing up the boot network")?;
    rec.timings.net = t.elapsed().as_secs_f64();
    tracing::info!(
        "nodectl initrd: network up: {} {} {}/{} via {}",
        n.iface,
        n.mac,
        n.address,
        n.prefix,
        n.gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "-".into())
    );
    rec.net = Some(n);
    reporter.phase("fetching", None);

    let t = Instant::now();
    let image = image_path(&paths.run);
    std::fs::create_dir_all(image.parent().unwrap())
        .with_context(|| format!("creating {}", image.parent().unwrap().display()))?;
    let opts = fetch::FetchOptions {
        expected_sha256: p.sha256.clone(),
        sidecar: true,
        ca_file: p.ca_file.clone(),
        deadline: p.fetch_timeout,
        ..Default::default()
    };
    let chunked = match (&p.index_url, &p.index_sha256, &p.sha256) {
        (Some(index_url), Some(index_sha256), Some(image_sha256)) => {
            let o = fetch::chunked::ChunkedOptions {
                index_url: index_url.clone(),
                index_sha256: index_sha256.clone(),
                image_sha256: image_sha256.clone(),
                stores: p.stores.clone(),
                seeds: Vec::new(),
                parallel: 4,
                http: opts.clone(),
                peers: None,
            };
            match fetch::chunked::fetch_chunked(&image, &o) {
                Ok(c) => Some(c),
                Err(e) => {
                    // The plain path is verified by the same pinned digest:
                    // falling back costs time, never trust.
                    tracing::warn!(
                        "nodectl initrd: chunked fetch failed: {e:#}; fetching {url} whole instead"
                    );
                    rec.chunked_error = Some(format!("{e:#}"));
                    None
                }
            }
        }
        _ => None,
    };
    let f = match chunked {
        Some(c) => {
            let f = fetch::FetchReport {
                url: c.index_url.clone(),
                bytes: c.assembly.image_bytes,
                seconds: c.seconds,
                sha256: p.sha256.clone().unwrap_or_default(),
                verified_by: "cmdline".into(),
                attempts: 0,
                resumes: 0,
                restarts: 0,
            };
            rec.chunked = Some(c);
            f
        }
        None => fetch::fetch(url, &image, &opts)
            .with_context(|| format!("fetching the live image {url}"))?,
    };
    rec.timings.fetch = t.elapsed().as_secs_f64();
    tracing::info!(
        "nodectl initrd: fetched {} bytes in {:.1}s, sha256 {} ({}), at {:.1}s",
        f.bytes,
        f.seconds,
        f.sha256,
        f.verified_by,
        t0.elapsed().as_secs_f64()
    );
    rec.fetch = Some(f);

    let t = Instant::now();
    let l = live::mount_live(&live::LiveOptions {
        image: image.clone(),
        run_dir: paths.run.clone(),
        sysroot: paths.sysroot.clone(),
        overlay_size_mib: p.overlay_size_mib,
        hostname: p.hostname.clone(),
    })
    .with_context(|| {
        format!(
            "mounting the live root {} at {}",
            image.display(),
            paths.sysroot.display()
        )
    })?;
    rec.timings.mount = t.elapsed().as_secs_f64();
    rec.live = Some(l);
    Ok(())
}

/// The console banner of a failed live boot: names the step and the cause.
pub fn failure_banner(err: &anyhow::Error) -> String {
    format!(
        "nodeboot: LIVE BOOT FAILED: {err:#}\n\
         nodeboot: dropping to the emergency shell; details: journalctl -u nodectl-live, /run/nodeboot/boot.json"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path, cmdline: &str) -> Paths {
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        Paths {
            cmdline: dir.join("cmdline"),
            run: dir.join("run"),
            sysroot: dir.join("sysroot"),
            etc: dir.join("etc"),
            uptime: dir.join("uptime"),
            sys: dir.join("sys"),
        }
    }

    #[test]
    fn not_a_live_boot_does_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path(), "root=UUID=abcd ro quiet");
        assert!(run(&p).unwrap().is_none());
        assert!(
            !record_path(&p.run).exists(),
            "nothing written for a normal boot"
        );
    }

    #[test]
    fn bad_cmdline_names_the_parameter() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(
            d.path(),
            "root=live:http://10.0.2.2/x.squashfs BOOTIF=garbage",
        );
        let e = format!("{:#}", run(&p).unwrap_err());
        assert!(e.contains("reading the kernel command line"), "{e}");
        assert!(e.contains("BOOTIF=garbage"), "{e}");
    }

    #[test]
    fn bad_hostname_fails_first_naming_the_key() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(
            d.path(),
            "root=live:http://127.0.0.1:9/x.squashfs grendel.hostname=cn_1",
        );
        let e = format!("{:#}", run(&p).unwrap_err());
        assert!(
            e.starts_with("grendel.hostname on the kernel command line: "),
            "{e}"
        );
        assert!(e.contains("cn_1"), "{e}");
    }

    #[test]
    fn failure_is_recorded_in_boot_json() {
        let d = tempfile::tempdir().unwrap();
        // A MAC no link has: the network step fails fast and names it.
        let p = paths(
            d.path(),
            "root=live:http://127.0.0.1:9/x.squashfs BOOTIF=01-02-00-00-00-00-01 nodeboot.net.timeout=1",
        );
        let err = run(&p).unwrap_err();
        let banner = failure_banner(&err);
        assert!(
            banner.starts_with("nodeboot: LIVE BOOT FAILED: bringing up the boot network"),
            "{banner}"
        );
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record_path(&p.run)).unwrap()).unwrap();
        assert_eq!(rec["params"]["live_url"], "http://127.0.0.1:9/x.squashfs");
        assert!(rec["error"]
            .as_str()
            .unwrap()
            .contains("bringing up the boot network"));
    }
}
