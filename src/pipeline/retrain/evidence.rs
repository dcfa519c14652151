//! The evidence for retraining: the live model judged on the most recent rows it never
//! trained on. Their drift is counted exactly as a detector counts it (the same bins of
//! the live model's reference, the same bands), and their labels give its AUPRC now, to
//! set beside its AUPRC when it was trained. The history holds every detector's rows
//! and every label, so the evidence is the fleet's, not one detector's share.

use std::time::{Duration, SystemTime};

use crate::eval::{Weights, evaluate_weighted};
use crate::model::{DriftedVariable, Evidence, RetrainTrigger};
use crate::monitor::{LiveDrift, Window};
use crate::monitoring::MonitoringConfig;
use crate::pipeline::PipelineError;
use crate::schema::{Dataset, TIME};

use super::RetrainConfig;
use super::config::Trigger;
use super::gate::Live;

/// The rows judged: the most recent `evidence_rows` after the live model's training
/// window (the rows it never saw, when it records none), ascending by `Time`.
fn recent_rows(cfg: &RetrainConfig, data: &Dataset, live: &Live) -> Vec<usize> {
    let times = &data.columns[TIME];
    let mut rows: Vec<usize> = match live.manifest.metadata.train_window {
        Some(w) => (0..data.len()).filter(|&i| times[i] > w.last).collect(),
        None => (0..data.len()).filter(|&i| live.unseen(data, i)).collect(),
    };
    rows.sort_by(|&a, &b| times[a].total_cmp(&times[b]).then(a.cmp(&b)));
    let skip = rows.len().saturating_sub(cfg.evidence_rows);
    rows.drain(..skip);
    rows
}

/// The rows of `rows` whose mix is the history's, when they are a sample whose row `i`
/// stands for `weights.of(i)` rows: each row is kept with its weight's share of the
/// heaviest legitimate row's (frauds, enriched by the sampling, are thinned to their
/// share in the history; with a sample stratified by time, so are the legitimate rows
/// of thin spans), so that drift is measured against the history's distribution, not the
/// sample's. Frauds that weigh more than every legitimate row (a fraud cap sampled
/// harder) are all kept, and no legitimate row is dropped for them. Every row when the
/// legitimate rows weigh the same and no fraud weighs less.
pub(super) fn history_mix(
    rows: &[usize],
    labels: &[u8],
    weights: Weights<'_>,
    seed: u64,
) -> Vec<usize> {
    let w = |i: usize| weights.of(i, labels[i]);
    let top = rows
        .iter()
        .filter(|&&i| labels[i] != 1)
        .map(|&i| w(i))
        .fold(0.0, f64::max);
    if top <= 0.0 || rows.iter().all(|&i| w(i) >= top) {
        return rows.to_vec();
    }
    let mut rng = crate::rng::Rng::derive(seed, 0xd81f);
    rows.iter()
        .copied()
        .filter(|&i| w(i) >= top || rng.unit() < w(i) / top)
        .collect()
}

