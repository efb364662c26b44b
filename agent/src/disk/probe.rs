//! Facts about block devices, read without writing anything: sysfs
//! (`/sys/block/<dev>/…`: size, model, serial, partitions, holders),
//! `/proc/self/mountinfo`, `/proc/swaps`, and the signatures `wipefs
//! --no-act` finds. Every path comes from [`System`] so tests can point
//! them at a tempdir.
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A block device number (major, minor).
pub type DevNum = (u32, u32);

/// A mount point whose backing disk `format-disk` never touches, and what
/// to call it in the refusal.
#[derive(Debug, Clone)]
pub struct ProtectedMount {
    pub mountpoint: PathBuf,
    /// Also every mount below it.
    pub subtree: bool,
    pub what: String,
}

impl ProtectedMount {
    fn new(mountpoint: &str, subtree: bool, what: &str) -> Self {
        ProtectedMount {
            mountpoint: mountpoint.into(),
            subtree,
            what: what.into(),
        }
    }
}

/// Where the facts come from.
#[derive(Debug, Clone)]
pub struct System {
    /// sysfs (/sys).
    pub sys: PathBuf,
    /// Device nodes (/dev).
    pub dev: PathBuf,
    pub mountinfo: PathBuf,
    pub swaps: PathBuf,
    /// udev's database (/run/udev/data), for serial numbers.
    pub udev_data: PathBuf,
    /// Exists while udevd runs (/run/udev/control).
    pub udev_control: PathBuf,
    /// /dev/disk/by-uuid.
    pub by_uuid: PathBuf,
    /// Where install-key makes its private mount directory (/run).
    pub tmp: PathBuf,
    pub protected: Vec<ProtectedMount>,
}

impl Default for System {
    fn default() -> Self {
        System {
            sys: "/sys".into(),
            dev: "/dev".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            udev_data: "/run/udev/data".into(),
            udev_control: "/run/udev/control".into(),
            by_uuid: "/dev/disk/by-uuid".into(),
            tmp: "/run".into(),
            protected: default_protected(),
        }
    }
}

/// `/`, `/usr`: the running root; `/boot`, `/boot/efi`, `/efi`,
/// `/run/initramfs/live`: the boot medium; `/run/nodeboot` and below: the
/// live image cache (a node that cached its image on a local disk).
pub fn default_protected() -> Vec<ProtectedMount> {
    vec![
        ProtectedMount::new("/", false, "the running root"),
        ProtectedMount::new("/usr", false, "the running root (/usr)"),
        ProtectedMount::new("/boot", false, "the boot medium"),
        ProtectedMount::new("/boot/efi", false, "the boot medium"),
        ProtectedMount::new("/efi", false, "the boot medium"),
        ProtectedMount::new("/run/initramfs/live", false, "the boot medium"),
        ProtectedMount::new("/run/nodeboot", true, "the live image cache"),
    ]
}

// ---------------------------------------------------------------------------
// Device numbers and sysfs

pub fn devnum_of(rdev: u64) -> DevNum {
    (libc::major(rdev), libc::minor(rdev))
}

/// Parse "MAJ:MIN".
pub fn parse_devnum(s: &str) -> Option<DevNum> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_trim(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim().trim_matches('\0').trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trim(p)?.parse().ok()
}

/// The sysfs directory of a block device number (canonical:
/// `/sys/devices/…/block/sda` or `…/sda/sda1`).
pub fn sysdir_of(sys: &Path, dn: DevNum) -> Option<PathBuf> {
    std::fs::canonicalize(sys.join(format!("dev/block/{}:{}", dn.0, dn.1))).ok()
}

