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

/// Rows scored together per tree pass: enough to amortise loading a tree, few enough that
/// the features the walk reads (two cache lines a row) stay in L1.
const BLOCK_ROWS: usize = 128;

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
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    nodes: Vec<Node>,
    values: Vec<f32>,
}

impl Tree {
    /// A tree from its arrays (checked by [`Forest::new`]).
    #[must_use]
    pub fn new(nodes: Vec<Node>, values: Vec<f32>) -> Self {
        Self { nodes, values }
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
#[derive(Debug, Clone)]
pub struct Forest {
    n_features: usize,
    trees: Vec<Tree>,
    walk: Walk,
}

/// Every tree's nodes in one array, as the scoring walks read them (derived when the
/// model loads; not stored in model files). Tree `t` starts at `bases[t]`, padded to a
/// power of two, and keeps its own (relative) child indices, so a step is `i = left +
/// go`. Every leaf loops on itself (threshold +inf, left child itself), so lock-step
/// walks can keep stepping after they arrive and need no per-row exit branch. The whole
/// array is padded to a power of two too: a masked index, into one tree or into the
/// whole array, needs no bounds check. One more leaf after the last tree, `pad`, scores
/// 0 and names feature 0: lanes with no tree walk it.
#[derive(Debug, Clone)]
struct Walk {
    nodes: Vec<Node>,
    /// `nodes` with each split's edge deltas and each leaf's value, side by side, so
    /// that explaining a score costs one add per step of the walk that scores it.
    explained: Vec<Explained>,
    /// Each leaf's value (0 elsewhere), compact for walks that only score.
    values: Vec<f32>,
    bases: Vec<usize>,
    /// Tree `t` is padded to `masks[t] + 1` nodes (a power of two).
    masks: Vec<usize>,
    pad: usize,
}

impl Walk {
    fn new(trees: &[Tree]) -> Self {
        let leaf = |i: usize, value: f32| {
            let node = Node {
                threshold: f32::INFINITY,
                meta: i as u32 & CHILD_MASK,
            };
            Explained {
                node,
                edges: [0.0, value],
            }
        };
        let mut explained = Vec::new();
        let mut bases = Vec::with_capacity(trees.len());
        let mut masks = Vec::with_capacity(trees.len());
        for t in trees {
            let base = explained.len();
            let len = t.nodes.len().max(1).next_power_of_two();
            let at = |j: usize| t.values.get(j).copied().unwrap_or(0.0);
            explained.extend((0..len).map(|i| match t.nodes.get(i) {
                Some(n) if !n.is_leaf() => Explained {
                    node: *n,
                    edges: [at(n.left()) - at(i), at(n.left() + 1) - at(i)],
                },
                Some(n) => leaf(i, n.threshold),
                None => leaf(i, 0.0),
            }));
            bases.push(base);
            masks.push(len - 1);
        }
        let pad = explained.len();
        let len = (pad + 1).next_power_of_two();
        explained.resize(len, leaf(0, 0.0));
        Self {
            nodes: explained.iter().map(|e| e.node).collect(),
            values: explained.iter().map(|e| e.edges[1]).collect(),
            explained,
            bases,
            masks,
            pad,
        }
    }

    /// Lanes walking one tree each, all at `row` (one-row scoring).
    #[inline(always)]
    fn trees<const EXPLAIN: bool>(
        &self,
        trees: &[usize],
        row: &Row,
        ct: &mut [Row; LANES],
    ) -> [f32; LANES] {
        let base = std::array::from_fn(|j| trees.get(j).copied().unwrap_or(self.pad));
        let mask = self.nodes.len() - 1;
        lanes::<EXPLAIN>(
            &self.nodes,
            &self.explained,
            &self.values,
            mask,
            base,
            |_| row,
            ct,
        )
    }

    /// Lanes walking tree `t`, one row each (batch scoring).
    #[inline(always)]
    fn rows<const EXPLAIN: bool>(
        &self,
        t: usize,
        xs: &Group,
        ct: &mut [Row; LANES],
    ) -> [f32; LANES] {
        let (base, mask) = (self.bases[t], self.masks[t]);
        let (nodes, explained) = (&self.nodes[base..], &self.explained[base..]);
        let values = &self.values[base..];
        lanes::<EXPLAIN>(nodes, explained, values, mask, [0; LANES], |j| &xs[j], ct)
    }
}

/// Walk [`LANES`] walks in lock-step to their leaves and return each leaf's value: lane
/// `j` walks from `nodes[base[j]]` with row `xs(j)`, reading node `(base[j] + i) & mask`
/// (`nodes` and `explained` are `mask + 1` long). With `EXPLAIN`, each step also adds
/// its edge's change in value to `ct[j][feature]` (steps on a leaf's self-loop add
/// zero). No index is bounds-checked at run time: node indices are masked and rows are
/// padded to every feature a node can name.
#[inline(always)]
fn lanes<'a, const EXPLAIN: bool>(
    nodes: &[Node],
    explained: &[Explained],
    values: &[f32],
    mask: usize,
    base: [usize; LANES],
    xs: impl Fn(usize) -> &'a Row,
    ct: &mut [Row; LANES],
) -> [f32; LANES] {
    // Lengths the compiler can see, so that masked indices need no checks.
    let (nodes, explained, values) = (&nodes[..=mask], &explained[..=mask], &values[..=mask]);
    let mut idx = [0usize; LANES];
    loop {
        // Several unchecked steps per check: leaves loop on themselves, so overshooting is
        // harmless, and most paths are longer than this.
        for _ in 0..STEPS_PER_CHECK {
            for j in 0..LANES {
                let at = (base[j] + idx[j]) & mask;
                let n = if EXPLAIN {
                    explained[at].node
                } else {
                    nodes[at]
                };
                let f = n.feature();
                let go = usize::from(xs(j)[f] > n.threshold);
                if EXPLAIN {
                    ct[j][f] += explained[at].edges[go];
                }
                idx[j] = n.left() + go;
            }
        }
        if (0..LANES).all(|j| nodes[(base[j] + idx[j]) & mask].threshold == f32::INFINITY) {
            // A leaf keeps its value where its self-loop's right edge would be.
            return std::array::from_fn(|j| {
                let at = (base[j] + idx[j]) & mask;
                if EXPLAIN {
                    explained[at].edges[1]
                } else {
                    values[at]
                }
            });
        }
    }
}

impl PartialEq for Forest {
    /// The same trees over the same features (the walk is derived from them).
    fn eq(&self, other: &Self) -> bool {
        self.n_features == other.n_features && self.trees == other.trees
    }
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
        let walk = Walk::new(&trees);
        Ok(Self {
            n_features,
            trees,
            walk,
        })
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
        let mut ct = [[0.0; MAX_FEATURES + 1]; LANES];
        self.walk_one::<false>(x, &mut ct) / self.trees.len() as f32
    }

