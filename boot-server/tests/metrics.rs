//! `GET /metrics` against the real bootd binary: HTTP, TFTP and status
//! traffic move the counters, the exposition passes Debian's `promtool
//! check metrics` (package `prometheus`), and odd requests add no series.
mod common;
use common::{http, sample, Bootd};
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const MAC: &str = "52:54:00:12:34:56";

const INVENTORY: &str = r#"
[[image]]
name = "live"
kernel = "vmlinuz"
initrd = ["initrd.img"]
cmdline = 'console=ttyS0 grendel.hostname={{ $.host.Name }}'

[[host]]
name = "cn1"
image = "live"
[[host.interfaces]]
mac = "52:54:00:12:34:56"
"#;

/// `promtool check metrics` on `text`: its verdict (stdout and stderr)
/// when it refuses the exposition.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package: apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

fn scrape(port: u16) -> String {
    let (status, head, body) = http(port, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    String::from_utf8(body).unwrap()
}

/// DIR/{www/live.squashfs, tftp/undionly.kpxe, inventory.toml}; bootd with
/// TFTP on a free port of 127.0.0.1 (read from its log).
fn start(dir: &Path) -> (Bootd, u16) {
    let (www, tftp) = (dir.join("www"), dir.join("tftp"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(www.join("live.squashfs"), vec![7u8; 50_000]).unwrap();
    std::fs::write(tftp.join("undionly.kpxe"), vec![9u8; 3000]).unwrap();
    let inv = dir.join("inventory.toml");
    std::fs::write(&inv, INVENTORY).unwrap();
    let args: Vec<&OsStr> = vec![
        "--root".as_ref(),
        www.as_os_str(),
        "--inventory".as_ref(),
        inv.as_os_str(),
        "--tftp-root".as_ref(),
        tftp.as_os_str(),
        "--tftp-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let b = Bootd::start(dir, &args);
    let log = b.log_with(" read-only on 127.0.0.1:");
    let tftp_port = log
        .lines()
        .find_map(|l| l.split(" read-only on 127.0.0.1:").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TFTP address in the log:\n{log}"));
    (b, tftp_port)
}

fn curl_tftp(port: u16, file: &str, out: &Path) -> bool {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o"])
        .arg(out)
        .arg(format!("tftp://127.0.0.1:{port}/{file}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("curl")
        .success()
}

#[test]
fn counters_move_and_promtool_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (b, tftp) = start(dir.path());
    let first = scrape(b.port);
    promtool(&first).unwrap_or_else(|e| panic!("promtool refused:\n{e}\n{first}"));
    assert_eq!(
        sample(&first, r#"bootd_node_reports_total{phase="fetching"}"#),
        Some(0.0)
    );
    assert!(sample(&first, "process_start_time_seconds").unwrap() > 1.7e9);

    let p = b.port;
    assert_eq!(http(p, "GET", "/live.squashfs", &[], b"").0, 200);
    assert_eq!(
        http(p, "GET", "/live.squashfs", &["Range: bytes=0-99"], b"").0,
        206
    );
    assert_eq!(http(p, "GET", "/nothere", &[], b"").0, 404);
    assert_eq!(
        http(p, "GET", &format!("/boot/ipxe?mac={MAC}"), &[], b"").0,
        200
    );
    assert_eq!(
        http(p, "GET", "/boot/ipxe?mac=52:54:00:00:00:99", &[], b"").0,
        404
    );
    assert_eq!(http(p, "GET", "/nodes", &[], b"").0, 403, "no admin token");
    for phase in ["fetching", "booted", "ready"] {
        let body = format!(r#"{{"hostname":"cn1","mac":"{MAC}","phase":"{phase}"}}"#);
        let r = http(p, "POST", "/status", &[], body.as_bytes());
        assert_eq!(r.0, 204, "{}", String::from_utf8_lossy(&r.2));
    }
    assert_eq!(http(p, "BREW", "/pot", &[], b"").0, 405);
    // A head that does not parse.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        c.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert!(got.starts_with(b"HTTP/1.1 400"), "{got:?}");
    }
    let out = dir.path().join("got.kpxe");
    assert!(curl_tftp(tftp, "undionly.kpxe", &out));
    assert_eq!(std::fs::read(&out).unwrap(), vec![9u8; 3000]);
    assert!(!curl_tftp(tftp, "nothere.efi", &out));

    // The TFTP transfer's end is counted when the server drops it, just
    // after the last ACK: wait for its log line.
    b.log_with("tftp: sent undionly.kpxe");
    let text = scrape(p);
    promtool(&text).unwrap_or_else(|e| panic!("promtool refused:\n{e}\n{text}"));
    let at = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in:\n{text}"));
    for (series, want) in [
        (
            r#"bootd_http_requests_total{route="files",code="200"}"#,
            1.0,
        ),
        (
            r#"bootd_http_response_bytes_total{route="files",code="200"}"#,
            50_000.0,
        ),
        (
            r#"bootd_http_requests_total{route="files",code="206"}"#,
            1.0,
        ),
        (
            r#"bootd_http_response_bytes_total{route="files",code="206"}"#,
            100.0,
        ),
        (
            r#"bootd_http_requests_total{route="files",code="404"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="/boot/ipxe",code="200"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="/boot/ipxe",code="404"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="/nodes",code="403"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="/status",code="204"}"#,
            3.0,
        ),
        (
            r#"bootd_http_requests_total{route="other",code="405"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="other",code="400"}"#,
            1.0,
        ),
        (
            r#"bootd_http_requests_total{route="/metrics",code="200"}"#,
            1.0,
        ),
        ("bootd_http_transfers_in_flight", 0.0),
        (r#"bootd_tftp_transfers_total{result="completed"}"#, 1.0),
        (
            r#"bootd_tftp_requests_refused_total{reason="not_found"}"#,
            1.0,
        ),
        ("bootd_tftp_sent_bytes_total", 3000.0),
        ("bootd_tftp_transfers_in_flight", 0.0),
        (r#"bootd_node_reports_total{phase="fetching"}"#, 1.0),
        (r#"bootd_node_reports_total{phase="booted"}"#, 1.0),
        (r#"bootd_node_reports_total{phase="ready"}"#, 1.0),
        (r#"bootd_nodes{phase="ready"}"#, 1.0),
        ("bootd_boot_duration_seconds_count", 1.0),
        (r#"bootd_boot_duration_seconds_bucket{le="15"}"#, 1.0),
    ] {
        assert_eq!(at(series), want, "{series} in:\n{text}");
    }
    assert!(at("bootd_tftp_transfers_started_total") >= 1.0);
    assert!(
        at("bootd_http_connections_open") >= 1.0,
        "this scrape's own"
    );
    // Counts only: no host name, MAC or path of a request.
    for leak in ["cn1", MAC, "nothere", "live.squashfs", "/pot"] {
        assert!(!text.contains(leak), "{leak} in:\n{text}");
    }
}

#[test]
fn odd_requests_add_no_series() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = start(dir.path());
    let p = b.port;
    http(p, "GET", "/a", &[], b"");
    let before = scrape(p).lines().count();
    for i in 0..40 {
        let path = format!("/x{i}/{}", "y".repeat(i));
        let method = ["GET", "PUT", "DELETE", "X-ODD"][i % 4];
        http(p, method, &path, &[], b"");
    }
    let text = scrape(p);
    promtool(&text).unwrap_or_else(|e| panic!("promtool refused:\n{e}\n{text}"));
    // New series: (other, 405) twice (requests and bytes) and /metrics 200.
    let added = text.lines().count() - before;
    assert!(added <= 4, "{added} new lines:\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"bootd_http_requests_total{route="files",code="404"}"#
        ),
        Some(11.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"bootd_http_requests_total{route="other",code="405"}"#
        ),
        Some(30.0)
    );
    assert!(!text.contains("/x1"));
}

/// promtool itself refuses a broken exposition: the check above can fail.
#[test]
fn promtool_refuses_a_bad_exposition() {
    let bad = "# TYPE bootd_x_total counter\nbootd_x_total{a=\"1\" 3\n";
    assert!(promtool(bad).is_err());
}
