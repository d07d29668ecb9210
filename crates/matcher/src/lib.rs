//! The confidential matcher: the only process that sees plaintext contact tuples.
//!
//! It generates its X25519 key at start, inside the process, and proves it with evidence from
//! an [`attestor::Attestor`] that binds the key to a phone's nonce. Phones seal their requests
//! to that key (`core::confidential`); the main server forwards them unread. A positive user's
//! contact log goes into the [`seal::SealedLog`] and the in-memory [`index::TupleIndex`];
//! a poll is matched in memory and dropped, and only counters remain. Tuples are forgotten
//! after 14 days (by their day).
//!
//! Deliberately small: no database, no event log, no templates, no TLS (it runs behind the
//! main server on a private link). [`Matcher::build`] then [`Matcher::run_until_stopped`], as
//! the main server is wired; tests bind `127.0.0.1:0`.

pub mod attestor;
pub mod index;
pub mod seal;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use service::{Clock, EVIDENCE_LIFETIME_SECONDS, RETENTION_DAYS};

use crate::attestor::Attestor;
use crate::index::TupleIndex;
use crate::seal::{SealError, SealedLog, SealingKey};

/// How a matcher runs.
pub struct MatcherSettings {
    /// Where the sealed log lives (`tuples.sealed`).
    pub data_dir: PathBuf,
    pub attestor: Box<dyn Attestor>,
    pub sealing_key: SealingKey,
    /// The bearer secret the main server sends with uploads.
    pub upload_secret: Vec<u8>,
    pub clock: Clock,
    /// How often tuples past retention are forgotten and the log compacted.
    pub expire_every: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

pub struct Matcher {
    listener: TcpListener,
    shared: Arc<service::Shared>,
    expire_every: Duration,
}

/// The X25519 secret, drawn from the OS inside this process; it never leaves it.
fn fresh_secret() -> [u8; 32] {
    crypto_box::SecretKey::generate(&mut rand_core::OsRng).to_bytes()
}

impl Matcher {
    /// Loads the sealed log (forgetting what is past retention) and prepares the routes.
    pub async fn build(
        listener: TcpListener,
        settings: MatcherSettings,
    ) -> Result<Self, MatcherError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| SealError::Io {
            path: settings.data_dir.clone(),
            source,
        })?;
        let (log, uploads) = SealedLog::open(
            &settings.data_dir.join("tuples.sealed"),
            &settings.sealing_key,
        )?;
        let shared = Arc::new(service::Shared::new(
            fresh_secret(),
            settings.attestor,
            TupleIndex::new(),
            log,
            settings.upload_secret,
            settings.clock,
        ));
        expire(&shared, Some(uploads)).await?;
        Ok(Self {
            listener,
            shared,
            expire_every: settings.expire_every,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The attested public key (what every `/attestation` answer carries).
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.public
    }

    /// Tuples held for matching.
    pub fn tuples(&self) -> usize {
        self.shared.index.read().expect("index lock").len()
    }

    /// Forgets tuples past retention now and compacts the sealed log.
    pub async fn expire_now(&self) -> Result<(), MatcherError> {
        expire(&self.shared, None).await
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let every = self.expire_every;
        let janitor = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = expire(&shared, None).await {
                    tracing::error!(error = %e, "expiring tuples failed; retrying later");
                }
            }
        });
        let result = axum::serve(self.listener, service::routes(self.shared))
            .with_graceful_shutdown(shutdown)
            .await;
        janitor.abort();
        result
    }
}

/// Rebuilds the index from the sealed uploads (read again unless given), keeping only tuples
/// within retention, and rewrites the log the same way when anything was dropped.
async fn expire(
    shared: &service::Shared,
    uploads: Option<Vec<Vec<confidant_core::confidential::ContactTuple>>>,
) -> Result<(), MatcherError> {
    let first_day = shared.first_day();
    let mut log = shared.log.lock().await;
    let uploads = match uploads {
        Some(uploads) => uploads,
        None => log.reload()?,
    };
    let total: usize = uploads.iter().map(Vec::len).sum();
    let kept: Vec<Vec<_>> = uploads
        .into_iter()
        .map(|upload| {
            upload
                .into_iter()
                .filter(|t| t.day >= first_day)
                .collect::<Vec<_>>()
        })
        .filter(|upload: &Vec<_>| !upload.is_empty())
        .collect();
    let remaining: usize = kept.iter().map(Vec::len).sum();
    if remaining < total {
        log.compact(&kept)?;
    }
    let mut index = TupleIndex::new();
    for upload in &kept {
        index.add(upload);
    }
    *shared.index.write().expect("index lock") = index;
    tracing::info!(
        tuples = remaining,
        forgotten = total - remaining,
        "tuples within retention"
    );
    Ok(())
}
