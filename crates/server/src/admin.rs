//! The admin API (`/admin/v1`): what operators do to providers, submissions, keys, codes and
//! admin tokens, and the audit trail of it.
//!
//! Every request carries an admin token (`Authorization: Bearer cadm_…`), stored only as a
//! keyed hash; its scope (read < operate < admin) decides what it may do. Every change goes
//! through `core::corrections::decide` in the store, which records it with the acting token
//! and the request's `reason` in the same transaction; a refused or empty command records
//! nothing. This module only parses requests into `Command`s and formats answers: it holds no
//! rules of its own, except how a submission's status is derived from publication
//! ([`submission_status`], shared with `GET /v1/submissions/{trackingId}`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use confidant_core::codes::normalize_code;
use confidant_core::corrections::{Actor, Command, Outcome, Scope};
use confidant_core::publish::{self, Stream};
use confidant_core::state::KeyRecord;
use confidant_core::{
    AdminTokenId, Event, KeyData, KeyedHasher, Provider, ProviderId, Region, Submission, TrackingId,
};
use confidant_store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::problem::Problem;
use crate::v1::{BODY_LIMIT, bearer, json_body, random_bytes, rfc3339};

/// Most keys in one de-registration.
const MAX_KEYS: usize = 1000;
/// Most audit entries in one page.
const MAX_AUDIT_LIMIT: u32 = 1000;
const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// Longest provider name and token label.
const MAX_NAME_CHARS: usize = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/providers",
            get(list_providers).post(register_provider),
        )
        .route("/admin/v1/providers/{id}", get(show_provider))
        .route("/admin/v1/providers/{id}/suspend", post(suspend_provider))
        .route(
            "/admin/v1/providers/{id}/reinstate",
            post(reinstate_provider),
        )
        .route("/admin/v1/providers/{id}/revoke", post(revoke_provider))
        .route(
            "/admin/v1/providers/{id}/codes/invalidate",
            post(invalidate_provider_codes),
        )
        .route("/admin/v1/submissions/{tracking_id}", get(show_submission))
        .route(
            "/admin/v1/submissions/{tracking_id}/withdraw",
            post(withdraw_submission),
        )
        .route("/admin/v1/keys/deregister", post(deregister_keys))
        .route("/admin/v1/codes/invalidate", post(invalidate_code))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/tokens", get(list_tokens).post(create_token))
        .route("/admin/v1/tokens/{id}/revoke", post(revoke_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Mints an admin token: the secret to hand over once (`cadm_<id>_<43 base64url chars>`, the
/// whole string stored only as `hasher.token`), and the command that records it.
pub fn new_admin_token(hasher: &KeyedHasher, scope: Scope, label: &str) -> (String, Command) {
    let token = AdminTokenId(random_bytes());
    let secret = format!(
        "cadm_{token}_{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    );
    let command = Command::CreateToken {
        token,
        token_hash: hasher.token(&secret),
        scope,
        label: label.to_owned(),
    };
    (secret, command)
}

/// The token a request acts with, once it is known to be live and to hold `needed`.
#[derive(Clone, Copy)]
struct Admin {
    id: AdminTokenId,
    scope: Scope,
}

async fn authorize(state: &AppState, headers: &HeaderMap, needed: Scope) -> Result<Admin, Problem> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "missing_admin_token",
            "send an admin token as `Authorization: Bearer cadm_…`",
        ));
    }
    let invalid = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_token",
            "the admin token is unknown or revoked",
        )
    };
    let secret = bearer(headers).ok_or_else(invalid)?;
    let (id, token) = state
        .store
        .admin_token(state.hasher.token(secret))
        .await?
        .filter(|(_, token)| !token.revoked)
        .ok_or_else(invalid)?;
    let admin = Admin {
        id,
        scope: token.scope,
    };
    require(admin, needed)?;
    Ok(admin)
}

fn require(admin: Admin, needed: Scope) -> Result<(), Problem> {
    if admin.scope.allows(needed) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        format!(
            "this needs a token with the `{}` scope (or a wider one); this token has `{}`",
            needed.name(),
            admin.scope.name()
        ),
    )
    .with("requiredScope", needed.name()))
}

