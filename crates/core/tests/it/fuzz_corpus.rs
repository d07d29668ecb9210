//! Replays the checked-in fuzz corpora of the `confidant-core` targets (`fuzz/corpus/<target>/`)
//! through the same checks the fuzz targets run, on stable and in CI.

#[path = "../../../../fuzz/checks/core.rs"]
pub(crate) mod checks; // `gcs` runs its check on corrupted filters too
#[path = "../../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn feed_file_corpus() {
    replay::replay("feed_file", checks::feed_file);
}

#[test]
fn log_file_corpus() {
    replay::replay("log_file", checks::log_file);
}

#[test]
fn gcs_filter_corpus() {
    replay::replay("gcs_filter", checks::gcs_filter);
}

#[test]
fn token_file_corpus() {
    replay::replay("token_file", checks::token_file);
}

/// A corpus that vanished must not pass as "nothing failed".
#[test]
#[should_panic(expected = "is missing")]
fn a_missing_corpus_fails() {
    replay::replay("no_such_target", |_| {});
}
