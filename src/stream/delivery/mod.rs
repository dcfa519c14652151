//! Delivery: a scored batch into the sinks (verdict store, alert sinks, lake buffer),
//! with the guarantee the configuration asks for.
//!
//! Each sink named in [`Durability`] is retried while it is down ([`Outage`]): the batch
//! waits, so the bounded channel fills and the source pauses, and the wait is exported as
//! blocked time. The other sinks are written best-effort; their failures are logged and
//! counted. The dead-letter path waits out its outages with the same [`Outage`]. A
//! shutdown's abort ends every wait with [`DeliveryError::Aborted`]: the batch then stays
//! unacknowledged, so nothing is lost.
//!
//! - [`config`]: `[delivery]`, the [`Sink`]s and the [`Durability`] over them.
//! - [`outage`]: waiting out a durable sink's outage.
//! - [`lake_task`]: a lake outside the durable set, in a task of its own.

pub mod config;
pub mod lake_task;
pub mod outage;

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub use config::{DeliveryConfig, Durability, Sink};
pub use lake_task::LakeTask;
pub use outage::{DeliveryError, OUTAGE_RETRY, Outage};

use super::dead_letter::{DeadLetter, DeadLetterSink, Reason, send_durably};
use super::scorer::Scored;
use crate::metric_names as names;
use crate::model::Verdict;
use crate::retry::Retryable;
use crate::sinks::alerts::{AlertError, AlertSink};
use crate::sinks::lake::{
    DecisionRecord, LakePosition, LakeWriter, Ownership, ScoredRecord, ShadowRecord, file_stream,
    kafka_stream,
};
use crate::sinks::verdicts::{Stamp, VerdictError, VerdictItem, VerdictStore};
use crate::stream::source::Origin;
use crate::stream::source::kafka::outbox::{Outbox, OutboxMessage};
use outage::best_effort_failed;

