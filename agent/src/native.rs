//! The native provision path, run by `nodectl provision` after the
//! Grendel postscript (if any):
//!
//! 1. the deploy key from the key partition ([`crate::repo::read_deploy_key`]:
//!    read-only, private mount, unmounted at once, kept in memory only);
//! 2. the postscripts repository cloned over SSH with git2, the server's
//!    host key checked against the image's known_hosts and/or the
//!    fingerprints given on the command line, into `/run/nodeboot/postscripts`
//!    (0700, tmpfs);
//! 3. its `node.toml` applied ([`crate::nodetoml`]: mounts, layout, files
//!    with owner/group/mode, CA certificates, SSH host keys);
//! 4. its `post.sh` run as `sh post.sh HOSTNAME` in the repository, under a
//!    timeout;
//! 5. the services of `node.toml` recorded for `nodectl start-services`
//!    (`nodectl-services.service`), which starts them in order after
//!    `nodectl-provision.service` — the services are ordered after it, so it
//!    cannot start them itself.
//!
//! The clone is removed at the end, success or failure: it holds the
//! site's secrets, which now live only where node.toml installed them.
//!
//! Command line (wins over `[repo]` in /etc/nodeboot/provision.toml):
//! `nodeboot.postscripts=ssh://git@host[:port]/path` (or `git@host:path`),
//! `nodeboot.postscripts.ref=REF`, `nodeboot.postscripts.hostkey=SHA256:…[,…]`,
//! `nodeboot.keydev=/dev/…`, `nodeboot.post.timeout=SECONDS`,
//! `nodeboot.postscripts.attempts=N` (clone attempts, network errors only; 5),
//! `nodeboot.keydev.wait=SECONDS` (for the key partition to appear; 30).
use crate::cmdline::Cmdline;
use crate::provision::{tenths, Paths, Status};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub url: Option<String>,
    #[serde(rename = "ref")]
    pub ref_pin: Option<String>,
    pub known_hosts: Option<PathBuf>,
    #[serde(default)]
    pub hostkey: Vec<String>,
    pub keydev: Option<PathBuf>,
    pub timeout: Option<u64>,
}

/// What the native path will do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: String,
    pub ref_pin: Option<String>,
    pub pins: crate::repo::HostKeys,
    pub keydev: Option<PathBuf>,
    /// Bound of post.sh.
    pub timeout: Duration,
    /// Bound for the key partition to appear (`nodeboot.keydev.wait=`, 30 s).
    pub key_wait: Duration,
    pub retries: crate::repo::Retries,
}

/// None when no repository is asked for.
pub fn plan(c: &Cmdline, cfg: &RepoConfig, paths: &Paths) -> Result<Option<Plan>> {
    let url = c
        .value("nodeboot.postscripts")
        .map(str::to_string)
        .or_else(|| cfg.url.clone())
        .filter(|u| !u.is_empty() && u != "0");
    let Some(url) = url else {
        return Ok(None);
    };
    crate::repo::ssh_target(&url).context("nodeboot.postscripts")?;
    let mut fingerprints: Vec<String> = cfg.hostkey.clone();
    for v in c.values("nodeboot.postscripts.hostkey") {
        fingerprints.extend(v.split(',').filter(|f| !f.is_empty()).map(str::to_string));
    }
    let known_hosts = cfg
        .known_hosts
        .clone()
        .unwrap_or_else(|| paths.known_hosts.clone());
    let known_hosts = if known_hosts.exists() {
        Some(known_hosts)
    } else if cfg.known_hosts.is_some() {
        bail!(
            "[repo] known_hosts = {}: no such file in the image",
            known_hosts.display()
        );
    } else {
        None
    };
    if known_hosts.is_none() && fingerprints.is_empty() {
        bail!(
            "no host key pinned for {url}: ship {} in the image or set \
             nodeboot.postscripts.hostkey=SHA256:… (ssh-keygen -lf of the server's host key); \
             an unknown server is never trusted",
            paths.known_hosts.display()
        );
    }
    let timeout = match cfg.timeout {
        Some(t) => c.seconds("nodeboot.post.timeout", t)?,
        None => c.seconds("nodeboot.post.timeout", 600)?,
    };
    Ok(Some(Plan {
        url,
        ref_pin: c
            .value("nodeboot.postscripts.ref")
            .map(str::to_string)
            .or_else(|| cfg.ref_pin.clone())
            .filter(|r| !r.is_empty()),
        pins: crate::repo::HostKeys {
            known_hosts,
            fingerprints,
        },
        keydev: crate::repo::keydev_from_cmdline(c).or_else(|| cfg.keydev.clone()),
        timeout,
        key_wait: c.seconds("nodeboot.keydev.wait", 30)?,
        retries: crate::repo::Retries {
            attempts: match c.value("nodeboot.postscripts.attempts") {
                None => crate::repo::Retries::default().attempts,
                Some(v) => v.parse().ok().filter(|n| (1..=100).contains(n)).with_context(|| {
                    format!("nodeboot.postscripts.attempts={v}: not a number of attempts (1 to 100)")
                })?,
            },
            ..Default::default()
        },
    }))
}

