//! `nodectl format-disk`: prepare a node's local disk in one safe,
//! idempotent step; `nodectl install-key`: put the deploy key on it.
//!
//! ```text
//! resolve DEVICE ─ not a block device / a partition → refused
//! facts (sysfs), current state (GPT, kernel partitions, wipefs -n)
//! already the requested layout, fs type, UUID (and label)? → "already formatted", exit 0
//! show facts + plan                                   (nothing written so far)
//! refusals: read-only, root/boot/image cache disk, mounted, swap, held,
//!           not blank without --wipe                  → refused, exit 3
//! --dry-run → stop
//! lock the disk (flock: udev waits)
//! wipe signatures (--wipe: each old partition, then the disk)
//! write the GPT, BLKRRPART (+ BLKPG where the kernel cannot read GPT)
//! wipefs + mkfs (key: ext4 "nodeboot-key"; data: --fs with --uuid/--label)
//!   └ any failure after the GPT: wipe the new partitions, write an empty
//!     GPT, tell the kernel → exit 4 "reset to an empty GPT"
//! unlock, udev trigger + settle until /dev/disk/by-uuid/UUID is there
//! ```
pub mod gpt;
pub mod kernel;
pub mod key;
pub mod plan;
pub mod probe;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use plan::{Fs, Uuid};
pub use probe::System;

use plan::{human, Plan, PlannedPart, Role};
use probe::{BlockDev, KernelPart, Signature};

/// The programs used, replaceable by tests (a failing mkfs).
#[derive(Debug, Clone)]
pub struct Tools {
    pub mkfs_xfs: OsString,
    pub mkfs_ext4: OsString,
    pub mkfs_btrfs: OsString,
    pub wipefs: String,
    pub udevadm: String,
    /// Bound for /dev/disk/by-uuid/UUID to appear once udev runs.
    pub udev_timeout: Duration,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            mkfs_xfs: Fs::Xfs.mkfs().into(),
            mkfs_ext4: Fs::Ext4.mkfs().into(),
            mkfs_btrfs: Fs::Btrfs.mkfs().into(),
            wipefs: "wipefs".into(),
            udevadm: "udevadm".into(),
            udev_timeout: Duration::from_secs(30),
        }
    }
}

impl Tools {
    fn mkfs(&self, fs: Fs) -> &OsStr {
        match fs {
            Fs::Xfs => &self.mkfs_xfs,
            Fs::Ext4 => &self.mkfs_ext4,
            Fs::Btrfs => &self.mkfs_btrfs,
        }
    }
}

/// The command line of `format-disk`, checked.
#[derive(Debug, Clone)]
pub struct FormatRequest {
    pub device: PathBuf,
    pub fs: Fs,
    pub uuid: Uuid,
    pub label: Option<String>,
    pub key_partition: Option<u64>,
    /// `--cache-partition`: the live image cache (ext4 `nodeboot-cache`).
    pub cache_partition: Option<u64>,
    pub wipe: bool,
    pub dry_run: bool,
}

/// Why `format-disk` will not touch a device. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    NotBlock(probe::NotBlock),
    #[error("it is partition {number} of /dev/{disk}; format-disk takes a whole disk")]
    Partition { number: u32, disk: String },
    #[error("it is read-only")]
    ReadOnly,
    #[error("it holds {what} ({} is mounted from {from}); refused even with --wipe", mountpoint.display())]
    Protected {
        what: String,
        mountpoint: PathBuf,
        from: String,
    },
    #[error("{} is mounted at {}; unmount it first", device.display(), mountpoint.display())]
    Mounted {
        device: PathBuf,
        mountpoint: PathBuf,
    },
    #[error("{} is in use as swap; swapoff it first", device.display())]
    Swap { device: PathBuf },
    #[error("{} is held by {holder}; remove that first (dmsetup remove, mdadm --stop, vgchange -an)", device.display())]
    Held { device: PathBuf, holder: String },
    #[error("it is not blank: {found}{}; add --wipe to erase it", mismatch.as_ref().map(|m| format!(", not the requested layout ({m})")).unwrap_or_default())]
    NotBlank {
        found: String,
        mismatch: Option<String>,
    },
    #[error("UUID {uuid} already names the filesystem on {}, another device; pick another (uuidgen)", device.display())]
    UuidInUse { uuid: String, device: PathBuf },
    #[error("{0}")]
    TooSmall(String),
}

