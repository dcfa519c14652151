//! Quality as the labels arrive: per model version, the verdicts served and flagged, the
//! labelled ones joined with their verdict (precision, recall, and AUPRC over the last
//! [`WINDOW`] labelled verdicts), the share still unlabelled, the newest label's age, and
//! a Page-Hinkley test on the error stream (a verdict that disagrees with its label is
//! an error) that raises a `quality_drop` alert when the error rate rises.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::eval::metrics::average_precision;
use crate::monitor::PageHinkley;

/// Labelled verdicts kept per version for AUPRC.
pub const WINDOW: usize = 20_000;
/// Page-Hinkley: the change too small to care about (a 0.5-point rise in the error rate).
const PH_DELTA: f64 = 0.005;
/// Page-Hinkley: the evidence needed before an alarm.
const PH_LAMBDA: f64 = 50.0;
/// Page-Hinkley: labels before an alarm is possible.
const PH_MIN: u64 = 1_000;
/// Versions tracked (the oldest is forgotten).
const VERSIONS: usize = 8;

/// One version's counts.
#[derive(Debug)]
struct Version {
    verdicts: u64,
    flagged: u64,
    labelled: u64,
    tp: u64,
    fp: u64,
    fn_: u64,
    tn: u64,
    /// The last [`WINDOW`] labelled verdicts: score and label.
    recent: VecDeque<(f32, u8)>,
    newest_label_ms: Option<u64>,
    errors: PageHinkley,
    seen_at: u64,
}

impl Version {
    fn new(seen_at: u64) -> Self {
        Self {
            verdicts: 0,
            flagged: 0,
            labelled: 0,
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            recent: VecDeque::new(),
            newest_label_ms: None,
            errors: PageHinkley::new(PH_DELTA, PH_LAMBDA, PH_MIN),
            seen_at,
        }
    }
}

/// One version's quality, as `GET /v1/monitoring` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionQuality {
    /// The model version.
    pub version: String,
    /// Verdicts it served (in this detector).
    pub verdicts: u64,
    /// Of which flagged as fraud.
    pub flagged: u64,
    /// `flagged / verdicts`.
    pub alert_rate: Option<f64>,
    /// Verdicts joined with their label.
    pub labelled: u64,
    /// The share of its verdicts still without a label.
    pub unlabelled: Option<f64>,
    /// Precision of its verdicts among the labelled ones.
    pub precision: Option<f64>,
    /// Recall.
    pub recall: Option<f64>,
    /// Area under the precision-recall curve of the last labelled verdicts (up to
    /// 20,000).
    pub auprc: Option<f64>,
    /// When the newest label arrived (ms since the epoch).
    pub newest_label_ms: Option<u64>,
    /// The Page-Hinkley statistic of its error stream (an alarm above 50).
    pub error_drift: f64,
}

/// Quality per version.
#[derive(Debug, Default)]
pub struct Quality {
    versions: BTreeMap<String, Version>,
    /// Alarms not yet raised as alerts: version, error rate.
    pub(super) alarms: Vec<(String, f64)>,
    /// Whether a label arrived since the figures were last exported.
    pub(super) changed: bool,
}

impl Quality {
    fn version(&mut self, version: &str, now: u64) -> &mut Version {
        if !self.versions.contains_key(version) {
            if self.versions.len() >= VERSIONS
                && let Some(oldest) = self
                    .versions
                    .iter()
                    .min_by_key(|(_, v)| v.seen_at)
                    .map(|(k, _)| k.clone())
            {
                self.versions.remove(&oldest);
            }
            self.versions.insert(version.to_owned(), Version::new(now));
        }
        let v = self.versions.get_mut(version).expect("inserted above");
        v.seen_at = now;
        v
    }

    /// Verdicts served by `version`: `n`, of which `flagged` fraud.
    pub fn served(&mut self, version: &str, n: u64, flagged: u64, now: u64) {
        let v = self.version(version, now);
        v.verdicts += n;
        v.flagged += flagged;
    }

    /// A verdict of `version` (score, flagged) joined with its label.
    pub fn labelled(&mut self, version: &str, score: f32, flagged: bool, fraud: bool, now: u64) {
        self.changed = true;
        let v = self.version(version, now);
        v.labelled += 1;
        match (flagged, fraud) {
            (true, true) => v.tp += 1,
            (true, false) => v.fp += 1,
            (false, true) => v.fn_ += 1,
            (false, false) => v.tn += 1,
        }
        if v.recent.len() == WINDOW {
            v.recent.pop_front();
        }
        v.recent.push_back((score, u8::from(fraud)));
        v.newest_label_ms = Some(now);
        if v.errors.add(f64::from(u8::from(flagged != fraud))) {
            let rate = (v.fp + v.fn_) as f64 / v.labelled as f64;
            self.alarms.push((version.to_owned(), rate));
        }
    }

    /// The newest version and when its newest label arrived (cheap: no AUPRC).
    #[must_use]
    pub fn newest_label(&self) -> Option<(&str, Option<u64>)> {
        self.versions
            .iter()
            .max_by_key(|(_, v)| v.seen_at)
            .map(|(k, v)| (k.as_str(), v.newest_label_ms))
    }

    /// Every tracked version's quality, newest first.
    #[must_use]
    pub fn report(&self) -> Vec<VersionQuality> {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let mut out: Vec<(u64, VersionQuality)> = self
            .versions
            .iter()
            .map(|(name, v)| {
                let (scores, labels): (Vec<f32>, Vec<u8>) = v.recent.iter().copied().unzip();
                (
                    v.seen_at,
                    VersionQuality {
                        version: name.clone(),
                        verdicts: v.verdicts,
                        flagged: v.flagged,
                        alert_rate: ratio(v.flagged, v.verdicts),
                        labelled: v.labelled,
                        unlabelled: ratio(v.verdicts.saturating_sub(v.labelled), v.verdicts),
                        precision: ratio(v.tp, v.tp + v.fp),
                        recall: ratio(v.tp, v.tp + v.fn_),
                        auprc: average_precision(&scores, &labels),
                        newest_label_ms: v.newest_label_ms,
                        error_drift: v.errors.statistic(),
                    },
                )
            })
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.0));
        out.into_iter().map(|(_, q)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn counts_per_version_and_a_rising_error_rate_raises_an_alarm() {
        let mut q = Quality::default();
        let mut rng = Rng::new(5);
        q.served("v1", 10_000, 200, 1);
        // 2% errors: no alarm.
        for _ in 0..5_000 {
            let fraud = rng.unit() < 0.02;
            let wrong = rng.unit() < 0.02;
            let flagged = fraud != wrong;
            q.labelled("v1", if flagged { 0.9 } else { 0.1 }, flagged, fraud, 2);
        }
        assert!(q.alarms.is_empty());
        let r = &q.report()[0];
        assert_eq!((r.verdicts, r.labelled), (10_000, 5_000));
        assert_eq!(r.unlabelled, Some(0.5));
        assert!(r.precision.is_some() && r.auprc.is_some());
        // Then 30% errors: an alarm, soon.
        let mut at = None;
        for i in 0..3_000 {
            let fraud = rng.unit() < 0.02;
            let flagged = fraud != (rng.unit() < 0.3);
            q.labelled("v1", 0.5, flagged, fraud, 3);
            if at.is_none() && !q.alarms.is_empty() {
                at = Some(i);
            }
        }
        assert!(at.is_some_and(|i| i < 1_000), "{at:?}");
        assert_eq!(q.alarms[0].0, "v1");
    }
}
