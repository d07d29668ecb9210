//! Downloading published keys: the native feed (`/feed/{region}/…`, see `docs/feed.md`) and
//! the GAEN export streams (`/exports/{region}/…`), every file checked against a pinned key.
//!
//! Both downloaders work the same way: a sync fetches the (unsigned) index, fetches the files
//! it has not applied yet, verifies each one, and only when all of them check out moves its
//! position and, if it has one, rewrites its state file atomically. A failed sync changes
//! nothing, so it can simply be retried. Where files come from is a [`Fetch`]: HTTP by
//! default, anything else (a simulator's shared cache) when plugged in.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use confidant_core::feed::{self, FeedFile, FeedFollower, FeedIndex, FeedKind, IndexEntry};
use confidant_core::{KeyData, Region, StoredKey};
use gaen::{
    DiagnosisKey, ExportFiles, IntervalNumber, ReportType, RollingPeriod, TransmissionRisk,
    VerifyingKey,
};

use crate::state_file::{PayloadReader, read_checked, write_atomically};
use crate::{ClientError, http};

/// Where files come from: HTTP by default; a simulator can plug in a shared cache.
pub trait Fetch: Send + Sync {
    /// The file at `path` (relative to the server root, e.g. `feed/302/index.json`), or
    /// `Ok(None)` when the server answers 404.
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<Bytes>, ClientError>> + Send;
}

impl<F: Fetch> Fetch for Arc<F> {
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<Bytes>, ClientError>> + Send {
        F::get(self, path)
    }
}

/// Fetches files from a Confidant server over HTTP.
#[derive(Clone, Debug)]
pub struct HttpFetch {
    base_url: String,
    client: reqwest::Client,
}

impl HttpFetch {
    /// A fetcher for the server at `base_url` (`http://` or `https://`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_client(base_url, reqwest::Client::new())
    }

    /// The same with a client of your own (timeouts, proxies, connection pool shared with
    /// the uploads).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client,
        })
    }
}

impl Fetch for HttpFetch {
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<Bytes>, ClientError>> + Send {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let request = self.client.get(&url);
        async move {
            let response = http::send(request, &url).await?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(http::status_error(response, &url).await);
            }
            http::body(response, &url).await.map(Some)
        }
    }
}

/// The net change of the live key set since the previous sync.
#[derive(Clone, Debug, Default)]
pub struct FeedUpdate {
    /// Keys that are live now and were not (or were live with other metadata) before.
    pub added: Vec<DiagnosisKey>,
    /// Keys that were live before and no longer are (withdrawn or expired).
    pub removed: Vec<KeyData>,
    /// Feed files downloaded (snapshots and deltas; the index is not counted).
    pub files: usize,
    /// Bytes downloaded, the index included.
    pub bytes: u64,
}

const FEED_STATE_MAGIC: &[u8; 8] = b"CFSTAT\x01\n";
/// key_data, rolling_start u32, rolling_period u8, transmission_risk u8.
const STATE_KEY_LEN: usize = 16 + 4 + 1 + 1;

/// Follows `/feed/{region}/index.json`: the snapshot, then the deltas after it.
///
/// A client that knows its position applies only the deltas after it, fetching those older
/// than the index's snapshot by name (the server keeps deltas 14 days). It starts over from
/// the index's snapshot when it has no position, when catching up would cost more bytes than
/// the snapshot or a delta is gone, when the index went backwards, or when a delta does
/// not continue its chain (a gap, or another history). A file that fails its checks (size or
/// SHA-256 against the index, structure, signature, region) is a [`ClientError::Tampered`]
/// and nothing is applied.
pub struct FeedDownloader<F: Fetch> {
    fetch: F,
    region: Region,
    key: VerifyingKey,
    /// `None` until the first successful sync.
    position: Option<FeedFollower>,
    state_file: Option<PathBuf>,
}

/// Why the chain could not be followed from the current position.
enum FollowError {
    /// Start over from the snapshot.
    Chain(String),
    Fatal(ClientError),
}

impl From<ClientError> for FollowError {
    fn from(error: ClientError) -> Self {
        Self::Fatal(error)
    }
}

