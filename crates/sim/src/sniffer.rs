//! Passive Bluetooth sniffers in a share of the workplaces and school classes: each records
//! every broadcast there (GAEN's RPIs, the encounter-token keys), and collects everything the
//! server publishes. What they can link is computed from those two sets alone:
//!
//! - GAEN: each published key yields its RPIs; every recorded RPI among them is a sighting of
//!   a diagnosed person, linked to all other sightings of the same key.
//! - Encounter tokens: each recorded key, and each pair of keys recorded together (same place
//!   and epoch), is run through the protocol's public functions (the key itself, its hash,
//!   the token derivation T = SHA-256(label ‖ value) and H(T), with the pair's XOR as the
//!   value); a recorded key is linkable if anything it yields is a published hash. Deriving a
//!   published hash needs a Diffie-Hellman secret, which no broadcast carries.
//!
//! Who broadcast a recorded value is the simulation's ground truth, used only to count the
//! linkable sightings per uploader.

use std::collections::{BTreeSet, HashMap, HashSet};

use confidant_client::download::Fetch;
use confidant_client::tokens::parse_token_index;
use confidant_core::Region;
use confidant_core::encounter::{Token, TokenHash};
use confidant_core::feed::file_hash;
use confidant_core::tokenfile::{self, TokenBody};
use gaen::{DiagnosisKey, Rpi, VerifyingKey};

use crate::SimError;
use crate::model::{PersonId, Places};
use crate::report::{SnifferFigures, SnifferReport};
use crate::target::EdgeFetch;

/// A token key recorded at a place in an epoch, with who broadcast it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRecord {
    pub place: u32,
    pub epoch: u64,
    pub person: PersonId,
    pub public: [u8; 32],
}

/// The sniffers' token-list download: each area's list files, as published.
struct Lists {
    edge: EdgeFetch,
    regions: Vec<Region>,
    seq: Vec<u64>,
    public_key: VerifyingKey,
}

pub struct Sniffer {
    places: usize,
    sniffed: usize,
    /// (RPI, place, who broadcast it).
    rpis: Vec<(Rpi, u32, PersonId)>,
    keys: Vec<KeyRecord>,
    /// Every key the feed published, padding included (no one can tell it apart).
    published_keys: HashMap<[u8; 16], DiagnosisKey>,
    /// Every hash the token lists published, at any level, padding included.
    published_hashes: HashSet<TokenHash>,
    lists: Option<Lists>,
}

impl Sniffer {
    pub fn new(places: &Places) -> Self {
        Self {
            places: places.sniffed.len(),
            sniffed: places.sniffed.iter().filter(|&&s| s).count(),
            rpis: Vec::new(),
            keys: Vec::new(),
            published_keys: HashMap::new(),
            published_hashes: HashSet::new(),
            lists: None,
        }
    }

    pub fn record_rpi(&mut self, place: u32, rpi: Rpi, person: PersonId) {
        self.rpis.push((rpi, place, person));
    }

    pub fn record_keys(&mut self, records: Vec<KeyRecord>) {
        self.keys.extend(records);
    }

    /// A key the GAEN feed published.
    pub fn published_key(&mut self, key: &DiagnosisKey) {
        self.published_keys.entry(key.tek.0).or_insert(*key);
    }

    /// Follow the token areas' list files through `edge` (a CDN of the sniffers' own).
    pub fn follow_lists(
        &mut self,
        edge: EdgeFetch,
        regions: Vec<Region>,
        public_key: VerifyingKey,
    ) {
        self.lists = Some(Lists {
            edge,
            seq: vec![0; regions.len()],
            regions,
            public_key,
        });
    }

    /// Downloads the list files published since the last call (every day, before files leave
    /// the server's 14-day retention).
    pub async fn collect_lists(&mut self) -> Result<(), SimError> {
        let Some(lists) = &mut self.lists else {
            return Ok(());
        };
        for (area, region) in lists.regions.iter().enumerate() {
            let path = format!("tokens/{region}/index.json");
            let Some(bytes) = lists.edge.get(&path).await? else {
                continue;
            };
            let index = parse_token_index(&path, &bytes, region)?;
            let seen = lists.seq[area];
            for batch in index.batches.iter().filter(|b| b.seq > seen) {
                let path = format!("tokens/{region}/{}", batch.list.file);
                let bytes =
                    lists.edge.get(&path).await?.ok_or_else(|| {
                        SimError::Server(format!("{path} is listed but not served"))
                    })?;
                let file = tokenfile::verify(&bytes, &lists.public_key)
                    .map_err(|e| SimError::Server(format!("{path}: {e}")))?;
                if let TokenBody::List { added, .. } = file.body {
                    self.published_hashes.extend(added.iter().map(|t| t.hash));
                }
                lists.seq[area] = batch.seq;
            }
        }
        Ok(())
    }

