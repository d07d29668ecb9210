//! The encounter-token protocol in the simulation (`docs/encounter-tokens.md`): every app
//! user's phone runs the client's [`EncounterDetector`] over the broadcast keys it hears,
//! keeps an [`EncounterStore`], uploads [`upload_list`] with a TAN from the simulated health
//! authority, and matches the published token files of the areas it was in.
//!
//! The radio: a phone scans once a minute ([`SCAN_SECONDS`]). In each 10-minute interval of a
//! contact it hears the other phone or not, as in GAEN's model (the same draws), and a heard
//! interval gives one sighting per scan, each with its own attenuation noise.
//!
//! Downloads: phones that download at the same hour share one position per area, as GAEN's
//! sync groups do. Each new batch's filter and bucket files are fetched once per group through
//! the CDN and verified once; each phone's check hashes are tested against the decoded filter
//! (`core::gcs`), and each phone picks its own cover buckets ([`DEFAULT_COVER`], its
//! candidates' first) and pays for them. A phone follows its home area and every area it had a
//! sighting in during the last 14 days.
//!
//! Cost: one X25519 key per phone and epoch it is heard in, one Diffie-Hellman per key pair
//! heard. Both are done per phone, as the phones do them, spread over all cores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use confidant_client::download::Fetch;
use confidant_client::encounter::{
    EPOCH_SECONDS, EncounterDetector, EncounterStore, EphemeralKeys, MAX_GAP_SECONDS, derive,
};
use confidant_client::tokens::{
    DEFAULT_COVER, TokenApi, TokenMatch, chained_upload_list, parse_token_index, upload_list,
};
use confidant_client::{RETENTION_DAYS, unix_day};
use confidant_core::Region;
use confidant_core::encounter::{Level, TokenHash};
use confidant_core::gcs::GcsFilter;
use confidant_core::tokenfile::{self, BatchEntry, FileEntry, TokenBody, TokenFile, TokenKind};
use gaen::VerifyingKey;

use crate::SimError;
use crate::model::{Encounter, HOUR, PersonId, Places, Population, SimSettings};
use crate::report::{GroundTruth, TokenTally};
use crate::rng::SeededRng;
use crate::sniffer::KeyRecord;
use crate::target::{Cdn, EdgeFetch, Server};

/// Seconds between two scans of a phone's radio. Sightings one scan apart cover the time
/// between them, so a contact piece within one epoch must last 6 minutes for its sightings to
/// span the 5 minutes of an encounter.
pub const SCAN_SECONDS: u64 = 60;
/// GAEN's radio model: heard or not per 10-minute interval.
const RADIO_INTERVAL: u64 = 600;
/// Nonces one TAN buys (`core::rules::NONCES_PER_TAN`).
const NONCES_PER_TAN: usize = 3;
/// Hashes one nonce uploads (`core::rules::MAX_TOKENS_PER_UPLOAD`); the server's answer is
/// checked against it.
const MAX_TOKENS_PER_UPLOAD: usize = 10_000;
/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 32;
/// Days an encounter is kept and uploaded: today and the 13 before.
const KEPT_DAYS: u32 = RETENTION_DAYS as u32 - 1;

/// A true contact between two app users while it lasts.
#[derive(Clone, Copy, Debug)]
pub struct Contact {
    pub a: PersonId,
    pub b: PersonId,
    pub start: u64,
    pub end: u64,
    pub attenuation_db: u8,
    pub area: u8,
    /// Bit i of `heard[0]`: `a`'s phone heard `b`'s in the i-th 10-minute interval of the
    /// contact (counted from the interval holding `start`); `heard[1]` the other way.
    pub heard: [u32; 2],
}

/// An app user in a sniffed place for a while: the sniffer records what its phone broadcasts.
#[derive(Clone, Copy, Debug)]
pub struct Stay {
    pub person: PersonId,
    pub place: u32,
    pub start: u64,
    pub end: u64,
}

/// What the sim keeps next to each stored encounter: its check hash (computed once), its day,
/// and the area it happened in (a real phone knows where it was).
#[derive(Clone, Copy, Debug)]
struct Check {
    id: u64,
    hash: TokenHash,
    day: u32,
    area: u8,
}

struct TokenPhone {
    detector: EncounterDetector,
    store: EncounterStore,
    /// One per encounter in `store`, pruned with it.
    checks: Vec<Check>,
    /// Per area: the last unix day the phone had a sighting there (0: never).
    visited: Box<[u32]>,
    home: u8,
    /// Download hour.
    group: u8,
    notified_at: Option<u64>,
    level1_at: Option<u64>,
    /// Uploads whose hashes this phone matched, with when.
    matched: BTreeMap<usize, u64>,
    /// Level-0 matches, for a chained upload.
    found: Vec<TokenMatch>,
    chained: bool,
}

impl TokenPhone {
    fn follows(&self, area: u8, today: u32) -> bool {
        area == self.home || self.visited[area as usize] + KEPT_DAYS >= today
    }

    /// Forgets encounters older than 14 days, as the store does.
    fn prune(&mut self, now: u64) {
        self.store.prune(now);
        let oldest = unix_day(now).saturating_sub(KEPT_DAYS);
        self.checks.retain(|c| c.day >= oldest);
        debug_assert_eq!(self.checks.len(), self.store.len());
    }
}

/// `(H(report token), day)` pairs, as `upload_list` gives them.
type UploadList = Vec<(TokenHash, u32)>;

/// One sighting as the phone's scanner reports it.
#[derive(Clone, Copy)]
struct Heard {
    listener: PersonId,
    area: u8,
    attenuation_db: u8,
    at: u64,
    peer: [u8; 32],
}

/// One upload request: a level-0 upload with a nonce, or a chained one at level 1, of one
/// phone's encounters in one area.
#[derive(Clone, Debug)]
pub struct TokenUpload {
    pub person: PersonId,
    pub area: u8,
    pub level: Level,
    /// One of the hashes it added, to tell when it reached a phone.
    pub first: TokenHash,
}

/// One area: the server's name for it, and the postal-code prefix phones send.
struct Area {
    region: Region,
    prefix: String,
}

/// A sync group's position in one area's batches.
#[derive(Default)]
struct Follower {
    seq: u64,
    /// Uploads to this area not yet seen by this group.
    pending: Vec<usize>,
}

