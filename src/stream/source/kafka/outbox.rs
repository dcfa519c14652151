//! Kafka outputs exactly once (`delivery.kafka_outputs = "exactly_once"`, the scheme of
//! Kafka Streams' EOS v2): alerts and dead letters are staged here with the input offset
//! they come from, and go out in one Kafka transaction together with the consumed offsets
//! that cover them, committed when those offsets are durable everywhere else (the verdict
//! store, a durable lake). A crash before the commit aborts the transaction: readers with
//! `isolation.level = read_committed` never see its messages, and the offsets, not
//! committed, bring the same inputs back, whose outputs are staged again. So each alert
//! and each dead letter is read once.
//!
//! One transactional producer per detector, on a thread of its own; its
//! `transactional.id` is the group's and the static member's (`<group>-<instance>`), so a
//! restarted detector fences its previous incarnation: a paused old process that wakes up
//! after its replacement took over finds its producer fenced and exits without writing.
//!
//! ```text
//! stage(message, origin) ─► staged ──(acker: offsets durable)──► begin
//!                                       produce the staged messages the offsets cover
//!                                       send_offsets_to_transaction, commit
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::rebalance::partition_list;
use crate::kafka::KafkaSettings;
use crate::metric_names as names;
use crate::stream::acker::{Commit, PartitionKey, SourceOffset};

/// Staged messages beyond which staging waits for a commit (backpressure).
const MAX_STAGED: usize = 100_000;

/// How often offsets are committed at most (Kafka Streams' EOS default).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Bound on each transactional call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `transaction.timeout.ms`: the coordinator aborts a transaction older than this.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// One output message and the input offset it comes from.
#[derive(Debug)]
pub struct OutboxMessage {
    /// The input message it belongs to.
    pub origin: SourceOffset,
    /// The output topic.
    pub topic: Arc<str>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Option<OwnedHeaders>,
}

/// The consumer whose group the offsets are committed to.
pub trait GroupMember: Send + Sync {
    /// Its group metadata now (generation and member id change with rebalances).
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
    /// Offsets a transaction committed: the consumer keeps them as its stored offsets,
    /// so its statistics report the lag behind them.
    fn committed(&self, offsets: &[SourceOffset]);
    /// Whether the group took this member's assignment away without a revoke (its
    /// session timed out, or it did not poll in time): its offsets and outputs now belong
    /// to another member, so it must commit nothing.
    fn lost(&self) -> bool;
}

impl GroupMember for rdkafka::consumer::StreamConsumer<super::rebalance::DetectorContext> {
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        rdkafka::consumer::Consumer::group_metadata(self)
    }

    fn lost(&self) -> bool {
        rdkafka::consumer::Consumer::assignment_lost(self)
    }

    fn committed(&self, offsets: &[SourceOffset]) {
        // Partitions revoked since are refused; their lag is not ours to report.
        if let Err(e) = rdkafka::consumer::Consumer::store_offsets(self, &partition_list(offsets)) {
            tracing::debug!(error = %e, "committed offsets not stored for the lag");
        }
    }
}

/// Why the outbox can take nothing more.
#[derive(Debug, Clone, thiserror::Error)]
#[error("exactly-once Kafka outputs (delivery.kafka_outputs): {0}")]
pub struct OutboxError(pub String);

#[derive(Default)]
struct State {
    /// Messages waiting for their offsets, in staging order.
    staged: Vec<OutboxMessage>,
    /// Offsets to commit (the next offset to read, per partition).
    pending: BTreeMap<PartitionKey, i64>,
    /// Synchronous commits asked for, and done.
    asked: u64,
    done: u64,
    member: Option<Arc<dyn GroupMember>>,
    fatal: Option<String>,
    /// A transaction is under way (its messages are out of `staged`).
    in_txn: bool,
    /// Partitions were revoked while it was under way: it must abort instead of
    /// committing (their new owner reads from the last commit), and its messages are
    /// dropped rather than staged again.
    doomed: bool,
    /// The partitions forgotten while it was under way.
    forgotten: Vec<PartitionKey>,
}