/// How `format-disk` ends, other than success.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Checks failed; nothing was written. Exit status 3.
    #[error("refusing to format {device}: {}", join(reasons))]
    Refused {
        device: String,
        reasons: Vec<Refusal>,
    },
    /// A step after the partition table was written failed; the disk was
    /// reset to an empty GPT (the message says if that failed too). Exit 4.
    #[error("{0:#}")]
    RolledBack(anyhow::Error),
    /// Anything else (reading facts, wiping, udev). Exit 1.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn join(r: &[Refusal]) -> String {
    r.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl FormatError {
    pub fn exit_code(&self) -> u8 {
        match self {
            FormatError::Refused { .. } => 3,
            FormatError::RolledBack(_) => 4,
            FormatError::Other(_) => 1,
        }
    }
}

/// A partition as found on the disk now.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentPart {
    pub number: u32,
    /// GPT partition name.
    pub name: Option<String>,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// The kernel's device for it, if the kernel lists it.
    pub device: Option<PathBuf>,
    pub signatures: Vec<Signature>,
}

/// What is on the disk now.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    /// "gpt", "dos", …; a damaged GPT is "gpt (damaged: …)".
    pub partition_table: Option<String>,
    pub partitions: Vec<CurrentPart>,
    /// On the whole disk (a partition table shows as gpt + PMBR).
    pub signatures: Vec<Signature>,
}

impl Current {
    pub fn is_blank(&self) -> bool {
        self.partition_table.is_none()
            && self.signatures.is_empty()
            && self.partitions.iter().all(|p| p.signatures.is_empty())
    }

    /// One line for people: "a gpt partition table with 2 partitions
    /// (/dev/sda1 nodeboot-key: ext4 …; …)".
    pub fn describe(&self) -> String {
        if self.is_blank() {
            return "blank (no partition table, no signature)".into();
        }
        let mut out = Vec::new();
        if let Some(t) = &self.partition_table {
            let parts: Vec<String> = self
                .partitions
                .iter()
                .map(|p| {
                    let dev = p
                        .device
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| format!("#{}", p.number));
                    let name = p
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default();
                    let fs = if p.signatures.is_empty() {
                        "no filesystem".to_string()
                    } else {
                        p.signatures
                            .iter()
                            .map(describe_sig)
                            .collect::<Vec<_>>()
                            .join(" + ")
                    };
                    format!("{dev}{name} {}: {fs}", human(p.size_bytes))
                })
                .collect();
            out.push(if parts.is_empty() {
                format!("an empty {t} partition table")
            } else {
                format!(
                    "a {t} partition table with {} partition{} ({})",
                    parts.len(),
                    if parts.len() == 1 { "" } else { "s" },
                    parts.join("; ")
                )
            });
        }
        let others: Vec<String> = self
            .signatures
            .iter()
            .filter(|s| !is_table_sig(&s.kind))
            .map(|s| format!("{} on the whole disk", describe_sig(s)))
            .collect();
        out.extend(others);
        if self.partition_table.is_none() && self.signatures.iter().any(|s| is_table_sig(&s.kind)) {
            let kinds: Vec<&str> = self.signatures.iter().map(|s| s.kind.as_str()).collect();
            out.push(format!("partition table signatures ({})", kinds.join(", ")));
        }
        out.join(", ")
    }
}

fn is_table_sig(kind: &str) -> bool {
    matches!(
        kind,
        "gpt" | "PMBR" | "dos" | "atari" | "bsd" | "mac" | "sgi" | "sun"
    )
}

fn describe_sig(s: &Signature) -> String {
    let mut d = s.kind.clone();
    if let Some(u) = &s.uuid {
        d += &format!(" UUID {u}");
    }
    if let Some(l) = &s.label {
        d += &format!(" label {l:?}");
    }
    d
}

/// A planned partition with the device it will be.
#[derive(Debug, Clone, Serialize)]
pub struct PlanPart {
    #[serde(flatten)]
    pub part: PlannedPart,
    pub size: String,
    pub device: PathBuf,
}

