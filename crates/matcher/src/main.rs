//! `confidant-matcher`: runs the confidential matcher. Tiny by design: flags, logging, the
//! attestor, the sealing key, signals; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use confidant_matcher::attestor::{Attestor, ConfigfsTsm, SimulatedAttestor};
use confidant_matcher::seal::SealingKey;
use confidant_matcher::{Matcher, MatcherSettings};

#[derive(Clone, Copy, ValueEnum)]
enum AttestorKind {
    /// Inside a TDX or SEV-SNP confidential VM (Linux configfs-tsm)
    ConfigfsTsm,
    /// Development only: evidence anyone can forge; needs --insecure-simulated
    Simulated,
}

/// The confidential matcher: attested key, sealed contact-tuple storage, matching that
/// forgets its queries
#[derive(Parser)]
#[command(name = "confidant-matcher", version)]
struct Args {
    #[arg(
        long,
        env = "CONFIDANT_MATCHER_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    listen: SocketAddr,
    /// Where the sealed log is kept
    #[arg(
        long,
        env = "CONFIDANT_MATCHER_DATA_DIR",
        default_value = "./matcher-data"
    )]
    data_dir: PathBuf,
    #[arg(
        long,
        value_enum,
        env = "CONFIDANT_MATCHER_ATTESTOR",
        default_value = "configfs-tsm"
    )]
    attestor: AttestorKind,
    /// Allow the simulated attestor (it proves nothing; phones refuse it by default)
    #[arg(long)]
    insecure_simulated: bool,
    /// Intel collateral (JSON) stapled to TDX quotes; refresh it from Intel's PCS
    #[arg(long, value_name = "FILE")]
    tdx_collateral: Option<PathBuf>,
    /// Development only: a 32-byte sealing key file (hex), so the sealed log survives
    /// restarts outside a TEE. Without it the key is drawn at start and lives in memory only
    #[arg(long, value_name = "FILE")]
    insecure_sealing_key_file: Option<PathBuf>,
    /// The bearer secret the main server sends with uploads (the file's trimmed contents)
    #[arg(
        long,
        value_name = "FILE",
        env = "CONFIDANT_MATCHER_UPLOAD_SECRET_FILE"
    )]
    upload_secret_file: PathBuf,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn run(args: Args) -> Result<(), String> {
    let attestor: Box<dyn Attestor> = match args.attestor {
        AttestorKind::Simulated if !args.insecure_simulated => {
            return Err(
                "--attestor simulated proves nothing: add --insecure-simulated to run it anyway"
                    .into(),
            );
        }
        AttestorKind::Simulated => {
            tracing::warn!("SIMULATED ATTESTATION: this matcher proves nothing about its code");
            Box::new(SimulatedAttestor {
                measurement: [0; 48],
            })
        }
        AttestorKind::ConfigfsTsm => {
            let collateral = match &args.tdx_collateral {
                Some(path) => Some(
                    confidant_attest::IntelCollateral::from_dcap_json(&read(path)?)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                None => None,
            };
            Box::new(ConfigfsTsm::new(collateral))
        }
    };
    let sealing_key = match &args.insecure_sealing_key_file {
        Some(path) => {
            tracing::warn!("sealing key from a file: development only");
            let text = String::from_utf8(read(path)?)
                .map_err(|_| "the sealing key file is not text".to_owned())?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
                format!(
                    "{}: a sealing key is 64 hexadecimal characters",
                    path.display()
                )
            })?;
            SealingKey::from_bytes(key)
        }
        None => SealingKey::ephemeral(),
    };
    let upload_secret = String::from_utf8(read(&args.upload_secret_file)?)
        .map_err(|_| "the upload secret file is not text".to_owned())?
        .trim()
        .as_bytes()
        .to_vec();
    if upload_secret.len() < 16 {
        return Err("the upload secret must be at least 16 characters".into());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let matcher = Matcher::build(
        listener,
        MatcherSettings {
            data_dir: args.data_dir,
            attestor,
            sealing_key,
            upload_secret,
            clock: Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
            expire_every: Duration::from_secs(3600),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    tracing::info!(address = %matcher.local_addr().map_err(|e| e.to_string())?, "confidant-matcher is serving");
    matcher
        .run_until_stopped(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONFIDANT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
