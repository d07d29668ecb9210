//! SGX and TDX: DCAP quotes, verified by `dcap-qvl` against the pinned Intel SGX Root CA and the
//! stapled collateral (PCK chain, CRLs, TCB info, QE identity, all at `now`). Then we read the
//! identity at the offsets of `attestation.md`, cross-check them with dcap-qvl's parse, and
//! apply the policy: debug, measurements, TCB status.
//!
//! dcap-qvl is told to allow debug so that a debug quote comes back to us and is refused with a
//! typed error; its other attribute checks (TD migration, SEPT_VE_DISABLE, reserved bits,
//! service TDs) stay on.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Report;
use dcap_qvl::verify::QuoteVerifier;

use crate::{
    AttestError, Checked, IntelCollateral, Measurements, Platform, Policy, SgxIdentity, Tcb,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sgx,
    Tdx,
}

const HEADER_LEN: usize = 48;
const TEE_TYPE_SGX: u32 = 0;
const TEE_TYPE_TDX: u32 = 0x81;
/// Quote v5 puts a 6-byte body descriptor (type, size) before the report body.
const V5_BODY_DESCRIPTOR: usize = 6;
const SGX_BODY_LEN: usize = 384;
const TD_REPORT10_LEN: usize = 584;

/// Offsets within the SGX report body (the quote offsets of `attestation.md` minus 48).
mod sgx_body {
    pub const ATTRIBUTES: usize = 48;
    pub const MRENCLAVE: usize = 64;
    pub const MRSIGNER: usize = 128;
    pub const ISV_PROD_ID: usize = 256;
    pub const ISV_SVN: usize = 258;
    pub const REPORT_DATA: usize = 320;
    /// DEBUG is bit 1 of the first ATTRIBUTES byte.
    pub const DEBUG_BIT: u8 = 0x02;
}

/// Offsets within the TD report body (TDREPORT 1.0 layout, shared by 1.5).
mod td_body {
    pub const TD_ATTRIBUTES: usize = 120;
    pub const MRTD: usize = 136;
    pub const RTMR0: usize = 328;
    pub const REPORT_DATA: usize = 520;
}

impl Kind {
    fn platform(self) -> Platform {
        match self {
            Kind::Sgx => Platform::Sgx,
            Kind::Tdx => Platform::Tdx,
        }
    }
}

pub(crate) fn verify(
    kind: Kind,
    quote: &[u8],
    collateral: &IntelCollateral,
    policy: &Policy,
    now: u64,
) -> Result<Checked, AttestError> {
    let platform = kind.platform();
    let body = body_offset(kind, quote)?;

    let verified = QuoteVerifier::new(policy.roots.intel_sgx_root.clone())
        .allow_debug(true)
        .verify(quote, &to_dcap(collateral), now)
        .map_err(|e| AttestError::Intel {
            platform,
            reason: format!("{e:#}"),
        })?;
    let tcb = Tcb::Intel {
        status: verified.status.clone(),
        advisory_ids: verified.advisory_ids.clone(),
    };

    let (measurements, debug, report_data) = match kind {
        Kind::Sgx => read_sgx(quote, body, &verified.report)?,
        Kind::Tdx => read_tdx(quote, body, &verified.report)?,
    };
    judge(platform, &measurements, debug, &tcb, policy)?;
    Ok(Checked {
        measurements,
        report_data: report_data.to_vec(),
        debug,
        tcb,
        produced_at: None,
    })
}

