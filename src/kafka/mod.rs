//! Kafka clients shared by the source, the alert topic and the dead-letter topic: the
//! `[kafka]` settings, the consumer and producer configurations that enforce the delivery
//! guarantee, and a [`Publisher`] that replaces a producer whose deliveries hang.
//!
//! - [`publisher`]: the [`Publisher`].

pub mod instance;
pub mod publisher;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};

pub use publisher::Publisher;

use crate::schema::json::DEFAULT_MAX_MESSAGE_BYTES;
use crate::validate::{Invalid, Validate};

/// How to reach Kafka and which topics to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group: detectors in one group share the partitions.
    pub group_id: String,
    /// Dead-letter topic for undecodable or invalid messages.
    pub dlq_topic: String,
    /// Topic for alerts (JSON, on `review` and `block`), for a Kafka source. Unset:
    /// `fraud.alerts` unless `alerts.file` or `alerts.webhook` is set (then no topic);
    /// `""`: none. Set with a file or stdin source, it is refused.
    pub alerts_topic: Option<String>,
    /// Messages larger than this go to the dead-letter topic unparsed.
    pub max_message_bytes: usize,
    /// Extra librdkafka properties for consumer and producer (SASL, TLS, timeouts, …).
    /// Values of properties whose name holds `password`, `secret`, `token` or `key` never
    /// print.
    pub properties: KafkaProperties,
    /// This detector's static group membership (KIP-345, `group.instance.id`), so a
    /// restarted detector takes its place again without a rebalance. A template:
    /// `{hostname}` is the host's name, `{n}` the lowest number no other detector of the
    /// group on this host holds (default `{hostname}-{n}`: several detectors on one host
    /// get distinct ids). An id without `{n}` that another detector on this host holds is
    /// refused at start. `""` turns static membership off (a restart then costs a
    /// rebalance, and on some brokers a long wait for the dead member's session).
    pub instance_id: Option<String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["transactions".into()],
            group_id: "fraudstream".into(),
            dlq_topic: "transactions.dlq".into(),
            alerts_topic: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            properties: KafkaProperties::default(),
            instance_id: None,
        }
    }
}

