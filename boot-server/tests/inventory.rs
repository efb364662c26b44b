//! The inventory and the per-host iPXE script against the real bootd
//! binary on 127.0.0.1, with curl as the client: exact script text, both
//! MAC spellings, unknown MAC, provision = false, reload on change, a bad
//! rewrite, and import-grendel of the fixtures.
mod common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INVENTORY: &str = r#"
[[image]]
name = "squareos-9.2"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = 'console=ttyS0 root=live:{{ $.liveimg }} BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }} grendel.hostname={{ $.host.Name }} grendel.address={{ $.address }} rd.neednet=1'

[[host]]
name = "cn1"
image = "squareos-9.2"
provision = true
tags = ["compute"]
[[host.interfaces]]
mac = "52:54:00:12:34:56"
ip = "10.0.2.15/24"
bmc = false

[[host]]
name = "cn2"
image = "squareos-9.2"
provision = false
[[host.interfaces]]
mac = "52:54:00:12:34:57"
"#;

struct Srv {
    child: Child,
    port: u16,
    log: PathBuf,
    inv: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    fn start(extra: &[&str]) -> Srv {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("vmlinuz"), b"kernel").unwrap();
        let inv = dir.path().join("inventory.toml");
        std::fs::write(&inv, INVENTORY).unwrap();
        let (pf, log) = (dir.path().join("port"), dir.path().join("bootd.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(&www)
            .arg("--inventory")
            .arg(&inv)
            .arg("--port-file")
            .arg(&pf)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = common::wait_for_port(&pf);
        Srv {
            child,
            port,
            log,
            inv,
            _dir: dir,
        }
    }

    /// `curl` the script for `mac`: (status, content type, body).
    fn ipxe(&self, mac: &str) -> (u16, String, String) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}"])
            .arg(format!(
                "http://127.0.0.1:{}/boot/ipxe?mac={mac}",
                self.port
            ))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        let (body, tail) = s.rsplit_once('\n').unwrap();
        let (code, ctype) = tail.split_once(' ').unwrap();
        (code.parse().unwrap(), ctype.to_string(), body.to_string())
    }

    fn log_with(&self, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap();
            if log.contains(want) || t0.elapsed() > Duration::from_secs(10) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Rewrite the inventory and wait for the reload's log line (or the
    /// refusal's), `n`-th of its kind.
    fn rewrite(&self, text: &str, want: &str, n: usize) {
        std::fs::write(&self.inv, text).unwrap();
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap();
            if log.matches(want).count() >= n {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no {want:?} in\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The script for cn1 with URLs under `http://{b}`.
fn script(b: &str) -> String {
    format!(
        "#!ipxe\n# cn1 (52:54:00:12:34:56), image squareos-9.2\n\
         kernel http://{b}/vmlinuz initrd=initrd.img console=ttyS0 root=live:http://{b}/live.squashfs \
         BOOTIF=01-52-54-00-12-34-56 grendel.hostname=cn1 grendel.address=http://{b} rd.neednet=1\n\
         initrd http://{b}/initrd.img\nboot\n"
    )
}

#[test]
fn script_for_known_macs_in_both_spellings() {
    let srv = Srv::start(&[]);
    let host = format!("127.0.0.1:{}", srv.port);
    for mac in [
        "52:54:00:12:34:56",
        "52-54-00-12-34-56",
        "52:54:00:12:34:56".to_uppercase().as_str(),
        "52%3A54%3A00%3A12%3A34%3A56",
    ] {
        let (code, ctype, body) = srv.ipxe(mac);
        assert_eq!(code, 200, "{mac}: {body}");
        assert_eq!(ctype, "text/plain; charset=utf-8");
        assert_eq!(body, script(&host), "{mac}");
    }
    // No MAC at all.
    let (code, _, _) = srv.ipxe("");
    assert_eq!(code, 400);
}

#[test]
fn public_url_replaces_the_host_header() {
    let srv = Srv::start(&["--public-url", "http://10.0.2.2:8080/"]);
    let (code, _, body) = srv.ipxe("52:54:00:12:34:56");
    assert_eq!(code, 200);
    assert_eq!(body, script("10.0.2.2:8080"));
}

#[test]
fn unknown_mac_404_and_logged() {
    let srv = Srv::start(&[]);
    let (code, _, body) = srv.ipxe("52:54:00:00:00:99");
    assert_eq!(code, 404);
    assert_eq!(body, "404 Not Found: no host has MAC 52:54:00:00:00:99\n");
    let log = srv.log_with("unknown MAC");
    assert!(
        log.contains("iPXE script: unknown MAC \"52:54:00:00:00:99\""),
        "{log}"
    );
    // Anyone can ask: a flood of unknown MACs is rationed in the log.
    for i in 0..60 {
        assert_eq!(srv.ipxe(&format!("52:54:00:00:01:{i:02x}")).0, 404);
    }
    let log = srv.log_with("52:54:00:00:01:13");
    let lines = log.matches("unknown MAC").count();
    assert!(lines <= 20, "{lines} lines about unknown MACs:\n{log}");
}

#[test]
fn provision_false_exits_to_local_disk() {
    let srv = Srv::start(&[]);
    let (code, _, body) = srv.ipxe("52:54:00:12:34:57");
    assert_eq!(code, 200);
    assert_eq!(
        body,
        "#!ipxe\n# cn2 (52:54:00:12:34:57): provision = false in the inventory, so no network boot:\n\
         # exit hands back to the firmware, which boots from the local disk.\nexit\n"
    );
}

#[test]
fn reloads_on_change_and_keeps_the_old_on_a_bad_file() {
    let srv = Srv::start(&[]);
    let host = format!("127.0.0.1:{}", srv.port);
    assert_eq!(srv.ipxe("52:54:00:12:34:56").2, script(&host));

    let changed = INVENTORY.replace("rd.neednet=1", "rd.neednet=1 quiet");
    srv.rewrite(&changed, "inventory reloaded", 1);
    let body = srv.ipxe("52:54:00:12:34:56").2;
    assert!(body.contains("rd.neednet=1 quiet\n"), "{body}");

    // A bad rewrite: logged with its line and field, the previous kept.
    let bad = changed.replace("mac = \"52:54:00:12:34:57\"", "mac = \"52:54:00:12:34\"");
    srv.rewrite(&bad, "inventory not reloaded", 1);
    let log = srv.log_with("bad MAC");
    let inv = srv.inv.display().to_string();
    assert!(
        log.contains(&format!(
            "inventory not reloaded, keeping the previous one: {inv}:24: host[1].interfaces[0].mac: bad MAC \"52:54:00:12:34\""
        )),
        "{log}"
    );
    let body = srv.ipxe("52:54:00:12:34:56").2;
    assert!(body.contains("rd.neednet=1 quiet\n"), "{body}");
    assert_eq!(srv.ipxe("52:54:00:12:34:57").0, 200);
}

#[test]
fn a_bad_inventory_stops_bootd_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    std::fs::write(&inv, "[[host]]\nname = \"cn1\"\nimage = \"nope\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(dir.path())
        .arg("--inventory")
        .arg(&inv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "bootd: error: {}:3: host[0].image: unknown image \"nope\"",
            inv.display()
        )),
        "{err}"
    );
}

#[test]
fn import_grendel_fixtures() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("inventory.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .arg("import-grendel")
        .arg(fx.join("grendel-hosts.json"))
        .arg(fx.join("grendel-images.json"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(fx.join("grendel-inventory.toml")).unwrap()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/var/lib/grendel/vmlinuz-5.14.0-284.30.1.el9_2.x86_64 → vmlinuz-5.14.0-284.30.1.el9_2.x86_64: copy it into the served root"), "{err}");

    // Bad JSON is refused naming the file, line and column.
    std::fs::write(dir.path().join("bad.json"), "{").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .arg("import-grendel")
        .arg(dir.path().join("bad.json"))
        .arg(fx.join("grendel-images.json"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("bad.json:1:1: not valid JSON: EOF while parsing an object"));
}
