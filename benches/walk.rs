//! The forest walks side by side on a real model: the float walk (scores alone, scores
//! with every row's explanations, and scores with the alerting rows' explanations in a
//! second fused pass, `scoring.explain = "alerts"`) and the quantized walk
//! (`forest::Quantized`), one
//! core, the same rows, rounds alternated so that the machine's drift falls on all of
//! them alike. It checks that every design gives the float walk's scores to the bit,
//! then prints CPU time per row and the ratios.
//!
//! `scripts/bench/walk.sh` trains the model on the full Kaggle file (as the embedded
//! bench does: 100 trees, seed 1) and runs this with
//! `FRAUDSTREAM_BENCH_MODEL=model.fsm FRAUDSTREAM_BENCH_DATA=creditcard.csv`. Without
//! them it trains 100 trees on the shipped sample (a smaller model than the real one).

use std::hint::black_box;
use std::time::Instant;

use fraudstream::forest::tree::top_k_into;
use fraudstream::forest::{Forest, Quantized};
use fraudstream::model::Model;
use fraudstream::pipeline::{TrainOptions, train_model};
use fraudstream::schema::{ReadOptions, read_dataset};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
/// Rows per call, as the detector's scoring batches.
const BATCH: usize = 512;
/// Rounds of each design, alternated.
const ROUNDS: usize = 5;

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let data_path = std::env::var("FRAUDSTREAM_BENCH_DATA").unwrap_or_else(|_| SAMPLE.into());
    let (data, _) = read_dataset(&data_path, ReadOptions::default()).expect("bench data");
    let model = match std::env::var("FRAUDSTREAM_BENCH_MODEL") {
        Ok(p) => Model::load(&p).expect("bench model"),
        Err(_) => {
            train_model(&data, &data_path, &TrainOptions::default(), &|| {})
                .expect("training")
                .model
        }
    };
    let x = model.matrix(&data).expect("the model's features");
    let forest: &Forest = model.forest();
    let nf = forest.n_features();
    let rows = x.len() / nf;
    let depth = forest.trees().iter().map(|t| t.depth()).max().unwrap_or(0);
    println!(
        "model: {} trees, {} nodes, max depth {depth}, {nf} features; {rows} rows of {data_path}",
        forest.trees().len(),
        forest.n_nodes(),
    );

    path_lengths(forest, &x);
    single_rows(forest, &x);

    let quantized = Quantized::new(forest);
    let mut reference = vec![0f32; rows];
    forest.predict_into(&x, &mut reference);
    let mut out = vec![0f32; rows];
    let mut contrib = vec![0f32; x.len()];
    if let Some(q) = &quantized {
        q.predict_into(&x, &mut out);
        let differ = reference
            .iter()
            .zip(&out)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "the quantized walk differs on {differ} rows");
    } else {
        println!(
            "quantized: this model does not fit (a feature with > 255 thresholds, or a tree > 65,536 nodes)"
        );
    }

    // Each design over every row, in batches; seconds per row.
    let mut ranks = vec![0u8; BATCH * nf];
    let threshold = model.meta().threshold as f32;
    let (mut explained, mut alert_contrib) = (Vec::new(), Vec::new());
    let alerts = reference.iter().filter(|&&s| s >= threshold).count();
    let mut run = |design: usize, out: &mut [f32], contrib: &mut [f32]| -> f64 {
        let started = Instant::now();
        for (b, xs) in x.chunks(BATCH * nf).enumerate() {
            let n = xs.len() / nf;
            let o = &mut out[b * BATCH..b * BATCH + n];
            match design {
                0 => forest.predict_into(black_box(xs), o),
                1 => forest.predict_explain_into(
                    black_box(xs),
                    o,
                    &mut contrib[b * BATCH * nf..(b * BATCH + n) * nf],
                ),
                2 => forest.predict_explain_above(
                    black_box(xs),
                    o,
                    threshold,
                    &mut explained,
                    &mut alert_contrib,
                ),
                3 => quantized
                    .as_ref()
                    .expect("checked")
                    .predict_into(black_box(xs), o),
                _ => quantized
                    .as_ref()
                    .expect("checked")
                    .ranks_into(black_box(xs), &mut ranks[..xs.len()]),
            }
        }
        started.elapsed().as_secs_f64() / rows as f64
    };
    let names = [
        "float walk",
        "float walk + explanations",
        "float walk + alerts explained",
        "quantized walk",
        "  of which ranking the rows",
    ];
    println!(
        "alerts explained: {alerts} rows at or above the model's threshold {threshold} ({:.3}%)",
        100.0 * alerts as f64 / rows as f64
    );
    let designs = if quantized.is_some() { 5 } else { 3 };
    let mut times = vec![Vec::new(); designs];
    for _ in 0..ROUNDS {
        for (d, t) in times.iter_mut().enumerate() {
            t.push(run(d, &mut out, &mut contrib));
        }
    }
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    for (d, m) in medians.iter().enumerate() {
        println!(
            "{:<30} {:>7.3} us/row  {:>5.2}x the float walk's time  (one core, batches of {BATCH}, median of {ROUNDS})",
            names[d],
            m * 1e6,
            m / medians[0]
        );
    }
}

/// Print the mean number of steps from root to leaf, and what walking rows 16 at a time
/// in lock-step (each group until its longest path ends, checked every 4 steps) costs in
/// steps per row.
fn path_lengths(forest: &Forest, x: &[f32]) {
    let nf = forest.n_features();
    let (mut steps, mut lockstep, mut walks) = (0usize, 0usize, 0usize);
    for tree in forest.trees() {
        let nodes = tree.nodes();
        for group in x.chunks(16 * nf) {
            let mut longest = 0;
            for row in group.chunks_exact(nf) {
                let (mut i, mut n) = (0, 0);
                while !nodes[i].is_leaf() {
                    let node = nodes[i];
                    i = node.left() + usize::from(row[node.feature()] > node.threshold);
                    n += 1;
                }
                steps += n;
                walks += 1;
                longest = longest.max(n);
            }
            lockstep += longest.div_ceil(4).max(1) * 4 * 16;
        }
    }
    println!(
        "steps per walk: {:.2} to a leaf; {:.2} walked in lock-step groups of 16",
        steps as f64 / walks as f64,
        lockstep as f64 / walks as f64
    );
}

/// Print single-row latency percentiles over every 4th row of `x`: the score alone, and
/// the score with its top-3 contributions (the fused walk, as the API serves
/// `?explain=true`), timed call by call, the two alternated row by row.
fn single_rows(forest: &Forest, x: &[f32]) {
    let nf = forest.n_features();
    let (mut plain, mut explained) = (Vec::new(), Vec::new());
    let (mut contrib, mut top) = (vec![0f32; nf], Vec::with_capacity(3));
    for row in x.chunks_exact(nf).step_by(4) {
        let t = Instant::now();
        black_box(forest.predict_one(black_box(row)));
        plain.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(forest.predict_explain_one(black_box(row), &mut contrib));
        top_k_into(&contrib, 3, &mut top);
        black_box(&top);
        explained.push(t.elapsed().as_secs_f64());
    }
    for (name, lat) in [
        ("single row", &mut plain),
        ("single row + top-3", &mut explained),
    ] {
        lat.sort_by(f64::total_cmp);
        let at = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] * 1e6;
        println!(
            "{name:<30} p50 {:.2} us  p99 {:.2} us  ({} rows, one call each)",
            at(0.5),
            at(0.99),
            lat.len()
        );
    }
}
