//! Evidence about this process: an [`Attestor`] puts 64 bytes of report data (the binding of
//! the matcher's key to a phone's nonce, `confidant_attest::binding`) into evidence that
//! chains to a hardware vendor.
//!
//! - [`SimulatedAttestor`]: for development and tests. It proves nothing; it must be enabled
//!   explicitly, and phones refuse it unless their policy allows simulated evidence.
//! - [`ConfigfsTsm`]: inside a TDX or SEV-SNP confidential VM (Linux 6.7 or later), the
//!   kernel's configfs-tsm report interface: make a report directory, write the report data
//!   to `inblob`, read `outblob` (the TDX quote or SNP report) and, for SNP, `auxblob` (the
//!   certificate table), and retry when `generation` shows that someone else wrote meanwhile.
//!   The file operations go through [`Configfs`], so tests run it on a fake directory.
//!
//! Not built: AWS Nitro's `/dev/nsm` attestor (phones verify Nitro documents, but this
//! process cannot produce one without the NSM device and its driver crate).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use confidant_attest::{Evidence, IntelCollateral};

#[derive(Debug, thiserror::Error)]
pub enum AttestorError {
    #[error("configfs-tsm at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("configfs-tsm provider {0:?} is not supported; accepted: tdx_guest, sev_guest")]
    UnknownProvider(String),
    #[error("configfs-tsm: another writer changed the report {attempts} times in a row")]
    Contended { attempts: u32 },
    #[error("the SNP certificate table (auxblob) is malformed: {0}")]
    CertificateTable(String),
    #[error("no collateral is configured for TDX quotes (--collateral FILE)")]
    NoCollateral,
}

/// Produces evidence binding `report_data`.
pub trait Attestor: Send + Sync {
    /// A short name for logs and `/healthz`: `simulated`, `tdx`, `snp`.
    fn platform(&self) -> &'static str;
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestorError>;
}

/// Insecure evidence for development: anyone can make it. Phones accept it only when their
/// policy says `allow_simulated`.
pub struct SimulatedAttestor {
    /// What it claims to run (phones may pin it like a real measurement).
    pub measurement: [u8; 48],
}

impl Attestor for SimulatedAttestor {
    fn platform(&self) -> &'static str {
        "simulated"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestorError> {
        Ok(Evidence::Simulated {
            report_data: *report_data,
            measurement: self.measurement,
        })
    }
}

/// The file operations of the configfs-tsm interface (std's for the real thing).
pub trait Configfs: Send + Sync {
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
}

/// The kernel's configfs, through the file system.
pub struct KernelConfigfs;

impl Configfs for KernelConfigfs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(path, bytes)
    }
}

/// Where the kernel mounts the report interface.
pub const CONFIGFS_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";
/// Tries before a contended report is given up.
const ATTEMPTS: u32 = 3;

/// TDX or SNP evidence from configfs-tsm.
pub struct ConfigfsTsm<F: Configfs = KernelConfigfs> {
    fs: F,
    root: PathBuf,
    /// Intel's collateral for TDX quotes (TCB info, QE identity, CRLs), stapled to every
    /// quote; the operator refreshes it from Intel's PCS.
    tdx_collateral: Option<IntelCollateral>,
    next: AtomicU64,
}

impl ConfigfsTsm<KernelConfigfs> {
    pub fn new(tdx_collateral: Option<IntelCollateral>) -> Self {
        Self::with(
            KernelConfigfs,
            PathBuf::from(CONFIGFS_TSM_ROOT),
            tdx_collateral,
        )
    }
}

impl<F: Configfs> ConfigfsTsm<F> {
    pub fn with(fs: F, root: PathBuf, tdx_collateral: Option<IntelCollateral>) -> Self {
        Self {
            fs,
            root,
            tdx_collateral,
            next: AtomicU64::new(0),
        }
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> AttestorError + '_ {
        move |source| AttestorError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn generation(&self, dir: &Path) -> Result<u64, AttestorError> {
        let path = dir.join("generation");
        let text = self.fs.read(&path).map_err(Self::io(&path))?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|_| AttestorError::Io {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "generation is not a number"),
            })
    }

    /// One report in a fresh directory: `(provider, outblob, auxblob)`, or `None` when the
    /// generation moved by more than our own write.
    #[allow(clippy::type_complexity)]
    fn report_once(
        &self,
        dir: &Path,
        report_data: &[u8; 64],
    ) -> Result<Option<(String, Vec<u8>, Option<Vec<u8>>)>, AttestorError> {
        let provider_path = dir.join("provider");
        let provider = String::from_utf8_lossy(
            &self
                .fs
                .read(&provider_path)
                .map_err(Self::io(&provider_path))?,
        )
        .trim()
        .to_owned();
        let before = self.generation(dir)?;
        let inblob = dir.join("inblob");
        self.fs
            .write(&inblob, report_data)
            .map_err(Self::io(&inblob))?;
        let outblob_path = dir.join("outblob");
        let outblob = self
            .fs
            .read(&outblob_path)
            .map_err(Self::io(&outblob_path))?;
        let auxblob = if provider == "sev_guest" {
            let path = dir.join("auxblob");
            Some(self.fs.read(&path).map_err(Self::io(&path))?)
        } else {
            None
        };
        let after = self.generation(dir)?;
        Ok((after == before + 1).then_some((provider, outblob, auxblob)))
    }
}

