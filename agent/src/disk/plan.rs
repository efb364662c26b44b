//! What `format-disk` will write: the command-line values checked (UUID,
//! label, sizes) and the partition layout computed from the disk's size and
//! logical sector size.
//!
//! The layout is a GPT whose partitions start and end on 1 MiB boundaries:
//!
//! ```text
//! 0        1 MiB                1 MiB + KEY            + CACHE                        end − <1 MiB
//! │ PMBR,  │ 1 nodeboot-key     │ 2 nodeboot-cache     │ 3 nodeboot-data (the rest)       │ backup
//! │ GPT    │ ext4 "nodeboot-key"│ ext4 "nodeboot-cache"│ xfs|ext4|btrfs, --uuid, --label  │ GPT
//! ```
//!
//! Each of the key (`--key-partition`) and the live image cache
//! (`--cache-partition`) is optional; the partitions are numbered in that
//! order, the data partition last. The layout
//! is a pure function of (disk size, sector size, options): running again
//! on the same disk gives the same numbers, which is what makes the
//! "already formatted" check exact.
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

/// Partitions start and end on multiples of this.
pub const ALIGN: u64 = MIB;
/// GPT partition name of the key partition.
pub const KEY_PART_NAME: &str = "nodeboot-key";
/// GPT partition name of the data partition.
pub const DATA_PART_NAME: &str = "nodeboot-data";
/// Filesystem label of the key partition (ext4).
pub const KEY_FS_LABEL: &str = "nodeboot-key";
/// Bounds of `--key-partition`.
pub const KEY_MIN: u64 = 8 * MIB;
pub const KEY_MAX: u64 = GIB;
/// GPT partition name of the live image cache (`nodectl initrd` finds it
/// by this name).
pub const CACHE_PART_NAME: &str = "nodeboot-cache";
/// Filesystem label of the live image cache (ext4).
pub const CACHE_FS_LABEL: &str = "nodeboot-cache";
/// Smallest `--cache-partition`: room for one small image. A live image
/// is ~200 MiB; give at least twice the image (the new one is written
/// before the old one goes when it does not fit otherwise).
pub const CACHE_MIN: u64 = 64 * MIB;

/// The filesystems `format-disk` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Xfs,
    Ext4,
    Btrfs,
}

impl Fs {
    pub const ALL: [Fs; 3] = [Fs::Xfs, Fs::Ext4, Fs::Btrfs];

    /// As blkid/wipefs and mount(8) name it.
    pub fn name(self) -> &'static str {
        match self {
            Fs::Xfs => "xfs",
            Fs::Ext4 => "ext4",
            Fs::Btrfs => "btrfs",
        }
    }

    /// The mkfs program (a [`super::Tools`] entry may replace it).
    pub fn mkfs(self) -> &'static str {
        match self {
            Fs::Xfs => "mkfs.xfs",
            Fs::Ext4 => "mkfs.ext4",
            Fs::Btrfs => "mkfs.btrfs",
        }
    }

    /// Longest label in bytes: xfs 12, ext4 16, btrfs 255.
    pub fn label_max(self) -> usize {
        match self {
            Fs::Xfs => 12,
            Fs::Ext4 => 16,
            Fs::Btrfs => 255,
        }
    }

    /// Smallest partition the mkfs accepts (xfsprogs ≥ 5.19 refuses below
    /// 300 MB; mkfs.btrfs below about 109 MiB with its default profiles).
    pub fn min_size(self) -> u64 {
        match self {
            Fs::Xfs => 300 * MIB,
            Fs::Ext4 => 16 * MIB,
            Fs::Btrfs => 128 * MIB,
        }
    }

    /// mkfs options (before the device): force (every check that matters
    /// was made by format-disk; the partition is brand new), the UUID and
    /// label set at creation.
    pub fn mkfs_args(self, uuid: Option<&Uuid>, label: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        match self {
            Fs::Xfs => {
                a.extend(["-f".into(), "-q".into()]);
                if let Some(u) = uuid {
                    a.extend(["-m".into(), format!("uuid={u}")]);
                }
            }
            Fs::Ext4 => {
                a.extend(["-F".into(), "-q".into()]);
                if let Some(u) = uuid {
                    a.extend(["-U".into(), u.to_string()]);
                }
            }
            Fs::Btrfs => {
                a.extend(["-f".into(), "-q".into()]);
                if let Some(u) = uuid {
                    a.extend(["-U".into(), u.to_string()]);
                }
            }
        }
        if let Some(l) = label {
            a.extend(["-L".into(), l.to_string()]);
        }
        a
    }
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fs::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown filesystem `{s}`: one of xfs, ext4, btrfs"))
    }
}

