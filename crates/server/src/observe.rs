//! Observability: `/metrics` in Prometheus text format, `/healthz` (the process answers) and
//! `/readyz` (the store answers), and the middleware that times every request by route.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confidant_core::{DomainError, SubmissionOutcome};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The process-wide recorder; installed once, shared by every app in the process.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host program's); then ours stays empty.
        metrics::set_global_recorder(recorder).ok();
        handle
    })
}

async fn metrics_text() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        prometheus().render(),
    )
        .into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store does not answer\n",
            )
                .into_response()
        }
    }
}

/// Records `confidant_http_request_seconds{route, method, status}`: the route pattern, never
/// the raw path (which could carry identifiers). Histogram handles are cached per thread, so
/// the hot path neither allocates labels nor takes the registry's lock.
pub async fn track_latency(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    thread_local! {
        static HISTOGRAMS: RefCell<HashMap<(String, Method, u16), metrics::Histogram>> =
            RefCell::new(HashMap::new());
    }
    HISTOGRAMS.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Lookup by borrowed parts first; only a new combination allocates.
        if let Some(histogram) = cache
            .iter()
            .find(|((r, m, s), _)| *s == status && *m == method && r == route)
            .map(|(_, h)| h)
        {
            histogram.record(elapsed);
            return;
        }
        let histogram = metrics::histogram!(
            "confidant_http_request_seconds",
            "route" => route.to_owned(),
            "method" => method.as_str().to_owned(),
            "status" => status.to_string(),
        );
        histogram.record(elapsed);
        cache.insert((route.to_owned(), method, status), histogram);
    });
    response
}

/// Counts an upload that was stored.
pub fn submission_accepted(protocol: &'static str, outcome: &SubmissionOutcome) {
    metrics::counter!("confidant_submissions_total", "protocol" => protocol, "result" => "accepted")
        .increment(1);
    metrics::counter!("confidant_keys_accepted_total", "protocol" => protocol)
        .increment(u64::from(outcome.inserted));
    metrics::counter!("confidant_keys_rejected_total", "reason" => "already_stored")
        .increment(u64::from(outcome.skipped));
    metrics::counter!("confidant_keys_rejected_total", "reason" => "too_old")
        .increment(u64::from(outcome.dropped));
}

/// Counts an upload that was refused, and its keys under the reason.
pub fn submission_rejected(protocol: &'static str, error: &DomainError, keys: usize) {
    metrics::counter!("confidant_submissions_total", "protocol" => protocol, "result" => "rejected")
        .increment(1);
    metrics::counter!("confidant_keys_rejected_total", "reason" => error.reason())
        .increment(keys as u64);
}

pub(crate) fn routes() -> Router<AppState> {
    prometheus();
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}
