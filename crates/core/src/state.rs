//! The state every projection holds, and the one function that changes it: [`State::apply`].
//!
//! Invariant: state = fold(apply, events). The stores keep the same records as tables and
//! update them from the same events; `confidant check` compares the two.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::UnixSeconds;
use crate::codes::CodeFormat;
use crate::corrections::Scope;
use crate::encounter::{Level, ResearchCell, TokenHash};
use crate::event::Event;
use crate::ids::{AdminTokenId, ClaimId, Digest, Key32, KeyData, ProviderId, Region, TrackingId};
use crate::publish::{Cursor, FileRecord, Stream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub region: Region,
    pub token_hash: Digest,
    /// Suspended providers issue no codes; their unredeemed codes and claims stop working.
    pub suspended: bool,
    /// Revoked providers are suspended for good: they cannot be reinstated.
    pub revoked: bool,
}

impl Provider {
    /// Whether the provider may issue codes and its codes and claims work.
    pub fn active(&self) -> bool {
        !self.suspended && !self.revoked
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    pub provider: ProviderId,
    pub format: CodeFormat,
    pub expires_at: UnixSeconds,
    pub redeemed: bool,
}

/// How the holder of a claim proves it at upload time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// Native API: a bearer token, stored as its keyed hash.
    UploadToken { token_hash: Digest },
    /// COVID Shield: uploads are NaCl boxes from the app key to the per-claim server key. The
    /// server's secret half is derived from the server secret and the claim id
    /// ([`crate::KeyedHasher::box_secret`]), never stored: a copy of the log cannot forge uploads.
    CovidShield {
        app_public_key: Key32,
        server_public_key: Key32,
    },
    /// Encounter tokens: one single-use nonce from a redeemed TAN, stored as its keyed hash.
    /// Such a claim uploads token hashes only, never GAEN keys.
    Nonce { nonce_hash: Digest },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub provider: ProviderId,
    pub region: Region,
    pub expires_at: UnixSeconds,
    /// New keys this claim may still upload.
    pub budget_remaining: u32,
    pub credential: Credential,
}

/// A key as stored and later published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredKey {
    pub key_data: KeyData,
    pub rolling_start: u32,
    pub rolling_period: u32,
    pub transmission_risk: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub claim: ClaimId,
    pub provider: ProviderId,
    pub region: Region,
    /// Unix hours.
    pub hour: u64,
    pub inserted: u32,
    pub skipped: u32,
    pub dropped: u32,
    /// Rolled back by an operator (alone, or with its provider's retroactive revocation).
    pub withdrawn: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub key: StoredKey,
    pub submission: TrackingId,
    /// The submission's region and hour, kept with the key: publication selects by them.
    pub region: Region,
    pub hour: u64,
    /// The withdrawal that took the key back (its serial number), if any. A withdrawn key is
    /// never published again; where it was published, the publisher revokes it.
    pub withdrawn: Option<u64>,
}

/// An upload of encounter-token hashes: with a TAN's nonce (level 0) or chained from a proven
/// encounter (level n+1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubmission {
    /// The nonce's claim; `None` for a chained upload, which a preimage authorised.
    pub claim: Option<ClaimId>,
    /// The provider behind the report: the TAN's importer, or for a chained upload the
    /// provider of the proven encounter's upload, so that revoking it reaches the chain.
    pub provider: ProviderId,
    /// Unix hours.
    pub hour: u64,
    pub level: Level,
    pub inserted: u32,
    pub skipped: u32,
    pub withdrawn: bool,
}

/// A stored token hash, published in its area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub submission: TrackingId,
    pub area: Region,
    /// UTC day of the encounter.
    pub day: u32,
    pub level: Level,
    /// The submission's hour: publication and retention select by it.
    pub hour: u64,
    /// The withdrawal that took it back (its serial number), if any.
    pub withdrawn: Option<u64>,
    /// Its preimage authorised a chained upload: it cannot do so again.
    pub proved: bool,
    /// Its preimage contributed research data: it cannot do so again.
    pub researched: bool,
}

