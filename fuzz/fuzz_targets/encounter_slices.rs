//! Encounter-token broadcast slices (`confidant_client::encounter`), as a phone hears them.
//! The check lives in `fuzz/checks/client.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../checks/client.rs"]
#[allow(dead_code)] // each target uses one of the module's checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::encounter_slices(data));
