//! Projections: the tables that mirror `core::State`, updated from events and read back.
//!
//! Invariant: nothing writes these tables except `overlay::Overlay::write_back`, which stores
//! rows as `State::apply` left them, in the transaction that appends the events, and
//! [`apply_retention`], the set-based twin of `apply` for `RetentionApplied`;
//! [`load_state`] reads them into the same shape that `State::replay` computes from the log, so
//! the two can be compared.

use confidant_core::encounter::{ResearchCell, TokenHash};
use confidant_core::state::StateDigest;
use confidant_core::state::{KeyRecord, TestResult, TokenRecord, TokenSubmission};
use confidant_core::{
    AdminToken, AdminTokenId, Claim, ClaimId, Code, CodeFormat, Credential, Cursor, Digest, Event,
    FileRecord, Key32, KeyData, Provider, ProviderId, Region, Scope, State, StoredKey, Stream,
    Submission, TrackingId,
};

use crate::db::{Conn, Row, Value};
use crate::schema::PROJECTION_TABLES;

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn region(row: &Row, index: usize) -> Result<Region, sqlx::Error> {
    Region::try_from(row.text(index)?).map_err(decode_error)
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
        revoked: row.int(first + 4)? != 0,
    })
}
pub const PROVIDER_COLUMNS: &str = "name, region, token_hash, suspended, revoked";

pub fn code_from_row(row: &Row, first: usize) -> Result<Code, sqlx::Error> {
    let format = row.text(first + 1)?;
    Ok(Code {
        provider: ProviderId(row.array(first)?),
        format: CodeFormat::from_stored(&format)
            .ok_or_else(|| decode_error(format!("unknown code format {format}")))?,
        expires_at: row.int(first + 2)? as u64,
        redeemed: row.int(first + 3)? != 0,
    })
}
pub const CODE_COLUMNS: &str = "provider, format, expires_at, redeemed";

pub fn claim_from_row(row: &Row, first: usize) -> Result<Claim, sqlx::Error> {
    let credential = match (
        row.opt_array::<32>(first + 4)?,
        row.opt_array::<32>(first + 7)?,
    ) {
        (Some(token_hash), _) => Credential::UploadToken {
            token_hash: Digest(token_hash),
        },
        (None, Some(nonce_hash)) => Credential::Nonce {
            nonce_hash: Digest(nonce_hash),
        },
        (None, None) => Credential::CovidShield {
            app_public_key: Key32(row.array(first + 5)?),
            server_public_key: Key32(row.array(first + 6)?),
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
pub const CLAIM_COLUMNS: &str = "provider, region, expires_at, budget_remaining, token_hash, \
     app_public_key, server_public_key, nonce_hash";

pub fn submission_from_row(row: &Row, first: usize) -> Result<Submission, sqlx::Error> {
    Ok(Submission {
        claim: ClaimId(row.array(first)?),
        provider: ProviderId(row.array(first + 1)?),
        region: region(row, first + 2)?,
        hour: row.int(first + 3)? as u64,
        inserted: row.int(first + 4)? as u32,
        skipped: row.int(first + 5)? as u32,
        dropped: row.int(first + 6)? as u32,
        withdrawn: row.int(first + 7)? != 0,
    })
}
pub const SUBMISSION_COLUMNS: &str =
    "claim, provider, region, hour, inserted, skipped, dropped, withdrawn";

pub fn key_record_from_row(row: &Row, first: usize) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        key: StoredKey {
            key_data: KeyData(row.array(first)?),
            rolling_start: row.int(first + 1)? as u32,
            rolling_period: row.int(first + 2)? as u32,
            transmission_risk: row.int(first + 3)? as u8,
        },
        submission: TrackingId(row.array(first + 4)?),
        region: region(row, first + 5)?,
        hour: row.int(first + 6)? as u64,
        withdrawn: row.opt_int(first + 7)?.map(|n| n as u64),
    })
}
pub const KEY_COLUMNS: &str = "key_data, rolling_start, rolling_period, transmission_risk, \
     submission, region, hour, withdrawn";

