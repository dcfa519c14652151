//! Alerts on a Kafka topic.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use super::{AlertError, AlertSink, MonitoringAlert};
use crate::kafka::{KafkaSettings, Publisher};
use crate::model::Verdict;

/// Fraud alerts on a Kafka topic as JSON, keyed by transaction id; `send` returns once the
/// broker has acknowledged every alert.
pub struct KafkaAlerts {
    publisher: Publisher,
    topic: String,
}

impl KafkaAlerts {
    /// Alerts to `topic` with the settings' producer.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            publisher: Publisher::new(settings)?,
            topic: topic.to_owned(),
        })
    }
}

/// Whether a delivery error can never succeed for this message (too large, refused as
/// invalid), as opposed to a broker being away.
pub fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::TopicAuthorizationFailed
        )
    )
}

#[async_trait]
impl AlertSink for KafkaAlerts {
    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
        self.produce(&super::encode_verdicts(self, alerts)?).await
    }

    async fn send_monitoring(&self, alert: &MonitoringAlert) -> Result<(), AlertError> {
        self.produce(&super::encode_monitoring(self, alert)?).await
    }
}

impl KafkaAlerts {
    /// Produce (key, JSON) pairs and wait for the broker's acknowledgements.
    async fn produce(&self, items: &[(String, String)]) -> Result<(), AlertError> {
        let unavailable = |message: String| AlertError::Unavailable {
            sink: self.describe(),
            message,
        };
        let producer = self.publisher.producer();
        let sends = items.iter().map(|(k, p)| {
            producer.send(
                FutureRecord::to(&self.topic).key(k).payload(p),
                Duration::from_secs(30),
            )
        });
        let results = self
            .publisher
            .within(join_all(sends))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        for r in results {
            if let Err((e, _)) = r {
                return Err(if is_permanent(&e) {
                    AlertError::Refused {
                        sink: self.describe(),
                        message: e.to_string(),
                    }
                } else {
                    unavailable(e.to_string())
                });
            }
        }
        Ok(())
    }
}
