//! `[delivery]`: which sinks must be durable before an offset is committed, the bounded
//! channel, and the shutdown and rebalance deadlines.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A sink that can be required to be durable before offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sink {
    /// The verdict store.
    Verdicts,
    /// The alert sinks (Kafka topic, webhook, file).
    Alerts,
    /// The Parquet lake.
    Lake,
}

impl Sink {
    /// The metric label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Verdicts => "verdicts",
            Self::Alerts => "alerts",
            Self::Lake => "lake",
        }
    }
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
    /// How a Kafka source's alerts topic and dead-letter topic are written:
    /// `exactly_once` (one Kafka transaction with the consumed offsets: `read_committed`
    /// readers see each message once; needs brokers with transactions) or
    /// `at_least_once` (acknowledged sends; a crash can repeat some).
    pub kafka_outputs: KafkaOutputs,
}

/// The guarantee of a Kafka source's output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaOutputs {
    /// Transactional, with the offsets.
    #[default]
    ExactlyOnce,
    /// Acknowledged sends.
    AtLeastOnce,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            durable: vec![Sink::Verdicts, Sink::Alerts],
            in_flight_batches: 4,
            shutdown_deadline: Duration::from_secs(30),
            revoke_timeout: Duration::from_secs(10),
            kafka_outputs: KafkaOutputs::default(),
        }
    }
}

impl crate::validate::Validate for DeliveryConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        crate::validate::in_range("in_flight_batches", self.in_flight_batches, 1..=1024)
    }
}

/// Which sinks must be durable before a source offset is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// The verdict store.
    pub verdicts: bool,
    /// The alert sinks.
    pub alerts: bool,
    /// The lake: offsets wait for the Parquet file holding their rows.
    pub lake: bool,
}

impl Default for Durability {
    /// The verdict store and the alerts.
    fn default() -> Self {
        Self::of(&[Sink::Verdicts, Sink::Alerts])
    }
}

impl Durability {
    /// The set naming `sinks`.
    #[must_use]
    pub fn of(sinks: &[Sink]) -> Self {
        Self {
            verdicts: sinks.contains(&Sink::Verdicts),
            alerts: sinks.contains(&Sink::Alerts),
            lake: sinks.contains(&Sink::Lake),
        }
    }

    /// Whether `sink` must be durable.
    #[must_use]
    pub fn requires(self, sink: Sink) -> bool {
        match sink {
            Sink::Verdicts => self.verdicts,
            Sink::Alerts => self.alerts,
            Sink::Lake => self.lake,
        }
    }
}
