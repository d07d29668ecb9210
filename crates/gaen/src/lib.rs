//! Exposure Notification (Apple/Google GAEN) crypto and export files, with no I/O.
//!
//! Everything a key server or a phone needs to agree on byte for byte lives here: the key
//! schedule (TEK → RPIK/RPI, AEMK/AEM), the `export.bin` / `export.sig` protobuf formats, the
//! zip container, ECDSA P-256 signing, batch splitting and the matching engine. Callers hand in
//! bytes and get bytes or domain values back; reading files, sockets and clocks is their job.

pub mod archive;
pub mod batch;
pub mod crypto;
pub mod export;
pub mod key;
pub mod matching;
mod proto;
pub mod signing;
pub mod time;

pub use archive::{ArchiveError, ExportFiles};
pub use batch::{DEFAULT_MAX_KEYS_PER_FILE, SplitError, sort_keys, split_export};
pub use crypto::{Aem, AemKey, Metadata, Rpi, RpiKey};
pub use export::{
    EXPORT_HEADER, Export, ExportError, ExportSignature, SIGNATURE_ALGORITHM, SignatureInfo,
};
pub use key::{DiagnosisKey, KeyError, ReportType, Tek, TransmissionRisk, VariantOfConcern};
pub use matching::{Match, Matcher, Observation};
pub use signing::{SignatureError, Signer, SigningKey, VerifyingKey};
pub use time::{IntervalNumber, RollingPeriod};
