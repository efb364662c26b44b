//! Node identity and sealed secrets (issue 13), against the real bootd
//! binary on 127.0.0.1 with raw HTTP/1.1 over std's TcpStream (paths sent
//! exactly as written), as an attacker on the provisioning network would
//! try them: the chain that worked before (a MAC from /nodes, a token from
//! /boot/ipxe, /secrets/… with it) gets no secret byte; a captured answer
//! opens with cn1's key only; a replayed signed request, a request signed
//! by another key, a second or unarmed enrollment, a status for cn1 signed
//! by another key are refused; path traversal, symlinks out of the host's
//! directory and the served trees never reach the secrets; the startup
//! refusals. Each test shows the body or log line an operator reads.
mod common;
use common::Srv;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodeboot_identity::NodeKey;

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

    /// With --secrets, --state and --admin-token.
    fn start(&self, extra: &[&str]) -> Srv {
        let secrets = self.path("secrets");
        let state = self.path("state");
        let admin = common::admin_token_file(self.dir.path());
        let mut args = vec![
            "--secrets",
            secrets.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--admin-token",
            admin.to_str().unwrap(),
        ];
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

#[derive(Debug)]
struct Resp {
    status: u16,
    /// Lower-cased.
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn k1() -> NodeKey {
    NodeKey::from_seed(&[1; 32])
}
fn k2() -> NodeKey {
    NodeKey::from_seed(&[2; 32])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Srv {
    /// One request on its own connection, the target sent as written.
    fn req(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r =
            format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        s.write_all(&r).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let at = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&raw[..at]).into_owned();
        Resp {
            status: head.split(' ').nth(1).unwrap().parse().unwrap(),
            head: head.to_ascii_lowercase(),
            body: raw[at + 4..].to_vec(),
        }
    }

    fn nonce(&self) -> String {
        let r = self.req("GET", "/identity/nonce", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.head.contains("cache-control: no-store"), "{}", r.head);
        r.text()
    }

    /// The `Authorization` of a request signed by `key` as `host` on `mac`.
    fn auth(
        &self,
        key: &NodeKey,
        method: &str,
        target: &str,
        host: &str,
        mac: &str,
        body: &[u8],
    ) -> String {
        key.authorize(method, target, host, mac, now(), &self.nonce(), body)
    }

    /// A request signed by `key` as `host` on `mac`.
    fn signed(
        &self,
        key: &NodeKey,
        method: &str,
        target: &str,
        host: &str,
        mac: &str,
        body: &[u8],
    ) -> Resp {
        let a = self.auth(key, method, target, host, mac, body);
        self.req(method, target, &[("Authorization", &a)], body)
    }

    /// Enroll `key` for `host` (signed by it).
    fn enroll(&self, key: &NodeKey, host: &str, mac: &str) -> Resp {
        let line = format!("{}\n", key.public());
        self.signed(key, "POST", "/identity/enroll", host, mac, line.as_bytes())
    }

    /// `bootd arm HOST` (the CLI) against this server.
    fn arm(&self, fx: &Fx, host: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
            .args(["arm", host, "--for", "10m", "--url"])
            .arg(format!("http://127.0.0.1:{}", self.port))
            .arg("--admin-token")
            .arg(fx.path("admin.token"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The iPXE script for `mac` and the token on its kernel line, if any.
    fn script(&self, mac: &str) -> (String, Option<String>) {
        let r = self.req("GET", &format!("/boot/ipxe?mac={mac}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let token = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nodeboot.token="))
            .map(str::to_string);
        (text, token)
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

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The attack that worked on 884eb52, step by step: nothing of it gets a
/// secret byte, or even the MACs.
#[test]
fn the_old_attack_chain_gets_no_secret_byte() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    srv.arm(&fx, "cn1");
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 200);
    // 1. The fleet's MACs from /nodes or the page: not without the admin token.
    for target in ["/nodes", "/"] {
        let r = srv.req("GET", target, &[], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "401 Unauthorized: this needs bootd's admin token (Authorization: Bearer, or Basic with the token as password)\n"),
            "{target}"
        );
        assert!(
            r.head.contains("www-authenticate: basic realm=\"bootd\""),
            "{}",
            r.head
        );
        let r = srv.req(
            "GET",
            target,
            &[("Authorization", "Bearer not-the-admin-token")],
            b"",
        );
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, "403 Forbidden: wrong admin token\n")
        );
    }
    // 2. A token minted for cn1's MAC (MACs are not secret: ARP shows them).
    let (_, token) = srv.script(CN1);
    let token = token.expect("a token in cn1's script");
    // (provision = false: no network boot, no token.)
    assert_eq!(srv.script(CN3).1, None);
    // 3. The token opens nothing, in the header or the URL.
    let bearer = format!("Bearer {token}");
    for target in [
        format!("/secrets/munge.key?mac={CN1}"),
        format!("/secrets/munge.key?mac={CN1}&token={token}"),
        "/secrets/deploy_key".to_string(),
    ] {
        let r = srv.req("GET", &target, &[("Authorization", &bearer)], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, "401 Unauthorized: this request must be signed by the node's key (Authorization: Nodeboot …)\n"),
            "{target}"
        );
        assert!(r.head.contains("www-authenticate: nodeboot"), "{}", r.head);
        assert!(!contains(&r.body, MUNGE1) && !contains(&r.body, DEPLOY1));
    }
    let r = srv.req(
        "DELETE",
        &format!("/secrets?mac={CN1}"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 405, "{}", r.text());
    // 4. Claiming to be cn1 with a key of one's own.
    let r = srv.signed(&k2(), "GET", "/secrets/munge.key", "cn1", CN1, b"");
    assert_eq!(r.status, 403);
    assert!(
        r.text().starts_with(&format!(
            "403 Forbidden: the signature does not verify with cn1's key {}: signed by another key",
            k1().public().fingerprint()
        )),
        "{}",
        r.text()
    );
    // 5. Enrolling one's own key for cn1 instead.
    let r = srv.enroll(&k2(), "cn1", CN1);
    assert_eq!(r.status, 403);
    assert!(
        r.text()
            .starts_with("403 Forbidden: cn1 already has key SHA256:"),
        "{}",
        r.text()
    );
    let log = srv.log_with("enrollment refused (host cn1, mac 52:54:00:12:34:56, from 127.0.0.1:");
    for never in [MUNGE1, DEPLOY1, token.as_str()] {
        assert!(!log.contains(never), "{never} in the log:\n{log}");
    }
}

/// cn1 enrolls while armed, once; its secrets come sealed to its key, and
/// a captured answer is useless to anyone else; a replay is refused.
#[test]
fn sealed_secrets_for_the_enrolled_key_only() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    // Unarmed: refused, naming the way out.
    let r = srv.enroll(&k1(), "cn1", CN1);
    assert_eq!(
        (r.status, r.text()),
        (403, format!(
            "403 Forbidden: cn1 is not armed for enrollment (an admin runs: bootd arm cn1); key {} refused\n",
            k1().public().fingerprint()
        ))
    );
    // Before any key: a secret is refused as such.
    let r = srv.signed(&k1(), "GET", "/secrets/munge.key", "cn1", CN1, b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, "401 Unauthorized: bootd knows no key for cn1: the node must enroll first (while armed: bootd arm cn1)\n")
    );
    assert_eq!(
        srv.arm(&fx, "cn1"),
        "cn1 armed for one enrollment for 600 s\n"
    );
    let r = srv.enroll(&k1(), "cn1", CN1);
    assert_eq!(
        (r.status, r.text()),
        (
            200,
            format!("cn1 enrolled with key {}\n", k1().public().fingerprint())
        )
    );
    srv.log_with("cn1 (52:54:00:12:34:56, from 127.0.0.1");
    let log = srv.log_with("; disarmed");
    assert!(
        log.contains(&format!(
            "enrolled key {} (armed by bootd arm); disarmed",
            k1().public().fingerprint()
        )),
        "{log}"
    );
    // Armed once: a second key is refused; the same key is no change.
    let r = srv.enroll(&k2(), "cn1", CN1);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("cn1 already has key"), "{}", r.text());
    let r = srv.enroll(&k1(), "cn1", CN1);
    assert_eq!(
        (r.status, r.text()),
        (
            200,
            format!("cn1 already has key {}\n", k1().public().fingerprint())
        )
    );
    // The key lasts in --state.
    let kept = std::fs::read_to_string(fx.path("state/keys/cn1.pub")).unwrap();
    assert_eq!(kept, format!("{} cn1\n", k1().public()));

    // The secret, sealed to cn1's key: no plaintext on the wire.
    let target = "/secrets/munge.key";
    let a = srv.auth(&k1(), "GET", target, "cn1", CN1, b"");
    let r = srv.req("GET", target, &[("Authorization", &a)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.head.contains("cache-control: no-store"), "{}", r.head);
    assert!(!contains(&r.body, MUNGE1));
    assert_eq!(&k1().open(&r.body).unwrap()[..], MUNGE1.as_bytes());
    // The captured answer is useless to anyone else.
    let e = k2().open(&r.body).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot open the sealed secret with this node's key"),
        "{e}"
    );
    // The captured request, replayed: refused.
    let again = srv.req("GET", target, &[("Authorization", &a)], b"");
    assert_eq!(
        (again.status, again.text().as_str()),
        (
            403,
            "403 Forbidden: the nonce was already used: a replayed request\n"
        )
    );
    // Replayed at another target (its signature covers the target).
    let other = srv.req(
        "GET",
        "/secrets/deploy_key",
        &[(
            "Authorization",
            &srv.auth(&k1(), "GET", target, "cn1", CN1, b""),
        )],
        b"",
    );
    assert_eq!(other.status, 403);
    assert!(
        other.text().contains("signed by another key"),
        "{}",
        other.text()
    );
    // Another host's MAC, an unknown host, a time far off.
    let r = srv.signed(&k1(), "GET", target, "cn1", CN2, b"");
    assert_eq!(
        r.text(),
        "403 Forbidden: MAC 52:54:00:12:34:57 is not an interface of cn1 in the inventory\n"
    );
    let r = srv.signed(&k1(), "GET", target, "cn9", CN1, b"");
    assert_eq!(
        r.text(),
        "403 Forbidden: host \"cn9\" is not in the inventory\n"
    );
    let stale = k1().authorize("GET", target, "cn1", CN1, now() - 3600, &srv.nonce(), b"");
    let r = srv.req("GET", target, &[("Authorization", &stale)], b"");
    assert!(
        r.text()
            .starts_with("403 Forbidden: the request's time is -3600 s off bootd's clock"),
        "{}",
        r.text()
    );
    let log = srv.log_with("secret munge.key sent to cn1 (52:54:00:12:34:56, from 127.0.0.1:");
    assert!(
        log.contains(&format!(
            "{} bytes sealed to key {}",
            MUNGE1.len(),
            k1().public().fingerprint()
        )),
        "{log}"
    );
    assert!(log.contains("replayed request"), "{log}");
    assert!(!log.contains(MUNGE1), "{log}");

    // A restart keeps the key: cn1 goes on, nothing to arm.
    drop(srv);
    let srv = fx.start(&[]);
    let r = srv.signed(&k1(), "GET", "/secrets/deploy_key", "cn1", CN1, b"");
    assert_eq!(&k1().open(&r.body).unwrap()[..], DEPLOY1.as_bytes());
    // Armed again (a re-imaged disk): one new key replaces the old one.
    srv.arm(&fx, "cn1");
    assert_eq!(srv.enroll(&k2(), "cn1", CN1).status, 200);
    srv.log_with(&format!(
        "(armed by bootd arm), replacing {}",
        k1().public().fingerprint()
    ));
    let r = srv.signed(&k1(), "GET", target, "cn1", CN1, b"");
    assert_eq!(r.status, 403, "the old key is refused");
}

