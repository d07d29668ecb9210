//! The real SEV-SNP report of a Milan chip (`snp/`), with its VCEK and ASK/ARK chain.
//!
//! An SNP report carries no time. The fixture is pinned at the VCEK's notBefore, the first
//! second at which its whole chain is valid.

use confidant_attest::{
    AttestError, Evidence, Measurements, Platform, Policy, Roots, SnpTcb, Tcb, binding, verify,
};

use crate::{TODAY, fixture, pem_certificates, unhex, verify_as_phone};

/// The VCEK's validity: 2023-04-03T19:23:43Z ..= 2030-04-03T19:23:43Z.
const VCEK_NOT_BEFORE: u64 = 1_680_549_823;
const VCEK_NOT_AFTER: u64 = 1_901_474_623;
const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";
const REPORT_DATA: &str = "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd";
/// The ASK's serial number, 0x010001.
const ASK_SERIAL: [u8; 3] = [0x01, 0x00, 0x01];
/// What the VCEK signs, and the signature (r and s, 72 bytes each).
const SIGNED: std::ops::Range<usize> = 0..0x2A0;
const SIGNATURE: std::ops::Range<usize> = 0x2A0..0x330;

fn report() -> Vec<u8> {
    let text = String::from_utf8(fixture("snp/report_milan.hex")).expect("text");
    hex::decode(text.trim()).expect("hex")
}

fn evidence_with(report: Vec<u8>) -> Evidence {
    let chain = pem_certificates(&fixture("snp/cert_chain_milan"));
    assert_eq!(chain.len(), 2, "ASK then ARK");
    Evidence::Snp {
        report,
        vcek_der: fixture("snp/vcek_milan.der"),
        ask_der: chain[0].clone(),
        ark_der: chain[1].clone(),
    }
}

fn evidence() -> Evidence {
    evidence_with(report())
}

fn their_report_data() -> [u8; 64] {
    unhex(REPORT_DATA)
}

fn policy() -> Policy {
    Policy {
        snp: vec![unhex(MEASUREMENT)],
        ..Policy::default()
    }
}

#[test]
fn verifies_at_its_pinned_time() {
    let verified = verify_as_phone(
        &evidence(),
        &their_report_data(),
        &policy(),
        VCEK_NOT_BEFORE,
    )
    .expect("verifies");
    assert_eq!(verified.platform, Platform::Snp);
    let Measurements::Snp {
        measurement,
        vmpl,
        guest_policy,
        host_data,
    } = verified.measurements
    else {
        panic!("{:?}", verified.measurements)
    };
    assert_eq!(measurement, unhex::<48>(MEASUREMENT));
    assert_eq!((vmpl, guest_policy, host_data), (0, 0x30000, [0; 32]));
    assert_eq!(
        verified.tcb,
        Tcb::Snp(SnpTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        })
    );
    assert!(!verified.debug);
    assert_eq!(verified.produced_at, None);
}

#[test]
fn the_ark_in_the_fixture_is_amds_milan_ark() {
    let Evidence::Snp { ark_der, .. } = evidence() else {
        unreachable!()
    };
    assert_eq!(ark_der, Roots::default().amd_arks[0]);
}

/// Nothing in SNP evidence expires before the VCEK does (2030): at today's date it still
/// verifies. Only a nonce (challenge mode), a minimum TCB or AMD's CRL can make a phone refuse
/// an old SNP report.
#[test]
fn at_todays_date_it_still_verifies_but_not_outside_the_vcek_validity() {
    verify(&evidence(), &their_report_data(), &policy(), TODAY).expect("verifies today");
    verify(&evidence(), &their_report_data(), &policy(), VCEK_NOT_AFTER).expect("last second");
    for at in [VCEK_NOT_BEFORE - 1, VCEK_NOT_AFTER + 1] {
        let err = verify(&evidence(), &their_report_data(), &policy(), at).expect_err("dates");
        assert!(
            matches!(err, AttestError::CertificateNotValid { ref certificate, .. } if certificate == "VCEK"),
            "{err}"
        );
    }
}

