//! One module per command family; each turns parsed flags into `gaen` calls and output.

mod admin;
mod bench;
mod bench_crash;
mod bench_gcs;
mod bench_load;
mod bench_matcher;
mod bench_publish;
mod bench_rebuild;
mod bench_submit;
mod export;
mod feed;
mod keys;
mod log;
mod matching;
mod research;
mod serve;
mod simulate;

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use gaen::VerifyingKey;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> Result<ExitCode> {
    if !matches!(cli.command, Command::Serve(_)) {
        // One-shot commands report on stdout and stderr themselves; their log (say, where
        // a rebuild spends its time) is shown only when asked for.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CONFIDANT_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
    }
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Tan(args) => admin::tan(args),
        Command::Research(command) => research::run(command),
        Command::Rebuild(args) => admin::rebuild(args),
        Command::Check(args) => admin::check(args),
        Command::Log(command) => log::run(command),
        Command::Export(command) => export::run(command),
        Command::Feed(command) => feed::run(command),
        Command::Keys(command) => keys::run(command),
        Command::Match(args) => matching::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(command) => bench::run(command),
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn load_public_key(path: &Path) -> Result<VerifyingKey> {
    VerifyingKey::from_pem(&read_text(path)?).with_context(|| format!("{}", path.display()))
}

/// Writes through a temporary sibling and renames, so readers never see half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A multi-threaded runtime for the commands that talk to databases and sockets.
/// How a benchmark names the store it measures: `--database-url` or the default SQLite file.
pub(crate) fn backend_name(database_url: Option<&str>) -> &'static str {
    match database_url {
        Some(url) if url.starts_with("postgres") => "PostgreSQL",
        _ => "SQLite (WAL, synchronous=FULL)",
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Peak resident memory of this process in MiB (Linux), for summaries and benchmarks.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
