//! Rebuilding the in-memory store of a Kafka detector at start-up
//! (`velocity.rebuild = true`): the store lives in the process, so a restarted detector
//! would otherwise serve features from empty counters. Before it consumes, it reads its
//! input topics from their first retained offset up to the group's committed offsets,
//! without scoring, and counts every transaction as the stream stage would (the same
//! decoding and ids, so a transaction counted here is recognised if it comes again).
//! Invalid messages are skipped: they went to the dead-letter topic the first time.
//!
//! Bucket counts do not depend on the order transactions arrive in, so the rebuilt
//! counters equal the ones the previous process held, as far as the topics' retention
//! reaches. In a group of several detectors each one counts every partition's history
//! and then only its own partitions' new transactions: a group should share Redis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::default_id;
use crate::kafka::KafkaSettings;
use crate::schema::json::decode_transaction_limited;
use crate::stream::source::Incoming;
use crate::stream::source::labels::{KafkaContext as _, LabelsError};
use crate::velocity::stage::Velocity;

/// Rows counted per call of the velocity stage.
const CHUNK: usize = 4_096;
/// One poll's wait.
const POLL: Duration = Duration::from_millis(200);
/// Empty polls in a row after which the partitions still short of their committed offset
/// are taken as read (a compacted gap or a transaction marker can end a partition below
/// it).
const IDLE_POLLS: u32 = 50;
/// Longest wait for metadata, committed offsets and watermarks.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a rebuild read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Transactions counted.
    pub counted: u64,
    /// Messages skipped as invalid.
    pub skipped: u64,
    /// Whether every partition was read up to its committed offset.
    pub complete: bool,
}

