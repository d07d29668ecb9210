//! AWS Nitro Enclaves: an attestation document is a COSE_Sign1 (RFC 9052) signed with ES384 by
//! a leaf certificate that lives about three hours, whose chain (`cabundle`, root first) starts
//! at the AWS Nitro Enclaves root G1.
//!
//! Checked: the COSE structure and its protected `alg` (ES384 only), the payload's fields,
//! `cabundle[0]` byte-equal to the pinned root, the document's signature with the leaf key,
//! each certificate's issuer name, CA flag, ECDSA P-384/SHA-384 signature and validity at the
//! document's own `timestamp`, then debug (PCR0..2 all zero) and PCR0..2. The document's
//! age against `now` is checked by the caller. The report data is `user_data` (empty when
//! absent); `public_key` and `nonce` are parsed but not used.

use ciborium::value::{Integer, Value};
use p384::ecdsa::signature::Verifier as _;
use p384::ecdsa::{Signature, VerifyingKey};
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::ext::pkix::BasicConstraints;

use crate::{AttestError, Checked, Measurements, NitroPcrs, Platform, Policy, Tcb, x509};

const PLATFORM: Platform = Platform::Nitro;
const COSE_SIGN1_TAG: u64 = 18;
/// COSE header label `alg`, and its value for ECDSA with SHA-384 (RFC 9053).
const HEADER_ALG: i128 = 1;
const ALG_ES384: i128 = -35;
/// CBOR nesting accepted; a document is four levels deep.
const RECURSION_LIMIT: usize = 16;
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

fn malformed(reason: impl Into<String>) -> AttestError {
    AttestError::Malformed {
        platform: PLATFORM,
        reason: reason.into(),
    }
}

/// The payload of an attestation document.
struct Document {
    module_id: String,
    timestamp_ms: u64,
    pcrs: [[u8; 48]; 3],
    certificate: Vec<u8>,
    cabundle: Vec<Vec<u8>>,
    user_data: Option<Vec<u8>>,
}

pub(crate) fn verify(document: &[u8], policy: &Policy) -> Result<Checked, AttestError> {
    let CoseSign1 {
        protected,
        payload,
        signature,
    } = parse_cose_sign1(document)?;
    let doc = parse_payload(&payload)?;
    let at = doc.timestamp_ms / 1000;

    // The pinned root, then the document's signature before the chain: it covers every byte
    // of the payload, certificates included, so a tampered document costs one verification.
    if doc.cabundle[0] != policy.roots.aws_nitro_root {
        return Err(AttestError::UntrustedRoot {
            platform: PLATFORM,
            what: "cabundle[0]".to_owned(),
            accepted: "the AWS Nitro Enclaves root the policy pins".to_owned(),
        });
    }
    let leaf = x509::parse(PLATFORM, "the leaf certificate", &doc.certificate)?;
    let key = VerifyingKey::from_sec1_bytes(
        leaf.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|_| malformed("the leaf certificate's key is not a P-384 public key"))?;
    let bad = || AttestError::BadSignature {
        platform: PLATFORM,
        what: "the attestation document (COSE_Sign1, ES384, by the leaf certificate)".to_owned(),
    };
    let signature = Signature::from_slice(&signature).map_err(|_| bad())?;
    key.verify(&sig_structure(&protected, &payload), &signature)
        .map_err(|_| bad())?;
    check_chain(&doc, at)?;

    let debug = doc.pcrs.iter().all(|pcr| pcr.iter().all(|b| *b == 0));
    if debug && !policy.allow_debug {
        return Err(AttestError::DebugRefused { platform: PLATFORM });
    }
    let [pcr0, pcr1, pcr2] = doc.pcrs;
    let found = NitroPcrs { pcr0, pcr1, pcr2 };
    if !policy.nitro.contains(&found) {
        return Err(AttestError::MeasurementRefused {
            platform: PLATFORM,
            found: format!(
                "PCR0 {} PCR1 {} PCR2 {}",
                hex::encode(pcr0),
                hex::encode(pcr1),
                hex::encode(pcr2)
            ),
            accepted: policy.nitro.len(),
        });
    }
    Ok(Checked {
        measurements: Measurements::Nitro {
            pcrs: doc.pcrs,
            module_id: doc.module_id,
        },
        report_data: doc.user_data.unwrap_or_default(),
        debug,
        tcb: Tcb::NotApplicable,
        produced_at: Some(at),
    })
}

