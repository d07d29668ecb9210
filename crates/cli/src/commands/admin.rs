//! Operator commands. `admin …` drives a running server through its admin API (`/admin/v1`)
//! with an admin token, so that every correction is checked, scoped and audited in one place;
//! only `admin token create` opens the database directly, to make the first token (it is
//! audited as `console`). `rebuild` and `check` open the database directly too: they work on
//! the log and projections underneath the server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confidant_core::corrections::{Actor, Command, Scope};
use confidant_core::{KeyedHasher, UnixSeconds};
use confidant_store::{Store, StoreOptions};
use reqwest::Method;
use serde_json::{Value, json};

use super::runtime;
use crate::cli::{
    AdminApiArgs, AdminArgs, AdminCodeCommand, AdminCommand, AdminKeyCommand, ProviderCommand,
    SubmissionCommand, TanArgs, TanCommand, TokenCommand,
};
use crate::input::parse_timestamp;
use crate::settings::{StoreArgs, store_settings};

async fn open(args: &StoreArgs) -> Result<(Store, KeyedHasher)> {
    let settings = store_settings(args)?;
    let store = Store::open(&settings.database_url, StoreOptions::default())
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                super::serve::redact(&settings.database_url)
            )
        })?;
    Ok((store, KeyedHasher::new(&settings.secret)))
}

/// Keys per de-registration request (the API's limit).
const KEYS_PER_REQUEST: usize = 1000;

