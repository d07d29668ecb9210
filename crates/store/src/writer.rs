//! The single writer: every change goes through here, one transaction per batch.
//!
//! Requests queue on a channel. The writer takes all that are waiting (up to `max_batch`),
//! runs each inside its own savepoint (so one refused request does not undo the others), and
//! commits once: one fsync for the whole batch. Nobody is answered before that commit returns,
//! so an acknowledgement always means the data is on stable storage.

use std::collections::BTreeSet;

use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, DomainError, Event, Key32, KeyData,
    ProviderId, Region, SubmissionOutcome, TrackingId, UnixSeconds, rules,
};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::db::{Conn, Dialect, Pool, Value};
use crate::projection::{self, CLAIM_COLUMNS, CODE_COLUMNS, PROVIDER_COLUMNS};

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
}

pub(crate) struct Job {
    pub write: Write,
    pub reply: oneshot::Sender<Result<Written, StoreError>>,
}

pub(crate) async fn run(pool: Pool, mut jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let mut conn: Option<Conn> = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
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
        let (results, healthy) = run_batch(connection, &batch).await;
        if !healthy {
            // Drop a connection that failed mid-transaction; the next batch takes a fresh one.
            conn = None;
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Runs a batch in one transaction. Returns each job's result and whether the connection is
/// still usable.
async fn run_batch(conn: &mut Conn, batch: &[Job]) -> (Vec<Result<Written, StoreError>>, bool) {
    let unavailable = |e: &sqlx::Error| StoreError::Unavailable(e.to_string());
    if let Err(e) = conn.begin().await {
        return (batch.iter().map(|_| Err(unavailable(&e))).collect(), false);
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = conn.execute_script("SAVEPOINT job").await {
            conn.rollback().await.ok();
            return (batch.iter().map(|_| Err(unavailable(&e))).collect(), false);
        }
        let result = execute(conn, &job.write).await;
        let end = if result.is_ok() {
            "RELEASE SAVEPOINT job"
        } else {
            "ROLLBACK TO SAVEPOINT job"
        };
        if let Err(e) = conn.execute_script(end).await {
            conn.rollback().await.ok();
            return (batch.iter().map(|_| Err(unavailable(&e))).collect(), false);
        }
        results.push(result);
    }
    match conn.commit().await {
        Ok(()) => (results, true),
        Err(e) => {
            conn.rollback().await.ok();
            // Nothing of this batch is stored: successes become failures.
            let results = results
                .into_iter()
                .map(|r| r.and(Err(unavailable(&e))))
                .collect();
            (results, false)
        }
    }
}

async fn append(conn: &mut Conn, event: &Event) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (payload) VALUES ($1)",
        &[event.encode().into()],
    )
    .await?;
    projection::project(conn, event).await?;
    Ok(())
}

async fn provider(
    conn: &mut Conn,
    column: &str,
    value: Value,
) -> Result<Option<(ProviderId, confidant_core::Provider)>, StoreError> {
    let sql = format!(
        "SELECT id, {PROVIDER_COLUMNS} FROM providers WHERE {column} = $1{}",
        conn.dialect().for_update()
    );
    Ok(match conn.fetch_optional(&sql, &[value]).await? {
        Some(row) => Some((
            ProviderId(row.array(0)?),
            projection::provider_from_row(&row, 1)?,
        )),
        None => None,
    })
}

