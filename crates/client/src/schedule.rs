//! A phone's Temporary Exposure Keys: one per UTC day, created the first time that day needs
//! one, kept 14 days, and what the phone broadcasts with them.
//!
//! Keys come from the OS ([`KeySchedule::random`]) or, for simulations and tests, from a seed
//! ([`KeySchedule::from_seed`]): the key of unix day `d` is the first 16 bytes of
//! HMAC-SHA256(key = seed, message = "confidant-tek-v1" ‖ d as u32 little-endian). The same
//! seed therefore gives the same keys in any order of use, and a seed never leaves the phone.
//!
//! Not here: key rotation within a day (after an upload, say) and persistence of the keys.

use std::collections::BTreeMap;

use gaen::{
    Aem, AemKey, DiagnosisKey, IntervalNumber, Metadata, RollingPeriod, Rpi, RpiKey, Tek,
    TransmissionRisk,
};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::{RETENTION_DAYS, unix_day};

/// The AEM version byte: major version 1, minor 0 (bits 7..6 and 5..4).
pub const AEM_VERSION: u8 = 0x40;
/// Transmit power written into the AEM when none is set, dBm.
pub const DEFAULT_TX_POWER_DBM: i8 = -8;

const SEED_LABEL: &[u8] = b"confidant-tek-v1";
const INTERVALS_PER_DAY: u32 = 144;

/// Where new keys come from.
#[derive(Clone)]
enum KeySource {
    Os,
    Seeded([u8; 32]),
}

/// One day's key with its derived keys, so broadcasting costs one AES block per call.
#[derive(Clone)]
struct DayKey {
    tek: Tek,
    rpi_key: RpiKey,
    aem_key: AemKey,
}

/// A phone's daily Temporary Exposure Keys (one per UTC day, created when first needed, kept
/// 14 days).
#[derive(Clone)]
pub struct KeySchedule {
    source: KeySource,
    /// By unix day.
    keys: BTreeMap<u32, DayKey>,
    tx_power_dbm: i8,
}

impl KeySchedule {
    /// Keys drawn from the operating system's randomness.
    pub fn random() -> Self {
        Self::with_source(KeySource::Os)
    }

    /// Deterministic keys for simulations and tests (see the module docs for the derivation).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::with_source(KeySource::Seeded(seed))
    }

    fn with_source(source: KeySource) -> Self {
        Self {
            source,
            keys: BTreeMap::new(),
            tx_power_dbm: DEFAULT_TX_POWER_DBM,
        }
    }

    /// Sets the transmit power announced in the AEM from now on.
    pub fn with_tx_power(mut self, dbm: i8) -> Self {
        self.tx_power_dbm = dbm;
        self
    }

    pub fn tx_power_dbm(&self) -> i8 {
        self.tx_power_dbm
    }

    fn new_tek(&self, day: u32) -> Tek {
        let mut tek = [0u8; 16];
        match &self.source {
            KeySource::Os => OsRng.fill_bytes(&mut tek),
            KeySource::Seeded(seed) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(seed).expect("HMAC accepts any key length");
                mac.update(SEED_LABEL);
                mac.update(&day.to_le_bytes());
                tek.copy_from_slice(&mac.finalize().into_bytes()[..16]);
            }
        }
        Tek(tek)
    }

    fn day_key(&mut self, day: u32) -> &DayKey {
        if !self.keys.contains_key(&day) {
            let tek = self.new_tek(day);
            let (rpi_key, aem_key) = tek.derive_keys();
            self.keys.insert(
                day,
                DayKey {
                    tek,
                    rpi_key,
                    aem_key,
                },
            );
        }
        &self.keys[&day]
    }

    /// The key of the UTC day containing `at`, created if the day has none yet.
    pub fn tek(&mut self, at: u64) -> Tek {
        self.day_key(unix_day(at)).tek
    }

    /// RPI and AEM this phone broadcasts at unix second `at` (AEM metadata: version byte 0x40,
    /// then the transmit power in dBm, then two reserved zero bytes).
    pub fn broadcast(&mut self, at: u64) -> (Rpi, Aem) {
        let metadata = Metadata([AEM_VERSION, self.tx_power_dbm as u8, 0, 0]);
        let key = self.day_key(unix_day(at));
        let rpi = key.rpi_key.rpi(IntervalNumber::containing(at));
        (rpi, key.aem_key.encrypt(&rpi, metadata))
    }

    /// Keys for an upload at `now`: every day of the last 14 (today included) that has a key,
    /// oldest first, each with `transmission_risk` (capped at 8, the highest level).
    ///
    /// Past days cover the whole day (144 intervals). Today's key covers the intervals from
    /// midnight through the current one, so the RPIs broadcast so far, the current one
    /// included, all match it; that is at least 1 interval.
    pub fn keys_for_upload(&self, now: u64, transmission_risk: u8) -> Vec<DiagnosisKey> {
        let today = unix_day(now);
        let risk =
            TransmissionRisk::new(i64::from(transmission_risk.min(TransmissionRisk::MAX))).ok();
        let oldest = today.saturating_sub(RETENTION_DAYS as u32 - 1);
        self.keys
            .range(oldest..=today)
            .map(|(&day, key)| {
                let rolling_start = IntervalNumber::new(day.saturating_mul(INTERVALS_PER_DAY));
                let period = if day == today {
                    let elapsed = IntervalNumber::containing(now).get() - rolling_start.get();
                    RollingPeriod::new(elapsed + 1).unwrap_or(RollingPeriod::FULL_DAY)
                } else {
                    RollingPeriod::FULL_DAY
                };
                let mut diagnosis_key = DiagnosisKey::new(key.tek, rolling_start, period);
                diagnosis_key.transmission_risk = risk;
                diagnosis_key
            })
            .collect()
    }

    /// Forgets keys older than 14 days (today and the 13 days before it stay).
    pub fn prune(&mut self, now: u64) {
        let oldest = unix_day(now).saturating_sub(RETENTION_DAYS as u32 - 1);
        self.keys.retain(|&day, _| day >= oldest);
    }

    /// Unix days that have a key, oldest first.
    pub fn days(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }
}

