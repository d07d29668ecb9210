//! `confidant bench crash`: acknowledged reports survive `kill -9`. Starts `confidant serve`
//! as a child process, drives concurrent clients through code → redeem → upload with the
//! `client` library, kills the server with SIGKILL at random moments and restarts it, then
//! checks the store: every acknowledged submission is there with all its keys, no
//! unacknowledged one is half there, and `check` finds the projections equal to the log.
//! With `--restart-postgres CMD` the database itself restarts mid-load once: the server must
//! answer errors meanwhile, never a false success, and recover by itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use confidant_client::ClientError;
use confidant_client::upload::{NativeApi, ProviderApi};
use confidant_core::{KeyData, TrackingId};
use confidant_store::{Store, StoreOptions};
use gaen::{DiagnosisKey, IntervalNumber, RollingPeriod, Tek, TransmissionRisk};
use rand_core::{OsRng, RngCore};

pub struct CrashOptions {
    pub kills: usize,
    pub clients: usize,
    pub database_url: Option<String>,
    pub restart_postgres: Option<String>,
}

/// One upload a client sent: its keys, and the tracking ID if the server acknowledged it.
struct Attempt {
    keys: Vec<[u8; 16]>,
    acknowledged: Option<String>,
}

/// Shared between the clients and the harness.
#[derive(Default)]
struct Load {
    attempts: Mutex<Vec<Attempt>>,
    acknowledged: AtomicU64,
    /// Answers that were errors from a running server (not dropped connections), by status
    /// and problem code.
    refused: AtomicU64,
    refusals: Mutex<std::collections::BTreeMap<String, u64>>,
    stop: AtomicBool,
}

pub async fn run(options: CrashOptions) -> Result<bool> {
    ensure!(
        options.kills > 0 && options.clients > 0,
        "--kills and --clients must be at least 1"
    );
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let harness = Harness::new(scratch.path(), options.database_url.clone())?;
    let backend = super::backend_name(options.database_url.as_deref());
    out!(
        "bench crash: {} SIGKILLs of the server under {} concurrent clients, {backend}",
        options.kills,
        options.clients
    );
    let admin_token = harness.admin_token()?;
    let load = Arc::new(Load::default());
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    let started = Instant::now();
    let mut downtime_errors = None;
    for round in 1..=options.kills {
        let mut server = harness.start_server()?;
        harness.wait_ready(&http, &mut server).await?;
        if round == 1 {
            let provider_token = harness.register_provider(&http, &admin_token).await?;
            let provider = ProviderApi::new(&harness.url, &provider_token)?;
            for n in 0..options.clients {
                let app = app_at_address(&harness.url, n)?;
                clients.push(tokio::spawn(client(provider.clone(), app, load.clone())));
            }
        }
        if round == options.kills.div_ceil(2)
            && let Some(command) = &options.restart_postgres
        {
            downtime_errors = Some(restart_database(command, &load).await?);
        }
        tokio::time::sleep(Duration::from_millis(200 + OsRng.next_u64() % 1300)).await;
        server.kill().context("cannot kill the server")?;
        server.wait().ok();
    }
    // A last start: the server must come back and take reports again.
    let mut server = harness.start_server()?;
    harness.wait_ready(&http, &mut server).await?;
    let before = load.acknowledged.load(Ordering::Relaxed);
    wait_for_progress(&load, before, Duration::from_secs(30))
        .await
        .context("the server took no report after its last restart")?;
    load.stop.store(true, Ordering::Relaxed);
    for task in clients {
        task.await.ok();
    }
    server.kill().ok();
    server.wait().ok();
    let seconds = started.elapsed().as_secs_f64();

    let store = Store::open(&harness.database_url, StoreOptions::default())
        .await
        .context("cannot open the store after the run")?;
    let verdict = verify(&store, &load).await;
    store.close().await;
    let verdict = verdict?;
    out!(
        "{} kills in {seconds:.1} s; acknowledged {} submissions, lost {}",
        options.kills,
        verdict.acknowledged,
        verdict.lost
    );
    out!(
        "unacknowledged {}: committed anyway {}, absent {}, half-applied {}; refused with an error {} {:?}",
        verdict.unacknowledged,
        verdict.committed_unacknowledged,
        verdict.unacknowledged - verdict.committed_unacknowledged - verdict.half_applied,
        verdict.half_applied,
        load.refused.load(Ordering::Relaxed),
        load.refusals.lock().expect("refusals lock")
    );
    if let Some(errors) = downtime_errors {
        out!(
            "database restart: {errors} requests failed while it was down, none succeeded falsely; the server recovered by itself"
        );
    }
    out!(
        "check: {}",
        if verdict.consistent {
            "the projections equal the replayed log"
        } else {
            "THE PROJECTIONS DIFFER FROM THE LOG"
        }
    );
    Ok(verdict.lost == 0 && verdict.half_applied == 0 && verdict.consistent)
}

