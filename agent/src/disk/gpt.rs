//! GUID Partition Table (UEFI 2.10 §5.3): write a fresh one, read one back.
//!
//! Why our own ~300 lines rather than `sfdisk` or a crate: sfdisk takes its
//! layout as a script on stdin, and the project's one command helper
//! (`cmd::run`) gives every command `/dev/null` as stdin by design; the
//! `gpt` crate would do, but `format-disk` needs a strict reader anyway (the
//! "already formatted" check compares every entry and both headers), the
//! format is small and frozen, and the tests check what we write against
//! two independent readers (libfdisk through `sfdisk --json`, and blkid).
//!
//! What [`write`] puts on the disk:
//! - LBA 0: a protective MBR (one 0xEE entry over the disk);
//! - LBA 1: the header; LBA 2..: 128 entries of 128 bytes;
//! - the rest of the first MiB: zeros (old signatures there are gone);
//! - the last 1 + 16 KiB/sector sectors: backup entries and header, and
//!   zeros between the end of the last partition and them.
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::plan::MIB;

/// "Linux filesystem data" partition type, 0FC63DAF-8483-4772-8E79-3D69D8477DE4.
pub const LINUX_DATA: Guid = Guid::from_fields(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
const NAME_UNITS: usize = 36;
/// Largest partition entry accepted when reading: UEFI sizes are 128 × 2^n.
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// Largest partition array accepted when reading (entries × entry size):
/// 1 MiB, 64 times the usual 16 KiB. A header claiming more is malformed;
/// nothing is allocated for it.
pub const MAX_ARRAY_BYTES: u64 = 1 << 20;
/// Logical sector sizes [`read`] accepts.
const SECTOR_SIZES: std::ops::RangeInclusive<u64> = 512..=65536;

/// A GUID as GPT stores it (first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A random (version 4) GUID from the kernel's random pool.
    pub fn random() -> io::Result<Guid> {
        let mut b = [0u8; 16];
        let mut got = 0;
        while got < b.len() {
            // SAFETY: the buffer is valid for b.len() - got bytes from got.
            let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            got += n as usize;
        }
        // Version 4 in the (little-endian) third field, RFC 4122 variant.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Guid(b))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

/// CRC-32 (IEEE 802.3, reflected, as GPT and zlib use it).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// One partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based slot in the array.
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// Inclusive, in logical sectors.
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// A partition to write.
#[derive(Debug, Clone)]
pub struct NewPartition {
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

/// A table read from a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub first_usable: u64,
    pub last_usable: u64,
    /// Used entries (non-zero type), in slot order.
    pub entries: Vec<Entry>,
    /// The backup header at the last sector is valid and agrees.
    pub backup_ok: bool,
}

/// Why a disk's GPT cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("the GPT header has a bad CRC")]
    HeaderCrc,
    #[error("the GPT partition array has a bad CRC")]
    EntriesCrc,
    #[error("the GPT header is malformed: {0}")]
    Malformed(String),
}

fn entries_bytes() -> usize {
    (ENTRIES * ENTRY_SIZE) as usize
}

fn entry_sectors(lbs: u64) -> u64 {
    (entries_bytes() as u64).div_ceil(lbs)
}

fn protective_mbr(sectors: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let e = &mut m[446..462];
    e[0] = 0x00; // not bootable
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xEE; // GPT protective
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (sectors - 1).min(u32::MAX as u64) as u32;
    e[12..16].copy_from_slice(&size.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

fn entry_array(parts: &[NewPartition]) -> io::Result<Vec<u8>> {
    let mut a = vec![0u8; entries_bytes()];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut a[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&LINUX_DATA.0);
        e[16..32].copy_from_slice(&Guid::random()?.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("GPT partition name {:?} is too long", p.name),
            ));
        }
        for (k, u) in units.iter().enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
    }
    Ok(a)
}

