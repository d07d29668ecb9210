//! The admin API (`/admin/v1`): what operators do to providers, submissions, keys, codes and
//! admin tokens, and the audit trail of it.
//!
//! Every request carries an admin token (`Authorization: Bearer cadm_…`), stored only as a
//! keyed hash; its scope (read < operate < admin) decides what it may do. Every change goes
//! through `core::corrections::decide` in the store, which records it with the acting token
//! and the request's `reason` in the same transaction; a refused or empty command records
//! nothing. This module only turns requests (bodies parsed by [`crate::bodies`]) into `Command`s
//! and formats answers: it holds no rules of its own, except how a submission's status is
//! derived from publication ([`submission_status`], shared with
//! `GET /v1/submissions/{trackingId}`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confidant_core::corrections::{Actor, Command, Outcome, Scope};
use confidant_core::publish::{self, Stream};
use confidant_core::state::{KeyRecord, TokenSubmission};
use confidant_core::{
    AdminTokenId, Event, KeyedHasher, Provider, ProviderId, Submission, TrackingId,
};
use confidant_store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::bodies::{self, CreateTokenRequest, RegisterRequest, RevokeRequest, provider_id};
use crate::problem::Problem;
use crate::v1::{BODY_LIMIT, bearer, random_bytes, read_body, rfc3339};

/// Most audit entries in one page.
const MAX_AUDIT_LIMIT: u32 = 1000;
const DEFAULT_AUDIT_LIMIT: u32 = 100;

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
        // A list of 100,000 TANs with their line breaks.
        .route(
            "/admin/v1/tans",
            post(import_tans).layer(DefaultBodyLimit::max(TAN_BODY_LIMIT)),
        )
}

/// Bytes of a TAN import: [`bodies::MAX_TANS_PER_IMPORT`] TANs of up to 64 characters.
const TAN_BODY_LIMIT: usize = 8 << 20;

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

async fn register_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let RegisterRequest {
        name,
        region,
        reason,
    } = bodies::register_request(&read_body(body)?)?;
    let id = ProviderId(random_bytes());
    let api_token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let command = Command::RegisterProvider {
        provider: id,
        name: name.clone(),
        region: region.clone(),
        token_hash: state.hasher.token(&api_token),
    };
    correct(&state, admin, command, reason).await?;
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
    let reason = bodies::reason_request(&read_body(body)?)?;
    let command = if suspend {
        Command::SuspendProvider(id)
    } else {
        Command::ReinstateProvider(id)
    };
    let outcome = correct(&state, admin, command, reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "status": if suspend { "suspended" } else { "active" },
    })))
}

async fn revoke_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let id = provider_id(&id)?;
    let RevokeRequest {
        withdraw_since_hour,
        reason,
    } = bodies::revoke_request(&read_body(body)?)?;
    let command = Command::RevokeProvider {
        provider: id,
        withdraw_since_hour,
    };
    let outcome = correct(&state, admin, command, reason).await?;
    let mut body = json!({
        "changed": outcome.changed,
        "status": "revoked",
        "submissionsWithdrawn": outcome.submissions_withdrawn,
        "keysWithdrawn": outcome.keys_withdrawn,
        "tokensWithdrawn": outcome.tokens_withdrawn,
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
    let reason = bodies::reason_request(&read_body(body)?)?;
    let command = Command::InvalidateProviderCodes(id);
    let outcome = correct(&state, admin, command, reason).await?;
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

/// A token upload and where it stands: withdrawn; else published once an area's token stream
/// has published its hour; else accepted.
pub(crate) async fn token_submission_status(
    state: &AppState,
    id: TrackingId,
) -> Result<Option<(TokenSubmission, SubmissionStatus)>, StoreError> {
    let Some(submission) = state.store.token_submission(id).await? else {
        return Ok(None);
    };
    let mut status = if submission.withdrawn {
        SubmissionStatus::Withdrawn
    } else {
        SubmissionStatus::Accepted
    };
    if status == SubmissionStatus::Accepted {
        for area in state.store.token_submission_areas(id).await? {
            let cursor = state.store.cursor(&area, Stream::Tokens).await?;
            if publish::token_published(cursor.as_ref(), submission.hour) {
                status = SubmissionStatus::Published;
                break;
            }
        }
    }
    Ok(Some((submission, status)))
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
    let Some(report) = submission_status(&state, id).await? else {
        let (submission, status) = token_submission_status(&state, id)
            .await?
            .ok_or_else(unknown_submission)?;
        return Ok(ok(json!({
            "trackingId": id.to_hex(),
            "protocol": "tokens",
            "provider": submission.provider.to_hex(),
            "level": submission.level,
            "submittedHour": rfc3339(submission.hour * 3600),
            "tokens": submission.inserted,
            "status": status.name(),
        })));
    };
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
    let reason = bodies::reason_request(&read_body(body)?)?;
    let command = Command::WithdrawSubmission(id);
    let outcome = correct(&state, admin, command, reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "submissionsWithdrawn": outcome.submissions_withdrawn,
        "keysWithdrawn": outcome.keys_withdrawn,
        "tokensWithdrawn": outcome.tokens_withdrawn,
    })))
}

