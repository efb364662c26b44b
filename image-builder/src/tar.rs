//! A streaming tar reader for root filesystem archives: v7, ustar, star,
//! GNU (long names, base-256 numbers, old sparse members with extension
//! blocks) and pax (`SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`,
//! `RHT.security.selinux`, sparse 0.0, 0.1, 1.0).
//!
//! Written here rather than taken from the `tar` crate because that crate
//! splits pax records on newlines instead of reading their length prefix, so
//! any binary xattr value holding a 0x0a byte (a `security.capability` blob
//! such as `cap_dac_override,cap_fowner+ep`) is refused as malformed.
//!
//! # Hostile input
//!
//! An archive is untrusted input: whatever it declares, reading it costs
//! memory bounded by the limits below and time proportional to its length
//! (plus, for sparse members, to [`MAX_HOLE_BYTES`] over the block size
//! downstream). Every limit is far above what a real root filesystem needs;
//! going past one is an error that names the entry (or, for a metadata
//! header, the header's own name and byte offset):
//!
//! | what | limit |
//! |---|---|
//! | data of one pax header (`x` or `g`), GNU long name or long link (`L`, `K`), and of all the pax headers of one entry together | [`MAX_META_SIZE`] = 1 MiB |
//! | a path or a link target | [`MAX_PATH`] = 4096 bytes (Linux's `PATH_MAX`) |
//! | xattrs of one entry | [`MAX_XATTRS`] = 128, names and values [`MAX_XATTR_BYTES`] = 64 KiB in all (Linux's `XATTR_LIST_MAX` / `XATTR_SIZE_MAX`) |
//! | extents of one sparse map | [`MAX_SPARSE_EXTENTS`] = 65,536 |
//! | holes of all the sparse members of one archive | [`MAX_HOLE_BYTES`] = 256 GiB |
//!
//! Global pax headers (`g`) are read, checked and bounded like local ones but
//! **not applied** to later entries (as Go's `archive/tar` and bsdtar; GNU
//! tar applies some of their records): nothing they hold is copied into
//! every later entry. An xattr record in a global header is refused rather
//! than silently dropped. Sparse maps are checked (extents in order, not
//! overlapping, inside the real size, their lengths adding up to the data
//! stored) before any data is read; holes are never materialised: they
//! stay holes of the spool file and become sparse blocks of the image.
use anyhow::{bail, Context, Result};
use std::io::Read;

const BLOCK: usize = 512;

/// Most bytes of one metadata header's data (pax `x`/`g`, GNU `L`/`K`), and
/// of all the pax headers in front of one entry together.
pub const MAX_META_SIZE: u64 = 1 << 20;
/// Most bytes of a path or a link target (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Most xattrs of one entry.
pub const MAX_XATTRS: usize = 128;
/// Most bytes of the names and values of one entry's xattrs together.
pub const MAX_XATTR_BYTES: usize = 64 << 10;
/// Most extents in one sparse map.
pub const MAX_SPARSE_EXTENTS: usize = 1 << 16;
/// Most bytes of holes (real size minus stored data) of all the sparse
/// members of one archive together: 60 GB sparse files pass, a few-KiB
/// archive declaring petabytes does not.
pub const MAX_HOLE_BYTES: u64 = 256 << 30;

/// The kinds of member nodeimg keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// Anything else (volume labels, …): reported and skipped.
    Other(u8),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub ty: Type,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// The file's size (a sparse file's real size).
    pub size: u64,
    /// Full xattr names and values, each name once (the last record wins).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Byte offset of the member's own header in the (uncompressed) archive.
    pub header_at: u64,
    /// Bytes stored in the archive for this member.
    stored: u64,
    sparse: Sparse,
}

#[derive(Debug, Clone, PartialEq)]
enum Sparse {
    No,
    /// Data chunks (offset, length) stored one after the other.
    Map(Vec<(u64, u64)>),
    /// pax 1.0: the map is at the start of the data.
    MapInData,
}

pub struct Reader<R: Read> {
    r: R,
    /// Bytes of the current member's data not read yet.
    pending: u64,
    /// Padding after them (a missing last padding is tolerated).
    pad: u64,
    offset: u64,
    /// Bytes of holes sparse members may still declare.
    holes_left: u64,
    /// The archive ended without its end blocks.
    eof: bool,
}

