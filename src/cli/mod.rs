//! The command-line interface: argument definitions and one module per command.

mod backtest;
mod capacity;
mod compare;
mod evaluate;
mod inspect;
mod lake;
mod monitor;
mod preprocess;
mod print;
mod registry;
mod retrain;
mod rules;
mod run;
mod score;
mod signal;
mod split;
mod train;
mod tune;
mod verdict;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::schema::{ReadOptions, ReadReport};

/// fraudstream: streaming credit-card fraud detection with a fast random forest.
#[derive(Debug, Parser)]
#[command(name = "fraudstream", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` is used when unset.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the detector (with a file or stdin source: the embedded pipeline, no services),
    /// with its HTTP API and dashboard.
    Run(run::RunArgs),
    /// Serve the HTTP API and dashboard alone, with no stream source (an API replica).
    Serve(run::ServeArgs),
    /// Train a model on a labelled file, hold out a test set, and report its metrics.
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on a labelled file it never saw, or training settings by
    /// time-series cross-validation (`--folds time:K`).
    Evaluate(evaluate::EvaluateArgs),
    /// Search the forest's hyper-parameters by time-series cross-validation and write the
    /// best to a `[train]` file (`train --config`, `retrain.params`).
    Tune(tune::TuneArgs),
    /// The handbook's delayed-label protocol on a history with card and terminal ids:
    /// with and without entity features.
    Backtest(backtest::BacktestArgs),
    /// Score a file with a model, writing one verdict per transaction.
    Score(score::ScoreArgs),
    /// Validate and type raw transactions and write them as partitioned Parquet.
    Preprocess(preprocess::PreprocessArgs),
    /// Retrain from labelled history and publish the candidate if it passes the quality gate.
    Retrain(retrain::RetrainArgs),
    /// Write a train/test split of a labelled file to two CSV files.
    Split(split::SplitArgs),
    /// What a fleet needs for a peak rate: detector cores, Redis, DynamoDB write units,
    /// Kafka partitions, lake bytes and files (docs/capacity.md).
    Capacity(capacity::CapacityArgs),
    /// Work with model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Write an ed25519 key pair for signing published models (`NAME`, `NAME.pub`).
    Keygen(registry::KeygenArgs),
    /// Read verdicts back from the verdict store.
    #[command(subcommand)]
    Verdict(VerdictCommand),
    /// Rule sets: check, publish, activate, backtest (decisions: approve, review, block).
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Value lists the rules look values up in (`card_id in @blocked_cards`).
    #[command(subcommand)]
    List(rules::ListCommand),
    /// The lake: compact it to one row per transaction id.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Drift of the rows in the lake, day by day, against a model's training reference.
    Monitor(monitor::MonitorArgs),
}

/// `verdict` subcommands.
#[derive(Debug, Subcommand)]
pub enum VerdictCommand {
    /// Print the verdict for one transaction id as JSON.
    Get(verdict::VerdictGetArgs),
}

/// `model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print a model's metadata: features, hyper-parameters, threshold, metrics.
    Inspect(inspect::InspectArgs),
    /// List the model store's versions (`*` marks LATEST).
    List(registry::StoreArgs),
    /// Print a stored version's manifest.
    Show(registry::ShowArgs),
    /// Serve a stored version: move LATEST to it (running detectors pick it up).
    Promote(registry::PromoteArgs),
    /// Serve the current version's parent again.
    Rollback(registry::StoreArgs),
    /// Compare the serving model with the shadow model on the live rows in the lake.
    Compare(compare::CompareArgs),
}

/// Input options shared by the commands that read transactions.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Input: Kaggle-layout CSV (`-` for stdin), JSON lines (.jsonl/.ndjson/.json) or
    /// Parquet (.parquet); a local path, or `s3://bucket/key` / `hdfs://host:port/path`;
    /// a location ending in `/` reads every such file under it.
    #[arg(long, short)]
    pub input: String,
    /// Skip invalid rows (counting and reporting them) instead of stopping at the first.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Service configuration (see config/dev.toml) for `s3://` access, the model store and
    /// the verdict store.
    #[arg(long)]
    pub service_config: Option<PathBuf>,
    /// Compute entity features over the input in time order: `handbook`, or a TOML file
    /// with a `[velocity.features]` table (a detector configuration works). A model with
    /// entity features brings its own spec to `evaluate` and `score`.
    #[arg(long)]
    pub velocity: Option<String>,
    /// Drop the rows of the input's first SPAN (`30d`; `auto`: the entity features'
    /// longest reach, window plus label delay) after they built up the entity state:
    /// their counts cover less than a full window, and a model trained on them sees
    /// every later row as drift.
    #[arg(long, value_name = "SPAN")]
    pub warm_up: Option<String>,
}

