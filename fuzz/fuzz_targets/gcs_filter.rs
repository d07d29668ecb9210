//! Golomb-coded set filters (`confidant_core::gcs`), as a phone downloads them.
//! The check lives in `fuzz/checks/core.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../checks/core.rs"]
#[allow(dead_code)] // each target uses one of the module's checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::gcs_filter(data));
