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
    /// How long Redis keeps each transaction's record (`velocity.redis.served_ttl`, at
    /// least `features.label_delay`), as `7d`, `36h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    served_ttl: Option<std::time::Duration>,
    /// Memory of one Redis node in GB (default 64), of which at most 60% is planned.
    #[arg(long)]
    redis_node_gb: Option<f64>,
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
    if let Some(ttl) = args.served_ttl {
        anyhow::ensure!(!ttl.is_zero(), "--served-ttl must be positive");
        costs.served_ttl_secs = ttl.as_secs_f64();
    }
    if let Some(gb) = args.redis_node_gb {
        anyhow::ensure!(
            gb.is_finite() && gb > 0.0,
            "--redis-node-gb must be a positive number of gigabytes, not {gb}"
        );
        costs.redis_node_bytes = gb * 1e9;
    }
    print!("{}", markdown(&args.rate, &costs));
    Ok(())
}
