//! bootd as a service: the real binary under a test-made `$NOTIFY_SOCKET`
//! (READY, RELOADING, STOPPING), SIGHUP reloads, a graceful SIGTERM stop,
//! `--config` files, HTTPS (curl and openssl as the clients) with its
//! certificate reloaded, and the shipped unit checked by systemd-analyze.
mod common;
use common::Srv;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAC: &str = "52:54:00:12:34:56";

impl Srv {
    /// `bootd serve ARGS` with `NOTIFY_SOCKET=notify` (when given).
    fn start(dir: &Path, args: &[&str], notify: Option<&Path>) -> Srv {
        let log = dir.join(format!("bootd-{}.log", std::process::id()));
        let port_file = dir.join("http.port");
        let _ = std::fs::remove_file(&port_file);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        match notify {
            Some(n) => cmd.env("NOTIFY_SOCKET", n),
            None => cmd.env_remove("NOTIFY_SOCKET"),
        };
        let child = cmd.spawn().unwrap();
        let port = common::wait_for_port(&port_file);
        Srv { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig}");
    }

    /// Wait (at most 15 s) for bootd to exit; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "bootd did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_log(&self, what: &str) {
        let t = Instant::now();
        while !self.log().contains(what) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no {what:?} in bootd's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The next datagram on the notify socket (at most 10 s away).
fn next_message(rx: &UnixDatagram) -> String {
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = rx.recv(&mut buf).expect("a message from bootd");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// `GET path` over plain HTTP/1.1 with `Connection: close`: status and body.
fn get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

fn inventory(mac: &str) -> String {
    format!(
        "[[image]]\nname = \"img\"\nkernel = \"vmlinuz\"\ninitrd = [\"initrd.img\"]\n\
         cmdline = \"console=ttyS0\"\n\n[[host]]\nname = \"cn1\"\nimage = \"img\"\n\
         [[host.interfaces]]\nmac = \"{mac}\"\n"
    )
}

fn data(n: usize) -> Vec<u8> {
    (0..n as u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn notify_reload_and_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let big = data(600_000);
    std::fs::write(www.join("live.squashfs"), &big).unwrap();
    // The inventory knows another MAC first; the new one has the same
    // size and mtime, so only SIGHUP (not the mtime poll) can load it.
    let inv = dir.path().join("inventory.toml");
    std::fs::write(&inv, inventory("52:54:00:00:00:01")).unwrap();
    let mtime = std::fs::metadata(&inv).unwrap().modified().unwrap();
    let sock = dir.path().join("notify");
    let rx = UnixDatagram::bind(&sock).unwrap();
    let mut srv = Srv::start(
        dir.path(),
        &[
            "--root",
            www.to_str().unwrap(),
            "--inventory",
            inv.to_str().unwrap(),
            // 600 kB at 300 kB/s: a download of 2 s.
            "--rate-limit",
            "300000",
            "--stop-timeout",
            "10s",
        ],
        Some(&sock),
    );
    let ready = next_message(&rx);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=serving http://127.0.0.1:{}", srv.port)),
        "{ready:?}"
    );
    let ipxe = format!("/boot/ipxe?mac={MAC}");
    assert_eq!(get(srv.port, &ipxe).0, 404);

    // Reload: RELOADING with the monotonic clock, then READY; the host is known.
    std::fs::write(&inv, inventory(MAC)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&inv)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(srv.port, &ipxe).0, 404, "the poll saw no change");
    srv.signal("HUP");
    let reloading = next_message(&rx);
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines[0], "RELOADING=1", "{reloading:?}");
    let usec: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec > 0);
    let ready = next_message(&rx);
    assert_eq!(ready, "READY=1\nSTATUS=reloaded");
    let (status, script) = get(srv.port, &ipxe);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&script));
    assert!(String::from_utf8_lossy(&script).starts_with("#!ipxe"));

    // A bad inventory on SIGHUP: logged, the previous one kept, READY says so.
    std::fs::write(&inv, "[[host]]\nname = 5\n").unwrap();
    srv.signal("HUP");
    assert!(next_message(&rx).starts_with("RELOADING=1\n"));
    assert_eq!(
        next_message(&rx),
        "READY=1\nSTATUS=reload incomplete: previous files kept (see the log)"
    );
    srv.wait_log("inventory not reloaded, keeping the previous one");
    assert_eq!(get(srv.port, &ipxe).0, 200);

    // A slow download in flight, and an idle keep-alive connection.
    let port = srv.port;
    let download = std::thread::spawn(move || {
        let t = Instant::now();
        (get(port, "/live.squashfs"), t.elapsed())
    });
    let mut idle = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    srv.signal("TERM");
    let stopping = next_message(&rx);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    // The idle connection is closed at once, new ones are refused...
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(idle.read(&mut b).unwrap_or(0), 0, "idle connection closed");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    srv.wait_log("transfers in flight get 10 s to finish");
    assert!(
        TcpStream::connect(("127.0.0.1", srv.port)).is_err(),
        "a new connection after SIGTERM"
    );
    // ...while the download in flight completes whole.
    let ((status, body), took) = download.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the body differs");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    let st = srv.wait_exit();
    assert!(st.success(), "{st:?}\n{}", srv.log());
    let log = srv.log();
    assert!(
        log.lines().any(|l| l.trim_end().ends_with("INFO stopped")),
        "{log}"
    );
}

