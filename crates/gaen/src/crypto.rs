//! The Exposure Notification key schedule: TEK → RPIK → RPIs, TEK → AEMK → AEMs.
//!
//! HKDF-SHA256 with an empty salt and a 16-byte output is computed directly with HMAC: the
//! salt's HMAC state is prepared once, so a key costs two HMACs instead of HKDF's four key
//! set-ups. AES-CTR over 4 bytes is one AES block, so the AEM needs no stream cipher either.

use std::sync::LazyLock;

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::key::Tek;
use crate::time::{INTERVALS_PER_DAY, IntervalNumber};

type HmacSha256 = Hmac<Sha256>;

/// HMAC state keyed with HKDF's default salt (32 zero bytes), cloned per key.
static ZERO_SALT: LazyLock<HmacSha256> = LazyLock::new(|| {
    <HmacSha256 as Mac>::new_from_slice(&[0u8; 32]).expect("HMAC takes any key length")
});

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

/// HKDF-Extract with the empty salt.
fn extract(tek: &Tek) -> [u8; 32] {
    let mut mac = ZERO_SALT.clone();
    mac.update(tek.as_bytes());
    mac.finalize().into_bytes().into()
}

/// HKDF-Expand for L = 16: the first half of T(1) = HMAC(PRK, info ‖ 0x01).
fn expand16(prk: &[u8; 32], info: &[u8]) -> [u8; 16] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(prk).expect("HMAC takes any key length");
    mac.update(info);
    mac.update(&[1]);
    let t1 = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&t1[..16]);
    out
}

fn padded_data(interval: IntervalNumber) -> [u8; 16] {
    let mut block = [0u8; 16];
    block[..6].copy_from_slice(b"EN-RPI");
    block[12..].copy_from_slice(&interval.get().to_le_bytes());
    block
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
    /// encrypted as one batch so AES-NI pipelines them. Intervals past `u32::MAX` are skipped.
    pub fn rpis(&self, first: IntervalNumber, count: u32) -> RpiBatch {
        let count = count.min(INTERVALS_PER_DAY).min(u32::MAX - first.get() + 1) as usize;
        let mut blocks = [GenericArray::default(); INTERVALS_PER_DAY as usize];
        for (offset, block) in blocks[..count].iter_mut().enumerate() {
            *block = padded_data(IntervalNumber::new(first.get() + offset as u32)).into();
        }
        self.cipher.encrypt_blocks(&mut blocks[..count]);
        RpiBatch {
            first,
            len: count,
            blocks,
        }
    }
}

/// Up to one day of RPIs for consecutive intervals, without heap allocation.
pub struct RpiBatch {
    first: IntervalNumber,
    len: usize,
    blocks: [GenericArray<u8, aes::cipher::consts::U16>; INTERVALS_PER_DAY as usize],
}

impl RpiBatch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