/// A test result for confidential matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub provider: ProviderId,
    pub positive: bool,
    pub expires_at: UnixSeconds,
    /// The positive user's contact log went to the matcher (once per result).
    pub used: bool,
}

/// An operator's admin API token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    pub token_hash: Digest,
    pub scope: Scope,
    pub label: String,
    pub revoked: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub providers: BTreeMap<ProviderId, Provider>,
    pub codes: BTreeMap<Digest, Code>,
    pub claims: BTreeMap<ClaimId, Claim>,
    pub submissions: BTreeMap<TrackingId, Submission>,
    pub keys: BTreeMap<KeyData, KeyRecord>,
    pub cursors: BTreeMap<(Region, Stream), Cursor>,
    /// Live published files by path.
    pub files: BTreeMap<String, FileRecord>,
    pub admin_tokens: BTreeMap<AdminTokenId, AdminToken>,
    pub token_submissions: BTreeMap<TrackingId, TokenSubmission>,
    pub tokens: BTreeMap<TokenHash, TokenRecord>,
    /// Opt-in research data: counts per cell, kept apart from tracing data and never purged
    /// (a cell identifies no one; exports show only cells above a k-anonymity threshold).
    pub research: BTreeMap<ResearchCell, u64>,
    /// Test results by the keyed hash of their test id.
    pub test_results: BTreeMap<Digest, TestResult>,
    /// Serial number of the last withdrawal: publication streams record how far they have
    /// revoked withdrawn keys.
    pub withdrawals: u64,
}

