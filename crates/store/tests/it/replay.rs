//! Property: for random operation sequences, live projections equal the replay of the log,
//! and SQLite and PostgreSQL end in the same state, each operation answered alike.
//!
//! Besides codes, claims and key submissions, the operations run the encounter-token flow:
//! TAN imports, redemptions for nonces, level-0 uploads, token batches published per area,
//! chained uploads proven by a published token, research contributions, and retention runs,
//! with withdrawals and retroactive revocations reaching token submissions.

use std::cell::RefCell;

use confidant_core::corrections::{Actor, Command};
use confidant_core::encounter::UploadedToken;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, ProviderId, RetentionPolicy, State,
};
use confidant_store::testing::TestDatabase;
use confidant_store::{ClaimLookup, Dialect, Store, StoreError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

use crate::{
    T0, hasher, key, nonce, open, publish_tokens, region, tan, token_hash, tracking, uploaded,
};

/// The coarse areas token uploads go to.
const AREAS: [&str; 2] = ["10", "20"];

/// Token submissions use tracking IDs from here on, apart from key submissions' 0..8.
const TOKEN_IDS: u8 = 8;
/// How many tracking IDs token submissions draw from.
const TOKEN_ID_COUNT: u8 = 16;

/// Token windows one publisher run closes at most: after a retention run's leap of days, an
/// area's stream never catches up (which only means its new tokens are not published).
const MAX_WINDOWS: u32 = 6;

/// Something an operation names: with `seen`, one the run has had accepted (when there is
/// one), otherwise `raw`, which may name nothing.
#[derive(Clone, Copy, Debug)]
struct Pick {
    seen: Option<Index>,
    raw: u8,
}

impl Pick {
    fn resolve(self, seen: &[u8]) -> u8 {
        match self.seen {
            Some(index) if !seen.is_empty() => seen[index.index(seen.len())],
            _ => self.raw,
        }
    }
}

fn pick(raw: std::ops::Range<u8>) -> impl Strategy<Value = Pick> {
    (proptest::option::weighted(0.85, any::<Index>()), raw)
        .prop_map(|(seen, raw)| Pick { seen, raw })
}

/// A token of an upload: its seed, day code (see [`token`]) and area.
type Tok = (u8, u8, u8);

fn tok() -> impl Strategy<Value = Tok> {
    (0u8..24, 0u8..30, 0u8..2)
}

/// The uploaded token: mostly an encounter of the last three days, sometimes one too old or
/// too far ahead to be accepted.
fn token(&(seed, day, area): &Tok, now: u64) -> UploadedToken {
    let area = region(AREAS[usize::from(area)]);
    let mut token = uploaded(seed, 0, &area, now);
    match day {
        28 => token.day -= 20,
        29 => token.day += 2,
        d => token.day -= u32::from(d % 3),
    }
    token
}

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
    /// A key or token submission.
    Withdraw(Pick),
    Deregister(Vec<u8>),
    InvalidateCode(u8),
    InvalidateCodes(u8),
    /// TANs "tan{n}" of `provider`, valid for a time given by `ttl` (see [`Op::ttl`]).
    ImportTans {
        provider: Pick,
        tans: Vec<u8>,
        ttl: u8,
    },
    /// Three fresh nonces for a TAN (a raw pick of 8 or more names an ordinary code); with
    /// `reuse`, the first of them is the last nonce accepted before.
    RedeemTan {
        tan: Pick,
        reuse: bool,
    },
    /// A level-0 upload; `id` as for [`Op::Chain`].
    SubmitTokens {
        nonce: Pick,
        tokens: Vec<Tok>,
        id: Option<u8>,
    },
    /// Time moves on to the end of the next hour, and the publisher closes the due token
    /// windows (at most [`MAX_WINDOWS`] each) of one area (0 or 1) or of both (2): the current
    /// hour's tokens are then out.
    PublishTokens(u8),
    /// A chained upload proven by the preimage of the token seeded `proof`. Its tracking ID
    /// is a fresh one, or with `Some(n)` number `TOKEN_IDS + n`, which may be taken.
    Chain {
        proof: Pick,
        tokens: Vec<Tok>,
        max_level: u8,
        id: Option<u8>,
    },
    /// Research data for proven encounters: (token seed, duration code, attenuation code).
    Research(Vec<(Pick, u8, u8)>),
    /// Time moves on by this many days and the janitor applies the default retention.
    Retain(u8),
}

