//! `Verified`: what a phone learns from evidence that passed its policy.

use std::fmt;

/// The platform that produced evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// The insecure simulated attestor.
    Simulated,
    Sgx,
    Tdx,
    Snp,
    Nitro,
}

impl Platform {
    /// The `"platform"` value of the JSON encoding.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Simulated => "simulated",
            Platform::Sgx => "sgx",
            Platform::Tdx => "tdx",
            Platform::Snp => "snp",
            Platform::Nitro => "nitro",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Simulated => "simulated",
            Platform::Sgx => "SGX",
            Platform::Tdx => "TDX",
            Platform::Snp => "SEV-SNP",
            Platform::Nitro => "Nitro",
        })
    }
}

/// The code identity that the evidence signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Measurements {
    Simulated {
        measurement: [u8; 48],
    },
    Sgx {
        mrenclave: [u8; 32],
        mrsigner: [u8; 32],
        isv_prod_id: u16,
        isv_svn: u16,
    },
    Tdx {
        mrtd: [u8; 48],
        /// RTMR0..RTMR3.
        rtmrs: [[u8; 48]; 4],
    },
    Snp {
        /// The launch digest (MEASUREMENT).
        measurement: [u8; 48],
        /// HOST_DATA, chosen by the hypervisor at launch.
        host_data: [u8; 32],
        /// The VMPL that requested the report.
        vmpl: u32,
        /// The guest POLICY.
        guest_policy: u64,
    },
    Nitro {
        /// PCR0 (enclave image), PCR1 (kernel and boot ramdisk), PCR2 (application).
        pcrs: [[u8; 48]; 3],
        module_id: String,
    },
}

/// A TCB level in the form each vendor reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tcb {
    /// Simulated and Nitro evidence carry no TCB level.
    NotApplicable,
    /// SGX and TDX: dcap-qvl's status string and the advisories that apply.
    Intel {
        status: String,
        advisory_ids: Vec<String>,
    },
    /// SEV-SNP: REPORTED_TCB (the one the VCEK is derived for).
    Snp(crate::SnpTcb),
}

/// Evidence that passed a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub platform: Platform,
    pub measurements: Measurements,
    /// The signed user data; equal to the expected report data.
    pub report_data: Vec<u8>,
    /// Whether the TEE runs in debug mode (only ever true if the policy allows debug).
    pub debug: bool,
    pub tcb: Tcb,
    /// When the evidence was produced (unix seconds), for evidence that says so (Nitro).
    /// SGX, TDX and SNP evidence carry no time: their freshness is the nonce in the binding.
    pub produced_at: Option<u64>,
    /// [`crate::Evidence::digest`] of the evidence that was verified.
    pub evidence_digest: [u8; 32],
}
