//! `Evidence`: what a server returns from `GET /attestation?nonce=`, with its stapled
//! endorsements, and its versioned JSON transport encoding.
//!
//! The encoding is one JSON object: `{"v":1,"platform":"…", …fields}`, bytes as standard padded
//! base64, no whitespace, fields in a fixed order. [`Evidence::to_json`] is canonical: parsing
//! it and encoding again gives the same text, so server and phone compute the same
//! [`Evidence::digest`]. Parsing refuses unknown versions, platforms and fields, and never
//! panics. The evidence itself is only checked by [`crate::verify`].

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use sha2::{Digest, Sha256};

use crate::{EvidenceError, Platform, b64, binding};

/// The transport encoding's version, the `"v"` field.
pub const WIRE_VERSION: u64 = 1;

/// The largest evidence JSON accepted, in bytes. Real evidence is 5–30 KiB (an SGX quote with
/// its collateral is about 25 KiB in base64).
pub const MAX_EVIDENCE_JSON: usize = 256 * 1024;

/// Evidence from one platform, with what a verifier needs besides the pinned roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// INSECURE: made by the simulated attestor, for development and tests. Anyone can make it;
    /// a verifier accepts it only when its policy sets `allow_simulated`.
    Simulated {
        /// The binding the simulated attestor claims.
        report_data: [u8; 64],
        /// The measurement the simulated attestor claims.
        measurement: [u8; 48],
    },
    /// An SGX DCAP quote (v3) and its collateral.
    Sgx {
        quote: Vec<u8>,
        collateral: IntelCollateral,
    },
    /// A TDX DCAP quote (v4 or v5) and its collateral.
    Tdx {
        quote: Vec<u8>,
        collateral: IntelCollateral,
    },
    /// An SEV-SNP attestation report (1184 bytes) signed by the VCEK, and the VCEK's chain.
    Snp {
        report: Vec<u8>,
        /// The VCEK certificate (DER), as AMD's KDS serves it for this chip and TCB.
        vcek_der: Vec<u8>,
        /// The AMD SEV signing key (ASK) certificate, DER.
        ask_der: Vec<u8>,
        /// The AMD root key (ARK) certificate, DER. It must equal one the policy pins.
        ark_der: Vec<u8>,
    },
    /// An AWS Nitro Enclaves attestation document (COSE_Sign1, CBOR), which carries its chain.
    Nitro { document: Vec<u8> },
}

/// Intel's collateral for one quote (what a PCCS serves): CRLs, TCB info and QE identity with
/// their signing chains. The fields and their meaning are `dcap-qvl`'s `QuoteCollateralV3`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntelCollateral {
    /// PEM chain of the PCK CRL's issuer.
    pub pck_crl_issuer_chain: String,
    /// DER CRL of the Intel SGX Root CA.
    #[serde(with = "b64::vec")]
    pub root_ca_crl: Vec<u8>,
    /// DER CRL of the PCK CA (platform or processor).
    #[serde(with = "b64::vec")]
    pub pck_crl: Vec<u8>,
    /// PEM chain of the TCB info signer.
    pub tcb_info_issuer_chain: String,
    /// The TCB info JSON, exactly as signed.
    pub tcb_info: String,
    /// Raw `r ‖ s` ECDSA P-256 signature over `tcb_info`.
    #[serde(with = "b64::vec")]
    pub tcb_info_signature: Vec<u8>,
    /// PEM chain of the QE identity signer.
    pub qe_identity_issuer_chain: String,
    /// The QE identity JSON, exactly as signed.
    pub qe_identity: String,
    /// Raw `r ‖ s` ECDSA P-256 signature over `qe_identity`.
    #[serde(with = "b64::vec")]
    pub qe_identity_signature: Vec<u8>,
    /// PEM PCK chain, when the quote does not carry it (certification data type 5 does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pck_certificate_chain: Option<String>,
}

/// The JSON `dcap-qvl` and PCCS clients write: the same fields, bytes in hex.
#[derive(Deserialize)]
struct DcapJson {
    pck_crl_issuer_chain: String,
    root_ca_crl: String,
    pck_crl: String,
    tcb_info_issuer_chain: String,
    tcb_info: String,
    tcb_info_signature: String,
    qe_identity_issuer_chain: String,
    qe_identity: String,
    qe_identity_signature: String,
    #[serde(default)]
    pck_certificate_chain: Option<String>,
}

