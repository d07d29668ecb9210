//! `confidant serve` as an operator runs it, with the provider commands beside it, on SQLite and
//! PostgreSQL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use confidant_store::Dialect;
use confidant_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::{confidant, fails, ok, path_str, run_match};

struct Server {
    child: Child,
    base: String,
}

/// Starts `confidant serve` on a free port and waits for its "serving" log line.
fn serve(data_dir: &Path, database_url: Option<&str>) -> Server {
    serve_with(data_dir, database_url, &[])
}

fn serve_with(data_dir: &Path, database_url: Option<&str>, extra: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confidant"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
            path_str(data_dir),
        ])
        .env_remove("CONFIDANT_DATABASE_URL")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    command.args(extra);
    let mut child = command.spawn().expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("serve logs before exiting")
            .expect("log line");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "confidant is serving" {
            break entry["fields"]["address"]
                .as_str()
                .expect("address")
                .to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: format!("http://{address}"),
    }
}

impl Server {
    fn stop(mut self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("serve exits");
        assert!(status.success(), "serve exited with {status}");
    }
}

fn store_args<'a>(data_dir: &'a Path, database_url: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--data-dir", path_str(data_dir)];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    args
}

async fn issue_code(http: &reqwest::Client, server: &Server, token: &str) -> reqwest::StatusCode {
    http.post(format!("{}/v1/codes", server.base))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_against_a_running_server() {
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let data = tempfile::tempdir().expect("tempdir");
        let db = TestDatabase::create(dialect).await;
        let url = (dialect == Dialect::Postgres).then(|| db.url().to_owned());
        let url = url.as_deref();
        let server = serve(data.path(), url);
        let http = reqwest::Client::new();

        // Registered while the server runs, usable at once.
        let mut add = vec![
            "provider",
            "add",
            "--name",
            "St. Mary's Lab",
            "--region",
            "DE",
        ];
        add.extend(store_args(data.path(), url));
        let printed = ok(confidant(&add));
        let field = |name: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .expect(name)
        };
        let (id, token) = (field("provider id:"), field("api token:"));
        assert_eq!(issue_code(&http, &server, &token).await, 201, "{dialect:?}");

        let mut suspend = vec!["provider", "suspend", id.as_str()];
        suspend.extend(store_args(data.path(), url));
        assert!(ok(confidant(&suspend)).contains("is now suspended"));
        assert_eq!(
            issue_code(&http, &server, &token).await,
            403,
            "suspension is seen at once"
        );
        let mut reinstate = vec!["provider", "reinstate", id.as_str()];
        reinstate.extend(store_args(data.path(), url));
        ok(confidant(&reinstate));

        let code: Value = http
            .post(format!("{}/v1/codes", server.base))
            .bearer_auth(&token)
            .json(&json!({"format": "long"}))
            .send()
            .await
            .expect("code")
            .json()
            .await
            .expect("json");
        let verified: Value = http
            .post(format!("{}/v1/verify", server.base))
            .json(&json!({"code": code["code"]}))
            .send()
            .await
            .expect("verify")
            .json()
            .await
            .expect("json");
        assert!(verified["token"].is_string(), "verify answered {verified}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let keys = json!({"keys": [{"key": "AAECAwQFBgcICQoLDA0ODw==", "rollingStartNumber": now / 600 / 144 * 144, "rollingPeriod": 144}]});
        let submitted = http
            .post(format!("{}/v1/submissions", server.base))
            .bearer_auth(verified["token"].as_str().expect("token"))
            .json(&keys)
            .send()
            .await
            .expect("submit");
        assert_eq!(submitted.status(), 200);
        server.stop();

        // Everything acknowledged is there after a restart; rebuild and check agree.
        let restarted = serve(data.path(), url);
        assert_eq!(issue_code(&http, &restarted, &token).await, 201);
        restarted.stop();
        let mut list = vec!["provider", "list"];
        list.extend(store_args(data.path(), url));
        let listing = ok(confidant(&list));
        assert!(
            listing.contains(&id)
                && listing.contains("active")
                && listing.contains("St. Mary's Lab"),
            "{listing}"
        );
        let mut rebuild = vec!["rebuild"];
        rebuild.extend(store_args(data.path(), url));
        assert!(ok(confidant(&rebuild)).contains("replayed"));
        let mut check = vec!["check"];
        check.extend(store_args(data.path(), url));
        let report = ok(confidant(&check));
        assert!(report.contains("consistent"), "{report}");
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("keys") && l.split_whitespace().nth(1) == Some("1")),
            "{report}"
        );
        db.finish().await;
    }
}

