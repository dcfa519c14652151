//! Running totals of a detector, in bounded memory: counts, latency histograms, the
//! labelled scores for the end-of-run quality summary, and the model versions that
//! scored. The scorer task records each durable batch here and exports the matching
//! metrics; the HTTP API and the summary read it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::eval::{Metrics, evaluate};
use crate::metric_names as names;
use crate::stream::scorer::Scored;

/// Latencies in logarithmic buckets (2% wide, 1 µs to ~3 hours): constant memory however
/// long the detector runs, percentiles within 2%.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
}

const HIST_MIN_MS: f64 = 1e-3;
const HIST_GROWTH: f64 = 1.02;
const HIST_BUCKETS: usize = 1200;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; HIST_BUCKETS],
            count: 0,
        }
    }
}

impl LatencyHistogram {
    /// Record one latency in milliseconds.
    pub fn record(&mut self, ms: f64) {
        let i = if ms <= HIST_MIN_MS {
            0
        } else {
            ((ms / HIST_MIN_MS).ln() / HIST_GROWTH.ln()).ceil() as usize
        };
        self.buckets[i.min(HIST_BUCKETS - 1)] += 1;
        self.count += 1;
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// What was recorded since `earlier` (a copy of this histogram taken before).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// The `q` quantile (0..=1) in milliseconds: the upper edge of its bucket; 0 when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64 + 1;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return HIST_MIN_MS * HIST_GROWTH.powi(i as i32);
            }
        }
        HIST_MIN_MS * HIST_GROWTH.powi(HIST_BUCKETS as i32 - 1)
    }
}

/// Labelled scores kept for the end-of-run quality summary; beyond this many the summary
/// covers the first ones only (about 10 MB).
pub const LABELLED_CAP: usize = 2_000_000;

/// Running totals, in bounded memory.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Rows read from the source (valid or not).
    pub read: u64,
    /// Rows sent to the dead-letter sink.
    pub dead_letters: u64,
    /// Partitions revoked by rebalances.
    pub revoked: u64,
    /// Messages behind the end of the assigned partitions, summed (Kafka statistics).
    pub consumer_lag: Option<i64>,
    /// Rows scored.
    pub scored: u64,
    /// Verdicts flagged as fraud.
    pub flagged: u64,
    /// Read-to-durable latencies.
    pub latency: LatencyHistogram,
    /// Produce-to-durable latencies (sources that know the send time).
    pub produce_latency: LatencyHistogram,
    /// Scores of labelled rows (the first [`LABELLED_CAP`]).
    pub scores: Vec<f32>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Labelled rows beyond the cap, not in `scores`.
    pub labelled_dropped: u64,
    /// Whether some scored row had no label.
    pub unlabelled: bool,
    /// Model versions that scored, in order of first use.
    pub model_versions: Vec<String>,
}

impl Stats {
    /// Read-to-durable latency percentiles p50, p99, p999 in milliseconds.
    #[must_use]
    pub fn latency_percentiles(&self) -> [f64; 3] {
        percentiles(&self.latency)
    }

    /// Metrics against labels, when every scored row had one.
    #[must_use]
    pub fn metrics(&self, threshold: f64) -> Option<Metrics> {
        (!self.unlabelled && !self.labels.is_empty())
            .then(|| evaluate(&self.scores, &self.labels, threshold))
    }
}

/// p50, p99 and p999 of `h`.
#[must_use]
pub fn percentiles(h: &LatencyHistogram) -> [f64; 3] {
    [h.quantile(0.5), h.quantile(0.99), h.quantile(0.999)]
}

impl Stats {
    /// Count, time and export one durable batch.
    pub fn record(&mut self, scored: &Scored) {
        let now = Instant::now();
        let now_ms = crate::clock::now_ms();
        metrics::counter!(names::SCORED).increment(scored.rows.len() as u64);
        metrics::counter!(names::FRAUD)
            .increment(scored.verdicts.iter().filter(|v| v.fraud).count() as u64);
        let latency = metrics::histogram!(names::END_TO_END_SECONDS);
        let produce_latency = metrics::histogram!(names::PRODUCE_TO_DURABLE_SECONDS);
        let scores = metrics::histogram!(names::SCORE);
        if let Some(v) = scored.verdicts.first() {
            self.note_version(&v.model_version);
        }
        for (r, v) in scored.rows.iter().zip(&scored.verdicts) {
            let secs = now.duration_since(r.read_at).as_secs_f64();
            latency.record(secs);
            self.latency.record(secs * 1e3);
            if let Some(p) = r.produced_at_ms.filter(|&p| p > 0 && p <= now_ms) {
                produce_latency.record((now_ms - p) as f64 / 1e3);
                self.produce_latency.record((now_ms - p) as f64);
            }
            scores.record(f64::from(v.score));
            match r.tx.label {
                Some(_) if self.labels.len() >= LABELLED_CAP => self.labelled_dropped += 1,
                Some(l) => {
                    self.scores.push(v.score);
                    self.labels.push(l);
                }
                None => self.unlabelled = true,
            }
            self.scored += 1;
            self.flagged += u64::from(v.fraud);
        }
    }

    fn note_version(&mut self, version: &str) {
        if self.model_versions.last().map(String::as_str) != Some(version) {
            self.model_versions.push(version.to_owned());
        }
    }
}

/// [`Stats`] shared between the scorer task (one lock per batch) and readers.
pub type SharedStats = Arc<Mutex<Stats>>;

/// Lock shared stats (a poisoned lock still holds consistent totals).
pub fn lock(stats: &SharedStats) -> MutexGuard<'_, Stats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_percentiles_are_within_two_percent() {
        let mut h = LatencyHistogram::default();
        for i in 1..=10_000 {
            h.record(f64::from(i) / 100.0); // 0.01 .. 100 ms
        }
        assert_eq!(h.count(), 10_000);
        for (q, exact) in [(0.5, 50.0), (0.99, 99.0), (0.999, 99.9)] {
            let got = h.quantile(q);
            assert!(
                (got - exact).abs() / exact <= 0.021,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0.0);
        h.record(1e12);
        assert!(h.quantile(1.0).is_finite());
    }
}