impl State {
    /// Folds one event in. Total: an event naming something unknown (which the rules never
    /// produce) changes nothing rather than failing a replay.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ProviderRegistered {
                provider,
                name,
                region,
                token_hash,
            } => {
                self.providers.insert(
                    *provider,
                    Provider {
                        name: name.clone(),
                        region: region.clone(),
                        token_hash: *token_hash,
                        suspended: false,
                        revoked: false,
                    },
                );
            }
            Event::ProviderSuspended { provider } | Event::ProviderReinstated { provider } => {
                if let Some(p) = self.providers.get_mut(provider) {
                    p.suspended = matches!(event, Event::ProviderSuspended { .. });
                }
            }
            Event::CodeIssued {
                code_hash,
                provider,
                format,
                expires_at,
            } => {
                self.codes.insert(
                    *code_hash,
                    Code {
                        provider: *provider,
                        format: *format,
                        expires_at: *expires_at,
                        redeemed: false,
                    },
                );
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
                if let Some(code) = self.codes.get_mut(code_hash) {
                    code.redeemed = true;
                }
                self.claims.insert(
                    *claim,
                    Claim {
                        provider: *provider,
                        region: region.clone(),
                        expires_at: *expires_at,
                        budget_remaining: *key_budget,
                        credential: credential.clone(),
                    },
                );
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
                if let Some(c) = self.claims.get_mut(claim) {
                    c.budget_remaining = c.budget_remaining.saturating_sub(keys.len() as u32);
                }
                self.submissions.insert(
                    *submission,
                    Submission {
                        claim: *claim,
                        provider: *provider,
                        region: region.clone(),
                        hour: *hour,
                        inserted: keys.len() as u32,
                        skipped: *skipped,
                        dropped: *dropped,
                        withdrawn: false,
                    },
                );
                for key in keys {
                    self.keys.insert(
                        key.key_data,
                        KeyRecord {
                            key: *key,
                            submission: *submission,
                            region: region.clone(),
                            hour: *hour,
                            withdrawn: None,
                        },
                    );
                }
            }
            Event::BatchPublished {
                region,
                stream,
                start,
                end,
                held_from,
                seq,
                chain_hash,
                revised_through,
                files,
                ..
            } => {
                self.cursors.insert(
                    (region.clone(), *stream),
                    Cursor {
                        next_start: *end,
                        held_from: *held_from,
                        seq: *seq,
                        chain_hash: *chain_hash,
                        revised_through: *revised_through,
                    },
                );
                for file in files {
                    self.files.insert(
                        file.path.clone(),
                        FileRecord {
                            region: region.clone(),
                            stream: *stream,
                            start: *start,
                            end: *end,
                            seq: file.seq,
                            sha256: file.sha256,
                            bytes: file.bytes,
                        },
                    );
                }
            }
            Event::RetentionApplied {
                now,
                keys_before_hour,
                files_ending_by,
            } => {
                // The stores run the same deletions as set-based SQL; keep the two in step.
                self.codes.retain(|_, c| c.expires_at > *now);
                self.test_results.retain(|_, r| r.expires_at > *now);
                self.claims
                    .retain(|_, c| c.expires_at > *now && c.budget_remaining > 0);
                self.submissions.retain(|_, s| s.hour >= *keys_before_hour);
                self.keys.retain(|_, k| k.hour >= *keys_before_hour);
                self.token_submissions
                    .retain(|_, s| s.hour >= *keys_before_hour);
                self.tokens.retain(|_, t| t.hour >= *keys_before_hour);
                self.files.retain(|_, f| f.end > *files_ending_by);
            }
            Event::ProviderRevoked { provider } => {
                if let Some(p) = self.providers.get_mut(provider) {
                    p.revoked = true;
                }
            }
            Event::SubmissionsWithdrawn {
                submissions,
                serial,
            } => {
                let withdrawn: BTreeSet<&TrackingId> = submissions.iter().collect();
                for id in &withdrawn {
                    if let Some(s) = self.submissions.get_mut(id) {
                        s.withdrawn = true;
                    }
                }
                for record in self.keys.values_mut() {
                    if record.withdrawn.is_none() && withdrawn.contains(&record.submission) {
                        record.withdrawn = Some(*serial);
                    }
                }
                let mut tokens_withdrawn = false;
                for id in &withdrawn {
                    if let Some(s) = self.token_submissions.get_mut(id) {
                        s.withdrawn = true;
                        tokens_withdrawn = true;
                    }
                }
                if tokens_withdrawn {
                    for record in self.tokens.values_mut() {
                        if record.withdrawn.is_none() && withdrawn.contains(&record.submission) {
                            record.withdrawn = Some(*serial);
                        }
                    }
                }
                self.withdrawals = self.withdrawals.max(*serial);
            }
            Event::KeysWithdrawn { keys, serial, .. } => {
                for key in keys {
                    if let Some(record) = self.keys.get_mut(key)
                        && record.withdrawn.is_none()
                    {
                        record.withdrawn = Some(*serial);
                    }
                }
                self.withdrawals = self.withdrawals.max(*serial);
            }
            Event::CodesInvalidated { codes } => {
                for code in codes {
                    self.codes.remove(code);
                }
            }
            Event::AdminTokenCreated {
                token,
                token_hash,
                scope,
                label,
            } => {
                self.admin_tokens.insert(
                    *token,
                    AdminToken {
                        token_hash: *token_hash,
                        scope: *scope,
                        label: label.clone(),
                        revoked: false,
                    },
                );
            }
            Event::AdminTokenRevoked { token } => {
                if let Some(t) = self.admin_tokens.get_mut(token) {
                    t.revoked = true;
                }
            }
            Event::TansImported {
                provider,
                tans,
                expires_at,
            } => {
                for tan in tans {
                    self.codes.insert(
                        *tan,
                        Code {
                            provider: *provider,
                            format: CodeFormat::Tan,
                            expires_at: *expires_at,
                            redeemed: false,
                        },
                    );
                }
            }
            Event::TanRedeemed {
                code_hash,
                provider,
                region,
                expires_at,
                token_budget,
                nonces,
            } => {
                if let Some(code) = self.codes.get_mut(code_hash) {
                    code.redeemed = true;
                }
                for nonce in nonces {
                    self.claims.insert(
                        nonce.claim,
                        Claim {
                            provider: *provider,
                            region: region.clone(),
                            expires_at: *expires_at,
                            budget_remaining: *token_budget,
                            credential: Credential::Nonce {
                                nonce_hash: nonce.nonce_hash,
                            },
                        },
                    );
                }
            }
            Event::TokensSubmitted {
                submission,
                claim,
                provider,
                hour,
                level,
                tokens,
                skipped,
                proof,
            } => {
                // A nonce is single-use: its claim is spent, and retention forgets it.
                if let Some(c) = claim.and_then(|id| self.claims.get_mut(&id)) {
                    c.budget_remaining = 0;
                }
                if let Some(t) = proof.and_then(|hash| self.tokens.get_mut(&hash)) {
                    t.proved = true;
                }
                self.token_submissions.insert(
                    *submission,
                    TokenSubmission {
                        claim: *claim,
                        provider: *provider,
                        hour: *hour,
                        level: *level,
                        inserted: tokens.len() as u32,
                        skipped: *skipped,
                        withdrawn: false,
                    },
                );
                for token in tokens {
                    self.tokens.insert(
                        token.hash,
                        TokenRecord {
                            submission: *submission,
                            area: token.area.clone(),
                            day: token.day,
                            level: *level,
                            hour: *hour,
                            withdrawn: None,
                            proved: false,
                            researched: false,
                        },
                    );
                }
            }
            Event::TokensResearched { hashes, .. } => {
                for hash in hashes {
                    if let Some(t) = self.tokens.get_mut(hash) {
                        t.researched = true;
                    }
                }
            }
            Event::ResearchRecorded { cells } => {
                for cell in cells {
                    *self.research.entry(*cell).or_default() += 1;
                }
            }
            Event::TestResultPosted {
                test,
                provider,
                positive,
                expires_at,
            } => {
                self.test_results.insert(
                    *test,
                    TestResult {
                        provider: *provider,
                        positive: *positive,
                        expires_at: *expires_at,
                        used: false,
                    },
                );
            }
            Event::TestResultUsed { test } => {
                if let Some(result) = self.test_results.get_mut(test) {
                    result.used = true;
                }
            }
            // The audit trail is the log itself.
            Event::AdminAction { withdrawal, .. } => {
                if let Some(serial) = withdrawal {
                    self.withdrawals = self.withdrawals.max(*serial);
                }
            }
        }
    }

    /// The state digest: equal digests mean equal states, whichever store holds them.
    pub fn digest(&self) -> Digest {
        let mut digest = StateDigest::default();
        digest.table("providers", &self.providers);
        digest.table("codes", &self.codes);
        digest.table("claims", &self.claims);
        digest.table("submissions", &self.submissions);
        digest.table("keys", &self.keys);
        digest.table("cursors", &self.cursors);
        digest.table("files", &self.files);
        digest.table("admin_tokens", &self.admin_tokens);
        digest.table("token_submissions", &self.token_submissions);
        digest.table("tokens", &self.tokens);
        digest.table("research", &self.research);
        digest.table("test_results", &self.test_results);
        digest.finish(self.withdrawals)
    }

    pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// SHA-256 over every record of a [`State`], table by table in key order. Stores stream
