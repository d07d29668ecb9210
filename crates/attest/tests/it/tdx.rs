//! The real TDX v4 quote (`tdx/`): UpToDate at 2025-07-01.

use confidant_attest::{
    AttestError, Evidence, Measurements, Platform, Policy, Roots, Tcb, TdxIdentity, binding, verify,
};

use crate::{INTEL_TIME, TODAY, collateral, fixture, unhex, verify_as_phone};

/// From dcap-qvl's own parse of this quote (its insta snapshot).
const MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const RTMR0: &str = "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0";
const RTMR1: &str = "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378";
const RTMR2: &str = "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132";
const REPORT_DATA: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
/// Header (48) and TD report body (584).
const SIGNED: std::ops::Range<usize> = 0..632;

fn evidence() -> Evidence {
    Evidence::Tdx {
        quote: fixture("tdx/tdx_quote"),
        collateral: collateral("tdx/tdx_quote_collateral.json"),
    }
}

fn their_report_data() -> [u8; 64] {
    unhex(REPORT_DATA)
}

fn policy() -> Policy {
    Policy {
        tdx: vec![TdxIdentity {
            mrtd: unhex(MRTD),
            // RTMR3 is extended at run time: not pinned.
            rtmrs: [
                Some(unhex(RTMR0)),
                Some(unhex(RTMR1)),
                Some(unhex(RTMR2)),
                None,
            ],
        }],
        ..Policy::default()
    }
}

#[test]
fn verifies_up_to_date_at_its_pinned_time() {
    let verified = verify_as_phone(&evidence(), &their_report_data(), &policy(), INTEL_TIME)
        .expect("verifies");
    assert_eq!(verified.platform, Platform::Tdx);
    assert_eq!(
        verified.measurements,
        Measurements::Tdx {
            mrtd: unhex(MRTD),
            rtmrs: [unhex(RTMR0), unhex(RTMR1), unhex(RTMR2), [0; 48]],
        }
    );
    let Tcb::Intel { status, .. } = &verified.tcb else {
        panic!("{:?}", verified.tcb)
    };
    assert_eq!(status, "UpToDate");
    assert!(!verified.debug);
    assert_eq!(verified.produced_at, None);
}

#[test]
fn fails_at_todays_date() {
    let err = verify(&evidence(), &their_report_data(), &policy(), TODAY).expect_err("expired");
    assert!(
        matches!(
            err,
            AttestError::Intel {
                platform: Platform::Tdx,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fails_with_any_signed_byte_flipped() {
    let quote = fixture("tdx/tdx_quote");
    let tried = crate::assert_every_flip_fails(quote.len(), SIGNED, 7, |at| {
        let mut flipped = quote.clone();
        flipped[at] ^= 0x01;
        let evidence = Evidence::Tdx {
            quote: flipped,
            collateral: collateral("tdx/tdx_quote_collateral.json"),
        };
        verify(&evidence, &their_report_data(), &policy(), INTEL_TIME)
    });
    assert_eq!(tried, 91);
}

#[test]
fn fails_against_the_wrong_root() {
    let wrong = Policy {
        roots: Roots {
            intel_sgx_root: Roots::default().amd_arks[0].clone(),
            ..Roots::default()
        },
        ..policy()
    };
    let err =
        verify(&evidence(), &their_report_data(), &wrong, INTEL_TIME).expect_err("wrong root");
    assert!(matches!(err, AttestError::Intel { .. }), "{err}");
}

#[test]
fn the_policy_refuses_other_tds_and_report_data() {
    let mut other_rtmr = policy();
    other_rtmr.tdx[0].rtmrs[3] = Some([1; 48]);
    let mut other_mrtd = policy();
    other_mrtd.tdx[0].mrtd[0] ^= 1;
    for refused in [other_rtmr, other_mrtd] {
        assert!(matches!(
            verify(&evidence(), &their_report_data(), &refused, INTEL_TIME),
            Err(AttestError::MeasurementRefused {
                platform: Platform::Tdx,
                ..
            })
        ));
    }
    assert!(matches!(
        verify(
            &evidence(),
            &binding::report_data(&[1; 32], &[2; 32]),
            &policy(),
            INTEL_TIME
        ),
        Err(AttestError::ReportDataMismatch { .. })
    ));
}

#[test]
fn is_not_sgx_evidence() {
    let Evidence::Tdx { quote, collateral } = evidence() else {
        unreachable!()
    };
    let as_sgx = Evidence::Sgx { quote, collateral };
    let err = verify(&as_sgx, &their_report_data(), &policy(), INTEL_TIME).expect_err("not SGX");
    assert!(
        err.to_string().contains("accepted: TEE type 0x0 (SGX)"),
        "{err}"
    );
}
