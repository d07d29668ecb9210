//! Projections: the tables that mirror `core::State`, updated from events and read back.
//!
//! Invariant: nothing writes these tables except [`project`], called with each event in the
//! same transaction that appends it; [`load_state`] reads them into the same shape that
//! `State::replay` computes from the log, so the two can be compared.

use confidant_core::state::KeyRecord;
use confidant_core::{
    Claim, ClaimId, Code, CodeFormat, Credential, Digest, Event, Key32, KeyData, Provider,
    ProviderId, Region, State, StoredKey, Submission, TrackingId,
};

use crate::db::{Conn, Row};
use crate::schema::PROJECTION_TABLES;

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn region(row: &Row, index: usize) -> Result<Region, sqlx::Error> {
    Region::try_from(row.text(index)?).map_err(decode_error)
}

/// Applies one event to the projection tables.
pub async fn project(conn: &mut Conn, event: &Event) -> Result<(), sqlx::Error> {
    match event {
        Event::ProviderRegistered {
            provider,
            name,
            region,
            token_hash,
        } => {
            conn.execute(
                "INSERT INTO providers (id, name, region, token_hash, suspended) VALUES ($1, $2, $3, $4, 0)",
                &[provider.0.into(), name.as_str().into(), region.as_str().into(), token_hash.0.into()],
            )
            .await?;
        }
        Event::ProviderSuspended { provider } | Event::ProviderReinstated { provider } => {
            let suspended = matches!(event, Event::ProviderSuspended { .. });
            conn.execute(
                "UPDATE providers SET suspended = $1 WHERE id = $2",
                &[suspended.into(), provider.0.into()],
            )
            .await?;
        }
        Event::CodeIssued {
            code_hash,
            provider,
            format,
            expires_at,
        } => {
            conn.execute(
                "INSERT INTO codes (code_hash, provider, format, expires_at, redeemed) VALUES ($1, $2, $3, $4, 0)",
                &[code_hash.0.into(), provider.0.into(), format.name().into(), (*expires_at).into()],
            )
            .await?;
        }
        Event::CodeRedeemed {
            code_hash,
            claim,
            provider,
            region,
            expires_at,
            key_budget,
            credential,
        } => {
            conn.execute(
                "UPDATE codes SET redeemed = 1 WHERE code_hash = $1",
                &[code_hash.0.into()],
            )
            .await?;
            let (token_hash, app_key, server_public, server_secret) = match credential {
                Credential::UploadToken { token_hash } => (Some(token_hash.0), None, None, None),
                Credential::CovidShield {
                    app_public_key,
                    server_public_key,
                    server_secret_key,
                } => (
                    None,
                    Some(app_public_key.0),
                    Some(server_public_key.0),
                    Some(server_secret_key.0),
                ),
            };
            conn.execute(
                "INSERT INTO claims (id, provider, region, expires_at, budget_remaining, token_hash, app_public_key, server_public_key, server_secret_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    claim.0.into(),
                    provider.0.into(),
                    region.as_str().into(),
                    (*expires_at).into(),
                    (*key_budget).into(),
                    token_hash.into(),
                    app_key.into(),
                    server_public.into(),
                    server_secret.into(),
                ],
            )
            .await?;
        }
        Event::KeysSubmitted {
            submission,
            claim,
            provider,
            region,
            hour,
            keys,
            skipped,
            dropped,
        } => {
            let spent = keys.len() as u32;
            conn.execute(
                "UPDATE claims SET budget_remaining = CASE WHEN budget_remaining > $1 THEN budget_remaining - $1 ELSE 0 END WHERE id = $2",
                &[spent.into(), claim.0.into()],
            )
            .await?;
            conn.execute(
                "INSERT INTO submissions (id, claim, provider, region, hour, inserted, skipped, dropped) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    submission.0.into(),
                    claim.0.into(),
                    provider.0.into(),
                    region.as_str().into(),
                    (*hour).into(),
                    spent.into(),
                    (*skipped).into(),
                    (*dropped).into(),
                ],
            )
            .await?;
            if !keys.is_empty() {
                let mut sql = String::from(
                    "INSERT INTO keys (key_data, rolling_start, rolling_period, transmission_risk, submission) VALUES ",
                );
                let mut params = Vec::with_capacity(keys.len() * 5);
                for (i, key) in keys.iter().enumerate() {
                    let n = i * 5;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    ));
                    params.extend([
                        key.key_data.0.into(),
                        key.rolling_start.into(),
                        key.rolling_period.into(),
                        u32::from(key.transmission_risk).into(),
                        submission.0.into(),
                    ]);
                }
                conn.execute(&sql, &params).await?;
            }
        }
    }
    Ok(())
}

