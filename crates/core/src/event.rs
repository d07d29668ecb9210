//! Events: the log is the source of truth, and this is its persistence format, forever.
//!
//! Each event is stored as one JSON object `{"v":1,"type":…,…}`. The version is explicit so an
//! old log stays readable after the format grows: a new field gets a default, a changed meaning
//! gets a new version number handled in [`Event::decode`].

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;
use crate::codes::CodeFormat;
use crate::corrections::{Actor, Scope};
use crate::encounter::{Level, ResearchCell, TokenHash, UploadedToken};
use crate::ids::{AdminTokenId, ClaimId, Digest, KeyData, ProviderId, Region, TrackingId};
use crate::publish::{PublishedFile, Stream};
use crate::state::{Credential, StoredKey};

pub const EVENT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ProviderRegistered {
        provider: ProviderId,
        name: String,
        region: Region,
        /// Keyed hash of the provider's API token; the token itself is shown once.
        token_hash: Digest,
    },
    ProviderSuspended {
        provider: ProviderId,
    },
    ProviderReinstated {
        provider: ProviderId,
    },
    CodeIssued {
        code_hash: Digest,
        provider: ProviderId,
        format: CodeFormat,
        expires_at: UnixSeconds,
    },
    CodeRedeemed {
        code_hash: Digest,
        claim: ClaimId,
        provider: ProviderId,
        region: Region,
        expires_at: UnixSeconds,
        key_budget: u32,
        credential: Credential,
    },
    KeysSubmitted {
        submission: TrackingId,
        claim: ClaimId,
        provider: ProviderId,
        region: Region,
        /// Unix hours: the submission time is kept to the hour only.
        hour: u64,
        keys: Vec<StoredKey>,
        /// Keys already stored, skipped without counting against the budget.
        skipped: u32,
        /// Keys older than the retention window, dropped with a warning.
        dropped: u32,
    },
    /// A stream's window was published (possibly as an empty file while keys are held back).
    BatchPublished {
        region: Region,
        stream: Stream,
        start: UnixSeconds,
        end: UnixSeconds,
        /// Keys available from here until `end` were candidates for this window.
        keys_from: UnixSeconds,
        /// Where the next window's candidates start: `end`, or `keys_from` when held back.
        held_from: UnixSeconds,
        real_keys: u32,
        padding_keys: u32,
        /// The stream's sequence number after this window (feed deltas); 0 otherwise.
        seq: u64,
        /// SHA-256 of the stream's last chained file (the feed delta); zero otherwise.
        chain_hash: Digest,
        /// Withdrawals up to this serial number are now revoked in the stream.
        #[serde(default)]
        revised_through: u64,
        /// Withdrawn keys revoked by this window (`revised_keys` in exports, removals in the
        /// feed).
        #[serde(default)]
        revoked_keys: u32,
        files: Vec<PublishedFile>,
    },
    /// Retention ran at `now`: expired codes and claims, spent claims, keys and submissions
    /// from before `keys_before_hour`, and files whose window ended by `files_ending_by` are
    /// forgotten.
    RetentionApplied {
        now: UnixSeconds,
        keys_before_hour: u64,
        files_ending_by: UnixSeconds,
    },
    /// The provider is suspended for good (its past reports stand unless withdrawn).
    ProviderRevoked {
        provider: ProviderId,
    },
    /// Submissions rolled back, with all their keys.
    SubmissionsWithdrawn {
        submissions: Vec<TrackingId>,
        /// This withdrawal's serial number (one more than the last).
        serial: u64,
    },
    /// Individual keys de-registered.
    KeysWithdrawn {
        keys: Vec<KeyData>,
        /// The latest submission hour of the keys: the event is key material, purged with them.
        hour: u64,
        serial: u64,
    },
    /// Unredeemed codes that will no longer work.
    CodesInvalidated {
        codes: Vec<Digest>,
    },
    AdminTokenCreated {
        token: AdminTokenId,
        /// Keyed hash of the secret; the secret itself is shown once.
        token_hash: Digest,
        scope: Scope,
        label: String,
    },
    AdminTokenRevoked {
        token: AdminTokenId,
    },
    /// A health authority's list of TANs: codes of external origin, stored as keyed hashes
    /// and tied to the importing provider.
    TansImported {
        provider: ProviderId,
        tans: Vec<Digest>,
        expires_at: UnixSeconds,
    },
    /// A TAN exchanged for single-use upload nonces, one claim each.
    TanRedeemed {
        code_hash: Digest,
        provider: ProviderId,
        region: Region,
        expires_at: UnixSeconds,
        /// Tokens each nonce may upload.
        token_budget: u32,
        nonces: Vec<NonceClaim>,
    },
    /// Encounter-token hashes accepted: with a nonce (`claim`) at level 0, or chained at
    /// `level` = n + 1 by revealing the preimage of the published level-n hash `proof`.
    TokensSubmitted {
        submission: TrackingId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<ClaimId>,
        provider: ProviderId,
        /// Unix hours.
        hour: u64,
        level: Level,
        tokens: Vec<UploadedToken>,
        /// Hashes already stored (or repeated), skipped.
        skipped: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<TokenHash>,
    },
    /// Proven encounters whose research data was recorded: each preimage contributes once.
    /// Key material (purged with the tokens); the data itself is in `ResearchRecorded`.
    TokensResearched {
        hashes: Vec<TokenHash>,
        /// The latest submission hour of the tokens.
        hour: u64,
    },
    /// Opt-in research records, without identifiers, in random order. Never purged.
    ResearchRecorded {
        cells: Vec<ResearchCell>,
    },
    /// A provider's test result for confidential matching, under the keyed hash of the test id
    /// the phone chose (SHA-256 of its secret). A later post for the same test replaces it.
    TestResultPosted {
        test: Digest,
        provider: ProviderId,
        positive: bool,
        expires_at: UnixSeconds,
    },
    /// A positive result's one upload to the confidential matcher was forwarded.
    TestResultUsed {
        test: Digest,
    },
    /// Who did what, when and why: the audit trail. Recorded with every operator action,
    /// and never purged (it holds no personal data).
    AdminAction {
        actor: Actor,
        at: UnixSeconds,
        /// A stable name, e.g. `provider.revoke`.
        action: String,
        /// What it acted on: a provider id, a tracking ID, a key count…
        target: String,
        reason: String,
        /// What it did, e.g. "withdrew 3 submissions (41 keys)".
        outcome: String,
        /// The serial number of the withdrawal it made, if any. Kept here as well because
        /// this event is never purged: the counter survives the purge of key material.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        withdrawal: Option<u64>,
    },
}

