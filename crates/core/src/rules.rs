//! The decisions: given a request, the state it touches and the time, which event happens, or
//! which error says why not. Validation of uploaded keys follows COVID Shield's order, so both
//! API surfaces report the same first problem.

use std::collections::BTreeSet;

use crate::codes::{CodeFormat, CodePolicy};
use crate::encounter::{Level, ResearchCell, TokenHash, UploadedToken};
use crate::event::{Event, NonceClaim};
use crate::ids::{ClaimId, Digest, KeyData, ProviderId, TrackingId};
use crate::state::{
    Claim, Code, Credential, Provider, StoredKey, TestResult, TokenRecord, TokenSubmission,
};
use crate::{UnixSeconds, hour_of};

/// New keys one claim may upload over its life: 15 on the first day plus 2 × 14 follow-ups.
pub const KEY_BUDGET: u32 = 43;
/// Keys in one upload request.
pub const MAX_KEYS_PER_REQUEST: usize = 28;
/// How long a redeemed code's upload authorisation lives.
pub const CLAIM_LIFETIME_SECONDS: u64 = 15 * 86_400;
/// Keys that stopped being broadcast longer ago than this are dropped on upload.
pub const KEY_RETENTION_DAYS: u32 = 14;
/// A phone's clock may run this far ahead: its new day's key may start this early.
pub const CLOCK_SKEW_INTERVALS: u32 = 6;
/// The shortest custom code lifetime a provider may ask for.
pub const MIN_CODE_TTL_SECONDS: u64 = 60;
const INTERVALS_PER_DAY: u32 = 144;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the provider token is not valid")]
    UnknownProvider,
    #[error("the provider is suspended and can neither issue codes nor accept reports")]
    ProviderSuspended,
    #[error("ttlSeconds must be between {min} and {max} for {format} codes, got {got}")]
    TtlOutOfRange {
        format: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
    /// Unknown, expired, already redeemed, or issued by a suspended provider: one answer for
    /// all, so the error is no oracle.
    #[error("the code is not valid: it may be mistyped, expired or already used")]
    InvalidCode,
    #[error("the upload authorisation is unknown or has expired")]
    InvalidClaim,
    #[error("the app key does not match the one registered when the code was claimed")]
    AppKeyMismatch,
    #[error("this app key is already registered to another claim")]
    AppKeyRegistered,
    #[error("the request contains no keys")]
    NoKeys,
    #[error("at most {MAX_KEYS_PER_REQUEST} keys per request, got {0}")]
    TooManyKeysInRequest(usize),
    #[error("key #{index}: {problem}")]
    InvalidKey { index: usize, problem: KeyProblem },
    #[error("the keys span more than 15 days")]
    KeysSpanTooLong,
    #[error("key #{index} starts in the future (interval {rolling_start}, now {now})")]
    KeyFromFuture {
        index: usize,
        rolling_start: u32,
        now: u32,
    },
    #[error(
        "this authorisation may upload {remaining} more new key(s); the request has {requested}"
    )]
    KeyBudgetExceeded { remaining: u32, requested: u32 },
    #[error("give a reason (1 to 500 characters): it goes into the audit trail")]
    ReasonRequired,
    #[error("one with this id or token already exists")]
    AlreadyExists,
    #[error("no provider has this id")]
    NoSuchProvider,
    #[error("the provider is revoked; revocation is permanent")]
    ProviderRevoked,
    #[error("no submission has this tracking ID (it may be older than the retention period)")]
    NoSuchSubmission,
    #[error("none of these keys is stored (never submitted, or already forgotten)")]
    NoSuchKeys,
    #[error("no unredeemed code matches (mistyped, expired or invalidated)")]
    NoSuchCode,
    #[error("the code was already redeemed; withdraw the submission made with it instead")]
    CodeAlreadyRedeemed,
    #[error("no admin token has this id")]
    NoSuchAdminToken,
    #[error("the nonce is unknown or has expired: redeem the TAN again for fresh nonces")]
    UnknownNonce,
    #[error("the nonce was already used: each nonce authorises one upload")]
    NonceUsed,
    #[error("the request contains no token hashes")]
    NoTokens,
    #[error("at most {max} token hashes per upload, got {got}")]
    TooManyTokens { max: u32, got: usize },
    #[error("token #{index}: day {day} is outside the last 14 days ({first} to {last})")]
    TokenDayOutOfRange {
        index: usize,
        day: u32,
        first: u32,
        last: u32,
    },
    #[error("the preimage proves no published encounter (unknown, withdrawn or not yet published)")]
    UnknownProof,
    #[error("this preimage was already used; each proves its encounter once")]
    ProofUsed,
    #[error("a chained upload would be at level {level}; this server accepts up to level {max}")]
    LevelTooHigh { level: u32, max: Level },
    #[error("the TAN list is empty")]
    NoTans,
    #[error(
        "no positive test result is waiting for this secret's upload (unknown, negative, expired or already used)"
    )]
    NoPositiveResult,
}

