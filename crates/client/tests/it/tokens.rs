//! Encounter-token matching on the phone against published token files served from memory
//! (built with `tokenfile::batch_files`, signed with a test key): hits at their level,
//! strangers and redacted encounters not, withdrawals, a constant number of bucket fetches,
//! tampering refused with the position kept, gaps, restarts; and the token API's requests and
//! answers against a scripted HTTP server.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use confidant_client::download::Fetch;
use confidant_client::encounter::{Encounter, EncounterStore, TokenPair};
use confidant_client::tokens::{
    Contribution, DEFAULT_COVER, Nonce, TokenApi, TokenDownloader, TokenMatch, parse_token_index,
    upload_list,
};
use confidant_client::{ClientError, unix_day};
use confidant_core::Region;
use confidant_core::encounter::{AttenuationBucket, DurationBucket, Level, Token, TokenHash};
use confidant_core::tokenfile::{
    self, BatchEntry, FilterMode, PublishedToken, TokenIndex, TokenKind, batch_files,
};
use gaen::SigningKey;
use rand_core::OsRng;
use serde_json::json;

use crate::{DAY, T0};

const KEY_ID: &str = "tokens-test";

fn area() -> Region {
    Region::try_from("64".to_owned()).expect("area")
}

/// The published files of one area, in memory, with every path requested logged in order.
#[derive(Default)]
struct MemoryCdn {
    files: Mutex<HashMap<String, Bytes>>,
    log: Mutex<Vec<String>>,
}

impl Fetch for MemoryCdn {
    fn get(&self, path: &str) -> impl Future<Output = Result<Option<Bytes>, ClientError>> + Send {
        self.log.lock().expect("lock").push(path.to_owned());
        let found = self.files.lock().expect("lock").get(path).cloned();
        async move { Ok(found) }
    }
}

impl MemoryCdn {
    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("lock"))
    }

    fn replace(&self, path: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .expect("lock")
            .insert(path.to_owned(), Bytes::from(bytes));
    }

    fn bytes(&self, path: &str) -> Vec<u8> {
        self.files.lock().expect("lock")[path].to_vec()
    }

    fn index(&self) -> TokenIndex {
        serde_json::from_slice(&self.bytes("tokens/64/index.json")).expect("index")
    }

    fn set_index(&self, index: &TokenIndex) {
        self.replace(
            "tokens/64/index.json",
            serde_json::to_vec(index).expect("json"),
        );
    }
}

/// The server side: publishes batch after batch into a [`MemoryCdn`].
struct Publisher {
    cdn: Arc<MemoryCdn>,
    signer: SigningKey,
    mode: FilterMode,
    batches: Vec<BatchEntry>,
}

impl Publisher {
    fn new(mode: FilterMode) -> Self {
        Self {
            cdn: Arc::new(MemoryCdn::default()),
            signer: SigningKey::generate(&mut OsRng),
            mode,
            batches: Vec::new(),
        }
    }

    /// Publishes the next batch: `added` as (published hash, level), `removed` as hashes.
    fn publish(&mut self, added: &[(TokenHash, Level)], removed: &[TokenHash]) {
        let seq = self.batches.len() as u64 + 1;
        let start = T0 + seq * 3600;
        let added = added
            .iter()
            .map(|&(hash, level)| PublishedToken {
                hash,
                day: unix_day(T0),
                level,
            })
            .collect();
        let files = batch_files(
            area(),
            seq,
            start,
            start + 3600,
            added,
            removed.to_vec(),
            self.mode,
            &mut OsRng,
        )
        .expect("a valid batch");
        let encode =
            |file: &tokenfile::TokenFile| file.encode(&self.signer, KEY_ID).expect("encodes");
        let (list, filter) = (encode(&files.list), encode(&files.filter));
        self.batches.push(BatchEntry::describe(
            &list,
            &files.list,
            &filter,
            &files.filter,
        ));
        for (file, bytes) in [(&files.list, list), (&files.filter, filter)] {
            self.cdn
                .replace(&format!("tokens/64/{}", file.name()), bytes);
        }
        for bucket in &files.buckets {
            self.cdn
                .replace(&format!("tokens/64/{}", bucket.name()), encode(bucket));
        }
        self.cdn
            .set_index(&TokenIndex::new(area(), self.mode, self.batches.clone()));
    }

