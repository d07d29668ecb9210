//! Encounter-token reporting and matching on the phone: the `/v1/tokens` API (a TAN for
//! nonces, uploads at level 0, chained uploads proven by a matched preimage, opt-in research
//! data) and the download of an area's published token files (`docs/token-files.md`), tested
//! against the phone's own check tokens.
//!
//! [`TokenDownloader::sync`] reads each new batch's Golomb-coded filter and confirms its
//! candidates with the batch's bucket files. It fetches the same number of bucket files per
//! batch whether or not it has a candidate, in ascending order, so the CDN cannot tell a phone
//! with a hit from one without. [`TokenDownloader::sync_lists`] reads the raw lists instead
//! (exact, 21 bytes per token). Either way a sync is all or nothing: the position moves, and
//! the state file is rewritten, only when every file of every new batch checked out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use confidant_core::Region;
use confidant_core::encounter::{AttenuationBucket, DurationBucket, Level, Token, TokenHash};
use confidant_core::tokenfile::{
    self, BatchEntry, FileEntry, TOKEN_INDEX_FORMAT, TokenFile, TokenIndex, TokenKind,
};
use gaen::VerifyingKey;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::download::Fetch;
use crate::encounter::EncounterStore;
use crate::state_file::{load_json, save_json};
use crate::{ClientError, http};

/// Bucket files a phone fetches per batch when the batch has buckets.
pub const DEFAULT_COVER: usize = 2;

const STATE_MAGIC: &[u8; 8] = b"CTSTAT\x01\n";

/// A single-use upload right from `POST /v1/tokens/redeem`: 32 bytes, sent as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(pub [u8; 32]);

impl fmt::Debug for Nonce {
    /// Never prints the nonce: it authorises an upload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonce(..)")
    }
}

/// What a TAN was exchanged for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonces {
    /// One upload each.
    pub nonces: Vec<Nonce>,
    /// Unix seconds after which the nonces are refused.
    pub expires_at: u64,
    /// Most token hashes one upload may carry.
    pub max_tokens: u32,
}

/// What `POST /v1/tokens` or `/v1/tokens/chained` stored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReceipt {
    pub tracking_id: String,
    /// Hashes stored by this upload.
    pub accepted: u32,
    /// Hashes already stored, when the server says.
    #[serde(default)]
    pub skipped: u32,
    /// 0 for an upload with a nonce, n + 1 for one chained from a level-n match.
    pub level: Level,
}

/// One opt-in research record: a proven encounter's buckets, nothing that identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contribution {
    /// The matched check token: the server learns day and level from the hash it proves.
    pub preimage: Token,
    pub duration: DurationBucket,
    pub attenuation: AttenuationBucket,
}

impl From<&TokenMatch> for Contribution {
    fn from(found: &TokenMatch) -> Self {
        Self {
            preimage: found.preimage,
            duration: found.duration,
            attenuation: found.attenuation,
        }
    }
}

/// What a diagnosed phone uploads at `now`: `(H(report token), day)` of each encounter of the
/// last 14 days that is not redacted ([`EncounterStore::report_hashes`]), sorted by hash so
/// the order tells nothing about when the encounters happened.
pub fn upload_list(store: &EncounterStore, now: u64) -> Vec<(TokenHash, u32)> {
    let mut tokens = store.report_hashes(now);
    tokens.sort_unstable();
    tokens.dedup_by_key(|(hash, _)| *hash);
    tokens
}

/// What a phone that matched uploads with [`TokenApi::upload_chained`]: [`upload_list`] less
/// the matched encounters, whose other phones reported them (they are diagnosed or already
/// notified, and need no warning back). Pass a sync's matches and its unconfirmed
/// candidates: the latter are the same uploader's encounters but for 2^-fp_bits.
pub fn chained_upload_list(
    store: &EncounterStore,
    now: u64,
    matched: &[TokenMatch],
) -> Vec<(TokenHash, u32)> {
    let skip: std::collections::HashSet<TokenHash> = matched
        .iter()
        .filter_map(|m| store.get(m.encounter_id))
        .map(|e| e.tokens.report.hash())
        .collect();
    let mut tokens = upload_list(store, now);
    tokens.retain(|(hash, _)| !skip.contains(hash));
    tokens
}

