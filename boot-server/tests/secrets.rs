//! Per-host secrets behind tokens, against the real bootd binary on
//! 127.0.0.1 with raw HTTP/1.1 over std's TcpStream (paths sent exactly as
//! written): the token in each host's iPXE script, the happy path, replay,
//! expiry, wrong MAC, unknown and missing tokens, path traversal in every
//! spelling, symlinks out of the host's directory, the served trees never
//! reaching the secrets, the startup refusals and the status binding. Each
//! test shows the body or log line an operator reads.
mod common;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CN1: &str = "52:54:00:12:34:56";
const CN2: &str = "52:54:00:12:34:57";
const CN3: &str = "52:54:00:12:34:58";
const MUNGE1: &str = "MUNGE-KEY-OF-CN1-0123456789";
const DEPLOY1: &str = "-----BEGIN OPENSSH PRIVATE KEY----- cn1";
const MUNGE2: &str = "MUNGE-KEY-OF-CN2-9876543210";

const INVENTORY: &str = r#"
[[image]]
name = "squareos-9.2"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = 'console=ttyS0 root=live:{{ $.liveimg }} grendel.hostname={{ $.host.Name }} grendel.address={{ $.address }}'

[[host]]
name = "cn1"
image = "squareos-9.2"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:56"

[[host]]
name = "cn2"
image = "squareos-9.2"
provision = true
[[host.interfaces]]
mac = "52:54:00:12:34:57"

[[host]]
name = "cn3"
image = "squareos-9.2"
provision = false
[[host.interfaces]]
mac = "52:54:00:12:34:58"
"#;