impl InputArgs {
    /// The service configuration, or the defaults.
    pub fn services(&self) -> anyhow::Result<crate::config::Config> {
        Ok(match &self.service_config {
            Some(p) => crate::config::Config::load(p)?,
            None => crate::config::Config::default(),
        })
    }
}

/// Output options shared by the commands that report metrics.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write an evaluation report (SVG charts and an HTML page) into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl ReportArgs {
    /// Write the `--report` directory, when asked for, for scores of `model` on `what`.
    fn write(
        &self,
        model: &crate::model::Model,
        what: &str,
        scores: &[f32],
        labels: &[u8],
        metrics: &crate::eval::Metrics,
    ) -> anyhow::Result<()> {
        let Some(dir) = &self.report else {
            return Ok(());
        };
        let meta = model.meta();
        let importances: Vec<(String, f64)> = meta
            .features
            .iter()
            .cloned()
            .zip(meta.feature_importances.iter().copied())
            .collect();
        let page = crate::report::write_report(
            dir,
            &crate::report::ReportInput {
                title: &format!("fraudstream model {} — {what}", meta.version),
                scores,
                labels,
                metrics,
                importances: &importances,
            },
        )?;
        tracing::info!(report = %page.display(), "report written");
        Ok(())
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run::run(&a),
        Command::Serve(a) => run::serve(&a),
        Command::Train(a) => train::run(&a),
        Command::Evaluate(a) => evaluate::run(&a),
        Command::Tune(a) => tune::run(&a),
        Command::Backtest(a) => backtest::run(&a),
        Command::Score(a) => score::run(&a),
        Command::Split(a) => split::run(&a),
        Command::Capacity(a) => capacity::run(&a),
        Command::Retrain(a) => retrain::run(&a),
        Command::Preprocess(a) => preprocess::run(&a),
        Command::Keygen(a) => registry::keygen(&a),
        Command::Model(ModelCommand::Inspect(a)) => inspect::run(&a),
        Command::Model(ModelCommand::List(a)) => registry::list(&a),
        Command::Model(ModelCommand::Show(a)) => registry::show(&a),
        Command::Model(ModelCommand::Promote(a)) => registry::promote(&a),
        Command::Model(ModelCommand::Rollback(a)) => registry::rollback(&a),
        Command::Model(ModelCommand::Compare(a)) => compare::run(&a),
        Command::Verdict(VerdictCommand::Get(a)) => verdict::run(&a),
        Command::Rules(c) => match c {
            rules::RulesCommand::Check(a) => rules::check(&a),
            rules::RulesCommand::Publish(a) => rules::publish(&a),
            rules::RulesCommand::Activate(a) => rules::activate(&a),
            rules::RulesCommand::List(a) => rules::list(&a),
            rules::RulesCommand::Show(a) => rules::show(&a),
            rules::RulesCommand::Backtest(a) => rules::backtest(&a),
        },
        Command::Lake(lake::LakeCommand::Compact(a)) => lake::compact_lake(&a),
        Command::Monitor(a) => monitor::run(&a),
        Command::List(c) => match c {
            rules::ListCommand::Add(a) => rules::list_add(&a),
            rules::ListCommand::Remove(a) => rules::list_remove(&a),
            rules::ListCommand::Import(a) => rules::list_import(&a),
            rules::ListCommand::Show(a) => rules::list_show(&a),
            rules::ListCommand::Ls(a) => rules::list_ls(&a),
        },
    }
}

