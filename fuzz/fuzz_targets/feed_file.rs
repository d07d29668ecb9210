//! Native feed files (`docs/feed.md`), as a phone downloads them: decoding must never panic,
//! and whatever decodes names its key id consistently.
#![no_main]

use confidant_core::feed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = feed::decode(data) {
        assert!(feed::key_id_of(data).is_ok());
        assert!(file.added.len() * 16 <= data.len());
    }
});