#[test]
fn a_stop_does_not_wait_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), data(400_000)).unwrap();
    let mut srv = Srv::start(
        dir.path(),
        &[
            "--root",
            dir.path().to_str().unwrap(),
            "--rate-limit",
            "20000",
            "--stop-timeout",
            "1",
        ],
        None,
    );
    let port = srv.port;
    let _slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = write!(s, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    srv.signal("TERM");
    let st = srv.wait_exit();
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(
        srv.log()
            .contains("stopped with 1 connections still open after 1 s"),
        "{}",
        srv.log()
    );
}

#[test]
fn config_file_with_flags_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("hello"), "hi\n").unwrap();
    let cfg = dir.path().join("bootd.toml");
    // The file's listen address is taken by the flag's.
    std::fs::write(
        &cfg,
        format!(
            "root = \"{}\"\nlisten = \"127.0.0.1:1\"\nhead_timeout = \"5s\"\n",
            www.display()
        ),
    )
    .unwrap();
    let srv = Srv::start(dir.path(), &["--config", cfg.to_str().unwrap()], None);
    assert_eq!(get(srv.port, "/hello"), (200, b"hi\n".to_vec()));
    drop(srv);

    // Errors an operator reads: file, line, column, key.
    let refused = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).trim().to_string()
    };
    let c = cfg.display();
    let e = refused("root = \"/srv\"\n\nmax_conection = 5\n");
    assert!(
        e.starts_with(&format!(
            "bootd: error: {c}:3:1: max_conection: unknown field `max_conection`, expected one of `root`,"
        )),
        "{e}"
    );
    assert_eq!(
        refused("root = \"/srv\"\nrate_limit = \"fast\"\n"),
        format!("bootd: error: {c}:2:14: rate_limit: invalid type: string \"fast\", expected i64")
    );
    assert_eq!(
        refused("root = \"/srv\"\nstop_timeout = \"10 seconds\"\n"),
        format!("bootd: error: {c}:2:16: stop_timeout: \"10 seconds\": unit must be s, m or h")
    );
    assert_eq!(
        refused("listen = \"127.0.0.1:0\"\n"),
        "bootd: error: no root: give --root DIR, or root = \"DIR\" in the --config file"
    );
    let missing = dir.path().join("nope.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!(
            "{}:0:0: cannot read: No such file",
            missing.display()
        )),
        "{e}"
    );
}

// ---- HTTPS ------------------------------------------------------------