/// Runs a correction as `admin`; the store records it with the reason, or refuses it.
async fn correct(
    state: &AppState,
    admin: Admin,
    command: Command,
    reason: String,
) -> Result<Outcome, Problem> {
    // The route already asked for the scope; the command's own rule has the last word.
    require(admin, command.scope())?;
    Ok(state
        .store
        .correct(command, Actor::Token(admin.id), state.now(), reason)
        .await?)
}

/// A mutation's body when all it needs is the reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonRequest {
    #[serde(default)]
    reason: String,
}

fn provider_id(text: &str) -> Result<ProviderId, Problem> {
    ProviderId::from_hex(text).ok_or_else(|| {
        Problem::bad_request(
            "malformed_provider_id",
            "a provider id is 16 hexadecimal characters",
        )
    })
}

fn tracking_id(text: &str) -> Result<TrackingId, Problem> {
    TrackingId::from_hex(text).ok_or_else(|| {
        Problem::bad_request(
            "malformed_tracking_id",
            "a tracking ID is 32 hexadecimal characters",
        )
    })
}

fn provider_status(provider: &Provider) -> &'static str {
    if provider.revoked {
        "revoked"
    } else if provider.suspended {
        "suspended"
    } else {
        "active"
    }
}

fn provider_json(id: ProviderId, provider: &Provider) -> Value {
    json!({
        "id": id.to_hex(),
        "name": provider.name,
        "region": provider.region.as_str(),
        "status": provider_status(provider),
    })
}

fn ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

fn created(body: Value) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn list_providers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Scope::Read).await?;
    let providers: Vec<Value> = state
        .store
        .providers()
        .await?
        .iter()
        .map(|(id, provider)| provider_json(*id, provider))
        .collect();
    Ok(ok(json!({ "providers": providers })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    name: String,
    region: String,
    #[serde(default)]
    reason: String,
}

async fn register_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let request: RegisterRequest = json_body(body, None)?;
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::bad_request(
            "invalid_name",
            format!("a provider name is 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let region = Region::try_from(request.region)
        .map_err(|why| Problem::bad_request("invalid_region", why))?;
    let id = ProviderId(random_bytes());
    let api_token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let command = Command::RegisterProvider {
        provider: id,
        name: name.clone(),
        region: region.clone(),
        token_hash: state.hasher.token(&api_token),
    };
    correct(&state, admin, command, request.reason).await?;
    Ok(created(json!({
        "id": id.to_hex(),
        "name": name,
        "region": region.as_str(),
        "apiToken": api_token,
    })))
}

async fn show_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Scope::Read).await?;
    let id = provider_id(&id)?;
    let provider = state
        .store
        .provider(id)
        .await?
        .ok_or(confidant_core::DomainError::NoSuchProvider)?;
    let activity = state.store.provider_activity(id).await?;
    let mut body = provider_json(id, &provider);
    body["activity"] = json!({
        "codesIssued": activity.codes_issued,
        "codesRedeemed": activity.codes_redeemed,
        "submissions": activity.submissions,
        "submissionsWithdrawn": activity.submissions_withdrawn,
        "keysSubmitted": activity.keys_submitted,
        "keysWithdrawn": activity.keys_withdrawn,
    });
    Ok(ok(body))
}

async fn suspend_provider(
    state: State<AppState>,
    headers: HeaderMap,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    set_suspended(state, headers, id, body, true).await
}

async fn reinstate_provider(
    state: State<AppState>,
    headers: HeaderMap,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    set_suspended(state, headers, id, body, false).await
}

async fn set_suspended(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    suspend: bool,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let id = provider_id(&id)?;
    let request: ReasonRequest = json_body(body, None)?;
    let command = if suspend {
        Command::SuspendProvider(id)
    } else {
        Command::ReinstateProvider(id)
    };
    let outcome = correct(&state, admin, command, request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "status": if suspend { "suspended" } else { "active" },
    })))
}

/// A point in time as RFC 3339 or unix seconds (a number or a string of digits).
#[derive(Deserialize)]
#[serde(untagged)]
enum Since {
    Seconds(u64),
    Text(String),
}

