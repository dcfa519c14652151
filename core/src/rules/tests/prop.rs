//! Random well-typed expressions, printed with as few parentheses as the precedence
//! allows, compiled, evaluated, and compared with a direct interpretation of the tree
//! they were printed from.

use proptest::prelude::*;

use super::*;
use crate::rng::Rng;

#[derive(Debug, Clone)]
enum E {
    Num(f64),
    Field(&'static str),
    Derived(usize),
    Score,
    RiskScore,
    Neg(Box<E>),
    Arith(char, Box<E>, Box<E>),
    Str(&'static str),
    Id,
    Card,
    Terminal,
    Bool(bool),
    Fraud,
    Not(Box<E>),
    And(Box<E>, Box<E>),
    Or(Box<E>, Box<E>),
    /// `<`, `<=`, `>`, `>=`, `==`, `!=` on numbers.
    Cmp(&'static str, Box<E>, Box<E>),
    /// `==` (false) or `!=` (true) on strings, or on bools.
    StrEq(bool, Box<E>, Box<E>),
    BoolEq(bool, Box<E>, Box<E>),
    /// `in` (false) or `not in` (true).
    In(bool, Box<E>, &'static str),
}

#[derive(Clone, Copy)]
enum T {
    Num,
    Str,
    Bool,
}

const NUMS: [f64; 10] = [0.0, -0.0, 1.0, 2.5, 250.0, 1e3, 1e-3, 7.0, 100.0, -3.0];
const FIELDS: [&str; 4] = ["Amount", "V1", "Time", "V2"];
const STRS: [&str; 7] = [
    "",
    "card-7",
    "card-9",
    "a\"b",
    "x\\y",
    "term-1",
    "q\"uo\\te",
];

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

fn random_expr(rng: &mut Rng, ty: T, depth: usize) -> E {
    let leaf = depth == 0 || (depth < 5 && rng.below(4) == 0);
    let b = |rng: &mut Rng, ty| Box::new(random_expr(rng, ty, depth.saturating_sub(1)));
    match ty {
        T::Num if leaf => match rng.below(5) {
            0 | 1 => E::Num(pick(rng, &NUMS)),
            2 => E::Field(pick(rng, &FIELDS)),
            3 => E::Derived(rng.below(DERIVED.len())),
            _ => {
                if rng.below(2) == 0 {
                    E::Score
                } else {
                    E::RiskScore
                }
            }
        },
        T::Num => match rng.below(5) {
            0 => E::Neg(b(rng, T::Num)),
            k => E::Arith(['+', '-', '*', '/'][k - 1], b(rng, T::Num), b(rng, T::Num)),
        },
        T::Str => match rng.below(5) {
            0 | 1 => E::Str(pick(rng, &STRS)),
            2 => E::Id,
            3 => E::Card,
            _ => E::Terminal,
        },
        T::Bool if leaf => match rng.below(3) {
            0 => E::Bool(true),
            1 => E::Bool(false),
            _ => E::Fraud,
        },
        T::Bool => match rng.below(9) {
            0 => E::Not(b(rng, T::Bool)),
            1 => E::And(b(rng, T::Bool), b(rng, T::Bool)),
            2 => E::Or(b(rng, T::Bool), b(rng, T::Bool)),
            3 | 4 => E::Cmp(
                pick(rng, &["<", "<=", ">", ">=", "==", "!="]),
                b(rng, T::Num),
                b(rng, T::Num),
            ),
            5 => E::StrEq(rng.below(2) == 0, b(rng, T::Str), b(rng, T::Str)),
            6 => E::BoolEq(rng.below(2) == 0, b(rng, T::Bool), b(rng, T::Bool)),
            _ => {
                let list = pick(rng, &LIST_DATA.map(|(n, _)| n));
                let ty = if rng.below(2) == 0 { T::Num } else { T::Str };
                E::In(rng.below(2) == 0, b(rng, ty), list)
            }
        },
    }
}

/// The source text of `e` and its precedence level (1 `or` … 8 atom).
fn print(e: &E) -> (String, u8) {
    let wrap = |e: &E, min: u8| {
        let (s, level) = print(e);
        if level >= min { s } else { format!("({s})") }
    };
    match e {
        E::Num(v) => (format!("{v:?}"), if v.is_sign_negative() { 7 } else { 8 }),
        E::Field(f) => ((*f).to_owned(), 8),
        E::Derived(j) => (DERIVED[*j].to_owned(), 8),
        E::Score => ("score".into(), 8),
        E::RiskScore => ("risk_score".into(), 8),
        E::Neg(a) => {
            let inner = wrap(a, 7);
            let space = if inner.starts_with('-') { " " } else { "" };
            (format!("-{space}{inner}"), 7)
        }
        E::Arith(op, a, b) => {
            let level = if matches!(op, '+' | '-') { 5 } else { 6 };
            (
                format!("{} {op} {}", wrap(a, level), wrap(b, level + 1)),
                level,
            )
        }
        E::Str(s) => (
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            8,
        ),
        E::Id => ("id".into(), 8),
        E::Card => ("card_id".into(), 8),
        E::Terminal => ("terminal_id".into(), 8),
        E::Bool(b) => (b.to_string(), 8),
        E::Fraud => ("fraud".into(), 8),
        E::Not(a) => (format!("not {}", wrap(a, 3)), 3),
        E::And(a, b) => (format!("{} and {}", wrap(a, 2), wrap(b, 3)), 2),
        E::Or(a, b) => (format!("{} or {}", wrap(a, 1), wrap(b, 2)), 1),
        E::Cmp(op, a, b) => (format!("{} {op} {}", wrap(a, 5), wrap(b, 5)), 4),
        E::StrEq(ne, a, b) | E::BoolEq(ne, a, b) => {
            let op = if *ne { "!=" } else { "==" };
            (format!("{} {op} {}", wrap(a, 5), wrap(b, 5)), 4)
        }
        E::In(neg, a, list) => {
            let op = if *neg { "not in" } else { "in" };
            (format!("{} {op} @{list}", wrap(a, 5)), 4)
        }
    }
}

fn num(e: &E, f: &Facts<'_>) -> f64 {
    match e {
        E::Num(v) => *v,
        E::Field(name) => f.values[field_index(name).unwrap()],
        E::Derived(j) => f64::from(f.derived[*j]),
        E::Score => f64::from(f.score),
        E::RiskScore => f64::from(f.score) * 100.0,
        E::Neg(a) => -num(a, f),
        E::Arith(op, a, b) => {
            let (a, b) = (num(a, f), num(b, f));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => a / b,
            }
        }
        _ => unreachable!("not a number: {e:?}"),
    }
}

fn text<'a>(e: &'a E, f: &Facts<'a>) -> &'a str {
    match e {
        E::Str(s) => s,
        E::Id => f.id,
        E::Card => f.card_id.unwrap_or(""),
        E::Terminal => f.terminal_id.unwrap_or(""),
        _ => unreachable!("not a string: {e:?}"),
    }
}

fn truth(e: &E, f: &Facts<'_>) -> bool {
    match e {
        E::Bool(b) => *b,
        E::Fraud => f.fraud,
        E::Not(a) => !truth(a, f),
        E::And(a, b) => truth(a, f) && truth(b, f),
        E::Or(a, b) => truth(a, f) || truth(b, f),
        E::Cmp(op, a, b) => {
            let (a, b) = (num(a, f), num(b, f));
            match *op {
                "<" => a < b,
                "<=" => a <= b,
                ">" => a > b,
                ">=" => a >= b,
                "==" => a == b,
                _ => !a.is_nan() && !b.is_nan() && a != b,
            }
        }
        E::StrEq(ne, a, b) => (text(a, f) == text(b, f)) != *ne,
        E::BoolEq(ne, a, b) => (truth(a, f) == truth(b, f)) != *ne,
        E::In(neg, a, list) => {
            let values = LIST_DATA.iter().find(|(n, _)| n == list).unwrap().1;
            let numeric = matches!(
                **a,
                E::Num(_)
                    | E::Field(_)
                    | E::Derived(_)
                    | E::Score
                    | E::RiskScore
                    | E::Neg(_)
                    | E::Arith(..)
            );
            if numeric {
                let x = num(a, f);
                if x.is_nan() {
                    return false;
                }
                let found = values
                    .iter()
                    .any(|v| v.parse::<f64>().is_ok_and(|p| p.is_finite() && p == x));
                found != *neg
            } else {
                values.contains(&text(a, f)) != *neg
            }
        }
        _ => unreachable!("not a bool: {e:?}"),
    }
}

fn random_tx(rng: &mut Rng) -> (Transaction, f32, bool) {
    let mut t = tx();
    t.values[AMOUNT] = pick(rng, &[0.0, 100.0, 250.0, 1000.0, 0.001, -0.0, 7.0]);
    t.values[field_index("V1").unwrap()] = pick(rng, &[-1.5, 0.0, 2.5]);
    t.values[field_index("V2").unwrap()] = pick(rng, &[-3.0, 1e3, 0.5]);
    t.card_id = pick(rng, &[None, Some("card-7"), Some("card-8"), Some("")]).map(str::to_owned);
    t.terminal_id = pick(rng, &[None, Some("term-1"), Some("x\\y")]).map(str::to_owned);
    t.id = pick(rng, &["tx-1", "q\"uo\\te", "a\"b"]).to_owned();
    t.derived = (0..DERIVED.len())
        .map(|_| pick(rng, &[0.0, 12.0, 40.0, 0.25, 3.0]))
        .collect();
    let score = pick(rng, &[0.0, 0.25, 0.6, 0.75, 1.0]);
    (t, score, rng.below(2) == 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn compiled_rules_agree_with_a_direct_interpretation(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let e = random_expr(&mut rng, T::Bool, 5);
        let mut source = format!("rule r: block if {}", print(&e).0);
        if rng.below(2) == 0 {
            // Wrap long rules: continuation lines mean the same.
            source = source.replace(" or ", "\n    or ");
        }
        let rules = compile(&source, &catalog()).map_err(|err| TestCaseError::fail(format!("{source}\n{err}")))?;
        let lists = lists();
        let mut matched = Vec::new();
        for _ in 0..8 {
            let (t, score, fraud) = random_tx(&mut rng);
            let f = Facts::new(&t, score, fraud);
            let want = truth(&e, &f);
            let got = rules.evaluate(&f, &lists, &mut matched).is_some();
            prop_assert_eq!(got, want, "{}\n{:?}", source, f);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Several rules in one set share their list lookups (one per transaction) and have
    /// their terms reordered by cost: every rule still means what it says.
    #[test]
    fn rules_sharing_lookups_agree_with_a_direct_interpretation(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let exprs: Vec<E> = (0..4).map(|_| random_expr(&mut rng, T::Bool, 4)).collect();
        let mut source = String::from("mode all_matched\n");
        for (i, e) in exprs.iter().enumerate() {
            source.push_str(&format!("rule r{i}: review if {}\n", print(e).0));
        }
        let rules = compile(&source, &catalog()).map_err(|err| TestCaseError::fail(format!("{source}\n{err}")))?;
        let lists = lists();
        let (mut matched, mut each) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            let (t, score, fraud) = random_tx(&mut rng);
            let f = Facts::new(&t, score, fraud);
            let want: Vec<bool> = exprs.iter().map(|e| truth(e, &f)).collect();
            rules.evaluate(&f, &lists, &mut matched);
            let got: Vec<bool> = (0..exprs.len()).map(|i| matched.contains(&(i as u16))).collect();
            prop_assert_eq!(&got, &want, "{}\n{:?}", source, f);
            rules.each_match(&f, &lists, &mut each);
            prop_assert_eq!(&each, &want, "{}\n{:?}", source, f);
        }
    }
}

/// A guard-shaped term: one variable against a constant.
fn random_guard(rng: &mut Rng) -> String {
    let var = pick(
        rng,
        &[
            "Amount",
            "V1",
            "V2",
            "score",
            "risk_score",
            "card_id_count_1d",
            "terminal_id_risk_7d",
        ],
    );
    let op = pick(rng, &["<", "<=", ">", ">=", "==", "!="]);
    let bound = pick(rng, &NUMS);
    if rng.below(4) == 0 {
        // Constant first: the same bound, flipped.
        format!("{bound:?} {op} {var}")
    } else {
        format!("{var} {op} {bound:?}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The guard index skips only rules that cannot match: in every mode, guarded
    /// evaluation matches and decides exactly as evaluating every rule does.
    #[test]
    fn the_guard_index_decides_as_evaluating_every_rule(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mode = pick(&mut rng, &["priority", "first_matched", "all_matched"]);
        let mut source = format!("mode {mode}\n");
        for i in 0..rng.below(16) + 1 {
            let action = pick(&mut rng, &["allow", "review", "block"]);
            let cond = match rng.below(4) {
                0 => random_guard(&mut rng),
                1 => print(&random_expr(&mut rng, T::Bool, 3)).0,
                _ => format!(
                    "{} and ({}) and {}",
                    print(&random_expr(&mut rng, T::Bool, 2)).0,
                    random_guard(&mut rng),
                    random_guard(&mut rng)
                ),
            };
            source.push_str(&format!("rule r{i}: {action} if {cond}\n"));
        }
        let rules = compile(&source, &catalog()).map_err(|err| TestCaseError::fail(format!("{source}\n{err}")))?;
        let lists = lists();
        let (mut guarded, mut every) = (Vec::new(), Vec::new());
        for _ in 0..16 {
            let (t, score, fraud) = random_tx(&mut rng);
            let f = Facts::new(&t, score, fraud);
            let a = rules.evaluate(&f, &lists, &mut guarded);
            let b = rules.evaluate_among(&f, &lists, &mut every, guards::Mask::all());
            prop_assert_eq!(a, b, "{}\n{:?}", source, f);
            prop_assert_eq!(&guarded, &every, "{}\n{:?}", source, f);
        }
    }
}
