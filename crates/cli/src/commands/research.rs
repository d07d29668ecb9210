//! `confidant research export`: the opt-in research data of proven encounters, as counts per
//! cell (day, duration bucket, attenuation bucket, level), with every cell of fewer than k
//! records left out. The store keeps only counts; this is the only way they leave it.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use confidant_store::{Store, StoreOptions};

use super::{runtime, write_atomically};
use crate::cli::ResearchCommand;
use crate::input::format_timestamp;
use crate::settings::store_settings;

pub fn run(command: ResearchCommand) -> Result<ExitCode> {
    let ResearchCommand::Export { k, out, store } = command;
    if k < 2 {
        bail!("--k must be at least 2: a cell of one record is one person's encounter");
    }
    let settings = store_settings(&store)?;
    let cells = runtime()?.block_on(async {
        let store = Store::open(&settings.database_url, StoreOptions::default())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    super::serve::redact(&settings.database_url)
                )
            })?;
        let cells = store.research().await;
        store.close().await;
        cells.context("reading the research counts")
    })?;
    let mut csv = String::from("day,duration_bucket,attenuation_bucket,level,count\n");
    let (mut suppressed_cells, mut suppressed_records, mut exported) = (0u64, 0u64, 0u64);
    for (cell, count) in &cells {
        if *count < k {
            suppressed_cells += 1;
            suppressed_records += count;
            continue;
        }
        exported += count;
        let day = format_timestamp(u64::from(cell.day) * 86_400);
        csv.push_str(&format!(
            "{},{},{},{},{count}\n",
            &day[..10],
            cell.duration,
            cell.attenuation,
            cell.level
        ));
    }
    match &out {
        Some(path) => write_atomically(path, csv.as_bytes())?,
        None => std::io::stdout().write_all(csv.as_bytes())?,
    }
    eprintln!(
        "{exported} record(s) in {} cell(s) exported; {suppressed_records} record(s) in \
         {suppressed_cells} cell(s) below k = {k} left out",
        cells.len() as u64 - suppressed_cells
    );
    Ok(ExitCode::SUCCESS)
}