/// The phone side of the encounter-token API.
#[derive(Clone, Debug)]
pub struct TokenApi {
    base_url: String,
    client: reqwest::Client,
}

impl TokenApi {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_client(base_url, reqwest::Client::new())
    }

    pub fn with_client(base_url: &str, client: reqwest::Client) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client,
        })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(T, String), ClientError> {
        let url = format!("{}{path}", self.base_url);
        let response = http::send(self.client.post(&url).json(body), &url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &url).await);
        }
        Ok((http::json(response, &url).await?, url))
    }

    /// Exchanges the health authority's TAN for single-use nonces. A wrong TAN is a
    /// [`ClientError::Status`] with the server's problem code.
    pub async fn redeem(&self, tan: &str) -> Result<Nonces, ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Redeemed {
            nonces: Vec<String>,
            expires_at: serde_json::Value,
            max_tokens: u32,
        }
        let (redeemed, url): (Redeemed, _) =
            self.post("/v1/tokens/redeem", &json!({"tan": tan})).await?;
        let unexpected = |reason: String| ClientError::UnexpectedResponse {
            url: url.clone(),
            reason,
        };
        let nonces = redeemed
            .nonces
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text, &mut bytes)
                    .map(|()| Nonce(bytes))
                    .map_err(|_| unexpected(format!("nonce {index} is not 64 hex digits")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expires_at = expiry(&redeemed.expires_at).ok_or_else(|| {
            unexpected(format!(
                "expiresAt {} is neither unix seconds nor an RFC 3339 time",
                redeemed.expires_at
            ))
        })?;
        Ok(Nonces {
            nonces,
            expires_at,
            max_tokens: redeemed.max_tokens,
        })
    }

    /// Uploads `(hash, day)` pairs (see [`upload_list`]) with one nonce, for publication at
    /// level 0 in `area` (a postal code or its prefix; the server coarsens it).
    pub async fn upload(
        &self,
        nonce: &Nonce,
        area: &str,
        tokens: &[(TokenHash, u32)],
    ) -> Result<TokenReceipt, ClientError> {
        let body =
            json!({"nonce": hex::encode(nonce.0), "area": area, "tokens": tokens_json(tokens)});
        Ok(self.post("/v1/tokens", &body).await?.0)
    }

    /// Uploads with the preimage of a matched level-n hash instead of a nonce, for publication
    /// at level n + 1. The server accepts each preimage once.
    pub async fn upload_chained(
        &self,
        preimage: &Token,
        area: &str,
        tokens: &[(TokenHash, u32)],
    ) -> Result<TokenReceipt, ClientError> {
        let body =
            json!({"preimage": preimage.to_hex(), "area": area, "tokens": tokens_json(tokens)});
        Ok(self.post("/v1/tokens/chained", &body).await?.0)
    }

    /// Sends opt-in research records; returns how many the server recorded.
    pub async fn contribute(&self, contributions: &[Contribution]) -> Result<u32, ClientError> {
        #[derive(Deserialize)]
        struct Recorded {
            recorded: u32,
        }
        let contributions: Vec<serde_json::Value> = contributions
            .iter()
            .map(|c| {
                json!({
                    "preimage": c.preimage.to_hex(),
                    "duration": c.duration.code(),
                    "attenuation": c.attenuation.code(),
                })
            })
            .collect();
        let body = json!({ "contributions": contributions });
        let (answer, _): (Recorded, _) = self.post("/v1/research", &body).await?;
        Ok(answer.recorded)
    }
}

fn tokens_json(tokens: &[(TokenHash, u32)]) -> Vec<serde_json::Value> {
    tokens
        .iter()
        .map(|(hash, day)| json!({"hash": hash.to_hex(), "day": day}))
        .collect()
}

