//! The lake: scored records buffered into Arrow record batches and written as Parquet
//! micro-batches to any [`BlobStore`] (local directory, S3, HDFS).
//!
//! Files are laid out by the hour each record was scored in (UTC), as
//! `dt=YYYY-MM-DD/hour=HH/<stream>+<first>+<last>.parquet`: one input stream (a Kafka
//! partition, a file) per file, named by the first and last offset it holds, so a row is
//! written once however often it is delivered ([`positions`]). Rows without a position
//! (stdin) go to `part-<writer>-<seq>.parquet`. A buffer is flushed when it reaches a row count, an
//! estimated byte size or an age, and on shutdown. Every file is committed atomically
//! (temporary name and rename on local disk and HDFS, one PUT or multipart upload on S3),
//! so readers never see half a file. A failed flush keeps the buffer: nothing is lost, and
//! the next flush writes it.

//!
//! - [`config`]: `[lake]` and `[lake.writer]`.
//! - [`format`]: the files' Arrow schema, encoding and reading back, and the partition
//!   of a time.
//! - [`positions`]: each stream's highest written offset, recovered from the files;
//!   `streams`: the writer's recovery of its streams, and its buffers.

pub mod config;
pub mod format;
pub mod positions;
mod streams;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use tokio::time::Instant;

pub use config::{LakeCompression, LakeConfig, LakeSettings};
pub use format::{
    LakeFeatures, LakeScore, encode_batches, encode_parquet, lake_schema, lake_schema_with,
    partition, read_features, read_scores, record_batch, record_batch_with, utc_hour,
};
use positions::StreamState;
pub use positions::{
    LakePosition, Ownership, OwnershipSlot, file_stream, kafka_stream, parse_stream_file,
    stream_file_key,
};
use streams::{Buffer, BufferKey};

