//! A lake outside the durable set, written by a task of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::outage::{Outage, best_effort_failed};
use super::{Sink, stage_time};
use crate::metric_names as names;
use crate::sinks::lake::{LakeWriter, OwnershipSlot, ScoredRecord};

/// Batches queued for a lake outside the durable set: a few, so that the queue absorbs
/// bursts while a file is written, and a lake that hangs (a frozen DataNode) costs only
/// this much memory.
const LAKE_QUEUE: usize = 16;

/// How long a batch waits for room in the queue of a lake that is working (writing a
/// file takes a moment; a fast source fills the queue meanwhile) before it is dropped.
/// A lake whose write has been running longer than this, or whose last write failed, is
/// stuck: batches are dropped at once instead of waiting.
const LAKE_PATIENCE: Duration = Duration::from_secs(2);

/// A lake outside the durable set, written by a task of its own, so that it never holds
/// up scoring or the durable sinks: when its queue is full (its store hangs) batches are
/// dropped, counted in `fraudstream_lake_dropped_rows_total`; when its own buffer is full
/// and a write fails, the buffer is dropped the same way. On shutdown it writes what it
/// holds, retrying until the abort.
pub struct LakeTask {
    tx: tokio::sync::mpsc::Sender<Vec<ScoredRecord>>,
    /// The writer's ownership slot.
    pub(super) ownership: OwnershipSlot,
    task: tokio::task::JoinHandle<()>,
    health: Arc<LakeHealth>,
    last_warned: Option<Instant>,
}

/// What the lake task tells the sender about its store.
#[derive(Default)]
struct LakeHealth {
    /// When the write in progress started (ms since `epoch`), or 0.
    writing_since_ms: std::sync::atomic::AtomicU64,
    /// Whether the last write failed.
    failing: std::sync::atomic::AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl LakeHealth {
    fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    fn stuck(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.writing_since_ms.load(Relaxed);
        self.failing.load(Relaxed)
            || (since > 0 && self.now_ms().saturating_sub(since) > LAKE_PATIENCE.as_millis() as u64)
    }
}

impl LakeTask {
    pub(super) fn start(lake: LakeWriter, abort: CancellationToken) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(LAKE_QUEUE);
        let health = Arc::new(LakeHealth::default());
        Self {
            ownership: lake.ownership(),
            tx,
            task: tokio::spawn(run_detached_lake(lake, rx, abort, health.clone())),
            health,
            last_warned: None,
        }
    }

    /// Queue records: when the queue is full, wait for room while the lake is working
    /// (up to [`LAKE_PATIENCE`]); drop them (counted) when it is stuck.
    pub(super) async fn send(&mut self, records: Vec<ScoredRecord>) {
        let rows = records.len();
        let records = match self.tx.try_send(records) {
            Ok(()) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(r)) => r,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                lake_dropped(rows, "the lake task has ended");
                return;
            }
        };
        let sent = !self.health.stuck()
            && matches!(
                tokio::time::timeout(LAKE_PATIENCE, self.tx.send(records)).await,
                Ok(Ok(()))
            );
        if !sent {
            lake_dropped(rows, "its queue is full: the lake store is slow or down");
            // One line per ten seconds at most: an outage drops many batches.
            if self
                .last_warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.last_warned = Some(Instant::now());
                tracing::warn!(
                    rows,
                    "lake: batch dropped (the lake is not in delivery.durable; add it there to pause instead)"
                );
            }
        }
    }

    /// Close the queue and wait for the task to write what it holds.
    pub(super) async fn finish(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "lake task failed");
        }
    }
}

fn lake_dropped(rows: usize, why: &str) {
    metrics::counter!(names::LAKE_DROPPED_ROWS).increment(rows as u64);
    tracing::debug!(rows, why, "lake rows dropped");
}

/// The task of a lake outside the durable set.
async fn run_detached_lake(
    mut lake: LakeWriter,
    mut rx: tokio::sync::mpsc::Receiver<Vec<ScoredRecord>>,
    abort: CancellationToken,
    health: Arc<LakeHealth>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(records) => {
                    // Where each stream stands, before its rows are buffered; the queue
                    // backs up (and batches are dropped) while the store is down. Reading
                    // the markers is a store call like a write: one that hangs (a frozen
                    // DataNode) makes the lake stuck, so batches are dropped at once
                    // instead of each waiting its patience out.
                    let mut outage = Outage::new(Sink::Lake.label());
                    health.writing_since_ms.store(health.now_ms(), Relaxed);
                    let mut recovered = lake.recover(&records).await;
                    while let Err(e) = &recovered {
                        if outage.wait(&abort, e).await.is_err() {
                            break;
                        }
                        recovered = lake.recover(&records).await;
                    }
                    health.writing_since_ms.store(0, Relaxed);
                    if recovered.is_ok() {
                        lake.push_all(records);
                    } else {
                        lake_dropped(records.len(), "stopped while the lake store was down");
                    }
                }
                None => break,
            },
            _ = tick.tick() => {}
        }
        if !lake.is_due() {
            continue;
        }
        let started = Instant::now();
        health.writing_since_ms.store(health.now_ms(), Relaxed);
        let written = lake.flush().await;
        health.writing_since_ms.store(0, Relaxed);
        health.failing.store(written.is_err(), Relaxed);
        if let Err(e) = written {
            best_effort_failed(Sink::Lake, &e);
            if lake.is_full() {
                let rows = lake.discard();
                lake_dropped(rows, "its buffer is full and the store refuses writes");
                tracing::warn!(
                    rows,
                    "lake: buffer dropped after a failed write (the lake is not in delivery.durable)"
                );
            } else {
                lake.postpone();
            }
        }
        stage_time("lake", started);
    }
    let mut outage = Outage::new(Sink::Lake.label());
    while lake.buffered() > 0 {
        if let Err(e) = lake.flush().await
            && outage.wait(&abort, &e).await.is_err()
        {
            lake_dropped(lake.discard(), "stopped while the lake store was down");
            break;
        }
    }
}
