//! `nodectl identity`: this node's key, kept on its key partition (in
//! clear, mode 0600) or sealed in its TPM 2.0, and the requests it signs.
//!
//! The key (`nodeboot_identity::NodeKey`: an Ed25519 signing key and an
//! age post-quantum identity derived from one 32-byte seed) lives beside
//! the deploy key on the key partition, never on tmpfs or in the image:
//!
//! - `identity` (mode 0600): `nodeboot-identity-v1 <hex seed>`, when the
//!   node has no TPM (or `--tpm off`);
//! - `identity.tpm.pub` + `identity.tpm.priv`: the seed sealed to the TPM
//!   (a sealed-data object under the owner hierarchy's primary ECC key,
//!   which the TPM derives again at each use), when it has one: the blobs
//!   are useless off that TPM, so a stolen disk gives nothing;
//! - `identity.pub`: the public key line, for the admin (not secret).
//!
//! `nodectl identity init` makes the key (first boot, or an admin preparing
//! a disk), `show` prints the public key and its fingerprint (the
//! inventory's `key = "SHA256:…"` pin), `enroll` sends it to bootd (`POST
//! /identity/enroll`, signed by the key itself), which accepts it while the
//! host is armed. Every later request that acts for the node (a secret, a
//! status) is signed: [`Signer`].
use anyhow::{anyhow, bail, Context, Result};
use nodeboot_identity::NodeKey;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

use crate::cmdline::{BootParams, Cmdline};
use crate::disk::{System, Tools};

/// The key in clear, on the key partition.
pub const CLEAR_FILE: &str = "identity";
/// The public key line, on the key partition.
pub const PUBLIC_FILE: &str = "identity.pub";
/// The sealed object's public and private parts (TPM).
pub const TPM_PUB: &str = "identity.tpm.pub";
pub const TPM_PRIV: &str = "identity.tpm.priv";
/// The TPM's resource-manager device.
pub const TPM_DEVICE: &str = "/dev/tpmrm0";
/// Bound of one request to bootd.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest sealed blob read from the partition.
const MAX_BLOB: u64 = 4096;

/// Whether to seal the key in a TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TpmUse {
    /// When /dev/tpmrm0 exists and tpm2-tools are installed.
    Auto,
    /// Always; fail without a TPM.
    On,
    /// Never: the key lies in clear (mode 0600) on the key partition.
    Off,
}

/// Where the key is and how to reach the TPM.
#[derive(Debug, Clone)]
pub struct Place {
    /// `nodeboot.keydev=` or an operator's DEVICE; default: by partlabel/label.
    pub keydev: Option<PathBuf>,
    pub sys: System,
    pub tools: Tools,
    /// The TPM device (`/dev/tpmrm0`).
    pub tpm: PathBuf,
    /// A TCTI of tpm2-tools instead of the device (tests: `swtpm:port=N`).
    pub tcti: Option<String>,
}

impl Place {
    pub fn new(keydev: Option<PathBuf>) -> Place {
        Place {
            keydev,
            sys: System::default(),
            tools: Tools::default(),
            tpm: PathBuf::from(TPM_DEVICE),
            tcti: None,
        }
    }

    /// Whether a key is to be sealed in the TPM, per `tpm`.
    fn wants_tpm(&self, tpm: TpmUse) -> bool {
        match tpm {
            TpmUse::Off => false,
            TpmUse::On => true,
            TpmUse::Auto => self.tcti.is_some() || Tpm::available(&self.tpm),
        }
    }

    fn open_tpm(&self) -> Result<Tpm> {
        match &self.tcti {
            Some(t) => Tpm::with_tcti(t, &self.sys.tmp),
            None => Tpm::open(&self.tpm, &self.sys.tmp),
        }
    }

    /// The key partition named on the command line, or found by name.
    pub fn from_cmdline(cmdline: &Path) -> Place {
        let keydev = Cmdline::from_path(cmdline)
            .ok()
            .and_then(|c| crate::repo::keydev_from_cmdline(&c));
        Place::new(keydev)
    }
}

