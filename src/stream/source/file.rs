//! The file source (the embedded mode): a file, optionally followed as it grows, or
//! stdin; Kaggle CSV or JSON lines.
//!
//! ```text
//! reader (blocking thread) ──bounded──► source task: batcher ──► scorer task
//!   CSV / JSON lines                      └─ invalid rows ──► dead-letter sink (file)
//! ```
//! The reader parses on a blocking thread; the source task batches, dead-letters invalid
//! rows and hands batches on. Both channels are bounded, so a slow sink slows the reader
//! instead of filling memory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Batch, BatchSender, Incoming, Origin};
use crate::metric_names as names;
use crate::schema::csv::CsvReader;
use crate::schema::json::JsonLinesReader;
use crate::schema::{Format, ReadError, RecordError, Transaction};
use crate::stream::batcher::Batcher;
use crate::stream::dead_letter::{DeadLetter, DeadLetterSink, send_durably};
use crate::stream::delivery::DeliveryError;
use crate::stream::stats::{self, SharedStats};

/// Rows buffered between the reader thread and the source task: a few batches' worth, so
/// the reader stays ahead of scoring without holding more than a few MB.
const READ_AHEAD: usize = 8192;

/// Rows per `decode` stage sample.
const DECODE_BLOCK: usize = 512;

/// How often a followed file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Where transactions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file: CSV or JSON lines, by extension.
    File(PathBuf),
    /// Standard input, in the given format.
    Stdin(Format),
}

impl Input {
    /// The input's name in messages (`-` for stdin).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Stdin(_) => "-".into(),
        }
    }
}

