//! The phone side of the encounter-token protocol: ephemeral X25519 keys per 15-minute epoch,
//! their broadcast slices, encounter detection, token derivation and the 14-day encounter
//! store. The protocol is specified in `docs/encounter-tokens.md`.
//!
//! Encounter rule: one encounter per pair (own epoch key, peer key). A sighting counts for
//! the own key of the epoch it was heard in, so both phones attribute the same stretch of
//! time to the same pair (they broadcast those two keys during exactly that stretch), and
//! the tokens depend only on the two keys, never on where a phone thinks a contact began or
//! ended. A long contact thus splits at epoch boundaries into pieces of at most 15 minutes; a
//! piece covering less than [`MIN_ENCOUNTER_SECONDS`] is dropped, not merged into its
//! neighbour, because its neighbour has other keys and therefore other tokens.
//!
//! Not here: the BLE radio, grouping received slices by advertiser, and the upload itself.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use confidant_core::encounter::{AttenuationBucket, DurationBucket, Token, TokenHash};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRngCore, OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::state_file::{load_json, save_json};
use crate::{ClientError, unix_day};

pub use crate::RETENTION_DAYS;

/// Keys rotate every 15 minutes, at multiples of 900 unix seconds.
pub const EPOCH_SECONDS: u64 = 900;
/// A key pair heard for less than 5 minutes is no encounter.
pub const MIN_ENCOUNTER_SECONDS: u64 = 300;
/// No encounter covers more than 30 minutes; the one-per-key-pair rule keeps them to one
/// epoch, well inside this bound.
pub const MAX_ENCOUNTER_SECONDS: u64 = 1800;
/// Sightings of a pair at most this far apart are taken to cover the time between them.
pub const MAX_GAP_SECONDS: u64 = 120;

const SEED_LABEL: &[u8] = b"confidant-ephemeral-v1";
const ID_LABEL: &[u8] = b"confidant/encounter-id/v1\0";
const FILE_MAGIC: &[u8; 8] = b"CENCTR\x01\n";

/// The epoch containing unix second `at`.
pub fn epoch_of(at: u64) -> u64 {
    at / EPOCH_SECONDS
}

/// One epoch's key pair.
#[derive(Clone)]
pub struct EphemeralKey {
    pub epoch: u64,
    pub secret: StaticSecret,
    /// What the phone broadcasts during `epoch`.
    pub public: [u8; 32],
}

impl EphemeralKey {
    /// The key pair of `secret` (clamped by X25519 as usual) for `epoch`.
    pub fn from_secret_bytes(epoch: u64, secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret).to_bytes();
        Self {
            epoch,
            secret,
            public,
        }
    }
}

impl std::fmt::Debug for EphemeralKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("epoch", &self.epoch)
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

enum KeySource {
    Rng(Box<dyn CryptoRngCore + Send>),
    Seeded([u8; 32]),
}

/// The phone's ephemeral keys: a fresh one per epoch, created when first needed. Only the
/// current and the previous epoch are kept: the previous one for sightings reported late
/// across a rotation; older keys can serve no encounter any more and are forgotten.
pub struct EphemeralKeys {
    source: KeySource,
    /// By epoch.
    keys: BTreeMap<u64, EphemeralKey>,
}

impl EphemeralKeys {
    /// Keys drawn from `rng`.
    pub fn new(rng: impl CryptoRngCore + Send + 'static) -> Self {
        Self::with_source(KeySource::Rng(Box::new(rng)))
    }

    /// Keys drawn from the operating system's randomness.
    pub fn random() -> Self {
        Self::new(OsRng)
    }

