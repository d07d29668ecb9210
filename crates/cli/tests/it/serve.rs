//! `confidant serve` as an operator runs it, with the admin commands beside it, on SQLite and
//! PostgreSQL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use confidant_store::Dialect;
use confidant_store::testing::TestDatabase;
use serde_json::{Value, json};

use crate::{confidant, fails, ok, path_str, run_match};

pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

/// Starts `confidant serve` on a free port and waits for its "serving" log line.
pub(crate) fn serve(data_dir: &Path, database_url: Option<&str>) -> Server {
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
    pub(crate) fn stop(mut self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("serve exits");
        assert!(status.success(), "serve exited with {status}");
    }
}

pub(crate) fn store_args<'a>(data_dir: &'a Path, database_url: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["--data-dir", path_str(data_dir)];
    if let Some(url) = database_url {
        args.extend(["--database-url", url]);
    }
    args
}

/// The value after `name` on a line of `printed`.
pub(crate) fn field(printed: &str, name: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in {printed}"))
}

/// `confidant admin token create` on the server's database: the token's secret.
pub(crate) fn bootstrap_token(data_dir: &Path, database_url: Option<&str>, scope: &str) -> String {
    let mut create = vec![
        "admin", "token", "create", "--scope", scope, "--label", "ops",
    ];
    create.extend(store_args(data_dir, database_url));
    field(&ok(confidant(&create)), "token:")
}

/// `confidant admin …` against `server` with `token`.
pub(crate) fn admin(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    all.extend(["--url", server.base.as_str(), "--token", token]);
    confidant(&all)
}

/// `confidant admin provider add`: the provider's id and API token.
fn add_provider(server: &Server, token: &str, name: &str, region: &str) -> (String, String) {
    let printed = ok(admin(
        server,
        token,
        &[
            "provider", "add", "--name", name, "--region", region, "--reason", "new lab",
        ],
    ));
    (
        field(&printed, "provider id:"),
        field(&printed, "api token:"),
    )
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
        let admin_token = bootstrap_token(data.path(), url, "admin");
        let (id, token) = add_provider(&server, &admin_token, "St. Mary's Lab", "DE");
        assert_eq!(issue_code(&http, &server, &token).await, 201, "{dialect:?}");

        let suspend = ["provider", "suspend", id.as_str(), "--reason", "review"];
        assert!(ok(admin(&server, &admin_token, &suspend)).contains("is now suspended"));
        assert_eq!(
            issue_code(&http, &server, &token).await,
            403,
            "suspension is seen at once"
        );
        let reinstate = [
            "provider",
            "reinstate",
            id.as_str(),
            "--reason",
            "review over",
        ];
        assert!(ok(admin(&server, &admin_token, &reinstate)).contains("is now active"));

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
        let listing = ok(admin(&restarted, &admin_token, &["provider", "list"]));
        assert!(
            listing.contains(&id)
                && listing.contains("active")
                && listing.contains("St. Mary's Lab"),
            "{listing}"
        );
        restarted.stop();
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
        "admin",
        "token",
        "create",
        "--scope",
        "admin",
        "--data-dir",
        path_str(data.path()),
    ]));
    assert!(err.contains("the secret must be at least 32"), "{err}");

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
        let admin_token = bootstrap_token(data.path(), url, "admin");
        let (_, token) = add_provider(&server, &admin_token, "Lab", "302");
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
