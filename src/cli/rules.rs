//! `fraudstream rules check | publish | activate | list | show | backtest` and
//! `fraudstream list add | remove | import | show | ls`: rule sets and value lists in the
//! model store (`models.location`), which every detector polls.
//!
//! A rule set is checked against what the detectors serve with: the entity features
//! `velocity.features` computes (when `velocity.enabled`) and the lists in the store.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::print::table;
use crate::config::Config;
use crate::pipeline::rules_backtest::{self, Report, SetFigures, Sets};
use crate::registry::ModelStore;
use crate::registry::decisions::catalog;
use crate::registry::rules::RuleStore;
use crate::rules::{Lists, RuleSet, compile};

/// The configuration: `models.location` (the store), S3 access, `velocity`,
/// `decisions`, `lake.location`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The model store location (overrides `models.location`).
    #[arg(long)]
    store: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(s) = &self.store {
            cfg.models.location.clone_from(s);
        }
        Ok(cfg)
    }
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile a rules file against the store's lists and the configured entity
    /// features; print its rules.
    Check(FileArgs),
    /// Store a rules file as a draft version (it must compile); `--activate` makes it
    /// active at once.
    Publish(PublishArgs),
    /// Make a stored version active (every detector picks it up at its next poll).
    Activate(VersionArgs),
    /// List the stored versions (`*` marks the active one).
    List(ConfigArgs),
    /// Print a stored version's manifest and source.
    Show(VersionArgs),
    /// Replay the lake through a draft (a file or a stored version) beside the active
    /// set: matches, frauds caught, legitimate rows hit, overrides, outcome changes.
    Backtest(BacktestArgs),
}

/// `list` subcommands.
#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Add values to a list (created by its first value).
    Add(ListValuesArgs),
    /// Remove values from a list.
    Remove(ListValuesArgs),
    /// Replace a list's values with a file's lines.
    Import(ListImportArgs),
    /// Print a list's values (one per line), or with `--json` its version and values.
    Show(ListShowArgs),
    /// Every list: name, version, size.
    Ls(ConfigArgs),
}

/// A rules file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The rules file.
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `rules publish` arguments.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The rules file.
    file: PathBuf,
    /// Make it active once stored.
    #[arg(long)]
    activate: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// A stored version.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The version.
    version: String,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `rules backtest` arguments.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The draft: a rules file, or a stored version.
    draft: String,
    /// The history: the lake (a directory or prefix of Parquet files; local, `s3://`,
    /// `hdfs://`). Default: `lake.location`.
    #[arg(long)]
    history: Option<String>,
    /// Labels (JSON lines `{"id", "Class"}`, the labels-file format) for rows whose own
    /// `Class` is empty. Repeatable.
    #[arg(long)]
    labels: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `list add` / `list remove` arguments.
#[derive(Debug, Args)]
pub struct ListValuesArgs {
    /// The list (`@name` in rules).
    name: String,
    /// Values.
    #[arg(required = true)]
    values: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `list import` arguments.
#[derive(Debug, Args)]
pub struct ListImportArgs {
    /// The list.
    name: String,
    /// A file with one value per line (blank lines skipped).
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

/// `list show` arguments.
#[derive(Debug, Args)]
pub struct ListShowArgs {
    /// The list.
    name: String,
    /// Print its version and values as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The store, the lists in it, and the entity features the detectors compute.
struct Context {
    cfg: Config,
    store: RuleStore,
    lists: Lists,
    derived: Vec<String>,
}

impl Context {
    async fn open(args: &ConfigArgs) -> anyhow::Result<Self> {
        let cfg = args.load()?;
        let store = ModelStore::open(&cfg.models, &cfg.s3).await?.rules();
        let (lists, _) = store.load_lists().await?;
        let derived = if cfg.velocity.enabled {
            cfg.velocity.features.names()
        } else {
            Vec::new()
        };
        Ok(Self {
            cfg,
            store,
            lists,
            derived,
        })
    }

