//! Replays the checked-in fuzz corpora of the `gaen` targets (`fuzz/corpus/<target>/`)
//! through the same checks the fuzz targets run, on stable and in CI.

#[path = "../../../../fuzz/checks/gaen.rs"]
mod checks;
#[path = "../../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn export_zip_corpus() {
    replay::replay("export_zip", checks::export_zip);
}

#[test]
fn export_bin_corpus() {
    replay::replay("export_bin", checks::export_bin);
}
