//! `fraudstream preprocess`: the seed pipeline's first step. Reads raw transactions (CSV,
//! JSON lines or Parquet; local, S3 or HDFS), validates and types every column, drops and
//! counts invalid rows by reason, optionally drops duplicate ids, and writes typed Parquet
//! partitioned by day of the `Time` column (`day=N/part-NNNNN.parquet`) to a local
//! directory, S3 or HDFS.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use serde_json::json;

use super::print::{self, table};
use crate::schema::parquet::write_parquet;
use crate::schema::{Dataset, ReadOptions, ReadReport, TIME};
use crate::velocity::VelocitySpec;

/// `preprocess` arguments.
#[derive(Debug, Args)]
pub struct PreprocessArgs {
    /// Raw input: a file or a prefix ending in `/` (local, `s3://`, `hdfs://`).
    #[arg(long, short)]
    input: String,
    /// Output location for the Parquet files (a directory, `s3://bucket/prefix/` or
    /// `hdfs://host:port/dir/`).
    #[arg(long, short)]
    out: String,
    /// Drop rows whose id was already seen (the first is kept).
    #[arg(long)]
    dedup: bool,
    /// Most rows per Parquet file.
    #[arg(long, default_value_t = 100_000)]
    rows_per_file: usize,
    /// Service configuration (`[s3]` access).
    #[arg(long)]
    service_config: Option<PathBuf>,
    /// Compute entity features (`handbook`, or a TOML file with a
    /// `[velocity.features]` table) over the input in time order and store them as
    /// columns, exactly as a detector with that spec computes them online.
    #[arg(long)]
    velocity: Option<String>,
    /// Print one JSON report instead of a table.
    #[arg(long)]
    json: bool,
}

/// Rows of one day waiting to be written.
struct Partition {
    rows: Dataset,
    files: usize,
}

/// Write rows to a temporary Parquet file.
fn stage(rows: &Dataset) -> anyhow::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new().suffix(".parquet").tempfile()?;
    write_parquet(tmp.path().to_str().unwrap_or_default(), rows)?;
    Ok(tmp)
}

/// Run `preprocess`.
pub fn run(args: &PreprocessArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rows_per_file > 0, "--rows-per-file must be at least 1");
    let cfg = match &args.service_config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::default(),
    };
    let s3 = cfg.s3.settings("", "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let out = rt.block_on(crate::storage::open(&args.out, Some(&s3)))?;
    let bar = print::spinner(format!("preprocessing {}", args.input));
    let mut report = ReadReport::default();
    let (mut rows_in, mut rows_out, mut duplicates) = (0usize, 0usize, 0usize);
    let mut seen: HashSet<String> = HashSet::new();
    let mut parts: BTreeMap<i64, Partition> = BTreeMap::new();
    let mut written: Vec<String> = Vec::new();
    // Full partitions are staged as local Parquet files at once, so memory holds at most
    // one file's rows per day; they are uploaded at the end.
    let mut pending: Vec<(String, tempfile::NamedTempFile)> = Vec::new();
    let mut failed: Option<anyhow::Error> = None;
    let velocity = args
        .velocity
        .as_deref()
        .map(crate::velocity::config::spec_from_arg)
        .transpose()?;
    let derived = velocity
        .as_ref()
        .map(VelocitySpec::names)
        .unwrap_or_default();
    rt.block_on(crate::pipeline::remote::for_each_file(
        &args.input,
        &s3,
        ReadOptions { skip_invalid: true },
        velocity.as_ref(),
        &mut |name, d, r| {
            rows_in += d.len() + r.skipped;
            report.merge(r);
            for i in 0..d.len() {
                let tx = d.row(i);
                if args.dedup && !seen.insert(tx.id.clone()) {
                    duplicates += 1;
                    continue;
                }
                let day = (tx.values[TIME] / 86_400.0).floor() as i64;
                let p = parts.entry(day).or_insert_with(|| Partition {
                    rows: Dataset::with_derived(0, derived.clone()),
                    files: 0,
                });
                p.rows.push(tx);
                rows_out += 1;
                if p.rows.len() >= args.rows_per_file && failed.is_none() {
                    let key = format!("day={day}/part-{:05}.parquet", p.files);
                    p.files += 1;
                    let full =
                        std::mem::replace(&mut p.rows, Dataset::with_derived(0, derived.clone()));
                    match stage(&full) {
                        Ok(f) => pending.push((key, f)),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            bar.set_message(format!("{name}: {rows_in} rows read, {rows_out} kept"));
        },
    ))?;
    if let Some(e) = failed {
        return Err(e);
    }
    for (day, p) in &mut parts {
        if !p.rows.is_empty() {
            let key = format!("day={day}/part-{:05}.parquet", p.files);
            pending.push((key, stage(&p.rows)?));
        }
    }
    for (key, file) in pending {
        bar.set_message(format!("writing {key}"));
        let data = std::fs::read(file.path())?;
        rt.block_on(out.put(&key, Bytes::from(data)))?;
        written.push(key);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let rejected = report.skipped;
    if args.json {
        println!(
            "{}",
            json!({
                "input": args.input,
                "out": out.describe(),
                "rows_in": rows_in,
                "rows_out": rows_out,
                "rows_rejected": rejected,
                "rejected_by_reason": report.by_reason,
                "duplicates_dropped": duplicates,
                "files": written,
                "seconds": seconds,
                "rows_per_second": rows_in as f64 / seconds.max(1e-9),
            })
        );
    } else {
        let mut rows = vec![
            ("rows in", rows_in.to_string()),
            ("rows out", rows_out.to_string()),
            ("rows rejected", rejected.to_string()),
            ("duplicates dropped", duplicates.to_string()),
            (
                "files written",
                format!("{} under {}", written.len(), out.describe()),
            ),
            (
                "time",
                format!(
                    "{seconds:.2} s ({:.0} rows/s)",
                    rows_in as f64 / seconds.max(1e-9)
                ),
            ),
        ];
        for (reason, n) in &report.by_reason {
            rows.push(("rejected", format!("{n} × {reason}")));
        }
        table(&format!("preprocessed {}", args.input), &rows);
        for e in &report.examples {
            eprintln!("rejected: {e}");
        }
    }
    Ok(())
}