/// What the native path did (in status.json).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NativeResult {
    pub url: String,
    /// The commit checked out.
    pub commit: Option<String>,
    pub clone_attempts: Option<u32>,
    /// Seconds since provisioning started, per milestone: key_read,
    /// postscripts_cloned, node_toml_applied, post_sh_done, services_up.
    #[serde(default)]
    pub milestones: std::collections::BTreeMap<String, f64>,
    /// node.toml's steps, one line each.
    #[serde(default)]
    pub applied: Vec<String>,
    pub post_sh_exit: Option<i32>,
    /// node.toml's `[services]`: what nodectl start-services starts.
    pub services: Option<crate::nodetoml::Services>,
    /// Seconds each service took to become active, in start order.
    #[serde(default)]
    pub started: Vec<(String, f64)>,
    /// The node key's fingerprint and where it is kept.
    #[serde(default)]
    pub identity: Option<String>,
}

impl NativeResult {
    pub fn services_pending(&self) -> bool {
        self.services.as_ref().is_some_and(|s| !s.start.is_empty())
    }
}

/// The native steps (see the module doc); the status is updated and
/// reported (`report`) at each phase.
pub fn run(
    paths: &Paths,
    p: &Plan,
    st: &mut Status,
    report: &mut dyn FnMut(&mut Status),
) -> Result<()> {
    let start = Instant::now();
    let dest = paths.run.join("postscripts");
    st.native = Some(NativeResult {
        url: p.url.clone(),
        ..Default::default()
    });
    // A clone left by an earlier run (the unit restarted) goes first.
    remove_clone(&dest)?;
    // Removed however this ends (an error, a panic).
    struct Guard<'a>(&'a Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if let Err(e) = remove_clone(self.0) {
                tracing::warn!("{e:#}");
            }
        }
    }
    let _guard = Guard(&dest);
    steps(paths, p, st, report, &dest, start)
}

/// The node's key: made on the key partition at the first boot (sealed in
/// the TPM when there is one), then enrolled with bootd, which takes it
/// while the host is armed. Not fatal: a site without secrets needs no
/// key, and a refused enrollment shows again, naming bootd's reason, when
/// a secret is asked for.
fn identity(paths: &Paths, p: &Plan, st: &mut Status) {
    let mut place = crate::identity::Place::from_cmdline(&paths.cmdline);
    place.keydev = p.keydev.clone().or(place.keydev);
    place.sys = paths.system.clone();
    let l = match crate::identity::init(&place, crate::identity::TpmUse::Auto) {
        Ok((l, new)) => {
            tracing::info!(
                fingerprint = %l.key.public().fingerprint(),
                "node key {} ({})",
                if new { "made" } else { "read" },
                l.kind()
            );
            l
        }
        Err(e) => {
            tracing::warn!("no node key: {e:#}");
            return;
        }
    };
    if let Some(n) = st.native.as_mut() {
        n.identity = Some(format!("{} ({})", l.key.public().fingerprint(), l.kind()));
    }
    crate::identity::remember(&l.key);
    match crate::identity::Signer::from_cmdline(&l.key, &paths.cmdline).and_then(|s| s.enroll()) {
        Ok(m) => tracing::info!("bootd: {m}"),
        Err(e) => tracing::warn!("{e:#}"),
    }
}

