//! `export.bin` and `export.sig`: the signed key files phones download.
//!
//! `export.bin` is the 16-byte header followed by a `TemporaryExposureKeyExport`; `export.sig`
//! is a `TEKSignatureList`. Decoding validates every key into domain types and reports the
//! first offending key by list and position; unknown protobuf fields are skipped, as phones do.

use prost::Message;

use crate::key::{
    DiagnosisKey, KeyError, ReportType, Tek, TransmissionRisk, VariantOfConcern,
    rolling_period_from_wire, rolling_start_from_wire,
};
use crate::proto;
use crate::time::RollingPeriod;

/// The 16 bytes every `export.bin` starts with.
pub const EXPORT_HEADER: &[u8; 16] = b"EK Export v1    ";
/// OID of ECDSA with SHA-256, the only algorithm phones accept.
pub const SIGNATURE_ALGORITHM: &str = "1.2.840.10045.4.3.2";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export.bin is {0} bytes long, shorter than its 16-byte header")]
    Truncated(usize),
    #[error("export.bin does not start with the header \"EK Export v1    \"")]
    BadHeader,
    #[error("export.bin is not a valid TemporaryExposureKeyExport protobuf: {0}")]
    Protobuf(prost::DecodeError),
    #[error("export.bin has no {0}")]
    Missing(&'static str),
    #[error("export.bin {list} #{index}: {source}")]
    Key {
        list: &'static str,
        index: usize,
        source: KeyError,
    },
    #[error("export.sig is not a valid TEKSignatureList protobuf: {0}")]
    SignatureList(prost::DecodeError),
}

/// Which signing key produced a signature: phones look the public key up by id and version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureInfo {
    /// Deprecated (iOS bundle id); real files still carry it, so it round-trips.
    pub app_bundle_id: Option<String>,
    /// Deprecated (Android package name).
    pub android_package: Option<String>,
    pub verification_key_version: Option<String>,
    pub verification_key_id: Option<String>,
    pub signature_algorithm: Option<String>,
}

impl SignatureInfo {
    /// Info for an ECDSA P-256 key, as phones expect it.
    pub fn new(key_id: impl Into<String>, key_version: impl Into<String>) -> Self {
        Self {
            app_bundle_id: None,
            android_package: None,
            verification_key_version: Some(key_version.into()),
            verification_key_id: Some(key_id.into()),
            signature_algorithm: Some(SIGNATURE_ALGORITHM.to_owned()),
        }
    }
}

/// The decoded content of `export.bin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// UTC seconds; the window of submissions this file covers.
    pub start_timestamp: u64,
    pub end_timestamp: u64,
    pub region: String,
    /// Always 1 in current deployments; `None` when absent on the wire.
    pub batch_num: Option<i32>,
    pub batch_size: Option<i32>,
    /// Newest signing key first, at most 10.
    pub signature_infos: Vec<SignatureInfo>,
    pub keys: Vec<DiagnosisKey>,
    /// Corrections to keys published earlier (e.g. report type REVOKED).
    pub revised_keys: Vec<DiagnosisKey>,
}

/// One entry of `export.sig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSignature {
    pub info: Option<SignatureInfo>,
    pub batch_num: Option<i32>,
    pub batch_size: Option<i32>,
    /// ASN.1 DER ECDSA signature over the whole `export.bin`.
    pub signature: Vec<u8>,
}

impl Export {
    /// An unsigned export with batch 1 of 1 and no keys yet.
    pub fn new(region: impl Into<String>, start_timestamp: u64, end_timestamp: u64) -> Self {
        Self {
            start_timestamp,
            end_timestamp,
            region: region.into(),
            batch_num: Some(1),
            batch_size: Some(1),
            signature_infos: Vec::new(),
            keys: Vec::new(),
            revised_keys: Vec::new(),
        }
    }

    /// Serialises to `export.bin` bytes, header included.
    pub fn to_bin(&self) -> Vec<u8> {
        let message = proto::TemporaryExposureKeyExport {
            start_timestamp: Some(self.start_timestamp),
            end_timestamp: Some(self.end_timestamp),
            region: Some(self.region.clone()),
            batch_num: self.batch_num,
            batch_size: self.batch_size,
            signature_infos: self.signature_infos.iter().map(info_to_wire).collect(),
            keys: self.keys.iter().map(key_to_wire).collect(),
            revised_keys: self.revised_keys.iter().map(key_to_wire).collect(),
        };
        let mut bin = Vec::with_capacity(EXPORT_HEADER.len() + message.encoded_len());
        bin.extend_from_slice(EXPORT_HEADER);
        message
            .encode(&mut bin)
            .expect("a Vec grows to fit any message");
        bin
    }

    /// Parses `export.bin` bytes, header included.
    pub fn from_bin(bin: &[u8]) -> Result<Self, ExportError> {
        let body = bin.strip_prefix(EXPORT_HEADER.as_slice()).ok_or(
            if bin.len() < EXPORT_HEADER.len() {
                ExportError::Truncated(bin.len())
            } else {
                ExportError::BadHeader
            },
        )?;
        let message =
            proto::TemporaryExposureKeyExport::decode(body).map_err(ExportError::Protobuf)?;
        Ok(Self {
            start_timestamp: message
                .start_timestamp
                .ok_or(ExportError::Missing("start_timestamp"))?,
            end_timestamp: message
                .end_timestamp
                .ok_or(ExportError::Missing("end_timestamp"))?,
            region: message.region.ok_or(ExportError::Missing("region"))?,
            batch_num: message.batch_num,
            batch_size: message.batch_size,
            signature_infos: message
                .signature_infos
                .into_iter()
                .map(info_from_wire)
                .collect(),
            keys: keys_from_wire("key", message.keys)?,
            revised_keys: keys_from_wire("revised key", message.revised_keys)?,
        })
    }
}