pub fn run(args: AdminArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match args.command {
            AdminCommand::Token(TokenCommand::Create {
                scope,
                label,
                reason,
                store,
            }) => create_token(&scope, &label, reason, &store).await?,
            command => {
                let api = Api::new(&args.api)?;
                match command {
                    AdminCommand::Provider(command) => provider(&api, command).await?,
                    AdminCommand::Submission(command) => submission(&api, command).await?,
                    AdminCommand::Key(command) => key(&api, command).await?,
                    AdminCommand::Code(command) => code(&api, command).await?,
                    AdminCommand::Audit { after, limit } => audit(&api, after, limit).await?,
                    AdminCommand::Token(command) => token(&api, command).await?,
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// TANs per import request (the API's limit).
const TANS_PER_REQUEST: usize = confidant_server::bodies::MAX_TANS_PER_IMPORT;

/// `confidant tan import`: the list is checked here first (line numbers in errors), then sent
/// in requests of at most [`TANS_PER_REQUEST`], each an audited import.
pub fn tan(args: TanArgs) -> Result<ExitCode> {
    let TanCommand::Import {
        file,
        provider,
        expires,
        reason,
    } = args.command;
    let bytes = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("cannot read the TAN list from stdin")?;
        bytes
    } else {
        std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let tans = tan_file(&bytes).with_context(|| format!("{}", file.display()))?;
    let expires_at = expires
        .map(|text| parse_timestamp(&text).map_err(|why| anyhow!("--expires: {why}")))
        .transpose()?
        .unwrap_or(now() + confidant_server::bodies::DEFAULT_TAN_TTL_SECONDS);
    runtime()?.block_on(async {
        let api = Api::new(&args.api)?;
        let (mut imported, mut skipped) = (0, 0);
        let mut valid_until = String::new();
        for chunk in tans.chunks(TANS_PER_REQUEST) {
            let done = api
                .post(
                    "/tans",
                    json!({"provider": provider, "tans": chunk, "expiresAt": expires_at, "reason": reason}),
                )
                .await?;
            imported += count(&done, "imported");
            skipped += count(&done, "skipped");
            valid_until = text(&done, "expiresAt").to_owned();
        }
        out!("imported {imported} TAN(s), {skipped} already known; valid until {valid_until}");
        Ok(ExitCode::SUCCESS)
    })
}

/// The TANs of a list file: JSON (an array, or an object with `tans`) or lines of text.
fn tan_file(bytes: &[u8]) -> Result<Vec<String>> {
    match bytes.trim_ascii_start().first() {
        Some(b'[' | b'{') => {
            let value: Value =
                serde_json::from_slice(bytes).context("the list is not valid JSON")?;
            let list = match &value {
                Value::Array(_) => &value,
                _ => &value["tans"],
            };
            let tans: Vec<String> = serde_json::from_value(list.clone())
                .context("expected a JSON array of TAN strings, or an object with `tans`")?;
            tans.iter()
                .enumerate()
                .map(|(index, tan)| {
                    confidant_core::codes::normalize_tan(tan)
                        .map_err(|why| anyhow!("TAN #{index}: {why}"))
                })
                .collect()
        }
        // Checked by the server's own parser, without its per-request limit.
        _ => confidant_server::bodies::tan_list(bytes, usize::MAX)
            .map_err(|p| anyhow!("{} ({})", p.detail, p.code)),
    }
}

/// The bootstrap: records a token on the console, straight into the database.
async fn create_token(scope: &str, label: &str, reason: String, args: &StoreArgs) -> Result<()> {
    let scope = Scope::parse(scope)
        .with_context(|| format!("--scope is read, operate or admin, got {scope:?}"))?;
    let label = label.trim();
    if label.chars().count() > 200 {
        bail!("--label is at most 200 characters");
    }
    let (store, hasher) = open(args).await?;
    let (secret, command) = confidant_server::new_admin_token(&hasher, scope, label);
    let Command::CreateToken { token, .. } = &command else {
        unreachable!("new_admin_token makes a CreateToken command");
    };
    let id = *token;
    let result = store.correct(command, Actor::Console, now(), reason).await;
    store.close().await;
    result.map_err(|e| anyhow!("the token was not created: {e}"))?;
    out!("token id: {id}");
    out!("scope:    {}", scope.name());
    out!("label:    {label}");
    out!("token:    {secret}");
    eprintln!(
        "The token is shown only now and stored only as a hash. Use it as --token or \
         CONFIDANT_ADMIN_TOKEN."
    );
    Ok(())
}

fn now() -> UnixSeconds {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request the server refused, with its problem's code and explanation.
#[derive(Debug)]
struct Refused {
    status: u16,
    code: String,
    detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.detail, self.code, self.status)
    }
}

impl std::error::Error for Refused {}

/// The admin API of one server, with one token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(args: &AdminApiArgs) -> Result<Self> {
        let token = args
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "an admin token is needed: pass --token or set CONFIDANT_ADMIN_TOKEN \
                 (`confidant admin token create` makes the first one)"
                )
            })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// One request; a problem answer becomes an error naming its detail and code.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/admin/v1{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot connect to {}: is `confidant serve` running there? (set --url or \
                     CONFIDANT_ADMIN_URL)",
                    self.base
                )
            } else if e.is_builder() {
                anyhow!(
                    "{:?} is not a usable URL (--url, CONFIDANT_ADMIN_URL)",
                    self.base
                )
            } else {
                anyhow!("the request to {url} failed: {e}")
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        match (answer["detail"].as_str(), answer["code"].as_str()) {
            (Some(detail), Some(code)) => Err(Refused {
                status: status.as_u16(),
                code: code.to_owned(),
                detail: detail.to_owned(),
            }
            .into()),
            _ => bail!(
                "{url} answered HTTP {status}; is {} a Confidant server?",
                self.base
            ),
        }
    }
}

fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or_default()
}

fn count(value: &Value, name: &str) -> u64 {
    value[name].as_u64().unwrap_or(0)
}

