//! Property: for random operation sequences, live projections equal the replay of the log,
//! and SQLite and PostgreSQL end in the same state.

use confidant_core::{ClaimId, CodeFormat, CodePolicy, Credential, ProviderId, State};
use confidant_store::testing::TestDatabase;
use confidant_store::{ClaimLookup, Dialect, StoreError};
use proptest::prelude::*;

use crate::{T0, hasher, key, open, region, tracking};

#[derive(Clone, Debug)]
enum Op {
    Register(u8),
    Suspend(u8, bool),
    Issue {
        provider: u8,
        code: u8,
        format: u8,
    },
    Redeem {
        code: u8,
        claim: u8,
    },
    Submit {
        claim: u8,
        keys: Vec<(u8, u8)>,
        id: u8,
    },
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4).prop_map(Op::Register),
        (0u8..4, any::<bool>()).prop_map(|(p, s)| Op::Suspend(p, s)),
        (0u8..4, 0u8..12, 0u8..3).prop_map(|(provider, code, format)| Op::Issue {
            provider,
            code,
            format
        }),
        (0u8..12, 0u8..6).prop_map(|(code, claim)| Op::Redeem { code, claim }),
        (
            0u8..6,
            proptest::collection::vec((0u8..40, 0u8..16), 0..6),
            any::<u8>()
        )
            .prop_map(|(claim, keys, id)| Op::Submit { claim, keys, id }),
        (1u16..2000).prop_map(Op::Advance),
    ]
}

/// Runs `ops` on a fresh database; domain refusals are expected, database errors are not.
async fn run(dialect: Dialect, ops: &[Op]) -> State {
    let db = TestDatabase::create(dialect).await;
    let store = open(&db).await;
    let h = hasher();
    let mut now = T0;
    for op in ops {
        let result: Result<(), StoreError> = match op {
            Op::Register(p) => {
                store
                    .register_provider(
                        ProviderId([*p; 8]),
                        format!("P{p}"),
                        region("DE"),
                        h.token(&format!("t{p}")),
                    )
                    .await
            }
            Op::Suspend(p, s) => store.set_suspended(ProviderId([*p; 8]), *s).await.map(drop),
            Op::Issue {
                provider,
                code,
                format,
            } => store
                .issue_code(
                    h.token(&format!("t{provider}")),
                    CodeFormat::ALL[*format as usize],
                    None,
                    CodePolicy::default(),
                    h.code(&format!("c{code}")),
                    now,
                )
                .await
                .map(drop),
            Op::Redeem { code, claim } => store
                .redeem_code(
                    h.code(&format!("c{code}")),
                    ClaimId([*claim; 16]),
                    Credential::UploadToken {
                        token_hash: h.token(&format!("u{claim}")),
                    },
                    now,
                )
                .await
                .map(drop),
            Op::Submit { claim, keys, id } => store
                .submit(
                    ClaimLookup::Token(h.token(&format!("u{claim}"))),
                    keys.iter().map(|(s, d)| key(*s, u32::from(*d))).collect(),
                    tracking(*id),
                    now,
                )
                .await
                .map(drop),
            Op::Advance(seconds) => {
                now += u64::from(*seconds);
                Ok(())
            }
        };
        match result {
            Ok(()) | Err(StoreError::Domain(_)) | Err(StoreError::Conflict) => {}
            Err(e) => panic!("{dialect:?}: {op:?} failed: {e}"),
        }
    }
    let live = store.projected_state().await.expect("projections");
    let replayed = State::replay(&store.events().await.expect("log"));
    assert_eq!(
        live, replayed,
        "{dialect:?}: projections differ from the replayed log"
    );
    assert!(store.check().await.expect("check").consistent());
    store.close().await;
    db.finish().await;
    live
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_replay_on_both_stores(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let sqlite = runtime.block_on(run(Dialect::Sqlite, &ops));
        let postgres = runtime.block_on(run(Dialect::Postgres, &ops));
        prop_assert_eq!(sqlite, postgres);
    }
}
