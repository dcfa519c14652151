use super::*;

const RULES: &str = "\
rule big_allow: allow if Amount > 100
rule mid_review: review if Amount > 50
rule huge_block: block if Amount > 200
rule card_block: block if card_id == \"card-7\"
rule small_review: review if Amount < 10
";

fn with_mode(mode: &str) -> RuleSet {
    compile_ok(&format!("mode {mode}\n{RULES}"))
}

fn amount(a: f64, card: Option<&str>) -> Transaction {
    let mut t = tx();
    t.values[AMOUNT] = a;
    t.card_id = card.map(str::to_owned);
    t
}

fn run(rules: &RuleSet, t: &Transaction, fraud: bool) -> (Decided, Vec<u16>) {
    let mut matched = Vec::with_capacity(rules.len());
    let d = rules.decide(
        &Facts::new(t, 0.5, fraud),
        &lists(),
        Outcome::Block,
        &mut matched,
    );
    (d, matched)
}

#[test]
fn priority_tries_block_then_review_then_allow_in_file_order_within_each() {
    let rules = with_mode("priority");
    assert_eq!(rules.mode(), Mode::Priority);
    // Every rule but small_review matches: the first block rule in file order decides.
    let (d, m) = run(&rules, &amount(300.0, Some("card-7")), false);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Block,
            by: DecidedBy::Rule(2)
        }
    );
    assert_eq!(m, [2]);
    // Only the card rule blocks.
    let (d, m) = run(&rules, &amount(150.0, Some("card-7")), false);
    assert_eq!(d.by, DecidedBy::Rule(3));
    assert_eq!(m, [3]);
    // No block rule: review beats allow although allow comes first in the file.
    let (d, m) = run(&rules, &amount(150.0, None), false);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Review,
            by: DecidedBy::Rule(1)
        }
    );
    assert_eq!(m, [1]);
}

#[test]
fn first_matched_takes_file_order() {
    let rules = with_mode("first_matched");
    let (d, m) = run(&rules, &amount(300.0, Some("card-7")), true);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Approve,
            by: DecidedBy::Rule(0)
        }
    );
    assert_eq!(m, [0]);
    let (d, m) = run(&rules, &amount(5.0, Some("card-7")), false);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Block,
            by: DecidedBy::Rule(3)
        }
    );
    assert_eq!(m, [3]);
}

#[test]
fn all_matched_reports_every_match_and_the_most_severe_decides() {
    let rules = with_mode("all_matched");
    let (d, m) = run(&rules, &amount(300.0, Some("card-7")), false);
    assert_eq!(m, [0, 1, 2, 3]);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Block,
            by: DecidedBy::Rule(2)
        }
    );
    let (d, m) = run(&rules, &amount(150.0, None), false);
    assert_eq!(m, [0, 1]);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Review,
            by: DecidedBy::Rule(1)
        }
    );
    let (d, m) = run(&rules, &amount(75.0, None), false);
    assert_eq!(m, [1]);
    assert_eq!(d.by, DecidedBy::Rule(1));
}

#[test]
fn an_allow_rule_overrides_the_models_fraud_verdict() {
    let rules = compile_ok("rule trusted: allow if terminal_id in @trusted_terminals");
    let mut t = tx();
    t.terminal_id = Some("term-1".into());
    let (d, _) = run(&rules, &t, true);
    assert_eq!(
        d,
        Decided {
            outcome: Outcome::Approve,
            by: DecidedBy::Rule(0)
        }
    );
}

#[test]
fn without_a_match_the_model_decides() {
    for mode in ["priority", "first_matched", "all_matched"] {
        let rules = with_mode(mode);
        let quiet = amount(20.0, None);
        let (d, m) = run(&rules, &quiet, true);
        assert_eq!(
            d,
            Decided {
                outcome: Outcome::Block,
                by: DecidedBy::Model
            },
            "{mode}"
        );
        assert!(m.is_empty());
        let (d, _) = run(&rules, &quiet, false);
        assert_eq!(
            d,
            Decided {
                outcome: Outcome::Approve,
                by: DecidedBy::ModelOnly
            }
        );
        let mut matched = vec![7];
        let d = rules.decide(
            &Facts::new(&quiet, 0.9, true),
            &lists(),
            Outcome::Review,
            &mut matched,
        );
        assert_eq!(
            d.outcome,
            Outcome::Review,
            "the model's outcome is passed through"
        );
        assert!(matched.is_empty(), "matched is cleared");
    }
}

#[test]
fn an_empty_file_is_a_rule_set_without_rules() {
    for source in [
        "",
        "\n\n",
        "# nothing yet\n   \n\t# still nothing\n",
        "mode all_matched\n",
    ] {
        let rules = compile_ok(source);
        assert!(rules.is_empty());
        assert_eq!(rules.len(), 0);
        let (d, _) = run(&rules, &tx(), false);
        assert_eq!(d.by, DecidedBy::ModelOnly);
    }
    assert_eq!(compile_ok("mode all_matched").mode(), Mode::AllMatched);
    assert_eq!(compile_ok("").mode(), Mode::Priority);
}

