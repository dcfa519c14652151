//! The Kafka source: a consumer-group member that reads, decodes and batches messages,
//! sends invalid ones to the dead-letter topic, and hands batches to the scorer task. An
//! offset is committed only once everything at or below it is durable (at-least-once;
//! verdicts are keyed by transaction id, so a redelivery rewrites the same item).
//!
//! ```text
//! source task: poll → batcher → decode → DLQ ──bounded channel──► scorer task → acker
//!   ▲  (waits, then pauses its partitions and keeps polling while the channel is full)
//!   └── rebalance handler: waits for revoked partitions' batches, commits, forgets them
//! ```
//! - [`rebalance`]: the consumer context (rebalances, lag).
//!
//! A consumer that fails fatally (fenced by the group after its session timed out while
//! the broker was unreachable, say) is replaced by a new one, after the scorer task has
//! drained what the old one read; its uncommitted offsets are read again and rewrite the
//! same verdicts.

pub mod orphans;
pub mod outbox;
mod pause;
pub mod rebalance;
pub mod rebuild;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::mpsc;

use self::outbox::Outbox;
use self::rebalance::{DetectorContext, partition_list};
use super::{Batch, Incoming, Origin};
use crate::kafka::KafkaSettings;
use crate::metric_names as names;
use crate::schema::json::decode_transaction_limited;
use crate::shutdown::Shutdown;
use crate::stream::acker::{Acker, Commit, SharedPartitions, SourceOffset, lock};
use crate::stream::batcher::Batcher;
use crate::stream::dead_letter::{DeadLetter, DeadLetterSink, send_durably};
use crate::stream::delivery::DeliveryError;
use crate::stream::stages::{Stages, StagesError};
use crate::stream::stats;

/// How long the final commit of a stopping consumer may take.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the source waits for room in the channel before it pauses its partitions.
/// librdkafka drops its prefetched messages on pause and fetches them again on resume, so
/// a brief wait (the usual state when catching up on a backlog) must not pause.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// How the Kafka source runs (from `[scoring]` and `[delivery]`).
#[derive(Debug, Clone, Copy)]
pub struct KafkaSourceOptions {
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub batch_timeout: Duration,
    /// Batches between the source and the scorer (the bounded channel's capacity).
    pub in_flight_batches: usize,
    /// How long a rebalance waits for revoked partitions' batches to become durable
    /// before it gives them up to their new owner (who then re-reads them).
    pub revoke_timeout: Duration,
}

