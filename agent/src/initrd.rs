//! `nodectl initrd`: the initramfs step, from the kernel command line to a
//! mounted /sysroot, and the record of it (`/run/nodeboot/boot.json`) that the
//! booted system reads.
//!
//! With a live image cache partition on the node's disk (GPT name
//! `nodeboot-cache`, made by `nodectl format-disk --cache-partition`), it is
//! mounted on `/run/nodeboot/cache` (see [`crate::cache`]) and:
//! - the image the boot pins (`nodeboot.sha256=`, else the sidecar
//!   `<url>.sha256`, the only thing fetched) is in the cache and hashes to
//!   its digest: booted from there, no image byte downloaded (a *hit*);
//! - it is not there (a *miss*), or its file does not hash to its name (a
//!   *corrupt* one, deleted with a console message naming it): fetched
//!   into `/run` as without a cache, stored in the cache, booted;
//! - no partition, a filesystem that does not mount, a full cache, any
//!   error of the cache: a console line says why, and the image comes from
//!   the network (*unavailable*). The cache never fails a boot.
//!
//! Where the loop device is attached: on a hit, on the cache file itself,
//! not on a copy in `/run`: the image then takes no RAM (a copy would take
//! its ~200 MB of tmpfs for the node's whole life, on nodes whose RAM is
//! for jobs), and the page cache keeps what is read. The file was hashed
//! whole just before; what a disk could still do to it after that is the
//! risk any disk-backed root takes. On a miss the loop device is on the
//! verified copy in `/run` (the bytes that were hashed, not a re-read of
//! what was just written to the disk); the cache copy is verified at the
//! next boot before it is used. The cache stays mounted after switch-root
//! (it moves with /run), so the booted system can read what it holds.
use crate::cache::{Cache, CacheError};
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
    /// sysfs: the firmware's facts (`firmware/efi`), the disks (`class/block`).
    pub sys: PathBuf,
    /// devtmpfs: the cache partition's device node.
    pub dev: PathBuf,
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
            dev: "/dev".into(),
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
    /// What the live image cache did.
    pub cache: Option<CacheReport>,
    pub timings: Timings,
    /// BIOS or UEFI, and Secure Boot.
    pub firmware: crate::firmware::FirmwareReport,
    /// The failure, as the operator saw it on the console; `None` on success.
    pub error: Option<String>,
}

/// What the live image cache did this boot (part of `boot.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheReport {
    /// `hit`: booted from the cache, no image byte fetched; `miss`: not
    /// there, fetched (and stored); `corrupt`: there but not matching its
    /// digest, deleted, fetched (and stored); `unavailable`: no partition,
    /// not mountable, or an error (see `message`), fetched; `off`:
    /// `nodeboot.cache=0`.
    pub outcome: String,
    /// The cache partition.
    pub device: Option<PathBuf>,
    /// Where it is mounted.
    pub dir: Option<PathBuf>,
    /// Why it was not used, or what went wrong storing the image.
    pub message: Option<String>,
    /// Image bytes fetched from the network this boot (0 on a hit).
    pub bytes_fetched: u64,
    /// The file the loop device is on: the cache's (a hit) or the copy in /run.
    pub booted_from: Option<PathBuf>,
    /// Seconds to hash the cached image (hit or corrupt).
    pub verify_seconds: Option<f64>,
    /// The fetched image was stored in the cache.
    pub stored: bool,
    pub store_seconds: Option<f64>,
    /// Digests evicted to store this one.
    pub evicted: Vec<String>,
}

