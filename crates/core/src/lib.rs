//! Confidant's domain rules, with no I/O: events, the state they fold into, and the decisions
//! that turn a request plus the relevant state into new events.
//!
//! The store appends events and keeps projections; it asks this crate what may happen
//! (`rules`) and how state changes (`state::State::apply`). Time always comes in as an
//! argument (`UnixSeconds`), so every rule is testable with any clock.

pub mod codes;
pub mod confidential;
pub mod corrections;
pub mod covidshield_wire;
pub mod encounter;
pub mod event;
pub mod feed;
pub mod gcs;
pub mod ids;
pub mod logfile;
pub mod publish;
pub mod rules;
pub mod state;
pub mod tokenfile;

pub use codes::{CodeFormat, CodePolicy, KeyedHasher, OneTimeCode};
pub use corrections::{Actor, Scope};
pub use event::{Event, EventDecodeError};
pub use ids::{AdminTokenId, ClaimId, Digest, Key32, KeyData, ProviderId, Region, TrackingId};
pub use publish::{
    Cursor, FileRecord, PublicationPolicy, PublishedFile, RetentionPolicy, SmallBatch, Stream,
};
pub use rules::{DomainError, RawKey, SubmissionOutcome};
pub use state::{AdminToken, Claim, Code, Credential, Provider, State, StoredKey, Submission};

/// Seconds since 1970-01-01 UTC.
pub type UnixSeconds = u64;

/// A submission's time, kept only to the hour (privacy: no finer timestamps at rest).
pub fn hour_of(now: UnixSeconds) -> u64 {
    now / 3600
}