/// What format-disk did or would do; printed before anything is written,
/// and at the end (JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// As given.
    pub device: PathBuf,
    /// /dev/<kernel name>.
    pub disk: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: u64,
    pub size: String,
    pub logical_sector_size: u64,
    pub physical_sector_size: u64,
    pub backing_file: Option<String>,
    pub current: Current,
    pub plan: Vec<PlanPart>,
    /// dry-run, already-formatted, formatted, refused, failed.
    pub result: Option<String>,
    /// Why the disk does not count as already formatted (when it is not blank).
    pub mismatch: Option<String>,
    /// /dev/disk/by-uuid/UUID once it exists.
    pub by_uuid: Option<PathBuf>,
    pub udev_running: Option<bool>,
    pub error: Option<String>,
    pub seconds: f64,
}

impl Report {
    /// The text shown before anything is written.
    pub fn human(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unknown)".into());
        let mut s = String::new();
        s += &format!("disk:    {}\n", self.disk.display());
        if self.device != self.disk {
            s += &format!("given:   {}\n", self.device.display());
        }
        s += &format!("model:   {}\n", opt(&self.model));
        if let Some(b) = &self.backing_file {
            s += &format!("backing: {b}\n");
        }
        s += &format!("serial:  {}\n", opt(&self.serial));
        s += &format!(
            "size:    {} bytes ({}, {:.1} GB), logical sector {} bytes, physical {}\n",
            self.size_bytes,
            self.size,
            self.size_bytes as f64 / 1e9,
            self.logical_sector_size,
            self.physical_sector_size
        );
        s += &format!("now:     {}\n", self.current.describe());
        if !self.plan.is_empty() {
            s += "plan:    GPT, partitions aligned to 1 MiB:\n";
            for p in &self.plan {
                let mut fs = p.part.fs.to_string();
                if let Some(u) = &p.part.uuid {
                    fs += &format!(" UUID {u}");
                }
                if let Some(l) = &p.part.label {
                    fs += &format!(" label {l:?}");
                }
                s += &format!(
                    "  {} {:<14} {:<13} start {} ({} bytes), size {} ({} bytes): {fs}\n",
                    p.part.number,
                    p.part.name,
                    p.device.display(),
                    human(p.part.start_bytes),
                    p.part.start_bytes,
                    p.size,
                    p.part.size_bytes,
                );
            }
        }
        s
    }
}

/// Everything read about the disk before deciding.
struct Inspected {
    dev: BlockDev,
    facts: probe::Facts,
    kparts: Vec<KernelPart>,
    table: Option<Result<gpt::Table, String>>,
    current: Current,
}

fn inspect(dev: BlockDev, sys: &System, tools: &Tools) -> Result<Inspected> {
    let facts = probe::read_facts(&dev.sysdir, dev.devnum, &sys.udev_data);
    let kparts = probe::read_partitions(&dev.sysdir, &sys.dev);
    let lbs = facts.logical_sector_size;
    let sectors = facts.size_bytes / lbs;
    let mut f = File::open(&dev.node).with_context(|| format!("opening {}", dev.node.display()))?;
    let table = match gpt::read(&mut f, sectors, lbs) {
        Ok(t) => t.map(Ok),
        Err(gpt::ReadError::Gpt(e)) => Some(Err(e.to_string())),
        Err(gpt::ReadError::Io(e)) => {
            return Err(e).with_context(|| format!("reading the GPT of {}", dev.node.display()))
        }
    };
    let signatures = probe::signatures(&tools.wipefs, &dev.node)?;
    let mut partitions = Vec::new();
    let kernel_sigs = |k: &KernelPart| probe::signatures(&tools.wipefs, &k.node);
    match &table {
        Some(Ok(t)) => {
            for e in &t.entries {
                let start = e.first_lba * lbs;
                let size = (e.last_lba + 1 - e.first_lba) * lbs;
                let k = kparts.iter().find(|k| {
                    k.number == e.number && k.start_bytes == start && k.size_bytes == size
                });
                partitions.push(CurrentPart {
                    number: e.number,
                    name: Some(e.name.clone()),
                    start_bytes: start,
                    size_bytes: size,
                    device: k.map(|k| k.node.clone()),
                    signatures: k.map(kernel_sigs).transpose()?.unwrap_or_default(),
                });
            }
        }
        _ => {
            for k in &kparts {
                partitions.push(CurrentPart {
                    number: k.number,
                    name: None,
                    start_bytes: k.start_bytes,
                    size_bytes: k.size_bytes,
                    device: Some(k.node.clone()),
                    signatures: kernel_sigs(k)?,
                });
            }
        }
    }
    let partition_table = match &table {
        Some(Ok(_)) => Some("gpt".to_string()),
        Some(Err(e)) => Some(format!("gpt (damaged: {e})")),
        None => signatures
            .iter()
            .find(|s| is_table_sig(&s.kind) && s.kind != "PMBR")
            .map(|s| s.kind.clone()),
    };
    Ok(Inspected {
        dev,
        facts,
        kparts,
        table,
        current: Current {
            partition_table,
            partitions,
            signatures,
        },
    })
}

