//! The QEMU boots: the walking skeleton and its negative boots.
use crate::build;
use crate::e2e::{self, Artifacts, Bootd};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const NAMES: &[&str] = &[
    "boot",
    "chunked",
    "bad-digest",
    "unreachable",
    "resume",
    "postscript",
    "postscript-fails",
    "disk",
    "cache",
    "peers",
    "slurm-user",
    "slurm-wrong-hostkey",
    "slurm-tpm",
    "slurm-nfs-missing",
    "slurm-nfs-down",
    "slurm-grendel",
    "pxe",
    "pxe-uefi",
    "httpboot",
    "secureboot",
    "secureboot-unsigned",
    "hostile",
];

pub struct Ctx {
    pub art: Artifacts,
    pub accel: String,
    pub bootd: PathBuf,
    pub echo: bool,
}

impl Ctx {
    pub fn new(echo: bool) -> Result<Ctx> {
        let bootd = build::bootd()?;
        let art = e2e::artifacts()?;
        let accel = e2e::accel(&art.vmlinuz);
        eprintln!("xtask: QEMU accelerator: {accel}");
        Ok(Ctx {
            art,
            accel,
            bootd,
            echo,
        })
    }

    pub fn timeout(&self, tcg_secs: u64) -> Duration {
        Duration::from_secs(if self.accel == "kvm" {
            tcg_secs / 2
        } else {
            tcg_secs
        })
    }

    /// Boot the node with `cmdline`, judged by `judge`, bounded by `tcg_secs` under TCG.
    fn boot(
        &self,
        cmdline: &str,
        dir: &std::path::Path,
        judge: &mut dyn FnMut(&Value, &str) -> Option<Result<()>>,
        tcg_secs: u64,
    ) -> Result<e2e::BootResult> {
        self.boot_with_disks(cmdline, dir, judge, tcg_secs, &[])
    }

    /// [`Ctx::boot`] with raw disk images attached (see [`e2e::Watch::disks`]).
    fn boot_with_disks(
        &self,
        cmdline: &str,
        dir: &std::path::Path,
        judge: &mut dyn FnMut(&Value, &str) -> Option<Result<()>>,
        tcg_secs: u64,
        disks: &[PathBuf],
    ) -> Result<e2e::BootResult> {
        self.boot_full(cmdline, dir, judge, tcg_secs, disks, &[], None)
    }

    /// [`Ctx::boot_with_disks`] with QEMU port forwards (see
    /// [`e2e::Watch::hostfwd`]) and a TPM ([`e2e::Watch::tpm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn boot_full(
        &self,
        cmdline: &str,
        dir: &std::path::Path,
        judge: &mut dyn FnMut(&Value, &str) -> Option<Result<()>>,
        tcg_secs: u64,
        disks: &[PathBuf],
        hostfwd: &[String],
        tpm: Option<&std::path::Path>,
    ) -> Result<e2e::BootResult> {
        let watch = e2e::Watch {
            judge,
            timeout: self.timeout(tcg_secs),
            disks,
            hostfwd,
            tpm,
        };
        e2e::boot(&self.art, &self.accel, cmdline, dir, self.echo, watch)
    }
}

