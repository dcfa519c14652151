//! The trainer's tests.

use super::*;
use crate::forest::MaxFeatures;

fn params(n_trees: usize) -> TrainParams {
    TrainParams {
        n_trees,
        ..TrainParams::default()
    }
}

/// Two features; fraud iff x0 > 5, x1 is noise.
fn threshold_data() -> (Vec<f32>, Vec<u8>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..200 {
        let v = (i % 10) as f32;
        x.extend([v, ((i * 37) % 11) as f32]);
        y.push(u8::from(v > 5.0));
    }
    (x, y)
}

#[test]
fn single_tree_finds_the_exact_threshold() {
    let (x, y) = threshold_data();
    let p = TrainParams {
        n_trees: 1,
        bootstrap: false,
        max_features: MaxFeatures::All,
        ..TrainParams::default()
    };
    let t = train(&x, &y, 2, &p, &|| {}).unwrap();
    let tree = &t.forest.trees()[0];
    assert_eq!(tree.nodes().len(), 3, "one split, two pure leaves");
    let root = tree.nodes()[0];
    assert_eq!(root.feature(), 0);
    assert_eq!(root.threshold, 5.0);
    assert_eq!(t.forest.predict_one(&[5.0, 0.0]), 0.0);
    assert_eq!(t.forest.predict_one(&[6.0, 0.0]), 1.0);
    assert_eq!(t.importances, vec![1.0, 0.0]);
}

#[test]
fn gini_split_on_hand_checked_data() {
    // x: 1 2 3 4 ; y: 0 0 1 0 -> best single split is x <= 2 (left pure {0,0}, right {1,0})
    // Gini decrease for x<=2: 4*(1-(9+1)/16)=1.5 ; minus 0 ; minus 2*(1-(1+1)/4)=1.0 -> 0.5
    // for x<=3: left {0,0,1}: 3*(1-(4+1)/9)=1.333 ; right pure -> 0.167. So x<=2 wins.
    let x = [1.0, 2.0, 3.0, 4.0];
    let y = [0, 0, 1, 0];
    let p = TrainParams {
        n_trees: 1,
        bootstrap: false,
        max_depth: Some(1),
        ..TrainParams::default()
    };
    let t = train(&x, &y, 1, &p, &|| {}).unwrap();
    assert_eq!(t.forest.trees()[0].nodes()[0].threshold, 2.0);
    assert_eq!(t.forest.predict_one(&[3.5]), 0.5);
}

#[test]
fn entropy_and_gini_both_separate() {
    let (x, y) = threshold_data();
    for criterion in [Criterion::Gini, Criterion::Entropy] {
        let p = TrainParams {
            criterion,
            ..params(10)
        };
        let t = train(&x, &y, 2, &p, &|| {}).unwrap();
        assert!(t.forest.predict_one(&[9.0, 1.0]) > 0.9);
        assert!(t.forest.predict_one(&[1.0, 1.0]) < 0.1);
    }
}

#[test]
fn deterministic_for_a_seed() {
    let (x, y) = threshold_data();
    let noisy: Vec<u8> = y
        .iter()
        .enumerate()
        .map(|(i, &l)| l ^ u8::from(i % 7 == 0))
        .collect();
    let a = train(&x, &noisy, 2, &params(8), &|| {}).unwrap();
    let b = train(&x, &noisy, 2, &params(8), &|| {}).unwrap();
    assert_eq!(a.forest, b.forest);
    assert_eq!(a.oob_scores, b.oob_scores);
    let c = train(
        &x,
        &noisy,
        2,
        &TrainParams {
            seed: 7,
            ..params(8)
        },
        &|| {},
    )
    .unwrap();
    assert_ne!(a.forest, c.forest);
}

#[test]
fn subtraction_matches_direct_histograms() {
    // Grow a deep tree on random data; at every node the trainer uses subtracted
    // histograms, so the totals it records must equal a direct count.
    let mut rng = Rng::new(5);
    let n = 2000;
    let x: Vec<f32> = (0..n * 3).map(|_| rng.unit() as f32).collect();
    let y: Vec<u8> = (0..n)
        .map(|i| u8::from(x[i * 3] + x[i * 3 + 1] > 1.0))
        .collect();
    let t = train(&x, &y, 3, &params(3), &|| {}).unwrap();
    // Every training row lands in a leaf whose value is a real fraction; a forest that
    // learned from corrupted histograms would misclassify the clean boundary badly.
    let wrong = (0..n)
        .filter(|&i| (t.forest.predict_one(&x[i * 3..i * 3 + 3]) > 0.5) != (y[i] == 1))
        .count();
    assert!(wrong < n / 50, "{wrong} training rows misclassified");
}

