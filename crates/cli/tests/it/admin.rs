//! `confidant admin …` against a running `confidant serve`: the console bootstrap of the first
//! token, then providers, codes, keys, submissions, tokens and the audit trail over the API.

use std::process::Command;

use confidant_store::Dialect;
use confidant_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::serve::{admin, bootstrap_token, field, serve, store_args};
use crate::{confidant, fails, ok, path_str};

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_drive_a_running_server_and_are_audited() {
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let data = tempfile::tempdir().expect("tempdir");
        let db = TestDatabase::create(dialect).await;
        let url = (dialect == Dialect::Postgres).then(|| db.url().to_owned());
        let url = url.as_deref();
        let server = serve(data.path(), url);
        let http = reqwest::Client::new();

        // The bootstrap: straight into the database, then everything over the API.
        let mut create = vec![
            "admin", "token", "create", "--scope", "admin", "--label", "ops",
        ];
        create.extend(store_args(data.path(), url));
        let printed = ok(confidant(&create));
        let (root_id, root) = (field(&printed, "token id:"), field(&printed, "token:"));
        assert!(root.starts_with(&format!("cadm_{root_id}_")), "{printed}");
        let reader = bootstrap_token(data.path(), url, "read");

        let no_token = Command::new(env!("CARGO_BIN_EXE_confidant"))
            .args(["admin", "provider", "list", "--url", server.base.as_str()])
            .env_remove("CONFIDANT_ADMIN_TOKEN")
            .output()
            .expect("runs");
        assert!(fails(no_token).contains("an admin token is needed"));

        let added = ok(admin(
            &server,
            &root,
            &[
                "provider",
                "add",
                "--name",
                "Field clinic",
                "--region",
                "302",
                "--reason",
                "new test site",
            ],
        ));
        let (id, api_token) = (field(&added, "provider id:"), field(&added, "api token:"));
        let shown = ok(admin(&server, &root, &["provider", "show", &id]));
        assert!(
            shown.contains("Field clinic") && field(&shown, "status:") == "active",
            "{shown}"
        );

        // Problems come back as their detail and code, with exit 1.
        let err = fails(admin(
            &server,
            &reader,
            &["provider", "suspend", &id, "--reason", "r"],
        ));
        assert!(
            err.contains("insufficient_scope") && err.contains("HTTP 403"),
            "{err}"
        );
        let err = fails(admin(
            &server,
            &root,
            &["provider", "suspend", "xyz", "--reason", "r"],
        ));
        assert!(
            err.contains("a provider id is 16 hexadecimal characters"),
            "{err}"
        );
        let err = fails(admin(
            &server,
            &root,
            &["provider", "suspend", "0011223344556677", "--reason", "r"],
        ));
        assert!(err.contains("unknown_provider"), "{err}");
        let err = fails(admin(
            &server,
            &root,
            &[
                "provider", "add", "--name", "X", "--region", "D E", "--reason", "r",
            ],
        ));
        assert!(err.contains("a region is 1 to 16 letters"), "{err}");

        // A code, invalidated before anyone redeems it.
        let base = &server.base;
        let code = post(
            &http,
            format!("{base}/v1/codes"),
            Some(&api_token),
            json!({}),
        )
        .await;
        let code = code["code"].as_str().expect("code").to_owned();
        let invalidated = ok(admin(
            &server,
            &root,
            &["code", "invalidate", &code, "--reason", "sheet lost"],
        ));
        assert!(invalidated.contains("invalidated"), "{invalidated}");
        let refused = post(
            &http,
            format!("{base}/v1/verify"),
            None,
            json!({"code": code}),
        )
        .await;
        assert_eq!(refused["code"], "invalid_code");

        // A submission: one key de-registered by file (hex), then the whole submission.
        let code = post(
            &http,
            format!("{base}/v1/codes"),
            Some(&api_token),
            json!({}),
        )
        .await;
        let verified = post(
            &http,
            format!("{base}/v1/verify"),
            None,
            json!({"code": code["code"]}),
        )
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let today = now / 600 / 144 * 144;
        let keys = json!({"keys": [
            {"key": "AAECAwQFBgcICQoLDA0ODw==", "rollingStartNumber": today, "rollingPeriod": 144},
            {"key": "EBESExQVFhcYGRobHB0eHw==", "rollingStartNumber": today - 144, "rollingPeriod": 144},
        ]});
        let submitted = post(
            &http,
            format!("{base}/v1/submissions"),
            verified["token"].as_str(),
            keys,
        )
        .await;
        let tracking = submitted["trackingId"].as_str().expect("tracking id");
        let list = data.path().join("keys.txt");
        std::fs::write(
            &list,
            "# reported by the user\n000102030405060708090a0b0c0d0e0f\n\nffffffffffffffffffffffffffffffff\n",
        )
        .expect("key file");
        let deregistered = ok(admin(
            &server,
            &root,
            &[
                "key",
                "deregister",
                "--file",
                path_str(&list),
                "--reason",
                "user asked",
            ],
        ));
        assert!(
            deregistered.contains("de-registered 1 key(s); 0 already withdrawn; 1 unknown"),
            "{deregistered}"
        );
        let err = fails(admin(
            &server,
            &root,
            &[
                "key",
                "deregister",
                "/////////////////////w==",
                "--reason",
                "r",
            ],
        ));
        assert!(err.contains("none of the keys is held"), "{err}");
        let shown = ok(admin(&server, &reader, &["submission", "show", tracking]));
        assert_eq!(field(&shown, "status:"), "accepted");
        assert_eq!(field(&shown, "keys:"), "2 (1 withdrawn)");
        let withdrawn = ok(admin(
            &server,
            &root,
            &[
                "submission",
                "withdraw",
                tracking,
                "--reason",
                "wrong person",
            ],
        ));
        assert!(withdrawn.contains("(1 key(s))"), "{withdrawn}");
        let shown = ok(admin(&server, &reader, &["submission", "show", tracking]));
        assert_eq!(field(&shown, "status:"), "withdrawn");

        // Revoked with its past: the provider's reports from the start of time.
        let revoked = ok(admin(
            &server,
            &root,
            &[
                "provider",
                "revoke",
                &id,
                "--reason",
                "forged results",
                "--retroactive",
                "--since",
                "0",
            ],
        ));
        assert!(revoked.contains("is now revoked"), "{revoked}");
        assert!(
            revoked.contains(
                "withdrew 0 submission(s) (0 key(s)) submitted from 1970-01-01T00:00:00Z on"
            ),
            "already withdrawn: {revoked}"
        );
        let listing = ok(admin(&server, &reader, &["provider", "list"]));
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("revoked")),
            "{listing}"
        );

        // Tokens: listed, revoked, refused at once.
        let tokens = ok(admin(&server, &root, &["token", "list"]));
        assert_eq!(tokens.lines().count(), 3, "{tokens}");
        let reader_id = reader.split('_').nth(1).expect("token id").to_owned();
        let revoked = ok(admin(
            &server,
            &root,
            &["token", "revoke", &reader_id, "--reason", "rotation"],
        ));
        assert!(revoked.contains("is now revoked"), "{revoked}");
        let err = fails(admin(&server, &reader, &["audit"]));
        assert!(err.contains("invalid_admin_token"), "{err}");

        // The trail: each change once, with its actor and reason; the refusals are absent.
        let trail = ok(admin(&server, &root, &["audit"]));
        let actions: Vec<(&str, &str)> = trail
            .lines()
            .map(|l| {
                let mut words = l.split_whitespace().skip(2);
                (words.next().expect("actor"), words.next().expect("action"))
            })
            .collect();
        let me = format!("token:{root_id}");
        assert_eq!(
            actions,
            [
                ("console", "token.create"),
                ("console", "token.create"),
                (me.as_str(), "provider.register"),
                (me.as_str(), "code.invalidate"),
                (me.as_str(), "keys.deregister"),
                (me.as_str(), "submission.withdraw"),
                (me.as_str(), "provider.revoke"),
                (me.as_str(), "token.revoke"),
            ],
            "{dialect:?}: {trail}"
        );
        assert!(
            trail.contains("reason: new test site") && trail.contains("reason: forged results"),
            "{trail}"
        );
        let paged = ok(admin(
            &server,
            &root,
            &["audit", "--after", "0", "--limit", "2"],
        ));
        assert_eq!(paged.lines().count(), 2, "{paged}");

        server.stop();
        let err = fails(confidant(&[
            "admin",
            "provider",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            &root,
        ]));
        assert!(
            err.contains("cannot connect to http://127.0.0.1:9"),
            "{err}"
        );
        db.finish().await;
    }
}
