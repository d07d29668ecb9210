//! COVID Shield's protocol with a real NaCl box client, as an unchanged app would speak it.
//! The wire structs here are written from the .proto independently of the server's.

use confidant_server::ManualClock;
use confidant_store::testing::TestDatabase;
use crypto_box::aead::{Aead, AeadCore};
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use prost::Message;
use rand_core::OsRng;

use crate::{BOTH, PROVIDER_TOKEN, T0, TestServer, rolling_start};

#[derive(Clone, PartialEq, prost::Message)]
struct KeyClaimRequest {
    #[prost(string, required, tag = "1")]
    one_time_code: String,
    #[prost(bytes = "vec", required, tag = "2")]
    app_public_key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Duration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyClaimResponse {
    #[prost(int32, optional, tag = "1")]
    error: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    server_public_key: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "3")]
    tries_remaining: Option<u32>,
    #[prost(message, optional, tag = "4")]
    remaining_ban_duration: Option<Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EncryptedUploadRequest {
    #[prost(bytes = "vec", required, tag = "1")]
    server_public_key: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "2")]
    app_public_key: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "3")]
    nonce: Vec<u8>,
    #[prost(bytes = "vec", required, tag = "4")]
    payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EncryptedUploadResponse {
    #[prost(int32, required, tag = "1")]
    error: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Upload {
    #[prost(message, required, tag = "1")]
    timestamp: Timestamp,
    #[prost(message, repeated, tag = "2")]
    keys: Vec<Tek>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tek {
    #[prost(bytes = "vec", optional, tag = "1")]
    key_data: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "2")]
    transmission_risk_level: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    rolling_start_interval_number: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    rolling_period: Option<i32>,
}

// Error enums of the protocol.
const NONE: i32 = 0;
const UNKNOWN: i32 = 1;
const INVALID_ONE_TIME_CODE: i32 = 2;
const INVALID_KEY: i32 = 4;
const TEMPORARY_BAN: i32 = 5;
const INVALID_KEYPAIR: i32 = 2;
const DECRYPTION_FAILED: i32 = 3;
const INVALID_PAYLOAD: i32 = 4;
const INVALID_CRYPTO_PARAMETERS: i32 = 6;
const TOO_MANY_KEYS: i32 = 7;
const INVALID_TIMESTAMP: i32 = 8;
const INVALID_ROLLING_PERIOD: i32 = 10;
const INVALID_KEY_DATA: i32 = 11;
const INVALID_RSIN: i32 = 12;
const INVALID_TRL: i32 = 13;
const NO_KEYS: i32 = 14;

/// An app: its key pair and, once claimed, the server's key.
struct App {
    secret: SecretKey,
    server_key: Option<PublicKey>,
}

impl App {
    fn new() -> Self {
        Self {
            secret: SecretKey::generate(&mut OsRng),
            server_key: None,
        }
    }

    fn public(&self) -> Vec<u8> {
        self.secret.public_key().as_bytes().to_vec()
    }
}

