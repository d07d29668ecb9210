//! Batched, set-based application of events: load the rows a batch touches, fold the batch's
//! events into them with `core`'s `State::apply`, and write back only the rows that changed.
//!
//! This is how projections are written, by the writer and by `rebuild` alike: the database
//! rows are always `apply`'s result, and a batch of any size costs a handful of statements.

use std::collections::{BTreeMap, BTreeSet};

use confidant_core::encounter::{ResearchCell, TokenHash};
use confidant_core::state::KeyRecord;
use confidant_core::{
    AdminTokenId, ClaimId, Credential, Digest, Event, Key32, KeyData, ProviderId, Region, State,
    Stream, TrackingId,
};

use crate::db::{Conn, Dialect, Value};
use crate::projection::{
    self, ADMIN_TOKEN_COLUMNS, CLAIM_COLUMNS, CODE_COLUMNS, CURSOR_COLUMNS, KEY_COLUMNS,
    PROVIDER_COLUMNS, RESEARCH_COLUMNS, SUBMISSION_COLUMNS, TEST_RESULT_COLUMNS, TOKEN_COLUMNS,
    TOKEN_SUBMISSION_COLUMNS,
};

/// Parameters per statement, well under SQLite's and PostgreSQL's limits.
const MAX_PARAMS: usize = 30_000;

/// A partial `State` holding the rows a batch reads, and which of them it changed.
#[derive(Default)]
pub struct Overlay {
    pub state: State,
    dirty_providers: BTreeSet<ProviderId>,
    dirty_codes: BTreeSet<Digest>,
    dirty_claims: BTreeSet<ClaimId>,
    dirty_submissions: BTreeSet<TrackingId>,
    dirty_keys: BTreeSet<KeyData>,
    dirty_cursors: BTreeSet<(Region, Stream)>,
    dirty_files: BTreeSet<String>,
    dirty_admin_tokens: BTreeSet<AdminTokenId>,
    dirty_token_submissions: BTreeSet<TrackingId>,
    dirty_tokens: BTreeSet<TokenHash>,
    dirty_research: BTreeSet<ResearchCell>,
    dirty_test_results: BTreeSet<Digest>,
    dirty_withdrawals: bool,
    /// Lookups by secondary keys, kept in step with `state`.
    pub provider_by_token: BTreeMap<Digest, ProviderId>,
    pub claim_by_token: BTreeMap<Digest, ClaimId>,
    pub claim_by_nonce: BTreeMap<Digest, ClaimId>,
    pub claim_by_server_key: BTreeMap<Key32, ClaimId>,
    pub claim_by_app_key: BTreeSet<Key32>,
    /// How key rows are written.
    pub key_writes: KeyWrites,
}

/// How [`Overlay::write_statements`] writes key rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyWrites {
    /// `INSERT … ON CONFLICT (key_data) DO UPDATE`.
    #[default]
    Upsert,
    /// Every key row written is new (a rebuild that only adds keys, with the keys' primary
    /// key dropped): a plain insert, whose row count the caller checks. On SQLite
    /// `INSERT OR IGNORE`, which needs no statement journal; on PostgreSQL `COPY`, which
    /// skips per-row parameter binding altogether.
    Insert(Dialect),
}

/// A statement of a write-back, with its parameters.
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
    /// For a plain insert of new rows ([`KeyWrites::Insert`]): how many rows it must insert.
    /// Fewer means a row was already there.
    pub inserts: Option<u64>,
    /// For PostgreSQL's `COPY … FROM STDIN` in `sql`: the rows in COPY's text format.
    pub copy_rows: Option<Vec<u8>>,
}

impl Statement {
    /// Runs it; returns the rows it wrote.
    pub async fn run(self, conn: &mut Conn) -> Result<u64, sqlx::Error> {
        match self.copy_rows {
            Some(data) => conn.copy_in(&self.sql, data).await,
            None => conn.execute(&self.sql, &self.params).await,
        }
    }
}

/// What to load before deciding or replaying.
#[derive(Default)]
pub struct Wanted {
    pub providers: BTreeSet<ProviderId>,
    pub provider_tokens: BTreeSet<Digest>,
    pub codes: BTreeSet<Digest>,
    pub claims: BTreeSet<ClaimId>,
    pub claim_tokens: BTreeSet<Digest>,
    pub claim_server_keys: BTreeSet<Key32>,
    pub claim_app_keys: BTreeSet<Key32>,
    pub submissions: BTreeSet<TrackingId>,
    pub keys: BTreeSet<KeyData>,
    pub cursors: BTreeSet<(Region, Stream)>,
    pub admin_tokens: BTreeSet<AdminTokenId>,
    pub admin_token_hashes: BTreeSet<Digest>,
    /// Every key of these submissions.
    pub submission_keys: BTreeSet<TrackingId>,
    /// A provider's submissions from an hour on (a retroactive revocation), with their keys.
    pub provider_submissions: Option<(ProviderId, u64)>,
    /// A provider's unredeemed codes.
    pub provider_codes: BTreeSet<ProviderId>,
    /// The withdrawal counter.
    pub withdrawals: bool,
    pub claim_nonces: BTreeSet<Digest>,
    pub token_submissions: BTreeSet<TrackingId>,
    pub tokens: BTreeSet<TokenHash>,
    /// Every token of these token submissions.
    pub submission_tokens: BTreeSet<TrackingId>,
    /// The research counts of these cells.
    pub research: BTreeSet<ResearchCell>,
    /// The research cells these contributions (H(preimage), duration, attenuation) would add
    /// to, found through their tokens (loaded first).
    pub research_of: Vec<(TokenHash, u8, u8)>,
    /// Test results by the keyed hash of their test id (with their providers).
    pub test_results: BTreeSet<Digest>,
}

