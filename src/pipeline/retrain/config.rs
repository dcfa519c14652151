//! `[retrain]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::eval::SplitKind;

/// What makes a retraining cycle train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Every cycle trains (every `--every`).
    Schedule,
    /// A cycle trains when the recent rows have drifted from the live model's reference.
    Drift,
    /// A cycle trains when the live model's AUPRC on the recent rows has fallen.
    Quality,
    /// Drift or a fall in quality.
    Any,
}

impl Trigger {
    /// As configured.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Drift => "drift",
            Self::Quality => "quality",
            Self::Any => "any",
        }
    }
}

/// `[retrain]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Labelled history: files, or prefixes ending in `/` whose `.csv`, `.jsonl` and
    /// `.parquet` objects are all read (local, `s3://` or `hdfs://`).
    pub history: Vec<String>,
    /// Local JSON-lines labels files (`id`, `Class`, as `velocity.labels_path`): a history
    /// row without a `Class` (the lake's rows) takes its label from them by id; rows
    /// still unlabelled are left out. With the lake as history, the candidate then learns
    /// from the features exactly as they were served.
    pub labels: Vec<String>,
    /// A Kafka topic of labels (as `velocity.labels_topic`) on `kafka.brokers`, read to
    /// its end each cycle, like the files of `labels`. Keyed by transaction id with
    /// log compaction, it keeps one label per transaction for as long as needed.
    pub labels_topic: Option<String>,
    /// Rows of the history's first span (from the first row read; files in time order)
    /// only build the entity state up and are left out: with entity features computed
    /// from history files, their counts cover less than a full window. Set it to the
    /// features' reach (the longest window plus the label delay; `37d` for the
    /// handbook's). Unset: every row is kept (right for the lake, whose rows carry the
    /// features as served).
    #[serde(default, with = "humantime_serde::option")]
    pub warm_up: Option<Duration>,
    /// Train and judge only on the rows of this span before the newest row read (the
    /// rows before it still build entity state up): after a drift, a short window
    /// lets the candidate learn the new pattern instead of the old one it outweighs.
    /// `max_rows` samples the whole history first. Unset: every row.
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// Most rows trained and evaluated on: above it, every fraud is kept and legitimate
    /// rows are sampled uniformly, the two together never more than `max_rows`. Bounds
    /// the sample's memory to about `max_rows` × (8 bytes a column + 60): 300 bytes a
    /// row for the transaction fields, about 420 with the handbook's entity features;
    /// besides it, the entity state of the history's cards and terminals, the forest
    /// and a chunk of 65,536 rows (and one remote object, staged on disk), however long
    /// the history (docs/capacity.md). A sampled history trains with its rows weighted
    /// by what they stand for, so that the threshold's precision is the history's
    /// (docs/lifecycle.md).
    pub max_rows: usize,
    /// Most frauds kept: above it, frauds are sampled uniformly too. Unset: half of
    /// `max_rows`, so that a sample always holds legitimate rows.
    #[serde(default)]
    pub max_frauds: Option<usize>,
    /// Sample each span of `Time` of this length on its own: the budget of each class is
    /// shared fairly among the spans (one with fewer rows than its share keeps them all;
    /// the rest is shared by the others), so that a thin recent week, whose labels are
    /// still coming in, is not crowded out by the busy weeks before it. Each kept row
    /// then weighs what its own span's rows stand for in the threshold, the metrics and
    /// the gate. At least `1h` (each span costs a little memory, and a history of years
    /// then has tens of thousands of spans at most). Unset: one uniform sample of the
    /// whole history.
    #[serde(default, with = "humantime_serde::option")]
    pub sample_bucket: Option<Duration>,
    /// `time`: the most recent rows are the holdout; `stratified`: a random sample.
    pub holdout: SplitKind,
    /// Share of rows held out.
    pub test_fraction: f64,
    /// How much lower than the live model's AUPRC on the gate rows the candidate's may
    /// be, at the lower bound of the bootstrap interval of the difference. Two equally
    /// good models graded on about 100 frauds give an interval about ±0.012 wide, so a
    /// tolerance much below that refuses most equal candidates.
    pub tolerance: f64,
    /// Fewest frauds among the gate rows for a decision; fewer: `insufficient_data`.
    pub min_gate_frauds: usize,
    /// Fewest gate rows for a decision.
    pub min_gate_rows: usize,
    /// Bootstrap resamples for the interval of the AUPRC difference.
    pub resamples: usize,
    /// Coverage of that interval.
    pub confidence: f64,
    /// The candidate's holdout AUPRC must be at least this.
    pub min_auprc: f64,
    /// The candidate's holdout recall at precision ≥ 0.90 must be at least this.
    pub min_recall_at_precision_90: f64,
    /// Move `LATEST` to a candidate that passes the gate. `false`: only store it and point
    /// `models/CANDIDATE` at it (decision `approved`), to shadow-score it first and
    /// promote it by hand (`fraudstream model promote`).
    pub promote: bool,
    /// Trees in the candidate.
    pub trees: usize,
    /// A TOML file with a `[train]` table of hyper-parameters (what `fraudstream tune`
    /// writes): the candidate trains with them, `trees` and `seed` included (the two
    /// keys above are then unused). Unset: the defaults with `trees` and `seed`.
    pub params: Option<String>,
    /// Seed for sampling and the forest.
    pub seed: u64,
    /// What makes a cycle train: `schedule` (every cycle), `drift` (the recent rows
    /// drifted from the live model's reference to `monitoring.alert_band`, in
    /// `monitoring`'s bands), `quality` (the live model's AUPRC on the recent rows fell
    /// `quality_drop` below its AUPRC at training), or `any` (drift or quality). With an
    /// evidence trigger, `--every` is how often the evidence is checked.
    pub trigger: Trigger,
    /// With an evidence trigger: after a cycle that trained, or after the live version
    /// was trained, no cycle trains for this long, so a stream that keeps drifting does
    /// not retrain in a loop.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// With an evidence trigger: a cycle also trains when the live version is older than
    /// this, evidence or not (unset: never on age alone).
    #[serde(default, with = "humantime_serde::option")]
    pub max_age: Option<Duration>,
    /// The evidence: at most this many of the most recent rows after the live model's
    /// training window (the rows it never saw, when it records no window).
    pub evidence_rows: usize,
    /// The fall in AUPRC (absolute: 0.1 is 0.85 to 0.75) that counts as a fall in
    /// quality. Judged only when the recent rows hold `min_gate_frauds` frauds.
    pub quality_drop: f64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            history: Vec::new(),
            labels: Vec::new(),
            labels_topic: None,
            warm_up: None,
            window: None,
            max_rows: 2_000_000,
            max_frauds: None,
            sample_bucket: None,
            holdout: SplitKind::Time,
            test_fraction: 0.2,
            tolerance: 0.02,
            min_gate_frauds: 30,
            min_gate_rows: 500,
            resamples: 1000,
            confidence: 0.95,
            min_auprc: 0.5,
            min_recall_at_precision_90: 0.0,
            promote: true,
            trees: 100,
            params: None,
            seed: 42,
            trigger: Trigger::Schedule,
            cooldown: Duration::from_secs(6 * 3600),
            max_age: None,
            evidence_rows: 20_000,
            quality_drop: 0.1,
        }
    }
}