async fn provider(api: &Api, command: ProviderCommand) -> Result<()> {
    match command {
        ProviderCommand::Add {
            name,
            region,
            reason,
        } => {
            let made = api
                .post(
                    "/providers",
                    json!({"name": name, "region": region, "reason": reason}),
                )
                .await?;
            out!("provider id: {}", text(&made, "id"));
            out!("name:        {}", text(&made, "name"));
            out!("region:      {}", text(&made, "region"));
            out!("api token:   {}", text(&made, "apiToken"));
            eprintln!(
                "The API token is shown only now and stored only as a hash: hand it to the \
                 provider securely."
            );
        }
        ProviderCommand::List => {
            let listed = api.get("/providers").await?;
            out!("{:<16}  {:<9}  {:<8}  name", "id", "status", "region");
            for p in listed["providers"].as_array().into_iter().flatten() {
                out!(
                    "{:<16}  {:<9}  {:<8}  {}",
                    text(p, "id"),
                    text(p, "status"),
                    text(p, "region"),
                    text(p, "name")
                );
            }
        }
        ProviderCommand::Show { id } => {
            let p = api.get(&format!("/providers/{id}")).await?;
            let activity = &p["activity"];
            out!("provider id:           {}", text(&p, "id"));
            out!("name:                  {}", text(&p, "name"));
            out!("region:                {}", text(&p, "region"));
            out!("status:                {}", text(&p, "status"));
            out!(
                "codes issued:          {} ({} redeemed)",
                count(activity, "codesIssued"),
                count(activity, "codesRedeemed")
            );
            out!(
                "submissions:           {} ({} withdrawn)",
                count(activity, "submissions"),
                count(activity, "submissionsWithdrawn")
            );
            out!(
                "keys:                  {} ({} withdrawn)",
                count(activity, "keysSubmitted"),
                count(activity, "keysWithdrawn")
            );
        }
        ProviderCommand::Suspend { id, reason } => {
            let done = api
                .post(
                    &format!("/providers/{id}/suspend"),
                    json!({"reason": reason}),
                )
                .await?;
            status_line(&format!("provider {id}"), &done, "suspended")?;
        }
        ProviderCommand::Reinstate { id, reason } => {
            let done = api
                .post(
                    &format!("/providers/{id}/reinstate"),
                    json!({"reason": reason}),
                )
                .await?;
            status_line(&format!("provider {id}"), &done, "active")?;
        }
        ProviderCommand::Revoke {
            id,
            reason,
            retroactive,
            since,
        } => {
            let mut body = json!({"reason": reason, "retroactive": retroactive});
            if let Some(since) = since {
                body["since"] = parse_timestamp(&since)
                    .map_err(|why| anyhow!("--since: {why}"))?
                    .into();
            }
            let done = api.post(&format!("/providers/{id}/revoke"), body).await?;
            status_line(&format!("provider {id}"), &done, "revoked")?;
            if retroactive {
                out!(
                    "withdrew {} submission(s) ({} key(s)) submitted from {} on",
                    count(&done, "submissionsWithdrawn"),
                    count(&done, "keysWithdrawn"),
                    text(&done, "withdrawnSince")
                );
            }
        }
        ProviderCommand::InvalidateCodes { id, reason } => {
            let done = api
                .post(
                    &format!("/providers/{id}/codes/invalidate"),
                    json!({"reason": reason}),
                )
                .await?;
            out!(
                "invalidated {} code(s) of provider {id}",
                count(&done, "codesInvalidated")
            );
        }
    }
    Ok(())
}

/// "X is now S", or "X was already S" when the command changed nothing.
fn status_line(what: &str, done: &Value, state: &str) -> Result<()> {
    if done["changed"] == true {
        out!("{what} is now {state}");
    } else {
        out!("{what} was already {state}");
    }
    Ok(())
}

async fn submission(api: &Api, command: SubmissionCommand) -> Result<()> {
    match command {
        SubmissionCommand::Show { tracking_id } => {
            let s = api.get(&format!("/submissions/{tracking_id}")).await?;
            out!("tracking id:    {}", text(&s, "trackingId"));
            out!("status:         {}", text(&s, "status"));
            out!("provider:       {}", text(&s, "provider"));
            out!("region:         {}", text(&s, "region"));
            out!("submitted hour: {}", text(&s, "submittedHour"));
            out!(
                "keys:           {} ({} withdrawn)",
                count(&s, "keys"),
                count(&s, "keysWithdrawn")
            );
        }
        SubmissionCommand::Withdraw {
            tracking_id,
            reason,
        } => {
            let done = api
                .post(
                    &format!("/submissions/{tracking_id}/withdraw"),
                    json!({"reason": reason}),
                )
                .await?;
            if done["changed"] == true {
                out!(
                    "withdrew submission {tracking_id} ({} key(s))",
                    count(&done, "keysWithdrawn")
                );
            } else {
                out!("submission {tracking_id} was already withdrawn");
            }
        }
    }
    Ok(())
}

/// A key as base64 (what the API takes), from base64 or 32 hex characters.
fn key_base64(text: &str) -> Option<String> {
    let text = text.trim();
    let bytes = if text.len() == 32 {
        hex::decode(text).ok()?
    } else {
        STANDARD.decode(text).ok()?
    };
    (bytes.len() == 16).then(|| STANDARD.encode(bytes))
}

