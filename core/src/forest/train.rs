//! Histogram-based training.
//!
//! Each tree draws its sample (bootstrap counts, or a subsample without replacement) from
//! its own seeded stream, so results do not depend on thread scheduling. Nodes are grown
//! depth-first. A node's split comes from per-feature class histograms over its bins; only
//! the child with fewer rows has its histogram built from the rows, the other's is the
//! parent's minus it (the subtraction trick), and children that will be leaves get none.

use rayon::prelude::*;

use super::binning::Binner;
use super::params::{ClassWeight, Criterion, ParamError, TrainParams};
use super::tree::{Forest, MAX_FEATURES, MAX_NODES, Node, Tree};
use crate::rng::Rng;

/// Histogram stride: one slot per possible `u8` bin.
const STRIDE: usize = 256;

/// Why training could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    /// No training rows.
    #[error("training data is empty")]
    Empty,
    /// Only one class present: a forest would learn nothing.
    #[error(
        "training data has a single class ({rows} rows, all labelled {class}); it needs both frauds and legitimate transactions"
    )]
    SingleClass {
        /// The class present.
        class: u8,
        /// Number of rows.
        rows: usize,
    },
    /// Inputs of inconsistent shapes.
    #[error("feature matrix has {values} values, not {rows} rows × {features} features")]
    Shape {
        /// Values in the matrix.
        values: usize,
        /// Label count.
        rows: usize,
        /// Feature count.
        features: usize,
    },
    /// Zero features, or more than the model format can address.
    #[error("number of features must be between 1 and {max}, got {got}")]
    FeatureCount {
        /// Features given.
        got: usize,
        /// The maximum supported.
        max: usize,
    },
    /// A label other than 0 or 1.
    #[error("label {label} at row {row} is not 0 or 1")]
    Label {
        /// The label.
        label: u8,
        /// Its row.
        row: usize,
    },
    /// A non-finite feature value.
    #[error("feature {feature} at row {row} is not finite")]
    NotFinite {
        /// Feature index.
        feature: usize,
        /// Row index.
        row: usize,
    },
    /// A hyper-parameter is out of range.
    #[error(transparent)]
    Param(#[from] ParamError),
}

/// The result of training.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The forest.
    pub forest: Forest,
    /// Impurity-based feature importances, summing to 1.
    pub importances: Vec<f64>,
    /// Out-of-bag fraud probability per training row (`None` for rows that were in every
    /// tree's sample, or when every tree saw every row).
    pub oob_scores: Vec<Option<f32>>,
}

/// Train a forest on a row-major `f32` matrix `x` (`y.len()` rows × `n_features`) with 0/1
/// labels `y`. `on_tree` is called once per finished tree (for progress bars).
pub fn train(
    x: &[f32],
    y: &[u8],
    n_features: usize,
    params: &TrainParams,
    on_tree: &(dyn Fn() + Sync),
) -> Result<Trained, TrainError> {
    let prepared = prepare(x, y, n_features, params)?;
    Ok(grow(prepared, y, n_features, params, on_tree))
}

/// [`train`], taking the matrix and freeing it once it is binned: the trees grow from
/// the bins, so the matrix (four bytes a value, against the bins' one) is not held
/// through training.
pub fn train_owned(
    x: Vec<f32>,
    y: &[u8],
    n_features: usize,
    params: &TrainParams,
    on_tree: &(dyn Fn() + Sync),
) -> Result<Trained, TrainError> {
    let prepared = prepare(&x, y, n_features, params)?;
    drop(x);
    Ok(grow(prepared, y, n_features, params, on_tree))
}

/// What the trees grow from: the inputs checked, the bins fitted and the rows binned.
struct Prepared {
    binner: Binner,
    binned: Vec<u8>,
    class_weight: [f64; 2],
}

fn prepare(
    x: &[f32],
    y: &[u8],
    n_features: usize,
    params: &TrainParams,
) -> Result<Prepared, TrainError> {
    params.validate()?;
    let n = y.len();
    if n_features == 0 || n_features > MAX_FEATURES {
        return Err(TrainError::FeatureCount {
            got: n_features,
            max: MAX_FEATURES,
        });
    }
    if x.len() != n * n_features {
        return Err(TrainError::Shape {
            values: x.len(),
            rows: n,
            features: n_features,
        });
    }
    if n == 0 {
        return Err(TrainError::Empty);
    }
    if let Some((row, &label)) = y.iter().enumerate().find(|(_, l)| **l > 1) {
        return Err(TrainError::Label { label, row });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(TrainError::NotFinite {
            feature: i % n_features,
            row: i / n_features,
        });
    }
    let frauds = y.iter().filter(|&&l| l == 1).count();
    if frauds == 0 || frauds == n {
        return Err(TrainError::SingleClass {
            class: u8::from(frauds == n),
            rows: n,
        });
    }
    let class_weight = match params.class_weight {
        ClassWeight::None => [1.0, 1.0],
        ClassWeight::Balanced => [
            n as f64 / (2.0 * (n - frauds) as f64),
            n as f64 / (2.0 * frauds as f64),
        ],
        ClassWeight::Fraud(w) => [1.0, w],
    };

    let binner = Binner::fit(x, n_features, params.max_bins, params.seed);
    let binned = binner.transform(x);
    Ok(Prepared {
        binner,
        binned,
        class_weight,
    })
}