fn milestone(st: &mut Status, name: &str, start: Instant) {
    let s = tenths(start.elapsed().as_secs_f64());
    if let Some(n) = st.native.as_mut() {
        n.milestones.insert(name.to_string(), s);
    }
    tracing::info!(milestone = name, seconds = s, "provision milestone");
}

fn steps(
    paths: &Paths,
    p: &Plan,
    st: &mut Status,
    report: &mut dyn FnMut(&mut Status),
    dest: &Path,
    start: Instant,
) -> Result<()> {
    st.phase = "reading-key".into();
    report(st);
    // Disks may show up after the network: wait for the key partition's
    // link (bounded) before reading it.
    let t = Instant::now();
    while let Err(e) =
        crate::repo::locate_key_device(p.keydev.as_deref(), &paths.system).and_then(|d| {
            d.exists()
                .then_some(())
                .with_context(|| format!("{} does not exist", d.display()))
        })
    {
        if t.elapsed() >= p.key_wait {
            return Err(e).with_context(|| {
                format!(
                    "the key partition did not appear within {}s",
                    p.key_wait.as_secs()
                )
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let key = crate::repo::read_deploy_key(
        p.keydev.as_deref(),
        &paths.system,
        &crate::disk::Tools::default(),
    )?;
    milestone(st, "key_read", start);
    identity(paths, p, st);

    st.phase = "cloning".into();
    report(st);
    let cloned =
        crate::repo::clone_pinned(&p.url, p.ref_pin.as_deref(), &key, &p.pins, dest, p.retries)?;
    drop(key);
    if let Some(n) = st.native.as_mut() {
        n.commit = Some(cloned.commit.clone());
        n.clone_attempts = Some(cloned.attempts);
    }
    milestone(st, "postscripts_cloned", start);
    tracing::info!(url = %p.url, commit = %cloned.commit, "postscripts cloned");

    let node_toml = dest.join("node.toml");
    if node_toml.exists() {
        st.phase = "applying".into();
        report(st);
        let n = crate::nodetoml::load(&node_toml).with_context(|| {
            format!("the postscripts repository {} at {}", p.url, cloned.commit)
        })?;
        let mountinfo = paths.system.mountinfo.clone();
        let r = crate::nodetoml::apply(&n, dest, &paths.root, &mountinfo);
        let lines = r.with_context(|| format!("applying node.toml of {}", p.url))?;
        for l in &lines {
            tracing::info!("node.toml: {l}");
        }
        if let Some(ns) = st.native.as_mut() {
            ns.applied = lines;
            ns.services = n.services.clone();
        }
        milestone(st, "node_toml_applied", start);
    }

    let post = dest.join("post.sh");
    if post.exists() {
        st.phase = "running-post.sh".into();
        report(st);
        tracing::info!(
            "running post.sh of {} with {} (timeout {}s)",
            p.url,
            st.hostname,
            p.timeout.as_secs()
        );
        let t = Instant::now();
        let (status, tail) = crate::cmd::run_bounded_in(
            &[
                std::ffi::OsStr::new("/bin/sh"),
                post.as_os_str(),
                std::ffi::OsStr::new(&st.hostname),
            ],
            p.timeout,
            dest,
        )
        .with_context(|| format!("post.sh of {}", p.url))?;
        if let Some(n) = st.native.as_mut() {
            n.post_sh_exit = status.code();
        }
        if !status.success() {
            bail!(
                "post.sh of {} ({}) exited with {status} after {:.1}s; its last lines: {}",
                p.url,
                cloned.commit,
                t.elapsed().as_secs_f64(),
                tail.join(" | ")
            );
        }
        milestone(st, "post_sh_done", start);
    }
    if !node_toml.exists() && !post.exists() {
        bail!(
            "the postscripts repository {} ({}) has neither node.toml nor post.sh",
            p.url,
            cloned.commit
        );
    }
    Ok(())
}

fn remove_clone(dest: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the clone {}", dest.display())),
    }
}

// ------------------------------------------------------------- services

/// `nodectl start-services` (nodectl-services.service, after
/// nodectl-provision.service): start node.toml's services in order, each
/// bounded by its timeout; the final phase is `ready` or `failed`, in
/// status.json and to the boot server. Refuses to start anything when
/// provisioning failed: a node half set up must not join the cluster.
pub fn start_services(paths: &Paths, systemctl: &str) -> Status {
    let mut st = match crate::provision::read_status(&paths.run) {
        Ok(s) => s,
        Err(e) => Status {
            phase: "failed".into(),
            hostname: String::new(),
            postscript: None,
            native: None,
            seconds: 0.0,
            error: Some(format!("{e:#} (did nodectl provision run?)")),
        },
    };
    if st.phase != "starting-services" {
        // Nothing to start (ready), or provisioning failed: said already.
        return st;
    }
    let mut place = crate::identity::Place::from_cmdline(&paths.cmdline);
    place.sys = paths.system.clone();
    let key = crate::identity::load_for_reports(&place);
    let reporter = crate::cmdline::BootParams::from_path(&paths.cmdline)
        .ok()
        .map(|p| {
            crate::report::Reporter::new(&p, &st.hostname)
                .with_token_from(&paths.cmdline)
                .with_key(key.clone())
        });
    let base = st.seconds;
    let start = Instant::now();
    let r = start_all(&mut st, systemctl, base, start, paths);
    match r {
        Ok(()) => st.phase = "ready".into(),
        Err(e) => {
            st.phase = "failed".into();
            st.error = Some(format!("{e:#}"));
            tracing::error!(phase = "failed", "{e:#}");
        }
    }
    st.seconds = tenths(base + start.elapsed().as_secs_f64());
    if let Err(e) = crate::provision::write_status(&paths.run, &st) {
        tracing::warn!("{e:#}");
    }
    crate::provision::notify_status(&st.phase);
    if let Some(r) = &reporter {
        r.phase(&st.phase, st.error.as_deref());
    }
    st
}

fn start_all(
    st: &mut Status,
    systemctl: &str,
    base: f64,
    start: Instant,
    paths: &Paths,
) -> Result<()> {
    let run = &paths.run;
    let Some(svc) = st.native.as_ref().and_then(|n| n.services.clone()) else {
        return Ok(());
    };
    let timeout = Duration::from_secs(svc.timeout);
    // node.toml may have written units or drop-ins.
    crate::cmd::run(&[systemctl, "daemon-reload"]).context("systemctl daemon-reload")?;
    // Unit names found in the node's tree (ssh.service on Debian is
    // sshd.service on EL), not assumed.
    let os = crate::nodeos::NodeOs::detect(&paths.root);
    for name in &svc.start {
        let unit = os.service_unit(name);
        crate::provision::notify_status(&format!("starting {unit}"));
        tracing::info!(service = %unit, "starting");
        let t = Instant::now();
        let started = crate::cmd::run_bounded(&[systemctl, "start", "--", &unit], timeout);
        let (status, tail) = match started {
            Ok(r) => r,
            Err(e) => {
                // Killing systemctl leaves its start job queued: cancel it,
                // so the unit does not come up on a node said to be failed.
                let _ = crate::cmd::run_bounded(
                    &[systemctl, "stop", "--no-block", "--", &unit],
                    Duration::from_secs(10),
                );
                return Err(e).with_context(|| {
                    format!(
                        "starting {unit} (bound {}s; the start was cancelled): {}",
                        svc.timeout,
                        journal_tail(&unit)
                    )
                });
            }
        };
        // is-active exits non-zero for any state but active: read its word.
        let state = crate::cmd::run_bounded(
            &[systemctl, "is-active", "--", &unit],
            Duration::from_secs(10),
        )
        .map(|(_, lines)| lines.last().cloned().unwrap_or_default())
        .unwrap_or_else(|e| format!("{e:#}"));
        if !status.success() || state.trim() != "active" {
            bail!(
                "{unit} did not start ({}; systemctl start: {status}{}); {}",
                state.trim(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", tail.join(" | "))
                },
                journal_tail(&unit)
            );
        }
        if unit == "sssd.service" {
            // sssd starts "offline" when it cannot reach or trust its
            // directory: ask the directory what sssd will, so that a node
            // with no users does not join the cluster.
            let conf = paths.root.join("etc/sssd/sssd.conf");
            let ca = os.trust().bundle;
            let ca = paths.root.join(ca.strip_prefix("/").unwrap_or(&ca));
            for d in crate::ldapcheck::domains(&conf)
                .with_context(|| format!("{unit}: its configuration"))?
            {
                crate::provision::notify_status(&format!("checking LDAP domain {}", d.name));
                crate::ldapcheck::check(&d, &ca, &paths.run, timeout)
                    .with_context(|| format!("{unit} is active but cannot use its directory"))?;
            }
        }
        let secs = tenths(t.elapsed().as_secs_f64());
        tracing::info!(service = %unit, seconds = secs, "active");
        if let Some(n) = st.native.as_mut() {
            n.started.push((unit.clone(), secs));
        }
        st.seconds = tenths(base + start.elapsed().as_secs_f64());
        let _ = crate::provision::write_status(run, st);
    }
    let up = tenths(base + start.elapsed().as_secs_f64());
    if let Some(n) = st.native.as_mut() {
        n.milestones.insert("services_up".into(), up);
    }
    tracing::info!(
        milestone = "services_up",
        seconds = up,
        "provision milestone"
    );
    Ok(())
}

/// The unit's last journal lines, for an error message.
fn journal_tail(unit: &str) -> String {
    match crate::cmd::run(&[
        "journalctl",
        "-u",
        unit,
        "-n",
        "5",
        "--no-pager",
        "-o",
        "cat",
    ]) {
        Ok(t) if !t.trim().is_empty() => {
            format!("its journal: {}", t.lines().collect::<Vec<_>>().join(" | "))
        }
        _ => "no journal lines".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(d: &Path) -> Paths {
        Paths {
            cmdline: d.join("cmdline"),
            config: d.join("provision.toml"),
            run: d.join("run"),
            root: d.join("root"),
            known_hosts: d.join("known_hosts"),
            system: Default::default(),
        }
    }

    /// A fake systemctl under `d` that appends its arguments to `d/calls`,
    /// then runs `body` (shell, `$*` the arguments); its path and the log.
    fn fake_systemctl(d: &Path, body: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let log = d.join("calls");
        let fake = d.join("systemctl");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$*\" >> {}\n{body}", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        (fake, log)
    }

    /// status.json as nodectl provision leaves it with `start` to start.
    fn pending(p: &Paths, start: &[&str], timeout: u64) -> Status {
        std::fs::create_dir_all(&p.run).unwrap();
        std::fs::write(&p.cmdline, "").unwrap();
        let st = Status {
            phase: "starting-services".into(),
            hostname: "cn1".into(),
            postscript: None,
            native: Some(NativeResult {
                services: Some(crate::nodetoml::Services {
                    start: start.iter().map(|u| u.to_string()).collect(),
                    timeout,
                }),
                ..Default::default()
            }),
            seconds: 1.0,
            error: None,
        };
        crate::provision::write_status(&p.run, &st).unwrap();
        st
    }

    #[test]
    fn plans_from_cmdline_and_config() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        let none = plan(&Cmdline::parse("quiet"), &RepoConfig::default(), &p).unwrap();
        assert!(none.is_none());
        // No pin at all: refused before any connection.
        let c = Cmdline::parse("nodeboot.postscripts=ssh://git@10.0.2.2:2222/postscripts.git");
        let e = format!("{:#}", plan(&c, &RepoConfig::default(), &p).unwrap_err());
        assert!(
            e.contains("no host key pinned") && e.contains("nodeboot.postscripts.hostkey"),
            "{e}"
        );
        // A fingerprint on the command line, a ref, a keydev.
        let fp = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let c = Cmdline::parse(&format!(
            "nodeboot.postscripts=ssh://git@10.0.2.2:2222/p.git nodeboot.postscripts.hostkey={fp} \
             nodeboot.postscripts.ref=v2 nodeboot.keydev=/dev/vdb nodeboot.post.timeout=30"
        ));
        let pl = plan(&c, &RepoConfig::default(), &p).unwrap().unwrap();
        assert_eq!(pl.pins.fingerprints, vec![fp.to_string()]);
        assert!(pl.pins.known_hosts.is_none());
        assert_eq!(pl.ref_pin.as_deref(), Some("v2"));
        assert_eq!(pl.keydev.as_deref(), Some(Path::new("/dev/vdb")));
        assert_eq!(pl.timeout, Duration::from_secs(30));
        // The image's known_hosts is used when present.
        std::fs::write(&p.known_hosts, "").unwrap();
        let cfg: RepoConfig = toml::from_str("url = 'git@git.example.com:site/p.git'").unwrap();
        let pl = plan(&Cmdline::parse(""), &cfg, &p).unwrap().unwrap();
        assert_eq!(
            pl.pins.known_hosts.as_deref(),
            Some(p.known_hosts.as_path())
        );
        // Not an SSH URL.
        let c = Cmdline::parse("nodeboot.postscripts=https://example.com/p.git");
        let e = format!("{:#}", plan(&c, &RepoConfig::default(), &p).unwrap_err());
        assert!(
            e.contains("nodeboot.postscripts") && e.contains("only ssh://"),
            "{e}"
        );
        // A config key that does not exist.
        let e = toml::from_str::<RepoConfig>("urls = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `urls`"), "{e}");
    }

    #[test]
    fn a_service_that_does_not_start_in_time_is_cancelled() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        let (fake, log) = fake_systemctl(
            d.path(),
            "case \"$*\" in\n  'start -- slurmd.service') sleep 30;;\n  is-active*) echo active;;\nesac\n",
        );
        pending(&p, &["munge", "slurmd"], 1);
        let out = start_services(&p, fake.to_str().unwrap());
        assert_eq!(out.phase, "failed");
        let e = out.error.unwrap();
        assert!(
            e.contains("starting slurmd.service (bound 1s; the start was cancelled)")
                && e.contains("did not finish within 1s"),
            "{e}"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.ends_with("start -- slurmd.service\nstop --no-block -- slurmd.service\n"),
            "{calls}"
        );
    }

    #[test]
    fn a_key_partition_that_never_appears_fails_in_time() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        let c = Cmdline::parse(
            "nodeboot.postscripts=ssh://git@10.0.2.2/p.git nodeboot.keydev=/dev/disk/by-id/nodeboot-absent \
             nodeboot.keydev.wait=1 nodeboot.postscripts.hostkey=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        );
        let pl = plan(&c, &RepoConfig::default(), &p).unwrap().unwrap();
        let mut st = Status {
            phase: "provisioning".into(),
            hostname: "cn1".into(),
            postscript: None,
            native: None,
            seconds: 0.0,
            error: None,
        };
        let t = Instant::now();
        let e = format!("{:#}", run(&p, &pl, &mut st, &mut |_| {}).unwrap_err());
        assert!(
            e.contains("the key partition did not appear within 1s")
                && e.contains("/dev/disk/by-id/nodeboot-absent does not exist"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn start_services_refuses_after_a_failed_provisioning() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        std::fs::create_dir_all(&p.run).unwrap();
        std::fs::write(&p.cmdline, "").unwrap();
        let st = Status {
            phase: "failed".into(),
            hostname: "cn1".into(),
            postscript: None,
            native: None,
            seconds: 3.0,
            error: Some("cloning: refused".into()),
        };
        crate::provision::write_status(&p.run, &st).unwrap();
        // systemctl must never be called: a program that does not exist.
        let out = start_services(&p, "/nonexistent/systemctl");
        assert_eq!(out.phase, "failed");
        assert_eq!(out.error.as_deref(), Some("cloning: refused"));
        // No status at all: named.
        let d2 = tempfile::tempdir().unwrap();
        let out = start_services(&paths(d2.path()), "/nonexistent/systemctl");
        assert_eq!(out.phase, "failed");
        assert!(out.error.unwrap().contains("did nodectl provision run?"));
    }

    #[test]
    fn services_start_in_order_and_a_failure_is_named() {
        // A fake systemctl records its calls; "sssd" fails to start.
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        let (fake, log) = fake_systemctl(
            d.path(),
            "case \"$*\" in\n  'start -- sssd.service') echo 'Job for sssd.service failed' >&2; exit 1;;\n  'is-active -- sssd.service') echo failed; exit 3;;\n  is-active*) echo active;;\nesac\n",
        );
        pending(&p, &["munge", "sssd", "slurmd"], 5);
        let out = start_services(&p, fake.to_str().unwrap());
        assert_eq!(out.phase, "failed");
        let e = out.error.unwrap();
        assert!(
            e.contains("sssd.service did not start (failed")
                && e.contains("Job for sssd.service failed"),
            "{e}"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            calls,
            "daemon-reload\nstart -- munge.service\nis-active -- munge.service\nstart -- sssd.service\nis-active -- sssd.service\n",
            "slurmd must not be started after sssd failed"
        );
        // All succeed: ready, in order.
        std::fs::remove_file(&log).unwrap();
        let (fake, _) = fake_systemctl(d.path(), "echo active\n");
        pending(&p, &["munge", "sssd", "slurmd"], 5);
        let out = start_services(&p, fake.to_str().unwrap());
        assert_eq!(out.phase, "ready", "{out:?}");
        let n = out.native.unwrap();
        let names: Vec<&str> = n.started.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(names, ["munge.service", "sssd.service", "slurmd.service"]);
        assert!(n.milestones.contains_key("services_up"));
    }

    #[test]
    fn the_ssh_service_is_found_under_the_name_the_node_has() {
        // node.toml says "ssh" (Debian's name); an EL node has sshd.service.
        for (tree, want) in [
            (crate::nodeos::tests::el_tree as fn(&Path), "sshd.service"),
            (crate::nodeos::tests::debian_tree, "ssh.service"),
        ] {
            let d = tempfile::tempdir().unwrap();
            let p = paths(d.path());
            tree(&p.root);
            let (fake, log) = fake_systemctl(d.path(), "echo active\n");
            pending(&p, &["munge", "ssh"], 5);
            let out = start_services(&p, fake.to_str().unwrap());
            assert_eq!(out.phase, "ready", "{out:?}");
            let calls = std::fs::read_to_string(&log).unwrap();
            assert!(
                calls.ends_with(&format!("start -- {want}\nis-active -- {want}\n")),
                "{calls}"
            );
            let n = out.native.unwrap();
            assert_eq!(n.started.last().unwrap().0, want);
        }
    }
}
