//! The lake: scored records buffered into Arrow record batches and written as Parquet
//! micro-batches to any [`BlobStore`] (local directory, S3, HDFS).
//!
//! Files are laid out as `dt=YYYY-MM-DD/hour=HH/part-<writer>-<seq>.parquet` by the hour
//! each record was scored in (UTC). A buffer is flushed when it reaches a row count, an
//! estimated byte size or an age, and on shutdown. Every file is committed atomically
//! (temporary name and rename on local disk and HDFS, one PUT or multipart upload on S3),
//! so readers never see half a file. A failed flush keeps the buffer: nothing is lost, and
//! the next flush writes it.

//!
//! - [`config`]: `[lake]` and `[lake.writer]`.
//! - [`format`]: the files' Arrow schema, encoding and reading back, and the partition
//!   of a time.

pub mod config;
pub mod format;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use tokio::time::Instant;

pub use config::{LakeCompression, LakeConfig, LakeSettings};
pub use format::{
    LakeScore, encode_batches, encode_parquet, lake_schema, lake_schema_with, partition,
    read_scores, record_batch, record_batch_with, utc_hour,
};

use crate::metric_names as names;
use crate::retry::{RetryPolicy, retry};
use crate::schema::{NUM_FIELDS, Transaction};
use crate::storage::{BlobStore, StorageError};

/// A transaction with its verdict, as stored in the lake.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredRecord {
    /// The transaction (its `label`, when known, is kept for retraining).
    pub tx: Transaction,
    /// Fraud probability.
    pub score: f32,
    /// The verdict.
    pub fraud: bool,
    /// The model version that scored it.
    pub model_version: Arc<str>,
    /// When it was scored, Unix milliseconds (UTC).
    pub scored_at_ms: i64,
    /// The shadow model's score, verdict and version, when one scored it too.
    pub shadow: Option<ShadowRecord>,
    /// The decision: outcome, what decided, the rules that matched, the rule set.
    pub decision: DecisionRecord,
}

/// The decision on one record, as the lake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    /// `approve`, `review` or `block`.
    pub outcome: crate::rules::Outcome,
    /// A rule's name, `model` or `model_only`.
    pub decided_by: Arc<str>,
    /// The rules that matched.
    pub rules: Vec<Arc<str>>,
    /// The rule set's version, when one was active.
    pub rule_set: Option<Arc<str>>,
}

impl DecisionRecord {
    /// The decision a verdict carries.
    #[must_use]
    pub fn of(v: &crate::model::Verdict) -> Self {
        Self {
            outcome: v.outcome,
            decided_by: v.decided_by.clone(),
            rules: v.rules.clone(),
            rule_set: v.rule_set.clone(),
        }
    }
}

/// A shadow model's view of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRecord {
    /// Its score.
    pub score: f32,
    /// Its verdict at its own threshold.
    pub fraud: bool,
    /// Its version.
    pub version: Arc<str>,
}

/// Rows held as records before they become an Arrow batch (a delivered batch becomes
/// one at once; single pushes are gathered up to this).
const PENDING_ROWS: usize = 4096;

/// Buffers scored records as Arrow record batches, per hour partition, and writes
/// Parquet files.
///
/// Records become columns as they arrive ([`LakeWriter::push_all`] turns a delivered
/// batch into one record batch), so the buffer holds compact columns rather than
/// records, and a flush encodes them without copying them again.
#[derive(Debug)]
pub struct LakeWriter {
    store: Arc<dyn BlobStore>,
    settings: LakeSettings,
    /// Records not yet turned into a record batch.
    pending: Vec<ScoredRecord>,
    /// Record batches by partition (`dt=…/hour=…`), oldest first.
    batches: BTreeMap<String, Vec<RecordBatch>>,
    rows: usize,
    bytes: usize,
    oldest: Option<Instant>,
    seq: u64,
    policy: RetryPolicy,
    retry_after: Option<Instant>,
    /// Entity-feature columns.
    features: Vec<String>,
}

