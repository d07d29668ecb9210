//! `confidant match`: what a phone does with downloaded exports, one export in memory at a time.

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gaen::Matcher;

use super::{load_public_key, peak_rss_mib, read_text};
use crate::cli::MatchArgs;
use crate::input::parse_observations;
use crate::sources;

pub fn run(args: MatchArgs) -> Result<ExitCode> {
    let began = Instant::now();
    let observations = parse_observations(&read_text(&args.observations)?)
        .with_context(|| args.observations.display().to_string())?;
    let observation_count = observations.len();
    let key = load_public_key(&args.public_key)?;
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let tolerance = args
        .tolerance_minutes
        .checked_mul(60)
        .context("--tolerance-minutes is too large")?;
    let matcher = Matcher::new(observations, tolerance);

    let exports = sources::discover(&args.exports)?;
    if exports.is_empty() {
        bail!("no export files found in the given folders");
    }
    let (mut verified, mut keys, mut matches) = (0usize, 0usize, 0usize);
    let mut out = BufWriter::new(std::io::stdout().lock());
    for source in &exports {
        let files = match source.load() {
            Ok(files) => files,
            Err(e) => {
                eprintln!("warning: skipping {e:#}");
                continue;
            }
        };
        if let Err(e) = files.verify(&key) {
            eprintln!("warning: skipping {}: {e}", source.path().display());
            continue;
        }
        let export = match files.export() {
            Ok(export) => export,
            Err(e) => {
                eprintln!("warning: skipping {}: {e}", source.path().display());
                continue;
            }
        };
        drop(files);
        verified += 1;
        keys += export.keys.len();
        for found in matcher.match_keys_parallel(&export.keys, threads) {
            let observation = &matcher.observations()[found.observation];
            // Fields in the documented order; every value is a number, hex or null.
            let line = format!(
                r#"{{"tek":"{}","enin":{},"rpi":"{}","observed_at":{},"metadata":{},"rssi":{}}}"#,
                hex::encode(found.key.tek.as_bytes()),
                found.interval,
                hex::encode(found.rpi.0),
                observation.observed_at,
                found
                    .metadata
                    .map_or("null".to_owned(), |m| format!("\"{}\"", hex::encode(m.0))),
                observation
                    .rssi
                    .map_or("null".to_owned(), |r| r.to_string()),
            );
            writeln!(out, "{line}")?;
            matches += 1;
        }
    }
    out.flush()?;
    let peak = peak_rss_mib()
        .map(|m| format!(" peak_rss_mib={m:.1}"))
        .unwrap_or_default();
    eprintln!(
        "summary: exports={verified} skipped={} keys={keys} observations={observation_count} matches={matches} seconds={:.3}{peak}",
        exports.len() - verified,
        began.elapsed().as_secs_f64()
    );
    if verified == 0 {
        bail!(
            "none of the {} export file(s) verified with {}",
            exports.len(),
            args.public_key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
