//! A content-defined chunker: FastCDC (Xia et al., USENIX ATC 2016) with a
//! gear rolling hash and normalized chunking. A cut depends only on the
//! 64 bytes before it, so an insertion changes the chunks around it and
//! the chunking falls back into step after it.
//!
//! No cut before `min`; between `min` and `avg` a cut needs more hash bits
//! zero (harder), after `avg` fewer (easier); at `max` a cut is forced.
//! The masks use the hash's high bits, the ones that depend on the most
//! bytes.
use std::io::Read;

/// Chunk size bounds, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Params {
    /// What `nodeimg build` uses: 16 / 64 / 256 KiB (casync's defaults).
    pub const DEFAULT: Params = Params {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };

    /// Valid: 64 <= min <= avg <= max, avg a power of two.
    pub fn check(&self) -> Result<(), String> {
        if !(64 <= self.min
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg.is_power_of_two()
            && u64::from(self.max) <= crate::index::MAX_CHUNK_SIZE)
        {
            return Err(format!(
                "chunk sizes min {} avg {} max {}: need 64 <= min <= avg <= max <= {}, avg a power of two",
                self.min,
                self.avg,
                self.max,
                crate::index::MAX_CHUNK_SIZE
            ));
        }
        Ok(())
    }
}

/// 256 pseudo-random 64-bit values (splitmix64 from a fixed seed): fixed
/// forever, since they decide where chunks end.
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut s: u64 = 0x6e6f_6465_626f_6f74; // "nodeboot"
    let mut i = 0;
    while i < 256 {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// The top `bits` bits set.
fn high_mask(bits: u32) -> u64 {
    !0u64 << (64 - bits)
}

#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    p: Params,
    mask_hard: u64,
    mask_easy: u64,
}

impl Chunker {
    pub fn new(p: Params) -> Chunker {
        let bits = p.avg.max(4).trailing_zeros();
        Chunker {
            p,
            mask_hard: high_mask(bits + 2),
            mask_easy: high_mask(bits.saturating_sub(2).max(1)),
        }
    }

    pub fn params(&self) -> Params {
        self.p
    }

    /// The length of the next chunk at the start of `data`: `data` holds at
    /// least `max` bytes, or all that is left (then a short tail is one
    /// chunk).
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len().min(self.p.max as usize);
        let min = self.p.min as usize;
        if n <= min {
            return n;
        }
        let avg = (self.p.avg as usize).min(n);
        let mut h = 0u64;
        // The hash before `min` does not matter past 64 bytes: start 64
        // bytes early so the cut at `min` sees a full window.
        for &b in &data[min.saturating_sub(64)..min] {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
        }
        for (i, &b) in data.iter().enumerate().take(avg).skip(min) {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if h & self.mask_hard == 0 {
                return i + 1;
            }
        }
        for (i, &b) in data.iter().enumerate().take(n).skip(avg) {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if h & self.mask_easy == 0 {
                return i + 1;
            }
        }
        n
    }

    /// Cut everything `r` yields, calling `f` with each chunk in order.
    /// Memory: one buffer of `2 × max`.
    pub fn for_each<R: Read>(
        &self,
        mut r: R,
        mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let max = self.p.max as usize;
        let mut buf = vec![0u8; 2 * max];
        let (mut start, mut end) = (0usize, 0usize);
        let mut eof = false;
        loop {
            if !eof && end - start < max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < buf.len() {
                    match r.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => end += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if start == end {
                return Ok(());
            }
            let k = self.cut(&buf[start..end]);
            f(&buf[start..start + k])?;
            start += k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    fn sizes(c: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        c.for_each(data, |ch| {
            v.push(ch.len());
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn bounds_and_average() {
        let c = Chunker::new(Params::DEFAULT);
        let data = noise(16 << 20, 1);
        let s = sizes(&c, &data);
        assert_eq!(s.iter().sum::<usize>(), data.len());
        for &k in &s[..s.len() - 1] {
            assert!((16 << 10..=256 << 10).contains(&k), "{k}");
        }
        let avg = data.len() / s.len();
        assert!((48 << 10..=96 << 10).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let c = Chunker::new(Params::DEFAULT);
        let a = noise(8 << 20, 2);
        let mut b = a.clone();
        let ins = noise(3000, 3);
        b.splice(4 << 20..4 << 20, ins);
        let ids = |d: &[u8]| {
            let mut v = Vec::new();
            c.for_each(d, |ch| {
                v.push(crate::ChunkId::of(ch));
                Ok(())
            })
            .unwrap();
            v
        };
        let (ia, ib) = (ids(&a), ids(&b));
        let old: std::collections::HashSet<_> = ia.iter().collect();
        let new = ib.iter().filter(|id| !old.contains(id)).count();
        assert!(new <= 3, "{new} new chunks of {}", ib.len());
    }

    #[test]
    fn short_input_is_one_chunk_and_empty_none() {
        let c = Chunker::new(Params::DEFAULT);
        assert_eq!(sizes(&c, &[7u8; 100]), vec![100]);
        assert!(sizes(&c, &[]).is_empty());
        // Zeros never match a mask: cut at max.
        assert_eq!(sizes(&c, &vec![0u8; 600 << 10])[0], 256 << 10);
    }

    #[test]
    fn params_checked() {
        assert!(Params::DEFAULT.check().is_ok());
        let bad = Params {
            min: 10,
            avg: 3,
            max: 5,
        };
        assert!(bad.check().unwrap_err().contains("need 64 <= min"));
    }
}
