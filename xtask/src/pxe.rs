//! The QEMU boot `pxe` (issue 5, item 7): a real network boot. The VM has
//! no `-kernel`: QEMU's own iPXE ROM (Debian's `ipxe-qemu`) boots from the
//! network (`-boot n`) on a tap device inside a network namespace this
//! scenario creates, where bootd does DHCP (full mode, cn1's inventory
//! address), TFTP (Debian's `ipxe` binaries) and HTTP.
//!
//! The chain, each step seen in bootd's log:
//!
//! 1. the ROM's DHCP (user class iPXE, architecture 0): with the
//!    inventory's `chain_ipxe = true` it is given `undionly.kpxe` over TFTP,
//!    as real BIOS PXE firmware would be;
//! 2. TFTP sends `undionly.kpxe`, which runs on the ROM's PXE stack;
//! 3. that iPXE's own DHCP (a new transaction) is given
//!    `http://10.99.0.1:PORT/boot/ipxe?mac=52:54:00:12:34:56`;
//! 4. the script (kernel, initrd and the Grendel command line rendered from
//!    the inventory's template) comes over HTTP, then the kernel and initrd;
//! 5. in the initramfs nodectl's own DHCP gets cn1's address from bootd,
//!    fetches the live image from bootd, and the node reaches multi-user as
//!    in the `boot` scenario (`judge_ready`).
//!
//! bootd also answers iPXE's IPv6 router solicitations (issue 17: a router
//! advertisement with lifetime 0 and no prefix), so neither iPXE waits
//! ~16 s for a router; the scenario checks that one went out before the
//! script was fetched. `NODEBOOT_PXE_IPV6_RA=0` runs bootd with `--ipv6-ra
//! false` instead, to time the boot without them (`durations` in
//! report.json: `dhcp_offer_to_tftp_done` and `ipxe_dhcp_to_ipxe_script`
//! hold the waits).
//!
//! The namespace, its tap device, bootd and QEMU are removed by guards on
//! every path. Nothing leaves the namespace: it has no other interface.
use crate::e2e;
use crate::scenarios::Ctx;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const TAP: &str = "tap0";
pub(crate) const SERVER: &str = "10.99.0.1";
pub(crate) const NODE_IP: &str = "10.99.0.50";
/// Debian's `ipxe` package.
const IPXE_DIR: &str = "/usr/lib/ipxe";
const IPXE_FILES: &[&str] = &["undionly.kpxe", "snponly.efi", "ipxe.efi"];

pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace holding one tap device with the server's address;
/// deleted (with the tap) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let name = format!("nbpxe-{}", std::process::id());
        // A namespace left by a killed run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", TAP, "mode", "tap"])?;
        ip(&["-n", n, "addr", "add", &format!("{SERVER}/24"), "dev", TAP])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.name, "link", "del", TAP]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("xtask: pxe: {e:#}");
        }
    }
}

