//! The `[velocity]` section: entity features, their state store and the labels source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EventTimePolicy, MemoryLimits, VelocitySpec};
use crate::secret::Secret;
use crate::validate::{Invalid, Validate};

/// Where entity state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: one detector, state lost when it stops.
    #[default]
    Memory,
    /// Redis (or Valkey): shared by every detector of the group, survives restarts.
    Redis,
}

/// `[velocity.redis]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` for one server, or
    /// `redis+cluster://[:password@]host:port,host:port` for a Redis Cluster (any of its
    /// nodes; the rest are discovered). A secret: never printed.
    pub url: Secret,
    /// Key prefix: detectors with the same prefix share state.
    pub prefix: String,
    /// How long served features and label markers are kept (the longest a redelivery may
    /// lag and still count once).
    #[serde(with = "humantime_serde")]
    pub served_ttl: Duration,
    /// Longest wait for a connection or an answer before the batch is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Replicas that must hold a batch's writes before it counts as stored (Redis
    /// `WAIT`, on every master of a cluster). 0: the master's answer is enough, and a
    /// master killed outright can lose its last writes before a replica copied them. 1
    /// or more: nothing acknowledged is lost with a master, but a batch waits (retrying)
    /// while a master has fewer replicas than this; run one replica more than this number
    /// to ride through a master's loss without waiting.
    pub wait_replicas: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379"),
            prefix: "fraudstream".into(),
            served_ttl: Duration::from_secs(7 * 86_400),
            timeout: Duration::from_secs(2),
            wait_replicas: 0,
        }
    }
}

/// What happens to a transaction whose event time is out of range (see
/// `velocity.max_future_skew`): it counts in no entity and is scored from what the store
/// holds, either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfRange {
    /// A copy also goes to the dead-letter sink with reason `time_out_of_range`, so the
    /// producer that sent it can be found.
    #[default]
    DeadLetter,
    /// Scored only; counted in `fraudstream_velocity_out_of_range_total`.
    Score,
}

/// `[velocity]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VelocityConfig {
    /// Compute entity features for every transaction.
    pub enabled: bool,
    /// The features (`[velocity.features]`; the handbook's set by default).
    pub features: VelocitySpec,
    /// The state store.
    pub store: StoreKind,
    /// Most entities the in-memory store keeps (the least recently active go first).
    pub max_entities: usize,
    /// Most transaction ids (and labels) remembered so a redelivery counts once.
    pub max_served: usize,
    /// The Redis store (`store = "redis"`).
    pub redis: RedisConfig,
    /// A JSON-lines file of labels (`id`, `Class`, `Time`, `card_id`, `terminal_id`):
    /// read to its end at start-up, then followed as it grows.
    pub labels_path: Option<String>,
    /// A Kafka topic of labels (the same JSON, one per message) on `kafka.brokers`: read
    /// whole by every detector with the memory store, once per group (as
    /// `<kafka.group_id>.labels`) with Redis.
    pub labels_topic: Option<String>,
    /// With the memory store on Kafka: before consuming, count the input topics' history
    /// (first retained offset to the group's committed offset) into the store, so a
    /// restarted detector serves from the counters it had.
    pub rebuild: bool,
    /// How far a transaction's `Time` may be ahead of the event-time watermark (the
    /// newest time counted) and of the wall clock and still count at once. One further
    /// ahead of the watermark counts provisionally until two later records follow it;
    /// one beyond the wall clock never counts (docs/ARCHITECTURE.md, "Event time").
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// How much older than the features' longest reach (the longest window, plus the
    /// label delay for fraud aggregates) a transaction may be, behind the watermark, and
    /// still count.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A transaction out of range: `dead_letter` (scored, and a copy to the dead-letter
    /// sink with reason `time_out_of_range`) or `score` (scored only).
    pub out_of_range: OutOfRange,
}

impl Default for VelocityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            features: VelocitySpec::handbook(),
            store: StoreKind::Memory,
            max_entities: 1_000_000,
            max_served: 1_000_000,
            labels_path: None,
            labels_topic: None,
            rebuild: true,
            redis: RedisConfig::default(),
            max_future_skew: Duration::from_secs(300),
            allowed_lateness: Duration::from_secs(3_600),
            out_of_range: OutOfRange::DeadLetter,
        }
    }
}

impl VelocityConfig {
    /// The event-time policy of the online engine.
    #[must_use]
    pub fn event_time(&self) -> EventTimePolicy {
        EventTimePolicy {
            max_future_skew: self.max_future_skew.as_secs_f64(),
            allowed_lateness: self.allowed_lateness.as_secs_f64(),
            wall_clock: true,
        }
    }

    /// The in-memory store's bounds.
    #[must_use]
    pub fn memory_limits(&self) -> MemoryLimits {
        MemoryLimits {
            horizon: self.features.horizon_buckets(),
            max_entities: self.max_entities,
            max_served: self.max_served,
        }
    }
}