impl Since {
    fn unix_seconds(&self) -> Result<u64, Problem> {
        let malformed = || {
            Problem::bad_request(
                "malformed_since",
                "`since` is an RFC 3339 time (e.g. 2027-01-15T08:00:00Z) or unix seconds",
            )
        };
        match self {
            Since::Seconds(seconds) => Ok(*seconds),
            Since::Text(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse().map_err(|_| malformed())
            }
            Since::Text(text) => OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
                .ok_or_else(malformed),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    retroactive: bool,
    since: Option<Since>,
}

async fn revoke_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let id = provider_id(&id)?;
    let request: RevokeRequest = json_body(body, None)?;
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
    let command = Command::RevokeProvider {
        provider: id,
        withdraw_since_hour,
    };
    let outcome = correct(&state, admin, command, request.reason).await?;
    let mut body = json!({
        "changed": outcome.changed,
        "status": "revoked",
        "submissionsWithdrawn": outcome.submissions_withdrawn,
        "keysWithdrawn": outcome.keys_withdrawn,
    });
    if let Some(hour) = withdraw_since_hour {
        body["withdrawnSince"] = rfc3339(hour * 3600).into();
    }
    Ok(ok(body))
}

async fn invalidate_provider_codes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let id = provider_id(&id)?;
    let request: ReasonRequest = json_body(body, None)?;
    let command = Command::InvalidateProviderCodes(id);
    let outcome = correct(&state, admin, command, request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "codesInvalidated": outcome.codes_invalidated,
    })))
}

/// Where a submission stands, for operators and for the app that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubmissionStatus {
    /// Stored; none of its keys is in a published export yet.
    Accepted,
    /// At least one of its live keys is in a published hourly export.
    Published,
    /// Rolled back by an operator (its published keys are revoked).
    Withdrawn,
}

impl SubmissionStatus {
    pub fn name(self) -> &'static str {
        match self {
            SubmissionStatus::Accepted => "accepted",
            SubmissionStatus::Published => "published",
            SubmissionStatus::Withdrawn => "withdrawn",
        }
    }
}

/// A submission with its keys and its status.
pub(crate) struct SubmissionReport {
    pub submission: Submission,
    pub keys: Vec<KeyRecord>,
    pub status: SubmissionStatus,
}

/// The submission `id` and where it stands: withdrawn; else published once the exports
/// stream of its region has published one of its live keys (by the publisher's rule: a key
/// is out when it became available before the stream's `held_from`); else accepted.
pub(crate) async fn submission_status(
    state: &AppState,
    id: TrackingId,
) -> Result<Option<SubmissionReport>, StoreError> {
    let Some(submission) = state.store.submission(id).await? else {
        return Ok(None);
    };
    let keys = state.store.submission_keys(id).await?;
    let status = if submission.withdrawn {
        SubmissionStatus::Withdrawn
    } else {
        let margin = state
            .publisher
            .settings()
            .region(&submission.region)
            .policy
            .embargo_margin;
        let cursor = state
            .store
            .cursor(&submission.region, Stream::Exports)
            .await?;
        let published = cursor.is_some_and(|cursor| {
            keys.iter().any(|k| {
                k.withdrawn.is_none()
                    && publish::available_at(k.hour, &k.key, margin) < cursor.held_from
            })
        });
        if published {
            SubmissionStatus::Published
        } else {
            SubmissionStatus::Accepted
        }
    };
    Ok(Some(SubmissionReport {
        submission,
        keys,
        status,
    }))
}

fn unknown_submission() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown_submission",
        "no submission has this tracking ID",
    )
}

async fn show_submission(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tracking): Path<String>,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Scope::Read).await?;
    let id = tracking_id(&tracking)?;
    let report = submission_status(&state, id)
        .await?
        .ok_or_else(unknown_submission)?;
    let submission = &report.submission;
    Ok(ok(json!({
        "trackingId": id.to_hex(),
        "provider": submission.provider.to_hex(),
        "region": submission.region.as_str(),
        "submittedHour": rfc3339(submission.hour * 3600),
        "keys": report.keys.len(),
        "keysWithdrawn": report.keys.iter().filter(|k| k.withdrawn.is_some()).count(),
        "status": report.status.name(),
    })))
}

