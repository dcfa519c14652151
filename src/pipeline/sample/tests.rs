//! The sampler stratified by time: fair shares, uniform rows within a span, and weights
//! under which the threshold and the metrics are the history's.

use super::*;
use crate::eval::{ThresholdStrategy, UNWEIGHTED, Weights, evaluate, evaluate_weighted};
use crate::pipeline::{RowWeights, TrainOptions, train_model};
use crate::schema::{NUM_FIELDS, field_index};

const WEEK: f64 = 7.0 * 86_400.0;

/// Rows spread evenly over week `week` (ids `w{week}-{i}`), a fraud every
/// `fraud_every` rows (none when 0), `V1` the row's position in its week in [0, 1).
fn week_rows(week: u32, n: u32, fraud_every: u32) -> Dataset {
    let mut d = Dataset::default();
    for i in 0..n {
        let mut values = [0.0; NUM_FIELDS];
        values[TIME] = f64::from(week) * WEEK + f64::from(i) * WEEK / f64::from(n);
        values[1] = f64::from(i) / f64::from(n);
        d.push(Transaction {
            id: format!("w{week}-{i}"),
            values,
            label: Some(u8::from(fraud_every > 0 && i % fraud_every == 0)),
            ..Transaction::default()
        });
    }
    d
}

/// Legitimate rows kept per week, and the weight of each week's legitimate rows.
fn legit_by_week(sample: &Sample) -> (Vec<usize>, Vec<f64>) {
    let (mut kept, mut weight) = (vec![0; 4], vec![0.0; 4]);
    let rows = sample.row_weights.as_deref().expect("per-row weights");
    for (i, t) in sample.data.columns[TIME].iter().enumerate() {
        if sample.data.labels[i] == Some(0) {
            let w = (t / WEEK) as usize;
            kept[w] += 1;
            weight[w] = rows[i];
        }
    }
    (kept, weight)
}

#[test]
fn a_thin_week_keeps_every_row_and_the_busy_weeks_share_the_rest() {
    // Three busy weeks, then a thin one (its labels still coming in); no frauds.
    let mut s = Sampler::new(Vec::new(), 3_300, None, 5).stratified(Some(WEEK));
    for (week, n) in [(0, 20_000), (1, 10_000), (2, 20_000), (3, 300)] {
        s.add(&week_rows(week, n, 0));
    }
    let sample = s.finish(3_300);
    let (kept, weight) = legit_by_week(&sample);
    assert_eq!(kept[3], 300, "the thin week keeps every row: {kept:?}");
    for w in 0..3 {
        assert!(kept[w].abs_diff(1_000) <= 1, "fair shares: {kept:?}");
    }
    assert_eq!(kept.iter().sum::<usize>(), 3_300);
    let spans: Vec<(f64, u64, usize)> = sample
        .spans
        .iter()
        .map(|s| (s.start, s.legit_seen, s.legit_kept))
        .collect();
    assert_eq!(spans.len(), 4);
    assert_eq!(spans[3], (3.0 * WEEK, 300, 300), "{spans:?}");
    assert_eq!(spans[1].1, 10_000);
    // Each row stands for its own week's rows.
    let seen = [20_000.0, 10_000.0, 20_000.0, 300.0];
    for w in 0..4 {
        assert!(
            (weight[w] - seen[w] / kept[w] as f64).abs() < 1e-9,
            "{weight:?}"
        );
    }
    // The class's weight is the history's rows per row kept.
    let class = sample.weights.expect("sampled");
    assert!((class[0] - 50_300.0 / 3_300.0).abs() < 1e-9, "{class:?}");
    // Within a week the rows kept are a uniform sample: spread over the whole week.
    let early = sample.data.columns[TIME]
        .iter()
        .zip(&sample.data.columns[1])
        .filter(|(t, _)| (**t / WEEK) as usize == 0)
        .filter(|(_, p)| **p < 0.5)
        .count();
    assert!(
        (400..600).contains(&early),
        "week 0's first half: {early} of 1000"
    );
}

