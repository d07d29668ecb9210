//! The real Nitro attestation documents (`nitro/`), each at its own `timestamp`.

use confidant_attest::{
    AttestError, Evidence, Measurements, NitroPcrs, Platform, Policy, Roots, Tcb, binding, verify,
};

use crate::{TODAY, fixture, unhex, verify_as_phone};

/// `timestamp` of each document, in seconds (the documents say milliseconds).
const NONDEBUG_TIME: u64 = 1_665_651_482; // 2022-10-13T08:58:02.136Z
const DEBUG_TIME: u64 = 1_665_582_606; // 2022-10-12T13:50:06.081Z
const PCR0: &str = "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";
const PCR1: &str = "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f";
const PCR2: &str = "d8f114da658de5481f8d9ec73907feb553560787522f705c92d7d96beed8e15e2aa611984e098c576832c292e8dc469a";

fn nondebug() -> Evidence {
    Evidence::Nitro {
        document: fixture("nitro/attestation-doc-nondebug.bin"),
    }
}

fn debug() -> Evidence {
    Evidence::Nitro {
        document: fixture("nitro/attestation-doc-debug.bin"),
    }
}

fn pcrs() -> NitroPcrs {
    NitroPcrs {
        pcr0: unhex(PCR0),
        pcr1: unhex(PCR1),
        pcr2: unhex(PCR2),
    }
}

const ZERO_PCRS: NitroPcrs = NitroPcrs {
    pcr0: [0; 48],
    pcr1: [0; 48],
    pcr2: [0; 48],
};

fn policy() -> Policy {
    Policy {
        nitro: vec![pcrs()],
        ..Policy::default()
    }
}

#[test]
fn the_pinned_root_is_the_fixtures_root() {
    let pem = fixture("nitro/aws-nitro-root-g1.pem");
    assert_eq!(
        crate::pem_certificates(&pem),
        vec![Roots::default().aws_nitro_root]
    );
}

#[test]
fn verifies_at_its_own_time() {
    // This document has no user_data: its report data is empty.
    let verified = verify_as_phone(&nondebug(), b"", &policy(), NONDEBUG_TIME).expect("verifies");
    assert_eq!(verified.platform, Platform::Nitro);
    assert_eq!(
        verified.measurements,
        Measurements::Nitro {
            pcrs: [unhex(PCR0), unhex(PCR1), unhex(PCR2)],
            module_id: "i-020b6af9246d90e92-enc0183d09086c24190".into(),
        }
    );
    assert!(!verified.debug);
    assert_eq!(verified.tcb, Tcb::NotApplicable);
    assert_eq!(verified.produced_at, Some(NONDEBUG_TIME));
    assert!(verified.report_data.is_empty());
}

#[test]
fn a_debug_document_is_refused_unless_the_policy_allows_debug() {
    let zero_pcrs_listed = Policy {
        nitro: vec![ZERO_PCRS],
        ..Policy::default()
    };
    let err = verify(&debug(), b"hello, world!", &zero_pcrs_listed, DEBUG_TIME)
        .expect_err("debug refused");
    assert_eq!(
        err,
        AttestError::DebugRefused {
            platform: Platform::Nitro
        }
    );
    let allows_debug = Policy {
        allow_debug: true,
        ..zero_pcrs_listed
    };
    let verified =
        verify(&debug(), b"hello, world!", &allows_debug, DEBUG_TIME).expect("debug allowed");
    assert!(verified.debug);
    assert_eq!(verified.report_data, b"hello, world!");
}

