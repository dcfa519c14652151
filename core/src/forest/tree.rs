//! Serving: the forest walk over the flat arrays of [`super::node`], one row or blocks of
//! rows, with or without decision-path contributions.

use rayon::prelude::*;

use super::node::CHILD_MASK;
pub use super::node::{MAX_FEATURES, MAX_NODES, Node, Tree, TreeError};

/// Rows scored together per tree pass: enough to amortise loading a tree, few enough that
/// the features the walk reads (two cache lines a row) stay in L1.
const BLOCK_ROWS: usize = 128;

/// Rows walked in lock-step by a batch walk that only scores. Each step of one walk is a
/// dependent load; interleaving this many lets the CPU overlap them instead of waiting
/// on each. On the real model (100 trees, 36,000 nodes) 16 lanes scored in 0.70 of the
/// time 8 took (`scripts/bench/walk.sh`).
const LANES: usize = 16;

/// Walks in lock-step when explaining, and trees in lock-step for one row: an explained
/// step also writes its row's contributions, and 16 rows' contributions in flight cost
/// more in cache than the extra overlap gains (2.2x the plain walk, against 1.3x at 8).
const NARROW: usize = 8;

/// Lock-step walk steps between checks for completion.
const STEPS_PER_CHECK: usize = 4;

/// Rows per parallel task in batch scoring.
const PAR_CHUNK_ROWS: usize = 4096;

/// A walk node with the change in value along its two edges (child's value minus its
/// own): the contribution the split's feature earns when a walk takes that edge, next to
/// the node so that an explained step reads one place. Zero on leaves, whose self-loop
/// earns nothing.
#[derive(Debug, Clone, Copy)]
struct Explained {
    node: Node,
    edges: [f32; 2],
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

    /// Lanes walking one tree each, all at `row` (one-row scoring); with `EXPLAIN`, lane
    /// `j` adds its contributions to `ct[j]`.
    #[inline(always)]
    fn trees<const EXPLAIN: bool, const L: usize>(
        &self,
        trees: &[usize],
        row: &Row,
        ct: &mut [Row],
    ) -> [f32; L] {
        let base = std::array::from_fn(|j| trees.get(j).copied().unwrap_or(self.pad));
        let mask = self.nodes.len() - 1;
        lanes::<EXPLAIN, L>(
            &self.nodes,
            &self.explained,
            &self.values,
            mask,
            base,
            |_| row,
            ct,
        )
    }

    /// Lanes walking tree `t`, one row each (batch scoring): the whole group at once to
    /// score, in halves of [`NARROW`] to explain.
    #[inline(always)]
    fn rows<const EXPLAIN: bool>(&self, t: usize, xs: &Group, ct: &mut Group) -> [f32; LANES] {
        let (base, mask) = (self.bases[t], self.masks[t]);
        let (nodes, explained) = (&self.nodes[base..], &self.explained[base..]);
        let values = &self.values[base..];
        if !EXPLAIN {
            return lanes::<false, LANES>(
                nodes,
                explained,
                values,
                mask,
                [0; LANES],
                |j| &xs[j],
                &mut [],
            );
        }
        let mut out = [0f32; LANES];
        for ((o, ct), xs) in out
            .chunks_exact_mut(NARROW)
            .zip(ct.chunks_exact_mut(NARROW))
            .zip(xs.chunks_exact(NARROW))
        {
            // Fixed lengths, so that no step checks a bound.
            let xs: &[Row; NARROW] = xs.try_into().expect("a half group");
            o.copy_from_slice(&lanes::<true, NARROW>(
                nodes,
                explained,
                values,
                mask,
                [0; NARROW],
                |j| &xs[j],
                ct,
            ));
        }
        out
    }
}

/// Walk `L` walks in lock-step to their leaves and return each leaf's value: lane
/// `j` walks from `nodes[base[j]]` with row `xs(j)`, reading node `(base[j] + i) & mask`
/// (`nodes` and `explained` are `mask + 1` long). With `EXPLAIN`, each step also adds
/// its edge's change in value to `ct[j][feature]` (steps on a leaf's self-loop add
/// zero). No index is bounds-checked at run time: node indices are masked and rows are
/// padded to every feature a node can name.
#[inline(always)]
fn lanes<'a, const EXPLAIN: bool, const L: usize>(
    nodes: &[Node],
    explained: &[Explained],
    values: &[f32],
    mask: usize,
    base: [usize; L],
    xs: impl Fn(usize) -> &'a Row,
    ct: &mut [Row],
) -> [f32; L] {
    // Lengths the compiler can see, so that masked indices need no checks.
    let (nodes, explained, values) = (&nodes[..=mask], &explained[..=mask], &values[..=mask]);
    // `ct` holds a row per lane when explaining; it is not read otherwise.
    let ct = if EXPLAIN { &mut ct[..L] } else { ct };
    let mut idx = [0usize; L];
    loop {
        // Several unchecked steps per check: leaves loop on themselves, so overshooting is
        // harmless, and most paths are longer than this.
        for _ in 0..STEPS_PER_CHECK {
            for j in 0..L {
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
        if (0..L).all(|j| nodes[(base[j] + idx[j]) & mask].threshold == f32::INFINITY) {
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
        self.walk_one::<false, LANES>(x, &mut []) * (1.0 / self.trees.len() as f32)
    }

    /// One row through every tree, trees walked in lock-step groups of `L` (one row
    /// leaves no rows to interleave); returns the sum of the leaf values reached, added in
    /// tree order as the batch walks add them (so that the score is theirs to the bit)
    /// and, with `EXPLAIN`, adds each group's contributions to `ct` (one row per lane:
    /// the caller sums them).
    #[inline(always)]
    fn walk_one<const EXPLAIN: bool, const L: usize>(&self, x: &[f32], ct: &mut [Row]) -> f32 {
        let mut row = [0f32; MAX_FEATURES + 1];
        let nf = self.n_features;
        row[..nf].copy_from_slice(&x[..nf]);
        let mut sum = 0f32;
        for trees in self.walk.bases.chunks(L) {
            let leaves = self.walk.trees::<EXPLAIN, L>(trees, &row, ct);
            for v in &leaves[..trees.len()] {
                sum += v;
            }
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

    /// Score every row into `out`, then explain only the rows scoring at least
    /// `threshold`, in a second fused pass over those rows gathered together: `explained`
    /// gets their indices (ascending) and `contrib` their contributions, `n_features`
    /// per row in that order (both cleared first). The contributions are those
    /// [`Forest::predict_explain_into`] gives the same rows; the scores are the plain
    /// walk's (the same). With few rows above the threshold it costs about a plain score.
    ///
    /// # Panics
    /// If `x.len() != out.len() * n_features`.
    pub fn predict_explain_above(
        &self,
        x: &[f32],
        out: &mut [f32],
        threshold: f32,
        explained: &mut Vec<usize>,
        contrib: &mut Vec<f32>,
    ) {
        let nf = self.n_features;
        self.predict_into(x, out);
        explained.clear();
        explained.extend((0..out.len()).filter(|&r| out[r] >= threshold));
        contrib.clear();
        if explained.is_empty() {
            return;
        }
        let rows: Vec<f32> = explained
            .iter()
            .flat_map(|&r| x[r * nf..(r + 1) * nf].iter().copied())
            .collect();
        contrib.resize(rows.len(), 0.0);
        let mut scores = vec![0f32; explained.len()];
        self.predict_explain_into(&rows, &mut scores, contrib);
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
        let mut ct = [[0.0; MAX_FEATURES + 1]; NARROW];
        let sum = self.walk_one::<true, NARROW>(x, &mut ct);
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
mod tests;
