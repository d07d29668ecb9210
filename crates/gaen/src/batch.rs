//! Ordering and splitting keys into export files, as the big deployments do.
//!
//! Keys are sorted by key data so that file order reveals nothing about upload order. A batch
//! over the per-file maximum is split; each part gets its own end timestamp, because phones
//! de-duplicate files by their timestamps.

use crate::export::Export;
use crate::key::DiagnosisKey;

/// Keys per export file unless configured otherwise (Google's server uses 500,000 too).
pub const DEFAULT_MAX_KEYS_PER_FILE: usize = 500_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("the maximum number of keys per file must be at least 1")]
    ZeroMaximum,
    #[error(
        "{parts} files need {parts} distinct end timestamps, but the window {start}..{end} is only {} seconds long",
        end.saturating_sub(*start)
    )]
    WindowTooShort { parts: usize, start: u64, end: u64 },
}

/// Sorts by key data as unsigned bytes (then by the rest, for a total order).
pub fn sort_keys(keys: &mut [DiagnosisKey]) {
    keys.sort_unstable_by(|a, b| {
        (a.tek, a.rolling_start, a.rolling_period).cmp(&(b.tek, b.rolling_start, b.rolling_period))
    });
}

/// Sorts the keys and revised keys of `export` and cuts them into files of at most
/// `max_keys` entries each (keys first, then revised keys).
///
/// Part `i` of `n` ends at `end_timestamp - (n - 1 - i)`: the last part keeps the real end and
/// every part stays inside the window. A batch that fits stays one file.
pub fn split_export(mut export: Export, max_keys: usize) -> Result<Vec<Export>, SplitError> {
    if max_keys == 0 {
        return Err(SplitError::ZeroMaximum);
    }
    sort_keys(&mut export.keys);
    sort_keys(&mut export.revised_keys);
    let total = export.keys.len() + export.revised_keys.len();
    let parts = total.div_ceil(max_keys).max(1);
    if parts == 1 {
        return Ok(vec![export]);
    }
    let (start, end) = (export.start_timestamp, export.end_timestamp);
    if end.saturating_sub(start) < parts as u64 {
        return Err(SplitError::WindowTooShort { parts, start, end });
    }

    let mut keys = std::mem::take(&mut export.keys).into_iter();
    let mut revised = std::mem::take(&mut export.revised_keys).into_iter();
    Ok((0..parts)
        .map(|part| {
            let mut file = export.clone();
            file.end_timestamp = end - (parts - 1 - part) as u64;
            file.keys = keys.by_ref().take(max_keys).collect();
            file.revised_keys = revised.by_ref().take(max_keys - file.keys.len()).collect();
            file
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Tek;
    use crate::time::{IntervalNumber, RollingPeriod};

    fn key(byte: u8) -> DiagnosisKey {
        DiagnosisKey::new(
            Tek([byte; 16]),
            IntervalNumber::new(144),
            RollingPeriod::FULL_DAY,
        )
    }

    #[test]
    fn splits_with_distinct_end_timestamps_and_keeps_every_key() {
        let mut export = Export::new("DE", 1000, 4600);
        export.keys = (0..7).rev().map(key).collect();
        export.revised_keys = vec![key(200), key(100)];
        let parts = split_export(export, 4).expect("split");
        assert_eq!(parts.len(), 3);
        let ends: Vec<u64> = parts.iter().map(|p| p.end_timestamp).collect();
        assert_eq!(ends, [4598, 4599, 4600]);
        assert!(
            parts
                .iter()
                .all(|p| p.keys.len() + p.revised_keys.len() <= 4)
        );
        let keys: Vec<u8> = parts
            .iter()
            .flat_map(|p| &p.keys)
            .map(|k| k.tek.0[0])
            .collect();
        assert_eq!(keys, [0, 1, 2, 3, 4, 5, 6]);
        let revised: Vec<u8> = parts
            .iter()
            .flat_map(|p| &p.revised_keys)
            .map(|k| k.tek.0[0])
            .collect();
        assert_eq!(revised, [100, 200]);
    }

    #[test]
    fn small_batch_is_one_file_and_short_window_is_refused() {
        let mut export = Export::new("DE", 0, 2);
        export.keys = vec![key(1), key(0)];
        let parts = split_export(export.clone(), 10).expect("fits");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].keys, [key(0), key(1)]);
        export.keys = (0..5).map(key).collect();
        assert_eq!(
            split_export(export, 1),
            Err(SplitError::WindowTooShort {
                parts: 5,
                start: 0,
                end: 2
            })
        );
    }
}
