//! A labels topic (`velocity.labels_topic`): the labels file's JSON, one label per
//! message, on Kafka. How it is read depends on where the counters live:
//! - **memory store**: each detector's counters are its own, so each reads every
//!   partition from the beginning, catches up to the end offsets it found at start-up
//!   before it scores anything, then follows; it commits nothing.
//! - **Redis store**: the counters are shared, so the group reads the topic once, as the
//!   consumer group `<kafka.group_id>.labels`; offsets are committed after the labels are
//!   in Redis, and a label read again after a crash is applied once (Redis keeps a marker
//!   per labelled transaction for `velocity.redis.served_ttl`). Each detector then joins
//!   the labels it reads with the verdicts it served: its online precision and recall are
//!   measured on its share of the labels.
//!
//! A message that is not a label goes to the dead-letter topic with the reason
//! `invalid_label`; it never stops the reader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{KafkaContext as _, LabelsError};
use crate::kafka::KafkaSettings;
use crate::metric_names as names;
use crate::stream::dead_letter::{DeadLetter, DeadLetterSink, Origin, Reason, send_durably};
use crate::velocity::LabelEvent;
use crate::velocity::stage::{Velocity, decode_label};

/// Most labels applied per store call.
const CHUNK: usize = 4_096;
/// How long a chunk keeps filling once its first message is in.
const LINGER: Duration = Duration::from_millis(50);
/// Longest wait for the topic's metadata or end offsets.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait after a consumer error before reading again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// A labels topic being read.
pub struct LabelsTopic {
    consumer: Arc<StreamConsumer>,
    /// Its configuration, to make a new one after a fatal error.
    config: rdkafka::ClientConfig,
    /// Messages read while a chunk was being applied, for the next chunk.
    carry: Chunk,
    topic: Arc<str>,
    /// Consumed in a group, committing (the Redis store); else read whole, uncommitted.
    grouped: bool,
    /// Reading (subscribed, or every partition assigned).
    assigned: bool,
    /// Where messages that are not labels go (`None`: counted and skipped, for
    /// `retrain`).
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

impl std::fmt::Debug for LabelsTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelsTopic")
            .field("topic", &self.topic)
            .field("grouped", &self.grouped)
            .finish_non_exhaustive()
    }
}

/// Labels and dead letters read from one chunk of messages, and where to commit.
#[derive(Default)]
struct Chunk {
    labels: Vec<LabelEvent>,
    dead: Vec<DeadLetter>,
    /// Next offset per partition.
    next: HashMap<i32, i64>,
    /// Partitions read to their end (a reader without a group): what the catch-up waits
    /// for, since a partition's last offset may hold no message (a transaction marker,
    /// a compacted record).
    ended: Vec<i32>,
}

impl LabelsTopic {
    /// A reader of `topic` on the brokers of `kafka`: in the group `<group_id>.labels`
    /// when `grouped`, else from the beginning of every partition.
    pub async fn open(
        kafka: &KafkaSettings,
        topic: &str,
        grouped: bool,
        dead_letters: Option<Arc<dyn DeadLetterSink>>,
    ) -> Result<Self, LabelsError> {
        let mut config = kafka.consumer_config();
        config
            .set("group.id", format!("{}.labels", kafka.group_id))
            // The consumer-lag gauge is the transaction stream's.
            .set("statistics.interval.ms", "0")
            // Read whole: the client says when a partition's end is reached, markers
            // included, which its last message's offset cannot tell.
            .set(
                "enable.partition.eof",
                if grouped { "false" } else { "true" },
            );
        // A `group.instance.id` is kept: static membership in this group too (instance ids
        // are unique per group), so a restarted detector takes its place at once.
        let consumer: Arc<StreamConsumer> = Arc::new(
            config
                .create()
                .kafka(|| "invalid `kafka.properties` for the labels consumer".into())?,
        );
        let mut reader = Self {
            consumer,
            config,
            carry: Chunk::default(),
            topic: topic.into(),
            grouped,
            assigned: false,
            dead_letters,
        };
        match partitions(&reader.consumer, topic).await? {
            Partitions::Missing => {
                return Err(LabelsError::Topic(format!(
                    "invalid `velocity.labels_topic`: topic {topic:?} does not exist at {}",
                    kafka.brokers
                )));
            }
            Partitions::Unreachable(why) => {
                tracing::warn!(topic, error = %why, "brokers not reachable at start; the labels reader waits for them");
            }
            Partitions::Found(p) => reader.assign(&p)?,
        }
        Ok(reader)
    }

