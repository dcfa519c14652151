//! Dead letters: input that can never be scored, kept with the reason why. A source
//! sends its invalid records here before it hands the rest of a batch on, and waits out
//! an unavailable sink with the delivery's [`Outage`] backoff (the source pauses; the
//! wait is blocked time).
//!
//! - [`file`]: JSON lines in a local file (the embedded mode).
//! - [`kafka`]: the dead-letter topic, with the original bytes and key, and the reason and
//!   source position as headers.

pub mod file;
pub mod kafka;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use file::DeadLetterFile;
pub use kafka::DeadLetterTopic;

use super::delivery::{DeliveryError, Outage};
pub use super::source::Origin;
use crate::metric_names as names;
use crate::schema::RecordErrorKind;

/// Why a record is a dead letter: a stable code (a metric label) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Machine-readable: the input error's code (`invalid_json`, `too_large`, …), or
    /// `verdict_refused` / `alert_refused` for a record a sink can never accept.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl From<RecordErrorKind> for Reason {
    fn from(kind: RecordErrorKind) -> Self {
        Self {
            code: kind.code(),
            message: kind.to_string(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One record that can never be scored or stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where it came from.
    pub origin: Origin,
    /// The message key, if any.
    pub key: Option<Vec<u8>>,
    /// The original bytes (empty when the source does not keep them).
    pub payload: Vec<u8>,
    /// Why.
    pub reason: Reason,
}

/// Some dead letters were not accepted.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeadLetterError {
    /// Indices (into the slice sent) of the letters not accepted; the others are durable.
    pub failed: Vec<usize>,
    /// Why.
    pub message: String,
}

/// A destination for dead letters.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Where the letters go, for messages.
    fn describe(&self) -> String;
    /// Make `letters` durable; on error, says which were not.
    async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError>;
}

/// Send `letters` until the sink has them all, retrying only those it did not accept and
/// waiting between attempts; fails when `abort` is cancelled first.
pub async fn send_durably(
    sink: &dyn DeadLetterSink,
    letters: &[DeadLetter],
    abort: &CancellationToken,
) -> Result<(), DeliveryError> {
    let mut left: Vec<usize> = (0..letters.len()).collect();
    let mut outage = Outage::new("dlq");
    while !left.is_empty() {
        let batch: Vec<DeadLetter> = left.iter().map(|&i| letters[i].clone()).collect();
        let failed = match sink.send(&batch).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                let failed: Vec<usize> = e.failed.iter().map(|&j| left[j]).collect();
                outage
                    .wait(abort, &format!("{}: {e}", sink.describe()))
                    .await?;
                failed
            }
        };
        for &i in left.iter().filter(|i| !failed.contains(i)) {
            let l = &letters[i];
            metrics::counter!(names::DEAD_LETTERS, "reason" => l.reason.code).increment(1);
            tracing::debug!(origin = ?l.origin, reason = %l.reason, sink = %sink.describe(), "dead letter sent");
        }
        left = failed;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Accepts letters whose line is even on the first call, then everything.
    #[derive(Default)]
    struct HalfDown {
        calls: AtomicU32,
        got: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl DeadLetterSink for HalfDown {
        fn describe(&self) -> String {
            "half".into()
        }
        async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            let mut failed = Vec::new();
            for (i, l) in letters.iter().enumerate() {
                let Origin::File { line, .. } = l.origin else {
                    unreachable!()
                };
                if first && line % 2 == 1 {
                    failed.push(i);
                } else {
                    self.got.lock().unwrap().push(line);
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(DeadLetterError {
                    failed,
                    message: "down".into(),
                })
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_letters_not_accepted_are_sent_again() {
        let letters: Vec<DeadLetter> = (0..6)
            .map(|line| DeadLetter {
                origin: Origin::File {
                    path: "f".into(),
                    line,
                },
                key: None,
                payload: Vec::new(),
                reason: RecordErrorKind::Json {
                    message: "x".into(),
                }
                .into(),
            })
            .collect();
        let sink = HalfDown::default();
        send_durably(&sink, &letters, &CancellationToken::new())
            .await
            .unwrap();
        let mut got = sink.got.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "each exactly once");
        assert_eq!(sink.calls.load(Ordering::SeqCst), 2);
    }
}
