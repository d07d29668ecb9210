//! Corrections: what operators do after the fact (suspend, revoke, withdraw, de-register,
//! invalidate, manage admin tokens), decided like every other rule and always audited.
//!
//! [`decide`] takes the records a command touches (the store loads them), the actor, the time
//! and the reason, and returns the effect events followed by one [`Event::AdminAction`], or a
//! typed refusal. A command that would change nothing records nothing.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::UnixSeconds;
use crate::event::Event;
use crate::ids::{AdminTokenId, Digest, KeyData, ProviderId, Region, TrackingId};
use crate::rules::DomainError;
use crate::state::State;

/// What an admin token may do; each scope includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Look: providers, submissions, the audit trail.
    Read,
    /// Correct: suspend and reinstate providers, withdraw submissions, de-register keys,
    /// invalidate codes.
    Operate,
    /// Govern: register and revoke providers, create and revoke admin tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }

    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// Who acted: an admin token, or someone with direct access to the database on the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    Console,
    Token(AdminTokenId),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Console => f.write_str("console"),
            Actor::Token(id) => write!(f, "token:{id}"),
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "console" {
            return Ok(Actor::Console);
        }
        text.strip_prefix("token:")
            .and_then(AdminTokenId::from_hex)
            .map(Actor::Token)
            .ok_or_else(|| serde::de::Error::custom("an actor is `console` or `token:<16 hex>`"))
    }
}

/// An operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    RegisterProvider {
        provider: ProviderId,
        name: String,
        region: Region,
        token_hash: Digest,
    },
    SuspendProvider(ProviderId),
    ReinstateProvider(ProviderId),
    /// Suspends for good; with `withdraw_since_hour`, also withdraws the provider's
    /// submissions from that hour on (0: all of them).
    RevokeProvider {
        provider: ProviderId,
        withdraw_since_hour: Option<u64>,
    },
    WithdrawSubmission(TrackingId),
    DeregisterKeys(Vec<KeyData>),
    InvalidateCode(Digest),
    /// Every unredeemed code of the provider.
    InvalidateProviderCodes(ProviderId),
    CreateToken {
        token: AdminTokenId,
        token_hash: Digest,
        scope: Scope,
        label: String,
    },
    RevokeToken(AdminTokenId),
    /// A health authority's TAN list (keyed hashes), tied to `provider`, valid until
    /// `expires_at`.
    ImportTans {
        provider: ProviderId,
        tans: Vec<Digest>,
        expires_at: UnixSeconds,
    },
}

impl Command {
    /// The scope an actor needs for this command.
    pub fn scope(&self) -> Scope {
        match self {
            Command::RegisterProvider { .. }
            | Command::RevokeProvider { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken(_) => Scope::Admin,
            _ => Scope::Operate,
        }
    }

    /// The audit trail's name for it.
    pub fn action(&self) -> &'static str {
        match self {
            Command::RegisterProvider { .. } => "provider.register",
            Command::SuspendProvider(_) => "provider.suspend",
            Command::ReinstateProvider(_) => "provider.reinstate",
            Command::RevokeProvider { .. } => "provider.revoke",
            Command::WithdrawSubmission(_) => "submission.withdraw",
            Command::DeregisterKeys(_) => "keys.deregister",
            Command::InvalidateCode(_) => "code.invalidate",
            Command::InvalidateProviderCodes(_) => "provider.invalidate_codes",
            Command::CreateToken { .. } => "token.create",
            Command::RevokeToken(_) => "token.revoke",
            Command::ImportTans { .. } => "tans.import",
        }
    }
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// False when the command found nothing to change (and recorded nothing).
    pub changed: bool,
    pub submissions_withdrawn: u32,
    pub keys_withdrawn: u32,
    /// Encounter-token hashes withdrawn with their submissions.
    pub tokens_withdrawn: u32,
    pub tans_imported: u32,
    /// TANs of the list already stored (or repeated in it).
    pub tans_skipped: u32,
    pub codes_invalidated: u32,
    /// De-registration: requested keys the store does not hold (never submitted, or already
    /// forgotten by retention).
    pub unknown_keys: u32,
    /// De-registration: requested keys that were already withdrawn.
    pub already_withdrawn: u32,
}

