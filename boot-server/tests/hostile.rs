//! Attacks on bootd's HTTP side, replayed against the real binary on
//! 127.0.0.1 (clients from other loopback addresses, 127.0.0.2 and up,
//! stand for other machines). Each test failed on 884eb52: slow heads held
//! connections for ever, idle connections exhausted descriptors, a second
//! `Content-Length` smuggled a request, the status table and page grew
//! without bound, and a newline in a status forged a log line.
mod common;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Srv {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    /// bootd on 127.0.0.1 with `extra`; `nofile`: run it under that
    /// RLIMIT_NOFILE (soft and hard).
    fn start(extra: &[&str], nofile: Option<u64>) -> Srv {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("a.txt"), "file a\n").unwrap();
        std::fs::write(www.join("b.txt"), "file b\n").unwrap();
        let pf = dir.path().join("port");
        let log = dir.path().join("bootd.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(&www)
            .arg("--port-file")
            .arg(&pf)
            .arg("--admin-token")
            .arg(common::admin_token_file(dir.path()))
            .args(extra)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = nix::libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let port = common::wait_for_port(&pf);
        Srv {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// A connection from `src` (a loopback address).
    fn connect_from(&self, src: Ipv4Addr) -> TcpStream {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0))).unwrap();
        let to = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        connect(fd.as_raw_fd(), &to).unwrap();
        let s = TcpStream::from(fd);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// One request on a new connection from 127.0.0.1, as the admin:
    /// status and body.
    fn get(&self, target: &str) -> (u16, String) {
        let mut s = self.connect_from(Ipv4Addr::LOCALHOST);
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            common::ADMIN
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        split(&out)
    }

