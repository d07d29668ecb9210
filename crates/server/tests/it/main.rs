//! The server over real HTTP on port 0, on SQLite and on PostgreSQL.

mod admin;
mod chaff;
mod covidshield;
mod fuzz_corpus;
mod native;
mod openapi;
mod publication;
mod tokens;

use std::sync::Arc;

use confidant_core::{KeyedHasher, ProviderId, Region};
use confidant_server::{App, FileStore, ManualClock, Publisher, ServerSettings};
use confidant_store::testing::TestDatabase;
use confidant_store::{Dialect, Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BOTH: [Dialect; 2] = [Dialect::Sqlite, Dialect::Postgres];
/// 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;
pub const SECRET: &[u8] = b"a server secret of at least 32 bytes";
pub const PROVIDER_TOKEN: &str = "provider-token-for-tests";
/// A fixed signing key, so that several servers in one test sign alike.
pub const SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBKRbF3IKD42P9lts
k/I9/1IBzsx6qRzsNxzzf5YwArGhRANCAATS2LLLD3FjzFYdQK6/Gp08j/nibMk9
Krp3MQDkwMpI3kasIjWEwBRKSsW93AQMZVmMOQ+12DDm/TnUXvyCoKdm
-----END PRIVATE KEY-----
";

pub struct TestServer {
    pub url: String,
    pub clock: ManualClock,
    pub store: Store,
    pub http: reqwest::Client,
    pub publisher: Arc<Publisher>,
    /// Public half of the key that signs published files.
    pub public_key: gaen::VerifyingKey,
    /// Where published files are written (shared by servers started with the same dir).
    pub published: std::path::PathBuf,
    published_dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `db` with one registered provider (token [`PROVIDER_TOKEN`]).
    pub async fn start(db: &TestDatabase, clock: ManualClock) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_with(db, clock, dir.path(), |_| {}).await;
        server.published_dir = Some(dir);
        server
    }

    /// Starts a server publishing to `published`, with settings adjusted by `configure`.
    pub async fn start_with(
        db: &TestDatabase,
        clock: ManualClock,
        published: &std::path::Path,
        configure: impl FnOnce(&mut ServerSettings),
    ) -> Self {
        let store = Store::open(db.url(), StoreOptions::default())
            .await
            .expect("store");
        let hasher = KeyedHasher::new(SECRET);
        store
            .register_provider(
                ProviderId([1; 8]),
                "Test lab".into(),
                Region::try_from("302".to_owned()).expect("region"),
                hasher.token(PROVIDER_TOKEN),
            )
            .await
            .ok();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let signing_key = gaen::SigningKey::from_pem(SIGNING_KEY_PEM).expect("test key");
        let public_key = signing_key.verifying_key();
        let files = FileStore::local(published).expect("published dir");
        let mut settings = ServerSettings::new(SECRET.to_vec(), files, signing_key);
        settings.trust_forwarded_for = true;
        configure(&mut settings);
        let app = App::build(listener, store.clone(), settings, Arc::new(clock.clone()))
            .await
            .expect("app");
        let url = format!("http://127.0.0.1:{}", app.port());
        let publisher = app.publisher();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            stopped.await.ok();
        }));
        Self {
            url,
            clock,
            store,
            http: reqwest::Client::new(),
            publisher,
            public_key,
            published: published.to_owned(),
            published_dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Keeps `dir` (where this server publishes) until the server is dropped.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self.published_dir = Some(dir);
    }

    /// Graceful stop: in-flight requests finish, then the store closes.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
        self.store.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Issues a code through `/v1/codes`.
    pub async fn code(&self, format: &str) -> String {
        let response = self
            .http
            .post(self.url("/v1/codes"))
            .bearer_auth(PROVIDER_TOKEN)
            .json(&serde_json::json!({"format": format}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("json");
        body["code"].as_str().expect("code").to_owned()
    }
}

/// Today's rolling start at [`T0`], minus `days_ago` days.
pub fn rolling_start(days_ago: u32) -> i64 {
    i64::from((T0 / 600) as u32 / 144 * 144 - days_ago * 144)
}
