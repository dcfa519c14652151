//! The SQLite verdict store's write path: `BENCH_ROWS` verdicts (default 284,807, the
//! Kaggle file's count) written with `put_batch` in batches of 512, as the detector writes
//! them, into a fresh database in a temporary directory, with the same durability (WAL,
//! a synchronous commit per batch). Two kinds of transaction id:
//! - `sequential`: `tx-0`, `tx-1`, … (the Kaggle replays);
//! - `random`: 32 hex digits from a seeded generator (UUID-like ids, as most payment
//!   systems issue them).
//!
//! Each is written `BENCH_ROUNDS` times (default 3). Every round prints the process's CPU
//! (user + system, every thread: the writes run on a blocking thread) per verdict, the wall
//! time per verdict and the database's size; then the median per kind.
//!
//!     cargo bench --bench verdicts
//!
//! Under `cargo test` (no `--bench`) it writes 5,000 rows once, as a check that it works.

use std::sync::Arc;
use std::time::Instant;

use fraudstream::model::scoring::Contribution;
use fraudstream::rules::Outcome;
use fraudstream::sinks::verdicts::local::LocalVerdictStore;
use fraudstream::sinks::verdicts::{VerdictItem, VerdictStore};

const BATCH: usize = 512;

/// CPU seconds of this process so far, every thread (`/proc/self/stat`: utime + stime).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat's command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports them in USER_HZ, 100 a second on every architecture it runs on.
    ticks / 100.0
}

/// A SplitMix64 step: random ids without a dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ids(kind: &str, rows: usize) -> Vec<String> {
    let mut state = 7;
    (0..rows)
        .map(|i| match kind {
            "sequential" => format!("tx-{i}"),
            _ => format!("{:016x}{:016x}", splitmix(&mut state), splitmix(&mut state)),
        })
        .collect()
}

/// Verdicts as the detector makes them: three contributions, a model's outcome.
fn items(ids: Vec<String>) -> Vec<VerdictItem> {
    let version: Arc<str> = Arc::from("20261207T154020Z-cb315e2e");
    let scored_at: Arc<str> = Arc::from("2026-12-07T15:41:09.744Z");
    let by: Arc<str> = Arc::from(fraudstream::model::BY_MODEL_ONLY);
    let names: Vec<Arc<str>> = ["V17", "V14", "V10"].into_iter().map(Arc::from).collect();
    ids.into_iter()
        .enumerate()
        .map(|(i, tx_id)| VerdictItem {
            tx_id,
            score: (i % 100) as f32 / 100.0,
            fraud: false,
            threshold: 0.43,
            model_version: version.clone(),
            scored_at: scored_at.clone(),
            top_features: names
                .iter()
                .enumerate()
                .map(|(k, n)| Contribution {
                    feature: n.clone(),
                    contribution: -0.000_397 / (k as f32 + 1.0) * (i % 7) as f32,
                })
                .collect(),
            ttl: None,
            outcome: Outcome::Approve,
            decided_by: by.clone(),
            rules: Vec::new(),
            rule_set: None,
        })
        .collect()
}

/// One round: every item written into a new database. Returns CPU and wall seconds and
/// the database's size in bytes.
fn round(rt: &tokio::runtime::Runtime, items: &[VerdictItem]) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdicts.db");
    let store = LocalVerdictStore::open(&path).unwrap();
    let cpu = process_cpu_seconds();
    let wall = Instant::now();
    rt.block_on(async {
        for batch in items.chunks(BATCH) {
            store.put_batch(batch).await.unwrap();
        }
    });
    let (cpu, wall) = (process_cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    assert_eq!(store.count().unwrap(), items.len() as u64);
    let size = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    (cpu, wall, size)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect(name))
    };
    let (rows, rounds) = if bench {
        (var("BENCH_ROWS", 284_807), var("BENCH_ROUNDS", 3))
    } else {
        (5_000, 1)
    };
    // As `fraudstream run` builds its runtime: two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("{rows} verdicts per round, batches of {BATCH}, {rounds} rounds");
    for kind in ["sequential", "random"] {
        let items = items(ids(kind, rows));
        let mut cpus = Vec::new();
        for r in 1..=rounds {
            let (cpu, wall, size) = round(&rt, &items);
            println!(
                "{kind} ids, round {r}: {:.2} us CPU per verdict, {:.2} us wall, {:.1} MB",
                cpu * 1e6 / rows as f64,
                wall * 1e6 / rows as f64,
                size as f64 / 1e6
            );
            cpus.push(cpu * 1e6 / rows as f64);
        }
        println!("{kind} ids: median {:.2} us CPU per verdict", median(cpus));
    }
}
