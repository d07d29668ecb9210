//! Getting a diagnosis onto the server: the provider issues a one-time code, the phone trades
//! it for the right to upload and sends its keys, over the native `/v1` API or COVID Shield's
//! protocol.
//!
//! Secrets (upload tokens, the app's X25519 secret key) never appear in `Debug` output.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use confidant_core::CodeFormat;
use confidant_core::covidshield_wire as wire;
use crypto_box::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use gaen::{DiagnosisKey, TransmissionRisk};
use prost::Message;
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;

use crate::{ClientError, http};

/// Uploads carry this many keys' worth of JSON at least, so their size does not tell how
/// many days of keys a phone had (COVID Shield's per-request maximum).
const PADDED_KEY_COUNT: usize = 28;
/// Bytes of one key in the upload JSON, roughly, for the padding.
const KEY_JSON_BYTES: usize = 100;

/// Provider side: issues one-time codes with the provider's API token (`POST /v1/codes`).
#[derive(Clone)]
pub struct ProviderApi {
    base_url: String,
    token: String,
    client: reqwest::Client,
}

impl fmt::Debug for ProviderApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ProviderApi {
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        Self::with_client(base_url, token, reqwest::Client::new())
    }

    pub fn with_client(
        base_url: &str,
        token: &str,
        client: reqwest::Client,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            token: token.to_owned(),
            client,
        })
    }

    /// A one-time code in the server's default format.
    pub async fn issue_code(&self) -> Result<String, ClientError> {
        self.request_code(json!({})).await
    }

    /// A one-time code in `format` (short, long or card).
    pub async fn issue_code_in(&self, format: CodeFormat) -> Result<String, ClientError> {
        self.request_code(json!({"format": format.name()})).await
    }

    async fn request_code(&self, body: serde_json::Value) -> Result<String, ClientError> {
        #[derive(Deserialize)]
        struct Issued {
            code: String,
        }
        let url = format!("{}/v1/codes", self.base_url);
        let request = self.client.post(&url).bearer_auth(&self.token).json(&body);
        let response = http::send(request, &url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, &url).await);
        }
        Ok(http::json::<Issued>(response, &url).await?.code)
    }
}

/// The right to upload, from `POST /v1/verify`.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadToken {
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Keys this claim may still upload over its life.
    pub key_budget: u32,
}

impl fmt::Debug for UploadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadToken")
            .field("expires_at", &self.expires_at)
            .field("key_budget", &self.key_budget)
            .finish_non_exhaustive()
    }
}

/// What `POST /v1/submissions` stored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// 32 hex characters; ask [`NativeApi::status`] with it.
    pub tracking_id: String,
    pub inserted: u32,
    /// Keys already stored (by an earlier upload), not counted against the budget.
    pub skipped: u32,
    /// Keys older than 14 days.
    pub dropped: u32,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Where a submission stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmissionState {
    /// Stored, not published yet (under embargo).
    Accepted,
    /// At least one of its keys is in a published file.
    Published,
    /// Withdrawn by the health authority: its keys are revoked.
    Withdrawn,
}

/// `GET /v1/submissions/{trackingId}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionStatus {
    pub tracking_id: String,
    pub status: SubmissionState,
    pub region: String,
    /// RFC 3339, to the hour.
    pub submitted_hour: String,
    pub inserted: u32,
    pub skipped: u32,
    pub dropped: u32,
}

/// The app side of the native `/v1` API.
#[derive(Clone, Debug)]
pub struct NativeApi {
    base_url: String,
    client: reqwest::Client,
}

