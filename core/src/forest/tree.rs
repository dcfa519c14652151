//! The serving representation: flat arrays of 8-byte nodes.
//!
//! A node is a raw `f32` threshold plus one `u32`: the feature index in the top 8 bits and
//! the left child's index in the low 24. The right child is always `left + 1`, so a step
//! is `i = left + (x[f] > threshold)`, with no branch on the direction. A leaf has left
//! index 0 (the root is never a child) and keeps its fraud probability in `threshold`.
//! Children always come after their parent, which the loader checks, so every walk ends.

use rayon::prelude::*;

/// Maximum number of features a model can use (8 bits in a node).
pub const MAX_FEATURES: usize = 255;
/// Maximum nodes per tree (24-bit child index).
pub const MAX_NODES: usize = 1 << 24;

const CHILD_MASK: u32 = (1 << 24) - 1;

/// Rows scored together per tree pass: enough to amortise loading a tree's top levels,
/// few enough that the rows and their partial sums stay in L1.
const BLOCK_ROWS: usize = 64;

/// Independent walks advanced in lock-step. Each step of one walk is a dependent load;
/// interleaving this many lets the CPU overlap them instead of waiting on each.
const LANES: usize = 8;

/// Lock-step walk steps between checks for completion.
const STEPS_PER_CHECK: usize = 4;

/// Rows per parallel task in batch scoring.
const PAR_CHUNK_ROWS: usize = 4096;

/// One tree node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    /// Split threshold (`x <= threshold` goes left), or the leaf's fraud probability.
    pub threshold: f32,
    /// Feature (top 8 bits) and left child (low 24 bits); 0 for a leaf.
    pub meta: u32,
}

impl Node {
    /// A leaf with fraud probability `p`.
    #[must_use]
    pub fn leaf(p: f32) -> Self {
        Self {
            threshold: p,
            meta: 0,
        }
    }

    /// A split on `feature` at `threshold`, with children `left` and `left + 1`.
    #[must_use]
    pub fn split(feature: usize, threshold: f32, left: u32) -> Self {
        Self {
            threshold,
            meta: ((feature as u32) << 24) | (left & CHILD_MASK),
        }
    }

    /// Whether the node is a leaf.
    #[must_use]
    pub fn is_leaf(self) -> bool {
        self.meta & CHILD_MASK == 0
    }

    /// The feature a split tests.
    #[must_use]
    pub fn feature(self) -> usize {
        (self.meta >> 24) as usize
    }

    /// The left child's index.
    #[must_use]
    pub fn left(self) -> usize {
        (self.meta & CHILD_MASK) as usize
    }
}

/// A walk node with the change in value along its two edges (child's value minus its
/// own): the contribution the split's feature earns when a walk takes that edge, next to
/// the node so that an explained step reads one place. Zero on leaves, whose self-loop
/// earns nothing.
#[derive(Debug, Clone, Copy)]
struct Explained {
    node: Node,
    edges: [f32; 2],
}

/// A structural problem in a tree (from a corrupt or hand-made model).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    /// A tree with no nodes.
    #[error("tree {tree} has no nodes")]
    Empty {
        /// Tree index.
        tree: usize,
    },
    /// A child index that is out of range or not after its parent.
    #[error("tree {tree}, node {node}: child index {child} is invalid")]
    Child {
        /// Tree index.
        tree: usize,
        /// Node index.
        node: usize,
        /// The child index.
        child: usize,
    },
    /// A split on a feature the model does not have.
    #[error("tree {tree}, node {node}: feature {feature} out of range")]
    Feature {
        /// Tree index.
        tree: usize,
        /// Node index.
        node: usize,
        /// The feature index.
        feature: usize,
    },
    /// A NaN/infinite threshold or a leaf probability outside [0, 1].
    #[error("tree {tree}, node {node}: invalid value {value}")]
    Value {
        /// Tree index.
        tree: usize,
        /// Node index.
        node: usize,
        /// The value.
        value: f32,
    },
    /// Arrays of different lengths.
    #[error("tree {tree}: {nodes} nodes but {values} node values")]
    Length {
        /// Tree index.
        tree: usize,
        /// Node count.
        nodes: usize,
        /// Value count.
        values: usize,
    },
    /// A forest with no trees.
    #[error("forest has no trees")]
    NoTrees,
    /// More features than a node can address.
    #[error("forest declares {0} features; at most {MAX_FEATURES} are supported")]
    TooManyFeatures(usize),
    /// A forest over no features (nothing to split on, nothing to score).
    #[error("forest declares no features")]
    NoFeatures,
}

