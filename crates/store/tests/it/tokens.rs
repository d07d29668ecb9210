//! Encounter tokens against a real database: retention forgets token rows after 15 days and
//! their events after 21, while research counts stay; research counts add up; a rebuild
//! across retention runs gives the live state.

use confidant_core::corrections::{Actor, Command};
use confidant_core::{Event, ProviderId, RetentionPolicy, State};
use confidant_store::testing::TestDatabase;
use confidant_store::{Store, StoreError};

use crate::{
    BOTH, T0, claim, hasher, key, nonce, open, publish_tokens, region, tan, token_hash, tracking,
    uploaded,
};

/// Token activity of a health authority (provider `[p; 8]`, registered here) from T0: TANs
/// 0 to 3 imported and TANs 0 and 1 redeemed (nonces 0 to 5); at hour T0 a level-0 upload of
/// tokens 1 and 2 in area 10 and 3 and 4 in area 20 (tracking ID 8) and one of tokens 5 and
/// 6 (ID 9); at T0 + 2 h both areas' windows published and a level-1 chain from token 1 with
/// tokens 11 and 12 (ID 11); research from tokens 2, 3 and 5, in distinct cells; ID 9
/// withdrawn; at T0 + 3 h area 10's next window published. Returns that time.
pub async fn activity(store: &Store, p: u8) -> u64 {
    let h = hasher();
    let provider = ProviderId([p; 8]);
    store
        .register_provider(
            provider,
            format!("Health authority {p}"),
            region("DE"),
            h.token(&format!("authority-{p}")),
        )
        .await
        .expect("register");
    let outcome = store
        .correct(
            Command::ImportTans {
                provider,
                tans: (0..4).map(tan).collect(),
                expires_at: T0 + 30 * 86_400,
            },
            Actor::Console,
            T0,
            "TAN list".into(),
        )
        .await
        .expect("import");
    assert_eq!(outcome.tans_imported, 4);
    for t in 0..2u8 {
        let nonces = (3 * t..3 * t + 3).map(nonce).collect();
        store.redeem_tan(tan(t), nonces, T0).await.expect("redeem");
    }
    let (ten, twenty) = (region("10"), region("20"));
    let first = store
        .submit_tokens(
            nonce(0).nonce_hash,
            vec![
                uploaded(1, 0, &ten, T0),
                uploaded(2, 0, &ten, T0),
                uploaded(3, 1, &twenty, T0),
                uploaded(4, 2, &twenty, T0),
            ],
            tracking(8),
            T0 + 60,
        )
        .await
        .expect("upload");
    assert_eq!((first.level, first.inserted), (0, 4));
    store
        .submit_tokens(
            nonce(3).nonce_hash,
            vec![uploaded(5, 0, &ten, T0), uploaded(6, 0, &twenty, T0)],
            tracking(9),
            T0 + 120,
        )
        .await
        .expect("upload");
    // At T0 + 2 h both areas publish the window of hour T0 + 1 h, with hour T0's tokens.
    let now = T0 + 2 * 3600;
    for area in [&ten, &twenty] {
        assert_eq!(
            publish_tokens(store, area, now, 10).await.expect("publish"),
            1
        );
    }
    let chained = store
        .submit_chained(
            token_hash(1),
            2,
            vec![uploaded(11, 0, &ten, now), uploaded(12, 0, &twenty, now)],
            tracking(11),
            now,
        )
        .await
        .expect("chain");
    assert_eq!((chained.level, chained.inserted), (1, 2));
    store
        .contribute_research(vec![(token_hash(2), 1, 1), (token_hash(3), 0, 2)])
        .await
        .expect("research");
    store
        .contribute_research(vec![(token_hash(5), 2, 3)])
        .await
        .expect("research");
    store
        .correct(
            Command::WithdrawSubmission(tracking(9)),
            Actor::Console,
            now,
            "mistaken report".into(),
        )
        .await
        .expect("withdraw");
    let now = now + 3600;
    assert_eq!(
        publish_tokens(store, &ten, now, 10).await.expect("publish"),
        1
    );
    now
}

/// How many events of the log are of `kind`.
async fn count(store: &Store, kind: &str) -> usize {
    let events = store.events().await.expect("log");
    events.iter().filter(|e| e.kind() == kind).count()
}