impl DomainError {
    /// A stable snake_case name, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::ProviderSuspended => "provider_suspended",
            Self::TtlOutOfRange { .. } => "ttl_out_of_range",
            Self::InvalidCode => "invalid_code",
            Self::InvalidClaim => "invalid_claim",
            Self::AppKeyMismatch => "app_key_mismatch",
            Self::AppKeyRegistered => "app_key_registered",
            Self::NoKeys => "no_keys",
            Self::TooManyKeysInRequest(_) => "too_many_keys_in_request",
            Self::InvalidKey { .. } => "invalid_key",
            Self::KeysSpanTooLong => "keys_span_too_long",
            Self::KeyFromFuture { .. } => "key_from_future",
            Self::KeyBudgetExceeded { .. } => "key_budget_exceeded",
            Self::ReasonRequired => "reason_required",
            Self::AlreadyExists => "already_exists",
            Self::NoSuchProvider => "no_such_provider",
            Self::ProviderRevoked => "provider_revoked",
            Self::NoSuchSubmission => "no_such_submission",
            Self::NoSuchKeys => "no_such_keys",
            Self::NoSuchCode => "no_such_code",
            Self::CodeAlreadyRedeemed => "code_already_redeemed",
            Self::NoSuchAdminToken => "no_such_admin_token",
            Self::UnknownNonce => "unknown_nonce",
            Self::NonceUsed => "nonce_used",
            Self::NoTokens => "no_tokens",
            Self::TooManyTokens { .. } => "too_many_tokens",
            Self::TokenDayOutOfRange { .. } => "token_day_out_of_range",
            Self::UnknownProof => "unknown_proof",
            Self::ProofUsed => "proof_used",
            Self::LevelTooHigh { .. } => "level_too_high",
            Self::NoTans => "no_tans",
            Self::NoPositiveResult => "no_positive_result",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("rolling_period must be between 1 and 144")]
    RollingPeriod,
    #[error("key_data must be 16 bytes")]
    KeyData,
    #[error("rolling_start_interval_number must be a positive interval number")]
    RollingStart,
    #[error("transmission_risk_level must be between 0 and 8")]
    TransmissionRisk,
}

/// A key as an app sent it, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawKey {
    pub key_data: Vec<u8>,
    pub rolling_start: i64,
    /// `None` means the protobuf default, a full day.
    pub rolling_period: Option<i64>,
    pub transmission_risk: Option<i64>,
}

/// What an accepted submission did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionOutcome {
    pub tracking_id: TrackingId,
    pub inserted: u32,
    pub skipped: u32,
    pub dropped: u32,
}

/// Nonces a redeemed TAN yields: an upload now and two later ones (encounters of the days
/// after the test, while the user may still be infectious).
pub const NONCES_PER_TAN: usize = 3;
/// Token hashes one nonce may upload: 14 days of a household's 15-minute encounters.
pub const MAX_TOKENS_PER_UPLOAD: u32 = 10_000;
/// Encounters older than this many days (today included) are not accepted.
pub const TOKEN_DAYS: u32 = 14;

