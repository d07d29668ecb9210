//! Publication rules: when a key may be published (embargo), which period a batch covers, how
//! small batches are protected (padding or holding back), and what retention removes.
//!
//! Everything here is a pure function of its arguments, time included; the server's publisher
//! and janitor do the I/O and record each decision as an event, so that a rebuild knows what
//! was published and what was forgotten.

use std::fmt;

use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::UnixSeconds;
use crate::event::Event;
use crate::ids::{Digest, KeyData, Region};
use crate::state::StoredKey;

/// The kinds of files a region publishes; each has its own period and cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// GAEN export files per batch period (default hourly).
    Exports,
    /// GAEN export files per UTC day, so that a new install downloads few files.
    Daily,
    /// The native feed: a delta per feed period, and periodic snapshots.
    Feed,
    /// Encounter-token batches of an area (`docs/token-files.md`): a raw list, a filter and
    /// its confirmation buckets per export period.
    Tokens,
}

impl Stream {
    pub const ALL: [Stream; 4] = [Stream::Exports, Stream::Daily, Stream::Feed, Stream::Tokens];

    pub fn name(self) -> &'static str {
        match self {
            Self::Exports => "exports",
            Self::Daily => "daily",
            Self::Feed => "feed",
            Self::Tokens => "tokens",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How far a stream has published: the next window to close and the keys not yet out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Start of the next window (= end of the last published one).
    pub next_start: UnixSeconds,
    /// Keys that became available from here on are not published yet (held back while a
    /// region's threshold is not reached; otherwise equal to `next_start`).
    pub held_from: UnixSeconds,
    /// Files published so far in a sequence (the feed's delta number); 0 for other streams.
    pub seq: u64,
    /// SHA-256 of the last file in the sequence (the feed's chain link); zero otherwise.
    pub chain_hash: Digest,
    /// Withdrawals up to this serial number have been revoked in the stream.
    pub revised_through: u64,
}

/// A published file, as recorded in the log. Its path is the key it is stored under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedFile {
    /// Path under the publication root, e.g. `exports/302/1700000000-1700003600-00001.zip`.
    pub path: String,
    pub sha256: Digest,
    pub bytes: u64,
    /// Position in the stream's sequence (feed deltas and snapshots); 0 otherwise.
    #[serde(default)]
    pub seq: u64,
}

/// A file as the projections keep it: what the index lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub region: Region,
    pub stream: Stream,
    pub start: UnixSeconds,
    pub end: UnixSeconds,
    pub seq: u64,
    pub sha256: Digest,
    pub bytes: u64,
}

/// What a region does with a batch that has few keys, which would single out its uploaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SmallBatch {
    /// Google's key server: a batch of fewer than `minimum` real keys is padded with random
    /// keys that copy real keys' metadata, up to `minimum` + random[0, `jitter`).
    Pad { minimum: u32, jitter: u32 },
    /// Corona-Warn-App: keys are held back until `threshold` have accumulated; the periods in
    /// between get an empty signed file.
    Hold { threshold: u32 },
    /// Publish every batch as it is (for tests and regions that accept the risk).
    Off,
}

impl Default for SmallBatch {
    fn default() -> Self {
        Self::Pad {
            minimum: 1000,
            jitter: 100,
        }
    }
}

/// Per-region publication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationPolicy {
    pub export_period: u64,
    pub feed_period: u64,
    /// A key is published no earlier than this long after it stopped being valid.
    pub embargo_margin: u64,
    pub small_batch: SmallBatch,
    pub max_keys_per_file: usize,
    /// A feed snapshot is written every this many deltas (and with the first one).
    pub snapshot_every: u64,
}

impl Default for PublicationPolicy {
    fn default() -> Self {
        Self {
            export_period: 3600,
            feed_period: 900,
            embargo_margin: 3600,
            small_batch: SmallBatch::default(),
            max_keys_per_file: gaen::DEFAULT_MAX_KEYS_PER_FILE,
            snapshot_every: 96,
        }
    }
}

impl PublicationPolicy {
    pub fn period(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Exports | Stream::Tokens => self.export_period,
            Stream::Daily => 86_400,
            Stream::Feed => self.feed_period,
        }
    }
}

/// Keys older than this (by the end of their validity) leave the feed and every new file.
pub const PUBLISHED_KEY_MAX_AGE: u64 = 14 * 86_400;

