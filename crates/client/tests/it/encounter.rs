//! The encounter-token protocol on two simulated phones: mirrored tokens, broadcast slices,
//! the encounter rule over a long jittered contact, the store's retention, redaction, matching
//! and file, and our published test vectors.

use std::collections::{BTreeSet, HashSet};

use confidant_client::encounter::{
    EPOCH_SECONDS, Encounter, EncounterDetector, EncounterStore, EphemeralKey, EphemeralKeys,
    MIN_ENCOUNTER_SECONDS, Slice, TokenPair, decode, derive, encode, reassemble, slices,
};
use confidant_client::{ClientError, unix_day};
use confidant_core::encounter::{Token, TokenHash};
use proptest::prelude::*;

use crate::{DAY, T0};

/// Our vectors, also printed in `docs/encounter-tokens.md`: phone A's secret is 32 bytes of
/// 0x11, phone B's 32 bytes of 0x22 (X25519 clamps both before use).
const VECTORS: [(&str, &str); 11] = [
    (
        "A public",
        "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13",
    ),
    (
        "B public",
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
    ),
    (
        "s",
        "9e004098efc091d4ec2663b4e9f5cfd4d7064571690b4bea97ab146ab9f35056",
    ),
    (
        "T1",
        "9784ce41bdeec5a72300edb79e19a5cee0decbd283be94655a6717b67cd6332a",
    ),
    (
        "T2",
        "8ce1078759ecf0553600194c84d99e2c7967ba238ca34fe044c089a1a44fa214",
    ),
    ("H(T1)", "8679ad4681539668cfa938ef669fb936"),
    ("H(T2)", "6a6368b641b88fd3566833eee491c816"),
    // A's public key is the larger: A reports T1 and checks T2, B the reverse.
    (
        "A report",
        "9784ce41bdeec5a72300edb79e19a5cee0decbd283be94655a6717b67cd6332a",
    ),
    (
        "A check",
        "8ce1078759ecf0553600194c84d99e2c7967ba238ca34fe044c089a1a44fa214",
    ),
    (
        "B report",
        "8ce1078759ecf0553600194c84d99e2c7967ba238ca34fe044c089a1a44fa214",
    ),
    (
        "B check",
        "9784ce41bdeec5a72300edb79e19a5cee0decbd283be94655a6717b67cd6332a",
    ),
];

fn vector(name: &str) -> &'static str {
    VECTORS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, hex)| *hex)
        .expect("a vector of that name")
}

fn mirrored(pair: &TokenPair) -> TokenPair {
    TokenPair {
        report: pair.check,
        check: pair.report,
    }
}

#[test]
fn our_test_vectors() {
    let a = EphemeralKey::from_secret_bytes(0, [0x11; 32]);
    let b = EphemeralKey::from_secret_bytes(0, [0x22; 32]);
    assert_eq!(hex::encode(a.public), vector("A public"));
    assert_eq!(hex::encode(b.public), vector("B public"));
    assert_eq!(
        hex::encode(x25519_dalek::x25519([0x11; 32], b.public)),
        vector("s")
    );
    let from_a = derive(&a, &b.public).expect("A derives");
    let from_b = derive(&b, &a.public).expect("B derives");
    assert_eq!(from_a.report.to_hex(), vector("A report"));
    assert_eq!(from_a.check.to_hex(), vector("A check"));
    assert_eq!(from_b.report.to_hex(), vector("B report"));
    assert_eq!(from_b.check.to_hex(), vector("B check"));
    assert_eq!(from_a.report.to_hex(), vector("T1"));
    assert_eq!(from_a.check.to_hex(), vector("T2"));
    assert_eq!(from_a.report.hash().to_hex(), vector("H(T1)"));
    assert_eq!(from_a.check.hash().to_hex(), vector("H(T2)"));
    assert_eq!(from_b, mirrored(&from_a));
}

#[test]
fn the_protocol_document_carries_the_vectors() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/encounter-tokens.md");
    let doc = std::fs::read_to_string(&path).expect("docs/encounter-tokens.md");
    for (name, hex) in VECTORS {
        assert!(doc.contains(hex), "{name} = {hex} is missing from the doc");
    }
}