    fn downloader(&self) -> TokenDownloader<Arc<MemoryCdn>> {
        TokenDownloader::new(
            self.cdn.clone(),
            area(),
            [(KEY_ID.to_owned(), self.signer.verifying_key())],
        )
    }
}

/// Encounter `n` of the phone: its check token is what the peer reports.
fn encounter(n: u8) -> Encounter {
    Encounter {
        id: u64::from(n),
        tokens: TokenPair {
            report: Token([n; 32]),
            check: Token([n ^ 0x80; 32]),
        },
        day: unix_day(T0) - u32::from(n % 5),
        duration: DurationBucket::Min10To15,
        attenuation: AttenuationBucket::Medium,
        redacted: false,
    }
}

/// What a peer of encounter `n` uploads: H(its report token) = H(our check token).
fn reported(n: u8) -> TokenHash {
    encounter(n).tokens.check.hash()
}

/// Hashes nobody in these tests has.
fn strangers(count: u32) -> Vec<(TokenHash, Level)> {
    (0..count)
        .map(|i| {
            let mut token = [0xEE; 32];
            token[..4].copy_from_slice(&i.to_be_bytes());
            (Token(token).hash(), 0)
        })
        .collect()
}

/// A phone holding encounters 1..=5.
fn phone() -> EncounterStore {
    let mut store = EncounterStore::new();
    store.extend((1..=5).map(encounter));
    store
}

fn ids(matches: &[TokenMatch]) -> Vec<(u64, Level)> {
    let mut ids: Vec<_> = matches.iter().map(|m| (m.encounter_id, m.level)).collect();
    ids.sort_unstable();
    ids
}

fn with_strangers(hits: &[(TokenHash, Level)], count: u32) -> Vec<(TokenHash, Level)> {
    let mut all = strangers(count);
    all.extend_from_slice(hits);
    all
}

