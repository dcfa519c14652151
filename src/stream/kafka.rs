//! The Kafka source: a consumer-group member that scores what it reads, sends invalid
//! messages to a dead-letter topic, publishes fraud alerts to a topic, and commits an
//! offset only once everything at or below it is durable (at-least-once; verdicts are keyed
//! by transaction id, so a redelivery rewrites the same item).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::process::{AlertSink, Processor};
use super::watermark::Watermarks;
use crate::metric_names as names;
use crate::model::Verdict;
use crate::schema::json::{DEFAULT_MAX_MESSAGE_BYTES, decode_transaction_limited};

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
    /// Topic for fraud alerts (JSON); unset disables it.
    pub alerts_topic: Option<String>,
    /// Messages larger than this go to the dead-letter topic unparsed.
    pub max_message_bytes: usize,
    /// Extra librdkafka properties for consumer and producer (SASL, TLS, timeouts, …).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topics: vec!["transactions".into()],
            group_id: "fraudstream".into(),
            dlq_topic: "transactions.dlq".into(),
            alerts_topic: Some("fraud.alerts".into()),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer with manual commits from the first unread offset. The delivery
    /// guarantee's settings are applied after the user's properties, so no property can
    /// turn auto-commit back on.
    pub fn consumer(&self) -> anyhow::Result<StreamConsumer> {
        let mut c = self.client();
        if !self.properties.contains_key("auto.offset.reset") {
            c.set("auto.offset.reset", "earliest");
        }
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        Ok(c.create()?)
    }

    /// An idempotent producer that waits for every in-sync replica (again applied after the
    /// user's properties).
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        let mut c = self.client();
        if !self.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", "30000");
        }
        c.set("enable.idempotence", "true").set("acks", "all");
        Ok(c.create()?)
    }
}

/// Fraud alerts on a Kafka topic, keyed by transaction id; `send` returns once the broker
/// has acknowledged every alert.
pub struct KafkaAlerts {
    /// The producer.
    pub producer: FutureProducer,
    /// The topic.
    pub topic: String,
}

#[async_trait::async_trait]
impl AlertSink for KafkaAlerts {
    async fn send(&mut self, alerts: &[Verdict]) -> anyhow::Result<()> {
        let payloads: Vec<String> = alerts
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        let sends = alerts.iter().zip(&payloads).map(|(v, p)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(&v.tx_id).payload(p),
                Duration::from_secs(30),
            )
        });
        for r in join_all(sends).await {
            r.map_err(|(e, _)| anyhow::anyhow!("alert delivery to {}: {e}", self.topic))?;
        }
        Ok(())
    }
}

/// What a Kafka run did.
#[derive(Debug, Clone, Default)]
pub struct KafkaSummary {
    /// Messages read.
    pub messages: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
}

/// One message, copied out of the consumer.
struct Read {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    at: Instant,
}

/// Consume until `stop` turns true, then commit the final offsets and flush the lake.
pub async fn run(
    settings: &KafkaSettings,
    processor: &mut Processor,
    batch_size: usize,
    batch_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<KafkaSummary> {
    let consumer = settings.consumer()?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let producer = settings.producer()?;
    let mut marks: Watermarks<(String, i32)> = Watermarks::new();
    let mut summary = KafkaSummary::default();
    tracing::info!(brokers = %settings.brokers, topics = ?settings.topics, group = %settings.group_id, "consuming");
    loop {
        // Wait for a first message (or the stop signal), then fill the batch.
        let mut batch: Vec<Read> = Vec::with_capacity(batch_size);
        let first = tokio::select! {
            biased;
            _ = stop.changed() => None,
            m = consumer.recv() => Some(m),
        };
        let Some(first) = first else { break };
        let deadline = tokio::time::Instant::now() + batch_timeout;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // Broker outages surface here; librdkafka reconnects by itself, so wait
                    // and carry on rather than stop.
                    tracing::warn!(error = %e, "consumer error; retrying");
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    break;
                }
            };
            batch.push(Read {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                at: Instant::now(),
            });
            if batch.len() >= batch_size {
                break;
            }
            next = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok();
        }
        summary.messages += batch.len() as u64;
        metrics::counter!(names::CONSUMED).increment(batch.len() as u64);
        for r in &batch {
            marks.track((r.topic.clone(), r.partition), r.offset);
        }

        let mut rows = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for r in &batch {
            let default_id = || {
                r.key
                    .as_deref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .map_or_else(
                        || format!("{}-{}-{}", r.topic, r.partition, r.offset),
                        str::to_owned,
                    )
            };
            match decode_transaction_limited(&r.payload, settings.max_message_bytes, default_id) {
                Ok(tx) => rows.push((tx, r.at)),
                Err(kind) => dead.push((r, kind)),
            }
        }
        // Dead letters first: they must be durable before their offsets are committed.
        let sends = dead.iter().map(|(r, kind)| {
            let partition = r.partition.to_string();
            let offset = r.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(&kind.to_string()),
                })
                .insert(Header {
                    key: "reason_code",
                    value: Some(kind.code()),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(&r.topic),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(&partition),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(&offset),
                });
            let mut rec = FutureRecord::to(&settings.dlq_topic)
                .payload(&r.payload)
                .headers(headers);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        for res in join_all(sends).await {
            res.map_err(|(e, _)| {
                anyhow::anyhow!("dead-letter delivery to {}: {e}", settings.dlq_topic)
            })?;
        }
        for (r, kind) in &dead {
            tracing::debug!(topic = %r.topic, partition = r.partition, offset = r.offset, reason = %kind, "message sent to the dead-letter topic");
        }
        summary.dead_letters += dead.len() as u64;
        for (_, kind) in &dead {
            metrics::counter!(names::DEAD_LETTERS, "reason" => kind.code()).increment(1);
        }

        processor.process(rows).await?;

        let mut advanced = TopicPartitionList::new();
        for r in &batch {
            if let Some(next) = marks.ack(&(r.topic.clone(), r.partition), r.offset) {
                advanced.add_partition_offset(&r.topic, r.partition, Offset::Offset(next))?;
            }
        }
        // A failed commit (say, for a partition revoked meanwhile) is harmless: the
        // partition's owner re-reads from the last commit, and verdicts are idempotent.
        if advanced.count() > 0
            && let Err(e) = consumer.commit(&advanced, CommitMode::Async)
        {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
    // Final, synchronous commit of everything durable.
    let mut last = TopicPartitionList::new();
    for ((topic, partition), next) in marks.committable() {
        last.add_partition_offset(&topic, partition, Offset::Offset(next))?;
    }
    processor.finish().await?;
    if last.count() > 0 {
        consumer.commit(&last, CommitMode::Sync)?;
    }
    tracing::info!(
        messages = summary.messages,
        dead_letters = summary.dead_letters,
        "stopped; offsets committed"
    );
    Ok(summary)
}