/// One nonce of a redeemed TAN: its claim and the keyed hash of the nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceClaim {
    pub claim: ClaimId,
    pub nonce_hash: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event is not valid JSON of a known type: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("event version {0} is newer than this build understands ({EVENT_VERSION})")]
    UnknownVersion(u32),
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u32,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

impl Event {
    pub fn encode(&self) -> String {
        serde_json::to_string(&Envelope {
            v: EVENT_VERSION,
            event: self,
        })
        .expect("events always serialise")
    }

    pub fn decode(text: &str) -> Result<Self, EventDecodeError> {
        let VersionOnly { v } = serde_json::from_str(text)?;
        if v != EVENT_VERSION {
            return Err(EventDecodeError::UnknownVersion(v));
        }
        Ok(serde_json::from_str(text)?)
    }

    /// The submission hour of the key material this event carries, which decides when it is
    /// purged from the log.
    pub fn key_material_hour(&self) -> Option<u64> {
        match self {
            Self::KeysSubmitted { hour, .. }
            | Self::KeysWithdrawn { hour, .. }
            | Self::TokensSubmitted { hour, .. }
            | Self::TokensResearched { hour, .. } => Some(*hour),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProviderRegistered { .. } => "provider_registered",
            Self::ProviderSuspended { .. } => "provider_suspended",
            Self::ProviderReinstated { .. } => "provider_reinstated",
            Self::CodeIssued { .. } => "code_issued",
            Self::CodeRedeemed { .. } => "code_redeemed",
            Self::KeysSubmitted { .. } => "keys_submitted",
            Self::BatchPublished { .. } => "batch_published",
            Self::RetentionApplied { .. } => "retention_applied",
            Self::ProviderRevoked { .. } => "provider_revoked",
            Self::SubmissionsWithdrawn { .. } => "submissions_withdrawn",
            Self::KeysWithdrawn { .. } => "keys_withdrawn",
            Self::CodesInvalidated { .. } => "codes_invalidated",
            Self::AdminTokenCreated { .. } => "admin_token_created",
            Self::AdminTokenRevoked { .. } => "admin_token_revoked",
            Self::AdminAction { .. } => "admin_action",
            Self::TansImported { .. } => "tans_imported",
            Self::TanRedeemed { .. } => "tan_redeemed",
            Self::TokensSubmitted { .. } => "tokens_submitted",
            Self::TokensResearched { .. } => "tokens_researched",
            Self::ResearchRecorded { .. } => "research_recorded",
            Self::TestResultPosted { .. } => "test_result_posted",
            Self::TestResultUsed { .. } => "test_result_used",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_versioned_and_round_trips() {
        let event = Event::ProviderSuspended {
            provider: ProviderId([1, 2, 3, 4, 5, 6, 7, 8]),
        };
        let text = event.encode();
        assert_eq!(
            text,
            r#"{"v":1,"type":"provider_suspended","provider":"0102030405060708"}"#
        );
        assert_eq!(Event::decode(&text).expect("decodes"), event);
        assert!(matches!(
            Event::decode(&text.replace(r#""v":1"#, r#""v":2"#)),
            Err(EventDecodeError::UnknownVersion(2))
        ));
        assert!(Event::decode(r#"{"v":1,"type":"nope"}"#).is_err());
    }
}