/// One tree: nodes, and each node's fraud probability (used for explanations).
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    values: Vec<f32>,
    /// The nodes with every leaf turned into a self-loop (threshold +inf, left child
    /// itself), so a walk can keep stepping after it arrives: lock-step walks then need
    /// no per-row exit branch. Derived from `nodes`; not stored in model files.
    walk: Vec<Node>,
    /// `walk` with each node's edge deltas: derived when the model loads, so explaining
    /// a score costs one add per step of the walk that scores it.
    edges: Vec<Explained>,
    /// `walk.len() - 1` (a power of two minus one): walks index `walk[i & mask]`.
    mask: usize,
}

impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes && self.values == other.values
    }
}

impl Tree {
    /// A tree from its arrays (checked by [`Forest::new`]).
    #[must_use]
    pub fn new(nodes: Vec<Node>, values: Vec<f32>) -> Self {
        // Padded to a power of two with self-looping leaves that no walk reaches, so that
        // a masked index needs no bounds check.
        let len = nodes.len().max(1).next_power_of_two();
        let self_loop = |i: usize| Node {
            threshold: f32::INFINITY,
            meta: i as u32 & CHILD_MASK,
        };
        let walk = (0..len)
            .map(|i| match nodes.get(i) {
                Some(n) if !n.is_leaf() => *n,
                _ => self_loop(i),
            })
            .collect();
        let at = |j: usize| values.get(j).copied().unwrap_or(0.0);
        let edges = (0..len)
            .map(|i| match nodes.get(i) {
                Some(n) if !n.is_leaf() => Explained {
                    node: *n,
                    edges: [at(n.left()) - at(i), at(n.left() + 1) - at(i)],
                },
                _ => Explained {
                    node: self_loop(i),
                    edges: [0.0, 0.0],
                },
            })
            .collect();
        Self {
            nodes,
            values,
            walk,
            edges,
            mask: len - 1,
        }
    }

    /// The nodes.
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Each node's fraud probability.
    #[must_use]
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Depth of the deepest leaf (root = 0).
    #[must_use]
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.nodes.len()];
        let mut max = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_leaf() {
                let l = n.left();
                depth[l] = depth[i] + 1;
                depth[l + 1] = depth[i] + 1;
                max = max.max(depth[i] + 1);
            }
        }
        max
    }

    /// Walk one group of [`LANES`] rows in lock-step to their leaves and return the
    /// leaves' indices. `xt` holds the rows feature-major (`xt[feature][lane]`), one
    /// entry per feature up to `fmask + 1` (a power of two). With `EXPLAIN`, each step
    /// also adds its edge's change in value to `ct[feature][lane]` (shaped like `xt`;
    /// steps on a leaf's self-loop add zero). Indices are masked, never bounds-checked:
    /// the node arrays are padded to `mask + 1` and features to `fmask + 1`.
    #[inline(always)]
    fn walk_lanes<const EXPLAIN: bool>(
        &self,
        xt: &[[f32; LANES]],
        ct: &mut [[f32; LANES]],
        fmask: usize,
    ) -> [usize; LANES] {
        let mask = self.mask;
        let walk = &self.walk[..=mask];
        let edges = if EXPLAIN {
            &self.edges[..=mask]
        } else {
            &[]
        };
        let xt = &xt[..=fmask];
        let ct = if EXPLAIN { &mut ct[..=fmask] } else { ct };
        let mut idx = [0usize; LANES];
        loop {
            // Several unchecked steps per check: leaves loop on themselves, so overshooting
            // is harmless, and most paths are longer than this.
            for _ in 0..STEPS_PER_CHECK {
                for (j, i) in idx.iter_mut().enumerate() {
                    let at = *i & mask;
                    let n = if EXPLAIN { edges[at].node } else { walk[at] };
                    let f = n.feature() & fmask;
                    let go = usize::from(xt[f][j] > n.threshold);
                    if EXPLAIN {
                        ct[f][j] += edges[at].edges[go];
                    }
                    *i = n.left() + go;
                }
            }
            if idx
                .iter()
                .all(|&i| walk[i & mask].threshold == f32::INFINITY)
            {
                return idx.map(|i| i & mask);
            }
        }
    }

    /// The fraud probability of the leaf at `i` (a walk's end).
    #[inline(always)]
    fn leaf_value(&self, i: usize) -> f32 {
        self.nodes.get(i).map_or(0.0, |n| n.threshold)
    }

    fn validate(&self, tree: usize, n_features: usize) -> Result<(), TreeError> {
        let len = self.nodes.len();
        if len == 0 {
            return Err(TreeError::Empty { tree });
        }
        if len > MAX_NODES {
            return Err(TreeError::Child {
                tree,
                node: MAX_NODES,
                child: len,
            });
        }
        if self.values.len() != len {
            return Err(TreeError::Length {
                tree,
                nodes: len,
                values: self.values.len(),
            });
        }
        for (node, (n, &v)) in self.nodes.iter().zip(&self.values).enumerate() {
            if !(0.0..=1.0).contains(&v) {
                return Err(TreeError::Value {
                    tree,
                    node,
                    value: v,
                });
            }
            if n.is_leaf() {
                if !(0.0..=1.0).contains(&n.threshold) {
                    return Err(TreeError::Value {
                        tree,
                        node,
                        value: n.threshold,
                    });
                }
                continue;
            }
            let child = n.left();
            if child <= node || child + 1 >= len {
                return Err(TreeError::Child { tree, node, child });
            }
            if n.feature() >= n_features {
                return Err(TreeError::Feature {
                    tree,
                    node,
                    feature: n.feature(),
                });
            }
            if !n.threshold.is_finite() {
                return Err(TreeError::Value {
                    tree,
                    node,
                    value: n.threshold,
                });
            }
        }
        Ok(())
    }
}

