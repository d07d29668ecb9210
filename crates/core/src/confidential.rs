//! The confidential matcher's wire protocol: contact tuples, the requests a phone sends and
//! the answers it gets, and the sealed channel that carries them to the attested key.
//!
//! A phone verifies the matcher's evidence first (`confidant-attest`), then opens a NaCl box
//! (X25519, XSalsa20-Poly1305) from a fresh ephemeral key to the attested public key. The
//! plaintext starts with the SHA-256 of the evidence it verified, so the matcher refuses a
//! request meant for other evidence (a key that was replaced, or a replayed request to a
//! restarted matcher). Answers have one fixed size, whatever they say. Only the matcher and
//! the phone can read either; the main server forwards bytes.
//!
//! Deliberately absent: any notion of identity. A tuple holds two random rotating ids the
//! phones broadcast, a UTC day and a duration bucket, nothing else.

use crypto_box::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use rand_core::CryptoRngCore;

use crate::encounter::DurationBucket;

/// The test id a phone hands the lab at test time (as a QR code, say): a hash of the secret
/// the phone keeps and later polls its result with, so the lab's id alone cannot poll.
pub fn test_id(secret: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::new()
        .chain_update(b"confidant/test-id/v1\0")
        .chain_update(secret)
        .finalize()
        .into()
}

/// A rotating id a phone broadcasts (random, from the SDK).
pub const ID_LEN: usize = 16;
/// Bytes of one encoded tuple: own id, peer id, day (u32 LE), duration bucket.
pub const TUPLE_LEN: usize = ID_LEN * 2 + 4 + 1;
/// Most tuples in one request: 14 days of a busy phone's encounters.
pub const MAX_TUPLES: usize = 20_000;
/// Bytes of every answer's plaintext.
pub const ANSWER_LEN: usize = 64;
const REQUEST_MAGIC: &[u8; 4] = b"CMQ1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Evidence digest, kind, count.
const REQUEST_HEADER_LEN: usize = REQUEST_MAGIC.len() + 32 + 1 + 4;

/// One encounter as a phone logged it: its own rotating id at the time, the peer's, the UTC
/// day and how long it lasted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactTuple {
    pub own: [u8; ID_LEN],
    pub peer: [u8; ID_LEN],
    pub day: u32,
    pub duration: DurationBucket,
}

impl ContactTuple {
    /// What the other phone of the same encounter logged (ids swapped): a poll tuple matches
    /// an uploaded one when it is the upload's mirror.
    pub fn mirror_key(&self) -> [u8; 2 * ID_LEN] {
        let mut key = [0u8; 2 * ID_LEN];
        key[..ID_LEN].copy_from_slice(&self.peer);
        key[ID_LEN..].copy_from_slice(&self.own);
        key
    }

    /// The key an uploaded tuple is found under: own id, then peer id.
    pub fn key(&self) -> [u8; 2 * ID_LEN] {
        let mut key = [0u8; 2 * ID_LEN];
        key[..ID_LEN].copy_from_slice(&self.own);
        key[ID_LEN..].copy_from_slice(&self.peer);
        key
    }
}

/// What a phone asks the matcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A positive user's contact log, for sealed storage.
    Upload(Vec<ContactTuple>),
    /// A phone's own contact log: was any of these encounters with a positive user?
    Poll(Vec<ContactTuple>),
}

impl Request {
    fn kind(&self) -> u8 {
        match self {
            Request::Upload(_) => 1,
            Request::Poll(_) => 2,
        }
    }

    pub fn tuples(&self) -> &[ContactTuple] {
        match self {
            Request::Upload(tuples) | Request::Poll(tuples) => tuples,
        }
    }
}