fn grow(
    prepared: Prepared,
    y: &[u8],
    n_features: usize,
    params: &TrainParams,
    on_tree: &(dyn Fn() + Sync),
) -> Trained {
    let Prepared {
        binner,
        binned,
        class_weight,
    } = prepared;
    let n = y.len();
    let ctx = Context {
        binned: &binned,
        y,
        nf: n_features,
        n_bins: (0..n_features).map(|f| binner.n_bins(f)).collect(),
        mtry: params.max_features.resolve(n_features),
        class_weight,
        params,
    };

    type Acc = (Vec<(usize, Tree, Vec<f64>)>, Vec<f64>, Vec<u32>);
    let empty = || -> Acc { (Vec::new(), vec![0.0; n], vec![0; n]) };
    let (mut trees, oob_sum, oob_n) = (0..params.n_trees)
        .into_par_iter()
        .fold(empty, |(mut trees, mut sum, mut cnt), t| {
            let mut b = TreeBuilder::new(&ctx, t);
            b.grow();
            b.add_oob(&mut sum, &mut cnt);
            let tree = b.finish(&binner);
            trees.push((t, tree.0, tree.1));
            on_tree();
            (trees, sum, cnt)
        })
        .reduce(empty, |mut a, b| {
            a.0.extend(b.0);
            for (s, v) in a.1.iter_mut().zip(b.1) {
                *s += v;
            }
            for (c, v) in a.2.iter_mut().zip(b.2) {
                *c += v;
            }
            a
        });
    trees.sort_by_key(|(t, _, _)| *t);

    let mut importances = vec![0.0; n_features];
    for (_, _, imp) in &trees {
        let total: f64 = imp.iter().sum();
        if total > 0.0 {
            for (a, v) in importances.iter_mut().zip(imp) {
                *a += v / total;
            }
        }
    }
    let total: f64 = importances.iter().sum();
    if total > 0.0 {
        importances.iter_mut().for_each(|v| *v /= total);
    }
    let oob_scores = oob_sum
        .iter()
        .zip(&oob_n)
        .map(|(&s, &c)| (c > 0).then(|| (s / f64::from(c)) as f32))
        .collect();
    let forest = Forest::new(n_features, trees.into_iter().map(|(_, t, _)| t).collect())
        .expect("trainer builds valid trees");
    Trained {
        forest,
        importances,
        oob_scores,
    }
}

/// Read-only state shared by every tree.
struct Context<'a> {
    binned: &'a [u8],
    y: &'a [u8],
    nf: usize,
    n_bins: Vec<usize>,
    mtry: usize,
    class_weight: [f64; 2],
    params: &'a TrainParams,
}

/// A node while the tree grows: `left == 0` marks a leaf.
#[derive(Debug, Clone, Copy)]
struct BuildNode {
    feature: u32,
    bin: u8,
    left: u32,
    value: f32,
}

/// Per-class sample counts in one bin (bootstrap multiplicity included).
type Hist = Vec<[u32; 2]>;

/// A node waiting to be processed.
struct Pending {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    totals: [u32; 2],
    hist: Option<Hist>,
}

/// A chosen split.
#[derive(Debug, Clone, Copy)]
struct Split {
    feature: usize,
    bin: u8,
    left: [u32; 2],
    decrease: f64,
}

struct TreeBuilder<'a> {
    ctx: &'a Context<'a>,
    rng: Rng,
    /// Bootstrap multiplicity per row; 0 = out of bag.
    counts: Vec<u32>,
    /// In-sample rows, partitioned so that each node owns a contiguous range.
    rows: Vec<u32>,
    scratch: Vec<u32>,
    nodes: Vec<BuildNode>,
    importance: Vec<f64>,
    features: Vec<usize>,
    pool: Vec<Hist>,
}

