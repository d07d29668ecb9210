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
use std::collections::BTreeMap;

use confidant_core::{CodePolicy, PublicationPolicy, Region, RetentionPolicy, SmallBatch};
use confidant_server::{PublishSettings, RegionSettings};
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
    /// Wrong codes per hour, across all clients, after which code redemption pauses until
    /// the hour has passed (see SECURITY.md for the guessing odds) [default: 300]
    #[arg(long, env = "CONFIDANT_MAX_WRONG_CODES_PER_HOUR")]
    pub max_wrong_codes_per_hour: Option<u32>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "CONFIDANT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Where published files go: a directory [default: DATA_DIR/published], or with the
    /// `cloud` build feature s3://BUCKET/PREFIX, gs://…, az://… (credentials from the
    /// usual AWS_*, GOOGLE_*, AZURE_* environment variables)
    #[arg(long, env = "CONFIDANT_PUBLISH_TO", value_name = "DIR|URL")]
    pub publish_to: Option<String>,
    /// P-256 private key (PEM) that signs published files
    /// [default: DATA_DIR/signing-key.pem, created on first start]
    #[arg(long, env = "CONFIDANT_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// COVID Shield retrieval HMAC secret (hex, 32 bytes or more), shared with the apps
    /// [default: DATA_DIR/retrieval.key, created on first start]
    #[arg(long, env = "CONFIDANT_RETRIEVAL_SECRET_FILE", value_name = "FILE")]
    pub retrieval_secret_file: Option<PathBuf>,
    /// Seconds between the publisher's checks for due windows [default: 30]
    #[arg(long, env = "CONFIDANT_PUBLISH_EVERY")]
    pub publish_every: Option<u64>,
    /// Encounter tokens: postal-code characters an area keeps (the granularity at which
    /// token hashes are stored and published) [default: 2]
    #[arg(long, env = "CONFIDANT_TOKEN_AREA_CHARS")]
    pub token_area_chars: Option<usize>,
    /// Encounter tokens: the highest level a chained upload may reach; 0 turns chained
    /// notifications off [default: 1]
    #[arg(long, env = "CONFIDANT_TOKEN_MAX_LEVEL")]
    pub token_max_level: Option<u8>,
    /// The confidential matcher to forward `/matcher/…` to (e.g. http://10.0.0.5:8090)
    #[arg(long, env = "CONFIDANT_MATCHER_URL", value_name = "URL")]
    pub matcher_url: Option<String>,
    /// The secret the matcher takes for uploads (its --upload-secret-file)
    #[arg(
        long,
        env = "CONFIDANT_MATCHER_UPLOAD_SECRET_FILE",
        value_name = "FILE"
    )]
    pub matcher_upload_secret_file: Option<PathBuf>,
    /// Development mode: adds `POST /dev/clock` to move the server's clock. Never in production
    #[arg(long)]
    pub dev: bool,
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
    max_wrong_codes_per_hour: Option<u32>,
    log_format: Option<String>,
    publish_to: Option<String>,
    signing_key: Option<PathBuf>,
    retrieval_secret_file: Option<PathBuf>,
    publish_every: Option<u64>,
    /// Days keys (and their submissions) are kept after their submission hour.
    key_retention_days: Option<u64>,
    /// Days published files stay listed and stored after their window.
    file_retention_days: Option<u64>,
    /// Days after which events carrying key material are purged from the log.
    key_event_retention_days: Option<u64>,
    /// Seconds between retention runs.
    janitor_interval: Option<u64>,
    /// Publication settings applying to every region without its own.
    #[serde(default)]
    publication: PublicationFile,
    /// Per-region settings, keyed by region (e.g. "302").
    #[serde(default)]
    regions: BTreeMap<String, RegionFile>,
    /// Encounter tokens (`[tokens]`).
    #[serde(default)]
    tokens: TokensFile,
    matcher_url: Option<String>,
    matcher_upload_secret_file: Option<PathBuf>,
}

