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
