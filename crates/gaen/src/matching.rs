//! The matching engine: which heard RPIs belong to published diagnosis keys.
//!
//! Observations are indexed once: a bitmap filter of 16 bits per distinct RPI (128 KiB for
//! 50,000, so it stays in L2 cache) and an open-addressing table of 32-bit tags behind it. Each
//! key then costs one HKDF, one batch of AES blocks and one branch-free filter pass over its
//! RPIs, whose loads the CPU overlaps; only the ~5% that pass the filter probe the table. Only
//! intervals that some observation could match (its time ± the tolerance) are derived at all.
//! The AEM key is derived only on a hit.

use std::num::NonZeroUsize;

use crate::crypto::{Aem, AemKey, Metadata, Rpi, RpiBatch};
use crate::key::DiagnosisKey;
use crate::time::{INTERVAL_SECONDS, INTERVALS_PER_DAY, IntervalNumber};

/// Phones scan with clock skew: accept an RPI this long before or after its interval.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 2 * 60 * 60;
/// Below this many keys per thread, spawning costs more than it saves.
const MIN_KEYS_PER_THREAD: usize = 2048;

/// An RPI a phone heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Unix seconds.
    pub observed_at: u64,
    pub rpi: Rpi,
    pub aem: Option<Aem>,
    /// Received signal strength, dBm.
    pub rssi: Option<i8>,
}

/// An observation explained by a diagnosis key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub key: DiagnosisKey,
    pub interval: IntervalNumber,
    pub rpi: Rpi,
    /// Index into [`Matcher::observations`].
    pub observation: usize,
    /// The decrypted AEM, when the observation carried one.
    pub metadata: Option<Metadata>,
}

/// Observations indexed for matching many keys.
pub struct Matcher {
    /// Sorted by (RPI, time), so equal RPIs are adjacent.
    observations: Vec<Observation>,
    /// Bitmap with the `filter_bit` of every observed RPI set.
    filter: Vec<u64>,
    filter_mask: usize,
    /// Slot tags: bits 32..64 of the RPI's first eight bytes, `| 1` so 0 means empty.
    tags: Vec<u32>,
    /// For each occupied slot, the first observation with that RPI.
    firsts: Vec<u32>,
    mask: usize,
    /// Inclusive range of intervals any observation can match; `None` without observations.
    window: Option<(IntervalNumber, IntervalNumber)>,
    tolerance_seconds: u64,
}

fn rpi_head(rpi: &Rpi) -> u64 {
    u64::from_le_bytes(rpi.0[..8].try_into().expect("8 bytes"))
}

/// Filter bit of an RPI, from bits 40..64 of its head (the table slot uses the low bits).
fn filter_bit(head: u64, mask: usize) -> usize {
    (head >> 40) as usize & mask
}