/// bootd inside the namespace; its stderr goes to `bootd.log` (each line
/// stamped with seconds since bootd started) and, with the instant it was
/// read, to `lines`.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// bootd in namespace `ns`, answering DHCP on `iface`, with `extra`
    /// arguments.
    pub(crate) fn start(
        bootd: &Path,
        ns: &str,
        iface: &str,
        dir: &Path,
        inventory: &Path,
        extra: &[&str],
    ) -> Result<Server> {
        Server::spawn(bootd, ns, iface, dir, inventory, extra, true)
    }

    fn spawn(
        bootd: &Path,
        ns: &str,
        iface: &str,
        dir: &Path,
        inventory: &Path,
        extra: &[&str],
        tftp: bool,
    ) -> Result<Server> {
        let port_file = dir.join("bootd.port");
        let _ = std::fs::remove_file(&port_file);
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bootd)
            .args(["serve", "--listen", &format!("{SERVER}:0"), "--root"])
            .arg(dir.join("www"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--inventory")
            .arg(inventory)
            .args(["--dhcp", iface, "--dhcp-mode", "full"])
            .args(if tftp {
                vec!["--tftp-root".into(), dir.join("tftp").into_os_string()]
            } else {
                vec![]
            })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} in {ns}", bootd.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().context("bootd's stderr")?;
        let mut log = std::fs::File::create(dir.join("bootd.log"))?;
        let l = lines.clone();
        let started = Instant::now();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let t = started.elapsed().as_secs_f64();
                let _ = writeln!(log, "{t:9.3} | {line}");
                l.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        let mut srv = Server {
            child,
            port: 0,
            lines,
        };
        let t = Instant::now();
        loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                srv.port = p;
                return Ok(srv);
            }
            if let Some(st) = srv.child.try_wait()? {
                bail!(
                    "bootd exited ({st}); see {}",
                    dir.join("bootd.log").display()
                );
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("bootd did not start within 10s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// bootd in namespace `ns` with DHCP on `iface`, no TFTP, and `extra`
    /// arguments.
    pub(crate) fn start_no_tftp(
        bootd: &Path,
        ns: &str,
        iface: &str,
        dir: &Path,
        inventory: &Path,
        extra: &[&str],
    ) -> Result<Server> {
        Server::spawn(bootd, ns, iface, dir, inventory, extra, false)
    }

    /// Seconds after `t0` of every log line matching `pred`.
    pub(crate) fn all_when(&self, t0: Instant, pred: impl Fn(&str) -> bool) -> Vec<f64> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|(_, l)| pred(l))
            .map(|(t, _)| (t.saturating_duration_since(t0).as_secs_f64() * 1000.0).round() / 1000.0)
            .collect()
    }

    /// Seconds after `t0` of the first log line matching `pred`.
    pub(crate) fn when(&self, t0: Instant, pred: impl Fn(&str) -> bool) -> Option<f64> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().find(|(_, l)| pred(l)).map(|(t, _)| {
            let s = t.saturating_duration_since(t0).as_secs_f64();
            (s * 1000.0).round() / 1000.0
        })
    }
}

/// Hard links to the image (vmlinuz, initrd.img, live.squashfs and its
/// sidecars; not the chunk store) in `www`, copies of the iPXE binaries in `tftp`.
pub(crate) fn layout(ctx: &Ctx, dir: &Path) -> Result<()> {
    let (www, tftp) = (dir.join("www"), dir.join("tftp"));
    for d in [&www, &tftp] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).with_context(|| format!("making {}", d.display()))?;
    }
    let mut files: Vec<PathBuf> = vec![ctx.art.vmlinuz.clone(), ctx.art.initrd.clone()];
    for e in std::fs::read_dir(&ctx.art.www)? {
        let e = e?;
        // The chunk store (www/store/): the PXE boots fetch the image whole.
        if e.file_type()?.is_dir() {
            continue;
        }
        files.push(e.path());
    }
    for f in files {
        let to = www.join(f.file_name().context("a file name")?);
        if std::fs::hard_link(&f, &to).is_err() {
            std::fs::copy(&f, &to)
                .with_context(|| format!("copying {} to {}", f.display(), to.display()))?;
        }
    }
    for f in IPXE_FILES {
        // ipxe.efi is a symlink into /boot: copy what it points to.
        let from = Path::new(IPXE_DIR).join(f);
        std::fs::copy(&from, tftp.join(f)).with_context(|| {
            format!(
                "copying {} (Debian's ipxe package: apt-get install ipxe)",
                from.display()
            )
        })?;
    }
    Ok(())
}

