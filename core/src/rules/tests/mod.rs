//! The rule language's tests: modes and decisions, expressions and types, compile
//! errors, lists, and a property test against an independent interpreter.

mod errors;
mod exprs;
mod lists;
mod modes;
mod prop;

use super::*;
use crate::schema::{AMOUNT, NUM_FIELDS, TIME, Transaction, field_index};

/// The entity features the tests' catalog offers, in transaction order.
pub(super) const DERIVED: [&str; 3] = [
    "card_id_count_1d",
    "card_id_mean_amount_1d",
    "terminal_id_risk_7d",
];

/// The tests' lists.
pub(super) const LIST_DATA: [(&str, &[&str]); 3] = [
    ("blocked_cards", &["card-7", "card-9", ""]),
    ("trusted_terminals", &["term-1"]),
    ("round_amounts", &["100", "250", "1e3", "-0", "abc"]),
];

pub(super) fn lists() -> Lists {
    let mut l = Lists::new();
    for (name, values) in LIST_DATA {
        l.insert(name, values);
    }
    l
}

pub(super) fn catalog() -> Catalog {
    lists().catalog(DERIVED.iter().map(|s| (*s).to_owned()).collect())
}

/// Amount 250, V1 -1.5, Time 1000, card `card-7`, no terminal, id `q"uo\te`, derived
/// `[12, 40, 0.25]`.
pub(super) fn tx() -> Transaction {
    let mut values = [0.0; NUM_FIELDS];
    values[AMOUNT] = 250.0;
    values[TIME] = 1000.0;
    values[field_index("V1").unwrap()] = -1.5;
    Transaction {
        id: "q\"uo\\te".into(),
        values,
        card_id: Some("card-7".into()),
        derived: vec![12.0, 40.0, 0.25],
        ..Transaction::default()
    }
}

pub(super) fn compile_ok(source: &str) -> RuleSet {
    compile(source, &catalog()).unwrap_or_else(|e| panic!("{source:?}: {e}"))
}

/// Whether the one-rule file `rule r: block if EXPR` matches `facts`.
pub(super) fn holds(expr: &str, facts: &Facts<'_>) -> bool {
    let rules = compile_ok(&format!("rule r: block if {expr}"));
    rules.evaluate(facts, &lists(), &mut Vec::new()).is_some()
}
