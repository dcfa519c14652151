use super::*;

/// (source, line, column, rule, a piece of the message)
#[rustfmt::skip]
const CASES: &[(&str, usize, usize, Option<&str>, &str)] = &[
    // Syntax.
    ("rule a: block if Amount >", 1, 26, Some("a"), "expected a value, found the end of the rule"),
    ("rule a block if true", 1, 8, Some("a"), "expected `:` after the rule's name"),
    ("rule a: block when true", 1, 15, Some("a"), "expected `if` after the action"),
    ("rule : block if true", 1, 6, None, "expected the rule's name after `rule`"),
    ("rule 9a: block if true", 1, 6, None, "malformed number `9a`"),
    ("rule a: block if (Amount > 1", 1, 29, Some("a"), "expected `)` to close the `(` of line 1, column 18"),
    ("rule a: block if Amount > 1 true", 1, 29, Some("a"), "expected `and`, `or` or the end of the rule, found `true`"),
    ("rule a: block if and", 1, 18, Some("a"), "expected a value, found `and`"),
    ("rule a: block if 1 < 2 < 3", 1, 24, Some("a"), "comparisons do not chain"),
    ("rule a: block if 1 == 1 in @round_amounts", 1, 25, Some("a"), "comparisons do not chain"),
    ("rule a: block if Amount = 1", 1, 25, Some("a"), "`=` is not an operator"),
    ("rule a: block if !fraud", 1, 18, Some("a"), "use `not`"),
    ("rule a: block if fraud && true", 1, 24, Some("a"), "use `and`"),
    ("rule a: block if Amount > 1e", 1, 27, Some("a"), "malformed number `1e`"),
    ("rule a: block if Amount > 1e999", 1, 27, Some("a"), "out of range"),
    ("rule a: block if \"abc", 1, 18, Some("a"), "unterminated string"),
    ("rule a: block if id == \"a\\nb\"", 1, 26, Some("a"), "unknown escape `\\n`"),
    ("rule a: block if id == \"é\" and ü", 1, 32, Some("a"), "unexpected character `ü`"),
    ("rule a: block if card_id in blocked_cards", 1, 29, Some("a"), "expected a list like `@blocked_cards` after `in`"),
    ("rule a: block if @blocked_cards", 1, 18, Some("a"), "a list can only follow `in`"),
    ("rule a: block if card_id in @", 1, 29, Some("a"), "`@` must be followed by a list name"),
    ("frobnicate the card", 1, 1, None, "expected `rule` or `mode`, found `frobnicate`"),
    ("  rule a: block if true", 1, 3, None, "an indented line continues the rule above it"),
    ("# header\n\t\n   rule a: block if true", 3, 4, None, "an indented line"),
    // Names and types.
    ("rule a: block if amount > 1", 1, 18, Some("a"), "unknown name `amount`; did you mean `Amount`?"),
    ("rule a: block if card_id_count_7d > 1", 1, 18, Some("a"), "did you mean `card_id_count_1d`?"),
    ("rule a: block if velocity > 1", 1, 18, Some("a"), "unknown name `velocity`"),
    ("rule a: block if Amount and true", 1, 18, Some("a"), "`Amount` is a number; `and` needs bools"),
    ("rule a: block if true or Amount", 1, 26, Some("a"), "`Amount` is a number; `or` needs bools"),
    ("rule a: block if not card_id", 1, 22, Some("a"), "`card_id` is a string; `not` needs bools"),
    ("rule a: block if card_id + 1 > 2", 1, 18, Some("a"), "`card_id` is a string; `+` needs numbers"),
    ("rule a: block if 1 * fraud > 2", 1, 22, Some("a"), "`fraud` is a bool; `*` needs numbers"),
    ("rule a: block if -card_id == 1", 1, 19, Some("a"), "`card_id` is a string; `-` needs numbers"),
    ("rule a: block if card_id < \"x\"", 1, 18, Some("a"), "`card_id` is a string; `<` needs numbers"),
    ("rule a: block if card_id == 1", 1, 26, Some("a"), "`==` needs two values of the same type: `card_id` is a string, `1` is a number"),
    ("rule a: block if (Amount > 1) != 2", 1, 31, Some("a"), "this operand is a bool"),
    ("rule a: block if fraud in @blocked_cards", 1, 18, Some("a"), "`fraud` is a bool; `in` needs a number or a string"),
    ("rule a: block if Amount", 1, 18, Some("a"), "`Amount` is a number; a rule's condition must be a bool"),
    ("rule a: block if (card_id)", 1, 18, Some("a"), "this operand is a string; a rule's condition"),
    // Lists.
    ("rule a: block if card_id in @nope", 1, 29, Some("a"), "list @nope does not exist"),
    ("rule a: block if card_id in @blocked_card", 1, 29, Some("a"), "did you mean @blocked_cards?"),
    // Directives.
    ("rule a: block if true\nrule a: allow if false", 2, 6, Some("a"), "rule `a` is already defined on line 1"),
    ("rule a: block if true\nmode priority", 2, 1, None, "`mode` must come before the first rule (line 1)"),
    ("mode priority\nmode all_matched", 2, 1, None, "the mode is already set on line 1"),
    ("mode sometimes", 1, 6, None, "unknown mode `sometimes`: expected priority, first_matched or all_matched"),
    ("mode", 1, 5, None, "expected a mode"),
    ("mode priority please", 1, 15, None, "expected the end of the `mode` line, found `please`"),
    ("rule a: deny if true", 1, 9, Some("a"), "unknown action `deny`: expected allow, review or block"),
    // Continuation lines: a token keeps its own line and column.
    ("rule a: block if Amount > 1\n  and card_id == 2", 2, 15, Some("a"), "`==` needs two values of the same type"),
    ("rule a: block if true\n\t# a comment between\n   or bogus", 3, 7, Some("a"), "unknown name `bogus`"),
    ("rule a: block if true\n  and\n", 2, 6, Some("a"), "expected a value, found the end of the rule"),
    ("rule a: review if true\nrule b: block if\n    Amount > \"x\"", 3, 14, Some("b"), "`\"x\"` is a string; `>` needs numbers"),
];

