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
    /// The shadow model's score, verdict and version, when one scored it too.
    pub shadow: Option<ShadowRecord>,
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

/// The Arrow schema of lake files without entity features ([`lake_schema_with`]).
#[must_use]
pub fn lake_schema() -> SchemaRef {
    lake_schema_with(&[])
}

/// The Arrow schema of lake files: the transaction columns, then the verdict, then the
/// shadow model's score, verdict and version (null without a shadow), the entity ids
/// and event time (null when the producer sent none), then one Float32 column per entity
/// feature in `features`: the values the verdict was computed with.
#[must_use]
pub fn lake_schema_with(features: &[String]) -> SchemaRef {
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
        Field::new("shadow_score", DataType::Float32, true),
        Field::new("shadow_fraud", DataType::Boolean, true),
        Field::new("shadow_version", DataType::Utf8, true),
        Field::new("card_id", DataType::Utf8, true),
        Field::new("terminal_id", DataType::Utf8, true),
        Field::new("event_time", DataType::Utf8, true),
    ]);
    fields.extend(
        features
            .iter()
            .map(|f| Field::new(f.as_str(), DataType::Float32, true)),
    );
    Arc::new(Schema::new(fields))
}

/// Records as one Arrow record batch with [`lake_schema`].
pub fn record_batch(records: &[ScoredRecord]) -> Result<RecordBatch, arrow::error::ArrowError> {
    record_batch_with(records, &[])
}

/// Records as one Arrow record batch with [`lake_schema_with`] `features` (a record
/// without its entity features has nulls there).
pub fn record_batch_with(
    records: &[ScoredRecord],
    features: &[String],
) -> Result<RecordBatch, arrow::error::ArrowError> {
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
    let shadows = || records.iter().map(|r| r.shadow.as_ref());
    cols.push(Arc::new(Float32Array::from_iter(
        shadows().map(|s| s.map(|s| s.score)),
    )));
    cols.push(Arc::new(BooleanArray::from_iter(
        shadows().map(|s| s.map(|s| s.fraud)),
    )));
    cols.push(Arc::new(StringArray::from_iter(
        shadows().map(|s| s.map(|s| &*s.version)),
    )));
    fn text(t: &Transaction, i: usize) -> Option<&str> {
        [&t.card_id, &t.terminal_id, &t.event_time][i].as_deref()
    }
    for i in 0..3 {
        cols.push(Arc::new(StringArray::from_iter(
            records.iter().map(|r| text(&r.tx, i)),
        )));
    }
    for j in 0..features.len() {
        cols.push(Arc::new(Float32Array::from_iter(
            records.iter().map(|r| r.tx.derived.get(j).copied()),
        )));
    }
    RecordBatch::try_new(lake_schema_with(features), cols)
}

/// One lake row as `model compare --shadow` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeScore {
    /// The label, when the row has one.
    pub label: Option<u8>,
    /// The serving model's score.
    pub score: f32,
    /// Its verdict.
    pub fraud: bool,
    /// Its version.
    pub model_version: String,
    /// The shadow model's view, when one scored the row.
    pub shadow: Option<ShadowRecord>,
}

/// The verdict and shadow columns of one lake file (files written before the shadow
/// columns existed read with no shadow).
pub fn read_scores(data: Bytes) -> Result<Vec<LakeScore>, String> {
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;
    use arrow::datatypes::{Float32Type, Int64Type};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let column = |name: &str, ty: &DataType| -> Result<Option<ArrayRef>, String> {
            batch
                .column_by_name(name)
                .map(|c| cast(c, ty).map_err(|e| format!("column {name:?}: {e}")))
                .transpose()
        };
        let need = |name: &str, ty: &DataType| {
            column(name, ty)?.ok_or_else(|| format!("missing column {name:?}: not a lake file"))
        };
        let score = need("score", &DataType::Float32)?;
        let fraud = need("fraud", &DataType::Boolean)?;
        let version = need("model_version", &DataType::Utf8)?;
        let label = column("Class", &DataType::Int64)?;
        let shadow_score = column("shadow_score", &DataType::Float32)?;
        let shadow_fraud = column("shadow_fraud", &DataType::Boolean)?;
        let shadow_version = column("shadow_version", &DataType::Utf8)?;
        let (score, fraud, version) = (
            score.as_primitive::<Float32Type>(),
            fraud.as_boolean(),
            version.as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            let shadow = match (&shadow_score, &shadow_fraud, &shadow_version) {
                (Some(s), Some(f), Some(v)) if s.is_valid(i) && f.is_valid(i) && v.is_valid(i) => {
                    Some(ShadowRecord {
                        score: s.as_primitive::<Float32Type>().value(i),
                        fraud: f.as_boolean().value(i),
                        version: v.as_string::<i32>().value(i).into(),
                    })
                }
                _ => None,
            };
            out.push(LakeScore {
                label: label
                    .as_ref()
                    .filter(|l| l.is_valid(i))
                    .map(|l| u8::from(l.as_primitive::<Int64Type>().value(i) == 1)),
                score: score.value(i),
                fraud: fraud.value(i),
                model_version: version.value(i).to_owned(),
                shadow,
            });
        }
    }
    Ok(out)
}

/// Encode records as one Parquet file.
pub fn encode_parquet(
    records: &[ScoredRecord],
    compression: LakeCompression,
) -> Result<Bytes, parquet::errors::ParquetError> {
    encode_batches(&[record_batch(records)?], compression)
}

/// Encode record batches (with [`lake_schema`]) as one Parquet file.
pub fn encode_batches(
    batches: &[RecordBatch],
    compression: LakeCompression,
) -> Result<Bytes, parquet::errors::ParquetError> {
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
        .set_column_dictionary_enabled("shadow_version".into(), true)
        .build();
    let mut buf = Vec::new();
    let schema = batches
        .first()
        .map_or_else(lake_schema, RecordBatch::schema);
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
    for b in batches {
        w.write(b)?;
    }
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

/// The Parquet lake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `file://`/plain path, `s3://bucket/prefix` or `hdfs://host:port/dir`.
    pub location: String,
    /// Flush limits, codec and writer id (`[lake.writer]`).
    pub writer: LakeSettings,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            location: "out/lake".into(),
            writer: LakeSettings::default(),
        }
    }
}

impl crate::validate::Validate for LakeConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        crate::storage::Location::parse(&self.location)
            .map_err(|m| crate::validate::Invalid::new("location", m))?;
        self.writer.validate().map_err(|e| e.within("writer"))
    }
}

impl crate::validate::Validate for LakeSettings {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        use crate::validate::Invalid;
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
