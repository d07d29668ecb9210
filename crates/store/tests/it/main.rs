//! The store's suite, run on SQLite and on PostgreSQL alike.

mod flows;
mod log;
mod replay;
mod tokens;

use confidant_core::encounter::{Token, TokenHash, UploadedToken};
use confidant_core::event::NonceClaim;
use confidant_core::publish::{self, BatchDecision, Revisions};
use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, KeyedHasher, ProviderId, PublishedFile,
    Region, Stream, TrackingId,
};
use confidant_store::testing::TestDatabase;
use confidant_store::{Dialect, Store, StoreError, StoreOptions};

pub const T0: u64 = 1_800_000_000;
pub const BOTH: [Dialect; 2] = [Dialect::Sqlite, Dialect::Postgres];

pub fn hasher() -> KeyedHasher {
    KeyedHasher::new(b"test secret of at least 32 bytes!!")
}

pub fn region(name: &str) -> Region {
    Region::try_from(name.to_owned()).expect("region")
}

pub async fn open(db: &TestDatabase) -> Store {
    Store::open(db.url(), StoreOptions::default())
        .await
        .expect("store opens")
}

/// A key `days_ago` days old with data derived from `seed`.
pub fn key(seed: u8, days_ago: u32) -> StoredKey {
    let today = (T0 / 600) as u32 / 144 * 144;
    StoredKey {
        key_data: confidant_core::KeyData([seed; 16]),
        rolling_start: today - days_ago * 144,
        rolling_period: 144,
        transmission_risk: 3,
    }
}

/// Registers a provider with token "token-N", issues code "code-N", redeems it into a claim
/// with upload token "upload-N"; returns the upload token's hash.
pub async fn claim(store: &Store, n: u8) -> Digest {
    let h = hasher();
    store
        .register_provider(
            ProviderId([n; 8]),
            format!("Lab {n}"),
            region("DE"),
            h.token(&format!("token-{n}")),
        )
        .await
        .expect("register");
    store
        .issue_code(
            h.token(&format!("token-{n}")),
            CodeFormat::Short,
            None,
            CodePolicy::default(),
            h.code(&format!("code-{n}")),
            T0,
        )
        .await
        .expect("issue");
    let upload = h.token(&format!("upload-{n}"));
    store
        .redeem_code(
            h.code(&format!("code-{n}")),
            ClaimId([n; 16]),
            Credential::UploadToken { token_hash: upload },
            T0 + 1,
        )
        .await
        .expect("redeem");
    upload
}

pub fn tracking(n: u8) -> TrackingId {
    TrackingId([n; 16])
}

/// The published hash of the encounter token whose 32 bytes are all `seed`.
pub fn token_hash(seed: u8) -> TokenHash {
    Token([seed; 32]).hash()
}

/// An uploaded token hash of `seed`: an encounter `days_ago` days before `now`'s day, in `area`.
pub fn uploaded(seed: u8, days_ago: u32, area: &Region, now: u64) -> UploadedToken {
    UploadedToken {
        hash: token_hash(seed),
        day: (now / 86_400) as u32 - days_ago,
        area: area.clone(),
    }
}

/// The keyed hash of TAN number `n` ("tan{n}").
pub fn tan(n: u8) -> Digest {
    hasher().code(&format!("tan{n}"))
}

/// Nonce number `n` of a TAN redemption: its claim and the keyed hash of the nonce `[n; 32]`.
pub fn nonce(n: u8) -> NonceClaim {
    let mut claim = [0xA5; 16];
    claim[0] = n;
    NonceClaim {
        claim: ClaimId(claim),
        nonce_hash: hasher().nonce(&[n; 32]),
    }
}

/// Runs the publisher for `area`'s token stream at `at` as `Publisher::publish_tokens` does:
/// every hourly window closed by then, oldest first and at most `max` of them, each with the
/// tokens that became available in it and the withdrawn ones it had published as removals.
/// Returns how many windows it published.
pub async fn publish_tokens(
    store: &Store,
    area: &Region,
    at: u64,
    max: u32,
) -> Result<u32, StoreError> {
    let mut windows = 0;
    while windows < max {
        let cursor = store.cursor(area, Stream::Tokens).await?;
        let first_available = match cursor {
            Some(_) => None,
            None => store
                .first_token_hour(area)
                .await?
                .map(publish::token_available_at),
        };
        let Some(window) = publish::next_window(cursor.as_ref(), 3600, at, first_available) else {
            break;
        };
        let withdrawals = store.withdrawals().await?;
        let revised_through = cursor.as_ref().map_or(0, |c| c.revised_through);
        let removed = store
            .tokens_withdrawn(area, revised_through, withdrawals)
            .await?
            .into_iter()
            .filter(|(_, t)| publish::token_published(cursor.as_ref(), t.hour))
            .count();
        let real = store
            .tokens_submitted(
                area,
                (window.keys_from / 3600).saturating_sub(1),
                window.end / 3600,
            )
            .await?
            .into_iter()
            .filter(|(_, t)| {
                (window.keys_from..window.end).contains(&publish::token_available_at(t.hour))
            })
            .count();
        let seq = cursor.as_ref().map_or(0, |c| c.seq) + 1;
        let event = publish::published(
            area.clone(),
            Stream::Tokens,
            window,
            BatchDecision::Publish { padding: 0 },
            real,
            seq,
            Digest([0; 32]),
            Revisions {
                through: withdrawals.max(revised_through),
                keys: removed as u32,
            },
            vec![PublishedFile {
                path: format!("tokens/{area}/{}-{}.list", window.start, window.end),
                sha256: Digest([seq as u8; 32]),
                bytes: 100 + real as u64,
                seq,
            }],
        );
        store.publish(event).await?;
        windows += 1;
    }
    Ok(windows)
}
