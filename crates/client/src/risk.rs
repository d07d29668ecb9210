//! GAEN v1 risk scoring: an exposure's attenuation, duration, days since it happened and the
//! key's transmission risk each fall into one of eight buckets; the configuration gives each
//! bucket a level value, and the score is the product of the four values.
//!
//! Buckets (index into the configuration's arrays, as Google's v1 API defines them):
//! - attenuation, dB: > 73, > 63, > 51, > 33, > 27, > 15, > 10, ≤ 10
//! - duration, minutes: 0, ≤ 5, ≤ 10, ≤ 15, ≤ 20, ≤ 25, ≤ 30, > 30
//! - days since the exposure: ≥ 14, ≥ 12, ≥ 10, ≥ 8, ≥ 6, ≥ 4, ≥ 2, ≥ 0
//! - transmission risk level 1..=8 → index 0..=7; level 0 (unset) counts as level 1
//!
//! The weights of the configuration are carried but, as in v1 itself, not used. The score is
//! not clamped to 255 as iOS's `totalRiskScore` is, so values up to 8⁴ compare correctly.

use std::collections::BTreeMap;

use gaen::{DiagnosisKey, TransmissionRisk};
use serde::{Deserialize, Serialize};

use crate::observations::Sighting;
use crate::{DAY_SECONDS, unix_day};

/// GAEN v1 `ExposureConfiguration` exactly as `GET /exposure-configuration/{region}.json`
/// serves it (camelCase JSON).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposureConfiguration {
    pub minimum_risk_score: u32,
    pub attenuation_level_values: [u32; 8],
    #[serde(default)]
    pub attenuation_weight: u32,
    pub days_since_last_exposure_level_values: [u32; 8],
    #[serde(default)]
    pub days_since_last_exposure_weight: u32,
    pub duration_level_values: [u32; 8],
    #[serde(default)]
    pub duration_weight: u32,
    pub transmission_risk_level_values: [u32; 8],
    #[serde(default)]
    pub transmission_risk_weight: u32,
    /// dB thresholds of the v1.5 attenuation-duration buckets; carried, not used in scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attenuation_duration_thresholds: Option<Vec<u32>>,
}

impl ExposureConfiguration {
    /// The configuration the server publishes by default (COVID Shield's): close contact
    /// (attenuation 73 dB or less) for more than 15 minutes.
    pub fn covid_shield_default() -> Self {
        Self {
            minimum_risk_score: 1,
            attenuation_level_values: [0, 5, 5, 5, 5, 5, 5, 5],
            attenuation_weight: 50,
            days_since_last_exposure_level_values: [1; 8],
            days_since_last_exposure_weight: 50,
            duration_level_values: [0, 0, 0, 0, 5, 5, 5, 5],
            duration_weight: 50,
            transmission_risk_level_values: [1; 8],
            transmission_risk_weight: 50,
            attenuation_duration_thresholds: None,
        }
    }

    /// The GAEN v1 score of one exposure: the product of its four bucket values.
    pub fn score(
        &self,
        attenuation_db: u8,
        duration_seconds: u32,
        days_since: u32,
        transmission_risk: u8,
    ) -> u32 {
        self.attenuation_level_values[attenuation_bucket(attenuation_db)]
            .saturating_mul(self.duration_level_values[duration_bucket(duration_seconds)])
            .saturating_mul(
                self.days_since_last_exposure_level_values[days_since_bucket(days_since)],
            )
            .saturating_mul(
                self.transmission_risk_level_values[transmission_risk_bucket(transmission_risk)],
            )
    }
}

/// Index of the attenuation bucket: 0 for > 73 dB (farthest) … 7 for ≤ 10 dB (closest).
pub fn attenuation_bucket(attenuation_db: u8) -> usize {
    const LOWER_BOUNDS: [u8; 7] = [73, 63, 51, 33, 27, 15, 10];
    LOWER_BOUNDS
        .iter()
        .position(|&bound| attenuation_db > bound)
        .unwrap_or(7)
}

/// Index of the duration bucket: 0 for no time at all, 7 for more than 30 minutes.
pub fn duration_bucket(duration_seconds: u32) -> usize {
    if duration_seconds == 0 {
        return 0;
    }
    // ≤ 5 min is bucket 1, ≤ 10 min bucket 2, … ≤ 30 min bucket 6.
    (duration_seconds.div_ceil(300) as usize).min(7)
}

/// Index of the days-since bucket: 7 for today or yesterday … 0 for 14 days or more.
pub fn days_since_bucket(days_since: u32) -> usize {
    7 - (days_since / 2).min(7) as usize
}

/// Index of the transmission risk bucket: level 1..=8 → 0..=7, level 0 as level 1.
pub fn transmission_risk_bucket(level: u8) -> usize {
    usize::from(level.clamp(1, TransmissionRisk::MAX)) - 1
}