#[test]
fn the_bookkeeping_holds_through_random_offers_and_shrinks() {
    let mut rng = Rng::new(11);
    let mut strata = Strata::new(Vec::new(), 500);
    let rows = week_rows(0, 20_000, 0);
    for i in 0..rows.len() {
        // Rows of nine buckets in random order, the busiest 14 times the quietest.
        let key = (rng.below(78) as f64).sqrt() as i64;
        let mut tx = rows.row(i);
        tx.values[1] = key as f64;
        strata.offer(key, tx, &mut rng);
        if i % 1_000 == 999 {
            strata.check();
            let cap = strata.cap - 20;
            strata.shrink(cap, &mut rng);
            strata.check();
        }
    }
    let sizes = strata.sizes();
    let most = sizes.iter().map(|s| s.1).max().unwrap();
    assert!(sizes.iter().all(|s| most - s.1 <= 1), "{sizes:?}");
    let (data, weights) = strata.into_rows();
    // Each row is in its own bucket, and weighs what that bucket's rows stand for.
    for (i, w) in weights.iter().enumerate() {
        let (_, kept, seen) = sizes[data.columns[1][i] as usize];
        assert!((w - seen as f64 / kept as f64).abs() < 1e-12);
    }
}

#[test]
fn more_spans_than_the_budget_still_weigh_every_row() {
    // 30 daily spans of 100 frauds each, at most 20 frauds kept: ten spans keep none.
    let mut s = Sampler::new(Vec::new(), 1_000, Some(20), 12).stratified(Some(86_400.0));
    for day in 0..30u32 {
        let mut d = week_rows(0, 100, 1);
        for t in &mut d.columns[TIME] {
            *t = f64::from(day) * 86_400.0 + *t / WEEK * 86_400.0;
        }
        s.add(&d);
    }
    let sample = s.finish(1_000);
    let empty = sample.spans.iter().filter(|s| s.frauds_kept == 0).count();
    assert_eq!(empty, 10, "{:?}", sample.spans);
    let rows = sample.row_weights.as_deref();
    let total: f64 = (0..sample.data.len())
        .filter(|&i| sample.data.labels[i] == Some(1))
        .map(|i| rows.map_or(sample.weights.unwrap()[1], |r| r[i]))
        .sum();
    assert!(
        (total - 3_000.0).abs() < 1e-6,
        "the frauds stand for all 3,000: {total}"
    );
}

#[test]
fn scattered_times_do_not_grow_the_spans_past_the_limit() {
    let mut rng = Rng::new(13);
    let mut strata = Strata::new(Vec::new(), 100);
    strata.max_buckets = 50;
    let rows = week_rows(0, 5_000, 0);
    // Every row in a span of its own, as rows with random times would be.
    for i in 0..rows.len() {
        strata.offer(i as i64 * 7_919, rows.row(i), &mut rng);
    }
    strata.check();
    let sizes = strata.sizes();
    assert_eq!(sizes.len(), 51, "50 spans and the overflow");
    let overflow = sizes.last().unwrap();
    assert_eq!((overflow.0, overflow.2), (OVERFLOW, 5_000 - 50));
    // Every row is still weighed: the class adds up to the rows offered.
    let (_, weights) = strata.into_rows();
    assert!((weights.iter().sum::<f64>() - 5_000.0).abs() < 1e-6);
}

#[test]
fn weeks_read_out_of_order_get_the_same_shares() {
    let mut s = Sampler::new(Vec::new(), 3_300, None, 6).stratified(Some(WEEK));
    // The thin week first, then the busy ones interleaved in chunks.
    s.add(&week_rows(3, 300, 0));
    let weeks: Vec<Dataset> = [(0, 20_000), (1, 10_000), (2, 20_000)]
        .into_iter()
        .map(|(w, n)| week_rows(w, n, 0))
        .collect();
    for chunk in 0..10 {
        for d in &weeks {
            let per = d.len() / 10;
            s.add(&d.select(&(chunk * per..(chunk + 1) * per).collect::<Vec<_>>()));
        }
    }
    let (kept, _) = legit_by_week(&s.finish(3_300));
    assert_eq!(kept[3], 300, "{kept:?}");
    for w in 0..3 {
        assert!(kept[w].abs_diff(1_000) <= 1, "{kept:?}");
    }
}

#[test]
fn frauds_are_stratified_too_and_take_their_room_from_the_fullest_week() {
    // A fraud every 10 rows; at most 200 frauds, 1,000 rows in all.
    let mut s = Sampler::new(Vec::new(), 1_000, Some(200), 7).stratified(Some(WEEK));
    for (week, n) in [(0, 5_000), (1, 5_000), (2, 400)] {
        s.add(&week_rows(week, n, 10));
    }
    let sample = s.finish(1_000);
    let mut frauds = [0usize; 3];
    for (t, l) in sample.data.columns[TIME].iter().zip(&sample.data.labels) {
        if *l == Some(1) {
            frauds[(t / WEEK) as usize] += 1;
        }
    }
    assert_eq!(frauds[2], 40, "the thin week's frauds all kept: {frauds:?}");
    assert!(
        frauds[0].abs_diff(80) <= 1 && frauds[1].abs_diff(80) <= 1,
        "{frauds:?}"
    );
    assert_eq!(sample.data.len(), 1_000);
}

