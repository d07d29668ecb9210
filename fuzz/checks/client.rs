//! What must hold for every input of the `confidant-client` fuzz targets: what a phone parses
//! from the server's unsigned JSON. The targets and the corpus replay test
//! (`crates/client/tests/it/fuzz_corpus.rs`) both call these.

use confidant_client::download::parse_feed_index;
use confidant_client::encounter::{self, EphemeralKey};
use confidant_client::risk::ExposureConfiguration;
use confidant_core::Region;
use confidant_core::feed::{self, FeedIndex, FeedKind};

/// The region the corpus indexes are for (`confidant simulate`'s).
pub const REGION: &str = "SIM";

/// `feed_index`: `index.json` as `FeedDownloader` checks it, and as plain JSON.
pub fn feed_index(data: &[u8]) {
    if let Ok(index) = serde_json::from_slice::<FeedIndex>(data) {
        let json = serde_json::to_vec(&index).expect("an index serialises");
        let again: FeedIndex = serde_json::from_slice(&json).expect("re-serialised parses");
        assert_eq!(again, index);
    }
    let region = Region::try_from(REGION.to_owned()).expect("valid region");
    if let Ok(index) = parse_feed_index("index.json", data, &region) {
        assert_eq!(index.region, region);
        assert_eq!(index.format, feed::FEED_INDEX_FORMAT);
        // Only canonical names get through: nothing else is ever requested.
        let snapshot = index.snapshot.iter().map(|s| (FeedKind::Snapshot, s));
        let deltas = index.deltas.iter().map(|d| (FeedKind::Delta, d));
        for (kind, entry) in snapshot.chain(deltas) {
            assert_eq!(entry.file, feed::file_name(kind, entry.seq));
        }
    }
}

/// `exposure_config`: `GET /exposure-configuration/{region}.json` as the phone parses it;
/// scoring with whatever parses never panics, and the JSON round-trips.
pub fn exposure_config(data: &[u8]) {
    let Ok(config) = serde_json::from_slice::<ExposureConfiguration>(data) else {
        return;
    };
    let json = serde_json::to_vec(&config).expect("a configuration serialises");
    let again: ExposureConfiguration = serde_json::from_slice(&json).expect("re-serialised parses");
    assert_eq!(again, config);
    for attenuation in [0, 10, 11, 40, 73, 74, u8::MAX] {
        for seconds in [0, 300, 1800, 1801, u32::MAX] {
            for days in [0, 5, 14, u32::MAX] {
                for risk in [0, 1, 8, 9, u8::MAX] {
                    let _ = config.score(attenuation, seconds, days, risk);
                }
            }
        }
    }
}

/// `encounter_slices`: broadcast advertisements as a phone hears them from anyone nearby. The
/// input is up to four advertisements, each a length byte and that many bytes (the rest of the
/// input goes to the last). Decoding and reassembly never panic; what decodes re-encodes to the
/// same bytes; a key rebuilt from them agrees with every slice it came from; and deriving
/// tokens with whatever key was rebuilt (low-order points included) never panics.
pub fn encounter_slices(data: &[u8]) {
    let mut adverts = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && adverts.len() < 4 {
        let len = usize::from(rest[0]).min(rest.len() - 1);
        adverts.push(&rest[1..1 + len]);
        rest = &rest[1 + len..];
    }
    let slices: Vec<encounter::Slice> = adverts
        .iter()
        .filter_map(|advert| {
            let slice = encounter::decode(advert)?;
            assert_eq!(
                encounter::encode(&slice),
                *advert,
                "decode/encode changed the bytes"
            );
            Some(slice)
        })
        .collect();
    let Some(key) = encounter::reassemble(&slices) else {
        return;
    };
    let rebuilt = encounter::slices(&key);
    for slice in &slices {
        assert_eq!(
            rebuilt[usize::from(slice.index)],
            *slice,
            "the rebuilt key disagrees with a slice it came from"
        );
    }
    let own = EphemeralKey::from_secret_bytes(0, [0x11; 32]);
    if let Some(pair) = encounter::derive(&own, &key) {
        assert_ne!(pair.report, pair.check);
    }
}
