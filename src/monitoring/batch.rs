//! `fraudstream monitor`: the drift of the rows in the lake, day by day, against a
//! model's reference, counted exactly as the detector counts them (the same bins, the
//! same 32-bit values), so a day's PSI is the stream's for the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::Model;
use crate::monitor::{Bands, DriftSnapshot, LiveDrift, Window};
use crate::sinks::lake::LakeFeatures;

/// The drift of one day (or of every day: `day` is `all`).
#[derive(Debug, Clone, Serialize)]
pub struct DayDrift {
    /// `YYYY-MM-DD` (UTC, by when the row was scored), or `all`.
    pub day: String,
    /// The drift of that day's rows.
    #[serde(flatten)]
    pub drift: DriftSnapshot,
}

/// Counts per day, filled file by file.
pub struct DriftByDay {
    model: Arc<crate::monitor::Reference>,
    version: Arc<str>,
    skip: Vec<String>,
    days: BTreeMap<String, LiveDrift>,
    all: LiveDrift,
}

impl DriftByDay {
    /// Counts against `model`'s reference (`None`: the model records none), not counting
    /// the features in `skip`.
    #[must_use]
    pub fn new(model: &Model, skip: &[String]) -> Option<Self> {
        let reference = model.reference()?.clone();
        let version = model.version_arc();
        let all = LiveDrift::new(
            version.clone(),
            reference.clone(),
            Window::Rows(u64::MAX),
            skip,
            0,
        );
        Some(Self {
            model: reference,
            version,
            skip: skip.to_vec(),
            days: BTreeMap::new(),
            all,
        })
    }

    /// Count a file's rows whose day is within `since..=until` (either bound optional).
    pub fn add(&mut self, rows: &LakeFeatures, since: Option<&str>, until: Option<&str>) {
        let k = self.model.features.len();
        let mut start = 0;
        while start < rows.days.len() {
            let day = &rows.days[start];
            let end = start + rows.days[start..].iter().take_while(|d| *d == day).count();
            let wanted =
                since.is_none_or(|s| day.as_str() >= s) && until.is_none_or(|u| day.as_str() <= u);
            if wanted {
                let (x, scores) = (&rows.x[start * k..end * k], &rows.scores[start..end]);
                let (version, reference, skip) = (&self.version, &self.model, &self.skip);
                self.days
                    .entry(day.clone())
                    .or_insert_with(|| {
                        LiveDrift::new(
                            version.clone(),
                            reference.clone(),
                            Window::Rows(u64::MAX),
                            skip,
                            0,
                        )
                    })
                    .observe(x, scores, 0);
                self.all.observe(x, scores, 0);
            }
            start = end;
        }
    }

    /// Each day's drift, in order, then `all`.
    #[must_use]
    pub fn finish(mut self, bands: &Bands) -> Vec<DayDrift> {
        let mut out: Vec<DayDrift> = self
            .days
            .iter_mut()
            .map(|(day, d)| DayDrift {
                day: day.clone(),
                drift: d.snapshot(bands, 1, 0),
            })
            .collect();
        out.push(DayDrift {
            day: "all".into(),
            drift: self.all.snapshot(bands, 1, 0),
        });
        out
    }
}

/// The quality of one week's verdicts (or of every week: `week` is `all`), from the
/// labels known now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeekQuality {
    /// The week's Monday (`YYYY-MM-DD`, UTC, by when rows were scored), or `all`.
    pub week: String,
    /// Verdicts.
    pub verdicts: u64,
    /// Share of them flagged as fraud.
    pub alert_rate: f64,
    /// Verdicts with a label.
    pub labelled: u64,
    /// Share of verdicts still without a label.
    pub unlabelled: f64,
    /// Frauds among the labelled.
    pub frauds: u64,
    /// Of the labelled verdicts flagged, the share that were fraud.
    pub precision: Option<f64>,
    /// Of the labelled frauds, the share flagged.
    pub recall: Option<f64>,
    /// Area under the precision-recall curve of the labelled verdicts' scores.
    pub auprc: Option<f64>,
}

impl WeekQuality {
    /// As a table shows it: week, verdicts, alert rate, share unlabelled (%), frauds,
    /// precision, recall, AUPRC (`–` where undefined).
    #[must_use]
    pub fn cells(&self) -> [String; 8] {
        let opt = |v: Option<f64>| v.map_or_else(|| "–".into(), |x| format!("{x:.4}"));
        [
            self.week.clone(),
            self.verdicts.to_string(),
            format!("{:.4}", self.alert_rate),
            format!("{:.1}%", 100.0 * self.unlabelled),
            self.frauds.to_string(),
            opt(self.precision),
            opt(self.recall),
            opt(self.auprc),
        ]
    }
}