    fn compile(&self, text: &str, what: &str) -> anyhow::Result<RuleSet> {
        compile(text, &catalog(&self.derived, &self.lists))
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn print_rules(set: &RuleSet) {
    println!("mode {}", set.mode());
    for i in 0..set.len() {
        println!("  {:<7} {:<28} {}", set.action(i), set.name(i), set.text(i));
    }
}

/// `rules check FILE`.
pub fn check(args: &FileArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config).await?;
        let set = ctx.compile(&read(&args.file)?, &args.file.display().to_string())?;
        print_rules(&set);
        println!(
            "{} rules compile against {} lists and {} entity features",
            set.len(),
            ctx.lists.names().len(),
            ctx.derived.len()
        );
        Ok(())
    })
}

/// `rules publish FILE`.
pub fn publish(args: &PublishArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config).await?;
        let text = read(&args.file)?;
        let m = ctx
            .store
            .publish(&text, &catalog(&ctx.derived, &ctx.lists))
            .await?;
        let mut rows = vec![
            ("version", m.version.clone()),
            ("rules", m.rules.len().to_string()),
            ("mode", m.mode.clone()),
            ("store", ctx.store.describe()),
        ];
        if args.activate {
            let moved = ctx
                .store
                .activate(&m.version, &catalog(&ctx.derived, &ctx.lists))
                .await?;
            rows.push(("active before", moved.from.unwrap_or_else(|| "-".into())));
            table("rule set published and activated", &rows);
        } else {
            table("rule set published (a draft: `rules activate` it)", &rows);
        }
        Ok(())
    })
}

/// `rules activate VERSION`.
pub fn activate(args: &VersionArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config).await?;
        let moved = ctx
            .store
            .activate(&args.version, &catalog(&ctx.derived, &ctx.lists))
            .await?;
        table(
            "rules/ACTIVE moved",
            &[
                ("from", moved.from.unwrap_or_else(|| "-".into())),
                ("to", moved.to),
                ("store", ctx.store.describe()),
            ],
        );
        Ok(())
    })
}

/// `rules list`.
pub fn list(args: &ConfigArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let cfg = args.load()?;
        let store = ModelStore::open(&cfg.models, &cfg.s3).await?.rules();
        let active = store.active().await?.map(|l| l.version);
        println!(
            "  {:<26} {:<21} {:<14} {:>5}",
            "version", "created", "mode", "rules"
        );
        for m in store.versions().await? {
            println!(
                "{} {:<26} {:<21} {:<14} {:>5}",
                if active.as_deref() == Some(m.version.as_str()) {
                    "*"
                } else {
                    " "
                },
                m.version,
                m.created_at,
                m.mode,
                m.rules.len()
            );
        }
        if active.is_none() {
            println!("(no active rule set: the model's rule alone decides)");
        }
        Ok(())
    })
}

/// `rules show VERSION`.
pub fn show(args: &VersionArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let cfg = args.config.load()?;
        let store = ModelStore::open(&cfg.models, &cfg.s3).await?.rules();
        let v = store.get(&args.version).await?;
        println!("{}", serde_json::to_string_pretty(&v.manifest)?);
        println!("---\n{}", v.text);
        Ok(())
    })
}

/// Labels from labels files: transaction id → 0 or 1.
fn read_labels(paths: &[String]) -> anyhow::Result<HashMap<String, u8>> {
    let mut labels = HashMap::new();
    for path in paths {
        anyhow::ensure!(
            std::path::Path::new(path).is_file(),
            "--labels {path}: not a file"
        );
        let read = crate::stream::source::labels::file::LabelsFile::new(path)
            .read_new()
            .map_err(|e| anyhow::anyhow!("--labels {path}: {e}"))?;
        labels.extend(read.into_iter().map(|l| (l.tx_id, l.label)));
    }
    Ok(labels)
}

fn print_set(title: &str, s: &SetFigures) {
    println!(
        "{title} {} ({}): approve {}, review {}, block {}; frauds stopped {}, legitimate stopped {}",
        s.name, s.mode, s.approve, s.review, s.block, s.frauds_stopped, s.legit_stopped
    );
    if s.rules.is_empty() {
        return;
    }
    println!(
        "  {:<28} {:<7} {:>10} {:>8} {:>8} {:>10} {:>9}",
        "rule", "action", "matches", "frauds", "legit", "decided", "overrides"
    );
    for r in &s.rules {
        println!(
            "  {:<28} {:<7} {:>10} {:>8} {:>8} {:>10} {:>9}",
            r.name, r.action, r.matches, r.frauds, r.legit, r.decided, r.overrides
        );
    }
}