impl<'a> TreeBuilder<'a> {
    fn new(ctx: &'a Context<'a>, tree: usize) -> Self {
        let n = ctx.y.len();
        let mut rng = Rng::derive(ctx.params.seed, tree as u64 + 1);
        let m = ((ctx.params.sample_fraction * n as f64).round() as usize).clamp(1, n);
        let mut counts = vec![0u32; n];
        if ctx.params.bootstrap {
            for _ in 0..m {
                counts[rng.below(n)] += 1;
            }
        } else if m == n {
            counts.fill(1);
        } else {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            for i in 0..m {
                let j = i + rng.below(n - i);
                idx.swap(i, j);
                counts[idx[i] as usize] = 1;
            }
        }
        let rows: Vec<u32> = (0..n as u32).filter(|&r| counts[r as usize] > 0).collect();
        Self {
            ctx,
            rng,
            counts,
            scratch: vec![0; rows.len()],
            rows,
            nodes: Vec::new(),
            importance: vec![0.0; ctx.nf],
            features: (0..ctx.nf).collect(),
            pool: Vec::new(),
        }
    }

    fn take_hist(&mut self) -> Hist {
        match self.pool.pop() {
            Some(mut h) => {
                h.fill([0, 0]);
                h
            }
            None => vec![[0, 0]; self.ctx.nf * STRIDE],
        }
    }

    fn build_hist(&mut self, start: usize, end: usize) -> Hist {
        let mut h = self.take_hist();
        let nf = self.ctx.nf;
        for &r in &self.rows[start..end] {
            let r = r as usize;
            let c = self.counts[r];
            let class = usize::from(self.ctx.y[r]);
            let row = &self.ctx.binned[r * nf..(r + 1) * nf];
            for (f, &b) in row.iter().enumerate() {
                h[f * STRIDE + usize::from(b)][class] += c;
            }
        }
        h
    }

    fn value(&self, t: [u32; 2]) -> f32 {
        let w0 = f64::from(t[0]) * self.ctx.class_weight[0];
        let w1 = f64::from(t[1]) * self.ctx.class_weight[1];
        (w1 / (w0 + w1)) as f32
    }

    fn must_be_leaf(&self, t: [u32; 2], depth: usize) -> bool {
        let p = self.ctx.params;
        let n = t[0] + t[1];
        t[0] == 0
            || t[1] == 0
            || p.max_depth.is_some_and(|d| depth >= d)
            || (n as usize) < p.min_samples_split
            || (n as usize) < 2 * p.min_samples_leaf
            || self.nodes.len() + 2 > MAX_NODES
    }

    fn grow(&mut self) {
        let totals = self.rows.iter().fold([0u32; 2], |mut t, &r| {
            t[usize::from(self.ctx.y[r as usize])] += self.counts[r as usize];
            t
        });
        self.nodes.push(BuildNode {
            feature: 0,
            bin: 0,
            left: 0,
            value: self.value(totals),
        });
        let mut stack = vec![Pending {
            node: 0,
            start: 0,
            end: self.rows.len(),
            depth: 0,
            totals,
            hist: None,
        }];
        while let Some(mut p) = stack.pop() {
            if self.must_be_leaf(p.totals, p.depth) {
                if let Some(h) = p.hist {
                    self.pool.push(h);
                }
                continue;
            }
            let hist = match p.hist.take() {
                Some(h) => h,
                None => self.build_hist(p.start, p.end),
            };
            let Some(split) = self.best_split(&hist, p.totals) else {
                self.pool.push(hist);
                continue;
            };
            stack.extend(self.apply_split(&p, split, hist));
        }
    }

    /// Impurity of a node times its weight, and the weight.
    fn weighted_impurity(&self, t: [u32; 2]) -> (f64, f64) {
        let w0 = f64::from(t[0]) * self.ctx.class_weight[0];
        let w1 = f64::from(t[1]) * self.ctx.class_weight[1];
        let w = w0 + w1;
        if w <= 0.0 {
            return (0.0, 0.0);
        }
        let imp = match self.ctx.params.criterion {
            Criterion::Gini => w - (w0 * w0 + w1 * w1) / w,
            Criterion::Entropy => {
                let h = |a: f64| if a > 0.0 { -a * (a / w).ln() } else { 0.0 };
                h(w0) + h(w1)
            }
        };
        (imp, w)
    }