#[derive(Default)]
struct QualityCounts {
    verdicts: u64,
    flagged: u64,
    flagged_labelled: u64,
    true_positives: u64,
    scores: Vec<f32>,
    labels: Vec<u8>,
}

impl QualityCounts {
    fn add(&mut self, score: f32, fraud: bool, label: Option<u8>) {
        self.verdicts += 1;
        self.flagged += u64::from(fraud);
        if let Some(l) = label {
            self.scores.push(score);
            self.labels.push(l);
            self.flagged_labelled += u64::from(fraud);
            self.true_positives += u64::from(fraud && l == 1);
        }
    }

    fn finish(&self, week: String) -> WeekQuality {
        let labelled = self.labels.len() as u64;
        let frauds = self.labels.iter().filter(|&&l| l == 1).count() as u64;
        let share = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        WeekQuality {
            week,
            verdicts: self.verdicts,
            alert_rate: share(self.flagged, self.verdicts).unwrap_or(0.0),
            labelled,
            unlabelled: share(self.verdicts - labelled, self.verdicts).unwrap_or(0.0),
            frauds,
            precision: share(self.true_positives, self.flagged_labelled),
            recall: share(self.true_positives, frauds),
            auprc: crate::eval::metrics::average_precision(&self.scores, &self.labels),
        }
    }
}

/// Verdict quality per week from the lake's rows and the labels: every detector's rows
/// and every label, so the figures are the fleet's (a detector's own `GET
/// /v1/monitoring` counts only the labels it joined).
#[derive(Default)]
pub struct QualityByWeek {
    weeks: BTreeMap<String, QualityCounts>,
    all: QualityCounts,
}

impl QualityByWeek {
    /// Count a file's rows whose day is within `since..=until`; a row's label is the one
    /// in `labels` for its id, else the `Class` it carried.
    pub fn add(
        &mut self,
        rows: &LakeFeatures,
        labels: &std::collections::HashMap<String, u8>,
        since: Option<&str>,
        until: Option<&str>,
    ) {
        for i in 0..rows.scores.len() {
            let day = rows.days[i].as_str();
            if since.is_some_and(|s| day < s) || until.is_some_and(|u| day > u) {
                continue;
            }
            let label = labels.get(&rows.ids[i]).copied().or(rows.class[i]);
            let (score, fraud) = (rows.scores[i], rows.fraud[i]);
            self.weeks
                .entry(rows.weeks[i].clone())
                .or_default()
                .add(score, fraud, label);
            self.all.add(score, fraud, label);
        }
    }

    /// Each week's quality, in order, then `all`.
    #[must_use]
    pub fn finish(&self) -> Vec<WeekQuality> {
        self.weeks
            .iter()
            .map(|(w, c)| c.finish(w.clone()))
            .chain(std::iter::once(self.all.finish("all".into())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_per_week_counts_labels_from_the_map_then_the_rows() {
        let rows = LakeFeatures {
            scores: vec![0.9, 0.8, 0.1, 0.2, 0.95],
            days: [
                "2026-11-30",
                "2026-11-30",
                "2026-12-01",
                "2026-12-07",
                "2026-12-07",
            ]
            .map(String::from)
            .to_vec(),
            weeks: [
                "2026-11-30",
                "2026-11-30",
                "2026-11-30",
                "2026-12-07",
                "2026-12-07",
            ]
            .map(String::from)
            .to_vec(),
            ids: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            fraud: vec![true, true, false, false, true],
            class: vec![None, None, None, Some(0), None],
            x: Vec::new(),
        };
        let labels = [
            ("a".to_owned(), 1),
            ("b".to_owned(), 0),
            ("c".to_owned(), 1),
        ]
        .into_iter()
        .collect();
        let mut q = QualityByWeek::default();
        q.add(&rows, &labels, None, None);
        let out = q.finish();
        assert_eq!(out.len(), 3);
        let first = &out[0];
        assert_eq!(
            (first.week.as_str(), first.verdicts, first.labelled),
            ("2026-11-30", 3, 3)
        );
        assert_eq!(first.precision, Some(0.5)); // a flagged fraud, b flagged legitimate
        assert_eq!(first.recall, Some(0.5)); // a found, c missed
        let second = &out[1];
        assert_eq!((second.labelled, second.frauds), (1, 0)); // d from its Class; e unlabelled
        assert!((second.unlabelled - 0.5).abs() < 1e-12);
        assert_eq!(second.precision, None); // e was flagged but is unlabelled
        assert_eq!(second.recall, None);
        assert_eq!(out[2].verdicts, 5);
        // A day range leaves the rest out.
        let mut q = QualityByWeek::default();
        q.add(&rows, &labels, Some("2026-12-01"), Some("2026-12-01"));
        assert_eq!(q.finish().last().unwrap().verdicts, 1);
    }
}
