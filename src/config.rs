//! Service configuration: the storage backends (S3 access, verdict store, lake, model
//! store). Files live in `config/`; every table refuses unknown keys, and a bad value is
//! reported with its key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sinks::lake::LakeSettings;
use crate::sinks::verdicts::dynamodb::DynamoSettings;
use crate::storage::S3Settings;
use crate::storage::url::{Location, Secret};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where transactions come from.
    pub source: SourceConfig,
    /// Micro-batching and explanations.
    pub scoring: ScoringConfig,
    /// Fraud alerts.
    pub alerts: AlertsConfig,
    /// Invalid input.
    pub dlq: DlqConfig,
    /// Delivery guarantees: durable sinks, in-flight batches, shutdown deadline.
    pub delivery: DeliveryConfig,
    /// The first model, when the model store is empty.
    pub bootstrap: BootstrapConfig,
    /// Kafka, for `source.kind = "kafka"`.
    pub kafka: crate::stream::kafka::KafkaSettings,
    /// The `/metrics`, `/healthz`, `/readyz` endpoint.
    pub metrics: MetricsConfig,
    /// S3 access shared by every `s3://` location.
    #[serde(default)]
    pub s3: S3Access,
    /// The verdict store.
    #[serde(default)]
    pub verdicts: VerdictsConfig,
    /// The Parquet lake.
    #[serde(default)]
    pub lake: LakeConfig,
    /// The model store.
    #[serde(default)]
    pub models: ModelsConfig,
    /// Periodic retraining (`fraudstream retrain`).
    #[serde(default)]
    pub retrain: crate::pipeline::retrain::RetrainConfig,
}

/// Where transactions come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `file`, `stdin` or `kafka`.
    pub kind: SourceKind,
    /// The file for `kind = "file"`: Kaggle CSV or JSON lines, by extension.
    pub path: String,
    /// Format of stdin: `csv` or `jsonl`.
    pub stdin_format: String,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::File,
            path: "data/creditcard-sample.csv".into(),
            stdin_format: "jsonl".into(),
        }
    }
}

/// Source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A file.
    File,
    /// Standard input.
    Stdin,
    /// Kafka topics (`[kafka]`).
    Kafka,
}

/// Micro-batching and explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Largest batch scored with one model load.
    pub batch_size: usize,
    /// Longest wait for a batch to fill (`5ms`); bounds latency under light traffic.
    #[serde(with = "crate::sinks::lake::duration_str")]
    pub batch_timeout: std::time::Duration,
    /// Feature contributions stored with each verdict.
    pub top_k: usize,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            batch_timeout: std::time::Duration::from_millis(5),
            top_k: 3,
        }
    }
}

/// Fraud alerts (always also logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Append each alert as a JSON line to this file.
    pub file: Option<String>,
    /// Print each alert on stdout.
    pub stdout: bool,
    /// POST each batch of alerts (a JSON array) to this URL (`http://` or `https://`).
    pub webhook: Option<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            file: Some("out/alerts.jsonl".into()),
            stdout: true,
            webhook: None,
        }
    }
}

/// The alert webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL.
    pub url: String,
    /// Per-request timeout (`5s`).
    #[serde(
        with = "crate::sinks::lake::duration_str",
        default = "default_webhook_timeout"
    )]
    pub timeout: std::time::Duration,
    /// Attempts per batch before the sink reports a failure (then, when alerts are
    /// durable, the batch waits and tries again).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Extra request headers, such as `Authorization` (values are not logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

fn default_webhook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_webhook_attempts() -> u32 {
    3
}

/// Delivery guarantees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Sinks that must have a transaction before its offset is committed: any of
    /// `verdicts`, `alerts`, `lake`. Durable sinks are retried while down (the source
    /// pauses); the others are written best-effort and their failures counted.
    pub durable: Vec<crate::stream::process::Sink>,
    /// Batches queued between the source and the scorer (the bounded channel).
    pub in_flight_batches: usize,
    /// On SIGTERM or ctrl-c, how long to drain before giving up; what is not durable by
    /// then stays uncommitted (and is re-read on restart), and the exit status is 1.
    #[serde(with = "crate::sinks::lake::duration_str")]
    pub shutdown_deadline: std::time::Duration,
    /// How long a rebalance waits for revoked partitions' batches to become durable.
    #[serde(with = "crate::sinks::lake::duration_str")]
    pub revoke_timeout: std::time::Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            durable: vec![
                crate::stream::process::Sink::Verdicts,
                crate::stream::process::Sink::Alerts,
            ],
            in_flight_batches: 4,
            shutdown_deadline: std::time::Duration::from_secs(30),
            revoke_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Invalid input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Dead-letter file of the embedded mode: one JSON line per invalid row, with reason.
    pub file: String,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            file: "out/dlq.jsonl".into(),
        }
    }
}

