//! Errors of the native API as RFC 9457 `application/problem+json`: an HTTP status, a stable
//! machine-readable `code`, and a `detail` sentence for people. Internals never leak: storage
//! failures are logged and answered with a generic 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confidant_core::DomainError;
use confidant_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extra members, e.g. `triesRemaining`. Boxed: most problems have none, and errors stay
    /// small on every `Result` path (a map's size depends on serde_json's features).
    pub extra: Box<serde_json::Map<String, serde_json::Value>>,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Box::default(),
            retry_after: None,
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(name.to_owned(), value.into());
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(object) = body.as_object_mut() {
            object.extend(*self.extra);
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<DomainError> for Problem {
    fn from(error: DomainError) -> Self {
        use DomainError::*;
        let (status, code) = match &error {
            UnknownProvider => (StatusCode::UNAUTHORIZED, "invalid_provider_token"),
            ProviderSuspended => (StatusCode::FORBIDDEN, "provider_suspended"),
            TtlOutOfRange { .. } => (StatusCode::BAD_REQUEST, "ttl_out_of_range"),
            InvalidCode => (StatusCode::UNAUTHORIZED, "invalid_code"),
            InvalidClaim => (StatusCode::UNAUTHORIZED, "invalid_upload_token"),
            AppKeyMismatch => (StatusCode::UNAUTHORIZED, "app_key_mismatch"),
            AppKeyRegistered => (StatusCode::UNAUTHORIZED, "app_key_registered"),
            NoKeys => (StatusCode::BAD_REQUEST, "no_keys"),
            TooManyKeysInRequest(_) => (StatusCode::BAD_REQUEST, "too_many_keys_in_request"),
            InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
            KeysSpanTooLong => (StatusCode::BAD_REQUEST, "keys_span_too_long"),
            KeyFromFuture { .. } => (StatusCode::BAD_REQUEST, "key_from_future"),
            KeyBudgetExceeded { .. } => (StatusCode::BAD_REQUEST, "key_budget_exceeded"),
            ReasonRequired => (StatusCode::BAD_REQUEST, "reason_required"),
            AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            NoSuchProvider => (StatusCode::NOT_FOUND, "unknown_provider"),
            ProviderRevoked => (StatusCode::CONFLICT, "provider_revoked"),
            NoSuchSubmission => (StatusCode::NOT_FOUND, "unknown_submission"),
            NoSuchKeys => (StatusCode::NOT_FOUND, "unknown_keys"),
            NoSuchCode => (StatusCode::NOT_FOUND, "unknown_code"),
            CodeAlreadyRedeemed => (StatusCode::CONFLICT, "code_already_redeemed"),
            NoSuchAdminToken => (StatusCode::NOT_FOUND, "unknown_admin_token"),
            UnknownNonce => (StatusCode::UNAUTHORIZED, "unknown_nonce"),
            NonceUsed => (StatusCode::CONFLICT, "nonce_used"),
            NoTokens => (StatusCode::BAD_REQUEST, "no_tokens"),
            TooManyTokens { .. } => (StatusCode::BAD_REQUEST, "too_many_tokens"),
            TokenDayOutOfRange { .. } => (StatusCode::BAD_REQUEST, "token_day_out_of_range"),
            UnknownProof => (StatusCode::FORBIDDEN, "unknown_proof"),
            ProofUsed => (StatusCode::CONFLICT, "proof_used"),
            LevelTooHigh { .. } => (StatusCode::FORBIDDEN, "level_too_high"),
            NoTans => (StatusCode::BAD_REQUEST, "no_tans"),
            NoPositiveResult => (StatusCode::FORBIDDEN, "no_positive_result"),
        };
        let problem = Self::new(status, code, error.to_string());
        match error {
            InvalidKey { index, .. } | KeyFromFuture { index, .. } => {
                problem.with("keyIndex", index)
            }
            KeyBudgetExceeded { remaining, .. } => problem.with("keyBudget", remaining),
            TokenDayOutOfRange { index, .. } => problem.with("tokenIndex", index),
            TooManyTokens { max, .. } => problem.with("maxTokens", max),
            LevelTooHigh { max, .. } => problem.with("maxLevel", max),
            _ => problem,
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Domain(domain) => domain.into(),
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the request collided with an existing record; retry it",
            ),
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the report could not be stored right now and was not accepted; retry later",
                )
                .retry_after(5)
            }
        }
    }
}

impl Problem {
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}
