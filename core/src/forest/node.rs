//! Trees as flat arrays of 8-byte nodes, and their validation.
//!
//! A node is a raw `f32` threshold plus one `u32`: the feature index in the top 8 bits and
//! the left child's index in the low 24. The right child is always `left + 1`, so a step
//! is `i = left + (x[f] > threshold)`, with no branch on the direction. A leaf has left
//! index 0 (the root is never a child) and keeps its fraud probability in `threshold`.
//! Children always come after their parent, which the loader checks, so every walk ends.

/// Maximum number of features a model can use (8 bits in a node).
pub const MAX_FEATURES: usize = 255;
/// Maximum nodes per tree (24-bit child index).
pub const MAX_NODES: usize = 1 << 24;

pub(super) const CHILD_MASK: u32 = (1 << 24) - 1;

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
    pub(super) nodes: Vec<Node>,
    pub(super) values: Vec<f32>,
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

    pub(super) fn validate(&self, tree: usize, n_features: usize) -> Result<(), TreeError> {
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
