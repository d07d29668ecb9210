//! Signed token files: how the server publishes uploaded encounter-token hashes, per area and
//! per batch (a publication window), version 1.
//!
//! Each batch is published three ways, all signed like the native feed (ECDSA P-256 over
//! every byte before the signature, named by a key id):
//! - a **list** file: every added token (hash, day, level) and every withdrawn hash, raw;
//! - a **filter** file: one Golomb-coded set per level, the withdrawn hashes raw, and how many
//!   hash bits pick a confirmation bucket (0 = no buckets);
//! - with buckets, **all** 2^bucket_bits **bucket** files, empty ones included, each holding
//!   the added tokens whose hash starts with its bits. A phone confirms a filter hit by
//!   fetching a fixed number of buckets per batch, its candidates' among them, so the CDN sees
//!   the same traffic whether or not it had a hit.
//!
//! `docs/token-files.md` is the specification; this module is its reference implementation,
//! with no I/O, no clock, and randomness (the filters' SipHash keys) only from the caller.

use std::collections::BTreeMap;
use std::fmt;

use gaen::{SigningKey, VerifyingKey};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::encounter::{Level, TokenHash};
use crate::feed::{self, MAX_KEY_ID_LEN};
use crate::gcs::{GcsError, GcsFilter, GcsParams};
use crate::ids::Region;

/// The first 8 bytes of every token file: `CTOKN`, the format version (1), CR LF (a file
/// mangled by a text-mode transfer fails at once).
pub const TOKEN_MAGIC: [u8; 8] = *b"CTOKN\x01\r\n";

/// The `format` field of `index.json`.
pub const TOKEN_INDEX_FORMAT: u32 = 1;

/// False-positive bits a filter may have: 2..=62 (the range of
/// [`GcsParams::for_false_positive_bits`]).
pub const MIN_FP_BITS: u8 = 2;
pub const MAX_FP_BITS: u8 = 62;

/// At most 2^12 = 4096 bucket files per batch.
pub const MAX_BUCKET_BITS: u8 = 12;

/// Bytes of one [`PublishedToken`]: hash 16, day u32, level u8.
pub const PUBLISHED_TOKEN_LEN: usize = 16 + 4 + 1;

const HASH_LEN: usize = 16;

/// One uploaded token as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishedToken {
    pub hash: TokenHash,
    /// UTC day number (unix seconds / 86400) of the encounter, as the uploader stated it.
    pub day: u32,
    pub level: Level,
}

/// Which of the three files of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    List,
    Filter,
    Bucket,
}

impl TokenKind {
    /// The `kind` byte: 1 = list, 2 = filter, 3 = bucket.
    pub fn code(self) -> u8 {
        match self {
            Self::List => 1,
            Self::Filter => 2,
            Self::Bucket => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::List),
            2 => Some(Self::Filter),
            3 => Some(Self::Bucket),
            _ => None,
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::List => "list",
            Self::Filter => "filter",
            Self::Bucket => "bucket",
        })
    }
}

/// One token file's content, without its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFile {
    pub area: Region,
    /// Batch number, from 1, consecutive per area.
    pub seq: u64,
    /// The batch's window, unix seconds, `start <= end`.
    pub start: u64,
    pub end: u64,
    pub body: TokenBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenBody {
    /// The raw list: every token the batch adds (strictly ascending by hash) and every
    /// earlier token it withdraws (strictly ascending, disjoint from added).
    List {
        added: Vec<PublishedToken>,
        removed: Vec<TokenHash>,
    },
    /// One GCS per level present among the batch's added tokens (levels strictly ascending,
    /// each with its own fresh random 16-byte SipHash key and the batch's fp bits), plus the
    /// removed hashes raw, plus bucket_bits: 0 = no confirmation files for this batch,
    /// 1..=12 = confirmation files exist, bucketed by the first bucket_bits bits of the hash.
    Filter {
        levels: Vec<LevelFilter>,
        removed: Vec<TokenHash>,
        bucket_bits: u8,
    },
    /// Confirmation bucket: the batch's added tokens whose hash's first `bucket_bits` bits
    /// (big-endian, from byte 0's MSB) equal `bucket` (< 2^bucket_bits), ascending by hash.
    Bucket {
        bucket_bits: u8,
        bucket: u32,
        tokens: Vec<PublishedToken>,
    },
}

/// The filter of one level's hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelFilter {
    pub level: Level,
    pub filter: GcsFilter,
}

/// A part of a token file, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPart {
    Magic,
    Kind,
    RegionLength,
    Region,
    Seq,
    Start,
    End,
    AddedCount,
    /// The added tokens of a list file.
    Added,
    RemovedCount,
    /// The removed hashes of a list or filter file.
    Removed,
    LevelCount,
    /// The filters of a filter file, as a list (for ordering errors).
    Levels,
    /// The level byte of filter `n` (counting from 0).
    FilterLevel(u8),
    /// The length of filter `n`.
    FilterLength(u8),
    /// The GCS bytes of filter `n`.
    Filter(u8),
    BucketBits,
    Bucket,
    TokenCount,
    /// The tokens of a bucket file.
    Tokens,
    KeyIdLength,
    KeyId,
    SignatureLength,
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic => f.write_str("magic"),
            Self::Kind => f.write_str("kind"),
            Self::RegionLength => f.write_str("area length"),
            Self::Region => f.write_str("area"),
            Self::Seq => f.write_str("seq"),
            Self::Start => f.write_str("window start"),
            Self::End => f.write_str("window end"),
            Self::AddedCount => f.write_str("added count"),
            Self::Added => f.write_str("added-token list"),
            Self::RemovedCount => f.write_str("removed count"),
            Self::Removed => f.write_str("removed-hash list"),
            Self::LevelCount => f.write_str("level count"),
            Self::Levels => f.write_str("filter list"),
            Self::FilterLevel(n) => write!(f, "level of filter {n}"),
            Self::FilterLength(n) => write!(f, "length of filter {n}"),
            Self::Filter(n) => write!(f, "bytes of filter {n}"),
            Self::BucketBits => f.write_str("bucket bits"),
            Self::Bucket => f.write_str("bucket number"),
            Self::TokenCount => f.write_str("token count"),
            Self::Tokens => f.write_str("token list of the bucket"),
            Self::KeyIdLength => f.write_str("key id length"),
            Self::KeyId => f.write_str("key id"),
            Self::SignatureLength => f.write_str("signature length"),
            Self::Signature => f.write_str("signature"),
        }
    }
}

/// Why bytes are not a valid token file, or content cannot be encoded as one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    #[error(
        "truncated: the file ends inside the {part} at byte {len} (the {part} starts at byte \
         {start} and needs {needed} bytes)"
    )]
    Truncated {
        part: TokenPart,
        start: usize,
        needed: usize,
        len: usize,
    },
    #[error("bad magic: not a Confidant token file (version 1)")]
    BadMagic,
    #[error("unsupported token file version {0}: this decoder reads version 1")]
    UnsupportedVersion(u8),
    #[error("bad {part} at byte {at}: {value}, expected {expected}")]
    BadValue {
        part: TokenPart,
        at: usize,
        value: u64,
        expected: &'static str,
    },
    #[error("bad area at byte {at}: {reason}")]
    BadRegion { at: usize, reason: String },
    #[error("bad key id: {0}")]
    BadKeyId(String),
    #[error("batch numbers start at 1; got seq 0")]
    SeqZero,
    #[error("bad window: start {start} is after end {end} (accepted: start <= end)")]
    BadWindow { start: u64, end: u64 },
    #[error(
        "not strictly ascending: item {index} of the {part} does not sort after the one before it"
    )]
    NotAscending { part: TokenPart, index: usize },
    #[error(
        "hash {} is both added and removed (removals withdraw tokens of earlier batches)",
        .0.to_hex()
    )]
    AddedAndRemoved(TokenHash),
    #[error(
        "the filter of level {level} has GCS parameters P = {p}, M = {m}; accepted: M = 2^b and \
         P = b - 1 for b in 2..=62"
    )]
    FilterParams { level: Level, p: u8, m: u64 },
    #[error(
        "the filter of level {level} has {bits} false-positive bits, level {first_level} has \
         {expected}; accepted: the same for every level of a batch"
    )]
    MixedFpBits {
        level: Level,
        bits: u8,
        first_level: Level,
        expected: u8,
    },
    #[error(
        "the filter of level {level} is empty; accepted: a filter only for a level the batch \
         adds tokens at"
    )]
    EmptyFilter { level: Level },
    #[error("the filter of level {level} is not a valid GCS: {source}")]
    BadFilter {
        level: Level,
        #[source]
        source: GcsError,
    },
    #[error("false-positive bits {0} out of range; accepted: 2..=62")]
    FpBits(u8),
    #[error("bucket bits {bits} out of range; accepted: {accepted}")]
    BucketBits { bits: u8, accepted: &'static str },
    #[error("bucket {bucket} does not exist with {bits} bucket bits; accepted: 0..{}", 1u64 << .bits)]
    BucketOutOfRange { bucket: u32, bits: u8 },
    #[error(
        "token {index} of bucket {bucket} has hash {}, which belongs in bucket {actual}",
        .hash.to_hex()
    )]
    OutsideBucket {
        index: usize,
        hash: TokenHash,
        bucket: u32,
        actual: u32,
    },
    #[error(
        "{count} hashes of level {level} at {bits} false-positive bits overflow a filter's \
         64-bit range; accepted: at most 2^(64 - bits) per level"
    )]
    FilterTooLarge {
        level: Level,
        count: usize,
        bits: u8,
    },
    #[error("too many {what} for one file: {count} (at most {max})")]
    TooMany {
        what: &'static str,
        count: usize,
        max: u64,
    },
    #[error("{count} trailing byte(s) after the signature, from byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("signature does not verify with key id {key_id:?}")]
    SignatureMismatch { key_id: String },
    #[error("no public key is known for key id {0:?}")]
    UnknownKeyId(String),
}

