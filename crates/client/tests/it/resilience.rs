//! Downloaders keep their place across a server restart and an app restart (state files),
//! fetch only what is new, and refuse a tampered file without moving.

use std::path::Path;

use confidant_client::ClientError;
use confidant_client::download::{ExportDownloader, ExportStream, FeedDownloader, HttpFetch};
use confidant_client::schedule::KeySchedule;
use confidant_client::upload::{NativeApi, ProviderApi};
use confidant_core::Region;
use confidant_core::feed::FeedIndex;
use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;

use crate::{HOUR, PROVIDER_TOKEN, T0, TestServer, key_ids, region};

async fn upload(server: &TestServer, phone: &mut KeySchedule, now: u64) -> Vec<gaen::DiagnosisKey> {
    server.clock.set(now);
    phone.broadcast(now);
    let code = ProviderApi::new(&server.url, PROVIDER_TOKEN)
        .expect("url")
        .issue_code()
        .await
        .expect("code");
    let api = NativeApi::new(&server.url).expect("url");
    let token = api.verify(&code).await.expect("token");
    let keys = phone.keys_for_upload(now, 2);
    api.submit(&token, &keys).await.expect("stored");
    keys
}

async fn feed_index(server: &TestServer) -> FeedIndex {
    server
        .get("feed/302/index.json")
        .await
        .json()
        .await
        .expect("feed index")
}

async fn export_listing(server: &TestServer) -> Vec<String> {
    let text = server
        .get("exports/302/index.txt")
        .await
        .text()
        .await
        .expect("index");
    text.lines().map(str::to_owned).collect()
}

fn feed_downloader(server: &TestServer, state: &Path) -> FeedDownloader<HttpFetch> {
    FeedDownloader::new(server.fetch(), region(), server.public_key.clone())
        .with_state_file(state.to_owned())
        .expect("state loads")
}

fn export_downloader(server: &TestServer, state: &Path) -> ExportDownloader<HttpFetch> {
    ExportDownloader::new(
        server.fetch(),
        region(),
        server.public_key.clone(),
        ExportStream::Hourly,
    )
    .with_state_file(state.to_owned())
    .expect("state loads")
}

/// Flips one byte in the middle of a published file; returns the original bytes.
fn flip_byte(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).expect("published file");
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(path, damaged).expect("damage");
    original
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resume_after_restarts_and_refuse_tampered_files() {
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("published dir");
    let phone_state = tempfile::tempdir().expect("phone dir");
    let feed_state = phone_state.path().join("feed.state");
    let export_state = phone_state.path().join("exports.state");

    let server = TestServer::start(&db, ManualClock::new(T0), published.path()).await;
    let mut first_phone = KeySchedule::from_seed([1; 32]);
    first_phone.broadcast(T0 - 86_400);
    let first_keys = upload(&server, &mut first_phone, T0 + 600).await;
    server.publish_at(T0 + 2 * HOUR).await;
    let mut feed = feed_downloader(&server, &feed_state);
    let mut exports = export_downloader(&server, &export_state);
    let feed_update = feed.sync().await.expect("feed");
    assert_eq!(key_ids(&feed_update.added), key_ids(&first_keys));
    let export_update = exports.sync().await.expect("exports");
    assert_eq!(key_ids(&export_update.keys), key_ids(&first_keys));
    let seq_before_restart = feed.seq().expect("synced");
    assert_eq!(seq_before_restart, feed_index(&server).await.latest_seq);
    let exports_before_restart = export_listing(&server).await.len();
    drop((feed, exports));

    // The server restarts on the same database and published files; the app restarts too.
    server.stop().await;
    let server = TestServer::start(&db, ManualClock::new(T0 + 2 * HOUR), published.path()).await;
    let mut second_phone = KeySchedule::from_seed([2; 32]);
    second_phone.broadcast(T0 - 86_400);
    let second_keys = upload(&server, &mut second_phone, T0 + 2 * HOUR + 60).await;
    server.publish_at(T0 + 5 * HOUR).await;

    let mut feed = feed_downloader(&server, &feed_state);
    assert_eq!(
        feed.seq(),
        Some(seq_before_restart),
        "position from the state file"
    );
    assert_eq!(
        key_ids(&feed.live_keys()),
        key_ids(&first_keys),
        "live set from the state file"
    );
    let index = feed_index(&server).await;
    let new_deltas = index.latest_seq - seq_before_restart;
    assert!(
        new_deltas >= 4,
        "three hours of 15-minute windows: {new_deltas}"
    );
    let update = feed.sync().await.expect("feed resumes");
    assert_eq!(
        update.files as u64, new_deltas,
        "only the new deltas, no snapshot"
    );
    assert_eq!(key_ids(&update.added), key_ids(&second_keys));
    assert!(update.removed.is_empty());
    assert_eq!(feed.seq(), Some(index.latest_seq));

    let mut exports = export_downloader(&server, &export_state);
    let listing = export_listing(&server).await;
    let update = exports.sync().await.expect("exports resume");
    assert_eq!(update.files, listing.len() - exports_before_restart);
    assert!(update.files >= 3);
    assert_eq!(key_ids(&update.keys), key_ids(&second_keys));

    // A state file is for one region.
    let elsewhere = FeedDownloader::new(
        server.fetch(),
        Region::try_from("303".to_owned()).expect("region"),
        server.public_key.clone(),
    )
    .with_state_file(feed_state.clone());
    assert!(matches!(elsewhere, Err(ClientError::CorruptState { .. })));

    // The next window's delta is damaged on disk after publication.
    server.publish_at(T0 + 5 * HOUR + 900).await;
    let index = feed_index(&server).await;
    let newest = index.deltas.last().expect("a delta").file.clone();
    let delta_path = published.path().join("feed/302").join(&newest);
    let state_before = std::fs::read(&feed_state).expect("state file");
    let seq_before = feed.seq();
    let original = flip_byte(&delta_path);
    let error = feed.sync().await.expect_err("tampered");
    match &error {
        ClientError::Tampered { file, .. } => assert!(file.ends_with(&newest), "{file}"),
        other => panic!("expected Tampered, got {other}"),
    }
    assert_eq!(feed.seq(), seq_before, "position unchanged");
    assert_eq!(std::fs::read(&feed_state).expect("state"), state_before);
    std::fs::write(&delta_path, original).expect("restore");
    let update = feed.sync().await.expect("a good file applies");
    assert_eq!(update.files, 1);
    assert_eq!(feed.seq(), Some(index.latest_seq));

    // The same for an export: the hourly file of the next hour is damaged.
    server.publish_at(T0 + 6 * HOUR).await;
    let listing = export_listing(&server).await;
    let newest = listing.last().expect("an export").clone();
    let zip_path = published.path().join(&newest);
    let original = flip_byte(&zip_path);
    let error = exports.sync().await.expect_err("tampered");
    assert!(
        matches!(&error, ClientError::Tampered { file, .. } if *file == newest),
        "{error}"
    );
    assert_eq!(exports.files_seen(), listing.len() - 1, "nothing applied");
    std::fs::write(&zip_path, original).expect("restore");
    assert_eq!(exports.sync().await.expect("syncs").files, 1);

    server.stop().await;
    db.finish().await;
}
