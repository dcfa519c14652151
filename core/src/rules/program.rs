//! The compiled form of a rule set's conditions: one flat arena of typed nodes whose
//! children are indices, and the three evaluators (number, string, bool) that walk it.
//! The type checker guarantees that each evaluator only meets its own kind of node;
//! should that ever fail, they answer NaN, `""` or false rather than panic. Recursion
//! is bounded by the nesting limit the parser enforces, and nothing here allocates.
//!
//! Two things keep a large rule set cheap. The terms of every `and` and `or` are
//! evaluated cheapest first ([`Program::cost`]: comparisons before string equality before
//! list lookups), which cannot change a result because no term has a side effect. And a
//! lookup of the same value in the same list (`card_id in @blocked_cards` in ten rules)
//! is done once per transaction: the first [`MEMO_SLOTS`] distinct lookups of a rule set
//! have a slot in a [`Memo`] that lives on the evaluating thread's stack.

use std::cmp::Ordering;

use super::facts::Facts;
use super::lists::{Lists, ValueList};

/// A comparison of two numbers. Every comparison with NaN is false, `!=` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    #[inline]
    pub(crate) fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Eq => a == b,
            // Not `a != b`, which is true for NaN.
            Self::Ne => matches!(a.partial_cmp(&b), Some(Ordering::Less | Ordering::Greater)),
        }
    }

    /// The comparison with its operands swapped: `a < b` is `b > a`.
    fn flipped(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            Self::Eq | Self::Ne => self,
        }
    }

    /// Its spelling in the language.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }
}

/// Arithmetic on two numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Arith {
    /// Its spelling in the language.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
        }
    }
}

/// One node. Children are indices into [`Program::nodes`]; `and` and `or` take a run
/// of [`Program::kids`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Node {
    // Numbers.
    Num(f64),
    /// A schema field, by index into [`Facts::values`].
    Field(u8),
    /// An entity feature, by index into [`Facts::derived`] (the catalog's order).
    Derived(u32),
    Score,
    RiskScore,
    Neg(u32),
    Arith(Arith, u32, u32),
    // Strings.
    /// A literal, by index into [`Program::strings`].
    Str(u32),
    Id,
    CardId,
    TerminalId,
    // Bools.
    Bool(bool),
    Fraud,
    Not(u32),
    And {
        start: u32,
        len: u32,
    },
    Or {
        start: u32,
        len: u32,
    },
    NumCmp(Cmp, u32, u32),
    /// A schema field against a constant: `Amount > 500` in one node.
    FieldCmp {
        op: Cmp,
        field: u8,
        value: f64,
    },
    /// An entity feature against a constant.
    DerivedCmp {
        op: Cmp,
        index: u32,
        value: f64,
    },
    /// The score (`risk`: `risk_score`) against a constant.
    ScoreCmp {
        op: Cmp,
        risk: bool,
        value: f64,
    },
    StrEq {
        a: u32,
        b: u32,
        negated: bool,
    },
    BoolEq {
        a: u32,
        b: u32,
        negated: bool,
    },
    /// `value in @list` (or `not in`); `list` indexes the rule set's list slots, and
    /// `memo` is the lookup's slot in a [`Memo`] ([`NO_MEMO`]: none).
    InNum {
        value: u32,
        list: u32,
        negated: bool,
        memo: u8,
    },
    InStr {
        value: u32,
        list: u32,
        negated: bool,
        memo: u8,
    },
}

/// How many distinct list lookups of a rule set are remembered per transaction.
pub(crate) const MEMO_SLOTS: usize = 64;
/// The `memo` of a lookup that has no slot (its value is not a plain field, or the slots
/// are taken): it is looked up each time it is met.
pub(crate) const NO_MEMO: u8 = u8::MAX;

/// The results of one transaction's list lookups so far: bit `k` of `known` says slot `k`
/// was looked up, and bit `k` of `member` what it found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Memo {
    known: u64,
    member: u64,
}

