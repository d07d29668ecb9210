//! Golomb-coded sets (GCS): a compact, probabilistic set of byte strings for distribution to
//! phones, at about log2(M) + 1.5 bits per element and a false-positive rate of 1/M.
//!
//! The coding layer is exactly BIP158's, parameterised by P and M (so BIP158's official test
//! vectors check it): SipHash-2-4 each item under a 16-byte key, map the hash into [0, N·M)
//! with a 128-bit multiply-shift, sort, and Golomb-Rice code the gaps (quotient in unary,
//! then P remainder bits, packed MSB-first). A fresh random key per batch keeps uploaders from
//! grinding collisions.
//!
//! Deliberately absent: incremental updates (a filter is rebuilt per batch, since N fixes the
//! range) and any I/O. [`GcsFilter::from_bytes`] validates every bit of the data up front, so
//! querying a parsed filter cannot fail or panic.

use siphasher::sip::SipHasher24;

/// Rice parameter P and range multiplier M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcsParams {
    /// Remainder bits per gap; valid filters have 1..=62.
    pub p: u8,
    /// Range multiplier (FP rate ≈ 1/M); valid filters have M >= 1.
    pub m: u64,
}

impl GcsParams {
    /// BIP158's parameters (P = 19, M = 784931), for the official test vectors.
    pub const BIP158: GcsParams = GcsParams { p: 19, m: 784_931 };

    /// M = 2^bits (FP = 2^-bits exactly) and P = bits − 1: about bits + 1.54 bits per
    /// element (2.69 bytes at 20 bits, 5.19 at 40). For a given FP this beats BIP158's
    /// M = 1.497·2^P, which costs log2(M) + 1.5 bits: the best Rice parameter for M lies
    /// between bits − 1 and bits, and bits − 1 is the cheaper side.
    ///
    /// # Panics
    /// If `bits` is outside 2..=62.
    pub fn for_false_positive_bits(bits: u8) -> Self {
        assert!(
            (2..=MAX_P).contains(&bits),
            "false-positive bits {bits} out of range; accepted: 2..=62"
        );
        GcsParams {
            p: bits - 1,
            m: 1 << bits,
        }
    }

    /// N·M for `n` elements, after checking P and M.
    fn range(self, n: u64) -> Result<u64, GcsError> {
        if !(1..=MAX_P).contains(&self.p) {
            return Err(GcsError::RiceParameter(self.p));
        }
        if self.m == 0 {
            return Err(GcsError::ZeroRangeMultiplier);
        }
        n.checked_mul(self.m)
            .ok_or(GcsError::RangeOverflow { n, m: self.m })
    }
}

/// The largest Rice parameter: keeps every remainder and shift well inside a u64.
const MAX_P: u8 = 62;

/// `b"GCS1"`, the first bytes of [`GcsFilter::to_bytes`].
pub const GCS_MAGIC: [u8; 4] = *b"GCS1";

/// Magic, p, m, n and key.
const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 16;

/// A built or parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsFilter {
    pub params: GcsParams,
    /// SipHash-2-4 key: k0 = bytes 0..8, k1 = bytes 8..16, both little-endian.
    pub key: [u8; 16],
    /// Number of coded values; the hash range is [0, n·m).
    pub n: u64,
    /// The n Golomb-Rice coded gaps, MSB-first, last byte zero-padded.
    pub data: Vec<u8>,
}

/// Why bytes are not a valid filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GcsError {
    #[error("GCS filter too short: {len} bytes, the header alone is {HEADER_LEN}")]
    TooShort { len: usize },
    #[error("bad magic: not a GCS filter (expected \"GCS1\")")]
    BadMagic,
    #[error("Rice parameter P = {0} out of range; accepted: 1..=62")]
    RiceParameter(u8),
    #[error("range multiplier M = 0; accepted: M >= 1")]
    ZeroRangeMultiplier,
    #[error("N·M overflows 64 bits (N = {n}, M = {m})")]
    RangeOverflow { n: u64, m: u64 },
    #[error(
        "N = {n} elements cannot fit in {data_len} data bytes: at most {max} at P + 1 bits each"
    )]
    TooManyElements { n: u64, data_len: usize, max: u64 },
    #[error("data ends inside element {index} of {n}")]
    Truncated { index: u64, n: u64 },
    #[error("element {index} decodes to a value outside the range [0, N·M)")]
    ValueOutOfRange { index: u64 },
    #[error(
        "{extra} data bytes after the last element; accepted: only zero padding of the last byte"
    )]
    TrailingBytes { extra: usize },
    #[error("padding bits after the last element are not zero")]
    NonZeroPadding,
}

