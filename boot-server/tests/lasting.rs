//! The nodes' status and boot history under `--state DIR`
//! (`DIR/nodes.redb`) against the real bootd binary: a restart between a
//! node's phases keeps its history, `kill -9` in the middle of a stream of
//! reports loses none that were answered, a corrupt file is moved aside,
//! and a second bootd on the same state is refused.
mod common;
use common::{http, sample, Bootd};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

const MAC: &str = "52:54:00:12:34:56";

struct Fx {
    dir: tempfile::TempDir,
    www: PathBuf,
    state: PathBuf,
    token: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        let state = dir.path().join("state");
        let token = common::admin_token_file(dir.path());
        Fx {
            dir,
            www,
            state,
            token,
        }
    }

    fn bootd(&self) -> Bootd {
        let args: Vec<&OsStr> = vec![
            "--root".as_ref(),
            self.www.as_os_str(),
            "--state".as_ref(),
            self.state.as_os_str(),
            "--admin-token".as_ref(),
            self.token.as_os_str(),
        ];
        Bootd::start(self.dir.path(), &args)
    }
}

fn report(b: &Bootd, host: &str, mac: Option<&str>, phase: &str) -> u16 {
    let mut v = serde_json::json!({"hostname": host, "phase": phase});
    if let Some(m) = mac {
        v["mac"] = m.into();
    }
    http(b.port, "POST", "/status", &[], v.to_string().as_bytes()).0
}

fn nodes(b: &Bootd) -> Vec<Value> {
    let auth = format!("Authorization: Bearer {}", common::ADMIN);
    let (status, head, body) = http(b.port, "GET", "/nodes?limit=1000", &[&auth], b"");
    assert_eq!(status, 200, "{head}");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    doc["nodes"].as_array().unwrap().clone()
}

fn phases(n: &Value) -> Vec<String> {
    n["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap().to_string())
        .collect()
}

fn times(n: &Value) -> Vec<String> {
    n["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn history_survives_a_restart_between_phases() {
    let fx = Fx::new();
    let mut b = fx.bootd();
    assert_eq!(report(&b, "cn1", Some(MAC), "fetching"), 204);
    assert_eq!(report(&b, "cn1", Some(MAC), "booted"), 204);
    assert_eq!(report(&b, "cn2", None, "failed"), 204);
    let before = nodes(&b);
    b.kill();
    assert!(fx.state.join("nodes.redb").is_file());

    let b = fx.bootd();
    let log = b.log_with("nodes' status and history from");
    assert!(
        log.contains(&format!(
            "2 nodes' status and history from {}",
            fx.state.join("nodes.redb").display()
        )),
        "{log}"
    );
    assert_eq!(nodes(&b), before, "the table as it was before the restart");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(report(&b, "cn1", Some(MAC), "provisioning"), 204);
    assert_eq!(report(&b, "cn1", Some(MAC), "ready"), 204);
    let v = nodes(&b);
    let cn1 = v.iter().find(|n| n["hostname"] == "cn1").unwrap();
    assert_eq!(
        phases(cn1),
        ["fetching", "booted", "provisioning", "ready"],
        "{cn1}"
    );
    let t = times(cn1);
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "in order: {t:?}");
    assert!(
        t[1] < t[2],
        "the restart lies between booted and provisioning"
    );
    let b0 = before.iter().find(|n| n["hostname"] == "cn1").unwrap();
    assert_eq!(cn1["first_seen"], b0["first_seen"]);
    assert_eq!(cn1["boot_started"], b0["boot_started"]);
    assert_eq!(cn1["mac"], MAC);
    // The boot spans the restart: its duration runs from the fetch before.
    assert!(cn1["boot_seconds"].as_f64().unwrap() > 0.0, "{cn1}");
    let (_, _, m) = http(b.port, "GET", "/metrics", &[], b"");
    let m = String::from_utf8(m).unwrap();
    assert_eq!(
        sample(&m, "bootd_boot_duration_seconds_count"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, r#"bootd_nodes{phase="failed"}"#), Some(1.0));
    // The page shows the history too.
    let auth = format!("Authorization: Bearer {}", common::ADMIN);
    let (_, _, page) = http(b.port, "GET", "/", &[&auth], b"");
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("fetching → booted → provisioning → ready"),
        "{page}"
    );
}

#[test]
fn kill_9_loses_no_answered_report() {
    let fx = Fx::new();
    let mut b = fx.bootd();
    let port = b.port;
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Four posters, each for its own hosts, count the reports answered 204.
    let acked: Vec<Vec<usize>> = std::thread::scope(|s| {
        let posters: Vec<_> = (0..4)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut acked = vec![0usize; 5];
                    let phases = ["fetching", "booted", "provisioning", "ready"];
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 300 {
                        let h = i % 5;
                        let body = serde_json::json!({
                            "hostname": format!("n{t}-{h}"),
                            "phase": phases[(i / 5) % 4],
                        });
                        match try_post(port, &body.to_string()) {
                            Some(204) => acked[h] += 1,
                            // bootd killed under the request.
                            _ => break,
                        }
                        i += 1;
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        b.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        posters.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let total: usize = acked.iter().flatten().sum();
    assert!(total > 20, "only {total} reports before the kill");

    let b = fx.bootd();
    let v = nodes(&b);
    for (t, hosts) in acked.iter().enumerate() {
        for (h, &n) in hosts.iter().enumerate() {
            let name = format!("n{t}-{h}");
            let node = v.iter().find(|x| x["hostname"] == name.as_str());
            let kept = node.map_or(0, |x| phases(x).len());
            // Every answered report is there; the one in flight at the
            // kill may be too.
            assert!(
                kept == n || kept == n + 1,
                "{name}: {n} reports answered, {kept} kept"
            );
            if let Some(x) = node {
                let t = times(x);
                assert!(t.windows(2).all(|w| w[0] <= w[1]), "{name}: {t:?}");
            }
        }
    }
    eprintln!("{total} reports answered before kill -9, all kept");
}

#[test]
fn a_corrupt_state_file_is_moved_aside() {
    let fx = Fx::new();
    std::fs::create_dir(&fx.state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fx.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = fx.state.join("nodes.redb");
    std::fs::write(&file, b"this is not a redb file\n".repeat(100)).unwrap();
    let b = fx.bootd();
    let log = b.log_with("starting with no node history");
    let aside: Vec<PathBuf> = std::fs::read_dir(&fx.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| name(p).starts_with("nodes.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{log}");
    let want = format!(
        "{}: unreadable node state (I/O error: invalid data): moved to {}; starting with no node history",
        file.display(),
        aside[0].display()
    );
    assert!(log.contains(&want), "{want}\nnot in:\n{log}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        b"this is not a redb file\n".repeat(100)
    );
    // bootd serves, and keeps what it is told from now on.
    assert_eq!(report(&b, "cn1", None, "booted"), 204);
    assert_eq!(nodes(&b).len(), 1);
}

/// `POST /status`: the status, or `None` when the connection broke.
fn try_post(port: u16, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let req = format!(
        "POST /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).ok()?;
    let mut got = Vec::new();
    c.read_to_end(&mut got).ok()?;
    std::str::from_utf8(got.get(9..12)?).ok()?.parse().ok()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_second_bootd_on_the_same_state_is_refused() {
    let fx = Fx::new();
    let _b = fx.bootd();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&fx.www)
        .arg("--state")
        .arg(&fx.state)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "{}: in use by another process (another bootd with the same --state?)",
        fx.state.join("nodes.redb").display()
    );
    assert!(err.contains(&want), "{err}");
}
