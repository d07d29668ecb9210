//! `confidant bench gcs`: what publishing encounter-token hashes costs (bytes per token for raw
//! hashes, Golomb-coded sets at 2^-20 and 2^-40, and DP-3T's Cuckoo filter), how long a
//! server takes to build a filter, and how long a phone takes to test its check tokens; then
//! the same as the publisher really writes it: a signed batch of list, filter and buckets
//! (`core::tokenfile`), and what a phone downloads and spends on one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use confidant_core::encounter::TokenHash;
use confidant_core::gcs::{GcsFilter, GcsParams};
use confidant_core::tokenfile::{self, FilterMode, PublishedToken};
use rand_core::{OsRng, RngCore};

/// DP-3T's design-2 Cuckoo filter: 2,880 bytes per patient for 480 entries (white paper).
const CUCKOO_BYTES_PER_ENTRY: f64 = 6.0;
const RAW_BYTES_PER_HASH: f64 = 16.0;
/// Targets of issue #8.
const TARGET_BYTES_2_20: f64 = 2.75;
const TARGET_BYTES_2_40: f64 = 5.5;
const TARGET_BUILD: Duration = Duration::from_secs(1);
const TARGET_MATCH: Duration = Duration::from_millis(50);
const RUNS: usize = 5;

fn random_hashes(count: usize) -> Vec<[u8; 16]> {
    let mut bytes = vec![0u8; count * 16];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .chunks_exact(16)
        .map(|chunk| chunk.try_into().expect("16 bytes"))
        .collect()
}

/// The median of `RUNS` timings of `work`, and its last result.
fn median<T>(mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let began = Instant::now();
        let result = black_box(work());
        times.push(began.elapsed());
        last = Some(result);
    }
    times.sort();
    (times[RUNS / 2], last.expect("at least one run"))
}

fn verdict(met: bool) -> &'static str {
    if met { "meets" } else { "MISSES" }
}

