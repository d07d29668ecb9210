//! `confidant simulate`: a seeded city of phones against an embedded or a running server,
//! running GAEN, encounter tokens, or both side by side.

use std::process::ExitCode;

use anyhow::{Context, Result};
use confidant_sim::{Protocol, SimSettings, Target};

use super::{load_public_key, runtime};
use crate::cli::{SimProtocol, SimulateArgs};

pub fn run(args: SimulateArgs) -> Result<ExitCode> {
    let mut settings = SimSettings::new(args.population, args.days, args.seed);
    settings.adoption = args.adoption;
    settings.detection = args.detection;
    settings.upload_share = args.upload_share;
    settings.withdraw_share = args.withdraw_share;
    settings.protocol = match args.protocol {
        SimProtocol::Gaen => Protocol::Gaen,
        SimProtocol::Tokens => Protocol::Tokens,
        SimProtocol::Both => Protocol::Both,
    };
    settings.sniffed_places = args.sniffed_places;
    settings.areas = args.areas;
    settings.chain = args.chain;
    if args.perfect {
        settings = settings.perfect();
    }
    settings.validate().map_err(anyhow::Error::msg)?;
    let target = match args.server {
        Some(url) => Target::Remote {
            url,
            public_key: load_public_key(
                args.public_key
                    .as_deref()
                    .context("--server needs --public-key")?,
            )?,
            admin_token: args.admin_token.context("--server needs --admin-token")?,
        },
        None => Target::Embedded,
    };
    let mut progress = super::log::progress_meter("simulate", "hours");
    let report = runtime()?.block_on(confidant_sim::simulate(settings, target, &mut progress))?;
    if let Some(dir) = &args.out {
        let written = report
            .write(dir)
            .with_context(|| format!("cannot write the report to {}", dir.display()))?;
        eprintln!("wrote {} to {}", written.join(", "), dir.display());
    }
    out!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}
