//! Kafka outputs exactly once (`delivery.kafka_outputs = "exactly_once"`): alerts and
//! dead letters are staged here with the input offset they come from, and go out in a
//! Kafka transaction together with the consumed offsets that cover them, committed when
//! those offsets are durable everywhere else (the verdict store, a durable lake). A crash
//! before the commit aborts the transaction: readers with `isolation.level =
//! read_committed` never see its messages, and the offsets, not committed, bring the same
//! inputs back, whose outputs are staged again. So each alert and each dead letter is read
//! once.
//!
//! One transactional producer per input partition (a *lane*), with `transactional.id =
//! fraudstream-<group>-<topic>-<partition>`: the scheme of Kafka Streams' first
//! exactly-once mode, which needs nothing from the brokers but transactions. When a
//! partition is assigned, its lane is initialised before the consumer reads the
//! partition's committed offsets. Initialising fences the partition's previous owner: its
//! transaction under way is aborted (or finished) by the coordinator first, so the offsets
//! read are final, and anything it tries to commit afterwards is refused. Kafka Streams'
//! second mode (one producer per process, KIP-447) leans instead on the brokers to hold a
//! new owner's offset fetch until pending transactions end and to refuse a stale
//! generation's offsets; a broker that does neither (noida-db, tested) lets an old
//! owner's late commit duplicate what the new owner re-reads.
//!
//! A lane that finds itself fenced while this member still holds its partition (the group
//! moved it during a freeze, and this member has not heard yet) stops writing it: the
//! partition's outputs are dropped and its offsets left uncommitted, for the member that
//! fenced it, until a rebalance revokes or re-assigns it here.
//!
//! ```text
//! assign ─► lane per partition: init_transactions (fences the previous owner)
//! stage(message, origin) ─► staged ──(acker: offsets durable)──► per lane: begin
//!                                       produce the staged messages the offsets cover
//!                                       send_offsets_to_transaction, commit
//! revoke ─► commit now (bounded), forget the partitions and drop their lanes
//! ```

use std::collections::{BTreeMap, HashMap};
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

/// How long an assignment waits for its lanes to initialise (the brokers away) before the
/// process gives up (exit 75) rather than read offsets a previous owner may still change.
const INIT_DEADLINE: Duration = Duration::from_secs(300);

/// How long a partition whose lane was fenced may stay assigned to this member before
/// that is reported.
const FENCED_GRACE: Duration = Duration::from_secs(30);

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

/// A partition's transactional producer.
struct Lane {
    producer: ThreadedProducer<DefaultProducerContext>,
    transactional_id: String,
}

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
    /// The lanes of the partitions this member holds.
    lanes: HashMap<PartitionKey, Arc<Lane>>,
    /// Partitions whose lane was fenced while still assigned here, and since when.
    fenced: HashMap<PartitionKey, Instant>,
    /// The partition whose transaction is under way (its messages are out of `staged`).
    in_txn: Option<PartitionKey>,
    /// That partition was revoked meanwhile: its transaction must abort instead of
    /// committing (the new owner reads from the last commit), and its messages are
    /// dropped rather than staged again.
    doomed: bool,
}

impl State {
    /// Drop what belongs to `keys`: staged messages and offsets not committed.
    fn drop_partitions(&mut self, keys: &[PartitionKey]) {
        self.staged.retain(|m| !keys.contains(&m.origin.0));
        self.pending.retain(|k, _| !keys.contains(k));
        if self.in_txn.as_ref().is_some_and(|k| keys.contains(k)) {
            self.doomed = true;
        }
    }
}

/// The outbox and its committer thread.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the committer (offsets) and waiters (done, room).
    changed: Condvar,
    room: tokio::sync::Notify,
    settings: KafkaSettings,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("group", &self.settings.group_id)
            .finish_non_exhaustive()
    }
}

/// The `transactional.id` of a partition's lane: the same for whichever member holds it,
/// so that taking the partition over fences its previous holder.
#[must_use]
pub fn transactional_id(group: &str, (topic, partition): &PartitionKey) -> String {
    format!("fraudstream-{group}-{topic}-{partition}")
}

