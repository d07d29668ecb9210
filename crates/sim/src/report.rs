//! What a run found: ground truth against notifications, delays, bytes, load. Written as
//! JSON and as SVG charts, and summarised in a few lines for the terminal.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::model::{PersonId, Population, Protocol, SimSettings};
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

/// The encounter-token protocol's counters per day of the run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenTally {
    /// Positive app users who uploaded (one TAN each, or more for many areas).
    pub uploads: Vec<u64>,
    /// Hashes the server accepted, at level 0 and chained.
    pub tokens_uploaded: Vec<u64>,
    /// Phones notified at level 0 (direct contact of a diagnosed person).
    pub notifications: Vec<u64>,
    /// Phones whose first level-1 match (contact of a contact) came that day.
    pub level1_notifications: Vec<u64>,
    pub chained_uploads: Vec<u64>,
    /// Encounters the phones' detectors completed and stored.
    pub encounters: Vec<u64>,
    /// Bytes all phones downloaded: index, filters and bucket files.
    pub bytes: Vec<u64>,
    pub index_bytes: Vec<u64>,
    pub filter_bytes: Vec<u64>,
    pub bucket_bytes: Vec<u64>,
    pub phone_syncs: Vec<u64>,
    /// Requests that reached the server: TAN imports, redemptions and uploads; file requests
    /// the CDN passed on.
    pub api_requests_per_day: Vec<u64>,
    pub file_requests_per_day: Vec<u64>,
    pub api_requests: u64,
    pub origin_requests: u64,
    /// Uploaders whose phone held no encounter to upload.
    pub empty_uploads: u64,
    /// Hashes of level-0 uploads the server already held, so kept at their level: a phone
    /// that chained its encounters at level 1 and then tests positive cannot report them at
    /// level 0 again.
    pub tokens_skipped: u64,
    /// Chained uploads the server refused.
    pub chained_refused: u64,
    /// Phone-epochs heard in more than one area, whose encounters' areas took a second
    /// derivation to tell apart.
    pub mixed_epochs: u64,
    /// The crypto: epoch keys broadcast to a phone or a sniffer (one X25519 key each), key
    /// pairs derived (one Diffie-Hellman each) and pairs heard too briefly to be worth one.
    pub keys_broadcast: u64,
    pub pairs_derived: u64,
    pub pairs_too_short: u64,
}

impl TokenTally {
    pub fn new(days: usize) -> Self {
        Self {
            uploads: vec![0; days],
            tokens_uploaded: vec![0; days],
            notifications: vec![0; days],
            level1_notifications: vec![0; days],
            chained_uploads: vec![0; days],
            encounters: vec![0; days],
            bytes: vec![0; days],
            index_bytes: vec![0; days],
            filter_bytes: vec![0; days],
            bucket_bytes: vec![0; days],
            phone_syncs: vec![0; days],
            api_requests_per_day: vec![0; days],
            file_requests_per_day: vec![0; days],
            api_requests: 0,
            origin_requests: 0,
            empty_uploads: 0,
            tokens_skipped: 0,
            chained_refused: 0,
            mixed_epochs: 0,
            keys_broadcast: 0,
            pairs_derived: 0,
            pairs_too_short: 0,
        }
    }
}

/// What the encounter-token protocol achieved in a run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReport {
    /// Against the token rule's ground truth (level 0 only).
    pub precision: f64,
    pub recall: f64,
    pub median_delay_hours: Option<f64>,
    pub p90_delay_hours: Option<f64>,
    /// Mean bytes a phone downloads per day, and its parts.
    pub bytes_per_phone_day: f64,
    pub index_bytes_per_phone_day: f64,
    pub filter_bytes_per_phone_day: f64,
    pub bucket_bytes_per_phone_day: f64,
    /// API and file requests reaching the server, per day.
    pub requests_per_day: f64,
    pub encounters_per_phone_day: f64,
    pub uploads: u64,
    pub tokens_uploaded: u64,
    pub chained_uploads: u64,
    /// Phones with a level-1 match, and those of them never notified at level 0.
    pub level1_notified: usize,
    pub level1_only: usize,
    /// With `--protocol both`: GAEN's truly exposed app users, and how many of them the
    /// tokens warned (at level 0).
    pub gaen_exposed: Option<usize>,
    pub gaen_exposed_warned: Option<usize>,
    pub truth: GroundTruth,
    pub daily: TokenTally,
}

