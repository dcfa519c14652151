//! Actions, outcomes and modes, and how a rule set turns one transaction's facts into
//! a decision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::compile::RuleSet;
use super::facts::Facts;
use super::guards::Mask;
use super::lists::Lists;
use super::program::{ListView, Memo};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Approve the transaction, whatever the model says.
    Allow,
    /// Send it to a person.
    Review,
    /// Decline it.
    Block,
}

impl Action {
    /// The outcome this action decides: allow approves.
    #[must_use]
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Allow => Outcome::Approve,
            Self::Review => Outcome::Review,
            Self::Block => Outcome::Block,
        }
    }

    /// Its name in a rules file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Review => "review",
            Self::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "review" => Ok(Self::Review),
            "block" => Ok(Self::Block),
            _ => Err(format!(
                "unknown action `{s}`: expected allow, review or block"
            )),
        }
    }
}

/// The decision on a transaction, ordered by severity: `Approve < Review < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Let it through.
    Approve,
    /// Hold it for a person.
    Review,
    /// Decline it.
    Block,
}

impl Outcome {
    /// Its name (as serialised).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Review => "review",
            Self::Block => "block",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(Self::Approve),
            "review" => Ok(Self::Review),
            "block" => Ok(Self::Block),
            _ => Err(format!(
                "unknown outcome `{s}`: expected approve, review or block"
            )),
        }
    }
}

/// How the rules of a set combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Block rules first, then review, then allow (file order within each); the first
    /// that matches decides.
    #[default]
    Priority,
    /// The first rule in file order that matches decides.
    FirstMatched,
    /// Every rule is evaluated and every match reported; the most severe action decides
    /// (the first such rule in file order).
    AllMatched,
}

impl Mode {
    /// Its name in a rules file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::FirstMatched => "first_matched",
            Self::AllMatched => "all_matched",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "priority" => Ok(Self::Priority),
            "first_matched" => Ok(Self::FirstMatched),
            "all_matched" => Ok(Self::AllMatched),
            _ => Err(format!(
                "unknown mode `{s}`: expected priority, first_matched or all_matched"
            )),
        }
    }
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// This rule (its index in file order).
    Rule(usize),
    /// No rule matched and the score reached the model's threshold.
    Model,
    /// No rule matched and the score was under the threshold.
    ModelOnly,
}

/// A decision and who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decided {
    /// The decision.
    pub outcome: Outcome,
    /// Who made it.
    pub by: DecidedBy,
}

impl RuleSet {
    fn matches(&self, i: usize, facts: &Facts<'_>, lists: &ListView<'_>, m: &mut Memo) -> bool {
        self.rules
            .get(i)
            .is_some_and(|r| self.prog.truth(r.root, facts, lists, m))
    }

    /// Evaluate the rules against `facts`, finding lists in `lists` — the same
    /// [`Lists`] (or one with the same names) whose [`Lists::catalog`] compiled this
    /// set; after the names change, recompile.
    ///
    /// Fills `matched` (cleared first) with the indices of matching rules, per the mode:
    /// - [`Mode::Priority`]: block rules first in file order, then review, then allow;
    ///   the first match stops evaluation and is the only entry.
    /// - [`Mode::FirstMatched`]: file order; the first match stops evaluation.
    /// - [`Mode::AllMatched`]: every rule; all matches in file order.
    ///
    /// Returns the deciding rule: the first of `matched`, or for `AllMatched` the first
    /// matching rule with the most severe action. Allocates nothing once `matched` has
    /// capacity [`RuleSet::len`].
    pub fn evaluate(
        &self,
        facts: &Facts<'_>,
        lists: &Lists,
        matched: &mut Vec<u16>,
    ) -> Option<usize> {
        self.evaluate_among(facts, lists, matched, self.guards.candidates(facts))
    }

    /// [`RuleSet::evaluate`] over the rules in `candidates` only (the others are known
    /// not to match).
    pub(crate) fn evaluate_among(
        &self,
        facts: &Facts<'_>,
        lists: &Lists,
        matched: &mut Vec<u16>,
        candidates: Mask,
    ) -> Option<usize> {
        matched.clear();
        let view = ListView::new(lists, &self.lists, self.list_fingerprint);
        let mut memo = Memo::default();
        let m = &mut memo;
        let hit = match self.mode {
            Mode::Priority => self
                .by_severity
                .iter()
                .map(|&i| usize::from(i))
                .filter(|&i| candidates.has(i))
                .find(|&i| self.matches(i, facts, &view, m)),
            Mode::FirstMatched => candidates
                .rules(self.rules.len())
                .find(|&i| self.matches(i, facts, &view, m)),
            Mode::AllMatched => {
                let mut best: Option<(usize, Outcome)> = None;
                for i in candidates.rules(self.rules.len()) {
                    if self.matches(i, facts, &view, m) {
                        matched.push(i as u16);
                        let outcome = self.action(i).outcome();
                        if best.is_none_or(|(_, o)| outcome > o) {
                            best = Some((i, outcome));
                        }
                    }
                }
                return best.map(|(i, _)| i);
            }
        }?;
        matched.push(hit as u16);
        Some(hit)
    }

    /// The decision on `facts`: the deciding rule's action when a rule matched (an
    /// allow rule approves even what the model calls fraud); otherwise `model_outcome`
    /// when `facts.fraud`, else approve. `matched` is filled as by
    /// [`RuleSet::evaluate`].
    pub fn decide(
        &self,
        facts: &Facts<'_>,
        lists: &Lists,
        model_outcome: Outcome,
        matched: &mut Vec<u16>,
    ) -> Decided {
        match self.evaluate(facts, lists, matched) {
            Some(i) => Decided {
                outcome: self.action(i).outcome(),
                by: DecidedBy::Rule(i),
            },
            None if facts.fraud => Decided {
                outcome: model_outcome,
                by: DecidedBy::Model,
            },
            None => Decided {
                outcome: Outcome::Approve,
                by: DecidedBy::ModelOnly,
            },
        }
    }
}
