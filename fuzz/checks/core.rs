//! What must hold for every input of the `confidant-core` fuzz targets; the targets and the
//! corpus replay test (`crates/core/tests/it/fuzz_corpus.rs`) both call these.

use confidant_core::event::EVENT_VERSION;
use confidant_core::feed;
use confidant_core::gcs::GcsFilter;
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

/// `gcs_filter`: a Golomb-coded set as a phone downloads it. Parsing never panics; what parses
/// decodes to n sorted values inside [0, n·m), encodes back to the very same bytes, and answers
/// `contains` and `matches` alike.
pub fn gcs_filter(data: &[u8]) {
    let Ok(filter) = GcsFilter::from_bytes(data) else {
        return;
    };
    let values = filter.values().expect("a parsed filter decodes");
    assert_eq!(values.len() as u64, filter.n);
    assert!(values.is_sorted(), "values out of order");
    let range = filter.n.checked_mul(filter.params.m).expect("n·m checked");
    assert!(values.last().is_none_or(|&v| v < range), "value past n·m");
    assert_eq!(filter.to_bytes(), data, "re-encoding changed the bytes");

    // Queries derived from the input, so that small filters (m = 1) see real hits.
    let mut queries: Vec<&[u8]> = data.chunks(5).take(40).collect();
    queries.push(&[]);
    let matched = filter.matches(&queries);
    let by_contains: Vec<usize> = (0..queries.len())
        .filter(|&i| filter.contains(queries[i]))
        .collect();
    assert_eq!(matched, by_contains, "matches and contains disagree");
    for i in matched {
        let position = filter.hash_to_range(queries[i]);
        assert!(
            values.binary_search(&position).is_ok(),
            "match on an absent value"
        );
    }
}
