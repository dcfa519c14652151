//! The configuration file: one table per concern, layered as embedded defaults, then a
//! TOML file from `config/`, then `FRAUDSTREAM__SECTION__KEY` environment variables.
//! Every table refuses unknown keys, every section validates itself
//! ([`Validate`]), and a bad value is reported with its full key. The detector is built
//! from this one value ([`crate::detector::Detector::build`]): no stage copies fields into
//! option structs of its own, so every default is written once, here or beside the
//! section's type.
//!
//! - [`validate`]: the [`Validate`] trait, [`Invalid`] and [`UnknownKeys`] (for sections
//!   that embed a flattened table).

pub mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use validate::{Invalid, UnknownKeys, Validate};

use crate::aws::AwsConnection;
use crate::sinks::lake::LakeSettings;
use crate::sinks::verdicts::dynamodb::DynamoSettings;
use crate::storage::S3Settings;
use crate::storage::url::Location;
use crate::stream::delivery::Sink;

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
    pub kafka: crate::kafka::KafkaSettings,
    /// The HTTP API, the dashboard, `/metrics`, `/healthz` and `/readyz`.
    pub api: crate::api::ApiConfig,
    /// Deprecated: `metrics.enabled` and `metrics.address` set `api.enabled` and
    /// `api.address`.
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
    /// Entity (per-card, per-terminal) features.
    #[serde(default)]
    pub velocity: crate::velocity::config::VelocityConfig,
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
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Feature contributions stored with each verdict.
    pub top_k: usize,
    /// Which verdicts carry their contributions: `all` (computed in the walk that scores,
    /// about a fifth more work), `alerts` (fraud verdicts only) or `none`.
    pub explain: crate::model::Explain,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            batch_timeout: Duration::from_millis(5),
            top_k: 3,
            explain: crate::model::Explain::All,
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
    /// The URL; a secret (Slack-style hooks carry their token in the path): logs and
    /// errors show only its host.
    pub url: crate::secret::Secret,
    /// Per-request timeout (`5s`).
    #[serde(with = "humantime_serde", default = "default_webhook_timeout")]
    pub timeout: Duration,
    /// Attempts per batch before the sink reports a failure (then, when alerts are
    /// durable, the batch waits and tries again).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Extra request headers, such as `Authorization` (values are not logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::secret::Secret>,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
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
    pub durable: Vec<Sink>,
    /// Batches queued between the source and the scorer (the bounded channel).
    pub in_flight_batches: usize,
    /// On SIGTERM or ctrl-c, how long to drain before giving up; what is not durable by
    /// then stays uncommitted (and is re-read on restart), and the exit status is 1.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// How long a rebalance waits for revoked partitions' batches to become durable.
    #[serde(with = "humantime_serde")]
    pub revoke_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            durable: vec![Sink::Verdicts, Sink::Alerts],
            in_flight_batches: 4,
            shutdown_deadline: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Deprecated alias of `api.enabled`.
    pub enabled: Option<bool>,
    /// Deprecated alias of `api.address`.
    pub address: Option<String>,
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
#[serde(default)]
pub struct S3Access {
    /// Region, endpoint and credentials (`region`, `endpoint`, `access_key_id`,
    /// `secret_access_key`).
    #[serde(flatten)]
    pub connection: AwsConnection,
    /// Path-style addressing (needed by most local servers).
    pub force_path_style: bool,
    /// Keys neither of the above knows (refused by validation).
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownKeys,
}

impl Default for S3Access {
    fn default() -> Self {
        Self {
            connection: AwsConnection::default(),
            force_path_style: true,
            unknown: UnknownKeys::default(),
        }
    }
}

impl S3Access {
    /// Settings for one bucket and prefix.
    #[must_use]
    pub fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            force_path_style: self.force_path_style,
            ..S3Settings::new(bucket, prefix, self.connection.clone())
        }
    }
}

impl Validate for S3Access {
    fn validate(&self) -> Result<(), Invalid> {
        self.unknown.refuse()
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
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The feature list a new version must have; unset: the serving model's.
    pub features: Option<Vec<String>>,
    /// Public keys (`ed25519:<hex>`, from `fraudstream keygen`) one of which must have
    /// signed a version's manifest before it serves; empty: signatures are not checked.
    pub trusted_keys: Vec<String>,
    /// Secret key file that signs the manifests this process publishes (`retrain`, the
    /// first-model bootstrap).
    pub sign_key: Option<String>,
    /// A second model scored on every batch beside the serving one, into the lake and
    /// metrics only: a version, or `candidate` (the newest candidate `retrain` passed,
    /// followed as it changes).
    pub shadow: Option<String>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            location: "out/registry".into(),
            poll_interval: Duration::from_secs(10),
            features: None,
            trusted_keys: Vec::new(),
            sign_key: None,
            shadow: None,
        }
    }
}