/// Bucket files fetched per batch, from a fetch log.
fn buckets_per_batch(log: &[String]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for path in log {
        let name = path.rsplit('/').next().expect("a name");
        if let Some((TokenKind::Bucket, seq, _)) = tokenfile::parse_file_name(name) {
            *counts.entry(seq).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn tokens_a_hit_is_matched_at_its_level_and_strangers_are_not() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    let mut store = phone();
    store.redact(4);
    publisher.publish(
        &with_strangers(&[(reported(1), 0), (reported(2), 1), (reported(4), 0)], 200),
        &[],
    );
    let mut downloader = publisher.downloader();
    let update = downloader.sync(&store).await.expect("syncs");
    assert_eq!(
        ids(&update.matches),
        [(1, 0), (2, 1)],
        "4 is redacted, 3 and 5 never reported"
    );
    let first = update
        .matches
        .iter()
        .find(|m| m.encounter_id == 1)
        .expect("1");
    assert_eq!(
        *first,
        TokenMatch {
            encounter_id: 1,
            day: encounter(1).day,
            level: 0,
            preimage: encounter(1).tokens.check,
            duration: DurationBucket::Min10To15,
            attenuation: AttenuationBucket::Medium,
            seq: 1,
        }
    );
    assert_eq!(first.preimage.hash(), reported(1));
    assert!(update.unconfirmed.is_empty() && update.withdrawn.is_empty());
    assert_eq!((update.batches, update.files), (1, 1 + DEFAULT_COVER));
    assert_eq!(downloader.seq(), 1);
    assert_eq!(ids(downloader.matches()), [(1, 0), (2, 1)]);
    assert_eq!(
        Contribution::from(first),
        Contribution {
            preimage: encounter(1).tokens.check,
            duration: DurationBucket::Min10To15,
            attenuation: AttenuationBucket::Medium,
        }
    );

    // The raw lists find the same, from list files only.
    publisher.cdn.take_log();
    let mut exact = publisher.downloader();
    let update = exact.sync_lists(&store).await.expect("syncs");
    assert_eq!(ids(&update.matches), [(1, 0), (2, 1)]);
    let log = publisher.cdn.take_log();
    assert_eq!(
        log,
        ["tokens/64/index.json", "tokens/64/list-0000000001.ctok"]
    );
    let list_bytes = publisher.cdn.bytes("tokens/64/list-0000000001.ctok").len();
    assert!(
        list_bytes >= 203 * tokenfile::PUBLISHED_TOKEN_LEN,
        "{list_bytes}"
    );
}

#[tokio::test]
async fn tokens_without_buckets_the_filter_alone_decides() {
    let mut publisher = Publisher::new(FilterMode::UNCONFIRMED);
    publisher.publish(&with_strangers(&[(reported(3), 2)], 100), &[]);
    let update = publisher.downloader().sync(&phone()).await.expect("syncs");
    assert_eq!(ids(&update.matches), [(3, 2)]);
    assert_eq!(update.files, 1, "the filter file only");
    assert!(buckets_per_batch(&publisher.cdn.take_log()).is_empty());
}

#[tokio::test]
async fn tokens_a_withdrawn_hash_is_dropped_or_reported_withdrawn() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    let store = phone();
    publisher.publish(&[(reported(1), 0), (reported(2), 0)], &[]);
    let mut early = publisher.downloader();
    let update = early.sync(&store).await.expect("batch 1");
    assert_eq!(ids(&update.matches), [(1, 0), (2, 0)]);

    publisher.publish(&strangers(3), &[reported(1)]);
    // A phone that reads both batches at once never sees the withdrawn hash.
    let update = publisher.downloader().sync(&store).await.expect("both");
    assert_eq!(ids(&update.matches), [(2, 0)]);
    assert!(update.withdrawn.is_empty());
    // One that matched it before is told it was withdrawn.
    let update = early.sync(&store).await.expect("batch 2");
    assert!(update.matches.is_empty());
    assert_eq!(ids(&update.withdrawn), [(1, 0)]);
    assert_eq!(ids(early.matches()), [(2, 0)]);

    // Through the lists, the same.
    let update = publisher
        .downloader()
        .sync_lists(&store)
        .await
        .expect("lists");
    assert_eq!(ids(&update.matches), [(2, 0)]);
}

#[tokio::test]
async fn tokens_bucket_fetches_per_batch_do_not_depend_on_hits() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    // Batch 1 holds two of the phone's hashes, batch 2 none, batch 3 one.
    publisher.publish(
        &with_strangers(&[(reported(1), 0), (reported(5), 1)], 300),
        &[],
    );
    publisher.publish(&strangers(300), &[]);
    publisher.publish(&with_strangers(&[(reported(2), 0)], 50), &[]);
    let mut nobody = EncounterStore::new();
    nobody.add(Encounter {
        id: 99,
        tokens: TokenPair {
            report: Token([0x42; 32]),
            check: Token([0x43; 32]),
        },
        ..encounter(1)
    });
    for cover in [DEFAULT_COVER, 1, 3] {
        for (store, expected) in [
            (phone(), vec![(1, 0), (2, 0), (5, 1)]),
            (nobody.clone(), vec![]),
        ] {
            publisher.cdn.take_log();
            let mut downloader = publisher.downloader().with_cover(cover);
            let update = downloader.sync(&store).await.expect("syncs");
            let log = publisher.cdn.take_log();
            let per_batch = buckets_per_batch(&log);
            assert_eq!(
                per_batch,
                BTreeMap::from([(1, cover), (2, cover), (3, cover)]),
                "cover {cover}: {log:?}"
            );
            // Within a batch, buckets go out in ascending order whatever the phone needs.
            let buckets: Vec<&String> = log.iter().filter(|p| p.contains("bucket-")).collect();
            for batch in buckets.chunks(cover) {
                assert!(batch.is_sorted(), "{batch:?}");
            }
            if cover >= DEFAULT_COVER {
                assert_eq!(ids(&update.matches), expected, "cover {cover}");
            } else {
                // Batch 1 has two candidates in (likely) two buckets but fetches one.
                let mut found = ids(&update.matches);
                found.extend(ids(&update.unconfirmed));
                found.sort_unstable();
                assert_eq!(found, expected, "cover 1: matched or unconfirmed");
            }
        }
    }
}