impl GcsFilter {
    /// Builds the filter of `items` (duplicates allowed; each distinct value once).
    ///
    /// Distinct items are counted by their 64-bit SipHash (equal for equal items; distinct
    /// items collide with probability 2^-64 under a random key). Distinct hashes that land on
    /// the same point of [0, n·m) are kept, as zero gaps, as in BIP158: n must count the coded
    /// values *and* fix the range, so dropping them would make the range unreproducible.
    ///
    /// # Panics
    /// If `params` are invalid (P outside 1..=62, M = 0) or n·m overflows a u64.
    pub fn build<I: AsRef<[u8]>>(items: &[I], key: [u8; 16], params: GcsParams) -> GcsFilter {
        let hasher = sip(&key);
        let mut hashes: Vec<u64> = items
            .iter()
            .map(|item| hasher.hash(item.as_ref()))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let n = hashes.len() as u64;
        let range = params
            .range(n)
            .unwrap_or_else(|e| panic!("invalid GCS parameters: {e}"));

        // The mapping is monotone in h, so sorted hashes give sorted values: no second sort.
        let p = u32::from(params.p);
        // Expected size; capped so that odd parameters (M far above 2^P) grow the buffer instead.
        let per_element = u64::from(p) + 2 + (params.m >> p).min(64);
        let bits = (hashes.len() as u64).saturating_mul(per_element);
        let mut writer = BitWriter::with_capacity((bits / 8) as usize + 8);
        let mut last = 0;
        for h in hashes {
            let value = map_to_range(h, range);
            let gap = value - last;
            last = value;
            writer.unary(gap >> p);
            writer.bits(gap & low_mask(p), p);
        }
        GcsFilter {
            params,
            key,
            n,
            data: writer.finish(),
        }
    }

    /// The item's position in [0, n·m) under this filter's key.
    pub fn hash_to_range(&self, item: &[u8]) -> u64 {
        // Saturating: a hand-built filter with an overflowing n·m must not panic here; such a
        // filter matches nothing (its data fails to decode).
        let range = self.n.saturating_mul(self.params.m);
        map_to_range(sip(&self.key).hash(item), range)
    }

    pub fn contains(&self, item: &[u8]) -> bool {
        let target = self.hash_to_range(item);
        let Some(mut decoder) = Decoder::new(self) else {
            return false;
        };
        while let Some(value) = decoder.next_value() {
            if value >= target {
                return value == target;
            }
        }
        false
    }

    /// Indices (ascending) of the `queries` that may be in the set, in ONE sorted merge pass
    /// over the filter (hash all queries, sort them, then walk the decoded gaps once).
    pub fn matches<I: AsRef<[u8]>>(&self, queries: &[I]) -> Vec<usize> {
        let Some(mut decoder) = Decoder::new(self) else {
            return Vec::new();
        };
        let hasher = sip(&self.key);
        let range = self.n.saturating_mul(self.params.m);
        let mut wanted: Vec<(u64, usize)> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| (map_to_range(hasher.hash(q.as_ref()), range), i))
            .collect();
        wanted.sort_unstable();

        let mut found = Vec::new();
        let mut current = decoder.next_value();
        for (target, index) in wanted {
            while let Some(value) = current {
                if value >= target {
                    break;
                }
                current = decoder.next_value();
            }
            match current {
                Some(value) if value == target => found.push(index),
                Some(_) => {}
                None => break,
            }
        }
        found.sort_unstable();
        found
    }

    /// Portable encoding: b"GCS1", p (u8), m (u64 BE), n (u64 BE), key (16 bytes), then data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        out.extend_from_slice(&GCS_MAGIC);
        out.push(self.params.p);
        out.extend_from_slice(&self.params.m.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses `to_bytes` output, decoding every value so that later queries cannot fail.
    /// Never panics and allocates only the returned copy of the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<GcsFilter, GcsError> {
        if bytes.len() < HEADER_LEN {
            return Err(GcsError::TooShort { len: bytes.len() });
        }
        let (header, data) = bytes.split_at(HEADER_LEN);
        if header[0..4] != GCS_MAGIC {
            return Err(GcsError::BadMagic);
        }
        let params = GcsParams {
            p: header[4],
            m: u64::from_be_bytes(header[5..13].try_into().expect("8 bytes")),
        };
        let n = u64::from_be_bytes(header[13..21].try_into().expect("8 bytes"));
        let key: [u8; 16] = header[21..37].try_into().expect("16 bytes");
        check(params, n, data, |_| {})?;
        Ok(GcsFilter {
            params,
            key,
            n,
            data: data.to_vec(),
        })
    }

    /// Every decoded value, in order (for tests and tools); errors as from_bytes would.
    pub fn values(&self) -> Result<Vec<u64>, GcsError> {
        // No reserve from n: `check` bounds n by the data size before the first value.
        let mut values = Vec::new();
        check(self.params, self.n, &self.data, |v| values.push(v))?;
        Ok(values)
    }
}

