//! The simulator's drift scenario end to end, with no service: a model trained on the
//! first weeks of a simulated card stream goes live; from day D every amount doubles
//! (`loadgen --simulate --drift-day D`).
//!
//! - The monitor, with the detector's default settings (a window of 10,000
//!   transactions, checked every 500), finds the drift within 20,000 transactions of the
//!   shift, and never finds any on the same stream without the shift.
//! - `fraudstream retrain` with `retrain.trigger = "drift"` does not train on the
//!   stream without the shift, and trains, publishes and records why on the stream
//!   with it. The retrained model's AUPRC on the rows after the retrain beats the stale
//!   model's on the same rows.
//!
//! `FRAUDSTREAM_DRIFT_SIM=full` runs the handbook's scale (5,000 cards, 183 days)
//! instead of the small default; build with `--release` for it:
//! `FRAUDSTREAM_DRIFT_SIM=full cargo test --release --test drift_simulation -- --nocapture`.

mod common;

use std::path::Path;

use fraudstream::model::Model;
use fraudstream::monitor::{LiveDrift, Window};
use fraudstream::monitoring::MonitoringConfig;
use fraudstream::schema::{Dataset, ReadOptions, Transaction, read_dataset_with};
use fraudstream::velocity::VelocitySpec;
use loadgen::simulate::{AmountDrift, HANDBOOK_START, SimParams, simulate_transactions};

/// The most transactions after the shift before the drift is found.
const DETECT_WITHIN: usize = 20_000;
/// Rows between two checks of the monitor (its interval is 1 s: about 500 rows at the
/// rate of a small deployment).
const CHECK_EVERY: usize = 500;

struct Scale {
    customers: u32,
    terminals: u32,
    days: u32,
    /// The live model trains on days `0..train_days`, after the entity features'
    /// warm-up (37 days).
    train_days: u32,
    /// The first day with doubled amounts.
    drift_day: u32,
    /// `retrain` runs with the history of days `0..retrain_day`.
    retrain_day: u32,
    trees: usize,
}

fn scale() -> Scale {
    if std::env::var("FRAUDSTREAM_DRIFT_SIM").as_deref() == Ok("full") {
        Scale {
            customers: 5_000,
            terminals: 10_000,
            days: 183,
            train_days: 60,
            drift_day: 120,
            retrain_day: 134,
            trees: 50,
        }
    } else {
        Scale {
            customers: 700,
            terminals: 1_400,
            days: 110,
            train_days: 55,
            drift_day: 75,
            retrain_day: 90,
            trees: 20,
        }
    }
}

fn simulated(s: &Scale, drift: bool) -> Vec<Transaction> {
    simulate_transactions(&SimParams {
        customers: s.customers,
        terminals: s.terminals,
        days: s.days,
        seed: 11,
        drift: drift.then_some(AmountDrift {
            day: s.drift_day,
            factor: 2.0,
        }),
        ..SimParams::default()
    })
}

fn day_start(day: u32) -> f64 {
    (HANDBOOK_START + i64::from(day) * 86_400) as f64
}

fn write_csv(path: &Path, txs: &[Transaction]) {
    fraudstream::schema::csv::write_kaggle_csv(
        std::fs::File::create(path).unwrap(),
        txs.to_vec(),
        true,
        true,
    )
    .unwrap();
}

fn before(txs: &[Transaction], day: u32) -> Vec<Transaction> {
    txs.iter()
        .filter(|t| t.time() < day_start(day))
        .cloned()
        .collect()
}

