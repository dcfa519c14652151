use std::time::Instant;

use super::*;

#[test]
fn values_match_as_strings_and_finite_numbers() {
    let l = ValueList::new([
        "100", "99.50", "abc", "-0", "1e3", "NaN", "inf", "abc", " 7",
    ]);
    assert_eq!(l.len(), 8, "duplicates are kept once");
    assert!(l.contains_str("99.50") && !l.contains_str("99.5"));
    assert!(l.contains_str("abc") && !l.contains_str("ABC") && !l.contains_str(""));
    assert!(l.contains_num(100.0) && l.contains_num(99.5) && l.contains_num(1000.0));
    assert!(l.contains_num(0.0) && l.contains_num(-0.0), "-0 == 0");
    assert!(!l.contains_num(f64::NAN) && !l.contains_num(f64::INFINITY));
    assert!(!l.contains_num(7.0), "\" 7\" is not a number");
    assert!(!l.contains_num(1.0));
    assert_eq!(
        l.iter().collect::<Vec<_>>(),
        ["100", "99.50", "abc", "-0", "1e3", "NaN", "inf", " 7"]
    );
    assert_eq!(
        l.sorted(),
        [" 7", "-0", "100", "1e3", "99.50", "NaN", "abc", "inf"]
    );
    let empty = ValueList::new(Vec::<String>::new());
    assert!(empty.is_empty() && !empty.contains_str("") && !empty.contains_num(0.0));
}

#[test]
fn inserting_a_list_again_replaces_it_and_rules_see_the_new_values() {
    let mut l = lists();
    let rules = compile(
        "rule a: block if card_id in @blocked_cards",
        &l.catalog(Vec::new()),
    )
    .unwrap();
    let t = tx();
    let f = Facts::new(&t, 0.5, false);
    let mut m = Vec::new();
    assert_eq!(rules.evaluate(&f, &l, &mut m), Some(0));
    l.insert("blocked_cards", ["card-1"]);
    assert_eq!(
        l.names(),
        ["blocked_cards", "round_amounts", "trusted_terminals"]
    );
    assert!(!l.get("blocked_cards").unwrap().contains_str("card-7"));
    assert_eq!(rules.evaluate(&f, &l, &mut m), None);
}

#[test]
fn rules_still_find_their_lists_by_name_when_the_names_change() {
    let mut l = lists();
    let rules = compile(
        "rule a: block if card_id in @trusted_terminals or card_id in @blocked_cards",
        &l.catalog(Vec::new()),
    )
    .unwrap();
    // A new list sorts first and shifts every position.
    l.insert("aaa", ["x"]);
    let t = tx();
    let f = Facts::new(&t, 0.5, false);
    assert_eq!(rules.evaluate(&f, &l, &mut Vec::new()), Some(0));
    // A set without the list reads it as empty.
    assert_eq!(rules.evaluate(&f, &Lists::new(), &mut Vec::new()), None);
    let negated = compile(
        "rule a: block if card_id not in @blocked_cards",
        &lists().catalog(Vec::new()),
    )
    .unwrap();
    assert_eq!(
        negated.evaluate(&f, &Lists::new(), &mut Vec::new()),
        Some(0)
    );
}

#[test]
fn list_names() {
    for ok in ["a", "blocked_cards", "_x", "cards.2024-01", "A-b.c_d"] {
        assert!(is_list_name(ok), "{ok}");
    }
    for bad in ["", "1a", "-a", ".a", "a b", "a@b", "é"] {
        assert!(!is_list_name(bad), "{bad}");
    }
    let l = lists();
    assert_eq!(
        l.names(),
        ["blocked_cards", "round_amounts", "trusted_terminals"]
    );
    assert!(l.get("nope").is_none());
    assert_eq!(
        l.catalog(vec!["f".into()]),
        Catalog {
            derived: vec!["f".into()],
            lists: l.names()
        }
    );
}

fn million_card_ids(n: usize) -> (ValueList, f64) {
    let started = Instant::now();
    let list = ValueList::new((0..n).map(|i| format!("card-{i:08}")));
    (list, started.elapsed().as_secs_f64())
}

fn check_membership(list: &ValueList, n: usize) {
    assert_eq!(list.len(), n);
    let step = (n / 1000).max(1);
    for i in (0..n).step_by(step) {
        assert!(list.contains_str(&format!("card-{i:08}")), "{i}");
        assert!(
            !list.contains_str(&format!("card-{:08}", n + i)),
            "{}",
            n + i
        );
        assert!(!list.contains_str(&format!("card-{i:07}")));
        assert!(!list.contains_num(i as f64));
    }
    assert!(list.contains_str(&format!("card-{:08}", n - 1)));
    assert!(!list.contains_str(""));
}

#[test]
fn a_list_of_100_000_card_ids() {
    let (list, _) = million_card_ids(100_000);
    check_membership(&list, 100_000);
}

/// About 1 s in a debug build (under 0.2 s in release); `benches/rules.rs` measures
/// its memory and lookups.
#[test]
fn a_list_of_1_000_000_card_ids() {
    let (list, secs) = million_card_ids(1_000_000);
    check_membership(&list, 1_000_000);
    eprintln!(
        "1,000,000 card ids: built in {secs:.2} s, {} MiB",
        list.heap_bytes() >> 20
    );
}

/// More distinct lookups than a transaction remembers (30 fields in 3 lists): the ones
/// past the slots are looked up each time, and every rule still answers right.
#[test]
fn lookups_past_the_memo_slots_are_still_right() {
    let l = lists();
    let t = tx();
    let fields: Vec<String> = (1..=28)
        .map(|k| format!("V{k}"))
        .chain(["Amount".into(), "Time".into()])
        .collect();
    let mut source = String::from("mode all_matched\n");
    let mut expected = Vec::new();
    for repeat in 0..2 {
        for list in ["round_amounts", "blocked_cards", "trusted_terminals"] {
            for field in &fields {
                let v = t.values[field_index(field).unwrap()];
                // Amount 250, Time 1000, V1 -1.5, the rest 0: all but V1 are round.
                let member = list == "round_amounts" && [100.0, 250.0, 1000.0, 0.0].contains(&v);
                source.push_str(&format!(
                    "rule a{repeat}_{list}_{field}: review if {field} in @{list}\n\
                     rule b{repeat}_{list}_{field}: review if {field} not in @{list}\n\
                     rule c{repeat}_{list}_{field}: review if {field} * 1 in @{list} or {field} in @{list}\n"
                ));
                expected.extend([member, !member, member]);
            }
        }
    }
    let rules = compile(&source, &l.catalog(DERIVED.map(str::to_owned).to_vec())).unwrap();
    let f = Facts::new(&t, 0.5, false);
    let mut matched = Vec::new();
    rules.evaluate(&f, &l, &mut matched);
    let got: Vec<bool> = (0..expected.len())
        .map(|i| matched.contains(&(i as u16)))
        .collect();
    assert_eq!(got, expected);
    assert!(
        expected.iter().filter(|&&m| m).count() > 100,
        "both answers are tested"
    );
}