pub fn token_submission_from_row(row: &Row, first: usize) -> Result<TokenSubmission, sqlx::Error> {
    Ok(TokenSubmission {
        claim: row.opt_array::<16>(first)?.map(ClaimId),
        provider: ProviderId(row.array(first + 1)?),
        hour: row.int(first + 2)? as u64,
        level: row.int(first + 3)? as u8,
        inserted: row.int(first + 4)? as u32,
        skipped: row.int(first + 5)? as u32,
        withdrawn: row.int(first + 6)? != 0,
    })
}
pub const TOKEN_SUBMISSION_COLUMNS: &str =
    "claim, provider, hour, level, inserted, skipped, withdrawn";

/// Decodes `hash, TOKEN_COLUMNS`.
pub fn token_from_row(row: &Row) -> Result<(TokenHash, TokenRecord), sqlx::Error> {
    Ok((
        TokenHash(row.array(0)?),
        TokenRecord {
            submission: TrackingId(row.array(1)?),
            area: region(row, 2)?,
            day: row.int(3)? as u32,
            level: row.int(4)? as u8,
            hour: row.int(5)? as u64,
            withdrawn: row.opt_int(6)?.map(|n| n as u64),
            proved: row.int(7)? != 0,
            researched: row.int(8)? != 0,
        },
    ))
}
pub const TOKEN_COLUMNS: &str =
    "hash, submission, area, day, level, hour, withdrawn, proved, researched";

/// Decodes `test, TEST_RESULT_COLUMNS`.
pub fn test_result_from_row(row: &Row) -> Result<(Digest, TestResult), sqlx::Error> {
    Ok((
        Digest(row.array(0)?),
        TestResult {
            provider: ProviderId(row.array(1)?),
            positive: row.int(2)? != 0,
            expires_at: row.int(3)? as u64,
            used: row.int(4)? != 0,
        },
    ))
}
pub const TEST_RESULT_COLUMNS: &str = "test, provider, positive, expires_at, used";

/// Decodes `RESEARCH_COLUMNS`.
pub fn research_from_row(row: &Row) -> Result<(ResearchCell, u64), sqlx::Error> {
    Ok((
        ResearchCell {
            day: row.int(0)? as u32,
            duration: row.int(1)? as u8,
            attenuation: row.int(2)? as u8,
            level: row.int(3)? as u8,
        },
        row.int(4)? as u64,
    ))
}
pub const RESEARCH_COLUMNS: &str = "day, duration, attenuation, level, count";

fn stream(row: &Row, index: usize) -> Result<Stream, sqlx::Error> {
    let text = row.text(index)?;
    Stream::parse(&text).ok_or_else(|| decode_error(format!("unknown stream {text}")))
}

/// Decodes `region, stream, CURSOR_COLUMNS`.
pub fn cursor_from_row(row: &Row) -> Result<((Region, Stream), Cursor), sqlx::Error> {
    Ok((
        (region(row, 0)?, stream(row, 1)?),
        Cursor {
            next_start: row.int(2)? as u64,
            held_from: row.int(3)? as u64,
            seq: row.int(4)? as u64,
            chain_hash: Digest(row.array(5)?),
            revised_through: row.int(6)? as u64,
        },
    ))
}
pub const CURSOR_COLUMNS: &str =
    "region, stream, next_start, held_from, seq, chain_hash, revised_through";

/// Decodes `FILE_COLUMNS`.
pub fn file_from_row(row: &Row) -> Result<(String, FileRecord), sqlx::Error> {
    Ok((
        row.text(0)?,
        FileRecord {
            region: region(row, 1)?,
            stream: stream(row, 2)?,
            start: row.int(3)? as u64,
            end: row.int(4)? as u64,
            seq: row.int(5)? as u64,
            sha256: Digest(row.array(6)?),
            bytes: row.int(7)? as u64,
        },
    ))
}
pub const FILE_COLUMNS: &str = "path, region, stream, start_ts, end_ts, seq, sha256, bytes";

/// Decodes `id, ADMIN_TOKEN_COLUMNS`.
pub fn admin_token_from_row(row: &Row) -> Result<(AdminTokenId, AdminToken), sqlx::Error> {
    let scope = row.text(2)?;
    Ok((
        AdminTokenId(row.array(0)?),
        AdminToken {
            token_hash: Digest(row.array(1)?),
            scope: Scope::parse(&scope)
                .ok_or_else(|| decode_error(format!("unknown scope {scope}")))?,
            label: row.text(3)?,
            revoked: row.int(4)? != 0,
        },
    ))
}
pub const ADMIN_TOKEN_COLUMNS: &str = "id, token_hash, scope, label, revoked";