/// Is the disk already what the plan asks? Ok(()) or why not.
fn matches(plan: &Plan, ins: &Inspected) -> Result<(), String> {
    let t = match &ins.table {
        None => return Err("no GPT".into()),
        Some(Err(e)) => return Err(format!("its GPT is damaged: {e}")),
        Some(Ok(t)) => t,
    };
    if !t.backup_ok {
        return Err("its backup GPT is missing or damaged".into());
    }
    if let Some(s) = ins
        .current
        .signatures
        .iter()
        .find(|s| s.kind != "gpt" && s.kind != "PMBR")
    {
        return Err(format!("{} on the whole disk", describe_sig(s)));
    }
    if t.entries.len() != plan.partitions.len() {
        return Err(format!(
            "{} partition{}, the plan has {}",
            t.entries.len(),
            if t.entries.len() == 1 { "" } else { "s" },
            plan.partitions.len()
        ));
    }
    for (e, p) in t.entries.iter().zip(&plan.partitions) {
        let n = p.number;
        if e.number != n || e.name != p.name || e.type_guid != gpt::LINUX_DATA {
            return Err(format!(
                "partition {} is named {:?}, the plan has {n} {:?}",
                e.number, e.name, p.name
            ));
        }
        if (e.first_lba, e.last_lba) != (p.first_lba, p.last_lba) {
            return Err(format!(
                "partition {n} spans sectors {}..={}, the plan {}..={}",
                e.first_lba, e.last_lba, p.first_lba, p.last_lba
            ));
        }
        let cur = ins.current.partitions.iter().find(|c| c.number == n);
        let Some(cur) = cur.filter(|c| c.device.is_some()) else {
            return Err(format!(
                "the kernel does not list partition {n} (partx --add {})",
                ins.dev.node.display()
            ));
        };
        let [sig] = &cur.signatures[..] else {
            return Err(if cur.signatures.is_empty() {
                format!("partition {n} has no filesystem")
            } else {
                format!("partition {n} has {} signatures", cur.signatures.len())
            });
        };
        if sig.kind != p.fs.name() {
            return Err(format!("partition {n} holds {}, not {}", sig.kind, p.fs));
        }
        if let Some(u) = &p.uuid {
            if sig.uuid.as_deref() != Some(u.as_str()) {
                return Err(format!(
                    "partition {n} has UUID {}, not {u}",
                    sig.uuid.as_deref().unwrap_or("(none)")
                ));
            }
        }
        if let Some(l) = &p.label {
            if sig.label.as_deref() != Some(l.as_str()) {
                return Err(format!(
                    "partition {n} has label {:?}, not {l:?}",
                    sig.label.as_deref().unwrap_or("")
                ));
            }
        }
    }
    Ok(())
}

