//! Durable storage: the event log and its projections, on SQLite (embedded default) or
//! PostgreSQL (scale-out), behind one [`Store`].
//!
//! Every change is a `core` event appended to the `events` table, with the projections updated
//! in the same transaction by the single [`writer`]. Reads go straight to the projections.
//! `rebuild` replays the log into empty projections; `check` compares a replay with them.
//! `export_log` and [`Import`] move the log itself between stores, verbatim.

mod db;
mod overlay;
mod projection;
mod schema;
pub mod testing;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confidant_core::corrections::{Actor, Command, Outcome};
use confidant_core::encounter::{Level, ResearchCell, TokenHash, UploadedToken};
use confidant_core::event::NonceClaim;
use confidant_core::logfile::LogRecord;
use confidant_core::rules::TokenOutcome;
use confidant_core::state::{KeyRecord, StoredKey, TestResult, TokenRecord, TokenSubmission};
use confidant_core::{
    AdminToken, AdminTokenId, Claim, ClaimId, CodeFormat, CodePolicy, Credential, Cursor, Digest,
    DomainError, Event, EventDecodeError, FileRecord, Key32, Provider, ProviderId, Region, State,
    Stream, Submission, SubmissionOutcome, TrackingId, UnixSeconds,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use db::Dialect;
use db::{Conn, Pool};
use projection::{
    ADMIN_TOKEN_COLUMNS, CLAIM_COLUMNS, CURSOR_COLUMNS, FILE_COLUMNS, KEY_COLUMNS,
    PROVIDER_COLUMNS, RESEARCH_COLUMNS, SUBMISSION_COLUMNS, TEST_RESULT_COLUMNS, TOKEN_COLUMNS,
    TOKEN_SUBMISSION_COLUMNS,
};
pub use writer::{ClaimLookup, RetentionReport, Written};

/// A provider's codes and reports still held (within the retention period).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderActivity {
    /// Codes not yet expired, redeemed or not.
    pub codes_issued: u64,
    pub codes_redeemed: u64,
    pub submissions: u64,
    pub submissions_withdrawn: u64,
    pub keys_submitted: u64,
    pub keys_withdrawn: u64,
}
use writer::{Job, RebuildCounters, Write};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The database could not be reached or refused the transaction; nothing was stored.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("event #{seq} in the log cannot be read: {source}")]
    CorruptLog { seq: i64, source: EventDecodeError },
    #[error("a provider with this id or token already exists")]
    Conflict,
    #[error("the store is shutting down")]
    Closed,
    /// An import goes into a fresh store only.
    #[error(
        "the store is not empty (the {table} table has rows); import into a fresh data directory or database"
    )]
    NotEmpty { table: &'static str },
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Unavailable(error.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Requests committed together at most; 1 disables group commit.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_batch: 256 }
    }
}

/// A handle to the store; clones share the pool and the writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The result of comparing the live projections with a replay of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub events: u64,
    /// Per table: (name, rows in the projection, rows in the replay, rows that differ).
    pub tables: Vec<(&'static str, usize, usize, usize)>,
    /// [`State::digest`] of the live projections and of the replay.
    pub live_digest: Digest,
    pub replayed_digest: Digest,
}

impl CheckReport {
    pub fn consistent(&self) -> bool {
        self.live_digest == self.replayed_digest
            && self
                .tables
                .iter()
                .all(|(_, live, replayed, differ)| live == replayed && *differ == 0)
    }
}

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Events replayed so far.
    pub replayed: u64,
    /// Events in the log (an upper bound when retention purged some: the span of sequence
    /// numbers, which costs nothing to read).
    pub total: u64,
}

/// An import in progress: one transaction that holds the writers' lock, started on an empty
/// store. Nothing is visible, and a failure or [`Import::abort`] leaves the store empty, until
/// [`Import::commit`].
pub struct Import {
    conn: Option<Conn>,
    events: u64,
}

/// Rows per `INSERT` of an import; payloads are verbatim JSON.
const IMPORT_ROWS: usize = 2000;