/// Run one scenario; Ok(value) goes into the report.
pub fn run(ctx: &Ctx, name: &str) -> Result<Value> {
    let dir = e2e::e2e_dir().join(name);
    std::fs::create_dir_all(&dir)?;
    // bootd appends to its log (a restarted bootd keeps one log per run);
    // a log left by an earlier run would count its requests in this one's.
    match std::fs::remove_file(dir.join("bootd.log")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context(format!("removing {}", dir.join("bootd.log").display()));
        }
        _ => {}
    }
    match name {
        "boot" => boot(ctx, &dir),
        "chunked" => chunked(ctx, &dir),
        "bad-digest" => bad_digest(ctx, &dir),
        "unreachable" => unreachable(ctx, &dir),
        "resume" => resume(ctx, &dir),
        "postscript" => postscript(ctx, &dir, true),
        "postscript-fails" => postscript(ctx, &dir, false),
        "disk" => disk(ctx, &dir),
        "cache" => crate::cacheboot::run(ctx, &dir),
        "peers" => crate::peersboot::run(ctx, &dir),
        "slurm-user" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::Good),
        "slurm-wrong-hostkey" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::WrongHostKey),
        "slurm-tpm" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::Tpm),
        "slurm-nfs-missing" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::NfsMissing),
        "slurm-nfs-down" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::NfsDown),
        "slurm-grendel" => crate::slurm::run(ctx, &dir, crate::slurm::Variant::Grendel),
        "pxe" => crate::pxe::run(ctx, &dir, crate::pxe::Kind::Bios),
        "pxe-uefi" => crate::pxe::run(ctx, &dir, crate::pxe::Kind::Uefi),
        "httpboot" => crate::pxe::run(ctx, &dir, crate::pxe::Kind::Http),
        "secureboot" => crate::pxe::run(ctx, &dir, crate::pxe::Kind::SecureBoot),
        "secureboot-unsigned" => crate::pxe::run(ctx, &dir, crate::pxe::Kind::SecureBootUnsigned),
        "hostile" => crate::hostile::run(ctx, &dir),
        other => bail!("unknown scenario {other}; known: {}", NAMES.join(", ")),
    }
}

/// Inside the initramfs (appended to it): the site CA nodectl trusts for
/// the live root over https.
const CA_IN_INITRD: &str = "/etc/nodeboot-site-ca.pem";