/// cn1 at 10.99.0.50 on the tap's /24, the seed's command line as a
/// template, (`chain`) `chain_ipxe` so that QEMU's iPXE ROM goes
/// through TFTP, and cn1's `firmware` when given.
pub(crate) fn inventory(dir: &Path, chain: bool, firmware: Option<&str>) -> Result<PathBuf> {
    let p = dir.join("inventory.toml");
    let firmware = firmware
        .map(|f| format!("firmware = \"{f}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"[dhcp]
router = "{SERVER}"
lease_time = 3600
# QEMU's NIC ROM is iPXE already: give it undionly.kpxe over TFTP first,
# as BIOS PXE firmware would get, so the boot goes through every step.
chain_ipxe = {chain}

[[image]]
name = "live"
kernel = "vmlinuz"
initrd = ["initrd.img"]
liveimg = "live.squashfs"
cmdline = 'console=ttyS0 root=live:{{{{ $.liveimg }}}} BOOTIF=01-{{{{ $.nic.MAC | toString | replace ":" "-" }}}} grendel.hostname={{{{ $.host.Name }}}} grendel.address={{{{ $.address }}}} rd.live.overlay.readonly=1 rd.live.overlay.overlayfs=1 rd.neednet=1'

[[host]]
name = "{host}"
image = "live"
provision = true
{firmware}[[host.interfaces]]
mac = "{mac}"
ip = "{NODE_IP}/24"
"#,
        host = e2e::HOSTNAME,
        mac = e2e::MAC,
    );
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Whether a log line marks a milestone.
type LineTest = Box<dyn Fn(&str) -> bool>;

/// What bootd's log shows of the boot, in order: (milestone, line test).
fn server_milestones(port: u16, boot_file: &'static str) -> Vec<(&'static str, LineTest)> {
    let script = format!("http://{SERVER}:{port}/boot/ipxe?mac={}", e2e::MAC);
    let offer = format!("boot tftp {boot_file}");
    let sent = format!("tftp: sent {boot_file}");
    vec![
        (
            "dhcp_offer",
            Box::new(move |l: &str| l.contains("dhcp: OFFER") && l.contains(&offer)),
        ),
        ("tftp_done", Box::new(move |l: &str| l.contains(&sent))),
        (
            "ipxe_dhcp",
            Box::new(move |l: &str| l.contains("dhcp: ACK") && l.contains(&script)),
        ),
        (
            "ipxe_script",
            Box::new(|l: &str| l.contains("GET /boot/ipxe?mac=") && l.contains("status=200")),
        ),
        (
            "kernel_loaded",
            Box::new(|l: &str| l.contains("GET /vmlinuz status=200")),
        ),
        (
            "initrd_loaded",
            Box::new(|l: &str| l.contains("GET /initrd.img status=200")),
        ),
        (
            "node_dhcp",
            Box::new(|l: &str| l.contains("dhcp: ACK") && !l.contains(", boot ")),
        ),
        (
            "node_ready",
            Box::new(|l: &str| l.contains("node cn1 ready")),
        ),
    ]
}

/// Which network boot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `pxe`: BIOS, QEMU's iPXE ROM chained to undionly.kpxe over TFTP.
    Bios,
    /// `pxe-uefi` (issue 14): OVMF's own UEFI PXE gets `snponly.efi` over
    /// TFTP (client architecture 7), whose iPXE gets the script.
    Uefi,
    /// `httpboot` (issue 14): OVMF's UEFI HTTP boot (PXE switched off in
    /// the firmware) gets `http://…/snponly.efi` from bootd's DHCP (class
    /// `HTTPClient`, architecture 16) and downloads it over HTTP; bootd
    /// runs without TFTP.
    Http,
    /// `secureboot` (issue 14): OVMF with Secure Boot enforced and
    /// Microsoft's keys; cn1's inventory `firmware = "shimx64.efi"`: the
    /// firmware gets Debian's signed shim over TFTP, shim the signed GRUB
    /// netboot image (`grubx64.efi`), GRUB bootd's config for its MAC, then
    /// the kernel (Debian's, signed) and initrd over TFTP; the node reports
    /// Secure Boot on.
    SecureBoot,
    /// `secureboot-unsigned`: the same, but bootd serves the kernel with
    /// its signature removed: shim refuses it, GRUB says so on the console
    /// and goes back to the firmware; the kernel never starts.
    SecureBootUnsigned,
}

/// What bootd's log shows of a Secure Boot boot, all of it over TFTP but
/// the live root.
fn secure_milestones() -> Vec<(&'static str, LineTest)> {
    let sent = |f: &'static str| -> LineTest {
        let what = format!("tftp: sent {f} to ");
        Box::new(move |l: &str| l.contains(&what))
    };
    vec![
        (
            "dhcp_offer",
            Box::new(|l: &str| l.contains("dhcp: OFFER") && l.contains("boot tftp shimx64.efi")),
        ),
        ("shim_loaded", sent("shimx64.efi")),
        ("grub_loaded", sent("grubx64.efi")),
        (
            "grub_config",
            Box::new(|l: &str| l.contains("tftp: GRUB config for cn1 (")),
        ),
        ("kernel_loaded", sent("vmlinuz")),
        ("initrd_loaded", sent("initrd.img")),
        (
            "node_dhcp",
            Box::new(|l: &str| l.contains("dhcp: ACK") && !l.contains(", boot ")),
        ),
        (
            "node_ready",
            Box::new(|l: &str| l.contains("node cn1 ready")),
        ),
    ]
}

