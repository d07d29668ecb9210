//! The single writer: every change goes through here, one transaction per batch.
//!
//! Requests queue on a channel. The writer takes all that are waiting (up to `max_batch`),
//! loads the rows they touch, decides each in memory with `core`'s rules (a refused request
//! leaves no trace, and later ones see earlier ones), writes the events and changed rows with a
//! few multi-row statements, and commits once: one fsync for the whole batch. Nobody is
//! answered before that commit returns, so an acknowledgement always means the data is on
//! stable storage; if the commit fails, every request of the batch gets an error.

use confidant_core::corrections::{self, Actor, Command, Outcome};
use confidant_core::encounter::{Level, ResearchCell, TokenHash, UploadedToken};
use confidant_core::event::NonceClaim;
use confidant_core::rules::{Proof, TokenOutcome};
use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, DomainError, Event, Key32, ProviderId,
    Region, SubmissionOutcome, TrackingId, UnixSeconds, rules,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::db::{Conn, Dialect, Pool};
use crate::overlay::{KeyWrites, Overlay, Statement, Wanted, append_events};
use crate::projection;
use crate::schema::PROJECTION_TABLES;

/// How an upload finds its claim.
#[derive(Clone, Debug)]
pub enum ClaimLookup {
    /// Native API: the keyed hash of the bearer upload token.
    Token(Digest),
    /// COVID Shield: the per-claim server key the app encrypted to, and the app's key.
    CovidShield {
        server_public_key: Key32,
        app_public_key: Key32,
    },
}

#[derive(Debug)]
pub(crate) enum Write {
    RegisterProvider {
        provider: ProviderId,
        name: String,
        region: Region,
        token_hash: Digest,
    },
    SetSuspended {
        provider: ProviderId,
        suspended: bool,
    },
    IssueCode {
        token_hash: Digest,
        format: CodeFormat,
        ttl_seconds: Option<u64>,
        policy: CodePolicy,
        code_hash: Digest,
        now: UnixSeconds,
    },
    Redeem {
        code_hash: Digest,
        claim: ClaimId,
        credential: Credential,
        now: UnixSeconds,
    },
    Submit {
        lookup: ClaimLookup,
        keys: Vec<StoredKey>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    },
    /// A TAN exchanged for these nonces (made and hashed by the caller).
    RedeemTan {
        code_hash: Digest,
        nonces: Vec<NonceClaim>,
        now: UnixSeconds,
    },
    /// Token hashes with a nonce, at level 0.
    SubmitTokens {
        nonce_hash: Digest,
        tokens: Vec<UploadedToken>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    },
    /// Token hashes chained from the proven encounter `proof` (H of the revealed preimage).
    SubmitChained {
        proof: TokenHash,
        max_level: Level,
        tokens: Vec<UploadedToken>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    },
    /// Research data: per proven encounter, H(preimage) and the duration and attenuation
    /// bucket codes.
    Research {
        contributions: Vec<(TokenHash, u8, u8)>,
    },
    /// A provider (by its token's keyed hash) posts a test result.
    PostResult {
        token_hash: Digest,
        test: Digest,
        positive: bool,
        now: UnixSeconds,
    },
    /// A positive result's one upload to the confidential matcher.
    UseResult { test: Digest, now: UnixSeconds },
    /// Replays the log into fresh projections, counting progress as it goes.
    Rebuild(Arc<RebuildCounters>),
    /// An operator's correction, audited.
    Correct {
        command: Command,
        actor: Actor,
        now: UnixSeconds,
        reason: String,
    },
    /// A `BatchPublished` event; refused with `Conflict` when the stream's cursor has moved
    /// (another instance published the window first).
    Publish(Event),
    /// A `RetentionApplied` event, plus purging key material older than the hour from the log.
    Retention {
        event: Event,
        purge_key_events_before_hour: u64,
    },
}

impl Write {
    /// Rebuild and retention rewrite many rows with SQL of their own: they run alone.
    fn runs_alone(&self) -> bool {
        matches!(self, Write::Rebuild(_) | Write::Retention { .. })
    }
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    ProviderRegistered,
    /// `false` when the provider already was in the requested state.
    SuspensionChanged(bool),
    CodeIssued {
        provider: ProviderId,
        region: Region,
        expires_at: UnixSeconds,
    },
    Redeemed {
        claim: ClaimId,
        expires_at: UnixSeconds,
        key_budget: u32,
    },
    Submitted(SubmissionOutcome),
    TanRedeemed {
        expires_at: UnixSeconds,
        token_budget: u32,
    },
    TokensSubmitted(TokenOutcome),
    /// Research records stored.
    Researched(u32),
    ResultPosted {
        expires_at: UnixSeconds,
    },
    ResultUsed,
    Rebuilt {
        events: u64,
    },
    Published,
    Retained(RetentionReport),
    Corrected(Outcome),
}

/// What a retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Paths of the published files that left the index: delete them from the file store.
    pub retired_files: Vec<String>,
    pub codes: u64,
    pub claims: u64,
    pub keys: u64,
    pub purged_events: u64,
}

pub(crate) struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<Written, StoreError>>,
}

