//! Brute-force protection for code redemption, per client address (COVID Shield's rule):
//! 8 consecutive wrong codes ban the address for an hour after the last failure; a success
//! resets the count; counters older than an hour are forgotten. Addresses are kept only as
//! keyed hashes, in memory.
//!
//! Many addresses (a botnet) could still guess 7 codes an hour each, so there is a global
//! ceiling too: once that many wrong codes were tried in the last hour, across all
//! addresses, redemption pauses for everyone until the oldest of them is an hour old. It
//! fails closed: an attacker can delay redemptions, not guess codes.
//!
//! A try is reserved before the code is checked ([`Lockout::begin`]) and counts against the
//! limit while it is in flight, so a burst of concurrent guesses cannot slip past the ban.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use confidant_core::Digest;

pub const MAX_FAILURES: u32 = 8;
pub const BAN_SECONDS: u64 = 3600;
/// Default global ceiling of wrong codes per hour, across all addresses.
pub const DEFAULT_MAX_WRONG_CODES_PER_HOUR: u32 = 300;

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: u64,
    /// Tries reserved and not yet decided.
    in_flight: u32,
}

pub struct Lockout {
    entries: Mutex<Entries>,
    max_wrong_codes_per_hour: u32,
}

struct Entries {
    by_address: HashMap<Digest, Entry>,
    last_purge: u64,
    recent: RecentFailures,
    /// Tries reserved and not yet decided, over all addresses.
    in_flight: u32,
}

/// Wrong codes of the last hour, over all addresses, in one-minute buckets.
struct RecentFailures {
    /// (minute, failures in it), at index minute % 60.
    buckets: [(u64, u32); 60],
}

impl Default for RecentFailures {
    fn default() -> Self {
        Self {
            buckets: [(0, 0); 60],
        }
    }
}

impl RecentFailures {
    fn live(&self, now: u64) -> impl Iterator<Item = &(u64, u32)> {
        let minute = now / 60;
        self.buckets
            .iter()
            .filter(move |(m, count)| *count > 0 && m + 60 > minute)
    }

    fn count(&self, now: u64) -> u32 {
        self.live(now).map(|(_, count)| count).sum()
    }

    fn add(&mut self, now: u64) {
        let minute = now / 60;
        let bucket = &mut self.buckets[(minute % 60) as usize];
        if bucket.0 != minute {
            *bucket = (minute, 0);
        }
        bucket.1 += 1;
    }

    /// Seconds until the oldest counted failure leaves the hour.
    fn frees_in(&self, now: u64) -> u64 {
        self.live(now)
            .map(|(m, _)| (m + 60) * 60)
            .min()
            .map_or(0, |at| at.saturating_sub(now))
    }
}

impl Entries {
    /// Forgets counters whose last failure is an hour old, at most once a minute.
    fn purge(&mut self, now: u64) {
        if now >= self.last_purge + 60 {
            self.by_address
                .retain(|_, e| e.in_flight > 0 || now < e.last_failure + BAN_SECONDS);
            self.last_purge = now;
        }
    }
}

/// Where an address stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub tries_remaining: u32,
    /// Seconds until the ban lifts; 0 when not banned.
    pub banned_for: u64,
    /// The ban is the global ceiling's, not this address's.
    pub paused_globally: bool,
}

impl Lockout {
    pub fn new(max_wrong_codes_per_hour: u32) -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_address: HashMap::new(),
                last_purge: 0,
                recent: RecentFailures::default(),
                in_flight: 0,
            }),
            max_wrong_codes_per_hour: max_wrong_codes_per_hour.max(1),
        }
    }

    fn standing_of(entry: Option<&Entry>, now: u64) -> Standing {
        match entry {
            Some(e) if now < e.last_failure + BAN_SECONDS => Standing {
                tries_remaining: MAX_FAILURES.saturating_sub(e.failures),
                banned_for: if e.failures >= MAX_FAILURES {
                    e.last_failure + BAN_SECONDS - now
                } else {
                    0
                },
                paused_globally: false,
            },
            _ => Standing {
                tries_remaining: MAX_FAILURES,
                banned_for: 0,
                paused_globally: false,
            },
        }
    }

    pub fn standing(&self, address: &Digest, now: u64) -> Standing {
        let mut entries = self.entries.lock().expect("lockout lock");
        entries.purge(now);
        Self::standing_of(entries.by_address.get(address), now)
    }

    /// Addresses with a live counter.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.entries.lock().expect("lockout lock").by_address.len()
    }

    /// Reserves a try for `address`; `Err` with the standing when the address is banned or
    /// its remaining tries are all in flight, or when the global ceiling is reached.
    pub fn begin(self: &Arc<Self>, address: Digest, now: u64) -> Result<Attempt, Standing> {
        let mut entries = self.entries.lock().expect("lockout lock");
        entries.purge(now);
        if entries.recent.count(now) + entries.in_flight >= self.max_wrong_codes_per_hour {
            let own = Self::standing_of(entries.by_address.get(&address), now);
            return Err(Standing {
                banned_for: entries.recent.frees_in(now).max(own.banned_for).max(1),
                paused_globally: true,
                ..own
            });
        }
        let entry = entries.by_address.entry(address).or_insert(Entry {
            failures: 0,
            last_failure: now,
            in_flight: 0,
        });
        if now >= entry.last_failure + BAN_SECONDS {
            entry.failures = 0;
        }
        if entry.failures + entry.in_flight >= MAX_FAILURES {
            return Err(Self::standing_of(Some(entry), now));
        }
        entry.in_flight += 1;
        entries.in_flight += 1;
        Ok(Attempt {
            lockout: Arc::clone(self),
            address,
            decided: false,
        })
    }

    fn finish(&self, address: &Digest, now: u64, outcome: Option<bool>) -> Standing {
        let mut entries = self.entries.lock().expect("lockout lock");
        entries.in_flight = entries.in_flight.saturating_sub(1);
        if outcome == Some(false) {
            entries.recent.add(now);
        }
        let Some(entry) = entries.by_address.get_mut(address) else {
            return Self::standing_of(None, now);
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match outcome {
            Some(true) => entry.failures = 0,
            Some(false) => {
                entry.failures += 1;
                entry.last_failure = now;
            }
            None => {}
        }
        let standing = Self::standing_of(Some(entry), now);
        if entry.failures == 0 && entry.in_flight == 0 {
            entries.by_address.remove(address);
        }
        standing
    }
}