/// Judge the live model on the recent rows of `data`; `weights` (per class) and
/// `row_weights` (per row of `data`, when the sample has them) say what each row of a
/// sampled history stands for (see [`crate::pipeline::sample`]).
pub(super) fn judge(
    cfg: &RetrainConfig,
    monitoring: &MonitoringConfig,
    data: &Dataset,
    labels: &[u8],
    weights: Option<crate::eval::ClassWeights>,
    row_weights: Option<&[f64]>,
    live: &Live,
) -> Result<Evidence, PipelineError> {
    let rows = recent_rows(cfg, data, live);
    let recent = data.select(&rows);
    let recent_labels: Vec<u8> = rows.iter().map(|&i| labels[i]).collect();
    let recent_w: Option<Vec<f64>> = row_weights.map(|w| rows.iter().map(|&i| w[i]).collect());
    let weights = Weights::rows_or(recent_w.as_deref(), weights);
    let frauds = recent_labels.iter().filter(|&&l| l == 1).count();
    let scores = live.model.score_dataset(&recent)?;
    let mut evidence = Evidence {
        live: live.model.version().to_owned(),
        rows: rows.len(),
        frauds,
        first_time: rows.first().map_or(0.0, |&i| data.columns[TIME][i]),
        last_time: rows.last().map_or(0.0, |&i| data.columns[TIME][i]),
        drifted: Vec::new(),
        max_psi: None,
        // The history's AUPRC, as the live model's recorded one is on a sampled history.
        live_auprc: (frauds > 0)
            .then(|| evaluate_weighted(&scores, &recent_labels, 0.5, weights).auprc)
            .flatten(),
        trained_auprc: live
            .manifest
            .metadata
            .headline_metrics()
            .and_then(|(_, m)| m.auprc),
        drift: false,
        quality: false,
    };
    if let Some(reference) = live.model.reference() {
        let mixed: Vec<usize> = history_mix(
            &(0..rows.len()).collect::<Vec<_>>(),
            &recent_labels,
            weights,
            cfg.seed,
        );
        let (recent, scores): (Dataset, Vec<f32>) = if mixed.len() == rows.len() {
            (recent, scores)
        } else {
            (
                recent.select(&mixed),
                mixed.iter().map(|&i| scores[i]).collect(),
            )
        };
        let x = live.model.matrix(&recent)?;
        let mut drift = LiveDrift::new(
            live.model.version_arc(),
            reference.clone(),
            Window::Rows(u64::MAX),
            &monitoring.skip,
            0,
        );
        drift.observe(&x, &scores, 0);
        let snapshot = drift.snapshot(&monitoring.bands(), monitoring.min_rows, 0);
        let ranked = snapshot.ranked();
        evidence.max_psi = ranked.first().map(|v| v.psi);
        let band = monitoring.alert_state();
        evidence.drifted = ranked
            .into_iter()
            .filter(|v| v.state.is_some_and(|s| s >= band))
            .map(|v| DriftedVariable {
                name: v.name.clone(),
                psi: v.psi,
            })
            .collect();
        evidence.drift = !evidence.drifted.is_empty();
    }
    evidence.quality = frauds >= cfg.min_gate_frauds
        && matches!(
            (evidence.trained_auprc, evidence.live_auprc),
            (Some(then), Some(now)) if then - now >= cfg.quality_drop
        );
    Ok(evidence)
}

