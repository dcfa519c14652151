//! The forest benchmark protocol, on the full Kaggle data, with the `randomforest` crate
//! as a baseline. Prints numbers; asserts nothing about time.
//!
//! Run with `scripts/bench/forest.sh` (which decompresses the data), or
//! `cargo bench --bench compare -- PATH/creditcard.csv`.
//!
//! Protocol: features V1..V28 and Amount; stratified 80/20 split, seed 42; 100 trees.
//! `--quick` measures only fraudstream on seed 42 (no multi-seed mean, no baseline).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::Instant;

use fraudstream::eval::{SplitKind, evaluate, split};
use fraudstream::forest::tree::top_k_into;
use fraudstream::forest::{TrainParams, train};
use fraudstream::schema::{
    DEFAULT_FEATURES, Dataset, ReadOptions, TIME, field_index, read_dataset,
};
use rayon::prelude::*;

/// Rows the `randomforest` baseline trains on: its split search is quadratic in rows.
const BASELINE_ROWS: usize = 2000;
/// Seeds for the multi-seed mean.
const SEEDS: [u64; 5] = [42, 43, 44, 45, 46];
/// Minimum rows scored for the batch throughput figure.
const BATCH_ROWS: usize = 2_000_000;

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reset the kernel's peak-RSS counter, so the next reading covers what follows.
fn reset_hwm() {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("note: cannot reset the peak-RSS counter; the figure includes data loading");
    }
}

/// Rows per second of `run` (which scores `rows` rows): median and range of 5 runs.
fn median_rate(rows: usize, mut run: impl FnMut()) -> (f64, f64, f64) {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            run();
            rows as f64 / t0.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[2], rates[0], rates[4])
}