fn sip(key: &[u8; 16]) -> SipHasher24 {
    let k0 = u64::from_le_bytes(key[0..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes"));
    SipHasher24::new_with_keys(k0, k1)
}

/// Multiply-shift instead of `h % range`: no division, and BIP158 specifies it.
fn map_to_range(h: u64, range: u64) -> u64 {
    ((u128::from(h) * u128::from(range)) >> 64) as u64
}

fn low_mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

/// Validates params, n against the data size, every value, and the padding; feeds each value
/// to `each`.
fn check(
    params: GcsParams,
    n: u64,
    data: &[u8],
    mut each: impl FnMut(u64),
) -> Result<(), GcsError> {
    let range = params.range(n)?;
    // Each element costs at least P + 1 bits (a zero quotient and the remainder).
    let max = (data.len() as u64).saturating_mul(8) / (u64::from(params.p) + 1);
    if n > max {
        return Err(GcsError::TooManyElements {
            n,
            data_len: data.len(),
            max,
        });
    }
    let p = u32::from(params.p);
    let mut reader = BitReader::new(data);
    let mut last = 0u64;
    for index in 0..n {
        let truncated = || GcsError::Truncated { index, n };
        let q = reader.unary().ok_or_else(truncated)?;
        let r = reader.bits(p).ok_or_else(truncated)?;
        // A hostile quotient can be as long as the data; reject it before shifting loses bits.
        if q > (range >> p) {
            return Err(GcsError::ValueOutOfRange { index });
        }
        let value = last
            .checked_add((q << p) | r)
            .filter(|&v| v < range)
            .ok_or(GcsError::ValueOutOfRange { index })?;
        each(value);
        last = value;
    }
    let unread = reader.unread_bits();
    if unread >= 8 {
        return Err(GcsError::TrailingBytes {
            extra: (unread / 8) as usize,
        });
    }
    if unread > 0 && data[data.len() - 1] & low_mask(unread as u32) as u8 != 0 {
        return Err(GcsError::NonZeroPadding);
    }
    Ok(())
}

/// Streams the values of a filter; stops (returns None) at the end or at invalid data, which a
/// parsed filter never has.
struct Decoder<'a> {
    reader: BitReader<'a>,
    p: u32,
    range: u64,
    left: u64,
    last: u64,
}

impl<'a> Decoder<'a> {
    fn new(filter: &'a GcsFilter) -> Option<Self> {
        let range = filter.params.range(filter.n).ok()?;
        Some(Decoder {
            reader: BitReader::new(&filter.data),
            p: u32::from(filter.params.p),
            range,
            left: filter.n,
            last: 0,
        })
    }

    #[inline]
    fn next_value(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        let q = self.reader.unary()?;
        let r = self.reader.bits(self.p)?;
        if q > (self.range >> self.p) {
            self.left = 0;
            return None;
        }
        let value = self.last.checked_add((q << self.p) | r)?;
        self.left -= 1;
        self.last = value;
        Some(value)
    }
}

/// MSB-first bit reader over a byte slice, refilled a word at a time.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte not yet counted in `avail`.
    pos: usize,
    /// Unread bits, left-aligned. Bits below the top `avail` are zero or the true next bits
    /// (a word refill may pre-load part of the next byte), so OR-ing them in again is harmless.
    buf: u64,
    avail: u32,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Tops `avail` up to at least 57 bits, or to all that is left.
    #[inline]
    fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let word = u64::from_be_bytes(word.try_into().expect("8 bytes"));
            if self.avail < 64 {
                self.buf |= word >> self.avail;
            }
            let whole = (64 - self.avail) / 8;
            self.pos += whole as usize;
            self.avail += whole * 8;
        } else {
            while self.avail <= 56 && self.pos < self.data.len() {
                self.buf |= u64::from(self.data[self.pos]) << (56 - self.avail);
                self.pos += 1;
                self.avail += 8;
            }
        }
    }

    #[inline]
    fn consume(&mut self, k: u32) {
        self.buf = self.buf.checked_shl(k).unwrap_or(0);
        self.avail -= k;
    }

    /// Counts one-bits up to the terminating zero; None if the data ends first.
    #[inline]
    fn unary(&mut self) -> Option<u64> {
        let mut q = 0u64;
        loop {
            if self.avail == 0 {
                self.refill();
                if self.avail == 0 {
                    return None;
                }
            }
            let ones = self.buf.leading_ones();
            if ones < self.avail {
                self.consume(ones + 1);
                return Some(q + u64::from(ones));
            }
            q += u64::from(self.avail);
            self.consume(self.avail);
        }
    }

    /// Reads `k` (1..=62) bits as a big-endian number.
    #[inline]
    fn bits(&mut self, k: u32) -> Option<u64> {
        if k > 32 {
            let high = self.small(k - 32)?;
            let low = self.small(32)?;
            Some((high << 32) | low)
        } else {
            self.small(k)
        }
    }

    /// 1..=32 bits: one refill always suffices while data remains.
    #[inline]
    fn small(&mut self, k: u32) -> Option<u64> {
        if self.avail < k {
            self.refill();
            if self.avail < k {
                return None;
            }
        }
        let value = self.buf >> (64 - k);
        self.consume(k);
        Some(value)
    }

    fn unread_bits(&self) -> u64 {
        (self.data.len() - self.pos) as u64 * 8 + u64::from(self.avail)
    }
}

