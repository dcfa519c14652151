//! The tree walk's tests.

use super::*;

/// x0 <= 1 ? (x1 <= 0 ? 0.0 : 0.5) : 1.0
fn small_forest() -> Forest {
    let t = Tree::new(
        vec![
            Node::split(0, 1.0, 1),
            Node::split(1, 0.0, 3),
            Node::leaf(1.0),
            Node::leaf(0.0),
            Node::leaf(0.5),
        ],
        vec![0.4, 0.25, 1.0, 0.0, 0.5],
    );
    let stump = Tree::new(vec![Node::leaf(0.2)], vec![0.2]);
    Forest::new(2, vec![t, stump]).unwrap()
}

#[test]
fn node_packing() {
    let n = Node::split(200, 1.5, 123_456);
    assert_eq!(n.feature(), 200);
    assert_eq!(n.left(), 123_456);
    assert!(!n.is_leaf());
    assert!(Node::leaf(0.3).is_leaf());
}

#[test]
fn single_row_and_batch_agree() {
    let f = small_forest();
    let rows = [[1.0, 0.0], [1.0, 0.5], [2.0, -4.0]];
    let want = [0.1, 0.35, 0.6];
    for (r, w) in rows.iter().zip(want) {
        assert!((f.predict_one(r) - w).abs() < 1e-6);
    }
    let flat: Vec<f32> = (0..300).flat_map(|i| rows[i % 3]).collect();
    let batch = f.predict_batch(&flat);
    for (i, s) in batch.iter().enumerate() {
        assert!((s - want[i % 3]).abs() < 1e-6);
    }
}

#[test]
fn contributions_sum_to_score() {
    let f = small_forest();
    for row in [[1.0, 0.0], [1.0, 0.5], [2.0, -4.0]] {
        let (bias, c) = f.contributions(&row);
        let total = bias + c.iter().sum::<f32>();
        assert!((total - f.predict_one(&row)).abs() < 1e-6);
    }
    // x = (2, -4): tree 1 goes root(0.4) -> leaf 1.0: feature 0 gains 0.6 / 2 trees.
    let top = f.top_contributions(&[2.0, -4.0], 5);
    assert_eq!(top, vec![(0, 0.3)]);
    assert_eq!(f.trees()[0].depth(), 2);
}

#[test]
fn the_fused_walk_gives_the_same_scores_and_contributions() {
    let f = small_forest();
    let rows: Vec<[f32; 2]> = (0..300)
        .map(|i| [(i % 7) as f32 * 0.4, (i % 5) as f32 * 0.3 - 0.6])
        .collect();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut scores = vec![0f32; rows.len()];
    let mut contrib = vec![9f32; flat.len()];
    f.predict_explain_into(&flat, &mut scores, &mut contrib);
    let mut one = [0f32; 2];
    for (i, r) in rows.iter().enumerate() {
        assert!((scores[i] - f.predict_one(r)).abs() < 1e-6);
        assert!((f.predict_explain_one(r, &mut one) - scores[i]).abs() < 1e-6);
        assert!(
            (one[0] - contrib[i * 2]).abs() < 1e-6 && (one[1] - contrib[i * 2 + 1]).abs() < 1e-6
        );
        let (bias, c) = f.contributions(r);
        assert!((bias - f.bias()).abs() < 1e-6);
        for (a, b) in c.iter().zip(&contrib[i * 2..i * 2 + 2]) {
            assert!(
                (a - b).abs() < 1e-6,
                "row {i}: {c:?} vs {:?}",
                &contrib[i * 2..]
            );
        }
    }
}

#[test]
fn top_k_keeps_the_largest_magnitudes_in_order() {
    let mut top = Vec::new();
    top_k_into(&[0.1, -0.5, 0.0, 0.5, 0.2, -0.05], 3, &mut top);
    assert_eq!(top, vec![(1, -0.5), (3, 0.5), (4, 0.2)]);
    top_k_into(&[0.0, 0.0], 3, &mut top);
    assert!(top.is_empty());
    top_k_into(&[0.3, 0.1], 0, &mut top);
    assert!(top.is_empty());
}

#[test]
fn validation_rejects_bad_structure() {
    let bad_child = Tree::new(
        vec![Node::split(0, 1.0, 5), Node::leaf(0.0)],
        vec![0.0, 0.0],
    );
    assert!(matches!(
        Forest::new(1, vec![bad_child]),
        Err(TreeError::Child { .. })
    ));
    let cycle = Tree::new(
        vec![
            Node::split(0, 1.0, 1),
            Node::split(0, 1.0, 1),
            Node::leaf(0.0),
        ],
        vec![0.0; 3],
    );
    assert!(matches!(
        Forest::new(1, vec![cycle]),
        Err(TreeError::Child { .. })
    ));
    let bad_feature = Tree::new(
        vec![Node::split(3, 1.0, 1), Node::leaf(0.0), Node::leaf(1.0)],
        vec![0.0; 3],
    );
    assert!(matches!(
        Forest::new(2, vec![bad_feature]),
        Err(TreeError::Feature { .. })
    ));
    let bad_leaf = Tree::new(vec![Node::leaf(1.5)], vec![0.5]);
    assert!(matches!(
        Forest::new(1, vec![bad_leaf]),
        Err(TreeError::Value { .. })
    ));
    assert_eq!(Forest::new(1, vec![]), Err(TreeError::NoTrees));
    let stump = Tree::new(vec![Node::leaf(0.2)], vec![0.2]);
    assert_eq!(Forest::new(0, vec![stump]), Err(TreeError::NoFeatures));
}

#[test]
fn explaining_the_rows_above_a_threshold_gives_their_fused_explanations() {
    let mut rng = crate::rng::Rng::new(9);
    let (rows, nf) = (2_000, 10);
    let x: Vec<f32> = (0..rows * nf)
        .map(|_| (rng.unit() * 2.0 - 1.0) as f32)
        .collect();
    let y: Vec<u8> = (0..rows)
        .map(|r| u8::from(x[r * nf] + x[r * nf + 1] > 1.0))
        .collect();
    let f = crate::forest::train(
        &x,
        &y,
        nf,
        &crate::forest::TrainParams {
            n_trees: 20,
            ..crate::forest::TrainParams::default()
        },
        &|| {},
    )
    .unwrap()
    .forest;
    let mut all = vec![0f32; rows];
    let mut all_contrib = vec![0f32; x.len()];
    f.predict_explain_into(&x, &mut all, &mut all_contrib);
    let (mut scores, mut explained, mut contrib) = (vec![0f32; rows], Vec::new(), Vec::new());
    f.predict_explain_above(&x, &mut scores, 0.5, &mut explained, &mut contrib);
    let above: Vec<usize> = (0..rows).filter(|&r| all[r] >= 0.5).collect();
    assert!(!above.is_empty() && above.len() < rows / 2);
    assert_eq!(explained, above);
    assert_eq!(contrib.len(), above.len() * nf);
    for (k, &r) in above.iter().enumerate() {
        assert_eq!(
            &contrib[k * nf..(k + 1) * nf],
            &all_contrib[r * nf..(r + 1) * nf],
            "row {r}"
        );
    }
    for (a, b) in all.iter().zip(&scores) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    // Nothing above: nothing explained.
    f.predict_explain_above(&x, &mut scores, 2.0, &mut explained, &mut contrib);
    assert!(explained.is_empty() && contrib.is_empty());
}
