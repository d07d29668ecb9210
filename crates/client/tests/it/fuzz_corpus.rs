//! Replays the checked-in fuzz corpora of the `confidant-client` targets (`fuzz/corpus/<target>/`)
//! through the same checks the fuzz targets run, on stable and in CI.

#[path = "../../../../fuzz/checks/client.rs"]
mod checks;
#[path = "../../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn feed_index_corpus() {
    replay::replay("feed_index", checks::feed_index);
}

#[test]
fn exposure_config_corpus() {
    replay::replay("exposure_config", checks::exposure_config);
}

#[test]
fn encounter_slices_corpus() {
    replay::replay("encounter_slices", checks::encounter_slices);
}
