//! `confidant bench matcher`: how many polls per second the confidential matcher answers with
//! positive users' tuple logs loaded, against the floor of one hash-table lookup per polled
//! tuple. First in memory on one core (the matching alone), then end to end: a real matcher on
//! loopback, phones sealing their polls to its attested key, for a fixed time.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use confidant_client::confidential::{ContactLog, MatcherApi, insecure_simulated_policy};
use confidant_core::confidential::ContactTuple;
use confidant_core::encounter::DurationBucket;
use confidant_matcher::attestor::SimulatedAttestor;
use confidant_matcher::index::TupleIndex;
use confidant_matcher::seal::{SealedLog, SealingKey};
use confidant_matcher::{Matcher, MatcherSettings};
use rand_core::{OsRng, RngCore};

/// Issue #9's target.
const TARGET_POLLS_PER_SECOND: f64 = 1000.0;
const MEASUREMENT: [u8; 48] = [0x4d; 48];

fn id(rng: &mut impl RngCore) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere).
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / (1 << 20) as f64)
}

pub fn run(users: usize, tuples: usize, seconds: u64, clients: usize) -> Result<()> {
    ensure!(
        users > 0 && tuples > 0 && clients > 0,
        "--users, --tuples and --clients must be positive"
    );
    ensure!(
        tuples <= confidant_core::confidential::MAX_TUPLES,
        "--tuples is at most {}",
        confidant_core::confidential::MAX_TUPLES
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let today = (now / 86_400) as u32;
    println!(
        "bench matcher: {users} positive users × {tuples} tuples loaded; polls of {tuples} tuples"
    );
    let began = Instant::now();
    let uploads: Vec<Vec<ContactTuple>> = (0..users)
        .map(|_| {
            (0..tuples)
                .map(|i| ContactTuple {
                    own: id(&mut OsRng),
                    peer: id(&mut OsRng),
                    day: today - (i % 14) as u32,
                    duration: DurationBucket::Min10To15,
                })
                .collect()
        })
        .collect();
    let before = resident_mib();
    let mut index = TupleIndex::new();
    let loading = Instant::now();
    for upload in &uploads {
        index.add(upload);
    }
    let load = loading.elapsed();
    println!(
        "\nloaded {} tuples in {:.1} s ({:.0} MiB for the index)",
        index.len(),
        load.as_secs_f64(),
        resident_mib() - before
    );

    // A poll: a phone's own log, one encounter of which was with a positive user.
    let polls: Vec<Vec<ContactTuple>> = (0..200)
        .map(|p| {
            let mut poll: Vec<ContactTuple> = (0..tuples)
                .map(|_| ContactTuple {
                    own: id(&mut OsRng),
                    peer: id(&mut OsRng),
                    day: today,
                    duration: DurationBucket::Min5To10,
                })
                .collect();
            let met = uploads[p % users][p % tuples];
            poll[0] = ContactTuple {
                own: met.peer,
                peer: met.own,
                ..met
            };
            poll
        })
        .collect();
    let rounds = 10;
    let matching = Instant::now();
    let mut exposed = 0;
    for _ in 0..rounds {
        for poll in &polls {
            exposed += usize::from(index.exposure(poll).is_some());
        }
    }
    let per_poll = matching.elapsed() / (rounds * polls.len()) as u32;
    ensure!(
        exposed == rounds * polls.len(),
        "every poll holds one exposure"
    );
    // The floor: one lookup per tuple in a set of the same size.
    let mut floor_set: HashSet<u64> = HashSet::with_capacity(index.len());
    for _ in 0..index.len() {
        floor_set.insert(OsRng.next_u64());
    }
    // As many distinct probes as the polls hold, so neither side runs from a warm cache.
    let probes: Vec<Vec<u64>> = polls
        .iter()
        .map(|poll| poll.iter().map(|_| OsRng.next_u64()).collect())
        .collect();
    let timing = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for poll in &probes {
            hits += poll.iter().filter(|p| floor_set.contains(p)).count();
        }
    }
    let floor = timing.elapsed() / (rounds * polls.len()) as u32;
    std::hint::black_box(hits);
    drop(floor_set);
    println!("\n| step | per poll | polls/s on one core |");
    println!("|---|---|---|");
    println!(
        "| match {tuples} tuples (TupleIndex) | {:.1} µs | {:.0} |",
        per_poll.as_secs_f64() * 1e6,
        1.0 / per_poll.as_secs_f64()
    );
    println!(
        "| floor: {tuples} lookups in a HashSet<u64> of the same size | {:.1} µs | {:.0} |",
        floor.as_secs_f64() * 1e6,
        1.0 / floor.as_secs_f64()
    );
    println!(
        "\nmatching costs {:.2}× the floor",
        per_poll.as_secs_f64() / floor.as_secs_f64()
    );
    drop(index);

    // End to end: the sealed log written once, a matcher loading it, phones polling.
    let dir = tempfile::tempdir().context("temporary directory")?;
    let key = SealingKey::ephemeral();
    {
        let (mut log, _) = SealedLog::open(&dir.path().join("tuples.sealed"), &key)?;
        log.compact(&uploads)?;
    }
    drop(uploads);
    let runtime = super::runtime()?;
    let (polls_per_second, errors, answered) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let loading = Instant::now();
        let matcher = Matcher::build(
            listener,
            MatcherSettings {
                data_dir: dir.path().to_owned(),
                attestor: Box::new(SimulatedAttestor {
                    measurement: MEASUREMENT,
                }),
                sealing_key: key,
                upload_secret: b"bench upload secret, not used".to_vec(),
                clock: Arc::new(move || now),
                expire_every: Duration::from_secs(3600),
            },
        )
        .await?;
        println!(
            "\nthe matcher unsealed and indexed {} tuples in {:.1} s",
            matcher.tuples(),
            loading.elapsed().as_secs_f64()
        );
        let url = format!("http://{}", matcher.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(matcher.run_until_stopped(async {
            stopped.await.ok();
        }));
        let policy = insecure_simulated_policy(MEASUREMENT);
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut phones = Vec::new();
        let logs: Arc<Vec<ContactLog>> = Arc::new(
            polls
                .iter()
                .map(|poll| {
                    let mut log = ContactLog::new();
                    for t in poll {
                        log.record(t.own, t.peer, t.day, 600);
                    }
                    log
                })
                .collect(),
        );
        let deadline = Instant::now() + Duration::from_secs(seconds);
        for client in 0..clients {
            let (api, policy, done, failed, logs) = (
                MatcherApi::new(&url)?,
                policy.clone(),
                done.clone(),
                failed.clone(),
                logs.clone(),
            );
            phones.push(tokio::spawn(async move {
                let Ok(attested) = api.attest(&policy, now).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut i = client;
                while Instant::now() < deadline {
                    match api.poll(&attested, &logs[i % logs.len()]).await {
                        Ok(Some(_)) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += clients;
                }
            }));
        }
        let started = Instant::now();
        for phone in phones {
            phone.await.ok();
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.send(()).ok();
        server.await.ok();
        let answered = done.load(Ordering::Relaxed);
        anyhow::Ok((
            answered as f64 / elapsed,
            failed.load(Ordering::Relaxed),
            answered,
        ))
    })?;
    println!(
        "\nover HTTP on loopback, {clients} phones sealing polls for {seconds} s (client and matcher \
         share this machine's cores): {answered} polls answered exposed, {errors} errors, \
         **{polls_per_second:.0} polls/s** (target ≥ {TARGET_POLLS_PER_SECOND:.0}: {})",
        if polls_per_second >= TARGET_POLLS_PER_SECOND {
            "meets"
        } else {
            "MISSES"
        }
    );
    println!("total {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}