#[tokio::test]
async fn tokens_false_positives_are_cleared_by_their_buckets() {
    // 2^-2: most of the phone's encounters are filter candidates in every batch.
    let mode = FilterMode {
        fp_bits: 2,
        bucket_bits: 3,
    };
    let mut publisher = Publisher::new(mode);
    publisher.publish(&with_strangers(&[(reported(2), 0)], 40), &[]);
    let mut store = EncounterStore::new();
    store.extend((1..=100).map(encounter));
    let update = publisher
        .downloader()
        .with_cover(8)
        .sync(&store)
        .await
        .expect("syncs");
    assert_eq!(
        ids(&update.matches),
        [(2, 0)],
        "every bucket fetched: exact"
    );
    assert!(update.unconfirmed.is_empty());

    let update = publisher.downloader().sync(&store).await.expect("syncs");
    assert!(ids(&update.matches).iter().all(|&(id, _)| id == 2));
    assert!(
        !update.unconfirmed.is_empty(),
        "more candidate buckets than the cover of 2"
    );
    assert_eq!(
        buckets_per_batch(&publisher.cdn.take_log())[&1],
        8 + DEFAULT_COVER
    );
}

#[tokio::test]
async fn tokens_a_flipped_byte_is_refused_and_the_position_kept() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    let store = phone();
    publisher.publish(&[(reported(1), 0)], &[]);
    let mut downloader = publisher.downloader();
    downloader.sync(&store).await.expect("batch 1");
    publisher.publish(&[(reported(2), 0)], &[]);

    // The filter file against its index entry.
    let filter = "tokens/64/filter-0000000002.ctok";
    let original = publisher.cdn.bytes(filter);
    let mut flipped = original.clone();
    // Bit 40 of the window's end: the file still parses, only its hash and signature differ.
    flipped[33] ^= 0x01;
    publisher.cdn.replace(filter, flipped.clone());
    let error = downloader.sync(&store).await.expect_err("tampered");
    assert!(
        matches!(&error, ClientError::Tampered { file, reason } if file == filter && reason.contains("SHA-256")),
        "{error}"
    );
    assert_eq!(downloader.seq(), 1);

    // With the index rewritten to match, the signature still gives it away.
    let mut index = publisher.cdn.index();
    index.batches[1].filter.sha256 = hex::encode(confidant_core::feed::file_hash(&flipped));
    publisher.cdn.set_index(&index);
    let error = downloader.sync(&store).await.expect_err("tampered");
    assert!(
        matches!(&error, ClientError::Tampered { reason, .. } if reason.contains("signature")),
        "{error}"
    );
    assert_eq!(downloader.seq(), 1);
    publisher.cdn.replace(filter, original);
    publisher.cdn.set_index(&TokenIndex::new(
        area(),
        FilterMode::CONFIRMED,
        publisher.batches.clone(),
    ));

    // Every bucket file of batch 2 flipped: whichever the phone picks is refused.
    let buckets: Vec<String> = (0..16)
        .map(|b| {
            format!(
                "tokens/64/{}",
                tokenfile::file_name(TokenKind::Bucket, 2, Some(b))
            )
        })
        .collect();
    let originals: Vec<Vec<u8>> = buckets.iter().map(|p| publisher.cdn.bytes(p)).collect();
    for (path, bytes) in buckets.iter().zip(&originals) {
        let mut bytes = bytes.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        publisher.cdn.replace(path, bytes);
    }
    let error = downloader.sync(&store).await.expect_err("tampered bucket");
    assert!(
        matches!(&error, ClientError::Tampered { file, .. } if file.contains("bucket-0000000002-")),
        "{error}"
    );
    assert_eq!(downloader.seq(), 1);

    // A bucket of batch 1 served as a bucket of batch 2: signed, but not what was asked for.
    for (b, path) in buckets.iter().enumerate() {
        let other = format!(
            "tokens/64/{}",
            tokenfile::file_name(TokenKind::Bucket, 1, Some(b as u32))
        );
        publisher.cdn.replace(path, publisher.cdn.bytes(&other));
    }
    let error = downloader.sync(&store).await.expect_err("replayed bucket");
    assert!(
        matches!(&error, ClientError::Tampered { reason, .. } if reason.contains("not bucket")),
        "{error}"
    );
    assert_eq!(downloader.seq(), 1);

    for (path, bytes) in buckets.iter().zip(originals) {
        publisher.cdn.replace(path, bytes);
    }
    let update = downloader.sync(&store).await.expect("the real files");
    assert_eq!(ids(&update.matches), [(2, 0)]);
    assert_eq!(downloader.seq(), 2);
}