fn refusals(
    ins: &Inspected,
    req: &FormatRequest,
    mismatch: Option<String>,
    sys: &System,
) -> Result<Vec<Refusal>> {
    let mut r = Vec::new();
    if ins.facts.read_only {
        r.push(Refusal::ReadOnly);
    }
    let text = std::fs::read_to_string(&sys.mountinfo)
        .with_context(|| format!("reading {}", sys.mountinfo.display()))?;
    let mounts = probe::parse_mountinfo(&text);
    let mut protected_at = Vec::new();
    for p in probe::protected_disks(sys, &mounts) {
        if p.disk == ins.dev.name && !protected_at.contains(&p.mountpoint) {
            protected_at.push(p.mountpoint.clone());
            r.push(Refusal::Protected {
                what: p.what,
                mountpoint: p.mountpoint,
                from: p.source,
            });
        }
    }
    let mine = |dn: probe::DevNum| -> Option<PathBuf> {
        if dn == ins.dev.devnum {
            return Some(ins.dev.node.clone());
        }
        ins.kparts
            .iter()
            .find(|k| k.devnum == dn)
            .map(|k| k.node.clone())
    };
    for m in &mounts {
        if protected_at.contains(&m.mountpoint) {
            continue;
        }
        if let Some(device) = probe::mount_devnum(m).and_then(mine) {
            r.push(Refusal::Mounted {
                device,
                mountpoint: m.mountpoint.clone(),
            });
        }
    }
    // No /proc/swaps: a kernel without swap.
    let swaps = std::fs::read_to_string(&sys.swaps).unwrap_or_default();
    for s in probe::parse_swaps(&swaps) {
        if let Some(device) = probe::block_devnum(&s.path).and_then(mine) {
            r.push(Refusal::Swap { device });
        }
    }
    for h in probe::holders(&ins.dev.sysdir) {
        r.push(Refusal::Held {
            device: ins.dev.node.clone(),
            holder: probe::describe_holder(&sys.sys, &h),
        });
    }
    for k in &ins.kparts {
        for h in &k.holders {
            r.push(Refusal::Held {
                device: k.node.clone(),
                holder: probe::describe_holder(&sys.sys, h),
            });
        }
    }
    // Two filesystems with one UUID: /dev/disk/by-uuid would name either.
    let link = sys.by_uuid.join(req.uuid.as_str());
    if let Some(dn) = std::fs::canonicalize(&link)
        .ok()
        .and_then(|p| probe::block_devnum(&p))
    {
        if mine(dn).is_none() {
            r.push(Refusal::UuidInUse {
                uuid: req.uuid.to_string(),
                device: std::fs::canonicalize(&link).unwrap_or(link),
            });
        }
    }
    if !req.wipe && !ins.current.is_blank() {
        r.push(Refusal::NotBlank {
            found: ins.current.describe(),
            mismatch: ins
                .table
                .as_ref()
                .and_then(|t| t.as_ref().ok())
                .and(mismatch),
        });
    }
    Ok(r)
}

