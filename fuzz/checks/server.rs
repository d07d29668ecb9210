//! What must hold for every input of the `confidant-server` fuzz targets: request bodies as
//! the server parses them (`confidant_server::bodies`). The targets and the corpus replay test
//! (`crates/server/tests/it/fuzz_corpus.rs`) both call these.

use std::fmt::Debug;

use confidant_core::codes::normalize_code;
use confidant_core::covidshield_wire as proto;
use confidant_core::rules::{self, MAX_KEYS_PER_REQUEST};
use confidant_server::Problem;
use confidant_server::bodies::{self, ClaimError, UploadError};
use prost::Message;

/// The server's clock for payload checks: 2026-01-01T00:00:00Z. Corpus uploads are stamped
/// with it so that the fuzzer starts past the timestamp check.
pub const NOW: u64 = 1_767_225_600;

/// Decoding what prost encoded gives the same message.
fn round_trip<M: Message + Default + PartialEq + Debug>(message: &M) {
    let again = M::decode(message.encode_to_vec().as_slice()).expect("re-encoded decodes");
    assert_eq!(&again, message);
}

/// A code as typed: normalising never panics, and a normalised code normalises to itself.
fn typed_code(code: &str) {
    if let Ok(normalized) = normalize_code(code) {
        assert_eq!(normalize_code(&normalized).as_ref(), Ok(&normalized));
    }
}

/// `covidshield_claim`: the body of `POST /claim-key`.
pub fn covidshield_claim(data: &[u8]) {
    let message = proto::KeyClaimRequest::decode(data);
    if let Ok(message) = &message {
        round_trip(message);
    }
    match bodies::claim_request(data) {
        Ok((code, app_key)) => {
            let message = message.expect("parsed, so it decodes");
            assert_eq!(message.one_time_code.as_deref(), Some(code.as_str()));
            assert_eq!(message.app_public_key.as_deref(), Some(&app_key.0[..]));
            typed_code(&code);
        }
        Err(error) => assert!(
            matches!(error, ClaimError::Unknown | ClaimError::InvalidKey),
            "{error:?}"
        ),
    }
}

/// `covidshield_upload`: the body of `POST /upload`, up to the claim lookup.
pub fn covidshield_upload(data: &[u8]) {
    let message = proto::EncryptedUploadRequest::decode(data);
    if let Ok(message) = &message {
        round_trip(message);
    }
    match bodies::upload_request(data) {
        Ok(sealed) => {
            let message = message.expect("parsed, so it decodes");
            assert_eq!(
                message.server_public_key.as_deref(),
                Some(&sealed.server_key.0[..])
            );
            assert_eq!(message.app_public_key, Some(sealed.app_key));
            assert_eq!(message.nonce, Some(sealed.nonce));
            assert_eq!(message.payload, Some(sealed.payload));
        }
        Err(error) => assert!(
            matches!(
                error,
                UploadError::Unknown | UploadError::InvalidCryptoParameters
            ),
            "{error:?}"
        ),
    }
}

/// `covidshield_payload`: the decrypted `Upload` of `POST /upload`, through key validation.
pub fn covidshield_payload(data: &[u8]) {
    let message = proto::Upload::decode(data);
    if let Ok(message) = &message {
        round_trip(message);
    }
    match bodies::upload_payload(data, NOW) {
        Ok(raw) => {
            assert!((1..=MAX_KEYS_PER_REQUEST).contains(&raw.len()));
            assert_eq!(
                raw.len(),
                message.expect("parsed, so it decodes").keys.len()
            );
            if let Ok(keys) = rules::validate_keys(&raw, NOW) {
                assert!(keys.len() <= raw.len());
            }
        }
        Err(error) => assert!(
            matches!(
                error,
                UploadError::InvalidPayload
                    | UploadError::NoKeysInPayload
                    | UploadError::TooManyKeys
                    | UploadError::InvalidTimestamp
            ),
            "{error:?}"
        ),
    }
}

/// A refused body is the client's fault, never the server's.
fn refused(problem: Problem) {
    assert!(problem.status.is_client_error(), "{problem:?}");
}

/// `native_json`: every JSON request body of `/v1` and `/admin/v1`. Each input goes through
/// every parser: a body valid for one is a good start for the others.
pub fn native_json(data: &[u8]) {
    match bodies::code_request(data) {
        Ok(request) => assert!(!data.is_empty() || request.ttl_seconds.is_none()),
        Err(problem) => refused(problem),
    }
    match bodies::verify_request(data) {
        Ok(code) => typed_code(&code),
        Err(problem) => refused(problem),
    }
    match bodies::submission_request(data) {
        Ok(raw) => {
            if let Ok(keys) = rules::validate_keys(&raw, NOW) {
                assert!(keys.len() <= raw.len());
            }
        }
        Err(problem) => refused(problem),
    }
    if let Err(problem) = bodies::reason_request(data) {
        refused(problem);
    }
    match bodies::register_request(data) {
        Ok(request) => {
            assert_eq!(request.name.trim(), request.name);
            assert!((1..=bodies::MAX_NAME_CHARS).contains(&request.name.chars().count()));
        }
        Err(problem) => refused(problem),
    }
    if let Err(problem) = bodies::revoke_request(data) {
        refused(problem);
    }
    match bodies::deregister_request(data) {
        Ok(request) => {
            assert!((1..=bodies::MAX_DEREGISTER_KEYS).contains(&request.keys.len()));
        }
        Err(problem) => refused(problem),
    }
    match bodies::invalidate_code_request(data) {
        Ok(request) => assert_eq!(normalize_code(&request.code), Ok(request.code)),
        Err(problem) => refused(problem),
    }
    match bodies::create_token_request(data) {
        Ok(request) => {
            assert_eq!(request.label.trim(), request.label);
            assert!(request.label.chars().count() <= bodies::MAX_NAME_CHARS);
        }
        Err(problem) => refused(problem),
    }
    token_json(data);
}

/// The encounter-token bodies (`/v1/tokens…`, `/v1/research`, `/admin/v1/tans`).
fn token_json(data: &[u8]) {
    use confidant_core::codes::normalize_tan;
    match bodies::tan_redeem_request(data) {
        Ok(tan) => assert_eq!(normalize_tan(&tan), Ok(tan)),
        Err(problem) => refused(problem),
    }
    for chained in [false, true] {
        match bodies::token_upload_request(data, chained, 2) {
            Ok(request) => {
                assert!(request.tokens.iter().all(|t| t.area.as_str().len() == 2));
                assert_eq!(
                    matches!(
                        request.authorisation,
                        bodies::TokenAuthorisation::Preimage(_)
                    ),
                    chained
                );
            }
            Err(problem) => refused(problem),
        }
    }
    match bodies::research_request(data) {
        Ok(contributions) => {
            assert!((1..=bodies::MAX_RESEARCH_CONTRIBUTIONS).contains(&contributions.len()));
        }
        Err(problem) => refused(problem),
    }
    for parsed in [
        bodies::tan_import_request(data),
        bodies::tan_import_csv(data, Some("0101010101010101"), None, None),
    ] {
        match parsed {
            Ok(request) => {
                assert!((1..=bodies::MAX_TANS_PER_IMPORT).contains(&request.tans.len()));
                for tan in &request.tans {
                    assert_eq!(normalize_tan(tan).as_ref(), Ok(tan));
                }
            }
            Err(problem) => refused(problem),
        }
    }
}
