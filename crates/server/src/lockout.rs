//! Brute-force protection for code redemption, per client address (COVID Shield's rule):
//! 8 consecutive wrong codes ban the address for an hour after the last failure; a success
//! resets the count; counters older than an hour are forgotten. Addresses are kept only as
//! keyed hashes, in memory.
//!
//! A try is reserved before the code is checked ([`Lockout::begin`]) and counts against the
//! limit while it is in flight, so a burst of concurrent guesses cannot slip past the ban.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use confidant_core::Digest;

pub const MAX_FAILURES: u32 = 8;
pub const BAN_SECONDS: u64 = 3600;

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: u64,
    /// Tries reserved and not yet decided.
    in_flight: u32,
}

pub struct Lockout {
    entries: Mutex<Entries>,
}

struct Entries {
    by_address: HashMap<Digest, Entry>,
    last_purge: u64,
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
}

impl Lockout {
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(Entries {
                by_address: HashMap::new(),
                last_purge: 0,
            }),
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
            },
            _ => Standing {
                tries_remaining: MAX_FAILURES,
                banned_for: 0,
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
    /// its remaining tries are all in flight.
    pub fn begin(self: &Arc<Self>, address: Digest, now: u64) -> Result<Attempt, Standing> {
        let mut entries = self.entries.lock().expect("lockout lock");
        entries.purge(now);
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
        Ok(Attempt {
            lockout: Arc::clone(self),
            address,
            decided: false,
        })
    }

    fn finish(&self, address: &Digest, now: u64, outcome: Option<bool>) -> Standing {
        let mut entries = self.entries.lock().expect("lockout lock");
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
        let lockout = Arc::new(Lockout::new());
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
                banned_for: BAN_SECONDS
            }
        );
        assert!(lockout.begin(who, 200 + 3599).is_err());
        assert_eq!(lockout.standing(&who, 200 + 3599).banned_for, 1);
        assert_eq!(
            lockout.standing(&who, 200 + 3600),
            Standing {
                tries_remaining: 8,
                banned_for: 0
            }
        );
        lockout.begin(who, 5000).expect("new hour").fail(5000);
        lockout.begin(who, 5001).expect("allowed").succeed(5001);
        assert_eq!(lockout.standing(&who, 5001).tries_remaining, 8);
    }

    #[test]
    fn concurrent_tries_count_while_in_flight_and_are_released() {
        let lockout = Arc::new(Lockout::new());
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
    fn counters_are_forgotten_after_an_hour() {
        let lockout = Arc::new(Lockout::new());
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
