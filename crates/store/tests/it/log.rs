//! The log moves between stores: export from one backend, import into the other, rebuild, and
//! the state digest is the same. Damaged files are refused before anything is committed.

use confidant_core::corrections::{Actor, Command};
use confidant_core::logfile::{Decoder, Encoder, LogFileError, LogRecord};
use confidant_core::{Digest, Event, PublishedFile, Stream};
use confidant_store::testing::TestDatabase;
use confidant_store::{ClaimLookup, Dialect, Store, StoreError};

use crate::{T0, claim, key, open, region, tracking};

/// A log with providers, codes, claims, submissions, a withdrawal, a published batch,
/// encounter-token activity (TANs, nonces, uploads, token batches, a chain, research, a
/// withdrawal) and a retention run.
async fn populate(store: &Store) {
    for n in 1..=3u8 {
        let upload = claim(store, n).await;
        store
            .submit(
                ClaimLookup::Token(upload),
                vec![key(10 * n, 1), key(10 * n + 1, 2), key(10 * n + 2, 15)],
                tracking(n),
                T0 + 60,
            )
            .await
            .expect("submit");
    }
    store
        .correct(
            Command::WithdrawSubmission(tracking(2)),
            Actor::Console,
            T0 + 120,
            "reason".into(),
        )
        .await
        .expect("withdraw");
    crate::tokens::activity(store, 7).await;
    let hour = T0 / 3600 * 3600;
    store
        .publish(Event::BatchPublished {
            region: region("DE"),
            stream: Stream::Exports,
            start: hour,
            end: hour + 3600,
            keys_from: hour,
            held_from: hour + 3600,
            real_keys: 4,
            padding_keys: 0,
            seq: 0,
            chain_hash: Digest([0; 32]),
            revised_through: 1,
            revoked_keys: 0,
            files: vec![PublishedFile {
                path: format!("exports/DE/{hour}-{}-00001.zip", hour + 3600),
                sha256: Digest([9; 32]),
                bytes: 1234,
                seq: 0,
            }],
        })
        .await
        .expect("publish");
    store
        .apply_retention(
            Event::RetentionApplied {
                now: T0 + 3 * 86_400,
                keys_before_hour: T0 / 3600 - 24,
                files_ending_by: hour,
            },
            T0 / 3600 - 24 * 20,
        )
        .await
        .expect("retention");
}

/// The log of `store` as a log file, through the streaming export.
async fn export(store: &Store) -> Vec<u8> {
    let kind = match store.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    let mut encoder = Encoder::new(kind).expect("store kind");
    let mut bytes = Vec::new();
    encoder.header(&mut bytes);
    let exported = store
        .export_log(4, |page| {
            for (_, record) in &page {
                encoder.event(&record.payload, &mut bytes)?;
            }
            Ok::<_, confidant_core::logfile::EncodeError>(())
        })
        .await
        .expect("store")
        .expect("encoder");
    assert_eq!(exported, encoder.events());
    encoder.finish(&mut bytes);
    bytes
}

/// What the token reads of `store` return.
async fn token_view(store: &Store) -> String {
    let mut view = Vec::new();
    for area in store.token_areas().await.expect("areas") {
        view.push(format!(
            "{area}: {:?} {:?} {:?}",
            store
                .tokens_submitted(&area, 0, T0 / 3600 + 1000)
                .await
                .expect("tokens"),
            store
                .tokens_withdrawn(&area, 0, 1000)
                .await
                .expect("tokens"),
            store.cursor(&area, Stream::Tokens).await.expect("cursor"),
        ));
    }
    for id in [8, 9, 11] {
        view.push(format!(
            "{:?}",
            store.token_submission(tracking(id)).await.expect("read")
        ));
    }
    view.push(format!("{:?}", store.research().await.expect("research")));
    view.join("\n")
}

/// Imports `bytes` as `confidant log import` does: decode while appending, commit only after
/// the trailer checked out.
async fn import(store: &Store, bytes: &[u8]) -> Result<u64, LogFileError> {
    let mut import = store.begin_import().await.expect("empty store");
    let mut decoder = Decoder::new();
    let loaded = async {
        for slice in bytes.chunks(97) {
            decoder.push(slice)?;
            let mut batch = Vec::new();
            while let Some(record) = decoder.next_record()? {
                batch.push(record);
            }
            import.append(&batch).await.expect("append");
        }
        decoder.finish()
    }
    .await;
    match loaded {
        Ok(_) => Ok(import.commit().await.expect("commit")),
        Err(error) => {
            import.abort().await;
            Err(error)
        }
    }
}

