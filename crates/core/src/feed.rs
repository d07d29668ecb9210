//! Confidant's native key feed: signed, hash-chained snapshot and delta files, version 1.
//!
//! Phones poll often, so the feed is small (16 bytes per key plus an 11-byte header per group
//! of keys that share metadata), carries deletions, and lets a client detect gaps, reordering
//! and tampering: every file has a sequence number, the SHA-256 of its predecessor and an ECDSA
//! P-256 signature. `docs/feed.md` is the specification for app developers; this module is
//! its reference implementation, with no I/O.
//!
//! - [`FeedFile::encode`] writes a file (it sorts and groups the keys itself);
//!   [`decode`] checks the structure, [`verify`] / [`verify_with`] also the signature.
//! - [`FeedFollower`] follows a chain: from nothing or from a snapshot, applying deltas in
//!   order. The publisher uses it too, to turn "live set + delta" into the next live set.
//! - [`FeedIndex`] is the `index.json` published next to the files.

use std::collections::BTreeMap;
use std::fmt;

use gaen::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ids::{KeyData, Region};
use crate::state::StoredKey;

/// The first 8 bytes of every feed file: `CFEED`, the format version (1), CR LF. The CR LF
/// makes a file mangled by a text-mode transfer fail at once.
pub const FEED_MAGIC: [u8; 8] = *b"CFEED\x01\r\n";

/// The `format` field of `index.json`.
pub const FEED_INDEX_FORMAT: u32 = 1;

/// The report type this encoder writes: 1 = CONFIRMED_TEST (export.proto's numbering).
pub const REPORT_TYPE_CONFIRMED_TEST: u8 = 1;

/// The highest report type a decoder accepts (5 = REVOKED in export.proto).
pub const MAX_REPORT_TYPE: u8 = 5;

/// The longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Bytes of one group header: rolling_start u32, rolling_period u8, transmission_risk u8,
/// report_type u8, key_count u32.
const GROUP_HEADER_LEN: usize = 11;
const KEY_LEN: usize = 16;

/// Snapshot or delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// The whole live set after delta `seq`.
    Snapshot,
    /// What changed in one window: keys added and keys removed.
    Delta,
}

impl FeedKind {
    /// The `kind` byte: 1 = snapshot, 2 = delta.
    pub fn code(self) -> u8 {
        match self {
            Self::Snapshot => 1,
            Self::Delta => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Snapshot),
            2 => Some(Self::Delta),
            _ => None,
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Snapshot => "snapshot",
            Self::Delta => "delta",
        })
    }
}

/// One feed file's content, without its signature.
///
/// Produced by [`decode`] / [`verify`] and consumed by [`FeedFile::encode`]. After decoding,
/// `added` is in file order (by group, then by key_data) and `removed` ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedFile {
    pub kind: FeedKind,
    pub region: Region,
    /// Delta: its sequence number (the first delta is 1). Snapshot: the last delta it includes.
    pub seq: u64,
    /// Delta: SHA-256 of the complete bytes of delta `seq - 1` (all zero for delta 1).
    /// Snapshot: SHA-256 of delta `seq` (all zero for a snapshot at seq 0), so that delta
    /// `seq + 1` names the same predecessor hash.
    pub prev: [u8; 32],
    /// Unix seconds. Delta: start of the window it covers. Snapshot: equal to `end`.
    pub start: u64,
    /// Unix seconds. Delta: end of the window (exclusive). Snapshot: the moment it describes.
    pub end: u64,
    /// Delta: keys published in the window. Snapshot: the whole live set.
    pub added: Vec<StoredKey>,
    /// Delta: keys withdrawn in the window (expired or corrected). Always empty in a snapshot.
    pub removed: Vec<KeyData>,
}

/// A part of a feed file, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedPart {
    Magic,
    Kind,
    RegionLength,
    Region,
    Seq,
    Prev,
    Start,
    End,
    GroupCount,
    /// The 11-byte header of group `n` (counting from 0).
    GroupHeader(u32),
    /// The key data of group `n` (counting from 0).
    GroupKeys(u32),
    RemovedCount,
    Removed,
    KeyIdLength,
    KeyId,
    SignatureLength,
    Signature,
}

impl fmt::Display for FeedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic => f.write_str("magic"),
            Self::Kind => f.write_str("kind"),
            Self::RegionLength => f.write_str("region length"),
            Self::Region => f.write_str("region"),
            Self::Seq => f.write_str("seq"),
            Self::Prev => f.write_str("predecessor hash"),
            Self::Start => f.write_str("window start"),
            Self::End => f.write_str("window end"),
            Self::GroupCount => f.write_str("group count"),
            Self::GroupHeader(n) => write!(f, "header of group {n}"),
            Self::GroupKeys(n) => write!(f, "key data of group {n}"),
            Self::RemovedCount => f.write_str("removed count"),
            Self::Removed => f.write_str("removed key data"),
            Self::KeyIdLength => f.write_str("key id length"),
            Self::KeyId => f.write_str("key id"),
            Self::SignatureLength => f.write_str("signature length"),
            Self::Signature => f.write_str("signature"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "truncated: the file ends inside the {part} at byte {len} (the {part} starts at byte \
         {start} and needs {needed} bytes)"
    )]
    Truncated {
        part: FeedPart,
        start: usize,
        needed: usize,
        len: usize,
    },
    #[error("bad magic: not a Confidant feed file (version 1)")]
    BadMagic,
    #[error("unsupported feed format version {0}: this decoder reads version 1")]
    UnsupportedVersion(u8),
    #[error("bad {part} at byte {at}: {value}, expected {expected}")]
    BadValue {
        part: FeedPart,
        at: usize,
        value: u64,
        expected: &'static str,
    },
    #[error("bad region at byte {at}: {reason}")]
    BadRegion { at: usize, reason: String },
    #[error("bad key id: {0}")]
    BadKeyId(String),
    #[error("delta sequence numbers start at 1; got a delta with seq 0")]
    DeltaSeqZero,
    #[error("{kind} {seq} must have an all-zero predecessor hash: there is no delta 0 to hash")]
    NonZeroChainStart { kind: FeedKind, seq: u64 },
    #[error(
        "bad window for a {kind}: start {start}, end {end} (a snapshot has start == end, a \
         delta start <= end)"
    )]
    BadWindow {
        kind: FeedKind,
        start: u64,
        end: u64,
    },
    #[error(
        "not strictly ascending: the {part} at byte {at} does not sort after the one before it"
    )]
    NotAscending { part: FeedPart, at: usize },
    #[error("key_data {0} appears twice in the file (keys and removals must all be distinct)")]
    DuplicateKey(KeyData),
    #[error("key {key_data}: {field} {value} is out of range ({expected})")]
    InvalidKey {
        key_data: KeyData,
        field: &'static str,
        value: u32,
        expected: &'static str,
    },
    #[error("a snapshot carries no removals, got {count}")]
    SnapshotWithRemovals { count: usize },
    #[error("too many {what} for one file: {count} (at most {max})", max = u32::MAX)]
    TooMany { what: &'static str, count: usize },
    #[error("{count} trailing byte(s) after the signature, from byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("signature does not verify with key id {key_id:?}")]
    SignatureMismatch { key_id: String },
    #[error("no public key is known for key id {0:?}")]
    UnknownKeyId(String),
    #[error("expected a {expected}, found a {found} (seq {seq})")]
    WrongKind {
        expected: FeedKind,
        found: FeedKind,
        seq: u64,
    },
    #[error("region mismatch: the chain is for {expected}, the file is for {found}")]
    RegionMismatch { expected: Region, found: Region },
    #[error("gap: expected delta {expected}, found delta {found}")]
    Gap { expected: u64, found: u64 },
    #[error(
        "broken chain at delta {seq}: its predecessor hash does not match delta {}",
        .seq.saturating_sub(1)
    )]
    BrokenChain { seq: u64 },
}