impl Memo {
    /// Membership for slot `slot`, computed by `lookup` on first use.
    fn get(&mut self, slot: u8, lookup: impl FnOnce() -> bool) -> bool {
        let Some(bit) = 1u64.checked_shl(u32::from(slot)) else {
            return lookup();
        };
        if self.known & bit == 0 {
            self.known |= bit;
            if lookup() {
                self.member |= bit;
            }
        }
        self.member & bit != 0
    }
}

/// What a lookup is keyed on for [`Memo`]: the value's node when it reads a transaction's
/// field as is, and the list slot.
pub(crate) fn memo_key(value: Node, list: u32) -> Option<(u64, u32)> {
    let what = match value {
        Node::Field(k) => 1 << 32 | u64::from(k),
        Node::Derived(j) => 2 << 32 | u64::from(j),
        Node::Score => 3 << 32,
        Node::RiskScore => 4 << 32,
        Node::Id => 5 << 32,
        Node::CardId => 6 << 32,
        Node::TerminalId => 7 << 32,
        _ => return None,
    };
    Some((what, list))
}

/// The arena.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    pub nodes: Vec<Node>,
    pub kids: Vec<u32>,
    pub strings: Vec<Box<str>>,
}

/// A list a rule set names: its name, and its position among the catalog's sorted
/// list names (which is its position in a [`Lists`] with the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListRef {
    pub name: std::sync::Arc<str>,
    pub index: usize,
}

/// How evaluation finds the lists: by position when the [`Lists`] has exactly the names
/// the rule set was compiled against (the usual case, checked once per evaluation), by
/// name otherwise (a list that is gone reads as empty).
pub(crate) struct ListView<'a> {
    lists: &'a Lists,
    refs: &'a [ListRef],
    by_index: bool,
}

impl<'a> ListView<'a> {
    pub(crate) fn new(lists: &'a Lists, refs: &'a [ListRef], fingerprint: u64) -> Self {
        Self {
            lists,
            refs,
            by_index: lists.fingerprint() == fingerprint,
        }
    }

    fn get(&self, slot: u32) -> Option<&'a ValueList> {
        let r = self.refs.get(slot as usize)?;
        if self.by_index {
            self.lists.by_index(r.index)
        } else {
            self.lists.get(&r.name)
        }
    }
}

impl Program {
    pub(crate) fn kids(&self, start: u32, len: u32) -> &[u32] {
        let start = start as usize;
        self.kids
            .get(start..start + len as usize)
            .unwrap_or_default()
    }

    /// The node for `a op b` on numbers: one node when one side reads a field, an entity
    /// feature or the score and the other is a constant (the common shape, and a third of
    /// the work), else [`Node::NumCmp`].
    pub(crate) fn num_cmp(&self, op: Cmp, a: u32, b: u32) -> Node {
        let fused = |op: Cmp, leaf: Node, value: f64| match leaf {
            Node::Field(field) => Some(Node::FieldCmp { op, field, value }),
            Node::Derived(index) => Some(Node::DerivedCmp { op, index, value }),
            Node::Score => Some(Node::ScoreCmp {
                op,
                risk: false,
                value,
            }),
            Node::RiskScore => Some(Node::ScoreCmp {
                op,
                risk: true,
                value,
            }),
            _ => None,
        };
        let node = |i: u32| self.nodes.get(i as usize).copied();
        match (node(a), node(b)) {
            (Some(leaf), Some(Node::Num(value))) => fused(op, leaf, value),
            (Some(Node::Num(value)), Some(leaf)) => fused(op.flipped(), leaf, value),
            _ => None,
        }
        .unwrap_or(Node::NumCmp(op, a, b))
    }

    /// What evaluating node `i` costs, roughly, in units of a comparison: the order in
    /// which `and` and `or` evaluate their terms (cheapest first).
    pub(crate) fn cost(&self, i: u32) -> u32 {
        let c = |k: u32| self.cost(k);
        match self.nodes.get(i as usize) {
            None => 0,
            Some(&node) => match node {
                Node::Neg(a) | Node::Not(a) => 1 + c(a),
                Node::Arith(_, a, b) => 2 + c(a) + c(b),
                Node::NumCmp(_, a, b) | Node::BoolEq { a, b, .. } => 1 + c(a) + c(b),
                Node::StrEq { a, b, .. } => 4 + c(a) + c(b),
                // A hash of the value and a probe that may miss the cache.
                Node::InNum { value, .. } => 10 + c(value),
                Node::InStr { value, .. } => 20 + c(value),
                Node::And { start, len } | Node::Or { start, len } => self
                    .kids(start, len)
                    .iter()
                    .fold(1u32, |sum, &k| sum.saturating_add(c(k))),
                _ => 1,
            },
        }
        .min(1 << 24)
    }

