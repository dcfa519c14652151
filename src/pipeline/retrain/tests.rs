//! The gate's tests.

use super::gate::*;
use super::*;
use crate::eval::UNWEIGHTED;
use crate::pipeline::sample::Sampler;
use crate::rng::Rng;
use crate::schema::{Dataset, TIME};

fn diff(a: f64, b: f64, low: f64, high: f64) -> ApDifference {
    ApDifference {
        a,
        b,
        difference: a - b,
        low,
        high,
        confidence: 0.95,
        resamples: 1000,
    }
}

#[test]
fn the_gate_compares_with_the_live_model_and_the_floors() {
    let cfg = RetrainConfig {
        tolerance: 0.01,
        min_auprc: 0.5,
        min_recall_at_precision_90: 0.3,
        ..RetrainConfig::default()
    };
    let close = diff(0.80, 0.805, -0.008, 0.01);
    assert!(
        gate(&cfg, Some(0.80), Some(0.6), Some(Some(&close))).is_ok(),
        "within tolerance at the interval's lower bound"
    );
    let unsure = diff(0.81, 0.80, -0.05, 0.07);
    let e = gate(&cfg, Some(0.81), Some(0.6), Some(Some(&unsure))).unwrap_err();
    assert!(
        e.contains("worse"),
        "a better point estimate is not enough: {e}"
    );
    let worse = diff(0.78, 0.80, -0.04, -0.01);
    assert!(gate(&cfg, Some(0.78), Some(0.6), Some(Some(&worse))).is_err());
    assert!(
        gate(&cfg, Some(0.45), Some(0.6), None).is_err(),
        "below the floor"
    );
    assert!(
        gate(&cfg, Some(0.9), Some(0.1), None).is_err(),
        "recall floor"
    );
    assert!(gate(&cfg, None, None, None).is_err(), "cannot judge");
    assert!(
        gate(&cfg, Some(0.9), Some(0.6), Some(None)).is_err(),
        "cannot compare"
    );
    assert!(
        gate(&cfg, Some(0.6), Some(0.4), None).is_ok(),
        "first model"
    );
}

#[test]
fn the_sampler_keeps_every_fraud_and_caps_the_rest() {
    let mut rng = Rng::new(3);
    let mut d = Dataset::default();
    for i in 0..5000 {
        let mut values = [0.0; crate::schema::NUM_FIELDS];
        values[0] = f64::from(i);
        values[1] = rng.unit();
        d.push(crate::schema::Transaction {
            id: format!("r{i}"),
            values,
            label: Some(u8::from(i % 100 == 0)),
            card_id: None,
            event_time: None,
            terminal_id: None,
            derived: Vec::new(),
        });
    }
    let mut s = Sampler::new(Vec::new(), 1000, None, 1);
    s.add(&d.select(&(0..2500).collect::<Vec<_>>()));
    s.add(&d.select(&(2500..5000).collect::<Vec<_>>()));
    assert_eq!(s.read, 5000);
    let sample = s.finish(1000);
    // 4,950 legitimate rows stand behind the 950 kept; every fraud is kept.
    let w = sample.weights.unwrap();
    assert!((w[0] - 4950.0 / 950.0).abs() < 1e-9 && w[1] == 1.0, "{w:?}");
    let out = sample.data;
    let labels = out.labels().unwrap();
    assert_eq!(out.len(), 1000);
    assert_eq!(
        labels.iter().filter(|&&l| l == 1).count(),
        50,
        "every fraud kept"
    );
    // The legitimate sample spans both files.
    let times = &out.columns[TIME];
    assert!(times.iter().any(|&t| t < 2500.0) && times.iter().any(|&t| t >= 2500.0));
}

/// `n` rows in time order, every `fraud_every`-th a fraud (the first among them).
fn labelled(n: u32, fraud_every: u32) -> Dataset {
    let mut d = Dataset::default();
    for i in 0..n {
        let mut values = [0.0; crate::schema::NUM_FIELDS];
        values[0] = f64::from(i);
        d.push(crate::schema::Transaction {
            id: format!("r{i}"),
            values,
            label: Some(u8::from(i % fraud_every == 0)),
            ..crate::schema::Transaction::default()
        });
    }
    d
}

