//! The key binding, tested with simulated evidence: the real fixtures carry someone else's
//! report data.

use confidant_attest::{
    AttestError, Evidence, EvidenceVerifier, Measurements, Platform, Policy, binding, verify,
};

const KEY: [u8; 32] = [0x11; 32];
const NONCE: [u8; 32] = [0x22; 32];
const MEASUREMENT: [u8; 48] = [0x33; 48];

fn development_policy() -> Policy {
    Policy {
        allow_simulated: true,
        simulated: vec![MEASUREMENT],
        ..Policy::default()
    }
}

#[test]
fn simulated_evidence_verifies_only_for_its_own_key_and_nonce() {
    let evidence = Evidence::simulated(&KEY, &NONCE, MEASUREMENT);
    let expected = binding::report_data(&KEY, &NONCE);
    let verified = crate::verify_as_phone(&evidence, &expected, &development_policy(), 0)
        .expect("its own key and nonce");
    assert_eq!(verified.platform, Platform::Simulated);
    assert_eq!(
        verified.measurements,
        Measurements::Simulated {
            measurement: MEASUREMENT
        }
    );
    assert_eq!(verified.report_data, expected);
    assert_eq!(verified.evidence_digest, evidence.digest());

    let mut other_key = KEY;
    other_key[31] ^= 1;
    let mut other_nonce = NONCE;
    other_nonce[0] ^= 1;
    for (key, nonce) in [(other_key, NONCE), (KEY, other_nonce), (NONCE, KEY)] {
        let err = verify(
            &evidence,
            &binding::report_data(&key, &nonce),
            &development_policy(),
            0,
        )
        .expect_err("another binding");
        assert_eq!(
            err,
            AttestError::ReportDataMismatch {
                platform: Platform::Simulated,
                expected_len: 64,
                found_len: 64
            }
        );
    }
}

#[test]
fn a_policy_that_does_not_allow_simulated_evidence_refuses_it() {
    let evidence = Evidence::simulated(&KEY, &NONCE, MEASUREMENT);
    let expected = binding::report_data(&KEY, &NONCE);
    let listed_but_not_allowed = Policy {
        allow_simulated: false,
        ..development_policy()
    };
    for policy in [Policy::default(), listed_but_not_allowed] {
        assert_eq!(
            policy.verify(&evidence, &expected, 0),
            Err(AttestError::SimulatedRefused)
        );
    }
}

#[test]
fn simulated_evidence_must_claim_a_listed_measurement() {
    let evidence = Evidence::simulated(&KEY, &NONCE, [0x44; 48]);
    let err = development_policy()
        .verify(&evidence, &binding::report_data(&KEY, &NONCE), 0)
        .expect_err("unlisted");
    assert!(
        matches!(err, AttestError::MeasurementRefused { accepted: 1, .. }),
        "{err}"
    );
}

#[test]
fn the_digest_changes_with_the_key_or_nonce() {
    let a = Evidence::simulated(&KEY, &NONCE, MEASUREMENT);
    let b = Evidence::simulated(&KEY, &[0; 32], MEASUREMENT);
    assert_ne!(a.digest(), b.digest());
}