/// The inventory can arm a host's first key (trust on first use) or pin it.
#[test]
fn the_inventory_arms_or_pins() {
    let fx = Fx::new();
    let inv = std::fs::read_to_string(fx.path("inventory.toml")).unwrap();
    let inv = inv
        .replacen("provision = true\n", "provision = true\nenroll = true\n", 1)
        .replacen(
            "name = \"cn2\"\n",
            &format!(
                "name = \"cn2\"\nkey = \"{}\"\n",
                k2().public().fingerprint()
            ),
            1,
        );
    std::fs::write(fx.path("inventory.toml"), inv).unwrap();
    let srv = fx.start(&[]);
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 200);
    srv.log_with("(armed in the inventory (enroll = true, first key)); disarmed");
    let r = srv.enroll(&k2(), "cn1", CN1);
    assert!(r.text().contains("cn1 already has key"), "{}", r.text());
    // cn2's pin: its key enrolls without arming, another one never.
    let r = srv.enroll(&k1(), "cn2", CN2);
    assert_eq!(
        r.text(),
        format!(
            "403 Forbidden: key {} is not the key pinned for cn2 in the inventory ({})\n",
            k1().public().fingerprint(),
            k2().public().fingerprint()
        )
    );
    assert_eq!(srv.enroll(&k2(), "cn2", CN2).status, 200);
    let r = srv.signed(&k2(), "GET", "/secrets/munge.key", "cn2", CN2, b"");
    assert_eq!(&k2().open(&r.body).unwrap()[..], MUNGE2.as_bytes());
    // A bad pin stops the inventory (the old one is kept on reload; at start, bootd stops).
    let bad = std::fs::read_to_string(fx.path("inventory.toml"))
        .unwrap()
        .replace("key = \"SHA256:", "key = \"MD5:");
    std::fs::write(fx.path("inventory.toml"), bad).unwrap();
    drop(srv);
    let err = fx.refused(&[]);
    assert!(
        err.contains("host[1].key") && err.contains("bad key fingerprint \"MD5:"),
        "{err}"
    );
}

