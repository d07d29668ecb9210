//! The matcher's HTTP surface. Everything a phone sends arrives sealed to the attested key
//! (`core::confidential`), usually through the main server, which can read none of it:
//!
//! - `GET /attestation?nonce=<64 hex>`: the public key and fresh evidence binding it to the
//!   nonce (`confidant_attest::binding::report_data`);
//! - `POST /v1/upload` (the main server's bearer secret): a positive user's contact log,
//!   sealed; stored in the sealed log before the sealed `Stored` answer;
//! - `POST /v1/poll`: a phone's own log, sealed; answered with a sealed `Exposure` of one fixed
//!   size, and forgotten;
//! - `GET /healthz`, `GET /metrics` (counters only).
//!
//! Requests must be sealed for evidence this process issued within the last hour, so a phone
//! always acts on evidence it checked. No request content is logged or kept.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confidant_core::confidential::{
    self, Answer, ContactTuple, MAX_TUPLES, ProtocolError, Request, TUPLE_LEN,
};
use rand_core::OsRng;
use serde::Deserialize;
use serde_json::json;

use crate::attestor::Attestor;
use crate::index::TupleIndex;
use crate::seal::SealedLog;

/// Days a tuple is kept and matched (today and the 13 before).
pub const RETENTION_DAYS: u32 = 14;
/// Evidence a phone may seal to, after it was issued.
pub const EVIDENCE_LIFETIME_SECONDS: u64 = 3600;
/// Most evidence digests remembered at once (a burst of attestation requests).
const MAX_RECENT_EVIDENCE: usize = 200_000;
/// A sealed request of [`MAX_TUPLES`] tuples, with its header and box.
const BODY_LIMIT: usize = 32 + 24 + 16 + 41 + MAX_TUPLES * TUPLE_LEN;

/// Seconds since 1970, from wherever the caller keeps time (tests move it).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Counters: the only thing the matcher records about its traffic.
#[derive(Default)]
pub struct Counters {
    pub polls: AtomicU64,
    pub exposed: AtomicU64,
    pub uploads: AtomicU64,
    pub refused: AtomicU64,
    pub attestations: AtomicU64,
}

/// Evidence issued recently, by digest, oldest first.
#[derive(Default)]
struct RecentEvidence {
    issued: HashMap<[u8; 32], u64>,
    order: VecDeque<([u8; 32], u64)>,
}

impl RecentEvidence {
    fn insert(&mut self, digest: [u8; 32], now: u64) {
        self.prune(now);
        while self.order.len() >= MAX_RECENT_EVIDENCE {
            if let Some((old, _)) = self.order.pop_front() {
                self.issued.remove(&old);
            }
        }
        self.issued.insert(digest, now);
        self.order.push_back((digest, now));
    }

    fn prune(&mut self, now: u64) {
        while let Some((digest, at)) = self.order.front().copied() {
            if at + EVIDENCE_LIFETIME_SECONDS > now {
                break;
            }
            self.order.pop_front();
            if self.issued.get(&digest) == Some(&at) {
                self.issued.remove(&digest);
            }
        }
    }

    fn fresh(&self, digest: &[u8; 32], now: u64) -> bool {
        self.issued
            .get(digest)
            .is_some_and(|at| at + EVIDENCE_LIFETIME_SECONDS > now)
    }
}

pub(crate) struct Shared {
    pub secret: [u8; 32],
    pub public: [u8; 32],
    pub attestor: Box<dyn Attestor>,
    recent: Mutex<RecentEvidence>,
    pub index: RwLock<TupleIndex>,
    pub log: tokio::sync::Mutex<SealedLog>,
    /// The main server's bearer secret for uploads.
    pub upload_secret: Vec<u8>,
    pub clock: Clock,
    pub counters: Counters,
}

impl Shared {
    pub fn new(
        secret: [u8; 32],
        attestor: Box<dyn Attestor>,
        index: TupleIndex,
        log: SealedLog,
        upload_secret: Vec<u8>,
        clock: Clock,
    ) -> Self {
        let public = *crypto_box::SecretKey::from(secret).public_key().as_bytes();
        Self {
            secret,
            public,
            attestor,
            recent: Mutex::default(),
            index: RwLock::new(index),
            log: tokio::sync::Mutex::new(log),
            upload_secret,
            clock,
            counters: Counters::default(),
        }
    }

    fn today(&self) -> u32 {
        ((self.clock)() / 86_400) as u32
    }

    /// The first day still kept.
    pub fn first_day(&self) -> u32 {
        self.today().saturating_sub(RETENTION_DAYS - 1)
    }
}

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/attestation", get(attestation))
        .route("/v1/upload", post(upload))
        .route("/v1/poll", post(poll))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    let body = json!({"status": status.as_u16(), "code": code, "detail": detail.into()});
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

