//! What must hold for every input of the `confidant-core` fuzz targets; the targets and the
//! corpus replay test (`crates/core/tests/it/fuzz_corpus.rs`) both call these.

use std::sync::LazyLock;

use confidant_core::encounter::TokenHash;
use confidant_core::event::EVENT_VERSION;
use confidant_core::feed;
use confidant_core::gcs::GcsFilter;
use confidant_core::logfile::{self, Decoder, LogFileError, LogRecord};
use confidant_core::tokenfile::{self, TokenBody, TokenKind};

/// `feed_file`: native feed files (`docs/feed.md`) as a phone downloads them: decoding must
/// never panic, and whatever decodes names its key id consistently.
pub fn feed_file(data: &[u8]) {
    if let Ok(file) = feed::decode(data) {
        assert!(feed::key_id_of(data).is_ok());
        assert!(file.added.len() * 16 <= data.len());
    }
}

/// A fixed P-256 key (the client tests' public test key): `token_file` re-signs what decodes.
static SIGNER: LazyLock<gaen::SigningKey> = LazyLock::new(|| {
    gaen::SigningKey::from_pem(
        "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBKRbF3IKD42P9lts
k/I9/1IBzsx6qRzsNxzzf5YwArGhRANCAATS2LLLD3FjzFYdQK6/Gp08j/nibMk9
Krp3MQDkwMpI3kasIjWEwBRKSsW93AQMZVmMOQ+12DDm/TnUXvyCoKdm
-----END PRIVATE KEY-----
",
    )
    .expect("the test key parses")
});

/// `token_file`: encounter-token files (`docs/token-files.md`) as a phone downloads them.
/// Decoding never panics. What decodes has exactly one encoding: re-encoded, every byte before
/// the signature is the same. Its matching helpers never panic, answer exactly for list and
/// bucket files, and its name parses back to its kind, seq and bucket.
pub fn token_file(data: &[u8]) {
    let Ok(file) = tokenfile::decode(data) else {
        return;
    };
    let key_id = tokenfile::key_id_of(data).expect("a decoded file names its key id");
    let again = file
        .encode(&SIGNER, &key_id)
        .expect("a decoded file encodes");
    // Where the re-encoded signature starts: the one length whose signature verifies.
    let public = SIGNER.verifying_key();
    let signed = (8..=72)
        .filter_map(|s| again.len().checked_sub(s + 1))
        .find(|&at| {
            usize::from(again[at]) == again.len() - at - 1
                && public.verify(&again[..at], &again[at + 1..])
        })
        .expect("the re-encoded file carries its signature");
    assert_eq!(
        &data[..signed.min(data.len())],
        &again[..signed],
        "another encoding of the same content"
    );
    assert_eq!(
        usize::from(data[signed]),
        data.len() - signed - 1,
        "the signature fills the rest"
    );

    let (own, removed): (Vec<_>, &[TokenHash]) = match &file.body {
        TokenBody::List { added, removed } => (added.clone(), removed),
        TokenBody::Bucket { tokens, .. } => (tokens.clone(), &[]),
        TokenBody::Filter { removed, .. } => (Vec::new(), removed),
    };
    assert!(own.len() * tokenfile::PUBLISHED_TOKEN_LEN + removed.len() * 16 <= data.len());
    let mut probes: Vec<TokenHash> = own
        .iter()
        .map(|t| t.hash)
        .chain(removed.iter().copied())
        .collect();
    probes.extend(
        data.chunks_exact(16)
            .take(40)
            .map(|c| TokenHash(c.try_into().expect("16 bytes"))),
    );
    let candidates = file.filter_candidates(&probes);
    assert!(candidates.is_sorted(), "candidates out of order");
    assert!(candidates.iter().all(|&(i, _)| i < probes.len()));
    if file.kind() == TokenKind::Filter {
        assert!(
            probes.iter().all(|p| file.confirms(p).is_none()),
            "a filter confirmed"
        );
    } else {
        let exact: Vec<_> = (0..probes.len())
            .filter_map(|i| file.confirms(&probes[i]).map(|level| (i, level)))
            .collect();
        assert_eq!(
            candidates, exact,
            "an exact file's candidates are its confirmations"
        );
        for token in &own {
            assert_eq!(file.confirms(&token.hash), Some(token.level));
        }
    }
    let bucket = match file.body {
        TokenBody::Bucket { bucket, .. } => Some(bucket),
        _ => None,
    };
    assert_eq!(
        tokenfile::parse_file_name(&file.name()),
        Some((file.kind(), file.seq, bucket))
    );
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