    fn best_split(&mut self, hist: &Hist, totals: [u32; 2]) -> Option<Split> {
        let msl = self.ctx.params.min_samples_leaf as u32;
        let n = totals[0] + totals[1];
        let (parent_imp, _) = self.weighted_impurity(totals);
        let nf = self.ctx.nf;
        let mut best: Option<Split> = None;
        let mut visited = 0;
        // Draw features without replacement until `mtry` non-constant ones have been
        // searched, as scikit-learn does, so constant features do not waste the budget.
        for i in 0..nf {
            if visited >= self.ctx.mtry {
                break;
            }
            let j = i + self.rng.below(nf - i);
            self.features.swap(i, j);
            let f = self.features[i];
            let bins = &hist[f * STRIDE..f * STRIDE + self.ctx.n_bins[f]];
            let non_empty = bins.iter().filter(|c| c[0] + c[1] > 0).take(2).count();
            if non_empty < 2 {
                continue;
            }
            visited += 1;
            let mut left = [0u32; 2];
            for (b, c) in bins[..bins.len() - 1].iter().enumerate() {
                if c[0] + c[1] == 0 {
                    continue;
                }
                left[0] += c[0];
                left[1] += c[1];
                let nl = left[0] + left[1];
                if nl < msl {
                    continue;
                }
                if n - nl < msl {
                    break;
                }
                if nl == n {
                    break;
                }
                let right = [totals[0] - left[0], totals[1] - left[1]];
                let decrease =
                    parent_imp - self.weighted_impurity(left).0 - self.weighted_impurity(right).0;
                if best.is_none_or(|s| decrease > s.decrease) {
                    best = Some(Split {
                        feature: f,
                        bin: b as u8,
                        left,
                        decrease,
                    });
                }
            }
        }
        best
    }

    fn apply_split(&mut self, p: &Pending, s: Split, mut hist: Hist) -> Vec<Pending> {
        let nf = self.ctx.nf;
        let (mut l, mut k) = (p.start, 0);
        for i in p.start..p.end {
            let r = self.rows[i];
            if self.ctx.binned[r as usize * nf + s.feature] <= s.bin {
                self.rows[l] = r;
                l += 1;
            } else {
                self.scratch[k] = r;
                k += 1;
            }
        }
        self.rows[l..p.end].copy_from_slice(&self.scratch[..k]);

        let left_id = self.nodes.len();
        let right_t = [p.totals[0] - s.left[0], p.totals[1] - s.left[1]];
        for t in [s.left, right_t] {
            self.nodes.push(BuildNode {
                feature: 0,
                bin: 0,
                left: 0,
                value: self.value(t),
            });
        }
        let node = &mut self.nodes[p.node];
        node.feature = s.feature as u32;
        node.bin = s.bin;
        node.left = left_id as u32;
        self.importance[s.feature] += s.decrease.max(0.0);

        let depth = p.depth + 1;
        let mut left = Pending {
            node: left_id,
            start: p.start,
            end: l,
            depth,
            totals: s.left,
            hist: None,
        };
        let mut right = Pending {
            node: left_id + 1,
            start: l,
            end: p.end,
            depth,
            totals: right_t,
            hist: None,
        };
        let left_open = !self.must_be_leaf(left.totals, depth);
        let right_open = !self.must_be_leaf(right.totals, depth);
        let left_smaller = l - p.start <= p.end - l;
        let (small, large, small_open, large_open) = if left_smaller {
            (&mut left, &mut right, left_open, right_open)
        } else {
            (&mut right, &mut left, right_open, left_open)
        };
        if large_open {
            let h = self.build_hist(small.start, small.end);
            for (a, b) in hist.iter_mut().zip(&h) {
                a[0] -= b[0];
                a[1] -= b[1];
            }
            large.hist = Some(hist);
            if small_open {
                small.hist = Some(h);
            } else {
                self.pool.push(h);
            }
        } else {
            self.pool.push(hist);
            if small_open {
                small.hist = Some(self.build_hist(small.start, small.end));
            }
        }
        // Right is pushed first so that the left subtree is grown (and laid out) first.
        vec![right, left]
    }

    /// Add this tree's predictions for its out-of-bag rows.
    fn add_oob(&self, sum: &mut [f64], cnt: &mut [u32]) {
        let nf = self.ctx.nf;
        for (r, _) in self.counts.iter().enumerate().filter(|(_, c)| **c == 0) {
            let row = &self.ctx.binned[r * nf..(r + 1) * nf];
            let mut i = 0;
            loop {
                let nd = self.nodes[i];
                if nd.left == 0 {
                    sum[r] += f64::from(nd.value);
                    cnt[r] += 1;
                    break;
                }
                i = nd.left as usize + usize::from(row[nd.feature as usize] > nd.bin);
            }
        }
    }

    /// Convert to the serving representation, with raw thresholds.
    fn finish(self, binner: &Binner) -> (Tree, Vec<f64>) {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                if n.left == 0 {
                    Node::leaf(n.value)
                } else {
                    let f = n.feature as usize;
                    Node::split(f, binner.threshold(f, n.bin), n.left)
                }
            })
            .collect();
        let values = self.nodes.iter().map(|n| n.value).collect();
        (Tree::new(nodes, values), self.importance)
    }
}

#[cfg(test)]
mod tests;