/// The walking skeleton: the node boots its live root to multi-user as
/// cn1, the live root over https from bootd (a certificate from a site CA
/// given by `nodeboot.ca=`), the rest over http.
fn boot(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    let tls = dir.join("tls");
    let _ = std::fs::remove_dir_all(&tls);
    std::fs::create_dir_all(&tls)?;
    let (ca_key, ca) = (tls.join("ca.key"), tls.join("ca.pem"));
    crate::site::make_ca(&ca_key, &ca, "/CN=nodeboot e2e site CA")?;
    crate::site::server_cert(&tls, &ca_key, &ca, "bootd", &["10.0.2.2", "127.0.0.1"])?;
    let tls_port_file = tls.join("https.port");
    let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let args = [
        "--tls-listen".to_string(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        s(tls.join("server.pem")),
        "--tls-key".into(),
        s(tls.join("server.key")),
        "--tls-port-file".into(),
        s(tls_port_file.clone()),
    ];
    let srv = Bootd::start_with_args(&ctx.bootd, &ctx.art.www, &args, &dir.join("bootd.log"))?;
    let tls_port: u16 = std::fs::read_to_string(&tls_port_file)?.trim().parse()?;
    let initrd = e2e::initrd_with(
        &ctx.art.initrd,
        &[(CA_IN_INITRD, &std::fs::read(&ca)?)],
        &dir.join("initrd-site-ca.img"),
    )?;
    let art = e2e::Artifacts {
        initrd,
        ..ctx.art.clone()
    };
    let live = format!("https://10.0.2.2:{tls_port}/live.squashfs");
    let cmdline = e2e::cmdline(srv.port, &format!("nodeboot.ca={CA_IN_INITRD}")).replace(
        &format!("root=live:http://10.0.2.2:{}/live.squashfs", srv.port),
        &format!("root=live:{live}"),
    );
    if !cmdline.contains(&live) {
        bail!("no https live root in {cmdline}");
    }
    let watch = e2e::Watch {
        judge: &mut e2e::judge_ready,
        timeout: ctx.timeout(420),
        disks: &[],
        hostfwd: &[],
        tpm: None,
    };
    let r = e2e::boot(&art, &ctx.accel, &cmdline, dir, ctx.echo, watch)?;
    let console = std::fs::read_to_string(&r.console).unwrap_or_default();
    if !console.contains(&live) {
        bail!(
            "the console does not show the fetch of {live} ({})",
            r.console.display()
        );
    }
    let log = std::fs::read_to_string(dir.join("bootd.log")).unwrap_or_default();
    if !log
        .lines()
        .any(|l| l.contains("tls=true") && l.contains("GET /live.squashfs"))
    {
        bail!("bootd's log shows no GET /live.squashfs over TLS");
    }
    let st = r.status.clone().unwrap_or_default();
    if st["fetch"]["sha256"] != ctx.art.sha256.as_str() {
        bail!(
            "the node reports image sha256 {} but the image is {}",
            st["fetch"]["sha256"],
            ctx.art.sha256
        );
    }
    for m in e2e::required_milestones() {
        if !r.milestones.contains_key(m) {
            bail!(
                "milestone {m} missing from the console ({})",
                r.console.display()
            );
        }
    }
    let node = reported_node(&srv, dir)?;
    let report = e2e::report(
        &r,
        &ctx.accel,
        &ctx.art,
        json!({ "cmdline": cmdline, "bootd_node": node }),
    );
    e2e::write_json(&e2e::e2e_dir().join("report.json"), &report)?;
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

/// The chunked path (issue 16): the node assembles its live root from the
/// chunks of `live.caibx` (its digest and the image's pinned on the command
/// line) that bootd serves from `www/store/`, boots it to multi-user, and
/// never asks for `live.squashfs` whole.
/// The node's status line after a chunked boot: it booted through the
/// chunked path (no `chunked_error`) and reports image `sha256`.
pub(crate) fn chunked_status(r: &e2e::BootResult, sha256: &str) -> Result<Value> {
    let st = r.status.clone().unwrap_or_default();
    if !st["chunked_error"].is_null() || st["chunked"].is_null() {
        bail!(
            "the node did not boot through the chunked path: {} ({})",
            st["chunked_error"],
            r.console.display()
        );
    }
    if st["fetch"]["sha256"] != sha256 {
        bail!("the node reports image sha256 {}", st["fetch"]["sha256"]);
    }
    Ok(st)
}

fn chunked(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(ctx.art.www.join("live.json"))?)?;
    let c = &manifest["chunked"];
    let (Some(index), Some(index_sha256)) = (c["index"].as_str(), c["index_sha256"].as_str())
    else {
        bail!("live.json has no chunk index: {manifest}");
    };
    let srv = Bootd::start(&ctx.bootd, &ctx.art.www, 0, None, &dir.join("bootd.log"))?;
    let cmdline = e2e::cmdline(
        srv.port,
        &format!(
            "nodeboot.sha256={} nodeboot.index=http://10.0.2.2:{}/{index} nodeboot.index.sha256={index_sha256}",
            ctx.art.sha256, srv.port
        ),
    );
    let r = ctx.boot(&cmdline, dir, &mut e2e::judge_ready, 420)?;
    let st = chunked_status(&r, &ctx.art.sha256)?;
    let ch = &st["chunked"];
    let log = std::fs::read_to_string(dir.join("bootd.log")).unwrap_or_default();
    let chunk_gets = log.lines().filter(|l| l.contains("GET /store/")).count();
    if log.lines().any(|l| l.contains("GET /live.squashfs ")) {
        bail!("bootd's log shows the whole image fetched");
    }
    if chunk_gets as u64 != ch["fetched_chunks"].as_u64().unwrap_or(0) || chunk_gets == 0 {
        bail!(
            "bootd served {chunk_gets} chunks, the node reports {}",
            ch["fetched_chunks"]
        );
    }
    // The plain fetch of the same image, from the last `boot` (https) if any.
    let plain: Value = std::fs::read(e2e::e2e_dir().join("boot/report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let report = json!({
        "seconds": r.seconds,
        "milestones": r.milestones,
        "image_bytes": manifest["size"],
        "chunks": ch["chunks"],
        "fetched_chunks": ch["fetched_chunks"],
        "fetched_bytes": ch["fetched_bytes"],
        "fetch_seconds": st["fetch"]["seconds"],
        "plain_fetch_seconds_last_boot": plain["fetch"]["seconds"],
        "cmdline": cmdline,
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

/// What bootd learnt from the node's phase reports (`GET /nodes`): cn1,
/// by its MAC, ready after fetching, booted and provisioning, with a boot
/// duration. With Chromium installed, bootd's page is kept as
/// `bootd-page.png` beside the console.
fn reported_node(srv: &Bootd, dir: &std::path::Path) -> Result<Value> {
    let port = srv.port;
    let doc: Value = serde_json::from_str(&srv.admin_get("/nodes")?)?;
    let nodes = doc["nodes"].as_array().cloned().unwrap_or_default();
    let Some(n) = nodes.iter().find(|n| n["hostname"] == e2e::HOSTNAME) else {
        bail!("bootd has no report from {}: {doc}", e2e::HOSTNAME);
    };
    let phases: Vec<&str> = n["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["phase"].as_str()).collect())
        .unwrap_or_default();
    if n["mac"] != e2e::MAC
        || n["phase"] != "ready"
        || phases != ["fetching", "booted", "provisioning", "ready"]
        || !n["boot_seconds"].is_number()
    {
        bail!("bootd's record of the node is not fetching → booted → provisioning → ready: {n}");
    }
    if std::path::Path::new(crate::docs::CHROMIUM).exists() {
        let png = dir.join("bootd-page.png");
        // The admin token as the URL's password (HTTP Basic).
        let url = format!("http://admin:{}@127.0.0.1:{port}/", srv.admin()?);
        let tmp = dir.join("chromium");
        match crate::docs::chromium_screenshot(&url, &png, (1000, 400), &tmp) {
            Ok(()) => {
                // Its profile is not worth keeping beside the boot's artifacts.
                let _ = std::fs::remove_dir_all(&tmp);
                eprintln!("xtask: bootd's page after the boot: {}", png.display())
            }
            Err(e) => eprintln!("xtask: no screenshot of bootd's page: {e:#}"),
        }
    }
    Ok(n.clone())
}

/// A wrong pinned digest stops the boot, naming both digests.
fn bad_digest(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    let srv = Bootd::start(&ctx.bootd, &ctx.art.www, 0, None, &dir.join("bootd.log"))?;
    let wrong = "0".repeat(64);
    let cmdline = e2e::cmdline(srv.port, &format!("nodeboot.sha256={wrong}"));
    let actual = ctx.art.sha256.clone();
    let mut seen = None;
    let mut judge = |_: &Value, line: &str| {
        if line.contains("LIVE BOOT FAILED") {
            seen = Some(line.to_string());
            return Some(
                if line.contains(&wrong) && line.contains(&actual) && line.contains("live.squashfs")
                {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "failure message lacks the URL or a digest: {line}"
                    ))
                },
            );
        }
        if line.contains(e2e::STATUS_PREFIX) {
            return Some(Err(anyhow::anyhow!("booted despite a wrong digest")));
        }
        None
    };
    let r = ctx.boot(&cmdline, dir, &mut judge, 300)?;
    Ok(json!({ "message": seen, "seconds": r.seconds }))
}

/// A server that is not there: the node gives up after its deadline, saying so.
fn unreachable(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let deadline = 20;
    let cmdline = e2e::cmdline(port, &format!("nodeboot.fetch.timeout={deadline}"));
    let mut seen = None;
    let mut started = None;
    let mut judge = |s: &Value, line: &str| {
        if started.is_none() {
            started = s["milestones"]["nodectl_start"].as_f64();
        }
        if line.contains("LIVE BOOT FAILED") {
            seen = Some(line.to_string());
            let ok = line.contains("gave up")
                && line.contains(&format!("10.0.2.2:{port}/live.squashfs"));
            return Some(if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("unclear failure message: {line}"))
            });
        }
        None
    };
    let r = ctx.boot(&cmdline, dir, &mut judge, 300)?;
    let failed_at = r.seconds;
    if let Some(s) = started {
        if failed_at - s < deadline as f64 - 1.0 {
            bail!(
                "the node gave up {:.1}s after nodectl started, before its {deadline}s deadline",
                failed_at - s
            );
        }
    }
    Ok(json!({ "message": seen, "deadline": deadline, "seconds": r.seconds }))
}

/// The server dies mid-download and comes back: the node resumes with Range and boots.
fn resume(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    let log = dir.join("bootd.log");
    let _ = std::fs::remove_file(&log);
    // Slow enough that the download is still running when the server is killed.
    let mut srv = Bootd::start(&ctx.bootd, &ctx.art.www, 0, Some(8 << 20), &log)?;
    let port = srv.port;
    let cmdline = e2e::cmdline(port, "");
    let bootd = ctx.bootd.clone();
    let www = ctx.art.www.clone();
    let log2 = log.clone();
    let _ = std::fs::remove_file(dir.join("console.log"));
    // Kill the server once the node reports download progress, restart it
    // 5 s later on the same port.
    let console = dir.join("console.log");
    let killer = std::thread::spawn(move || -> Result<Bootd> {
        let t = Instant::now();
        loop {
            let c = std::fs::read_to_string(&console).unwrap_or_default();
            if c.lines()
                .any(|l| l.contains("INFO fetch: ") && l.contains(" MB/s ETA"))
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("the node never reported download progress");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        srv.stop();
        std::thread::sleep(Duration::from_secs(5));
        Bootd::start(&bootd, &www, port, None, &log2)
    });
    let r = ctx.boot(&cmdline, dir, &mut e2e::judge_ready, 480);
    let srv2 = killer
        .join()
        .map_err(|_| anyhow::anyhow!("killer thread panicked"))?;
    let r = r?;
    drop(srv2);
    let st = r.status.clone().unwrap_or_default();
    let resumes = st["fetch"]["resumes"].as_u64().unwrap_or(0);
    if resumes < 1 {
        bail!("the node booted but reports {resumes} resumes: the kill came too late?");
    }
    let l = std::fs::read_to_string(&log)?;
    let ranged = l
        .lines()
        .filter(|x| x.contains("/live.squashfs") && x.to_ascii_lowercase().contains("range"))
        .count();
    if ranged == 0 {
        bail!("no Range request for the image in {}", log.display());
    }
    if st["fetch"]["sha256"] != ctx.art.sha256.as_str() {
        bail!(
            "digest after resume {} != {}",
            st["fetch"]["sha256"],
            ctx.art.sha256
        );
    }
    Ok(
        json!({ "resumes": resumes, "range_requests": ranged, "milestones": r.milestones, "seconds": r.seconds }),
    )
}

/// Grendel compatibility: with `nodeboot.postscript=1` the booted node
/// fetches `{grendel.address}/repo/postscript.sh` from bootd and runs it with
/// its hostname; a failing script fails provisioning, which the node's
/// status line reports with the URL and the exit status.
fn postscript(ctx: &Ctx, dir: &std::path::Path, succeed: bool) -> Result<Value> {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    let script = if succeed {
        "#!/bin/sh\nset -e\necho \"postscript: argument $1, hostname $(hostname)\"\n\
         test \"$1\" = \"$(hostname)\"\necho postscript: done\n"
    } else {
        "#!/bin/sh\necho postscript: failing on purpose\nexit 3\n"
    };
    std::fs::write(repo.join("postscript.sh"), script)?;
    let log = dir.join("bootd.log");
    let _ = std::fs::remove_file(&log);
    let srv = Bootd::start_with_repo(&ctx.bootd, &ctx.art.www, &repo, &log)?;
    let cmdline = e2e::cmdline(srv.port, "nodeboot.postscript=1");
    let url = format!("http://10.0.2.2:{}/repo/postscript.sh", srv.port);
    let mut said_done = false;
    let mut judge = |s: &Value, line: &str| {
        if line.contains("postscript: done") {
            said_done = true;
        }
        let ready = e2e::judge_ready(s, line)?;
        let p = &s["status"]["provision"];
        let ps = &p["postscript"];
        Some(ready.and_then(|()| {
            if ps["url"] != url.as_str() {
                bail!("provisioning ran {} instead of {url}: {p}", ps["url"]);
            }
            if succeed {
                if p["phase"] != "ready" || ps["exit_code"] != 0 {
                    bail!("provisioning did not succeed: {p}");
                }
                if !said_done {
                    bail!("the postscript's output is not on the console");
                }
            } else {
                let err = p["error"].as_str().unwrap_or_default();
                if p["phase"] != "failed"
                    || ps["exit_code"] != 3
                    || !err.contains("exited with exit status: 3")
                    || !err.contains(&url)
                {
                    bail!("the failure is not reported as expected: {p}");
                }
            }
            Ok(())
        }))
    };
    let r = ctx.boot(&cmdline, dir, &mut judge, 420)?;
    drop(srv);
    let served = std::fs::read_to_string(&log)?
        .lines()
        .filter(|l| l.contains("/repo/postscript.sh"))
        .count();
    if served == 0 {
        bail!("bootd never served /repo/postscript.sh ({})", log.display());
    }
    let st = r.status.clone().unwrap_or_default();
    Ok(json!({ "provision": st["provision"], "seconds": r.seconds }))
}

/// The node's local disk (issue 7), driven from the site's postscript as a
/// Grendel site would: `nodectl format-disk` on a blank virtio disk, named
/// by its stable /dev/disk/by-id path (run
/// twice: the second says "already formatted"), then `nodectl apply` of a
/// node.toml from bootd's /repo/ mounts it by UUID at /mnt/disk and makes
/// the seed's storage layout links, which must resolve to it.
fn disk(ctx: &Ctx, dir: &std::path::Path) -> Result<Value> {
    const UUID: &str = "6f1c9d3e-1b7a-4c55-9d2e-2f0c8a1b7e31";
    let disk = dir.join("disk.raw");
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    std::fs::write(
        repo.join("node.toml"),
        format!(
            "[[mount]]\nwhat = \"UUID={UUID}\"\nwhere = \"/mnt/disk\"\ntype = \"xfs\"\nwait = 30\n\n\
             [[link]]\npath = \"/opt/cache/disk/tmp\"\ntarget = \"/mnt/disk/tmp\"\ntarget_mode = \"1777\"\n\n\
             [[link]]\npath = \"/opt/cache/disk/world-tmp\"\ntarget = \"/mnt/disk/world-tmp\"\ntarget_mode = \"1777\"\n\n\
             [[link]]\npath = \"/mnt/scratch\"\ntarget = \"/mnt/disk/scratch\"\ntarget_mode = \"0755\"\n"
        ),
    )?;
    let format = format!(
        "nodectl format-disk /dev/disk/by-id/virtio-nodeboot-disk --fs xfs --uuid {UUID} --label scratch --key-partition 64M"
    );
    std::fs::write(
        repo.join("postscript.sh"),
        format!(
            "#!/bin/sh\nset -e\n\
             addr=$(sed -n 's/.*grendel.address=\\([^ ]*\\).*/\\1/p' /proc/cmdline)\n\
             {format}\n{format}\n\
             nodectl fetch \"$addr/repo/node.toml\" -o /run/nodeboot/node.toml --no-sidecar >/dev/null\n\
             nodectl apply /run/nodeboot/node.toml\n\
             echo \"disk-check: mount $(findmnt -n -r -o SOURCE,FSTYPE,UUID /mnt/disk)\"\n\
             echo \"disk-check: link $(readlink -f /opt/cache/disk/tmp) $(stat -c %a /mnt/disk/tmp)\"\n\
             touch /opt/cache/disk/tmp/probe && test -e /mnt/disk/tmp/probe && echo disk-check: written through the link\n"
        ),
    )?;
    let log = dir.join("bootd.log");
    let _ = std::fs::remove_file(&log);
    let srv = Bootd::start_with_repo(&ctx.bootd, &ctx.art.www, &repo, &log)?;
    let cmdline = e2e::cmdline(srv.port, "nodeboot.postscript=1");
    let mut seen: Vec<String> = Vec::new();
    let wanted = [
        "already formatted".to_string(),
        format!("disk-check: mount /dev/vda2 xfs {UUID}"),
        "disk-check: link /mnt/disk/tmp 1777".to_string(),
        "disk-check: written through the link".to_string(),
    ];
    let mut judge = |s: &Value, line: &str| {
        for w in &wanted {
            if line.contains(w.as_str()) && !seen.contains(w) {
                seen.push(w.clone());
            }
        }
        let ready = e2e::judge_ready(s, line)?;
        let p = &s["status"]["provision"];
        Some(ready.and_then(|()| {
            if p["phase"] != "ready" {
                bail!("provisioning did not succeed: {p}");
            }
            let missing: Vec<&String> = wanted.iter().filter(|w| !seen.contains(w)).collect();
            if !missing.is_empty() {
                bail!("not on the console: {missing:?}");
            }
            Ok(())
        }))
    };
    let r = ctx.boot_with_disks(&cmdline, dir, &mut judge, 480, std::slice::from_ref(&disk))?;
    drop(srv);
    let _ = std::fs::remove_file(&disk);
    Ok(json!({ "uuid": UUID, "seconds": r.seconds, "milestones": r.milestones }))
}
