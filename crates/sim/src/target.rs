//! The server a simulation runs against, and the CDN in front of it. Either an embedded
//! server (SQLite in a temporary directory, a manual clock) or a running one started with
//! `--dev`, whose clock the simulation moves through `POST /dev/clock`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use confidant_client::ClientError;
use confidant_client::download::{Fetch, HttpFetch};
use confidant_core::corrections::{Actor, Scope};
use confidant_core::{KeyedHasher, Region};
use confidant_server::{App, FileStore, ManualClock, Publisher, ServerSettings};
use confidant_store::{Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::SimError;

/// How the simulation reaches its server.
pub enum Target {
    /// Start a server in this process.
    Embedded,
    /// A server started with `confidant serve --dev`, reached at `url`, whose files are
    /// signed by `public_key`. `admin_token` (admin scope) lets the simulation register its
    /// provider and roll back submissions.
    Remote {
        url: String,
        public_key: gaen::VerifyingKey,
        admin_token: String,
    },
}

/// A server under simulation: its URL, the key that signs its files, an admin token, and
/// control of its clock.
pub struct Server {
    pub url: String,
    pub public_key: gaen::VerifyingKey,
    pub admin_token: String,
    pub http: reqwest::Client,
    clock: Clock,
    embedded: Option<Embedded>,
}

enum Clock {
    Manual {
        clock: ManualClock,
        publisher: Arc<Publisher>,
    },
    Remote {
        now: u64,
    },
}

struct Embedded {
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// 2026-03-01T00:00:00Z: embedded runs start here, so that a seed gives the same report.
pub const EMBEDDED_START: u64 = 1_772_323_200;

impl Server {
    pub async fn start(target: Target) -> Result<Self, SimError> {
        let http = reqwest::Client::new();
        match target {
            Target::Embedded => Self::embedded(http).await,
            Target::Remote {
                url,
                public_key,
                admin_token,
            } => {
                let url = url.trim_end_matches('/').to_owned();
                let mut server = Self {
                    url,
                    public_key,
                    admin_token,
                    http,
                    clock: Clock::Remote { now: 0 },
                    embedded: None,
                };
                let now = server.advance_remote(0).await?;
                server.clock = Clock::Remote { now };
                Ok(server)
            }
        }
    }

    async fn embedded(http: reqwest::Client) -> Result<Self, SimError> {
        let dir = tempfile::tempdir().map_err(|e| SimError::Server(e.to_string()))?;
        let url = format!("sqlite://{}", dir.path().join("confidant.db").display());
        let store = Store::open(&url, StoreOptions::default())
            .await
            .map_err(|e| SimError::Server(format!("cannot open the embedded store: {e}")))?;
        let secret: [u8; 32] = rand_secret();
        let signing_key = gaen::SigningKey::generate(&mut rand_core::OsRng);
        let public_key = signing_key.verifying_key();
        let files = FileStore::local(&dir.path().join("published")).map_err(SimError::Server)?;
        let settings = ServerSettings::new(secret.to_vec(), files, signing_key);
        let hasher = KeyedHasher::new(&secret);
        let (admin_token, command) =
            confidant_server::new_admin_token(&hasher, Scope::Admin, "simulation");
        store
            .correct(command, Actor::Console, EMBEDDED_START, "simulation".into())
            .await
            .map_err(|e| SimError::Server(format!("cannot create the admin token: {e}")))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| SimError::Server(format!("cannot listen: {e}")))?;
        let clock = ManualClock::new(EMBEDDED_START);
        let app = App::build(listener, store.clone(), settings, Arc::new(clock.clone()))
            .await
            .map_err(|e| SimError::Server(e.to_string()))?;
        let url = format!("http://127.0.0.1:{}", app.port());
        let publisher = app.publisher();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            stopped.await.ok();
        }));
        Ok(Self {
            url,
            public_key,
            admin_token,
            http,
            clock: Clock::Manual { clock, publisher },
            embedded: Some(Embedded {
                store,
                stop: Some(stop),
                task: Some(task),
                _dir: dir,
            }),
        })
    }

    /// The server's time.
    pub fn now(&self) -> u64 {
        match &self.clock {
            Clock::Manual { clock, .. } => confidant_server::Clock::now(clock),
            Clock::Remote { now } => *now,
        }
    }

    /// Moves the server's clock to `at` (never back) and lets it publish what is due.
    pub async fn set_time(&mut self, at: u64) -> Result<(), SimError> {
        let now = self.now();
        if at <= now {
            return Ok(());
        }
        match &mut self.clock {
            Clock::Manual { clock, publisher } => {
                clock.set(at);
                publisher
                    .run_due(at)
                    .await
                    .map_err(|e| SimError::Server(format!("publishing failed: {e}")))?;
            }
            Clock::Remote { .. } => {
                let now = self.advance_remote(at - now).await?;
                self.clock = Clock::Remote { now };
            }
        }
        Ok(())
    }

    async fn advance_remote(&self, seconds: u64) -> Result<u64, SimError> {
        let response = self
            .http
            .post(format!("{}/dev/clock", self.url))
            .json(&serde_json::json!({ "advanceSeconds": seconds }))
            .send()
            .await
            .map_err(|e| SimError::Server(format!("cannot reach {}: {e}", self.url)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SimError::Server(format!(
                "{} has no /dev/clock: start it with `confidant serve --dev` (never with real data)",
                self.url
            )));
        }
        let body: serde_json::Value = response
            .error_for_status()
            .map_err(|e| SimError::Server(format!("moving the clock failed: {e}")))?
            .json()
            .await
            .map_err(|e| SimError::Server(format!("moving the clock failed: {e}")))?;
        body["now"]
            .as_u64()
            .ok_or_else(|| SimError::Server("/dev/clock did not say what time it is".into()))
    }

    /// Registers a provider through the admin API; returns its id and its API token.
    pub async fn register_provider(&self, region: &Region) -> Result<(String, String), SimError> {
        let body = self
            .admin_post(
                "/admin/v1/providers",
                serde_json::json!({"name": "Simulated test centre", "region": region.as_str(), "reason": "simulation"}),
            )
            .await?;
        let field = |name: &str| {
            body[name].as_str().map(str::to_owned).ok_or_else(|| {
                SimError::Server(format!("registering the provider returned no {name}"))
            })
        };
        Ok((field("id")?, field("apiToken")?))
    }

    /// Imports TANs for `provider` through the admin API (`POST /admin/v1/tans`), as the
    /// health authority does with its list of valid TANs.
    pub async fn import_tans(&self, provider: &str, tans: &[String]) -> Result<(), SimError> {
        self.admin_post(
            "/admin/v1/tans",
            serde_json::json!({"provider": provider, "tans": tans, "reason": "simulated TAN list"}),
        )
        .await
        .map(drop)
    }

    /// Rolls a submission back through the admin API.
    pub async fn withdraw(&self, tracking_id: &str) -> Result<(), SimError> {
        self.admin_post(
            &format!("/admin/v1/submissions/{tracking_id}/withdraw"),
            serde_json::json!({"reason": "simulated wrong upload"}),
        )
        .await
        .map(drop)
    }

    async fn admin_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, SimError> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| SimError::Server(format!("POST {path}: {e}")))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(SimError::Server(format!(
                "POST {path} answered {status}: {}",
                body["detail"].as_str().unwrap_or("no detail")
            )));
        }
        Ok(body)
    }

    pub async fn stop(mut self) {
        if let Some(mut embedded) = self.embedded.take() {
            if let Some(stop) = embedded.stop.take() {
                stop.send(()).ok();
            }
            if let Some(task) = embedded.task.take() {
                task.await.ok();
            }
            embedded.store.close().await;
        }
    }
}

