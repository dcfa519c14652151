//! Evaluating rules allocates nothing. 100 rules (comparisons, arithmetic, list lookups,
//! entity features, string equality) in each mode, 10,000 evaluations each, counted by
//! a counting wrapper around the system allocator that counts only this thread's
//! allocations, only inside `measure`. The wrapper is `allocation-counter`'s: writing
//! one takes an `unsafe impl GlobalAlloc`, and the workspace forbids unsafe code.

use std::hint::black_box;

use fraudstream_core::rules::{Catalog, DecidedBy, Facts, Lists, Mode, Outcome, RuleSet, compile};
use fraudstream_core::schema::{AMOUNT, NUM_FIELDS, Transaction, field_index};

const DERIVED: [&str; 4] = [
    "card_id_count_1d",
    "card_id_mean_amount_1d",
    "terminal_id_risk_7d",
    "terminal_id_delayed_count_7d",
];

fn lists() -> Lists {
    let mut l = Lists::new();
    l.insert("blocked_cards", (0..10_000).map(|i| format!("card-{i:06}")));
    l.insert(
        "trusted_terminals",
        (0..100).map(|i| format!("term-{i:03}")),
    );
    l.insert("round_amounts", ["10", "50", "100", "500", "1000"]);
    l
}

/// Ten shapes of rule, ten thresholds each.
fn hundred_rules(mode: Mode) -> String {
    let mut s = format!("mode {mode}\n");
    for i in 0..10 {
        let k = f64::from(i);
        let rules = [
            format!(
                "block if card_id in @blocked_cards and Amount > {}",
                100.0 * k
            ),
            format!(
                "review if risk_score > {} and Amount > {}",
                50.0 + k,
                500.0 + 10.0 * k
            ),
            format!(
                "allow if terminal_id in @trusted_terminals and score < 0.{}",
                9 - i % 9
            ),
            format!(
                "block if card_id_count_1d >= {}\n  and card_id_mean_amount_1d > {} * Amount",
                5 + i,
                1.0 + k / 10.0
            ),
            format!(
                "review if (Amount - card_id_mean_amount_1d) / (card_id_count_1d + 1) > {}",
                20.0 * k
            ),
            format!("block if card_id == \"card-{i:06}\" or terminal_id == \"term-{i:03}\""),
            format!(
                "review if Amount in @round_amounts and V1 < -{} and not fraud",
                k / 2.0
            ),
            format!(
                "allow if terminal_id_risk_7d < 0.0{} and terminal_id_delayed_count_7d > {}",
                i + 1,
                10 * i
            ),
            format!(
                "review if card_id not in @blocked_cards and -V2 * 3 + V3 > {}",
                k
            ),
            format!(
                "block if fraud and (terminal_id_risk_7d > 0.{} or id == \"tx-{i}\")",
                5 + i % 5
            ),
        ];
        for (j, r) in rules.iter().enumerate() {
            s.push_str(&format!("rule r{i}_{j}: {r}\n"));
        }
    }
    s
}

fn transactions() -> Vec<(Transaction, f32, bool)> {
    (0..16u16)
        .map(|i| {
            let k = f64::from(i);
            let mut values = [0.0; NUM_FIELDS];
            values[AMOUNT] = [10.0, 99.5, 1000.0, 2500.0][usize::from(i % 4)] + k;
            values[field_index("V1").unwrap()] = -k / 3.0;
            values[field_index("V2").unwrap()] = k - 8.0;
            values[field_index("V3").unwrap()] = k * 0.7;
            let tx = Transaction {
                id: format!("tx-{i}"),
                values,
                card_id: (i % 5 != 0).then(|| format!("card-{:06}", u32::from(i) * 997)),
                terminal_id: (i % 3 != 0).then(|| format!("term-{:03}", i * 7)),
                derived: vec![
                    f32::from(i),
                    40.0 + f32::from(i),
                    f32::from(i) / 20.0,
                    f32::from(i * 5),
                ],
                ..Transaction::default()
            };
            (tx, f32::from(i) / 16.0, i % 2 == 0)
        })
        .collect()
}

fn run(
    rules: &RuleSet,
    lists: &Lists,
    txs: &[(Transaction, f32, bool)],
    matched: &mut Vec<u16>,
    n: usize,
) -> usize {
    let mut by_rules = 0;
    for k in 0..n {
        let (tx, score, fraud) = &txs[k % txs.len()];
        let facts = Facts::new(tx, *score, *fraud);
        let d = rules.decide(&facts, lists, Outcome::Review, matched);
        by_rules += usize::from(matches!(d.by, DecidedBy::Rule(_)));
        black_box(rules.evaluate(&facts, lists, matched));
    }
    by_rules
}

#[test]
fn evaluation_allocates_nothing_in_any_mode() {
    let sanity = allocation_counter::measure(|| {
        black_box(vec![1u8; 16]);
    });
    assert!(sanity.count_total >= 1, "the allocator counts");

    let lists = lists();
    let txs = transactions();
    for mode in [Mode::Priority, Mode::FirstMatched, Mode::AllMatched] {
        let catalog = lists.catalog(DERIVED.map(str::to_owned).to_vec());
        let rules = compile(&hundred_rules(mode), &catalog).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.len(), 100);
        assert_eq!(rules.mode(), mode);
        assert_eq!(rules.derived_used().len(), DERIVED.len());
        assert_eq!(rules.lists_used().len(), 3);
        let mut matched = Vec::with_capacity(rules.len());
        let warm = run(&rules, &lists, &txs, &mut matched, txs.len());
        assert!(warm > 0, "{mode}: rules match");
        let mut decided = 0;
        let info = allocation_counter::measure(|| {
            decided = run(&rules, &lists, &txs, &mut matched, 10_000);
        });
        assert_eq!(info.count_total, 0, "{mode}: {info:?}");
        assert!(decided > 0);
    }
}

#[test]
fn a_catalog_is_plain_data() {
    // The catalog of a `Lists` is what the rules were compiled against.
    let l = lists();
    let c: Catalog = l.catalog(Vec::new());
    assert_eq!(
        c.lists,
        ["blocked_cards", "round_amounts", "trusted_terminals"]
    );
}