/// The observability endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the endpoint.
    pub enabled: bool,
    /// Address to bind; loopback by default (`127.0.0.1:0` picks a free port, logged).
    pub address: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: "127.0.0.1:9464".into(),
        }
    }
}

/// The first model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Labelled history to train a first model from when the model store is empty.
    pub history: Option<String>,
}

/// How to reach S3 (the bucket and prefix come from each `s3://` location).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Access {
    /// Region.
    pub region: String,
    /// Endpoint URL for S3-compatible servers; unset for AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (needed by most local servers).
    pub force_path_style: bool,
    /// Access key id; unset uses the AWS default credential chain.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
}

impl Default for S3Access {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint: None,
            force_path_style: true,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl S3Access {
    /// Settings for one bucket and prefix.
    #[must_use]
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            force_path_style: self.force_path_style,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
        }
    }
}

/// Which verdict store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictBackend {
    /// The embedded SQLite file at `verdicts.local_path`.
    Local,
    /// The DynamoDB table in `[verdicts.dynamodb]`.
    Dynamodb,
}

/// The verdict store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictsConfig {
    /// `local` or `dynamodb`.
    pub backend: VerdictBackend,
    /// SQLite file for the local backend.
    pub local_path: String,
    /// Expire verdicts this many seconds after scoring (DynamoDB TTL); unset keeps them.
    pub ttl_seconds: Option<u64>,
    /// DynamoDB settings (required when `backend = "dynamodb"`).
    pub dynamodb: Option<DynamoSettings>,
}

impl Default for VerdictsConfig {
    fn default() -> Self {
        Self {
            backend: VerdictBackend::Local,
            local_path: "out/verdicts.db".into(),
            ttl_seconds: None,
            dynamodb: None,
        }
    }
}

/// The Parquet lake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `file://`/plain path, `s3://bucket/prefix` or `hdfs://host:port/dir`.
    pub location: String,
    /// Flush limits, codec and writer id (`[lake.writer]`).
    pub writer: LakeSettings,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            location: "out/lake".into(),
            writer: LakeSettings::default(),
        }
    }
}

/// The model store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// `file://`/plain path or `s3://bucket/prefix`; models go under `models/`.
    pub location: String,
    /// How often a running detector polls `models/LATEST` for a new version (`10s`);
    /// `0s` disables hot reload.
    #[serde(with = "crate::sinks::lake::duration_str")]
    pub poll_interval: std::time::Duration,
    /// The feature list a new version must have; unset: the serving model's.
    pub features: Option<Vec<String>>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            location: "out/registry".into(),
            poll_interval: std::time::Duration::from_secs(10),
            features: None,
        }
    }
}

/// Environment variables starting with this override configuration keys:
/// `FRAUDSTREAM__KAFKA__BROKERS=host:9092` sets `kafka.brokers`.
pub const ENV_PREFIX: &str = "FRAUDSTREAM__";