async fn withdraw_submission(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tracking): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let id = tracking_id(&tracking)?;
    let request: ReasonRequest = json_body(body, None)?;
    let command = Command::WithdrawSubmission(id);
    let outcome = correct(&state, admin, command, request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "submissionsWithdrawn": outcome.submissions_withdrawn,
        "keysWithdrawn": outcome.keys_withdrawn,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregisterRequest {
    keys: Vec<String>,
    #[serde(default)]
    reason: String,
}

async fn deregister_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let request: DeregisterRequest = json_body(body, None)?;
    if request.keys.is_empty() || request.keys.len() > MAX_KEYS {
        return Err(Problem::bad_request(
            "invalid_key_count",
            format!(
                "send 1 to {MAX_KEYS} keys per request; got {}",
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
    let outcome = correct(&state, admin, Command::DeregisterKeys(keys), request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "deregistered": outcome.keys_withdrawn,
        "alreadyWithdrawn": outcome.already_withdrawn,
        "unknown": outcome.unknown_keys,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateCodeRequest {
    code: String,
    #[serde(default)]
    reason: String,
}

async fn invalidate_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let request: InvalidateCodeRequest = json_body(body, None)?;
    let normalized =
        normalize_code(&request.code).map_err(|why| Problem::bad_request("malformed_code", why))?;
    let command = Command::InvalidateCode(state.hasher.code(&normalized));
    let outcome = correct(&state, admin, command, request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "codesInvalidated": outcome.codes_invalidated,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Scope::Read).await?;
    let Query(query) = query.map_err(|e| {
        Problem::bad_request(
            "malformed_query",
            format!("expected ?after=SEQ&limit=N with whole numbers: {e}"),
        )
    })?;
    let after = query.after.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_limit",
            format!("limit is 1 to {MAX_AUDIT_LIMIT}; got {limit}"),
        ));
    }
    let entries = state.store.audit(after, limit).await?;
    let next = entries.last().map_or(after, |(seq, _)| *seq);
    let entries: Vec<Value> = entries
        .into_iter()
        .filter_map(|(seq, event)| match event {
            Event::AdminAction {
                actor,
                at,
                action,
                target,
                reason,
                outcome,
                ..
            } => Some(json!({
                "seq": seq,
                "actor": actor.to_string(),
                "at": rfc3339(at),
                "action": action,
                "target": target,
                "reason": reason,
                "outcome": outcome,
            })),
            _ => None,
        })
        .collect();
    Ok(ok(json!({ "entries": entries, "next": next })))
}

async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&state, &headers, Scope::Admin).await?;
    let tokens: Vec<Value> = state
        .store
        .admin_tokens()
        .await?
        .iter()
        .map(|(id, token)| {
            json!({
                "id": id.to_hex(),
                "scope": token.scope.name(),
                "label": token.label,
                "revoked": token.revoked,
            })
        })
        .collect();
    Ok(ok(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    scope: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    reason: String,
}

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let request: CreateTokenRequest = json_body(body, None)?;
    let scope = Scope::parse(&request.scope).ok_or_else(|| {
        Problem::bad_request(
            "invalid_scope",
            format!("scope is read, operate or admin; got {:?}", request.scope),
        )
    })?;
    let label = request.label.trim().to_owned();
    if label.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::bad_request(
            "invalid_label",
            format!("a label is at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let (secret, command) = new_admin_token(&state.hasher, scope, &label);
    let Command::CreateToken { token, .. } = &command else {
        unreachable!("new_admin_token makes a CreateToken command");
    };
    let id = *token;
    correct(&state, admin, command, request.reason).await?;
    Ok(created(json!({
        "id": id.to_hex(),
        "scope": scope.name(),
        "label": label,
        "token": secret,
    })))
}

async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let id = AdminTokenId::from_hex(&id).ok_or_else(|| {
        Problem::bad_request(
            "malformed_token_id",
            "an admin token id is 16 hexadecimal characters",
        )
    })?;
    let request: ReasonRequest = json_body(body, None)?;
    let outcome = correct(&state, admin, Command::RevokeToken(id), request.reason).await?;
    Ok(ok(json!({ "changed": outcome.changed, "revoked": true })))
}
