//! `feed verify | inspect` on real feed directories written with `confidant_core::feed`.

use std::fs;
use std::path::{Path, PathBuf};

use confidant_core::feed::{self, FeedFile, FeedFollower, FeedIndex, IndexEntry};
use confidant_core::{KeyData, Region, StoredKey};
use gaen::SigningKey;
use rand_core::OsRng;

use crate::{confidant, fails, ok, path_str};

const KEY_ID: &str = "feed-1";
/// An ENIN at midnight, early 2025.
const DAY0: u32 = 2_898_720;

fn region() -> Region {
    Region::try_from("DE".to_owned()).expect("valid region")
}

fn key(n: u32) -> StoredKey {
    let mut data = [0u8; 16];
    data[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    data[4..8].copy_from_slice(&n.to_le_bytes());
    StoredKey {
        key_data: KeyData(data),
        rolling_start: DAY0 + (n % 3) * 144,
        rolling_period: 144,
        transmission_risk: [2, 5][(n % 2) as usize],
    }
}

/// One encoded file and what it holds.
#[derive(Clone)]
struct File {
    content: FeedFile,
    bytes: Vec<u8>,
}

impl File {
    fn sign(content: FeedFile, signer: &SigningKey) -> Self {
        let bytes = content.encode(signer, KEY_ID).expect("encodes");
        Self { content, bytes }
    }

    fn name(&self) -> String {
        feed::file_name(self.content.kind, self.content.seq)
    }

    fn entry(&self) -> IndexEntry {
        IndexEntry::describe(&self.bytes, &self.content)
    }
}

/// A region's published history: deltas 1..=n (delta `i` adds keys 3i..3i+3 and removes
/// the first key of delta `i - 1`) and the snapshot after each.
struct History {
    deltas: Vec<File>,
    snapshots: Vec<File>,
}

impl History {
    fn new(signer: &SigningKey, n: u32) -> Self {
        let mut follower = FeedFollower::new(region());
        let (mut deltas, mut snapshots) = (Vec::new(), Vec::new());
        for i in 1..=n {
            let added = (3 * i..3 * i + 3).map(key).collect();
            let removed = if i > 1 {
                vec![key(3 * (i - 1)).key_data]
            } else {
                vec![]
            };
            let start = 1_735_689_600 + u64::from(i) * 900;
            let delta = File::sign(
                follower.next_delta(start, start + 900, added, removed),
                signer,
            );
            follower
                .apply(&delta.bytes, &delta.content)
                .expect("applies");
            snapshots.push(File::sign(follower.snapshot(start + 900), signer));
            deltas.push(delta);
        }
        Self { deltas, snapshots }
    }

    fn delta(&self, seq: u64) -> &File {
        &self.deltas[seq as usize - 1]
    }

    fn snapshot(&self, seq: u64) -> &File {
        &self.snapshots[seq as usize - 1]
    }

    fn live_keys_after(&self, seq: u64) -> usize {
        self.snapshot(seq).content.added.len()
    }
}

/// A feed directory in a temporary folder with the public key of `signer` beside it.
struct Dir {
    temp: tempfile::TempDir,
    feed: PathBuf,
    public_key: PathBuf,
}

impl Dir {
    fn new(signer: &SigningKey) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let feed = temp.path().join("DE");
        fs::create_dir(&feed).expect("mkdir");
        let public_key = write_public_key(temp.path(), "public-key.pem", signer);
        Self {
            temp,
            feed,
            public_key,
        }
    }

    fn write(&self, file: &File) {
        fs::write(self.feed.join(file.name()), &file.bytes).expect("write");
    }

    fn write_index(&self, snapshot: Option<&File>, deltas: &[&File]) {
        let index = FeedIndex::new(
            region(),
            snapshot.map(File::entry),
            deltas.iter().map(|d| d.entry()).collect(),
        );
        fs::write(
            self.feed.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("serialises"),
        )
        .expect("write index");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.feed.join(name)
    }

    fn verify_with(&self, keys: &[&Path]) -> std::process::Output {
        let mut args = vec!["feed", "verify", path_str(&self.feed)];
        for key in keys {
            args.extend(["--public-key", path_str(key)]);
        }
        confidant(&args)
    }

    fn verify(&self) -> std::process::Output {
        self.verify_with(&[&self.public_key])
    }
}