/// Train the live model on the first `train_days` with the handbook's entity features,
/// publish it to `dir/registry`, and load it.
fn train_live(dir: &Path, s: &Scale, txs: &[Transaction]) -> Model {
    let history = dir.join("pre.csv");
    write_csv(&history, &before(txs, s.train_days));
    let out = common::fraudstream()
        .args(["train", "-i"])
        .arg(&history)
        .args(["--velocity", "handbook", "--warm-up", "auto"])
        .args(["--split", "time", "--trees"])
        .arg(s.trees.to_string())
        .arg("-o")
        .arg(dir.join("live.fsm"))
        .arg("--publish")
        .arg(dir.join("registry"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "train: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = Model::load(dir.join("live.fsm"))
        .unwrap()
        .version()
        .to_owned();
    stored(dir, &version)
}

/// A version as the model store gives it to a detector (with its manifest's reference).
fn stored(dir: &Path, version: &str) -> Model {
    let cfg = common::TestConfig::local(dir).parse();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = fraudstream::registry::ModelStore::open(&cfg.models, &cfg.s3)
            .await
            .unwrap();
        store.get_checked(version, None).await.unwrap().0
    })
}

/// The whole stream with its entity features, as a detector computes them.
fn with_features(dir: &Path, name: &str, txs: &[Transaction]) -> Dataset {
    let path = dir.join(name);
    write_csv(&path, txs);
    read_dataset_with(
        path.to_str().unwrap(),
        ReadOptions::default(),
        Some(&VelocitySpec::handbook()),
    )
    .unwrap()
    .0
}

/// Feed the monitor the stream from the first row of `from_day`, checking every
/// `CHECK_EVERY` rows as the detector's monitor does with its default settings. Each
/// check that found a variable at or above the alert band: the rows fed so far and the
/// worst variable.
fn monitor(model: &Model, data: &Dataset, from_day: u32) -> (usize, Vec<(usize, String, f64)>) {
    let cfg = MonitoringConfig::default();
    let first = data.columns[fraudstream::schema::TIME]
        .iter()
        .position(|&t| t >= day_start(from_day))
        .unwrap();
    let rows: Vec<usize> = (first..data.len()).collect();
    let stream = data.select(&rows);
    let x = model.matrix(&stream).unwrap();
    let scores = model.score_dataset(&stream).unwrap();
    let k = model.meta().features.len();
    let mut drift = LiveDrift::new(
        model.version_arc(),
        model.reference().expect("a reference").clone(),
        Window::Rows(cfg.window),
        &cfg.skip,
        0,
    );
    let mut found = Vec::new();
    let mut fed = 0;
    while fed < scores.len() {
        let end = (fed + CHECK_EVERY).min(scores.len());
        drift.observe(&x[fed * k..end * k], &scores[fed..end], 0);
        fed = end;
        let snap = drift.snapshot(&cfg.bands(), cfg.min_rows, 0);
        if let Some(worst) = snap
            .ranked()
            .into_iter()
            .find(|v| v.state.is_some_and(|s| s >= cfg.alert_state()))
        {
            found.push((fed, worst.name.clone(), worst.psi));
        }
    }
    (first, found)
}

/// A `retrain` configuration over `history` against `dir/registry`, triggered by drift.
fn retrain_config(dir: &Path, name: &str, history: &Path, trees: usize) -> std::path::PathBuf {
    common::TestConfig::local(dir)
        .set("retrain.history", vec![history.display().to_string()])
        .set("retrain.trigger", "drift")
        .set("retrain.cooldown", "0s")
        .set("retrain.warm_up", "37d")
        // Three weeks: a week before the shift and two after it.
        .set("retrain.window", "21d")
        .set("retrain.trees", trees as i64)
        .set("retrain.resamples", 200)
        .write(dir.join(name))
}

fn auprc(model: &Model, data: &Dataset, rows: &[usize]) -> f64 {
    let part = data.select(rows);
    let labels = part.labels().unwrap();
    let scores = model.score_dataset(&part).unwrap();
    fraudstream::eval::metrics::average_precision(&scores, &labels).unwrap()
}

