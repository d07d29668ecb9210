//! The COVID Shield compatibility surface, so apps built for it work unchanged:
//! `POST /new-key-claim`, `POST /claim-key`, `POST /upload`, with the deployed server's paths,
//! status codes, content types, protobuf messages and error enums
//! (`../shared/design/covidshield.md`). Uploads become the same events as native ones.
//!
//! Beyond the original: the app key of an upload must be the one registered at claim time.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use confidant_core::codes::normalize_code;
use confidant_core::rules::{self, KeyProblem};
use confidant_core::{
    ClaimId, CodeFormat, Credential, DomainError, Key32, OneTimeCode, TrackingId,
};
use confidant_store::{ClaimLookup, StoreError};
use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use prost::Message;
use rand_core::{OsRng, RngCore};

use crate::AppState;
use crate::bodies::{self, SealedUpload};
use crate::lockout::Standing;

const CLAIM_BODY_LIMIT: usize = 256;
const UPLOAD_BODY_LIMIT: usize = 1024;

/// Wire messages of `../shared/proto/covidshield.proto`, shared with `confidant-client`.
pub use confidant_core::covidshield_wire as proto;

/// `KeyClaimResponse.ErrorCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    None = 0,
    Unknown = 1,
    InvalidOneTimeCode = 2,
    ServerError = 3,
    InvalidKey = 4,
    TemporaryBan = 5,
}

/// `EncryptedUploadResponse.ErrorCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadError {
    None = 0,
    Unknown = 1,
    InvalidKeypair = 2,
    DecryptionFailed = 3,
    InvalidPayload = 4,
    ServerError = 5,
    InvalidCryptoParameters = 6,
    TooManyKeys = 7,
    InvalidTimestamp = 8,
    InvalidRollingPeriod = 10,
    InvalidKeyData = 11,
    InvalidRollingStartIntervalNumber = 12,
    InvalidTransmissionRiskLevel = 13,
    NoKeysInPayload = 14,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/new-key-claim",
            post(new_key_claim)
                .options(preflight)
                .fallback(method_not_allowed),
        )
        .route(
            "/claim-key",
            post(claim_key)
                .fallback(method_not_allowed)
                .layer(DefaultBodyLimit::max(CLAIM_BODY_LIMIT)),
        )
        .route(
            "/upload",
            post(upload)
                .fallback(upload_method_not_allowed)
                .layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)),
        )
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `/upload` answers everything with an `EncryptedUploadResponse`, wrong methods included.
async fn upload_method_not_allowed() -> Response {
    upload_response(StatusCode::METHOD_NOT_ALLOWED, UploadError::Unknown)
}

async fn method_not_allowed() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

pub async fn ping() -> Response {
    let mut response = text(StatusCode::OK, "OK\n");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn preflight() -> Response {
    let mut response = cors(StatusCode::OK.into_response());
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization"),
    );
    response
}

