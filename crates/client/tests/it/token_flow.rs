//! Encounter tokens end to end, as phones and a health authority use them: phones meet and
//! derive tokens by X25519, the authority imports a TAN list over the admin API, the diagnosed
//! phone redeems its TAN and uploads, the server publishes, and the phones it met find the
//! match in their area's filter; a matched phone chains at level 1 and a third phone is
//! notified at level 1; redacted encounters, reused nonces, forged preimages and level 2 are
//! refused.

use confidant_client::ClientError;
use confidant_client::encounter::{EncounterDetector, EncounterStore, EphemeralKeys};
use confidant_client::tokens::{
    Contribution, TokenApi, TokenDownloader, chained_upload_list, upload_list,
};
use confidant_core::corrections::{Actor, Scope};
use confidant_core::{KeyedHasher, Region};
use confidant_server::{Clock, ManualClock, new_admin_token};
use confidant_store::testing::TestDatabase;

use crate::encounter::contact;
use crate::{HOUR, SECRET, T0, TestServer};

/// The provider `TestServer` registers: here, the health authority importing TANs.
const AUTHORITY: &str = "0101010101010101";

/// A phone: its ephemeral keys, what it detected, and what it kept.
struct Phone {
    detector: EncounterDetector,
    store: EncounterStore,
}

impl Phone {
    fn new(seed: u8) -> Self {
        Self {
            detector: EncounterDetector::new(EphemeralKeys::from_seed([seed; 32])),
            store: EncounterStore::new(),
        }
    }
}

/// Two phones side by side for `minutes` from `start`, each keeping what it detected.
fn meet(a: &mut Phone, b: &mut Phone, start: u64, minutes: u64, seed: u64) {
    let (heard_by_a, heard_by_b) =
        contact(&mut a.detector, &mut b.detector, start, minutes * 60, seed);
    a.store.extend(heard_by_a);
    b.store.extend(heard_by_b);
}

fn downloader(
    server: &TestServer,
    area: &str,
) -> TokenDownloader<confidant_client::download::HttpFetch> {
    TokenDownloader::new(
        server.fetch(),
        Region::try_from(area.to_owned()).expect("area"),
        [("tokens-v1".to_owned(), server.public_key.clone())],
    )
}

fn refused_with(error: ClientError, expected: &str) {
    match error {
        ClientError::Status {
            code: Some(code), ..
        } if code == expected => {}
        other => panic!("expected {expected}, got {other}"),
    }
}

