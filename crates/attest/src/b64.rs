//! Serde helpers: bytes as standard, padded base64 strings (RFC 4648 §4). Decoding is strict,
//! so that parsing and re-encoding give back the same text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn decode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    STANDARD.decode(text.as_bytes()).map_err(|e| {
        D::Error::custom(format_args!(
            "invalid base64 ({e}); accepted: standard base64 with padding"
        ))
    })
}

/// `#[serde(with = "b64::vec")]` for `Vec<u8>`.
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        decode(deserializer)
    }
}

/// `#[serde(with = "b64::array")]` for `[u8; N]`: the decoded length must be exactly `N`.
pub mod array {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let bytes = decode(deserializer)?;
        let len = bytes.len();
        bytes.try_into().map_err(|_| {
            D::Error::custom(format_args!(
                "{len} bytes in base64; accepted: exactly {N} bytes"
            ))
        })
    }
}