/// The key this process loaded, for every report it sends afterwards.
static NODE_KEY: std::sync::OnceLock<std::sync::Arc<NodeKey>> = std::sync::OnceLock::new();

/// Keep `key` for this process's later reports ([`remembered`]).
pub fn remember(key: &NodeKey) -> std::sync::Arc<NodeKey> {
    NODE_KEY
        .get_or_init(|| std::sync::Arc::new(NodeKey::from_seed(key.seed())))
        .clone()
}

/// The key [`remember`]ed, if any.
pub fn remembered() -> Option<std::sync::Arc<NodeKey>> {
    NODE_KEY.get().cloned()
}

/// The node's key for signing reports, when it can be had without waiting:
/// `None` (logged at debug or info) when there is no key partition yet, no
/// key on it, or it is sealed in a TPM this system cannot use.
pub fn load_for_reports(place: &Place) -> Option<std::sync::Arc<NodeKey>> {
    if crate::repo::locate_key_device(place.keydev.as_deref(), &place.sys).is_err() {
        tracing::info!("no key partition: reports go unsigned");
        return None;
    }
    match load(place) {
        Ok(l) => Some(remember(&l.key)),
        Err(e) => {
            tracing::info!("reports go unsigned: {e:#}");
            None
        }
    }
}

/// A key and where it came from.
pub struct Loaded {
    pub key: NodeKey,
    /// Sealed in the TPM (else in clear on the partition).
    pub tpm: bool,
    /// The key partition.
    pub partition: PathBuf,
}

impl Loaded {
    pub fn kind(&self) -> &'static str {
        if self.tpm {
            "sealed in the TPM"
        } else {
            "in clear on the key partition"
        }
    }
}

