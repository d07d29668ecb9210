//! `keys generate | derive`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::{confidant, fails, fixture, generate_keys, ok, path_str};

#[test]
fn generate_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = generate_keys(dir.path());
    let mode = fs::metadata(&private)
        .expect("private")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let first = fs::read_to_string(&public).expect("public");
    assert!(first.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(
        fs::read_to_string(&private)
            .expect("private")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    let err = fails(confidant(&[
        "keys",
        "generate",
        "--out",
        path_str(dir.path()),
    ]));
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(
        fs::read_to_string(&public).expect("public"),
        first,
        "key kept"
    );

    ok(confidant(&[
        "keys",
        "generate",
        "--out",
        path_str(dir.path()),
        "--force",
    ]));
    assert_ne!(
        fs::read_to_string(&public).expect("public"),
        first,
        "key replaced"
    );
}

#[test]
fn derive_prints_the_spec_vectors() {
    let vectors: Value =
        serde_json::from_str(&fs::read_to_string(fixture("test_vectors.json")).expect("vectors"))
            .expect("json");
    let rsin = vectors["rolling_start_interval_number"].to_string();
    let out = ok(confidant(&[
        "keys",
        "derive",
        "--tek",
        vectors["tek"].as_str().expect("tek"),
        "--rsin",
        &rsin,
        "--metadata",
        vectors["metadata"].as_str().expect("metadata"),
    ]));
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let intervals = vectors["intervals"].as_array().expect("intervals");
    assert_eq!(lines.len(), intervals.len());
    for (line, expected) in lines.iter().zip(intervals) {
        let (time, hex) = line.split_once(',').expect("time,hex");
        let enin = expected["enin"].as_u64().expect("enin");
        assert_eq!(time.parse::<u64>().expect("seconds") / 600, enin);
        let rpi_aem = format!(
            "{}{}",
            expected["rpi"].as_str().expect("rpi"),
            expected["aem"].as_str().expect("aem")
        );
        assert_eq!(hex, rpi_aem);
    }
}

#[test]
fn derive_refuses_malformed_keys() {
    assert!(
        fails(confidant(&[
            "keys", "derive", "--tek", "abcd", "--rsin", "1"
        ]))
        .contains("--tek must be 32 hexadecimal characters")
    );
    assert!(
        fails(confidant(&[
            "keys",
            "derive",
            "--tek",
            "75c734c6dd1a782de7a965da5eb93125",
            "--rsin",
            "1",
            "--rolling-period",
            "0"
        ]))
        .contains("--rolling-period must be between 1 and 144")
    );
}