impl LakeWriter {
    /// A writer to `store`. File sequence numbers start from the current time in
    /// milliseconds × 1000, so a restarted writer never reuses a name.
    #[must_use]
    pub fn new(store: Arc<dyn BlobStore>, settings: LakeSettings) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            store,
            settings,
            pending: Vec::new(),
            batches: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            seq: now_ms * 1000,
            policy: RetryPolicy::default(),
            retry_after: None,
            features: Vec::new(),
        }
    }

    /// Store these entity features (the velocity spec's names) in every row.
    #[must_use]
    pub fn with_features(mut self, names: Vec<String>) -> Self {
        self.features = names;
        self
    }

    /// Use a different retry policy for writes.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Buffer one record.
    pub fn push(&mut self, r: ScoredRecord) {
        self.add(r);
        if self.pending.len() >= PENDING_ROWS {
            self.seal();
        }
    }

    /// Buffer records (a delivered batch) as record batches.
    pub fn push_all(&mut self, records: impl IntoIterator<Item = ScoredRecord>) {
        let records = records.into_iter();
        self.pending.reserve(records.size_hint().0);
        for r in records {
            self.add(r);
        }
        self.seal();
    }

    fn add(&mut self, r: ScoredRecord) {
        self.oldest.get_or_insert_with(Instant::now);
        self.bytes +=
            NUM_FIELDS * 8 + 32 + r.tx.id.len() + r.model_version.len() + r.tx.derived.len() * 4;
        self.rows += 1;
        self.pending.push(r);
    }

    /// Turn the pending records into record batches, one per partition. The lake's
    /// schema is fixed and the columns built from it, so this cannot fail; should it
    /// ever, the records stay pending (and are written row by row at the flush).
    fn seal(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let first = partition(self.pending[0].scored_at_ms);
        let one_partition = self
            .pending
            .iter()
            .all(|r| partition(r.scored_at_ms) == first);
        let groups: Vec<(String, Vec<ScoredRecord>)> = if one_partition {
            vec![(first, std::mem::take(&mut self.pending))]
        } else {
            let mut groups: BTreeMap<String, Vec<ScoredRecord>> = BTreeMap::new();
            for r in self.pending.drain(..) {
                groups.entry(partition(r.scored_at_ms)).or_default().push(r);
            }
            groups.into_iter().collect()
        };
        for (part, records) in groups {
            match record_batch_with(&records, &self.features) {
                Ok(b) => self.batches.entry(part).or_default().push(b),
                Err(e) => {
                    tracing::error!(error = %e, "lake: records could not become a record batch; kept as records");
                    self.pending.extend(records);
                }
            }
        }
    }

    /// Rows waiting to be written.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.rows
    }

    /// Whether the buffer holds four files' worth: writers must then wait for the store
    /// instead of buffering more.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.rows >= self.settings.max_rows.saturating_mul(4)
            || self.bytes >= self.settings.max_bytes.saturating_mul(4)
    }

    /// Drop everything buffered (a best-effort lake whose store stays down with its
    /// buffer full); returns how many rows.
    pub fn discard(&mut self) -> usize {
        let rows = self.rows;
        self.pending.clear();
        self.batches.clear();
        self.rows = 0;
        self.bytes = 0;
        self.oldest = None;
        rows
    }

    /// Delete temporary files that interrupted writes left in the lake's recent
    /// partitions (the last two days: where a writer was writing when it died; local disk
    /// and HDFS write a temporary file, then rename it): this writer's own (their names
    /// carry its `writer_id`: a previous run of it was killed mid-write), and anyone's
    /// older than a day. Returns how many were deleted.
    pub async fn clean_temporaries(&self) -> Result<usize, StorageError> {
        const ABANDONED: Duration = Duration::from_secs(86_400);
        const RECENT_HOURS: i64 = 48;
        let own = format!("part-{}-", self.settings.writer_id);
        let now_ms = crate::clock::now_ms();
        let mut found = Vec::new();
        for h in 0..=RECENT_HOURS {
            let prefix = format!("{}/", partition(now_ms - h * 3_600_000));
            found.extend(self.store.temporaries(&prefix).await?);
        }
        let mut deleted = 0;
        for t in found {
            if t.object.starts_with(&own) || t.age >= ABANDONED {
                self.store.delete_temporary(&t).await?;
                tracing::info!(path = %t.path, object = %t.object, "lake: temporary file of an interrupted write deleted");
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// After a failed flush: hold off the next attempt for one `max_age` (unless the
    /// buffer fills), so an outage is not retried on every batch.
    pub fn postpone(&mut self) {
        self.retry_after = Some(Instant::now() + self.settings.max_age);
    }

    /// Whether a limit (rows, bytes, or age) has been reached.
    #[must_use]
    pub fn is_due(&self) -> bool {
        if self.is_full() {
            return true;
        }
        if self.retry_after.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.rows >= self.settings.max_rows
            || self.bytes >= self.settings.max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.settings.max_age)
    }

    /// Write everything buffered, one file per hour partition, and return the keys
    /// written. On error the unwritten partitions stay buffered.
    pub async fn flush(&mut self) -> Result<Vec<String>, StorageError> {
        self.seal();
        let mut written = Vec::new();
        let mut failed: Option<StorageError> = None;
        let parts: Vec<String> = self.batches.keys().cloned().collect();
        for part in parts {
            let Some(batches) = self.batches.get(&part) else {
                continue;
            };
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let key = format!(
                "{part}/part-{}-{:020}.parquet",
                self.settings.writer_id, self.seq
            );
            let data = match encode_batches(batches, self.settings.compression) {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(StorageError::Other {
                        store: self.store.describe(),
                        message: format!("encoding {key}: {e}"),
                        retryable: false,
                    });
                    break;
                }
            };
            let result = retry(self.policy, "lake write", || {
                self.store.put(&key, data.clone())
            })
            .await;
            match result {
                Ok(()) => {
                    self.seq += 1;
                    self.batches.remove(&part);
                    self.rows -= rows;
                    metrics::counter!(names::LAKE_FILES_WRITTEN).increment(1);
                    metrics::counter!(names::LAKE_ROWS_WRITTEN).increment(rows as u64);
                    tracing::info!(key = %key, rows, "lake file written");
                    written.push(key);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.bytes = self
            .batches
            .values()
            .flatten()
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            + self
                .pending
                .iter()
                .map(|r| NUM_FIELDS * 8 + 32 + r.tx.id.len() + r.model_version.len())
                .sum::<usize>();
        if self.rows == 0 {
            self.oldest = None;
        }
        if failed.is_none() {
            self.retry_after = None;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

#[cfg(test)]
mod tests;
