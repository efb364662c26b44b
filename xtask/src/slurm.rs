//! The native provision path end to end (`cargo xtask e2e slurm-user`): a
//! node boots, reads its deploy key from its key partition, clones the
//! site's postscripts repository over SSH, applies its node.toml (NFS from
//! the site's server, the seed's storage layout), runs post.sh (secrets
//! from bootd), starts munge → sssd (LDAP over ldaps) → slurmd → ssh, and
//! the LDAP user alice runs a job writing into her NFS home.
//!
//! The host side runs in namespaces of its own (network, UTS, mount), made
//! by one thread with unshare(2): only loopback, with 10.0.2.2 (what the
//! node calls its gateway: the controller) on it, hostname `ctl`, and
//! tmpfs over /etc/munge, /run/munge, /etc/slurm, /var/spool/slurmctld and
//! /var/log/slurm, so Debian's daemons run with their default paths and
//! touch nothing of the machine's. In there, all real: sshd serving a bare
//! git repository made from `postscripts/` (plus test-generated munge key,
//! CA, SSH host keys), munged with the same munge key, slurmctld
//! (configless), slapd and nfs-ganesha (`crate::site`), bootd, and QEMU
//! (user networking: the node reaches
//! 10.0.2.2 → the namespace's 127.0.0.1). The key disk is made on the host
//! with `nodectl format-disk --key-partition` and `nodectl install-key` on
//! a loop device.
//!
//! The controller reaches the node's slurmd at 127.0.0.2:6818 (its
//! NodeAddr), which QEMU forwards to the guest's 6818. Not at 10.0.2.15
//! (the guest's own address) on the namespace's loopback: a connection
//! from that address reaches the guest with the guest's own address as
//! its source, and the guest drops it.
use crate::e2e::{self, Bootd};
use crate::scenarios::Ctx;
use crate::site;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The data partition of the node's disk (ext4), mounted by node.toml.
const DATA_UUID: &str = "3c2d1e0f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
/// The git server (sshd) on the controller side.
const GIT_PORT: u16 = 2222;
/// The node's sshd, forwarded by QEMU to the namespace's 127.0.0.1.
const NODE_SSH_FWD: u16 = 2223;

/// Which boot.
#[derive(Clone, Copy, PartialEq)]
pub enum Variant {
    /// Everything right: the job runs.
    Good,
    /// The git server's host key is not the pinned one: provisioning fails
    /// naming the fingerprint, no service starts, the key partition is not
    /// left mounted.
    WrongHostKey,
    /// As Good, with a TPM 2.0 (swtpm): the node key is sealed in it, and
    /// the key partition holds no key in clear.
    Tpm,
    /// The site's node.toml names an NFS export the server does not have
    /// (`/srv/nothere`, `wait = 15`): provisioning fails within the bound
    /// with the server's reason, naming the server and the path, and no
    /// service starts.
    NfsMissing,
    /// No NFS server runs at all (`wait = 15`): provisioning fails within
    /// the bound naming the server and mount.nfs's `Connection refused`.
    NfsDown,
    /// The same site provisioned the Grendel way (the seed
    /// compute-plane-network-boot.txt): bootd serves a shell postscript at
    /// /repo/postscript.sh (`nodeboot.postscript=1`), which mounts the key
    /// partition, `git clone`s the site's postscripts with
    /// `StrictHostKeyChecking=no`, and runs their post.sh (after
    /// deepsquare-io/postscripts: rsync of files, chmod/chown,
    /// `update-ca-certificates`, NFS by fstab and `mount -a`, `systemctl
    /// restart` of munge, sssd, slurmd and ssh). The munge key and the LDAP
    /// bind password are in git, as the seed has them. The same job checks.
    Grendel,
}

/// The export `Variant::NfsMissing` mounts.
const MISSING_EXPORT: &str = "10.0.2.2:/srv/nothere";

/// A software TPM 2.0 for the VM (swtpm on a unix control socket, its
/// state in `dir/tpm`: a new TPM when `fresh`, else the same one as
/// before, rebooted); it exits with QEMU.
fn swtpm(dir: &Path, fresh: bool) -> Result<(Daemon, PathBuf)> {
    let state = dir.join("tpm");
    if fresh {
        let _ = std::fs::remove_dir_all(&state);
    }
    std::fs::create_dir_all(&state)?;
    let sock = state.join("swtpm-sock");
    let log = dir.join("swtpm.log");
    let d = Daemon::spawn(
        "swtpm",
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--ctrl", &format!("type=unixio,path={}", sock.display())])
            .args([
                "--log",
                &format!("file={},level=1", dir.join("swtpm-tpm.log").display()),
            ]),
        &log,
    )?;
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("swtpm made no socket {} in 10s", sock.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((d, sock))
}

/// The key partition of the node's disk after the boot: what files it
/// holds (debugfs on a read-only loop device over the partition named
/// nodeboot-key, found with sfdisk: no partition device nodes needed).
fn key_partition_files(img: &Path) -> Result<Vec<String>> {
    let table: Value =
        serde_json::from_str(&run_cmd(&["sfdisk", "--json", &img.to_string_lossy()])?)?;
    let t = &table["partitiontable"];
    let sector = t["sectorsize"].as_u64().unwrap_or(512);
    let p = t["partitions"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "nodeboot-key"))
        .ok_or_else(|| anyhow!("no nodeboot-key partition on {}", img.display()))?;
    let (start, size) = (
        p["start"].as_u64().unwrap_or(0) * sector,
        p["size"].as_u64().unwrap_or(0) * sector,
    );
    let dev = run_cmd(&[
        "losetup",
        "--find",
        "--show",
        "--read-only",
        "--offset",
        &start.to_string(),
        "--sizelimit",
        &size.to_string(),
        &img.to_string_lossy(),
    ])?
    .trim()
    .to_string();
    let l = Loop(dev);
    let out = run_cmd(&["debugfs", "-R", "ls -l /", &l.0])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| *n != "." && *n != "..")
        .map(str::to_string)
        .collect())
}

