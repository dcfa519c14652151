//! [`Shutdown`]: how a running detector is asked to stop. One value carries the three
//! things a stop involves:
//! - **stop**: sources stop reading; the stages drain what they were handed, the lake is
//!   flushed and the final offsets are committed;
//! - **deadline**: how long that drain may take once a stop is asked for;
//! - **abort**: after the deadline (or on a second request), waits on sinks that are still
//!   down give up; what is not durable stays uncommitted and is read again on restart.
//!
//! Clones share the state, so a signal handler, a test and the detector's tasks can all
//! hold one.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A stop request, its deadline and the abort that follows it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
    deadline: Duration,
}

impl Shutdown {
    /// A shutdown whose drain may take `deadline` before it aborts.
    #[must_use]
    pub fn new(deadline: Duration) -> Self {
        Self {
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            deadline,
        }
    }

    /// Ask to stop: sources stop reading and the stages drain; `deadline` later, abort.
    /// A second call aborts at once. Call it inside a tokio runtime.
    pub fn stop(&self) {
        if self.stop.is_cancelled() {
            tracing::error!("second stop request: giving up on what is not yet durable");
            self.abort();
            return;
        }
        tracing::warn!(deadline = ?self.deadline, "stopping: draining, flushing the lake, committing offsets");
        self.stop.cancel();
        let abort = self.abort.clone();
        let deadline = self.deadline;
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(deadline) => {
                    tracing::error!("shutdown deadline passed: giving up on what is not yet durable");
                    abort.cancel();
                }
                () = abort.cancelled() => {}
            }
        });
    }

    /// Give up on sinks that are still down, now.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    /// Whether a stop was asked for.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves once a stop is asked for (cancel-safe).
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// The stop token, for code that polls it (blocking readers).
    #[must_use]
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The abort token: cancelled once waiting on a sink must end.
    #[must_use]
    pub fn abort_token(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// The drain deadline.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stop_aborts_after_the_deadline() {
        let s = Shutdown::new(Duration::from_secs(30));
        assert!(!s.is_stopping());
        s.stop();
        assert!(s.is_stopping());
        let started = tokio::time::Instant::now();
        s.abort_token().cancelled().await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stop_aborts_at_once() {
        let s = Shutdown::new(Duration::from_secs(30));
        s.stop();
        s.clone().stop();
        assert!(s.abort_token().is_cancelled());
    }
}
