//! `confidant log export` and `confidant log import` as an operator moves a deployment: the
//! log goes to a file, into a fresh data directory, and `confidant check` agrees.

use std::path::Path;
use std::process::{Command, Output};

use confidant_core::corrections::{Actor, Command as Correction};
use confidant_core::state::StoredKey;
use confidant_core::{
    ClaimId, CodeFormat, CodePolicy, Credential, Digest, KeyData, ProviderId, Region, TrackingId,
};
use confidant_store::{ClaimLookup, Store, StoreOptions};

use crate::{fails, ok, path_str};

const T0: u64 = 1_800_000_000;

/// `confidant ARGS --data-dir DIR`, with no store settings from the environment.
fn confidant_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(args)
        .args(["--data-dir", path_str(dir)])
        .env_remove("CONFIDANT_DATABASE_URL")
        .env_remove("CONFIDANT_DATA_DIR")
        .env_remove("CONFIDANT_CONFIG")
        .env_remove("CONFIDANT_SECRET_FILE")
        .output()
        .expect("confidant runs")
}

/// Two providers, codes, claims, three submissions and a withdrawal, written the way the
/// server writes them.
async fn populate(dir: &Path) {
    let url = format!("sqlite://{}", dir.join("confidant.db").display());
    let store = Store::open(&url, StoreOptions::default())
        .await
        .expect("opens");
    let region = Region::try_from("DE".to_owned()).expect("region");
    for n in 1..=3u8 {
        let provider_token = Digest([n; 32]);
        if n < 3 {
            store
                .register_provider(
                    ProviderId([n; 8]),
                    format!("Lab {n}"),
                    region.clone(),
                    provider_token,
                )
                .await
                .expect("register");
        }
        let provider_token = Digest([n.min(2); 32]);
        let code = Digest([100 + n; 32]);
        store
            .issue_code(
                provider_token,
                CodeFormat::Long,
                None,
                CodePolicy::default(),
                code,
                T0,
            )
            .await
            .expect("issue");
        let upload = Digest([200 + n; 32]);
        store
            .redeem_code(
                code,
                ClaimId([n; 16]),
                Credential::UploadToken { token_hash: upload },
                T0 + 10,
            )
            .await
            .expect("redeem");
        let today = (T0 / 600) as u32 / 144 * 144;
        let keys = (0..3u32)
            .map(|day| StoredKey {
                key_data: KeyData([n * 10 + day as u8; 16]),
                rolling_start: today - day * 144,
                rolling_period: 144,
                transmission_risk: 3,
            })
            .collect();
        store
            .submit(
                ClaimLookup::Token(upload),
                keys,
                TrackingId([n; 16]),
                T0 + 20,
            )
            .await
            .expect("submit");
    }
    store
        .correct(
            Correction::WithdrawSubmission(TrackingId([2; 16])),
            Actor::Console,
            T0 + 30,
            "reason".into(),
        )
        .await
        .expect("withdraw");
    store.close().await;
}

/// The `state digest: …` or `live state digest: …` line's hex.
fn digest_line(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{output}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_moves_to_a_fresh_data_dir_with_the_same_state() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let source = scratch.path().join("source");
    let target = scratch.path().join("target");
    std::fs::create_dir_all(&source).expect("source dir");
    populate(&source).await;
    let source_check = ok(confidant_in(&source, &["check"]));
    let live = digest_line(&source_check, "live state digest:");
    assert_eq!(live, digest_line(&source_check, "replayed state digest:"));

    let file = scratch.path().join("log.cfdlog");
    ok(confidant_in(&source, &["log", "export", path_str(&file)]));
    assert!(!scratch.path().join("log.cfdlog.partial").exists());
    // To stdout, the same bytes.
    let piped = confidant_in(&source, &["log", "export", "-"]);
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&file).expect("log file"));

    let imported = ok(confidant_in(&target, &["log", "import", path_str(&file)]));
    assert_eq!(digest_line(&imported, "state digest:"), live);
    let target_check = ok(confidant_in(&target, &["check"]));
    assert!(target_check.contains("consistent"), "{target_check}");
    assert_eq!(digest_line(&target_check, "live state digest:"), live);
    assert_eq!(digest_line(&target_check, "replayed state digest:"), live);
    let rebuilt = ok(confidant_in(&target, &["rebuild"]));
    assert_eq!(digest_line(&rebuilt, "state digest:"), live);
    assert!(rebuilt.contains("events/s"), "{rebuilt}");

    // The target is no longer empty: a second import is refused, and changes nothing.
    let refused = fails(confidant_in(&target, &["log", "import", path_str(&file)]));
    assert!(refused.contains("not empty"), "{refused}");
    let again = ok(confidant_in(&target, &["check"]));
    assert_eq!(digest_line(&again, "live state digest:"), live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_damaged_file_is_refused_with_its_offset() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let source = scratch.path().join("source");
    std::fs::create_dir_all(&source).expect("source dir");
    populate(&source).await;
    let file = scratch.path().join("log.cfdlog");
    ok(confidant_in(&source, &["log", "export", path_str(&file)]));
    let bytes = std::fs::read(&file).expect("log file");

    let cut = bytes.len() * 2 / 3;
    let truncated = scratch.path().join("truncated.cfdlog");
    std::fs::write(&truncated, &bytes[..cut]).expect("write");
    let fresh = scratch.path().join("fresh");
    let error = fails(confidant_in(
        &fresh,
        &["log", "import", path_str(&truncated)],
    ));
    assert!(error.contains("nothing was imported"), "{error}");
    assert!(
        error.contains(&format!("the file ends at byte {cut}")),
        "{error}"
    );
    assert!(error.contains("byte "), "{error}");

    // The trailer alone missing: cut at a frame boundary.
    let boundary = scratch.path().join("no-trailer.cfdlog");
    std::fs::write(&boundary, &bytes[..bytes.len() - 48]).expect("write");
    let error = fails(confidant_in(
        &fresh,
        &["log", "import", path_str(&boundary)],
    ));
    assert!(
        error.contains(&format!("byte {}", bytes.len() - 48))
            && error.contains("without its trailer"),
        "{error}"
    );

    let mut damaged = bytes.clone();
    damaged[cut] ^= 0x01;
    let flipped = scratch.path().join("flipped.cfdlog");
    std::fs::write(&flipped, &damaged).expect("write");
    let error = fails(confidant_in(&fresh, &["log", "import", path_str(&flipped)]));
    assert!(error.contains("checksum mismatch"), "{error}");

    // Nothing was committed: the fresh store is still empty, and takes the intact file.
    let check = ok(confidant_in(&fresh, &["check"]));
    assert!(check.starts_with("0 events in the log"), "{check}");
    ok(confidant_in(&fresh, &["log", "import", path_str(&file)]));
}
