//! The command-line grammar. Every flag has an environment twin where an operator would want one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::{ServeArgs, StoreArgs};

#[derive(Parser)]
#[command(
    name = "confidant",
    version,
    about = "Privacy-preserving contact tracing backend: reporting server, GAEN export files, matching and tools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server: native API, COVID Shield protocol (SQLite in ./confidant-data by default)
    Serve(ServeArgs),
    /// Operate a running server through its admin API: providers, submissions, keys, codes,
    /// the audit trail and admin tokens (`admin token create` makes the first token)
    Admin(AdminArgs),
    /// Import a health authority's TAN list (CSV or JSON) through the admin API
    Tan(TanArgs),
    /// Opt-in research data of proven encounters, as aggregates above a k-anonymity threshold
    #[command(subcommand)]
    Research(ResearchCommand),
    /// Drop the projections and rebuild them by replaying the event log
    Rebuild(StoreArgs),
    /// Replay the event log into scratch state and compare it with the live projections
    Check(StoreArgs),
    /// Move the event log between stores as a portable, checksummed file
    #[command(subcommand)]
    Log(LogCommand),
    /// Inspect, verify and build GAEN export files (export.bin + export.sig in a zip)
    #[command(subcommand)]
    Export(ExportCommand),
    /// Verify a downloaded key feed and inspect its snapshot and delta files (.cfeed)
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Generate signing keys and derive RPIs from a key
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Match observed RPIs against the diagnosis keys in export files, as a phone does
    Match(MatchArgs),
    /// Run a seeded population of phones through an epidemic against a real server, and
    /// report who should have been warned, who was, how late, and at what cost
    Simulate(SimulateArgs),
    /// Measure the speed of the crypto, matching and export writing on this machine
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
pub struct SimulateArgs {
    /// People in the simulated city
    #[arg(long, default_value_t = 10_000)]
    pub population: usize,
    /// Days of epidemic (then 3 quiet days, so the last uploads reach every phone)
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Seed: the same seed and settings give the same report
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of people who run the app
    #[arg(long, default_value_t = 0.6)]
    pub adoption: f64,
    /// Probability that a phone hears a nearby phone in a 10-minute interval
    #[arg(long, default_value_t = 0.9)]
    pub detection: f64,
    /// Share of positive app users who upload their keys
    #[arg(long, default_value_t = 0.8)]
    pub upload_share: f64,
    /// Share of uploads the health authority rolls back 12 hours later
    #[arg(long, default_value_t = 0.0)]
    pub withdraw_share: f64,
    /// Perfect radios and full compliance: detection 1, exact attenuation, every positive uploads
    #[arg(long)]
    pub perfect: bool,
    /// Tracing protocol: GAEN keys, encounter tokens, or both on the same city and epidemic
    /// (people then react to the GAEN app), compared side by side
    #[arg(long, value_enum, default_value_t = SimProtocol::Gaen)]
    pub protocol: SimProtocol,
    /// Share of workplaces and school classes where a Bluetooth sniffer records every broadcast
    #[arg(long, default_value_t = 0.1)]
    pub sniffed_places: f64,
    /// Neighbourhoods, each its own encounter-token area (postal-code prefix)
    #[arg(long, default_value_t = 1)]
    pub areas: u8,
    /// Encounter tokens: a phone notified at level 0 uploads its own encounters, so that its
    /// contacts are notified at level 1
    #[arg(long)]
    pub chain: bool,
    /// Write report.json and SVG charts here
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run against this server (started with `confidant serve --dev`) instead of an embedded one
    #[arg(long, value_name = "URL", requires_all = ["public_key", "admin_token"])]
    pub server: Option<String>,
    /// With --server: the public key its files are signed with (PEM)
    #[arg(long, value_name = "PEM")]
    pub public_key: Option<PathBuf>,
    /// With --server: an admin-scope token, to register the simulated test centre and roll back
    #[arg(long, value_name = "TOKEN", env = "CONFIDANT_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
}

/// `confidant simulate --protocol`.
#[derive(Clone, Copy, ValueEnum)]
pub enum SimProtocol {
    Gaen,
    Tokens,
    Both,
}

#[derive(Args)]
pub struct TanArgs {
    #[command(flatten)]
    pub api: AdminApiArgs,
    #[command(subcommand)]
    pub command: TanCommand,
}

