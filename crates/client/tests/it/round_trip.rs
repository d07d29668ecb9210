//! The whole loop: phone A broadcasts, phone B listens, A is diagnosed and uploads (native and
//! COVID Shield), the keys leave embargo, B downloads them and finds exactly A's exposure.

use confidant_client::ClientError;
use confidant_client::download::{ExportDownloader, ExportStream, FeedDownloader};
use confidant_client::matching::match_keys;
use confidant_client::observations::ObservationStore;
use confidant_client::risk::ExposureConfiguration;
use confidant_client::schedule::KeySchedule;
use confidant_client::unix_day;
use confidant_client::upload::{CovidShieldApi, NativeApi, ProviderApi, SubmissionState};
use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;

use crate::{DAY, HOUR, PROVIDER_TOKEN, T0, TestServer, encounter, key_ids, region};

/// A phone that has been running for three days and met B at T0.
fn phone_a() -> (KeySchedule, ObservationStore) {
    let mut a = KeySchedule::from_seed([0xA; 32]);
    a.broadcast(T0 - 2 * DAY);
    a.broadcast(T0 - DAY);
    let heard_by_b = encounter(&mut a, T0);
    (a, heard_by_b)
}

/// B's view after publication: the feed's new keys must give exactly A's exposure today, and
/// the hourly exports the same keys as the feed.
async fn b_finds_exactly_a(
    server: &TestServer,
    a: &mut KeySchedule,
    heard_by_b: &ObservationStore,
    uploaded: &[gaen::DiagnosisKey],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut feed = FeedDownloader::new(server.fetch(), region(), server.public_key.clone())
        .with_state_file(dir.path().join("feed.state"))
        .expect("no state yet");
    let update = feed.sync().await.expect("feed syncs");
    assert_eq!(key_ids(&update.added), key_ids(uploaded));
    assert!(update.removed.is_empty());
    assert!(update.files >= 2, "a snapshot and deltas: {}", update.files);
    assert!(update.bytes > 0);

    // The configuration the server publishes parses into the client's type.
    let config: ExposureConfiguration = server
        .get("exposure-configuration/302.json")
        .await
        .json()
        .await
        .expect("exposure configuration");
    assert_eq!(config, ExposureConfiguration::covid_shield_default());

    let now = T0 + 2 * HOUR;
    let exposures = match_keys(heard_by_b, &update.added, &config, now);
    assert_eq!(exposures.len(), 1, "{exposures:?}");
    let exposure = &exposures[0];
    assert_eq!(exposure.key.tek, a.tek(T0), "today's key of A");
    assert_eq!(exposure.day, unix_day(T0));
    // Two RPIs, ten minutes each; 50 dB → 5, ≤ 20 min → 5, today → 1, risk 4 → 1.
    assert_eq!(exposure.duration_seconds, 1200);
    assert_eq!(exposure.attenuation_db, 50);
    assert_eq!(exposure.transmission_risk, 4);
    assert_eq!(exposure.score, 25);

    let again = feed.sync().await.expect("second sync");
    assert!(again.added.is_empty() && again.removed.is_empty());
    assert_eq!(again.files, 0, "nothing new to fetch");

    let mut exports = ExportDownloader::new(
        server.fetch(),
        region(),
        server.public_key.clone(),
        ExportStream::Hourly,
    );
    let from_exports = exports.sync().await.expect("exports sync");
    assert_eq!(key_ids(&from_exports.keys), key_ids(uploaded));
    assert!(from_exports.revoked.is_empty());
    assert!(from_exports.files >= 1);
    let exposures_from_exports = match_keys(heard_by_b, &from_exports.keys, &config, now);
    assert_eq!(exposures_from_exports.len(), 1);
    assert_eq!(exposures_from_exports[0].score, 25);
    // Keys from both sources at once: the sightings still count once.
    let both = [update.added.clone(), from_exports.keys.clone()].concat();
    let exposures_from_both = match_keys(heard_by_b, &both, &config, now);
    assert_eq!(exposures_from_both.len(), 1);
    assert_eq!(
        (
            exposures_from_both[0].duration_seconds,
            exposures_from_both[0].score
        ),
        (1200, 25)
    );
    assert_eq!(exports.sync().await.expect("again").files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_upload_reaches_the_phone_that_met_its_owner() {
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&db, ManualClock::new(T0), published.path()).await;
    let (mut a, heard_by_b) = phone_a();
    assert_eq!(
        heard_by_b.len(),
        4,
        "two RPIs of A and two of C, scans merged"
    );

    // Before anything is published the feed has no index yet: nothing to do, no position.
    let mut early = FeedDownloader::new(server.fetch(), region(), server.public_key.clone());
    let nothing = early.sync().await.expect("no index is not an error");
    assert!(nothing.added.is_empty() && early.seq().is_none());

    let diagnosed_at = T0 + 1800;
    server.clock.set(diagnosed_at);
    let code = ProviderApi::new(&server.url, PROVIDER_TOKEN)
        .expect("url")
        .issue_code()
        .await
        .expect("a code");
    let api = NativeApi::new(&server.url).expect("url");
    let token = api.verify(&code).await.expect("code accepted");
    assert!(token.key_budget >= 3);
    let wrong = api.verify(&code).await.expect_err("a code is single use");
    assert!(
        matches!(&wrong, ClientError::Status { status: 401, code: Some(c), .. } if c == "invalid_code"),
        "{wrong}"
    );
    let keys = a.keys_for_upload(diagnosed_at, 4);
    assert_eq!(keys.len(), 3);
    let receipt = api.submit(&token, &keys).await.expect("stored");
    assert_eq!(
        (receipt.inserted, receipt.skipped, receipt.dropped),
        (3, 0, 0)
    );
    let status = api.status(&receipt.tracking_id).await.expect("status");
    assert_eq!(status.status, SubmissionState::Accepted);
    assert_eq!(status.inserted, 3);

    // Past days' keys leave embargo when the submission hour ends (09:00). Today's key ran
    // until 08:40, plus the 1 h margin: it waits for the feed window that ends at 09:45.
    server.publish_at(T0 + HOUR + 900).await;
    let mut feed = FeedDownloader::new(server.fetch(), region(), server.public_key.clone());
    let first = feed.sync().await.expect("syncs");
    assert_eq!(key_ids(&first.added), key_ids(&keys[..2]));
    server.publish_at(T0 + 2 * HOUR).await;
    assert_eq!(
        api.status(&receipt.tracking_id)
            .await
            .expect("status")
            .status,
        SubmissionState::Published
    );
    let second = feed.sync().await.expect("syncs");
    assert_eq!(key_ids(&second.added), key_ids(&keys[2..]));
    assert_eq!(second.files, 3, "only the three deltas since 09:15");

    b_finds_exactly_a(&server, &mut a, &heard_by_b, &keys).await;
    server.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_covid_shield_upload_reaches_the_phone_that_met_its_owner() {
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&db, ManualClock::new(T0), published.path()).await;
    let (mut a, heard_by_b) = phone_a();

    let diagnosed_at = T0 + 1800;
    server.clock.set(diagnosed_at);
    let keys = a.keys_for_upload(diagnosed_at, 4);
    let mut app = CovidShieldApi::new(&server.url).expect("url");
    let early = app
        .upload(&keys, diagnosed_at)
        .await
        .expect_err("not claimed");
    assert!(matches!(early, ClientError::NotClaimed), "{early}");
    let wrong = app.claim("00000000").await.expect_err("no such code");
    assert!(
        matches!(
            wrong,
            ClientError::CovidShield {
                status: 401,
                error: 2,
                name: "INVALID_ONE_TIME_CODE",
                tries_remaining: Some(7),
                ..
            }
        ),
        "{wrong}"
    );
    assert!(!app.is_claimed());

    let code = ProviderApi::new(&server.url, PROVIDER_TOKEN)
        .expect("url")
        .issue_code()
        .await
        .expect("a code");
    app.claim(&code).await.expect("claimed");
    // The server checks the timestamp against its clock: two hours off is refused.
    let stale = app
        .upload(&keys, diagnosed_at - 2 * HOUR)
        .await
        .expect_err("stale timestamp");
    assert!(
        matches!(
            stale,
            ClientError::CovidShield {
                status: 400,
                name: "INVALID_TIMESTAMP",
                ..
            }
        ),
        "{stale}"
    );
    app.upload(&keys, diagnosed_at).await.expect("uploaded");

    server.publish_at(T0 + 2 * HOUR).await;
    b_finds_exactly_a(&server, &mut a, &heard_by_b, &keys).await;
    server.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaff_is_accepted_like_a_report_and_leaves_no_trace() {
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&db, ManualClock::new(T0), published.path()).await;
    let before = server.store.events().await.expect("events").len();
    let app = NativeApi::new(&server.url).expect("url");
    for key_count in [1, 7, 14] {
        app.send_chaff(key_count, T0)
            .await
            .expect("chaff is answered");
    }
    assert_eq!(
        server.store.events().await.expect("events").len(),
        before,
        "nothing stored"
    );
    server.stop().await;
    db.finish().await;
}
