//! `fraudstream lake compact`: one row per transaction id in a lake written before it was
//! exactly once ([`crate::pipeline::lake_compact`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::pipeline::lake_compact::compact;

/// `lake` subcommands.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Rewrite the lake with one row per transaction id (the newest), directory by
    /// directory; `--dry-run` prints what it would drop. Run it while no detector writes
    /// the lake.
    Compact(CompactArgs),
}

/// `lake compact` arguments.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The lake: a directory or prefix (local, `s3://`, `hdfs://`). Default:
    /// `lake.location` of `--config`.
    #[arg(long)]
    history: Option<String>,
    /// Configuration file (`lake.location`, `lake.writer.compression`, S3 access).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print what would be dropped; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lake compact`.
pub fn compact_lake(args: &CompactArgs) -> anyhow::Result<()> {
    let (location, report) = super::with_lake_files(
        args.config.as_deref(),
        args.history.as_deref(),
        |cfg, location, store, keys| async move {
            let report = compact(&store, &keys, cfg.lake.writer.compression, args.dry_run).await?;
            anyhow::Ok((location, report))
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    for d in &report.rewritten {
        println!(
            "{}: {} files, {} rows, {} to drop",
            d.directory, d.files, d.rows, d.dropped
        );
    }
    let verb = if report.dry_run { "would keep" } else { "kept" };
    println!(
        "{location}: {} rows in, {verb} {} (one per transaction id: {} distinct); {} directories {}",
        report.rows_in,
        report.rows_out,
        report.distinct_ids,
        report.rewritten.len(),
        if report.dry_run {
            "to rewrite (dry run: nothing written)"
        } else {
            "rewritten"
        },
    );
    Ok(())
}