/// Unix seconds as a JSON number, or an RFC 3339 time (as the server's other answers write
/// times); `None` for anything else or a time before 1970.
fn expiry(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(text) => rfc3339_to_unix(text),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as unix seconds (the fraction is dropped).
fn rfc3339_to_unix(text: &str) -> Option<u64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (
                digits(text.len() - 5..text.len() - 3)?,
                digits(text.len() - 2..text.len())?,
            );
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid = (1..=12).contains(&month)
        && (1..=month_days[(month as usize).saturating_sub(1).min(11)]).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid {
        return None;
    }
    // Days from 1970-01-01 to the date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second - offset).ok()
}

/// A published hash that one of the phone's encounters explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenMatch {
    /// The encounter's local id ([`crate::Encounter::id`]).
    pub encounter_id: u64,
    /// The encounter's own UTC day (the filter does not carry the uploader's).
    pub day: u32,
    /// The level the hash was published at: a chained upload with this preimage is level + 1.
    pub level: Level,
    /// The encounter's check token, the preimage of the published hash: what
    /// [`TokenApi::upload_chained`] and [`TokenApi::contribute`] prove the encounter with.
    pub preimage: Token,
    pub duration: DurationBucket,
    pub attenuation: AttenuationBucket,
    /// The batch that published the hash.
    pub seq: u64,
}

/// What one sync found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUpdate {
    /// New matches, published and not withdrawn by a later batch of the same sync.
    pub matches: Vec<TokenMatch>,
    /// Matches of earlier syncs that a batch of this sync withdrew.
    pub withdrawn: Vec<TokenMatch>,
    /// Filter candidates whose bucket was not fetched, because the batch had more candidate
    /// buckets than the cover allows. Each is a true match except with probability
    /// 2^-fp_bits; a larger cover confirms them. Not kept across syncs.
    pub unconfirmed: Vec<TokenMatch>,
    /// Batches read.
    pub batches: usize,
    /// Batches the index no longer listed when this phone came to read them: they left the
    /// server's 14-day retention while the phone was away.
    pub expired: u64,
    /// Token files downloaded (the index is not counted).
    pub files: usize,
    /// Bytes downloaded, the index included.
    pub bytes: u64,
}

/// `tokens/{area}/index.json` as fetched from `path`: an index of this client's format for
/// `area`, with strictly ascending batches (seq from 1), `latestSeq` the last of them, and only
/// canonical file names.
pub fn parse_token_index(
    path: &str,
    bytes: &[u8],
    area: &Region,
) -> Result<TokenIndex, ClientError> {
    let unexpected = |reason: String| ClientError::UnexpectedResponse {
        url: path.to_owned(),
        reason,
    };
    let index: TokenIndex =
        serde_json::from_slice(bytes).map_err(|e| unexpected(format!("not a token index: {e}")))?;
    if index.format != TOKEN_INDEX_FORMAT {
        return Err(unexpected(format!(
            "token index format {} (this client reads {TOKEN_INDEX_FORMAT})",
            index.format
        )));
    }
    if index.area != *area {
        return Err(unexpected(format!(
            "the index is for area {}, not {area}",
            index.area
        )));
    }
    let mut last = 0;
    for batch in &index.batches {
        if batch.seq <= last {
            return Err(unexpected(format!(
                "batch {} follows batch {last}: batches ascend from 1",
                batch.seq
            )));
        }
        last = batch.seq;
        // Names come from an unsigned file: only the canonical ones are ever requested.
        for (kind, entry) in [
            (TokenKind::List, &batch.list),
            (TokenKind::Filter, &batch.filter),
        ] {
            let expected = tokenfile::file_name(kind, batch.seq, None);
            if entry.file != expected {
                return Err(unexpected(format!(
                    "the {kind} file of batch {} is named {:?}, expected {expected:?}",
                    batch.seq, entry.file
                )));
            }
        }
    }
    if index.latest_seq != last {
        return Err(unexpected(format!(
            "latestSeq is {}, the last batch listed is {last}",
            index.latest_seq
        )));
    }
    Ok(index)
}

