//! Training on a sample of the history (every fraud, a fraction of the legitimate rows,
//! as `retrain.max_rows` keeps) with the sampling declared in `TrainOptions::sampling`:
//! the threshold chosen on the sample for a precision target must give that precision on
//! rows that were never sampled. Without the declaration the same sample's threshold
//! overshoots, since the sample holds ten times fewer legitimate rows per fraud than the
//! stream the model then scores.

use fraudstream_core::eval::{SplitKind, ThresholdStrategy, evaluate};
use fraudstream_core::forest::TrainParams;
use fraudstream_core::rng::Rng;
use fraudstream_core::schema::{AMOUNT, Dataset, NUM_FIELDS, Transaction, field_index};
use fraudstream_core::train::{TrainOptions, train_model};

/// Kaggle-shaped rows: 1% frauds, whose V14, V17 and V10 are shifted down and Amount up;
/// the classes overlap, so precision falls as the threshold does.
fn rows(n: usize, seed: u64) -> Vec<Transaction> {
    let mut rng = Rng::new(seed);
    let shifted = ["V14", "V17", "V10"].map(|f| field_index(f).unwrap());
    (0..n)
        .map(|i| {
            let fraud = rng.unit() < 0.01;
            let mut values = [0.0; NUM_FIELDS];
            for v in values.iter_mut() {
                *v = rng.normal();
            }
            values[0] = i as f64;
            if fraud {
                for &f in &shifted {
                    values[f] -= 1.6;
                }
            }
            values[AMOUNT] = (rng.normal() * 0.8 + if fraud { 4.5 } else { 3.5 }).exp();
            Transaction {
                id: format!("tx-{seed}-{i}"),
                values,
                label: Some(u8::from(fraud)),
                ..Transaction::default()
            }
        })
        .collect()
}

/// Every fraud and one legitimate row in `keep` (a uniform sample, as the retrain's
/// reservoir draws), with the weights that declare it.
fn sample(rows: &[Transaction], keep: usize, seed: u64) -> (Dataset, [f64; 2]) {
    let mut rng = Rng::new(seed);
    let mut d = Dataset::with_derived(0, Vec::new());
    let (mut legit, mut kept) = (0usize, 0usize);
    for tx in rows {
        if tx.label == Some(1) {
            d.push(tx.clone());
        } else {
            legit += 1;
            if rng.below(keep) == 0 {
                kept += 1;
                d.push(tx.clone());
            }
        }
    }
    (d, [legit as f64 / kept as f64, 1.0])
}

fn precision_on(model: &fraudstream_core::model::Model, rows: &[Transaction]) -> f64 {
    let mut d = Dataset::with_derived(0, Vec::new());
    for tx in rows {
        d.push(tx.clone());
    }
    let scores = model.score_dataset(&d).unwrap();
    let labels: Vec<u8> = rows.iter().map(|t| t.label.unwrap()).collect();
    evaluate(&scores, &labels, model.meta().threshold).precision
}

#[test]
fn a_precision_target_chosen_on_a_sample_holds_on_unsampled_rows() {
    // Another draw: FRAUDSTREAM_SAMPLING_SEED=K (default 1).
    let k: u64 = std::env::var("FRAUDSTREAM_SAMPLING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let history = rows(120_000, k * 10 + 1);
    let unseen = rows(60_000, k * 10 + 2);
    let (sampled, weights) = sample(&history, 10, k * 10 + 3);
    assert!(weights[0] > 8.0 && weights[0] < 12.0, "{weights:?}");
    let opts = |sampling| TrainOptions {
        params: TrainParams {
            n_trees: 40,
            seed: 4,
            ..TrainParams::default()
        },
        split: SplitKind::None,
        test_fraction: 0.0,
        threshold: ThresholdStrategy::Precision(0.6),
        sampling,
        ..TrainOptions::default()
    };
    let declared = train_model(&sampled, "sample", &opts(Some(weights)), &|| {}).unwrap();
    let got = precision_on(&declared.model, &unseen);
    // The reference: the same protocol on every row of the history.
    let mut all = Dataset::with_derived(0, Vec::new());
    for tx in &history {
        all.push(tx.clone());
    }
    let full = train_model(&all, "all", &opts(None), &|| {}).unwrap();
    let full_precision = precision_on(&full.model, &unseen);
    // The same sample, undeclared: its threshold is chosen as if legitimate rows were
    // ten times rarer than they are.
    let naive = train_model(&sampled, "sample", &opts(None), &|| {}).unwrap();
    let naive_precision = precision_on(&naive.model, &unseen);
    for (what, m, p) in [
        ("sample, declared", &declared, got),
        ("every row", &full, full_precision),
        ("sample, undeclared", &naive, naive_precision),
    ] {
        println!(
            "{what}: threshold {:.4}, precision {p:.3} on unsampled rows (target 0.6)",
            m.model.meta().threshold
        );
    }
    // Out-of-bag thresholds err on the safe side a little, sample or not (0.65-0.73 on
    // every row over four seeds); the declared sample does as well as every row.
    assert!(got > 0.55, "declared: precision {got}");
    assert!(
        (got - full_precision).abs() < 0.12,
        "declared {got}, every row {full_precision}"
    );
    assert!(
        naive_precision < full_precision - 0.3,
        "undeclared {naive_precision}, every row {full_precision}"
    );
}
