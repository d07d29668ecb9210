//! `confidant feed verify | inspect`: check a downloaded copy of the native key feed
//! (`docs/feed.md`) the way a client would, and show what one file holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail, ensure};
use confidant_core::StoredKey;
use confidant_core::feed::{
    self, FEED_INDEX_FORMAT, FeedError, FeedFile, FeedFollower, FeedIndex, FeedKind, IndexEntry,
};
use gaen::VerifyingKey;

use super::load_public_key;
use crate::cli::FeedCommand;
use crate::input::format_timestamp;

const INDEX: &str = "index.json";

pub fn run(command: FeedCommand) -> Result<ExitCode> {
    match command {
        FeedCommand::Verify { dir, public_keys } => verify(&dir, &load_keys(&public_keys)?),
        FeedCommand::Inspect {
            file,
            keys,
            public_keys,
        } => inspect(&file, keys, &load_keys(&public_keys)?),
    }
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>> {
    paths.iter().map(|path| load_public_key(path)).collect()
}

/// Checks structure and signature, accepting the file if any of `keys` verifies it. PEM files
/// carry no key id, so the file's key id cannot pick the key.
fn verify_any(bytes: &[u8], keys: &[VerifyingKey]) -> Result<FeedFile, String> {
    let mut mismatch = None;
    for key in keys {
        match feed::verify(bytes, key) {
            Ok(file) => return Ok(file),
            Err(FeedError::SignatureMismatch { key_id }) => mismatch = Some(key_id),
            Err(other) => return Err(other.to_string()),
        }
    }
    let key_id = mismatch.unwrap_or_default();
    Err(match keys.len() {
        1 => format!("signature (key id {key_id:?}) does not verify with the public key"),
        n => {
            format!("signature (key id {key_id:?}) does not verify with any of the {n} public keys")
        }
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The seq of a canonically named delta file (`delta-0000000042.cfeed`).
fn delta_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("delta-")?.strip_suffix(".cfeed")?;
    let seq = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse::<u64>().ok())??;
    (feed::delta_name(seq) == name).then_some(seq)
}

/// One region's downloaded feed directory and the keys its files must verify with.
struct FeedDir<'a> {
    dir: &'a Path,
    keys: &'a [VerifyingKey],
}

impl FeedDir<'_> {
    /// The file's bytes, or `None` if it is not there.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{name}: cannot read {}", path.display())),
        }
    }

    fn index(&self) -> Result<FeedIndex> {
        let path = self.dir.join(INDEX);
        let Some(bytes) = self.read(INDEX)? else {
            bail!("{INDEX} is missing from {}", self.dir.display());
        };
        let index: FeedIndex = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("{INDEX}: not a valid feed index ({}): {e}", path.display()))?;
        ensure!(
            index.format == FEED_INDEX_FORMAT,
            "{INDEX}: format {} is not supported (this tool reads format {FEED_INDEX_FORMAT})",
            index.format
        );
        let newest = index
            .deltas
            .last()
            .or(index.snapshot.as_ref())
            .map_or(0, |entry| entry.seq);
        ensure!(
            index.latest_seq == newest,
            "{INDEX}: latestSeq is {} but the newest file it lists is at seq {newest}",
            index.latest_seq
        );
        Ok(index)
    }

    /// Verifies the signature and that the file is the `kind` and `seq` its name says.
    fn open(&self, name: &str, bytes: &[u8], kind: FeedKind, seq: u64) -> Result<FeedFile> {
        let file = verify_any(bytes, self.keys).map_err(|e| anyhow!("{name}: {e}"))?;
        ensure!(
            file.kind == kind,
            "{name}: {}",
            FeedError::WrongKind {
                expected: kind,
                found: file.kind,
                seq: file.seq
            }
        );
        ensure!(
            file.seq == seq,
            "{name}: the file holds {kind} {}, its name says {seq}",
            file.seq
        );
        Ok(file)
    }

    /// A file listed in the index: present, with the size, SHA-256 and window the index
    /// gives, and a valid signature. Returns its bytes' hash and content.
    fn listed(&self, kind: FeedKind, entry: &IndexEntry) -> Result<([u8; 32], FeedFile)> {
        let name = feed::file_name(kind, entry.seq);
        ensure!(
            entry.file == name,
            "{INDEX}: the entry for {kind} {} names the file {:?}, expected {name}",
            entry.seq,
            entry.file
        );
        let Some(bytes) = self.read(&name)? else {
            bail!("{name} is listed in {INDEX} but missing");
        };
        ensure!(
            bytes.len() as u64 == entry.bytes,
            "{name}: the file has {} bytes, {INDEX} says {}",
            bytes.len(),
            entry.bytes
        );
        let hash = feed::file_hash(&bytes);
        let hex_hash = hex::encode(hash);
        ensure!(
            hex_hash == entry.sha256,
            "{name}: SHA-256 does not match {INDEX} (the file's is {hex_hash}, {INDEX} says {})",
            entry.sha256
        );
        let file = self.open(&name, &bytes, kind, entry.seq)?;
        ensure!(
            (file.start, file.end) == (entry.start, entry.end),
            "{name}: the file's window is {}..{}, {INDEX} says {}..{}",
            file.start,
            file.end,
            entry.start,
            entry.end
        );
        Ok((hash, file))
    }

    /// Reads, verifies and applies delta `seq` from the folder (not via the index).
    fn apply_unlisted(&self, follower: &mut FeedFollower, seq: u64) -> Result<()> {
        let name = feed::delta_name(seq);
        let Some(bytes) = self.read(&name)? else {
            bail!("{name} disappeared while checking");
        };
        let file = self.open(&name, &bytes, FeedKind::Delta, seq)?;
        follower
            .apply(&bytes, &file)
            .map_err(|e| anyhow!("{name}: {e}"))
    }

    /// The seqs of the delta files in the folder, by name.
    fn delta_files(&self) -> Result<BTreeSet<u64>> {
        let entries = fs::read_dir(self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?;
        let mut seqs = BTreeSet::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            if let Some(seq) = entry.file_name().to_str().and_then(delta_seq) {
                seqs.insert(seq);
            }
        }
        Ok(seqs)
    }
}

