//! Property: for random operation sequences, live projections equal the replay of the log,
//! and SQLite and PostgreSQL end in the same state.

use confidant_core::corrections::{Actor, Command};
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
    Revoke(u8, Option<u8>),
    Withdraw(u8),
    Deregister(Vec<u8>),
    InvalidateCode(u8),
    InvalidateCodes(u8),
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
            0u8..8
        )
            .prop_map(|(claim, keys, id)| Op::Submit { claim, keys, id }),
        (1u16..2000).prop_map(Op::Advance),
        (0u8..4, proptest::option::of(0u8..3)).prop_map(|(p, since)| Op::Revoke(p, since)),
        (0u8..8).prop_map(Op::Withdraw),
        proptest::collection::vec(0u8..40, 1..4).prop_map(Op::Deregister),
        (0u8..12).prop_map(Op::InvalidateCode),
        (0u8..4).prop_map(Op::InvalidateCodes),
    ]
}

/// Runs `ops` on a fresh database; domain refusals are expected, database errors are not.
async fn run(dialect: Dialect, ops: &[Op]) -> State {
    let db = TestDatabase::create(dialect).await;
    let store = open(&db).await;
    let h = hasher();
    let mut now = T0;
    let correct = |command, now| {
        let store = store.clone();
        async move {
            store
                .correct(command, Actor::Console, now, "property test".into())
                .await
                .map(drop)
        }
    };
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
            Op::Revoke(p, since) => {
                correct(
                    Command::RevokeProvider {
                        provider: ProviderId([*p; 8]),
                        withdraw_since_hour: since.map(|h| T0 / 3600 + u64::from(h)),
                    },
                    now,
                )
                .await
            }
            Op::Withdraw(id) => correct(Command::WithdrawSubmission(tracking(*id)), now).await,
            Op::Deregister(seeds) => {
                let keys = seeds.iter().map(|s| key(*s, 0).key_data).collect();
                correct(Command::DeregisterKeys(keys), now).await
            }
            Op::InvalidateCode(code) => {
                correct(Command::InvalidateCode(h.code(&format!("c{code}"))), now).await
            }
            Op::InvalidateCodes(p) => {
                correct(Command::InvalidateProviderCodes(ProviderId([*p; 8])), now).await
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
    assert_eq!(
        store.state_digest().await.expect("digest"),
        replayed.digest(),
        "{dialect:?}: the streamed digest is the replay's"
    );
    store.rebuild().await.expect("rebuilds");
    assert_eq!(store.projected_state().await.expect("projections"), live);
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
