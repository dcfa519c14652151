//! Supervised background tasks: a task that ends before the detector asks it to, by
//! returning, by an error or by a panic, is a failure that stops the detector with that
//! error and counts in `fraudstream_task_failures_total{task}`. Nothing dies silently.
//!
//! Tasks that poll (the model watchers) isolate each poll instead: a panic inside one
//! poll is caught, counted in `fraudstream_task_restarts_total{task}`, and the next poll
//! runs ([`catch_panic`]).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

/// A task that ended early: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("background task `{task}` stopped: {message}")]
pub struct TaskFailed {
    /// The task's name.
    pub task: &'static str,
    /// What ended it.
    pub message: String,
}

/// Background tasks that must run until `stop` is cancelled.
pub struct Tasks {
    /// Each task's outcome: `Err` holds its error's message.
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, &'static str>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.names.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Tasks {
    /// An empty set whose tasks are told to end by `stop`.
    #[must_use]
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            stop,
        }
    }

    /// The token that tells the tasks to end.
    #[must_use]
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Run `task` until `stop`. Ending before it, whatever the cause, is a failure.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task.map(Ok));
        self.names.insert(handle.id(), name);
    }

    /// [`Tasks::spawn`] for a task that can fail: its error is the failure's message.
    pub fn spawn_fallible<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task.map(|r| r.map_err(|e| e.to_string())));
        self.names.insert(handle.id(), name);
    }

    /// Resolves with the first task that ends before `stop` is cancelled; never while
    /// every task runs (cancel-safe: a task seen ending is not reported twice).
    pub async fn failed(&mut self) -> TaskFailed {
        loop {
            let Some(joined) = self.set.join_next_with_id().await else {
                // Nothing left to watch.
                return std::future::pending().await;
            };
            let (id, message) = match joined {
                Ok((id, Ok(()))) => (id, "it ended".to_owned()),
                Ok((id, Err(e))) => (id, e),
                Err(e) => (
                    e.id(),
                    if e.is_panic() {
                        format!("panicked: {}", panic_message(&*e.into_panic()))
                    } else {
                        "cancelled".to_owned()
                    },
                ),
            };
            let task = self.names.remove(&id).unwrap_or("unnamed");
            if self.stop.is_cancelled() {
                continue; // asked to end
            }
            metrics::counter!(names::TASK_FAILURES, "task" => task).increment(1);
            tracing::error!(task, error = %message, "a background task stopped; stopping the detector");
            return TaskFailed { task, message };
        }
    }

    /// Tell every task to end, and wait for them (a task still running after `grace` is
    /// aborted).
    pub async fn shut_down(mut self, grace: std::time::Duration) {
        self.stop.cancel();
        let all = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(running = ?self.names.values().collect::<Vec<_>>(), "background tasks still running at shutdown; aborted");
            self.set.abort_all();
        }
    }
}

/// Run one step of a long-lived task (a poll), turning a panic into an error that names
/// `task` and counts in `fraudstream_task_restarts_total`: the caller goes on with the
/// next step.
pub async fn catch_panic<T>(task: &'static str, step: impl Future<Output = T>) -> Option<T> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(v) => Some(v),
        Err(panic) => {
            metrics::counter!(names::TASK_RESTARTS, "task" => task).increment(1);
            tracing::error!(
                task,
                error = %panic_message(&*panic),
                "a step of a background task panicked; it goes on with the next"
            );
            None
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_errs_or_returns_early_is_reported_by_name() {
        for (name, expect) in [
            ("panics", "panicked: boom"),
            ("errs", "no disk"),
            ("returns", "it ended"),
        ] {
            let mut tasks = Tasks::new(CancellationToken::new());
            let stop = tasks.stop_token();
            tasks.spawn("steady", async move { stop.cancelled().await });
            tasks.spawn_fallible(name, async move {
                match name {
                    "panics" => panic!("boom"),
                    "errs" => Err(std::io::Error::other("no disk")),
                    _ => Ok(()),
                }
            });
            let failed = tasks.failed().await;
            assert_eq!(failed.task, name);
            assert!(failed.message.contains(expect), "{failed}");
            tasks.shut_down(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_asked_to_end_are_not_failures() {
        let mut tasks = Tasks::new(CancellationToken::new());
        let stop = tasks.stop_token();
        tasks.spawn("steady", async move { stop.cancelled().await });
        tasks.stop_token().cancel();
        let waited = tokio::time::timeout(Duration::from_secs(5), tasks.failed()).await;
        assert!(waited.is_err(), "an ended task asked to end is no failure");
    }

    #[tokio::test]
    async fn a_panicking_step_is_caught_and_the_next_runs() {
        assert_eq!(catch_panic("poll", async { 3 }).await, Some(3));
        let none: Option<()> = catch_panic("poll", async { panic!("once") }).await;
        assert!(none.is_none());
    }
}