impl Outcome {
    fn summary(&self, command: &Command) -> String {
        let mut parts = Vec::new();
        if self.submissions_withdrawn > 0 {
            parts.push(format!(
                "withdrew {} submission(s)",
                self.submissions_withdrawn
            ));
        }
        if self.keys_withdrawn > 0 {
            parts.push(format!("withdrew {} key(s)", self.keys_withdrawn));
        }
        if self.tokens_withdrawn > 0 {
            parts.push(format!("withdrew {} token hash(es)", self.tokens_withdrawn));
        }
        if self.tans_imported > 0 || self.tans_skipped > 0 {
            parts.push(format!(
                "imported {} TAN(s), {} already known",
                self.tans_imported, self.tans_skipped
            ));
        }
        if self.codes_invalidated > 0 {
            parts.push(format!("invalidated {} code(s)", self.codes_invalidated));
        }
        if self.unknown_keys > 0 {
            parts.push(format!("{} key(s) unknown", self.unknown_keys));
        }
        if parts.is_empty() {
            parts.push(
                match command {
                    Command::RegisterProvider { .. } => "registered",
                    Command::SuspendProvider(_) => "suspended",
                    Command::ReinstateProvider(_) => "reinstated",
                    Command::RevokeProvider { .. } => "revoked",
                    Command::CreateToken { .. } => "created",
                    Command::RevokeToken(_) => "revoked",
                    _ => "done",
                }
                .to_owned(),
            );
        }
        parts.join(", ")
    }
}

/// Longest reason kept in the audit trail.
pub const MAX_REASON_CHARS: usize = 500;