fn rand_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    secret
}

/// A CDN edge in front of the server: published files never change, so the first request
/// for one goes to the server and every later one is served from here. Indices are always
/// fetched from the server, as their `no-cache` asks.
pub struct Cdn {
    origin: HttpFetch,
    files: Mutex<HashMap<String, Bytes>>,
    /// Requests that reached the server.
    pub origin_requests: AtomicU64,
}

impl Cdn {
    pub fn new(origin: &str) -> Result<Arc<Self>, SimError> {
        Ok(Arc::new(Self {
            origin: HttpFetch::new(origin).map_err(|e| SimError::Server(e.to_string()))?,
            files: Mutex::new(HashMap::new()),
            origin_requests: AtomicU64::new(0),
        }))
    }

    /// A fetcher for one group of phones, counting the bytes they download.
    pub fn edge(self: &Arc<Self>) -> EdgeFetch {
        EdgeFetch {
            cdn: self.clone(),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// What phones download through: the shared [`Cdn`], with their own byte count.
#[derive(Clone)]
pub struct EdgeFetch {
    cdn: Arc<Cdn>,
    pub bytes: Arc<AtomicU64>,
}

impl EdgeFetch {
    /// Bytes downloaded since the last call.
    pub fn take_bytes(&self) -> u64 {
        self.bytes.swap(0, Ordering::Relaxed)
    }
}

impl Fetch for EdgeFetch {
    async fn get(&self, path: &str) -> Result<Option<Bytes>, ClientError> {
        let immutable = !confidant_server::files::is_index(path.trim_start_matches('/'));
        if immutable {
            let cached = self.cdn.files.lock().expect("cdn lock").get(path).cloned();
            if let Some(bytes) = cached {
                self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                return Ok(Some(bytes));
            }
        }
        self.cdn.origin_requests.fetch_add(1, Ordering::Relaxed);
        let fetched = self.cdn.origin.get(path).await?;
        if let Some(bytes) = &fetched {
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if immutable {
                self.cdn
                    .files
                    .lock()
                    .expect("cdn lock")
                    .insert(path.to_owned(), bytes.clone());
            }
        }
        Ok(fetched)
    }
}
