//! The transaction schema: the Kaggle credit-card layout plus a transaction id.
//!
//! - [`record`]: the typed [`Transaction`], the columnar [`Dataset`], and validation errors.
//! - [`csv`]: the Kaggle CSV, exactly as published (quoted headers, quoted labels).
//! - [`json`]: JSON lines, one transaction per line; also the stream message decoder.
//! - [`lines`]: bounded line framing for every line-based reader.
//! - `parquet` (feature `parquet`): the Arrow schema, and Parquet reading and writing.
//! - [`input`]: format detection by extension, and the one entry point that reads a file.

pub mod csv;
pub mod input;
pub mod json;
pub mod lines;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod record;

pub use input::{
    Format, ReadOptions, ReadReport, for_each_transaction, read_dataset, read_dataset_continuing,
    read_dataset_with,
};
pub use record::{
    AMOUNT, DEFAULT_FEATURES, Dataset, FIELD_NAMES, MAX_ID_BYTES, NUM_FIELDS, ReadError,
    RecordError, RecordErrorKind, TIME, Transaction, check_entity_id, check_id, check_ids,
    field_index,
};