fn verify(dir: &Path, keys: &[VerifyingKey]) -> Result<ExitCode> {
    ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let feed = FeedDir { dir, keys };
    let index = feed.index()?;

    let (mut follower, snapshot) = match &index.snapshot {
        Some(entry) => {
            let (_, snapshot) = feed.listed(FeedKind::Snapshot, entry)?;
            ensure!(
                snapshot.region == index.region,
                "{}: region mismatch: {INDEX} is for {}, the file is for {}",
                entry.file,
                index.region,
                snapshot.region
            );
            let follower = FeedFollower::from_snapshot(&snapshot)
                .map_err(|e| anyhow!("{}: {e}", entry.file))?;
            (follower, Some(snapshot))
        }
        None => (FeedFollower::new(index.region.clone()), None),
    };
    let first = follower.seq().saturating_add(1);

    for entry in &index.deltas {
        let (hash, delta) = feed.listed(FeedKind::Delta, entry)?;
        follower
            .apply_with_hash(hash, &delta)
            .map_err(|e| anyhow!("{}: {e}", entry.file))?;
    }

    // Deltas a client fetched by polling after it read the index.
    let present = feed.delta_files()?;
    let mut ahead = 0usize;
    while let Some(next) = follower
        .seq()
        .checked_add(1)
        .filter(|s| present.contains(s))
    {
        feed.apply_unlisted(&mut follower, next)?;
        ahead += 1;
    }
    let missing = follower.seq().saturating_add(1);
    let skipped = present.range(missing..).count();
    if let Some(next_present) = present.range(missing..).next() {
        eprintln!(
            "warning: not checked: {} from delta {next_present} on, because delta {missing} is \
             missing",
            plural(skipped, "delta file", "delta files"),
        );
    }

    let history = match &snapshot {
        Some(snapshot) if snapshot.seq >= 1 => check_history(&feed, &present, snapshot)?,
        _ => None,
    };

    let last = follower.seq();
    let count = usize::try_from(last.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
    let start = match &snapshot {
        Some(snapshot) => format!("snapshot at delta {}", snapshot.seq),
        None => "no snapshot".to_owned(),
    };
    let beyond = if ahead > 0 {
        format!(
            ", {ahead} of them beyond {INDEX}'s latestSeq {}",
            index.latest_seq
        )
    } else {
        String::new()
    };
    let deltas = match count {
        0 if snapshot.is_some() => "no deltas after it".to_owned(),
        0 => "no deltas".to_owned(),
        1 => format!("delta {first} verified (1 file{beyond})"),
        n => format!("deltas {first}..={last} verified ({n} files{beyond})"),
    };
    let history = history.map(|line| format!("; {line}")).unwrap_or_default();
    out!(
        "feed {}: {start}, {deltas}; {}{history}",
        index.region,
        plural(follower.live().len(), "live key", "live keys")
    );
    Ok(ExitCode::SUCCESS)
}

/// With deltas 1..=snapshot.seq in the folder, replays them from nothing and checks the
/// result is the snapshot: the same keys and the snapshot's `prev` as the last delta's hash.
/// `None` when the folder does not hold that full history.
fn check_history(
    feed: &FeedDir<'_>,
    present: &BTreeSet<u64>,
    snapshot: &FeedFile,
) -> Result<Option<String>> {
    let held = present.range(1..=snapshot.seq).count() as u64;
    if held != snapshot.seq {
        if held > 0 {
            eprintln!(
                "note: {} of deltas 1..={} present, not the full history: it was not replayed",
                held, snapshot.seq
            );
        }
        return Ok(None);
    }
    let mut replay = FeedFollower::new(snapshot.region.clone());
    for seq in 1..=snapshot.seq {
        feed.apply_unlisted(&mut replay, seq)?;
    }
    let name = feed::snapshot_name(snapshot.seq);
    ensure!(
        replay.last_hash() == snapshot.prev,
        "{name}: its predecessor hash is not the hash of {} in the folder",
        feed::delta_name(snapshot.seq)
    );
    let expected: BTreeMap<_, _> = snapshot.added.iter().map(|k| (k.key_data, *k)).collect();
    let replayed = replay.live();
    if *replayed != expected {
        let only_replay = replayed
            .keys()
            .filter(|k| !expected.contains_key(k))
            .count();
        let only_snapshot = expected
            .keys()
            .filter(|k| !replayed.contains_key(k))
            .count();
        let changed = replayed
            .iter()
            .filter(|(k, v)| expected.get(k).is_some_and(|e| e != *v))
            .count();
        bail!(
            "{name}: replaying deltas 1..={} does not give the snapshot's keys: {} only in the \
             replay, {} only in the snapshot, {} with different metadata",
            snapshot.seq,
            plural(only_replay, "key", "keys"),
            only_snapshot,
            changed
        );
    }
    Ok(Some("history from delta 1 matches the snapshot".to_owned()))
}

/// `n × value` counts, most common value first.
fn histogram(values: impl Iterator<Item = u64>) -> String {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .iter()
        .map(|(value, n)| format!("{value} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn groups_summary(keys: &[StoredKey]) -> String {
    if keys.is_empty() {
        return "-".to_owned();
    }
    let groups: BTreeSet<_> = keys
        .iter()
        .map(|k| (k.rolling_start, k.rolling_period, k.transmission_risk))
        .collect();
    let first = keys.iter().map(|k| k.rolling_start).min().unwrap_or(0);
    let last = keys.iter().map(|k| k.rolling_start).max().unwrap_or(0);
    format!(
        "{}; rolling starts {first} .. {last} ({} .. {}); periods {}; risks {}",
        plural(groups.len(), "group", "groups"),
        format_timestamp(u64::from(first) * 600),
        format_timestamp(u64::from(last) * 600),
        histogram(keys.iter().map(|k| u64::from(k.rolling_period))),
        histogram(keys.iter().map(|k| u64::from(k.transmission_risk))),
    )
}

fn inspect(path: &Path, list_keys: bool, keys: &[VerifyingKey]) -> Result<ExitCode> {
    let name = path.display().to_string();
    let bytes = fs::read(path).with_context(|| format!("cannot read {name}"))?;
    let file = feed::decode(&bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    let key_id = feed::key_id_of(&bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    let signature = (!keys.is_empty()).then(|| verify_any(&bytes, keys));

    let mut out = io::BufWriter::new(io::stdout().lock());
    let prev_note = if file.prev == [0; 32] {
        " (none: start of the chain)"
    } else {
        ""
    };
    writeln!(out, "file:      {name}")?;
    writeln!(out, "kind:      {}", file.kind)?;
    writeln!(out, "region:    {}", file.region)?;
    writeln!(out, "seq:       {}", file.seq)?;
    writeln!(out, "prev:      {}{prev_note}", hex::encode(file.prev))?;
    writeln!(
        out,
        "start:     {} ({})",
        file.start,
        format_timestamp(file.start)
    )?;
    writeln!(
        out,
        "end:       {} ({})",
        file.end,
        format_timestamp(file.end)
    )?;
    writeln!(out, "key id:    {key_id}")?;
    writeln!(
        out,
        "added:     {}",
        plural(file.added.len(), "key", "keys")
    )?;
    writeln!(out, "groups:    {}", groups_summary(&file.added))?;
    writeln!(
        out,
        "removed:   {}",
        plural(file.removed.len(), "key", "keys")
    )?;
    writeln!(out, "bytes:     {}", bytes.len())?;
    writeln!(out, "sha256:    {}", hex::encode(feed::file_hash(&bytes)))?;
    if let Some(outcome) = &signature {
        match outcome {
            Ok(_) => writeln!(out, "signature: verified")?,
            Err(e) => writeln!(out, "signature: NOT VERIFIED ({e})")?,
        }
    }
    if list_keys {
        for key in &file.added {
            writeln!(
                out,
                "+ {} {} {} {}",
                hex::encode(key.key_data.0),
                key.rolling_start,
                key.rolling_period,
                key.transmission_risk
            )?;
        }
        for key in &file.removed {
            writeln!(out, "- {}", hex::encode(key.0))?;
        }
    }
    out.flush()?;
    if let Some(Err(e)) = signature {
        bail!("{name}: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