async fn key(api: &Api, command: AdminKeyCommand) -> Result<()> {
    let AdminKeyCommand::Deregister { keys, file, reason } = command;
    let mut all = Vec::new();
    for (n, typed) in keys.iter().enumerate() {
        all.push(key_base64(typed).with_context(|| {
            format!(
                "key #{} ({typed:?}) is neither 16 bytes of base64 nor 32 hex characters",
                n + 1
            )
        })?);
    }
    if let Some(file) = &file {
        let listed = super::read_text(file)?;
        for (n, line) in listed.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            all.push(key_base64(line).with_context(|| {
                format!(
                    "{} line {}: not 16 bytes of base64 or 32 hex characters",
                    file.display(),
                    n + 1
                )
            })?);
        }
    }
    if all.is_empty() {
        bail!("name the keys to de-register as arguments or with --file");
    }
    let (mut deregistered, mut already, mut unknown) = (0, 0, 0);
    for batch in all.chunks(KEYS_PER_REQUEST) {
        let answer = api
            .post("/keys/deregister", json!({"keys": batch, "reason": reason}))
            .await;
        match answer {
            Ok(done) => {
                deregistered += count(&done, "deregistered");
                already += count(&done, "alreadyWithdrawn");
                unknown += count(&done, "unknown");
            }
            // A batch of keys the server does not hold: count them and go on.
            Err(e)
                if e.downcast_ref::<Refused>()
                    .is_some_and(|r| r.code == "unknown_keys") =>
            {
                unknown += batch.len() as u64
            }
            Err(e) => return Err(e),
        }
    }
    out!("de-registered {deregistered} key(s); {already} already withdrawn; {unknown} unknown");
    if deregistered == 0 && already == 0 {
        bail!("none of the keys is held by the server");
    }
    Ok(())
}

async fn code(api: &Api, command: AdminCodeCommand) -> Result<()> {
    let AdminCodeCommand::Invalidate { code, reason } = command;
    api.post("/codes/invalidate", json!({"code": code, "reason": reason}))
        .await?;
    out!("the code is invalidated");
    Ok(())
}

async fn audit(api: &Api, after: Option<i64>, limit: Option<u32>) -> Result<()> {
    let mut query = Vec::new();
    if let Some(after) = after {
        query.push(format!("after={after}"));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let path = match query.is_empty() {
        true => "/audit".to_owned(),
        false => format!("/audit?{}", query.join("&")),
    };
    let page = api.get(&path).await?;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    for e in &entries {
        out!(
            "{:>6}  {}  {:<22}  {:<26}  {}  [{}]  reason: {}",
            e["seq"].as_i64().unwrap_or_default(),
            text(e, "at"),
            text(e, "actor"),
            text(e, "action"),
            text(e, "target"),
            text(e, "outcome"),
            text(e, "reason")
        );
    }
    if entries.len() as u32 == limit.unwrap_or(100) {
        eprintln!("more may follow: --after {}", page["next"]);
    }
    Ok(())
}

async fn token(api: &Api, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { .. } => unreachable!("created on the console"),
        TokenCommand::List => {
            let listed = api.get("/tokens").await?;
            out!("{:<16}  {:<7}  {:<7}  label", "id", "scope", "status");
            for t in listed["tokens"].as_array().into_iter().flatten() {
                let status = if t["revoked"] == true {
                    "revoked"
                } else {
                    "live"
                };
                out!(
                    "{:<16}  {:<7}  {status:<7}  {}",
                    text(t, "id"),
                    text(t, "scope"),
                    text(t, "label")
                );
            }
        }
        TokenCommand::Revoke { id, reason } => {
            let done = api
                .post(&format!("/tokens/{id}/revoke"), json!({"reason": reason}))
                .await?;
            status_line(&format!("token {id}"), &done, "revoked")?;
        }
    }
    Ok(())
}

pub fn rebuild(args: StoreArgs) -> Result<ExitCode> {
    super::log::rebuild(args)
}

pub fn check(args: StoreArgs) -> Result<ExitCode> {
    super::log::check(args)
}