/// GRUB's words when shim refuses the kernel it was given.
const REFUSAL: &str = "error: bad shim signature";
/// The end of bootd's GRUB config when the kernel did not boot.
const GAVE_UP: &str = "could not boot image live";

/// The judge of `secureboot-unsigned`: GRUB shows shim's refusal and then
/// the config's own message; the kernel must never start.
fn judge_refused(refused: &mut bool, line: &str) -> Option<Result<()>> {
    if line.contains("Linux version") || line.contains("nodectl initrd") {
        return Some(Err(anyhow::anyhow!(
            "the unsigned kernel ran under Secure Boot: {line}"
        )));
    }
    if line.contains(REFUSAL) {
        *refused = true;
    }
    (*refused && line.contains(GAVE_UP)).then_some(Ok(()))
}

/// What bootd's log shows of an HTTP boot: no TFTP at all.
fn http_milestones(port: u16) -> Vec<(&'static str, LineTest)> {
    let program = format!("boot http http://{SERVER}:{port}/snponly.efi");
    let mut v: Vec<(&'static str, LineTest)> = vec![
        (
            "dhcp_offer",
            Box::new(move |l: &str| l.contains("dhcp: OFFER") && l.contains(&program)),
        ),
        (
            "program_loaded",
            Box::new(|l: &str| l.contains("GET /snponly.efi status=200")),
        ),
    ];
    v.extend(server_milestones(port, "snponly.efi").into_iter().skip(2));
    v
}

