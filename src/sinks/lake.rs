//! The lake: scored records buffered into Arrow record batches and written as Parquet
//! micro-batches to any [`BlobStore`] (local directory, S3, HDFS).
//!
//! Files are laid out as `dt=YYYY-MM-DD/hour=HH/part-<writer>-<seq>.parquet` by the hour
//! each record was scored in (UTC). A buffer is flushed when it reaches a row count, an
//! estimated byte size or an age, and on shutdown. Every file is committed atomically
//! (temporary name and rename on local disk and HDFS, one PUT or multipart upload on S3),
//! so readers never see half a file. A failed flush keeps the buffer: nothing is lost, and
//! the next flush writes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::metric_names as names;
use crate::retry::{RetryPolicy, retry};
use crate::schema::parquet::{transaction_columns, transaction_fields};
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
}

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LakeCompression {
    /// zstd (default level): smaller files.
    Zstd,
    /// Snappy: faster, larger.
    Snappy,
    /// No compression.
    None,
}

/// When and how to write files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSettings {
    /// Flush at this many buffered rows.
    pub max_rows: usize,
    /// Flush at this many (estimated, uncompressed) buffered bytes.
    pub max_bytes: usize,
    /// Flush when the oldest buffered row is this old.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Codec.
    pub compression: LakeCompression,
    /// This writer's name in file names (for example the detector id).
    pub writer_id: String,
}

impl Default for LakeSettings {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(60),
            compression: LakeCompression::Zstd,
            writer_id: "detector".into(),
        }
    }
}