#[test]
fn the_sample_never_holds_more_than_the_budget_and_stays_uniform() {
    // 40,000 rows, every 10th a fraud: 4,000 frauds, 36,000 legitimate rows, a budget
    // of 2,000. Frauds arrive all along, each taking a legitimate row's place.
    let mut s = Sampler::new(Vec::new(), 2000, None, 3);
    let d = labelled(40_000, 10);
    for start in (0..40_000).step_by(1000) {
        s.add(&d.select(&(start..start + 1000).collect::<Vec<_>>()));
        let held = s.frauds.kept() + s.legit.kept();
        assert!(held <= 2000, "{held} rows held after {} read", start + 1000);
    }
    let sample = s.finish(2000);
    let labels = sample.data.labels().unwrap();
    let frauds = labels.iter().filter(|&&l| l == 1).count();
    assert_eq!(
        (sample.data.len(), frauds),
        (2000, 1000),
        "half the budget for frauds"
    );
    // The legitimate rows kept are spread evenly over the history's four quarters
    // (250 each expected, a standard deviation of about 14).
    let mut quarters = [0usize; 4];
    for (t, l) in sample.data.columns[TIME].iter().zip(&labels) {
        if *l == 0 {
            quarters[(*t as usize) / 10_000] += 1;
        }
    }
    assert!(
        quarters.iter().all(|&q| (190..=310).contains(&q)),
        "legitimate rows by quarter: {quarters:?}"
    );
    let w = sample.weights.unwrap();
    assert!((w[0] - 36_000.0 / 1000.0).abs() < 1e-9, "{w:?}");
}

#[test]
fn a_fraud_cap_samples_frauds_and_weighs_them() {
    let mut s = Sampler::new(Vec::new(), 500, Some(20), 7);
    s.add(&labelled(4000, 40));
    let sample = s.finish(500);
    let labels = sample.data.labels().unwrap();
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 20);
    assert_eq!(sample.data.len(), 500);
    let w = sample.weights.unwrap();
    assert!((w[1] - 100.0 / 20.0).abs() < 1e-9, "{w:?}");
    assert!((w[0] - 3900.0 / 480.0).abs() < 1e-9, "{w:?}");
}

#[test]
fn frauds_fill_at_most_half_the_budget_by_default() {
    let mut s = Sampler::new(Vec::new(), 500, None, 9);
    s.add(&labelled(4000, 2));
    let sample = s.finish(500);
    let labels = sample.data.labels().unwrap();
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 250);
    assert_eq!(sample.data.len(), 500, "legitimate rows fill the rest");
    let w = sample.weights.unwrap();
    assert!(
        (w[0] - 8.0).abs() < 1e-9 && (w[1] - 8.0).abs() < 1e-9,
        "{w:?}"
    );
}

#[test]
fn sampled_frauds_are_thinned_to_the_history_mix_for_drift() {
    let labels: Vec<u8> = (0..2000).map(|i| u8::from(i % 2 == 0)).collect();
    let rows: Vec<usize> = (0..2000).collect();
    // Legitimate rows stand for 10 each, frauds for 1: a tenth of the frauds stay.
    let kept = evidence::history_mix(&rows, &labels, Weights::Class([10.0, 1.0]), 5);
    let frauds = kept.iter().filter(|&&i| labels[i] == 1).count();
    assert_eq!(kept.len() - frauds, 1000, "every legitimate row");
    assert!((60..140).contains(&frauds), "{frauds}");
    assert_eq!(
        evidence::history_mix(&rows, &labels, Weights::Class(UNWEIGHTED), 5),
        rows
    );
    // Frauds sampled harder than legitimate rows (a fraud cap): every row stays.
    assert_eq!(
        evidence::history_mix(&rows, &labels, Weights::Class([1.0, 4.0]), 5),
        rows
    );
    // Per-row weights: legitimate rows of a thin span (weight 1) are thinned against
    // those of a busy one (weight 10), as frauds are.
    let w: Vec<f64> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                1.0
            } else if i < 1000 {
                10.0
            } else {
                1.0
            }
        })
        .collect();
    let kept = evidence::history_mix(&rows, &labels, Weights::Rows(&w), 5);
    let busy = kept.iter().filter(|&&i| i % 2 == 1 && i < 1000).count();
    let thin = kept.iter().filter(|&&i| i % 2 == 1 && i >= 1000).count();
    assert_eq!(busy, 500, "every row of the heaviest kind");
    assert!(
        (20..90).contains(&thin),
        "a tenth of the thin span's: {thin}"
    );
}
