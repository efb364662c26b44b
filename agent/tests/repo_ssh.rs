//! The native provision path's first pieces against real tools:
//! - the deploy key read back from a key partition on a loop device
//!   (`nodectl format-disk --key-partition`, `nodectl install-key`), and the
//!   partition unmounted afterwards on success and on failure;
//! - git2 clones over SSH from a real `sshd` (Debian's openssh-server) on
//!   127.0.0.1 with a test-generated host key and deploy key, serving a bare
//!   repository with `post.sh` and `node.toml`; and the bad inputs: wrong
//!   deploy key, unknown host key, server down, a ref pin that does not exist.
//!
//! Needs root (sshd, loop devices, mount); prints `SKIP: …` otherwise.
mod common;
use common::{free_port, nodectl, Loop};
use nodeboot_agent::disk::{System, Tools};
use nodeboot_agent::repo::{self, CloneError, Retries};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn can_ssh(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP: {test}: needs root (sshd logs in as root)");
        return false;
    }
    for (tool, pkg) in [(SSHD, "openssh-server"), ("ssh-keygen", "openssh-client")] {
        if Command::new(tool).arg("-?").output().is_err() {
            panic!("{tool} missing: apt-get install {pkg} (cargo xtask test installs it)");
        }
    }
    if Command::new("git").arg("--version").output().is_err() {
        panic!("git missing: apt-get install git");
    }
    true
}