fn openssl(args: &[&str]) {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA (`NAME.ca.pem`) and a certificate for 127.0.0.1 it signed
/// (`NAME.pem`, key `NAME.key`), in `dir`.
fn site_ca_and_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |ext: &str| dir.join(format!("{name}.{ext}"));
    let s = |ext: &str| p(ext).to_str().unwrap().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut a = vec!["req", "-x509", "-nodes", "-days", "2"];
    a.extend(ec);
    let (ca_key, ca) = (s("ca.key"), s("ca.pem"));
    a.extend(["-keyout", &ca_key, "-out", &ca, "-subj", "/CN=test CA"]);
    openssl(&a);
    std::fs::write(
        p("ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    let (key, csr, pem, ext) = (s("key"), s("csr"), s("pem"), s("ext"));
    let mut a = vec!["req", "-new", "-nodes"];
    a.extend(ec);
    a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=bootd"]);
    openssl(&a);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (p("ca.pem"), p("pem"), p("key"))
}

/// curl over https with `ca`: (exit success, stdout, stderr).
fn curl_https(ca: &Path, url: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

struct Https {
    srv: Srv,
    tls_port: u16,
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    body: Vec<u8>,
}

impl Https {
    fn start(extra: &[&str]) -> Https {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        let body = data(300_000);
        std::fs::write(www.join("live.squashfs"), &body).unwrap();
        let (ca, cert, key) = site_ca_and_cert(dir.path(), "one");
        let tls_port_file = dir.path().join("https.port");
        let mut args = vec![
            "--root",
            www.to_str().unwrap(),
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-port-file",
            tls_port_file.to_str().unwrap(),
        ];
        args.extend(extra);
        let srv = Srv::start(dir.path(), &args, None);
        let tls_port = common::wait_for_port(&tls_port_file);
        Https {
            srv,
            tls_port,
            dir,
            ca,
            cert,
            key,
            body,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }
}

#[test]
fn https_with_curl_ranges_and_tls_versions() {
    let h = Https::start(&[]);
    let (ok, got, err) = curl_https(&h.ca, &h.url("/live.squashfs"), &["-r", "1000-200999"]);
    assert!(ok, "{err}");
    assert!(got == h.body[1000..201_000], "the range's bytes differ");
    // Whole, over TLS 1.2 and 1.3 both, with the response's headers.
    for v in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let (ok, got, err) = curl_https(&h.ca, &h.url("/live.squashfs"), &v);
        assert!(ok, "{v:?}: {err}");
        assert!(got == h.body, "{v:?}: the body differs");
    }
    // TLS 1.1 is refused; a client without the CA does not trust bootd.
    let (ok, _, err) = curl_https(
        &h.ca,
        &h.url("/live.squashfs"),
        &["--tlsv1.1", "--tls-max", "1.1"],
    );
    assert!(!ok, "TLS 1.1 accepted");
    assert!(!err.is_empty());
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(h.url("/live.squashfs"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Plain HTTP still answers beside it.
    assert_eq!(get(h.srv.port, "/live.squashfs").1.len(), h.body.len());
    // Plain HTTP sent to the HTTPS port: a TLS error, bootd stays up.
    let (status, _) = std::panic::catch_unwind(|| get(h.tls_port, "/x")).unwrap_or((0, vec![]));
    assert_ne!(status, 200);
    h.srv.wait_log("TLS handshake with 127.0.0.1:");
    let (ok, _, err) = curl_https(&h.ca, &h.url("/live.squashfs"), &["-I"]);
    assert!(ok, "{err}");
}

#[test]
fn a_handshake_is_bounded_by_the_head_timeout() {
    let h = Https::start(&["--head-timeout", "1"]);
    // A client that connects and trickles a ClientHello record (of 512
    // bytes, says its header) a byte every 300 ms.
    let mut s = TcpStream::connect(("127.0.0.1", h.tls_port)).unwrap();
    let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01]
        .into_iter()
        .chain(std::iter::repeat(0));
    let t = Instant::now();
    let closed = loop {
        if s.write_all(&[hello.next().unwrap()]).is_err() {
            break t.elapsed();
        }
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break t.elapsed(),
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still open");
    };
    assert!(closed < Duration::from_secs(2), "{closed:?}");
    assert!(closed >= Duration::from_millis(900), "{closed:?}");
}

#[test]
fn a_bad_certificate_on_reload_keeps_the_old_one() {
    let h = Https::start(&[]);
    let fetch = |ca: &Path| curl_https(ca, &h.url("/live.squashfs"), &["-r", "0-9"]);
    assert!(fetch(&h.ca).0);
    // A truncated certificate: SIGHUP logs it and bootd goes on with the old.
    let good = std::fs::read(&h.cert).unwrap();
    std::fs::write(&h.cert, &good[..good.len() / 2]).unwrap();
    h.srv.signal("HUP");
    h.srv
        .wait_log("TLS certificate not reloaded, keeping the previous one: tls_cert");
    let (ok, got, err) = fetch(&h.ca);
    assert!(ok, "{err}");
    assert_eq!(got, h.body[..10]);
    // A key that is not the certificate's: refused as well.
    let (_, _, other_key) = site_ca_and_cert(h.dir.path(), "other");
    std::fs::write(&h.cert, &good).unwrap();
    std::fs::copy(&other_key, &h.key).unwrap();
    h.srv.signal("HUP");
    h.srv.wait_log(&format!(
        "tls_cert {} with tls_key {}",
        h.cert.display(),
        h.key.display()
    ));
    assert!(fetch(&h.ca).0);
    // A new pair from another CA, written in place: picked up by the
    // mtime poll without a signal.
    let (ca2, cert2, key2) = site_ca_and_cert(h.dir.path(), "two");
    std::fs::copy(&key2, &h.key).unwrap();
    std::fs::copy(&cert2, &h.cert).unwrap();
    let t = Instant::now();
    while !fetch(&ca2).0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new certificate was not loaded: {}",
            h.srv.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!fetch(&h.ca).0, "the old CA still verifies bootd");
    assert!(h.srv.log().contains("TLS certificate"));
}

// ---- the unit ---------------------------------------------------------

fn unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/bootd.service")
}

/// The unit as shipped, but for ExecStart pointing at the binary just
/// built (systemd-analyze verify checks that the command exists).
fn unit_with_built_binary(dir: &Path, text: &str) -> PathBuf {
    let shipped = "ExecStart=/usr/bin/bootd ";
    assert!(text.contains(shipped), "no {shipped:?} in the unit");
    let built = format!("ExecStart={} ", env!("CARGO_BIN_EXE_bootd"));
    let p = dir.join("bootd.service");
    std::fs::write(&p, text.replacen(shipped, &built, 1)).unwrap();
    p
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let o = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn the_unit_verifies_and_its_exposure_is_at_most_2_5() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit()).unwrap();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=nodeboot",
        "StateDirectory=nodeboot",
        "ConfigurationDirectory=nodeboot",
        "ExecStart=/usr/bin/bootd serve --config /etc/nodeboot/bootd.toml",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW\n",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW\n",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.contains(want), "the unit lacks {want:?}");
    }
    let u = unit_with_built_binary(dir.path(), &text);
    let (ok, out) = analyze(&["verify"], &u);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    let (ok, out) = analyze(&["security", "--offline=true", "--threshold=25"], &u);
    assert!(ok, "exposure above 2.5:\n{out}");
    let level = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for bootd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{out}"));
    eprintln!("bootd.service exposure: {level}");
    assert!(level <= 2.5, "{level}");

    // The checks can fail: a typo, and a unit without hardening.
    let typo = unit_with_built_binary(dir.path(), &text.replace("PrivateTmp=", "PrivateTemp="));
    let (ok, out) = analyze(&["verify"], &typo);
    assert!(!ok || out.contains("PrivateTemp"), "{out}");
    let bare: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Private")
                && !l.starts_with("Restrict")
                && !l.starts_with("SystemCall")
                && !l.starts_with("Capability")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let bare = unit_with_built_binary(dir.path(), &bare);
    let (ok, out) = analyze(&["security", "--offline=true", "--threshold=25"], &bare);
    assert!(!ok, "an unhardened unit passed:\n{out}");
}