impl ModelsConfig {
    /// The trusted public keys, parsed.
    pub fn trusted(&self) -> Result<Vec<crate::registry::PublicKey>, Invalid> {
        self.trusted_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                crate::registry::PublicKey::parse(k)
                    .map_err(|e| Invalid::new(format!("trusted_keys[{i}]"), e.to_string()))
            })
            .collect()
    }
}

/// Environment variables starting with this override configuration keys:
/// `FRAUDSTREAM__KAFKA__BROKERS=host:9092` sets `kafka.brokers`.
pub const ENV_PREFIX: &str = "FRAUDSTREAM__";

/// An environment value, typed by the field it sets: read as TOML (a number, a boolean,
/// an array, a table) when the configuration takes it that way, else as the string it
/// is. So `FRAUDSTREAM__S3__SECRET_ACCESS_KEY=12345` stays the string `"12345"` (and no
/// type error ever prints it), while `FRAUDSTREAM__SCORING__BATCH_SIZE=64` is a number.
fn typed_env_value(doc: &toml::Table, keys: &[String], raw: &str) -> toml::Value {
    let text = toml::Value::String(raw.to_owned());
    let Some(parsed) = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_str())
    else {
        return text;
    };
    let accepts = |value: &toml::Value| {
        let mut trial = doc.clone();
        set_path(&mut trial, keys, value.clone()).is_ok()
            && toml::Value::Table(trial).try_into::<Config>().is_ok()
    };
    if accepts(&parsed) || !accepts(&text) {
        parsed
    } else {
        text
    }
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
        /// The key, in full (`scoring.batch_size`).
        key: String,
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
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (name, value) in overrides {
            let rest = &name[ENV_PREFIX.len()..];
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(parse_err(format!("environment variable {name}: empty key")));
            }
            let typed = typed_env_value(&doc, &keys, &value);
            set_path(&mut doc, &keys, typed)
                .map_err(|m| parse_err(format!("environment variable {name}: {m}")))?;
        }
        let api_set = |key: &str| doc.get("api").and_then(|a| a.get(key)).is_some();
        let explicit = (api_set("enabled"), api_set("address"));
        let mut c: Self = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        c.apply_deprecated(explicit);
        c.validate(path)?;
        Ok(c)
    }

    /// Carry deprecated keys over to their replacements, unless the replacement is set
    /// too (`explicit`: whether `api.enabled` and `api.address` were given): the new key
    /// wins, and the warning names both.
    fn apply_deprecated(&mut self, explicit: (bool, bool)) {
        if let Some(enabled) = self.metrics.enabled.take() {
            if explicit.0 {
                tracing::warn!(
                    ignored = enabled,
                    used = self.api.enabled,
                    "both metrics.enabled (deprecated) and api.enabled are set: api.enabled wins"
                );
            } else {
                tracing::warn!("metrics.enabled is deprecated: use api.enabled");
                self.api.enabled = enabled;
            }
        }
        if let Some(address) = self.metrics.address.take() {
            if explicit.1 {
                tracing::warn!(
                    ignored = %address,
                    used = %self.api.address,
                    "both metrics.address (deprecated) and api.address are set: api.address wins"
                );
            } else {
                tracing::warn!("metrics.address is deprecated: use api.address");
                self.api.address = address;
            }
        }
    }

    /// Validate every section (a configuration built in code rather than loaded).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate("<config>")
    }

    /// The model store of this configuration.
    pub async fn model_store(
        &self,
    ) -> Result<crate::registry::ModelStore, crate::storage::StorageError> {
        let blobs =
            crate::storage::open(&self.models.location, Some(&self.s3.settings("", ""))).await?;
        let store = crate::registry::ModelStore::new(blobs)
            .with_trusted_keys(self.models.trusted().unwrap_or_default());
        match &self.models.sign_key {
            Some(path) => {
                let key = crate::registry::signing::load(Path::new(path)).map_err(|e| {
                    crate::storage::StorageError::Other {
                        store: "models.sign_key".into(),
                        message: e.to_string(),
                        retryable: false,
                    }
                })?;
                Ok(store.with_signer(Some(key)))
            }
            None => Ok(store),
        }
    }

    /// Validate every section; the error names the key in full.
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let sections: [(&str, &dyn Validate); 15] = [
            ("source", &self.source),
            ("scoring", &self.scoring),
            ("alerts", &self.alerts),
            ("dlq", &self.dlq),
            ("delivery", &self.delivery),
            ("bootstrap", &self.bootstrap),
            ("kafka", &self.kafka),
            ("api", &self.api),
            ("metrics", &self.metrics),
            ("s3", &self.s3),
            ("verdicts", &self.verdicts),
            ("lake", &self.lake),
            ("models", &self.models),
            ("retrain", &self.retrain),
            ("velocity", &self.velocity),
        ];
        for (name, section) in sections {
            section.validate().map_err(|e| {
                let e = e.within(name);
                ConfigError::Invalid {
                    path: path.into(),
                    key: e.key,
                    message: e.message,
                }
            })?;
        }
        Ok(())
    }
}

