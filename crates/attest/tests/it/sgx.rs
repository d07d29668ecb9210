//! The real SGX quote (`sgx/`): verified at 2025-07-01 with dcap-qvl, then our policy.

use confidant_attest::{
    AttestError, Evidence, Measurements, Platform, Policy, Roots, SgxIdentity, Tcb, binding, verify,
};

use crate::{INTEL_TIME, TODAY, collateral, fixture, padded, unhex, verify_as_phone};

/// From dcap-qvl's own parse of this quote (its insta snapshot).
const MRENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
const MRSIGNER: &str = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";
/// Header (48) and report body (384): what the attestation key signs.
const SIGNED: std::ops::Range<usize> = 0..432;

fn evidence() -> Evidence {
    Evidence::Sgx {
        quote: fixture("sgx/sgx_quote"),
        collateral: collateral("sgx/sgx_quote_collateral.json"),
    }
}

/// The quote's own REPORTDATA: "Hello, world!" padded with zeros.
fn their_report_data() -> [u8; 64] {
    padded(b"Hello, world!")
}

fn policy() -> Policy {
    Policy {
        sgx: vec![SgxIdentity::MrEnclave(unhex(MRENCLAVE))],
        intel_tcb_statuses: vec!["ConfigurationAndSWHardeningNeeded".into()],
        ..Policy::default()
    }
}

#[test]
fn verifies_at_its_pinned_time() {
    let verified = verify_as_phone(&evidence(), &their_report_data(), &policy(), INTEL_TIME)
        .expect("verifies");
    assert_eq!(verified.platform, Platform::Sgx);
    assert_eq!(
        verified.measurements,
        Measurements::Sgx {
            mrenclave: unhex(MRENCLAVE),
            mrsigner: unhex(MRSIGNER),
            isv_prod_id: 0,
            isv_svn: 0,
        }
    );
    assert_eq!(
        verified.tcb,
        Tcb::Intel {
            status: "ConfigurationAndSWHardeningNeeded".into(),
            advisory_ids: vec!["INTEL-SA-00289".into(), "INTEL-SA-00615".into()],
        }
    );
    assert!(!verified.debug);
    assert_eq!(verified.report_data, their_report_data());
    assert_eq!(verified.produced_at, None);
    assert_eq!(verified.evidence_digest, evidence().digest());
}

#[test]
fn mrsigner_identities_match_product_and_minimum_svn() {
    let by_signer = |min_isv_svn, isv_prod_id| Policy {
        sgx: vec![SgxIdentity::MrSigner {
            mrsigner: unhex(MRSIGNER),
            isv_prod_id,
            min_isv_svn,
        }],
        ..policy()
    };
    verify(
        &evidence(),
        &their_report_data(),
        &by_signer(0, 0),
        INTEL_TIME,
    )
    .expect("verifies");
    for refused in [by_signer(1, 0), by_signer(0, 1)] {
        assert!(matches!(
            verify(&evidence(), &their_report_data(), &refused, INTEL_TIME),
            Err(AttestError::MeasurementRefused {
                platform: Platform::Sgx,
                ..
            })
        ));
    }
}