/// What an accepted token upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOutcome {
    pub tracking_id: TrackingId,
    pub level: Level,
    pub inserted: u32,
    pub skipped: u32,
}

pub fn issue_code(
    provider_id: ProviderId,
    provider: &Provider,
    format: CodeFormat,
    ttl_seconds: Option<u64>,
    policy: &CodePolicy,
    now: UnixSeconds,
    code_hash: Digest,
) -> Result<Event, DomainError> {
    if !provider.active() {
        return Err(DomainError::ProviderSuspended);
    }
    if format == CodeFormat::Tan {
        // TANs are imported, never issued: callers parse issuable formats only.
        return Err(DomainError::InvalidCode);
    }
    let max = policy.ttl(format);
    let ttl = ttl_seconds.unwrap_or(max);
    if !(MIN_CODE_TTL_SECONDS..=max).contains(&ttl) {
        return Err(DomainError::TtlOutOfRange {
            format: format.name(),
            min: MIN_CODE_TTL_SECONDS,
            max,
            got: ttl,
        });
    }
    Ok(Event::CodeIssued {
        code_hash,
        provider: provider_id,
        format,
        expires_at: now + ttl,
    })
}

/// Redeems a code into an upload authorisation carrying `credential`.
pub fn redeem_code(
    code_hash: Digest,
    code: Option<&Code>,
    provider: Option<&Provider>,
    now: UnixSeconds,
    claim: ClaimId,
    credential: Credential,
) -> Result<Event, DomainError> {
    // A TAN authorises encounter tokens only ([`redeem_tan`]).
    let code = code
        .filter(|c| !c.redeemed && now < c.expires_at && c.format != CodeFormat::Tan)
        .ok_or(DomainError::InvalidCode)?;
    let provider = provider
        .filter(|p| p.active())
        .ok_or(DomainError::InvalidCode)?;
    Ok(Event::CodeRedeemed {
        code_hash,
        claim,
        provider: code.provider,
        region: provider.region.clone(),
        // Rounded up to the hour, so the log does not keep the redemption time to the second.
        expires_at: (now + CLAIM_LIFETIME_SECONDS).div_ceil(3600) * 3600,
        key_budget: KEY_BUDGET,
        credential,
    })
}

fn validate_key(raw: &RawKey) -> Result<StoredKey, KeyProblem> {
    let rolling_period = raw.rolling_period.unwrap_or(i64::from(INTERVALS_PER_DAY));
    if !(1..=i64::from(INTERVALS_PER_DAY)).contains(&rolling_period) {
        return Err(KeyProblem::RollingPeriod);
    }
    let key_data = KeyData(
        raw.key_data
            .as_slice()
            .try_into()
            .map_err(|_| KeyProblem::KeyData)?,
    );
    let rolling_start = u32::try_from(raw.rolling_start)
        .ok()
        .filter(|r| *r > 0 && *r <= i32::MAX as u32)
        .ok_or(KeyProblem::RollingStart)?;
    let transmission_risk = u8::try_from(raw.transmission_risk.unwrap_or(0))
        .ok()
        .filter(|t| *t <= 8)
        .ok_or(KeyProblem::TransmissionRisk)?;
    Ok(StoredKey {
        key_data,
        rolling_start,
        rolling_period: rolling_period as u32,
        transmission_risk,
    })
}

