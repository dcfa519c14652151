//! Every metric name the service exports, in one place.

/// Counter: verdict items DynamoDB returned as unprocessed and that were resubmitted.
pub const VERDICT_UNPROCESSED_ITEMS: &str = "fraudstream_verdict_unprocessed_items_total";
/// Counter: Parquet files written to the lake.
pub const LAKE_FILES_WRITTEN: &str = "fraudstream_lake_files_written_total";
/// Counter: rows written to the lake.
pub const LAKE_ROWS_WRITTEN: &str = "fraudstream_lake_rows_written_total";
/// Counter: messages or rows read from the source.
pub const CONSUMED: &str = "fraudstream_consumed_total";
/// Counter: transactions scored.
pub const SCORED: &str = "fraudstream_scored_total";
/// Counter: fraud verdicts (alerts raised).
pub const FRAUD: &str = "fraudstream_fraud_total";
/// Counter: invalid messages sent to the dead-letter topic or file, by `reason`.
pub const DEAD_LETTERS: &str = "fraudstream_dead_letters_total";
/// Counter: verdict-store write attempts that failed and were retried.
pub const VERDICT_RETRIES: &str = "fraudstream_verdict_write_retries_total";
/// Histogram: seconds from reading a transaction to its verdict being durable.
pub const END_TO_END_SECONDS: &str = "fraudstream_end_to_end_seconds";
/// Histogram: seconds spent scoring one batch.
pub const SCORE_BATCH_SECONDS: &str = "fraudstream_score_batch_seconds";
/// Histogram: the fraud scores given.
pub const SCORE: &str = "fraudstream_score";
/// Gauge: 1 for the serving model's `version` label.
pub const MODEL_INFO: &str = "fraudstream_model_info";