/// Empties every projection table (inside the caller's transaction).
pub async fn clear(conn: &mut Conn) -> Result<(), sqlx::Error> {
    for table in PROJECTION_TABLES {
        conn.execute(&format!("DELETE FROM {table}"), &[]).await?;
    }
    Ok(())
}

pub fn provider_from_row(row: &Row, first: usize) -> Result<Provider, sqlx::Error> {
    Ok(Provider {
        name: row.text(first)?,
        region: region(row, first + 1)?,
        token_hash: Digest(row.array(first + 2)?),
        suspended: row.int(first + 3)? != 0,
    })
}
pub const PROVIDER_COLUMNS: &str = "name, region, token_hash, suspended";

pub fn code_from_row(row: &Row, first: usize) -> Result<Code, sqlx::Error> {
    let format = row.text(first + 1)?;
    Ok(Code {
        provider: ProviderId(row.array(first)?),
        format: CodeFormat::parse(&format)
            .ok_or_else(|| decode_error(format!("unknown code format {format}")))?,
        expires_at: row.int(first + 2)? as u64,
        redeemed: row.int(first + 3)? != 0,
    })
}
pub const CODE_COLUMNS: &str = "provider, format, expires_at, redeemed";

pub fn claim_from_row(row: &Row, first: usize) -> Result<Claim, sqlx::Error> {
    let credential = match row.opt_array::<32>(first + 4)? {
        Some(token_hash) => Credential::UploadToken {
            token_hash: Digest(token_hash),
        },
        None => Credential::CovidShield {
            app_public_key: Key32(row.array(first + 5)?),
            server_public_key: Key32(row.array(first + 6)?),
            server_secret_key: Key32(row.array(first + 7)?),
        },
    };
    Ok(Claim {
        provider: ProviderId(row.array(first)?),
        region: region(row, first + 1)?,
        expires_at: row.int(first + 2)? as u64,
        budget_remaining: row.int(first + 3)? as u32,
        credential,
    })
}
pub const CLAIM_COLUMNS: &str = "provider, region, expires_at, budget_remaining, token_hash, app_public_key, server_public_key, server_secret_key";

pub fn submission_from_row(row: &Row, first: usize) -> Result<Submission, sqlx::Error> {
    Ok(Submission {
        claim: ClaimId(row.array(first)?),
        provider: ProviderId(row.array(first + 1)?),
        region: region(row, first + 2)?,
        hour: row.int(first + 3)? as u64,
        inserted: row.int(first + 4)? as u32,
        skipped: row.int(first + 5)? as u32,
        dropped: row.int(first + 6)? as u32,
    })
}
pub const SUBMISSION_COLUMNS: &str = "claim, provider, region, hour, inserted, skipped, dropped";

/// Reads every projection table into a `State`.
pub async fn load_state(conn: &mut Conn) -> Result<State, sqlx::Error> {
    let mut state = State::default();
    for row in conn
        .fetch_all(
            &format!("SELECT id, {PROVIDER_COLUMNS} FROM providers"),
            &[],
        )
        .await?
    {
        state
            .providers
            .insert(ProviderId(row.array(0)?), provider_from_row(&row, 1)?);
    }
    for row in conn
        .fetch_all(&format!("SELECT code_hash, {CODE_COLUMNS} FROM codes"), &[])
        .await?
    {
        state
            .codes
            .insert(Digest(row.array(0)?), code_from_row(&row, 1)?);
    }
    for row in conn
        .fetch_all(&format!("SELECT id, {CLAIM_COLUMNS} FROM claims"), &[])
        .await?
    {
        state
            .claims
            .insert(ClaimId(row.array(0)?), claim_from_row(&row, 1)?);
    }
    for row in conn
        .fetch_all(
            &format!("SELECT id, {SUBMISSION_COLUMNS} FROM submissions"),
            &[],
        )
        .await?
    {
        state
            .submissions
            .insert(TrackingId(row.array(0)?), submission_from_row(&row, 1)?);
    }
    for row in conn
        .fetch_all(
            "SELECT key_data, rolling_start, rolling_period, transmission_risk, submission FROM keys",
            &[],
        )
        .await?
    {
        let key = StoredKey {
            key_data: KeyData(row.array(0)?),
            rolling_start: row.int(1)? as u32,
            rolling_period: row.int(2)? as u32,
            transmission_risk: row.int(3)? as u8,
        };
        state.keys.insert(key.key_data, KeyRecord { key, submission: TrackingId(row.array(4)?) });
    }
    Ok(state)
}
