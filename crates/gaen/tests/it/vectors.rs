//! The official Exposure Notification crypto vectors (specification v1.2).

use gaen::{IntervalNumber, Metadata, Rpi, Tek};
use serde_json::Value;

use crate::{fixture_text, unhex};

fn vectors() -> Value {
    serde_json::from_str(&fixture_text("test_vectors.json")).expect("vectors are JSON")
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is a string"))
}

#[test]
fn rpik_and_aemk_match_the_spec() {
    let v = vectors();
    let tek = Tek(unhex(field(&v, "tek")));
    let (rpi_key, aem_key) = tek.derive_keys();
    assert_eq!(hex::encode(rpi_key.as_bytes()), field(&v, "rpik"));
    assert_eq!(hex::encode(aem_key.as_bytes()), field(&v, "aemk"));
    assert_eq!(tek.rpi_key().as_bytes(), rpi_key.as_bytes());
    assert_eq!(tek.aem_key().as_bytes(), aem_key.as_bytes());
    let generated_at = v["key_generation_unix_seconds"].as_u64().expect("seconds");
    assert_eq!(
        u64::from(IntervalNumber::containing(generated_at).get()),
        v["rolling_start_interval_number"].as_u64().expect("rsin")
    );
}

#[test]
fn all_144_rpis_and_aems_match_the_spec() {
    let v = vectors();
    let tek = Tek(unhex(field(&v, "tek")));
    let metadata = Metadata(unhex(field(&v, "metadata")));
    let (rpi_key, aem_key) = tek.derive_keys();
    let rsin = v["rolling_start_interval_number"].as_u64().expect("rsin") as u32;
    let intervals = v["intervals"].as_array().expect("intervals");
    assert_eq!(intervals.len(), 144);

    let batch = rpi_key.rpis(IntervalNumber::new(rsin), 144);
    assert_eq!(batch.len(), 144);
    for (expected, (interval, rpi)) in intervals.iter().zip(batch.iter()) {
        assert_eq!(
            u64::from(interval.get()),
            expected["enin"].as_u64().expect("enin")
        );
        let expected_rpi = Rpi(unhex(field(expected, "rpi")));
        assert_eq!(rpi, expected_rpi, "batch RPI of interval {interval}");
        assert_eq!(
            rpi_key.rpi(interval),
            expected_rpi,
            "single RPI of interval {interval}"
        );
        let aem = aem_key.encrypt(&rpi, metadata);
        assert_eq!(
            hex::encode(aem.0),
            field(expected, "aem"),
            "AEM of interval {interval}"
        );
        assert_eq!(aem_key.decrypt(&rpi, aem), metadata);
    }
}
