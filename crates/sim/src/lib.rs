//! A seeded, agent-based population that runs Confidant clients through an epidemic against
//! a real server: who should be warned, who is, how late, at what cost in bytes and requests,
//! with GAEN keys, with encounter tokens, or both side by side, and what a Bluetooth sniffer
//! could link from the published data.

mod model;
mod report;
mod rng;
mod run;
mod sniffer;
mod svg;
mod target;
mod tokens;

pub use model::{EpidemicParams, Protocol, SimSettings};
pub use report::{
    GroundTruth, Report, SnifferFigures, SnifferReport, Tally, TokenReport, TokenTally,
};
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
