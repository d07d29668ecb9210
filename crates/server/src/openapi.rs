//! `GET /openapi.json`: the OpenAPI 3 description of every route (`openapi.json` beside this
//! crate's sources), made true for this server: its code lifetimes, the postal-code
//! characters an encounter-token area needs, and `/dev/clock` only under `serve --dev`. The server tests check it names exactly the routes there are; CI runs
//! schemathesis against it (`tools/api-conformance`).

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use confidant_core::{CodeFormat, CodePolicy};
use serde_json::Value;

use crate::AppState;
use crate::tokens::TokenSettings;

const DESCRIPTION: &str = include_str!("../openapi.json");

/// The description for a server with `policy` and `tokens`, with or without the dev clock.
pub fn document(policy: &CodePolicy, tokens: &TokenSettings, dev_clock: bool) -> Bytes {
    let mut document: Value = serde_json::from_str(DESCRIPTION).expect("openapi.json is JSON");
    document["info"]["version"] = env!("CARGO_PKG_VERSION").into();
    // CodeRequest's anyOf has one branch per format, in this order.
    for (branch, format) in [CodeFormat::Short, CodeFormat::Long, CodeFormat::Card]
        .into_iter()
        .enumerate()
    {
        let pointer =
            format!("/components/schemas/CodeRequest/anyOf/{branch}/properties/ttlSeconds");
        let ttl = document
            .pointer_mut(&pointer)
            .expect("openapi.json has a ttlSeconds per code format");
        ttl["maximum"] = policy.ttl(format).into();
    }
    let area = document
        .pointer_mut("/components/schemas/Area/pattern")
        .expect("openapi.json has an Area pattern");
    let pattern = area
        .as_str()
        .unwrap_or_default()
        .replace("{2,}", &format!("{{{},}}", tokens.area_chars));
    *area = pattern.into();
    if !dev_clock && let Some(paths) = document["paths"].as_object_mut() {
        paths.remove("/dev/clock");
    }
    Bytes::from(document.to_string())
}

pub fn routes(document: Bytes) -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(move || async move {
            (
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                ],
                document,
            )
                .into_response()
        }),
    )
}