/// A validated forest. The score of a row is the mean of its leaves' fraud probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    n_features: usize,
    trees: Vec<Tree>,
}

impl Forest {
    /// Build and validate a forest; invalid structure is an error, never a later panic.
    pub fn new(n_features: usize, trees: Vec<Tree>) -> Result<Self, TreeError> {
        if trees.is_empty() {
            return Err(TreeError::NoTrees);
        }
        if n_features > MAX_FEATURES {
            return Err(TreeError::TooManyFeatures(n_features));
        }
        if n_features == 0 {
            return Err(TreeError::NoFeatures);
        }
        for (i, t) in trees.iter().enumerate() {
            t.validate(i, n_features)?;
        }
        Ok(Self { n_features, trees })
    }

    /// Number of input features.
    #[must_use]
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The trees.
    #[must_use]
    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// Total node count.
    #[must_use]
    pub fn n_nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }

    /// Fraud probability of one row (`x.len() == n_features`).
    ///
    /// # Panics
    /// If `x` is shorter than the number of features.
    #[must_use]
    pub fn predict_one(&self, x: &[f32]) -> f32 {
        assert!(x.len() >= self.n_features, "row has too few features");
        let sum = self.walk_one(x, |_, _, _, _| {});
        sum / self.trees.len() as f32
    }

    /// One row through every tree, trees walked in lock-step groups of [`LANES`] (one
    /// row leaves no rows to interleave): calls `visit(tree, node, go, feature)` for each
    /// step (`go` 0 left, 1 right) and returns the sum of the leaf values reached.
    #[inline(always)]
    fn walk_one(&self, x: &[f32], mut visit: impl FnMut(&Tree, usize, usize, usize)) -> f32 {
        // Every feature a node can name (8 bits) indexes this without a bounds check.
        let mut row = [0f32; MAX_FEATURES + 1];
        let nf = self.n_features;
        row[..nf].copy_from_slice(&x[..nf]);
        let mut sum = 0f32;
        for group in self.trees.chunks(LANES) {
            let mut idx = [0usize; LANES];
            loop {
                for _ in 0..STEPS_PER_CHECK {
                    for (t, i) in group.iter().zip(idx.iter_mut()) {
                        let at = *i & t.mask;
                        let n = t.walk[at];
                        let f = n.feature();
                        let go = usize::from(row[f] > n.threshold);
                        visit(t, at, go, f);
                        *i = n.left() + go;
                    }
                }
                if group
                    .iter()
                    .zip(&idx)
                    .all(|(t, &i)| t.walk[i & t.mask].threshold == f32::INFINITY)
                {
                    break;
                }
            }
            sum += group
                .iter()
                .zip(&idx)
                .map(|(t, &i)| t.leaf_value(i & t.mask))
                .sum::<f32>();
        }
        sum
    }

    /// Walk `x` (row-major) block by block, so that each tree is walked for many rows
    /// while its top levels are in cache: for each block, `block(first_row, rows, walk)`
    /// gets the block's place and a [`BlockWalk`] over its lock-step groups.
    fn for_each_block(&self, x: &[f32], mut block: impl FnMut(usize, usize, BlockWalk<'_>)) {
        let nf = self.n_features;
        let fpad = nf.next_power_of_two();
        let mut xt = vec![[0f32; LANES]; BLOCK_ROWS / LANES * fpad];
        for (b, xs) in x.chunks(BLOCK_ROWS * nf).enumerate() {
            let rows = xs.len() / nf;
            fill_groups(xs, nf, fpad, &mut xt);
            let walk = BlockWalk {
                trees: &self.trees,
                xt: &xt,
                groups: rows.div_ceil(LANES),
                fpad,
            };
            block(b * BLOCK_ROWS, rows, walk);
        }
    }

    /// Score a row-major matrix into `out` on the current thread.
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
        let inv = 1.0 / self.trees.len() as f32;
        self.for_each_block(x, |first, rows, walk| {
            let mut acc = [0f32; BLOCK_ROWS];
            walk.run::<false>(&mut acc, &mut []);
            for (o, a) in out[first..first + rows].iter_mut().zip(&acc) {
                *o = a * inv;
            }
        });
    }

    /// Score a row-major matrix into `out` and explain every score in the same walk: row
    /// `r`'s decision-path contributions go to `contrib[r * n_features..]` (overwritten),
    /// averaged over trees, so that [`Forest::bias`] plus a row's contributions equals its
    /// score (up to rounding). No allocation per row.
    ///
    /// # Panics
    /// If the shapes of `x`, `out` and `contrib` do not match.
    pub fn predict_explain_into(&self, x: &[f32], out: &mut [f32], contrib: &mut [f32]) {
        let nf = self.n_features;
        assert_eq!(
            x.len(),
            out.len() * nf,
            "matrix shape does not match output"
        );
        assert_eq!(
            contrib.len(),
            x.len(),
            "one contribution per feature and row"
        );
        let inv = 1.0 / self.trees.len() as f32;
        let fpad = nf.next_power_of_two();
        // Contributions per group, feature-major like the rows.
        let mut ct = vec![[0f32; LANES]; BLOCK_ROWS / LANES * fpad];
        self.for_each_block(x, |first, rows, walk| {
            let mut acc = [0f32; BLOCK_ROWS];
            ct.fill([0.0; LANES]);
            walk.run::<true>(&mut acc, &mut ct);
            for r in 0..rows {
                out[first + r] = acc[r] * inv;
                let cg = &ct[r / LANES * fpad..];
                let row = &mut contrib[(first + r) * nf..(first + r + 1) * nf];
                for (f, c) in row.iter_mut().enumerate() {
                    *c = cg[f][r % LANES] * inv;
                }
            }
        });
    }

    /// [`Forest::predict_explain_into`] for one row: trees walked in lock-step instead of
    /// rows (one row leaves the row lanes empty). Returns the score; the row's
    /// contributions go to `contrib` (overwritten).
    ///
    /// # Panics
    /// If `x` or `contrib` is not `n_features` long.
    pub fn predict_explain_one(&self, x: &[f32], contrib: &mut [f32]) -> f32 {
        let nf = self.n_features;
        assert!(x.len() == nf && contrib.len() == nf, "one row of features");
        let mut c = [0f32; MAX_FEATURES + 1];
        let sum = self.walk_one(x, |t, i, go, f| {
            c[f] += t.edges.get(i).map_or(0.0, |e| e.edges[go]);
        });
        let inv = 1.0 / self.trees.len() as f32;
        for (o, v) in contrib.iter_mut().zip(&c) {
            *o = v * inv;
        }
        sum * inv
    }

    /// The mean root value: what every score starts from before its contributions.
    #[must_use]
    pub fn bias(&self) -> f32 {
        self.trees.iter().map(|t| t.values[0]).sum::<f32>() / self.trees.len() as f32
    }

    /// Score a row-major matrix using every core.
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `n_features`.
    #[must_use]
    pub fn predict_batch(&self, x: &[f32]) -> Vec<f32> {
        let nf = self.n_features;
        assert_eq!(
            x.len() % nf.max(1),
            0,
            "matrix shape does not match features"
        );
        let mut out = vec![0f32; x.len() / nf.max(1)];
        out.par_chunks_mut(PAR_CHUNK_ROWS)
            .zip(x.par_chunks(PAR_CHUNK_ROWS * nf))
            .for_each(|(o, xs)| self.predict_into(xs, o));
        out
    }

    /// Decision-path attribution: the mean root value (`bias`) and, per feature, the summed
    /// change in node value along each tree's path, averaged over trees. `bias` plus the
    /// contributions equals the score (up to rounding).
    #[must_use]
    pub fn contributions(&self, x: &[f32]) -> (f32, Vec<f32>) {
        let mut contrib = vec![0f32; self.n_features];
        let mut bias = 0f32;
        for t in &self.trees {
            bias += t.values[0];
            let mut i = 0;
            loop {
                let n = t.nodes[i];
                if n.is_leaf() {
                    break;
                }
                let next = n.left() + usize::from(x[n.feature()] > n.threshold);
                contrib[n.feature()] += t.values[next] - t.values[i];
                i = next;
            }
        }
        let inv = 1.0 / self.trees.len() as f32;
        contrib.iter_mut().for_each(|c| *c *= inv);
        (bias * inv, contrib)
    }

    /// The `k` features with the largest absolute contribution to one row's score, largest
    /// first, as (feature index, contribution).
    #[must_use]
    pub fn top_contributions(&self, x: &[f32], k: usize) -> Vec<(usize, f32)> {
        let (_, c) = self.contributions(x);
        let mut top = Vec::with_capacity(k);
        top_k_into(&c, k, &mut top);
        top
    }
}

