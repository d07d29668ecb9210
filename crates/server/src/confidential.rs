//! Confidential matching on the main server: test results, and the matcher behind it.
//!
//! - `POST /v1/results` (provider token): a test's result, under the keyed hash of the test id
//!   the phone chose (`core::confidential::test_id` of its secret);
//! - `POST /v1/results/poll` `{"secret"}`: the phone learns pending, negative or positive;
//! - `/matcher/attestation`, `/matcher/v1/poll`: forwarded to the matcher as they are;
//! - `/matcher/v1/upload` with `Authorization: Bearer <secret>`: a positive result's one
//!   upload, forwarded with the server's own upload secret and then marked used.
//!
//! The main server never sees a tuple: requests are sealed to the matcher's attested key, and
//! it forwards bytes. It keeps results, with the provider, a 14-day expiry and whether they
//! were used, as events like everything else.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confidant_core::DomainError;
use confidant_core::confidential::test_id;
use confidant_store::StoreError;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::bodies;
use crate::chaff::padded_json;
use crate::problem::Problem;
use crate::v1::{bearer, provider_token, read_body, rfc3339};

/// Where the matcher is and the secret its uploads take.
#[derive(Clone)]
pub struct MatcherLink {
    pub url: String,
    pub upload_secret: String,
}

/// A sealed request of the largest log, with room to spare.
const PROXY_BODY_LIMIT: usize = 1 << 20;

pub(crate) struct Forwarder {
    link: MatcherLink,
    http: reqwest::Client,
}

impl Forwarder {
    pub fn new(link: MatcherLink) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(25))
            .build()
            .expect("a client with a timeout builds");
        Self { link, http }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/results", post(post_result))
        .route("/v1/results/poll", post(poll_result))
        .route("/matcher/attestation", get(attestation))
        .route("/matcher/v1/poll", post(poll))
        .route("/matcher/v1/upload", post(upload))
        .layer(DefaultBodyLimit::max(PROXY_BODY_LIMIT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResultJson {
    test_id: String,
    result: String,
}

fn hex32(text: &str, code: &'static str, what: &str) -> Result<[u8; 32], Problem> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes)
        .map_err(|_| Problem::bad_request(code, format!("{what} is 64 hexadecimal characters")))?;
    Ok(bytes)
}

async fn post_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let token = provider_token(&headers)?;
    let request: ResultJson = bodies::json(&read_body(body)?, None)?;
    let id = hex32(&request.test_id, "malformed_test_id", "`testId`")?;
    let positive = match request.result.as_str() {
        "positive" => true,
        "negative" => false,
        other => {
            return Err(Problem::bad_request(
                "invalid_result",
                format!("`result` is positive or negative; got {other:?}"),
            ));
        }
    };
    let expires_at = state
        .store
        .post_result(
            state.hasher.token(token),
            state.hasher.test(&id),
            positive,
            state.now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"expiresAt": rfc3339(expires_at)})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollJson {
    secret: String,
}

async fn poll_result(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let request: PollJson = bodies::json(&read_body(body)?, None)?;
    let secret = hex32(&request.secret, "malformed_secret", "`secret`")?;
    let test = state.hasher.test(&test_id(&secret));
    let now = state.now();
    let result = state
        .store
        .test_result(test)
        .await?
        .filter(|r| r.expires_at > now);
    let (status, used) = match result {
        None => ("pending", false),
        Some(r) if r.positive => ("positive", r.used),
        Some(r) => ("negative", r.used),
    };
    // Padded like the other answers that tell a diagnosis: the size says nothing.
    Ok(padded_json(json!({"status": status, "uploaded": used})))
}

fn not_configured() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "matcher_not_configured",
        "this server has no confidential matcher (--matcher-url)",
    )
}

fn matcher(state: &AppState) -> Result<Arc<Forwarder>, Problem> {
    state.matcher.clone().ok_or_else(not_configured)
}

/// Sends `request` to the matcher and relays its answer: status, content type and body.
async fn relay(request: reqwest::RequestBuilder) -> Result<Response, Problem> {
    let unavailable = |e: reqwest::Error| {
        tracing::error!(error = %e, "the matcher did not answer");
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "matcher_unavailable",
            "the confidential matcher did not answer; retry later",
        )
    };
    let response = request.send().await.map_err(unavailable)?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = response.bytes().await.map_err(unavailable)?;
    Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn attestation(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let forwarder = matcher(&state)?;
    let url = format!(
        "{}/attestation?{}",
        forwarder.link.url,
        query.unwrap_or_default()
    );
    relay(forwarder.http.get(url)).await
}

async fn poll(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let forwarder = matcher(&state)?;
    let body = read_body(body)?;
    let url = format!("{}/v1/poll", forwarder.link.url);
    relay(forwarder.http.post(url).body(body)).await
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let forwarder = matcher(&state)?;
    let secret = bearer(&headers)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing_test_secret",
                "send the test's secret as `Authorization: Bearer <64 hex>`",
            )
        })
        .and_then(|text| hex32(text, "malformed_secret", "the bearer secret"))?;
    let body = read_body(body)?;
    let test = state.hasher.test(&test_id(&secret));
    let now = state.now();
    // Checked before forwarding, spent after the matcher stored it: a failure in between
    // leaves the upload to retry, and a second upload of the same log matches the same.
    let usable = state
        .store
        .test_result(test)
        .await?
        .is_some_and(|r| r.positive && !r.used && now < r.expires_at);
    if !usable {
        return Err(DomainError::NoPositiveResult.into());
    }
    let url = format!("{}/v1/upload", forwarder.link.url);
    let answer = relay(
        forwarder
            .http
            .post(url)
            .bearer_auth(&forwarder.link.upload_secret)
            .body(body),
    )
    .await?;
    if answer.status().is_success() {
        match state.store.use_result(test, now).await {
            Ok(()) => {}
            // Another upload with the same secret won the race: this one is stored as well.
            Err(StoreError::Domain(DomainError::NoPositiveResult)) => {}
            Err(e) => return Err(e.into()),
        }
        metrics::counter!("confidant_matcher_uploads_forwarded_total").increment(1);
    }
    Ok(answer)
}
