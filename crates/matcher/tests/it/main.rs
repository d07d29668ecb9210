//! The matcher's sealed storage on real files: what goes in comes back only with the same
//! key, a damaged log is refused at the damage, compaction keeps what it is given, and the
//! file never holds a tuple's id in the clear. (Phones against a running matcher over HTTP:
//! `crates/client/tests/it/confidential.rs`.)

use confidant_core::confidential::ContactTuple;
use confidant_core::encounter::DurationBucket;
use confidant_matcher::seal::{SealError, SealedLog, SealingKey};

fn tuple(own: u8, peer: u8, day: u32) -> ContactTuple {
    ContactTuple {
        own: [own; 16],
        peer: [peer; 16],
        day,
        duration: DurationBucket::Min15To30,
    }
}

#[test]
fn uploads_come_back_only_with_the_sealing_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tuples.sealed");
    let key = SealingKey::ephemeral();
    let uploads = vec![
        vec![tuple(0xA1, 0xB2, 20_000), tuple(0xA1, 0xC3, 20_001)],
        vec![tuple(0xD4, 0xE5, 20_002)],
    ];
    {
        let (mut log, found) = SealedLog::open(&path, &key).expect("new log");
        assert!(found.is_empty());
        for upload in &uploads {
            log.append(upload).expect("sealed");
        }
    }
    let (_, found) = SealedLog::open(&path, &key).expect("reopened");
    assert_eq!(found, uploads);

    // No id is on disk in the clear.
    let bytes = std::fs::read(&path).expect("log");
    for id in [0xA1u8, 0xB2, 0xC3, 0xD4, 0xE5] {
        assert!(
            !bytes.windows(16).any(|w| w == [id; 16]),
            "id {id:#x} found in the sealed log"
        );
    }

    // Another key (another TEE, another measurement) opens nothing.
    match SealedLog::open(&path, &SealingKey::ephemeral()) {
        Err(SealError::Damaged { offset: 0, .. }) => {}
        other => panic!(
            "expected the first record refused, got {:?}",
            other.map(|(_, u)| u)
        ),
    }
}

#[test]
fn a_damaged_or_truncated_log_is_refused_at_the_damage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tuples.sealed");
    let key = SealingKey::ephemeral();
    let (mut log, _) = SealedLog::open(&path, &key).expect("new log");
    log.append(&[tuple(1, 2, 3)]).expect("sealed");
    let first_len = std::fs::metadata(&path).expect("log").len();
    log.append(&[tuple(4, 5, 6)]).expect("sealed");
    drop(log);
    let good = std::fs::read(&path).expect("log");

    let mut flipped = good.clone();
    flipped[first_len as usize + 10] ^= 1;
    std::fs::write(&path, &flipped).expect("write");
    match SealedLog::open(&path, &key) {
        Err(SealError::Damaged { offset, .. }) => assert_eq!(offset, first_len),
        other => panic!(
            "expected damage at {first_len}, got {:?}",
            other.map(|(_, u)| u)
        ),
    }
    for cut in [1, 3, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).expect("write");
        assert!(
            matches!(SealedLog::open(&path, &key), Err(SealError::Damaged { .. })),
            "cut at {cut}"
        );
    }
}

#[test]
fn compaction_keeps_exactly_what_it_is_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tuples.sealed");
    let key = SealingKey::ephemeral();
    let (mut log, _) = SealedLog::open(&path, &key).expect("new log");
    log.append(&[tuple(1, 2, 3), tuple(1, 3, 10)])
        .expect("sealed");
    log.append(&[tuple(4, 5, 4)]).expect("sealed");
    let kept = vec![vec![tuple(1, 3, 10)]];
    log.compact(&kept).expect("compacted");
    log.append(&[tuple(6, 7, 11)])
        .expect("appended after compaction");
    assert_eq!(
        log.reload().expect("reload"),
        vec![vec![tuple(1, 3, 10)], vec![tuple(6, 7, 11)]]
    );
}