pub fn run(elements: usize, queries: usize) -> Result<()> {
    ensure!(
        elements > 0 && queries > 0,
        "--elements and --queries must be positive"
    );
    println!(
        "bench gcs: {elements} published token hashes, a phone with {queries} check tokens \
         (median of {RUNS} runs, one core)"
    );
    let published = random_hashes(elements);
    let mut key = [0u8; 16];
    OsRng.fill_bytes(&mut key);

    println!("\n| encoding | bytes per token | false positives per query |");
    println!("|---|---|---|");
    println!("| raw 16-byte hashes | {RAW_BYTES_PER_HASH:.2} | 0 |");
    let mut all_met = true;
    for (bits, target) in [(20u8, TARGET_BYTES_2_20), (40, TARGET_BYTES_2_40)] {
        let params = GcsParams::for_false_positive_bits(bits);
        let filter = GcsFilter::build(&published, key, params);
        let per_token = filter.to_bytes().len() as f64 / elements as f64;
        all_met &= per_token <= target;
        println!(
            "| GCS at 2^-{bits} (P = {}, M = 2^{}) | {per_token:.3} ({} {target}) | 2^-{:.2} |",
            params.p,
            params.m.ilog2(),
            verdict(per_token <= target),
            (params.m as f64).log2()
        );
    }
    println!(
        "| Cuckoo filter (DP-3T, from its white paper) | {CUCKOO_BYTES_PER_ENTRY:.2} | 2^-42 |"
    );

    println!("\n| operation | at 2^-20 | at 2^-40 | target |");
    println!("|---|---|---|---|");
    let mut builds = Vec::new();
    let mut matches = Vec::new();
    // The phone's check tokens: mostly strangers, a few really published.
    let mut checks = random_hashes(queries);
    let real = queries.min(10);
    for (i, check) in checks.iter_mut().take(real).enumerate() {
        *check = published[i * (elements / real.max(1))];
    }
    for bits in [20u8, 40] {
        let params = GcsParams::for_false_positive_bits(bits);
        let (built_in, filter) = median(|| GcsFilter::build(&published, key, params));
        builds.push(built_in);
        let bytes = filter.to_bytes();
        let (matched_in, found) = median(|| {
            // What a phone does with a downloaded file: parse (which checks it whole), then
            // one sorted pass over it for all its check tokens.
            let filter = GcsFilter::from_bytes(&bytes).expect("the filter just built parses");
            filter.matches(&checks)
        });
        ensure!(
            (0..real).all(|i| found.contains(&i)),
            "2^-{bits}: a published token was not found: {found:?}"
        );
        matches.push(matched_in);
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    all_met &= builds.iter().all(|d| *d <= TARGET_BUILD);
    all_met &= matches.iter().all(|d| *d <= TARGET_MATCH);
    println!(
        "| build a {elements}-token filter | {} | {} | ≤ {} |",
        ms(builds[0]),
        ms(builds[1]),
        ms(TARGET_BUILD)
    );
    println!(
        "| parse it and test {queries} check tokens | {} | {} | ≤ {} |",
        ms(matches[0]),
        ms(matches[1]),
        ms(TARGET_MATCH)
    );
    all_met &= batch_files(&published, &checks[..real], &checks)?;
    println!(
        "\n{}",
        if all_met {
            "every target is met"
        } else {
            "SOME TARGETS ARE MISSED"
        }
    );
    Ok(())
}

/// A batch of `published` as the publisher writes it, in both modes: building and signing its
/// files, their sizes, and a phone's work on it (verify the filter's signature, parse it, test
/// `checks`, then verify and read `cover` buckets). True when the phone's step meets its target.
fn batch_files(published: &[[u8; 16]], real: &[[u8; 16]], checks: &[[u8; 16]]) -> Result<bool> {
    const COVER: usize = 2;
    let signer = gaen::SigningKey::generate(&mut OsRng);
    let public = signer.verifying_key();
    let area = confidant_core::Region::try_from("64".to_owned()).map_err(anyhow::Error::msg)?;
    let today = 20_833;
    let tokens: Vec<PublishedToken> = published
        .iter()
        .enumerate()
        .map(|(i, hash)| PublishedToken {
            hash: TokenHash(*hash),
            day: today - (i % 14) as u32,
            level: u8::from(i % 10 == 0),
        })
        .collect();
    let checks: Vec<TokenHash> = checks.iter().map(|c| TokenHash(*c)).collect();
    let n = published.len() as f64;
    println!(
        "\nAs published: one signed batch of {} tokens (levels 0 and 1, 14 days), list + filter \
         + buckets; a phone verifies and tests the filter, then fetches {COVER} buckets.",
        published.len()
    );
    println!(
        "\n| mode | build + sign all files | list B/token | filter B/token | phone downloads B/token | phone: verify, parse, test {} tokens, confirm | target |",
        checks.len()
    );
    println!("|---|---|---|---|---|---|---|");
    let mut met = true;
    for (name, mode) in [
        ("2^-20, 64 buckets", FilterMode::CONFIRMED),
        ("2^-40, no buckets", FilterMode::UNCONFIRMED),
    ] {
        let (built_in, files) = median(|| -> Result<Vec<Vec<u8>>> {
            let batch = tokenfile::batch_files(
                area.clone(),
                1,
                0,
                3600,
                tokens.clone(),
                Vec::new(),
                mode,
                &mut OsRng,
            )?;
            std::iter::once(&batch.list)
                .chain(std::iter::once(&batch.filter))
                .chain(batch.buckets.iter())
                .map(|file| Ok(file.encode(&signer, "tokens-v1")?))
                .collect()
        });
        let files = files?;
        let (list, filter, buckets) = (&files[0], &files[1], &files[2..]);
        let (phone_in, confirmed) = median(|| -> Result<usize> {
            let parsed = tokenfile::verify(filter, &public)?;
            let candidates = parsed.filter_candidates(&checks);
            if mode.bucket_bits == 0 {
                return Ok(candidates.len());
            }
            let mut wanted: Vec<u32> = candidates
                .iter()
                .map(|(i, _)| tokenfile::bucket_of(&checks[*i], mode.bucket_bits))
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            let mut confirmed = 0;
            for bucket in wanted.iter().take(COVER) {
                let parsed = tokenfile::verify(&buckets[*bucket as usize], &public)?;
                confirmed += candidates
                    .iter()
                    .filter(|(i, _)| parsed.confirms(&checks[*i]).is_some())
                    .count();
            }
            Ok(confirmed)
        });
        let confirmed = confirmed?;
        ensure!(
            confirmed >= real.len().min(COVER),
            "{name}: published tokens were not confirmed"
        );
        let bucket_bytes: usize = if buckets.is_empty() {
            0
        } else {
            buckets.iter().map(Vec::len).sum::<usize>() * COVER / buckets.len()
        };
        let downloaded = (filter.len() + bucket_bytes) as f64 / n;
        met &= phone_in <= TARGET_MATCH;
        println!(
            "| {name} | {:.0} ms | {:.2} | {:.3} | {downloaded:.3} | {:.1} ms ({}) | ≤ {:.0} ms |",
            built_in.as_secs_f64() * 1e3,
            list.len() as f64 / n,
            filter.len() as f64 / n,
            phone_in.as_secs_f64() * 1e3,
            verdict(phone_in <= TARGET_MATCH),
            TARGET_MATCH.as_secs_f64() * 1e3,
        );
    }
    Ok(met)
}
