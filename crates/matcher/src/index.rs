//! The uploaded tuples in memory, for matching: one hash-table lookup per polled tuple.
//!
//! An uploaded tuple (own y, peer x) is found by a poll tuple (own x, peer y): both phones
//! logged the same encounter. Entries are keyed by a 64-bit SipHash of (own, peer) under a
//! key drawn at start, so the table holds 16 bytes per tuple instead of 36; two different
//! encounters share a key with probability about n / 2^64 per lookup (n = tuples held).
//! Each entry keeps the latest day it was seen on. Nothing about a poll is kept.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use confidant_core::confidential::ContactTuple;
use rand_core::{OsRng, RngCore};
use siphasher::sip::SipHasher13;

/// The keys are already uniform 64-bit hashes: the table need not hash them again.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

pub struct TupleIndex {
    hasher: SipHasher13,
    days: HashMap<u64, u32, BuildHasherDefault<Identity>>,
}

impl Default for TupleIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl TupleIndex {
    pub fn new() -> Self {
        Self {
            hasher: SipHasher13::new_with_keys(OsRng.next_u64(), OsRng.next_u64()),
            days: HashMap::default(),
        }
    }

    fn fingerprint(&self, key: &[u8; 32]) -> u64 {
        let mut hasher = self.hasher;
        hasher.write(key);
        hasher.finish()
    }

    /// Adds a positive user's uploaded tuples.
    pub fn add(&mut self, tuples: &[ContactTuple]) {
        self.days.reserve(tuples.len());
        for tuple in tuples {
            let day = self.days.entry(self.fingerprint(&tuple.key())).or_insert(0);
            *day = (*day).max(tuple.day);
        }
    }

    /// The latest day on which any of `polled` (a phone's own log) mirrors an upload.
    pub fn exposure(&self, polled: &[ContactTuple]) -> Option<u32> {
        polled
            .iter()
            .filter_map(|t| self.days.get(&self.fingerprint(&t.mirror_key())))
            .max()
            .copied()
    }

    /// Forgets every entry last seen before `first_day`.
    pub fn expire(&mut self, first_day: u32) {
        self.days.retain(|_, day| *day >= first_day);
    }

    pub fn len(&self) -> usize {
        self.days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.days.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confidant_core::encounter::DurationBucket;

    fn tuple(own: u8, peer: u8, day: u32) -> ContactTuple {
        ContactTuple {
            own: [own; 16],
            peer: [peer; 16],
            day,
            duration: DurationBucket::Min5To10,
        }
    }

    #[test]
    fn a_poll_finds_the_mirror_of_an_upload_and_nothing_else() {
        let mut index = TupleIndex::new();
        index.add(&[tuple(1, 2, 100), tuple(1, 3, 101), tuple(1, 2, 102)]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.exposure(&[tuple(2, 1, 100)]), Some(102));
        assert_eq!(
            index.exposure(&[tuple(3, 1, 101), tuple(9, 9, 1)]),
            Some(101)
        );
        // The uploader's own view, a stranger, and the wrong direction do not match.
        assert_eq!(index.exposure(&[tuple(1, 2, 100)]), None);
        assert_eq!(index.exposure(&[tuple(4, 1, 100)]), None);
        index.expire(102);
        assert_eq!(index.exposure(&[tuple(3, 1, 101)]), None);
        assert_eq!(index.exposure(&[tuple(2, 1, 100)]), Some(102));
    }
}
