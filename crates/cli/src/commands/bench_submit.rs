//! `confidant bench submit`: the reporting path under load, over real HTTP against a real
//! server and database in this process. Each client redeems a code (`/v1/verify`) and uploads
//! 14 keys (`/v1/submissions`); a submission counts once it is acknowledged, which means
//! committed. Run once with group commit and once with one commit per request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confidant_core::{KeyedHasher, ProviderId, Region};
use confidant_server::{App, FileStore, ServerSettings, SystemClock};
use confidant_store::{Store, StoreOptions};
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

pub async fn run(clients: usize, submissions: usize, database_url: Option<String>) -> Result<()> {
    ensure!(
        clients > 0 && submissions > 0,
        "--clients and --submissions must be at least 1"
    );
    let backend = super::backend_name(database_url.as_deref());
    out!(
        "bench submit: {submissions} submissions of 14 keys, {clients} concurrent clients, {backend}"
    );
    let mut results = Vec::new();
    for (label, max_batch) in [("group commit", 256), ("one commit per request", 1)] {
        let figures = run_once(clients, submissions, database_url.as_deref(), max_batch).await?;
        out!(
            "{label:<24} {:>8.0} submissions/s   submit latency p50 {:>6.1} ms   p99 {:>6.1} ms",
            figures.per_second,
            figures.p50.as_secs_f64() * 1e3,
            figures.p99.as_secs_f64() * 1e3
        );
        results.push(figures.per_second);
    }
    out!(
        "group commit is {:.1}x one commit per request",
        results[0] / results[1]
    );
    Ok(())
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn fourteen_keys(now: u64) -> Value {
    let today = (now / 600) as i64 / 144 * 144;
    json!((0..14)
        .map(|day| {
            let mut key = [0u8; 16];
            OsRng.fill_bytes(&mut key);
            json!({"key": STANDARD.encode(key), "rollingStartNumber": today - day * 144, "rollingPeriod": 144, "transmissionRisk": 3})
        })
        .collect::<Vec<_>>())
}

async fn run_once(
    clients: usize,
    submissions: usize,
    database_url: Option<&str>,
    max_batch: usize,
) -> Result<Figures> {
    let scratch = std::env::temp_dir().join(format!("confidant-bench-{}", random_token()));
    std::fs::create_dir_all(&scratch)?;
    let url = database_url
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", scratch.join("bench.db").display()));
    let result = async {
        let store = Store::open(&url, StoreOptions { max_batch })
            .await
            .context("cannot open the benchmark database")?;
        let secret = random_token().into_bytes();
        let provider_token = random_token();
        let mut id = [0u8; 8];
        OsRng.fill_bytes(&mut id);
        store
            .register_provider(
                ProviderId(id),
                "Benchmark lab".into(),
                Region::try_from("XX".to_owned()).map_err(anyhow::Error::msg)?,
                KeyedHasher::new(&secret).token(&provider_token),
            )
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let files = FileStore::local(&scratch.join("published")).map_err(anyhow::Error::msg)?;
        let mut settings =
            ServerSettings::new(secret, files, gaen::SigningKey::generate(&mut OsRng));
        // Each client stands for a phone with its own address: from one address, more than
        // the brute-force limit's eight redemptions in flight are refused.
        settings.trust_forwarded_for = true;
        let app = App::build(listener, store.clone(), settings, Arc::new(SystemClock)).await?;
        let base = format!("http://{}", app.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            stopped.await.ok();
        }));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()?;

        // Not timed: the provider issues one code per submission.
        let codes = Arc::new(Mutex::new(Vec::with_capacity(submissions)));
        let issuers: Vec<_> = (0..clients.min(submissions))
            .map(|i| {
                let (http, base, token, codes) = (
                    http.clone(),
                    base.clone(),
                    provider_token.clone(),
                    codes.clone(),
                );
                let count = submissions / clients.min(submissions)
                    + usize::from(i < submissions % clients.min(submissions));
                tokio::spawn(async move {
                    for _ in 0..count {
                        let response = http
                            .post(format!("{base}/v1/codes"))
                            .bearer_auth(&token)
                            .json(&json!({"format": "long"}))
                            .send()
                            .await?;
                        ensure!(
                            response.status() == 201,
                            "issuing a code failed: {}",
                            response.status()
                        );
                        let body: Value = response.json().await?;
                        codes
                            .lock()
                            .expect("codes")
                            .push(body["code"].as_str().unwrap_or_default().to_owned());
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        for issuer in issuers {
            issuer.await??;
        }

        let latencies = Arc::new(Mutex::new(Vec::with_capacity(submissions)));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|n| {
                let address = super::bench_crash::app_address(n);
                let (http, base, codes, latencies) =
                    (http.clone(), base.clone(), codes.clone(), latencies.clone());
                tokio::spawn(async move {
                    loop {
                        let Some(code) = codes.lock().expect("codes").pop() else {
                            break;
                        };
                        let verified: Value = http
                            .post(format!("{base}/v1/verify"))
                            .header("x-forwarded-for", &address)
                            .json(&json!({"code": code}))
                            .send()
                            .await?
                            .json()
                            .await?;
                        let token = verified["token"]
                            .as_str()
                            .context("verify returned no token")?
                            .to_owned();
                        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                        let body = json!({"keys": fourteen_keys(now)});
                        let sent = Instant::now();
                        let response = http
                            .post(format!("{base}/v1/submissions"))
                            .bearer_auth(&token)
                            .json(&body)
                            .send()
                            .await?;
                        if response.status() != 200 {
                            bail!(
                                "a submission was refused: {} {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            );
                        }
                        latencies.lock().expect("latencies").push(sent.elapsed());
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        let elapsed = started.elapsed();
        stop.send(()).ok();
        server.await??;
        store.close().await;

        let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
        ensure!(
            latencies.len() == submissions,
            "{} of {submissions} submissions acknowledged",
            latencies.len()
        );
        latencies.sort();
        let percentile =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        Ok(Figures {
            per_second: submissions as f64 / elapsed.as_secs_f64(),
            p50: percentile(0.50),
            p99: percentile(0.99),
        })
    }
    .await;
    std::fs::remove_dir_all(&scratch).ok();
    result
}
