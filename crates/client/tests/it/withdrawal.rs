//! A submission withdrawn after publication reaches phones as removals in the feed and as
//! REVOKED revised keys in the exports, and its exposures disappear.

use confidant_client::ClientError;
use confidant_client::download::{ExportDownloader, ExportStream, FeedDownloader};
use confidant_client::matching::match_keys;
use confidant_client::risk::ExposureConfiguration;
use confidant_client::schedule::KeySchedule;
use confidant_client::upload::{NativeApi, ProviderApi, SubmissionState};
use confidant_core::corrections::{Actor, Command};
use confidant_core::{KeyData, TrackingId};
use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;
use std::collections::BTreeSet;

use crate::{DAY, HOUR, PROVIDER_TOKEN, T0, TestServer, encounter, key_ids, region};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_submission_is_removed_and_revoked() {
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&db, ManualClock::new(T0), published.path()).await;
    let mut a = KeySchedule::from_seed([0xA; 32]);
    a.broadcast(T0 - DAY);
    let heard_by_b = encounter(&mut a, T0);

    server.clock.set(T0 + 1800);
    let code = ProviderApi::new(&server.url, PROVIDER_TOKEN)
        .expect("url")
        .issue_code()
        .await
        .expect("code");
    let api = NativeApi::new(&server.url).expect("url");
    let token = api.verify(&code).await.expect("token");
    let keys = a.keys_for_upload(T0 + 1800, 4);
    let receipt = api.submit(&token, &keys).await.expect("stored");
    server.publish_at(T0 + 2 * HOUR).await;

    let mut feed = FeedDownloader::new(server.fetch(), region(), server.public_key.clone());
    let mut exports = ExportDownloader::new(
        server.fetch(),
        region(),
        server.public_key.clone(),
        ExportStream::Hourly,
    );
    let config = ExposureConfiguration::covid_shield_default();
    let published_keys = feed.sync().await.expect("feed").added;
    assert_eq!(key_ids(&published_keys), key_ids(&keys));
    assert_eq!(
        key_ids(&exports.sync().await.expect("exports").keys),
        key_ids(&keys)
    );
    assert_eq!(
        match_keys(&heard_by_b, &feed.live_keys(), &config, T0 + 2 * HOUR).len(),
        1
    );

    // The test result was wrong: the health authority withdraws the submission.
    let withdrawn_at = T0 + 2 * HOUR + 300;
    let tracking_id = TrackingId::from_hex(&receipt.tracking_id).expect("hex tracking id");
    server
        .store
        .correct(
            Command::WithdrawSubmission(tracking_id),
            Actor::Console,
            withdrawn_at,
            "wrong test result".into(),
        )
        .await
        .expect("withdrawn");
    assert_eq!(
        api.status(&receipt.tracking_id)
            .await
            .expect("status")
            .status,
        SubmissionState::Withdrawn
    );
    let malformed = api.status("../admin").await.expect_err("not a tracking ID");
    assert!(
        matches!(malformed, ClientError::MalformedTrackingId(_)),
        "{malformed}"
    );
    server.publish_at(T0 + 3 * HOUR).await;

    let expected: BTreeSet<KeyData> = keys.iter().map(|k| KeyData(k.tek.0)).collect();
    let update = feed.sync().await.expect("feed");
    assert!(update.added.is_empty());
    assert_eq!(
        update.removed.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );
    assert!(feed.live_keys().is_empty());
    assert!(match_keys(&heard_by_b, &feed.live_keys(), &config, T0 + 3 * HOUR).is_empty());

    let update = exports.sync().await.expect("exports");
    assert!(update.keys.is_empty());
    assert_eq!(
        update.revoked.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );

    // A phone that starts now never sees the withdrawn keys at all.
    let mut newcomer = FeedDownloader::new(server.fetch(), region(), server.public_key.clone());
    let fresh = newcomer.sync().await.expect("feed");
    assert!(fresh.added.is_empty() && fresh.removed.is_empty());

    server.stop().await;
    db.finish().await;
}
