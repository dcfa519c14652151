//! The rule compiler on arbitrary bytes: never a panic. Text that is UTF-8 is compiled
//! against a catalog with a few entity features and lists; an error must point inside
//! the text (1-based line and column), and a rule set that compiles is evaluated once
//! on a fixed transaction in its own mode and in every other, and must decide by one
//! of its rules or the model.
#![no_main]

use fraudstream_core::rules::{Catalog, DecidedBy, Facts, Lists, Mode, Outcome, compile};
use fraudstream_core::schema::{AMOUNT, NUM_FIELDS, Transaction};
use libfuzzer_sys::fuzz_target;

const DERIVED: [&str; 4] = [
    "card_id_count_1d",
    "card_id_mean_amount_1d",
    "terminal_id_risk_7d",
    "night",
];

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let mut lists = Lists::new();
    lists.insert("blocked_cards", ["card-7", "card-9", ""]);
    lists.insert("trusted.terminals-2024", ["term-1"]);
    lists.insert("round_amounts", ["10", "100", "1e3", "-0"]);
    let catalog = Catalog {
        derived: DERIVED.map(str::to_owned).to_vec(),
        lists: lists.names(),
    };
    let rules = match compile(source, &catalog) {
        Ok(rules) => rules,
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(e.line <= source.split('\n').count(), "{e}");
            let _shown = e.to_string();
            return;
        }
    };
    let mut values = [0.5; NUM_FIELDS];
    values[AMOUNT] = 100.0;
    let tx = Transaction {
        id: "tx-1".into(),
        values,
        card_id: Some("card-7".into()),
        derived: vec![3.0, 40.0, 0.25],
        ..Transaction::default()
    };
    let facts = Facts::new(&tx, 0.75, true);
    let mut matched = Vec::with_capacity(rules.len());
    let decided = rules.decide(&facts, &lists, Outcome::Review, &mut matched);
    match decided.by {
        DecidedBy::Rule(i) => {
            assert!(i < rules.len());
            assert_eq!(decided.outcome, rules.action(i).outcome());
            assert!(matched.contains(&(i as u16)));
            let _text = rules.text(i);
        }
        DecidedBy::Model => assert!(matched.is_empty()),
        DecidedBy::ModelOnly => unreachable!("facts.fraud is true"),
    }
    assert!(matched.iter().all(|&i| usize::from(i) < rules.len()));
    if rules.mode() != Mode::AllMatched {
        assert!(matched.len() <= 1);
    }
});