/// The health authority's operator imports a TAN list over the admin API.
async fn import_tans(server: &TestServer, tans: &[&str]) {
    let (secret, command) = new_admin_token(&KeyedHasher::new(SECRET), Scope::Operate, "authority");
    server
        .store
        .correct(
            command,
            Actor::Console,
            server.clock.now(),
            "bootstrap".into(),
        )
        .await
        .expect("admin token");
    let response = server
        .http
        .post(format!("{}/admin/v1/tans", server.url))
        .bearer_auth(&secret)
        .json(&serde_json::json!({"provider": AUTHORITY, "tans": tans, "reason": "today's list"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diagnosed_phone_warns_whom_it_met_and_a_chain_warns_the_next_at_level_one() {
    let db = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&db, ManualClock::new(T0), dir.path()).await;
    let api = TokenApi::new(&server.url).expect("api");

    // The day before: Alice meets Bob for 45 minutes and Dana for 20; Bob meets Carol.
    let (mut alice, mut bob, mut carol, mut dana) =
        (Phone::new(1), Phone::new(2), Phone::new(3), Phone::new(4));
    let yesterday = T0 - 20 * HOUR;
    meet(&mut alice, &mut bob, yesterday, 45, 1);
    meet(&mut alice, &mut dana, yesterday + 2 * HOUR, 20, 2);
    meet(&mut bob, &mut carol, yesterday + 4 * HOUR, 30, 3);
    assert!(!bob.store.is_empty() && !carol.store.is_empty() && !dana.store.is_empty());
    // Alice does not want to share where she met Dana.
    let with_dana: Vec<u64> = dana
        .store
        .encounters()
        .iter()
        .map(|e| e.tokens.report.hash())
        .flat_map(|hash| {
            alice
                .store
                .encounters()
                .iter()
                .filter(move |e| e.tokens.check.hash() == hash)
                .map(|e| e.id)
        })
        .collect();
    assert!(!with_dana.is_empty());
    for id in with_dana {
        assert!(alice.store.redact(id));
    }

    // Alice tests positive: the authority's TAN buys nonces, and one uploads her encounters.
    import_tans(&server, &["TAN-4711-0815", "TAN-4711-0816"]).await;
    let nonces = api.redeem("tan 4711 0815").await.expect("redeemed");
    assert_eq!(nonces.nonces.len(), 3);
    let reported = upload_list(&alice.store, T0);
    let receipt = api
        .upload(&nonces.nonces[0], "64283", &reported)
        .await
        .expect("uploaded");
    assert_eq!(
        (receipt.accepted as usize, receipt.level),
        (reported.len(), 0)
    );
    refused_with(
        api.upload(&nonces.nonces[0], "64283", &reported)
            .await
            .expect_err("used"),
        "nonce_used",
    );
    refused_with(
        api.redeem("TAN-4711-0815")
            .await
            .expect_err("redeemed once"),
        "invalid_code",
    );

    server.publish_at(T0 + 2 * HOUR).await;
    // Bob's phone finds his encounter with Alice; Dana's and Carol's find nothing.
    let mut bob_feed = downloader(&server, "64");
    let update = bob_feed.sync(&bob.store).await.expect("synced");
    assert!(!update.matches.is_empty(), "{update:?}");
    assert!(update.matches.iter().all(|m| m.level == 0));
    for (phone, name) in [(&dana, "Dana"), (&carol, "Carol")] {
        let mut feed = downloader(&server, "64");
        let update = feed.sync(&phone.store).await.expect("synced");
        assert!(
            update.matches.is_empty(),
            "{name} was not met by Alice: {update:?}"
        );
    }

    // Bob proves his encounter with the preimage and reports his own: Carol is notified at
    // level 1. The same preimage works once, a made-up one never.
    let proof = update.matches[0].preimage;
    let known = [update.matches.clone(), update.unconfirmed.clone()].concat();
    let bob_reports = chained_upload_list(&bob.store, T0 + 2 * HOUR, &known);
    assert!(bob_reports.len() < upload_list(&bob.store, T0 + 2 * HOUR).len());
    let chained = api
        .upload_chained(&proof, "64", &bob_reports)
        .await
        .expect("chained");
    assert_eq!(chained.level, 1);
    refused_with(
        api.upload_chained(&proof, "64", &upload_list(&bob.store, T0))
            .await
            .expect_err("once"),
        "proof_used",
    );
    refused_with(
        api.upload_chained(&confidant_core::encounter::Token([7; 32]), "64", &reported)
            .await
            .expect_err("forged"),
        "unknown_proof",
    );
    server.publish_at(T0 + 4 * HOUR).await;
    let mut carol_feed = downloader(&server, "64");
    let update = carol_feed.sync(&carol.store).await.expect("synced");
    assert!(!update.matches.is_empty(), "{update:?}");
    assert!(update.matches.iter().all(|m| m.level == 1));
    // The default maximum level is 1: Carol cannot chain further.
    refused_with(
        api.upload_chained(
            &update.matches[0].preimage,
            "64",
            &upload_list(&carol.store, T0),
        )
        .await
        .expect_err("level 2"),
        "level_too_high",
    );
    // Bob's feed, synced again, has nothing new for him; Alice's phone matches neither her own
    // upload nor Bob's, which left out their encounter.
    assert!(
        bob_feed
            .sync(&bob.store)
            .await
            .expect("synced")
            .matches
            .is_empty()
    );
    let mut alice_feed = downloader(&server, "64");
    assert!(
        alice_feed
            .sync(&alice.store)
            .await
            .expect("synced")
            .matches
            .is_empty()
    );

    // Opt-in research data from Bob's proven encounter.
    let contribution = Contribution::from(&bob_feed.matches()[0]);
    assert_eq!(api.contribute(&[contribution]).await.expect("recorded"), 1);
    let cells = server.store.research().await.expect("research");
    assert_eq!(cells.iter().map(|(_, n)| n).sum::<u64>(), 1);
    server.stop().await;
    db.finish().await;
}
