//! Request bodies as the server parses them: the native and admin APIs' JSON (errors are a
//! [`Problem`]) and COVID Shield's protobuf (errors are its own codes). Pure (no state, no
//! I/O), so the handlers and the fuzz targets in `fuzz/` run exactly the same code.
//!
//! Only what a handler checked before touching state lives here: anything that depends on
//! the store, the lockout or chaff stays in the handler, in its original order.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confidant_core::corrections::Scope;
use confidant_core::covidshield_wire as proto;
use confidant_core::rules::{MAX_KEYS_PER_REQUEST, RawKey};
use confidant_core::{CodeFormat, Key32, KeyData, Region};
use prost::Message;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use crate::covidshield::{ClaimError, UploadError};
use crate::problem::Problem;

/// How far a COVID Shield upload's timestamp may be from the server's clock.
const TIMESTAMP_TOLERANCE_SECONDS: u64 = 3600;

/// Most keys in one de-registration.
pub const MAX_DEREGISTER_KEYS: usize = 1000;
/// Longest provider name and token label.
pub const MAX_NAME_CHARS: usize = 200;

/// Parses a JSON object body; an empty one is `empty` when given.
pub fn json<T: DeserializeOwned>(body: &[u8], empty: Option<T>) -> Result<T, Problem> {
    if body.is_empty()
        && let Some(default) = empty
    {
        return Ok(default);
    }
    // serde would also read a struct from an array of its fields: only objects are asked for.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Problem::bad_request(
            "malformed_json",
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(
            "malformed_json",
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

/// `POST /v1/codes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRequest {
    pub format: CodeFormat,
    pub ttl_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CodeJson {
    format: Option<String>,
    ttl_seconds: Option<u64>,
}

/// `POST /v1/codes`: an empty body asks for a short code with the provider's lifetime.
pub fn code_request(body: &[u8]) -> Result<CodeRequest, Problem> {
    let request: CodeJson = json(body, Some(CodeJson::default()))?;
    let format = match request.format.as_deref() {
        None => CodeFormat::Short,
        Some(name) => CodeFormat::parse(name).ok_or_else(|| {
            Problem::bad_request(
                "unknown_code_format",
                format!("format must be short, long or card; got {name:?}"),
            )
        })?,
    };
    Ok(CodeRequest {
        format,
        ttl_seconds: request.ttl_seconds,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyJson {
    code: String,
}

/// `POST /v1/verify`: the code as typed; the handler normalises it, and answers a malformed
/// one with 400 whether or not the request is chaff.
pub fn verify_request(body: &[u8]) -> Result<String, Problem> {
    json::<VerifyJson>(body, None).map(|request| request.code)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubmissionJson {
    keys: Vec<KeyJson>,
    /// Random filler so uploads of different sizes look alike on the wire; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    padding: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeyJson {
    key: String,
    rolling_start_number: i64,
    rolling_period: Option<i64>,
    transmission_risk: Option<i64>,
}

/// `POST /v1/submissions`: the keys as sent, for `rules::validate_keys`.
pub fn submission_request(body: &[u8]) -> Result<Vec<RawKey>, Problem> {
    let request: SubmissionJson = json(body, None)?;
    request
        .keys
        .iter()
        .enumerate()
        .map(|(index, k)| {
            Ok(RawKey {
                key_data: STANDARD.decode(&k.key).map_err(|_| {
                    Problem::bad_request(
                        "invalid_key",
                        format!("key #{index}: `key` must be base64 (16 bytes)"),
                    )
                    .with("keyIndex", index)
                })?,
                rolling_start: k.rolling_start_number,
                rolling_period: k.rolling_period,
                transmission_risk: k.transmission_risk,
            })
        })
        .collect()
}

/// A mutation's body when all it needs is the reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonJson {
    #[serde(default)]
    reason: String,
}

/// Admin mutations that take only a reason: the reason (empty when not given).
pub fn reason_request(body: &[u8]) -> Result<String, Problem> {
    json::<ReasonJson>(body, None).map(|request| request.reason)
}

/// `POST /admin/v1/providers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    /// Trimmed, not empty; at most [`MAX_NAME_CHARS`] characters as sent.
    pub name: String,
    pub region: Region,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterJson {
    name: String,
    region: String,
    #[serde(default)]
    reason: String,
}

pub fn register_request(body: &[u8]) -> Result<RegisterRequest, Problem> {
    let request: RegisterJson = json(body, None)?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || request.name.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::bad_request(
            "invalid_name",
            format!("a provider name is 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let region = Region::try_from(request.region)
        .map_err(|why| Problem::bad_request("invalid_region", why))?;
    Ok(RegisterRequest {
        name,
        region,
        reason: request.reason,
    })
}

/// 9999-12-31T23:00:00Z, the last hour RFC 3339 can write.
const LATEST_SINCE: u64 = 253_402_297_200;

/// A point in time as RFC 3339 or unix seconds (a number or a string of digits).
#[derive(Deserialize)]
#[serde(untagged)]
enum Since {
    Seconds(u64),
    Text(String),
}

impl Since {
    fn unix_seconds(&self) -> Result<u64, Problem> {
        self.unix_seconds_of("malformed_since", "since")
    }

    /// The time, or `code` naming `field` when it is neither form.
    fn unix_seconds_of(&self, code: &'static str, field: &str) -> Result<u64, Problem> {
        let malformed = || {
            Problem::bad_request(
                code,
                format!(
                    "`{field}` is an RFC 3339 time (e.g. 2027-01-15T08:00:00Z) or unix seconds"
                ),
            )
        };
        match self {
            Since::Seconds(seconds) => Ok(*seconds),
            Since::Text(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse().map_err(|_| malformed())
            }
            // Before 1970 is before anything was submitted: withdraw everything.
            Since::Text(text) => OffsetDateTime::parse(text, &Rfc3339)
                .map(|t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
                .map_err(|_| malformed()),
        }
        // After the year 9999 nothing was submitted either, and it could not be written back.
        .map(|seconds| seconds.min(LATEST_SINCE))
    }
}

/// `POST /admin/v1/providers/{id}/revoke`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeRequest {
    /// `None`: keep what was submitted; `Some(hour)`: withdraw submissions from that UTC hour
    /// (unix seconds / 3600) on.
    pub withdraw_since_hour: Option<u64>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeJson {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    retroactive: bool,
    since: Option<Since>,
}

pub fn revoke_request(body: &[u8]) -> Result<RevokeRequest, Problem> {
    let request: RevokeJson = json(body, None)?;
    let withdraw_since_hour = match (request.retroactive, &request.since) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(Problem::bad_request(
                "since_without_retroactive",
                "`since` only applies to a retroactive revocation: add \"retroactive\": true",
            ));
        }
        (true, None) => Some(0),
        (true, Some(since)) => Some(since.unix_seconds()? / 3600),
    };
    Ok(RevokeRequest {
        withdraw_since_hour,
        reason: request.reason,
    })
}

/// `POST /admin/v1/keys/deregister`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeregisterRequest {
    /// 1 to [`MAX_DEREGISTER_KEYS`].
    pub keys: Vec<KeyData>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterJson {
    keys: Vec<String>,
    #[serde(default)]
    reason: String,
}

pub fn deregister_request(body: &[u8]) -> Result<DeregisterRequest, Problem> {
    let request: DeregisterJson = json(body, None)?;
    if request.keys.is_empty() || request.keys.len() > MAX_DEREGISTER_KEYS {
        return Err(Problem::bad_request(
            "invalid_key_count",
            format!(
                "send 1 to {MAX_DEREGISTER_KEYS} keys per request; got {}",
                request.keys.len()
            ),
        ));
    }
    let keys = request
        .keys
        .iter()
        .enumerate()
        .map(|(index, text)| {
            STANDARD
                .decode(text)
                .ok()
                .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                .map(KeyData)
                .ok_or_else(|| {
                    Problem::bad_request(
                        "invalid_key",
                        format!("key #{index} is not 16 bytes in base64"),
                    )
                    .with("keyIndex", index)
                })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(DeregisterRequest {
        keys,
        reason: request.reason,
    })
}

/// `POST /admin/v1/codes/invalidate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidateCodeRequest {
    /// Normalised (`codes::normalize_code`), ready to hash.
    pub code: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateCodeJson {
    code: String,
    #[serde(default)]
    reason: String,
}

pub fn invalidate_code_request(body: &[u8]) -> Result<InvalidateCodeRequest, Problem> {
    let request: InvalidateCodeJson = json(body, None)?;
    let code = confidant_core::codes::normalize_code(&request.code)
        .map_err(|why| Problem::bad_request("malformed_code", why))?;
    Ok(InvalidateCodeRequest {
        code,
        reason: request.reason,
    })
}

/// `POST /admin/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTokenRequest {
    pub scope: Scope,
    /// Trimmed; at most [`MAX_NAME_CHARS`] characters as sent.
    pub label: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenJson {
    scope: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    reason: String,
}

pub fn create_token_request(body: &[u8]) -> Result<CreateTokenRequest, Problem> {
    let request: CreateTokenJson = json(body, None)?;
    let scope = Scope::parse(&request.scope).ok_or_else(|| {
        Problem::bad_request(
            "invalid_scope",
            format!("scope is read, operate or admin; got {:?}", request.scope),
        )
    })?;
    let label = request.label.trim().to_owned();
    if request.label.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::bad_request(
            "invalid_label",
            format!("a label is at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(CreateTokenRequest {
        scope,
        label,
        reason: request.reason,
    })
}

/// `POST /claim-key` (COVID Shield): the one-time code as typed and the app's public key.
pub fn claim_request(body: &[u8]) -> Result<(String, Key32), ClaimError> {
    let request = proto::KeyClaimRequest::decode(body).map_err(|_| ClaimError::Unknown)?;
    let (Some(code), Some(app_key)) = (request.one_time_code, request.app_public_key) else {
        return Err(ClaimError::Unknown);
    };
    let app_key = <[u8; 32]>::try_from(app_key.as_slice())
        .map(Key32)
        .map_err(|_| ClaimError::InvalidKey)?;
    Ok((code, app_key))
}

/// `POST /upload` (COVID Shield) before the claim is looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedUpload {
    pub server_key: Key32,
    /// Length-checked only after the claim lookup, as COVID Shield orders its checks.
    pub app_key: Vec<u8>,
    /// Likewise.
    pub nonce: Vec<u8>,
    /// A NaCl box of an `Upload`.
    pub payload: Vec<u8>,
}

/// `POST /upload`: every field present and a 32-byte server key.
pub fn upload_request(body: &[u8]) -> Result<SealedUpload, UploadError> {
    let request = proto::EncryptedUploadRequest::decode(body).map_err(|_| UploadError::Unknown)?;
    let (Some(server_key), Some(app_key), Some(nonce), Some(payload)) = (
        request.server_public_key,
        request.app_public_key,
        request.nonce,
        request.payload,
    ) else {
        return Err(UploadError::Unknown);
    };
    let server_key = <[u8; 32]>::try_from(server_key.as_slice())
        .map(Key32)
        .map_err(|_| UploadError::InvalidCryptoParameters)?;
    Ok(SealedUpload {
        server_key,
        app_key,
        nonce,
        payload,
    })
}

/// The decrypted `Upload` of `POST /upload`: the keys as sent, for `rules::validate_keys`,
/// once the payload's shape and timestamp (within an hour of `now`) are right.
pub fn upload_payload(plaintext: &[u8], now: u64) -> Result<Vec<RawKey>, UploadError> {
    let upload = proto::Upload::decode(plaintext).map_err(|_| UploadError::InvalidPayload)?;
    let timestamp = upload.timestamp.ok_or(UploadError::InvalidPayload)?;
    if upload.keys.is_empty() {
        return Err(UploadError::NoKeysInPayload);
    }
    if upload.keys.len() > MAX_KEYS_PER_REQUEST {
        return Err(UploadError::TooManyKeys);
    }
    // The timestamp is the client's: compare without arithmetic that could overflow.
    if timestamp.seconds.abs_diff(now as i64) > TIMESTAMP_TOLERANCE_SECONDS {
        return Err(UploadError::InvalidTimestamp);
    }
    Ok(upload
        .keys
        .into_iter()
        .map(|k| RawKey {
            key_data: k.key_data.unwrap_or_default(),
            rolling_start: k.rolling_start_interval_number.map_or(0, i64::from),
            rolling_period: k.rolling_period.map(i64::from),
            transmission_risk: k.transmission_risk_level.map(i64::from),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_object_is_a_body() {
        // serde alone would read `[null, null]` as CodeJson's two fields.
        for body in [&b"[null, null]"[..], b" [\"long\", 600]", b"null", b"7"] {
            let problem = code_request(body).expect_err("not an object");
            assert_eq!(problem.code, "malformed_json");
        }
        assert!(code_request(b" {\"format\": \"long\"}").is_ok());
        assert!(code_request(b"").is_ok());
    }

    #[test]
    fn since_before_1970_is_everything_and_after_9999_is_kept_writable() {
        let hour = |since: &str| {
            revoke_request(format!(r#"{{"retroactive": true, "since": {since}}}"#).as_bytes())
                .expect("valid")
                .withdraw_since_hour
        };
        assert_eq!(hour(r#""1960-01-01T00:00:00Z""#), Some(0));
        assert_eq!(
            hour(r#""2027-01-15T08:30:00Z""#),
            Some(1_800_000_000 / 3600)
        );
        assert_eq!(hour("18446744073709551614"), Some(LATEST_SINCE / 3600));
        assert_eq!(hour(r#""99999999999999""#), Some(LATEST_SINCE / 3600));
    }

    #[test]
    fn name_limits_count_what_was_sent() {
        let register = |name: &str| {
            register_request(
                serde_json::json!({"name": name, "region": "DE", "reason": "r"})
                    .to_string()
                    .as_bytes(),
            )
        };
        assert_eq!(register("  Lab  ").expect("valid").name, "Lab");
        assert!(register("   ").is_err());
        assert!(register(&format!(" {}", "x".repeat(MAX_NAME_CHARS))).is_err());
        assert!(register(&"x".repeat(MAX_NAME_CHARS)).is_ok());
    }
}

/// Most TANs in one import.
pub const MAX_TANS_PER_IMPORT: usize = 100_000;
/// How long imported TANs stay valid when the import does not say.
pub const DEFAULT_TAN_TTL_SECONDS: u64 = 30 * 86_400;

/// A TAN list as a health authority exports it: one TAN per line, optionally with a header
/// line `tan` and further comma-separated columns (the first column is the TAN); blank lines
/// and lines starting with `#` are skipped. Returns the normalised TANs, at most `max`.
pub fn tan_list(text: &[u8], max: usize) -> Result<Vec<String>, Problem> {
    let text = std::str::from_utf8(text).map_err(|_| {
        Problem::bad_request(
            "malformed_tan_list",
            "a TAN list is UTF-8 text, one TAN per line",
        )
    })?;
    let mut tans = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let first = line
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if first.is_empty()
            || first.starts_with('#')
            || (index == 0 && first.eq_ignore_ascii_case("tan"))
        {
            continue;
        }
        if tans.len() == max {
            return Err(too_many_tans());
        }
        let tan = confidant_core::codes::normalize_tan(first).map_err(|why| {
            Problem::bad_request("invalid_tan", format!("line {}: {why}", index + 1))
                .with("line", index + 1)
        })?;
        tans.push(tan);
    }
    if tans.is_empty() {
        return Err(Problem::bad_request("no_tans", "the TAN list holds no TAN"));
    }
    Ok(tans)
}

fn too_many_tans() -> Problem {
    Problem::bad_request(
        "too_many_tans",
        format!("at most {MAX_TANS_PER_IMPORT} TANs per import; split the list"),
    )
}

/// `POST /admin/v1/tans`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TanImportRequest {
    pub provider: confidant_core::ProviderId,
    /// Normalised (`codes::normalize_tan`), ready to hash.
    pub tans: Vec<String>,
    /// Unix seconds; `None` means [`DEFAULT_TAN_TTL_SECONDS`] from now.
    pub expires_at: Option<u64>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TanImportJson {
    provider: String,
    tans: Vec<String>,
    expires_at: Option<Since>,
    #[serde(default)]
    reason: String,
}

/// A provider id from a path or body.
pub fn provider_id(text: &str) -> Result<confidant_core::ProviderId, Problem> {
    confidant_core::ProviderId::from_hex(text).ok_or_else(|| {
        Problem::bad_request(
            "malformed_provider_id",
            "a provider id is 16 hexadecimal characters",
        )
    })
}

/// `POST /admin/v1/tans` as JSON: `{"provider", "tans": [...], "expiresAt"?, "reason"}`.
pub fn tan_import_request(body: &[u8]) -> Result<TanImportRequest, Problem> {
    let request: TanImportJson = json(body, None)?;
    if request.tans.len() > MAX_TANS_PER_IMPORT {
        return Err(too_many_tans());
    }
    if request.tans.is_empty() {
        return Err(Problem::bad_request("no_tans", "the TAN list holds no TAN"));
    }
    let tans = request
        .tans
        .iter()
        .enumerate()
        .map(|(index, tan)| {
            confidant_core::codes::normalize_tan(tan).map_err(|why| {
                Problem::bad_request("invalid_tan", format!("TAN #{index}: {why}"))
                    .with("tanIndex", index)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TanImportRequest {
        provider: provider_id(&request.provider)?,
        tans,
        expires_at: request
            .expires_at
            .map(|t| t.unix_seconds_of("malformed_expires_at", "expiresAt"))
            .transpose()?,
        reason: request.reason,
    })
}

/// `POST /admin/v1/tans` as `text/csv`: the list in the body ([`tan_list`]), the rest as the
/// query parameters `provider`, `expiresAt` and `reason`.
pub fn tan_import_csv(
    body: &[u8],
    provider: Option<&str>,
    expires_at: Option<&str>,
    reason: Option<&str>,
) -> Result<TanImportRequest, Problem> {
    let provider = provider.ok_or_else(|| {
        Problem::bad_request(
            "missing_provider",
            "name the importing provider: ?provider=<16 hex characters>",
        )
    })?;
    Ok(TanImportRequest {
        provider: provider_id(provider)?,
        tans: tan_list(body, MAX_TANS_PER_IMPORT)?,
        expires_at: expires_at
            .map(|t| Since::Text(t.to_owned()).unix_seconds_of("malformed_expires_at", "expiresAt"))
            .transpose()?,
        reason: reason.unwrap_or_default().to_owned(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TanRedeemJson {
    tan: String,
}

/// `POST /v1/tokens/redeem`: the TAN, normalised.
pub fn tan_redeem_request(body: &[u8]) -> Result<String, Problem> {
    let request: TanRedeemJson = json(body, None)?;
    confidant_core::codes::normalize_tan(&request.tan)
        .map_err(|why| Problem::bad_request("malformed_tan", why))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadedTokenJson {
    hash: String,
    day: u32,
    /// This encounter's area, when it differs from the upload's.
    area: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenUploadJson {
    nonce: Option<String>,
    preimage: Option<String>,
    area: String,
    tokens: Vec<UploadedTokenJson>,
    /// Random filler so uploads of different sizes look alike on the wire; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    padding: Option<String>,
}

/// A token upload: the nonce (level 0) or the preimage (chained), and the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUploadRequest {
    pub authorisation: TokenAuthorisation,
    pub tokens: Vec<confidant_core::encounter::UploadedToken>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAuthorisation {
    Nonce([u8; 32]),
    /// A matched encounter's check token, which is the uploader's report token.
    Preimage(confidant_core::encounter::Token),
}

/// `POST /v1/tokens` (`chained` false: a nonce) and `POST /v1/tokens/chained` (a preimage).
/// Areas are coarsened to `area_chars` characters here, so no finer place is ever stored.
pub fn token_upload_request(
    body: &[u8],
    chained: bool,
    area_chars: usize,
) -> Result<TokenUploadRequest, Problem> {
    use confidant_core::encounter::{Token, TokenHash, UploadedToken, coarse_area};
    let request: TokenUploadJson = json(body, None)?;
    let authorisation = match (chained, &request.nonce, &request.preimage) {
        (false, Some(nonce), None) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(nonce, &mut bytes).map_err(|_| {
                Problem::bad_request(
                    "malformed_nonce",
                    "`nonce` is the 64 hexadecimal characters /v1/tokens/redeem returned",
                )
            })?;
            TokenAuthorisation::Nonce(bytes)
        }
        (true, None, Some(preimage)) => {
            TokenAuthorisation::Preimage(Token::from_hex(preimage).ok_or_else(|| {
                Problem::bad_request(
                    "malformed_preimage",
                    "`preimage` is the matched encounter's check token: 64 hexadecimal characters",
                )
            })?)
        }
        (false, _, _) => {
            return Err(Problem::bad_request(
                "nonce_required",
                "send `nonce` (and no `preimage`): a chained upload goes to /v1/tokens/chained",
            ));
        }
        (true, _, _) => {
            return Err(Problem::bad_request(
                "preimage_required",
                "send `preimage` (and no `nonce`): an upload with a nonce goes to /v1/tokens",
            ));
        }
    };
    let area = coarse_area(&request.area, area_chars)
        .map_err(|why| Problem::bad_request("invalid_area", why))?;
    let tokens = request
        .tokens
        .into_iter()
        .enumerate()
        .map(|(index, token)| {
            let hash = TokenHash::from_hex(&token.hash).ok_or_else(|| {
                Problem::bad_request(
                    "invalid_token_hash",
                    format!("token #{index}: `hash` is 32 hexadecimal characters (16 bytes)"),
                )
                .with("tokenIndex", index)
            })?;
            let area = match &token.area {
                None => area.clone(),
                Some(text) => coarse_area(text, area_chars).map_err(|why| {
                    Problem::bad_request("invalid_area", format!("token #{index}: {why}"))
                        .with("tokenIndex", index)
                })?,
            };
            Ok(UploadedToken {
                hash,
                day: token.day,
                area,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(TokenUploadRequest {
        authorisation,
        tokens,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResearchJson {
    contributions: Vec<ContributionJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContributionJson {
    preimage: String,
    duration: u8,
    attenuation: u8,
}

/// Most research contributions in one request.
pub const MAX_RESEARCH_CONTRIBUTIONS: usize = 1000;

/// `POST /v1/research`: per proven encounter, its preimage and bucket codes.
pub fn research_request(
    body: &[u8],
) -> Result<
    Vec<(
        confidant_core::encounter::Token,
        confidant_core::encounter::DurationBucket,
        confidant_core::encounter::AttenuationBucket,
    )>,
    Problem,
> {
    use confidant_core::encounter::{AttenuationBucket, DurationBucket, Token};
    let request: ResearchJson = json(body, None)?;
    if request.contributions.is_empty() || request.contributions.len() > MAX_RESEARCH_CONTRIBUTIONS
    {
        return Err(Problem::bad_request(
            "invalid_contribution_count",
            format!(
                "send 1 to {MAX_RESEARCH_CONTRIBUTIONS} contributions; got {}",
                request.contributions.len()
            ),
        ));
    }
    request
        .contributions
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let bad = |code: &'static str, why: &str| {
                Problem::bad_request(code, format!("contribution #{index}: {why}"))
                    .with("contributionIndex", index)
            };
            Ok((
                Token::from_hex(&c.preimage).ok_or_else(|| {
                    bad(
                        "malformed_preimage",
                        "`preimage` is 64 hexadecimal characters",
                    )
                })?,
                DurationBucket::from_code(c.duration).ok_or_else(|| {
                    bad(
                        "invalid_duration_bucket",
                        "`duration` is a bucket code 0 to 3",
                    )
                })?,
                AttenuationBucket::from_code(c.attenuation).ok_or_else(|| {
                    bad(
                        "invalid_attenuation_bucket",
                        "`attenuation` is a bucket code 0 to 3",
                    )
                })?,
            ))
        })
        .collect()
}
