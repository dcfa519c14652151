//! The Kafka source: a consumer-group member that scores what it reads, sends invalid
//! messages to a dead-letter topic, publishes fraud alerts to a topic, and commits an
//! offset only once everything at or below it is durable (at-least-once; verdicts are keyed
//! by transaction id, so a redelivery rewrites the same item).
//!
//! ```text
//! source task: poll → decode → DLQ ──bounded channel of batches──► scorer task: score →
//!   ▲  (pauses its partitions and keeps polling while the channel stays full)   sinks → ack
//!   └── rebalance callback: waits for revoked partitions' batches, commits, forgets them
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::process::{AlertSink, Incoming, Processor};
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

/// Producers' `message.timeout.ms` unless configured.
const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// librdkafka consumer properties that a producer does not take.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "group.instance.id",
    "group.protocol",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "check.crcs",
];

impl KafkaSettings {
    /// The shared client settings; a producer leaves out consumer-only properties (which
    /// librdkafka would warn about and ignore).
    fn client(&self, producer: bool) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            if producer && CONSUMER_ONLY.contains(&k.as_str()) {
                continue;
            }
            c.set(k, v);
        }
        c
    }

    /// A consumer with manual commits from the first unread offset. The delivery
    /// guarantee's settings are applied after the user's properties, so no property can
    /// turn auto-commit back on.
    fn consumer(
        &self,
        context: DetectorContext,
    ) -> anyhow::Result<StreamConsumer<DetectorContext>> {
        let mut c = self.client(false);
        for (key, default) in [
            ("auto.offset.reset", "earliest"),
            // Per-partition consumer lag arrives with the statistics.
            ("statistics.interval.ms", "5000"),
            // librdkafka's prefetch queue (64 MiB by default) is most of the consumer's
            // memory; 16 MiB is still tens of thousands of transactions ahead.
            ("queued.max.messages.kbytes", "16384"),
            // Some Kafka-protocol brokers (noida-db among them) ignore fetch.max.bytes and
            // answer a fetch with the whole backlog; librdkafka refuses responses past this
            // limit (100 MB by default) and would retry the same fetch for ever. Kafka
            // itself bounds responses by fetch.max.bytes, so this costs nothing there.
            ("receive.message.max.bytes", "1000000000"),
        ] {
            if !self.properties.contains_key(key) {
                c.set(key, default);
            }
        }
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        Ok(c.create_with_context(context)?)
    }

    /// An idempotent producer that waits for every in-sync replica (again applied after the
    /// user's properties).
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        let mut c = self.client(true);
        if !self.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS.to_string());
        }
        c.set("enable.idempotence", "true").set("acks", "all");
        // Statistics feed the consumer-lag gauge; producers have no use for them.
        c.set("statistics.interval.ms", "0");
        Ok(c.create()?)
    }
}

/// A producer that is replaced when its deliveries hang. After a broker outage an
/// idempotent producer can be left with requests whose fate it never learns, so that its
/// delivery reports never come; every wait is bounded by `message.timeout.ms` plus a
/// margin, and a timed-out producer is dropped for a new one.
pub struct Publisher {
    settings: KafkaSettings,
    current: Mutex<Arc<FutureProducer>>,
    timeout: Duration,
}

impl Publisher {
    /// A publisher with the settings' producer.
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let message_timeout = settings
            .properties
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_MESSAGE_TIMEOUT_MS);
        Ok(Self {
            settings: settings.clone(),
            current: Mutex::new(Arc::new(settings.producer()?)),
            timeout: Duration::from_millis(message_timeout) + Duration::from_secs(5),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Arc<FutureProducer>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The producer to send with.
    #[must_use]
    pub fn producer(&self) -> Arc<FutureProducer> {
        self.slot().clone()
    }

    /// Wait for `deliveries`; past the timeout, replace the producer and fail.
    pub async fn within<T>(&self, deliveries: impl Future<Output = T>) -> anyhow::Result<T> {
        if let Ok(done) = tokio::time::timeout(self.timeout, deliveries).await {
            return Ok(done);
        }
        match self.settings.producer() {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.slot(), Arc::new(fresh));
                // Destroying a client can wait on its threads: not on the runtime's.
                tokio::task::spawn_blocking(move || drop(old));
                tracing::warn!(timeout = ?self.timeout, "deliveries hung; replaced the producer");
            }
            Err(e) => tracing::warn!(error = %e, "deliveries hung; no new producer"),
        }
        anyhow::bail!("no delivery report within {:?}", self.timeout)
    }
}