#[test]
fn fails_at_todays_date_and_when_older_than_the_maximum_age() {
    let err = verify(&nondebug(), b"", &policy(), TODAY).expect_err("too old");
    assert!(matches!(err, AttestError::TooOld { .. }), "{err}");
    let max_age = policy().max_age_secs;
    verify(&nondebug(), b"", &policy(), NONDEBUG_TIME + max_age).expect("at the maximum age");
    assert!(matches!(
        verify(&nondebug(), b"", &policy(), NONDEBUG_TIME + max_age + 1),
        Err(AttestError::TooOld { .. })
    ));
    let skew = policy().max_clock_skew_secs;
    verify(&nondebug(), b"", &policy(), NONDEBUG_TIME - skew).expect("a slow clock");
    assert!(matches!(
        verify(&nondebug(), b"", &policy(), NONDEBUG_TIME - skew - 1),
        Err(AttestError::FromTheFuture { .. })
    ));
}

#[test]
fn certificates_are_checked_at_the_documents_time() {
    // A policy that accepts week-old documents still refuses one whose leaf had expired.
    let patient = Policy {
        max_age_secs: 7 * 24 * 3600,
        ..policy()
    };
    verify(&nondebug(), b"", &patient, NONDEBUG_TIME + 24 * 3600).expect("the leaf was valid");
}

#[test]
fn fails_with_any_signed_byte_flipped() {
    // Every byte is part of the signed payload (or the protected header), the signature, or
    // the COSE structure around them. Each try costs a P-384 verification (~8 ms in a debug
    // build): every 11th byte of one document, every 37th of the other.
    for (evidence, step) in [(nondebug(), 11), (debug(), 37)] {
        let Evidence::Nitro { document } = evidence else {
            unreachable!()
        };
        let allow_all = Policy {
            allow_debug: true,
            nitro: vec![pcrs(), ZERO_PCRS],
            max_age_secs: u64::MAX,
            ..Policy::default()
        };
        let (time, report_data): (u64, &[u8]) = if document.len() == 4654 {
            (NONDEBUG_TIME, b"")
        } else {
            (DEBUG_TIME, b"hello, world!")
        };
        let tried = crate::assert_every_flip_fails(document.len(), 0..document.len(), step, |at| {
            let mut flipped = document.clone();
            flipped[at] ^= 0x01;
            verify(
                &Evidence::Nitro { document: flipped },
                report_data,
                &allow_all,
                time,
            )
        });
        assert_eq!(tried, document.len().div_ceil(step));
    }
}

#[test]
fn fails_against_the_wrong_root() {
    let wrong = Policy {
        roots: Roots {
            aws_nitro_root: Roots::default().intel_sgx_root,
            ..Roots::default()
        },
        ..policy()
    };
    let err = verify(&nondebug(), b"", &wrong, NONDEBUG_TIME).expect_err("wrong root");
    assert!(matches!(err, AttestError::UntrustedRoot { .. }), "{err}");
}

#[test]
fn the_policy_refuses_other_pcrs_and_report_data() {
    let other = Policy {
        nitro: vec![NitroPcrs {
            pcr2: [0; 48],
            ..pcrs()
        }],
        ..policy()
    };
    assert!(matches!(
        verify(&nondebug(), b"", &other, NONDEBUG_TIME),
        Err(AttestError::MeasurementRefused {
            platform: Platform::Nitro,
            ..
        })
    ));
    assert!(matches!(
        verify(
            &nondebug(),
            &binding::report_data(&[1; 32], &[2; 32]),
            &policy(),
            NONDEBUG_TIME
        ),
        Err(AttestError::ReportDataMismatch { .. })
    ));
}

#[test]
fn truncated_and_extended_documents_are_refused_without_panics() {
    let Evidence::Nitro { document } = nondebug() else {
        unreachable!()
    };
    for len in (0..document.len()).step_by(97) {
        let evidence = Evidence::Nitro {
            document: document[..len].to_vec(),
        };
        assert!(verify(&evidence, b"", &policy(), NONDEBUG_TIME).is_err());
    }
    let mut extended = document.clone();
    extended.push(0);
    let err = verify(
        &Evidence::Nitro { document: extended },
        b"",
        &policy(),
        NONDEBUG_TIME,
    )
    .expect_err("trailing byte");
    assert!(err.to_string().contains("accepted: one CBOR item"), "{err}");
}
