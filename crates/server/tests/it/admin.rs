//! The admin API (`/admin/v1`) as an operator uses it: tokens and scopes, provider suspension
//! and revocation, withdrawals, de-registration, code invalidation and the audit trail, with
//! what an app then sees on `/v1`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confidant_core::corrections::{Actor, Scope};
use confidant_core::{AdminTokenId, KeyedHasher, SmallBatch};
use confidant_server::{Clock, ManualClock, new_admin_token};
use confidant_store::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::native::{keys, post, verify};
use crate::{BOTH, PROVIDER_TOKEN, SECRET, T0, TestServer};

const HOUR: u64 = 3600;
/// The provider [`TestServer::start`] registers.
pub(crate) const LAB: &str = "0101010101010101";

/// Records an admin token on the console, as `confidant admin token create` does.
pub(crate) async fn bootstrap(
    server: &TestServer,
    scope: Scope,
    label: &str,
) -> (String, AdminTokenId) {
    let (secret, command) = new_admin_token(&KeyedHasher::new(SECRET), scope, label);
    let confidant_core::corrections::Command::CreateToken { token, .. } = &command else {
        panic!("not a token: {command:?}");
    };
    let id = *token;
    server
        .store
        .correct(
            command,
            Actor::Console,
            server.clock.now(),
            "bootstrap".into(),
        )
        .await
        .expect("token recorded");
    (secret, id)
}

/// An admin request; `body` is sent as JSON when given.
pub(crate) async fn admin(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        problem,
        !status.is_success(),
        "errors and only errors are problem+json: {status} {body}"
    );
    (status, body)
}

async fn get(server: &TestServer, path: &str, token: &str) -> (StatusCode, Value) {
    admin(server, Method::GET, path, Some(token), None).await
}

pub(crate) async fn act(
    server: &TestServer,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    admin(server, Method::POST, path, Some(token), Some(body)).await
}

/// Asserts a problem's status and code.
pub(crate) fn refused(
    (status, body): (StatusCode, Value),
    expected: StatusCode,
    code: &str,
) -> Value {
    assert_eq!(
        (status, body["code"].as_str()),
        (expected, Some(code)),
        "{body}"
    );
    body
}