impl Wanted {
    /// Whether nothing but providers, codes and claims is wanted (the rows
    /// [`Overlay::take_known`] can hand over).
    pub fn only_providers_codes_claims(&self) -> bool {
        let Wanted {
            providers: _,
            provider_tokens,
            codes: _,
            claims: _,
            claim_tokens,
            claim_server_keys,
            claim_app_keys,
            submissions,
            keys,
            cursors,
            admin_tokens,
            admin_token_hashes,
            submission_keys,
            provider_submissions,
            provider_codes,
            withdrawals,
            claim_nonces,
            token_submissions,
            tokens,
            submission_tokens,
            research,
            research_of,
            test_results,
        } = self;
        provider_tokens.is_empty()
            && claim_tokens.is_empty()
            && claim_server_keys.is_empty()
            && claim_app_keys.is_empty()
            && submissions.is_empty()
            && keys.is_empty()
            && cursors.is_empty()
            && admin_tokens.is_empty()
            && admin_token_hashes.is_empty()
            && submission_keys.is_empty()
            && provider_submissions.is_none()
            && provider_codes.is_empty()
            && !withdrawals
            && claim_nonces.is_empty()
            && token_submissions.is_empty()
            && tokens.is_empty()
            && submission_tokens.is_empty()
            && research.is_empty()
            && research_of.is_empty()
            && test_results.is_empty()
    }

    /// The rows replaying `event` reads.
    pub fn for_event(&mut self, event: &Event) {
        match event {
            // Publication rows are overwritten whole; retention runs as SQL of its own.
            Event::ProviderRegistered { .. }
            | Event::CodeIssued { .. }
            | Event::BatchPublished { .. }
            | Event::RetentionApplied { .. } => {}
            Event::ProviderSuspended { provider } | Event::ProviderReinstated { provider } => {
                self.providers.insert(*provider);
            }
            Event::CodeRedeemed { code_hash, .. } => {
                self.codes.insert(*code_hash);
            }
            Event::KeysSubmitted { claim, .. } => {
                self.claims.insert(*claim);
            }
            Event::ProviderRevoked { provider } => {
                self.providers.insert(*provider);
            }
            Event::SubmissionsWithdrawn { submissions, .. } => {
                self.submissions.extend(submissions.iter().copied());
                self.submission_keys.extend(submissions.iter().copied());
                self.token_submissions.extend(submissions.iter().copied());
                self.submission_tokens.extend(submissions.iter().copied());
                self.withdrawals = true;
            }
            // Imported TANs are inserted whole.
            Event::TansImported { .. } => {}
            Event::TanRedeemed { code_hash, .. } => {
                self.codes.insert(*code_hash);
            }
            Event::TokensSubmitted { claim, proof, .. } => {
                self.claims.extend(*claim);
                self.tokens.extend(*proof);
            }
            Event::TokensResearched { hashes, .. } => {
                self.tokens.extend(hashes.iter().copied());
            }
            Event::ResearchRecorded { cells } => {
                self.research.extend(cells.iter().copied());
            }
            // A posted result replaces the row whole.
            Event::TestResultPosted { .. } => {}
            Event::TestResultUsed { test } => {
                self.test_results.insert(*test);
            }
            Event::KeysWithdrawn { keys, .. } => {
                self.keys.extend(keys.iter().copied());
                self.withdrawals = true;
            }
            Event::AdminTokenRevoked { token } => {
                self.admin_tokens.insert(*token);
            }
            Event::AdminAction {
                withdrawal: Some(_),
                ..
            } => self.withdrawals = true,
            // Invalidated codes are deleted whether loaded or not.
            Event::CodesInvalidated { .. }
            | Event::AdminTokenCreated { .. }
            | Event::AdminAction { .. } => {}
        }
    }
}

/// `($1, $2), ($3, $4), …`: `rows` groups of `columns` numbered parameters.
fn placeholders(rows: usize, columns: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows * columns * 8);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=columns {
            let separator = if c == 1 { "" } else { ", " };
            let _ = write!(out, "{separator}${}", r * columns + c);
        }
        out.push(')');
    }
    out
}

/// The largest power of two at or below `n` (at least 1). Statements are built for row and
/// list counts of powers of two only, so that the connections' statement caches hold a dozen
/// shapes per statement instead of one per count: caching a multi-row statement of every
/// count from 1 to 256 grew a busy server by hundreds of MiB.
fn power_of_two_at_most(n: usize) -> usize {
    1 << n.max(1).ilog2()
}

/// `$1, …, $n` for an `IN` list of `values`, padded with repeats of its last value to a power
/// of two (a repeat changes nothing in an `IN` list).
fn in_list(values: &[Value]) -> (String, Vec<Value>) {
    let len = values.len().max(1).next_power_of_two().min(MAX_PARAMS);
    let list: Vec<String> = (1..=len).map(|i| format!("${i}")).collect();
    let mut params = values.to_vec();
    if let Some(last) = values.last() {
        params.resize(len, last.clone());
    }
    (list.join(", "), params)
}

