//! Text inputs of the command line, parsed into `gaen` domain types with line-numbered errors.
//!
//! Observation files are `unix_seconds,hex[,rssi]` (hex: 32-char RPI or 40-char RPI‖AEM); key
//! files are CSV
//! `key_hex,rsin,rolling_period,trl[,report_type[,days_since_onset[,variant_of_concern]]]`. Blank lines and lines starting
//! with `#` are skipped everywhere.

use std::fmt;

use gaen::key::{rolling_period_from_wire, rolling_start_from_wire};
use gaen::{
    Aem, DiagnosisKey, Observation, ReportType, Rpi, Tek, TransmissionRisk, VariantOfConcern,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A bad line in a text input.
#[derive(Debug)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

/// Non-comment lines with their 1-based numbers.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn fields<'a>(
    line: usize,
    text: &'a str,
    shape: &str,
    counts: std::ops::RangeInclusive<usize>,
) -> Result<Vec<&'a str>, LineError> {
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if counts.contains(&fields.len()) {
        Ok(fields)
    } else {
        Err(LineError {
            line,
            message: format!("expected `{shape}`, got {} field(s)", fields.len()),
        })
    }
}

fn hex_bytes(line: usize, what: &str, text: &str) -> Result<Vec<u8>, LineError> {
    hex::decode(text).map_err(|_| LineError {
        line,
        message: format!("{what} is not hexadecimal: {text:?}"),
    })
}

fn number<T: std::str::FromStr>(line: usize, what: &str, text: &str) -> Result<T, LineError> {
    text.parse().map_err(|_| LineError {
        line,
        message: format!("{what} is not a valid number: {text:?}"),
    })
}

pub fn parse_observations(text: &str) -> Result<Vec<Observation>, LineError> {
    const SHAPE: &str = "unix_seconds,hex[,rssi]";
    data_lines(text)
        .map(|(line, text)| {
            let f = fields(line, text, SHAPE, 2..=3)?;
            let observed_at = number(line, "unix_seconds", f[0])?;
            let bytes = hex_bytes(line, "the RPI", f[1])?;
            let (rpi, aem) = match bytes.len() {
                16 => (&bytes[..], None),
                20 => (
                    &bytes[..16],
                    Some(Aem(bytes[16..].try_into().expect("4 bytes"))),
                ),
                n => {
                    return Err(LineError {
                        line,
                        message: format!(
                            "the RPI must be 32 hex characters, or 40 with the AEM; got {}",
                            n * 2
                        ),
                    });
                }
            };
            let rssi = f
                .get(2)
                .map(|r| {
                    r.parse::<i8>().map_err(|_| LineError {
                        line,
                        message: format!(
                            "rssi must be a whole dBm value from -128 to 127, got {r:?}"
                        ),
                    })
                })
                .transpose()?;
            Ok(Observation {
                observed_at,
                rpi: Rpi(rpi.try_into().expect("16 bytes")),
                aem,
                rssi,
            })
        })
        .collect()
}

