//! SEV-SNP: a 1184-byte attestation report signed (ECDSA P-384, SHA-384) by the chip's VCEK,
//! whose chain ARK → ASK → VCEK `sev` verifies (RSA-PSS).
//!
//! What we add, because `sev` does not do it:
//! - the ARK must be one the policy pins (`sev` only checks that it is self-signed);
//! - the report signature over the report's own bytes `0x000..0x2A0` (`sev` re-encodes its
//!   parse, so bytes its parser skips, such as reserved ones, would go unchecked);
//! - the certificates' validity dates at `now`;
//! - the VCEK's TCB extensions (blSPL, teeSPL, snpSPL, ucodeSPL, fmcSPL) equal REPORTED_TCB
//!   and its hwID equals CHIP_ID, so the VCEK is the one for this chip at this TCB;
//! - debug (POLICY bit 19), VMPL, measurement and minimum TCB.
//!
//! Not done: AMD's CRL (signed by the ARK, it revokes ASKs) is not among our fixtures and is not
//! fetched here; `Policy::snp_revoked_ask_serials` is the hook for an app that has it. Reports
//! signed by a VLEK (cloud providers' loaded keys) are refused.

use p384::ecdsa::signature::Verifier as _;
use sev::certs::snp::{Certificate as SevCertificate, Chain, Verifiable as _, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser as _;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::{ObjectIdentifier, OctetStringRef};

use crate::{AttestError, Checked, Measurements, Platform, Policy, SnpTcb, Tcb, x509};

const PLATFORM: Platform = Platform::Snp;
pub(crate) const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes 0x000..0x2A0.
pub(crate) const SIGNED_LEN: usize = 0x2A0;

const POLICY: usize = 0x08;
const VMPL: usize = 0x30;
const SIGNATURE_ALGO: usize = 0x34;
const KEY_INFO: usize = 0x48;
const REPORT_DATA: usize = 0x50;
const MEASUREMENT: usize = 0x90;
const HOST_DATA: usize = 0xC0;
const CHIP_ID: usize = 0x1A0;
const SIGNATURE_R: usize = 0x2A0;
const SIGNATURE_S: usize = 0x2E8;
/// Each signature component is a 72-byte little-endian field holding a 48-byte P-384 scalar.
const COMPONENT_LEN: usize = 72;

const POLICY_DEBUG: u64 = 1 << 19;
const ECDSA_P384_SHA384: u32 = 1;
/// KEY_INFO bits 4:2, SIGNING_KEY: 0 = VCEK, 1 = VLEK, 7 = none.
const SIGNING_KEY_VCEK: u32 = 0;

const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

fn malformed(reason: impl Into<String>) -> AttestError {
    AttestError::Malformed {
        platform: PLATFORM,
        reason: reason.into(),
    }
}

fn field<const N: usize>(report: &[u8; REPORT_LEN], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&report[at..at + N]);
    out
}

fn u32_at(report: &[u8; REPORT_LEN], at: usize) -> u32 {
    u32::from_le_bytes(field(report, at))
}