#[test]
fn fails_at_todays_date() {
    // The collateral's CRLs expired (2026-04-03); a phone needs fresh collateral.
    let err = verify(&evidence(), &their_report_data(), &policy(), TODAY).expect_err("expired");
    assert!(
        matches!(
            err,
            AttestError::Intel {
                platform: Platform::Sgx,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fails_with_any_signed_byte_flipped() {
    let quote = fixture("sgx/sgx_quote");
    let tried = crate::assert_every_flip_fails(quote.len(), SIGNED, 7, |at| {
        let mut flipped = quote.clone();
        flipped[at] ^= 0x01;
        let evidence = Evidence::Sgx {
            quote: flipped,
            collateral: collateral("sgx/sgx_quote_collateral.json"),
        };
        verify(&evidence, &their_report_data(), &policy(), INTEL_TIME)
    });
    assert_eq!(tried, 62);
}

#[test]
fn fails_with_its_collateral_tampered() {
    let mut tcb_info = collateral("sgx/sgx_quote_collateral.json");
    tcb_info.tcb_info = tcb_info
        .tcb_info
        .replacen("\"version\":3", "\"version\":3 ", 1);
    let mut qe_identity = collateral("sgx/sgx_quote_collateral.json");
    qe_identity.qe_identity_signature[10] ^= 1;
    let mut crl = collateral("sgx/sgx_quote_collateral.json");
    let last = crl.pck_crl.len() - 1;
    crl.pck_crl[last] ^= 1;
    for collateral in [tcb_info, qe_identity, crl] {
        let evidence = Evidence::Sgx {
            quote: fixture("sgx/sgx_quote"),
            collateral,
        };
        let err = verify(&evidence, &their_report_data(), &policy(), INTEL_TIME)
            .expect_err("tampered collateral");
        assert!(matches!(err, AttestError::Intel { .. }), "{err}");
    }
}

#[test]
fn fails_against_the_wrong_root() {
    let wrong = Policy {
        roots: Roots {
            intel_sgx_root: Roots::default().aws_nitro_root,
            ..Roots::default()
        },
        ..policy()
    };
    let err =
        verify(&evidence(), &their_report_data(), &wrong, INTEL_TIME).expect_err("wrong root");
    assert!(matches!(err, AttestError::Intel { .. }), "{err}");
}

#[test]
fn the_policy_refuses_other_enclaves_tcb_states_and_report_data() {
    let other_enclave = Policy {
        sgx: vec![SgxIdentity::MrEnclave([0; 32])],
        ..policy()
    };
    assert!(matches!(
        verify(
            &evidence(),
            &their_report_data(),
            &other_enclave,
            INTEL_TIME
        ),
        Err(AttestError::MeasurementRefused {
            platform: Platform::Sgx,
            accepted: 1,
            ..
        })
    ));
    let up_to_date_only = Policy {
        intel_tcb_statuses: Policy::default().intel_tcb_statuses,
        ..policy()
    };
    let err = verify(
        &evidence(),
        &their_report_data(),
        &up_to_date_only,
        INTEL_TIME,
    )
    .expect_err("not up to date");
    assert!(
        err.to_string()
            .contains("ConfigurationAndSWHardeningNeeded")
            && err.to_string().contains("INTEL-SA-00289"),
        "{err}"
    );
    let ours = binding::report_data(&[1; 32], &[2; 32]);
    assert!(matches!(
        verify(&evidence(), &ours, &policy(), INTEL_TIME),
        Err(AttestError::ReportDataMismatch {
            platform: Platform::Sgx,
            ..
        })
    ));
    assert!(matches!(
        verify(
            &evidence(),
            &their_report_data(),
            &Policy::default(),
            INTEL_TIME
        ),
        Err(AttestError::MeasurementRefused { accepted: 0, .. })
    ));
}

#[test]
fn is_not_tdx_evidence() {
    let Evidence::Sgx { quote, collateral } = evidence() else {
        unreachable!()
    };
    let as_tdx = Evidence::Tdx { quote, collateral };
    let err = verify(&as_tdx, &their_report_data(), &policy(), INTEL_TIME).expect_err("not TDX");
    assert!(
        err.to_string().contains("accepted: TEE type 0x81 (TDX)"),
        "{err}"
    );
}

#[test]
fn short_quotes_are_malformed_not_panics() {
    let quote = fixture("sgx/sgx_quote");
    for len in [0, 1, 47, 48, 100, 431, 432, 433, 1000, quote.len() - 1] {
        let evidence = Evidence::Sgx {
            quote: quote[..len].to_vec(),
            collateral: collateral("sgx/sgx_quote_collateral.json"),
        };
        assert!(verify(&evidence, &their_report_data(), &policy(), INTEL_TIME).is_err());
    }
}
