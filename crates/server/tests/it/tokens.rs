//! Encounter tokens over HTTP, on both stores: a health authority's TAN list is imported, a
//! TAN is redeemed for nonces, token hashes are uploaded and published per area (raw list,
//! filter, confirmation buckets), a matched phone chains at the next level and contributes
//! research data; reuse, forgery, levels and corrections are refused or applied as the rules
//! say, and the log replays to the same state.

use confidant_core::SmallBatch;
use confidant_core::corrections::Scope;
use confidant_core::encounter::{Level, Token};
use confidant_core::tokenfile::{self, TokenFile, TokenIndex};
use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{LAB, act, admin, bootstrap, done, refused};
use crate::{BOTH, T0, TestServer};

const HOUR: u64 = 3600;
/// The UTC day of [`T0`].
const TODAY: u64 = T0 / 86_400;

/// A report token only its two phones know; its hash is what gets published.
fn token(seed: u8) -> Token {
    Token([seed; 32])
}

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url(path))
        .header("x-forwarded-for", "192.0.2.7")
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn start(db: &TestDatabase) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_with(db, ManualClock::new(T0), dir.path(), |settings| {
        settings.publish.tokens.small_batch = SmallBatch::Off;
        settings.publish.default_policy.small_batch = SmallBatch::Off;
    })
    .await;
    server.keep_dir(dir);
    server
}

/// Imports TANs as the authority `LAB` with an operate token; returns the answer.
async fn import(server: &TestServer, operator: &str, tans: &[&str]) -> Value {
    done(
        act(
            server,
            "/admin/v1/tans",
            operator,
            json!({"provider": LAB, "tans": tans, "reason": "weekly TAN list"}),
        )
        .await,
    )
}

/// Redeems a TAN; returns its nonces.
async fn redeem(server: &TestServer, tan: &str) -> Vec<String> {
    let body = done(post(server, "/v1/tokens/redeem", json!({"tan": tan})).await);
    body["nonces"]
        .as_array()
        .expect("nonces")
        .iter()
        .map(|n| n.as_str().expect("hex").to_owned())
        .collect()
}

fn upload_body(authorisation: (&str, String), area: &str, tokens: &[Token]) -> Value {
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"hash": t.hash().to_hex(), "day": TODAY - 1}))
        .collect();
    let mut body = json!({"area": area, "tokens": tokens});
    body[authorisation.0] = authorisation.1.into();
    body
}

async fn upload(
    server: &TestServer,
    nonce: &str,
    area: &str,
    tokens: &[Token],
) -> (StatusCode, Value) {
    post(
        server,
        "/v1/tokens",
        upload_body(("nonce", nonce.to_owned()), area, tokens),
    )
    .await
}

async fn chain(
    server: &TestServer,
    preimage: &Token,
    area: &str,
    tokens: &[Token],
) -> (StatusCode, Value) {
    let body = upload_body(("preimage", preimage.to_hex()), area, tokens);
    post(server, "/v1/tokens/chained", body).await
}

/// Publishes everything due `hours` after [`T0`].
async fn publish_at(server: &TestServer, hours: u64) {
    server.clock.set(T0 + hours * HOUR);
    server
        .publisher
        .run_due(T0 + hours * HOUR)
        .await
        .expect("published");
}

/// What `GET /v1/submissions/{trackingId}` tells the app about its token upload.
async fn fate(server: &TestServer, tracking: &str) -> String {
    let response = server
        .http
        .get(server.url(&format!("/v1/submissions/{tracking}")))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["protocol"], "tokens");
    body["status"].as_str().expect("status").to_owned()
}

async fn fetch(server: &TestServer, path: &str) -> (StatusCode, bytes::Bytes) {
    let response = server
        .http
        .get(server.url(path))
        .send()
        .await
        .expect("request");
    (response.status(), response.bytes().await.expect("body"))
}