/// The store's rows equal the replay of its log, a rebuild reproduces them, and `check`
/// agrees.
async fn consistent(store: &Store, what: &str) -> State {
    let live = store.projected_state().await.expect("projections");
    let digest = store.state_digest().await.expect("digest");
    let replayed = State::replay(&store.events().await.expect("log"));
    assert_eq!(live, replayed, "{what}: projections and replay");
    assert_eq!(digest, replayed.digest(), "{what}");
    store.rebuild().await.expect("rebuild");
    assert_eq!(
        store.state_digest().await.expect("digest"),
        digest,
        "{what}: rebuilt"
    );
    let report = store.check().await.expect("check");
    assert!(report.consistent(), "{what}: {report:?}");
    assert_eq!(report.live_digest, digest);
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_tokens_after_15_days_and_their_events_after_21() {
    let policy = RetentionPolicy::default();
    let h0 = T0 / 3600;
    let (ten, twenty) = (region("10"), region("20"));
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        let now = activity(&store, 1).await;
        let retain = async |at: u64| {
            store
                .apply_retention(policy.applied_at(at), policy.key_events_before_hour(at))
                .await
                .expect("retention")
        };
        let all_hours = h0 + 24 * 60;
        let live = |area| {
            let store = store.clone();
            async move {
                let tokens = store
                    .tokens_submitted(&area, 0, all_hours)
                    .await
                    .expect("tokens");
                tokens.into_iter().map(|(hash, _)| hash).collect::<Vec<_>>()
            }
        };
        let sorted = |seeds: &[u8]| {
            let mut hashes: Vec<_> = seeds.iter().map(|s| token_hash(*s)).collect();
            hashes.sort();
            hashes
        };

        let before = consistent(&store, "before").await;
        assert_eq!(before.tokens.len(), 8, "{dialect:?}");
        assert_eq!(before.token_submissions.len(), 3);
        let research = store.research().await.expect("research");
        assert_eq!(research.len(), 3);
        assert!(research.iter().all(|(_, n)| *n == 1), "{research:?}");
        assert_eq!(live(ten.clone()).await, sorted(&[1, 2, 11]));
        assert_eq!(live(twenty.clone()).await, sorted(&[3, 4, 12]));
        let withdrawn = store
            .tokens_withdrawn(&ten, 0, store.withdrawals().await.expect("serial"))
            .await
            .expect("withdrawn");
        assert_eq!(withdrawn.len(), 1);
        assert_eq!(count(&store, "tokens_submitted").await, 3);
        assert_eq!(count(&store, "tokens_researched").await, 2);
        assert!(now < T0 + 86_400);

        // Fifteen days after hour h0 began nothing is due yet.
        retain(h0 * 3600 + 15 * 86_400 + 3599).await;
        let state = consistent(&store, "15 days after hour h0 began").await;
        assert_eq!(state.tokens.len(), 8, "{dialect:?}");
        assert_eq!(state.token_submissions.len(), 3);

        // Fifteen days after it ended, its uploads (IDs 8 and 9) are forgotten, withdrawn
        // tokens included; the chain of hour h0 + 2 is kept.
        retain((h0 + 1) * 3600 + 15 * 86_400).await;
        let state = consistent(&store, "15 days after hour h0 ended").await;
        assert_eq!(
            state.token_submissions.keys().copied().collect::<Vec<_>>(),
            vec![tracking(11)],
            "{dialect:?}"
        );
        assert_eq!(live(ten.clone()).await, sorted(&[11]));
        assert_eq!(live(twenty.clone()).await, sorted(&[12]));
        assert!(
            store
                .tokens_withdrawn(&ten, 0, u64::MAX >> 1)
                .await
                .expect("withdrawn")
                .is_empty()
        );
        for id in [8, 9] {
            assert_eq!(
                store.token_submission(tracking(id)).await.expect("read"),
                None
            );
            assert!(
                store
                    .token_submission_areas(tracking(id))
                    .await
                    .expect("areas")
                    .is_empty()
            );
        }
        assert_eq!(
            store.first_token_hour(&ten).await.expect("hour"),
            Some(h0 + 2)
        );
        // A forgotten token proves nothing any more.
        let error = store
            .contribute_research(vec![(token_hash(1), 0, 0)])
            .await
            .expect_err("forgotten");
        assert!(
            matches!(
                error,
                StoreError::Domain(confidant_core::DomainError::UnknownProof)
            ),
            "{error:?}"
        );

        // A day later every token row is gone; the research counts and the events stay.
        retain(T0 + 16 * 86_400).await;
        let state = consistent(&store, "16 days").await;
        assert!(state.tokens.is_empty() && state.token_submissions.is_empty());
        assert!(live(ten.clone()).await.is_empty() && live(twenty.clone()).await.is_empty());
        assert_eq!(store.first_token_hour(&ten).await.expect("hour"), None);
        assert_eq!(store.research().await.expect("research"), research);
        // The areas are still known from their publication cursors.
        assert_eq!(
            store.token_areas().await.expect("areas"),
            vec![ten.clone(), twenty.clone()]
        );
        // The nonce claims expired with the 15 days too.
        assert!(
            state.claims.is_empty(),
            "{dialect:?}: {:?}",
            state.claims.keys()
        );
        assert_eq!(count(&store, "tokens_submitted").await, 3);
        assert_eq!(count(&store, "tokens_researched").await, 2);

        // 21 days after hour h0 began its events stay; after it ended, they are purged.
        let report = retain(h0 * 3600 + 21 * 86_400 + 3599).await;
        assert_eq!(report.purged_events, 0, "{dialect:?}");
        let report = retain((h0 + 1) * 3600 + 21 * 86_400).await;
        assert_eq!(
            report.purged_events, 4,
            "{dialect:?}: two uploads and two research marks of hour h0"
        );
        consistent(&store, "21 days after hour h0 ended").await;
        let events = store.events().await.expect("log");
        let chained: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind() == "tokens_submitted")
            .collect();
        assert!(
            matches!(chained[..], [Event::TokensSubmitted { hour, level: 1, .. }] if *hour == h0 + 2),
            "{chained:?}"
        );

        // A day later no token material is left in the log; research data is.
        let report = retain(T0 + 22 * 86_400).await;
        assert_eq!(report.purged_events, 1, "{dialect:?}");
        let state = consistent(&store, "22 days").await;
        assert_eq!(count(&store, "tokens_submitted").await, 0);
        assert_eq!(count(&store, "tokens_researched").await, 0);
        assert_eq!(count(&store, "research_recorded").await, 2);
        assert_eq!(count(&store, "tans_imported").await, 1);
        assert_eq!(count(&store, "tan_redeemed").await, 2);
        assert_eq!(store.research().await.expect("research"), research);
        let events = store.events().await.expect("log");
        assert!(
            events.iter().all(|e| e.key_material_hour().is_none()),
            "{dialect:?}: key material left in the log"
        );
        assert!(state.tokens.is_empty() && state.token_submissions.is_empty());
        store.close().await;
        db.finish().await;
    }
}