fn write_public_key(dir: &Path, name: &str, signer: &SigningKey) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, signer.verifying_key().to_pem()).expect("write key");
    path
}

/// Deltas 1..=4 on disk, the snapshot after delta 1 and an index listing it and deltas 2..=4.
fn snapshot_and_three_deltas(signer: &SigningKey) -> (History, Dir) {
    let history = History::new(signer, 4);
    let dir = Dir::new(signer);
    for delta in &history.deltas {
        dir.write(delta);
    }
    dir.write(history.snapshot(1));
    dir.write_index(
        Some(history.snapshot(1)),
        &[history.delta(2), history.delta(3), history.delta(4)],
    );
    (history, dir)
}

#[test]
fn verify_accepts_a_snapshot_and_three_deltas_and_counts_them() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    let live = history.live_keys_after(4);
    assert_eq!(
        live,
        4 * 3 - 3,
        "the fixture removes one key per delta after the first"
    );

    let out = ok(dir.verify());
    assert_eq!(
        out.trim_end(),
        format!(
            "feed DE: snapshot at delta 1, deltas 2..=4 verified (3 files); {live} live keys; \
             history from delta 1 matches the snapshot"
        )
    );

    // Without delta 1 there is no full history to replay, and no claim about it.
    fs::remove_file(dir.path(&feed::delta_name(1))).expect("remove");
    let out = ok(dir.verify());
    assert_eq!(
        out.trim_end(),
        format!("feed DE: snapshot at delta 1, deltas 2..=4 verified (3 files); {live} live keys")
    );
}

#[test]
fn verify_without_a_snapshot_and_with_deltas_polled_after_the_index() {
    let signer = SigningKey::generate(&mut OsRng);
    let history = History::new(&signer, 5);
    let dir = Dir::new(&signer);
    for delta in &history.deltas {
        dir.write(delta);
    }
    dir.write_index(None, &[history.delta(1), history.delta(2)]);
    let out = ok(dir.verify());
    assert_eq!(
        out.trim_end(),
        format!(
            "feed DE: no snapshot, deltas 1..=5 verified (5 files, 3 of them beyond index.json's \
             latestSeq 2); {} live keys",
            history.live_keys_after(5)
        )
    );

    // Polled-ahead files count only while contiguous: without delta 4, delta 5 is not applied.
    fs::remove_file(dir.path(&feed::delta_name(4))).expect("remove");
    let output = dir.verify();
    let err = crate::stderr(&output);
    let out = ok(output);
    assert!(
        out.contains("deltas 1..=3 verified (3 files, 1 of them"),
        "{out}"
    );
    assert!(out.contains(&format!("{} live keys", history.live_keys_after(3))));
    assert!(err.contains("delta 4 is missing"), "{err}");

    // A polled-ahead file is checked like any other.
    let mut bad = history.delta(3).clone();
    bad.bytes[30] ^= 1;
    dir.write(&bad);
    let err = fails(dir.verify());
    assert!(err.contains("delta-0000000003.cfeed: signature"), "{err}");
}

#[test]
fn verify_names_a_delta_listed_in_the_index_but_missing() {
    let signer = SigningKey::generate(&mut OsRng);
    let (_, dir) = snapshot_and_three_deltas(&signer);
    fs::remove_file(dir.path(&feed::delta_name(3))).expect("remove");
    let err = fails(dir.verify());
    assert_eq!(
        err.trim_end(),
        "error: delta-0000000003.cfeed is listed in index.json but missing"
    );
}

