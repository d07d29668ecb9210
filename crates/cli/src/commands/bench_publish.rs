//! `confidant bench publish`: what the publisher does with one large batch, timed end to end:
//! GAEN export files (sorted, split, signed, zipped), the feed delta and a snapshot, each
//! written durably (fsync) through the same file store `serve` uses. Reports bytes per key
//! against the 16-byte floor (the key data alone).

use std::time::Instant;

use anyhow::{Result, ensure};
use confidant_core::feed::FeedFollower;
use confidant_core::publish::{self, Window};
use confidant_core::{KeyData, Region, StoredKey};
use confidant_server::FileStore;
use confidant_server::publisher::build_feed_files;
use gaen::{SignatureInfo, Signer, SigningKey};
use rand_core::{OsRng, RngCore};

use super::peak_rss_mib;

/// 2026-11-01T00:00:00Z, as the other benchmarks.
const TODAY: u64 = 1_793_491_200;

/// Keys as uploads produce them: 14 days back, mostly full days, three risk levels.
fn realistic_keys(count: usize) -> Vec<StoredKey> {
    let today = (TODAY / 600) as u32;
    (0..count)
        .map(|i| {
            let mut key_data = [0u8; 16];
            OsRng.fill_bytes(&mut key_data);
            let day = (i as u32) % 14 + 1;
            StoredKey {
                key_data: KeyData(key_data),
                rolling_start: today - day * 144,
                rolling_period: if i % 10 == 0 {
                    100 + (i as u32 % 44)
                } else {
                    144
                },
                transmission_risk: [2, 5, 8][i / 14 % 3],
            }
        })
        .collect()
}

pub async fn run(count: usize) -> Result<()> {
    let keys = realistic_keys(count);
    let signer = Signer {
        key: SigningKey::generate(&mut OsRng),
        info: SignatureInfo::new("999", "v1"),
    };
    let scratch =
        std::env::temp_dir().join(format!("confidant-bench-publish-{}", OsRng.next_u64()));
    let files = FileStore::local(&scratch).map_err(anyhow::Error::msg)?;
    let region = Region::try_from("999".to_owned()).map_err(anyhow::Error::msg)?;
    let result = async {
        let began = Instant::now();
        // As the publisher does: the export and the feed of a batch build side by side on
        // blocking threads, then the files are written.
        let export_keys = keys.clone();
        let export_signer = signer.clone();
        let exports = tokio::task::spawn_blocking(move || {
            let zips = publish::export_files(
                "XX",
                TODAY - 3600,
                TODAY,
                &export_keys,
                &[],
                std::slice::from_ref(&export_signer),
                gaen::DEFAULT_MAX_KEYS_PER_FILE,
            );
            (zips, began.elapsed())
        });
        let feed_keys = keys.clone();
        let feed_signer = signer.key.clone();
        let follower = FeedFollower::new(region.clone());
        let feed = tokio::task::spawn_blocking(move || {
            let window = Window {
                start: TODAY - 900,
                end: TODAY,
                keys_from: TODAY - 900,
            };
            let built = build_feed_files(follower, window, feed_keys, &[], &feed_signer, "999-v1", 96);
            (built, began.elapsed())
        });
        let ((zips, exported), (built, fed)) = (exports.await?, feed.await?);
        let (zips, built) = (zips?, built?);
        let zip_bytes: usize = zips.iter().map(Vec::len).sum();
        let delta_len = built.delta.len();
        let snapshot = built.snapshot.expect("the first delta comes with a snapshot");
        let snapshot_len = snapshot.len();
        let built_all = began.elapsed();
        for (index, zip) in zips.into_iter().enumerate() {
            files
                .put_immutable(&format!("exports/999/{index}.zip"), zip)
                .await?;
        }
        files.put_immutable("feed/999/delta", built.delta).await?;
        files.put_immutable("feed/999/snapshot", snapshot).await?;
        let next = built.follower;
        let total = began.elapsed();
        ensure!(next.live().len() == count, "the feed lost keys");
        let per_key = |bytes: usize| bytes as f64 / count as f64;
        out!(
            "publish: {count} keys in {:.0} ms (exports: sort + encode + sign + zip {:.0} ms, in parallel with feed delta + snapshot {:.0} ms; fsynced writes {:.0} ms)",
            total.as_secs_f64() * 1e3,
            exported.as_secs_f64() * 1e3,
            fed.as_secs_f64() * 1e3,
            (total - built_all).as_secs_f64() * 1e3,
        );
        out!(
            "bytes per key (floor 16.00): export zip {:.2}, feed delta {:.2}, feed snapshot {:.2}",
            per_key(zip_bytes),
            per_key(delta_len),
            per_key(snapshot_len),
        );
        let removal = FeedFollower::new(region)
            .next_delta(
                TODAY - 900,
                TODAY,
                Vec::new(),
                keys.iter().map(|k| k.key_data).collect(),
            )
            .encode(&signer.key, "999-v1")?;
        out!(
            "feed delta of removals only: {:.2} bytes per key; peak RSS {:.0} MiB",
            per_key(removal.len()),
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    std::fs::remove_dir_all(&scratch).ok();
    result
}