pub(crate) async fn run(pool: Pool, mut jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let mut conn: Option<Conn> = None;
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut batch = vec![first];
        // Some writes run alone; everything else queued joins the batch.
        while batch.len() < max_batch && !batch[0].write.runs_alone() {
            match jobs.try_recv() {
                Ok(job) if job.write.runs_alone() => {
                    held = Some(job);
                    break;
                }
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match pool.acquire().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let message = e.to_string();
                    for job in batch {
                        let _ = job
                            .reply
                            .send(Err(StoreError::Unavailable(message.clone())));
                    }
                    continue;
                }
            }
        }
        let connection = conn.as_mut().expect("acquired above");
        let outcome = match &batch[0].write {
            Write::Rebuild(counters) => rebuild(&pool, connection, counters)
                .await
                .map(|w| vec![Ok(w)]),
            Write::Retention {
                event,
                purge_key_events_before_hour,
            } => retention(connection, event, *purge_key_events_before_hour)
                .await
                .map(|w| vec![Ok(w)]),
            _ => run_batch(connection, &batch).await,
        };
        let results = match outcome {
            Ok(results) => results,
            Err(e) => {
                connection.rollback().await.ok();
                // Close a connection that failed mid-transaction; the next batch takes a fresh one.
                if let Some(failed) = conn.take() {
                    failed.close().await;
                }
                let message = e.to_string();
                batch
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(message.clone())))
                    .collect()
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

impl Write {
    fn want(&self, wanted: &mut Wanted) {
        match self {
            Write::RegisterProvider {
                provider,
                token_hash,
                ..
            } => {
                wanted.providers.insert(*provider);
                wanted.provider_tokens.insert(*token_hash);
            }
            Write::SetSuspended { provider, .. } => {
                wanted.providers.insert(*provider);
            }
            Write::IssueCode {
                token_hash,
                code_hash,
                ..
            } => {
                wanted.provider_tokens.insert(*token_hash);
                wanted.codes.insert(*code_hash);
            }
            Write::Redeem {
                code_hash,
                claim,
                credential,
                ..
            } => {
                wanted.codes.insert(*code_hash);
                wanted.claims.insert(*claim);
                if let Credential::CovidShield { app_public_key, .. } = credential {
                    wanted.claim_app_keys.insert(*app_public_key);
                }
            }
            Write::Submit {
                lookup,
                keys,
                tracking_id,
                ..
            } => {
                match lookup {
                    ClaimLookup::Token(hash) => wanted.claim_tokens.insert(*hash),
                    ClaimLookup::CovidShield {
                        server_public_key, ..
                    } => wanted.claim_server_keys.insert(*server_public_key),
                };
                wanted.submissions.insert(*tracking_id);
                wanted.keys.extend(keys.iter().map(|k| k.key_data));
            }
            Write::RedeemTan {
                code_hash, nonces, ..
            } => {
                wanted.codes.insert(*code_hash);
                wanted.claims.extend(nonces.iter().map(|n| n.claim));
                wanted
                    .claim_nonces
                    .extend(nonces.iter().map(|n| n.nonce_hash));
            }
            Write::SubmitTokens {
                nonce_hash,
                tokens,
                tracking_id,
                ..
            } => {
                wanted.claim_nonces.insert(*nonce_hash);
                wanted.token_submissions.insert(*tracking_id);
                wanted.submissions.insert(*tracking_id);
                wanted.tokens.extend(tokens.iter().map(|t| t.hash));
            }
            Write::SubmitChained {
                proof,
                tokens,
                tracking_id,
                ..
            } => {
                // Loading a token loads its submission, provider and area cursor too.
                wanted.tokens.insert(*proof);
                wanted.token_submissions.insert(*tracking_id);
                wanted.submissions.insert(*tracking_id);
                wanted.tokens.extend(tokens.iter().map(|t| t.hash));
            }
            Write::Research { contributions } => {
                wanted
                    .tokens
                    .extend(contributions.iter().map(|(hash, _, _)| *hash));
                // Their cells, once the tokens' days and levels are known.
                wanted.research_of.extend(contributions.iter().copied());
            }
            Write::PostResult {
                token_hash, test, ..
            } => {
                wanted.provider_tokens.insert(*token_hash);
                wanted.test_results.insert(*test);
            }
            Write::UseResult { test, .. } => {
                wanted.test_results.insert(*test);
            }
            Write::Publish(Event::BatchPublished { region, stream, .. }) => {
                wanted.cursors.insert((region.clone(), *stream));
            }
            Write::Correct { command, .. } => command_wants(command, wanted),
            Write::Publish(_) | Write::Rebuild(_) | Write::Retention { .. } => {}
        }
    }
}

/// The rows a correction reads.
fn command_wants(command: &Command, wanted: &mut Wanted) {
    match command {
        Command::RegisterProvider {
            provider,
            token_hash,
            ..
        } => {
            wanted.providers.insert(*provider);
            wanted.provider_tokens.insert(*token_hash);
        }
        Command::SuspendProvider(provider) | Command::ReinstateProvider(provider) => {
            wanted.providers.insert(*provider);
        }
        Command::RevokeProvider {
            provider,
            withdraw_since_hour,
        } => {
            wanted.providers.insert(*provider);
            if let Some(hour) = withdraw_since_hour {
                wanted.provider_submissions = Some((*provider, *hour));
                wanted.withdrawals = true;
            }
        }
        Command::WithdrawSubmission(id) => {
            wanted.submissions.insert(*id);
            wanted.submission_keys.insert(*id);
            wanted.token_submissions.insert(*id);
            wanted.submission_tokens.insert(*id);
            wanted.withdrawals = true;
        }
        Command::DeregisterKeys(keys) => {
            wanted.keys.extend(keys.iter().copied());
            wanted.withdrawals = true;
        }
        Command::InvalidateCode(hash) => {
            wanted.codes.insert(*hash);
        }
        Command::InvalidateProviderCodes(provider) => {
            wanted.providers.insert(*provider);
            wanted.provider_codes.insert(*provider);
        }
        Command::CreateToken {
            token, token_hash, ..
        } => {
            wanted.admin_tokens.insert(*token);
            wanted.admin_token_hashes.insert(*token_hash);
        }
        Command::RevokeToken(token) => {
            wanted.admin_tokens.insert(*token);
        }
        Command::ImportTans { provider, tans, .. } => {
            wanted.providers.insert(*provider);
            wanted.codes.extend(tans.iter().copied());
        }
    }
}