fn nul_terminated(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A numeric header field: octal (space or NUL padded), or GNU base-256
/// (two's complement, first bit set).
fn signed_number(f: &[u8]) -> Result<i64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        let neg = f[0] & 0x40 != 0;
        let mut v: i128 = if neg { -1 } else { 0 };
        for (i, &b) in f.iter().enumerate() {
            let b = if i == 0 && !neg { b & 0x7f } else { b };
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as i128))
                .context("number too large")?;
            if !neg && v > i64::MAX as i128 {
                bail!("number too large");
            }
        }
        return i64::try_from(v).context("number too large");
    }
    let s = std::str::from_utf8(nul_terminated(f)).context("bad number")?;
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    i64::from_str_radix(s, 8).with_context(|| format!("bad octal number {s:?}"))
}

/// An unsigned numeric header field.
fn number(f: &[u8]) -> Result<u64> {
    let v = signed_number(f)?;
    u64::try_from(v).map_err(|_| anyhow::anyhow!("negative number {v}"))
}

/// A strict decimal: ASCII digits only (leading zeros allowed), no sign,
/// no spaces.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = &v[v.iter().position(|&b| b != b'0').unwrap_or(v.len())..];
    if v.is_empty() {
        return Some(0);
    }
    if v.len() > 20 {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A pax time: `[-]SECONDS[.FRACTION]`, digits only; the seconds.
fn pax_time(v: &[u8]) -> Option<i64> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (neg, digits) = match int.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, int),
    };
    let s = decimal(digits)?;
    let s = i64::try_from(s).ok()?;
    Some(if neg { -s } else { s })
}

/// pax records: "LEN KEY=VALUE\n", LEN counting the whole record.
pub fn pax_records(mut d: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !d.is_empty() && d[0] != 0 {
        let sp = d
            .iter()
            .take(64)
            .position(|&b| b == b' ')
            .context("malformed pax record: no length")?;
        let len = decimal(&d[..sp]).context("malformed pax record: bad length")?;
        if len <= sp as u64 + 1 || len > d.len() as u64 || d[len as usize - 1] != b'\n' {
            bail!("malformed pax record: length {len} does not fit");
        }
        let len = len as usize;
        let rec = &d[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("malformed pax record: no '='")?;
        let key = &rec[..eq];
        if key.is_empty() || key.contains(&0) {
            bail!("malformed pax record: key {:?}", show(key));
        }
        out.push((key.to_vec(), rec[eq + 1..].to_vec()));
        d = &d[len..];
    }
    Ok(out)
}

/// The xattr a pax record sets, if it sets one: (name, value).
fn xattr_record(k: &[u8], v: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let (name, value) = if let Some(n) = k.strip_prefix(b"SCHILY.xattr.") {
        (n.to_vec(), v.to_vec())
    } else if let Some(n) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
        // The name is URL-encoded, the value base64.
        (
            url_decode(n).context("bad LIBARCHIVE.xattr name")?,
            base64_decode(v).context("bad LIBARCHIVE.xattr value")?,
        )
    } else if let Some(n) = k.strip_prefix(b"RHT.") {
        // Red Hat's tar: RHT.security.selinux.
        if n != b"security.selinux" {
            return Ok(None);
        }
        (n.to_vec(), v.to_vec())
    } else {
        return Ok(None);
    };
    if name.is_empty() || name.contains(&0) {
        bail!("bad xattr name {:?}", show(&name));
    }
    Ok(Some((name, value)))
}

fn url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, padding optional.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = match s.iter().position(|&c| c == b'=') {
        Some(p) if s[p..].iter().all(|&c| c == b'=') && s[p..].len() <= 2 => &s[..p],
        Some(_) => return None,
        None => s,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]),
            2 => out.push((acc >> 16) as u8),
            _ => return None,
        }
    }
    Some(out)
}