#[test]
fn configuration_errors_are_explained() {
    let data = tempfile::tempdir().expect("tempdir");
    let config = data.path().join("confidant.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_bach = 3\n").expect("config");
    let err = fails(confidant(&[
        "serve",
        "--config",
        path_str(&config),
        "--data-dir",
        path_str(data.path()),
    ]));
    assert!(
        err.contains("confidant.toml is not a valid configuration") && err.contains("max_bach"),
        "{err}"
    );

    std::fs::write(data.path().join("secret.key"), "abcd\n").expect("secret");
    let err = fails(confidant(&[
        "provider",
        "list",
        "--data-dir",
        path_str(data.path()),
    ]));
    assert!(err.contains("the secret must be at least 32"), "{err}");

    let fresh = tempfile::tempdir().expect("tempdir");
    let err = fails(confidant(&[
        "provider",
        "add",
        "--name",
        "X",
        "--region",
        "D E",
        "--data-dir",
        path_str(fresh.path()),
    ]));
    assert!(err.contains("a region is 1 to 16 letters"), "{err}");
    let err = fails(confidant(&[
        "provider",
        "suspend",
        "xyz",
        "--data-dir",
        path_str(fresh.path()),
    ]));
    assert!(
        err.contains("a provider id is 16 hexadecimal characters"),
        "{err}"
    );
    let err = fails(confidant(&[
        "provider",
        "suspend",
        "0011223344556677",
        "--data-dir",
        path_str(fresh.path()),
    ]));
    assert!(err.contains("no provider has id 0011223344556677"), "{err}");

    // Publication settings are checked before anything starts.
    for (toml, expected) in [
        (
            "[publication]\nexport_period = 7000\n",
            "export_period must divide a day",
        ),
        (
            "[publication]\nsmall_batch = { mode = \"sometimes\" }\n",
            "sometimes",
        ),
        (
            "[regions.\"302\"]\nsigners = []\n",
            "must list 1 to 10 keys",
        ),
        (
            "[regions.\"302\"]\nkey_id = \"a b\"\n",
            "printable ASCII without spaces",
        ),
        (
            "key_retention_days = 30\n",
            "key_event_retention_days must be at least",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("confidant.toml");
        std::fs::write(&config, toml).expect("config");
        let err = fails(confidant(&[
            "serve",
            "--config",
            path_str(&config),
            "--data-dir",
            path_str(dir.path()),
        ]));
        assert!(err.contains(expected), "{toml}: {err}");
    }
}

/// Without `--trust-forwarded-for`, a client cannot escape the brute-force limit by naming a
/// new address in `X-Forwarded-For` on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_are_not_trusted_by_default() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = serve(data.path(), None);
    let http = reqwest::Client::new();
    let mut last = reqwest::StatusCode::OK;
    for n in 0..9 {
        last = http
            .post(format!("{}/v1/verify", server.base))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .json(&json!({"code": "00000000"}))
            .send()
            .await
            .expect("request")
            .status();
    }
    assert_eq!(last, reqwest::StatusCode::TOO_MANY_REQUESTS);
    server.stop();
}