/// The bucket of `hash`: its first `bucket_bits` bits, big-endian from byte 0's most
/// significant bit (0 when `bucket_bits` is 0; more than 32 bits count as 32).
pub fn bucket_of(hash: &TokenHash, bucket_bits: u8) -> u32 {
    let top = u32::from_be_bytes([hash.0[0], hash.0[1], hash.0[2], hash.0[3]]);
    match u32::from(bucket_bits.min(32)) {
        0 => 0,
        bits => top >> (32 - bits),
    }
}

/// `list-0000000042.ctok`, `filter-0000000042.ctok`, `bucket-0000000042-000a.ctok`.
///
/// # Panics
/// If `bucket` is `None` for a bucket file or `Some` for another kind: every caller knows
/// which file it names.
pub fn file_name(kind: TokenKind, seq: u64, bucket: Option<u32>) -> String {
    match (kind, bucket) {
        (TokenKind::List, None) => format!("list-{seq:010}.ctok"),
        (TokenKind::Filter, None) => format!("filter-{seq:010}.ctok"),
        (TokenKind::Bucket, Some(bucket)) => format!("bucket-{seq:010}-{bucket:04x}.ctok"),
        (kind, bucket) => panic!("a {kind} file name with bucket {bucket:?}"),
    }
}

/// The kind, seq and bucket a canonical [`file_name`] names; `None` for anything else
/// (another spelling, seq 0, a bucket of 2^12 or more).
pub fn parse_file_name(name: &str) -> Option<(TokenKind, u64, Option<u32>)> {
    let stem = name.strip_suffix(".ctok")?;
    let (kind, rest) = [
        ("list-", TokenKind::List),
        ("filter-", TokenKind::Filter),
        ("bucket-", TokenKind::Bucket),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| stem.strip_prefix(prefix).map(|rest| (kind, rest)))?;
    let (seq_text, bucket_text) = match kind {
        TokenKind::Bucket => rest.split_once('-').map(|(s, b)| (s, Some(b)))?,
        _ => (rest, None),
    };
    // `parse` accepts a leading '+': only digits are canonical.
    if !seq_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = seq_text.parse().ok()?;
    let bucket = match bucket_text {
        Some(text) if text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(u32::from_str_radix(text, 16).ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    if seq == 0 || bucket.is_some_and(|b| b >> MAX_BUCKET_BITS != 0) {
        return None;
    }
    // Zero padding and lower-case hex: exactly the one spelling `file_name` writes.
    (file_name(kind, seq, bucket) == name).then_some((kind, seq, bucket))
}

/// How a batch's filter is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterMode {
    /// False-positive rate 2^-fp_bits per check token and level.
    pub fp_bits: u8,
    /// 0 = no confirmation buckets; 1..=12 = 2^bucket_bits bucket files per batch.
    pub bucket_bits: u8,
}

impl FilterMode {
    /// FP 2^-20 (about 2.7 bytes per token) and 64 confirmation buckets: a phone that
    /// fetches 2 buckets per batch downloads 2.69 + 2 × 21 / 64 ≈ 3.35 bytes per token, against
    /// 5.19 for [`FilterMode::UNCONFIRMED`]. More buckets cost fewer bytes but more files per
    /// batch on the server and its CDN.
    pub const CONFIRMED: Self = Self {
        fp_bits: 20,
        bucket_bits: 6,
    };
    /// FP 2^-40 (about 5.2 bytes per token) and no confirmation step.
    pub const UNCONFIRMED: Self = Self {
        fp_bits: 40,
        bucket_bits: 0,
    };

    /// fp_bits in 2..=62, bucket_bits in 0..=12.
    pub fn validate(self) -> Result<(), TokenFileError> {
        if !(MIN_FP_BITS..=MAX_FP_BITS).contains(&self.fp_bits) {
            return Err(TokenFileError::FpBits(self.fp_bits));
        }
        if self.bucket_bits > MAX_BUCKET_BITS {
            return Err(TokenFileError::BucketBits {
                bits: self.bucket_bits,
                accepted: "0..=12",
            });
        }
        Ok(())
    }
}

/// The files of one batch, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchFiles {
    pub list: TokenFile,
    pub filter: TokenFile,
    /// Every bucket 0..2^bucket_bits in order, empty ones included; none without buckets.
    pub buckets: Vec<TokenFile>,
}

/// Builds a batch's list, filter and bucket files.
///
/// Input order does not matter. A hash added twice is published once, at its lowest level (the
/// most direct evidence) and then earliest day; a hash both added and removed is added
/// (removals withdraw tokens of earlier batches). Each level's filter gets a fresh 16-byte
/// SipHash key from `rng`, drawn in ascending level order, so a seeded `rng` gives the same
/// files. Refuses an invalid `mode`, seq 0, `start > end`, and a level with more hashes than
/// the filter's 64-bit range holds at `mode.fp_bits` (2^(64 - fp_bits)).
#[allow(clippy::too_many_arguments)] // one batch's header, content and mode, all required
pub fn batch_files(
    area: Region,
    seq: u64,
    start: u64,
    end: u64,
    mut added: Vec<PublishedToken>,
    mut removed: Vec<TokenHash>,
    mode: FilterMode,
    rng: &mut impl RngCore,
) -> Result<BatchFiles, TokenFileError> {
    mode.validate()?;
    check_header(seq, start, end)?;
    added.sort_unstable_by_key(|t| (t.hash, t.level, t.day));
    added.dedup_by_key(|t| t.hash);
    removed.sort_unstable();
    removed.dedup();
    removed.retain(|hash| added.binary_search_by_key(hash, |t| t.hash).is_err());

    let params = GcsParams::for_false_positive_bits(mode.fp_bits);
    let mut by_level: BTreeMap<Level, Vec<[u8; HASH_LEN]>> = BTreeMap::new();
    for token in &added {
        by_level.entry(token.level).or_default().push(token.hash.0);
    }
    let mut levels = Vec::with_capacity(by_level.len());
    for (level, hashes) in by_level {
        // GcsFilter::build panics when n·M overflows; n is at most the number of hashes.
        if (hashes.len() as u64).checked_mul(params.m).is_none() {
            return Err(TokenFileError::FilterTooLarge {
                level,
                count: hashes.len(),
                bits: mode.fp_bits,
            });
        }
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        levels.push(LevelFilter {
            level,
            filter: GcsFilter::build(&hashes, key, params),
        });
    }

    let file = |body| TokenFile {
        area: area.clone(),
        seq,
        start,
        end,
        body,
    };
    let mut buckets = Vec::new();
    if mode.bucket_bits > 0 {
        let mut per_bucket = vec![Vec::new(); 1 << mode.bucket_bits];
        // `added` is sorted by hash, so every bucket is too.
        for token in &added {
            per_bucket[bucket_of(&token.hash, mode.bucket_bits) as usize].push(*token);
        }
        buckets = per_bucket
            .into_iter()
            .enumerate()
            .map(|(bucket, tokens)| {
                file(TokenBody::Bucket {
                    bucket_bits: mode.bucket_bits,
                    bucket: bucket as u32,
                    tokens,
                })
            })
            .collect();
    }
    Ok(BatchFiles {
        filter: file(TokenBody::Filter {
            levels,
            removed: removed.clone(),
            bucket_bits: mode.bucket_bits,
        }),
        list: file(TokenBody::List { added, removed }),
        buckets,
    })
}

fn check_header(seq: u64, start: u64, end: u64) -> Result<(), TokenFileError> {
    if seq == 0 {
        return Err(TokenFileError::SeqZero);
    }
    if start > end {
        return Err(TokenFileError::BadWindow { start, end });
    }
    Ok(())
}

fn check_key_id(key_id: &str) -> Result<(), TokenFileError> {
    feed::key_id_problem(key_id).map_or(Ok(()), |problem| Err(TokenFileError::BadKeyId(problem)))
}

/// The b of M = 2^b, P = b - 1 ([`GcsParams::for_false_positive_bits`]), b in 2..=62.
fn fp_bits_of(params: GcsParams) -> Option<u8> {
    if !params.m.is_power_of_two() {
        return None;
    }
    let bits = params.m.trailing_zeros() as u8;
    ((MIN_FP_BITS..=MAX_FP_BITS).contains(&bits) && params.p == bits - 1).then_some(bits)
}

fn ascending(
    part: TokenPart,
    hashes: impl Iterator<Item = TokenHash>,
) -> Result<(), TokenFileError> {
    let mut last = None;
    for (index, hash) in hashes.enumerate() {
        if last.is_some_and(|last| last >= hash) {
            return Err(TokenFileError::NotAscending { part, index });
        }
        last = Some(hash);
    }
    Ok(())
}

fn count_u32(what: &'static str, count: usize) -> Result<u32, TokenFileError> {
    u32::try_from(count).map_err(|_| TokenFileError::TooMany {
        what,
        count,
        max: u32::MAX.into(),
    })
}

impl TokenFile {
    pub fn kind(&self) -> TokenKind {
        match self.body {
            TokenBody::List { .. } => TokenKind::List,
            TokenBody::Filter { .. } => TokenKind::Filter,
            TokenBody::Bucket { .. } => TokenKind::Bucket,
        }
    }

    /// Its published name ([`file_name`]).
    pub fn name(&self) -> String {
        match self.body {
            TokenBody::Bucket { bucket, .. } => {
                file_name(TokenKind::Bucket, self.seq, Some(bucket))
            }
            _ => file_name(self.kind(), self.seq, None),
        }
    }

    /// The hashes this batch withdraws (none in a bucket file, which the filter file covers).
    pub fn removed(&self) -> &[TokenHash] {
        match &self.body {
            TokenBody::List { removed, .. } | TokenBody::Filter { removed, .. } => removed,
            TokenBody::Bucket { .. } => &[],
        }
    }

    /// A filter or bucket file's bucket bits; 0 for a list file.
    pub fn bucket_bits(&self) -> u8 {
        match self.body {
            TokenBody::Filter { bucket_bits, .. } | TokenBody::Bucket { bucket_bits, .. } => {
                bucket_bits
            }
            TokenBody::List { .. } => 0,
        }
    }