/// One block's lock-step groups, ready to walk (see [`Forest::for_each_block`]).
struct BlockWalk<'a> {
    trees: &'a [Tree],
    /// The groups, feature-major, `fpad` entries each (see [`fill_groups`]).
    xt: &'a [[f32; LANES]],
    groups: usize,
    fpad: usize,
}

impl BlockWalk<'_> {
    /// Walk every group through every tree, adding each row's leaf value to `acc[row]`
    /// and, with `EXPLAIN`, its contributions to `ct` (shaped like the groups).
    #[inline(always)]
    fn run<const EXPLAIN: bool>(&self, acc: &mut [f32; BLOCK_ROWS], ct: &mut [[f32; LANES]]) {
        let fmask = self.fpad - 1;
        for t in self.trees {
            for (g, (xg, acc)) in self
                .xt
                .chunks_exact(self.fpad)
                .zip(acc.chunks_exact_mut(LANES))
                .take(self.groups)
                .enumerate()
            {
                let cg = if EXPLAIN {
                    &mut ct[g * self.fpad..(g + 1) * self.fpad]
                } else {
                    &mut []
                };
                let idx = t.walk_lanes::<EXPLAIN>(xg, cg, fmask);
                for (a, &i) in acc.iter_mut().zip(&idx) {
                    *a += t.leaf_value(i);
                }
            }
        }
    }
}

