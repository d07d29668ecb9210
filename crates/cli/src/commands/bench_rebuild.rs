//! `confidant bench rebuild`: how long replaying a large log takes. Generates the log of a busy
//! fortnight (a provider, then per submission: a code issued, redeemed, and 14 keys uploaded,
//! spread over 14 days), imports it into an empty store, then rebuilds the projections twice,
//! timing each and checking that both give the same state digest.
//!
//! The log is generated a chunk at a time from a seeded generator, so every run replays the
//! same log and memory does not grow with `--submissions`.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use confidant_core::logfile::LogRecord;
use confidant_core::rules::{CLAIM_LIFETIME_SECONDS, KEY_BUDGET};
use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, Credential, Digest, Event, KeyData, ProviderId, Region, TrackingId,
};
use confidant_sim::SeededRng;
use confidant_store::{Store, StoreOptions};

use super::peak_rss_mib;

/// 2026-11-01T00:00:00Z: the end of the generated fortnight, fixed so runs are comparable.
const END: u64 = 1_793_491_200;
const DAYS: u64 = 14;
const KEYS_PER_SUBMISSION: usize = 14;
/// Submissions generated and imported per transaction chunk.
const CHUNK: usize = 10_000;

/// The three events of submission `index` of `total`.
fn submission(
    rng: &mut SeededRng,
    provider: ProviderId,
    region: &Region,
    index: usize,
    total: usize,
) -> [Event; 3] {
    let span = DAYS * 86_400;
    let at = END - span + (index as u64 * span) / total as u64;
    // The code was issued up to 6 hours before, redeemed up to 10 minutes before the upload.
    let issued = at - 60 - rng.below(6 * 3600);
    let redeemed = at - rng.below(600).min(at - issued);
    let code_hash = Digest(rng.bytes());
    let claim = ClaimId(rng.bytes());
    let today = (at / 600) as u32 / 144 * 144;
    let keys = (0..KEYS_PER_SUBMISSION as u32)
        .map(|day| StoredKey {
            key_data: KeyData(rng.bytes()),
            rolling_start: today - day * 144,
            rolling_period: 144,
            transmission_risk: [8, 7, 6, 5, 4, 3, 2, 1][(day as usize / 2).min(7)],
        })
        .collect();
    [
        Event::CodeIssued {
            code_hash,
            provider,
            format: CodeFormat::Long,
            expires_at: issued + 86_400,
        },
        Event::CodeRedeemed {
            code_hash,
            claim,
            provider,
            region: region.clone(),
            expires_at: (redeemed + CLAIM_LIFETIME_SECONDS).div_ceil(3600) * 3600,
            key_budget: KEY_BUDGET,
            credential: Credential::UploadToken {
                token_hash: Digest(rng.bytes()),
            },
        },
        Event::KeysSubmitted {
            submission: TrackingId(rng.bytes()),
            claim,
            provider,
            region: region.clone(),
            hour: at / 3600,
            keys,
            skipped: 0,
            dropped: 0,
        },
    ]
}

/// Resets the peak resident memory (VmHWM) of this process, so the next reading covers only
/// what follows. Linux only; elsewhere the peak stays the process's.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub async fn run(submissions: usize, database_url: Option<String>) -> Result<()> {
    ensure!(submissions > 0, "--submissions must be at least 1");
    let scratch =
        std::env::temp_dir().join(format!("confidant-bench-rebuild-{}", std::process::id()));
    let url = match &database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&scratch)?;
            format!("sqlite://{}", scratch.join("bench.db").display())
        }
    };
    let backend = super::backend_name(database_url.as_deref());
    let result = measure(submissions, &url, backend).await;
    if database_url.is_none() {
        std::fs::remove_dir_all(&scratch).ok();
    }
    result
}

async fn measure(submissions: usize, url: &str, backend: &str) -> Result<()> {
    out!(
        "bench rebuild: {submissions} submissions of {KEYS_PER_SUBMISSION} keys over {DAYS} days, {backend}"
    );
    let store = Store::open(url, StoreOptions::default())
        .await
        .context("cannot open the benchmark database")?;
    let outcome = async {
        let events = generate_and_import(&store, submissions).await?;
        let keys = (submissions * KEYS_PER_SUBMISSION) as f64;
        let mut digests = Vec::new();
        for run in 1..=2 {
            let resettable = reset_peak_rss();
            let started = Instant::now();
            let replayed = store
                .rebuild_with_progress(super::log::progress_bar("rebuild"))
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            ensure!(
                replayed == events,
                "replayed {replayed} of {events} events"
            );
            let peak = peak_rss_mib().unwrap_or(f64::NAN);
            let digesting = Instant::now();
            let digest = store.state_digest().await?;
            out!(
                "rebuild {run}: {seconds:.1} s, {:.0} events/s, {:.0} keys/s, peak RSS {peak:.0} MiB{}; state digest {digest} ({:.1} s)",
                events as f64 / seconds,
                keys / seconds,
                if resettable { " during the rebuild" } else { "" },
                digesting.elapsed().as_secs_f64()
            );
            digests.push(digest);
        }
        ensure!(
            digests[0] == digests[1],
            "the two rebuilds gave different state digests"
        );
        out!("both rebuilds give the same state digest");
        Ok(())
    }
    .await;
    store.close().await;
    outcome
}

/// Generates the log a chunk at a time into one import; returns the number of events.
async fn generate_and_import(store: &Store, submissions: usize) -> Result<u64> {
    let started = Instant::now();
    let mut rng = SeededRng::new(0x5eed_c0f1_da47_0001);
    let provider = ProviderId(rng.bytes());
    let region = Region::try_from("DE".to_owned()).map_err(anyhow::Error::msg)?;
    let mut import = store.begin_import().await?;
    let mut chunk = vec![LogRecord::new(Event::ProviderRegistered {
        provider,
        name: "Benchmark lab".into(),
        region: region.clone(),
        token_hash: Digest(rng.bytes()),
    })];
    for index in 0..submissions {
        chunk.extend(
            submission(&mut rng, provider, &region, index, submissions).map(LogRecord::new),
        );
        if chunk.len() >= 3 * CHUNK {
            import.append(&chunk).await?;
            chunk.clear();
        }
    }
    import.append(&chunk).await?;
    let events = import.commit().await?;
    out!(
        "generated and imported {events} events in {:.1} s (peak RSS so far {:.0} MiB)",
        started.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(events)
}
