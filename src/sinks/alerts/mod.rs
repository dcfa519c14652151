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
}