impl Validate for SourceConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if matches!(self.stdin_format.as_str(), "csv" | "jsonl") {
            Ok(())
        } else {
            Err(Invalid::new(
                "stdin_format",
                format!("{:?}: use csv or jsonl", self.stdin_format),
            ))
        }
    }
}

impl Validate for ScoringConfig {
    fn validate(&self) -> Result<(), Invalid> {
        validate::in_range("batch_size", self.batch_size, 1..=100_000)?;
        validate::in_range("top_k", self.top_k, 0..=crate::forest::tree::MAX_FEATURES)
    }
}

impl Validate for AlertsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let Some(w) = &self.webhook else {
            return Ok(());
        };
        let url = w.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Invalid::new(
                "webhook.url",
                "use an http:// or https:// URL",
            ));
        }
        if url.parse::<hyper::Uri>().is_err() {
            return Err(Invalid::new("webhook.url", "not a valid URL"));
        }
        if w.attempts == 0 {
            return Err(Invalid::new("webhook.attempts", "must be at least 1"));
        }
        if w.timeout.is_zero() {
            return Err(Invalid::new("webhook.timeout", "must be above 0"));
        }
        Ok(())
    }
}

impl Validate for DlqConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.file.is_empty() {
            return Err(Invalid::new("file", "must not be empty"));
        }
        Ok(())
    }
}

impl Validate for DeliveryConfig {
    fn validate(&self) -> Result<(), Invalid> {
        validate::in_range("in_flight_batches", self.in_flight_batches, 1..=1024)
    }
}

impl Validate for BootstrapConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match &self.history {
            Some(h) if h.is_empty() => Err(Invalid::new("history", "must not be empty")),
            _ => Ok(()),
        }
    }
}

impl Validate for MetricsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