impl Matcher {
    pub fn new(mut observations: Vec<Observation>, tolerance_seconds: u64) -> Self {
        observations.sort_unstable_by_key(|o| (o.rpi, o.observed_at));
        let distinct = observations
            .windows(2)
            .filter(|w| w[0].rpi != w[1].rpi)
            .count()
            + 1;
        let slots = (distinct * 2).next_power_of_two().max(1024);
        let mask = slots - 1;
        let mut tags = vec![0u32; slots];
        let mut firsts = vec![0u32; slots];
        let filter_bits = (distinct * 16).next_power_of_two().max(1 << 16);
        let filter_mask = filter_bits - 1;
        let mut filter = vec![0u64; filter_bits / 64];
        for (index, observation) in observations.iter().enumerate() {
            if index > 0 && observations[index - 1].rpi == observation.rpi {
                continue;
            }
            let head = rpi_head(&observation.rpi);
            let bit = filter_bit(head, filter_mask);
            filter[bit / 64] |= 1 << (bit % 64);
            let mut slot = head as usize & mask;
            while tags[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            tags[slot] = (head >> 32) as u32 | 1;
            firsts[slot] = u32::try_from(index).expect("fewer than 2^32 observations");
        }
        let window = observations
            .iter()
            .map(|o| o.observed_at)
            .min()
            .zip(observations.iter().map(|o| o.observed_at).max())
            .map(|(first, last)| {
                (
                    IntervalNumber::containing(first.saturating_sub(tolerance_seconds)),
                    IntervalNumber::containing(last.saturating_add(tolerance_seconds)),
                )
            });
        Self {
            observations,
            filter,
            filter_mask,
            tags,
            firsts,
            mask,
            window,
            tolerance_seconds,
        }
    }

    /// The observations in the order [`Match::observation`] indexes them.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    #[inline]
    fn find(&self, rpi: &Rpi) -> Option<usize> {
        let head = rpi_head(rpi);
        let tag = (head >> 32) as u32 | 1;
        let mut slot = head as usize & self.mask;
        loop {
            match self.tags[slot] {
                0 => return None,
                t if t == tag => {
                    let first = self.firsts[slot] as usize;
                    if self.observations[first].rpi == *rpi {
                        return Some(first);
                    }
                }
                _ => {}
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn within_tolerance(&self, observed_at: u64, interval: IntervalNumber) -> bool {
        let start = interval.start_unix_seconds();
        observed_at.saturating_add(self.tolerance_seconds) >= start
            && observed_at < start + INTERVAL_SECONDS + self.tolerance_seconds
    }

    fn match_key(&self, key: &DiagnosisKey, rpis: &mut RpiBatch, out: &mut Vec<Match>) {
        let Some((low, high)) = self.window else {
            return;
        };
        let first = key.rolling_start.max(low);
        let end = key
            .rolling_end()
            .min(IntervalNumber::new(high.get().saturating_add(1)));
        if first >= end {
            return;
        }
        key.tek
            .rpi_key()
            .rpis_into(first, end.get() - first.get(), rpis);
        // Branch-free pass: collect the offsets whose filter bit is set.
        let mut candidates = [0u8; INTERVALS_PER_DAY as usize];
        let mut candidate_count = 0;
        for (offset, (_, rpi)) in rpis.iter().enumerate() {
            let bit = filter_bit(rpi_head(&rpi), self.filter_mask);
            candidates[candidate_count] = offset as u8;
            candidate_count += (self.filter[bit / 64] >> (bit % 64)) as usize & 1;
        }
        let mut aem_key: Option<AemKey> = None;
        for &offset in &candidates[..candidate_count] {
            let (interval, rpi) = rpis.get(offset as usize);
            let Some(group) = self.find(&rpi) else {
                continue;
            };
            for (offset, observation) in self.observations[group..]
                .iter()
                .take_while(|o| o.rpi == rpi)
                .enumerate()
            {
                if !self.within_tolerance(observation.observed_at, interval) {
                    continue;
                }
                let metadata = observation.aem.map(|aem| {
                    aem_key
                        .get_or_insert_with(|| key.tek.aem_key())
                        .decrypt(&rpi, aem)
                });
                out.push(Match {
                    key: *key,
                    interval,
                    rpi,
                    observation: group + offset,
                    metadata,
                });
            }
        }
    }

    /// Matches in key order, then interval order, then observation time.
    pub fn match_keys(&self, keys: &[DiagnosisKey]) -> Vec<Match> {
        let mut matches = Vec::new();
        let mut rpis = RpiBatch::new();
        for key in keys {
            self.match_key(key, &mut rpis, &mut matches);
        }
        matches
    }

    /// Same result as [`Matcher::match_keys`], spread over up to `threads` threads.
    pub fn match_keys_parallel(&self, keys: &[DiagnosisKey], threads: NonZeroUsize) -> Vec<Match> {
        let threads = threads.get().min(keys.len() / MIN_KEYS_PER_THREAD).max(1);
        if threads == 1 {
            return self.match_keys(keys);
        }
        let chunk = keys.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = keys
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.match_keys(part)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("matching never panics"))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Tek;
    use crate::time::RollingPeriod;

    fn heard(key: &DiagnosisKey, interval: u32, at_offset: i64) -> Observation {
        let interval = IntervalNumber::new(key.rolling_start.get() + interval);
        Observation {
            observed_at: (interval.start_unix_seconds() as i64 + at_offset) as u64,
            rpi: key.tek.rpi_key().rpi(interval),
            aem: None,
            rssi: None,
        }
    }

    #[test]
    fn tolerance_edges() {
        let key = DiagnosisKey::new(
            Tek([3; 16]),
            IntervalNumber::new(2_650_000),
            RollingPeriod::FULL_DAY,
        );
        let tolerance = DEFAULT_TOLERANCE_SECONDS as i64;
        let observations = vec![
            heard(&key, 10, -tolerance),      // earliest accepted
            heard(&key, 20, -tolerance - 1),  // one second too early
            heard(&key, 30, 599 + tolerance), // latest accepted
            heard(&key, 40, 600 + tolerance), // one second too late
        ];
        let matcher = Matcher::new(observations, DEFAULT_TOLERANCE_SECONDS);
        let intervals: Vec<u32> = matcher
            .match_keys(&[key])
            .iter()
            .map(|m| m.interval.get() - key.rolling_start.get())
            .collect();
        assert_eq!(intervals, [10, 30]);
    }

    #[test]
    fn parallel_equals_sequential() {
        let keys: Vec<DiagnosisKey> = (0..5000u32)
            .map(|i| {
                let mut tek = [0u8; 16];
                tek[..4].copy_from_slice(&i.to_le_bytes());
                DiagnosisKey::new(
                    Tek(tek),
                    IntervalNumber::new(2_650_032),
                    RollingPeriod::FULL_DAY,
                )
            })
            .collect();
        let observations = keys.iter().step_by(97).map(|k| heard(k, 7, 30)).collect();
        let matcher = Matcher::new(observations, DEFAULT_TOLERANCE_SECONDS);
        let sequential = matcher.match_keys(&keys);
        assert_eq!(sequential.len(), 5000usize.div_ceil(97));
        let parallel = matcher.match_keys_parallel(&keys, NonZeroUsize::new(2).expect("2"));
        assert_eq!(parallel, sequential);
    }

    #[test]
    fn no_observations_no_matches() {
        let key = DiagnosisKey::new(
            Tek([3; 16]),
            IntervalNumber::new(144),
            RollingPeriod::FULL_DAY,
        );
        assert!(Matcher::new(Vec::new(), 0).match_keys(&[key]).is_empty());
    }
}