/// `[tokens]`: the encounter-token API and its publication.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    area_chars: Option<usize>,
    max_level: Option<u8>,
    /// Filter false-positive rate 2^-fp_bits (20 with confirmation buckets, 40 without).
    fp_bits: Option<u8>,
    /// 2^bucket_bits confirmation files per batch; 0 = none.
    bucket_bits: Option<u8>,
    small_batch: Option<SmallBatch>,
}

/// Publication rules (`[publication]` or inside a region).
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct PublicationFile {
    export_period: Option<u64>,
    feed_period: Option<u64>,
    embargo_margin: Option<u64>,
    small_batch: Option<SmallBatch>,
    max_keys_per_file: Option<usize>,
    snapshot_every: Option<u64>,
}

impl PublicationFile {
    fn over(&self, base: &PublicationPolicy) -> Result<PublicationPolicy> {
        let policy = PublicationPolicy {
            export_period: self.export_period.unwrap_or(base.export_period),
            feed_period: self.feed_period.unwrap_or(base.feed_period),
            embargo_margin: self.embargo_margin.unwrap_or(base.embargo_margin),
            small_batch: self.small_batch.unwrap_or(base.small_batch),
            max_keys_per_file: self.max_keys_per_file.unwrap_or(base.max_keys_per_file),
            snapshot_every: self.snapshot_every.unwrap_or(base.snapshot_every),
        };
        for (name, period) in [
            ("export_period", policy.export_period),
            ("feed_period", policy.feed_period),
        ] {
            if period < 60 || 86_400 % period != 0 {
                bail!(
                    "{name} must divide a day into whole windows of at least 60 seconds, got {period}"
                );
            }
        }
        if policy.max_keys_per_file == 0 || policy.snapshot_every == 0 {
            bail!("max_keys_per_file and snapshot_every must be at least 1");
        }
        // The publisher (and a client) rebuilds the feed from the latest snapshot and the
        // deltas after it, which must still be stored.
        if policy.snapshot_every.saturating_mul(policy.feed_period) > 7 * 86_400 {
            bail!(
                "snapshot_every × feed_period must be at most 7 days, got {} s",
                policy.snapshot_every.saturating_mul(policy.feed_period)
            );
        }
        Ok(policy)
    }
}

/// One entry of `signers = [...]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SignerFile {
    signing_key: PathBuf,
    key_id: String,
    key_version: String,
}

