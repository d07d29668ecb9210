//! Typed refusals. Each message says what was wrong and what is accepted.

use crate::Platform;

/// Why evidence JSON could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence is {len} bytes; accepted: at most {max}")]
    TooLarge { len: usize, max: usize },
    #[error("evidence is not JSON: {0}")]
    NotJson(String),
    #[error("evidence is not a JSON object; accepted: {{\"v\":1,\"platform\":…}}")]
    NotAnObject,
    #[error("evidence has no version field \"v\"; accepted: \"v\": 1")]
    MissingVersion,
    #[error("evidence version {found} is not supported; accepted: 1")]
    UnsupportedVersion { found: String },
    #[error(
        "evidence does not have the accepted shape ({0}); accepted: platform simulated, sgx, tdx, \
         snp or nitro with that platform's fields"
    )]
    Shape(String),
    #[error("collateral is not dcap-qvl's collateral JSON: {0}")]
    Collateral(String),
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error(
        "simulated evidence is refused: anyone can make it; accepted only by a policy with \
         allow_simulated (development and tests)"
    )]
    SimulatedRefused,
    #[error(
        "{platform} evidence cannot be verified by this build; accepted: a build of \
         confidant-attest with the feature `{feature}`"
    )]
    NotBuilt {
        platform: Platform,
        feature: &'static str,
    },
    #[error("{platform} evidence is malformed: {reason}")]
    Malformed { platform: Platform, reason: String },
    #[error(
        "{platform} quote does not verify against the pinned Intel root and the stapled \
         collateral: {reason}"
    )]
    Intel { platform: Platform, reason: String },
    #[error("{platform}: the signature on {what} does not verify")]
    BadSignature { platform: Platform, what: String },
    #[error("{platform}: {what} is not a root the policy pins; accepted: {accepted}")]
    UntrustedRoot {
        platform: Platform,
        what: String,
        accepted: String,
    },
    #[error(
        "{platform}: certificate {certificate} is not valid at {at} (unix seconds); accepted: \
         {not_before}..={not_after}"
    )]
    CertificateNotValid {
        platform: Platform,
        certificate: String,
        at: u64,
        not_before: u64,
        not_after: u64,
    },
    #[error("{platform}: certificate {certificate} (serial {serial}) is revoked by the policy")]
    Revoked {
        platform: Platform,
        certificate: String,
        serial: String,
    },
    #[error(
        "SEV-SNP: the VCEK certifies {component} SVN {certified} but the report's REPORTED_TCB \
         says {reported}; accepted: equal"
    )]
    TcbExtensionMismatch {
        component: &'static str,
        certified: String,
        reported: String,
    },
    #[error("SEV-SNP: the VCEK's hwID is not the report's CHIP_ID ({reason}); accepted: equal")]
    ChipIdMismatch { reason: String },
    #[error(
        "{platform} evidence comes from a TEE in debug mode, whose memory the host can read; \
         accepted only by a policy with allow_debug"
    )]
    DebugRefused { platform: Platform },
    #[error(
        "{platform} measurement {found} is not accepted; accepted: the {accepted} listed in the \
         policy"
    )]
    MeasurementRefused {
        platform: Platform,
        found: String,
        accepted: usize,
    },
    #[error("{platform} TCB {found} is not accepted; accepted: {accepted}")]
    TcbRefused {
        platform: Platform,
        found: String,
        accepted: String,
    },
    #[error("SEV-SNP report was requested at VMPL {found}; accepted: VMPL 0..={max}")]
    VmplRefused { found: u32, max: u32 },
    #[error(
        "{platform} evidence signs other report data ({found_len} bytes) than the expected \
         binding ({expected_len} bytes) of this key and nonce; accepted: equal"
    )]
    ReportDataMismatch {
        platform: Platform,
        expected_len: usize,
        found_len: usize,
    },
    #[error(
        "{platform} evidence was produced at {produced_at}, {age} s before now ({now}); \
         accepted: at most {max_age_secs} s old",
        age = now.saturating_sub(*produced_at)
    )]
    TooOld {
        platform: Platform,
        produced_at: u64,
        now: u64,
        max_age_secs: u64,
    },
    #[error(
        "{platform} evidence claims to be produced at {produced_at}, after now ({now}); \
         accepted: at most {max_clock_skew_secs} s ahead"
    )]
    FromTheFuture {
        platform: Platform,
        produced_at: u64,
        now: u64,
        max_clock_skew_secs: u64,
    },
}