async fn deregister_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let request = bodies::deregister_request(&read_body(body)?)?;
    let outcome = correct(
        &state,
        admin,
        Command::DeregisterKeys(request.keys),
        request.reason,
    )
    .await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "deregistered": outcome.keys_withdrawn,
        "alreadyWithdrawn": outcome.already_withdrawn,
        "unknown": outcome.unknown_keys,
    })))
}

async fn invalidate_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let request = bodies::invalidate_code_request(&read_body(body)?)?;
    let command = Command::InvalidateCode(state.hasher.code(&request.code));
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

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Admin).await?;
    let CreateTokenRequest {
        scope,
        label,
        reason,
    } = bodies::create_token_request(&read_body(body)?)?;
    let (secret, command) = new_admin_token(&state.hasher, scope, &label);
    let Command::CreateToken { token, .. } = &command else {
        unreachable!("new_admin_token makes a CreateToken command");
    };
    let id = *token;
    correct(&state, admin, command, reason).await?;
    Ok(created(json!({
        "id": id.to_hex(),
        "scope": scope.name(),
        "label": label,
        "token": secret,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TanImportQuery {
    provider: Option<String>,
    expires_at: Option<String>,
    reason: Option<String>,
}

/// `POST /admin/v1/tans`: a health authority's TAN list, as JSON or as `text/csv` (then the
/// provider, expiry and reason come as query parameters).
async fn import_tans(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TanImportQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let admin = authorize(&state, &headers, Scope::Operate).await?;
    let body = body.map_err(|rejection| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the TAN list could not be read ({rejection}); the limit is {TAN_BODY_LIMIT} bytes"
            ),
        )
    })?;
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv") || v.starts_with("text/plain"));
    let request = if csv {
        let Query(query) = query.map_err(|e| {
            Problem::bad_request(
                "malformed_query",
                format!("expected ?provider=ID&expiresAt=TIME&reason=TEXT: {e}"),
            )
        })?;
        bodies::tan_import_csv(
            &body,
            query.provider.as_deref(),
            query.expires_at.as_deref(),
            query.reason.as_deref(),
        )?
    } else {
        bodies::tan_import_request(&body)?
    };
    let now = state.now();
    let expires_at = request
        .expires_at
        .unwrap_or(now + bodies::DEFAULT_TAN_TTL_SECONDS);
    let tans = request
        .tans
        .iter()
        .map(|tan| state.hasher.code(tan))
        .collect();
    let command = Command::ImportTans {
        provider: request.provider,
        tans,
        expires_at,
    };
    let outcome = correct(&state, admin, command, request.reason).await?;
    Ok(ok(json!({
        "changed": outcome.changed,
        "imported": outcome.tans_imported,
        "skipped": outcome.tans_skipped,
        "expiresAt": rfc3339(expires_at),
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
    let reason = bodies::reason_request(&read_body(body)?)?;
    let outcome = correct(&state, admin, Command::RevokeToken(id), reason).await?;
    Ok(ok(json!({ "changed": outcome.changed, "revoked": true })))
}
