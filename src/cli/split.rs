//! `fraudstream split`: write a train/test split to two files, so that a model can be
//! trained on one (`train --split none`) and evaluated on the other by any tool.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{InputArgs, read_input};
use crate::eval::{SplitKind, split};
use crate::schema::TIME;
use crate::schema::csv::write_kaggle_csv;

/// `split` arguments.
#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Where to write the training rows (Kaggle CSV layout, with an `id` column).
    #[arg(long)]
    train_out: PathBuf,
    /// Where to write the test rows.
    #[arg(long)]
    test_out: PathBuf,
    /// How to split (`none` is not accepted here).
    #[arg(long, value_enum, default_value_t = SplitKind::Stratified)]
    split: SplitKind,
    /// Fraction of rows in the test file.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Seed of the split (the same seed `train` uses gives the same split).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Run `split`.
pub fn run(args: &SplitArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.split != SplitKind::None,
        "invalid option `split`: use stratified or time"
    );
    anyhow::ensure!(
        args.test_fraction > 0.0 && args.test_fraction < 1.0,
        "invalid option `test-fraction`: {} must be in (0, 1)",
        args.test_fraction
    );
    let (data, skipped) = read_input(&args.input)?;
    let labels = data.labels()?;
    let (train, test) = split(
        args.split,
        &labels,
        &data.columns[TIME],
        args.test_fraction,
        args.seed,
    );
    for (path, idx) in [(&args.train_out, &train), (&args.test_out, &test)] {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write_kaggle_csv(
            BufWriter::new(file),
            idx.iter().map(|&i| data.row(i)),
            true,
            true,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if skipped > 0 {
        println!("{skipped} invalid rows skipped");
    }
    println!(
        "{} training rows -> {}; {} test rows -> {}",
        train.len(),
        args.train_out.display(),
        test.len(),
        args.test_out.display()
    );
    Ok(())
}