pub fn run(ctx: &Ctx, dir: &Path, kind: Kind) -> Result<Value> {
    layout(ctx, dir)?;
    let secure = matches!(kind, Kind::SecureBoot | Kind::SecureBootUnsigned);
    if secure {
        crate::secureboot::loaders_into(&dir.join("tftp"))?;
    }
    if kind == Kind::SecureBootUnsigned {
        let k = dir.join("www/vmlinuz");
        let signed = std::fs::read(&k).with_context(|| format!("reading {}", k.display()))?;
        let bare = crate::secureboot::strip_signature(&signed)
            .with_context(|| format!("removing the signature of {}", k.display()))?;
        // www/vmlinuz is a hard link to the cached image's kernel: a new file.
        std::fs::remove_file(&k)?;
        std::fs::write(&k, bare)?;
    }
    let inv = inventory(dir, kind == Kind::Bios, secure.then_some("shimx64.efi"))?;
    let ns = Netns::create()?;
    // bootd's router advertisements end iPXE's IPv6 wait (issue 17);
    // NODEBOOT_PXE_IPV6_RA=0 boots without them, to time the difference.
    let ra = std::env::var("NODEBOOT_PXE_IPV6_RA").map_or(true, |v| v != "0");
    let extra: &[&str] = if ra { &[] } else { &["--ipv6-ra", "false"] };
    let srv = if kind == Kind::Http {
        // The boot program is a file of the HTTP root.
        std::fs::copy(dir.join("tftp/snponly.efi"), dir.join("www/snponly.efi"))?;
        Server::start_no_tftp(&ctx.bootd, &ns.name, TAP, dir, &inv, extra)?
    } else {
        Server::start(&ctx.bootd, &ns.name, TAP, dir, &inv, extra)?
    };
    let uefi = kind != Kind::Bios;
    let t0 = Instant::now();
    let mut refused = false;
    let mut judge_unsigned = |_: &Value, line: &str| judge_refused(&mut refused, line);
    let watch = e2e::Watch {
        judge: if kind == Kind::SecureBootUnsigned {
            &mut judge_unsigned
        } else {
            &mut e2e::judge_ready
        },
        timeout: ctx.timeout(600),
        disks: &[],
        hostfwd: &[],
        tpm: None,
    };
    // Fresh variables each boot (a copy of Debian's: 540 KB).
    let from = if secure {
        e2e::OVMF_VARS_MS
    } else {
        e2e::OVMF_VARS
    };
    let vars = dir.join(Path::new(from).file_name().context("a file name")?);
    let firmware = if uefi {
        std::fs::copy(from, &vars).with_context(|| {
            format!("copying {from} (Debian's ovmf package: apt-get install ovmf)")
        })?;
        e2e::Firmware::Uefi {
            vars: &vars,
            http_only: kind == Kind::Http,
            secure,
        }
    } else {
        e2e::Firmware::Bios
    };
    let r = e2e::boot_pxe(&ctx.accel, &ns.name, TAP, dir, ctx.echo, watch, firmware)?;
    if kind == Kind::SecureBootUnsigned {
        return unsigned_report(ctx, dir, &srv, t0, &r);
    }
    let st = r.status.clone().unwrap_or_default();
    if st["fetch"]["sha256"] != ctx.art.sha256.as_str() {
        bail!(
            "the node reports image sha256 {} but the image is {}",
            st["fetch"]["sha256"],
            ctx.art.sha256
        );
    }
    // The node says how its firmware booted it (boot.json, the status line).
    let (fw, sb) = (
        st["firmware"]["kind"].clone(),
        st["firmware"]["secure_boot"].clone(),
    );
    let want = if uefi {
        ("uefi", json!(secure))
    } else {
        ("bios", Value::Null)
    };
    if fw != want.0 || sb != want.1 {
        bail!(
            "the node reports firmware {fw} with secure boot {sb}, not {} with {}",
            want.0,
            want.1
        );
    }
    for m in e2e::required_milestones() {
        if !r.milestones.contains_key(m) {
            bail!(
                "milestone {m} missing from the console ({})",
                r.console.display()
            );
        }
    }
    // nodectl's DHCP got cn1's inventory address from bootd.
    let console = std::fs::read_to_string(&r.console)?;
    let Some(net_line) = console
        .lines()
        .find(|l| l.contains("nodectl initrd: network up"))
    else {
        bail!("no \"network up\" line on the console");
    };
    if !net_line.contains(&format!(" {NODE_IP}/24 via {SERVER}")) {
        bail!("the node's address is not cn1's inventory address {NODE_IP}/24: {net_line}");
    }
    // bootd's own milestones, in the order the chain takes them.
    let milestones = match kind {
        Kind::Bios => server_milestones(srv.port, "undionly.kpxe"),
        Kind::Uefi => server_milestones(srv.port, "snponly.efi"),
        Kind::Http => http_milestones(srv.port),
        Kind::SecureBoot => secure_milestones(),
        Kind::SecureBootUnsigned => unreachable!("judged above"),
    };
    let server = in_order(&srv, t0, dir, milestones)?;
    let at = |k: &str| server[k].as_f64().unwrap_or_default();
    let live = r.milestones["live_root_ready"].as_f64().unwrap_or_default();
    let ms = |s: f64| (s * 1000.0).round() / 1000.0;
    // The step that renders the node's command line: iPXE's script or GRUB's config.
    let script = if kind == Kind::SecureBoot {
        "grub_config"
    } else {
        "ipxe_script"
    };
    // bootd's own counters of this boot, checked by promtool (BIOS and
    // UEFI PXE: DHCP, TFTP, HTTP and the node's reports all went through).
    // The advertisements bootd sent (to iPXE, then to the node's kernel):
    // with them on, iPXE's solicitations got one before it went on.
    let adverts = srv.all_when(t0, |l| l.contains("ndp: router advertisement"));
    let ipxe = matches!(kind, Kind::Bios | Kind::Uefi | Kind::Http);
    if ra && ipxe && !adverts.iter().any(|&t| t < at(script)) {
        bail!(
            "bootd sent no router advertisement before iPXE fetched its script ({})",
            dir.join("bootd.log").display()
        );
    }
    if !ra && !adverts.is_empty() {
        bail!("bootd sent router advertisements with --ipv6-ra false");
    }
    let metrics = match kind {
        Kind::Bios | Kind::Uefi => {
            let base = format!("http://{SERVER}:{}", srv.port);
            let mut need = crate::metrics::boot_requirements(true);
            if ra {
                need.push(r#"bootd_ndp_router_solicitations_total{outcome="answered"}"#);
            }
            crate::metrics::after_boot(Some(&ns.name), &base, &need)?
        }
        _ => Value::Null,
    };
    let mut durations = json!({
        format!("dhcp_to_{script}"): ms(at(script) - at("dhcp_offer")),
        format!("{script}_to_live_root"): ms(live - at(script)),
        "dhcp_to_live_root": ms(live - at("dhcp_offer")),
    });
    // The steps iPXE's IPv6 wait sits in: after its DHCP, before it goes
    // on (the firmware's iPXE to TFTP, the chainloaded one to its script).
    if server.contains_key("ipxe_dhcp") {
        durations["ipxe_dhcp_to_ipxe_script"] = json!(ms(at("ipxe_script") - at("ipxe_dhcp")));
    }
    if kind == Kind::Bios {
        durations["dhcp_offer_to_tftp_done"] = json!(ms(at("tftp_done") - at("dhcp_offer")));
    }
    let report = json!({
        "hostname": st["hostname"],
        "accel": ctx.accel,
        "network": net_line.split("network up: ").nth(1).unwrap_or(net_line).trim(),
        "bootd": server,
        "milestones": r.milestones,
        "durations": durations,
        "ipv6_ra": ra,
        "router_advertisements_at": adverts,
        "metrics": metrics,
        "firmware": st["firmware"],
        "image_sha256": ctx.art.sha256,
        "seconds": r.seconds,
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

/// When (seconds after `t0`) bootd's log shows each milestone; an error
/// when one is missing or comes before the one listed before it.
fn in_order(
    srv: &Server,
    t0: Instant,
    dir: &Path,
    milestones: Vec<(&'static str, LineTest)>,
) -> Result<Map<String, Value>> {
    let mut server = Map::new();
    let mut last = 0.0;
    for (name, pred) in milestones {
        let Some(t) = srv.when(t0, pred) else {
            bail!(
                "{name}: not in bootd's log ({})",
                dir.join("bootd.log").display()
            );
        };
        if t < last {
            bail!("{name} at {t}s comes before the step before it ({last}s) in bootd's log");
        }
        last = t;
        server.insert(name.to_string(), json!(t));
    }
    Ok(server)
}

/// `secureboot-unsigned` after its judge passed: bootd sent the chain up to
/// the kernel and no initrd, the console holds the refusal and no kernel.
fn unsigned_report(
    ctx: &Ctx,
    dir: &Path,
    srv: &Server,
    t0: Instant,
    r: &e2e::BootResult,
) -> Result<Value> {
    let steps = secure_milestones().into_iter().take(5).collect();
    let server = in_order(srv, t0, dir, steps)?;
    if let Some(t) = srv.when(t0, |l| l.contains("tftp: sent initrd.img")) {
        bail!("bootd sent the initrd at {t}s: GRUB went on after the unsigned kernel");
    }
    let console = std::fs::read_to_string(&r.console)?;
    let refusal = console
        .lines()
        .find(|l| l.contains(REFUSAL))
        .context("no refusal on the console")?;
    let refusal = refusal.split(" | ").nth(1).unwrap_or(refusal).trim();
    let report = json!({
        "accel": ctx.accel,
        "bootd": server,
        "console_refusal": refusal,
        "kernel_started": false,
        "seconds": r.seconds,
    });
    e2e::write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}