/// One transaction: load what the batch touches, decide every job in memory (each seeing the
/// ones before it), then append the events and write back the changed rows. Returns each job's
/// result; `Err` means the transaction failed and nothing was stored.
async fn run_batch(
    conn: &mut Conn,
    batch: &[Job],
) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
    conn.begin().await?;
    let mut wanted = Wanted::default();
    for job in batch {
        job.write.want(&mut wanted);
    }
    let mut overlay = Overlay::load(conn, wanted).await?;
    let mut events = Vec::new();
    let results = batch
        .iter()
        .map(|job| {
            decide(&overlay, &job.write).map(|(written, decided)| {
                for event in decided {
                    overlay.apply(&event);
                    events.push(event);
                }
                written
            })
        })
        .collect();
    if !events.is_empty() {
        append_events(conn, &events).await?;
        overlay.write_back(conn).await?;
    }
    let committing = std::time::Instant::now();
    conn.commit().await?;
    metrics::histogram!("confidant_store_commit_seconds")
        .record(committing.elapsed().as_secs_f64());
    metrics::histogram!("confidant_store_batch_requests").record(batch.len() as f64);
    Ok(results)
}

/// What one write does to the batch's state so far: its answer and its events.
fn decide(overlay: &Overlay, write: &Write) -> Result<(Written, Vec<Event>), StoreError> {
    let state = &overlay.state;
    match write {
        Write::RegisterProvider {
            provider,
            name,
            region,
            token_hash,
        } => {
            if state.providers.contains_key(provider)
                || overlay.provider_by_token.contains_key(token_hash)
            {
                return Err(StoreError::Conflict);
            }
            let event = Event::ProviderRegistered {
                provider: *provider,
                name: name.clone(),
                region: region.clone(),
                token_hash: *token_hash,
            };
            Ok((Written::ProviderRegistered, vec![event]))
        }
        Write::SetSuspended {
            provider,
            suspended,
        } => {
            let current = state
                .providers
                .get(provider)
                .ok_or(DomainError::UnknownProvider)?;
            if current.suspended == *suspended {
                return Ok((Written::SuspensionChanged(false), Vec::new()));
            }
            let event = if *suspended {
                Event::ProviderSuspended {
                    provider: *provider,
                }
            } else {
                Event::ProviderReinstated {
                    provider: *provider,
                }
            };
            Ok((Written::SuspensionChanged(true), vec![event]))
        }
        Write::IssueCode {
            token_hash,
            format,
            ttl_seconds,
            policy,
            code_hash,
            now,
        } => {
            let id = *overlay
                .provider_by_token
                .get(token_hash)
                .ok_or(DomainError::UnknownProvider)?;
            let issuer = state
                .providers
                .get(&id)
                .ok_or(DomainError::UnknownProvider)?;
            if state.codes.contains_key(code_hash) {
                return Err(StoreError::Conflict);
            }
            let event =
                rules::issue_code(id, issuer, *format, *ttl_seconds, policy, *now, *code_hash)?;
            let Event::CodeIssued { expires_at, .. } = event else {
                unreachable!("issue_code returns CodeIssued");
            };
            Ok((
                Written::CodeIssued {
                    provider: id,
                    region: issuer.region.clone(),
                    expires_at,
                },
                vec![event],
            ))
        }
        Write::Redeem {
            code_hash,
            claim,
            credential,
            now,
        } => {
            if state.claims.contains_key(claim) {
                return Err(StoreError::Conflict);
            }
            if let Credential::CovidShield { app_public_key, .. } = credential
                && overlay.claim_by_app_key.contains(app_public_key)
            {
                return Err(DomainError::AppKeyRegistered.into());
            }
            let code = state.codes.get(code_hash);
            let issuer = code.and_then(|c| state.providers.get(&c.provider));
            let event =
                rules::redeem_code(*code_hash, code, issuer, *now, *claim, credential.clone())?;
            let Event::CodeRedeemed {
                expires_at,
                key_budget,
                ..
            } = event
            else {
                unreachable!("redeem_code returns CodeRedeemed");
            };
            Ok((
                Written::Redeemed {
                    claim: *claim,
                    expires_at,
                    key_budget,
                },
                vec![event],
            ))
        }
        Write::Submit {
            lookup,
            keys,
            tracking_id,
            now,
        } => {
            let (claim_id, app_key) = match lookup {
                ClaimLookup::Token(hash) => (overlay.claim_by_token.get(hash), None),
                ClaimLookup::CovidShield {
                    server_public_key,
                    app_public_key,
                } => (
                    overlay.claim_by_server_key.get(server_public_key),
                    Some(*app_public_key),
                ),
            };
            let claim_id = claim_id.copied().unwrap_or(ClaimId([0; 16]));
            let claim = state.claims.get(&claim_id);
            if let (Some(expected), Some(claim)) = (app_key, claim)
                && !matches!(&claim.credential, Credential::CovidShield { app_public_key, .. } if *app_public_key == expected)
            {
                return Err(DomainError::AppKeyMismatch.into());
            }
            if state.submissions.contains_key(tracking_id) {
                return Err(StoreError::Conflict);
            }
            let issuer = claim.and_then(|c| state.providers.get(&c.provider));
            let (event, outcome) = rules::submit(
                claim_id,
                claim,
                issuer,
                keys.clone(),
                |k| state.keys.contains_key(k),
                *now,
                *tracking_id,
            )?;
            Ok((Written::Submitted(outcome), vec![event]))
        }
        Write::RedeemTan {
            code_hash,
            nonces,
            now,
        } => {
            if nonces.iter().any(|n| {
                state.claims.contains_key(&n.claim)
                    || overlay.claim_by_nonce.contains_key(&n.nonce_hash)
            }) {
                return Err(StoreError::Conflict);
            }
            let code = state.codes.get(code_hash);
            let issuer = code.and_then(|c| state.providers.get(&c.provider));
            let event = rules::redeem_tan(*code_hash, code, issuer, *now, nonces.clone())?;
            let Event::TanRedeemed {
                expires_at,
                token_budget,
                ..
            } = event
            else {
                unreachable!("redeem_tan returns TanRedeemed");
            };
            Ok((
                Written::TanRedeemed {
                    expires_at,
                    token_budget,
                },
                vec![event],
            ))
        }
        Write::SubmitTokens {
            nonce_hash,
            tokens,
            tracking_id,
            now,
        } => {
            let claim_id = overlay
                .claim_by_nonce
                .get(nonce_hash)
                .copied()
                .unwrap_or(ClaimId([0; 16]));
            let claim = state.claims.get(&claim_id);
            if state.token_submissions.contains_key(tracking_id)
                || state.submissions.contains_key(tracking_id)
            {
                return Err(StoreError::Conflict);
            }
            let issuer = claim.and_then(|c| state.providers.get(&c.provider));
            let (event, outcome) = rules::submit_tokens(
                claim_id,
                claim,
                issuer,
                tokens.clone(),
                |hash| state.tokens.contains_key(hash),
                *now,
                *tracking_id,
            )?;
            Ok((Written::TokensSubmitted(outcome), vec![event]))
        }
        Write::SubmitChained {
            proof,
            max_level,
            tokens,
            tracking_id,
            now,
        } => {
            if state.token_submissions.contains_key(tracking_id)
                || state.submissions.contains_key(tracking_id)
            {
                return Err(StoreError::Conflict);
            }
            let proof = proof_of(state, *proof);
            let (event, outcome) = rules::submit_chained(
                &proof,
                *max_level,
                tokens.clone(),
                |hash| state.tokens.contains_key(hash),
                *now,
                *tracking_id,
            )?;
            Ok((Written::TokensSubmitted(outcome), vec![event]))
        }
        Write::Research { contributions } => {
            let proofs: Vec<(Proof<'_>, u8, u8)> = contributions
                .iter()
                .map(|(hash, duration, attenuation)| {
                    (proof_of(state, *hash), *duration, *attenuation)
                })
                .collect();
            let events = rules::contribute_research(&proofs, shuffle)?;
            Ok((Written::Researched(proofs.len() as u32), events))
        }
        Write::PostResult {
            token_hash,
            test,
            positive,
            now,
        } => {
            let id = *overlay
                .provider_by_token
                .get(token_hash)
                .ok_or(DomainError::UnknownProvider)?;
            let provider = state
                .providers
                .get(&id)
                .ok_or(DomainError::UnknownProvider)?;
            let event = rules::post_result(
                *test,
                id,
                provider,
                state.test_results.get(test),
                *positive,
                *now,
            )?;
            let Event::TestResultPosted { expires_at, .. } = event else {
                unreachable!("post_result returns TestResultPosted");
            };
            Ok((Written::ResultPosted { expires_at }, vec![event]))
        }
        Write::UseResult { test, now } => {
            let result = state.test_results.get(test);
            let provider = result.and_then(|r| state.providers.get(&r.provider));
            let event = rules::use_result(*test, result, provider, *now)?;
            Ok((Written::ResultUsed, vec![event]))
        }
        Write::Publish(event) => {
            let Event::BatchPublished {
                region,
                stream,
                start,
                ..
            } = event
            else {
                unreachable!("Store::publish sends BatchPublished only");
            };
            match state.cursors.get(&(region.clone(), *stream)) {
                Some(cursor) if cursor.next_start != *start => Err(StoreError::Conflict),
                _ => Ok((Written::Published, vec![event.clone()])),
            }
        }
        Write::Correct {
            command,
            actor,
            now,
            reason,
        } => {
            let (outcome, events) = corrections::decide(state, command, *actor, *now, reason)?;
            Ok((Written::Corrected(outcome), events))
        }
        Write::Rebuild(_) | Write::Retention { .. } => unreachable!("runs alone"),
    }
}

/// What the state knows about the published token `hash` (its row, whether its area
/// published it, its submission and that submission's provider).
fn proof_of(state: &confidant_core::State, hash: TokenHash) -> Proof<'_> {
    let token = state.tokens.get(&hash);
    let submission = token.and_then(|t| state.token_submissions.get(&t.submission));
    Proof {
        hash,
        token,
        published: token.is_some_and(|t| {
            confidant_core::publish::token_published(
                state
                    .cursors
                    .get(&(t.area.clone(), confidant_core::Stream::Tokens)),
                t.hour,
            )
        }),
        submission,
        provider: submission.and_then(|s| state.providers.get(&s.provider)),
    }
}

