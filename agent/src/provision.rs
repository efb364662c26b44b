//! `nodectl provision` (run by `nodectl-provision.service` after
//! switch-root): from a booted live root to a node with its site setup.
//!
//! This is the Grendel-compatible path: when the image or the kernel
//! command line asks for it, `GET {grendel.address}/repo/postscript.sh`
//! (retries, backoff, deadline: the fetcher of the live image), then run it
//! with the hostname as `$1` under a timeout, its output in the journal, its
//! exit status the unit's. Every phase is written to
//! `/run/nodeboot/status.json`, which `nodectl status` reports.
//!
//! Asked for by `nodeboot.postscript=1` (or `=URL`) on the kernel command
//! line, or by the image's `/etc/nodeboot/provision.toml`:
//!
//! ```toml
//! [postscript]
//! enabled = true        # fetch {grendel.address}/repo/postscript.sh
//! url = "http://…"      # another URL (optional)
//! timeout = 600         # seconds the script may run
//! fetch_timeout = 120   # seconds for the download, retries included
//! ```
//! The command line wins over the file (`nodeboot.postscript=0` turns it off).
//!
//! The native path (see [`crate::native`]), asked for by
//! `nodeboot.postscripts=ssh://…` or by `[repo]` in the same file:
//!
//! ```toml
//! [repo]
//! url = "ssh://git@git.example.com/site/postscripts.git"
//! ref = "v12"                    # branch, tag or commit (optional)
//! known_hosts = "/etc/nodeboot/known_hosts"   # the default
//! hostkey = ["SHA256:…"]         # and/or fingerprints (ssh-keygen -lf)
//! keydev = "/dev/disk/by-id/…"   # default: the partition labelled nodeboot-key
//! timeout = 600                  # seconds post.sh may run
//! ```
//! Both paths may be asked for: the Grendel postscript runs first.
use crate::cmdline::Cmdline;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where provisioning reads and writes; parameters so tests use a tempdir.
#[derive(Debug, Clone)]
pub struct Paths {
    pub cmdline: PathBuf,
    pub config: PathBuf,
    /// `/run/nodeboot`: status.json, the downloaded script, the clone.
    pub run: PathBuf,
    /// Where node.toml is applied ("/").
    pub root: PathBuf,
    /// The image's pinned known_hosts for the postscripts server.
    pub known_hosts: PathBuf,
    /// /dev, /sys, mountinfo: where the key partition is looked for.
    pub system: crate::disk::System,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            cmdline: "/proc/cmdline".into(),
            config: "/etc/nodeboot/provision.toml".into(),
            run: "/run/nodeboot".into(),
            root: "/".into(),
            known_hosts: "/etc/nodeboot/known_hosts".into(),
            system: Default::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub postscript: PostscriptConfig,
    #[serde(default)]
    pub repo: crate::native::RepoConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostscriptConfig {
    #[serde(default)]
    pub enabled: bool,
    pub url: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: u64,
}

fn default_timeout() -> u64 {
    600
}
fn default_fetch_timeout() -> u64 {
    120
}

impl Default for PostscriptConfig {
    fn default() -> Self {
        PostscriptConfig {
            enabled: false,
            url: None,
            timeout: default_timeout(),
            fetch_timeout: default_fetch_timeout(),
        }
    }
}

/// The image's provisioning config; an absent file is the defaults.
pub fn load_config(path: &Path) -> Result<Config> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse_config(&text, path)
}

/// Parse the text of a provisioning config read from `path` (named in
/// errors). No I/O; never panics (the fuzz entry point, `provision_toml`).
pub fn parse_config(text: &str, path: &Path) -> Result<Config> {
    toml::from_str(text).with_context(|| format!("{}: invalid provisioning config", path.display()))
}

/// What the postscript step will do, from the config and the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct PostscriptPlan {
    pub url: String,
    pub hostname: String,
    pub timeout: Duration,
    pub fetch_timeout: Duration,
}

