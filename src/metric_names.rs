//! Every metric name the service exports, in one place.

/// Counter: verdict items DynamoDB returned as unprocessed and that were resubmitted.
pub const VERDICT_UNPROCESSED_ITEMS: &str = "fraudstream_verdict_unprocessed_items_total";
/// Counter: Parquet files written to the lake.
pub const LAKE_FILES_WRITTEN: &str = "fraudstream_lake_files_written_total";
/// Counter: rows written to the lake.
pub const LAKE_ROWS_WRITTEN: &str = "fraudstream_lake_rows_written_total";
/// Counter: rows a lake outside `delivery.durable` dropped instead of holding up
/// scoring (its store slow or down with its queue or buffer full).
pub const LAKE_DROPPED_ROWS: &str = "fraudstream_lake_dropped_rows_total";
/// Counter: rows the lake did not write because it holds them already: redeliveries
/// at or below a stream's written offset, and rows of a revoked partition left to its
/// new owner.
pub const LAKE_SKIPPED_ROWS: &str = "fraudstream_lake_skipped_rows_total";
/// Counter: lake streams claimed back from another writer that claimed them while this
/// member still held their partition (a zombie, or a partition assigned twice).
pub const LAKE_CLAIMED_BACK: &str = "fraudstream_lake_claimed_back_total";
/// Counter: lake offset markers that were not markers (damaged), taken as absent.
pub const LAKE_BAD_MARKERS: &str = "fraudstream_lake_bad_markers_total";
/// Gauge: alerts and dead letters staged for the next Kafka transaction
/// (`delivery.kafka_outputs = "exactly_once"`).
pub const OUTBOX_STAGED: &str = "fraudstream_outbox_staged";
/// Counter: Kafka transactions of the outputs and offsets, by `result` (`committed`,
/// `aborted`).
pub const KAFKA_TRANSACTIONS: &str = "fraudstream_kafka_transactions_total";
/// Counter: partition lanes (transactional producers) fenced by another member that took
/// their partition over before this one heard of it.
pub const KAFKA_LANES_FENCED: &str = "fraudstream_kafka_lanes_fenced_total";
/// Counter: messages or rows read from the source.
pub const CONSUMED: &str = "fraudstream_consumed_total";
/// Counter: transactions scored.
pub const SCORED: &str = "fraudstream_scored_total";
/// Counter: fraud verdicts (alerts raised).
pub const FRAUD: &str = "fraudstream_fraud_total";
/// Counter: invalid messages sent to the dead-letter topic or file, by `reason`.
pub const DEAD_LETTERS: &str = "fraudstream_dead_letters_total";
/// Counter: write attempts to a durable sink that failed and were retried, by `sink`.
pub const SINK_RETRIES: &str = "fraudstream_sink_retries_total";
/// Counter: failed writes to a best-effort sink (not retried), by `sink`.
pub const SINK_ERRORS: &str = "fraudstream_sink_errors_total";
/// Histogram: seconds a stage spent blocked, by `stage`: `source` waiting for the scorer
/// (the bounded channel was full), or a sink (`verdicts`, `alerts`, `lake`) waiting out an
/// outage. Its `_sum` is the total time blocked.
pub const BLOCKED_SECONDS: &str = "fraudstream_stage_blocked_seconds";
/// Histogram: seconds one batch spent in a stage, by `stage` (`score`, `verdicts`,
/// `alerts`, `lake`).
pub const STAGE_SECONDS: &str = "fraudstream_stage_seconds";
/// Histogram: seconds from the producer's send (Kafka message timestamp) to the verdict
/// being durable.
pub const PRODUCE_TO_DURABLE_SECONDS: &str = "fraudstream_produce_to_durable_seconds";
/// Gauge: messages behind the end of each partition, by `topic` and `partition`.
pub const CONSUMER_LAG: &str = "fraudstream_consumer_lag";
/// Gauge: batches handed to the scorer and not yet durable.
pub const BATCHES_IN_FLIGHT: &str = "fraudstream_batches_in_flight";
/// Counter: partitions revoked from this detector by a rebalance.
pub const PARTITIONS_REVOKED: &str = "fraudstream_partitions_revoked_total";
/// Counter: consumers replaced after a fatal error (such as being fenced by the group).
pub const CONSUMER_RESTARTS: &str = "fraudstream_consumer_restarts_total";
/// Gauge: seconds since the serving model was trained.
pub const MODEL_AGE_SECONDS: &str = "fraudstream_model_age_seconds";
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
/// Counter: new model versions swapped in by the watcher.
pub const MODEL_RELOADS: &str = "fraudstream_model_reloads_total";
/// Counter: model versions the watcher refused, by `reason` (`signature`, `checksum`, `corrupt`,
/// `features`, `smoke`, `canary`, `unknown_version`, `unreadable`).
pub const MODEL_REJECTIONS: &str = "fraudstream_model_rejections_total";
/// Counter: decisions, by `outcome` (`approve`, `review`, `block`).
pub const DECISIONS: &str = "fraudstream_decisions_total";
/// Counter: verdicts each rule matched, by `rule` (its name) and `rule_set` (version).
pub const RULE_MATCHES: &str = "fraudstream_rule_matches_total";
/// Counter: rule sets or list changes swapped in by the decisions watcher.
pub const RULES_RELOADS: &str = "fraudstream_rules_reloads_total";
/// Counter: active rule sets the decisions watcher refused (they do not load or do not
/// compile against the lists and features); the serving rules stay.
pub const RULES_REJECTIONS: &str = "fraudstream_rules_rejections_total";
/// Counter: failed polls of the model store (unreachable).
pub const MODEL_POLL_ERRORS: &str = "fraudstream_model_poll_errors_total";
/// Counter: background tasks that stopped before the detector asked them to (by
/// returning, an error or a panic), by `task`: each stops the detector with its error.
pub const TASK_FAILURES: &str = "fraudstream_task_failures_total";
/// Counter: steps of a long-lived background task (a model-store poll) that panicked and
/// were skipped, by `task`; the task goes on with the next step.
pub const TASK_RESTARTS: &str = "fraudstream_task_restarts_total";
/// Counter: retraining decisions, by `outcome` (`published`, `approved`, `rejected`,
/// `insufficient_data`, `not_triggered`).
pub const RETRAIN_DECISIONS: &str = "fraudstream_retrain_decisions_total";
/// Gauge: the last candidate's holdout AUPRC.
pub const RETRAIN_CANDIDATE_AUPRC: &str = "fraudstream_retrain_candidate_auprc";
/// Gauge: the live model's AUPRC on the last candidate's holdout.
pub const RETRAIN_LIVE_AUPRC: &str = "fraudstream_retrain_live_auprc";
/// Gauge: the worst PSI of the recent history against the live model's reference, at the
/// last retraining cycle (the drift evidence of `retrain.trigger`).
pub const RETRAIN_EVIDENCE_MAX_PSI: &str = "fraudstream_retrain_evidence_max_psi";
/// Counter: verdicts recorded through `POST /v1/score?record=true`.
pub const API_RECORDED: &str = "fraudstream_api_recorded_total";
/// Counter: HTTP API requests, by `route` and `status`.
pub const API_REQUESTS: &str = "fraudstream_api_requests_total";
/// Histogram: seconds to answer an HTTP API request, by `route`.
pub const API_REQUEST_SECONDS: &str = "fraudstream_api_request_seconds";
/// Counter: shadow-model versions refused, by `reason`.
pub const SHADOW_REJECTIONS: &str = "fraudstream_shadow_rejections_total";
/// Counter: transactions the shadow model scored, by `agree` (`true` when its verdict is
/// the serving model's).
pub const SHADOW_SCORED: &str = "fraudstream_shadow_scored_total";
/// Histogram: the shadow model's scores.
pub const SHADOW_SCORE: &str = "fraudstream_shadow_score";
/// Gauge: 1 for the shadow model's `version` label.
pub const SHADOW_INFO: &str = "fraudstream_shadow_info";
/// Counter: transactions whose entity features were computed, by `outcome` (`computed`,
/// or `replayed` for a redelivery that got its recorded features back).
pub const VELOCITY_TRANSACTIONS: &str = "fraudstream_velocity_transactions_total";
/// Counter: transactions lacking an entity id, by `entity` and `action` (`scored`
/// without that entity's features, or `refused`).
pub const VELOCITY_MISSING_ENTITY: &str = "fraudstream_velocity_missing_entity_total";
/// Gauge: entities with state in the store.
pub const VELOCITY_ENTITIES: &str = "fraudstream_velocity_entities";
/// Gauge: approximate bytes of entity state in the store.
pub const VELOCITY_ENTITY_BYTES: &str = "fraudstream_velocity_entity_bytes";
/// Gauge: mean bytes per entity.
pub const VELOCITY_BYTES_PER_ENTITY: &str = "fraudstream_velocity_bytes_per_entity";
/// Counter: entities dropped to stay under `velocity.max_entities`.
pub const VELOCITY_EVICTED: &str = "fraudstream_velocity_evicted_total";
/// Counter: state-store calls that failed and were retried.
pub const VELOCITY_STORE_ERRORS: &str = "fraudstream_velocity_store_errors_total";
/// Counter: transactions that count in no entity for their event time, by `side`
/// (`ahead`: beyond the wall clock, or held ahead of the watermark and not followed;
/// `behind`: older than the watermark allows). Each is scored from what the store holds.
pub const VELOCITY_OUT_OF_RANGE: &str = "fraudstream_velocity_out_of_range_total";
/// Counter: fraud labels not applied for their event time, by `side`.
pub const VELOCITY_LABELS_REFUSED: &str = "fraudstream_velocity_labels_refused_total";
/// Gauge: the event-time watermark (Unix seconds): the newest transaction time counted
/// for good.
pub const VELOCITY_WATERMARK: &str = "fraudstream_velocity_watermark_seconds";
/// Gauge: transactions counted provisionally, ahead of the watermark, not yet judged.
pub const VELOCITY_HELD: &str = "fraudstream_velocity_held";
/// Counter: labels received, by `outcome` against the verdict served: `tp`, `fp`,
/// `fn`, `tn`, or `unmatched` (no verdict remembered for the id).
pub const LABELS: &str = "fraudstream_labels_total";
/// Gauge: precision of the served verdicts over the labels received so far.
pub const ONLINE_PRECISION: &str = "fraudstream_online_precision";
/// Gauge: recall of the served verdicts over the labels received so far.
pub const ONLINE_RECALL: &str = "fraudstream_online_recall";
/// Counter: label lines or messages that could not be read, by `reason`.
pub const LABELS_INVALID: &str = "fraudstream_labels_invalid_total";
/// Gauge: a feature's population stability index over the monitoring window, against
/// the serving model's training data, by `feature`.
pub const FEATURE_PSI: &str = "fraudstream_feature_psi";
/// Gauge: the score's population stability index over the monitoring window, against
/// its distribution on rows the serving model did not train on.
pub const SCORE_PSI: &str = "fraudstream_score_psi";
/// Gauge: a feature's (or, with `feature="score"`, the score's) drift band: 0 stable,
/// 1 moderate, 2 significant; unset while the window holds fewer than
/// `monitoring.min_rows` transactions.
pub const DRIFT_STATE: &str = "fraudstream_drift_state";
/// Counter: monitoring alerts raised, by `kind` (`drift`, `quality_drop`).
pub const MONITORING_ALERTS: &str = "fraudstream_monitoring_alerts_total";
/// Gauge: partitions of the input topics the broker assigns to no member of the group
/// (checked every 20 s by each consumer).
pub const KAFKA_ORPHANED_PARTITIONS: &str = "fraudstream_kafka_orphaned_partitions";
/// Counter: times a consumer made the group rebalance because partitions stayed
/// assigned to no member.
pub const KAFKA_GROUP_KICKS: &str = "fraudstream_kafka_group_kicks_total";
/// Gauge: precision of the newest model version's verdicts among those whose label has
/// arrived, by `version`.
pub const QUALITY_PRECISION: &str = "fraudstream_quality_precision";
/// Gauge: recall of those verdicts, by `version`.
pub const QUALITY_RECALL: &str = "fraudstream_quality_recall";
/// Gauge: AUPRC of its last 20,000 labelled verdicts, by `version`.
pub const QUALITY_AUPRC: &str = "fraudstream_quality_auprc";
/// Gauge: the share of its verdicts still without a label, by `version`.
pub const QUALITY_UNLABELLED: &str = "fraudstream_quality_unlabelled_share";
/// Gauge: seconds since the newest label of its verdicts arrived, by `version`.
pub const QUALITY_LABEL_AGE: &str = "fraudstream_quality_label_age_seconds";
