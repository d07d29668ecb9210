//! Bad input: every case exits 1 with a message saying what is wrong, and never panics.

use std::fs;

use gaen::ExportFiles;

use crate::{confidant, fails, fixture, path_str, run_match};

fn inspect_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.zip");
    fs::write(&path, bytes).expect("write");
    fails(confidant(&["export", "inspect", path_str(&path)]))
}

#[test]
fn missing_file() {
    let err = fails(confidant(&["export", "inspect", "/nonexistent/export.zip"]));
    assert!(
        err.contains("/nonexistent/export.zip does not exist"),
        "{err}"
    );
}

#[test]
fn truncated_zip() {
    let zip = fs::read(fixture("cwa-2021-01-31.zip")).expect("fixture");
    let err = inspect_error(&zip[..zip.len() / 2]);
    assert!(err.contains("bad.zip: not a readable zip archive"), "{err}");
}

#[test]
fn wrong_header() {
    let files = ExportFiles {
        bin: b"EK Export v9    \x09\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
        sig: Vec::new(),
    };
    let err = inspect_error(&files.to_zip());
    assert!(
        err.contains(r#"does not start with the header "EK Export v1    ""#),
        "{err}"
    );
}

#[test]
fn malformed_protobuf() {
    let mut bin = gaen::EXPORT_HEADER.to_vec();
    bin.extend([0x3a, 0xff, 0xff]); // keys field whose length runs past the end
    let err = inspect_error(
        &ExportFiles {
            bin,
            sig: Vec::new(),
        }
        .to_zip(),
    );
    assert!(
        err.contains("is not a valid TemporaryExposureKeyExport protobuf"),
        "{err}"
    );
}

#[test]
fn not_a_zip_at_all() {
    let err = inspect_error(b"<html>404</html>");
    assert!(err.contains("not a readable zip archive"), "{err}");
}

#[test]
fn bad_pem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("key.pem");
    fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .expect("pem");
    let err = fails(confidant(&[
        "export",
        "verify",
        path_str(&fixture("cwa-2021-01-31.zip")),
        "--public-key",
        path_str(&pem),
    ]));
    assert!(
        err.contains("key.pem: not a P-256 public key in PEM"),
        "{err}"
    );
}

#[test]
fn malformed_observation_line_is_named_by_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let observations = dir.path().join("obs.txt");
    fs::write(
        &observations,
        "# heard\n1611562500,bcfa13032573c63a174c2dbe51457377\n1611562500;bcfa13032573c63a174c2dbe51457377\n",
    )
    .expect("write");
    let err = fails(run_match(
        &observations,
        &fixture("cwa-public-key.pem"),
        &fixture("cwa-2021-01-31.zip"),
        &[],
    ));
    assert!(
        err.contains("obs.txt: line 3: expected `unix_seconds,hex[,rssi]`, got 1 field(s)"),
        "{err}"
    );
}

#[test]
fn folder_without_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fails(confidant(&["export", "inspect", path_str(dir.path())]));
    assert!(
        err.contains("is a folder without export.bin and export.sig"),
        "{err}"
    );
    let err = fails(confidant(&[
        "export",
        "verify",
        path_str(dir.path()),
        "--public-key",
        path_str(&fixture("cwa-public-key.pem")),
    ]));
    assert!(err.contains("no export files found"), "{err}");
}