impl Import {
    /// Appends records to the log verbatim, in order. Projections are not touched: rebuild
    /// after the commit. On an error the import is rolled back.
    pub async fn append(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        let conn = self.conn.as_mut().ok_or(StoreError::Closed)?;
        let mut result = Ok(());
        for chunk in records.chunks(IMPORT_ROWS) {
            let params: Vec<db::Value> = chunk
                .iter()
                .flat_map(|r| overlay::event_row(r.payload.clone(), &r.event))
                .collect();
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO events (payload, key_hour, kind) VALUES {}",
                rows.join(", ")
            );
            if let Err(e) = conn.execute(&sql, &params).await {
                result = Err(e.into());
                break;
            }
        }
        match result {
            Ok(()) => {
                self.events += records.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Events appended so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Commits the import; returns the number of events.
    pub async fn commit(mut self) -> Result<u64, StoreError> {
        let mut conn = self.conn.take().ok_or(StoreError::Closed)?;
        match conn.commit().await {
            Ok(()) => Ok(self.events),
            Err(e) => {
                conn.close().await;
                Err(e.into())
            }
        }
    }

    /// Rolls the import back: the store stays empty.
    pub async fn abort(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.rollback().await.ok();
            conn.close().await;
        }
    }
}

impl Drop for Import {
    fn drop(&mut self) {
        // Dropped mid-import: roll back rather than hand a connection inside a transaction
        // (and, on PostgreSQL, holding the writers' lock) back to the pool.
        if let Some(mut conn) = self.conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                conn.rollback().await.ok();
                conn.close().await;
            });
        }
    }
}

pub(crate) async fn read_events(
    conn: &mut Conn,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, Event)>, StoreError> {
    let rows = conn
        .fetch_all(
            "SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[after.into(), limit.into()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let seq = row.int(0)?;
            let event = Event::decode(&row.text(1)?)
                .map_err(|source| StoreError::CorruptLog { seq, source })?;
            Ok((seq, event))
        })
        .collect()
}

async fn read_records(
    conn: &mut Conn,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, LogRecord)>, StoreError> {
    let rows = conn
        .fetch_all(
            "SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[after.into(), limit.into()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let seq = row.int(0)?;
            let payload = row.text(1)?;
            let event =
                Event::decode(&payload).map_err(|source| StoreError::CorruptLog { seq, source })?;
            Ok((seq, LogRecord { payload, event }))
        })
        .collect()
}

fn diff<K: Ord, V: PartialEq>(
    name: &'static str,
    live: &std::collections::BTreeMap<K, V>,
    replayed: &std::collections::BTreeMap<K, V>,
) -> (&'static str, usize, usize, usize) {
    let differ = live
        .iter()
        .filter(|(k, v)| replayed.get(k) != Some(v))
        .count()
        + replayed.keys().filter(|k| !live.contains_key(k)).count();
    (name, live.len(), replayed.len(), differ)
}