fn run(argv: &[&str], dir: Option<&Path>) -> Output {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output().unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn ok(argv: &[&str], dir: Option<&Path>) -> String {
    let o = run(argv, dir);
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An ed25519 key pair: (private key path, "type base64" of the public key).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    ok(
        &[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            name,
            "-f",
            p.to_str().unwrap(),
        ],
        None,
    );
    let pubk = std::fs::read_to_string(p.with_extension("pub")).unwrap();
    let mut f = pubk.split_whitespace();
    let pubk = format!("{} {}", f.next().unwrap(), f.next().unwrap());
    (p, pubk)
}

/// A real sshd serving a bare repo; killed on drop.
struct Server {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    /// "ssh-ed25519 AAAA…" of the server's host key.
    host_pub: String,
    /// The authorised deploy key (private, OpenSSH format).
    deploy_key: PathBuf,
    /// The first commit (tagged v1) and the head of main.
    v1: String,
    head: String,
}

impl Server {
    fn start() -> Server {
        Server::start_with(|_, _| String::new())
    }

    /// `extra(dir, host key)`: more sshd_config lines (a HostCertificate).
    fn start_with(extra: impl FnOnce(&Path, &Path) -> String) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (host_key, host_pub) = keygen(d, "host_ed25519");
        let extra = extra(d, &host_key);
        let (deploy_key, deploy_pub) = keygen(d, "deploy_ed25519");
        std::fs::write(d.join("authorized_keys"), format!("{deploy_pub}\n")).unwrap();
        // The repository: post.sh and node.toml, a tag v1, then a second commit.
        let work = d.join("work");
        std::fs::create_dir(&work).unwrap();
        ok(&["git", "init", "-q", "-b", "main"], Some(&work));
        std::fs::write(work.join("post.sh"), "#!/bin/sh\necho provisioned \"$1\"\n").unwrap();
        std::fs::write(work.join("node.toml"), "# storage comes later\n").unwrap();
        let git = |args: &[&str]| {
            let mut a = vec![
                "git",
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@localhost",
            ];
            a.extend(args);
            ok(&a, Some(&work))
        };
        git(&["add", "post.sh", "node.toml"]);
        git(&["commit", "-q", "-m", "first"]);
        git(&["tag", "v1"]);
        let v1 = git(&["rev-parse", "HEAD"]).trim().to_string();
        std::fs::write(work.join("README"), "second\n").unwrap();
        git(&["add", "README"]);
        git(&["commit", "-q", "-m", "second"]);
        let head = git(&["rev-parse", "HEAD"]).trim().to_string();
        let bare = d.join("post.git");
        ok(
            &[
                "git",
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                bare.to_str().unwrap(),
            ],
            None,
        );
        git(&["push", "-q", bare.to_str().unwrap(), "main", "v1"]);

        let port = free_port();
        let cfg = d.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\n\
                 AuthorizedKeysFile {ak}\nPidFile {pid}\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 AllowUsers root\nLogLevel VERBOSE\n{extra}",
                hk = host_key.display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // Privilege separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").unwrap();
        std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Server {
            dir,
            child,
            port,
            host_pub,
            deploy_key,
            v1,
            head,
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("sshd exited ({st}): {}", s.log());
            }
            assert!(t.elapsed() < Duration::from_secs(10), "sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            self.dir.path().join("post.git").display()
        )
    }

    /// A known_hosts file pinning `key` ("type base64") for this server.
    fn known_hosts(&self, key: &str) -> PathBuf {
        let p = self.dir.path().join(format!(
            "known_hosts.{}",
            key.len() + key.as_bytes()[20] as usize
        ));
        std::fs::write(&p, format!("[127.0.0.1]:{} {key}\n", self.port)).unwrap();
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// libgit2's socket timeouts are process-wide: the tests that depend on
/// them (a silent server) or set other ones (provision's defaults) must not
/// overlap.
fn timeouts_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn quick() -> Retries {
    Retries {
        attempts: 3,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
    }
}

/// A fresh destination under a private tempdir (standing in for /run).
fn dest() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("postscripts");
    (d, p)
}

#[test]
fn clone_over_ssh_with_pinned_host_key() {
    if !can_ssh("clone_over_ssh_with_pinned_host_key") {
        return;
    }
    let s = Server::start();
    let key = std::fs::read(&s.deploy_key).unwrap();
    let kh = s.known_hosts(&s.host_pub);
    let (_t, dst) = dest();
    let c = repo::clone(&s.url(), None, &key, &kh, &dst, quick())
        .unwrap_or_else(|e| panic!("{e}\nsshd: {}", s.log()));
    assert_eq!(c.commit, s.head);
    assert_eq!(c.attempts, 1);
    assert!(std::fs::read_to_string(dst.join("post.sh"))
        .unwrap()
        .contains("provisioned"));
    assert!(dst.join("node.toml").is_file());
    assert!(dst.join("README").is_file());
    assert_eq!(
        std::fs::metadata(&dst).unwrap().mode() & 0o7777,
        0o700,
        "dest is 0700"
    );

    // Pinned to the tag v1, then to its commit id: the first commit.
    for pin in ["v1", s.v1.as_str()] {
        let (_t, dst) = dest();
        let c = repo::clone(&s.url(), Some(pin), &key, &kh, &dst, quick()).unwrap();
        assert_eq!(c.commit, s.v1, "pin {pin}");
        assert!(dst.join("post.sh").is_file());
        assert!(
            !dst.join("README").exists(),
            "pin {pin}: README is not in v1"
        );
    }
    // Pinned to the branch.
    let (_t, dst) = dest();
    let c = repo::clone(&s.url(), Some("main"), &key, &kh, &dst, quick()).unwrap();
    assert_eq!(c.commit, s.head);
}

#[test]
fn clone_refuses_wrong_deploy_key() {
    if !can_ssh("clone_refuses_wrong_deploy_key") {
        return;
    }
    let s = Server::start();
    let (other, _) = keygen(s.dir.path(), "not_authorised");
    let key = std::fs::read(other).unwrap();
    let kh = s.known_hosts(&s.host_pub);
    let (_t, dst) = dest();
    let t = Instant::now();
    let e = repo::clone(&s.url(), None, &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, CloneError::Auth { .. }), "{e:?}");
    assert!(
        msg.contains("refused the deploy key") && msg.contains("root"),
        "{msg}"
    );
    assert!(msg.contains(&s.url()), "{msg}");
    // Not retried.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        std::fs::read_dir(&dst).unwrap().count(),
        0,
        "dest left empty"
    );
}

