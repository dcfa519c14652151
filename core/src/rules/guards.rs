//! A guard index over a rule set, so that a large rule set costs what its plausible rules
//! cost. Most fraud rules open with a bound on one number: `Amount > 1000 and …`,
//! `risk_score >= 90 and …`, `card_id_count_1d > 5 and …`. A rule whose condition is such
//! a comparison, or an `and` with one among its terms, is false whenever that comparison
//! is. The index keeps those comparisons (the rule's *guard*) grouped by what they bound
//! and sorted by the bound, so that one binary search per group finds, for a transaction,
//! every rule whose guard holds; every other indexed rule is skipped without being
//! evaluated. A rule without a guard is always evaluated.
//!
//! The index only ever skips rules that are false, so every mode decides exactly as the
//! plain evaluation does (a property test compares them). The candidates are a bit mask
//! on the stack, for the first [`INDEXED`] rules; rules past those are always evaluated.

use super::facts::Facts;
use super::program::{Cmp, Node, Program};

/// How many rules (the first, in file order) the index covers.
pub(crate) const INDEXED: usize = 256;
const WORDS: usize = INDEXED / 64;

/// One bit per indexed rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mask([u64; WORDS]);

impl Mask {
    /// Every rule.
    #[cfg(test)]
    pub(crate) fn all() -> Self {
        Self([u64::MAX; WORDS])
    }

    fn set(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Whether rule `i` must be evaluated: it is a candidate, or past the index.
    #[inline]
    pub(crate) fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_none_or(|w| w & (1 << (i % 64)) != 0)
    }

    /// The rules to evaluate among `0..rules`, in order: the candidates, then every rule
    /// past the index.
    pub(crate) fn rules(self, rules: usize) -> impl Iterator<Item = usize> {
        let words = self.0;
        (0..WORDS)
            .flat_map(move |k| {
                let mut w = words[k];
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let bit = w.trailing_zeros() as usize;
                        w &= w - 1;
                        k * 64 + bit
                    })
                })
            })
            .take_while(move |&i| i < rules)
            .chain(INDEXED..rules.max(INDEXED))
    }
}

/// What a guard bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Var {
    Field(u8),
    Derived(u32),
    /// `score`, or `risk_score` when true (kept apart: `risk_score > 90` is computed as
    /// the product, and dividing the bound instead could round differently).
    Score(bool),
}

impl Var {
    #[inline]
    fn value(self, f: &Facts<'_>) -> f64 {
        match self {
            Self::Field(k) => f.field(k),
            Self::Derived(j) => f.derived(j),
            Self::Score(risk) => f.score(risk),
        }
    }
}

/// The guards on one variable in one direction, ordered so that for any value the guards
/// that hold are a prefix: a lower bound (`>`, `>=`) by ascending bound, `>=` before `>`
/// at the same bound; an upper bound (`<`, `<=`) by descending bound, `<=` first.
#[derive(Debug, Clone)]
struct Group {
    var: Var,
    guards: Vec<(f64, Cmp, u16)>,
}

/// The guard index of one rule set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guards {
    /// Indexed rules without a guard: always candidates.
    unguarded: Mask,
    groups: Vec<Group>,
}

/// The comparison a rule's condition at `root` cannot be true without, if any: the root
/// itself, or the first such term of a root `and`.
fn guard_of(prog: &Program, root: u32) -> Option<(Var, Cmp, f64)> {
    let as_guard = |node: Node| {
        let (var, op, value) = match node {
            Node::FieldCmp { op, field, value } => (Var::Field(field), op, value),
            Node::DerivedCmp { op, index, value } => (Var::Derived(index), op, value),
            Node::ScoreCmp { op, risk, value } => (Var::Score(risk), op, value),
            _ => return None,
        };
        (matches!(op, Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) && value.is_finite())
            .then_some((var, op, value))
    };
    let node = *prog.nodes.get(root as usize)?;
    match node {
        Node::And { start, len } => prog
            .kids(start, len)
            .iter()
            .find_map(|&k| prog.nodes.get(k as usize).copied().and_then(as_guard)),
        _ => as_guard(node),
    }
}

impl Guards {
    /// The index of the rules whose conditions are at `roots`, in file order.
    pub(crate) fn new(prog: &Program, roots: impl Iterator<Item = u32>) -> Self {
        let mut index = Self::default();
        for (i, root) in roots.enumerate().take(INDEXED) {
            let Some((var, op, bound)) = guard_of(prog, root) else {
                index.unguarded.set(i);
                continue;
            };
            let lower = matches!(op, Cmp::Gt | Cmp::Ge);
            let upper_of = |g: &Group| matches!(g.guards[0].1, Cmp::Lt | Cmp::Le);
            let group = match index
                .groups
                .iter()
                .position(|g| g.var == var && upper_of(g) != lower)
            {
                Some(k) => &mut index.groups[k],
                None => {
                    index.groups.push(Group {
                        var,
                        guards: Vec::new(),
                    });
                    index.groups.last_mut().expect("just pushed")
                }
            };
            // At most INDEXED rules, which fits. `+ 0.0` makes -0 a 0: the sort below
            // tells them apart, the comparisons do not.
            group.guards.push((bound + 0.0, op, i as u16));
        }
        for g in &mut index.groups {
            // Weaker first at equal bounds: `>=` holds wherever `>` does.
            let weak = |op: Cmp| u8::from(!matches!(op, Cmp::Ge | Cmp::Le));
            if matches!(g.guards[0].1, Cmp::Gt | Cmp::Ge) {
                g.guards
                    .sort_by(|a, b| a.0.total_cmp(&b.0).then(weak(a.1).cmp(&weak(b.1))));
            } else {
                g.guards
                    .sort_by(|a, b| b.0.total_cmp(&a.0).then(weak(a.1).cmp(&weak(b.1))));
            }
        }
        index
    }

    /// The rules worth evaluating for `facts`: the unguarded ones and those whose guard
    /// holds.
    #[inline]
    pub(crate) fn candidates(&self, facts: &Facts<'_>) -> Mask {
        let mut mask = self.unguarded;
        for g in &self.groups {
            let x = g.var.value(facts);
            let holding = g
                .guards
                .partition_point(|&(bound, op, _)| op.apply(x, bound));
            for &(_, _, i) in &g.guards[..holding] {
                mask.set(usize::from(i));
            }
        }
        mask
    }
}
