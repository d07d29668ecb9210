//! Reporting flows against a real database: codes, claims, submissions, races, restarts.

use std::sync::Arc;

use confidant_core::{ClaimId, CodeFormat, CodePolicy, Credential, DomainError, ProviderId};
use confidant_store::testing::TestDatabase;
use confidant_store::{ClaimLookup, Store, StoreError, StoreOptions};

use crate::{BOTH, T0, claim, hasher, key, open, region, tracking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_skips_duplicates_spends_budget_and_checks_out() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        let upload = claim(&store, 1).await;
        let lookup = ClaimLookup::Token(upload);

        let first = store
            .submit(
                lookup.clone(),
                vec![key(1, 0), key(2, 1), key(3, 20)],
                tracking(1),
                T0 + 10,
            )
            .await
            .expect("first upload");
        assert_eq!(
            (first.inserted, first.skipped, first.dropped),
            (2, 0, 1),
            "{dialect:?}"
        );

        let second = store
            .submit(
                lookup.clone(),
                vec![key(2, 1), key(4, 2)],
                tracking(2),
                T0 + 20,
            )
            .await
            .expect("second upload");
        assert_eq!((second.inserted, second.skipped), (1, 1));

        let submission = store
            .submission(tracking(1))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(submission.inserted, 2);
        assert_eq!(submission.hour, (T0 + 10) / 3600, "stored to the hour only");

        // 43 - 3 = 40 left: 41 new keys in two requests of 28 + 13 fail on the second.
        let many: Vec<_> = (10..38).map(|s| key(s, 0)).collect();
        store
            .submit(lookup.clone(), many, tracking(3), T0 + 30)
            .await
            .expect("28 keys");
        let over: Vec<_> = (40..53).map(|s| key(s, 0)).collect();
        let error = store
            .submit(lookup.clone(), over, tracking(4), T0 + 40)
            .await
            .expect_err("over budget");
        assert!(
            matches!(
                error,
                StoreError::Domain(DomainError::KeyBudgetExceeded {
                    remaining: 12,
                    requested: 13
                })
            ),
            "{error:?}"
        );
        assert!(
            store.submission(tracking(4)).await.expect("read").is_none(),
            "refused = not stored"
        );

        let report = store.check().await.expect("check");
        assert!(report.consistent(), "{report:?}");
        assert_eq!(report.events, 3 + 3);
        store.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_redeemed_once_even_by_racing_processes() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        // Two independent stores on one database stand for two server processes.
        let a = open(&db).await;
        let b = open(&db).await;
        let h = hasher();
        a.register_provider(ProviderId([1; 8]), "Lab".into(), region("DE"), h.token("t"))
            .await
            .expect("register");
        for round in 0..10u8 {
            let code = h.code(&format!("race-{round}"));
            a.issue_code(
                h.token("t"),
                CodeFormat::Long,
                None,
                CodePolicy::default(),
                code,
                T0,
            )
            .await
            .expect("issue");
            let redeem = |store: Store, n: u8| async move {
                store
                    .redeem_code(
                        code,
                        ClaimId([round, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                        Credential::UploadToken {
                            token_hash: hasher().token(&format!("u-{round}-{n}")),
                        },
                        T0 + 1,
                    )
                    .await
            };
            let (x, y) = tokio::join!(redeem(a.clone(), 1), redeem(b.clone(), 2));
            let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "{dialect:?} round {round}: {x:?} {y:?}");
            let loser = if x.is_ok() { y } else { x };
            assert!(matches!(
                loser,
                Err(StoreError::Domain(DomainError::InvalidCode))
            ));
        }
        a.close().await;
        b.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_submissions_survive_a_restart() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        let upload = claim(&store, 7).await;
        store
            .submit(
                ClaimLookup::Token(upload),
                vec![key(9, 1)],
                tracking(9),
                T0 + 5,
            )
            .await
            .expect("submit");
        let before = store.projected_state().await.expect("state");
        store.close().await;

        let reopened = open(&db).await;
        assert_eq!(reopened.projected_state().await.expect("state"), before);
        assert!(
            reopened
                .submission(tracking(9))
                .await
                .expect("read")
                .is_some()
        );
        assert_eq!(reopened.rebuild().await.expect("rebuild"), 4);
        assert_eq!(
            reopened.projected_state().await.expect("state"),
            before,
            "rebuild reproduces state"
        );
        assert!(reopened.check().await.expect("check").consistent());
        reopened.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_group_committed_and_all_kept() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = Arc::new(
            Store::open(db.url(), StoreOptions { max_batch: 64 })
                .await
                .expect("open"),
        );
        let mut uploads = Vec::new();
        for n in 0..20u8 {
            uploads.push(claim(&store, n).await);
        }
        let mut tasks = Vec::new();
        for (n, upload) in uploads.into_iter().enumerate() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let n = n as u8;
                store
                    .submit(
                        ClaimLookup::Token(upload),
                        vec![key(100 + n, 0), key(200 - n, 1)],
                        tracking(n),
                        T0 + 60,
                    )
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").expect("acknowledged").inserted, 2);
        }
        let state = store.projected_state().await.expect("state");
        assert_eq!(state.submissions.len(), 20);
        assert_eq!(state.keys.len(), 40);
        store.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_stops_codes_and_uploads_until_reinstated() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let store = open(&db).await;
        let upload = claim(&store, 3).await;
        let h = hasher();
        assert!(
            store
                .set_suspended(ProviderId([3; 8]), true)
                .await
                .expect("suspend")
        );
        assert!(
            !store
                .set_suspended(ProviderId([3; 8]), true)
                .await
                .expect("again"),
            "no-op"
        );
        let issue = store
            .issue_code(
                h.token("token-3"),
                CodeFormat::Short,
                None,
                CodePolicy::default(),
                h.code("x"),
                T0,
            )
            .await;
        assert!(matches!(
            issue,
            Err(StoreError::Domain(DomainError::ProviderSuspended))
        ));
        let upload_result = store
            .submit(
                ClaimLookup::Token(upload),
                vec![key(1, 0)],
                tracking(1),
                T0 + 5,
            )
            .await;
        assert!(matches!(
            upload_result,
            Err(StoreError::Domain(DomainError::ProviderSuspended))
        ));
        assert!(
            store
                .set_suspended(ProviderId([3; 8]), false)
                .await
                .expect("reinstate")
        );
        store
            .submit(
                ClaimLookup::Token(upload),
                vec![key(1, 0)],
                tracking(1),
                T0 + 5,
            )
            .await
            .expect("works again");
        assert!(matches!(
            store.set_suspended(ProviderId([99; 8]), true).await,
            Err(StoreError::Domain(DomainError::UnknownProvider))
        ));
        store.close().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_covid_shield_app_key_claims_once_even_when_racing() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let a = open(&db).await;
        let b = open(&db).await;
        let h = hasher();
        a.register_provider(
            ProviderId([1; 8]),
            "Lab".into(),
            region("302"),
            h.token("t"),
        )
        .await
        .expect("register");
        for round in 0..5u8 {
            let app_key = confidant_core::Key32([round; 32]);
            let mut redeems = Vec::new();
            for n in 0..2u8 {
                let code = h.code(&format!("app-{round}-{n}"));
                a.issue_code(
                    h.token("t"),
                    CodeFormat::Short,
                    None,
                    CodePolicy::default(),
                    code,
                    T0,
                )
                .await
                .expect("issue");
                let store = if n == 0 { a.clone() } else { b.clone() };
                let credential = Credential::CovidShield {
                    app_public_key: app_key,
                    server_public_key: confidant_core::Key32([100 + round * 2 + n; 32]),
                };
                let claim = ClaimId([round, n, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
                redeems
                    .push(async move { store.redeem_code(code, claim, credential, T0 + 1).await });
            }
            let second = redeems.pop().expect("two");
            let first = redeems.pop().expect("two");
            let (x, y) = tokio::join!(first, second);
            let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "{dialect:?}: {x:?} {y:?}");
            let loser = if x.is_ok() { y } else { x };
            assert!(
                matches!(
                    loser,
                    Err(StoreError::Domain(DomainError::AppKeyRegistered))
                ),
                "{loser:?}"
            );
        }
        a.close().await;
        b.close().await;
        db.finish().await;
    }
}