    /// Deterministic keys for simulations and tests: the secret of epoch `e` is
    /// HMAC-SHA256(key = seed, message = "confidant-ephemeral-v1" ‖ e as u64 big-endian).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::with_source(KeySource::Seeded(seed))
    }

    fn with_source(source: KeySource) -> Self {
        Self {
            source,
            keys: BTreeMap::new(),
        }
    }

    fn new_key(&mut self, epoch: u64) -> EphemeralKey {
        let mut secret = [0u8; 32];
        match &mut self.source {
            KeySource::Rng(rng) => rng.fill_bytes(&mut secret),
            KeySource::Seeded(seed) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(seed).expect("HMAC accepts any key length");
                mac.update(SEED_LABEL);
                mac.update(&epoch.to_be_bytes());
                secret.copy_from_slice(&mac.finalize().into_bytes());
            }
        }
        let key = EphemeralKey::from_secret_bytes(epoch, secret);
        secret.fill(0);
        key
    }

    /// The key of the epoch containing `now`, created if that epoch has none yet. Keys older
    /// than the epoch before `now`'s are forgotten. `now` should not go backwards: a key
    /// made for an epoch already forgotten is a new one that no peer has heard.
    pub fn key_for(&mut self, now: u64) -> &EphemeralKey {
        let epoch = epoch_of(now);
        self.keys.retain(|&e, _| e.saturating_add(1) >= epoch);
        if !self.keys.contains_key(&epoch) {
            let key = self.new_key(epoch);
            self.keys.insert(epoch, key);
        }
        &self.keys[&epoch]
    }

    /// The key of the epoch containing `at` if it is still held, without creating one.
    pub fn key_at(&self, at: u64) -> Option<&EphemeralKey> {
        self.keys.get(&epoch_of(at))
    }

    /// The public key to broadcast at `now`.
    pub fn public_for(&mut self, now: u64) -> [u8; 32] {
        self.key_for(now).public
    }

    /// Epochs that have a key, oldest first.
    pub fn epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys.keys().copied()
    }
}

impl std::fmt::Debug for EphemeralKeys {
    /// Never prints keys, the seed or the RNG.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EphemeralKeys")
            .field("epochs", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One BLE advertisement's share of a public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    /// 0, 1, 2: key bytes 0..12, 12..24, 24..32; 3: the parity slice.
    pub index: u8,
    pub bytes: Vec<u8>,
}

/// Payload length of each slice index.
const SLICE_LENGTHS: [usize; 4] = [12, 12, 8, 12];
const SLICE_RANGES: [std::ops::Range<usize>; 3] = [0..12, 12..24, 24..32];

fn padded(bytes: &[u8]) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

fn xor12(a: [u8; 12], b: [u8; 12]) -> [u8; 12] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The four slices broadcast for `public`: three data slices of 12, 12 and 8 bytes and a
/// 12-byte parity slice (their XOR, the short one zero-padded), so any 3 rebuild the key.
pub fn slices(public: &[u8; 32]) -> [Slice; 4] {
    let data = SLICE_RANGES.map(|range| public[range].to_vec());
    let parity = data.iter().fold([0u8; 12], |acc, d| xor12(acc, padded(d)));
    let [a, b, c] = data;
    [
        Slice { index: 0, bytes: a },
        Slice { index: 1, bytes: b },
        Slice { index: 2, bytes: c },
        Slice {
            index: 3,
            bytes: parity.to_vec(),
        },
    ]
}

/// Rebuilds a public key from any 3 of its 4 slices. `None` for fewer than 3 distinct
/// indices, a wrong length or index, two different slices with one index, or slices that do
/// not belong together (all 4 present and the parity disagrees, or a rebuilt short slice whose
/// padding is not zero).
pub fn reassemble(slices: &[Slice]) -> Option<[u8; 32]> {
    let mut parts: [Option<[u8; 12]>; 4] = [None; 4];
    for slice in slices {
        let index = usize::from(slice.index);
        if SLICE_LENGTHS.get(index) != Some(&slice.bytes.len()) {
            return None;
        }
        let part = padded(&slice.bytes);
        match parts[index] {
            Some(existing) if existing != part => return None,
            _ => parts[index] = Some(part),
        }
    }
    let missing: Vec<usize> = (0..4).filter(|&i| parts[i].is_none()).collect();
    match missing[..] {
        [] => {
            let sum = parts
                .iter()
                .flatten()
                .fold([0u8; 12], |acc, p| xor12(acc, *p));
            if sum != [0; 12] {
                return None;
            }
        }
        [gap] => {
            let rebuilt = parts
                .iter()
                .flatten()
                .fold([0u8; 12], |acc, p| xor12(acc, *p));
            if gap == 2 && rebuilt[8..] != [0; 4] {
                return None;
            }
            parts[gap] = Some(rebuilt);
        }
        _ => return None,
    }
    let mut key = [0u8; 32];
    for (index, range) in SLICE_RANGES.into_iter().enumerate() {
        let len = range.len();
        key[range].copy_from_slice(&parts[index]?[..len]);
    }
    Some(key)
}

/// A slice as advertised: its index byte, then its payload.
pub fn encode(slice: &Slice) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + slice.bytes.len());
    out.push(slice.index);
    out.extend_from_slice(&slice.bytes);
    out
}