/// What the downloader keeps across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Position {
    /// The last batch read; 0 before the first.
    seq: u64,
    /// Matches still published, so that a later withdrawal can be reported.
    matches: Vec<TokenMatch>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredState {
    area: Region,
    seq: u64,
    matches: Vec<StoredMatch>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMatch {
    encounter_id: u64,
    day: u32,
    level: Level,
    preimage: String,
    duration: u8,
    attenuation: u8,
    seq: u64,
}

impl StoredMatch {
    fn from_match(m: &TokenMatch) -> Self {
        Self {
            encounter_id: m.encounter_id,
            day: m.day,
            level: m.level,
            preimage: m.preimage.to_hex(),
            duration: m.duration.code(),
            attenuation: m.attenuation.code(),
            seq: m.seq,
        }
    }

    fn into_match(self) -> Option<TokenMatch> {
        Some(TokenMatch {
            encounter_id: self.encounter_id,
            day: self.day,
            level: self.level,
            preimage: Token::from_hex(&self.preimage)?,
            duration: DurationBucket::from_code(self.duration)?,
            attenuation: AttenuationBucket::from_code(self.attenuation)?,
            seq: self.seq,
        })
    }
}

/// Which files of a batch a sync reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The filter, confirmed by buckets when the batch has them.
    Filters,
    /// The raw list.
    Lists,
}

/// A phone's encounters as the downloader tests them.
struct Candidate {
    hash: TokenHash,
    found: TokenMatch,
}

/// Download counters of one sync.
#[derive(Default)]
struct Traffic {
    files: usize,
    bytes: u64,
}

/// What one batch said about the phone's candidates, by index into them.
struct BatchResult {
    confirmed: Vec<(usize, Level)>,
    unconfirmed: Vec<(usize, Level)>,
    removed: Vec<TokenHash>,
}

/// Follows one area's published token files (`tokens/{area}/…`) and matches them against the
/// phone's encounters. Every file is checked before anything is used: size and SHA-256 against
/// the index (list and filter files), structure, signature against the pinned key its key id
/// names, kind, area, seq and (for buckets) bucket number. A failed check is a
/// [`ClientError::Tampered`], a hole in the batches a [`ClientError::Gap`]; either leaves the
/// position where it was.
pub struct TokenDownloader<F: Fetch> {
    fetch: F,
    area: Region,
    keys: BTreeMap<String, VerifyingKey>,
    cover: usize,
    rng: Box<dyn RngCore + Send>,
    position: Position,
    state_file: Option<PathBuf>,
}

impl<F: Fetch> fmt::Debug for TokenDownloader<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenDownloader")
            .field("area", &self.area)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("cover", &self.cover)
            .field("seq", &self.position.seq)
            .field("matches", &self.position.matches.len())
            .finish_non_exhaustive()
    }
}

impl<F: Fetch> TokenDownloader<F> {
    /// A downloader for `area` that trusts files signed by `keys` (key id → public key; more
    /// than one across a key rotation).
    pub fn new(
        fetch: F,
        area: Region,
        keys: impl IntoIterator<Item = (String, VerifyingKey)>,
    ) -> Self {
        Self {
            fetch,
            area,
            keys: keys.into_iter().collect(),
            cover: DEFAULT_COVER,
            rng: Box::new(OsRng),
            position: Position::default(),
            state_file: None,
        }
    }

    /// Bucket files fetched per batch that has buckets ([`DEFAULT_COVER`]; at least 1, at most
    /// the batch's number of buckets).
    pub fn with_cover(mut self, cover: usize) -> Self {
        self.cover = cover.max(1);
        self
    }

    /// Where the cover buckets' randomness comes from (the OS by default).
    pub fn with_rng(mut self, rng: impl RngCore + Send + 'static) -> Self {
        self.rng = Box::new(rng);
        self
    }

    /// Keeps the position and the live matches in `path`: loaded now if the file exists,
    /// rewritten atomically after every successful sync. A file for another area, or a damaged
    /// one, is a [`ClientError::CorruptState`].
    pub fn with_state_file(mut self, path: PathBuf) -> Result<Self, ClientError> {
        if let Some(position) = load_state(&path, &self.area)? {
            self.position = position;
        }
        self.state_file = Some(path);
        Ok(self)
    }

