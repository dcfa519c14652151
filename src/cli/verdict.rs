//! `fraudstream verdict get`: read one verdict back from the verdict store.

use std::path::PathBuf;

use clap::Args;

use crate::aws::AwsConnection;
use crate::sinks::verdicts::VerdictStore;
use crate::sinks::verdicts::dynamodb::{DynamoSettings, DynamoVerdictStore};
use crate::sinks::verdicts::local::LocalVerdictStore;

/// Default local verdict database.
pub const DEFAULT_VERDICT_DB: &str = "out/verdicts.db";

/// `verdict get` arguments.
#[derive(Debug, Args)]
pub struct VerdictGetArgs {
    /// Transaction id.
    id: String,
    /// Local verdict database (SQLite).
    #[arg(long, default_value = DEFAULT_VERDICT_DB, conflicts_with = "dynamodb_table")]
    db: PathBuf,
    /// Read from this DynamoDB table instead.
    #[arg(long)]
    dynamodb_table: Option<String>,
    /// DynamoDB endpoint (for DynamoDB Local); AWS when unset.
    #[arg(long, requires = "dynamodb_table")]
    dynamodb_endpoint: Option<String>,
    /// AWS region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

/// Run `verdict get`: prints the verdict as JSON, or fails when there is none.
pub fn run(args: &VerdictGetArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let item = rt.block_on(async {
        let store: Box<dyn VerdictStore> = match &args.dynamodb_table {
            Some(table) => Box::new(
                DynamoVerdictStore::connect(&DynamoSettings::new(
                    table,
                    AwsConnection {
                        region: args.region.clone(),
                        endpoint: args.dynamodb_endpoint.clone(),
                        ..AwsConnection::default()
                    },
                ))
                .await?,
            ),
            None => {
                anyhow::ensure!(
                    args.db.exists(),
                    "no verdict database at {} (score with --verdict-db first)",
                    args.db.display()
                );
                Box::new(LocalVerdictStore::open(&args.db)?)
            }
        };
        let found = store.get(&args.id).await?;
        anyhow::Ok((store.describe(), found))
    })?;
    match item {
        (_, Some(v)) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        (store, None) => anyhow::bail!("no verdict for transaction {:?} in {store}", args.id),
    }
}