/// The sysfs directory of a kernel name (`sda`, `dm-0`, `sda1`).
pub fn sysdir_of_name(sys: &Path, name: &str) -> Option<PathBuf> {
    std::fs::canonicalize(sys.join("class/block").join(name))
        .ok()
        .or_else(|| Some(sys.join("block").join(name)).filter(|p| p.exists()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Is this sysfs directory a partition (it has a `partition` file)?
pub fn is_partition(sysdir: &Path) -> bool {
    sysdir.join("partition").exists()
}

/// The whole disk's sysfs directory of a disk or partition directory.
pub fn whole_disk_dir(sysdir: &Path) -> PathBuf {
    if is_partition(sysdir) {
        sysdir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        sysdir.to_path_buf()
    }
}

/// Model, serial and size, as `format-disk` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: u64,
    pub logical_sector_size: u64,
    pub physical_sector_size: u64,
    pub read_only: bool,
    pub removable: bool,
    pub rotational: Option<bool>,
    /// A loop device's backing file.
    pub backing_file: Option<String>,
}

/// Read the facts of the disk whose sysfs directory is `sysdir`
/// (`size` is in 512-byte units whatever the sector size).
pub fn read_facts(sysdir: &Path, devnum: DevNum, udev_data: &Path) -> Facts {
    let dev = sysdir.join("device");
    let udev = udev_props(&udev_data.join(format!("b{}:{}", devnum.0, devnum.1)));
    let backing_file = read_trim(&sysdir.join("loop/backing_file"));
    let model = {
        let vendor = read_trim(&dev.join("vendor")).filter(|v| v != "ATA");
        let model = read_trim(&dev.join("model"));
        match (vendor, model) {
            (Some(v), Some(m)) => Some(format!("{v} {m}")),
            (None, Some(m)) => Some(m),
            _ => udev
                .iter()
                .find(|(k, _)| k == "ID_MODEL")
                .map(|(_, v)| v.replace('_', " "))
                .or_else(|| {
                    backing_file
                        .as_ref()
                        .map(|_| "loop device".to_string())
                        .or_else(|| {
                            let n = file_name(sysdir);
                            n.starts_with("vd").then(|| "virtio disk".to_string())
                        })
                }),
        }
    };
    let serial = read_trim(&dev.join("serial"))
        .or_else(|| read_trim(&sysdir.join("serial")))
        .or_else(|| vpd_pg80(&dev.join("vpd_pg80")))
        .or_else(|| {
            ["ID_SERIAL_SHORT", "ID_SERIAL"]
                .iter()
                .find_map(|key| udev.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        });
    Facts {
        model,
        serial,
        size_bytes: read_u64(&sysdir.join("size")).unwrap_or(0) * 512,
        logical_sector_size: read_u64(&sysdir.join("queue/logical_block_size")).unwrap_or(512),
        physical_sector_size: read_u64(&sysdir.join("queue/physical_block_size")).unwrap_or(512),
        read_only: read_u64(&sysdir.join("ro")) == Some(1),
        removable: read_u64(&sysdir.join("removable")) == Some(1),
        rotational: read_u64(&sysdir.join("queue/rotational")).map(|r| r == 1),
        backing_file,
    }
}

/// SCSI VPD page 0x80 (unit serial number): 4 header bytes, then ASCII.
fn vpd_pg80(p: &Path) -> Option<String> {
    let b = std::fs::read(p).ok()?;
    if b.len() < 4 || b[1] != 0x80 {
        return None;
    }
    let n = u16::from_be_bytes([b[2], b[3]]) as usize;
    let s = String::from_utf8_lossy(b.get(4..4 + n)?).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `E:KEY=VALUE` lines of a udev database entry.
fn udev_props(p: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A partition the kernel knows (a child directory of the disk in sysfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelPart {
    pub name: String,
    pub number: u32,
    #[serde(skip)]
    pub devnum: DevNum,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// /dev/<name>.
    pub node: PathBuf,
    /// Kernel names of the devices stacked on it (dm-0, md0).
    pub holders: Vec<String>,
}

/// The partitions of the disk at `sysdir`, by number.
pub fn read_partitions(sysdir: &Path, dev: &Path) -> Vec<KernelPart> {
    let mut v: Vec<KernelPart> = std::fs::read_dir(sysdir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_partition(p))
        .filter_map(|p| {
            let name = file_name(&p);
            Some(KernelPart {
                number: read_u64(&p.join("partition"))? as u32,
                devnum: parse_devnum(&read_trim(&p.join("dev"))?)?,
                start_bytes: read_u64(&p.join("start")).unwrap_or(0) * 512,
                size_bytes: read_u64(&p.join("size")).unwrap_or(0) * 512,
                node: dev.join(&name),
                holders: holders(&p),
                name,
            })
        })
        .collect();
    v.sort_by_key(|p| p.number);
    v
}

/// Entries of `<sysdir>/holders`.
pub fn holders(sysdir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sysdir.join("holders"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// "dm-0 (device-mapper vg-data)", "md0 (md RAID)", or the name.
pub fn describe_holder(sys: &Path, name: &str) -> String {
    let dir = sysdir_of_name(sys, name).unwrap_or_else(|| sys.join("block").join(name));
    if let Some(dm) = read_trim(&dir.join("dm/name")) {
        return format!("{name} (device-mapper {dm})");
    }
    if name.starts_with("dm-") {
        return format!("{name} (device-mapper)");
    }
    if dir.join("md").exists() || name.starts_with("md") {
        return format!("{name} (md RAID)");
    }
    if dir.join("bcache").exists() {
        return format!("{name} (bcache)");
    }
    name.to_string()
}

// ---------------------------------------------------------------------------
// The device named on the command line

/// What a path names.
#[derive(Debug, Clone)]
pub struct BlockDev {
    /// As given (may be a /dev/disk/by-id symlink).
    pub given: PathBuf,
    /// Kernel name (sda, loop0p1).
    pub name: String,
    /// /dev/<name>.
    pub node: PathBuf,
    pub devnum: DevNum,
    pub sysdir: PathBuf,
    /// For a partition: its number and the whole disk's kernel name.
    pub partition: Option<(u32, String)>,
}

impl BlockDev {
    /// "/dev/sda", or "/dev/disk/by-id/x (/dev/sda)" when given otherwise.
    pub fn shown(&self) -> String {
        if self.given == self.node {
            self.node.display().to_string()
        } else {
            format!("{} ({})", self.given.display(), self.node.display())
        }
    }
}

/// Why a path is not a block device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBlock {
    #[error("it does not exist")]
    Missing,
    #[error("it is not a block device (it is {0})")]
    Kind(&'static str),
    #[error("it is a block device unknown to sysfs ({0}:{1})")]
    NoSysfs(u32, u32),
}

/// Resolve `path` (following symlinks) to a block device and its sysfs
/// directory.
pub fn resolve(path: &Path, sys: &System) -> Result<BlockDev, NotBlock> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|_| NotBlock::Missing)?;
    let ft = md.file_type();
    if !ft.is_block_device() {
        let kind = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_fifo() {
            "a fifo"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a device"
        };
        return Err(NotBlock::Kind(kind));
    }
    let devnum = devnum_of(md.rdev());
    let sysdir = sysdir_of(&sys.sys, devnum).ok_or(NotBlock::NoSysfs(devnum.0, devnum.1))?;
    let name = file_name(&sysdir);
    let partition = is_partition(&sysdir).then(|| {
        (
            read_u64(&sysdir.join("partition")).unwrap_or(0) as u32,
            file_name(&whole_disk_dir(&sysdir)),
        )
    });
    Ok(BlockDev {
        given: path.to_path_buf(),
        node: sys.dev.join(&name),
        name,
        devnum,
        sysdir,
        partition,
    })
}

// ---------------------------------------------------------------------------
// mountinfo and swaps

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub devnum: DevNum,
    pub root: String,
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undo the kernel's octal escapes (`\040` space, `\011`, `\012`, `\134`).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text (proc(5)): `id parent MAJ:MIN root mountpoint
/// options [optional…] - fstype source superoptions`. Malformed lines are
/// skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 3 {
                return None;
            }
            Some(MountEntry {
                devnum: parse_devnum(f[2])?,
                root: unescape(f[3]),
                mountpoint: PathBuf::from(unescape(f[4])),
                fstype: f[sep + 1].to_string(),
                source: unescape(f[sep + 2]),
            })
        })
        .collect()
}

/// The block device behind a mount: its MAJ:MIN, or for filesystems that
/// show an anonymous 0:N there (btrfs), the device node named as source.
pub fn mount_devnum(m: &MountEntry) -> Option<DevNum> {
    if m.devnum.0 != 0 {
        return Some(m.devnum);
    }
    block_devnum(Path::new(&m.source))
}

/// The device number of a block device node.
pub fn block_devnum(p: &Path) -> Option<DevNum> {
    use std::os::unix::fs::MetadataExt;
    if !p.starts_with("/") {
        return None;
    }
    let md = std::fs::metadata(p).ok()?;
    md.file_type()
        .is_block_device()
        .then(|| devnum_of(md.rdev()))
}

/// One line of /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapEntry {
    pub path: PathBuf,
    pub kind: String,
}

/// Parse /proc/swaps (a header line, then `Filename Type Size Used
/// Priority`; spaces in names escaped as `\040`).
pub fn parse_swaps(text: &str) -> Vec<SwapEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let path = f.next()?;
            let kind = f.next()?;
            Some(SwapEntry {
                path: PathBuf::from(unescape(path)),
                kind: kind.to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Protected devices

/// A disk that holds something the running system needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// Whole-disk kernel name.
    pub disk: String,
    pub what: String,
    pub mountpoint: PathBuf,
    pub source: String,
}

/// The whole disks under a device: the device's disk, and for stacked
/// devices (dm, md: `slaves/`) and loop devices (their backing file's
/// filesystem) the disks beneath, recursively.
pub fn disks_under(sys: &Path, dn: DevNum) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_disks(sys, dn, &mut out, 0);
    out
}

fn collect_disks(sys: &Path, dn: DevNum, out: &mut BTreeSet<String>, depth: u32) {
    if depth > 8 || dn.0 == 0 {
        return;
    }
    let Some(dir) = sysdir_of(sys, dn) else {
        return;
    };
    let disk = whole_disk_dir(&dir);
    if !out.insert(file_name(&disk)) {
        return;
    }
    for d in [&dir, &disk] {
        for slave in std::fs::read_dir(d.join("slaves"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(n) = read_trim(&slave.path().join("dev")).and_then(|s| parse_devnum(&s)) {
                collect_disks(sys, n, out, depth + 1);
            }
        }
    }
    if let Some(backing) = read_trim(&disk.join("loop/backing_file")) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(md) = std::fs::metadata(&backing) {
            collect_disks(sys, devnum_of(md.dev()), out, depth + 1);
        }
    }
}

/// The disks behind the protected mount points of `mounts`.
pub fn protected_disks(sys: &System, mounts: &[MountEntry]) -> Vec<Protected> {
    let mut v = Vec::new();
    for m in mounts {
        let Some(p) = sys.protected.iter().find(|p| {
            m.mountpoint == p.mountpoint || (p.subtree && m.mountpoint.starts_with(&p.mountpoint))
        }) else {
            continue;
        };
        let Some(dn) = mount_devnum(m) else { continue };
        for disk in disks_under(&sys.sys, dn) {
            v.push(Protected {
                disk,
                what: p.what.clone(),
                mountpoint: m.mountpoint.clone(),
                source: m.source.clone(),
            });
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Signatures

/// A signature `wipefs --no-act` reports (filesystem, partition table,
/// RAID or LVM member, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Signature {
    pub device: String,
    pub offset: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

#[derive(serde::Deserialize)]
struct WipefsJson {
    #[serde(default)]
    signatures: Vec<Signature>,
}

/// Parse `wipefs --no-act --json` output (empty output: no signature).
pub fn parse_wipefs(json: &str) -> Result<Vec<Signature>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let j: WipefsJson = serde_json::from_str(json).context("parsing wipefs --json output")?;
    Ok(j.signatures)
}

/// Every signature libblkid finds on `node` itself (not inside its
/// partitions): `wipefs --no-act --json`. wipefs rather than `blkid -p`:
/// it lists all of them (a filesystem and a partition table, the backup
/// GPT at the end) and exits 0 when there is none.
pub fn signatures(wipefs: &str, node: &Path) -> Result<Vec<Signature>> {
    let out = crate::cmd::run(&[
        std::ffi::OsStr::new(wipefs),
        "--no-act".as_ref(),
        "--json".as_ref(),
        node.as_os_str(),
    ])
    .with_context(|| format!("looking for signatures on {}", node.display()))?;
    parse_wipefs(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn mountinfo() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw,discard
43 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
50 27 7:2 / /mnt/with\\040space rw - xfs /dev/loop0p2 rw
51 27 0:45 /@home /home rw - btrfs /dev/sdb1 rw
garbage line
52 27 7:3 / /x rw -
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].devnum, (254, 0));
        assert_eq!(m[1].mountpoint, Path::new("/"));
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[2].root, "/run/netns");
        assert_eq!(m[3].mountpoint, Path::new("/mnt/with space"));
        assert_eq!(m[4].devnum, (0, 45));
        assert_eq!(m[4].source, "/dev/sdb1");
        assert_eq!(mount_devnum(&m[3]), Some((7, 2)));
    }

    #[test]
    fn swaps() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
/dev/loop0p1                            partition\t65532\t\t0\t\t-2\n\
/var/swap\\040file                       file\t\t1024\t\t0\t\t-3\n";
        let s = parse_swaps(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].path, Path::new("/dev/loop0p1"));
        assert_eq!(s[0].kind, "partition");
        assert_eq!(s[1].path, Path::new("/var/swap file"));
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }

    #[test]
    fn wipefs_output() {
        let j = r#"{
   "signatures": [
      {"device": "loop0", "offset": "0x200", "type": "gpt", "uuid": null, "label": null},
      {"device": "loop0", "offset": "0x438", "type": "ext4",
       "uuid": "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11", "label": "hello"}
   ]
}"#;
        let s = parse_wipefs(j).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, "gpt");
        assert_eq!(s[1].label.as_deref(), Some("hello"));
        assert!(parse_wipefs("").unwrap().is_empty());
        assert!(parse_wipefs("{\n   \"signatures\": [\n\n   ]\n}\n")
            .unwrap()
            .is_empty());
        assert!(parse_wipefs("not json").is_err());
    }

    fn w(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// A fake sysfs: a SCSI disk sdz with two partitions, sdz2 held by a
    /// device-mapper target dm-7 whose slave it is.
    fn fake_sysfs(root: &Path) -> PathBuf {
        let sys = root.join("sys");
        let disk = sys.join("devices/pci0/host0/block/sdz");
        w(&disk.join("size"), "1048576\n");
        w(&disk.join("dev"), "8:0\n");
        w(&disk.join("ro"), "0\n");
        w(&disk.join("removable"), "0\n");
        w(&disk.join("queue/logical_block_size"), "512\n");
        w(&disk.join("queue/physical_block_size"), "4096\n");
        w(&disk.join("queue/rotational"), "0\n");
        w(&disk.join("device/vendor"), "ACME    \n");
        w(&disk.join("device/model"), "FastDisk 9000   \n");
        let mut pg80 = vec![0u8, 0x80, 0, 8];
        pg80.extend_from_slice(b"  SN1234");
        fs::create_dir_all(disk.join("device")).unwrap();
        fs::write(disk.join("device/vpd_pg80"), pg80).unwrap();
        for (n, start, size) in [(1u32, 2048u64, 131_072u64), (2, 133_120, 913_408)] {
            let p = disk.join(format!("sdz{n}"));
            w(&p.join("partition"), &format!("{n}\n"));
            w(&p.join("start"), &format!("{start}\n"));
            w(&p.join("size"), &format!("{size}\n"));
            w(&p.join("dev"), &format!("8:{n}\n"));
            fs::create_dir_all(p.join("holders")).unwrap();
        }
        let dm = sys.join("devices/virtual/block/dm-7");
        w(&dm.join("dm/name"), "vg-scratch\n");
        w(&dm.join("dev"), "253:7\n");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(&dm, disk.join("sdz2/holders/dm-7")).unwrap();
        std::os::unix::fs::symlink(disk.join("sdz2"), dm.join("slaves/sdz2")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        fs::create_dir_all(sys.join("class/block")).unwrap();
        for (num, target) in [
            ("8:0", disk.clone()),
            ("8:1", disk.join("sdz1")),
            ("8:2", disk.join("sdz2")),
            ("253:7", dm.clone()),
        ] {
            std::os::unix::fs::symlink(&target, sys.join("dev/block").join(num)).unwrap();
            std::os::unix::fs::symlink(&target, sys.join("class/block").join(file_name(&target)))
                .unwrap();
        }
        sys
    }

    #[test]
    fn sysfs_facts_partitions_holders() {
        let d = tempfile::tempdir().unwrap();
        let sys = fake_sysfs(d.path());
        let dir = sysdir_of(&sys, (8, 0)).unwrap();
        assert_eq!(file_name(&dir), "sdz");
        let f = read_facts(&dir, (8, 0), &d.path().join("udev"));
        assert_eq!(f.model.as_deref(), Some("ACME FastDisk 9000"));
        assert_eq!(f.serial.as_deref(), Some("SN1234"));
        assert_eq!(f.size_bytes, 512 << 20);
        assert_eq!((f.logical_sector_size, f.physical_sector_size), (512, 4096));
        assert_eq!(f.rotational, Some(false));
        assert!(!f.read_only);
        let parts = read_partitions(&dir, Path::new("/dev"));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].node, Path::new("/dev/sdz1"));
        assert_eq!(parts[1].start_bytes, 133_120 * 512);
        assert_eq!(parts[1].devnum, (8, 2));
        assert!(parts[0].holders.is_empty());
        assert_eq!(parts[1].holders, ["dm-7"]);
        assert_eq!(
            describe_holder(&sys, "dm-7"),
            "dm-7 (device-mapper vg-scratch)"
        );
        assert_eq!(describe_holder(&sys, "md0"), "md0 (md RAID)");
        // a partition's whole disk
        let p = sysdir_of(&sys, (8, 2)).unwrap();
        assert!(is_partition(&p));
        assert_eq!(file_name(&whole_disk_dir(&p)), "sdz");
        // dm-7 sits on sdz2: a mount of dm-7 protects sdz
        assert_eq!(
            disks_under(&sys, (253, 7)).into_iter().collect::<Vec<_>>(),
            ["dm-7", "sdz"]
        );
    }

    #[test]
    fn serial_from_udev_db_and_virtio() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("vda");
        w(&dir.join("size"), "2048\n");
        w(
            &d.path().join("udev/b254:0"),
            "S:disk/by-id/virtio-abc\nE:ID_SERIAL=abc_long\nE:ID_SERIAL_SHORT=abc\n",
        );
        let f = read_facts(&dir, (254, 0), &d.path().join("udev"));
        assert_eq!(f.serial.as_deref(), Some("abc"));
        assert_eq!(f.model.as_deref(), Some("virtio disk"));
        assert_eq!(f.size_bytes, 1 << 20);
        w(&dir.join("serial"), "direct\n");
        let f = read_facts(&dir, (254, 0), &d.path().join("udev"));
        assert_eq!(f.serial.as_deref(), Some("direct"));
    }

    #[test]
    fn protected_from_mountinfo() {
        let d = tempfile::tempdir().unwrap();
        let sys = System {
            sys: fake_sysfs(d.path()),
            ..System::default()
        };
        let mounts = parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sdz1 rw\n\
             2 1 0:30 / /run rw - tmpfs tmpfs rw\n\
             3 2 253:7 / /run/nodeboot/cache rw - xfs /dev/mapper/vg-scratch rw\n\
             4 1 8:2 / /srv rw - xfs /dev/sdz2 rw\n",
        );
        let p = protected_disks(&sys, &mounts);
        let got: Vec<(&str, &str, &str)> = p
            .iter()
            .map(|p| {
                (
                    p.disk.as_str(),
                    p.what.as_str(),
                    p.mountpoint.to_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("sdz", "the running root", "/"),
                ("dm-7", "the live image cache", "/run/nodeboot/cache"),
                ("sdz", "the live image cache", "/run/nodeboot/cache"),
            ]
        );
    }

    #[test]
    fn resolve_refuses_non_block() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("file");
        fs::write(&f, "x").unwrap();
        let sys = System::default();
        assert_eq!(
            resolve(&f, &sys).unwrap_err(),
            NotBlock::Kind("a regular file")
        );
        assert_eq!(
            resolve(d.path(), &sys).unwrap_err(),
            NotBlock::Kind("a directory")
        );
        assert_eq!(
            resolve(Path::new("/dev/null"), &sys).unwrap_err(),
            NotBlock::Kind("a character device")
        );
        assert_eq!(
            resolve(&d.path().join("nope"), &sys).unwrap_err(),
            NotBlock::Missing
        );
    }
}