    /// A filter file's false-positive bits; `None` for other kinds and for a batch that added
    /// nothing (no level, so no filter to tell).
    pub fn fp_bits(&self) -> Option<u8> {
        match &self.body {
            TokenBody::Filter { levels, .. } => {
                levels.first().and_then(|l| fp_bits_of(l.filter.params))
            }
            _ => None,
        }
    }

    /// `(index into check, level)` of every check hash the file may hold, ascending. For a
    /// filter file these are candidates (false positives at 2^-fp_bits per hash and level);
    /// list and bucket files answer exactly. `GcsFilter::matches` sorts the queries itself, so
    /// `check` may be in any order.
    pub fn filter_candidates(&self, check: &[TokenHash]) -> Vec<(usize, Level)> {
        let mut found = Vec::new();
        match &self.body {
            TokenBody::Filter { levels, .. } => {
                let queries: Vec<&[u8]> = check.iter().map(|hash| &hash.0[..]).collect();
                for level in levels {
                    found.extend(
                        level
                            .filter
                            .matches(&queries)
                            .into_iter()
                            .map(|i| (i, level.level)),
                    );
                }
                found.sort_unstable();
            }
            TokenBody::List { .. } | TokenBody::Bucket { .. } => {
                for (index, hash) in check.iter().enumerate() {
                    if let Some(level) = self.confirms(hash) {
                        found.push((index, level));
                    }
                }
            }
        }
        found
    }

    /// The level at which a list or bucket file holds `hash`; `None` when it does not, and
    /// always for a filter file (which cannot confirm).
    pub fn confirms(&self, hash: &TokenHash) -> Option<Level> {
        let tokens = match &self.body {
            TokenBody::List { added, .. } => added,
            TokenBody::Bucket { tokens, .. } => tokens,
            TokenBody::Filter { .. } => return None,
        };
        tokens
            .binary_search_by_key(hash, |t| t.hash)
            .ok()
            .map(|i| tokens[i].level)
    }

    /// The rules on content that encoder and decoder share, so that whatever encodes decodes
    /// and the other way round. The validity of each filter's data is checked by
    /// `GcsFilter::from_bytes`, on the way in and on the way out.
    fn validate(&self) -> Result<(), TokenFileError> {
        check_header(self.seq, self.start, self.end)?;
        match &self.body {
            TokenBody::List { added, removed } => {
                ascending(TokenPart::Added, added.iter().map(|t| t.hash))?;
                ascending(TokenPart::Removed, removed.iter().copied())?;
                // Both sorted: one merge pass finds a common hash.
                let mut removed = removed.iter().peekable();
                for token in added {
                    while removed.next_if(|r| **r < token.hash).is_some() {}
                    if removed.peek() == Some(&&token.hash) {
                        return Err(TokenFileError::AddedAndRemoved(token.hash));
                    }
                }
            }
            TokenBody::Filter {
                levels,
                removed,
                bucket_bits,
            } => {
                if *bucket_bits > MAX_BUCKET_BITS {
                    return Err(TokenFileError::BucketBits {
                        bits: *bucket_bits,
                        accepted: "0..=12 in a filter file",
                    });
                }
                let mut first: Option<(Level, u8)> = None;
                for (index, level) in levels.iter().enumerate() {
                    if index > 0 && levels[index - 1].level >= level.level {
                        return Err(TokenFileError::NotAscending {
                            part: TokenPart::Levels,
                            index,
                        });
                    }
                    let params = level.filter.params;
                    let bits = fp_bits_of(params).ok_or(TokenFileError::FilterParams {
                        level: level.level,
                        p: params.p,
                        m: params.m,
                    })?;
                    if level.filter.n == 0 {
                        return Err(TokenFileError::EmptyFilter { level: level.level });
                    }
                    match first {
                        None => first = Some((level.level, bits)),
                        Some((first_level, expected)) if expected != bits => {
                            return Err(TokenFileError::MixedFpBits {
                                level: level.level,
                                bits,
                                first_level,
                                expected,
                            });
                        }
                        Some(_) => {}
                    }
                }
                ascending(TokenPart::Removed, removed.iter().copied())?;
            }
            TokenBody::Bucket {
                bucket_bits,
                bucket,
                tokens,
            } => {
                let bits = *bucket_bits;
                if !(1..=MAX_BUCKET_BITS).contains(&bits) {
                    return Err(TokenFileError::BucketBits {
                        bits,
                        accepted: "1..=12 in a bucket file",
                    });
                }
                if *bucket >> bits != 0 {
                    return Err(TokenFileError::BucketOutOfRange {
                        bucket: *bucket,
                        bits,
                    });
                }
                ascending(TokenPart::Tokens, tokens.iter().map(|t| t.hash))?;
                if let Some((index, token)) = tokens
                    .iter()
                    .enumerate()
                    .find(|(_, t)| bucket_of(&t.hash, bits) != *bucket)
                {
                    return Err(TokenFileError::OutsideBucket {
                        index,
                        hash: token.hash,
                        bucket: *bucket,
                        actual: bucket_of(&token.hash, bits),
                    });
                }
            }
        }
        Ok(())
    }

    /// Encodes and signs the file. Refuses content [`decode`] would refuse (unsorted or
    /// repeated hashes, a hash both added and removed, filters that are not
    /// `GcsParams::for_false_positive_bits` of one shared b in 2..=62, empty or invalid
    /// filters, bucket bits or numbers out of range, tokens outside their bucket, seq 0,
    /// `start > end`), a count above u32 (255 for levels), and a bad key id (1..=64 printable
    /// ASCII bytes without space).
    pub fn encode(&self, signer: &SigningKey, key_id: &str) -> Result<Vec<u8>, TokenFileError> {
        check_key_id(key_id)?;
        self.validate()?;
        let area = self.area.as_str().as_bytes();
        let body_len = match &self.body {
            TokenBody::List { added, removed } => {
                8 + added.len() * PUBLISHED_TOKEN_LEN + removed.len() * HASH_LEN
            }
            TokenBody::Filter {
                levels, removed, ..
            } => {
                let filters: usize = levels.iter().map(|l| 5 + 37 + l.filter.data.len()).sum();
                2 + filters + 4 + removed.len() * HASH_LEN
            }
            TokenBody::Bucket { tokens, .. } => 9 + tokens.len() * PUBLISHED_TOKEN_LEN,
        };
        let mut out =
            Vec::with_capacity(TOKEN_MAGIC.len() + 2 + area.len() + 24 + body_len + 2 + 64 + 72);
        out.extend_from_slice(&TOKEN_MAGIC);
        out.push(self.kind().code());
        // A Region is 1..=16 ASCII bytes by construction.
        out.push(area.len() as u8);
        out.extend_from_slice(area);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.start.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        match &self.body {
            TokenBody::List { added, removed } => {
                put_tokens(&mut out, "added tokens", added)?;
                put_hashes(&mut out, removed)?;
            }
            TokenBody::Filter {
                levels,
                removed,
                bucket_bits,
            } => {
                let count = u8::try_from(levels.len()).map_err(|_| TokenFileError::TooMany {
                    what: "levels",
                    count: levels.len(),
                    max: u8::MAX.into(),
                })?;
                out.push(count);
                for level in levels {
                    let bytes = level.filter.to_bytes();
                    // A hand-built filter may hold data its header does not describe.
                    GcsFilter::from_bytes(&bytes).map_err(|source| TokenFileError::BadFilter {
                        level: level.level,
                        source,
                    })?;
                    out.push(level.level);
                    out.extend_from_slice(&count_u32("filter bytes", bytes.len())?.to_le_bytes());
                    out.extend_from_slice(&bytes);
                }
                put_hashes(&mut out, removed)?;
                out.push(*bucket_bits);
            }
            TokenBody::Bucket {
                bucket_bits,
                bucket,
                tokens,
            } => {
                out.push(*bucket_bits);
                out.extend_from_slice(&bucket.to_le_bytes());
                put_tokens(&mut out, "bucket tokens", tokens)?;
            }
        }
        out.push(key_id.len() as u8);
        out.extend_from_slice(key_id.as_bytes());
        let signature = signer.sign(&out);
        out.push(u8::try_from(signature.len()).expect("a DER P-256 signature is at most 72 bytes"));
        out.extend_from_slice(&signature);
        Ok(out)
    }
}

fn put_tokens(
    out: &mut Vec<u8>,
    what: &'static str,
    tokens: &[PublishedToken],
) -> Result<(), TokenFileError> {
    out.extend_from_slice(&count_u32(what, tokens.len())?.to_le_bytes());
    for token in tokens {
        out.extend_from_slice(&token.hash.0);
        out.extend_from_slice(&token.day.to_le_bytes());
        out.push(token.level);
    }
    Ok(())
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[TokenHash]) -> Result<(), TokenFileError> {
    out.extend_from_slice(&count_u32("removed hashes", hashes.len())?.to_le_bytes());
    for hash in hashes {
        out.extend_from_slice(&hash.0);
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, needed: usize, part: TokenPart) -> Result<&'a [u8], TokenFileError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < needed {
            return Err(TokenFileError::Truncated {
                part,
                start: self.pos,
                needed,
                len: self.bytes.len(),
            });
        }
        self.pos += needed;
        Ok(&rest[..needed])
    }

    fn array<const N: usize>(&mut self, part: TokenPart) -> Result<[u8; N], TokenFileError> {
        let bytes = self.take(N, part)?;
        Ok(bytes.try_into().expect("take returns exactly N bytes"))
    }

    fn u8(&mut self, part: TokenPart) -> Result<u8, TokenFileError> {
        Ok(self.array::<1>(part)?[0])
    }

    fn u32(&mut self, part: TokenPart) -> Result<u32, TokenFileError> {
        Ok(u32::from_le_bytes(self.array(part)?))
    }

    fn u64(&mut self, part: TokenPart) -> Result<u64, TokenFileError> {
        Ok(u64::from_le_bytes(self.array(part)?))
    }

    /// A u32 count, then that many tokens: the bytes are taken (so checked against what is
    /// left) before anything is reserved.
    fn tokens(
        &mut self,
        count_part: TokenPart,
        part: TokenPart,
    ) -> Result<Vec<PublishedToken>, TokenFileError> {
        let count = self.u32(count_part)? as usize;
        let bytes = self.take(count.saturating_mul(PUBLISHED_TOKEN_LEN), part)?;
        Ok(bytes
            .chunks_exact(PUBLISHED_TOKEN_LEN)
            .map(|chunk| PublishedToken {
                hash: TokenHash(chunk[..HASH_LEN].try_into().expect("16 bytes")),
                day: u32::from_le_bytes(chunk[16..20].try_into().expect("4 bytes")),
                level: chunk[20],
            })
            .collect())
    }

    fn hashes(&mut self) -> Result<Vec<TokenHash>, TokenFileError> {
        let count = self.u32(TokenPart::RemovedCount)? as usize;
        let bytes = self.take(count.saturating_mul(HASH_LEN), TokenPart::Removed)?;
        Ok(bytes
            .chunks_exact(HASH_LEN)
            .map(|chunk| TokenHash(chunk.try_into().expect("16 bytes")))
            .collect())
    }
}