#[test]
fn one_span_or_none_gives_class_weights_only() {
    for bucket in [None, Some(100.0 * WEEK)] {
        let mut s = Sampler::new(Vec::new(), 1_000, None, 8).stratified(bucket);
        s.add(&week_rows(0, 5_000, 50));
        s.add(&week_rows(1, 5_000, 50));
        let sample = s.finish(1_000);
        assert!(sample.row_weights.is_none(), "{bucket:?}");
        let w = sample.weights.unwrap();
        assert!((w[0] - 9_800.0 / 800.0).abs() < 1e-9, "{w:?}");
    }
}

#[test]
fn a_window_of_a_stratified_sample_keeps_each_rows_weight() {
    let mut s = Sampler::new(Vec::new(), 2_000, None, 9).stratified(Some(WEEK));
    s.add(&week_rows(0, 10_000, 0));
    s.add(&week_rows(1, 1_000, 0));
    let sample = s.finish(2_000);
    let last: Vec<usize> = (0..sample.data.len())
        .filter(|&i| sample.data.columns[TIME][i] >= WEEK)
        .collect();
    let window = Sample {
        data: sample
            .data
            .select(&(0..sample.data.len()).collect::<Vec<_>>()),
        weights: sample.weights,
        row_weights: sample.row_weights.clone(),
        spans: sample.spans.clone(),
    }
    .select(&last);
    assert_eq!(window.data.len(), 1_000);
    // Every row of the window's week was kept: it stands for itself alone.
    assert_eq!(window.row_weights, None);
    assert_eq!(window.weights, None);
    // A window reaching into the sampled week weighs its rows apart.
    let late: Vec<usize> = (0..sample.data.len())
        .filter(|&i| sample.data.columns[TIME][i] >= WEEK / 2.0)
        .collect();
    let window = sample.select(&late);
    let rows = window.row_weights.expect("per-row weights");
    let sampled = rows.iter().filter(|&&w| w > 1.0).count();
    assert!(
        sampled > 400 && sampled < 600,
        "{sampled} rows of week 0's second half"
    );
    assert!(rows.iter().all(|&w| w == 1.0 || (w - 10.0).abs() < 1e-9));
    let w = window.weights.unwrap()[0];
    assert!((w - (sampled as f64 * 10.0 + 1_000.0) / rows.len() as f64).abs() < 1e-9);
}

/// Kaggle-shaped rows over four weeks, 1% frauds (V14, V17 and V10 shifted down). The
/// last week is thin (`thin` rows against `busy`) and drifted: its legitimate rows look
/// more like frauds (V14 shifted down too), so a precision measured on a sample that
/// over-represents it is wrong unless each row weighs what its week's rows stand for.
fn drifting(busy: usize, thin: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let shifted = ["V14", "V17", "V10"].map(|f| field_index(f).unwrap());
    let mut d = Dataset::default();
    for week in 0..4u32 {
        let n = if week == 3 { thin } else { busy };
        for i in 0..n {
            let fraud = rng.unit() < 0.01;
            let mut values = [0.0; NUM_FIELDS];
            for v in values.iter_mut() {
                *v = rng.normal();
            }
            values[TIME] = f64::from(week) * WEEK + i as f64 * WEEK / n as f64;
            if fraud {
                for &f in &shifted {
                    values[f] -= 1.6;
                }
            } else if week == 3 {
                values[shifted[0]] -= 1.6;
            }
            d.push(Transaction {
                id: format!("d{seed}-{week}-{i}"),
                values,
                label: Some(u8::from(fraud)),
                ..Transaction::default()
            });
        }
    }
    d
}

