//! The native `/v1` API as a provider and an app use it, and every way to get it wrong.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{BOTH, PROVIDER_TOKEN, T0, TestServer, rolling_start};

pub fn keys(seeds: &[u8]) -> Value {
    json!(
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| json!({
                "key": STANDARD.encode([*s; 16]),
                "rollingStartNumber": rolling_start(i as u32),
                "rollingPeriod": 144,
                "transmissionRisk": 4,
            }))
            .collect::<Vec<_>>()
    )
}

pub async fn post(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value, String) {
    let mut request = server.http.post(server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, content_type)
}

pub async fn verify(server: &TestServer, code: &str) -> String {
    let (status, body, _) = post(server, "/v1/verify", None, json!({"code": code})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keyBudget"], 43);
    body["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_code_to_stored_submission_in_every_format() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        for (n, format) in ["short", "long", "card"].into_iter().enumerate() {
            let code = server.code(format).await;
            let token = verify(&server, &code).await;
            let seed = 10 * n as u8;
            let (status, body, _) = post(
                &server,
                "/v1/submissions",
                Some(&token),
                json!({"keys": keys(&[seed, seed + 1, seed + 2]), "padding": "xxxx"}),
            )
            .await;
            assert_eq!(status, 200, "{dialect:?} {format}: {body}");
            assert_eq!(
                (body["inserted"].as_u64(), body["skipped"].as_u64()),
                (Some(3), Some(0))
            );
            let tracking = body["trackingId"].as_str().expect("tracking id");

            let status_response: Value = server
                .http
                .get(server.url(&format!("/v1/submissions/{tracking}")))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            assert_eq!(status_response["inserted"], 3);
            assert_eq!(status_response["submittedHour"], "2027-01-15T08:00:00Z");

            // The same keys again: all skipped, budget untouched.
            let (_, again, _) = post(
                &server,
                "/v1/submissions",
                Some(&token),
                json!({"keys": keys(&[seed, seed + 1])}),
            )
            .await;
            assert_eq!(
                (again["inserted"].as_u64(), again["skipped"].as_u64()),
                (Some(0), Some(2))
            );
        }
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_single_use_expire_and_race_safely() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let clock = ManualClock::new(T0);
        let server = TestServer::start(&db, clock.clone()).await;

        let code = server.code("short").await;
        verify(&server, &code).await;
        let (status, body, content_type) =
            post(&server, "/v1/verify", None, json!({"code": code})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_code"))
        );
        assert_eq!(content_type, "application/problem+json");

        // Short codes live 10 minutes.
        let code = server.code("short").await;
        clock.advance(600);
        let (status, _, _) = post(&server, "/v1/verify", None, json!({"code": code})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let long = server.code("long").await;
        clock.advance(23 * 3600);
        verify(&server, &long).await;

        // Two apps racing for one code: exactly one wins.
        for _ in 0..5 {
            let code = server.code("card").await;
            let body = json!({"code": code});
            let (a, b) = tokio::join!(
                post(&server, "/v1/verify", None, body.clone()),
                post(&server, "/v1/verify", None, body.clone())
            );
            let wins = [a.0, b.0].iter().filter(|s| **s == StatusCode::OK).count();
            assert_eq!(wins, 1, "{dialect:?}: {a:?} {b:?}");
        }
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_specific_errors_and_changes_nothing() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let token = verify(&server, &server.code("long").await).await;
        let before = server.store.projected_state().await.expect("state");

        let cases: Vec<(&str, Option<&str>, Value, StatusCode, &str)> = vec![
            (
                "/v1/codes",
                None,
                json!({}),
                StatusCode::UNAUTHORIZED,
                "invalid_provider_token",
            ),
            (
                "/v1/codes",
                Some("wrong-token"),
                json!({}),
                StatusCode::UNAUTHORIZED,
                "invalid_provider_token",
            ),
            (
                "/v1/codes",
                Some(PROVIDER_TOKEN),
                json!({"format": "qr"}),
                StatusCode::BAD_REQUEST,
                "unknown_code_format",
            ),
            (
                "/v1/codes",
                Some(PROVIDER_TOKEN),
                json!({"ttlSeconds": 601}),
                StatusCode::BAD_REQUEST,
                "ttl_out_of_range",
            ),
            (
                "/v1/codes",
                Some(PROVIDER_TOKEN),
                json!({"colour": "red"}),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                "/v1/verify",
                None,
                json!({"code": ""}),
                StatusCode::BAD_REQUEST,
                "malformed_code",
            ),
            (
                "/v1/verify",
                None,
                json!({"code": "12345678"}),
                StatusCode::UNAUTHORIZED,
                "invalid_code",
            ),
            (
                "/v1/verify",
                None,
                json!({"cod": "12345678"}),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                "/v1/submissions",
                None,
                json!({"keys": keys(&[1])}),
                StatusCode::UNAUTHORIZED,
                "invalid_upload_token",
            ),
            (
                "/v1/submissions",
                Some("not-a-token"),
                json!({"keys": keys(&[1])}),
                StatusCode::UNAUTHORIZED,
                "invalid_upload_token",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": []}),
                StatusCode::BAD_REQUEST,
                "no_keys",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": keys(&(0..29).collect::<Vec<u8>>())}),
                StatusCode::BAD_REQUEST,
                "too_many_keys_in_request",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": "AAAA", "rollingStartNumber": rolling_start(0)}]}),
                StatusCode::BAD_REQUEST,
                "invalid_key",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": "%%%", "rollingStartNumber": rolling_start(0)}]}),
                StatusCode::BAD_REQUEST,
                "invalid_key",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": STANDARD.encode([1u8; 16]), "rollingStartNumber": rolling_start(0) + 144}]}),
                StatusCode::BAD_REQUEST,
                "key_from_future",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": STANDARD.encode([1u8; 16]), "rollingStartNumber": rolling_start(0), "rollingPeriod": 145}]}),
                StatusCode::BAD_REQUEST,
                "invalid_key",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": STANDARD.encode([1u8; 16]), "rollingStartNumber": rolling_start(0), "transmissionRisk": 9}]}),
                StatusCode::BAD_REQUEST,
                "invalid_key",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!({"keys": [{"key": STANDARD.encode([1u8; 16]), "rollingStartNumber": rolling_start(0)}, {"key": STANDARD.encode([2u8; 16]), "rollingStartNumber": rolling_start(15)}]}),
                StatusCode::BAD_REQUEST,
                "keys_span_too_long",
            ),
            (
                "/v1/submissions",
                Some(&token),
                json!([1, 2]),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
        ];
        for (path, bearer, body, status, code) in cases {
            let (got_status, got, content_type) = post(&server, path, bearer, body.clone()).await;
            assert_eq!(
                (got_status, got["code"].as_str()),
                (status, Some(code)),
                "{dialect:?} {path} {body}: {got}"
            );
            assert_eq!(content_type, "application/problem+json");
            assert!(got["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
        // Oversized body.
        let huge = json!({"keys": keys(&[1]), "padding": "x".repeat(40_000)});
        let (status, body, _) = post(&server, "/v1/submissions", Some(&token), huge).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
        );
        // Unknown and malformed tracking IDs.
        for (id, status) in [
            ("00".repeat(16), StatusCode::NOT_FOUND),
            ("xyz".into(), StatusCode::BAD_REQUEST),
        ] {
            let response = server
                .http
                .get(server.url(&format!("/v1/submissions/{id}")))
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), status);
        }
        assert_eq!(
            server.store.projected_state().await.expect("state"),
            before,
            "{dialect:?}: bad input changed storage"
        );
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_from_one_address_are_throttled() {
    let db = TestDatabase::sqlite();
    let server = TestServer::start(&db, ManualClock::new(T0)).await;
    let code = server.code("short").await;
    let attempt = |address: &'static str, code: String| {
        let request = server
            .http
            .post(server.url("/v1/verify"))
            .header("x-forwarded-for", format!("10.9.9.9, {address}"))
            .json(&json!({"code": code}));
        async move { request.send().await.expect("request") }
    };
    for remaining in (0..8).rev() {
        let response = attempt("192.0.2.1", "00000000".into()).await;
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["triesRemaining"], remaining);
    }
    // Banned now, even with the right code; another address is not.
    let response = attempt("192.0.2.1", code.clone()).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(attempt("192.0.2.2", code).await.status(), 200);
    server.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_from_many_addresses_pause_redemption_for_an_hour() {
    let db = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(&db, ManualClock::new(T0), dir.path(), |settings| {
        settings.max_wrong_codes_per_hour = 5;
    })
    .await;
    let code = server.code("long").await;
    let attempt = |address: String, code: String| {
        let request = server
            .http
            .post(server.url("/v1/verify"))
            .header("x-forwarded-for", address)
            .json(&json!({"code": code}));
        async move { request.send().await.expect("request") }
    };
    // Five addresses, one wrong guess each, a minute apart: none is banned on its own.
    for n in 0..5 {
        let response = attempt(format!("198.51.100.{n}"), "00000000".into()).await;
        assert_eq!(response.status(), 401);
        server.clock.advance(60);
    }
    // The ceiling holds for everyone, even a fresh address with the right code.
    let response = attempt("203.0.113.7".into(), code.clone()).await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(retry, 3600 - 5 * 60, "until the first guess is an hour old");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "redemption_paused");
    // The pause expires with the hour: the code still works.
    server.clock.advance(retry);
    assert_eq!(attempt("203.0.113.7".into(), code).await.status(), 200);
    server.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_reports_survive_a_restart() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let token = verify(&server, &server.code("long").await).await;
        let (status, body, _) = post(
            &server,
            "/v1/submissions",
            Some(&token),
            json!({"keys": keys(&[7, 8])}),
        )
        .await;
        assert_eq!(status, 200);
        let tracking = body["trackingId"].as_str().expect("id").to_owned();
        server.stop().await;

        let restarted = TestServer::start(&db, ManualClock::new(T0 + 60)).await;
        let response = restarted
            .http
            .get(restarted.url(&format!("/v1/submissions/{tracking}")))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200);
        assert_eq!(
            restarted
                .store
                .projected_state()
                .await
                .expect("state")
                .keys
                .len(),
            2
        );
        // The upload token still works after the restart.
        let (status, _, _) = post(
            &restarted,
            "/v1/submissions",
            Some(&token),
            json!({"keys": keys(&[9])}),
        )
        .await;
        assert_eq!(status, 200);
        restarted.stop().await;
        db.finish().await;
    }
}
