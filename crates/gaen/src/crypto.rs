//! The Exposure Notification key schedule: TEK → RPIK → RPIs, TEK → AEMK → AEMs.
//!
//! HKDF-SHA256 with an empty salt and a 16-byte output is computed directly on SHA-256
//! compression blocks: the salt's HMAC pad states are prepared once, every message fits one
//! block, so a key costs six compressions (SHA-NI when the CPU has it) and no buffering. AES-CTR
//! over 4 bytes is one AES block, so the AEM needs no stream cipher either.

use std::sync::LazyLock;

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};

use crate::key::Tek;
use crate::time::{INTERVALS_PER_DAY, IntervalNumber};

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 states after absorbing an HMAC key's inner and outer pad blocks.
struct HmacPads {
    inner: [u32; 8],
    outer: [u32; 8],
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

impl HmacPads {
    fn new(key: &[u8; 32]) -> Self {
        let pad = |byte: u8| {
            let mut block = [byte; 64];
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut state = SHA256_IV;
            compress(&mut state, &block);
            state
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// HMAC-SHA256 of a message shorter than 56 bytes.
    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = finish(self.inner, message);
        finish(self.outer, &inner)
    }
}

/// Absorbs the final block (`tail` after one 64-byte pad block) and returns the digest.
fn finish(mut state: [u32; 8], tail: &[u8]) -> [u8; 32] {
    debug_assert!(tail.len() < 56, "one-block messages only");
    let mut block = [0u8; 64];
    block[..tail.len()].copy_from_slice(tail);
    block[tail.len()] = 0x80;
    block[56..].copy_from_slice(&((64 + tail.len() as u64) * 8).to_be_bytes());
    compress(&mut state, &block);
    let mut digest = [0u8; 32];
    for (chunk, word) in digest.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// HMAC pads of HKDF's default salt (32 zero bytes).
static ZERO_SALT: LazyLock<HmacPads> = LazyLock::new(|| HmacPads::new(&[0u8; 32]));

/// HKDF-Extract with the empty salt, returned as HMAC pads of the PRK for expanding.
fn extract(tek: &Tek) -> HmacPads {
    HmacPads::new(&ZERO_SALT.mac(tek.as_bytes()))
}

/// HKDF-Expand for L = 16: the first half of T(1) = HMAC(PRK, info ‖ 0x01).
fn expand16(prk: &HmacPads, info: &[u8; 7]) -> [u8; 16] {
    let mut message = [1u8; 8];
    message[..7].copy_from_slice(info);
    let t1 = prk.mac(&message);
    let mut out = [0u8; 16];
    out.copy_from_slice(&t1[..16]);
    out
}

/// A Rolling Proximity Identifier, broadcast for one 10-minute interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rpi(pub [u8; 16]);

/// Associated Encrypted Metadata: 4 bytes broadcast next to an RPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aem(pub [u8; 4]);

/// Decrypted AEM: byte 0 is the version, byte 1 the TX power (signed dBm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Metadata(pub [u8; 4]);

/// RPIK with its AES key schedule expanded, ready to encrypt many intervals.
#[derive(Clone)]
pub struct RpiKey {
    bytes: [u8; 16],
    cipher: Aes128,
}

/// AEMK with its AES key schedule expanded.
#[derive(Clone)]
pub struct AemKey {
    bytes: [u8; 16],
    cipher: Aes128,
}

/// "EN-RPI" ‖ 0x00 × 6 ‖ ENIN (u32 little-endian), built as one 128-bit store.
fn padded_data(interval: IntervalNumber) -> [u8; 16] {
    const PREFIX: u128 = u128::from_le_bytes(*b"EN-RPI\0\0\0\0\0\0\0\0\0\0");
    (PREFIX | (u128::from(interval.get()) << 96)).to_le_bytes()
}

impl Tek {
    pub fn rpi_key(&self) -> RpiKey {
        RpiKey::from_bytes(expand16(&extract(self), b"EN-RPIK"))
    }

    pub fn aem_key(&self) -> AemKey {
        AemKey::from_bytes(expand16(&extract(self), b"EN-AEMK"))
    }

    /// Both keys from one HKDF-Extract.
    pub fn derive_keys(&self) -> (RpiKey, AemKey) {
        let prk = extract(self);
        (
            RpiKey::from_bytes(expand16(&prk, b"EN-RPIK")),
            AemKey::from_bytes(expand16(&prk, b"EN-AEMK")),
        )
    }
}

impl RpiKey {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self {
            bytes,
            cipher: Aes128::new(&bytes.into()),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    pub fn rpi(&self, interval: IntervalNumber) -> Rpi {
        let mut block = GenericArray::from(padded_data(interval));
        self.cipher.encrypt_block(&mut block);
        Rpi(block.into())
    }

    /// The fast path: RPIs of `count` (at most 144) consecutive intervals from `first`,
    /// encrypted as one batch so AES-NI pipelines them.
    pub fn rpis(&self, first: IntervalNumber, count: u32) -> RpiBatch {
        let mut batch = RpiBatch::new();
        self.rpis_into(first, count, &mut batch);
        batch
    }

    /// [`RpiKey::rpis`] into a reused buffer, for loops over many keys. Intervals past
    /// `u32::MAX` do not exist and are left out.
    pub fn rpis_into(&self, first: IntervalNumber, count: u32, batch: &mut RpiBatch) {
        let remaining = u64::from(u32::MAX) - u64::from(first.get()) + 1;
        let count = u64::from(count.min(INTERVALS_PER_DAY)).min(remaining) as usize;
        for (offset, block) in batch.blocks[..count].iter_mut().enumerate() {
            *block = padded_data(IntervalNumber::new(first.get() + offset as u32)).into();
        }
        self.cipher.encrypt_blocks(&mut batch.blocks[..count]);
        batch.first = first;
        batch.len = count;
    }
}

type Block = GenericArray<u8, aes::cipher::consts::U16>;

/// Up to one day of RPIs for consecutive intervals, without heap allocation.
pub struct RpiBatch {
    first: IntervalNumber,
    len: usize,
    blocks: [Block; INTERVALS_PER_DAY as usize],
}

impl Default for RpiBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RpiBatch {
    pub fn new() -> Self {
        Self {
            first: IntervalNumber::new(0),
            len: 0,
            blocks: [Block::default(); INTERVALS_PER_DAY as usize],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `offset`-th `(interval, rpi)`; panics past [`RpiBatch::len`].
    pub fn get(&self, offset: usize) -> (IntervalNumber, Rpi) {
        assert!(offset < self.len, "offset {offset} past {} RPIs", self.len);
        (
            IntervalNumber::new(self.first.get() + offset as u32),
            Rpi(self.blocks[offset].into()),
        )
    }

    /// `(interval, rpi)` pairs in interval order.
    pub fn iter(&self) -> impl Iterator<Item = (IntervalNumber, Rpi)> + '_ {
        self.blocks[..self.len]
            .iter()
            .enumerate()
            .map(|(offset, block)| {
                (
                    IntervalNumber::new(self.first.get() + offset as u32),
                    Rpi((*block).into()),
                )
            })
    }
}

impl AemKey {
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self {
            bytes,
            cipher: Aes128::new(&bytes.into()),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }

    /// First 4 bytes of the AES-CTR keystream with IV = RPI.
    fn keystream(&self, rpi: &Rpi) -> [u8; 4] {
        let mut block = GenericArray::from(rpi.0);
        self.cipher.encrypt_block(&mut block);
        [block[0], block[1], block[2], block[3]]
    }

    pub fn encrypt(&self, rpi: &Rpi, metadata: Metadata) -> Aem {
        let ks = self.keystream(rpi);
        Aem(std::array::from_fn(|i| metadata.0[i] ^ ks[i]))
    }

    pub fn decrypt(&self, rpi: &Rpi, aem: Aem) -> Metadata {
        let ks = self.keystream(rpi);
        Metadata(std::array::from_fn(|i| aem.0[i] ^ ks[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_agrees_with_single_interval_path() {
        let key = Tek([7; 16]).rpi_key();
        let first = IntervalNumber::new(2_700_000);
        let batch = key.rpis(first, 144);
        assert_eq!(batch.len(), 144);
        for (interval, rpi) in batch.iter() {
            assert_eq!(key.rpi(interval), rpi);
        }
    }

    #[test]
    fn batch_stops_at_the_last_interval_number() {
        let key = Tek([1; 16]).rpi_key();
        let batch = key.rpis(IntervalNumber::new(u32::MAX - 9), 144);
        assert_eq!(batch.len(), 10);
        assert_eq!(key.rpis(IntervalNumber::new(0), 144).len(), 144);
        assert_eq!(key.rpis(IntervalNumber::new(u32::MAX), 144).len(), 1);
    }

    #[test]
    fn aem_round_trips() {
        let (rpi_key, aem_key) = Tek([9; 16]).derive_keys();
        let rpi = rpi_key.rpi(IntervalNumber::new(5));
        let metadata = Metadata([0x40, 0xf6, 0, 0]);
        let aem = aem_key.encrypt(&rpi, metadata);
        assert_ne!(aem.0, metadata.0);
        assert_eq!(aem_key.decrypt(&rpi, aem), metadata);
    }
}
