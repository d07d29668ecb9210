//! Encounter tokens in the simulator, against an embedded server over real HTTP: with perfect
//! radios and full compliance both protocols warn exactly the people their rule calls exposed
//! (for tokens: a contact covering 5 minutes within one 15-minute epoch), the token path does
//! not change the GAEN run it accompanies, a seed gives the same token tallies twice, and a
//! sniffer links recorded sightings of GAEN uploaders but none of token uploaders.

use confidant_sim::{Protocol, Report, SimSettings, Target, simulate};

/// The GAEN tests' small town, in two neighbourhoods, with sniffers in half of its
/// workplaces and classes.
fn town(seed: u64, protocol: Protocol) -> SimSettings {
    let mut settings = SimSettings::new(400, 8, seed).perfect();
    settings.adoption = 0.8;
    settings.initial_infections = 25;
    settings.epidemic.transmission_per_minute = 0.004;
    settings.protocol = protocol;
    settings.sniffed_places = 0.5;
    settings.areas = 2;
    settings
}

async fn run(settings: SimSettings) -> Report {
    let hours = u64::from(settings.days + settings.drain_days) * 24;
    let mut done = 0;
    let report = simulate(settings, Target::Embedded, &mut |d, _| done = d)
        .await
        .expect("simulation");
    assert_eq!(done, hours, "progress reached the end");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfect_conditions_both_protocols_warn_exactly_their_exposed_and_only_gaen_is_linkable() {
    let mut settings = town(5, Protocol::Both);
    let report = run(settings.clone()).await;
    let summary = report.summary();
    let tokens = report.tokens.as_ref().expect("a token report");

    // GAEN, as in a GAEN-only run.
    assert_eq!((report.precision, report.recall), (1.0, 1.0), "{summary}");
    assert!(report.truth.exposed >= 5, "{summary}");

    // Tokens, against the token rule's truth.
    let truth = &tokens.truth;
    assert!(tokens.uploads >= 5 && truth.exposed >= 5, "{summary}");
    assert_eq!(truth.missed, Vec::<u32>::new(), "{summary}");
    assert_eq!(truth.false_alarms, Vec::<u32>::new(), "{summary}");
    assert_eq!((tokens.precision, tokens.recall), (1.0, 1.0), "{summary}");
    assert_eq!(truth.never_arrived, 0, "{summary}");
    assert!(
        tokens
            .median_delay_hours
            .is_some_and(|h| h > 0.0 && h < 72.0)
    );
    // The token rule is wider than GAEN's score (any distance, 5 minutes): everyone GAEN
    // calls exposed met the uploader for 15 minutes or more, so the tokens warned them too.
    assert_eq!(tokens.gaen_exposed, Some(report.truth.exposed));
    assert_eq!(tokens.gaen_exposed_warned, Some(report.truth.exposed));
    assert!(truth.exposed >= report.truth.exposed);

    // Cost: index, filters and cover buckets, every phone every day.
    assert!(tokens.bytes_per_phone_day > 0.0);
    let parts = tokens.index_bytes_per_phone_day
        + tokens.filter_bytes_per_phone_day
        + tokens.bucket_bytes_per_phone_day;
    assert!((parts - tokens.bytes_per_phone_day).abs() < 1e-6 * parts);
    assert!(
        tokens.bucket_bytes_per_phone_day > 0.0,
        "cover buckets are fetched"
    );
    let api: u64 = tokens.daily.api_requests_per_day.iter().sum();
    assert_eq!(api, tokens.daily.api_requests);
    let files: u64 = tokens.daily.file_requests_per_day.iter().sum();
    assert_eq!(files, tokens.daily.origin_requests);

    assert_eq!((tokens.chained_uploads, tokens.level1_notified), (0, 0));
    assert_eq!(tokens.daily.tokens_skipped, 0, "every hash is new");

    // The sniffers recorded both protocols' broadcasts of the uploaders; only GAEN's link.
    let sniffer = &report.sniffer;
    assert!(sniffer.sniffed_places > 0 && sniffer.sniffed_places < sniffer.places);
    let gaen = sniffer.gaen.as_ref().expect("GAEN sniffer figures");
    let token = sniffer.tokens.as_ref().expect("token sniffer figures");
    assert!(gaen.recorded_of_uploaders > 0 && token.recorded_of_uploaders > 0);
    assert!(gaen.published > 0 && token.published > 0);
    assert!(gaen.linkable > 0, "{gaen:?}");
    assert!(gaen.linkable <= gaen.recorded_of_uploaders);
    assert!(gaen.uploaders_linkable > 0 && gaen.linkable_per_uploader > 0.0);
    assert_eq!(
        gaen.linkable_of_others, 0,
        "only uploaders' keys are published"
    );
    assert!(token.derived > 0, "{token:?}");
    assert_eq!(
        (token.linkable, token.uploaders_linkable),
        (0, 0),
        "{token:?}"
    );
    assert_eq!(token.uploaders, gaen.uploaders, "the same people upload");

    assert!(summary.contains("GAEN"), "{summary}");
    assert!(summary.ends_with("precision 1.0000 / 1.0000, recall 1.0000 / 1.0000 (GAEN / tokens)"));
    let dir = tempfile::tempdir().expect("temp dir");
    let written = report.write(dir.path()).expect("report written");
    assert!(written.contains(&"tokens.svg".to_owned()), "{written:?}");
    assert_eq!(written.len(), 7);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("json"))
            .expect("valid json");
    assert_eq!(json["protocol"], "both");
    assert_eq!(json["tokens"]["recall"], 1.0);
    assert_eq!(json["sniffer"]["tokens"]["linkable"], 0);
    let downloads = std::fs::read_to_string(dir.path().join("downloads.svg")).expect("svg");
    assert!(downloads.contains("encounter tokens") && downloads.contains("native feed"));

    // The same city with GAEN alone: the token path changed nothing of GAEN's run.
    settings.protocol = Protocol::Gaen;
    let gaen_only = run(settings).await;
    assert_eq!(gaen_only.daily.infections, report.daily.infections);
    assert_eq!(gaen_only.daily.positives, report.daily.positives);
    assert_eq!(gaen_only.daily.uploads, report.daily.uploads);
    assert_eq!(gaen_only.daily.notifications, report.daily.notifications);
    assert_eq!(gaen_only.truth.exposed, report.truth.exposed);
    assert_eq!(gaen_only.truth.notified, report.truth.notified);
    assert_eq!(gaen_only.truth.delays_hours, report.truth.delays_hours);
    assert!(gaen_only.tokens.is_none());
    assert_eq!(
        gaen_only.sniffer.gaen.as_ref().map(|s| s.linkable),
        Some(gaen.linkable),
        "the sniffers see the same GAEN broadcasts"
    );
}