/// Parses an advertised slice: `None` for an unknown index or a payload of the wrong length.
pub fn decode(bytes: &[u8]) -> Option<Slice> {
    let (&index, payload) = bytes.split_first()?;
    (SLICE_LENGTHS.get(usize::from(index)) == Some(&payload.len())).then(|| Slice {
        index,
        bytes: payload.to_vec(),
    })
}

/// The two tokens of an encounter as one phone sees them: it uploads H(report) when it is
/// diagnosed and looks for H(check) among published hashes. The peer's pair is the mirror.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TokenPair {
    pub report: Token,
    pub check: Token,
}

/// The token pair of an encounter between `own` and the phone broadcasting `peer_public`.
///
/// s = X25519(own secret, peer public); T1 = SHA-256(0x01 ‖ s), T2 = SHA-256(0x02 ‖ s). The
/// phone whose public key is larger bytewise reports T1 and checks T2; the other the reverse.
/// `None` for a low-order peer key (s is all zero) or the phone's own key.
pub fn derive(own: &EphemeralKey, peer_public: &[u8; 32]) -> Option<TokenPair> {
    if own.public == *peer_public {
        return None;
    }
    let shared = own.secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return None;
    }
    let token = |label: u8| {
        let digest = Sha256::new()
            .chain_update([label])
            .chain_update(shared.as_bytes())
            .finalize();
        Token(digest.into())
    };
    let (t1, t2) = (token(0x01), token(0x02));
    Some(if own.public > *peer_public {
        TokenPair {
            report: t1,
            check: t2,
        }
    } else {
        TokenPair {
            report: t2,
            check: t1,
        }
    })
}

/// An encounter: one pair (own key, peer key) heard together for at least 5 minutes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Encounter {
    /// Local only, never sent: derived from the tokens, so the same pair always gets the same
    /// id and a store never holds it twice.
    pub id: u64,
    pub tokens: TokenPair,
    /// Unix day (UTC) of the first sighting.
    pub day: u32,
    pub duration: DurationBucket,
    /// From the median attenuation of the sightings.
    pub attenuation: AttenuationBucket,
    /// Chosen by the user: never uploaded, never matched.
    pub redacted: bool,
}

fn encounter_id(tokens: &TokenPair) -> u64 {
    let digest = Sha256::new()
        .chain_update(ID_LABEL)
        .chain_update(tokens.report.0)
        .chain_update(tokens.check.0)
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The sightings of one key pair so far.
#[derive(Clone, Debug)]
struct Contact {
    tokens: TokenPair,
    /// Sightings, kept in time order (scanners may report slightly out of order).
    times: Vec<u64>,
    attenuations: Vec<u8>,
}

impl Contact {
    /// Seconds covered: consecutive sightings at most [`MAX_GAP_SECONDS`] apart cover the
    /// time between them; a lone sighting covers none.
    fn covered_seconds(&self) -> u64 {
        self.times
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&gap| gap <= MAX_GAP_SECONDS)
            .sum()
    }

    fn into_encounter(mut self) -> Option<Encounter> {
        let covered = self.covered_seconds();
        if covered < MIN_ENCOUNTER_SECONDS {
            return None;
        }
        let duration = DurationBucket::from_seconds(covered.min(MAX_ENCOUNTER_SECONDS))?;
        self.attenuations.sort_unstable();
        let median = self.attenuations[self.attenuations.len() / 2];
        Some(Encounter {
            id: encounter_id(&self.tokens),
            tokens: self.tokens,
            day: unix_day(*self.times.first()?),
            duration,
            attenuation: AttenuationBucket::from_db(median),
            redacted: false,
        })
    }
}

