//! The dead-letter topic: each invalid message with its original bytes and key, and
//! `reason`, `reason_code`, `source_topic`, `source_partition` and `source_offset`
//! headers.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::{DeadLetter, DeadLetterError, DeadLetterSink, Origin};
use crate::kafka::{KafkaSettings, Publisher};

/// Dead letters to a Kafka topic.
pub struct DeadLetterTopic {
    publisher: Publisher,
    topic: String,
}

impl DeadLetterTopic {
    /// Dead letters to the settings' `dlq_topic`.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            publisher: Publisher::new(settings)?,
            topic: settings.dlq_topic.clone(),
        })
    }
}

#[async_trait]
impl DeadLetterSink for DeadLetterTopic {
    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let producer = self.publisher.producer();
        let sends = letters.iter().map(|l| {
            let reason = l.reason.to_string();
            let (topic, partition, offset) = match &l.origin {
                Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } => (topic.clone(), partition.to_string(), offset.to_string()),
                Origin::File { path, line } => (path.clone(), String::new(), line.to_string()),
            };
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(&reason),
                })
                .insert(Header {
                    key: "reason_code",
                    value: Some(l.reason.code()),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(&topic),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(&partition),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(&offset),
                });
            let mut rec = FutureRecord::to(&self.topic)
                .payload(&l.payload)
                .headers(headers);
            if let Some(k) = &l.key {
                rec = rec.key(k);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        let results = match self.publisher.within(join_all(sends)).await {
            Ok(r) => r,
            Err(e) => {
                return Err(DeadLetterError {
                    failed: (0..letters.len()).collect(),
                    message: e.to_string(),
                });
            }
        };
        let mut failed = Vec::new();
        let mut message = String::new();
        for (i, r) in results.into_iter().enumerate() {
            if let Err((e, _)) = r {
                failed.push(i);
                message = e.to_string();
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DeadLetterError { failed, message })
        }
    }
}