/// Download counters of one sync.
#[derive(Default)]
struct Traffic {
    files: usize,
    bytes: u64,
}

impl<F: Fetch> FeedDownloader<F> {
    pub fn new(fetch: F, region: Region, key: VerifyingKey) -> Self {
        Self {
            fetch,
            region,
            key,
            position: None,
            state_file: None,
        }
    }

    /// Keeps the position in `path`: loaded now if the file exists, rewritten atomically
    /// after every successful sync. A file for another region is refused as corrupt.
    pub fn with_state_file(mut self, path: PathBuf) -> Result<Self, ClientError> {
        self.position = load_feed_state(&path, &self.region)?;
        self.state_file = Some(path);
        Ok(self)
    }

    /// The seq of the last delta applied, `None` before the first sync.
    pub fn seq(&self) -> Option<u64> {
        self.position.as_ref().map(FeedFollower::seq)
    }

    /// The live set: every key currently published in the region, as of the last sync.
    pub fn live_keys(&self) -> Vec<DiagnosisKey> {
        self.position
            .as_ref()
            .map(|p| p.live().values().filter_map(diagnosis_key).collect())
            .unwrap_or_default()
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Brings the live set up to date and returns the net change. Before anything is
    /// published (no index yet) it returns an empty update and keeps no position.
    pub async fn sync(&mut self) -> Result<FeedUpdate, ClientError> {
        let mut traffic = Traffic::default();
        let index_path = format!("feed/{}/index.json", self.region);
        let Some(index_bytes) = self.fetch.get(&index_path).await? else {
            return Ok(FeedUpdate::default());
        };
        traffic.bytes += index_bytes.len() as u64;
        let index = self.parse_index(&index_path, &index_bytes)?;

        // A position behind the snapshot catches up with the deltas the index no longer
        // lists, as long as that costs less than the snapshot: a phone that syncs once a day
        // fetches a day of deltas, not the whole live set.
        let continuing = self
            .position
            .as_ref()
            .filter(|position| position.seq() <= index.latest_seq);
        let next = match continuing {
            Some(position) => match self.follow(position.clone(), &index, &mut traffic).await {
                Ok(next) => next,
                Err(FollowError::Chain(_)) => self.start_over(&index, &mut traffic).await?,
                Err(FollowError::Fatal(error)) => return Err(error),
            },
            None => self.start_over(&index, &mut traffic).await?,
        };

        let update = net_change(self.position.as_ref(), &next, traffic);
        if let Some(path) = &self.state_file {
            save_feed_state(path, &next)?;
        }
        self.position = Some(next);
        Ok(update)
    }

    fn parse_index(&self, path: &str, bytes: &[u8]) -> Result<FeedIndex, ClientError> {
        parse_feed_index(path, bytes, &self.region)
    }

    /// Fetches and checks one file the index lists.
    async fn fetch_file(
        &self,
        entry: &IndexEntry,
        traffic: &mut Traffic,
    ) -> Result<Option<(Bytes, FeedFile)>, ClientError> {
        let path = format!("feed/{}/{}", self.region, entry.file);
        let Some(bytes) = self.fetch.get(&path).await? else {
            return Ok(None);
        };
        traffic.files += 1;
        traffic.bytes += bytes.len() as u64;
        if bytes.len() as u64 != entry.bytes {
            return Err(ClientError::tampered(
                &path,
                format!("{} bytes, the index says {}", bytes.len(), entry.bytes),
            ));
        }
        if hex::encode(feed::file_hash(&bytes)) != entry.sha256 {
            return Err(ClientError::tampered(
                &path,
                "its SHA-256 differs from the index's",
            ));
        }
        let file = feed::verify(&bytes, &self.key).map_err(|e| ClientError::tampered(&path, e))?;
        if file.region != self.region {
            return Err(ClientError::tampered(
                &path,
                format!("signed for region {}", file.region),
            ));
        }
        Ok(Some((bytes, file)))
    }

    /// Fetches a delta older than the index's snapshot, which the index no longer lists, by
    /// its canonical name. Without an index entry, its signature and its place in the chain
    /// (checked when it is applied) vouch for it.
    async fn fetch_unlisted(
        &self,
        seq: u64,
        traffic: &mut Traffic,
    ) -> Result<Option<(Bytes, FeedFile)>, ClientError> {
        let path = format!("feed/{}/{}", self.region, feed::delta_name(seq));
        let Some(bytes) = self.fetch.get(&path).await? else {
            return Ok(None);
        };
        traffic.files += 1;
        traffic.bytes += bytes.len() as u64;
        let file = feed::verify(&bytes, &self.key).map_err(|e| ClientError::tampered(&path, e))?;
        if file.region != self.region || file.kind != FeedKind::Delta || file.seq != seq {
            return Err(ClientError::tampered(
                &path,
                format!("not delta {seq} of region {}", self.region),
            ));
        }
        Ok(Some((bytes, file)))
    }

    /// Applies the deltas after `position` up to the index's latest.
    async fn follow(
        &self,
        mut position: FeedFollower,
        index: &FeedIndex,
        traffic: &mut Traffic,
    ) -> Result<FeedFollower, FollowError> {
        let started_with = traffic.bytes;
        while position.seq() < index.latest_seq {
            let wanted = position.seq() + 1;
            let listed = index.deltas.iter().find(|d| d.seq == wanted);
            let fetched = match (listed, &index.snapshot) {
                (Some(entry), _) => self.fetch_file(entry, traffic).await?,
                (None, Some(snapshot)) if wanted <= snapshot.seq => {
                    if traffic.bytes - started_with > snapshot.bytes {
                        return Err(FollowError::Chain(
                            "catching up costs more than the snapshot".into(),
                        ));
                    }
                    self.fetch_unlisted(wanted, traffic).await?
                }
                (None, _) => {
                    return Err(FollowError::Chain(format!(
                        "the index does not list delta {wanted}"
                    )));
                }
            };
            let Some((bytes, delta)) = fetched else {
                return Err(FollowError::Chain(format!("delta {wanted} is not served")));
            };
            position
                .apply(&bytes, &delta)
                .map_err(|e| FollowError::Chain(e.to_string()))?;
        }
        Ok(position)
    }

    /// Starts from the index's snapshot (or from nothing) and applies every listed delta.
    async fn start_over(
        &self,
        index: &FeedIndex,
        traffic: &mut Traffic,
    ) -> Result<FeedFollower, ClientError> {
        let gap = |detail: String| ClientError::Gap {
            region: self.region.to_string(),
            detail,
        };
        let start = match &index.snapshot {
            None => FeedFollower::new(self.region.clone()),
            Some(entry) => {
                let (_, snapshot) = self.fetch_file(entry, traffic).await?.ok_or_else(|| {
                    gap(format!("snapshot {} is listed but not served", entry.seq))
                })?;
                FeedFollower::from_snapshot(&snapshot)
                    .map_err(|e| ClientError::tampered(&entry.file, e))?
            }
        };
        match self.follow(start, index, traffic).await {
            Ok(position) => Ok(position),
            Err(FollowError::Chain(detail)) => Err(gap(detail)),
            Err(FollowError::Fatal(error)) => Err(error),
        }
    }
}

/// A stored key as a diagnosis key; `None` only for a rolling period outside 1..=144, which
/// the feed decoder and the state file loader both refuse.
fn diagnosis_key(key: &StoredKey) -> Option<DiagnosisKey> {
    let mut diagnosis_key = DiagnosisKey::new(
        gaen::Tek(key.key_data.0),
        IntervalNumber::new(key.rolling_start),
        RollingPeriod::new(key.rolling_period)?,
    );
    diagnosis_key.transmission_risk = TransmissionRisk::new(i64::from(key.transmission_risk)).ok();
    Some(diagnosis_key)
}

fn net_change(before: Option<&FeedFollower>, after: &FeedFollower, traffic: Traffic) -> FeedUpdate {
    let empty = BTreeMap::new();
    let old = before.map_or(&empty, FeedFollower::live);
    let new = after.live();
    FeedUpdate {
        added: new
            .iter()
            .filter(|(data, key)| old.get(data) != Some(key))
            .filter_map(|(_, key)| diagnosis_key(key))
            .collect(),
        removed: old
            .keys()
            .filter(|data| !new.contains_key(data))
            .copied()
            .collect(),
        files: traffic.files,
        bytes: traffic.bytes,
    }
}

fn save_feed_state(path: &Path, position: &FeedFollower) -> Result<(), ClientError> {
    let live = position.live();
    let region = position.region().as_str().as_bytes();
    let mut payload =
        Vec::with_capacity(1 + region.len() + 8 + 32 + 8 + live.len() * STATE_KEY_LEN);
    // A Region is 1..=16 ASCII bytes by construction.
    payload.push(region.len() as u8);
    payload.extend_from_slice(region);
    payload.extend_from_slice(&position.seq().to_le_bytes());
    payload.extend_from_slice(&position.last_hash());
    payload.extend_from_slice(&(live.len() as u64).to_le_bytes());
    for key in live.values() {
        payload.extend_from_slice(&key.key_data.0);
        payload.extend_from_slice(&key.rolling_start.to_le_bytes());
        // Both were range-checked when the key came out of a verified feed file.
        payload.push(key.rolling_period as u8);
        payload.push(key.transmission_risk);
    }
    write_atomically(path, FEED_STATE_MAGIC, &payload)
}

fn load_feed_state(path: &Path, region: &Region) -> Result<Option<FeedFollower>, ClientError> {
    let Some(payload) = read_checked(path, FEED_STATE_MAGIC)? else {
        return Ok(None);
    };
    let mut reader = PayloadReader::new(&payload, path);
    check_region(&mut reader, path, region)?;
    let seq = reader.u64("seq")?;
    let last_hash: [u8; 32] = reader.array("last hash")?;
    let count = reader.count(STATE_KEY_LEN, "key count")?;
    let mut live = Vec::with_capacity(count);
    for _ in 0..count {
        let key_data = KeyData(reader.array("key data")?);
        let rolling_start = reader.u32("rolling start")?;
        let rolling_period = u32::from(reader.u8("rolling period")?);
        let transmission_risk = reader.u8("transmission risk")?;
        if !(1..=144).contains(&rolling_period) || transmission_risk > TransmissionRisk::MAX {
            return Err(ClientError::corrupt(
                path,
                format!("key {key_data} has period {rolling_period}, risk {transmission_risk}"),
            ));
        }
        live.push(StoredKey {
            key_data,
            rolling_start,
            rolling_period,
            transmission_risk,
        });
    }
    reader.finish()?;
    // The follower's own constructor takes a snapshot: describe the saved position as one.
    let saved = FeedFile {
        kind: FeedKind::Snapshot,
        region: region.clone(),
        seq,
        prev: last_hash,
        start: 0,
        end: 0,
        added: live,
        removed: Vec::new(),
    };
    FeedFollower::from_snapshot(&saved)
        .map(Some)
        .map_err(|e| ClientError::corrupt(path, e.to_string()))
}

fn check_region(
    reader: &mut PayloadReader<'_>,
    path: &Path,
    region: &Region,
) -> Result<(), ClientError> {
    let region_len = usize::from(reader.u8("region length")?);
    let saved = reader.take(region_len, "region")?;
    if saved != region.as_str().as_bytes() {
        return Err(ClientError::corrupt(
            path,
            format!(
                "written for region {:?}, not {region}",
                String::from_utf8_lossy(saved)
            ),
        ));
    }
    Ok(())
}

/// `index.json` as fetched from `path`: a feed index of this client's format for `region`
/// that names only canonical feed files.
pub fn parse_feed_index(
    path: &str,
    bytes: &[u8],
    region: &Region,
) -> Result<FeedIndex, ClientError> {
    let unexpected = |reason: String| ClientError::UnexpectedResponse {
        url: path.to_owned(),
        reason,
    };
    let index: FeedIndex =
        serde_json::from_slice(bytes).map_err(|e| unexpected(format!("not a feed index: {e}")))?;
    if index.format != feed::FEED_INDEX_FORMAT {
        return Err(unexpected(format!(
            "feed index format {} (this client reads {})",
            index.format,
            feed::FEED_INDEX_FORMAT
        )));
    }
    if index.region != *region {
        return Err(unexpected(format!(
            "the index is for region {}, not {}",
            index.region, region
        )));
    }
    // Names come from an unsigned file: accept only the canonical ones, so nothing but
    // feed files of this region is ever requested.
    let entries = index.snapshot.iter().map(|s| (FeedKind::Snapshot, s));
    let deltas = index.deltas.iter().map(|d| (FeedKind::Delta, d));
    if let Some((kind, entry)) = entries
        .chain(deltas)
        .find(|(kind, entry)| entry.file != feed::file_name(*kind, entry.seq))
    {
        return Err(unexpected(format!(
            "the {kind} with seq {} is named {:?}, expected {:?}",
            entry.seq,
            entry.file,
            feed::file_name(kind, entry.seq)
        )));
    }
    Ok(index)
}

/// Which export stream to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportStream {
    /// `/exports/{region}/index.txt`: one file per hour.
    Hourly,
    /// `/exports/{region}/daily/index.txt`: one file per UTC day.
    Daily,
}