/// DIR/{www/{vmlinuz, s -> ../secrets}, repo/{postscript.sh, keys ->
/// ../secrets}, secrets/{cn1/{munge.key, deploy_key, escape ->
/// ../../outside, cn2key -> ../cn2/munge.key, sub/x}, cn2/munge.key} (0700),
/// outside, inventory.toml}.
struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = d.join("secrets");
        for sub in ["www", "repo", "secrets/cn1/sub", "secrets/cn2"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("www/vmlinuz"), "kernel").unwrap();
        std::fs::write(d.join("repo/postscript.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(s.join("cn1/munge.key"), MUNGE1).unwrap();
        std::fs::write(s.join("cn1/deploy_key"), DEPLOY1).unwrap();
        std::fs::write(s.join("cn1/sub/x"), "x").unwrap();
        std::fs::write(s.join("cn2/munge.key"), MUNGE2).unwrap();
        std::fs::write(d.join("outside"), "OUTSIDE-THE-SECRETS").unwrap();
        symlink("../../outside", s.join("cn1/escape")).unwrap();
        symlink("../cn2/munge.key", s.join("cn1/cn2key")).unwrap();
        symlink("../secrets", d.join("www/s")).unwrap();
        symlink("../secrets", d.join("repo/keys")).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(d.join("inventory.toml"), INVENTORY).unwrap();
        Fx { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `bootd serve` with the inventory, --root www, --repo repo, then
    /// `args` (e.g. `--secrets DIR`).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bootd"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--root"])
            .arg(self.path("www"))
            .arg("--repo")
            .arg(self.path("repo"))
            .arg("--inventory")
            .arg(self.path("inventory.toml"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn start(&self, extra: &[&str]) -> Srv {
        let secrets = self.path("secrets");
        let mut args = vec!["--secrets", secrets.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.start_with(&args)
    }

    fn start_with(&self, args: &[&str]) -> Srv {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let pf = self.path(&format!("port.{n}"));
        let log = self.path(&format!("bootd.{n}.log"));
        let child = self
            .command(args)
            .arg("--port-file")
            .arg(&pf)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let port = common::wait_for_port(&pf);
        Srv { child, port, log }
    }

    /// bootd's stderr when it refuses to start with `args`.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(!out.status.success(), "bootd started with {args:?}");
        String::from_utf8(out.stderr).unwrap()
    }
}

struct Srv {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    /// Lower-cased.
    head: String,
    body: String,
}

impl Srv {
    /// One request on its own connection, the target sent as written.
    fn req(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r =
            format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        r.push_str(body);
        s.write_all(r.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
        Resp {
            status: head.split(' ').nth(1).unwrap().parse().unwrap(),
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    /// `GET /secrets/NAME?mac=MAC` with the token as a bearer.
    fn secret(&self, name: &str, mac: &str, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.req(
            "GET",
            &format!("/secrets/{name}?mac={mac}"),
            &[("Authorization", &auth)],
            "",
        )
    }

    /// The iPXE script for `mac` and the token on its kernel line, if any.
    fn script(&self, mac: &str) -> (String, Option<String>) {
        let r = self.req("GET", &format!("/boot/ipxe?mac={mac}"), &[], "");
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r
            .body
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nodeboot.token="))
            .map(str::to_string);
        (r.body, token)
    }

    fn token(&self, mac: &str) -> String {
        self.script(mac).1.expect("a token in the script")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// The log once it holds `want` (10 s at most).
    fn log_with(&self, want: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            if log.contains(want) {
                return log;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no {want:?} in\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The id bootd logs for a token: 8 hex digits of its sha256.
fn id(token: &str) -> String {
    nodeboot_boot_server::secrets::token_id(token)
}

#[test]
fn happy_path_then_replay_is_403() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let t = srv.token(CN1);
    let r = srv.secret("munge.key", CN1, &t);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, MUNGE1);
    assert!(r.head.contains("\r\ncache-control: no-store"), "{}", r.head);
    assert!(r.head.contains("content-type: application/octet-stream"));
    // A second secret with the same token, the MAC in another spelling.
    let r = srv.secret("deploy_key", "52-54-00-12-34-56", &t);
    assert_eq!((r.status, r.body.as_str()), (200, DEPLOY1));

    // Replay: what the node (or whoever replays) reads.
    let r = srv.secret("munge.key", CN1, &t);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        "403 Forbidden: secret \"munge.key\" already fetched with this token (once per boot)\n"
    );
    let log = srv.log_with("already fetched");
    let tid = id(&t);
    assert!(
        log.contains(&format!(
            "secret munge.key sent (token {tid}, mac {CN1}, 27 bytes)"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "WARN secret \"munge.key\" refused (token {tid}, mac \"{CN1}\"): \
             secret \"munge.key\" already fetched with this token (once per boot)"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("token {tid} minted for cn1 ({CN1}), valid 900 s")));

    // The node closes its token: nothing more with it.
    let auth = format!("Bearer {t}");
    let close = |srv: &Srv| {
        srv.req(
            "DELETE",
            &format!("/secrets?mac={CN1}"),
            &[("Authorization", &auth)],
            "",
        )
    };
    assert_eq!(close(&srv).status, 204);
    let log = srv.log_with("closed by the node");
    assert!(
        log.contains(&format!(
            "token {tid} of cn1 closed by the node after deploy_key, munge.key"
        )),
        "{log}"
    );
    let r = srv.secret("other", CN1, &t);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "403 Forbidden: token closed by the node\n")
    );
    assert_eq!(close(&srv).status, 403);

    // Neither the token nor a secret ever reaches the log.
    let log = srv.log();
    for never in [t.as_str(), MUNGE1, DEPLOY1] {
        assert!(!log.contains(never), "{never} in the log:\n{log}");
    }
}

#[test]
fn the_token_is_in_its_hosts_script_only_and_new_each_render() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let (s1, t1) = srv.script(CN1);
    let t1 = t1.unwrap();
    assert_eq!(t1.len(), 64);
    assert!(t1.bytes().all(|c| c.is_ascii_hexdigit()), "{t1}");
    // At the end of the kernel line, after the image's cmdline.
    assert!(
        s1.contains(&format!(
            " grendel.address=http://127.0.0.1 nodeboot.token={t1}\ninitrd "
        )),
        "{s1}"
    );
    let t1b = srv.token(CN1);
    let t2 = srv.token(CN2);
    assert!(t1 != t1b && t1 != t2 && t1b != t2);
    // provision = false: no network boot, no token.
    let (s3, t3) = srv.script(CN3);
    assert_eq!(t3, None, "{s3}");
    assert!(s3.ends_with("exit\n"), "{s3}");

    // The newer script superseded the first token; cn2's does not open
    // cn1's secrets, and cn1's own token opens only cn1's.
    let r = srv.secret("munge.key", CN1, &t1);
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            403,
            "403 Forbidden: token superseded by a newer iPXE script for cn1\n"
        )
    );
    let r = srv.secret("munge.key", CN1, &t2);
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "403 Forbidden: token was minted for another MAC\n")
    );
    // A HEAD of the script mints nothing, so supersedes nothing.
    let head = srv.req("HEAD", &format!("/boot/ipxe?mac={CN1}"), &[], "");
    assert_eq!(head.status, 200);
    let get_len = s1.len().to_string();
    assert!(
        head.head.contains(&format!("content-length: {get_len}")),
        "{}",
        head.head
    );
    assert_eq!(srv.secret("munge.key", CN2, &t2).body, MUNGE2);
    assert_eq!(srv.secret("munge.key", CN1, &t1b).body, MUNGE1);

    // Without --secrets: no token, and /secrets/ is not there.
    drop(srv);
    let plain = fx.start_with(&[]);
    let (s, t) = plain.script(CN1);
    assert_eq!(t, None, "{s}");
    let r = plain.secret("munge.key", CN1, &t1b);
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, "404 Not Found: bootd runs without --secrets\n")
    );
}

