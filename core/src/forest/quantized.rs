//! The quantized walk: the same trees with every threshold replaced by its rank among its
//! feature's distinct thresholds, and every row by its features' ranks, so a node is 4
//! bytes (rank, feature, left child) instead of 8 and a step compares bytes.
//!
//! A tree trained here splits each feature at most at its 254 bin edges, so each
//! feature's distinct thresholds fit in a byte. With `cuts[f]` the sorted distinct
//! thresholds of feature `f` and `rank(x) = #{c in cuts[f] : c < x}`, `x > cuts[f][k]`
//! holds exactly when `rank(x) > k` (NaN ranks 0, and `NaN > t` is false), so every walk
//! reaches the same leaf as the float walk and, summed in the same order, the same
//! score to the bit. A leaf has rank 255, which no row's rank exceeds.
//!
//! It is a second design, measured beside the float walk on the real model
//! (`benches/walk.rs`); models it cannot hold (a feature with more than 255 distinct
//! thresholds, a tree of more than 65,536 nodes) get `None`.

use super::tree::Forest;

/// Independent walks advanced in lock-step (as the float walk).
const LANES: usize = 16;
/// Rows per tree pass.
const BLOCK_ROWS: usize = 128;
/// Lock-step steps between checks for completion.
const STEPS_PER_CHECK: usize = 4;
/// A leaf's rank: above every row's.
const LEAF: u8 = u8::MAX;

/// One node: the threshold's rank, the feature, the left child (the right is `left + 1`;
/// a leaf's left is itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(4))]
struct QNode {
    rank: u8,
    feature: u8,
    left: u16,
}

/// One row's ranks, padded to every feature a node can name.
type QRow = [u8; 256];
/// One lock-step group of rows.
type QGroup = [QRow; LANES];

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<QGroup>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A forest prepared for the quantized walk.
#[derive(Debug, Clone)]
pub struct Quantized {
    n_features: usize,
    n_trees: usize,
    /// Per feature, its distinct split thresholds, ascending, padded to 256 with +inf
    /// (which no value is above), so a rank is eight branch-free halvings.
    cuts: Vec<[f32; 256]>,
    nodes: Vec<QNode>,
    /// Each node's leaf value (0 for splits).
    values: Vec<f32>,
    bases: Vec<usize>,
    /// Tree `t` is padded to `masks[t] + 1` nodes (a power of two).
    masks: Vec<usize>,
}

impl Quantized {
    /// The quantized form of `forest`, or `None` when a feature has more than 255
    /// distinct thresholds or a tree more than 65,536 nodes.
    #[must_use]
    pub fn new(forest: &Forest) -> Option<Self> {
        let nf = forest.n_features();
        let mut cuts = vec![Vec::new(); nf];
        for t in forest.trees() {
            for n in t.nodes.iter().filter(|n| !n.is_leaf()) {
                cuts[n.feature()].push(n.threshold);
            }
        }
        for c in &mut cuts {
            c.sort_by(f32::total_cmp);
            // -0.0 and 0.0 compare equal, and so split alike: one cut.
            c.dedup();
            if c.len() > usize::from(LEAF) {
                return None;
            }
        }
        let (mut nodes, mut values, mut bases, mut masks) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for t in forest.trees() {
            let len = t.nodes.len().max(1).next_power_of_two();
            if len > 1 << 16 {
                return None;
            }
            bases.push(nodes.len());
            masks.push(len - 1);
            for i in 0..len {
                let leaf = QNode {
                    rank: LEAF,
                    feature: 0,
                    left: i as u16,
                };
                match t.nodes.get(i) {
                    Some(n) if !n.is_leaf() => {
                        let f = n.feature();
                        let rank = cuts[f]
                            .binary_search_by(|c| c.total_cmp(&n.threshold))
                            .or_else(|_| {
                                // -0.0 against a kept 0.0 (or the reverse): equal as floats.
                                cuts[f].iter().position(|&c| c == n.threshold).ok_or(())
                            })
                            .ok()?;
                        nodes.push(QNode {
                            rank: rank as u8,
                            feature: f as u8,
                            left: n.left() as u16,
                        });
                        values.push(0.0);
                    }
                    Some(n) => {
                        nodes.push(leaf);
                        values.push(n.threshold);
                    }
                    None => {
                        nodes.push(leaf);
                        values.push(0.0);
                    }
                }
            }
        }
        let cuts = cuts
            .iter()
            .map(|c| {
                let mut padded = [f32::INFINITY; 256];
                padded[..c.len()].copy_from_slice(c);
                padded
            })
            .collect();
        Some(Self {
            n_features: nf,
            n_trees: forest.trees().len(),
            cuts,
            nodes,
            values,
            bases,
            masks,
        })
    }

    /// The ranks of a row-major matrix's rows (what [`Quantized::predict_into`] walks),
    /// `n_features` bytes a row, into `out`: the quantizing step alone, for measuring.
    ///
    /// # Panics
    /// If `out` is not as long as `x`.
    pub fn ranks_into(&self, x: &[f32], out: &mut [u8]) {
        assert_eq!(x.len(), out.len(), "one rank per value");
        let nf = self.n_features;
        let mut q = [0u8; 256];
        for (row, o) in x.chunks_exact(nf).zip(out.chunks_exact_mut(nf)) {
            self.quantize(row, &mut q);
            o.copy_from_slice(&q[..nf]);
        }
    }