/// Turns sightings of peer keys into encounters (see the module docs for the rule). It owns
/// the phone's [`EphemeralKeys`], because deriving needs the own key of the epoch a sighting
/// falls in; broadcast with [`EncounterDetector::broadcast`].
pub struct EncounterDetector {
    keys: EphemeralKeys,
    /// Open contacts by (own epoch, peer key).
    contacts: HashMap<(u64, [u8; 32]), Contact>,
    /// Epochs before this one are closed: their contacts were drained, late sightings ignored.
    open_from: u64,
}

impl EncounterDetector {
    pub fn new(keys: EphemeralKeys) -> Self {
        Self {
            keys,
            contacts: HashMap::new(),
            open_from: 0,
        }
    }

    /// The public key to broadcast at `now`.
    pub fn broadcast(&mut self, now: u64) -> [u8; 32] {
        self.keys.public_for(now)
    }

    pub fn keys(&self) -> &EphemeralKeys {
        &self.keys
    }

    /// Records that `peer_public` was heard at unix second `at`. Ignored: the phone's own key,
    /// low-order keys, and sightings in an epoch already closed or whose own key is forgotten.
    pub fn observe(&mut self, peer_public: [u8; 32], at: u64, attenuation_db: u8) {
        let epoch = epoch_of(at);
        if epoch < self.open_from {
            return;
        }
        let contact = match self.contacts.entry((epoch, peer_public)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                if self.keys.key_at(at).is_none() {
                    // A new epoch: the phone rotates now. An older one without a key is a
                    // stale report for a key no longer held.
                    if self
                        .keys
                        .epochs()
                        .last()
                        .is_some_and(|newest| epoch < newest)
                    {
                        return;
                    }
                    self.keys.key_for(at);
                }
                let own = self.keys.key_at(at).expect("just made");
                let Some(tokens) = derive(own, &peer_public) else {
                    return;
                };
                entry.insert(Contact {
                    tokens,
                    times: Vec::new(),
                    attenuations: Vec::new(),
                })
            }
        };
        let position = contact.times.partition_point(|&t| t <= at);
        contact.times.insert(position, at);
        contact.attenuations.push(attenuation_db);
    }

    /// Encounters whose epoch ended at least [`MAX_GAP_SECONDS`] before `now`: no sighting
    /// can extend them any more. Their epochs are closed.
    pub fn drain_completed(&mut self, now: u64) -> Vec<Encounter> {
        // Epoch e ends at (e + 1) * EPOCH_SECONDS; it is complete once that is MAX_GAP ago.
        let open_from = epoch_of(now.saturating_sub(MAX_GAP_SECONDS));
        self.close_before(open_from)
    }

    /// Every encounter so far, complete or not (at shutdown or the end of a simulation). All
    /// epochs up to `now`'s are closed.
    pub fn finish(&mut self, now: u64) -> Vec<Encounter> {
        let through = self
            .contacts
            .keys()
            .map(|&(epoch, _)| epoch)
            .max()
            .unwrap_or(0)
            .max(epoch_of(now));
        self.close_before(through.saturating_add(1))
    }

    fn close_before(&mut self, open_from: u64) -> Vec<Encounter> {
        self.open_from = self.open_from.max(open_from);
        let closed: Vec<_> = self
            .contacts
            .keys()
            .filter(|&&(epoch, _)| epoch < self.open_from)
            .copied()
            .collect();
        let mut encounters: Vec<Encounter> = closed
            .into_iter()
            .filter_map(|key| self.contacts.remove(&key))
            .filter_map(Contact::into_encounter)
            .collect();
        encounters.sort_by_key(|e| (e.day, e.id));
        encounters
    }

    /// Key pairs still collecting sightings.
    pub fn open_contacts(&self) -> usize {
        self.contacts.len()
    }
}

impl std::fmt::Debug for EncounterDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncounterDetector")
            .field("keys", &self.keys)
            .field("open_contacts", &self.contacts.len())
            .field("open_from", &self.open_from)
            .finish()
    }
}

