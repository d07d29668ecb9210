//! Schema migrations, one list per backend, kept in step: migration N has the same meaning on
//! both. Applied in order inside a transaction; `schema_version` records the last one.

use crate::db::{Conn, Dialect, Value};

const SQLITE: &[&str] = &[
    r"
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload TEXT NOT NULL
);
CREATE TABLE providers (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    suspended INTEGER NOT NULL
);
CREATE TABLE codes (
    code_hash BLOB PRIMARY KEY,
    provider BLOB NOT NULL,
    format TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    redeemed INTEGER NOT NULL
);
CREATE TABLE claims (
    id BLOB PRIMARY KEY,
    provider BLOB NOT NULL,
    region TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    budget_remaining INTEGER NOT NULL,
    token_hash BLOB UNIQUE,
    app_public_key BLOB UNIQUE,
    server_public_key BLOB UNIQUE
);
CREATE TABLE submissions (
    id BLOB PRIMARY KEY,
    claim BLOB NOT NULL,
    provider BLOB NOT NULL,
    region TEXT NOT NULL,
    hour INTEGER NOT NULL,
    inserted INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    dropped INTEGER NOT NULL
);
CREATE TABLE keys (
    key_data BLOB PRIMARY KEY,
    rolling_start INTEGER NOT NULL,
    rolling_period INTEGER NOT NULL,
    transmission_risk INTEGER NOT NULL,
    submission BLOB NOT NULL
);
CREATE INDEX keys_by_submission ON keys (submission);
CREATE INDEX submissions_by_hour ON submissions (hour);
",
    r"
ALTER TABLE keys ADD COLUMN region TEXT NOT NULL DEFAULT '';
ALTER TABLE keys ADD COLUMN hour INTEGER NOT NULL DEFAULT 0;
UPDATE keys SET
    region = (SELECT region FROM submissions WHERE submissions.id = keys.submission),
    hour = (SELECT hour FROM submissions WHERE submissions.id = keys.submission);
CREATE INDEX keys_by_region_hour ON keys (region, hour);
ALTER TABLE events ADD COLUMN key_hour INTEGER;
UPDATE events SET key_hour = json_extract(payload, '$.hour')
    WHERE json_extract(payload, '$.type') = 'keys_submitted';
CREATE INDEX events_by_key_hour ON events (key_hour) WHERE key_hour IS NOT NULL;
CREATE TABLE cursors (
    region TEXT NOT NULL,
    stream TEXT NOT NULL,
    next_start INTEGER NOT NULL,
    held_from INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chain_hash BLOB NOT NULL,
    PRIMARY KEY (region, stream)
);
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    stream TEXT NOT NULL,
    start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX files_by_stream ON files (region, stream, end_ts);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
",
    r"