proptest! {
    #[test]
    fn both_phones_derive_the_mirrored_pair(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        let a = EphemeralKey::from_secret_bytes(1, a);
        let b = EphemeralKey::from_secret_bytes(1, b);
        prop_assume!(a.public != b.public);
        let from_a = derive(&a, &b.public).expect("honest keys derive");
        let from_b = derive(&b, &a.public).expect("honest keys derive");
        prop_assert_eq!(from_a.report, from_b.check);
        prop_assert_eq!(from_a.check, from_b.report);
        prop_assert_ne!(from_a.report, from_a.check);
    }

    #[test]
    fn any_three_slices_rebuild_the_key_and_two_do_not(key in any::<[u8; 32]>()) {
        let all = slices(&key);
        prop_assert_eq!(all.iter().map(|s| s.bytes.len()).collect::<Vec<_>>(), vec![12, 12, 8, 12]);
        prop_assert_eq!(reassemble(&all), Some(key));
        for missing in 0..4 {
            let three: Vec<Slice> = all.iter().filter(|s| s.index != missing).cloned().collect();
            prop_assert_eq!(reassemble(&three), Some(key));
            // Order and repeats do not matter.
            let mut shuffled: Vec<Slice> = three.iter().rev().cloned().collect();
            shuffled.push(three[0].clone());
            prop_assert_eq!(reassemble(&shuffled), Some(key));
            for other in 0..4 {
                let two: Vec<Slice> = all
                    .iter()
                    .filter(|s| s.index != missing && s.index != other)
                    .cloned()
                    .collect();
                if two.len() == 2 {
                    prop_assert_eq!(reassemble(&two), None);
                }
            }
        }
        for slice in &all {
            prop_assert_eq!(decode(&encode(slice)), Some(slice.clone()));
        }
    }

    #[test]
    fn slices_that_disagree_are_refused(key in any::<[u8; 32]>(), index in 0usize..4, byte in 0usize..8) {
        let mut all = slices(&key).to_vec();
        all[index].bytes[byte] ^= 1;
        prop_assert_eq!(reassemble(&all), None);
        // Two versions of one slice.
        let mut doubled = slices(&key).to_vec();
        doubled.push(all[index].clone());
        prop_assert_eq!(reassemble(&doubled), None);
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Some(slice) = decode(&bytes) {
            prop_assert_eq!(encode(&slice), bytes);
        }
    }
}

#[test]
fn a_rebuilt_short_slice_must_pad_with_zeros() {
    let key = [7; 32];
    let mut parity = slices(&key)[3].clone();
    parity.bytes[11] ^= 1;
    let [a, b, _, _] = slices(&key);
    assert_eq!(reassemble(&[a, b, parity]), None);
    assert_eq!(reassemble(&[]), None);
    let bad_index = Slice {
        index: 4,
        bytes: vec![0; 12],
    };
    let [a, b, c, _] = slices(&key);
    assert_eq!(reassemble(&[a, b, c, bad_index]), None);
}

/// A small deterministic generator for sighting jitter.
struct Jitter(u64);

impl Jitter {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Phones A and B stay together from `start` for `seconds`; each hears the other at its own
/// jittered times (every 5 to 60 seconds) and drains completed encounters every minute.
pub(crate) fn contact(
    a: &mut EncounterDetector,
    b: &mut EncounterDetector,
    start: u64,
    seconds: u64,
    seed: u64,
) -> (Vec<Encounter>, Vec<Encounter>) {
    skewed_contact(a, b, start, seconds, seed, 0)
}

/// [`contact`] with B's clock `skew` seconds ahead of A's.
fn skewed_contact(
    a: &mut EncounterDetector,
    b: &mut EncounterDetector,
    start: u64,
    seconds: u64,
    seed: u64,
    skew: u64,
) -> (Vec<Encounter>, Vec<Encounter>) {
    let mut jitter = Jitter(seed | 1);
    let mut events = Vec::new(); // (time, does A hear B?)
    for a_hears in [true, false] {
        let mut at = start + jitter.below(30);
        while at < start + seconds {
            events.push((at, a_hears));
            at += 5 + jitter.below(56);
        }
    }
    events.sort();
    let (mut heard_by_a, mut heard_by_b) = (Vec::new(), Vec::new());
    let mut next_drain = start;
    for (at, a_hears) in events {
        let attenuation = 45 + jitter.below(20) as u8;
        if a_hears {
            let public = b.broadcast(at + skew);
            a.observe(public, at, attenuation);
        } else {
            let public = a.broadcast(at);
            b.observe(public, at + skew, attenuation);
        }
        if at >= next_drain {
            heard_by_a.extend(a.drain_completed(at));
            heard_by_b.extend(b.drain_completed(at + skew));
            next_drain = at + 60;
        }
    }
    // The last epoch touched is over, and so is the grace for late sightings.
    let end = start + seconds + EPOCH_SECONDS + 120;
    heard_by_a.extend(a.drain_completed(end));
    heard_by_b.extend(b.drain_completed(end + skew));
    assert_eq!(
        a.open_contacts() + b.open_contacts(),
        0,
        "all drained by {end}"
    );
    (heard_by_a, heard_by_b)
}

fn pairs(encounters: &[Encounter]) -> BTreeSet<([u8; 32], [u8; 32])> {
    encounters
        .iter()
        .map(|e| (e.tokens.report.0, e.tokens.check.0))
        .collect()
}

fn mirrored_pairs(encounters: &[Encounter]) -> BTreeSet<([u8; 32], [u8; 32])> {
    encounters
        .iter()
        .map(|e| (e.tokens.check.0, e.tokens.report.0))
        .collect()
}

fn phones(seed_a: u8, seed_b: u8) -> (EncounterDetector, EncounterDetector) {
    (
        EncounterDetector::new(EphemeralKeys::from_seed([seed_a; 32])),
        EncounterDetector::new(EphemeralKeys::from_seed([seed_b; 32])),
    )
}

#[test]
fn a_two_hour_contact_gives_both_phones_the_same_encounters() {
    assert_eq!(T0 % EPOCH_SECONDS, 0);
    for seed in 1..=5 {
        let (mut a, mut b) = phones(0xA, 0xB);
        // From 2 minutes into an epoch for 2 hours: a 13-minute first piece, 7 full epochs and
        // a 2-minute tail, which both phones drop.
        let (heard_by_a, heard_by_b) = contact(&mut a, &mut b, T0 + 120, 2 * 3600, seed);
        assert_eq!(heard_by_a.len(), 8, "seed {seed}");
        assert_eq!(heard_by_b.len(), 8, "seed {seed}");
        assert_eq!(
            pairs(&heard_by_a),
            mirrored_pairs(&heard_by_b),
            "seed {seed}"
        );
        let ids: HashSet<u64> = heard_by_a.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 8, "one encounter per epoch, each distinct");
        for encounter in heard_by_a.iter().chain(&heard_by_b) {
            assert_eq!(encounter.day, unix_day(T0));
            assert!(!encounter.redacted);
            let bucket = encounter.duration.code();
            assert!(
                bucket <= 1,
                "no piece reaches 15 minutes of coverage: {encounter:?}"
            );
        }
    }
}