/// their tables through it in primary-key order to get [`State::digest`] without loading
/// everything at once. Records are hashed in their `Debug` form: digests compare states of
/// the same version of Confidant.
#[derive(Default)]
pub struct StateDigest {
    hasher: Sha256,
    line: String,
}

impl StateDigest {
    /// Starts the next table; tables come in the order [`State::digest`] uses.
    pub fn start(&mut self, name: &str) {
        self.hasher.update(b"table ");
        self.hasher.update(name.as_bytes());
        self.hasher.update(b"\n");
    }

    /// One record; records come in ascending key order.
    pub fn record(&mut self, key: &impl std::fmt::Debug, value: &impl std::fmt::Debug) {
        use std::fmt::Write as _;
        self.line.clear();
        let _ = writeln!(self.line, "{key:?}={value:?}");
        self.hasher.update(self.line.as_bytes());
    }

    pub fn table<K: std::fmt::Debug, V: std::fmt::Debug>(
        &mut self,
        name: &str,
        rows: &BTreeMap<K, V>,
    ) {
        self.start(name);
        for (key, value) in rows {
            self.record(key, value);
        }
    }

    /// The digest, after the last table and the withdrawal counter.
    pub fn finish(mut self, withdrawals: u64) -> Digest {
        self.hasher
            .update(format!("withdrawals {withdrawals}\n").as_bytes());
        Digest(self.hasher.finalize().into())
    }
}