impl Op {
    /// A TAN list's validity: none (refused), past the longest allowed (refused), 60 days,
    /// or that many days.
    fn ttl(ttl: u8) -> u64 {
        match ttl {
            0 => 0,
            1 => confidant_core::codes::MAX_TAN_TTL_SECONDS + 3600,
            9 => 60 * 86_400,
            t => u64::from(t) * 86_400,
        }
    }
}

fn token_id() -> impl Strategy<Value = Option<u8>> {
    proptest::option::weighted(0.15, 0u8..TOKEN_ID_COUNT)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..4).prop_map(Op::Register),
        1 => (0u8..4, any::<bool>()).prop_map(|(p, s)| Op::Suspend(p, s)),
        2 => (0u8..4, 0u8..12, 0u8..3).prop_map(|(provider, code, format)| Op::Issue {
            provider,
            code,
            format
        }),
        2 => (0u8..12, 0u8..6).prop_map(|(code, claim)| Op::Redeem { code, claim }),
        2 => (
            0u8..6,
            proptest::collection::vec((0u8..40, 0u8..16), 0..6),
            0u8..8
        )
            .prop_map(|(claim, keys, id)| Op::Submit { claim, keys, id }),
        2 => (1u16..2000).prop_map(Op::Advance),
        1 => (0u8..4, proptest::option::of(0u8..3)).prop_map(|(p, since)| Op::Revoke(p, since)),
        1 => pick(0..TOKEN_IDS + TOKEN_ID_COUNT).prop_map(Op::Withdraw),
        1 => proptest::collection::vec(0u8..40, 1..4).prop_map(Op::Deregister),
        1 => (0u8..12).prop_map(Op::InvalidateCode),
        1 => (0u8..4).prop_map(Op::InvalidateCodes),
        3 => (pick(0..4), proptest::collection::vec(0u8..8, 1..4), 0u8..10).prop_map(
            |(provider, tans, ttl)| Op::ImportTans {
                provider,
                tans,
                ttl
            }
        ),
        3 => (pick(0..10), proptest::bool::weighted(0.1))
            .prop_map(|(tan, reuse)| Op::RedeemTan { tan, reuse }),
        4 => (
            pick(0..8),
            proptest::collection::vec(tok(), 1..5),
            token_id()
        )
            .prop_map(|(nonce, tokens, id)| Op::SubmitTokens { nonce, tokens, id }),
        3 => (0u8..3).prop_map(Op::PublishTokens),
        3 => (
            pick(0..24),
            proptest::collection::vec(tok(), 1..4),
            1u8..=2,
            token_id()
        )
            .prop_map(|(proof, tokens, max_level, id)| Op::Chain {
                proof,
                tokens,
                max_level,
                id
            }),
        2 => proptest::collection::vec((pick(0..24), 0u8..2, 0u8..2), 1..3).prop_map(Op::Research),
        1 => prop_oneof![2 => Just(0), 1 => Just(16), 1 => Just(22)].prop_map(Op::Retain),
    ]
}

/// The operations of a case. Half the cases begin with a health authority that imports
/// TANs, has one redeemed and a nonce used for an upload, which both areas then publish, so
/// that more of them get as far as chained uploads.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let start = (
        0u8..4,
        proptest::collection::vec(0u8..8, 1..4),
        2u8..10,
        proptest::collection::vec(tok(), 1..5),
        token_id(),
    )
        .prop_map(|(provider, tans, ttl, tokens, id)| {
            vec![
                Op::Register(provider),
                Op::ImportTans {
                    provider: Pick {
                        seen: None,
                        raw: provider,
                    },
                    tans: tans.clone(),
                    ttl,
                },
                Op::RedeemTan {
                    tan: Pick {
                        seen: None,
                        raw: tans[0],
                    },
                    reuse: false,
                },
                Op::SubmitTokens {
                    nonce: Pick { seen: None, raw: 0 },
                    tokens,
                    id,
                },
                Op::PublishTokens(2),
            ]
        });
    (
        proptest::option::of(start),
        proptest::collection::vec(op(), 1..40),
    )
        .prop_map(|(start, ops)| start.into_iter().flatten().chain(ops).collect())
}