    /// Start reading: subscribe (grouped), or assign `partitions` from their beginning.
    fn assign(&mut self, partitions: &[i32]) -> Result<(), LabelsError> {
        let topic = &*self.topic;
        if self.grouped {
            self.consumer
                .subscribe(&[topic])
                .kafka(|| format!("subscribing to velocity.labels_topic {topic:?}"))?;
        } else {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .kafka(|| format!("velocity.labels_topic {topic:?} partition {p}"))?;
            }
            self.consumer
                .assign(&tpl)
                .kafka(|| format!("assigning velocity.labels_topic {topic:?}"))?;
        }
        self.assigned = true;
        Ok(())
    }

    /// A new consumer in place of one that failed fatally (fenced out of its group:
    /// static membership after a poll interval missed), reading on from the committed
    /// offsets (a label applied again counts once).
    fn reopen(&mut self) -> Result<(), LabelsError> {
        metrics::counter!(names::CONSUMER_RESTARTS).increment(1);
        tracing::warn!(topic = %self.topic, "labels consumer failed fatally; a new one reads on from the committed offsets");
        self.consumer = Arc::new(
            self.config
                .create()
                .kafka(|| "invalid `kafka.properties` for the labels consumer".into())?,
        );
        self.assigned = false;
        self.carry = Chunk::default();
        Ok(())
    }

    /// After a fatal consumer error: a new consumer, assigned again (until `stop`).
    async fn recover(
        &mut self,
        fatal: &KafkaError,
        stop: &CancellationToken,
    ) -> Result<(), LabelsError> {
        tracing::warn!(topic = %self.topic, error = %fatal, "labels consumer failed");
        self.reopen()?;
        self.wait_assigned(stop).await
    }

    /// Assign once the brokers answer (they did not at start-up), retrying until `stop`.
    async fn wait_assigned(&mut self, stop: &CancellationToken) -> Result<(), LabelsError> {
        while !self.assigned {
            match partitions(&self.consumer, &self.topic).await? {
                Partitions::Found(p) => self.assign(&p)?,
                Partitions::Missing | Partitions::Unreachable(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return Err(LabelsError::Stopped),
                        () = tokio::time::sleep(ERROR_PAUSE * 4) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Read until every partition reaches the end offset it has now (memory store: the
    /// counters must hold what the topic knows before scoring starts; a group reader has
    /// its state in Redis already and returns at once). Gives up after `limit`, saying
    /// so: the rest is applied while following. Returns how many labels were applied.
    pub async fn catch_up(
        &mut self,
        velocity: &Arc<Velocity>,
        limit: Duration,
        stop: &CancellationToken,
    ) -> Result<usize, LabelsError> {
        if self.grouped {
            return Ok(0);
        }
        let deadline = tokio::time::Instant::now() + limit;
        let ready = tokio::time::timeout_at(deadline, async {
            self.wait_assigned(stop).await?;
            end_offsets(&self.consumer, &self.topic).await
        })
        .await;
        let Ok(Ok(ends)) = ready else {
            tracing::warn!(topic = %self.topic, "labels topic unreachable at start-up; its labels are applied while following");
            return Ok(0);
        };
        let (applied, complete) = self
            .read_until(&ends, deadline, stop, &mut Target::Velocity(velocity))
            .await?;
        if !complete && !stop.is_cancelled() {
            tracing::warn!(topic = %self.topic, applied, "labels topic not caught up at start-up; the rest is applied while following");
        }
        Ok(applied)
    }

    /// Read until every partition reaches `ends` (or `deadline`, or `stop`), handing the
    /// labels to `target`. Returns how many, and whether the end was reached.
    async fn read_until(
        &mut self,
        ends: &HashMap<i32, (i64, i64)>,
        deadline: tokio::time::Instant,
        stop: &CancellationToken,
        target: &mut Target<'_>,
    ) -> Result<(usize, bool), LabelsError> {
        // A partition starts at its first retained offset: one whose messages have all
        // aged out (first = end) has nothing to read.
        let mut at: HashMap<i32, i64> = ends.iter().map(|(&p, &(first, _))| (p, first)).collect();
        let behind = |at: &HashMap<i32, i64>| {
            ends.iter()
                .any(|(p, &(first, end))| at.get(p).copied().unwrap_or(first) < end)
        };
        let mut applied = 0;
        while behind(&at) {
            let chunk = tokio::select! {
                () = stop.cancelled() => return Ok((applied, false)),
                () = tokio::time::sleep_until(deadline) => return Ok((applied, false)),
                c = self.read_chunk() => c,
            };
            let chunk = match chunk {
                Ok(c) => c,
                Err(fatal) => {
                    self.recover(&fatal, stop).await?;
                    // A reader without a group starts again from the beginning.
                    at = ends.iter().map(|(&p, &(first, _))| (p, first)).collect();
                    continue;
                }
            };
            for (&p, &o) in &chunk.next {
                let a = at.entry(p).or_insert(o);
                *a = (*a).max(o);
            }
            // At its end now, so past the end it had when the catch-up began.
            for p in &chunk.ended {
                if let Some(&(_, end)) = ends.get(p) {
                    at.insert(*p, end);
                }
            }
            applied += self.apply(chunk, target, stop).await?;
        }
        Ok((applied, true))
    }

    /// Apply labels as they arrive, until `stop`.
    pub async fn follow(
        mut self,
        velocity: Arc<Velocity>,
        stop: CancellationToken,
    ) -> Result<(), LabelsError> {
        if let Err(e) = self.wait_assigned(&stop).await {
            return if stop.is_cancelled() { Ok(()) } else { Err(e) };
        }
        loop {
            let chunk = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                c = self.read_chunk() => c,
            };
            let chunk = match chunk {
                Ok(c) => c,
                Err(fatal) => {
                    if let Err(e) = self.recover(&fatal, &stop).await {
                        return if stop.is_cancelled() { Ok(()) } else { Err(e) };
                    }
                    continue;
                }
            };
            if let Err(e) = self
                .apply(chunk, &mut Target::Velocity(&velocity), &stop)
                .await
            {
                // Only the shutdown ends a dead-letter retry: what was not committed is
                // read again next start.
                tracing::info!(topic = %self.topic, error = %e, "labels reader stopped");
                return if stop.is_cancelled() { Ok(()) } else { Err(e) };
            }
        }
    }

    /// Wait for a message (or a partition's end), then take what else arrives within
    /// [`LINGER`], up to [`CHUNK`]; what arrived while the last chunk was being applied
    /// comes first. A fatal consumer error is returned (the consumer must be replaced);
    /// any other is logged and waited out.
    async fn read_chunk(&mut self) -> Result<Chunk, KafkaError> {
        let mut chunk = std::mem::take(&mut self.carry);
        while chunk.labels.is_empty() && chunk.dead.is_empty() {
            match self.consumer.recv().await {
                Ok(m) => {
                    self.take(&m, &mut chunk);
                    break;
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    chunk.ended.push(p);
                    return Ok(chunk);
                }
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "labels topic read failed; retrying");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
        let until = tokio::time::Instant::now() + LINGER;
        while chunk.labels.len() + chunk.dead.len() < CHUNK {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(Ok(m)) => self.take(&m, &mut chunk),
                Ok(Err(KafkaError::PartitionEOF(p))) => chunk.ended.push(p),
                Ok(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "labels topic read failed; retrying");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(chunk)
    }

    fn take(&self, m: &BorrowedMessage<'_>, chunk: &mut Chunk) {
        chunk.next.insert(m.partition(), m.offset() + 1);
        let payload = m.payload().unwrap_or_default();
        match decode_label(payload) {
            Ok(l) => chunk.labels.push(l),
            Err(why) => {
                metrics::counter!(names::LABELS_INVALID, "reason" => "invalid").increment(1);
                tracing::warn!(topic = %self.topic, partition = m.partition(), offset = m.offset(), error = %why, "invalid label; skipped (dead-lettered by a detector)");
                chunk.dead.push(DeadLetter {
                    origin: Origin::Kafka {
                        topic: self.topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                    },
                    key: m.key().map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    reason: Reason {
                        code: "invalid_label",
                        message: format!("not a label: {why}"),
                    },
                });
            }
        }
    }

    /// Dead letters first (durably), then the labels (the velocity stage retries its
    /// store), then, in a group, the commit. Fails only when `stop` ends a retry.
    async fn apply(
        &mut self,
        chunk: Chunk,
        target: &mut Target<'_>,
        stop: &CancellationToken,
    ) -> Result<usize, LabelsError> {
        let mut chunk = chunk;
        if let Some(sink) = self
            .dead_letters
            .as_ref()
            .filter(|_| !chunk.dead.is_empty())
        {
            send_durably(sink.as_ref(), &chunk.dead, stop).await?;
        }
        let n = chunk.labels.len();
        tracing::debug!(topic = %self.topic, labels = n, dead = chunk.dead.len(), next = ?chunk.next, "labels chunk");
        match target {
            Target::Collect(all) => all.extend(chunk.labels),
            Target::Velocity(_) if n == 0 => {}
            Target::Velocity(velocity) => {
                let v = Arc::clone(velocity);
                let labels = std::mem::take(&mut chunk.labels);
                // Not applied (the store gave up at the shutdown deadline): nothing is
                // committed, and the labels are read again on the next start.
                let work = tokio::task::spawn_blocking(move || {
                    labels
                        .chunks(CHUNK)
                        .try_for_each(|part| v.apply_labels(part).map(drop))
                });
                self.while_polling(work)
                    .await?
                    .map_err(|e| LabelsError::Store(e.0))?;
            }
        }
        if self.grouped && !stop.is_cancelled() && !chunk.next.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &chunk.next {
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                    .kafka(|| format!("committing velocity.labels_topic {:?}", self.topic))?;
            }
            // Asynchronous: a commit lost to a crash only means labels applied again,
            // once each.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(topic = %self.topic, error = %e, "labels offsets not committed; they are read again after a restart");
            }
        }
        Ok(n)
    }
}

impl LabelsTopic {
    /// Wait for `work` (labels going into a store that may be down for a while) while
    /// polling the consumer with its partitions paused, so that the group keeps this
    /// member (a member that does not poll within `max.poll.interval.ms` leaves its
    /// group, and with static membership is then fenced). What still arrives is kept
    /// for the next chunk.
    async fn while_polling<T>(
        &mut self,
        work: tokio::task::JoinHandle<T>,
    ) -> Result<T, LabelsError> {
        let paused = self
            .grouped
            .then(|| self.consumer.assignment().ok())
            .flatten();
        if let Some(a) = &paused
            && let Err(e) = self.consumer.pause(a)
        {
            tracing::debug!(error = %e, "pause failed");
        }
        tokio::pin!(work);
        let done = loop {
            tokio::select! {
                biased;
                r = &mut work => break r,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let mut carry = std::mem::take(&mut self.carry);
                        self.take(&m, &mut carry);
                        self.carry = carry;
                    }
                    Err(KafkaError::PartitionEOF(p)) => self.carry.ended.push(p),
                    Err(e) => {
                        tracing::debug!(topic = %self.topic, error = %e, "labels consumer error while applying");
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                },
            }
        };
        if let Some(a) = &paused
            && let Err(e) = self.consumer.resume(a)
        {
            tracing::debug!(error = %e, "resume failed");
        }
        Ok(done?)
    }
}

/// Where the labels read go.
enum Target<'a> {
    /// Into the velocity stage (counters and the verdict join).
    Velocity(&'a Arc<Velocity>),
    /// Into a list.
    Collect(&'a mut Vec<LabelEvent>),
}

/// Every label on `topic` up to the end offsets it has now, read without a group
/// (`retrain`): messages that are not labels are counted and skipped. Fails when the
/// brokers do not answer, the topic does not exist, or the end is not reached within
/// `limit`.
pub async fn read_all(
    kafka: &KafkaSettings,
    topic: &str,
    limit: Duration,
) -> Result<Vec<LabelEvent>, LabelsError> {
    let mut reader = LabelsTopic::open(kafka, topic, false, None).await?;
    if !reader.assigned {
        return Err(LabelsError::Topic(format!(
            "the labels topic {topic:?} cannot be read: brokers {} not reachable",
            kafka.brokers
        )));
    }
    let ends = end_offsets(&reader.consumer, topic).await?;
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let (_, complete) = reader
        .read_until(
            &ends,
            deadline,
            &CancellationToken::new(),
            &mut Target::Collect(&mut all),
        )
        .await?;
    if !complete {
        return Err(LabelsError::Topic(format!(
            "the labels topic {topic:?} was not read to its end within {limit:?}"
        )));
    }
    Ok(all)
}

/// What the brokers say of a topic's partitions.
enum Partitions {
    Found(Vec<i32>),
    Missing,
    Unreachable(String),
}

/// The partitions of `topic`.
async fn partitions(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
) -> Result<Partitions, LabelsError> {
    let (c, t) = (consumer.clone(), topic.to_owned());
    let md = match tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&t), METADATA_TIMEOUT))
        .await?
    {
        Ok(md) => md,
        Err(e) => return Ok(Partitions::Unreachable(e.to_string())),
    };
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map_or(Partitions::Missing, |t| {
            Partitions::Found(t.partitions().iter().map(|p| p.id()).collect())
        }))
}

/// The first retained and the end offset of every partition of `topic`.
async fn end_offsets(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
) -> Result<HashMap<i32, (i64, i64)>, LabelsError> {
    let parts = match partitions(consumer, topic).await? {
        Partitions::Found(p) => p,
        Partitions::Missing => {
            return Err(LabelsError::Topic(format!(
                "topic {topic:?} does not exist"
            )));
        }
        Partitions::Unreachable(why) => {
            return Err(LabelsError::Topic(format!("brokers not reachable: {why}")));
        }
    };
    let (c, t) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        parts
            .into_iter()
            .map(|p| Ok((p, c.fetch_watermarks(&t, p, METADATA_TIMEOUT)?)))
            .collect::<Result<HashMap<i32, (i64, i64)>, KafkaError>>()
    })
    .await?
    .kafka(|| format!("offsets of velocity.labels_topic {topic:?}"))
}