fn decode(bytes: &[u8], what: &str) -> Result<Value, AttestError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, RECURSION_LIMIT)
        .map_err(|e| malformed(format!("{what} is not CBOR ({e})")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes follow {what}; accepted: one CBOR item",
            rest.len()
        )));
    }
    Ok(value)
}

/// The signed parts of a COSE_Sign1.
struct CoseSign1 {
    /// The protected header, as its serialised bytes (they are signed as they are).
    protected: Vec<u8>,
    payload: Vec<u8>,
    /// Raw `r ‖ s`.
    signature: Vec<u8>,
}

fn parse_cose_sign1(document: &[u8]) -> Result<CoseSign1, AttestError> {
    let shape = "the document is not a COSE_Sign1 [protected, unprotected, payload, signature]";
    let value = match decode(document, "the document")? {
        Value::Tag(COSE_SIGN1_TAG, inner) => *inner,
        Value::Tag(tag, _) => {
            return Err(malformed(format!(
                "CBOR tag {tag}; accepted: 18 (COSE_Sign1) or none"
            )));
        }
        other => other,
    };
    let Value::Array(items) = value else {
        return Err(malformed(shape));
    };
    let Ok::<[Value; 4], _>([protected, unprotected, payload, signature]) = items.try_into() else {
        return Err(malformed(shape));
    };
    let (Value::Bytes(protected), Value::Map(_), Value::Bytes(payload), Value::Bytes(signature)) =
        (protected, unprotected, payload, signature)
    else {
        return Err(malformed(shape));
    };
    let Value::Map(header) = decode(&protected, "the protected header")? else {
        return Err(malformed("the protected header is not a CBOR map"));
    };
    let alg = header.iter().find_map(|(k, v)| match (k, v) {
        (Value::Integer(k), Value::Integer(v)) if i128::from(*k) == HEADER_ALG => {
            Some(i128::from(*v))
        }
        _ => None,
    });
    if alg != Some(ALG_ES384) {
        return Err(malformed(format!(
            "protected alg {alg:?}; accepted: -35 (ES384)"
        )));
    }
    Ok(CoseSign1 {
        protected,
        payload,
        signature,
    })
}

/// `Sig_structure = ["Signature1", protected, external_aad = h'', payload]`, CBOR-encoded.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let structure = Value::Array(vec![
        Value::Text("Signature1".to_owned()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]);
    let mut out = Vec::with_capacity(payload.len() + 32);
    // Writing definite-length CBOR into a Vec cannot fail.
    ciborium::ser::into_writer(&structure, &mut out).expect("CBOR into memory");
    out
}