impl crate::validate::Validate for RetrainConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        use crate::validate::Invalid;
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(Invalid::new("test_fraction", "must be above 0 and below 1"));
        }
        if self.max_rows < 100 {
            return Err(Invalid::new("max_rows", "must be at least 100"));
        }
        if let Some(m) = self.max_frauds
            && ((m as f64 * self.test_fraction) < self.min_gate_frauds.max(1) as f64
                || m >= self.max_rows)
        {
            return Err(Invalid::new(
                "max_frauds",
                "must be below max_rows and leave the gate min_gate_frauds frauds (max_frauds × test_fraction ≥ min_gate_frauds)",
            ));
        }
        if self
            .sample_bucket
            .is_some_and(|b| b < crate::pipeline::sample::MIN_SPAN)
        {
            return Err(Invalid::new("sample_bucket", "must be at least 1h"));
        }
        if self.trees == 0 {
            return Err(Invalid::new("trees", "must be at least 1"));
        }
        if self.holdout == SplitKind::None {
            return Err(Invalid::new(
                "holdout",
                "the gate needs held-out rows: use \"time\" or \"stratified\"",
            ));
        }
        if self.min_gate_frauds == 0 {
            return Err(Invalid::new("min_gate_frauds", "must be at least 1"));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Invalid::new("confidence", "must be above 0 and below 1"));
        }
        if self.resamples < 100 {
            return Err(Invalid::new("resamples", "must be at least 100"));
        }
        if !(self.tolerance >= 0.0 && self.tolerance < 1.0) {
            return Err(Invalid::new("tolerance", "must be at least 0 and below 1"));
        }
        if let Some(p) = &self.params {
            crate::pipeline::read_train_params(std::path::Path::new(p))
                .map_err(|e| Invalid::new("params", e))?;
        }
        if self.evidence_rows < 100 {
            return Err(Invalid::new("evidence_rows", "must be at least 100"));
        }
        if !(self.quality_drop > 0.0 && self.quality_drop < 1.0) {
            return Err(Invalid::new("quality_drop", "must be above 0 and below 1"));
        }
        if self.max_age.is_some() && self.trigger == Trigger::Schedule {
            return Err(Invalid::new(
                "max_age",
                "only applies with an evidence trigger (trigger = \"drift\", \"quality\" or \"any\"); with \"schedule\" every cycle trains",
            ));
        }
        if self
            .labels_topic
            .as_ref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Invalid::new("labels_topic", "must name a topic"));
        }
        Ok(())
    }
}