/// A smaller town with imperfect radios and a quicker disease, run twice.
fn village(seed: u64) -> SimSettings {
    let mut settings = SimSettings::new(300, 6, seed);
    settings.adoption = 0.8;
    settings.initial_infections = 30;
    settings.epidemic.transmission_per_minute = 0.005;
    settings.epidemic.latent_hours = (24, 36);
    settings.epidemic.presymptomatic_hours = (12, 24);
    settings.epidemic.symptomatic_share = 0.9;
    settings.epidemic.test_delay_hours = (12, 24);
    settings.protocol = Protocol::Tokens;
    settings.sniffed_places = 0.3;
    settings.chain = true;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_gives_the_same_token_run_twice() {
    let first = run(village(3)).await;
    let second = run(village(3)).await;
    let (a, b) = (
        first.tokens.as_ref().expect("tokens"),
        second.tokens.as_ref().expect("tokens"),
    );
    assert!(a.uploads > 0 && a.truth.exposed > 0, "{}", first.summary());
    assert!(a.daily.encounters.iter().sum::<u64>() > 0);
    assert_eq!(first.daily.infections, second.daily.infections);
    assert_eq!(first.daily.positives, second.daily.positives);
    for (name, x, y) in [
        ("uploads", &a.daily.uploads, &b.daily.uploads),
        ("tokens", &a.daily.tokens_uploaded, &b.daily.tokens_uploaded),
        (
            "notifications",
            &a.daily.notifications,
            &b.daily.notifications,
        ),
        (
            "level 1",
            &a.daily.level1_notifications,
            &b.daily.level1_notifications,
        ),
        (
            "chained",
            &a.daily.chained_uploads,
            &b.daily.chained_uploads,
        ),
        ("encounters", &a.daily.encounters, &b.daily.encounters),
        ("syncs", &a.daily.phone_syncs, &b.daily.phone_syncs),
        (
            "API",
            &a.daily.api_requests_per_day,
            &b.daily.api_requests_per_day,
        ),
    ] {
        assert_eq!(x, y, "{name}");
    }
    assert_eq!(a.truth.exposed, b.truth.exposed);
    assert_eq!(a.truth.missed, b.truth.missed);
    assert_eq!(a.truth.false_alarms, b.truth.false_alarms);
    assert_eq!(a.truth.delays_hours, b.truth.delays_hours);
    assert_eq!(
        first
            .sniffer
            .tokens
            .as_ref()
            .map(|s| (s.recorded, s.linkable)),
        second
            .sniffer
            .tokens
            .as_ref()
            .map(|s| (s.recorded, s.linkable))
    );
    // Chained at level 1: notified phones upload their own encounters; their contacts are
    // told apart from direct contacts.
    assert!(a.chained_uploads > 0, "{}", first.summary());
    assert_eq!(a.daily.chained_refused, 0);
    assert!(
        a.level1_notified > 0 && a.level1_only > 0,
        "{}",
        first.summary()
    );
    assert!(a.level1_only <= a.level1_notified);
    // Imperfect radios lose encounters (a piece needs its sightings to span 5 minutes), never
    // invent one: whoever was warned was exposed.
    assert_eq!(a.precision, 1.0, "{}", first.summary());
    assert!(first.precision.is_nan(), "no GAEN in a tokens-only run");
    assert!(first.summary().ends_with(&format!(
        "precision {:.4}, recall {:.4}",
        a.precision, a.recall
    )));
}