/// A regular file (no symlink) of at most `max` bytes, into zeroizing memory.
fn read_small(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !md.is_file() || md.len() > max {
        bail!(
            "{} is not a regular file of at most {max} bytes",
            path.display()
        );
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(max as usize + 1));
    f.take(max + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(buf)
}

/// Write `bytes` to `dir/name` with `mode`, atomically (temporary file,
/// fsync, rename, fsync of the directory).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("renaming {} to {name}", tmp.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Attributes of the owner hierarchy's primary key: tpm2-tools' default
/// plus `noda`, so that a TPM in dictionary-attack lockout (after unclean
/// power-offs) still loads the node key. Seal and unseal must use the same
/// template: the TPM derives the same key from it every time.
const PRIMARY_ATTRS: &str =
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";
/// Attributes of the sealed object (`noda` for the same reason).
const SEALED_ATTRS: &str = "fixedtpm|fixedparent|noda|userwithauth";

/// tpm2-tools, driven by argv through [`crate::cmd`], in a private 0700
/// working directory (their context files) removed afterwards. Nothing is
/// kept in the TPM: each use derives the primary key again, and the tools'
/// transient objects are flushed after each command (the kernel's resource
/// manager does it too; a raw TPM such as swtpm's socket does not).
pub(crate) struct Tpm {
    work: PathBuf,
    tcti: String,
}

impl Tpm {
    /// Whether a TPM and the tools are there.
    fn available(dev: &Path) -> bool {
        dev.exists() && which("tpm2_createprimary").is_some()
    }

    fn open(dev: &Path, parent: &Path) -> Result<Tpm> {
        if !dev.exists() {
            bail!("no TPM: {} does not exist", dev.display());
        }
        Tpm::with_tcti(&format!("device:{}", dev.display()), parent)
    }

    /// With a TCTI of tpm2-tools (`device:/dev/tpmrm0`, `swtpm:port=2321`).
    pub(crate) fn with_tcti(tcti: &str, parent: &Path) -> Result<Tpm> {
        if which("tpm2_createprimary").is_none() {
            bail!("tpm2-tools are not installed (tpm2_createprimary not in PATH)");
        }
        let mut rnd = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut rnd))
            .context("reading /dev/urandom")?;
        let work = parent.join(format!("nodectl-tpm.{}", hex::encode(rnd)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .with_context(|| format!("making {}", work.display()))?;
        Ok(Tpm {
            work,
            tcti: tcti.to_string(),
        })
    }

    fn run(&self, argv: &[&std::ffi::OsStr]) -> Result<String> {
        let t = std::ffi::OsString::from(&self.tcti);
        let mut full: Vec<&std::ffi::OsStr> = vec![argv[0], "-T".as_ref(), &t];
        full.extend_from_slice(&argv[1..]);
        let r = crate::cmd::run(&full);
        let _ = crate::cmd::run(&[
            "tpm2_flushcontext".as_ref(),
            "-T".as_ref(),
            t.as_os_str(),
            "-t".as_ref(),
        ]);
        r
    }

    /// The owner hierarchy's primary ECC key, the same on every call.
    fn primary(&self) -> Result<PathBuf> {
        let ctx = self.work.join("primary.ctx");
        self.run(&[
            "tpm2_createprimary".as_ref(),
            "-Q".as_ref(),
            "-C".as_ref(),
            "o".as_ref(),
            "-g".as_ref(),
            "sha256".as_ref(),
            "-G".as_ref(),
            "ecc".as_ref(),
            "-a".as_ref(),
            PRIMARY_ATTRS.as_ref(),
            "-c".as_ref(),
            ctx.as_os_str(),
        ])
        .context("deriving the TPM's primary key")?;
        Ok(ctx)
    }

    /// Seal `secret` (at most 128 bytes) into `pub_out` and `priv_out`.
    pub(crate) fn seal(&self, secret: &[u8], pub_out: &Path, priv_out: &Path) -> Result<()> {
        let primary = self.primary()?;
        // tpm2_create reads the secret from a file: one in the private
        // working directory, removed right after.
        let input = self.work.join("secret");
        write_atomic(&self.work, "secret", secret, 0o600)?;
        let r = self.run(&[
            "tpm2_create".as_ref(),
            "-Q".as_ref(),
            "-C".as_ref(),
            primary.as_os_str(),
            "-g".as_ref(),
            "sha256".as_ref(),
            "-i".as_ref(),
            input.as_os_str(),
            "-u".as_ref(),
            pub_out.as_os_str(),
            "-r".as_ref(),
            priv_out.as_os_str(),
            "-a".as_ref(),
            SEALED_ATTRS.as_ref(),
        ]);
        let _ = std::fs::remove_file(&input);
        r.context("sealing the node key in the TPM")?;
        Ok(())
    }

    /// Unseal the object `pub_in` + `priv_in` (its bytes on stdout, never on disk).
    pub(crate) fn unseal(&self, pub_in: &Path, priv_in: &Path) -> Result<Zeroizing<String>> {
        let primary = self.primary()?;
        let obj = self.work.join("sealed.ctx");
        self.run(&[
            "tpm2_load".as_ref(),
            "-Q".as_ref(),
            "-C".as_ref(),
            primary.as_os_str(),
            "-u".as_ref(),
            pub_in.as_os_str(),
            "-r".as_ref(),
            priv_in.as_os_str(),
            "-c".as_ref(),
            obj.as_os_str(),
        ])
        .context("loading the sealed node key into the TPM (sealed by another TPM, or the TPM was cleared?)")?;
        let out = self
            .run(&["tpm2_unseal".as_ref(), "-c".as_ref(), obj.as_os_str()])
            .context("unsealing the node key")?;
        Ok(Zeroizing::new(out))
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Read the key from a mounted key partition `dir`.
fn load_in(dir: &Path, part: &Path, place: &Place) -> Result<Option<Loaded>> {
    let (tp, tv) = (dir.join(TPM_PUB), dir.join(TPM_PRIV));
    let clear = dir.join(CLEAR_FILE);
    // Both blobs (the private one is renamed into place first), or a move
    // into the TPM that did not finish: the clear key is still the key.
    let sealed = tp.exists() && (tv.exists() || !clear.exists());
    if sealed {
        let tpm = place
            .open_tpm()
            .with_context(|| format!("{} holds a TPM-sealed node key", part.display()))?;
        // Bounded reads first (a hostile file cannot make tpm2_load read GiBs).
        read_small(&tp, MAX_BLOB)?;
        read_small(&tv, MAX_BLOB)?;
        let text = tpm.unseal(&tp, &tv)?;
        let key = NodeKey::from_file(text.as_bytes())
            .map_err(|e| anyhow!("the TPM-sealed node key on {}: {e}", part.display()))?;
        return Ok(Some(Loaded {
            key,
            tpm: true,
            partition: part.to_path_buf(),
        }));
    }
    if !clear.exists() {
        return Ok(None);
    }
    let bytes = read_small(&clear, nodeboot_identity::MAX_SECRET_FILE as u64)?;
    let key = NodeKey::from_file(&bytes).map_err(|e| anyhow!("{}: {e}", clear.display()))?;
    Ok(Some(Loaded {
        key,
        tpm: false,
        partition: part.to_path_buf(),
    }))
}

/// The node's key, from its key partition (mounted read-only for the read).
pub fn load(place: &Place) -> Result<Loaded> {
    let (part, got) = crate::repo::with_key_partition(
        place.keydev.as_deref(),
        &place.sys,
        &place.tools,
        false,
        |dir, part| load_in(dir, part, place),
    )?;
    got.ok_or_else(|| {
        anyhow!(
            "no node key on {} (nodectl identity init makes one)",
            part.display()
        )
    })
}

/// The node's key: the one on the key partition, or a new one made there
/// (sealed in the TPM per `tpm`). Returns the key and whether it is new.
pub fn init(place: &Place, tpm: TpmUse) -> Result<(Loaded, bool)> {
    let (_, r) = crate::repo::with_key_partition(
        place.keydev.as_deref(),
        &place.sys,
        &place.tools,
        true,
        |dir, part| init_in(dir, part, place, tpm),
    )?;
    Ok(r)
}

/// Seal `key` in the TPM of `place` into the blobs on the mounted key
/// partition `dir`: sealed to temporary names, made 0600 (tpm2-tools makes
/// them 0660), synced, then renamed — the private blob first, so that the
/// public one's presence means both are there.
fn seal_into(place: &Place, dir: &Path, key: &NodeKey) -> Result<()> {
    let t = place.open_tpm()?;
    let (tp, tv) = (
        dir.join(".identity.tpm.pub.new"),
        dir.join(".identity.tpm.priv.new"),
    );
    t.seal(key.to_file().as_bytes(), &tp, &tv)?;
    for (from, to) in [(&tv, TPM_PRIV), (&tp, TPM_PUB)] {
        std::fs::set_permissions(from, std::fs::Permissions::from_mode(0o600))?;
        std::fs::File::open(from).and_then(|f| f.sync_all())?;
        std::fs::rename(from, dir.join(to))
            .with_context(|| format!("renaming {} to {to}", from.display()))?;
    }
    Ok(())
}

/// [`init`] on the mounted key partition `dir`.
fn init_in(dir: &Path, part: &Path, place: &Place, tpm: TpmUse) -> Result<(Loaded, bool)> {
    if let Some(l) = load_in(dir, part, place)? {
        // A key an admin made in clear (nodectl identity init on another
        // machine) moves into the node's TPM on its first boot.
        if l.tpm {
            // A move into the TPM cut short after the blobs were in place.
            let clear = dir.join(CLEAR_FILE);
            if clear.exists() {
                std::fs::remove_file(&clear)
                    .with_context(|| format!("removing {}", clear.display()))?;
                tracing::info!(
                    "removed the node key's copy in clear left by an unfinished move into the TPM"
                );
            }
            return Ok((l, false));
        }
        if !place.wants_tpm(tpm) {
            return Ok((l, false));
        }
        seal_into(place, dir, &l.key)?;
        // Overwritten, then removed (ext4 may keep old blocks in its
        // journal: a disk that ever held the key in clear is only as safe
        // as its owner's care).
        let clear = dir.join(CLEAR_FILE);
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&clear)
            .and_then(|mut f| {
                f.write_all(&[0u8; 128])?;
                f.sync_all()
            });
        std::fs::remove_file(&clear).with_context(|| format!("removing {}", clear.display()))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        tracing::info!(
            partition = %part.display(),
            fingerprint = %l.key.public().fingerprint(),
            "node key moved into the TPM; the copy in clear is removed"
        );
        return Ok((Loaded { tpm: true, ..l }, false));
    }
    let key = NodeKey::generate().map_err(|e| anyhow!("{e}"))?;
    let seal = place.wants_tpm(tpm);
    if seal {
        seal_into(place, dir, &key)?;
    } else {
        write_atomic(dir, CLEAR_FILE, key.to_file().as_bytes(), 0o600)?;
    }
    let line = format!("{}\n", key.public());
    write_atomic(dir, PUBLIC_FILE, line.as_bytes(), 0o644)?;
    tracing::info!(
        partition = %part.display(),
        fingerprint = %key.public().fingerprint(),
        "node key made, {}",
        if seal { "sealed in the TPM" } else { "in clear (mode 0600)" }
    );
    Ok((
        Loaded {
            key,
            tpm: seal,
            partition: part.to_path_buf(),
        },
        true,
    ))
}

/// A fresh nonce from bootd at `base` (`GET /identity/nonce`, at most
/// 256 bytes): the answer's status and its text, trimmed.
pub(crate) fn fetch_nonce(agent: &ureq::Agent, base: &str) -> Result<(u16, String), ureq::Error> {
    let mut r = agent.get(format!("{base}/identity/nonce")).call()?;
    let status = r.status().as_u16();
    let text = r.body_mut().with_config().limit(256).read_to_string()?;
    Ok((status, text.trim().to_string()))
}

/// Seconds since the Unix epoch (the time a signed request carries).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Requests to bootd signed by the node's key, as `host` booted from `mac`.
pub struct Signer<'a> {
    key: &'a NodeKey,
    pub host: String,
    pub mac: String,
    /// bootd's base URL (`grendel.address`).
    pub base: String,
    agent: ureq::Agent,
}

/// bootd's answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

impl Answer {
    /// bootd's one-line reason, or the status.
    pub fn reason(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        match s.lines().next().map(str::trim) {
            Some(l) if !l.is_empty() => l.chars().take(300).collect(),
            _ => format!("HTTP {}", self.status),
        }
    }
}

impl<'a> Signer<'a> {
    pub fn new(key: &'a NodeKey, host: &str, mac: &str, base: &str) -> Signer<'a> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
            .build();
        Signer {
            key,
            host: host.to_string(),
            mac: mac.to_string(),
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// For the boot described by the command line at `cmdline`
    /// (`grendel.hostname`, `BOOTIF`, `grendel.address`).
    pub fn from_cmdline(key: &'a NodeKey, cmdline: &Path) -> Result<Signer<'a>> {
        let c = Cmdline::from_path(cmdline)
            .with_context(|| format!("reading {}", cmdline.display()))?;
        let p = BootParams::from_cmdline(&c)
            .with_context(|| format!("parsing {}", cmdline.display()))?;
        let base = p
            .grendel_address
            .filter(|a| !a.is_empty())
            .with_context(|| format!("no grendel.address= in {}", cmdline.display()))?;
        let mac = p
            .bootif
            .with_context(|| format!("no BOOTIF= in {}", cmdline.display()))?;
        let host = p
            .hostname
            .filter(|h| !h.is_empty())
            .with_context(|| format!("no grendel.hostname= in {}", cmdline.display()))?;
        Ok(Signer::new(key, &host, &mac.to_string(), &base))
    }

    /// `method path` with `body`, signed over a fresh nonce from bootd.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<Answer, ureq::Error> {
        let (_, nonce) = fetch_nonce(&self.agent, &self.base)?;
        let auth = self.key.authorize(
            method,
            path,
            &self.host,
            &self.mac,
            unix_now(),
            &nonce,
            body,
        );
        let url = format!("{}{path}", self.base);
        let r = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", content_type)
                .send(body),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut r = r?;
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(crate::secret::MAX_SEALED)
            .read_to_vec()?;
        Ok(Answer {
            status,
            body: Zeroizing::new(body),
        })
    }

    /// Enroll the key (`POST /identity/enroll`): bootd's message.
    pub fn enroll(&self) -> Result<String> {
        let line = format!("{}\n", self.key.public());
        let url = format!("{}/identity/enroll", self.base);
        let a = self
            .send("POST", "/identity/enroll", line.as_bytes(), "text/plain")
            .with_context(|| format!("POST {url}"))?;
        if a.status != 200 {
            bail!(
                "bootd refused the enrollment of {} key {} ({url}): {}",
                self.host,
                self.key.public().fingerprint(),
                a.reason()
            );
        }
        Ok(a.reason())
    }
}

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Make this node's key on its key partition (unless it has one):
    /// sealed in the TPM when there is one, else in clear (mode 0600).
    /// Prints the public key's fingerprint (the inventory's key = pin).
    Init {
        /// The key partition, or the disk holding it (default: nodeboot.keydev=,
        /// else /dev/disk/by-partlabel/nodeboot-key).
        device: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "auto")]
        tpm: TpmUse,
    },
    /// Print the public key line and its fingerprint.
    Show {
        /// The key partition, or the disk holding it.
        device: Option<PathBuf>,
    },
    /// Make the key if needed and enroll it with bootd (the host must be
    /// armed: bootd arm HOST), as the kernel command line names the host.
    Enroll {
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        tpm: TpmUse,
    },
}

