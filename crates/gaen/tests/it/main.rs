//! Integration tests for `gaen`: official vectors, real exports, round trips, matching.

mod fixtures;
mod fuzz_corpus;
mod matching;
mod roundtrip;
mod vectors;

use std::path::PathBuf;

/// `../shared/fixtures/gaen/NAME`, beside the repository.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/gaen")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("fixture is UTF-8")
}

pub fn unhex<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).expect("hex").try_into().expect("length")
}