/// A structurally valid file, with its signature not yet checked.
struct Parsed<'a> {
    file: TokenFile,
    key_id: &'a str,
    /// Every byte before the signature length: what the signature covers.
    signed: &'a [u8],
    signature: &'a [u8],
}

fn bad(
    part: TokenPart,
    at: usize,
    value: impl Into<u64>,
    expected: &'static str,
) -> TokenFileError {
    TokenFileError::BadValue {
        part,
        at,
        value: value.into(),
        expected,
    }
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, TokenFileError> {
    let head = &bytes[..bytes.len().min(TOKEN_MAGIC.len())];
    if head != &TOKEN_MAGIC[..head.len()] {
        let other_version = head.len() >= 6 && head[..5] == TOKEN_MAGIC[..5] && head[5] != 1;
        return Err(if other_version {
            TokenFileError::UnsupportedVersion(head[5])
        } else {
            TokenFileError::BadMagic
        });
    }
    let mut r = Reader { bytes, pos: 0 };
    r.take(TOKEN_MAGIC.len(), TokenPart::Magic)?;

    let at = r.pos;
    let kind_code = r.u8(TokenPart::Kind)?;
    let kind = TokenKind::from_code(kind_code).ok_or_else(|| {
        bad(
            TokenPart::Kind,
            at,
            kind_code,
            "1 (list), 2 (filter) or 3 (bucket)",
        )
    })?;

    let at = r.pos;
    let area_len = r.u8(TokenPart::RegionLength)?;
    if !(1..=16).contains(&area_len) {
        return Err(bad(TokenPart::RegionLength, at, area_len, "1..=16"));
    }
    let at = r.pos;
    let area_bytes = r.take(usize::from(area_len), TokenPart::Region)?;
    let area = std::str::from_utf8(area_bytes)
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|text| Region::try_from(text.to_owned()))
        .map_err(|reason| TokenFileError::BadRegion { at, reason })?;

    let seq = r.u64(TokenPart::Seq)?;
    let start = r.u64(TokenPart::Start)?;
    let end = r.u64(TokenPart::End)?;

    let body = match kind {
        TokenKind::List => TokenBody::List {
            added: r.tokens(TokenPart::AddedCount, TokenPart::Added)?,
            removed: r.hashes()?,
        },
        TokenKind::Filter => {
            let count = r.u8(TokenPart::LevelCount)?;
            // At most 255 small structs: no need to bound this reservation by the input.
            let mut levels = Vec::with_capacity(usize::from(count));
            for index in 0..count {
                let level = r.u8(TokenPart::FilterLevel(index))?;
                let len = r.u32(TokenPart::FilterLength(index))? as usize;
                let data = r.take(len, TokenPart::Filter(index))?;
                let filter = GcsFilter::from_bytes(data)
                    .map_err(|source| TokenFileError::BadFilter { level, source })?;
                levels.push(LevelFilter { level, filter });
            }
            let removed = r.hashes()?;
            let bucket_bits = r.u8(TokenPart::BucketBits)?;
            TokenBody::Filter {
                levels,
                removed,
                bucket_bits,
            }
        }
        TokenKind::Bucket => {
            let bucket_bits = r.u8(TokenPart::BucketBits)?;
            let bucket = r.u32(TokenPart::Bucket)?;
            let tokens = r.tokens(TokenPart::TokenCount, TokenPart::Tokens)?;
            TokenBody::Bucket {
                bucket_bits,
                bucket,
                tokens,
            }
        }
    };
    let file = TokenFile {
        area,
        seq,
        start,
        end,
        body,
    };
    file.validate()?;

    let at = r.pos;
    let key_id_len = r.u8(TokenPart::KeyIdLength)?;
    if key_id_len == 0 || usize::from(key_id_len) > MAX_KEY_ID_LEN {
        return Err(bad(TokenPart::KeyIdLength, at, key_id_len, "1..=64"));
    }
    let key_id_bytes = r.take(usize::from(key_id_len), TokenPart::KeyId)?;
    let key_id = std::str::from_utf8(key_id_bytes)
        .map_err(|_| TokenFileError::BadKeyId("not ASCII".into()))?;
    check_key_id(key_id)?;
    let signed = &bytes[..r.pos];

    let at = r.pos;
    let sig_len = r.u8(TokenPart::SignatureLength)?;
    if sig_len == 0 {
        return Err(bad(TokenPart::SignatureLength, at, sig_len, "at least 1"));
    }
    let signature = r.take(usize::from(sig_len), TokenPart::Signature)?;
    if r.pos != bytes.len() {
        return Err(TokenFileError::TrailingBytes {
            at: r.pos,
            count: bytes.len() - r.pos,
        });
    }
    Ok(Parsed {
        file,
        key_id,
        signed,
        signature,
    })
}

/// Checks the structure of a file and returns its content, without checking the signature.
/// Never panics, and reserves memory only for data the file actually holds.
pub fn decode(bytes: &[u8]) -> Result<TokenFile, TokenFileError> {
    parse(bytes).map(|parsed| parsed.file)
}

/// The key id a file names for its signature (parses the whole file).
pub fn key_id_of(bytes: &[u8]) -> Result<String, TokenFileError> {
    parse(bytes).map(|parsed| parsed.key_id.to_owned())
}

/// Checks structure and signature with one public key.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<TokenFile, TokenFileError> {
    verify_with(bytes, |_| Some(key))
}

/// Checks structure and signature with the public key that `key_for` returns for the file's
/// key id ([`TokenFileError::UnknownKeyId`] when it returns `None`).
pub fn verify_with<'k>(
    bytes: &[u8],
    key_for: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<TokenFile, TokenFileError> {
    let parsed = parse(bytes)?;
    let key = key_for(parsed.key_id)
        .ok_or_else(|| TokenFileError::UnknownKeyId(parsed.key_id.to_owned()))?;
    if !key.verify(parsed.signed, parsed.signature) {
        return Err(TokenFileError::SignatureMismatch {
            key_id: parsed.key_id.to_owned(),
        });
    }
    Ok(parsed.file)
}

/// `index.json` of an area (`/tokens/{area}/index.json`): its batches, ascending by seq.
/// Bucket files are not listed: their names follow from seq and bucket bits, and their
/// signature covers both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenIndex {
    /// [`TOKEN_INDEX_FORMAT`].
    pub format: u32,
    pub area: Region,
    /// The newest batch's seq (0 before the first).
    pub latest_seq: u64,
    /// The current [`FilterMode`]; each filter file carries its own, signed.
    pub fp_bits: u8,
    pub bucket_bits: u8,
    pub batches: Vec<BatchEntry>,
}

impl TokenIndex {
    /// `latest_seq` is the last batch's seq, else 0.
    pub fn new(area: Region, mode: FilterMode, batches: Vec<BatchEntry>) -> Self {
        Self {
            format: TOKEN_INDEX_FORMAT,
            area,
            latest_seq: batches.last().map_or(0, |batch| batch.seq),
            fp_bits: mode.fp_bits,
            bucket_bits: mode.bucket_bits,
            batches,
        }
    }
}

/// One batch in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchEntry {
    pub seq: u64,
    pub start: u64,
    pub end: u64,
    pub list: FileEntry,
    pub filter: FileEntry,
}

impl BatchEntry {
    /// The entry of a batch whose list and filter files encoded to these bytes.
    pub fn describe(
        list_bytes: &[u8],
        list: &TokenFile,
        filter_bytes: &[u8],
        filter: &TokenFile,
    ) -> Self {
        Self {
            seq: list.seq,
            start: list.start,
            end: list.end,
            list: FileEntry::describe(list_bytes, list),
            filter: FileEntry::describe(filter_bytes, filter),
        }
    }
}

/// One file in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// File name, relative to the index ([`file_name`]).
    pub file: String,
    /// SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// File size.
    pub bytes: u64,
}

impl FileEntry {
    /// The entry for the encoded file `bytes` whose content is `file`.
    pub fn describe(bytes: &[u8], file: &TokenFile) -> Self {
        Self {
            file: file.name(),
            sha256: hex::encode(feed::file_hash(bytes)),
            bytes: bytes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use rand_core::{OsRng, RngCore};

    static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate(&mut OsRng));
    static OTHER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate(&mut OsRng));
    const KEY_ID: &str = "tokens-2027-01";
    /// 2027-01-15, a UTC day number.
    const DAY: u32 = 20_833;
    const START: u64 = 1_800_000_000;

    /// SplitMix64: a seeded stand-in for the server's CSPRNG, so that filter keys repeat.
    struct SeededRng(u64);