/// Fisher-Yates with the OS's randomness: research records are stored in no telling order.
fn shuffle(cells: &mut [ResearchCell]) {
    use rand_core::{OsRng, RngCore};
    for i in (1..cells.len()).rev() {
        let j = (OsRng.next_u64() % (i as u64 + 1)) as usize;
        cells.swap(i, j);
    }
}

/// How far a rebuild has come; the caller that asked for it reads these while it runs.
#[derive(Debug, Default)]
pub(crate) struct RebuildCounters {
    pub replayed: AtomicU64,
    /// The span of sequence numbers in the log when the rebuild started: the event count, or
    /// an upper bound of it when retention purged some.
    pub total: AtomicU64,
}

/// Events read from the log per page. A page of submissions is about 30 MB of JSON.
const REBUILD_PAGE: u32 = 10_000;
/// SQLite's page cache during a rebuild, in KiB (normally 2 MiB). Measured with 300,000
/// submissions: 2 MiB, 128 MiB, 512 MiB and 1.5 GiB all rebuild within 15% of each other (the
/// random inserts into the keys' primary key are CPU-bound at any size), while the process
/// grows by the cache.
const REBUILD_SQLITE_CACHE_KIB: u64 = 64 * 1024;
/// Tables whose secondary indexes are dropped while the log is replayed and built again at
/// the end: one sort per index instead of millions of random inserts. Their unique keys stay
/// (upserts need them); only the keys' primary key goes too, while keys are only inserted.
const REINDEXED_TABLES: [&str; 3] = ["keys", "submissions", "codes"];