struct Verdict {
    acknowledged: usize,
    lost: usize,
    unacknowledged: usize,
    committed_unacknowledged: usize,
    half_applied: usize,
    consistent: bool,
}

async fn verify(store: &Store, load: &Load) -> Result<Verdict> {
    let state = store.projected_state().await?;
    let consistent = store.check().await?.consistent();
    let attempts = load.attempts.lock().expect("attempts lock");
    let mut verdict = Verdict {
        acknowledged: 0,
        lost: 0,
        unacknowledged: 0,
        committed_unacknowledged: 0,
        half_applied: 0,
        consistent,
    };
    for attempt in attempts.iter() {
        let present: Vec<Option<TrackingId>> = attempt
            .keys
            .iter()
            .map(|key| {
                state
                    .keys
                    .get(&KeyData(*key))
                    .map(|record| record.submission)
            })
            .collect();
        match &attempt.acknowledged {
            Some(id) => {
                verdict.acknowledged += 1;
                let id = TrackingId::from_hex(id).context("the server sent a bad tracking ID")?;
                let whole = state.submissions.contains_key(&id)
                    && present.iter().all(|submission| *submission == Some(id));
                if !whole {
                    verdict.lost += 1;
                }
            }
            None => {
                verdict.unacknowledged += 1;
                let stored = present.iter().filter(|p| p.is_some()).count();
                let submissions: BTreeSet<_> = present.iter().flatten().collect();
                if stored == attempt.keys.len() && submissions.len() == 1 {
                    verdict.committed_unacknowledged += 1;
                } else if stored > 0 {
                    verdict.half_applied += 1;
                }
            }
        }
    }
    Ok(verdict)
}

/// One app after another: a code from the provider, a redemption, an upload of 14 keys.
async fn client(provider: ProviderApi, app: NativeApi, load: Arc<Load>) {
    // While the server is down every call fails at once: pause a little between tries.
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    while !load.stop.load(Ordering::Relaxed) {
        let code = match provider.issue_code().await {
            Ok(code) => code,
            Err(error) => {
                count_refusal(&load, &error);
                pause().await;
                continue;
            }
        };
        let token = match app.verify(&code).await {
            Ok(token) => token,
            Err(error) => {
                count_refusal(&load, &error);
                pause().await;
                continue;
            }
        };
        let keys = fourteen_keys();
        let index = {
            let mut attempts = load.attempts.lock().expect("attempts lock");
            attempts.push(Attempt {
                keys: keys.iter().map(|k| k.tek.0).collect(),
                acknowledged: None,
            });
            attempts.len() - 1
        };
        match app.submit(&token, &keys).await {
            Ok(receipt) => {
                load.attempts.lock().expect("attempts lock")[index].acknowledged =
                    Some(receipt.tracking_id);
                load.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                count_refusal(&load, &error);
                pause().await;
            }
        }
    }
}

fn count_refusal(load: &Load, error: &ClientError) {
    if let ClientError::Status { status, code, .. } = error {
        load.refused.fetch_add(1, Ordering::Relaxed);
        let name = format!("{status} {}", code.as_deref().unwrap_or("-"));
        *load
            .refusals
            .lock()
            .expect("refusals lock")
            .entry(name)
            .or_default() += 1;
    }
}

pub(crate) fn fourteen_keys() -> Vec<DiagnosisKey> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let today = IntervalNumber::containing(now).day_start().get();
    (1..=14u32)
        .map(|days_ago| {
            let mut tek = [0u8; 16];
            OsRng.fill_bytes(&mut tek);
            DiagnosisKey {
                tek: Tek(tek),
                rolling_start: IntervalNumber::new(today - days_ago * 144),
                rolling_period: RollingPeriod::FULL_DAY,
                transmission_risk: TransmissionRisk::new(3).ok(),
                report_type: None,
                days_since_onset: None,
                variant_of_concern: None,
            }
        })
        .collect()
}