#[test]
fn verify_refuses_a_delta_with_a_flipped_byte() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    let mut tampered = history.delta(3).clone();
    // Byte 20 is the first byte of `prev` in a "DE" file: the structure stays valid.
    tampered.bytes[20] ^= 0x01;
    dir.write(&tampered);
    let err = fails(dir.verify());
    assert!(
        err.contains("error: delta-0000000003.cfeed: SHA-256 does not match index.json"),
        "{err}"
    );

    // The index is not signed: with an index that matches the tampered bytes, the signature
    // still gives it away.
    dir.write_index(
        Some(history.snapshot(1)),
        &[history.delta(2), &tampered, history.delta(4)],
    );
    let err = fails(dir.verify());
    assert!(
        err.contains(
            "error: delta-0000000003.cfeed: signature (key id \"feed-1\") does not verify"
        ),
        "{err}"
    );
}

#[test]
fn verify_refuses_a_delta_signed_by_another_key() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    let other = SigningKey::generate(&mut OsRng);
    let resigned = File::sign(history.delta(3).content.clone(), &other);
    assert_ne!(resigned.bytes, history.delta(3).bytes);
    dir.write(&resigned);
    dir.write_index(
        Some(history.snapshot(1)),
        &[history.delta(2), &resigned, history.delta(4)],
    );
    let err = fails(dir.verify());
    assert!(
        err.contains("delta-0000000003.cfeed: signature (key id \"feed-1\") does not verify"),
        "{err}"
    );

    // Given both keys (a rotation), delta 3 verifies, and delta 4 shows that it is not the
    // delta 3 the chain was built on.
    let other_key = write_public_key(dir.temp.path(), "other.pem", &other);
    let err = fails(dir.verify_with(&[&dir.public_key, &other_key]));
    assert!(
        err.contains(
            "error: delta-0000000004.cfeed: broken chain at delta 4: its predecessor hash does \
             not match delta 3"
        ),
        "{err}"
    );
}

#[test]
fn verify_accepts_files_signed_by_any_given_key() {
    let old = SigningKey::generate(&mut OsRng);
    let new = SigningKey::generate(&mut OsRng);
    let history = History::new(&old, 3);
    let dir = Dir::new(&old);
    // Delta 3 signed by the new key: same content and prev, so the chain still holds.
    let delta3 = File::sign(history.delta(3).content.clone(), &new);
    for delta in [history.delta(1), history.delta(2), &delta3] {
        dir.write(delta);
    }
    dir.write_index(None, &[history.delta(1), history.delta(2), &delta3]);
    let new_key = write_public_key(dir.temp.path(), "new.pem", &new);
    let out = ok(dir.verify_with(&[&new_key, &dir.public_key]));
    assert!(out.contains("deltas 1..=3 verified (3 files)"), "{out}");
    let err = fails(dir.verify_with(&[&dir.public_key]));
    assert!(err.contains("delta-0000000003.cfeed: signature"), "{err}");
}

#[test]
fn verify_reports_a_gap_in_the_index() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    dir.write_index(
        Some(history.snapshot(1)),
        &[history.delta(2), history.delta(4)],
    );
    let err = fails(dir.verify());
    assert_eq!(
        err.trim_end(),
        "error: delta-0000000004.cfeed: gap: expected delta 3, found delta 4"
    );
}

#[test]
fn verify_refuses_the_wrong_public_key() {
    let signer = SigningKey::generate(&mut OsRng);
    let (_, dir) = snapshot_and_three_deltas(&signer);
    let stranger = SigningKey::generate(&mut OsRng);
    let wrong = write_public_key(dir.temp.path(), "wrong.pem", &stranger);
    let err = fails(dir.verify_with(&[&wrong]));
    assert!(
        err.contains(
            "error: snapshot-0000000001.cfeed: signature (key id \"feed-1\") does not verify"
        ),
        "{err}"
    );
}