/// What the matcher answers; always [`ANSWER_LEN`] bytes before sealing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// For a poll: exposed on `day` (the latest matching day), or not.
    Exposure { day: Option<u32> },
    /// For an upload: how many tuples were stored.
    Stored { tuples: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a sealed request is at least {min} bytes, got {got}")]
    TooShort { min: usize, got: usize },
    #[error("the request does not open with the matcher's key (wrong key, or altered)")]
    Unsealed,
    #[error("not a matcher request (bad magic)")]
    BadMagic,
    #[error("unknown request kind {0}; accepted: 1 (upload), 2 (poll)")]
    UnknownKind(u8),
    #[error("the request holds {got} tuples; accepted: 1 to {MAX_TUPLES}")]
    TupleCount { got: usize },
    #[error("the request says {count} tuples but carries {bytes} bytes of them")]
    Length { count: usize, bytes: usize },
    #[error("tuple #{index}: duration bucket {code} is not 0 to 3")]
    Duration { index: usize, code: u8 },
    #[error("the answer is not {ANSWER_LEN} bytes of a known kind")]
    BadAnswer,
}

/// Tuples as [`TUPLE_LEN`] bytes each, appended to `out` (requests and the matcher's sealed
/// storage use the same encoding).
pub fn encode_tuples(tuples: &[ContactTuple], out: &mut Vec<u8>) {
    out.reserve(tuples.len() * TUPLE_LEN);
    for tuple in tuples {
        out.extend_from_slice(&tuple.own);
        out.extend_from_slice(&tuple.peer);
        out.extend_from_slice(&tuple.day.to_le_bytes());
        out.push(tuple.duration.code());
    }
}

/// Exactly `count` tuples from `body`. Never panics.
pub fn decode_tuples(body: &[u8], count: usize) -> Result<Vec<ContactTuple>, ProtocolError> {
    if body.len() != count.saturating_mul(TUPLE_LEN) {
        return Err(ProtocolError::Length {
            count,
            bytes: body.len(),
        });
    }
    body.chunks_exact(TUPLE_LEN)
        .enumerate()
        .map(|(index, t)| {
            let code = t[TUPLE_LEN - 1];
            Ok(ContactTuple {
                own: t[..ID_LEN].try_into().expect("id"),
                peer: t[ID_LEN..2 * ID_LEN].try_into().expect("id"),
                day: u32::from_le_bytes(t[2 * ID_LEN..2 * ID_LEN + 4].try_into().expect("day")),
                duration: DurationBucket::from_code(code)
                    .ok_or(ProtocolError::Duration { index, code })?,
            })
        })
        .collect()
}

fn encode_request(evidence_digest: &[u8; 32], request: &Request) -> Vec<u8> {
    let tuples = request.tuples();
    let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + tuples.len() * TUPLE_LEN);
    out.extend_from_slice(REQUEST_MAGIC);
    out.extend_from_slice(evidence_digest);
    out.push(request.kind());
    out.extend_from_slice(&(tuples.len() as u32).to_le_bytes());
    encode_tuples(tuples, &mut out);
    out
}

/// The evidence digest and request of a plaintext. Never panics.
fn decode_request(plain: &[u8]) -> Result<([u8; 32], Request), ProtocolError> {
    if plain.len() < REQUEST_HEADER_LEN {
        return Err(ProtocolError::TooShort {
            min: REQUEST_HEADER_LEN,
            got: plain.len(),
        });
    }
    if &plain[..4] != REQUEST_MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let digest: [u8; 32] = plain[4..36].try_into().expect("32 bytes");
    let kind = plain[36];
    let count = u32::from_le_bytes(plain[37..41].try_into().expect("4 bytes")) as usize;
    if !(1..=MAX_TUPLES).contains(&count) {
        return Err(ProtocolError::TupleCount { got: count });
    }
    let tuples = decode_tuples(&plain[REQUEST_HEADER_LEN..], count)?;
    let request = match kind {
        1 => Request::Upload(tuples),
        2 => Request::Poll(tuples),
        other => return Err(ProtocolError::UnknownKind(other)),
    };
    Ok((digest, request))
}

