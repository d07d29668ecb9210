//! The simulator against an embedded server over real HTTP: with perfect radios and full
//! compliance the system must warn exactly the truly exposed, and a rollback must spare the
//! phones that had not matched yet.

use confidant_sim::{Report, SimSettings, Target, simulate};

/// A small town where enough people upload within a week.
fn town(seed: u64) -> SimSettings {
    let mut settings = SimSettings::new(400, 8, seed).perfect();
    settings.adoption = 0.8;
    settings.initial_infections = 25;
    settings.epidemic.transmission_per_minute = 0.004;
    settings
}

async fn run(settings: SimSettings) -> Report {
    let mut hours = 0;
    let report = simulate(settings, Target::Embedded, &mut |done, _| hours = done)
        .await
        .expect("simulation");
    assert_eq!(hours, (8 + 3) * 24, "progress reached the end");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfect_conditions_warn_exactly_the_exposed() {
    let report = run(town(5)).await;
    let truth = &report.truth;
    assert!(report.uploads >= 5, "uploads: {}", report.summary());
    assert!(truth.exposed >= 5, "exposed: {}", report.summary());
    assert_eq!(truth.missed, Vec::<u32>::new(), "{}", report.summary());
    assert_eq!(
        truth.false_alarms,
        Vec::<u32>::new(),
        "{}",
        report.summary()
    );
    assert_eq!((report.precision, report.recall), (1.0, 1.0));
    assert_eq!(truth.never_arrived, 0);
    assert_eq!(
        report.daily.download_mismatches, 0,
        "feed and exports agree"
    );
    assert!(
        report
            .median_delay_hours
            .is_some_and(|h| h > 0.0 && h < 72.0)
    );
    assert!(report.feed_bytes_per_phone_day > 0.0 && report.export_bytes_per_phone_day > 0.0);
    let api: u64 = report.daily.api_requests_per_day.iter().sum();
    assert_eq!(api, report.daily.api_requests);
    assert_eq!(
        api,
        3 * report.uploads,
        "a code, a redemption and an upload each"
    );
    let files: u64 = report.daily.file_requests_per_day.iter().sum();
    assert_eq!(files, report.daily.origin_requests);
    assert!(
        report
            .summary()
            .ends_with("precision 1.0000, recall 1.0000")
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let written = report.write(dir.path()).expect("report written");
    assert_eq!(written.len(), 6);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("json"))
            .expect("valid json");
    assert_eq!(json["recall"], 1.0);
    let svg = std::fs::read_to_string(dir.path().join("epidemic.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_spares_phones_that_had_not_matched_yet() {
    let mut settings = town(9);
    settings.withdraw_share = 0.5;
    let report = run(settings).await;
    let truth = &report.truth;
    assert!(report.daily.withdrawn >= 2, "{}", report.summary());
    assert!(
        truth.spared_by_withdrawal > 0,
        "some exposed phones never see a rolled-back key: {truth:?}"
    );
    assert_eq!(truth.matched_after_withdrawal, 0, "{truth:?}");
    assert_eq!((report.precision, report.recall), (1.0, 1.0), "{truth:?}");
}

mod tokens;
