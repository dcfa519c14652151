//! Reading labelled history, chunk by chunk, into a dataset capped at `retrain.max_rows`:
//! every fraud (or `retrain.max_frauds` of them), and a uniform sample of the legitimate
//! rows, with the weights that say what the sample stands for.

use super::{RetrainConfig, RetrainError};
use crate::pipeline::sample::{Sample, SampleSpec, read_sample};
use crate::storage::S3Settings;

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
    let spec = SampleSpec {
        max_rows: cfg.max_rows,
        max_frauds: cfg.max_frauds,
        seed: cfg.seed,
        warm_up_secs: cfg.warm_up.map(|w| w.as_secs_f64()),
        skip_invalid: true,
        bucket_secs: cfg.sample_bucket.map(|b| b.as_secs_f64()),
    };
    let (sample, read, _) =
        read_sample(&cfg.history, s3, velocity, &labels, &spec, on_file).await?;
    let sample = match cfg.window {
        Some(w) if !sample.data.is_empty() => {
            let times = &sample.data.columns[crate::schema::TIME];
            let newest = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let keep: Vec<usize> = (0..sample.data.len())
                .filter(|&i| times[i] >= newest - w.as_secs_f64())
                .collect();
            sample.select(&keep)
        }
        _ => sample,
    };
    Ok((sample, read))
}