impl std::fmt::Debug for KeySchedule {
    /// Never prints keys or the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchedule")
            .field("days", &self.keys.keys().collect::<Vec<_>>())
            .field("tx_power_dbm", &self.tx_power_dbm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z.
    const T0: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    #[test]
    fn rpis_derived_from_uploaded_keys_equal_the_broadcasts() {
        let mut phone = KeySchedule::from_seed([7; 32]);
        let mut broadcasts = Vec::new();
        for at in (T0 - 2 * DAY..T0 + 1200).step_by(3 * 3600 + 17) {
            broadcasts.push((at, phone.broadcast(at)));
        }
        broadcasts.push((T0 + 1200, phone.broadcast(T0 + 1200)));
        let keys = phone.keys_for_upload(T0 + 1200, 3);
        assert_eq!(keys.len(), 3, "three days have keys");
        let today = keys.last().expect("today's key");
        assert_eq!(today.rolling_start.get(), (T0 / DAY * 144) as u32);
        // 08:20 is interval 50 of the day: 51 intervals including the current one.
        assert_eq!(today.rolling_period.get(), 51);
        assert!(keys[..2].iter().all(|k| k.rolling_period.get() == 144));
        assert!(
            keys.iter()
                .all(|k| k.transmission_risk.map(TransmissionRisk::get) == Some(3))
        );
        for (at, (rpi, aem)) in broadcasts {
            let interval = IntervalNumber::containing(at);
            let key = keys
                .iter()
                .find(|k| k.rolling_start <= interval && interval < k.rolling_end())
                .expect("a key covers every broadcast");
            assert_eq!(key.tek.rpi_key().rpi(interval), rpi, "at {at}");
            let metadata = key.tek.aem_key().decrypt(&rpi, aem);
            assert_eq!(metadata.0, [0x40, DEFAULT_TX_POWER_DBM as u8, 0, 0]);
        }
    }

    #[test]
    fn seeded_schedules_agree_and_differ_by_seed() {
        let mut a = KeySchedule::from_seed([1; 32]);
        let mut b = KeySchedule::from_seed([1; 32]);
        let mut c = KeySchedule::from_seed([2; 32]);
        // Different order of first use, same keys.
        let later = a.tek(T0 + DAY);
        assert_eq!(a.tek(T0), b.tek(T0));
        assert_eq!(b.tek(T0 + DAY), later);
        assert_ne!(c.tek(T0), a.tek(T0));
        assert_ne!(a.tek(T0), later);
        let mut random = KeySchedule::random();
        assert_ne!(random.tek(T0), KeySchedule::random().tek(T0));
    }

    #[test]
    fn keys_are_kept_fourteen_days() {
        let mut phone = KeySchedule::from_seed([9; 32]);
        for day in 0..20 {
            phone.broadcast(T0 + day * DAY);
        }
        let now = T0 + 19 * DAY;
        let first_day = unix_day(T0);
        // Uploads only offer the last 14 days even before pruning.
        let offered: Vec<u32> = phone
            .keys_for_upload(now, 0)
            .iter()
            .map(|k| k.rolling_start.get() / 144)
            .collect();
        assert_eq!(
            offered,
            (first_day + 6..=first_day + 19).collect::<Vec<_>>()
        );
        assert_eq!(phone.days().count(), 20);
        phone.prune(now);
        assert_eq!(
            phone.days().collect::<Vec<_>>(),
            (first_day + 6..=first_day + 19).collect::<Vec<_>>()
        );
        // A pruned day's key is gone for good: a new one would be drawn.
        let seeded_again = KeySchedule::from_seed([9; 32]).tek(T0 + 19 * DAY);
        assert_eq!(phone.tek(now), seeded_again);
    }

    #[test]
    fn today_right_after_midnight_has_one_interval_and_risk_is_capped() {
        let midnight = T0 / DAY * DAY;
        let mut phone = KeySchedule::from_seed([3; 32]);
        phone.broadcast(midnight);
        let keys = phone.keys_for_upload(midnight, 200);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].rolling_period.get(), 1);
        assert_eq!(
            keys[0].transmission_risk.map(TransmissionRisk::get),
            Some(8)
        );
        let late = phone.keys_for_upload(midnight + DAY - 1, 1);
        assert_eq!(late[0].rolling_period.get(), 144);
    }
}