/// Asserts success and returns the body.
pub(crate) fn done((status, body): (StatusCode, Value)) -> Value {
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A code issued with a provider's API token.
async fn code_of(server: &TestServer, provider_token: &str) -> Result<String, Value> {
    let (status, body, _) = post(
        server,
        "/v1/codes",
        Some(provider_token),
        json!({"format": "long"}),
    )
    .await;
    if status == StatusCode::CREATED {
        Ok(body["code"].as_str().expect("code").to_owned())
    } else {
        Err(body)
    }
}

/// Redeems a code from an address of its own (failures do not add up to a lockout).
async fn try_verify(server: &TestServer, code: &str, address: u8) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url("/v1/verify"))
        .header("x-forwarded-for", format!("192.0.2.{address}"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// A submission of keys for `seeds` (seed i is i days old) by the provider with this token.
async fn submit(server: &TestServer, provider_token: &str, seeds: &[u8]) -> String {
    let code = code_of(server, provider_token).await.expect("code issued");
    let upload = verify(server, &code).await;
    let (status, body, _) = post(
        server,
        "/v1/submissions",
        Some(&upload),
        json!({ "keys": keys(seeds) }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["trackingId"].as_str().expect("tracking id").to_owned()
}

/// What the app sees on `GET /v1/submissions/{id}`.
async fn app_status(server: &TestServer, tracking: &str) -> String {
    let body: Value = server
        .http
        .get(server.url(&format!("/v1/submissions/{tracking}")))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    body["status"].as_str().expect("status").to_owned()
}

fn key_b64(seed: u8) -> String {
    STANDARD.encode([seed; 16])
}

/// The audit trail's entries as (actor, action, target, reason).
async fn audit_trail(server: &TestServer, token: &str) -> Vec<(String, String, String, String)> {
    let body = done(get(server, "/admin/v1/audit?limit=1000", token).await);
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().expect(name).to_owned();
            (
                field("actor"),
                field("action"),
                field("target"),
                field("reason"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_refuse_missing_wrong_revoked_and_underscoped_tokens() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (root, root_id) = bootstrap(&server, Scope::Admin, "root").await;
        let (operator, _) = bootstrap(&server, Scope::Operate, "operator").await;
        let (reader, _) = bootstrap(&server, Scope::Read, "reader").await;

        refused(
            admin(&server, Method::GET, "/admin/v1/providers", None, None).await,
            StatusCode::UNAUTHORIZED,
            "missing_admin_token",
        );
        let wrong = format!("cadm_{root_id}_{}", "A".repeat(43));
        for token in [wrong.as_str(), "not-a-token"] {
            refused(
                get(&server, "/admin/v1/providers", token).await,
                StatusCode::UNAUTHORIZED,
                "invalid_admin_token",
            );
        }
        let basic = server
            .http
            .get(server.url("/admin/v1/providers"))
            .header("authorization", format!("Basic {root}"))
            .send()
            .await
            .expect("request");
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

        // Each scope reaches what it covers and is told what it lacks.
        let listed = done(get(&server, "/admin/v1/providers", &reader).await);
        assert_eq!(
            listed["providers"],
            json!([{"id": LAB, "name": "Test lab", "region": "302", "status": "active"}])
        );
        let suspend = format!("/admin/v1/providers/{LAB}/suspend");
        let body = refused(
            act(&server, &suspend, &reader, json!({"reason": "r"})).await,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        );
        assert_eq!(body["requiredScope"], "operate");
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("`operate`"),
            "{body}"
        );
        let revoke = format!("/admin/v1/providers/{LAB}/revoke");
        let body = refused(
            act(&server, &revoke, &operator, json!({"reason": "r"})).await,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        );
        assert_eq!(body["requiredScope"], "admin");
        for (method, path) in [
            (Method::GET, "/admin/v1/tokens"),
            (Method::POST, "/admin/v1/tokens"),
            (Method::POST, "/admin/v1/providers"),
        ] {
            let body = (method == Method::POST)
                .then(|| json!({"scope": "admin", "name": "x", "region": "DE", "reason": "r"}));
            refused(
                admin(&server, method, path, Some(&operator), body).await,
                StatusCode::FORBIDDEN,
                "insufficient_scope",
            );
        }

        // A token made over the API works until it is revoked.
        let made = done(
            act(
                &server,
                "/admin/v1/tokens",
                &root,
                json!({"scope": "read", "label": "auditor", "reason": "quarterly audit"}),
            )
            .await,
        );
        let (made_id, made_token) = (
            made["id"].as_str().expect("id").to_owned(),
            made["token"].as_str().expect("token").to_owned(),
        );
        assert_eq!(
            (&made["scope"], &made["label"]),
            (&json!("read"), &json!("auditor"))
        );
        assert!(
            made_token.starts_with(&format!("cadm_{made_id}_")),
            "{made_token}"
        );
        assert_eq!(made_token.len(), "cadm_".len() + 16 + 1 + 43);
        done(get(&server, "/admin/v1/audit", &made_token).await);
        let tokens = done(get(&server, "/admin/v1/tokens", &root).await);
        assert!(
            tokens["tokens"].as_array().expect("tokens").contains(
                &json!({"id": made_id, "scope": "read", "label": "auditor", "revoked": false})
            ),
            "{tokens}"
        );
        let revoke_made = format!("/admin/v1/tokens/{made_id}/revoke");
        let revoked = done(
            act(
                &server,
                &revoke_made,
                &root,
                json!({"reason": "audit over"}),
            )
            .await,
        );
        assert_eq!(revoked["changed"], true);
        refused(
            get(&server, "/admin/v1/audit", &made_token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_admin_token",
        );
        let again = done(act(&server, &revoke_made, &root, json!({"reason": "again"})).await);
        assert_eq!(again["changed"], false);

        // Refusals of bad requests.
        refused(
            act(
                &server,
                "/admin/v1/tokens/0000000000000000/revoke",
                &root,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_admin_token",
        );
        refused(
            act(
                &server,
                "/admin/v1/tokens/xyz/revoke",
                &root,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "malformed_token_id",
        );
        refused(
            act(
                &server,
                "/admin/v1/tokens",
                &root,
                json!({"scope": "god", "reason": "r"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        );
        refused(
            act(
                &server,
                &suspend,
                &operator,
                json!({"reason": "r", "force": true}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        );
        refused(
            act(&server, &suspend, &operator, json!({"reason": "  "})).await,
            StatusCode::BAD_REQUEST,
            "reason_required",
        );
        refused(
            act(&server, &suspend, &operator, json!({})).await,
            StatusCode::BAD_REQUEST,
            "reason_required",
        );

        // Only what was done is in the trail: the bootstrap, one creation, one revocation.
        let actor = format!("token:{root_id}");
        let trail: Vec<(String, String)> = audit_trail(&server, &reader)
            .await
            .into_iter()
            .map(|(actor, action, _, reason)| (format!("{actor} {action}"), reason))
            .collect();
        assert_eq!(
            trail,
            [
                ("console token.create".to_owned(), "bootstrap".to_owned()),
                ("console token.create".to_owned(), "bootstrap".to_owned()),
                ("console token.create".to_owned(), "bootstrap".to_owned()),
                (
                    format!("{actor} token.create"),
                    "quarterly audit".to_owned()
                ),
                (format!("{actor} token.revoke"), "audit over".to_owned()),
            ],
            "{dialect:?}"
        );
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retroactive_revocation_withdraws_only_that_providers_submissions_since_the_time() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (root, _) = bootstrap(&server, Scope::Admin, "root").await;
        for (body, code) in [
            (
                json!({"name": " ", "region": "302", "reason": "r"}),
                "invalid_name",
            ),
            (
                json!({"name": "Clinic", "region": "3 2", "reason": "r"}),
                "invalid_region",
            ),
        ] {
            refused(
                act(&server, "/admin/v1/providers", &root, body).await,
                StatusCode::BAD_REQUEST,
                code,
            );
        }
        let clinic = done(
            act(
                &server,
                "/admin/v1/providers",
                &root,
                json!({"name": "Field clinic", "region": "302", "reason": "new test site"}),
            )
            .await,
        );
        let clinic_id = clinic["id"].as_str().expect("id").to_owned();
        let clinic_token = clinic["apiToken"].as_str().expect("token").to_owned();
        assert_eq!(clinic["name"], "Field clinic");

        // Hour 08:00: one report each; 10:00: one more each (three keys for the clinic's).
        let lab_early = submit(&server, PROVIDER_TOKEN, &[1, 2]).await;
        let clinic_early = submit(&server, &clinic_token, &[3]).await;
        server.clock.set(T0 + 2 * HOUR);
        let lab_late = submit(&server, PROVIDER_TOKEN, &[4]).await;
        let clinic_late = submit(&server, &clinic_token, &[5, 6, 7]).await;

        let revoke = format!("/admin/v1/providers/{clinic_id}/revoke");
        refused(
            act(&server, &revoke, &root, json!({"reason": "r", "since": T0})).await,
            StatusCode::BAD_REQUEST,
            "since_without_retroactive",
        );
        refused(
            act(
                &server,
                &revoke,
                &root,
                json!({"reason": "r", "retroactive": true, "since": "yesterday"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "malformed_since",
        );
        // From 09:30 on: the hour is floored to 09:00, so only the 10:00 report goes.
        let revoked = done(
            act(
                &server,
                &revoke,
                &root,
                json!({"reason": "forged results", "retroactive": true, "since": "2027-01-15T09:30:00Z"}),
            )
            .await,
        );
        assert_eq!(
            (
                &revoked["changed"],
                &revoked["submissionsWithdrawn"],
                &revoked["keysWithdrawn"],
                &revoked["withdrawnSince"]
            ),
            (
                &json!(true),
                &json!(1),
                &json!(3),
                &json!("2027-01-15T09:00:00Z")
            ),
            "{dialect:?}"
        );
        for (tracking, expected) in [
            (&lab_early, "accepted"),
            (&clinic_early, "accepted"),
            (&lab_late, "accepted"),
            (&clinic_late, "withdrawn"),
        ] {
            assert_eq!(app_status(&server, tracking).await, expected, "{dialect:?}");
        }
        let shown = done(
            get(
                &server,
                &format!("/admin/v1/submissions/{clinic_late}"),
                &root,
            )
            .await,
        );
        assert_eq!(
            (
                &shown["provider"],
                &shown["keys"],
                &shown["keysWithdrawn"],
                &shown["status"]
            ),
            (&json!(clinic_id), &json!(3), &json!(3), &json!("withdrawn"))
        );

        // Revoked for good: no codes, no reinstatement.
        let refusal = code_of(&server, &clinic_token).await.expect_err("no code");
        assert_eq!(refusal["code"], "provider_suspended");
        refused(
            act(
                &server,
                &format!("/admin/v1/providers/{clinic_id}/reinstate"),
                &root,
                json!({"reason": "mistake"}),
            )
            .await,
            StatusCode::CONFLICT,
            "provider_revoked",
        );
        let shown = done(get(&server, &format!("/admin/v1/providers/{clinic_id}"), &root).await);
        assert_eq!(shown["status"], "revoked");
        assert_eq!(
            shown["activity"],
            json!({"codesIssued": 2, "codesRedeemed": 2, "submissions": 2,
                   "submissionsWithdrawn": 1, "keysSubmitted": 4, "keysWithdrawn": 3})
        );

        // Widening to all time (unix seconds) takes the earlier report too, still only theirs.
        let widened = done(
            act(
                &server,
                &revoke,
                &root,
                json!({"reason": "all of it", "retroactive": true, "since": T0 - 7 * 86_400}),
            )
            .await,
        );
        assert_eq!(
            (&widened["changed"], &widened["submissionsWithdrawn"]),
            (&json!(true), &json!(1))
        );
        assert_eq!(app_status(&server, &clinic_early).await, "withdrawn");
        assert_eq!(app_status(&server, &lab_early).await, "accepted");
        assert_eq!(app_status(&server, &lab_late).await, "accepted");
        refused(
            act(
                &server,
                "/admin/v1/providers/0000000000000000/revoke",
                &root,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_provider",
        );
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_blocks_codes_and_redemptions_but_keeps_past_submissions() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let server = TestServer::start_with(&db, ManualClock::new(T0), dir.path(), |s| {
            s.publish.default_policy.small_batch = SmallBatch::Off;
        })
        .await;
        let (operator, _) = bootstrap(&server, Scope::Operate, "operator").await;
        // Today's key (out only after midnight) and yesterday's (out at 09:00); today's alone.
        let early = submit(&server, PROVIDER_TOKEN, &[1, 2]).await;
        let todays = submit(&server, PROVIDER_TOKEN, &[3]).await;
        assert_eq!(app_status(&server, &early).await, "accepted");
        server.clock.set(T0 + 2 * HOUR);
        let late = submit(&server, PROVIDER_TOKEN, &[4, 5]).await;
        server
            .publisher
            .run_due(T0 + 2 * HOUR)
            .await
            .expect("publishes");
        assert_eq!(
            app_status(&server, &early).await,
            "published",
            "{dialect:?}"
        );
        assert_eq!(app_status(&server, &todays).await, "accepted");
        assert_eq!(app_status(&server, &late).await, "accepted");
        let pending = code_of(&server, PROVIDER_TOKEN).await.expect("code");

        let suspend = format!("/admin/v1/providers/{LAB}/suspend");
        let suspended = done(act(&server, &suspend, &operator, json!({"reason": "audit"})).await);
        assert_eq!(
            (&suspended["changed"], &suspended["status"]),
            (&json!(true), &json!("suspended"))
        );
        let again = done(act(&server, &suspend, &operator, json!({"reason": "audit"})).await);
        assert_eq!(again["changed"], false);

        let refusal = code_of(&server, PROVIDER_TOKEN)
            .await
            .expect_err("no new codes");
        assert_eq!(refusal["code"], "provider_suspended");
        // A suspended provider's codes do not redeem (and say no more than a wrong code).
        let (status, body) = try_verify(&server, &pending, 1).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_code")),
            "{body}"
        );
        // Nothing already accepted is rolled back.
        assert_eq!(app_status(&server, &early).await, "published");
        assert_eq!(app_status(&server, &late).await, "accepted");
        let shown = done(get(&server, &format!("/admin/v1/providers/{LAB}"), &operator).await);
        assert_eq!(shown["status"], "suspended");
        assert_eq!(shown["activity"]["submissionsWithdrawn"], 0);
        let shown = done(
            get(
                &server,
                &format!("/admin/v1/submissions/{early}"),
                &operator,
            )
            .await,
        );
        assert_eq!(
            (&shown["keys"], &shown["keysWithdrawn"], &shown["status"]),
            (&json!(2), &json!(0), &json!("published"))
        );

        // Reinstated, the provider's pending code works again.
        let reinstated = done(
            act(
                &server,
                &format!("/admin/v1/providers/{LAB}/reinstate"),
                &operator,
                json!({"reason": "audit passed"}),
            )
            .await,
        );
        assert_eq!(
            (&reinstated["changed"], &reinstated["status"]),
            (&json!(true), &json!("active"))
        );
        let (status, body) = try_verify(&server, &pending, 2).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        code_of(&server, PROVIDER_TOKEN).await.expect("codes again");
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_and_deregistration_report_what_they_did() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (operator, _) = bootstrap(&server, Scope::Operate, "operator").await;
        let first = submit(&server, PROVIDER_TOKEN, &[10, 11, 12]).await;
        let second = submit(&server, PROVIDER_TOKEN, &[20, 21]).await;

        let withdraw = format!("/admin/v1/submissions/{first}/withdraw");
        let withdrawn = done(
            act(
                &server,
                &withdraw,
                &operator,
                json!({"reason": "wrong person"}),
            )
            .await,
        );
        assert_eq!(
            withdrawn,
            json!({"changed": true, "submissionsWithdrawn": 1, "keysWithdrawn": 3, "tokensWithdrawn": 0})
        );
        assert_eq!(
            app_status(&server, &first).await,
            "withdrawn",
            "{dialect:?}"
        );
        assert_eq!(app_status(&server, &second).await, "accepted");
        let again = done(act(&server, &withdraw, &operator, json!({"reason": "again"})).await);
        assert_eq!(
            again,
            json!({"changed": false, "submissionsWithdrawn": 0, "keysWithdrawn": 0, "tokensWithdrawn": 0})
        );
        refused(
            act(
                &server,
                &format!("/admin/v1/submissions/{}/withdraw", "00".repeat(16)),
                &operator,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_submission",
        );
        refused(
            get(&server, "/admin/v1/submissions/xyz", &operator).await,
            StatusCode::BAD_REQUEST,
            "malformed_tracking_id",
        );

        let deregistered = done(
            act(
                &server,
                "/admin/v1/keys/deregister",
                &operator,
                json!({"keys": [key_b64(20), key_b64(10), key_b64(99)], "reason": "reported by the user"}),
            )
            .await,
        );
        assert_eq!(
            deregistered,
            json!({"changed": true, "deregistered": 1, "alreadyWithdrawn": 1, "unknown": 1}),
            "{dialect:?}"
        );
        let shown = done(
            get(
                &server,
                &format!("/admin/v1/submissions/{second}"),
                &operator,
            )
            .await,
        );
        assert_eq!(
            (&shown["keys"], &shown["keysWithdrawn"], &shown["status"]),
            (&json!(2), &json!(1), &json!("accepted"))
        );
        refused(
            act(
                &server,
                "/admin/v1/keys/deregister",
                &operator,
                json!({"keys": [key_b64(99)], "reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_keys",
        );
        let body = refused(
            act(
                &server,
                "/admin/v1/keys/deregister",
                &operator,
                json!({"keys": [key_b64(21), "AAAA"], "reason": "r"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_key",
        );
        assert_eq!(body["keyIndex"], 1);
        for count in [0, 1001] {
            let many: Vec<String> = (0..count).map(|n| key_b64(n as u8)).collect();
            refused(
                act(
                    &server,
                    "/admin/v1/keys/deregister",
                    &operator,
                    json!({"keys": many, "reason": "r"}),
                )
                .await,
                StatusCode::BAD_REQUEST,
                "invalid_key_count",
            );
        }
        // The refused requests left the key alone.
        let shown = done(
            get(
                &server,
                &format!("/admin/v1/submissions/{second}"),
                &operator,
            )
            .await,
        );
        assert_eq!(shown["keysWithdrawn"], 1);
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_codes_no_longer_verify() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (operator, _) = bootstrap(&server, Scope::Operate, "operator").await;
        let code = code_of(&server, PROVIDER_TOKEN).await.expect("code");
        // Typed as a person would read it out: lower case, in groups.
        let typed = code
            .to_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        let invalidated = done(
            act(
                &server,
                "/admin/v1/codes/invalidate",
                &operator,
                json!({"code": typed, "reason": "handed to the wrong person"}),
            )
            .await,
        );
        assert_eq!(invalidated, json!({"changed": true, "codesInvalidated": 1}));
        let (status, body) = try_verify(&server, &code, 1).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_code")),
            "{dialect:?}"
        );
        refused(
            act(
                &server,
                "/admin/v1/codes/invalidate",
                &operator,
                json!({"code": code, "reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_code",
        );
        refused(
            act(
                &server,
                "/admin/v1/codes/invalidate",
                &operator,
                json!({"code": "!!", "reason": "r"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "malformed_code",
        );
        let used = code_of(&server, PROVIDER_TOKEN).await.expect("code");
        verify(&server, &used).await;
        refused(
            act(
                &server,
                "/admin/v1/codes/invalidate",
                &operator,
                json!({"code": used, "reason": "r"}),
            )
            .await,
            StatusCode::CONFLICT,
            "code_already_redeemed",
        );

        // All of a provider's open codes at once.
        let open = [
            code_of(&server, PROVIDER_TOKEN).await.expect("code"),
            code_of(&server, PROVIDER_TOKEN).await.expect("code"),
        ];
        let path = format!("/admin/v1/providers/{LAB}/codes/invalidate");
        let invalidated =
            done(act(&server, &path, &operator, json!({"reason": "lost sheet"})).await);
        assert_eq!(invalidated, json!({"changed": true, "codesInvalidated": 2}));
        for (n, code) in open.iter().enumerate() {
            let (status, _) = try_verify(&server, code, 10 + n as u8).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let none_left = done(act(&server, &path, &operator, json!({"reason": "again"})).await);
        assert_eq!(none_left, json!({"changed": false, "codesInvalidated": 0}));
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_each_action_with_its_token_and_reason_and_nothing_refused() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let (root, root_id) = bootstrap(&server, Scope::Admin, "root").await;
        let (operator, operator_id) = bootstrap(&server, Scope::Operate, "operator").await;
        let suspend = format!("/admin/v1/providers/{LAB}/suspend");
        let reinstate = format!("/admin/v1/providers/{LAB}/reinstate");

        done(
            act(
                &server,
                &suspend,
                &operator,
                json!({"reason": "lab under review"}),
            )
            .await,
        );
        // Changes nothing, refused, refused, refused: none of these is recorded.
        done(
            act(
                &server,
                &suspend,
                &operator,
                json!({"reason": "still under review"}),
            )
            .await,
        );
        refused(
            act(
                &server,
                &format!("/admin/v1/providers/{LAB}/revoke"),
                &operator,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        );
        refused(
            act(&server, &reinstate, &root, json!({"reason": ""})).await,
            StatusCode::BAD_REQUEST,
            "reason_required",
        );
        refused(
            act(
                &server,
                &format!("/admin/v1/submissions/{}/withdraw", "00".repeat(16)),
                &operator,
                json!({"reason": "r"}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "unknown_submission",
        );
        server.clock.set(T0 + 90);
        done(
            act(
                &server,
                &reinstate,
                &root,
                json!({"reason": "review closed"}),
            )
            .await,
        );

        let page = done(get(&server, "/admin/v1/audit", &operator).await);
        let entries = page["entries"].as_array().expect("entries");
        let actions: Vec<&Value> = entries.iter().filter(|e| e["actor"] != "console").collect();
        assert_eq!(actions.len(), 2, "{dialect:?}: {page}");
        assert_eq!(
            (
                &actions[0]["actor"],
                &actions[0]["action"],
                &actions[0]["target"]
            ),
            (
                &json!(format!("token:{operator_id}")),
                &json!("provider.suspend"),
                &json!(LAB)
            )
        );
        assert_eq!(
            (
                &actions[0]["reason"],
                &actions[0]["at"],
                &actions[0]["outcome"]
            ),
            (
                &json!("lab under review"),
                &json!("2027-01-15T08:00:00Z"),
                &json!("suspended")
            )
        );
        assert_eq!(
            (
                &actions[1]["actor"],
                &actions[1]["action"],
                &actions[1]["reason"],
                &actions[1]["at"]
            ),
            (
                &json!(format!("token:{root_id}")),
                &json!("provider.reinstate"),
                &json!("review closed"),
                &json!("2027-01-15T08:01:30Z")
            )
        );
        assert_eq!(entries.len(), 4, "two bootstrap tokens and two actions");
        assert_eq!(page["next"], entries[3]["seq"]);

        // Paging: `next` is where the following page starts; an empty page keeps it.
        let first = done(get(&server, "/admin/v1/audit?limit=3", &operator).await);
        assert_eq!(first["entries"].as_array().expect("entries").len(), 3);
        let rest = done(
            get(
                &server,
                &format!("/admin/v1/audit?after={}&limit=3", first["next"]),
                &operator,
            )
            .await,
        );
        assert_eq!(rest["entries"], json!([entries[3]]));
        let end = done(
            get(
                &server,
                &format!("/admin/v1/audit?after={}", rest["next"]),
                &operator,
            )
            .await,
        );
        assert_eq!((&end["entries"], &end["next"]), (&json!([]), &rest["next"]));
        for (query, code) in [
            ("limit=0", "invalid_limit"),
            ("limit=1001", "invalid_limit"),
            ("limit=ten", "malformed_query"),
            ("since=3", "malformed_query"),
        ] {
            refused(
                get(&server, &format!("/admin/v1/audit?{query}"), &operator).await,
                StatusCode::BAD_REQUEST,
                code,
            );
        }
        server.stop().await;
        db.finish().await;
    }
}
