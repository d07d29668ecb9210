//! The background jobs: the publisher turns accepted keys into signed, immutable files, and the
//! janitor forgets what retention says is due.
//!
//! Each run closes every window that is due, stream by stream and in order: it selects the
//! keys that left embargo in the window (`core::publish`), protects small batches, writes the
//! files (a path is written once), then records a `BatchPublished` event. The event is the
//! commit point: a crash before it leaves at most files that the next run adopts unchanged.
//! Several instances may run against one database: a lease in the store elects the one that
//! publishes, and the store refuses a window whose cursor has already moved.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use confidant_core::encounter::TokenHash;
use confidant_core::feed::{self, FeedFile, FeedFollower, FeedIndex, IndexEntry};
use confidant_core::publish::{
    self, BatchDecision, PUBLISHED_KEY_MAX_AGE, PublicationPolicy, RetentionPolicy, Stream, Window,
};
use confidant_core::tokenfile::{
    self, BatchEntry, FileEntry, FilterMode, PublishedToken, TokenIndex, TokenKind,
};
use confidant_core::{
    Cursor, Digest, KeyData, PublishedFile, Region, SmallBatch, StoredKey, UnixSeconds,
};
use confidant_store::{RetentionReport, Store, StoreError};
use rand_core::OsRng;

use crate::files::{FileStore, FileStoreError, ServeCache};

/// How a region publishes: its name inside export files, its signing keys, its rules.
#[derive(Clone)]
pub struct RegionSettings {
    /// The `region` field of export.bin (e.g. "CA" for MCC 302).
    pub export_region: String,
    /// Newest key first; every file carries a signature from each.
    pub signers: Vec<gaen::Signer>,
    /// Names the feed's signing key (the first signer's key) in feed files.
    pub feed_key_id: String,
    pub policy: PublicationPolicy,
    /// The COVID Shield exposure configuration served for the region.
    pub exposure_configuration: serde_json::Value,
}

/// The exposure configuration COVID Shield's servers shipped (`covidshield.md`).
pub fn default_exposure_configuration() -> serde_json::Value {
    serde_json::json!({
        "minimumRiskScore": 1,
        "attenuationLevelValues": [0, 5, 5, 5, 5, 5, 5, 5],
        "attenuationWeight": 50,
        "daysSinceLastExposureLevelValues": [1, 1, 1, 1, 1, 1, 1, 1],
        "daysSinceLastExposureWeight": 50,
        "durationLevelValues": [0, 0, 0, 0, 5, 5, 5, 5],
        "durationWeight": 50,
        "transmissionRiskLevelValues": [1, 1, 1, 1, 1, 1, 1, 1],
        "transmissionRiskWeight": 50
    })
}

/// How encounter-token batches are published (per area, every export period, signed with
/// the default key).
#[derive(Clone, Debug)]
pub struct TokenPublication {
    /// The filters' false-positive rate and confirmation buckets.
    pub mode: FilterMode,
    /// Small batches are padded with random hashes or held back, as keys are.
    pub small_batch: SmallBatch,
    /// Names the signing key in token files.
    pub key_id: String,
}

impl Default for TokenPublication {
    fn default() -> Self {
        Self {
            mode: FilterMode::CONFIRMED,
            small_batch: SmallBatch::Pad {
                minimum: 200,
                jitter: 50,
            },
            key_id: "tokens-v1".into(),
        }
    }
}

/// Publication settings of a deployment.
#[derive(Clone)]
pub struct PublishSettings {
    /// Regions configured explicitly; others (found through their providers) get defaults.
    pub regions: BTreeMap<Region, RegionSettings>,
    /// Signs the files of regions without keys of their own.
    pub default_key: gaen::SigningKey,
    pub default_policy: PublicationPolicy,
    pub retention: RetentionPolicy,
    /// Seconds between janitor runs.
    pub janitor_interval: u64,
    pub tokens: TokenPublication,
}