/// A reserved try; dropping it undecided (an error, a cancelled request) just releases it.
pub struct Attempt {
    lockout: Arc<Lockout>,
    address: Digest,
    decided: bool,
}

impl Attempt {
    /// A wrong code: returns the new standing.
    pub fn fail(mut self, now: u64) -> Standing {
        self.decided = true;
        self.lockout.finish(&self.address, now, Some(false))
    }

    /// A right code: the count starts over.
    pub fn succeed(mut self, now: u64) -> Standing {
        self.decided = true;
        self.lockout.finish(&self.address, now, Some(true))
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.decided {
            self.lockout.finish(&self.address, 0, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_failures_ban_for_an_hour_after_the_last() {
        let lockout = Arc::new(Lockout::new(DEFAULT_MAX_WRONG_CODES_PER_HOUR));
        let who = Digest([1; 32]);
        for i in 1..MAX_FAILURES {
            let attempt = lockout.begin(who, 100 + u64::from(i)).expect("allowed");
            assert_eq!(
                attempt.fail(100 + u64::from(i)).tries_remaining,
                MAX_FAILURES - i
            );
        }
        let banned = lockout.begin(who, 200).expect("eighth try").fail(200);
        assert_eq!(
            banned,
            Standing {
                tries_remaining: 0,
                banned_for: BAN_SECONDS,
                paused_globally: false,
            }
        );
        assert!(lockout.begin(who, 200 + 3599).is_err());
        assert_eq!(lockout.standing(&who, 200 + 3599).banned_for, 1);
        assert_eq!(
            lockout.standing(&who, 200 + 3600),
            Standing {
                tries_remaining: 8,
                banned_for: 0,
                paused_globally: false,
            }
        );
        lockout.begin(who, 5000).expect("new hour").fail(5000);
        lockout.begin(who, 5001).expect("allowed").succeed(5001);
        assert_eq!(lockout.standing(&who, 5001).tries_remaining, 8);
    }

    #[test]
    fn concurrent_tries_count_while_in_flight_and_are_released() {
        let lockout = Arc::new(Lockout::new(DEFAULT_MAX_WRONG_CODES_PER_HOUR));
        let who = Digest([2; 32]);
        let held: Vec<Attempt> = (0..MAX_FAILURES)
            .map(|_| lockout.begin(who, 10).expect("reserved"))
            .collect();
        assert!(
            lockout.begin(who, 10).is_err(),
            "a ninth concurrent guess must wait"
        );
        drop(held);
        assert!(
            lockout.begin(who, 10).is_ok(),
            "undecided tries are released"
        );
    }

    #[test]
    fn the_global_ceiling_pauses_everyone_until_its_hour_passes() {
        let lockout = Arc::new(Lockout::new(20));
        // Twenty addresses, one wrong code each, a minute apart from 10:00 on.
        let start = 36_000;
        for n in 0..20u8 {
            let at = start + 60 * u64::from(n);
            lockout
                .begin(Digest([n; 32]), at)
                .expect("allowed")
                .fail(at);
        }
        let last = start + 60 * 19;
        let Err(refused) = lockout.begin(Digest([99; 32]), last + 1) else {
            panic!("the ceiling is reached");
        };
        assert!(refused.paused_globally);
        assert_eq!(
            refused.tries_remaining, MAX_FAILURES,
            "not this address's doing"
        );
        assert_eq!(refused.banned_for, start + 3600 - (last + 1));
        // The first failure leaves the hour: one try is free again.
        let later = start + 3600;
        lockout
            .begin(Digest([99; 32]), later)
            .expect("one failure has aged out")
            .succeed(later);
        lockout
            .begin(Digest([98; 32]), later)
            .expect("successes leave room")
            .succeed(later);
        // Successes never count.
        let calm = Arc::new(Lockout::new(2));
        for n in 0..10u8 {
            calm.begin(Digest([n; 32]), 5).expect("allowed").succeed(5);
        }
        assert!(calm.begin(Digest([42; 32]), 5).is_ok());
    }

    #[test]
    fn counters_are_forgotten_after_an_hour() {
        let lockout = Arc::new(Lockout::new(DEFAULT_MAX_WRONG_CODES_PER_HOUR));
        lockout
            .begin(Digest([1; 32]), 1000)
            .expect("try")
            .fail(1000);
        lockout
            .begin(Digest([2; 32]), 2000)
            .expect("try")
            .fail(2000);
        assert_eq!(lockout.tracked(), 2);
        lockout.standing(&Digest([3; 32]), 1000 + BAN_SECONDS);
        assert_eq!(
            lockout.tracked(),
            1,
            "the first address's counter is an hour old"
        );
        lockout.standing(&Digest([3; 32]), 2000 + BAN_SECONDS);
        assert_eq!(lockout.tracked(), 0);
    }
}