async fn new_key_claim(server: &TestServer) -> String {
    let response = server
        .http
        .post(server.url("/new-key-claim"))
        .bearer_auth(PROVIDER_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body = response.text().await.expect("text");
    assert!(
        body.len() == 9 && body.ends_with('\n') && body[..8].bytes().all(|b| b.is_ascii_digit()),
        "{body:?}"
    );
    body.trim_end().to_owned()
}

async fn claim_raw(server: &TestServer, body: Vec<u8>, address: &str) -> (u16, KeyClaimResponse) {
    let response = server
        .http
        .post(server.url("/claim-key"))
        .header("x-forwarded-for", address)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    (
        status,
        KeyClaimResponse::decode(response.bytes().await.expect("body")).expect("KeyClaimResponse"),
    )
}

async fn claim(server: &TestServer, app: &mut App, code: &str) -> (u16, KeyClaimResponse) {
    let request = KeyClaimRequest {
        one_time_code: code.to_owned(),
        app_public_key: app.public(),
    };
    let (status, response) = claim_raw(server, request.encode_to_vec(), "198.51.100.7").await;
    if let Some(key) = &response.server_public_key {
        app.server_key = Some(PublicKey::from(
            <[u8; 32]>::try_from(key.as_slice()).expect("32-byte key"),
        ));
    }
    (status, response)
}

fn key(seed: u8, days_ago: u32) -> Tek {
    Tek {
        key_data: Some(vec![seed; 16]),
        transmission_risk_level: Some(3),
        rolling_start_interval_number: Some(rolling_start(days_ago) as i32),
        rolling_period: Some(144),
    }
}

fn sealed(app: &App, upload: &Upload) -> EncryptedUploadRequest {
    let server_key = app.server_key.clone().expect("claimed");
    let nonce = SalsaBox::generate_nonce(&mut OsRng);
    let payload = SalsaBox::new(&server_key, &app.secret)
        .encrypt(&nonce, upload.encode_to_vec().as_slice())
        .expect("seal");
    EncryptedUploadRequest {
        server_public_key: server_key.as_bytes().to_vec(),
        app_public_key: app.public(),
        nonce: nonce.to_vec(),
        payload,
    }
}

async fn upload_raw(server: &TestServer, body: Vec<u8>) -> (u16, i32) {
    let response = server
        .http
        .post(server.url("/upload"))
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    (
        status,
        EncryptedUploadResponse::decode(response.bytes().await.expect("body"))
            .expect("response")
            .error,
    )
}

async fn upload(server: &TestServer, app: &App, keys: Vec<Tek>, timestamp: u64) -> (u16, i32) {
    let upload = Upload {
        timestamp: Timestamp {
            seconds: timestamp as i64,
            nanos: 0,
        },
        keys,
    };
    upload_raw(server, sealed(app, &upload).encode_to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_covid_shield_app_claims_and_uploads() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let mut app = App::new();
        let code = new_key_claim(&server).await;
        let (status, response) = claim(&server, &mut app, &code).await;
        assert_eq!((status, response.error), (200, Some(NONE)));
        assert_eq!(response.tries_remaining, Some(8));
        assert_eq!(response.server_public_key.as_ref().map(Vec::len), Some(32));

        assert_eq!(
            upload(&server, &app, vec![key(1, 0), key(2, 1), key(3, 2)], T0).await,
            (200, NONE)
        );
        // The next day's key, with a clock 59 minutes off.
        server.clock.advance(86_400);
        assert_eq!(
            upload(&server, &app, vec![key(4, 0)], T0 + 86_400 - 3540).await,
            (200, NONE)
        );

        // A captured upload replayed byte for byte is answered but stores nothing new.

        let captured = sealed(
            &app,
            &Upload {
                timestamp: Timestamp {
                    seconds: (T0 + 86_400) as i64,
                    nanos: 0,
                },
                keys: vec![key(4, 0)],
            },
        )
        .encode_to_vec();

        let before_replay = server.store.projected_state().await.expect("state");

        assert_eq!(upload_raw(&server, captured.clone()).await, (200, NONE));

        assert_eq!(upload_raw(&server, captured).await, (200, NONE));

        let after_replay = server.store.projected_state().await.expect("state");

        assert_eq!(
            after_replay.keys, before_replay.keys,
            "replayed keys are skipped"
        );

        assert!(
            after_replay
                .claims
                .values()
                .all(|c| c.budget_remaining == 43 - 4),
            "and cost no budget"
        );

        let state = server.store.projected_state().await.expect("state");
        assert_eq!(state.keys.len(), 4);
        assert!(
            state
                .submissions
                .values()
                .all(|s| s.region.as_str() == "302")
        );
        assert!(server.store.check().await.expect("check").consistent());

        // A code is claimed once; a registered app key cannot claim again.
        let (status, response) = claim(&server, &mut App::new(), &code).await;
        assert_eq!((status, response.error), (401, Some(INVALID_ONE_TIME_CODE)));
        let another = new_key_claim(&server).await;
        let (status, response) = claim(&server, &mut app, &another).await;
        assert_eq!((status, response.error), (401, Some(INVALID_KEY)));

        // What the app uploaded reaches phones: in the exports once out of embargo (the
        // default padding adds fakes around the four real keys), and in COVID Shield's
        // retrieval of the first day.
        server
            .publisher
            .run_due(T0 + 2 * 86_400)
            .await
            .expect("publishes");
        let published = crate::publication::export_keys(&server, "/exports/302/index.txt").await;
        assert_eq!(
            crate::publication::seeds_of(&published),
            std::collections::BTreeSet::from([1, 2, 3, 4]),
            "{dialect:?}"
        );
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_errors_follow_covid_shields_order_and_store_nothing() {
    for dialect in BOTH {
        let db = TestDatabase::create(dialect).await;
        let server = TestServer::start(&db, ManualClock::new(T0)).await;
        let mut app = App::new();
        let (status, _) = claim(&server, &mut app, &new_key_claim(&server).await).await;
        assert_eq!(status, 200);
        let before = server.store.projected_state().await.expect("state");

        let good = sealed(
            &app,
            &Upload {
                timestamp: Timestamp {
                    seconds: T0 as i64,
                    nanos: 0,
                },
                keys: vec![key(1, 0)],
            },
        );
        let mut cases: Vec<(Vec<u8>, (u16, i32))> = vec![
            (b"not protobuf \xff\xff".to_vec(), (400, UNKNOWN)),
            (vec![0u8; 1025], (400, UNKNOWN)),
            (
                EncryptedUploadRequest {
                    server_public_key: vec![1; 31],
                    ..good.clone()
                }
                .encode_to_vec(),
                (400, INVALID_CRYPTO_PARAMETERS),
            ),
            (
                EncryptedUploadRequest {
                    server_public_key: vec![1; 32],
                    ..good.clone()
                }
                .encode_to_vec(),
                (401, INVALID_KEYPAIR),
            ),
            (
                EncryptedUploadRequest {
                    nonce: vec![0; 23],
                    ..good.clone()
                }
                .encode_to_vec(),
                (400, INVALID_CRYPTO_PARAMETERS),
            ),
            (
                EncryptedUploadRequest {
                    app_public_key: vec![0; 31],
                    ..good.clone()
                }
                .encode_to_vec(),
                (400, INVALID_CRYPTO_PARAMETERS),
            ),
            // Another app's key: the deployed server forgot this check; we refuse.
            (
                EncryptedUploadRequest {
                    app_public_key: App::new().public(),
                    ..good.clone()
                }
                .encode_to_vec(),
                (401, INVALID_KEYPAIR),
            ),
            (
                EncryptedUploadRequest {
                    payload: vec![0; 40],
                    ..good.clone()
                }
                .encode_to_vec(),
                (400, DECRYPTION_FAILED),
            ),
        ];
        // Sealed, but not an Upload inside.
        let server_key = app.server_key.clone().expect("claimed");
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let garbage = SalsaBox::new(&server_key, &app.secret)
            .encrypt(&nonce, &b"\xff\xff\xff"[..])
            .expect("seal");
        cases.push((
            EncryptedUploadRequest {
                nonce: nonce.to_vec(),
                payload: garbage,
                ..good.clone()
            }
            .encode_to_vec(),
            (400, INVALID_PAYLOAD),
        ));
        for (body, expected) in cases {
            assert_eq!(upload_raw(&server, body).await, expected, "{dialect:?}");
        }

        let mut bad_period = key(1, 0);
        bad_period.rolling_period = Some(145);
        let mut bad_data = key(1, 0);
        bad_data.key_data = Some(vec![1; 15]);
        let mut zero_start = key(1, 0);
        zero_start.rolling_start_interval_number = Some(0);
        let mut bad_risk = key(1, 0);
        bad_risk.transmission_risk_level = Some(9);
        let payload_cases: Vec<(Vec<Tek>, u64, i32)> = vec![
            (vec![], T0, NO_KEYS),
            ((0..29).map(|s| key(s, 0)).collect(), T0, TOO_MANY_KEYS),
            (vec![key(1, 0)], T0 + 3601, INVALID_TIMESTAMP),
            (vec![key(1, 0)], T0 - 3601, INVALID_TIMESTAMP),
            // Far-off values must not overflow the comparison.
            (vec![key(1, 0)], i64::MIN as u64, INVALID_TIMESTAMP),
            (vec![key(1, 0)], i64::MAX as u64, INVALID_TIMESTAMP),
            (vec![bad_period], T0, INVALID_ROLLING_PERIOD),
            (vec![bad_data], T0, INVALID_KEY_DATA),
            (vec![zero_start], T0, INVALID_RSIN),
            (vec![bad_risk], T0, INVALID_TRL),
            (vec![key(1, 0), key(2, 15)], T0, INVALID_RSIN),
        ];
        for (keys, timestamp, expected) in payload_cases {
            assert_eq!(
                upload(&server, &app, keys, timestamp).await,
                (400, expected),
                "{dialect:?}"
            );
        }
        assert_eq!(
            server.store.projected_state().await.expect("state"),
            before,
            "{dialect:?}: refused uploads stored something"
        );

        // The 43-key budget: 28 + 15 fit, one more does not, and a known key is skipped for free.
        assert_eq!(
            upload(
                &server,
                &app,
                (0..28).map(|s| key(s, s as u32 % 14)).collect(),
                T0
            )
            .await,
            (200, NONE)
        );
        assert_eq!(
            upload(
                &server,
                &app,
                (28..43).map(|s| key(s, s as u32 % 14)).collect(),
                T0
            )
            .await,
            (200, NONE)
        );
        assert_eq!(
            upload(&server, &app, vec![key(50, 0)], T0).await,
            (400, TOO_MANY_KEYS)
        );
        assert_eq!(
            upload(&server, &app, vec![key(5, 5)], T0).await,
            (200, NONE)
        );
        server.stop().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_wrong_codes_ban_an_address_for_an_hour() {
    let db = TestDatabase::sqlite();
    let server = TestServer::start(&db, ManualClock::new(T0)).await;
    let wrong = |app: &App| {
        KeyClaimRequest {
            one_time_code: "99999999".into(),
            app_public_key: app.public(),
        }
        .encode_to_vec()
    };
    let app = App::new();
    // Malformed requests do not count.
    let (status, response) = claim_raw(&server, vec![0xff; 10], "203.0.113.5").await;
    assert_eq!(
        (status, response.error, response.tries_remaining),
        (400, Some(UNKNOWN), Some(8))
    );
    for remaining in (0..8).rev() {
        let (status, response) = claim_raw(&server, wrong(&app), "203.0.113.5").await;
        assert_eq!(
            (status, response.error, response.tries_remaining),
            (401, Some(INVALID_ONE_TIME_CODE), Some(remaining))
        );
        let ban = response.remaining_ban_duration.map(|d| d.seconds);
        assert_eq!(ban, Some(if remaining == 0 { 3600 } else { 0 }));
    }
    // While banned, even a malformed request gets the ban.
    let (status, response) = claim_raw(&server, vec![0xff; 10], "203.0.113.5").await;
    assert_eq!((status, response.error), (429, Some(TEMPORARY_BAN)));
    let code = new_key_claim(&server).await;
    let valid = KeyClaimRequest {
        one_time_code: code.clone(),
        app_public_key: app.public(),
    }
    .encode_to_vec();
    let (status, response) = claim_raw(&server, valid.clone(), "203.0.113.5").await;
    assert_eq!(
        (status, response.error, response.tries_remaining),
        (429, Some(TEMPORARY_BAN), Some(0))
    );
    server.clock.advance(3599);
    assert_eq!(
        claim_raw(&server, valid.clone(), "203.0.113.5").await.0,
        429
    );
    server.clock.advance(1);
    // The ban has lifted; the first code expired meanwhile (10 minutes), so use a fresh one.
    let fresh = KeyClaimRequest {
        one_time_code: new_key_claim(&server).await,
        app_public_key: app.public(),
    };
    let (status, response) = claim_raw(&server, fresh.encode_to_vec(), "203.0.113.5").await;
    assert_eq!(
        (status, response.error, response.tries_remaining),
        (200, Some(NONE), Some(8))
    );
    server.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_endpoint_speaks_plain_text() {
    let db = TestDatabase::sqlite();
    let server = TestServer::start(&db, ManualClock::new(T0)).await;
    let response = server
        .http
        .post(server.url("/new-key-claim"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.expect("text"), "unauthorized\n");
    let response = server
        .http
        .get(server.url("/new-key-claim"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    assert_eq!(response.text().await.expect("text"), "method not allowed\n");
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/new-key-claim"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["access-control-allow-methods"], "POST");
    // /upload answers every method with an EncryptedUploadResponse.
    let response = server
        .http
        .get(server.url("/upload"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 405);
    let body =
        EncryptedUploadResponse::decode(response.bytes().await.expect("body")).expect("protobuf");
    assert_eq!(body.error, UNKNOWN);
    let response = server
        .http
        .get(server.url("/services/ping"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.text().await.expect("text"), "OK\n");
    server.stop().await;
    db.finish().await;
}