/// Stateless checks of an upload, in COVID Shield's order: count, each key, span, then our
/// addition, keys from the future.
pub fn validate_keys(raw: &[RawKey], now: UnixSeconds) -> Result<Vec<StoredKey>, DomainError> {
    if raw.is_empty() {
        return Err(DomainError::NoKeys);
    }
    if raw.len() > MAX_KEYS_PER_REQUEST {
        return Err(DomainError::TooManyKeysInRequest(raw.len()));
    }
    let keys = raw
        .iter()
        .enumerate()
        .map(|(index, key)| {
            validate_key(key).map_err(|problem| DomainError::InvalidKey { index, problem })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first = keys.iter().map(|k| k.rolling_start).min().unwrap_or(0);
    let last = keys.iter().map(|k| k.rolling_start).max().unwrap_or(0);
    if u64::from(last) + u64::from(INTERVALS_PER_DAY) - u64::from(first)
        > u64::from(INTERVALS_PER_DAY) * 15
    {
        return Err(DomainError::KeysSpanTooLong);
    }
    let now_interval = (now / 600) as u32;
    if let Some((index, key)) = keys
        .iter()
        .enumerate()
        .find(|(_, k)| k.rolling_start > now_interval + CLOCK_SKEW_INTERVALS)
    {
        return Err(DomainError::KeyFromFuture {
            index,
            rolling_start: key.rolling_start,
            now: now_interval,
        });
    }
    Ok(keys)
}

/// Accepts validated keys under a claim: drops keys past retention, skips keys already stored
/// (or repeated), and spends the claim's budget on the rest, all or nothing.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    claim_id: ClaimId,
    claim: Option<&Claim>,
    provider: Option<&Provider>,
    keys: Vec<StoredKey>,
    is_stored: impl Fn(&KeyData) -> bool,
    now: UnixSeconds,
    tracking_id: TrackingId,
) -> Result<(Event, SubmissionOutcome), DomainError> {
    let claim = claim
        .filter(|c| now < c.expires_at)
        .ok_or(DomainError::InvalidClaim)?;
    if provider.is_none_or(|p| !p.active()) {
        return Err(DomainError::ProviderSuspended);
    }
    let oldest_kept = ((now / 600) as u32).saturating_sub(KEY_RETENTION_DAYS * INTERVALS_PER_DAY);
    let mut dropped = 0;
    let mut skipped = 0;
    let mut seen = BTreeSet::new();
    let mut new_keys = Vec::with_capacity(keys.len());
    for key in keys {
        if key.rolling_start + key.rolling_period <= oldest_kept {
            dropped += 1;
        } else if is_stored(&key.key_data) || !seen.insert(key.key_data) {
            skipped += 1;
        } else {
            new_keys.push(key);
        }
    }
    let requested = new_keys.len() as u32;
    if requested > claim.budget_remaining {
        return Err(DomainError::KeyBudgetExceeded {
            remaining: claim.budget_remaining,
            requested,
        });
    }
    let outcome = SubmissionOutcome {
        tracking_id,
        inserted: requested,
        skipped,
        dropped,
    };
    Ok((
        Event::KeysSubmitted {
            submission: tracking_id,
            claim: claim_id,
            provider: claim.provider,
            region: claim.region.clone(),
            hour: hour_of(now),
            keys: new_keys,
            skipped,
            dropped,
        },
        outcome,
    ))
}

/// A TAN list's import: the hashes not stored yet, valid until `expires_at`. Returns the event
/// (`None` when every TAN was already there) and how many were skipped as duplicates.
pub fn import_tans(
    provider_id: ProviderId,
    provider: Option<&Provider>,
    tans: &[Digest],
    is_stored: impl Fn(&Digest) -> bool,
    expires_at: UnixSeconds,
    now: UnixSeconds,
) -> Result<(Option<Event>, u32), DomainError> {
    let provider = provider.ok_or(DomainError::NoSuchProvider)?;
    if provider.revoked {
        return Err(DomainError::ProviderRevoked);
    }
    if !provider.active() {
        return Err(DomainError::ProviderSuspended);
    }
    if tans.is_empty() {
        return Err(DomainError::NoTans);
    }
    let max = crate::codes::MAX_TAN_TTL_SECONDS;
    let ttl = expires_at.saturating_sub(now);
    if expires_at <= now || ttl > max {
        return Err(DomainError::TtlOutOfRange {
            format: CodeFormat::Tan.name(),
            min: 1,
            max,
            got: ttl,
        });
    }
    let mut seen = BTreeSet::new();
    let fresh: Vec<Digest> = tans
        .iter()
        .filter(|tan| !is_stored(tan) && seen.insert(**tan))
        .copied()
        .collect();
    let skipped = (tans.len() - fresh.len()) as u32;
    let event = (!fresh.is_empty()).then_some(Event::TansImported {
        provider: provider_id,
        tans: fresh,
        expires_at,
    });
    Ok((event, skipped))
}

/// Exchanges a TAN for single-use upload nonces (the caller made them and hashed them).
/// Unknown, expired, used and non-TAN codes get one answer, as codes do.
pub fn redeem_tan(
    code_hash: Digest,
    code: Option<&Code>,
    provider: Option<&Provider>,
    now: UnixSeconds,
    nonces: Vec<NonceClaim>,
) -> Result<Event, DomainError> {
    let code = code
        .filter(|c| !c.redeemed && now < c.expires_at && c.format == CodeFormat::Tan)
        .ok_or(DomainError::InvalidCode)?;
    let provider = provider
        .filter(|p| p.active())
        .ok_or(DomainError::InvalidCode)?;
    Ok(Event::TanRedeemed {
        code_hash,
        provider: code.provider,
        region: provider.region.clone(),
        expires_at: (now + CLAIM_LIFETIME_SECONDS).div_ceil(3600) * 3600,
        token_budget: MAX_TOKENS_PER_UPLOAD,
        nonces,
    })
}

/// Checks an upload's token hashes: count, days within the last [`TOKEN_DAYS`] (a day ahead
/// allowed for clock skew), and splits off hashes already stored or repeated.
fn accept_tokens(
    tokens: Vec<UploadedToken>,
    budget: u32,
    is_stored: impl Fn(&TokenHash) -> bool,
    now: UnixSeconds,
) -> Result<(Vec<UploadedToken>, u32), DomainError> {
    if tokens.is_empty() {
        return Err(DomainError::NoTokens);
    }
    if tokens.len() > budget as usize {
        return Err(DomainError::TooManyTokens {
            max: budget,
            got: tokens.len(),
        });
    }
    let today = (now / 86_400) as u32;
    let (first, last) = (today.saturating_sub(TOKEN_DAYS - 1), today + 1);
    if let Some((index, token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, t)| !(first..=last).contains(&t.day))
    {
        return Err(DomainError::TokenDayOutOfRange {
            index,
            day: token.day,
            first,
            last,
        });
    }
    let mut seen = BTreeSet::new();
    let total = tokens.len();
    let fresh: Vec<UploadedToken> = tokens
        .into_iter()
        .filter(|t| !is_stored(&t.hash) && seen.insert(t.hash))
        .collect();
    let skipped = (total - fresh.len()) as u32;
    Ok((fresh, skipped))
}

/// A level-0 upload with a nonce's claim: single use, all or nothing.
pub fn submit_tokens(
    claim_id: ClaimId,
    claim: Option<&Claim>,
    provider: Option<&Provider>,
    tokens: Vec<UploadedToken>,
    is_stored: impl Fn(&TokenHash) -> bool,
    now: UnixSeconds,
    tracking_id: TrackingId,
) -> Result<(Event, TokenOutcome), DomainError> {
    let claim = claim
        .filter(|c| now < c.expires_at && matches!(c.credential, Credential::Nonce { .. }))
        .ok_or(DomainError::UnknownNonce)?;
    if claim.budget_remaining == 0 {
        return Err(DomainError::NonceUsed);
    }
    if provider.is_none_or(|p| !p.active()) {
        return Err(DomainError::ProviderSuspended);
    }
    let (fresh, skipped) = accept_tokens(tokens, claim.budget_remaining, is_stored, now)?;
    let outcome = TokenOutcome {
        tracking_id,
        level: 0,
        inserted: fresh.len() as u32,
        skipped,
    };
    Ok((
        Event::TokensSubmitted {
            submission: tracking_id,
            claim: Some(claim_id),
            provider: claim.provider,
            hour: hour_of(now),
            level: 0,
            tokens: fresh,
            skipped,
            proof: None,
        },
        outcome,
    ))
}

/// What a chained upload's proof refers to, as the store found it.
pub struct Proof<'a> {
    /// H(preimage).
    pub hash: TokenHash,
    pub token: Option<&'a TokenRecord>,
    /// Whether the token's area has published it.
    pub published: bool,
    pub submission: Option<&'a TokenSubmission>,
    pub provider: Option<&'a Provider>,
}

