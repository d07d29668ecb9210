//! Sealed storage: the positive users' contact logs at rest, encrypted under a sealing key
//! that exists only inside the matcher, in an append-only file of framed records.
//!
//! Each record is `length (u32 LE) ‖ nonce (24) ‖ XSalsa20-Poly1305(key, plaintext)`, and its
//! plaintext is the upload's tuples in `core::confidential`'s encoding. A record is fsynced
//! before its upload is acknowledged. A damaged or foreign record stops loading with its
//! offset: the matcher never serves half a log. Compaction rewrites the file through a
//! temporary sibling and a rename, keeping only tuples still within retention.
//!
//! Where the key comes from is the platform's business ([`SealingKey`]): on a development
//! machine it is a file or a fresh random key; in a TEE it is derived from the platform's
//! measurement-bound key (see `docs/confidential-matching.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use confidant_core::confidential::{ContactTuple, TUPLE_LEN, decode_tuples, encode_tuples};
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit};
use rand_core::OsRng;

const NONCE_LEN: usize = 24;
/// A record holds at most one upload: `core::confidential::MAX_TUPLES` tuples.
const MAX_RECORD: usize = NONCE_LEN + 16 + confidant_core::confidential::MAX_TUPLES * TUPLE_LEN;

/// The 32-byte key the log is sealed under.
#[derive(Clone)]
pub struct SealingKey([u8; 32]);

impl SealingKey {
    /// A key that lives only in this process: the log does not survive a restart.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut key);
        Self(key)
    }

    /// A key from outside: development only (a key file), or one a platform derived.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sealed log {path} is damaged at byte {offset}: {reason}")]
    Damaged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// The append-only sealed log of uploads.
pub struct SealedLog {
    path: PathBuf,
    cipher: XSalsa20Poly1305,
    file: File,
}

impl SealedLog {
    /// Opens (or creates) the log at `path` and returns it with every upload it holds.
    pub fn open(
        path: &Path,
        key: &SealingKey,
    ) -> Result<(Self, Vec<Vec<ContactTuple>>), SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let cipher = XSalsa20Poly1305::new(&key.0.into());
        let uploads = match File::open(path) {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(io)?;
                read_records(path, &cipher, &bytes)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok((
            Self {
                path: path.to_owned(),
                cipher,
                file,
            },
            uploads,
        ))
    }

    /// Every upload the log holds, read again from the file.
    pub fn reload(&self) -> Result<Vec<Vec<ContactTuple>>, SealError> {
        let bytes = fs::read(&self.path).map_err(|source| SealError::Io {
            path: self.path.clone(),
            source,
        })?;
        read_records(&self.path, &self.cipher, &bytes)
    }

    /// Appends one upload and syncs it to stable storage.
    pub fn append(&mut self, tuples: &[ContactTuple]) -> Result<(), SealError> {
        let record = seal_record(&self.cipher, tuples);
        self.file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| SealError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Rewrites the log with `uploads` only (through a temporary file and a rename, synced).
    pub fn compact(&mut self, uploads: &[Vec<ContactTuple>]) -> Result<(), SealError> {
        let temporary = self.path.with_extension("compacting");
        let io = |source| SealError::Io {
            path: temporary.clone(),
            source,
        };
        let mut out = File::create(&temporary).map_err(io)?;
        for upload in uploads.iter().filter(|u| !u.is_empty()) {
            out.write_all(&seal_record(&self.cipher, upload))
                .map_err(io)?;
        }
        out.sync_all().map_err(io)?;
        fs::rename(&temporary, &self.path).map_err(io)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|source| SealError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }
}

fn seal_record(cipher: &XSalsa20Poly1305, tuples: &[ContactTuple]) -> Vec<u8> {
    let mut plain = Vec::new();
    encode_tuples(tuples, &mut plain);
    let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(&nonce, plain.as_slice())
        .expect("XSalsa20-Poly1305 seals any length");
    let mut record = Vec::with_capacity(4 + NONCE_LEN + sealed.len());
    record.extend_from_slice(&((NONCE_LEN + sealed.len()) as u32).to_le_bytes());
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&sealed);
    record
}

fn read_records(
    path: &Path,
    cipher: &XSalsa20Poly1305,
    bytes: &[u8],
) -> Result<Vec<Vec<ContactTuple>>, SealError> {
    let damaged = |offset: usize, reason: &str| SealError::Damaged {
        path: path.to_owned(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let mut uploads = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 4) else {
            return Err(damaged(at, "truncated record length"));
        };
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        if !(NONCE_LEN + 16..=MAX_RECORD).contains(&len) {
            return Err(damaged(at, "impossible record length"));
        }
        let Some(record) = bytes.get(at + 4..at + 4 + len) else {
            return Err(damaged(at, "truncated record"));
        };
        let nonce = crypto_secretbox::Nonce::from_slice(&record[..NONCE_LEN]);
        let plain = cipher
            .decrypt(nonce, &record[NONCE_LEN..])
            .map_err(|_| damaged(at, "does not open with this matcher's sealing key"))?;
        if plain.len() % TUPLE_LEN != 0 {
            return Err(damaged(at, "not a whole number of tuples"));
        }
        let tuples = decode_tuples(&plain, plain.len() / TUPLE_LEN)
            .map_err(|e| damaged(at, &e.to_string()))?;
        uploads.push(tuples);
        at += 4 + len;
    }
    Ok(uploads)
}
