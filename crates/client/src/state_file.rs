//! Atomic, checksummed state files: a crash mid-write leaves the old file, and a damaged file
//! is reported as corrupt instead of being half-read.
//!
//! Layout: an 8-byte magic naming the content, the payload, then the SHA-256 of both. The
//! payload's format belongs to the caller.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ClientError;

const CHECKSUM_LEN: usize = 32;

/// Writes `magic ‖ payload ‖ SHA-256` to a temporary file beside `path`, syncs it, and renames
/// it over `path`, so readers see the old file or the new one, never a mix.
pub(crate) fn write_atomically(
    path: &Path,
    magic: &[u8; 8],
    payload: &[u8],
) -> Result<(), ClientError> {
    let mut bytes = Vec::with_capacity(magic.len() + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(payload);
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);

    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })();
    if let Err(error) = result {
        std::fs::remove_file(&temporary).ok();
        return Err(ClientError::io(&temporary, error));
    }
    std::fs::rename(&temporary, path).map_err(|e| ClientError::io(path, e))?;
    // The rename is durable only once the directory entry is; not every platform can open a
    // directory for syncing, and the data itself is already safe, so failure here is ignored.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(directory) = std::fs::File::open(parent)
    {
        directory.sync_all().ok();
    }
    Ok(())
}

/// Reads a file written by [`write_atomically`] with the same magic and returns its payload;
/// `Ok(None)` when the file does not exist.
pub(crate) fn read_checked(path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>, ClientError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ClientError::io(path, error)),
    };
    if bytes.len() < magic.len() + CHECKSUM_LEN {
        return Err(ClientError::corrupt(
            path,
            format!("{} bytes is shorter than any state file", bytes.len()),
        ));
    }
    if bytes[..magic.len()] != magic[..] {
        return Err(ClientError::corrupt(
            path,
            format!(
                "not a {} file (wrong magic)",
                String::from_utf8_lossy(&magic[..5])
            ),
        ));
    }
    let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(content).as_slice() != checksum {
        return Err(ClientError::corrupt(
            path,
            "checksum mismatch: the file was damaged",
        ));
    }
    Ok(Some(content[magic.len()..].to_vec()))
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads the fixed-width little-endian fields of a payload, turning a short payload into an
/// error instead of a panic.
pub(crate) struct PayloadReader<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Self { bytes, path }
    }

    pub(crate) fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], ClientError> {
        if self.bytes.len() < len {
            return Err(ClientError::corrupt(
                self.path,
                format!("the payload ends inside the {what}"),
            ));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ClientError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, ClientError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, ClientError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, ClientError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of `item_len`-byte items, checked against what remains before anything is
    /// reserved for them.
    pub(crate) fn count(&mut self, item_len: usize, what: &str) -> Result<usize, ClientError> {
        let count = self.u64(what)?;
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(item_len))
            .is_some_and(|bytes| bytes <= self.bytes.len());
        if !fits {
            return Err(ClientError::corrupt(
                self.path,
                format!("{what} {count} exceeds the bytes that follow"),
            ));
        }
        Ok(count as usize)
    }

    pub(crate) fn finish(self) -> Result<(), ClientError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ClientError::corrupt(
                self.path,
                format!("{} unexpected trailing bytes", self.bytes.len()),
            ))
        }
    }
}

/// [`write_atomically`] with `value` as JSON.
pub(crate) fn save_json<T: serde::Serialize>(
    path: &Path,
    magic: &[u8; 8],
    value: &T,
) -> Result<(), ClientError> {
    let json = serde_json::to_vec(value).map_err(|e| ClientError::corrupt(path, e.to_string()))?;
    write_atomically(path, magic, &json)
}

/// [`read_checked`], then the payload as JSON of a `what` (named in the error).
pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
    what: &str,
) -> Result<Option<T>, ClientError> {
    let Some(json) = read_checked(path, magic)? else {
        return Ok(None);
    };
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| ClientError::corrupt(path, format!("not {what}: {e}")))
}
