//! `export inspect | verify | keys | build` on real and freshly built files.

use std::fs;
use std::process::Command;

use gaen::ExportFiles;
use serde_json::Value;

use crate::{confidant, fails, fixture, generate_keys, ok, path_str, stderr, test_data};

#[test]
fn inspect_reports_real_exports() {
    for (file, keys) in [("cwa-2021-01-31.zip", 8399), ("cwa-2021-02-14.zip", 5586)] {
        let path = fixture(file);
        let json: Value = serde_json::from_str(&ok(confidant(&[
            "export",
            "inspect",
            path_str(&path),
            "--json",
            "--public-key",
            path_str(&fixture("cwa-public-key.pem")),
        ])))
        .expect("JSON");
        assert_eq!(json["keys"], keys);
        assert_eq!(json["region"], "DE");
        assert_eq!(json["verified"], true);
        assert_eq!(json["signature_infos"][0]["key_id"], "262");
        assert_eq!(
            json["signature_infos"][0]["app_bundle_id"],
            "de.rki.coronawarnapp"
        );
        let histogram_total: u64 = json["rolling_periods"]
            .as_array()
            .expect("histogram")
            .iter()
            .map(|p| p["keys"].as_u64().expect("count"))
            .sum();
        assert_eq!(histogram_total, keys);

        let text = ok(confidant(&["export", "inspect", path_str(&path)]));
        assert!(
            text.contains(&format!("keys:            {keys}\n")),
            "{text}"
        );
        assert!(text.contains("region:          DE\n"));
    }
}

#[test]
fn verify_exits_non_zero_and_names_the_file_that_fails() {
    let cwa_key = fixture("cwa-public-key.pem");
    let good = [fixture("cwa-2021-01-31.zip"), fixture("cwa-2021-02-14.zip")];
    let out = ok(confidant(&[
        "export",
        "verify",
        path_str(&good[0]),
        path_str(&good[1]),
        "--public-key",
        path_str(&cwa_key),
    ]));
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 2);

    let google = fixture("google-reference-2-keys.zip");
    let output = confidant(&[
        "export",
        "verify",
        path_str(&good[0]),
        path_str(&google),
        "--public-key",
        path_str(&cwa_key),
    ]);
    let err = fails(output);
    assert!(err.contains("google-reference-2-keys.zip"), "{err}");
    assert!(!err.contains("cwa-2021-01-31"), "{err}");

    ok(confidant(&[
        "export",
        "verify",
        path_str(&google),
        "--public-key",
        path_str(&fixture("google-reference-public.pem")),
    ]));
}

fn build_args<'a>(keys: &'a str, signing_key: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "export",
        "build",
        "--keys",
        keys,
        "--signing-key",
        signing_key,
        "--region",
        "DE",
        "--key-id",
        "262",
        "--key-version",
        "v1",
        "--start",
        "2021-01-31T00:00:00Z",
        "--end",
        "1612137600",
        "--out",
        out,
    ]
}

/// `export build` output is byte-identical to the checked-in golden file (ECDSA signing is
/// deterministic, zip timestamps fixed). Regenerate with `CONFIDANT_BLESS=1` after an
/// intended format change, and say why in the commit.
#[test]
fn build_matches_golden_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("export.zip");
    let keys = test_data("golden-keys.csv");
    let signing_key = test_data("golden-signing-key.pem");
    ok(confidant(&build_args(
        path_str(&keys),
        path_str(&signing_key),
        path_str(&out),
    )));
    let built = fs::read(&out).expect("built");
    let golden_path = test_data("golden-export.zip");
    if std::env::var_os("CONFIDANT_BLESS").is_some() {
        fs::write(&golden_path, &built).expect("bless");
    }
    let golden = fs::read(&golden_path).expect("golden file");
    assert!(
        built == golden,
        "export build output differs from {}",
        golden_path.display()
    );

    // The golden file is a real export: it verifies and holds the CSV's keys, sorted.
    let files = ExportFiles::from_zip(&golden).expect("zip");
    let export = files.export().expect("export");
    assert_eq!(export.keys.len(), 5);
    assert!(export.keys.windows(2).all(|w| w[0].tek < w[1].tek));
    assert_eq!(
        (export.start_timestamp, export.end_timestamp),
        (1_612_051_200, 1_612_137_600)
    );
    ok(confidant(&[
        "export",
        "verify",
        path_str(&golden_path),
        "--public-key",
        path_str(&test_data("golden-public-key.pem")),
    ]));
}

