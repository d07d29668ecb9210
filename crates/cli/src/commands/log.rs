//! `confidant log export|import`, `confidant rebuild` and `confidant check`: the event log as
//! the source of truth, moved between stores as a portable file (`docs/logfile.md`) and
//! replayed into projections.
//!
//! Export and import stream: memory holds a page of events, never the log. An import goes into
//! an empty store in one transaction, so a damaged or truncated file leaves the store empty.

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use confidant_core::logfile::{Decoder, Encoder, LogRecord};
use confidant_store::{Dialect, RebuildProgress, Store, StoreError, StoreOptions};

use super::runtime;
use crate::cli::LogCommand;
use crate::settings::{StoreArgs, store_settings};

/// Events per page of an export, and per batch of an import.
const PAGE: usize = 5000;

pub fn run(command: LogCommand) -> Result<ExitCode> {
    match command {
        LogCommand::Export { file, store } => runtime()?.block_on(export(&file, &store)),
        LogCommand::Import { file, store } => runtime()?.block_on(import(&file, &store)),
    }
}

async fn open(args: &StoreArgs) -> Result<Store> {
    let settings = store_settings(args)?;
    Store::open(&settings.database_url, StoreOptions::default())
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                super::serve::redact(&settings.database_url)
            )
        })
}

/// The store kind named in a log file's header.
pub(crate) fn store_kind(store: &Store) -> &'static str {
    match store.dialect() {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    }
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