#[allow(clippy::too_many_arguments)]
fn header(
    lbs: u64,
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = vec![0u8; lbs as usize];
    h[0..8].copy_from_slice(SIGNATURE);
    h[8..12].copy_from_slice(&REVISION.to_le_bytes());
    h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&disk_guid.0);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32(&h[..HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Write a new GPT holding `parts` (in that order, numbered from 1) on a
/// disk of `sectors` logical sectors of `lbs` bytes. Partitions must lie
/// between the first and last usable sectors; with an empty `parts` this is
/// the "empty GPT" a failed format leaves. Zeroes the rest of the first MiB
/// and everything after the last partition (old signatures there go too).
pub fn write<D: Write + Seek>(
    dev: &mut D,
    sectors: u64,
    lbs: u64,
    parts: &[NewPartition],
) -> io::Result<()> {
    let es = entry_sectors(lbs);
    let total = sectors * lbs;
    if sectors < 2 * (2 + es) + 1 || total < 2 * MIB {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "disk too small for a GPT",
        ));
    }
    let first_usable = 2 + es;
    let last_usable = sectors - 2 - es;
    for p in parts {
        if p.first_lba < first_usable || p.last_lba > last_usable || p.first_lba > p.last_lba {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "partition {:?} ({}..={}) outside the usable sectors {first_usable}..={last_usable}",
                    p.name, p.first_lba, p.last_lba
                ),
            ));
        }
    }
    let disk_guid = Guid::random()?;
    let array = entry_array(parts)?;
    let array_crc = crc32(&array);
    let backup_lba = sectors - 1;
    let backup_entries = sectors - 1 - es;

    // The first MiB: PMBR, primary header, primary array, zeros.
    let mut head = vec![0u8; MIB as usize];
    head[..512].copy_from_slice(&protective_mbr(sectors));
    let l = lbs as usize;
    head[l..2 * l].copy_from_slice(&header(
        lbs,
        1,
        backup_lba,
        first_usable,
        last_usable,
        disk_guid,
        2,
        array_crc,
    ));
    head[2 * l..2 * l + array.len()].copy_from_slice(&array);

    // The tail: zeros from the end of the last partition (or the last MiB),
    // then the backup array and header.
    let data_end = parts
        .iter()
        .map(|p| (p.last_lba + 1) * lbs)
        .max()
        .unwrap_or(0);
    let tail_start = data_end.max(total - MIB).max(MIB);
    let mut tail = vec![0u8; (total - tail_start) as usize];
    let at = |lba: u64| (lba * lbs - tail_start) as usize;
    tail[at(backup_entries)..at(backup_entries) + array.len()].copy_from_slice(&array);
    tail[at(backup_lba)..].copy_from_slice(&header(
        lbs,
        backup_lba,
        1,
        first_usable,
        last_usable,
        disk_guid,
        backup_entries,
        array_crc,
    ));

    // Backup first: a crash in between leaves a disk whose primary is the
    // old one or none, never a new primary without its backup.
    dev.seek(SeekFrom::Start(tail_start))?;
    dev.write_all(&tail)?;
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&head)?;
    dev.flush()
}

fn read_at<D: Read + Seek>(dev: &mut D, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    dev.seek(SeekFrom::Start(off))?;
    dev.read_exact(&mut b)?;
    Ok(b)
}

