//! `fraudstream model list | show | promote | rollback`: the model store's versions and
//! its `LATEST` pointer (moved by conditional writes, so concurrent changes cannot
//! interleave: a lost race is reported, not overwritten).

use std::path::PathBuf;

use clap::Args;

use super::print::table;
use crate::config::Config;
use crate::registry::ModelStore;

/// Where the model store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Configuration file: `models.location` and S3 access.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The model store location (overrides `models.location`): a path or `s3://bucket/prefix`.
    #[arg(long)]
    store: Option<String>,
}

/// `keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The secret key file to write (readable by its owner only); the public key goes
    /// to the same name with `.pub` added. Neither is overwritten.
    #[arg(long, short)]
    out: PathBuf,
}

/// `keygen`.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = crate::registry::signing::generate()?;
    let public = crate::registry::signing::save(&key, &args.out)?;
    table(
        "ed25519 key pair written",
        &[
            ("secret key", args.out.display().to_string()),
            ("public key file", public.display().to_string()),
            ("models.trusted_keys entry", key.public().to_string()),
        ],
    );
    Ok(())
}

/// `model show` arguments.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The version.
    version: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// `model promote` arguments.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The version to serve.
    version: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<ModelStore> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(s) = &self.store {
            cfg.models.location.clone_from(s);
        }
        Ok(ModelStore::open(&cfg.models, &cfg.s3).await?)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `model list`.
pub fn list(args: &StoreArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        let latest = store.latest().await?.map(|l| l.version);
        println!(
            "{:<1} {:<28} {:<21} {:>7} {:>7}  parent",
            "", "version", "created", "AUPRC", "trees"
        );
        for v in store.list().await? {
            let m = store.manifest(&v).await?;
            let auprc = m
                .metadata
                .headline_metrics()
                .and_then(|(_, x)| x.auprc)
                .map_or_else(|| "-".into(), |a| format!("{a:.4}"));
            println!(
                "{:<1} {:<28} {:<21} {:>7} {:>7}  {}",
                if latest.as_deref() == Some(v.as_str()) {
                    "*"
                } else {
                    ""
                },
                v,
                m.created_at,
                auprc,
                m.metadata.params.n_trees,
                m.parent.as_deref().unwrap_or("-")
            );
        }
        if latest.is_none() {
            println!(
                "(no LATEST: nothing is being served from {})",
                store.describe()
            );
        }
        Ok(())
    })
}

/// `model show VERSION`: the manifest as JSON.
pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = args.store.open().await?;
        let m = store.manifest(&args.version).await?;
        println!("{}", serde_json::to_string_pretty(&m)?);
        Ok(())
    })
}

fn report(moved: &crate::registry::Moved, store: &ModelStore) {
    table(
        "LATEST moved",
        &[
            ("from", moved.from.clone().unwrap_or_else(|| "-".to_owned())),
            ("to", moved.to.clone()),
            ("store", store.describe()),
        ],
    );
}

/// `model promote VERSION`.
pub fn promote(args: &PromoteArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = args.store.open().await?;
        let moved = store.promote(&args.version).await?;
        report(&moved, &store);
        Ok(())
    })
}

/// `model rollback`: serve the current version's parent.
pub fn rollback(args: &StoreArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        let moved = store.rollback().await?;
        report(&moved, &store);
        Ok(())
    })
}
