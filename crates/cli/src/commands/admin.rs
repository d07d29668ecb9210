//! Operator commands on the store: providers, `rebuild`, `check`. They open the database
//! directly, so they work while a server runs; the server reads providers from the database on
//! every request and sees changes at once.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confidant_core::{KeyedHasher, ProviderId, Region};
use confidant_store::{Store, StoreOptions};
use rand_core::{OsRng, RngCore};

use super::runtime;
use crate::cli::ProviderCommand;
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

fn provider_id(text: &str) -> Result<ProviderId> {
    ProviderId::from_hex(text)
        .with_context(|| format!("a provider id is 16 hexadecimal characters, got {text:?}"))
}

pub fn provider(command: ProviderCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match command {
            ProviderCommand::Add { name, region, store } => {
                let name = name.trim().to_owned();
                if name.is_empty() || name.len() > 200 {
                    bail!("--name must be 1 to 200 characters");
                }
                let region = Region::try_from(region).map_err(anyhow::Error::msg)?;
                let (store, hasher) = open(&store).await?;
                let mut id = [0u8; 8];
                OsRng.fill_bytes(&mut id);
                let mut token = [0u8; 32];
                OsRng.fill_bytes(&mut token);
                let token = URL_SAFE_NO_PAD.encode(token);
                store.register_provider(ProviderId(id), name.clone(), region.clone(), hasher.token(&token)).await?;
                store.close().await;
                out!("provider id: {}", ProviderId(id));
                out!("name:        {name}");
                out!("region:      {region}");
                out!("api token:   {token}");
                eprintln!("The API token is shown only now and stored only as a hash: hand it to the provider securely.");
            }
            ProviderCommand::List { store } => {
                let (store, _) = open(&store).await?;
                let providers = store.providers().await?;
                store.close().await;
                out!("{:<16}  {:<9}  {:<8}  name", "id", "status", "region");
                for (id, provider) in providers {
                    let status = if provider.suspended { "suspended" } else { "active" };
                    out!("{id}  {status:<9}  {:<8}  {}", provider.region, provider.name);
                }
            }
            ProviderCommand::Suspend { id, store } => set_suspended(&id, &store, true).await?,
            ProviderCommand::Reinstate { id, store } => set_suspended(&id, &store, false).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn set_suspended(id: &str, args: &StoreArgs, suspended: bool) -> Result<()> {
    let id = provider_id(id)?;
    let (store, _) = open(args).await?;
    let changed = store.set_suspended(id, suspended).await;
    store.close().await;
    let state = if suspended { "suspended" } else { "active" };
    let changed = match changed {
        Err(confidant_store::StoreError::Domain(confidant_core::DomainError::UnknownProvider)) => {
            bail!("no provider has id {id}; `confidant provider list` shows them")
        }
        other => other?,
    };
    match changed {
        true => out!("provider {id} is now {state}"),
        false => out!("provider {id} was already {state}"),
    }
    Ok(())
}

pub fn rebuild(args: StoreArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let (store, _) = open(&args).await?;
        let started = std::time::Instant::now();
        let events = store.rebuild().await?;
        let report = store.check().await?;
        store.close().await;
        out!(
            "replayed {events} events into fresh projections in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        if !report.consistent() {
            bail!("the rebuilt projections differ from the log: {report:?}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn check(args: StoreArgs) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let (store, _) = open(&args).await?;
        let report = store.check().await?;
        store.close().await;
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
        if report.consistent() {
            out!("consistent: the live projections equal the replay of the log");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "INCONSISTENT: the live projections differ from the replay; run `confidant rebuild`"
            );
            Ok(ExitCode::FAILURE)
        }
    })
}
