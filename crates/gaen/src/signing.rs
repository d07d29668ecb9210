//! ECDSA P-256 / SHA-256 signing keys for export files, in PEM.
//!
//! Private keys load from PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) PEM, public keys
//! from SubjectPublicKeyInfo (`PUBLIC KEY`) PEM. Signatures are ASN.1 DER, as phones expect.
//! Signing is deterministic (RFC 6979): the same key and bytes give the same signature.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::CryptoRngCore;

use crate::export::{ExportError, SignatureInfo};

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "not a P-256 private key in PEM (accepted: PKCS#8 \"PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\")"
    )]
    PrivateKeyPem,
    #[error("not a P-256 public key in PEM (accepted: SubjectPublicKeyInfo \"PUBLIC KEY\")")]
    PublicKeyPem,
    #[error("an export needs at least one signing key")]
    NoSigners,
    #[error("an export carries at most 10 signature infos, got {0}")]
    TooManySigners(usize),
    #[error("export.sig holds no signature")]
    NoSignatures,
    #[error("none of the {0} signature(s) in export.sig verifies with this public key")]
    Mismatch(usize),
    #[error(transparent)]
    Malformed(#[from] ExportError),
}

/// A P-256 private key that signs export files.
#[derive(Clone)]
pub struct SigningKey(p256::ecdsa::SigningKey);

/// A P-256 public key that phones (and `confidant export verify`) check signatures with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey(p256::ecdsa::VerifyingKey);

/// A signing key with the signature info that announces it in export files.
#[derive(Clone)]
pub struct Signer {
    pub key: SigningKey,
    pub info: SignatureInfo,
}

impl SigningKey {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(p256::ecdsa::SigningKey::random(rng))
    }

    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        let pem = normalize_pem(pem);
        p256::SecretKey::from_pkcs8_pem(&pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
            .map(|secret| Self(secret.into()))
            .map_err(|_| SignatureError::PrivateKeyPem)
    }

    /// PKCS#8 PEM, the format `from_pem` reads back.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a valid P-256 key always encodes")
            .to_string()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(*self.0.verifying_key())
    }

    /// DER-encoded ECDSA signature over SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: p256::ecdsa::Signature = self.0.sign(message);
        signature.to_der().as_bytes().to_vec()
    }
}

impl VerifyingKey {
    pub fn from_pem(pem: &str) -> Result<Self, SignatureError> {
        p256::ecdsa::VerifyingKey::from_public_key_pem(&normalize_pem(pem))
            .map(Self)
            .map_err(|_| SignatureError::PublicKeyPem)
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a valid P-256 key always encodes")
    }

    /// True when `der` is a valid signature of `message` by this key.
    pub fn verify(&self, message: &[u8], der: &[u8]) -> bool {
        p256::ecdsa::Signature::from_der(der)
            .is_ok_and(|signature| self.0.verify(message, &signature).is_ok())
    }
}

/// Re-wraps the base64 body at 64 columns with LF endings: real keys (Corona-Warn-App's, for
/// one) come on a single line or with CRLF, which strict RFC 7468 parsing refuses.
fn normalize_pem(pem: &str) -> String {
    let mut out = String::with_capacity(pem.len() + 8);
    let mut body = String::new();
    for line in pem.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("-----") {
            for chunk in body.as_bytes().chunks(64) {
                out.push_str(std::str::from_utf8(chunk).expect("ASCII base64"));
                out.push('\n');
            }
            body.clear();
            out.push_str(line);
            out.push('\n');
        } else if line.is_ascii() && !line.contains(':') {
            body.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn pem_round_trip_and_sec1() {
        let key = SigningKey::generate(&mut OsRng);
        let again = SigningKey::from_pem(&key.to_pem()).expect("pkcs8");
        assert_eq!(again.verifying_key(), key.verifying_key());

        let sec1 = p256::SecretKey::from(key.0.clone())
            .to_sec1_pem(LineEnding::LF)
            .expect("sec1");
        let from_sec1 = SigningKey::from_pem(&sec1).expect("sec1 pem");
        assert_eq!(from_sec1.verifying_key(), key.verifying_key());

        let public = VerifyingKey::from_pem(&key.verifying_key().to_pem()).expect("spki");
        let signature = key.sign(b"export");
        assert!(public.verify(b"export", &signature));
        assert!(!public.verify(b"exporT", &signature));
        assert!(!public.verify(b"export", &signature[1..]));
    }

    #[test]
    fn single_line_and_crlf_pem_are_accepted() {
        let key = SigningKey::generate(&mut OsRng);
        let pem = key.verifying_key().to_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let one_line = format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n");
        assert_eq!(
            VerifyingKey::from_pem(&one_line).expect("one line"),
            key.verifying_key()
        );
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(
            VerifyingKey::from_pem(&crlf).expect("crlf"),
            key.verifying_key()
        );
    }

    #[test]
    fn wrong_pem_kinds_are_refused() {
        let key = SigningKey::generate(&mut OsRng);
        assert!(matches!(
            SigningKey::from_pem(&key.verifying_key().to_pem()),
            Err(SignatureError::PrivateKeyPem)
        ));
        assert!(matches!(
            VerifyingKey::from_pem(&key.to_pem()),
            Err(SignatureError::PublicKeyPem)
        ));
        assert!(
            VerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
    }
}
