//! The rebalance handler (the consumer's context): assigned partitions join the shared
//! state and take the source's pause state; revoked partitions wait (bounded) for their
//! dispatched batches to become durable, commit what is durable, and are forgotten, so
//! nothing of theirs is committed by this member afterwards. It also exports consumer lag
//! from librdkafka's statistics.

use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::metric_names as names;
use crate::stream::acker::{PartitionKey, SharedPartitions, SourceOffset, lock};

/// How long a revoke waits for the transaction that commits its partitions' offsets: the
/// callback holds up the consumer's polls, and a consumer that does not poll within
/// `max.poll.interval.ms` is put out of the group.
const REVOKE_COMMIT_TIMEOUT: Duration = Duration::from_secs(3);

/// The consumer's context.
pub struct DetectorContext {
    /// State shared with the source and the acker.
    pub shared: SharedPartitions,
    /// How long a revoke waits for in-flight batches of the revoked partitions.
    pub revoke_timeout: Duration,
    /// Where the summed lag goes, for the API.
    pub stats: crate::stream::stats::SharedStats,
    /// The transactional outbox, when outputs are exactly once: a revoke commits
    /// through it, then forgets the partitions' staged messages.
    pub outbox: Option<std::sync::Arc<super::outbox::Outbox>>,
}

impl ClientContext for DetectorContext {
    fn stats(&self, statistics: Statistics) {
        let mut total = 0i64;
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Behind the committed offset; with transactional outputs the consumer
                // commits nothing itself, and the stored offsets are the committed ones.
                let lag = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.stored_offset >= 0 {
                    p.consumer_lag_stored
                } else {
                    continue;
                };
                if *partition >= 0 && lag >= 0 {
                    total += lag;
                    metrics::gauge!(names::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(lag as f64);
                }
            }
        }
        crate::stream::stats::lock(&self.stats).consumer_lag = Some(total);
    }
}

impl ConsumerContext for DetectorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let keys = keys_of(tpl);
                tracing::info!(partitions = ?keys, "partitions assigned");
                if let Some(outbox) = &self.outbox {
                    // Before the consumer reads the committed offsets (after this
                    // callback): fence each partition's previous holder, so that no
                    // transaction of theirs can still change them.
                    blocking(|| outbox.open(&keys));
                }
                self.shared.assign(keys);
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

/// Run `f`, which waits. The callbacks run inside a poll on a runtime worker: that
/// worker's other tasks (the scorer among them, perhaps) go to another thread meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn keys_of(tpl: &TopicPartitionList) -> Vec<PartitionKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// A partition list of `offsets`.
pub fn partition_list(offsets: &[SourceOffset]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(topic, partition, error = %e, "offset not committable");
        }
    }
    tpl
}

impl DetectorContext {
    /// Revoked partitions: wait (bounded) for their dispatched batches to become durable,
    /// commit what is durable, and forget them. Runs on the polling thread while the
    /// scorer task goes on.
    fn revoke(&self, consumer: &BaseConsumer<Self>, keys: &[PartitionKey]) {
        let deadline = Instant::now() + self.revoke_timeout;
        // A durable lake holds offsets until its rows are in a file: have it write now.
        self.shared.request_lake_flush();
        let wait = || {
            let pending = loop {
                let pending = lock(&self.shared).marks.in_flight_in(keys);
                if pending == 0 || Instant::now() >= deadline {
                    break pending;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            // A lake file of these partitions being written is waited for (its write is
            // bounded by the lake's retries), so it is in the lake before the new owner
            // looks: once revoked, none is started.
            let writing_deadline =
                Instant::now() + self.revoke_timeout.max(Duration::from_secs(30));
            while keys
                .iter()
                .any(|k| lock(&self.shared).lake_writing.contains(k))
                && Instant::now() < writing_deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            pending
        };
        let pending = blocking(wait);
        if pending > 0 {
            tracing::warn!(
                pending,
                "revoked partitions still have batches in flight; their new owner will re-read them"
            );
        }
        let last = {
            let mut s = lock(&self.shared);
            if keys.iter().any(|k| s.lake_writing.contains(k)) {
                tracing::warn!(
                    "a lake file of a revoked partition is still being written; its new owner may write some of its rows again"
                );
            }
            s.revoke(keys)
        };
        metrics::counter!(names::PARTITIONS_REVOKED).increment(keys.len() as u64);
        if let Some(outbox) = &self.outbox {
            // An assignment the group took away is another member's to commit.
            let lost = consumer.assignment_lost();
            let committed =
                last.is_empty() || (!lost && outbox.commit_now(&last, REVOKE_COMMIT_TIMEOUT));
            outbox.forget(keys);
            if committed {
                tracing::info!(partitions = ?keys, "partitions revoked; durable offsets committed with their outputs");
            } else {
                tracing::warn!(partitions = ?keys, "partitions revoked; their last transaction did not commit in time (the new owner re-reads from the previous commit)");
            }
            return;
        }
        if last.is_empty() {
            tracing::info!(partitions = ?keys, "partitions revoked");
            return;
        }
        match consumer.commit(&partition_list(&last), CommitMode::Sync) {
            Ok(()) => {
                tracing::info!(partitions = ?keys, "partitions revoked; durable offsets committed");
            }
            // Harmless: the new owner re-reads from the previous commit.
            Err(e) => tracing::warn!(error = %e, "commit of revoked partitions failed"),
        }
    }
}