    impl RngCore for SeededRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }

        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand_core::impls::fill_bytes_via_next(self, dest)
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    fn area() -> Region {
        Region::try_from("64".to_owned()).expect("valid")
    }

    /// A hash spread over the whole space (so over every bucket), distinct for each n.
    fn hash(n: u32) -> TokenHash {
        let mut bytes = [0x5a; 16];
        bytes[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
        bytes[4..8].copy_from_slice(&n.to_le_bytes());
        TokenHash(bytes)
    }

    fn token(n: u32, level: Level) -> PublishedToken {
        PublishedToken {
            hash: hash(n),
            day: DAY - n % 14,
            level,
        }
    }

    /// Tokens 0..n: two thirds at level 0, the rest at level 1.
    fn tokens(range: std::ops::Range<u32>) -> Vec<PublishedToken> {
        range.map(|n| token(n, u8::from(n % 3 == 2))).collect()
    }

    fn batch(
        seq: u64,
        added: Vec<PublishedToken>,
        removed: Vec<TokenHash>,
        mode: FilterMode,
    ) -> BatchFiles {
        let start = START + seq * 3600;
        batch_files(
            area(),
            seq,
            start,
            start + 3600,
            added,
            removed,
            mode,
            &mut SeededRng(seq),
        )
        .expect("a valid batch")
    }

    fn encode(file: &TokenFile) -> Vec<u8> {
        file.encode(&SIGNER, KEY_ID).expect("encodes")
    }

    fn public() -> VerifyingKey {
        SIGNER.verifying_key()
    }

    /// One small file of each kind: list, filter, and a non-empty bucket.
    fn small_files() -> Vec<TokenFile> {
        let files = batch(3, tokens(0..6), vec![hash(100)], FilterMode::CONFIRMED);
        let bucket = files
            .buckets
            .iter()
            .find(|b| matches!(&b.body, TokenBody::Bucket { tokens, .. } if !tokens.is_empty()))
            .expect("some bucket holds a token")
            .clone();
        vec![files.list, files.filter, bucket]
    }

    #[test]
    fn golden_list_and_bucket_layout() {
        let added = PublishedToken {
            hash: TokenHash([0x11; 16]),
            day: 20_000,
            level: 2,
        };
        let list = TokenFile {
            area: area(),
            seq: 2,
            start: 1_600_000_000,
            end: 1_600_000_600,
            body: TokenBody::List {
                added: vec![added],
                removed: vec![TokenHash([0x22; 16])],
            },
        };
        let bytes = list.encode(&SIGNER, "k1").expect("encodes");
        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(b"CTOKN\x01\r\n");
        expected.extend_from_slice(&[0x01, 0x02, b'6', b'4']);
        expected.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x00, 0x10, 0x5e, 0x5f, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0x58, 0x12, 0x5e, 0x5f, 0, 0, 0, 0]);
        expected.extend_from_slice(&[1, 0, 0, 0]); // added_count
        expected.extend_from_slice(&[0x11; 16]);
        expected.extend_from_slice(&[0x20, 0x4e, 0, 0, 2]); // day 20000, level 2
        expected.extend_from_slice(&[1, 0, 0, 0]); // removed_count
        expected.extend_from_slice(&[0x22; 16]);
        expected.extend_from_slice(&[2, b'k', b'1']);
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        let sig_len = usize::from(bytes[expected.len()]);
        assert_eq!(bytes.len(), expected.len() + 1 + sig_len);
        assert!(public().verify(&expected, &bytes[expected.len() + 1..]));
        assert_eq!(key_id_of(&bytes).expect("parses"), "k1");

        // 0x11 = 0001 0001: bucket 1 at 4 bits, 0x111 at 12.
        let bucket = TokenFile {
            body: TokenBody::Bucket {
                bucket_bits: 4,
                bucket: 1,
                tokens: vec![added],
            },
            ..list.clone()
        };
        let bytes = bucket.encode(&SIGNER, "k1").expect("encodes");
        assert_eq!(bytes[8], 3, "kind");
        assert_eq!(&bytes[36..45], &[4, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[45..61], &[0x11; 16]);
        assert_eq!(bucket_of(&added.hash, 12), 0x111);
    }

    #[test]
    fn golden_filter_layout() {
        let files = batch(
            1,
            vec![token(1, 0), token(2, 3)],
            vec![TokenHash([0x33; 16])],
            FilterMode::UNCONFIRMED,
        );
        let bytes = encode(&files.filter);
        let TokenBody::Filter { levels, .. } = &files.filter.body else {
            panic!("a filter file");
        };
        assert_eq!(levels.iter().map(|l| l.level).collect::<Vec<_>>(), [0, 3]);
        let mut at = 8 + 1 + 3 + 24;
        assert_eq!(bytes[8], 2, "kind");
        assert_eq!(bytes[at], 2, "level count");
        at += 1;
        for level in levels {
            let gcs = level.filter.to_bytes();
            assert_eq!(bytes[at], level.level);
            assert_eq!(&bytes[at + 1..at + 5], &(gcs.len() as u32).to_le_bytes());
            assert_eq!(&bytes[at + 5..at + 5 + gcs.len()], &gcs[..]);
            assert_eq!(level.filter.params, GcsParams::for_false_positive_bits(40));
            at += 5 + gcs.len();
        }
        assert_eq!(&bytes[at..at + 4], &[1, 0, 0, 0], "removed count");
        assert_eq!(&bytes[at + 4..at + 20], &[0x33; 16]);
        assert_eq!(bytes[at + 20], 0, "bucket bits");
        assert_eq!(usize::from(bytes[at + 21]), KEY_ID.len());
        // Each level has its own key.
        assert_ne!(levels[0].filter.key, levels[1].filter.key);
    }

    #[test]
    fn every_kind_round_trips() {
        for mode in [
            FilterMode::CONFIRMED,
            FilterMode::UNCONFIRMED,
            FilterMode {
                fp_bits: 2,
                bucket_bits: 12,
            },
        ] {
            let files = batch(9, tokens(0..300), (1000..1010).map(hash).collect(), mode);
            assert_eq!(
                files.buckets.len(),
                if mode.bucket_bits == 0 {
                    0
                } else {
                    1 << mode.bucket_bits
                }
            );
            for file in [&files.list, &files.filter]
                .into_iter()
                .chain(&files.buckets)
            {
                let bytes = encode(file);
                let back = verify(&bytes, &public()).expect("verifies");
                assert_eq!(&back, file, "{}", file.name());
                assert_eq!(
                    encode(&back),
                    bytes,
                    "{}: re-encoding changed the bytes",
                    file.name()
                );
            }
            assert_eq!(files.filter.fp_bits(), Some(mode.fp_bits));
            assert_eq!(files.filter.bucket_bits(), mode.bucket_bits);
            assert_eq!(files.list.removed().len(), 10);
            assert_eq!(files.filter.removed(), files.list.removed());
        }
    }

    #[test]
    fn the_same_batch_and_seed_give_the_same_bytes() {
        let bytes = |files: &BatchFiles| -> Vec<Vec<u8>> {
            [&files.list, &files.filter]
                .into_iter()
                .chain(&files.buckets)
                .map(encode)
                .collect()
        };
        let mut shuffled = tokens(0..50);
        shuffled.reverse();
        let mut removed: Vec<TokenHash> = (60..70).map(hash).collect();
        removed.rotate_left(3);
        let a = batch(
            4,
            tokens(0..50),
            (60..70).map(hash).collect(),
            FilterMode::CONFIRMED,
        );
        let b = batch(4, shuffled, removed, FilterMode::CONFIRMED);
        assert_eq!(bytes(&a), bytes(&b));
        // Another seed draws other filter keys: only the filter file changes.
        let mut rng = SeededRng(99);
        let c = batch_files(
            area(),
            4,
            a.list.start,
            a.list.end,
            tokens(0..50),
            (60..70).map(hash).collect(),
            FilterMode::CONFIRMED,
            &mut rng,
        )
        .expect("valid");
        assert_eq!(encode(&c.list), encode(&a.list));
        assert_ne!(encode(&c.filter), encode(&a.filter));
        assert_eq!(c.buckets, a.buckets);
    }

    #[test]
    fn batch_files_sorts_dedups_and_keeps_added_over_removed() {
        let twice = PublishedToken {
            level: 2,
            ..token(1, 0)
        };
        let later = PublishedToken {
            day: DAY + 1,
            ..token(1, 0)
        };
        let files = batch(
            1,
            vec![token(2, 1), twice, token(1, 0), later, token(2, 1)],
            vec![hash(2), hash(9), hash(9), hash(8)],
            FilterMode::CONFIRMED,
        );
        let TokenBody::List { added, removed } = &files.list.body else {
            panic!("a list");
        };
        let mut expected = vec![token(1, 0), token(2, 1)];
        expected.sort_by_key(|t| t.hash);
        assert_eq!(
            added, &expected,
            "lowest level, then earliest day, once each"
        );
        let mut expected_removed = vec![hash(8), hash(9)];
        expected_removed.sort();
        assert_eq!(
            removed, &expected_removed,
            "hash 2 is added, so not removed"
        );
    }

    #[test]
    fn buckets_hold_exactly_their_tokens_and_empty_ones_exist() {
        let files = batch(2, tokens(0..5), vec![], FilterMode::CONFIRMED);
        let bits = FilterMode::CONFIRMED.bucket_bits;
        assert_eq!(files.buckets.len(), 1 << bits);
        let mut seen = 0;
        for (i, file) in files.buckets.iter().enumerate() {
            let TokenBody::Bucket {
                bucket_bits,
                bucket,
                tokens,
            } = &file.body
            else {
                panic!("a bucket");
            };
            assert_eq!((*bucket_bits, *bucket), (bits, i as u32));
            assert!(tokens.iter().all(|t| bucket_of(&t.hash, bits) == *bucket));
            seen += tokens.len();
            assert_eq!(file.name(), format!("bucket-0000000002-{i:04x}.ctok"));
        }
        assert_eq!(seen, 5);
        assert!(
            files
                .buckets
                .iter()
                .any(|b| matches!(&b.body, TokenBody::Bucket { tokens, .. } if tokens.is_empty()))
        );
        // Every bucket file encodes, the empty ones too, and they all look alike in size.
        let sizes: Vec<usize> = files.buckets.iter().map(|b| encode(b).len()).collect();
        assert!(
            sizes
                .iter()
                .all(|&s| s < 45 + 2 + KEY_ID.len() + 72 + 5 * PUBLISHED_TOKEN_LEN)
        );
        // An empty batch still has all of them.
        let empty = batch(3, vec![], vec![], FilterMode::CONFIRMED);
        assert_eq!(empty.buckets.len(), 1 << bits);
        assert!(
            matches!(&empty.filter.body, TokenBody::Filter { levels, .. } if levels.is_empty())
        );
        assert_eq!(empty.filter.fp_bits(), None);
        encode(&empty.filter);
    }

    #[test]
    fn bucket_of_takes_the_leading_bits() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0b1010_1100;
        bytes[1] = 0b0101_0000;
        let h = TokenHash(bytes);
        assert_eq!(bucket_of(&h, 0), 0);
        assert_eq!(bucket_of(&h, 1), 1);
        assert_eq!(bucket_of(&h, 4), 0b1010);
        assert_eq!(bucket_of(&h, 12), 0b1010_1100_0101);
        assert_eq!(bucket_of(&TokenHash([0xff; 16]), 12), 4095);
        assert_eq!(bucket_of(&TokenHash([0xff; 16]), 40), u32::MAX);
    }

    #[test]
    fn candidates_then_confirmation_find_the_hits_and_only_them() {
        // fp 2^-2: the filter flags many strangers, which the buckets then clear.
        let mode = FilterMode {
            fp_bits: 2,
            bucket_bits: 3,
        };
        let files = batch(5, tokens(0..40), vec![], mode);
        let check: Vec<TokenHash> = [hash(7), hash(8)]
            .into_iter()
            .chain((500..600).map(hash))
            .collect();
        let candidates = files.filter.filter_candidates(&check);
        assert!(candidates.contains(&(0, 0)), "token 7 is at level 0");
        assert!(candidates.contains(&(1, 1)), "token 8 is at level 1");
        assert!(
            candidates.len() > 10,
            "2^-2 flags strangers too: {}",
            candidates.len()
        );
        assert!(candidates.is_sorted());
        let mut confirmed = Vec::new();
        for &(index, _) in &candidates {
            let bucket = &files.buckets[bucket_of(&check[index], 3) as usize];
            if let Some(level) = bucket.confirms(&check[index]) {
                confirmed.push((index, level));
            }
        }
        confirmed.dedup();
        assert_eq!(confirmed, [(0, 0), (1, 1)]);
        // The list answers exactly, and a filter confirms nothing.
        assert_eq!(files.list.filter_candidates(&check), [(0, 0), (1, 1)]);
        assert_eq!(files.list.confirms(&hash(8)), Some(1));
        assert_eq!(files.list.confirms(&hash(500)), None);
        assert_eq!(files.filter.confirms(&hash(7)), None);

        // At 40 bits, no stranger gets through the filter alone.
        let strict = batch(5, tokens(0..40), vec![], FilterMode::UNCONFIRMED);
        assert_eq!(strict.filter.filter_candidates(&check), [(0, 0), (1, 1)]);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        for file in small_files() {
            let bytes = encode(&file);
            verify(&bytes, &public()).expect("the original verifies");
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[i] ^= 1 << bit;
                    assert!(
                        verify(&flipped, &public()).is_err(),
                        "{}: flipping bit {bit} of byte {i} went unnoticed",
                        file.name()
                    );
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for file in small_files() {
            let bytes = encode(&file);
            for len in 0..bytes.len() {
                let error = decode(&bytes[..len]).expect_err("a truncated file is refused");
                assert!(
                    matches!(error, TokenFileError::Truncated { len: l, .. } if l == len),
                    "{} at length {len}: {error}",
                    file.name()
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                decode(&longer),
                Err(TokenFileError::TrailingBytes {
                    at: bytes.len(),
                    count: 1
                })
            );
        }
    }

    #[test]
    fn truncation_errors_name_the_part() {
        let bytes = encode(&small_files()[0]);
        // magic 8, kind 1, area 1 + 2, seq, start, end 24, added count 4.
        let first_token = 8 + 1 + 3 + 24 + 4;
        let error = decode(&bytes[..first_token + 5]).expect_err("truncated");
        assert_eq!(
            error.to_string(),
            format!(
                "truncated: the file ends inside the added-token list at byte {} (the \
                 added-token list starts at byte {first_token} and needs 126 bytes)",
                first_token + 5
            )
        );
    }

    #[test]
    fn another_key_or_an_unknown_key_id_is_refused() {
        let file = &small_files()[1];
        let forged = file.encode(&OTHER, KEY_ID).expect("encodes");
        let error = verify(&forged, &public()).expect_err("wrong key");
        assert_eq!(
            error,
            TokenFileError::SignatureMismatch {
                key_id: KEY_ID.into()
            }
        );
        assert_eq!(
            error.to_string(),
            format!("signature does not verify with key id \"{KEY_ID}\"")
        );
        verify(&forged, &OTHER.verifying_key()).expect("verifies with its own key");

        let (old, new) = (public(), OTHER.verifying_key());
        let keys = [("tokens-old", &old), ("tokens-new", &new)];
        let pick = |id: &str| keys.iter().find(|(k, _)| *k == id).map(|(_, key)| *key);
        let by_new = file.encode(&OTHER, "tokens-new").expect("encodes");
        assert_eq!(verify_with(&by_new, pick).as_ref(), Ok(file));
        let mislabelled = file.encode(&SIGNER, "tokens-new").expect("encodes");
        assert!(matches!(
            verify_with(&mislabelled, pick),
            Err(TokenFileError::SignatureMismatch { .. })
        ));
        let unknown = file.encode(&SIGNER, "tokens-2099").expect("encodes");
        assert_eq!(
            verify_with(&unknown, pick),
            Err(TokenFileError::UnknownKeyId("tokens-2099".into()))
        );
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let [list, filter, bucket]: [TokenFile; 3] = small_files().try_into().expect("three");
        let with = |base: &TokenFile, f: &dyn Fn(&mut TokenFile)| {
            let mut file = base.clone();
            f(&mut file);
            file.encode(&SIGNER, KEY_ID)
        };
        assert_eq!(with(&list, &|f| f.seq = 0), Err(TokenFileError::SeqZero));
        assert_eq!(
            with(&list, &|f| f.start = f.end + 1),
            Err(TokenFileError::BadWindow {
                start: list.end + 1,
                end: list.end
            })
        );
        let unsorted = with(&list, &|f| {
            if let TokenBody::List { added, .. } = &mut f.body {
                added.swap(0, 1);
            }
        });
        assert_eq!(
            unsorted,
            Err(TokenFileError::NotAscending {
                part: TokenPart::Added,
                index: 1
            })
        );
        let both = with(&list, &|f| {
            if let TokenBody::List { added, removed } = &mut f.body {
                removed.push(added[5].hash);
                removed.sort();
            }
        });
        assert!(matches!(both, Err(TokenFileError::AddedAndRemoved(_))));
        let mixed = with(&filter, &|f| {
            if let TokenBody::Filter { levels, .. } = &mut f.body {
                let hashes = [[1u8; 16]];
                levels[1].filter =
                    GcsFilter::build(&hashes, [0; 16], GcsParams::for_false_positive_bits(21));
            }
        });
        assert_eq!(
            mixed,
            Err(TokenFileError::MixedFpBits {
                level: 1,
                bits: 21,
                first_level: 0,
                expected: 20
            })
        );
        let broken = with(&filter, &|f| {
            if let TokenBody::Filter { levels, .. } = &mut f.body {
                levels[0].filter.data.push(0xff);
            }
        });
        assert!(
            matches!(broken, Err(TokenFileError::BadFilter { level: 0, .. })),
            "{broken:?}"
        );
        let outside = with(&bucket, &|f| {
            if let TokenBody::Bucket { bucket, .. } = &mut f.body {
                *bucket ^= 1;
            }
        });
        assert!(
            matches!(outside, Err(TokenFileError::OutsideBucket { index: 0, .. })),
            "{outside:?}"
        );
        for key_id in ["", "has space", "ключ", &"k".repeat(65)] {
            assert!(
                matches!(
                    list.encode(&SIGNER, key_id),
                    Err(TokenFileError::BadKeyId(_))
                ),
                "{key_id:?}"
            );
        }
        list.encode(&SIGNER, &"k".repeat(64))
            .expect("64 bytes is fine");
    }

    #[test]
    fn batch_files_refuses_bad_modes_and_headers() {
        let build = |seq, start, end, mode, added: Vec<PublishedToken>| {
            batch_files(
                area(),
                seq,
                start,
                end,
                added,
                vec![],
                mode,
                &mut SeededRng(1),
            )
        };
        for (mode, error) in [
            (
                FilterMode {
                    fp_bits: 1,
                    bucket_bits: 0,
                },
                TokenFileError::FpBits(1),
            ),
            (
                FilterMode {
                    fp_bits: 63,
                    bucket_bits: 0,
                },
                TokenFileError::FpBits(63),
            ),
            (
                FilterMode {
                    fp_bits: 20,
                    bucket_bits: 13,
                },
                TokenFileError::BucketBits {
                    bits: 13,
                    accepted: "0..=12",
                },
            ),
        ] {
            assert_eq!(mode.validate(), Err(error));
            assert!(build(1, 0, 0, mode, vec![]).is_err_and(|e| e == mode.validate().unwrap_err()));
        }
        FilterMode::CONFIRMED.validate().expect("valid");
        FilterMode::UNCONFIRMED.validate().expect("valid");
        FilterMode {
            fp_bits: 62,
            bucket_bits: 12,
        }
        .validate()
        .expect("the extremes are valid");
        assert_eq!(
            build(0, 0, 0, FilterMode::CONFIRMED, vec![]),
            Err(TokenFileError::SeqZero)
        );
        assert_eq!(
            build(1, 5, 4, FilterMode::CONFIRMED, vec![]),
            Err(TokenFileError::BadWindow { start: 5, end: 4 })
        );
        // 2^62 · 4 overflows the filter's range: refused, not a panic.
        let wide = FilterMode {
            fp_bits: 62,
            bucket_bits: 0,
        };
        assert_eq!(
            build(
                1,
                0,
                0,
                wide,
                tokens(0..6)
                    .into_iter()
                    .map(|t| PublishedToken { level: 0, ..t })
                    .collect()
            ),
            Err(TokenFileError::FilterTooLarge {
                level: 0,
                count: 6,
                bits: 62
            })
        );
        build(1, 0, 0, wide, tokens(0..3)).expect("2 hashes at level 0 and 1 at level 1 fit");
    }

    /// Writes a file field by field with no checks, to build what the encoder refuses.
    struct Raw(Vec<u8>);

    impl Raw {
        fn header(kind: u8, seq: u64, start: u64, end: u64) -> Self {
            let mut raw = Raw(TOKEN_MAGIC.to_vec());
            raw.0.extend_from_slice(&[kind, 2, b'6', b'4']);
            raw.0.extend_from_slice(&seq.to_le_bytes());
            raw.0.extend_from_slice(&start.to_le_bytes());
            raw.0.extend_from_slice(&end.to_le_bytes());
            raw
        }

        fn list(added: &[PublishedToken], removed: &[TokenHash]) -> Self {
            Self::header(1, 5, 100, 200).tokens(added).hashes(removed)
        }

        fn tokens(mut self, tokens: &[PublishedToken]) -> Self {
            put_tokens(&mut self.0, "tokens", tokens).expect("few");
            self
        }

        fn hashes(mut self, hashes: &[TokenHash]) -> Self {
            put_hashes(&mut self.0, hashes).expect("few");
            self
        }

        fn filters(mut self, levels: &[(Level, Vec<u8>)]) -> Self {
            self.0.push(levels.len() as u8);
            for (level, bytes) in levels {
                self.0.push(*level);
                self.0
                    .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                self.0.extend_from_slice(bytes);
            }
            self
        }

        fn byte(mut self, byte: u8) -> Self {
            self.0.push(byte);
            self
        }

        fn u32(mut self, value: u32) -> Self {
            self.0.extend_from_slice(&value.to_le_bytes());
            self
        }

        fn finish(mut self) -> Vec<u8> {
            self.0.extend_from_slice(&[2, b'k', b'1']);
            let signature = SIGNER.sign(&self.0);
            self.0.push(signature.len() as u8);
            self.0.extend_from_slice(&signature);
            self.0
        }
    }

    fn gcs(bits: u8, items: &[&[u8]]) -> Vec<u8> {
        GcsFilter::build(items, [7; 16], GcsParams::for_false_positive_bits(bits)).to_bytes()
    }

    #[test]
    fn decode_refuses_every_structural_rule() {
        let t = |n: u32, level| token(n, level);
        let (mut a, mut b) = (t(1, 0), t(2, 0));
        if a.hash > b.hash {
            std::mem::swap(&mut a, &mut b);
        }
        let ok = Raw::list(&[a, b], &[hash(3)]).finish();
        verify(&ok, &public()).expect("the raw writer is right");
        let filter = |levels: &[(Level, Vec<u8>)], bucket_bits| {
            Raw::header(2, 5, 100, 200)
                .filters(levels)
                .hashes(&[])
                .byte(bucket_bits)
                .finish()
        };
        verify(
            &filter(&[(0, gcs(20, &[b"x"])), (4, gcs(20, &[b"y"]))], 4),
            &public(),
        )
        .expect("a filter file");
        let bucket = |bits: u8, bucket: u32, tokens: &[PublishedToken]| {
            Raw::header(3, 5, 100, 200)
                .byte(bits)
                .u32(bucket)
                .tokens(tokens)
                .finish()
        };
        let a_bucket = bucket_of(&a.hash, 4);
        verify(&bucket(4, a_bucket, &[a]), &public()).expect("a bucket file");

        let with_byte = |mut bytes: Vec<u8>, at: usize, value: u8| {
            bytes[at] = value;
            bytes
        };
        use TokenFileError as E;
        let cases: Vec<(&str, Vec<u8>, E)> = vec![
            (
                "kind 4",
                with_byte(ok.clone(), 8, 4),
                bad(
                    TokenPart::Kind,
                    8,
                    4u8,
                    "1 (list), 2 (filter) or 3 (bucket)",
                ),
            ),
            (
                "area length 0",
                with_byte(ok.clone(), 9, 0),
                bad(TokenPart::RegionLength, 9, 0u8, "1..=16"),
            ),
            (
                "area length 17",
                with_byte(ok.clone(), 9, 17),
                bad(TokenPart::RegionLength, 9, 17u8, "1..=16"),
            ),
            (
                "seq 0",
                Raw::header(1, 0, 1, 1).tokens(&[]).hashes(&[]).finish(),
                E::SeqZero,
            ),
            (
                "start after end",
                Raw::header(1, 1, 2, 1).tokens(&[]).hashes(&[]).finish(),
                E::BadWindow { start: 2, end: 1 },
            ),
            (
                "added out of order",
                Raw::list(&[b, a], &[]).finish(),
                E::NotAscending {
                    part: TokenPart::Added,
                    index: 1,
                },
            ),
            (
                "added twice",
                Raw::list(&[a, PublishedToken { level: 1, ..a }], &[]).finish(),
                E::NotAscending {
                    part: TokenPart::Added,
                    index: 1,
                },
            ),
            (
                "removed out of order",
                Raw::list(&[], &[TokenHash([2; 16]), TokenHash([1; 16])]).finish(),
                E::NotAscending {
                    part: TokenPart::Removed,
                    index: 1,
                },
            ),
            (
                "added and removed",
                Raw::list(&[a, b], &[b.hash]).finish(),
                E::AddedAndRemoved(b.hash),
            ),
            (
                "levels out of order",
                filter(&[(3, gcs(20, &[b"x"])), (1, gcs(20, &[b"y"]))], 0),
                E::NotAscending {
                    part: TokenPart::Levels,
                    index: 1,
                },
            ),
            (
                "a level twice",
                filter(&[(3, gcs(20, &[b"x"])), (3, gcs(20, &[b"y"]))], 0),
                E::NotAscending {
                    part: TokenPart::Levels,
                    index: 1,
                },
            ),
            (
                "mixed fp bits",
                filter(&[(0, gcs(20, &[b"x"])), (1, gcs(40, &[b"y"]))], 0),
                E::MixedFpBits {
                    level: 1,
                    bits: 40,
                    first_level: 0,
                    expected: 20,
                },
            ),
            (
                "BIP158 parameters",
                filter(
                    &[(
                        0,
                        GcsFilter::build(&[b"x"], [0; 16], GcsParams::BIP158).to_bytes(),
                    )],
                    0,
                ),
                E::FilterParams {
                    level: 0,
                    p: 19,
                    m: 784_931,
                },
            ),
            (
                "M = 2^20 with P = 20",
                filter(
                    &[(
                        0,
                        GcsFilter::build(&[b"x"], [0; 16], GcsParams { p: 20, m: 1 << 20 })
                            .to_bytes(),
                    )],
                    0,
                ),
                E::FilterParams {
                    level: 0,
                    p: 20,
                    m: 1 << 20,
                },
            ),
            (
                "fp bits 1",
                filter(
                    &[(
                        0,
                        GcsFilter::build(&[b"x"], [0; 16], GcsParams { p: 1, m: 2 }).to_bytes(),
                    )],
                    0,
                ),
                E::FilterParams {
                    level: 0,
                    p: 1,
                    m: 2,
                },
            ),
            (
                "an empty filter",
                filter(&[(2, gcs(20, &[]))], 0),
                E::EmptyFilter { level: 2 },
            ),
            (
                "a broken filter",
                filter(&[(2, gcs(20, &[b"x"])[..37].to_vec())], 0),
                E::BadFilter {
                    level: 2,
                    source: GcsError::TooManyElements {
                        n: 1,
                        data_len: 0,
                        max: 0,
                    },
                },
            ),
            (
                "filter bucket bits 13",
                filter(&[], 13),
                E::BucketBits {
                    bits: 13,
                    accepted: "0..=12 in a filter file",
                },
            ),
            (
                "bucket bits 0",
                bucket(0, 0, &[]),
                E::BucketBits {
                    bits: 0,
                    accepted: "1..=12 in a bucket file",
                },
            ),
            (
                "bucket bits 13",
                bucket(13, 0, &[]),
                E::BucketBits {
                    bits: 13,
                    accepted: "1..=12 in a bucket file",
                },
            ),
            (
                "bucket 16 of 4 bits",
                bucket(4, 16, &[]),
                E::BucketOutOfRange {
                    bucket: 16,
                    bits: 4,
                },
            ),
            (
                "token outside its bucket",
                bucket(4, a_bucket ^ 1, &[a]),
                E::OutsideBucket {
                    index: 0,
                    hash: a.hash,
                    bucket: a_bucket ^ 1,
                    actual: a_bucket,
                },
            ),
            (
                "bucket tokens out of order",
                bucket(1, 0, &[token_in(0, 2), token_in(0, 1)]),
                E::NotAscending {
                    part: TokenPart::Tokens,
                    index: 1,
                },
            ),
            (
                "key id length 0",
                // An empty list's header and counts are 44 bytes.
                Raw::list(&[], &[]).byte(0).finish(),
                bad(TokenPart::KeyIdLength, 44, 0u8, "1..=64"),
            ),
            (
                "key id with a space",
                Raw::list(&[], &[])
                    .0
                    .into_iter()
                    .chain([2, b'k', b' ', 1, 1])
                    .collect(),
                E::BadKeyId(
                    "a key id is printable ASCII without spaces (0x21..=0x7E), got \"k \"".into(),
                ),
            ),
            (
                "signature length 0",
                Raw::list(&[], &[])
                    .0
                    .into_iter()
                    .chain([2, b'k', b'1', 0])
                    .collect(),
                bad(TokenPart::SignatureLength, 47, 0u8, "at least 1"),
            ),
        ];
        for (name, bytes, expected) in cases {
            let error = decode(&bytes).expect_err(name);
            assert_eq!(error, expected, "{name}: {error}");
        }
        let region = with_byte(ok.clone(), 11, b' ');
        assert!(matches!(decode(&region), Err(E::BadRegion { at: 10, .. })));
    }

    /// A hash in bucket `bucket` of 1 bit, told apart by `n`.
    fn token_in(bucket: u8, n: u8) -> PublishedToken {
        let mut bytes = [n; 16];
        bytes[0] = bucket << 7 | n;
        PublishedToken {
            hash: TokenHash(bytes),
            day: DAY,
            level: 0,
        }
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let cases = [
            (
                Raw::header(1, 1, 0, 0).u32(u32::MAX),
                TokenPart::Added,
                u32::MAX as usize * 21,
            ),
            (
                Raw::header(1, 1, 0, 0).u32(0).u32(u32::MAX),
                TokenPart::Removed,
                u32::MAX as usize * 16,
            ),
            (
                Raw::header(2, 1, 0, 0).byte(1).byte(0).u32(u32::MAX),
                TokenPart::Filter(0),
                u32::MAX as usize,
            ),
            (
                Raw::header(3, 1, 0, 0).byte(4).u32(0).u32(u32::MAX),
                TokenPart::Tokens,
                u32::MAX as usize * 21,
            ),
        ];
        for (raw, part, needed) in cases {
            let error = decode(&raw.0).expect_err("truncated");
            assert!(
                matches!(error, TokenFileError::Truncated { part: p, needed: n, .. } if p == part && n == needed),
                "{part}: {error}"
            );
        }
    }

    #[test]
    fn magic_and_version_errors() {
        let mut bytes = encode(&small_files()[0]);
        bytes[5] = 2;
        assert_eq!(decode(&bytes), Err(TokenFileError::UnsupportedVersion(2)));
        assert_eq!(
            decode(b"CFEED\x01\r\n")
                .expect_err("a feed file")
                .to_string(),
            "bad magic: not a Confidant token file (version 1)"
        );
        assert_eq!(decode(b"CTOKN\x01\n"), Err(TokenFileError::BadMagic));
        assert!(matches!(
            decode(b"CTOKN"),
            Err(TokenFileError::Truncated {
                part: TokenPart::Magic,
                ..
            })
        ));
    }

    #[test]
    fn file_names_round_trip_and_only_canonical_ones_parse() {
        assert_eq!(file_name(TokenKind::List, 42, None), "list-0000000042.ctok");
        assert_eq!(
            file_name(TokenKind::Filter, 7, None),
            "filter-0000000007.ctok"
        );
        assert_eq!(
            file_name(TokenKind::Bucket, 7, Some(10)),
            "bucket-0000000007-000a.ctok"
        );
        for (kind, seq, bucket) in [
            (TokenKind::List, 1, None),
            (TokenKind::Filter, 9_999_999_999, None),
            (TokenKind::List, 12_345_678_901, None),
            (TokenKind::Bucket, 3, Some(0)),
            (TokenKind::Bucket, 3, Some(4095)),
        ] {
            let name = file_name(kind, seq, bucket);
            assert_eq!(parse_file_name(&name), Some((kind, seq, bucket)), "{name}");
        }
        for bad in [
            "list-0000000000.ctok",
            "list-42.ctok",
            "list-00000000042.ctok",
            "list-+000000042.ctok",
            "list-0000000042.cfeed",
            "filter-0000000042-0001.ctok",
            "bucket-0000000042.ctok",
            "bucket-0000000042-000A.ctok",
            "bucket-0000000042-00a.ctok",
            "bucket-0000000042-1000.ctok",
            "bucket-0000000042-+00a.ctok",
            "delta-0000000042.ctok",
            "../list-0000000042.ctok",
            "",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    #[should_panic(expected = "a bucket file name with bucket None")]
    fn a_bucket_file_name_needs_a_bucket() {
        file_name(TokenKind::Bucket, 1, None);
    }

    #[test]
    fn index_json() {
        let files = batch(1, tokens(0..4), vec![], FilterMode::CONFIRMED);
        let (list, filter) = (encode(&files.list), encode(&files.filter));
        let index = TokenIndex::new(
            area(),
            FilterMode::CONFIRMED,
            vec![BatchEntry::describe(
                &list,
                &files.list,
                &filter,
                &files.filter,
            )],
        );
        let json = serde_json::to_value(&index).expect("serialises");
        let expected = serde_json::json!({
            "format": 1,
            "area": "64",
            "latestSeq": 1,
            "fpBits": 20,
            "bucketBits": 6,
            "batches": [{
                "seq": 1,
                "start": files.list.start,
                "end": files.list.end,
                "list": {"file": "list-0000000001.ctok", "sha256": hex::encode(feed::file_hash(&list)), "bytes": list.len()},
                "filter": {"file": "filter-0000000001.ctok", "sha256": hex::encode(feed::file_hash(&filter)), "bytes": filter.len()},
            }],
        });
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::from_value::<TokenIndex>(json).expect("parses"),
            index
        );
        assert_eq!(
            TokenIndex::new(area(), FilterMode::UNCONFIRMED, vec![]).latest_seq,
            0
        );
    }

    #[test]
    fn sizes_per_token_stay_within_the_documented_bounds() {
        let n = 10_000u32;
        let files = batch(
            1,
            tokens(0..n)
                .into_iter()
                .map(|t| PublishedToken { level: 0, ..t })
                .collect(),
            vec![],
            FilterMode::CONFIRMED,
        );
        let list = encode(&files.list).len() as f64;
        let filter = encode(&files.filter).len() as f64;
        let strict = batch(
            1,
            tokens(0..n)
                .into_iter()
                .map(|t| PublishedToken { level: 0, ..t })
                .collect(),
            vec![],
            FilterMode::UNCONFIRMED,
        );
        let strict = encode(&strict.filter).len() as f64;
        let n = f64::from(n);
        assert!(list <= 21.0 * n + 200.0, "list: {list} bytes");
        assert!(
            filter <= 2.8 * n + 250.0,
            "filter at 20 bits: {filter} bytes"
        );
        assert!(
            strict <= 5.3 * n + 250.0,
            "filter at 40 bits: {strict} bytes"
        );
    }

    fn arb_batch() -> impl Strategy<Value = (Vec<PublishedToken>, Vec<TokenHash>, FilterMode, u64)>
    {
        (
            prop::collection::vec((any::<[u8; 16]>(), 0u32..30_000, 0u8..4), 0..60),
            prop::collection::vec(any::<[u8; 16]>(), 0..20),
            2u8..=40,
            0u8..=6,
            1u64..1_000,
        )
            .prop_map(|(added, removed, fp_bits, bucket_bits, seq)| {
                let added = added
                    .into_iter()
                    .map(|(hash, day, level)| PublishedToken {
                        hash: TokenHash(hash),
                        day,
                        level,
                    })
                    .collect();
                let removed = removed.into_iter().map(TokenHash).collect();
                (
                    added,
                    removed,
                    FilterMode {
                        fp_bits,
                        bucket_bits,
                    },
                    seq,
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn batches_round_trip_and_find_their_own_tokens((added, removed, mode, seq) in arb_batch()) {
            let files = batch(seq, added.clone(), removed, mode);
            for file in [&files.list, &files.filter].into_iter().chain(&files.buckets) {
                let bytes = encode(file);
                let back = verify(&bytes, &public()).expect("verifies");
                prop_assert_eq!(&back, file);
                prop_assert_eq!(encode(&back), bytes);
            }
            // No false negatives: every published hash is a candidate, and its bucket (or
            // the list) confirms it at its level.
            let TokenBody::List { added: published, .. } = &files.list.body else { unreachable!() };
            let check: Vec<TokenHash> = published.iter().map(|t| t.hash).collect();
            let candidates = files.filter.filter_candidates(&check);
            for (i, token) in published.iter().enumerate() {
                prop_assert!(candidates.contains(&(i, token.level)));
                prop_assert_eq!(files.list.confirms(&token.hash), Some(token.level));
                if mode.bucket_bits > 0 {
                    let bucket = &files.buckets[bucket_of(&token.hash, mode.bucket_bits) as usize];
                    prop_assert_eq!(bucket.confirms(&token.hash), Some(token.level));
                }
            }
            prop_assert_eq!(files.list.filter_candidates(&check).len(), published.len());
        }

        #[test]
        fn input_order_does_not_change_the_bytes(
            (batch_in, added, removed) in arb_batch().prop_flat_map(|b| {
                let added = Just(b.0.clone()).prop_shuffle();
                let removed = Just(b.1.clone()).prop_shuffle();
                (Just(b), added, removed)
            })
        ) {
            let (original_added, original_removed, mode, seq) = batch_in;
            // Shuffling may reorder tokens with equal hashes; dedup picks the same one anyway.
            let a = batch(seq, original_added, original_removed, mode);
            let b = batch(seq, added, removed, mode);
            prop_assert_eq!(encode(&a.list), encode(&b.list));
            prop_assert_eq!(encode(&a.filter), encode(&b.filter));
            prop_assert_eq!(a.buckets, b.buckets);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), kind in 1u8..=3) {
            let _ = decode(&bytes);
            let mut framed = TOKEN_MAGIC.to_vec();
            framed.push(kind);
            framed.extend_from_slice(&[2, b'6', b'4']);
            framed.extend_from_slice(&bytes);
            let _ = verify(&framed, &public());
        }
    }
}