/// Run `format-disk`. `show` gets the report (facts, current state, plan)
/// before anything is written; the returned report says what happened.
pub fn format_disk(
    req: &FormatRequest,
    sys: &System,
    tools: &Tools,
    show: &mut dyn FnMut(&Report),
) -> Result<Report, FormatError> {
    let t0 = Instant::now();
    let refused = |device: String, reason: Refusal| FormatError::Refused {
        device,
        reasons: vec![reason],
    };
    let given = req.device.display().to_string();
    let dev = probe::resolve(&req.device, sys)
        .map_err(|e| refused(given.clone(), Refusal::NotBlock(e)))?;
    if let Some((number, disk)) = &dev.partition {
        return Err(refused(
            dev.shown(),
            Refusal::Partition {
                number: *number,
                disk: disk.clone(),
            },
        ));
    }
    let ins = inspect(dev, sys, tools)?;
    let shown = ins.dev.shown();
    let plan = plan::make_plan(
        ins.facts.size_bytes,
        ins.facts.logical_sector_size,
        &plan::Request {
            fs: req.fs,
            uuid: req.uuid.clone(),
            label: req.label.clone(),
            key_partition: req.key_partition,
            cache_partition: req.cache_partition,
        },
    );
    let mut report = Report {
        device: req.device.clone(),
        disk: ins.dev.node.clone(),
        model: ins.facts.model.clone(),
        serial: ins.facts.serial.clone(),
        size_bytes: ins.facts.size_bytes,
        size: human(ins.facts.size_bytes),
        logical_sector_size: ins.facts.logical_sector_size,
        physical_sector_size: ins.facts.physical_sector_size,
        backing_file: ins.facts.backing_file.clone(),
        current: ins.current.clone(),
        plan: Vec::new(),
        result: None,
        mismatch: None,
        by_uuid: None,
        udev_running: None,
        error: None,
        seconds: 0.0,
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            show(&report);
            return Err(refused(shown, Refusal::TooSmall(e)));
        }
    };
    report.plan = plan
        .partitions
        .iter()
        .map(|p| PlanPart {
            part: p.clone(),
            size: human(p.size_bytes),
            device: kernel::partition_node(&sys.dev, &ins.dev.name, p.number),
        })
        .collect();

    let mismatch = match matches(&plan, &ins) {
        Ok(()) => {
            report.result = Some("already-formatted".into());
            show(&report);
            let data = plan.data();
            let node = ins
                .current
                .partitions
                .iter()
                .find(|c| c.number == data.number)
                .and_then(|c| c.device.clone())
                .ok_or_else(|| anyhow!("no device for partition {}", data.number))?;
            wait_udev(&mut report, &ins, &plan, &node, sys, tools)?;
            report.seconds = t0.elapsed().as_secs_f64();
            return Ok(report);
        }
        Err(why) => why,
    };
    if !ins.current.is_blank() {
        report.mismatch = Some(mismatch.clone());
    }
    show(&report);

    let reasons = refusals(&ins, req, Some(mismatch), sys)?;
    if !reasons.is_empty() {
        return Err(FormatError::Refused {
            device: shown,
            reasons,
        });
    }
    if req.dry_run {
        report.result = Some("dry-run".into());
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }

    let lock = kernel::lock(&ins.dev.node, Duration::from_secs(10))?;
    if req.wipe {
        wipe(&ins, tools)?;
    }
    let written =
        write_table(&ins, &plan, sys).and_then(|parts| make_filesystems(&plan, &parts, tools));
    if let Err(e) = written {
        let reset = rollback(&ins, &plan, sys, tools);
        let data = plan.data();
        return Err(FormatError::RolledBack(match reset {
            Ok(()) => e.context(format!(
                "formatting {shown} failed; its partition table was reset to an empty GPT \
                 (no filesystem left under UUID {}); fix the cause and run again",
                req.uuid
            )),
            Err(r) => e.context(format!(
                "formatting {shown} failed, and resetting its partition table to an empty GPT \
                 failed too ({r:#}): the disk is in an unknown state; run again with --wipe \
                 (partition {} may hold part of a filesystem)",
                data.number
            )),
        }));
    }
    drop(lock);

    let node = kernel::partition_node(&sys.dev, &ins.dev.name, plan.data().number);
    verify(&plan, &node, tools)?;
    report.result = Some("formatted".into());
    wait_udev(&mut report, &ins, &plan, &node, sys, tools)?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn wipefs_all(tools: &Tools, node: &Path) -> Result<()> {
    crate::cmd::run(&[
        OsStr::new(&tools.wipefs),
        "--all".as_ref(),
        "--force".as_ref(),
        node.as_os_str(),
    ])
    .with_context(|| format!("wiping signatures on {}", node.display()))
    .map(drop)
}

/// `--wipe`: the signatures inside each partition the kernel knows (so an
/// old filesystem cannot reappear in a new partition at the same place),
/// then the disk's own (partition tables, a filesystem on the whole disk).
fn wipe(ins: &Inspected, tools: &Tools) -> Result<()> {
    for k in &ins.kparts {
        tracing::info!("wiping signatures on {}", k.node.display());
        wipefs_all(tools, &k.node)?;
    }
    tracing::info!("wiping signatures on {}", ins.dev.node.display());
    wipefs_all(tools, &ins.dev.node).context(
        "the partitions' signatures are erased, the partition table may be: run again with --wipe",
    )
}

fn wants(plan: &Plan) -> Vec<kernel::Want> {
    plan.partitions
        .iter()
        .map(|p| kernel::Want {
            number: p.number,
            start: p.start_bytes,
            size: p.size_bytes,
        })
        .collect()
}

/// Write the GPT of `plan` and have the kernel show its partitions.
fn write_table(ins: &Inspected, plan: &Plan, sys: &System) -> Result<Vec<KernelPart>> {
    let node = &ins.dev.node;
    tracing::info!("writing a GPT on {}", node.display());
    let mut f = kernel::open_exclusive(node)?;
    let parts: Vec<gpt::NewPartition> = plan
        .partitions
        .iter()
        .map(|p| gpt::NewPartition {
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            name: p.name.to_string(),
        })
        .collect();
    gpt::write(&mut f, plan.sectors, plan.sector_size, &parts)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing the GPT on {}", node.display()))?;
    kernel::sync_partitions(&f, node, &ins.dev.sysdir, &sys.dev, &wants(plan))
}