/// Run `work` on the lake's Parquet files: the configuration (`--config`, or the
/// defaults), the lake's location (`location`, or `lake.location`; ending in `/`), its
/// store and the keys of its `.parquet` files (hidden names skipped).
fn with_lake_files<T, F, Fut>(
    config: Option<&std::path::Path>,
    location: Option<&str>,
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce(
        crate::config::Config,
        String,
        std::sync::Arc<dyn crate::storage::BlobStore>,
        Vec<String>,
    ) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let cfg = match config {
        Some(p) => crate::config::Config::load(p)?,
        None => crate::config::Config::default(),
    };
    let mut location = location.map_or_else(|| cfg.lake.location.clone(), str::to_owned);
    if !location.ends_with('/') {
        location.push('/');
    }
    let s3 = cfg.s3.settings("", "");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let (store, keys) =
                crate::pipeline::remote::objects(&location, &s3, |k| k.ends_with(".parquet"))
                    .await?;
            work(cfg, location, store, keys).await
        })
}

/// Read an input with a spinner, and report what was skipped. Returns the rows and the
/// number of invalid rows skipped.
fn read_input(args: &InputArgs) -> anyhow::Result<(crate::schema::Dataset, usize)> {
    let velocity = args
        .velocity
        .as_deref()
        .map(crate::velocity::config::spec_from_arg)
        .transpose()?;
    read_input_with(args, velocity.as_ref())
}

/// Read the input for `model`: with its entity features when it uses any (a
/// `--velocity` spec given too must be the model's).
fn read_input_for(
    args: &InputArgs,
    model: &crate::model::Model,
) -> anyhow::Result<(crate::schema::Dataset, usize)> {
    match (model.velocity(), args.velocity.as_deref()) {
        (Some(spec), given) => {
            if let Some(arg) = given {
                anyhow::ensure!(
                    crate::velocity::config::spec_from_arg(arg)?.same_features(spec),
                    "--velocity {arg} differs from the entity features model {} was trained with",
                    model.version()
                );
            }
            read_input_with(args, Some(spec))
        }
        (None, _) => read_input(args),
    }
}

fn read_input_with(
    args: &InputArgs,
    velocity: Option<&crate::velocity::VelocitySpec>,
) -> anyhow::Result<(crate::schema::Dataset, usize)> {
    let spinner = print::spinner(format!("reading {}", args.input));
    let opts = ReadOptions {
        skip_invalid: args.skip_invalid,
    };
    let (data, report) = if crate::pipeline::remote::is_remote(&args.input) {
        let s3 = args.services()?.s3.settings("", "");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::pipeline::remote::read_all(
                &args.input,
                &s3,
                opts,
                velocity,
            ))?
    } else {
        crate::schema::read_dataset_with(&args.input, opts, velocity)?
    };
    spinner.finish_and_clear();
    let data = match warm_up_secs(args, velocity)? {
        None => data,
        Some(secs) => {
            let kept = data.after_warm_up(secs as f64);
            tracing::info!(
                dropped = data.len() - kept.len(),
                warm_up_secs = secs,
                "warm-up rows dropped"
            );
            kept
        }
    };
    log_skipped(&args.input, &report);
    tracing::info!(input = %args.input, rows = data.len(), "read input");
    Ok((data, report.skipped))
}

/// `--warm-up` in seconds (`auto`: the entity features' reach), if given.
fn warm_up_secs(
    args: &InputArgs,
    velocity: Option<&crate::velocity::VelocitySpec>,
) -> anyhow::Result<Option<u64>> {
    let Some(w) = &args.warm_up else {
        return Ok(None);
    };
    Ok(Some(match (w.as_str(), velocity) {
        ("auto", Some(v)) => v.reach_secs(),
        ("auto", None) => anyhow::bail!(
            "--warm-up auto: the entity features' reach needs entity features (--velocity, or a model that uses them)"
        ),
        (span, _) => humantime::parse_duration(span)
            .map_err(|e| anyhow::anyhow!("--warm-up {span:?}: {e}"))?
            .as_secs(),
    }))
}

fn log_skipped(input: &str, report: &ReadReport) {
    if report.skipped == 0 {
        return;
    }
    tracing::warn!(input, skipped = report.skipped, "skipped invalid rows");
    for e in &report.examples {
        eprintln!("skipped: {e}");
    }
    if report.skipped > report.examples.len() {
        eprintln!(
            "skipped: … and {} more",
            report.skipped - report.examples.len()
        );
    }
}