/// SHA-256 of a whole file, as named by the next delta's `prev` and by `index.json`.
pub fn file_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `delta-0000000042.cfeed`.
pub fn delta_name(seq: u64) -> String {
    format!("delta-{seq:010}.cfeed")
}

/// `snapshot-0000000042.cfeed`.
pub fn snapshot_name(seq: u64) -> String {
    format!("snapshot-{seq:010}.cfeed")
}

/// The published name of a file of this kind and seq.
pub fn file_name(kind: FeedKind, seq: u64) -> String {
    match kind {
        FeedKind::Snapshot => snapshot_name(seq),
        FeedKind::Delta => delta_name(seq),
    }
}

/// Rolling start, period, risk and report type packed so that `u64` order is the format's
/// group order.
fn group_key(rolling_start: u32, rolling_period: u8, risk: u8, report_type: u8) -> u64 {
    (u64::from(rolling_start) << 24)
        | (u64::from(rolling_period) << 16)
        | (u64::from(risk) << 8)
        | u64::from(report_type)
}

/// Key data as a number whose order is the unsigned byte order the format sorts by.
fn key_number(key: &KeyData) -> u128 {
    u128::from_be_bytes(key.0)
}

/// What is wrong with a key id, if anything: the rule every signed file format of this crate
/// shares (`tokenfile` too).
pub(crate) fn key_id_problem(key_id: &str) -> Option<String> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Some(format!(
            "a key id is 1 to {MAX_KEY_ID_LEN} bytes, got {}",
            key_id.len()
        ));
    }
    if !key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "a key id is printable ASCII without spaces (0x21..=0x7E), got {key_id:?}"
        ));
    }
    None
}

fn check_key_id(key_id: &str) -> Result<(), FeedError> {
    key_id_problem(key_id).map_or(Ok(()), |problem| Err(FeedError::BadKeyId(problem)))
}

/// The rules on seq, prev and the window that encoder and decoder share.
fn check_header(
    kind: FeedKind,
    seq: u64,
    prev: &[u8; 32],
    start: u64,
    end: u64,
) -> Result<(), FeedError> {
    let chain_start = match kind {
        FeedKind::Delta if seq == 0 => return Err(FeedError::DeltaSeqZero),
        FeedKind::Delta => seq == 1,
        FeedKind::Snapshot => seq == 0,
    };
    if chain_start && *prev != [0; 32] {
        return Err(FeedError::NonZeroChainStart { kind, seq });
    }
    let window_ok = match kind {
        FeedKind::Snapshot => start == end,
        FeedKind::Delta => start <= end,
    };
    if !window_ok {
        return Err(FeedError::BadWindow { kind, start, end });
    }
    Ok(())
}

fn count_u32(what: &'static str, count: usize) -> Result<u32, FeedError> {
    u32::try_from(count).map_err(|_| FeedError::TooMany { what, count })
}

impl FeedFile {
    /// Encodes and signs the file. Input order does not matter: keys are grouped by
    /// (rolling_start, rolling_period, transmission_risk, report type 1) and sorted, removals
    /// sorted. Refuses duplicate key_data (across added and removed), a rolling_period outside
    /// 1..=144, a transmission_risk above 8, removals in a snapshot, a bad key id (1..=64
    /// printable ASCII bytes) and the header rules of [`decode`].
    pub fn encode(&self, signer: &SigningKey, key_id: &str) -> Result<Vec<u8>, FeedError> {
        check_key_id(key_id)?;
        check_header(self.kind, self.seq, &self.prev, self.start, self.end)?;
        if self.kind == FeedKind::Snapshot && !self.removed.is_empty() {
            return Err(FeedError::SnapshotWithRemovals {
                count: self.removed.len(),
            });
        }

        let mut entries: Vec<(u64, u128)> = Vec::with_capacity(self.added.len());
        for key in &self.added {
            let period = u8::try_from(key.rolling_period)
                .ok()
                .filter(|p| (1..=144).contains(p))
                .ok_or(FeedError::InvalidKey {
                    key_data: key.key_data,
                    field: "rolling_period",
                    value: key.rolling_period,
                    expected: "1..=144",
                })?;
            if key.transmission_risk > 8 {
                return Err(FeedError::InvalidKey {
                    key_data: key.key_data,
                    field: "transmission_risk",
                    value: u32::from(key.transmission_risk),
                    expected: "0..=8",
                });
            }
            let group = group_key(
                key.rolling_start,
                period,
                key.transmission_risk,
                REPORT_TYPE_CONFIRMED_TEST,
            );
            entries.push((group, key_number(&key.key_data)));
        }
        entries.sort_unstable();
        let mut removed: Vec<u128> = self.removed.iter().map(key_number).collect();
        removed.sort_unstable();

        let mut all: Vec<u128> = Vec::with_capacity(entries.len() + removed.len());
        all.extend(entries.iter().map(|&(_, key)| key));
        all.extend_from_slice(&removed);
        all.sort_unstable();
        if let Some(pair) = all.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(FeedError::DuplicateKey(KeyData(pair[0].to_be_bytes())));
        }
        drop(all);

        let group_count = entries.chunk_by(|a, b| a.0 == b.0).count();
        let region = self.region.as_str().as_bytes();
        let capacity = FEED_MAGIC.len()
            + 2
            + region.len()
            + 8 * 3
            + 32
            + 4
            + group_count * GROUP_HEADER_LEN
            + entries.len() * KEY_LEN
            + 4
            + removed.len() * KEY_LEN
            + 1
            + key_id.len()
            + 1
            + 72;
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&FEED_MAGIC);
        out.push(self.kind.code());
        // A Region is 1..=16 ASCII bytes by construction.
        out.push(region.len() as u8);
        out.extend_from_slice(region);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.start.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        out.extend_from_slice(&count_u32("groups", group_count)?.to_le_bytes());
        for chunk in entries.chunk_by(|a, b| a.0 == b.0) {
            let group = chunk[0].0;
            out.extend_from_slice(&((group >> 24) as u32).to_le_bytes());
            out.extend_from_slice(&[(group >> 16) as u8, (group >> 8) as u8, group as u8]);
            out.extend_from_slice(&count_u32("keys in a group", chunk.len())?.to_le_bytes());
            for &(_, key) in chunk {
                out.extend_from_slice(&key.to_be_bytes());
            }
        }
        out.extend_from_slice(&count_u32("removals", removed.len())?.to_le_bytes());
        for key in &removed {
            out.extend_from_slice(&key.to_be_bytes());
        }
        out.push(key_id.len() as u8);
        out.extend_from_slice(key_id.as_bytes());
        let signature = signer.sign(&out);
        out.push(u8::try_from(signature.len()).expect("a DER P-256 signature is at most 72 bytes"));
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, needed: usize, part: FeedPart) -> Result<&'a [u8], FeedError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < needed {
            return Err(FeedError::Truncated {
                part,
                start: self.pos,
                needed,
                len: self.bytes.len(),
            });
        }
        self.pos += needed;
        Ok(&rest[..needed])
    }

    fn array<const N: usize>(&mut self, part: FeedPart) -> Result<[u8; N], FeedError> {
        let bytes = self.take(N, part)?;
        Ok(bytes.try_into().expect("take returns exactly N bytes"))
    }

    fn u8(&mut self, part: FeedPart) -> Result<u8, FeedError> {
        Ok(self.array::<1>(part)?[0])
    }

    fn u32(&mut self, part: FeedPart) -> Result<u32, FeedError> {
        Ok(u32::from_le_bytes(self.array(part)?))
    }

    fn u64(&mut self, part: FeedPart) -> Result<u64, FeedError> {
        Ok(u64::from_le_bytes(self.array(part)?))
    }
}

