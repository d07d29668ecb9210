//! The one error type of the client: each variant says what failed, where, and what the
//! server or the file said about it.

use std::path::PathBuf;

/// Everything the client can fail at. Bad server input is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("HTTP request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// A non-success status, with the `code` and `detail` of the server's problem+json body
    /// when it sent one (`code` is then the stable machine-readable name, e.g. `invalid_code`).
    #[error("{url} answered {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
        message: String,
    },

    /// A COVID Shield endpoint answered with an error code of its protobuf enum.
    #[error("COVID Shield {endpoint} answered {status} with error {name} ({error})")]
    CovidShield {
        endpoint: &'static str,
        status: u16,
        /// The `ErrorCode` number.
        error: i32,
        /// Its name in the .proto (`UNKNOWN_ERROR_CODE` for a number the .proto lacks).
        name: &'static str,
        /// Wrong codes this address may still try before a ban (`/claim-key` only).
        tries_remaining: Option<u32>,
    },

    /// A success status whose body is not what the API promises.
    #[error("unexpected response from {url}: {reason}")]
    UnexpectedResponse { url: String, reason: String },

    /// A downloaded file failed its checks: signature, hash or size against the index,
    /// structure, or region. Nothing from it was applied.
    #[error("tampered or corrupt file {file}: {reason}")]
    Tampered { file: String, reason: String },

    /// The published chain has a hole or a fork that starting over from the index's snapshot
    /// did not mend. Nothing was applied.
    #[error("gap in the feed of region {region}: {detail}")]
    Gap { region: String, detail: String },

    #[error("malformed tracking ID {0:?}: a tracking ID is 32 hexadecimal characters")]
    MalformedTrackingId(String),

    #[error("COVID Shield upload before a successful claim: call claim() first")]
    NotClaimed,

    #[error("could not seal the upload: {0}")]
    Crypto(String),

    /// The confidential matcher's evidence failed the phone's policy: nothing was sent to it.
    #[error("the matcher's attestation was refused: {0}")]
    Attestation(confidant_attest::AttestError),

    #[error("I/O error on {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A state or observation file that cannot be read back: truncated, bit-flipped, another
    /// format, or written for another region.
    #[error("corrupt state file {path}: {reason}", path = path.display())]
    CorruptState { path: PathBuf, reason: String },
}

impl ClientError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::CorruptState {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tampered(file: impl Into<String>, reason: impl ToString) -> Self {
        Self::Tampered {
            file: file.into(),
            reason: reason.to_string(),
        }
    }
}