#[tokio::test]
async fn tokens_files_signed_by_an_unknown_key_or_for_another_area_are_refused() {
    let mut publisher = Publisher::new(FilterMode::UNCONFIRMED);
    publisher.publish(&[(reported(1), 0)], &[]);
    let stranger = TokenDownloader::new(
        publisher.cdn.clone(),
        area(),
        [(
            "another-key".to_owned(),
            SigningKey::generate(&mut OsRng).verifying_key(),
        )],
    );
    let mut stranger = stranger;
    let error = stranger.sync(&phone()).await.expect_err("unknown key id");
    assert!(
        matches!(&error, ClientError::Tampered { reason, .. } if reason.contains("tokens-test")),
        "{error}"
    );
    assert_eq!(stranger.seq(), 0);

    let elsewhere = Region::try_from("65".to_owned()).expect("area");
    let mut other = TokenDownloader::new(
        publisher.cdn.clone(),
        elsewhere.clone(),
        [(KEY_ID.to_owned(), publisher.signer.verifying_key())],
    );
    // Area 64's index and files served under area 65.
    for name in ["index.json", "filter-0000000001.ctok"] {
        let bytes = publisher.cdn.bytes(&format!("tokens/64/{name}"));
        publisher.cdn.replace(&format!("tokens/65/{name}"), bytes);
    }
    let error = other.sync(&phone()).await.expect_err("index for area 64");
    assert!(
        matches!(error, ClientError::UnexpectedResponse { .. }),
        "{error}"
    );
    let mut index = publisher.cdn.index();
    index.area = elsewhere;
    publisher.cdn.replace(
        "tokens/65/index.json",
        serde_json::to_vec(&index).expect("json"),
    );
    let error = other.sync(&phone()).await.expect_err("file for area 64");
    assert!(
        matches!(&error, ClientError::Tampered { reason, .. } if reason.contains("signed for area 64")),
        "{error}"
    );
}