#[test]
fn accessors_report_names_actions_text_and_what_is_used() {
    let source = "# header\nmode first_matched\n\
        rule burst: block if card_id_count_1d >= 10   # many\n\
        \x20 and card_id_mean_amount_1d > 3 * Amount  # and large\n\
        \n\
        rule listed: review if card_id in @blocked_cards or Amount in @round_amounts\n\
        rule blocked_again: review if card_id not in @blocked_cards\n";
    let rules = compile_ok(source);
    assert_eq!(rules.len(), 3);
    assert_eq!(&**rules.name(0), "burst");
    assert_eq!(rules.action(0), Action::Block);
    assert_eq!(rules.line(0), 3);
    assert_eq!(
        rules.text(0),
        "rule burst: block if card_id_count_1d >= 10\n  and card_id_mean_amount_1d > 3 * Amount"
    );
    assert_eq!(rules.action(1), Action::Review);
    assert_eq!(rules.line(1), 6);
    assert_eq!(rules.lists_used(), ["blocked_cards", "round_amounts"]);
    assert_eq!(
        rules.derived_used(),
        ["card_id_count_1d", "card_id_mean_amount_1d"]
    );
}

#[test]
fn enums_print_parse_and_serialise() {
    for o in [Outcome::Approve, Outcome::Review, Outcome::Block] {
        assert_eq!(o.to_string().parse::<Outcome>().unwrap(), o);
        assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
    }
    assert!(Outcome::Approve < Outcome::Review && Outcome::Review < Outcome::Block);
    for m in [Mode::Priority, Mode::FirstMatched, Mode::AllMatched] {
        assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
    }
    assert_eq!(
        serde_json::to_string(&Mode::FirstMatched).unwrap(),
        "\"first_matched\""
    );
    for a in [Action::Allow, Action::Review, Action::Block] {
        assert_eq!(a.to_string().parse::<Action>().unwrap(), a);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
    }
    assert_eq!(Action::Allow.outcome(), Outcome::Approve);
    assert_eq!(Action::Review.outcome(), Outcome::Review);
    assert_eq!(Action::Block.outcome(), Outcome::Block);
    assert!("deny".parse::<Action>().is_err());
    assert!("maybe".parse::<Outcome>().is_err());
}

#[test]
fn rules_past_the_guard_index_are_evaluated_in_every_mode() {
    // 300 rules: the index covers the first 256; rules 100 and 299 match Amount 250.
    let mut source = String::new();
    for i in 0..300 {
        let rule = match i {
            100 => "review if Amount > 200".to_owned(),
            299 => "block if Amount > 1".to_owned(),
            _ => format!("review if Amount > {}", 1_000_000 + i),
        };
        source.push_str(&format!("rule r{i}: {rule}\n"));
    }
    let t = tx();
    let f = Facts::new(&t, 0.1, false);
    let lists = lists();
    let mut matched = Vec::new();
    for (mode, hit, all) in [
        ("priority", 299, vec![299]),
        ("first_matched", 100, vec![100]),
        ("all_matched", 299, vec![100, 299]),
    ] {
        let rules = compile_ok(&format!("mode {mode}\n{source}"));
        assert_eq!(
            rules.evaluate(&f, &lists, &mut matched),
            Some(hit),
            "{mode}"
        );
        assert_eq!(matched, all, "{mode}");
    }
}

#[test]
fn guards_at_the_same_bound_keep_strict_and_inclusive_apart() {
    // Amount is 250: the inclusive bounds hold, the strict ones do not, in any order.
    let rules = compile_ok(
        "mode all_matched\n\
         rule gt: review if Amount > 250\n\
         rule ge: review if Amount >= 250\n\
         rule lt: review if Amount < 250 and V1 < 0\n\
         rule le: review if Amount <= 250 and V1 < 0\n\
         rule ge2: review if 250 <= Amount\n\
         rule gt2: review if 250 < Amount",
    );
    let t = tx();
    let mut matched = Vec::new();
    rules.evaluate(&Facts::new(&t, 0.1, false), &lists(), &mut matched);
    assert_eq!(matched, vec![1, 3, 4]);
}

#[test]
fn guards_treat_negative_zero_as_zero() {
    let mut t = tx();
    t.values[AMOUNT] = -0.0;
    let rules = compile_ok(
        "mode all_matched\n\
         rule a: review if Amount <= 250\n\
         rule b: review if Amount < 0.0\n\
         rule c: review if Amount <= -0.0\n\
         rule d: review if Amount >= 0.0\n\
         rule e: review if Amount > -0.0",
    );
    let mut matched = Vec::new();
    rules.evaluate(&Facts::new(&t, 0.1, false), &lists(), &mut matched);
    assert_eq!(matched, vec![0, 2, 3]);
}
