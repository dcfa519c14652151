//! `fraudstream monitor`: the drift of the rows in the lake, day by day, against the
//! serving model's reference (or another version's), as a table or JSON. A day's figures
//! are the detector's for the same rows: the same bins, the same values.

use std::path::PathBuf;

use clap::Args;

use crate::monitoring::batch::{DayDrift, DriftByDay};
use crate::sinks::lake::read_features;

/// `monitor` arguments.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Configuration file: `lake.location`, the model store, `[monitoring]`'s bands and
    /// skipped features, S3 access.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The lake: a directory or prefix ending in `/` (local, `s3://`, `hdfs://`).
    /// Default: `lake.location`.
    #[arg(long)]
    lake: Option<String>,
    /// The model version whose reference the rows are compared with. Default: `LATEST`.
    #[arg(long)]
    version: Option<String>,
    /// First day (`YYYY-MM-DD`, UTC, by when rows were scored).
    #[arg(long)]
    since: Option<String>,
    /// Last day, included.
    #[arg(long)]
    until: Option<String>,
    /// Variables shown per day, worst first.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON: one object per day (every variable), then `all`.
    #[arg(long)]
    json: bool,
}

/// Run `monitor`.
pub fn run(args: &MonitorArgs) -> anyhow::Result<()> {
    for (name, day) in [("--since", &args.since), ("--until", &args.until)] {
        if let Some(d) = day {
            anyhow::ensure!(
                d.len() == 10 && chrono_like(d),
                "{name} {d:?}: use YYYY-MM-DD"
            );
        }
    }
    let (days, version, cfg) = super::with_lake_files(
        args.config.as_deref(),
        args.lake.as_deref(),
        |cfg, location, store, keys| async move {
            let models = crate::registry::ModelStore::open(&cfg.models, &cfg.s3).await?;
            let version = match &args.version {
                Some(v) => v.clone(),
                None => {
                    models
                        .latest()
                        .await?
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "the model store has no LATEST version: name one with --version"
                            )
                        })?
                        .version
                }
            };
            let (model, _) = models.get_checked(&version, None).await?;
            let mut counts = DriftByDay::new(&model, &cfg.monitoring.skip).ok_or_else(|| {
                anyhow::anyhow!("model {version} records no reference (trained before references were recorded): retrain it to monitor against it")
            })?;
            for key in keys {
                let blob = store.get(&key).await?;
                if blob.data.is_empty() {
                    continue; // a takeover's placeholder
                }
                let rows = read_features(blob.data, &model.meta().features)
                    .map_err(|e| anyhow::anyhow!("{location}{key}: {e}"))?;
                counts.add(&rows, args.since.as_deref(), args.until.as_deref());
            }
            anyhow::Ok((counts.finish(&cfg.monitoring.bands()), version, cfg))
        },
    )?;
    if args.json {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for d in &days {
            match writeln!(out, "{}", serde_json::to_string(d)?) {
                // The reader has gone (`| head`): what it wanted, it has.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r?,
            }
        }
        return Ok(());
    }
    println!(
        "drift against model {version} (PSI; bands: moderate from {}, significant from {})",
        cfg.monitoring.moderate, cfg.monitoring.significant
    );
    for d in &days {
        print_day(d, args.top);
    }
    Ok(())
}

/// Whether `d` looks like `YYYY-MM-DD`.
fn chrono_like(d: &str) -> bool {
    d.bytes().enumerate().all(|(i, b)| {
        if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }
    })
}

fn print_day(d: &DayDrift, top: usize) {
    let worst: Vec<String> = d
        .drift
        .ranked()
        .iter()
        .take(top)
        .map(|v| {
            format!(
                "{} {:.3} ({})",
                v.name,
                v.psi,
                v.state.map_or("?", crate::monitor::DriftState::as_str)
            )
        })
        .collect();
    println!(
        "  {:<10}  {:>9} rows  score {:<7}  {}",
        d.day,
        d.drift.window_rows,
        d.drift
            .score
            .as_ref()
            .map_or_else(|| "–".to_owned(), |s| format!("{:.3}", s.psi)),
        worst.join(", ")
    );
}