impl TokenReport {
    pub fn new(
        settings: &SimSettings,
        daily: TokenTally,
        mut truth: GroundTruth,
        app_users: usize,
        level1: (usize, usize),
    ) -> Self {
        truth.delays_hours.sort_by(f64::total_cmp);
        let syncs: u64 = daily.phone_syncs.iter().sum();
        let per_sync = |bytes: &[u64]| bytes.iter().sum::<u64>() as f64 / syncs.max(1) as f64;
        let days = f64::from(settings.days + settings.drain_days);
        let encounters: u64 = daily.encounters.iter().sum();
        Self {
            precision: truth.precision(),
            recall: truth.recall(),
            median_delay_hours: quantile(&truth.delays_hours, 0.5),
            p90_delay_hours: quantile(&truth.delays_hours, 0.9),
            bytes_per_phone_day: per_sync(&daily.bytes),
            index_bytes_per_phone_day: per_sync(&daily.index_bytes),
            filter_bytes_per_phone_day: per_sync(&daily.filter_bytes),
            bucket_bytes_per_phone_day: per_sync(&daily.bucket_bytes),
            requests_per_day: (daily.api_requests + daily.origin_requests) as f64 / days,
            encounters_per_phone_day: encounters as f64 / (app_users.max(1) as f64 * days),
            uploads: daily.uploads.iter().sum(),
            tokens_uploaded: daily.tokens_uploaded.iter().sum(),
            chained_uploads: daily.chained_uploads.iter().sum(),
            level1_notified: level1.0,
            level1_only: level1.1,
            gaen_exposed: None,
            gaen_exposed_warned: None,
            truth,
            daily,
        }
    }
}

