//! The encounter-token protocol's shared vocabulary: tokens, their published hashes, the
//! notification level and the coarse buckets an encounter is described by.
//!
//! Server and phone both use these types, so `H(token)` and the bucket codes are computed in
//! one place and agree byte for byte. How tokens are derived (X25519 between two phones'
//! ephemeral keys) lives in the client: the server never sees a key, only hashes and, for a
//! chained upload, one check-token preimage. See `docs/encounter-tokens.md`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::Region;

/// Domain separation for [`Token::hash`], so a token's hash cannot collide with any other
/// SHA-256 use in the system.
const HASH_LABEL: &[u8] = b"confidant/encounter-token/v1\0";

/// A report/check token: 32 bytes only the two phones of an encounter can compute.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Token(pub [u8; 32]);

pub use crate::ids::TokenHash;

impl Token {
    /// The first 16 bytes of SHA-256("confidant/encounter-token/v1\0" ‖ token).
    pub fn hash(&self) -> TokenHash {
        let digest = Sha256::new()
            .chain_update(HASH_LABEL)
            .chain_update(self.0)
            .finalize();
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&digest[..16]);
        TokenHash(hash)
    }

    /// Lower-case hex, 64 characters (a chained upload reveals a preimage this way).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Exactly 64 hex characters, either case; anything else is `None`.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

/// Notification level: 0 = reported with a TAN, n+1 = chained from a proven level-n encounter.
pub type Level = u8;

/// The highest level any deployment may configure (a chain longer than this notifies people
/// who never met anyone infected).
pub const LEVEL_CEILING: Level = 8;

/// One uploaded token hash as stored: the UTC day of the encounter and the coarse area it is
/// published in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadedToken {
    pub hash: TokenHash,
    /// UTC day number (unix seconds / 86 400).
    pub day: u32,
    pub area: Region,
}

/// A coarse area: the first `chars` letters or digits of a postal code, upper case. `Err`
/// says what is accepted. Coarsening happens here so that no finer location is ever stored.
pub fn coarse_area(postal: &str, chars: usize) -> Result<Region, String> {
    let cleaned: String = postal
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !cleaned.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("an area is a postal code or its prefix: letters and digits only".into());
    }
    if cleaned.len() < chars {
        return Err(format!(
            "an area needs at least its first {chars} postal-code characters, got {}",
            cleaned.len()
        ));
    }
    Region::try_from(cleaned[..chars].to_owned())
}

/// One research record, from an encounter proven by its preimage: no identifier, no time
/// finer than the day. Stored only as counts per cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResearchCell {
    pub day: u32,
    /// [`DurationBucket::code`].
    pub duration: u8,
    /// [`AttenuationBucket::code`].
    pub attenuation: u8,
    pub level: Level,
}

/// Duration buckets (minutes): <5 is not an encounter; 5–10, 10–15, 15–30, 30 (a split long
/// contact).
///
/// Codes on the wire and at rest: 0, 1, 2, 3 in this order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum DurationBucket {
    /// [5, 10) minutes.
    Min5To10,
    /// [10, 15) minutes.
    Min10To15,
    /// [15, 30) minutes.
    Min15To30,
    /// 30 minutes or more.
    Min30,
}

impl DurationBucket {
    const ALL: [Self; 4] = [
        Self::Min5To10,
        Self::Min10To15,
        Self::Min15To30,
        Self::Min30,
    ];

    /// `None` below 5 minutes: too short to be an encounter.
    pub fn from_seconds(seconds: u64) -> Option<Self> {
        match seconds / 60 {
            0..5 => None,
            5..10 => Some(Self::Min5To10),
            10..15 => Some(Self::Min10To15),
            15..30 => Some(Self::Min15To30),
            _ => Some(Self::Min30),
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// Attenuation buckets (dB, lower is closer): ≤55 near, ≤63 medium, ≤73 far, else very far.
///
/// Codes on the wire and at rest: 0, 1, 2, 3 in this order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum AttenuationBucket {
    Near,
    Medium,
    Far,
    VeryFar,
}

impl AttenuationBucket {
    const ALL: [Self; 4] = [Self::Near, Self::Medium, Self::Far, Self::VeryFar];

    pub fn from_db(attenuation_db: u8) -> Self {
        match attenuation_db {
            0..=55 => Self::Near,
            56..=63 => Self::Medium,
            64..=73 => Self::Far,
            _ => Self::VeryFar,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_labelled_truncated_sha256() {
        let token = Token([0x5a; 32]);
        let mut input = b"confidant/encounter-token/v1\0".to_vec();
        input.extend_from_slice(&[0x5a; 32]);
        assert_eq!(token.hash().0[..], Sha256::digest(&input)[..16]);
        assert_ne!(token.hash(), Token([0x5b; 32]).hash());
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let token = Token(core::array::from_fn(|i| i as u8 * 7));
        assert_eq!(Token::from_hex(&token.to_hex()), Some(token));
        assert_eq!(Token::from_hex(&token.to_hex().to_uppercase()), Some(token));
        let hash = token.hash();
        assert_eq!(hash.to_hex().len(), 32);
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash));
        for bad in ["", "00", &"0".repeat(31), &"0".repeat(34), &"g".repeat(32)] {
            assert_eq!(TokenHash::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(Token::from_hex(&hash.to_hex()), None);
        assert_eq!(Token::from_hex("é"), None);
    }

    #[test]
    fn duration_buckets() {
        let cases = [
            (0, None),
            (299, None),
            (300, Some(DurationBucket::Min5To10)),
            (599, Some(DurationBucket::Min5To10)),
            (600, Some(DurationBucket::Min10To15)),
            (899, Some(DurationBucket::Min10To15)),
            (900, Some(DurationBucket::Min15To30)),
            (1799, Some(DurationBucket::Min15To30)),
            (1800, Some(DurationBucket::Min30)),
            (u64::MAX, Some(DurationBucket::Min30)),
        ];
        for (seconds, bucket) in cases {
            assert_eq!(DurationBucket::from_seconds(seconds), bucket, "{seconds} s");
        }
        for code in 0..=255u8 {
            match DurationBucket::from_code(code) {
                Some(bucket) => assert_eq!(bucket.code(), code),
                None => assert!(code >= 4),
            }
        }
        assert_eq!(DurationBucket::Min30.code(), 3);
    }

    #[test]
    fn attenuation_buckets() {
        let cases = [
            (0, AttenuationBucket::Near),
            (55, AttenuationBucket::Near),
            (56, AttenuationBucket::Medium),
            (63, AttenuationBucket::Medium),
            (64, AttenuationBucket::Far),
            (73, AttenuationBucket::Far),
            (74, AttenuationBucket::VeryFar),
            (255, AttenuationBucket::VeryFar),
        ];
        for (db, bucket) in cases {
            assert_eq!(AttenuationBucket::from_db(db), bucket, "{db} dB");
        }
        for code in 0..=255u8 {
            match AttenuationBucket::from_code(code) {
                Some(bucket) => assert_eq!(bucket.code(), code),
                None => assert!(code >= 4),
            }
        }
        assert_eq!(AttenuationBucket::Near.code(), 0);
    }
}