#[test]
fn clone_refuses_unknown_host_key() {
    if !can_ssh("clone_refuses_unknown_host_key") {
        return;
    }
    let s = Server::start();
    let key = std::fs::read(&s.deploy_key).unwrap();
    let (_, other_host) = keygen(s.dir.path(), "other_host");
    let kh = s.known_hosts(&other_host);
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), None, &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    let CloneError::UnknownHostKey {
        host, fingerprint, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(host, &format!("[127.0.0.1]:{}", s.port));
    // The fingerprint is OpenSSH's, as `ssh-keygen -lf` prints it.
    let want = ok(
        &[
            "ssh-keygen",
            "-lf",
            s.dir.path().join("host_ed25519.pub").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        want.contains(fingerprint.as_str()),
        "{want} vs {fingerprint}"
    );
    assert!(
        msg.contains("ssh-ed25519") && msg.contains(fingerprint.as_str()),
        "{msg}"
    );
    assert!(msg.contains("refused"), "{msg}");

    // An empty known_hosts refuses too (never trust on first use).
    let empty = s.dir.path().join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), None, &key, &empty, &dst, quick()).unwrap_err();
    assert!(matches!(e, CloneError::UnknownHostKey { .. }), "{e:?}");
}

#[test]
fn clone_gives_up_when_server_is_down() {
    if !can_ssh("clone_gives_up_when_server_is_down") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (k, _) = keygen(d.path(), "deploy");
    let key = std::fs::read(k).unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let port = free_port(); // nothing listens there
    let url = format!("ssh://root@127.0.0.1:{port}/srv/post.git");
    let (_t, dst) = dest();
    let t = Instant::now();
    let e = repo::clone(&url, None, &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    let CloneError::Network { attempts, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*attempts, 3);
    assert!(
        msg.contains("unreachable after 3 attempts") && msg.contains(&url),
        "{msg}"
    );
    // 100 ms + 200 ms of backoff, well within a bound.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn clone_gives_up_on_a_silent_server() {
    if !can_ssh("clone_gives_up_on_a_silent_server") {
        return;
    }
    let _serial = timeouts_lock();
    let d = tempfile::tempdir().unwrap();
    let (k, _) = keygen(d.path(), "deploy");
    let key = std::fs::read(k).unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    // Accepts connections (the kernel's backlog) and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("ssh://root@127.0.0.1:{port}/srv/post.git");
    let (_t, dst) = dest();
    let t = Instant::now();
    let e = repo::clone(&url, None, &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(e, CloneError::Network { attempts: 3, .. }),
        "{e:?}"
    );
    // 3 attempts of a 2 s bound plus 300 ms of backoff: never a hang.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(15),
        "{took:?}"
    );
    drop(silent);
}

#[test]
fn clone_refuses_missing_ref_pin() {
    if !can_ssh("clone_refuses_missing_ref_pin") {
        return;
    }
    let s = Server::start();
    let key = std::fs::read(&s.deploy_key).unwrap();
    let kh = s.known_hosts(&s.host_pub);
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), Some("no-such-ref"), &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, CloneError::RefNotFound { .. }), "{e:?}");
    assert!(
        msg.contains("\"no-such-ref\"") && msg.contains("neither a branch, a tag nor a commit"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(&dst).unwrap().count(),
        0,
        "dest left empty"
    );
}