impl CacheReport {
    /// One phrase for the console and bootd's status message.
    pub fn summary(&self) -> String {
        match self.outcome.as_str() {
            "hit" => "image from the local cache, 0 bytes fetched".to_string(),
            o => format!(
                "cache {o}, {} image bytes fetched{}",
                self.bytes_fetched,
                if self.stored {
                    ", stored in the cache"
                } else {
                    ""
                }
            ),
        }
    }
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
        "nodectl initrd: starting live boot of {url}{} (nodectl {})",
        match params.origins.as_ref().map(|o| o.len()).unwrap_or(1) {
            1 => String::new(),
            n => format!(" (and {} mirrors)", n - 1),
        },
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
        cache: None,
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
                "live root mounted, switching root ({}; {})",
                rec.firmware.summary(),
                rec.cache
                    .as_ref()
                    .map(CacheReport::summary)
                    .unwrap_or_default()
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
    let ram = image_path(&paths.run);
    std::fs::create_dir_all(ram.parent().unwrap())
        .with_context(|| format!("creating {}", ram.parent().unwrap().display()))?;
    let opts = fetch::FetchOptions {
        expected_sha256: p.sha256.clone(),
        sidecar: true,
        ca_file: p.ca_file.clone(),
        deadline: p.fetch_timeout,
        ..Default::default()
    };
    let origins = match &p.origins {
        Some(o) => o.urls().to_vec(),
        None => vec![url.to_string()],
    };
    // The chunked path (nodeboot.index=), when the three digests are pinned.
    let chunked = match (&p.index_url, &p.index_sha256, &p.sha256) {
        (Some(index_url), Some(index_sha256), Some(image_sha256)) => {
            Some(fetch::chunked::ChunkedOptions {
                index_url: index_url.clone(),
                index_sha256: index_sha256.clone(),
                image_sha256: image_sha256.clone(),
                stores: p.stores.clone(),
                seeds: Vec::new(),
                parallel: 4,
                http: opts.clone(),
                peers: peer_options(p),
            })
        }
        _ => {
            if p.peers {
                tracing::warn!(
                    "nodectl initrd: nodeboot.peers=1 without nodeboot.index= (and its digests): \
                     the image is fetched whole, peers are not asked"
                );
            }
            None
        }
    };
    let mut cr = CacheReport::default();
    let cache = open_cache(paths, p, &mut cr);
    // The chunk server of the fetch (nodeboot.peers=1), serving until this
    // step ends, just before switch-root.
    let serving = std::cell::RefCell::new(None);
    let how = How {
        origins: &origins,
        chunked: chunked.as_ref(),
        serving: &serving,
    };
    let image = match &cache {
        Some(c) => with_cache(c, &how, &opts, &ram, &mut cr, rec),
        None => fetch_to(&how, &ram, &opts, None, &mut cr, rec),
    };
    cr.booted_from = image.as_ref().ok().cloned();
    rec.cache = Some(cr);
    let image = image?;
    rec.timings.fetch = t.elapsed().as_secs_f64();
    if let Some(f) = &rec.fetch {
        tracing::info!(
            "nodectl initrd: fetched {} bytes in {:.1}s, sha256 {} ({}), at {:.1}s",
            f.bytes,
            f.seconds,
            f.sha256,
            f.verified_by,
            t0.elapsed().as_secs_f64()
        );
    }

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
    if let Some(s) = serving.into_inner() {
        let st = &s.server.stats;
        tracing::info!(
            "nodectl initrd: stopped serving chunks on {}: {} chunks ({} bytes) served to peers; \
             nodectl-serve-chunks.service serves the image once booted",
            s.server.local_addr(),
            st.chunks.load(std::sync::atomic::Ordering::Relaxed),
            st.bytes.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(())
}

/// What `nodeboot.peers=1` asks of a chunked fetch: peers from bootd
/// (`grendel.address`), this node's verified chunks served on
/// `nodeboot.peers.port` (0: none) and claimed with bootd.
fn peer_options(p: &BootParams) -> Option<fetch::chunked::PeerOptions> {
    if !p.peers {
        return None;
    }
    if p.grendel_address.is_none() {
        tracing::warn!(
            "nodectl initrd: nodeboot.peers=1 without grendel.address=: no bootd to name peers; \
             the chunks come from the stores"
        );
        return None;
    }
    Some(fetch::chunked::PeerOptions {
        bootd: p.grendel_address.clone(),
        peers: Vec::new(),
        serve: (p.peers_port != 0)
            .then(|| std::net::SocketAddr::from(([0, 0, 0, 0], p.peers_port))),
        limits: crate::peer::server::Limits::default(),
    })
}

/// Mount the cache partition and open the cache; `None` (with the reason
/// in `cr` and on the console) when there is none to use.
fn open_cache(paths: &Paths, p: &BootParams, cr: &mut CacheReport) -> Option<Cache> {
    if !p.cache {
        cr.outcome = "off".into();
        tracing::info!("nodectl initrd: live image cache off (nodeboot.cache=0)");
        return None;
    }
    let dir = crate::cache::mount_dir(&paths.run);
    let unavailable = |cr: &mut CacheReport, msg: String| {
        tracing::warn!(
            "nodectl initrd: live image cache unavailable: {msg}; the image comes from the network"
        );
        cr.outcome = "unavailable".into();
        cr.message = Some(msg);
        None
    };
    let device =
        match crate::cache::mount_partition(&paths.sys.join("class/block"), &paths.dev, &dir) {
            Ok(d) => d,
            // No cache partition is the usual case of a node without one: info, not warn.
            Err(e @ crate::cache::PartitionError::Missing { .. }) => {
                tracing::info!("nodectl initrd: no live image cache: {e}");
                cr.outcome = "unavailable".into();
                cr.message = Some(e.to_string());
                return None;
            }
            Err(e) => return unavailable(cr, e.to_string()),
        };
    cr.device = Some(device.clone());
    cr.dir = Some(dir.clone());
    match Cache::open(&dir) {
        Ok(c) => {
            tracing::info!(
                "nodectl initrd: live image cache {} on {}",
                dir.display(),
                device.display()
            );
            Some(c.keep(p.cache_keep))
        }
        Err(e) => unavailable(cr, e.to_string()),
    }
}

/// The image from the cache, or fetched and stored: the file to boot.
fn with_cache(
    c: &Cache,
    how: &How,
    opts: &fetch::FetchOptions,
    ram: &Path,
    cr: &mut CacheReport,
    rec: &mut BootRecord,
) -> Result<PathBuf> {
    let t = Instant::now();
    // Which image is current: the pinned digest, or the sidecar (the only
    // thing fetched on a hit).
    let url = &how.origins[0];
    let (digest, by) =
        fetch::expected_digest(how.origins, opts).with_context(|| what_is_fetched(how.origins))?;
    if c.lookup(&digest).is_some() {
        match c.verify(&digest) {
            Ok(v) => {
                cr.outcome = "hit".into();
                cr.verify_seconds = Some(v.seconds);
                tracing::info!(
                    "nodectl initrd: cache hit: {} verified whole ({} bytes hashed in {:.1}s, sha256 {digest} pinned by {by}): no image bytes fetched",
                    v.path.display(),
                    v.bytes,
                    v.seconds
                );
                rec.fetch = Some(fetch::FetchReport {
                    url: url.to_string(),
                    bytes: 0,
                    seconds: t.elapsed().as_secs_f64(),
                    sha256: digest,
                    verified_by: by.to_string(),
                    attempts: 0,
                    resumes: 0,
                    restarts: 0,
                    failovers: 0,
                });
                return Ok(v.path);
            }
            Err(e @ CacheError::Corrupt { .. }) => {
                tracing::error!(
                    "nodectl initrd: CACHE CORRUPT: {e}; not booting it, fetching the image again"
                );
                cr.outcome = "corrupt".into();
                cr.verify_seconds = Some(t.elapsed().as_secs_f64());
                cr.message = Some(e.to_string());
            }
            Err(e) => {
                tracing::warn!(
                    "nodectl initrd: live image cache unavailable: {e}; the image comes from the network"
                );
                cr.outcome = "unavailable".into();
                cr.message = Some(e.to_string());
            }
        }
    } else {
        cr.outcome = "miss".into();
        tracing::info!(
            "nodectl initrd: cache miss: sha256 {digest} is not in {}; fetching it",
            c.dir().display()
        );
    }
    let pinned = fetch::FetchOptions {
        expected_sha256: Some(digest.clone()),
        ..opts.clone()
    };
    // The images the cache holds with their index: seeds of a chunked fetch
    // (chunks they share with the new image are read, not fetched).
    let seeded = how.chunked.map(|o| {
        let mut o = o.clone();
        o.seeds = c
            .images()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| {
                i.companions
                    .iter()
                    .any(|p| p.extension().is_some_and(|e| e == "caibx"))
            })
            .map(|i| i.path)
            .collect();
        o
    });
    let how = How {
        origins: how.origins,
        chunked: seeded.as_ref(),
        serving: how.serving,
    };
    let image = fetch_to(&how, ram, &pinned, Some(by), cr, rec)?;
    match c.store(&digest, &image) {
        Ok(s) => {
            // Its index with it, when it came in chunks.
            let index = nodeboot_chunks::index_path_for(&image);
            if rec.chunked.is_some() && index.exists() {
                if let Err(e) = c
                    .companion_path(&digest, "caibx")
                    .map_err(anyhow::Error::from)
                    .and_then(|to| Ok(std::fs::copy(&index, to)?))
                {
                    tracing::warn!("nodectl initrd: the image's index is not cached: {e:#}");
                }
            }
            cr.stored = true;
            cr.store_seconds = Some(s.seconds);
            cr.evicted = s.evicted;
            tracing::info!(
                "nodectl initrd: stored the image in the cache as {} in {:.1}s",
                s.path.display(),
                s.seconds
            );
        }
        Err(e) => {
            tracing::warn!(
                "nodectl initrd: the image is not cached: {e}; booting the fetched copy"
            );
            let m = e.to_string();
            cr.message = Some(match cr.message.take() {
                Some(prev) => format!("{prev}; {m}"),
                None => m,
            });
        }
    }
    Ok(image)
}

/// Where the image comes from: the origins (root=live: and its mirrors),
/// and the chunked fetch when the command line gives an index.
struct How<'a> {
    origins: &'a [String],
    chunked: Option<&'a fetch::chunked::ChunkedOptions>,
    /// Where the chunked fetch leaves its chunk server (peers on).
    serving: &'a std::cell::RefCell<Option<fetch::chunked::Serving>>,
}