/// Empties the projections and replays the log into them, a page of events at a time, in one
/// transaction: a failed rebuild leaves the old projections as they were.
///
/// Pages are read and decoded on another connection and thread while the previous page is
/// written. Rows created earlier in a page are not loaded from the database; secondary indexes
/// of the large tables are dropped during the replay and built at the end (the one replay
/// itself reads, keys by region and hour, is built as soon as a withdrawal needs it).
async fn rebuild(
    pool: &Pool,
    conn: &mut Conn,
    counters: &RebuildCounters,
) -> Result<Written, sqlx::Error> {
    // SQLite settings of this connection that the rebuild changes, to restore afterwards.
    let mut restore = None;
    if conn.dialect() == Dialect::Sqlite {
        let mut setting = async |name: &str| -> Result<i64, sqlx::Error> {
            let row = conn.fetch_optional(&format!("PRAGMA {name}"), &[]).await?;
            row.map_or(Ok(0), |row| row.int(0))
        };
        restore = Some((setting("cache_size").await?, setting("threads").await?));
    }
    let fast = match rebuild_once(pool, conn, counters, true).await {
        Err(RebuildError::KeyWrittenTwice) => None,
        Err(RebuildError::Sql(sqlx::Error::Database(e))) if e.is_unique_violation() => None,
        other => Some(other),
    };
    let result = match fast {
        Some(result) => result,
        // A key was written twice with no retention between: not a log the rules write, but
        // `apply` allows it. Replay it again with upserts and the primary key in place.
        None => {
            tracing::info!("rebuild: the log writes a key twice; replaying it again with upserts");
            conn.rollback().await?;
            counters.replayed.store(0, Ordering::Relaxed);
            rebuild_once(pool, conn, counters, false).await
        }
    };
    if let (Ok(_), Some((pages, threads))) = (&result, restore) {
        conn.execute_script(&format!(
            "PRAGMA cache_size = {pages}; PRAGMA threads = {threads}"
        ))
        .await?;
    }
    match result {
        Ok(written) => Ok(written),
        Err(RebuildError::Sql(e)) => Err(e),
        Err(RebuildError::KeyWrittenTwice) => Err(sqlx::Error::Protocol(
            "a key row was inserted twice during a careful rebuild".into(),
        )),
    }
}