/// What the run has had accepted, for operations to name.
#[derive(Default)]
struct Seen {
    providers: Vec<u8>,
    /// Imported TANs not redeemed yet.
    tans: Vec<u8>,
    /// Nonces not used yet.
    nonces: Vec<u8>,
    /// Seeds and areas of uploaded tokens that their area has not published since.
    pending: Vec<(u8, u8)>,
    /// Seeds of uploaded tokens that their area published since (withdrawn or forgotten
    /// ones included: those prove nothing).
    published: Vec<u8>,
    /// Tracking ID numbers of key and token submissions.
    submissions: Vec<u8>,
    next_nonce: u8,
    next_id: u8,
}

impl Seen {
    /// The tracking ID number of a token submission.
    fn token_id(&mut self, id: Option<u8>) -> u8 {
        match id {
            Some(n) => TOKEN_IDS + n,
            None => {
                self.next_id += 1;
                TOKEN_IDS + TOKEN_ID_COUNT + self.next_id
            }
        }
    }
}

/// How far the token flow got: accepted operations by kind, and token windows published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub tans_imported: u32,
    pub tans_redeemed: u32,
    pub uploads: u32,
    /// Token windows published.
    pub publications: u32,
    /// Chained uploads at level 1 and at level 2.
    pub chains: [u32; 2],
    pub research: u32,
    /// Withdrawals and revocations that withdrew token hashes.
    pub tokens_withdrawn: u32,
    pub retentions: u32,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.tans_imported += other.tans_imported;
        self.tans_redeemed += other.tans_redeemed;
        self.uploads += other.uploads;
        self.publications += other.publications;
        self.chains[0] += other.chains[0];
        self.chains[1] += other.chains[1];
        self.research += other.research;
        self.tokens_withdrawn += other.tokens_withdrawn;
        self.retentions += other.retentions;
    }
}

/// A run's end: the state, each operation's answer, what the token reads return, the tally.
#[derive(Debug)]
pub struct Run {
    pub state: State,
    pub answers: Vec<String>,
    pub reads: Vec<String>,
    pub tally: Tally,
}

