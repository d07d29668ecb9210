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
    entries: Mutex<HashMap<Digest, Entry>>,
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
            entries: Mutex::new(HashMap::new()),
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
        let entries = self.entries.lock().expect("lockout lock");
        Self::standing_of(entries.get(address), now)
    }

    /// Records a wrong code and returns the new standing.
    pub fn fail(&self, address: Digest, now: u64) -> Standing {
        let mut entries = self.entries.lock().expect("lockout lock");
        if entries.len() > 100_000 {
            entries.retain(|_, e| now < e.last_failure + BAN_SECONDS);
        }
        let entry = entries.entry(address).or_insert(Entry {
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
        self.entries.lock().expect("lockout lock").remove(address);
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
}