impl ExportStream {
    fn directory(self, region: &Region) -> String {
        match self {
            Self::Hourly => format!("exports/{region}"),
            Self::Daily => format!("exports/{region}/daily"),
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Hourly => 1,
            Self::Daily => 2,
        }
    }
}

/// What a sync of an export stream brought.
#[derive(Clone, Debug, Default)]
pub struct ExportUpdate {
    /// Keys of the new files (and revised keys other than revocations).
    pub keys: Vec<DiagnosisKey>,
    /// Key data of revised keys with report type REVOKED: withdrawn after publication.
    pub revoked: Vec<KeyData>,
    /// Export zips downloaded (the index is not counted).
    pub files: usize,
    /// Bytes downloaded, the index included.
    pub bytes: u64,
}

const EXPORT_STATE_MAGIC: &[u8; 8] = b"CESTAT\x01\n";

/// Follows `/exports/{region}/index.txt` (or `daily/index.txt`): fetches only the files not
/// seen yet and verifies each one's `export.sig` against the pinned key.
pub struct ExportDownloader<F: Fetch> {
    fetch: F,
    region: Region,
    key: VerifyingKey,
    stream: ExportStream,
    /// Paths already applied that the index still lists.
    seen: BTreeSet<String>,
    state_file: Option<PathBuf>,
}