/// Restarts the database with `command` while the load runs; returns how many requests
/// failed meanwhile. Fails if the server does not take reports again within 60 s.
async fn restart_database(command: &str, load: &Load) -> Result<u64> {
    let refused = load.refused.load(Ordering::Relaxed);
    let owned = command.to_owned();
    // The clients keep uploading on the runtime's threads while this waits.
    let status =
        tokio::task::spawn_blocking(move || Command::new("sh").arg("-c").arg(owned).status())
            .await?
            .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    let before = load.acknowledged.load(Ordering::Relaxed);
    wait_for_progress(load, before, Duration::from_secs(60))
        .await
        .context("the server did not recover from the database restart by itself")?;
    Ok(load.refused.load(Ordering::Relaxed) - refused)
}

async fn wait_for_progress(load: &Load, from: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while load.acknowledged.load(Ordering::Relaxed) <= from {
        if Instant::now() > deadline {
            bail!("no acknowledged report within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The benchmark address of app `n`: phones have their own addresses, and from one address
/// more than the brute-force limit's eight redemptions in flight are refused.
pub(crate) fn app_address(n: usize) -> String {
    format!("198.18.{}.{}", n / 250, n % 250 + 1)
}

/// The native API as app `n` (see [`app_address`]); the server trusts `X-Forwarded-For`.
pub(crate) fn app_at_address(url: &str, n: usize) -> Result<NativeApi> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", app_address(n).parse()?);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    Ok(NativeApi::with_client(url, http)?)
}

/// A `confidant serve` child process's files, and how to start it. Shared with
/// `bench load`.
pub(crate) struct Harness {
    exe: PathBuf,
    pub(crate) data_dir: PathBuf,
    database_url: String,
    explicit_database: Option<String>,
    listen: String,
    pub(crate) url: String,
    log: PathBuf,
}

impl Harness {
    pub(crate) fn new(scratch: &Path, database_url: Option<String>) -> Result<Self> {
        let data_dir = scratch.join("data");
        std::fs::create_dir_all(&data_dir)?;
        // A free port, reused by every start of the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(Self {
            exe: std::env::current_exe().context("cannot find the confidant binary")?,
            database_url: database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("confidant.db").display())),
            explicit_database: database_url,
            data_dir,
            listen: format!("127.0.0.1:{port}"),
            url: format!("http://127.0.0.1:{port}"),
            log: scratch.join("serve.log"),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(args).arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.explicit_database {
            command.arg("--database-url").arg(url);
        }
        command
    }

    pub(crate) fn admin_token(&self) -> Result<String> {
        let output = self
            .command(&["admin", "token", "create", "--scope", "admin"])
            .args(["--reason", "crash harness"])
            .output()
            .context("cannot run `confidant admin token create`")?;
        ensure!(
            output.status.success(),
            "admin token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("token:").map(|t| t.trim().to_owned()))
            .context("admin token create printed no token")
    }

    pub(crate) fn start_server(&self) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.command(&["serve", "--listen", &self.listen])
            .args(["--trust-forwarded-for", "true"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `confidant serve`")
    }

    pub(crate) async fn wait_ready(
        &self,
        http: &reqwest::Client,
        server: &mut Child,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", self.url)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = server.try_wait()? {
                bail!(
                    "the server exited ({status}); its log: {}",
                    self.log.display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the server was not ready within 30 s; its log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn register_provider(
        &self,
        http: &reqwest::Client,
        admin_token: &str,
    ) -> Result<String> {
        let response = http
            .post(format!("{}/admin/v1/providers", self.url))
            .bearer_auth(admin_token)
            .json(&serde_json::json!({"name": "Crash harness", "region": "CR", "reason": "crash harness"}))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "registering the provider failed: {}",
            response.status()
        );
        let body: serde_json::Value = response.json().await?;
        body["apiToken"]
            .as_str()
            .map(str::to_owned)
            .context("the provider was registered without a token")
    }
}
