//! Accuracy floors on the shipped sample (no services, no ../shared).
//!
//! The sample holds 3,446 real rows with a 7% fraud rate. A forest that learned nothing
//! scores AUPRC ≈ 0.07 here; the floors sit well below what the engine reaches (about 0.83
//! stratified and 0.91 time-ordered with these seeds) and far above chance.

use fraudstream::eval::{SplitKind, ThresholdStrategy};
use fraudstream::forest::{Criterion, TrainParams};
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::schema::{ReadOptions, read_dataset};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn holdout_auprc(split: SplitKind, criterion: Criterion) -> f64 {
    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).unwrap();
    let opts = TrainOptions {
        params: TrainParams {
            criterion,
            ..TrainParams::default()
        },
        split,
        threshold: ThresholdStrategy::MaxF1,
        ..TrainOptions::default()
    };
    let out = train_model(&data, SAMPLE, &opts, &|| {}).unwrap();
    let m = out.model.meta().holdout_metrics.clone().unwrap();
    assert_eq!(m.rows, 689);
    m.auprc.unwrap()
}

#[test]
fn stratified_holdout_clears_the_floor() {
    for c in [Criterion::Gini, Criterion::Entropy] {
        let ap = holdout_auprc(SplitKind::Stratified, c);
        assert!(ap >= 0.75, "{c:?}: AUPRC {ap:.4} below 0.75");
    }
}

#[test]
fn time_ordered_holdout_clears_the_floor() {
    let ap = holdout_auprc(SplitKind::Time, Criterion::Gini);
    assert!(ap >= 0.80, "AUPRC {ap:.4} below 0.80");
}
