//! Fraud alerts: every fraud verdict goes to each configured alert sink (and to the log).
//!
//! - [`local`]: JSON lines in a file and/or `ALERT {json}` lines on stdout.
//! - [`kafka`]: a Kafka topic, keyed by transaction id, acknowledged by the broker.
//! - [`webhook`]: an HTTP(S) POST of each batch as a JSON array, with retries.
//! - [`recent`]: a bounded in-memory ring of the latest alerts, with a live feed, for the
//!   HTTP API and dashboard.
//!
//! Every sink passes the same conformance suite (`tests/alerts.rs`): what `send` accepted
//! can be read back from where it went, once per alert, in order.

pub mod config;
pub mod kafka;
pub mod local;
pub mod recent;
pub mod webhook;

use async_trait::async_trait;

pub use kafka::KafkaAlerts;
pub use local::LocalAlerts;
pub use recent::{RecentAlert, RecentAlerts};
pub use webhook::Webhook;

use crate::model::Verdict;
use crate::retry::Retryable;

/// Why an alert sink did not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The destination is down, slow or throttling: another attempt may succeed.
    #[error("{sink}: {message}")]
    Unavailable {
        /// The sink.
        sink: String,
        /// What happened.
        message: String,
    },
    /// The destination refused the batch and will refuse it again (a 4xx answer, a
    /// message too large, a local write error such as a full disk).
    #[error("{sink}: {message}")]
    Refused {
        /// The sink.
        sink: String,
        /// What happened.
        message: String,
    },
}

impl Retryable for AlertError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Where fraud alerts go besides the log.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// A short name for logs (never includes a secret).
    fn describe(&self) -> String;
    /// Deliver alerts; `Ok` means the destination has them all (durably, for the sinks
    /// that can say so: the broker acknowledged, the endpoint answered 2xx, the file was
    /// written).
    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError>;
    /// Deliver an alert about the model rather than a transaction (drift, a quality
    /// drop), the same way.
    async fn send_monitoring(&self, alert: &MonitoringAlert) -> Result<(), AlertError>;
}

/// An alert about the model rather than one transaction. Its JSON carries `kind`, which
/// fraud alerts (verdicts) do not have.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitoringAlert {
    /// `drift` (a feature's or the score's distribution moved) or `quality_drop` (the
    /// error rate on labelled verdicts rose).
    pub kind: String,
    /// Unique to this alert, and the same on every attempt: the Kafka key and the
    /// webhook's `Idempotency-Key`.
    pub key: String,
    /// The serving model version.
    pub model_version: String,
    /// The feature, or `score`, when the alert is about one variable.
    pub variable: Option<String>,
    /// The measure that crossed its band: a PSI, or an error rate.
    pub value: f64,
    /// The band it is in (`significant`, …).
    pub state: String,
    /// When (ms since the epoch) it crossed the band.
    pub since_ms: u64,
    /// When the alert was raised.
    pub at_ms: u64,
    /// What happened, in words.
    pub message: String,
}

/// Each alert's key and JSON.
fn encode<T: serde::Serialize>(
    sink: &dyn AlertSink,
    alerts: &[T],
    key: impl Fn(&T) -> &str,
) -> Result<Vec<(String, String)>, AlertError> {
    alerts
        .iter()
        .map(|a| Ok((key(a).to_owned(), serde_json::to_string(a)?)))
        .collect::<Result<_, serde_json::Error>>()
        .map_err(|e| AlertError::Refused {
            sink: sink.describe(),
            message: e.to_string(),
        })
}

/// [`encode`] for fraud alerts.
fn encode_verdicts(
    sink: &dyn AlertSink,
    alerts: &[Verdict],
) -> Result<Vec<(String, String)>, AlertError> {
    encode(sink, alerts, |v| v.tx_id.as_str())
}

/// [`encode`] for one monitoring alert.
fn encode_monitoring(
    sink: &dyn AlertSink,
    alert: &MonitoringAlert,
) -> Result<Vec<(String, String)>, AlertError> {
    encode(sink, std::slice::from_ref(alert), |a| a.key.as_str())
}