/// Why the Kafka source stopped.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// A client could not be created or subscribed.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// The consumer can never consume again (replaced unless stopping).
    #[error("fatal consumer error: {0}")]
    FatalConsumer(KafkaError),
    /// The dead-letter topic stayed unavailable until the shutdown's abort.
    #[error("dead letters: {0}")]
    DeadLetters(#[from] DeliveryError),
    /// The scorer task failed.
    #[error(transparent)]
    Stages(#[from] StagesError),
}

/// Where offsets are committed: to the group by the consumer, or in the outbox's
/// transactions (exactly-once outputs).
#[derive(Clone)]
pub enum Committer {
    /// The consumer commits.
    Consumer(Arc<StreamConsumer<DetectorContext>>),
    /// The outbox's transactions commit, with the outputs.
    Outbox(Arc<Outbox>),
}

impl Commit for Committer {
    fn commit_async(&self, offsets: &[SourceOffset]) {
        match self {
            Self::Consumer(c) => {
                if let Err(e) = c.commit(&partition_list(offsets), CommitMode::Async) {
                    tracing::warn!(error = %e, "offset commit failed");
                }
            }
            Self::Outbox(o) => o.commit_async(offsets),
        }
    }
}

impl Committer {
    /// Commit `offsets` now (a revoke, the final commit), waiting up to `timeout`.
    pub fn commit_sync(&self, offsets: &[SourceOffset], timeout: Duration) -> Result<(), String> {
        match self {
            Self::Consumer(c) => c
                .commit(&partition_list(offsets), CommitMode::Sync)
                .map_err(|e| e.to_string()),
            Self::Outbox(o) => {
                if o.commit_now(offsets, timeout) {
                    Ok(())
                } else {
                    Err(format!("the transaction did not commit within {timeout:?}"))
                }
            }
        }
    }
}

/// One message, copied out of the consumer.
struct Read {
    offset: SourceOffset,
    /// The assignment generation it was read in.
    generation: u64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    at: Instant,
    produced_at_ms: Option<i64>,
}

/// The Kafka source.
pub struct KafkaSource {
    /// Brokers, topics, group and the dead-letter topic.
    pub settings: KafkaSettings,
    /// Batching and flow control.
    pub options: KafkaSourceOptions,
    /// Where invalid messages go (the dead-letter topic).
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// The transactional outbox, when outputs are exactly once: offsets commit through it.
    pub outbox: Option<Arc<Outbox>>,
}

impl KafkaSource {
    /// Consume until a stop; then stop reading, let the scorer task drain what it was
    /// handed, flush the lake, and commit the final offsets. The shutdown's abort ends a
    /// drain that cannot finish (a sink still down): those offsets stay uncommitted.
    pub async fn run(
        &self,
        stages: Stages,
        shutdown: &Shutdown,
    ) -> (Result<(), KafkaSourceError>, Stages) {
        let mut stages = stages;
        let mut backoff = Duration::from_millis(500);
        let mut fenced = pause::Fenced::default();
        pause::start();
        loop {
            let (result, s) = self.session(stages, shutdown).await;
            stages = s;
            match result {
                Err(KafkaSourceError::FatalConsumer(e))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::FencedInstanceId)
                        && fenced.is_zombie() =>
                {
                    // Another consumer took this one's static identity while this process
                    // was paused (or again and again): it is a zombie, and its
                    // replacement holds the partitions. A new consumer would take the
                    // place back and fight it, so it stops at once without writing (exit
                    // code 75: temporary failure).
                    tracing::error!(error = %e, "this detector's static group identity was taken by another consumer (its replacement): stopping without writing");
                    std::process::exit(75);
                }
                Err(KafkaSourceError::FatalConsumer(e)) if !shutdown.is_stopping() => {
                    metrics::counter!(names::CONSUMER_RESTARTS).increment(1);
                    tracing::error!(error = %e, retry_in = ?backoff, "the consumer failed for good; starting a new one");
                    tokio::select! {
                        () = shutdown.stopping() => return (Ok(()), stages),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                other => return (other, stages),
            }
        }
    }

    /// One consumer's life: from subscribing until a stop (`Ok`) or an error.
    async fn session(
        &self,
        mut stages: Stages,
        shutdown: &Shutdown,
    ) -> (Result<(), KafkaSourceError>, Stages) {
        let shared = SharedPartitions::default();
        let context = DetectorContext {
            shared: shared.clone(),
            revoke_timeout: self.options.revoke_timeout,
            stats: stages.stats.clone(),
            outbox: self.outbox.clone(),
        };
        let consumer: Arc<StreamConsumer<DetectorContext>> =
            match self.settings.consumer_config().create_with_context(context) {
                Ok(c) => Arc::new(c),
                Err(e) => return (Err(e.into()), stages),
            };
        let weak = Arc::downgrade(&consumer);
        shared.set_lost_check(move || weak.upgrade().is_some_and(|c| c.assignment_lost()));
        let watchdog = tokio_util::sync::CancellationToken::new();
        let _stop_watchdog = watchdog.clone().drop_guard();
        tokio::spawn(orphans::watch(
            Arc::downgrade(&consumer),
            self.settings.clone(),
            watchdog,
        ));
        let committer = match &self.outbox {
            Some(o) => {
                o.set_member(Some(consumer.clone() as Arc<dyn outbox::GroupMember>));
                Committer::Outbox(o.clone())
            }
            None => Committer::Consumer(consumer.clone()),
        };
        stages.delivery.set_lake_ownership(Some(
            shared.clone() as Arc<dyn crate::sinks::lake::Ownership>
        ));
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(self.options.in_flight_batches.max(1));
        let acker = Acker::new(shared.clone(), committer.clone());
        let stats = stages.stats.clone();
        let scorer = tokio::spawn(async move {
            let r = stages.run(batch_rx, &acker).await;
            (stages, r)
        });
        let source = self
            .consume(&consumer, &shared, &batch_tx, &stats, shutdown)
            .await;
        drop(batch_tx); // the scorer drains what it was handed, then returns
        let (stages, drained) = match scorer.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        stats::lock(&stages.stats).revoked += lock(&shared).revoked;
        let result = source.and(drained.map_err(KafkaSourceError::from)).map(|()| {
            // Final, synchronous commit of everything durable on partitions still ours.
            let last = lock(&shared).committable_assigned();
            // A failure here (a rebalance started by another member leaving at the same
            // time) only means the partitions' next owner re-reads from the last commit.
            if !last.is_empty()
                && let Err(e) = committer.commit_sync(&last, FINAL_COMMIT_TIMEOUT)
            {
                tracing::warn!(error = %e, "final offset commit failed; the last batches will be read again");
            }
            tracing::info!("stopped; offsets committed");
        });
        (result, stages)
    }

    /// The source task's loop: fill batches by count and time, send invalid messages to
    /// the dead-letter topic, and hand the rest to the scorer, pausing while it is behind.
    async fn consume(
        &self,
        consumer: &StreamConsumer<DetectorContext>,
        shared: &SharedPartitions,
        batch_tx: &mpsc::Sender<Batch>,
        stats: &stats::SharedStats,
        shutdown: &Shutdown,
    ) -> Result<(), KafkaSourceError> {
        let topics: Vec<&str> = self.settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let abort = shutdown.abort_token();
        tracing::info!(brokers = %self.settings.brokers, topics = ?self.settings.topics, group = %self.settings.group_id, "consuming");
        let mut batcher: Batcher<Read> =
            Batcher::new(self.options.batch_size, self.options.batch_timeout);
        // Full batches read while the source was paused, waiting for room.
        let mut ready: VecDeque<Vec<Read>> = VecDeque::new();
        loop {
            let reads = match ready.pop_front() {
                Some(r) => r,
                None => tokio::select! {
                    biased;
                    () = shutdown.stopping() => return Ok(()),
                    () = batch_tx.closed() => return Ok(()), // the scorer failed
                    m = consumer.recv() => match read(m, shared).await? {
                        Some(r) => match batcher.push(r) {
                            Some(full) => full,
                            None => continue,
                        },
                        None => continue,
                    },
                    () = batcher.expired() => batcher.take(),
                },
            };
            metrics::counter!(names::CONSUMED).increment(reads.len() as u64);
            let batch = self
                .prepare(shared, self.dead_letters.as_ref(), reads, stats, &abort)
                .await?;
            if batch.rows.is_empty() && batch.offsets.offsets.is_empty() {
                continue;
            }
            let permit = match batch_tx.try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Closed(())) => return Ok(()), // the scorer failed
                Err(mpsc::error::TrySendError::Full(())) => {
                    // Briefly behind: wait without pausing. librdkafka keeps prefetching
                    // meanwhile, up to queued.max.messages.kbytes.
                    let started = Instant::now();
                    let quick = tokio::select! {
                        biased;
                        () = shutdown.stopping() => return Ok(()),
                        r = tokio::time::timeout(PAUSE_AFTER, batch_tx.reserve()) => r,
                    };
                    match quick {
                        Ok(Ok(p)) => {
                            metrics::histogram!(names::BLOCKED_SECONDS, "stage" => "source")
                                .record(started.elapsed().as_secs_f64());
                            p
                        }
                        Ok(Err(_)) => return Ok(()), // the scorer failed
                        Err(_) => {
                            let waited = wait_for_scorer(
                                consumer,
                                shared,
                                batch_tx,
                                &mut batcher,
                                &mut ready,
                                started,
                            )
                            .await?;
                            match waited {
                                Some(p) => p,
                                None => return Ok(()),
                            }
                        }
                    }
                }
            };
            permit.send(batch);
            metrics::gauge!(names::BATCHES_IN_FLIGHT).increment(1.0);
        }
    }

    /// Decode a batch, make its invalid messages durable in the dead-letter topic, and
    /// track the offsets of partitions still assigned (messages of revoked partitions are
    /// dropped: their new owner reads them). Dead letters are durable before the batch
    /// moves on; their offsets ride with the batch's and are acknowledged with them.
    async fn prepare(
        &self,
        shared: &SharedPartitions,
        dead_letters: &dyn DeadLetterSink,
        reads: Vec<Read>,
        stats: &stats::SharedStats,
        abort: &tokio_util::sync::CancellationToken,
    ) -> Result<Batch, KafkaSourceError> {
        let reads: Vec<Read> = {
            let s = lock(shared);
            reads
                .into_iter()
                .filter(|r| s.owns(&r.offset.0, r.generation))
                .collect()
        };
        let mut rows = Vec::with_capacity(reads.len());
        let mut offsets = Vec::with_capacity(reads.len());
        let mut dead = Vec::new();
        let decoding = Instant::now();
        let mut topic_name: Option<Arc<str>> = None;
        for r in reads {
            let ((topic, partition), offset) = &r.offset;
            let topic_arc = match &topic_name {
                Some(t) if **t == **topic => t.clone(),
                _ => topic_name.insert(Arc::from(topic.as_str())).clone(),
            };
            let origin = Origin::Kafka {
                topic: topic_arc,
                partition: *partition,
                offset: *offset,
            };
            let decoded =
                decode_transaction_limited(&r.payload, self.settings.max_message_bytes, || {
                    default_id(r.key.as_deref(), topic, *partition, *offset)
                });
            match decoded {
                Ok(tx) => rows.push(Incoming {
                    tx,
                    origin,
                    read_at: r.at,
                    produced_at_ms: r.produced_at_ms,
                }),
                Err(reason) => dead.push(DeadLetter {
                    origin,
                    key: r.key,
                    payload: r.payload,
                    reason: reason.into(),
                }),
            }
            offsets.push(r.offset);
        }
        crate::stream::delivery::stage_time("decode", decoding);
        if !dead.is_empty() {
            send_durably(dead_letters, &dead, abort).await?;
        }
        {
            let mut s = stats::lock(stats);
            s.read += offsets.len() as u64;
            s.dead_letters += dead.len() as u64;
        }
        let generation = {
            let mut s = lock(shared);
            for (key, offset) in &offsets {
                s.marks.track(key.clone(), *offset);
            }
            // Under the lock, as assignments change it.
            shared.generation()
        };
        Ok(Batch {
            rows,
            offsets: crate::stream::acker::Tracked {
                generation,
                offsets,
            },
        })
    }
}

