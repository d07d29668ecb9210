//! `confidant match` as a phone would run it: exports on disk, observations in a file.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::{confidant, fails, fixture, generate_keys, ok, path_str, repo_file, run_match, stderr};

fn vectors() -> Value {
    serde_json::from_str(&fs::read_to_string(fixture("test_vectors.json")).expect("vectors"))
        .expect("json")
}

/// A signed export holding the vector key and two others, and its public key.
fn vector_export(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let v = vectors();
    let (signing_key, public_key) = generate_keys(dir);
    let csv = dir.join("keys.csv");
    fs::write(
        &csv,
        format!(
            "{},{},144,4\n00112233445566778899aabbccddeeff,{},144,1\nffeeddccbbaa99887766554433221100,{},144,1\n",
            v["tek"].as_str().expect("tek"),
            v["rolling_start_interval_number"],
            v["rolling_start_interval_number"],
            v["rolling_start_interval_number"].as_u64().expect("rsin") - 144,
        ),
    )
    .expect("csv");
    let out = dir.join("exports/2020-04-02/vectors.zip");
    fs::create_dir_all(out.parent().expect("parent")).expect("dirs");
    ok(confidant(&[
        "export",
        "build",
        "--keys",
        path_str(&csv),
        "--signing-key",
        path_str(&signing_key),
        "--region",
        "XX",
        "--key-id",
        "999",
        "--key-version",
        "v1",
        "--start",
        "1585785600",
        "--end",
        "1585872000",
        "--out",
        path_str(&out),
    ]));
    (out, public_key)
}

fn derived_observations(dir: &Path) -> std::path::PathBuf {
    let v = vectors();
    let lines = ok(confidant(&[
        "keys",
        "derive",
        "--tek",
        v["tek"].as_str().expect("tek"),
        "--rsin",
        &v["rolling_start_interval_number"].to_string(),
        "--metadata",
        v["metadata"].as_str().expect("metadata"),
    ]));
    let path = dir.join("observations.txt");
    fs::write(&path, lines).expect("observations");
    path
}

#[test]
fn every_broadcast_of_a_published_key_is_found_with_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (export, public_key) = vector_export(dir.path());
    let observations = derived_observations(dir.path());
    let output = run_match(&observations, &public_key, &export, &[]);
    let err = stderr(&output);
    let out = ok(output);
    let v = vectors();
    let matches: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(matches.len(), 144);
    for (found, expected) in matches
        .iter()
        .zip(v["intervals"].as_array().expect("intervals"))
    {
        assert_eq!(found["tek"], v["tek"]);
        assert_eq!(found["enin"], expected["enin"]);
        assert_eq!(found["rpi"], expected["rpi"]);
        assert_eq!(found["metadata"], v["metadata"]);
        assert_eq!(found["rssi"], Value::Null);
        assert_eq!(
            found["observed_at"].as_u64().expect("time") / 600,
            expected["enin"].as_u64().expect("enin")
        );
    }
    let summary = err.lines().last().expect("summary");
    assert!(
        summary.starts_with(
            "summary: exports=1 skipped=0 keys=3 observations=144 matches=144 seconds="
        ),
        "{summary}"
    );
}

#[test]
fn tolerance_decides_whether_a_late_observation_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (export, public_key) = vector_export(dir.path());
    let v = vectors();
    let interval = &v["intervals"][10];
    // Heard 2 h 30 min after the interval began: outside ±2 h, inside ±3 h.
    let heard_at = interval["enin"].as_u64().expect("enin") * 600 + 9000;
    let observations = dir.path().join("late.txt");
    fs::write(
        &observations,
        format!(
            "{heard_at},{},-70\n",
            interval["rpi"].as_str().expect("rpi")
        ),
    )
    .expect("write");
    let run = |tolerance: &str| {
        ok(run_match(
            &observations,
            &public_key,
            &export,
            &["--tolerance-minutes", tolerance],
        ))
    };
    assert_eq!(run("120").lines().count(), 0);
    let found = run("180");
    assert_eq!(found.lines().count(), 1);
    assert!(found.contains(r#""rssi":-70"#));
}

#[test]
fn folders_are_searched_and_exports_that_do_not_verify_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (export, public_key) = vector_export(dir.path());
    let exports = dir.path().join("exports");
    // An unpacked copy in a nested folder is found too, and an export signed by someone else
    // is skipped with a warning.
    let unpacked = exports.join("unpacked/hour-13");
    fs::create_dir_all(&unpacked).expect("dirs");
    let files = gaen::ExportFiles::from_zip(&fs::read(&export).expect("zip")).expect("members");
    fs::write(unpacked.join("export.bin"), &files.bin).expect("bin");
    fs::write(unpacked.join("export.sig"), &files.sig).expect("sig");
    fs::copy(
        fixture("google-reference-2-keys.zip"),
        exports.join("foreign.zip"),
    )
    .expect("copy");

    let observations = derived_observations(dir.path());
    let output = run_match(&observations, &public_key, &exports, &[]);
    let err = stderr(&output);
    let out = ok(output);
    assert_eq!(out.lines().count(), 288, "both copies of the export match");
    assert!(
        err.contains("warning: skipping") && err.contains("foreign.zip"),
        "{err}"
    );
    assert!(
        err.contains("summary: exports=2 skipped=1 keys=6 observations=144 matches=288"),
        "{err}"
    );
}

#[test]
fn readme_demo_finds_the_three_planted_rpis_in_real_german_exports() {
    let output = run_match(
        &repo_file("examples/observations.txt"),
        &fixture("cwa-public-key.pem"),
        &fixture(""),
        &[],
    );
    let err = stderr(&output);
    let out = ok(output);
    assert_eq!(out.lines().count(), 3);
    assert!(
        out.lines()
            .all(|l| l.contains(r#""tek":"0005f661060d50dcbc4db492e0c805ff""#))
    );
    assert!(
        err.contains("summary: exports=2 skipped=1 keys=13985 observations=5 matches=3"),
        "{err}"
    );
}

#[test]
fn nothing_verified_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let observations = derived_observations(dir.path());
    let err = fails(run_match(
        &observations,
        &fixture("cwa-public-key.pem"),
        &fixture("google-reference-2-keys.zip"),
        &[],
    ));
    assert!(
        err.contains("none of the 1 export file(s) verified"),
        "{err}"
    );
}