/// Checks the header we rely on before dcap-qvl sees the quote, and returns where the report
/// body starts.
fn body_offset(kind: Kind, quote: &[u8]) -> Result<usize, AttestError> {
    let platform = kind.platform();
    let malformed = |reason: String| AttestError::Malformed { platform, reason };
    let (Some(version), Some(tee_type)) = (
        quote.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]])),
        quote
            .get(4..8)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    ) else {
        return Err(malformed(format!(
            "the quote is {} bytes, shorter than its 48-byte header",
            quote.len()
        )));
    };
    let (body, body_len) = match (kind, tee_type, version) {
        (Kind::Sgx, TEE_TYPE_SGX, 3) => (HEADER_LEN, SGX_BODY_LEN),
        (Kind::Tdx, TEE_TYPE_TDX, 4) => (HEADER_LEN, TD_REPORT10_LEN),
        (Kind::Tdx, TEE_TYPE_TDX, 5) => (HEADER_LEN + V5_BODY_DESCRIPTOR, TD_REPORT10_LEN),
        (Kind::Sgx, _, _) => {
            return Err(malformed(format!(
                "TEE type {tee_type:#x}, quote version {version}; accepted: TEE type 0x0 (SGX), \
                 quote version 3"
            )));
        }
        (Kind::Tdx, _, _) => {
            return Err(malformed(format!(
                "TEE type {tee_type:#x}, quote version {version}; accepted: TEE type 0x81 (TDX), \
                 quote version 4 or 5"
            )));
        }
    };
    if quote.len() < body + body_len {
        return Err(malformed(format!(
            "the quote is {} bytes, shorter than its report body (which ends at {})",
            quote.len(),
            body + body_len
        )));
    }
    Ok(body)
}

