//! What must hold for every input of the `confidant-core` fuzz targets; the targets and the
//! corpus replay test (`crates/core/tests/it/fuzz_corpus.rs`) both call these.

use confidant_core::event::EVENT_VERSION;
use confidant_core::feed;
use confidant_core::logfile::{self, Decoder, LogFileError, LogRecord};

/// `feed_file`: native feed files (`docs/feed.md`) as a phone downloads them: decoding must
/// never panic, and whatever decodes names its key id consistently.
pub fn feed_file(data: &[u8]) {
    if let Ok(file) = feed::decode(data) {
        assert!(feed::key_id_of(data).is_ok());
        assert!(file.added.len() * 16 <= data.len());
    }
}

/// `log_file`: a portable log file as `confidant import` reads it. Read whole or in small
/// slices, the answer is the same; what decodes encodes back to the very same bytes.
pub fn log_file(data: &[u8]) {
    let whole = logfile::decode_all(data);
    let sliced = decode_in_slices(data, 7);
    match (&whole, &sliced) {
        (Ok((header, records, summary)), Ok(streamed)) => {
            assert_eq!(records, streamed, "slicing changed the events");
            assert_eq!(summary.events, records.len() as u64);
            // The header carries the writer's event version; the encoder writes this build's.
            if header.event_version == EVENT_VERSION {
                let again =
                    logfile::encode_all(&header.store_kind, records.iter().map(|r| &*r.payload))
                        .expect("a decoded log encodes");
                assert_eq!(again, data, "re-encoding changed the bytes");
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "whole: {:?}, in slices: {:?}",
            whole.is_ok(),
            sliced.is_ok()
        ),
    }
}

fn decode_in_slices(data: &[u8], size: usize) -> Result<Vec<LogRecord>, LogFileError> {
    let mut decoder = Decoder::new();
    let mut records = Vec::new();
    for slice in data.chunks(size) {
        decoder.push(slice)?;
        while let Some(record) = decoder.next_record()? {
            records.push(record);
        }
    }
    decoder.finish()?;
    Ok(records)
}
