//! An export zip as a phone or `confidant match` receives it: unzip, decode, verify.
//! The check lives in `fuzz/checks/gaen.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../checks/gaen.rs"]
#[allow(dead_code)] // each target uses one of the module's checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::export_zip(data));