/// The Arrow schema of lake files: the transaction columns, then the verdict.
#[must_use]
pub fn lake_schema() -> SchemaRef {
    let mut fields = transaction_fields();
    fields.extend([
        Field::new("score", DataType::Float32, false),
        Field::new("fraud", DataType::Boolean, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new(
            "scored_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields))
}

/// Encode records as one Parquet file.
pub fn encode_parquet(
    records: &[ScoredRecord],
    compression: LakeCompression,
) -> Result<Bytes, parquet::errors::ParquetError> {
    let schema = lake_schema();
    let mut cols: Vec<ArrayRef> = transaction_columns(records.iter().map(|r| &r.tx));
    cols.push(Arc::new(Float32Array::from_iter_values(
        records.iter().map(|r| r.score),
    )));
    cols.push(Arc::new(BooleanArray::from_iter(
        records.iter().map(|r| Some(r.fraud)),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        records.iter().map(|r| &r.model_version),
    )));
    cols.push(Arc::new(
        TimestampMillisecondArray::from_iter_values(records.iter().map(|r| r.scored_at_ms))
            .with_timezone("UTC"),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let codec = match compression {
        LakeCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        LakeCompression::Snappy => Compression::SNAPPY,
        LakeCompression::None => Compression::UNCOMPRESSED,
    };
    // Dictionaries pay off only for the few distinct model versions: amounts, features
    // and ids are nearly all distinct, and building a dictionary for them costs more
    // than it saves.
    let props = WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled("model_version".into(), true)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}

/// `(year, month, day, hour)` in UTC of a Unix-milliseconds time (proleptic Gregorian;
/// Howard Hinnant's days-to-civil algorithm).
#[must_use]
pub fn utc_hour(ms: i64) -> (i64, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// The partition directory of a time: `dt=YYYY-MM-DD/hour=HH`.
#[must_use]
pub fn partition(ms: i64) -> String {
    let (y, m, d, h) = utc_hour(ms);
    format!("dt={y:04}-{m:02}-{d:02}/hour={h:02}")
}

impl crate::config::Validate for LakeSettings {
    fn validate(&self) -> Result<(), crate::config::Invalid> {
        use crate::config::Invalid;
        if self.max_rows == 0 {
            return Err(Invalid::new("max_rows", "must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(Invalid::new("max_bytes", "must be at least 1"));
        }
        if self.writer_id.is_empty() || self.writer_id.contains('/') {
            return Err(Invalid::new(
                "writer_id",
                "must be non-empty and contain no `/`",
            ));
        }
        Ok(())
    }
}

/// Buffers scored records and writes Parquet files.
#[derive(Debug)]
pub struct LakeWriter {
    store: Arc<dyn BlobStore>,
    settings: LakeSettings,
    buffer: Vec<ScoredRecord>,
    bytes: usize,
    oldest: Option<Instant>,
    seq: u64,
    policy: RetryPolicy,
    retry_after: Option<Instant>,
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
            buffer: Vec::new(),
            bytes: 0,
            oldest: None,
            seq: now_ms * 1000,
            policy: RetryPolicy::default(),
            retry_after: None,
        }
    }

    /// Use a different retry policy for writes.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Buffer one record.
    pub fn push(&mut self, r: ScoredRecord) {
        self.bytes += NUM_FIELDS * 8 + 32 + r.tx.id.len() + r.model_version.len();
        self.oldest.get_or_insert_with(Instant::now);
        self.buffer.push(r);
    }

    /// Rows waiting to be written.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Whether the buffer holds four files' worth: writers must then wait for the store
    /// instead of buffering more.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.buffer.len() >= self.settings.max_rows.saturating_mul(4)
            || self.bytes >= self.settings.max_bytes.saturating_mul(4)
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
        self.buffer.len() >= self.settings.max_rows
            || self.bytes >= self.settings.max_bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.settings.max_age)
    }

    /// Write everything buffered, one file per hour partition, and return the keys
    /// written. On error the unwritten records stay buffered.
    pub async fn flush(&mut self) -> Result<Vec<String>, StorageError> {
        let mut groups: BTreeMap<String, Vec<ScoredRecord>> = BTreeMap::new();
        for r in self.buffer.drain(..) {
            groups.entry(partition(r.scored_at_ms)).or_default().push(r);
        }
        let mut written = Vec::new();
        let mut failed: Option<StorageError> = None;
        for (part, records) in groups {
            if failed.is_some() {
                self.buffer.extend(records);
                continue;
            }
            let key = format!(
                "{part}/part-{}-{:020}.parquet",
                self.settings.writer_id, self.seq
            );
            let data = match encode_parquet(&records, self.settings.compression) {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(StorageError::Other {
                        store: self.store.describe(),
                        message: format!("encoding {key}: {e}"),
                        retryable: false,
                    });
                    self.buffer.extend(records);
                    continue;
                }
            };
            let result = retry(self.policy, "lake write", || {
                self.store.put(&key, data.clone())
            })
            .await;
            match result {
                Ok(()) => {
                    self.seq += 1;
                    metrics::counter!(names::LAKE_FILES_WRITTEN).increment(1);
                    metrics::counter!(names::LAKE_ROWS_WRITTEN).increment(records.len() as u64);
                    tracing::info!(key = %key, rows = records.len(), "lake file written");
                    written.push(key);
                }
                Err(e) => {
                    failed = Some(e);
                    self.buffer.extend(records);
                }
            }
        }
        self.bytes = self
            .buffer
            .iter()
            .map(|r| NUM_FIELDS * 8 + 32 + r.tx.id.len() + r.model_version.len())
            .sum();
        if self.buffer.is_empty() {
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
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc_hour(0), (1970, 1, 1, 0));
        // 2024-02-29T23:59:59.999Z
        assert_eq!(utc_hour(1_709_251_199_999), (2024, 2, 29, 23));
        // 2026-11-26T10:15:00Z
        assert_eq!(utc_hour(1_795_688_100_000), (2026, 11, 26, 10));
        assert_eq!(partition(1_709_251_199_999), "dt=2024-02-29/hour=23");
        assert_eq!(utc_hour(-1), (1969, 12, 31, 23));
    }

    #[test]
    fn settings_parse_human_durations() {
        let s: LakeSettings = toml::from_str(
            "max_rows = 10\nmax_bytes = 1000\nmax_age = \"250ms\"\ncompression = \"snappy\"\nwriter_id = \"d1\"\n",
        )
        .unwrap();
        assert_eq!(s.max_age, Duration::from_millis(250));
        assert_eq!(s.compression, LakeCompression::Snappy);
        assert!(toml::from_str::<LakeSettings>("max_rowz = 1").is_err());
    }
}
