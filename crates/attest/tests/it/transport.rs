//! The JSON transport encoding with real evidence, and arbitrary bytes everywhere a phone takes
//! outside bytes.

use confidant_attest::{Evidence, MAX_EVIDENCE_JSON, Policy, verify};
use proptest::prelude::*;

use crate::{collateral, fixture, pem_certificates};

fn real_evidence() -> Vec<Evidence> {
    let text = String::from_utf8(fixture("snp/report_milan.hex")).expect("text");
    let chain = pem_certificates(&fixture("snp/cert_chain_milan"));
    vec![
        Evidence::Sgx {
            quote: fixture("sgx/sgx_quote"),
            collateral: collateral("sgx/sgx_quote_collateral.json"),
        },
        Evidence::Tdx {
            quote: fixture("tdx/tdx_quote"),
            collateral: collateral("tdx/tdx_quote_collateral.json"),
        },
        Evidence::Snp {
            report: hex::decode(text.trim()).expect("hex"),
            vcek_der: fixture("snp/vcek_milan.der"),
            ask_der: chain[0].clone(),
            ark_der: chain[1].clone(),
        },
        Evidence::Nitro {
            document: fixture("nitro/attestation-doc-nondebug.bin"),
        },
    ]
}

#[test]
fn real_evidence_round_trips_canonically_within_the_size_limit() {
    for evidence in real_evidence() {
        let json = evidence.to_json();
        assert!(json.len() < MAX_EVIDENCE_JSON / 4, "{}", json.len());
        let parsed = Evidence::from_json(json.as_bytes()).expect("parses");
        assert_eq!(parsed, evidence);
        assert_eq!(parsed.to_json(), json);
    }
}

#[test]
fn the_digest_is_pinned() {
    // A change here changes what every phone binds its requests to.
    let nitro = &real_evidence()[3];
    assert_eq!(
        hex::encode(nitro.digest()),
        "4a39c4d1dd76d5e1dc356025bd0c02278c9487f7104a84856b78432f3feaaa13"
    );
}

fn arbitrary_policy() -> Policy {
    Policy {
        allow_simulated: true,
        allow_debug: true,
        ..Policy::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Evidence::from_json(&bytes);
    }

    #[test]
    fn arbitrary_platform_bytes_never_panic_and_never_verify(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        report in proptest::collection::vec(any::<u8>(), 1184),
    ) {
        let policy = arbitrary_policy();
        let real = real_evidence();
        let Evidence::Sgx { collateral, .. } = real[0].clone() else { unreachable!() };
        let Evidence::Snp { vcek_der, ask_der, ark_der, .. } = real[2].clone() else { unreachable!() };
        let cases = [
            Evidence::Sgx { quote: bytes.clone(), collateral: collateral.clone() },
            Evidence::Tdx { quote: bytes.clone(), collateral },
            Evidence::Snp { report, vcek_der: vcek_der.clone(), ask_der: ask_der.clone(), ark_der: ark_der.clone() },
            Evidence::Snp { report: bytes.clone(), vcek_der: bytes.clone(), ask_der, ark_der },
            Evidence::Nitro { document: bytes },
        ];
        for evidence in cases {
            prop_assert!(verify(&evidence, &[], &policy, crate::INTEL_TIME).is_err());
        }
    }

    #[test]
    fn mutated_real_evidence_never_panics(which in 0usize..4, at in any::<prop::sample::Index>(), value in any::<u8>()) {
        let mut evidence = real_evidence().swap_remove(which);
        let bytes = match &mut evidence {
            Evidence::Sgx { quote, .. } | Evidence::Tdx { quote, .. } => quote,
            Evidence::Snp { report, .. } => report,
            Evidence::Nitro { document } => document,
            Evidence::Simulated { .. } => unreachable!(),
        };
        let i = at.index(bytes.len());
        bytes[i] = value;
        let _ = verify(&evidence, &[], &arbitrary_policy(), crate::INTEL_TIME);
    }
}
