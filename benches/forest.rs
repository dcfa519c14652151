//! Criterion benches for training and scoring, on Kaggle-shaped data generated in-process
//! (so they run anywhere; `benches/compare.rs` runs the protocol on the real file).

use std::hint::black_box;

use std::time::Instant;

use criterion::{Criterion, criterion_group};
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

/// Scoring with explanations: the fused walk (scores and contributions in one pass)
/// against the previous way (score the block, then walk every row again to explain it).
fn bench_explain(c: &mut Criterion) {
    let (f, x) = forest(50_000, 100);
    let mut g = c.benchmark_group("score_and_explain");
    let block = &x[..FEATURES * 512];
    g.throughput(criterion::Throughput::Elements(512));
    let mut out = vec![0f32; 512];
    let mut contrib = vec![0f32; block.len()];
    g.bench_function("fused_512_rows", |b| {
        b.iter(|| f.predict_explain_into(black_box(block), &mut out, &mut contrib));
    });
    g.bench_function("separate_512_rows", |b| {
        b.iter(|| separate(&f, black_box(block), &mut out));
    });
    let row = &x[..FEATURES];
    let mut one = vec![0f32; FEATURES];
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("fused_single_row", |b| {
        b.iter(|| f.predict_explain_one(black_box(row), &mut one));
    });
    g.finish();
}

/// The walk before fusion: scores for the block, then a second walk per row.
fn separate(f: &Forest, block: &[f32], out: &mut [f32]) -> f32 {
    f.predict_into(block, out);
    let mut sink = 0f32;
    for row in block.chunks_exact(FEATURES) {
        sink += f.top_contributions(row, 3).first().map_or(0.0, |c| c.1);
    }
    sink
}

/// The regression guard `make bench` prints: the fused walk's speed against the walk it
/// replaced, timed here on the same rows (a ratio, so the machine's speed cancels out).
fn report_ratio() {
    let (f, x) = forest(50_000, 100);
    let block = &x[..FEATURES * 512];
    let mut out = vec![0f32; 512];
    let mut contrib = vec![0f32; block.len()];
    let time = |run: &mut dyn FnMut()| {
        for _ in 0..5 {
            run();
        }
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed().as_secs_f64() < 2.0 {
            run();
            n += 1;
        }
        started.elapsed().as_secs_f64() / f64::from(n)
    };
    let fused = time(&mut || f.predict_explain_into(black_box(block), &mut out, &mut contrib));
    let mut out2 = vec![0f32; 512];
    let old = time(&mut || {
        black_box(separate(&f, black_box(block), &mut out2));
    });
    let mut score_only = vec![0f32; 512];
    let plain = time(&mut || f.predict_into(black_box(block), &mut score_only));
    println!(
        "score + explain, 512 rows, 100 trees, one core: fused {:.2} us/row, previous walk {:.2} us/row: {:.1}x faster; score alone {:.2} us/row (explaining adds {:.0}%)",
        fused * 1e6 / 512.0,
        old * 1e6 / 512.0,
        old / fused,
        plain * 1e6 / 512.0,
        (fused / plain - 1.0) * 100.0
    );
}

criterion_group!(benches, bench_train, bench_score, bench_explain);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only when benchmarking (`cargo bench`), not when `cargo test` checks that the
    // benches run.
    if std::env::args().any(|a| a == "--bench") {
        report_ratio();
    }
}