fn parse_payload(payload: &[u8]) -> Result<Document, AttestError> {
    let Value::Map(entries) = decode(payload, "the payload")? else {
        return Err(malformed("the payload is not a CBOR map"));
    };
    let get = |name: &str| -> Result<Option<&Value>, AttestError> {
        let found: Vec<&Value> = entries
            .iter()
            .filter(|(k, _)| matches!(k, Value::Text(k) if k == name))
            .map(|(_, v)| v)
            .collect();
        match found.as_slice() {
            [] => Ok(None),
            [value] => Ok(Some(*value)),
            _ => Err(malformed(format!(
                "the payload has `{name}` more than once"
            ))),
        }
    };
    let required =
        |name: &str| get(name)?.ok_or_else(|| malformed(format!("the payload has no `{name}`")));
    let bytes = |name: &str, value: &Value| match value {
        Value::Bytes(b) => Ok(b.clone()),
        _ => Err(malformed(format!("`{name}` is not a byte string"))),
    };
    let optional_bytes = |name: &str| match get(name)? {
        None | Some(Value::Null) => Ok(None),
        Some(value) => bytes(name, value).map(Some),
    };

    let module_id = match required("module_id")? {
        Value::Text(id) if !id.is_empty() => id.clone(),
        _ => return Err(malformed("`module_id` is not a non-empty text string")),
    };
    match required("digest")? {
        Value::Text(digest) if digest == "SHA384" => {}
        _ => return Err(malformed("`digest` is not \"SHA384\"; accepted: SHA384")),
    }
    let timestamp_ms = match required("timestamp")? {
        Value::Integer(ms) => u64::try_from(*ms)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| malformed("`timestamp` is not a positive integer (milliseconds)"))?,
        _ => return Err(malformed("`timestamp` is not an integer")),
    };
    let Value::Map(pcr_entries) = required("pcrs")? else {
        return Err(malformed("`pcrs` is not a map"));
    };
    let pcr = |index: u8| -> Result<[u8; 48], AttestError> {
        let mut values = pcr_entries
            .iter()
            .filter(|(k, _)| matches!(k, Value::Integer(k) if *k == Integer::from(index)));
        let (Some((_, Value::Bytes(value))), None) = (values.next(), values.next()) else {
            return Err(malformed(format!(
                "`pcrs` has no single byte-string PCR{index}"
            )));
        };
        value.as_slice().try_into().map_err(|_| {
            malformed(format!(
                "PCR{index} is {} bytes; accepted: 48 (SHA-384)",
                value.len()
            ))
        })
    };
    let pcrs = [pcr(0)?, pcr(1)?, pcr(2)?];
    let certificate = bytes("certificate", required("certificate")?)?;
    let Value::Array(bundle) = required("cabundle")? else {
        return Err(malformed("`cabundle` is not an array"));
    };
    let cabundle = bundle
        .iter()
        .map(|cert| bytes("cabundle", cert))
        .collect::<Result<Vec<_>, _>>()?;
    if cabundle.is_empty() {
        return Err(malformed("`cabundle` is empty; accepted: the root first"));
    }
    optional_bytes("public_key")?;
    optional_bytes("nonce")?;
    Ok(Document {
        module_id,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        user_data: optional_bytes("user_data")?,
    })
}

/// Checks the chain from the (pinned) root to the leaf.
fn check_chain(doc: &Document, at: u64) -> Result<(), AttestError> {
    let ders: Vec<&[u8]> = doc
        .cabundle
        .iter()
        .chain(std::iter::once(&doc.certificate))
        .map(Vec::as_slice)
        .collect();
    let names: Vec<String> = (0..ders.len())
        .map(|i| {
            if i + 1 == ders.len() {
                "the leaf certificate".to_owned()
            } else {
                format!("cabundle[{i}]")
            }
        })
        .collect();
    let certs = ders
        .iter()
        .zip(&names)
        .map(|(der, name)| x509::parse(PLATFORM, name, der))
        .collect::<Result<Vec<_>, _>>()?;

    for i in 0..certs.len() {
        x509::check_valid_at(PLATFORM, &names[i], &certs[i], at)?;
        if i + 1 < certs.len() && !is_ca(&certs[i]) {
            return Err(malformed(format!(
                "{} issues a certificate but is not a CA (basicConstraints cA)",
                names[i]
            )));
        }
        if i > 0 {
            check_issued_by(&certs[i], ders[i], &names[i], &certs[i - 1])?;
        }
    }
    Ok(())
}

fn is_ca(cert: &Certificate) -> bool {
    x509::extension(cert, &BASIC_CONSTRAINTS)
        .and_then(|value| BasicConstraints::from_der(value).ok())
        .is_some_and(|constraints| constraints.ca)
}

fn check_issued_by(
    cert: &Certificate,
    der: &[u8],
    name: &str,
    issuer: &Certificate,
) -> Result<(), AttestError> {
    let bad = |why: &str| AttestError::BadSignature {
        platform: PLATFORM,
        what: format!("{name} ({why})"),
    };
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(bad("its issuer is not the previous certificate's subject"));
    }
    if cert.signature_algorithm.oid != ECDSA_WITH_SHA384
        || cert.tbs_certificate.signature.oid != ECDSA_WITH_SHA384
    {
        return Err(bad("not ecdsa-with-SHA384; accepted: ecdsa-with-SHA384"));
    }
    let key = VerifyingKey::from_sec1_bytes(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|_| bad("its issuer's key is not a P-384 key"))?;
    let signature = Signature::from_der(cert.signature.raw_bytes())
        .map_err(|_| bad("the signature is not a DER ECDSA signature"))?;
    let tbs = x509::tbs_bytes(der).ok_or_else(|| bad("no tbsCertificate"))?;
    key.verify(tbs, &signature)
        .map_err(|_| bad("ECDSA P-384 by the previous certificate"))
}