#[test]
fn an_expired_token_is_403() {
    let fx = Fx::new();
    let srv = fx.start(&["--token-ttl", "1s"]);
    let t = srv.token(CN1);
    assert_eq!(srv.secret("deploy_key", CN1, &t).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let r = srv.secret("munge.key", CN1, &t);
    assert_eq!(r.status, 403);
    assert!(
        r.body.starts_with("403 Forbidden: token expired ")
            && r.body.ends_with(" s ago: reboot the node for a new one\n"),
        "{}",
        r.body
    );
    let log = srv.log_with("token expired");
    assert!(log.contains("valid 1 s"), "{log}");
    // A bad TTL is a usage error.
    let err = fx.refused(&["--token-ttl", "0"]);
    assert!(err.contains("\"0\": must be at least 1s"), "{err}");
}

#[test]
fn wrong_mac_unknown_and_missing_tokens() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let t = srv.token(CN1);
    let cases: Vec<(Resp, u16, &str)> = vec![
        (
            srv.secret("munge.key", CN2, &t),
            403,
            "403 Forbidden: token was minted for another MAC\n",
        ),
        (
            srv.secret("munge.key", "not-a-mac", &t),
            403,
            "403 Forbidden: token was minted for another MAC\n",
        ),
        (
            srv.secret("munge.key", CN1, &"f".repeat(64)),
            403,
            "403 Forbidden: unknown token (bootd restarted, or never minted it): reboot the node for a new one\n",
        ),
        (
            srv.req("GET", &format!("/secrets/munge.key?mac={CN1}"), &[], ""),
            401,
            "401 Unauthorized: no token: send Authorization: Bearer <nodeboot.token from the kernel command line>\n",
        ),
        (
            srv.req(
                "GET",
                &format!("/secrets/munge.key?mac={CN1}"),
                &[("Authorization", &format!("Basic {t}"))],
                "",
            ),
            401,
            "401 Unauthorized: no token: send Authorization: Bearer <nodeboot.token from the kernel command line>\n",
        ),
        (
            srv.req(
                "GET",
                "/secrets/munge.key",
                &[("Authorization", &format!("Bearer {t}"))],
                "",
            ),
            400,
            "400 Bad Request: want ?mac=aa:bb:cc:dd:ee:ff (the MAC the node booted with)\n",
        ),
        (
            srv.req("GET", &format!("/secrets/munge.key?mac={CN1}&token={t}"), &[], ""),
            400,
            "400 Bad Request: the token goes in the Authorization header (Bearer), never in the URL\n",
        ),
        (
            srv.req(
                "POST",
                &format!("/secrets/munge.key?mac={CN1}"),
                &[("Authorization", &format!("Bearer {t}"))],
                "",
            ),
            405,
            "405 Method Not Allowed: GET here\n",
        ),
    ];
    for (r, status, body) in &cases {
        assert_eq!((r.status, r.body.as_str()), (*status, *body), "{r:?}");
    }
    assert!(
        cases[3].0.head.contains("www-authenticate: bearer"),
        "{}",
        cases[3].0.head
    );
    // None of these used the name up.
    assert_eq!(srv.secret("munge.key", CN1, &t).body, MUNGE1);
    // The token sent in the URL is not in the access log either.
    let log = srv.log_with("token=REDACTED");
    assert!(!log.contains(&t), "{log}");
    assert!(
        log.contains(&format!("WARN secret \"munge.key\" refused (token {}, mac \"not-a-mac\"): token was minted for another MAC", id(&t))),
        "{log}"
    );
}

#[test]
fn traversal_and_symlinks_out_are_404() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let t = srv.token(CN1);
    for target in [
        "..",
        "../cn2/munge.key",
        "../secrets/cn1/munge.key",
        "%2e%2e/cn2/munge.key",
        "%2E%2E%2Fcn2%2Fmunge.key",
        ".%2e/cn2/munge.key",
        "..%2f..%2foutside",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "sub/x",
        "sub%2Fx",
        "munge.key%00",
        "munge.key%00.txt",
        ".munge.key",
        // Symlinks resolving out of DIR/cn1/: to DIR/.., to cn2's directory.
        "escape",
        "cn2key",
        // Directories and missing names.
        "sub",
        "nope",
    ] {
        let r = srv.secret(target, CN1, &t);
        assert_eq!(r.status, 404, "{target}: {}", r.body);
        assert!(
            !r.body.contains("MUNGE") && !r.body.contains("OUTSIDE"),
            "{target}"
        );
    }
    let bad = srv.secret("%2e%2e%2fcn2%2fmunge.key", CN1, &t);
    assert_eq!(
        bad.body,
        "404 Not Found: bad secret name: one file name of [A-Za-z0-9._-], not starting with '.'\n"
    );
    let out = srv.secret("escape", CN1, &t);
    assert_eq!(out.body, "404 Not Found: no secret \"escape\" for cn1\n");
    // Nothing was used up by the refusals.
    assert_eq!(srv.secret("munge.key", CN1, &t).body, MUNGE1);
}