/// Why a rebuild attempt stopped.
enum RebuildError {
    Sql(sqlx::Error),
    /// An insert of key rows that should all be new found one already there.
    KeyWrittenTwice,
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

/// One attempt at [`rebuild`]. When `fast`, key rows are inserted as new rows (no upsert)
/// while the replay only adds keys, until the first withdrawal; on PostgreSQL the keys table's
/// primary key is dropped meanwhile and built again afterwards: with it in place, each of
/// millions of random keys is an insert into a random page of an index much larger than the
/// server's buffers.
async fn rebuild_once(
    pool: &Pool,
    conn: &mut Conn,
    counters: &RebuildCounters,
    fast: bool,
) -> Result<Written, RebuildError> {
    conn.begin().await?;
    match conn.dialect() {
        Dialect::Postgres => {
            conn.execute_script("LOCK TABLE events IN EXCLUSIVE MODE")
                .await?;
            // TRUNCATE, unlike DELETE, leaves no dead rows and bloated indexes behind.
            conn.execute_script(&format!("TRUNCATE {}", PROJECTION_TABLES.join(", ")))
                .await?;
            // Index builds sort in memory up to this (server memory, for this transaction).
            conn.execute_script("SET LOCAL maintenance_work_mem = '256MB'")
                .await?;
        }
        Dialect::Sqlite => {
            // Two sorter threads build the indexes at the end in about half the time.
            conn.execute_script(&format!(
                "PRAGMA cache_size = -{REBUILD_SQLITE_CACHE_KIB}; PRAGMA threads = 2"
            ))
            .await?;
            projection::clear(conn).await?;
        }
    }
    let replayed = replay_log(pool, conn, counters, fast).await?;
    let clock = Instant::now();
    conn.commit().await?;
    tracing::debug!("rebuild: commit {:.1} s", clock.elapsed().as_secs_f64());
    Ok(Written::Rebuilt { events: replayed })
}

async fn replay_log(
    pool: &Pool,
    conn: &mut Conn,
    counters: &RebuildCounters,
    fast: bool,
) -> Result<u64, RebuildError> {
    let bounds = conn
        .fetch_optional("SELECT MIN(seq), MAX(seq) FROM events", &[])
        .await?;
    let (first, last) = match bounds {
        Some(row) => (row.opt_int(0)?, row.opt_int(1)?),
        None => (None, None),
    };
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(0);
    };
    counters
        .total
        .store((last - first + 1) as u64, Ordering::Relaxed);
    let mut dropped = drop_secondary_indexes(conn).await?;
    let dialect = conn.dialect();
    let mut insert_keys = fast;
    let mut primary_key = match fast {
        true => drop_primary_key(conn, "keys").await?,
        false => None,
    };
    let mut pages = read_pages(pool.acquire().await?, last);
    let mut replayed = 0u64;
    // The previous segment's overlay and the statements that write it, not yet run: they run
    // while the next segment is applied on a blocking thread.
    let mut pending: Option<(Overlay, Vec<Statement>)> = None;
    // Where the time goes, for the debug log: waiting for decoded pages, loading rows,
    // writing while the next segment is applied, waiting for that, writing the last segment,
    // building indexes.
    let mut phases = [Duration::ZERO; 6];
    loop {
        let clock = Instant::now();
        let Some(page) = pages.recv().await else {
            break;
        };
        let events = page
            .await
            .map_err(|e| sqlx::Error::Decode(format!("decoding the log failed: {e}").into()))??;
        phases[0] += clock.elapsed();
        for segment in segments(events) {
            let clock = Instant::now();
            let retention = segment
                .last()
                .filter(|e| matches!(e, Event::RetentionApplied { .. }))
                .cloned();
            let mut wanted = wanted_for_segment(&segment);
            // Withdrawals read a submission's keys by region and hour: that index is needed
            // from here on.
            let (needed, rest): (Vec<_>, Vec<_>) =
                dropped.into_iter().partition(|(table, _, sql)| {
                    !wanted.submission_keys.is_empty()
                        && table == "keys"
                        && sql.contains("(region, hour)")
                });
            dropped = rest;
            // Withdrawals change keys already stored: from the first on, keys are upserted
            // (and need their primary key back).
            let restore_key =
                insert_keys && !(wanted.keys.is_empty() && wanted.submission_keys.is_empty());
            // Rows the previous segment holds come from its overlay. Anything else it may
            // have changed is written before it is read.
            let mut carried = None;
            if let Some((previous, statements)) = pending.take() {
                if wanted.only_providers_codes_claims() && needed.is_empty() && !restore_key {
                    let known = previous.take_known(&mut wanted);
                    carried = Some((previous, known, statements));
                } else {
                    run_statements(conn, statements).await?;
                }
            }
            if restore_key {
                insert_keys = false;
                add_primary_key(conn, primary_key.take()).await?;
            }
            create_indexes(conn, needed).await?;
            let mut overlay = Overlay::load(conn, wanted).await?;
            if insert_keys {
                overlay.key_writes = KeyWrites::Insert(dialect);
            }
            let behind = carried.map(|(previous, known, statements)| {
                previous.copy_rows(&known, &mut overlay);
                statements
            });
            phases[1] += clock.elapsed();
            let count = segment.len() as u64;
            let retention_at_end = retention.is_some();
            let applying = tokio::task::spawn_blocking(move || {
                // A closing retention event is left to its SQL twin, after the write-back:
                // applied here it would drop rows (a claim just spent) before their change is
                // written, and the SQL would then keep the stale row.
                let events = match retention_at_end {
                    true => &segment[..segment.len() - 1],
                    false => &segment[..],
                };
                for event in events {
                    overlay.apply(event);
                }
                let statements = overlay.write_statements();
                (overlay, statements)
            });
            let clock = Instant::now();
            if let Some(statements) = behind {
                run_statements(conn, statements).await?;
            }
            phases[2] += clock.elapsed();
            let clock = Instant::now();
            let (overlay, statements) = applying
                .await
                .map_err(|e| sqlx::Error::Decode(format!("replaying failed: {e}").into()))?;
            phases[3] += clock.elapsed();
            match retention {
                // Retention deletes with SQL: the rows before it must be written first.
                Some(event) => {
                    run_statements(conn, statements).await?;
                    projection::apply_retention(conn, &event).await?;
                }
                None => pending = Some((overlay, statements)),
            }
            replayed += count;
            counters.replayed.store(replayed, Ordering::Relaxed);
        }
    }
    let clock = Instant::now();
    if let Some((_, statements)) = pending {
        run_statements(conn, statements).await?;
    }
    phases[4] += clock.elapsed();
    let clock = Instant::now();
    add_primary_key(conn, primary_key).await?;
    create_indexes(conn, dropped).await?;
    phases[5] += clock.elapsed();
    let [pages, load, write, apply, last, indexes] = phases.map(|d| d.as_secs_f64());
    tracing::debug!(
        "rebuild: {replayed} events; seconds waiting for pages {pages:.1}, loading rows \
         {load:.1}, writing {write:.1}, waiting for replay {apply:.1}, writing the last \
         segment {last:.1}, building indexes {indexes:.1}"
    );
    Ok(replayed)
}

async fn run_statements(conn: &mut Conn, statements: Vec<Statement>) -> Result<(), RebuildError> {
    for statement in statements {
        let inserts = statement.inserts;
        let rows = statement.run(conn).await?;
        if inserts.is_some_and(|inserts| inserts != rows) {
            return Err(RebuildError::KeyWrittenTwice);
        }
    }
    Ok(())
}