    pub fn area(&self) -> &Region {
        &self.area
    }

    /// The last batch read, 0 before the first.
    pub fn seq(&self) -> u64 {
        self.position.seq
    }

    /// Every match found so far that no batch has withdrawn (for encounters still held at the
    /// last sync).
    pub fn matches(&self) -> &[TokenMatch] {
        &self.position.matches
    }

    /// Reads the filter (and buckets) of every batch after the position and returns what
    /// matched the encounters of `store` that are not redacted.
    pub async fn sync(&mut self, store: &EncounterStore) -> Result<TokenUpdate, ClientError> {
        self.sync_from(store, Source::Filters).await
    }

    /// The same, reading the raw list files: exact, no confirmation step, and 21 bytes per
    /// published token instead of about 3.
    pub async fn sync_lists(&mut self, store: &EncounterStore) -> Result<TokenUpdate, ClientError> {
        self.sync_from(store, Source::Lists).await
    }

    async fn sync_from(
        &mut self,
        store: &EncounterStore,
        source: Source,
    ) -> Result<TokenUpdate, ClientError> {
        let mut traffic = Traffic::default();
        let index_path = format!("tokens/{}/index.json", self.area);
        let Some(index_bytes) = self.fetch.get(&index_path).await? else {
            return Ok(TokenUpdate::default());
        };
        traffic.bytes += index_bytes.len() as u64;
        let index = parse_token_index(&index_path, &index_bytes, &self.area)?;
        let gap = |detail: String| ClientError::Gap {
            region: self.area.to_string(),
            detail,
        };
        let seq = self.position.seq;
        if index.latest_seq < seq {
            return Err(gap(format!(
                "the index ends at batch {}, this phone has read up to batch {seq}",
                index.latest_seq
            )));
        }
        let new: Vec<&BatchEntry> = index.batches.iter().filter(|b| b.seq > seq).collect();
        if let Some(pair) = new.windows(2).find(|pair| pair[1].seq != pair[0].seq + 1) {
            return Err(gap(format!(
                "the index lists batch {} after batch {}",
                pair[1].seq, pair[0].seq
            )));
        }
        // Batches before the first listed one have left retention; a phone that never synced
        // starts wherever the index does.
        let expired = match new.first() {
            Some(first) if seq > 0 => first.seq - seq - 1,
            _ => 0,
        };

        // The encounters the phone may match: not redacted, held now.
        let candidates: Vec<Candidate> = store
            .encounters()
            .iter()
            .filter(|e| !e.redacted)
            .map(|e| Candidate {
                hash: e.tokens.check.hash(),
                found: TokenMatch {
                    encounter_id: e.id,
                    day: e.day,
                    level: 0,
                    preimage: e.tokens.check,
                    duration: e.duration,
                    attenuation: e.attenuation,
                    seq: 0,
                },
            })
            .collect();
        let check: Vec<TokenHash> = candidates.iter().map(|c| c.hash).collect();
        let held: BTreeSet<u64> = candidates.iter().map(|c| c.found.encounter_id).collect();

        // Earlier matches of encounters since pruned or redacted are forgotten.
        let mut live: Vec<TokenMatch> = self
            .position
            .matches
            .iter()
            .filter(|m| held.contains(&m.encounter_id))
            .copied()
            .collect();
        let mut update = TokenUpdate {
            expired,
            ..TokenUpdate::default()
        };
        for entry in &new {
            let result = match source {
                Source::Filters => self.read_filter(entry, &check, &mut traffic).await?,
                Source::Lists => self.read_list(entry, &check, &mut traffic).await?,
            };
            // A batch withdraws what earlier batches published; what it adds is disjoint.
            let removed: BTreeSet<TokenHash> = result.removed.into_iter().collect();
            let is_removed = |m: &TokenMatch| removed.contains(&m.preimage.hash());
            update
                .withdrawn
                .extend(live.iter().filter(|m| is_removed(m)));
            live.retain(|m| !is_removed(m));
            update.matches.retain(|m| !is_removed(m));
            update.unconfirmed.retain(|m| !is_removed(m));
            let found = |&(i, level): &(usize, Level)| TokenMatch {
                level,
                seq: entry.seq,
                ..candidates[i].found
            };
            for found in result.confirmed.iter().map(found) {
                let known = |m: &TokenMatch| m.encounter_id == found.encounter_id;
                if !live.iter().any(known) && !update.matches.iter().any(known) {
                    update.matches.push(found);
                }
            }
            update
                .unconfirmed
                .extend(result.unconfirmed.iter().map(found));
            update.batches += 1;
        }
        // An unconfirmed candidate that some batch confirmed, or that matched before, is no news.
        let settled: BTreeSet<u64> = live
            .iter()
            .chain(&update.matches)
            .map(|m| m.encounter_id)
            .collect();
        update
            .unconfirmed
            .retain(|m| !settled.contains(&m.encounter_id));
        let mut listed = BTreeSet::new();
        update.unconfirmed.retain(|m| listed.insert(m.encounter_id));
        update.files = traffic.files;
        update.bytes = traffic.bytes;

        live.extend_from_slice(&update.matches);
        let next = Position {
            seq: new.last().map_or(seq, |entry| entry.seq),
            matches: live,
        };
        if let Some(path) = &self.state_file {
            save_state(path, &self.area, &next)?;
        }
        self.position = next;
        Ok(update)
    }