    /// A term of `and` or `or`: [`Program::truth`], with the fused comparisons (most
    /// terms) answered here, without a call.
    #[inline(always)]
    fn term(&self, i: u32, f: &Facts<'_>, l: &ListView<'_>, m: &mut Memo) -> bool {
        match self.nodes.get(i as usize) {
            Some(&Node::FieldCmp { op, field, value }) => op.apply(f.field(field), value),
            Some(&Node::DerivedCmp { op, index, value }) => op.apply(f.derived(index), value),
            Some(&Node::ScoreCmp { op, risk, value }) => op.apply(f.score(risk), value),
            _ => self.truth(i, f, l, m),
        }
    }

    /// A bool node's value; `m` holds the lookups done so far for this transaction.
    pub(crate) fn truth(&self, i: u32, f: &Facts<'_>, l: &ListView<'_>, m: &mut Memo) -> bool {
        let Some(&node) = self.nodes.get(i as usize) else {
            return false;
        };
        match node {
            Node::Bool(b) => b,
            Node::Fraud => f.fraud,
            Node::Not(a) => !self.truth(a, f, l, m),
            Node::And { start, len } => {
                self.kids(start, len).iter().all(|&k| self.term(k, f, l, m))
            }
            Node::Or { start, len } => self.kids(start, len).iter().any(|&k| self.term(k, f, l, m)),
            Node::NumCmp(op, a, b) => op.apply(self.num(a, f), self.num(b, f)),
            Node::FieldCmp { op, field, value } => op.apply(f.field(field), value),
            Node::DerivedCmp { op, index, value } => op.apply(f.derived(index), value),
            Node::ScoreCmp { op, risk, value } => op.apply(f.score(risk), value),
            Node::StrEq { a, b, negated } => (self.text(a, f) == self.text(b, f)) != negated,
            Node::BoolEq { a, b, negated } => {
                (self.truth(a, f, l, m) == self.truth(b, f, l, m)) != negated
            }
            Node::InNum {
                value,
                list,
                negated,
                memo,
            } => {
                let v = self.num(value, f);
                // A NaN is neither in nor not in a list: every comparison with NaN is false.
                !v.is_nan()
                    && m.get(memo, || l.get(list).is_some_and(|x| x.contains_num(v))) != negated
            }
            Node::InStr {
                value,
                list,
                negated,
                memo,
            } => {
                m.get(memo, || {
                    l.get(list)
                        .is_some_and(|x| x.contains_str(self.text(value, f)))
                }) != negated
            }
            _ => false,
        }
    }

    /// A number node's value.
    pub(crate) fn num(&self, i: u32, f: &Facts<'_>) -> f64 {
        let Some(&node) = self.nodes.get(i as usize) else {
            return f64::NAN;
        };
        match node {
            Node::Num(v) => v,
            Node::Field(k) => f.field(k),
            Node::Derived(j) => f.derived(j),
            Node::Score => f.score(false),
            Node::RiskScore => f.score(true),
            Node::Neg(a) => -self.num(a, f),
            Node::Arith(op, a, b) => {
                let (a, b) = (self.num(a, f), self.num(b, f));
                match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                }
            }
            _ => f64::NAN,
        }
    }

    /// A string node's value, borrowed from the program or the facts.
    pub(crate) fn text<'r>(&'r self, i: u32, f: &Facts<'r>) -> &'r str {
        match self.nodes.get(i as usize) {
            Some(&Node::Str(s)) => self.strings.get(s as usize).map_or("", |s| s),
            Some(Node::Id) => f.id,
            Some(Node::CardId) => f.card_id.unwrap_or(""),
            Some(Node::TerminalId) => f.terminal_id.unwrap_or(""),
            _ => "",
        }
    }
}
