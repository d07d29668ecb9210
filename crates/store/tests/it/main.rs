//! The store's suite, run on SQLite and on PostgreSQL alike.

mod flows;
mod log;
mod replay;

use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, KeyedHasher, ProviderId, Region,
    TrackingId,
};
use confidant_store::testing::TestDatabase;
use confidant_store::{Dialect, Store, StoreOptions};

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
