//! The single writer: every change goes through here, one transaction per batch.
//!
//! Requests queue on a channel. The writer takes all that are waiting (up to `max_batch`),
//! loads the rows they touch, decides each in memory with `core`'s rules (a refused request
//! leaves no trace, and later ones see earlier ones), writes the events and changed rows with a
//! few multi-row statements, and commits once: one fsync for the whole batch. Nobody is
//! answered before that commit returns, so an acknowledgement always means the data is on
//! stable storage; if the commit fails, every request of the batch gets an error.

use confidant_core::corrections::{self, Actor, Command, Outcome};
use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, DomainError, Event, Key32, ProviderId,
    Region, SubmissionOutcome, TrackingId, UnixSeconds, rules,
};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::db::{Conn, Dialect, Pool};
use crate::overlay::{Overlay, Wanted, append_events};
use crate::projection;

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
    Rebuild,
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
        matches!(self, Write::Rebuild | Write::Retention { .. })
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
            Write::Rebuild => rebuild(connection).await.map(|w| vec![Ok(w)]),
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
            Write::Publish(Event::BatchPublished { region, stream, .. }) => {
                wanted.cursors.insert((region.clone(), *stream));
            }
            Write::Correct { command, .. } => command_wants(command, wanted),
            Write::Publish(_) | Write::Rebuild | Write::Retention { .. } => {}
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
        Write::Rebuild | Write::Retention { .. } => unreachable!("runs alone"),
    }
}

/// Empties the projections and replays the log into them, one page of events at a time.
async fn rebuild(conn: &mut Conn) -> Result<Written, sqlx::Error> {
    conn.begin().await?;
    if conn.dialect() == Dialect::Postgres {
        conn.execute_script("LOCK TABLE events IN EXCLUSIVE MODE")
            .await?;
    }
    projection::clear(conn).await?;
    let mut replayed = 0;
    let mut after = 0i64;
    loop {
        let page = crate::read_events(conn, after, 5000)
            .await
            .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        let events: Vec<Event> = page.into_iter().map(|(_, e)| e).collect();
        // Retention deletes with SQL: the rows before it must be written first.
        for segment in events.split_inclusive(|e| matches!(e, Event::RetentionApplied { .. })) {
            let mut wanted = Wanted::default();
            for event in segment {
                wanted.for_event(event);
            }
            let mut overlay = Overlay::load(conn, wanted).await?;
            for event in segment {
                overlay.apply(event);
                replayed += 1;
            }
            overlay.write_back(conn).await?;
            if let Some(last @ Event::RetentionApplied { .. }) = segment.last() {
                projection::apply_retention(conn, last).await?;
            }
        }
    }
    conn.commit().await?;
    Ok(Written::Rebuilt { events: replayed })
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