#[tokio::test]
async fn tokens_gaps_are_errors_and_change_nothing() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    let store = phone();
    for n in 1..=3 {
        publisher.publish(&[(reported(n), 0)], &[]);
    }
    let full = publisher.cdn.index();

    let mut holed = full.clone();
    holed.batches.remove(1);
    publisher.cdn.set_index(&holed);
    let mut downloader = publisher.downloader();
    let error = downloader.sync(&store).await.expect_err("a hole");
    assert!(
        matches!(&error, ClientError::Gap { detail, .. } if detail.contains("batch 3 after batch 1")),
        "{error}"
    );
    assert_eq!((downloader.seq(), downloader.matches().len()), (0, 0));

    publisher.cdn.set_index(&full);
    let third = "tokens/64/filter-0000000003.ctok";
    let third_bytes = publisher.cdn.bytes(third);
    publisher.cdn.files.lock().expect("lock").remove(third);
    let error = downloader
        .sync(&store)
        .await
        .expect_err("listed, not served");
    assert!(
        matches!(&error, ClientError::Gap { detail, .. } if detail.contains("filter-0000000003")),
        "{error}"
    );
    assert_eq!(downloader.seq(), 0);

    // The index going backwards is refused too.
    let mut first_two = full.clone();
    first_two.batches.truncate(2);
    first_two.latest_seq = 2;
    publisher.cdn.set_index(&first_two);
    downloader.sync(&store).await.expect("batches 1 and 2");
    assert_eq!(downloader.seq(), 2);
    let mut first_only = full.clone();
    first_only.batches.truncate(1);
    first_only.latest_seq = 1;
    publisher.cdn.set_index(&first_only);
    let error = downloader.sync(&store).await.expect_err("backwards");
    assert!(matches!(error, ClientError::Gap { .. }), "{error}");
    assert_eq!(downloader.seq(), 2);

    // Batches that left retention while the phone was away are skipped, and counted.
    publisher.cdn.replace(third, third_bytes);
    let mut late = full;
    late.batches.drain(..2);
    publisher.cdn.set_index(&late);
    let mut stale = publisher.downloader();
    stale
        .sync(&store)
        .await
        .expect("first sync starts at batch 3");
    assert_eq!(stale.seq(), 3);
    publisher.publish(&[], &[]);
    publisher.publish(&[(reported(5), 0)], &[]);
    let mut index = publisher.cdn.index();
    index.batches.drain(..4);
    publisher.cdn.set_index(&index);
    let update = downloader.sync(&store).await.expect("from batch 5");
    assert_eq!((update.expired, update.batches), (2, 1));
    assert_eq!(ids(&update.matches), [(5, 0)]);
}

#[tokio::test]
async fn tokens_a_restart_resumes_with_only_the_new_batches() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    let store = phone();
    publisher.publish(&[(reported(1), 0)], &[]);
    publisher.publish(&[(reported(2), 1)], &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("tokens-64");
    let mut downloader = publisher
        .downloader()
        .with_state_file(state.clone())
        .expect("no state yet");
    downloader.sync(&store).await.expect("syncs");
    drop(downloader);

    publisher.publish(&[(reported(3), 0)], &[reported(1)]);
    publisher.cdn.take_log();
    let mut restarted = publisher
        .downloader()
        .with_state_file(state.clone())
        .expect("state loads");
    assert_eq!(restarted.seq(), 2);
    assert_eq!(ids(restarted.matches()), [(1, 0), (2, 1)]);
    let update = restarted.sync(&store).await.expect("syncs");
    assert_eq!(ids(&update.matches), [(3, 0)]);
    assert_eq!(ids(&update.withdrawn), [(1, 0)]);
    assert_eq!(update.batches, 1);
    let log = publisher.cdn.take_log();
    assert!(
        log.iter()
            .all(|p| p.ends_with("index.json") || p.contains("0000000003")),
        "{log:?}"
    );
    // Nothing new: only the index.
    let update = restarted.sync(&store).await.expect("syncs");
    assert_eq!((update.batches, update.files), (0, 0));
    assert_eq!(publisher.cdn.take_log(), ["tokens/64/index.json"]);
    assert_eq!(ids(restarted.matches()), [(2, 1), (3, 0)]);

    // Matches of encounters the phone no longer holds are forgotten.
    let mut fewer = store.clone();
    fewer.redact(2);
    restarted.sync(&fewer).await.expect("syncs");
    assert_eq!(ids(restarted.matches()), [(3, 0)]);

    // Another area's state, or a damaged one, is refused.
    let elsewhere = TokenDownloader::new(
        publisher.cdn.clone(),
        Region::try_from("65".to_owned()).expect("area"),
        [],
    )
    .with_state_file(state.clone());
    assert!(matches!(elsewhere, Err(ClientError::CorruptState { .. })));
    let mut bytes = std::fs::read(&state).expect("state");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&state, bytes).expect("write");
    let damaged = publisher.downloader().with_state_file(state);
    assert!(matches!(damaged, Err(ClientError::CorruptState { .. })));
}