/// The outbox and its transactional producer's thread.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the committer (offsets) and waiters (done, room).
    changed: Condvar,
    room: tokio::sync::Notify,
    transactional_id: String,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox whose producer has `transactional.id = transactional_id`, with its
    /// committer thread started (it initialises transactions, retrying while the brokers
    /// are away; that fences any earlier producer with the same id).
    pub fn start(
        settings: &KafkaSettings,
        transactional_id: &str,
    ) -> Result<Arc<Self>, KafkaError> {
        let producer: ThreadedProducer<DefaultProducerContext> = settings
            .producer_config()
            .set("transactional.id", transactional_id)
            .set(
                "transaction.timeout.ms",
                TRANSACTION_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        let outbox = Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            room: tokio::sync::Notify::new(),
            transactional_id: transactional_id.to_owned(),
        });
        let committer = outbox.clone();
        std::thread::Builder::new()
            .name("kafka-outbox".into())
            .spawn(move || committer.run(&producer))
            .map_err(|e| KafkaError::ClientCreation(format!("outbox thread: {e}")))?;
        Ok(outbox)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The consumer whose group commits go to (each consumer session sets its own).
    pub fn set_member(&self, member: Option<Arc<dyn GroupMember>>) {
        self.lock().member = member;
    }

    /// Stage messages: they go out with the commit of their origin offsets. Waits while
    /// too many are staged (the commits are behind: the brokers are away).
    pub async fn stage(&self, messages: Vec<OutboxMessage>) -> Result<(), OutboxError> {
        let mut messages = Some(messages);
        loop {
            let notified = self.room.notified();
            {
                let mut s = self.lock();
                if let Some(e) = &s.fatal {
                    return Err(OutboxError(e.clone()));
                }
                if s.staged.len() < MAX_STAGED {
                    s.staged.extend(messages.take().unwrap_or_default());
                    metrics::gauge!(names::OUTBOX_STAGED).set(s.staged.len() as f64);
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Commit `offsets` (with the messages they cover) soon, without waiting.
    pub fn commit_soon(&self, offsets: &[SourceOffset]) {
        let mut s = self.lock();
        for (k, o) in offsets {
            let e = s.pending.entry(k.clone()).or_insert(*o);
            *e = (*e).max(*o);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Commit `offsets` and everything pending now, waiting up to `timeout`; whether it
    /// was committed.
    pub fn commit_now(&self, offsets: &[SourceOffset], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        for (k, o) in offsets {
            let e = s.pending.entry(k.clone()).or_insert(*o);
            *e = (*e).max(*o);
        }
        s.asked += 1;
        let ticket = s.asked;
        self.changed.notify_all();
        while s.done < ticket && s.fatal.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        s.done >= ticket
    }

    /// Forget revoked partitions: their staged messages (their new owner reads their
    /// inputs again) and offsets not committed. A transaction under way is doomed: it
    /// aborts instead of committing (it must not commit after the new owner has read the
    /// committed offsets), and its messages are not staged again.
    pub fn forget(&self, keys: &[PartitionKey]) {
        let mut s = self.lock();
        if s.in_txn {
            s.doomed = true;
            s.forgotten.extend_from_slice(keys);
        }
        s.staged.retain(|m| !keys.contains(&m.origin.0));
        s.pending.retain(|k, _| !keys.contains(k));
        drop(s);
        self.room.notify_waiters();
    }

    /// The committer: initialise, then commit pending offsets with their messages, at
    /// most every [`COMMIT_INTERVAL`] (at once when a synchronous commit waits).
    fn run(&self, producer: &ThreadedProducer<DefaultProducerContext>) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = producer.init_transactions(CALL_TIMEOUT) {
            if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnsupportedFeature)
            {
                // A broker without transactions: a configuration error, never a silent
                // stall of the commits (exit code 78: configuration).
                tracing::error!(error = %e, "the brokers do not support transactions: set delivery.kafka_outputs = \"at_least_once\"");
                std::process::exit(78);
            }
            if self.give_up_if_fatal(&e) {
                return;
            }
            tracing::warn!(error = %e, transactional_id = %self.transactional_id, "kafka transactions not initialised yet; retrying (set delivery.kafka_outputs = \"at_least_once\" for brokers without transactions)");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tracing::info!(transactional_id = %self.transactional_id, "kafka outputs are transactional (exactly once)");
        let mut last = Instant::now();
        loop {
            let (offsets, messages, ticket, member) = {
                let mut s = self.lock();
                loop {
                    let urgent = s.asked > s.done;
                    if urgent || (!s.pending.is_empty() && last.elapsed() >= COMMIT_INTERVAL) {
                        break;
                    }
                    let wait = if s.pending.is_empty() {
                        Duration::from_secs(1)
                    } else {
                        COMMIT_INTERVAL.saturating_sub(last.elapsed())
                    };
                    s = self
                        .changed
                        .wait_timeout(s, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                if s.pending.is_empty() {
                    s.done = s.asked;
                    self.changed.notify_all();
                    continue;
                }
                let offsets = s.pending.clone();
                let covered = |m: &OutboxMessage| {
                    offsets
                        .get(&m.origin.0)
                        .is_some_and(|&next| m.origin.1 < next)
                };
                let (messages, kept): (Vec<OutboxMessage>, Vec<OutboxMessage>) =
                    std::mem::take(&mut s.staged).into_iter().partition(covered);
                s.staged = kept;
                s.in_txn = true;
                s.doomed = false;
                (offsets, messages, s.asked, s.member.clone())
            };
            last = Instant::now();
            match self.transaction(producer, &offsets, &messages, member.as_deref()) {
                Ok(()) => {
                    if let Some(m) = &member {
                        let list: Vec<SourceOffset> =
                            offsets.iter().map(|(k, o)| (k.clone(), *o)).collect();
                        m.committed(&list);
                    }
                    let mut s = self.lock();
                    s.pending.retain(|k, o| offsets.get(k) != Some(o));
                    s.done = s.done.max(ticket);
                    s.in_txn = false;
                    s.forgotten.clear();
                    metrics::gauge!(names::OUTBOX_STAGED).set(s.staged.len() as f64);
                    drop(s);
                    metrics::counter!(names::KAFKA_TRANSACTIONS, "result" => "committed")
                        .increment(1);
                    self.changed.notify_all();
                    self.room.notify_waiters();
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    metrics::counter!(names::KAFKA_TRANSACTIONS, "result" => "aborted")
                        .increment(1);
                    if self.give_up_if_fatal(&e) {
                        return;
                    }
                    if let Err(abort) = producer.abort_transaction(CALL_TIMEOUT)
                        && self.give_up_if_fatal(&abort)
                    {
                        return;
                    }
                    // Put the messages back, ahead of what was staged since; when the
                    // assignment was lost, its offsets and messages are another member's.
                    {
                        let mut s = self.lock();
                        if member.as_ref().is_some_and(|m| m.lost()) {
                            // Every partition is another member's now.
                            s.pending.clear();
                            s.staged.clear();
                        } else {
                            let forgotten = std::mem::take(&mut s.forgotten);
                            let mut kept: Vec<OutboxMessage> = messages
                                .into_iter()
                                .filter(|m| !forgotten.contains(&m.origin.0))
                                .collect();
                            kept.append(&mut s.staged);
                            s.staged = kept;
                        }
                        s.in_txn = false;
                        s.forgotten.clear();
                    }
                    self.changed.notify_all();
                    tracing::warn!(error = %e, retry_in = ?backoff, "kafka transaction aborted; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One transaction: the messages, the offsets, the commit.
    fn transaction(
        &self,
        producer: &ThreadedProducer<DefaultProducerContext>,
        offsets: &BTreeMap<PartitionKey, i64>,
        messages: &[OutboxMessage],
        member: Option<&dyn GroupMember>,
    ) -> Result<(), KafkaError> {
        let metadata = member
            .and_then(GroupMember::group_metadata)
            .ok_or_else(|| {
                KafkaError::ClientCreation("no consumer group member to commit for".into())
            })?;
        producer.begin_transaction()?;
        for m in messages {
            let mut record = BaseRecord::<[u8], [u8]>::to(&m.topic).payload(&m.payload);
            if let Some(k) = &m.key {
                record = record.key(k.as_slice());
            }
            if let Some(h) = &m.headers {
                record = record.headers(h.clone());
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        let list: Vec<SourceOffset> = offsets.iter().map(|(k, o)| (k.clone(), *o)).collect();
        producer.send_offsets_to_transaction(&partition_list(&list), &metadata, CALL_TIMEOUT)?;
        crate::failpoint::hit("kafka_transaction_produced");
        // The group may have taken the partitions away meanwhile (a poll came too late, a
        // session timed out) without this member hearing of it yet: commit nothing then.
        if member.is_some_and(GroupMember::lost) || self.lock().doomed {
            return Err(KafkaError::ClientCreation(
                "the group took partitions of this transaction away; it is aborted".into(),
            ));
        }
        producer.commit_transaction(CALL_TIMEOUT)
    }

    /// A fatal error (fenced by a newer producer with the same `transactional.id`: this
    /// process is a zombie whose place another detector has taken): nothing more may be
    /// written, so the process exits. Returns false for other errors.
    fn give_up_if_fatal(&self, e: &KafkaError) -> bool {
        let fatal = match e {
            KafkaError::Transaction(t) => t.is_fatal(),
            other => matches!(
                other.rdkafka_error_code(),
                Some(
                    rdkafka::types::RDKafkaErrorCode::ProducerFenced
                        | rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch
                        | rdkafka::types::RDKafkaErrorCode::Fatal
                )
            ),
        };
        if !fatal {
            return false;
        }
        let message = format!("{e}");
        tracing::error!(error = %message, transactional_id = %self.transactional_id, "the transactional producer was fenced: another detector with this identity has taken over; this one stops without writing");
        {
            let mut s = self.lock();
            s.fatal = Some(message);
        }
        self.changed.notify_all();
        self.room.notify_waiters();
        // The offsets and messages of this process belong to its successor now: stop at
        // once, as a zombie must (exit code 75: temporary failure).
        std::process::exit(75);
    }
}

/// Offsets commit through the outbox's transactions.
impl Commit for Arc<Outbox> {
    fn commit_async(&self, offsets: &[SourceOffset]) {
        self.commit_soon(offsets);
    }
}
