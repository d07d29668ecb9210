//! `serve --dev` only: `POST /dev/clock` moves the server's clock forward and runs the
//! publisher and the janitor for everything then due, so demos and end-to-end tests can watch
//! embargo, publication and retention without waiting days. The route does not exist unless
//! the server was started with `--dev`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::AppState;
use crate::clock::OffsetClock;
use crate::problem::Problem;

/// At most ten years per call: enough for any demo, far from overflowing.
const MAX_ADVANCE_SECONDS: u64 = 10 * 366 * 86_400;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Advance {
    advance_seconds: u64,
}

async fn advance(state: AppState, clock: OffsetClock, body: Bytes) -> Response {
    // Any content type: `curl -d '{"advanceSeconds":60}'` is how people call this.
    let advance = match serde_json::from_slice::<Advance>(&body) {
        Ok(advance) if advance.advance_seconds <= MAX_ADVANCE_SECONDS => advance,
        Ok(_) => {
            return Problem::bad_request(
                "invalid_advance",
                format!("advanceSeconds must be at most {MAX_ADVANCE_SECONDS}"),
            )
            .into_response();
        }
        Err(error) => {
            return Problem::bad_request(
                "invalid_body",
                format!(
                    "expected {{\"advanceSeconds\": N}} with N a whole number of seconds: {error}"
                ),
            )
            .into_response();
        }
    };
    clock.advance(advance.advance_seconds);
    let now = state.now();
    match state.publisher.run_due(now).await {
        Ok(report) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "now": now,
                "leader": report.leader,
                "windowsPublished": report.windows,
                "filesPublished": report.files,
                "keysPublished": report.keys,
                "retention": report.retention.map(|r| serde_json::json!({
                    "codes": r.codes,
                    "claims": r.claims,
                    "keys": r.keys,
                    "files": r.retired_files.len(),
                    "purgedEvents": r.purged_events,
                })),
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "publishing after a clock advance failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "publish_failed",
                "The clock moved, but publishing failed; see the server log.",
            )
            .into_response()
        }
    }
}

pub fn routes(clock: OffsetClock) -> Router<AppState> {
    Router::new().route(
        "/dev/clock",
        post(|State(state): State<AppState>, body: Bytes| async move {
            advance(state, clock, body).await
        }),
    )
}