/// MSB-first bit writer; `acc` holds fewer than 8 pending bits between calls.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            len: 0,
        }
    }

    /// Appends the low `k` bits of `value`, `k` <= 62.
    #[inline]
    fn bits(&mut self, value: u64, k: u32) {
        if k > 32 {
            self.put(value >> 32, k - 32);
            self.put(value & low_mask(32), 32);
        } else {
            self.put(value, k);
        }
    }

    #[inline]
    fn unary(&mut self, mut q: u64) {
        while q >= 32 {
            self.put(low_mask(32), 32);
            q -= 32;
        }
        // q ones and the terminating zero.
        self.put(low_mask(q as u32) << 1, q as u32 + 1);
    }

    /// `k` <= 56, so `len + k` fits the accumulator.
    #[inline]
    fn put(&mut self, value: u64, k: u32) {
        self.acc = (self.acc << k) | value;
        self.len += k;
        while self.len >= 8 {
            self.len -= 8;
            self.out.push((self.acc >> self.len) as u8);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push((self.acc << (8 - self.len)) as u8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_reader_reads_what_the_writer_wrote() {
        let fields: Vec<(u64, u32)> = (1..=62u32)
            .map(|k| (0x9E37_79B9_7F4A_7C15u64 & low_mask(k), k))
            .collect();
        let mut writer = BitWriter::with_capacity(0);
        for &(value, k) in &fields {
            writer.bits(value, k);
            writer.unary(u64::from(k) * 3);
        }
        let data = writer.finish();
        let mut reader = BitReader::new(&data);
        for &(value, k) in &fields {
            assert_eq!(reader.bits(k), Some(value), "{k} bits");
            assert_eq!(reader.unary(), Some(u64::from(k) * 3));
        }
        assert!(reader.unread_bits() < 8);
    }

    #[test]
    fn a_huge_quotient_is_refused_not_looped_over() {
        let mut bytes = GcsFilter::build(&[b"a"], [0; 16], GcsParams { p: 1, m: 2 }).to_bytes();
        bytes.truncate(HEADER_LEN);
        bytes.extend(std::iter::repeat_n(0xff, 1000));
        assert!(matches!(
            GcsFilter::from_bytes(&bytes),
            Err(GcsError::Truncated { index: 0, .. } | GcsError::ValueOutOfRange { index: 0 })
        ));
    }
}