/// A structurally valid file, with its signature not yet checked.
struct Parsed<'a> {
    file: FeedFile,
    key_id: &'a str,
    /// Every byte before the signature length: what the signature covers.
    signed: &'a [u8],
    signature: &'a [u8],
}

fn bad(part: FeedPart, at: usize, value: impl Into<u64>, expected: &'static str) -> FeedError {
    FeedError::BadValue {
        part,
        at,
        value: value.into(),
        expected,
    }
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, FeedError> {
    let head = &bytes[..bytes.len().min(FEED_MAGIC.len())];
    if head != &FEED_MAGIC[..head.len()] {
        let other_version = head.len() >= 6 && head[..5] == FEED_MAGIC[..5] && head[5] != 1;
        return Err(if other_version {
            FeedError::UnsupportedVersion(head[5])
        } else {
            FeedError::BadMagic
        });
    }
    let mut r = Reader { bytes, pos: 0 };
    r.take(FEED_MAGIC.len(), FeedPart::Magic)?;

    let at = r.pos;
    let kind_code = r.u8(FeedPart::Kind)?;
    let kind = FeedKind::from_code(kind_code)
        .ok_or_else(|| bad(FeedPart::Kind, at, kind_code, "1 (snapshot) or 2 (delta)"))?;

    let at = r.pos;
    let region_len = r.u8(FeedPart::RegionLength)?;
    if !(1..=16).contains(&region_len) {
        return Err(bad(FeedPart::RegionLength, at, region_len, "1..=16"));
    }
    let at = r.pos;
    let region_bytes = r.take(usize::from(region_len), FeedPart::Region)?;
    let region = std::str::from_utf8(region_bytes)
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|text| Region::try_from(text.to_owned()))
        .map_err(|reason| FeedError::BadRegion { at, reason })?;

    let at = r.pos;
    let seq = r.u64(FeedPart::Seq)?;
    let prev: [u8; 32] = r.array(FeedPart::Prev)?;
    let start = r.u64(FeedPart::Start)?;
    let end = r.u64(FeedPart::End)?;
    check_header(kind, seq, &prev, start, end).map_err(|error| match error {
        FeedError::DeltaSeqZero => bad(FeedPart::Seq, at, seq, "at least 1 for a delta"),
        other => other,
    })?;

    let group_count = r.u32(FeedPart::GroupCount)?;
    let mut added: Vec<StoredKey> = Vec::new();
    // Every key_data in the file (added and removed), to refuse duplicates across groups.
    let mut all: Vec<u128> = Vec::new();
    let mut last_group: Option<u64> = None;
    for index in 0..group_count {
        let header_at = r.pos;
        let h: [u8; GROUP_HEADER_LEN] = r.array(FeedPart::GroupHeader(index))?;
        let part = FeedPart::GroupHeader(index);
        let rolling_start = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let (period, risk, report_type) = (h[4], h[5], h[6]);
        let key_count = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        if !(1..=144).contains(&period) {
            return Err(bad(
                part,
                header_at + 4,
                period,
                "a rolling period in 1..=144",
            ));
        }
        if risk > 8 {
            return Err(bad(
                part,
                header_at + 5,
                risk,
                "a transmission risk in 0..=8",
            ));
        }
        if report_type > MAX_REPORT_TYPE {
            return Err(bad(
                part,
                header_at + 6,
                report_type,
                "a report type in 0..=5",
            ));
        }
        if key_count == 0 {
            return Err(bad(
                part,
                header_at + 7,
                key_count,
                "at least 1 key per group",
            ));
        }
        let group = group_key(rolling_start, period, risk, report_type);
        if last_group.is_some_and(|last| last >= group) {
            return Err(FeedError::NotAscending {
                part,
                at: header_at,
            });
        }
        last_group = Some(group);

        let keys_part = FeedPart::GroupKeys(index);
        let keys_at = r.pos;
        // Checked against the bytes left before anything is reserved.
        let keys = r.take((key_count as usize).saturating_mul(KEY_LEN), keys_part)?;
        added.reserve(key_count as usize);
        all.reserve(key_count as usize);
        let mut last_key: Option<u128> = None;
        for (i, chunk) in keys.chunks_exact(KEY_LEN).enumerate() {
            let key_data = KeyData(chunk.try_into().expect("chunks of 16"));
            let number = key_number(&key_data);
            if last_key.is_some_and(|last| last >= number) {
                return Err(FeedError::NotAscending {
                    part: keys_part,
                    at: keys_at + i * KEY_LEN,
                });
            }
            last_key = Some(number);
            all.push(number);
            added.push(StoredKey {
                key_data,
                rolling_start,
                rolling_period: u32::from(period),
                transmission_risk: risk,
            });
        }
    }

    let at = r.pos;
    let removed_count = r.u32(FeedPart::RemovedCount)?;
    if kind == FeedKind::Snapshot && removed_count != 0 {
        return Err(bad(
            FeedPart::RemovedCount,
            at,
            removed_count,
            "0 in a snapshot",
        ));
    }
    let removed_at = r.pos;
    let removed_bytes = r.take(
        (removed_count as usize).saturating_mul(KEY_LEN),
        FeedPart::Removed,
    )?;
    let mut removed = Vec::with_capacity(removed_count as usize);
    all.reserve(removed_count as usize);
    for (i, chunk) in removed_bytes.chunks_exact(KEY_LEN).enumerate() {
        let key_data = KeyData(chunk.try_into().expect("chunks of 16"));
        let number = key_number(&key_data);
        if removed
            .last()
            .is_some_and(|last| key_number(last) >= number)
        {
            return Err(FeedError::NotAscending {
                part: FeedPart::Removed,
                at: removed_at + i * KEY_LEN,
            });
        }
        all.push(number);
        removed.push(key_data);
    }

    all.sort_unstable();
    if let Some(pair) = all.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(FeedError::DuplicateKey(KeyData(pair[0].to_be_bytes())));
    }
    drop(all);

    let at = r.pos;
    let key_id_len = r.u8(FeedPart::KeyIdLength)?;
    if key_id_len == 0 || usize::from(key_id_len) > MAX_KEY_ID_LEN {
        return Err(bad(FeedPart::KeyIdLength, at, key_id_len, "1..=64"));
    }
    let key_id_bytes = r.take(usize::from(key_id_len), FeedPart::KeyId)?;
    let key_id =
        std::str::from_utf8(key_id_bytes).map_err(|_| FeedError::BadKeyId("not ASCII".into()))?;
    check_key_id(key_id)?;
    let signed = &bytes[..r.pos];

    let at = r.pos;
    let sig_len = r.u8(FeedPart::SignatureLength)?;
    if sig_len == 0 {
        return Err(bad(FeedPart::SignatureLength, at, sig_len, "at least 1"));
    }
    let signature = r.take(usize::from(sig_len), FeedPart::Signature)?;
    if r.pos != bytes.len() {
        return Err(FeedError::TrailingBytes {
            at: r.pos,
            count: bytes.len() - r.pos,
        });
    }

    Ok(Parsed {
        file: FeedFile {
            kind,
            region,
            seq,
            prev,
            start,
            end,
            added,
            removed,
        },
        key_id,
        signed,
        signature,
    })
}