#[test]
fn clocks_a_few_seconds_apart_still_agree() {
    for skew in [1, 7, 45] {
        let (mut a, mut b) = phones(0xC, 0xD);
        let (heard_by_a, heard_by_b) = skewed_contact(&mut a, &mut b, T0 + 120, 7200, 11, skew);
        // The keys cross over for `skew` seconds at each rotation: too short to count.
        assert_eq!((heard_by_a.len(), heard_by_b.len()), (8, 8), "skew {skew}");
        assert_eq!(
            pairs(&heard_by_a),
            mirrored_pairs(&heard_by_b),
            "skew {skew}"
        );
    }
}

#[test]
fn a_three_minute_contact_is_no_encounter() {
    let (mut a, mut b) = phones(1, 2);
    let (heard_by_a, heard_by_b) =
        contact(&mut a, &mut b, T0 + 300, MIN_ENCOUNTER_SECONDS - 120, 7);
    assert!(heard_by_a.is_empty() && heard_by_b.is_empty());
    // The same contact lasting 7 minutes, inside one epoch, is one.
    let (heard_by_a, heard_by_b) = contact(&mut a, &mut b, T0 + DAY + 60, 7 * 60, 7);
    assert_eq!((heard_by_a.len(), heard_by_b.len()), (1, 1));
    assert_eq!(pairs(&heard_by_a), mirrored_pairs(&heard_by_b));
}

#[test]
fn finish_flushes_open_contacts_and_late_sightings_are_ignored() {
    let (mut a, mut b) = phones(3, 4);
    for at in (T0..T0 + 400).step_by(20) {
        let public = b.broadcast(at);
        a.observe(public, at, 50);
    }
    assert!(
        a.drain_completed(T0 + 400).is_empty(),
        "the epoch is still open"
    );
    let finished = a.finish(T0 + 400);
    assert_eq!(finished.len(), 1);
    // A sighting for the closed epoch opens nothing new.
    let public = b.broadcast(T0 + 500);
    a.observe(public, T0 + 500, 50);
    assert_eq!(a.open_contacts(), 0);
    // Hearing itself is not an encounter.
    let own = a.broadcast(T0 + EPOCH_SECONDS);
    a.observe(own, T0 + EPOCH_SECONDS, 30);
    assert_eq!(a.open_contacts(), 0);
}

/// Encounters of A and B over `minutes` from `start`, as each phone stores them.
fn stores(start: u64, minutes: u64, seed: u8) -> (EncounterStore, EncounterStore) {
    let (mut a, mut b) = phones(seed, seed.wrapping_add(100));
    let (heard_by_a, heard_by_b) = contact(&mut a, &mut b, start, minutes * 60, u64::from(seed));
    let (mut store_a, mut store_b) = (EncounterStore::new(), EncounterStore::new());
    store_a.extend(heard_by_a);
    store_b.extend(heard_by_b);
    (store_a, store_b)
}