/// Count the history of `kafka.topics` up to the group's committed offsets into
/// `velocity` (on this thread: call it off the async runtime). Stops early, with
/// `complete = false`, at `limit` or when `stop` is cancelled.
pub fn rebuild(
    kafka: &KafkaSettings,
    velocity: &Velocity,
    limit: Duration,
    stop: &CancellationToken,
) -> Result<Rebuilt, LabelsError> {
    let started = Instant::now();
    let mut config = kafka.consumer_config();
    // Reads the group's offsets; never joins it, so static membership is not used.
    config
        .remove("group.instance.id")
        .set("statistics.interval.ms", "0")
        // Reaching a partition's end is reported: with the position then, it ends a
        // partition whose committed offset lies past its last message (a transaction
        // marker) without waiting out the idle polls.
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config
        .create()
        .kafka(|| "invalid `kafka.properties` for the velocity rebuild".into())?;
    let mut wanted = TopicPartitionList::new();
    for topic in &kafka.topics {
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .kafka(|| format!("reading the partitions of {topic:?}"))?;
        for t in md.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                wanted.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(wanted, TIMEOUT)
        .kafka(|| "reading the group's committed offsets".into())?;
    // Read each partition from its first retained offset to its committed one.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut assign = TopicPartitionList::new();
    for e in committed.elements() {
        let Offset::Offset(end) = e.offset() else {
            continue; // nothing committed: nothing counted yet
        };
        let (low, _) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .kafka(|| format!("the offsets of {} partition {}", e.topic(), e.partition()))?;
        if end > low {
            ends.insert((e.topic().to_owned(), e.partition()), end);
            assign
                .add_partition_offset(e.topic(), e.partition(), Offset::Offset(low))
                .kafka(|| format!("{} partition {}", e.topic(), e.partition()))?;
        }
    }
    let mut out = Rebuilt::default();
    if ends.is_empty() {
        out.complete = true;
        return Ok(out);
    }
    consumer
        .assign(&assign)
        .kafka(|| "assigning the input's partitions for the rebuild".into())?;
    tracing::info!(
        partitions = ends.len(),
        "velocity: counting the input's history into the in-memory store"
    );
    let mut rows: Vec<Incoming> = Vec::with_capacity(CHUNK);
    let flush = |rows: &mut Vec<Incoming>, out: &mut Rebuilt| -> Result<(), LabelsError> {
        out.counted += rows.len() as u64;
        // Rows refused for a missing entity id went to the dead-letter topic already,
        // and counted in no entity.
        let mut txs: Vec<crate::schema::Transaction> = rows
            .drain(..)
            .map(|r| r.tx)
            .filter(|t| velocity.refusal(t).is_none())
            .collect();
        velocity
            .compute(&mut txs)
            .map_err(|e| LabelsError::Store(e.0))?;
        Ok(())
    };
    let mut idle = 0;
    while !ends.is_empty() {
        if stop.is_cancelled() || started.elapsed() > limit {
            flush(&mut rows, &mut out)?;
            tracing::warn!(
                counted = out.counted,
                left = ends.len(),
                "velocity rebuild stopped early; the counters miss some history"
            );
            return Ok(out);
        }
        let Some(m) = consumer.poll(POLL) else {
            // Nothing arriving from partitions still short of their committed offset:
            // the rest was compacted away or is a transaction marker, not a message.
            drop_reached(&consumer, &mut ends);
            if ends.is_empty() {
                break;
            }
            idle += 1;
            if idle >= IDLE_POLLS {
                tracing::warn!(
                    left = ends.len(),
                    "velocity rebuild: nothing more arrives below the committed offsets for 10 s; taking those partitions as read"
                );
                break;
            }
            continue;
        };
        idle = 0;
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => {
                drop_reached(&consumer, &mut ends);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "velocity rebuild: read failed; retrying");
                continue;
            }
        };
        let key = (m.topic().to_owned(), m.partition());
        let Some(&end) = ends.get(&key) else {
            continue;
        };
        if m.offset() >= end {
            ends.remove(&key);
            continue;
        }
        let decoded = decode_transaction_limited(
            m.payload().unwrap_or_default(),
            kafka.max_message_bytes,
            || default_id(m.key(), m.topic(), m.partition(), m.offset()),
        );
        match decoded {
            Ok(tx) => rows.push(Incoming::now(tx, 0)),
            Err(_) => out.skipped += 1,
        }
        if m.offset() + 1 >= end {
            ends.remove(&key);
        }
        if rows.len() >= CHUNK {
            flush(&mut rows, &mut out)?;
        }
    }
    flush(&mut rows, &mut out)?;
    out.complete = true;
    tracing::info!(
        counted = out.counted,
        skipped = out.skipped,
        seconds = started.elapsed().as_secs_f64(),
        "velocity: in-memory store rebuilt from the input"
    );
    Ok(out)
}

/// Take as read the partitions whose position (the next offset to read, past any
/// transaction marker already passed) has reached their committed offset.
fn drop_reached(consumer: &BaseConsumer, ends: &mut HashMap<(String, i32), i64>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for e in positions.elements() {
        if let Offset::Offset(at) = e.offset() {
            let key = (e.topic().to_owned(), e.partition());
            if ends.get(&key).is_some_and(|&end| at >= end) {
                ends.remove(&key);
            }
        }
    }
}

/// [`rebuild`], retrying a failure (brokers not answering yet) with backoff until `limit`
/// has passed in all or `stop`: then the store starts from what it holds, which is said.
/// A retry counts nothing twice: the transaction ids already counted are remembered.
pub fn rebuild_with_retries(
    kafka: &KafkaSettings,
    velocity: &Velocity,
    limit: Duration,
    stop: &CancellationToken,
) {
    let started = Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match rebuild(kafka, velocity, left, stop) {
            Ok(_) => return,
            Err(e) if started.elapsed() + backoff < limit && !stop.is_cancelled() => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "velocity rebuild failed; retrying");
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "velocity: the in-memory store was not rebuilt from the input; serving from what it holds");
                return;
            }
        }
    }
}