/// `SELECT … WHERE column IN (…)` over `values`, in chunks.
async fn select_in(
    conn: &mut Conn,
    select: &str,
    column: &str,
    values: Vec<Value>,
) -> Result<Vec<crate::db::Row>, sqlx::Error> {
    let mut rows = Vec::new();
    for chunk in values.chunks(MAX_PARAMS) {
        let (list, params) = in_list(chunk);
        let sql = format!("{select} WHERE {column} IN ({list})");
        rows.extend(conn.fetch_all(&sql, &params).await?);
    }
    Ok(rows)
}

fn bytes<const N: usize>(set: impl IntoIterator<Item = [u8; N]>) -> Vec<Value> {
    set.into_iter().map(Value::from).collect()
}

impl Overlay {
    /// Loads the wanted rows (and the providers of loaded codes and claims).
    pub async fn load(conn: &mut Conn, mut wanted: Wanted) -> Result<Self, sqlx::Error> {
        let mut overlay = Self::default();
        let select_providers = format!("SELECT id, {PROVIDER_COLUMNS} FROM providers");
        let mut provider_rows = Vec::new();
        if !wanted.provider_tokens.is_empty() {
            provider_rows.extend(
                select_in(
                    conn,
                    &select_providers,
                    "token_hash",
                    bytes(wanted.provider_tokens.iter().map(|d| d.0)),
                )
                .await?,
            );
        }
        let select_codes = format!("SELECT code_hash, {CODE_COLUMNS} FROM codes");
        if !wanted.codes.is_empty() {
            for row in select_in(
                conn,
                &select_codes,
                "code_hash",
                bytes(wanted.codes.iter().map(|d| d.0)),
            )
            .await?
            {
                overlay
                    .state
                    .codes
                    .insert(Digest(row.array(0)?), projection::code_from_row(&row, 1)?);
            }
        }
        let select_claims = format!("SELECT id, {CLAIM_COLUMNS} FROM claims");
        let mut claim_rows = Vec::new();
        if !wanted.claims.is_empty() {
            claim_rows.extend(
                select_in(
                    conn,
                    &select_claims,
                    "id",
                    bytes(wanted.claims.iter().map(|c| c.0)),
                )
                .await?,
            );
        }
        if !wanted.claim_tokens.is_empty() {
            claim_rows.extend(
                select_in(
                    conn,
                    &select_claims,
                    "token_hash",
                    bytes(wanted.claim_tokens.iter().map(|d| d.0)),
                )
                .await?,
            );
        }
        if !wanted.claim_server_keys.is_empty() {
            claim_rows.extend(
                select_in(
                    conn,
                    &select_claims,
                    "server_public_key",
                    bytes(wanted.claim_server_keys.iter().map(|k| k.0)),
                )
                .await?,
            );
        }
        if !wanted.claim_app_keys.is_empty() {
            claim_rows.extend(
                select_in(
                    conn,
                    &select_claims,
                    "app_public_key",
                    bytes(wanted.claim_app_keys.iter().map(|k| k.0)),
                )
                .await?,
            );
        }
        for row in claim_rows {
            let claim = projection::claim_from_row(&row, 1)?;
            overlay.index_claim(ClaimId(row.array(0)?), &claim.credential);
            overlay.state.claims.insert(ClaimId(row.array(0)?), claim);
        }
        let mut submissions = wanted.submissions;
        let mut submission_keys = wanted.submission_keys;
        if let Some((provider, since_hour)) = wanted.provider_submissions {
            for row in conn
                .fetch_all(
                    "SELECT id FROM submissions WHERE provider = $1 AND hour >= $2",
                    &[provider.0.into(), since_hour.into()],
                )
                .await?
            {
                let id = TrackingId(row.array(0)?);
                submissions.insert(id);
                submission_keys.insert(id);
            }
        }
        if !submissions.is_empty() {
            let select = format!("SELECT id, {SUBMISSION_COLUMNS} FROM submissions");
            for row in
                select_in(conn, &select, "id", bytes(submissions.iter().map(|s| s.0))).await?
            {
                overlay.state.submissions.insert(
                    TrackingId(row.array(0)?),
                    projection::submission_from_row(&row, 1)?,
                );
            }
        }
        let select_keys = format!("SELECT {KEY_COLUMNS} FROM keys");
        let mut key_rows = Vec::new();
        if !wanted.keys.is_empty() {
            let keys = bytes(wanted.keys.iter().map(|k| k.0));
            key_rows.extend(select_in(conn, &select_keys, "key_data", keys).await?);
        }
        // Through keys_by_region_hour: submissions are grouped by their region and hour.
        let mut by_hour: BTreeMap<(&str, u64), Vec<Value>> = BTreeMap::new();
        for id in &submission_keys {
            if let Some(submission) = overlay.state.submissions.get(id) {
                by_hour
                    .entry((submission.region.as_str(), submission.hour))
                    .or_default()
                    .push(id.0.into());
            }
        }
        for ((region, hour), ids) in by_hour {
            // A region is letters, digits and '-' (`Region`): safe to write inline.
            let column = format!("region = '{region}' AND hour = {hour} AND submission");
            key_rows.extend(select_in(conn, &select_keys, &column, ids).await?);
        }
        for row in key_rows {
            let record = projection::key_record_from_row(&row, 0)?;
            overlay.state.keys.insert(record.key.key_data, record);
        }
        if !wanted.provider_codes.is_empty() {
            let ids = bytes(wanted.provider_codes.iter().map(|p| p.0));
            let select = format!("SELECT code_hash, {CODE_COLUMNS} FROM codes");
            for row in select_in(conn, &select, "redeemed = 0 AND provider", ids).await? {
                overlay
                    .state
                    .codes
                    .insert(Digest(row.array(0)?), projection::code_from_row(&row, 1)?);
            }
        }
        let select_tokens = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens");
        let mut token_rows = Vec::new();
        if !wanted.admin_tokens.is_empty() {
            let ids = bytes(wanted.admin_tokens.iter().map(|t| t.0));
            token_rows.extend(select_in(conn, &select_tokens, "id", ids).await?);
        }
        if !wanted.admin_token_hashes.is_empty() {
            let hashes = bytes(wanted.admin_token_hashes.iter().map(|h| h.0));
            token_rows.extend(select_in(conn, &select_tokens, "token_hash", hashes).await?);
        }
        for row in token_rows {
            let (id, token) = projection::admin_token_from_row(&row)?;
            overlay.state.admin_tokens.insert(id, token);
        }
        if !wanted.claim_nonces.is_empty() {
            let nonces = bytes(wanted.claim_nonces.iter().map(|d| d.0));
            for row in select_in(conn, &select_claims, "nonce_hash", nonces).await? {
                let claim = projection::claim_from_row(&row, 1)?;
                overlay.index_claim(ClaimId(row.array(0)?), &claim.credential);
                overlay.state.claims.insert(ClaimId(row.array(0)?), claim);
            }
        }
        // Tokens named by hash first: a proof needs its submission, that submission's
        // provider and the area's publication cursor as well.
        let select_tokens = format!("SELECT {TOKEN_COLUMNS} FROM tokens");
        let mut token_submissions = wanted.token_submissions;
        if !wanted.tokens.is_empty() {
            let hashes = bytes(wanted.tokens.iter().map(|t| t.0));
            for row in select_in(conn, &select_tokens, "hash", hashes).await? {
                let (hash, record) = projection::token_from_row(&row)?;
                token_submissions.insert(record.submission);
                wanted.cursors.insert((record.area.clone(), Stream::Tokens));
                overlay.state.tokens.insert(hash, record);
            }
        }
        let mut submission_tokens = wanted.submission_tokens;
        if let Some((provider, since_hour)) = wanted.provider_submissions {
            for row in conn
                .fetch_all(
                    "SELECT id FROM token_submissions WHERE provider = $1 AND hour >= $2",
                    &[provider.0.into(), since_hour.into()],
                )
                .await?
            {
                let id = TrackingId(row.array(0)?);
                token_submissions.insert(id);
                submission_tokens.insert(id);
            }
        }
        if !token_submissions.is_empty() {
            let select = format!("SELECT id, {TOKEN_SUBMISSION_COLUMNS} FROM token_submissions");
            let ids = bytes(token_submissions.iter().map(|s| s.0));
            for row in select_in(conn, &select, "id", ids).await? {
                let submission = projection::token_submission_from_row(&row, 1)?;
                wanted.providers.insert(submission.provider);
                overlay
                    .state
                    .token_submissions
                    .insert(TrackingId(row.array(0)?), submission);
            }
        }
        // Only submissions that are token submissions have token rows.
        let token_ids: Vec<Value> = submission_tokens
            .iter()
            .filter(|id| overlay.state.token_submissions.contains_key(id))
            .map(|id| id.0.into())
            .collect();
        if !token_ids.is_empty() {
            for row in select_in(conn, &select_tokens, "submission", token_ids).await? {
                let (hash, record) = projection::token_from_row(&row)?;
                overlay.state.tokens.insert(hash, record);
            }
        }
        for (hash, duration, attenuation) in &wanted.research_of {
            if let Some(token) = overlay.state.tokens.get(hash) {
                wanted.research.insert(ResearchCell {
                    day: token.day,
                    duration: *duration,
                    attenuation: *attenuation,
                    level: token.level,
                });
            }
        }
        if !wanted.research.is_empty() {
            // Few cells: one lookup each.
            let sql = format!(
                "SELECT {RESEARCH_COLUMNS} FROM research \
                 WHERE day = $1 AND duration = $2 AND attenuation = $3 AND level = $4"
            );
            for cell in &wanted.research {
                let params = [
                    cell.day.into(),
                    u32::from(cell.duration).into(),
                    u32::from(cell.attenuation).into(),
                    u32::from(cell.level).into(),
                ];
                if let Some(row) = conn.fetch_optional(&sql, &params).await? {
                    let (cell, count) = projection::research_from_row(&row)?;
                    overlay.state.research.insert(cell, count);
                }
            }
        }
        if !wanted.test_results.is_empty() {
            let select = format!("SELECT {TEST_RESULT_COLUMNS} FROM test_results");
            let tests = bytes(wanted.test_results.iter().map(|d| d.0));
            for row in select_in(conn, &select, "test", tests).await? {
                let (test, result) = projection::test_result_from_row(&row)?;
                wanted.providers.insert(result.provider);
                overlay.state.test_results.insert(test, result);
            }
        }
        if wanted.withdrawals {
            overlay.state.withdrawals = projection::withdrawals(conn).await?;
        }
        for (region, stream) in &wanted.cursors {
            let sql =
                format!("SELECT {CURSOR_COLUMNS} FROM cursors WHERE region = $1 AND stream = $2");
            let params = [region.as_str().into(), stream.name().into()];
            if let Some(row) = conn.fetch_optional(&sql, &params).await? {
                let (key, cursor) = projection::cursor_from_row(&row)?;
                overlay.state.cursors.insert(key, cursor);
            }
        }
        // Providers named directly, or owning a loaded code or claim.
        let mut ids = wanted.providers;
        ids.extend(overlay.state.codes.values().map(|c| c.provider));
        ids.extend(overlay.state.claims.values().map(|c| c.provider));
        if !ids.is_empty() {
            provider_rows.extend(
                select_in(
                    conn,
                    &select_providers,
                    "id",
                    bytes(ids.iter().map(|p| p.0)),
                )
                .await?,
            );
        }
        for row in provider_rows {
            let provider = projection::provider_from_row(&row, 1)?;
            overlay
                .provider_by_token
                .insert(provider.token_hash, ProviderId(row.array(0)?));
            overlay
                .state
                .providers
                .insert(ProviderId(row.array(0)?), provider);
        }
        Ok(overlay)
    }

