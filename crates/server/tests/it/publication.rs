//! Publication end to end: keys uploaded over HTTP appear in signed exports and the feed only
//! after their embargo, small batches are padded or held, files are served with cache headers,
//! COVID Shield retrieval works, retention forgets on schedule, and one instance publishes.

use std::collections::BTreeSet;

use confidant_core::SmallBatch;
use confidant_core::TrackingId;
use confidant_core::corrections::{Actor, Command, Outcome};
use confidant_core::feed::{self, FeedFollower, FeedIndex};
use confidant_server::{ManualClock, RegionSettings};
use confidant_store::testing::TestDatabase;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Sha256;

use crate::native::{keys, post, verify};
use crate::{BOTH, SECRET, T0, TestServer};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// Uploads one key per seed through `/v1` (seed i is i days old; seed 0 is today's key).
async fn upload(server: &TestServer, seeds: &[u8]) {
    let code = server.code("long").await;
    let token = verify(server, &code).await;
    let (status, body, _) = post(
        server,
        "/v1/submissions",
        Some(&token),
        json!({"keys": keys(seeds)}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    server
        .http
        .get(server.url(path))
        .send()
        .await
        .expect("request")
}

/// Every key in the files an index lists, each file verified with the server's public key.
pub async fn export_keys(server: &TestServer, index: &str) -> Vec<gaen::DiagnosisKey> {
    export_contents(server, index).await.0
}

/// The keys and the revised keys in the files an index lists, each file verified.
async fn export_contents(
    server: &TestServer,
    index: &str,
) -> (Vec<gaen::DiagnosisKey>, Vec<gaen::DiagnosisKey>) {
    let response = get(server, index).await;
    assert_eq!(response.status(), 200, "{index}");
    let listing = response.text().await.expect("index");
    let mut keys = Vec::new();
    let mut revised = Vec::new();
    for path in listing.lines() {
        let response = get(server, &format!("/{path}")).await;
        assert_eq!(response.status(), 200, "{path}");
        let zip = response.bytes().await.expect("body");
        let files = gaen::ExportFiles::from_zip(&zip).expect("a valid export zip");
        files
            .verify(&server.public_key)
            .expect("signed by the server");
        let export = files.export().expect("export.bin");
        let name = path.rsplit('/').next().expect("name");
        let window = format!("{}-{}", export.start_timestamp, export.end_timestamp);
        assert!(name.starts_with(&window), "{name} names its window");
        assert!(
            export
                .keys
                .windows(2)
                .all(|pair| pair[0].tek.0 <= pair[1].tek.0),
            "keys sorted by key_data"
        );
        keys.extend(export.keys);
        revised.extend(export.revised_keys);
    }
    (keys, revised)
}

pub fn seeds_of(keys: &[gaen::DiagnosisKey]) -> BTreeSet<u8> {
    keys.iter()
        .filter(|k| k.tek.0.iter().all(|b| *b == k.tek.0[0]))
        .map(|k| k.tek.0[0])
        .collect()
}

/// The feed's live set as a client computes it: snapshot + deltas, every file verified.
async fn feed_live(server: &TestServer) -> BTreeSet<[u8; 16]> {
    let index: FeedIndex = get(server, "/feed/302/index.json")
        .await
        .json()
        .await
        .expect("feed index");
    let mut follower = match &index.snapshot {
        Some(entry) => {
            let bytes = get(server, &format!("/feed/302/{}", entry.file))
                .await
                .bytes()
                .await
                .expect("snapshot");
            assert_eq!(hex::encode(feed::file_hash(&bytes)), entry.sha256);
            let snapshot = feed::verify(&bytes, &server.public_key).expect("snapshot verifies");
            FeedFollower::from_snapshot(&snapshot).expect("a snapshot")
        }
        None => FeedFollower::new("302".to_owned().try_into().expect("region")),
    };
    for entry in &index.deltas {
        let bytes = get(server, &format!("/feed/302/{}", entry.file))
            .await
            .bytes()
            .await
            .expect("delta");
        let delta = feed::verify(&bytes, &server.public_key).expect("delta verifies");
        follower.apply(&bytes, &delta).expect("the chain holds");
    }
    assert_eq!(follower.seq(), index.latest_seq);
    follower.live().keys().map(|k| k.0).collect()
}

/// Runs the publisher as its background loop would at `now`.
async fn publish_at(server: &TestServer, now: u64) {
    server.publisher.run_due(now).await.expect("publishes");
}

fn seed_keys(seeds: &[u8]) -> BTreeSet<[u8; 16]> {
    seeds.iter().map(|s| [*s; 16]).collect()
}

fn no_padding(settings: &mut confidant_server::ServerSettings) {
    settings.publish.default_policy.small_batch = SmallBatch::Off;
}

async fn started(
    db: &TestDatabase,
    configure: fn(&mut confidant_server::ServerSettings),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with(db, ManualClock::new(T0), dir.path(), configure).await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_appear_in_exports_and_feed_only_after_their_embargo() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let (server, _dir) = started(&db, no_padding).await;
        // Seed 1 is today's key (valid until midnight, 16 h after T0); 2 and 3 are older.
        upload(&server, &[1, 2, 3]).await;
        let run = |now| {
            let publisher = server.publisher.clone();
            async move { publisher.run_due(now).await.expect("publishes") }
        };
        assert!(run(T0).await.leader);
        assert!(
            export_keys(&server, "/exports/302/index.txt")
                .await
                .is_empty()
        );
        // The submission hour has not ended before T0 + 1 h: the first hourly window holding
        // the keys closes at T0 + 2 h, the first feed window at T0 + 1 h 15 min.
        run(T0 + HOUR + 600).await;
        assert!(
            export_keys(&server, "/exports/302/index.txt")
                .await
                .is_empty()
        );
        assert!(feed_live(&server).await.is_empty());
        run(T0 + 2 * HOUR).await;
        let published = export_keys(&server, "/exports/302/index.txt").await;
        assert_eq!(seeds_of(&published), BTreeSet::from([2, 3]), "{dialect:?}");
        assert!(
            published
                .iter()
                .all(|k| k.report_type == Some(gaen::ReportType::ConfirmedTest))
        );
        assert_eq!(feed_live(&server).await, seed_keys(&[2, 3]));
        // Today's key: expired at T0 + 16 h, out after the 1 h margin, in the window ending
        // at T0 + 18 h.
        run(T0 + 17 * HOUR + 1800).await;
        assert_eq!(
            seeds_of(&export_keys(&server, "/exports/302/index.txt").await),
            BTreeSet::from([2, 3])
        );
        run(T0 + 18 * HOUR).await;
        assert_eq!(
            seeds_of(&export_keys(&server, "/exports/302/index.txt").await),
            BTreeSet::from([1, 2, 3])
        );
        assert_eq!(feed_live(&server).await, seed_keys(&[1, 2, 3]));
        // The daily file of T0's day (closed at T0 + 16 h) holds the keys out that day.
        assert_eq!(
            seeds_of(&export_keys(&server, "/exports/302/daily/index.txt").await),
            BTreeSet::from([2, 3])
        );
        // A re-run publishes nothing new and the log agrees with the projections.
        let again = run(T0 + 18 * HOUR).await;
        assert_eq!(again.windows, 0);
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_are_padded_or_held_back() {
    let db = TestDatabase::sqlite();
    let (server, _dir) = started(&db, |s| {
        s.publish.default_policy.small_batch = SmallBatch::Pad {
            minimum: 40,
            jitter: 10,
        };
    })
    .await;
    upload(&server, &[0, 2, 3]).await;
    publish_at(&server, T0 + 2 * HOUR).await;
    let published = export_keys(&server, "/exports/302/index.txt").await;
    assert!((40..50).contains(&published.len()), "{}", published.len());
    assert_eq!(seeds_of(&published), BTreeSet::from([2, 3]));
    let real: Vec<_> = published
        .iter()
        .filter(|k| [2, 3].contains(&k.tek.0[0]) && k.tek.0[1] == k.tek.0[0])
        .cloned()
        .collect();
    for key in &published {
        assert!(
            real.iter()
                .any(|r| (r.rolling_start, r.rolling_period, r.transmission_risk)
                    == (key.rolling_start, key.rolling_period, key.transmission_risk)),
            "padding copies real metadata"
        );
    }
    let live = feed_live(&server).await;
    assert!((40..50).contains(&live.len()) && live.is_superset(&seed_keys(&[2, 3])));
    server.stop().await;

    let db = TestDatabase::sqlite();
    let (server, _dir) = started(&db, |s| {
        s.publish.default_policy.small_batch = SmallBatch::Hold { threshold: 5 };
    })
    .await;
    upload(&server, &[0, 2, 3]).await;
    publish_at(&server, T0 + 2 * HOUR).await;
    let index = get(&server, "/exports/302/index.txt")
        .await
        .text()
        .await
        .expect("index");
    assert!(
        index.lines().count() == 1,
        "an empty file keeps the cadence: {index}"
    );
    assert!(
        export_keys(&server, "/exports/302/index.txt")
            .await
            .is_empty()
    );
    assert!(feed_live(&server).await.is_empty());
    server.clock.set(T0 + 2 * HOUR);
    upload(&server, &[0, 4, 5, 6]).await;
    publish_at(&server, T0 + 4 * HOUR).await;
    assert_eq!(
        seeds_of(&export_keys(&server, "/exports/302/index.txt").await),
        BTreeSet::from([2, 3, 4, 5, 6]),
        "held keys go out with the batch that reaches the threshold"
    );
    assert_eq!(feed_live(&server).await, seed_keys(&[2, 3, 4, 5, 6]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_served_immutable_with_etags_and_indices_uncached() {
    let db = TestDatabase::sqlite();
    let (server, _dir) = started(&db, no_padding).await;
    upload(&server, &[0, 2]).await;
    publish_at(&server, T0 + 2 * HOUR).await;
    let index = get(&server, "/exports/302/index.txt").await;
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let listing = index.text().await.expect("index");
    let path = format!("/{}", listing.lines().last().expect("a file"));
    let file = get(&server, &path).await;
    assert_eq!(file.status(), 200);
    assert_eq!(file.headers()["content-type"], "application/zip");
    let cache = file.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cache.contains("immutable") && cache.contains("public"),
        "{cache}"
    );
    let etag = file.headers()["etag"].clone();
    let length = file.bytes().await.expect("body").len();
    let revalidated = server
        .http
        .get(server.url(&path))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag);
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let stale = server
        .http
        .get(server.url(&path))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .expect("request");
    assert_eq!(stale.status(), 200);
    let head = server
        .http
        .head(server.url(&path))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        length.to_string().as_str()
    );
    assert_eq!(head.headers()["etag"], etag);
    for missing in [
        "/exports/302/0-1-00001.zip",
        "/exports/302/..%2F..%2Fsecret.key",
        "/feed/302/.hidden",
    ] {
        let response = get(&server, missing).await;
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let body: serde_json::Value = response.json().await.expect("problem json");
        assert_eq!(body["code"], "not_found");
    }
    server.stop().await;
}

fn retrieval_mac(region: &str, day: u64, now: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(format!("{region}:{day}:{}", now / 3600).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covid_shield_retrieval_serves_past_days_signed() {
    let db = TestDatabase::sqlite();
    let (server, _dir) = started(&db, |s| {
        let region = "302".to_owned().try_into().expect("region");
        let mut settings: RegionSettings = s.publish.region(&region);
        settings.export_region = "CA".into();
        s.publish.regions.insert(region, settings);
    })
    .await;
    upload(&server, &[1, 2, 3]).await;
    let day = T0 / DAY;
    let today = format!("/retrieve/302/{day}/{}", retrieval_mac("302", day, T0));
    let response = get(&server, &today).await;
    assert_eq!(response.status(), 404, "today is not served");

    let tomorrow = T0 + DAY;
    server.clock.set(tomorrow);
    let path = format!(
        "/retrieve/302/{day}/{}",
        retrieval_mac("302", day, tomorrow)
    );
    let response = get(&server, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=3600, max-stale=600"
    );
    let files = gaen::ExportFiles::from_zip(&response.bytes().await.expect("zip")).expect("zip");
    let signature = files.verify(&server.public_key).expect("signed");
    let info = signature.info.expect("signature info");
    assert_eq!(info.verification_key_id.as_deref(), Some("302"));
    assert_eq!(info.verification_key_version.as_deref(), Some("v1"));
    let export = files.export().expect("export");
    assert_eq!(export.region, "CA");
    assert_eq!(
        (export.start_timestamp, export.end_timestamp),
        (day * DAY, (day + 1) * DAY)
    );
    assert_eq!(seeds_of(&export.keys), BTreeSet::from([1, 2, 3]));

    // An HMAC from two hours ago, another day's HMAC, a wrong method, too old, the future.
    let old_mac = format!(
        "/retrieve/302/{day}/{}",
        retrieval_mac("302", day, tomorrow - 2 * HOUR)
    );
    let response = get(&server, &old_mac).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.expect("body"), "unauthorized\n");
    let post = server
        .http
        .post(server.url(&path))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 405);
    let bad_post = server
        .http
        .post(server.url(&old_mac))
        .send()
        .await
        .expect("post");
    assert_eq!(
        bad_post.status(),
        401,
        "authentication comes before the method"
    );
    let old_day = day - 15;
    let gone = format!(
        "/retrieve/302/{old_day}/{}",
        retrieval_mac("302", old_day, tomorrow)
    );
    assert_eq!(get(&server, &gone).await.status(), 410);
    let future = day + 5;
    let later = format!(
        "/retrieve/302/{future}/{}",
        retrieval_mac("302", future, tomorrow)
    );
    assert_eq!(get(&server, &later).await.status(), 404);

    let config: serde_json::Value = get(&server, "/exposure-configuration/302.json")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["minimumRiskScore"], 1);
    assert_eq!(
        config["attenuationLevelValues"].as_array().map(Vec::len),
        Some(8)
    );
    let version: serde_json::Value = get(&server, "/services/version.json")
        .await
        .json()
        .await
        .expect("json");
    assert!(version["branch"].is_string() && version["revision"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_what_is_due_and_rebuild_agrees() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let (server, dir) = started(&db, no_padding).await;
        upload(&server, &[1, 2, 3]).await;
        let unredeemed = server.code("long").await;
        assert!(!unredeemed.is_empty());
        publish_at(&server, T0 + 2 * HOUR).await;
        let first_file = get(&server, "/exports/302/index.txt")
            .await
            .text()
            .await
            .expect("index")
            .lines()
            .next()
            .expect("a file")
            .to_owned();
        assert!(dir.path().join(&first_file).exists());

        // Fifteen days and two hours later: keys, claims, codes and old files are due; a
        // fresh upload is not.
        let later = T0 + 15 * DAY + 2 * HOUR;
        server.clock.set(later);
        let code = server.code("long").await;
        let token = verify(&server, &code).await;
        let yesterday = (later / 600) as i64 / 144 * 144 - 144;
        let fresh = json!({"keys": [{"key": "BwcHBwcHBwcHBwcHBwcHBw==", "rollingStartNumber": yesterday, "rollingPeriod": 144}]});
        let (status, body, _) = post(&server, "/v1/submissions", Some(&token), fresh).await;
        assert_eq!(
            (status.as_u16(), &body["inserted"]),
            (200, &json!(1)),
            "{body}"
        );
        let report = server.publisher.run_due(later).await.expect("runs");
        let retention = report.retention.expect("the janitor ran");
        assert_eq!(retention.keys, 3, "{dialect:?}");
        assert!(
            retention.codes >= 2 && retention.claims >= 1,
            "{retention:?}"
        );
        assert_eq!(retention.purged_events, 0, "key events stay for 21 days");
        let state = server.store.projected_state().await.expect("state");
        assert_eq!(
            state.keys.keys().map(|k| k.0).collect::<BTreeSet<_>>(),
            seed_keys(&[7])
        );
        assert_eq!(
            state.claims.len(),
            1,
            "only the fresh upload's claim is left"
        );
        assert!(
            !dir.path().join(&first_file).exists(),
            "old files leave the store"
        );
        let listing = get(&server, "/exports/302/index.txt")
            .await
            .text()
            .await
            .expect("index");
        assert!(!listing.contains(&first_file), "and the index");
        assert_eq!(get(&server, &format!("/{first_file}")).await.status(), 404);
        assert!(state.files.values().all(|f| f.end > later - 14 * DAY));

        // Twenty-two days: the events carrying the first keys are purged from the log.
        let much_later = T0 + 22 * DAY;
        server.clock.set(much_later);
        let report = server.publisher.run_due(much_later).await.expect("runs");
        assert_eq!(report.retention.expect("ran").purged_events, 1);
        let events = server.store.events().await.expect("events");
        assert!(!events.iter().any(|e| matches!(
            e,
            confidant_core::Event::KeysSubmitted { keys, .. } if keys.iter().any(|k| k.key_data.0 == [1; 16])
        )));
        let before = server.store.projected_state().await.expect("state");
        server.store.rebuild().await.expect("rebuilds");
        assert_eq!(server.store.projected_state().await.expect("state"), before);
        assert!(server.store.check().await.expect("check").consistent());
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_publishes_at_a_time() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let dir = tempfile::tempdir().expect("dir");
        let first = TestServer::start_with(&db, ManualClock::new(T0), dir.path(), no_padding).await;
        let second =
            TestServer::start_with(&db, ManualClock::new(T0), dir.path(), no_padding).await;
        upload(&first, &[1, 2, 3]).await;
        let now = T0 + 6 * HOUR;
        let (a, b) = tokio::join!(first.publisher.run_due(now), second.publisher.run_due(now));
        let (a, b) = (a.expect("first runs"), b.expect("second runs"));
        assert!(a.leader != b.leader, "exactly one leader: {a:?} {b:?}");
        assert!(a.windows + b.windows > 0);
        let events = first.store.events().await.expect("events");
        let mut windows = BTreeSet::new();
        for event in &events {
            if let confidant_core::Event::BatchPublished { stream, start, .. } = event {
                assert!(
                    windows.insert((*stream, *start)),
                    "{dialect:?}: {stream} {start} published twice"
                );
            }
        }
        // The leader stops and gives up its lease; the other takes over at once.
        let (leader, follower) = if a.leader {
            (first, second)
        } else {
            (second, first)
        };
        leader.stop().await;
        let report = follower.publisher.run_due(now + HOUR).await.expect("runs");
        assert!(report.leader && report.windows > 0);
        assert_eq!(
            seeds_of(&export_keys(&follower, "/exports/302/index.txt").await),
            BTreeSet::from([2, 3])
        );
        follower.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let db = TestDatabase::sqlite();
    let (server, _dir) = started(&db, no_padding).await;
    upload(&server, &[2, 3]).await;
    publish_at(&server, T0 + 2 * HOUR).await;
    assert_eq!(get(&server, "/healthz").await.status(), 200);
    assert_eq!(get(&server, "/readyz").await.status(), 200);
    let metrics = get(&server, "/metrics").await.text().await.expect("text");
    for name in [
        "confidant_submissions_total",
        "confidant_keys_accepted_total",
        "confidant_keys_published_total",
        "confidant_batch_keys",
        "confidant_publish_seconds",
        "confidant_http_request_seconds",
        "confidant_store_commit_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert!(metrics.contains("route=\"/v1/submissions\""));
    assert!(
        get(&server, "/exports/302/index.txt").await.status() == 200
            && !get(&server, "/metrics")
                .await
                .text()
                .await
                .expect("text")
                .contains("route=\"/exports/302"),
        "routes are labelled by pattern, never by raw path"
    );
    server.stop().await;
}

/// Uploads keys `(seed, days_ago)` through `/v1`; returns the tracking ID.
async fn upload_days(server: &TestServer, keys: &[(u8, u32)]) -> TrackingId {
    let code = server.code("long").await;
    let token = verify(server, &code).await;
    let keys: Vec<_> = keys
        .iter()
        .map(|(seed, days_ago)| {
            json!({
                "key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [*seed; 16]),
                "rollingStartNumber": crate::rolling_start(*days_ago),
                "rollingPeriod": 144,
            })
        })
        .collect();
    let (status, body, _) = post(
        server,
        "/v1/submissions",
        Some(&token),
        json!({"keys": keys}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    TrackingId::from_hex(body["trackingId"].as_str().expect("tracking id")).expect("hex")
}

async fn correct(server: &TestServer, command: Command, now: u64) -> Outcome {
    server
        .store
        .correct(command, Actor::Console, now, "test correction".into())
        .await
        .expect("corrected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_reach_the_feed_and_the_exports() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let (server, _dir) = started(&db, no_padding).await;
        let a = upload_days(&server, &[(2, 1), (3, 2)]).await;
        let b = upload_days(&server, &[(4, 1), (5, 2)]).await;
        publish_at(&server, T0 + 2 * HOUR).await;
        assert_eq!(feed_live(&server).await, seed_keys(&[2, 3, 4, 5]));

        // A third upload, still under embargo, is withdrawn before it is ever published; the
        // first is rolled back and one key of the second de-registered after publication.
        server.clock.set(T0 + 2 * HOUR + 100);
        let c = upload_days(&server, &[(6, 1)]).await;
        let now = T0 + 2 * HOUR + 200;
        let rolled_back = correct(&server, Command::WithdrawSubmission(a), now).await;
        assert_eq!(
            (
                rolled_back.submissions_withdrawn,
                rolled_back.keys_withdrawn
            ),
            (1, 2)
        );
        let key = confidant_core::KeyData([4; 16]);
        assert_eq!(
            correct(&server, Command::DeregisterKeys(vec![key]), now)
                .await
                .keys_withdrawn,
            1
        );
        correct(&server, Command::WithdrawSubmission(c), now).await;

        publish_at(&server, T0 + 4 * HOUR).await;
        let (keys, revised) = export_contents(&server, "/exports/302/index.txt").await;
        assert_eq!(
            seeds_of(&keys),
            BTreeSet::from([2, 3, 4, 5]),
            "{dialect:?}: 6 never published"
        );
        assert_eq!(
            revised.len(),
            3,
            "each withdrawn key revoked once: {revised:?}"
        );
        assert_eq!(seeds_of(&revised), BTreeSet::from([2, 3, 4]));
        assert!(
            revised
                .iter()
                .all(|k| k.report_type == Some(gaen::ReportType::Revoked))
        );
        assert_eq!(
            feed_live(&server).await,
            seed_keys(&[5]),
            "removed from the feed"
        );

        // The day's daily file closes later: withdrawn keys are not in it.
        publish_at(&server, T0 + 16 * HOUR).await;
        let (daily, daily_revised) = export_contents(&server, "/exports/302/daily/index.txt").await;
        assert_eq!(seeds_of(&daily), BTreeSet::from([5]));
        assert!(
            daily_revised.is_empty(),
            "the daily stream never published them"
        );
        assert_eq!(feed_live(&server).await, seed_keys(&[5]));

        let withdrawn = |id| {
            let store = server.store.clone();
            async move {
                store
                    .submission(id)
                    .await
                    .expect("read")
                    .expect("exists")
                    .withdrawn
            }
        };
        assert!(withdrawn(a).await && withdrawn(c).await && !withdrawn(b).await);
        let report = server.store.check().await.expect("check");
        assert!(report.consistent(), "{report:?}");
        assert_eq!(
            server.store.state_digest().await.expect("digest"),
            server
                .store
                .projected_state()
                .await
                .expect("state")
                .digest()
        );
        server.stop().await;
        db.finish().await;
    }
}