/// Send `alerts` to a durable sink: waited out while it is unavailable; when it refuses a
/// batch for good, the batch is halved until the refused alerts are found, so one bad
/// alert does not hold back the others. The refused ones join `refused`.
async fn send_alerts_to(
    sink: &dyn AlertSink,
    alerts: &[Verdict],
    abort: &CancellationToken,
    refused: &mut Vec<(String, String)>,
) -> Result<(), DeliveryError> {
    let mut pending: Vec<&[Verdict]> = vec![alerts];
    while let Some(part) = pending.pop() {
        let mut outage = Outage::new(Sink::Alerts.label());
        loop {
            match sink.send(part).await {
                Ok(()) => break,
                Err(e @ AlertError::Unavailable { .. }) => outage.wait(abort, &e).await?,
                Err(e @ AlertError::Refused { .. }) => {
                    if let [one] = part {
                        refused.push((one.tx_id.clone(), e.to_string()));
                    } else {
                        let (a, b) = part.split_at(part.len() / 2);
                        pending.push(b);
                        pending.push(a);
                    }
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Record one stage's duration for one batch.
pub fn stage_time(stage: &'static str, started: Instant) {
    metrics::histogram!(names::STAGE_SECONDS, "stage" => stage)
        .record(started.elapsed().as_secs_f64());
}

/// The sinks of one detector, and the durability policy over them.
pub struct Delivery {
    /// The verdict store.
    pub verdicts: Arc<dyn VerdictStore>,
    /// Alert sinks besides the log.
    pub alerts: Vec<Arc<dyn AlertSink>>,
    /// The lake, if enabled.
    pub lake: Option<LakeWriter>,
    /// Which sinks are retried until durable.
    pub durable: Durability,
    /// Verdict expiry.
    pub ttl_seconds: Option<u64>,
    /// Ends every outage wait (the shutdown deadline).
    pub abort: CancellationToken,
    /// Where records a durable sink can never accept go (the source's dead-letter sink).
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// A lake outside the durable set, once [`Delivery::buffer`] has handed it to a task
    /// of its own (`None` before).
    pub lake_task: Option<LakeTask>,
    /// The lake stream of each input (a file's, from its content; Kafka partitions name
    /// their own), so a redelivered row is written once.
    pub streams: LakeStreams,
    /// The alerts topic, exactly once: alerts staged with their input offsets and written
    /// in the transaction that commits them (`delivery.kafka_outputs`).
    pub outbox_alerts: Option<OutboxAlerts>,
}

/// An alerts topic written through the outbox.
pub struct OutboxAlerts {
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// The alerts topic.
    pub topic: Arc<str>,
}

impl OutboxAlerts {
    /// Stage the alerts of `scored`'s rows (each keyed by transaction id, as JSON) with
    /// their input offsets.
    async fn stage(&self, scored: &Scored) {
        let messages: Vec<OutboxMessage> = scored
            .rows
            .iter()
            .zip(&scored.verdicts)
            .filter(|(_, v)| v.alerts())
            .filter_map(|(r, v)| {
                let Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } = &r.origin
                else {
                    return None;
                };
                Some(OutboxMessage {
                    origin: ((topic.to_string(), *partition), *offset),
                    topic: self.topic.clone(),
                    key: Some(v.tx_id.clone().into_bytes()),
                    payload: serde_json::to_vec(v).ok()?,
                    headers: None,
                })
            })
            .collect();
        if !messages.is_empty() {
            self.outbox.stage(messages).await;
        }
    }
}

/// The lake stream names of inputs, worked out once each.
#[derive(Debug, Default)]
pub struct LakeStreams {
    files: std::collections::HashMap<Arc<str>, Option<Arc<str>>>,
    topics: std::collections::HashMap<(Arc<str>, i32), Arc<str>>,
}

impl LakeStreams {
    /// Where a row from `origin` stands in the lake (none for stdin).
    pub fn position(&mut self, origin: &Origin) -> Option<LakePosition> {
        match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => {
                let stream = self
                    .topics
                    .entry((topic.clone(), *partition))
                    .or_insert_with(|| Arc::from(kafka_stream(topic, *partition)))
                    .clone();
                Some(LakePosition {
                    stream,
                    offset: *offset,
                })
            }
            Origin::File { path, line } => {
                let stream = self
                    .files
                    .entry(path.clone())
                    .or_insert_with(|| file_stream(path).map(Arc::from))
                    .clone()?;
                Some(LakePosition {
                    stream,
                    offset: i64::try_from(*line).unwrap_or(i64::MAX),
                })
            }
        }
    }
}

impl Delivery {
    /// Sinks with the default durability, no alerts and no lake.
    #[must_use]
    pub fn new(verdicts: Arc<dyn VerdictStore>, dead_letters: Arc<dyn DeadLetterSink>) -> Self {
        Self {
            dead_letters,
            verdicts,
            alerts: Vec::new(),
            lake: None,
            durable: Durability::default(),
            ttl_seconds: None,
            abort: CancellationToken::new(),
            lake_task: None,
            streams: LakeStreams::default(),
            outbox_alerts: None,
        }
    }

    /// Say which lake streams this member holds (a Kafka session's assignment), or none.
    pub fn set_lake_ownership(&self, ownership: Option<Arc<dyn Ownership>>) {
        let slot = match (&self.lake, &self.lake_task) {
            (Some(lake), _) => lake.ownership(),
            (None, Some(task)) => task.ownership.clone(),
            (None, None) => return,
        };
        slot.set(ownership);
    }

    /// Make a scored batch's verdicts and alerts durable (as the policy asks). The
    /// verdict store and the alert sinks are independent, so they are written
    /// concurrently. A record that a durable sink can never accept (the store refuses its
    /// verdict, an alert sink refuses its alert) goes to the dead-letter sink with the
    /// reason; one without a stored verdict also leaves the batch (no lake row), though
    /// its alert, sent at the same time, stands. The rest goes on. Returns how many
    /// records were dead-lettered.
    pub async fn write(&mut self, scored: &mut Scored) -> Result<u64, DeliveryError> {
        let refused = self.dead_letter_refused(scored).await?;
        let stamp = Stamp::now(self.ttl_seconds);
        let items: Vec<VerdictItem> = scored
            .verdicts
            .iter()
            .map(|v| stamp.item(v.clone()))
            .collect();
        let frauds: Vec<&Verdict> = scored.verdicts.iter().filter(|v| v.alerts()).collect();
        for v in &frauds {
            tracing::warn!(tx_id = %v.tx_id, score = v.score, outcome = %v.outcome, decided_by = %v.decided_by, model_version = %v.model_version, "fraud alert");
        }
        let frauds: Vec<Verdict> = frauds.into_iter().cloned().collect();
        let this = &*self;
        let verdicts = async {
            let started = Instant::now();
            let refused = this.write_verdicts(&items).await;
            stage_time("verdicts", started);
            refused
        };
        let alerts = async {
            if frauds.is_empty() {
                return Ok(Vec::new());
            }
            let started = Instant::now();
            let refused = this.send_alerts(&frauds).await;
            stage_time("alerts", started);
            refused
        };
        let staged = async {
            match &this.outbox_alerts {
                Some(o) => {
                    o.stage(scored).await;
                    Ok(())
                }
                None => Ok(()),
            }
        };
        let (verdicts_refused, alerts_refused, ()) = tokio::try_join!(verdicts, alerts, staged)?;
        let mut dead = self
            .dead_letter(scored, "verdict_refused", &verdicts_refused, true)
            .await?;
        // A row already dead-lettered for its verdict has left the batch and is not
        // matched again.
        dead += self
            .dead_letter(scored, "alert_refused", &alerts_refused, false)
            .await?;
        Ok(dead + refused)
    }

    /// Dead-letter the rows taken out before scoring, and the copies of scored rows the
    /// velocity stage set aside (with the transaction as payload).
    async fn dead_letter_refused(&mut self, scored: &mut Scored) -> Result<u64, DeliveryError> {
        if scored.refused.is_empty() && scored.notices.is_empty() {
            return Ok(0);
        }
        let letters: Vec<DeadLetter> = scored
            .refused
            .drain(..)
            .chain(scored.notices.drain(..))
            .map(|r| DeadLetter {
                key: Some(r.row.tx.id.clone().into_bytes()),
                payload: crate::schema::json::encode_transaction(&r.row.tx).into_bytes(),
                origin: r.row.origin,
                reason: Reason {
                    code: r.code,
                    message: r.reason,
                },
            })
            .collect();
        send_durably(self.dead_letters.as_ref(), &letters, &self.abort).await?;
        Ok(letters.len() as u64)
    }

    /// Dead-letter the rows whose transaction id is in `refused` (with its reason); with
    /// `remove`, take them out of the batch.
    async fn dead_letter(
        &mut self,
        scored: &mut Scored,
        code: &'static str,
        refused: &[(String, String)],
        remove: bool,
    ) -> Result<u64, DeliveryError> {
        if refused.is_empty() {
            return Ok(0);
        }
        let reasons: std::collections::HashMap<&str, &str> = refused
            .iter()
            .map(|(id, why)| (id.as_str(), why.as_str()))
            .collect();
        let mut letters = Vec::new();
        let mut keep = Vec::with_capacity(scored.rows.len());
        for (r, v) in scored.rows.iter().zip(&scored.verdicts) {
            match reasons.get(r.tx.id.as_str()) {
                Some(why) => {
                    tracing::error!(tx_id = %r.tx.id, reason = code, error = %why, "a sink refused this record for good; it goes to the dead-letter sink");
                    letters.push(DeadLetter {
                        origin: r.origin.clone(),
                        key: Some(r.tx.id.clone().into_bytes()),
                        payload: serde_json::to_vec(v).unwrap_or_default(),
                        reason: Reason {
                            code,
                            message: (*why).to_owned(),
                        },
                    });
                    keep.push(false);
                }
                None => keep.push(true),
            }
        }
        send_durably(self.dead_letters.as_ref(), &letters, &self.abort).await?;
        if !remove {
            return Ok(letters.len() as u64);
        }
        scored.retain(&keep);
        Ok(letters.len() as u64)
    }

    /// Buffer a delivered batch's rows for the lake, then flush it if a limit is reached.
    /// A lake outside the durable set gets them through its own task ([`LakeTask`]).
    pub async fn buffer(&mut self, scored: Scored) -> Result<(), DeliveryError> {
        if self.lake.is_none() && self.lake_task.is_none() {
            return Ok(());
        }
        let now_ms = crate::clock::now_ms();
        let shadow = scored.shadow;
        let streams = &mut self.streams;
        let records: Vec<ScoredRecord> = scored
            .rows
            .into_iter()
            .zip(scored.verdicts)
            .enumerate()
            .map(|(i, (r, v))| ScoredRecord {
                decision: DecisionRecord {
                    outcome: v.outcome,
                    decided_by: v.decided_by,
                    rules: v.rules,
                    rule_set: v.rule_set,
                },
                score: v.score,
                fraud: v.fraud,
                model_version: v.model_version,
                scored_at_ms: now_ms,
                position: streams.position(&r.origin),
                tx: r.tx,
                shadow: shadow.as_ref().map(|s| ShadowRecord {
                    score: s.scores[i],
                    fraud: s.fraud[i],
                    version: s.version.clone(),
                }),
            })
            .collect();
        if !self.durable.lake
            && let Some(lake) = self.lake.take()
        {
            self.lake_task = Some(LakeTask::start(lake, self.abort.clone()));
        }
        match (&mut self.lake_task, &mut self.lake) {
            (Some(task), _) => task.send(records).await,
            (None, Some(lake)) => {
                // Where each stream stands in the lake, before its rows are buffered.
                let mut outage = Outage::new(Sink::Lake.label());
                while let Err(e) = lake.recover(&records).await {
                    outage.wait(&self.abort, &e).await?;
                }
                lake.push_all(records);
            }
            (None, None) => {}
        }
        self.maintain().await
    }

    /// Write verdicts. A durable store is retried with backoff for as long as it is down
    /// unless aborted; permanent failures are returned at once. A best-effort store gets
    /// the store's own retries, then the failure is logged and counted.
    async fn write_verdicts(
        &self,
        items: &[VerdictItem],
    ) -> Result<Vec<(String, String)>, DeliveryError> {
        let mut outage = Outage::new(Sink::Verdicts.label());
        loop {
            match self.verdicts.put_batch(items).await {
                Ok(()) => return Ok(Vec::new()),
                Err(e) if !self.durable.requires(Sink::Verdicts) => {
                    best_effort_failed(Sink::Verdicts, &e);
                    return Ok(Vec::new());
                }
                Err(VerdictError::Refused { refused, .. }) => return Ok(refused),
                Err(e) if e.is_retryable() => outage.wait(&self.abort, &e).await?,
                Err(e) => {
                    return Err(DeliveryError::Failed {
                        sink: Sink::Verdicts.label(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Deliver alerts to every alert sink, concurrently, retried while down when alerts
    /// are durable.
    /// Returns the alerts a durable sink refused for good, with the reason.
    async fn send_alerts(
        &self,
        frauds: &[Verdict],
    ) -> Result<Vec<(String, String)>, DeliveryError> {
        let sends = self.alerts.iter().map(|sink| async move {
            let mut refused = Vec::new();
            if self.durable.requires(Sink::Alerts) {
                send_alerts_to(sink.as_ref(), frauds, &self.abort, &mut refused).await?;
            } else if let Err(e) = sink.send(frauds).await {
                best_effort_failed(Sink::Alerts, &e);
            }
            Ok::<_, DeliveryError>(refused)
        });
        let refused = futures_util::future::try_join_all(sends).await?;
        Ok(refused.into_iter().flatten().collect())
    }

    /// Flush a durable lake when a limit (rows, bytes, age) is reached, waiting out an
    /// outage (the batch waits, and so does the source). Called between batches too, so
    /// that age-based flushes happen when traffic stops. (A lake outside the durable set
    /// flushes in its own task.)
    pub async fn maintain(&mut self) -> Result<(), DeliveryError> {
        let Some(lake) = self.lake.as_mut().filter(|l| l.is_due()) else {
            return Ok(());
        };
        let started = Instant::now();
        let mut outage = Outage::new(Sink::Lake.label());
        while let Err(e) = lake.flush().await {
            if !self.durable.lake {
                // Not yet handed to its task (no batch delivered): the next batch does.
                best_effort_failed(Sink::Lake, &e);
                lake.postpone();
                break;
            }
            outage.wait(&self.abort, &e).await?;
        }
        stage_time("lake", started);
        Ok(())
    }

    /// Whether offsets must wait for the lake: it is durable and holds rows not yet in a
    /// file.
    #[must_use]
    pub fn waits_for_lake(&self) -> bool {
        self.durable.lake && self.lake.as_ref().is_some_and(|l| l.buffered() > 0)
    }

    /// Flush the lake (on shutdown), retrying while it is down until an abort.
    pub async fn finish(&mut self) -> Result<(), DeliveryError> {
        if let Some(task) = self.lake_task.take() {
            task.finish().await;
        }
        let Some(lake) = self.lake.as_mut() else {
            return Ok(());
        };
        let mut outage = Outage::new(Sink::Lake.label());
        while lake.buffered() > 0 {
            if let Err(e) = lake.flush().await {
                outage.wait(&self.abort, &e).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