/// Runs one operation at `*now`; refusals are answers, database errors are not.
async fn step(
    store: &Store,
    op: &Op,
    now: &mut u64,
    seen: &mut Seen,
    tally: &mut Tally,
) -> Result<String, StoreError> {
    let h = hasher();
    let correct = |command, now| {
        let store = store.clone();
        async move {
            store
                .correct(command, Actor::Console, now, "property test".into())
                .await
        }
    };
    let answer = match op {
        Op::Register(p) => {
            store
                .register_provider(
                    ProviderId([*p; 8]),
                    format!("P{p}"),
                    region("DE"),
                    h.token(&format!("t{p}")),
                )
                .await?;
            seen.providers.push(*p);
            String::new()
        }
        Op::Suspend(p, s) => format!("{:?}", store.set_suspended(ProviderId([*p; 8]), *s).await?),
        Op::Issue {
            provider,
            code,
            format,
        } => format!(
            "{:?}",
            store
                .issue_code(
                    h.token(&format!("t{provider}")),
                    CodeFormat::ALL[*format as usize],
                    None,
                    CodePolicy::default(),
                    h.code(&format!("c{code}")),
                    *now,
                )
                .await?
        ),
        Op::Redeem { code, claim } => format!(
            "{:?}",
            store
                .redeem_code(
                    h.code(&format!("c{code}")),
                    ClaimId([*claim; 16]),
                    Credential::UploadToken {
                        token_hash: h.token(&format!("u{claim}")),
                    },
                    *now,
                )
                .await?
        ),
        Op::Submit { claim, keys, id } => {
            let outcome = store
                .submit(
                    ClaimLookup::Token(h.token(&format!("u{claim}"))),
                    keys.iter().map(|(s, d)| key(*s, u32::from(*d))).collect(),
                    tracking(*id),
                    *now,
                )
                .await?;
            seen.submissions.push(*id);
            format!("{outcome:?}")
        }
        Op::Advance(seconds) => {
            *now += u64::from(*seconds);
            String::new()
        }
        Op::Revoke(p, since) => {
            let outcome = correct(
                Command::RevokeProvider {
                    provider: ProviderId([*p; 8]),
                    withdraw_since_hour: since.map(|h| T0 / 3600 + u64::from(h)),
                },
                *now,
            )
            .await?;
            tally.tokens_withdrawn += u32::from(outcome.tokens_withdrawn > 0);
            format!("{outcome:?}")
        }
        Op::Withdraw(id) => {
            let id = id.resolve(&seen.submissions);
            let outcome = correct(Command::WithdrawSubmission(tracking(id)), *now).await?;
            tally.tokens_withdrawn += u32::from(outcome.tokens_withdrawn > 0);
            format!("{outcome:?}")
        }
        Op::Deregister(seeds) => {
            let keys = seeds.iter().map(|s| key(*s, 0).key_data).collect();
            format!("{:?}", correct(Command::DeregisterKeys(keys), *now).await?)
        }
        Op::InvalidateCode(code) => format!(
            "{:?}",
            correct(Command::InvalidateCode(h.code(&format!("c{code}"))), *now).await?
        ),
        Op::InvalidateCodes(p) => format!(
            "{:?}",
            correct(Command::InvalidateProviderCodes(ProviderId([*p; 8])), *now).await?
        ),
        Op::ImportTans {
            provider,
            tans,
            ttl,
        } => {
            let p = provider.resolve(&seen.providers);
            let outcome = correct(
                Command::ImportTans {
                    provider: ProviderId([p; 8]),
                    tans: tans.iter().map(|n| tan(*n)).collect(),
                    expires_at: *now + Op::ttl(*ttl),
                },
                *now,
            )
            .await?;
            seen.tans.extend(tans);
            seen.tans.sort_unstable();
            seen.tans.dedup();
            tally.tans_imported += 1;
            format!("{outcome:?}")
        }
        Op::RedeemTan { tan: which, reuse } => {
            let n = which.resolve(&seen.tans);
            let code_hash = match n {
                0..8 => tan(n),
                c => h.code(&format!("c{}", c - 8)),
            };
            let mut numbers: Vec<u8> = (seen.next_nonce..seen.next_nonce + 3).collect();
            seen.next_nonce += 3;
            if let (true, Some(last)) = (reuse, seen.nonces.last()) {
                numbers[0] = *last;
            }
            let answer = store
                .redeem_tan(code_hash, numbers.iter().map(|n| nonce(*n)).collect(), *now)
                .await?;
            seen.tans.retain(|t| *t != n);
            seen.nonces.extend(numbers);
            tally.tans_redeemed += 1;
            format!("{answer:?}")
        }
        Op::SubmitTokens {
            nonce: n,
            tokens,
            id,
        } => {
            let n = n.resolve(&seen.nonces);
            let id = seen.token_id(*id);
            let outcome = store
                .submit_tokens(
                    nonce(n).nonce_hash,
                    tokens.iter().map(|t| token(t, *now)).collect(),
                    tracking(id),
                    *now,
                )
                .await?;
            seen.nonces.retain(|m| *m != n);
            seen.pending.extend(tokens.iter().map(|t| (t.0, t.2)));
            seen.submissions.push(id);
            tally.uploads += 1;
            format!("{outcome:?}")
        }
        Op::PublishTokens(which) => {
            *now = (*now / 3600 + 2) * 3600;
            let mut windows = 0;
            for a in 0..AREAS.len() as u8 {
                if *which == a || *which == 2 {
                    let area = region(AREAS[usize::from(a)]);
                    windows += publish_tokens(store, &area, *now, MAX_WINDOWS).await?;
                    let (out, pending): (Vec<_>, Vec<_>) =
                        seen.pending.iter().partition(|(_, area)| *area == a);
                    seen.pending = pending;
                    seen.published.extend(out.into_iter().map(|(seed, _)| seed));
                }
            }
            tally.publications += windows;
            format!("published {windows} window(s) by {now}")
        }
        Op::Chain {
            proof,
            tokens,
            max_level,
            id,
        } => {
            let proof = proof.resolve(&seen.published);
            let id = seen.token_id(*id);
            let outcome = store
                .submit_chained(
                    token_hash(proof),
                    *max_level,
                    tokens.iter().map(|t| token(t, *now)).collect(),
                    tracking(id),
                    *now,
                )
                .await?;
            seen.pending.extend(tokens.iter().map(|t| (t.0, t.2)));
            seen.submissions.push(id);
            tally.chains[usize::from(outcome.level) - 1] += 1;
            format!("{outcome:?}")
        }
        Op::Research(contributions) => {
            let contributions = contributions
                .iter()
                .map(|(seed, duration, attenuation)| {
                    (
                        token_hash(seed.resolve(&seen.published)),
                        *duration,
                        *attenuation,
                    )
                })
                .collect();
            let stored = store.contribute_research(contributions).await?;
            tally.research += 1;
            format!("{stored}")
        }
        Op::Retain(days) => {
            *now += u64::from(*days) * 86_400;
            let policy = RetentionPolicy::default();
            let report = store
                .apply_retention(policy.applied_at(*now), policy.key_events_before_hour(*now))
                .await?;
            tally.retentions += 1;
            format!("{report:?}")
        }
    };
    Ok(answer)
}

