//! The configuration file: one table per concern, layered as embedded defaults, then a
//! TOML file from `config/`, then `FRAUDSTREAM__SECTION__KEY` environment variables.
//! Every table refuses unknown keys, every section validates itself
//! ([`Validate`]), and a bad value is reported with its full key. The detector is built
//! from this one value ([`crate::detector::Detector::build`]): no stage copies fields into
//! option structs of its own, so every default is written once, here or beside the
//! section's type.
//!
//! The checking types ([`Validate`], [`Invalid`], [`UnknownKeys`]) are the leaf module
//! [`crate::validate`], which every section imports.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::validate::{Invalid, UnknownKeys, Validate};

pub use crate::registry::config::{BootstrapConfig, ModelsConfig};
pub use crate::registry::decisions::DecisionsConfig;
pub use crate::sinks::alerts::config::{AlertsConfig, WebhookConfig};
pub use crate::sinks::lake::LakeConfig;
pub use crate::sinks::verdicts::config::{VerdictBackend, VerdictsConfig};
pub use crate::storage::S3Access;
pub use crate::stream::config::{DlqConfig, ScoringConfig};
pub use crate::stream::delivery::DeliveryConfig;
pub use crate::stream::source::config::{SourceConfig, SourceKind};

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
    /// Outcomes: how a verdict becomes approve, review or block.
    #[serde(default)]
    pub decisions: DecisionsConfig,
    /// Drift of the live data from the serving model's training data.
    #[serde(default)]
    pub monitoring: crate::monitoring::MonitoringConfig,
}

/// The alerts topic when a Kafka source names none and no other alert sink is set.
pub const DEFAULT_ALERTS_TOPIC: &str = "fraud.alerts";

/// Where alerts go, as the configuration resolves it for its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertOutputs {
    /// The alerts file, if any.
    pub file: Option<String>,
    /// The Kafka alerts topic, if any.
    pub topic: Option<String>,
}

impl Config {
    /// Where alerts go: `alerts.file` whatever the source (unset: `out/alerts.jsonl` with a
    /// file or stdin source); with a Kafka source, `kafka.alerts_topic` (unset:
    /// [`DEFAULT_ALERTS_TOPIC`] when neither a file nor a webhook is set; `""`: none). A
    /// topic named with a file or stdin source is refused: nothing would produce to it.
    pub fn alert_outputs(&self) -> Result<AlertOutputs, Invalid> {
        let kafka = self.source.kind == SourceKind::Kafka;
        let named = self.kafka.alerts_topic.as_deref().map(str::trim);
        if !kafka && named.is_some_and(|t| !t.is_empty()) {
            return Err(Invalid::new(
                "kafka.alerts_topic",
                format!(
                    "is set but source.kind is {:?}: only a Kafka detector produces to an \
                     alerts topic (use alerts.file or alerts.webhook, or unset it)",
                    self.source.kind
                ),
            ));
        }
        let file = match (&self.alerts.file, kafka) {
            (Some(f), _) => Some(f.clone()),
            (None, false) => Some("out/alerts.jsonl".to_owned()),
            (None, true) => None,
        };
        let topic = match named {
            _ if !kafka => None,
            Some("") => None,
            Some(t) => Some(t.to_owned()),
            None if file.is_none() && self.alerts.webhook.is_none() => {
                Some(DEFAULT_ALERTS_TOPIC.to_owned())
            }
            None => None,
        };
        Ok(AlertOutputs { file, topic })
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

    /// Validate every section; the error names the key in full.
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let sections: [(&str, &dyn Validate); 17] = [
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
            ("decisions", &self.decisions),
            ("monitoring", &self.monitoring),
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
        self.alert_outputs().map_err(|e| ConfigError::Invalid {
            path: path.into(),
            key: e.key,
            message: e.message,
        })?;
        Ok(())
    }
}

impl Validate for MetricsConfig {
    fn validate(&self) -> Result<(), Invalid> {
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
    fn every_configured_alert_sink_is_used_whatever_the_source() {
        let outputs = |toml: &str| Config::parse("c.toml", toml).map(|c| c.alert_outputs());
        let kafka = "[source]\nkind = \"kafka\"\n";
        let of = |file: Option<&str>, topic: Option<&str>| AlertOutputs {
            file: file.map(str::to_owned),
            topic: topic.map(str::to_owned),
        };
        // A file source: the file (default or named), never a topic.
        assert_eq!(
            outputs("").unwrap().unwrap(),
            of(Some("out/alerts.jsonl"), None)
        );
        // Kafka alone: the default topic; with a file or a webhook, only what is named.
        assert_eq!(
            outputs(kafka).unwrap().unwrap(),
            of(None, Some(DEFAULT_ALERTS_TOPIC))
        );
        let with_file = format!("{kafka}[alerts]\nfile = \"a.jsonl\"\n");
        assert_eq!(
            outputs(&with_file).unwrap().unwrap(),
            of(Some("a.jsonl"), None),
            "a named file is used, and no topic is required"
        );
        let webhook = format!("{kafka}[alerts.webhook]\nurl = \"http://127.0.0.1:1/\"\n");
        assert_eq!(outputs(&webhook).unwrap().unwrap(), of(None, None));
        let both = format!("{with_file}[kafka]\nalerts_topic = \"al\"\n");
        assert_eq!(
            outputs(&both).unwrap().unwrap(),
            of(Some("a.jsonl"), Some("al"))
        );
        let off = format!("{kafka}[kafka]\nalerts_topic = \"\"\n");
        assert_eq!(outputs(&off).unwrap().unwrap(), of(None, None));
        // A topic with a file source would be silently unused: refused, naming the key.
        let e = outputs("[kafka]\nalerts_topic = \"al\"\n").unwrap_err();
        assert!(e.to_string().contains("`kafka.alerts_topic`"), "{e}");
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
        let e = Config::parse("c.toml", "[retrain]\nsample_bucket = \"59m\"\n").unwrap_err();
        assert!(e.to_string().contains("`retrain.sample_bucket`"), "{e}");
        let ok = Config::parse("c.toml", "[retrain]\nsample_bucket = \"7d\"\n").unwrap();
        assert_eq!(
            ok.retrain.sample_bucket,
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
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