/// A real admin's known_hosts: hashed by `ssh-keygen -H` (what
/// `HashKnownHosts yes` writes), a wildcard entry; `@revoked` refusing.
#[test]
fn clone_accepts_an_admins_known_hosts() {
    if !can_ssh("clone_accepts_an_admins_known_hosts") {
        return;
    }
    let s = Server::start();
    let key = std::fs::read(&s.deploy_key).unwrap();
    let d = s.dir.path();
    let (_, other) = keygen(d, "other_host");
    // Hashed: the server's line among others.
    let kh = d.join("known_hosts.hashed");
    std::fs::write(
        &kh,
        format!(
            "git.example.org {other}\n[127.0.0.1]:{} {}\n10.0.0.9 {other}\n",
            s.port, s.host_pub
        ),
    )
    .unwrap();
    ok(
        &["ssh-keygen", "-q", "-H", "-f", kh.to_str().unwrap()],
        None,
    );
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");
    let (_t, dst) = dest();
    let c = repo::clone(&s.url(), None, &key, &kh, &dst, quick())
        .unwrap_or_else(|e| panic!("hashed: {e}\nsshd: {}", s.log()));
    assert_eq!(c.commit, s.head);
    // A wildcard (and a negation that does not apply).
    let wild = d.join("known_hosts.wild");
    std::fs::write(
        &wild,
        format!("[127.0.0.*]:{},!10.0.0.1 {}\n", s.port, s.host_pub),
    )
    .unwrap();
    let (_t, dst) = dest();
    repo::clone(&s.url(), None, &key, &wild, &dst, quick())
        .unwrap_or_else(|e| panic!("wildcard: {e}"));
    // @revoked wins: refused, naming the host and the key presented.
    let revoked = d.join("known_hosts.revoked");
    std::fs::write(
        &revoked,
        format!(
            "{}@revoked * {}\n",
            std::fs::read_to_string(&wild).unwrap(),
            s.host_pub
        ),
    )
    .unwrap();
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), None, &key, &revoked, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, CloneError::RevokedHostKey { .. }), "{e:?}");
    let fp = ok(
        &[
            "ssh-keygen",
            "-lf",
            d.join("host_ed25519.pub").to_str().unwrap(),
        ],
        None,
    );
    let fp = fp.split_whitespace().nth(1).unwrap();
    assert!(
        msg.contains(&format!("[127.0.0.1]:{}", s.port))
            && msg.contains(fp)
            && msg.contains("@revoked"),
        "{msg}"
    );
    // Hashed for another host only: unknown, naming host and key.
    let (_t, dst) = dest();
    let lone = d.join("known_hosts.lone");
    std::fs::write(&lone, format!("[127.0.0.1]:{} {other}\n", s.port)).unwrap();
    ok(
        &["ssh-keygen", "-q", "-H", "-f", lone.to_str().unwrap()],
        None,
    );
    let e = repo::clone(&s.url(), None, &key, &lone, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CloneError::UnknownHostKey { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("[127.0.0.1]:{}", s.port)) && msg.contains(fp),
        "{msg}"
    );
}

/// A server presenting a host certificate signed by the site's CA
/// (`ssh-keygen -s`): an `@cert-authority` line is enough; a certificate
/// for another name, or from a CA the file does not name, is refused with
/// the reason.
#[test]
fn clone_accepts_a_host_certificate_from_a_cert_authority() {
    if !can_ssh("clone_accepts_a_host_certificate_from_a_cert_authority") {
        return;
    }
    let ca_dir = tempfile::tempdir().unwrap();
    let (ca, ca_pub) = keygen(ca_dir.path(), "site_ca");
    let (rogue, rogue_pub) = keygen(ca_dir.path(), "rogue_ca");
    let signed = |ca: PathBuf, names: &'static str| {
        move |d: &Path, host_key: &Path| {
            ok(
                &[
                    "ssh-keygen",
                    "-q",
                    "-s",
                    ca.to_str().unwrap(),
                    "-I",
                    "git server",
                    "-h",
                    "-n",
                    names,
                    "-V",
                    "-5m:+1h",
                    &format!("{}.pub", host_key.display()),
                ],
                Some(d),
            );
            format!("HostCertificate {}-cert.pub\n", host_key.display())
        }
    };
    let s = Server::start_with(signed(ca.clone(), "127.0.0.1,git.example.org"));
    let key = std::fs::read(&s.deploy_key).unwrap();
    let d = s.dir.path();
    let kh = d.join("known_hosts.ca");
    std::fs::write(
        &kh,
        format!(
            "@cert-authority [127.0.0.1]:{},git.example.org {ca_pub} site CA\n",
            s.port
        ),
    )
    .unwrap();
    let (_t, dst) = dest();
    let c = repo::clone(&s.url(), None, &key, &kh, &dst, quick())
        .unwrap_or_else(|e| panic!("{e}\nsshd: {}", s.log()));
    assert_eq!(c.commit, s.head);
    // Signed by a CA the file does not name.
    let kh_rogue = d.join("known_hosts.rogue");
    std::fs::write(
        &kh_rogue,
        format!("@cert-authority [127.0.0.1]:{} {rogue_pub}\n", s.port),
    )
    .unwrap();
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), None, &key, &kh_rogue, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, CloneError::UnknownHostKey { .. }), "{e:?}");
    let ca_fp = ok(
        &["ssh-keygen", "-lf", &format!("{}.pub", ca.display())],
        None,
    );
    let ca_fp = ca_fp.split_whitespace().nth(1).unwrap();
    assert!(
        msg.contains("ssh-ed25519-cert-v01@openssh.com")
            && msg.contains(&format!(
                "signed by the CA {ca_fp}, which no @cert-authority line"
            )),
        "{msg}"
    );
    drop(s);
    // A certificate for other names only.
    let s = Server::start_with(signed(rogue.clone(), "git.example.org"));
    let kh = s.dir.path().join("known_hosts.ca");
    std::fs::write(
        &kh,
        format!("@cert-authority [127.0.0.1]:{} {rogue_pub}\n", s.port),
    )
    .unwrap();
    let (_t, dst) = dest();
    let e = repo::clone(&s.url(), None, &key, &kh, &dst, quick()).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("names git.example.org but not 127.0.0.1"),
        "{msg}"
    );
}

