//! The scorer task, the same for every source: batches arrive over the bounded channel;
//! each is scored ([`Scorer`]), written to the durable sinks ([`Delivery`]), counted
//! ([`Stats`]), buffered for the lake, and then its source positions are acknowledged
//! ([`Acknowledge`]). When the lake is durable, positions wait until the lake has flushed
//! their rows. Between batches it flushes the lake by age.
//!
//! ```text
//! source ──bounded channel──► score ──(one batch ahead)──► verdicts → alerts → stats
//!                                                           → lake → ack
//! ```

use std::time::Duration;

use tokio::sync::mpsc;

use super::acker::{Acknowledge, Tracked};
use super::delivery::{Delivery, DeliveryError};
use super::scorer::{ScoreError, Scored, Scorer};
use super::source::Batch;
use super::stats::{self, SharedStats};
use crate::metric_names as names;

/// How often an idle scorer task checks whether the lake is due for a flush by age.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Why the scorer task stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StagesError {
    /// Scoring failed.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// A durable sink could not take a batch.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// The scorer task's stages. They outlive one consumer (a replaced consumer hands them to
/// its successor).
pub struct Stages {
    /// Scores batches.
    pub scorer: Scorer,
    /// Writes them.
    pub delivery: Delivery,
    /// Counts them.
    pub stats: SharedStats,
}

/// Scored batches waiting for delivery: one being written while the next is scored, so
/// scoring (on every core) and the sinks' I/O overlap; more would only hold memory.
const SCORED_AHEAD: usize = 1;

/// A scored batch (none when every row was dead-lettered) and its source positions.
type ScoredBatch = (Option<Scored>, Tracked);

impl Stages {
    /// Process batches until the source closes the channel, then flush the lake and
    /// acknowledge the rest. Scoring and delivery run side by side (batch n+1 is scored
    /// while batch n is written), in order; positions are acknowledged only after their
    /// batch is delivered, and those of a batch that failed stay unacknowledged.
    pub async fn run(
        &mut self,
        mut batches: mpsc::Receiver<Batch>,
        acker: &dyn Acknowledge,
    ) -> Result<(), StagesError> {
        let Self {
            scorer,
            delivery,
            stats,
        } = self;
        let (scored_tx, mut scored_rx) = mpsc::channel::<ScoredBatch>(SCORED_AHEAD);
        let score = async move {
            while let Some(b) = batches.recv().await {
                metrics::gauge!(names::BATCHES_IN_FLIGHT).decrement(1.0);
                let scored = if b.rows.is_empty() {
                    None
                } else {
                    Some(scorer.score(b.rows).await?)
                };
                if scored_tx.send((scored, b.offsets)).await.is_err() {
                    break; // delivery failed: its error is the one reported
                }
            }
            Ok::<(), StagesError>(())
        };
        let deliver = async {
            let mut held: Vec<Tracked> = Vec::new();
            let mut tick = tokio::time::interval(IDLE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    item = scored_rx.recv() => {
                        let Some((scored, offsets)) = item else { break };
                        if let Some(scored) = scored {
                            deliver(delivery, stats, scored).await?;
                        }
                        held.push(offsets);
                    }
                    _ = tick.tick() => delivery.maintain().await?,
                }
                if !delivery.waits_for_lake() {
                    acker.acknowledge(&mut held);
                }
            }
            delivery.finish().await?;
            acker.acknowledge(&mut held);
            Ok::<(), StagesError>(())
        };
        let result = tokio::try_join!(score, deliver).map(|_| ());
        if let Err(e) = &result {
            tracing::error!(error = %e, "scorer stopped; offsets of unfinished batches stay uncommitted");
        }
        result
    }
}

/// One scored batch into the sinks and the counts.
async fn deliver(
    delivery: &mut Delivery,
    stats: &SharedStats,
    mut scored: Scored,
) -> Result<(), StagesError> {
    let dead = delivery.write(&mut scored).await?;
    {
        let mut stats = stats::lock(stats);
        stats.dead_letters += dead;
        stats.record(&scored);
    }
    delivery.buffer(scored).await?;
    Ok(())
}