/// Print a backtest report as a table.
pub fn print_report(r: &Report) {
    println!(
        "{} rows from {} files in {} ({:.2} s, {:.0} rows/s); {} labelled, {} frauds",
        r.rows, r.files, r.history, r.seconds, r.rows_per_second, r.labelled, r.frauds
    );
    print_set("draft", &r.draft);
    print_set("active", &r.active);
    if r.changes.is_empty() {
        println!("no outcome changes");
    } else {
        println!("outcome changes (active -> draft):");
        for c in &r.changes {
            println!(
                "  {:<7} -> {:<7} {:>10} rows ({} frauds)",
                c.from.to_string(),
                c.to.to_string(),
                c.rows,
                c.frauds
            );
        }
    }
}

/// `rules backtest DRAFT`.
pub fn backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config).await?;
        let (draft_name, draft_text) = if std::path::Path::new(&args.draft).is_file() {
            (args.draft.clone(), read(&PathBuf::from(&args.draft))?)
        } else {
            let v = ctx.store.get(&args.draft).await?;
            (v.manifest.version, v.text)
        };
        let draft = ctx.compile(&draft_text, &draft_name)?;
        let active = match ctx.store.active().await? {
            Some(a) => {
                let v = ctx.store.get(&a.version).await?;
                Some((ctx.compile(&v.text, &a.version)?, a.version))
            }
            None => None,
        };
        let labels = read_labels(&args.labels)?;
        let history = args
            .history
            .clone()
            .unwrap_or_else(|| ctx.cfg.lake.location.clone());
        let sets = Sets {
            draft: (&draft, &draft_name),
            active: active.as_ref().map(|(s, v)| (s, v.as_str())),
            lists: &ctx.lists,
            model_outcome: ctx.cfg.decisions.model_outcome,
            labels: &labels,
            derived: &ctx.derived,
        };
        let report = rules_backtest::run(&history, &ctx.cfg.s3.settings("", ""), &sets).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        Ok(())
    })
}

fn print_list_change(what: &str, v: &crate::registry::rules::ListVersion, store: &RuleStore) {
    table(
        what,
        &[
            ("list", format!("@{}", v.name)),
            ("version", v.version.clone()),
            ("values", v.size.to_string()),
            ("store", store.describe()),
        ],
    );
}

async fn list_store(args: &ConfigArgs) -> anyhow::Result<RuleStore> {
    let cfg = args.load()?;
    Ok(ModelStore::open(&cfg.models, &cfg.s3).await?.rules())
}

/// `list add NAME VALUE...`.
pub fn list_add(args: &ListValuesArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = list_store(&args.config).await?;
        let v = store.change_list(&args.name, &args.values, &[]).await?;
        print_list_change("list changed", &v, &store);
        Ok(())
    })
}

/// `list remove NAME VALUE...`.
pub fn list_remove(args: &ListValuesArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = list_store(&args.config).await?;
        store.list(&args.name).await?;
        let v = store.change_list(&args.name, &[], &args.values).await?;
        print_list_change("list changed", &v, &store);
        Ok(())
    })
}

/// `list import NAME FILE`.
pub fn list_import(args: &ListImportArgs) -> anyhow::Result<()> {
    let text = read(&args.file)?;
    let values: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    runtime()?.block_on(async {
        let store = list_store(&args.config).await?;
        let v = store.replace_list(&args.name, &values).await?;
        print_list_change("list replaced", &v, &store);
        Ok(())
    })
}

/// `list show NAME`.
pub fn list_show(args: &ListShowArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = list_store(&args.config).await?;
        let (v, values) = store.list(&args.name).await?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"name": v.name, "version": v.version, "size": v.size, "values": values})
            );
        } else {
            for value in values {
                println!("{value}");
            }
        }
        Ok(())
    })
}

/// `list ls`.
pub fn list_ls(args: &ConfigArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = list_store(args).await?;
        println!("{:<32} {:<26} {:>10}", "list", "version", "values");
        for name in store.list_names().await? {
            let (v, _) = store.list(&name).await?;
            println!(
                "{:<32} {:<26} {:>10}",
                format!("@{name}"),
                v.version,
                v.size
            );
        }
        Ok(())
    })
}