/// What a phone downloads for `area`: the index and every batch's files, each verified against
/// the server's key and the index.
async fn download(server: &TestServer, area: &str) -> (TokenIndex, Vec<(TokenFile, TokenFile)>) {
    let (status, bytes) = fetch(server, &format!("/tokens/{area}/index.json")).await;
    assert_eq!(status, StatusCode::OK);
    let index: TokenIndex = serde_json::from_slice(&bytes).expect("index");
    let mut batches = Vec::new();
    for batch in &index.batches {
        let mut files = Vec::new();
        for entry in [&batch.list, &batch.filter] {
            let (status, bytes) = fetch(server, &format!("/tokens/{area}/{}", entry.file)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(bytes.len() as u64, entry.bytes);
            assert_eq!(
                hex::encode(confidant_core::feed::file_hash(&bytes)),
                entry.sha256
            );
            let file = tokenfile::verify(&bytes, &server.public_key).expect("signed by the server");
            assert_eq!((file.area.as_str(), file.seq), (area, batch.seq));
            files.push(file);
        }
        let filter = files.pop().expect("filter");
        let list = files.pop().expect("list");
        batches.push((list, filter));
    }
    (index, batches)
}

/// The level at which the phone holding check token `check` finds it in `area`, through the
/// filter and its confirmation bucket, as a phone does; `None` if removed or never published.
async fn matched_level(server: &TestServer, area: &str, check: &Token) -> Option<Level> {
    let (index, batches) = download(server, area).await;
    let hash = check.hash();
    let mut level = None;
    for (_, filter) in &batches {
        if let Some((_, candidate)) = filter.filter_candidates(&[hash]).first() {
            let bucket = tokenfile::bucket_of(&hash, index.bucket_bits);
            let name = tokenfile::file_name(tokenfile::TokenKind::Bucket, filter.seq, Some(bucket));
            let (status, bytes) = fetch(server, &format!("/tokens/{area}/{name}")).await;
            assert_eq!(status, StatusCode::OK, "bucket {name}");
            let bucket = tokenfile::verify(&bytes, &server.public_key).expect("signed bucket");
            if let Some(confirmed) = bucket.confirms(&hash) {
                assert_eq!(confirmed, *candidate);
                level = Some(confirmed);
            }
        }
        if filter.removed().contains(&hash) {
            level = None;
        }
    }
    level
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tan_to_nonce_to_upload_to_filter_to_match_and_chained_notifications() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = start(&db).await;
        let (operator, _) = bootstrap(&server, Scope::Operate, "health authority").await;

        let imported = import(
            &server,
            &operator,
            &["TAN-0001-AAAA", "tan0002bbbb", "TAN0003CCCC"],
        )
        .await;
        assert_eq!(
            (imported["imported"].as_u64(), imported["skipped"].as_u64()),
            (Some(3), Some(0))
        );
        // Imported again (and once more in the list): nothing new, nothing recorded.
        let again = import(&server, &operator, &["TAN0001AAAA", "TAN0001AAAA"]).await;
        assert_eq!(
            (
                again["imported"].as_u64(),
                again["skipped"].as_u64(),
                again["changed"].as_bool()
            ),
            (Some(0), Some(2), Some(false))
        );

        // Alice tests positive and uploads two encounters; one she redacted stays on her phone.
        let nonces = redeem(&server, "tan0001aaaa").await;
        assert_eq!(nonces.len(), 3);
        let (met_bob, met_dana, redacted) = (token(1), token(2), token(3));
        let receipt = done(upload(&server, &nonces[0], "64283", &[met_bob, met_dana]).await);
        assert_eq!(
            (receipt["accepted"].as_u64(), receipt["level"].as_u64()),
            (Some(2), Some(0))
        );
        // A nonce works once; a TAN too.
        refused(
            upload(&server, &nonces[0], "64283", &[redacted]).await,
            StatusCode::CONFLICT,
            "nonce_used",
        );
        refused(
            upload(&server, &"ab".repeat(32), "64283", &[redacted]).await,
            StatusCode::UNAUTHORIZED,
            "unknown_nonce",
        );
        refused(
            post(&server, "/v1/tokens/redeem", json!({"tan": "TAN0001AAAA"})).await,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
        );
        // A TAN is no GAEN code, and the area keeps only its first 2 characters.
        refused(
            post(&server, "/v1/verify", json!({"code": "TAN0002BBBB"})).await,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
        );

        // Nothing is out before the upload's hour has ended and its window closed.
        assert_eq!(
            fetch(&server, "/tokens/64/index.json").await.0,
            StatusCode::NOT_FOUND
        );
        publish_at(&server, 2).await;
        let (index, batches) = download(&server, "64").await;
        assert_eq!(
            (index.latest_seq, index.fp_bits, index.bucket_bits),
            (1, 20, 6)
        );
        let TokenFile {
            body: tokenfile::TokenBody::List { added, .. },
            ..
        } = &batches[0].0
        else {
            panic!("a list file");
        };
        assert_eq!(added.len(), 2);
        // Bob's and Dana's phones find their check tokens (Alice's report tokens); a stranger
        // and the redacted encounter do not match.
        assert_eq!(matched_level(&server, "64", &met_bob).await, Some(0));
        assert_eq!(matched_level(&server, "64", &met_dana).await, Some(0));
        assert_eq!(matched_level(&server, "64", &token(9)).await, None);
        assert_eq!(matched_level(&server, "64", &redacted).await, None);
        assert_eq!(
            fetch(&server, "/tokens/10/index.json").await.0,
            StatusCode::NOT_FOUND
        );

        // A forged preimage proves nothing; Bob's real one chains his own encounter with
        // Carol at level 1, once.
        refused(
            chain(&server, &token(9), "64", &[token(20)]).await,
            StatusCode::FORBIDDEN,
            "unknown_proof",
        );
        let met_carol = token(21);
        let chained = done(chain(&server, &met_bob, "6428", &[met_carol]).await);
        assert_eq!(chained["level"].as_u64(), Some(1));
        refused(
            chain(&server, &met_bob, "64", &[token(22)]).await,
            StatusCode::CONFLICT,
            "proof_used",
        );
        // Carol's encounter is published at level 1 in the next batch; her phone notifies at
        // level 1.
        publish_at(&server, 4).await;
        assert_eq!(matched_level(&server, "64", &met_carol).await, Some(1));
        // Level 2 is refused where the maximum is 1.
        refused(
            chain(&server, &met_carol, "64", &[token(23)]).await,
            StatusCode::FORBIDDEN,
            "level_too_high",
        );

        // Research data: proven encounters only, each once; the day and level come from the
        // published hash.
        let research = |preimage: &Token| json!({"contributions": [{"preimage": preimage.to_hex(), "duration": 2, "attenuation": 1}]});
        assert_eq!(
            done(post(&server, "/v1/research", research(&met_dana)).await)["recorded"],
            1
        );
        refused(
            post(&server, "/v1/research", research(&met_dana)).await,
            StatusCode::CONFLICT,
            "proof_used",
        );
        refused(
            post(&server, "/v1/research", research(&token(9))).await,
            StatusCode::FORBIDDEN,
            "unknown_proof",
        );
        let cells = server.store.research().await.expect("research");
        assert_eq!(cells.len(), 1);
        let (cell, count) = cells[0];
        assert_eq!(
            (cell.day, cell.duration, cell.attenuation, cell.level, count),
            (TODAY as u32 - 1, 2, 1, 0, 1)
        );

        // The log is the truth: replaying it gives the live state.
        let report = server.store.check().await.expect("check");
        assert!(report.consistent(), "{report:?}");
        let digest = server.store.state_digest().await.expect("digest");
        server.store.rebuild().await.expect("rebuild");
        assert_eq!(server.store.state_digest().await.expect("digest"), digest);

        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_and_revoked_uploads_leave_the_filters_as_removals() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = start(&db).await;
        let (root, _) = bootstrap(&server, Scope::Admin, "root").await;
        import(
            &server,
            &root,
            &["TANA0000001", "TANB0000002", "TANC0000003"],
        )
        .await;
        let first = redeem(&server, "TANA0000001").await;
        let second = redeem(&server, "TANB0000002").await;
        let rolled_back = done(upload(&server, &first[0], "10115", &[token(1), token(2)]).await);
        done(upload(&server, &second[0], "10115", &[token(3)]).await);
        let tracking = rolled_back["trackingId"].as_str().expect("tracking id");
        assert_eq!(fate(&server, tracking).await, "accepted");
        publish_at(&server, 2).await;
        assert_eq!(matched_level(&server, "10", &token(1)).await, Some(0));
        assert_eq!(fate(&server, tracking).await, "published");

        // An operator rolls the first upload back: its hashes are removed by the next batch,
        // and a hash not yet published is never published.
        let withdrawn = done(
            act(
                &server,
                &format!("/admin/v1/submissions/{tracking}/withdraw"),
                &root,
                json!({"reason": "wrong TAN handed out"}),
            )
            .await,
        );
        assert_eq!(
            (
                withdrawn["submissionsWithdrawn"].as_u64(),
                withdrawn["tokensWithdrawn"].as_u64()
            ),
            (Some(1), Some(2))
        );
        assert_eq!(fate(&server, tracking).await, "withdrawn");
        // A withdrawn encounter proves nothing.
        refused(
            chain(&server, &token(1), "10", &[token(30)]).await,
            StatusCode::FORBIDDEN,
            "unknown_proof",
        );
        publish_at(&server, 3).await;
        assert_eq!(matched_level(&server, "10", &token(1)).await, None);
        assert_eq!(matched_level(&server, "10", &token(3)).await, Some(0));

        // The authority is revoked retroactively: its remaining upload goes too, and so does
        // what was chained from it.
        done(chain(&server, &token(3), "10", &[token(40)]).await);
        publish_at(&server, 5).await;
        assert_eq!(matched_level(&server, "10", &token(40)).await, Some(1));
        let third = redeem(&server, "TANC0000003").await;
        let revoked = done(
            act(
                &server,
                &format!("/admin/v1/providers/{LAB}/revoke"),
                &root,
                json!({"reason": "rogue authority", "retroactive": true}),
            )
            .await,
        );
        assert_eq!(
            (
                revoked["submissionsWithdrawn"].as_u64(),
                revoked["tokensWithdrawn"].as_u64()
            ),
            (Some(2), Some(2))
        );
        refused(
            upload(&server, &third[0], "10", &[token(50)]).await,
            StatusCode::FORBIDDEN,
            "provider_suspended",
        );
        publish_at(&server, 6).await;
        assert_eq!(matched_level(&server, "10", &token(3)).await, None);
        assert_eq!(matched_level(&server, "10", &token(40)).await, None);

        let report = server.store.check().await.expect("check");
        assert!(report.consistent(), "{report:?}");
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_requests_get_specific_errors_and_store_nothing() {
    let db = TestDatabase::sqlite();
    let server = start(&db).await;
    let (operator, _) = bootstrap(&server, Scope::Operate, "authority").await;
    let (reader, _) = bootstrap(&server, Scope::Read, "reader").await;
    let list = json!({"provider": LAB, "tans": ["TAN00000001"], "reason": "list"});
    refused(
        admin(
            &server,
            Method::POST,
            "/admin/v1/tans",
            None,
            Some(list.clone()),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "missing_admin_token",
    );
    refused(
        act(&server, "/admin/v1/tans", &reader, list).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
    for (body, code) in [
        (
            json!({"provider": LAB, "tans": ["short"], "reason": "x"}),
            "invalid_tan",
        ),
        (
            json!({"provider": LAB, "tans": [], "reason": "x"}),
            "no_tans",
        ),
        (
            json!({"provider": "nope", "tans": ["TAN00000001"], "reason": "x"}),
            "malformed_provider_id",
        ),
        (
            json!({"provider": LAB, "tans": ["TAN00000001"], "reason": "x", "expiresAt": T0 + 365 * 86_400}),
            "ttl_out_of_range",
        ),
        (
            json!({"provider": LAB, "tans": ["TAN00000001"]}),
            "reason_required",
        ),
    ] {
        refused(
            act(&server, "/admin/v1/tans", &operator, body).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    refused(
        act(
            &server,
            "/admin/v1/tans",
            &operator,
            json!({"provider": "0202020202020202", "tans": ["TAN00000001"], "reason": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown_provider",
    );

    // The CSV form, as an authority's system exports it.
    let response = server
        .http
        .post(server.url(&format!("/admin/v1/tans?provider={LAB}&reason=csv+list")))
        .bearer_auth(&operator)
        .header("content-type", "text/csv")
        .body("tan,batch\nTAN-1111-2222,7\n\n# reprinted\nTAN33334444,7\n")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["imported"], 2);
    let response = server
        .http
        .post(server.url(&format!("/admin/v1/tans?provider={LAB}&reason=x")))
        .bearer_auth(&operator)
        .header("content-type", "text/csv")
        .body("TAN11112222\nbad!\n")
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (body["code"].as_str(), body["line"].as_u64()),
        (Some("invalid_tan"), Some(2))
    );

    let nonce = redeem(&server, "tan 1111 2222").await.remove(0);
    for (body, code) in [
        (
            json!({"nonce": "xyz", "area": "64", "tokens": []}),
            "malformed_nonce",
        ),
        (
            json!({"nonce": nonce, "area": "6", "tokens": [{"hash": token(1).hash().to_hex(), "day": TODAY}]}),
            "invalid_area",
        ),
        (
            json!({"nonce": nonce, "area": "64", "tokens": [{"hash": "00", "day": TODAY}]}),
            "invalid_token_hash",
        ),
        (
            json!({"nonce": nonce, "area": "64", "tokens": []}),
            "no_tokens",
        ),
        (
            json!({"nonce": nonce, "area": "64", "tokens": [{"hash": token(1).hash().to_hex(), "day": TODAY - 20}]}),
            "token_day_out_of_range",
        ),
        (
            json!({"preimage": token(1).to_hex(), "area": "64", "tokens": []}),
            "nonce_required",
        ),
        (
            json!({"nonce": nonce, "area": "64", "tokens": [], "extra": 1}),
            "malformed_json",
        ),
    ] {
        refused(
            post(&server, "/v1/tokens", body).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    // Every refusal above left the nonce unused.
    done(upload(&server, &nonce, "64", &[token(1)]).await);
    for (body, code) in [
        (json!({"contributions": []}), "invalid_contribution_count"),
        (
            json!({"contributions": [{"preimage": token(1).to_hex(), "duration": 4, "attenuation": 0}]}),
            "invalid_duration_bucket",
        ),
        (
            json!({"contributions": [{"preimage": "zz", "duration": 0, "attenuation": 0}]}),
            "malformed_preimage",
        ),
    ] {
        refused(
            post(&server, "/v1/research", body).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    // A TAN unknown to the server counts against the client like a wrong code.
    let wrong = post(&server, "/v1/tokens/redeem", json!({"tan": "NOTATAN0000"})).await;
    let body = refused(wrong, StatusCode::UNAUTHORIZED, "invalid_code");
    assert!(body["triesRemaining"].as_u64().is_some(), "{body}");
    server.stop().await;
    db.finish().await;
}
