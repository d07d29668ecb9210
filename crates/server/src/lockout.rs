//! Brute-force protection for code redemption, per client address (COVID Shield's rule):
//! 8 consecutive wrong codes ban the address for an hour after the last failure; a success
//! resets the count; counters older than an hour are forgotten. Addresses are kept only as
//! keyed hashes, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use confidant_core::Digest;

pub const MAX_FAILURES: u32 = 8;
pub const BAN_SECONDS: u64 = 3600;

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: u64,
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
                .retain(|_, e| now < e.last_failure + BAN_SECONDS);
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

    /// Records a wrong code and returns the new standing.
    pub fn fail(&self, address: Digest, now: u64) -> Standing {
        let mut entries = self.entries.lock().expect("lockout lock");
        entries.purge(now);
        let entry = entries.by_address.entry(address).or_insert(Entry {
            failures: 0,
            last_failure: now,
        });
        if now >= entry.last_failure + BAN_SECONDS {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
        Self::standing_of(Some(entry), now)
    }

    pub fn succeed(&self, address: &Digest) {
        self.entries
            .lock()
            .expect("lockout lock")
            .by_address
            .remove(address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_failures_ban_for_an_hour_after_the_last() {
        let lockout = Lockout::new();
        let who = Digest([1; 32]);
        for i in 1..MAX_FAILURES {
            assert_eq!(
                lockout.fail(who, 100 + u64::from(i)).tries_remaining,
                MAX_FAILURES - i
            );
        }
        let banned = lockout.fail(who, 200);
        assert_eq!(
            banned,
            Standing {
                tries_remaining: 0,
                banned_for: BAN_SECONDS
            }
        );
        assert_eq!(lockout.standing(&who, 200 + 3599).banned_for, 1);
        assert_eq!(
            lockout.standing(&who, 200 + 3600),
            Standing {
                tries_remaining: 8,
                banned_for: 0
            }
        );
        lockout.fail(who, 5000);
        lockout.succeed(&who);
        assert_eq!(lockout.standing(&who, 5001).tries_remaining, 8);
    }

    #[test]
    fn counters_are_forgotten_after_an_hour() {
        let lockout = Lockout::new();
        lockout.fail(Digest([1; 32]), 1000);
        lockout.fail(Digest([2; 32]), 2000);
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