#[test]
fn drift_is_found_within_bounds_and_a_retrain_it_triggers_beats_the_stale_model() {
    let s = scale();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (shifted, steady) = (simulated(&s, true), simulated(&s, false));
    let live = train_live(dir, &s, &shifted);

    // The stream without a shift: the monitor never finds drift.
    let steady_data = with_features(dir, "steady.csv", &steady);
    let (_, false_alarms) = monitor(&live, &steady_data, s.train_days);
    assert!(
        false_alarms.is_empty(),
        "drift found on a stream without any: {:?}",
        &false_alarms[..false_alarms.len().min(5)]
    );

    // The stream with one: found within DETECT_WITHIN transactions of the shift, and
    // not before it.
    let data = with_features(dir, "shifted.csv", &shifted);
    let (first, found) = monitor(&live, &data, s.train_days);
    let times = &data.columns[fraudstream::schema::TIME];
    let shift = times
        .iter()
        .position(|&t| t >= day_start(s.drift_day))
        .unwrap()
        - first;
    let (at, name, psi) = found.first().cloned().expect("the drift is found");
    assert!(at > shift, "drift found before the shift: {found:?}");
    let after = at - shift;
    println!(
        "drift found {after} transactions after the shift ({name}, PSI {psi:.3}); {} rows streamed before it, none found on the steady stream of {} rows",
        shift,
        steady_data.len() - first
    );
    assert!(
        after <= DETECT_WITHIN,
        "found {after} transactions after the shift"
    );

    // Retraining triggered by drift: not on the steady history, yes on the shifted one.
    let steady_history = dir.join("steady-history.csv");
    write_csv(&steady_history, &before(&steady, s.retrain_day));
    let cfg = retrain_config(dir, "steady.toml", &steady_history, s.trees);
    let d = common::retrain_decision(&cfg);
    assert_eq!(d["decision"], "not_triggered", "{d:#}");
    assert_eq!(d["trigger"]["trigger"], "none", "{d:#}");

    let history = dir.join("history.csv");
    write_csv(&history, &before(&shifted, s.retrain_day));
    // The live version was trained a moment ago: the default cool-down (6 h) holds an
    // evidence trigger back, before any history is read.
    let cooling = common::TestConfig::local(dir)
        .set("retrain.history", vec![history.display().to_string()])
        .set("retrain.trigger", "drift")
        .write(dir.join("cooling.toml"));
    let d = common::retrain_decision(&cooling);
    assert_eq!(d["decision"], "not_triggered", "{d:#}");
    assert_eq!(d["rows_read"], 0, "{d:#}");
    assert!(
        d["reason"].as_str().unwrap().contains("retrain.cooldown"),
        "{d:#}"
    );
    let cfg = retrain_config(dir, "shifted.toml", &history, s.trees);
    let d = common::retrain_decision(&cfg);
    assert_eq!(d["decision"], "published", "{d:#}");
    assert_eq!(d["trigger"]["trigger"], "drift", "{d:#}");
    let drifted = d["trigger"]["evidence"]["drifted"].as_array().unwrap();
    assert!(
        drifted.iter().any(|v| v["name"] == "Amount"),
        "Amount drifted: {d:#}"
    );
    // The shift also cost the live model quality: `trigger = "quality"` would have
    // trained too.
    let evidence = &d["trigger"]["evidence"];
    assert_eq!(evidence["quality"], true, "{d:#}");
    let version = d["candidate"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("registry/models/{version}/manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["retrain"]["trigger"], "drift", "{manifest:#}");

    // The retrained model against the stale one, on the rows after the retrain.
    let retrained = stored(dir, version);
    let later: Vec<usize> = (0..data.len())
        .filter(|&i| times[i] >= day_start(s.retrain_day))
        .collect();
    let (stale_ap, new_ap) = (
        auprc(&live, &data, &later),
        auprc(&retrained, &data, &later),
    );
    println!(
        "AUPRC on the {} rows after the retrain: stale model {stale_ap:.4}, retrained {new_ap:.4}",
        later.len()
    );
    assert!(new_ap > stale_ap, "stale {stale_ap} retrained {new_ap}");
}
