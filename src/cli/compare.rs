//! `fraudstream model compare --shadow`: the serving and the shadow model on the same
//! live rows, read back from the lake. Without labels it reports how often they agree;
//! with labels (rows whose `Class` is known), both models' metrics and the difference of
//! their AUPRCs with a paired bootstrap interval.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::print::table;
use crate::eval::{ApDifference, Metrics, ap_difference, evaluate};
use crate::sinks::lake::{LakeScore, read_scores};

/// `model compare` arguments.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Compare the serving model with the shadow model on the rows both scored (the
    /// only comparison there is, for now; required so the command says what it does).
    #[arg(long, required = true)]
    shadow: bool,
    /// The lake: a directory or prefix ending in `/` (local, `s3://`, `hdfs://`).
    /// Default: `lake.location` of `--config`.
    #[arg(long)]
    lake: Option<String>,
    /// Configuration file (`lake.location`, S3 access).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Bootstrap resamples for the interval.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Print one JSON object per pair of versions.
    #[arg(long)]
    json: bool,
}

/// One (serving, shadow) pair of versions.
#[derive(Debug, Serialize)]
struct Pair {
    serving: String,
    shadow: String,
    rows: usize,
    agreement: f64,
    serving_flagged: usize,
    shadow_flagged: usize,
    labelled: usize,
    frauds: usize,
    serving_metrics: Option<Metrics>,
    shadow_metrics: Option<Metrics>,
    /// AUPRC(shadow) − AUPRC(serving) on the labelled rows.
    difference: Option<ApDifference>,
}

fn pair(serving: String, shadow: String, rows: &[LakeScore], resamples: usize) -> Pair {
    let views: Vec<_> = rows
        .iter()
        .filter_map(|r| r.shadow.as_ref().map(|s| (r, s)))
        .collect();
    let agree = views.iter().filter(|(r, s)| r.fraud == s.fraud).count();
    let labelled: Vec<_> = views
        .iter()
        .filter_map(|(r, s)| r.label.map(|l| (r.score, s.score, l)))
        .collect();
    let labels: Vec<u8> = labelled.iter().map(|x| x.2).collect();
    let frauds = labels.iter().filter(|&&l| l == 1).count();
    let a: Vec<f32> = labelled.iter().map(|x| x.0).collect();
    let b: Vec<f32> = labelled.iter().map(|x| x.1).collect();
    // Metrics at each model's own verdicts: its threshold is the lowest score it flagged.
    let metrics = |scores: &[f32], flagged: &dyn Fn(usize) -> bool| {
        let threshold = (0..scores.len())
            .filter(|&i| flagged(i))
            .map(|i| f64::from(scores[i]))
            .fold(f64::INFINITY, f64::min);
        (!labels.is_empty()).then(|| evaluate(scores, &labels, threshold))
    };
    let labelled_views: Vec<_> = views.iter().filter(|(r, _)| r.label.is_some()).collect();
    Pair {
        rows: views.len(),
        agreement: if views.is_empty() {
            0.0
        } else {
            agree as f64 / views.len() as f64
        },
        serving_flagged: views.iter().filter(|(r, _)| r.fraud).count(),
        shadow_flagged: views.iter().filter(|(_, s)| s.fraud).count(),
        labelled: labels.len(),
        frauds,
        serving_metrics: metrics(&a, &|i| labelled_views[i].0.fraud),
        shadow_metrics: metrics(&b, &|i| labelled_views[i].1.fraud),
        difference: ap_difference(&b, &a, &labels, resamples, 0.95, 42),
        serving,
        shadow,
    }
}

/// Run `model compare`.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.shadow, "say what to compare: --shadow");
    let (location, rows) = super::with_lake_files(
        args.config.as_deref(),
        args.lake.as_deref(),
        |_, location, store, keys| async move {
            let mut rows = Vec::new();
            for key in keys {
                let blob = store.get(&key).await?;
                rows.extend(
                    read_scores(blob.data).map_err(|e| anyhow::anyhow!("{location}{key}: {e}"))?,
                );
            }
            anyhow::Ok((location, rows))
        },
    )?;
    let mut by_pair: BTreeMap<(String, String), Vec<LakeScore>> = BTreeMap::new();
    let total = rows.len();
    for r in rows {
        if let Some(s) = &r.shadow {
            by_pair
                .entry((r.model_version.clone(), s.version.to_string()))
                .or_default()
                .push(r);
        }
    }
    anyhow::ensure!(
        !by_pair.is_empty(),
        "{location}: none of its {total} rows has a shadow score (is models.shadow set?)"
    );
    for ((serving, shadow), rows) in by_pair {
        let p = pair(serving, shadow, &rows, args.resamples);
        if args.json {
            println!("{}", serde_json::to_string(&p)?);
            continue;
        }
        let m = |x: &Option<Metrics>, f: &dyn Fn(&Metrics) -> Option<f64>| {
            x.as_ref()
                .and_then(f)
                .map_or_else(|| "-".into(), |v| format!("{v:.4}"))
        };
        let diff = p.difference.as_ref().map_or_else(
            || "- (no labelled fraud)".into(),
            |d| {
                format!(
                    "{:+.4} (95% interval {:+.4} to {:+.4})",
                    d.difference, d.low, d.high
                )
            },
        );
        table(
            &format!("serving {} vs shadow {}", p.serving, p.shadow),
            &[
                ("rows scored by both", p.rows.to_string()),
                ("verdict agreement", format!("{:.2}%", p.agreement * 100.0)),
                (
                    "flagged (serving / shadow)",
                    format!("{} / {}", p.serving_flagged, p.shadow_flagged),
                ),
                (
                    "labelled rows / frauds",
                    format!("{} / {}", p.labelled, p.frauds),
                ),
                (
                    "AUPRC (serving / shadow)",
                    format!(
                        "{} / {}",
                        m(&p.serving_metrics, &|x| x.auprc),
                        m(&p.shadow_metrics, &|x| x.auprc)
                    ),
                ),
                (
                    "precision at verdicts (serving / shadow)",
                    format!(
                        "{} / {}",
                        m(&p.serving_metrics, &|x| Some(x.precision)),
                        m(&p.shadow_metrics, &|x| Some(x.precision))
                    ),
                ),
                (
                    "recall at verdicts (serving / shadow)",
                    format!(
                        "{} / {}",
                        m(&p.serving_metrics, &|x| Some(x.recall)),
                        m(&p.shadow_metrics, &|x| Some(x.recall))
                    ),
                ),
                ("AUPRC shadow - serving", diff),
            ],
        );
    }
    Ok(())
}