/// What the token reads return, checked against `state`.
async fn token_reads(store: &Store, state: &State, now: u64) -> Vec<String> {
    let mut reads = Vec::new();
    let withdrawals = store.withdrawals().await.expect("withdrawals");
    assert_eq!(withdrawals, state.withdrawals);
    for name in AREAS {
        let area = region(name);
        let live = store
            .tokens_submitted(&area, 0, now / 3600 + 1)
            .await
            .expect("tokens submitted");
        let expected: Vec<_> = state
            .tokens
            .iter()
            .filter(|(_, t)| t.area == area && t.withdrawn.is_none())
            .map(|(hash, t)| (*hash, t.clone()))
            .collect();
        assert_eq!(live, expected, "tokens_submitted({name})");
        let withdrawn = store
            .tokens_withdrawn(&area, 0, withdrawals)
            .await
            .expect("tokens withdrawn");
        assert_eq!(
            withdrawn.len(),
            state
                .tokens
                .values()
                .filter(|t| t.area == area && t.withdrawn.is_some())
                .count(),
            "tokens_withdrawn({name})"
        );
        reads.push(format!("{name}: {live:?} {withdrawn:?}"));
    }
    let research = store.research().await.expect("research");
    assert_eq!(
        research,
        state
            .research
            .iter()
            .map(|(cell, count)| (*cell, *count))
            .collect::<Vec<_>>()
    );
    reads.push(format!("{research:?}"));
    reads.push(format!("{:?}", store.token_areas().await.expect("areas")));
    for (id, submission) in &state.token_submissions {
        let read = store.token_submission(*id).await.expect("token submission");
        assert_eq!(read.as_ref(), Some(submission));
    }
    reads
}