    fn index_claim(&mut self, id: ClaimId, credential: &Credential) {
        match credential {
            Credential::UploadToken { token_hash } => {
                self.claim_by_token.insert(*token_hash, id);
            }
            Credential::CovidShield {
                app_public_key,
                server_public_key,
                ..
            } => {
                self.claim_by_server_key.insert(*server_public_key, id);
                self.claim_by_app_key.insert(*app_public_key);
            }
            Credential::Nonce { nonce_hash } => {
                self.claim_by_nonce.insert(*nonce_hash, id);
            }
        }
    }

    /// Moves the providers, codes and claims of `wanted` that this overlay decides (rows it
    /// holds, or changed, deletions included) out of `wanted`, and returns them. While this
    /// overlay's writes have not run, it, not the database, holds the truth about them: copy
    /// them with [`Overlay::copy_rows`] instead of loading them.
    pub fn take_known(&self, wanted: &mut Wanted) -> Wanted {
        fn split<T: Ord + Copy>(from: &mut BTreeSet<T>, known: impl Fn(&T) -> bool) -> BTreeSet<T> {
            let (taken, rest) = from.iter().partition(|item| known(item));
            *from = rest;
            taken
        }
        let s = &self.state;
        Wanted {
            providers: split(&mut wanted.providers, |p| {
                s.providers.contains_key(p) || self.dirty_providers.contains(p)
            }),
            codes: split(&mut wanted.codes, |c| {
                s.codes.contains_key(c) || self.dirty_codes.contains(c)
            }),
            claims: split(&mut wanted.claims, |c| {
                s.claims.contains_key(c) || self.dirty_claims.contains(c)
            }),
            ..Wanted::default()
        }
    }

