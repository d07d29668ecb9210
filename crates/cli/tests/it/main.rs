//! Integration tests for the `confidant` binary: real files on disk, real processes.

mod admin;
mod crash;
mod errors;
mod export;
mod feed;
mod keys;
mod log;
mod matching;
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/gaen")
        .join(name)
}

pub fn test_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

/// Runs `confidant` with `args`.
pub fn confidant<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(args)
        .env_remove("CONFIDANT_PUBLIC_KEY")
        .output()
        .expect("confidant runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "confidant failed ({}):\n{}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts a clean failure (exit 1, no panic) and returns stderr.
pub fn fails(output: Output) -> String {
    let err = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1, got {}: {err}",
        output.status
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// `confidant match` over `exports`, with `extra` flags.
pub fn run_match(observations: &Path, public_key: &Path, exports: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "match",
        "--observations",
        path_str(observations),
        "--public-key",
        path_str(public_key),
    ];
    args.extend_from_slice(extra);
    args.push(path_str(exports));
    confidant(&args)
}

/// A fresh P-256 key pair from `confidant keys generate` in `dir`.
pub fn generate_keys(dir: &Path) -> (PathBuf, PathBuf) {
    ok(confidant(&[
        "keys",
        "generate",
        "--out",
        dir.to_str().expect("utf-8"),
    ]));
    (dir.join("signing-key.pem"), dir.join("public-key.pem"))
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