/// Checks the structure of a file and returns its content, without checking the signature.
/// Never panics, and reserves memory only for data the file actually holds.
pub fn decode(bytes: &[u8]) -> Result<FeedFile, FeedError> {
    parse(bytes).map(|parsed| parsed.file)
}

/// The key id a file names for its signature. Parses the whole file; to pick a public key
/// and verify in one pass, use [`verify_with`].
pub fn key_id_of(bytes: &[u8]) -> Result<String, FeedError> {
    parse(bytes).map(|parsed| parsed.key_id.to_owned())
}

/// Checks structure and signature with one public key.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<FeedFile, FeedError> {
    verify_with(bytes, |_| Some(key))
}

/// Checks structure and signature with the public key that `key_for` returns for the file's
/// key id ([`FeedError::UnknownKeyId`] when it returns `None`): for clients that know
/// several keys across a rotation.
pub fn verify_with<'k>(
    bytes: &[u8],
    key_for: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<FeedFile, FeedError> {
    let parsed = parse(bytes)?;
    let key =
        key_for(parsed.key_id).ok_or_else(|| FeedError::UnknownKeyId(parsed.key_id.to_owned()))?;
    if !key.verify(parsed.signed, parsed.signature) {
        return Err(FeedError::SignatureMismatch {
            key_id: parsed.key_id.to_owned(),
        });
    }
    Ok(parsed.file)
}

/// Follows one region's chain: the live set, the last delta applied and its hash.
///
/// Clients start it from a verified snapshot or from nothing and apply verified deltas in
/// order. The publisher uses the same type to compute the next live set, and
/// [`FeedFollower::snapshot`] / [`FeedFollower::next_delta`] to describe the files it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedFollower {
    region: Region,
    seq: u64,
    last_hash: [u8; 32],
    live: BTreeMap<KeyData, StoredKey>,
}

impl FeedFollower {
    /// Before delta 1: no keys, seq 0, an all-zero hash.
    pub fn new(region: Region) -> Self {
        Self {
            region,
            seq: 0,
            last_hash: [0; 32],
            live: BTreeMap::new(),
        }
    }

    /// Continues from a (verified) snapshot: its keys, its seq, and its `prev` as the hash of
    /// delta `seq`, so delta `seq + 1` applies next.
    pub fn from_snapshot(snapshot: &FeedFile) -> Result<Self, FeedError> {
        if snapshot.kind != FeedKind::Snapshot {
            return Err(FeedError::WrongKind {
                expected: FeedKind::Snapshot,
                found: snapshot.kind,
                seq: snapshot.seq,
            });
        }
        Ok(Self {
            region: snapshot.region.clone(),
            seq: snapshot.seq,
            last_hash: snapshot.prev,
            live: snapshot.added.iter().map(|k| (k.key_data, *k)).collect(),
        })
    }

    /// Applies delta `bytes`, already decoded (and, on a client, verified) as `delta`.
    pub fn apply(&mut self, bytes: &[u8], delta: &FeedFile) -> Result<(), FeedError> {
        self.apply_with_hash(file_hash(bytes), delta)
    }

    /// Applies a delta whose file hash is `hash` (see [`file_hash`]). Checks, before changing
    /// anything: a delta, the same region, `seq == self.seq() + 1` ([`FeedError::Gap`]) and
    /// `prev == self.last_hash()` ([`FeedError::BrokenChain`]). Then removes `removed` (absent
    /// keys are fine: a client may have started from a later snapshot) and inserts `added`
    /// (replacing a key with the same key_data).
    pub fn apply_with_hash(&mut self, hash: [u8; 32], delta: &FeedFile) -> Result<(), FeedError> {
        if delta.kind != FeedKind::Delta {
            return Err(FeedError::WrongKind {
                expected: FeedKind::Delta,
                found: delta.kind,
                seq: delta.seq,
            });
        }
        if delta.region != self.region {
            return Err(FeedError::RegionMismatch {
                expected: self.region.clone(),
                found: delta.region.clone(),
            });
        }
        let expected = self.seq.saturating_add(1);
        if delta.seq != expected {
            return Err(FeedError::Gap {
                expected,
                found: delta.seq,
            });
        }
        if delta.prev != self.last_hash {
            return Err(FeedError::BrokenChain { seq: delta.seq });
        }
        for key in &delta.removed {
            self.live.remove(key);
        }
        for key in &delta.added {
            self.live.insert(key.key_data, *key);
        }
        self.seq = delta.seq;
        self.last_hash = hash;
        Ok(())
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The last delta applied (or the snapshot's seq; 0 before delta 1).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// SHA-256 of delta `seq()`: the `prev` the next delta must carry.
    pub fn last_hash(&self) -> [u8; 32] {
        self.last_hash
    }

    /// The live set, by key_data.
    pub fn live(&self) -> &BTreeMap<KeyData, StoredKey> {
        &self.live
    }

    pub fn into_live(self) -> BTreeMap<KeyData, StoredKey> {
        self.live
    }

    /// The snapshot of the live set at `at` (unix seconds): seq and prev continue this chain.
    pub fn snapshot(&self, at: u64) -> FeedFile {
        FeedFile {
            kind: FeedKind::Snapshot,
            region: self.region.clone(),
            seq: self.seq,
            prev: self.last_hash,
            start: at,
            end: at,
            added: self.live.values().copied().collect(),
            removed: Vec::new(),
        }
    }

    /// The delta that follows this chain: seq `seq() + 1`, prev `last_hash()`.
    pub fn next_delta(
        &self,
        start: u64,
        end: u64,
        added: Vec<StoredKey>,
        removed: Vec<KeyData>,
    ) -> FeedFile {
        FeedFile {
            kind: FeedKind::Delta,
            region: self.region.clone(),
            seq: self.seq.saturating_add(1),
            prev: self.last_hash,
            start,
            end,
            added,
            removed,
        }
    }
}

/// `index.json`, one per region: the current snapshot and the deltas after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedIndex {
    /// [`FEED_INDEX_FORMAT`].
    pub format: u32,
    pub region: Region,
    /// The newest delta's seq (0 before delta 1).
    pub latest_seq: u64,
    pub snapshot: Option<IndexEntry>,
    /// Deltas after the snapshot (or from delta 1 without one), ascending by seq.
    pub deltas: Vec<IndexEntry>,
}

impl FeedIndex {
    /// `latest_seq` is the last delta's seq, else the snapshot's, else 0.
    pub fn new(region: Region, snapshot: Option<IndexEntry>, deltas: Vec<IndexEntry>) -> Self {
        let latest_seq = deltas
            .last()
            .or(snapshot.as_ref())
            .map_or(0, |entry| entry.seq);
        Self {
            format: FEED_INDEX_FORMAT,
            region,
            latest_seq,
            snapshot,
            deltas,
        }
    }
}

/// One file in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub seq: u64,
    /// File name, relative to the index: [`delta_name`] or [`snapshot_name`].
    pub file: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    pub start: u64,
    pub end: u64,
    /// File size.
    pub bytes: u64,
}