use crate::metric_names as names;
use crate::retry::{RetryPolicy, retry};
use crate::schema::{NUM_FIELDS, Transaction};
use crate::storage::{BlobStore, Condition, StorageError};

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
    /// Where it came from (its stream and offset), when the source can say: a row
    /// with one is written once however often it is delivered.
    pub position: Option<LakePosition>,
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
    /// Record batches by hour partition (`dt=…/hour=…`) and stream, oldest first.
    batches: BTreeMap<BufferKey, Buffer>,
    /// Where each stream stands: rows at or below its `high` are redeliveries.
    streams: HashMap<Arc<str>, StreamState>,
    /// Which streams this member holds (a partitioned source installs it).
    ownership: OwnershipSlot,
    /// Drop the rows of streams no longer held instead of writing them (a durable lake:
    /// their offsets were not committed, so their new owner reads them again).
    drop_revoked: bool,
    /// The ownership's flush requests already answered.
    flushes_answered: u64,
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
            streams: HashMap::new(),
            ownership: OwnershipSlot::default(),
            drop_revoked: false,
            flushes_answered: 0,
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

    /// Drop the buffered rows of a stream this member no longer holds instead of writing
    /// them: right when offsets wait for the lake (a durable lake), since the stream's
    /// new owner then reads those rows again.
    #[must_use]
    pub fn dropping_revoked(mut self, drop: bool) -> Self {
        self.drop_revoked = drop;
        self
    }

    /// The slot through which a partitioned source says which streams this member holds.
    #[must_use]
    pub fn ownership(&self) -> OwnershipSlot {
        self.ownership.clone()
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
        if let Some(p) = &r.position {
            let state = self.streams.entry(p.stream.clone()).or_insert(StreamState {
                high: i64::MIN,
                written: -1,
                epoch: 0,
                recovered: None,
            });
            if p.offset <= state.high {
                metrics::counter!(names::LAKE_SKIPPED_ROWS).increment(1);
                return;
            }
            state.high = p.offset;
        }
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
        let key_of = |r: &ScoredRecord| {
            (
                partition(r.scored_at_ms),
                r.position.as_ref().map(|p| p.stream.clone()),
            )
        };
        let first = key_of(&self.pending[0]);
        let one_key = self.pending.iter().all(|r| key_of(r) == first);
        let groups: Vec<(BufferKey, Vec<ScoredRecord>)> = if one_key {
            vec![(first, std::mem::take(&mut self.pending))]
        } else {
            let mut groups: BTreeMap<BufferKey, Vec<ScoredRecord>> = BTreeMap::new();
            for r in self.pending.drain(..) {
                groups.entry(key_of(&r)).or_default().push(r);
            }
            groups.into_iter().collect()
        };
        for (key, records) in groups {
            match record_batch_with(&records, &self.features) {
                Ok(b) => {
                    let buffer = self.batches.entry(key).or_default();
                    buffer.offsets.extend(
                        records
                            .iter()
                            .filter_map(|r| r.position.as_ref().map(|p| p.offset)),
                    );
                    buffer.batches.push(b);
                }
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
        // What was buffered is gone: the next rows of a stream start from what is written.
        self.streams.clear();
        self.rows = 0;
        self.bytes = 0;
        self.oldest = None;
        rows
    }

    /// Delete temporary files that interrupted writes left in the lake's recent
    /// partitions (the last two days: where a writer was writing when it died; local disk
    /// and HDFS write a temporary file, then rename it): this writer's own (their names
    /// carry its `writer_id`: a previous run of it was killed mid-write), a stream's
    /// file untouched for 15 minutes, and anyone's older than a day. Returns how many were deleted.
    pub async fn clean_temporaries(&self) -> Result<usize, StorageError> {
        const ABANDONED: Duration = Duration::from_secs(86_400);
        // A stream's file is written by whichever member holds the stream, so its
        // temporary carries no writer id: one untouched this long is abandoned (a write
        // takes seconds).
        const STREAM_ABANDONED: Duration = Duration::from_secs(900);
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
            let stream_file = parse_stream_file(&t.object).is_some();
            if t.object.starts_with(&own)
                || (stream_file && t.age >= STREAM_ABANDONED)
                || t.age >= ABANDONED
            {
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
        if self.is_full()
            || (self.rows > 0
                && self
                    .ownership
                    .get()
                    .is_some_and(|o| o.flush_requests() != self.flushes_answered))
        {
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

    /// Write everything buffered: one file per hour partition and stream, a stream's
    /// files in offset order. Returns the keys written. On error the unwritten files stay
    /// buffered. A stream this member no longer holds is dropped instead, when
    /// [`LakeWriter::dropping_revoked`].
    pub async fn flush(&mut self) -> Result<Vec<String>, StorageError> {
        self.seal();
        let ownership = self.ownership.get();
        if let Some(o) = &ownership {
            self.flushes_answered = o.flush_requests();
        }
        let mut written = Vec::new();
        let mut failed: Option<StorageError> = None;
        // Streams claimed back in this flush: their later files wait for the next one, so
        // that a stream's files still land in offset order.
        let mut claimed_back: Vec<Arc<str>> = Vec::new();
        let keys: Vec<BufferKey> = self.batches.keys().cloned().collect();
        for key in keys {
            let Some(buffer) = self.batches.get(&key) else {
                continue;
            };
            let rows = buffer.rows();
            let (part, stream) = &key;
            if stream.as_ref().is_some_and(|s| claimed_back.contains(s)) {
                continue;
            }
            let held = match (stream, &ownership) {
                (Some(stream), Some(o)) => Some((stream.clone(), o.clone())),
                _ => None,
            };
            // A best-effort lake writes a revoked stream's rows all the same: their
            // offsets may be committed already.
            if let Some((stream, o)) = &held
                && !o.begin_write(stream)
                && self.drop_revoked
            {
                self.drop_buffer(
                    &key,
                    "its partition was revoked: the new owner reads it again",
                );
                continue;
            }
            let result = self.write_buffer(part, stream.as_deref(), rows).await;
            if let Some((stream, o)) = &held {
                o.end_write(stream);
            }
            match result {
                Ok(Some(name)) => {
                    self.batches.remove(&key);
                    self.rows -= rows;
                    written.push(name);
                }
                Ok(None) => {
                    // Another writer claimed the stream since this one did.
                    let Some(stream) = stream else { continue };
                    let still_held = ownership.as_ref().is_none_or(|o| o.holds(stream).is_some());
                    if still_held {
                        // This member still holds the partition, so its offsets may be
                        // committed once the lake has these rows: dropping them could
                        // lose them for good (the other writer may be a zombie, or hold
                        // the partition by a broker's mistake, and never write them).
                        // Claim the stream back; rows the other wrote meanwhile are
                        // skipped, the rest wait for the next flush.
                        if let Err(e) = self.claim_back(stream).await {
                            failed = Some(e);
                            break;
                        }
                        claimed_back.push(stream.clone());
                    } else {
                        // Revoked: its new owner reads these rows again.
                        self.drop_buffer(&key, "another writer has taken the stream over");
                        if let Some(st) = self.streams.get_mut(stream) {
                            st.epoch = 0;
                        }
                        tracing::warn!(%stream, "lake: stream taken over by another writer; its buffered rows are left to it");
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.recount_bytes();
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

    /// Encode and write one buffer (hour partition `part`, `stream`), and for a stream,
    /// its marker; returns the key written.
    async fn write_buffer(
        &mut self,
        part: &str,
        stream: Option<&str>,
        rows: usize,
    ) -> Result<Option<String>, StorageError> {
        let buffer = &self.batches[&(part.to_owned(), stream.map(Arc::from))];
        let range = match (stream, buffer.offsets.first(), buffer.offsets.last()) {
            (Some(s), Some(&first), Some(&last)) => Some((s, first, last)),
            _ => None,
        };
        let key = match range {
            Some((s, first, last)) => stream_file_key(part, s, first, last),
            None => format!(
                "{part}/part-{}-{:020}.parquet",
                self.settings.writer_id, self.seq
            ),
        };
        let data = encode_batches(&buffer.batches, self.settings.compression).map_err(|e| {
            StorageError::Other {
                store: self.store.describe(),
                message: format!("encoding {key}: {e}"),
                retryable: false,
            }
        })?;
        if let Some((s, _, last)) = range {
            let (written, epoch) = match self.streams.get(s) {
                Some(st) if st.recovered.is_some() => (st.written, st.epoch),
                _ => {
                    let c = positions::claim(self.store.as_ref(), s, false, Bytes::new).await?;
                    (c.high, c.epoch)
                }
            };
            let ours = retry(self.policy, "lake offset marker", || {
                positions::mark_writing(self.store.as_ref(), s, epoch, written, &key, last)
            })
            .await?;
            if !ours {
                return Ok(None);
            }
            crate::failpoint::hit("lake_file_put");
            let landed = retry(self.policy, "lake write", || {
                self.put_stream_file(s, epoch, &key, data.clone())
            })
            .await?;
            if !landed {
                return Ok(None);
            }
        } else {
            retry(self.policy, "lake write", || {
                self.store.put(&key, data.clone())
            })
            .await?;
        }
        crate::failpoint::hit("lake_file_written");
        match range {
            Some((s, _, last)) => {
                if let Some(st) = self.streams.get_mut(s) {
                    st.written = last;
                }
            }
            None => self.seq += 1,
        }
        metrics::counter!(names::LAKE_FILES_WRITTEN).increment(1);
        metrics::counter!(names::LAKE_ROWS_WRITTEN).increment(rows as u64);
        tracing::info!(key = %key, rows, "lake file written");
        Ok(Some(key))
    }

    /// Create a stream's file, only if absent (a takeover puts an empty file in place of
    /// a write it fences). `false`: the file is such an empty one and this writer, at
    /// `epoch`, no longer holds the stream. A file already there with rows is this very
    /// write, landed by an attempt that seemed to fail (or the same rows by another
    /// writer): written.
    async fn put_stream_file(
        &self,
        stream: &str,
        epoch: u64,
        key: &str,
        data: Bytes,
    ) -> Result<bool, StorageError> {
        let store = self.store.as_ref();
        match store.put_if(key, data.clone(), Condition::IfAbsent).await {
            Ok(_) => Ok(true),
            Err(StorageError::PreconditionFailed { .. }) => {
                if positions::file_rows(store, key)
                    .await?
                    .is_some_and(|n| n > 0)
                {
                    return Ok(true);
                }
                // An empty file: a takeover fenced an earlier write under this name. The
                // stream's holder replaces it (its own rows have the same offsets).
                if !positions::holds(store, stream, epoch).await? {
                    return Ok(false);
                }
                store.put(key, data).await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// An empty lake file (the schema, no rows): what a takeover puts in place of an
    /// unfinished write.
    fn empty_file(&self) -> Bytes {
        let empty = RecordBatch::new_empty(lake_schema_with(&self.features));
        encode_batches(&[empty], self.settings.compression).unwrap_or_default()
    }

    /// Drop one buffer (counted, logged).
    fn drop_buffer(&mut self, key: &BufferKey, why: &str) {
        if let Some(b) = self.batches.remove(key) {
            let rows = b.rows();
            self.rows -= rows;
            metrics::counter!(names::LAKE_SKIPPED_ROWS).increment(rows as u64);
            tracing::info!(stream = ?key.1, rows, why, "lake: buffered rows dropped");
        }
    }

    /// Recompute the buffer's estimated size.
    fn recount_bytes(&mut self) {
        self.bytes = self
            .batches
            .values()
            .flat_map(|b| &b.batches)
            .map(RecordBatch::get_array_memory_size)
            .sum::<usize>()
            + self
                .pending
                .iter()
                .map(|r| NUM_FIELDS * 8 + 32 + r.tx.id.len() + r.model_version.len())
                .sum::<usize>();
    }
}

#[cfg(test)]
mod tests;
