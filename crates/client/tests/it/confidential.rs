//! Confidential matching end to end over HTTP: a matcher with the simulated attestor, phones
//! that verify it before sending anything, a positive user's sealed upload, polls that learn
//! only "exposed on day D" or "not exposed", restarts, stale evidence and expiry; and a phone
//! whose policy refuses simulated evidence sends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use confidant_attest::{AttestError, Policy};
use confidant_client::ClientError;
use confidant_client::confidential::{
    ContactLog, MatcherApi, RotatingIds, insecure_simulated_policy,
};
use confidant_matcher::attestor::SimulatedAttestor;
use confidant_matcher::seal::SealingKey;
use confidant_matcher::{Matcher, MatcherSettings};
use rand_core::OsRng;
use tokio::sync::oneshot;

use crate::{DAY, HOUR, T0};

const UPLOAD_SECRET: &str = "the main server's upload secret";
const MEASUREMENT: [u8; 48] = [7; 48];

struct Running {
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(dir: &std::path::Path, key: &SealingKey, clock: &Arc<AtomicU64>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let now = clock.clone();
    let matcher = Matcher::build(
        listener,
        MatcherSettings {
            data_dir: dir.to_owned(),
            attestor: Box::new(SimulatedAttestor {
                measurement: MEASUREMENT,
            }),
            sealing_key: key.clone(),
            upload_secret: UPLOAD_SECRET.as_bytes().to_vec(),
            clock: Arc::new(move || now.load(Ordering::Relaxed)),
            expire_every: Duration::from_secs(3600),
        },
    )
    .await
    .expect("matcher");
    let url = format!("http://{}", matcher.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(matcher.run_until_stopped(async {
        stopped.await.ok();
    }));
    Running { url, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).ok();
        self.task.await.expect("task").expect("served");
    }

    async fn counter(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse().ok())
            .expect("counter")
    }
}