/// A message's transaction id when its JSON has none: the message key when it is
/// non-empty UTF-8 (then held to the id contract like any id), else
/// `<topic>-<partition>-<offset>`, which a redelivery reproduces.
pub(crate) fn default_id(key: Option<&[u8]>, topic: &str, partition: i32, offset: i64) -> String {
    key.filter(|k| !k.is_empty())
        .and_then(|k| std::str::from_utf8(k).ok())
        .map_or_else(|| format!("{topic}-{partition}-{offset}"), str::to_owned)
}

/// Copy one message out of the consumer; errors (broker outages, which librdkafka
/// recovers from by itself) are logged and waited out, except fatal ones.
async fn read(
    m: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    shared: &SharedPartitions,
) -> Result<Option<Read>, KafkaSourceError> {
    match m {
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => Err(KafkaSourceError::FatalConsumer(e)),
        Ok(m) => Ok(Some(Read {
            offset: ((m.topic().to_owned(), m.partition()), m.offset()),
            // Rebalance callbacks run inside the poll that returned this message, so the
            // generation now is the one it was fetched in.
            generation: shared.generation(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            at: Instant::now(),
            produced_at_ms: m.timestamp().to_millis(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "consumer error; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(None)
        }
    }
}

/// The scorer has been behind (the channel full) for [`PAUSE_AFTER`], so a sink is slow
/// or down: pause the assigned partitions and keep polling (so the group keeps this
/// member) until there is room. Messages that still arrive are batched; full batches
/// wait in `ready`. Returns `None` when the scorer has stopped.
async fn wait_for_scorer<'a>(
    consumer: &StreamConsumer<DetectorContext>,
    shared: &SharedPartitions,
    batch_tx: &'a mpsc::Sender<Batch>,
    batcher: &mut Batcher<Read>,
    ready: &mut VecDeque<Vec<Read>>,
    started: Instant,
) -> Result<Option<mpsc::Permit<'a, Batch>>, KafkaSourceError> {
    let pause = || {
        lock(shared).paused = true;
        if let Ok(a) = consumer.assignment()
            && let Err(e) = consumer.pause(&a)
        {
            tracing::debug!(error = %e, "pause failed");
        }
    };
    pause();
    let permit = loop {
        tokio::select! {
            biased;
            p = batch_tx.reserve() => break p.ok(),
            m = consumer.recv() => {
                if let Some(r) = read(m, shared).await?
                    && let Some(full) = batcher.push(r)
                {
                    ready.push_back(full);
                    pause(); // partitions assigned since the first pause
                }
            }
        }
    };
    lock(shared).paused = false;
    if let Ok(a) = consumer.assignment()
        && let Err(e) = consumer.resume(&a)
    {
        tracing::debug!(error = %e, "resume failed");
    }
    metrics::histogram!(names::BLOCKED_SECONDS, "stage" => "source")
        .record(started.elapsed().as_secs_f64());
    Ok(permit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_from_the_key_unless_it_is_empty_or_binary() {
        assert_eq!(default_id(Some(b"tx-9"), "t", 1, 7), "tx-9");
        assert_eq!(default_id(Some(b""), "t", 1, 7), "t-1-7");
        assert_eq!(default_id(Some(b"\xff\xfe"), "t", 1, 7), "t-1-7");
        assert_eq!(default_id(None, "t", 0, 0), "t-0-0");
    }
}
