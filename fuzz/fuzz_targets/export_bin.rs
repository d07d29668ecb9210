//! `export.bin` and `export.sig` bodies, past the zip layer, so the fuzzer reaches the protobuf
//! decoders directly.
//! The check lives in `fuzz/checks/gaen.rs`, shared with the corpus replay test.
#![no_main]

#[path = "../checks/gaen.rs"]
#[allow(dead_code)] // each target uses one of the module's checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::export_bin(data));