/// Fetch the image to `dest` (the copy in /run) as without a cache: in
/// chunks when `how` says so (the whole image from the origins if that
/// fails: verified by the same pinned digest, so falling back costs time,
/// never trust); `by`: how the digest given in `opts` was known.
fn fetch_to(
    how: &How,
    dest: &Path,
    opts: &fetch::FetchOptions,
    by: Option<&str>,
    cr: &mut CacheReport,
    rec: &mut BootRecord,
) -> Result<PathBuf> {
    let start = std::time::Instant::now();
    if let Some(o) = how.chunked {
        match fetch::chunked::fetch_chunked_serving(dest, o) {
            Ok((c, serving)) => {
                *how.serving.borrow_mut() = serving;
                // From the stores, and through the swarm from peers and the origin.
                cr.bytes_fetched = c.fetched_bytes
                    + c.peers
                        .as_ref()
                        .map_or(0, |p| p.peer_bytes + p.origin_bytes);
                if let Some(p) = &c.peers {
                    tracing::info!("nodectl initrd: {}", peers_summary(p));
                }
                rec.fetch = Some(fetch::FetchReport {
                    url: c.index_url.clone(),
                    bytes: c.assembly.image_bytes,
                    seconds: c.seconds,
                    sha256: o.image_sha256.clone(),
                    verified_by: "cmdline".into(),
                    attempts: 0,
                    resumes: 0,
                    restarts: 0,
                    failovers: 0,
                });
                rec.chunked = Some(c);
                return Ok(dest.to_path_buf());
            }
            // Out of time: no whole fetch after it (nodeboot.fetch.timeout
            // bounds the fetch, chunked or not).
            Err(e @ fetch::FetchError::ChunkedDeadline { .. }) => {
                rec.chunked_error = Some(format!("{e:#}"));
                return Err(anyhow::Error::new(e).context("assembling the live image in chunks"));
            }
            Err(e) => {
                tracing::warn!(
                    "nodectl initrd: chunked fetch failed: {e:#}; fetching {} whole instead",
                    how.origins[0]
                );
                rec.chunked_error = Some(format!("{e:#}"));
            }
        }
    }
    // What is left of the deadline after a failed chunked fetch.
    let opts = &fetch::FetchOptions {
        deadline: opts
            .deadline
            .saturating_sub(start.elapsed())
            .max(std::time::Duration::from_secs(1)),
        ..opts.clone()
    };
    let origins = how.origins;
    let mut f = fetch::fetch_from(origins, dest, opts).with_context(|| what_is_fetched(origins))?;
    if let Some(by) = by {
        f.verified_by = by.to_string();
    }
    cr.bytes_fetched = f.bytes;
    rec.fetch = Some(f);
    Ok(dest.to_path_buf())
}