impl<F: Configfs> Attestor for ConfigfsTsm<F> {
    fn platform(&self) -> &'static str {
        "configfs-tsm"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, AttestorError> {
        for _ in 0..ATTEMPTS {
            let name = format!(
                "confidant-{}-{}",
                std::process::id(),
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            let dir = self.root.join(name);
            self.fs.mkdir(&dir).map_err(Self::io(&dir))?;
            let report = self.report_once(&dir, report_data);
            // The directory goes whatever happened; a failed rmdir only leaks an entry.
            self.fs.rmdir(&dir).ok();
            let Some((provider, outblob, auxblob)) = report? else {
                continue;
            };
            return match provider.as_str() {
                "tdx_guest" => Ok(Evidence::Tdx {
                    quote: outblob,
                    collateral: self
                        .tdx_collateral
                        .clone()
                        .ok_or(AttestorError::NoCollateral)?,
                }),
                "sev_guest" => {
                    let certificates = snp_certificates(auxblob.as_deref().unwrap_or_default())?;
                    Ok(Evidence::Snp {
                        report: outblob,
                        vcek_der: certificates.vcek,
                        ask_der: certificates.ask,
                        ark_der: certificates.ark,
                    })
                }
                other => Err(AttestorError::UnknownProvider(other.to_owned())),
            };
        }
        Err(AttestorError::Contended { attempts: ATTEMPTS })
    }
}

/// The certificates an SNP host attaches to a report.
pub struct SnpCertificates {
    pub vcek: Vec<u8>,
    pub ask: Vec<u8>,
    pub ark: Vec<u8>,
}

/// GUIDs of AMD's certificate table (GHCB specification), in their byte order on the wire.
const VCEK_GUID: [u8; 16] = guid(
    0x63da758d,
    0xe664,
    0x4564,
    [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
);
const ASK_GUID: [u8; 16] = guid(
    0x4ab7b379,
    0xbbac,
    0x4fe4,
    [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
);
const ARK_GUID: [u8; 16] = guid(
    0xc0b406a4,
    0xa803,
    0x4952,
    [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
);

/// A GUID in its mixed-endian binary layout.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Reads the certificate table: entries of (GUID, offset u32 LE, length u32 LE) up to an
/// all-zero entry, offsets from the start of the table. Never panics.
pub fn snp_certificates(table: &[u8]) -> Result<SnpCertificates, AttestorError> {
    let bad = |why: &str| AttestorError::CertificateTable(why.to_owned());
    let (mut vcek, mut ask, mut ark) = (None, None, None);
    let mut at = 0;
    loop {
        let entry = table
            .get(at..at + 24)
            .ok_or_else(|| bad("no terminating entry"))?;
        let id: [u8; 16] = entry[..16].try_into().expect("16 bytes");
        let offset = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")) as usize;
        let length = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes")) as usize;
        if id == [0; 16] && offset == 0 && length == 0 {
            break;
        }
        let certificate = table
            .get(offset..offset.saturating_add(length))
            .ok_or_else(|| bad("an entry points past the table"))?
            .to_vec();
        match id {
            VCEK_GUID => vcek = Some(certificate),
            ASK_GUID => ask = Some(certificate),
            ARK_GUID => ark = Some(certificate),
            _ => {}
        }
        at += 24;
    }
    Ok(SnpCertificates {
        vcek: vcek.ok_or_else(|| bad("no VCEK entry"))?,
        ask: ask.ok_or_else(|| bad("no ASK entry"))?,
        ark: ark.ok_or_else(|| bad("no ARK entry"))?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// configfs-tsm as the kernel behaves, on a real temporary directory: `mkdir` makes the
    /// attribute files, writing `inblob` bumps `generation` and makes `outblob` (and, for
    /// SNP, `auxblob`). `interfere` reports are bumped twice, as if another process wrote too.
    struct FakeKernel {
        provider: &'static str,
        interfere: Mutex<u32>,
        aux: Vec<u8>,
    }

    impl Configfs for FakeKernel {
        fn mkdir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
            std::fs::write(path.join("generation"), "0\n")
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            std::fs::remove_dir_all(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            std::fs::read(path)
        }
        fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            std::fs::write(path, bytes)?;
            if path.file_name() == Some("inblob".as_ref()) {
                let dir = path.parent().expect("report dir");
                let mut interfere = self.interfere.lock().expect("lock");
                let bump = if *interfere > 0 {
                    *interfere -= 1;
                    2
                } else {
                    1
                };
                std::fs::write(dir.join("generation"), format!("{bump}\n"))?;
                let mut quote = b"QUOTE:".to_vec();
                quote.extend_from_slice(bytes);
                std::fs::write(dir.join("outblob"), quote)?;
                std::fs::write(dir.join("auxblob"), &self.aux)?;
            }
            Ok(())
        }
    }

    fn fake(
        provider: &'static str,
        interfere: u32,
        aux: Vec<u8>,
    ) -> (tempfile::TempDir, ConfigfsTsm<FakeKernel>) {
        let root = tempfile::tempdir().expect("temp dir");
        let kernel = FakeKernel {
            provider,
            interfere: Mutex::new(interfere),
            aux,
        };
        let tsm = ConfigfsTsm::with(kernel, root.path().to_owned(), Some(collateral()));
        (root, tsm)
    }

    /// The TDX fixture's collateral, as an operator would staple it.
    fn collateral() -> IntelCollateral {
        let json = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/attestation/tdx/tdx_quote_collateral.json"
        ))
        .expect("fixture");
        IntelCollateral::from_dcap_json(&json).expect("collateral")
    }

    fn table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let header = 24 * (entries.len() + 1);
        let mut out = Vec::new();
        let mut offset = header;
        for (id, body) in entries {
            out.extend_from_slice(id);
            out.extend_from_slice(&(offset as u32).to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            offset += body.len();
        }
        out.extend_from_slice(&[0; 24]);
        for (_, body) in entries {
            out.extend_from_slice(body);
        }
        out
    }

    #[test]
    fn a_tdx_quote_carries_the_report_data_and_the_directory_is_removed() {
        let (root, tsm) = fake("tdx_guest", 0, Vec::new());
        let data = [9u8; 64];
        let Evidence::Tdx { quote, collateral } = tsm.evidence(&data).expect("evidence") else {
            panic!("TDX evidence");
        };
        assert_eq!(&quote[6..], &data);
        assert_eq!(collateral, super::tests::collateral());
        assert_eq!(std::fs::read_dir(root.path()).expect("root").count(), 0);
    }

    #[test]
    fn a_concurrent_writer_is_retried_and_then_given_up() {
        let (_root, tsm) = fake("tdx_guest", 2, Vec::new());
        assert!(tsm.evidence(&[1; 64]).is_ok(), "the third try is clean");
        let (_root, tsm) = fake("tdx_guest", 3, Vec::new());
        assert!(matches!(
            tsm.evidence(&[1; 64]),
            Err(AttestorError::Contended { attempts: 3 })
        ));
    }

    #[test]
    fn snp_reports_come_with_their_certificate_table() {
        let aux = table(&[(ARK_GUID, b"ark"), (VCEK_GUID, b"vcek"), (ASK_GUID, b"ask")]);
        let (_root, tsm) = fake("sev_guest", 0, aux);
        let Evidence::Snp {
            report,
            vcek_der,
            ask_der,
            ark_der,
        } = tsm.evidence(&[3; 64]).expect("evidence")
        else {
            panic!("SNP evidence");
        };
        assert_eq!(&report[6..], &[3; 64]);
        assert_eq!(
            (vcek_der.as_slice(), ask_der.as_slice(), ark_der.as_slice()),
            (&b"vcek"[..], &b"ask"[..], &b"ark"[..])
        );
        for broken in [Vec::new(), table(&[(ASK_GUID, b"ask")]), vec![1; 30]] {
            assert!(matches!(
                snp_certificates(&broken),
                Err(AttestorError::CertificateTable(_))
            ));
        }
        let (_root, tsm) = fake("arm_cca_guest", 0, Vec::new());
        assert!(
            matches!(tsm.evidence(&[0; 64]), Err(AttestorError::UnknownProvider(p)) if p == "arm_cca_guest")
        );
    }
}
