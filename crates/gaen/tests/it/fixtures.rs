//! Real export files: Corona-Warn-App (Germany) and Google's reference server.

use std::collections::BTreeMap;

use gaen::{ExportFiles, SignatureError, VerifyingKey};

use crate::{fixture, fixture_text};

struct Expected {
    file: &'static str,
    public_key: &'static str,
    keys: usize,
    region: &'static str,
    key_id: &'static str,
    key_version: &'static str,
}

const EXPORTS: [Expected; 3] = [
    Expected {
        file: "cwa-2021-01-31.zip",
        public_key: "cwa-public-key.pem",
        keys: 8399,
        region: "DE",
        key_id: "262",
        key_version: "v1",
    },
    Expected {
        file: "cwa-2021-02-14.zip",
        public_key: "cwa-public-key.pem",
        keys: 5586,
        region: "DE",
        key_id: "262",
        key_version: "v1",
    },
    Expected {
        file: "google-reference-2-keys.zip",
        public_key: "google-reference-public.pem",
        keys: 2,
        region: "US",
        key_id: "some_id",
        key_version: "1",
    },
];

fn public_key(name: &str) -> VerifyingKey {
    VerifyingKey::from_pem(&fixture_text(name)).expect("fixture public key")
}

#[test]
fn real_exports_parse_and_verify() {
    for expected in &EXPORTS {
        let files = ExportFiles::from_zip(&fixture(expected.file)).expect(expected.file);
        let export = files.export().expect(expected.file);
        assert_eq!(export.keys.len(), expected.keys, "{}", expected.file);
        assert_eq!(export.region, expected.region);
        assert!(export.start_timestamp < export.end_timestamp);
        let info = export.signature_infos.first().expect("signature info");
        assert_eq!(info.verification_key_id.as_deref(), Some(expected.key_id));
        assert_eq!(
            info.verification_key_version.as_deref(),
            Some(expected.key_version)
        );

        let signature = files
            .verify(&public_key(expected.public_key))
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", expected.file));
        assert_eq!(signature.info.as_ref(), Some(info));
    }
}

#[test]
fn real_exports_do_not_verify_under_the_other_key() {
    let cwa = ExportFiles::from_zip(&fixture("cwa-2021-01-31.zip")).expect("zip");
    assert!(matches!(
        cwa.verify(&public_key("google-reference-public.pem")),
        Err(SignatureError::Mismatch(1))
    ));
}

#[test]
fn cwa_export_carries_deprecated_fields_and_short_rolling_periods() {
    let files = ExportFiles::from_zip(&fixture("cwa-2021-01-31.zip")).expect("zip");
    let export = files.export().expect("export");
    assert_eq!(
        export.signature_infos[0].app_bundle_id.as_deref(),
        Some("de.rki.coronawarnapp")
    );
    let mut periods = BTreeMap::new();
    for key in &export.keys {
        *periods.entry(key.rolling_period.get()).or_insert(0usize) += 1;
    }
    assert!(periods.keys().any(|p| *p < 144), "periods: {periods:?}");
    assert!(periods.contains_key(&144));
}

#[test]
fn google_reference_keys_have_periods_1_and_114() {
    let files = ExportFiles::from_zip(&fixture("google-reference-2-keys.zip")).expect("zip");
    let mut periods: Vec<u32> = files
        .export()
        .expect("export")
        .keys
        .iter()
        .map(|k| k.rolling_period.get())
        .collect();
    periods.sort_unstable();
    assert_eq!(periods, [1, 114]);
}

/// Decoding loses nothing: re-encoding a real file reproduces its exact bytes, so a file we
/// write differs from theirs only where the content does.
#[test]
fn real_export_bin_re_encodes_byte_for_byte() {
    for expected in &EXPORTS {
        let files = ExportFiles::from_zip(&fixture(expected.file)).expect("zip");
        let export = files.export().expect("export");
        assert!(
            export.to_bin() == files.bin,
            "{} re-encodes differently",
            expected.file
        );
    }
}

#[test]
fn flipped_bytes_in_a_real_export_fail_verification() {
    let key = public_key("cwa-public-key.pem");
    let files = ExportFiles::from_zip(&fixture("cwa-2021-02-14.zip")).expect("zip");
    let len = files.bin.len();
    // Header, every region of the body, and the last byte.
    let positions = (0..16).chain((16..len).step_by(len / 97)).chain([len - 1]);
    for position in positions {
        let mut tampered = files.clone();
        tampered.bin[position] ^= 0x01;
        assert!(
            tampered.verify(&key).is_err(),
            "flip at {position} still verifies"
        );
    }
    let mut tampered = files.clone();
    let last = tampered.sig.len() - 1;
    tampered.sig[last] ^= 0x01;
    assert!(
        tampered.verify(&key).is_err(),
        "flip in export.sig still verifies"
    );
}