/// OpenSSL, an implementation independent of ours, accepts the signature over export.bin.
#[test]
fn openssl_verifies_what_we_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing_key, public_key) = generate_keys(dir.path());
    let out = dir.path().join("export.zip");
    ok(confidant(&build_args(
        path_str(&test_data("golden-keys.csv")),
        path_str(&signing_key),
        path_str(&out),
    )));
    let files = ExportFiles::from_zip(&fs::read(&out).expect("zip")).expect("members");
    let signature = files.signatures().expect("sig").remove(0).signature;
    fs::write(dir.path().join("export.bin"), &files.bin).expect("bin");
    fs::write(dir.path().join("signature.der"), signature).expect("der");
    let openssl = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "public-key.pem",
            "-signature",
            "signature.der",
            "export.bin",
        ])
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        openssl.status.success(),
        "openssl rejects our signature: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&openssl.stdout).trim(),
        "Verified OK"
    );
    let _ = public_key;
}

#[test]
fn keys_round_trip_through_export_keys_and_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing_key, public_key) = generate_keys(dir.path());
    let csv = dir.path().join("keys.csv");
    fs::write(
        &csv,
        ok(confidant(&[
            "export",
            "keys",
            path_str(&fixture("cwa-2021-02-14.zip")),
        ])),
    )
    .expect("csv");
    let out = dir.path().join("rebuilt.zip");
    ok(confidant(&build_args(
        path_str(&csv),
        path_str(&signing_key),
        path_str(&out),
    )));
    ok(confidant(&[
        "export",
        "verify",
        path_str(&out),
        "--public-key",
        path_str(&public_key),
    ]));

    let original =
        ExportFiles::from_zip(&fs::read(fixture("cwa-2021-02-14.zip")).expect("fixture"))
            .expect("zip")
            .export()
            .expect("export");
    let rebuilt = ExportFiles::from_zip(&fs::read(&out).expect("rebuilt"))
        .expect("zip")
        .export()
        .expect("export");
    let mut expected = original.keys.clone();
    gaen::sort_keys(&mut expected);
    assert_eq!(rebuilt.keys.len(), expected.len());
    let differing = rebuilt.keys.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(differing, None, "first differing key");
}

#[test]
fn large_batches_split_into_files_with_distinct_end_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing_key, public_key) = generate_keys(dir.path());
    let out = dir.path().join("batch.zip");
    let keys = test_data("golden-keys.csv");
    let mut args = build_args(path_str(&keys), path_str(&signing_key), path_str(&out));
    args.extend(["--max-keys-per-file", "2"]);
    let printed = ok(confidant(&args));
    assert_eq!(printed.lines().count(), 3, "{printed}");
    let mut ends = Vec::new();
    let mut total = 0;
    for part in 1..=3 {
        let path = dir.path().join(format!("batch-{part}.zip"));
        ok(confidant(&[
            "export",
            "verify",
            path_str(&path),
            "--public-key",
            path_str(&public_key),
        ]));
        let export = ExportFiles::from_zip(&fs::read(&path).expect("part"))
            .expect("zip")
            .export()
            .expect("export");
        assert!(export.keys.len() <= 2);
        total += export.keys.len();
        ends.push(export.end_timestamp);
    }
    assert_eq!(total, 5);
    ends.dedup();
    assert_eq!(ends.len(), 3, "end timestamps must differ: {ends:?}");
    assert!(!out.exists(), "a split batch writes only numbered parts");
}

#[test]
fn build_refuses_bad_arguments_with_specific_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing_key, public_key) = generate_keys(dir.path());
    let keys = test_data("golden-keys.csv");
    let out = dir.path().join("x.zip");
    let base = build_args(path_str(&keys), path_str(&signing_key), path_str(&out));

    let mut reversed = base.clone();
    let start = reversed
        .iter()
        .position(|a| *a == "--start")
        .expect("start")
        + 1;
    reversed[start] = "1612137600";
    assert!(fails(confidant(&reversed)).contains("must be before --end"));

    let mut wrong_key = base.clone();
    let key = wrong_key
        .iter()
        .position(|a| *a == "--signing-key")
        .expect("key")
        + 1;
    wrong_key[key] = path_str(&public_key);
    assert!(fails(confidant(&wrong_key)).contains("not a P-256 private key in PEM"));

    let mut extra_id = base.clone();
    extra_id.extend(["--key-id", "999"]);
    assert!(
        fails(confidant(&extra_id))
            .contains("one --key-id and one --key-version per --signing-key")
    );

    let bad_csv = dir.path().join("bad.csv");
    fs::write(&bad_csv, "# keys\n75c734c6dd1a782de7a965da5eb93125,2642976,144,4\n75c734c6dd1a782de7a965da5eb9312,2642976,144,4\n")
        .expect("csv");
    let mut bad = base.clone();
    bad[3] = path_str(&bad_csv);
    let err = fails(confidant(&bad));
    assert!(err.contains("line 3: key_hex is not hexadecimal"), "{err}");
    assert!(!out.exists(), "nothing is written on error");
    let _ = stderr;
}