ALTER TABLE providers ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE submissions ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN withdrawn INTEGER;
CREATE INDEX keys_withdrawn ON keys (region, withdrawn) WHERE withdrawn IS NOT NULL;
ALTER TABLE cursors ADD COLUMN revised_through INTEGER NOT NULL DEFAULT 0;
CREATE INDEX submissions_by_provider ON submissions (provider, hour);
CREATE INDEX codes_by_provider ON codes (provider);
CREATE TABLE admin_tokens (
    id BLOB PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    label TEXT NOT NULL,
    revoked INTEGER NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
ALTER TABLE events ADD COLUMN kind TEXT;
CREATE INDEX events_by_kind ON events (kind, seq) WHERE kind IS NOT NULL;
",
    // The keys' primary key becomes a unique index, which a rebuild drops and builds again
    // by sorting, as it drops PostgreSQL's constraint: millions of random inserts into a
    // B-tree are what made rebuilding slow.
    r"
CREATE TABLE keys_unindexed (
    key_data BLOB NOT NULL,
    rolling_start INTEGER NOT NULL,
    rolling_period INTEGER NOT NULL,
    transmission_risk INTEGER NOT NULL,
    submission BLOB NOT NULL,
    region TEXT NOT NULL DEFAULT '',
    hour INTEGER NOT NULL DEFAULT 0,
    withdrawn INTEGER
);
INSERT INTO keys_unindexed
    (key_data, rolling_start, rolling_period, transmission_risk, submission, region, hour, withdrawn)
    SELECT key_data, rolling_start, rolling_period, transmission_risk, submission, region, hour, withdrawn
    FROM keys ORDER BY key_data;
DROP TABLE keys;
ALTER TABLE keys_unindexed RENAME TO keys;
CREATE UNIQUE INDEX keys_primary ON keys (key_data);
CREATE INDEX keys_by_submission ON keys (submission);
CREATE INDEX keys_by_region_hour ON keys (region, hour);
CREATE INDEX keys_withdrawn ON keys (region, withdrawn) WHERE withdrawn IS NOT NULL;
",
    KEYS_BY_SUBMISSION_DROPPED,
    // Encounter tokens: TAN nonces as claims, token uploads, token hashes, research counts.
    r"
ALTER TABLE claims ADD COLUMN nonce_hash BLOB;
CREATE UNIQUE INDEX claims_by_nonce ON claims (nonce_hash);
CREATE TABLE token_submissions (
    id BLOB PRIMARY KEY,
    claim BLOB,
    provider BLOB NOT NULL,
    hour INTEGER NOT NULL,
    level INTEGER NOT NULL,
    inserted INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    withdrawn INTEGER NOT NULL
);
CREATE INDEX token_submissions_by_provider ON token_submissions (provider, hour);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    submission BLOB NOT NULL,
    area TEXT NOT NULL,
    day INTEGER NOT NULL,
    level INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    withdrawn INTEGER,
    proved INTEGER NOT NULL,
    researched INTEGER NOT NULL
);
CREATE INDEX tokens_by_area_hour ON tokens (area, hour);
CREATE INDEX tokens_by_submission ON tokens (submission);
CREATE INDEX tokens_withdrawn ON tokens (area, withdrawn) WHERE withdrawn IS NOT NULL;
CREATE TABLE research (
    day INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    attenuation INTEGER NOT NULL,
    level INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, duration, attenuation, level)
);
",
    // Confidential matching: test results, by the keyed hash of the phone's test id.
    r"
CREATE TABLE test_results (
    test BLOB PRIMARY KEY,
    provider BLOB NOT NULL,
    positive INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL
);
",
];

/// A submission's keys are found through `keys_by_region_hour` (its region and hour are on its
/// row): one 14M-entry index fewer to write and, in a rebuild, to build.
const KEYS_BY_SUBMISSION_DROPPED: &str = "DROP INDEX IF EXISTS keys_by_submission";

const POSTGRES: &[&str] = &[
    r"
CREATE TABLE events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload TEXT NOT NULL
);
CREATE TABLE providers (
    id BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    region TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    suspended BIGINT NOT NULL
);
CREATE TABLE codes (
    code_hash BYTEA PRIMARY KEY,
    provider BYTEA NOT NULL,
    format TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed BIGINT NOT NULL
);
CREATE TABLE claims (
    id BYTEA PRIMARY KEY,
    provider BYTEA NOT NULL,
    region TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    budget_remaining BIGINT NOT NULL,
    token_hash BYTEA UNIQUE,
    app_public_key BYTEA UNIQUE,
    server_public_key BYTEA UNIQUE
);
CREATE TABLE submissions (
    id BYTEA PRIMARY KEY,
    claim BYTEA NOT NULL,
    provider BYTEA NOT NULL,
    region TEXT NOT NULL,
    hour BIGINT NOT NULL,
    inserted BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    dropped BIGINT NOT NULL
);
CREATE TABLE keys (
    key_data BYTEA PRIMARY KEY,
    rolling_start BIGINT NOT NULL,
    rolling_period BIGINT NOT NULL,
    transmission_risk BIGINT NOT NULL,
    submission BYTEA NOT NULL
);
CREATE INDEX keys_by_submission ON keys (submission);
CREATE INDEX submissions_by_hour ON submissions (hour);
",
    r"
ALTER TABLE keys ADD COLUMN region TEXT NOT NULL DEFAULT '';
ALTER TABLE keys ADD COLUMN hour BIGINT NOT NULL DEFAULT 0;
UPDATE keys SET region = s.region, hour = s.hour FROM submissions s WHERE s.id = keys.submission;
CREATE INDEX keys_by_region_hour ON keys (region, hour);
ALTER TABLE events ADD COLUMN key_hour BIGINT;
UPDATE events SET key_hour = (payload::json->>'hour')::bigint
    WHERE payload::json->>'type' = 'keys_submitted';
CREATE INDEX events_by_key_hour ON events (key_hour) WHERE key_hour IS NOT NULL;
CREATE TABLE cursors (
    region TEXT NOT NULL,
    stream TEXT NOT NULL,
    next_start BIGINT NOT NULL,
    held_from BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    chain_hash BYTEA NOT NULL,
    PRIMARY KEY (region, stream)
);
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    stream TEXT NOT NULL,
    start_ts BIGINT NOT NULL,
    end_ts BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sha256 BYTEA NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX files_by_stream ON files (region, stream, end_ts);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