impl Proof<'_> {
    /// The proven token, if the proof holds: published, live, its report's provider active.
    fn token(&self) -> Result<&TokenRecord, DomainError> {
        let token = self
            .token
            .filter(|t| self.published && t.withdrawn.is_none())
            .ok_or(DomainError::UnknownProof)?;
        if self.submission.is_none_or(|s| s.withdrawn) {
            return Err(DomainError::UnknownProof);
        }
        if self.provider.is_none_or(|p| !p.active()) {
            return Err(DomainError::ProviderSuspended);
        }
        Ok(token)
    }
}

/// A chained upload at level n + 1, authorised by the preimage of a published level-n hash.
pub fn submit_chained(
    proof: &Proof<'_>,
    max_level: Level,
    tokens: Vec<UploadedToken>,
    is_stored: impl Fn(&TokenHash) -> bool,
    now: UnixSeconds,
    tracking_id: TrackingId,
) -> Result<(Event, TokenOutcome), DomainError> {
    let proven = proof.token()?;
    if proven.proved {
        return Err(DomainError::ProofUsed);
    }
    let level = u32::from(proven.level) + 1;
    if level > u32::from(max_level) {
        return Err(DomainError::LevelTooHigh {
            level,
            max: max_level,
        });
    }
    let level = level as Level;
    let (fresh, skipped) = accept_tokens(tokens, MAX_TOKENS_PER_UPLOAD, is_stored, now)?;
    let provider = proof
        .submission
        .map(|s| s.provider)
        .ok_or(DomainError::UnknownProof)?;
    let outcome = TokenOutcome {
        tracking_id,
        level,
        inserted: fresh.len() as u32,
        skipped,
    };
    Ok((
        Event::TokensSubmitted {
            submission: tracking_id,
            claim: None,
            provider,
            hour: hour_of(now),
            level,
            tokens: fresh,
            skipped,
            proof: Some(proof.hash),
        },
        outcome,
    ))
}

