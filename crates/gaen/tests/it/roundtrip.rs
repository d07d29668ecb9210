//! Round trips, determinism, tamper detection and hostile input, on generated exports.

use std::io::{Cursor, Write};
use std::sync::LazyLock;

use gaen::{
    DiagnosisKey, Export, ExportFiles, IntervalNumber, ReportType, RollingPeriod, SignatureInfo,
    Signer, SigningKey, Tek, TransmissionRisk, VariantOfConcern,
};
use proptest::prelude::*;
use rand_core::OsRng;

static SIGNERS: LazyLock<Vec<Signer>> = LazyLock::new(|| {
    vec![
        Signer {
            key: SigningKey::generate(&mut OsRng),
            info: SignatureInfo::new("262", "v2"),
        },
        Signer {
            key: SigningKey::generate(&mut OsRng),
            info: SignatureInfo {
                app_bundle_id: Some("org.example.app".into()),
                ..SignatureInfo::new("262", "v1")
            },
        },
    ]
});

fn arb_key() -> impl Strategy<Value = DiagnosisKey> {
    (
        any::<[u8; 16]>(),
        0u32..=i32::MAX as u32,
        1u32..=144,
        proptest::option::of(0i64..=8),
        proptest::option::of(0i64..=5),
        proptest::option::of(any::<i32>()),
        proptest::option::of(0i64..=4),
    )
        .prop_map(
            |(tek, start, period, risk, report, onset, variant)| DiagnosisKey {
                tek: Tek(tek),
                rolling_start: IntervalNumber::new(start),
                rolling_period: RollingPeriod::new(period).expect("1..=144"),
                transmission_risk: risk.map(|r| TransmissionRisk::new(r).expect("0..=8")),
                report_type: report.map(|r| ReportType::from_code(r).expect("0..=5")),
                days_since_onset: onset,
                variant_of_concern: variant.map(|v| VariantOfConcern::new(v).expect("0..=4")),
            },
        )
}

fn arb_export() -> impl Strategy<Value = Export> {
    (
        any::<u64>(),
        any::<u64>(),
        "[A-Z]{2,3}",
        proptest::collection::vec(arb_key(), 0..40),
        proptest::collection::vec(arb_key(), 0..5),
    )
        .prop_map(|(start, end, region, keys, revised_keys)| Export {
            keys,
            revised_keys,
            ..Export::new(region, start, end)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn export_bin_round_trips(export in arb_export()) {
        prop_assert_eq!(Export::from_bin(&export.to_bin()).expect("decodes"), export);
    }

    #[test]
    fn sealed_zip_round_trips_and_verifies_under_every_signer(export in arb_export()) {
        let files = ExportFiles::seal(export.clone(), &SIGNERS).expect("seal");
        let zip = files.to_zip();
        let read = ExportFiles::from_zip(&zip).expect("unzip");
        prop_assert_eq!(&read, &files);
        let decoded = read.export().expect("decode");
        prop_assert_eq!(&decoded.keys, &export.keys);
        prop_assert_eq!(decoded.signature_infos.len(), 2);
        for signer in SIGNERS.iter() {
            let signature = read.verify(&signer.key.verifying_key()).expect("verifies");
            prop_assert_eq!(signature.info.as_ref(), Some(&signer.info));
        }
        // Deterministic: sealing and zipping again gives the same bytes.
        prop_assert_eq!(ExportFiles::seal(export, &SIGNERS).expect("seal").to_zip(), zip);
    }

    #[test]
    fn any_flipped_bit_in_export_bin_fails_verification(
        export in arb_export(), position in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let mut files = ExportFiles::seal(export, &SIGNERS[..1]).expect("seal");
        let at = position.index(files.bin.len());
        files.bin[at] ^= 1 << bit;
        prop_assert!(files.verify(&SIGNERS[0].key.verifying_key()).is_err());
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Export::from_bin(&bytes);
        let mut with_header = gaen::EXPORT_HEADER.to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = Export::from_bin(&with_header);
        let _ = ExportFiles::from_zip(&bytes);
        let files = ExportFiles { bin: with_header, sig: bytes };
        prop_assert!(files.verify(&SIGNERS[0].key.verifying_key()).is_err());
    }

    #[test]
    fn truncated_zips_are_refused(cut in any::<prop::sample::Index>()) {
        let files = ExportFiles::seal(Export::new("DE", 0, 3600), &SIGNERS[..1]).expect("seal");
        let zip = files.to_zip();
        let at = cut.index(zip.len());
        prop_assert!(ExportFiles::from_zip(&zip[..at]).is_err());
    }
}

#[test]
fn extra_zip_members_are_ignored() {
    let files = ExportFiles::seal(Export::new("DE", 0, 3600), &SIGNERS[..1]).expect("seal");
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for (name, bytes) in [
        ("README.txt", &b"hello"[..]),
        ("export.sig", &files.sig),
        ("__MACOSX/._export.bin", &b"junk"[..]),
        ("export.bin", &files.bin),
    ] {
        writer.start_file(name, options).expect("member");
        writer.write_all(bytes).expect("write");
    }
    let zip = writer.finish().expect("finish").into_inner();
    let read = ExportFiles::from_zip(&zip).expect("extra members are fine");
    assert_eq!(read, files);
    assert!(read.verify(&SIGNERS[0].key.verifying_key()).is_ok());
}

#[test]
fn zip_without_signature_member_is_named() {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .start_file("export.bin", zip::write::SimpleFileOptions::default())
        .expect("member");
    writer.write_all(gaen::EXPORT_HEADER).expect("write");
    let zip = writer.finish().expect("finish").into_inner();
    let error = ExportFiles::from_zip(&zip).expect_err("no export.sig");
    assert_eq!(
        error.to_string(),
        "the zip archive has no export.sig member"
    );
}

#[test]
fn duplicate_and_all_zero_keys_survive() {
    let zero = DiagnosisKey::new(
        Tek([0; 16]),
        IntervalNumber::new(0),
        RollingPeriod::FULL_DAY,
    );
    let export = Export {
        keys: vec![zero, zero],
        ..Export::new("DE", 0, 3600)
    };
    let files = ExportFiles::seal(export, &SIGNERS[..1]).expect("seal");
    let read = ExportFiles::from_zip(&files.to_zip()).expect("zip");
    assert_eq!(read.export().expect("decode").keys, [zero, zero]);
}

#[test]
fn too_many_or_no_signers_are_refused() {
    let eleven: Vec<Signer> = (0..11).map(|_| SIGNERS[0].clone()).collect();
    assert!(ExportFiles::seal(Export::new("DE", 0, 1), &eleven).is_err());
    assert!(ExportFiles::seal(Export::new("DE", 0, 1), &[]).is_err());
}