/// Is this 512-byte block a tar header (its checksum matches)?
pub fn is_header(h: &[u8]) -> bool {
    h.len() >= BLOCK && checksum_ok(h[..BLOCK].try_into().expect("512 bytes"))
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Ok(want) = number(&h[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    want == unsigned || want as i64 == signed
}

/// Checks a sparse map against the real size and the data stored; returns
/// the bytes of holes.
fn check_map(map: &[(u64, u64)], real: u64, data: u64) -> Result<u64> {
    if map.len() > MAX_SPARSE_EXTENTS {
        bail!(
            "sparse map of {} extents (the limit is {MAX_SPARSE_EXTENTS})",
            map.len()
        );
    }
    let (mut end, mut sum) = (0u64, 0u64);
    for &(off, len) in map {
        if off < end {
            bail!("sparse map: the extent at {off} overlaps or precedes the one ending at {end}");
        }
        end = off
            .checked_add(len)
            .filter(|&e| e <= real)
            .with_context(|| {
                format!("sparse map: extent {off}+{len} past the end of the file ({real} bytes)")
            })?;
        sum += len;
    }
    if sum != data {
        bail!("sparse map: its extents hold {sum} bytes, the archive stores {data}");
    }
    Ok(real - sum)
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader {
            r,
            pending: 0,
            pad: 0,
            offset: 0,
            holes_left: MAX_HOLE_BYTES,
            eof: false,
        }
    }

    /// Fill `buf`; the number of bytes read (short only at the end).
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading at byte {}", self.offset + n as u64))
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let at = self.offset;
        let n = self.read_full(buf)?;
        if n < buf.len() {
            bail!(
                "archive cut short at byte {} ({} more bytes expected from byte {at})",
                self.offset,
                buf.len()
            );
        }
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn padding(n: u64) -> u64 {
        n.next_multiple_of(BLOCK as u64) - n
    }

    /// Read a metadata header's data (long name, pax records), bounded.
    fn read_meta(&mut self, size: u64, what: &str, name: &[u8], at: u64) -> Result<Vec<u8>> {
        if size > MAX_META_SIZE {
            bail!(
                "{what} \"{}\" (header at byte {at}) holds {size} bytes; the limit is {MAX_META_SIZE} (1 MiB)",
                show(name)
            );
        }
        let mut v = vec![0u8; size as usize];
        self.read_exact(&mut v)
            .with_context(|| format!("{what} \"{}\" (header at byte {at})", show(name)))?;
        let pad = Self::padding(size);
        let mut p = [0u8; BLOCK];
        if self.read_full(&mut p[..pad as usize])? < pad as usize {
            self.eof = true;
        }
        Ok(v)
    }

    /// The next member, or None at the end of the archive. Whatever the
    /// previous member's data was not read is skipped.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let unread = std::mem::take(&mut self.pending);
        self.skip(unread)?;
        let pad = std::mem::take(&mut self.pad);
        let mut p = [0u8; BLOCK];
        if self.read_full(&mut p[..pad as usize])? < pad as usize {
            self.eof = true;
        }
        let mut local: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut local_bytes = 0u64;
        let mut long_name = None;
        let mut long_link = None;
        loop {
            if self.eof {
                return Ok(None);
            }
            let at = self.offset;
            let mut h = [0u8; BLOCK];
            match self.read_full(&mut h)? {
                0 => return Ok(None), // no end blocks: tolerated
                BLOCK => {}
                n => bail!("archive cut short in the header at byte {at} ({n} of 512 bytes)"),
            }
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            if !checksum_ok(&h) {
                bail!("bad header checksum at byte {at}: not a tar archive, or a corrupt one");
            }
            let hname = nul_terminated(&h[0..100]).to_vec();
            let size = number(&h[124..136])
                .with_context(|| format!("header \"{}\" at byte {at}: bad size", show(&hname)))?;
            if size > i64::MAX as u64 {
                bail!(
                    "header \"{}\" at byte {at}: size {size} too large",
                    show(&hname)
                );
            }
            match h[156] {
                b'x' | b'X' => {
                    local_bytes += size;
                    if local_bytes > MAX_META_SIZE {
                        bail!(
                            "pax header \"{}\" (header at byte {at}): the pax headers of one entry hold {local_bytes} bytes; the limit is {MAX_META_SIZE} (1 MiB)",
                            show(&hname)
                        );
                    }
                    let d = self.read_meta(size, "pax header", &hname, at)?;
                    // Several in a row: the last one is the entry's (as Go
                    // and GNU tar read them).
                    local = pax_records(&d).with_context(|| {
                        format!("pax header \"{}\" (header at byte {at})", show(&hname))
                    })?;
                    continue;
                }
                b'g' => {
                    let d = self.read_meta(size, "pax global header", &hname, at)?;
                    let recs = pax_records(&d).with_context(|| {
                        format!(
                            "pax global header \"{}\" (header at byte {at})",
                            show(&hname)
                        )
                    })?;
                    for (k, v) in &recs {
                        if xattr_record(k, v).ok().flatten().is_some() {
                            bail!(
                                "pax global header \"{}\" (header at byte {at}) sets the xattr record {} for every later entry: not supported, set xattrs on each entry",
                                show(&hname),
                                show(k)
                            );
                        }
                    }
                    tracing::debug!(
                        "pax global header at byte {at}: {} records, not applied",
                        recs.len()
                    );
                    continue;
                }
                b'L' => {
                    let d = self.read_meta(size, "GNU long name", &hname, at)?;
                    long_name = Some(nul_terminated(&d).to_vec());
                    continue;
                }
                b'K' => {
                    let d = self.read_meta(size, "GNU long link", &hname, at)?;
                    long_link = Some(nul_terminated(&d).to_vec());
                    continue;
                }
                _ => {}
            }
            // The name to report: what the entry will be called.
            let pax_name = local
                .iter()
                .rev()
                .find(|(k, _)| k == b"path" || k == b"GNU.sparse.name")
                .map(|(_, v)| v.clone());
            let name = pax_name
                .or_else(|| long_name.clone())
                .unwrap_or_else(|| hname.clone());
            let m = self
                .member(&h, at, size, long_name.take(), long_link.take(), &local)
                .with_context(|| format!("entry \"{}\" (header at byte {at})", show(&name)))?;
            return Ok(Some(m));
        }
    }

    fn member(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Member> {
        let ustar = &h[257..263] == b"ustar\0";
        let star = ustar && &h[508..512] == b"tar\0";
        let mut path = nul_terminated(&h[0..100]).to_vec();
        if ustar {
            let prefix = nul_terminated(if star { &h[345..476] } else { &h[345..500] });
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        let path = long_name.unwrap_or(path);
        let ty = match h[156] {
            b'0' | 0 if path.ends_with(b"/") => Type::Dir,
            b'0' | 0 | b'7' | b'S' => Type::File,
            b'1' => Type::HardLink,
            b'2' => Type::Symlink,
            b'3' => Type::Char,
            b'4' => Type::Block,
            b'5' | b'D' => Type::Dir,
            b'6' => Type::Fifo,
            t => Type::Other(t),
        };
        // Types that carry no data whatever their size field says (as Go's
        // archive/tar; libarchive ignores a hard link's size too).
        // A regular file header whose name ends in '/' is a directory too
        // (old writers), without data whatever its size says.
        let header_only = match ty {
            Type::HardLink | Type::Symlink | Type::Char | Type::Block | Type::Fifo => true,
            Type::Dir => h[156] != b'D',
            Type::File | Type::Other(_) => false,
        };
        let (dev_major, dev_minor) = if matches!(ty, Type::Char | Type::Block) {
            (
                number(&h[329..337]).context("bad device major")?,
                number(&h[337..345]).context("bad device minor")?,
            )
        } else {
            (0, 0)
        };
        let mut m = Member {
            path,
            link: long_link.unwrap_or_else(|| nul_terminated(&h[157..257]).to_vec()),
            ty,
            mode: (number(&h[100..108]).context("bad mode")? & 0o7777) as u32,
            uid: number(&h[108..116]).context("bad uid")?,
            gid: number(&h[116..124]).context("bad gid")?,
            mtime: signed_number(&h[136..148]).context("bad mtime")?,
            dev_major: u32::try_from(dev_major).context("device major too large")?,
            dev_minor: u32::try_from(dev_minor).context("device minor too large")?,
            size,
            xattrs: Vec::new(),
            header_at: at,
            stored: size,
            sparse: Sparse::No,
        };
        if h[156] == b'S' && &h[257..265] != b"ustar  \0" {
            bail!("a sparse member in another format than GNU's (star's?): not supported");
        }
        if h[156] == b'S' {
            // Old GNU sparse: 4 map entries in the header, 21 in each
            // extension block that follows it.
            let mut map = Vec::new();
            let entries = |b: &[u8], n: usize, map: &mut Vec<(u64, u64)>| -> Result<bool> {
                for i in 0..n {
                    let e = &b[i * 24..i * 24 + 24];
                    if e[0] == 0 {
                        return Ok(false);
                    }
                    if map.len() >= MAX_SPARSE_EXTENTS {
                        bail!("sparse map of more than {MAX_SPARSE_EXTENTS} extents");
                    }
                    map.push((
                        number(&e[..12]).context("bad sparse offset")?,
                        number(&e[12..]).context("bad sparse length")?,
                    ));
                }
                Ok(true)
            };
            let mut more = entries(&h[386..482], 4, &mut map)?;
            let mut extended = h[482] != 0;
            while extended {
                let mut e = [0u8; BLOCK];
                self.read_exact(&mut e)
                    .context("reading a sparse extension block")?;
                if more {
                    more = entries(&e[..504], 21, &mut map)?;
                }
                extended = e[504] != 0;
                if extended && map.len() >= MAX_SPARSE_EXTENTS {
                    bail!("sparse map of more than {MAX_SPARSE_EXTENTS} extents");
                }
            }
            m.size = number(&h[483..495]).context("bad sparse real size")?;
            m.sparse = Sparse::Map(map);
        }
        self.apply_pax(&mut m, local)?;
        if m.path.len() > MAX_PATH || m.link.len() > MAX_PATH {
            bail!(
                "a path or link target of {} bytes (the limit is {MAX_PATH})",
                m.path.len().max(m.link.len())
            );
        }
        if matches!(m.ty, Type::HardLink | Type::Symlink) && m.link.is_empty() {
            bail!("a link with an empty target");
        }
        if m.uid > u32::MAX as u64 || m.gid > u32::MAX as u64 {
            bail!(
                "owner {}:{} does not fit squashfs's 32-bit ids",
                m.uid,
                m.gid
            );
        }
        if m.stored > i64::MAX as u64 {
            bail!("size {} too large", m.stored);
        }
        if header_only {
            m.stored = 0;
        }
        match &m.sparse {
            Sparse::No => {}
            Sparse::Map(map) => {
                let holes = check_map(map, m.size, m.stored)?;
                self.charge_holes(holes)?;
            }
            Sparse::MapInData => {
                // The map's own size is only known when it is read: charge
                // what the stored size leaves for holes at least.
                self.charge_holes(m.size.saturating_sub(m.stored))?;
            }
        }
        if !matches!(m.ty, Type::File) && m.sparse != Sparse::No {
            bail!("a sparse member that is not a regular file");
        }
        self.pending = m.stored;
        self.pad = Self::padding(m.stored);
        if !matches!(m.ty, Type::File) {
            m.size = 0;
        }
        Ok(m)
    }

    fn charge_holes(&mut self, holes: u64) -> Result<()> {
        self.holes_left = self.holes_left.checked_sub(holes).with_context(|| {
            format!(
                "sparse members declare more than {MAX_HOLE_BYTES} bytes (256 GiB) of holes in all \
                 ({holes} bytes in this one)"
            )
        })?;
        Ok(())
    }

    fn apply_pax(&self, m: &mut Member, local: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut sparse_major = None;
        let mut offsets: Vec<u64> = Vec::new();
        let mut lengths: Vec<u64> = Vec::new();
        let mut real = None;
        let mut map01 = None;
        for (k, v) in local {
            let k = k.as_slice();
            let num = || decimal(v).with_context(|| format!("bad pax {} {:?}", show(k), show(v)));
            let no_nul = |what: &str| -> Result<Vec<u8>> {
                if v.contains(&0) {
                    bail!("a NUL byte in the pax {what}");
                }
                Ok(v.clone())
            };
            match k {
                b"path" => m.path = no_nul("path")?,
                b"linkpath" => m.link = no_nul("linkpath")?,
                b"size" => {
                    m.stored = num()?;
                    if m.sparse == Sparse::No {
                        m.size = m.stored;
                    }
                }
                b"uid" => m.uid = num()?,
                b"gid" => m.gid = num()?,
                b"mtime" => {
                    m.mtime =
                        pax_time(v).with_context(|| format!("bad pax mtime {:?}", show(v)))?;
                }
                b"GNU.sparse.name" => m.path = no_nul("GNU.sparse.name")?,
                b"GNU.sparse.realsize" | b"GNU.sparse.size" => real = Some(num()?),
                b"GNU.sparse.major" => sparse_major = Some(num()?),
                b"GNU.sparse.offset" => {
                    if offsets.len() != lengths.len() || offsets.len() >= MAX_SPARSE_EXTENTS {
                        bail!("bad GNU.sparse.offset/numbytes sequence");
                    }
                    offsets.push(num()?)
                }
                b"GNU.sparse.numbytes" => {
                    if offsets.len() != lengths.len() + 1 {
                        bail!("bad GNU.sparse.offset/numbytes sequence");
                    }
                    lengths.push(num()?)
                }
                b"GNU.sparse.map" => map01 = Some(v.clone()),
                b"SUN.holesdata" => {
                    bail!("Solaris sparse files (SUN.holesdata) are not supported")
                }
                _ => {
                    if let Some((name, value)) = xattr_record(k, v)? {
                        match m.xattrs.iter_mut().find(|(n, _)| *n == name) {
                            Some(x) => x.1 = value,
                            None => m.xattrs.push((name, value)),
                        }
                    }
                }
            }
        }
        let bytes: usize = m.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        if m.xattrs.len() > MAX_XATTRS || bytes > MAX_XATTR_BYTES {
            bail!(
                "{} xattrs of {bytes} bytes; the limits are {MAX_XATTRS} xattrs and {MAX_XATTR_BYTES} bytes (64 KiB) per entry",
                m.xattrs.len()
            );
        }
        if let Some(real) = real {
            m.size = real;
            m.sparse = if sparse_major == Some(1) {
                Sparse::MapInData
            } else if let Some(map) = map01 {
                let mut nums = Vec::new();
                if !map.is_empty() {
                    for n in map.split(|&b| b == b',') {
                        if nums.len() >= 2 * MAX_SPARSE_EXTENTS {
                            bail!("sparse map of more than {MAX_SPARSE_EXTENTS} extents");
                        }
                        nums.push(decimal(n).context("bad GNU.sparse.map")?);
                    }
                }
                if !nums.len().is_multiple_of(2) {
                    bail!("bad GNU.sparse.map: an odd count of numbers");
                }
                Sparse::Map(nums.chunks(2).map(|c| (c[0], c[1])).collect())
            } else if offsets.len() == lengths.len() {
                Sparse::Map(offsets.into_iter().zip(lengths).collect())
            } else {
                bail!("a sparse member without a map");
            };
        }
        Ok(())
    }

    /// Read the current member's content, handing `(file offset, bytes)` to
    /// `sink` in order; holes of a sparse member are never handed over.
    pub fn read_data(
        &mut self,
        m: &Member,
        sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let map = match &m.sparse {
            Sparse::No => vec![(0, self.pending)],
            Sparse::Map(map) => map.clone(),
            Sparse::MapInData => {
                // Decimal lines: the count, then offset and length of each
                // chunk; padded to a block.
                let mut consumed = 0u64;
                let stored = self.pending;
                let mut line = |me: &mut Self| -> Result<u64> {
                    let mut digits = Vec::new();
                    loop {
                        if consumed >= stored {
                            bail!("sparse map larger than the member");
                        }
                        let mut b = [0u8; 1];
                        me.read_exact(&mut b)?;
                        consumed += 1;
                        match b[0] {
                            b'\n' => break,
                            d @ b'0'..=b'9' if digits.len() < 20 => digits.push(d),
                            _ => bail!("bad sparse map"),
                        }
                    }
                    decimal(&digits).context("bad sparse map")
                };
                let n = line(self)?;
                if n > MAX_SPARSE_EXTENTS as u64 {
                    bail!("sparse map of {n} extents (the limit is {MAX_SPARSE_EXTENTS})");
                }
                let mut map = Vec::new();
                for _ in 0..n {
                    let off = line(self)?;
                    let len = line(self)?;
                    map.push((off, len));
                }
                let pad = Self::padding(consumed).min(stored - consumed);
                self.skip(pad)?;
                self.pending = stored - consumed - pad;
                check_map(&map, m.size, self.pending)?;
                map
            }
        };
        let mut buf = vec![0u8; (1 << 16).min(self.pending as usize).max(1)];
        for (off, len) in map {
            let mut done = 0;
            while done < len {
                let k = (len - done).min(buf.len() as u64) as usize;
                self.read_exact(&mut buf[..k])?;
                self.pending -= k as u64;
                sink(off + done, &buf[..k])?;
                done += k as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_use_their_length() {
        // A capability blob whose bytes include a newline.
        let val = [
            1u8, 0, 0, 2, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut rec = b"SCHILY.xattr.security.capability=".to_vec();
        rec.extend_from_slice(&val);
        rec.push(b'\n');
        let mut len = rec.len() + 3;
        if len.to_string().len() + 1 + rec.len() != len {
            len += 1;
        }
        let mut d = format!("{len} ").into_bytes();
        d.extend_from_slice(&rec);
        d.extend_from_slice(b"12 uid=1000\n");
        let r = pax_records(&d).unwrap();
        assert_eq!(r[0].0, b"SCHILY.xattr.security.capability");
        assert_eq!(r[0].1, val);
        assert_eq!(r[1], (b"uid".to_vec(), b"1000".to_vec()));
        assert!(pax_records(b"99 path=x\n").is_err());
        assert!(pax_records(b"x path=x\n").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0").unwrap(), 0o644);
        assert_eq!(number(b"  755 \0").unwrap(), 0o755);
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]).unwrap(),
            2 << 32
        );
        assert!(number(b"9x").is_err());
    }

    /// GNU tar's own formats: old GNU sparse with extension blocks (more
    /// than 4 chunks), GNU long names; and pax sparse 1.0 with xattrs.
    #[test]
    fn gnu_tar_archives() {
        use std::io::{Seek, Write};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let long = "n".repeat(150);
        std::fs::create_dir_all(src.join(&long)).unwrap();
        let mut f = std::fs::File::create(src.join(&long).join("sparse")).unwrap();
        f.set_len(40 << 20).unwrap();
        let mut want = vec![0u8; 40 << 20];
        for i in 0..9u64 {
            let at = i * (4 << 20) + 1000;
            let chunk = format!("chunk {i} ").repeat(500);
            f.seek(std::io::SeekFrom::Start(at)).unwrap();
            f.write_all(chunk.as_bytes()).unwrap();
            want[at as usize..at as usize + chunk.len()].copy_from_slice(chunk.as_bytes());
        }
        drop(f);
        for format in ["gnu", "posix"] {
            let ar = d.path().join(format!("{format}.tar"));
            let st = std::process::Command::new("tar")
                .args(["--sparse", &format!("--format={format}"), "-cf"])
                .arg(&ar)
                .arg("-C")
                .arg(&src)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            let mut r = Reader::new(std::fs::File::open(&ar).unwrap());
            let mut found = false;
            while let Some(m) = r.next_member().unwrap() {
                let path = String::from_utf8_lossy(&m.path).into_owned();
                if !path.ends_with("/sparse") {
                    continue;
                }
                assert!(path.contains(&long), "{format}: long name lost: {path}");
                assert_eq!(m.size, 40 << 20, "{format}");
                assert!(
                    m.stored < 1 << 20,
                    "{format}: holes stored ({} bytes)",
                    m.stored
                );
                let mut got = vec![0u8; m.size as usize];
                r.read_data(&m, &mut |off, b| {
                    got[off as usize..off as usize + b.len()].copy_from_slice(b);
                    Ok(())
                })
                .unwrap();
                assert!(got == want, "{format}: content differs");
                found = true;
            }
            assert!(found, "{format}: member not found");
        }
    }

    /// A ustar header with a valid checksum.
    fn header(name: &[u8], ty: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = ty;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        seal(&mut h);
        h
    }

    fn seal(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// One pax record, its length prefix included.
    fn record(k: &str, v: &[u8]) -> Vec<u8> {
        let body = k.len() + v.len() + 2;
        let mut len = body + 1;
        while len.to_string().len() + 1 + body != len {
            len += 1;
        }
        let mut r = format!("{len} {k}=").into_bytes();
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    }

    /// A member: its header and data, padded.
    fn member(out: &mut Vec<u8>, name: &[u8], ty: u8, data: &[u8]) {
        out.extend_from_slice(&header(name, ty, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    /// Every member's path, or the error.
    fn paths(ar: &[u8]) -> Result<Vec<String>> {
        let mut r = Reader::new(ar);
        let mut v = Vec::new();
        while let Some(m) = r.next_member()? {
            r.read_data(&m, &mut |_, _| Ok(()))?;
            v.push(show(&m.path));
        }
        Ok(v)
    }

    #[test]
    fn negative_base256_numbers() {
        let mut f = [0xffu8; 12];
        assert_eq!(signed_number(&f).unwrap(), -1);
        f[11] = 0xfe;
        assert_eq!(signed_number(&f).unwrap(), -2);
        assert!(number(&f).is_err(), "a negative size must be refused");
        assert_eq!(pax_time(b"-2146608000").unwrap(), -2146608000);
        assert_eq!(pax_time(b"1350244992.023960108").unwrap(), 1350244992);
        assert!(pax_time(b"999xxx9324.432432444444").is_none());
        assert!(pax_time(b"1748089464.951928467a").is_none());
        assert!(decimal(b"+5").is_none() && decimal(b" 5").is_none());
    }

    #[test]
    fn sparse_maps_are_checked() {
        assert_eq!(
            check_map(&[(0, 10), (100, 10), (200, 0)], 200, 20).unwrap(),
            180
        );
        let e = |map: &[(u64, u64)], real, data| {
            format!("{:#}", check_map(map, real, data).unwrap_err())
        };
        assert!(e(&[(100, 10), (50, 10)], 200, 20).contains("overlaps"));
        assert!(e(&[(0, 10), (5, 10)], 200, 20).contains("overlaps"));
        assert!(e(&[(190, 20)], 200, 20).contains("past the end"));
        assert!(e(&[(u64::MAX, 2)], 200, 2).contains("past the end"));
        assert!(e(&[(0, 10)], 200, 512).contains("the archive stores 512"));
    }

    #[test]
    fn hole_budget_is_per_archive() {
        // Old GNU sparse members of 16 GiB holding 512 bytes: a handful
        // pass, past MAX_HOLE_BYTES the archive is refused.
        let mut ar = Vec::new();
        let n = MAX_HOLE_BYTES / (16 << 30) + 1;
        for i in 0..n {
            let mut h = header(format!("f{i}").as_bytes(), b'S', 512);
            h[257..265].copy_from_slice(b"ustar  \0");
            h[386..398].copy_from_slice(b"00000000000\0");
            h[398..410].copy_from_slice(b"00000001000\0");
            h[483..495].copy_from_slice(format!("{:012o}", 16u64 << 30).as_bytes());
            seal(&mut h);
            ar.extend_from_slice(&h);
            ar.extend_from_slice(&[b'x'; 512]);
        }
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(err.contains(&format!("\"f{}\"", n - 1)), "{err}");
        assert!(err.contains("holes"), "{err}");
    }

    #[test]
    fn global_headers_are_not_applied_and_hold_no_xattrs() {
        let mut ar = Vec::new();
        member(&mut ar, b"g", b'g', &record("path", b"global1"));
        member(&mut ar, b"file1", b'0', b"x");
        assert_eq!(paths(&ar).unwrap(), ["file1"]);
        let mut ar = Vec::new();
        member(
            &mut ar,
            b"pax_global_header",
            b'g',
            &record("SCHILY.xattr.user.a", b"v"),
        );
        member(&mut ar, b"file1", b'0', b"x");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(
            err.contains("pax_global_header") && err.contains("SCHILY.xattr.user.a"),
            "{err}"
        );
    }

    #[test]
    fn metadata_is_bounded() {
        // One pax header over the limit: refused before it is read.
        let mut ar = header(b"PaxHeaders/big", b'x', MAX_META_SIZE + 1).to_vec();
        ar.extend_from_slice(&[0; 1024]);
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(
            err.contains("PaxHeaders/big") && err.contains("1 MiB"),
            "{err}"
        );
        // Several under the limit that add up past it.
        let mut ar = Vec::new();
        let big = record("comment", &vec![b'c'; 600 << 10]);
        member(&mut ar, b"PaxHeaders/a", b'x', &big);
        member(&mut ar, b"PaxHeaders/a", b'x', &big);
        member(&mut ar, b"a", b'0', b"x");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(err.contains("1 MiB"), "{err}");
        // Xattrs: too many, too large.
        let mut recs = Vec::new();
        for i in 0..=MAX_XATTRS {
            recs.extend(record(&format!("SCHILY.xattr.user.{i}"), b"v"));
        }
        let mut ar = Vec::new();
        member(&mut ar, b"PaxHeaders/many", b'x', &recs);
        member(&mut ar, b"many", b'0', b"x");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(
            err.contains("entry \"many\"") && err.contains("xattrs"),
            "{err}"
        );
        let mut ar = Vec::new();
        let v = vec![7u8; MAX_XATTR_BYTES];
        member(
            &mut ar,
            b"PaxHeaders/huge",
            b'x',
            &record("SCHILY.xattr.user.big", &v),
        );
        member(&mut ar, b"huge", b'0', b"x");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(
            err.contains("entry \"huge\"") && err.contains("64 KiB"),
            "{err}"
        );
        // The same name twice counts once, the last value wins.
        let mut ar = Vec::new();
        let mut recs = record("SCHILY.xattr.user.a", b"1");
        recs.extend(record("LIBARCHIVE.xattr.user.a", b"Mg=="));
        member(&mut ar, b"PaxHeaders/x", b'x', &recs);
        member(&mut ar, b"x", b'0', b"x");
        let mut r = Reader::new(&ar[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!(m.xattrs, [(b"user.a".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn sparse_map_in_data_is_bounded() {
        // A pax 1.0 map announcing 2^24 extents in a 512-byte member.
        let mut ar = Vec::new();
        let mut recs = record("GNU.sparse.major", b"1");
        recs.extend(record("GNU.sparse.minor", b"0"));
        recs.extend(record("GNU.sparse.realsize", b"1000"));
        recs.extend(record("GNU.sparse.name", b"s"));
        member(&mut ar, b"PaxHeaders/s", b'x', &recs);
        member(&mut ar, b"s", b'0', b"16777216\n0\n");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(err.contains("extents"), "{err}");
        // A map larger than the member.
        let mut ar = Vec::new();
        member(&mut ar, b"PaxHeaders/s", b'x', &recs);
        member(&mut ar, b"s", b'0', b"3\n0\n1");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(err.contains("larger than the member"), "{err}");
    }

    #[test]
    fn nul_in_names_is_refused() {
        let mut ar = Vec::new();
        member(&mut ar, b"PaxHeaders/p", b'x', &record("path", b"a\0b"));
        member(&mut ar, b"p", b'0', b"x");
        let err = format!("{:#}", paths(&ar).unwrap_err());
        assert!(err.contains("NUL"), "{err}");
    }
}