pub(crate) fn run_cmd(argv: &[&str]) -> Result<String> {
    let o = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    if !o.status.success() {
        bail!(
            "{} failed ({}): {}",
            argv.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A child process killed (and reaped) on drop.
pub(crate) struct Daemon {
    name: &'static str,
    pub(crate) child: Child,
}

impl Daemon {
    pub(crate) fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Daemon> {
        let f = std::fs::File::create(log)?;
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(2) is async-signal-safe. The daemon dies with the
        // namespace thread that spawned it, even if xtask is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon { name, child })
    }
    /// Wait for `addr` to accept connections (the daemon must stay alive).
    pub(crate) fn wait_port(&mut self, addr: &str, log: &Path) -> Result<()> {
        let t = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "{} exited ({st}) before listening on {addr}: {}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("{} does not listen on {addr} after 20s", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loop device detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        // EBUSY while the partitions are still being probed: retry a little.
        for _ in 0..10 {
            if run_cmd(&["losetup", "-d", &self.0]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!("xtask: could not detach {}", self.0);
    }
}

/// The node's disk: GPT with the key partition (the deploy key installed)
/// and an ext4 data partition, made by nodectl on a loop device.
fn key_disk(nodectl: &Path, img: &Path, deploy_key: &Path) -> Result<()> {
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img)?.set_len(256 << 20)?;
    let dev = run_cmd(&[
        "losetup",
        "--find",
        "--show",
        "--partscan",
        &img.to_string_lossy(),
    ])?
    .trim()
    .to_string();
    let l = Loop(dev);
    let n = nodectl.to_string_lossy();
    run_cmd(&[
        &n,
        "format-disk",
        &l.0,
        "--fs",
        "ext4",
        "--uuid",
        DATA_UUID,
        "--label",
        "scratch",
        "--key-partition",
        "16M",
    ])?;
    run_cmd(&[&n, "install-key", &l.0, &deploy_key.to_string_lossy()])?;
    Ok(())
}

/// Enter new network, UTS and mount namespaces (this thread only; what it
/// starts inherits them) and set them up; see the module doc.
fn enter_namespaces() -> Result<()> {
    // SAFETY: unshare(2) has no memory-safety preconditions; these
    // namespaces are per-thread (CLONE_NEWNS implies CLONE_FS for this thread).
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(NEWNET|NEWUTS|NEWNS)");
    }
    run_cmd(&["mount", "--make-rprivate", "/"])?;
    run_cmd(&["ip", "link", "set", "lo", "up"])?;
    run_cmd(&["ip", "addr", "add", "10.0.2.2/32", "dev", "lo"])?;
    run_cmd(&["hostname", "ctl"])?;
    for d in [
        "/etc/munge",
        "/run/munge",
        "/etc/slurm",
        "/var/spool/slurmctld",
        "/var/log/slurm",
    ] {
        std::fs::create_dir_all(d)?;
        run_cmd(&["mount", "-t", "tmpfs", "-o", "mode=0755", "nodeboot-e2e", d])?;
    }
    std::fs::create_dir_all("/run/sshd")?;
    Ok(())
}

/// The namespace's names (srun resolves its own host name, `ctl`): a file
/// bind-mounted over /etc/hosts in the private mount namespace.
fn hosts_file(dir: &Path) -> Result<()> {
    let h = dir.join("hosts");
    std::fs::write(&h, "127.0.0.1 localhost\n10.0.2.2 ctl\n127.0.0.2 cn1\n")?;
    run_cmd(&["mount", "--bind", &h.to_string_lossy(), "/etc/hosts"])?;
    // The controller knows alice too (a site's controller reads the same
    // LDAP): srun --uid=alice resolves her here, the node through sssd.
    for (file, line) in [
        (
            "passwd",
            format!(
                "alice:x:{u}:{u}:Alice Liddell:/home/ldap-users/alice:/bin/bash\n",
                u = site::ALICE_UID
            ),
        ),
        (
            "group",
            format!("researchers:x:{}:alice\n", site::ALICE_UID),
        ),
    ] {
        let copy = dir.join(format!("ctl-{file}"));
        let mut text = std::fs::read_to_string(format!("/etc/{file}"))?;
        text.push_str(&line);
        std::fs::write(&copy, text)?;
        run_cmd(&[
            "mount",
            "--bind",
            &copy.to_string_lossy(),
            &format!("/etc/{file}"),
        ])?;
    }
    Ok(())
}

fn keygen(path: &Path, kind: &str, comment: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let mut argv = vec!["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment];
    if kind == "rsa" {
        argv.extend(["-b", "2048"]);
    }
    let p = path.to_string_lossy();
    argv.extend(["-f", &p]);
    run_cmd(&argv).map(|_| ())
}

/// `SHA256:…` of a public key file.
fn fingerprint(pubkey: &Path) -> Result<String> {
    let out = run_cmd(&["ssh-keygen", "-lf", &pubkey.to_string_lossy()])?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("ssh-keygen -lf: {out}"))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// The site's fork of `postscripts/`: secrets added, endpoints set to the
/// test's, the node.toml of this node (the reference's without NFS, which
/// cannot be served here; its disk by the test's UUID, ext4).
fn site_repo(
    dir: &Path,
    munge_key: &[u8],
    bind_pw: &str,
    variant: Variant,
) -> Result<(PathBuf, String, PathBuf)> {
    let work = dir.join("postscripts");
    let _ = std::fs::remove_dir_all(&work);
    copy_tree(&crate::build::root().join("postscripts"), &work)?;
    let f = work.join("files");
    // The munge key stays out of git: bootd serves it to cn1 sealed to
    // cn1's key, and post.sh installs it.
    let _ = munge_key;
    let post = std::fs::read_to_string(work.join("post.sh"))?;
    std::fs::write(
        work.join("post.sh"),
        format!(
            "{post}\n# The munge key and the LDAP bind password are not in git: bootd\n\
             # serves them to this host sealed to the node's key, which signs the request.\n\
             nodectl secret fetch munge.key --dest /etc/munge/munge.key --mode 0400 --owner munge\n\
             nodectl secret fetch sssd-bind.conf --dest /etc/sssd/conf.d/50-bind.conf --mode 0600\n"
        ),
    )?;
    let ca = f.join("certs/private-ca.pem");
    crate::site::make_ca(&dir.join("ca.key"), &ca, "/CN=nodeboot e2e private CA")?;
    for kind in ["ed25519", "ecdsa", "rsa"] {
        keygen(
            &f.join(format!("ssh/ssh_host_{kind}_key")),
            kind,
            "root@cn1",
        )?;
    }
    // The site's endpoints: its LDAP server (slapd, ldaps with a
    // certificate from the site CA), by the name in that certificate.
    let sssd = std::fs::read_to_string(f.join("sssd/sssd.conf"))?;
    let sssd = sssd.replace(
        "ldap_uri = ldaps://ldap.example.com",
        &format!("ldap_uri = ldaps://{}", site::LDAP_NAME),
    );
    if !sssd.contains(site::LDAP_NAME) {
        bail!("postscripts/files/sssd/sssd.conf: no ldap_uri = ldaps://ldap.example.com to point at the test's LDAP server");
    }
    std::fs::write(f.join("sssd/sssd.conf"), sssd)?;
    let defaults = std::fs::read_to_string(f.join("slurm/slurmd_defaults"))?.replace(
        "slurm-cluster-example-1-controller-0.example.com:6817",
        "10.0.2.2:6817",
    );
    if !defaults.contains("--conf-server 10.0.2.2:6817") {
        bail!("postscripts/files/slurm/slurmd_defaults: no --conf-server to point at the test's controller");
    }
    std::fs::write(f.join("slurm/slurmd_defaults"), defaults)?;
    // The reference node.toml with the site's NFS server (nfs-ganesha on
    // the controller side) and the test disk's UUID.
    let mut reference = std::fs::read_to_string(work.join("node.toml"))?.replace(
        "what = \"nfs.example.com:/srv/cluster\"",
        "what = \"10.0.2.2:/srv/cluster\"",
    );
    if variant == Variant::NfsDown {
        reference = reference.replace(
            "what = \"10.0.2.2:/srv/cluster\"\nwhere = \"/mnt/nfs\"\ntype = \"nfs\"\noptions = \"vers=4.2,hard,noatime\"\nwait = 60",
            "what = \"10.0.2.2:/srv/cluster\"\nwhere = \"/mnt/nfs\"\ntype = \"nfs\"\noptions = \"vers=4.2,hard,noatime\"\nwait = 15",
        );
    }
    if variant == Variant::NfsMissing {
        reference = reference.replace(
            "what = \"10.0.2.2:/srv/cluster\"\nwhere = \"/mnt/nfs\"\ntype = \"nfs\"\noptions = \"vers=4.2,hard,noatime\"\nwait = 60",
            &format!("what = \"{MISSING_EXPORT}\"\nwhere = \"/mnt/nfs\"\ntype = \"nfs\"\noptions = \"vers=4.2,hard,noatime\"\nwait = 15"),
        );
    }
    let mut blocks: Vec<String> = Vec::new();
    for b in reference.split("\n\n") {
        if b.contains("[[file]]") && b.contains("munge.key") {
            continue; // from bootd's secrets instead (post.sh)
        }
        blocks.push(
            b.replace("6f1c9d3e-5b7a-4c1e-9d2f-0a1b2c3d4e5f", DATA_UUID)
                .replace("type = \"xfs\"", "type = \"ext4\""),
        );
    }
    // The site's names (a site has DNS; here the node would ask QEMU's DNS
    // proxy, which has nowhere to go from the namespace, and wait): slurmd
    // and slurmstepd resolve the controller's and srun's host name, ctl.
    std::fs::write(
        f.join("hosts"),
        format!(
            "127.0.0.1 localhost\n10.0.2.15 cn1\n10.0.2.2 ctl {}\n",
            site::LDAP_NAME
        ),
    )?;
    // The operator's key for root (e2e: the node's journal is fetched over
    // SSH when a check fails).
    std::fs::copy(
        dir.join("admin_ed25519.pub"),
        f.join("root_authorized_keys"),
    )?;
    blocks.push(
        "# The operator's SSH key (e2e)\n[[file]]\nsource = \"files/root_authorized_keys\"\npath = \"/root/.ssh/authorized_keys\"\nmode = \"0600\"\n"
            .into(),
    );
    blocks.push(
        "# The site's hosts file (e2e)\n[[file]]\nsource = \"files/hosts\"\npath = \"/etc/hosts\"\nmode = \"0644\"\n"
            .into(),
    );
    let node_toml = blocks.join("\n\n");
    if !node_toml.contains(DATA_UUID)
        || !(node_toml.contains("what = \"10.0.2.2:/srv/cluster\"")
            || variant == Variant::NfsMissing && node_toml.contains(MISSING_EXPORT))
        || node_toml.contains("munge.key")
    {
        bail!("could not derive the test's node.toml from postscripts/node.toml:\n{node_toml}");
    }
    std::fs::write(work.join("node.toml"), node_toml)?;
    if variant == Variant::Grendel {
        grendel_repo(&work, munge_key, bind_pw)?;
    }
    let git = |args: &[&str]| -> Result<String> {
        let mut a = vec![
            "git",
            "-C",
            work.to_str().unwrap_or_default(),
            "-c",
            "user.name=nodeboot-e2e",
            "-c",
            "user.email=e2e@localhost",
        ];
        a.extend(args);
        run_cmd(&a)
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "site postscripts (e2e)"])?;
    let commit = git(&["rev-parse", "HEAD"])?.trim().to_string();
    let bare = dir.join("git/postscripts.git");
    let _ = std::fs::remove_dir_all(&bare);
    run_cmd(&[
        "git",
        "init",
        "-q",
        "--bare",
        "-b",
        "main",
        &bare.to_string_lossy(),
    ])?;
    git(&["push", "-q", &bare.to_string_lossy(), "main"])?;
    Ok((bare, commit, ca))
}

/// The Grendel path's scripts (`Variant::Grendel`), in `site/grendel/`:
/// the image postscript bootd serves, and the repository's post.sh and the
/// scripts it runs (name, text, executable).
const GRENDEL_POSTSCRIPT: &str = include_str!("site/grendel/postscript.sh");
const GRENDEL_REPO: &[(&str, &str)] = &[
    ("post.sh", include_str!("site/grendel/post.sh")),
    (
        "postscripts/ldap",
        include_str!("site/grendel/postscripts/ldap"),
    ),
    (
        "postscripts/fs_mount",
        include_str!("site/grendel/postscripts/fs_mount"),
    ),
    (
        "postscripts/slurm",
        include_str!("site/grendel/postscripts/slurm"),
    ),
    (
        "postscripts/set-motd",
        include_str!("site/grendel/postscripts/set-motd"),
    ),
];

/// Turn the site's repository (`work`, made for the native path) into the
/// Grendel path's, as the seed has it: no node.toml; post.sh and
/// postscripts/ from `site/grendel/`; the munge key in git
/// (files/munge/munge.key) and the LDAP bind password in sssd.conf.
fn grendel_repo(work: &Path, munge_key: &[u8], bind_pw: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::remove_file(work.join("node.toml"))?;
    let f = work.join("files");
    std::fs::write(f.join("munge/munge.key"), munge_key)?;
    let conf = f.join("sssd/sssd.conf");
    let sssd = std::fs::read_to_string(&conf)?;
    let marker = "[domain/deepsquare-ldap]\n";
    if !sssd.contains(marker) {
        bail!(
            "{}: no {marker:?} to put the bind password under",
            conf.display()
        );
    }
    std::fs::write(
        &conf,
        sssd.replacen(
            marker,
            &format!("{marker}ldap_default_authtok = {bind_pw}\n"),
            1,
        ),
    )?;
    for (name, text) in GRENDEL_REPO {
        let p = work.join(name);
        std::fs::create_dir_all(p.parent().unwrap_or(work))?;
        std::fs::write(&p, text.replace("@DATA_UUID@", DATA_UUID))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// bootd's /repo/ for the Grendel path: postscript.sh cloning `url`.
fn grendel_postscript(dir: &Path, url: &str) -> Result<PathBuf> {
    let repo = dir.join("grendel-repo");
    std::fs::create_dir_all(&repo)?;
    std::fs::write(
        repo.join("postscript.sh"),
        GRENDEL_POSTSCRIPT.replace("@GIT_URL@", url),
    )?;
    Ok(repo)
}

/// sshd on 127.0.0.1:GIT_PORT letting the deploy key in as root.
fn git_server(dir: &Path, host_key: &Path, deploy_pub: &Path) -> Result<Daemon> {
    let ak = dir.join("authorized_keys");
    std::fs::copy(deploy_pub, &ak)?;
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {GIT_PORT}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
             PidFile {pid}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowUsers root\nLogLevel VERBOSE\n",
            hk = host_key.display(),
            ak = ak.display(),
            pid = dir.join("sshd.pid").display(),
        ),
    )?;
    let log = dir.join("sshd.log");
    let mut d = Daemon::spawn(
        "sshd",
        Command::new("/usr/sbin/sshd").args(["-D", "-e", "-f", &cfg.to_string_lossy()]),
        &log,
    )?;
    d.wait_port(&format!("127.0.0.1:{GIT_PORT}"), &log)?;
    Ok(d)
}

/// munged and slurmctld (configless) with the cluster's munge key.
fn controller(dir: &Path, munge_key: &[u8]) -> Result<(Daemon, Daemon)> {
    let key = Path::new("/etc/munge/munge.key");
    std::fs::write(key, munge_key)?;
    run_cmd(&[
        "chown",
        "munge:munge",
        "/etc/munge",
        "/run/munge",
        "/etc/munge/munge.key",
    ])?;
    run_cmd(&["chmod", "0700", "/etc/munge"])?;
    run_cmd(&["chmod", "0400", "/etc/munge/munge.key"])?;
    let mlog = dir.join("munged.log");
    let mut munged = Daemon::spawn(
        "munged",
        Command::new("setpriv").args([
            "--reuid=munge",
            "--regid=munge",
            "--init-groups",
            "/usr/sbin/munged",
            "--foreground",
            "--seed-file=/run/munge/munged.seed",
            "--pid-file=/run/munge/munged.pid",
            "--log-file=/run/munge/munged.log",
        ]),
        &mlog,
    )?;
    let t = Instant::now();
    while !Path::new("/run/munge/munge.socket.2").exists() {
        if let Some(st) = munged.child.try_wait()? {
            bail!(
                "munged exited ({st}): {}",
                std::fs::read_to_string(&mlog).unwrap_or_default()
            );
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("munged made no socket in 10s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(
        "/etc/slurm/slurm.conf",
        "ClusterName=nodeboot\nSlurmctldHost=ctl(10.0.2.2)\n\
         SlurmctldParameters=enable_configless\nSlurmUser=root\nAuthType=auth/munge\n\
         ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
         StateSaveLocation=/var/spool/slurmctld\nSlurmctldLogFile=/var/log/slurm/slurmctld.log\n\
         SlurmdDebug=debug\n\
         SlurmctldPidFile=/var/spool/slurmctld/slurmctld.pid\nJobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\nReturnToService=2\nMpiDefault=none\n\
         MessageTimeout=60\n\
         NodeName=cn1 NodeAddr=127.0.0.2 Port=6818 CPUs=1 State=UNKNOWN\n\
         PartitionName=debug Nodes=cn1 Default=YES MaxTime=INFINITE State=UP\n",
    )?;
    let clog = dir.join("slurmctld.log");
    let mut ctld = Daemon::spawn(
        "slurmctld",
        Command::new("/usr/sbin/slurmctld").args(["-D", "-i"]),
        &clog,
    )?;
    ctld.wait_port("10.0.2.2:6817", &clog)?;
    Ok((munged, ctld))
}

/// Run `argv` on cn1 through Slurm; its stdout.
fn srun(args: &[&str]) -> Result<String> {
    let mut a = vec!["timeout", "120", "srun", "-w", "cn1", "-N1", "-t", "2"];
    a.extend(args);
    run_cmd(&a)
}

/// The first job as early as it can run: from QEMU start, ask slurmctld
/// twice a second whether cn1 is idle, then `srun -w cn1 hostname`, which
/// must print cn1. Seconds since `t0`, to the tenth.
fn first_job_poller(t0: Instant, stop: &std::sync::atomic::AtomicBool) -> Result<f64> {
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("the boot ended before cn1 was idle in Slurm");
        }
        let state = run_cmd(&["sinfo", "-h", "-n", "cn1", "-o", "%T"]).unwrap_or_default();
        if state.trim() == "idle" {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let host = srun(&["hostname"])?;
    if host.trim() != "cn1" {
        bail!("srun -w cn1 hostname printed {host:?}, not cn1");
    }
    Ok(tenths(t0.elapsed().as_secs_f64()))
}

fn tenths(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// Seconds since QEMU start of the first console line containing `pat`.
fn console_at(console: &str, pat: &str) -> Option<f64> {
    console
        .lines()
        .find(|l| l.contains(pat))
        .and_then(|l| l.split('|').next())
        .and_then(|t| t.trim().parse().ok())
}

/// The milestones `cargo xtask bench first-job` compares, the same names
/// for both paths (seconds since QEMU start): switch_root, provision_start
/// (nodectl-provision.service starting), cloned (the postscripts
/// repository), configured (node.toml and post.sh applied / the Grendel
/// postscript done), munge_active, sssd_active, slurmd_active, first_job.
fn bench_milestones(r: &e2e::BootResult, variant: Variant, first_job: f64) -> Result<Value> {
    let console = std::fs::read_to_string(&r.console)?;
    let (cloned, configured) = match variant {
        Variant::Grendel => (
            "grendel-milestone cloned",
            "grendel-milestone postscript-done",
        ),
        _ => (
            "milestone=\"postscripts_cloned\"",
            "milestone=\"post_sh_done\"",
        ),
    };
    let mut m = serde_json::Map::new();
    m.insert(
        "switch_root".into(),
        r.milestones
            .get("switch_root")
            .cloned()
            .unwrap_or(Value::Null),
    );
    for (name, pat) in [
        ("provision_start", "Starting nodectl-provision"),
        ("cloned", cloned),
        ("configured", configured),
        ("munge_active", "Started munge.service"),
        ("sssd_active", "Started sssd.service"),
        ("slurmd_active", "Started slurmd.service"),
    ] {
        let Some(t) = console_at(&console, pat) else {
            bail!("no {pat:?} on the console ({})", r.console.display());
        };
        m.insert(name.into(), json!(tenths(t)));
    }
    m.insert("first_job".into(), json!(first_job));
    Ok(Value::Object(m))
}

/// What the host checks once the node says it is ready: the node idles in
/// Slurm, a job runs, and what node.toml installed is as it should be.
fn checks(
    t0: Instant,
    ca: &Path,
    node_host_pub: &str,
    commit: &str,
    variant: Variant,
) -> Result<Value> {
    let t = Instant::now();
    loop {
        let state = run_cmd(&["sinfo", "-h", "-n", "cn1", "-o", "%T"]).unwrap_or_default();
        if state.trim() == "idle" {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!(
                "cn1 is {:?} in Slurm, not idle, 120s after provisioning",
                state.trim()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let idle = t0.elapsed().as_secs_f64();
    let host = srun(&["hostname"])?;
    let first_job = t0.elapsed().as_secs_f64();
    if host.trim() != "cn1" {
        bail!("srun -w cn1 hostname printed {host:?}, not cn1");
    }
    let modes = srun(&[
        "stat",
        "-c",
        "%a %U:%G %n",
        "/etc/munge/munge.key",
        "/etc/sssd/sssd.conf",
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/etc/default/slurmd",
    ])?;
    let want = [
        "400 munge:munge /etc/munge/munge.key",
        "600 root:root /etc/sssd/sssd.conf",
        "600 root:root /etc/ssh/ssh_host_ed25519_key",
        "644 root:root /etc/ssh/ssh_host_ed25519_key.pub",
        "644 root:root /etc/default/slurmd",
    ];
    if modes.lines().collect::<Vec<_>>() != want {
        bail!(
            "owners and modes on cn1:\n{modes}\nwanted:\n{}",
            want.join("\n")
        );
    }
    // The native path starts them before it says ready; the Grendel
    // postscript only queues their restarts (--no-block) and nothing waits
    // for them: there, they get a bounded while to come up.
    let t = Instant::now();
    loop {
        // Exit status 0 when one of them is active: the words say it.
        let active = srun(&["systemctl", "is-active", "munge", "sssd", "slurmd", "ssh"])?;
        let words: Vec<&str> = active.split_whitespace().collect();
        if words == ["active"; 4] {
            break;
        }
        if variant != Variant::Grendel
            || !words.contains(&"activating")
            || t.elapsed() > Duration::from_secs(180)
        {
            bail!("services on cn1: {active}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let disk = srun(&["findmnt", "-n", "-o", "SOURCE,FSTYPE", "/mnt/disk"])?;
    if !disk.contains("ext4") {
        bail!("/mnt/disk on cn1: {disk:?}");
    }
    let scratch = srun(&["readlink", "/mnt/scratch"])?;
    if scratch.trim() != "/mnt/disk/scratch" {
        bail!("/mnt/scratch on cn1 -> {scratch:?}");
    }
    // The key partition: known to udev, mounted nowhere.
    let keypart = srun(&["readlink", "-f", "/dev/disk/by-partlabel/nodeboot-key"])?;
    let sources = srun(&["findmnt", "-rn", "-o", "SOURCE"])?;
    if sources.lines().any(|s| s.trim() == keypart.trim()) {
        bail!(
            "the key partition {} is still mounted on cn1",
            keypart.trim()
        );
    }
    let motd = srun(&["cat", "/etc/motd"])?;
    if !motd.contains("Welcome to cn1") {
        bail!("post.sh did not run with the hostname: /etc/motd is {motd:?}");
    }
    // The CA is in the trust store (its base64 body in the bundle).
    let pem = std::fs::read_to_string(ca)?;
    let body = pem
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow!("{}: empty", ca.display()))?;
    let n = srun(&[
        "grep",
        "-c",
        "-F",
        body,
        "/etc/ssl/certs/ca-certificates.crt",
    ])?;
    if n.trim() != "1" {
        bail!("the site CA is not in cn1's trust store (grep -c: {n:?})");
    }
    if variant != Variant::Grendel {
        // The native path's own: its clone removed, its journal fields.
        let run = srun(&["ls", "/run/nodeboot"])?;
        if run.lines().any(|l| l.trim() == "postscripts") {
            bail!("the clone (with the site's secrets) was left in /run/nodeboot: {run}");
        }
        let j = srun(&[
            "journalctl",
            "-q",
            "--no-pager",
            "-o",
            "cat",
            "NODEBOOT_PHASE=cloning",
        ])?;
        if !j.contains("provision phase") {
            bail!("journalctl NODEBOOT_PHASE=cloning on cn1 found {j:?}");
        }
    }
    // The node's SSH host key is the repository's.
    let scan = run_cmd(&[
        "ssh-keyscan",
        "-T",
        "20",
        "-t",
        "ed25519",
        "-p",
        &NODE_SSH_FWD.to_string(),
        "127.0.0.1",
    ])?;
    let want_key = node_host_pub.split_whitespace().nth(1).unwrap_or("?");
    if !scan.contains(want_key) {
        bail!("cn1's sshd offers {scan:?}, not the repository's host key");
    }
    Ok(json!({
        "slurm_idle": (idle * 10.0).round() / 10.0,
        "first_job": (first_job * 10.0).round() / 10.0,
        "srun_hostname": host.trim(),
        "modes": want,
        "commit": commit,
    }))
}

/// The site's user on cn1, as an operator would check it: alice (from
/// LDAP through sssd) runs a job that writes into her NFS home, and every
/// path of the seed's storage layout is what it should be.
fn user_checks(t0: Instant, export: &Path) -> Result<Value> {
    let id = srun(&["--uid=alice", "--gid=researchers", "id"])?;
    let alice_first_job = t0.elapsed().as_secs_f64();
    let u = site::ALICE_UID;
    let want_id = format!("uid={u}(alice) gid={u}(researchers) groups={u}(researchers)");
    if id.trim() != want_id {
        bail!(
            "srun -w cn1 --uid=alice id printed {:?}, not {want_id:?}",
            id.trim()
        );
    }
    let pw = srun(&["getent", "passwd", "alice"])?;
    // The home is sssd's override_homedir, not LDAP's /home/alice.
    let want_pw = format!("alice:*:{u}:{u}:Alice Liddell:/home/ldap-users/alice:/bin/bash");
    if pw.trim() != want_pw {
        bail!(
            "getent passwd alice on cn1: {:?}, not {want_pw:?}",
            pw.trim()
        );
    }
    let wrote = srun(&[
        "--uid=alice",
        "--gid=researchers",
        "sh",
        "-c",
        "cd ~alice && echo ok > probe && pwd -P && ls -ln probe",
    ])?;
    let probe = export.join("home/ldap-users/alice/probe");
    let on_server = std::fs::read_to_string(&probe).with_context(|| {
        format!(
            "alice's job wrote no {} on the NFS server ({wrote:?})",
            probe.display()
        )
    })?;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&probe)?;
    if on_server != "ok\n" || meta.uid() != u || meta.gid() != u {
        bail!(
            "{} on the NFS server: {on_server:?}, owner {}:{} (alice's job said {wrote:?})",
            probe.display(),
            meta.uid(),
            meta.gid()
        );
    }
    // The seed's layout: (path, what backs it).
    let nfs = srun(&["findmnt", "-n", "-o", "SOURCE,FSTYPE", "/mnt/nfs"])?;
    let nfs: Vec<&str> = nfs.split_whitespace().collect();
    if nfs != ["10.0.2.2:/srv/cluster", "nfs4"] {
        bail!("/mnt/nfs on cn1 is {nfs:?}, not the site's NFS export");
    }
    let layout = [
        ("/home/ldap-users", "/mnt/nfs/home/ldap-users"),
        ("/opt/cache/enroot", "/mnt/nfs/cache/enroot"),
        ("/opt/cache/shared", "/mnt/nfs/cache/shared"),
        ("/opt/cache/persistent", "/mnt/nfs/cache/persistent"),
        ("/opt/cache/world-tmp", "/mnt/nfs/cache/world-tmp"),
        ("/opt/cache/disk/tmp", "/mnt/disk/tmp"),
        ("/opt/cache/disk/world-tmp", "/mnt/disk/world-tmp"),
        ("/mnt/scratch", "/mnt/disk/scratch"),
    ];
    let paths = layout.iter().map(|(p, _)| *p);
    // The links, then what they lead to: its type and the mount holding it.
    let links = srun(
        &["stat", "-c", "%N"]
            .into_iter()
            .chain(paths.clone())
            .collect::<Vec<_>>(),
    )?;
    let targets = srun(
        &["stat", "-L", "-c", "%F %m"]
            .into_iter()
            .chain(paths)
            .collect::<Vec<_>>(),
    )?;
    let seen: Vec<String> = links
        .lines()
        .zip(targets.lines())
        .map(|(l, t)| format!("{l} {t}"))
        .collect();
    let mut table = serde_json::Map::new();
    for (i, (path, target)) in layout.iter().enumerate() {
        let line = seen.get(i).map(String::as_str).unwrap_or_default();
        let mount = if target.starts_with("/mnt/nfs") {
            "/mnt/nfs"
        } else {
            "/mnt/disk"
        };
        let want = format!("'{path}' -> '{target}' directory {mount}");
        if line != want {
            bail!("{path} on cn1: {line:?}, not {want:?}");
        }
        table.insert(path.to_string(), json!(format!("{target} ({mount})")));
    }
    Ok(json!({
        "id": id.trim(),
        "getent": pw.trim(),
        "probe": probe.display().to_string(),
        "alice_first_job": (alice_first_job * 10.0).round() / 10.0,
        "layout": table,
    }))
}

/// bootd's inventory (cn1 and an image, for its iPXE script and token) and
/// its secrets directory (0700) holding cn1's munge key and LDAP bind
/// password.
fn boot_server_files(dir: &Path, munge_key: &[u8], bind_pw: &str) -> Result<(PathBuf, PathBuf)> {
    let inv = dir.join("inventory.toml");
    std::fs::write(
        &inv,
        format!(
            "[[image]]\nname = \"live\"\nkernel = \"vmlinuz\"\ninitrd = [\"initrd.img\"]\n\
             liveimg = \"live.squashfs\"\ncmdline = 'console=ttyS0 grendel.hostname={{{{ $.host.Name }}}}'\n\n\
             [[host]]\nname = \"{host}\"\nimage = \"live\"\nprovision = true\n\
             [[host.interfaces]]\nmac = \"{mac}\"\n",
            host = e2e::HOSTNAME,
            mac = e2e::MAC,
        ),
    )?;
    let secrets = dir.join("secrets");
    let _ = std::fs::remove_dir_all(&secrets);
    std::fs::create_dir_all(secrets.join(e2e::HOSTNAME))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
    let key = secrets.join(e2e::HOSTNAME).join("munge.key");
    std::fs::write(&key, munge_key)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    // The LDAP bind password, as an sssd.conf snippet for the seed's domain.
    let bind = secrets.join(e2e::HOSTNAME).join("sssd-bind.conf");
    std::fs::write(
        &bind,
        format!("[domain/deepsquare-ldap]\nldap_default_authtok = {bind_pw}\n"),
    )?;
    std::fs::set_permissions(&bind, std::fs::Permissions::from_mode(0o600))?;
    Ok((inv, secrets))
}

/// The node enrolled its key and got its munge key sealed to it (the job
/// above ran with it): bootd kept the key the node reports, logged the
/// sealed secret, and the boot's token (anyone can read it from
/// /boot/ipxe) opens nothing. Returns the node's key fingerprint.
fn secret_checks(
    port: u16,
    token: &str,
    identity: &str,
    state: &Path,
    log: &Path,
    variant: Variant,
) -> Result<String> {
    let code = run_cmd(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://127.0.0.1:{port}/secrets/munge.key?mac={}", e2e::MAC),
    ])?;
    if code.trim() != "401" {
        bail!("cn1's boot token got HTTP {code} for its munge key, not 401");
    }
    let Some(fp) = identity
        .split_whitespace()
        .next()
        .filter(|f| f.starts_with("SHA256:"))
    else {
        bail!("the node reports no key: {identity:?}");
    };
    let want_kind = match variant {
        Variant::Tpm => "(sealed in the TPM)",
        _ => "(in clear on the key partition)",
    };
    if !identity.ends_with(want_kind) {
        bail!("the node's key is {identity:?}, not {want_kind}");
    }
    let kept = std::fs::read_to_string(state.join("keys/cn1.pub"))
        .with_context(|| format!("bootd kept no key for cn1 in {}", state.display()))?;
    let text = std::fs::read_to_string(log)?;
    if !text.contains(&format!("enrolled key {fp} (armed by bootd arm); disarmed")) {
        bail!("no enrollment of {fp} in bootd's log {}", log.display());
    }
    if !text.contains(&format!("secret munge.key sent to cn1 ({}", e2e::MAC))
        || !text.contains(&format!("bytes sealed to key {fp}"))
    {
        bail!(
            "bootd's log {} shows no munge key sealed to {fp}",
            log.display()
        );
    }
    if kept.split_whitespace().count() < 3 {
        bail!("bootd's key file for cn1 is not a key: {kept}");
    }
    Ok(identity.to_string())
}

/// The node's journal over SSH (the operator's key, the node's host key
/// pinned) into `dir/node-journal.log`: after a failed check, and after a
/// passed one of the slurm-user and slurm-grendel boots, where it is where
/// their time went (with `systemd-analyze blame` and the critical chains of
/// sssd and slurmd, in `dir/node-analyze.log`).
fn node_journal(dir: &Path) {
    let kh = dir.join("node_known_hosts");
    let pubk = std::fs::read_to_string(dir.join("postscripts/files/ssh/ssh_host_ed25519_key.pub"))
        .unwrap_or_default();
    let _ = std::fs::write(&kh, format!("[127.0.0.1]:{NODE_SSH_FWD} {pubk}"));
    let on_node = |remote: &[&str]| -> String {
        let out = Command::new("ssh")
            .args(["-i", &dir.join("admin_ed25519").to_string_lossy()])
            .args(["-o", &format!("UserKnownHostsFile={}", kh.display())])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=20", "-p", &NODE_SSH_FWD.to_string()])
            .arg("root@127.0.0.1")
            .args(remote)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => format!(
                "{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("ssh: {e}"),
        }
    };
    let journal = on_node(&["journalctl", "-b", "--no-pager", "-o", "short-monotonic"]);
    let _ = std::fs::write(dir.join("node-journal.log"), journal);
    let mut analyze = on_node(&["systemd-analyze", "blame", "--no-pager"]);
    analyze += &on_node(&[
        "systemd-analyze",
        "critical-chain",
        "--no-pager",
        "sssd.service",
        "slurmd.service",
        "munge.service",
    ]);
    let _ = std::fs::write(dir.join("node-analyze.log"), analyze);
    eprintln!(
        "xtask: the node's journal: {}",
        dir.join("node-journal.log").display()
    );
}

/// Seconds since QEMU start of the console line logging milestone `name`.
fn console_milestone(console: &Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(console).ok()?;
    text.lines()
        .find(|l| l.contains("provision milestone") && l.contains(name))
        .and_then(|l| l.split('|').next())
        .and_then(|t| t.trim().parse().ok())
}

pub fn run(ctx: &Ctx, dir: &Path, variant: Variant) -> Result<Value> {
    let nodectl = crate::build::nodectl_static()?;
    // Keys: the git server's host key, the deploy key, the munge key.
    let host_key = dir.join("git_host_ed25519");
    keygen(&host_key, "ed25519", "git-server")?;
    let deploy = dir.join("deploy_ed25519");
    keygen(&deploy, "ed25519", "deploy")?;
    keygen(&dir.join("admin_ed25519"), "ed25519", "admin")?;
    let mut munge_key = vec![0u8; 1024];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut munge_key)?;
    let mut pw = [0u8; 12];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut pw)?;
    let bind_pw = hex::encode(pw);
    let img = dir.join("keydisk.raw");
    key_disk(&nodectl, &img, &deploy).context("making the node's key disk")?;
    let (bare, commit, ca) = site_repo(dir, &munge_key, &bind_pw, variant)?;
    let node_host_pub =
        std::fs::read_to_string(dir.join("postscripts/files/ssh/ssh_host_ed25519_key.pub"))?;
    let pinned = match variant {
        Variant::Good
        | Variant::Tpm
        | Variant::NfsMissing
        | Variant::NfsDown
        | Variant::Grendel => fingerprint(&host_key.with_extension("pub"))?,
        Variant::WrongHostKey => {
            let other = dir.join("other_host_ed25519");
            keygen(&other, "ed25519", "not-the-git-server")?;
            fingerprint(&other.with_extension("pub"))?
        }
    };
    let url = format!("ssh://root@10.0.2.2:{GIT_PORT}{}", bare.display());
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Value> {
            enter_namespaces()?;
            hosts_file(dir)?;
            let _git = git_server(dir, &host_key, &deploy.with_extension("pub"))?;
            let (_munged, _ctld) = controller(dir, &munge_key)?;
            let _slapd = site::ldap(dir, &dir.join("ca.key"), &ca, &bind_pw)?;
            let (mut ganesha, export) = site::nfs(dir)?;
            if variant == Variant::NfsDown {
                // The site's file server is down for this boot.
                let _ = ganesha.child.kill();
                let _ = ganesha.child.wait();
            }
            let log = dir.join("bootd.log");
            let _ = std::fs::remove_file(&log);
            let (inv, secrets) = boot_server_files(dir, &munge_key, &bind_pw)?;
            let state = dir.join("bootd-state");
            let _ = std::fs::remove_dir_all(&state);
            let mut tpm = match variant {
                Variant::Tpm => Some(swtpm(dir, true)?),
                _ => None,
            };
            let mut args = vec![
                "--inventory".into(),
                inv.display().to_string(),
                "--secrets".into(),
                secrets.display().to_string(),
                "--state".into(),
                state.display().to_string(),
            ];
            if variant == Variant::Grendel {
                args.push("--repo".into());
                args.push(grendel_postscript(dir, &url)?.display().to_string());
            }
            let srv = Bootd::start_with_args(&ctx.bootd, &ctx.art.www, &args, &log)?;
            // The admin arms cn1 for its first key (the real CLI).
            let armed = run_cmd(&[
                &ctx.bootd.to_string_lossy(),
                "arm",
                e2e::HOSTNAME,
                "--for",
                "30m",
                "--url",
                &format!("http://127.0.0.1:{}", srv.port),
                "--admin-token",
                &srv.admin_token.to_string_lossy(),
            ])?;
            eprintln!("xtask: bootd arm: {}", armed.trim());
            // What iPXE would do: ask bootd for cn1's script; its kernel
            // line carries the boot's token.
            let script = run_cmd(&[
                "curl",
                "-sf",
                &format!("http://127.0.0.1:{}/boot/ipxe?mac={}", srv.port, e2e::MAC),
            ])?;
            let token = script
                .split_whitespace()
                .find_map(|w| w.strip_prefix("nodeboot.token="))
                .ok_or_else(|| anyhow!("no nodeboot.token= in cn1's iPXE script:\n{script}"))?
                .to_string();
            let cmdline = if variant == Variant::Grendel {
                // Grendel's: the image postscript, no key pinned, no token.
                e2e::cmdline(srv.port, "nodeboot.postscript=1")
            } else {
                e2e::cmdline(
                    srv.port,
                    &format!(
                        "nodeboot.postscripts={url} nodeboot.postscripts.hostkey={pinned} nodeboot.token={token}"
                    ),
                )
            };
            let port = srv.port;
            let t0 = Instant::now();
            let hostfwd = [
                "tcp:127.0.0.2:6818-:6818".to_string(),
                format!("tcp:127.0.0.1:{NODE_SSH_FWD}-:22"),
            ];
            let (ca, commit2, pubk) = (&ca, &commit, &node_host_pub);
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s2| {
                let mut job: Option<std::thread::ScopedJoinHandle<'_, Result<Value>>> = None;
                let mut found: Option<Value> = None;
                let mut judge = |st: &Value, line: &str| -> Option<Result<()>> {
                    if job.is_none() {
                        let ready = e2e::judge_ready(st, line)?;
                        let p = st["status"]["provision"].clone();
                        let r = ready.and_then(|()| match variant {
                            Variant::Good | Variant::Tpm if p["phase"] == "ready" => Ok(()),
                            Variant::Good | Variant::Tpm => bail!("provisioning did not end ready: {p}"),
                            Variant::Grendel if p["phase"] == "ready" && p["postscript"]["exit_code"] == 0 => Ok(()),
                            Variant::Grendel => bail!("the Grendel postscript did not succeed: {p}"),
                            Variant::WrongHostKey => {
                                let e = p["error"].as_str().unwrap_or_default();
                                if p["phase"] != "failed" || !e.contains("is not in") || !e.contains("refused") {
                                    bail!("provisioning did not fail on the host key as expected: {p}");
                                }
                                if p["native"]["started"].as_array().is_some_and(|a| !a.is_empty()) {
                                    bail!("services were started after a failed provisioning: {p}");
                                }
                                Ok(())
                            }
                            Variant::NfsMissing | Variant::NfsDown => {
                                let e = p["error"].as_str().unwrap_or_default();
                                // The reason: the server's (mount.nfs -v), or when the
                                // kernel's client still holds mount(2) at the bound,
                                // nodectl's own TCP probe of the server.
                                let (export, why): (&str, &[&str]) = if variant == Variant::NfsDown {
                                    ("10.0.2.2:/srv/cluster", &["a TCP connection to the NFS server 10.0.2.2:2049: Connection refused"])
                                } else {
                                    (MISSING_EXPORT, &["reason given by server: No such file or directory", "the NFS server 10.0.2.2:2049 takes TCP connections: check the export path"])
                                };
                                let want = format!("mounting {export} on /mnt/nfs (gave up after 15s)");
                                if p["phase"] != "failed" || !e.contains(&want) || !why.iter().any(|w| e.contains(w)) {
                                    bail!("provisioning did not fail on the NFS mount as expected ({why:?}): {p}");
                                }
                                if p["native"]["started"].as_array().is_some_and(|a| !a.is_empty()) {
                                    bail!("services were started after a failed provisioning: {p}");
                                }
                                Ok(())
                            }
                        });
                        if let Err(e) = r {
                            return Some(Err(e));
                        }
                        if matches!(variant, Variant::WrongHostKey | Variant::NfsMissing | Variant::NfsDown) {
                            found = Some(p);
                            return Some(Ok(()));
                        }
                        let token = token.clone();
                        let identity = p["native"]["identity"].as_str().unwrap_or_default().to_string();
                        let (state, log, export) = (&state, &log, &export);
                        job = Some(s2.spawn(move || {
                            let mut v = checks(t0, ca, pubk, commit2, variant)?;
                            v["user"] = user_checks(t0, export)?;
                            // Where the time went, while the node is up.
                            node_journal(dir);
                            if variant != Variant::Grendel {
                                v["identity"] = json!(secret_checks(port, &token, &identity, state, log, variant)?);
                            }
                            Ok(v)
                        }));
                        return None;
                    }
                    if job.as_ref().is_some_and(|j| j.is_finished()) {
                        let r = job
                            .take()
                            .map(|j| j.join().unwrap_or_else(|_| Err(anyhow!("checks panicked"))))
                            .unwrap_or_else(|| Err(anyhow!("no checks")));
                        if r.is_err() {
                            node_journal(dir);
                        }
                        return Some(r.map(|v| {
                            found = Some(v);
                        }));
                    }
                    None
                };
                let tpm_sock = tpm.as_ref().map(|(_, s)| s.as_path());
                // The first job as early as it can run, whatever the
                // judge waits for.
                let poller = matches!(variant, Variant::Good | Variant::Grendel)
                    .then(|| s2.spawn(|| first_job_poller(t0, &stop)));
                let r = ctx.boot_full(&cmdline, dir, &mut judge, 900, std::slice::from_ref(&img), &hostfwd, tpm_sock);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let first = poller.map(|p| p.join().unwrap_or_else(|_| Err(anyhow!("the first-job poller panicked"))));
                let r = r?;
                let st = r.status.clone().unwrap_or_default();
                let prov = &st["provision"];
                let mut out = json!({
                    "variant": match variant { Variant::Good => "good", Variant::WrongHostKey => "wrong-host-key", Variant::Tpm => "tpm", Variant::NfsMissing => "nfs-missing", Variant::NfsDown => "nfs-down", Variant::Grendel => "grendel" },
                    "seconds": r.seconds,
                    "provision": prov,
                    "host": found.take(),
                });
                if variant == Variant::Tpm {
                    // QEMU is gone: the key partition holds the sealed
                    // blobs and the public key, and no key in clear.
                    let files = key_partition_files(&img)?;
                    for want in ["identity.tpm.pub", "identity.tpm.priv", "identity.pub", "key"] {
                        if !files.iter().any(|f| f == want) {
                            bail!("no {want} on the key partition after the boot: {files:?}");
                        }
                    }
                    if files.iter().any(|f| f == "identity") {
                        bail!("the node key lies in clear on the key partition despite the TPM: {files:?}");
                    }
                    out["key_partition"] = json!(files);
                }
                if let Some(first) = first {
                    let first = first.context("the first job")?;
                    let b = bench_milestones(&r, variant, first)?;
                    let sr = b["switch_root"].as_f64().unwrap_or(0.0);
                    out["first_job"] = json!({
                        "from_qemu_start": first,
                        "from_switch_root": tenths(first - sr),
                    });
                    out["bench"] = b;
                }
                if variant == Variant::Good {
                    let mut m = r.milestones.clone();
                    for name in ["key_read", "postscripts_cloned", "node_toml_applied", "post_sh_done", "services_up"] {
                        if let Some(t) = console_milestone(&r.console, name) {
                            m.insert(name.into(), json!(t));
                        }
                    }
                    if let Some(fj) = out["host"]["first_job"].as_f64() {
                        m.insert("first_job".into(), json!(fj));
                    }
                    for need in ["postscripts_cloned", "services_up", "first_job"] {
                        if !m.contains_key(need) {
                            bail!("milestone {need} missing (console: {})", r.console.display());
                        }
                    }
                    out["milestones"] = Value::Object(m.clone());
                    // Into the demo's report too.
                    let rp = e2e::e2e_dir().join("report.json");
                    let mut top: Value = std::fs::read(&rp)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_else(|| json!({}));
                    top["provision"] = json!({
                        "scenario": "slurm-user",
                        "milestones": m,
                        "srun_hostname": out["host"]["srun_hostname"],
                    });
                    e2e::write_json(&rp, &top)?;
                }
                if variant == Variant::WrongHostKey {
                    // The key was read and its partition unmounted before the
                    // clone was refused.
                    let console = std::fs::read_to_string(&r.console)?;
                    if !console.contains("deploy key read, partition unmounted") {
                        bail!("no sign on the console that the key partition was unmounted ({})", r.console.display());
                    }
                }
                if variant == Variant::Tpm {
                    // A second boot on the same disk and TPM: the initrd
                    // unseals the key (tpm2-tools in the initramfs) and
                    // signs its very first report.
                    let fp = out["host"]["identity"]
                        .as_str()
                        .and_then(|i| i.split_whitespace().next())
                        .unwrap_or_default()
                        .to_string();
                    // The first swtpm lets go of its state (its lock) first.
                    drop(tpm.take());
                    let (_tpm2, sock2) = swtpm(dir, false)?;
                    let dir2 = dir.join("second-boot");
                    std::fs::create_dir_all(&dir2)?;
                    let want = format!("node cn1 fetching mac={}", e2e::MAC);
                    let signed = format!("key={fp}");
                    let mut judge2 = |_: &Value, _: &str| -> Option<Result<()>> {
                        let text = std::fs::read_to_string(&log).ok()?;
                        let after = text.rsplit_once(&format!("{} ready ", e2e::HOSTNAME)).map_or("", |(_, a)| a);
                        let line = after.lines().find(|l| l.contains(&want))?;
                        Some(if line.contains(&signed) {
                            Ok(())
                        } else {
                            Err(anyhow!("the initrd's report of the second boot is not signed by {fp}: {line}"))
                        })
                    };
                    let r2 = ctx.boot_full(&cmdline, &dir2, &mut judge2, 300, std::slice::from_ref(&img), &[], Some(&sock2))?;
                    out["second_boot"] = json!({
                        "initrd_report_signed_by": fp,
                        "seconds": r2.seconds,
                    });
                }
                e2e::write_json(&dir.join("report.json"), &out)?;
                drop(srv);
                Ok(out)
            })
        })
        .join()
        .map_err(|_| anyhow!("the namespace thread panicked"))?
    })
}