/// Copy the rows of `xs` (row-major, `nf` wide, at most [`BLOCK_ROWS`]) into lock-step
/// groups, feature-major: row `r`'s feature `f` goes to `xt[(r / LANES) * fpad + f][r %
/// LANES]`. Lanes past the last row and features past `nf` are zero.
fn fill_groups(xs: &[f32], nf: usize, fpad: usize, xt: &mut [[f32; LANES]]) {
    xt.fill([0.0; LANES]);
    for (r, row) in xs.chunks_exact(nf).enumerate() {
        let g = &mut xt[r / LANES * fpad..];
        for (f, &v) in row.iter().enumerate() {
            g[f][r % LANES] = v;
        }
    }
}

/// The `k` entries of `c` with the largest absolute value (zeros left out), largest first
/// and, among equals, lowest index first, into `top` (cleared first). One pass, no sort
/// of the whole row.
pub fn top_k_into(c: &[f32], k: usize, top: &mut Vec<(usize, f32)>) {
    top.clear();
    if k == 0 {
        return;
    }
    for (f, &v) in c.iter().enumerate() {
        if v == 0.0 {
            continue;
        }
        let a = v.abs();
        if top.len() == k && top[k - 1].1.abs() >= a {
            continue;
        }
        // Insert after every entry at least as large (so earlier features win ties).
        let at = top
            .iter()
            .position(|&(_, t)| t.abs() < a)
            .unwrap_or(top.len());
        if top.len() == k {
            top.pop();
        }
        top.insert(at, (f, v));
    }
}

impl Forest {}

#[cfg(test)]
mod tests {
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
                (one[0] - contrib[i * 2]).abs() < 1e-6
                    && (one[1] - contrib[i * 2 + 1]).abs() < 1e-6
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
}
