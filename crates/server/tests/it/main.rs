//! The server over real HTTP on port 0, on SQLite and on PostgreSQL.

mod covidshield;
mod native;

use std::sync::Arc;

use confidant_core::{CodePolicy, KeyedHasher, ProviderId, Region};
use confidant_server::{App, ManualClock, ServerSettings};
use confidant_store::testing::TestDatabase;
use confidant_store::{Dialect, Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BOTH: [Dialect; 2] = [Dialect::Sqlite, Dialect::Postgres];
/// 2027-01-15T08:00:00Z.
pub const T0: u64 = 1_800_000_000;
pub const SECRET: &[u8] = b"a server secret of at least 32 bytes";
pub const PROVIDER_TOKEN: &str = "provider-token-for-tests";

pub struct TestServer {
    pub url: String,
    pub clock: ManualClock,
    pub store: Store,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `db` with one registered provider (token [`PROVIDER_TOKEN`]).
    pub async fn start(db: &TestDatabase, clock: ManualClock) -> Self {
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
        let settings = ServerSettings {
            secret: SECRET.to_vec(),
            policy: CodePolicy::default(),
            trust_forwarded_for: true,
        };
        let app = App::build(listener, store.clone(), settings, Arc::new(clock.clone()))
            .await
            .expect("app");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            stopped.await.ok();
        }));
        Self {
            url,
            clock,
            store,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
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