#[test]
fn reports_match_on_the_other_phone_and_redacted_encounters_never_do() {
    let (mut store_a, mut store_b) = stores(T0, 45, 1);
    assert_eq!(store_a.len(), 3);
    let now = T0 + 3600;
    let published: HashSet<TokenHash> = store_a
        .report_hashes(now)
        .into_iter()
        .map(|(hash, day)| {
            assert_eq!(day, unix_day(T0));
            hash
        })
        .collect();
    assert_eq!(published.len(), 3);
    let matches = store_b.matches(&published);
    assert_eq!(matches.len(), 3);
    for m in &matches {
        assert!(published.contains(&m.preimage.hash()));
        let encounter = store_b.get(m.encounter_id).expect("matched encounter");
        assert_eq!(encounter.tokens.check, m.preimage);
        assert_eq!((m.day, m.duration), (encounter.day, encounter.duration));
    }
    // A's own check hashes are not what A published.
    assert!(store_a.matches(&published).is_empty());

    // B redacts one encounter: it no longer matches, nor is it checked or uploaded.
    let hidden = matches[0].encounter_id;
    assert!(store_b.redact(hidden));
    assert!(!store_b.redact(12345));
    assert_eq!(store_b.matches(&published).len(), 2);
    assert!(
        store_b
            .matches(&published)
            .iter()
            .all(|m| m.encounter_id != hidden)
    );
    let hidden_check = store_b.get(hidden).expect("kept").tokens.check;
    assert!(
        store_b
            .check_tokens()
            .iter()
            .all(|(t, ..)| *t != hidden_check)
    );
    assert_eq!(store_b.check_hashes().len(), 2);
    let hidden_report = store_b.get(hidden).expect("kept").tokens.report.hash();
    let b_reports = store_b.report_hashes(now);
    assert_eq!(b_reports.len(), 2);
    assert!(b_reports.iter().all(|(hash, _)| *hash != hidden_report));

    // A redacts before uploading: that hash is never published.
    let a_hidden = store_a.encounters()[1].id;
    store_a.redact(a_hidden);
    let a_hidden_report = store_a.get(a_hidden).expect("kept").tokens.report.hash();
    assert!(
        store_a
            .report_hashes(now)
            .iter()
            .all(|(hash, _)| *hash != a_hidden_report)
    );
    assert!(
        !store_a.add(*store_a.get(a_hidden).expect("kept")),
        "no duplicates"
    );
}

#[test]
fn encounters_are_kept_fourteen_days() {
    let (mut store, _) = stores(T0, 20, 2);
    let (later, _) = stores(T0 + 5 * DAY, 20, 3);
    let before = store.len();
    assert!(before >= 1);
    store.extend(later.encounters().iter().copied());
    let total = store.len();
    // Day 13 after the first contact: everything stays.
    let day13 = T0 + 13 * DAY;
    store.prune(day13);
    assert_eq!(store.len(), total);
    assert_eq!(store.report_hashes(day13).len(), total);
    // Day 14: the first contact is older than 14 days.
    let day14 = T0 / DAY * DAY + 14 * DAY;
    assert_eq!(
        store.report_hashes(day14).len(),
        total - before,
        "not offered"
    );
    store.prune(day14);
    assert_eq!(store.len(), total - before);
    store.prune(T0 + 19 * DAY);
    assert_eq!(store.len(), 0);
}

#[test]
fn the_store_file_round_trips_and_a_damaged_one_is_refused() {
    let (mut store, _) = stores(T0, 45, 4);
    store.redact(store.encounters()[0].id);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("encounters");
    assert!(
        EncounterStore::load(&path)
            .expect("missing is empty")
            .is_empty()
    );
    store.save(&path).expect("saves");
    assert_eq!(EncounterStore::load(&path).expect("loads"), store);

    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        EncounterStore::load(&path),
        Err(ClientError::CorruptState { .. })
    ));
    std::fs::write(&path, &bytes[..10]).expect("write");
    assert!(matches!(
        EncounterStore::load(&path),
        Err(ClientError::CorruptState { .. })
    ));
}

#[test]
fn random_keys_also_agree() {
    let mut a = EncounterDetector::new(EphemeralKeys::random());
    let mut b = EncounterDetector::new(EphemeralKeys::new(rand_core::OsRng));
    let (heard_by_a, heard_by_b) = contact(&mut a, &mut b, T0 + 60, 40 * 60, 9);
    assert_eq!(heard_by_a.len(), 3);
    assert_eq!(pairs(&heard_by_a), mirrored_pairs(&heard_by_b));
    let _: Token = heard_by_a[0].tokens.report;
}
