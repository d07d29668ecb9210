//! Decrypted COVID Shield uploads (`Upload`), as the server parses and validates them.
//! The check lives in `fuzz/checks/server.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../checks/server.rs"]
#[allow(dead_code)] // each target uses one of the module's checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::covidshield_payload(data));