fn encode_answer(answer: &Answer) -> [u8; ANSWER_LEN] {
    let mut out = [0u8; ANSWER_LEN];
    match answer {
        Answer::Exposure { day } => {
            out[0] = 1;
            if let Some(day) = day {
                out[1] = 1;
                out[2..6].copy_from_slice(&day.to_le_bytes());
            }
        }
        Answer::Stored { tuples } => {
            out[0] = 2;
            out[2..6].copy_from_slice(&tuples.to_le_bytes());
        }
    }
    out
}

fn decode_answer(plain: &[u8]) -> Result<Answer, ProtocolError> {
    if plain.len() != ANSWER_LEN || plain[6..].iter().any(|b| *b != 0) {
        return Err(ProtocolError::BadAnswer);
    }
    let value = u32::from_le_bytes(plain[2..6].try_into().expect("4 bytes"));
    match (plain[0], plain[1]) {
        (1, 0) if value == 0 => Ok(Answer::Exposure { day: None }),
        (1, 1) => Ok(Answer::Exposure { day: Some(value) }),
        (2, 0) => Ok(Answer::Stored { tuples: value }),
        _ => Err(ProtocolError::BadAnswer),
    }
}

/// The phone's end of one exchange: it reads the answer.
pub struct PhoneChannel {
    shared: SalsaBox,
}

/// The matcher's end of one exchange: it seals the answer.
pub struct MatcherChannel {
    shared: SalsaBox,
}

