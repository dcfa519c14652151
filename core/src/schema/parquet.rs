//! The Arrow schema for transactions, and Parquet reading and writing.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::record::{
    Dataset, FIELD_NAMES, NUM_FIELDS, ReadError, RecordError, RecordErrorKind, Transaction,
    check_finite,
};

/// The Arrow fields of a transaction record: `id`, the Kaggle numeric fields as Float64,
/// and a nullable Int32 `Class`. Files that add columns (the lake's verdict columns)
/// start with these.
#[must_use]
pub fn transaction_fields() -> Vec<Field> {
    let mut fields = vec![Field::new("id", DataType::Utf8, false)];
    fields.extend(
        FIELD_NAMES
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, false)),
    );
    fields.push(Field::new("Class", DataType::Int32, true));
    fields
}

/// The Arrow schema of a transaction record ([`transaction_fields`]).
#[must_use]
pub fn transaction_schema() -> SchemaRef {
    Arc::new(Schema::new(transaction_fields()))
}

/// The [`transaction_fields`] columns of `txs`.
pub fn transaction_columns<'a, I>(txs: I) -> Vec<ArrayRef>
where
    I: Iterator<Item = &'a Transaction> + Clone,
{
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(NUM_FIELDS + 2);
    cols.push(Arc::new(StringArray::from_iter_values(
        txs.clone().map(|t| t.id.as_str()),
    )));
    for f in 0..NUM_FIELDS {
        cols.push(Arc::new(Float64Array::from_iter_values(
            txs.clone().map(|t| t.values[f]),
        )));
    }
    cols.push(Arc::new(Int32Array::from_iter(
        txs.map(|t| t.label.map(i32::from)),
    )));
    cols
}

