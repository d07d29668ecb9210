//! What a run found: ground truth against notifications, delays, bytes, load. Written as
//! JSON and as SVG charts, and summarised in a few lines for the terminal.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::model::{PersonId, Population, SimSettings};
use crate::svg::{Chart, Series};

/// Counters per day of the run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub infections: Vec<u64>,
    pub positives: Vec<u64>,
    pub uploads: Vec<u64>,
    pub notifications: Vec<u64>,
    pub keys_published: Vec<u64>,
    /// Bytes all phones downloaded following the native feed, and the hourly exports.
    pub feed_bytes: Vec<u64>,
    pub export_bytes: Vec<u64>,
    pub phone_syncs: Vec<u64>,
    /// Requests that reached the server each day: provider, app and admin API calls, and
    /// file requests the CDN passed on.
    pub api_requests_per_day: Vec<u64>,
    pub file_requests_per_day: Vec<u64>,
    pub withdrawn: u64,
    /// Requests to the provider and app APIs.
    pub api_requests: u64,
    /// File and index requests that reached the server through the CDN.
    pub origin_requests: u64,
    /// Syncs where the feed and the exports disagreed on the keys they brought.
    pub download_mismatches: u64,
}

impl Tally {
    pub fn new(days: usize) -> Self {
        Self {
            infections: vec![0; days],
            positives: vec![0; days],
            uploads: vec![0; days],
            notifications: vec![0; days],
            keys_published: vec![0; days],
            feed_bytes: vec![0; days],
            export_bytes: vec![0; days],
            phone_syncs: vec![0; days],
            api_requests_per_day: vec![0; days],
            file_requests_per_day: vec![0; days],
            withdrawn: 0,
            api_requests: 0,
            origin_requests: 0,
            download_mismatches: 0,
        }
    }
}

/// Exposures as they truly happened, against notifications.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundTruth {
    /// App users with a qualifying contact with an uploader whose keys reached their phone.
    pub exposed: usize,
    /// App users notified by keys of an upload that was not rolled back.
    pub notified: usize,
    pub true_positives: usize,
    /// Hours from the uploader's positive result to the exposed phone's notification.
    pub delays_hours: Vec<f64>,
    pub missed: Vec<PersonId>,
    pub false_alarms: Vec<PersonId>,
    /// Qualifying exposures whose key never reached the phone within the run.
    pub never_arrived: usize,
    /// Qualifying exposures older than the phone's 14-day memory when the key arrived.
    pub forgotten: usize,
    /// Exposures to rolled-back uploads: matched before the rollback was published (it is, in
    /// the next hourly window), matched after (must stay 0), never matched.
    pub matched_before_withdrawal: usize,
    pub matched_after_withdrawal: usize,
    pub spared_by_withdrawal: usize,
    /// Phones whose only notification came from rolled-back uploads.
    pub notified_by_withdrawn_only: usize,
}

impl GroundTruth {
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.notified)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.exposed)
    }
}

/// 1 when there is nothing to get wrong.
fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub settings: SimSettings,
    pub people: usize,
    pub app_users: usize,
    pub households: usize,
    pub groups: usize,
    pub infected: u64,
    pub positives: u64,
    pub uploads: u64,
    pub precision: f64,
    pub recall: f64,
    pub median_delay_hours: Option<f64>,
    pub p90_delay_hours: Option<f64>,
    /// Mean bytes a phone downloads per day.
    pub feed_bytes_per_phone_day: f64,
    pub export_bytes_per_phone_day: f64,
    pub truth: GroundTruth,
    pub daily: Tally,
    pub wall_seconds: f64,
    /// Simulated phone-days per second of wall time.
    pub phone_days_per_second: f64,
}

impl Report {
    pub fn new(
        settings: &SimSettings,
        population: &Population,
        daily: Tally,
        mut truth: GroundTruth,
        wall_seconds: f64,
    ) -> Self {
        truth.delays_hours.sort_by(f64::total_cmp);
        let syncs: u64 = daily.phone_syncs.iter().sum();
        let per_sync = |bytes: &[u64]| bytes.iter().sum::<u64>() as f64 / syncs.max(1) as f64;
        let app_users = population.people.iter().filter(|p| p.app).count();
        let days = f64::from(settings.days + settings.drain_days);
        Self {
            settings: settings.clone(),
            people: population.people.len(),
            app_users,
            households: population.households.len(),
            groups: population.groups.len(),
            infected: daily.infections.iter().sum(),
            positives: daily.positives.iter().sum(),
            uploads: daily.uploads.iter().sum(),
            precision: truth.precision(),
            recall: truth.recall(),
            median_delay_hours: quantile(&truth.delays_hours, 0.5),
            p90_delay_hours: quantile(&truth.delays_hours, 0.9),
            feed_bytes_per_phone_day: per_sync(&daily.feed_bytes),
            export_bytes_per_phone_day: per_sync(&daily.export_bytes),
            phone_days_per_second: app_users as f64 * days / wall_seconds.max(1e-9),
            truth,
            daily,
            wall_seconds,
        }
    }