",
    r"
ALTER TABLE providers ADD COLUMN revoked BIGINT NOT NULL DEFAULT 0;
ALTER TABLE submissions ADD COLUMN withdrawn BIGINT NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN withdrawn BIGINT;
CREATE INDEX keys_withdrawn ON keys (region, withdrawn) WHERE withdrawn IS NOT NULL;
ALTER TABLE cursors ADD COLUMN revised_through BIGINT NOT NULL DEFAULT 0;
CREATE INDEX submissions_by_provider ON submissions (provider, hour);
CREATE INDEX codes_by_provider ON codes (provider);
CREATE TABLE admin_tokens (
    id BYTEA PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    label TEXT NOT NULL,
    revoked BIGINT NOT NULL
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
ALTER TABLE events ADD COLUMN kind TEXT;
CREATE INDEX events_by_kind ON events (kind, seq) WHERE kind IS NOT NULL;
",
    // Migration 4 is SQLite's alone: PostgreSQL's rebuild drops the primary key constraint.
    "SELECT 1",
    KEYS_BY_SUBMISSION_DROPPED,
    // Encounter tokens: TAN nonces as claims, token uploads, token hashes, research counts.
    r"
ALTER TABLE claims ADD COLUMN nonce_hash BYTEA;
CREATE UNIQUE INDEX claims_by_nonce ON claims (nonce_hash);
CREATE TABLE token_submissions (
    id BYTEA PRIMARY KEY,
    claim BYTEA,
    provider BYTEA NOT NULL,
    hour BIGINT NOT NULL,
    level BIGINT NOT NULL,
    inserted BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    withdrawn BIGINT NOT NULL
);
CREATE INDEX token_submissions_by_provider ON token_submissions (provider, hour);
CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY,
    submission BYTEA NOT NULL,
    area TEXT NOT NULL,
    day BIGINT NOT NULL,
    level BIGINT NOT NULL,
    hour BIGINT NOT NULL,
    withdrawn BIGINT,
    proved BIGINT NOT NULL,
    researched BIGINT NOT NULL
);
CREATE INDEX tokens_by_area_hour ON tokens (area, hour);
CREATE INDEX tokens_by_submission ON tokens (submission);
CREATE INDEX tokens_withdrawn ON tokens (area, withdrawn) WHERE withdrawn IS NOT NULL;
CREATE TABLE research (
    day BIGINT NOT NULL,
    duration BIGINT NOT NULL,
    attenuation BIGINT NOT NULL,
    level BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (day, duration, attenuation, level)
);
",
    // Confidential matching: test results, by the keyed hash of the phone's test id.
    r"
CREATE TABLE test_results (
    test BYTEA PRIMARY KEY,
    provider BYTEA NOT NULL,
    positive BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BIGINT NOT NULL
);
",
];

/// Tables rebuilt from the log, children first so deletion order is safe.
pub const PROJECTION_TABLES: [&str; 13] = [
    "test_results",
    "tokens",
    "token_submissions",
    "research",
    "keys",
    "submissions",
    "claims",
    "codes",
    "providers",
    "cursors",
    "files",
    "admin_tokens",
    "counters",
];

/// Brings the schema up to date; safe to run on every start and from several processes.
pub async fn migrate(conn: &mut Conn) -> Result<(), sqlx::Error> {
    let migrations = match conn.dialect() {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    conn.begin().await?;
    let result = async {
        if conn.dialect() == Dialect::Postgres {
            // Serialises concurrent first starts of several instances.
            conn.execute_script("SELECT pg_advisory_xact_lock(7270010001)")
                .await?;
        }
        conn.execute_script("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await?;
        let current = match conn
            .fetch_optional("SELECT version FROM schema_version", &[])
            .await?
        {
            Some(row) => row.int(0)?,
            None => {
                conn.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        for (index, script) in migrations.iter().enumerate().skip(current as usize) {
            conn.execute_script(script).await?;
            conn.execute(
                "UPDATE schema_version SET version = $1",
                &[Value::from(index as u64 + 1)],
            )
            .await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    match result {
        Ok(()) => conn.commit().await,
        Err(e) => {
            conn.rollback().await.ok();
            Err(e)
        }
    }
}