fn fmt_rate((median, lo, hi): (f64, f64, f64)) -> String {
    format!("{median:.0} (5 runs: {lo:.0}..{hi:.0})")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Split {
    x_train: Vec<f32>,
    y_train: Vec<u8>,
    x_test: Vec<f32>,
    y_test: Vec<u8>,
}

fn make_split(
    data: &Dataset,
    labels: &[u8],
    fields: &[usize],
    kind: SplitKind,
    seed: u64,
) -> Split {
    let (tr, te) = split(kind, labels, &data.columns[TIME], 0.2, seed);
    Split {
        x_train: data.select(&tr).feature_matrix(fields),
        y_train: tr.iter().map(|&i| labels[i]).collect(),
        x_test: data.select(&te).feature_matrix(fields),
        y_test: te.iter().map(|&i| labels[i]).collect(),
    }
}

fn params(seed: u64) -> TrainParams {
    TrainParams {
        n_trees: 100,
        seed,
        ..TrainParams::default()
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: only build-check.
    if !std::env::args().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench --bench compare -- PATH` (skipped under test)");
        return;
    }
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .or_else(|| std::env::var("FRAUDSTREAM_BENCH_DATA").ok())
        .unwrap_or_else(|| "data/creditcard-sample.csv".into());
    let (data, _) = read_dataset(&path, ReadOptions::default()).expect("read benchmark data");
    let labels = data.labels().expect("benchmark data must be labelled");
    let fields: Vec<usize> = DEFAULT_FEATURES
        .iter()
        .map(|f| field_index(f).unwrap())
        .collect();
    let nf = fields.len();
    println!(
        "data: {path} ({} rows, {} frauds); features V1..V28,Amount; {} threads",
        data.len(),
        labels.iter().filter(|&&l| l == 1).count(),
        rayon::current_num_threads()
    );

    // --- fraudstream, stratified seed 42 ---
    let s = make_split(&data, &labels, &fields, SplitKind::Stratified, 42);
    reset_hwm();
    let t0 = Instant::now();
    let trained = train(&s.x_train, &s.y_train, nf, &params(42), &|| {}).unwrap();
    let train_secs = t0.elapsed().as_secs_f64();
    let peak_kib = vm_hwm_kib();
    let forest = &trained.forest;
    let scores = forest.predict_batch(&s.x_test);
    let m = evaluate(&scores, &s.y_test, 0.5);

    // Batch throughput: the test rows repeated to at least BATCH_ROWS rows, all cores.
    let reps = BATCH_ROWS.div_ceil(s.y_test.len());
    let big: Vec<f32> = (0..reps).flat_map(|_| s.x_test.iter().copied()).collect();
    let rows = big.len() / nf;
    black_box(forest.predict_batch(&big[..nf * 10_000]));
    // Repeated runs: the median is the figure; the spread shows how noisy the machine is.
    let batch_rate = median_rate(rows, || {
        let out = black_box(forest.predict_batch(&big));
        assert_eq!(out.len(), rows);
    });
    let mut one = vec![0f32; rows];
    let batch_rate_1 = median_rate(rows, || {
        forest.predict_into(&big, &mut one);
        black_box(&one);
    });

    // Single-row latency, one call per test row.
    let lat = latencies(&s.x_test, nf, |row| {
        black_box(forest.predict_one(black_box(row)));
    });
    // With the top-3 contributions: the fused walk (one traversal gives the score and the
    // path, into reused buffers), as the API and the scorer do it; and the earlier two
    // walks (score, then a separate contributions walk allocating per row) for comparison.
    let mut contrib = vec![0f32; nf];
    let mut top = Vec::with_capacity(3);
    let lat_explain = latencies(&s.x_test, nf, |row| {
        black_box(forest.predict_explain_one(black_box(row), &mut contrib));
        top_k_into(&contrib, 3, &mut top);
        black_box(&top);
    });
    let lat_two_walks = latencies(&s.x_test, nf, |row| {
        black_box(forest.predict_one(black_box(row)));
        black_box(forest.top_contributions(row, 3));
    });

    println!("\n== fraudstream forest (100 trees, stratified 80/20, seed 42) ==");
    println!("train wall seconds        {train_secs:.2}");
    println!("nodes                     {}", forest.n_nodes());
    println!("AUPRC                     {}", fmt(m.auprc));
    println!("ROC-AUC                   {}", fmt(m.roc_auc));
    println!(
        "recall @ precision>=0.90  {}",
        fmt(m.recall_at_precision_90)
    );
    println!("batch rows/s, all cores   {}", fmt_rate(batch_rate));
    println!("batch rows/s, one core    {}", fmt_rate(batch_rate_1));
    println!(
        "single-row score µs       p50 {:.2}  p99 {:.2}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "single-row + top-3 µs     p50 {:.2}  p99 {:.2}  (fused walk)",
        percentile(&lat_explain, 0.5),
        percentile(&lat_explain, 0.99)
    );
    println!(
        "single-row + top-3 µs     p50 {:.2}  p99 {:.2}  (two walks, the earlier path)",
        percentile(&lat_two_walks, 0.5),
        percentile(&lat_two_walks, 0.99)
    );
    if let Some(kib) = peak_kib {
        println!(
            "training peak RSS         {:.0} MiB (whole process, data included)",
            kib as f64 / 1024.0
        );
    }

    if std::env::args().any(|a| a == "--quick") {
        return;
    }

    // --- multi-seed mean, and the time-ordered split ---
    let mut aps = Vec::new();
    let mut secs = Vec::new();
    for seed in SEEDS {
        let s = make_split(&data, &labels, &fields, SplitKind::Stratified, seed);
        let t0 = Instant::now();
        let t = train(&s.x_train, &s.y_train, nf, &params(seed), &|| {}).unwrap();
        secs.push(t0.elapsed().as_secs_f64());
        let ap = evaluate(&t.forest.predict_batch(&s.x_test), &s.y_test, 0.5).auprc;
        aps.push(ap.unwrap_or(f64::NAN));
    }
    let mean = aps.iter().sum::<f64>() / aps.len() as f64;
    let sd = (aps.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (aps.len() - 1) as f64).sqrt();
    println!(
        "stratified AUPRC, seeds 42..46: mean {mean:.4} sd {sd:.4} [{}]; train s mean {:.2}",
        aps.iter()
            .map(|a| format!("{a:.4}"))
            .collect::<Vec<_>>()
            .join(" "),
        secs.iter().sum::<f64>() / secs.len() as f64
    );
    let s_time = make_split(&data, &labels, &fields, SplitKind::Time, 42);
    let t = train(&s_time.x_train, &s_time.y_train, nf, &params(42), &|| {}).unwrap();
    let mt = evaluate(&t.forest.predict_batch(&s_time.x_test), &s_time.y_test, 0.5);
    println!(
        "time-ordered split (last 20% by Time): AUPRC {}  ROC-AUC {}  recall@P>=0.9 {}",
        fmt(mt.auprc),
        fmt(mt.roc_auc),
        fmt(mt.recall_at_precision_90)
    );

    // --- the randomforest crate on a stratified subsample of the same training set ---
    baseline(&s, nf);
}

/// Microseconds per call of `f` on each row of `x`, sorted.
fn latencies(x: &[f32], nf: usize, mut f: impl FnMut(&[f32])) -> Vec<f64> {
    let mut lat: Vec<f64> = x
        .chunks_exact(nf)
        .map(|row| {
            let t = Instant::now();
            f(row);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

fn baseline(s: &Split, nf: usize) {
    use randomforest::RandomForestRegressorOptions;
    use randomforest::criterion::Mse;
    use randomforest::table::TableBuilder;

    let frauds: Vec<usize> = (0..s.y_train.len())
        .filter(|&i| s.y_train[i] == 1)
        .collect();
    let legit: Vec<usize> = (0..s.y_train.len())
        .filter(|&i| s.y_train[i] == 0)
        .collect();
    let k_fraud = ((frauds.len() * BASELINE_ROWS) as f64 / s.y_train.len() as f64).round() as usize;
    let mut rng = fraudstream::rng::Rng::new(42);
    let mut pick = |v: &[usize], k: usize| {
        let mut v = v.to_vec();
        rng.shuffle(&mut v);
        v.truncate(k);
        v
    };
    let mut rows = pick(&frauds, k_fraud.max(1));
    rows.extend(pick(&legit, BASELINE_ROWS - rows.len()));
    let mut tb = TableBuilder::new();
    for &i in &rows {
        let x: Vec<f64> = s.x_train[i * nf..(i + 1) * nf]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        tb.add_row(&x, f64::from(s.y_train[i])).unwrap();
    }
    let table = tb.build().unwrap();
    let t0 = Instant::now();
    let rf = RandomForestRegressorOptions::new()
        .seed(42)
        .trees(NonZeroUsize::new(100).unwrap())
        .parallel()
        .fit(Mse, table);
    let secs = t0.elapsed().as_secs_f64();
    let test: Vec<Vec<f64>> = s
        .x_test
        .chunks_exact(nf)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let t0 = Instant::now();
    let scores: Vec<f32> = test.par_iter().map(|r| rf.predict(r) as f32).collect();
    let rate = test.len() as f64 / t0.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = test
        .iter()
        .take(10_000)
        .map(|r| {
            let t = Instant::now();
            black_box(rf.predict(black_box(r)));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let m = evaluate(&scores, &s.y_test, 0.5);
    println!(
        "\n== randomforest crate 0.2 (100 trees, regression on 0/1, {} training rows incl. {} frauds) ==",
        rows.len(),
        k_fraud
    );
    println!("train wall seconds        {secs:.2}");
    println!("AUPRC                     {}", fmt(m.auprc));
    println!("ROC-AUC                   {}", fmt(m.roc_auc));
    println!(
        "recall @ precision>=0.90  {}",
        fmt(m.recall_at_precision_90)
    );
    println!("batch rows/s, all cores   {rate:.0}");
    println!(
        "single-row score µs       p50 {:.2}  p99 {:.2}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}