    /// The terminal summary; its last line gives precision and recall.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let hours = |h: Option<f64>| h.map_or("-".to_owned(), |h| format!("{h:.1} h"));
        let _ = writeln!(
            out,
            "{} people ({} with the app) over {} days, seed {}",
            self.people, self.app_users, self.settings.days, self.settings.seed
        );
        let _ = writeln!(
            out,
            "infected {}, tested positive {}, uploads {} ({} rolled back)",
            self.infected, self.positives, self.uploads, self.daily.withdrawn
        );
        let _ = writeln!(
            out,
            "truly exposed app users {}, notified {}, of whom truly exposed {}",
            self.truth.exposed, self.truth.notified, self.truth.true_positives
        );
        let _ = writeln!(
            out,
            "positive result to notification: median {}, 90th percentile {}",
            hours(self.median_delay_hours),
            hours(self.p90_delay_hours)
        );
        let _ = writeln!(
            out,
            "download per phone per day: native feed {:.0} bytes, hourly exports {:.0} bytes",
            self.feed_bytes_per_phone_day, self.export_bytes_per_phone_day
        );
        let _ = writeln!(
            out,
            "server requests: {} API, {} file (the rest served by the CDN)",
            self.daily.api_requests, self.daily.origin_requests
        );
        let _ = writeln!(
            out,
            "ran in {:.1} s, {:.0} phone-days/s",
            self.wall_seconds, self.phone_days_per_second
        );
        let _ = write!(
            out,
            "precision {:.4}, recall {:.4}",
            self.precision, self.recall
        );
        out
    }

    /// Writes `report.json` and the charts into `dir`; returns the file names.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
            std::fs::write(dir.join(name), bytes)?;
            written.push(name.to_owned());
            Ok(())
        };
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        put("report.json", &json)?;
        let days = |values: &[u64]| values.iter().map(|&v| v as f64).collect::<Vec<_>>();
        put(
            "epidemic.svg",
            Chart::lines(
                "Epidemic and notifications",
                "day",
                "people",
                vec![
                    Series::new("infected", days(&self.daily.infections)),
                    Series::new("tested positive", days(&self.daily.positives)),
                    Series::new("uploaded", days(&self.daily.uploads)),
                    Series::new("notified", days(&self.daily.notifications)),
                ],
            )
            .render()
            .as_bytes(),
        )?;
        let per_phone = |bytes: &[u64]| {
            bytes
                .iter()
                .zip(&self.daily.phone_syncs)
                .map(|(&b, &s)| b as f64 / s.max(1) as f64 / 1024.0)
                .collect::<Vec<_>>()
        };
        put(
            "downloads.svg",
            Chart::lines(
                "Download per phone per day",
                "day",
                "KiB",
                vec![
                    Series::new("native feed", per_phone(&self.daily.feed_bytes)),
                    Series::new("hourly exports", per_phone(&self.daily.export_bytes)),
                ],
            )
            .render()
            .as_bytes(),
        )?;
        put(
            "keys.svg",
            Chart::bars(
                "Keys published per day, padding included",
                "day",
                "keys",
                days(&self.daily.keys_published),
            )
            .render()
            .as_bytes(),
        )?;
        put(
            "requests.svg",
            Chart::lines(
                "Requests reaching the server per day",
                "day",
                "requests",
                vec![
                    Series::new("API", days(&self.daily.api_requests_per_day)),
                    Series::new(
                        "files (CDN misses)",
                        days(&self.daily.file_requests_per_day),
                    ),
                ],
            )
            .render()
            .as_bytes(),
        )?;
        let mut histogram = vec![0.0; 8];
        for &hours in &self.truth.delays_hours {
            histogram[((hours / 12.0) as usize).min(7)] += 1.0;
        }
        put(
            "delays.svg",
            Chart::bars(
                "Positive result to notification (12-hour bins; the last is 84 h and more)",
                "hours / 12",
                "phones",
                histogram,
            )
            .render()
            .as_bytes(),
        )?;
        Ok(written)
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[index])
}