/// A page cut after each `RetentionApplied`: retention deletes with SQL of its own, so the
/// rows before it are written first.
fn segments(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for event in events {
        let cut = matches!(event, Event::RetentionApplied { .. });
        current.push(event);
        if cut {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// The rows replaying `segment` reads, less those it creates itself. A row that an event of
/// the segment inserts whole (`State::apply` replaces it) ends as the segment leaves it,
/// whatever the database held before, and the events that read such a row change nothing
/// but that row; so it need not be loaded. In a log of submissions, a code is issued,
/// redeemed and its claim used within a few events: most pages then load nothing.
fn wanted_for_segment(segment: &[Event]) -> Wanted {
    let mut wanted = Wanted::default();
    let mut created = Wanted::default();
    for event in segment {
        wanted.for_event(event);
        match event {
            Event::ProviderRegistered { provider, .. } => {
                created.providers.insert(*provider);
            }
            Event::CodeIssued { code_hash, .. } => {
                created.codes.insert(*code_hash);
            }
            Event::CodeRedeemed { claim, .. } => {
                created.claims.insert(*claim);
            }
            Event::TansImported { tans, .. } => {
                created.codes.extend(tans.iter().copied());
            }
            Event::TanRedeemed { nonces, .. } => {
                created.claims.extend(nonces.iter().map(|n| n.claim));
            }
            _ => {}
        }
    }
    wanted.providers.retain(|p| !created.providers.contains(p));
    wanted.codes.retain(|c| !created.codes.contains(c));
    wanted.claims.retain(|c| !created.claims.contains(c));
    wanted
}

/// A page of decoded events, decoded on a blocking thread.
type Page = tokio::task::JoinHandle<Result<Vec<Event>, sqlx::Error>>;

/// Reads the log up to `last` on its own connection, a page at a time, and decodes each page
/// on a blocking thread while the next one is read. Pages arrive in order; the reader stops
/// when the receiver is dropped.
fn read_pages(mut reader: Conn, last: i64) -> mpsc::Receiver<Page> {
    let (pages, receiver) = mpsc::channel::<Page>(2);
    tokio::spawn(async move {
        let mut after = 0i64;
        while after < last {
            let rows = reader
                .fetch_all(
                    "SELECT seq, payload FROM events WHERE seq > $1 AND seq <= $2 \
                     ORDER BY seq LIMIT $3",
                    &[after.into(), last.into(), REBUILD_PAGE.into()],
                )
                .await;
            let rows: Result<Vec<(i64, String)>, sqlx::Error> = rows.and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((row.int(0)?, row.text(1)?)))
                    .collect()
            });
            let failed = rows.is_err();
            if let Ok(rows) = &rows {
                match rows.last() {
                    Some((seq, _)) => after = *seq,
                    None => break,
                }
            }
            let decoding = tokio::task::spawn_blocking(move || {
                rows?
                    .into_iter()
                    .map(|(seq, payload)| {
                        Event::decode(&payload).map_err(|source| {
                            sqlx::Error::Decode(
                                StoreError::CorruptLog { seq, source }.to_string().into(),
                            )
                        })
                    })
                    .collect()
            });
            if pages.send(decoding).await.is_err() || failed {
                break;
            }
        }
    });
    receiver
}

