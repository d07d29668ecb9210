//! One-time codes in three formats, and the keyed hashes under which codes, tokens and
//! addresses are stored: a leaked database reveals no usable code.
//!
//! - `short`: 8 digits, as COVID Shield (typed in from a phone call);
//! - `long`: 16 characters `[a-z0-9]`, for SMS links;
//! - `card`: 128 bits in an alphabet without 0/O or 1/I/l, in groups of 4, ending in a Luhn
//!   mod 32 check character, for printed sheets handed out by providers. The check catches
//!   every mistyped character and every swap of neighbours except 2↔Z.

use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::Digest;

/// The card alphabet: digits 2-9 and A-Z without I and O.
const CARD_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// 26 characters of 5 bits carry the 128 random bits (130 bits, top two zero).
const CARD_DATA_CHARS: usize = 26;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeFormat {
    Short,
    Long,
    Card,
    /// A TAN of external origin: the health authority generated it and imported a list of
    /// them ([`normalize_tan`]). Never issued here; redeemed for encounter-token nonces only.
    Tan,
}

impl CodeFormat {
    /// The formats providers can have issued.
    pub const ALL: [Self; 3] = [Self::Short, Self::Long, Self::Card];

    pub fn name(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Long => "long",
            Self::Card => "card",
            Self::Tan => "tan",
        }
    }

    /// An issuable format by name (`tan` is not one).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == text)
    }

    /// Any stored format by name, TANs included.
    pub fn from_stored(text: &str) -> Option<Self> {
        Self::parse(text).or((text == "tan").then_some(Self::Tan))
    }
}

/// How long codes of each format stay redeemable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodePolicy {
    pub short_ttl_seconds: u64,
    pub long_ttl_seconds: u64,
    pub card_ttl_seconds: u64,
}

impl Default for CodePolicy {
    fn default() -> Self {
        Self {
            short_ttl_seconds: 10 * 60,
            long_ttl_seconds: 24 * 3600,
            card_ttl_seconds: 2 * 86_400,
        }
    }
}

impl CodePolicy {
    pub fn ttl(&self, format: CodeFormat) -> u64 {
        match format {
            CodeFormat::Short => self.short_ttl_seconds,
            CodeFormat::Long => self.long_ttl_seconds,
            CodeFormat::Card => self.card_ttl_seconds,
            CodeFormat::Tan => MAX_TAN_TTL_SECONDS,
        }
    }
}

/// The longest a TAN list may stay valid after its import.
pub const MAX_TAN_TTL_SECONDS: u64 = 90 * 86_400;
/// TANs shorter than this are too easy to guess.
pub const MIN_TAN_CHARS: usize = 8;

/// A freshly generated code, shown once to the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimeCode {
    pub format: CodeFormat,
    /// As printed: `04718264`, `k3x9…`, or `ABCD-EFGH-…`.
    pub display: String,
}

impl OneTimeCode {
    pub fn generate(format: CodeFormat, rng: &mut impl CryptoRngCore) -> Self {
        let display = match format {
            // Uniform in [0, 10^8): reject the top of the u32 range to avoid modulo bias.
            CodeFormat::Short => loop {
                let value = rng.next_u32();
                if value < 4_200_000_000 {
                    break format!("{:08}", value % 100_000_000);
                }
            },
            CodeFormat::Long => {
                const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
                let mut out = String::with_capacity(16);
                while out.len() < 16 {
                    let byte = (rng.next_u32() & 0xff) as u8;
                    // 252 = 7 * 36: reject above to stay uniform.
                    if byte < 252 {
                        out.push(ALPHABET[(byte % 36) as usize] as char);
                    }
                }
                out
            }
            // TANs come from the health authority; generating one here is for tests and
            // demos: 16 card characters (80 bits).
            CodeFormat::Tan => {
                let mut bytes = [0u8; 10];
                rng.fill_bytes(&mut bytes);
                let value = bytes.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
                (0..16)
                    .map(|i| CARD_ALPHABET[((value >> (5 * i)) & 31) as usize] as char)
                    .collect()
            }
            CodeFormat::Card => {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                let value = u128::from_be_bytes(bytes);
                let mut chars: Vec<u8> = (0..CARD_DATA_CHARS)
                    .rev()
                    .map(|i| CARD_ALPHABET[((value >> (5 * i)) & 31) as usize])
                    .collect();
                chars.push(luhn32_check(&chars).expect("alphabet characters"));
                chars
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).expect("ASCII"))
                    .collect::<Vec<_>>()
                    .join("-")
            }
        };
        Self { format, display }
    }
}

fn card_value(c: u8) -> Option<u32> {
    CARD_ALPHABET.iter().position(|a| *a == c).map(|p| p as u32)
}

/// Luhn mod 32 check character over card characters; `None` for a foreign character.
fn luhn32_check(chars: &[u8]) -> Option<u8> {
    let mut sum = 0u32;
    for (i, c) in chars.iter().rev().enumerate() {
        let mut v = card_value(*c)?;
        if i % 2 == 0 {
            v *= 2;
            v = v / 32 + v % 32;
        }
        sum += v;
    }
    Some(CARD_ALPHABET[((32 - sum % 32) % 32) as usize])
}

