//! COVID Shield's download side: `GET /retrieve/{region}/{day}/{hmac}`, the exposure
//! configuration and `/services/version.json`, exactly as `../shared/design/covidshield.md`.
//!
//! A day's file holds the keys *submitted* that UTC day, so it is built from the store on
//! demand (deterministically: RFC 6979 signatures, sorted keys) and kept in memory for the
//! rest of the day.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use confidant_core::Region;
use confidant_core::publish::{self, PUBLISHED_KEY_MAX_AGE};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AppState;

/// Days older than this answer 410 Gone.
const MAX_AGE_DAYS: u64 = 14;

type DayFiles = HashMap<(Region, u64), Bytes>;

/// Built day files, by (region, day), valid while the generation (today, and the last
/// withdrawal: withdrawn keys leave the day files at once) stays the same.
#[derive(Default)]
pub struct DayCache {
    entries: Mutex<((u64, u64), DayFiles)>,
}

impl DayCache {
    fn get(&self, generation: (u64, u64), key: &(Region, u64)) -> Option<Bytes> {
        let entries = self.entries.lock().expect("cache lock");
        (entries.0 == generation).then(|| entries.1.get(key).cloned())?
    }

    fn insert(&self, generation: (u64, u64), key: (Region, u64), bytes: Bytes) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.0 != generation {
            *entries = (generation, HashMap::new());
        }
        entries.1.insert(key, bytes);
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// HMAC-SHA256(secret, "{region}:{day}:{hour}") for the current hour ± 1, compared in constant
/// time.
fn authorized(secret: &[u8], region: &str, day: &str, mac_hex: &str, now: u64) -> bool {
    let Ok(given) = hex::decode(mac_hex) else {
        return false;
    };
    if given.len() != 32 {
        return false;
    }
    let hour = now / 3600;
    [hour.saturating_sub(1), hour, hour + 1].iter().any(|h| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(format!("{region}:{day}:{h}").as_bytes());
        mac.verify_slice(&given).is_ok()
    })
}

async fn retrieve(
    State(state): State<AppState>,
    method: Method,
    Path((region, day, mac)): Path<(String, String, String)>,
) -> Response {
    let now = state.now();
    if !authorized(&state.retrieval_secret, &region, &day, &mac, now) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let (Ok(region), Some(day)) = (
        Region::try_from(region),
        day.parse::<u64>().ok().filter(|_| day.len() <= 6),
    ) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let today = now / 86_400;
    if day >= today {
        // Today's keys are not served (privacy); the future has none.
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if day + MAX_AGE_DAYS < today {
        return text(StatusCode::GONE, "gone\n");
    }
    let key = (region, day);
    let Ok(withdrawals) = state.store.withdrawals().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n");
    };
    let generation = (today, withdrawals);
    let bytes = match state.day_cache.get(generation, &key) {
        Some(bytes) => bytes,
        None => match build_day(&state, &key.0, day, now).await {
            Ok(bytes) => {
                state.day_cache.insert(generation, key, bytes.clone());
                bytes
            }
            Err(message) => {
                tracing::error!(error = %message, "building a COVID Shield day file failed");
                return text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n");
            }
        },
    };
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600, max-stale=600"),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn build_day(state: &AppState, region: &Region, day: u64, now: u64) -> Result<Bytes, String> {
    let keys: Vec<_> = state
        .store
        .keys_submitted(region, day * 24, day * 24 + 24)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| publish::valid_until(key) + PUBLISHED_KEY_MAX_AGE > now)
        .collect();
    let settings = state.publisher.settings().region(region);
    let mut zips = publish::export_files(
        &settings.export_region,
        day * 86_400,
        (day + 1) * 86_400,
        &keys,
        &[],
        &settings.signers,
        usize::MAX,
    )
    .map_err(|e| e.to_string())?;
    Ok(Bytes::from(zips.remove(0)))
}

async fn exposure_configuration(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Response {
    let Some(region) = file
        .strip_suffix(".json")
        .and_then(|r| Region::try_from(r.to_owned()).ok())
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let settings = state.publisher.settings().region(&region);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        settings.exposure_configuration.to_string(),
    )
        .into_response()
}

async fn version() -> Response {
    let body = serde_json::json!({
        "branch": concat!("v", env!("CARGO_PKG_VERSION")),
        "revision": option_env!("CONFIDANT_REVISION").unwrap_or("unknown"),
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/retrieve/{region}/{day}/{hmac}", any(retrieve))
        .route(
            "/exposure-configuration/{file}",
            get(exposure_configuration),
        )
        .route("/services/version.json", get(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(secret: &[u8], message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn the_hmac_window_is_the_current_hour_plus_minus_one() {
        let secret = [7u8; 32];
        let now = 500_000 * 3600 + 10;
        for hour in [499_999, 500_000, 500_001] {
            let given = mac(&secret, &format!("302:20833:{hour}"));
            assert!(authorized(&secret, "302", "20833", &given, now), "{hour}");
        }
        for hour in [499_998, 500_002] {
            let given = mac(&secret, &format!("302:20833:{hour}"));
            assert!(!authorized(&secret, "302", "20833", &given, now), "{hour}");
        }
        let other_day = mac(&secret, "302:20832:500000");
        assert!(!authorized(&secret, "302", "20833", &other_day, now));
        assert!(!authorized(&secret, "302", "20833", "zz", now));
    }
}