pub fn parse_keys_csv(text: &str) -> Result<Vec<DiagnosisKey>, LineError> {
    const SHAPE: &str =
        "key_hex,rsin,rolling_period,trl[,report_type[,days_since_onset[,variant_of_concern]]]";
    let mut lines = data_lines(text).peekable();
    // An optional header row.
    if lines.peek().is_some_and(|(_, l)| l.starts_with("key")) {
        lines.next();
    }
    lines
        .map(|(line, text)| {
            let f = fields(line, text, SHAPE, 4..=7)?;
            let optional = |i: usize| f.get(i).copied().filter(|t| !t.is_empty());
            let invalid = |e: gaen::KeyError| LineError {
                line,
                message: e.to_string(),
            };
            let tek = Tek::try_from(hex_bytes(line, "key_hex", f[0])?.as_slice()).map_err(invalid)?;
            let mut key = DiagnosisKey::new(
                tek,
                rolling_start_from_wire(number(line, "rsin", f[1])?).map_err(invalid)?,
                rolling_period_from_wire(number(line, "rolling_period", f[2])?).map_err(invalid)?,
            );
            key.transmission_risk =
                Some(TransmissionRisk::new(number(line, "trl", f[3])?).map_err(invalid)?);
            key.report_type = optional(4)
                .map(ReportType::parse)
                .transpose()
                .map_err(|_| LineError {
                    line,
                    message: format!(
                        "report_type must be one of UNKNOWN, CONFIRMED_TEST, CONFIRMED_CLINICAL_DIAGNOSIS, SELF_REPORT, RECURSIVE, REVOKED (or 0..=5), got {:?}",
                        f[4]
                    ),
                })?;
            key.days_since_onset = optional(5)
                .map(|d| number(line, "days_since_onset", d))
                .transpose()?;
            key.variant_of_concern = optional(6)
                .map(|v| VariantOfConcern::new(number(line, "variant_of_concern", v)?).map_err(invalid))
                .transpose()?;
            Ok(key)
        })
        .collect()
}

/// Unix seconds, or an RFC 3339 date-time such as `2021-01-31T00:00:00Z`.
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let moment = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        format!("{text:?} is neither unix seconds nor an RFC 3339 time like 2021-01-31T00:00:00Z")
    })?;
    u64::try_from(moment.unix_timestamp()).map_err(|_| format!("{text:?} is before 1970"))
}

/// RFC 3339 in UTC, for people reading output.
pub fn format_timestamp(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix_seconds} (out of range)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_with_and_without_aem_and_rssi() {
        let text = "# heard\n\n1600000000,8be6cd371c5c891604bfbe49df845096\n1600000600,8be6cd371c5c891604bfbe49df84509672033874,-71\n";
        let parsed = parse_observations(text).expect("valid");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].aem, None);
        assert_eq!(parsed[1].aem, Some(Aem([0x72, 0x03, 0x38, 0x74])));
        assert_eq!(parsed[1].rssi, Some(-71));
    }

    #[test]
    fn observation_errors_name_the_line() {
        let cases = [
            (
                "1,00",
                "line 1: the RPI must be 32 hex characters, or 40 with the AEM; got 2",
            ),
            (
                "x,8be6cd371c5c891604bfbe49df845096",
                "line 1: unix_seconds is not a valid number: \"x\"",
            ),
            (
                "1",
                "line 1: expected `unix_seconds,hex[,rssi]`, got 1 field(s)",
            ),
            (
                "#c\n1,8be6cd371c5c891604bfbe49df84509z",
                "line 2: the RPI is not hexadecimal: \"8be6cd371c5c891604bfbe49df84509z\"",
            ),
            (
                "1,8be6cd371c5c891604bfbe49df845096,-300",
                "line 1: rssi must be a whole dBm value from -128 to 127, got \"-300\"",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_observations(text).expect_err(text);
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn keys_csv_with_header_and_report_type() {
        let text = "key_hex,rsin,rolling_period,trl\n75c734c6dd1a782de7a965da5eb93125,2642976,144,4,CONFIRMED_TEST\n";
        let keys = parse_keys_csv(text).expect("valid");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].report_type, Some(ReportType::ConfirmedTest));
        assert_eq!(keys[0].transmission_risk.map(|t| t.get()), Some(4));
        let error =
            parse_keys_csv("75c734c6dd1a782de7a965da5eb93125,2642976,145,4").expect_err("period");
        assert_eq!(
            error.to_string(),
            "line 1: rolling_period must be between 1 and 144, got 145"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1612051200"), Ok(1_612_051_200));
        assert_eq!(parse_timestamp("2021-01-31T00:00:00Z"), Ok(1_612_051_200));
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(format_timestamp(1_612_051_200), "2021-01-31T00:00:00Z");
    }
}