/// When a key may first be published: after the hour it was submitted in has ended, and after
/// it can no longer be broadcast (the end of its validity) plus the embargo margin.
pub fn available_at(submission_hour: u64, key: &StoredKey, embargo_margin: u64) -> UnixSeconds {
    let submitted = (submission_hour + 1) * 3600;
    let valid_until = u64::from(key.rolling_start + key.rolling_period) * 600;
    submitted.max(valid_until + embargo_margin)
}

/// When an uploaded token hash may first be published: after its submission hour has ended
/// (tokens are never broadcast, so no embargo beyond that).
pub fn token_available_at(submission_hour: u64) -> UnixSeconds {
    (submission_hour + 1) * 3600
}

/// Whether the area's token stream has published a token of `submission_hour`.
pub fn token_published(cursor: Option<&Cursor>, submission_hour: u64) -> bool {
    cursor.is_some_and(|c| token_available_at(submission_hour) < c.held_from)
}

/// Random token hashes that copy the day and level of randomly chosen real ones, for a small
/// batch's padding: they match no phone's check token. `real` must not be empty.
pub fn padding_tokens(
    real: &[crate::tokenfile::PublishedToken],
    count: u32,
    rng: &mut impl RngCore,
) -> Vec<crate::tokenfile::PublishedToken> {
    (0..count)
        .map(|_| {
            let model = real[rng.next_u32() as usize % real.len()];
            let mut hash = [0u8; 16];
            rng.fill_bytes(&mut hash);
            crate::tokenfile::PublishedToken {
                hash: crate::encounter::TokenHash(hash),
                ..model
            }
        })
        .collect()
}

/// The earliest submission hour whose keys can become available at or after `from`: a key is
/// valid at most a day plus clock skew after its submission, so older hours are already out.
pub fn earliest_hour_available_from(from: UnixSeconds, embargo_margin: u64) -> u64 {
    from.saturating_sub(embargo_margin + 2 * 86_400) / 3600
}

/// The end of a key's validity in unix seconds.
pub fn valid_until(key: &StoredKey) -> UnixSeconds {
    u64::from(key.rolling_start + key.rolling_period) * 600
}

/// A window that is due: keys available in `[keys_from, end)` are candidates for its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: UnixSeconds,
    pub end: UnixSeconds,
    pub keys_from: UnixSeconds,
}

/// The next window of a stream that has closed by `now`, if any. A stream without a cursor
/// starts at the window holding `first_available` (the earliest key waiting), or at the last
/// closed window when nothing waits.
pub fn next_window(
    cursor: Option<&Cursor>,
    period: u64,
    now: UnixSeconds,
    first_available: Option<UnixSeconds>,
) -> Option<Window> {
    let period = period.max(1);
    let (start, keys_from) = match cursor {
        Some(c) => (c.next_start, c.held_from),
        None => {
            let last_closed = (now / period).saturating_sub(1) * period;
            let start =
                first_available.map_or(last_closed, |t| (t / period * period).min(last_closed));
            (start, start)
        }
    };
    let end = start + period;
    (end <= now).then_some(Window {
        start,
        end,
        keys_from,
    })
}

/// What to do with a window's real keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDecision {
    /// Publish them, plus this many padding keys.
    Publish { padding: u32 },
    /// Publish an empty file and keep the keys for a later window.
    Hold,
}

pub fn decide_batch(policy: SmallBatch, real_keys: usize, rng: &mut impl RngCore) -> BatchDecision {
    match policy {
        SmallBatch::Off => BatchDecision::Publish { padding: 0 },
        SmallBatch::Hold { threshold } if real_keys < threshold as usize => BatchDecision::Hold,
        SmallBatch::Hold { .. } => BatchDecision::Publish { padding: 0 },
        SmallBatch::Pad { minimum, jitter } => {
            // Nothing to copy metadata from, and an empty file reveals no uploader.
            if real_keys == 0 || real_keys >= minimum as usize {
                return BatchDecision::Publish { padding: 0 };
            }
            let extra = if jitter == 0 {
                0
            } else {
                rng.next_u32() % jitter
            };
            BatchDecision::Publish {
                padding: minimum - real_keys as u32 + extra,
            }
        }
    }
}

/// Random keys that copy the metadata of randomly chosen real keys, so that they cannot be
/// told apart from them. `real` must not be empty.
pub fn padding_keys(real: &[StoredKey], count: u32, rng: &mut impl RngCore) -> Vec<StoredKey> {
    (0..count)
        .map(|_| {
            let model = real[rng.next_u32() as usize % real.len()];
            let mut key_data = [0u8; 16];
            rng.fill_bytes(&mut key_data);
            StoredKey {
                key_data: KeyData(key_data),
                ..model
            }
        })
        .collect()
}