impl IntelCollateral {
    /// Reads collateral in `dcap-qvl`'s JSON form (byte fields in hex), as its collateral client
    /// and the fixtures write it.
    pub fn from_dcap_json(json: &[u8]) -> Result<Self, EvidenceError> {
        let raw: DcapJson =
            serde_json::from_slice(json).map_err(|e| EvidenceError::Collateral(e.to_string()))?;
        let unhex = |field: &str, text: &str| {
            hex::decode(text).map_err(|e| {
                EvidenceError::Collateral(format!("{field} is not hex ({e}); accepted: hex bytes"))
            })
        };
        Ok(IntelCollateral {
            root_ca_crl: unhex("root_ca_crl", &raw.root_ca_crl)?,
            pck_crl: unhex("pck_crl", &raw.pck_crl)?,
            tcb_info_signature: unhex("tcb_info_signature", &raw.tcb_info_signature)?,
            qe_identity_signature: unhex("qe_identity_signature", &raw.qe_identity_signature)?,
            pck_crl_issuer_chain: raw.pck_crl_issuer_chain,
            tcb_info_issuer_chain: raw.tcb_info_issuer_chain,
            tcb_info: raw.tcb_info,
            qe_identity_issuer_chain: raw.qe_identity_issuer_chain,
            qe_identity: raw.qe_identity,
            pck_certificate_chain: raw.pck_certificate_chain,
        })
    }
}

/// The fields of each platform, as they appear in the JSON after `"v"` and `"platform"`.
#[derive(Serialize, Deserialize)]
#[serde(
    remote = "Evidence",
    tag = "platform",
    rename_all = "lowercase",
    deny_unknown_fields
)]
enum EvidenceDef {
    Simulated {
        #[serde(with = "b64::array")]
        report_data: [u8; 64],
        #[serde(with = "b64::array")]
        measurement: [u8; 48],
    },
    Sgx {
        #[serde(with = "b64::vec")]
        quote: Vec<u8>,
        collateral: IntelCollateral,
    },
    Tdx {
        #[serde(with = "b64::vec")]
        quote: Vec<u8>,
        collateral: IntelCollateral,
    },
    Snp {
        #[serde(with = "b64::vec")]
        report: Vec<u8>,
        #[serde(rename = "vcek", with = "b64::vec")]
        vcek_der: Vec<u8>,
        #[serde(rename = "ask", with = "b64::vec")]
        ask_der: Vec<u8>,
        #[serde(rename = "ark", with = "b64::vec")]
        ark_der: Vec<u8>,
    },
    Nitro {
        #[serde(with = "b64::vec")]
        document: Vec<u8>,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    v: u64,
    #[serde(flatten)]
    body: Body<'a>,
}

struct Body<'a>(&'a Evidence);

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EvidenceDef::serialize(self.0, serializer)
    }
}

/// The versioned encoding, so that evidence can sit inside a larger JSON answer.
impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Envelope {
            v: WIRE_VERSION,
            body: Body(self),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Evidence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Evidence::from_value(value).map_err(D::Error::custom)
    }
}

impl Evidence {
    /// INSECURE evidence for development and tests: what the simulated attestor returns for
    /// `public_key` and `nonce`.
    pub fn simulated(public_key: &[u8; 32], nonce: &[u8; 32], measurement: [u8; 48]) -> Self {
        Evidence::Simulated {
            report_data: binding::report_data(public_key, nonce),
            measurement,
        }
    }

    pub fn platform(&self) -> Platform {
        match self {
            Evidence::Simulated { .. } => Platform::Simulated,
            Evidence::Sgx { .. } => Platform::Sgx,
            Evidence::Tdx { .. } => Platform::Tdx,
            Evidence::Snp { .. } => Platform::Snp,
            Evidence::Nitro { .. } => Platform::Nitro,
        }
    }

    /// The canonical JSON encoding.
    pub fn to_json(&self) -> String {
        // Strings, byte strings and a struct: serialising into memory cannot fail.
        serde_json::to_string(self).expect("evidence serialises to JSON")
    }