/// None when no postscript is asked for.
pub fn plan(c: &Cmdline, cfg: &Config, hostname: &str) -> Result<Option<PostscriptPlan>> {
    let p = &cfg.postscript;
    let (enabled, url) = match c.value("nodeboot.postscript") {
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
            (true, Some(v.to_string()))
        }
        _ => match c.flag("nodeboot.postscript")? {
            Some(on) => (on, p.url.clone()),
            None => (p.enabled || p.url.is_some(), p.url.clone()),
        },
    };
    if !enabled {
        return Ok(None);
    }
    let url = match url {
        Some(u) => u,
        None => {
            let Some(addr) = c.value("grendel.address").filter(|a| !a.is_empty()) else {
                bail!(
                    "a postscript is asked for but grendel.address is not on the kernel command line \
                     (set it, or give the URL: nodeboot.postscript=http://…)"
                );
            };
            format!("{}/repo/postscript.sh", addr.trim_end_matches('/'))
        }
    };
    Ok(Some(PostscriptPlan {
        url,
        hostname: c
            .value("grendel.hostname")
            .filter(|h| !h.is_empty())
            .unwrap_or(hostname)
            .to_string(),
        timeout: c.seconds("nodeboot.postscript.timeout", p.timeout)?,
        fetch_timeout: Duration::from_secs(p.fetch_timeout.max(1)),
    }))
}

/// `/run/nodeboot/status.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// provisioning, fetching-postscript, running-postscript, reading-key,
    /// cloning, applying, running-post.sh, starting-services, ready, failed.
    pub phase: String,
    pub hostname: String,
    pub postscript: Option<PostscriptResult>,
    /// The native path: the clone, node.toml, post.sh, the services.
    #[serde(default)]
    pub native: Option<crate::native::NativeResult>,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostscriptResult {
    pub url: String,
    pub bytes: Option<u64>,
    pub attempts: Option<u32>,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

/// Seconds rounded to tenths, as status.json keeps them.
pub(crate) fn tenths(secs: f64) -> f64 {
    (secs * 10.0).round() / 10.0
}

/// Read `status.json` from `run`.
pub fn read_status(run: &Path) -> Result<Status> {
    let path = run.join("status.json");
    let b = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
}

pub(crate) fn write_status(run: &Path, s: &Status) -> Result<()> {
    let path = run.join("status.json");
    let tmp = run.join(".status.json.tmp");
    // 0600: errors quote the last lines of the site's scripts.
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(s)?))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("writing {}", path.display()))
}

