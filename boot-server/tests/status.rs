//! Node status against the real bootd binary: `POST /status`, `GET /nodes`,
//! the page at `/` (and its screenshot in headless Chromium), with file
//! serving still working beside them.
mod common;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC1: &str = "52:54:00:12:34:56";

fn data() -> Vec<u8> {
    (0..50_000u32).map(|i| (i % 251) as u8).collect()
}

/// A running `bootd serve --root www` on 127.0.0.1, killed on drop.
struct Srv {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    /// www holds `live.squashfs` and an `index.html` (which `/` must not
    /// serve: the page replaces it).
    fn start() -> Srv {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("live.squashfs"), data()).unwrap();
        std::fs::write(www.join("index.html"), "<p>the www index</p>\n").unwrap();
        let (pf, log) = (dir.path().join("port"), dir.path().join("bootd.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(&www)
            .arg("--port-file")
            .arg(&pf)
            .arg("--admin-token")
            .arg(common::admin_token_file(dir.path()))
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = common::wait_for_port(&pf);
        Srv {
            child,
            port,
            log,
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The access log once it holds `want` (lines are written after the
    /// response).
    fn log_with(&self, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap();
            if log.contains(want) || t0.elapsed() > Duration::from_secs(5) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send raw bytes on a new connection, read until the server closes,
    /// and split the responses (to HEAD requests if `head`).
    fn raw(&self, req: &[u8], head: bool) -> Vec<Resp> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        Resp::split_all(&got, head)
    }

    /// One request (with `Connection: close`) and its response; as the
    /// admin when it asks for the fleet's data (`/nodes`, `/`).
    fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        let p = path.split('?').next().unwrap_or(path);
        if p == "/nodes" || p == "/" {
            req.push_str(&format!("Authorization: Bearer {}\r\n", common::ADMIN));
        }
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let mut req = req.into_bytes();
        req.extend_from_slice(body);
        let mut r = self.raw(&req, method == "HEAD");
        assert_eq!(r.len(), 1, "one response to {method} {path}");
        r.remove(0)
    }

    /// `POST /status` with a JSON body and its Content-Length.
    fn post(&self, json: &str) -> Resp {
        let len = format!("Content-Length: {}", json.len());
        let hs = ["Content-Type: application/json", len.as_str()];
        self.request("POST", "/status", &hs, json.as_bytes())
    }

    /// Post and insist on 204.
    fn report(&self, json: &str) {
        let r = self.post(json);
        assert_eq!(r.status, 204, "{json}: {}", r.text());
        assert!(r.body.is_empty());
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    fn nodes(&self) -> Vec<Value> {
        let r = self.get("/nodes");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc: Value = serde_json::from_slice(&r.body).unwrap();
        doc["nodes"].as_array().unwrap().clone()
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    /// Responses one after another, bodies sized by Content-Length (none
    /// if `head`).
    fn split_all(mut raw: &[u8], head_only: bool) -> Vec<Resp> {
        let mut out = Vec::new();
        while !raw.is_empty() {
            let end = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            let mut r = Resp {
                status,
                head,
                body: Vec::new(),
            };
            let len = match r.header("content-length") {
                Some(l) if !head_only => l.parse().unwrap(),
                _ => 0,
            };
            r.body = raw[end + 4..end + 4 + len].to_vec();
            raw = &raw[end + 4 + len..];
            out.push(r);
        }
        out
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn status_json(host: &str, mac: Option<&str>, phase: &str, message: Option<&str>) -> String {
    let mut v = serde_json::json!({"hostname": host, "phase": phase});
    if let Some(m) = mac {
        v["mac"] = m.into();
    }
    if let Some(m) = message {
        v["message"] = m.into();
    }
    v.to_string()
}

#[test]
fn a_boot_from_fetching_to_ready() {
    let s = Srv::start();
    let image = "http://10.0.2.2:8080/live.squashfs";
    s.report(&format!(
        r#"{{"hostname":"cn1","mac":"{MAC1}","phase":"fetching","image":"{image}"}}"#
    ));
    for phase in ["booted", "provisioning", "ready"] {
        s.report(&status_json("cn1", Some(MAC1), phase, None));
    }
    let nodes = s.nodes();
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n["hostname"], "cn1");
    assert_eq!(n["mac"], MAC1);
    assert_eq!(n["phase"], "ready");
    assert_eq!(n["image"], image);
    assert_eq!(n["message"], Value::Null);
    let secs = n["boot_seconds"].as_f64().expect("boot_seconds once ready");
    assert!((0.0..10.0).contains(&secs), "{secs}");
    let phases: Vec<&str> = n["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["fetching", "booted", "provisioning", "ready"]);
    // RFC 3339 UTC, in order.
    let t = |k: &str| n[k].as_str().unwrap().to_string();
    for k in ["first_seen", "last_seen", "boot_started"] {
        let v = t(k);
        assert!(
            v.len() == 24 && v.ends_with('Z') && v.as_bytes()[10] == b'T',
            "{k}: {v}"
        );
    }
    assert_eq!(t("first_seen"), t("boot_started"));
    assert!(t("first_seen") <= t("last_seen"));
    assert_eq!(n["history"][3]["at"].as_str().unwrap(), t("last_seen"));

    // HEAD /nodes: the same head, no body.
    let get = s.get("/nodes");
    let head = s.request("HEAD", "/nodes", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert_eq!(get.header("cache-control"), Some("no-store"));

    // One line per status in the access log, besides the request lines.
    let log = s.log_with("node cn1 ready");
    for phase in ["fetching", "booted", "provisioning", "ready"] {
        assert!(
            log.contains(&format!("node cn1 {phase} mac={MAC1}")),
            "{log}"
        );
    }
    assert!(log.contains(&format!("image={image}")), "{log}");
    assert_eq!(log.matches("status=204").count(), 4, "{log}");
}

#[test]
fn curl_posts_a_status() {
    let s = Srv::start();
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "--data-binary",
            r#"{"hostname":"cn7","phase":"failed","message":"disk"}"#,
        ])
        .arg(s.url("/status"))
        .output()
        .expect("running curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    let n = &s.nodes()[0];
    assert_eq!(
        (&n["hostname"], &n["phase"]),
        (&"cn7".into(), &"failed".into())
    );
    assert_eq!(n["message"], "disk");
    assert_eq!(n["mac"], Value::Null, "keyed by hostname");
    assert_eq!(n["boot_seconds"], Value::Null);
}

#[test]
fn refusals_and_their_messages() {
    let s = Srv::start();
    let long = |n: usize| "x".repeat(n);
    let rows: Vec<(String, &str)> = vec![
        ("{\"hostname\": ".into(), "body: not JSON: "),
        ("\"cn1\"".into(), "body: not a JSON object"),
        (r#"{"phase":"ready"}"#.into(), "hostname: missing"),
        (
            r#"{"hostname":"","phase":"ready"}"#.into(),
            "hostname: empty",
        ),
        (
            r#"{"hostname":["cn1"],"phase":"ready"}"#.into(),
            "hostname: not a string",
        ),
        (
            status_json(&long(65), None, "ready", None),
            "hostname: longer than 64 characters",
        ),
        (
            status_json("cn1;rm", None, "ready", None),
            "hostname: only letters, digits, '.' and '-' are allowed",
        ),
        (r#"{"hostname":"cn1"}"#.into(), "phase: missing"),
        (
            status_json("cn1", None, "booting", None),
            r#"phase: unknown phase "booting" (fetching, booted, provisioning, ready, failed)"#,
        ),
        (
            status_json("cn1", Some("52:54:00:12:34"), "ready", None),
            r#"mac: "52:54:00:12:34" is not a MAC address"#,
        ),
        (
            status_json("cn1", None, "failed", Some(&long(4097))),
            "message: longer than 4096 characters",
        ),
        (
            format!(
                r#"{{"hostname":"cn1","phase":"fetching","image":"{}"}}"#,
                long(2049)
            ),
            "image: longer than 2048 characters",
        ),
    ];
    for (body, want) in &rows {
        let r = s.post(body);
        assert_eq!(r.status, 400, "{body:.80}");
        let text = r.text();
        assert!(text.starts_with(want), "{body:.80}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }

    // Length rules.
    let r = s.request(
        "POST",
        "/status",
        &[],
        br#"{"hostname":"cn1","phase":"ready"}"#,
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (411, "Content-Length required\n")
    );
    let chunked = b"22\r\n{\"hostname\":\"cn1\",\"phase\":\"ready\"}\r\n0\r\n\r\n";
    let r = s.request("POST", "/status", &["Transfer-Encoding: chunked"], chunked);
    assert_eq!(r.status, 411);
    assert!(
        r.text()
            .starts_with("chunked request bodies are not accepted"),
        "{}",
        r.text()
    );
    let r = s.request("POST", "/status", &["Content-Length: 1e3"], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "bad Content-Length \"1e3\"\n")
    );
    // 16 KiB is the limit: exactly that is taken, a byte more is 413.
    let padded = |n: usize| {
        let j = status_json("cn1", None, "booted", None);
        format!("{j}{}", " ".repeat(n - j.len()))
    };
    let r = s.post(&padded(16 * 1024 + 1));
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.text(), "body of 16385 bytes is larger than 16384 bytes\n");
    assert_eq!(r.header("connection"), Some("close"));
    // curl (which may wait for 100 Continue) gets the 413 too.
    let big = s.dir.path().join("big.json");
    std::fs::write(&big, padded(20_000)).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            "--data-binary",
        ])
        .arg(format!("@{}", big.display()))
        .arg(s.url("/status"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    // Nothing above was recorded; the limit itself is accepted.
    assert!(s.nodes().is_empty());
    s.report(&padded(16 * 1024));
    assert_eq!(s.nodes().len(), 1);

    // Other methods.
    for m in ["GET", "HEAD", "PUT", "DELETE"] {
        let r = s.request(m, "/status", &[], b"");
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("POST"), "{m}");
    }
    let r = s.request("POST", "/nodes", &["Content-Length: 0"], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = s.request("POST", "/", &["Content-Length: 0"], b"");
    assert_eq!(r.status, 405);

    // Each refusal is in the log with its reason.
    let log = s.log_with("status refused: body of 20000 bytes");
    assert!(log.contains("status refused: hostname: missing"), "{log}");
    assert!(log.contains("status refused: body of 20000 bytes"), "{log}");
}

#[test]
fn nodes_sorted_with_macs_normalised() {
    let s = Srv::start();
    s.report(&status_json(
        "cn2",
        Some("52-54-00-AB-CD-02"),
        "fetching",
        None,
    ));
    s.report(&status_json("cn10", None, "booted", None));
    s.report(&status_json(
        "cn1",
        Some("52:54:00:AB:cd:01"),
        "booted",
        None,
    ));
    // cn2 again, MAC spelled another way: the same node.
    s.report(&status_json(
        "cn2",
        Some("52:54:00:ab:cd:02"),
        "booted",
        None,
    ));
    let nodes = s.nodes();
    let names: Vec<&str> = nodes
        .iter()
        .map(|n| n["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cn1", "cn10", "cn2"]);
    assert_eq!(nodes[0]["mac"], "52:54:00:ab:cd:01");
    assert_eq!(nodes[1]["mac"], Value::Null);
    assert_eq!(nodes[2]["mac"], "52:54:00:ab:cd:02");
    assert_eq!(nodes[2]["history"].as_array().unwrap().len(), 2);
    assert_eq!(nodes[2]["phase"], "booted");
}

#[test]
fn the_page_escapes_what_nodes_send() {
    let s = Srv::start();
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.contains("no node has reported yet"), "{page}");
    assert!(
        page.contains(r#"<meta http-equiv="refresh" content="5">"#),
        "{page}"
    );
    assert!(!page.contains("the www index"), "{page}");

    let msg = r#"<script>alert("pwned")</script> & 'x'"#;
    s.report(&status_json("cn1", Some(MAC1), "failed", Some(msg)));
    s.report(&status_json("cn2", None, "provisioning", None));
    let page = s.get("/").text();
    assert!(
        page.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &#39;x&#39;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains(r#"<span class="phase failed">failed</span>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<span class="phase busy">provisioning</span>"#),
        "{page}"
    );
    assert!(
        page.contains(MAC1) && page.find("cn1") < page.find("cn2"),
        "{page}"
    );
    // The query does not matter; HEAD has no body; other paths are files.
    assert_eq!(s.get("/?x=1").text().len(), page.len());
    let head = s.request("HEAD", "/", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    let r = s.get("/index.html");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "<p>the www index</p>\n")
    );
}

#[test]
fn files_and_ranges_still_served() {
    let s = Srv::start();
    s.report(&status_json("cn1", Some(MAC1), "fetching", None));
    let d = data();
    let r = s.get("/live.squashfs");
    assert_eq!((r.status, r.body.as_slice()), (200, d.as_slice()));
    let r = s.request("GET", "/live.squashfs", &["Range: bytes=1000-1999"], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/50000"));
    assert_eq!(r.body, &d[1000..2000]);
    // curl's resume, as the node's fetch does it.
    let out = s.dir.path().join("dl");
    std::fs::write(&out, &d[..20_000]).unwrap();
    let code = Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "-C", "-", "-o"])
        .arg(&out)
        .arg(s.url("/live.squashfs"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(String::from_utf8_lossy(&code), "206");
    assert_eq!(std::fs::read(&out).unwrap(), d);

    // The status body is read: the connection stays usable for the next
    // (pipelined) request, a ranged GET.
    let json = status_json("cn1", Some(MAC1), "booted", None);
    let req = format!(
        "POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{json}\
         GET /live.squashfs HTTP/1.1\r\nHost: t\r\nRange: bytes=-10\r\nConnection: close\r\n\r\n",
        json.len()
    );
    let rs = s.raw(req.as_bytes(), false);
    let got: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(got, [204, 206]);
    assert_eq!(rs[1].body, &d[49_990..]);
    assert_eq!(s.nodes()[0]["phase"], "booted");
}

/// Where the workspace keeps build output (`target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The page in headless Chromium with a ready and a failed node; the
/// screenshot is kept as `target/bootd-status.png`.
#[test]
fn page_screenshot_in_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        eprintln!("SKIP: chromium not installed (cargo xtask test installs it)");
        return;
    }
    let s = Srv::start();
    let image = r#","image":"http://10.0.2.2:8080/live.squashfs""#;
    for phase in ["fetching", "booted", "provisioning", "ready"] {
        s.report(&format!(
            r#"{{"hostname":"cn1","mac":"{MAC1}","phase":"{phase}"{image}}}"#
        ));
    }
    s.report(&format!(
        r#"{{"hostname":"cn2","mac":"52:54:00:12:34:57","phase":"fetching"{image}}}"#
    ));
    s.report(&status_json(
        "cn2",
        Some("52:54:00:12:34:57"),
        "failed",
        Some("postscript http://10.0.2.2:8080/repo/postscript.sh exited with status 3"),
    ));

    let tmp = s.dir.path();
    let png = tmp.join("page.png");
    let profile = tmp.join("chromium-profile");
    let out = std::fs::File::create(tmp.join("chromium.log")).unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1000,500")
        .arg(format!("--screenshot={}", png.display()))
        // The admin token as the password of the URL (HTTP Basic).
        .arg(format!(
            "http://admin:{}@127.0.0.1:{}/",
            common::ADMIN,
            s.port
        ))
        // Keep Chromium's caches and crash reports out of $HOME.
        .env("HOME", tmp)
        .env("XDG_CONFIG_HOME", tmp)
        .env("XDG_CACHE_HOME", tmp)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting chromium");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(tmp.join("chromium.log")).unwrap_or_default();
    assert!(
        status.is_some(),
        "chromium still running after 60 s:\n{log}"
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{log}"));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let dim = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1000, 500), "width, height");
    assert!(bytes.len() > 8_000, "{} bytes: a blank page?", bytes.len());
    // Chromium read the page from bootd.
    let access = s.log_with("GET / ");
    assert!(
        access
            .lines()
            .any(|l| l.contains("GET / ") && l.contains("status=200")),
        "{access}"
    );
    let kept = target_dir().join("bootd-status.png");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::copy(&png, &kept).unwrap();
    eprintln!("screenshot: {}", kept.display());
}