async fn export(path: &Path, args: &StoreArgs) -> Result<ExitCode> {
    let store = open(args).await?;
    let started = Instant::now();
    let partial = (!is_stdio(path)).then(|| {
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    let sink: Box<dyn Write> = match &partial {
        None => Box::new(io::stdout().lock()),
        Some(partial) => Box::new(
            File::create(partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        ),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let mut encoder = Encoder::new(store_kind(&store))?;
    let mut buffer = Vec::with_capacity(1 << 20);
    encoder.header(&mut buffer);
    let mut bytes = buffer.len() as u64;
    out.write_all(&buffer)?;
    let exported = store
        .export_log(PAGE as u32, |page| {
            buffer.clear();
            for (_, record) in &page {
                encoder.event(&record.payload, &mut buffer)?;
            }
            bytes += buffer.len() as u64;
            out.write_all(&buffer)?;
            Ok::<_, anyhow::Error>(())
        })
        .await;
    store.close().await;
    let result = exported
        .map_err(anyhow::Error::from)
        .and_then(|written| written)
        .and_then(|events| {
            buffer.clear();
            encoder.finish(&mut buffer);
            bytes += buffer.len() as u64;
            out.write_all(&buffer)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            drop(file);
            if let Some(partial) = &partial {
                File::open(partial)?.sync_all()?;
                fs::rename(partial, path)?;
            }
            Ok(events)
        });
    let events = match result {
        Ok(events) => events,
        Err(error) => {
            if let Some(partial) = &partial {
                fs::remove_file(partial).ok();
            }
            return Err(error.context(format!("cannot export the log to {}", path.display())));
        }
    };
    eprintln!(
        "exported {events} events ({bytes} bytes) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn import(path: &Path, args: &StoreArgs) -> Result<ExitCode> {
    let mut input: Box<dyn Read> = if is_stdio(path) {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let store = open(args).await?;
    let started = Instant::now();
    let mut import = match store.begin_import().await {
        Ok(import) => import,
        Err(error @ StoreError::NotEmpty { .. }) => {
            store.close().await;
            bail!("{error}");
        }
        Err(error) => {
            store.close().await;
            return Err(error.into());
        }
    };
    let loaded = async {
        let mut decoder = Decoder::new();
        let mut chunk = vec![0u8; 1 << 20];
        let mut batch: Vec<LogRecord> = Vec::with_capacity(PAGE);
        loop {
            let read = match input.read(&mut chunk) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("cannot read the log file")),
            };
            if read == 0 {
                break;
            }
            decoder.push(&chunk[..read])?;
            while let Some(record) = decoder.next_record()? {
                batch.push(record);
                if batch.len() == PAGE {
                    import.append(&batch).await?;
                    batch.clear();
                }
            }
        }
        // The trailer must be there and match before anything is committed.
        let summary = decoder.finish()?;
        import.append(&batch).await?;
        let header = decoder.header().cloned().expect("complete file");
        Ok((header, summary))
    }
    .await;
    let (header, summary) = match loaded {
        Ok(done) => done,
        Err(error) => {
            import.abort().await;
            store.close().await;
            return Err(error.context(format!("refused {}; nothing was imported", path.display())));
        }
    };
    let events = import.commit().await?;
    eprintln!(
        "imported {events} events ({} bytes, written by a {} store) in {:.1} s",
        summary.bytes,
        header.store_kind,
        started.elapsed().as_secs_f64()
    );
    let outcome = rebuild_and_digest(&store).await;
    store.close().await;
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// Draws a rebuild's progress bar on stderr when it is a terminal; nothing otherwise.
pub(crate) fn progress_bar(label: &'static str) -> impl FnMut(RebuildProgress) {
    let mut meter = progress_meter(label, "events");
    move |progress| meter(progress.replayed, progress.total)
}

/// Draws a progress bar of `done` out of `total` `unit`s on stderr when it is a terminal.
pub(crate) fn progress_meter(label: &'static str, unit: &'static str) -> impl FnMut(u64, u64) {
    let terminal = io::stderr().is_terminal();
    let started = Instant::now();
    move |done, total| {
        // Before the total is known, and for nothing to do, there is nothing to draw.
        if !terminal || total == 0 {
            return;
        }
        let shown_total = total.max(done).max(1);
        let fraction = done as f64 / shown_total as f64;
        let width = 30;
        let filled = (fraction * width as f64) as usize;
        let seconds = started.elapsed().as_secs_f64();
        let rate = done as f64 / seconds.max(1e-3);
        let mut stderr = io::stderr().lock();
        let _ = write!(
            stderr,
            "\r{label} [{}{}] {:>3.0}%  {done}/{shown_total} {unit}  {rate:.0} {unit}/s ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            fraction * 100.0,
        );
        // The last report ends the line.
        if done >= total {
            let _ = writeln!(stderr);
        }
        let _ = stderr.flush();
    }
}

/// Rebuilds the projections with a progress bar, reports the speed and prints the digest.
async fn rebuild_and_digest(store: &Store) -> Result<()> {
    let started = Instant::now();
    let events = store
        .rebuild_with_progress(progress_bar("rebuild"))
        .await
        .context("the rebuild failed; the previous projections are unchanged")?;
    let seconds = started.elapsed().as_secs_f64();
    out!(
        "replayed {events} events into fresh projections in {seconds:.2} s ({:.0} events/s)",
        events as f64 / seconds.max(1e-9)
    );
    let digest = store.state_digest().await?;
    out!("state digest: {digest}");
    Ok(())
}

/// `confidant rebuild`.
pub fn rebuild(args: StoreArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(&args).await?;
        let outcome = rebuild_and_digest(&store).await;
        store.close().await;
        outcome.map(|()| ExitCode::SUCCESS)
    })
}

/// `confidant check`.
pub fn check(args: StoreArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(&args).await?;
        let report = store.check().await;
        store.close().await;
        let report = report?;
        out!("{} events in the log", report.events);
        out!(
            "{:<12} {:>10} {:>10} {:>8}",
            "table",
            "live",
            "replayed",
            "differ"
        );
        for (table, live, replayed, differ) in &report.tables {
            out!("{table:<12} {live:>10} {replayed:>10} {differ:>8}");
        }
        out!("live state digest:     {}", report.live_digest);
        out!("replayed state digest: {}", report.replayed_digest);
        if report.consistent() {
            out!("consistent: the digests match; the live projections equal the replay of the log");
            Ok(ExitCode::SUCCESS)
        } else {
            out!("INCONSISTENT: the digests differ");
            eprintln!(
                "INCONSISTENT: the live projections differ from the replay; run `confidant rebuild`"
            );
            Ok(ExitCode::FAILURE)
        }
    })
}
