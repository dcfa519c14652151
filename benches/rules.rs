//! The rule language's cost per transaction: 10 and 100 rules (comparisons, arithmetic,
//! list lookups against 1,000,000 card ids, entity features, string equality) in each
//! mode, over the rows of the shipped sample (`data/creditcard-sample.csv`) given
//! synthetic card and terminal ids, entity features and scores; plus the memory of the
//! million-id list and the cost of one lookup in it.
//!
//! `cargo bench --bench rules [-- --quick]`: first (only under `cargo bench`) a summary
//! in this thread's CPU ns per transaction — from the kernel's schedstat, robust to a
//! busy machine — and the list's memory (its heap bytes, and the resident set before
//! and after building it, in a fresh process), then criterion's wall-clock figures.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use fraudstream_core::rules::{Facts, Lists, Mode, Outcome, RuleSet, compile};
use fraudstream_core::schema::{AMOUNT, ReadOptions, Transaction, read_dataset};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");
const CARDS: usize = 1_000_000;
const DERIVED: [&str; 4] = [
    "card_id_count_1d",
    "card_id_mean_amount_1d",
    "terminal_id_risk_7d",
    "terminal_id_delayed_count_7d",
];

/// This thread's CPU time in nanoseconds (`/proc/thread-self/schedstat`).
fn cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field")
}

/// Resident set in bytes (`/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").expect("Linux statm");
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

fn card(i: usize) -> String {
    format!("card-{i:08}")
}

struct Setup {
    lists: Lists,
    rows: Vec<(Transaction, f32, bool)>,
    /// Heap bytes of the million-id list, and the resident set it added.
    list_heap: usize,
    list_rss: u64,
    list_build_s: f64,
}

fn setup() -> Setup {
    let rss_before = rss_bytes();
    let started = std::time::Instant::now();
    let mut lists = Lists::new();
    lists.insert("blocked_cards", (0..CARDS).map(card));
    let list_build_s = started.elapsed().as_secs_f64();
    let list_rss = rss_bytes().saturating_sub(rss_before);
    let list_heap = lists.get("blocked_cards").map_or(0, |l| l.heap_bytes());
    lists.insert(
        "trusted_terminals",
        (0..100).map(|i| format!("term-{i:04}")),
    );
    lists.insert(
        "round_amounts",
        ["1", "5", "10", "20", "50", "100", "500", "1000"],
    );

    let (data, _) = read_dataset(SAMPLE, ReadOptions::default()).expect("the shipped sample");
    let rows = (0..data.len())
        .map(|i| {
            let mut tx = data.row(i);
            let amount = tx.values[AMOUNT];
            // Half the cards are on the blocked list.
            tx.card_id = Some(card(i.wrapping_mul(7919) % (2 * CARDS)));
            tx.terminal_id = (i % 10 != 0).then(|| format!("term-{:04}", i % 1000));
            let count = (i % 17) as f32;
            tx.derived = vec![
                count,
                amount as f32 * (0.5 + (i % 7) as f32 / 4.0),
                (i % 100) as f32 / 200.0,
                (i % 50) as f32,
            ];
            let score = ((i.wrapping_mul(2_654_435_761) % 1000) as f32) / 1000.0;
            (tx, score, score >= 0.5)
        })
        .collect();
    Setup {
        lists,
        rows,
        list_heap,
        list_rss,
        list_build_s,
    }
}

/// `n` rules (a multiple of 10): ten shapes, `n / 10` thresholds each.
fn rules_source(n: usize, mode: Mode) -> String {
    let mut s = format!("mode {mode}\n");
    for i in 0..n / 10 {
        let k = i as f64;
        let shapes = [
            format!(
                "block if card_id in @blocked_cards and Amount > {}",
                100.0 * k + 50.0
            ),
            format!(
                "review if risk_score > {} and Amount > {}",
                90.0 + k / 10.0,
                500.0 + 10.0 * k
            ),
            format!(
                "allow if terminal_id in @trusted_terminals and score < 0.0{}",
                i % 9 + 1
            ),
            format!(
                "block if card_id_count_1d >= {}\n  and card_id_mean_amount_1d > {} * Amount",
                15 + i,
                1.5 + k / 10.0
            ),
            format!(
                "review if (Amount - card_id_mean_amount_1d) / (card_id_count_1d + 1) > {}",
                200.0 + 20.0 * k
            ),
            format!("block if card_id == \"card-{i:08}\" or terminal_id == \"term-x{i}\""),
            format!(
                "review if Amount in @round_amounts and V1 < -{} and not fraud",
                2.0 + k / 2.0
            ),
            format!(
                "allow if terminal_id_risk_7d < 0.00{} and terminal_id_delayed_count_7d > {}",
                i % 9 + 1,
                40 + i
            ),
            format!(
                "review if terminal_id not in @trusted_terminals and -V2 * 3 + V3 > {}",
                30.0 + k
            ),
            format!(
                "block if fraud and (terminal_id_risk_7d > 0.4{} or id == \"tx-{i}\")",
                i % 10
            ),
        ];
        for (j, r) in shapes.iter().enumerate() {
            s.push_str(&format!("rule r{i}_{j}: {r}\n"));
        }
    }
    s
}