#[tokio::test]
async fn tokens_nothing_published_yet_is_no_error() {
    let publisher = Publisher::new(FilterMode::CONFIRMED);
    let mut downloader = publisher.downloader();
    let update = downloader.sync(&phone()).await.expect("no index");
    assert_eq!(update, Default::default());
    assert_eq!(downloader.seq(), 0);
}

#[test]
fn tokens_the_index_is_checked_before_anything_is_fetched() {
    let mut publisher = Publisher::new(FilterMode::CONFIRMED);
    publisher.publish(&[], &[]);
    publisher.publish(&[], &[]);
    let good = publisher.cdn.index();
    parse_token_index("i", &serde_json::to_vec(&good).expect("json"), &area()).expect("valid");
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change)> = vec![
        ("format", Box::new(|v| v["format"] = json!(2))),
        ("area", Box::new(|v| v["area"] = json!("65"))),
        ("latestSeq", Box::new(|v| v["latestSeq"] = json!(3))),
        (
            "order",
            Box::new(|v| v["batches"].as_array_mut().expect("array").reverse()),
        ),
        (
            "name",
            Box::new(|v| v["batches"][0]["filter"]["file"] = json!("../../secret")),
        ),
        (
            "list name",
            Box::new(|v| v["batches"][1]["list"]["file"] = json!("filter-0000000002.ctok")),
        ),
        ("seq 0", Box::new(|v| v["batches"][0]["seq"] = json!(0))),
        ("not JSON", Box::new(|v| *v = json!("index"))),
    ];
    for (name, change) in cases {
        let mut value = serde_json::to_value(&good).expect("json");
        change(&mut value);
        let error = parse_token_index("i", &serde_json::to_vec(&value).expect("json"), &area())
            .expect_err(name);
        assert!(
            matches!(error, ClientError::UnexpectedResponse { .. }),
            "{name}: {error}"
        );
    }
}

#[test]
fn tokens_the_upload_list_is_sorted_recent_and_unredacted() {
    let mut store = phone();
    store.redact(3);
    let mut old = encounter(9);
    old.day = unix_day(T0) - 14;
    store.add(old);
    let list = upload_list(&store, T0);
    let mut expected: Vec<(TokenHash, u32)> = [1, 2, 4, 5]
        .into_iter()
        .map(|n| (encounter(n).tokens.report.hash(), encounter(n).day))
        .collect();
    expected.sort_unstable();
    assert_eq!(list, expected);
    assert_eq!(upload_list(&store, T0 + 14 * DAY), Vec::new());
}

/// The requests a scripted server saw: method and path, JSON body.
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// One scripted HTTP exchange: what the server answers.
struct Answer {
    status: u16,
    body: String,
}

/// A one-connection-per-request HTTP server on 127.0.0.1:0 that answers `answers` in order and
/// records each request as (method and path, JSON body).
fn scripted(answers: Vec<Answer>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for answer in answers {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().expect("a length");
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            let target: Vec<&str> = request_line.split_whitespace().take(2).collect();
            record.lock().expect("lock").push((
                target.join(" "),
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            ));
            let content_type = if answer.status < 300 {
                "application/json"
            } else {
                "application/problem+json"
            };
            let mut stream = reader.into_inner();
            write!(
                stream,
                "HTTP/1.1 {} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                answer.status,
                answer.body.len(),
                answer.body
            )
            .expect("answer");
        }
    });
    (url, seen)
}

fn ok(body: serde_json::Value) -> Answer {
    Answer {
        status: 200,
        body: body.to_string(),
    }
}