impl Outbox {
    /// An outbox for `settings`' group, with its committer thread started. Lanes open
    /// with the assignment ([`Outbox::open`]).
    pub fn start(settings: &KafkaSettings) -> Result<Arc<Self>, KafkaError> {
        let outbox = Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            room: tokio::sync::Notify::new(),
            settings: settings.clone(),
        });
        let committer = outbox.clone();
        std::thread::Builder::new()
            .name("kafka-outbox".into())
            .spawn(move || committer.run())
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

    /// Partitions assigned: open each one's lane, initialising its transactions (which
    /// fences the partition's previous holder and ends its transaction under way). Blocks
    /// until every lane is ready, retrying while the brokers are away: the caller must
    /// let the consumer read the partitions' committed offsets only afterwards.
    pub fn open(&self, keys: &[PartitionKey]) {
        for key in keys {
            if self.lock().lanes.contains_key(key) {
                continue;
            }
            let lane = self.init_lane(key);
            let mut s = self.lock();
            s.fenced.remove(key);
            s.lanes.insert(key.clone(), Arc::new(lane));
        }
    }

    fn init_lane(&self, key: &PartitionKey) -> Lane {
        let id = transactional_id(&self.settings.group_id, key);
        let deadline = Instant::now() + INIT_DEADLINE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = self
                .settings
                .producer_config()
                .set("transactional.id", &id)
                .set(
                    "transaction.timeout.ms",
                    TRANSACTION_TIMEOUT.as_millis().to_string(),
                )
                .create::<ThreadedProducer<DefaultProducerContext>>()
                .and_then(|p| p.init_transactions(CALL_TIMEOUT).map(|()| p));
            match attempt {
                Ok(producer) => {
                    tracing::debug!(transactional_id = %id, "lane ready: the partition's previous holder is fenced");
                    return Lane {
                        producer,
                        transactional_id: id,
                    };
                }
                Err(e) => {
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::UnsupportedFeature)
                    {
                        // A broker without transactions: a configuration error, never a
                        // silent stall of the commits (exit code 78: configuration).
                        tracing::error!(error = %e, "the brokers do not support transactions: set delivery.kafka_outputs = \"at_least_once\"");
                        std::process::exit(78);
                    }
                    if Instant::now() >= deadline {
                        tracing::error!(error = %e, transactional_id = %id, "kafka transactions could not be initialised for an assigned partition; stopping rather than read offsets its previous holder may still change");
                        std::process::exit(75);
                    }
                    tracing::warn!(error = %e, transactional_id = %id, retry_in = ?backoff, "kafka transactions not initialised yet; retrying (set delivery.kafka_outputs = \"at_least_once\" for brokers without transactions)");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Stage messages: they go out with the commit of their origin offsets. Messages of
    /// a partition without a lane (revoked, or fenced) are another member's to write, and
    /// are dropped. Waits while too many are staged (the commits are behind: the brokers
    /// are away).
    pub async fn stage(&self, messages: Vec<OutboxMessage>) {
        let mut messages = Some(messages);
        loop {
            let notified = self.room.notified();
            {
                let mut s = self.lock();
                if s.staged.len() < MAX_STAGED {
                    let mut m = messages.take().unwrap_or_default();
                    m.retain(|m| s.lanes.contains_key(&m.origin.0));
                    s.staged.extend(m);
                    metrics::gauge!(names::OUTBOX_STAGED).set(s.staged.len() as f64);
                    return;
                }
            }
            notified.await;
        }
    }

    /// Add `offsets` of partitions with a lane to the pending ones.
    fn add_pending(s: &mut State, offsets: &[SourceOffset]) {
        for (k, o) in offsets {
            if !s.lanes.contains_key(k) {
                continue;
            }
            let e = s.pending.entry(k.clone()).or_insert(*o);
            *e = (*e).max(*o);
        }
    }

    /// Commit `offsets` (with the messages they cover) soon, without waiting.
    pub fn commit_soon(&self, offsets: &[SourceOffset]) {
        Self::add_pending(&mut self.lock(), offsets);
        self.changed.notify_all();
    }

    /// Commit `offsets` and everything pending now, waiting up to `timeout`; whether it
    /// was committed.
    pub fn commit_now(&self, offsets: &[SourceOffset], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        Self::add_pending(&mut s, offsets);
        s.asked += 1;
        let ticket = s.asked;
        self.changed.notify_all();
        while s.done < ticket {
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
    /// inputs again), offsets not committed, and their lanes. A transaction of theirs
    /// under way is doomed: it aborts instead of committing (it must not commit after the
    /// new owner has read the committed offsets), and its messages are not staged again.
    pub fn forget(&self, keys: &[PartitionKey]) {
        let closed: Vec<Arc<Lane>> = {
            let mut s = self.lock();
            s.drop_partitions(keys);
            for k in keys {
                s.fenced.remove(k);
            }
            keys.iter().filter_map(|k| s.lanes.remove(k)).collect()
        };
        close_later(closed);
        self.room.notify_waiters();
    }

    /// The committer: commit pending offsets with their messages, one transaction per
    /// lane, at most every [`COMMIT_INTERVAL`] (at once when a synchronous commit
    /// waits).
    fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        let mut last = Instant::now();
        loop {
            let (offsets, ticket) = {
                let mut s = self.lock();
                loop {
                    self.warn_if_stuck(&mut s);
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
                (s.pending.clone(), s.asked)
            };
            last = Instant::now();
            let mut failed = None;
            for (key, next) in offsets {
                if let Err(e) = self.commit_lane(&key, next) {
                    failed = Some(e);
                }
            }
            match failed {
                None => {
                    let mut s = self.lock();
                    s.done = s.done.max(ticket);
                    drop(s);
                    self.changed.notify_all();
                    backoff = Duration::from_millis(100);
                }
                Some(e) => {
                    self.changed.notify_all();
                    tracing::warn!(error = %e, retry_in = ?backoff, "kafka transaction aborted; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One lane's transaction: the staged messages of `key` below `next`, and `next` as
    /// the partition's offset. On failure the messages are staged again (unless the
    /// partition was revoked meanwhile or its lane fenced).
    fn commit_lane(&self, key: &PartitionKey, next: i64) -> Result<(), KafkaError> {
        let (lane, messages, member) = {
            let mut s = self.lock();
            let Some(lane) = s.lanes.get(key).cloned() else {
                s.pending.remove(key);
                return Ok(());
            };
            let covered = |m: &OutboxMessage| &m.origin.0 == key && m.origin.1 < next;
            let (messages, kept): (Vec<OutboxMessage>, Vec<OutboxMessage>) =
                std::mem::take(&mut s.staged).into_iter().partition(covered);
            s.staged = kept;
            s.in_txn = Some(key.clone());
            s.doomed = false;
            (lane, messages, s.member.clone())
        };
        let result = self.transaction(&lane, key, next, &messages, member.as_deref());
        let result = self.settle(&lane, key, next, messages, member, result);
        // A lane revoked or fenced meanwhile is closed off this thread, which other
        // partitions' commits are waiting for.
        if !self.lock().lanes.contains_key(key) {
            close_later(vec![lane]);
        }
        result
    }

    /// After a lane's transaction: on success forget the committed offset; on failure
    /// abort, and stage the messages again (unless the partition was revoked meanwhile
    /// or its lane fenced).
    fn settle(
        &self,
        lane: &Lane,
        key: &PartitionKey,
        next: i64,
        messages: Vec<OutboxMessage>,
        member: Option<Arc<dyn GroupMember>>,
        result: Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let mut s = self.lock();
        s.in_txn = None;
        match result {
            Ok(()) => {
                if s.pending.get(key) == Some(&next) {
                    s.pending.remove(key);
                }
                metrics::gauge!(names::OUTBOX_STAGED).set(s.staged.len() as f64);
                drop(s);
                if let Some(m) = &member {
                    m.committed(&[(key.clone(), next)]);
                }
                metrics::counter!(names::KAFKA_TRANSACTIONS, "result" => "committed").increment(1);
                self.room.notify_waiters();
                Ok(())
            }
            Err(e) => {
                metrics::counter!(names::KAFKA_TRANSACTIONS, "result" => "aborted").increment(1);
                if is_fenced(&e) {
                    // Another member initialised this partition's lane: the group gave it
                    // away, and this member has not heard yet. Its offsets and outputs
                    // are the new holder's; drop them and the lane.
                    tracing::warn!(error = %e, transactional_id = %lane.transactional_id, "lane fenced: another member holds the partition now; its outputs here are dropped");
                    metrics::counter!(names::KAFKA_LANES_FENCED).increment(1);
                    let keys = [key.clone()];
                    s.drop_partitions(&keys);
                    let closed: Vec<Arc<Lane>> = s.lanes.remove(key).into_iter().collect();
                    s.fenced.entry(key.clone()).or_insert_with(Instant::now);
                    drop(s);
                    close_later(closed);
                    self.room.notify_waiters();
                    return Err(e);
                }
                if let Err(abort) = lane.producer.abort_transaction(CALL_TIMEOUT) {
                    tracing::debug!(error = %abort, "abort after a failed transaction");
                }
                // Put the messages back, ahead of what was staged since; when the
                // assignment was lost or the partition revoked, they are another
                // member's.
                let lost = member.as_ref().is_some_and(|m| m.lost());
                if lost {
                    s.pending.clear();
                    s.staged.clear();
                } else if !s.doomed && s.lanes.contains_key(key) {
                    let mut kept = messages;
                    kept.append(&mut s.staged);
                    s.staged = kept;
                }
                s.doomed = false;
                Err(e)
            }
        }
    }

    /// A partition whose lane was fenced [`FENCED_GRACE`] ago and is still not revoked
    /// here: the group's view and this member's disagree (a broker that assigned the
    /// partition twice, or a rebalance this member has not heard of). Said once, loudly;
    /// its outputs stay dropped and its offsets uncommitted, which is safe, until a
    /// rebalance sorts it out. (A zombie whose static identity was taken is stopped by its
    /// consumer's `FencedInstanceId`.)
    fn warn_if_stuck(&self, s: &mut State) {
        let stuck: Vec<PartitionKey> = s
            .fenced
            .iter()
            .filter(|(_, t)| t.elapsed() >= FENCED_GRACE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stuck {
            s.fenced.remove(&key);
            tracing::error!(partition = ?key, grace = ?FENCED_GRACE, "another member has held this partition's lane for a while, yet the group has not revoked the partition here: its outputs are left to that member until a rebalance");
        }
    }

    /// The transaction proper: the messages, the offset, the commit.
    fn transaction(
        &self,
        lane: &Lane,
        key: &PartitionKey,
        next: i64,
        messages: &[OutboxMessage],
        member: Option<&dyn GroupMember>,
    ) -> Result<(), KafkaError> {
        let metadata = member
            .and_then(GroupMember::group_metadata)
            .ok_or_else(|| {
                KafkaError::ClientCreation("no consumer group member to commit for".into())
            })?;
        let producer = &lane.producer;
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
        producer.send_offsets_to_transaction(
            &partition_list(&[(key.clone(), next)]),
            &metadata,
            CALL_TIMEOUT,
        )?;
        crate::failpoint::hit("kafka_transaction_produced");
        // The group may have taken the partition away meanwhile (a poll came too late, a
        // session timed out) without this member hearing of it yet: commit nothing then.
        if member.is_some_and(GroupMember::lost) || self.lock().doomed {
            return Err(KafkaError::ClientCreation(
                "the group took the partition of this transaction away; it is aborted".into(),
            ));
        }
        producer.commit_transaction(CALL_TIMEOUT)
    }
}

/// Whether `e` says the producer was fenced by a newer one with its `transactional.id`.
fn is_fenced(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::ProducerFenced
                    | rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch
                    | rdkafka::types::RDKafkaErrorCode::Fatal
            )
        ),
    }
}

/// Close lanes off the caller's thread (a rebalance callback, the committer): closing a
/// producer waits for its threads, and for the brokers when they are away.
fn close_later(lanes: Vec<Arc<Lane>>) {
    if lanes.is_empty() {
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-lane-close".into())
        .spawn(move || drop(lanes))
    {
        tracing::debug!(error = %e, "lanes closed in place");
    }
}

/// Offsets commit through the outbox's transactions.
impl Commit for Arc<Outbox> {
    fn commit_async(&self, offsets: &[SourceOffset]) {
        self.commit_soon(offsets);
    }
}
