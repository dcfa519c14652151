//! `fraudstream monitor`: the drift of the rows in the lake, day by day, against the
//! serving model's reference (or another version's), and with labels the verdicts'
//! quality week by week, as tables, JSON, or an HTML report with charts. A day's drift
//! is the detector's for the same rows: the same bins, the same values. The lake holds
//! every detector's rows and the labels are read whole, so the quality is the fleet's.

use std::path::PathBuf;

use clap::Args;

use crate::monitoring::batch::{DayDrift, DriftByDay, QualityByWeek, WeekQuality};
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
    /// Labels: JSON-lines files of `id` and `Class` (as `velocity.labels_path`); with
    /// labels (or a `Class` in the rows), the quality of the verdicts by week.
    #[arg(long)]
    labels: Vec<String>,
    /// Labels from this Kafka topic (on `kafka.brokers` of --config), read to its end.
    #[arg(long)]
    labels_topic: Option<String>,
    /// Write an HTML report with charts (PSI by day, the score against its reference,
    /// quality by week) into this directory.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Print JSON: one object per day (every variable), then `all`; with labels, one
    /// object per week (`week`), then `all`.
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
    let (days, weeks, version, cfg) = super::with_lake_files(
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
            let labels = crate::pipeline::retrain::history::read_labels(
                &args.labels,
                args.labels_topic.as_deref(),
                &cfg.kafka,
            )
            .await
            .map_err(|e| anyhow::anyhow!("labels: {e}"))?;
            let with_labels = !args.labels.is_empty() || args.labels_topic.is_some();
            let mut quality = QualityByWeek::default();
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
                quality.add(&rows, &labels, args.since.as_deref(), args.until.as_deref());
            }
            let weeks = quality.finish();
            // Without labels, quality is shown only when the rows carried them.
            let weeks = if with_labels || weeks.last().is_some_and(|w| w.labelled > 0) {
                weeks
            } else {
                Vec::new()
            };
            anyhow::Ok((counts.finish(&cfg.monitoring.bands()), weeks, version, cfg))
        },
    )?;
    if let Some(dir) = &args.report {
        let page = crate::monitoring::report::write_monitor_report(
            dir,
            &version,
            &days,
            &weeks,
            &cfg.monitoring.bands(),
        )?;
        eprintln!("report: {}", page.display());
    }
    if args.json {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let lines = days
            .iter()
            .map(serde_json::to_string)
            .chain(weeks.iter().map(serde_json::to_string));
        for line in lines {
            match writeln!(out, "{}", line?) {
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
    if !weeks.is_empty() {
        println!("quality by week (verdicts scored that week, labels known now)");
        println!(
            "  {:<10}  {:>9}  {:>10}  {:>10}  {:>7}  {:>9}  {:>7}  {:>7}",
            "week",
            "verdicts",
            "alert rate",
            "unlabelled",
            "frauds",
            "precision",
            "recall",
            "AUPRC"
        );
        for w in &weeks {
            print_week(w);
        }
    }
    Ok(())
}

fn print_week(w: &WeekQuality) {
    let [
        week,
        verdicts,
        rate,
        unlabelled,
        frauds,
        precision,
        recall,
        auprc,
    ] = w.cells();
    println!(
        "  {week:<10}  {verdicts:>9}  {rate:>10}  {unlabelled:>10}  {frauds:>7}  {precision:>9}  {recall:>7}  {auprc:>7}"
    );
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