fn read_signing_key(path: &Path) -> Result<gaen::SigningKey> {
    gaen::SigningKey::from_pem(
        &fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a P-256 private key", path.display()))
}

/// `[regions."302"]`.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    /// The region inside export files, e.g. "CA" [default: the region id].
    export_region: Option<String>,
    /// Signature info: key id [default: the region id] and version [default: v1].
    key_id: Option<String>,
    key_version: Option<String>,
    app_bundle_id: Option<String>,
    android_package: Option<String>,
    /// A signing key of the region's own [default: the server's signing key].
    signing_key: Option<PathBuf>,
    /// Several keys at once, newest first (key rotation): each file carries a signature from
    /// every one. Replaces `signing_key`, `key_id` and `key_version`.
    signers: Option<Vec<SignerFile>>,
    #[serde(flatten)]
    publication: PublicationFile,
    /// COVID Shield exposure configuration served at /exposure-configuration/{region}.json.
    exposure_configuration: Option<toml::Value>,
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
    pub publish_to: String,
    pub publish: PublishSettings,
    pub retrieval_secret: Vec<u8>,
    pub publish_every: u64,
    pub dev: bool,
    pub listen: SocketAddr,
    pub max_batch: usize,
    pub policy: CodePolicy,
    pub trust_forwarded_for: bool,
    pub max_wrong_codes_per_hour: u32,
    pub json_logs: bool,
    pub tokens: confidant_server::TokenSettings,
    pub matcher: Option<confidant_server::MatcherLink>,
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
    let store = resolve_store(&args.store, &file)?;
    let publish_to = args
        .publish_to
        .clone()
        .or(file.publish_to.clone())
        .unwrap_or_else(|| store.data_dir.join("published").display().to_string());
    let signing_key_path = args
        .signing_key
        .clone()
        .or(file.signing_key.clone())
        .unwrap_or_else(|| store.data_dir.join("signing-key.pem"));
    let default_key = load_or_create_signing_key(&signing_key_path)?;
    let retrieval_path = args
        .retrieval_secret_file
        .clone()
        .or(file.retrieval_secret_file.clone())
        .unwrap_or_else(|| store.data_dir.join("retrieval.key"));
    let default_policy = file.publication.over(&PublicationPolicy::default())?;
    let mut regions = BTreeMap::new();
    for (id, region) in &file.regions {
        let region_id =
            Region::try_from(id.clone()).map_err(|e| anyhow::anyhow!("[regions.{id}]: {e}"))?;
        let mut signers = Vec::new();
        match &region.signers {
            Some(list) => {
                if list.is_empty() || list.len() > 10 {
                    bail!("[regions.{id}].signers must list 1 to 10 keys, newest first");
                }
                for signer in list {
                    signers.push(gaen::Signer {
                        key: read_signing_key(&signer.signing_key)?,
                        info: gaen::SignatureInfo::new(
                            signer.key_id.clone(),
                            signer.key_version.clone(),
                        ),
                    });
                }
            }
            None => signers.push(gaen::Signer {
                key: match &region.signing_key {
                    Some(path) => read_signing_key(path)?,
                    None => default_key.clone(),
                },
                info: gaen::SignatureInfo::new(
                    region.key_id.clone().unwrap_or_else(|| id.clone()),
                    region.key_version.clone().unwrap_or_else(|| "v1".into()),
                ),
            }),
        }
        for signer in &mut signers {
            signer.info.app_bundle_id = region.app_bundle_id.clone();
            signer.info.android_package = region.android_package.clone();
        }
        let newest = &signers[0].info;
        let feed_key_id = format!(
            "{}-{}",
            newest.verification_key_id.clone().unwrap_or_default(),
            newest.verification_key_version.clone().unwrap_or_default()
        );
        if feed_key_id.len() > 64 || !feed_key_id.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            bail!(
                "[regions.{id}]: key id and version must be printable ASCII without spaces \
                 (together at most 63 characters), got {feed_key_id:?}"
            );
        }
        let exposure_configuration = match &region.exposure_configuration {
            Some(value) => serde_json::to_value(value)
                .with_context(|| format!("[regions.{id}].exposure_configuration"))?,
            None => confidant_server::publisher::default_exposure_configuration(),
        };
        regions.insert(
            region_id,
            RegionSettings {
                export_region: region.export_region.clone().unwrap_or_else(|| id.clone()),
                feed_key_id,
                signers,
                policy: region
                    .publication
                    .over(&default_policy)
                    .with_context(|| format!("[regions.{id}]"))?,
                exposure_configuration,
            },
        );
    }
    let days = |value: Option<u64>, default: u64| value.unwrap_or(default) * 86_400;
    let retention = RetentionPolicy {
        keys: days(file.key_retention_days, 15),
        files: days(file.file_retention_days, 14),
        key_events: days(file.key_event_retention_days, 21),
    };
    if retention.key_events < retention.keys {
        bail!("key_event_retention_days must be at least key_retention_days");
    }
    let token_defaults = confidant_server::TokenSettings::default();
    let tokens = confidant_server::TokenSettings {
        area_chars: args
            .token_area_chars
            .or(file.tokens.area_chars)
            .unwrap_or(token_defaults.area_chars),
        max_level: args
            .token_max_level
            .or(file.tokens.max_level)
            .unwrap_or(token_defaults.max_level),
    };
    if !(1..=16).contains(&tokens.area_chars) {
        bail!(
            "token_area_chars must be 1 to 16 (postal-code characters an area keeps), got {}",
            tokens.area_chars
        );
    }
    if tokens.max_level > confidant_core::encounter::LEVEL_CEILING {
        bail!(
            "token_max_level must be at most {}, got {}",
            confidant_core::encounter::LEVEL_CEILING,
            tokens.max_level
        );
    }
    let publication_defaults = confidant_server::TokenPublication::default();
    let bucket_bits = file
        .tokens
        .bucket_bits
        .unwrap_or(publication_defaults.mode.bucket_bits);
    let mode = confidant_core::tokenfile::FilterMode {
        // Without confirmation files the filter alone decides: 2^-40 by default.
        fp_bits: file.tokens.fp_bits.unwrap_or(if bucket_bits == 0 {
            confidant_core::tokenfile::FilterMode::UNCONFIRMED.fp_bits
        } else {
            publication_defaults.mode.fp_bits
        }),
        bucket_bits,
    };
    mode.validate()
        .map_err(|e| anyhow::anyhow!("[tokens]: {e}"))?;
    let matcher = match (
        args.matcher_url.clone().or(file.matcher_url.clone()),
        args.matcher_upload_secret_file
            .clone()
            .or(file.matcher_upload_secret_file.clone()),
    ) {
        (None, None) => None,
        (Some(url), Some(secret_file)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--matcher-url must be an http:// or https:// URL, got {url:?}");
            }
            let secret = fs::read_to_string(&secret_file)
                .with_context(|| format!("cannot read {}", secret_file.display()))?
                .trim()
                .to_owned();
            if secret.len() < 16 {
                bail!(
                    "{}: the matcher's upload secret is at least 16 characters",
                    secret_file.display()
                );
            }
            Some(confidant_server::MatcherLink {
                url: url.trim_end_matches('/').to_owned(),
                upload_secret: secret,
            })
        }
        _ => bail!("--matcher-url and --matcher-upload-secret-file go together"),
    };
    Ok(ServeSettings {
        publish_to,
        publish: PublishSettings {
            regions,
            default_key,
            default_policy,
            retention,
            janitor_interval: file.janitor_interval.unwrap_or(3600).max(1),
            tokens: confidant_server::TokenPublication {
                mode,
                small_batch: file
                    .tokens
                    .small_batch
                    .unwrap_or(publication_defaults.small_batch),
                key_id: publication_defaults.key_id,
            },
        },
        tokens,
        matcher,
        retrieval_secret: load_or_create_secret(&retrieval_path)?,
        publish_every: args
            .publish_every
            .or(file.publish_every)
            .unwrap_or(30)
            .max(1),
        dev: args.dev,
        store,
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
        max_wrong_codes_per_hour: match args
            .max_wrong_codes_per_hour
            .or(file.max_wrong_codes_per_hour)
        {
            Some(0) => bail!("max_wrong_codes_per_hour must be at least 1"),
            Some(n) => n,
            None => confidant_server::DEFAULT_MAX_WRONG_CODES_PER_HOUR,
        },
        json_logs: log_format == "json",
    })
}

/// Reads the PEM signing key, or creates one (readable by the owner only) with its public
/// half beside it as `NAME.pub.pem`, for the app platforms.
fn load_or_create_signing_key(path: &Path) -> Result<gaen::SigningKey> {
    match fs::read_to_string(path) {
        Ok(pem) => gaen::SigningKey::from_pem(&pem)
            .with_context(|| format!("{} is not a P-256 private key in PEM", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = gaen::SigningKey::generate(&mut OsRng);
            write_new(path, key.to_pem().as_bytes(), 0o600)?;
            let public = path.with_extension("pub.pem");
            if !public.exists() {
                write_new(&public, key.verifying_key().to_pem().as_bytes(), 0o644)?;
            }
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
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
