//! Which downloaded diagnosis keys explain what this phone heard, and how much it matters.
//!
//! The heavy lifting is `gaen`'s [`Matcher`] (the one the `confidant match` tool uses); this
//! module turns sightings into its observations and its matches back into sightings, then
//! hands them to [`risk::exposures`](crate::risk::exposures).

use std::collections::{HashMap, HashSet};

use gaen::matching::DEFAULT_TOLERANCE_SECONDS;
use gaen::{DiagnosisKey, Matcher, Observation, Rpi};

use crate::observations::{ObservationStore, Sighting};
use crate::risk::{self, Exposure, ExposureConfiguration};

/// Matches `keys` against the phone's sightings (an RPI counts when heard within two hours of
/// its interval, for clock skew) and returns the exposures at or above the configuration's
/// minimum risk score, scored at `now`.
pub fn match_keys(
    store: &ObservationStore,
    keys: &[DiagnosisKey],
    config: &ExposureConfiguration,
    now: u64,
) -> Vec<Exposure> {
    risk::exposures(matched_sightings(store, keys), config, now)
}

/// Every (key, sighting) pair where the key derives the sighting's RPI for an interval near
/// when it was heard. A key listed twice (by key data) is matched once, as its first listing.
pub fn matched_sightings<'a>(
    store: &'a ObservationStore,
    keys: &[DiagnosisKey],
) -> Vec<(DiagnosisKey, &'a Sighting)> {
    if keys.is_empty() || store.is_empty() {
        return Vec::new();
    }
    // The same key from two sources (feed and exports, or two syncs) must not count its
    // sightings twice.
    let mut distinct = HashSet::with_capacity(keys.len());
    let keys: Vec<DiagnosisKey> = keys
        .iter()
        .filter(|key| distinct.insert(key.tek))
        .copied()
        .collect();
    // The matcher reorders its observations, so sightings are found again by (RPI, time);
    // sightings sharing both become one observation and are all reported on a match.
    let mut by_rpi_and_time: HashMap<(Rpi, u64), Vec<&Sighting>> = HashMap::new();
    for sighting in store.sightings() {
        by_rpi_and_time
            .entry((sighting.rpi, sighting.first_seen))
            .or_default()
            .push(sighting);
    }
    let observations = by_rpi_and_time
        .keys()
        .map(|&(rpi, observed_at)| Observation {
            observed_at,
            rpi,
            aem: None,
            rssi: None,
        })
        .collect();
    let matcher = Matcher::new(observations, DEFAULT_TOLERANCE_SECONDS);
    let mut matched = Vec::new();
    for found in matcher.match_keys(&keys) {
        let observation = matcher.observations()[found.observation];
        if let Some(sightings) = by_rpi_and_time.get(&(observation.rpi, observation.observed_at)) {
            matched.extend(sightings.iter().map(|s| (found.key, *s)));
        }
    }
    matched
}