/// Convert a dataset to one record batch with [`transaction_schema`], then one Float64
/// column per entity feature the dataset carries.
pub fn to_record_batch(data: &Dataset) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(NUM_FIELDS + 2 + data.derived.len());
    cols.push(Arc::new(StringArray::from_iter_values(data.ids.iter())));
    for c in &data.columns[..NUM_FIELDS] {
        cols.push(Arc::new(Float64Array::from(c.clone())));
    }
    cols.push(Arc::new(Int32Array::from_iter(
        data.labels.iter().map(|l| l.map(i32::from)),
    )));
    let mut fields = transaction_fields();
    for (name, c) in data.derived.iter().zip(&data.columns[NUM_FIELDS..]) {
        fields.push(Field::new(name.as_str(), DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from(c.clone())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// Write a dataset as one zstd-compressed Parquet file.
pub fn write_parquet(path: &str, data: &Dataset) -> Result<(), ReadError> {
    let err = |message: String| ReadError::Parquet {
        path: path.into(),
        message,
    };
    let file = File::create(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let batch = to_record_batch(data).map_err(|e| err(e.to_string()))?;
    let mut w =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| err(e.to_string()))?;
    w.write(&batch).map_err(|e| err(e.to_string()))?;
    w.close().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Read a Parquet file with the transaction columns (by name; other columns are ignored).
/// Numeric columns may be any numeric type; `Class` may be an integer or a "0"/"1" string;
/// `id`, `card_id`, `terminal_id` and `event_time` are optional. Each row is passed to
/// `sink` as a decoded transaction or an error.
pub fn read_parquet(
    path: &str,
    sink: impl FnMut(Result<Transaction, RecordError>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    read_parquet_with(path, &[], sink)
}

/// [`read_parquet`], also reading the entity-feature columns `derived` into each
/// transaction's `derived` when the file has every one of them (a lake file, or the
/// output of `preprocess` with entity features): the features as they were served.
pub fn read_parquet_with(
    path: &str,
    derived: &[String],
    mut sink: impl FnMut(Result<Transaction, RecordError>) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let err = |message: String| ReadError::Parquet {
        path: path.into(),
        message,
    };
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(e.to_string()))?
        .with_batch_size(8192)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut row: u64 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let cols = BatchColumns::new(&batch, derived).map_err(&err)?;
        for i in 0..batch.num_rows() {
            let line = row + 1;
            let result = cols.decode(i, row).map_err(|kind| RecordError {
                path: path.into(),
                line,
                kind,
            });
            sink(result)?;
            row += 1;
        }
    }
    Ok(())
}

/// The columns of one batch, cast to the types decoding needs.
struct BatchColumns {
    values: Vec<Float64Array>,
    label: Option<arrow::array::Int64Array>,
    id: Option<StringArray>,
    /// `card_id`, `terminal_id`, `event_time`.
    entities: [Option<StringArray>; 3],
    derived: Vec<Float64Array>,
}

impl BatchColumns {
    fn new(batch: &RecordBatch, derived_names: &[String]) -> Result<Self, String> {
        let column = |name: &str| batch.column_by_name(name);
        let mut values = Vec::with_capacity(NUM_FIELDS);
        for name in FIELD_NAMES {
            let c = column(name).ok_or_else(|| format!("missing required column {name:?}"))?;
            if !c.data_type().is_numeric() {
                return Err(format!(
                    "column {name:?} has type {}, expected a number",
                    c.data_type()
                ));
            }
            let f = cast(c, &DataType::Float64).map_err(|e| format!("column {name:?}: {e}"))?;
            values.push(f.as_primitive::<Float64Type>().clone());
        }
        let label = match column("Class") {
            Some(c) => {
                let l = cast(c, &DataType::Int64).map_err(|e| format!("column \"Class\": {e}"))?;
                Some(l.as_primitive::<Int64Type>().clone())
            }
            None => None,
        };
        let text = |name: &str| -> Result<Option<StringArray>, String> {
            column(name)
                .map(|c| {
                    cast(c, &DataType::Utf8)
                        .map(|s| s.as_string::<i32>().clone())
                        .map_err(|e| format!("column {name:?}: {e}"))
                })
                .transpose()
        };
        let id = text("id")?;
        let entities = [text("card_id")?, text("terminal_id")?, text("event_time")?];
        let mut derived = Vec::new();
        if derived_names.iter().all(|n| column(n).is_some()) {
            for name in derived_names {
                let c = column(name).ok_or_else(|| format!("missing column {name:?}"))?;
                let f = cast(c, &DataType::Float64).map_err(|e| format!("column {name:?}: {e}"))?;
                derived.push(f.as_primitive::<Float64Type>().clone());
            }
        }
        Ok(Self {
            values,
            label,
            id,
            entities,
            derived,
        })
    }

    fn decode(&self, i: usize, row: u64) -> Result<Transaction, RecordErrorKind> {
        let mut values = [0.0; NUM_FIELDS];
        for (j, col) in self.values.iter().enumerate() {
            if col.is_null(i) {
                return Err(RecordErrorKind::MissingField {
                    field: FIELD_NAMES[j].into(),
                });
            }
            let v = col.value(i);
            values[j] = check_finite(FIELD_NAMES[j], v, &v.to_string())?;
        }
        let label = match &self.label {
            Some(l) if l.is_valid(i) => match l.value(i) {
                0 => Some(0),
                1 => Some(1),
                other => {
                    return Err(RecordErrorKind::BadLabel {
                        value: other.to_string(),
                    });
                }
            },
            _ => None,
        };
        let id = self
            .id
            .as_ref()
            .filter(|c| c.is_valid(i) && !c.value(i).is_empty())
            .map_or_else(|| row.to_string(), |c| c.value(i).to_owned());
        let text = |k: usize| {
            self.entities[k]
                .as_ref()
                .filter(|c| c.is_valid(i) && !c.value(i).is_empty())
                .map(|c| c.value(i).to_owned())
        };
        Ok(Transaction {
            id,
            values,
            label,
            card_id: text(0),
            terminal_id: text(1),
            event_time: text(2),
            derived: self
                .derived
                .iter()
                .map(|c| {
                    if c.is_valid(i) {
                        c.value(i) as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let path = path.to_str().unwrap();
        let mut d = Dataset::with_capacity(3);
        for i in 0..3u8 {
            let mut values = [0.0; NUM_FIELDS];
            values[2] = f64::from(i) * 1.25;
            d.push(Transaction {
                id: format!("t{i}"),
                values,
                label: (i < 2).then_some(i % 2),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        write_parquet(path, &d).unwrap();
        let mut back = Dataset::default();
        read_parquet(path, |r| {
            back.push(r.unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(back.ids, d.ids);
        assert_eq!(back.columns, d.columns);
        assert_eq!(back.labels, d.labels);
    }
}