/// Producers' `message.timeout.ms` unless configured.
const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// librdkafka properties, by name. `Debug` shows the value of a property whose name
/// holds `password`, `secret`, `token` or `key` as `***` (`sasl.password`,
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`, …).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    /// Whether a property of this name holds a secret.
    #[must_use]
    pub fn is_secret(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        ["password", "secret", "token", "key"]
            .iter()
            .any(|w| n.contains(w))
    }
}

impl std::ops::Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KafkaProperties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if Self::is_secret(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

/// librdkafka consumer properties that a producer does not take.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "group.instance.id",
    "group.protocol",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "check.crcs",
];

impl KafkaSettings {
    /// The shared client settings; a producer leaves out consumer-only properties (which
    /// librdkafka would warn about and ignore).
    fn client(&self, producer: bool) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in self.properties.iter() {
            if producer && CONSUMER_ONLY.contains(&k.as_str()) {
                continue;
            }
            c.set(k, v);
        }
        c
    }

    /// The configuration of a consumer with manual commits from the first unread offset.
    /// The delivery guarantee's settings are applied after the user's properties, so no
    /// property can turn auto-commit back on.
    #[must_use]
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = self.client(false);
        for (key, default) in [
            ("auto.offset.reset", "earliest"),
            // Per-partition consumer lag arrives with the statistics.
            ("statistics.interval.ms", "5000"),
            // librdkafka's prefetch queue (64 MiB by default) is most of the consumer's
            // memory; 16 MiB is still tens of thousands of transactions ahead.
            ("queued.max.messages.kbytes", "16384"),
            // Some Kafka-protocol brokers (noida-db among them) ignore fetch.max.bytes and
            // answer a fetch with the whole backlog; librdkafka refuses responses past this
            // limit (100 MB by default) and would retry the same fetch for ever. Kafka
            // itself bounds responses by fetch.max.bytes, so this costs nothing there.
            ("receive.message.max.bytes", "1000000000"),
        ] {
            if !self.properties.contains_key(key) {
                c.set(key, default);
            }
        }
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        c
    }

    /// An idempotent producer that waits for every in-sync replica (again applied after the
    /// user's properties).
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.producer_config().create()
    }

    /// The configuration of [`KafkaSettings::producer`].
    #[must_use]
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.client(true);
        if !self.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS.to_string());
        }
        c.set("enable.idempotence", "true").set("acks", "all");
        // Statistics feed the consumer-lag gauge; producers have no use for them.
        c.set("statistics.interval.ms", "0");
        c
    }

    /// The producers' `message.timeout.ms`: the configured one, or the default.
    #[must_use]
    pub fn message_timeout(&self) -> Duration {
        let ms = self
            .properties
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_MESSAGE_TIMEOUT_MS);
        Duration::from_millis(ms)
    }
}

impl KafkaSettings {
    /// The start-up check: ask the brokers for their topics and refuse to start when one
    /// this detector reads or writes does not exist (naming its key). When the brokers
    /// cannot be reached, say so and go on: the consumer waits for them. `alerts_topic`:
    /// the alerts topic in use, if any.
    pub async fn check_topics(&self, alerts_topic: Option<&str>) -> Result<(), Invalid> {
        use rdkafka::consumer::Consumer as _;
        let client: rdkafka::consumer::BaseConsumer = match self.client(false).create() {
            Ok(c) => c,
            Err(e) => return Err(Invalid::new("properties", e.to_string())),
        };
        let metadata = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(None, Duration::from_secs(10))
        })
        .await;
        let metadata = match metadata {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(brokers = %self.brokers, error = %e, "brokers not reachable at start; the detector waits for them");
                return Ok(());
            }
            Err(e) => return Err(Invalid::new("brokers", e.to_string())),
        };
        let known: std::collections::HashSet<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(rdkafka::metadata::MetadataTopic::name)
            .collect();
        let mut wanted: Vec<(&str, &str)> =
            self.topics.iter().map(|t| ("topics", t.as_str())).collect();
        wanted.push(("dlq_topic", &self.dlq_topic));
        if let Some(t) = alerts_topic {
            wanted.push(("alerts_topic", t));
        }
        for (key, topic) in wanted {
            if !known.contains(topic) {
                return Err(Invalid::new(
                    key,
                    format!("topic {topic:?} does not exist at {}", self.brokers),
                ));
            }
        }
        Ok(())
    }
}

impl Validate for KafkaSettings {
    fn validate(&self) -> Result<(), Invalid> {
        let non_empty = |key: &str, v: &str| {
            if v.trim().is_empty() {
                Err(Invalid::new(key, "must not be empty"))
            } else {
                Ok(())
            }
        };
        non_empty("brokers", &self.brokers)?;
        non_empty("group_id", &self.group_id)?;
        non_empty("dlq_topic", &self.dlq_topic)?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(Invalid::new(
                "topics",
                "name at least one topic, none empty",
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(Invalid::new("max_message_bytes", "must be at least 1"));
        }
        if self.instance_id.is_some() && self.properties.contains_key("group.instance.id") {
            return Err(Invalid::new(
                "instance_id",
                "also set as kafka.properties.\"group.instance.id\": set one of them",
            ));
        }
        Ok(())
    }
}

impl KafkaSettings {
    /// Claim this detector's static membership id (see [`instance`]) and return the
    /// settings its group consumers use (with `group.instance.id`), and the claim, held
    /// for as long as the detector runs. `None` when static membership is off.
    pub fn with_membership(
        &self,
    ) -> Result<(Self, Option<instance::InstanceId>), instance::InstanceError> {
        let template = match (&self.instance_id, self.properties.get("group.instance.id")) {
            (_, Some(id)) => id.clone(),
            (Some(t), None) => t.clone(),
            (None, None) => instance::DEFAULT_TEMPLATE.to_owned(),
        };
        if template.trim().is_empty() {
            tracing::warn!(group = %self.group_id, "kafka.instance_id is empty: static group membership is off; a restarted detector rejoins through a rebalance (and on some brokers waits out the dead member's session)");
            return Ok((self.clone(), None));
        }
        let claim = instance::claim(&template, &self.group_id, &std::env::temp_dir())?;
        tracing::info!(group = %self.group_id, instance_id = %claim.id, "static group membership");
        let mut settings = self.clone();
        settings
            .properties
            .insert("group.instance.id".into(), claim.id.clone());
        Ok((settings, Some(claim)))
    }
}