/// Clear old signatures in the new partitions, then mkfs each.
fn make_filesystems(plan: &Plan, parts: &[KernelPart], tools: &Tools) -> Result<()> {
    for p in &plan.partitions {
        let k = parts
            .iter()
            .find(|k| k.number == p.number)
            .ok_or_else(|| anyhow!("partition {} vanished", p.number))?;
        wipefs_all(tools, &k.node)?;
        let prog = tools.mkfs(p.fs);
        let mut argv: Vec<OsString> = vec![prog.to_owned()];
        argv.extend(
            p.fs.mkfs_args(p.uuid.as_ref(), p.label.as_deref())
                .into_iter()
                .map(OsString::from),
        );
        argv.push(k.node.clone().into_os_string());
        tracing::info!(
            "{} {} on {}",
            prog.to_string_lossy(),
            match p.role {
                Role::Key => "(key partition)",
                Role::Cache => "(live image cache)",
                Role::Data => "(data partition)",
            },
            k.node.display()
        );
        crate::cmd::run(&argv)
            .with_context(|| format!("making the {} filesystem on {}", p.fs, k.node.display()))?;
    }
    Ok(())
}

/// After a failure past the GPT: wipe what was made in the new partitions,
/// write an empty GPT (which also zeroes the first and last MiB), zero the
/// first MiB of every planned partition's place, and tell the kernel.
fn rollback(ins: &Inspected, plan: &Plan, sys: &System, tools: &Tools) -> Result<()> {
    let node = &ins.dev.node;
    tracing::warn!("resetting {} to an empty GPT", node.display());
    for p in &plan.partitions {
        let part = kernel::partition_node(&sys.dev, &ins.dev.name, p.number);
        if probe::block_devnum(&part).is_some() {
            if let Err(e) = wipefs_all(tools, &part) {
                tracing::warn!("{e:#}");
            }
        }
    }
    let mut f = kernel::open_exclusive(node)?;
    gpt::write(&mut f, plan.sectors, plan.sector_size, &[])
        .with_context(|| format!("writing an empty GPT on {}", node.display()))?;
    let zeros = vec![0u8; plan::MIB as usize];
    for p in &plan.partitions {
        let n = p.size_bytes.min(plan::MIB) as usize;
        f.seek(SeekFrom::Start(p.start_bytes))
            .and_then(|_| f.write_all(&zeros[..n]))
            .with_context(|| {
                format!(
                    "zeroing the start of partition {} on {}",
                    p.number,
                    node.display()
                )
            })?;
    }
    f.sync_all()
        .with_context(|| format!("flushing {}", node.display()))?;
    kernel::sync_partitions(&f, node, &ins.dev.sysdir, &sys.dev, &[])?;
    Ok(())
}

/// Check the new data partition carries the fs, UUID and label asked.
fn verify(plan: &Plan, node: &Path, tools: &Tools) -> Result<()> {
    let d = plan.data();
    let sigs = probe::signatures(&tools.wipefs, node)?;
    let ok = sigs.iter().any(|s| {
        s.kind == d.fs.name()
            && s.uuid.as_deref() == d.uuid.as_ref().map(Uuid::as_str)
            && (d.label.is_none() || s.label == d.label)
    });
    if !ok {
        anyhow::bail!(
            "after mkfs, {} shows {:?}, not {} UUID {}",
            node.display(),
            sigs,
            d.fs,
            d.uuid.as_ref().map(Uuid::as_str).unwrap_or("")
        );
    }
    Ok(())
}