impl NativeApi {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_client(base_url, reqwest::Client::new())
    }

    pub fn with_client(base_url: &str, client: reqwest::Client) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let response = http::send(request, url).await?;
        if !response.status().is_success() {
            return Err(http::status_error(response, url).await);
        }
        http::json(response, url).await
    }

    /// Redeems a one-time code for an upload token.
    pub async fn verify(&self, code: &str) -> Result<UploadToken, ClientError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Verified {
            token: String,
            expires_at: String,
            key_budget: u32,
        }
        let url = format!("{}/v1/verify", self.base_url);
        let request = self.client.post(&url).json(&json!({"code": code}));
        let verified: Verified = self.call(request, &url).await?;
        Ok(UploadToken {
            token: verified.token,
            expires_at: verified.expires_at,
            key_budget: verified.key_budget,
        })
    }

    /// Uploads keys under the token, padded so that every upload of up to 28 keys is about
    /// the same size.
    pub async fn submit(
        &self,
        token: &UploadToken,
        keys: &[DiagnosisKey],
    ) -> Result<Receipt, ClientError> {
        let (request, url) = self.submission(&token.token, keys);
        self.call(request, &url).await
    }

    /// Chaff: a code redemption and an upload of `key_count` random keys of the days before
    /// `now`, shaped like real ones and marked `X-Chaff: 1`. The server answers like a real
    /// success and stores nothing. Apps send this at random times, so that a network observer
    /// cannot tell which phone reports a diagnosis.
    pub async fn send_chaff(&self, key_count: usize, now: u64) -> Result<(), ClientError> {
        let code = format!("{:08}", OsRng.next_u32() % 100_000_000);
        let url = format!("{}/v1/verify", self.base_url);
        let request = self
            .client
            .post(&url)
            .header("X-Chaff", "1")
            .json(&json!({"code": code}));
        let _: serde_json::Value = self.call(request, &url).await?;
        let today = gaen::IntervalNumber::containing(now).day_start().get();
        // Whole days before today, as an app uploads after a diagnosis.
        let keys: Vec<DiagnosisKey> = (1..=key_count.min(14) as u32)
            .filter_map(|days_ago| {
                let mut tek = [0u8; 16];
                OsRng.fill_bytes(&mut tek);
                Some(DiagnosisKey {
                    tek: gaen::Tek(tek),
                    rolling_start: gaen::IntervalNumber::new(today.checked_sub(days_ago * 144)?),
                    rolling_period: gaen::RollingPeriod::FULL_DAY,
                    transmission_risk: gaen::TransmissionRisk::new(4).ok(),
                    report_type: None,
                    days_since_onset: None,
                    variant_of_concern: None,
                })
            })
            .collect();
        let mut token = [0u8; 32];
        OsRng.fill_bytes(&mut token);
        let (request, url) = self.submission(&URL_SAFE_NO_PAD.encode(token), &keys);
        let _: serde_json::Value = self.call(request.header("X-Chaff", "1"), &url).await?;
        Ok(())
    }

    fn submission(&self, token: &str, keys: &[DiagnosisKey]) -> (reqwest::RequestBuilder, String) {
        let keys_json: Vec<serde_json::Value> = keys
            .iter()
            .map(|key| {
                let mut entry = json!({
                    "key": STANDARD.encode(key.tek.0),
                    "rollingStartNumber": key.rolling_start.get(),
                    "rollingPeriod": key.rolling_period.get(),
                });
                if let Some(risk) = key.transmission_risk {
                    entry["transmissionRisk"] = json!(risk.get());
                }
                entry
            })
            .collect();
        let url = format!("{}/v1/submissions", self.base_url);
        let body = json!({"keys": keys_json, "padding": padding(keys.len())});
        (self.client.post(&url).bearer_auth(token).json(&body), url)
    }

    /// Where a submission stands (accepted, published or withdrawn).
    pub async fn status(&self, tracking_id: &str) -> Result<SubmissionStatus, ClientError> {
        // Tracking IDs are hex; anything else must not reach the path.
        if tracking_id.len() != 32 || !tracking_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::MalformedTrackingId(tracking_id.to_owned()));
        }
        let url = format!("{}/v1/submissions/{tracking_id}", self.base_url);
        self.call(self.client.get(&url), &url).await
    }
}

/// Random filler that brings an upload of `key_count` keys to the size of 28.
fn padding(key_count: usize) -> String {
    let mut filler = vec![0u8; PADDED_KEY_COUNT.saturating_sub(key_count) * KEY_JSON_BYTES * 3 / 4];
    OsRng.fill_bytes(&mut filler);
    URL_SAFE_NO_PAD.encode(filler)
}

/// COVID Shield's protocol: `POST /claim-key` registers a fresh X25519 key pair of the app,
/// then `POST /upload` sends the keys in an NaCl box (XSalsa20-Poly1305) to the claim's server
/// key. Apps built for COVID Shield speak exactly this.
#[derive(Clone)]
pub struct CovidShieldApi {
    base_url: String,
    client: reqwest::Client,
    /// The app's key pair and the server's key, after a successful claim.
    claimed: Option<(SecretKey, PublicKey)>,
}