/// Another draw: FRAUDSTREAM_SAMPLING_SEED=K (default 1).
fn draw() -> u64 {
    std::env::var("FRAUDSTREAM_SAMPLING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn per_row_weights_give_the_historys_precision_where_class_weights_do_not() {
    let k = draw() * 100;
    let history = drifting(30_000, 3_000, k + 21);
    let mut s = Sampler::new(Vec::new(), 12_000, None, k + 22).stratified(Some(WEEK));
    s.add(&history);
    let sample = s.finish(12_000);
    let rows = sample.row_weights.clone().expect("per-row weights");
    let class = sample.weights.expect("sampled");
    // A fixed score: how far V14, V17 and V10 sit below 0.
    let score = |d: &Dataset| -> Vec<f32> {
        let cols = ["V14", "V17", "V10"].map(|f| &d.columns[field_index(f).unwrap()]);
        (0..d.len())
            .map(|i| (-(cols[0][i] + cols[1][i] + cols[2][i]) / 12.0 + 0.5).clamp(0.0, 1.0) as f32)
            .collect()
    };
    let labels = |d: &Dataset| d.labels().unwrap();
    let threshold = 0.75;
    let truth = evaluate(&score(&history), &labels(&history), threshold);
    let (s_scores, s_labels) = (score(&sample.data), labels(&sample.data));
    let per_row = evaluate_weighted(&s_scores, &s_labels, threshold, Weights::Rows(&rows));
    let per_class = evaluate_weighted(&s_scores, &s_labels, threshold, class);
    let unweighted = evaluate_weighted(&s_scores, &s_labels, threshold, UNWEIGHTED);
    println!(
        "precision: history {:.4}, per-row {:.4}, per-class {:.4}, unweighted {:.4}; AUPRC history {:.4}, per-row {:.4}, per-class {:.4}",
        truth.precision,
        per_row.precision,
        per_class.precision,
        unweighted.precision,
        truth.auprc.unwrap(),
        per_row.auprc.unwrap(),
        per_class.auprc.unwrap()
    );
    let rel = |x: f64| (x - truth.precision).abs() / truth.precision;
    assert!(
        rel(per_row.precision) < 0.05,
        "per-row {}",
        per_row.precision
    );
    assert!(
        rel(per_class.precision) > 0.15,
        "per-class {}",
        per_class.precision
    );
    // Average precision weighs the few legitimate rows at the top of the ranking
    // heavily, so the sample's is noisier: 0.017-0.034 off over four draws, where class
    // weights are 0.17-0.19 off.
    let ap_off = |m: &crate::eval::Metrics| (m.auprc.unwrap() - truth.auprc.unwrap()).abs();
    assert!(ap_off(&per_row) < 0.06, "{per_row:?}");
    assert!(ap_off(&per_class) > 0.1, "{per_class:?}");
}

#[test]
fn a_precision_target_chosen_on_a_stratified_sample_holds_on_unsampled_rows() {
    let k = draw() * 100;
    let history = drifting(25_000, 2_500, k + 31);
    let unseen = drifting(25_000, 2_500, k + 32);
    let mut s = Sampler::new(Vec::new(), 12_000, None, k + 33).stratified(Some(WEEK));
    s.add(&history);
    let sample = s.finish(12_000);
    let target = 0.6;
    let opts = |sampling, row_weights| TrainOptions {
        params: crate::forest::TrainParams {
            n_trees: 30,
            seed: 4,
            ..crate::forest::TrainParams::default()
        },
        split: crate::eval::SplitKind::None,
        test_fraction: 0.0,
        threshold: ThresholdStrategy::Precision(target),
        sampling,
        row_weights,
        ..TrainOptions::default()
    };
    let precision_on = |m: &crate::model::Model| {
        let scores = m.score_dataset(&unseen).unwrap();
        evaluate(&scores, &unseen.labels().unwrap(), m.meta().threshold).precision
    };
    let rows = RowWeights(sample.row_weights.clone().unwrap().into());
    let declared = train_model(&sample.data, "s", &opts(sample.weights, Some(rows)), &|| {})
        .unwrap()
        .model;
    let full = train_model(&history, "all", &opts(None, None), &|| {})
        .unwrap()
        .model;
    let class_only = train_model(&sample.data, "s", &opts(sample.weights, None), &|| {})
        .unwrap()
        .model;
    let (got, every, coarse) = (
        precision_on(&declared),
        precision_on(&full),
        precision_on(&class_only),
    );
    println!(
        "precision on unsampled rows (target {target}): stratified sample, per-row weights {got:.3} (threshold {:.4}); class weights only {coarse:.3} (threshold {:.4}); every row {every:.3} (threshold {:.4})",
        declared.meta().threshold,
        class_only.meta().threshold,
        full.meta().threshold
    );
    assert!(got > target - 0.1, "declared: {got}");
    assert!(
        (got - every).abs() < 0.12,
        "declared {got}, every row {every}"
    );
}