/// Seals `request` to the attested `matcher_public` key, bound to the evidence the phone
/// verified. Returns the bytes to send and the channel that opens the answer.
pub fn seal_request(
    matcher_public: &[u8; 32],
    evidence_digest: &[u8; 32],
    request: &Request,
    rng: &mut impl CryptoRngCore,
) -> (Vec<u8>, PhoneChannel) {
    let ephemeral = SecretKey::generate(&mut *rng);
    let shared = SalsaBox::new(&PublicKey::from(*matcher_public), &ephemeral);
    let nonce = SalsaBox::generate_nonce(&mut *rng);
    let sealed = shared
        .encrypt(&nonce, encode_request(evidence_digest, request).as_slice())
        .expect("XSalsa20-Poly1305 seals any length");
    let mut out = Vec::with_capacity(32 + NONCE_LEN + sealed.len());
    out.extend_from_slice(ephemeral.public_key().as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    (out, PhoneChannel { shared })
}

/// A request the matcher opened.
pub struct Opened {
    /// The evidence the phone sealed it for: the matcher checks it issued that evidence.
    pub evidence_digest: [u8; 32],
    pub request: Request,
    pub channel: MatcherChannel,
}

/// Opens a sealed request with the matcher's secret. Never panics on any input.
pub fn open_request(matcher_secret: &[u8; 32], wire: &[u8]) -> Result<Opened, ProtocolError> {
    let min = 32 + NONCE_LEN + TAG_LEN + REQUEST_HEADER_LEN;
    if wire.len() < min {
        return Err(ProtocolError::TooShort {
            min,
            got: wire.len(),
        });
    }
    let ephemeral: [u8; 32] = wire[..32].try_into().expect("32 bytes");
    let shared = SalsaBox::new(
        &PublicKey::from(ephemeral),
        &SecretKey::from(*matcher_secret),
    );
    let nonce = crypto_box::Nonce::from_slice(&wire[32..32 + NONCE_LEN]);
    let plain = shared
        .decrypt(nonce, &wire[32 + NONCE_LEN..])
        .map_err(|_| ProtocolError::Unsealed)?;
    let (evidence_digest, request) = decode_request(&plain)?;
    Ok(Opened {
        evidence_digest,
        request,
        channel: MatcherChannel { shared },
    })
}

impl MatcherChannel {
    /// The answer, sealed: always `24 + 64 + 16` bytes.
    pub fn seal_answer(&self, answer: &Answer, rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let nonce = SalsaBox::generate_nonce(rng);
        let sealed = self
            .shared
            .encrypt(&nonce, encode_answer(answer).as_slice())
            .expect("XSalsa20-Poly1305 seals any length");
        let mut out = Vec::with_capacity(SEALED_ANSWER_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }
}

/// Bytes of every sealed answer on the wire.
pub const SEALED_ANSWER_LEN: usize = NONCE_LEN + ANSWER_LEN + TAG_LEN;

impl PhoneChannel {
    pub fn open_answer(&self, wire: &[u8]) -> Result<Answer, ProtocolError> {
        if wire.len() != SEALED_ANSWER_LEN {
            return Err(ProtocolError::BadAnswer);
        }
        let nonce = crypto_box::Nonce::from_slice(&wire[..NONCE_LEN]);
        let plain = self
            .shared
            .decrypt(nonce, &wire[NONCE_LEN..])
            .map_err(|_| ProtocolError::Unsealed)?;
        decode_answer(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn tuple(own: u8, peer: u8, day: u32) -> ContactTuple {
        ContactTuple {
            own: [own; ID_LEN],
            peer: [peer; ID_LEN],
            day,
            duration: DurationBucket::Min10To15,
        }
    }

    fn keys() -> ([u8; 32], [u8; 32]) {
        let secret = SecretKey::generate(&mut OsRng);
        (secret.to_bytes(), *secret.public_key().as_bytes())
    }

    #[test]
    fn a_request_opens_only_with_the_key_it_was_sealed_to_and_names_its_evidence() {
        let (secret, public) = keys();
        let evidence = [7u8; 32];
        let request = Request::Poll(vec![tuple(1, 2, 20_000), tuple(3, 4, 20_001)]);
        let (wire, phone) = seal_request(&public, &evidence, &request, &mut OsRng);
        let opened = open_request(&secret, &wire).expect("opens");
        assert_eq!(
            (opened.evidence_digest, &opened.request),
            (evidence, &request)
        );
        let matcher = opened.channel;
        for answer in [
            Answer::Exposure { day: None },
            Answer::Exposure { day: Some(20_001) },
            Answer::Stored { tuples: 2 },
        ] {
            let sealed = matcher.seal_answer(&answer, &mut OsRng);
            assert_eq!(sealed.len(), SEALED_ANSWER_LEN);
            assert_eq!(phone.open_answer(&sealed), Ok(answer));
        }
        let (other, _) = keys();
        assert_eq!(
            open_request(&other, &wire).err(),
            Some(ProtocolError::Unsealed)
        );
        let mut flipped = wire.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            open_request(&secret, &flipped).err(),
            Some(ProtocolError::Unsealed)
        );
        for cut in 0..wire.len() {
            assert!(open_request(&secret, &wire[..cut]).is_err());
        }
    }

    #[test]
    fn mirrored_tuples_share_a_key() {
        let uploaded = tuple(1, 2, 5);
        let polled = tuple(2, 1, 5);
        assert_eq!(polled.mirror_key(), uploaded.key());
        assert_ne!(uploaded.mirror_key(), uploaded.key());
    }

    #[test]
    fn malformed_plaintexts_are_refused_with_their_reason() {
        let digest = [0u8; 32];
        let good = encode_request(&digest, &Request::Upload(vec![tuple(1, 2, 3)]));
        assert!(decode_request(&good).is_ok());
        let mut bad_kind = good.clone();
        bad_kind[36] = 9;
        assert_eq!(
            decode_request(&bad_kind).err(),
            Some(ProtocolError::UnknownKind(9))
        );
        let mut bad_bucket = good.clone();
        let last = bad_bucket.len() - 1;
        bad_bucket[last] = 4;
        assert_eq!(
            decode_request(&bad_bucket).err(),
            Some(ProtocolError::Duration { index: 0, code: 4 })
        );
        let mut huge = good.clone();
        huge[37..41].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_request(&huge),
            Err(ProtocolError::TupleCount { .. })
        ));
        assert!(matches!(
            decode_request(&good[..good.len() - 1]),
            Err(ProtocolError::Length { .. })
        ));
        let mut answer = encode_answer(&Answer::Exposure { day: None });
        answer[10] = 1;
        assert_eq!(decode_answer(&answer), Err(ProtocolError::BadAnswer));
    }
}
