//! The portable log file: the event log of one store, written so that another store (SQLite or
//! PostgreSQL, this version of Confidant or a later one) can take it in. `docs/logfile.md`
//! specifies it byte for byte.
//!
//! A header names the format, its version, the event version and the store kind the log came
//! from. Each event follows as one frame: `[u32 LE length][u32 LE CRC-32][payload]`, the
//! payload being the event's JSON exactly as the log holds it. A trailer frame closes the file
//! with the event count and a SHA-256 over every event frame, so a file cut at a frame boundary
//! is refused as surely as one cut mid-frame.
//!
//! No I/O here: [`Encoder`] appends bytes to a buffer the caller writes out, and [`Decoder`]
//! takes the input in slices of any size and hands back events as they complete. Memory stays
//! bounded by one frame ([`MAX_PAYLOAD`]) plus the caller's slices. Every refusal is a typed
//! [`LogFileError`] carrying the byte offset where the damage is.

use sha2::{Digest as _, Sha256};

use crate::event::{EVENT_VERSION, Event};

/// The file's first eight bytes: not text (0x89), names the format, and ends in a line feed
/// so that a transfer that mangles line endings is caught at once.
pub const MAGIC: [u8; 8] = *b"\x89CNFLOG\n";
/// The version of this file format (the framing, not the events).
pub const FORMAT_VERSION: u16 = 1;
/// The largest event payload a frame may carry.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// The longest store kind name in a header.
pub const MAX_STORE_KIND: usize = 32;
/// The length field that marks the trailer frame.
const TRAILER_MARK: u32 = u32::MAX;
/// The trailer's body: event count (u64 LE) and SHA-256.
const TRAILER_BODY: usize = 8 + 32;
/// Magic, format version, event version, store kind length.
const HEADER_FIXED: usize = 8 + 2 + 4 + 1;
const FRAME_HEAD: usize = 8;

/// What the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`EVENT_VERSION`] of the build that wrote the file.
    pub event_version: u32,
    /// Where the log came from, e.g. `sqlite` or `postgres`: 1 to [`MAX_STORE_KIND`] bytes
    /// of `[a-z0-9_-]`.
    pub store_kind: String,
}

/// One event of the log: its JSON exactly as stored, and what it decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The event's JSON as the log holds it (not re-encoded: an import stores these bytes).
    pub payload: String,
    pub event: Event,
}

impl LogRecord {
    /// A record for a new event, encoded now.
    pub fn new(event: Event) -> Self {
        Self {
            payload: event.encode(),
            event,
        }
    }
}

/// What the trailer of a complete file confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    /// SHA-256 over every event frame, as the trailer holds it.
    pub sha256: [u8; 32],
    /// The file's length in bytes.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "store kind {0:?} is not 1 to {MAX_STORE_KIND} characters of lower-case letters, digits, '_' and '-'"
    )]
    BadStoreKind(String),
    #[error("event #{index} is {length} bytes long; a log file frame holds at most {MAX_PAYLOAD}")]
    PayloadTooLarge { index: u64, length: usize },
}

/// Why a file was refused; `offset` is the byte where the damage is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogFileError {
    #[error("byte {offset}: not a Confidant log file (bad magic number)")]
    BadMagic { offset: u64 },
    #[error(
        "byte {offset}: log file format version {version} is not one this build reads ({FORMAT_VERSION})"
    )]
    UnknownFormatVersion { offset: u64, version: u16 },
    #[error(
        "byte {offset}: the log was written with event version {version}; this build reads 1 to {EVENT_VERSION}"
    )]
    UnknownEventVersion { offset: u64, version: u32 },
    #[error("byte {offset}: bad header: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error("byte {offset}: checksum mismatch in the header that starts here")]
    HeaderChecksum { offset: u64 },
    #[error("byte {offset}: the file ends at byte {end}, inside the {part} that starts here")]
    Truncated {
        offset: u64,
        end: u64,
        part: &'static str,
    },
    #[error("byte {offset}: frame length {length} exceeds the limit of {MAX_PAYLOAD} bytes")]
    FrameTooLarge { offset: u64, length: u32 },
    #[error(
        "byte {offset}: checksum mismatch in the {part} that starts here (stored {stored:08x}, computed {computed:08x})"
    )]
    ChecksumMismatch {
        offset: u64,
        part: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("byte {offset}: event #{index} cannot be read: {reason}")]
    BadEvent {
        offset: u64,
        index: u64,
        reason: String,
    },
    #[error(
        "byte {offset}: the file ends after {events} events without its trailer (truncated at a frame boundary)"
    )]
    MissingTrailer { offset: u64, events: u64 },
    #[error("byte {offset}: the trailer counts {expected} events, the file holds {actual}")]
    CountMismatch {
        offset: u64,
        expected: u64,
        actual: u64,
    },
    #[error("byte {offset}: the trailer's SHA-256 does not match the events")]
    HashMismatch { offset: u64 },
    #[error("byte {offset}: data after the trailer")]
    DataAfterTrailer { offset: u64 },
}

