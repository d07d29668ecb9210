//! Replays the checked-in fuzz corpora of the `confidant-server` targets (`fuzz/corpus/<target>/`)
//! through the same checks the fuzz targets run, on stable and in CI.

#[path = "../../../../fuzz/checks/server.rs"]
mod checks;
#[path = "../../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn covidshield_claim_corpus() {
    replay::replay("covidshield_claim", checks::covidshield_claim);
}

#[test]
fn covidshield_upload_corpus() {
    replay::replay("covidshield_upload", checks::covidshield_upload);
}

#[test]
fn covidshield_payload_corpus() {
    replay::replay("covidshield_payload", checks::covidshield_payload);
}

#[test]
fn native_json_corpus() {
    replay::replay("native_json", checks::native_json);
}