impl Store {
    /// Opens (and creates or migrates) the store at `url`: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool = Pool::connect(url).await?;
        schema::migrate(&mut pool.acquire().await?).await?;
        let (sender, receiver) = mpsc::channel(4096);
        let task = tokio::spawn(writer::run(
            pool.clone(),
            receiver,
            options.max_batch.max(1),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                writer: Mutex::new(Some(sender)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.pool.dialect()
    }

    /// Stops taking writes, lets queued ones commit, and closes the database.
    pub async fn close(&self) {
        self.inner.writer.lock().expect("writer lock").take();
        let task = self.inner.task.lock().expect("task lock").take();
        if let Some(task) = task {
            task.await.ok();
        }
        self.inner.pool.close().await;
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let sender = self
            .inner
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read(&self) -> Result<Conn, StoreError> {
        Ok(self.inner.pool.acquire().await?)
    }

    pub async fn register_provider(
        &self,
        provider: ProviderId,
        name: String,
        region: Region,
        token_hash: Digest,
    ) -> Result<(), StoreError> {
        self.write(Write::RegisterProvider {
            provider,
            name,
            region,
            token_hash,
        })
        .await
        .map(drop)
    }

    /// Suspends or reinstates; `Ok(false)` when nothing changed.
    pub async fn set_suspended(
        &self,
        provider: ProviderId,
        suspended: bool,
    ) -> Result<bool, StoreError> {
        match self
            .write(Write::SetSuspended {
                provider,
                suspended,
            })
            .await?
        {
            Written::SuspensionChanged(changed) => Ok(changed),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Issues a code for the provider holding `token_hash`; returns the provider, its region
    /// and the expiry.
    pub async fn issue_code(
        &self,
        token_hash: Digest,
        format: CodeFormat,
        ttl_seconds: Option<u64>,
        policy: CodePolicy,
        code_hash: Digest,
        now: UnixSeconds,
    ) -> Result<(ProviderId, Region, UnixSeconds), StoreError> {
        match self
            .write(Write::IssueCode {
                token_hash,
                format,
                ttl_seconds,
                policy,
                code_hash,
                now,
            })
            .await?
        {
            Written::CodeIssued {
                provider,
                region,
                expires_at,
            } => Ok((provider, region, expires_at)),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Redeems a code; returns the claim's expiry and key budget.
    pub async fn redeem_code(
        &self,
        code_hash: Digest,
        claim: ClaimId,
        credential: Credential,
        now: UnixSeconds,
    ) -> Result<(UnixSeconds, u32), StoreError> {
        match self
            .write(Write::Redeem {
                code_hash,
                claim,
                credential,
                now,
            })
            .await?
        {
            Written::Redeemed {
                expires_at,
                key_budget,
                ..
            } => Ok((expires_at, key_budget)),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    pub async fn submit(
        &self,
        lookup: ClaimLookup,
        keys: Vec<StoredKey>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    ) -> Result<SubmissionOutcome, StoreError> {
        match self
            .write(Write::Submit {
                lookup,
                keys,
                tracking_id,
                now,
            })
            .await?
        {
            Written::Submitted(outcome) => Ok(outcome),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Exchanges a TAN for `nonces`; returns their expiry and how many tokens each may upload.
    pub async fn redeem_tan(
        &self,
        code_hash: Digest,
        nonces: Vec<NonceClaim>,
        now: UnixSeconds,
    ) -> Result<(UnixSeconds, u32), StoreError> {
        match self
            .write(Write::RedeemTan {
                code_hash,
                nonces,
                now,
            })
            .await?
        {
            Written::TanRedeemed {
                expires_at,
                token_budget,
            } => Ok((expires_at, token_budget)),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// A level-0 token upload with the nonce whose keyed hash is `nonce_hash`.
    pub async fn submit_tokens(
        &self,
        nonce_hash: Digest,
        tokens: Vec<UploadedToken>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    ) -> Result<TokenOutcome, StoreError> {
        match self
            .write(Write::SubmitTokens {
                nonce_hash,
                tokens,
                tracking_id,
                now,
            })
            .await?
        {
            Written::TokensSubmitted(outcome) => Ok(outcome),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// A chained token upload proven by the published hash `proof` (H of the preimage the
    /// phone revealed), at most at `max_level`.
    pub async fn submit_chained(
        &self,
        proof: TokenHash,
        max_level: Level,
        tokens: Vec<UploadedToken>,
        tracking_id: TrackingId,
        now: UnixSeconds,
    ) -> Result<TokenOutcome, StoreError> {
        match self
            .write(Write::SubmitChained {
                proof,
                max_level,
                tokens,
                tracking_id,
                now,
            })
            .await?
        {
            Written::TokensSubmitted(outcome) => Ok(outcome),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Records research data for proven encounters: (H(preimage), duration bucket code,
    /// attenuation bucket code) each. Returns the records stored.
    pub async fn contribute_research(
        &self,
        contributions: Vec<(TokenHash, u8, u8)>,
    ) -> Result<u32, StoreError> {
        match self.write(Write::Research { contributions }).await? {
            Written::Researched(count) => Ok(count),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Token hashes of `area` submitted in the hours `[from_hour, to_hour)` and not withdrawn,
    /// in hash order.
    pub async fn tokens_submitted(
        &self,
        area: &Region,
        from_hour: u64,
        to_hour: u64,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE area = $1 AND hour >= $2 AND hour < $3 \
             AND withdrawn IS NULL ORDER BY hash"
        );
        conn.fetch_all(
            &sql,
            &[area.as_str().into(), from_hour.into(), to_hour.into()],
        )
        .await?
        .iter()
        .map(|row| Ok(projection::token_from_row(row)?))
        .collect()
    }

    /// Token hashes of `area` withdrawn by the withdrawals `(after, through]`.
    pub async fn tokens_withdrawn(
        &self,
        area: &Region,
        after: u64,
        through: u64,
    ) -> Result<Vec<(TokenHash, TokenRecord)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE area = $1 AND withdrawn > $2 \
             AND withdrawn <= $3 ORDER BY hash"
        );
        conn.fetch_all(&sql, &[area.as_str().into(), after.into(), through.into()])
            .await?
            .iter()
            .map(|row| Ok(projection::token_from_row(row)?))
            .collect()
    }

    /// Areas with stored tokens or a token publication.
    pub async fn token_areas(&self) -> Result<Vec<Region>, StoreError> {
        let mut conn = self.read().await?;
        let rows = conn
            .fetch_all(
                "SELECT DISTINCT area FROM tokens \
                 UNION SELECT region FROM cursors WHERE stream = 'tokens' ORDER BY 1",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Region::try_from(row.text(0)?)
                    .map_err(|e| StoreError::Unavailable(format!("bad area in store: {e}")))
            })
            .collect()
    }

    /// The earliest submission hour of a stored token of `area`.
    pub async fn first_token_hour(&self, area: &Region) -> Result<Option<u64>, StoreError> {
        let mut conn = self.read().await?;
        let row = conn
            .fetch_optional(
                "SELECT MIN(hour) FROM tokens WHERE area = $1",
                &[area.as_str().into()],
            )
            .await?;
        Ok(match row {
            Some(row) => row.opt_int(0)?.map(|h| h as u64),
            None => None,
        })
    }

    /// A token upload by tracking ID.
    pub async fn token_submission(
        &self,
        id: TrackingId,
    ) -> Result<Option<TokenSubmission>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {TOKEN_SUBMISSION_COLUMNS} FROM token_submissions WHERE id = $1");
        Ok(match conn.fetch_optional(&sql, &[id.0.into()]).await? {
            Some(row) => Some(projection::token_submission_from_row(&row, 0)?),
            None => None,
        })
    }

    /// The areas a token upload's hashes are published in.
    pub async fn token_submission_areas(&self, id: TrackingId) -> Result<Vec<Region>, StoreError> {
        let mut conn = self.read().await?;
        conn.fetch_all(
            "SELECT DISTINCT area FROM tokens WHERE submission = $1 ORDER BY area",
            &[id.0.into()],
        )
        .await?
        .iter()
        .map(|row| {
            Region::try_from(row.text(0)?)
                .map_err(|e| StoreError::Unavailable(format!("bad area in store: {e}")))
        })
        .collect()
    }

    /// A provider (by its API token's keyed hash) posts the result of the test `test` (the
    /// keyed hash of the phone's test id); returns until when it can be polled.
    pub async fn post_result(
        &self,
        token_hash: Digest,
        test: Digest,
        positive: bool,
        now: UnixSeconds,
    ) -> Result<UnixSeconds, StoreError> {
        match self
            .write(Write::PostResult {
                token_hash,
                test,
                positive,
                now,
            })
            .await?
        {
            Written::ResultPosted { expires_at } => Ok(expires_at),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Spends a positive result's one upload to the confidential matcher.
    pub async fn use_result(&self, test: Digest, now: UnixSeconds) -> Result<(), StoreError> {
        match self.write(Write::UseResult { test, now }).await? {
            Written::ResultUsed => Ok(()),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// A test result by the keyed hash of its test id.
    pub async fn test_result(&self, test: Digest) -> Result<Option<TestResult>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {TEST_RESULT_COLUMNS} FROM test_results WHERE test = $1");
        Ok(match conn.fetch_optional(&sql, &[test.0.into()]).await? {
            Some(row) => Some(projection::test_result_from_row(&row)?.1),
            None => None,
        })
    }

    /// The research counts, by cell.
    pub async fn research(&self) -> Result<Vec<(ResearchCell, u64)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {RESEARCH_COLUMNS} FROM research ORDER BY 1, 2, 3, 4");
        conn.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(|row| Ok(projection::research_from_row(row)?))
            .collect()
    }

    /// Empties the projections and replays the whole log into them; returns the event count.
    pub async fn rebuild(&self) -> Result<u64, StoreError> {
        self.rebuild_with_progress(|_| {}).await
    }

    /// [`Store::rebuild`], calling `progress` a few times a second while it runs and once at
    /// the end (then with `replayed == total`).
    pub async fn rebuild_with_progress(
        &self,
        mut progress: impl FnMut(RebuildProgress),
    ) -> Result<u64, StoreError> {
        let counters = Arc::new(RebuildCounters::default());
        let rebuilt = self.write(Write::Rebuild(counters.clone()));
        tokio::pin!(rebuilt);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                written = &mut rebuilt => {
                    let events = match written? {
                        Written::Rebuilt { events } => events,
                        other => unreachable!("unexpected {other:?}"),
                    };
                    progress(RebuildProgress { replayed: events, total: events });
                    return Ok(events);
                }
                _ = tick.tick() => progress(RebuildProgress {
                    replayed: counters.replayed.load(Ordering::Relaxed),
                    total: counters.total.load(Ordering::Relaxed),
                }),
            }
        }
    }

    /// Starts an import into this store, which must be empty: no events and no projection
    /// rows (`NotEmpty` otherwise). Holds the writers' lock until it commits or aborts.
    pub async fn begin_import(&self) -> Result<Import, StoreError> {
        let mut conn = self.read().await?;
        conn.begin().await?;
        let mut tables = vec!["events"];
        tables.extend(schema::PROJECTION_TABLES);
        for table in tables {
            let sql = format!("SELECT 1 FROM {table} LIMIT 1");
            let found = match conn.fetch_optional(&sql, &[]).await {
                Ok(found) => found.is_some(),
                Err(e) => {
                    conn.rollback().await.ok();
                    conn.close().await;
                    return Err(e.into());
                }
            };
            if found {
                conn.rollback().await.ok();
                return Err(StoreError::NotEmpty { table });
            }
        }
        Ok(Import {
            conn: Some(conn),
            events: 0,
        })
    }

    /// Appends `records` to the empty log in one transaction (see [`Store::begin_import`]);
    /// returns the number of events. Rebuild afterwards to fill the projections.
    pub async fn import(&self, records: &[LogRecord]) -> Result<u64, StoreError> {
        let mut import = self.begin_import().await?;
        import.append(records).await?;
        import.commit().await
    }

    /// Runs an operator's correction; the audit entry is recorded with its effects.
    pub async fn correct(
        &self,
        command: Command,
        actor: Actor,
        now: UnixSeconds,
        reason: String,
    ) -> Result<Outcome, StoreError> {
        match self
            .write(Write::Correct {
                command,
                actor,
                now,
                reason,
            })
            .await?
        {
            Written::Corrected(outcome) => Ok(outcome),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// The admin token whose secret hashes to `token_hash`.
    pub async fn admin_token(
        &self,
        token_hash: Digest,
    ) -> Result<Option<(AdminTokenId, AdminToken)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = $1");
        Ok(
            match conn.fetch_optional(&sql, &[token_hash.0.into()]).await? {
                Some(row) => Some(projection::admin_token_from_row(&row)?),
                None => None,
            },
        )
    }

    pub async fn admin_tokens(&self) -> Result<Vec<(AdminTokenId, AdminToken)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY label, id");
        conn.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(|row| Ok(projection::admin_token_from_row(row)?))
            .collect()
    }

    pub async fn provider(&self, id: ProviderId) -> Result<Option<Provider>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT id, {PROVIDER_COLUMNS} FROM providers WHERE id = $1");
        Ok(match conn.fetch_optional(&sql, &[id.0.into()]).await? {
            Some(row) => Some(projection::provider_from_row(&row, 1)?),
            None => None,
        })
    }

    /// What a provider's codes and reports amount to, within the retention period.
    pub async fn provider_activity(&self, id: ProviderId) -> Result<ProviderActivity, StoreError> {
        let mut conn = self.read().await?;
        let count = |row: &Option<db::Row>, column: usize| -> Result<u64, StoreError> {
            Ok(match row {
                Some(row) => row.opt_int(column)?.unwrap_or(0) as u64,
                None => 0,
            })
        };
        let codes = conn
            .fetch_optional(
                "SELECT COUNT(*), COUNT(CASE WHEN redeemed <> 0 THEN 1 END) FROM codes \
                 WHERE provider = $1",
                &[id.0.into()],
            )
            .await?;
        let submissions = conn
            .fetch_optional(
                "SELECT COUNT(*), COUNT(CASE WHEN withdrawn <> 0 THEN 1 END) FROM submissions \
                 WHERE provider = $1",
                &[id.0.into()],
            )
            .await?;
        let keys = conn
            .fetch_optional(
                "SELECT COUNT(*), COUNT(k.withdrawn) FROM submissions s JOIN keys k \
                 ON k.region = s.region AND k.hour = s.hour AND k.submission = s.id \
                 WHERE s.provider = $1",
                &[id.0.into()],
            )
            .await?;
        Ok(ProviderActivity {
            codes_issued: count(&codes, 0)?,
            codes_redeemed: count(&codes, 1)?,
            submissions: count(&submissions, 0)?,
            submissions_withdrawn: count(&submissions, 1)?,
            keys_submitted: count(&keys, 0)?,
            keys_withdrawn: count(&keys, 1)?,
        })
    }

    /// A submission's keys, withdrawn ones included.
    pub async fn submission_keys(&self, id: TrackingId) -> Result<Vec<KeyRecord>, StoreError> {
        let mut conn = self.read().await?;
        // Through keys_by_region_hour: the submission's region and hour narrow it down.
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE (region, hour) = \
             (SELECT region, hour FROM submissions WHERE id = $1) AND submission = $2 \
             ORDER BY key_data"
        );
        conn.fetch_all(&sql, &[id.0.into(), id.0.into()])
            .await?
            .iter()
            .map(|row| Ok(projection::key_record_from_row(row, 0)?))
            .collect()
    }

    /// The serial number of the last withdrawal (0 before the first).
    pub async fn withdrawals(&self) -> Result<u64, StoreError> {
        Ok(projection::withdrawals(&mut self.read().await?).await?)
    }

    /// Keys of `region` withdrawn by the withdrawals `(after, through]`, with their hour.
    pub async fn keys_withdrawn(
        &self,
        region: &Region,
        after: u64,
        through: u64,
    ) -> Result<Vec<(StoredKey, u64)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE region = $1 AND withdrawn > $2 \
             AND withdrawn <= $3 ORDER BY key_data"
        );
        conn.fetch_all(
            &sql,
            &[region.as_str().into(), after.into(), through.into()],
        )
        .await?
        .iter()
        .map(|row| {
            let record = projection::key_record_from_row(row, 0)?;
            Ok((record.key, record.hour))
        })
        .collect()
    }

    /// The audit trail: admin actions after log position `after`, oldest first.
    pub async fn audit(&self, after: i64, limit: u32) -> Result<Vec<(i64, Event)>, StoreError> {
        let mut conn = self.read().await?;
        let rows = conn
            .fetch_all(
                "SELECT seq, payload FROM events WHERE kind = 'admin_action' AND seq > $1 \
                 ORDER BY seq LIMIT $2",
                &[after.into(), limit.into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seq = row.int(0)?;
                let event = Event::decode(&row.text(1)?)
                    .map_err(|source| StoreError::CorruptLog { seq, source })?;
                Ok((seq, event))
            })
            .collect()
    }

    /// [`State::digest`] of the live projections, read a page at a time from one snapshot.
    pub async fn state_digest(&self) -> Result<Digest, StoreError> {
        let mut conn = self.read().await?;
        let begin = match conn.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        conn.execute_script(begin).await?;
        let digest = projection::state_digest(&mut conn).await;
        conn.rollback().await.ok();
        Ok(digest?)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.read().await?;
        conn.fetch_optional("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Records a published window. `Conflict` means another instance published it first.
    pub async fn publish(&self, event: Event) -> Result<(), StoreError> {
        assert!(matches!(event, Event::BatchPublished { .. }));
        self.write(Write::Publish(event)).await.map(drop)
    }

    /// Records a retention run and deletes what it forgets, projections and old key material
    /// in the log alike.
    pub async fn apply_retention(
        &self,
        event: Event,
        purge_key_events_before_hour: u64,
    ) -> Result<RetentionReport, StoreError> {
        assert!(matches!(event, Event::RetentionApplied { .. }));
        match self
            .write(Write::Retention {
                event,
                purge_key_events_before_hour,
            })
            .await?
        {
            Written::Retained(report) => Ok(report),
            other => unreachable!("unexpected {other:?}"),
        }
    }

    /// Keys of `region` submitted in the hours `[from_hour, to_hour)` and not withdrawn, with
    /// their hour, in key_data order.
    pub async fn keys_submitted(
        &self,
        region: &Region,
        from_hour: u64,
        to_hour: u64,
    ) -> Result<Vec<(StoredKey, u64)>, StoreError> {
        let mut conn = self.read().await?;
        let rows = conn
            .fetch_all(
                "SELECT key_data, rolling_start, rolling_period, transmission_risk, hour \
                 FROM keys WHERE region = $1 AND hour >= $2 AND hour < $3 AND withdrawn IS NULL \
                 ORDER BY key_data",
                &[region.as_str().into(), from_hour.into(), to_hour.into()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    StoredKey {
                        key_data: confidant_core::KeyData(row.array(0)?),
                        rolling_start: row.int(1)? as u32,
                        rolling_period: row.int(2)? as u32,
                        transmission_risk: row.int(3)? as u8,
                    },
                    row.int(4)? as u64,
                ))
            })
            .collect()
    }

    /// The earliest submission hour of a stored key of `region`.
    pub async fn first_key_hour(&self, region: &Region) -> Result<Option<u64>, StoreError> {
        let mut conn = self.read().await?;
        let row = conn
            .fetch_optional(
                "SELECT MIN(hour) FROM keys WHERE region = $1",
                &[region.as_str().into()],
            )
            .await?;
        Ok(match row {
            Some(row) => row.opt_int(0)?.map(|h| h as u64),
            None => None,
        })
    }

    /// Regions that have providers or publications.
    pub async fn regions(&self) -> Result<Vec<Region>, StoreError> {
        let mut conn = self.read().await?;
        let rows = conn
            .fetch_all(
                "SELECT region FROM providers \
                 UNION SELECT region FROM cursors WHERE stream <> 'tokens' ORDER BY 1",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Region::try_from(row.text(0)?)
                    .map_err(|e| StoreError::Unavailable(format!("bad region in store: {e}")))
            })
            .collect()
    }

    pub async fn cursor(
        &self,
        region: &Region,
        stream: Stream,
    ) -> Result<Option<Cursor>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {CURSOR_COLUMNS} FROM cursors WHERE region = $1 AND stream = $2");
        Ok(
            match conn
                .fetch_optional(&sql, &[region.as_str().into(), stream.name().into()])
                .await?
            {
                Some(row) => Some(projection::cursor_from_row(&row)?.1),
                None => None,
            },
        )
    }

    /// Live files of a stream, oldest first (by window, then sequence, then path).
    pub async fn files(
        &self,
        region: &Region,
        stream: Stream,
    ) -> Result<Vec<(String, FileRecord)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE region = $1 AND stream = $2 \
             ORDER BY start_ts, end_ts, seq, path"
        );
        conn.fetch_all(&sql, &[region.as_str().into(), stream.name().into()])
            .await?
            .iter()
            .map(|row| Ok(projection::file_from_row(row)?))
            .collect()
    }

    /// Takes or renews the lease `name` for `holder` until `now + ttl`; false when another
    /// holder's lease is still running. Leader election for the publisher and the janitor.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixSeconds,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.read().await?;
        let taken = conn
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
                &[name.into(), holder.into(), (now + ttl).into(), now.into()],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Gives the lease up early (on shutdown), if `holder` still has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut conn = self.read().await?;
        conn.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[name.into(), holder.into()],
        )
        .await?;
        Ok(())
    }

    pub async fn providers(&self) -> Result<Vec<(ProviderId, Provider)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT id, {PROVIDER_COLUMNS} FROM providers ORDER BY name, id");
        conn.fetch_all(&sql, &[])
            .await?
            .iter()
            .map(|row| {
                Ok((
                    ProviderId(row.array(0)?),
                    projection::provider_from_row(row, 1)?,
                ))
            })
            .collect()
    }

    /// The COVID Shield claim that owns a server key, for decrypting its uploads.
    pub async fn claim_by_server_key(
        &self,
        server_public_key: Key32,
    ) -> Result<Option<(ClaimId, Claim)>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT id, {CLAIM_COLUMNS} FROM claims WHERE server_public_key = $1");
        Ok(
            match conn
                .fetch_optional(&sql, &[server_public_key.0.into()])
                .await?
            {
                Some(row) => Some((ClaimId(row.array(0)?), projection::claim_from_row(&row, 1)?)),
                None => None,
            },
        )
    }

    /// Whether some claim already registered this COVID Shield app key.
    pub async fn app_key_registered(&self, app_public_key: Key32) -> Result<bool, StoreError> {
        let mut conn = self.read().await?;
        Ok(conn
            .fetch_optional(
                "SELECT 1 FROM claims WHERE app_public_key = $1",
                &[app_public_key.0.into()],
            )
            .await?
            .is_some())
    }

    pub async fn submission(&self, id: TrackingId) -> Result<Option<Submission>, StoreError> {
        let mut conn = self.read().await?;
        let sql = format!("SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE id = $1");
        Ok(match conn.fetch_optional(&sql, &[id.0.into()]).await? {
            Some(row) => Some(projection::submission_from_row(&row, 0)?),
            None => None,
        })
    }

    /// Up to `limit` events after log position `after_seq`, oldest first, with their
    /// positions; payloads exactly as stored. Page with the last position returned.
    pub async fn events_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, LogRecord)>, StoreError> {
        read_records(&mut self.read().await?, after_seq, limit).await
    }

    /// Streams the whole log, read from one snapshot, to `sink` a page at a time (each event
    /// decoded, so a log this build cannot read is refused here rather than at import).
    /// Returns the number of events, or the sink's error (which stops the export).
    pub async fn export_log<E>(
        &self,
        page: u32,
        mut sink: impl FnMut(Vec<(i64, LogRecord)>) -> Result<(), E>,
    ) -> Result<Result<u64, E>, StoreError> {
        let mut conn = self.read().await?;
        let begin = match conn.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        conn.execute_script(begin).await?;
        let result = async {
            let mut after = 0;
            let mut events = 0u64;
            loop {
                let records = read_records(&mut conn, after, page.max(1)).await?;
                let Some((last, _)) = records.last() else {
                    return Ok(Ok(events));
                };
                after = *last;
                events += records.len() as u64;
                if let Err(e) = sink(records) {
                    return Ok(Err(e));
                }
            }
        }
        .await;
        conn.rollback().await.ok();
        result
    }

    /// Every event in log order.
    pub async fn events(&self) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.read().await?;
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = read_events(&mut conn, after, 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            events.extend(page.into_iter().map(|(_, e)| e));
        }
        Ok(events)
    }

    /// The live projections, as a `State`.
    pub async fn projected_state(&self) -> Result<State, StoreError> {
        Ok(projection::load_state(&mut self.read().await?).await?)
    }

    /// Replays the log into a scratch state and compares it with the live projections, both
    /// read from one snapshot.
    pub async fn check(&self) -> Result<CheckReport, StoreError> {
        let mut conn = self.read().await?;
        let begin = match conn.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        conn.execute_script(begin).await?;
        let result = async {
            let live = projection::load_state(&mut conn).await?;
            let mut replayed = State::default();
            let mut events = 0u64;
            let mut after = 0;
            loop {
                let page = read_events(&mut conn, after, 1000).await?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (_, event) in &page {
                    replayed.apply(event);
                    events += 1;
                }
            }
            Ok::<_, StoreError>(CheckReport {
                events,
                tables: vec![
                    diff("providers", &live.providers, &replayed.providers),
                    diff("codes", &live.codes, &replayed.codes),
                    diff("claims", &live.claims, &replayed.claims),
                    diff("submissions", &live.submissions, &replayed.submissions),
                    diff("keys", &live.keys, &replayed.keys),
                    diff("cursors", &live.cursors, &replayed.cursors),
                    diff("files", &live.files, &replayed.files),
                    diff("admin_tokens", &live.admin_tokens, &replayed.admin_tokens),
                    diff(
                        "token_submissions",
                        &live.token_submissions,
                        &replayed.token_submissions,
                    ),
                    diff("tokens", &live.tokens, &replayed.tokens),
                    diff("research", &live.research, &replayed.research),
                    diff("test_results", &live.test_results, &replayed.test_results),
                    (
                        "counters",
                        1,
                        1,
                        usize::from(live.withdrawals != replayed.withdrawals),
                    ),
                ],
                live_digest: live.digest(),
                replayed_digest: replayed.digest(),
            })
        }
        .await;
        conn.rollback().await.ok();
        result
    }
}