struct Header {
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Check the header in sector `h` (found at `my_lba` of a disk of `sectors`
/// sectors). `Ok(None)`: no GPT signature. Bounds every size it will use:
/// the header within the sector, entries of 128 × 2^n ≤ [`MAX_ENTRY_SIZE`]
/// bytes, an array of at most [`MAX_ARRAY_BYTES`], LBAs on the disk.
fn parse_header(h: &[u8], my_lba: u64, sectors: u64) -> Result<Option<Header>, GptError> {
    if h.get(0..8) != Some(&SIGNATURE[..]) {
        return Ok(None);
    }
    if h.len() < HEADER_SIZE as usize {
        return Err(GptError::Malformed(format!(
            "a {}-byte sector cannot hold a header",
            h.len()
        )));
    }
    // In bounds: h holds at least HEADER_SIZE (92) bytes from here on.
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let size = u32_at(12) as usize;
    if size < HEADER_SIZE as usize || size > h.len() {
        return Err(GptError::Malformed(format!("header size {size}")));
    }
    let mut copy = h[..size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != u32_at(16) {
        return Err(GptError::HeaderCrc);
    }
    if u64_at(24) != my_lba {
        return Err(GptError::Malformed(format!(
            "header at LBA {my_lba} says it is at LBA {}",
            u64_at(24)
        )));
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&h[56..72]);
    let hd = Header {
        alternate_lba: u64_at(32),
        first_usable: u64_at(40),
        last_usable: u64_at(48),
        disk_guid: Guid(disk_guid),
        entries_lba: u64_at(72),
        entries: u32_at(80),
        entry_size: u32_at(84),
        entries_crc: u32_at(88),
    };
    check_array_size(hd.entries, hd.entry_size)?;
    if hd.entries_lba >= sectors || hd.last_usable >= sectors || hd.first_usable > hd.last_usable {
        return Err(GptError::Malformed("LBAs outside the disk".into()));
    }
    Ok(Some(hd))
}

/// The partition array's size in bytes, if a header may claim it: entries
/// of 128 × 2^n bytes up to [`MAX_ENTRY_SIZE`], at least one, at most
/// [`MAX_ARRAY_BYTES`] in all.
pub fn check_array_size(entries: u32, entry_size: u32) -> Result<usize, GptError> {
    let bad = |why: &str| {
        GptError::Malformed(format!(
            "{entries} partition entries of {entry_size} bytes: {why}"
        ))
    };
    if entry_size < ENTRY_SIZE || !entry_size.is_power_of_two() || entry_size > MAX_ENTRY_SIZE {
        return Err(bad(&format!(
            "an entry must be 128 × 2^n bytes, at most {MAX_ENTRY_SIZE}"
        )));
    }
    if entries == 0 {
        return Err(bad("no entries"));
    }
    match u64::from(entries).checked_mul(u64::from(entry_size)) {
        Some(n) if n <= MAX_ARRAY_BYTES => Ok(n as usize),
        _ => Err(bad(&format!(
            "more than {} KiB of entries",
            MAX_ARRAY_BYTES / 1024
        ))),
    }
}

/// `lba * lbs` as a byte offset; an overflow is a malformed header.
fn offset(lba: u64, lbs: u64) -> Result<u64, GptError> {
    lba.checked_mul(lbs)
        .ok_or_else(|| GptError::Malformed(format!("LBA {lba} is past any disk")))
}

fn read_entries<D: Read + Seek>(dev: &mut D, hd: &Header, lbs: u64) -> Result<Vec<u8>, ReadError> {
    let len = check_array_size(hd.entries, hd.entry_size)?;
    let a = read_at(dev, offset(hd.entries_lba, lbs)?, len)?;
    if crc32(&a) != hd.entries_crc {
        return Err(GptError::EntriesCrc.into());
    }
    Ok(a)
}

/// The used entries (non-zero type) of a partition array of `entry_size`
/// bytes per entry (at least 128; a short last entry is ignored).
fn parse_entries(array: &[u8], entry_size: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    if entry_size < ENTRY_SIZE as usize {
        return entries;
    }
    let le64 = |b: &[u8]| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[..8]);
        u64::from_le_bytes(x)
    };
    let guid = |b: &[u8]| {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        Guid(g)
    };
    // Each `e` has at least ENTRY_SIZE (128) bytes.
    for (i, e) in array.chunks_exact(entry_size).enumerate() {
        let type_guid = guid(&e[0..16]);
        if type_guid.is_zero() {
            continue;
        }
        let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        entries.push(Entry {
            number: u32::try_from(i + 1).unwrap_or(u32::MAX),
            type_guid,
            unique_guid: guid(&e[16..32]),
            first_lba: le64(&e[32..40]),
            last_lba: le64(&e[40..48]),
            attributes: le64(&e[48..56]),
            name: String::from_utf16_lossy(&units),
        });
    }
    entries
}

/// What [`read`] can fail with: I/O, or a GPT that is there but broken.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Gpt(#[from] GptError),
}