/// Decides `command` against the records it touches in `state` (for a revocation, the
/// provider's submissions since the hour and their keys; for a withdrawal, the submission's
/// keys). Returns what it did and the events to record: the effects, then the audit entry.
pub fn decide(
    state: &State,
    command: &Command,
    actor: Actor,
    now: UnixSeconds,
    reason: &str,
) -> Result<(Outcome, Vec<Event>), DomainError> {
    // The limit counts what was sent, so a client can check it before sending.
    if reason.chars().count() > MAX_REASON_CHARS || reason.trim().is_empty() {
        return Err(DomainError::ReasonRequired);
    }
    let reason = reason.trim();
    let mut outcome = Outcome {
        changed: true,
        ..Outcome::default()
    };
    let serial = state.withdrawals + 1;
    let (target, effects) = match command {
        Command::RegisterProvider {
            provider,
            name,
            region,
            token_hash,
        } => {
            if state.providers.contains_key(provider)
                || state
                    .providers
                    .values()
                    .any(|p| p.token_hash == *token_hash)
            {
                return Err(DomainError::AlreadyExists);
            }
            (
                provider.to_hex(),
                vec![Event::ProviderRegistered {
                    provider: *provider,
                    name: name.clone(),
                    region: region.clone(),
                    token_hash: *token_hash,
                }],
            )
        }
        Command::SuspendProvider(id) | Command::ReinstateProvider(id) => {
            let provider = state.providers.get(id).ok_or(DomainError::NoSuchProvider)?;
            let suspend = matches!(command, Command::SuspendProvider(_));
            if provider.revoked && !suspend {
                return Err(DomainError::ProviderRevoked);
            }
            let effects = if provider.suspended == suspend {
                Vec::new()
            } else if suspend {
                vec![Event::ProviderSuspended { provider: *id }]
            } else {
                vec![Event::ProviderReinstated { provider: *id }]
            };
            (id.to_hex(), effects)
        }
        Command::RevokeProvider {
            provider: id,
            withdraw_since_hour,
        } => {
            let provider = state.providers.get(id).ok_or(DomainError::NoSuchProvider)?;
            let mut effects = Vec::new();
            if !provider.revoked {
                effects.push(Event::ProviderRevoked { provider: *id });
            }
            if let Some(since) = withdraw_since_hour {
                let mut submissions: Vec<TrackingId> = state
                    .submissions
                    .iter()
                    .filter(|(_, s)| s.provider == *id && s.hour >= *since && !s.withdrawn)
                    .map(|(tracking_id, _)| *tracking_id)
                    .collect();
                submissions.extend(
                    state
                        .token_submissions
                        .iter()
                        .filter(|(_, s)| s.provider == *id && s.hour >= *since && !s.withdrawn)
                        .map(|(tracking_id, _)| *tracking_id),
                );
                submissions.sort_unstable();
                if !submissions.is_empty() {
                    outcome.submissions_withdrawn = submissions.len() as u32;
                    outcome.keys_withdrawn = live_keys_of(state, &submissions);
                    outcome.tokens_withdrawn = live_tokens_of(state, &submissions);
                    effects.push(Event::SubmissionsWithdrawn {
                        submissions,
                        serial,
                    });
                }
            }
            (id.to_hex(), effects)
        }
        Command::WithdrawSubmission(id) => {
            let withdrawn = match (state.submissions.get(id), state.token_submissions.get(id)) {
                (Some(submission), _) => submission.withdrawn,
                (None, Some(submission)) => submission.withdrawn,
                (None, None) => return Err(DomainError::NoSuchSubmission),
            };
            let effects = if withdrawn {
                Vec::new()
            } else {
                outcome.submissions_withdrawn = 1;
                outcome.keys_withdrawn = live_keys_of(state, &[*id]);
                outcome.tokens_withdrawn = live_tokens_of(state, &[*id]);
                vec![Event::SubmissionsWithdrawn {
                    submissions: vec![*id],
                    serial,
                }]
            };
            (id.to_hex(), effects)
        }
        Command::DeregisterKeys(keys) => {
            let mut withdrawn = BTreeSet::new();
            let mut hour = 0;
            for key in keys {
                match state.keys.get(key) {
                    None => outcome.unknown_keys += 1,
                    Some(record) if record.withdrawn.is_some() => outcome.already_withdrawn += 1,
                    Some(record) => {
                        if withdrawn.insert(*key) {
                            hour = hour.max(record.hour);
                        }
                    }
                }
            }
            if withdrawn.is_empty() && outcome.already_withdrawn == 0 {
                return Err(DomainError::NoSuchKeys);
            }
            outcome.keys_withdrawn = withdrawn.len() as u32;
            let effects = if withdrawn.is_empty() {
                Vec::new()
            } else {
                vec![Event::KeysWithdrawn {
                    keys: withdrawn.into_iter().collect(),
                    hour,
                    serial,
                }]
            };
            // The audit trail keeps no key material: a count only.
            (format!("{} key(s)", keys.len()), effects)
        }
        Command::InvalidateCode(hash) => {
            let code = state.codes.get(hash).ok_or(DomainError::NoSuchCode)?;
            if code.redeemed {
                return Err(DomainError::CodeAlreadyRedeemed);
            }
            outcome.codes_invalidated = 1;
            (
                format!("a code of provider {}", code.provider),
                vec![Event::CodesInvalidated { codes: vec![*hash] }],
            )
        }
        Command::InvalidateProviderCodes(id) => {
            if !state.providers.contains_key(id) {
                return Err(DomainError::NoSuchProvider);
            }
            let codes: Vec<Digest> = state
                .codes
                .iter()
                .filter(|(_, c)| c.provider == *id && !c.redeemed && c.expires_at > now)
                .map(|(hash, _)| *hash)
                .collect();
            outcome.codes_invalidated = codes.len() as u32;
            let effects = if codes.is_empty() {
                Vec::new()
            } else {
                vec![Event::CodesInvalidated { codes }]
            };
            (id.to_hex(), effects)
        }
        Command::CreateToken {
            token,
            token_hash,
            scope,
            label,
        } => {
            if state.admin_tokens.contains_key(token)
                || state
                    .admin_tokens
                    .values()
                    .any(|t| t.token_hash == *token_hash)
            {
                return Err(DomainError::AlreadyExists);
            }
            (
                format!("{token} ({} scope, {label:?})", scope.name()),
                vec![Event::AdminTokenCreated {
                    token: *token,
                    token_hash: *token_hash,
                    scope: *scope,
                    label: label.clone(),
                }],
            )
        }
        Command::ImportTans {
            provider,
            tans,
            expires_at,
        } => {
            let (event, skipped) = crate::rules::import_tans(
                *provider,
                state.providers.get(provider),
                tans,
                |tan| state.codes.contains_key(tan),
                *expires_at,
                now,
            )?;
            outcome.tans_skipped = skipped;
            if let Some(Event::TansImported { tans, .. }) = &event {
                outcome.tans_imported = tans.len() as u32;
            }
            (provider.to_hex(), event.into_iter().collect())
        }
        Command::RevokeToken(token) => {
            let existing = state
                .admin_tokens
                .get(token)
                .ok_or(DomainError::NoSuchAdminToken)?;
            let effects = if existing.revoked {
                Vec::new()
            } else {
                vec![Event::AdminTokenRevoked { token: *token }]
            };
            (token.to_hex(), effects)
        }
    };
    if effects.is_empty() {
        outcome.changed = false;
        return Ok((outcome, Vec::new()));
    }
    let withdrew = effects.iter().any(|e| {
        matches!(
            e,
            Event::SubmissionsWithdrawn { .. } | Event::KeysWithdrawn { .. }
        )
    });
    let audit = Event::AdminAction {
        actor,
        at: now,
        action: command.action().to_owned(),
        target,
        reason: reason.to_owned(),
        outcome: outcome.summary(command),
        withdrawal: withdrew.then_some(serial),
    };
    let mut events = effects;
    events.push(audit);
    Ok((outcome, events))
}

