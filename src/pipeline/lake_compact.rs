//! `fraudstream lake compact`: rewrite a lake written before it was exactly once (or by a
//! reader's mistake, twice) with one row per transaction id, the newest by `scored_at`.
//!
//! Two passes over the lake's Parquet files. The first reads every file's ids and
//! scoring times and picks, for each id, the row to keep (the newest; ties go to the
//! file that sorts last). The second rewrites each hour directory that holds a row to
//! drop: its kept rows go to one new file (`compacted-<unix ms>.parquet`), written
//! whole, and then its old files are deleted. A reader listing the directory between the
//! two steps sees some rows twice, never none: the rewrite adds before it removes, and a
//! rerun after an interruption finishes the job. Directories with nothing to drop are
//! not touched. A dry run prints what would be dropped and writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::sinks::lake::{LakeCompression, encode_batches};
use crate::storage::{BlobStore, StorageError};

/// Why a compaction stopped.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file is not a lake file.
    #[error("{key}: {message}")]
    File {
        /// The file.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// One hour directory's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryReport {
    /// The directory (`dt=…/hour=…`).
    pub directory: String,
    /// Files in it.
    pub files: usize,
    /// Rows in them.
    pub rows: usize,
    /// Rows that a newer copy elsewhere (or here) replaces.
    pub dropped: usize,
}

/// What a compaction found (and, unless a dry run, did).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Rows before.
    pub rows_in: usize,
    /// Rows after (one per distinct id).
    pub rows_out: usize,
    /// Distinct transaction ids.
    pub distinct_ids: usize,
    /// Directories rewritten (or that would be).
    pub rewritten: Vec<DirectoryReport>,
    /// Whether nothing was written.
    pub dry_run: bool,
}

/// The row kept for an id: where it is and when it was scored.
#[derive(Debug, Clone, Copy)]
struct Kept {
    file: usize,
    row: usize,
    scored_at: i64,
}

fn read_batches(key: &str, data: Bytes) -> Result<Vec<RecordBatch>, CompactError> {
    let bad = |message: String| CompactError::File {
        key: key.to_owned(),
        message,
    };
    ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(ParquetRecordBatchReaderBuilder::build)
        .map_err(|e| bad(e.to_string()))?
        .map(|b| b.map_err(|e| bad(e.to_string())))
        .collect()
}

/// The ids and scoring times of a file's rows, in order.
fn ids_and_times(key: &str, batches: &[RecordBatch]) -> Result<Vec<(String, i64)>, CompactError> {
    let mut out = Vec::new();
    for b in batches {
        let column = |name: &str| {
            b.column_by_name(name).ok_or_else(|| CompactError::File {
                key: key.to_owned(),
                message: format!("no `{name}` column: not a lake file"),
            })
        };
        let ids = column("id")?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| CompactError::File {
                key: key.to_owned(),
                message: "`id` is not a string column".into(),
            })?;
        let times = column("scored_at")?;
        let times = times
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| CompactError::File {
                key: key.to_owned(),
                message: "`scored_at` is not a millisecond timestamp".into(),
            })?;
        out.extend((0..b.num_rows()).map(|i| (ids.value(i).to_owned(), times.value(i))));
    }
    Ok(out)
}

/// The hour directory of a key (everything before its last `/`).
fn directory(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Compact the lake in `store` (its `.parquet` files under `keys`): one row per
/// transaction id. With `dry_run`, only report.
pub async fn compact(
    store: &Arc<dyn BlobStore>,
    keys: &[String],
    compression: LakeCompression,
    dry_run: bool,
) -> Result<CompactReport, CompactError> {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    // Pass 1: which row of each id to keep.
    let mut kept: HashMap<String, Kept> = HashMap::new();
    let mut rows_per_file = Vec::with_capacity(keys.len());
    for (file, key) in keys.iter().enumerate() {
        let batches = read_batches(key, store.get(key).await?.data)?;
        let rows = ids_and_times(key, &batches)?;
        rows_per_file.push(rows.len());
        for (row, (id, scored_at)) in rows.into_iter().enumerate() {
            let candidate = Kept {
                file,
                row,
                scored_at,
            };
            kept.entry(id)
                .and_modify(|k| {
                    if (scored_at, file, row) >= (k.scored_at, k.file, k.row) {
                        *k = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    let rows_in: usize = rows_per_file.iter().sum();
    let mut keep: Vec<Vec<bool>> = rows_per_file.iter().map(|&n| vec![false; n]).collect();
    for k in kept.values() {
        keep[k.file][k.row] = true;
    }
    // Pass 2: rewrite the directories with rows to drop.
    let mut by_directory: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (file, key) in keys.iter().enumerate() {
        by_directory.entry(directory(key)).or_default().push(file);
    }
    let mut report = CompactReport {
        rows_in,
        rows_out: kept.len(),
        distinct_ids: kept.len(),
        rewritten: Vec::new(),
        dry_run,
    };
    for (dir, files) in by_directory {
        let rows: usize = files.iter().map(|&f| rows_per_file[f]).sum();
        let dropped = files
            .iter()
            .map(|&f| keep[f].iter().filter(|k| !**k).count())
            .sum::<usize>();
        if dropped == 0 {
            continue;
        }
        report.rewritten.push(DirectoryReport {
            directory: dir.to_owned(),
            files: files.len(),
            rows,
            dropped,
        });
        if dry_run {
            continue;
        }
        let mut out = Vec::new();
        for &f in &files {
            let batches = read_batches(keys[f], store.get(keys[f]).await?.data)?;
            let mut offset = 0;
            for b in batches {
                let mask: BooleanArray = keep[f][offset..offset + b.num_rows()]
                    .iter()
                    .map(|k| Some(*k))
                    .collect();
                offset += b.num_rows();
                let filtered = arrow::compute::filter_record_batch(&b, &mask).map_err(|e| {
                    CompactError::File {
                        key: keys[f].clone(),
                        message: e.to_string(),
                    }
                })?;
                if filtered.num_rows() > 0 {
                    out.push(filtered);
                }
            }
        }
        let key = format!("{dir}/compacted-{}.parquet", crate::clock::now_ms());
        if !out.is_empty() {
            if out.iter().any(|b| b.schema() != out[0].schema()) {
                return Err(CompactError::File {
                    key: dir.to_owned(),
                    message: "files with different columns (entity features changed): not \
                              compacted"
                        .into(),
                });
            }
            let data = encode_batches(&out, compression).map_err(|e| CompactError::File {
                key: key.clone(),
                message: e.to_string(),
            })?;
            store.put(&key, data).await?;
        }
        for &f in &files {
            if *keys[f] != key {
                store.delete(keys[f]).await?;
            }
        }
        tracing::info!(directory = dir, dropped, "lake directory compacted");
    }
    Ok(report)
}
