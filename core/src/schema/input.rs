//! One entry point to read a whole input file into a [`Dataset`], whatever its format.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::csv::CsvReader;
use super::json::JsonLinesReader;
use super::record::{Dataset, ReadError, RecordError, Transaction};
use crate::velocity::{OfflineFeatures, VelocitySpec};

/// Input formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Kaggle CSV layout.
    Csv,
    /// One JSON object per line.
    JsonLines,
    /// Parquet with the transaction columns.
    Parquet,
}

impl Format {
    /// The format a path's extension names; `-` (stdin) is CSV.
    #[must_use]
    pub fn from_path(path: &str) -> Option<Self> {
        if path == "-" {
            return Some(Self::Csv);
        }
        let ext = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::JsonLines),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// How to treat bad records.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Skip and count invalid records instead of stopping at the first.
    pub skip_invalid: bool,
}

/// What reading skipped.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Invalid records skipped (only with `skip_invalid`).
    pub skipped: usize,
    /// The first few skipped records' errors, for the user.
    pub examples: Vec<RecordError>,
    /// Skipped records by reason code.
    pub by_reason: std::collections::BTreeMap<&'static str, usize>,
}

impl ReadReport {
    /// Add another file's report to this one.
    pub fn merge(&mut self, other: Self) {
        self.skipped += other.skipped;
        for e in other.examples {
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(e);
            }
        }
        for (k, n) in other.by_reason {
            *self.by_reason.entry(k).or_default() += n;
        }
    }
}

/// How many skipped-record errors to keep for reporting.
const MAX_EXAMPLES: usize = 10;

/// Read a whole file. Stops at the first invalid record unless `opts.skip_invalid`.
pub fn read_dataset(path: &str, opts: ReadOptions) -> Result<(Dataset, ReadReport), ReadError> {
    read_dataset_with(path, opts, None)
}

/// [`read_dataset`], computing the entity features of `velocity` for every row as
/// [`crate::velocity::compute_offline`] does. That needs the file in time order (ties
/// in any order): an earlier `Time` after a later one is an error naming the row.
pub fn read_dataset_with(
    path: &str,
    opts: ReadOptions,
    velocity: Option<&VelocitySpec>,
) -> Result<(Dataset, ReadReport), ReadError> {
    let mut features = velocity
        .map(|v| OfflineFeatures::new(v.clone()))
        .transpose()
        .map_err(|e| ReadError::Features {
            path: path.into(),
            message: e.to_string(),
        })?;
    read_dataset_continuing(path, opts, features.as_mut())
}

/// [`read_dataset`] with entity features from `features`, whose state carries over
/// from the files read before (a history split over several files, in time order).
pub fn read_dataset_continuing(
    path: &str,
    opts: ReadOptions,
    features: Option<&mut OfflineFeatures>,
) -> Result<(Dataset, ReadReport), ReadError> {
    let mut data = match &features {
        Some(f) => Dataset::with_derived(0, f.spec().names()),
        None => Dataset::with_capacity(0),
    };
    let report = for_each_transaction(path, opts, features, |tx| data.push(tx))?;
    if data.is_empty() {
        return Err(ReadError::Empty { path: path.into() });
    }
    Ok((data, report))
}

/// Every valid transaction of a file, in file order, to `sink`; with `features`, each
/// carries its entity features (see [`read_dataset_with`]; a Parquet file that stores
/// them is read, not computed). Stops at the first invalid record unless
/// `opts.skip_invalid`.
pub fn for_each_transaction(
    path: &str,
    opts: ReadOptions,
    mut features: Option<&mut OfflineFeatures>,
    mut sink: impl FnMut(Transaction),
) -> Result<ReadReport, ReadError> {
    let format =
        Format::from_path(path).ok_or_else(|| ReadError::UnknownFormat { path: path.into() })?;
    let names = features
        .as_ref()
        .map(|f| f.spec().names())
        .unwrap_or_default();
    let width = names.len();
    let mut report = ReadReport::default();
    let mut accept = |r: Result<Transaction, ReadError>| -> Result<(), ReadError> {
        match r {
            Ok(mut tx) => {
                let stored = width > 0 && tx.derived.len() == width;
                if let Some(f) = features.as_mut().filter(|_| !stored) {
                    f.next(&mut tx).map_err(|message| ReadError::Features {
                        path: path.into(),
                        message,
                    })?;
                }
                sink(tx);
            }
            Err(ReadError::Record(e)) if opts.skip_invalid => {
                report.skipped += 1;
                *report.by_reason.entry(e.kind.code()).or_default() += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(e);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    };
    match format {
        Format::Csv => {
            for r in CsvReader::new(path, open(path)?)? {
                accept(r)?;
            }
        }
        Format::JsonLines => {
            for r in JsonLinesReader::new(path, open(path)?) {
                accept(r)?;
            }
        }
        #[cfg(feature = "parquet")]
        Format::Parquet => {
            // Features stored in the file (as served, or as preprocessed) are read, not
            // computed again.
            super::parquet::read_parquet_with(path, &names, |r| {
                accept(r.map_err(ReadError::Record))
            })?;
        }
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => return Err(ReadError::UnknownFormat { path: path.into() }),
    }
    Ok(report)
}

fn open(path: &str) -> Result<Box<dyn BufRead>, ReadError> {
    if path == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let f = File::open(path).map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::from_path("a/b.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("x.ndjson"), Some(Format::JsonLines));
        assert_eq!(Format::from_path("x.parquet"), Some(Format::Parquet));
        assert_eq!(Format::from_path("-"), Some(Format::Csv));
        assert_eq!(Format::from_path("x.txt"), None);
    }

    #[test]
    fn skip_invalid_counts_and_keeps_examples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        let header = super::super::FIELD_NAMES.join(",");
        let good = vec!["1"; 30].join(",");
        let bad = vec!["x"; 30].join(",");
        std::fs::write(&p, format!("{header}\n{good}\n{bad}\n{good}\n")).unwrap();
        let p = p.to_str().unwrap();
        let e = read_dataset(p, ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains(":3: field `Time`"), "{e}");
        let (d, rep) = read_dataset(p, ReadOptions { skip_invalid: true }).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(rep.skipped, 1);
        assert_eq!(d.ids, vec!["0", "2"]);
    }

    #[test]
    fn empty_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.csv");
        std::fs::write(&p, format!("{}\n", super::super::FIELD_NAMES.join(","))).unwrap();
        let e = read_dataset(p.to_str().unwrap(), ReadOptions::default()).unwrap_err();
        assert!(matches!(e, ReadError::Empty { .. }));
    }
}