fn protobuf(status: StatusCode, message: &impl Message) -> Response {
    let mut response = (status, message.encode_to_vec()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

async fn new_key_claim(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let unauthorized = || cors(text(StatusCode::UNAUTHORIZED, "unauthorized\n"));
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized();
    };
    let token_hash = state.hasher.token(token.trim());
    for _ in 0..5 {
        let code = OneTimeCode::generate(CodeFormat::Short, &mut OsRng);
        let result = state
            .store
            .issue_code(
                token_hash,
                CodeFormat::Short,
                None,
                state.policy,
                state.hasher.code(&code.display),
                state.now(),
            )
            .await;
        return match result {
            Ok(_) => {
                let mut response = cors(text(StatusCode::OK, ""));
                *response.body_mut() = format!("{}\n", code.display).into();
                response
            }
            Err(StoreError::Conflict) => continue,
            Err(StoreError::Domain(_)) => unauthorized(),
            Err(e) => {
                tracing::error!(error = %e, "storage failure issuing a code");
                cors(text(StatusCode::INTERNAL_SERVER_ERROR, "server error\n"))
            }
        };
    }
    cors(text(StatusCode::INTERNAL_SERVER_ERROR, "server error\n"))
}

fn claim_response(
    status: StatusCode,
    error: ClaimError,
    standing: Standing,
    server_key: Option<Vec<u8>>,
) -> Response {
    protobuf(
        status,
        &proto::KeyClaimResponse {
            error: Some(error as i32),
            server_public_key: server_key,
            tries_remaining: Some(standing.tries_remaining),
            remaining_ban_duration: Some(proto::Duration {
                seconds: standing.banned_for as i64,
                nanos: 0,
            }),
        },
    )
}

async fn claim_key(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let now = state.now();
    let address = state.hasher.address(&state.client_address(peer, &headers));
    let standing = state.lockout.standing(&address, now);
    // A banned address gets the ban whatever it sends.
    if standing.banned_for > 0 {
        return claim_response(
            StatusCode::TOO_MANY_REQUESTS,
            ClaimError::TemporaryBan,
            standing,
            None,
        );
    }
    let request = match body {
        Ok(body) => bodies::claim_request(&body),
        Err(_) => Err(ClaimError::Unknown),
    };
    let (code, app_key) = match request {
        Ok(request) => request,
        Err(error) => return claim_response(StatusCode::BAD_REQUEST, error, standing, None),
    };
    match state.store.app_key_registered(app_key).await {
        Ok(false) => {}
        Ok(true) => {
            return claim_response(
                StatusCode::UNAUTHORIZED,
                ClaimError::InvalidKey,
                standing,
                None,
            );
        }
        Err(_) => {
            return claim_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ClaimError::ServerError,
                standing,
                None,
            );
        }
    }
    let attempt = match state.lockout.begin(address, now) {
        Ok(attempt) => attempt,
        Err(standing) => {
            return claim_response(
                StatusCode::TOO_MANY_REQUESTS,
                ClaimError::TemporaryBan,
                standing,
                None,
            );
        }
    };
    let wrong_code = |attempt: crate::lockout::Attempt| {
        let standing = attempt.fail(now);
        claim_response(
            StatusCode::UNAUTHORIZED,
            ClaimError::InvalidOneTimeCode,
            standing,
            None,
        )
    };
    let Ok(normalized) = normalize_code(&code) else {
        return wrong_code(attempt);
    };
    let mut claim = [0u8; 16];
    OsRng.fill_bytes(&mut claim);
    let claim = ClaimId(claim);
    let server_public = PublicKey::from(&SecretKey::from(state.hasher.box_secret(&claim.0)));
    let credential = Credential::CovidShield {
        app_public_key: app_key,
        server_public_key: Key32(*server_public.as_bytes()),
    };
    match state
        .store
        .redeem_code(state.hasher.code(&normalized), claim, credential, now)
        .await
    {
        Ok(_) => {
            let fresh = attempt.succeed(now);
            claim_response(
                StatusCode::OK,
                ClaimError::None,
                fresh,
                Some(server_public.as_bytes().to_vec()),
            )
        }
        Err(StoreError::Domain(DomainError::InvalidCode)) => wrong_code(attempt),
        Err(StoreError::Domain(DomainError::AppKeyRegistered)) => claim_response(
            StatusCode::UNAUTHORIZED,
            ClaimError::InvalidKey,
            standing,
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "storage failure claiming a code");
            claim_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ClaimError::ServerError,
                standing,
                None,
            )
        }
    }
}

fn upload_response(status: StatusCode, error: UploadError) -> Response {
    protobuf(
        status,
        &proto::EncryptedUploadResponse {
            error: error as i32,
        },
    )
}

async fn upload(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let (status, error) = match handle_upload(&state, body).await {
        Ok(()) => (StatusCode::OK, UploadError::None),
        Err(failure) => failure,
    };
    upload_response(status, error)
}

type UploadFailure = (StatusCode, UploadError);