/// Opt-in research data for proven encounters: one cell each (the day and level from the
/// published token, the buckets from the phone), each preimage once. All or nothing.
pub fn contribute_research(
    proofs: &[(Proof<'_>, u8, u8)],
    shuffle: impl FnOnce(&mut [ResearchCell]),
) -> Result<Vec<Event>, DomainError> {
    let mut hashes = Vec::with_capacity(proofs.len());
    let mut cells = Vec::with_capacity(proofs.len());
    let mut hour = 0;
    let mut seen = BTreeSet::new();
    for (proof, duration, attenuation) in proofs {
        let token = proof.token()?;
        if token.researched || !seen.insert(proof.hash) {
            return Err(DomainError::ProofUsed);
        }
        hour = hour.max(token.hour);
        hashes.push(proof.hash);
        cells.push(ResearchCell {
            day: token.day,
            duration: *duration,
            attenuation: *attenuation,
            level: token.level,
        });
    }
    if cells.is_empty() {
        return Err(DomainError::NoTokens);
    }
    // The records must not reveal which proof they came from.
    shuffle(&mut cells);
    Ok(vec![
        Event::TokensResearched { hashes, hour },
        Event::ResearchRecorded { cells },
    ])
}

/// How long a posted test result can be polled and used.
pub const TEST_RESULT_LIFETIME_SECONDS: u64 = 14 * 86_400;

/// A provider posts (or corrects) a test result. A result already used for an upload stays
/// as it is: the upload has happened.
pub fn post_result(
    test: Digest,
    provider_id: ProviderId,
    provider: &Provider,
    existing: Option<&TestResult>,
    positive: bool,
    now: UnixSeconds,
) -> Result<Event, DomainError> {
    if !provider.active() {
        return Err(DomainError::ProviderSuspended);
    }
    // Only the provider that posted a result may correct it, and only before it was used.
    if existing.is_some_and(|r| r.used || r.provider != provider_id) {
        return Err(DomainError::AlreadyExists);
    }
    Ok(Event::TestResultPosted {
        test,
        provider: provider_id,
        positive,
        // Rounded up to the hour, like claims: the log keeps no finer time.
        expires_at: (now + TEST_RESULT_LIFETIME_SECONDS).div_ceil(3600) * 3600,
    })
}

/// The one upload a positive result allows, while its provider is active.
pub fn use_result(
    test: Digest,
    result: Option<&TestResult>,
    provider: Option<&Provider>,
    now: UnixSeconds,
) -> Result<Event, DomainError> {
    result
        .filter(|r| r.positive && !r.used && now < r.expires_at)
        .ok_or(DomainError::NoPositiveResult)?;
    if provider.is_none_or(|p| !p.active()) {
        return Err(DomainError::ProviderSuspended);
    }
    Ok(Event::TestResultUsed { test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Region;

    const NOW: u64 = 1_800_000_000;

    fn raw(byte: u8, days_ago: u32) -> RawKey {
        let today = (NOW / 600) as u32 / 144 * 144;
        RawKey {
            key_data: vec![byte; 16],
            rolling_start: i64::from(today - days_ago * 144),
            rolling_period: Some(144),
            transmission_risk: Some(4),
        }
    }

    fn claim(budget: u32) -> Claim {
        Claim {
            provider: ProviderId([1; 8]),
            region: Region::try_from("DE".to_owned()).expect("region"),
            expires_at: NOW + 10,
            budget_remaining: budget,
            credential: Credential::UploadToken {
                token_hash: Digest([0; 32]),
            },
        }
    }

    fn provider() -> Provider {
        Provider {
            name: "Lab".into(),
            region: Region::try_from("DE".to_owned()).expect("region"),
            token_hash: Digest([2; 32]),
            suspended: false,
            revoked: false,
        }
    }

    #[test]
    fn validation_order_and_limits() {
        assert_eq!(validate_keys(&[], NOW), Err(DomainError::NoKeys));
        let many: Vec<RawKey> = (0..29).map(|i| raw(i, 0)).collect();
        assert_eq!(
            validate_keys(&many, NOW),
            Err(DomainError::TooManyKeysInRequest(29))
        );
        let mut bad = raw(1, 0);
        bad.rolling_period = Some(0);
        bad.key_data = vec![1; 15];
        // Rolling period is checked before key data, as COVID Shield does.
        assert_eq!(
            validate_keys(&[raw(2, 0), bad], NOW),
            Err(DomainError::InvalidKey {
                index: 1,
                problem: KeyProblem::RollingPeriod
            })
        );
        assert_eq!(
            validate_keys(&[raw(1, 0), raw(2, 15)], NOW),
            Err(DomainError::KeysSpanTooLong)
        );
        assert!(validate_keys(&[raw(1, 0), raw(2, 14)], NOW).is_ok());
        let mut skewed = raw(3, 0);
        skewed.rolling_start = i64::from((NOW / 600) as u32 + CLOCK_SKEW_INTERVALS);
        assert!(
            validate_keys(&[skewed.clone()], NOW).is_ok(),
            "an hour of clock skew is fine"
        );
        let mut future = skewed;
        future.rolling_start += 1;
        assert!(matches!(
            validate_keys(&[future], NOW),
            Err(DomainError::KeyFromFuture { index: 0, .. })
        ));
    }

    #[test]
    fn budget_is_spent_only_on_new_keys() {
        let keys =
            validate_keys(&[raw(1, 0), raw(2, 1), raw(2, 1), raw(3, 2)], NOW).expect("valid");
        let stored = |k: &KeyData| k.0[0] == 3;
        let (_, outcome) = submit(
            ClaimId([1; 16]),
            Some(&claim(2)),
            Some(&provider()),
            keys.clone(),
            stored,
            NOW,
            TrackingId([9; 16]),
        )
        .expect("fits the budget");
        assert_eq!(
            (outcome.inserted, outcome.skipped, outcome.dropped),
            (2, 2, 0)
        );
        assert_eq!(
            submit(
                ClaimId([1; 16]),
                Some(&claim(1)),
                Some(&provider()),
                keys,
                stored,
                NOW,
                TrackingId([9; 16])
            )
            .map(|(_, o)| o),
            Err(DomainError::KeyBudgetExceeded {
                remaining: 1,
                requested: 2
            })
        );
    }

    #[test]
    fn old_keys_are_dropped_and_expired_claims_refused() {
        let old = StoredKey {
            key_data: KeyData([5; 16]),
            rolling_start: (NOW / 600) as u32 - 15 * 144,
            rolling_period: 144,
            transmission_risk: 1,
        };
        let (_, outcome) = submit(
            ClaimId([1; 16]),
            Some(&claim(43)),
            Some(&provider()),
            vec![old],
            |_| false,
            NOW,
            TrackingId([1; 16]),
        )
        .expect("accepted");
        assert_eq!((outcome.inserted, outcome.dropped), (0, 1));
        let mut expired = claim(43);
        expired.expires_at = NOW;
        assert_eq!(
            submit(
                ClaimId([1; 16]),
                Some(&expired),
                Some(&provider()),
                vec![],
                |_| false,
                NOW,
                TrackingId([1; 16])
            )
            .map(|_| ()),
            Err(DomainError::InvalidClaim)
        );
    }

    #[test]
    fn codes_expire_are_single_use_and_die_with_their_provider() {
        let policy = CodePolicy::default();
        let Event::CodeIssued {
            expires_at,
            provider: issuer,
            format,
            ..
        } = issue_code(
            ProviderId([1; 8]),
            &provider(),
            CodeFormat::Short,
            None,
            &policy,
            NOW,
            Digest([3; 32]),
        )
        .expect("issued")
        else {
            panic!("not a CodeIssued event");
        };
        assert_eq!(expires_at, NOW + 600);
        let code = Code {
            provider: issuer,
            format,
            expires_at,
            redeemed: false,
        };
        let credential = Credential::UploadToken {
            token_hash: Digest([4; 32]),
        };
        let redeem = |code: &Code, provider: &Provider, at: u64| {
            redeem_code(
                Digest([3; 32]),
                Some(code),
                Some(provider),
                at,
                ClaimId([2; 16]),
                credential.clone(),
            )
        };
        assert!(redeem(&code, &provider(), NOW + 599).is_ok());
        assert_eq!(
            redeem(&code, &provider(), NOW + 600),
            Err(DomainError::InvalidCode)
        );
        let used = Code {
            redeemed: true,
            ..code.clone()
        };
        assert_eq!(
            redeem(&used, &provider(), NOW),
            Err(DomainError::InvalidCode)
        );
        let suspended = Provider {
            suspended: true,
            ..provider()
        };
        assert_eq!(
            redeem(&code, &suspended, NOW),
            Err(DomainError::InvalidCode)
        );
        assert_eq!(
            issue_code(
                ProviderId([1; 8]),
                &suspended,
                CodeFormat::Short,
                None,
                &policy,
                NOW,
                Digest([3; 32])
            ),
            Err(DomainError::ProviderSuspended)
        );
        assert!(matches!(
            issue_code(
                ProviderId([1; 8]),
                &provider(),
                CodeFormat::Short,
                Some(601),
                &policy,
                NOW,
                Digest([3; 32])
            ),
            Err(DomainError::TtlOutOfRange { max: 600, .. })
        ));
    }
}