/// What a user typed, normalised: separators and spaces removed, upper case. `Err` explains
/// why it cannot be any code (so a typo is reported before it counts as a wrong guess).
pub fn normalize_code(typed: &str) -> Result<String, &'static str> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if code.is_empty() {
        return Err("the code is empty");
    }
    if !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("a code has only letters and digits");
    }
    if code.len() == CARD_DATA_CHARS + 1 && !code.bytes().all(|b| b.is_ascii_digit()) {
        let (data, check) = code.as_bytes().split_at(CARD_DATA_CHARS);
        match luhn32_check(data) {
            Some(expected) if expected == check[0] => {}
            Some(_) => return Err("the code's check character does not match: please re-type it"),
            None => return Err("a printed code never contains 0, 1, I or O"),
        }
    }
    if code.len() > 64 {
        return Err("a code is at most 64 characters");
    }
    Ok(code)
}

/// A TAN as typed or as listed in an import, normalised like a code (separators and spaces
/// removed, upper case) but without a check character: the authority's TANs have their own
/// format. `Err` says why it cannot be a TAN.
pub fn normalize_tan(typed: &str) -> Result<String, &'static str> {
    let tan: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !tan.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("a TAN has only letters and digits");
    }
    if tan.len() < MIN_TAN_CHARS {
        return Err("a TAN has at least 8 letters or digits");
    }
    if tan.len() > 64 {
        return Err("a TAN is at most 64 characters");
    }
    Ok(tan)
}

/// HMAC-SHA256 under the server secret, with a distinct label per kind of value.
#[derive(Clone)]
pub struct KeyedHasher {
    mac: Hmac<Sha256>,
}

impl KeyedHasher {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length"),
        }
    }

    fn hash(&self, label: &[u8], value: &[u8]) -> Digest {
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.update(&[0]);
        mac.update(value);
        Digest(mac.finalize().into_bytes().into())
    }

    /// Of a normalised code (see [`normalize_code`]).
    pub fn code(&self, normalized: &str) -> Digest {
        self.hash(b"code", normalized.as_bytes())
    }

    /// Of a bearer token (provider API token or upload token).
    pub fn token(&self, token: &str) -> Digest {
        self.hash(b"token", token.as_bytes())
    }

    /// Of a confidential-matching test id (`confidential::test_id`).
    pub fn test(&self, test_id: &[u8; 32]) -> Digest {
        self.hash(b"test", test_id)
    }

    /// Of an encounter-token upload nonce.
    pub fn nonce(&self, nonce: &[u8; 32]) -> Digest {
        self.hash(b"nonce", nonce)
    }

    /// The X25519 secret of a COVID Shield claim's server key, derived rather than stored.
    pub fn box_secret(&self, claim: &[u8; 16]) -> [u8; 32] {
        self.hash(b"covidshield-box", claim).0
    }

    /// Of a client address, for brute-force counters that must not keep addresses.
    pub fn address(&self, address: &str) -> Digest {
        self.hash(b"address", address.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn formats_have_their_shapes() {
        for _ in 0..200 {
            let short = OneTimeCode::generate(CodeFormat::Short, &mut OsRng).display;
            assert!(
                short.len() == 8 && short.bytes().all(|b| b.is_ascii_digit()),
                "{short}"
            );
            let long = OneTimeCode::generate(CodeFormat::Long, &mut OsRng).display;
            assert!(
                long.len() == 16
                    && long
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
            let card = OneTimeCode::generate(CodeFormat::Card, &mut OsRng).display;
            assert_eq!(card.len(), 27 + 6, "{card}");
            assert!(!card.contains(['0', '1', 'I', 'O', 'l']), "{card}");
            assert_eq!(normalize_code(&card).map(|c| c.len()), Ok(27));
        }
    }

    #[test]
    fn card_check_character_catches_typos_and_swaps() {
        let card = OneTimeCode::generate(CodeFormat::Card, &mut OsRng).display;
        let normalized = normalize_code(&card).expect("valid");
        let bytes = normalized.as_bytes();
        // Every single-character substitution is caught.
        for i in 0..bytes.len() {
            for &replacement in CARD_ALPHABET {
                if replacement == bytes[i] {
                    continue;
                }
                let mut typo = bytes.to_vec();
                typo[i] = replacement;
                assert!(normalize_code(std::str::from_utf8(&typo).expect("ascii")).is_err());
            }
        }
        // Every swap of two different adjacent characters is caught, except 2<->Z (values 0
        // and 31), the one pair Luhn mod N cannot see.
        for i in 0..bytes.len() - 1 {
            let pair = [bytes[i], bytes[i + 1]];
            if pair[0] != pair[1] && pair != *b"2Z" && pair != *b"Z2" {
                let mut swapped = bytes.to_vec();
                swapped.swap(i, i + 1);
                assert!(normalize_code(std::str::from_utf8(&swapped).expect("ascii")).is_err());
            }
        }
        // Lower case and spaces are fine.
        assert_eq!(
            normalize_code(&card.to_lowercase().replace('-', " ")),
            Ok(normalized)
        );
    }

    #[test]
    fn hashes_depend_on_secret_and_label() {
        let a = KeyedHasher::new(b"secret-a");
        let b = KeyedHasher::new(b"secret-b");
        assert_ne!(a.code("12345678"), b.code("12345678"));
        assert_ne!(a.code("12345678"), a.token("12345678"));
        assert_eq!(a.code("12345678"), a.code("12345678"));
    }
}
