//! The gate: which rows neither model trained on, and whether the candidate may serve.

use crate::eval::{ApDifference, split};
use crate::model::Model;
use crate::registry::{HoldoutSet, Manifest};
use crate::schema::{Dataset, TIME};

use super::RetrainConfig;

/// The serving model with what its manifest says about its training rows.
pub(super) struct Live {
    pub(super) model: Model,
    pub(super) manifest: Manifest,
    pub(super) holdout: Option<HoldoutSet>,
}

impl Live {
    /// Whether the model never trained on this row: outside its training window, or one
    /// of the rows it held out. A model that records neither saw, as far as anyone can
    /// tell, every row.
    pub(super) fn unseen(&self, data: &Dataset, i: usize) -> bool {
        self.manifest
            .metadata
            .train_window
            .is_some_and(|w| !w.contains(data.columns[TIME][i]))
            || self
                .holdout
                .as_ref()
                .is_some_and(|h| h.contains_row(data, i))
    }
}

/// Split `data` for the gate: the candidate's training rows, the gate rows (neither model
/// trains on them), both ascending, and how many rows the live model never saw.
pub(super) fn gate_split(
    cfg: &RetrainConfig,
    data: &Dataset,
    labels: &[u8],
    live: Option<&Live>,
) -> (Vec<usize>, Vec<usize>, usize) {
    let times = &data.columns[TIME];
    let Some(live) = live else {
        let (train, test) = split(cfg.holdout, labels, times, cfg.test_fraction, cfg.seed);
        return (train, test, data.len());
    };
    let unseen: Vec<usize> = (0..data.len()).filter(|&i| live.unseen(data, i)).collect();
    let cap = (cfg.test_fraction * data.len() as f64).round() as usize;
    let gate: Vec<usize> = if unseen.len() <= cap {
        unseen.clone()
    } else {
        // The same kind of holdout as without a live model, within the unseen rows.
        let sub_labels: Vec<u8> = unseen.iter().map(|&i| labels[i]).collect();
        let sub_times: Vec<f64> = unseen.iter().map(|&i| times[i]).collect();
        let fraction = cap as f64 / unseen.len() as f64;
        let (_, picked) = split(cfg.holdout, &sub_labels, &sub_times, fraction, cfg.seed);
        let mut g: Vec<usize> = picked.into_iter().map(|k| unseen[k]).collect();
        g.sort_unstable();
        g
    };
    let mut in_gate = vec![false; data.len()];
    for &i in &gate {
        in_gate[i] = true;
    }
    let train = (0..data.len()).filter(|&i| !in_gate[i]).collect();
    (train, gate, unseen.len())
}

/// The quality gate: `Ok(why)` to publish, `Err(why)` to keep the live model.
/// `live` is `None` without a live model, and `Some(None)` when the comparison with it is
/// undefined (no fraud among the gate rows).
pub fn gate(
    cfg: &RetrainConfig,
    candidate_auprc: Option<f64>,
    candidate_recall_at_p90: Option<f64>,
    live: Option<Option<&ApDifference>>,
) -> Result<String, String> {
    let Some(c) = candidate_auprc else {
        return Err("the gate rows have no frauds: the candidate cannot be judged".into());
    };
    if c < cfg.min_auprc {
        return Err(format!(
            "candidate AUPRC {c:.4} is below the floor {:.4}",
            cfg.min_auprc
        ));
    }
    let r = candidate_recall_at_p90.unwrap_or(0.0);
    if r < cfg.min_recall_at_precision_90 {
        return Err(format!(
            "candidate recall at precision 0.90 {r:.4} is below the floor {:.4}",
            cfg.min_recall_at_precision_90
        ));
    }
    match live {
        None => Ok(format!(
            "no live model; candidate AUPRC {c:.4} clears the floors"
        )),
        Some(None) => Err("the live model cannot be compared on the gate rows".into()),
        Some(Some(d)) => {
            let summary = format!(
                "candidate AUPRC {:.4} vs live {:.4} on rows neither trained on: difference {:+.4}, {:.0}% interval [{:+.4}, {:+.4}]",
                d.a,
                d.b,
                d.difference,
                d.confidence * 100.0,
                d.low,
                d.high
            );
            if d.low < -cfg.tolerance {
                Err(format!(
                    "{summary}: the candidate may be worse than the live model by more than the tolerance {:.4}",
                    cfg.tolerance
                ))
            } else {
                Ok(summary)
            }
        }
    }
}