impl Validate for VerdictsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.ttl_seconds.is_some()
            && self.backend == VerdictBackend::Dynamodb
            && self
                .dynamodb
                .as_ref()
                .is_some_and(|d| d.ttl_attribute.is_none())
        {
            return Err(Invalid::new(
                "ttl_seconds",
                "DynamoDB expires items by the attribute named in verdicts.dynamodb.ttl_attribute; set it too",
            ));
        }
        if self.ttl_seconds == Some(0) {
            return Err(Invalid::new("ttl_seconds", "must be at least 1"));
        }
        match (&self.backend, &self.dynamodb) {
            (VerdictBackend::Dynamodb, None) => Err(Invalid::new(
                "dynamodb",
                "required when verdicts.backend = \"dynamodb\"",
            )),
            (_, Some(d)) => d.validate().map_err(|e| e.within("dynamodb")),
            (VerdictBackend::Local, None) if self.local_path.is_empty() => {
                Err(Invalid::new("local_path", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

impl Validate for LakeConfig {
    fn validate(&self) -> Result<(), Invalid> {
        Location::parse(&self.location).map_err(|m| Invalid::new("location", m))?;
        self.writer.validate().map_err(|e| e.within("writer"))
    }
}

impl Validate for ModelsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match Location::parse(&self.location).map_err(|m| Invalid::new("location", m))? {
            Location::Hdfs { .. } => Err(Invalid::new(
                "location",
                "the model store needs conditional writes: use a local path or s3://",
            )),
            Location::Local(_) | Location::S3 { .. } => {
                if self.features.as_ref().is_some_and(Vec::is_empty) {
                    return Err(Invalid::new("features", "must not be empty"));
                }
                self.trusted()?;
                if let Some(path) = &self.sign_key {
                    crate::registry::signing::load(Path::new(path))
                        .map_err(|e| Invalid::new("sign_key", e.to_string()))?;
                }
                if self
                    .shadow
                    .as_deref()
                    .is_some_and(|v| v.is_empty() || v.contains('/'))
                {
                    return Err(Invalid::new("shadow", "must be a version or \"candidate\""));
                }
                Ok(())
            }
        }
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
    fn a_new_key_wins_over_its_deprecated_alias() {
        let both = "[metrics]\naddress = \"127.0.0.1:1111\"\nenabled = false\n\
                    [api]\naddress = \"127.0.0.1:2222\"\nenabled = true\n";
        let c = Config::parse("c.toml", both).unwrap();
        assert_eq!(c.api.address, "127.0.0.1:2222");
        assert!(c.api.enabled);
        let old = "[metrics]\naddress = \"127.0.0.1:1111\"\n";
        let c = Config::parse("c.toml", old).unwrap();
        assert_eq!(
            c.api.address, "127.0.0.1:1111",
            "alone, the alias still applies"
        );
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
        let e = Config::parse("c.toml", "[models]\ntrusted_keys = [\"ed25519:00\"]\n").unwrap_err();
        assert!(e.to_string().contains("`models.trusted_keys[0]`"), "{e}");
        let e = Config::parse("c.toml", "[models]\nsign_key = \"/no/such/key\"\n").unwrap_err();
        assert!(e.to_string().contains("`models.sign_key`"), "{e}");
        let e = Config::parse("c.toml", "[retrain]\nmin_gate_frauds = 0\n").unwrap_err();
        assert!(e.to_string().contains("`retrain.min_gate_frauds`"), "{e}");
        let e = Config::parse("c.toml", "[retrain]\nholdout = \"none\"\n").unwrap_err();
        assert!(e.to_string().contains("`retrain.holdout`"), "{e}");
    }

    #[test]
    fn flattened_sections_still_refuse_unknown_keys() {
        let e = Config::parse("c.toml", "[s3]\nregoin = \"eu-west-1\"\n").unwrap_err();
        assert!(e.to_string().contains("`s3.regoin`"), "{e}");
        let e = Config::parse(
            "c.toml",
            "[verdicts]\nbackend = \"dynamodb\"\n[verdicts.dynamodb]\ntable = \"t\"\nendpont = \"http://x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`verdicts.dynamodb.endpont`"), "{e}");
        let c = Config::parse(
            "c.toml",
            "[s3]\nregion = \"eu-west-1\"\nendpoint = \"http://s3\"\nforce_path_style = false\n\
             [verdicts]\nbackend = \"dynamodb\"\n[verdicts.dynamodb]\ntable = \"t\"\nregion = \"eu-west-2\"\nconcurrency = 8\n",
        )
        .unwrap();
        assert_eq!(c.s3.connection.region, "eu-west-1");
        assert_eq!(c.s3.connection.endpoint.as_deref(), Some("http://s3"));
        assert!(!c.s3.force_path_style);
        let d = c.verdicts.dynamodb.unwrap();
        assert_eq!(
            (d.connection.region.as_str(), d.concurrency),
            ("eu-west-2", 8)
        );
        assert_eq!(
            Config::default()
                .verdicts
                .dynamodb
                .map(|d| d.connection.region),
            None
        );
        assert_eq!(Config::default().s3.connection.region, "us-east-1");
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
        assert_eq!(c.lake.writer.max_age, Duration::from_secs(2));
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
    fn environment_values_take_the_type_of_their_field() {
        let env = vec![
            (
                "FRAUDSTREAM__S3__SECRET_ACCESS_KEY".to_owned(),
                "1234567890".to_owned(),
            ),
            (
                "FRAUDSTREAM__S3__ACCESS_KEY_ID".to_owned(),
                "true".to_owned(),
            ),
            (
                "FRAUDSTREAM__KAFKA__PROPERTIES__SASL.PASSWORD".to_owned(),
                "99".to_owned(),
            ),
            ("FRAUDSTREAM__ALERTS__STDOUT".to_owned(), "false".to_owned()),
            (
                "FRAUDSTREAM__KAFKA__TOPICS".to_owned(),
                "[\"a\", \"b\"]".to_owned(),
            ),
        ];
        let c = Config::parse_with_env("c.toml", "", env).unwrap();
        assert_eq!(
            c.s3.connection
                .secret_access_key
                .as_ref()
                .map(|s| s.expose()),
            Some("1234567890")
        );
        assert_eq!(c.s3.connection.access_key_id.as_deref(), Some("true"));
        assert_eq!(
            c.kafka.properties.get("sasl.password").map(String::as_str),
            Some("99")
        );
        assert!(!c.alerts.stdout);
        assert_eq!(c.kafka.topics, ["a", "b"]);
        let debug = format!("{c:?}");
        assert!(!debug.contains("1234567890"), "{debug}");
        assert!(debug.contains("\"sasl.password\": \"***\""), "{debug}");
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
