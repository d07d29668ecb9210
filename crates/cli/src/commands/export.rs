//! `confidant export inspect | verify | build`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use gaen::{Export, ExportFiles, ExportSignature, SignatureInfo, Signer, SigningKey};
use serde_json::{Value, json};

use super::{load_public_key, read_text, write_atomically};
use crate::cli::{BuildArgs, ExportCommand};
use crate::input::{format_timestamp, parse_keys_csv, parse_timestamp};
use crate::sources;

pub fn run(command: ExportCommand) -> Result<ExitCode> {
    match command {
        ExportCommand::Inspect {
            file,
            json,
            public_key,
        } => inspect(&file, json, public_key.as_deref()),
        ExportCommand::Verify { files, public_key } => verify(&files, &public_key),
        ExportCommand::Keys { file } => list_keys(&file),
        ExportCommand::Build(args) => build(args),
    }
}

fn list_keys(file: &Path) -> Result<ExitCode> {
    let export = sources::single(file)?
        .load()?
        .export()
        .with_context(|| file.display().to_string())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "key_hex,rsin,rolling_period,trl,report_type,days_since_onset,variant_of_concern"
    )?;
    for (heading, keys) in [
        (None, &export.keys),
        (Some("# revised"), &export.revised_keys),
    ] {
        if let Some(heading) = heading.filter(|_| !keys.is_empty()) {
            writeln!(out, "{heading}")?;
        }
        for key in keys {
            writeln!(
                out,
                "{},{},{},{},{},{},{}",
                hex::encode(key.tek.as_bytes()),
                key.rolling_start,
                key.rolling_period,
                key.transmission_risk.map_or(0, |t| t.get()),
                key.report_type.map_or("", |t| t.name()),
                key.days_since_onset
                    .map_or(String::new(), |d| d.to_string()),
                key.variant_of_concern
                    .map_or(String::new(), |v| v.get().to_string()),
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn info_json(info: Option<&SignatureInfo>) -> Value {
    let info = info.cloned().unwrap_or_default();
    json!({
        "key_id": info.verification_key_id,
        "key_version": info.verification_key_version,
        "algorithm": info.signature_algorithm,
        "app_bundle_id": info.app_bundle_id,
        "android_package": info.android_package,
    })
}

fn histogram<K: Ord, I: IntoIterator<Item = K>>(items: I) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

fn describe(export: &Export, signatures: &[ExportSignature]) -> Value {
    let periods = histogram(export.keys.iter().map(|k| k.rolling_period.get()));
    let report_types = histogram(
        export
            .keys
            .iter()
            .map(|k| k.report_type.map_or("absent", |t| t.name())),
    );
    let key_starts = export.keys.iter().map(|k| k.rolling_start);
    json!({
        "header": String::from_utf8_lossy(gaen::EXPORT_HEADER).trim_end(),
        "region": export.region,
        "start_timestamp": export.start_timestamp,
        "end_timestamp": export.end_timestamp,
        "start": format_timestamp(export.start_timestamp),
        "end": format_timestamp(export.end_timestamp),
        "batch_num": export.batch_num,
        "batch_size": export.batch_size,
        "signature_infos": export.signature_infos.iter().map(|i| info_json(Some(i))).collect::<Vec<_>>(),
        "signatures": signatures.iter().map(|s| {
            let mut entry = info_json(s.info.as_ref());
            entry["der_bytes"] = json!(s.signature.len());
            entry
        }).collect::<Vec<_>>(),
        "keys": export.keys.len(),
        "revised_keys": export.revised_keys.len(),
        "rolling_periods": periods.iter().rev().map(|(p, n)| json!({"period": p, "keys": n})).collect::<Vec<_>>(),
        "report_types": report_types.iter().map(|(t, n)| ((*t).to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "first_rolling_start": key_starts.clone().min().map(|i| i.get()),
        "last_rolling_start": key_starts.max().map(|i| i.get()),
    })
}

fn inspect(file: &Path, as_json: bool, public_key: Option<&Path>) -> Result<ExitCode> {
    let files = sources::single(file)?.load()?;
    let export = files.export().with_context(|| file.display().to_string())?;
    let signatures = files
        .signatures()
        .with_context(|| file.display().to_string())?;
    let mut report = describe(&export, &signatures);
    report["file"] = json!(file.display().to_string());
    if let Some(path) = public_key {
        let key = load_public_key(path)?;
        report["verified"] = match files.verify(&key) {
            Ok(_) => json!(true),
            Err(e) => json!(e.to_string()),
        };
    }
    if as_json {
        out!("{report}");
    } else {
        out!("{}", render_text(&report).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn render_text(r: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let infos = |list: &Value| {
        list.as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, info)| {
                let der = info
                    .get("der_bytes")
                    .map(|n| format!(", {n}-byte DER signature"))
                    .unwrap_or_default();
                format!(
                    "\n  [{i}] key id {}, version {}, algorithm {}, bundle {}, package {}{der}",
                    text(&info["key_id"]),
                    text(&info["key_version"]),
                    text(&info["algorithm"]),
                    text(&info["app_bundle_id"]),
                    text(&info["android_package"]),
                )
            })
            .collect::<String>()
    };
    let counts = |map: &Value| {
        map.as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} × {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let periods = r["rolling_periods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{} × {}", p["period"], p["keys"]))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "file:            {}\nheader:          {}\nregion:          {}\nwindow:          {} .. {} ({} .. {})\nbatch:           {} of {}\nsignature infos: {}{}\nsignatures:      {}{}\nkeys:            {}\nrolling periods: {}\nreport types:    {}\nrolling starts:  {} .. {}\nrevised keys:    {}\n",
        text(&r["file"]),
        text(&r["header"]),
        text(&r["region"]),
        text(&r["start"]),
        text(&r["end"]),
        r["start_timestamp"],
        r["end_timestamp"],
        text(&r["batch_num"]),
        text(&r["batch_size"]),
        r["signature_infos"].as_array().map_or(0, Vec::len),
        infos(&r["signature_infos"]),
        r["signatures"].as_array().map_or(0, Vec::len),
        infos(&r["signatures"]),
        r["keys"],
        periods,
        counts(&r["report_types"]),
        text(&r["first_rolling_start"]),
        text(&r["last_rolling_start"]),
        r["revised_keys"],
    );
    if let Some(verified) = r.get("verified") {
        out.push_str(&format!(
            "verified:        {}\n",
            if verified == &json!(true) {
                "yes".to_owned()
            } else {
                format!("NO ({})", text(verified))
            }
        ));
    }
    out
}

fn verify(paths: &[PathBuf], public_key: &Path) -> Result<ExitCode> {
    let key = load_public_key(public_key)?;
    let mut failures = 0;
    let exports = sources::discover(paths)?;
    ensure!(
        !exports.is_empty(),
        "no export files found in the given folders"
    );
    for source in exports {
        let path = source.path().display();
        let outcome = source.load().and_then(|files| {
            files
                .verify(&key)
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))
        });
        match outcome {
            Ok(signature) => {
                let info = signature.info.unwrap_or_default();
                out!(
                    "ok {path} (key id {}, version {})",
                    info.verification_key_id.as_deref().unwrap_or("-"),
                    info.verification_key_version.as_deref().unwrap_or("-")
                );
            }
            Err(e) => {
                failures += 1;
                eprintln!("FAILED {e:#}");
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `NAME.zip` → `NAME-<part>.zip` beside it.
fn part_path(out: &Path, part: usize) -> PathBuf {
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let extension = out
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    out.with_file_name(format!("{stem}-{part}{extension}"))
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let signer_count = args.signing_keys.len();
    ensure!(
        args.key_ids.len() == signer_count && args.key_versions.len() == signer_count,
        "give one --key-id and one --key-version per --signing-key ({signer_count} signing key(s), {} key id(s), {} key version(s))",
        args.key_ids.len(),
        args.key_versions.len()
    );
    let region = args.region.trim();
    ensure!(
        !region.is_empty() && region.len() <= 64,
        "--region must be 1 to 64 characters, e.g. DE"
    );
    let start = parse_timestamp(&args.start).map_err(|e| anyhow::anyhow!("--start: {e}"))?;
    let end = parse_timestamp(&args.end).map_err(|e| anyhow::anyhow!("--end: {e}"))?;
    if start >= end {
        bail!("--start ({start}) must be before --end ({end})");
    }
    let keys =
        parse_keys_csv(&read_text(&args.keys)?).with_context(|| args.keys.display().to_string())?;
    let signers = args
        .signing_keys
        .iter()
        .zip(args.key_ids.iter().zip(&args.key_versions))
        .map(|(path, (id, version))| {
            Ok(Signer {
                key: SigningKey::from_pem(&read_text(path)?)
                    .with_context(|| path.display().to_string())?,
                info: SignatureInfo {
                    app_bundle_id: args.app_bundle_id.clone(),
                    ..SignatureInfo::new(id, version)
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let export = Export {
        keys,
        ..Export::new(region, start, end)
    };
    let key_count = export.keys.len();
    let parts = gaen::split_export(export, args.max_keys_per_file)?;
    let single = parts.len() == 1;
    for (index, part) in parts.into_iter().enumerate() {
        let path = if single {
            args.out.clone()
        } else {
            part_path(&args.out, index + 1)
        };
        let keys = part.keys.len();
        let zip = ExportFiles::seal(part, &signers)?.to_zip();
        write_atomically(&path, &zip)?;
        out!(
            "wrote {} ({keys} keys, {} bytes)",
            path.display(),
            zip.len()
        );
    }
    eprintln!("{key_count} keys in total");
    Ok(ExitCode::SUCCESS)
}