pub(crate) fn verify(
    report: &[u8],
    vcek_der: &[u8],
    ask_der: &[u8],
    ark_der: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<Checked, AttestError> {
    let report: &[u8; REPORT_LEN] = report.try_into().map_err(|_| {
        malformed(format!(
            "the report is {} bytes; accepted: {REPORT_LEN}",
            report.len()
        ))
    })?;
    let ark = x509::parse(PLATFORM, "ARK", ark_der)?;
    let ask = x509::parse(PLATFORM, "ASK", ask_der)?;
    let vcek = x509::parse(PLATFORM, "VCEK", vcek_der)?;

    check_chain(&ark, &ask, &vcek, ark_der, policy, now)?;
    check_report_signature(report, &vcek)?;

    let parsed = AttestationReport::from_bytes(report)
        .map_err(|e| malformed(format!("sev cannot parse the report ({e})")))?;
    let measurement: [u8; 48] = field(report, MEASUREMENT);
    let report_data: [u8; 64] = field(report, REPORT_DATA);
    let chip_id: [u8; 64] = field(report, CHIP_ID);
    let vmpl = u32_at(report, VMPL);
    if parsed.measurement != measurement
        || parsed.report_data != report_data
        || parsed.chip_id != chip_id
        || parsed.vmpl != vmpl
    {
        return Err(malformed(
            "fields at their documented offsets differ from sev's parse",
        ));
    }
    let reported = &parsed.reported_tcb;
    let tcb = SnpTcb {
        bootloader: reported.bootloader,
        tee: reported.tee,
        snp: reported.snp,
        microcode: reported.microcode,
        fmc: reported.fmc,
    };
    check_vcek_matches_report(&vcek, &tcb, &chip_id)?;

    let guest_policy = u64::from_le_bytes(field(report, POLICY));
    let debug = guest_policy & POLICY_DEBUG != 0;
    judge(&measurement, debug, vmpl, &tcb, policy)?;
    Ok(Checked {
        measurements: Measurements::Snp {
            measurement,
            host_data: field(report, HOST_DATA),
            vmpl,
            guest_policy,
        },
        report_data: report_data.to_vec(),
        debug,
        tcb: Tcb::Snp(tcb),
        produced_at: None,
    })
}

/// The policy's verdict on what a verified report says.
fn judge(
    measurement: &[u8; 48],
    debug: bool,
    vmpl: u32,
    tcb: &SnpTcb,
    policy: &Policy,
) -> Result<(), AttestError> {
    if debug && !policy.allow_debug {
        return Err(AttestError::DebugRefused { platform: PLATFORM });
    }
    if vmpl > policy.snp_max_vmpl {
        return Err(AttestError::VmplRefused {
            found: vmpl,
            max: policy.snp_max_vmpl,
        });
    }
    if !policy.snp.contains(measurement) {
        return Err(AttestError::MeasurementRefused {
            platform: PLATFORM,
            found: hex::encode(measurement),
            accepted: policy.snp.len(),
        });
    }
    if !tcb.meets(&policy.snp_min_tcb) {
        return Err(AttestError::TcbRefused {
            platform: PLATFORM,
            found: format!("{tcb:?}"),
            accepted: format!("at least {:?}", policy.snp_min_tcb),
        });
    }
    Ok(())
}

fn check_chain(
    ark: &Certificate,
    ask: &Certificate,
    vcek: &Certificate,
    ark_der: &[u8],
    policy: &Policy,
    now: u64,
) -> Result<(), AttestError> {
    if !policy.roots.amd_arks.iter().any(|pinned| pinned == ark_der) {
        return Err(AttestError::UntrustedRoot {
            platform: PLATFORM,
            what: "the ARK".to_owned(),
            accepted: format!(
                "one of the {} AMD root keys the policy pins",
                policy.roots.amd_arks.len()
            ),
        });
    }
    let chain = Chain {
        ca: ca::Chain {
            ark: SevCertificate::from(ark.clone()),
            ask: SevCertificate::from(ask.clone()),
        },
        vek: SevCertificate::from(vcek.clone()),
    };
    (&chain).verify().map_err(|e| AttestError::BadSignature {
        platform: PLATFORM,
        what: format!("the chain ARK → ASK → VCEK ({e})"),
    })?;
    for (what, cert) in [("ARK", ark), ("ASK", ask), ("VCEK", vcek)] {
        x509::check_valid_at(PLATFORM, what, cert, now)?;
    }
    let serial = ask.tbs_certificate.serial_number.as_bytes();
    if policy
        .snp_revoked_ask_serials
        .iter()
        .any(|revoked| revoked == serial)
    {
        return Err(AttestError::Revoked {
            platform: PLATFORM,
            certificate: "ASK".to_owned(),
            serial: hex::encode(serial),
        });
    }
    Ok(())
}

fn check_report_signature(
    report: &[u8; REPORT_LEN],
    vcek: &Certificate,
) -> Result<(), AttestError> {
    let algo = u32_at(report, SIGNATURE_ALGO);
    if algo != ECDSA_P384_SHA384 {
        return Err(malformed(format!(
            "signature algorithm {algo}; accepted: 1 (ECDSA P-384 with SHA-384)"
        )));
    }
    let signing_key = (u32_at(report, KEY_INFO) >> 2) & 0b111;
    if signing_key != SIGNING_KEY_VCEK {
        return Err(malformed(format!(
            "signing key {signing_key} (1 = VLEK, 7 = none); accepted: 0 (VCEK)"
        )));
    }
    let bad = |what: &str| AttestError::BadSignature {
        platform: PLATFORM,
        what: format!("the report ({what})"),
    };
    let mut rs = [0u8; 96];
    for (i, at) in [SIGNATURE_R, SIGNATURE_S].into_iter().enumerate() {
        let component: [u8; COMPONENT_LEN] = field(report, at);
        if component[48..].iter().any(|b| *b != 0) {
            return Err(bad("a signature component exceeds 48 bytes"));
        }
        let mut big_endian = [0u8; 48];
        for (dst, src) in big_endian.iter_mut().zip(component[..48].iter().rev()) {
            *dst = *src;
        }
        rs[48 * i..48 * (i + 1)].copy_from_slice(&big_endian);
    }
    let signature =
        p384::ecdsa::Signature::from_slice(&rs).map_err(|_| bad("r or s out of range"))?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(
        vcek.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|_| malformed("the VCEK's key is not a P-384 public key"))?;
    key.verify(&report[..SIGNED_LEN], &signature)
        .map_err(|_| bad("ECDSA P-384 by the VCEK"))
}

fn check_vcek_matches_report(
    vcek: &Certificate,
    tcb: &SnpTcb,
    chip_id: &[u8; 64],
) -> Result<(), AttestError> {
    let mut components = vec![
        ("blSPL (bootloader)", OID_BL_SPL, tcb.bootloader),
        ("teeSPL (PSP OS)", OID_TEE_SPL, tcb.tee),
        ("snpSPL (SNP firmware)", OID_SNP_SPL, tcb.snp),
        ("ucodeSPL (microcode)", OID_UCODE_SPL, tcb.microcode),
    ];
    if let Some(fmc) = tcb.fmc {
        components.push(("fmcSPL (FMC)", OID_FMC_SPL, fmc));
    }
    for (component, oid, reported) in components {
        let certified = x509::extension(vcek, &oid).map(u8::from_der);
        match certified {
            Some(Ok(certified)) if certified == reported => {}
            other => {
                return Err(AttestError::TcbExtensionMismatch {
                    component,
                    certified: match other {
                        Some(Ok(value)) => value.to_string(),
                        Some(Err(_)) => "an undecodable value".to_owned(),
                        None => "nothing (no extension)".to_owned(),
                    },
                    reported: reported.to_string(),
                });
            }
        }
    }

    let Some(raw) = x509::extension(vcek, &OID_HW_ID) else {
        return Err(AttestError::ChipIdMismatch {
            reason: "the VCEK has no hwID extension".to_owned(),
        });
    };
    // KDS wraps the ID in an OCTET STRING; accept the bare bytes too.
    let hw_id = OctetStringRef::from_der(raw).map_or(raw, |octets| octets.as_bytes());
    if chip_id.iter().all(|b| *b == 0) {
        return Err(AttestError::ChipIdMismatch {
            reason: "CHIP_ID is masked (all zero)".to_owned(),
        });
    }
    // Milan and Genoa IDs are 64 bytes; Turin's are 8, and the report pads them with zeros.
    let matches = match hw_id.len() {
        64 => hw_id == chip_id,
        8 => hw_id == &chip_id[..8] && chip_id[8..].iter().all(|b| *b == 0),
        _ => false,
    };
    if !matches {
        return Err(AttestError::ChipIdMismatch {
            reason: format!("hwID {} bytes, differing", hw_id.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/attestation")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn milan() -> (Certificate, SnpTcb, [u8; 64]) {
        let vcek = x509::parse(PLATFORM, "VCEK", &fixture("snp/vcek_milan.der")).expect("VCEK");
        let text = String::from_utf8(fixture("snp/report_milan.hex")).expect("text");
        let report = hex::decode(text.trim()).expect("hex");
        let tcb = SnpTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        let chip_id = report[CHIP_ID..CHIP_ID + 64].try_into().expect("64 bytes");
        (vcek, tcb, chip_id)
    }

    #[test]
    fn the_vcek_matches_its_report() {
        let (vcek, tcb, chip_id) = milan();
        assert_eq!(check_vcek_matches_report(&vcek, &tcb, &chip_id), Ok(()));
    }

    #[test]
    fn a_vcek_for_another_tcb_is_refused() {
        let (vcek, tcb, chip_id) = milan();
        for other in [
            SnpTcb { snp: 9, ..tcb },
            SnpTcb {
                bootloader: 2,
                ..tcb
            },
            SnpTcb { tee: 1, ..tcb },
            SnpTcb {
                microcode: 116,
                ..tcb
            },
            SnpTcb {
                fmc: Some(1),
                ..tcb
            },
        ] {
            let err = check_vcek_matches_report(&vcek, &other, &chip_id).expect_err("refused");
            assert!(
                matches!(err, AttestError::TcbExtensionMismatch { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn a_vcek_for_another_chip_is_refused() {
        let (vcek, tcb, mut chip_id) = milan();
        chip_id[63] ^= 1;
        assert!(matches!(
            check_vcek_matches_report(&vcek, &tcb, &chip_id),
            Err(AttestError::ChipIdMismatch { .. })
        ));
        assert!(matches!(
            check_vcek_matches_report(&vcek, &tcb, &[0; 64]),
            Err(AttestError::ChipIdMismatch { .. })
        ));
    }

    #[test]
    fn the_policy_judges_debug_vmpl_measurement_and_tcb() {
        let (_, tcb, _) = milan();
        let mut policy = Policy {
            snp: vec![[7; 48]],
            ..Policy::default()
        };
        assert_eq!(judge(&[7; 48], false, 0, &tcb, &policy), Ok(()));
        assert_eq!(
            judge(&[7; 48], true, 0, &tcb, &policy),
            Err(AttestError::DebugRefused { platform: PLATFORM })
        );
        assert_eq!(
            judge(&[7; 48], false, 1, &tcb, &policy),
            Err(AttestError::VmplRefused { found: 1, max: 0 })
        );
        assert!(matches!(
            judge(&[8; 48], false, 0, &tcb, &policy),
            Err(AttestError::MeasurementRefused { .. })
        ));
        policy.allow_debug = true;
        policy.snp_max_vmpl = 2;
        assert_eq!(judge(&[7; 48], true, 2, &tcb, &policy), Ok(()));
        policy.snp_min_tcb = SnpTcb {
            microcode: 116,
            ..tcb
        };
        assert!(matches!(
            judge(&[7; 48], true, 2, &tcb, &policy),
            Err(AttestError::TcbRefused { .. })
        ));
    }
}