    fn post_status(&self, body: &str) -> (u16, String) {
        let mut s = self.connect_from(Ipv4Addr::LOCALHOST);
        let req = format!(
            "POST /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        split(&out)
    }
}

fn split(resp: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(resp).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Whether the server closed `s` (EOF or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline() {
    let srv = Srv::start(&["--head-timeout", "2s"], None);
    let mut s = srv.connect_from(Ipv4Addr::new(127, 0, 0, 2));
    let t0 = Instant::now();
    // One byte every 300 ms: each read is quick, the head never ends.
    let mut w = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /a.txt HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(
        closed_within(&mut s, Duration::from_secs(8)),
        "a trickled head held its connection for 8 s"
    );
    let el = t0.elapsed();
    assert!(el < Duration::from_secs(4), "closed after {el:?}");
    trickle.join().unwrap();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = Srv::start(&["--idle-timeout", "1s"], None);
    let mut s = srv.connect_from(Ipv4Addr::new(127, 0, 0, 2));
    s.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// The attack of issue 12: slow connections until `accept` fails with
/// EMFILE and nobody is served. Here under RLIMIT_NOFILE 512 (bootd
/// cannot raise it), 600 connections from ten addresses.
#[test]
fn six_hundred_slow_connections_do_not_stop_http() {
    let mut srv = Srv::start(&[], Some(512));
    let mut held = Vec::new();
    for i in 0..600u32 {
        let src = Ipv4Addr::new(127, 0, 1, 2 + (i % 10) as u8);
        let mut s = srv.connect_from(src);
        // A head that never ends.
        let _ = s.write_all(b"GET /a.txt HTTP/1.1\r\nX-Slow: ");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (status, body) = srv.get("/a.txt");
    assert_eq!((status, body.as_str()), (200, "file a\n"));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(srv.alive());
    let fds = srv.fds();
    assert!(fds <= 512, "bootd holds {fds} descriptors");
    let log = srv.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(
        log.contains("at most 224 connections instead of 2048"),
        "{log}"
    );
    assert!(log.contains("idle closed to make room"), "{log}");
}

#[test]
fn connections_per_client_address_are_capped() {
    let srv = Srv::start(
        &[
            "--max-connections",
            "100",
            "--max-connections-per-client",
            "5",
        ],
        None,
    );
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let mut held: Vec<TcpStream> = (0..5).map(|_| srv.connect_from(a)).collect();
    for s in &mut held {
        s.write_all(b"GET /a.txt HTTP/1.1\r\nX: ").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut sixth = srv.connect_from(a);
    let mut out = Vec::new();
    let _ = sixth.read_to_end(&mut out);
    let (status, body) = split(&out);
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "503 Service Unavailable: too many connections from your address, try again\n"
        )
    );
    // Another address is served.
    let mut other = srv.connect_from(Ipv4Addr::new(127, 0, 0, 3));
    other
        .write_all(b"GET /a.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    other.read_to_end(&mut out).unwrap();
    assert_eq!(split(&out).0, 200);
}

/// Two `Content-Length` fields, the first 0: the "body" is a second
/// request that must never run.
#[test]
fn a_second_content_length_smuggles_no_request() {
    let srv = Srv::start(&[], None);
    let smuggled = "GET /b.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let req = format!(
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut s = srv.connect_from(Ipv4Addr::new(127, 0, 0, 2));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(!text.contains("file b"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    let log = srv.log();
    assert!(!log.contains("GET /b.txt"), "{log}");
}

fn node(i: usize, message: &str) -> String {
    format!(
        r#"{{"hostname":"n{i}","mac":"02:00:00:00:{:02x}:{:02x}","phase":"booted","message":"{message}"}}"#,
        i / 256,
        i % 256
    )
}

/// 1,000 nodes with 4 KiB messages: the table keeps --max-nodes, and the
/// page and /nodes answer one bounded page.
#[test]
fn the_status_table_and_its_pages_are_bounded() {
    let srv = Srv::start(&["--max-nodes", "300"], None);
    let msg = "m".repeat(4000);
    for i in 0..1000 {
        assert_eq!(srv.post_status(&node(i, &msg)).0, 204);
    }
    let (status, body) = srv.get("/nodes?limit=10&offset=5");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 300);
    assert_eq!(v["offset"], 5);
    assert_eq!(v["next"], 15);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 10);
    // The default page: at most 500 nodes; all 300 here, messages cut.
    let (status, page) = srv.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("300 nodes (300 booted)"), "{}", &page[..600]);
    assert!(page.len() < 400_000, "page of {} bytes", page.len());
    let (_, all) = srv.get("/nodes");
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 300);
    assert_eq!(v["next"], serde_json::Value::Null);
    let (_, big) = srv.get("/nodes?limit=100000");
    let v: serde_json::Value = serde_json::from_str(&big).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 300);
    let log = srv.log();
    assert_eq!(log.matches("more than 300 nodes").count(), 1, "{log}");
}

#[test]
fn a_newline_in_a_status_forges_no_log_line() {
    let srv = Srv::start(&[], None);
    let body = r#"{"hostname":"cn1","phase":"booted","message":"x\nINFO secret munge.key sent","image":"http://h/i\n INFO secret deploy_key sent"}"#;
    assert_eq!(srv.post_status(body).0, 204);
    std::thread::sleep(Duration::from_millis(200));
    let log = srv.log();
    for l in log.lines() {
        assert!(!l.trim_start().starts_with("INFO secret"), "forged: {l}");
    }
    assert!(log.contains(r"INFO secret munge.key sent"), "{log}");
}

/// With an inventory only its hosts report, with their own MACs; with
/// secrets, a host that boots with a token must send it.
#[test]
fn only_the_inventorys_hosts_write_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.toml");
    std::fs::write(
        &inv,
        "[[image]]\nname = \"img\"\nkernel = \"vmlinuz\"\ninitrd = [\"initrd.img\"]\ncmdline = \"\"\n\n\
         [[host]]\nname = \"cn1\"\nimage = \"img\"\nprovision = true\n\
         [[host.interfaces]]\nmac = \"52:54:00:12:34:56\"\n\n\
         [[host]]\nname = \"cn2\"\nimage = \"img\"\n\
         [[host.interfaces]]\nmac = \"52:54:00:12:34:57\"\n",
    )
    .unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("cn1")).unwrap();
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let srv = Srv::start(
        &[
            "--inventory",
            inv.to_str().unwrap(),
            "--secrets",
            secrets.to_str().unwrap(),
        ],
        None,
    );
    let cases = [
        (
            r#"{"hostname":"cn9","phase":"ready"}"#,
            403,
            "403 Forbidden: no host cn9 in the inventory\n",
        ),
        (
            r#"{"hostname":"cn2","mac":"02:00:00:00:00:01","phase":"ready"}"#,
            403,
            "403 Forbidden: 02:00:00:00:00:01 is not an interface of cn2\n",
        ),
        (
            r#"{"hostname":"cn1","mac":"52:54:00:12:34:56","phase":"failed"}"#,
            401,
            "401 Unauthorized: no token: send Authorization: Bearer <nodeboot.token from the kernel command line>\n",
        ),
        (
            r#"{"hostname":"cn2","mac":"52:54:00:12:34:57","phase":"ready"}"#,
            204,
            "",
        ),
    ];
    for (body, status, answer) in cases {
        let (s, b) = srv.post_status(body);
        assert_eq!((s, b.as_str()), (status, answer), "{body}");
    }
    let (_, nodes) = srv.get("/nodes");
    assert!(nodes.contains("\"cn2\""), "{nodes}");
    assert!(!nodes.contains("cn1") && !nodes.contains("cn9"), "{nodes}");
}
