//! Reading labelled history into a dataset capped at `retrain.max_rows`: every fraud,
//! and a uniform sample of the legitimate rows.

use super::{RetrainConfig, RetrainError};
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions};
use crate::storage::S3Settings;

/// Every fraud, plus a uniform sample of at most `cap` legitimate rows (reservoir
/// sampling), fed one file at a time.
pub(super) struct Sampler {
    pub(super) frauds: Dataset,
    pub(super) legit: Dataset,
    pub(super) seen_legit: u64,
    pub(super) cap: usize,
    pub(super) rng: Rng,
    pub(super) read: usize,
}

impl Sampler {
    pub(super) fn add(&mut self, d: &Dataset) {
        self.read += d.len();
        for i in 0..d.len() {
            let tx = d.row(i);
            match tx.label {
                Some(1) => self.frauds.push(tx),
                Some(_) => {
                    self.seen_legit += 1;
                    if self.legit.len() < self.cap {
                        self.legit.push(tx);
                    } else {
                        let j = (self.rng.unit() * self.seen_legit as f64) as usize;
                        if j < self.cap {
                            let row = tx
                                .values
                                .iter()
                                .copied()
                                .chain(tx.derived.iter().map(|&v| f64::from(v)));
                            for (c, v) in self.legit.columns.iter_mut().zip(row) {
                                c[j] = v;
                            }
                            self.legit.ids[j] = tx.id;
                        }
                    }
                }
                None => {}
            }
        }
    }

    /// Frauds then legitimate rows, legitimate ones trimmed so the total fits `max_rows`.
    pub(super) fn finish(mut self, max_rows: usize) -> Dataset {
        let room = max_rows.saturating_sub(self.frauds.len());
        if self.legit.len() > room {
            let mut idx: Vec<usize> = (0..self.legit.len()).collect();
            self.rng.shuffle(&mut idx);
            idx.truncate(room);
            idx.sort_unstable();
            self.legit = self.legit.select(&idx);
        }
        for i in 0..self.legit.len() {
            self.frauds.push(self.legit.row(i));
        }
        self.frauds
    }
}

/// Longest read of `retrain.labels_topic` to its end.
const LABELS_TOPIC_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Read every history entry into a capped dataset.
/// Labels by transaction id from JSON-lines files (`id`, `Class`) and a labels topic
/// read to its end; a later label of the same transaction wins.
pub async fn read_labels(
    files: &[String],
    topic: Option<&str>,
    kafka: &crate::kafka::KafkaSettings,
) -> Result<std::collections::HashMap<String, u8>, RetrainError> {
    let mut labels: std::collections::HashMap<String, u8> = std::collections::HashMap::new();
    for path in files {
        if !std::path::Path::new(path).is_file() {
            return Err(RetrainError::LabelsFile(format!("{path} is not a file")));
        }
        let read = crate::stream::source::labels::file::LabelsFile::new(path)
            .read_new()
            .map_err(|e| RetrainError::LabelsFile(format!("{path}: {e}")))?;
        labels.extend(read.into_iter().map(|l| (l.tx_id, l.label)));
    }
    if let Some(topic) = topic {
        let read = crate::stream::source::labels::topic::read_all(kafka, topic, LABELS_TOPIC_LIMIT)
            .await
            .map_err(RetrainError::LabelsTopic)?;
        tracing::info!(topic, labels = read.len(), "labels read");
        labels.extend(read.into_iter().map(|l| (l.tx_id, l.label)));
    }
    Ok(labels)
}

pub(super) async fn read_history(
    cfg: &RetrainConfig,
    s3: &S3Settings,
    kafka: &crate::kafka::KafkaSettings,
    velocity: Option<&crate::velocity::VelocitySpec>,
    on_file: &(dyn Fn(&str) + Sync),
) -> Result<(Dataset, usize), RetrainError> {
    if cfg.history.is_empty() {
        return Err(RetrainError::Config("retrain.history is empty".into()));
    }
    let labels = read_labels(&cfg.labels, cfg.labels_topic.as_deref(), kafka).await?;
    let names = velocity
        .map(crate::velocity::VelocitySpec::names)
        .unwrap_or_default();
    let mut sampler = Sampler {
        frauds: Dataset::with_derived(0, names.clone()),
        legit: Dataset::with_derived(0, names),
        seen_legit: 0,
        cap: cfg.max_rows,
        rng: Rng::new(cfg.seed),
        read: 0,
    };
    // The warm-up ends this long after the first row read.
    let warm_up = cfg.warm_up.map(|w| w.as_secs_f64());
    let mut warm_up_ends: Option<f64> = None;
    for entry in &cfg.history {
        on_file(entry);
        crate::pipeline::remote::for_each_file(
            entry,
            s3,
            ReadOptions { skip_invalid: true },
            velocity,
            &mut |name, mut d, report| {
                if report.skipped > 0 {
                    tracing::warn!(file = %name, skipped = report.skipped, "invalid history rows skipped");
                }
                if !labels.is_empty() {
                    for (id, label) in d.ids.iter().zip(d.labels.iter_mut()) {
                        if label.is_none() {
                            *label = labels.get(id).copied();
                        }
                    }
                }
                match warm_up {
                    Some(w) if !d.is_empty() => {
                        let first = d.columns[crate::schema::TIME].iter().copied().fold(f64::INFINITY, f64::min);
                        let ends = *warm_up_ends.get_or_insert(first + w);
                        let keep: Vec<usize> = (0..d.len())
                            .filter(|&i| d.columns[crate::schema::TIME][i] >= ends)
                            .collect();
                        sampler.read += d.len() - keep.len();
                        sampler.add(&d.select(&keep));
                    }
                    _ => sampler.add(&d),
                }
            },
        )
        .await?;
    }
    let read = sampler.read;
    let data = sampler.finish(cfg.max_rows);
    let data = match cfg.window {
        Some(w) if !data.is_empty() => {
            let times = &data.columns[crate::schema::TIME];
            let newest = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let keep: Vec<usize> = (0..data.len())
                .filter(|&i| times[i] >= newest - w.as_secs_f64())
                .collect();
            data.select(&keep)
        }
        _ => data,
    };
    Ok((data, read))
}