/// A host's status comes from its key only, once bootd has one.
#[test]
fn a_status_for_cn1_signed_by_another_key_is_refused() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    let body = |phase: &str| format!(r#"{{"hostname":"cn1","mac":"{CN1}","phase":"{phase}"}}"#);
    let ct = ("Content-Type", "application/json");
    // Before cn1 has a key: its boot token binds its reports (as before).
    let (_, token) = srv.script(CN1);
    let bearer = format!("Bearer {}", token.unwrap());
    let r = srv.req(
        "POST",
        "/status",
        &[ct, ("Authorization", &bearer)],
        body("fetching").as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    srv.arm(&fx, "cn1");
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 200);
    // Now: unsigned, with a token, signed by another key: refused.
    let fp = k1().public().fingerprint();
    for (headers, want) in [
        (vec![ct], format!("401 Unauthorized: cn1 has an identity key ({fp}): its status must be signed by it\n")),
        (vec![ct, ("Authorization", bearer.as_str())], format!("401 Unauthorized: cn1 has an identity key ({fp}): its status must be signed by it\n")),
    ] {
        let r = srv.req("POST", "/status", &headers, body("failed").as_bytes());
        assert_eq!((r.status, r.text()), (401, want));
    }
    let b = body("failed");
    let r = srv.signed(&k2(), "POST", "/status", "cn1", CN1, b.as_bytes());
    assert_eq!(r.status, 403);
    assert!(
        r.text().starts_with(&format!(
            "403 Forbidden: the signature does not verify with cn1's key {fp}"
        )),
        "{}",
        r.text()
    );
    // cn1 signing a report for cn2, or a body other than the one it signed.
    let other = format!(r#"{{"hostname":"cn2","mac":"{CN2}","phase":"failed"}}"#);
    let r = srv.signed(&k1(), "POST", "/status", "cn1", CN1, other.as_bytes());
    assert_eq!(
        r.text(),
        "403 Forbidden: the request is for cn2 but signed as cn1\n"
    );
    let a = srv.auth(
        &k1(),
        "POST",
        "/status",
        "cn1",
        CN1,
        body("ready").as_bytes(),
    );
    let r = srv.req(
        "POST",
        "/status",
        &[ct, ("Authorization", &a)],
        body("failed").as_bytes(),
    );
    assert_eq!(r.status, 403, "a body swapped under a signature");
    // Signed by cn1's key: taken.
    let ok = body("ready");
    let r = srv.signed(&k1(), "POST", "/status", "cn1", CN1, ok.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    let admin = format!("Bearer {}", common::ADMIN);
    let nodes = srv
        .req("GET", "/nodes", &[("Authorization", &admin)], b"")
        .text();
    let doc: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let n = &doc["nodes"][0];
    assert_eq!(
        (n["hostname"].as_str(), n["phase"].as_str()),
        (Some("cn1"), Some("ready")),
        "{nodes}"
    );
    // The page in a browser: Basic with the token as password.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", common::ADMIN))
    );
    assert_eq!(
        srv.req("GET", "/", &[("Authorization", &basic)], b"")
            .status,
        200
    );
    srv.log_with(&format!("node cn1 ready mac=52:54:00:12:34:56 key={fp}"));
}

#[test]
fn traversal_and_symlinks_out_are_404() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
    srv.arm(&fx, "cn1");
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 200);
    for name in [
        "..",
        "%2e%2e",
        "%2E%2E",
        "..%2fcn2%2fmunge.key",
        "%2e%2e%2fcn2%2fmunge.key",
        "sub%2fx",
        "%2fetc%2fpasswd",
        ".hidden",
        "munge.key%00",
        "a%zz",
    ] {
        let r = srv.signed(&k1(), "GET", &format!("/secrets/{name}"), "cn1", CN1, b"");
        assert_eq!(r.status, 404, "{name}: {}", r.text());
        assert_eq!(
            r.text(),
            "404 Not Found: bad secret name: one file name of [A-Za-z0-9._-], not starting with '.'\n",
            "{name}"
        );
    }
    for (name, body) in [
        ("escape", "404 Not Found: no secret \"escape\" for cn1\n"),
        ("cn2key", "404 Not Found: no secret \"cn2key\" for cn1\n"),
        ("sub", "404 Not Found: no secret \"sub\" for cn1\n"),
        ("nope", "404 Not Found: no secret \"nope\" for cn1\n"),
    ] {
        let r = srv.signed(&k1(), "GET", &format!("/secrets/{name}"), "cn1", CN1, b"");
        assert_eq!((r.status, r.text().as_str()), (404, body));
    }
    let log = srv.log();
    assert!(
        !log.contains("OUTSIDE-THE-SECRETS") && !log.contains(MUNGE2),
        "{log}"
    );
}

