//! The few X.509 checks SEV-SNP and Nitro need beyond their vendor crates: parsing, the raw
//! to-be-signed bytes, validity dates and extensions. No path building: each platform's chain
//! has a fixed shape.

use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::ObjectIdentifier;

use crate::{AttestError, Platform};

pub(crate) fn parse(
    platform: Platform,
    what: &str,
    der: &[u8],
) -> Result<Certificate, AttestError> {
    Certificate::from_der(der).map_err(|e| AttestError::Malformed {
        platform,
        reason: format!("{what} is not a DER X.509 certificate ({e})"),
    })
}

/// `(notBefore, notAfter)` in unix seconds.
pub(crate) fn validity(cert: &Certificate) -> (u64, u64) {
    let validity = &cert.tbs_certificate.validity;
    (
        validity.not_before.to_unix_duration().as_secs(),
        validity.not_after.to_unix_duration().as_secs(),
    )
}

/// Refuses `cert` unless `at` lies in its validity period (both ends included, as RFC 5280
/// says).
pub(crate) fn check_valid_at(
    platform: Platform,
    what: &str,
    cert: &Certificate,
    at: u64,
) -> Result<(), AttestError> {
    let (not_before, not_after) = validity(cert);
    if at < not_before || at > not_after {
        return Err(AttestError::CertificateNotValid {
            platform,
            certificate: what.to_owned(),
            at,
            not_before,
            not_after,
        });
    }
    Ok(())
}

/// The value (content of extnValue) of the extension `oid`, if present.
pub(crate) fn extension<'a>(cert: &'a Certificate, oid: &ObjectIdentifier) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|ext| ext.extn_id == *oid)
        .map(|ext| ext.extn_value.as_bytes())
}

/// The DER header of the element at the start of `input`: `(header length, content length)`.
#[cfg(feature = "nitro")]
fn tlv(input: &[u8]) -> Option<(usize, usize)> {
    let first = *input.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = input
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |len, b| (len << 8) | usize::from(*b));
    Some((2 + n, len))
}

/// The exact bytes of `tbsCertificate` inside a DER certificate: what its issuer signed.
#[cfg(feature = "nitro")]
pub(crate) fn tbs_bytes(cert_der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    if *cert_der.first()? != SEQUENCE {
        return None;
    }
    let (header, len) = tlv(cert_der)?;
    let content = cert_der.get(header..header.checked_add(len)?)?;
    if *content.first()? != SEQUENCE {
        return None;
    }
    let (header, len) = tlv(content)?;
    content.get(..header.checked_add(len)?)
}

#[cfg(all(test, feature = "nitro"))]
mod tests {
    use super::*;
    use x509_cert::der::Encode as _;

    #[test]
    fn tbs_bytes_are_the_encoded_tbs_certificate() {
        let der = crate::Roots::default().aws_nitro_root;
        let cert = parse(Platform::Nitro, "root", &der).expect("parses");
        let encoded = cert.tbs_certificate.to_der().expect("encodes");
        assert_eq!(tbs_bytes(&der), Some(&encoded[..]));
        for ark in crate::Roots::default().amd_arks {
            let cert = parse(Platform::Snp, "ark", &ark).expect("parses");
            let encoded = cert.tbs_certificate.to_der().expect("encodes");
            assert_eq!(tbs_bytes(&ark), Some(&encoded[..]));
        }
    }

    #[test]
    fn tbs_bytes_of_garbage_is_none() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x05, 0x30],
        ] {
            assert_eq!(tbs_bytes(input), None);
        }
    }
}