    /// Fetches one file the index lists and checks it against the entry and the batch.
    async fn fetch_listed(
        &self,
        entry: &FileEntry,
        batch: &BatchEntry,
        kind: TokenKind,
        traffic: &mut Traffic,
    ) -> Result<TokenFile, ClientError> {
        let path = format!("tokens/{}/{}", self.area, entry.file);
        let bytes = self
            .fetch
            .get(&path)
            .await?
            .ok_or_else(|| ClientError::Gap {
                region: self.area.to_string(),
                detail: format!("{path} is listed but not served"),
            })?;
        traffic.files += 1;
        traffic.bytes += bytes.len() as u64;
        if bytes.len() as u64 != entry.bytes {
            return Err(ClientError::tampered(
                &path,
                format!("{} bytes, the index says {}", bytes.len(), entry.bytes),
            ));
        }
        if hex::encode(confidant_core::feed::file_hash(&bytes)) != entry.sha256 {
            return Err(ClientError::tampered(
                &path,
                "its SHA-256 differs from the index's",
            ));
        }
        let file = self.verify(&path, &bytes)?;
        if file.kind() != kind || file.seq != batch.seq {
            return Err(ClientError::tampered(
                &path,
                format!(
                    "a {} file of batch {}, not the {kind} file of batch {}",
                    file.kind(),
                    file.seq,
                    batch.seq
                ),
            ));
        }
        Ok(file)
    }

    fn verify(&self, path: &str, bytes: &[u8]) -> Result<TokenFile, ClientError> {
        let file = tokenfile::verify_with(bytes, |key_id| self.keys.get(key_id))
            .map_err(|e| ClientError::tampered(path, e))?;
        if file.area != self.area {
            return Err(ClientError::tampered(
                path,
                format!("signed for area {}", file.area),
            ));
        }
        Ok(file)
    }

    async fn read_list(
        &self,
        batch: &BatchEntry,
        check: &[TokenHash],
        traffic: &mut Traffic,
    ) -> Result<BatchResult, ClientError> {
        let list = self
            .fetch_listed(&batch.list, batch, TokenKind::List, traffic)
            .await?;
        Ok(BatchResult {
            confirmed: list.filter_candidates(check),
            unconfirmed: Vec::new(),
            removed: list.removed().to_vec(),
        })
    }

