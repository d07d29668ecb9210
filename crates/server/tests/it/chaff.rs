//! Chaff: fake requests marked `X-Chaff: 1` get the answers real ones get, in status, size
//! class and timing, and leave no trace.

use std::time::{Duration, Instant};

use confidant_server::ManualClock;
use confidant_store::Dialect;
use confidant_store::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::native::{keys, post, verify};
use crate::{BOTH, T0, TestServer};

/// Status, body size and time of one request.
async fn timed(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    body: Value,
    chaff: bool,
) -> (StatusCode, usize, Duration) {
    let mut request = server.http.post(server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if chaff {
        request = request.header("X-Chaff", "1");
    }
    let started = Instant::now();
    let response = request.send().await.expect("request");
    let status = response.status();
    let bytes = response.bytes().await.expect("body").len();
    (status, bytes, started.elapsed())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaff_is_answered_like_real_requests_and_stores_nothing() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (mut real, mut fake) = (Vec::new(), Vec::new());
        for round in 1..=14u8 {
            let code = server.code("short").await;
            let seeds: Vec<u8> = (0..round).map(|i| round * 16 + i).collect();
            let verified = timed(&server, "/v1/verify", None, json!({"code": code}), false).await;
            let token = {
                // The real token is needed to upload: redeem a second code for it.
                let code = server.code("short").await;
                verify(&server, &code).await
            };
            let submitted = timed(
                &server,
                "/v1/submissions",
                Some(&token),
                json!({"keys": keys(&seeds)}),
                false,
            )
            .await;
            real.push((verified.0, verified.1, submitted.0, submitted.1));

            let before = server.store.events().await.expect("events").len();
            let fake_code = format!("{:08}", u32::from(round) * 7_654_321 % 100_000_000);
            let verified = timed(
                &server,
                "/v1/verify",
                None,
                json!({"code": fake_code}),
                true,
            )
            .await;
            let other_seeds: Vec<u8> = seeds.iter().map(|s| s.wrapping_add(100)).collect();
            let submitted = timed(
                &server,
                "/v1/submissions",
                Some("not-a-real-upload-token"),
                json!({"keys": keys(&other_seeds)}),
                true,
            )
            .await;
            fake.push((verified.0, verified.1, submitted.0, submitted.1));
            let after = server.store.events().await.expect("events").len();
            assert_eq!(before, after, "{dialect:?}: chaff stored nothing");
        }
        for (status_v, size_v, status_s, size_s) in real.iter().chain(&fake) {
            assert_eq!((*status_v, *status_s), (StatusCode::OK, StatusCode::OK));
            assert_eq!(
                size_v % 512,
                0,
                "{dialect:?}: verify answers come in size classes"
            );
            assert_eq!(
                size_s % 512,
                0,
                "{dialect:?}: upload answers come in size classes"
            );
        }
        let sizes = |rows: &[(StatusCode, usize, StatusCode, usize)]| {
            let mut sizes: Vec<(usize, usize)> = rows.iter().map(|r| (r.1, r.3)).collect();
            sizes.sort();
            sizes
        };
        assert_eq!(
            sizes(&real),
            sizes(&fake),
            "{dialect:?}: the same size distribution"
        );

        // Fourteen chaff redemptions with wrong codes cost this address no tries.
        let (status, body, _) =
            post(&server, "/v1/verify", None, json!({"code": "00000001"})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["triesRemaining"], 7, "{dialect:?}: {body}");
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaff_takes_about_as_long_as_real_uploads() {
    let db = TestDatabase::create(Dialect::Sqlite).await;
    let server = TestServer::start(&db, ManualClock::new(T0)).await;
    let (mut real, mut fake) = (Vec::new(), Vec::new());
    for round in 0..30u8 {
        let token = {
            let code = server.code("short").await;
            verify(&server, &code).await
        };
        let body = json!({"keys": keys(&[round, round.wrapping_add(100)])});
        let (status, _, took) = timed(
            &server,
            "/v1/submissions",
            Some(&token),
            body.clone(),
            false,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        real.push(took);
        let (status, _, took) = timed(&server, "/v1/submissions", Some("chaff"), body, true).await;
        assert_eq!(status, StatusCode::OK);
        fake.push(took);
    }
    let (real, fake) = (median(real), median(fake));
    // Generous: a shared machine's noise must not fail the test, an instant answer must.
    assert!(
        fake * 3 >= real && fake <= real * 3,
        "median real {real:?}, median chaff {fake:?}"
    );
    server.stop().await;
    db.finish().await;
}
