//! `confidant bench load`: the server under a mixed load for a fixed time, as a separate
//! process: apps redeem codes and upload, providers issue codes, phones download the feed
//! and the exports from scratch. Reports throughput, p50/p99/p99.9 latency (hdrhistogram)
//! and errors per operation, and the server's memory over the run.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use confidant_client::download::{ExportDownloader, ExportStream, FeedDownloader, HttpFetch};
use confidant_client::upload::ProviderApi;
use confidant_core::Region;
use hdrhistogram::Histogram;

use super::bench_crash::{Harness, app_at_address, fourteen_keys};

pub struct LoadOptions {
    pub seconds: u64,
    pub clients: usize,
    pub downloaders: usize,
    pub database_url: Option<String>,
}

const OPERATIONS: [&str; 5] = [
    "issue code",
    "redeem code",
    "upload 14 keys",
    "download feed",
    "download exports",
];

/// Latencies (µs) and errors of one operation.
struct Operation {
    latencies: Mutex<Histogram<u64>>,
    errors: AtomicU64,
}

impl Operation {
    fn new() -> Result<Self> {
        Ok(Self {
            latencies: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3)?),
            errors: AtomicU64::new(0),
        })
    }

    /// Times `call`, recording its latency on success and counting its failure otherwise.
    async fn time<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Option<T> {
        let started = Instant::now();
        match call.await {
            Ok(value) => {
                let micros = started.elapsed().as_micros().max(1) as u64;
                self.latencies
                    .lock()
                    .expect("histogram lock")
                    .saturating_record(micros);
                Some(value)
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

pub async fn run(options: LoadOptions) -> Result<bool> {
    ensure!(
        options.seconds > 0 && options.clients > 0,
        "--seconds and --clients must be at least 1"
    );
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let harness = Harness::new(scratch.path(), options.database_url.clone())?;
    let backend = super::backend_name(options.database_url.as_deref());
    out!(
        "bench load: {} s, {} apps uploading, {} phones downloading, {backend}",
        options.seconds,
        options.clients,
        options.downloaders
    );
    let admin_token = harness.admin_token()?;
    let http = reqwest::Client::new();
    let mut server = harness.start_server()?;
    let outcome = async {
        harness.wait_ready(&http, &mut server).await?;
        let provider_token = harness.register_provider(&http, &admin_token).await?;
        let public_key = super::load_public_key(&harness.data_dir.join("signing-key.pub.pem"))?;
        let region = Region::try_from("CR".to_owned()).map_err(anyhow::Error::msg)?;
        let operations: Arc<Vec<Operation>> = Arc::new(
            OPERATIONS
                .iter()
                .map(|_| Operation::new())
                .collect::<Result<_>>()?,
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs(options.seconds);
        let provider = ProviderApi::new(&harness.url, &provider_token)?;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..options.clients {
            let app = app_at_address(&harness.url, n)?;
            let (provider, operations) = (provider.clone(), operations.clone());
            tasks.spawn(async move {
                while Instant::now() < deadline {
                    let Some(code) = operations[0].time(provider.issue_code()).await else {
                        continue;
                    };
                    let Some(token) = operations[1].time(app.verify(&code)).await else {
                        continue;
                    };
                    let keys = fourteen_keys();
                    operations[2].time(app.submit(&token, &keys)).await;
                }
            });
        }
        for _ in 0..options.downloaders {
            let (url, region, key, operations) = (
                harness.url.clone(),
                region.clone(),
                public_key.clone(),
                operations.clone(),
            );
            tasks.spawn(async move {
                while Instant::now() < deadline {
                    // A new phone each time: the index and every file.
                    let Ok(fetch) = HttpFetch::new(&url) else {
                        return;
                    };
                    let mut feed = FeedDownloader::new(fetch.clone(), region.clone(), key.clone());
                    operations[3].time(feed.sync()).await;
                    let mut exports = ExportDownloader::new(
                        fetch,
                        region.clone(),
                        key.clone(),
                        ExportStream::Daily,
                    );
                    operations[4].time(exports.sync()).await;
                }
            });
        }
        // The server's resident memory, once a second.
        let mut rss = Vec::new();
        while Instant::now() < deadline {
            if let Some(kib) = status_kib(server.id(), "VmRSS:") {
                rss.push(kib);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        while tasks.join_next().await.is_some() {}
        let seconds = started.elapsed().as_secs_f64();
        let peak = status_kib(server.id(), "VmHWM:");
        report(&operations, seconds, &rss, peak)
    }
    .await;
    server.kill().ok();
    server.wait().ok();
    outcome
}

fn report(operations: &[Operation], seconds: f64, rss: &[u64], peak: Option<u64>) -> Result<bool> {
    out!(
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "operation",
        "count",
        "per s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors"
    );
    let mut errors = 0;
    for (name, operation) in OPERATIONS.iter().zip(operations) {
        let histogram = operation.latencies.lock().expect("histogram lock");
        let failed = operation.errors.load(Ordering::Relaxed);
        errors += failed;
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        out!(
            "{name:<18} {:>9} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {failed:>7}",
            histogram.len(),
            histogram.len() as f64 / seconds,
            ms(0.5),
            ms(0.99),
            ms(0.999)
        );
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    if rss.len() >= 4 {
        let quarter = rss.len() / 4;
        let mean = |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len() as f64;
        let (early, late) = (mean(&rss[..quarter]), mean(&rss[rss.len() - quarter..]));
        out!(
            "server memory: {:.0} MiB in the first quarter, {:.0} MiB in the last ({:+.1}%), peak {:.0} MiB",
            early / 1024.0,
            late / 1024.0,
            (late / early - 1.0) * 100.0,
            peak.map_or(f64::NAN, mib)
        );
        let timeline: Vec<String> = (0..10)
            .map(|i| format!("{:.0}", mib(rss[i * (rss.len() - 1) / 9])))
            .collect();
        out!("server memory over the run, MiB: {}", timeline.join(" "));
    } else if let Some(peak) = peak {
        out!("server memory: peak {:.0} MiB", mib(peak));
    }
    out!("errors: {errors}");
    Ok(errors == 0)
}

/// A `/proc/PID/status` field in KiB (Linux); `None` elsewhere.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
