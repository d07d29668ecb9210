//! Confidant's HTTP surfaces: the native JSON API (`/v1`), the COVID Shield compatibility
//! protocol, and health endpoints. Only this crate knows HTTP and JSON.
//!
//! [`App::build`] wires a router around a [`Store`]; [`App::run_until_stopped`] serves it
//! until a shutdown signal, then lets in-flight requests (and their commits) finish. Tests bind
//! `127.0.0.1:0` and use exactly this wiring.

pub mod clock;
mod covidshield;
mod lockout;
mod problem;
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

pub use clock::{Clock, ManualClock, SystemClock};
use lockout::Lockout;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub hasher: KeyedHasher,
    pub clock: Arc<dyn Clock>,
    pub policy: CodePolicy,
    pub lockout: Arc<Lockout>,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a load balancer).
    pub trust_forwarded_for: bool,
}

impl AppState {
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The client address used for brute-force counters; never stored, only hashed.
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

/// How the server is put together; the CLI fills it from flags, environment and file.
#[derive(Clone)]
pub struct ServerSettings {
    /// Secret for keyed hashes of codes, tokens and addresses (at least 32 bytes).
    pub secret: Vec<u8>,
    pub policy: CodePolicy,
    pub trust_forwarded_for: bool,
}

pub struct App {
    listener: TcpListener,
    router: Router,
}

impl App {
    pub async fn build(
        listener: TcpListener,
        store: Store,
        settings: ServerSettings,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let state = AppState {
            store,
            hasher: KeyedHasher::new(&settings.secret),
            lockout: Arc::new(Lockout::new()),
            clock,
            policy: settings.policy,
            trust_forwarded_for: settings.trust_forwarded_for,
        };
        let router = Router::new()
            .merge(v1::routes())
            .merge(covidshield::routes())
            .route("/health", get(|| async { "ok\n" }))
            .route("/services/ping", get(covidshield::ping))
            .with_state(state)
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(30),
            ));
        Ok(Self { listener, router })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