/// The secondary indexes of [`REINDEXED_TABLES`], dropped: (table, name, statement that
/// creates it again). Read from the catalog, so indexes added by later migrations are kept.
async fn drop_secondary_indexes(
    conn: &mut Conn,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let tables = REINDEXED_TABLES.map(|t| format!("'{t}'")).join(", ");
    let sql = match conn.dialect() {
        // Indexes behind PRIMARY KEY and UNIQUE have no SQL of their own; unique indexes
        // stay, as upserts need them.
        Dialect::Sqlite => format!(
            "SELECT tbl_name, name, sql FROM sqlite_master \
             WHERE type = 'index' AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%' \
             AND tbl_name IN ({tables}) ORDER BY name"
        ),
        Dialect::Postgres => format!(
            "SELECT t.relname::text, c.relname::text, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_class t ON t.oid = i.indrelid \
             WHERE t.relname IN ({tables}) AND t.relnamespace = current_schema()::regnamespace \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY c.relname"
        ),
    };
    let mut indexes = Vec::new();
    for row in conn.fetch_all(&sql, &[]).await? {
        indexes.push((row.text(0)?, row.text(1)?, row.text(2)?));
    }
    for (_, name, _) in &indexes {
        conn.execute_script(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
            .await?;
    }
    Ok(indexes)
}

/// Drops `table`'s primary key: PostgreSQL's constraint, or SQLite's unique index
/// `{table}_primary`. Returns the statement that adds it back.
async fn drop_primary_key(conn: &mut Conn, table: &str) -> Result<Option<String>, sqlx::Error> {
    let (find, params, drop): (_, _, fn(&str, &str) -> String) = match conn.dialect() {
        Dialect::Sqlite => (
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name = $1",
            vec![format!("{table}_primary").into()],
            |_, name| format!("DROP INDEX {name}"),
        ),
        Dialect::Postgres => (
            "SELECT conname::text, 'ALTER TABLE ' || $1 || ' ADD CONSTRAINT \"' || conname \
             || '\" ' || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::text::regclass AND contype = 'p'",
            vec![table.into()],
            |table, name| format!("ALTER TABLE {table} DROP CONSTRAINT {name}"),
        ),
    };
    let Some(row) = conn.fetch_optional(find, &params).await? else {
        return Ok(None);
    };
    let (name, add_back) = (row.text(0)?, row.text(1)?);
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    conn.execute_script(&drop(table, &quoted)).await?;
    Ok(Some(add_back))
}

async fn add_primary_key(conn: &mut Conn, add_back: Option<String>) -> Result<(), sqlx::Error> {
    if let Some(sql) = add_back {
        conn.execute_script(&sql).await?;
    }
    Ok(())
}

async fn create_indexes(
    conn: &mut Conn,
    indexes: Vec<(String, String, String)>,
) -> Result<(), sqlx::Error> {
    for (_, _, sql) in indexes {
        conn.execute_script(&sql).await?;
    }
    Ok(())
}

/// Appends the retention event, deletes what it forgets, and purges old key material from the
/// log, in one transaction.
async fn retention(
    conn: &mut Conn,
    event: &Event,
    purge_key_events_before_hour: u64,
) -> Result<Written, sqlx::Error> {
    let Event::RetentionApplied {
        now,
        keys_before_hour,
        files_ending_by,
    } = event
    else {
        unreachable!("Store::apply_retention sends RetentionApplied only");
    };
    conn.begin().await?;
    let count = |row: Option<crate::db::Row>| row.map_or(Ok(0), |r| r.int(0).map(|n| n as u64));
    let mut report = RetentionReport {
        codes: count(
            conn.fetch_optional(
                "SELECT COUNT(*) FROM codes WHERE expires_at <= $1",
                &[(*now).into()],
            )
            .await?,
        )?,
        claims: count(
            conn.fetch_optional(
                "SELECT COUNT(*) FROM claims WHERE expires_at <= $1 OR budget_remaining = 0",
                &[(*now).into()],
            )
            .await?,
        )?,
        keys: count(
            conn.fetch_optional(
                "SELECT COUNT(*) FROM keys WHERE hour < $1",
                &[(*keys_before_hour).into()],
            )
            .await?,
        )?,
        ..RetentionReport::default()
    };
    for row in conn
        .fetch_all(
            "SELECT path FROM files WHERE end_ts <= $1 ORDER BY path",
            &[(*files_ending_by).into()],
        )
        .await?
    {
        report.retired_files.push(row.text(0)?);
    }
    append_events(conn, std::slice::from_ref(event)).await?;
    projection::apply_retention(conn, event).await?;
    report.purged_events = conn
        .execute(
            "DELETE FROM events WHERE key_hour < $1",
            &[purge_key_events_before_hour.into()],
        )
        .await?;
    conn.commit().await?;
    Ok(Written::Retained(report))
}

#[cfg(test)]
mod rebuild_tests {
    use confidant_core::corrections::{Actor, Command};
    use confidant_core::state::StoredKey;
    use confidant_core::{
        ClaimId, CodeFormat, CodePolicy, Credential, Digest, KeyData, ProviderId, Region,
        TrackingId,
    };

    use crate::testing::TestDatabase;
    use crate::{Dialect, Store, StoreOptions};

    /// The secondary indexes of the reindexed tables, by name, with their definitions.
    async fn indexes(store: &Store) -> Vec<(String, String, String)> {
        let mut conn = store.inner.pool.acquire().await.expect("connection");
        conn.begin().await.expect("begin");
        let found = super::drop_secondary_indexes(&mut conn)
            .await
            .expect("list");
        conn.rollback().await.expect("rollback");
        found
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rebuild_restores_the_indexes_it_drops() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let db = TestDatabase::create(dialect).await;
            let store = Store::open(db.url(), StoreOptions::default())
                .await
                .expect("opens");
            // A withdrawal makes the rebuild build the keys-by-submission index early.
            let now = 1_800_000_000;
            store
                .register_provider(
                    ProviderId([1; 8]),
                    "Lab".into(),
                    Region::try_from("DE".to_owned()).expect("region"),
                    Digest([2; 32]),
                )
                .await
                .expect("register");
            let policy = CodePolicy::default();
            store
                .issue_code(
                    Digest([2; 32]),
                    CodeFormat::Long,
                    None,
                    policy,
                    Digest([3; 32]),
                    now,
                )
                .await
                .expect("issue");
            let credential = Credential::UploadToken {
                token_hash: Digest([4; 32]),
            };
            store
                .redeem_code(Digest([3; 32]), ClaimId([5; 16]), credential, now)
                .await
                .expect("redeem");
            let key = StoredKey {
                key_data: KeyData([6; 16]),
                rolling_start: (now / 600) as u32 / 144 * 144,
                rolling_period: 144,
                transmission_risk: 3,
            };
            let lookup = super::ClaimLookup::Token(Digest([4; 32]));
            store
                .submit(lookup, vec![key], TrackingId([7; 16]), now)
                .await
                .expect("submit");
            let withdraw = Command::WithdrawSubmission(TrackingId([7; 16]));
            store
                .correct(withdraw, Actor::Console, now, "test".into())
                .await
                .expect("withdraw");
            let before = indexes(&store).await;
            let names: Vec<&str> = before.iter().map(|(_, name, _)| name.as_str()).collect();
            assert!(
                names.contains(&"keys_by_region_hour") && !names.contains(&"keys_by_submission"),
                "{dialect:?}: {names:?}"
            );
            let digest = store.state_digest().await.expect("digest");
            assert_eq!(store.rebuild().await.expect("rebuild"), 6);
            assert_eq!(indexes(&store).await, before, "{dialect:?}");
            assert_eq!(store.state_digest().await.expect("digest"), digest);
            store.close().await;
            db.finish().await;
        }
    }
}
