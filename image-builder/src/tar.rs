//! A streaming tar reader for root filesystem archives: ustar, GNU (long
//! names, base-256 numbers, old sparse members with extension blocks) and
//! pax (local and global headers, `SCHILY.xattr.*`, sparse 0.0, 0.1, 1.0).
//!
//! Written here rather than taken from the `tar` crate because that crate
//! splits pax records on newlines instead of reading their length prefix, so
//! any binary xattr value holding a 0x0a byte (a `security.capability` blob
//! such as `cap_dac_override,cap_fowner+ep`) is refused as malformed.
use anyhow::{bail, Context, Result};
use std::io::Read;

const BLOCK: usize = 512;

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
    /// Full xattr names and values, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
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
    /// Bytes of the current member's data (and padding) not read yet.
    pending: u64,
    global: Vec<(Vec<u8>, Vec<u8>)>,
    offset: u64,
}

fn nul_terminated(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// An octal (or GNU base-256) number field.
fn number(f: &[u8]) -> Result<u64> {
    if f.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .context("number too large")?;
        }
        return Ok(v);
    }
    let s = std::str::from_utf8(nul_terminated(f)).context("bad number")?;
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).with_context(|| format!("bad octal number {s:?}"))
}

fn decimal(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// pax records: "LEN KEY=VALUE\n", LEN counting the whole record.
pub fn pax_records(mut d: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !d.is_empty() && d[0] != 0 {
        let sp = d
            .iter()
            .position(|&b| b == b' ')
            .context("malformed pax record: no length")?;
        let len = decimal(&d[..sp]).context("malformed pax record: bad length")? as usize;
        if len <= sp + 1 || len > d.len() || d[len - 1] != b'\n' {
            bail!("malformed pax record: length {len} does not fit");
        }
        let rec = &d[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("malformed pax record: no '='")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        d = &d[len..];
    }
    Ok(out)
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader {
            r,
            pending: 0,
            global: Vec::new(),
            offset: 0,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r
            .read_exact(buf)
            .with_context(|| format!("archive cut short at byte {}", self.offset))?;
        self.offset += buf.len() as u64;
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

    fn padded(n: u64) -> u64 {
        n.div_ceil(BLOCK as u64) * BLOCK as u64
    }

    /// Read a metadata member's data (long name, pax records), bounded.
    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>> {
        if size > 16 << 20 {
            bail!("a {size}-byte metadata member at byte {}", self.offset);
        }
        let mut v = vec![0u8; size as usize];
        self.read_exact(&mut v)?;
        self.skip(Self::padded(size) - size)?;
        Ok(v)
    }

    /// The next member, or None at the end of the archive. Whatever the
    /// previous member's data was not read is skipped.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let unread = std::mem::take(&mut self.pending);
        self.skip(unread)?;
        let mut local: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name = None;
        let mut long_link = None;
        loop {
            let mut h = [0u8; BLOCK];
            match self.r.read(&mut h[..1])? {
                0 => return Ok(None), // no end blocks: tolerated
                _ => {
                    self.offset += 1;
                    self.read_exact(&mut h[1..])?;
                }
            }
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let at = self.offset - BLOCK as u64;
            let want = number(&h[148..156]).with_context(|| format!("header at byte {at}"))?;
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if sum != want {
                bail!("bad header checksum at byte {at}: not a tar archive, or a corrupt one");
            }
            let size = number(&h[124..136]).with_context(|| format!("header at byte {at}"))?;
            match h[156] {
                b'x' => {
                    let d = self.read_meta(size)?;
                    local.extend(
                        pax_records(&d).with_context(|| format!("pax header at byte {at}"))?,
                    );
                    continue;
                }
                b'g' => {
                    let d = self.read_meta(size)?;
                    self.global.extend(
                        pax_records(&d).with_context(|| format!("pax header at byte {at}"))?,
                    );
                    continue;
                }
                b'L' => {
                    long_name = Some(nul_terminated(&self.read_meta(size)?).to_vec());
                    continue;
                }
                b'K' => {
                    long_link = Some(nul_terminated(&self.read_meta(size)?).to_vec());
                    continue;
                }
                _ => {}
            }
            let gnu = &h[257..265] == b"ustar  \0";
            let mut path = nul_terminated(&h[0..100]).to_vec();
            if !gnu && &h[257..262] == b"ustar" {
                let prefix = nul_terminated(&h[345..500]);
                if !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(&path);
                    path = p;
                }
            }
            let ty = match h[156] {
                b'0' | 0 | b'7' | b'S' => Type::File,
                b'1' => Type::HardLink,
                b'2' => Type::Symlink,
                b'3' => Type::Char,
                b'4' => Type::Block,
                b'5' | b'D' => Type::Dir,
                b'6' => Type::Fifo,
                t => Type::Other(t),
            };
            let mut m = Member {
                path: long_name.take().unwrap_or(path),
                link: long_link
                    .take()
                    .unwrap_or_else(|| nul_terminated(&h[157..257]).to_vec()),
                ty,
                mode: number(&h[100..108]).unwrap_or(0o644) as u32,
                uid: number(&h[108..116]).unwrap_or(0),
                gid: number(&h[116..124]).unwrap_or(0),
                mtime: number(&h[136..148]).unwrap_or(0) as i64,
                dev_major: number(&h[329..337]).unwrap_or(0) as u32,
                dev_minor: number(&h[337..345]).unwrap_or(0) as u32,
                size,
                xattrs: Vec::new(),
                stored: size,
                sparse: Sparse::No,
            };
            if h[156] == b'S' {
                // Old GNU sparse: 4 map entries in the header, 21 in each
                // extension block that follows it.
                let mut map = Vec::new();
                let entries = |b: &[u8], n: usize, map: &mut Vec<(u64, u64)>| -> Result<()> {
                    for i in 0..n {
                        let e = &b[i * 24..i * 24 + 24];
                        if e[0] == 0 {
                            break;
                        }
                        map.push((number(&e[..12])?, number(&e[12..])?));
                    }
                    Ok(())
                };
                entries(&h[386..482], 4, &mut map)?;
                let mut extended = h[482] != 0;
                while extended {
                    let mut e = [0u8; BLOCK];
                    self.read_exact(&mut e)?;
                    entries(&e[..504], 21, &mut map)?;
                    extended = e[504] != 0;
                }
                m.size = number(&h[483..495])?;
                m.sparse = Sparse::Map(map);
            }
            self.apply_pax(&mut m, &local)
                .with_context(|| format!("pax header of the member at byte {at}"))?;
            // Data blocks follow whenever the size says so, whatever the type.
            self.pending = Self::padded(m.stored);
            if !matches!(m.ty, Type::File) {
                m.size = 0;
            }
            return Ok(Some(m));
        }
    }

    fn apply_pax(&self, m: &mut Member, local: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut sparse_major = None;
        let mut offsets = Vec::new();
        let mut lengths = Vec::new();
        let mut real = None;
        let mut map01 = None;
        for (k, v) in self.global.iter().chain(local) {
            let k = k.as_slice();
            let num =
                || decimal(v).with_context(|| format!("bad {} value", String::from_utf8_lossy(k)));
            match k {
                b"path" => m.path = v.clone(),
                b"linkpath" => m.link = v.clone(),
                b"size" => {
                    m.stored = num()?;
                    if m.sparse == Sparse::No {
                        m.size = m.stored;
                    }
                }
                b"uid" => m.uid = num()?,
                b"gid" => m.gid = num()?,
                b"mtime" => {
                    let s = String::from_utf8_lossy(v);
                    m.mtime = s
                        .split('.')
                        .next()
                        .and_then(|i| i.trim().parse().ok())
                        .context("bad mtime")?;
                }
                b"GNU.sparse.name" => m.path = v.clone(),
                b"GNU.sparse.realsize" | b"GNU.sparse.size" => real = Some(num()?),
                b"GNU.sparse.major" => sparse_major = Some(num()?),
                b"GNU.sparse.offset" => offsets.push(num()?),
                b"GNU.sparse.numbytes" => lengths.push(num()?),
                b"GNU.sparse.map" => map01 = Some(v.clone()),
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        m.xattrs.push((name.to_vec(), v.clone()));
                    }
                }
            }
        }
        if let Some(real) = real {
            m.size = real;
            m.sparse = if sparse_major == Some(1) {
                Sparse::MapInData
            } else if let Some(map) = map01 {
                let nums: Vec<u64> = map
                    .split(|&b| b == b',')
                    .map(|n| decimal(n).context("bad GNU.sparse.map"))
                    .collect::<Result<_>>()?;
                if !nums.len().is_multiple_of(2) {
                    bail!("bad GNU.sparse.map: an odd count of numbers");
                }
                Sparse::Map(nums.chunks(2).map(|c| (c[0], c[1])).collect())
            } else if !offsets.is_empty() && offsets.len() == lengths.len() {
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
        let mut left = m.stored;
        let map = match &m.sparse {
            Sparse::No => vec![(0, m.stored)],
            Sparse::Map(map) => map.clone(),
            Sparse::MapInData => {
                // Decimal lines: the count, then offset and length of each
                // chunk; padded to a block.
                let mut consumed = 0u64;
                let mut line = |me: &mut Self| -> Result<u64> {
                    let mut digits = Vec::new();
                    loop {
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
                if n > 1 << 24 {
                    bail!("sparse map of {n} chunks");
                }
                let mut map = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let off = line(self)?;
                    let len = line(self)?;
                    map.push((off, len));
                }
                let pad = Self::padded(consumed) - consumed;
                self.skip(pad)?;
                left = left
                    .checked_sub(consumed + pad)
                    .context("sparse map larger than the member")?;
                self.pending = self.pending.saturating_sub(consumed + pad);
                map
            }
        };
        let mut buf = vec![0u8; 1 << 16];
        for (off, len) in map {
            if off.checked_add(len).is_none_or(|e| e > m.size) || len > left {
                bail!(
                    "sparse chunk {off}+{len} outside the file ({} bytes)",
                    m.size
                );
            }
            let mut done = 0;
            while done < len {
                let k = (len - done).min(buf.len() as u64) as usize;
                self.read_exact(&mut buf[..k])?;
                self.pending -= k as u64;
                sink(off + done, &buf[..k])?;
                done += k as u64;
            }
            left -= len;
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
}