/// Whether an evidence trigger must wait: the time left of the cool-down after the
/// later of the live version's training and this process's last training cycle.
pub(super) fn cooling_down(
    cfg: &RetrainConfig,
    live_created_at: Option<&str>,
    last_trained: Option<SystemTime>,
    now: SystemTime,
) -> Option<Duration> {
    let trained_at = live_created_at.and_then(|c| humantime::parse_rfc3339_weak(c).ok());
    let since = [trained_at, last_trained].into_iter().flatten().max()?;
    let ends = since + cfg.cooldown;
    ends.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// Whether the live version is older than `retrain.max_age`.
fn too_old(cfg: &RetrainConfig, live_created_at: Option<&str>, now: SystemTime) -> bool {
    let trained_at = live_created_at.and_then(|c| humantime::parse_rfc3339_weak(c).ok());
    match (cfg.max_age, trained_at) {
        (Some(max), Some(at)) => now.duration_since(at).is_ok_and(|age| age > max),
        _ => false,
    }
}

/// What the evidence says to do under `cfg.trigger`: the trigger that fires (`None`:
/// nothing does), in a record with the reason.
pub(super) fn decide(
    cfg: &RetrainConfig,
    evidence: &Evidence,
    live_created_at: Option<&str>,
    now: SystemTime,
) -> RetrainTrigger {
    let drift = evidence.drift && matches!(cfg.trigger, Trigger::Drift | Trigger::Any);
    let quality = evidence.quality && matches!(cfg.trigger, Trigger::Quality | Trigger::Any);
    let drifted = || {
        evidence
            .drifted
            .iter()
            .take(5)
            .map(|v| format!("{} {:.3}", v.name, v.psi))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fall = || {
        format!(
            "AUPRC {:.4} on {} recent rows with {} frauds, {:.4} when trained",
            evidence.live_auprc.unwrap_or(f64::NAN),
            evidence.rows,
            evidence.frauds,
            evidence.trained_auprc.unwrap_or(f64::NAN)
        )
    };
    let (trigger, reason) = match (drift, quality) {
        (true, true) => (
            "drift+quality",
            format!(
                "drift (PSI {}) and a fall in quality ({})",
                drifted(),
                fall()
            ),
        ),
        (true, false) => (
            "drift",
            format!("{} recent rows drifted: PSI {}", evidence.rows, drifted()),
        ),
        (false, true) => ("quality", format!("quality fell: {}", fall())),
        (false, false) if too_old(cfg, live_created_at, now) => (
            "age",
            format!(
                "no drift or fall in quality, but the live version is older than retrain.max_age ({})",
                humantime::format_duration(cfg.max_age.unwrap_or_default())
            ),
        ),
        (false, false) => (
            "none",
            format!(
                "no evidence for trigger {:?}: {} recent rows, worst PSI {}, AUPRC {} now and {} when trained",
                cfg.trigger.as_str(),
                evidence.rows,
                evidence
                    .max_psi
                    .map_or_else(|| "unknown".into(), |p| format!("{p:.3}")),
                evidence
                    .live_auprc
                    .map_or_else(|| "unknown".into(), |a| format!("{a:.4}")),
                evidence
                    .trained_auprc
                    .map_or_else(|| "unknown".into(), |a| format!("{a:.4}")),
            ),
        ),
    };
    RetrainTrigger {
        trigger: trigger.into(),
        reason,
        evidence: Some(evidence.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(drift: bool, quality: bool) -> Evidence {
        Evidence {
            live: "v1".into(),
            rows: 5_000,
            frauds: 40,
            first_time: 0.0,
            last_time: 1.0,
            drifted: if drift {
                vec![DriftedVariable {
                    name: "Amount".into(),
                    psi: 0.9,
                }]
            } else {
                Vec::new()
            },
            max_psi: Some(if drift { 0.9 } else { 0.02 }),
            live_auprc: Some(if quality { 0.5 } else { 0.8 }),
            trained_auprc: Some(0.8),
            drift,
            quality,
        }
    }

    fn with(trigger: Trigger) -> RetrainConfig {
        RetrainConfig {
            trigger,
            ..RetrainConfig::default()
        }
    }

    #[test]
    fn each_trigger_fires_on_its_own_evidence_only() {
        let now = SystemTime::now();
        let fires = |t: Trigger, d: bool, q: bool| decide(&with(t), &evidence(d, q), None, now);
        assert_eq!(fires(Trigger::Drift, true, false).trigger, "drift");
        assert_eq!(fires(Trigger::Drift, false, true).trigger, "none");
        assert_eq!(fires(Trigger::Quality, true, false).trigger, "none");
        assert_eq!(fires(Trigger::Quality, false, true).trigger, "quality");
        assert_eq!(fires(Trigger::Any, true, true).trigger, "drift+quality");
        assert_eq!(fires(Trigger::Any, false, false).trigger, "none");
        let why = fires(Trigger::Drift, true, false).reason;
        assert!(why.contains("Amount 0.900"), "{why}");
    }

    #[test]
    fn age_fires_only_past_max_age() {
        let now = SystemTime::now();
        let cfg = RetrainConfig {
            max_age: Some(Duration::from_secs(3600)),
            ..with(Trigger::Drift)
        };
        let stamp =
            |ago: u64| humantime::format_rfc3339(now - Duration::from_secs(ago)).to_string();
        let quiet = evidence(false, false);
        assert_eq!(decide(&cfg, &quiet, Some(&stamp(7200)), now).trigger, "age");
        assert_eq!(decide(&cfg, &quiet, Some(&stamp(60)), now).trigger, "none");
    }

    #[test]
    fn the_cool_down_runs_from_the_later_of_training_and_the_last_cycle() {
        let now = SystemTime::now();
        let cfg = RetrainConfig {
            cooldown: Duration::from_secs(3600),
            ..with(Trigger::Drift)
        };
        let stamp =
            |ago: u64| humantime::format_rfc3339(now - Duration::from_secs(ago)).to_string();
        assert!(cooling_down(&cfg, None, None, now).is_none());
        assert!(cooling_down(&cfg, Some(&stamp(7200)), None, now).is_none());
        let left = cooling_down(&cfg, Some(&stamp(600)), None, now).unwrap();
        assert!(left > Duration::from_secs(2900) && left <= Duration::from_secs(3000));
        let last = now - Duration::from_secs(60);
        let left = cooling_down(&cfg, Some(&stamp(7200)), Some(last), now).unwrap();
        assert!(left > Duration::from_secs(3500));
        // A creation time that does not parse counts as unknown, not as now.
        assert!(cooling_down(&cfg, Some("yesterday"), None, now).is_none());
    }
}