/// The withdrawal counter (0 before the first withdrawal).
pub async fn withdrawals(conn: &mut Conn) -> Result<u64, sqlx::Error> {
    Ok(conn
        .fetch_optional("SELECT value FROM counters WHERE name = 'withdrawals'", &[])
        .await?
        .map(|row| row.int(0))
        .transpose()?
        .unwrap_or(0) as u64)
}

/// Reads the tables that stay small (providers, cursors, files, admin tokens, counters).
async fn load_small_tables(conn: &mut Conn) -> Result<State, sqlx::Error> {
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
        .fetch_all(&format!("SELECT {CURSOR_COLUMNS} FROM cursors"), &[])
        .await?
    {
        let (key, cursor) = cursor_from_row(&row)?;
        state.cursors.insert(key, cursor);
    }
    for row in conn
        .fetch_all(&format!("SELECT {FILE_COLUMNS} FROM files"), &[])
        .await?
    {
        let (path, file) = file_from_row(&row)?;
        state.files.insert(path, file);
    }
    for row in conn
        .fetch_all(
            &format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens"),
            &[],
        )
        .await?
    {
        let (id, token) = admin_token_from_row(&row)?;
        state.admin_tokens.insert(id, token);
    }
    for row in conn
        .fetch_all(&format!("SELECT {RESEARCH_COLUMNS} FROM research"), &[])
        .await?
    {
        let (cell, count) = research_from_row(&row)?;
        state.research.insert(cell, count);
    }
    state.withdrawals = withdrawals(conn).await?;
    Ok(state)
}

/// Reads every projection table into a `State`.
pub async fn load_state(conn: &mut Conn) -> Result<State, sqlx::Error> {
    let mut state = load_small_tables(conn).await?;
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
        .fetch_all(&format!("SELECT {KEY_COLUMNS} FROM keys"), &[])
        .await?
    {
        let record = key_record_from_row(&row, 0)?;
        state.keys.insert(record.key.key_data, record);
    }
    for row in conn
        .fetch_all(
            &format!("SELECT id, {TOKEN_SUBMISSION_COLUMNS} FROM token_submissions"),
            &[],
        )
        .await?
    {
        state.token_submissions.insert(
            TrackingId(row.array(0)?),
            token_submission_from_row(&row, 1)?,
        );
    }
    for row in conn
        .fetch_all(&format!("SELECT {TOKEN_COLUMNS} FROM tokens"), &[])
        .await?
    {
        let (hash, record) = token_from_row(&row)?;
        state.tokens.insert(hash, record);
    }
    for row in conn
        .fetch_all(
            &format!("SELECT {TEST_RESULT_COLUMNS} FROM test_results"),
            &[],
        )
        .await?
    {
        let (test, result) = test_result_from_row(&row)?;
        state.test_results.insert(test, result);
    }
    Ok(state)
}

/// Pages through a table in primary-key order (`key` is a BLOB column, so both backends
/// order it bytewise, as `BTreeMap` orders the byte arrays), feeding each row to `digest`.
async fn digest_table<K: std::fmt::Debug, V: std::fmt::Debug>(
    conn: &mut Conn,
    digest: &mut StateDigest,
    name: &str,
    select: &str,
    key: &str,
    decode: impl Fn(&Row) -> Result<(Vec<u8>, K, V), sqlx::Error>,
) -> Result<(), sqlx::Error> {
    digest.start(name);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = match &after {
            None => {
                conn.fetch_all(&format!("{select} ORDER BY {key} LIMIT 20000"), &[])
                    .await?
            }
            Some(last) => {
                conn.fetch_all(
                    &format!("{select} WHERE {key} > $1 ORDER BY {key} LIMIT 20000"),
                    &[Value::Bytes(last.clone())],
                )
                .await?
            }
        };
        let Some(last_row) = rows.last() else {
            return Ok(());
        };
        after = Some(decode(last_row)?.0);
        for row in &rows {
            let (_, k, v) = decode(row)?;
            digest.record(&k, &v);
        }
    }
}