fn live_keys_of(state: &State, submissions: &[TrackingId]) -> u32 {
    let wanted: BTreeSet<&TrackingId> = submissions.iter().collect();
    state
        .keys
        .values()
        .filter(|k| k.withdrawn.is_none() && wanted.contains(&k.submission))
        .count() as u32
}

fn live_tokens_of(state: &State, submissions: &[TrackingId]) -> u32 {
    let wanted: BTreeSet<&TrackingId> = submissions.iter().collect();
    if !submissions
        .iter()
        .any(|id| state.token_submissions.contains_key(id))
    {
        return 0;
    }
    state
        .tokens
        .values()
        .filter(|t| t.withdrawn.is_none() && wanted.contains(&t.submission))
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Code, KeyRecord, Provider, StoredKey, Submission};
    use crate::{ClaimId, CodeFormat};

    const NOW: UnixSeconds = 1_700_000_000;

    fn region() -> Region {
        Region::try_from("DE".to_owned()).expect("region")
    }

    /// Two providers, each with submissions at hours 10 and 20 of two keys each.
    fn state() -> State {
        let mut state = State::default();
        for p in [1u8, 2] {
            state.apply(&Event::ProviderRegistered {
                provider: ProviderId([p; 8]),
                name: format!("Lab {p}"),
                region: region(),
                token_hash: Digest([p; 32]),
            });
            for hour in [10u8, 20] {
                let submission = TrackingId([p * 100 + hour; 16]);
                state.submissions.insert(
                    submission,
                    Submission {
                        claim: ClaimId([p; 16]),
                        provider: ProviderId([p; 8]),
                        region: region(),
                        hour: u64::from(hour),
                        inserted: 2,
                        skipped: 0,
                        dropped: 0,
                        withdrawn: false,
                    },
                );
                for k in 0..2u8 {
                    let key_data = KeyData([p * 100 + hour + k; 16]);
                    state.keys.insert(
                        key_data,
                        KeyRecord {
                            key: StoredKey {
                                key_data,
                                rolling_start: 2_800_000,
                                rolling_period: 144,
                                transmission_risk: 0,
                            },
                            submission,
                            region: region(),
                            hour: u64::from(hour),
                            withdrawn: None,
                        },
                    );
                }
            }
        }
        state
    }

    fn run(state: &mut State, command: Command) -> Result<Outcome, DomainError> {
        let (outcome, events) = decide(state, &command, Actor::Console, NOW, "test")?;
        for event in &events {
            state.apply(event);
        }
        Ok(outcome)
    }

    #[test]
    fn retroactive_revocation_withdraws_exactly_that_providers_reports_since_the_hour() {
        let mut state = state();
        let outcome = run(
            &mut state,
            Command::RevokeProvider {
                provider: ProviderId([1; 8]),
                withdraw_since_hour: Some(15),
            },
        )
        .expect("revoked");
        assert_eq!(
            (outcome.submissions_withdrawn, outcome.keys_withdrawn),
            (1, 2)
        );
        let withdrawn: Vec<TrackingId> = state
            .submissions
            .iter()
            .filter(|(_, s)| s.withdrawn)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(withdrawn, [TrackingId([120; 16])]);
        let withdrawn_keys = state
            .keys
            .values()
            .filter(|k| k.withdrawn == Some(1))
            .count();
        assert_eq!(withdrawn_keys, 2);
        assert!(state.providers[&ProviderId([1; 8])].revoked);
        assert!(!state.providers[&ProviderId([2; 8])].revoked);
        assert_eq!(
            run(&mut state, Command::ReinstateProvider(ProviderId([1; 8]))),
            Err(DomainError::ProviderRevoked)
        );
    }

    #[test]
    fn withdrawals_are_numbered_and_repeats_change_nothing() {
        let mut state = state();
        run(
            &mut state,
            Command::WithdrawSubmission(TrackingId([110; 16])),
        )
        .expect("withdrawn");
        let again = run(
            &mut state,
            Command::WithdrawSubmission(TrackingId([110; 16])),
        )
        .expect("no-op");
        assert!(!again.changed);
        let outcome = run(
            &mut state,
            Command::DeregisterKeys(vec![
                KeyData([220; 16]),
                KeyData([110; 16]),
                KeyData([9; 16]),
            ]),
        )
        .expect("deregistered");
        assert_eq!(
            (
                outcome.keys_withdrawn,
                outcome.already_withdrawn,
                outcome.unknown_keys
            ),
            (1, 1, 1)
        );
        assert_eq!(state.withdrawals, 2);
        // The counter survives the purge of the key-carrying events: the audit entries hold it.
        let (_, events) = decide(
            &state,
            &Command::DeregisterKeys(vec![KeyData([221; 16])]),
            Actor::Console,
            NOW,
            "again",
        )
        .expect("decided");
        let audit_only: Vec<&Event> = events
            .iter()
            .filter(|e| e.key_material_hour().is_none())
            .collect();
        assert_eq!(State::replay(audit_only).withdrawals, 3);
        assert_eq!(state.keys[&KeyData([220; 16])].withdrawn, Some(2));
        assert_eq!(state.keys[&KeyData([110; 16])].withdrawn, Some(1));
        assert_eq!(
            run(&mut state, Command::DeregisterKeys(vec![KeyData([9; 16])])),
            Err(DomainError::NoSuchKeys)
        );
    }

    #[test]
    fn every_change_is_audited_without_key_material() {
        let state = state();
        let (_, events) = decide(
            &state,
            &Command::DeregisterKeys(vec![KeyData([110; 16])]),
            Actor::Token(AdminTokenId([7; 8])),
            NOW,
            "  wrong upload  ",
        )
        .expect("decided");
        let Some(Event::AdminAction {
            actor,
            action,
            target,
            reason,
            ..
        }) = events.last()
        else {
            panic!("no audit entry: {events:?}");
        };
        assert_eq!(*actor, Actor::Token(AdminTokenId([7; 8])));
        assert_eq!(
            (action.as_str(), reason.as_str()),
            ("keys.deregister", "wrong upload")
        );
        assert!(!target.contains(&KeyData([110; 16]).to_hex()));
        assert_eq!(
            decide(
                &state,
                &Command::SuspendProvider(ProviderId([1; 8])),
                Actor::Console,
                NOW,
                " "
            ),
            Err(DomainError::ReasonRequired)
        );
    }

    #[test]
    fn invalidating_codes_removes_only_unredeemed_live_ones() {
        let mut state = state();
        for (n, redeemed, expires_at) in
            [(1u8, false, NOW + 60), (2, true, NOW + 60), (3, false, NOW)]
        {
            state.codes.insert(
                Digest([n; 32]),
                Code {
                    provider: ProviderId([1; 8]),
                    format: CodeFormat::Short,
                    expires_at,
                    redeemed,
                },
            );
        }
        let outcome = run(
            &mut state,
            Command::InvalidateProviderCodes(ProviderId([1; 8])),
        )
        .expect("done");
        assert_eq!(outcome.codes_invalidated, 1);
        assert!(!state.codes.contains_key(&Digest([1; 32])));
        assert_eq!(
            run(&mut state, Command::InvalidateCode(Digest([2; 32]))),
            Err(DomainError::CodeAlreadyRedeemed)
        );
    }

    #[test]
    fn scopes_nest_and_actors_round_trip() {
        assert!(Scope::Admin.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Operate));
        assert_eq!(
            Command::WithdrawSubmission(TrackingId([0; 16])).scope(),
            Scope::Operate
        );
        for actor in [Actor::Console, Actor::Token(AdminTokenId([0xab; 8]))] {
            let json = serde_json::to_string(&actor).expect("serialises");
            assert_eq!(serde_json::from_str::<Actor>(&json).expect("parses"), actor);
        }
        let provider = Provider {
            name: "x".into(),
            region: region(),
            token_hash: Digest([0; 32]),
            suspended: false,
            revoked: true,
        };
        assert!(!provider.active());
    }
}