/// A published hash that one of the phone's encounters explains.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Match {
    pub encounter_id: u64,
    pub day: u32,
    /// The check token: the preimage of the published hash, which proves the encounter for a
    /// chained upload.
    pub preimage: Token,
    pub duration: DurationBucket,
    pub attenuation: AttenuationBucket,
}

/// The phone's encounters of the last 14 days, oldest first, saved to a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncounterStore {
    encounters: Vec<Encounter>,
}

#[derive(Serialize, Deserialize)]
struct StoredEncounter {
    id: u64,
    report: String,
    check: String,
    day: u32,
    duration: u8,
    attenuation: u8,
    redacted: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredEncounters {
    encounters: Vec<StoredEncounter>,
}

impl StoredEncounter {
    fn from_encounter(e: &Encounter) -> Self {
        Self {
            id: e.id,
            report: e.tokens.report.to_hex(),
            check: e.tokens.check.to_hex(),
            day: e.day,
            duration: e.duration.code(),
            attenuation: e.attenuation.code(),
            redacted: e.redacted,
        }
    }

    fn into_encounter(self) -> Option<Encounter> {
        Some(Encounter {
            id: self.id,
            tokens: TokenPair {
                report: Token::from_hex(&self.report)?,
                check: Token::from_hex(&self.check)?,
            },
            day: self.day,
            duration: DurationBucket::from_code(self.duration)?,
            attenuation: AttenuationBucket::from_code(self.attenuation)?,
            redacted: self.redacted,
        })
    }
}

/// The oldest unix day still kept at `now`: today and the 13 days before it.
fn oldest_kept_day(now: u64) -> u32 {
    unix_day(now).saturating_sub(RETENTION_DAYS as u32 - 1)
}

impl EncounterStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an encounter; `false` (and no change) when one with its id is already held.
    pub fn add(&mut self, encounter: Encounter) -> bool {
        if self.encounters.iter().any(|e| e.id == encounter.id) {
            return false;
        }
        self.encounters.push(encounter);
        true
    }

    /// Adds each encounter; returns how many were new.
    pub fn extend(&mut self, encounters: impl IntoIterator<Item = Encounter>) -> usize {
        encounters.into_iter().filter(|&e| self.add(e)).count()
    }

    /// Forgets encounters older than 14 days (today and the 13 days before it stay).
    pub fn prune(&mut self, now: u64) {
        let oldest = oldest_kept_day(now);
        self.encounters.retain(|e| e.day >= oldest);
    }

    /// Marks an encounter as redacted; `false` when no encounter has that id.
    pub fn redact(&mut self, id: u64) -> bool {
        match self.encounters.iter_mut().find(|e| e.id == id) {
            Some(encounter) => {
                encounter.redacted = true;
                true
            }
            None => false,
        }
    }

    fn active(&self) -> impl Iterator<Item = &Encounter> {
        self.encounters.iter().filter(|e| !e.redacted)
    }

    /// What a diagnosed phone uploads at `now`: H(report token) and day of each encounter of
    /// the last 14 days that is not redacted.
    pub fn report_hashes(&self, now: u64) -> Vec<(TokenHash, u32)> {
        let oldest = oldest_kept_day(now);
        self.active()
            .filter(|e| e.day >= oldest)
            .map(|e| (e.tokens.report.hash(), e.day))
            .collect()
    }

    /// The check tokens of the encounters that are not redacted.
    pub fn check_tokens(&self) -> Vec<(Token, u32, DurationBucket, AttenuationBucket)> {
        self.active()
            .map(|e| (e.tokens.check, e.day, e.duration, e.attenuation))
            .collect()
    }

    /// H(check token) and day of the encounters that are not redacted: what the phone looks
    /// for among the published hashes.
    pub fn check_hashes(&self) -> Vec<(TokenHash, u32)> {
        self.active()
            .map(|e| (e.tokens.check.hash(), e.day))
            .collect()
    }