#[derive(Subcommand)]
pub enum TanCommand {
    /// Import TANs: a CSV or text file (one TAN per line, optional `tan` header, first
    /// column), or JSON (an array of strings, or an object with `tans`). Lists of more than
    /// 100,000 TANs go in several audited imports
    Import {
        /// The list (`-` for stdin)
        file: PathBuf,
        /// The importing authority: a provider id (16 hex characters) from `admin provider add`
        #[arg(long)]
        provider: String,
        /// When the TANs stop working: unix seconds or RFC 3339, at most 90 days ahead
        /// [default: 30 days from now]
        #[arg(long, value_name = "TIME")]
        expires: Option<String>,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum ResearchCommand {
    /// Write the research counts as CSV (day, duration bucket, attenuation bucket, level,
    /// count), leaving out every cell with fewer than K records
    Export {
        /// The k-anonymity threshold: cells with fewer records are suppressed
        #[arg(long, default_value_t = 10)]
        k: u64,
        /// Output file [default: stdout]
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub api: AdminApiArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Where the admin API is and the token to use it with.
#[derive(Args)]
pub struct AdminApiArgs {
    /// Base URL of the server
    #[arg(
        long,
        env = "CONFIDANT_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Admin token (cadm_…); the environment variable keeps it out of shell history
    #[arg(
        long,
        env = "CONFIDANT_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Register, inspect, suspend, reinstate and revoke healthcare providers
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Look up and withdraw submissions
    #[command(subcommand)]
    Submission(SubmissionCommand),
    /// De-register diagnosis keys
    #[command(subcommand)]
    Key(AdminKeyCommand),
    /// Invalidate a one-time code before it is used
    #[command(subcommand)]
    Code(AdminCodeCommand),
    /// Show the audit trail: who did what, when and why
    Audit {
        /// Only entries after this sequence number (the `next` of the previous page)
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
        /// Entries per page, 1 to 1000 [default: 100]
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Create, list and revoke admin tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// Register a provider; prints its id and API token (shown once, stored only as a hash)
    Add {
        #[arg(long)]
        name: String,
        /// Region its reports belong to, e.g. DE or 302
        #[arg(long)]
        region: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
    /// List providers with their status
    List,
    /// Show a provider with its codes, submissions and keys
    Show {
        /// Provider id (16 hex characters)
        id: String,
    },
    /// Stop a provider from issuing codes; its unredeemed codes and open uploads stop working
    Suspend {
        /// Provider id (16 hex characters)
        id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
    /// Let a suspended provider work again
    Reinstate {
        /// Provider id (16 hex characters)
        id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
    /// Suspend a provider for good; with --retroactive, also withdraw its submissions
    Revoke {
        /// Provider id (16 hex characters)
        id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
        /// Withdraw the provider's submissions (all of them, or those from --since on)
        #[arg(long)]
        retroactive: bool,
        /// With --retroactive: withdraw from this time on (RFC 3339 or unix seconds; the hour
        /// it falls in counts)
        #[arg(long, value_name = "T", requires = "retroactive")]
        since: Option<String>,
    },
    /// Invalidate every code of the provider that is not redeemed yet
    InvalidateCodes {
        /// Provider id (16 hex characters)
        id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum SubmissionCommand {
    /// Show a submission: provider, hour, keys and status (accepted, published, withdrawn)
    Show {
        /// Tracking ID (32 hex characters)
        tracking_id: String,
    },
    /// Withdraw a submission: its keys are no longer published, and revoked where they were
    Withdraw {
        /// Tracking ID (32 hex characters)
        tracking_id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum AdminKeyCommand {
    /// Withdraw diagnosis keys wherever they were submitted
    Deregister {
        /// Keys as base64 (16 bytes) or 32 hex characters
        keys: Vec<String>,
        /// Also read keys from this file, one per line (`#` comments and blank lines skipped)
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum AdminCodeCommand {
    /// Invalidate a one-time code that is not redeemed yet
    Invalidate {
        /// The code as issued (separators and case do not matter)
        code: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an admin token directly in the database (the bootstrap: needs no token);
    /// prints the secret once
    Create {
        /// read, operate or admin
        #[arg(long)]
        scope: String,
        /// Who or what holds it
        #[arg(long, default_value = "")]
        label: String,
        /// Why, for the audit trail
        #[arg(long, default_value = "created on the console")]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List admin tokens with their scope
    List,
    /// Revoke an admin token at once
    Revoke {
        /// Token id (16 hex characters, the part after `cadm_`)
        id: String,
        /// Why, for the audit trail
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Write the store's event log to FILE (`-` for stdout), read from one snapshot
    Export {
        /// Output file (`-` for stdout); written through FILE.partial and renamed when complete
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Load a log file into a fresh, empty store, then rebuild the projections from it.
    /// The whole file is checked before anything is committed
    Import {
        /// Log file written by `confidant log export` (`-` for stdin)
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum ExportCommand {
    /// Show an export's header, window, signatures and key statistics
    Inspect {
        /// Export zip, or a folder holding export.bin and export.sig
        file: PathBuf,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
        /// Also check the signature with this public key (PEM)
        #[arg(long, value_name = "PEM")]
        public_key: Option<PathBuf>,
    },
    /// Verify export signatures; exits 0 only if every file verifies
    Verify {
        /// Export zips or unpacked folders
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Public key (PEM, SubjectPublicKeyInfo)
        #[arg(long, value_name = "PEM", env = "CONFIDANT_PUBLIC_KEY")]
        public_key: PathBuf,
    },
    /// Print an export's keys as the CSV `export build` reads (revised keys marked `# revised`)
    Keys {
        /// Export zip, or a folder holding export.bin and export.sig
        file: PathBuf,
    },
    /// Build a signed export zip from a CSV of keys
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// CSV: key_hex,rsin,rolling_period,trl[,report_type[,days_since_onset[,variant_of_concern]]];
    /// an optional header row
    #[arg(long, value_name = "FILE")]
    pub keys: PathBuf,
    /// Signing key (PEM, PKCS#8 or SEC1); repeat for key rotation, newest first
    #[arg(long = "signing-key", value_name = "PEM", required = true)]
    pub signing_keys: Vec<PathBuf>,
    /// Region, e.g. DE
    #[arg(long)]
    pub region: String,
    /// Verification key id, one per signing key (by convention the mobile country code)
    #[arg(long = "key-id", value_name = "ID", required = true)]
    pub key_ids: Vec<String>,
    /// Verification key version, one per signing key (e.g. v1)
    #[arg(long = "key-version", value_name = "V", required = true)]
    pub key_versions: Vec<String>,
    /// iOS bundle id to announce in the signature info (deprecated field, still read)
    #[arg(long)]
    pub app_bundle_id: Option<String>,
    /// Window start: unix seconds or RFC 3339
    #[arg(long, value_name = "T")]
    pub start: String,
    /// Window end: unix seconds or RFC 3339
    #[arg(long, value_name = "T")]
    pub end: String,
    /// Output zip; when the batch is split, parts are written as NAME-1.zip, NAME-2.zip, …
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Largest number of keys in one file
    #[arg(long, default_value_t = gaen::DEFAULT_MAX_KEYS_PER_FILE)]
    pub max_keys_per_file: usize,
}

#[derive(Subcommand)]
pub enum FeedCommand {
    /// Verify a copy of /feed/{region}/: index.json, sizes, SHA-256, signatures and the chain;
    /// exits 0 only if everything checks
    Verify {
        /// Folder holding index.json and the snapshot-*.cfeed and delta-*.cfeed files
        dir: PathBuf,
        /// Public key (PEM, SubjectPublicKeyInfo); repeat across a key rotation: a file passes
        /// if any of them verifies it
        #[arg(long = "public-key", value_name = "PEM", required = true)]
        public_keys: Vec<PathBuf>,
    },
    /// Show a feed file's header, window, key id and a summary of its keys
    Inspect {
        /// A snapshot-*.cfeed or delta-*.cfeed file
        file: PathBuf,
        /// Also print one line per key: `+ key_hex rolling_start rolling_period risk` for each
        /// added key, `- key_hex` for each removed one
        #[arg(long)]
        keys: bool,
        /// Also check the signature (PEM); repeatable, any one of them may verify it
        #[arg(long = "public-key", value_name = "PEM")]
        public_keys: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write a new P-256 signing key pair: signing-key.pem (PKCS#8) and public-key.pem
    Generate {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing key files
        #[arg(long)]
        force: bool,
    },
    /// Print the RPIs (and AEMs) a phone with this TEK broadcasts, as observation lines
    Derive {
        /// The TEK, 32 hex characters
        #[arg(long)]
        tek: String,
        /// Rolling start interval number (unix seconds / 600)
        #[arg(long)]
        rsin: u32,
        #[arg(long, default_value_t = 144)]
        rolling_period: u32,
        /// Metadata to encrypt into AEMs, 8 hex characters (e.g. 40080000)
        #[arg(long)]
        metadata: Option<String>,
    },
}

#[derive(Args)]
pub struct MatchArgs {
    /// Observations: one `unix_seconds,hex[,rssi]` per line (hex = RPI or RPI‖AEM)
    #[arg(long, value_name = "FILE")]
    pub observations: PathBuf,
    /// Public key the exports must verify with (PEM); others are skipped with a warning
    #[arg(long, value_name = "PEM", env = "CONFIDANT_PUBLIC_KEY")]
    pub public_key: PathBuf,
    /// Accept an RPI heard this long before or after its interval
    #[arg(long, default_value_t = 120)]
    pub tolerance_minutes: u64,
    /// Matching threads (default: all cores)
    #[arg(long)]
    pub threads: Option<std::num::NonZeroUsize>,
    /// Export zips, unpacked folders, or folders to search
    #[arg(required = true, value_name = "EXPORT")]
    pub exports: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// TEK → 144 RPIs per key, and raw AES-128 throughput, on one core
    Derive {
        #[arg(long, default_value_t = 200_000)]
        keys: usize,
    },
    /// Match diagnosis keys against observations, on one core and on all
    Match {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 50_000)]
        observations: usize,
        /// Also write the keys as signed exports (500,000 keys per file), the observations and
        /// the public key here, to time `confidant match` end to end
        #[arg(long, value_name = "DIR")]
        exports_dir: Option<PathBuf>,
    },
    /// Concurrent clients each redeem a code and upload 14 keys over HTTP: acknowledged
    /// submissions/s and latency, with group commit and with one commit per request
    Submit {
        /// Concurrent clients
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Submissions per run
        #[arg(long, default_value_t = 4000)]
        submissions: usize,
        /// Database to measure (default: a fresh SQLite file in a temporary directory)
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Encounter-token publication: bytes per token (raw hashes, Golomb-coded sets at 2^-20
    /// and 2^-40, DP-3T's Cuckoo filter), building a filter, and a phone testing its tokens
    Gcs {
        /// Token hashes in the published set
        #[arg(long, default_value_t = 1_000_000)]
        elements: usize,
        /// Check tokens on the phone
        #[arg(long, default_value_t = 3_000)]
        queries: usize,
    },
    /// Confidential matching: polls per second with positive users' tuple logs loaded, in
    /// memory and end to end over HTTP (sealed requests, a real matcher on loopback), against
    /// the floor of one hash-table lookup per tuple
    Matcher {
        /// Positive users whose logs are loaded
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Tuples per uploaded log and per poll
        #[arg(long, default_value_t = 2_000)]
        tuples: usize,
        /// Seconds of HTTP polling
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent polling clients
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// Build, sign and zip an export, then read and verify it
    Export {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
    },
    /// Publish one batch as the publisher does: exports, feed delta and snapshot, written
    /// durably; reports time and bytes per key
    Publish {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
    },
    /// A mixed load for a fixed time against a server process: codes, redemptions, uploads
    /// and downloads; throughput, p50/p99/p99.9 latency, errors, and the server's memory
    Load {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Apps redeeming codes and uploading
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Phones downloading the feed and the exports from scratch, over and over
        #[arg(long, default_value_t = 8)]
        downloaders: usize,
        /// A PostgreSQL database to run against (default: SQLite in a temporary directory)
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Kill the server with SIGKILL at random moments under concurrent uploads, restart it,
    /// and check that no acknowledged report was lost and none was half stored
    Crash {
        /// Kills (and restarts) of the server
        #[arg(long, default_value_t = 50)]
        kills: usize,
        /// Concurrent apps uploading
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// A PostgreSQL database to run against (default: SQLite in a temporary directory)
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// A shell command that restarts PostgreSQL, run once mid-load, e.g.
        /// "pg_ctlcluster 15 main restart"
        #[arg(long, value_name = "COMMAND", requires = "database_url")]
        restart_postgres: Option<String>,
    },
    /// Import a generated log of submissions (14 keys each) into a fresh store, then time
    /// `rebuild` twice: events/s, keys/s, peak memory, and that both give the same digest
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        submissions: usize,
        /// An empty database to measure (default: a fresh SQLite file in a temporary directory)
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
}