    /// One row through every tree, trees walked in lock-step groups of [`LANES`] (one
    /// row leaves no rows to interleave); returns the sum of the leaf values reached and,
    /// with `EXPLAIN`, adds each group's contributions to `ct` (one row per lane: the
    /// caller sums them).
    #[inline(always)]
    fn walk_one<const EXPLAIN: bool>(&self, x: &[f32], ct: &mut [Row; LANES]) -> f32 {
        let mut row = [0f32; MAX_FEATURES + 1];
        let nf = self.n_features;
        row[..nf].copy_from_slice(&x[..nf]);
        let mut sum = 0f32;
        for trees in self.walk.bases.chunks(LANES) {
            sum += self
                .walk
                .trees::<EXPLAIN>(trees, &row, ct)
                .iter()
                .sum::<f32>();
        }
        sum
    }

    /// Walk `x` (row-major) block by block, so that each tree is walked for many rows
    /// while its top levels are in cache. For each block, `block(first_row, rows, walk)`
    /// gets the block's place and a [`BlockWalk`] over its lock-step groups, with this
    /// thread's scratch for contributions (zeroed over the model's features).
    fn for_each_block(
        &self,
        x: &[f32],
        mut block: impl FnMut(usize, usize, BlockWalk<'_>, &mut [Group]),
    ) {
        let nf = self.n_features;
        SCRATCH.with_borrow_mut(|(xs, ct)| {
            let groups = (x.len() / nf).min(BLOCK_ROWS).div_ceil(LANES);
            for v in [&mut *xs, &mut *ct] {
                if v.len() < groups {
                    v.resize(groups, [[0.0; MAX_FEATURES + 1]; LANES]);
                }
            }
            for (b, rows) in x.chunks(BLOCK_ROWS * nf).enumerate() {
                let n = rows.len() / nf;
                let groups = n.div_ceil(LANES);
                fill_groups(rows, nf, &mut xs[..groups]);
                for lane in ct[..groups].iter_mut().flatten() {
                    lane[..nf].fill(0.0);
                }
                let walk = BlockWalk {
                    walk: &self.walk,
                    xs: &xs[..groups],
                };
                block(b * BLOCK_ROWS, n, walk, &mut ct[..groups]);
            }
        });
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
        self.for_each_block(x, |first, rows, walk, ct| {
            let mut acc = [0f32; BLOCK_ROWS];
            walk.run::<false>(&mut acc, ct);
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
        self.for_each_block(x, |first, rows, walk, ct| {
            let mut acc = [0f32; BLOCK_ROWS];
            walk.run::<true>(&mut acc, ct);
            let lanes = ct.iter().flatten().take(rows);
            let outs = contrib[first * nf..(first + rows) * nf].chunks_exact_mut(nf);
            for (r, (lane, row)) in lanes.zip(outs).enumerate() {
                out[first + r] = acc[r] * inv;
                for (c, v) in row.iter_mut().zip(lane) {
                    *c = v * inv;
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
        let mut ct = [[0.0; MAX_FEATURES + 1]; LANES];
        let sum = self.walk_one::<true>(x, &mut ct);
        let inv = 1.0 / self.trees.len() as f32;
        for (f, o) in contrib.iter_mut().enumerate() {
            *o = ct.iter().map(|lane| lane[f]).sum::<f32>() * inv;
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

/// One row padded to every feature a node can name (8 bits), so that indexing it by a
/// node's feature needs no bounds check. Only the model's features are ever read.
type Row = [f32; MAX_FEATURES + 1];

/// One lock-step group of rows.
type Group = [Row; LANES];

thread_local! {
    /// Each thread's scratch for batch walks: one block's rows and contributions, in
    /// lock-step groups (grown once, reused by every call on the thread).
    static SCRATCH: std::cell::RefCell<(Vec<Group>, Vec<Group>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One block's lock-step groups, ready to walk (see [`Forest::for_each_block`]).
struct BlockWalk<'a> {
    walk: &'a Walk,
    xs: &'a [Group],
}

impl BlockWalk<'_> {
    /// Walk every group through every tree, adding each row's leaf value to `acc[row]`
    /// and, with `EXPLAIN`, its contributions to `ct` (one group per group of rows).
    #[inline(always)]
    fn run<const EXPLAIN: bool>(&self, acc: &mut [f32; BLOCK_ROWS], ct: &mut [Group]) {
        for t in 0..self.walk.bases.len() {
            for ((xg, cg), acc) in self
                .xs
                .iter()
                .zip(ct.iter_mut())
                .zip(acc.chunks_exact_mut(LANES))
            {
                let leaves = self.walk.rows::<EXPLAIN>(t, xg, cg);
                for (a, v) in acc.iter_mut().zip(leaves) {
                    *a += v;
                }
            }
        }
    }
}

/// Copy the rows of `rows` (row-major, `nf` wide, at most [`BLOCK_ROWS`]) into lock-step
/// groups: row `r` goes to `xs[r / LANES][r % LANES]`. Lanes past the last row are zero
/// (walked, never read); features past `nf` are never read.
fn fill_groups(rows: &[f32], nf: usize, xs: &mut [Group]) {
    let mut rows = rows.chunks_exact(nf);
    for lane in xs.iter_mut().flatten() {
        match rows.next() {
            Some(row) => lane[..nf].copy_from_slice(row),
            None => lane[..nf].fill(0.0),
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