/// One matched diagnosis key's exposure, aggregated over its sightings, scored with GAEN v1
/// buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Exposure {
    pub key: DiagnosisKey,
    /// Unix day of the exposure (of its latest sighting).
    pub day: u32,
    /// Sum of the sightings' durations.
    pub duration_seconds: u32,
    /// Minimum attenuation over the sightings (the closest approach).
    pub attenuation_db: u8,
    /// The key's transmission risk level (0 when the key carries none).
    pub transmission_risk: u8,
    pub score: u32,
}

/// Aggregates raw (key, sighting) matches into one [`Exposure`] per key and scores them at
/// `now`; returns only those with a score above 0 and at or above the minimum risk score,
/// highest score first (then by key).
pub fn exposures<'a>(
    matches: impl IntoIterator<Item = (DiagnosisKey, &'a Sighting)>,
    config: &ExposureConfiguration,
    now: u64,
) -> Vec<Exposure> {
    struct Aggregate {
        key: DiagnosisKey,
        last_seen: u64,
        duration_seconds: u32,
        attenuation_db: u8,
    }
    // By key data: one exposure per key even if the key came with different metadata twice.
    let mut by_key: BTreeMap<[u8; 16], Aggregate> = BTreeMap::new();
    for (key, sighting) in matches {
        by_key
            .entry(key.tek.0)
            .and_modify(|a| {
                a.last_seen = a.last_seen.max(sighting.first_seen);
                a.duration_seconds = a.duration_seconds.saturating_add(sighting.duration_seconds);
                a.attenuation_db = a.attenuation_db.min(sighting.attenuation_db);
            })
            .or_insert(Aggregate {
                key,
                last_seen: sighting.first_seen,
                duration_seconds: sighting.duration_seconds,
                attenuation_db: sighting.attenuation_db,
            });
    }
    let today = now / DAY_SECONDS;
    let mut found: Vec<Exposure> = by_key
        .into_values()
        .filter_map(|a| {
            let day = unix_day(a.last_seen);
            let days_since =
                u32::try_from(today.saturating_sub(u64::from(day))).unwrap_or(u32::MAX);
            let transmission_risk = a.key.transmission_risk.map_or(0, TransmissionRisk::get);
            let score = config.score(
                a.attenuation_db,
                a.duration_seconds,
                days_since,
                transmission_risk,
            );
            (score > 0 && score >= config.minimum_risk_score).then_some(Exposure {
                key: a.key,
                day,
                duration_seconds: a.duration_seconds,
                attenuation_db: a.attenuation_db,
                transmission_risk,
                score,
            })
        })
        .collect();
    found.sort_by(|a, b| b.score.cmp(&a.score).then(a.key.tek.cmp(&b.key.tek)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use gaen::{Aem, IntervalNumber, RollingPeriod, Rpi, Tek};

    const T0: u64 = 1_800_000_000;

    /// Each level value is its bucket index + 1, so hand-computed scores are easy to follow.
    fn probe() -> ExposureConfiguration {
        ExposureConfiguration {
            minimum_risk_score: 0,
            attenuation_level_values: [1, 2, 3, 4, 5, 6, 7, 8],
            duration_level_values: [1, 2, 3, 4, 5, 6, 7, 8],
            days_since_last_exposure_level_values: [1, 2, 3, 4, 5, 6, 7, 8],
            transmission_risk_level_values: [1, 2, 3, 4, 5, 6, 7, 8],
            ..ExposureConfiguration::covid_shield_default()
        }
    }

    #[test]
    fn bucket_boundaries() {
        let attenuation: Vec<(u8, usize)> = vec![
            (255, 0),
            (74, 0),
            (73, 1),
            (64, 1),
            (63, 2),
            (52, 2),
            (51, 3),
            (34, 3),
            (33, 4),
            (28, 4),
            (27, 5),
            (16, 5),
            (15, 6),
            (11, 6),
            (10, 7),
            (0, 7),
        ];
        for (db, bucket) in attenuation {
            assert_eq!(attenuation_bucket(db), bucket, "{db} dB");
        }
        let duration: Vec<(u32, usize)> = vec![
            (0, 0),
            (1, 1),
            (300, 1),
            (301, 2),
            (600, 2),
            (900, 3),
            (901, 4),
            (1200, 4),
            (1500, 5),
            (1800, 6),
            (1801, 7),
            (u32::MAX, 7),
        ];
        for (seconds, bucket) in duration {
            assert_eq!(duration_bucket(seconds), bucket, "{seconds} s");
        }
        let days: Vec<(u32, usize)> = vec![
            (0, 7),
            (1, 7),
            (2, 6),
            (3, 6),
            (5, 5),
            (7, 4),
            (9, 3),
            (11, 2),
            (12, 1),
            (13, 1),
            (14, 0),
            (400, 0),
        ];
        for (days_since, bucket) in days {
            assert_eq!(days_since_bucket(days_since), bucket, "{days_since} days");
        }
        assert_eq!(transmission_risk_bucket(0), 0);
        assert_eq!(transmission_risk_bucket(1), 0);
        assert_eq!(transmission_risk_bucket(8), 7);
        assert_eq!(transmission_risk_bucket(200), 7);
    }

    #[test]
    fn scores_are_products_of_level_values() {
        let config = probe();
        // 50 dB → 4, 20 min → 5, 3 days → 7, risk 6 → 6: 4 · 5 · 7 · 6.
        assert_eq!(config.score(50, 1200, 3, 6), 840);
        // 80 dB → 1, 31 min → 8, today → 8, risk 0 → 1.
        assert_eq!(config.score(80, 1860, 0, 0), 64);
        let default = ExposureConfiguration::covid_shield_default();
        assert_eq!(default.score(50, 1200, 0, 4), 25);
        assert_eq!(default.score(50, 900, 0, 4), 0, "15 minutes is not enough");
        assert_eq!(default.score(74, 3600, 0, 4), 0, "too far away");
        assert_eq!(default.score(73, 901, 13, 8), 25);
    }

    #[test]
    fn the_servers_json_parses() {
        let json = r#"{"minimumRiskScore":1,"attenuationLevelValues":[0,5,5,5,5,5,5,5],"attenuationWeight":50,
            "daysSinceLastExposureLevelValues":[1,1,1,1,1,1,1,1],"daysSinceLastExposureWeight":50,
            "durationLevelValues":[0,0,0,0,5,5,5,5],"durationWeight":50,
            "transmissionRiskLevelValues":[1,1,1,1,1,1,1,1],"transmissionRiskWeight":50}"#;
        let parsed: ExposureConfiguration = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed, ExposureConfiguration::covid_shield_default());
        let with_thresholds: ExposureConfiguration = serde_json::from_str(
            &json.replace('}', r#","attenuationDurationThresholds":[50,70]}"#),
        )
        .expect("parses");
        assert_eq!(
            with_thresholds.attenuation_duration_thresholds,
            Some(vec![50, 70])
        );
    }

    fn sighting(first_seen: u64, duration_seconds: u32, attenuation_db: u8) -> Sighting {
        Sighting {
            rpi: Rpi([0; 16]),
            aem: Aem([0; 4]),
            first_seen,
            duration_seconds,
            attenuation_db,
        }
    }

    #[test]
    fn exposures_aggregate_per_key_and_filter_by_minimum() {
        let day = (T0 / DAY_SECONDS) as u32;
        let key = |byte: u8, risk: i64| {
            let mut key = DiagnosisKey::new(
                Tek([byte; 16]),
                IntervalNumber::new(day * 144),
                RollingPeriod::FULL_DAY,
            );
            key.transmission_risk = TransmissionRisk::new(risk).ok();
            key
        };
        let (near, far, brief) = (key(1, 6), key(2, 6), key(3, 6));
        let sightings = [
            sighting(T0, 600, 60),
            sighting(T0 + 600, 500, 45),
            sighting(T0, 3600, 80),
            sighting(T0, 120, 20),
        ];
        let matches = vec![
            (near, &sightings[0]),
            (near, &sightings[1]),
            (far, &sightings[2]),
            (brief, &sightings[3]),
        ];
        let now = T0 + 3 * DAY_SECONDS;
        let config = ExposureConfiguration {
            minimum_risk_score: 100,
            ..probe()
        };
        let found = exposures(matches.clone(), &config, now);
        // near: 45 dB → 4, 1100 s (≤ 20 min) → 5, 3 days → 7, risk 6 → 6 = 840.
        // far: 80 dB → 1, 60 min → 8, 7, 6 = 336. brief: 20 dB → 6, 2 min → 2, 7, 6 = 504.
        let summary: Vec<(u8, u32, u32, u8, u32)> = found
            .iter()
            .map(|e| {
                (
                    e.key.tek.0[0],
                    e.day,
                    e.duration_seconds,
                    e.attenuation_db,
                    e.score,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, day, 1100, 45, 840),
                (3, day, 120, 20, 504),
                (2, day, 3600, 80, 336)
            ]
        );
        let strict = ExposureConfiguration {
            minimum_risk_score: 600,
            ..probe()
        };
        assert_eq!(exposures(matches.clone(), &strict, now).len(), 1);
        let default = ExposureConfiguration::covid_shield_default();
        let only_near: Vec<u8> = exposures(matches, &default, now)
            .iter()
            .map(|e| e.key.tek.0[0])
            .collect();
        assert_eq!(only_near, [1], "far is too far, brief too short");
    }
}