/// Runs `ops` on a fresh database; domain refusals are expected, database errors are not.
async fn run(dialect: Dialect, ops: &[Op]) -> Run {
    let db = TestDatabase::create(dialect).await;
    let store = open(&db).await;
    let mut now = T0;
    let mut seen = Seen::default();
    let mut tally = Tally::default();
    let mut answers = Vec::new();
    for op in ops {
        match step(&store, op, &mut now, &mut seen, &mut tally).await {
            Ok(answer) => answers.push(format!("ok {answer}")),
            Err(e @ (StoreError::Domain(_) | StoreError::Conflict)) => {
                answers.push(format!("refused {e:?}"))
            }
            Err(e) => panic!("{dialect:?}: {op:?} failed: {e}"),
        }
    }
    let live = store.projected_state().await.expect("projections");
    let replayed = State::replay(&store.events().await.expect("log"));
    assert_eq!(
        live, replayed,
        "{dialect:?}: projections differ from the replayed log"
    );
    let report = store.check().await.expect("check");
    assert!(report.consistent(), "{dialect:?}: {report:?}");
    assert_eq!(
        store.state_digest().await.expect("digest"),
        replayed.digest(),
        "{dialect:?}: the streamed digest is the replay's"
    );
    let reads = token_reads(&store, &live, now).await;
    store.rebuild().await.expect("rebuilds");
    assert_eq!(store.projected_state().await.expect("projections"), live);
    assert_eq!(token_reads(&store, &live, now).await, reads);
    store.close().await;
    db.finish().await;
    Run {
        state: live,
        answers,
        reads,
        tally,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn live_state_equals_replay_on_both_stores() {
    let mut config = ProptestConfig {
        cases: 12,
        ..ProptestConfig::default()
    };
    config.source_file = Some(file!());
    let mut runner = TestRunner::new(config);
    let runtime = runtime();
    let tally = RefCell::new(Tally::default());
    let result = runner.run(&ops(), |ops| {
        let sqlite = runtime.block_on(run(Dialect::Sqlite, &ops));
        let postgres = runtime.block_on(run(Dialect::Postgres, &ops));
        prop_assert_eq!(&sqlite.answers, &postgres.answers);
        prop_assert_eq!(&sqlite.reads, &postgres.reads);
        prop_assert_eq!(&sqlite.state, &postgres.state);
        prop_assert_eq!(sqlite.tally, postgres.tally);
        tally.borrow_mut().add(&sqlite.tally);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
    // Shown with --nocapture: how far the token flow got over the cases.
    eprintln!("token operations accepted: {:?}", tally.borrow());
}

/// A fixed sequence through the whole token flow reaches everything the property test
/// generates: uploads, publications, chains at both levels, research, withdrawals and
/// revocations of token submissions, and retention, on both stores alike; each step is
/// answered as expected.
#[test]
fn a_fixed_sequence_reaches_every_token_operation() {
    let raw = |n: u8| Pick { seen: None, raw: n };
    let tok = |seed: u8, area: u8| (seed, 0, area);
    let chain = |proof: u8, tokens: Vec<Tok>, id: u8| Op::Chain {
        proof: raw(proof),
        tokens,
        max_level: 2,
        id: Some(id),
    };
    let redeem = |tan: u8, reuse: bool| Op::RedeemTan {
        tan: raw(tan),
        reuse,
    };
    let import = |provider: u8, tans: Vec<u8>| Op::ImportTans {
        provider: raw(provider),
        tans,
        ttl: 9,
    };
    let upload = |nonce: u8, tokens: Vec<Tok>, id: u8| Op::SubmitTokens {
        nonce: raw(nonce),
        tokens,
        id: Some(id),
    };
    let h0 = T0 / 3600;
    // "published N window(s) by" the end of hour h0 + k.
    let published = |n: u32, k: u64| format!("published {n} window(s) by {}", (h0 + k) * 3600);
    let published: Vec<String> = [(1, 2), (3, 4), (4, 6), (2, 8), (2, 10), (6, 12), (4, 14)]
        .into_iter()
        .map(|(n, k)| published(n, k))
        .collect();
    let steps: Vec<(Op, &str)> = vec![
        (Op::Register(0), "ok"),
        (Op::Register(1), "ok"),
        (
            Op::Issue {
                provider: 0,
                code: 0,
                format: 1,
            },
            "ok",
        ),
        (import(0, vec![0, 1, 2]), "tans_imported: 3"),
        (
            import(1, vec![3, 4, 3]),
            "tans_imported: 2, tans_skipped: 1",
        ),
        (import(2, vec![5]), "NoSuchProvider"),
        // TAN 0 buys nonces 0, 1, 2 and TAN 3 nonces 3, 4, 5; a used TAN, an ordinary code
        // and a nonce handed out before buy none.
        (redeem(0, false), "ok"),
        (redeem(3, false), "ok"),
        (redeem(0, false), "InvalidCode"),
        (redeem(8, false), "InvalidCode"),
        (redeem(1, true), "Conflict"),
        // Level 0 in both areas at hour h0 (tracking IDs 8 and 9).
        (
            upload(0, vec![tok(1, 0), tok(2, 0), tok(3, 1), (4, 2, 0)], 0),
            "level: 0, inserted: 4, skipped: 0",
        ),
        (upload(3, vec![tok(5, 0), tok(6, 1)], 1), "inserted: 2"),
        (upload(0, vec![tok(7, 0)], 2), "NonceUsed"),
        (upload(1, vec![(7, 28, 0)], 2), "TokenDayOutOfRange"),
        (upload(1, vec![tok(7, 0)], 1), "Conflict"),
        (chain(1, vec![tok(11, 0)], 3), "UnknownProof"),
        // At the end of hour h0 + 1 area 10 publishes that hour's window, with hour h0's
        // tokens; area 20 catches up two hours later.
        (Op::PublishTokens(0), &published[0]),
        (Op::PublishTokens(1), &published[1]),
        // Level 1 (ID 11, hour h0 + 4), proven once; its tokens are out after hour h0 + 5.
        (chain(1, vec![], 3), "NoTokens"),
        (
            chain(1, vec![tok(11, 0), tok(12, 1), tok(2, 0)], 3),
            "level: 1, inserted: 2, skipped: 1",
        ),
        (chain(1, vec![tok(13, 0)], 4), "ProofUsed"),
        (chain(11, vec![tok(13, 0)], 4), "UnknownProof"),
        (Op::PublishTokens(0), &published[2]),
        (chain(11, vec![tok(14, 0)], 4), "level: 2, inserted: 1"),
        (Op::PublishTokens(0), &published[3]),
        (chain(14, vec![tok(15, 0)], 5), "LevelTooHigh"),
        // Research from three proofs (in distinct cells: a cell filled again is
        // `tokens::research_counts_add_up_across_contributions`), then a used preimage and an
        // unknown one refused.
        (Op::Research(vec![(raw(2), 1, 1), (raw(3), 0, 0)]), "ok 2"),
        (Op::Research(vec![(raw(5), 1, 0)]), "ok 1"),
        (Op::Research(vec![(raw(2), 1, 1)]), "ProofUsed"),
        (Op::Research(vec![(raw(13), 1, 1)]), "UnknownProof"),
        // Withdrawing nonce 3's upload (ID 9, provider 1) takes tokens 5 and 6 back;
        // revoking provider 0 from hour h0 on takes its upload and the chains from it.
        (Op::Withdraw(raw(9)), "tokens_withdrawn: 2"),
        (Op::PublishTokens(0), &published[4]),
        // At most six windows a run.
        (Op::PublishTokens(1), &published[5]),
        (chain(5, vec![tok(16, 0)], 5), "UnknownProof"),
        (
            Op::Revoke(0, Some(0)),
            "submissions_withdrawn: 3, keys_withdrawn: 0, tokens_withdrawn: 7",
        ),
        (Op::PublishTokens(0), &published[6]),
        (chain(12, vec![tok(16, 0)], 6), "UnknownProof"),
        (Op::Retain(0), "ok"),
        (Op::Retain(16), "purged_events: 0"),
        (Op::Retain(22), "ok"),
    ];
    let ops: Vec<Op> = steps.iter().map(|(op, _)| op.clone()).collect();
    let runtime = runtime();
    for dialect in crate::BOTH {
        let run = runtime.block_on(run(dialect, &ops));
        assert_eq!(run.answers.len(), steps.len());
        for ((op, expected), answer) in steps.iter().zip(&run.answers) {
            assert!(
                answer.contains(expected),
                "{dialect:?}: {op:?} answered {answer}, expected {expected}"
            );
        }
        assert_eq!(
            run.tally,
            Tally {
                tans_imported: 2,
                tans_redeemed: 2,
                uploads: 2,
                publications: 22,
                chains: [1, 1],
                research: 2,
                tokens_withdrawn: 2,
                retentions: 3,
            },
            "{dialect:?}"
        );
        // Retention forgot every token and token submission; the research counts stay.
        assert!(run.state.tokens.is_empty() && run.state.token_submissions.is_empty());
        let counts: Vec<u64> = run.state.research.values().copied().collect();
        assert_eq!(counts, [1, 1, 1], "{:?}", run.state.research);
    }
}