/// A batch's filter, decoded once for every group.
struct Filter {
    bytes: u64,
    /// Per level: the filter and its values, ascending.
    levels: Vec<(Level, GcsFilter, Vec<u64>)>,
    removed: Vec<TokenHash>,
    bucket_bits: u8,
}

impl Filter {
    /// `(index, level)` of the hashes the filter may hold.
    fn candidates<'a>(
        &self,
        hashes: impl Iterator<Item = &'a TokenHash> + Clone,
    ) -> Vec<(usize, Level)> {
        let mut found = Vec::new();
        for (level, filter, values) in &self.levels {
            for (i, hash) in hashes.clone().enumerate() {
                if values.binary_search(&filter.hash_to_range(&hash.0)).is_ok() {
                    found.push((i, *level));
                }
            }
        }
        found
    }
}

/// A batch's bucket file, checked the first time a phone needs its content (most are fetched
/// as cover and only counted).
struct Bucket {
    bytes: bytes::Bytes,
    path: String,
    name: String,
    region: Region,
    seq: u64,
    bits: u8,
    file: std::sync::OnceLock<Result<TokenFile, String>>,
}

impl Bucket {
    /// The file, once it passed a phone's checks: signature, area, batch, bucket and bits.
    fn file(&self, key: &VerifyingKey) -> Result<&TokenFile, SimError> {
        let checked = self.file.get_or_init(|| {
            let file = tokenfile::verify(&self.bytes, key).map_err(|e| e.to_string())?;
            let expected = file.kind() == TokenKind::Bucket
                && file.area == self.region
                && file.seq == self.seq
                && file.bucket_bits() == self.bits
                && file.name() == self.name;
            match expected {
                true => Ok(file),
                false => Err(format!("it is {} of area {}", file.name(), file.area)),
            }
        });
        checked.as_ref().map_err(|why| tampered(&self.path, why))
    }

    /// The level at which the bucket holds `hash`.
    fn confirms(&self, key: &VerifyingKey, hash: &TokenHash) -> Result<Option<Level>, SimError> {
        Ok(self.file(key)?.confirms(hash))
    }
}

/// A batch as a sync reads it.
struct Batch<'a> {
    seq: u64,
    filter: &'a Filter,
    /// By bucket number; empty without buckets.
    buckets: Vec<&'a Bucket>,
}

/// One phone's part of a sync, filled in on a worker thread.
struct PhoneSync<'a> {
    id: PersonId,
    phone: &'a mut TokenPhone,
    bytes: [u64; 3],
    newly: bool,
    newly_level1: bool,
    error: Option<SimError>,
}

pub struct TokenWorld {
    phones: Vec<Option<TokenPhone>>,
    areas: Vec<Area>,
    /// Contacts and sniffed stays still going on.
    active: Vec<Contact>,
    stays: Vec<Stay>,
    pub uploads: Vec<TokenUpload>,
    /// Positive app users who uploaded (level 0), with when; also those with nothing to
    /// upload.
    pub uploaders: BTreeMap<PersonId, u64>,
    /// Every uploaded hash: which upload.
    owner: HashMap<TokenHash, usize>,
    /// By download hour, then area.
    followers: Vec<Vec<Follower>>,
    filters: HashMap<(u8, u64), Filter>,
    buckets: HashMap<(u8, u64, u32), Bucket>,
    /// (download hour, upload) → when that group's sync brought the upload.
    received: HashMap<(u8, usize), u64>,
    cdn: Arc<Cdn>,
    edges: Vec<EdgeFetch>,
    api: TokenApi,
    public_key: VerifyingKey,
    provider: String,
    /// TANs.
    rng: SeededRng,
    /// Attenuation noise per sighting.
    radio: SeededRng,
    noise_db: u8,
    seed: u64,
    chain: bool,
    threads: usize,
    /// Per person: the key it broadcasts in epoch `public_epoch - 1`.
    public: Vec<[u8; 32]>,
    public_epoch: Vec<u64>,
    pub tally: TokenTally,
    origin_counted: u64,
    /// Keys the sniffers recorded.
    sniffed: Vec<KeyRecord>,
}