impl PublishSettings {
    /// Default rules for every region, all signed with `default_key`.
    pub fn new(default_key: gaen::SigningKey) -> Self {
        Self {
            regions: BTreeMap::new(),
            default_key,
            default_policy: PublicationPolicy::default(),
            retention: RetentionPolicy::default(),
            janitor_interval: 3600,
            tokens: TokenPublication::default(),
        }
    }

    /// A region's settings: configured, or defaults with key id = the region and version v1.
    pub fn region(&self, region: &Region) -> RegionSettings {
        if let Some(settings) = self.regions.get(region) {
            return settings.clone();
        }
        RegionSettings {
            export_region: region.to_string(),
            signers: vec![gaen::Signer {
                key: self.default_key.clone(),
                info: gaen::SignatureInfo::new(region.as_str(), "v1"),
            }],
            feed_key_id: format!("{region}-v1"),
            policy: self.default_policy.clone(),
            exposure_configuration: default_exposure_configuration(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] FileStoreError),
    #[error("building a file failed: {0}")]
    Build(String),
    #[error("published file {path} does not match the log: {problem}")]
    Inconsistent { path: String, problem: String },
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// False when another instance holds the lease.
    pub leader: bool,
    pub windows: u32,
    pub files: u32,
    pub keys: u64,
    pub retention: Option<RetentionReport>,
}

const LEASE: &str = "publisher";
/// A leader that stops renewing is replaced after this long.
pub const LEASE_SECONDS: u64 = 120;

pub struct Publisher {
    store: Store,
    files: FileStore,
    serve_cache: Arc<ServeCache>,
    settings: PublishSettings,
    instance: String,
    /// Feed live sets by region, kept between runs; rebuilt from the files when stale.
    feeds: Mutex<HashMap<Region, FeedFollower>>,
    /// One run at a time in this process.
    running: tokio::sync::Mutex<Option<UnixSeconds>>,
}

fn digest(bytes: &[u8]) -> Digest {
    Digest(feed::file_hash(bytes))
}

/// Runs CPU-bound file building off the async threads.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    build: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(build)
        .await
        .map_err(|e| PublishError::Build(e.to_string()))?
        .map_err(|e| PublishError::Build(e.to_string()))
}

