//! Remote-attestation evidence for the confidential matcher, and its verification by a phone.
//!
//! The matcher generates an X25519 key inside its TEE and asks the platform to sign
//! [`binding::report_data`] (key and the phone's nonce) as the 64 bytes of user data that every
//! platform signs. It returns that [`Evidence`] with the endorsements a phone needs to check it
//! offline (collateral, certificate chains). The phone parses the evidence
//! ([`Evidence::from_json`]), checks it against its [`Policy`] with [`verify`], and only then
//! encrypts to the key, bound to [`Evidence::digest`].
//!
//! Per platform:
//! - SGX and TDX (`intel`): Intel's DCAP chain and collateral through `dcap-qvl`, then our reading
//!   of the measurements at the documented offsets and the policy.
//! - SEV-SNP (`snp`): ARK → ASK → VCEK through `sev`, plus what `sev` leaves out: the report
//!   signature over the original bytes, certificate dates, the VCEK's TCB and hwID extensions
//!   against REPORTED_TCB and CHIP_ID, debug, VMPL and measurement.
//! - Nitro (`nitro`): our own COSE_Sign1 (ES384) and CBOR verifier up to the pinned AWS root.
//! - Simulated: no security at all, accepted only when the policy says `allow_simulated`.
//!
//! The verifiers of each family sit behind cargo features (`sgx-tdx`, `snp`, `nitro`, all on by
//! default), so that the matcher, which only produces evidence, builds without them.
//!
//! This crate does no I/O: time comes in as `now` (unix seconds), roots are compiled in, and it
//! never fetches collateral, CRLs or certificates. It has no async.

mod b64;
pub mod binding;
mod error;
mod evidence;
#[cfg(feature = "sgx-tdx")]
mod intel;
#[cfg(feature = "nitro")]
mod nitro;
mod policy;
mod simulated;
#[cfg(feature = "snp")]
mod snp;
mod verified;
#[cfg(any(feature = "snp", feature = "nitro"))]
mod x509;

pub use error::{AttestError, EvidenceError};
pub use evidence::{Evidence, IntelCollateral, MAX_EVIDENCE_JSON, WIRE_VERSION};
pub use policy::{NitroPcrs, Policy, Roots, SgxIdentity, SnpTcb, TdxIdentity};
pub use verified::{Measurements, Platform, Tcb, Verified};

/// Something that decides whether evidence is acceptable. [`Policy`] is the real one; tests of
/// code that consumes evidence can put their own in its place.
pub trait EvidenceVerifier {
    /// Verifies `evidence` at `now` (unix seconds) and checks that it signs
    /// `expected_report_data` (normally [`binding::report_data`] of the key and nonce).
    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8],
        now: u64,
    ) -> Result<Verified, AttestError>;
}

impl EvidenceVerifier for Policy {
    fn verify(
        &self,
        evidence: &Evidence,
        expected_report_data: &[u8],
        now: u64,
    ) -> Result<Verified, AttestError> {
        verify(evidence, expected_report_data, self, now)
    }
}