async fn execute(conn: &mut Conn, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::RegisterProvider {
            provider,
            name,
            region,
            token_hash,
        } => {
            append(
                conn,
                &Event::ProviderRegistered {
                    provider: *provider,
                    name: name.clone(),
                    region: region.clone(),
                    token_hash: *token_hash,
                },
            )
            .await?;
            Ok(Written::ProviderRegistered)
        }
        Write::SetSuspended {
            provider: id,
            suspended,
        } => {
            let (_, current) = provider(conn, "id", id.0.into())
                .await?
                .ok_or(DomainError::UnknownProvider)?;
            if current.suspended == *suspended {
                return Ok(Written::SuspensionChanged(false));
            }
            let event = if *suspended {
                Event::ProviderSuspended { provider: *id }
            } else {
                Event::ProviderReinstated { provider: *id }
            };
            append(conn, &event).await?;
            Ok(Written::SuspensionChanged(true))
        }
        Write::IssueCode {
            token_hash,
            format,
            ttl_seconds,
            policy,
            code_hash,
            now,
        } => {
            let (id, issuer) = provider(conn, "token_hash", token_hash.0.into())
                .await?
                .ok_or(DomainError::UnknownProvider)?;
            let event =
                rules::issue_code(id, &issuer, *format, *ttl_seconds, policy, *now, *code_hash)?;
            let Event::CodeIssued { expires_at, .. } = event else {
                unreachable!("issue_code returns CodeIssued");
            };
            append(conn, &event).await?;
            Ok(Written::CodeIssued {
                provider: id,
                region: issuer.region,
                expires_at,
            })
        }
        Write::Redeem {
            code_hash,
            claim,
            credential,
            now,
        } => {
            let sql = format!(
                "SELECT {CODE_COLUMNS} FROM codes WHERE code_hash = $1{}",
                conn.dialect().for_update()
            );
            let code = match conn.fetch_optional(&sql, &[code_hash.0.into()]).await? {
                Some(row) => Some(projection::code_from_row(&row, 0)?),
                None => None,
            };
            let issuer = match &code {
                Some(code) => provider(conn, "id", code.provider.0.into())
                    .await?
                    .map(|(_, p)| p),
                None => None,
            };
            let event = rules::redeem_code(
                *code_hash,
                code.as_ref(),
                issuer.as_ref(),
                *now,
                *claim,
                credential.clone(),
            )?;
            let Event::CodeRedeemed {
                expires_at,
                key_budget,
                ..
            } = event
            else {
                unreachable!("redeem_code returns CodeRedeemed");
            };
            append(conn, &event).await?;
            Ok(Written::Redeemed {
                claim: *claim,
                expires_at,
                key_budget,
            })
        }
        Write::Submit {
            lookup,
            keys,
            tracking_id,
            now,
        } => {
            let (column, value, app_key) = match lookup {
                ClaimLookup::Token(hash) => ("token_hash", hash.0, None),
                ClaimLookup::CovidShield {
                    server_public_key,
                    app_public_key,
                } => (
                    "server_public_key",
                    server_public_key.0,
                    Some(*app_public_key),
                ),
            };
            let sql = format!(
                "SELECT id, {CLAIM_COLUMNS} FROM claims WHERE {column} = $1{}",
                conn.dialect().for_update()
            );
            let (claim_id, claim) = match conn.fetch_optional(&sql, &[value.into()]).await? {
                Some(row) => (
                    ClaimId(row.array(0)?),
                    Some(projection::claim_from_row(&row, 1)?),
                ),
                None => (ClaimId([0; 16]), None),
            };
            if let (Some(expected), Some(claim)) = (app_key, &claim)
                && !matches!(&claim.credential, Credential::CovidShield { app_public_key, .. } if *app_public_key == expected)
            {
                return Err(DomainError::AppKeyMismatch.into());
            }
            let issuer = match &claim {
                Some(claim) => provider(conn, "id", claim.provider.0.into())
                    .await?
                    .map(|(_, p)| p),
                None => None,
            };
            let stored = stored_keys(conn, keys).await?;
            let (event, outcome) = rules::submit(
                claim_id,
                claim.as_ref(),
                issuer.as_ref(),
                keys.clone(),
                |k| stored.contains(k),
                *now,
                *tracking_id,
            )?;
            append(conn, &event).await?;
            Ok(Written::Submitted(outcome))
        }
        Write::Rebuild => {
            if conn.dialect() == Dialect::Postgres {
                conn.execute_script("LOCK TABLE events IN EXCLUSIVE MODE")
                    .await?;
            }
            projection::clear(conn).await?;
            let mut replayed = 0;
            let mut after = 0i64;
            loop {
                let page = crate::read_events(conn, after, 1000).await?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (_, event) in &page {
                    projection::project(conn, event).await?;
                    replayed += 1;
                }
            }
            Ok(Written::Rebuilt { events: replayed })
        }
    }
}

/// Which of `keys` are already stored.
async fn stored_keys(conn: &mut Conn, keys: &[StoredKey]) -> Result<BTreeSet<KeyData>, StoreError> {
    if keys.is_empty() {
        return Ok(BTreeSet::new());
    }
    let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT key_data FROM keys WHERE key_data IN ({})",
        placeholders.join(", ")
    );
    let params: Vec<Value> = keys.iter().map(|k| k.key_data.0.into()).collect();
    conn.fetch_all(&sql, &params)
        .await?
        .iter()
        .map(|row| Ok(KeyData(row.array(0)?)))
        .collect()
}