// ------------------------------------------------------- key partition

fn can_loop(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP: {test}: needs root (loop devices, mkfs, mount)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIP: {test}: no /dev/loop-control");
        return false;
    }
    true
}

/// The partition of the loop device whose GPT name is (or is not) nodeboot-key
/// (blkid -p reads the table itself: no udev needed).
fn partition(dev: &str, key: bool) -> String {
    (1..=2)
        .map(|n| format!("{dev}p{n}"))
        .find(|p| {
            let name = ok(
                &["blkid", "-p", "-s", "PART_ENTRY_NAME", "-o", "value", p],
                None,
            );
            (name.trim() == "nodeboot-key") == key
        })
        .unwrap_or_else(|| panic!("{dev}: no partition with key={key}"))
}

/// Is anything mounted from `part` (by device number), or a keyread dir left?
fn assert_unmounted(part: &str) {
    let rdev = std::fs::metadata(part).unwrap().rdev();
    let devnum = format!(
        "{}:{}",
        libc::major(rdev as libc::dev_t),
        libc::minor(rdev as libc::dev_t)
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mi.lines() {
        assert!(
            l.split_whitespace().nth(2) != Some(devnum.as_str()),
            "{part} still mounted: {l}"
        );
        assert!(!l.contains("nodectl-keyread"), "left mounted: {l}");
    }
    let left: Vec<_> = std::fs::read_dir("/run")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("nodectl-keyread")
        })
        .collect();
    assert!(left.is_empty(), "directories left in /run: {left:?}");
}

#[test]
fn deploy_key_from_key_partition() {
    if !can_loop("deploy_key_from_key_partition") {
        return;
    }
    let l = Loop::new();
    let o = nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        "xfs",
        "--uuid",
        "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a12",
        "--key-partition",
        "16M",
    ]);
    assert!(o.status.success());
    let part = partition(&l.dev, true);

    // No key installed yet: the error names the device and the file; unmounted.
    let e = repo::read_deploy_key(
        Some(Path::new(&l.dev)),
        &System::default(),
        &Tools::default(),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains(&part) && msg.contains("no usable file key"),
        "{msg}"
    );
    assert!(msg.contains("nodectl install-key"), "{msg}");
    assert_unmounted(&part);

    // install-key, then read it back (by the disk and by the partition).
    let d = tempfile::tempdir().unwrap();
    let (k, _) = keygen(d.path(), "deploy");
    let o = nodectl(&["install-key", &l.dev, k.to_str().unwrap()]);
    assert!(o.status.success());
    let want = std::fs::read(&k).unwrap();
    for dev in [l.dev.as_str(), part.as_str()] {
        let key =
            repo::read_deploy_key(Some(Path::new(dev)), &System::default(), &Tools::default())
                .unwrap();
        assert_eq!(&key[..], &want[..], "read from {dev}");
        assert_unmounted(&part);
    }

    // Not a key partition: refused before any mount.
    let data = partition(&l.dev, false);
    let e = repo::read_deploy_key(
        Some(Path::new(&data)),
        &System::default(),
        &Tools::default(),
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("not a nodeboot key partition"), "{msg}");
}