#[test]
fn the_served_trees_never_reach_the_secrets() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let t = srv.token(CN1);
    let auth = format!("Bearer {t}");
    for target in [
        // Symlinks to the secrets directory inside the root and the repo.
        "/s/cn1/munge.key",
        "/repo/keys/cn1/munge.key",
        "/repo/keys/cn2/munge.key",
        // Climbing out of the trees, plain and encoded.
        "/../secrets/cn1/munge.key",
        "/repo/../secrets/cn1/munge.key",
        "/repo/%2e%2e/secrets/cn1/munge.key",
        "/%2e%2e/secrets/cn1/munge.key",
        "/repo%2f..%2fsecrets%2fcn1%2fmunge.key",
        // Absolute paths stay inside the root.
        &format!("/{}/cn1/munge.key", fx.path("secrets").display()),
        &format!("/repo/{}/cn1/munge.key", fx.path("secrets").display()),
        // Not the secrets prefix.
        "/secrets%2fmunge.key",
        "/boot/../secrets/munge.key",
    ] {
        for headers in [&[][..], &[("Authorization", auth.as_str())][..]] {
            let r = srv.req("GET", &format!("{target}?mac={CN1}"), headers, "");
            assert_eq!(r.status, 404, "{target}: {}", r.body);
            assert_eq!(r.body, "404 Not Found\n", "{target}");
        }
    }
    // The repo itself still serves.
    assert_eq!(srv.req("GET", "/repo/postscript.sh", &[], "").status, 200);
    assert_eq!(srv.secret("munge.key", CN1, &t).body, MUNGE1);
}

#[test]
fn secrets_inside_a_served_tree_or_open_to_others_stop_bootd() {
    let fx = Fx::new();
    // A directory inside the root; one inside the repo named through a
    // symlink elsewhere; one holding both trees.
    let private = |p: &str| {
        let p = fx.path(p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    };
    private("www/keys");
    private("repo/hidden");
    symlink(fx.path("repo/hidden"), fx.path("hidden-link")).unwrap();
    for (dir, opt) in [
        (fx.path("www/keys"), "--root"),
        (fx.path("hidden-link"), "--repo"),
        (private(""), "--root"),
    ] {
        let d = dir.to_str().unwrap();
        let err = fx.refused(&["--secrets", d]);
        let want = format!("bootd: error: --secrets {d} overlaps {opt} ");
        assert!(err.contains(&want), "{err}");
        assert!(
            err.trim_end()
                .ends_with("the secrets must live outside every served tree"),
            "{err}"
        );
    }
    let s = fx.path("secrets");
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = fx.refused(&["--secrets", s.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "bootd: error: --secrets {0}: mode 0755 lets other users read the hosts' secrets; chmod 700 {0}",
            s.display()
        )),
        "{err}"
    );
    // --secrets needs --inventory (nowhere to mint tokens otherwise).
    let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--root"])
        .arg(fx.path("www"))
        .arg("--secrets")
        .arg(&s)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--inventory <INVENTORY>"), "{err}");
}

#[test]
fn a_status_with_a_token_must_match_its_host() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let t = srv.token(CN1);
    let auth = format!("Bearer {t}");
    let post = |body: &str, headers: &[(&str, &str)]| srv.req("POST", "/status", headers, body);
    let cn1 = format!(r#"{{"hostname":"cn1","mac":"{CN1}","phase":"ready"}}"#);
    assert_eq!(post(&cn1, &[("Authorization", &auth)]).status, 204);
    let r = post(
        r#"{"hostname":"cn2","phase":"failed"}"#,
        &[("Authorization", &auth)],
    );
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "403 Forbidden: token was minted for another host\n")
    );
    let r = post(
        &format!(r#"{{"hostname":"cn1","mac":"{CN2}","phase":"ready"}}"#),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 403);
    let log = srv.log_with("status of cn2 refused");
    assert!(
        log.contains(&format!(
            "WARN status of cn2 refused: token was minted for another host token={}",
            id(&t)
        )),
        "{log}"
    );
    // A host that boots with a token must send it: anyone could write its
    // status otherwise (issue 12).
    let r = post(r#"{"hostname":"cn2","phase":"failed"}"#, &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            401,
            "401 Unauthorized: no token: send Authorization: Bearer <nodeboot.token from the kernel command line>\n"
        )
    );
    let nodes = srv.req("GET", "/nodes", &[], "").body;
    assert!(nodes.contains("\"cn1\""), "{nodes}");
    assert!(!nodes.contains("\"cn2\""), "{nodes}");
    assert!(!nodes.contains("failed"), "{nodes}");
}
