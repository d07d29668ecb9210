//! The key binding: the 64 bytes of user data that the TEE asks its platform to sign.
//!
//! `SHA-512("confidant/attest/v1\0" ‖ x25519_public_key ‖ nonce)`. The label keeps these bytes
//! from meaning anything in another protocol; the nonce is the phone's challenge (or the key
//! epoch's nonce, when evidence is cached per epoch).

use sha2::{Digest, Sha512};

/// The domain-separation label, with its terminating NUL.
pub const LABEL: &[u8; 20] = b"confidant/attest/v1\0";

/// `SHA-512(LABEL ‖ public_key ‖ nonce)`.
pub fn report_data(public_key: &[u8; 32], nonce: &[u8; 32]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(LABEL);
    hasher.update(public_key);
    hasher.update(nonce);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_sha512_of_label_key_and_nonce() {
        let key = [7u8; 32];
        let nonce = [9u8; 32];
        let mut input = Vec::new();
        input.extend_from_slice(b"confidant/attest/v1\0");
        input.extend_from_slice(&key);
        input.extend_from_slice(&nonce);
        let expected: [u8; 64] = Sha512::digest(&input).into();
        assert_eq!(report_data(&key, &nonce), expected);
        assert_eq!(LABEL.len(), 20);
    }

    #[test]
    fn key_and_nonce_are_not_interchangeable() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_ne!(report_data(&a, &b), report_data(&b, &a));
        assert_ne!(report_data(&a, &b), report_data(&a, &a));
    }
}