/// [`State::digest`] of the projections, streamed: the large tables are read a page at a
/// time, so memory stays flat however much the store holds.
pub async fn state_digest(conn: &mut Conn) -> Result<Digest, sqlx::Error> {
    let small = load_small_tables(conn).await?;
    let mut digest = StateDigest::default();
    digest.table("providers", &small.providers);
    digest_table(
        conn,
        &mut digest,
        "codes",
        &format!("SELECT code_hash, {CODE_COLUMNS} FROM codes"),
        "code_hash",
        |row| {
            Ok((
                row.array::<32>(0)?.to_vec(),
                Digest(row.array(0)?),
                code_from_row(row, 1)?,
            ))
        },
    )
    .await?;
    digest_table(
        conn,
        &mut digest,
        "claims",
        &format!("SELECT id, {CLAIM_COLUMNS} FROM claims"),
        "id",
        |row| {
            Ok((
                row.array::<16>(0)?.to_vec(),
                ClaimId(row.array(0)?),
                claim_from_row(row, 1)?,
            ))
        },
    )
    .await?;
    digest_table(
        conn,
        &mut digest,
        "submissions",
        &format!("SELECT id, {SUBMISSION_COLUMNS} FROM submissions"),
        "id",
        |row| {
            Ok((
                row.array::<16>(0)?.to_vec(),
                TrackingId(row.array(0)?),
                submission_from_row(row, 1)?,
            ))
        },
    )
    .await?;
    digest_table(
        conn,
        &mut digest,
        "keys",
        &format!("SELECT {KEY_COLUMNS} FROM keys"),
        "key_data",
        |row| {
            let record = key_record_from_row(row, 0)?;
            Ok((record.key.key_data.0.to_vec(), record.key.key_data, record))
        },
    )
    .await?;
    digest.table("cursors", &small.cursors);
    digest.table("files", &small.files);
    digest.table("admin_tokens", &small.admin_tokens);
    digest_table(
        conn,
        &mut digest,
        "token_submissions",
        &format!("SELECT id, {TOKEN_SUBMISSION_COLUMNS} FROM token_submissions"),
        "id",
        |row| {
            Ok((
                row.array::<16>(0)?.to_vec(),
                TrackingId(row.array(0)?),
                token_submission_from_row(row, 1)?,
            ))
        },
    )
    .await?;
    digest_table(
        conn,
        &mut digest,
        "tokens",
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens"),
        "hash",
        |row| {
            let (hash, record) = token_from_row(row)?;
            Ok((hash.0.to_vec(), hash, record))
        },
    )
    .await?;
    digest.table("research", &small.research);
    digest_table(
        conn,
        &mut digest,
        "test_results",
        &format!("SELECT {TEST_RESULT_COLUMNS} FROM test_results"),
        "test",
        |row| {
            let (test, result) = test_result_from_row(row)?;
            Ok((test.0.to_vec(), test, result))
        },
    )
    .await?;
    Ok(digest.finish(small.withdrawals))
}

/// Runs a `RetentionApplied` event's deletions: the same rows `State::apply` drops.
pub async fn apply_retention(conn: &mut Conn, event: &Event) -> Result<(), sqlx::Error> {
    let Event::RetentionApplied {
        now,
        keys_before_hour,
        files_ending_by,
    } = event
    else {
        return Ok(());
    };
    let now = Value::from(*now);
    let hour = Value::from(*keys_before_hour);
    conn.execute(
        "DELETE FROM codes WHERE expires_at <= $1",
        std::slice::from_ref(&now),
    )
    .await?;
    conn.execute(
        "DELETE FROM test_results WHERE expires_at <= $1",
        std::slice::from_ref(&now),
    )
    .await?;
    conn.execute(
        "DELETE FROM claims WHERE expires_at <= $1 OR budget_remaining = 0",
        &[now],
    )
    .await?;
    conn.execute(
        "DELETE FROM keys WHERE hour < $1",
        std::slice::from_ref(&hour),
    )
    .await?;
    conn.execute(
        "DELETE FROM submissions WHERE hour < $1",
        std::slice::from_ref(&hour),
    )
    .await?;
    conn.execute(
        "DELETE FROM tokens WHERE hour < $1",
        std::slice::from_ref(&hour),
    )
    .await?;
    conn.execute("DELETE FROM token_submissions WHERE hour < $1", &[hour])
        .await?;
    conn.execute(
        "DELETE FROM files WHERE end_ts <= $1",
        &[Value::from(*files_ending_by)],
    )
    .await?;
    Ok(())
}
