//! End-to-end tests of the `fraudstream` binary on the shipped sample: train, evaluate,
//! score, inspect, and the error paths a user hits first.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/creditcard-sample.csv");

fn fraudstream(args: &[&str]) -> Output {
    common::fraudstream()
        .args(args)
        .output()
        .expect("run fraudstream")
}

fn ok_json(args: &[&str]) -> Value {
    let out = fraudstream(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn failure(args: &[&str]) -> String {
    let out = fraudstream(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tmp(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

const METRIC_KEYS: [&str; 8] = [
    "auprc",
    "roc_auc",
    "recall_at_precision_90",
    "precision",
    "recall",
    "threshold",
    "rows",
    "frauds",
];

fn has_metric_keys(v: &Value) {
    for k in METRIC_KEYS {
        assert!(v.get(k).is_some(), "missing key {k} in {v}");
    }
}

#[test]
fn train_evaluate_score_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let model = tmp(dir.path(), "m.fsm");

    let t = ok_json(&[
        "train", "--input", SAMPLE, "--out", &model, "--json", "--seed", "7",
    ]);
    has_metric_keys(&t);
    assert_eq!(t["evaluated_on"], "holdout");
    assert_eq!(t["rows"], 689);
    assert_eq!(t["frauds"], 49);
    assert!(t["auprc"].as_f64().unwrap() > 0.7, "{t}");

    let e = ok_json(&["evaluate", "--model", &model, "--input", SAMPLE, "--json"]);
    has_metric_keys(&e);
    assert_eq!(e["rows"], 3446);
    assert_eq!(e["frauds"], 246);
    assert_eq!(e["model_version"], t["model_version"]);

    for ext in ["csv", "jsonl", "parquet"] {
        let out = tmp(dir.path(), &format!("v.{ext}"));
        let s = ok_json(&[
            "score", "--model", &model, "--input", SAMPLE, "--out", &out, "--json",
        ]);
        has_metric_keys(&s);
        assert_eq!(s["rows"], 3446);
        assert!(Path::new(&out).metadata().unwrap().len() > 1000);
        // The same scores, through whichever writer.
        assert_eq!(s["auprc"], e["auprc"]);
    }
    let csv = std::fs::read_to_string(dir.path().join("v.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,score,fraud,threshold,model_version,top_features,label"
    );
    let first = lines.next().unwrap();
    assert!(first.starts_with("0,"), "{first}");
    assert_eq!(csv.lines().count(), 3447);
    let jsonl = std::fs::read_to_string(dir.path().join("v.jsonl")).unwrap();
    let v: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(v["tx_id"], "0");
    assert_eq!(v["top_features"].as_array().unwrap().len(), 3);

    let i = ok_json(&["model", "inspect", &model, "--json"]);
    has_metric_keys(&i);
    assert_eq!(i["model_version"], t["model_version"]);
    assert_eq!(i["metadata"]["params"]["n_trees"], 100);
    assert_eq!(i["metadata"]["features"].as_array().unwrap().len(), 29);
    assert_eq!(i["auprc"], t["auprc"]);

    // The table forms print too.
    let out = fraudstream(&["model", "inspect", &model]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("holdout metrics"));
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let a = tmp(dir.path(), "a.fsm");
    let b = tmp(dir.path(), "b.fsm");
    let ja = ok_json(&[
        "train", "-i", SAMPLE, "-o", &a, "--json", "--trees", "20", "--seed", "3",
    ]);
    let jb = ok_json(&[
        "train", "-i", SAMPLE, "-o", &b, "--json", "--trees", "20", "--seed", "3",
    ]);
    assert_eq!(ja["auprc"], jb["auprc"]);
    let fa = ok_json(&["model", "inspect", &a, "--json"]);
    let fb = ok_json(&["model", "inspect", &b, "--json"]);
    assert_eq!(
        fa["metadata"]["data_fingerprint"],
        fb["metadata"]["data_fingerprint"]
    );
    assert_eq!(fa["nodes"], fb["nodes"]);
    assert_eq!(
        fa["metadata"]["feature_importances"],
        fb["metadata"]["feature_importances"]
    );
}

#[test]
fn train_on_a_sample_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let m = tmp(dir.path(), "m.fsm");
    // The sample file: 3,446 rows, 246 frauds. Returns every row and fraud trained on or
    // held out.
    let sampled = |extra: &[&str]| {
        let mut args = vec!["train", "-i", SAMPLE, "-o", &m, "--json", "--trees", "20"];
        args.extend_from_slice(extra);
        let j = ok_json(&args);
        let sum = |k: &str, t: &str| j[k].as_u64().unwrap() + j[t].as_u64().unwrap();
        (sum("rows", "train_rows"), sum("frauds", "train_frauds"))
    };
    assert_eq!(
        sampled(&["--max-rows", "1000"]),
        (1000, 246),
        "every fraud kept"
    );
    assert_eq!(
        sampled(&["--max-rows", "1000", "--max-frauds", "100"]),
        (1000, 100)
    );
    // Stratified by 12-hour span: the same budget, every fraud still kept.
    assert_eq!(
        sampled(&["--max-rows", "1000", "--sample-bucket", "12h"]),
        (1000, 246)
    );
    let err = failure(&["train", "-i", SAMPLE, "-o", &m, "--max-rows", "10"]);
    assert!(err.contains("--max-rows"), "{err}");
    let zero_span = ["--max-rows", "1000", "--sample-bucket", "10m"];
    let err = failure(&[&["train", "-i", SAMPLE, "-o", &m], &zero_span[..]].concat());
    assert!(
        err.contains("--sample-bucket") && err.contains("at least 1h"),
        "{err}"
    );
}

#[test]
fn report_and_other_input_formats() {
    let dir = tempfile::tempdir().unwrap();
    let model = tmp(dir.path(), "m.fsm");
    let report = dir.path().join("report");
    ok_json(&[
        "train",
        "-i",
        SAMPLE,
        "-o",
        &model,
        "--split",
        "time",
        "--trees",
        "30",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    for f in [
        "index.html",
        "pr.svg",
        "roc.svg",
        "scores.svg",
        "importance.svg",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }

    // The same rows as JSON lines and Parquet give the same evaluation.
    let (data, _) =
        fraudstream::schema::read_dataset(SAMPLE, fraudstream::schema::ReadOptions::default())
            .unwrap();
    let jsonl: PathBuf = dir.path().join("s.jsonl");
    let text: String = (0..data.len())
        .map(|i| fraudstream::schema::json::encode_transaction(&data.row(i)) + "\n")
        .collect();
    std::fs::write(&jsonl, text).unwrap();
    let parquet = dir.path().join("s.parquet");
    fraudstream::schema::parquet::write_parquet(parquet.to_str().unwrap(), &data).unwrap();
    let from_csv = ok_json(&["evaluate", "-m", &model, "-i", SAMPLE, "--json"]);
    for p in [&jsonl, &parquet] {
        let v = ok_json(&[
            "evaluate",
            "-m",
            &model,
            "-i",
            p.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(v["auprc"], from_csv["auprc"], "{}", p.display());
        assert_eq!(v["tp"], from_csv["tp"]);
    }
}

#[test]
fn bad_input_is_named_and_skippable() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 4 of the file: V3 is not a number. Line 7: the label is unknown.
    let mut f: Vec<&str> = lines[3].split(',').collect();
    f[3] = "abc";
    lines[3] = f.join(",");
    lines[6] = lines[6].replace("\"0\"", "\"5\"");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let bad = bad.to_str().unwrap();
    let model = tmp(dir.path(), "m.fsm");

    let err = failure(&["train", "-i", bad, "-o", &model]);
    assert!(
        err.contains("bad.csv:4: field `V3`: not a number: \"abc\""),
        "{err}"
    );
    assert!(!Path::new(&model).exists(), "no model from bad data");

    let out = fraudstream(&[
        "train",
        "-i",
        bad,
        "-o",
        &model,
        "--skip-invalid",
        "--trees",
        "10",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped: ") && err.contains("bad.csv:7: field `Class`"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["skipped_rows"], 2);
    assert_eq!(
        v["train_rows"].as_u64().unwrap() + v["rows"].as_u64().unwrap(),
        3444
    );

    // Empty input and single-class input: clear errors, no model.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, lines[0].clone() + "\n").unwrap();
    let err = failure(&[
        "train",
        "-i",
        empty.to_str().unwrap(),
        "-o",
        &tmp(dir.path(), "e.fsm"),
    ]);
    assert!(err.contains("no valid records"), "{err}");
    let legit: String = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.ends_with("\"0\""))
        .take(200)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let one = dir.path().join("one.csv");
    std::fs::write(&one, legit).unwrap();
    let err = failure(&[
        "train",
        "-i",
        one.to_str().unwrap(),
        "-o",
        &tmp(dir.path(), "o.fsm"),
    ]);
    assert!(err.contains("single class"), "{err}");

    // Unlabelled input cannot be evaluated, but can be scored.
    let unlabelled = dir.path().join("u.csv");
    let strip = |l: &str| l.rsplit_once(',').unwrap().0.to_owned() + "\n";
    std::fs::write(
        &unlabelled,
        text.lines().take(50).map(strip).collect::<String>(),
    )
    .unwrap();
    let u = unlabelled.to_str().unwrap();
    let err = failure(&["evaluate", "-m", &model, "-i", u]);
    assert!(err.contains("no `Class` label"), "{err}");
    let s = ok_json(&[
        "score",
        "-m",
        &model,
        "-i",
        u,
        "-o",
        &tmp(dir.path(), "u.jsonl"),
        "--json",
    ]);
    assert_eq!(s["rows"], 49);
    assert!(s.get("auprc").is_none());
}

#[test]
fn corrupt_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tmp(dir.path(), "m.fsm");
    ok_json(&[
        "train", "-i", SAMPLE, "-o", &model, "--trees", "5", "--json",
    ]);
    let mut bytes = std::fs::read(&model).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    let err = failure(&[
        "score",
        "-m",
        &model,
        "-i",
        SAMPLE,
        "-o",
        &tmp(dir.path(), "v.csv"),
    ]);
    assert!(err.contains("checksum mismatch"), "{err}");
    std::fs::write(&model, &bytes[..n / 2]).unwrap();
    let err = failure(&["evaluate", "-m", &model, "-i", SAMPLE]);
    assert!(err.contains("truncated"), "{err}");
    let err = failure(&["model", "inspect", SAMPLE]);
    assert!(err.contains("bad magic"), "{err}");
}

#[test]
fn bad_options_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let m = tmp(dir.path(), "m.fsm");
    let err = failure(&["train", "-i", SAMPLE, "-o", &m, "--max-bins", "300"]);
    assert!(err.contains("max_bins"), "{err}");
    let err = failure(&["train", "-i", SAMPLE, "-o", &m, "--features", "V1,Bogus"]);
    assert!(err.contains("`features`") && err.contains("Bogus"), "{err}");
    let err = failure(&["train", "-i", SAMPLE, "-o", &m, "--test-fraction", "1.5"]);
    assert!(err.contains("test-fraction"), "{err}");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[train]\nn_tres = 5\n").unwrap();
    let err = failure(&[
        "train",
        "-i",
        SAMPLE,
        "-o",
        &m,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(err.contains("n_tres"), "{err}");
}

#[test]
fn verdicts_can_be_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = tmp(dir.path(), "m.fsm");
    let db = tmp(dir.path(), "v.db");
    ok_json(&[
        "train", "-i", SAMPLE, "-o", &model, "--trees", "10", "--json",
    ]);
    let s = ok_json(&[
        "score",
        "-m",
        &model,
        "-i",
        SAMPLE,
        "-o",
        &tmp(dir.path(), "v.jsonl"),
        "--verdict-db",
        &db,
        "--json",
    ]);
    assert_eq!(s["rows"], 3446);
    let v = ok_json(&["verdict", "get", "17", "--db", &db]);
    assert_eq!(v["tx_id"], "17");
    assert_eq!(v["model_version"], s["model_version"]);
    assert!(v["score"].as_f64().unwrap() >= 0.0);
    assert!(v["scored_at"].as_str().unwrap().ends_with('Z'));
    // Scoring again overwrites rather than duplicates.
    ok_json(&[
        "score",
        "-m",
        &model,
        "-i",
        SAMPLE,
        "-o",
        &tmp(dir.path(), "w.jsonl"),
        "--verdict-db",
        &db,
        "--json",
    ]);
    let err = failure(&["verdict", "get", "no-such-id", "--db", &db]);
    assert!(
        err.contains("no verdict for transaction \"no-such-id\""),
        "{err}"
    );
    let err = failure(&["verdict", "get", "1", "--db", &tmp(dir.path(), "absent.db")]);
    assert!(err.contains("no verdict database"), "{err}");
}

#[test]
fn publish_list_show_rollback_and_promote() {
    let dir = tempfile::tempdir().unwrap();
    let store = tmp(dir.path(), "registry");
    let train = |seed: &str, out: &str| {
        let o = fraudstream(&[
            "train",
            "--input",
            SAMPLE,
            "--out",
            &tmp(dir.path(), out),
            "--trees",
            "5",
            "--seed",
            seed,
            "--publish",
            &store,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        err.lines()
            .find_map(|l| l.strip_prefix("published "))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .to_owned()
    };
    let first = train("1", "a.fsm");
    let second = train("2", "b.fsm");
    assert_ne!(first, second);

    let text = |args: &[&str]| {
        let o = fraudstream(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let latest_line = |listing: &str| {
        listing
            .lines()
            .find(|l| l.starts_with('*'))
            .unwrap_or_default()
            .to_owned()
    };
    let list = text(&["model", "list", "--store", &store]);
    assert!(list.contains(&first) && list.contains(&second), "{list}");
    assert!(latest_line(&list).contains(&second), "{list}");

    let manifest: Value =
        serde_json::from_str(&text(&["model", "show", &second, "--store", &store])).unwrap();
    assert_eq!(manifest["parent"], Value::String(first.clone()));
    assert_eq!(manifest["sha256"].as_str().unwrap().len(), 64);

    text(&["model", "rollback", "--store", &store]);
    assert!(latest_line(&text(&["model", "list", "--store", &store])).contains(&first));
    text(&["model", "promote", &second, "--store", &store]);
    assert!(latest_line(&text(&["model", "list", "--store", &store])).contains(&second));

    let err = failure(&["model", "promote", "no-such-version", "--store", &store]);
    assert!(err.contains("no-such-version"), "{err}");
    let err = failure(&["model", "rollback", "--store", &tmp(dir.path(), "empty")]);
    assert!(err.contains("no LATEST"), "{err}");
}

#[test]
fn time_series_folds_train_on_the_past_and_test_on_the_next_part() {
    let v = ok_json(&[
        "evaluate", "--input", SAMPLE, "--folds", "time:3", "--trees", "10", "--json",
    ]);
    let folds = v["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3, "{v}");
    let rows = |f: &Value, k: &str| f[k].as_u64().unwrap();
    // 3,446 rows in 4 parts of 861 (the first with the 2 left over).
    for (i, f) in folds.iter().enumerate() {
        assert_eq!(rows(f, "test_rows"), 861, "{f}");
        assert_eq!(rows(f, "train_rows"), 863 + 861 * i as u64, "{f}");
        let ap = f["auprc"].as_f64().unwrap();
        assert!(ap > 0.3 && ap <= 1.0, "{f}");
    }
    let mean = v["auprc"]["mean"].as_f64().unwrap();
    let by_hand = folds
        .iter()
        .map(|f| f["auprc"].as_f64().unwrap())
        .sum::<f64>()
        / 3.0;
    assert!((mean - by_hand).abs() < 1e-12);
    assert!(failure(&["evaluate", "--input", SAMPLE, "--folds", "time:1"]).contains("at least 2"));
    assert!(failure(&["evaluate", "--input", SAMPLE, "--folds", "k:3"]).contains("time:K"));
}

#[test]
fn a_cost_threshold_costs_less_than_flagging_nothing_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let model = tmp(dir.path(), "m.fsm");
    let v = ok_json(&[
        "train",
        "--input",
        SAMPLE,
        "--out",
        &model,
        "--trees",
        "20",
        "--threshold",
        "cost",
        "--fraud-cost",
        "25",
        "--review-cost",
        "5",
        "--json",
    ]);
    let (cost, nothing) = (
        v["expected_cost"].as_f64().unwrap(),
        v["expected_cost_flagging_nothing"].as_f64().unwrap(),
    );
    assert!(cost < nothing, "{v}");
    let meta = ok_json(&["model", "inspect", &model, "--json"]);
    assert_eq!(
        meta["metadata"]["threshold_strategy"], "cost:25:5",
        "{meta}"
    );
    // Dearer reviews flag fewer transactions: a threshold at least as high.
    let dear = ok_json(&[
        "train",
        "--input",
        SAMPLE,
        "--out",
        &model,
        "--trees",
        "20",
        "--threshold",
        "cost",
        "--review-cost",
        "500",
        "--json",
    ]);
    assert!(dear["threshold"].as_f64().unwrap() >= v["threshold"].as_f64().unwrap());
    assert!(
        failure(&[
            "train",
            "--input",
            SAMPLE,
            "--out",
            &model,
            "--threshold",
            "cost"
        ])
        .contains("--review-cost")
    );
}

#[test]
fn tune_writes_the_best_trial_for_train_and_retrain() {
    let dir = tempfile::tempdir().unwrap();
    let out = tmp(dir.path(), "tuned.toml");
    let v = ok_json(&[
        "tune", "--input", SAMPLE, "--folds", "time:2", "--trials", "5", "--trees", "5", "--out",
        &out, "--json",
    ]);
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5, "{v}");
    // Every trial judged on the first fold; the best third (at least two) and the
    // defaults (trial 1) on every fold.
    assert!(trials.iter().all(|t| t["first_fold_auprc"].is_f64()), "{v}");
    let kept = trials.iter().filter(|t| t["mean_auprc"].is_f64()).count();
    assert!((2..=3).contains(&kept), "{v}");
    assert!(trials[0]["mean_auprc"].is_f64(), "{v}");
    let best = &v["best"];
    let best_mean = best["mean_auprc"].as_f64().unwrap();
    assert!(
        trials
            .iter()
            .filter_map(|t| t["mean_auprc"].as_f64())
            .all(|m| m <= best_mean)
    );
    // The file is a `[train]` table that `train --config` reads.
    let model = tmp(dir.path(), "m.fsm");
    ok_json(&[
        "train", "--input", SAMPLE, "--out", &model, "--config", &out, "--json",
    ]);
    let meta = ok_json(&["model", "inspect", &model, "--json"]);
    assert_eq!(meta["metadata"]["params"], best["params"], "{meta}");
    // `retrain.params` names a file that must read as one.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[retrain]\nparams = \"/nonexistent/tuned.toml\"\n").unwrap();
    assert!(failure(&["retrain", "--config", bad.to_str().unwrap()]).contains("retrain.params"),);
}