/// Serialises `export.sig`.
pub fn encode_signature_list(signatures: &[ExportSignature]) -> Vec<u8> {
    proto::TekSignatureList {
        signatures: signatures
            .iter()
            .map(|s| proto::TekSignature {
                signature_info: s.info.as_ref().map(info_to_wire),
                batch_num: s.batch_num,
                batch_size: s.batch_size,
                signature: Some(s.signature.clone()),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Parses `export.sig`.
pub fn decode_signature_list(sig: &[u8]) -> Result<Vec<ExportSignature>, ExportError> {
    let list = proto::TekSignatureList::decode(sig).map_err(ExportError::SignatureList)?;
    Ok(list
        .signatures
        .into_iter()
        .map(|s| ExportSignature {
            info: s.signature_info.map(info_from_wire),
            batch_num: s.batch_num,
            batch_size: s.batch_size,
            signature: s.signature.unwrap_or_default(),
        })
        .collect())
}

fn info_to_wire(info: &SignatureInfo) -> proto::SignatureInfo {
    proto::SignatureInfo {
        app_bundle_id: info.app_bundle_id.clone(),
        android_package: info.android_package.clone(),
        verification_key_version: info.verification_key_version.clone(),
        verification_key_id: info.verification_key_id.clone(),
        signature_algorithm: info.signature_algorithm.clone(),
    }
}

fn info_from_wire(info: proto::SignatureInfo) -> SignatureInfo {
    SignatureInfo {
        app_bundle_id: info.app_bundle_id,
        android_package: info.android_package,
        verification_key_version: info.verification_key_version,
        verification_key_id: info.verification_key_id,
        signature_algorithm: info.signature_algorithm,
    }
}

fn key_to_wire(key: &DiagnosisKey) -> proto::TemporaryExposureKey {
    proto::TemporaryExposureKey {
        key_data: Some(key.tek.0.to_vec()),
        transmission_risk_level: key.transmission_risk.map(|t| i32::from(t.get())),
        rolling_start_interval_number: Some(key.rolling_start.get() as i32),
        rolling_period: Some(key.rolling_period.get() as i32),
        report_type: key.report_type.map(|t| t as i32),
        days_since_onset_of_symptoms: key.days_since_onset,
        variant_of_concern: key.variant_of_concern.map(|v| i32::from(v.get())),
    }
}

fn keys_from_wire(
    list: &'static str,
    keys: Vec<proto::TemporaryExposureKey>,
) -> Result<Vec<DiagnosisKey>, ExportError> {
    keys.into_iter()
        .enumerate()
        .map(|(index, key)| {
            key_from_wire(key).map_err(|source| ExportError::Key {
                list,
                index,
                source,
            })
        })
        .collect()
}

fn key_from_wire(key: proto::TemporaryExposureKey) -> Result<DiagnosisKey, KeyError> {
    let key_data = key.key_data.unwrap_or_default();
    Ok(DiagnosisKey {
        tek: Tek::try_from(key_data.as_slice())?,
        rolling_start: rolling_start_from_wire(key.rolling_start_interval_number.map_or(
            // A missing start is as invalid as a negative one.
            -1,
            i64::from,
        ))?,
        // proto2 default: a missing rolling period means a full day.
        rolling_period: key
            .rolling_period
            .map_or(Ok(RollingPeriod::FULL_DAY), |p| {
                rolling_period_from_wire(i64::from(p))
            })?,
        transmission_risk: key
            .transmission_risk_level
            .map(|t| TransmissionRisk::new(i64::from(t)))
            .transpose()?,
        report_type: key
            .report_type
            .map(|t| ReportType::from_code(i64::from(t)))
            .transpose()?,
        days_since_onset: key.days_since_onset_of_symptoms,
        variant_of_concern: key
            .variant_of_concern
            .map(|v| VariantOfConcern::new(i64::from(v)))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::IntervalNumber;

    #[test]
    fn header_errors_are_specific() {
        assert!(matches!(
            Export::from_bin(b"EK Export"),
            Err(ExportError::Truncated(9))
        ));
        assert!(matches!(
            Export::from_bin(b"EK Export v2    \x08\x01"),
            Err(ExportError::BadHeader)
        ));
        assert!(matches!(
            Export::from_bin(b"EK Export v1    \xff"),
            Err(ExportError::Protobuf(_))
        ));
        assert!(matches!(
            Export::from_bin(EXPORT_HEADER),
            Err(ExportError::Missing("start_timestamp"))
        ));
    }

    #[test]
    fn bad_key_is_named_by_position() {
        let good = key_to_wire(&DiagnosisKey::new(
            Tek([1; 16]),
            IntervalNumber::new(144),
            RollingPeriod::FULL_DAY,
        ));
        let short = proto::TemporaryExposureKey {
            key_data: Some(vec![2; 15]),
            ..good.clone()
        };
        let message = proto::TemporaryExposureKeyExport {
            start_timestamp: Some(0),
            end_timestamp: Some(3600),
            region: Some("DE".into()),
            keys: vec![good.clone(), short],
            revised_keys: vec![good],
            ..Default::default()
        };
        let mut bin = EXPORT_HEADER.to_vec();
        bin.extend(message.encode_to_vec());
        let error = Export::from_bin(&bin).expect_err("15-byte key");
        assert_eq!(
            error.to_string(),
            "export.bin key #1: key_data must be exactly 16 bytes, got 15"
        );
    }
}