/// Plain recursive-free walk over the public nodes: the reference the fast paths must match
/// to the bit (leaf values added in tree order, times one over the number of trees).
fn reference(forest: &Forest, x: &[f32]) -> f32 {
    let mut sum = 0.0;
    for t in forest.trees() {
        let mut i = 0;
        while !t.nodes()[i].is_leaf() {
            let n = t.nodes()[i];
            i = n.left() + usize::from(x[n.feature()] > n.threshold);
        }
        sum += t.nodes()[i].threshold;
    }
    sum * (1.0 / forest.trees().len() as f32)
}

#[test]
fn fast_paths_match_the_reference_walk() {
    let mut rng = Rng::new(11);
    let nf = 6;
    let n = 3001; // not a multiple of the lane or block width
    let x: Vec<f32> = (0..n * nf)
        .map(|_| (rng.unit() * 4.0 - 2.0) as f32)
        .collect();
    let y: Vec<u8> = (0..n)
        .map(|i| u8::from(x[i * nf] * x[i * nf + 1] + 0.3 * x[i * nf + 2] > 0.5))
        .collect();
    let t = train(&x, &y, nf, &params(13), &|| {}).unwrap();
    let batch = t.forest.predict_batch(&x);
    let mut explained = vec![0f32; n];
    let mut contrib = vec![0f32; n * nf];
    t.forest
        .predict_explain_into(&x, &mut explained, &mut contrib);
    let mut one = vec![0f32; nf];
    for i in 0..n {
        let row = &x[i * nf..(i + 1) * nf];
        let want = reference(&t.forest, row).to_bits();
        assert_eq!(batch[i].to_bits(), want, "batch row {i}");
        assert_eq!(explained[i].to_bits(), want, "explained row {i}");
        assert_eq!(t.forest.predict_one(row).to_bits(), want, "single row {i}");
        let score = t.forest.predict_explain_one(row, &mut one);
        assert_eq!(score.to_bits(), want, "explained single row {i}");
        // The batch walk adds each row's contributions in the reference's order; the
        // one-row walk sums lanes of trees, so only its rounding differs.
        let (_, c) = t.forest.contributions(row);
        for f in 0..nf {
            assert_eq!(
                c[f].to_bits(),
                contrib[i * nf + f].to_bits(),
                "row {i} feature {f}"
            );
            assert!((c[f] - one[f]).abs() < 1e-5, "single row {i} feature {f}");
        }
    }
}

#[test]
fn min_samples_leaf_is_respected() {
    let (x, y) = threshold_data();
    let p = TrainParams {
        n_trees: 1,
        bootstrap: false,
        min_samples_leaf: 150,
        ..TrainParams::default()
    };
    let t = train(&x, &y, 2, &p, &|| {}).unwrap();
    assert_eq!(t.forest.trees()[0].nodes().len(), 1);
}

#[test]
fn oob_scores_cover_most_rows() {
    let (x, y) = threshold_data();
    let t = train(&x, &y, 2, &params(20), &|| {}).unwrap();
    let covered = t.oob_scores.iter().filter(|s| s.is_some()).count();
    assert!(covered > 190, "{covered}");
    let p = TrainParams {
        bootstrap: false,
        ..params(5)
    };
    let t = train(&x, &y, 2, &p, &|| {}).unwrap();
    assert!(t.oob_scores.iter().all(Option::is_none));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let p = params(2);
    assert_eq!(
        train(&[], &[], 1, &p, &|| {}).unwrap_err(),
        TrainError::Empty
    );
    assert!(matches!(
        train(&[1.0, 2.0], &[0, 0], 1, &p, &|| {}),
        Err(TrainError::SingleClass { class: 0, rows: 2 })
    ));
    assert!(matches!(
        train(&[1.0, 2.0], &[0, 1, 1], 1, &p, &|| {}),
        Err(TrainError::Shape { .. })
    ));
    assert!(matches!(
        train(&[1.0, f32::NAN], &[0, 1], 1, &p, &|| {}),
        Err(TrainError::NotFinite { row: 1, .. })
    ));
    assert!(matches!(
        train(&[1.0, 2.0], &[0, 2], 1, &p, &|| {}),
        Err(TrainError::Label { label: 2, row: 1 })
    ));
    let bad = TrainParams { n_trees: 0, ..p };
    assert!(matches!(
        train(&[1.0, 2.0], &[0, 1], 1, &bad, &|| {}),
        Err(TrainError::Param(_))
    ));
}
