//! `confidant keys generate | derive`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use gaen::{IntervalNumber, Metadata, RollingPeriod, SigningKey, Tek};
use rand_core::OsRng;

use crate::cli::KeysCommand;

pub fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate { out, force } => generate(&out, force),
        KeysCommand::Derive {
            tek,
            rsin,
            rolling_period,
            metadata,
        } => derive(&tek, rsin, rolling_period, metadata.as_deref()),
    }
}

fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; pass --force to replace it",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot write {}: {e}", path.display())
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn generate(out: &Path, force: bool) -> Result<ExitCode> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key = SigningKey::generate(&mut OsRng);
    let private_path = out.join("signing-key.pem");
    let public_path = out.join("public-key.pem");
    for path in [&private_path, &public_path] {
        if !force && path.exists() {
            bail!(
                "{} already exists; pass --force to replace it",
                path.display()
            );
        }
    }
    // The private key is readable by its owner only.
    write_new(&private_path, &key.to_pem(), 0o600, force)?;
    let public = key.verifying_key().to_pem();
    write_new(&public_path, &public, 0o644, force)?;
    out!("wrote {}", private_path.display());
    out!("wrote {}", public_path.display());
    out!("{}", public.trim_end());
    Ok(ExitCode::SUCCESS)
}

fn derive(tek: &str, rsin: u32, rolling_period: u32, metadata: Option<&str>) -> Result<ExitCode> {
    let tek = hex::decode(tek)
        .ok()
        .and_then(|bytes| Tek::try_from(bytes.as_slice()).ok())
        .context("--tek must be 32 hexadecimal characters (16 bytes)")?;
    let period = RollingPeriod::new(rolling_period).with_context(|| {
        format!("--rolling-period must be between 1 and 144, got {rolling_period}")
    })?;
    let metadata = metadata
        .map(|m| {
            hex::decode(m)
                .ok()
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(Metadata)
                .context("--metadata must be 8 hexadecimal characters (4 bytes), e.g. 40080000")
        })
        .transpose()?;
    let (rpi_key, aem_key) = tek.derive_keys();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# RPIs of TEK {} from interval {rsin} for {period} intervals, heard mid-interval\n# unix_seconds,rpi{}",
        hex::encode(tek.as_bytes()),
        if metadata.is_some() { "‖aem" } else { "" }
    )?;
    for (interval, rpi) in rpi_key.rpis(IntervalNumber::new(rsin), period.get()).iter() {
        let aem = metadata
            .map(|m| hex::encode(aem_key.encrypt(&rpi, m).0))
            .unwrap_or_default();
        writeln!(
            out,
            "{},{}{aem}",
            interval.start_unix_seconds() + 300,
            hex::encode(rpi.0)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