fn array<const N: usize>(quote: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers checked that the body is in the quote; a short read leaves zeros, which the
    // cross-check against dcap-qvl's parse would refuse.
    if let Some(src) = quote.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn disagreement(platform: Platform, field: &str) -> AttestError {
    AttestError::Malformed {
        platform,
        reason: format!(
            "{field} at its documented offset differs from dcap-qvl's parse of the quote; \
             accepted: SGX quote v3, TDX quote v4/v5"
        ),
    }
}

fn read_sgx(
    quote: &[u8],
    body: usize,
    parsed: &Report,
) -> Result<(Measurements, bool, [u8; 64]), AttestError> {
    let platform = Platform::Sgx;
    let attributes: [u8; 16] = array(quote, body + sgx_body::ATTRIBUTES);
    let mrenclave: [u8; 32] = array(quote, body + sgx_body::MRENCLAVE);
    let mrsigner: [u8; 32] = array(quote, body + sgx_body::MRSIGNER);
    let isv_prod_id = u16::from_le_bytes(array(quote, body + sgx_body::ISV_PROD_ID));
    let isv_svn = u16::from_le_bytes(array(quote, body + sgx_body::ISV_SVN));
    let report_data: [u8; 64] = array(quote, body + sgx_body::REPORT_DATA);

    let Some(report) = parsed.as_sgx() else {
        return Err(disagreement(platform, "the report body"));
    };
    if report.attributes != attributes {
        return Err(disagreement(platform, "ATTRIBUTES"));
    }
    if report.mr_enclave != mrenclave || report.mr_signer != mrsigner {
        return Err(disagreement(platform, "MRENCLAVE/MRSIGNER"));
    }
    if report.isv_prod_id != isv_prod_id || report.isv_svn != isv_svn {
        return Err(disagreement(platform, "ISVPRODID/ISVSVN"));
    }
    if report.report_data != report_data {
        return Err(disagreement(platform, "REPORTDATA"));
    }
    let debug = attributes[0] & sgx_body::DEBUG_BIT != 0;
    let measurements = Measurements::Sgx {
        mrenclave,
        mrsigner,
        isv_prod_id,
        isv_svn,
    };
    Ok((measurements, debug, report_data))
}

fn read_tdx(
    quote: &[u8],
    body: usize,
    parsed: &Report,
) -> Result<(Measurements, bool, [u8; 64]), AttestError> {
    let platform = Platform::Tdx;
    let td_attributes: [u8; 8] = array(quote, body + td_body::TD_ATTRIBUTES);
    let mrtd: [u8; 48] = array(quote, body + td_body::MRTD);
    let rtmrs: [[u8; 48]; 4] =
        std::array::from_fn(|i| array(quote, body + td_body::RTMR0 + 48 * i));
    let report_data: [u8; 64] = array(quote, body + td_body::REPORT_DATA);

    let Some(report) = parsed.as_td10() else {
        return Err(disagreement(platform, "the TD report body"));
    };
    if report.td_attributes != td_attributes {
        return Err(disagreement(platform, "TDATTRIBUTES"));
    }
    if report.mr_td != mrtd {
        return Err(disagreement(platform, "MRTD"));
    }
    if [report.rt_mr0, report.rt_mr1, report.rt_mr2, report.rt_mr3] != rtmrs {
        return Err(disagreement(platform, "RTMR0..3"));
    }
    if report.report_data != report_data {
        return Err(disagreement(platform, "REPORTDATA"));
    }
    // DEBUG is bit 0 of the TUD byte; Intel's TDX module spec says a TD with any TUD bit set
    // (debug, or the profiling bits dcap-qvl lets through with allow_debug) is untrusted.
    let debug = td_attributes[0] != 0;
    Ok((Measurements::Tdx { mrtd, rtmrs }, debug, report_data))
}

/// The policy's verdict on what a verified quote says: debug, then identity, then TCB.
fn judge(
    platform: Platform,
    measurements: &Measurements,
    debug: bool,
    tcb: &Tcb,
    policy: &Policy,
) -> Result<(), AttestError> {
    if debug && !policy.allow_debug {
        return Err(AttestError::DebugRefused { platform });
    }
    check_measurements(measurements, policy)?;
    if let Tcb::Intel {
        status,
        advisory_ids,
    } = tcb
        && !policy.intel_tcb_statuses.contains(status)
    {
        return Err(AttestError::TcbRefused {
            platform,
            found: format!("{status} (advisories: {})", advisory_ids.join(", ")),
            accepted: policy.intel_tcb_statuses.join(", "),
        });
    }
    Ok(())
}

fn check_measurements(measurements: &Measurements, policy: &Policy) -> Result<(), AttestError> {
    match measurements {
        Measurements::Sgx {
            mrenclave,
            mrsigner,
            isv_prod_id,
            isv_svn,
        } => {
            let accepted = policy.sgx.iter().any(|identity| match identity {
                SgxIdentity::MrEnclave(want) => want == mrenclave,
                SgxIdentity::MrSigner {
                    mrsigner: want,
                    isv_prod_id: prod,
                    min_isv_svn,
                } => want == mrsigner && prod == isv_prod_id && isv_svn >= min_isv_svn,
            });
            if !accepted {
                return Err(AttestError::MeasurementRefused {
                    platform: Platform::Sgx,
                    found: format!(
                        "MRENCLAVE {} MRSIGNER {} ISVPRODID {isv_prod_id} ISVSVN {isv_svn}",
                        hex::encode(mrenclave),
                        hex::encode(mrsigner)
                    ),
                    accepted: policy.sgx.len(),
                });
            }
        }
        Measurements::Tdx { mrtd, rtmrs } => {
            let accepted = policy.tdx.iter().any(|identity| {
                identity.mrtd == *mrtd
                    && identity
                        .rtmrs
                        .iter()
                        .zip(rtmrs)
                        .all(|(want, have)| want.as_ref().is_none_or(|w| w == have))
            });
            if !accepted {
                return Err(AttestError::MeasurementRefused {
                    platform: Platform::Tdx,
                    found: format!(
                        "MRTD {} RTMR0 {} RTMR1 {} RTMR2 {} RTMR3 {}",
                        hex::encode(mrtd),
                        hex::encode(rtmrs[0]),
                        hex::encode(rtmrs[1]),
                        hex::encode(rtmrs[2]),
                        hex::encode(rtmrs[3])
                    ),
                    accepted: policy.tdx.len(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

fn to_dcap(collateral: &IntelCollateral) -> QuoteCollateralV3 {
    QuoteCollateralV3 {
        pck_crl_issuer_chain: collateral.pck_crl_issuer_chain.clone(),
        root_ca_crl: collateral.root_ca_crl.clone(),
        pck_crl: collateral.pck_crl.clone(),
        tcb_info_issuer_chain: collateral.tcb_info_issuer_chain.clone(),
        tcb_info: collateral.tcb_info.clone(),
        tcb_info_signature: collateral.tcb_info_signature.clone(),
        qe_identity_issuer_chain: collateral.qe_identity_issuer_chain.clone(),
        qe_identity: collateral.qe_identity.clone(),
        qe_identity_signature: collateral.qe_identity_signature.clone(),
        pck_certificate_chain: collateral.pck_certificate_chain.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TdxIdentity;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/attestation")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn parse(quote: &[u8]) -> Report {
        dcap_qvl::quote::Quote::parse(quote)
            .expect("dcap-qvl parses")
            .report
    }

    #[test]
    fn the_debug_bits_are_where_attestation_md_says() {
        let mut quote = fixture("sgx/sgx_quote");
        let (_, debug, _) = read_sgx(&quote, HEADER_LEN, &parse(&quote)).expect("reads");
        assert!(!debug);
        quote[96] |= 0x02;
        let (_, debug, _) = read_sgx(&quote, HEADER_LEN, &parse(&quote)).expect("reads");
        assert!(debug);

        let mut quote = fixture("tdx/tdx_quote");
        let (_, debug, _) = read_tdx(&quote, HEADER_LEN, &parse(&quote)).expect("reads");
        assert!(!debug);
        quote[168] |= 0x01;
        let (_, debug, _) = read_tdx(&quote, HEADER_LEN, &parse(&quote)).expect("reads");
        assert!(debug);
    }

    #[test]
    fn offsets_that_disagree_with_dcap_qvl_are_refused() {
        let quote = fixture("sgx/sgx_quote");
        let mut other = quote.clone();
        other[112] ^= 1; // MRENCLAVE
        let err = read_sgx(&quote, HEADER_LEN, &parse(&other)).expect_err("disagrees");
        assert!(err.to_string().contains("MRENCLAVE"), "{err}");
    }

    fn tdx() -> Measurements {
        Measurements::Tdx {
            mrtd: [1; 48],
            rtmrs: [[2; 48], [3; 48], [4; 48], [5; 48]],
        }
    }

    fn up_to_date() -> Tcb {
        Tcb::Intel {
            status: "UpToDate".into(),
            advisory_ids: vec![],
        }
    }

    #[test]
    fn debug_is_refused_unless_allowed() {
        let mut policy = Policy {
            tdx: vec![TdxIdentity {
                mrtd: [1; 48],
                rtmrs: [None; 4],
            }],
            ..Policy::default()
        };
        assert_eq!(
            judge(Platform::Tdx, &tdx(), true, &up_to_date(), &policy),
            Err(AttestError::DebugRefused {
                platform: Platform::Tdx
            })
        );
        policy.allow_debug = true;
        assert_eq!(
            judge(Platform::Tdx, &tdx(), true, &up_to_date(), &policy),
            Ok(())
        );
    }

    #[test]
    fn rtmrs_are_pinned_where_the_policy_says() {
        let policy = |rtmrs| Policy {
            tdx: vec![TdxIdentity {
                mrtd: [1; 48],
                rtmrs,
            }],
            ..Policy::default()
        };
        let ok = policy([Some([2; 48]), Some([3; 48]), Some([4; 48]), None]);
        assert_eq!(
            judge(Platform::Tdx, &tdx(), false, &up_to_date(), &ok),
            Ok(())
        );
        let wrong = policy([Some([2; 48]), Some([3; 48]), Some([4; 48]), Some([0; 48])]);
        assert!(matches!(
            judge(Platform::Tdx, &tdx(), false, &up_to_date(), &wrong),
            Err(AttestError::MeasurementRefused { .. })
        ));
    }
}