#[derive(Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn attestation(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<NonceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let nonce = query.ok().and_then(|Query(q)| q.nonce).and_then(|text| {
        let mut nonce = [0u8; 32];
        hex::decode_to_slice(text, &mut nonce).ok().map(|()| nonce)
    });
    let Some(nonce) = nonce else {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed_nonce",
            "send ?nonce= with 64 hexadecimal characters (32 random bytes)",
        );
    };
    let report_data = confidant_attest::binding::report_data(&shared.public, &nonce);
    let shared_for_work = shared.clone();
    // Hardware attestation can block for a while: off the async threads.
    let evidence =
        tokio::task::spawn_blocking(move || shared_for_work.attestor.evidence(&report_data)).await;
    let evidence = match evidence {
        Ok(Ok(evidence)) => evidence,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "attestation failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "attestation_unavailable",
                "evidence could not be produced right now; retry later",
            );
        }
        Err(_) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "attestation_unavailable",
                "evidence could not be produced right now; retry later",
            );
        }
    };
    shared
        .recent
        .lock()
        .expect("recent evidence lock")
        .insert(evidence.digest(), (shared.clock)());
    shared.counters.attestations.fetch_add(1, Ordering::Relaxed);
    // The evidence goes out in its canonical JSON: the phone's digest of it is the digest
    // this process remembers.
    let body = format!(
        r#"{{"publicKey":"{}","evidence":{}}}"#,
        hex::encode(shared.public),
        evidence.to_json()
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Opens a sealed request and checks it names evidence issued within the lifetime.
fn open(
    shared: &Shared,
    body: &[u8],
) -> Result<(Request, confidential::MatcherChannel), Box<Response>> {
    let refused = |response: Response| {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        Box::new(response)
    };
    let opened = confidential::open_request(&shared.secret, body)
        .map_err(|e| refused(sealed_problem(&e)))?;
    let fresh = shared
        .recent
        .lock()
        .expect("recent evidence lock")
        .fresh(&opened.evidence_digest, (shared.clock)());
    if !fresh {
        return Err(refused(problem(
            StatusCode::CONFLICT,
            "stale_evidence",
            "the request was sealed for evidence this matcher did not issue in the last hour: \
             fetch /attestation again, verify it, and seal to it",
        )));
    }
    Ok((opened.request, opened.channel))
}

fn sealed_problem(error: &ProtocolError) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        error.to_string(),
    )
}

fn octets(bytes: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response()
}

/// Tuples within retention (others are dropped, not refused: a phone's log may be a day off).
fn recent(shared: &Shared, tuples: &[ContactTuple]) -> Vec<ContactTuple> {
    let (first, last) = (shared.first_day(), shared.today() + 1);
    tuples
        .iter()
        .filter(|t| (first..=last).contains(&t.day))
        .copied()
        .collect()
}

async fn upload(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| constant_time_eq(token.trim().as_bytes(), &shared.upload_secret));
    if !authorised {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        return problem(
            StatusCode::UNAUTHORIZED,
            "not_authorised",
            "uploads come through the main server, which checks the user's upload grant",
        );
    }
    let (request, channel) = match open(&shared, &body) {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let Request::Upload(tuples) = request else {
        return problem(
            StatusCode::BAD_REQUEST,
            "wrong_kind",
            "this is a poll: send it to /v1/poll",
        );
    };
    let kept = recent(&shared, &tuples);
    if !kept.is_empty() {
        let mut log = shared.log.lock().await;
        if let Err(e) = log.append(&kept) {
            tracing::error!(error = %e, "sealing an upload failed");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the upload could not be stored and was not accepted; retry later",
            );
        }
        shared.index.write().expect("index lock").add(&kept);
    }
    shared.counters.uploads.fetch_add(1, Ordering::Relaxed);
    octets(channel.seal_answer(
        &Answer::Stored {
            tuples: kept.len() as u32,
        },
        &mut OsRng,
    ))
}

async fn poll(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let (request, channel) = match open(&shared, &body) {
        Ok(opened) => opened,
        Err(response) => return *response,
    };
    let Request::Poll(tuples) = request else {
        return problem(
            StatusCode::BAD_REQUEST,
            "wrong_kind",
            "this is an upload: send it to /v1/upload",
        );
    };
    let first = shared.first_day();
    let day = shared
        .index
        .read()
        .expect("index lock")
        .exposure(&tuples)
        .filter(|day| *day >= first);
    shared.counters.polls.fetch_add(1, Ordering::Relaxed);
    if day.is_some() {
        shared.counters.exposed.fetch_add(1, Ordering::Relaxed);
    }
    octets(channel.seal_answer(&Answer::Exposure { day }, &mut OsRng))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let c = &shared.counters;
    let tuples = shared.index.read().expect("index lock").len();
    let text = format!(
        "# TYPE confidant_matcher_polls_total counter\nconfidant_matcher_polls_total {}\n\
         # TYPE confidant_matcher_exposed_total counter\nconfidant_matcher_exposed_total {}\n\
         # TYPE confidant_matcher_uploads_total counter\nconfidant_matcher_uploads_total {}\n\
         # TYPE confidant_matcher_refused_total counter\nconfidant_matcher_refused_total {}\n\
         # TYPE confidant_matcher_attestations_total counter\nconfidant_matcher_attestations_total {}\n\
         # TYPE confidant_matcher_tuples gauge\nconfidant_matcher_tuples {tuples}\n",
        c.polls.load(Ordering::Relaxed),
        c.exposed.load(Ordering::Relaxed),
        c.uploads.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.attestations.load(Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
