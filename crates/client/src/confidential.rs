//! The phone's side of confidential matching: rotating ids to broadcast, the contact log of
//! what it heard, and the exchange with the matcher, which happens only after the matcher's
//! evidence has passed the phone's [`Policy`].
//!
//! [`MatcherApi::attest`] sends a fresh nonce, parses the evidence, verifies it (signatures to
//! the vendor root, debug, measurements, TCB, age) and checks that it signs
//! `binding::report_data(key, nonce)`. Only an [`Attested`] matcher gets tuples: sealed to its
//! key and bound to the digest of the evidence (`core::confidential`). The base URL is the
//! matcher's own or the main server's `/matcher` prefix, which forwards the bytes unread.

use std::collections::BTreeSet;

use confidant_attest::{EvidenceVerifier, Policy, Verified, binding};
use confidant_core::confidential::{self, Answer, ContactTuple, ID_LEN, Request};
use confidant_core::encounter::DurationBucket;
use rand_core::{OsRng, RngCore};
use serde::Deserialize;

use crate::{ClientError, http};

/// Seconds between id rotations: as often as the Bluetooth address rotates.
pub const ROTATION_SECONDS: u64 = 15 * 60;
/// Days of contacts a phone keeps and polls with (today and the 13 before).
pub const LOG_DAYS: u32 = 14;

/// The random ids a phone broadcasts, one per rotation period, remembered only as long as the
/// contact log needs them.
#[derive(Clone, Debug, Default)]
pub struct RotatingIds {
    current: Option<(u64, [u8; ID_LEN])>,
}

impl RotatingIds {
    /// The id to broadcast at `now`: a fresh random one after each rotation.
    pub fn id_at(&mut self, now: u64, rng: &mut impl RngCore) -> [u8; ID_LEN] {
        let period = now / ROTATION_SECONDS;
        match self.current {
            Some((p, id)) if p == period => id,
            _ => {
                let mut id = [0u8; ID_LEN];
                rng.fill_bytes(&mut id);
                self.current = Some((period, id));
                id
            }
        }
    }
}

/// What the phone heard: (own id, peer id, day, duration) per encounter, 14 days.
#[derive(Clone, Debug, Default)]
pub struct ContactLog {
    tuples: BTreeSet<ContactTuple>,
}

impl ContactLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an encounter: while broadcasting `own`, the phone heard `peer` for `seconds`
    /// on UTC day `day`. Contacts shorter than 5 minutes are no encounter.
    pub fn record(
        &mut self,
        own: [u8; ID_LEN],
        peer: [u8; ID_LEN],
        day: u32,
        seconds: u64,
    ) -> bool {
        match DurationBucket::from_seconds(seconds) {
            Some(duration) => self.tuples.insert(ContactTuple {
                own,
                peer,
                day,
                duration,
            }),
            None => false,
        }
    }

    /// Forgets contacts older than [`LOG_DAYS`] at `today`.
    pub fn prune(&mut self, today: u32) {
        let first = today.saturating_sub(LOG_DAYS - 1);
        self.tuples.retain(|t| t.day >= first);
    }

    pub fn tuples(&self) -> Vec<ContactTuple> {
        self.tuples.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }
}

/// A matcher whose evidence the phone verified: its key and what the evidence said.
#[derive(Clone, Debug)]
pub struct Attested {
    pub public_key: [u8; 32],
    pub verified: Verified,
}