/// Fraud alerts on a Kafka topic, keyed by transaction id; `send` returns once the broker
/// has acknowledged every alert.
pub struct KafkaAlerts {
    publisher: Publisher,
    topic: String,
}

impl KafkaAlerts {
    /// Alerts to `topic` with the settings' producer.
    pub fn new(settings: &KafkaSettings, topic: &str) -> anyhow::Result<Self> {
        Ok(Self {
            publisher: Publisher::new(settings)?,
            topic: topic.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl AlertSink for KafkaAlerts {
    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }

    async fn send(&self, alerts: &[Verdict]) -> anyhow::Result<()> {
        let payloads: Vec<String> = alerts
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        let producer = self.publisher.producer();
        let sends = alerts.iter().zip(&payloads).map(|(v, p)| {
            producer.send(
                FutureRecord::to(&self.topic).key(&v.tx_id).payload(p),
                Duration::from_secs(30),
            )
        });
        for r in self
            .publisher
            .within(join_all(sends))
            .await
            .map_err(|e| e.context(format!("alert delivery to {}", self.topic)))?
        {
            r.map_err(|(e, _)| anyhow::anyhow!("alert delivery to {}: {e}", self.topic))?;
        }
        Ok(())
    }
}

/// How the Kafka pipeline runs.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
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

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            batch_size: 512,
            batch_timeout: Duration::from_millis(5),
            in_flight_batches: 4,
            revoke_timeout: Duration::from_secs(10),
        }
    }
}

/// What a Kafka run did.
#[derive(Debug, Clone, Default)]
pub struct KafkaSummary {
    /// Messages read.
    pub messages: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Partitions revoked by rebalances.
    pub revoked: u64,
}

/// A partition: topic and number.
type Key = (String, i32);

/// What the source, the scorer and the rebalance callback share.
#[derive(Debug, Default)]
struct Shared {
    /// Offsets dispatched and not yet durable, per partition.
    marks: Watermarks<Key>,
    /// Partitions currently assigned to this member.
    assigned: HashSet<Key>,
    /// Partitions revoked so far.
    revoked: u64,
    /// Whether the source has paused its partitions (the scorer is behind).
    paused: bool,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves consistent data (every update is one call).
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The consumer's context: rebalance handling and lag metrics.
pub struct DetectorContext {
    shared: SharedRef,
    revoke_timeout: Duration,
}

impl ClientContext for DetectorContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(names::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for DetectorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let keys = keys_of(tpl);
                tracing::info!(partitions = ?keys, "partitions assigned");
                lock(&self.shared).assigned.extend(keys);
            }
            Rebalance::Revoke(tpl) => self.revoke(consumer, &keys_of(tpl)),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    /// Newly assigned partitions take the source's current state: librdkafka keeps a
    /// partition's pause across a revoke and a re-assignment (after a session timeout,
    /// say), which would leave it paused for ever once the source has resumed.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let result = if lock(&self.shared).paused {
                consumer.pause(tpl)
            } else {
                consumer.resume(tpl)
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "pause state of assigned partitions");
            }
        }
    }
}