#[test]
fn verify_checks_the_snapshot_against_the_full_history() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    // A correctly signed snapshot at delta 1, with delta 1's hash, but one key more.
    let mut content = history.snapshot(1).content.clone();
    content.added.push(key(1000));
    let forged = File::sign(content, &signer);
    dir.write(&forged);
    dir.write_index(
        Some(&forged),
        &[history.delta(2), history.delta(3), history.delta(4)],
    );
    let err = fails(dir.verify());
    assert!(
        err.contains(
            "snapshot-0000000001.cfeed: replaying deltas 1..=1 does not give the snapshot's \
             keys: 0 keys only in the replay, 1 only in the snapshot"
        ),
        "{err}"
    );

    // Without delta 1 in the folder the forgery cannot be seen, and the rest checks.
    fs::remove_file(dir.path(&feed::delta_name(1))).expect("remove");
    ok(dir.verify());
}

#[test]
fn verify_explains_a_bad_or_missing_index() {
    let signer = SigningKey::generate(&mut OsRng);
    let (_, dir) = snapshot_and_three_deltas(&signer);
    fs::write(dir.path("index.json"), "{\"format\": 1, \"region\": ").expect("write");
    let err = fails(dir.verify());
    assert!(err.contains("index.json: not a valid feed index"), "{err}");
    fs::remove_file(dir.path("index.json")).expect("remove");
    let err = fails(dir.verify());
    assert!(err.contains("index.json is missing from"), "{err}");
}

#[test]
fn inspect_prints_seq_and_key_counts() {
    let signer = SigningKey::generate(&mut OsRng);
    let (history, dir) = snapshot_and_three_deltas(&signer);
    let path = dir.path(&feed::delta_name(3));
    let delta = &history.delta(3).content;
    let out = ok(confidant(&["feed", "inspect", path_str(&path)]));
    assert!(out.contains("kind:      delta\n"), "{out}");
    assert!(out.contains("region:    DE\n"), "{out}");
    assert!(out.contains("seq:       3\n"), "{out}");
    assert!(out.contains("added:     3 keys\n"), "{out}");
    assert!(out.contains("removed:   1 key\n"), "{out}");
    assert!(out.contains("key id:    feed-1\n"), "{out}");
    assert!(
        out.contains(&format!("prev:      {}\n", hex::encode(delta.prev))),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "start:     {} (2025-01-01T00:45:00Z)\n",
            delta.start
        )),
        "{out}"
    );
    assert!(!out.contains("\n+ "), "keys only with --keys: {out}");

    let out = ok(confidant(&[
        "feed",
        "inspect",
        path_str(&path),
        "--keys",
        "--public-key",
        path_str(&dir.public_key),
    ]));
    assert!(out.contains("signature: verified\n"), "{out}");
    let added: Vec<&str> = out.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(added.len(), 3, "{out}");
    let k = key(9);
    assert!(
        added.contains(
            &format!(
                "+ {} {} 144 {}",
                hex::encode(k.key_data.0),
                k.rolling_start,
                k.transmission_risk
            )
            .as_str()
        ),
        "{out}"
    );
    let removed: Vec<&str> = out.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(removed, [format!("- {}", hex::encode(key(6).key_data.0))]);

    let snapshot = dir.path(&feed::snapshot_name(1));
    let out = ok(confidant(&["feed", "inspect", path_str(&snapshot)]));
    assert!(out.contains("kind:      snapshot\n"), "{out}");
    assert!(out.contains("seq:       1\n"), "{out}");
    assert!(out.contains("added:     3 keys\n"), "{out}");

    let stranger = SigningKey::generate(&mut OsRng);
    let wrong = write_public_key(dir.temp.path(), "wrong.pem", &stranger);
    let err = fails(confidant(&[
        "feed",
        "inspect",
        path_str(&path),
        "--public-key",
        path_str(&wrong),
    ]));
    assert!(err.contains("delta-0000000003.cfeed: signature"), "{err}");
}
