//! The client against a real server over HTTP on port 0 (SQLite; the server's own suite
//! covers PostgreSQL): phones broadcast and listen, upload through both APIs, download the
//! feed and the exports, survive restarts, refuse tampered files and see withdrawals; pairs
//! of phones run the encounter-token protocol offline (`encounter`); and phones match
//! published token files served from memory and talk to the token API (`tokens`).

mod confidential;
mod encounter;
mod fuzz_corpus;
mod resilience;
mod round_trip;
mod token_flow;
mod tokens;
mod withdrawal;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use confidant_client::download::HttpFetch;
use confidant_client::observations::{ObservationStore, Sighting};
use confidant_client::schedule::KeySchedule;
use confidant_core::{KeyedHasher, ProviderId, Region, SmallBatch};
use confidant_server::{App, FileStore, ManualClock, Publisher, ServerSettings};
use confidant_store::testing::TestDatabase;
use confidant_store::{Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2027-01-15T08:00:00Z, the start of a feed window, an hour and a 10-minute interval.
pub const T0: u64 = 1_800_000_000;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;
pub const SECRET: &[u8] = b"a server secret of at least 32 bytes";
pub const PROVIDER_TOKEN: &str = "provider-token-for-tests";
/// A fixed signing key, so that servers restarted on the same data sign alike.
pub const SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBKRbF3IKD42P9lts
k/I9/1IBzsx6qRzsNxzzf5YwArGhRANCAATS2LLLD3FjzFYdQK6/Gp08j/nibMk9
Krp3MQDkwMpI3kasIjWEwBRKSsW93AQMZVmMOQ+12DDm/TnUXvyCoKdm
-----END PRIVATE KEY-----
";

pub fn region() -> Region {
    Region::try_from("302".to_owned()).expect("region")
}

pub struct TestServer {
    pub url: String,
    pub clock: ManualClock,
    pub store: Store,
    pub http: reqwest::Client,
    pub publisher: Arc<Publisher>,
    /// Public half of the key that signs published files: what an app pins.
    pub public_key: gaen::VerifyingKey,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on `db` publishing to `published`, with one registered provider (token
    /// [`PROVIDER_TOKEN`]), no padding of small batches (so downloads hold exactly what was
    /// uploaded) and no in-memory cache of served files (so a file changed on disk is served
    /// as it now is).
    pub async fn start(db: &TestDatabase, clock: ManualClock, published: &Path) -> Self {
        Self::start_with(db, clock, published, |_| {}).await
    }

    /// [`TestServer::start`] with settings adjusted by `configure`.
    pub async fn start_with(
        db: &TestDatabase,
        clock: ManualClock,
        published: &Path,
        configure: impl FnOnce(&mut ServerSettings),
    ) -> Self {
        let store = Store::open(db.url(), StoreOptions::default())
            .await
            .expect("store");
        let hasher = KeyedHasher::new(SECRET);
        // Already registered when a second server starts on the same database.
        store
            .register_provider(
                ProviderId([1; 8]),
                "Test lab".into(),
                region(),
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
        settings.publish.default_policy.small_batch = SmallBatch::Off;
        settings.serve_cache_bytes = 0;
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

    /// Runs the publisher as its background loop would at `now`.
    pub async fn publish_at(&self, now: u64) {
        self.clock.set(now);
        self.publisher.run_due(now).await.expect("publishes");
    }

    pub fn fetch(&self) -> HttpFetch {
        HttpFetch::new(&self.url).expect("base URL")
    }

    /// A published file or index, straight from the server.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/{path}", self.url))
            .send()
            .await
            .expect("request")
    }
}

/// Phone B hears phone A once a minute for 20 minutes from `start`, at 50 dB, and hears
/// phone C (who never uploads) too. Returns what B stored.
pub fn encounter(a: &mut KeySchedule, start: u64) -> ObservationStore {
    let mut bystander = KeySchedule::from_seed([0xC; 32]);
    let mut heard = ObservationStore::new();
    for at in (start..start + 1200).step_by(60) {
        for (phone, attenuation_db) in [(&mut *a, 50), (&mut bystander, 40)] {
            let (rpi, aem) = phone.broadcast(at);
            heard.record(Sighting {
                rpi,
                aem,
                first_seen: at,
                duration_seconds: 60,
                attenuation_db,
            });
        }
    }
    heard
}

/// What identifies a published key, whatever the format's optional fields.
pub fn key_ids(keys: &[gaen::DiagnosisKey]) -> BTreeSet<([u8; 16], u32, u32, Option<u8>)> {
    keys.iter()
        .map(|k| {
            (
                k.tek.0,
                k.rolling_start.get(),
                k.rolling_period.get(),
                k.transmission_risk.map(gaen::TransmissionRisk::get),
            )
        })
        .collect()
}