    pub fn report(
        &self,
        gaen: Option<&BTreeSet<PersonId>>,
        tokens: Option<&BTreeSet<PersonId>>,
    ) -> SnifferReport {
        SnifferReport {
            places: self.places,
            sniffed_places: self.sniffed,
            gaen: gaen.map(|uploaders| self.gaen(uploaders)),
            tokens: tokens.map(|uploaders| self.tokens(uploaders)),
        }
    }

    /// GAEN: recorded RPIs that a published key yields.
    fn gaen(&self, uploaders: &BTreeSet<PersonId>) -> SnifferFigures {
        let mut records = self.rpis.clone();
        records.sort_unstable();
        records.dedup();
        let mut by_rpi: HashMap<Rpi, Vec<PersonId>> = HashMap::new();
        for &(rpi, _, person) in &records {
            by_rpi.entry(rpi).or_default().push(person);
        }
        let mut linked: HashMap<PersonId, u64> = HashMap::new();
        let mut derived = 0;
        for key in self.published_keys.values() {
            let batch = key
                .tek
                .rpi_key()
                .rpis(key.rolling_start, key.rolling_period.get());
            for (_, rpi) in batch.iter() {
                derived += 1;
                for &person in by_rpi.get(&rpi).into_iter().flatten() {
                    *linked.entry(person).or_default() += 1;
                }
            }
        }
        let recorded: Vec<PersonId> = records.iter().map(|&(_, _, person)| person).collect();
        figures(
            uploaders,
            &recorded,
            &linked,
            self.published_keys.len() as u64,
            derived,
        )
    }

    /// Encounter tokens: recorded keys from which the protocol's public functions yield a
    /// published hash.
    fn tokens(&self, uploaders: &BTreeSet<PersonId>) -> SnifferFigures {
        let mut records = self.keys.clone();
        records.sort_unstable();
        records.dedup();
        let published = &self.published_hashes;
        let mut derived = 0u64;
        let mut yields_published = |value: &[u8; 32]| {
            let mut found =
                published.contains(&TokenHash(value[..16].try_into().expect("16 of 32 bytes")));
            found |= published.contains(&Token(*value).hash());
            for label in [0x01u8, 0x02] {
                let mut input = [0u8; 33];
                input[0] = label;
                input[1..].copy_from_slice(value);
                found |= published.contains(&Token(file_hash(&input)).hash());
            }
            derived += 4;
            found
        };
        let mut linkable = vec![false; records.len()];
        for (record, linkable) in records.iter().zip(&mut linkable) {
            *linkable |= yields_published(&record.public);
        }
        // Keys recorded together: same place, same epoch.
        let mut start = 0;
        while start < records.len() {
            let here = (records[start].place, records[start].epoch);
            let end = start
                + records[start..]
                    .iter()
                    .take_while(|r| (r.place, r.epoch) == here)
                    .count();
            for i in start..end {
                for j in i + 1..end {
                    let pair: [u8; 32] =
                        std::array::from_fn(|k| records[i].public[k] ^ records[j].public[k]);
                    if yields_published(&pair) {
                        linkable[i] = true;
                        linkable[j] = true;
                    }
                }
            }
            start = end;
        }
        let mut linked: HashMap<PersonId, u64> = HashMap::new();
        for (record, &linkable) in records.iter().zip(&linkable) {
            if linkable {
                *linked.entry(record.person).or_default() += 1;
            }
        }
        let recorded: Vec<PersonId> = records.iter().map(|r| r.person).collect();
        figures(
            uploaders,
            &recorded,
            &linked,
            self.published_hashes.len() as u64,
            derived,
        )
    }
}

fn figures(
    uploaders: &BTreeSet<PersonId>,
    recorded: &[PersonId],
    linked: &HashMap<PersonId, u64>,
    published: u64,
    derived: u64,
) -> SnifferFigures {
    let mut of_uploaders: HashMap<PersonId, u64> = HashMap::new();
    for person in recorded {
        if uploaders.contains(person) {
            *of_uploaders.entry(*person).or_default() += 1;
        }
    }
    let per_uploader: Vec<u64> = uploaders
        .iter()
        .map(|p| linked.get(p).copied().unwrap_or(0))
        .collect();
    let linkable: u64 = per_uploader.iter().sum();
    SnifferFigures {
        recorded: recorded.len() as u64,
        published,
        derived,
        uploaders: uploaders.len(),
        uploaders_recorded: of_uploaders.len(),
        recorded_of_uploaders: of_uploaders.values().sum(),
        linkable,
        linkable_of_others: linked.values().sum::<u64>() - linkable,
        uploaders_linkable: per_uploader.iter().filter(|&&n| n > 0).count(),
        max_linkable: per_uploader.iter().copied().max().unwrap_or(0),
        linkable_per_uploader: linkable as f64 / uploaders.len().max(1) as f64,
    }
}