    /// Parses the JSON encoding (at most [`MAX_EVIDENCE_JSON`] bytes).
    pub fn from_json(json: &[u8]) -> Result<Self, EvidenceError> {
        if json.len() > MAX_EVIDENCE_JSON {
            return Err(EvidenceError::TooLarge {
                len: json.len(),
                max: MAX_EVIDENCE_JSON,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| EvidenceError::NotJson(e.to_string()))?;
        Evidence::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self, EvidenceError> {
        let serde_json::Value::Object(mut fields) = value else {
            return Err(EvidenceError::NotAnObject);
        };
        match fields.remove("v") {
            None => return Err(EvidenceError::MissingVersion),
            Some(v) if v.as_u64() == Some(WIRE_VERSION) => {}
            Some(other) => {
                return Err(EvidenceError::UnsupportedVersion {
                    found: other.to_string(),
                });
            }
        }
        EvidenceDef::deserialize(serde_json::Value::Object(fields))
            .map_err(|e| EvidenceError::Shape(e.to_string()))
    }

    /// SHA-256 of [`Evidence::to_json`]. The phone binds its encrypted requests to it.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_json().as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collateral() -> IntelCollateral {
        IntelCollateral {
            pck_crl_issuer_chain: "pem".into(),
            root_ca_crl: vec![1, 2],
            pck_crl: vec![3],
            tcb_info_issuer_chain: "pem".into(),
            tcb_info: "{\"id\":\"SGX\"}".into(),
            tcb_info_signature: vec![4; 64],
            qe_identity_issuer_chain: "pem".into(),
            qe_identity: "{}".into(),
            qe_identity_signature: vec![5; 64],
            pck_certificate_chain: None,
        }
    }

    fn samples() -> Vec<Evidence> {
        vec![
            Evidence::simulated(&[1; 32], &[2; 32], [3; 48]),
            Evidence::Sgx {
                quote: vec![0; 10],
                collateral: collateral(),
            },
            Evidence::Tdx {
                quote: vec![9; 3],
                collateral: IntelCollateral {
                    pck_certificate_chain: Some("chain".into()),
                    ..collateral()
                },
            },
            Evidence::Snp {
                report: vec![1; 1184],
                vcek_der: vec![2; 5],
                ask_der: vec![3; 5],
                ark_der: vec![4; 5],
            },
            Evidence::Nitro {
                document: vec![0xd2, 0x84],
            },
        ]
    }

    #[test]
    fn round_trips_and_is_canonical() {
        for evidence in samples() {
            let json = evidence.to_json();
            let back = Evidence::from_json(json.as_bytes()).expect("parses");
            assert_eq!(back, evidence);
            assert_eq!(back.to_json(), json);
            assert_eq!(back.digest(), evidence.digest());
        }
    }

    #[test]
    fn starts_with_version_and_platform() {
        let json = Evidence::Nitro {
            document: vec![1, 2, 3],
        }
        .to_json();
        assert_eq!(json, r#"{"v":1,"platform":"nitro","document":"AQID"}"#);
        let snp = samples()[3].to_json();
        assert!(
            snp.starts_with(r#"{"v":1,"platform":"snp","report":""#),
            "{snp}"
        );
        assert!(snp.contains(r#","vcek":"AgICAgI=","ask":"AwMDAwM=","ark":"BAQEBAQ="}"#));
    }

    #[test]
    fn digests_differ_between_evidence() {
        let all = samples();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.digest(), b.digest());
            }
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: [(&[u8], &str); 8] = [
            (b"[1]", "not a JSON object"),
            (b"{\"platform\":\"nitro\",\"document\":\"\"}", "no version"),
            (
                b"{\"v\":2,\"platform\":\"nitro\",\"document\":\"\"}",
                "version 2 is not supported",
            ),
            (
                b"{\"v\":1,\"platform\":\"arm-cca\",\"document\":\"\"}",
                "arm-cca",
            ),
            (
                b"{\"v\":1,\"platform\":\"nitro\",\"document\":\"AQID\",\"x\":1}",
                "unknown field",
            ),
            (
                b"{\"v\":1,\"platform\":\"nitro\",\"document\":\"AQI\"}",
                "standard base64 with padding",
            ),
            (
                b"{\"v\":1,\"platform\":\"simulated\",\"report_data\":\"AQID\",\"measurement\":\"AQID\"}",
                "3 bytes in base64; accepted: exactly",
            ),
            (b"{\"v\":1,", "not JSON"),
        ];
        for (json, needle) in cases {
            let err = Evidence::from_json(json).expect_err("refused");
            assert!(
                err.to_string().contains(needle),
                "{}: {err}",
                String::from_utf8_lossy(json)
            );
        }
        let big = vec![b' '; MAX_EVIDENCE_JSON + 1];
        assert!(matches!(
            Evidence::from_json(&big),
            Err(EvidenceError::TooLarge { .. })
        ));
    }

    #[test]
    fn embeds_in_a_larger_answer() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Answer {
            evidence: Evidence,
            epoch: u32,
        }
        let answer = Answer {
            evidence: samples()[0].clone(),
            epoch: 7,
        };
        let json = serde_json::to_string(&answer).expect("serialises");
        assert!(json.starts_with(r#"{"evidence":{"v":1,"platform":"simulated","#));
        let back: Answer = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, answer);
    }
}
