//! Identifiers and keyed digests, parsed once at the edge.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! hex_bytes {
    ($name:ident, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// `None` unless `text` is exactly the right number of hex digits.
            pub fn from_hex(text: &str) -> Option<Self> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text, &mut bytes).ok()?;
                Some(Self(bytes))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::from_hex(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("expected {} hex digits", $len * 2))
                })
            }
        }
    };
}

hex_bytes!(
    ProviderId,
    8,
    "A healthcare provider (lab, doctor, test centre)."
);
hex_bytes!(
    ClaimId,
    16,
    "An upload authorisation obtained by redeeming a code."
);
hex_bytes!(
    TrackingId,
    16,
    "One accepted submission, as returned to the app."
);
hex_bytes!(
    Digest,
    32,
    "A keyed hash (HMAC-SHA256 under the server secret)."
);
hex_bytes!(
    KeyData,
    16,
    "A diagnosis key's 16 bytes (a TEK once it is published)."
);
hex_bytes!(Key32, 32, "An X25519 public or secret key.");
hex_bytes!(
    TokenHash,
    16,
    "H(encounter token): what is uploaded and published (`encounter`)."
);
hex_bytes!(
    AdminTokenId,
    8,
    "An operator's admin API token (its public half: the secret is stored only as a hash)."
);

/// A region code such as `DE` or COVID Shield's `302`: 1 to 16 of `[A-Za-z0-9-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Region {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = (1..=16).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if valid {
            Ok(Self(text))
        } else {
            Err(format!(
                "a region is 1 to 16 letters, digits or '-', e.g. DE or 302; got {text:?}"
            ))
        }
    }
}

impl From<Region> for String {
    fn from(region: Region) -> String {
        region.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}