/// Tell systemd the phase (`systemctl status` shows it as "Status:"), when
/// run by a unit with `NotifyAccess=main`.
pub(crate) fn notify_status(phase: &str) {
    let Some(sock) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(s) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let msg = format!("STATUS={phase}");
    let bytes = sock.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| s.send_to_addr(msg.as_bytes(), &a))
    } else {
        s.send_to(msg.as_bytes(), &sock)
    };
    if let Err(e) = r {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Provision the node; the status (also in `status.json`) says how it went.
pub fn run(paths: &Paths, hostname: &str) -> Status {
    let start = Instant::now();
    let mut st = Status {
        phase: "provisioning".into(),
        hostname: hostname.to_string(),
        postscript: None,
        native: None,
        seconds: 0.0,
        error: None,
    };
    if let Err(e) = std::fs::create_dir_all(&paths.run) {
        tracing::warn!("creating {}: {e}", paths.run.display());
    }
    // The boot server hears every phase (bootd knows provisioning, ready
    // and failed; the step is in the message).
    // Signed once the node's key is loaded ([`crate::native`] loads or
    // makes it; until then, with the boot token).
    let mut place = crate::identity::Place::from_cmdline(&paths.cmdline);
    place.sys = paths.system.clone();
    let key = crate::identity::load_for_reports(&place);
    let reporter = crate::cmdline::BootParams::from_path(&paths.cmdline)
        .ok()
        .map(|p| {
            crate::report::Reporter::new(&p, hostname)
                .with_token_from(&paths.cmdline)
                .with_key(key.clone())
        });
    let mut last_posted = String::new();
    let mut report = |st: &mut Status| {
        st.seconds = tenths(start.elapsed().as_secs_f64());
        if let Err(e) = write_status(&paths.run, st) {
            tracing::warn!("{e:#}");
        }
        notify_status(&st.phase);
        tracing::info!(phase = %st.phase, seconds = st.seconds, "provision phase");
        if let Some(r) = &reporter {
            if st.phase != last_posted && !matches!(st.phase.as_str(), "ready" | "failed") {
                let msg = (st.phase != "provisioning").then_some(st.phase.as_str());
                r.phase("provisioning", msg);
                last_posted = st.phase.clone();
            }
        }
    };
    report(&mut st);
    let r = steps(paths, &mut st, &mut report);
    match r {
        Ok(()) if st.native.as_ref().is_some_and(|n| n.services_pending()) => {
            // nodectl-services.service starts them and says "ready".
            st.phase = "starting-services".into();
        }
        Ok(()) => st.phase = "ready".into(),
        Err(e) => {
            st.phase = "failed".into();
            st.error = Some(format!("{e:#}"));
            tracing::error!(phase = "failed", "provisioning failed: {e:#}");
        }
    }
    report(&mut st);
    if let Some(r) = &reporter {
        if matches!(st.phase.as_str(), "ready" | "failed") {
            r.phase(&st.phase, st.error.as_deref());
        }
    }
    st
}

fn steps(paths: &Paths, st: &mut Status, report: &mut dyn FnMut(&mut Status)) -> Result<()> {
    let c = Cmdline::from_path(&paths.cmdline)?;
    let cfg = load_config(&paths.config)?;
    let native = crate::native::plan(&c, &cfg.repo, paths)?;
    match plan(&c, &cfg, &st.hostname)? {
        Some(p) => postscript(paths, &p, st, report)?,
        None if native.is_none() => {
            tracing::info!(
                "nothing to provision: no postscript (nodeboot.postscript) and no repository \
                 (nodeboot.postscripts) asked for on the command line or in {}",
                paths.config.display()
            );
        }
        None => {}
    }
    if let Some(n) = native {
        if let Some(h) = c.value("grendel.hostname").filter(|h| !h.is_empty()) {
            st.hostname = h.to_string();
        }
        crate::native::run(paths, &n, st, report)?;
    }
    Ok(())
}

/// The Grendel-compatible step: fetch the postscript and run it.
fn postscript(
    paths: &Paths,
    p: &PostscriptPlan,
    st: &mut Status,
    report: &mut dyn FnMut(&mut Status),
) -> Result<()> {
    st.hostname = p.hostname.clone();
    st.phase = "fetching-postscript".into();
    st.postscript = Some(PostscriptResult {
        url: p.url.clone(),
        bytes: None,
        attempts: None,
        exit_code: None,
        seconds: 0.0,
    });
    report(st);
    // A private directory: the script may hold site secrets.
    let dir = paths.run.join("provision");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join("postscript.sh");
    let opts = crate::fetch::FetchOptions {
        sidecar: false,
        deadline: p.fetch_timeout,
        ..Default::default()
    };
    let f = crate::fetch::fetch(&p.url, &script, &opts)
        .with_context(|| format!("fetching the postscript {}", p.url))?;
    if let Some(ps) = st.postscript.as_mut() {
        ps.bytes = Some(f.bytes);
        ps.attempts = Some(f.attempts);
    }
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
    st.phase = "running-postscript".into();
    report(st);
    tracing::info!(
        "running the postscript {} ({} bytes) with {} (timeout {}s)",
        p.url,
        f.bytes,
        p.hostname,
        p.timeout.as_secs()
    );
    let t = Instant::now();
    // As Grendel's images do: `sh postscript.sh HOSTNAME`, so a script
    // without a shebang or exec bit runs as well.
    let out = crate::cmd::run_bounded(
        &[
            std::ffi::OsStr::new("/bin/sh"),
            script.as_os_str(),
            std::ffi::OsStr::new(&p.hostname),
        ],
        p.timeout,
    );
    let secs = tenths(t.elapsed().as_secs_f64());
    if let Some(ps) = st.postscript.as_mut() {
        ps.seconds = secs;
    }
    let (status, tail) = out.with_context(|| format!("the postscript {}", p.url))?;
    if let Some(ps) = st.postscript.as_mut() {
        ps.exit_code = status.code();
    }
    if !status.success() {
        bail!(
            "the postscript {} exited with {status} after {secs}s; its last lines: {}",
            p.url,
            tail.join(" | ")
        );
    }
    tracing::info!("the postscript {} succeeded in {secs}s", p.url);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: &str) -> Config {
        toml::from_str(t).unwrap()
    }

    #[test]
    fn plans() {
        let host = "fallback";
        let c = Cmdline::parse("grendel.address=http://10.0.2.2:8080/ grendel.hostname=cn1");
        assert_eq!(plan(&c, &Config::default(), host).unwrap(), None);
        let on = plan(&c, &cfg("[postscript]\nenabled = true\n"), host)
            .unwrap()
            .unwrap();
        assert_eq!(on.url, "http://10.0.2.2:8080/repo/postscript.sh");
        assert_eq!(on.hostname, "cn1");
        assert_eq!(on.timeout, Duration::from_secs(600));
        // The command line wins, both ways.
        let c2 = Cmdline::parse("grendel.address=http://g nodeboot.postscript=0");
        assert_eq!(
            plan(&c2, &cfg("[postscript]\nenabled = true"), host).unwrap(),
            None
        );
        let c3 =
            Cmdline::parse("nodeboot.postscript=https://s/p.sh nodeboot.postscript.timeout=30");
        let p = plan(&c3, &Config::default(), host).unwrap().unwrap();
        assert_eq!(
            (p.url.as_str(), p.hostname.as_str()),
            ("https://s/p.sh", "fallback")
        );
        assert_eq!(p.timeout, Duration::from_secs(30));
    }

    #[test]
    fn operator_errors_are_named() {
        let c = Cmdline::parse("nodeboot.postscript=1");
        let e = format!("{:#}", plan(&c, &Config::default(), "h").unwrap_err());
        assert!(
            e.contains("grendel.address is not on the kernel command line"),
            "{e}"
        );
        let c = Cmdline::parse("nodeboot.postscript=maybe");
        let e = format!("{:#}", plan(&c, &Config::default(), "h").unwrap_err());
        assert!(
            e.contains("nodeboot.postscript") && e.contains("maybe"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("provision.toml");
        std::fs::write(&p, "[postscript]\nenable = true\n").unwrap();
        let e = format!("{:#}", load_config(&p).unwrap_err());
        assert!(
            e.contains("provision.toml") && e.contains("unknown field `enable`"),
            "{e}"
        );
        assert!(load_config(&d.path().join("absent.toml")).is_ok());
    }

    /// A local server: the script for GET, 204 for the status reports;
    /// returns each request's first line and body.
    fn serve(body: &'static str, requests: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..requests {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let first = req.lines().next().unwrap_or_default().to_string();
                if first.starts_with("POST") {
                    let b = req.split("\r\n\r\n").nth(1).unwrap_or_default();
                    seen.push(format!("{first} {b}"));
                    let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                } else {
                    seen.push(first);
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
            seen
        });
        (port, h)
    }

    fn run_with(script: &'static str, extra: &str) -> (Status, tempfile::TempDir, Vec<String>) {
        // "provisioning", "fetching-postscript", the script,
        // "running-postscript", the outcome.
        let (port, h) = serve(script, 5);
        let d = tempfile::tempdir().unwrap();
        let paths = Paths {
            cmdline: d.path().join("cmdline"),
            config: d.path().join("provision.toml"),
            run: d.path().join("run"),
            ..Default::default()
        };
        std::fs::write(
            &paths.cmdline,
            format!("grendel.address=http://127.0.0.1:{port} grendel.hostname=cn1 nodeboot.postscript=1 {extra}"),
        )
        .unwrap();
        let st = run(&paths, "localhost");
        let seen = h.join().unwrap();
        let on_disk: Status =
            serde_json::from_slice(&std::fs::read(paths.run.join("status.json")).unwrap()).unwrap();
        assert_eq!(on_disk, st);
        assert!(
            seen[0].starts_with("POST /status") && seen[0].contains("\"phase\":\"provisioning\""),
            "{seen:?}"
        );
        assert!(
            seen[1].starts_with("POST /status") && seen[1].contains("fetching-postscript"),
            "{seen:?}"
        );
        assert!(seen[2].starts_with("GET /repo/postscript.sh"), "{seen:?}");
        assert!(seen[3].contains("running-postscript"), "{seen:?}");
        assert!(
            seen[4].starts_with("POST /status")
                && seen[4].contains(&format!("\"phase\":\"{}\"", st.phase)),
            "{seen:?}"
        );
        (st, d, seen)
    }

    #[test]
    fn postscript_runs_with_the_hostname() {
        let (st, d, _) = run_with("echo \"$1\" > \"$(dirname \"$0\")/ran\"\n", "");
        assert_eq!(st.phase, "ready", "{st:?}");
        let ps = st.postscript.unwrap();
        assert_eq!(ps.exit_code, Some(0));
        let ran = std::fs::read_to_string(d.path().join("run/provision/ran")).unwrap();
        assert_eq!(ran, "cn1\n");
        let mode = std::fs::metadata(d.path().join("run/provision"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn failing_postscript_fails_the_step() {
        let (st, _d, seen) = run_with("echo about to fail; exit 3\n", "");
        assert!(seen[4].contains("exited with exit status: 3"), "{seen:?}");
        assert_eq!(st.phase, "failed");
        assert_eq!(st.postscript.as_ref().unwrap().exit_code, Some(3));
        let e = st.error.unwrap();
        assert!(
            e.contains("postscript.sh exited with exit status: 3") && e.contains("about to fail"),
            "{e}"
        );
    }

    #[test]
    fn hanging_postscript_is_killed() {
        let (st, _d, _) = run_with("sleep 60\n", "nodeboot.postscript.timeout=1");
        assert_eq!(st.phase, "failed");
        let e = st.error.unwrap();
        assert!(e.contains("did not finish within 1s and was killed"), "{e}");
    }
}