/// A stored key as export files carry it: a confirmed test result, with its risk level.
pub fn diagnosis_key(key: &StoredKey) -> gaen::DiagnosisKey {
    let mut diagnosis = gaen::DiagnosisKey::new(
        gaen::Tek(key.key_data.0),
        gaen::IntervalNumber::new(key.rolling_start),
        gaen::RollingPeriod::new(key.rolling_period).unwrap_or_default(),
    );
    diagnosis.transmission_risk =
        gaen::TransmissionRisk::new(i64::from(key.transmission_risk)).ok();
    diagnosis.report_type = Some(gaen::ReportType::ConfirmedTest);
    diagnosis
}

#[derive(Debug, thiserror::Error)]
pub enum ExportBuildError {
    #[error(transparent)]
    Split(#[from] gaen::SplitError),
    #[error(transparent)]
    Sign(#[from] gaen::SignatureError),
}

/// The signed export files (zip bytes) for a window: keys sorted by key_data, split at
/// `max_keys_per_file` into parts with distinct end timestamps, each batch 1 of 1 as phones
/// expect.
#[allow(clippy::too_many_arguments)]
pub fn export_files(
    region: &str,
    start: UnixSeconds,
    end: UnixSeconds,
    keys: &[StoredKey],
    revoked: &[StoredKey],
    signers: &[gaen::Signer],
    max_keys_per_file: usize,
) -> Result<Vec<Vec<u8>>, ExportBuildError> {
    let mut export = gaen::Export::new(region, start, end);
    export.keys = keys.iter().map(diagnosis_key).collect();
    export.revised_keys = revoked
        .iter()
        .map(|key| {
            let mut revised = diagnosis_key(key);
            revised.report_type = Some(gaen::ReportType::Revoked);
            revised
        })
        .collect();
    gaen::split_export(export, max_keys_per_file)?
        .into_iter()
        .map(|part| Ok(gaen::ExportFiles::seal(part, signers)?.to_zip()))
        .collect()
}

/// The withdrawals a window revokes: every one up to serial `through`, `keys` of them keys
/// the stream had published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revisions {
    pub through: u64,
    pub keys: u32,
}

/// Whether a withdrawn key must be revoked in a stream at `window`: the stream published it
/// (it became available before the stream's `held_from`) and phones may still hold it.
pub fn needs_revocation(
    cursor: &Cursor,
    hour: u64,
    key: &StoredKey,
    margin: u64,
    window: &Window,
) -> bool {
    available_at(hour, key, margin) < cursor.held_from
        && valid_until(key) + PUBLISHED_KEY_MAX_AGE > window.end
}

/// What the log records for a published window, and how the stream's cursor moves.
#[allow(clippy::too_many_arguments)]
pub fn published(
    region: Region,
    stream: Stream,
    window: Window,
    decision: BatchDecision,
    real_keys: usize,
    seq: u64,
    chain_hash: Digest,
    revisions: Revisions,
    files: Vec<PublishedFile>,
) -> Event {
    let (held_from, padding) = match decision {
        BatchDecision::Publish { padding } => (window.end, padding),
        BatchDecision::Hold => (window.keys_from, 0),
    };
    Event::BatchPublished {
        region,
        stream,
        start: window.start,
        end: window.end,
        keys_from: window.keys_from,
        held_from,
        real_keys: if matches!(decision, BatchDecision::Hold) {
            0
        } else {
            real_keys as u32
        },
        padding_keys: padding,
        seq,
        chain_hash,
        revised_through: revisions.through,
        revoked_keys: revisions.keys,
        files,
    }
}

/// How long each kind of personal data is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keys (and their submissions) are kept this long after their submission hour.
    pub keys: u64,
    /// Published files leave the index and the store this long after their window ended.
    pub files: u64,
    /// Events carrying key material are purged from the log this long after submission.
    pub key_events: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            keys: 15 * 86_400,
            files: 14 * 86_400,
            key_events: 21 * 86_400,
        }
    }
}

impl RetentionPolicy {
    /// The event that forgets everything due at `now`: expired codes and claims, spent claims,
    /// old keys and submissions, old files.
    pub fn applied_at(&self, now: UnixSeconds) -> Event {
        Event::RetentionApplied {
            now,
            keys_before_hour: now.saturating_sub(self.keys) / 3600,
            files_ending_by: now.saturating_sub(self.files),
        }
    }

