//! Integration tests for `confidant-attest`: the real evidence of `../shared/fixtures/attestation`
//! at its pinned times and tampered with, the key binding with simulated evidence, and the
//! transport encoding.

mod binding;
mod nitro;
mod sgx;
mod snp;
mod tdx;
mod transport;

use std::path::PathBuf;

use confidant_attest::{AttestError, Evidence, IntelCollateral, Policy, Verified, verify};

/// SGX and TDX collateral is valid at 2025-07-01T00:00:00Z (`attestation.md`).
pub const INTEL_TIME: u64 = 1_751_328_000;
/// 2026-12-08T00:00:00Z.
pub const TODAY: u64 = 1_796_688_000;

/// `../shared/fixtures/attestation/NAME`, beside the repository.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/attestation")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn unhex<const N: usize>(text: &str) -> [u8; N] {
    hex::decode(text).expect("hex").try_into().expect("length")
}

pub fn collateral(name: &str) -> IntelCollateral {
    IntelCollateral::from_dcap_json(&fixture(name)).expect("collateral")
}

/// The DER certificates of a PEM file, in order.
pub fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let text = String::from_utf8(pem.to_vec()).expect("PEM is text");
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .expect("END line")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("base64")
        })
        .collect()
}

/// 64 bytes: `text` padded with zeros, as the fixtures' REPORTDATA.
pub fn padded(text: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..text.len()].copy_from_slice(text);
    out
}

/// Verifies `evidence` with one byte flipped (one bit, XOR 0x01) at every `step`-th position of
/// `range` (the signed bytes), through `with_flip`, and asserts that each fails.
pub fn assert_every_flip_fails(
    len: usize,
    range: std::ops::Range<usize>,
    step: usize,
    mut verify_flipped: impl FnMut(usize) -> Result<Verified, AttestError>,
) -> usize {
    assert!(range.end <= len);
    let mut tried = 0;
    for at in range.step_by(step) {
        if let Ok(verified) = verify_flipped(at) {
            panic!("flipping byte {at} still verifies: {verified:?}");
        }
        tried += 1;
    }
    tried
}

/// `verify`, for evidence that round-trips through its JSON encoding first, as on a phone.
pub fn verify_as_phone(
    evidence: &Evidence,
    expected_report_data: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<Verified, AttestError> {
    let parsed = Evidence::from_json(evidence.to_json().as_bytes()).expect("round trip");
    assert_eq!(&parsed, evidence);
    verify(&parsed, expected_report_data, policy, now)
}
