//! Waiting out a durable sink's outage, and what a failed delivery is.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Sink;
use crate::metric_names as names;
use crate::retry::RetryPolicy;

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A shutdown's deadline passed (or a second signal came) while a durable sink was
    /// still unavailable.
    #[error("stopped while the {sink} sink was unavailable: {message}")]
    Aborted {
        /// The sink's label.
        sink: &'static str,
        /// Its last error.
        message: String,
    },
    /// A durable sink refused the batch for a reason retrying cannot fix.
    #[error("the {sink} sink failed: {message}")]
    Failed {
        /// The sink's label.
        sink: &'static str,
        /// The error.
        message: String,
    },
}

/// Backoff while a durable sink is down: the batch is retried until it is durable (or the
/// process is aborted), so the source pauses instead of losing or buffering. Only the
/// delays are used; attempts are unbounded.
pub const OUTAGE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(5),
};

/// One sink's outage: waits between attempts, counted as retries and blocked time, until
/// an abort.
pub struct Outage {
    sink: &'static str,
    attempt: u32,
    rng: crate::rng::Rng,
}

impl Outage {
    /// An outage of the sink labelled `sink` (`verdicts`, `alerts`, `lake`, `dlq`).
    #[must_use]
    pub fn new(sink: &'static str) -> Self {
        Self {
            sink,
            attempt: 0,
            rng: crate::rng::Rng::new(u64::from(std::process::id())),
        }
    }

    /// Log `error`, then wait before the next attempt; fails once `abort` is cancelled.
    pub async fn wait(
        &mut self,
        abort: &CancellationToken,
        error: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), DeliveryError> {
        self.attempt = self.attempt.saturating_add(1);
        let sink = self.sink;
        metrics::counter!(names::SINK_RETRIES, "sink" => sink).increment(1);
        if sink == Sink::Verdicts.label() {
            metrics::counter!(names::VERDICT_RETRIES).increment(1);
        }
        tracing::warn!(sink, error = %error, attempt = self.attempt, "sink unavailable; pausing the source until it returns");
        let delay = OUTAGE_RETRY.delay(self.attempt, &mut self.rng);
        let started = Instant::now();
        let aborted = abort.is_cancelled()
            || tokio::select! {
                () = tokio::time::sleep(delay) => false,
                () = abort.cancelled() => true,
            };
        metrics::histogram!(names::BLOCKED_SECONDS, "stage" => sink)
            .record(started.elapsed().as_secs_f64());
        if aborted {
            return Err(DeliveryError::Aborted {
                sink,
                message: error.to_string(),
            });
        }
        Ok(())
    }
}

/// A best-effort sink failed: log and count; the batch goes on.
pub(super) fn best_effort_failed(sink: Sink, error: &dyn std::fmt::Display) {
    metrics::counter!(names::SINK_ERRORS, "sink" => sink.label()).increment(1);
    tracing::error!(sink = sink.label(), error = %error, "write to a best-effort sink failed; not retried (add it to delivery.durable to retry)");
}
