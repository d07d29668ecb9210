//! The two database backends behind one small surface: run SQL with typed parameters, read
//! typed columns. Store logic is written once against it.
//!
//! SQL is written in PostgreSQL's `$1` style; for SQLite it is rewritten to `?1`, which SQLite
//! reads as the same numbered parameter. Where the dialects differ, [`Dialect`] says how.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, PgPool, Postgres, Row as _, Sqlite, SqlitePool};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Starts a writing transaction that excludes every other writer, in this process or
    /// another, until it ends: the log's order is then the commit order, and what a batch read
    /// cannot change before it commits.
    fn begin(self) -> &'static str {
        match self {
            // Take the write lock up front, so two processes never deadlock upgrading a read.
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN; SELECT pg_advisory_xact_lock(7270010002)",
        }
    }
}

/// A query parameter.
#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    /// A nullable bytes column; typed so PostgreSQL accepts a NULL.
    OptBytes(Option<Vec<u8>>),
    OptInt(Option<i64>),
    OptText(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<Option<u64>> for Value {
    fn from(v: Option<u64>) -> Self {
        Self::OptInt(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl<const N: usize> From<[u8; N]> for Value {
    fn from(v: [u8; N]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl<const N: usize> From<Option<[u8; N]>> for Value {
    fn from(v: Option<[u8; N]>) -> Self {
        Self::OptBytes(v.map(|b| b.to_vec()))
    }
}

/// A result row of either backend.
pub enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    pub fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        match self {
            Self::Sqlite(row) => row.try_get(index),
            Self::Postgres(row) => row.try_get(index),
        }
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Self::Sqlite(row) => row.try_get(index),
            Self::Postgres(row) => row.try_get(index),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        match self {
            Self::Sqlite(row) => row.try_get(index),
            Self::Postgres(row) => row.try_get(index),
        }
    }

    pub fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, sqlx::Error> {
        match self {
            Self::Sqlite(row) => row.try_get(index),
            Self::Postgres(row) => row.try_get(index),
        }
    }

    /// A fixed-size bytes column; a wrong length is a decoding error.
    pub fn array<const N: usize>(&self, index: usize) -> Result<[u8; N], sqlx::Error> {
        self.opt_array(index)?
            .ok_or_else(|| sqlx::Error::Decode(format!("column {index} is NULL").into()))
    }

    pub fn opt_array<const N: usize>(&self, index: usize) -> Result<Option<[u8; N]>, sqlx::Error> {
        self.opt_bytes(index)?
            .map(|bytes| {
                <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
                    sqlx::Error::Decode(
                        format!("column {index} holds {} bytes, not {N}", bytes.len()).into(),
                    )
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbered_parameters_become_anonymous_for_sqlite() {
        assert_eq!(
            super::sqlite_sql("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) -- $x"),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) -- $x"
        );
    }
}

#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One connection taken from the pool.
pub enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

/// `$1, $2, …` → `?, ?, …`. Every statement numbers its parameters in order of appearance,
/// each used once, so anonymous `?` binds the same values; SQLite resolves numbered names one
/// by one, which made large multi-row statements quadratic. Our SQL has no `$` in literals.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut expected = 1u32;
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut number = 0u32;
            while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                number = number * 10 + digit;
                chars.next();
            }
            debug_assert_eq!(number, expected, "parameters must appear in order: {sql}");
            expected += 1;
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Value::Int(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.as_str()),
                Value::Bytes(v) => query.bind(v.as_slice()),
                Value::OptBytes(v) => query.bind(v.as_deref()),
                Value::OptInt(v) => query.bind(*v),
                Value::OptText(v) => query.bind(v.as_deref()),
            };
        }
        query
    }};
}

impl Pool {
    /// `sqlite://PATH` (created if missing; WAL, synchronous=FULL) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?.statement_cache_capacity(2048);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self::Postgres(pool))
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on stable storage before it returns, even on power loss.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Batches of every size have their own statement text; keep them prepared.
                .statement_cache_capacity(2048);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(pool) => Conn::Sqlite(pool.acquire().await?),
            Self::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs statements without parameters, e.g. a schema script.
    pub async fn execute_script(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(conn) => conn.execute(sql).await.map(drop),
            Self::Postgres(conn) => conn.execute(sql).await.map(drop),
        }
    }

    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(conn) => {
                let sql = sqlite_sql(sql);
                let query = bind_all!(sqlx::query(&sql), params);
                Ok(query.execute(&mut **conn).await?.rows_affected())
            }
            Self::Postgres(conn) => {
                let query = bind_all!(sqlx::query(sql), params);
                Ok(query.execute(&mut **conn).await?.rows_affected())
            }
        }
    }

    /// Runs `COPY … FROM STDIN` (PostgreSQL) with `data` in COPY's text format; returns the
    /// rows copied.
    pub async fn copy_in(&mut self, sql: &str, data: Vec<u8>) -> Result<u64, sqlx::Error> {
        match self {
            Self::Sqlite(_) => Err(sqlx::Error::Protocol(
                "COPY is PostgreSQL's; SQLite writes rows with INSERT".into(),
            )),
            Self::Postgres(conn) => {
                let mut copy = conn.copy_in_raw(sql).await?;
                if let Err(e) = copy.send(data).await {
                    copy.abort("sending the rows failed").await.ok();
                    return Err(e);
                }
                copy.finish().await
            }
        }
    }

    pub async fn fetch_all(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>, sqlx::Error> {
        match self {
            Self::Sqlite(conn) => {
                let sql = sqlite_sql(sql);
                let query = bind_all!(sqlx::query(&sql), params);
                Ok(query
                    .fetch_all(&mut **conn)
                    .await?
                    .into_iter()
                    .map(Row::Sqlite)
                    .collect())
            }
            Self::Postgres(conn) => {
                let query = bind_all!(sqlx::query(sql), params);
                Ok(query
                    .fetch_all(&mut **conn)
                    .await?
                    .into_iter()
                    .map(Row::Postgres)
                    .collect())
            }
        }
    }

    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch_all(sql, params).await?.into_iter().next())
    }

    pub async fn begin(&mut self) -> Result<(), sqlx::Error> {
        let begin = self.dialect().begin();
        self.execute_script(begin).await
    }

    pub async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.execute_script("COMMIT").await
    }

    /// Closes the connection instead of returning it to the pool: after a failure it may still
    /// be inside a transaction (and, on PostgreSQL, hold the writers' lock).
    pub async fn close(self) {
        let _ = match self {
            Self::Sqlite(conn) => conn.close().await,
            Self::Postgres(conn) => conn.close().await,
        };
    }

    /// Best effort: a failed rollback leaves the connection to be discarded by the caller.
    pub async fn rollback(&mut self) -> Result<(), sqlx::Error> {
        self.execute_script("ROLLBACK").await
    }
}
