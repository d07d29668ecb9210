//! `confidant bench …`: throughput figures for BENCHMARKS.md, measured in release builds.
//!
//! Inputs are random keys and observations; a fixed fraction of the observations are real RPIs
//! of published keys so every run also checks that matching finds them.

use std::fs;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aes::Aes128;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use anyhow::{Result, ensure};
use gaen::crypto::RpiBatch;
use gaen::{
    DiagnosisKey, Export, ExportFiles, IntervalNumber, Matcher, Observation, RollingPeriod, Rpi,
    SignatureInfo, Signer, SigningKey, Tek, TransmissionRisk,
};
use rand_core::{OsRng, RngCore};

use super::{peak_rss_mib, write_atomically};
use crate::cli::BenchCommand;

/// 2026-11-01T00:00:00Z: a fixed "today" so runs are comparable.
const TODAY: u64 = 1_793_491_200;
const DAYS: u32 = 14;

pub fn run(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Derive { keys } => derive(keys),
        BenchCommand::Match {
            keys,
            observations,
            exports_dir,
        } => matching(keys, observations, exports_dir.as_deref()),
        BenchCommand::Export { keys } => export(keys),
        BenchCommand::Gcs { elements, queries } => super::bench_gcs::run(elements, queries),
        BenchCommand::Matcher {
            users,
            tuples,
            seconds,
            clients,
        } => super::bench_matcher::run(users, tuples, seconds, clients),
        BenchCommand::Publish { keys } => {
            super::runtime()?.block_on(super::bench_publish::run(keys))
        }
        BenchCommand::Load {
            seconds,
            clients,
            downloaders,
            database_url,
        } => {
            let clean = super::runtime()?.block_on(super::bench_load::run(
                super::bench_load::LoadOptions {
                    seconds,
                    clients,
                    downloaders,
                    database_url,
                },
            ))?;
            if !clean {
                return Ok(ExitCode::FAILURE);
            }
            Ok(())
        }
        BenchCommand::Crash {
            kills,
            clients,
            database_url,
            restart_postgres,
        } => {
            let held = super::runtime()?.block_on(super::bench_crash::run(
                super::bench_crash::CrashOptions {
                    kills,
                    clients,
                    database_url,
                    restart_postgres,
                },
            ))?;
            if !held {
                return Ok(ExitCode::FAILURE);
            }
            Ok(())
        }
        BenchCommand::Rebuild {
            submissions,
            database_url,
        } => super::runtime()?.block_on(super::bench_rebuild::run(submissions, database_url)),
        BenchCommand::Submit {
            clients,
            submissions,
            database_url,
        } => {
            super::runtime()?.block_on(super::bench_submit::run(clients, submissions, database_url))
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

fn random_keys(count: usize) -> Vec<DiagnosisKey> {
    let today = IntervalNumber::containing(TODAY);
    (0..count)
        .map(|i| {
            let mut tek = [0u8; 16];
            OsRng.fill_bytes(&mut tek);
            let day = (i as u32) % DAYS + 1;
            let mut key = DiagnosisKey::new(
                Tek(tek),
                IntervalNumber::new(today.get() - day * 144),
                RollingPeriod::FULL_DAY,
            );
            key.transmission_risk = TransmissionRisk::new(i64::from(day % 8 + 1)).ok();
            key
        })
        .collect()
}

/// Single-core AES-128 blocks per second through the same cipher implementation.
fn raw_aes_blocks_per_second() -> f64 {
    let cipher = Aes128::new(&[7u8; 16].into());
    let mut blocks = vec![GenericArray::from([0u8; 16]); 4096];
    let began = Instant::now();
    let mut done = 0u64;
    while began.elapsed() < Duration::from_millis(700) {
        cipher.encrypt_blocks(&mut blocks);
        done += blocks.len() as u64;
    }
    black_box(&blocks);
    done as f64 / began.elapsed().as_secs_f64()
}

fn derive(count: usize) -> Result<()> {
    ensure!(count > 0, "--keys must be at least 1");
    let keys = random_keys(count);
    let mut batch = RpiBatch::new();
    let began = Instant::now();
    for key in &keys {
        key.tek
            .rpi_key()
            .rpis_into(key.rolling_start, 144, &mut batch);
        black_box(&mut batch);
    }
    let per_key = began.elapsed().as_secs_f64() / count as f64;
    let aes = raw_aes_blocks_per_second();
    out!(
        "derive: {count} keys, {:.3} µs per key for all 144 RPIs (HKDF + AES key schedule + 144 blocks), {:.1} M RPIs/s on one core",
        per_key * 1e6,
        144.0 / per_key / 1e6
    );
    out!(
        "raw AES-128 (same implementation, one core): {:.1} M blocks/s = {:.2} GB/s; the 144 blocks alone take {:.3} µs",
        aes / 1e6,
        aes * 16.0 / 1e9,
        144.0 / aes * 1e6
    );
    Ok(())
}

/// Observations spread over the keys' 14 days; every 100th is a real RPI of some key.
fn observations_for(keys: &[DiagnosisKey], count: usize) -> (Vec<Observation>, usize) {
    let first = IntervalNumber::containing(TODAY).get() - DAYS * 144;
    let mut planted = 0;
    let observations = (0..count)
        .map(|i| {
            let mut rpi = [0u8; 16];
            OsRng.fill_bytes(&mut rpi);
            let mut interval = IntervalNumber::new(first + (OsRng.next_u32() % (DAYS * 144)));
            if i % 100 == 0 && !keys.is_empty() {
                let key = &keys[OsRng.next_u32() as usize % keys.len()];
                interval = IntervalNumber::new(key.rolling_start.get() + OsRng.next_u32() % 144);
                rpi = key.tek.rpi_key().rpi(interval).0;
                planted += 1;
            }
            Observation {
                observed_at: interval.start_unix_seconds() + 300,
                rpi: Rpi(rpi),
                aem: None,
                rssi: Some(-60),
            }
        })
        .collect();
    (observations, planted)
}

fn matching(key_count: usize, observation_count: usize, exports_dir: Option<&Path>) -> Result<()> {
    ensure!(
        key_count > 0 && observation_count > 0,
        "--keys and --observations must be at least 1"
    );
    let keys = random_keys(key_count);
    let (observations, planted) = observations_for(&keys, observation_count);
    if let Some(dir) = exports_dir {
        write_match_inputs(dir, &keys, &observations)?;
    }
    let began = Instant::now();
    let matcher = Matcher::new(observations, gaen::matching::DEFAULT_TOLERANCE_SECONDS);
    let index_time = began.elapsed();

    let began = Instant::now();
    let found = matcher.match_keys(&keys).len();
    let one_core = key_count as f64 / began.elapsed().as_secs_f64();
    ensure!(found >= planted, "found {found} matches, planted {planted}");

    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let began = Instant::now();
    let found_parallel = matcher.match_keys_parallel(&keys, threads).len();
    let all_cores = key_count as f64 / began.elapsed().as_secs_f64();
    ensure!(found_parallel == found, "parallel matching disagrees");

    let aes = raw_aes_blocks_per_second();
    out!(
        "match: {key_count} keys × {observation_count} observations (index built in {:.1} ms), {found} matches ({planted} planted)",
        index_time.as_secs_f64() * 1e3
    );
    out!(
        "one core:  {:.0} keys/s = {:.1} M RPIs/s, {:.0}% of this core's raw AES-128 rate ({:.1} M blocks/s)",
        one_core,
        one_core * 144.0 / 1e6,
        one_core * 144.0 / aes * 100.0,
        aes / 1e6
    );
    out!(
        "{threads} threads: {all_cores:.0} keys/s ({:.2}× one core)",
        all_cores / one_core
    );
    if let Some(peak) = peak_rss_mib() {
        out!("peak RSS {peak:.1} MiB (all keys held in memory for this benchmark)");
    }
    Ok(())
}

fn write_match_inputs(
    dir: &Path,
    keys: &[DiagnosisKey],
    observations: &[Observation],
) -> Result<()> {
    fs::create_dir_all(dir)?;
    let signer = Signer {
        key: SigningKey::generate(&mut OsRng),
        info: SignatureInfo::new("999", "v1"),
    };
    write_atomically(
        &dir.join("public-key.pem"),
        signer.key.verifying_key().to_pem().as_bytes(),
    )?;
    let start = TODAY - u64::from(DAYS) * 86_400;
    let export = Export {
        keys: keys.to_vec(),
        ..Export::new("XX", start, TODAY)
    };
    for (index, part) in gaen::split_export(export, gaen::DEFAULT_MAX_KEYS_PER_FILE)?
        .into_iter()
        .enumerate()
    {
        let zip = ExportFiles::seal(part, std::slice::from_ref(&signer))?.to_zip();
        write_atomically(&dir.join(format!("export-{}.zip", index + 1)), &zip)?;
    }
    let lines: String = observations
        .iter()
        .map(|o| format!("{},{}\n", o.observed_at, hex::encode(o.rpi.0)))
        .collect();
    write_atomically(&dir.join("observations.txt"), lines.as_bytes())?;
    out!(
        "wrote exports, observations.txt and public-key.pem to {}",
        dir.display()
    );
    Ok(())
}

fn export(key_count: usize) -> Result<()> {
    let keys = random_keys(key_count);
    let signer = Signer {
        key: SigningKey::generate(&mut OsRng),
        info: SignatureInfo::new("999", "v1"),
    };
    let export = Export {
        keys,
        ..Export::new("XX", TODAY - 3600, TODAY)
    };
    let began = Instant::now();
    let parts = gaen::split_export(export, key_count.max(1))?;
    let sorted = began.elapsed();
    let zips: Vec<Vec<u8>> = parts
        .into_iter()
        .map(|part| ExportFiles::seal(part, std::slice::from_ref(&signer)).map(|f| f.to_zip()))
        .collect::<Result<_, _>>()?;
    let written = began.elapsed();

    let began = Instant::now();
    let verifying_key = signer.key.verifying_key();
    let mut read_keys = 0;
    for zip in &zips {
        let files = ExportFiles::from_zip(zip)?;
        files.verify(&verifying_key)?;
        read_keys += files.export()?.keys.len();
    }
    let read = began.elapsed();
    ensure!(
        read_keys == key_count,
        "read back {read_keys} of {key_count} keys"
    );
    let bytes: usize = zips.iter().map(Vec::len).sum();
    out!(
        "export: {key_count} keys → {bytes} bytes zipped; sort {:.0} ms, sort + encode + sign + zip {:.0} ms; unzip + verify + decode {:.0} ms",
        sorted.as_secs_f64() * 1e3,
        written.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3
    );
    Ok(())
}
