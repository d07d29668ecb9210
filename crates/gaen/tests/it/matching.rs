//! Matching built from the official vectors: known RPIs at known times are found.

use std::num::NonZeroUsize;

use gaen::matching::DEFAULT_TOLERANCE_SECONDS;
use gaen::{
    Aem, DiagnosisKey, IntervalNumber, Matcher, Metadata, Observation, RollingPeriod, Rpi, Tek,
};
use serde_json::Value;

use crate::{fixture_text, unhex};

struct Vectors {
    key: DiagnosisKey,
    metadata: Metadata,
    /// (interval, rpi, aem) for all 144 intervals.
    intervals: Vec<(IntervalNumber, Rpi, Aem)>,
}

fn vectors() -> Vectors {
    let v: Value = serde_json::from_str(&fixture_text("test_vectors.json")).expect("json");
    let key = DiagnosisKey::new(
        Tek(unhex(v["tek"].as_str().expect("tek"))),
        IntervalNumber::new(v["rolling_start_interval_number"].as_u64().expect("rsin") as u32),
        RollingPeriod::new(v["rolling_period"].as_u64().expect("period") as u32).expect("period"),
    );
    let intervals = v["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| {
            (
                IntervalNumber::new(i["enin"].as_u64().expect("enin") as u32),
                Rpi(unhex(i["rpi"].as_str().expect("rpi"))),
                Aem(unhex(i["aem"].as_str().expect("aem"))),
            )
        })
        .collect();
    Vectors {
        key,
        metadata: Metadata(unhex(v["metadata"].as_str().expect("metadata"))),
        intervals,
    }
}

fn other_key(seed: u8) -> DiagnosisKey {
    DiagnosisKey::new(
        Tek([seed; 16]),
        IntervalNumber::new(2_642_976),
        RollingPeriod::FULL_DAY,
    )
}

#[test]
fn vector_rpis_are_found_with_their_metadata() {
    let v = vectors();
    let heard = [3usize, 50, 143];
    let mut observations: Vec<Observation> = heard
        .iter()
        .map(|&i| {
            let (interval, rpi, aem) = v.intervals[i];
            Observation {
                observed_at: interval.start_unix_seconds() + 300,
                rpi,
                aem: Some(aem),
                rssi: Some(-70),
            }
        })
        .collect();
    // Heard 3 hours after its interval: outside the ±2 h tolerance.
    let (late_interval, late_rpi, _) = v.intervals[10];
    observations.push(Observation {
        observed_at: late_interval.start_unix_seconds() + 3 * 3600,
        rpi: late_rpi,
        aem: None,
        rssi: None,
    });
    // An RPI nobody published.
    observations.push(Observation {
        observed_at: v.intervals[20].0.start_unix_seconds(),
        rpi: Rpi([0xab; 16]),
        aem: None,
        rssi: None,
    });

    let matcher = Matcher::new(observations, DEFAULT_TOLERANCE_SECONDS);
    let keys: Vec<DiagnosisKey> = (1..=20).map(other_key).chain([v.key]).collect();
    let matches = matcher.match_keys(&keys);

    let found: Vec<IntervalNumber> = matches.iter().map(|m| m.interval).collect();
    let expected: Vec<IntervalNumber> = heard.iter().map(|&i| v.intervals[i].0).collect();
    assert_eq!(found, expected);
    for m in &matches {
        assert_eq!(m.key, v.key);
        assert_eq!(m.metadata, Some(v.metadata));
        assert_eq!(matcher.observations()[m.observation].rpi, m.rpi);
        assert_eq!(matcher.observations()[m.observation].rssi, Some(-70));
    }
    assert_eq!(
        matcher.match_keys_parallel(&keys, NonZeroUsize::new(2).expect("2")),
        matches
    );
}

#[test]
fn a_key_outside_its_window_does_not_match() {
    let v = vectors();
    let (interval, rpi, _) = v.intervals[0];
    let matcher = Matcher::new(
        vec![Observation {
            observed_at: interval.start_unix_seconds(),
            rpi,
            aem: None,
            rssi: None,
        }],
        DEFAULT_TOLERANCE_SECONDS,
    );
    // The same TEK announced as starting one interval later never derives that RPI.
    let shifted = DiagnosisKey::new(
        v.key.tek,
        IntervalNumber::new(v.key.rolling_start.get() + 1),
        RollingPeriod::new(143).expect("143"),
    );
    assert!(matcher.match_keys(&[shifted]).is_empty());
    assert_eq!(matcher.match_keys(&[v.key]).len(), 1);
}