impl<F: Fetch> ExportDownloader<F> {
    pub fn new(fetch: F, region: Region, key: VerifyingKey, stream: ExportStream) -> Self {
        Self {
            fetch,
            region,
            key,
            stream,
            seen: BTreeSet::new(),
            state_file: None,
        }
    }

    /// Keeps the set of files seen in `path`: loaded now if the file exists, rewritten
    /// atomically after every successful sync.
    pub fn with_state_file(mut self, path: PathBuf) -> Result<Self, ClientError> {
        if let Some(seen) = load_export_state(&path, &self.region, self.stream)? {
            self.seen = seen;
        }
        self.state_file = Some(path);
        Ok(self)
    }

    /// Number of listed files already applied.
    pub fn files_seen(&self) -> usize {
        self.seen.len()
    }

    /// Fetches and verifies the files the index lists that were not applied yet.
    pub async fn sync(&mut self) -> Result<ExportUpdate, ClientError> {
        let directory = self.stream.directory(&self.region);
        let index_path = format!("{directory}/index.txt");
        let Some(listing) = self.fetch.get(&index_path).await? else {
            return Ok(ExportUpdate::default());
        };
        let mut update = ExportUpdate {
            bytes: listing.len() as u64,
            ..ExportUpdate::default()
        };
        let listing =
            std::str::from_utf8(&listing).map_err(|_| ClientError::UnexpectedResponse {
                url: index_path.clone(),
                reason: "the index is not UTF-8 text".into(),
            })?;
        let mut listed = BTreeSet::new();
        for path in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // Paths come from an unsigned file: only zips of this stream's directory.
            let valid = path
                .strip_prefix(&directory)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| {
                    name.ends_with(".zip") && !name.contains('/') && !name.starts_with('.')
                });
            if !valid {
                return Err(ClientError::UnexpectedResponse {
                    url: index_path,
                    reason: format!("{path:?} is not an export of {directory}"),
                });
            }
            listed.insert(path.to_owned());
        }
        for path in listed.iter().filter(|p| !self.seen.contains(*p)) {
            let zip = self
                .fetch
                .get(path)
                .await?
                .ok_or_else(|| ClientError::Gap {
                    region: self.region.to_string(),
                    detail: format!("{path} is listed but not served"),
                })?;
            update.files += 1;
            update.bytes += zip.len() as u64;
            let export = ExportFiles::from_zip(&zip)
                .map_err(|e| ClientError::tampered(path, e))
                .and_then(|files| {
                    files
                        .verify(&self.key)
                        .map_err(|e| ClientError::tampered(path, e))?;
                    files.export().map_err(|e| ClientError::tampered(path, e))
                })?;
            if export.region != self.region.as_str() {
                return Err(ClientError::tampered(
                    path,
                    format!("signed for region {:?}", export.region),
                ));
            }
            update.keys.extend(export.keys);
            for revised in export.revised_keys {
                if revised.report_type == Some(ReportType::Revoked) {
                    update.revoked.push(KeyData(revised.tek.0));
                } else {
                    update.keys.push(revised);
                }
            }
        }
        // Paths are never reused, so forgetting the ones the index dropped loses nothing.
        if let Some(path) = &self.state_file {
            save_export_state(path, &self.region, self.stream, &listed)?;
        }
        self.seen = listed;
        Ok(update)
    }
}