    async fn read_filter(
        &mut self,
        batch: &BatchEntry,
        check: &[TokenHash],
        traffic: &mut Traffic,
    ) -> Result<BatchResult, ClientError> {
        let filter = self
            .fetch_listed(&batch.filter, batch, TokenKind::Filter, traffic)
            .await?;
        let candidates = filter.filter_candidates(check);
        let removed = filter.removed().to_vec();
        let bits = filter.bucket_bits();
        if bits == 0 {
            // No confirmation files: the filter's 2^-fp_bits is the false-alarm rate.
            return Ok(BatchResult {
                confirmed: candidates,
                unconfirmed: Vec::new(),
                removed,
            });
        }

        let wanted = self.pick_buckets(bits, &candidates, check);
        let mut confirmed = Vec::new();
        let mut fetched = BTreeSet::new();
        for &bucket in &wanted {
            let name = tokenfile::file_name(TokenKind::Bucket, batch.seq, Some(bucket));
            let path = format!("tokens/{}/{name}", self.area);
            let bytes = self
                .fetch
                .get(&path)
                .await?
                .ok_or_else(|| ClientError::Gap {
                    region: self.area.to_string(),
                    detail: format!(
                        "{path} is not served, though filter {} has buckets",
                        batch.seq
                    ),
                })?;
            traffic.files += 1;
            traffic.bytes += bytes.len() as u64;
            // Not listed in the index: its signature covers area, seq and bucket.
            let file = self.verify(&path, &bytes)?;
            let matches_request = file.kind() == TokenKind::Bucket
                && file.seq == batch.seq
                && file.bucket_bits() == bits
                && file.name() == name;
            if !matches_request {
                return Err(ClientError::tampered(
                    &path,
                    format!(
                        "it is {} of area {}, not bucket {bucket} of batch {} with {bits} bits",
                        file.name(),
                        file.area,
                        batch.seq
                    ),
                ));
            }
            for &(i, _) in &candidates {
                if tokenfile::bucket_of(&check[i], bits) == bucket
                    && let Some(level) = file.confirms(&check[i])
                {
                    confirmed.push((i, level));
                }
            }
            fetched.insert(bucket);
        }
        confirmed.sort_unstable();
        confirmed.dedup_by_key(|(i, _)| *i);
        let mut unconfirmed: Vec<(usize, Level)> = candidates
            .into_iter()
            .filter(|&(i, _)| !fetched.contains(&tokenfile::bucket_of(&check[i], bits)))
            .collect();
        unconfirmed.dedup_by_key(|(i, _)| *i);
        Ok(BatchResult {
            confirmed,
            unconfirmed,
            removed,
        })
    }

    /// Exactly `min(cover, 2^bits)` buckets, ascending: the candidates' buckets first (a random
    /// choice of them if they are more), then random others. Fetching in ascending order hides
    /// which of them the phone needed.
    fn pick_buckets(
        &mut self,
        bits: u8,
        candidates: &[(usize, Level)],
        check: &[TokenHash],
    ) -> Vec<u32> {
        let count = 1u32 << bits;
        let want = self.cover.min(count as usize);
        let mut needed: Vec<u32> = candidates
            .iter()
            .map(|&(i, _)| tokenfile::bucket_of(&check[i], bits))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        shuffle(&mut *self.rng, &mut needed);
        needed.truncate(want);
        let chosen: BTreeSet<u32> = needed.iter().copied().collect();
        let mut others: Vec<u32> = (0..count).filter(|b| !chosen.contains(b)).collect();
        shuffle(&mut *self.rng, &mut others);
        needed.extend(others.into_iter().take(want - chosen.len()));
        needed.sort_unstable();
        needed
    }
}

