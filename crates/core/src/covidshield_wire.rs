//! COVID Shield's protobuf wire messages (`../shared/proto/covidshield.proto`), written by hand
//! for prost, shared by the server's compatibility surface and the phone-side client.
//!
//! Request fields the .proto marks `required` are `Option` here, so that the server can answer
//! a missing field with the protocol's own error code instead of a parse failure. Pure data:
//! no I/O, no crypto (the NaCl box lives with the callers).

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyClaimRequest {
    #[prost(string, optional, tag = "1")]
    pub one_time_code: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub app_public_key: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyClaimResponse {
    #[prost(int32, optional, tag = "1")]
    pub error: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub server_public_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "3")]
    pub tries_remaining: Option<u32>,
    #[prost(message, optional, tag = "4")]
    pub remaining_ban_duration: Option<Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedUploadRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub server_public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub app_public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub nonce: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub payload: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedUploadResponse {
    #[prost(int32, required, tag = "1")]
    pub error: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Upload {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub keys: Vec<TemporaryExposureKey>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKey {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key_data: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "2")]
    pub transmission_risk_level: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub rolling_start_interval_number: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub rolling_period: Option<i32>,
}

/// `KeyClaimResponse.ErrorCode` names by number (NONE is 0).
pub const CLAIM_ERROR_NAMES: [&str; 6] = [
    "NONE",
    "UNKNOWN",
    "INVALID_ONE_TIME_CODE",
    "SERVER_ERROR",
    "INVALID_KEY",
    "TEMPORARY_BAN",
];

/// The name of a `KeyClaimResponse.ErrorCode`, or `None` for a number the .proto lacks.
pub fn claim_error_name(code: i32) -> Option<&'static str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| CLAIM_ERROR_NAMES.get(i).copied())
}

/// The name of an `EncryptedUploadResponse.ErrorCode`, or `None` for a number the .proto lacks
/// (9 is unassigned).
pub fn upload_error_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "NONE",
        1 => "UNKNOWN",
        2 => "INVALID_KEYPAIR",
        3 => "DECRYPTION_FAILED",
        4 => "INVALID_PAYLOAD",
        5 => "SERVER_ERROR",
        6 => "INVALID_CRYPTO_PARAMETERS",
        7 => "TOO_MANY_KEYS",
        8 => "INVALID_TIMESTAMP",
        10 => "INVALID_ROLLING_PERIOD",
        11 => "INVALID_KEY_DATA",
        12 => "INVALID_ROLLING_START_INTERVAL_NUMBER",
        13 => "INVALID_TRANSMISSION_RISK_LEVEL",
        14 => "NO_KEYS_IN_PAYLOAD",
        _ => return None,
    })
}
