//! Running a built detector: its background tasks supervised, the stream until the input
//! ends or a shutdown, then the summary.

use std::time::Instant;

use tokio::sync::mpsc;

use super::error::{DetectorError, Opening as _};
use super::{Detector, LABELS_POLL, Source, Summary, TASKS_GRACE};
use crate::shutdown::Shutdown;
use crate::stream::stats;

impl Detector {
    /// Run until the input ends (files) or `shutdown` stops it, then drain, flush the
    /// lake and commit. An error means some input is not durable and was left
    /// uncommitted (it is read again on restart).
    pub async fn run(self, shutdown: Shutdown) -> Result<Summary, DetectorError> {
        let started = Instant::now();
        let Self {
            source,
            stages,
            handles,
            in_flight_batches,
            watcher,
            decision_watcher,
            shadow,
            labels,
            labels_topic,
            velocity,
            ready,
            background,
            mut tasks,
            ..
        } = self;
        if let Some((v, file)) = labels {
            tasks.spawn_fallible(
                "labels_file",
                crate::stream::source::labels::file::follow(
                    v,
                    file,
                    LABELS_POLL,
                    background.clone(),
                ),
            );
        }
        if let Some((v, reader)) = labels_topic {
            tasks.spawn_fallible("labels_topic", reader.follow(v, background.clone()));
        }
        if let Some((w, interval)) = watcher {
            tracing::info!(interval = ?interval, store = %handles.models.describe(), "watching the model store for new versions");
            let stop = background.clone();
            tasks.spawn("model_watcher", async move { w.run(interval, stop).await });
        }
        if let Some((w, interval)) = decision_watcher {
            let stop = background.clone();
            tasks.spawn(
                "decisions_watcher",
                async move { w.run(interval, stop).await },
            );
        }
        if stages.is_some() {
            let (m, sinks, stop) = (
                handles.monitor.clone(),
                handles.alert_sinks.clone(),
                background.clone(),
            );
            tasks.spawn("monitoring", m.run(sinks, stop));
        }
        if let Some((w, interval)) = shadow.filter(|(_, i)| !i.is_zero()) {
            let stop = background.clone();
            tasks.spawn("shadow_watcher", async move { w.run(interval, stop).await });
        }
        let set_ready = |value: bool| {
            if let Some(r) = &ready {
                let _sent = r.send(value);
            }
        };
        set_ready(true);
        let streaming = async {
            match (source, stages) {
                (Source::None, _) | (_, None) => {
                    shutdown.stopping().await;
                    (
                        "the API (no stream)".to_owned(),
                        false,
                        String::new(),
                        Ok(()),
                    )
                }
                (Source::Kafka(k), Some(mut stages)) => {
                    stages.delivery.abort = shutdown.abort_token();
                    if let Some(v) = &velocity {
                        v.abort_on(shutdown.abort_token());
                    }
                    let (result, _stages) = k.run(stages, &shutdown).await;
                    (
                        format!("kafka topics {}", k.settings.topics.join(", ")),
                        true,
                        format!("kafka topic {}", k.settings.dlq_topic),
                        result.map_err(DetectorError::from),
                    )
                }
                (Source::File(f), Some(mut stages)) => {
                    stages.delivery.abort = shutdown.abort_token();
                    if let Some(v) = &velocity {
                        v.abort_on(shutdown.abort_token());
                    }
                    let (tx, rx) = mpsc::channel(in_flight_batches.max(1));
                    let scorer = tokio::spawn(async move {
                        let r = stages.run(rx, &()).await;
                        (stages, r)
                    });
                    let read = f
                        .run(
                            &tx,
                            &handles.stats,
                            &shutdown.stop_token(),
                            &shutdown.abort_token(),
                        )
                        .await;
                    drop(tx);
                    let drained = match scorer.await.opening("scorer task") {
                        Ok((_stages, drained)) => drained.map_err(DetectorError::from),
                        Err(e) => Err(e),
                    };
                    (
                        f.input.describe(),
                        false,
                        f.dead_letters.describe(),
                        read.map_err(DetectorError::from).and(drained),
                    )
                }
            }
        };
        let mut streaming = Box::pin(streaming);
        // A background task that stops early stops the detector (drained as on a
        // signal) and is the run's error.
        let (outcome, failed) = tokio::select! {
            outcome = &mut streaming => (outcome, None),
            failed = tasks.failed() => {
                shutdown.stop();
                ((&mut streaming).await, Some(failed))
            }
        };
        drop(streaming);
        let (description, kafka, dead_letter_sink, result) = outcome;
        set_ready(false);
        background.cancel();
        tasks.shut_down(TASKS_GRACE).await;
        if let Some(failed) = failed {
            return Err(failed.into());
        }
        result?;
        let stats = stats::lock(&handles.stats).clone();
        let metrics = stats.metrics(handles.model.load().meta().threshold);
        Ok(Summary {
            source: description,
            kafka,
            dead_letter_sink,
            stats,
            seconds: started.elapsed().as_secs_f64(),
            metrics,
            labels: velocity.map(|v| v.confusion()),
        })
    }
}