fn day(at: u64) -> u32 {
    (at / DAY) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positive_upload_tells_exactly_its_contacts_the_day_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(T0));
    let key = SealingKey::ephemeral();
    let matcher = start(dir.path(), &key, &clock).await;
    let api = MatcherApi::new(&matcher.url).expect("api");
    let policy = insecure_simulated_policy(MEASUREMENT);

    // Alice and Bob met two days ago for 20 minutes; Carol met only Dave.
    let met = T0 - 2 * DAY;
    let (mut alice_ids, mut bob_ids, mut carol_ids) = (
        RotatingIds::default(),
        RotatingIds::default(),
        RotatingIds::default(),
    );
    let (alice_id, bob_id, carol_id) = (
        alice_ids.id_at(met, &mut OsRng),
        bob_ids.id_at(met, &mut OsRng),
        carol_ids.id_at(met, &mut OsRng),
    );
    assert_eq!(
        alice_ids.id_at(met + 60, &mut OsRng),
        alice_id,
        "same rotation period"
    );
    assert_ne!(alice_ids.id_at(met + HOUR, &mut OsRng), alice_id, "rotated");
    let (mut alice, mut bob, mut carol) = (ContactLog::new(), ContactLog::new(), ContactLog::new());
    assert!(alice.record(alice_id, bob_id, day(met), 20 * 60));
    assert!(bob.record(bob_id, alice_id, day(met), 20 * 60));
    assert!(carol.record(carol_id, [0xDD; 16], day(met), 30 * 60));
    assert!(
        !carol.record(carol_id, [0xEE; 16], day(met), 4 * 60),
        "under 5 minutes"
    );

    // A phone whose policy refuses simulated evidence sends nothing at all.
    let strict = api
        .attest(&Policy::default(), T0)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            strict,
            ClientError::Attestation(AttestError::SimulatedRefused)
        ),
        "{strict}"
    );
    assert_eq!(matcher.counter("confidant_matcher_polls_total").await, 0);

    // Alice tests positive and uploads; Bob learns the day, Carol learns nothing.
    let attested = api.attest(&policy, T0).await.expect("attested");
    assert_eq!(
        api.upload(&attested, UPLOAD_SECRET, &alice)
            .await
            .expect("stored"),
        1
    );
    let wrong = api
        .upload(&attested, "not the secret", &alice)
        .await
        .expect_err("refused");
    assert!(
        matches!(wrong, ClientError::Status { status: 401, .. }),
        "{wrong}"
    );
    assert_eq!(
        api.poll(&attested, &bob).await.expect("polled"),
        Some(day(met))
    );
    assert_eq!(api.poll(&attested, &carol).await.expect("polled"), None);
    // Alice's own log is not her contacts' view of her.
    assert_eq!(api.poll(&attested, &alice).await.expect("polled"), None);
    assert_eq!(matcher.counter("confidant_matcher_polls_total").await, 3);
    assert_eq!(matcher.counter("confidant_matcher_exposed_total").await, 1);

    // The stored log holds no id in the clear.
    let stored = std::fs::read(dir.path().join("tuples.sealed")).expect("sealed log");
    for id in [alice_id, bob_id] {
        assert!(
            !stored.windows(16).any(|w| w == id),
            "an id is in the sealed log"
        );
    }

    // Evidence is good for an hour; after that a phone must attest again.
    clock.store(T0 + 2 * HOUR, Ordering::Relaxed);
    match api.poll(&attested, &bob).await {
        Err(ClientError::Status {
            status: 409,
            code: Some(code),
            ..
        }) => assert_eq!(code, "stale_evidence"),
        other => panic!("expected stale_evidence, got {other:?}"),
    }

    // A restart with the same sealing key keeps the upload, under a new key and evidence.
    matcher.stop().await;
    let matcher = start(dir.path(), &key, &clock).await;
    let api = MatcherApi::new(&matcher.url).expect("api");
    let fresh = api.attest(&policy, T0 + 2 * HOUR).await.expect("attested");
    assert_ne!(
        fresh.public_key, attested.public_key,
        "the key is drawn anew at start"
    );
    assert_eq!(
        api.poll(&fresh, &bob).await.expect("polled"),
        Some(day(met))
    );

    // Fourteen days after the encounter it is forgotten.
    clock.store(met + 14 * DAY, Ordering::Relaxed);
    let later = api.attest(&policy, met + 14 * DAY).await.expect("attested");
    assert_eq!(api.poll(&later, &bob).await.expect("polled"), None);
    matcher.stop().await;
    let restarted = start(dir.path(), &key, &clock).await;
    let api = MatcherApi::new(&restarted.url).expect("api");
    let after = api.attest(&policy, met + 14 * DAY).await.expect("attested");
    assert_eq!(api.poll(&after, &bob).await.expect("polled"), None);
    assert!(
        std::fs::read(dir.path().join("tuples.sealed"))
            .expect("log")
            .is_empty(),
        "compacted away"
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_for_another_key_or_nonce_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(T0));
    let matcher = start(dir.path(), &SealingKey::ephemeral(), &clock).await;
    // A man in the middle answers with its own key and the matcher's evidence: the binding
    // of key and nonce no longer holds.
    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
    let answer: serde_json::Value = reqwest::get(format!(
        "{}/attestation?nonce={}",
        matcher.url,
        hex::encode(nonce)
    ))
    .await
    .expect("attestation")
    .json()
    .await
    .expect("json");
    let evidence = confidant_attest::Evidence::from_json(answer["evidence"].to_string().as_bytes())
        .expect("evidence");
    let policy = insecure_simulated_policy(MEASUREMENT);
    let genuine: [u8; 32] = hex::decode(answer["publicKey"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("32");
    assert!(
        confidant_attest::verify(
            &evidence,
            &confidant_attest::binding::report_data(&genuine, &nonce),
            &policy,
            T0
        )
        .is_ok()
    );
    for (key, nonce) in [([9u8; 32], nonce), (genuine, [0u8; 32])] {
        let refused = confidant_attest::verify(
            &evidence,
            &confidant_attest::binding::report_data(&key, &nonce),
            &policy,
            T0,
        );
        assert!(
            matches!(refused, Err(AttestError::ReportDataMismatch { .. })),
            "{refused:?}"
        );
    }
    // A measurement the phone does not pin is refused too.
    let other = insecure_simulated_policy([8; 48]);
    assert!(
        confidant_attest::verify(
            &evidence,
            &confidant_attest::binding::report_data(&genuine, &nonce),
            &other,
            T0
        )
        .is_err()
    );
    let malformed = reqwest::get(format!("{}/attestation?nonce=abc", matcher.url))
        .await
        .expect("request");
    assert_eq!(malformed.status(), 400);
    matcher.stop().await;
}

/// The main server in front: a provider posts results, phones poll them, the positive phone
/// uploads once with its test secret, and every tuple request passes the main server sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_uploads_go_through_the_main_server_which_reads_no_tuple() {
    use confidant_client::confidential::{ResultsApi, TestSecret, TestStatus};
    use confidant_store::testing::TestDatabase;

    let matcher_dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(AtomicU64::new(T0));
    let matcher = start(matcher_dir.path(), &SealingKey::ephemeral(), &clock).await;
    let db = TestDatabase::sqlite();
    let published = tempfile::tempdir().expect("temp dir");
    let matcher_url = matcher.url.clone();
    let server = crate::TestServer::start_with(
        &db,
        confidant_server::ManualClock::new(T0),
        published.path(),
        |settings| {
            settings.matcher = Some(confidant_server::MatcherLink {
                url: matcher_url,
                upload_secret: UPLOAD_SECRET.into(),
            });
        },
    )
    .await;
    let results = ResultsApi::new(&server.url).expect("api");
    let api = MatcherApi::new(&format!("{}/matcher", server.url)).expect("api");
    let policy = insecure_simulated_policy(MEASUREMENT);

    let post = |test_id: String, result: &'static str| {
        let http = server.http.clone();
        let url = format!("{}/v1/results", server.url);
        async move {
            http.post(url)
                .bearer_auth(crate::PROVIDER_TOKEN)
                .json(&serde_json::json!({"testId": test_id, "result": result}))
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    let (alice_test, carol_test, dave_test) = (
        TestSecret::generate(&mut OsRng),
        TestSecret::generate(&mut OsRng),
        TestSecret::generate(&mut OsRng),
    );
    assert_eq!(
        results.poll(&alice_test).await.expect("polled"),
        TestStatus::Pending
    );
    assert_eq!(post(alice_test.test_id(), "positive").await, 201);
    assert_eq!(post(carol_test.test_id(), "negative").await, 201);
    assert_eq!(post(dave_test.test_id(), "maybe").await, 400);
    assert_eq!(
        results.poll(&alice_test).await.expect("polled"),
        TestStatus::Positive { uploaded: false }
    );
    assert_eq!(
        results.poll(&carol_test).await.expect("polled"),
        TestStatus::Negative
    );
    assert_eq!(
        results.poll(&dave_test).await.expect("polled"),
        TestStatus::Pending
    );

    let met = T0 - DAY;
    let (mut alice, mut bob, mut carol) = (ContactLog::new(), ContactLog::new(), ContactLog::new());
    alice.record([0xA1; 16], [0xB2; 16], day(met), 600);
    bob.record([0xB2; 16], [0xA1; 16], day(met), 600);
    carol.record([0xC3; 16], [0xB2; 16], day(met), 600);
    let attested = api
        .attest(&policy, T0)
        .await
        .expect("attested through the main server");
    // A negative or unknown result cannot upload; the positive one can, once.
    for test in [&carol_test, &dave_test] {
        let refused = api
            .upload(&attested, &test.bearer(), &carol)
            .await
            .expect_err("refused");
        assert!(
            matches!(refused, ClientError::Status { status: 403, code: Some(ref c), .. } if c == "no_positive_result"),
            "{refused}"
        );
    }
    assert_eq!(
        api.upload(&attested, &alice_test.bearer(), &alice)
            .await
            .expect("stored"),
        1
    );
    assert_eq!(
        results.poll(&alice_test).await.expect("polled"),
        TestStatus::Positive { uploaded: true }
    );
    let again = api
        .upload(&attested, &alice_test.bearer(), &alice)
        .await
        .expect_err("once");
    assert!(
        matches!(again, ClientError::Status { status: 403, .. }),
        "{again}"
    );
    assert_eq!(
        api.poll(&attested, &bob).await.expect("polled"),
        Some(day(met))
    );
    assert_eq!(api.poll(&attested, &carol).await.expect("polled"), None);

    let report = server.store.check().await.expect("check");
    assert!(report.consistent(), "{report:?}");
    // The main server's database and log hold no tuple id.
    let log: Vec<String> = server
        .store
        .events()
        .await
        .expect("events")
        .iter()
        .map(confidant_core::Event::encode)
        .collect();
    let text = log.join("\n");
    assert!(text.contains("test_result_posted") && text.contains("test_result_used"));
    for id in ["a1a1a1a1", "b2b2b2b2"] {
        assert!(!text.contains(id), "a tuple id in the main server's log");
    }
    server.stop().await;
    db.finish().await;
    matcher.stop().await;
}
