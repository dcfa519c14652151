//! Labels (chargebacks) for the entity features, read as they arrive and handed to the
//! velocity stage (`crate::velocity::stage::Velocity::apply_labels`).
//!
//! - [`file`]: a JSON-lines file, read to its end at start-up, then followed.
//! - [`topic`]: a Kafka topic, read whole (memory store) or once per group (Redis).

pub mod file;
pub mod topic;

use rdkafka::error::KafkaError;

use crate::stream::delivery::DeliveryError;

/// Why a labels reader (or the velocity rebuild) stopped.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// A Kafka client call failed: `what` says which.
    #[error("{what}: {source}")]
    Kafka {
        /// The call, with its topic.
        what: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The topic cannot be read: missing, its brokers unreachable, or not read to its
    /// end in time.
    #[error("{0}")]
    Topic(String),
    /// The velocity store refused the labels.
    #[error("velocity store: {0}")]
    Store(String),
    /// The labels file's reader thread failed.
    #[error("labels file reader failed: {0}")]
    File(String),
    /// Stopped before it was done.
    #[error("stopped")]
    Stopped,
    /// Dead letters could not be delivered before the stop.
    #[error(transparent)]
    DeadLetters(#[from] DeliveryError),
    /// The work on the blocking pool panicked or was cancelled.
    #[error("labels task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// `.kafka(|| what)` on a Kafka client result: the error, saying which call failed.
pub trait KafkaContext<T> {
    /// The error, as a [`LabelsError::Kafka`] naming `what`.
    fn kafka(self, what: impl FnOnce() -> String) -> Result<T, LabelsError>;
}

impl<T> KafkaContext<T> for Result<T, KafkaError> {
    fn kafka(self, what: impl FnOnce() -> String) -> Result<T, LabelsError> {
        self.map_err(|source| LabelsError::Kafka {
            what: what(),
            source,
        })
    }
}