    /// The encounters (not redacted) whose H(check token) is in `published`.
    pub fn matches(&self, published: &HashSet<TokenHash>) -> Vec<Match> {
        self.active()
            .filter(|e| published.contains(&e.tokens.check.hash()))
            .map(|e| Match {
                encounter_id: e.id,
                day: e.day,
                preimage: e.tokens.check,
                duration: e.duration,
                attenuation: e.attenuation,
            })
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<&Encounter> {
        self.encounters.iter().find(|e| e.id == id)
    }

    pub fn encounters(&self) -> &[Encounter] {
        &self.encounters
    }

    pub fn len(&self) -> usize {
        self.encounters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encounters.is_empty()
    }

    /// Saves the store atomically: after a crash the file holds the old or the new store.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let stored = StoredEncounters {
            encounters: self
                .encounters
                .iter()
                .map(StoredEncounter::from_encounter)
                .collect(),
        };
        save_json(path, FILE_MAGIC, &stored)
    }

    /// Loads a store saved by [`EncounterStore::save`]; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let Some(stored): Option<StoredEncounters> =
            load_json(path, FILE_MAGIC, "an encounter list")?
        else {
            return Ok(Self::new());
        };
        let mut store = Self::new();
        for (index, encounter) in stored.encounters.into_iter().enumerate() {
            let encounter = encounter.into_encounter().ok_or_else(|| {
                ClientError::corrupt(
                    path,
                    format!(
                        "encounter {index}: tokens must be 64 hex characters and bucket codes 0-3"
                    ),
                )
            })?;
            if !store.add(encounter) {
                return Err(ClientError::corrupt(
                    path,
                    format!("encounter {index}: duplicate id {}", encounter.id),
                ));
            }
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z, an epoch boundary.
    const T0: u64 = 1_800_000_000;

    #[test]
    fn keys_rotate_per_epoch_and_keep_only_the_previous() {
        let mut keys = EphemeralKeys::from_seed([1; 32]);
        let first = keys.key_for(T0).public;
        assert_eq!(keys.key_for(T0 + EPOCH_SECONDS - 1).public, first);
        let second = keys.key_for(T0 + EPOCH_SECONDS).public;
        assert_ne!(first, second);
        assert_eq!(keys.key_at(T0).map(|k| k.public), Some(first));
        keys.key_for(T0 + 2 * EPOCH_SECONDS);
        assert!(keys.key_at(T0).is_none(), "two epochs back is forgotten");
        assert_eq!(
            keys.epochs().collect::<Vec<_>>(),
            [epoch_of(T0) + 1, epoch_of(T0) + 2]
        );
        // Seeded keys do not depend on the order of use.
        let mut again = EphemeralKeys::from_seed([1; 32]);
        assert_eq!(again.key_for(T0 + EPOCH_SECONDS).public, second);
        assert_eq!(again.key_for(T0).public, first);
        let mut random = EphemeralKeys::random();
        assert_ne!(
            random.key_for(T0).public,
            EphemeralKeys::random().key_for(T0).public
        );
    }

    #[test]
    fn derive_refuses_own_and_low_order_keys() {
        let mut keys = EphemeralKeys::from_seed([2; 32]);
        let own = keys.key_for(T0).clone();
        assert_eq!(derive(&own, &own.public), None);
        assert_eq!(derive(&own, &[0; 32]), None);
        let mut one = [0; 32];
        one[0] = 1;
        assert_eq!(derive(&own, &one), None);
    }

    #[test]
    fn decode_never_panics_and_round_trips() {
        let key = EphemeralKeys::from_seed([3; 32]).key_for(T0).public;
        for slice in slices(&key) {
            assert_eq!(decode(&encode(&slice)), Some(slice));
        }
        for len in 0..40 {
            for index in [0u8, 1, 2, 3, 4, 255] {
                let mut bytes = vec![index];
                bytes.resize(len.max(1), 0xAB);
                let ok = decode(&bytes).is_some();
                assert_eq!(
                    ok,
                    index < 4 && len == 1 + SLICE_LENGTHS[usize::from(index)]
                );
            }
        }
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn coverage_skips_gaps_over_two_minutes() {
        let contact = Contact {
            tokens: TokenPair {
                report: Token([1; 32]),
                check: Token([2; 32]),
            },
            times: vec![0, 100, 220, 400, 500],
            attenuations: vec![50; 5],
        };
        // 0→100 and 400→500 count; 100→220 is 120 s, counted; 220→400 is a gap.
        assert_eq!(contact.covered_seconds(), 320);
    }
}