/// Why the file source stopped early.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The input could not be opened or read (not a bad row: those are dead-lettered).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The dead-letter sink stayed unavailable until the shutdown's abort.
    #[error("dead letters: {0}")]
    DeadLetters(#[from] DeliveryError),
    /// The reader thread failed.
    #[error("reader thread: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The file source's settings.
pub struct FileSource {
    /// What to read.
    pub input: Input,
    /// Keep reading a file past its end, as it grows, until stopped.
    pub follow: bool,
    /// Batch size and timeout.
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub batch_timeout: Duration,
    /// Where invalid rows go.
    pub dead_letters: Arc<dyn DeadLetterSink>,
}

struct Row {
    line: u64,
    read_at: Instant,
    result: Result<Transaction, RecordError>,
}

impl FileSource {
    /// Read to the end of the input (or until `stop`), handing batches to `batches`.
    /// Dead-letter waits end at `abort`.
    pub async fn run(
        &self,
        batches: &BatchSender,
        stats: &SharedStats,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) -> Result<(), FileSourceError> {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        let reader = spawn_reader(self.input.clone(), self.follow, tx, stop.clone());
        let mut batcher = Batcher::new(self.batch_size, self.batch_timeout);
        let source: Arc<str> = Arc::from(self.input.describe());
        let outcome = loop {
            let full = tokio::select! {
                r = rx.recv() => match r {
                    Some(row) => batcher.push(row),
                    None => break Ok(()),
                },
                () = batcher.expired() => Some(batcher.take()),
            };
            if let Some(rows) = full
                && !self.dispatch(&source, rows, batches, stats, abort).await?
            {
                break Ok(()); // the scorer task has stopped
            }
        };
        if !batcher.is_empty() {
            self.dispatch(&source, batcher.take(), batches, stats, abort)
                .await?;
        }
        drop(rx);
        reader.await??;
        outcome
    }

    /// Dead-letter the invalid rows and hand the rest on; false when the scorer task is
    /// gone.
    async fn dispatch(
        &self,
        source: &Arc<str>,
        rows: Vec<Row>,
        batches: &BatchSender,
        stats: &SharedStats,
        abort: &CancellationToken,
    ) -> Result<bool, FileSourceError> {
        metrics::counter!(names::CONSUMED).increment(rows.len() as u64);
        let mut valid = Vec::with_capacity(rows.len());
        let mut dead = Vec::new();
        for row in rows {
            let origin = Origin::File {
                path: source.clone(),
                line: row.line,
            };
            match row.result {
                Ok(tx) => valid.push(Incoming {
                    tx,
                    origin,
                    read_at: row.read_at,
                    produced_at_ms: None,
                }),
                Err(e) => dead.push(DeadLetter {
                    origin,
                    key: None,
                    payload: Vec::new(),
                    reason: e.kind.into(),
                }),
            }
        }
        if !dead.is_empty() {
            send_durably(self.dead_letters.as_ref(), &dead, abort).await?;
        }
        {
            let mut s = stats::lock(stats);
            s.read += (valid.len() + dead.len()) as u64;
            s.dead_letters += dead.len() as u64;
        }
        let batch = Batch {
            rows: valid,
            offsets: crate::stream::acker::Tracked::default(),
        };
        if batches.send(batch).await.is_err() {
            return Ok(false);
        }
        metrics::gauge!(names::BATCHES_IN_FLIGHT).increment(1.0);
        Ok(true)
    }
}

/// A file read past its end: at end of file, wait for more bytes instead of returning 0,
/// until `stop` is cancelled.
struct Follow<R> {
    inner: R,
    stop: CancellationToken,
}

impl<R: Read> Read for Follow<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() || self.stop.is_cancelled() {
                return Ok(n);
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// Read rows on a blocking thread into `tx`, stopping early on shutdown.
fn spawn_reader(
    input: Input,
    follow: bool,
    tx: mpsc::Sender<Row>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), ReadError>> {
    tokio::task::spawn_blocking(move || {
        let (path, format, reader): (String, Format, Box<dyn Read + Send>) = match &input {
            Input::File(p) => {
                let path = p.display().to_string();
                let format = Format::from_path(&path)
                    .ok_or_else(|| ReadError::UnknownFormat { path: path.clone() })?;
                let f = File::open(p).map_err(|source| ReadError::Io {
                    path: path.clone(),
                    source,
                })?;
                let reader: Box<dyn Read + Send> = if follow {
                    Box::new(Follow {
                        inner: f,
                        stop: stop.clone(),
                    })
                } else {
                    Box::new(f)
                };
                (path, format, reader)
            }
            Input::Stdin(format) => ("-".into(), *format, Box::new(std::io::stdin())),
        };
        let rows: Box<dyn Iterator<Item = Result<Transaction, ReadError>>> = match format {
            Format::Csv => Box::new(CsvReader::new(
                &path,
                BufReader::with_capacity(1 << 16, reader),
            )?),
            Format::JsonLines => Box::new(JsonLinesReader::new(
                &path,
                BufReader::with_capacity(1 << 16, reader),
            )),
            Format::Parquet => {
                return Err(ReadError::UnknownFormat { path });
            }
        };
        // Time spent parsing, recorded per block of rows as the `decode` stage.
        let mut parsing = Duration::ZERO;
        let mut parsed = 0usize;
        let mut rows = rows.enumerate();
        loop {
            let started = Instant::now();
            let Some((i, r)) = rows.next() else { break };
            parsing += started.elapsed();
            parsed += 1;
            if parsed == DECODE_BLOCK {
                metrics::histogram!(names::STAGE_SECONDS, "stage" => "decode")
                    .record(parsing.as_secs_f64());
                (parsing, parsed) = (Duration::ZERO, 0);
            }
            if stop.is_cancelled() {
                break;
            }
            let (line, result) = match r {
                Ok(tx) => (i as u64 + 1, Ok(tx)),
                Err(ReadError::Record(e)) => (e.line, Err(e)),
                Err(other) => return Err(other),
            };
            let row = Row {
                line,
                read_at: Instant::now(),
                result,
            };
            if tx.blocking_send(row).is_err() {
                break; // the pipeline stopped
            }
        }
        if parsed > 0 {
            metrics::histogram!(names::STAGE_SECONDS, "stage" => "decode")
                .record(parsing.as_secs_f64());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::stream::dead_letter::DeadLetterError;

    /// A dead-letter sink that is always down.
    struct Down;

    #[async_trait]
    impl DeadLetterSink for Down {
        fn describe(&self) -> String {
            "down".into()
        }
        async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
            Err(DeadLetterError {
                failed: (0..letters.len()).collect(),
                message: "unreachable".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_stop_during_a_dead_letter_outage_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "{\"id\": \"x\", \"Time\": \"soon\"}\n").unwrap();
        let source = FileSource {
            input: Input::File(path),
            follow: false,
            batch_size: 10,
            batch_timeout: Duration::from_millis(5),
            dead_letters: Arc::new(Down),
        };
        let (tx, mut rx) = mpsc::channel(4);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let stats = SharedStats::default();
        let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
        let aborter = abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            aborter.cancel();
        });
        let e = source.run(&tx, &stats, &stop, &abort).await.unwrap_err();
        assert!(
            matches!(
                e,
                FileSourceError::DeadLetters(DeliveryError::Aborted { .. })
            ),
            "{e}"
        );
        assert_eq!(
            stats::lock(&stats).dead_letters,
            0,
            "nothing counted as sent"
        );
        drop(tx);
        drain.await.unwrap();
    }
}