#[test]
fn every_compile_error_names_line_column_and_rule() {
    let catalog = catalog();
    for &(source, line, column, rule, message) in CASES {
        let e = match compile(source, &catalog) {
            Ok(_) => panic!("{source:?} compiled"),
            Err(e) => e,
        };
        assert_eq!(
            (e.line, e.column, e.rule.as_deref()),
            (line, column, rule),
            "{source:?}: {e}"
        );
        assert!(e.message.contains(message), "{source:?}: {e}");
    }
}

#[test]
fn the_error_prints_line_column_and_rule() {
    let e = compile("rule a: block if true\n  and bogus", &catalog()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "line 2, column 7 (rule a): unknown name `bogus`"
    );
    let e = compile("mode sometimes", &catalog()).unwrap_err();
    assert!(
        e.to_string().starts_with("line 1, column 6: unknown mode"),
        "{e}"
    );
}

#[test]
fn nesting_and_rule_count_are_bounded() {
    let catalog = catalog();
    let deep = |n: usize| format!("rule a: block if {}true{}", "(".repeat(n), ")".repeat(n));
    compile(&deep(MAX_DEPTH - 1), &catalog).unwrap();
    let e = compile(&deep(MAX_DEPTH + 1), &catalog).unwrap_err();
    assert!(e.message.contains("nests deeper"), "{e}");
    assert_eq!(e.column, 18 + MAX_DEPTH, "the first `(` too many");
    let e = compile(&deep(100_000), &catalog).unwrap_err();
    assert!(e.message.contains("nests deeper"), "{e}");

    let nots = format!("rule a: block if {}true", "not ".repeat(100_000));
    assert!(
        compile(&nots, &catalog)
            .unwrap_err()
            .message
            .contains("nests deeper")
    );
    let minus = format!("rule a: block if {}1 > 0", "-".repeat(100_000));
    assert!(
        compile(&minus, &catalog)
            .unwrap_err()
            .message
            .contains("nests deeper")
    );
    // A left-deep chain of operators is as tall as it is long.
    let sum = format!("rule a: block if {}1 > 0", "1 + ".repeat(100_000));
    let e = compile(&sum, &catalog).unwrap_err();
    assert!(e.message.contains("nests deeper"), "{e}");
    assert_eq!(
        e.column,
        18 + 4 * MAX_DEPTH - 2,
        "at the operator that is one too many"
    );
    // `and` and `or` chains are flat: any length is fine.
    let ors = format!("rule a: block if {}false", "false or ".repeat(100_000));
    compile(&ors, &catalog).unwrap();

    let many = |n: usize| {
        (0..n)
            .map(|i| format!("rule r{i}: block if Amount > {i}\n"))
            .collect::<String>()
    };
    assert_eq!(
        compile(&many(MAX_RULES), &catalog).unwrap().len(),
        MAX_RULES
    );
    let e = compile(&many(MAX_RULES + 1), &catalog).unwrap_err();
    assert_eq!((e.line, e.column), (MAX_RULES + 1, 1));
    assert!(e.message.contains("at most 10000 rules"), "{e}");
}

#[test]
fn odd_input_never_panics() {
    let catalog = catalog();
    for source in [
        "\u{feff}rule a: block if true",
        "rule a: block if \"\u{0}\" == id",
        "rule a: block if id == \"\\",
        "\r\n\r\nrule a: block if true\r\n  and fraud\r\n",
        "rule",
        "rule a",
        "rule a:",
        "rule a: block",
        "rule a: block if",
        "rule a: block if (",
        "rule a: block if )",
        "rule a: block if not",
        "rule a: block if 1 not",
        "rule a: block if 1 not in",
        "rule a: block if 00000000000000000000000000000001 == 1",
        "rule a: block if 1.e3 > 0",
        "@@@@",
        "\"",
        "#",
        "mode\tall_matched\n\trule",
    ] {
        let _result = compile(source, &catalog);
    }
    // Windows line ends are fine.
    let rules = compile("rule a: block if true\r\n  and fraud\r\n", &catalog).unwrap();
    assert_eq!(rules.text(0), "rule a: block if true\n  and fraud");
}