fn keys_of(tpl: &TopicPartitionList) -> Vec<Key> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl DetectorContext {
    /// Revoked partitions: wait (bounded) for their dispatched batches to become durable,
    /// commit what is durable, and forget them, so that nothing of theirs is committed by
    /// this member afterwards. Runs on the polling thread while the scorer task goes on.
    fn revoke(&self, consumer: &BaseConsumer<Self>, keys: &[Key]) {
        let deadline = Instant::now() + self.revoke_timeout;
        let wait = || loop {
            let pending = lock(&self.shared).marks.in_flight_in(keys);
            if pending == 0 || Instant::now() >= deadline {
                break pending;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The callback runs inside a poll on a runtime worker: hand that worker's other
        // tasks (the scorer among them, perhaps) to another thread while this one waits.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let pending = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        if pending > 0 {
            tracing::warn!(
                pending,
                "revoked partitions still have batches in flight; their new owner will re-read them"
            );
        }
        let mut commit = TopicPartitionList::new();
        {
            let mut s = lock(&self.shared);
            for k in keys {
                s.assigned.remove(k);
                if let Some(next) = s.marks.revoke(k) {
                    let _added = commit.add_partition_offset(&k.0, k.1, Offset::Offset(next));
                }
            }
            s.revoked += keys.len() as u64;
        }
        metrics::counter!(names::PARTITIONS_REVOKED).increment(keys.len() as u64);
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(partitions = ?keys, "partitions revoked; durable offsets committed")
                }
                // Harmless: the new owner re-reads from the previous commit.
                Err(e) => tracing::warn!(error = %e, "commit of revoked partitions failed"),
            }
        } else {
            tracing::info!(partitions = ?keys, "partitions revoked");
        }
    }
}

/// One message, copied out of the consumer.
struct Read {
    key: Key,
    offset: i64,
    msg_key: Option<Vec<u8>>,
    payload: Vec<u8>,
    at: Instant,
    produced_at_ms: Option<i64>,
}

/// A batch on its way to the scorer: the valid rows and every offset they came from.
struct Dispatched {
    rows: Vec<Incoming>,
    offsets: Vec<(Key, i64)>,
}

