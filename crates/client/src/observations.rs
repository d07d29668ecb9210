//! What the phone heard: one [`Sighting`] per RPI encounter, kept 14 days, saved to a file.
//!
//! A scanner reports the same RPI many times while a neighbour stays near. Reports that
//! continue an earlier sighting of the same RPI (starting no later than it ends) extend it
//! instead of adding a row, so the store grows with encounters, not with scans.
//!
//! The file is JSON inside a checksummed, atomically replaced container (see `state_file`):
//! easy to inspect, and a torn or damaged file is refused rather than half-loaded.

use std::collections::HashMap;
use std::path::Path;

use gaen::{Aem, Rpi};
use serde::{Deserialize, Serialize};

use crate::state_file::{load_json, save_json};
use crate::{ClientError, DAY_SECONDS, RETENTION_DAYS};

const FILE_MAGIC: &[u8; 8] = b"CSIGHT\x01\n";

/// One RPI heard: when it was first heard, for how long, how strongly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    #[serde(with = "hex_bytes::rpi")]
    pub rpi: Rpi,
    #[serde(with = "hex_bytes::aem")]
    pub aem: Aem,
    /// Unix seconds.
    pub first_seen: u64,
    pub duration_seconds: u32,
    /// Transmit power minus received signal strength, dB (lower is closer).
    pub attenuation_db: u8,
}

impl Sighting {
    /// The first second after the sighting.
    pub fn end(&self) -> u64 {
        self.first_seen
            .saturating_add(u64::from(self.duration_seconds))
    }
}

/// The phone's sightings of the last 14 days, in the order they were first recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservationStore {
    sightings: Vec<Sighting>,
    /// The latest sighting of each RPI, by index into `sightings`, to extend it cheaply.
    latest: HashMap<Rpi, usize>,
}

#[derive(Serialize, Deserialize)]
struct StoredSightings {
    sightings: Vec<Sighting>,
}

impl ObservationStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn from_sightings(sightings: Vec<Sighting>) -> Self {
        let latest = sightings
            .iter()
            .enumerate()
            .map(|(index, s)| (s.rpi, index))
            .collect();
        Self { sightings, latest }
    }

    /// Records a sighting. One that continues the latest sighting of the same RPI and AEM
    /// (it starts before or when that one ends) extends it: the duration grows to cover both
    /// and the attenuation keeps the minimum.
    pub fn record(&mut self, sighting: Sighting) {
        if let Some(&index) = self.latest.get(&sighting.rpi) {
            let existing = &mut self.sightings[index];
            if existing.aem == sighting.aem
                && existing.first_seen <= sighting.first_seen
                && sighting.first_seen <= existing.end()
            {
                let end = existing.end().max(sighting.end());
                existing.duration_seconds =
                    u32::try_from(end - existing.first_seen).unwrap_or(u32::MAX);
                existing.attenuation_db = existing.attenuation_db.min(sighting.attenuation_db);
                return;
            }
        }
        self.latest.insert(sighting.rpi, self.sightings.len());
        self.sightings.push(sighting);
    }

    /// Forgets sightings that ended more than 14 days before `now`.
    pub fn prune(&mut self, now: u64) {
        let cutoff = now.saturating_sub(RETENTION_DAYS * DAY_SECONDS);
        let before = self.sightings.len();
        self.sightings.retain(|s| s.end() >= cutoff);
        if self.sightings.len() != before {
            *self = Self::from_sightings(std::mem::take(&mut self.sightings));
        }
    }

    pub fn len(&self) -> usize {
        self.sightings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }

    pub fn sightings(&self) -> &[Sighting] {
        &self.sightings
    }

    /// Saves the store atomically: after a crash the file holds the old or the new store.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let stored = StoredSightings {
            sightings: self.sightings.clone(),
        };
        save_json(path, FILE_MAGIC, &stored)
    }

    /// Loads a store saved by [`ObservationStore::save`]; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let stored: Option<StoredSightings> = load_json(path, FILE_MAGIC, "a sightings list")?;
        Ok(stored.map_or_else(Self::new, |s| Self::from_sightings(s.sightings)))
    }
}

mod hex_bytes {
    //! Serde for the gaen byte arrays as lower-case hex strings (gaen itself has no serde).

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    fn decode<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut bytes = [0u8; N];
        hex::decode_to_slice(text.as_bytes(), &mut bytes)
            .map_err(|e| D::Error::custom(format!("expected {N} bytes as hex: {e}")))?;
        Ok(bytes)
    }

    pub mod rpi {
        //! An [`gaen::Rpi`] as 32 hex characters.

        use super::*;

        pub fn serialize<S: Serializer>(rpi: &gaen::Rpi, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(rpi.0))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<gaen::Rpi, D::Error> {
            decode(d).map(gaen::Rpi)
        }
    }

    pub mod aem {
        //! An [`gaen::Aem`] as 8 hex characters.

        use super::*;

        pub fn serialize<S: Serializer>(aem: &gaen::Aem, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(aem.0))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<gaen::Aem, D::Error> {
            decode(d).map(gaen::Aem)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    fn heard(rpi: u8, first_seen: u64, duration_seconds: u32, attenuation_db: u8) -> Sighting {
        Sighting {
            rpi: Rpi([rpi; 16]),
            aem: Aem([rpi; 4]),
            first_seen,
            duration_seconds,
            attenuation_db,
        }
    }

    #[test]
    fn continuing_scans_extend_a_sighting() {
        let mut store = ObservationStore::new();
        store.record(heard(1, T0, 60, 50));
        store.record(heard(1, T0 + 60, 60, 40));
        store.record(heard(1, T0 + 100, 60, 60));
        store.record(heard(2, T0 + 100, 60, 70));
        // A gap: a new encounter with the same RPI.
        store.record(heard(1, T0 + 500, 60, 55));
        assert_eq!(
            store.sightings(),
            &[
                heard(1, T0, 160, 40),
                heard(2, T0 + 100, 60, 70),
                heard(1, T0 + 500, 60, 55)
            ]
        );
        store.record(heard(1, T0 + 560, 0, 30));
        assert_eq!(store.sightings()[2], heard(1, T0 + 500, 60, 30));
    }

    #[test]
    fn prune_keeps_fourteen_days_and_save_load_round_trips() {
        let mut store = ObservationStore::new();
        let now = T0 + 20 * DAY_SECONDS;
        let cutoff = now - 14 * DAY_SECONDS;
        store.record(heard(1, cutoff - 100, 99, 50)); // ended 1 s before the cutoff
        store.record(heard(2, cutoff - 100, 100, 50)); // ends at the cutoff: kept
        store.record(heard(3, now - 10, 5, 50));
        store.prune(now);
        assert_eq!(store.len(), 2);
        assert_eq!(store.sightings()[0].rpi, Rpi([2; 16]));
        // The index was rebuilt: RPI 3 still extends.
        store.record(heard(3, now - 5, 5, 20));
        assert_eq!(store.sightings()[1], heard(3, now - 10, 10, 20));

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sightings");
        assert!(
            ObservationStore::load(&path)
                .expect("missing is empty")
                .is_empty()
        );
        store.save(&path).expect("saves");
        let loaded = ObservationStore::load(&path).expect("loads");
        assert_eq!(loaded, store);

        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            ObservationStore::load(&path),
            Err(ClientError::CorruptState { .. })
        ));
    }
}
