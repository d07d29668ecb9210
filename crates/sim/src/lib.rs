//! A seeded, agent-based population that runs Confidant clients through an epidemic against
//! a real server: who should be warned, who is, how late, at what cost in bytes and requests.

mod model;
mod report;
mod rng;
mod run;
mod svg;
mod target;

pub use model::{EpidemicParams, SimSettings};
pub use report::{GroundTruth, Report, Tally};
pub use rng::SeededRng;
pub use run::simulate;
pub use target::{EMBEDDED_START, Target};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation settings: {0}")]
    Settings(String),
    #[error("server: {0}")]
    Server(String),
    #[error(transparent)]
    Client(#[from] confidant_client::ClientError),
}
