//! `fraudstream capacity`: the fleet a peak rate needs (docs/capacity.md, from the same
//! formulas and figures: [`crate::capacity`]).

use clap::Args;

use crate::capacity::{UnitCosts, markdown};

/// `capacity` arguments.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// Peak transactions per second (repeat for more rows: `--rate 1000 --rate 50000`).
    #[arg(long, required = true)]
    rate: Vec<f64>,
    /// Detector CPU per transaction in µs, measured with your own model
    /// (`scripts/bench/kafka.sh --hotpath`); the default is the figure in
    /// docs/capacity.md.
    #[arg(long)]
    detector_us: Option<f64>,
}

/// Run `capacity`.
pub fn run(args: &CapacityArgs) -> anyhow::Result<()> {
    for &r in &args.rate {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate must be a positive number of transactions a second, not {r}"
        );
    }
    let mut costs = UnitCosts::MEASURED;
    if let Some(us) = args.detector_us {
        anyhow::ensure!(
            us.is_finite() && us > 0.0,
            "--detector-us must be a positive number of microseconds, not {us}"
        );
        costs.detector_us = us;
    }
    print!("{}", markdown(&args.rate, &costs));
    Ok(())
}