/// What passive Bluetooth sniffers could link once the published data is out.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnifferReport {
    /// Workplaces and school classes, and how many of them a sniffer watched.
    pub places: usize,
    pub sniffed_places: usize,
    pub gaen: Option<SnifferFigures>,
    pub tokens: Option<SnifferFigures>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnifferFigures {
    /// Distinct broadcasts recorded (an RPI or a token key, per place).
    pub recorded: u64,
    /// Published values the sniffers collected (keys or hashes, padding included), and the
    /// values they derived from them or from what they recorded.
    pub published: u64,
    pub derived: u64,
    pub uploaders: usize,
    /// Uploaders with at least one recorded broadcast, and how many broadcasts of theirs.
    pub uploaders_recorded: usize,
    pub recorded_of_uploaders: u64,
    /// Recorded broadcasts of uploaders that the published data links to them.
    pub linkable: u64,
    /// Linkable broadcasts of people who never uploaded (0 unless the model is wrong).
    pub linkable_of_others: u64,
    pub uploaders_linkable: usize,
    pub max_linkable: u64,
    pub linkable_per_uploader: f64,
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
    pub protocol: Protocol,
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
    /// GAEN's API and file requests reaching the server, per day.
    pub requests_per_day: f64,
    /// GAEN's figures (precision to here): not a number, and empty, in a tokens-only run.
    pub truth: GroundTruth,
    /// Per day: the epidemic (infections, positives, uploads) and GAEN's counters.
    pub daily: Tally,
    pub tokens: Option<TokenReport>,
    pub sniffer: SnifferReport,
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
        tokens: Option<TokenReport>,
        sniffer: SnifferReport,
        wall_seconds: f64,
    ) -> Self {
        truth.delays_hours.sort_by(f64::total_cmp);
        let syncs: u64 = daily.phone_syncs.iter().sum();
        let per_sync = |bytes: &[u64]| bytes.iter().sum::<u64>() as f64 / syncs.max(1) as f64;
        let app_users = population.people.iter().filter(|p| p.app).count();
        let days = f64::from(settings.days + settings.drain_days);
        let gaen = settings.protocol.gaen();
        let ran = |value: f64| if gaen { value } else { f64::NAN };
        Self {
            settings: settings.clone(),
            protocol: settings.protocol,
            people: population.people.len(),
            app_users,
            households: population.households.len(),
            groups: population.groups.len(),
            infected: daily.infections.iter().sum(),
            positives: daily.positives.iter().sum(),
            uploads: daily.uploads.iter().sum(),
            precision: ran(truth.precision()),
            recall: ran(truth.recall()),
            median_delay_hours: quantile(&truth.delays_hours, 0.5),
            p90_delay_hours: quantile(&truth.delays_hours, 0.9),
            feed_bytes_per_phone_day: ran(per_sync(&daily.feed_bytes)),
            export_bytes_per_phone_day: ran(per_sync(&daily.export_bytes)),
            requests_per_day: ran((daily.api_requests + daily.origin_requests) as f64 / days),
            tokens,
            sniffer,
            phone_days_per_second: app_users as f64 * days / wall_seconds.max(1e-9),
            truth,
            daily,
            wall_seconds,
        }
    }

    /// The terminal summary. A GAEN or tokens run ends with that protocol's precision and
    /// recall; `both` ends with a side-by-side comparison.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let protocols = match self.protocol {
            Protocol::Gaen => "GAEN",
            Protocol::Tokens => "encounter tokens",
            Protocol::Both => "GAEN and encounter tokens side by side",
        };
        let _ = writeln!(
            out,
            "{} people ({} with the app) over {} days, seed {}, {protocols}",
            self.people, self.app_users, self.settings.days, self.settings.seed
        );
        let _ = writeln!(
            out,
            "infected {}, tested positive {}, uploads {} ({} rolled back)",
            self.infected, self.positives, self.uploads, self.daily.withdrawn
        );
        match (self.protocol, &self.tokens) {
            (Protocol::Both, Some(tokens)) => self.comparison(&mut out, tokens),
            (Protocol::Tokens, Some(tokens)) => self.token_summary(&mut out, tokens),
            _ => self.gaen_summary(&mut out),
        }
        out
    }

    fn gaen_summary(&self, out: &mut String) {
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
        if let Some(sniffer) = &self.sniffer.gaen {
            let _ = writeln!(out, "{}", self.sniffer_line(sniffer));
        }
        self.wall(out);
        let _ = write!(
            out,
            "precision {:.4}, recall {:.4}",
            self.precision, self.recall
        );
    }

    fn token_summary(&self, out: &mut String, tokens: &TokenReport) {
        let truth = &tokens.truth;
        let _ = writeln!(
            out,
            "truly exposed app users {} (5 minutes within an epoch), notified {}, of whom truly exposed {}",
            truth.exposed, truth.notified, truth.true_positives
        );
        let _ = writeln!(
            out,
            "positive result to notification: median {}, 90th percentile {}",
            hours(tokens.median_delay_hours),
            hours(tokens.p90_delay_hours)
        );
        let _ = writeln!(
            out,
            "download per phone per day: {:.0} bytes (index {:.0}, filters {:.0}, buckets {:.0})",
            tokens.bytes_per_phone_day,
            tokens.index_bytes_per_phone_day,
            tokens.filter_bytes_per_phone_day,
            tokens.bucket_bytes_per_phone_day
        );
        let _ = writeln!(
            out,
            "server requests: {} API, {} file (the rest served by the CDN)",
            tokens.daily.api_requests, tokens.daily.origin_requests
        );
        let _ = writeln!(
            out,
            "encounters per phone per day {:.1}, hashes uploaded {}, level-1 notified {} ({} only at level 1), chained uploads {}",
            tokens.encounters_per_phone_day,
            tokens.tokens_uploaded,
            tokens.level1_notified,
            tokens.level1_only,
            tokens.chained_uploads
        );
        if let Some(sniffer) = &self.sniffer.tokens {
            let _ = writeln!(out, "{}", self.sniffer_line(sniffer));
        }
        self.wall(out);
        let _ = write!(
            out,
            "precision {:.4}, recall {:.4}",
            tokens.precision, tokens.recall
        );
    }

    fn comparison(&self, out: &mut String, tokens: &TokenReport) {
        let rows: Vec<(&str, String, String)> = vec![
            (
                "truly exposed app users",
                self.truth.exposed.to_string(),
                tokens.truth.exposed.to_string(),
            ),
            (
                "notified",
                self.truth.notified.to_string(),
                tokens.truth.notified.to_string(),
            ),
            (
                "of whom truly exposed",
                self.truth.true_positives.to_string(),
                tokens.truth.true_positives.to_string(),
            ),
            (
                "precision",
                format!("{:.4}", self.precision),
                format!("{:.4}", tokens.precision),
            ),
            (
                "recall",
                format!("{:.4}", self.recall),
                format!("{:.4}", tokens.recall),
            ),
            (
                "median delay",
                hours(self.median_delay_hours),
                hours(tokens.median_delay_hours),
            ),
            (
                "bytes per phone per day",
                format!(
                    "{:.0} feed / {:.0} exports",
                    self.feed_bytes_per_phone_day, self.export_bytes_per_phone_day
                ),
                format!("{:.0}", tokens.bytes_per_phone_day),
            ),
            (
                "requests per day",
                format!("{:.0}", self.requests_per_day),
                format!("{:.0}", tokens.requests_per_day),
            ),
            (
                "sniffed sightings linkable",
                self.sniffer
                    .gaen
                    .as_ref()
                    .map_or("-".into(), |s| s.linkable.to_string()),
                self.sniffer
                    .tokens
                    .as_ref()
                    .map_or("-".into(), |s| s.linkable.to_string()),
            ),
            (
                "  per uploader",
                self.sniffer
                    .gaen
                    .as_ref()
                    .map_or("-".into(), |s| format!("{:.2}", s.linkable_per_uploader)),
                self.sniffer
                    .tokens
                    .as_ref()
                    .map_or("-".into(), |s| format!("{:.2}", s.linkable_per_uploader)),
            ),
            (
                "  uploaders linkable",
                self.sniffer.gaen.as_ref().map_or("-".into(), |s| {
                    format!("{} of {}", s.uploaders_linkable, s.uploaders)
                }),
                self.sniffer.tokens.as_ref().map_or("-".into(), |s| {
                    format!("{} of {}", s.uploaders_linkable, s.uploaders)
                }),
            ),
        ];
        let _ = writeln!(out, "{:<28} {:<28} encounter tokens", "", "GAEN");
        for (name, gaen, token) in rows {
            let _ = writeln!(out, "{name:<28} {gaen:<28} {token}");
        }
        if let (Some(exposed), Some(warned)) = (tokens.gaen_exposed, tokens.gaen_exposed_warned) {
            let _ = writeln!(
                out,
                "tokens warned {warned} of the {exposed} GAEN counts as truly exposed; \
                 level-1 notified {} ({} only at level 1)",
                tokens.level1_notified, tokens.level1_only
            );
        }
        let _ = writeln!(
            out,
            "sniffers in {} of {} workplaces and classes",
            self.sniffer.sniffed_places, self.sniffer.places
        );
        self.wall(out);
        let _ = write!(
            out,
            "precision {:.4} / {:.4}, recall {:.4} / {:.4} (GAEN / tokens)",
            self.precision, tokens.precision, self.recall, tokens.recall
        );
    }

    fn sniffer_line(&self, sniffer: &SnifferFigures) -> String {
        format!(
            "sniffers in {} of {} places: {} sightings of uploaders linkable, {:.2} per uploader ({} of {} uploaders)",
            self.sniffer.sniffed_places,
            self.sniffer.places,
            sniffer.linkable,
            sniffer.linkable_per_uploader,
            sniffer.uploaders_linkable,
            sniffer.uploaders
        )
    }

    fn wall(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "ran in {:.1} s, {:.0} phone-days/s",
            self.wall_seconds, self.phone_days_per_second
        );
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
        let gaen = self.protocol.gaen();
        let tokens = self.tokens.as_ref();
        let mut epidemic = vec![
            Series::new("infected", days(&self.daily.infections)),
            Series::new("tested positive", days(&self.daily.positives)),
            Series::new("uploaded", days(&self.daily.uploads)),
        ];
        if gaen {
            epidemic.push(Series::new("notified", days(&self.daily.notifications)));
        }
        if let Some(tokens) = tokens {
            epidemic.push(Series::new(
                "notified (tokens)",
                days(&tokens.daily.notifications),
            ));
            if self.settings.chain {
                epidemic.push(Series::new(
                    "level 1 (tokens)",
                    days(&tokens.daily.level1_notifications),
                ));
            }
        }
        put(
            "epidemic.svg",
            Chart::lines("Epidemic and notifications", "day", "people", epidemic)
                .render()
                .as_bytes(),
        )?;
        let per_phone = |bytes: &[u64], syncs: &[u64]| {
            bytes
                .iter()
                .zip(syncs)
                .map(|(&b, &s)| b as f64 / s.max(1) as f64 / 1024.0)
                .collect::<Vec<_>>()
        };
        let mut downloads = Vec::new();
        if gaen {
            downloads.push(Series::new(
                "native feed",
                per_phone(&self.daily.feed_bytes, &self.daily.phone_syncs),
            ));
            downloads.push(Series::new(
                "hourly exports",
                per_phone(&self.daily.export_bytes, &self.daily.phone_syncs),
            ));
        }
        if let Some(tokens) = tokens {
            downloads.push(Series::new(
                "encounter tokens",
                per_phone(&tokens.daily.bytes, &tokens.daily.phone_syncs),
            ));
        }
        put(
            "downloads.svg",
            Chart::lines("Download per phone per day", "day", "KiB", downloads)
                .render()
                .as_bytes(),
        )?;
        if gaen {
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
        }
        if let Some(tokens) = tokens {
            put(
                "tokens.svg",
                Chart::bars(
                    "Encounter-token hashes uploaded per day (padding not included)",
                    "day",
                    "hashes",
                    days(&tokens.daily.tokens_uploaded),
                )
                .render()
                .as_bytes(),
            )?;
        }
        let mut requests = Vec::new();
        if gaen {
            requests.push(Series::new("API", days(&self.daily.api_requests_per_day)));
            requests.push(Series::new(
                "files (CDN misses)",
                days(&self.daily.file_requests_per_day),
            ));
        }
        if let Some(tokens) = tokens {
            requests.push(Series::new(
                "token API",
                days(&tokens.daily.api_requests_per_day),
            ));
            requests.push(Series::new(
                "token files (CDN misses)",
                days(&tokens.daily.file_requests_per_day),
            ));
        }
        put(
            "requests.svg",
            Chart::lines(
                "Requests reaching the server per day",
                "day",
                "requests",
                requests,
            )
            .render()
            .as_bytes(),
        )?;
        let histogram = |delays: &[f64]| {
            let mut bins = vec![0.0; 8];
            for &hours in delays {
                bins[((hours / 12.0) as usize).min(7)] += 1.0;
            }
            bins
        };
        let title = "Positive result to notification (12-hour bins; the last is 84 h and more)";
        let chart = match (gaen, tokens) {
            (true, Some(tokens)) => Chart::lines(
                title,
                "hours / 12",
                "phones",
                vec![
                    Series::new("GAEN", histogram(&self.truth.delays_hours)),
                    Series::new("encounter tokens", histogram(&tokens.truth.delays_hours)),
                ],
            ),
            (false, Some(tokens)) => Chart::bars(
                title,
                "hours / 12",
                "phones",
                histogram(&tokens.truth.delays_hours),
            ),
            _ => Chart::bars(
                title,
                "hours / 12",
                "phones",
                histogram(&self.truth.delays_hours),
            ),
        };
        put("delays.svg", chart.render().as_bytes())?;
        Ok(written)
    }
}

fn hours(h: Option<f64>) -> String {
    h.map_or("-".to_owned(), |h| format!("{h:.1} h"))
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[index])
}
