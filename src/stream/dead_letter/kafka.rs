//! The dead-letter topic: each invalid message with its original bytes and key, and
//! `reason`, `reason_code`, `source_topic`, `source_partition` and `source_offset`
//! headers. A record too large for the producer (or refused as too large) is sent
//! bounded: its first [`BOUNDED_BYTES`], with `original_size`, `original_sha256` and
//! `truncated` headers, so a dead letter can never be refused for its size.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::{DeadLetter, DeadLetterError, DeadLetterSink, Origin};
use crate::kafka::{KafkaSettings, Publisher};
use crate::stream::source::kafka::outbox::{Outbox, OutboxMessage};

/// How much of an oversized payload (or key) a bounded dead letter keeps.
pub const BOUNDED_BYTES: usize = 1024;

/// Room left for headers, key and framing below the producer's `message.max.bytes`.
const HEADROOM: usize = 16 * 1024;

/// librdkafka's default `message.max.bytes`.
const DEFAULT_PRODUCER_MAX_BYTES: usize = 1_000_000;

/// Dead letters to a Kafka topic.
pub struct DeadLetterTopic {
    publisher: Publisher,
    topic: String,
    /// Payload plus key above this is sent bounded.
    max_bytes: usize,
}

impl DeadLetterTopic {
    /// Dead letters to the settings' `dlq_topic`.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let producer_max = settings
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_PRODUCER_MAX_BYTES);
        Ok(Self {
            publisher: Publisher::new(settings)?,
            topic: settings.dlq_topic.clone(),
            max_bytes: producer_max.saturating_sub(HEADROOM).max(BOUNDED_BYTES * 2),
        })
    }
}

/// The headers of one dead letter, and its payload and key as sent.
struct Prepared<'a> {
    headers: OwnedHeaders,
    payload: &'a [u8],
    key: Option<&'a [u8]>,
}

fn prepare(l: &DeadLetter, max_bytes: usize) -> Prepared<'_> {
    let (topic, partition, offset) = match &l.origin {
        Origin::Kafka {
            topic,
            partition,
            offset,
        } => (topic.to_string(), partition.to_string(), offset.to_string()),
        Origin::File { path, line } => (path.to_string(), String::new(), line.to_string()),
    };
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        ("reason", l.reason.message.as_str()),
        ("reason_code", l.reason.code),
        ("source_topic", &topic),
        ("source_partition", &partition),
        ("source_offset", &offset),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let key_len = l.key.as_ref().map_or(0, Vec::len);
    let oversized = l.reason.code == "too_large" || l.payload.len() + key_len > max_bytes;
    if !oversized {
        return Prepared {
            headers,
            payload: &l.payload,
            key: l.key.as_deref(),
        };
    }
    let size = l.payload.len().to_string();
    let sha = hex(&Sha256::digest(&l.payload));
    for (key, value) in [
        ("truncated", "true"),
        ("original_size", size.as_str()),
        ("original_sha256", sha.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    Prepared {
        headers,
        payload: &l.payload[..l.payload.len().min(BOUNDED_BYTES)],
        key: l.key.as_deref().map(|k| &k[..k.len().min(BOUNDED_BYTES)]),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _infallible = write!(s, "{b:02x}");
        s
    })
}

#[async_trait]
impl DeadLetterSink for DeadLetterTopic {
    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let producer = self.publisher.producer();
        let prepared: Vec<Prepared<'_>> =
            letters.iter().map(|l| prepare(l, self.max_bytes)).collect();
        let sends = prepared.into_iter().map(|p| {
            let mut rec = FutureRecord::to(&self.topic)
                .payload(p.payload)
                .headers(p.headers);
            if let Some(k) = p.key {
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

impl DeadLetterTopic {
    /// `l` as an outbox message (with its bounded payload and headers), if it comes from
    /// a Kafka message.
    fn staged(&self, l: &DeadLetter) -> Option<OutboxMessage> {
        let Origin::Kafka {
            topic,
            partition,
            offset,
        } = &l.origin
        else {
            return None;
        };
        let p = prepare(l, self.max_bytes);
        Some(OutboxMessage {
            origin: ((topic.to_string(), *partition), *offset),
            topic: Arc::from(self.topic.as_str()),
            key: p.key.map(<[u8]>::to_vec),
            payload: p.payload.to_vec(),
            headers: Some(p.headers),
        })
    }
}

/// Dead letters exactly once: staged in the outbox and written in the transaction that
/// commits their offsets (`delivery.kafka_outputs = "exactly_once"`). Letters not from a
/// Kafka message go to the topic directly.
pub struct OutboxDeadLetters {
    topic: Arc<DeadLetterTopic>,
    outbox: Arc<Outbox>,
}

impl OutboxDeadLetters {
    /// Letters for `topic`, through `outbox`.
    #[must_use]
    pub fn new(topic: Arc<DeadLetterTopic>, outbox: Arc<Outbox>) -> Self {
        Self { topic, outbox }
    }
}

#[async_trait]
impl DeadLetterSink for OutboxDeadLetters {
    fn describe(&self) -> String {
        format!("{} (transactional)", self.topic.describe())
    }

    async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let mut staged = Vec::with_capacity(letters.len());
        let mut direct = Vec::new();
        for l in letters {
            match self.topic.staged(l) {
                Some(m) => staged.push(m),
                None => direct.push(l.clone()),
            }
        }
        if !direct.is_empty() {
            self.topic.send(&direct).await?;
        }
        self.outbox.stage(staged).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rdkafka::message::Headers;

    use super::*;
    use crate::schema::RecordErrorKind;

    fn letter(payload: usize, kind: RecordErrorKind) -> DeadLetter {
        DeadLetter {
            origin: Origin::Kafka {
                topic: Arc::from("tx"),
                partition: 2,
                offset: 41,
            },
            key: Some(b"k".to_vec()),
            payload: vec![b'x'; payload],
            reason: kind.into(),
        }
    }

    fn header<'a>(p: &'a Prepared<'_>, key: &str) -> Option<&'a [u8]> {
        p.headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
    }

    #[test]
    fn small_letters_go_whole_and_large_ones_bounded() {
        let json = RecordErrorKind::Json {
            message: "bad".into(),
        };
        let l = letter(500, json.clone());
        let p = prepare(&l, 100_000);
        assert_eq!(p.payload.len(), 500);
        assert_eq!(header(&p, "reason_code"), Some(&b"invalid_json"[..]));
        assert_eq!(header(&p, "source_offset"), Some(&b"41"[..]));
        assert!(header(&p, "truncated").is_none());

        let l = letter(5_000_000, json);
        let p = prepare(&l, 100_000);
        assert_eq!(p.payload.len(), BOUNDED_BYTES);
        assert_eq!(header(&p, "original_size"), Some(&b"5000000"[..]));
        assert_eq!(header(&p, "original_sha256").map(<[u8]>::len), Some(64));

        let l = letter(
            70_000,
            RecordErrorKind::TooLarge {
                size: 70_000,
                limit: 65_536,
            },
        );
        let p = prepare(&l, 1_000_000);
        assert_eq!(
            p.payload.len(),
            BOUNDED_BYTES,
            "too_large is always bounded"
        );
        assert_eq!(header(&p, "truncated"), Some(&b"true"[..]));
    }
}
