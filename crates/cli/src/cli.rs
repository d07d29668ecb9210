//! The command-line grammar. Every flag has an environment twin where an operator would want one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Register and manage healthcare providers (works while the server runs)
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Drop the projections and rebuild them by replaying the event log
    Rebuild(StoreArgs),
    /// Replay the event log into scratch state and compare it with the live projections
    Check(StoreArgs),
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
    /// Measure the speed of the crypto, matching and export writing on this machine
    #[command(subcommand)]
    Bench(BenchCommand),
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
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List providers with their status
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Stop a provider from issuing codes; its unredeemed codes and open uploads stop working
    Suspend {
        /// Provider id (16 hex characters)
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Let a suspended provider work again
    Reinstate {
        id: String,
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
}
