//! `Policy`: what a phone accepts. The default accepts nothing: no measurement of any platform,
//! no debug TEE, no simulated evidence. An app lists the measurements that the matcher's
//! reproducible build publishes.

/// Production roots, compiled in. Each file's SHA-256 is checked by a unit test.
const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("roots/intel-sgx-root-ca.der");
const AWS_NITRO_ROOT_G1: &[u8] = include_bytes!("roots/aws-nitro-root-g1.der");
const AMD_ARK_MILAN: &[u8] = include_bytes!("roots/amd-ark-milan.der");
const AMD_ARK_GENOA: &[u8] = include_bytes!("roots/amd-ark-genoa.der");
const AMD_ARK_TURIN: &[u8] = include_bytes!("roots/amd-ark-turin.der");

/// An SGX enclave identity the policy accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SgxIdentity {
    /// Exactly this enclave build.
    MrEnclave([u8; 32]),
    /// Any enclave of this signer and product at or above a security version.
    MrSigner {
        mrsigner: [u8; 32],
        isv_prod_id: u16,
        min_isv_svn: u16,
    },
}

/// A TD identity the policy accepts: MRTD, and the RTMRs it pins (`None` = any value, for
/// registers extended at run time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxIdentity {
    pub mrtd: [u8; 48],
    pub rtmrs: [Option<[u8; 48]>; 4],
}

/// Nitro PCR0..PCR2 the policy accepts (SHA-384 each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NitroPcrs {
    pub pcr0: [u8; 48],
    pub pcr1: [u8; 48],
    pub pcr2: [u8; 48],
}

/// An SEV-SNP TCB version: the security version of each firmware component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// Turin and later only.
    pub fmc: Option<u8>,
}

impl SnpTcb {
    /// Whether every component is at least `min`'s (FMC only where both have one).
    pub fn meets(&self, min: &SnpTcb) -> bool {
        let fmc = match (self.fmc, min.fmc) {
            (Some(have), Some(need)) => have >= need,
            _ => true,
        };
        fmc && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

/// The roots evidence must chain to. The default holds the vendors' production roots; tests
/// replace them to show that evidence fails against the wrong root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// DER of the Intel SGX Root CA (SGX and TDX).
    pub intel_sgx_root: Vec<u8>,
    /// DER of the AMD root keys (ARK) accepted for SEV-SNP: Milan, Genoa and Turin.
    pub amd_arks: Vec<Vec<u8>>,
    /// DER of the AWS Nitro Enclaves root (G1), which must be `cabundle[0]`.
    pub aws_nitro_root: Vec<u8>,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            intel_sgx_root: INTEL_SGX_ROOT_CA.to_vec(),
            amd_arks: vec![
                AMD_ARK_MILAN.to_vec(),
                AMD_ARK_GENOA.to_vec(),
                AMD_ARK_TURIN.to_vec(),
            ],
            aws_nitro_root: AWS_NITRO_ROOT_G1.to_vec(),
        }
    }
}

/// What a verifier accepts. An empty measurement list refuses that platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// INSECURE: accept the simulated attestor (development and tests only). Default false.
    pub allow_simulated: bool,
    /// Accept a TEE in debug mode, whose memory the host can read. Default false.
    pub allow_debug: bool,
    /// Measurements the simulated attestor may claim.
    pub simulated: Vec<[u8; 48]>,
    pub sgx: Vec<SgxIdentity>,
    pub tdx: Vec<TdxIdentity>,
    /// SEV-SNP launch measurements.
    pub snp: Vec<[u8; 48]>,
    pub nitro: Vec<NitroPcrs>,
    /// SGX and TDX TCB statuses accepted, as dcap-qvl names them: `UpToDate`,
    /// `SWHardeningNeeded`, `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded`,
    /// `OutOfDate`, `OutOfDateConfigurationNeeded`, `TDRelaunchAdvised`,
    /// `TDRelaunchAdvisedConfigurationNeeded` (`Revoked` is always refused). Default `UpToDate`.
    pub intel_tcb_statuses: Vec<String>,
    /// The lowest SEV-SNP REPORTED_TCB accepted. Default all zero.
    pub snp_min_tcb: SnpTcb,
    /// The highest VMPL whose reports are accepted (0 is the most privileged). Default 0.
    pub snp_max_vmpl: u32,
    /// Serial numbers (big-endian bytes, as in the certificate) of revoked ASKs. This crate
    /// does not fetch or parse AMD's CRL; an app that has checked it lists its entries here.
    pub snp_revoked_ask_serials: Vec<Vec<u8>>,
    /// The oldest evidence accepted, for evidence that carries its time (Nitro). Default 1 h.
    pub max_age_secs: u64,
    /// How far in the future evidence may claim to be, for phones with fast clocks. Default
    /// 5 minutes.
    pub max_clock_skew_secs: u64,
    pub roots: Roots,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_simulated: false,
            allow_debug: false,
            simulated: Vec::new(),
            sgx: Vec::new(),
            tdx: Vec::new(),
            snp: Vec::new(),
            nitro: Vec::new(),
            intel_tcb_statuses: vec!["UpToDate".to_owned()],
            snp_min_tcb: SnpTcb::default(),
            snp_max_vmpl: 0,
            snp_revoked_ask_serials: Vec::new(),
            max_age_secs: 3600,
            max_clock_skew_secs: 300,
            roots: Roots::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn fingerprint(der: &[u8]) -> String {
        hex::encode(Sha256::digest(der))
    }

    #[test]
    fn pinned_roots_are_the_vendors_roots() {
        // Certificate SHA-256 fingerprints, as `openssl x509 -fingerprint -sha256` prints them.
        assert_eq!(
            fingerprint(INTEL_SGX_ROOT_CA),
            "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
        );
        assert_eq!(
            fingerprint(AWS_NITRO_ROOT_G1),
            "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
        );
        assert_eq!(
            fingerprint(AMD_ARK_MILAN),
            "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
        );
        assert_eq!(
            fingerprint(AMD_ARK_GENOA),
            "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
        );
        assert_eq!(
            fingerprint(AMD_ARK_TURIN),
            "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
        );
    }

    #[cfg(feature = "snp")]
    #[test]
    fn pinned_arks_are_the_ones_sev_ships() {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let shipped = [milan::ark(), genoa::ark(), turin::ark()]
            .map(|ark| ark.and_then(|c| c.to_der()).expect("sev's builtin ARK"));
        assert_eq!(Roots::default().amd_arks, shipped.to_vec());
    }

    #[test]
    fn default_accepts_nothing() {
        let policy = Policy::default();
        assert!(!policy.allow_simulated && !policy.allow_debug);
        assert!(policy.simulated.is_empty() && policy.sgx.is_empty() && policy.tdx.is_empty());
        assert!(policy.snp.is_empty() && policy.nitro.is_empty());
    }

    #[test]
    fn tcb_meets_compares_each_component() {
        let min = SnpTcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        assert!(min.meets(&min));
        assert!(!SnpTcb { snp: 7, ..min }.meets(&min));
        assert!(
            !SnpTcb {
                microcode: 114,
                ..min
            }
            .meets(&min)
        );
        assert!(SnpTcb { tee: 1, ..min }.meets(&min));
        let turin = SnpTcb {
            fmc: Some(1),
            ..min
        };
        assert!(!turin.meets(&SnpTcb {
            fmc: Some(2),
            ..min
        }));
        assert!(turin.meets(&min));
    }
}