/// A UUID in RFC 4122 text form, kept lower-case (as blkid prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Uuid(String);

impl Uuid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Uuid {
    type Err = String;
    /// 8-4-4-4-12 hexadecimal digits (either case); not the nil UUID.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a UUID: expected 8-4-4-4-12 hexadecimal digits, \
                 e.g. 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11 (uuidgen makes one)"
            )
        };
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        if !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad());
        }
        let u = s.to_ascii_lowercase();
        if u.bytes().all(|b| b == b'0' || b == b'-') {
            return Err(format!(
                "`{s}` is the nil UUID, which cannot name a filesystem (uuidgen makes one)"
            ));
        }
        Ok(Uuid(u))
    }
}

/// Check a filesystem label for `fs`: not empty, no control characters, no
/// `/` (udev could not make a /dev/disk/by-label link), at most
/// [`Fs::label_max`] bytes.
pub fn check_label(fs: Fs, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("--label is empty (leave it out for no label)".into());
    }
    if let Some(c) = label.chars().find(|c| c.is_control() || *c == '/') {
        return Err(format!(
            "--label {label:?} contains {c:?}: control characters and / are not allowed"
        ));
    }
    let max = fs.label_max();
    if label.len() > max {
        let article = if fs == Fs::Xfs { "an" } else { "a" };
        return Err(format!(
            "--label {label:?} is {} bytes long: {article} {fs} label holds at most {max}",
            label.len()
        ));
    }
    Ok(())
}

