//! Temporary Exposure Keys and the metadata a diagnosis key carries in an export.

use std::fmt;

use crate::time::{IntervalNumber, RollingPeriod};

/// Why a value could not become a key field. Each variant names what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key_data must be exactly 16 bytes, got {0}")]
    KeyLength(usize),
    #[error("rolling_start_interval_number must be between 0 and 2^31-1, got {0}")]
    RollingStart(i64),
    #[error("rolling_period must be between 1 and 144, got {0}")]
    RollingPeriod(i64),
    #[error("transmission_risk_level must be between 0 and 8, got {0}")]
    TransmissionRisk(i64),
    #[error(
        "report_type must be 0..=5 (UNKNOWN, CONFIRMED_TEST, CONFIRMED_CLINICAL_DIAGNOSIS, SELF_REPORT, RECURSIVE, REVOKED), got {0}"
    )]
    ReportType(i64),
    #[error("variant_of_concern must be between 0 and 4, got {0}")]
    VariantOfConcern(i64),
}

/// A Temporary Exposure Key: 16 random bytes a phone uses for one day (or less).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tek(pub [u8; 16]);

impl Tek {
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl TryFrom<&[u8]> for Tek {
    type Error = KeyError;
    fn try_from(bytes: &[u8]) -> Result<Self, KeyError> {
        <[u8; 16]>::try_from(bytes)
            .map(Tek)
            .map_err(|_| KeyError::KeyLength(bytes.len()))
    }
}

impl fmt::Debug for Tek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tek(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// Deprecated transmission risk level (0..=8); still written by every major server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransmissionRisk(u8);

impl TransmissionRisk {
    pub const MAX: u8 = 8;

    pub fn new(level: i64) -> Result<Self, KeyError> {
        u8::try_from(level)
            .ok()
            .filter(|l| *l <= Self::MAX)
            .map(Self)
            .ok_or(KeyError::TransmissionRisk(level))
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// How the diagnosis was established (export.proto `ReportType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportType {
    Unknown = 0,
    ConfirmedTest = 1,
    ConfirmedClinicalDiagnosis = 2,
    SelfReport = 3,
    Recursive = 4,
    /// Marks a key withdrawn after publication (in `revised_keys`).
    Revoked = 5,
}

impl ReportType {
    pub const ALL: [Self; 6] = [
        Self::Unknown,
        Self::ConfirmedTest,
        Self::ConfirmedClinicalDiagnosis,
        Self::SelfReport,
        Self::Recursive,
        Self::Revoked,
    ];

    pub fn from_code(code: i64) -> Result<Self, KeyError> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(KeyError::ReportType(code))
    }

    /// The protobuf enum name, as used in logs and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::ConfirmedTest => "CONFIRMED_TEST",
            Self::ConfirmedClinicalDiagnosis => "CONFIRMED_CLINICAL_DIAGNOSIS",
            Self::SelfReport => "SELF_REPORT",
            Self::Recursive => "RECURSIVE",
            Self::Revoked => "REVOKED",
        }
    }

    /// Accepts the protobuf name (any case) or its number.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if let Ok(code) = text.parse::<i64>() {
            return Self::from_code(code);
        }
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(text))
            .ok_or(KeyError::ReportType(-1))
    }
}

/// Variant of concern the diagnosis was attributed to (export.proto `VariantOfConcern`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VariantOfConcern(u8);

impl VariantOfConcern {
    pub fn new(code: i64) -> Result<Self, KeyError> {
        u8::try_from(code)
            .ok()
            .filter(|c| *c <= 4)
            .map(Self)
            .ok_or(KeyError::VariantOfConcern(code))
    }

    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A TEK published as a diagnosis key, with its validity window and metadata.
///
/// Optional fields are `None` when absent on the wire, so a decoded file re-encodes to the same
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiagnosisKey {
    pub tek: Tek,
    pub rolling_start: IntervalNumber,
    pub rolling_period: RollingPeriod,
    pub transmission_risk: Option<TransmissionRisk>,
    pub report_type: Option<ReportType>,
    pub days_since_onset: Option<i32>,
    pub variant_of_concern: Option<VariantOfConcern>,
}

impl DiagnosisKey {
    /// A key valid for `rolling_period` intervals from `rolling_start`, with no metadata.
    pub fn new(tek: Tek, rolling_start: IntervalNumber, rolling_period: RollingPeriod) -> Self {
        Self {
            tek,
            rolling_start,
            rolling_period,
            transmission_risk: None,
            report_type: None,
            days_since_onset: None,
            variant_of_concern: None,
        }
    }

    /// First interval after the key stopped being broadcast.
    pub fn rolling_end(&self) -> IntervalNumber {
        IntervalNumber::new(
            self.rolling_start
                .get()
                .saturating_add(self.rolling_period.get()),
        )
    }
}

/// Validates a raw rolling start (protobuf `int32`).
pub fn rolling_start_from_wire(value: i64) -> Result<IntervalNumber, KeyError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= i32::MAX as u32)
        .map(IntervalNumber::new)
        .ok_or(KeyError::RollingStart(value))
}

/// Validates a raw rolling period (protobuf `int32`).
pub fn rolling_period_from_wire(value: i64) -> Result<RollingPeriod, KeyError> {
    u32::try_from(value)
        .ok()
        .and_then(RollingPeriod::new)
        .ok_or(KeyError::RollingPeriod(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_type_parses_names_and_numbers() {
        assert_eq!(
            ReportType::parse("confirmed_test"),
            Ok(ReportType::ConfirmedTest)
        );
        assert_eq!(ReportType::parse("5"), Ok(ReportType::Revoked));
        assert!(ReportType::parse("6").is_err());
        assert!(ReportType::parse("POSITIVE").is_err());
    }

    #[test]
    fn wire_ranges() {
        assert!(rolling_start_from_wire(-1).is_err());
        assert!(rolling_start_from_wire(i64::from(i32::MAX) + 1).is_err());
        assert!(rolling_period_from_wire(0).is_err());
        assert!(TransmissionRisk::new(9).is_err());
        assert_eq!(TransmissionRisk::new(8).map(TransmissionRisk::get), Ok(8));
        assert_eq!(Tek::try_from(&[0u8; 15][..]), Err(KeyError::KeyLength(15)));
    }
}