    /// Copies the rows [`Overlay::take_known`] took into `into` (those still present).
    pub fn copy_rows(&self, rows: &Wanted, into: &mut Overlay) {
        for id in &rows.providers {
            if let Some(provider) = self.state.providers.get(id) {
                into.provider_by_token.insert(provider.token_hash, *id);
                into.state.providers.insert(*id, provider.clone());
            }
        }
        for hash in &rows.codes {
            if let Some(code) = self.state.codes.get(hash) {
                into.state.codes.insert(*hash, code.clone());
            }
        }
        for id in &rows.claims {
            if let Some(claim) = self.state.claims.get(id) {
                into.index_claim(*id, &claim.credential);
                into.state.claims.insert(*id, claim.clone());
            }
        }
    }

    /// Folds an event in and remembers which rows it changed.
    pub fn apply(&mut self, event: &Event) {
        self.state.apply(event);
        match event {
            Event::ProviderRegistered {
                provider,
                token_hash,
                ..
            } => {
                self.provider_by_token.insert(*token_hash, *provider);
                self.dirty_providers.insert(*provider);
            }
            Event::ProviderSuspended { provider } | Event::ProviderReinstated { provider } => {
                self.dirty_providers.insert(*provider);
            }
            Event::CodeIssued { code_hash, .. } => {
                self.dirty_codes.insert(*code_hash);
            }
            Event::CodeRedeemed {
                code_hash,
                claim,
                credential,
                ..
            } => {
                self.dirty_codes.insert(*code_hash);
                self.dirty_claims.insert(*claim);
                self.index_claim(*claim, credential);
            }
            Event::KeysSubmitted {
                submission,
                claim,
                keys,
                ..
            } => {
                self.dirty_claims.insert(*claim);
                self.dirty_submissions.insert(*submission);
                self.dirty_keys.extend(keys.iter().map(|k| k.key_data));
            }
            Event::BatchPublished {
                region,
                stream,
                files,
                ..
            } => {
                self.dirty_cursors.insert((region.clone(), *stream));
                self.dirty_files
                    .extend(files.iter().map(|f| f.path.clone()));
            }
            // Rows the overlay holds are dropped by `apply`; the rest by `apply_retention`.
            Event::RetentionApplied { .. } => {}
            Event::ProviderRevoked { provider } => {
                self.dirty_providers.insert(*provider);
            }
            Event::SubmissionsWithdrawn { submissions, .. } => {
                let withdrawn: BTreeSet<&TrackingId> = submissions.iter().collect();
                self.dirty_submissions.extend(submissions.iter().copied());
                self.dirty_keys.extend(
                    self.state
                        .keys
                        .values()
                        .filter(|k| withdrawn.contains(&k.submission))
                        .map(|k| k.key.key_data),
                );
                self.dirty_token_submissions.extend(
                    submissions
                        .iter()
                        .filter(|id| self.state.token_submissions.contains_key(id)),
                );
                self.dirty_tokens.extend(
                    self.state
                        .tokens
                        .iter()
                        .filter(|(_, t)| withdrawn.contains(&t.submission))
                        .map(|(hash, _)| *hash),
                );
                self.dirty_withdrawals = true;
            }
            Event::TansImported { tans, .. } => {
                self.dirty_codes.extend(tans.iter().copied());
            }
            Event::TanRedeemed {
                code_hash, nonces, ..
            } => {
                self.dirty_codes.insert(*code_hash);
                for nonce in nonces {
                    self.dirty_claims.insert(nonce.claim);
                    self.claim_by_nonce.insert(nonce.nonce_hash, nonce.claim);
                }
            }
            Event::TokensSubmitted {
                submission,
                claim,
                tokens,
                proof,
                ..
            } => {
                self.dirty_claims.extend(*claim);
                self.dirty_tokens.extend(*proof);
                self.dirty_token_submissions.insert(*submission);
                self.dirty_tokens.extend(tokens.iter().map(|t| t.hash));
            }
            Event::TokensResearched { hashes, .. } => {
                self.dirty_tokens.extend(hashes.iter().copied());
            }
            Event::ResearchRecorded { cells } => {
                self.dirty_research.extend(cells.iter().copied());
            }
            Event::TestResultPosted { test, .. } | Event::TestResultUsed { test } => {
                self.dirty_test_results.insert(*test);
            }
            Event::KeysWithdrawn { keys, .. } => {
                self.dirty_keys.extend(keys.iter().copied());
                self.dirty_withdrawals = true;
            }
            Event::CodesInvalidated { codes } => {
                self.dirty_codes.extend(codes.iter().copied());
            }
            Event::AdminTokenCreated { token, .. } | Event::AdminTokenRevoked { token } => {
                self.dirty_admin_tokens.insert(*token);
            }
            Event::AdminAction { withdrawal, .. } => {
                self.dirty_withdrawals |= withdrawal.is_some();
            }
        }
    }