/// Verifies `evidence` under `policy` at `now` (unix seconds).
///
/// Checks, in this order: the platform's signatures and chain to the pinned root (with dates),
/// debug mode, the measurements, the TCB, that the signed report data equals
/// `expected_report_data` byte for byte, and the evidence's age where it carries a time (Nitro).
/// The first failure is returned.
///
/// The report data is the 64-byte REPORTDATA of SGX, TDX, SNP and simulated evidence, and the
/// `user_data` field of a Nitro document (empty when absent).
pub fn verify(
    evidence: &Evidence,
    expected_report_data: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<Verified, AttestError> {
    let checked = match evidence {
        Evidence::Simulated {
            report_data,
            measurement,
        } => simulated::verify(report_data, measurement, policy)?,
        Evidence::Sgx { quote, collateral } => verify_sgx(quote, collateral, policy, now)?,
        Evidence::Tdx { quote, collateral } => verify_tdx(quote, collateral, policy, now)?,
        Evidence::Snp {
            report,
            vcek_der,
            ask_der,
            ark_der,
        } => verify_snp(report, vcek_der, ask_der, ark_der, policy, now)?,
        Evidence::Nitro { document } => verify_nitro(document, policy, now)?,
    };
    let platform = evidence.platform();
    if checked.report_data != expected_report_data {
        return Err(AttestError::ReportDataMismatch {
            platform,
            expected_len: expected_report_data.len(),
            found_len: checked.report_data.len(),
        });
    }
    if let Some(produced_at) = checked.produced_at {
        check_age(platform, produced_at, policy, now)?;
    }
    Ok(Verified {
        platform,
        measurements: checked.measurements,
        report_data: checked.report_data,
        debug: checked.debug,
        tcb: checked.tcb,
        produced_at: checked.produced_at,
        evidence_digest: evidence.digest(),
    })
}

/// What a platform verifier found, before the checks common to all platforms.
pub(crate) struct Checked {
    pub measurements: Measurements,
    pub report_data: Vec<u8>,
    pub debug: bool,
    pub tcb: Tcb,
    /// Unix seconds, for evidence that carries its own time.
    pub produced_at: Option<u64>,
}

fn check_age(
    platform: Platform,
    produced_at: u64,
    policy: &Policy,
    now: u64,
) -> Result<(), AttestError> {
    if produced_at > now.saturating_add(policy.max_clock_skew_secs) {
        return Err(AttestError::FromTheFuture {
            platform,
            produced_at,
            now,
            max_clock_skew_secs: policy.max_clock_skew_secs,
        });
    }
    if now.saturating_sub(produced_at) > policy.max_age_secs {
        return Err(AttestError::TooOld {
            platform,
            produced_at,
            now,
            max_age_secs: policy.max_age_secs,
        });
    }
    Ok(())
}

#[cfg(feature = "sgx-tdx")]
fn verify_sgx(
    quote: &[u8],
    collateral: &IntelCollateral,
    policy: &Policy,
    now: u64,
) -> Result<Checked, AttestError> {
    intel::verify(intel::Kind::Sgx, quote, collateral, policy, now)
}

#[cfg(feature = "sgx-tdx")]
fn verify_tdx(
    quote: &[u8],
    collateral: &IntelCollateral,
    policy: &Policy,
    now: u64,
) -> Result<Checked, AttestError> {
    intel::verify(intel::Kind::Tdx, quote, collateral, policy, now)
}

#[cfg(not(feature = "sgx-tdx"))]
fn verify_sgx(_: &[u8], _: &IntelCollateral, _: &Policy, _: u64) -> Result<Checked, AttestError> {
    Err(AttestError::NotBuilt {
        platform: Platform::Sgx,
        feature: "sgx-tdx",
    })
}

#[cfg(not(feature = "sgx-tdx"))]
fn verify_tdx(_: &[u8], _: &IntelCollateral, _: &Policy, _: u64) -> Result<Checked, AttestError> {
    Err(AttestError::NotBuilt {
        platform: Platform::Tdx,
        feature: "sgx-tdx",
    })
}

#[cfg(feature = "snp")]
fn verify_snp(
    report: &[u8],
    vcek_der: &[u8],
    ask_der: &[u8],
    ark_der: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<Checked, AttestError> {
    snp::verify(report, vcek_der, ask_der, ark_der, policy, now)
}

#[cfg(not(feature = "snp"))]
fn verify_snp(
    _: &[u8],
    _: &[u8],
    _: &[u8],
    _: &[u8],
    _: &Policy,
    _: u64,
) -> Result<Checked, AttestError> {
    Err(AttestError::NotBuilt {
        platform: Platform::Snp,
        feature: "snp",
    })
}

#[cfg(feature = "nitro")]
fn verify_nitro(document: &[u8], policy: &Policy, _now: u64) -> Result<Checked, AttestError> {
    nitro::verify(document, policy)
}

#[cfg(not(feature = "nitro"))]
fn verify_nitro(_: &[u8], _: &Policy, _: u64) -> Result<Checked, AttestError> {
    Err(AttestError::NotBuilt {
        platform: Platform::Nitro,
        feature: "nitro",
    })
}
