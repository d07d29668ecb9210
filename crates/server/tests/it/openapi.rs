//! `/openapi.json` describes exactly the routes the server has (schemathesis, run by
//! `tools/api-conformance` in CI, checks the answers against it).

use std::collections::BTreeSet;

use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;
use serde_json::Value;

use crate::{T0, TestServer};

/// `/v1/submissions/{tracking_id}` and `/exports/{*path}` → `/v1/submissions/{}`, `/exports/{}`.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                out.push_str("{}");
            }
            '}' => in_parameter = false,
            _ if in_parameter => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every path given to `.route(` in the server's sources.
fn routed_paths() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("src dir") {
        let source = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
        for (at, _) in source.match_indices(".route(") {
            let rest = &source[at..];
            let start = rest.find('"').expect("a route's path is a literal") + 1;
            let end = start + rest[start..].find('"').expect("closing quote");
            paths.insert(shape(&rest[start..end]));
        }
    }
    paths
}

#[tokio::test]
async fn the_description_names_exactly_the_routes_there_are() {
    let db = TestDatabase::sqlite();
    let server = TestServer::start(&db, ManualClock::new(T0)).await;
    let response = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.expect("json");
    assert!(
        document["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.")
    );

    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|path| shape(path))
        .collect();
    let mut routed = routed_paths();
    assert!(routed.len() > 20, "found only {routed:?}");
    // Served only by `serve --dev`, and described only there.
    assert!(routed.remove("/dev/clock"));
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "openapi.json documents routes that do not exist: {unrouted:?}"
    );

    // Every operation says who it is for and how it can fail.
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty())
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_description_states_this_servers_code_lifetimes_and_dev_clock() {
    let db = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(T0);
    let server = TestServer::start_with(&db, clock, dir.path(), |settings| {
        settings.policy.short_ttl_seconds = 300;
        settings.policy.card_ttl_seconds = 7 * 86_400;
        settings.dev_clock = Some(confidant_server::OffsetClock::default());
    })
    .await;
    let document: Value = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let maxima: Vec<&Value> = (0..3)
        .map(|branch| {
            &document["components"]["schemas"]["CodeRequest"]["anyOf"][branch]["properties"]
                ["ttlSeconds"]["maximum"]
        })
        .collect();
    assert_eq!(
        maxima,
        [
            &Value::from(300),
            &Value::from(86_400),
            &Value::from(7 * 86_400)
        ]
    );
    assert!(document["paths"]["/dev/clock"]["post"].is_object());
    // And the server holds to what it says.
    let answer = |ttl: u64| {
        server
            .http
            .post(server.url("/v1/codes"))
            .bearer_auth(crate::PROVIDER_TOKEN)
            .json(&serde_json::json!({"ttlSeconds": ttl}))
            .send()
    };
    assert_eq!(answer(300).await.expect("request").status(), 201);
    assert_eq!(answer(301).await.expect("request").status(), 400);
    server.stop().await;
}