/// Have udev make /dev/disk/by-uuid/UUID (bounded), or, without udev, say
/// so and check the partition's device node.
fn wait_udev(
    report: &mut Report,
    ins: &Inspected,
    plan: &Plan,
    node: &Path,
    sys: &System,
    tools: &Tools,
) -> Result<()> {
    let uuid = plan.data().uuid.clone().expect("data partition has a UUID");
    let link = sys.by_uuid.join(uuid.as_str());
    let running = sys.udev_control.exists();
    report.udev_running = Some(running);
    let resolves = || {
        std::fs::canonicalize(&link)
            .ok()
            .and_then(|p| probe::block_devnum(&p))
            .is_some_and(|dn| Some(dn) == probe::block_devnum(node))
    };
    if !running {
        tracing::warn!(
            "udev is not running ({} is missing): {} will appear when udev processes {}; \
             checked that {} exists instead",
            sys.udev_control.display(),
            link.display(),
            ins.dev.node.display(),
            node.display()
        );
        if probe::block_devnum(node).is_none() {
            return Err(anyhow!("{} does not exist", node.display()));
        }
        if resolves() {
            report.by_uuid = Some(link);
        }
        return Ok(());
    }
    let start = Instant::now();
    let mut round = 0;
    loop {
        if resolves() {
            report.by_uuid = Some(link);
            return Ok(());
        }
        if start.elapsed() >= tools.udev_timeout {
            return Err(anyhow!(
                "{} did not appear within {} s (udev); the filesystem on {} is complete: \
                 run `udevadm trigger --settle {}` or run format-disk again",
                link.display(),
                tools.udev_timeout.as_secs(),
                node.display(),
                ins.dev.node.display()
            ));
        }
        // A change event for the disk and its partitions, then wait for
        // the queue; bounded by the timeout above.
        if round % 5 == 0 {
            let mut argv: Vec<OsString> = vec![
                tools.udevadm.clone().into(),
                "trigger".into(),
                "--action=change".into(),
            ];
            argv.push(ins.dev.node.clone().into_os_string());
            for p in &plan.partitions {
                argv.push(
                    kernel::partition_node(&sys.dev, &ins.dev.name, p.number).into_os_string(),
                );
            }
            if let Err(e) = crate::cmd::run(&argv) {
                tracing::debug!("{e:#}");
            }
        }
        let left = tools
            .udev_timeout
            .saturating_sub(start.elapsed())
            .as_secs()
            .clamp(1, 5);
        if let Err(e) = crate::cmd::run(&[
            tools.udevadm.clone(),
            "settle".into(),
            format!("--timeout={left}"),
        ]) {
            tracing::debug!("{e:#}");
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_messages() {
        let e = FormatError::Refused {
            device: "/dev/sdz".into(),
            reasons: vec![
                Refusal::Mounted {
                    device: "/dev/sdz2".into(),
                    mountpoint: "/mnt/disk".into(),
                },
                Refusal::Swap {
                    device: "/dev/sdz1".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "refusing to format /dev/sdz: /dev/sdz2 is mounted at /mnt/disk; unmount it first; \
             /dev/sdz1 is in use as swap; swapoff it first"
        );
        assert_eq!(e.exit_code(), 3);
        let r = Refusal::NotBlank {
            found: "a gpt partition table with 1 partition (/dev/sdz1 64 MiB: xfs)".into(),
            mismatch: Some("partition 1 has UUID a, not b".into()),
        };
        assert_eq!(
            r.to_string(),
            "it is not blank: a gpt partition table with 1 partition (/dev/sdz1 64 MiB: xfs), \
             not the requested layout (partition 1 has UUID a, not b); add --wipe to erase it"
        );
        assert_eq!(
            Refusal::Protected {
                what: "the running root".into(),
                mountpoint: "/".into(),
                from: "/dev/sdz1".into()
            }
            .to_string(),
            "it holds the running root (/ is mounted from /dev/sdz1); refused even with --wipe"
        );
    }

    #[test]
    fn current_descriptions() {
        let sig = |kind: &str, uuid: Option<&str>| Signature {
            device: "x".into(),
            offset: "0x0".into(),
            kind: kind.into(),
            uuid: uuid.map(Into::into),
            label: None,
        };
        let blank = Current {
            partition_table: None,
            partitions: vec![],
            signatures: vec![],
        };
        assert!(blank.is_blank());
        assert_eq!(blank.describe(), "blank (no partition table, no signature)");
        let whole = Current {
            signatures: vec![sig("ext4", Some("u1"))],
            ..blank.clone()
        };
        assert_eq!(whole.describe(), "ext4 UUID u1 on the whole disk");
        let gpt = Current {
            partition_table: Some("gpt".into()),
            partitions: vec![CurrentPart {
                number: 1,
                name: Some("nodeboot-data".into()),
                start_bytes: 1 << 20,
                size_bytes: 446 << 20,
                device: Some("/dev/sdz1".into()),
                signatures: vec![sig("xfs", Some("u2"))],
            }],
            signatures: vec![sig("gpt", None), sig("PMBR", None)],
        };
        assert_eq!(
            gpt.describe(),
            "a gpt partition table with 1 partition (/dev/sdz1 nodeboot-data 446 MiB: xfs UUID u2)"
        );
    }
}
