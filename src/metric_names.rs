//! Every metric name the service exports, in one place.

/// Counter: verdict items DynamoDB returned as unprocessed and that were resubmitted.
pub const VERDICT_UNPROCESSED_ITEMS: &str = "fraudstream_verdict_unprocessed_items_total";
/// Counter: Parquet files written to the lake.
pub const LAKE_FILES_WRITTEN: &str = "fraudstream_lake_files_written_total";
/// Counter: rows written to the lake.
pub const LAKE_ROWS_WRITTEN: &str = "fraudstream_lake_rows_written_total";
