//! GAEN time: 10-minute interval numbers (ENIN) and rolling periods.

use std::fmt;

/// Seconds in one ENIntervalNumber.
pub const INTERVAL_SECONDS: u64 = 600;
/// Intervals in one day, the longest rolling period.
pub const INTERVALS_PER_DAY: u32 = 144;

/// ENIntervalNumber: unix seconds / 600. `u32` is enough until the year 83,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntervalNumber(u32);

impl IntervalNumber {
    pub const fn new(value: u32) -> Self {
        Self(value)
    }

    /// The interval containing `unix_seconds`; saturates at `u32::MAX` far in the future.
    pub fn containing(unix_seconds: u64) -> Self {
        Self(u32::try_from(unix_seconds / INTERVAL_SECONDS).unwrap_or(u32::MAX))
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    pub const fn start_unix_seconds(self) -> u64 {
        self.0 as u64 * INTERVAL_SECONDS
    }

    /// Start of the UTC day this interval lies in (a multiple of 144).
    pub const fn day_start(self) -> Self {
        Self(self.0 - self.0 % INTERVALS_PER_DAY)
    }

    pub fn checked_add(self, intervals: u32) -> Option<Self> {
        self.0.checked_add(intervals).map(Self)
    }
}

impl fmt::Display for IntervalNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many intervals a key is valid for: 1..=144.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollingPeriod(u8);

impl RollingPeriod {
    pub const FULL_DAY: Self = Self(INTERVALS_PER_DAY as u8);

    /// `None` unless `1 <= intervals <= 144`.
    pub fn new(intervals: u32) -> Option<Self> {
        (1..=INTERVALS_PER_DAY)
            .contains(&intervals)
            .then_some(Self(intervals as u8))
    }

    pub const fn get(self) -> u32 {
        self.0 as u32
    }
}

impl Default for RollingPeriod {
    fn default() -> Self {
        Self::FULL_DAY
    }
}

impl fmt::Display for RollingPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_of_known_instant() {
        // The spec's test vector: key generated at 1585785600 has RSIN 2642976.
        let enin = IntervalNumber::containing(1_585_785_600);
        assert_eq!(enin.get(), 2_642_976);
        assert_eq!(enin.day_start(), enin);
        assert_eq!(IntervalNumber::containing(1_585_785_600 + 599), enin);
        assert_eq!(
            IntervalNumber::containing(1_585_785_600 + 600).get(),
            2_642_977
        );
    }

    #[test]
    fn rolling_period_bounds() {
        assert!(RollingPeriod::new(0).is_none());
        assert!(RollingPeriod::new(145).is_none());
        assert_eq!(RollingPeriod::new(1).map(RollingPeriod::get), Some(1));
        assert_eq!(RollingPeriod::new(144), Some(RollingPeriod::FULL_DAY));
    }
}
