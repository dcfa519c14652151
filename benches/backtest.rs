//! `rules backtest` speed: a lake of `BENCH_ROWS` rows (default 10,000,000) written once
//! into `.cache/bench-backtest/` as the detector writes it (zstd Parquet, hour
//! partitions, files of 500,000 rows), from the Kaggle rows (the full file when
//! `.cache/creditcard.csv` or `../shared` has it, else the shipped sample) given card and
//! terminal ids and scores. Then a 20-rule draft (comparisons, arithmetic, a lookup in a
//! 1,000,000-card list) is replayed beside a 10-rule active set, three times; each run
//! prints rows per second and the draft's figures.
//!
//!     cargo bench --bench backtest                 (BENCH_ROWS=1000000 for a quick run)
//!
//! Under `cargo test` (no `--bench`) it runs on 20,000 rows, as a check that it works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fraudstream::pipeline::rules_backtest::{Sets, run};
use fraudstream::rules::{Lists, Outcome, compile};
use fraudstream::schema::{ReadOptions, Transaction, read_dataset};
use fraudstream::sinks::lake::{DecisionRecord, LakeCompression, ScoredRecord, encode_parquet};
use fraudstream::storage::S3Settings;

const ROWS_PER_FILE: usize = 500_000;

fn source_rows() -> Vec<Transaction> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let full = root.join(".cache/creditcard.csv");
    if !full.exists() {
        let xz = root.join("../shared/data/creditcard.csv.xz");
        if xz.exists() {
            let out = std::process::Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .output()
                .expect("xz");
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, out.stdout).unwrap();
        }
    }
    let path = if full.exists() {
        full
    } else {
        root.join("data/creditcard-sample.csv")
    };
    let (data, _) = read_dataset(path.to_str().unwrap(), ReadOptions::default()).unwrap();
    println!("source: {} ({} rows)", path.display(), data.len());
    (0..data.len()).map(|i| data.row(i)).collect()
}

/// The lake, written unless a complete one is there.
fn lake(rows: usize) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".cache/bench-backtest/lake-{rows}"));
    let done = dir.join("COMPLETE");
    if done.exists() {
        return dir;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let part = dir.join("dt=2026-12-07/hour=10");
    std::fs::create_dir_all(&part).unwrap();
    let source = source_rows();
    let started = Instant::now();
    let mut written = 0;
    let mut file = 0;
    while written < rows {
        let n = ROWS_PER_FILE.min(rows - written);
        let records: Vec<ScoredRecord> = (written..written + n)
            .map(|i| {
                let mut tx = source[i % source.len()].clone();
                tx.id = format!("tx-{i}");
                tx.card_id = Some(format!("card-{}", i % 2_000_000));
                tx.terminal_id = Some(format!("term-{}", i % 10_000));
                // A score that tracks the label, as a model's would.
                let noise = ((i * 2_654_435_761) % 1000) as f32 / 1000.0;
                let score = if tx.label == Some(1) {
                    0.5 + noise / 2.0
                } else {
                    noise * noise / 2.0
                };
                ScoredRecord {
                    tx,
                    score,
                    fraud: score >= 0.5,
                    model_version: Arc::from("bench-model"),
                    scored_at_ms: 1_796_637_600_000 + i as i64,
                    shadow: None,
                    position: None,
                    decision: DecisionRecord {
                        outcome: if score >= 0.5 {
                            Outcome::Block
                        } else {
                            Outcome::Approve
                        },
                        decided_by: Arc::from(if score >= 0.5 { "model" } else { "model_only" }),
                        rules: Vec::new(),
                        rule_set: None,
                    },
                }
            })
            .collect();
        let bytes = encode_parquet(&records, LakeCompression::Zstd).unwrap();
        std::fs::write(part.join(format!("bench-{file:04}.parquet")), bytes).unwrap();
        written += n;
        file += 1;
    }
    std::fs::write(&done, "").unwrap();
    println!(
        "lake: {rows} rows in {file} files written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    dir
}

fn main() {
    // `cargo test` runs this binary too (without `--bench`): a small lake then, to check
    // that the bench works without spending minutes on it.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| benchmarking)
        .unwrap_or(if benchmarking { 10_000_000 } else { 20_000 });
    let dir = lake(rows);
    let mut lists = Lists::new();
    lists.insert(
        "blocked_cards",
        (0..1_000_000).map(|i| format!("card-{}", i * 2 + 1)),
    );
    lists.insert("hot_terminals", (0..50).map(|i| format!("term-{i}")));
    let catalog = lists.catalog(Vec::new());
    let mut draft = String::from("mode priority\n");
    for k in 0..16 {
        let action = ["block", "review", "allow", "review"][k % 4];
        draft.push_str(&format!(
            "rule r{k}: {action} if Amount > {} and V{} < {} and risk_score > {}\n",
            50 + 40 * k,
            1 + k % 28,
            -1.0 - k as f64 * 0.2,
            10 + 5 * k
        ));
    }
    draft.push_str("rule blocked: block if card_id in @blocked_cards and score > 0.2\n");
    draft.push_str("rule hot: review if terminal_id in @hot_terminals and Amount > 2 * V1 + 100\n");
    draft.push_str("rule tiny: allow if Amount < 1\n");
    draft.push_str("rule odd: review if id == \"tx-42\"\n");
    let mut active = String::new();
    for k in 0..10 {
        active.push_str(&format!(
            "rule a{k}: review if Amount > {} and score > {}\n",
            100 * (k + 1),
            0.05 * k as f64
        ));
    }
    let draft = compile(&draft, &catalog).unwrap();
    let active = compile(&active, &catalog).unwrap();
    let labels = HashMap::new();
    let sets = Sets {
        draft: (&draft, "draft-20"),
        active: Some((&active, "active-10")),
        lists: &lists,
        model_outcome: Outcome::Block,
        labels: &labels,
        derived: &[],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s3 = S3Settings::new("unused", "", Default::default());
    for round in 1..=3 {
        let started = Instant::now();
        let report = rt.block_on(run(dir.to_str().unwrap(), &s3, &sets)).unwrap();
        println!(
            "backtest {round}: {} rows, {} files, {:.2} s, {:.0} rows/s ({} cores); draft block {} review {} approve {}; frauds stopped {} of {}",
            report.rows,
            report.files,
            started.elapsed().as_secs_f64(),
            report.rows_per_second,
            rayon::current_num_threads(),
            report.draft.block,
            report.draft.review,
            report.draft.approve,
            report.draft.frauds_stopped,
            report.frauds
        );
    }
}
