//! The compiled form of a rule set's conditions: one flat arena of typed nodes whose
//! children are indices, and the three evaluators (number, string, bool) that walk it.
//! The type checker guarantees that each evaluator only meets its own kind of node;
//! should that ever fail, they answer NaN, `""` or false rather than panic. Recursion
//! is bounded by the nesting limit the parser enforces, and nothing here allocates.

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
    fn apply(self, a: f64, b: f64) -> bool {
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
    /// `value in @list` (or `not in`); `list` indexes the rule set's list slots.
    InNum {
        value: u32,
        list: u32,
        negated: bool,
    },
    InStr {
        value: u32,
        list: u32,
        negated: bool,
    },
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
    fn kids(&self, start: u32, len: u32) -> &[u32] {
        let start = start as usize;
        self.kids
            .get(start..start + len as usize)
            .unwrap_or_default()
    }

    /// A bool node's value.
    pub(crate) fn truth(&self, i: u32, f: &Facts<'_>, l: &ListView<'_>) -> bool {
        let Some(&node) = self.nodes.get(i as usize) else {
            return false;
        };
        match node {
            Node::Bool(b) => b,
            Node::Fraud => f.fraud,
            Node::Not(a) => !self.truth(a, f, l),
            Node::And { start, len } => self.kids(start, len).iter().all(|&k| self.truth(k, f, l)),
            Node::Or { start, len } => self.kids(start, len).iter().any(|&k| self.truth(k, f, l)),
            Node::NumCmp(op, a, b) => op.apply(self.num(a, f), self.num(b, f)),
            Node::StrEq { a, b, negated } => (self.text(a, f) == self.text(b, f)) != negated,
            Node::BoolEq { a, b, negated } => {
                (self.truth(a, f, l) == self.truth(b, f, l)) != negated
            }
            Node::InNum {
                value,
                list,
                negated,
            } => {
                let v = self.num(value, f);
                // A NaN is neither in nor not in a list: every comparison with NaN is false.
                !v.is_nan() && l.get(list).is_some_and(|x| x.contains_num(v)) != negated
            }
            Node::InStr {
                value,
                list,
                negated,
            } => {
                l.get(list)
                    .is_some_and(|x| x.contains_str(self.text(value, f)))
                    != negated
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
            Node::Field(k) => f.values.get(usize::from(k)).copied().unwrap_or(f64::NAN),
            Node::Derived(j) => f
                .derived
                .get(j as usize)
                .map_or(f64::NAN, |&v| f64::from(v)),
            Node::Score => f64::from(f.score),
            Node::RiskScore => f64::from(f.score) * 100.0,
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