impl fmt::Debug for CovidShieldApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CovidShieldApi")
            .field("base_url", &self.base_url)
            .field("claimed", &self.claimed.is_some())
            .finish()
    }
}

impl CovidShieldApi {
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_client(base_url, reqwest::Client::new())
    }

    pub fn with_client(base_url: &str, client: reqwest::Client) -> Result<Self, ClientError> {
        Ok(Self {
            base_url: http::base_url(base_url)?,
            client,
            claimed: None,
        })
    }

    /// Whether a claim succeeded, so [`CovidShieldApi::upload`] can be called.
    pub fn is_claimed(&self) -> bool {
        self.claimed.is_some()
    }

    async fn post(
        &self,
        endpoint: &str,
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes, String), ClientError> {
        let url = format!("{}/{endpoint}", self.base_url);
        let request = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        let response = http::send(request, &url).await?;
        let status = response.status().as_u16();
        let body = http::body(response, &url).await?;
        Ok((status, body, url))
    }

    /// Claims a one-time code with a new app key pair. On success the pair and the server's
    /// key are kept for [`CovidShieldApi::upload`]; a failed claim keeps an earlier one.
    pub async fn claim(&mut self, code: &str) -> Result<(), ClientError> {
        let secret = SecretKey::generate(&mut OsRng);
        let request = wire::KeyClaimRequest {
            one_time_code: Some(code.to_owned()),
            app_public_key: Some(secret.public_key().as_bytes().to_vec()),
        };
        let (status, body, url) = self.post("claim-key", request.encode_to_vec()).await?;
        let response =
            wire::KeyClaimResponse::decode(body).map_err(|e| ClientError::UnexpectedResponse {
                url: url.clone(),
                reason: format!("{status} with a body that is not a KeyClaimResponse: {e}"),
            })?;
        let error = response.error.unwrap_or(0);
        if error != 0 || status != 200 {
            return Err(ClientError::CovidShield {
                endpoint: "/claim-key",
                status,
                error,
                name: wire::claim_error_name(error).unwrap_or("UNKNOWN_ERROR_CODE"),
                tries_remaining: response.tries_remaining,
            });
        }
        let server_key = response
            .server_public_key
            .as_deref()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| ClientError::UnexpectedResponse {
                url,
                reason: "a successful claim without a 32-byte server_public_key".into(),
            })?;
        self.claimed = Some((secret, PublicKey::from(server_key)));
        Ok(())
    }

    /// Uploads keys, timestamped `now` (the server accepts an hour either way).
    pub async fn upload(&self, keys: &[DiagnosisKey], now: u64) -> Result<(), ClientError> {
        let (app_secret, server_key) = self.claimed.as_ref().ok_or(ClientError::NotClaimed)?;
        let upload = wire::Upload {
            timestamp: Some(wire::Timestamp {
                seconds: i64::try_from(now).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            keys: keys
                .iter()
                .map(|key| wire::TemporaryExposureKey {
                    key_data: Some(key.tek.0.to_vec()),
                    transmission_risk_level: key
                        .transmission_risk
                        .map(|r: TransmissionRisk| i32::from(r.get())),
                    // Interval numbers are below 2^31 until the year 42 000.
                    rolling_start_interval_number: i32::try_from(key.rolling_start.get()).ok(),
                    rolling_period: Some(key.rolling_period.get() as i32),
                })
                .collect(),
        };
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let payload = SalsaBox::new(server_key, app_secret)
            .encrypt(&nonce, upload.encode_to_vec().as_slice())
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let request = wire::EncryptedUploadRequest {
            server_public_key: Some(server_key.as_bytes().to_vec()),
            app_public_key: Some(app_secret.public_key().as_bytes().to_vec()),
            nonce: Some(nonce.to_vec()),
            payload: Some(payload),
        };
        let (status, body, url) = self.post("upload", request.encode_to_vec()).await?;
        let response = wire::EncryptedUploadResponse::decode(body).map_err(|e| {
            ClientError::UnexpectedResponse {
                url,
                reason: format!("{status} with a body that is not an EncryptedUploadResponse: {e}"),
            }
        })?;
        if response.error != 0 || status != 200 {
            return Err(ClientError::CovidShield {
                endpoint: "/upload",
                status,
                error: response.error,
                name: wire::upload_error_name(response.error).unwrap_or("UNKNOWN_ERROR_CODE"),
                tries_remaining: None,
            });
        }
        Ok(())
    }
}
