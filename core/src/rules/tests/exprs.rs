use super::*;

fn check(cases: &[(&str, bool)], facts: &Facts<'_>) {
    for (expr, want) in cases {
        assert_eq!(holds(expr, facts), *want, "{expr}");
    }
}

#[test]
fn comparisons_and_arithmetic_on_numbers() {
    let t = tx();
    let f = Facts::new(&t, 0.75, true);
    check(
        &[
            ("Amount > 100", true),
            ("Amount >= 250", true),
            ("Amount < 250", false),
            ("Amount <= 250", true),
            ("Amount == 250", true),
            ("Amount != 250", false),
            ("Amount != 251", true),
            ("V1 == -1.5", true),
            ("Time == 1000", true),
            ("score == 0.75 and risk_score == 75", true),
            ("1 + 2 * 3 == 7", true),
            ("(1 + 2) * 3 == 9", true),
            ("10 - 4 - 3 == 3", true),
            ("100 / 10 / 2 == 5", true),
            ("-2 * 3 == -6", true),
            ("-V1 == 1.5", true),
            ("- -2 == 2", true),
            ("2 - -2 == 4", true),
            ("-1 - 1 == -2", true),
            ("-(1 - 1) == 0", true),
            ("Amount / 10 * 2 == 50", true),
            ("Amount == 2.5e2", true),
            ("Amount < 1e3", true),
            ("Amount > 25E1 - 1", true),
            ("1e-3 * 1000 == 1", true),
            ("1.5e+1 == 15", true),
        ],
        &f,
    );
}

#[test]
fn entity_features_and_the_models_verdict() {
    let t = tx();
    let f = Facts::new(&t, 0.75, true);
    check(
        &[
            ("card_id_count_1d >= 10", true),
            (
                "card_id_count_1d >= 10 and card_id_mean_amount_1d > 3 * Amount",
                false,
            ),
            ("card_id_mean_amount_1d * 10 > Amount", true),
            ("terminal_id_risk_7d == 0.25", true),
            ("fraud", true),
            ("fraud == true", true),
            ("fraud != false", true),
            ("not fraud", false),
            ("(Amount > 1) == (Amount > 2)", true),
            ("(Amount > 1) != (Amount > 300)", true),
        ],
        &f,
    );
    let f = Facts::new(&t, 0.1, false);
    assert!(holds("not fraud and score < 0.5", &f));
}

#[test]
fn precedence_not_binds_looser_than_comparison_tighter_than_and() {
    let t = tx();
    let f = Facts::new(&t, 0.5, false);
    check(
        &[
            // (not true) and false, not not (true and false).
            ("not true and false", false),
            ("not false and true", true),
            ("not (true and false)", true),
            // true or (true and false).
            ("true or true and false", true),
            ("(true or true) and false", false),
            ("false and true or true", true),
            // not (Amount > 300).
            ("not Amount > 300", true),
            ("not not fraud", false),
            ("not card_id in @blocked_cards", false),
            ("Amount > 1 and Amount < 1000 or false", true),
        ],
        &f,
    );
}

#[test]
fn strings_escapes_and_missing_ids() {
    let mut t = tx();
    let f = Facts::new(&t, 0.5, false);
    check(
        &[
            ("card_id == \"card-7\"", true),
            ("card_id != \"card-7\"", false),
            ("\"card-7\" == card_id", true),
            ("terminal_id == \"\"", true),
            (r#"id == "q\"uo\\te""#, true),
            (r#""a\"b" == "a\"b""#, true),
            (r#""a\\" != "a""#, true),
            ("\"# not a comment\" != id", true),
            ("card_id == \"Card-7\"", false),
        ],
        &f,
    );
    t.card_id = None;
    t.terminal_id = Some("term-1".into());
    let f = Facts::new(&t, 0.5, false);
    check(
        &[
            ("card_id == \"\"", true),
            // The blocked list holds "", so a missing card is in it.
            ("card_id in @blocked_cards", true),
            ("terminal_id in @trusted_terminals", true),
            ("terminal_id not in @trusted_terminals", false),
        ],
        &f,
    );
}

#[test]
fn every_comparison_with_nan_is_false() {
    let t = tx();
    let f = Facts::new(&t, 0.5, false);
    check(
        &[
            ("Amount / 0 > 1e300", true),
            ("-Amount / 0 < -1e300", true),
            ("0 / 0 == 0 / 0", false),
            ("0 / 0 != 1", false),
            ("0 / 0 < 1", false),
            ("0 / 0 >= 1", false),
            ("not (0 / 0 == 1)", true),
            ("0 / 0 in @round_amounts", false),
            ("0 / 0 not in @round_amounts", false),
            ("Amount / 0 in @round_amounts", false),
        ],
        &f,
    );
    // A feature the transaction does not carry is NaN.
    let mut catalog = catalog();
    catalog.derived.push("terminal_id_count_1d".into());
    let rules = compile("rule r: review if terminal_id_count_1d != 0", &catalog).unwrap();
    assert_eq!(rules.evaluate(&f, &lists(), &mut Vec::new()), None);
}

#[test]
fn lists_match_strings_and_numbers() {
    let mut t = tx();
    let f = Facts::new(&t, 0.5, false);
    check(
        &[
            ("card_id in @blocked_cards", true),
            ("card_id not in @blocked_cards", false),
            ("terminal_id in @trusted_terminals", false),
            ("Amount in @round_amounts", true),
            ("Amount + 1 in @round_amounts", false),
            ("Amount * 4 in @round_amounts", true),
            ("Amount - 250 in @round_amounts", true),
            ("-(Amount - 250) in @round_amounts", true),
            ("\"abc\" in @round_amounts", true),
            ("\"1e3\" in @round_amounts", true),
            ("\"1000\" in @round_amounts", false),
        ],
        &f,
    );
    t.card_id = Some("card-8".into());
    assert!(!holds(
        "card_id in @blocked_cards",
        &Facts::new(&t, 0.5, false)
    ));
}

#[test]
fn and_or_short_circuit_is_invisible_but_chains_flatten() {
    let t = tx();
    let f = Facts::new(&t, 0.5, false);
    let long_or = (0..200)
        .map(|i| format!("Amount == {i}"))
        .collect::<Vec<_>>()
        .join(" or ");
    assert!(!holds(&long_or, &f));
    assert!(holds(&format!("{long_or} or Amount == 250"), &f));
    let long_and = (0..200)
        .map(|i| format!("Amount > {i}"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert!(holds(&long_and, &f));
}