#[test]
fn the_served_trees_never_reach_the_secrets() {
    let fx = Fx::new();
    let srv = fx.start(&[]);
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
        let r = srv.req("GET", target, &[], b"");
        assert_eq!(r.status, 404, "{target}: {}", r.text());
        assert_eq!(r.text(), "404 Not Found\n", "{target}");
    }
    // The repo itself still serves.
    assert_eq!(srv.req("GET", "/repo/postscript.sh", &[], b"").status, 200);
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
    // An admin token others can read, or too short; a state others can write.
    let t = fx.path("weak.token");
    std::fs::write(&t, "short\n").unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fx.refused(&["--admin-token", t.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "--admin-token {}: mode 0644 lets other users read it; chmod 600 it",
            t.display()
        )),
        "{err}"
    );
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = fx.refused(&["--admin-token", t.to_str().unwrap()]);
    assert!(
        err.contains("want one word of at least 16 ASCII characters"),
        "{err}"
    );
    let st = private("open-state");
    std::fs::set_permissions(&st, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = fx.refused(&["--state", st.to_str().unwrap()]);
    assert!(
        err.contains("mode 0777 lets other users replace the nodes' keys; chmod 700 it"),
        "{err}"
    );
    // --secrets needs --inventory (no host to seal to otherwise).
    let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["serve", "--root"])
        .arg(fx.path("www"))
        .arg("--secrets")
        .arg(&s)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bootd: error: --secrets needs --inventory"),
        "{err}"
    );
}