/// Parse a size: a whole number with an optional binary unit K, M, G or T
/// (also written KiB, MiB, …; either case). A bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "`{s}` is not a size: expected a whole number with an optional unit K, M, G or T, e.g. 64M"
        ));
    }
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => TIB,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "`{s}`: units are binary here; write {num}{} or {num}{}iB",
                &unit[..1].to_ascii_uppercase(),
                &unit[..1].to_ascii_uppercase()
            ))
        }
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`: use K, M, G or T (binary: 64M = 64 MiB)"
            ))
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parse and bound `--key-partition`: a whole number of MiB between
/// [`KEY_MIN`] and [`KEY_MAX`].
pub fn parse_key_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n % MIB != 0 {
        return Err(format!(
            "`{s}` is not a whole number of MiB (partitions are 1 MiB-aligned)"
        ));
    }
    if !(KEY_MIN..=KEY_MAX).contains(&n) {
        return Err(format!(
            "`{s}` is out of bounds: the key partition takes {} to {} (64M is plenty for a deploy key)",
            human(KEY_MIN),
            human(KEY_MAX)
        ));
    }
    Ok(n)
}

/// Parse and bound `--cache-partition`: a whole number of MiB, at least
/// [`CACHE_MIN`] (the disk's size bounds it from above).
pub fn parse_cache_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n % MIB != 0 {
        return Err(format!(
            "`{s}` is not a whole number of MiB (partitions are 1 MiB-aligned)"
        ));
    }
    if n < CACHE_MIN {
        return Err(format!(
            "`{s}` is too small: the live image cache takes at least {} (give it twice the live image, e.g. 1G)",
            human(CACHE_MIN)
        ));
    }
    Ok(n)
}

/// A size for people: binary units, one decimal unless whole ("512 MiB",
/// "1.8 TiB").
pub fn human(bytes: u64) -> String {
    let units = [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)];
    for (name, u) in units {
        if bytes >= u {
            if bytes.is_multiple_of(u) {
                return format!("{} {name}", bytes / u);
            }
            return format!("{:.1} {name}", bytes as f64 / u as f64);
        }
    }
    format!("{bytes} B")
}

/// Which partition of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Key,
    Cache,
    Data,
}

/// One partition to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPart {
    /// GPT entry number (1-based).
    pub number: u32,
    pub role: Role,
    /// GPT partition name.
    pub name: &'static str,
    /// In logical sectors, inclusive (as GPT stores them).
    pub first_lba: u64,
    pub last_lba: u64,
    pub start_bytes: u64,
    pub size_bytes: u64,
    pub fs: Fs,
    /// None: mkfs picks one (the key partition).
    pub uuid: Option<Uuid>,
    pub label: Option<String>,
}

/// The whole layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub sector_size: u64,
    /// Disk size in logical sectors.
    pub sectors: u64,
    pub partitions: Vec<PlannedPart>,
}

impl Plan {
    pub fn data(&self) -> &PlannedPart {
        self.partitions
            .iter()
            .find(|p| p.role == Role::Data)
            .expect("a plan always has a data partition")
    }
}

/// What the layout needs from the options.
#[derive(Debug, Clone)]
pub struct Request {
    pub fs: Fs,
    pub uuid: Uuid,
    pub label: Option<String>,
    pub key_partition: Option<u64>,
    /// `--cache-partition`: the live image cache, after the key partition.
    pub cache_partition: Option<u64>,
}

/// Sectors taken by one copy of the GPT partition array (128 entries of
/// 128 bytes).
pub fn entry_sectors(sector_size: u64) -> u64 {
    (128 * 128u64).div_ceil(sector_size)
}

/// Compute the layout for a disk of `size_bytes` with `sector_size`-byte
/// logical sectors.
pub fn make_plan(size_bytes: u64, sector_size: u64, req: &Request) -> Result<Plan, String> {
    if !(512..=ALIGN).contains(&sector_size) || !sector_size.is_power_of_two() {
        return Err(format!("unsupported logical sector size {sector_size}"));
    }
    let sectors = size_bytes / sector_size;
    let align = ALIGN / sector_size;
    let es = entry_sectors(sector_size);
    // The primary GPT (LBA 0..2+es) fits in the first MiB; the backup takes
    // the last 1+es sectors.
    let last_usable = sectors
        .checked_sub(2 + es)
        .ok_or_else(|| format!("it is too small ({} bytes) for a GPT", size_bytes))?;
    let end = ((last_usable + 1) / align) * align; // exclusive, aligned down
    let mut parts = Vec::new();
    let mut start = align;
    if let Some(k) = req.key_partition {
        let n = k / sector_size;
        parts.push(PlannedPart {
            number: 1,
            role: Role::Key,
            name: KEY_PART_NAME,
            first_lba: start,
            last_lba: start + n - 1,
            start_bytes: start * sector_size,
            size_bytes: k,
            fs: Fs::Ext4,
            uuid: None,
            label: Some(KEY_FS_LABEL.to_string()),
        });
        start += n;
    }
    if let Some(c) = req.cache_partition {
        let n = c / sector_size;
        if start + n > end {
            return Err(format!(
                "it is too small: {} cannot hold a {} cache partition",
                human(size_bytes),
                human(c)
            ));
        }
        parts.push(PlannedPart {
            number: parts.len() as u32 + 1,
            role: Role::Cache,
            name: CACHE_PART_NAME,
            first_lba: start,
            last_lba: start + n - 1,
            start_bytes: start * sector_size,
            size_bytes: c,
            fs: Fs::Ext4,
            uuid: None,
            label: Some(CACHE_FS_LABEL.to_string()),
        });
        start += n;
    }
    let data = end.saturating_sub(start);
    let need = req.fs.min_size();
    if data * sector_size < need {
        return Err(format!(
            "it is too small: {} leaves a data partition of {}, and {} needs at least {}",
            human(size_bytes),
            human(data * sector_size),
            req.fs.mkfs(),
            human(need)
        ));
    }
    parts.push(PlannedPart {
        number: parts.len() as u32 + 1,
        role: Role::Data,
        name: DATA_PART_NAME,
        first_lba: start,
        last_lba: end - 1,
        start_bytes: start * sector_size,
        size_bytes: data * sector_size,
        fs: req.fs,
        uuid: Some(req.uuid.clone()),
        label: req.label.clone(),
    });
    Ok(Plan {
        sector_size,
        sectors,
        partitions: parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid() -> Uuid {
        "0B1F6A5E-3C1D-4B6E-9A7C-2F7E8D9C0A11".parse().unwrap()
    }

    #[test]
    fn uuids() {
        assert_eq!(uuid().as_str(), "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11");
        for bad in [
            "",
            "0b1f6a5e3c1d4b6e9a7c2f7e8d9c0a11",
            "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a1",
            "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a111",
            "0b1f6a5g-3c1d-4b6e-9a7c-2f7e8d9c0a11",
            "{0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11}",
            " 0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c0a11",
            "0b1f6a5e-3c1d-4b6e-9a7c-2f7e8d9c-0a11",
            "random",
        ] {
            let e = bad.parse::<Uuid>().unwrap_err();
            assert!(e.contains("is not a UUID"), "{bad}: {e}");
        }
        let e = "00000000-0000-0000-0000-000000000000"
            .parse::<Uuid>()
            .unwrap_err();
        assert!(e.contains("nil UUID"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 * MIB);
        assert_eq!(parse_size("64MiB").unwrap(), 64 * MIB);
        assert_eq!(parse_size("64m").unwrap(), 64 * MIB);
        assert_eq!(parse_size("1G").unwrap(), GIB);
        assert_eq!(parse_size("65536K").unwrap(), 64 * MIB);
        assert_eq!(parse_size("1048576").unwrap(), MIB);
        assert_eq!(parse_size("2T").unwrap(), 2 * TIB);
        assert!(parse_size("64MB").unwrap_err().contains("binary"));
        assert!(parse_size("64X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("M").unwrap_err().contains("not a size"));
        assert!(parse_size("-1M").unwrap_err().contains("not a size"));
        assert!(parse_size("1.5G").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn key_sizes() {
        assert_eq!(parse_key_size("64M").unwrap(), 64 * MIB);
        assert_eq!(parse_key_size("8M").unwrap(), 8 * MIB);
        assert_eq!(parse_key_size("1G").unwrap(), GIB);
        assert!(parse_key_size("4M").unwrap_err().contains("out of bounds"));
        assert!(parse_key_size("2G").unwrap_err().contains("out of bounds"));
        assert!(parse_key_size("1500K")
            .unwrap_err()
            .contains("whole number of MiB"));
    }

    #[test]
    fn labels() {
        check_label(Fs::Xfs, "scratch").unwrap();
        check_label(Fs::Xfs, "abcdefghijkl").unwrap();
        let e = check_label(Fs::Xfs, "abcdefghijklm").unwrap_err();
        assert!(
            e.contains("13 bytes long: an xfs label holds at most 12"),
            "{e}"
        );
        check_label(Fs::Ext4, "abcdefghijklmnop").unwrap();
        assert!(check_label(Fs::Ext4, "abcdefghijklmnopq")
            .unwrap_err()
            .contains("at most 16"));
        check_label(Fs::Btrfs, &"b".repeat(255)).unwrap();
        assert!(check_label(Fs::Btrfs, &"b".repeat(256))
            .unwrap_err()
            .contains("at most 255"));
        // bytes, not characters
        assert!(check_label(Fs::Xfs, "ééééééé")
            .unwrap_err()
            .contains("14 bytes"));
        assert!(check_label(Fs::Ext4, "a\nb")
            .unwrap_err()
            .contains("control"));
        assert!(check_label(Fs::Ext4, "a/b").unwrap_err().contains("/"));
        assert!(check_label(Fs::Ext4, "").unwrap_err().contains("empty"));
    }

    #[test]
    fn fs_names() {
        assert_eq!("xfs".parse::<Fs>().unwrap(), Fs::Xfs);
        assert!("zfs"
            .parse::<Fs>()
            .unwrap_err()
            .contains("xfs, ext4, btrfs"));
    }

    #[test]
    fn mkfs_args_carry_uuid_and_label() {
        let u = uuid();
        assert_eq!(
            Fs::Xfs.mkfs_args(Some(&u), Some("d")),
            ["-f", "-q", "-m", &format!("uuid={u}"), "-L", "d"]
        );
        assert_eq!(
            Fs::Ext4.mkfs_args(Some(&u), None),
            ["-F", "-q", "-U", u.as_str()]
        );
        assert_eq!(
            Fs::Btrfs.mkfs_args(Some(&u), Some("x")),
            ["-f", "-q", "-U", u.as_str(), "-L", "x"]
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512 * MIB), "512 MiB");
        assert_eq!(human(2_000_398_934_016), "1.8 TiB");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(100), "100 B");
    }

    fn req(key: Option<u64>) -> Request {
        Request {
            fs: Fs::Xfs,
            uuid: uuid(),
            label: Some("scratch".into()),
            key_partition: key,
            cache_partition: None,
        }
    }

    #[test]
    fn cache_sizes() {
        assert_eq!(parse_cache_size("1G").unwrap(), GIB);
        assert_eq!(parse_cache_size("64M").unwrap(), 64 * MIB);
        let e = parse_cache_size("32M").unwrap_err();
        assert!(
            e.contains("too small: the live image cache takes at least 64 MiB"),
            "{e}"
        );
        assert!(parse_cache_size("1500K")
            .unwrap_err()
            .contains("whole number of MiB"));
    }

    #[test]
    fn layout_with_key_and_cache_partitions() {
        let r = Request {
            cache_partition: Some(256 * MIB),
            ..req(Some(64 * MIB))
        };
        let p = make_plan(GIB, 512, &r).unwrap();
        let [k, c, d] = &p.partitions[..] else {
            panic!()
        };
        assert_eq!((k.number, k.name), (1, KEY_PART_NAME));
        assert_eq!(
            (c.number, c.name, c.fs, c.role),
            (2, CACHE_PART_NAME, Fs::Ext4, Role::Cache)
        );
        assert_eq!(c.label.as_deref(), Some(CACHE_FS_LABEL));
        assert_eq!(c.uuid, None);
        assert_eq!(c.first_lba, k.last_lba + 1);
        assert_eq!(c.start_bytes, 65 * MIB);
        assert_eq!(c.size_bytes, 256 * MIB);
        assert_eq!((d.number, d.name), (3, DATA_PART_NAME));
        assert_eq!(d.first_lba, c.last_lba + 1);
        assert_eq!(p.data().number, 3);
        // Without the key partition the cache is partition 1.
        let r = Request {
            cache_partition: Some(256 * MIB),
            ..req(None)
        };
        let p = make_plan(GIB, 512, &r).unwrap();
        assert_eq!(p.partitions[0].name, CACHE_PART_NAME);
        assert_eq!(p.partitions[0].start_bytes, MIB);
        // A cache that leaves no room for the data partition is refused.
        let r = Request {
            cache_partition: Some(900 * MIB),
            ..req(None)
        };
        let e = make_plan(GIB, 512, &r).unwrap_err();
        assert!(e.contains("mkfs.xfs needs at least 300 MiB"), "{e}");
        let r = Request {
            cache_partition: Some(2 * GIB),
            ..req(None)
        };
        let e = make_plan(GIB, 512, &r).unwrap_err();
        assert!(e.contains("cannot hold a 2 GiB cache partition"), "{e}");
    }

    #[test]
    fn layout_with_key_partition() {
        // What sfdisk makes of "label: gpt / ,64M / ," on a 512 MiB disk.
        let p = make_plan(512 * MIB, 512, &req(Some(64 * MIB))).unwrap();
        assert_eq!(p.sectors, 1_048_576);
        let [k, d] = &p.partitions[..] else { panic!() };
        assert_eq!((k.number, k.name, k.fs), (1, KEY_PART_NAME, Fs::Ext4));
        assert_eq!((k.first_lba, k.last_lba), (2048, 133_119));
        assert_eq!(k.label.as_deref(), Some(KEY_FS_LABEL));
        assert_eq!(k.uuid, None);
        assert_eq!((d.number, d.name, d.fs), (2, DATA_PART_NAME, Fs::Xfs));
        assert_eq!((d.first_lba, d.last_lba), (133_120, 1_046_527));
        assert_eq!(d.size_bytes, 446 * MIB);
        assert_eq!(d.uuid.as_ref(), Some(&uuid()));
        assert_eq!(p.data().number, 2);
    }

    #[test]
    fn layout_without_key_partition() {
        let p = make_plan(512 * MIB, 512, &req(None)).unwrap();
        let [d] = &p.partitions[..] else { panic!() };
        assert_eq!((d.number, d.first_lba, d.last_lba), (1, 2048, 1_046_527));
        assert_eq!(d.start_bytes, MIB);
        assert_eq!(d.size_bytes, 510 * MIB);
    }

    #[test]
    fn layout_4k_sectors_and_odd_sizes() {
        // 4Kn disk whose size is not a whole MiB: still 1 MiB boundaries.
        let size = 10 * GIB + 12_345 * 4096;
        let p = make_plan(size, 4096, &req(Some(64 * MIB))).unwrap();
        for part in &p.partitions {
            assert_eq!(part.start_bytes % MIB, 0);
            assert_eq!(part.size_bytes % MIB, 0);
            assert_eq!((part.last_lba + 1) * 4096 % MIB, 0);
        }
        let d = p.data();
        // The backup GPT (1 + 4 sectors) still fits after the data partition.
        assert!(d.last_lba < p.sectors - 1 - entry_sectors(4096));
        assert_eq!(d.first_lba, (MIB + 64 * MIB) / 4096);
    }

    #[test]
    fn too_small() {
        let e = make_plan(256 * MIB, 512, &req(None)).unwrap_err();
        assert!(e.contains("mkfs.xfs needs at least 300 MiB"), "{e}");
        let e = make_plan(8192, 512, &req(None)).unwrap_err();
        assert!(e.contains("too small"), "{e}");
        let r = Request {
            fs: Fs::Ext4,
            ..req(None)
        };
        make_plan(64 * MIB, 512, &r).unwrap();
    }
}