/// Contributions to a research cell that already has a count add to it: in one request, and
/// in requests after one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_counts_add_up_across_contributions() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        activity(&store, 1).await;
        // Token 4 (day T0 - 2, area 20, published) has not contributed yet; tokens 11 and 12
        // are not published yet. Token 4 into the cell token 2 went into would be another
        // day, so the cell of token 2 is filled again from token 1 (day T0).
        store
            .contribute_research(vec![(token_hash(1), 1, 1)])
            .await
            .expect("research");
        let research = store.research().await.expect("research");
        let state = State::replay(&store.events().await.expect("log"));
        assert_eq!(
            research,
            state
                .research
                .iter()
                .map(|(cell, n)| (*cell, *n))
                .collect::<Vec<_>>(),
            "{dialect:?}: research counts differ from the replayed log"
        );
        assert!(research.iter().any(|(_, n)| *n == 2), "{research:?}");
        assert!(store.check().await.expect("check").consistent());
        store.close().await;
        db.finish().await;
    }
}

/// A claim spent after one retention run and forgotten by the next (a nonce after its one
/// upload, a code's claim after its 43 keys) is not brought back by a rebuild: the rebuild
/// replays the spending and the second run in one segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_spent_between_two_retention_runs_stay_forgotten_after_a_rebuild() {
    let policy = RetentionPolicy::default();
    let retain = async |store: &Store, at: u64| {
        store
            .apply_retention(policy.applied_at(at), policy.key_events_before_hour(at))
            .await
            .expect("retention")
    };
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        let h = hasher();
        let provider = ProviderId([9; 8]);
        store
            .register_provider(provider, "Authority".into(), region("DE"), h.token("a"))
            .await
            .expect("register");
        store
            .correct(
                Command::ImportTans {
                    provider,
                    tans: vec![tan(0)],
                    expires_at: T0 + 86_400,
                },
                Actor::Console,
                T0,
                "TAN list".into(),
            )
            .await
            .expect("import");
        store
            .redeem_tan(tan(0), (0..3).map(nonce).collect(), T0)
            .await
            .expect("redeem");
        let upload = claim(&store, 1).await;
        retain(&store, T0 + 60).await;
        store
            .submit_tokens(
                nonce(0).nonce_hash,
                vec![uploaded(1, 0, &region("10"), T0)],
                tracking(8),
                T0 + 120,
            )
            .await
            .expect("upload");
        for (id, seeds) in [(1, 0..28), (2, 28..43)] {
            store
                .submit(
                    confidant_store::ClaimLookup::Token(upload),
                    seeds.map(|s| key(s, 0)).collect(),
                    tracking(id),
                    T0 + 120,
                )
                .await
                .expect("keys");
        }
        let report = retain(&store, T0 + 180).await;
        assert_eq!(
            report.claims, 2,
            "{dialect:?}: the spent nonce and code claims"
        );
        let live = consistent_before_rebuild(&store).await;
        assert!(!live.claims.contains_key(&nonce(0).claim));
        store.rebuild().await.expect("rebuild");
        let rebuilt = store.projected_state().await.expect("projections");
        assert_eq!(
            rebuilt.claims, live.claims,
            "{dialect:?}: the rebuild brought spent claims back"
        );
        assert_eq!(rebuilt, live);
        store.close().await;
        db.finish().await;
    }
}

/// The live projections, checked against the replay of the log.
async fn consistent_before_rebuild(store: &Store) -> State {
    let live = store.projected_state().await.expect("projections");
    assert_eq!(live, State::replay(&store.events().await.expect("log")));
    assert!(store.check().await.expect("check").consistent());
    live
}