/// The whole path a report takes, as the issue's "done when" states it: `confidant serve --dev`
/// with defaults publishes signed exports, and `confidant match` finds the exposure in files
/// fetched over HTTP from `/exports`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_exposure_is_found_in_exports_fetched_over_http() {
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let data = tempfile::tempdir().expect("tempdir");
        let db = TestDatabase::create(dialect).await;
        let url = (dialect == Dialect::Postgres).then(|| db.url().to_owned());
        let url = url.as_deref();
        let server = serve_with(data.path(), url, &["--dev"]);
        let http = reqwest::Client::new();
        let mut add = vec!["provider", "add", "--name", "Lab", "--region", "302"];
        add.extend(store_args(data.path(), url));
        let printed = ok(confidant(&add));
        let token = printed
            .lines()
            .find_map(|l| l.strip_prefix("api token:"))
            .expect("token")
            .trim()
            .to_owned();
        let post = |path: &str, token: Option<&str>, body: Value| {
            let mut request = http.post(format!("{}{path}", server.base)).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                response.json::<Value>().await.expect("json")
            }
        };
        let code = post("/v1/codes", Some(&token), json!({"format": "long"})).await;
        let verified = post("/v1/verify", None, json!({"code": code["code"]})).await;
        let upload_token = verified["token"].as_str().expect("token").to_owned();

        // Yesterday's key of the person who tested positive, and what a phone nearby heard.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let yesterday = (now / 600) / 144 * 144 - 144;
        let tek = "0123456789abcdef0123456789abcdef";
        let heard = ok(confidant(&[
            "keys",
            "derive",
            "--tek",
            tek,
            "--rsin",
            &yesterday.to_string(),
        ]));
        let observations = data.path().join("observations.txt");
        let sample: Vec<&str> = heard.lines().skip(40).take(3).collect();
        std::fs::write(&observations, sample.join("\n")).expect("observations");
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hex::decode(tek).expect("hex"),
        );
        let submitted = post(
            "/v1/submissions",
            Some(&upload_token),
            json!({"keys": [{"key": key, "rollingStartNumber": yesterday, "rollingPeriod": 144, "transmissionRisk": 5}]}),
        )
        .await;
        assert_eq!(submitted["inserted"], 1);

        // Not published before the submission hour is over; out after the clock moves on.
        let index_url = format!("{}/exports/302/index.txt", server.base);
        let listed = |text: String| text.lines().map(str::to_owned).collect::<Vec<_>>();
        let before = http.get(&index_url).send().await.expect("index");
        let before = if before.status() == 200 {
            listed(before.text().await.expect("text"))
        } else {
            Vec::new()
        };
        let moved = post("/dev/clock", None, json!({"advanceSeconds": 7200})).await;
        assert!(moved["now"].as_u64().expect("now") >= now + 7200);
        assert!(
            moved["keysPublished"].as_u64().expect("count") >= 1,
            "{moved}"
        );
        let after = listed(
            http.get(&index_url)
                .send()
                .await
                .expect("index")
                .text()
                .await
                .expect("text"),
        );
        assert!(after.len() > before.len(), "{after:?}");

        let downloads = data.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("dir");
        for path in &after {
            let bytes = http
                .get(format!("{}/{path}", server.base))
                .send()
                .await
                .expect("file")
                .bytes()
                .await
                .expect("bytes");
            let name = path.rsplit('/').next().expect("name");
            std::fs::write(downloads.join(name), bytes).expect("write");
        }
        let public_key = data.path().join("signing-key.pub.pem");
        let output = run_match(&observations, &public_key, &downloads, &[]);
        let found = ok(output);
        assert_eq!(found.lines().count(), 3, "every heard RPI matches: {found}");

        // Without --dev the clock cannot be moved.
        server.stop();
        let plain = serve(data.path(), url);
        let response = http
            .post(format!("{}/dev/clock", plain.base))
            .json(&json!({"advanceSeconds": 1}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 404);
        plain.stop();
        db.finish().await;
    }
}