fn place_for(device: Option<PathBuf>) -> Place {
    match device {
        Some(d) => Place::new(Some(d)),
        None => Place::from_cmdline(Path::new("/proc/cmdline")),
    }
}

/// `nodectl identity …`.
pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Init { device, tpm } => {
            let (l, new) = init(&place_for(device), tpm)?;
            let p = l.key.public();
            println!(
                "{} node key {} ({}) on {}",
                if new { "made" } else { "kept the" },
                p.fingerprint(),
                l.kind(),
                l.partition.display()
            );
            Ok(())
        }
        Cmd::Show { device } => {
            let l = load(&place_for(device))?;
            let p = l.key.public();
            println!("{p}");
            println!("{} ({})", p.fingerprint(), l.kind());
            Ok(())
        }
        Cmd::Enroll { cmdline, tpm } => {
            let (l, _) = init(&Place::from_cmdline(&cmdline), tpm)?;
            let s = Signer::from_cmdline(&l.key, &cmdline)?;
            println!("{}", s.enroll()?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(tmp: &Path, tcti: Option<String>) -> Place {
        let mut p = Place::new(None);
        p.sys.tmp = tmp.to_path_buf();
        p.tcti = tcti;
        p
    }

    #[test]
    fn a_key_in_clear_is_made_once_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let (dir, run) = (d.path().join("part"), d.path().join("run"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let pl = place(&run, None);
        let part = Path::new("/dev/fake1");
        assert!(load_in(&dir, part, &pl).unwrap().is_none());
        let (l, new) = init_in(&dir, part, &pl, TpmUse::Off).unwrap();
        assert!(new && !l.tpm);
        let md = std::fs::metadata(dir.join(CLEAR_FILE)).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let pubtext = std::fs::read_to_string(dir.join(PUBLIC_FILE)).unwrap();
        assert_eq!(pubtext.trim(), l.key.public().to_string());
        // A second init keeps the key.
        let (again, new) = init_in(&dir, part, &pl, TpmUse::Off).unwrap();
        assert!(!new);
        assert_eq!(again.key.public(), l.key.public());
        // A damaged file is an error naming it, never a new key.
        std::fs::write(dir.join(CLEAR_FILE), "nodeboot-identity-v1 zz\n").unwrap();
        let e = init_in(&dir, part, &pl, TpmUse::Off).err().unwrap();
        assert!(
            format!("{e:#}").contains("the seed is not 64 hex digits"),
            "{e:#}"
        );
        // TPM asked for, none there.
        let empty = d.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let mut nodev = place(&run, None);
        nodev.tpm = d.path().join("no-tpm");
        let e = init_in(&empty, part, &nodev, TpmUse::On).err().unwrap();
        assert!(format!("{e:#}").starts_with("no TPM: "), "{e:#}");
    }

    /// A software TPM on 127.0.0.1 (a child killed on drop).
    struct Swtpm(std::process::Child);

    impl Drop for Swtpm {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A free port whose next one is free too (the swtpm TCTI talks to
    /// the control channel on port + 1).
    fn free_pair() -> u16 {
        loop {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = a.local_addr().unwrap().port();
            if p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                return p;
            }
        }
    }

    fn swtpm(state: &Path) -> (Swtpm, String) {
        std::fs::create_dir_all(state).unwrap();
        let port = free_pair();
        let ctrl = port + 1;
        let child = std::process::Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "swtpm does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (Swtpm(child), format!("swtpm:host=127.0.0.1,port={port}"))
    }

    /// The key sealed in a (software) TPM: no clear copy on the partition,
    /// read back through the same TPM, refused by another one.
    #[test]
    fn a_key_sealed_in_a_tpm_opens_on_that_tpm_only() {
        assert!(
            which("swtpm").is_some() && which("tpm2_createprimary").is_some(),
            "swtpm or tpm2-tools missing: apt-get install swtpm tpm2-tools (cargo xtask test installs them)"
        );
        let d = tempfile::tempdir().unwrap();
        let (dir, run) = (d.path().join("part"), d.path().join("run"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let part = Path::new("/dev/fake1");
        let made = {
            let (_tpm, tcti) = swtpm(&d.path().join("tpmA"));
            let (l, new) =
                init_in(&dir, part, &place(&run, Some(tcti.clone())), TpmUse::Auto).unwrap();
            assert!(new && l.tpm, "sealed");
            assert!(!dir.join(CLEAR_FILE).exists());
            for f in [TPM_PUB, TPM_PRIV] {
                let md = std::fs::metadata(dir.join(f)).unwrap();
                assert_eq!(md.permissions().mode() & 0o777, 0o600, "{f}");
            }
            let back = load_in(&dir, part, &place(&run, Some(tcti)))
                .unwrap()
                .unwrap();
            assert!(back.tpm);
            assert_eq!(back.key.public(), l.key.public());
            l.key.public()
        };
        // The sealed blobs hold nothing of the seed in clear.
        let seedless = std::fs::read(dir.join(TPM_PRIV)).unwrap();
        assert!(!String::from_utf8_lossy(&seedless).contains("nodeboot-identity"));
        // Same TPM state after a "reboot" (a new swtpm process): same key.
        {
            let (_tpm, tcti) = swtpm(&d.path().join("tpmA"));
            let back = load_in(&dir, part, &place(&run, Some(tcti)))
                .unwrap()
                .unwrap();
            assert_eq!(back.key.public(), made);
        }
        // A key an admin made in clear moves into the TPM at first boot.
        {
            let dir2 = d.path().join("part2");
            std::fs::create_dir_all(&dir2).unwrap();
            let (clear, _) = init_in(&dir2, part, &place(&run, None), TpmUse::Off).unwrap();
            let (_tpm, tcti) = swtpm(&d.path().join("tpmA"));
            let (moved, new) =
                init_in(&dir2, part, &place(&run, Some(tcti.clone())), TpmUse::Auto).unwrap();
            assert!(!new && moved.tpm);
            assert_eq!(moved.key.public(), clear.key.public());
            assert!(!dir2.join(CLEAR_FILE).exists());
            let back = load_in(&dir2, part, &place(&run, Some(tcti)))
                .unwrap()
                .unwrap();
            assert!(back.tpm && back.key.public() == clear.key.public());
        }
        // Another TPM (the disk moved to another node): refused.
        let (_tpm, tcti) = swtpm(&d.path().join("tpmB"));
        let e = load_in(&dir, part, &place(&run, Some(tcti))).err().unwrap();
        let m = format!("{e:#}");
        assert!(
            m.contains("sealed by another TPM") && m.contains("integrity check failed"),
            "{m}"
        );
        // Nothing left in the working directory.
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    }
}