/// Read the GPT of a disk of `sectors` sectors of `lbs` bytes. `Ok(None)`:
/// no GPT signature at LBA 1. Whatever the disk holds, this allocates at
/// most one sector and [`MAX_ARRAY_BYTES`] at a time, and never panics.
pub fn read<D: Read + Seek>(
    dev: &mut D,
    sectors: u64,
    lbs: u64,
) -> Result<Option<Table>, ReadError> {
    if !SECTOR_SIZES.contains(&lbs) || !lbs.is_power_of_two() {
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("logical sector size {lbs}: expected a power of two from 512 to 65536"),
        )));
    }
    if sectors < 3 {
        return Ok(None);
    }
    let h = read_at(dev, lbs, lbs as usize)?;
    let Some(hd) = parse_header(&h, 1, sectors)? else {
        return Ok(None);
    };
    let array = read_entries(dev, &hd, lbs)?;
    let entries = parse_entries(&array, hd.entry_size as usize);
    // The backup: where the primary says, a valid header that agrees, and
    // an array with the same CRC.
    let backup_ok = hd.alternate_lba == sectors - 1
        && offset(hd.alternate_lba, lbs)
            .ok()
            .and_then(|off| read_at(dev, off, lbs as usize).ok())
            .and_then(|b| parse_header(&b, hd.alternate_lba, sectors).ok().flatten())
            .is_some_and(|b| {
                b.disk_guid == hd.disk_guid
                    && b.alternate_lba == 1
                    && b.entries_crc == hd.entries_crc
                    && read_entries(dev, &b, lbs).is_ok()
            });
    Ok(Some(Table {
        disk_guid: hd.disk_guid,
        first_usable: hd.first_usable,
        last_usable: hd.last_usable,
        entries,
        backup_ok,
    }))
}