impl LogFileError {
    /// The byte offset where the damage is.
    pub fn offset(&self) -> u64 {
        match self {
            Self::BadMagic { offset }
            | Self::UnknownFormatVersion { offset, .. }
            | Self::UnknownEventVersion { offset, .. }
            | Self::BadHeader { offset, .. }
            | Self::HeaderChecksum { offset }
            | Self::Truncated { offset, .. }
            | Self::FrameTooLarge { offset, .. }
            | Self::ChecksumMismatch { offset, .. }
            | Self::BadEvent { offset, .. }
            | Self::MissingTrailer { offset, .. }
            | Self::CountMismatch { offset, .. }
            | Self::HashMismatch { offset }
            | Self::DataAfterTrailer { offset } => *offset,
        }
    }
}

fn valid_store_kind(kind: &str) -> bool {
    (1..=MAX_STORE_KIND).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Writes a log file: [`Encoder::header`] once, [`Encoder::event`] per event in log order,
/// then [`Encoder::finish`] for the trailer. Each call appends to the caller's buffer.
pub struct Encoder {
    store_kind: String,
    events: u64,
    hasher: Sha256,
}

impl Encoder {
    pub fn new(store_kind: &str) -> Result<Self, EncodeError> {
        if !valid_store_kind(store_kind) {
            return Err(EncodeError::BadStoreKind(store_kind.to_owned()));
        }
        Ok(Self {
            store_kind: store_kind.to_owned(),
            events: 0,
            hasher: Sha256::new(),
        })
    }

    pub fn header(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&EVENT_VERSION.to_le_bytes());
        out.push(self.store_kind.len() as u8);
        out.extend_from_slice(self.store_kind.as_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// One event frame; `payload` is the event's JSON as the log holds it.
    pub fn event(&mut self, payload: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_PAYLOAD)
            .ok_or(EncodeError::PayloadTooLarge {
                index: self.events,
                length: payload.len(),
            })?;
        let start = out.len();
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload.as_bytes()).to_le_bytes());
        out.extend_from_slice(payload.as_bytes());
        self.hasher.update(&out[start..]);
        self.events += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trailer frame; the file is complete after it.
    pub fn finish(self, out: &mut Vec<u8>) {
        let mut body = [0u8; TRAILER_BODY];
        body[..8].copy_from_slice(&self.events.to_le_bytes());
        body[8..].copy_from_slice(&self.hasher.finalize());
        out.extend_from_slice(&TRAILER_MARK.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    Frames,
    Done,
}

/// Reads a log file incrementally: [`Decoder::push`] input as it arrives, take events with
/// [`Decoder::next_record`] until it returns `None`, and call [`Decoder::finish`] at the end of
/// the input. Nothing is trusted before its checksum is checked, and the file is complete only
/// when `finish` says so: an importer must not commit before.
pub struct Decoder {
    /// Input not yet consumed starts at `buffer[start]`, which is byte `offset` of the file.
    buffer: Vec<u8>,
    start: usize,
    offset: u64,
    stage: Stage,
    header: Option<Header>,
    events: u64,
    hasher: Sha256,
    summary: Option<Summary>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"))
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            offset: 0,
            stage: Stage::Header,
            header: None,
            events: 0,
            hasher: Sha256::new(),
            summary: None,
        }
    }

    /// The header, once it has been read and checked.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Events decoded so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes consumed so far (the offset of the next unread byte).
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Appends input. Input after a complete trailer is refused.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), LogFileError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.stage == Stage::Done {
            return Err(LogFileError::DataAfterTrailer {
                offset: self.offset + self.pending() as u64,
            });
        }
        // Drop what was consumed before growing, so the buffer holds at most one frame and
        // the latest slice.
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }

    fn available(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        self.offset += count as u64;
    }

    /// The next event, `Ok(None)` when more input is needed (or the trailer was read).
    pub fn next_record(&mut self) -> Result<Option<LogRecord>, LogFileError> {
        loop {
            match self.stage {
                Stage::Header => {
                    if !self.read_header()? {
                        return Ok(None);
                    }
                }
                Stage::Frames => return self.read_frame(),
                Stage::Done => {
                    if self.pending() > 0 {
                        return Err(LogFileError::DataAfterTrailer {
                            offset: self.offset,
                        });
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Reads the header if it is all there; checks each part as soon as it has arrived.
    fn read_header(&mut self) -> Result<bool, LogFileError> {
        let data = self.available();
        let magic_seen = data.len().min(MAGIC.len());
        if data[..magic_seen] != MAGIC[..magic_seen] {
            return Err(LogFileError::BadMagic { offset: 0 });
        }
        if data.len() >= 10 {
            let version = u16::from_le_bytes([data[8], data[9]]);
            if version != FORMAT_VERSION {
                return Err(LogFileError::UnknownFormatVersion { offset: 8, version });
            }
        }
        if data.len() < HEADER_FIXED {
            return Ok(false);
        }
        let kind_length = usize::from(data[14]);
        if kind_length == 0 || kind_length > MAX_STORE_KIND {
            return Err(LogFileError::BadHeader {
                offset: 14,
                reason: format!(
                    "store kind length {kind_length} is not 1 to {MAX_STORE_KIND} bytes"
                ),
            });
        }
        let crc_at = HEADER_FIXED + kind_length;
        if data.len() < crc_at + 4 {
            return Ok(false);
        }
        let computed = crc32fast::hash(&data[..crc_at]);
        if le32(&data[crc_at..]) != computed {
            return Err(LogFileError::HeaderChecksum { offset: 0 });
        }
        let event_version = le32(&data[10..]);
        if event_version == 0 || event_version > EVENT_VERSION {
            return Err(LogFileError::UnknownEventVersion {
                offset: 10,
                version: event_version,
            });
        }
        let kind = std::str::from_utf8(&data[HEADER_FIXED..crc_at])
            .ok()
            .filter(|k| valid_store_kind(k))
            .ok_or_else(|| LogFileError::BadHeader {
                offset: HEADER_FIXED as u64,
                reason: "the store kind is not lower-case letters, digits, '_' and '-'".into(),
            })?
            .to_owned();
        self.header = Some(Header {
            event_version,
            store_kind: kind,
        });
        self.consume(crc_at + 4);
        self.stage = Stage::Frames;
        Ok(true)
    }

    fn read_frame(&mut self) -> Result<Option<LogRecord>, LogFileError> {
        let frame_at = self.offset;
        // Field borrows, so the hasher can be updated while the frame is borrowed.
        let data = &self.buffer[self.start..];
        if data.len() < 4 {
            return Ok(None);
        }
        let length = le32(data);
        if length == TRAILER_MARK {
            if data.len() < FRAME_HEAD + TRAILER_BODY {
                return Ok(None);
            }
            self.read_trailer(frame_at)?;
            return self.next_record();
        }
        if length > MAX_PAYLOAD {
            return Err(LogFileError::FrameTooLarge {
                offset: frame_at,
                length,
            });
        }
        let total = FRAME_HEAD + length as usize;
        if data.len() < total {
            return Ok(None);
        }
        let stored = le32(&data[4..]);
        let payload = &data[FRAME_HEAD..total];
        let computed = crc32fast::hash(payload);
        if stored != computed {
            return Err(LogFileError::ChecksumMismatch {
                offset: frame_at,
                part: "event frame",
                stored,
                computed,
            });
        }
        let index = self.events;
        let bad = |reason: String| LogFileError::BadEvent {
            offset: frame_at,
            index,
            reason,
        };
        let text = std::str::from_utf8(payload).map_err(|e| bad(e.to_string()))?;
        let event = Event::decode(text).map_err(|e| bad(e.to_string()))?;
        let payload = text.to_owned();
        self.hasher.update(&data[..total]);
        self.events += 1;
        self.consume(total);
        Ok(Some(LogRecord { payload, event }))
    }

    fn read_trailer(&mut self, frame_at: u64) -> Result<(), LogFileError> {
        let data = self.available();
        let body: [u8; TRAILER_BODY] = data[FRAME_HEAD..FRAME_HEAD + TRAILER_BODY]
            .try_into()
            .expect("trailer body");
        let stored = le32(&data[4..]);
        let computed = crc32fast::hash(&body);
        if stored != computed {
            return Err(LogFileError::ChecksumMismatch {
                offset: frame_at,
                part: "trailer",
                stored,
                computed,
            });
        }
        let expected = u64::from_le_bytes(body[..8].try_into().expect("eight bytes"));
        if expected != self.events {
            return Err(LogFileError::CountMismatch {
                offset: frame_at,
                expected,
                actual: self.events,
            });
        }
        let sha256: [u8; 32] = body[8..].try_into().expect("32 bytes");
        let hashed: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if sha256 != hashed {
            return Err(LogFileError::HashMismatch { offset: frame_at });
        }
        self.consume(FRAME_HEAD + TRAILER_BODY);
        self.stage = Stage::Done;
        self.summary = Some(Summary {
            events: self.events,
            sha256,
            bytes: self.offset,
        });
        Ok(())
    }

    /// At the end of the input: the file is complete (header, events, trailer and nothing
    /// else), or the error says where it is not. Call after `next_record` returned `None`.
    pub fn finish(&mut self) -> Result<Summary, LogFileError> {
        // Anything still decodable is decoded first, so its errors take precedence.
        if self.stage != Stage::Done && self.next_record()?.is_some() {
            return Err(LogFileError::BadEvent {
                offset: self.offset,
                index: self.events,
                reason: "finish() was called before every event was taken".into(),
            });
        }
        let end = self.offset + self.pending() as u64;
        match self.stage {
            Stage::Header => Err(LogFileError::Truncated {
                offset: 0,
                end,
                part: "header",
            }),
            Stage::Frames if self.pending() == 0 => Err(LogFileError::MissingTrailer {
                offset: end,
                events: self.events,
            }),
            Stage::Frames => {
                let trailer = self.pending() >= 4 && le32(self.available()) == TRAILER_MARK;
                Err(LogFileError::Truncated {
                    offset: self.offset,
                    end,
                    part: if trailer { "trailer" } else { "event frame" },
                })
            }
            Stage::Done if self.pending() > 0 => Err(LogFileError::DataAfterTrailer {
                offset: self.offset,
            }),
            Stage::Done => Ok(self.summary.clone().expect("set with Done")),
        }
    }
}

/// Encodes a whole log in memory (tests and small logs).
pub fn encode_all<'a>(
    store_kind: &str,
    payloads: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<u8>, EncodeError> {
    let mut encoder = Encoder::new(store_kind)?;
    let mut out = Vec::new();
    encoder.header(&mut out);
    for payload in payloads {
        encoder.event(payload, &mut out)?;
    }
    encoder.finish(&mut out);
    Ok(out)
}

/// Decodes a whole file in memory (tests and small logs).
pub fn decode_all(bytes: &[u8]) -> Result<(Header, Vec<LogRecord>, Summary), LogFileError> {
    let mut decoder = Decoder::new();
    decoder.push(bytes)?;
    let mut records = Vec::new();
    while let Some(record) = decoder.next_record()? {
        records.push(record);
    }
    let summary = decoder.finish()?;
    let header = decoder
        .header()
        .cloned()
        .expect("a complete file has a header");
    Ok((header, records, summary))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codes::CodeFormat;
    use crate::ids::{ClaimId, Digest, KeyData, ProviderId, Region, TrackingId};
    use crate::state::{Credential, StoredKey};

    fn events() -> Vec<Event> {
        let region = Region::try_from("DE".to_owned()).expect("region");
        vec![
            Event::ProviderRegistered {
                provider: ProviderId([1; 8]),
                name: "Lab ü".into(),
                region: region.clone(),
                token_hash: Digest([2; 32]),
            },
            Event::CodeIssued {
                code_hash: Digest([3; 32]),
                provider: ProviderId([1; 8]),
                format: CodeFormat::Long,
                expires_at: 1_800_000_000,
            },
            Event::CodeRedeemed {
                code_hash: Digest([3; 32]),
                claim: ClaimId([4; 16]),
                provider: ProviderId([1; 8]),
                region: region.clone(),
                expires_at: 1_800_003_600,
                key_budget: 28,
                credential: Credential::UploadToken {
                    token_hash: Digest([5; 32]),
                },
            },
            Event::KeysSubmitted {
                submission: TrackingId([6; 16]),
                claim: ClaimId([4; 16]),
                provider: ProviderId([1; 8]),
                region,
                hour: 500_000,
                keys: vec![StoredKey {
                    key_data: KeyData([7; 16]),
                    rolling_start: 2_999_808,
                    rolling_period: 144,
                    transmission_risk: 3,
                }],
                skipped: 0,
                dropped: 0,
            },
            Event::RetentionApplied {
                now: 1_800_100_000,
                keys_before_hour: 499_000,
                files_ending_by: 1_700_000_000,
            },
        ]
    }

    fn sample() -> Vec<u8> {
        let payloads: Vec<String> = events().iter().map(Event::encode).collect();
        encode_all("sqlite", payloads.iter().map(String::as_str)).expect("encodes")
    }

    /// Decodes `bytes` fed in slices of `chunk` bytes.
    fn decode_chunked(bytes: &[u8], chunk: usize) -> Result<Vec<LogRecord>, LogFileError> {
        let mut decoder = Decoder::new();
        let mut records = Vec::new();
        for slice in bytes.chunks(chunk.max(1)) {
            decoder.push(slice)?;
            while let Some(record) = decoder.next_record()? {
                records.push(record);
            }
        }
        decoder.finish()?;
        Ok(records)
    }

    #[test]
    fn round_trips_verbatim_in_any_slicing() {
        let bytes = sample();
        let (header, records, summary) = decode_all(&bytes).expect("decodes");
        assert_eq!(
            header,
            Header {
                event_version: EVENT_VERSION,
                store_kind: "sqlite".into()
            }
        );
        assert_eq!(summary.events, 5);
        assert_eq!(summary.bytes, bytes.len() as u64);
        let expected: Vec<LogRecord> = events().into_iter().map(LogRecord::new).collect();
        assert_eq!(records, expected);
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(decode_chunked(&bytes, chunk).expect("decodes"), expected);
        }
    }

    #[test]
    fn payloads_are_kept_byte_for_byte() {
        // An older encoding of the same event (without a defaulted field, other key order)
        // comes back exactly as written, not re-encoded.
        let payload = r#"{"type":"provider_suspended","v":1,"provider":"0102030405060708"}"#;
        let bytes = encode_all("postgres", [payload]).expect("encodes");
        let (header, records, _) = decode_all(&bytes).expect("decodes");
        assert_eq!(header.store_kind, "postgres");
        assert_eq!(records[0].payload, payload);
    }

    #[test]
    fn layout_is_as_documented() {
        // The CRC-32 of docs/logfile.md: zlib's, check value 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            encode_all("postgres", std::iter::empty())
                .expect("encodes")
                .len(),
            75
        );
        let bytes = encode_all("pg", std::iter::empty()).expect("encodes");
        // Header: magic, version 1, event version, kind "pg", CRC; trailer: mark, CRC, count
        // 0, SHA-256 of nothing.
        assert_eq!(bytes.len(), 15 + 2 + 4 + 48);
        assert_eq!(&bytes[..8], b"\x89CNFLOG\n");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(&bytes[10..14], &EVENT_VERSION.to_le_bytes());
        assert_eq!(&bytes[14..17], b"\x02pg");
        assert_eq!(&bytes[17..21], &crc32fast::hash(&bytes[..17]).to_le_bytes());
        assert_eq!(&bytes[21..25], &[0xff; 4]);
        assert_eq!(&bytes[29..37], &[0; 8]);
        assert_eq!(
            hex::encode(&bytes[37..]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let framed = encode_all("pg", ["{}"]).expect("encodes");
        assert_eq!(&framed[21..25], &[2, 0, 0, 0]);
        assert_eq!(&framed[25..29], &crc32fast::hash(b"{}").to_le_bytes());
        assert_eq!(&framed[29..31], b"{}");
        assert!(matches!(
            decode_all(&framed),
            Err(LogFileError::BadEvent { offset: 21, .. })
        ));
    }

    #[test]
    fn every_truncation_is_refused_with_its_offset() {
        let bytes = sample();
        for length in 0..bytes.len() {
            let error = decode_all(&bytes[..length]).expect_err("truncated");
            assert!(
                error.offset() <= length as u64,
                "truncated to {length}: {error}"
            );
            assert!(
                matches!(
                    error,
                    LogFileError::Truncated { .. } | LogFileError::MissingTrailer { .. }
                ),
                "truncated to {length}: {error}"
            );
        }
    }

    #[test]
    fn every_single_byte_corruption_is_refused() {
        let bytes = sample();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                let error = decode_all(&damaged).expect_err("damaged");
                assert!(
                    error.offset() <= at as u64,
                    "byte {at} ^ {flip:02x}: refused at {}: {error}",
                    error.offset()
                );
            }
        }
    }

    #[test]
    fn specific_damage_is_named() {
        let bytes = sample();
        let mut other = bytes.clone();
        other[8] = 2;
        assert_eq!(
            decode_all(&other),
            Err(LogFileError::UnknownFormatVersion {
                offset: 8,
                version: 2
            })
        );
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(
            decode_all(&extra),
            Err(LogFileError::DataAfterTrailer {
                offset: bytes.len() as u64
            })
        );
        assert!(matches!(
            decode_all(b"PK\x03\x04 not a log"),
            Err(LogFileError::BadMagic { offset: 0 })
        ));
        // Dropping a whole frame keeps the framing intact: the trailer's count catches it.
        let header_end = 15 + "sqlite".len() + 4;
        let first = header_end + 8 + le32(&bytes[header_end..]) as usize;
        let mut dropped = bytes[..header_end].to_vec();
        dropped.extend_from_slice(&bytes[first..]);
        assert!(matches!(
            decode_all(&dropped),
            Err(LogFileError::CountMismatch {
                expected: 5,
                actual: 4,
                ..
            })
        ));
        // A newer event version in the header is refused before any event is read.
        let mut newer = bytes[..header_end].to_vec();
        newer[10..14].copy_from_slice(&(EVENT_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&newer[..header_end - 4]);
        newer[header_end - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_all(&newer),
            Err(LogFileError::UnknownEventVersion { offset: 10, .. })
        ));
    }

    #[test]
    fn encoder_refuses_bad_store_kinds() {
        for kind in ["", "SQLite", "a b", &"x".repeat(33)] {
            assert!(Encoder::new(kind).is_err(), "{kind:?}");
        }
    }

    proptest! {
        #[test]
        fn truncation_anywhere_is_refused(cut in any::<prop::sample::Index>(), chunk in 1usize..300) {
            let bytes = sample();
            let length = cut.index(bytes.len());
            let error = decode_chunked(&bytes[..length], chunk).expect_err("truncated");
            prop_assert!(error.offset() <= length as u64);
        }

        #[test]
        fn single_byte_corruption_is_refused(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            chunk in 1usize..300,
        ) {
            let mut bytes = sample();
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            let error = decode_chunked(&bytes, chunk).expect_err("damaged");
            prop_assert!(error.offset() <= at as u64, "{}", error);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(&bytes);
            let mut prefixed = MAGIC.to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = decode_all(&prefixed);
        }
    }
}
