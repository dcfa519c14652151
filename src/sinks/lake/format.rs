//! The lake's files: their Arrow schema, records into record batches and Parquet, the
//! verdict columns read back, and the hour partition of a time.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{LakeCompression, ScoredRecord, ShadowRecord};
use crate::schema::Transaction;
use crate::schema::parquet::{transaction_columns, transaction_fields};

/// The Arrow schema of lake files without entity features ([`lake_schema_with`]).
#[must_use]
pub fn lake_schema() -> SchemaRef {
    lake_schema_with(&[])
}

/// The Arrow schema of lake files: the transaction columns, then the verdict, then the
/// shadow model's score, verdict and version (null without a shadow), the decision
/// (`outcome`, `decided_by`, `rules` joined by commas, `rule_set`), the entity ids
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
        Field::new("outcome", DataType::Utf8, false),
        Field::new("decided_by", DataType::Utf8, false),
        Field::new("rules", DataType::Utf8, true),
        Field::new("rule_set", DataType::Utf8, true),
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
    let decisions = || records.iter().map(|r| &r.decision);
    cols.push(Arc::new(StringArray::from_iter_values(
        decisions().map(|d| d.outcome.as_str()),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        decisions().map(|d| &*d.decided_by),
    )));
    // Rule names are identifiers: joined by commas, null when none matched.
    cols.push(Arc::new(StringArray::from_iter(decisions().map(|d| {
        (!d.rules.is_empty()).then(|| {
            d.rules
                .iter()
                .map(|r| &**r)
                .collect::<Vec<&str>>()
                .join(",")
        })
    }))));
    cols.push(Arc::new(StringArray::from_iter(
        decisions().map(|d| d.rule_set.as_deref()),
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

/// What drift monitoring reads from a lake file: each row's values of `features` (as the
/// scorer saw them: 32-bit floats, a null as missing), its score, and the day it was
/// scored (`YYYY-MM-DD`, UTC).
#[derive(Debug, Default)]
pub struct LakeFeatures {
    /// Row-major, one column per feature.
    pub x: Vec<f32>,
    /// One score per row.
    pub scores: Vec<f32>,
    /// One day per row (`YYYY-MM-DD`, UTC, by when it was scored).
    pub days: Vec<String>,
    /// The Monday of the row's week (`YYYY-MM-DD`), by when it was scored.
    pub weeks: Vec<String>,
    /// Transaction ids.
    pub ids: Vec<String>,
    /// The model's verdict (`fraud`).
    pub fraud: Vec<bool>,
    /// The label the transaction carried (`Class`), if any.
    pub class: Vec<Option<u8>>,
}

/// [`LakeFeatures`] of one lake file; a feature the file lacks is an error that names it.
pub fn read_features(data: Bytes, features: &[String]) -> Result<LakeFeatures, String> {
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;
    use arrow::datatypes::{Float32Type, TimestampMillisecondType};
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = LakeFeatures::default();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let column = |name: &str, ty: &DataType| -> Result<ArrayRef, String> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| format!("missing column {name:?}"))?;
            cast(c, ty).map_err(|e| format!("column {name:?}: {e}"))
        };
        let columns = features
            .iter()
            .map(|f| column(f, &DataType::Float32))
            .collect::<Result<Vec<_>, _>>()?;
        let score = column("score", &DataType::Float32)?;
        let ids = column("id", &DataType::Utf8)?;
        let fraud = column("fraud", &DataType::Boolean)?;
        let class = column("Class", &DataType::Int32)?;
        let scored_at = column(
            "scored_at",
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let scored_at = scored_at.as_primitive::<TimestampMillisecondType>();
        for i in 0..batch.num_rows() {
            for c in &columns {
                out.x.push(if c.is_valid(i) {
                    c.as_primitive::<Float32Type>().value(i)
                } else {
                    f32::NAN
                });
            }
            out.scores
                .push(score.as_primitive::<Float32Type>().value(i));
            let ms = scored_at.value(i);
            let (y, m, d, _) = utc_hour(ms);
            out.days.push(format!("{y:04}-{m:02}-{d:02}"));
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            let day = ms.div_euclid(86_400_000);
            let (y, m, d, _) = utc_hour((day - (day + 3).rem_euclid(7)) * 86_400_000);
            out.weeks.push(format!("{y:04}-{m:02}-{d:02}"));
            out.ids.push(ids.as_string::<i32>().value(i).to_owned());
            out.fraud.push(fraud.as_boolean().value(i));
            let c = class.as_primitive::<arrow::datatypes::Int32Type>();
            out.class
                .push(c.is_valid(i).then(|| u8::from(c.value(i) == 1)));
        }
    }
    Ok(out)
}
