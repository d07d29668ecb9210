//! The native JSON API for providers and apps.
//!
//! - `POST /v1/codes` (provider bearer token) issues a one-time code;
//! - `POST /v1/verify` redeems a code for an upload token with a key budget;
//! - `POST /v1/submissions` (upload bearer token) stores diagnosis keys;
//! - `GET /v1/submissions/{trackingId}` reports what a submission stored and where it stands
//!   (accepted, published or withdrawn), for GAEN keys and encounter-token uploads alike.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confidant_core::codes::normalize_code;
use confidant_core::rules::{self, CLAIM_LIFETIME_SECONDS, KEY_BUDGET};
use confidant_core::{ClaimId, Credential, DomainError, OneTimeCode, TrackingId};
use confidant_store::{ClaimLookup, StoreError};
use rand_core::{OsRng, RngCore};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::bodies::{self, CodeRequest};
use crate::chaff::{self, Endpoint, padded_json};
use crate::problem::Problem;

/// Requests of the native API are small; padding included, 32 KiB is plenty.
pub(crate) const BODY_LIMIT: usize = 32 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/codes", post(issue_code))
        .route("/v1/verify", post(verify))
        .route("/v1/submissions", post(submit))
        .route("/v1/submissions/{tracking_id}", get(submission_status))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

pub fn rfc3339(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
}

/// The body, or a problem when it could not be read (too large); parsing is `bodies`'.
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body could not be read ({rejection}); the limit is {BODY_LIMIT} bytes"
            ),
        )
    })
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Reserves a redemption try for the client's address (codes and TANs share the counters),
/// or says why it must wait.
pub(crate) fn begin_attempt(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    now: u64,
) -> Result<crate::lockout::Attempt, Problem> {
    let address = state.hasher.address(&state.client_address(peer, headers));
    state.lockout.begin(address, now).map_err(|standing| {
        let problem = match standing.paused_globally {
            true => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "redemption_paused",
                "too many wrong codes are being tried across all clients; redemption is \
                 paused, try again later",
            ),
            false => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many wrong codes from this address; try again later",
            ),
        };
        problem.retry_after(standing.banned_for.max(1))
    })
}

/// A failed redemption of a code or TAN: a wrong one counts against the client's try.
pub(crate) fn redemption_refused(
    error: StoreError,
    attempt: crate::lockout::Attempt,
    now: u64,
) -> Problem {
    match error {
        StoreError::Domain(DomainError::InvalidCode) => {
            let standing = attempt.fail(now);
            Problem::from(DomainError::InvalidCode).with("triesRemaining", standing.tries_remaining)
        }
        other => other.into(),
    }
}

/// The provider's API token of a request, or the problem that says how to send it.
pub(crate) fn provider_token(headers: &HeaderMap) -> Result<&str, Problem> {
    bearer(headers).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_provider_token",
            "send the provider's API token as `Authorization: Bearer …`",
        )
    })
}

