//! The scorer task, the same for every source: batches arrive over the bounded channel;
//! each is scored ([`Scorer`]), written to the durable sinks ([`Delivery`]), counted
//! ([`Stats`]), buffered for the lake, and then its source positions are acknowledged
//! ([`Acknowledge`]). When the lake is durable, positions wait until the lake has flushed
//! their rows. Between batches it flushes the lake by age.
//!
//! ```text
//! source ──bounded channel──► scorer task: score → verdicts → alerts → stats → lake → ack
//! ```

use std::time::Duration;

use tokio::sync::mpsc;

use super::acker::{Acknowledge, SourceOffset};
use super::delivery::{Delivery, DeliveryError};
use super::scorer::{ScoreError, Scorer};
use super::source::Batch;
use super::stats::{self, SharedStats};
use crate::metric_names as names;

/// How often an idle scorer task checks whether the lake is due for a flush by age.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Why the scorer task stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
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

impl Stages {
    /// Process batches until the source closes the channel, then flush the lake and
    /// acknowledge the rest. Positions of a batch that failed stay unacknowledged.
    pub async fn run(
        &mut self,
        mut batches: mpsc::Receiver<Batch>,
        acker: &dyn Acknowledge,
    ) -> Result<(), PipelineError> {
        let mut held: Vec<SourceOffset> = Vec::new();
        let mut tick = tokio::time::interval(IDLE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = async {
            loop {
                tokio::select! {
                    b = batches.recv() => {
                        let Some(b) = b else { break };
                        metrics::gauge!(names::BATCHES_IN_FLIGHT).decrement(1.0);
                        self.process(b, &mut held).await?;
                    }
                    _ = tick.tick() => self.delivery.maintain().await?,
                }
                if !self.delivery.waits_for_lake() {
                    acker.acknowledge(&mut held);
                }
            }
            self.delivery.finish().await?;
            acker.acknowledge(&mut held);
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "scorer stopped; offsets of unfinished batches stay uncommitted");
        }
        result
    }

    /// One batch through every stage; its positions join `held`.
    async fn process(
        &mut self,
        batch: Batch,
        held: &mut Vec<SourceOffset>,
    ) -> Result<(), PipelineError> {
        if !batch.rows.is_empty() {
            let mut scored = self.scorer.score(batch.rows).await?;
            let dead = self.delivery.write(&mut scored).await?;
            {
                let mut stats = stats::lock(&self.stats);
                stats.dead_letters += dead;
                stats.record(&scored);
            }
            self.delivery.buffer(scored).await?;
        }
        held.extend(batch.offsets);
        Ok(())
    }
}