impl Publisher {
    pub fn new(
        store: Store,
        files: FileStore,
        serve_cache: Arc<ServeCache>,
        settings: PublishSettings,
    ) -> Self {
        let mut id = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut id);
        Self {
            store,
            files,
            serve_cache,
            settings,
            instance: hex::encode(id),
            feeds: Mutex::new(HashMap::new()),
            running: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &PublishSettings {
        &self.settings
    }

    /// Publishes every window due at `now` and runs the janitor when its interval has passed,
    /// if this instance holds (or takes) the lease.
    pub async fn run_due(&self, now: UnixSeconds) -> Result<RunReport, PublishError> {
        let mut last_janitor = self.running.lock().await;
        let mut report = RunReport::default();
        if !self
            .store
            .try_lease(LEASE, &self.instance, now, LEASE_SECONDS)
            .await?
        {
            return Ok(report);
        }
        report.leader = true;
        let started = Instant::now();
        let mut regions: BTreeSet<Region> = self.settings.regions.keys().cloned().collect();
        regions.extend(self.store.regions().await?);
        for region in &regions {
            let settings = self.settings.region(region);
            // Streams are independent; building files runs on blocking threads, so the
            // exports and the feed of a large batch are built in parallel.
            let (exports, daily, feed) = tokio::join!(
                self.publish_stream(region, &settings, Stream::Exports, now),
                self.publish_stream(region, &settings, Stream::Daily, now),
                self.publish_stream(region, &settings, Stream::Feed, now),
            );
            for stream_report in [exports?, daily?, feed?] {
                report.windows += stream_report.windows;
                report.files += stream_report.files;
                report.keys += stream_report.keys;
            }
        }
        let areas = self.store.token_areas().await?;
        let mut token_windows = 0;
        for area in &areas {
            let area_report = self.publish_tokens(area, now).await?;
            token_windows += area_report.windows;
            report.windows += area_report.windows;
            report.files += area_report.files;
        }
        if token_windows > 0 {
            for area in &areas {
                self.write_token_index(area).await?;
            }
        }
        if report.windows > token_windows {
            for region in &regions {
                self.write_indices(region).await?;
            }
        }
        if report.windows > 0 {
            metrics::histogram!("confidant_publish_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        let due = last_janitor.is_none_or(|last| now >= last + self.settings.janitor_interval);
        if due {
            report.retention = Some(self.janitor(now, &regions).await?);
            *last_janitor = Some(now);
        }
        Ok(report)
    }

    /// Gives the lease up so that another instance takes over at once.
    pub async fn resign(&self) {
        self.store.release_lease(LEASE, &self.instance).await.ok();
    }

    async fn publish_stream(
        &self,
        region: &Region,
        settings: &RegionSettings,
        stream: Stream,
        now: UnixSeconds,
    ) -> Result<RunReport, PublishError> {
        let mut report = RunReport::default();
        let policy = &settings.policy;
        let period = policy.period(stream);
        loop {
            let cursor = self.store.cursor(region, stream).await?;
            let first_available = match cursor {
                Some(_) => None,
                None => self
                    .store
                    .first_key_hour(region)
                    .await?
                    .map(|hour| (hour + 1) * 3600),
            };
            let Some(window) = publish::next_window(cursor.as_ref(), period, now, first_available)
            else {
                return Ok(report);
            };
            // Read before the keys: a withdrawal committed meanwhile waits for the next window.
            let withdrawals = self.store.withdrawals().await?;
            let revised_through = cursor.as_ref().map_or(0, |c| c.revised_through);
            let withdrawn = if withdrawals > revised_through {
                self.store
                    .keys_withdrawn(region, revised_through, withdrawals)
                    .await?
            } else {
                Vec::new()
            };
            let real = self.keys_for(region, policy, window).await?;
            let decision = publish::decide_batch(policy.small_batch, real.len(), &mut OsRng);
            let mut keys = match decision {
                BatchDecision::Hold => Vec::new(),
                BatchDecision::Publish { .. } => real.clone(),
            };
            if let BatchDecision::Publish { padding } = decision
                && padding > 0
            {
                keys.extend(publish::padding_keys(&real, padding, &mut OsRng));
            }
            let batch_keys = keys.len() as u64;
            let (files, seq, chain_hash, revoked) = match stream {
                Stream::Exports | Stream::Daily => {
                    // Revoke what this stream published; what it did not, it never will.
                    let revoked: Vec<StoredKey> = match &cursor {
                        Some(cursor) => withdrawn
                            .into_iter()
                            .filter(|(key, hour)| {
                                publish::needs_revocation(
                                    cursor,
                                    *hour,
                                    key,
                                    policy.embargo_margin,
                                    &window,
                                )
                            })
                            .map(|(key, _)| key)
                            .collect(),
                        None => Vec::new(),
                    };
                    let count = revoked.len() as u32;
                    let files = self
                        .write_exports(region, settings, stream, window, keys, revoked)
                        .await?;
                    (files, 0, Digest([0; 32]), count)
                }
                Stream::Tokens => unreachable!("token batches are published by publish_tokens"),
                Stream::Feed => {
                    let withdrawn = withdrawn.into_iter().map(|(key, _)| key.key_data).collect();
                    self.write_feed(region, settings, cursor.as_ref(), window, keys, withdrawn)
                        .await?
                }
            };
            let revisions = publish::Revisions {
                through: withdrawals.max(revised_through),
                keys: revoked,
            };
            let file_count = files.len() as u32;
            let event = publish::published(
                region.clone(),
                stream,
                window,
                decision,
                real.len(),
                seq,
                chain_hash,
                revisions,
                files,
            );
            match self.store.publish(event).await {
                Ok(()) => {}
                // Another instance published this window first: its files stand.
                Err(StoreError::Conflict) => {
                    self.feeds.lock().expect("feeds lock").remove(region);
                    return Ok(report);
                }
                Err(e) => {
                    self.feeds.lock().expect("feeds lock").remove(region);
                    return Err(e.into());
                }
            }
            let published = if matches!(decision, BatchDecision::Hold) {
                0
            } else {
                real.len() as u64
            };
            report.windows += 1;
            report.files += file_count;
            report.keys += published;
            metrics::counter!("confidant_keys_published_total", "stream" => stream.name())
                .increment(published);
            metrics::histogram!("confidant_batch_keys", "stream" => stream.name())
                .record(batch_keys as f64);
            metrics::counter!("confidant_keys_revoked_total", "stream" => stream.name())
                .increment(u64::from(revisions.keys));
            tracing::info!(
                region = %region,
                stream = %stream,
                start = window.start,
                end = window.end,
                keys = published,
                padding = batch_keys - published.min(batch_keys),
                revoked = revisions.keys,
                held = matches!(decision, BatchDecision::Hold),
                "published a window"
            );
        }
    }

    /// Publishes every due window of an area's encounter tokens: a raw list, a filter and its
    /// confirmation buckets per window (`docs/token-files.md`), with the tokens withdrawn
    /// since the last window removed.
    async fn publish_tokens(
        &self,
        area: &Region,
        now: UnixSeconds,
    ) -> Result<RunReport, PublishError> {
        let settings = &self.settings.tokens;
        let period = self.settings.default_policy.export_period;
        let mut report = RunReport::default();
        loop {
            let cursor = self.store.cursor(area, Stream::Tokens).await?;
            let first_available = match cursor {
                Some(_) => None,
                None => self
                    .store
                    .first_token_hour(area)
                    .await?
                    .map(publish::token_available_at),
            };
            let Some(window) = publish::next_window(cursor.as_ref(), period, now, first_available)
            else {
                return Ok(report);
            };
            // Read before the tokens: a withdrawal committed meanwhile waits for the next window.
            let withdrawals = self.store.withdrawals().await?;
            let revised_through = cursor.as_ref().map_or(0, |c| c.revised_through);
            let removed: Vec<TokenHash> = if withdrawals > revised_through {
                self.store
                    .tokens_withdrawn(area, revised_through, withdrawals)
                    .await?
                    .into_iter()
                    .filter(|(_, t)| publish::token_published(cursor.as_ref(), t.hour))
                    .map(|(hash, _)| hash)
                    .collect()
            } else {
                Vec::new()
            };
            let from_hour = (window.keys_from / 3600).saturating_sub(1);
            let real: Vec<PublishedToken> = self
                .store
                .tokens_submitted(area, from_hour, window.end / 3600)
                .await?
                .into_iter()
                .filter(|(_, t)| {
                    (window.keys_from..window.end).contains(&publish::token_available_at(t.hour))
                })
                .map(|(hash, t)| PublishedToken {
                    hash,
                    day: t.day,
                    level: t.level,
                })
                .collect();
            let decision = publish::decide_batch(settings.small_batch, real.len(), &mut OsRng);
            let mut added = match decision {
                BatchDecision::Hold => Vec::new(),
                BatchDecision::Publish { .. } => real.clone(),
            };
            if let BatchDecision::Publish { padding } = decision
                && padding > 0
            {
                added.extend(publish::padding_tokens(&real, padding, &mut OsRng));
            }
            let seq = cursor.as_ref().map_or(0, |c| c.seq) + 1;
            let revisions = publish::Revisions {
                through: withdrawals.max(revised_through),
                keys: removed.len() as u32,
            };
            let files = self
                .write_token_batch(area, seq, window, added, removed)
                .await?;
            let file_count = files.len() as u32;
            let event = publish::published(
                area.clone(),
                Stream::Tokens,
                window,
                decision,
                real.len(),
                seq,
                Digest([0; 32]),
                revisions,
                files,
            );
            match self.store.publish(event).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => return Ok(report),
                Err(e) => return Err(e.into()),
            }
            let published = match decision {
                BatchDecision::Hold => 0,
                BatchDecision::Publish { .. } => real.len() as u64,
            };
            report.windows += 1;
            report.files += file_count;
            metrics::counter!("confidant_tokens_published_total").increment(published);
            tracing::info!(
                area = %area,
                start = window.start,
                end = window.end,
                tokens = published,
                removed = revisions.keys,
                held = matches!(decision, BatchDecision::Hold),
                "published a token batch"
            );
        }
    }

    /// Builds, signs and writes one token batch's files; a file already there (from a run
    /// that crashed before recording it) is adopted.
    async fn write_token_batch(
        &self,
        area: &Region,
        seq: u64,
        window: Window,
        added: Vec<PublishedToken>,
        removed: Vec<TokenHash>,
    ) -> Result<Vec<PublishedFile>, PublishError> {
        let mode = self.settings.tokens.mode;
        let key = self.settings.default_key.clone();
        let key_id = self.settings.tokens.key_id.clone();
        let owned_area = area.clone();
        let encoded = blocking(move || {
            let batch = tokenfile::batch_files(
                owned_area,
                seq,
                window.start,
                window.end,
                added,
                removed,
                mode,
                &mut OsRng,
            )?;
            std::iter::once(&batch.list)
                .chain(std::iter::once(&batch.filter))
                .chain(batch.buckets.iter())
                .map(|file| Ok((file.name(), file.encode(&key, &key_id)?)))
                .collect::<Result<Vec<_>, tokenfile::TokenFileError>>()
        })
        .await?;
        let mut files = Vec::with_capacity(encoded.len());
        for (name, bytes) in encoded {
            let path = format!("tokens/{area}/{name}");
            let stored = self.files.put_immutable(&path, bytes).await?;
            files.push(PublishedFile {
                sha256: digest(&stored),
                bytes: stored.len() as u64,
                path,
                seq,
            });
        }
        Ok(files)
    }

    /// Rewrites an area's `index.json` from the log's list of live token files.
    async fn write_token_index(&self, area: &Region) -> Result<(), PublishError> {
        let mut lists = BTreeMap::new();
        let mut filters = BTreeMap::new();
        for (path, record) in self.store.files(area, Stream::Tokens).await? {
            let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
            let entry = FileEntry {
                sha256: hex::encode(record.sha256.0),
                bytes: record.bytes,
                file: name.clone(),
            };
            match tokenfile::parse_file_name(&name) {
                Some((TokenKind::List, seq, _)) => {
                    lists.insert(seq, (record.start, record.end, entry));
                }
                Some((TokenKind::Filter, seq, _)) => {
                    filters.insert(seq, entry);
                }
                _ => {}
            }
        }
        let batches = lists
            .into_iter()
            .filter_map(|(seq, (start, end, list))| {
                filters.remove(&seq).map(|filter| BatchEntry {
                    seq,
                    start,
                    end,
                    list,
                    filter,
                })
            })
            .collect();
        let index = TokenIndex::new(area.clone(), self.settings.tokens.mode, batches);
        let json = serde_json::to_vec(&index).expect("the index serialises");
        self.files
            .put_index(&format!("tokens/{area}/index.json"), json)
            .await?;
        Ok(())
    }

    /// Real keys that left embargo in the window (from `keys_from`), not yet too old.
    async fn keys_for(
        &self,
        region: &Region,
        policy: &PublicationPolicy,
        window: Window,
    ) -> Result<Vec<StoredKey>, PublishError> {
        let margin = policy.embargo_margin;
        let from_hour = publish::earliest_hour_available_from(window.keys_from, margin);
        let candidates = self
            .store
            .keys_submitted(region, from_hour, window.end / 3600 + 1)
            .await?;
        Ok(candidates
            .into_iter()
            .filter(|(key, hour)| {
                let available = publish::available_at(*hour, key, margin);
                (window.keys_from..window.end).contains(&available)
                    && publish::valid_until(key) + PUBLISHED_KEY_MAX_AGE > window.end
            })
            .map(|(key, _)| key)
            .collect())
    }

    async fn write_exports(
        &self,
        region: &Region,
        settings: &RegionSettings,
        stream: Stream,
        window: Window,
        keys: Vec<StoredKey>,
        revoked: Vec<StoredKey>,
    ) -> Result<Vec<PublishedFile>, PublishError> {
        let (export_region, signers, max_keys) = (
            settings.export_region.clone(),
            settings.signers.clone(),
            settings.policy.max_keys_per_file,
        );
        let zips = blocking(move || {
            publish::export_files(
                &export_region,
                window.start,
                window.end,
                &keys,
                &revoked,
                &signers,
                max_keys,
            )
        })
        .await?;
        let dir = export_dir(region, stream);
        let mut files = Vec::with_capacity(zips.len());
        for (index, zip) in zips.into_iter().enumerate() {
            let path = format!("{dir}/{}-{}-{:05}.zip", window.start, window.end, index + 1);
            let stored = self.files.put_immutable(&path, zip).await?;
            files.push(PublishedFile {
                sha256: digest(&stored),
                bytes: stored.len() as u64,
                path,
                seq: 0,
            });
        }
        Ok(files)
    }

    /// The live set the feed has published up to `cursor`, from memory or from its files.
    async fn feed_follower(
        &self,
        region: &Region,
        cursor: Option<&Cursor>,
    ) -> Result<FeedFollower, PublishError> {
        let (seq, hash) = cursor.map_or((0, [0; 32]), |c| (c.seq, c.chain_hash.0));
        // Taken out of the cache (not cloned: it holds every live key); put back when the
        // next delta is recorded.
        if let Some(follower) = self.feeds.lock().expect("feeds lock").remove(region)
            && follower.seq() == seq
            && follower.last_hash() == hash
        {
            return Ok(follower);
        }
        if seq == 0 {
            return Ok(FeedFollower::new(region.clone()));
        }
        let records = self.store.files(region, Stream::Feed).await?;
        let snapshot = records
            .iter()
            .filter(|(path, r)| is_snapshot(path) && r.seq <= seq)
            .max_by_key(|(_, r)| r.seq);
        let mut follower = match snapshot {
            Some((path, _)) => {
                let file = self.read_feed_file(path).await?.1;
                FeedFollower::from_snapshot(&file).map_err(|e| inconsistent(path, e))?
            }
            None => FeedFollower::new(region.clone()),
        };
        let mut deltas: Vec<_> = records
            .iter()
            .filter(|(path, r)| !is_snapshot(path) && r.seq > follower.seq() && r.seq <= seq)
            .collect();
        deltas.sort_by_key(|(_, r)| r.seq);
        for (path, _) in deltas {
            let (bytes, file) = self.read_feed_file(path).await?;
            follower
                .apply(&bytes, &file)
                .map_err(|e| inconsistent(path, e))?;
        }
        if follower.seq() != seq || follower.last_hash() != hash {
            return Err(PublishError::Inconsistent {
                path: format!("feed/{region}"),
                problem: format!(
                    "the files reach delta {}, the log says {seq}",
                    follower.seq()
                ),
            });
        }
        Ok(follower)
    }

    async fn read_feed_file(&self, path: &str) -> Result<(bytes::Bytes, FeedFile), PublishError> {
        let bytes = self
            .files
            .get(path)
            .await?
            .ok_or_else(|| PublishError::Inconsistent {
                path: path.to_owned(),
                problem: "the file is missing".into(),
            })?;
        let file = feed::decode(&bytes).map_err(|e| inconsistent(path, e))?;
        Ok((bytes, file))
    }

    /// Writes the window's delta (and a snapshot when one is due); returns the files, the new
    /// seq, the delta's hash and how many withdrawn keys it removed.
    async fn write_feed(
        &self,
        region: &Region,
        settings: &RegionSettings,
        cursor: Option<&Cursor>,
        window: Window,
        added: Vec<StoredKey>,
        withdrawn: Vec<KeyData>,
    ) -> Result<(Vec<PublishedFile>, u64, Digest, u32), PublishError> {
        let follower = self.feed_follower(region, cursor).await?;
        let signer = settings.signers[0].key.clone();
        let key_id = settings.feed_key_id.clone();
        let every = settings.policy.snapshot_every.max(1);
        let built = blocking(move || {
            build_feed_files(follower, window, added, &withdrawn, &signer, &key_id, every)
        })
        .await?;
        let revoked = built.revoked;
        let dir = format!("feed/{region}");
        let delta_path = format!("{dir}/{}", feed::delta_name(built.seq));
        let stored = self.files.put_immutable(&delta_path, built.delta).await?;
        let hash = feed::file_hash(&stored);
        let mut follower = built.follower;
        let mut snapshot = built.snapshot;
        if hash != follower.last_hash() {
            // A run that crashed before recording wrote this delta: the file stands, so the
            // chain continues from what it says.
            let adopted = feed::decode(&stored).map_err(|e| inconsistent(&delta_path, e))?;
            follower = self.feed_follower(region, cursor).await?;
            follower
                .apply(&stored, &adopted)
                .map_err(|e| inconsistent(&delta_path, e))?;
            if let Some(bytes) = snapshot.as_mut() {
                *bytes = follower
                    .snapshot(window.end)
                    .encode(&settings.signers[0].key, &settings.feed_key_id)
                    .map_err(|e| PublishError::Build(e.to_string()))?;
            }
        }
        let mut files = vec![PublishedFile {
            path: delta_path,
            sha256: Digest(hash),
            bytes: stored.len() as u64,
            seq: built.seq,
        }];
        if let Some(bytes) = snapshot {
            let path = format!("{dir}/{}", feed::snapshot_name(built.seq));
            let stored = self.files.put_immutable(&path, bytes).await?;
            files.push(PublishedFile {
                path,
                sha256: digest(&stored),
                bytes: stored.len() as u64,
                seq: built.seq,
            });
        }
        let seq = follower.seq();
        self.feeds
            .lock()
            .expect("feeds lock")
            .insert(region.clone(), follower);
        Ok((files, seq, Digest(hash), revoked))
    }

    /// Rewrites the region's indices from the log's list of live files.
    async fn write_indices(&self, region: &Region) -> Result<(), PublishError> {
        for stream in [Stream::Exports, Stream::Daily] {
            let mut text = String::new();
            for (path, _) in self.store.files(region, stream).await? {
                text.push_str(&path);
                text.push('\n');
            }
            let path = format!("{}/index.txt", export_dir(region, stream));
            self.files.put_index(&path, text.into_bytes()).await?;
        }
        let records = self.store.files(region, Stream::Feed).await?;
        let entry = |path: &str, r: &confidant_core::FileRecord| IndexEntry {
            seq: r.seq,
            file: path.rsplit('/').next().unwrap_or(path).to_owned(),
            sha256: hex::encode(r.sha256.0),
            start: if is_snapshot(path) { r.end } else { r.start },
            end: r.end,
            bytes: r.bytes,
        };
        let snapshot = records
            .iter()
            .filter(|(path, _)| is_snapshot(path))
            .max_by_key(|(_, r)| r.seq)
            .map(|(path, r)| entry(path, r));
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let mut deltas: Vec<IndexEntry> = records
            .iter()
            .filter(|(path, r)| !is_snapshot(path) && r.seq > after)
            .map(|(path, r)| entry(path, r))
            .collect();
        deltas.sort_by_key(|d| d.seq);
        let index = FeedIndex::new(region.clone(), snapshot, deltas);
        let json = serde_json::to_vec(&index).expect("the index serialises");
        self.files
            .put_index(&format!("feed/{region}/index.json"), json)
            .await?;
        Ok(())
    }

    /// Forgets what retention says is due at `now`, then deletes the retired files.
    async fn janitor(
        &self,
        now: UnixSeconds,
        regions: &BTreeSet<Region>,
    ) -> Result<RetentionReport, PublishError> {
        let retention = self.settings.retention;
        let report = self
            .store
            .apply_retention(
                retention.applied_at(now),
                retention.key_events_before_hour(now),
            )
            .await?;
        // The indices must stop listing a file before it disappears.
        for region in regions {
            self.write_indices(region).await?;
        }
        for area in self.store.token_areas().await? {
            self.write_token_index(&area).await?;
        }
        for path in &report.retired_files {
            self.files.delete(path).await?;
            self.serve_cache.evict(path);
        }
        metrics::counter!("confidant_retention_removed_total", "kind" => "keys")
            .increment(report.keys);
        metrics::counter!("confidant_retention_removed_total", "kind" => "files")
            .increment(report.retired_files.len() as u64);
        tracing::info!(
            codes = report.codes,
            claims = report.claims,
            keys = report.keys,
            files = report.retired_files.len(),
            purged_events = report.purged_events,
            "retention applied"
        );
        Ok(report)
    }
}

fn export_dir(region: &Region, stream: Stream) -> String {
    match stream {
        Stream::Daily => format!("exports/{region}/daily"),
        _ => format!("exports/{region}"),
    }
}

fn is_snapshot(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("snapshot-"))
}

fn inconsistent(path: &str, error: impl std::fmt::Display) -> PublishError {
    PublishError::Inconsistent {
        path: path.to_owned(),
        problem: error.to_string(),
    }
}

/// A window's feed files, built off the async threads.
pub struct FeedFiles {
    /// The live set after the delta.
    pub follower: FeedFollower,
    pub seq: u64,
    pub delta: Vec<u8>,
    /// Written with the first delta and every `snapshot_every` deltas.
    pub snapshot: Option<Vec<u8>>,
    /// Withdrawn keys the delta removed.
    pub revoked: u32,
}

/// The delta for `window` (withdrawn keys and keys expired by then removed, new keys added),
/// applied to the live set, and a snapshot when one is due.
pub fn build_feed_files(
    mut follower: FeedFollower,
    window: Window,
    added: Vec<StoredKey>,
    withdrawn: &[KeyData],
    signer: &gaen::SigningKey,
    key_id: &str,
    snapshot_every: u64,
) -> Result<FeedFiles, feed::FeedError> {
    let mut removed: BTreeSet<KeyData> = follower
        .live()
        .values()
        .filter(|k| publish::valid_until(k) + PUBLISHED_KEY_MAX_AGE <= window.end)
        .map(|k| k.key_data)
        .collect();
    let mut revoked = 0;
    for key in withdrawn {
        if follower.live().contains_key(key) && removed.insert(*key) {
            revoked += 1;
        }
    }
    let removed: Vec<KeyData> = removed.into_iter().collect();
    let added: Vec<StoredKey> = added
        .into_iter()
        .filter(|k| !follower.live().contains_key(&k.key_data))
        .collect();
    let delta = follower.next_delta(window.start, window.end, added, removed);
    let bytes = delta.encode(signer, key_id)?;
    follower.apply(&bytes, &delta)?;
    let snapshot = if delta.seq == 1 || delta.seq.is_multiple_of(snapshot_every.max(1)) {
        Some(follower.snapshot(window.end).encode(signer, key_id)?)
    } else {
        None
    };
    Ok(FeedFiles {
        follower,
        seq: delta.seq,
        delta: bytes,
        snapshot,
        revoked,
    })
}