    /// Writes every changed row back, parents before children.
    pub async fn write_back(&self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        for statement in self.write_statements() {
            statement.run(conn).await?;
        }
        Ok(())
    }

    /// The statements [`Overlay::write_back`] runs, in order: building them is all CPU, so a
    /// caller may build the next batch's while the database runs this one's.
    pub fn write_statements(&self) -> Vec<Statement> {
        let mut out = Vec::new();
        let s = &self.state;
        upsert(
            &mut out,
            "providers",
            Conflict::Update("id"),
            &["id", "name", "region", "token_hash", "suspended", "revoked"],
            self.dirty_providers.iter().filter_map(|id| {
                s.providers.get(id).map(|p| {
                    vec![
                        id.0.into(),
                        p.name.as_str().into(),
                        p.region.as_str().into(),
                        p.token_hash.0.into(),
                        p.suspended.into(),
                        p.revoked.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "codes",
            Conflict::Update("code_hash"),
            &["code_hash", "provider", "format", "expires_at", "redeemed"],
            self.dirty_codes.iter().filter_map(|h| {
                s.codes.get(h).map(|c| {
                    vec![
                        h.0.into(),
                        c.provider.0.into(),
                        c.format.name().into(),
                        c.expires_at.into(),
                        c.redeemed.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "claims",
            Conflict::Update("id"),
            &[
                "id",
                "provider",
                "region",
                "expires_at",
                "budget_remaining",
                "token_hash",
                "app_public_key",
                "server_public_key",
                "nonce_hash",
            ],
            self.dirty_claims.iter().filter_map(|id| {
                s.claims.get(id).map(|c| {
                    let (token, app, public, nonce) = match &c.credential {
                        Credential::UploadToken { token_hash } => {
                            (Some(token_hash.0), None, None, None)
                        }
                        Credential::CovidShield {
                            app_public_key,
                            server_public_key,
                        } => (
                            None,
                            Some(app_public_key.0),
                            Some(server_public_key.0),
                            None,
                        ),
                        Credential::Nonce { nonce_hash } => (None, None, None, Some(nonce_hash.0)),
                    };
                    vec![
                        id.0.into(),
                        c.provider.0.into(),
                        c.region.as_str().into(),
                        c.expires_at.into(),
                        c.budget_remaining.into(),
                        token.into(),
                        app.into(),
                        public.into(),
                        nonce.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "submissions",
            Conflict::Update("id"),
            &[
                "id",
                "claim",
                "provider",
                "region",
                "hour",
                "inserted",
                "skipped",
                "dropped",
                "withdrawn",
            ],
            self.dirty_submissions.iter().filter_map(|id| {
                s.submissions.get(id).map(|x| {
                    vec![
                        id.0.into(),
                        x.claim.0.into(),
                        x.provider.0.into(),
                        x.region.as_str().into(),
                        x.hour.into(),
                        x.inserted.into(),
                        x.skipped.into(),
                        x.dropped.into(),
                        x.withdrawn.into(),
                    ]
                })
            }),
        );
        if self.key_writes == KeyWrites::Insert(Dialect::Postgres) {
            copy_keys(
                &mut out,
                self.dirty_keys.iter().filter_map(|k| s.keys.get(k)),
            );
        } else {
            upsert(
                &mut out,
                "keys",
                match self.key_writes {
                    KeyWrites::Upsert => Conflict::Update("key_data"),
                    KeyWrites::Insert(Dialect::Sqlite) => Conflict::Ignore,
                    KeyWrites::Insert(Dialect::Postgres) => Conflict::None,
                },
                &[
                    "key_data",
                    "rolling_start",
                    "rolling_period",
                    "transmission_risk",
                    "submission",
                    "region",
                    "hour",
                    "withdrawn",
                ],
                self.dirty_keys.iter().filter_map(|k| {
                    s.keys.get(k).map(|r| {
                        vec![
                            k.0.into(),
                            r.key.rolling_start.into(),
                            r.key.rolling_period.into(),
                            u32::from(r.key.transmission_risk).into(),
                            r.submission.0.into(),
                            r.region.as_str().into(),
                            r.hour.into(),
                            r.withdrawn.into(),
                        ]
                    })
                }),
            );
        }
        upsert(
            &mut out,
            "cursors",
            Conflict::Update("region, stream"),
            &[
                "region",
                "stream",
                "next_start",
                "held_from",
                "seq",
                "chain_hash",
                "revised_through",
            ],
            self.dirty_cursors.iter().filter_map(|key| {
                s.cursors.get(key).map(|c| {
                    vec![
                        key.0.as_str().into(),
                        key.1.name().into(),
                        c.next_start.into(),
                        c.held_from.into(),
                        c.seq.into(),
                        c.chain_hash.0.into(),
                        c.revised_through.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "files",
            Conflict::Update("path"),
            &[
                "path", "region", "stream", "start_ts", "end_ts", "seq", "sha256", "bytes",
            ],
            self.dirty_files.iter().filter_map(|path| {
                s.files.get(path).map(|f| {
                    vec![
                        path.as_str().into(),
                        f.region.as_str().into(),
                        f.stream.name().into(),
                        f.start.into(),
                        f.end.into(),
                        f.seq.into(),
                        f.sha256.0.into(),
                        f.bytes.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "admin_tokens",
            Conflict::Update("id"),
            &["id", "token_hash", "scope", "label", "revoked"],
            self.dirty_admin_tokens.iter().filter_map(|id| {
                s.admin_tokens.get(id).map(|t| {
                    vec![
                        id.0.into(),
                        t.token_hash.0.into(),
                        t.scope.name().into(),
                        t.label.as_str().into(),
                        t.revoked.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "token_submissions",
            Conflict::Update("id"),
            &[
                "id",
                "claim",
                "provider",
                "hour",
                "level",
                "inserted",
                "skipped",
                "withdrawn",
            ],
            self.dirty_token_submissions.iter().filter_map(|id| {
                s.token_submissions.get(id).map(|x| {
                    vec![
                        id.0.into(),
                        x.claim.map(|c| c.0).into(),
                        x.provider.0.into(),
                        x.hour.into(),
                        u32::from(x.level).into(),
                        x.inserted.into(),
                        x.skipped.into(),
                        x.withdrawn.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "tokens",
            Conflict::Update("hash"),
            &[
                "hash",
                "submission",
                "area",
                "day",
                "level",
                "hour",
                "withdrawn",
                "proved",
                "researched",
            ],
            self.dirty_tokens.iter().filter_map(|hash| {
                s.tokens.get(hash).map(|t| {
                    vec![
                        hash.0.into(),
                        t.submission.0.into(),
                        t.area.as_str().into(),
                        t.day.into(),
                        u32::from(t.level).into(),
                        t.hour.into(),
                        t.withdrawn.into(),
                        t.proved.into(),
                        t.researched.into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "research",
            Conflict::Update("day, duration, attenuation, level"),
            &["day", "duration", "attenuation", "level", "count"],
            self.dirty_research.iter().filter_map(|cell| {
                s.research.get(cell).map(|count| {
                    vec![
                        cell.day.into(),
                        u32::from(cell.duration).into(),
                        u32::from(cell.attenuation).into(),
                        u32::from(cell.level).into(),
                        (*count).into(),
                    ]
                })
            }),
        );
        upsert(
            &mut out,
            "test_results",
            Conflict::Update("test"),
            &["test", "provider", "positive", "expires_at", "used"],
            self.dirty_test_results.iter().filter_map(|test| {
                s.test_results.get(test).map(|r| {
                    vec![
                        test.0.into(),
                        r.provider.0.into(),
                        r.positive.into(),
                        r.expires_at.into(),
                        r.used.into(),
                    ]
                })
            }),
        );
        if self.dirty_withdrawals {
            upsert(
                &mut out,
                "counters",
                Conflict::Update("name"),
                &["name", "value"],
                std::iter::once(vec!["withdrawals".into(), s.withdrawals.into()]),
            );
        }
        // Invalidated codes: dirty, and gone from the state.
        let gone: Vec<Value> = self
            .dirty_codes
            .iter()
            .filter(|h| !s.codes.contains_key(h))
            .map(|h| h.0.into())
            .collect();
        for chunk in gone.chunks(MAX_PARAMS) {
            let (list, params) = in_list(chunk);
            out.push(Statement {
                sql: format!("DELETE FROM codes WHERE code_hash IN ({list})"),
                params,
                inserts: None,
                copy_rows: None,
            });
        }
        out
    }
}

/// Key rows as one `COPY keys FROM STDIN` in text format: a rebuild writes millions, and
/// binding eight parameters per row costs more than the database's own work.
fn copy_keys<'a>(out: &mut Vec<Statement>, records: impl Iterator<Item = &'a KeyRecord>) {
    use std::fmt::Write as _;
    // `\\x…` is bytea's hex form with COPY's backslash escaped.
    fn bytea(rows: &mut String, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        rows.push_str("\\\\x");
        for byte in bytes {
            rows.push(DIGITS[usize::from(byte >> 4)] as char);
            rows.push(DIGITS[usize::from(byte & 15)] as char);
        }
        rows.push('\t');
    }
    let mut rows = String::new();
    let mut count = 0u64;
    for r in records {
        let k = &r.key;
        bytea(&mut rows, &k.key_data.0);
        let _ = write!(
            rows,
            "{}\t{}\t{}\t",
            k.rolling_start, k.rolling_period, k.transmission_risk
        );
        bytea(&mut rows, &r.submission.0);
        // A region is letters, digits and '-' (`Region`), which COPY takes as they are.
        let _ = write!(rows, "{}\t{}\t", r.region.as_str(), r.hour);
        match r.withdrawn {
            Some(serial) => {
                let _ = writeln!(rows, "{serial}");
            }
            None => rows.push_str("\\N\n"),
        }
        count += 1;
    }
    if count > 0 {
        out.push(Statement {
            sql: "COPY keys (key_data, rolling_start, rolling_period, transmission_risk, \
                  submission, region, hour, withdrawn) FROM STDIN"
                .into(),
            params: Vec::new(),
            inserts: Some(count),
            copy_rows: Some(rows.into_bytes()),
        });
    }
}

/// What an insert does with a row whose key is already there.
enum Conflict<'a> {
    /// `ON CONFLICT (key) DO UPDATE` every other column: an upsert.
    Update(&'a str),
    /// `INSERT OR IGNORE` (SQLite); the caller checks the row count.
    Ignore,
    /// A plain `INSERT`, into a table without a unique key (PostgreSQL).
    None,
}

/// Multi-row inserts of `rows`, in chunks, appended to `out`.
fn upsert(
    out: &mut Vec<Statement>,
    table: &str,
    conflict: Conflict<'_>,
    columns: &[&str],
    rows: impl Iterator<Item = Vec<Value>>,
) {
    let rows: Vec<Vec<Value>> = rows.collect();
    let (verb, clause) = match conflict {
        Conflict::Update(key) => {
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| **c != key)
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            let clause = format!(" ON CONFLICT ({key}) DO UPDATE SET {}", updates.join(", "));
            ("INSERT", clause)
        }
        Conflict::Ignore => ("INSERT OR IGNORE", String::new()),
        Conflict::None => ("INSERT", String::new()),
    };
    let counted = clause.is_empty();
    let most = (MAX_PARAMS / columns.len()).max(1);
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let size = power_of_two_at_most(rest.len().min(most));
        let (chunk, after) = rest.split_at(size);
        rest = after;
        out.push(Statement {
            sql: format!(
                "{verb} INTO {table} ({}) VALUES {}{clause}",
                columns.join(", "),
                placeholders(chunk.len(), columns.len()),
            ),
            params: chunk.concat(),
            inserts: counted.then_some(chunk.len() as u64),
            copy_rows: None,
        });
    }
}

/// Appends events in order, in chunks.
pub async fn append_events(conn: &mut Conn, events: &[Event]) -> Result<(), sqlx::Error> {
    let mut rest = events;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(power_of_two_at_most(rest.len().min(1024)));
        rest = after;
        let sql = format!(
            "INSERT INTO events (payload, key_hour, kind) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|e| event_row(e.encode(), e))
            .collect();
        conn.execute(&sql, &params).await?;
    }
    Ok(())
}

/// The `events` columns `payload, key_hour, kind` of an event stored as `payload`.
pub fn event_row(payload: String, event: &Event) -> [Value; 3] {
    // Admin actions are listed on their own: the audit trail.
    let kind = matches!(event, Event::AdminAction { .. }).then(|| event.kind().to_owned());
    [
        Value::Text(payload),
        event.key_material_hour().into(),
        kind.into(),
    ]
}
