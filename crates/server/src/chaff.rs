//! Plausible deniability: apps send fake (chaff) requests, marked `X-Chaff: 1`, so that a
//! network observer cannot tell a phone that reports a diagnosis from one that does not.
//!
//! A chaff request is parsed like a real one, stores nothing and touches no counter. Its
//! answer has the status of a real success, the same size class (every success of the
//! endpoints that reveal a diagnosis is padded to a multiple of [`SIZE_CLASS`] bytes) and a
//! delay drawn from the processing times of recent real requests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rand_core::{OsRng, RngCore};

/// Successful answers of `/v1/verify` and `/v1/submissions` are padded to a multiple of this.
pub const SIZE_CLASS: usize = 512;
/// Real processing times remembered per endpoint.
const SAMPLES: usize = 256;
/// Before any real request has been timed: a commit's worth of delay.
const DEFAULT_DELAY: (u64, u64) = (5, 40);

pub fn is_chaff(headers: &HeaderMap) -> bool {
    headers
        .get("x-chaff")
        .is_some_and(|value| value.as_bytes() == b"1")
}

/// The endpoints whose timing chaff imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Verify,
    Submit,
}

/// Recent processing times of real successes, per endpoint, to draw chaff delays from.
#[derive(Default)]
pub struct Timings {
    verify: Mutex<VecDeque<Duration>>,
    submit: Mutex<VecDeque<Duration>>,
}

impl Timings {
    fn samples(&self, endpoint: Endpoint) -> &Mutex<VecDeque<Duration>> {
        match endpoint {
            Endpoint::Verify => &self.verify,
            Endpoint::Submit => &self.submit,
        }
    }

    pub fn record(&self, endpoint: Endpoint, took: Duration) {
        let mut samples = self.samples(endpoint).lock().expect("timings lock");
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(took);
    }

    /// A delay distributed as recent real processing times.
    pub fn draw(&self, endpoint: Endpoint) -> Duration {
        let samples = self.samples(endpoint).lock().expect("timings lock");
        if samples.is_empty() {
            let (low, high) = DEFAULT_DELAY;
            return Duration::from_millis(low + OsRng.next_u64() % (high - low + 1));
        }
        samples[(OsRng.next_u64() % samples.len() as u64) as usize]
    }
}

/// A JSON success padded to its size class with a `padding` member of spaces.
pub fn padded_json(mut body: serde_json::Value) -> Response {
    let bare = body.to_string().len();
    // `"padding":""` and its comma add 13 bytes before any filler.
    let filler = (bare + 13).next_multiple_of(SIZE_CLASS) - (bare + 13);
    if let Some(object) = body.as_object_mut() {
        object.insert("padding".into(), " ".repeat(filler).into());
    }
    let mut response = body.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn padding_reaches_the_size_class_whatever_the_content() {
        for body in [
            serde_json::json!({"a": 1}),
            serde_json::json!({"token": "x".repeat(43), "keyBudget": 43}),
            serde_json::json!({"warnings": ["w".repeat(600)]}),
        ] {
            let response = padded_json(body);
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            assert_eq!(bytes.len() % SIZE_CLASS, 0, "{}", bytes.len());
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("still JSON");
            assert!(parsed["padding"].is_string());
        }
    }

    #[test]
    fn delays_are_drawn_from_what_was_recorded() {
        let timings = Timings::default();
        let first = timings.draw(Endpoint::Submit);
        assert!((5..=40).contains(&(first.as_millis() as u64)));
        for ms in [100, 200, 300] {
            timings.record(Endpoint::Submit, Duration::from_millis(ms));
        }
        for _ in 0..50 {
            let drawn = timings.draw(Endpoint::Submit).as_millis();
            assert!([100, 200, 300].contains(&drawn), "{drawn}");
        }
        for n in 0..(SAMPLES as u64 + 10) {
            timings.record(Endpoint::Verify, Duration::from_millis(n));
        }
        assert_eq!(timings.verify.lock().expect("lock").len(), SAMPLES);
    }
}