fn compiled(lists: &Lists, n: usize, mode: Mode) -> RuleSet {
    let catalog = lists.catalog(DERIVED.map(str::to_owned).to_vec());
    compile(&rules_source(n, mode), &catalog).unwrap_or_else(|e| panic!("{e}"))
}

const MODES: [Mode; 3] = [Mode::Priority, Mode::FirstMatched, Mode::AllMatched];

fn bench_rules(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("rules_per_transaction");
    for n in [10, 100] {
        for mode in MODES {
            let rules = compiled(&s.lists, n, mode);
            let mut matched = Vec::with_capacity(rules.len());
            let mut i = 0;
            g.bench_function(format!("{n}_rules_{mode}"), |b| {
                b.iter(|| {
                    let (tx, score, fraud) = &s.rows[i % s.rows.len()];
                    i += 1;
                    let facts = Facts::new(tx, *score, *fraud);
                    black_box(rules.decide(&facts, &s.lists, Outcome::Block, &mut matched))
                });
            });
        }
    }
    g.finish();
    let list = s.lists.get("blocked_cards").expect("built");
    let keys: Vec<String> = (0..4096).map(|i| card(i * 7919 % (2 * CARDS))).collect();
    let mut i = 0;
    c.bench_function("list_1m_contains_str", |b| {
        b.iter(|| {
            i += 1;
            black_box(list.contains_str(&keys[i % keys.len()]))
        });
    });
}

/// CPU ns per transaction over `passes` passes of the rows.
fn per_tx(s: &Setup, rules: &RuleSet, passes: usize) -> (f64, f64) {
    let mut matched = Vec::with_capacity(rules.len());
    let mut by_rule = 0usize;
    let started = cpu_ns();
    for _ in 0..passes {
        for (tx, score, fraud) in &s.rows {
            let facts = Facts::new(tx, *score, *fraud);
            let d = rules.decide(&facts, &s.lists, Outcome::Block, &mut matched);
            by_rule += usize::from(matches!(d.by, fraudstream_core::rules::DecidedBy::Rule(_)));
        }
    }
    let n = (passes * s.rows.len()) as f64;
    ((cpu_ns() - started) as f64 / n, by_rule as f64 / n)
}

fn report() {
    let s = setup();
    println!(
        "rules: {} sample rows; list of {CARDS} card ids: built in {:.2} s, {:.1} MiB on the heap ({:.1} bytes an id), resident set +{:.1} MiB",
        s.rows.len(),
        s.list_build_s,
        s.list_heap as f64 / 1048576.0,
        s.list_heap as f64 / CARDS as f64,
        s.list_rss as f64 / 1048576.0,
    );
    for n in [10, 100] {
        for mode in MODES {
            let rules = compiled(&s.lists, n, mode);
            per_tx(&s, &rules, 1);
            let (ns, rate) = per_tx(&s, &rules, 200);
            println!(
                "rules: {n:>3} rules, {:<13} {ns:>7.0} ns/transaction (decided by a rule: {:.0}%)",
                mode.to_string(),
                rate * 100.0
            );
        }
    }
    let list = s.lists.get("blocked_cards").expect("built");
    let keys: Vec<String> = (0..1 << 16).map(|i| card(i * 7919 % (2 * CARDS))).collect();
    let started = cpu_ns();
    let mut hits = 0usize;
    for _ in 0..16 {
        for k in &keys {
            hits += usize::from(list.contains_str(black_box(k)));
        }
    }
    let ns = (cpu_ns() - started) as f64 / (16 * keys.len()) as f64;
    println!(
        "rules: list lookup in {CARDS} ids: {ns:.0} ns ({:.0}% hits)",
        hits as f64 * 100.0 / (16 * keys.len()) as f64
    );
}

criterion_group!(benches, bench_rules);

fn main() {
    // Only when benchmarking (`cargo bench`), not when `cargo test` checks the bench;
    // first, so the list's resident set is measured in a fresh process.
    if std::env::args().any(|a| a == "--bench") {
        report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