/// Consume until `stop` turns true; then stop reading, let the scorer drain what it was
/// handed, flush the lake, and commit the final offsets. The processor's own `stop`
/// aborts a drain that cannot finish (a sink still down): those offsets stay uncommitted.
/// A consumer that fails fatally is replaced by a new one (after the scorer has drained
/// what the old one read; its uncommitted offsets are read again, and rewrite the same
/// verdicts). Returns the summary and the processor (with its totals).
pub async fn run(
    settings: &KafkaSettings,
    mut processor: Processor,
    options: PipelineOptions,
    mut stop: watch::Receiver<bool>,
) -> (anyhow::Result<KafkaSummary>, Processor) {
    let mut summary = KafkaSummary::default();
    let mut backoff = Duration::from_millis(500);
    loop {
        let (result, p) = session(settings, processor, options, &mut stop, &mut summary).await;
        processor = p;
        match result {
            Err(e) if e.downcast_ref::<FatalConsumer>().is_some() && !*stop.borrow() => {
                metrics::counter!(names::CONSUMER_RESTARTS).increment(1);
                tracing::error!(error = %e, retry_in = ?backoff, "the consumer failed for good; starting a new one");
                tokio::select! {
                    _ = stop.changed() => return (Ok(summary), processor),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return (Err(e), processor),
            Ok(()) => return (Ok(summary), processor),
        }
    }
}

/// One consumer's life: from subscribing until a stop (`Ok`) or an error.
async fn session(
    settings: &KafkaSettings,
    processor: Processor,
    options: PipelineOptions,
    stop: &mut watch::Receiver<bool>,
    summary: &mut KafkaSummary,
) -> (anyhow::Result<()>, Processor) {
    let shared: SharedRef = Arc::default();
    let consumer = match settings.consumer(DetectorContext {
        shared: shared.clone(),
        revoke_timeout: options.revoke_timeout,
    }) {
        Ok(c) => Arc::new(c),
        Err(e) => return (Err(e), processor),
    };
    let (batch_tx, batch_rx) = mpsc::channel::<Dispatched>(options.in_flight_batches.max(1));
    let scorer = tokio::spawn(score(processor, batch_rx, shared.clone(), consumer.clone()));
    let source = consume(
        settings, &consumer, &shared, &batch_tx, options, stop, summary,
    )
    .await;
    drop(batch_tx); // the scorer drains what it was handed, then returns
    let (processor, drained) = match scorer.await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    summary.revoked += lock(&shared).revoked;
    let result = source.and(drained).map(|()| {
        // Final, synchronous commit of everything durable on partitions still ours.
        let mut last = TopicPartitionList::new();
        let s = lock(&shared);
        for ((topic, partition), next) in s.marks.committable() {
            if s.assigned.contains(&(topic.clone(), partition)) {
                let _added =
                    last.add_partition_offset(&topic, partition, Offset::Offset(next));
            }
        }
        drop(s);
        // A failure here (a rebalance started by another member leaving at the same time)
        // only means the partitions' next owner re-reads from the last successful commit.
        if last.count() > 0
            && let Err(e) = consumer.commit(&last, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final offset commit failed; the last batches will be read again");
        }
        tracing::info!(
            messages = summary.messages,
            dead_letters = summary.dead_letters,
            "stopped; offsets committed"
        );
    });
    (result, processor)
}

/// The source task's loop: fill batches by count and time, send invalid messages to the
/// dead-letter topic, and hand the rest to the scorer, pausing while it is behind.
async fn consume(
    settings: &KafkaSettings,
    consumer: &StreamConsumer<DetectorContext>,
    shared: &SharedRef,
    batch_tx: &mpsc::Sender<Dispatched>,
    options: PipelineOptions,
    stop: &mut watch::Receiver<bool>,
    summary: &mut KafkaSummary,
) -> anyhow::Result<()> {
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let producer = Publisher::new(settings)?;
    tracing::info!(brokers = %settings.brokers, topics = ?settings.topics, group = %settings.group_id, "consuming");
    let mut pending: Vec<Read> = Vec::with_capacity(options.batch_size);
    let mut first_at: Option<tokio::time::Instant> = None;
    loop {
        let full = pending.len() >= options.batch_size;
        if !full {
            let deadline = first_at.map(|t| t + options.batch_timeout);
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                () = batch_tx.closed() => return Ok(()), // the scorer failed
                m = consumer.recv() => {
                    if let Some(r) = read(m).await? {
                        first_at.get_or_insert_with(tokio::time::Instant::now);
                        pending.push(r);
                    }
                    continue;
                }
                () = sleep_until(deadline), if !pending.is_empty() => {}
            }
        }
        first_at = None;
        let batch = std::mem::take(&mut pending);
        summary.messages += batch.len() as u64;
        metrics::counter!(names::CONSUMED).increment(batch.len() as u64);
        let Some(dispatched) =
            prepare(settings, consumer, &producer, shared, batch, stop, summary).await?
        else {
            return Ok(()); // stopped while the dead-letter topic was unreachable
        };
        if dispatched.rows.is_empty() && dispatched.offsets.is_empty() {
            continue;
        }
        let permit = match batch_tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(())) => return Ok(()), // the scorer failed
            Err(mpsc::error::TrySendError::Full(())) => {
                // Briefly behind (the usual state when catching up on a backlog): wait
                // without pausing, as librdkafka drops its prefetched messages on pause and
                // fetches them again on resume. librdkafka keeps prefetching meanwhile, up
                // to queued.max.messages.kbytes.
                let started = Instant::now();
                let quick = tokio::select! {
                    biased;
                    _ = stop.changed() => return Ok(()),
                    r = tokio::time::timeout(PAUSE_AFTER, batch_tx.reserve()) => r,
                };
                match quick {
                    Ok(Ok(p)) => {
                        metrics::histogram!(names::BLOCKED_SECONDS, "stage" => "source")
                            .record(started.elapsed().as_secs_f64());
                        p
                    }
                    Ok(Err(_)) => return Ok(()), // the scorer failed
                    Err(_) => match wait_for_scorer(
                        consumer,
                        shared,
                        batch_tx,
                        &mut pending,
                        options.batch_size,
                        started,
                    )
                    .await?
                    {
                        Some(p) => p,
                        None => return Ok(()),
                    },
                }
            }
        };
        permit.send(dispatched);
        metrics::gauge!(names::BATCHES_IN_FLIGHT).increment(1.0);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The consumer hit a fatal error (for example, fenced by the group after its session
/// timed out while the broker was unreachable): it can never consume again, so the
/// pipeline starts a new one.
#[derive(Debug, thiserror::Error)]
#[error("fatal consumer error: {0}")]
pub struct FatalConsumer(rdkafka::error::KafkaError);

/// Copy one message out of the consumer; errors (broker outages, which librdkafka
/// recovers from by itself) are logged and waited out, except fatal ones.
async fn read(
    m: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
) -> Result<Option<Read>, FatalConsumer> {
    match m {
        Err(e @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => Err(FatalConsumer(e)),
        Ok(m) => Ok(Some(Read {
            key: (m.topic().to_owned(), m.partition()),
            offset: m.offset(),
            msg_key: m.key().map(<[u8]>::to_vec),
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

/// How long the source waits for room in the channel before it pauses its partitions.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// The scorer has been behind (the channel full) for [`PAUSE_AFTER`], so a sink is slow or
/// down: pause the assigned partitions and keep polling (so the group keeps this member)
/// until there is room. Messages that still arrive are kept for the next batch. Returns
/// `None` when the scorer has stopped.
async fn wait_for_scorer<'a>(
    consumer: &StreamConsumer<DetectorContext>,
    shared: &SharedRef,
    batch_tx: &'a mpsc::Sender<Dispatched>,
    pending: &mut Vec<Read>,
    batch_size: usize,
    started: Instant,
) -> Result<Option<mpsc::Permit<'a, Dispatched>>, FatalConsumer> {
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
                if let Some(r) = read(m).await? {
                    pending.push(r);
                    if pending.len() >= batch_size {
                        pause(); // partitions assigned since the first pause
                    }
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

/// Decode a batch, make its invalid messages durable in the dead-letter topic, and track
/// the offsets of partitions still assigned (messages of revoked partitions are dropped:
/// their new owner reads them). `None` when stopped while the dead-letter topic was down.
async fn prepare(
    settings: &KafkaSettings,
    consumer: &StreamConsumer<DetectorContext>,
    producer: &Publisher,
    shared: &SharedRef,
    batch: Vec<Read>,
    stop: &mut watch::Receiver<bool>,
    summary: &mut KafkaSummary,
) -> anyhow::Result<Option<Dispatched>> {
    let batch: Vec<Read> = {
        let s = lock(shared);
        batch
            .into_iter()
            .filter(|r| s.assigned.contains(&r.key))
            .collect()
    };
    let mut rows = Vec::with_capacity(batch.len());
    let mut offsets = Vec::with_capacity(batch.len());
    let mut dead = Vec::new();
    for r in &batch {
        let default_id = || {
            r.msg_key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map_or_else(
                    || format!("{}-{}-{}", r.key.0, r.key.1, r.offset),
                    str::to_owned,
                )
        };
        match decode_transaction_limited(&r.payload, settings.max_message_bytes, default_id) {
            Ok(tx) => {
                rows.push(Incoming {
                    tx,
                    read_at: r.at,
                    produced_at_ms: r.produced_at_ms,
                });
                offsets.push((r.key.clone(), r.offset));
            }
            Err(kind) => dead.push((r, kind)),
        }
    }
    if !send_dead_letters(settings, producer, &dead, stop).await {
        return Ok(None);
    }
    summary.dead_letters += dead.len() as u64;
    {
        let mut s = lock(shared);
        for r in &batch {
            s.marks.track(r.key.clone(), r.offset);
        }
    }
    // Dead letters are durable already: acknowledge them now.
    let mut dead_offsets: Vec<(Key, i64)> = dead
        .iter()
        .map(|(r, _)| (r.key.clone(), r.offset))
        .collect();
    acknowledge(shared, consumer, &mut dead_offsets)?;
    Ok(Some(Dispatched { rows, offsets }))
}

/// Send dead letters (original bytes and key, with reason, source topic, partition and
/// offset as headers) until the broker has them all; retried with backoff while it is
/// unreachable. False when stopped first.
async fn send_dead_letters(
    settings: &KafkaSettings,
    publisher: &Publisher,
    dead: &[(&Read, crate::schema::RecordErrorKind)],
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut left: Vec<usize> = (0..dead.len()).collect();
    let mut attempt = 0u32;
    let mut rng = crate::rng::Rng::new(u64::from(std::process::id()));
    while !left.is_empty() {
        let producer = publisher.producer();
        let sends = left.iter().map(|&i| {
            let (r, kind) = &dead[i];
            let partition = r.key.1.to_string();
            let offset = r.offset.to_string();
            let reason = kind.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(&reason),
                })
                .insert(Header {
                    key: "reason_code",
                    value: Some(kind.code()),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(&r.key.0),
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
            if let Some(k) = &r.msg_key {
                rec = rec.key(k);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        let results: Vec<Result<(), String>> = match publisher.within(join_all(sends)).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map(|_| ()).map_err(|(e, _)| e.to_string()))
                .collect(),
            Err(e) => vec![Err(e.to_string()); left.len()],
        };
        let mut failed = Vec::new();
        let mut error = None;
        for (&i, res) in left.iter().zip(results) {
            match res {
                Ok(_) => {
                    let (r, kind) = &dead[i];
                    metrics::counter!(names::DEAD_LETTERS, "reason" => kind.code()).increment(1);
                    tracing::debug!(topic = %r.key.0, partition = r.key.1, offset = r.offset, reason = %kind, "message sent to the dead-letter topic");
                }
                Err(e) => {
                    failed.push(i);
                    error = Some(e);
                }
            }
        }
        left = failed;
        if let Some(e) = error {
            attempt = attempt.saturating_add(1);
            metrics::counter!(names::SINK_RETRIES, "sink" => "dlq").increment(1);
            tracing::warn!(error = %e, topic = %settings.dlq_topic, attempt, "dead-letter topic unavailable; pausing the source until it returns");
            let delay = super::process::OUTAGE_RETRY.delay(attempt, &mut rng);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return false,
            }
        }
    }
    true
}

/// Commit `offsets` without waiting. A failure (say, for a partition revoked meanwhile)
/// is harmless: the partition's owner re-reads from the last commit.
fn commit_async(consumer: &StreamConsumer<DetectorContext>, offsets: &TopicPartitionList) {
    if offsets.count() > 0
        && let Err(e) = consumer.commit(offsets, CommitMode::Async)
    {
        tracing::warn!(error = %e, "offset commit failed");
    }
}

/// The scorer task: process batches in order, then acknowledge their offsets (when the
/// lake is durable, only once the lake has flushed their rows) and commit what advanced.
/// Between batches it flushes the lake by age. Returns the processor and how the drain
/// went once the source has closed the channel.
async fn score(
    mut processor: Processor,
    mut batches: mpsc::Receiver<Dispatched>,
    shared: SharedRef,
    consumer: Arc<StreamConsumer<DetectorContext>>,
) -> (Processor, anyhow::Result<()>) {
    let mut held: Vec<(Key, i64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = async {
        loop {
            tokio::select! {
                b = batches.recv() => {
                    let Some(b) = b else { break };
                    metrics::gauge!(names::BATCHES_IN_FLIGHT).decrement(1.0);
                    processor.process(b.rows).await?;
                    held.extend(b.offsets);
                }
                _ = tick.tick() => processor.maintain().await?,
            }
            if !(processor.durable.lake && processor.lake_pending()) {
                acknowledge(&shared, &consumer, &mut held)?;
            }
        }
        processor.finish().await?;
        acknowledge(&shared, &consumer, &mut held)
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "scorer stopped; offsets of unfinished batches stay uncommitted");
    }
    (processor, result)
}

/// Acknowledge durable offsets and commit the partitions whose watermark advanced.
fn acknowledge(
    shared: &SharedRef,
    consumer: &StreamConsumer<DetectorContext>,
    held: &mut Vec<(Key, i64)>,
) -> anyhow::Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    let mut advanced: BTreeMap<Key, i64> = BTreeMap::new();
    let mut s = lock(shared);
    for (key, offset) in held.drain(..) {
        if let Some(next) = s.marks.ack(&key, offset) {
            advanced.insert(key, next);
        }
    }
    // Committed under the lock, so a rebalance cannot revoke a partition in between.
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in advanced {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
    }
    commit_async(consumer, &tpl);
    drop(s);
    Ok(())
}
