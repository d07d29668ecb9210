//! Where the server and admin commands find their data: flags and environment variables over an
//! optional TOML file over built-in defaults. With no configuration at all, everything lives in
//! `./confidant-data`: the SQLite database and the server secret, created on first start.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use confidant_core::CodePolicy;
use rand_core::{OsRng, RngCore};
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "confidant-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Options shared by every command that opens the store.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Data directory: SQLite database and server secret [default: ./confidant-data]
    #[arg(long, env = "CONFIDANT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this database instead of the SQLite file: postgres://user@host/db or sqlite://PATH
    #[arg(long, env = "CONFIDANT_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Server secret file (hex, 32 bytes or more); every instance of a deployment shares it
    /// [default: DATA_DIR/secret.key, created on first use]
    #[arg(long, env = "CONFIDANT_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// TOML configuration file with the same settings (flags and environment win)
    #[arg(long, env = "CONFIDANT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `confidant serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "CONFIDANT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Most requests committed in one transaction; 1 turns group commit off [default: 256]
    #[arg(long, env = "CONFIDANT_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Lifetime of short (8-digit) codes in seconds [default: 600]
    #[arg(long, env = "CONFIDANT_SHORT_CODE_TTL")]
    pub short_code_ttl: Option<u64>,
    /// Lifetime of long (16-character) codes in seconds [default: 86400]
    #[arg(long, env = "CONFIDANT_LONG_CODE_TTL")]
    pub long_code_ttl: Option<u64>,
    /// Lifetime of card (printed) codes in seconds [default: 172800]
    #[arg(long, env = "CONFIDANT_CARD_CODE_TTL")]
    pub card_code_ttl: Option<u64>,
    /// Take the client address from the last X-Forwarded-For entry. Only behind a load
    /// balancer that sets it: otherwise clients choose their own address [default: false]
    #[arg(long, env = "CONFIDANT_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: Option<bool>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "CONFIDANT_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The TOML file: every key optional, names as the long flags with `_`.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    secret_file: Option<PathBuf>,
    listen: Option<SocketAddr>,
    max_batch: Option<usize>,
    short_code_ttl: Option<u64>,
    long_code_ttl: Option<u64>,
    card_code_ttl: Option<u64>,
    trust_forwarded_for: Option<bool>,
    log_format: Option<String>,
}

fn read_file(path: Option<&Path>) -> Result<FileSettings> {
    let Some(path) = path else {
        return Ok(FileSettings::default());
    };
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))
}

/// Where the store lives and the secret that keys its hashes.
pub struct StoreSettings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub secret: Vec<u8>,
}

pub struct ServeSettings {
    pub store: StoreSettings,
    pub listen: SocketAddr,
    pub max_batch: usize,
    pub policy: CodePolicy,
    pub trust_forwarded_for: bool,
    pub json_logs: bool,
}

fn resolve_store(args: &StoreArgs, file: &FileSettings) -> Result<StoreSettings> {
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let database_url = args
        .database_url
        .clone()
        .or_else(|| file.database_url.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("confidant.db").display()));
    let secret_file = args
        .secret_file
        .clone()
        .or_else(|| file.secret_file.clone())
        .unwrap_or_else(|| data_dir.join("secret.key"));
    Ok(StoreSettings {
        secret: load_or_create_secret(&secret_file)?,
        data_dir,
        database_url,
    })
}

pub fn store_settings(args: &StoreArgs) -> Result<StoreSettings> {
    resolve_store(args, &read_file(args.config.as_deref())?)
}

pub fn serve_settings(args: &ServeArgs) -> Result<ServeSettings> {
    let file = read_file(args.store.config.as_deref())?;
    let defaults = CodePolicy::default();
    let log_format = args
        .log_format
        .clone()
        .or(file.log_format.clone())
        .unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        bail!("--log-format must be text or json, got {log_format:?}");
    }
    let max_batch = args.max_batch.or(file.max_batch).unwrap_or(256);
    if max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    Ok(ServeSettings {
        store: resolve_store(&args.store, &file)?,
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
        max_batch,
        policy: CodePolicy {
            short_ttl_seconds: args
                .short_code_ttl
                .or(file.short_code_ttl)
                .unwrap_or(defaults.short_ttl_seconds),
            long_ttl_seconds: args
                .long_code_ttl
                .or(file.long_code_ttl)
                .unwrap_or(defaults.long_ttl_seconds),
            card_ttl_seconds: args
                .card_code_ttl
                .or(file.card_code_ttl)
                .unwrap_or(defaults.card_ttl_seconds),
        },
        // Off unless configured: without a proxy that sets the header, clients could pick
        // their own address and escape the brute-force limit.
        trust_forwarded_for: args
            .trust_forwarded_for
            .or(file.trust_forwarded_for)
            .unwrap_or(false),
        json_logs: log_format == "json",
    })
}

/// Reads the hex secret, or creates 32 random bytes readable by the owner only.
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let secret = hex::decode(text.trim()).with_context(|| {
                format!("{} must hold the secret as hexadecimal", path.display())
            })?;
            if secret.len() < 32 {
                bail!(
                    "{} holds {} bytes; the secret must be at least 32",
                    path.display(),
                    secret.len()
                );
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = vec![0u8; 32];
            OsRng.fill_bytes(&mut secret);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(file, "{}", hex::encode(&secret))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