impl TokenWorld {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &SimSettings,
        population: &Population,
        places: &Places,
        server: &Server,
        provider: String,
        rng: SeededRng,
        radio: SeededRng,
        total_days: usize,
    ) -> Result<Self, SimError> {
        let area_chars = confidant_server::TokenSettings::default().area_chars;
        let areas = (0..settings.areas)
            .map(|a| {
                let prefix = format!("{:02}", 10 + u32::from(a));
                let region = confidant_core::encounter::coarse_area(&prefix, area_chars)
                    .map_err(SimError::Settings)?;
                Ok(Area { region, prefix })
            })
            .collect::<Result<Vec<_>, SimError>>()?;
        let phones = population
            .people
            .iter()
            .enumerate()
            .map(|(id, person)| {
                person.app.then(|| {
                    let mut seed = [0u8; 32];
                    seed[..8].copy_from_slice(&settings.seed.to_le_bytes());
                    seed[8..12].copy_from_slice(&(id as u32).to_le_bytes());
                    seed[16..22].copy_from_slice(b"tokens");
                    TokenPhone {
                        detector: EncounterDetector::new(EphemeralKeys::from_seed(seed)),
                        store: EncounterStore::new(),
                        checks: Vec::new(),
                        visited: vec![0; areas.len()].into_boxed_slice(),
                        home: places.home_area(population, id as PersonId),
                        group: person.sync_hour,
                        notified_at: None,
                        level1_at: None,
                        matched: BTreeMap::new(),
                        found: Vec::new(),
                        chained: false,
                    }
                })
            })
            .collect();
        let cdn = Cdn::new(&server.url)?;
        let edges = (0..24).map(|_| cdn.edge()).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Ok(Self {
            phones,
            followers: (0..24)
                .map(|_| (0..areas.len()).map(|_| Follower::default()).collect())
                .collect(),
            areas,
            active: Vec::new(),
            stays: Vec::new(),
            uploads: Vec::new(),
            uploaders: BTreeMap::new(),
            owner: HashMap::new(),
            filters: HashMap::new(),
            buckets: HashMap::new(),
            received: HashMap::new(),
            cdn,
            edges,
            api: TokenApi::with_client(&server.url, server.http.clone())?,
            public_key: server.public_key.clone(),
            provider,
            rng,
            radio,
            noise_db: settings.attenuation_noise_db,
            seed: settings.seed,
            chain: settings.chain,
            threads,
            public: vec![[0; 32]; population.people.len()],
            public_epoch: vec![0; population.people.len()],
            tally: TokenTally::new(total_days),
            origin_counted: 0,
            sniffed: Vec::new(),
        })
    }

    /// The areas' names, as the server publishes them.
    pub fn regions(&self) -> Vec<Region> {
        self.areas.iter().map(|a| a.region.clone()).collect()
    }

    pub fn add_contact(&mut self, contact: Contact) {
        self.active.push(contact);
    }

    pub fn add_stay(&mut self, stay: Stay) {
        self.stays.push(stay);
    }

    /// The hour from `start`: its four epochs, one after the other. Needs nothing from the
    /// server, so the simulation runs it while the server publishes the next hour.
    pub fn hour(&mut self, start: u64, day: usize) {
        for epoch in start / EPOCH_SECONDS..(start + HOUR) / EPOCH_SECONDS {
            self.epoch(epoch, day);
        }
    }

    /// What the sniffers recorded of the token phones' broadcasts.
    pub fn take_sniffed(&mut self) -> Vec<KeyRecord> {
        std::mem::take(&mut self.sniffed)
    }

    /// One epoch: phones that someone hears broadcast their key of the epoch, phones hear
    /// each other once a scan, and the epoch's encounters (complete once it has ended) go
    /// into the stores.
    fn epoch(&mut self, epoch: u64, day: usize) {
        let (e0, e1) = (epoch * EPOCH_SECONDS, (epoch + 1) * EPOCH_SECONDS);
        let stamp = epoch + 1;
        let today = unix_day(e0);

        // Who broadcasts to a phone or a sniffer in this epoch.
        let mut speakers = Vec::new();
        {
            let public_epoch = &mut self.public_epoch;
            let mut speaks = |id: PersonId| {
                if public_epoch[id as usize] != stamp {
                    public_epoch[id as usize] = stamp;
                    speakers.push(id);
                }
            };
            for c in &self.active {
                let Some(bits) = overlap_bits(c, e0, e1) else {
                    continue;
                };
                if c.heard[0] & bits != 0 {
                    speaks(c.b);
                }
                if c.heard[1] & bits != 0 {
                    speaks(c.a);
                }
            }
            for s in &self.stays {
                if s.start < e1 && s.end > e0 {
                    speaks(s.person);
                }
            }
        }
        speakers.sort_unstable();
        let mut keys: Vec<(&mut TokenPhone, [u8; 32])> = select(&mut self.phones, &speakers)
            .into_iter()
            .map(|phone| (phone, [0; 32]))
            .collect();
        in_parallel(&mut keys, self.threads, |(phone, public)| {
            *public = phone.detector.broadcast(e0);
        });
        self.tally.keys_broadcast += keys.len() as u64;
        for (&id, (_, public)) in speakers.iter().zip(&keys) {
            self.public[id as usize] = *public;
        }
        drop(keys);

        // What each phone hears, scan by scan.
        let mut heards = Vec::new();
        let noise = i16::from(self.noise_db);
        for c in &self.active {
            let Some(bits) = overlap_bits(c, e0, e1) else {
                continue;
            };
            let (from, to) = (c.start.max(e0), c.end.min(e1));
            let base = c.start / RADIO_INTERVAL;
            for (heard, listener, speaker) in [(c.heard[0], c.a, c.b), (c.heard[1], c.b, c.a)] {
                if heard & bits == 0 {
                    continue;
                }
                let peer = self.public[speaker as usize];
                let mut at = from;
                while at < to {
                    if heard >> (at / RADIO_INTERVAL - base) & 1 == 1 {
                        let measured = i16::from(c.attenuation_db)
                            + (self.radio.below((2 * noise + 1) as u64) as i16 - noise);
                        heards.push(Heard {
                            listener,
                            area: c.area,
                            attenuation_db: measured.clamp(0, 255) as u8,
                            at,
                            peer,
                        });
                    }
                    at += SCAN_SECONDS;
                }
            }
        }
        heards.sort_by_key(|h| h.listener);
        let mut listeners = Vec::new();
        let mut runs = Vec::new();
        let mut rest = &heards[..];
        while let Some(first) = rest.first() {
            let len = rest.partition_point(|h| h.listener == first.listener);
            listeners.push(first.listener);
            runs.push(&rest[..len]);
            rest = &rest[len..];
        }
        let mut work: Vec<(&mut TokenPhone, &[Heard], Observed)> =
            select(&mut self.phones, &listeners)
                .into_iter()
                .zip(runs)
                .map(|(phone, run)| (phone, run, Observed::default()))
                .collect();
        in_parallel(&mut work, self.threads, |(phone, run, counts)| {
            *counts = observe(phone, run, e1, today);
        });
        for (_, _, seen) in &work {
            self.tally.encounters[day] += seen.stored;
            self.tally.mixed_epochs += u64::from(seen.mixed);
            self.tally.pairs_derived += seen.fed;
            self.tally.pairs_too_short += seen.short;
        }
        drop(work);

        for s in &self.stays {
            if s.start < e1 && s.end > e0 {
                self.sniffed.push(KeyRecord {
                    place: s.place,
                    epoch,
                    person: s.person,
                    public: self.public[s.person as usize],
                });
            }
        }
        self.active.retain(|c| c.end > e1);
        self.stays.retain(|s| s.end > e1);
    }

    /// Positive app users upload their encounters of the last 14 days, split by the area each
    /// happened in, with TANs the health authority imported an hour before.
    pub async fn upload(
        &mut self,
        server: &Server,
        now: u64,
        day: usize,
        due: &[PersonId],
    ) -> Result<(), SimError> {
        let mut plans = Vec::new();
        for &id in due {
            let Some(phone) = self.phones[id as usize].as_ref() else {
                continue;
            };
            self.uploaders.insert(id, now);
            self.tally.uploads[day] += 1;
            let by_area = split_by_area(phone, upload_list(&phone.store, now));
            if by_area.is_empty() {
                self.tally.empty_uploads += 1;
                continue;
            }
            let requests: usize = by_area
                .values()
                .map(|tokens| tokens.len().div_ceil(MAX_TOKENS_PER_UPLOAD))
                .sum();
            let tans: Vec<String> = (0..requests.div_ceil(NONCES_PER_TAN))
                .map(|_| format!("SIM{:016X}", self.rng.next_u64()))
                .collect();
            plans.push((id, tans, by_area));
        }
        if plans.is_empty() {
            return Ok(());
        }
        let tans: Vec<String> = plans.iter().flat_map(|(_, t, _)| t.clone()).collect();
        server.import_tans(&self.provider, &tans).await?;
        self.count_api(day, 1);
        for chunk in plans.chunks(UPLOAD_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for (id, tans, by_area) in chunk.iter().cloned() {
                let api = self.api.clone();
                let postal =
                    |area: u8| format!("{}{:03}", self.areas[area as usize].prefix, id % 1000);
                let requests: Vec<(u8, String, UploadList)> = by_area
                    .into_iter()
                    .flat_map(|(area, tokens)| {
                        let postal = postal(area);
                        tokens
                            .chunks(MAX_TOKENS_PER_UPLOAD)
                            .map(|part| (area, postal.clone(), part.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                tasks.spawn(async move {
                    let mut nonces = Vec::new();
                    for tan in &tans {
                        let redeemed = api.redeem(tan).await?;
                        if (redeemed.max_tokens as usize) < MAX_TOKENS_PER_UPLOAD {
                            return Err(SimError::Server(format!(
                                "a nonce uploads {} hashes, the simulation plans for {MAX_TOKENS_PER_UPLOAD}",
                                redeemed.max_tokens
                            )));
                        }
                        nonces.extend(redeemed.nonces);
                    }
                    let mut done = Vec::new();
                    for ((area, postal, tokens), nonce) in requests.into_iter().zip(&nonces) {
                        let receipt = api.upload(nonce, &postal, &tokens).await?;
                        done.push((area, tokens, receipt));
                    }
                    Ok::<_, SimError>((id, tans.len(), done))
                });
            }
            let mut results = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                results.push(
                    joined.map_err(|e| {
                        SimError::Server(format!("a token upload task failed: {e}"))
                    })??,
                );
            }
            results.sort_by_key(|(id, _, _)| *id);
            for (id, redemptions, done) in results {
                self.count_api(day, (redemptions + done.len()) as u64);
                for (area, tokens, receipt) in done {
                    self.tally.tokens_skipped += u64::from(receipt.skipped);
                    self.record(id, (day, area, 0), &tokens, receipt.accepted);
                }
            }
        }
        Ok(())
    }

    /// Records an accepted upload. Hashes the server already held (a phone that chained its
    /// encounters at level 1 and then reports them at level 0) stay with their first upload;
    /// an upload of nothing new is no upload.
    fn record(
        &mut self,
        person: PersonId,
        (day, area, level): (usize, u8, Level),
        tokens: &[(TokenHash, u32)],
        accepted: u32,
    ) {
        self.tally.tokens_uploaded[day] += u64::from(accepted);
        let index = self.uploads.len();
        let mut first = None;
        for (hash, _) in tokens {
            if let std::collections::hash_map::Entry::Vacant(entry) = self.owner.entry(*hash) {
                entry.insert(index);
                first.get_or_insert(*hash);
            }
        }
        let Some(first) = first else {
            return;
        };
        for group in &mut self.followers {
            group[area as usize].pending.push(index);
        }
        self.uploads.push(TokenUpload {
            person,
            area,
            level,
            first,
        });
    }

    fn count_api(&mut self, day: usize, requests: u64) {
        self.tally.api_requests += requests;
        self.tally.api_requests_per_day[day] += requests;
    }

    /// The phones that download at `hour`: each area's new batches are fetched once for the
    /// group, each phone tests its check hashes and fetches its cover buckets, and a match
    /// notifies. Returns the phones newly notified at level 0, ascending.
    pub async fn sync(
        &mut self,
        hour: u8,
        now: u64,
        day: usize,
    ) -> Result<Vec<PersonId>, SimError> {
        let today = unix_day(now);
        let mut members = 0;
        for phone in self.phones.iter_mut().flatten() {
            if phone.group == hour {
                phone.prune(now);
                members += 1;
            }
        }
        self.tally.phone_syncs[day] += members;
        let mut newly = BTreeSet::new();
        for area in 0..self.areas.len() as u8 {
            let region = self.areas[area as usize].region.clone();
            let edge = self.edges[hour as usize].clone();
            let path = format!("tokens/{region}/index.json");
            let Some(bytes) = edge.get(&path).await? else {
                continue;
            };
            let index_bytes = bytes.len() as u64;
            let index = parse_token_index(&path, &bytes, &region)?;
            let seq = self.followers[hour as usize][area as usize].seq;
            let new: Vec<&BatchEntry> = index.batches.iter().filter(|b| b.seq > seq).collect();
            for entry in &new {
                self.load_batch(&edge, area, &region, entry).await?;
            }
            if let Some(last) = new.last() {
                self.followers[hour as usize][area as usize].seq = last.seq;
            }
            let batches: Vec<Batch<'_>> = new
                .iter()
                .map(|entry| {
                    let filter = &self.filters[&(area, entry.seq)];
                    let buckets = (0..bucket_count(filter.bucket_bits))
                        .map(|b| &self.buckets[&(area, entry.seq, b)])
                        .collect();
                    Batch {
                        seq: entry.seq,
                        filter,
                        buckets,
                    }
                })
                .collect();

            // Which uploads this group's sync brought.
            let follower = &mut self.followers[hour as usize][area as usize];
            let uploads = &self.uploads;
            let key = &self.public_key;
            let mut arrived = Vec::new();
            for &u in &follower.pending {
                for batch in &batches {
                    if confirms(batch, key, &uploads[u].first)?.is_some() {
                        arrived.push(u);
                        break;
                    }
                }
            }
            follower.pending.retain(|u| !arrived.contains(u));
            for u in arrived {
                self.received.insert((hour, u), now);
            }

            let ids: Vec<PersonId> = self
                .phones
                .iter()
                .enumerate()
                .filter_map(|(id, phone)| {
                    phone
                        .as_ref()
                        .filter(|p| p.group == hour && p.follows(area, today))
                        .map(|_| id as PersonId)
                })
                .collect();
            let mut work: Vec<PhoneSync<'_>> = select(&mut self.phones, &ids)
                .into_iter()
                .zip(&ids)
                .map(|(phone, &id)| PhoneSync {
                    id,
                    phone,
                    bytes: [index_bytes, 0, 0],
                    newly: false,
                    newly_level1: false,
                    error: None,
                })
                .collect();
            let owner = &self.owner;
            let seed = self.seed;
            in_parallel(&mut work, self.threads, |sync| {
                let seed = seed ^ u64::from(area) << 56;
                if let Err(e) = match_phone(sync, &batches, owner, uploads, key, now, seed) {
                    sync.error = Some(e);
                }
            });
            if let Some(error) = work.iter_mut().find_map(|sync| sync.error.take()) {
                return Err(error);
            }
            for sync in &work {
                for (total, part) in [
                    &mut self.tally.index_bytes[day],
                    &mut self.tally.filter_bytes[day],
                    &mut self.tally.bucket_bytes[day],
                ]
                .into_iter()
                .zip(sync.bytes)
                {
                    *total += part;
                }
                self.tally.bytes[day] += sync.bytes.iter().sum::<u64>();
                if sync.newly {
                    newly.insert(sync.id);
                }
                if sync.newly_level1 {
                    self.tally.level1_notifications[day] += 1;
                }
            }
        }
        self.tally.notifications[day] += newly.len() as u64;
        let newly: Vec<PersonId> = newly.into_iter().collect();
        if self.chain {
            self.chain_uploads(&newly, now, day).await?;
        }
        Ok(newly)
    }

    /// Fetches a batch's filter and bucket files through the group's edge, verifying and
    /// decoding each file the first time any group reads it.
    async fn load_batch(
        &mut self,
        edge: &EdgeFetch,
        area: u8,
        region: &Region,
        entry: &BatchEntry,
    ) -> Result<(), SimError> {
        let path = format!("tokens/{region}/{}", entry.filter.file);
        let bytes = fetch(edge, &path).await?;
        if !self.filters.contains_key(&(area, entry.seq)) {
            let file = self.verified(&path, &bytes, &entry.filter, region, entry.seq)?;
            let TokenBody::Filter {
                levels,
                removed,
                bucket_bits,
            } = file.body
            else {
                return Err(tampered(&path, "not a filter file"));
            };
            let levels = levels
                .into_iter()
                .map(|level| {
                    let values = level
                        .filter
                        .values()
                        .map_err(|e| tampered(&path, &e.to_string()))?;
                    Ok((level.level, level.filter, values))
                })
                .collect::<Result<Vec<_>, SimError>>()?;
            self.filters.insert(
                (area, entry.seq),
                Filter {
                    bytes: bytes.len() as u64,
                    levels,
                    removed,
                    bucket_bits,
                },
            );
        }
        let bits = self.filters[&(area, entry.seq)].bucket_bits;
        for bucket in 0..bucket_count(bits) {
            let name = tokenfile::file_name(TokenKind::Bucket, entry.seq, Some(bucket));
            let path = format!("tokens/{region}/{name}");
            let bytes = fetch(edge, &path).await?;
            self.buckets
                .entry((area, entry.seq, bucket))
                .or_insert_with(|| Bucket {
                    bytes,
                    path,
                    name,
                    region: region.clone(),
                    seq: entry.seq,
                    bits,
                    file: std::sync::OnceLock::new(),
                });
        }
        Ok(())
    }

    /// The checks a phone makes on a token file: size and SHA-256 against the index (for
    /// listed files), signature, area and batch.
    fn verified(
        &self,
        path: &str,
        bytes: &[u8],
        entry: &FileEntry,
        region: &Region,
        seq: u64,
    ) -> Result<TokenFile, SimError> {
        let sha = hex::encode(confidant_core::feed::file_hash(bytes));
        if bytes.len() as u64 != entry.bytes || sha != entry.sha256 {
            return Err(tampered(path, "size or SHA-256 differ from the index"));
        }
        let file = tokenfile::verify(bytes, &self.public_key)
            .map_err(|e| tampered(path, &e.to_string()))?;
        if file.area != *region || file.seq != seq {
            return Err(tampered(path, "signed for another area or batch"));
        }
        Ok(file)
    }

    /// Phones notified at level 0 upload their other encounters with a matched preimage, one
    /// preimage per area, for publication at level 1.
    async fn chain_uploads(
        &mut self,
        newly: &[PersonId],
        now: u64,
        day: usize,
    ) -> Result<(), SimError> {
        let mut plans = Vec::new();
        for &id in newly {
            let Some(phone) = self.phones[id as usize].as_mut() else {
                continue;
            };
            if phone.chained {
                continue;
            }
            phone.chained = true;
            let list = chained_upload_list(&phone.store, now, &phone.found);
            let mut by_area: Vec<(u8, Vec<(TokenHash, u32)>)> =
                split_by_area(phone, list).into_iter().collect();
            // The largest first: a phone proves as many areas as it has matched preimages.
            by_area.sort_by_key(|(area, tokens)| (std::cmp::Reverse(tokens.len()), *area));
            let mut preimages: Vec<_> = phone.found.iter().map(|m| m.preimage).collect();
            preimages.dedup();
            for ((area, tokens), preimage) in by_area.into_iter().zip(preimages) {
                let tokens: Vec<_> = tokens.into_iter().take(MAX_TOKENS_PER_UPLOAD).collect();
                let postal = format!("{}{:03}", self.areas[area as usize].prefix, id % 1000);
                plans.push((id, area, postal, preimage, tokens));
            }
        }
        for chunk in plans.chunks(UPLOAD_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for (order, (_, _, postal, preimage, tokens)) in chunk.iter().cloned().enumerate() {
                let api = self.api.clone();
                tasks.spawn(async move {
                    (order, api.upload_chained(&preimage, &postal, &tokens).await)
                });
            }
            let mut results = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                results.push(
                    joined.map_err(|e| {
                        SimError::Server(format!("a chained upload task failed: {e}"))
                    })?,
                );
            }
            results.sort_by_key(|(order, _)| *order);
            for (order, result) in results {
                self.count_api(day, 1);
                let (id, area, _, _, tokens) = &chunk[order];
                match result {
                    Ok(receipt) => {
                        self.tally.chained_uploads[day] += 1;
                        self.record(*id, (day, *area, receipt.level), tokens, receipt.accepted);
                    }
                    // The server refuses a proof it does not accept (a withdrawn token, a
                    // used preimage): counted, and the run goes on.
                    Err(confidant_client::ClientError::Status {
                        status: 400..=499, ..
                    }) => {
                        self.tally.chained_refused += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Origin requests since the last call go to `day`.
    pub fn end_hour(&mut self, day: usize) {
        let origin = self
            .cdn
            .origin_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        self.tally.file_requests_per_day[day] += origin - self.origin_counted;
        self.origin_counted = origin;
        self.tally.origin_requests = origin;
    }

    /// Who was truly exposed under the token rule, from the true contacts: app users with a
    /// piece of contact with an uploader, within one 15-minute epoch, whose scans (once a
    /// minute, every one heard) span at least 5 minutes, before the upload and within the 14
    /// days it covers; against the phones notified at level 0.
    pub fn ground_truth(
        &self,
        population: &Population,
        places: &Places,
        contacts: &[Encounter],
    ) -> GroundTruth {
        let mut subs: HashMap<(PersonId, u8), usize> = HashMap::new();
        for (index, upload) in self.uploads.iter().enumerate() {
            if upload.level == 0 {
                subs.entry((upload.person, upload.area)).or_insert(index);
            }
        }
        // Scan times of contacts with an uploader, by pair and epoch.
        let mut pieces: HashMap<(PersonId, PersonId, u64), Vec<(u64, u8)>> = HashMap::new();
        for contact in contacts {
            if !self.uploaders.contains_key(&contact.a) && !self.uploaders.contains_key(&contact.b)
            {
                continue;
            }
            let area = places.area_of(population, contact);
            let pair = (contact.a.min(contact.b), contact.a.max(contact.b));
            let end = contact.start + u64::from(contact.seconds);
            for at in (contact.start..end).step_by(SCAN_SECONDS as usize) {
                pieces
                    .entry((pair.0, pair.1, at / EPOCH_SECONDS))
                    .or_default()
                    .push((at, area));
            }
        }
        // (exposed, uploader, area) → the latest day of a qualifying piece.
        let mut exposures: HashMap<(PersonId, PersonId, u8), u32> = HashMap::new();
        for ((p, q, epoch), mut times) in pieces {
            times.sort_unstable();
            if covered_seconds(times.iter().map(|(t, _)| *t)) < MIN_COVERED_SECONDS {
                continue;
            }
            let (first, area) = times[0];
            let piece_day = unix_day(first);
            let epoch_end = (epoch + 1) * EPOCH_SECONDS;
            for (uploader, exposed) in [(p, q), (q, p)] {
                let Some(&at) = self.uploaders.get(&uploader) else {
                    continue;
                };
                if epoch_end > at || piece_day + KEPT_DAYS < unix_day(at) {
                    continue;
                }
                let latest = exposures.entry((exposed, uploader, area)).or_insert(0);
                *latest = (*latest).max(piece_day);
            }
        }
        let mut truth = GroundTruth::default();
        let mut exposed_by: HashMap<PersonId, Vec<PersonId>> = HashMap::new();
        for (&(person, uploader, area), &latest) in &exposures {
            let phone = self.phones[person as usize]
                .as_ref()
                .expect("contacts are between app users");
            let arrived = match subs.get(&(uploader, area)) {
                Some(&sub) => match self.received.get(&(phone.group, sub)) {
                    Some(&arrived) => Some(arrived),
                    None => {
                        truth.never_arrived += 1;
                        continue;
                    }
                },
                // The uploader's phone recorded nothing of it there: a miss of the radio.
                None => None,
            };
            if arrived.is_some_and(|arrived| latest + KEPT_DAYS < unix_day(arrived)) {
                truth.forgotten += 1;
                continue;
            }
            exposed_by.entry(person).or_default().push(uploader);
        }
        let exposed: BTreeSet<PersonId> = exposed_by.keys().copied().collect();
        let notified: BTreeSet<PersonId> = self
            .phones
            .iter()
            .enumerate()
            .filter_map(|(id, phone)| {
                let phone = phone.as_ref()?;
                let direct = phone
                    .matched
                    .keys()
                    .any(|&index| self.uploads[index].level == 0);
                direct.then_some(id as PersonId)
            })
            .collect();
        truth.exposed = exposed.len();
        truth.notified = notified.len();
        truth.true_positives = exposed.intersection(&notified).count();
        for &id in exposed.intersection(&notified) {
            let phone = self.phones[id as usize]
                .as_ref()
                .expect("notified phones exist");
            let notified_at = phone.notified_at.unwrap_or(0);
            let first_upload = exposed_by[&id]
                .iter()
                .map(|uploader| self.uploaders[uploader])
                .min()
                .unwrap_or(notified_at);
            truth
                .delays_hours
                .push(notified_at.saturating_sub(first_upload) as f64 / 3600.0);
        }
        truth.missed = exposed.difference(&notified).copied().collect();
        truth.false_alarms = notified.difference(&exposed).copied().collect();
        truth
    }

    /// Phones notified at level 0, and phones with a level-1 match (of whom how many had no
    /// level-0 match).
    pub fn notified(&self) -> (BTreeSet<PersonId>, usize, usize) {
        let mut direct = BTreeSet::new();
        let (mut level1, mut level1_only) = (0, 0);
        for (id, phone) in self.phones.iter().enumerate() {
            let Some(phone) = phone else { continue };
            if phone.notified_at.is_some() {
                direct.insert(id as PersonId);
            }
            if phone.level1_at.is_some() {
                level1 += 1;
                if phone.notified_at.is_none() {
                    level1_only += 1;
                }
            }
        }
        (direct, level1, level1_only)
    }
}

/// A pair heard for less than this (by the spread of its sightings) is no encounter.
const MIN_COVERED_SECONDS: u64 = confidant_client::encounter::MIN_ENCOUNTER_SECONDS;

/// The coverage rule of `docs/encounter-tokens.md` ("Encounters", rule 2), applied to sorted
/// times: consecutive times at most 2 minutes apart cover the time between them.
fn covered_seconds(times: impl Iterator<Item = u64>) -> u64 {
    let mut covered = 0;
    let mut last: Option<u64> = None;
    for at in times {
        if let Some(previous) = last
            && at - previous <= MAX_GAP_SECONDS
        {
            covered += at - previous;
        }
        last = Some(at);
    }
    covered
}

/// The radio intervals of `c` that overlap the epoch `[e0, e1)`, as a bit mask; `None` when
/// the contact is not on during the epoch.
fn overlap_bits(c: &Contact, e0: u64, e1: u64) -> Option<u32> {
    if c.start >= e1 || c.end <= e0 {
        return None;
    }
    let (from, to) = (c.start.max(e0), c.end.min(e1));
    let base = c.start / RADIO_INTERVAL;
    let (first, last) = (
        from / RADIO_INTERVAL - base,
        (to - 1) / RADIO_INTERVAL - base,
    );
    let bits = (first..=last).fold(0u32, |acc, i| acc | 1 << i);
    Some(bits)
}

/// What one phone's epoch brought.
#[derive(Clone, Copy, Default)]
struct Observed {
    /// Encounters stored.
    stored: u64,
    /// Peers heard long enough to be fed to the detector (each one Diffie-Hellman), and peers
    /// heard too briefly.
    fed: u64,
    short: u64,
    /// Heard in more than one area.
    mixed: bool,
}

/// Feeds a phone its sightings of one epoch and stores the encounters the epoch's end
/// completes.
///
/// A peer whose sightings span less than 5 minutes is not fed: the detector would derive the
/// pair's tokens (a Diffie-Hellman) and then drop it by the same rule ([`covered_seconds`]), so
/// the encounters are the same without it.
fn observe(phone: &mut TokenPhone, run: &[Heard], e1: u64, today: u32) -> Observed {
    for heard in run {
        phone.visited[heard.area as usize] = today;
    }
    let mut run = run.to_vec();
    run.sort_unstable_by_key(|h| (h.peer, h.at));
    let mut peers: Vec<&[Heard]> = Vec::new();
    let mut seen = Observed::default();
    let mut rest = &run[..];
    while let Some(first) = rest.first() {
        let len = rest.partition_point(|h| h.peer == first.peer);
        let (group, tail) = rest.split_at(len);
        if covered_seconds(group.iter().map(|h| h.at)) >= MIN_COVERED_SECONDS {
            peers.push(group);
        } else {
            seen.short += 1;
        }
        rest = tail;
    }
    let Some(first) = peers.first() else {
        return seen;
    };
    seen.fed = peers.len() as u64;
    for heard in peers.iter().flat_map(|group| group.iter()) {
        phone
            .detector
            .observe(heard.peer, heard.at, heard.attenuation_db);
    }
    let encounters = phone.detector.drain_completed(e1 + MAX_GAP_SECONDS);
    // An encounter happened where its peer was first heard.
    let area = first[0].area;
    let single = peers.iter().all(|group| group[0].area == area);
    // Heard in several places in one epoch: which encounter is which follows from the peer's
    // key, by deriving the pair once more.
    let mut areas: HashMap<confidant_client::TokenPair, u8> = HashMap::new();
    if !single && let Some(own) = phone.detector.keys().key_at(e1 - EPOCH_SECONDS) {
        for group in &peers {
            if let Some(pair) = derive(own, &group[0].peer) {
                areas.insert(pair, group[0].area);
            }
        }
    }
    seen.mixed = !single;
    for encounter in encounters {
        let area = areas.get(&encounter.tokens).copied().unwrap_or(area);
        if phone.store.add(encounter) {
            phone.checks.push(Check {
                id: encounter.id,
                hash: encounter.tokens.check.hash(),
                day: encounter.day,
                area,
            });
            seen.stored += 1;
        }
    }
    seen
}

/// A phone's upload list split by the area of each encounter.
fn split_by_area(
    phone: &TokenPhone,
    list: Vec<(TokenHash, u32)>,
) -> BTreeMap<u8, Vec<(TokenHash, u32)>> {
    let area_of: HashMap<u64, u8> = phone.checks.iter().map(|c| (c.id, c.area)).collect();
    let by_report: HashMap<TokenHash, u8> = phone
        .store
        .encounters()
        .iter()
        .filter_map(|e| Some((e.tokens.report.hash(), *area_of.get(&e.id)?)))
        .collect();
    let mut by_area: BTreeMap<u8, Vec<(TokenHash, u32)>> = BTreeMap::new();
    for (hash, day) in list {
        let area = by_report.get(&hash).copied().unwrap_or(phone.home);
        by_area.entry(area).or_default().push((hash, day));
    }
    by_area
}

/// One phone's reading of an area's new batches: its check hashes against each filter, its
/// cover buckets (the candidates' first, then random ones, ascending), the matches they
/// confirm, and what it downloaded.
fn match_phone(
    sync: &mut PhoneSync<'_>,
    batches: &[Batch<'_>],
    owner: &HashMap<TokenHash, usize>,
    uploads: &[TokenUpload],
    key: &VerifyingKey,
    now: u64,
    seed: u64,
) -> Result<(), SimError> {
    let phone = &mut *sync.phone;
    for batch in batches {
        let filter = batch.filter;
        sync.bytes[1] += filter.bytes;
        if !filter.removed.is_empty() {
            phone
                .found
                .retain(|m| !filter.removed.contains(&m.preimage.hash()));
        }
        let candidates = filter.candidates(phone.checks.iter().map(|c| &c.hash));
        let bits = filter.bucket_bits;
        let mut confirmed: Vec<(usize, Level)> = Vec::new();
        if bits == 0 {
            confirmed = candidates;
        } else {
            let mut rng = SeededRng::new(
                seed ^ u64::from(sync.id).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ batch.seq.wrapping_mul(0xbf58_476d_1ce4_e5b9),
            );
            let needed: BTreeSet<u32> = candidates
                .iter()
                .map(|&(i, _)| tokenfile::bucket_of(&phone.checks[i].hash, bits))
                .collect();
            let chosen = pick_buckets(&mut rng, bits, needed);
            for &bucket in &chosen {
                sync.bytes[2] += batch.buckets[bucket as usize].bytes.len() as u64;
            }
            for &(i, _) in &candidates {
                let hash = &phone.checks[i].hash;
                let bucket = tokenfile::bucket_of(hash, bits);
                if chosen.contains(&bucket)
                    && let Some(level) = batch.buckets[bucket as usize].confirms(key, hash)?
                {
                    confirmed.push((i, level));
                }
            }
        }
        confirmed.sort_unstable();
        confirmed.dedup_by_key(|(i, _)| *i);
        for (i, level) in confirmed {
            let check = phone.checks[i];
            if let Some(&upload) = owner.get(&check.hash) {
                phone.matched.entry(upload).or_insert(now);
                debug_assert_eq!(uploads[upload].level, level);
            }
            if level == 0 {
                if let Some(encounter) = phone.store.get(check.id) {
                    phone.found.push(TokenMatch {
                        encounter_id: check.id,
                        day: check.day,
                        level,
                        preimage: encounter.tokens.check,
                        duration: encounter.duration,
                        attenuation: encounter.attenuation,
                        seq: batch.seq,
                    });
                }
                if phone.notified_at.is_none() {
                    phone.notified_at = Some(now);
                    sync.newly = true;
                }
            } else if phone.level1_at.is_none() {
                phone.level1_at = Some(now);
                sync.newly_level1 = true;
            }
        }
    }
    Ok(())
}

/// Exactly `min(cover, 2^bits)` distinct buckets, ascending: a random choice of the needed
/// ones first, then random others (what `TokenDownloader` does).
fn pick_buckets(rng: &mut SeededRng, bits: u8, needed: BTreeSet<u32>) -> Vec<u32> {
    let count = bucket_count(bits);
    let want = DEFAULT_COVER.min(count as usize);
    let mut chosen: Vec<u32> = needed.into_iter().collect();
    for i in (1..chosen.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        chosen.swap(i, j);
    }
    chosen.truncate(want);
    while chosen.len() < want {
        let bucket = rng.below(u64::from(count)) as u32;
        if !chosen.contains(&bucket) {
            chosen.push(bucket);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// The level at which a batch publishes `hash`, from its filter and bucket (or the filter
/// alone without buckets).
fn confirms(
    batch: &Batch<'_>,
    key: &VerifyingKey,
    hash: &TokenHash,
) -> Result<Option<Level>, SimError> {
    let Some(&(_, level)) = batch.filter.candidates(std::iter::once(hash)).first() else {
        return Ok(None);
    };
    match batch.filter.bucket_bits {
        0 => Ok(Some(level)),
        bits => batch.buckets[tokenfile::bucket_of(hash, bits) as usize].confirms(key, hash),
    }
}

fn bucket_count(bits: u8) -> u32 {
    match bits {
        0 => 0,
        bits => 1 << bits,
    }
}

async fn fetch(edge: &EdgeFetch, path: &str) -> Result<bytes::Bytes, SimError> {
    edge.get(path)
        .await?
        .ok_or_else(|| SimError::Server(format!("{path} is listed but not served")))
}

fn tampered(path: &str, why: &str) -> SimError {
    SimError::Server(format!("{path} fails a phone's checks: {why}"))
}

/// `ids` (ascending) picked out of `phones`, mutably.
fn select<'a, T>(phones: &'a mut [Option<T>], ids: &[PersonId]) -> Vec<&'a mut T> {
    let mut out = Vec::with_capacity(ids.len());
    let mut wanted = ids.iter().peekable();
    for (id, slot) in phones.iter_mut().enumerate() {
        if wanted.peek().is_some_and(|&&w| w as usize == id) {
            wanted.next();
            out.push(slot.as_mut().expect("selected people run the app"));
        }
    }
    out
}

/// Runs `work` on every item, the items split over `threads` scoped threads. Each item holds
/// all its work touches, so the result does not depend on the split.
fn in_parallel<T: Send>(items: &mut [T], threads: usize, work: impl Fn(&mut T) + Sync) {
    if threads <= 1 || items.len() < 64 {
        items.iter_mut().for_each(work);
        return;
    }
    // More chunks than threads, taken in turn, so that one slow chunk does not idle the rest.
    let chunk = items.len().div_ceil(threads * 8);
    let chunks = std::sync::Mutex::new(items.chunks_mut(chunk));
    let run = || {
        loop {
            let next = chunks.lock().expect("chunk lock").next();
            let Some(chunk) = next else { break };
            chunk.iter_mut().for_each(&work);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(run);
        }
        run();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_gaps_up_to_two_minutes() {
        assert_eq!(covered_seconds([0, 60, 120, 300, 360].into_iter()), 180);
        assert_eq!(covered_seconds([0, 120].into_iter()), 120);
        assert_eq!(covered_seconds([0, 121].into_iter()), 0);
        assert_eq!(covered_seconds([5].into_iter()), 0);
        // Scans once a minute: 6 minutes of contact give the 5 an encounter needs.
        let six: Vec<u64> = (0..6).map(|i| i * SCAN_SECONDS).collect();
        assert_eq!(covered_seconds(six.into_iter()), MIN_COVERED_SECONDS);
    }

    #[test]
    fn radio_intervals_of_an_epoch() {
        let day = 1_772_323_200;
        let contact = Contact {
            a: 1,
            b: 2,
            start: day + 8 * HOUR + 5 * 60,
            end: day + 8 * HOUR + 40 * 60,
            attenuation_db: 50,
            area: 0,
            heard: [u32::MAX; 2],
        };
        let epoch = |minutes: u64| day + 8 * HOUR + minutes * 60;
        // 08:00-08:15 holds radio intervals 08:00 (0) and 08:10 (1).
        assert_eq!(overlap_bits(&contact, epoch(0), epoch(15)), Some(0b11));
        assert_eq!(overlap_bits(&contact, epoch(15), epoch(30)), Some(0b110));
        // 08:30-08:40 only: interval 08:30 (3).
        assert_eq!(overlap_bits(&contact, epoch(30), epoch(45)), Some(0b1000));
        assert_eq!(overlap_bits(&contact, epoch(45), epoch(60)), None);
        assert_eq!(overlap_bits(&contact, epoch(0) - 900, epoch(0)), None);
    }

    #[test]
    fn cover_buckets_are_the_needed_first_always_the_cover_and_ascending() {
        let mut rng = SeededRng::new(9);
        for needed in [vec![], vec![5], vec![5, 60], vec![1, 2, 3, 4]] {
            for _ in 0..50 {
                let chosen = pick_buckets(&mut rng, 6, needed.iter().copied().collect());
                assert_eq!(chosen.len(), DEFAULT_COVER);
                assert!(chosen.windows(2).all(|w| w[0] < w[1]));
                assert!(chosen.iter().all(|&b| b < 64));
                if needed.len() <= DEFAULT_COVER {
                    assert!(
                        needed.iter().all(|b| chosen.contains(b)),
                        "{needed:?} {chosen:?}"
                    );
                } else {
                    assert!(chosen.iter().all(|b| needed.contains(b)));
                }
            }
        }
        // Fewer buckets than the cover: all of them.
        assert_eq!(pick_buckets(&mut rng, 1, BTreeSet::new()), [0, 1]);
        assert_eq!(bucket_count(0), 0);
    }
}