fn save_export_state(
    path: &Path,
    region: &Region,
    stream: ExportStream,
    seen: &BTreeSet<String>,
) -> Result<(), ClientError> {
    let region = region.as_str().as_bytes();
    let mut payload = Vec::new();
    payload.push(region.len() as u8);
    payload.extend_from_slice(region);
    payload.push(stream.code());
    payload.extend_from_slice(&(seen.len() as u64).to_le_bytes());
    for name in seen {
        payload.extend_from_slice(&(name.len() as u32).to_le_bytes());
        payload.extend_from_slice(name.as_bytes());
    }
    write_atomically(path, EXPORT_STATE_MAGIC, &payload)
}

fn load_export_state(
    path: &Path,
    region: &Region,
    stream: ExportStream,
) -> Result<Option<BTreeSet<String>>, ClientError> {
    let Some(payload) = read_checked(path, EXPORT_STATE_MAGIC)? else {
        return Ok(None);
    };
    let mut reader = PayloadReader::new(&payload, path);
    check_region(&mut reader, path, region)?;
    let saved_stream = reader.u8("stream")?;
    if saved_stream != stream.code() {
        return Err(ClientError::corrupt(
            path,
            format!("written for stream {saved_stream}, not {stream:?}"),
        ));
    }
    // Each name takes at least its 4-byte length.
    let count = reader.count(4, "file count")?;
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let len = reader.u32("name length")? as usize;
        let name = reader.take(len, "name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| ClientError::corrupt(path, "a file name is not UTF-8"))?;
        seen.insert(name.to_owned());
    }
    reader.finish()?;
    Ok(Some(seen))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use gaen::SigningKey;
    use rand_core::OsRng;

    use super::*;

    const KEY_ID: &str = "test-key";

    /// A server in memory: what a simulator's shared cache looks like to the downloader.
    #[derive(Default)]
    struct MemoryFiles(Mutex<HashMap<String, Bytes>>);

    impl Fetch for MemoryFiles {
        fn get(
            &self,
            path: &str,
        ) -> impl Future<Output = Result<Option<Bytes>, ClientError>> + Send {
            let found = self.0.lock().expect("lock").get(path).cloned();
            async move { Ok(found) }
        }
    }

    fn region() -> Region {
        Region::try_from("302".to_owned()).expect("region")
    }

    fn key(n: u8) -> StoredKey {
        StoredKey {
            key_data: KeyData([n; 16]),
            rolling_start: 2_900_000 + u32::from(n) * 144,
            rolling_period: 144,
            transmission_risk: 3,
        }
    }

    /// Publishes a history of deltas (each: keys added, keys removed), with a snapshot after
    /// delta `snapshot_at` if given, replacing whatever `files` held.
    fn publish(
        files: &MemoryFiles,
        signer: &SigningKey,
        deltas: Vec<(Vec<u8>, Vec<u8>)>,
        snapshot_at: Option<u64>,
    ) {
        let mut follower = FeedFollower::new(region());
        let mut served = HashMap::new();
        let mut snapshot = None;
        let mut entries = Vec::new();
        for (window, (added, removed)) in deltas.into_iter().enumerate() {
            let end = 1_800_000_000 + 900 * (window as u64 + 1);
            let delta = follower.next_delta(
                end - 900,
                end,
                added.into_iter().map(key).collect(),
                removed.into_iter().map(|n| key(n).key_data).collect(),
            );
            let bytes = delta.encode(signer, KEY_ID).expect("encodes");
            follower.apply(&bytes, &delta).expect("chains");
            entries.push(IndexEntry::describe(&bytes, &delta));
            served.insert(
                format!("feed/302/{}", feed::delta_name(delta.seq)),
                Bytes::from(bytes),
            );
            if snapshot_at == Some(delta.seq) {
                let file = follower.snapshot(end);
                let bytes = file.encode(signer, KEY_ID).expect("encodes");
                snapshot = Some(IndexEntry::describe(&bytes, &file));
                served.insert(
                    format!("feed/302/{}", feed::snapshot_name(file.seq)),
                    Bytes::from(bytes),
                );
            }
        }
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        entries.retain(|e| e.seq > after);
        let index = FeedIndex::new(region(), snapshot, entries);
        served.insert(
            "feed/302/index.json".to_owned(),
            Bytes::from(serde_json::to_vec(&index).expect("json")),
        );
        *files.0.lock().expect("lock") = served;
    }

    fn live(downloader: &FeedDownloader<Arc<MemoryFiles>>) -> BTreeSet<u8> {
        downloader.live_keys().iter().map(|k| k.tek.0[0]).collect()
    }

    #[tokio::test]
    async fn another_history_is_followed_from_its_snapshot() {
        let signer = SigningKey::generate(&mut OsRng);
        let files = Arc::new(MemoryFiles::default());
        publish(
            &files,
            &signer,
            vec![(vec![1], vec![]), (vec![2], vec![])],
            None,
        );
        let mut downloader = FeedDownloader::new(files.clone(), region(), signer.verifying_key());
        let first = downloader.sync().await.expect("syncs");
        assert_eq!((first.added.len(), first.files), (2, 2));
        assert_eq!(downloader.seq(), Some(2));

        // The server's history forks at delta 2: key 3 instead of key 2, then key 4 and the
        // removal of key 1.
        publish(
            &files,
            &signer,
            vec![(vec![1], vec![]), (vec![3], vec![]), (vec![4], vec![1])],
            Some(2),
        );
        let update = downloader.sync().await.expect("starts over");
        let added: BTreeSet<u8> = update.added.iter().map(|k| k.tek.0[0]).collect();
        let removed: BTreeSet<u8> = update.removed.iter().map(|k| k.0[0]).collect();
        assert_eq!(added, BTreeSet::from([3, 4]));
        assert_eq!(removed, BTreeSet::from([1, 2]));
        // Delta 3 (refused: it does not follow our delta 2), the snapshot, delta 3 again.
        assert_eq!(update.files, 3);
        assert_eq!(downloader.seq(), Some(3));
        assert_eq!(live(&downloader), BTreeSet::from([3, 4]));
    }

    #[tokio::test]
    async fn a_client_behind_the_snapshot_catches_up_with_deltas() {
        let signer = SigningKey::generate(&mut OsRng);
        let files = Arc::new(MemoryFiles::default());
        let many: Vec<u8> = (1..=60).collect();
        publish(&files, &signer, vec![(many.clone(), vec![])], None);
        let mut downloader = FeedDownloader::new(files.clone(), region(), signer.verifying_key());
        downloader.sync().await.expect("first sync");
        assert_eq!(downloader.seq(), Some(1));

        // A day later: three more deltas and a snapshot after the third, which the index
        // now starts from.
        let history = vec![
            (many, vec![]),
            (vec![61], vec![]),
            (vec![62], vec![5]),
            (vec![63], vec![]),
            (vec![64], vec![]),
        ];
        publish(&files, &signer, history.clone(), Some(4));
        let update = downloader.sync().await.expect("catches up");
        assert_eq!(
            update.files, 4,
            "deltas 2, 3 and 4 by name, delta 5 from the index"
        );
        let added: BTreeSet<u8> = update.added.iter().map(|k| k.tek.0[0]).collect();
        assert_eq!(added, BTreeSet::from([61, 62, 63, 64]));
        assert_eq!(update.removed.len(), 1);
        assert_eq!(downloader.seq(), Some(5));

        // Had delta 3 been gone, the snapshot would have been the way.
        let mut behind = FeedDownloader::new(files.clone(), region(), signer.verifying_key());
        publish(&files, &signer, history[..1].to_vec(), None);
        behind.sync().await.expect("first sync");
        publish(&files, &signer, history, Some(4));
        files
            .0
            .lock()
            .expect("lock")
            .remove(&format!("feed/302/{}", feed::delta_name(3)));
        let update = behind.sync().await.expect("starts over");
        assert_eq!(update.files, 3, "delta 2, then the snapshot and delta 5");
        assert_eq!(behind.seq(), Some(5));
        assert_eq!(live(&behind), live(&downloader));
    }

    #[tokio::test]
    async fn a_hole_in_the_chain_is_a_gap_and_changes_nothing() {
        let signer = SigningKey::generate(&mut OsRng);
        let files = Arc::new(MemoryFiles::default());
        publish(
            &files,
            &signer,
            vec![(vec![1], vec![]), (vec![2], vec![]), (vec![3], vec![])],
            None,
        );
        let index_path = "feed/302/index.json";
        let mut index: FeedIndex = {
            let served = files.0.lock().expect("lock");
            serde_json::from_slice(&served[index_path]).expect("index")
        };
        index.deltas.remove(1);
        files.0.lock().expect("lock").insert(
            index_path.to_owned(),
            Bytes::from(serde_json::to_vec(&index).expect("json")),
        );
        let mut downloader = FeedDownloader::new(files.clone(), region(), signer.verifying_key());
        let error = downloader.sync().await.expect_err("a gap");
        assert!(
            matches!(&error, ClientError::Gap { detail, .. } if detail.contains("delta 2")),
            "{error}"
        );
        assert_eq!(downloader.seq(), None);
    }

    #[tokio::test]
    async fn files_signed_by_another_key_are_refused_and_state_files_round_trip() {
        let signer = SigningKey::generate(&mut OsRng);
        let impostor = SigningKey::generate(&mut OsRng);
        let files = Arc::new(MemoryFiles::default());
        publish(
            &files,
            &signer,
            vec![(vec![1], vec![]), (vec![2], vec![1])],
            Some(1),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("feed");
        let mut downloader = FeedDownloader::new(files.clone(), region(), signer.verifying_key())
            .with_state_file(state.clone())
            .expect("no state yet");
        downloader.sync().await.expect("syncs");
        let reloaded = FeedDownloader::new(files.clone(), region(), signer.verifying_key())
            .with_state_file(state.clone())
            .expect("state loads");
        assert_eq!(reloaded.seq(), Some(2));
        assert_eq!(live(&reloaded), BTreeSet::from([2]));

        publish(&files, &impostor, vec![(vec![5], vec![])], None);
        let mut stranger = FeedDownloader::new(files.clone(), region(), signer.verifying_key());
        let error = stranger.sync().await.expect_err("wrong key");
        assert!(
            matches!(&error, ClientError::Tampered { file, .. } if file.ends_with("delta-0000000001.cfeed")),
            "{error}"
        );

        let mut bytes = std::fs::read(&state).expect("state");
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&state, bytes).expect("write");
        let corrupt =
            FeedDownloader::new(files, region(), signer.verifying_key()).with_state_file(state);
        assert!(matches!(corrupt, Err(ClientError::CorruptState { .. })));
    }
}