impl Validate for VelocityConfig {
    fn validate(&self) -> Result<(), Invalid> {
        self.features
            .validate()
            .map_err(|e| Invalid::new(format!("features.{}", e.key), e.message))?;
        if self.max_entities < 1_000 {
            return Err(Invalid::new("max_entities", "keep at least 1000 entities"));
        }
        if self.max_future_skew.is_zero() {
            return Err(Invalid::new(
                "max_future_skew",
                "must be positive: two transactions of the same second would disagree",
            ));
        }
        if self.max_served == 0 {
            return Err(Invalid::new(
                "max_served",
                "must be positive: redeliveries are recognised by it",
            ));
        }
        if self
            .labels_topic
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Invalid::new("labels_topic", "must name a topic"));
        }
        if self.store == StoreKind::Redis {
            let url = self.redis.url.expose();
            if !url.starts_with("redis://") && !super::redis::is_cluster_url(url) {
                return Err(Invalid::new(
                    "redis.url",
                    "must start with redis:// (one server) or redis+cluster:// (a cluster: redis+cluster://host:port,host:port)",
                ));
            }
            if self.redis.prefix.is_empty()
                || self
                    .redis
                    .prefix
                    .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
            {
                return Err(Invalid::new(
                    "redis.prefix",
                    "must be non-empty, without spaces or braces (a cluster's hash tags are in braces)",
                ));
            }
            if self.redis.served_ttl < self.features.label_delay.duration() {
                return Err(Invalid::new(
                    "redis.served_ttl",
                    "must be at least features.label_delay: labels are joined by id that long",
                ));
            }
            if self.redis.timeout.is_zero() {
                return Err(Invalid::new("redis.timeout", "must be positive"));
            }
        }
        Ok(())
    }
}

/// The spec named on a command line: `handbook`, or a TOML file with a
/// `[velocity.features]` table (a detector configuration file works).
pub fn spec_from_arg(arg: &str) -> Result<VelocitySpec, SpecFileError> {
    let error = |message: String| SpecFileError {
        arg: arg.to_owned(),
        message,
    };
    if arg == "handbook" {
        return Ok(VelocitySpec::handbook());
    }
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        velocity: Option<toml::Table>,
    }
    let text = std::fs::read_to_string(arg).map_err(|e| error(e.to_string()))?;
    let file: File = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
    let mut velocity = file
        .velocity
        .ok_or_else(|| error("no [velocity] table".into()))?;
    // A `[velocity]` table without `features` computes the default set, as a detector
    // with that configuration does.
    let spec: VelocitySpec = match velocity.remove("features") {
        Some(features) => features
            .try_into()
            .map_err(|e| error(format!("velocity.features: {e}")))?,
        None => VelocitySpec::handbook(),
    };
    spec.validate()
        .map_err(|e| error(format!("velocity.features.{}: {}", e.key, e.message)))?;
    Ok(spec)
}

/// A features file named on a command line that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{arg}: {message}")]
pub struct SpecFileError {
    /// The file as named.
    pub arg: String,
    /// What is wrong with it.
    pub message: String,
}

/// Whether a detector computing `computed` (none when `velocity.enabled = false`) can
/// serve `model`: a model that uses entity features needs exactly its spec.
pub fn check_serves(
    model: &crate::model::Model,
    computed: Option<&VelocitySpec>,
) -> Result<(), String> {
    match (model.velocity(), computed) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(format!(
            "model {} uses entity features, and velocity.enabled is false",
            model.version()
        )),
        (Some(needed), Some(c)) if needed.same_features(c) => Ok(()),
        (Some(needed), Some(_)) => Err(format!(
            "model {} was trained with other entity features ([{}]) than velocity.features computes",
            model.version(),
            needed.names().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_comes_from_a_name_or_a_configuration_file() {
        assert_eq!(spec_from_arg("handbook").unwrap(), VelocitySpec::handbook());
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let plain = file(
            "plain.toml",
            "[velocity]\nenabled = true\n[api]\nenabled = false\n",
        );
        assert_eq!(spec_from_arg(&plain).unwrap(), VelocitySpec::handbook());
        let custom = file(
            "custom.toml",
            "[velocity.features]\ntime_flags = false\n[[velocity.features.entity]]\nname = \"card_id\"\nwindows = [\"1h\"]\naggregates = [\"sum\"]\n",
        );
        assert_eq!(
            spec_from_arg(&custom).unwrap().names(),
            vec!["card_id_sum_1h"]
        );
        let none = file("none.toml", "[api]\nenabled = false\n");
        assert!(
            spec_from_arg(&none)
                .unwrap_err()
                .to_string()
                .contains("no [velocity] table")
        );
        let bad = file(
            "bad.toml",
            "[velocity.features]\nbucket = \"1h\"\n[[velocity.features.entity]]\nname = \"card_id\"\nwindows = [\"90m\"]\naggregates = [\"count\"]\n",
        );
        let e = spec_from_arg(&bad).unwrap_err().to_string();
        assert!(e.contains("velocity.features.entity[0].windows"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let parse = |text: &str| crate::config::Config::parse("t.toml", text);
        let e = parse("[velocity]\nmax_served = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.max_served"), "{e}");
        let e = parse("[velocity]\nstore = \"redis\"\n[velocity.redis]\nurl = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.redis.url"), "{e}");
        let e = parse("[velocity]\nstore = \"redis\"\n[velocity.redis]\nprefix = \"a{b}\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.redis.prefix"), "{e}");
        parse(
            "[velocity]\nstore = \"redis\"\n[velocity.redis]\nurl = \"redis+cluster://h:1,h:2\"\n",
        )
        .expect("a cluster URL");
        let e = parse("[velocity]\nlabels_topic = \" \"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.labels_topic"), "{e}");
        let e = parse("[velocity.features]\nlabel_delay = \"90m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.features.label_delay"), "{e}");
        let e = parse("[velocity]\nstore = \"redis\"\n[velocity.redis]\nserved_ttl = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("velocity.redis.served_ttl"), "{e}");
        assert!(parse("[velocity]\nenabled = true\nstore = \"redis\"\n").is_ok());
    }
}
