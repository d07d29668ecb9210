//! `confidant serve`: the reporting server until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use std::time::Duration;

use confidant_server::{App, Clock, FileStore, OffsetClock, ServerSettings, SystemClock};
use confidant_store::{Store, StoreOptions};
use tracing_subscriber::EnvFilter;

use super::runtime;
use crate::settings::{ServeArgs, serve_settings};

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let settings = serve_settings(&args)?;
    let filter =
        EnvFilter::try_from_env("CONFIDANT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, never in files or log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if settings.json_logs {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    runtime()?.block_on(async {
        let store = Store::open(
            &settings.store.database_url,
            StoreOptions {
                max_batch: settings.max_batch,
            },
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact(&settings.store.database_url)
            )
        })?;
        let files = FileStore::open(&settings.publish_to).map_err(anyhow::Error::msg)?;
        let dev_clock = settings.dev.then(OffsetClock::default);
        if dev_clock.is_some() {
            tracing::warn!(
                "DEVELOPMENT MODE: POST /dev/clock lets anyone move this server's clock and \
                 publish early. Never run --dev with real data"
            );
        }
        let clock: Arc<dyn Clock> = match &dev_clock {
            Some(dev) => Arc::new(dev.clone()),
            None => Arc::new(SystemClock),
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let app = App::build(
            listener,
            store.clone(),
            ServerSettings {
                secret: settings.store.secret.clone(),
                policy: settings.policy,
                trust_forwarded_for: settings.trust_forwarded_for,
                files,
                publish: settings.publish.clone(),
                retrieval_secret: settings.retrieval_secret.clone(),
                publish_every: Some(Duration::from_secs(settings.publish_every)),
                dev_clock,
                serve_cache_bytes: 256 << 20,
                max_wrong_codes_per_hour: settings.max_wrong_codes_per_hour,
                tokens: settings.tokens,
                matcher: settings.matcher.clone(),
            },
            clock,
        )
        .await?;
        // Handlers first: a SIGTERM right after "serving" must stop the server gracefully,
        // not kill it with the default action.
        let shutdown = shutdown_signal()?;
        tracing::info!(
            address = %app.local_addr()?,
            database = %redact(&settings.store.database_url),
            data_dir = %settings.store.data_dir.display(),
            published = %redact(&settings.publish_to),
            "confidant is serving"
        );
        app.run_until_stopped(shutdown).await?;
        tracing::info!("stopping: finishing in-flight commits");
        store.close().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Installs the SIGINT and SIGTERM handlers now (tokio's are lazy otherwise) and returns the
/// future that completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        tokio::signal::ctrl_c().await.ok();
    })
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