    /// Events of key submissions before this hour are purged from the log.
    pub fn key_events_before_hour(&self, now: UnixSeconds) -> u64 {
        now.saturating_sub(self.key_events) / 3600
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u32);
    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            self.0 >> 8
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u32() as u8;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    fn key(rolling_start: u32, rolling_period: u32) -> StoredKey {
        StoredKey {
            key_data: KeyData([7; 16]),
            rolling_start,
            rolling_period,
            transmission_risk: 3,
        }
    }

    #[test]
    fn a_key_is_embargoed_until_it_expired_plus_the_margin() {
        let day_start = 2_700_000u32 / 144 * 144;
        let midnight = u64::from(day_start) * 600;
        // Today's key, submitted at 10:00: valid until midnight, so out at 01:00 next day.
        let hour = midnight / 3600 + 10;
        let today = key(day_start, 144);
        assert_eq!(available_at(hour, &today, 3600), midnight + 86_400 + 3600);
        // Yesterday's key is out as soon as the submission hour has ended.
        let yesterday = key(day_start - 144, 144);
        assert_eq!(available_at(hour, &yesterday, 3600), (hour + 1) * 3600);
        assert!(earliest_hour_available_from(midnight + 86_400 + 3600, 3600) <= hour);
    }

    #[test]
    fn windows_follow_the_cursor_and_only_close_in_the_past() {
        let cursor = Cursor {
            next_start: 36_000,
            held_from: 32_400,
            seq: 0,
            chain_hash: Digest([0; 32]),
            revised_through: 0,
        };
        assert_eq!(next_window(Some(&cursor), 3600, 39_599, None), None);
        assert_eq!(
            next_window(Some(&cursor), 3600, 39_600, None),
            Some(Window {
                start: 36_000,
                end: 39_600,
                keys_from: 32_400
            })
        );
        // No cursor: start at the window of the earliest waiting key, or the last closed one.
        let first = next_window(None, 3600, 100_000, Some(10_000)).expect("due");
        assert_eq!((first.start, first.end), (7_200, 10_800));
        let fresh = next_window(None, 3600, 100_000, None).expect("due");
        assert_eq!((fresh.start, fresh.end), (93_600, 97_200));
    }

    #[test]
    fn small_batches_are_padded_or_held() {
        let mut rng = Counter(1);
        let pad = SmallBatch::Pad {
            minimum: 1000,
            jitter: 100,
        };
        for real in [1usize, 10, 999] {
            let BatchDecision::Publish { padding } = decide_batch(pad, real, &mut rng) else {
                panic!("padding publishes");
            };
            let total = real + padding as usize;
            assert!((1000..1100).contains(&total), "{real} + {padding}");
        }
        assert_eq!(
            decide_batch(pad, 1000, &mut rng),
            BatchDecision::Publish { padding: 0 }
        );
        let hold = SmallBatch::Hold { threshold: 140 };
        assert_eq!(decide_batch(hold, 139, &mut rng), BatchDecision::Hold);
        assert_eq!(
            decide_batch(hold, 140, &mut rng),
            BatchDecision::Publish { padding: 0 }
        );
    }

    #[test]
    fn padding_copies_real_metadata_with_fresh_key_data() {
        let real = [key(100, 144), key(244, 130)];
        let fake = padding_keys(&real, 50, &mut Counter(9));
        assert_eq!(fake.len(), 50);
        for f in &fake {
            assert!(
                real.iter()
                    .any(|r| (r.rolling_start, r.rolling_period, r.transmission_risk)
                        == (f.rolling_start, f.rolling_period, f.transmission_risk))
            );
            assert_ne!(f.key_data, real[0].key_data);
        }
    }

    #[test]
    fn a_held_window_keeps_its_keys_for_later() {
        let window = Window {
            start: 7200,
            end: 10_800,
            keys_from: 3600,
        };
        let region = Region::try_from("302".to_string()).expect("region");
        let zero = Digest([0; 32]);
        let Event::BatchPublished { held_from, .. } = published(
            region.clone(),
            Stream::Exports,
            window,
            BatchDecision::Hold,
            5,
            0,
            zero,
            Revisions::default(),
            vec![],
        ) else {
            panic!("BatchPublished");
        };
        assert_eq!(held_from, 3600);
        let Event::BatchPublished {
            held_from,
            real_keys,
            ..
        } = published(
            region,
            Stream::Exports,
            window,
            BatchDecision::Publish { padding: 0 },
            5,
            0,
            zero,
            Revisions::default(),
            vec![],
        )
        else {
            panic!("BatchPublished");
        };
        assert_eq!((held_from, real_keys), (10_800, 5));
    }
}