/// [`read`] over a disk image in memory (`image.len() / lbs` sectors): the
/// same code without I/O, for tests and fuzzing. Never panics.
pub fn read_image(image: &[u8], lbs: u64) -> Result<Option<Table>, ReadError> {
    let sectors = (image.len() as u64).checked_div(lbs).unwrap_or(0);
    read(&mut io::Cursor::new(image), sectors, lbs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guid_text() {
        assert_eq!(
            LINUX_DATA.to_string(),
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        let g = Guid::random().unwrap();
        let s = g.to_string();
        assert_eq!(&s[14..15], "4", "{s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(g, Guid::random().unwrap());
    }

    fn disk(bytes: u64) -> Cursor<Vec<u8>> {
        // Garbage everywhere, so zeroing is visible.
        Cursor::new(vec![0xA5u8; bytes as usize])
    }

    fn two_parts() -> Vec<NewPartition> {
        vec![
            NewPartition {
                first_lba: 2048,
                last_lba: 133_119,
                name: "nodeboot-key".into(),
            },
            NewPartition {
                first_lba: 133_120,
                last_lba: 1_046_527,
                name: "nodeboot-data".into(),
            },
        ]
    }

    #[test]
    fn round_trip_512() {
        let mut d = disk(512 * MIB);
        write(&mut d, 1_048_576, 512, &two_parts()).unwrap();
        let t = read(&mut d, 1_048_576, 512).unwrap().unwrap();
        assert!(t.backup_ok);
        assert_eq!((t.first_usable, t.last_usable), (34, 1_048_542));
        let names: Vec<_> = t
            .entries
            .iter()
            .map(|e| (e.number, e.name.as_str()))
            .collect();
        assert_eq!(names, [(1, "nodeboot-key"), (2, "nodeboot-data")]);
        assert_eq!(
            (t.entries[1].first_lba, t.entries[1].last_lba),
            (133_120, 1_046_527)
        );
        assert!(t.entries.iter().all(|e| e.type_guid == LINUX_DATA));
        assert_ne!(t.entries[0].unique_guid, t.entries[1].unique_guid);
        let b = d.get_ref();
        // PMBR
        assert_eq!(&b[510..512], &[0x55, 0xAA]);
        assert_eq!(b[446 + 4], 0xEE);
        // the first MiB is zero outside the tables; partition data untouched
        assert!(b[2 * 512 + 16384..MIB as usize].iter().all(|&x| x == 0));
        assert_eq!(b[MIB as usize], 0xA5);
        assert_eq!(b[(1_046_527 * 512 + 511) as usize], 0xA5);
        // after the last partition: zeros, then the backup
        assert!(b[(1_046_528 * 512) as usize..(1_048_543 * 512) as usize]
            .iter()
            .all(|&x| x == 0));
        assert_eq!(&b[(1_048_575 * 512) as usize..][..8], SIGNATURE);
    }

    #[test]
    fn round_trip_4k_and_empty() {
        let sectors = 262_144; // 1 GiB of 4 KiB sectors
        let mut d = disk(GIB_4K);
        write(
            &mut d,
            sectors,
            4096,
            &[NewPartition {
                first_lba: 256,
                last_lba: sectors - 257,
                name: "nodeboot-data".into(),
            }],
        )
        .unwrap();
        let t = read(&mut d, sectors, 4096).unwrap().unwrap();
        assert!(t.backup_ok);
        assert_eq!(t.first_usable, 6);
        assert_eq!(t.entries.len(), 1);
        write(&mut d, sectors, 4096, &[]).unwrap();
        let t = read(&mut d, sectors, 4096).unwrap().unwrap();
        assert!(t.entries.is_empty() && t.backup_ok);
    }
    const GIB_4K: u64 = 1 << 30;

    #[test]
    fn corruption_is_detected() {
        let mut d = disk(64 * MIB);
        let sectors = 131_072;
        let parts = [NewPartition {
            first_lba: 2048,
            last_lba: 129_023,
            name: "x".into(),
        }];
        write(&mut d, sectors, 512, &parts).unwrap();
        // A flipped bit in the array.
        d.get_mut()[2 * 512 + 60] ^= 1;
        assert!(matches!(
            read(&mut d, sectors, 512),
            Err(ReadError::Gpt(GptError::EntriesCrc))
        ));
        write(&mut d, sectors, 512, &parts).unwrap();
        d.get_mut()[512 + 40] ^= 1;
        assert!(matches!(
            read(&mut d, sectors, 512),
            Err(ReadError::Gpt(GptError::HeaderCrc))
        ));
        // A damaged backup is reported, not fatal.
        write(&mut d, sectors, 512, &parts).unwrap();
        d.get_mut()[((sectors - 1) * 512) as usize] = 0;
        assert!(!read(&mut d, sectors, 512).unwrap().unwrap().backup_ok);
        // No signature: no table.
        let mut z = Cursor::new(vec![0u8; MIB as usize * 4]);
        assert!(read(&mut z, 8192, 512).unwrap().is_none());
    }

    #[test]
    fn refuses_partitions_outside_the_disk() {
        let mut d = disk(64 * MIB);
        let e = write(
            &mut d,
            131_072,
            512,
            &[NewPartition {
                first_lba: 2048,
                last_lba: 131_071,
                name: "x".into(),
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("outside the usable sectors"), "{e}");
    }

    /// A fresh 4 MiB image (8192 sectors of 512 bytes) with one partition.
    fn small_image() -> Vec<u8> {
        let mut d = disk(4 * MIB);
        let parts = [NewPartition {
            first_lba: 2048,
            last_lba: 6143,
            name: "x".into(),
        }];
        write(&mut d, 8192, 512, &parts).unwrap();
        d.into_inner()
    }

    /// Put `v` at `off` in the primary header (LBA 1) and fix its CRC, so
    /// that the reader gets past the CRC check to the field under test.
    fn patch_header(img: &mut [u8], off: usize, v: &[u8]) {
        let h = &mut img[512..1024];
        h[off..off + v.len()].copy_from_slice(v);
        h[16..20].fill(0);
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    /// A header claiming a huge partition array is refused with a clear
    /// error before anything is allocated (it used to allocate whatever
    /// entries × entry size said: 16 TiB here, and abort).
    #[test]
    fn huge_entry_arrays_are_refused_without_allocating() {
        type Row = (u32, u32, &'static str);
        let rows: &[Row] = &[
            (
                4096,
                0xFFFF_FFF8,
                "an entry must be 128 × 2^n bytes, at most 4096",
            ),
            (
                128,
                1 << 31,
                "an entry must be 128 × 2^n bytes, at most 4096",
            ),
            (128, 8192, "an entry must be 128 × 2^n bytes, at most 4096"),
            (128, 136, "an entry must be 128 × 2^n bytes, at most 4096"),
            (128, 384, "an entry must be 128 × 2^n bytes, at most 4096"),
            (128, 64, "an entry must be 128 × 2^n bytes, at most 4096"),
            (128, 0, "an entry must be 128 × 2^n bytes, at most 4096"),
            (0, 128, "no entries"),
            (u32::MAX, 4096, "more than 1024 KiB of entries"),
            (u32::MAX, 128, "more than 1024 KiB of entries"),
            (8193, 128, "more than 1024 KiB of entries"),
            (257, 4096, "more than 1024 KiB of entries"),
        ];
        for (entries, size, why) in rows {
            let mut img = small_image();
            patch_header(&mut img, 80, &entries.to_le_bytes());
            patch_header(&mut img, 84, &size.to_le_bytes());
            let e = read_image(&img, 512).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "the GPT header is malformed: {entries} partition entries of {size} bytes: {why}"
                ),
                "{entries} × {size}"
            );
        }
        // At the cap: allowed, and then it is the array's CRC that fails.
        for (entries, size) in [(8192u32, 128u32), (256, 4096), (128, 256)] {
            let mut img = small_image();
            patch_header(&mut img, 80, &entries.to_le_bytes());
            patch_header(&mut img, 84, &size.to_le_bytes());
            assert!(
                matches!(
                    read_image(&img, 512),
                    Err(ReadError::Gpt(GptError::EntriesCrc))
                ),
                "{entries} × {size}"
            );
        }
        assert_eq!(check_array_size(128, 128), Ok(16384));
    }

    /// Headers and sectors of any shape: an error or a table, never a panic.
    #[test]
    fn corrupt_headers_never_panic() {
        let good = small_image();
        assert_eq!(read_image(&good, 512).unwrap().unwrap().entries.len(), 1);
        // Every header field set to extreme values (CRC fixed up).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for off in (8..HEADER_SIZE as usize).step_by(4) {
            for v in [0u32, 1, 2, 0x7F, 0x80, 0xFFFF, 0x8000_0000, u32::MAX] {
                let mut img = good.clone();
                patch_header(&mut img, off, &v.to_le_bytes());
                let _ = read_image(&img, 512);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                patch_header(&mut img, (x % 88) as usize, &x.to_le_bytes()[..4]);
                let _ = read_image(&img, 512);
            }
        }
        // Short images and odd sector sizes.
        for len in [0usize, 8, 91, 512, 1023, 1024, 1100, 2048] {
            let _ = read_image(&good[..len], 512);
        }
        for lbs in [0u64, 1, 92, 511, 513, 1 << 20, u64::MAX] {
            assert!(read_image(&good, lbs).is_err(), "{lbs}");
        }
        // A header sector of fewer than 92 bytes cannot be parsed.
        let e = parse_header(b"EFI PART", 1, 10).err().unwrap();
        assert!(e.to_string().contains("cannot hold a header"), "{e}");
        // Entry arrays of any size.
        for n in [0usize, 1, 127, 128, 129, 255, 256] {
            let _ = parse_entries(&vec![0xA5u8; n], 128);
            let _ = parse_entries(&vec![0xA5u8; n], 0);
        }
    }

    /// libfdisk reads what we write (when sfdisk is installed).
    #[test]
    fn sfdisk_reads_it() {
        if std::process::Command::new("sfdisk")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP sfdisk_reads_it: no sfdisk (apt-get install fdisk)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(512 * MIB).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        write(&mut f, 1_048_576, 512, &two_parts()).unwrap();
        drop(f);
        let out = std::process::Command::new("sfdisk")
            .arg("--json")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pt = &j["partitiontable"];
        assert_eq!(pt["label"], "gpt");
        assert_eq!(pt["firstlba"], 34);
        assert_eq!(pt["lastlba"], 1_048_542);
        let p = pt["partitions"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["name"], "nodeboot-key");
        assert_eq!(p[0]["start"], 2048);
        assert_eq!(p[0]["size"], 131_072);
        assert_eq!(p[1]["name"], "nodeboot-data");
        assert_eq!(p[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        // sfdisk --verify finds nothing to complain about.
        let v = std::process::Command::new("sfdisk")
            .arg("--verify")
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && text.contains("No errors detected"),
            "{text}"
        );
    }
}