#[tokio::test]
async fn tokens_the_api_sends_what_the_routes_take_and_reads_their_answers() {
    let nonce = "ab".repeat(32);
    let (url, seen) = scripted(vec![
        ok(json!({"nonces": [nonce, "cd".repeat(32)], "expiresAt": T0 + DAY, "maxTokens": 500})),
        ok(json!({"nonces": [], "expiresAt": "2027-01-16T08:00:00Z", "maxTokens": 1, "padding": "xx"})),
        ok(json!({"trackingId": "00ff", "accepted": 2, "level": 0})),
        ok(json!({"trackingId": "0100", "accepted": 1, "skipped": 1, "level": 2})),
        ok(json!({"recorded": 1})),
        Answer {
            status: 400,
            body: json!({"type": "about:blank", "title": "Bad Request", "code": "invalid_tan", "detail": "no such TAN"}).to_string(),
        },
        ok(json!({"nonces": ["zz"], "expiresAt": 1, "maxTokens": 1})),
        ok(json!({"nonces": [], "expiresAt": "tomorrow", "maxTokens": 1})),
    ]);
    let api = TokenApi::new(&url).expect("base URL");

    let nonces = api.redeem("TAN-1234").await.expect("redeems");
    assert_eq!(nonces.nonces, [Nonce([0xab; 32]), Nonce([0xcd; 32])]);
    assert_eq!((nonces.expires_at, nonces.max_tokens), (T0 + DAY, 500));
    assert_eq!(format!("{:?}", nonces.nonces[0]), "Nonce(..)");
    let rfc = api.redeem("TAN-1234").await.expect("an RFC 3339 expiry");
    assert_eq!(rfc.expires_at, T0 + DAY);

    let tokens = upload_list(&phone(), T0);
    let receipt = api
        .upload(&nonces.nonces[0], "6400", &tokens[..2])
        .await
        .expect("uploads");
    assert_eq!(
        (receipt.accepted, receipt.level, receipt.skipped),
        (2, 0, 0)
    );
    let preimage = encounter(1).tokens.check;
    let receipt = api
        .upload_chained(&preimage, "64", &tokens[2..3])
        .await
        .expect("uploads chained");
    assert_eq!(
        (receipt.tracking_id.as_str(), receipt.level, receipt.skipped),
        ("0100", 2, 1)
    );
    let contribution = Contribution {
        preimage,
        duration: DurationBucket::Min15To30,
        attenuation: AttenuationBucket::Far,
    };
    assert_eq!(api.contribute(&[contribution]).await.expect("records"), 1);

    let error = api.redeem("wrong").await.expect_err("refused");
    assert!(
        matches!(&error, ClientError::Status { status: 400, code: Some(code), message, .. } if code == "invalid_tan" && message == "no such TAN"),
        "{error}"
    );
    for reason in [
        "nonce 0 is not 64 hex digits",
        "neither unix seconds nor an RFC 3339 time",
    ] {
        let error = api.redeem("TAN").await.expect_err("malformed answer");
        assert!(
            matches!(&error, ClientError::UnexpectedResponse { reason: r, .. } if r.contains(reason)),
            "{error}"
        );
    }

    let seen = seen.lock().expect("lock").clone();
    let hex_tokens = |range: std::ops::Range<usize>| -> serde_json::Value {
        tokens[range]
            .iter()
            .map(|(hash, day)| json!({"hash": hash.to_hex(), "day": day}))
            .collect()
    };
    let expected = [
        ("POST /v1/tokens/redeem", json!({"tan": "TAN-1234"})),
        ("POST /v1/tokens/redeem", json!({"tan": "TAN-1234"})),
        (
            "POST /v1/tokens",
            json!({"nonce": "ab".repeat(32), "area": "6400", "tokens": hex_tokens(0..2)}),
        ),
        (
            "POST /v1/tokens/chained",
            json!({"preimage": preimage.to_hex(), "area": "64", "tokens": hex_tokens(2..3)}),
        ),
        (
            "POST /v1/research",
            json!({"contributions": [{"preimage": preimage.to_hex(), "duration": 2, "attenuation": 2}]}),
        ),
        ("POST /v1/tokens/redeem", json!({"tan": "wrong"})),
    ];
    for (i, (target, body)) in expected.into_iter().enumerate() {
        assert_eq!(seen[i], (target.to_owned(), body), "request {i}");
    }
}