async fn issue_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let token = provider_token(&headers)?;
    let CodeRequest {
        format,
        ttl_seconds,
    } = bodies::code_request(&read_body(body)?)?;
    let token_hash = state.hasher.token(token);
    // A fresh code can collide with a live one (short codes are only 10^8): draw again.
    for _ in 0..5 {
        let code = OneTimeCode::generate(format, &mut OsRng);
        let normalized = normalize_code(&code.display).expect("generated codes are valid");
        let result = state
            .store
            .issue_code(
                token_hash,
                format,
                ttl_seconds,
                state.policy,
                state.hasher.code(&normalized),
                state.now(),
            )
            .await;
        match result {
            Ok((_, _, expires_at)) => {
                let body = json!({"code": code.display, "format": format.name(), "expiresAt": rfc3339(expires_at)});
                return Ok((StatusCode::CREATED, axum::Json(body)).into_response());
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Unavailable("could not draw an unused code".into()).into())
}

async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let started = std::time::Instant::now();
    let code = bodies::verify_request(&read_body(body)?)?;
    let normalized =
        normalize_code(&code).map_err(|why| Problem::bad_request("malformed_code", why))?;
    let now = state.now();
    if chaff::is_chaff(&headers) {
        // A well-formed code, as a real request needs: no lookup, no lockout, nothing stored.
        let expires_at = now + CLAIM_LIFETIME_SECONDS;
        let body = json!({
            "token": URL_SAFE_NO_PAD.encode(random_bytes::<32>()),
            "expiresAt": rfc3339(expires_at.div_ceil(3600) * 3600),
            "keyBudget": KEY_BUDGET,
        });
        tokio::time::sleep(state.chaff_timings.draw(Endpoint::Verify)).await;
        return Ok(padded_json(body));
    }
    let attempt = begin_attempt(&state, peer, &headers, now)?;
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let credential = Credential::UploadToken {
        token_hash: state.hasher.token(&token),
    };
    match state
        .store
        .redeem_code(
            state.hasher.code(&normalized),
            ClaimId(random_bytes()),
            credential,
            now,
        )
        .await
    {
        Ok((expires_at, key_budget)) => {
            attempt.succeed(now);
            state
                .chaff_timings
                .record(Endpoint::Verify, started.elapsed());
            Ok(padded_json(
                json!({"token": token, "expiresAt": rfc3339(expires_at), "keyBudget": key_budget}),
            ))
        }
        Err(e) => Err(redemption_refused(e, attempt, now)),
    }
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let started = std::time::Instant::now();
    let token = bearer(&headers).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_upload_token",
            "send the upload token from /v1/verify as `Authorization: Bearer …`",
        )
    })?;
    let raw = bodies::submission_request(&read_body(body)?)?;
    let chaff = chaff::is_chaff(&headers);
    let now = state.now();
    let keys = rules::validate_keys(&raw, now).inspect_err(|e| {
        if !chaff {
            crate::observe::submission_rejected("v1", e, raw.len());
        }
    })?;
    if chaff {
        // Checked like a real upload, answered like one, and forgotten.
        let body = json!({
            "trackingId": TrackingId(random_bytes()).to_hex(),
            "inserted": keys.len(),
            "skipped": 0,
            "dropped": 0,
            "warnings": Vec::<String>::new(),
        });
        tokio::time::sleep(state.chaff_timings.draw(Endpoint::Submit)).await;
        return Ok(padded_json(body));
    }
    let outcome = state
        .store
        .submit(
            ClaimLookup::Token(state.hasher.token(token)),
            keys,
            TrackingId(random_bytes()),
            now,
        )
        .await
        .inspect_err(|e| {
            if let StoreError::Domain(e) = e {
                crate::observe::submission_rejected("v1", e, raw.len());
            }
        })?;
    crate::observe::submission_accepted("v1", &outcome);
    let mut warnings = Vec::new();
    if outcome.dropped > 0 {
        warnings.push(format!(
            "{} key(s) older than 14 days were dropped",
            outcome.dropped
        ));
    }
    if outcome.skipped > 0 {
        warnings.push(format!(
            "{} key(s) were already stored and were skipped",
            outcome.skipped
        ));
    }
    state
        .chaff_timings
        .record(Endpoint::Submit, started.elapsed());
    Ok(padded_json(json!({
        "trackingId": outcome.tracking_id.to_hex(),
        "inserted": outcome.inserted,
        "skipped": outcome.skipped,
        "dropped": outcome.dropped,
        "warnings": warnings,
    })))
}

async fn submission_status(
    State(state): State<AppState>,
    Path(tracking_id): Path<String>,
) -> Result<Response, Problem> {
    let id = TrackingId::from_hex(&tracking_id).ok_or_else(|| {
        Problem::bad_request(
            "malformed_tracking_id",
            "a tracking ID is 32 hexadecimal characters",
        )
    })?;
    let Some(report) = crate::admin::submission_status(&state, id).await? else {
        let (submission, status) = crate::admin::token_submission_status(&state, id)
            .await?
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "unknown_submission",
                    "no submission has this tracking ID",
                )
            })?;
        return Ok(axum::Json(json!({
            "trackingId": tracking_id,
            "protocol": "tokens",
            "status": status.name(),
            "level": submission.level,
            "submittedHour": rfc3339(submission.hour * 3600),
            "inserted": submission.inserted,
            "skipped": submission.skipped,
        }))
        .into_response());
    };
    let submission = report.submission;
    Ok(axum::Json(json!({
        "trackingId": tracking_id,
        "status": report.status.name(),
        "region": submission.region.as_str(),
        "submittedHour": rfc3339(submission.hour * 3600),
        "inserted": submission.inserted,
        "skipped": submission.skipped,
        "dropped": submission.dropped,
    }))
    .into_response())
}