/// One console line of what the peers gave.
fn peers_summary(p: &crate::peer::swarm::SwarmReport) -> String {
    let mut s = format!(
        "peers gave {} chunks ({} bytes), the origin through the swarm {} chunks ({} bytes); {} peers known",
        p.peer_chunks,
        p.peer_bytes,
        p.origin_chunks,
        p.origin_bytes,
        p.peers.len()
    );
    for d in p.peers.iter().filter(|d| d.dropped.is_some()) {
        s.push_str(&format!(
            "; peer {} dropped ({})",
            d.addr,
            d.dropped.as_deref().unwrap_or_default()
        ));
    }
    s
}

/// What a fetch error's context names: the image URL and how many mirrors.
fn what_is_fetched(origins: &[String]) -> String {
    match origins.len() {
        0 | 1 => format!(
            "fetching the live image {}",
            origins.first().map_or("", |u| u)
        ),
        n => format!(
            "fetching the live image {} (or its {} mirrors)",
            origins[0],
            n - 1
        ),
    }
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

    /// Read a test server's request head; its path.
    fn request_path(s: &std::net::TcpStream) -> String {
        use std::io::{BufRead, BufReader};
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut first = String::new();
        let _ = r.read_line(&mut first);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        first
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    fn paths(dir: &Path, cmdline: &str) -> Paths {
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        Paths {
            cmdline: dir.join("cmdline"),
            run: dir.join("run"),
            sysroot: dir.join("sysroot"),
            etc: dir.join("etc"),
            uptime: dir.join("uptime"),
            sys: dir.join("sys"),
            dev: dir.join("dev"),
        }
    }

    /// A server of one image at `/img` and its sidecar; counts the image
    /// requests (what a cache hit must not make).
    fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/img", l.local_addr().unwrap());
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let side = format!("{}  img\n", crate::cache::sha256_of(&body));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let path = request_path(&s);
                let b: &[u8] = match path.as_str() {
                    "/img.sha256" => side.as_bytes(),
                    "/img" => {
                        h.fetch_add(1, Ordering::SeqCst);
                        &body
                    }
                    _ => b"",
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    b.len()
                );
                let _ = s.write_all(b);
            }
        });
        (url, hits)
    }

    fn record(url: &str) -> BootRecord {
        let c = crate::cmdline::Cmdline::parse(&format!("root=live:{url}"));
        BootRecord {
            nodectl_version: "test",
            params: BootParams::from_cmdline(&c).unwrap(),
            net: None,
            fetch: None,
            live: None,
            cache: None,
            chunked: None,
            chunked_error: None,
            timings: Timings::default(),
            firmware: crate::firmware::read(Path::new("/nonexistent")),
            error: None,
        }
    }

    fn opts() -> fetch::FetchOptions {
        fetch::FetchOptions {
            deadline: std::time::Duration::from_secs(10),
            ..Default::default()
        }
    }

    /// Miss (fetched, stored), hit (no image request, booted from the
    /// cache file), a flipped byte (caught, named, refetched, stored).
    #[test]
    fn miss_then_hit_then_corrupt() {
        use std::sync::atomic::Ordering;
        let d = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let digest = crate::cache::sha256_of(&body);
        let (url, hits) = serve(body.clone());
        let c = Cache::open(&d.path().join("cache")).unwrap();
        let ram = d.path().join("run/live.squashfs");
        std::fs::create_dir_all(ram.parent().unwrap()).unwrap();

        let (mut cr, mut rec) = (CacheReport::default(), record(&url));
        let got = with_cache(
            &c,
            &How {
                origins: std::slice::from_ref(&url),
                chunked: None,
                serving: &Default::default(),
            },
            &opts(),
            &ram,
            &mut cr,
            &mut rec,
        )
        .unwrap();
        assert_eq!((cr.outcome.as_str(), cr.stored), ("miss", true), "{cr:?}");
        assert_eq!(got, ram, "a miss boots the copy in /run");
        assert_eq!(cr.bytes_fetched, 200_000);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(rec.fetch.as_ref().unwrap().verified_by, "sidecar");
        std::fs::remove_file(&ram).unwrap();

        let (mut cr, mut rec) = (CacheReport::default(), record(&url));
        let got = with_cache(
            &c,
            &How {
                origins: std::slice::from_ref(&url),
                chunked: None,
                serving: &Default::default(),
            },
            &opts(),
            &ram,
            &mut cr,
            &mut rec,
        )
        .unwrap();
        assert_eq!(cr.outcome, "hit", "{cr:?}");
        assert_eq!(
            got,
            c.lookup(&digest).unwrap(),
            "a hit boots the cache file"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a hit fetched the image");
        assert_eq!(cr.bytes_fetched, 0);
        let f = rec.fetch.unwrap();
        assert_eq!((f.bytes, f.sha256.as_str()), (0, digest.as_str()));
        assert!(!ram.exists());

        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&got).unwrap();
            f.write_all_at(&[0xff], 123_457).unwrap();
        }
        let (mut cr, mut rec) = (CacheReport::default(), record(&url));
        let again = with_cache(
            &c,
            &How {
                origins: std::slice::from_ref(&url),
                chunked: None,
                serving: &Default::default(),
            },
            &opts(),
            &ram,
            &mut cr,
            &mut rec,
        )
        .unwrap();
        assert_eq!(
            (cr.outcome.as_str(), cr.stored),
            ("corrupt", true),
            "{cr:?}"
        );
        let m = cr.message.unwrap();
        assert!(
            m.contains(&format!("the cached image {} is corrupt", got.display())),
            "{m}"
        );
        assert_eq!(again, ram, "never the corrupt file");
        assert_eq!(hits.load(Ordering::SeqCst), 2, "refetched");
        assert_eq!(std::fs::read(&ram).unwrap(), body);
        c.verify(&digest).unwrap();
    }

    /// A cache too small for the image: the fetched copy boots, the
    /// message says why it is not cached.
    #[test]
    fn a_full_cache_boots_the_fetched_copy() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root (a small tmpfs)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        let body = vec![9u8; 3 << 20];
        let (url, _) = serve(body);
        let c = Cache::open(&dir).unwrap();
        let ram = d.path().join("live.squashfs");
        let (mut cr, mut rec) = (CacheReport::default(), record(&url));
        let r = with_cache(
            &c,
            &How {
                origins: std::slice::from_ref(&url),
                chunked: None,
                serving: &Default::default(),
            },
            &opts(),
            &ram,
            &mut cr,
            &mut rec,
        );
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(r.unwrap(), ram);
        assert_eq!((cr.outcome.as_str(), cr.stored), ("miss", false));
        let m = cr.message.unwrap();
        assert!(m.contains("is full: the image needs 3145728 bytes"), "{m}");
    }

    #[test]
    fn no_partition_or_off_means_the_network() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path(), "root=live:http://127.0.0.1:9/x");
        let params = BootParams::from_path(&p.cmdline).unwrap();
        let mut cr = CacheReport::default();
        assert!(open_cache(&p, &params, &mut cr).is_none());
        assert_eq!(cr.outcome, "unavailable");
        assert!(cr
            .message
            .unwrap()
            .starts_with("no partition named nodeboot-cache"),);
        let off = BootParams {
            cache: false,
            ..params
        };
        let mut cr = CacheReport::default();
        assert!(open_cache(&p, &off, &mut cr).is_none());
        assert_eq!(cr.outcome, "off");
    }

    /// Files of `root` (a chunk after `delay`); counts requests for `/img`.
    fn serve_dir(
        root: PathBuf,
        delay: std::time::Duration,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (root, h) = (root.clone(), h.clone());
                std::thread::spawn(move || {
                    let path = request_path(&s);
                    let path = path.as_str();
                    if path == "/img" {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    if path.starts_with("/store/") {
                        std::thread::sleep(delay);
                    }
                    let b =
                        std::fs::read(root.join(path.trim_start_matches('/'))).unwrap_or_default();
                    let _ = write!(
                        s,
                        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        if b.is_empty() {
                            "404 Not Found"
                        } else {
                            "200 OK"
                        },
                        b.len()
                    );
                    let _ = s.write_all(&b);
                });
            }
        });
        (base, hits)
    }

    /// A chunked fetch that runs out of nodeboot.fetch.timeout fails the
    /// boot with how far it got; the whole image is not fetched after it.
    #[test]
    fn the_fetch_deadline_bounds_the_chunked_fetch() {
        let d = tempfile::tempdir().unwrap();
        let www = d.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        let body: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(www.join("img"), &body).unwrap();
        let (ix, sha, _) = nodeboot_chunks::Store::new(www.join("store"))
            .add_file(&www.join("img"), nodeboot_chunks::Params::DEFAULT)
            .unwrap();
        let ixb = ix.to_bytes();
        std::fs::write(www.join("img.caibx"), &ixb).unwrap();
        let (base, hits) = serve_dir(www, std::time::Duration::from_millis(600));
        let url = format!("{base}/img");
        let opts = fetch::FetchOptions {
            expected_sha256: Some(sha.clone()),
            deadline: std::time::Duration::from_secs(2),
            ..Default::default()
        };
        let chunked = fetch::chunked::ChunkedOptions {
            index_url: format!("{base}/img.caibx"),
            index_sha256: nodeboot_chunks::sha256_hex(&ixb),
            image_sha256: sha,
            stores: Vec::new(),
            seeds: Vec::new(),
            parallel: 2,
            http: opts.clone(),
            peers: None,
        };
        let ram = d.path().join("live.squashfs");
        let (mut cr, mut rec) = (CacheReport::default(), record(&url));
        let e = fetch_to(
            &How {
                origins: std::slice::from_ref(&url),
                chunked: Some(&chunked),
                serving: &Default::default(),
            },
            &ram,
            &opts,
            None,
            &mut cr,
            &mut rec,
        )
        .unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.starts_with(&format!(
                "assembling the live image in chunks: {base}/img.caibx: the fetch deadline of 2s \
                 (nodeboot.fetch.timeout=, nodectl fetch --timeout) passed with "
            )),
            "{m}"
        );
        let unique = ix
            .chunks
            .iter()
            .map(|c| c.id)
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert!(m.contains(&format!(" of {unique} chunks assembled")), "{m}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the whole image fetched after the deadline"
        );
        assert_eq!(
            rec.chunked_error.as_deref(),
            Some(m.trim_start_matches("assembling the live image in chunks: "))
        );
        assert!(!ram.exists());
    }

    /// nodeboot.peers=1 asks bootd (grendel.address) and serves on the
    /// port; without bootd, or off, no peers.
    #[test]
    fn peers_from_the_command_line() {
        let p = |line: &str| {
            BootParams::from_cmdline(&crate::cmdline::Cmdline::parse(&format!(
                "root=live:http://b/x {line}"
            )))
            .unwrap()
        };
        assert!(peer_options(&p("grendel.address=http://b:8080")).is_none());
        assert!(peer_options(&p("nodeboot.peers=1")).is_none());
        let o = peer_options(&p("nodeboot.peers=1 grendel.address=http://b:8080/")).unwrap();
        assert_eq!(o.bootd.as_deref(), Some("http://b:8080"));
        assert_eq!(o.serve, Some("0.0.0.0:7070".parse().unwrap()));
        assert!(o.peers.is_empty());
        let o = peer_options(&p(
            "nodeboot.peers=1 grendel.address=http://b nodeboot.peers.port=0",
        ))
        .unwrap();
        assert_eq!(o.serve, None);
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
