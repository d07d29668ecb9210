//! The phone side of Confidant as a library, usable by a real app written in Rust.
//!
//! - [`schedule`]: the phone's daily Temporary Exposure Keys and what it broadcasts.
//! - [`observations`]: the RPIs it heard, kept 14 days, saved to a file.
//! - [`download`]: the native feed and the GAEN export streams, every file verified against a
//!   pinned public key, with the position kept across restarts.
//! - [`matching`] and [`risk`]: which published keys explain what the phone heard, scored with
//!   the GAEN v1 exposure configuration the server publishes.
//! - [`upload`]: the provider's code, the native `/v1` upload and the COVID Shield upload.
//! - [`encounter`]: the encounter-token protocol: ephemeral X25519 keys per 15 minutes, their
//!   broadcast slices, encounters between key pairs, report/check tokens, the encounter store.
//! - [`tokens`]: the encounter-token API (TAN, nonces, uploads, chained uploads, research) and
//!   the download of an area's signed token files, matched against the phone's check tokens.
//! - [`confidential`]: confidential matching: rotating ids, the contact log, and the
//!   exchange with the matcher after its attestation passed the phone's policy.
//!
//! The crate does I/O only over HTTP and on its own state files. Time always comes in as a
//! `now` argument (unix seconds), so simulations and tests drive it with any clock. The
//! formats and the crypto are not here: they live in `gaen` and `confidant-core`, which the
//! server uses too, so both sides agree byte for byte.

pub mod confidential;
pub mod download;
pub mod encounter;
mod error;
mod http;
pub mod matching;
pub mod observations;
pub mod risk;
pub mod schedule;
mod state_file;
pub mod tokens;
pub mod upload;

pub use encounter::{
    Encounter, EncounterDetector, EncounterStore, EphemeralKey, EphemeralKeys, Match, Slice,
    TokenPair,
};
pub use error::ClientError;

/// Seconds in a UTC day.
pub const DAY_SECONDS: u64 = 86_400;
/// How long a phone keeps its keys and what it heard: 14 days.
pub const RETENTION_DAYS: u64 = 14;

/// The unix day (days since 1970-01-01 UTC) containing `unix_seconds`.
pub fn unix_day(unix_seconds: u64) -> u32 {
    u32::try_from(unix_seconds / DAY_SECONDS).unwrap_or(u32::MAX)
}