async fn round_trip(from: Dialect, to: Dialect) {
    let source_db = TestDatabase::create(from).await;
    let source = open(&source_db).await;
    populate(&source).await;
    let report = source.check().await.expect("check");
    assert!(report.consistent(), "{report:?}");
    let live = source.state_digest().await.expect("digest");
    assert_eq!(live, report.live_digest);
    let bytes = export(&source).await;
    let source_records: Vec<LogRecord> = source
        .events_after(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    // The token events are in it.
    for kind in [
        "tans_imported",
        "tan_redeemed",
        "tokens_submitted",
        "tokens_researched",
        "research_recorded",
        "submissions_withdrawn",
    ] {
        assert!(
            source_records.iter().any(|r| r.event.kind() == kind),
            "no {kind} event"
        );
    }
    assert!(source_records.iter().any(|r| matches!(
        r.event,
        Event::BatchPublished {
            stream: Stream::Tokens,
            ..
        }
    )));
    let tokens = token_view(&source).await;
    assert!(tokens.contains("level: 1"), "{tokens}");

    let target_db = TestDatabase::create(to).await;
    let target = open(&target_db).await;
    let events = import(&target, &bytes).await.expect("imports");
    assert_eq!(events, source_records.len() as u64);
    // Verbatim: the same payloads, in the same order.
    let imported: Vec<LogRecord> = target
        .events_after(0, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(imported, source_records);
    // The projections are untouched until the rebuild.
    assert!(target.providers().await.expect("providers").is_empty());
    assert_eq!(target.rebuild().await.expect("rebuild"), events);
    assert_eq!(target.state_digest().await.expect("digest"), live);
    let report = target.check().await.expect("check");
    assert!(report.consistent(), "{report:?}");
    assert_eq!(report.replayed_digest, live);
    assert_eq!(token_view(&target).await, tokens);
    // A store that holds anything refuses an import.
    assert!(matches!(
        target.begin_import().await,
        Err(StoreError::NotEmpty { table: "events" })
    ));
    for (store, db) in [(source, source_db), (target, target_db)] {
        store.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_imported_into_postgres_gives_the_same_state() {
    round_trip(Dialect::Sqlite, Dialect::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_imported_into_sqlite_gives_the_same_state() {
    round_trip(Dialect::Postgres, Dialect::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_and_leave_the_store_empty() {
    let source_db = TestDatabase::sqlite();
    let source = open(&source_db).await;
    populate(&source).await;
    let bytes = export(&source).await;
    source.close().await;
    source_db.finish().await;

    let middle = bytes.len() / 2;
    let mut flipped = bytes.clone();
    flipped[middle] ^= 0x20;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated mid-frame", bytes[..middle].to_vec()),
        (
            "truncated before the trailer",
            bytes[..bytes.len() - 48].to_vec(),
        ),
        ("one byte flipped", flipped),
    ];
    for dialect in crate::BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        for (what, damaged) in &cases {
            let error = import(&store, damaged).await.expect_err(what);
            assert!(
                error.offset() <= middle as u64 || what.contains("trailer"),
                "{what}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .contains(&format!("byte {}", error.offset()))
            );
            assert!(
                store.events().await.expect("events").is_empty(),
                "{dialect:?}, {what}: events were committed"
            );
        }
        // Still empty and usable: the intact file goes in.
        import(&store, &bytes).await.expect("intact file imports");
        store.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_reports_progress_and_keeps_the_state() {
    for dialect in crate::BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        populate(&store).await;
        let before = store.state_digest().await.expect("digest");
        let mut seen = Vec::new();
        let events = store
            .rebuild_with_progress(|p| seen.push(p))
            .await
            .expect("rebuild");
        let last = seen.last().expect("a final report");
        assert_eq!((last.replayed, last.total), (events, events));
        assert_eq!(store.state_digest().await.expect("digest"), before);
        assert!(store.check().await.expect("check").consistent());
        store.close().await;
        db.finish().await;
    }
}

/// A log the rules never write (a key submitted twice, no retention between) still rebuilds
/// to exactly `State::replay`: the fast path, which drops the keys' primary key,
/// finds the duplicate when it puts the key back and replays again the careful way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_twice_rebuilds_as_apply_says() {
    use confidant_core::{ClaimId, CodeFormat, Credential, ProviderId, State};
    let region = region("DE");
    let provider = ProviderId([1; 8]);
    let mut events = vec![Event::ProviderRegistered {
        provider,
        name: "Lab".into(),
        region: region.clone(),
        token_hash: Digest([1; 32]),
    }];
    for n in 1..=2u8 {
        events.push(Event::CodeIssued {
            code_hash: Digest([10 + n; 32]),
            provider,
            format: CodeFormat::Long,
            expires_at: T0 + 86_400,
        });
        events.push(Event::CodeRedeemed {
            code_hash: Digest([10 + n; 32]),
            claim: ClaimId([n; 16]),
            provider,
            region: region.clone(),
            expires_at: T0 + 86_400,
            key_budget: 43,
            credential: Credential::UploadToken {
                token_hash: Digest([20 + n; 32]),
            },
        });
        events.push(Event::KeysSubmitted {
            submission: tracking(n),
            claim: ClaimId([n; 16]),
            provider,
            region: region.clone(),
            hour: T0 / 3600 + u64::from(n),
            keys: vec![key(7, u32::from(n)), key(30 + n, 1)],
            skipped: 0,
            dropped: 0,
        });
        if n == 1 {
            // Forgets nothing, but ends a segment: the second submission is written apart.
            events.push(Event::RetentionApplied {
                now: 0,
                keys_before_hour: 0,
                files_ending_by: 0,
            });
        }
    }
    let expected = State::replay(&events).digest();
    let records: Vec<LogRecord> = events.into_iter().map(LogRecord::new).collect();
    for dialect in crate::BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        store.import(&records).await.expect("import");
        assert_eq!(store.rebuild().await.expect("rebuild"), 8);
        assert_eq!(
            store.state_digest().await.expect("digest"),
            expected,
            "{dialect:?}"
        );
        assert!(store.check().await.expect("check").consistent());
        store.close().await;
        db.finish().await;
    }
}
