//! Confidant's HTTP surfaces: the native JSON API (`/v1`), the operators' admin API
//! (`/admin/v1`), the COVID Shield compatibility protocol (uploads and retrieval), published
//! files (`/exports`, `/feed`, `/tokens`), metrics and health endpoints, the OpenAPI description
//! (`/openapi.json`), and the background publisher and janitor. Only this crate knows HTTP
//! and JSON.
//!
//! [`App::build`] wires a router around a [`Store`]; [`App::run_until_stopped`] serves it
//! (and runs the background jobs) until a shutdown signal, then lets in-flight requests (and
//! their commits) finish. Tests bind `127.0.0.1:0` and use exactly this wiring.

mod admin;
pub mod bodies;
mod chaff;
pub mod clock;
mod confidential;
mod covidshield;
mod dev;
pub mod files;
mod lockout;
mod observe;
mod openapi;
mod problem;
pub mod publisher;
mod retrieve;
mod tokens;
mod v1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use confidant_core::{CodePolicy, KeyedHasher};
use confidant_store::Store;
use tokio::net::TcpListener;

pub use admin::new_admin_token;
pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use confidential::MatcherLink;
pub use files::{FileStore, ServeCache};
pub use lockout::DEFAULT_MAX_WRONG_CODES_PER_HOUR;
use lockout::Lockout;
pub use problem::Problem;
pub use publisher::{PublishSettings, Publisher, RegionSettings, RunReport, TokenPublication};
pub use tokens::TokenSettings;

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub hasher: KeyedHasher,
    pub clock: Arc<dyn Clock>,
    pub policy: CodePolicy,
    pub lockout: Arc<Lockout>,
    pub trust_forwarded_for: bool,
    pub files: FileStore,
    pub serve_cache: Arc<ServeCache>,
    pub publisher: Arc<Publisher>,
    pub retrieval_secret: Arc<Vec<u8>>,
    pub day_cache: Arc<retrieve::DayCache>,
    pub chaff_timings: Arc<chaff::Timings>,
    pub tokens: tokens::TokenSettings,
    pub matcher: Option<Arc<confidential::Forwarder>>,
}

impl AppState {
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    pub fn client_address(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        if self.trust_forwarded_for
            && let Some(last) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .rfind(|v| !v.is_empty())
        {
            return last.to_owned();
        }
        peer.ip().to_string()
    }
}

#[derive(Clone)]
pub struct ServerSettings {
    pub secret: Vec<u8>,
    pub policy: CodePolicy,
    pub trust_forwarded_for: bool,
    /// Where published files go (and are served from).
    pub files: FileStore,
    pub publish: PublishSettings,
    /// The COVID Shield retrieval HMAC key (at least 32 bytes), shared with the apps.
    pub retrieval_secret: Vec<u8>,
    /// How often the background jobs look for due work; `None` runs them only when asked
    /// (`Publisher::run_due`, or `POST /dev/clock`).
    pub publish_every: Option<Duration>,
    /// `serve --dev`: `POST /dev/clock` moves this clock. Never set in production.
    pub dev_clock: Option<OffsetClock>,
    /// Bytes of immutable files kept in memory for serving.
    pub serve_cache_bytes: usize,
    /// Wrong codes per hour, across all clients, after which redemption pauses.
    pub max_wrong_codes_per_hour: u32,
    /// The encounter-token API's rules (area granularity, chain length).
    pub tokens: TokenSettings,
    /// The confidential matcher behind `/matcher/…`, if any.
    pub matcher: Option<MatcherLink>,
}

impl ServerSettings {
    /// Defaults around a secret, a file store and a signing key: default code policy and
    /// publication rules, no background jobs, no dev clock.
    pub fn new(secret: Vec<u8>, files: FileStore, signing_key: gaen::SigningKey) -> Self {
        Self {
            retrieval_secret: secret.clone(),
            secret,
            policy: CodePolicy::default(),
            trust_forwarded_for: false,
            files,
            publish: PublishSettings::new(signing_key),
            publish_every: None,
            dev_clock: None,
            serve_cache_bytes: 64 << 20,
            max_wrong_codes_per_hour: lockout::DEFAULT_MAX_WRONG_CODES_PER_HOUR,
            tokens: TokenSettings::default(),
            matcher: None,
        }
    }
}

pub struct App {
    listener: TcpListener,
    router: Router,
    publisher: Arc<Publisher>,
    clock: Arc<dyn Clock>,
    publish_every: Option<Duration>,
}

impl App {
    pub async fn build(
        listener: TcpListener,
        store: Store,
        settings: ServerSettings,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let serve_cache = Arc::new(ServeCache::new(settings.serve_cache_bytes));
        let publisher = Arc::new(Publisher::new(
            store.clone(),
            settings.files.clone(),
            serve_cache.clone(),
            settings.publish.clone(),
        ));
        let state = AppState {
            store,
            hasher: KeyedHasher::new(&settings.secret),
            lockout: Arc::new(Lockout::new(settings.max_wrong_codes_per_hour)),
            clock: clock.clone(),
            policy: settings.policy,
            trust_forwarded_for: settings.trust_forwarded_for,
            files: settings.files,
            serve_cache,
            publisher: publisher.clone(),
            retrieval_secret: Arc::new(settings.retrieval_secret),
            day_cache: Arc::default(),
            chaff_timings: Arc::default(),
            tokens: settings.tokens,
            matcher: settings
                .matcher
                .map(|link| Arc::new(confidential::Forwarder::new(link))),
        };
        // Requests that touch the store get a deadline; static files answer from memory and
        // skip the timer.
        let api = Router::new()
            .merge(v1::routes())
            .merge(tokens::routes())
            .merge(confidential::routes())
            .merge(admin::routes())
            .merge(covidshield::routes())
            .merge(retrieve::routes())
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(30),
            ));
        let mut router = Router::new()
            .merge(api)
            .merge(files::routes())
            .merge(observe::routes())
            .merge(openapi::routes(openapi::document(
                &settings.policy,
                &settings.tokens,
                settings.dev_clock.is_some(),
            )))
            .route("/health", get(|| async { "ok\n" }))
            .route("/services/ping", get(covidshield::ping));
        if let Some(dev_clock) = settings.dev_clock {
            router = router.merge(dev::routes(dev_clock));
        }
        let router = router
            .with_state(state)
            .layer(axum::middleware::from_fn(observe::track_latency));
        Ok(Self {
            listener,
            router,
            publisher,
            clock,
            publish_every: settings.publish_every,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The publisher this app runs, for tests and tools that drive it directly.
    pub fn publisher(&self) -> Arc<Publisher> {
        self.publisher.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = self.publish_every.map(|every| {
            let publisher = self.publisher.clone();
            let clock = self.clock.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(e) = publisher.run_due(clock.now()).await {
                        tracing::error!(error = %e, "publishing failed; retrying on the next tick");
                    }
                }
            })
        });
        use axum::serve::ListenerExt;
        // Answers are small and whole: send them at once rather than waiting on Nagle.
        let listener = self.listener.tap_io(|tcp| {
            tcp.set_nodelay(true).ok();
        });
        let result = axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let Some(task) = background {
            task.abort();
            task.await.ok();
            self.publisher.resign().await;
        }
        result
    }
}
