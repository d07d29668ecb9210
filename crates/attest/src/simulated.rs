//! The simulated attestor's evidence: it proves nothing, and is accepted only when a policy
//! says `allow_simulated`, with a measurement the policy lists.

use crate::{AttestError, Checked, Measurements, Platform, Policy, Tcb};

pub(crate) fn verify(
    report_data: &[u8; 64],
    measurement: &[u8; 48],
    policy: &Policy,
) -> Result<Checked, AttestError> {
    if !policy.allow_simulated {
        return Err(AttestError::SimulatedRefused);
    }
    if !policy.simulated.contains(measurement) {
        return Err(AttestError::MeasurementRefused {
            platform: Platform::Simulated,
            found: hex::encode(measurement),
            accepted: policy.simulated.len(),
        });
    }
    Ok(Checked {
        measurements: Measurements::Simulated {
            measurement: *measurement,
        },
        report_data: report_data.to_vec(),
        debug: false,
        tcb: Tcb::NotApplicable,
        produced_at: None,
    })
}