/// An environment value as TOML: numbers, booleans and arrays keep their type; anything
/// else is a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut t = table;
    for k in parents {
        t = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// A configuration that cannot be used; names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the key.
        message: String,
    },
    /// A value that parses but is not valid.
    #[error("{path}: invalid `{key}`: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Read and validate a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let p = path.as_ref().display().to_string();
        let text = std::fs::read_to_string(path.as_ref()).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    /// Parse and validate TOML text (`path` is for messages), then apply
    /// `FRAUDSTREAM__SECTION__KEY=value` environment overrides.
    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(path, text, std::env::vars())
    }

    /// [`Config::parse`] with explicit environment variables (for tests).
    pub fn parse_with_env(
        path: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(parse_err(format!("environment variable {name}: empty key")));
            }
            set_path(&mut doc, &keys, env_value(&value))
                .map_err(|m| parse_err(format!("environment variable {name}: {m}")))?;
        }
        let c: Self = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        c.validate(path)?;
        Ok(c)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.into(),
            key,
            message,
        };
        if self.verdicts.backend == VerdictBackend::Dynamodb && self.verdicts.dynamodb.is_none() {
            return Err(invalid(
                "verdicts.dynamodb",
                "required when verdicts.backend = \"dynamodb\"".into(),
            ));
        }
        Location::parse(&self.lake.location).map_err(|m| invalid("lake.location", m))?;
        match Location::parse(&self.models.location).map_err(|m| invalid("models.location", m))? {
            Location::Hdfs { .. } => {
                return Err(invalid(
                    "models.location",
                    "the model store needs conditional writes: use a local path or s3://".into(),
                ));
            }
            Location::Local(_) | Location::S3 { .. } => {}
        }
        if self.scoring.batch_size == 0 || self.scoring.batch_size > 100_000 {
            return Err(invalid(
                "scoring.batch_size",
                "must be between 1 and 100000".into(),
            ));
        }
        if !matches!(self.source.stdin_format.as_str(), "csv" | "jsonl") {
            return Err(invalid(
                "source.stdin_format",
                format!("{:?}: use csv or jsonl", self.source.stdin_format),
            ));
        }
        if self.delivery.in_flight_batches == 0 || self.delivery.in_flight_batches > 1024 {
            return Err(invalid(
                "delivery.in_flight_batches",
                "must be between 1 and 1024".into(),
            ));
        }
        if let Some(d) = &self.verdicts.dynamodb
            && !(1..=64).contains(&d.concurrency)
        {
            return Err(invalid(
                "verdicts.dynamodb.concurrency",
                "must be between 1 and 64".into(),
            ));
        }
        if let Some(w) = &self.alerts.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(invalid(
                    "alerts.webhook.url",
                    format!("{:?}: use an http:// or https:// URL", w.url),
                ));
            }
            if w.attempts == 0 {
                return Err(invalid(
                    "alerts.webhook.attempts",
                    "must be at least 1".into(),
                ));
            }
        }
        let r = &self.retrain;
        if !(0.0..1.0).contains(&r.test_fraction) || r.test_fraction == 0.0 {
            return Err(invalid(
                "retrain.test_fraction",
                "must be above 0 and below 1".into(),
            ));
        }
        if r.max_rows < 100 {
            return Err(invalid("retrain.max_rows", "must be at least 100".into()));
        }
        if r.trees == 0 {
            return Err(invalid("retrain.trees", "must be at least 1".into()));
        }
        let l = &self.lake.writer;
        if l.max_rows == 0 {
            return Err(invalid("lake.writer.max_rows", "must be at least 1".into()));
        }
        if l.max_bytes == 0 {
            return Err(invalid(
                "lake.writer.max_bytes",
                "must be at least 1".into(),
            ));
        }
        if l.writer_id.is_empty() || l.writer_id.contains('/') {
            return Err(invalid(
                "lake.writer.writer_id",
                "must be non-empty and contain no `/`".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse() {
        for f in ["config/local.toml", "config/dev.toml", "config/docker.toml"] {
            let path = format!("{}/{f}", env!("CARGO_MANIFEST_DIR"));
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("c.toml", "[lake.writer]\nmax_rowz = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_rowz"), "{e}");
        let e = Config::parse("c.toml", "[verdicts]\nbackend = \"dynamodb\"\n").unwrap_err();
        assert!(e.to_string().contains("`verdicts.dynamodb`"), "{e}");
        let e = Config::parse("c.toml", "[models]\nlocation = \"hdfs://nn:8020/models\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("`models.location`"), "{e}");
        let e = Config::parse("c.toml", "[lake]\nlocation = \"gs://x\"\n").unwrap_err();
        assert!(e.to_string().contains("`lake.location`"), "{e}");
        let e = Config::parse("c.toml", "[lake.writer]\nmax_age = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("max_age"), "{e}");
        let e = Config::parse(
            "c.toml",
            "[delivery]\ndurable = [\"verdicts\", \"email\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("email"), "{e}");
        let e = Config::parse("c.toml", "[alerts.webhook]\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.to_string().contains("`alerts.webhook.url`"), "{e}");
        let e = Config::parse("c.toml", "[delivery]\nin_flight_batches = 0\n").unwrap_err();
        assert!(
            e.to_string().contains("`delivery.in_flight_batches`"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides_keys() {
        let env = vec![
            (
                "FRAUDSTREAM__KAFKA__BROKERS".to_owned(),
                "b1:9092".to_owned(),
            ),
            (
                "FRAUDSTREAM__SCORING__BATCH_SIZE".to_owned(),
                "64".to_owned(),
            ),
            (
                "FRAUDSTREAM__LAKE__WRITER__MAX_AGE".to_owned(),
                "2s".to_owned(),
            ),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let c = Config::parse_with_env("c.toml", "[kafka]\nbrokers = \"a:1\"\n", env).unwrap();
        assert_eq!(c.kafka.brokers, "b1:9092");
        assert_eq!(c.scoring.batch_size, 64);
        assert_eq!(c.lake.writer.max_age, std::time::Duration::from_secs(2));
        let bad = vec![(
            "FRAUDSTREAM__SCORING__BATCH_SIZE".to_owned(),
            "0".to_owned(),
        )];
        let e = Config::parse_with_env("c.toml", "", bad).unwrap_err();
        assert!(e.to_string().contains("scoring.batch_size"), "{e}");
        let unknown = vec![("FRAUDSTREAM__SCORING__BATCHSIZE".to_owned(), "3".to_owned())];
        let e = Config::parse_with_env("c.toml", "", unknown).unwrap_err();
        assert!(e.to_string().contains("batchsize"), "{e}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Config::parse(
            "c.toml",
            "[s3]\naccess_key_id = \"k\"\nsecret_access_key = \"s3cr3t-value\"\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
    }
}