/// The matcher's HTTP API, as a phone uses it.
#[derive(Clone, Debug)]
pub struct MatcherApi {
    base_url: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationJson {
    public_key: String,
    evidence: serde_json::Value,
}

impl MatcherApi {
    /// `base_url`: the matcher itself, or the main server's `…/matcher`.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client: reqwest::Client::new(),
        })
    }

    /// Fetches evidence for a fresh nonce and verifies it with `verifier` at `now`. Nothing is
    /// sent to a matcher that fails.
    pub async fn attest(
        &self,
        verifier: &impl EvidenceVerifier,
        now: u64,
    ) -> Result<Attested, ClientError> {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let url = format!("{}/attestation?nonce={}", self.base_url, hex::encode(nonce));
        let response = http::send(self.client.get(&url), &url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &url).await);
        }
        let answer: AttestationJson = http::json(response, &url).await?;
        let unexpected = |reason: String| ClientError::UnexpectedResponse {
            url: url.clone(),
            reason,
        };
        let mut public_key = [0u8; 32];
        hex::decode_to_slice(&answer.public_key, &mut public_key)
            .map_err(|_| unexpected("publicKey is not 64 hexadecimal characters".into()))?;
        let evidence =
            confidant_attest::Evidence::from_json(answer.evidence.to_string().as_bytes())
                .map_err(|e| unexpected(e.to_string()))?;
        let verified = verifier
            .verify(&evidence, &binding::report_data(&public_key, &nonce), now)
            .map_err(ClientError::Attestation)?;
        Ok(Attested {
            public_key,
            verified,
        })
    }

    async fn exchange(
        &self,
        attested: &Attested,
        path: &str,
        request: &Request,
        bearer: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let (sealed, channel) = confidential::seal_request(
            &attested.public_key,
            &attested.verified.evidence_digest,
            request,
            &mut OsRng,
        );
        let url = format!("{}{path}", self.base_url);
        let mut builder = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(sealed);
        if let Some(token) = bearer {
            builder = builder.bearer_auth(token);
        }
        let response = http::send(builder, &url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &url).await);
        }
        let body = http::body(response, &url).await?;
        channel
            .open_answer(&body)
            .map_err(|e| ClientError::UnexpectedResponse {
                url,
                reason: e.to_string(),
            })
    }

    /// Asks whether any of the phone's encounters was with a positive user: the latest such
    /// day, or `None`.
    pub async fn poll(
        &self,
        attested: &Attested,
        log: &ContactLog,
    ) -> Result<Option<u32>, ClientError> {
        match self
            .exchange(attested, "/v1/poll", &Request::Poll(log.tuples()), None)
            .await?
        {
            Answer::Exposure { day } => Ok(day),
            Answer::Stored { .. } => Err(ClientError::UnexpectedResponse {
                url: format!("{}/v1/poll", self.base_url),
                reason: "an upload receipt in answer to a poll".into(),
            }),
        }
    }

    /// A positive user's upload of its contact log, with the grant from its test result (the
    /// main server checks it; a matcher reached directly wants its own upload secret).
    /// Returns the tuples stored.
    pub async fn upload(
        &self,
        attested: &Attested,
        grant: &str,
        log: &ContactLog,
    ) -> Result<u32, ClientError> {
        match self
            .exchange(
                attested,
                "/v1/upload",
                &Request::Upload(log.tuples()),
                Some(grant),
            )
            .await?
        {
            Answer::Stored { tuples } => Ok(tuples),
            Answer::Exposure { .. } => Err(ClientError::UnexpectedResponse {
                url: format!("{}/v1/upload", self.base_url),
                reason: "an exposure answer to an upload".into(),
            }),
        }
    }
}

/// The secret a phone draws when it is tested. The lab gets only [`TestSecret::test_id`]
/// (as a QR code, say) and posts the result under it; the phone polls with the secret, and a
/// positive phone's one upload to the matcher carries it as its bearer.
#[derive(Clone)]
pub struct TestSecret(pub [u8; 32]);

impl std::fmt::Debug for TestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestSecret(…)")
    }
}

impl TestSecret {
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self(secret)
    }

    /// What the lab posts the result under: 64 hexadecimal characters.
    pub fn test_id(&self) -> String {
        hex::encode(confidential::test_id(&self.0))
    }

    /// The bearer of the positive user's upload.
    pub fn bearer(&self) -> String {
        hex::encode(self.0)
    }
}

/// Where a test stands, as the main server tells the phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestStatus {
    Pending,
    Negative,
    /// `uploaded`: the one upload it allows has happened.
    Positive {
        uploaded: bool,
    },
}

/// The main server's test-result API, as a phone uses it.
#[derive(Clone, Debug)]
pub struct ResultsApi {
    base_url: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct StatusJson {
    status: String,
    uploaded: bool,
}

impl ResultsApi {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client: reqwest::Client::new(),
        })
    }

    pub async fn poll(&self, secret: &TestSecret) -> Result<TestStatus, ClientError> {
        let url = format!("{}/v1/results/poll", self.base_url);
        let request = self
            .client
            .post(&url)
            .json(&serde_json::json!({"secret": secret.bearer()}));
        let response = http::send(request, &url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &url).await);
        }
        let answer: StatusJson = http::json(response, &url).await?;
        match answer.status.as_str() {
            "pending" => Ok(TestStatus::Pending),
            "negative" => Ok(TestStatus::Negative),
            "positive" => Ok(TestStatus::Positive {
                uploaded: answer.uploaded,
            }),
            other => Err(ClientError::UnexpectedResponse {
                url,
                reason: format!("unknown test status {other:?}"),
            }),
        }
    }
}

/// The default policy plus the simulated attestor: for development against
/// `confidant-matcher --attestor simulated --insecure-simulated` only.
pub fn insecure_simulated_policy(measurement: [u8; 48]) -> Policy {
    Policy {
        allow_simulated: true,
        simulated: vec![measurement],
        ..Policy::default()
    }
}
