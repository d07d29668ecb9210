//! The encounter-token API for phones (`docs/encounter-tokens.md`):
//!
//! - `POST /v1/tokens/redeem` exchanges a health authority's TAN for single-use nonces;
//! - `POST /v1/tokens` uploads token hashes with a nonce, at level 0;
//! - `POST /v1/tokens/chained` uploads token hashes authorised by the preimage of a published
//!   level-n hash (a matched encounter), at level n + 1;
//! - `POST /v1/research` records opt-in research data for proven encounters.
//!
//! What is published comes from the publisher (`/tokens/{area}/…`). TAN redemption shares the
//! codes' lockout; redemption and level-0 uploads answer chaff (`X-Chaff: 1`) like the native
//! GAEN endpoints. Nothing here logs a TAN, nonce, hash or preimage.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use confidant_core::encounter::Level;
use confidant_core::event::NonceClaim;
use confidant_core::rules::{
    CLAIM_LIFETIME_SECONDS, MAX_TOKENS_PER_UPLOAD, NONCES_PER_TAN, TokenOutcome,
};
use confidant_core::{ClaimId, TrackingId};
use confidant_store::StoreError;
use serde_json::json;

use crate::AppState;
use crate::bodies::{self, TokenAuthorisation};
use crate::chaff::{self, Endpoint, padded_json};
use crate::problem::Problem;
use crate::v1::{begin_attempt, random_bytes, read_body, rfc3339};

/// An upload of [`MAX_TOKENS_PER_UPLOAD`] hashes is about 700 KB of JSON.
pub(crate) const TOKEN_BODY_LIMIT: usize = 1 << 20;

/// How the encounter-token API treats uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    /// Postal-code characters an area keeps (`encounter::coarse_area`): the granularity at
    /// which token hashes are stored and published.
    pub area_chars: usize,
    /// The highest level a chained upload may reach (0 turns chaining off).
    pub max_level: Level,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            area_chars: 2,
            max_level: 1,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tokens/redeem", post(redeem))
        .route("/v1/tokens", post(upload))
        .route("/v1/tokens/chained", post(chained))
        .route("/v1/research", post(research))
        .layer(DefaultBodyLimit::max(TOKEN_BODY_LIMIT))
}

fn nonce_answer(nonces: &[[u8; 32]], expires_at: u64, max_tokens: u32) -> Response {
    let nonces: Vec<String> = nonces.iter().map(hex::encode).collect();
    padded_json(json!({
        "nonces": nonces,
        "expiresAt": rfc3339(expires_at),
        "maxTokens": max_tokens,
    }))
}

async fn redeem(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let started = std::time::Instant::now();
    let tan = bodies::tan_redeem_request(&read_body(body)?)?;
    let now = state.now();
    let nonces: Vec<[u8; 32]> = (0..NONCES_PER_TAN).map(|_| random_bytes()).collect();
    if chaff::is_chaff(&headers) {
        let expires_at = (now + CLAIM_LIFETIME_SECONDS).div_ceil(3600) * 3600;
        tokio::time::sleep(state.chaff_timings.draw(Endpoint::Verify)).await;
        return Ok(nonce_answer(&nonces, expires_at, MAX_TOKENS_PER_UPLOAD));
    }
    let attempt = begin_attempt(&state, peer, &headers, now)?;
    let claims = nonces
        .iter()
        .map(|nonce| NonceClaim {
            claim: ClaimId(random_bytes()),
            nonce_hash: state.hasher.nonce(nonce),
        })
        .collect();
    match state
        .store
        .redeem_tan(state.hasher.code(&tan), claims, now)
        .await
    {
        Ok((expires_at, max_tokens)) => {
            attempt.succeed(now);
            state
                .chaff_timings
                .record(Endpoint::Verify, started.elapsed());
            metrics::counter!("confidant_tans_redeemed_total").increment(1);
            Ok(nonce_answer(&nonces, expires_at, max_tokens))
        }
        Err(e) => Err(crate::v1::redemption_refused(e, attempt, now)),
    }
}

fn accepted(outcome: &TokenOutcome) -> Response {
    metrics::counter!("confidant_tokens_accepted_total", "level" => outcome.level.to_string())
        .increment(u64::from(outcome.inserted));
    padded_json(json!({
        "trackingId": outcome.tracking_id.to_hex(),
        "accepted": outcome.inserted,
        "skipped": outcome.skipped,
        "level": outcome.level,
    }))
}

fn rejected(error: &StoreError) {
    if let StoreError::Domain(e) = error {
        metrics::counter!("confidant_token_uploads_rejected_total", "reason" => e.reason())
            .increment(1);
    }
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let started = std::time::Instant::now();
    let request = bodies::token_upload_request(&read_body(body)?, false, state.tokens.area_chars)?;
    let TokenAuthorisation::Nonce(nonce) = request.authorisation else {
        unreachable!("token_upload_request asks for a nonce here");
    };
    if chaff::is_chaff(&headers) {
        tokio::time::sleep(state.chaff_timings.draw(Endpoint::Submit)).await;
        return Ok(accepted(&TokenOutcome {
            tracking_id: TrackingId(random_bytes()),
            level: 0,
            inserted: request.tokens.len() as u32,
            skipped: 0,
        }));
    }
    let outcome = state
        .store
        .submit_tokens(
            state.hasher.nonce(&nonce),
            request.tokens,
            TrackingId(random_bytes()),
            state.now(),
        )
        .await
        .inspect_err(rejected)?;
    state
        .chaff_timings
        .record(Endpoint::Submit, started.elapsed());
    Ok(accepted(&outcome))
}

async fn chained(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let request = bodies::token_upload_request(&read_body(body)?, true, state.tokens.area_chars)?;
    let TokenAuthorisation::Preimage(preimage) = request.authorisation else {
        unreachable!("token_upload_request asks for a preimage here");
    };
    let outcome = state
        .store
        .submit_chained(
            preimage.hash(),
            state.tokens.max_level,
            request.tokens,
            TrackingId(random_bytes()),
            state.now(),
        )
        .await
        .inspect_err(rejected)?;
    Ok(accepted(&outcome))
}

async fn research(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let contributions = bodies::research_request(&read_body(body)?)?
        .into_iter()
        .map(|(preimage, duration, attenuation)| {
            (preimage.hash(), duration.code(), attenuation.code())
        })
        .collect();
    let recorded = state.store.contribute_research(contributions).await?;
    metrics::counter!("confidant_research_records_total").increment(u64::from(recorded));
    Ok(axum::Json(json!({ "recorded": recorded })).into_response())
}
