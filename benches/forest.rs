//! Criterion benches for training and scoring, on Kaggle-shaped data generated in-process
//! (so they run anywhere; `benches/compare.rs` runs the protocol on the real file).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fraudstream::forest::{Forest, TrainParams, train};
use fraudstream::rng::Rng;

const FEATURES: usize = 29;

/// Rows with a rare positive class whose probability rises along a few feature directions,
/// roughly like the real data (0.5% positives).
fn data(rows: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(rows * FEATURES);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let fraud = rng.unit() < 0.005;
        for f in 0..FEATURES {
            let g = (0..4).map(|_| rng.unit()).sum::<f64>() - 2.0;
            let shift = if fraud && f % 5 == 0 { -2.5 } else { 0.0 };
            x.push((g * 1.7 + shift) as f32);
        }
        y.push(u8::from(fraud));
    }
    (x, y)
}

fn forest(rows: usize, trees: usize) -> (Forest, Vec<f32>) {
    let (x, y) = data(rows, 1);
    let p = TrainParams {
        n_trees: trees,
        ..TrainParams::default()
    };
    (train(&x, &y, FEATURES, &p, &|| {}).unwrap().forest, x)
}

fn bench_train(c: &mut Criterion) {
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    let (x, y) = data(50_000, 2);
    let p = TrainParams {
        n_trees: 20,
        ..TrainParams::default()
    };
    g.bench_function("50k_rows_20_trees", |b| {
        b.iter(|| train(black_box(&x), &y, FEATURES, &p, &|| {}).unwrap());
    });
    g.finish();
}

fn bench_score(c: &mut Criterion) {
    let (f, x) = forest(50_000, 100);
    let mut g = c.benchmark_group("score");
    let row = &x[..FEATURES];
    g.bench_function("single_row_100_trees", |b| {
        b.iter(|| f.predict_one(black_box(row)))
    });
    g.bench_function("single_row_top3_100_trees", |b| {
        b.iter(|| f.top_contributions(black_box(row), 3));
    });
    let block = &x[..FEATURES * 10_000];
    g.throughput(criterion::Throughput::Elements(10_000));
    let mut out = vec![0f32; 10_000];
    g.bench_function("batch_10k_rows_one_core", |b| {
        b.iter(|| f.predict_into(black_box(block), &mut out));
    });
    g.bench_function("batch_10k_rows_all_cores", |b| {
        b.iter(|| f.predict_batch(black_box(block)))
    });
    g.finish();
}

criterion_group!(benches, bench_train, bench_score);
criterion_main!(benches);