impl IndexEntry {
    /// The entry for the encoded file `bytes` whose content is `file`.
    pub fn describe(bytes: &[u8], file: &FeedFile) -> Self {
        Self {
            seq: file.seq,
            file: file_name(file.kind, file.seq),
            sha256: hex::encode(file_hash(bytes)),
            start: file.start,
            end: file.end,
            bytes: bytes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use rand_core::OsRng;

    static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate(&mut OsRng));
    static OTHER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate(&mut OsRng));
    const KEY_ID: &str = "feed-2025-01";
    /// An ENIN at midnight (a multiple of 144), early 2025.
    const DAY0: u32 = 2_898_720;

    fn region() -> Region {
        Region::try_from("DE".to_owned()).expect("valid")
    }

    fn key(n: u32, day: u32, period: u32, risk: u8) -> StoredKey {
        let mut data = [0u8; 16];
        data[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        data[4..8].copy_from_slice(&n.to_le_bytes());
        data[15] = 0x5a;
        StoredKey {
            key_data: KeyData(data),
            rolling_start: DAY0 + day * 144,
            rolling_period: period,
            transmission_risk: risk,
        }
    }

    /// `n` keys spread over 14 days × 3 risk levels, full-day periods.
    fn spread(range: std::ops::Range<u32>) -> Vec<StoredKey> {
        range
            .map(|n| key(n, n % 14, 144, [2, 5, 8][(n / 14 % 3) as usize]))
            .collect()
    }

    fn delta(seq: u64, prev: [u8; 32], added: Vec<StoredKey>, removed: Vec<KeyData>) -> FeedFile {
        let end = 1_735_689_600 + seq * 900;
        FeedFile {
            kind: FeedKind::Delta,
            region: region(),
            seq,
            prev,
            start: end - 900,
            end,
            added,
            removed,
        }
    }

    fn by_key(keys: &[StoredKey]) -> Vec<StoredKey> {
        let mut keys = keys.to_vec();
        keys.sort_by_key(|k| k.key_data);
        keys
    }

    fn sorted(keys: &[KeyData]) -> Vec<KeyData> {
        let mut keys = keys.to_vec();
        keys.sort();
        keys
    }

    /// A small delta: three keys in two groups and one removal.
    fn small_delta() -> FeedFile {
        delta(
            7,
            [0x42; 32],
            vec![key(1, 0, 144, 5), key(2, 0, 144, 5), key(3, 1, 72, 0)],
            vec![key(4, 0, 144, 5).key_data],
        )
    }

    fn encode(file: &FeedFile) -> Vec<u8> {
        file.encode(&SIGNER, KEY_ID).expect("encodes")
    }

    #[test]
    fn golden_header_and_group_layout() {
        let file = FeedFile {
            kind: FeedKind::Delta,
            region: region(),
            seq: 2,
            prev: [0xab; 32],
            start: 1_600_000_000,
            end: 1_600_000_600,
            added: vec![StoredKey {
                key_data: KeyData([0x11; 16]),
                rolling_start: 2_666_666,
                rolling_period: 144,
                transmission_risk: 3,
            }],
            removed: vec![KeyData([0x22; 16])],
        };
        let bytes = file.encode(&SIGNER, "k1").expect("encodes");
        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(b"CFEED\x01\r\n");
        expected.extend_from_slice(&[0x02, 0x02, b'D', b'E']);
        expected.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0x00, 0x10, 0x5e, 0x5f, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x58, 0x12, 0x5e, 0x5f, 0, 0, 0, 0]);
        expected.extend_from_slice(&[1, 0, 0, 0]); // group_count
        expected.extend_from_slice(&[0xaa, 0xb0, 0x28, 0x00, 144, 3, 1, 1, 0, 0, 0]);
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(&[1, 0, 0, 0]); // removed_count
        expected.extend_from_slice(&[0x22; 16]);
        expected.extend_from_slice(&[2, b'k', b'1']);
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        let sig_len = usize::from(bytes[expected.len()]);
        assert_eq!(bytes.len(), expected.len() + 1 + sig_len);
        let signature = &bytes[expected.len() + 1..];
        assert!(SIGNER.verifying_key().verify(&expected, signature));
        assert_eq!(key_id_of(&bytes).expect("parses"), "k1");
    }

    fn arb_file() -> impl Strategy<Value = FeedFile> {
        let meta = (
            0u32..14,
            prop::sample::select(vec![1u32, 72, 143, 144]),
            0u8..=8,
        );
        (
            prop::collection::btree_map(any::<[u8; 16]>(), meta, 0..80),
            0usize..80,
            any::<bool>(),
            1u64..1_000,
            any::<[u8; 32]>(),
            0u64..1 << 40,
            0u64..100_000,
            "[A-Za-z0-9-]{1,16}",
        )
            .prop_map(|(keys, split, snapshot, seq, prev, start, len, region)| {
                let mut added = Vec::new();
                let mut removed = Vec::new();
                for (i, (data, (day, period, risk))) in keys.into_iter().enumerate() {
                    if snapshot || i < split {
                        added.push(StoredKey {
                            key_data: KeyData(data),
                            rolling_start: DAY0 + day * 144,
                            rolling_period: period,
                            transmission_risk: risk,
                        });
                    } else {
                        removed.push(KeyData(data));
                    }
                }
                FeedFile {
                    kind: if snapshot {
                        FeedKind::Snapshot
                    } else {
                        FeedKind::Delta
                    },
                    region: Region::try_from(region).expect("valid"),
                    seq,
                    // Delta 1 has no predecessor.
                    prev: if !snapshot && seq == 1 { [0; 32] } else { prev },
                    start,
                    end: if snapshot { start } else { start + len },
                    added,
                    removed,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn encode_then_verify_round_trips(file in arb_file()) {
            let bytes = encode(&file);
            let back = verify(&bytes, &SIGNER.verifying_key()).expect("verifies");
            prop_assert_eq!(by_key(&back.added), by_key(&file.added));
            prop_assert_eq!(&back.removed, &sorted(&file.removed));
            prop_assert_eq!(
                (back.kind, &back.region, back.seq, back.prev, back.start, back.end),
                (file.kind, &file.region, file.seq, file.prev, file.start, file.end)
            );
            // The decoded file is canonical: encoding it again gives the same bytes.
            prop_assert_eq!(encode(&back), bytes);
        }

        #[test]
        fn input_order_does_not_change_the_bytes(
            (file, added, removed) in arb_file().prop_flat_map(|file| {
                let added = Just(file.added.clone()).prop_shuffle();
                let removed = Just(file.removed.clone()).prop_shuffle();
                (Just(file), added, removed)
            })
        ) {
            let shuffled = FeedFile { added, removed, ..file.clone() };
            prop_assert_eq!(encode(&shuffled), encode(&file));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let mut framed = FEED_MAGIC.to_vec();
            framed.extend_from_slice(&bytes);
            let _ = verify(&framed, &SIGNER.verifying_key());
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = encode(&small_delta());
        let public = SIGNER.verifying_key();
        verify(&bytes, &public).expect("the original verifies");
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    verify(&flipped, &public).is_err(),
                    "flipping bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&small_delta());
        let public = SIGNER.verifying_key();
        for len in 0..bytes.len() {
            let error = decode(&bytes[..len]).expect_err("a truncated file is refused");
            assert!(
                matches!(error, FeedError::Truncated { len: l, .. } if l == len),
                "length {len}: {error}"
            );
            assert!(verify(&bytes[..len], &public).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(&longer),
            Err(FeedError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn truncation_errors_name_the_part() {
        let bytes = encode(&small_delta());
        // magic 8, kind 1, region 1 + 2, seq 8, prev 32, start 8, end 8, group count 4.
        let first_group = 8 + 1 + 3 + 8 + 32 + 8 + 8 + 4;
        let error = decode(&bytes[..first_group + 5]).expect_err("truncated");
        assert_eq!(
            error.to_string(),
            format!(
                "truncated: the file ends inside the header of group 0 at byte {} (the header \
                 of group 0 starts at byte {first_group} and needs 11 bytes)",
                first_group + 5
            )
        );
    }

    #[test]
    fn snapshot_plus_three_deltas_reproduce_the_live_set() {
        let public = SIGNER.verifying_key();
        // (added, removed) per delta; removals include one key that was never published.
        let steps: Vec<(Vec<StoredKey>, Vec<KeyData>)> = vec![
            (spread(0..60), vec![]),
            (
                spread(60..100),
                spread(0..20).iter().map(|k| k.key_data).collect(),
            ),
            (
                spread(100..130),
                spread(55..70).iter().map(|k| k.key_data).collect(),
            ),
            (
                spread(130..131).into_iter().chain(spread(5..10)).collect(),
                vec![KeyData([0xee; 16])],
            ),
            (
                vec![key(20, 3, 144, 1)],
                spread(100..105).iter().map(|k| k.key_data).collect(),
            ),
        ];

        // The live set computed directly, without the follower.
        let mut expected: BTreeMap<KeyData, StoredKey> = BTreeMap::new();
        let mut files: Vec<Vec<u8>> = Vec::new();
        let mut snapshot_bytes = Vec::new();
        let mut prev = [0u8; 32];
        for (i, (added, removed)) in steps.iter().enumerate() {
            let seq = i as u64 + 1;
            for k in removed {
                expected.remove(k);
            }
            for k in added {
                expected.insert(k.key_data, *k);
            }
            let bytes = encode(&delta(seq, prev, added.clone(), removed.clone()));
            prev = file_hash(&bytes);
            files.push(bytes);
            if seq == 2 {
                let snapshot = FeedFile {
                    kind: FeedKind::Snapshot,
                    region: region(),
                    seq: 2,
                    prev,
                    start: 1_735_700_000,
                    end: 1_735_700_000,
                    added: expected.values().copied().collect(),
                    removed: vec![],
                };
                snapshot_bytes = encode(&snapshot);
            }
        }

        let snapshot = verify(&snapshot_bytes, &public).expect("snapshot verifies");
        let mut client = FeedFollower::from_snapshot(&snapshot).expect("a snapshot");
        assert_eq!(client.seq(), 2);
        for bytes in &files[2..] {
            let file = verify(bytes, &public).expect("delta verifies");
            client.apply(bytes, &file).expect("applies");
        }
        assert_eq!(client.seq(), 5);
        assert_eq!(client.last_hash(), prev);
        assert_eq!(client.live(), &expected);

        // From nothing, all five deltas give the same set; and the publisher's own follower
        // describes the same snapshot.
        let mut from_start = FeedFollower::new(region());
        for (i, bytes) in files.iter().enumerate() {
            let file = decode(bytes).expect("decodes");
            from_start.apply(bytes, &file).expect("applies");
            if i == 1 {
                let again = from_start.snapshot(1_735_700_000);
                assert_eq!(encode(&again), snapshot_bytes);
            }
        }
        assert_eq!(from_start.into_live(), expected);
    }

    /// Three chained deltas (seq 1, 2, 3), encoded.
    fn chain() -> Vec<Vec<u8>> {
        let mut prev = [0; 32];
        (1..=3u32)
            .map(|seq| {
                let bytes = encode(&delta(
                    u64::from(seq),
                    prev,
                    spread(seq * 10..seq * 10 + 5),
                    vec![],
                ));
                prev = file_hash(&bytes);
                bytes
            })
            .collect()
    }

    fn apply(follower: &mut FeedFollower, bytes: &[u8]) -> Result<(), FeedError> {
        let file = verify(bytes, &SIGNER.verifying_key())?;
        follower.apply(bytes, &file)
    }

    #[test]
    fn a_missing_delta_is_a_gap() {
        let files = chain();
        let mut follower = FeedFollower::new(region());
        apply(&mut follower, &files[0]).expect("delta 1");
        let before = follower.clone();
        let error = apply(&mut follower, &files[2]).expect_err("delta 2 is missing");
        assert!(
            matches!(
                error,
                FeedError::Gap {
                    expected: 2,
                    found: 3
                }
            ),
            "{error}"
        );
        assert_eq!(error.to_string(), "gap: expected delta 2, found delta 3");
        assert_eq!(follower, before, "a refused delta changes nothing");
    }

    #[test]
    fn a_swapped_or_repeated_delta_is_a_gap() {
        let files = chain();
        let mut follower = FeedFollower::new(region());
        let error = apply(&mut follower, &files[1]).expect_err("delta 2 before delta 1");
        assert!(
            matches!(
                error,
                FeedError::Gap {
                    expected: 1,
                    found: 2
                }
            ),
            "{error}"
        );
        apply(&mut follower, &files[0]).expect("delta 1");
        apply(&mut follower, &files[1]).expect("delta 2");
        let error = apply(&mut follower, &files[0]).expect_err("delta 1 again");
        assert!(
            matches!(
                error,
                FeedError::Gap {
                    expected: 3,
                    found: 1
                }
            ),
            "{error}"
        );
        apply(&mut follower, &files[2]).expect("delta 3");
    }

    #[test]
    fn a_delta_signed_by_another_key_fails_verification() {
        let file = small_delta();
        let forged = file.encode(&OTHER, KEY_ID).expect("encodes");
        let error = verify(&forged, &SIGNER.verifying_key()).expect_err("wrong key");
        assert!(matches!(&error, FeedError::SignatureMismatch { key_id } if key_id == KEY_ID));
        assert_eq!(
            error.to_string(),
            format!("signature does not verify with key id \"{KEY_ID}\"")
        );
        verify(&forged, &OTHER.verifying_key()).expect("verifies with its own key");
    }

    #[test]
    fn verify_with_picks_the_key_named_by_the_key_id() {
        let (old, new) = (SIGNER.verifying_key(), OTHER.verifying_key());
        let keys = [("feed-old", &old), ("feed-new", &new)];
        let pick = |id: &str| keys.iter().find(|(k, _)| *k == id).map(|(_, key)| *key);
        let file = small_delta();
        let by_new = file.encode(&OTHER, "feed-new").expect("encodes");
        let by_old = file.encode(&SIGNER, "feed-old").expect("encodes");
        assert_eq!(
            verify_with(&by_new, pick).expect("new"),
            decode(&by_new).expect("d")
        );
        verify_with(&by_old, pick).expect("old");
        let mislabelled = file.encode(&SIGNER, "feed-new").expect("encodes");
        assert!(matches!(
            verify_with(&mislabelled, pick),
            Err(FeedError::SignatureMismatch { .. })
        ));
        let unknown = file.encode(&SIGNER, "feed-2099").expect("encodes");
        assert!(matches!(
            verify_with(&unknown, pick),
            Err(FeedError::UnknownKeyId(id)) if id == "feed-2099"
        ));
    }

    #[test]
    fn an_altered_predecessor_hash_breaks_the_chain() {
        let files = chain();
        let mut follower = FeedFollower::new(region());
        apply(&mut follower, &files[0]).expect("delta 1");
        let mut file = decode(&files[1]).expect("decodes");
        file.prev[0] ^= 1;
        let resigned = encode(&file);
        let error = apply(&mut follower, &resigned).expect_err("wrong predecessor");
        assert!(
            matches!(error, FeedError::BrokenChain { seq: 2 }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "broken chain at delta 2: its predecessor hash does not match delta 1"
        );
        apply(&mut follower, &files[1]).expect("the real delta 2 still applies");
    }

    #[test]
    fn follower_refuses_snapshots_and_other_regions() {
        let files = chain();
        let mut follower = FeedFollower::new(Region::try_from("AT".to_owned()).expect("ok"));
        assert!(matches!(
            apply(&mut follower, &files[0]),
            Err(FeedError::RegionMismatch { .. })
        ));
        let mut follower = FeedFollower::new(region());
        let snapshot = follower.snapshot(5);
        let bytes = encode(&snapshot);
        assert!(matches!(
            follower.apply(&bytes, &snapshot),
            Err(FeedError::WrongKind {
                expected: FeedKind::Delta,
                ..
            })
        ));
        let delta = decode(&files[0]).expect("decodes");
        assert!(matches!(
            FeedFollower::from_snapshot(&delta),
            Err(FeedError::WrongKind {
                expected: FeedKind::Snapshot,
                ..
            })
        ));
    }

    #[test]
    fn bytes_per_key_stay_within_the_format_bound() {
        let n = 10_000usize;
        let keys = spread(0..n as u32);
        let groups: std::collections::BTreeSet<_> = keys
            .iter()
            .map(|k| (k.rolling_start, k.transmission_risk))
            .collect();
        assert_eq!(groups.len(), 42, "14 days × 3 risk levels");

        let snapshot = FeedFile {
            kind: FeedKind::Snapshot,
            region: region(),
            seq: 100,
            prev: [1; 32],
            start: 1_735_689_600,
            end: 1_735_689_600,
            added: keys.clone(),
            removed: vec![],
        };
        let bytes = encode(&snapshot);
        assert!(
            bytes.len() as f64 <= 16.5 * n as f64 + 200.0,
            "snapshot: {} bytes for {n} keys",
            bytes.len()
        );

        let removed = spread(n as u32..n as u32 + 5_000)
            .iter()
            .map(|k| k.key_data)
            .collect();
        let delta = delta(101, [1; 32], keys[..5_000].to_vec(), removed);
        let bytes = encode(&delta);
        assert!(
            bytes.len() <= 17 * 10_000 + 200,
            "delta: {} bytes for 5,000 added and 5,000 removed",
            bytes.len()
        );
    }

    #[test]
    fn encode_refuses_invalid_input() {
        let base = small_delta();
        let with = |f: &dyn Fn(&mut FeedFile)| {
            let mut file = base.clone();
            f(&mut file);
            file.encode(&SIGNER, KEY_ID)
        };
        let duplicate = with(&|f| f.added.push(key(2, 5, 10, 1)));
        assert!(
            matches!(duplicate, Err(FeedError::DuplicateKey(k)) if k == key(2, 0, 144, 5).key_data)
        );
        let both = with(&|f| f.removed.push(f.added[0].key_data));
        assert!(matches!(both, Err(FeedError::DuplicateKey(_))));
        for period in [0, 145, 256 + 144] {
            let bad = with(&|f| f.added[1].rolling_period = period);
            assert!(
                matches!(
                    bad,
                    Err(FeedError::InvalidKey {
                        field: "rolling_period",
                        ..
                    })
                ),
                "period {period}"
            );
        }
        let risk = with(&|f| f.added[0].transmission_risk = 9);
        assert!(matches!(
            risk,
            Err(FeedError::InvalidKey {
                field: "transmission_risk",
                ..
            })
        ));
        let snapshot = with(&|f| {
            f.kind = FeedKind::Snapshot;
            f.start = f.end;
        });
        assert!(matches!(
            snapshot,
            Err(FeedError::SnapshotWithRemovals { count: 1 })
        ));
        let window = with(&|f| f.start = f.end + 1);
        assert!(matches!(window, Err(FeedError::BadWindow { .. })));
        let zero = with(&|f| f.seq = 0);
        assert!(matches!(zero, Err(FeedError::DeltaSeqZero)));
        let first = with(&|f| f.seq = 1);
        assert!(matches!(
            first,
            Err(FeedError::NonZeroChainStart { seq: 1, .. })
        ));
        for key_id in ["", "has space", "ключ", &"k".repeat(65)] {
            assert!(
                matches!(base.encode(&SIGNER, key_id), Err(FeedError::BadKeyId(_))),
                "{key_id:?}"
            );
        }
        base.encode(&SIGNER, &"k".repeat(64))
            .expect("64 bytes is fine");
    }

    /// Writes a file field by field with no checks, to build what the encoder refuses.
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(kind: u8, seq: u64, groups: u32) -> Self {
            let mut raw = Raw(FEED_MAGIC.to_vec());
            raw.0.extend_from_slice(&[kind, 2, b'D', b'E']);
            raw.0.extend_from_slice(&seq.to_le_bytes());
            raw.0.extend_from_slice(&[9; 32]);
            raw.0.extend_from_slice(&100u64.to_le_bytes());
            raw.0.extend_from_slice(&100u64.to_le_bytes());
            raw.0.extend_from_slice(&groups.to_le_bytes());
            raw
        }

        fn group(mut self, start: u32, period: u8, report: u8, keys: &[u8]) -> Self {
            self.0.extend_from_slice(&start.to_le_bytes());
            self.0.extend_from_slice(&[period, 2, report]);
            self.0.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for &k in keys {
                self.0.extend_from_slice(&[k; 16]);
            }
            self
        }

        fn finish(mut self, removed: &[u8]) -> Vec<u8> {
            self.0
                .extend_from_slice(&(removed.len() as u32).to_le_bytes());
            for &k in removed {
                self.0.extend_from_slice(&[k; 16]);
            }
            self.0.extend_from_slice(&[2, b'k', b'1']);
            let signature = SIGNER.sign(&self.0);
            self.0.push(signature.len() as u8);
            self.0.extend_from_slice(&signature);
            self.0
        }
    }

    #[test]
    fn decode_refuses_what_the_encoder_never_writes() {
        let ok = Raw::header(2, 5, 2)
            .group(10, 144, 1, &[1, 2])
            .group(11, 144, 3, &[3])
            .finish(&[4]);
        let file = verify(&ok, &SIGNER.verifying_key()).expect("the raw writer is right");
        assert_eq!(file.added.len(), 3);

        type Expect = fn(&FeedError) -> bool;
        let with_byte = |mut bytes: Vec<u8>, at: usize, value: u8| {
            bytes[at] = value;
            bytes
        };
        let plain = || Raw::header(2, 5, 0).finish(&[]);
        // The header of "DE" files is 72 bytes: groups start at byte 72.
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            (
                "groups out of order",
                Raw::header(2, 5, 2)
                    .group(11, 144, 1, &[1])
                    .group(10, 144, 1, &[2])
                    .finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::NotAscending {
                            part: FeedPart::GroupHeader(1),
                            at: 99
                        }
                    )
                },
            ),
            (
                "equal groups",
                Raw::header(2, 5, 2)
                    .group(10, 144, 1, &[1])
                    .group(10, 144, 1, &[2])
                    .finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::NotAscending {
                            part: FeedPart::GroupHeader(1),
                            ..
                        }
                    )
                },
            ),
            (
                "keys out of order",
                Raw::header(2, 5, 1).group(10, 144, 1, &[2, 1]).finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::NotAscending {
                            part: FeedPart::GroupKeys(0),
                            at: 99
                        }
                    )
                },
            ),
            (
                "key twice across groups",
                Raw::header(2, 5, 2)
                    .group(10, 144, 1, &[1])
                    .group(11, 144, 1, &[1])
                    .finish(&[]),
                |e| matches!(e, FeedError::DuplicateKey(k) if *k == KeyData([1; 16])),
            ),
            (
                "key added and removed",
                Raw::header(2, 5, 1).group(10, 144, 1, &[1]).finish(&[1]),
                |e| matches!(e, FeedError::DuplicateKey(_)),
            ),
            (
                "removed out of order",
                Raw::header(2, 5, 0).finish(&[3, 2]),
                |e| {
                    matches!(
                        e,
                        FeedError::NotAscending {
                            part: FeedPart::Removed,
                            at: 92
                        }
                    )
                },
            ),
            (
                "removals in a snapshot",
                Raw::header(1, 5, 0).finish(&[3]),
                |e| {
                    matches!(
                        e,
                        FeedError::BadValue {
                            part: FeedPart::RemovedCount,
                            value: 1,
                            ..
                        }
                    )
                },
            ),
            (
                "empty group",
                Raw::header(2, 5, 1).group(10, 144, 1, &[]).finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::BadValue {
                            part: FeedPart::GroupHeader(0),
                            at: 79,
                            value: 0,
                            ..
                        }
                    )
                },
            ),
            (
                "period 0",
                Raw::header(2, 5, 1).group(10, 0, 1, &[1]).finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::BadValue {
                            part: FeedPart::GroupHeader(0),
                            at: 76,
                            value: 0,
                            ..
                        }
                    )
                },
            ),
            (
                "report type 6",
                Raw::header(2, 5, 1).group(10, 144, 6, &[1]).finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::BadValue {
                            part: FeedPart::GroupHeader(0),
                            at: 78,
                            value: 6,
                            ..
                        }
                    )
                },
            ),
            ("kind 3", Raw::header(3, 5, 0).finish(&[]), |e| {
                matches!(
                    e,
                    FeedError::BadValue {
                        part: FeedPart::Kind,
                        at: 8,
                        value: 3,
                        ..
                    }
                )
            }),
            ("delta seq 0", Raw::header(2, 0, 0).finish(&[]), |e| {
                matches!(
                    e,
                    FeedError::BadValue {
                        part: FeedPart::Seq,
                        at: 12,
                        value: 0,
                        ..
                    }
                )
            }),
            (
                "delta 1 with a predecessor",
                Raw::header(2, 1, 0).finish(&[]),
                |e| {
                    matches!(
                        e,
                        FeedError::NonZeroChainStart {
                            kind: FeedKind::Delta,
                            seq: 1
                        }
                    )
                },
            ),
            ("region with a space", with_byte(plain(), 11, b' '), |e| {
                matches!(e, FeedError::BadRegion { at: 10, .. })
            }),
            ("key id with a space", with_byte(plain(), 77, b' '), |e| {
                matches!(e, FeedError::BadKeyId(_))
            }),
            ("key id length 0", with_byte(plain(), 76, 0), |e| {
                matches!(
                    e,
                    FeedError::BadValue {
                        part: FeedPart::KeyIdLength,
                        at: 76,
                        ..
                    }
                )
            }),
        ];
        for (name, bytes, expect) in cases {
            let error = decode(&bytes).expect_err(name);
            assert!(expect(&error), "{name}: {error}");
        }
        let any_report_type = Raw::header(2, 5, 2)
            .group(10, 144, 0, &[1])
            .group(10, 144, 5, &[2]);
        decode(&any_report_type.finish(&[])).expect("report types 0..=5 decode");
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let mut bytes = Raw::header(2, 5, u32::MAX).0;
        bytes.extend_from_slice(&[10, 0, 0, 0, 144, 2, 1, 0xff, 0xff, 0xff, 0xff]);
        let error = decode(&bytes).expect_err("truncated");
        let FeedError::Truncated { part, needed, .. } = error else {
            panic!("expected truncation, got {error}");
        };
        assert_eq!(part, FeedPart::GroupKeys(0));
        assert_eq!(needed, u32::MAX as usize * 16);
        let mut bytes = Raw::header(2, 5, 0).0;
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(FeedError::Truncated {
                part: FeedPart::Removed,
                ..
            })
        ));
    }

    #[test]
    fn magic_and_version_errors() {
        let mut bytes = encode(&small_delta());
        bytes[5] = 2;
        assert!(matches!(
            decode(&bytes),
            Err(FeedError::UnsupportedVersion(2))
        ));
        assert_eq!(
            decode(b"PK\x03\x04 a zip").expect_err("bad").to_string(),
            "bad magic: not a Confidant feed file (version 1)"
        );
        assert!(matches!(decode(b"CFEED\x01\n"), Err(FeedError::BadMagic)));
        assert!(matches!(
            decode(b"CFEED"),
            Err(FeedError::Truncated {
                part: FeedPart::Magic,
                ..
            })
        ));
    }

    #[test]
    fn names_and_index_json() {
        assert_eq!(delta_name(42), "delta-0000000042.cfeed");
        assert_eq!(snapshot_name(7), "snapshot-0000000007.cfeed");
        let mut follower = FeedFollower::new(region());
        let first = follower.next_delta(0, 900, spread(0..3), vec![]);
        let first_bytes = encode(&first);
        follower.apply(&first_bytes, &first).expect("applies");
        let snapshot = follower.snapshot(900);
        let snapshot_bytes = encode(&snapshot);
        let second = follower.next_delta(900, 1800, vec![], vec![]);
        let second_bytes = encode(&second);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev, file_hash(&first_bytes));

        let index = FeedIndex::new(
            region(),
            Some(IndexEntry::describe(&snapshot_bytes, &snapshot)),
            vec![IndexEntry::describe(&second_bytes, &second)],
        );
        assert_eq!(index.latest_seq, 2);
        let json: serde_json::Value = serde_json::to_value(&index).expect("serialises");
        let expected = serde_json::json!({
            "format": 1,
            "region": "DE",
            "latestSeq": 2,
            "snapshot": {
                "seq": 1,
                "file": "snapshot-0000000001.cfeed",
                "sha256": hex::encode(file_hash(&snapshot_bytes)),
                "start": 900,
                "end": 900,
                "bytes": snapshot_bytes.len(),
            },
            "deltas": [{
                "seq": 2,
                "file": "delta-0000000002.cfeed",
                "sha256": hex::encode(file_hash(&second_bytes)),
                "start": 900,
                "end": 1800,
                "bytes": second_bytes.len(),
            }],
        });
        assert_eq!(json, expected);
        let back: FeedIndex = serde_json::from_value(json).expect("parses");
        assert_eq!(back, index);
        let empty = FeedIndex::new(region(), None, vec![]);
        assert_eq!(empty.latest_seq, 0);
    }
}
