//! Every rule on its own, whatever the mode: what a backtest counts per rule.

use super::compile::RuleSet;
use super::facts::Facts;
use super::lists::Lists;
use super::program::{ListView, Memo};

impl RuleSet {
    /// Whether each rule matches `facts`, whatever the set's mode (a backtest counts
    /// every rule's matches, not only the deciding one's): `out[i]` for rule `i`.
    /// `lists` as for [`RuleSet::evaluate`]. Allocates nothing once `out` has capacity
    /// [`RuleSet::len`].
    pub fn each_match(&self, facts: &Facts<'_>, lists: &Lists, out: &mut Vec<bool>) {
        out.clear();
        let view = ListView::new(lists, &self.lists, self.list_fingerprint);
        let mut memo = Memo::default();
        let candidates = self.guards.candidates(facts);
        out.extend(
            self.rules.iter().enumerate().map(|(i, r)| {
                candidates.has(i) && self.prog.truth(r.root, facts, &view, &mut memo)
            }),
        );
    }
}