/// Without --admin-token, the fleet's data goes to no one; bootd arm with
/// a wrong token is refused.
#[test]
fn without_an_admin_token_nobody_reads_the_fleet() {
    let fx = Fx::new();
    let srv = fx.start_with(&[]);
    let r = srv.req(
        "GET",
        "/nodes",
        &[("Authorization", "Bearer anything-at-all-here")],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "403 Forbidden: bootd runs without --admin-token: the fleet's data is not served to anyone\n")
    );
    let (_, token) = srv.script(CN1);
    assert_eq!(token, None, "no --secrets, no token");
    let r = srv.req("GET", "/secrets/munge.key", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "404 Not Found: bootd runs without --secrets\n")
    );
    drop(srv);
    let srv = fx.start(&[]);
    let wrong = fx.path("wrong.token");
    std::fs::write(&wrong, "a-wrong-admin-token-of-some-length\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bootd"))
        .args(["arm", "cn1", "--url"])
        .arg(format!("http://127.0.0.1:{}", srv.port))
        .arg("--admin-token")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "bootd at 127.0.0.1:{} refused: 403 Forbidden: wrong admin token",
            srv.port
        )),
        "{err}"
    );
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 403, "not armed");
    // Arming takes the token as a Bearer header only: a browser holding
    // Basic credentials for the page cannot be made to arm a host.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", common::ADMIN))
    );
    let r = srv.req(
        "POST",
        "/admin/arm?host=cn1",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            401,
            "401 Unauthorized: this needs bootd's admin token (Authorization: Bearer)\n"
        )
    );
    assert_eq!(srv.enroll(&k1(), "cn1", CN1).status, 403, "still not armed");
}
