//! Reading labelled history, chunk by chunk, into a dataset capped at `retrain.max_rows`:
//! every fraud (or `retrain.max_frauds` of them), and a uniform sample of the legitimate
//! rows, with the weights that say what the sample stands for.

use super::{RetrainConfig, RetrainError};
use crate::rng::Rng;
use crate::schema::{Dataset, ReadOptions};
use crate::storage::S3Settings;

/// A uniform sample of at most `cap` rows of one class (reservoir sampling), and how
/// many rows of the class were offered.
pub(super) struct Reservoir {
    pub(super) rows: Dataset,
    pub(super) seen: u64,
    pub(super) cap: usize,
}

impl Reservoir {
    pub(super) fn new(derived: Vec<String>, cap: usize) -> Self {
        Self {
            rows: Dataset::with_derived(0, derived),
            seen: 0,
            cap,
        }
    }

    fn offer(&mut self, tx: crate::schema::Transaction, rng: &mut Rng) {
        self.seen += 1;
        if self.rows.len() < self.cap {
            self.rows.push(tx);
            return;
        }
        let j = (rng.unit() * self.seen as f64) as usize;
        if j < self.cap {
            let row = tx
                .values
                .iter()
                .copied()
                .chain(tx.derived.iter().map(|&v| f64::from(v)));
            for (c, v) in self.rows.columns.iter_mut().zip(row) {
                c[j] = v;
            }
            self.rows.ids[j] = tx.id;
            self.rows.labels[j] = tx.label;
        }
    }

    /// How many offered rows each kept row stands for.
    fn weight(&self) -> f64 {
        if self.rows.is_empty() {
            1.0
        } else {
            self.seen as f64 / self.rows.len() as f64
        }
    }
}

/// Every fraud (or a uniform sample of `retrain.max_frauds` of them), plus a uniform
/// sample of the legitimate rows, fed one file at a time.
pub(super) struct Sampler {
    pub(super) frauds: Reservoir,
    pub(super) legit: Reservoir,
    pub(super) rng: Rng,
    pub(super) read: usize,
}

/// The rows kept from the history, and what they stand for.
pub(super) struct Sample {
    pub(super) data: Dataset,
    /// How many history rows each kept row of a class stands for, `[legitimate, fraud]`;
    /// `None` when every labelled row was kept.
    pub(super) weights: Option<crate::eval::ClassWeights>,
}

impl Sampler {
    pub(super) fn new(
        derived: Vec<String>,
        max_rows: usize,
        max_frauds: Option<usize>,
        seed: u64,
    ) -> Self {
        Self {
            frauds: Reservoir::new(derived.clone(), max_frauds.unwrap_or(usize::MAX)),
            legit: Reservoir::new(derived, max_rows),
            rng: Rng::new(seed),
            read: 0,
        }
    }

    pub(super) fn add(&mut self, d: &Dataset) {
        self.read += d.len();
        for i in 0..d.len() {
            let tx = d.row(i);
            match tx.label {
                Some(1) => self.frauds.offer(tx, &mut self.rng),
                Some(_) => self.legit.offer(tx, &mut self.rng),
                None => {}
            }
        }
    }

    /// Frauds then legitimate rows, legitimate ones trimmed so the total fits `max_rows`,
    /// with the weights of the sampling.
    pub(super) fn finish(mut self, max_rows: usize) -> Sample {
        let room = max_rows.saturating_sub(self.frauds.rows.len());
        if self.legit.rows.len() > room {
            let mut idx: Vec<usize> = (0..self.legit.rows.len()).collect();
            self.rng.shuffle(&mut idx);
            idx.truncate(room);
            idx.sort_unstable();
            self.legit.rows = self.legit.rows.select(&idx);
        }
        let weights = [self.legit.weight(), self.frauds.weight()];
        let mut data = self.frauds.rows;
        for i in 0..self.legit.rows.len() {
            data.push(self.legit.rows.row(i));
        }
        Sample {
            data,
            weights: (weights != crate::eval::UNWEIGHTED).then_some(weights),
        }
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
) -> Result<(Sample, usize), RetrainError> {
    if cfg.history.is_empty() {
        return Err(RetrainError::Config("retrain.history is empty".into()));
    }
    let labels = read_labels(&cfg.labels, cfg.labels_topic.as_deref(), kafka).await?;
    let names = velocity
        .map(crate::velocity::VelocitySpec::names)
        .unwrap_or_default();
    let mut sampler = Sampler::new(names, cfg.max_rows, cfg.max_frauds, cfg.seed);
    // The warm-up ends this long after the first row read.
    let warm_up = cfg.warm_up.map(|w| w.as_secs_f64());
    let mut warm_up_ends: Option<f64> = None;
    for entry in &cfg.history {
        on_file(entry);
        // In chunks: memory holds the sample and a chunk or two, whatever the history.
        crate::pipeline::remote::for_each_chunk(
            entry,
            s3,
            ReadOptions { skip_invalid: true },
            velocity,
            crate::pipeline::remote::CHUNK_ROWS,
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
    let Sample { data, weights } = sampler.finish(cfg.max_rows);
    // Sampling is uniform within each class, so the window keeps the weights.
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
    Ok((Sample { data, weights }, read))
}