    /// The ranks of one row (`x` is `n_features` long) into `q`.
    #[inline]
    fn quantize(&self, x: &[f32], q: &mut QRow) {
        for ((q, &v), cuts) in q.iter_mut().zip(x).zip(&self.cuts) {
            // How many cuts are below `v`: at most 255, as the last slot is +inf.
            let mut at = 0usize;
            for half in [128, 64, 32, 16, 8, 4, 2, 1] {
                at += usize::from(cuts[at + half - 1] < v) * half;
            }
            *q = at as u8;
        }
    }

    /// Score a row-major matrix into `out` on the current thread: the same scores as
    /// [`Forest::predict_into`], to the bit.
    ///
    /// # Panics
    /// If `x.len() != out.len() * n_features`.
    pub fn predict_into(&self, x: &[f32], out: &mut [f32]) {
        let nf = self.n_features;
        assert_eq!(
            x.len(),
            out.len() * nf,
            "matrix shape does not match output"
        );
        let inv = 1.0 / self.n_trees as f32;
        SCRATCH.with_borrow_mut(|xs| {
            let groups = out.len().min(BLOCK_ROWS).div_ceil(LANES);
            if xs.len() < groups {
                xs.resize(groups, [[0; 256]; LANES]);
            }
            for (b, rows) in x.chunks(BLOCK_ROWS * nf).enumerate() {
                let n = rows.len() / nf;
                let groups = n.div_ceil(LANES);
                let mut rows = rows.chunks_exact(nf);
                for lane in xs[..groups].iter_mut().flatten() {
                    match rows.next() {
                        Some(row) => self.quantize(row, lane),
                        None => lane[..nf].fill(0),
                    }
                }
                let mut acc = [0f32; BLOCK_ROWS];
                for t in 0..self.n_trees {
                    let (base, mask) = (self.bases[t], self.masks[t]);
                    let nodes = &self.nodes[base..=base + mask];
                    let values = &self.values[base..=base + mask];
                    for (xg, acc) in xs[..groups].iter().zip(acc.chunks_exact_mut(LANES)) {
                        let leaves = lanes(nodes, values, mask, xg);
                        for (a, v) in acc.iter_mut().zip(leaves) {
                            *a += v;
                        }
                    }
                }
                for (o, a) in out[b * BLOCK_ROWS..b * BLOCK_ROWS + n].iter_mut().zip(&acc) {
                    *o = a * inv;
                }
            }
        });
    }
}

/// [`LANES`] rows through one tree in lock-step; each lane's leaf value.
#[inline(always)]
fn lanes(nodes: &[QNode], values: &[f32], mask: usize, xs: &QGroup) -> [f32; LANES] {
    let (nodes, values) = (&nodes[..=mask], &values[..=mask]);
    let mut idx = [0usize; LANES];
    loop {
        for _ in 0..STEPS_PER_CHECK {
            for j in 0..LANES {
                let n = nodes[idx[j] & mask];
                let go = usize::from(xs[j][usize::from(n.feature)] > n.rank);
                idx[j] = usize::from(n.left) + go;
            }
        }
        if (0..LANES).all(|j| nodes[idx[j] & mask].rank == LEAF) {
            return std::array::from_fn(|j| values[idx[j] & mask]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::{TrainParams, train};
    use crate::rng::Rng;

    #[test]
    fn scores_equal_the_float_walk_to_the_bit() {
        let mut rng = Rng::new(5);
        let (rows, nf) = (3_000, 12);
        let mut x: Vec<f32> = (0..rows * nf)
            .map(|_| (rng.unit() * 4.0 - 2.0) as f32)
            .collect();
        let y: Vec<u8> = (0..rows)
            .map(|r| u8::from(x[r * nf] + x[r * nf + 3] > 1.5 || rng.unit() < 0.02))
            .collect();
        let forest = train(
            &x,
            &y,
            nf,
            &TrainParams {
                n_trees: 25,
                ..TrainParams::default()
            },
            &|| {},
        )
        .unwrap()
        .forest;
        // Edges of the walk: NaN, infinities, exact thresholds, -0.0.
        let t = forest.trees()[0].nodes[0];
        let edges = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            t.threshold,
        ];
        for (i, v) in edges.iter().enumerate() {
            x[i * nf + t.feature()] = *v;
            x[(i + 10) * nf + (i % nf)] = *v;
        }
        let q = Quantized::new(&forest).expect("a trained forest quantizes");
        for n in [rows, 1, 7, 129] {
            let mut a = vec![0f32; n];
            let mut b = vec![0f32; n];
            forest.predict_into(&x[..n * nf], &mut a);
            q.predict_into(&x[..n * nf], &mut b);
            for (r, (a, b)) in a.iter().zip(&b).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "row {r} of {n}: {a} vs {b}");
            }
        }
    }
}