#[test]
fn fails_with_any_signed_byte_flipped() {
    let report = report();
    let tried = crate::assert_every_flip_fails(report.len(), SIGNED, 7, |at| {
        let mut flipped = report.clone();
        flipped[at] ^= 0x01;
        verify(
            &evidence_with(flipped),
            &their_report_data(),
            &policy(),
            VCEK_NOT_BEFORE,
        )
    });
    assert_eq!(tried, 96);
    let tried = crate::assert_every_flip_fails(report.len(), SIGNATURE, 7, |at| {
        let mut flipped = report.clone();
        flipped[at] ^= 0x01;
        verify(
            &evidence_with(flipped),
            &their_report_data(),
            &policy(),
            VCEK_NOT_BEFORE,
        )
    });
    assert_eq!(tried, 21);
}

#[test]
fn fails_with_reserved_bytes_flipped_that_sev_would_not_see() {
    // Bytes that sev's parser skips (reserved) are signed all the same.
    for at in [0x4C, 0x18B, 0x1FF, 0x29F] {
        let mut flipped = report();
        flipped[at] ^= 0x01;
        let err = verify(
            &evidence_with(flipped),
            &their_report_data(),
            &policy(),
            VCEK_NOT_BEFORE,
        )
        .expect_err("signed");
        assert!(
            matches!(err, AttestError::BadSignature { .. }),
            "{at:#x}: {err}"
        );
    }
}

#[test]
fn fails_against_the_wrong_root() {
    let genoa_only = Policy {
        roots: Roots {
            amd_arks: vec![Roots::default().amd_arks[1].clone()],
            ..Roots::default()
        },
        ..policy()
    };
    let err = verify(
        &evidence(),
        &their_report_data(),
        &genoa_only,
        VCEK_NOT_BEFORE,
    )
    .expect_err("Milan ARK not pinned");
    assert!(matches!(err, AttestError::UntrustedRoot { .. }), "{err}");

    // A pinned ARK that did not sign this chain.
    let Evidence::Snp {
        report,
        vcek_der,
        ask_der,
        ..
    } = evidence()
    else {
        unreachable!()
    };
    let other_ark = Evidence::Snp {
        report,
        vcek_der,
        ask_der,
        ark_der: Roots::default().amd_arks[1].clone(),
    };
    let err = verify(&other_ark, &their_report_data(), &policy(), VCEK_NOT_BEFORE)
        .expect_err("Genoa ARK did not sign the Milan ASK");
    assert!(matches!(err, AttestError::BadSignature { .. }), "{err}");
}

#[test]
fn a_certificate_in_the_wrong_place_is_refused() {
    let Evidence::Snp {
        report,
        vcek_der,
        ask_der,
        ark_der,
    } = evidence()
    else {
        unreachable!()
    };
    let swapped = Evidence::Snp {
        report,
        vcek_der: ask_der,
        ask_der: vcek_der,
        ark_der,
    };
    assert!(verify(&swapped, &their_report_data(), &policy(), VCEK_NOT_BEFORE).is_err());
}

#[test]
fn the_policy_refuses_other_measurements_tcb_revoked_asks_and_report_data() {
    let other = Policy {
        snp: vec![[0; 48]],
        ..policy()
    };
    assert!(matches!(
        verify(&evidence(), &their_report_data(), &other, VCEK_NOT_BEFORE),
        Err(AttestError::MeasurementRefused {
            platform: Platform::Snp,
            ..
        })
    ));
    let newer_firmware = Policy {
        snp_min_tcb: SnpTcb {
            snp: 9,
            ..SnpTcb::default()
        },
        ..policy()
    };
    assert!(matches!(
        verify(
            &evidence(),
            &their_report_data(),
            &newer_firmware,
            VCEK_NOT_BEFORE
        ),
        Err(AttestError::TcbRefused { .. })
    ));
    let revoked = Policy {
        snp_revoked_ask_serials: vec![ASK_SERIAL.to_vec()],
        ..policy()
    };
    assert!(matches!(
        verify(&evidence(), &their_report_data(), &revoked, VCEK_NOT_BEFORE),
        Err(AttestError::Revoked { .. })
    ));
    assert!(matches!(
        verify(
            &evidence(),
            &binding::report_data(&[1; 32], &[2; 32]),
            &policy(),
            VCEK_NOT_BEFORE
        ),
        Err(AttestError::ReportDataMismatch { .. })
    ));
}

#[test]
fn reports_of_other_lengths_are_malformed() {
    let report = report();
    for len in [0, 0x2A0, 1183] {
        let err = verify(
            &evidence_with(report[..len].to_vec()),
            &their_report_data(),
            &policy(),
            VCEK_NOT_BEFORE,
        )
        .expect_err("short");
        assert!(err.to_string().contains("accepted: 1184"), "{err}");
    }
}