fn bad(error: UploadError) -> UploadFailure {
    (StatusCode::BAD_REQUEST, error)
}

/// The checks of COVID Shield's `/upload`, in its order.
async fn handle_upload(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), UploadFailure> {
    let SealedUpload {
        server_key,
        app_key,
        nonce,
        payload,
    } = body
        .map_err(|_| UploadError::Unknown)
        .and_then(|body| bodies::upload_request(&body))
        .map_err(bad)?;
    let now = state.now();
    let unauthorized = (StatusCode::UNAUTHORIZED, UploadError::InvalidKeypair);
    let server_error = (StatusCode::INTERNAL_SERVER_ERROR, UploadError::ServerError);
    let (claim_id, claim) = match state.store.claim_by_server_key(server_key).await {
        Ok(Some(found)) if now < found.1.expires_at => found,
        Ok(_) => return Err(unauthorized),
        Err(_) => return Err(server_error),
    };
    let nonce = <[u8; 24]>::try_from(nonce.as_slice())
        .map_err(|_| bad(UploadError::InvalidCryptoParameters))?;
    let app_key = <[u8; 32]>::try_from(app_key.as_slice())
        .map(Key32)
        .map_err(|_| bad(UploadError::InvalidCryptoParameters))?;
    let Credential::CovidShield { app_public_key, .. } = &claim.credential else {
        return Err(unauthorized);
    };
    if *app_public_key != app_key {
        return Err(unauthorized);
    }
    // The per-claim secret is derived from the server secret, never stored.
    let server_secret = SecretKey::from(state.hasher.box_secret(&claim_id.0));
    let sealed = SalsaBox::new(&PublicKey::from(app_key.0), &server_secret);
    let plaintext = sealed
        .decrypt(&nonce.into(), payload.as_slice())
        .map_err(|_| bad(UploadError::DecryptionFailed))?;
    let raw = bodies::upload_payload(&plaintext, now).map_err(bad)?;
    let keys = rules::validate_keys(&raw, now).map_err(|e| {
        crate::observe::submission_rejected("covidshield", &e, raw.len());
        bad(upload_error(&e))
    })?;
    let key_count = keys.len();
    let lookup = ClaimLookup::CovidShield {
        server_public_key: server_key,
        app_public_key: app_key,
    };
    let mut tracking = [0u8; 16];
    OsRng.fill_bytes(&mut tracking);
    match state
        .store
        .submit(lookup, keys, TrackingId(tracking), now)
        .await
    {
        Ok(outcome) => {
            crate::observe::submission_accepted("covidshield", &outcome);
            Ok(())
        }
        Err(StoreError::Domain(e)) => Err({
            crate::observe::submission_rejected("covidshield", &e, key_count);
            match e {
                DomainError::InvalidClaim
                | DomainError::AppKeyMismatch
                | DomainError::ProviderSuspended => unauthorized,
                other => bad(upload_error(&other)),
            }
        }),
        Err(e) => {
            tracing::error!(error = %e, "storage failure storing an upload");
            Err(server_error)
        }
    }
}

fn upload_error(error: &DomainError) -> UploadError {
    match error {
        DomainError::NoKeys => UploadError::NoKeysInPayload,
        DomainError::TooManyKeysInRequest(_) | DomainError::KeyBudgetExceeded { .. } => {
            UploadError::TooManyKeys
        }
        DomainError::InvalidKey { problem, .. } => match problem {
            KeyProblem::RollingPeriod => UploadError::InvalidRollingPeriod,
            KeyProblem::KeyData => UploadError::InvalidKeyData,
            KeyProblem::RollingStart => UploadError::InvalidRollingStartIntervalNumber,
            KeyProblem::TransmissionRisk => UploadError::InvalidTransmissionRiskLevel,
        },
        DomainError::KeysSpanTooLong | DomainError::KeyFromFuture { .. } => {
            UploadError::InvalidRollingStartIntervalNumber
        }
        _ => UploadError::Unknown,
    }
}