/// Fisher–Yates, with an index drawn by multiply-shift (bias below 2^-50 for these sizes).
fn shuffle(rng: &mut dyn RngCore, items: &mut [u32]) {
    for i in (1..items.len()).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

fn save_state(path: &Path, area: &Region, position: &Position) -> Result<(), ClientError> {
    let stored = StoredState {
        area: area.clone(),
        seq: position.seq,
        matches: position
            .matches
            .iter()
            .map(StoredMatch::from_match)
            .collect(),
    };
    save_json(path, STATE_MAGIC, &stored)
}

fn load_state(path: &Path, area: &Region) -> Result<Option<Position>, ClientError> {
    let Some(stored): Option<StoredState> = load_json(path, STATE_MAGIC, "a token download state")?
    else {
        return Ok(None);
    };
    if stored.area != *area {
        return Err(ClientError::corrupt(
            path,
            format!("written for area {}, not {area}", stored.area),
        ));
    }
    let matches = stored
        .matches
        .into_iter()
        .enumerate()
        .map(|(index, m)| {
            m.into_match().ok_or_else(|| {
                ClientError::corrupt(
                    path,
                    format!("match {index}: the preimage is 64 hex digits and bucket codes 0-3"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Position {
        seq: stored.seq,
        matches,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_and_unix_seconds_are_expiries() {
        assert_eq!(rfc3339_to_unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_to_unix("2027-01-15T08:00:00Z"), Some(1_800_000_000));
        assert_eq!(
            rfc3339_to_unix("2027-01-15T08:00:00.123456Z"),
            Some(1_800_000_000)
        );
        assert_eq!(
            rfc3339_to_unix("2027-01-15T10:00:00+02:00"),
            Some(1_800_000_000)
        );
        assert_eq!(
            rfc3339_to_unix("2027-01-15T03:30:00-04:30"),
            Some(1_800_000_000)
        );
        assert_eq!(rfc3339_to_unix("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "",
            "2027-01-15 08:00:00Z",
            "2027-01-15T08:00:00",
            "2027-13-15T08:00:00Z",
            "2027-02-29T08:00:00Z",
            "2027-01-15T24:00:00Z",
            "2027-01-15T08:00:00.Z",
            "2027-01-15T08:00:00+2:00",
            "+027-01-15T08:00:00Z",
            "1969-12-31T23:59:59Z",
            "2027-01-15T08:00:00Zjunk",
        ] {
            assert_eq!(rfc3339_to_unix(bad), None, "{bad:?}");
        }
        assert_eq!(expiry(&json!(1_800_000_000u64)), Some(1_800_000_000));
        assert_eq!(expiry(&json!("2027-01-15T08:00:00Z")), Some(1_800_000_000));
        assert_eq!(expiry(&json!(-1)), None);
        assert_eq!(expiry(&json!(null)), None);
    }

    /// A counter "RNG": the picks below must not depend on luck.
    struct Counter(u64);

    impl RngCore for Counter {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand_core::impls::fill_bytes_via_next(self, dest)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn bucket_picks_are_the_candidates_first_and_always_the_cover() {
        struct Nothing;
        impl Fetch for Nothing {
            async fn get(&self, _: &str) -> Result<Option<bytes::Bytes>, ClientError> {
                Ok(None)
            }
        }
        let area = Region::try_from("64".to_owned()).expect("area");
        let mut downloader = TokenDownloader::new(Nothing, area, []).with_rng(Counter(1));
        // Hashes in buckets 0x1, 0x7 and 0xa at 4 bits.
        let check: Vec<TokenHash> = [0x10u8, 0x70, 0xa0]
            .into_iter()
            .map(|b| TokenHash([b; 16]))
            .collect();
        for candidates in [
            vec![],
            vec![(0, 0)],
            vec![(1, 0), (2, 1)],
            vec![(0, 0), (1, 0), (2, 0)],
        ] {
            let wanted: BTreeSet<u32> = candidates
                .iter()
                .map(|&(i, _)| tokenfile::bucket_of(&check[i], 4))
                .collect();
            for _ in 0..20 {
                let picked = downloader.pick_buckets(4, &candidates, &check);
                assert_eq!(picked.len(), DEFAULT_COVER, "{candidates:?}");
                assert!(picked.is_sorted() && picked.windows(2).all(|w| w[0] != w[1]));
                assert!(picked.iter().all(|&b| b < 16));
                if wanted.len() <= DEFAULT_COVER {
                    assert!(
                        wanted.iter().all(|b| picked.contains(b)),
                        "{candidates:?}: {picked:?}"
                    );
                } else {
                    assert!(picked.iter().all(|b| wanted.contains(b)));
                }
            }
        }
        // A cover beyond the bucket count fetches every bucket once.
        let mut all = downloader.with_cover(40);
        assert_eq!(all.pick_buckets(2, &[], &check), [0, 1, 2, 3]);
    }
}