/// Commit `files` (path, content; "" removes the file) in the server's
/// work tree and push them: the next clone gets them.
fn publish(s: &Server, files: &[(&str, &str)]) {
    let work = s.dir.path().join("work");
    for (p, content) in files {
        let f = work.join(p);
        if content.is_empty() {
            let _ = std::fs::remove_file(&f);
        } else {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, content).unwrap();
        }
    }
    let git = |args: &[&str]| {
        let mut a = vec!["git", "-c", "user.name=t", "-c", "user.email=t@localhost"];
        a.extend(args);
        ok(&a, Some(&work))
    };
    git(&["add", "-A"]);
    git(&["commit", "-q", "--allow-empty", "-m", "next"]);
    let bare = s.dir.path().join("post.git");
    git(&["push", "-q", "-f", bare.to_str().unwrap(), "main"]);
}

/// `nodectl provision`'s native path (the library, with paths in a
/// tempdir): the key from a key partition on a loop device, the clone from
/// a real sshd, node.toml applied to a tempdir root, post.sh run. Then the
/// bad inputs, one by one, each ending `failed` with a message naming the
/// cause, the key partition unmounted and no clone left behind.
#[test]
fn provision_native_path_and_its_bad_inputs() {
    if !can_ssh("provision_native_path_and_its_bad_inputs")
        || !can_loop("provision_native_path_and_its_bad_inputs")
    {
        return;
    }
    use nodeboot_agent::provision::{self, Paths};
    let _serial = timeouts_lock();
    let s = Server::start();
    let l = Loop::new();
    assert!(nodectl(&[
        "format-disk",
        &l.dev,
        "--fs",
        "ext4",
        "--uuid",
        "5d0c6a1e-2b3f-4c5d-8e9f-1a2b3c4d5e6f",
        "--key-partition",
        "16M",
    ])
    .status
    .success());
    assert!(
        nodectl(&["install-key", &l.dev, s.deploy_key.to_str().unwrap()])
            .status
            .success()
    );
    let part = partition(&l.dev, true);
    let fp = ok(
        &[
            "ssh-keygen",
            "-lf",
            s.dir.path().join("host_ed25519.pub").to_str().unwrap(),
        ],
        None,
    )
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_string();

    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nmunge:x:101:106::/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nmunge:x:106:\n").unwrap();
    let paths = Paths {
        cmdline: d.path().join("cmdline"),
        config: d.path().join("provision.toml"),
        run: d.path().join("run"),
        root: root.clone(),
        known_hosts: d.path().join("known_hosts"),
        system: System::default(),
    };
    let cmdline = |extra: &str| {
        std::fs::write(
            &paths.cmdline,
            format!(
                "grendel.hostname=cn1 nodeboot.keydev={} nodeboot.postscripts={} \
                 nodeboot.postscripts.hostkey={fp} nodeboot.postscripts.attempts=2 {extra}",
                l.dev,
                s.url()
            ),
        )
        .unwrap()
    };
    let provision = |what: &str| {
        let st = provision::run(&paths, "localhost");
        eprintln!("{what}: {} {:?}", st.phase, st.error);
        assert_unmounted(&part);
        assert!(
            !paths.run.join("postscripts").exists(),
            "{what}: the clone was left in {}",
            paths.run.display()
        );
        let on_disk = provision::read_status(&paths.run).unwrap();
        assert_eq!(on_disk.phase, st.phase);
        st
    };

    // 1. The good path.
    publish(
        &s,
        &[
            (
                "node.toml",
                "[[file]]\nsource = 'files/munge.key'\npath = '/etc/munge/munge.key'\n\
                 owner = 'munge'\ngroup = 'munge'\nmode = '0400'\n\n\
                 [services]\nstart = ['munge', 'sssd', 'slurmd']\ntimeout = 30\n",
            ),
            ("files/munge.key", "0123456789abcdef0123456789abcdef"),
            (
                "post.sh",
                "#!/bin/sh\nset -eu\necho \"post.sh for $1 in $(pwd)\"\ntest -f files/munge.key\n",
            ),
        ],
    );
    cmdline("");
    let st = provision("good");
    assert_eq!(st.phase, "starting-services", "{st:?}");
    assert_eq!(st.hostname, "cn1");
    let n = st.native.unwrap();
    assert_eq!(n.post_sh_exit, Some(0));
    assert_eq!(
        n.services.unwrap().start,
        ["munge", "sssd", "slurmd"],
        "recorded for start-services"
    );
    for m in [
        "key_read",
        "postscripts_cloned",
        "node_toml_applied",
        "post_sh_done",
    ] {
        assert!(
            n.milestones.contains_key(m),
            "milestone {m}: {:?}",
            n.milestones
        );
    }
    let md = std::fs::metadata(root.join("etc/munge/munge.key")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o400, 101, 106));

    // 2. A postscript (post.sh) exiting non-zero.
    publish(
        &s,
        &[("post.sh", "#!/bin/sh\necho cannot do it >&2\nexit 4\n")],
    );
    let st = provision("post.sh fails");
    assert_eq!(st.phase, "failed");
    let e = st.error.unwrap();
    assert!(
        e.contains("post.sh of ssh://")
            && e.contains("exit status: 4")
            && e.contains("cannot do it"),
        "{e}"
    );

    // 3. node.toml with an unknown field, then with a bad mode.
    publish(
        &s,
        &[
            ("post.sh", ""),
            (
                "node.toml",
                "[[file]]\nsource = 'files/munge.key'\npath = '/etc/k'\nmod = '0400'\n",
            ),
        ],
    );
    let e = provision("unknown field").error.unwrap();
    assert!(
        e.contains("node.toml") && e.contains("unknown field `mod`"),
        "{e}"
    );
    publish(
        &s,
        &[(
            "node.toml",
            "[[file]]\nsource = 'files/munge.key'\npath = '/etc/k'\nmode = 'rw-------'\n",
        )],
    );
    let e = provision("bad mode").error.unwrap();
    assert!(e.contains("mode \"rw-------\": not an octal mode"), "{e}");

    // 4. An NFS server that is not there: the mount fails within its wait.
    publish(
        &s,
        &[(
            "node.toml",
            "[[mount]]\nwhat = '127.0.0.1:/srv/absent'\nwhere = '/mnt/nfs'\ntype = 'nfs'\n\
             options = 'vers=4.2,soft,timeo=10,retrans=1'\nwait = 3\n",
        )],
    );
    let t = Instant::now();
    let e = provision("nfs absent").error.unwrap();
    assert!(
        e.contains("mounting 127.0.0.1:/srv/absent on") && e.contains("gave up after 3s"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());

    // 5. The wrong deploy key on the key partition.
    let (other, _) = keygen(s.dir.path(), "not_the_deploy_key");
    assert!(nodectl(&["install-key", &l.dev, other.to_str().unwrap()])
        .status
        .success());
    let e = provision("wrong deploy key").error.unwrap();
    assert!(e.contains("refused the deploy key"), "{e}");
    assert!(
        nodectl(&["install-key", &l.dev, s.deploy_key.to_str().unwrap()])
            .status
            .success()
    );

    // 6. An unknown host key: a fingerprint that is not the server's.
    std::fs::write(
        &paths.cmdline,
        format!(
            "grendel.hostname=cn1 nodeboot.keydev={} nodeboot.postscripts={} \
             nodeboot.postscripts.hostkey=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            l.dev,
            s.url()
        ),
    )
    .unwrap();
    let e = provision("unknown host key").error.unwrap();
    assert!(
        e.contains("is not in the pinned fingerprints") && e.contains(&fp) && e.contains("refused"),
        "{e}"
    );

    // 7. The git server down: bounded retries, then failed.
    cmdline("");
    let url = s.url();
    drop(s);
    let t = Instant::now();
    let e = provision("git server down").error.unwrap();
    assert!(
        e.contains(&url) && e.contains("unreachable after 2 attempts"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}
